"""Settings, declared once.

One table feeds the config file (``~/.config/imagekit/config.toml``, or ``$IMAGEKIT_CONFIG``),
the ``IMAGEKIT_*`` environment variables and the CLI into one frozen ``Settings`` object.
Precedence: command-line option > environment > config file > default.
Run state (instances, PIDs) is not a setting; it lives under ``state_dir``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import InputError


def _xdg(var: str, fallback: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / fallback) / "imagekit"


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str

    @property
    def env_var(self) -> str:
        return "IMAGEKIT_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("marketplace", str, "http://127.0.0.1:8080", "marketplace base URL"),
    Setting("data_dir", Path, None, "server database and served files (default XDG data dir)"),
    Setting("cache_dir", Path, None, "verified image cache (default XDG cache dir)"),
    Setting("state_dir", Path, None, "instances, volumes, rollback memory (default XDG state)"),
    Setting("key", Path, None, "PEM private key for signing"),
    Setting("cert", Path, None, "PEM certificate for signing"),
    Setting("p12", Path, None, "PKCS#12 bundle (passphrase from IMAGEKIT_P12_PASSPHRASE)"),
    Setting("trust", str, None, "trusted certificates: a PEM file or a directory of certs/CRLs"),
    Setting("policy", Path, None, "site policy file (TOML, or StratusLab policy.cfg)"),
    Setting("accel", str, "auto", "qemu accelerator: auto (probe), tcg or kvm"),
    Setting("email", str, None, "endorser e-mail when the certificate has none"),
    Setting("allow_private_locations", bool, False,
            "download images from private/loopback/link-local addresses (tests, local mirrors)"),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclasses.dataclass(frozen=True)
class Settings:
    marketplace: str
    data_dir: Path
    cache_dir: Path
    state_dir: Path
    key: Path | None
    cert: Path | None
    p12: Path | None
    trust: str | None
    policy: Path | None
    accel: str
    email: str | None
    allow_private_locations: bool = False


def config_path(env: Mapping[str, str] = os.environ) -> Path:
    if "IMAGEKIT_CONFIG" in env:
        return Path(env["IMAGEKIT_CONFIG"])
    return _xdg("XDG_CONFIG_HOME", ".config") / "config.toml"


def _coerce(setting: Setting, value: Any, source: str) -> Any:
    if value is None or value == "":
        return None
    if setting.type is Path:
        return Path(os.path.expanduser(str(value)))
    if setting.type is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise InputError(f"{source}: setting {setting.name!r} must be true or false")
    if not isinstance(value, str):
        raise InputError(f"{source}: setting {setting.name!r} must be a string")
    return value


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] = os.environ,
    path: Path | None = None,
) -> Settings:
    """Merge defaults, the config file, the environment and ``overrides`` (None = unset)."""
    path = path or config_path(env)
    values: dict[str, Any] = {s.name: s.default for s in SETTINGS}
    if path.exists():
        try:
            doc = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"config file {path}: {e}") from e
        for key, value in doc.items():
            name = key.replace("-", "_")
            if name not in _BY_NAME:
                raise InputError(f"config file {path}: unknown setting {key!r}")
            values[name] = _coerce(_BY_NAME[name], value, str(path))
    for s in SETTINGS:
        if s.env_var in env:
            values[s.name] = _coerce(s, env[s.env_var], s.env_var)
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _coerce(_BY_NAME[name], value, "option")
    values["data_dir"] = values["data_dir"] or _xdg("XDG_DATA_HOME", ".local/share")
    values["cache_dir"] = values["cache_dir"] or _xdg("XDG_CACHE_HOME", ".cache")
    values["state_dir"] = values["state_dir"] or _xdg("XDG_STATE_HOME", ".local/state")
    if values["accel"] not in ("auto", "tcg", "kvm"):
        raise InputError(f"accel must be auto, tcg or kvm, not {values['accel']!r}")
    return Settings(**values)
