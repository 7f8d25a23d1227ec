"""Every external command goes through here.

argv is a list (never a shell string), stdin is /dev/null, the environment is an allow-list
plus explicit extras, and a failure raises CommandError with the tail of stderr.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import CommandError, ToolMissing

log = logging.getLogger(__name__)

_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TERM", "USER", "SOURCE_DATE_EPOCH")

# Debian package for each tool we call, so a missing one fails early with an install hint.
TOOL_PACKAGES = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "xorriso": "xorriso",
    "genisoimage": "genisoimage",
    "xmlsec1": "xmlsec1",
    "sfdisk": "fdisk",
    "mkswap": "util-linux",
    "partx": "util-linux",
    "losetup": "util-linux",
    "debootstrap": "debootstrap",
    "disk-image-create": "diskimage-builder (pip)",
    "mkfs.ext4": "e2fsprogs",
    "mkfs.vfat": "dosfstools",
    "cpio": "cpio",
    "depmod": "kmod",
    "curl": "curl",
    "nginx": "nginx-light",
    "wrk": "wrk",
    "chromium": "chromium",
    "pg_ctlcluster": "postgresql",
}


def find_tool(name: str) -> str:
    """Return the absolute path of ``name`` or raise ToolMissing naming its Debian package."""
    for candidate in (shutil.which(name), shutil.which(name, path="/usr/sbin:/sbin")):
        if candidate:
            return candidate
    raise ToolMissing(name, TOOL_PACKAGES.get(name, name))


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    capture: bool = True,
    stdout: int | None = None,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command to completion; raise CommandError when it fails."""
    args = [str(a) for a in argv]
    log.debug("run: %s", " ".join(args))
    try:
        proc = subprocess.run(
            args,
            env=child_env(env),
            cwd=cwd,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else (subprocess.PIPE if capture else None),
            stderr=subprocess.PIPE if capture else None,
            check=False,
        )
    except FileNotFoundError as e:
        raise ToolMissing(args[0], TOOL_PACKAGES.get(Path(args[0]).name, args[0])) from e
    except subprocess.TimeoutExpired as e:
        raise CommandError(args, -1, f"timed out after {timeout}s") from e
    if proc.returncode != 0:
        raise CommandError(args, proc.returncode, (proc.stderr or b"").decode(errors="replace"))
    return proc
