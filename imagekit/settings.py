"""Settings, declared once.

One table feeds the config file (``~/.config/imagekit/config.toml``, or ``$IMAGEKIT_CONFIG``),
the ``IMAGEKIT_*`` environment variables and the CLI into one frozen ``Settings`` object.
Precedence: command-line option > environment > config file > default.
Run state (instances, PIDs) is not a setting; it lives under ``state_dir``.
"""

from __future__ import annotations

import builtins
import dataclasses
import enum
import ipaddress
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import InputError


def _xdg(var: str, fallback: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / fallback) / "imagekit"


class Accel(enum.StrEnum):
    """The ``accel`` setting: ``auto`` probes; a probe-resolved instance runs tcg or kvm."""

    AUTO = "auto"
    TCG = "tcg"
    KVM = "kvm"


def _setting(default: Any, help: str, *, choices: type[enum.StrEnum] | None = None) -> Any:
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting, declared once: name, type, default, help (and choices). The config
    file keys, the ``IMAGEKIT_*`` variables, ``imagekit config`` and the CLI options that
    override settings (``cli._options.setting_option``) all come from these fields."""

    marketplace: str = _setting("http://127.0.0.1:8080", "marketplace base URL")
    data_dir: Path = _setting(None, "server database and served files (default XDG data dir)")
    cache_dir: Path = _setting(None, "verified image cache (default XDG cache dir)")
    state_dir: Path = _setting(None, "instances, volumes, rollback memory (default XDG state)")
    key: Path | None = _setting(None, "PEM private key for signing")
    cert: Path | None = _setting(None, "PEM certificate for signing")
    p12: Path | None = _setting(None, "PKCS#12 bundle (passphrase from IMAGEKIT_P12_PASSPHRASE)")
    trust: str | None = _setting(
        None, "trusted certificates: PEM files or directories of certs/CRLs (os.pathsep-separated)"
    )
    policy: Path | None = _setting(None, "site policy file (TOML, or StratusLab policy.cfg)")
    accel: str = _setting(Accel.AUTO.value, "qemu accelerator", choices=Accel)
    email: str | None = _setting(None, "endorser e-mail when the certificate has none")
    allow_private_locations: bool = _setting(
        False, "download images from private/loopback/link-local addresses (tests, local mirrors)"
    )
    site: Path | None = _setting(
        None, "site sync config (TOML): [sync] subscribe, retire, visibility"
    )
    unsafe_allow_stale_crls: bool = _setting(
        False, "UNSAFE: still use CRLs past their nextUpdate (warns) instead of refusing"
    )
    ssh_key: Path | None = _setting(
        None,
        "public key every launch injects (default: ~/.ssh/id_ed25519.pub, id_ecdsa.pub "
        "or id_rsa.pub, the first that exists)",
    )
    port_address: str = _setting(
        "127.0.0.1",
        "host address forwarded guest ports (--port, the entry's inbound ports) "
        "listen on; 0.0.0.0 exposes them to the network",
    )
    types: dict[str, dict[str, Any]] | None = _setting(
        None, 'site machine types, config file only: [types.NAME] cpu = 2, ram = "4G", swap = "1G"'
    )


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row of the table, as ``Settings`` declares it."""

    name: str
    type: type
    default: Any
    help: str
    choices: builtins.type[enum.StrEnum] | None = None

    @property
    def env_var(self) -> str:
        return "IMAGEKIT_" + self.name.upper()


def _table() -> tuple[Setting, ...]:
    hints = typing.get_type_hints(Settings)
    rows = []
    for f in dataclasses.fields(Settings):
        kind = hints[f.name]
        # ``Path | None`` is a Path setting that may be unset
        kinds = [k for k in typing.get_args(kind) if k is not type(None)] or [kind]
        # ``dict[str, ...]`` is a table (only a config file can write one)
        rows.append(
            Setting(
                f.name,
                typing.get_origin(kinds[0]) or kinds[0],
                f.default,
                f.metadata["help"],
                f.metadata["choices"],
            )
        )
    return tuple(rows)


SETTINGS: tuple[Setting, ...] = _table()
_BY_NAME = {s.name: s for s in SETTINGS}


def s3_endpoint(env: Mapping[str, str] = os.environ) -> str | None:
    """The S3 endpoint uploads and downloads use (boto3's default when unset)."""
    return env.get("IMAGEKIT_S3_ENDPOINT") or env.get("AWS_ENDPOINT_URL") or None


def config_path(env: Mapping[str, str] = os.environ) -> Path:
    if "IMAGEKIT_CONFIG" in env:
        return Path(env["IMAGEKIT_CONFIG"])
    return _xdg("XDG_CONFIG_HOME", ".config") / "config.toml"


def _coerce(setting: Setting, value: Any, source: str) -> Any:
    if value is None or value == "":
        return None
    if setting.type is dict:
        if source.startswith("IMAGEKIT_") or source == "option":
            raise InputError(
                f"{source}: setting {setting.name!r} is read from the config file only"
            )
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise InputError(
                f"{source}: setting {setting.name!r} must be a table of tables "
                f"([{setting.name}.NAME] ...)"
            )
        return value
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
    for s in SETTINGS:
        if s.choices is not None and values[s.name] not in set(s.choices):
            known = ", ".join(c.value for c in s.choices)
            raise InputError(f"{s.name} must be one of {known}, not {values[s.name]!r}")
    try:
        ipaddress.ip_address(values["port_address"])
    except ValueError:
        raise InputError(
            f"port_address must be an IP address, not {values['port_address']!r}"
        ) from None
    return Settings(**values)
