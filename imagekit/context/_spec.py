"""The typed input of a context medium and the registry of schemes that render it.

A scheme turns a :class:`ContextSpec` into a :class:`ContextMedium` (a volume label and the
files at the root of the ISO); :func:`make_context_iso` writes it. Each scheme lives in its
own module and registers itself with :func:`register`.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import gzip
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath

from ..errors import InputError


class ContextError(InputError):
    """Context input that no scheme could deliver as given (bad key, hostname, file...)."""


class ContextScheme(StrEnum):
    NOCLOUD = "nocloud"
    CONFIGDRIVE = "configdrive"
    OPENNEBULA = "opennebula"
    STRATUSLAB = "stratuslab"


class UserDataType(StrEnum):
    SCRIPT = "script"  # "#!": run as is
    CLOUD_CONFIG = "cloud-config"
    INCLUDE = "include"  # "#include": URLs, one a line
    BOOTHOOK = "boothook"
    MIME = "mime"  # MIME multipart
    GZIP = "gzip"  # cloud-init unpacks gzip'd user-data itself

    @property
    def mime_type(self) -> str:
        return {
            UserDataType.SCRIPT: "text/x-shellscript",
            UserDataType.CLOUD_CONFIG: "text/cloud-config",
            UserDataType.INCLUDE: "text/x-include-url",
            UserDataType.BOOTHOOK: "text/cloud-boothook",
            UserDataType.MIME: "multipart/mixed",
            UserDataType.GZIP: "application/x-gzip",
        }[self]


_PREFIXES = (
    (b"#!", UserDataType.SCRIPT),
    (b"#cloud-config", UserDataType.CLOUD_CONFIG),
    (b"#include", UserDataType.INCLUDE),
    (b"#cloud-boothook", UserDataType.BOOTHOOK),
    (b"\x1f\x8b", UserDataType.GZIP),
)


def detect_user_data(data: bytes) -> UserDataType:
    """The kind of user data, from its first bytes (as cloud-init decides).

    Raises:
        ContextError: none of script, cloud-config, #include, boothook, MIME multipart, gzip.
    """
    for prefix, kind in _PREFIXES:
        if data.startswith(prefix):
            return kind
    head = data[:4096].lstrip().lower()
    if head.startswith((b"content-type:", b"mime-version:")):
        message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(data)
        if message.is_multipart():
            return UserDataType.MIME
    raise ContextError(
        "user-data: unrecognized type (expected '#!' script, '#cloud-config', '#include', "
        "'#cloud-boothook', MIME multipart or gzip)"
    )


# --- validation --------------------------------------------------------------------------

_KEY_TYPES = {
    "ssh-rsa",
    "ssh-ed25519",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
}
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_SWAP_LABEL = re.compile(r"[A-Za-z0-9._-]{1,16}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_ssh_key(line: str) -> str:
    """One OpenSSH public key line ``type base64 [comment]``, checked and normalized.

    Raises:
        ContextError: unknown type, bad base64, a blob that names another type, or more
            than one line.
    """
    text = line.strip()
    if not text or "\n" in text or "\r" in text or "\x00" in text:
        raise ContextError("ssh key: expected exactly one line 'type base64 [comment]'")
    parts = text.split(None, 2)
    if len(parts) < 2 or parts[0] not in _KEY_TYPES:
        raise ContextError(f"ssh key: unknown key type {parts[0][:40]!r}")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError) as e:
        raise ContextError("ssh key: the key is not valid base64") from e
    if len(blob) < 4:
        raise ContextError("ssh key: the key blob is truncated")
    n = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + n].decode("ascii", "replace") != parts[0]:
        raise ContextError(f"ssh key: the key blob is not a {parts[0]} key")
    if len(parts) == 3 and not parts[2].isprintable():
        raise ContextError("ssh key: the comment has control characters")
    return " ".join(parts)


def parse_ssh_keys(text: str) -> list[str]:
    """Every key in an authorized_keys-style text (blank lines and # comments skipped)."""
    keys = [
        parse_ssh_key(ln)
        for ln in text.splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    if not keys:
        raise ContextError("ssh key file holds no key")
    return keys


def check_hostname(name: str) -> str:
    """An RFC 1123 host name (labels of letters, digits, inner hyphens; ≤ 253 characters).

    Raises:
        ContextError: anything else.
    """
    if not name or len(name) > 253 or not all(_HOST_LABEL.fullmatch(p) for p in name.split(".")):
        raise ContextError(
            f"hostname {name!r}: use letters, digits and inner hyphens, "
            "dot-separated labels of at most 63 characters"
        )
    return name


def parse_variable(text: str) -> tuple[str, str]:
    """``K=V`` (K a shell variable name, V anything without NUL).

    Raises:
        ContextError: no ``=``, a bad name or NUL in the value.
    """
    name, sep, value = text.partition("=")
    if not sep or not _VAR_NAME.fullmatch(name):
        raise ContextError(f"variable {text[:40]!r}: expected NAME=value with NAME a shell name")
    if "\x00" in value:
        raise ContextError(f"variable {name}: NUL in value")
    return name, value


def check_guest_path(path: str) -> str:
    """An absolute, normalized guest path without ``..``."""
    p = PurePosixPath(path)
    if (
        not p.is_absolute()
        or ".." in p.parts
        or str(p) != path
        or path == "/"
        or "\x00" in path
        or "\n" in path
    ):
        raise ContextError(f"file destination {path!r}: must be an absolute, normalized path")
    return path


@dataclass(frozen=True)
class ContextFile:
    """A file the guest should find at ``path`` with ``data`` and ``mode``."""

    path: str
    data: bytes
    mode: int = 0o644

    def __post_init__(self) -> None:
        check_guest_path(self.path)

    @classmethod
    def from_option(cls, option: str) -> ContextFile:
        """``DST=SRC``: the local file SRC delivered to DST in the guest (mode kept)."""
        dst, sep, src = option.partition("=")
        if not sep or not src:
            raise ContextError(f"--file {option!r}: expected DST=SRC")
        check_guest_path(dst)
        source = Path(src)
        try:
            data = source.read_bytes()
            mode = source.stat().st_mode & 0o777
        except OSError as e:
            raise ContextError(f"--file {option!r}: cannot read {src}: {e.strerror}") from e
        return cls(dst, data, mode)


@dataclass(frozen=True)
class ContextSpec:
    """What a guest should learn at boot; validated when built.

    ``variables`` is a sorted tuple of (name, value) pairs; ``files`` a tuple of
    :class:`ContextFile`. Use :meth:`build` for the friendlier signature.
    """

    instance_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    hostname: str | None = None
    ssh_keys: tuple[str, ...] = ()
    user_data: bytes | None = None
    variables: tuple[tuple[str, str], ...] = ()
    files: tuple[ContextFile, ...] = ()
    network_config: bytes | None = None
    swap_label: str | None = None  # a swap disk with this label is attached: enable it

    def __post_init__(self) -> None:
        if self.swap_label is not None and not _SWAP_LABEL.fullmatch(self.swap_label):
            raise ContextError(f"swap label {self.swap_label!r}: letters, digits, . _ -")
        if not _INSTANCE_ID.fullmatch(self.instance_id):
            raise ContextError(f"instance id {self.instance_id!r}: use letters, digits, . _ : -")
        if self.hostname is not None:
            check_hostname(self.hostname)
        object.__setattr__(self, "ssh_keys", tuple(parse_ssh_key(k) for k in self.ssh_keys))
        names = [n for n, _ in self.variables]
        if len(set(names)) != len(names):
            raise ContextError("a variable is given twice")
        for n, v in self.variables:
            parse_variable(f"{n}={v}")
        object.__setattr__(self, "variables", tuple(sorted(self.variables)))
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ContextError("two --file options have the same destination")
        if self.user_data is not None:
            detect_user_data(self.user_data)

    @classmethod
    def build(
        cls,
        *,
        instance_id: str | None = None,
        hostname: str | None = None,
        ssh_keys: Iterable[str] = (),
        user_data: bytes | None = None,
        variables: Mapping[str, str] | None = None,
        files: Iterable[ContextFile] = (),
        network_config: bytes | None = None,
        swap_label: str | None = None,
    ) -> ContextSpec:
        extra = {"instance_id": instance_id} if instance_id else {}
        return cls(
            hostname=hostname,
            ssh_keys=tuple(ssh_keys),
            user_data=user_data,
            variables=tuple(sorted((variables or {}).items())),
            files=tuple(files),
            network_config=network_config,
            swap_label=swap_label,
            **extra,  # type: ignore[arg-type]
        )

    @property
    def user_data_type(self) -> UserDataType | None:
        return None if self.user_data is None else detect_user_data(self.user_data)

    @property
    def user_script(self) -> bytes | None:
        """The user data if it is a script to run (gunzipped), else None."""
        data = self.user_data
        if data is not None and detect_user_data(data) is UserDataType.GZIP:
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError):
                return None
        return data if data is not None and data.startswith(b"#!") else None


@dataclass(frozen=True)
class ContextMedium:
    """A rendered context: the volume label and the ISO's files (path → bytes, mode)."""

    label: str
    files: Mapping[str, bytes]
    modes: Mapping[str, int] = field(default_factory=dict)


Renderer = Callable[[ContextSpec], ContextMedium]
_SCHEMES: dict[ContextScheme, Renderer] = {}


def register(scheme: ContextScheme) -> Callable[[Renderer], Renderer]:
    """Class-less registration: ``@register(ContextScheme.X)`` on a scheme's render function."""

    def deco(func: Renderer) -> Renderer:
        _SCHEMES[scheme] = func
        return func

    return deco


def render_context(scheme: ContextScheme | str, spec: ContextSpec) -> ContextMedium:
    """The medium ``scheme`` makes of ``spec``.

    Raises:
        ContextError: unknown scheme, or input the scheme cannot carry.
    """
    try:
        renderer = _SCHEMES[ContextScheme(scheme)]
    except (ValueError, KeyError) as e:
        raise ContextError(
            f"unknown context scheme {scheme!r} "
            f"(one of {', '.join(s.value for s in ContextScheme)})"
        ) from e
    return renderer(spec)
