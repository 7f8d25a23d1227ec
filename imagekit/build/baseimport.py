"""Disk images as bases and layers, with loop devices only (no nbd, no device-mapper).

An image file is converted to raw with ``qemu-img``, attached with ``losetup``, its
partitions made visible with ``partx``, and its root file system mounted. From there the
builder either copies the root file system out (``export_rootfs``, a tarball) or changes it
in place in a chroot (``chroot_mounts``).

The host writes into a mounted image (bind mounts, resolv.conf, policy-rc.d, the build's
hooks) only at paths resolved as a process chrooted there would resolve them
(``resolve_in_root``): a base image is input from strangers, and its ``/etc`` may be a
symlink to ``/etc`` -- the host's, if the host followed it.

Every attach and mount is undone in ``finally`` blocks; ``cleanup_workdir`` is the net
under them: after an interrupt (or a killed diskimage-builder) it unmounts whatever is still
mounted below a build's work directory and detaches the loop devices backed by files in it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .._run import find_tool, run
from ..errors import CommandError, InputError

log = logging.getLogger(__name__)

ROOT_FS_TYPES = ("ext4", "ext3", "ext2", "xfs", "btrfs")
MAX_SYMLINKS = 40  # what Linux follows in one lookup before ELOOP


def resolve_in_root(root: Path, path: str) -> Path:
    """The host path of ``path`` as a process chrooted at ``root`` sees it: every symlink
    on the way resolved with ``root`` as ``/`` (absolute targets start again at ``root``),
    ``..`` never above ``root``. The result is inside ``root`` and is not a symlink (it
    may not exist).

    Raises InputError after MAX_SYMLINKS links (a loop).
    """
    pending = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        here = root.joinpath(*done, part)
        if not here.is_symlink():
            done.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise InputError(f"too many symbolic links below {root} resolving {path}")
        target = os.readlink(here)
        if target.startswith("/"):
            done = []
        pending = [p for p in target.split("/") if p not in ("", ".")] + pending
    return root.joinpath(*done)


def _create_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (which must not exist, not even as a dangling symlink) with ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as fp:
        fp.write(data)
    os.chmod(path, mode, follow_symlinks=False)


def image_format(path: Path) -> str:
    """The format ``qemu-img`` sees in ``path`` (``raw``, ``qcow2``, ...)."""
    out = run([find_tool("qemu-img"), "info", "--output=json", path]).stdout
    try:
        return str(json.loads(out)["format"])
    except (ValueError, KeyError) as e:
        raise InputError(f"{path}: not a disk image qemu-img can read") from e


def virtual_size(path: Path) -> int:
    out = run([find_tool("qemu-img"), "info", "--output=json", path]).stdout
    return int(json.loads(out)["virtual-size"])


def convert_to_raw(src: Path, dest: Path) -> None:
    """Write ``src`` (raw, qcow2, vmdk, ...) as a sparse raw image at ``dest``."""
    fmt = image_format(src)
    if fmt not in ("raw", "qcow2", "vmdk", "vdi", "vpc", "vhdx"):
        raise InputError(f"{src}: unsupported base image format {fmt!r}")
    # -f names the input format: never let qemu-img guess a raw file's format from its bytes.
    run([find_tool("qemu-img"), "convert", "-f", fmt, "-O", "raw", src, dest], timeout=3600)


def copy_sparse(src: Path, dest: Path) -> None:
    """Copy a raw image keeping its holes (and sharing blocks where the file system can)."""
    run(["cp", "--reflink=auto", "--sparse=always", src, dest], timeout=3600)


@contextlib.contextmanager
def attach(image: Path) -> Iterator[str]:
    """Attach a raw image to a free loop device with its partitions; yield ``/dev/loopN``."""
    losetup = find_tool("losetup")
    loop = run([losetup, "--find", "--show", image]).stdout.decode().strip()
    try:
        # partx, not kpartx: the kernel's own partition devices (/dev/loopNpM), no device-mapper.
        with contextlib.suppress(CommandError):  # an unpartitioned image has nothing to add
            run([find_tool("partx"), "-a", loop])
        yield loop
    finally:
        detach(loop)


def detach(loop: str) -> None:
    """Drop a loop device's partitions and detach it; tolerate what is already gone."""
    with contextlib.suppress(CommandError):
        run([find_tool("partx"), "-d", loop])
    with contextlib.suppress(CommandError):
        run([find_tool("losetup"), "-d", loop])


def partitions(loop: str) -> list[str]:
    """Partition devices of an attached loop device, in partition order."""
    name = Path(loop).name
    sysdir = Path("/sys/class/block") / name
    found = sorted(
        (p for p in sysdir.glob(f"{name}p*") if p.name[len(name) + 1 :].isdigit()),
        key=lambda p: int(p.name[len(name) + 1 :]),
    )
    return [f"/dev/{p.name}" for p in found]


def _fs_type(device: str) -> str | None:
    try:
        out = run([find_tool("blkid"), "-o", "value", "-s", "TYPE", device]).stdout
    except CommandError:
        return None
    return out.decode().strip() or None


def _size(device: str) -> int:
    return int((Path("/sys/class/block") / Path(device).name / "size").read_text())


def find_root_partition(loop: str) -> str:
    """The device holding the root file system: the largest Linux file system on the disk."""
    candidates = [d for d in partitions(loop) or [loop] if _fs_type(d) in ROOT_FS_TYPES]
    if not candidates:
        raise InputError("the base image has no Linux root file system (ext4, xfs, btrfs)")
    return max(candidates, key=_size)


@contextlib.contextmanager
def mount_root(image: Path, *, read_only: bool, workdir: Path) -> Iterator[Path]:
    """Attach ``image`` (raw) and mount its root file system; yield the mount point."""
    with attach(image) as loop:
        device = find_root_partition(loop)
        mnt = Path(tempfile.mkdtemp(prefix="root.", dir=workdir))
        options = ["-o", "ro,noload"] if read_only and _fs_type(device) == "ext4" else []
        if read_only and not options:
            options = ["-o", "ro"]
        run([find_tool("mount"), *options, device, mnt])
        try:
            yield mnt
        finally:
            _kill_chrooted(mnt.resolve())
            if not read_only:
                # Give freed blocks back to the sparse file, so layers and outputs stay small.
                with contextlib.suppress(CommandError):
                    run([find_tool("fstrim"), mnt])
            unmount(mnt)
            with contextlib.suppress(OSError):
                mnt.rmdir()


def unmount(path: Path) -> None:
    try:
        run([find_tool("umount"), path])
    except CommandError:
        # Something still holds it (a process left in the chroot): detach it lazily.
        run([find_tool("umount"), "-l", path])


def export_rootfs(image: Path, tarball: Path, *, workdir: Path) -> None:
    """Copy the root file system of a raw image out as a gzip tarball (owners kept)."""
    with mount_root(image, read_only=True, workdir=workdir) as root:
        run(
            ["tar", "--numeric-owner", "--xattrs", "--acls", "-C", root, "-czf", tarball, "."],
            timeout=3600,
        )


@contextlib.contextmanager
def chroot_mounts(root: Path) -> Iterator[None]:
    """Make ``root`` usable as a chroot: /proc, /sys, /dev, DNS, and no service starts."""
    mounted: list[Path] = []
    restore: list[tuple[Path, Path | None]] = []
    try:
        binds = (("/proc", "proc"), ("/sys", "sysfs"), ("/dev", None), ("/dev/pts", None))
        for source, fstype in binds:
            # mount(8) follows symlinks in its target: hand it the resolved, real directory
            target = resolve_in_root(root, source)
            target.mkdir(parents=True, exist_ok=True)
            argv = ["--bind", source] if fstype is None else ["-t", fstype, fstype]
            run([find_tool("mount"), *argv, target])
            mounted.append(target)
        # DNS for apt and downloads in scripts: the host's resolver, put back afterwards.
        # (the directory resolved in the image; the link itself moved aside, not followed)
        etc = resolve_in_root(root, "/etc")
        etc.mkdir(parents=True, exist_ok=True)
        resolv, saved = etc / "resolv.conf", etc / ".resolv.conf.imagekit"
        if os.path.lexists(resolv):
            os.replace(resolv, saved)
            restore.append((resolv, saved))
        else:
            restore.append((resolv, None))
        if Path("/etc/resolv.conf").exists():
            _create_new(resolv, Path("/etc/resolv.conf").read_bytes(), 0o644)
        # Packages installed in the chroot must not start their services on the build host.
        sbin = resolve_in_root(root, "/usr/sbin")
        policy = sbin / "policy-rc.d"
        if sbin.is_dir() and not os.path.lexists(policy):
            _create_new(
                policy, b"#!/bin/sh\n# imagekit build: no service starts here\nexit 101\n", 0o755
            )
            restore.append((policy, None))
        yield
    finally:
        # A script still running (interrupt, timeout) holds the mounts: end it first.
        _kill_chrooted(root.resolve())
        for path, saved_path in reversed(restore):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            if saved_path is not None:
                os.replace(saved_path, path)
        for target in reversed(mounted):
            unmount(target)


def _mountinfo() -> list[Path]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        # The mount point is octal-escaped (\040 for a space).
        points.append(Path(fields[4].encode().decode("unicode_escape")))
    return points


def _loop_backing() -> dict[str, Path]:
    out = run([find_tool("losetup"), "--list", "--json", "--output", "NAME,BACK-FILE"]).stdout
    if not out.strip():
        return {}
    devices = json.loads(out).get("loopdevices", [])
    return {
        d["name"]: Path(d["back-file"].removesuffix(" (deleted)"))
        for d in devices
        if d.get("back-file")
    }


def _kill_chrooted(workdir: Path, *, wait: float = 5.0) -> list[int]:
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            root = Path(os.readlink(proc / "root"))
        except OSError:
            continue
        if root == workdir or workdir in root.parents:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
    deadline = time.monotonic() + wait
    while killed and time.monotonic() < deadline:
        alive = [pid for pid in killed if Path(f"/proc/{pid}").exists() and not _is_zombie(pid)]
        if not alive:
            break
        time.sleep(0.1)
    return killed


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def cleanup_workdir(workdir: Path) -> list[str]:
    """Undo every mount below ``workdir`` and every loop device backed by a file in it.

    Safe to call at any time, repeatedly; returns what it undid (for the log). Used in the
    ``finally`` of a build, so an interrupt or a failed diskimage-builder run never leaves
    mounts or loop devices behind.
    """
    workdir = workdir.resolve()
    undone: list[str] = []
    # Processes still running in a chroot below workdir (an interrupted script, apt in a
    # killed diskimage-builder run) keep its file systems busy: end them first.
    for pid in _kill_chrooted(workdir):
        undone.append(f"kill {pid}")
    points = [p for p in _mountinfo() if p == workdir or workdir in p.parents]
    # Deepest first: /x/mnt/proc before /x/mnt.
    for point in sorted(set(points), key=lambda p: len(p.parts), reverse=True):
        try:
            unmount(point)
            undone.append(f"umount {point}")
        except CommandError as e:
            log.warning("could not unmount %s: %s", point, e)
    for loop, backing in _loop_backing().items():
        if backing == workdir or workdir in backing.parents:
            name = Path(loop).name
            for node in Path("/dev/mapper").glob(f"{name}p*"):
                with contextlib.suppress(OSError):
                    node.unlink()
            detach(loop)
            undone.append(f"detach {loop}")
    return undone
