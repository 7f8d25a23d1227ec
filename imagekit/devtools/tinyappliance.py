"""A tiny bootable test appliance, made in seconds from Debian packages already installed.

What it is: an MBR-partitioned raw disk (32 MiB) with one FAT partition holding Debian's
``linux-image-cloud-amd64`` kernel, a busybox-static initramfs and SYSLINUX (installed with
the mtools-based ``syslinux --offset``, so nothing is mounted, no loop device needed) behind
SYSLINUX's ``mbr.bin``. It boots as a plain disk (``-drive file=img,if=virtio,format=raw``),
console on ttyS0.

What its init does (busybox sh, PID 1): mounts proc/sys/dev, loads virtio, isofs, sr_mod,
ata_piix, sd_mod and virtio_net modules (copied with their dependencies, indexed with depmod),
prints
``IMAGEKIT-TINY: booted``, then for each block device (vd*, sd*, sr*) whose sector 16 is an
ISO 9660 volume descriptor: prints ``IMAGEKIT-TINY: disk <dev> label=<label>``, mounts it
read-only and

* for a context medium (``cidata``, ``config-2``, ``CONTEXT``, ``_STRATUSLAB``): prints
  ``IMAGEKIT-TINY: context scheme=<label> hostname=<h> key=<first ssh key>``, sets the host
  name, enables the swap disk the context names (printing ``IMAGEKIT-TINY: swap <line>``
  for each line of /proc/swaps), and runs the user script if the user data is a ``#!``
  script (output lines prefixed ``IMAGEKIT-TINY: user-data:``);
* for any other data disk: prints ``IMAGEKIT-TINY: list <path>`` for each entry and
  ``IMAGEKIT-TINY: file <path>: <content>`` for small files (≤ 4 KiB, newlines as spaces).

Then ``IMAGEKIT-TINY: done``. Whether it then powers off (decided here, since a disk boot's
kernel command line cannot be changed per test): it powers off (``poweroff -f``) when a
mounted medium holds a file named ``imagekit-poweroff`` at its root, or when the user
script calls ``poweroff``; otherwise it stays up (so a launched instance stays Running until
killed), printing ``IMAGEKIT-TINY: idle``. A kernel panic reboots (``panic=-1``; run qemu
with ``-no-reboot`` to make that an exit).

Images are cached by a hash of everything that goes into them (kernel, busybox, modules,
init, SYSLINUX, this module's version), in ``cache_dir`` (default
``$XDG_CACHE_HOME/imagekit/tiny``).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

from .._files import atomic_open
from .._run import find_tool, run
from ..errors import EnvironmentProblem, InputError

BUILD_VERSION = "2"
DISK_MIB = 32
PART_START = 2048  # sectors: the partition starts at 1 MiB
MODULES = (
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_scsi",
    "isofs",
    "sr_mod",
    # disks on an IDE (PIIX) or SCSI bus are sd*: an entry's disks-bus
    "ata_piix",
    "ata_generic",
    "sd_mod",
    # lifecycle tests: mount the boot partition read-write (FAT), see the ACPI
    # power button (busybox acpid reads evdev), talk on virtio-serial ports
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "button",
    "evdev",
    "virtio_console",
)
BANNER = "IMAGEKIT-TINY:"
CONTEXT_LABELS = ("cidata", "config-2", "CONTEXT", "_STRATUSLAB")
_SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")
_BUSYBOX = Path("/bin/busybox")

SYSLINUX_CFG = """SERIAL 0 115200
DEFAULT tiny
PROMPT 0
TIMEOUT 0
LABEL tiny
  LINUX /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0,115200 panic=-1 loglevel=3
"""

INIT = r"""#!/bin/sh
# imagekit tiny appliance init (busybox sh as PID 1)
export PATH=/usr/local/bin:/bin:/sbin
B="IMAGEKIT-TINY:"
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in MODULES; do modprobe "$m" 2>/dev/null; done
echo "$B booted kernel=$(uname -r)"
poweroff_wanted=
sleep 1
n=0
while [ $n -lt 20 ] && ! ls /sys/block | grep -q '^[vs]d'; do sleep 0.2; n=$((n+1)); done
# the disks of one bus appear together, a second controller's a moment later
last=
while [ $n -lt 30 ] && [ "$(ls /sys/block)" != "$last" ]; do
    last=$(ls /sys/block); sleep 0.3; n=$((n+1))
done

say() { echo "$B $*"; }
oneline() { head -c 4096 "$1" | tr '\n' ' ' | sed 's/ *$//'; }
run_script() {  # $1 = script file
    sh "$1" 2>&1 | while IFS= read -r line; do say "user-data: $line"; done
}

for dev in $(ls /sys/block); do
    case $dev in vd*|sd*|sr*) ;; *) continue ;; esac
    magic=$(dd if=/dev/$dev bs=1 skip=32769 count=5 2>/dev/null)
    [ "$magic" = "CD001" ] || { say "disk $dev not-iso9660"; continue; }
    label=$(dd if=/dev/$dev bs=1 skip=32808 count=32 2>/dev/null | sed 's/ *$//')
    say "disk $dev label=$label"
    mnt=/mnt/$dev
    mkdir -p $mnt
    mount -t iso9660 -o ro /dev/$dev $mnt || { say "disk $dev mount-failed"; continue; }
    [ -e $mnt/imagekit-poweroff ] && poweroff_wanted=1
    host= key= script= swap=
    case $label in
    cidata)
        host=$(sed -n 's/^local-hostname: *//p' $mnt/meta-data | tr -d "'\"")
        [ -f $mnt/vendor-data ] &&
            swap=$(sed -n 's/.*LABEL=\([A-Za-z0-9._-]*\).*/\1/p' $mnt/vendor-data | head -n1)
        key=$(sed -n '/^public-keys:/,/^[^ -]/s/^[ ]*- *//p' $mnt/meta-data | head -n1 |
            tr -d "'\"")
        [ -f $mnt/user-data ] && head -c 2 $mnt/user-data | grep -q '^#!' && script=$mnt/user-data
        ;;
    config-2)
        md=$mnt/openstack/latest/meta_data.json
        host=$(tr ',' '\n' < $md | sed -n 's/^[ {]*"hostname": *"\([^"]*\)".*/\1/p' | head -n1)
        key=$(tr ',{}' '\n\n\n' < $md | sed -n 's/^ *"key0": *"\([^"]*\)".*/\1/p' | head -n1)
        ud=$mnt/openstack/latest/user_data
        [ -f $ud ] && head -c 2 $ud | grep -q '^#!' && script=$ud
        vd=$mnt/openstack/latest/vendor_data.json
        [ -f $vd ] && swap=$(sed -n 's/.*LABEL=\([A-Za-z0-9._-]*\).*/\1/p' $vd | head -n1)
        ;;
    CONTEXT)
        host=$(. $mnt/context.sh; echo "${SET_HOSTNAME:-}")
        key=$(. $mnt/context.sh; printf '%s\n' "${SSH_PUBLIC_KEY:-}" | head -n1)
        swap=$(. $mnt/context.sh; echo "${IMAGEKIT_SWAP:-}")
        if (. $mnt/context.sh; [ -n "${START_SCRIPT_BASE64:-}" ]); then
            (. $mnt/context.sh; printf '%s' "$START_SCRIPT_BASE64" | base64 -d) > /tmp/start.sh
            script=/tmp/start.sh
        fi
        ;;
    _STRATUSLAB)
        host=$(. $mnt/context.sh; echo "${HOSTNAME:-}")
        key=$(. $mnt/context.sh; printf '%s\n' "${PUBLIC_KEY:-}" | head -n1)
        swap=$(. $mnt/context.sh; echo "${IMAGEKIT_SWAP:-}")
        if (. $mnt/context.sh; [ -n "${SCRIPT_EXEC:-}" ]); then
            (. $mnt/context.sh; printf '%s\n' "$SCRIPT_EXEC") > /tmp/script_exec.sh
            script=/tmp/script_exec.sh
        fi
        ;;
    *)
        (cd $mnt && find . -mindepth 1) | sort | while IFS= read -r p; do
            p=${p#.}
            say "list $p"
            if [ -f "$mnt$p" ] && [ ! -L "$mnt$p" ] && [ "$(stat -c %s "$mnt$p")" -le 4096 ]; then
                say "file $p: $(oneline "$mnt$p")"
            fi
        done
        continue
        ;;
    esac
    say "context scheme=$label hostname=$host key=$key"
    [ -n "$host" ] && hostname "$host"
    if [ -n "$swap" ]; then
        # what the context asks: enable the swap disk with this label
        sdev=$(findfs "LABEL=$swap" 2>/dev/null)
        [ -n "$sdev" ] && swapon "$sdev"
        tail -n +2 /proc/swaps | while read -r line; do say "swap $line"; done
    fi
    [ -n "$script" ] && run_script "$script"
done
say "done"
if [ -n "$poweroff_wanted" ]; then sync; poweroff -f; fi
say "idle"
while :; do sleep 3600; done
"""

POWEROFF = (
    "#!/bin/sh\n# PID 1 is a shell: power off directly\nsync\nexec /bin/busybox poweroff -f\n"
)


class TinyApplianceError(EnvironmentProblem):
    """The host lacks something the tiny appliance is made of."""


def _kernel() -> tuple[Path, str]:
    """The newest installed cloud kernel and its release."""
    kernels = sorted(Path("/boot").glob("vmlinuz-*-cloud-amd64")) or sorted(
        Path("/boot").glob("vmlinuz-*")
    )
    for k in reversed(kernels):
        release = k.name.removeprefix("vmlinuz-")
        if (Path("/lib/modules") / release / "modules.dep").exists():
            return k, release
    raise TinyApplianceError(
        "no kernel with modules in /boot and /lib/modules",
        hint="apt-get install linux-image-cloud-amd64",
    )


def _module_files(release: str) -> list[str]:
    """Module paths (relative to /lib/modules/<release>) for MODULES and their deps."""
    base = Path("/lib/modules") / release
    deps: dict[str, list[str]] = {}
    for line in (base / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {Path(m).name.split(".ko")[0].replace("-", "_"): m for m in deps}
    wanted: set[str] = set()
    for name in MODULES:
        path = by_name.get(name)
        if path is None:
            continue  # built into this kernel
        wanted.add(path)
        wanted.update(deps[path])
    return sorted(wanted)


def _inputs_digest(kernel: Path, release: str, modules: list[str]) -> str:
    h = hashlib.sha256()
    h.update(f"{BUILD_VERSION}\n{release}\n{INIT}\n{SYSLINUX_CFG}\n{POWEROFF}\n".encode())
    base = Path("/lib/modules") / release
    for path in (kernel, _BUSYBOX, _SYSLINUX_MBR, *(base / m for m in modules)):
        st = path.stat()
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    syslinux = find_tool("syslinux")
    h.update(Path(syslinux).read_bytes())
    return h.hexdigest()[:24]


def _make_initramfs(release: str, modules: list[str], work: Path) -> Path:
    root = work / "root"
    for d in (
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "mnt",
        "etc",
        "usr/local/bin",
        f"lib/modules/{release}",
    ):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(_BUSYBOX, root / "bin/busybox")
    for applet in (
        "sh",
        "mount",
        "modprobe",
        "sleep",
        "ls",
        "grep",
        "dd",
        "sed",
        "tr",
        "head",
        "find",
        "sort",
        "stat",
        "mkdir",
        "hostname",
        "base64",
        "cat",
        "poweroff",
        "sync",
        "uname",
        "echo",
        "printf",
        "ip",
        "udhcpc",
        "cut",
        "awk",
        "wc",
        "test",
        "[",
        "env",
        "ps",
        "dmesg",
        "umount",
        "blkid",
        "cp",
        "rm",
        "touch",
        "chmod",
        "tail",
        "xxd",
        "od",
        "swapon",
        "setsid",
        "findfs",
    ):
        link = root / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    init = root / "init"
    init.write_text(INIT.replace("MODULES", " ".join(MODULES)))
    init.chmod(0o755)
    poweroff = root / "usr/local/bin/poweroff"
    poweroff.write_text(POWEROFF)
    poweroff.chmod(0o755)
    src = Path("/lib/modules") / release
    for m in modules:
        dst = root / "lib/modules" / release / m
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / m, dst)
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (src / name).exists():
            shutil.copyfile(src / name, root / "lib/modules" / release / name)
    run([find_tool("depmod"), "-b", root, release])
    # cpio newc, sorted names, fixed mtimes: the same inputs give the same archive
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    for p in [root, *root.rglob("*")]:
        os.utime(p, (0, 0), follow_symlinks=False)
    proc = run(
        [find_tool("cpio"), "-o", "-H", "newc", "--quiet", "--reproducible", "-R", "0:0"],
        cwd=root,
        input=("\n".join(names) + "\n").encode(),
    )
    out = work / "initrd.gz"
    with open(out, "wb") as fp, gzip.GzipFile(fileobj=fp, mode="wb", mtime=0) as gz:
        gz.write(proc.stdout)
    return out


def _make_disk(kernel: Path, initrd: Path, work: Path) -> Path:
    disk = work / "disk.img"
    size = DISK_MIB << 20
    with open(disk, "wb") as fp:
        fp.truncate(size)
    sectors = size // 512 - PART_START
    # one active FAT16 (type 0x0e, LBA) partition from 1 MiB to the end
    run(
        [find_tool("sfdisk"), "--no-reread", "--no-tell-kernel", "-q", disk],
        input=f"label: dos\nlabel-id: 0x1a2b3c4d\nstart={PART_START}, size={sectors}, "
        "type=e, bootable\n".encode(),
    )
    offset = PART_START * 512
    run(
        [
            find_tool("mkfs.vfat"),
            "-F",
            "16",
            "-n",
            "TINY",
            "-i",
            "1a2b3c4d",
            f"--offset={PART_START}",
            disk,
            str(sectors // 2),
        ]
    )
    cfg = work / "syslinux.cfg"
    cfg.write_text(SYSLINUX_CFG)
    target = f"{disk}@@{offset}"
    mtools_env = {"MTOOLS_SKIP_CHECK": "1", "MTOOLS_NO_VFAT": "0"}
    for src, name in ((kernel, "vmlinuz"), (initrd, "initrd.gz"), (cfg, "syslinux.cfg")):
        run([find_tool("mcopy"), "-o", "-i", target, src, f"::{name}"], env=mtools_env)
    # the mtools-based installer writes ldlinux.sys/.c32 and the partition's boot sector
    run([find_tool("syslinux"), "--offset", str(offset), "--install", disk], env=mtools_env)
    mbr = _SYSLINUX_MBR.read_bytes()[:440]
    with open(disk, "r+b") as fp:
        fp.write(mbr)  # boot code only: the partition table after byte 440 stays
    return disk


def make_tiny_appliance(out: Path, *, fmt: str = "raw", cache_dir: Path | None = None) -> Path:
    """Write the tiny appliance to ``out`` (``fmt`` raw or qcow2), from cache when possible.

    Raises:
        TinyApplianceError: no kernel, busybox or SYSLINUX on this host.
        ToolMissing: sfdisk, mkfs.vfat, mcopy, syslinux, cpio, depmod or qemu-img missing.
        InputError: an unknown ``fmt``.
    """
    if fmt not in ("raw", "qcow2"):
        raise InputError(f"tiny appliance format {fmt!r}: raw or qcow2")
    for path, package in ((_BUSYBOX, "busybox-static"), (_SYSLINUX_MBR, "syslinux-common")):
        if not path.exists():
            raise TinyApplianceError(f"{path} is missing", hint=f"apt-get install {package}")
    kernel, release = _kernel()
    modules = _module_files(release)
    if cache_dir is None:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        cache_dir = Path(xdg) / "imagekit" / "tiny"
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = cache_dir / f"tiny-{_inputs_digest(kernel, release, modules)}.raw"
    if not cached.exists():
        with tempfile.TemporaryDirectory(prefix="tiny-", dir=cache_dir) as tmp:
            work = Path(tmp)
            initrd = _make_initramfs(release, modules, work)
            disk = _make_disk(kernel, initrd, work)
            os.chmod(disk, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
            os.replace(disk, cached)
    out = Path(out)
    if fmt == "raw":
        with open(cached, "rb") as src, atomic_open(out) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    else:
        tmp_out = out.with_name(f".{out.name}.part")
        try:
            run([find_tool("qemu-img"), "convert", "-f", "raw", "-O", "qcow2", cached, tmp_out])
            os.replace(tmp_out, out)
        finally:
            tmp_out.unlink(missing_ok=True)
    return out
