"""Generated elements, the DIB environment and stand-ins, the layer cache, and the cleanup
that undoes mounts and loop devices after an interrupted build."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagekit.build import baseimport, dib
from imagekit.build.elements import (
    GENERALIZE_HOOK,
    hook_order,
    write_customize_element,
    write_packages_element,
)
from imagekit.build.layers import LayerCache, layer_key
from imagekit.build.recipe import PartitionTable, Recipe

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "setup.sh").write_text("#!/bin/bash\necho setup > /var/tmp/marker\n")
    (tmp_path / "plain.sh").write_text("echo no interpreter line\n")
    (tmp_path / "motd").write_text("hello\n")
    (tmp_path / "motd").chmod(0o640)
    return tmp_path


def test_packages_element_lists_the_packages(tmp_path: Path) -> None:
    element = write_packages_element(("nginx", "curl"), tmp_path)
    assert (element / "package-installs.yaml").read_text() == '"nginx": null\n"curl": null\n'
    assert (element / "element-deps").read_text().split() == ["package-installs"]


def test_customize_element_runs_files_then_scripts_in_order(project: Path) -> None:
    recipe = Recipe.make(
        base="debian:bookworm",
        files=["/etc/motd=motd", "/usr/local/bin/tool=setup.sh:0755"],
        scripts=["setup.sh", "plain.sh"],
        relative_to=project,
    )
    element = write_customize_element(recipe, project / "elements")
    names = [p.name for p in hook_order(element)]
    assert names == [
        "20-imagekit-files",
        "31-imagekit-script-setup-sh",
        "32-imagekit-script-plain-sh",
    ]
    files_hook = (element / "post-install.d" / "20-imagekit-files").read_text()
    assert "cp /tmp/in_target.d/imagekit-files/000 /etc/motd\n" in files_hook
    assert "chmod 0640 /etc/motd\n" in files_hook  # the source file's own mode
    assert "mkdir -p /usr/local/bin\n" in files_hook
    assert "chmod 0755 /usr/local/bin/tool\n" in files_hook
    assert (element / "files" / "000").read_text() == "hello\n"
    plain = element / "post-install.d" / "32-imagekit-script-plain-sh"
    assert plain.read_text().startswith("#!/bin/sh -e\n")
    assert all(os.access(p, os.X_OK) for p in hook_order(element))


def test_customize_element_installs_packages_only_on_image_bases(project: Path) -> None:
    recipe = Recipe.make(base="debian:bookworm", packages=["curl"], relative_to=project)
    element = write_customize_element(recipe, project / "a")
    assert not (element / "post-install.d" / "10-imagekit-packages").exists()
    element = write_customize_element(recipe, project / "b", install_packages=True)
    hook = (element / "post-install.d" / "10-imagekit-packages").read_text()
    assert "apt-get install -y -q --no-install-recommends curl" in hook


def test_generalize_hook_is_valid_shell() -> None:
    assert os.access(GENERALIZE_HOOK, os.X_OK)
    subprocess.run(["bash", "-n", GENERALIZE_HOOK], check=True)


def test_generalize_hook_removes_machine_identity(tmp_path: Path) -> None:
    # Run it against a fake root through a private mount namespace chroot would need root
    # and a full system; instead check the identity files it must remove are named.
    text = GENERALIZE_HOOK.read_text()
    for needle in (
        "/etc/ssh/ssh_host_",
        ": > /etc/machine-id",
        "70-persistent-net.rules",
        "/var/lib/cloud/instances",
        "/root/.bash_history",
    ):
        assert needle in text


def test_dib_environment_puts_stand_ins_first(tmp_path: Path) -> None:
    stand_ins = dib.write_stand_ins(tmp_path / "bin")
    env = dib.dib_environment(
        release="bookworm",
        image_cache=tmp_path / "cache",
        tmp_dir=tmp_path / "tmp",
        element_paths=[tmp_path / "e1", tmp_path / "e2"],
        stand_ins=stand_ins,
    )
    assert env["PATH"].split(":")[0] == str(stand_ins)
    assert env["DIB_RELEASE"] == "bookworm"
    assert env["DIB_DEBIAN_SECURITY_MIRROR"] == "http://deb.debian.org/debian-security"
    assert env["DIB_CLOUD_INIT_DATASOURCES"] == "NoCloud, ConfigDrive, OpenNebula"
    assert env["DIB_IMAGE_CACHE"] == str(tmp_path / "cache")
    assert env["ELEMENTS_PATH"] == f"{tmp_path / 'e1'}:{tmp_path / 'e2'}"
    assert env["TMP_DIR"] == str(tmp_path / "tmp")
    assert env["TMPDIR"] == "/tmp"  # it leaks into the chroot, where only /tmp surely exists
    assert sorted(p.name for p in stand_ins.iterdir()) == ["dmsetup", "kpartx", "sudo"]
    assert "PATH" not in os.environ or str(stand_ins) not in os.environ["PATH"]


def test_base_elements_follow_the_partition_table() -> None:
    assert "block-device-gpt" in dib.base_elements(PartitionTable.GPT)
    assert {"debian-minimal", "bootloader", "cloud-init", "cloud-init-datasources"} <= set(
        dib.base_elements(PartitionTable.MBR)
    )


def test_sudo_stand_in_keeps_path(tmp_path: Path) -> None:
    stand_ins = dib.write_stand_ins(tmp_path / "bin")
    env = {"PATH": f"{stand_ins}:/usr/bin:/bin"}
    out = subprocess.run(
        [stand_ins / "sudo", "-E", "sh", "-c", "command -v kpartx"],
        env=env,
        capture_output=True,
        text=True,
        check=os.geteuid() == 0,
    )
    if os.geteuid() == 0:
        assert out.stdout.strip() == str(stand_ins / "kpartx")


def test_layer_cache_keys_by_content_and_prunes(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path / "layers")
    a = {"release": "bookworm", "packages": ["curl"]}
    key = layer_key(a)
    assert key == layer_key(dict(reversed(list(a.items()))))  # order of keys does not matter
    assert key != layer_key({**a, "packages": ["curl", "nginx"]})
    assert cache.find(key) is None
    image = tmp_path / "layer.raw"
    image.write_bytes(b"x")
    stored = cache.store(key, image, a)
    assert cache.find(key) == stored and not image.exists()
    os.utime(stored.with_suffix(".json"), (1, 1))  # the least recently used
    for n in range(5):
        (tmp_path / "l").write_bytes(b"y")
        cache.store(layer_key({"n": n}), tmp_path / "l", {"n": n})
        os.utime(cache.path(layer_key({"n": n})).with_suffix(".json"), (n + 10, n + 10))
    gone = cache.prune(keep=2)
    assert len(gone) == 4 and stored in gone
    assert sorted(cache.root.glob("*.raw")) == sorted(
        [cache.path(layer_key({"n": 4})), cache.path(layer_key({"n": 3}))]
    )


def _partitioned_image(path: Path) -> None:
    with path.open("wb") as fp:
        fp.truncate(64 << 20)
    subprocess.run(["sfdisk", "-q", path], input="label: dos\n,16M,L\n,,L\n", text=True, check=True)


@needs_root
def test_kpartx_stand_in_maps_partitions_without_device_mapper(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    _partitioned_image(image)
    stand_ins = dib.write_stand_ins(tmp_path / "bin")
    env = {"PATH": f"{stand_ins}:/usr/sbin:/usr/bin:/sbin:/bin"}
    loop = subprocess.run(
        ["losetup", "--find", "--show", image], capture_output=True, text=True, check=True
    ).stdout.strip()
    name = Path(loop).name
    try:
        subprocess.run(["kpartx", "-av", loop], env=env, check=True, capture_output=True)
        subprocess.run(["dmsetup", "--noudevsync", "mknodes"], env=env, check=True)
        for n in (1, 2):
            node = Path(f"/dev/mapper/{name}p{n}")
            assert node.is_block_device()
            sys_dev = Path(f"/sys/class/block/{name}p{n}/dev").read_text().strip()
            st = node.stat()
            assert f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" == sys_dev
        subprocess.run(["kpartx", "-d", loop], env=env, check=True)
        assert not list(Path("/dev/mapper").glob(f"{name}p*"))
        assert not Path(f"/sys/class/block/{name}p1").exists()
    finally:
        subprocess.run(["kpartx", "-d", loop], env=env, check=False)
        subprocess.run(["losetup", "-d", loop], check=False)


@needs_root
def test_cleanup_workdir_undoes_mounts_and_loop_devices(tmp_path: Path) -> None:
    """What an interrupt leaves behind (a partitioned loop device, nested mounts) goes."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    image = workdir / "disk.raw"
    _partitioned_image(image)
    loop = subprocess.run(
        ["losetup", "--find", "--show", image], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["partx", "-a", loop], check=True)
    mnt = workdir / "mnt"
    (mnt / "proc").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", mnt], check=True)
    (mnt / "proc").mkdir()
    subprocess.run(["mount", "-t", "proc", "proc", mnt / "proc"], check=True)
    try:
        undone = baseimport.cleanup_workdir(workdir)
        assert undone[:2] == [f"umount {mnt / 'proc'}", f"umount {mnt}"]
        assert f"detach {loop}" in undone
        assert str(mnt) not in Path("/proc/self/mountinfo").read_text()
        listing = subprocess.run(["losetup", "-j", image], capture_output=True, text=True)
        assert listing.stdout.strip() == ""
        assert baseimport.cleanup_workdir(workdir) == []  # idempotent
    finally:
        subprocess.run(["umount", "-R", mnt], check=False, capture_output=True)
        subprocess.run(["losetup", "-d", loop], check=False, capture_output=True)


@needs_root
def test_mount_root_finds_the_root_partition_and_unmounts(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    _partitioned_image(image)
    loop = subprocess.run(
        ["losetup", "--find", "--show", "--partscan", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        subprocess.run(["partx", "-a", loop], check=False, capture_output=True)
        subprocess.run(["mkfs.vfat", f"{loop}p1"], check=True, capture_output=True)
        subprocess.run(["mkfs.ext4", "-q", f"{loop}p2"], check=True)
        subprocess.run(["mkdir", "-p", tmp_path / "m"], check=True)
        subprocess.run(["mount", f"{loop}p2", tmp_path / "m"], check=True)
        (tmp_path / "m" / "etc").mkdir()
        (tmp_path / "m" / "etc" / "os-release").write_text("ID=test\n")
        subprocess.run(["umount", tmp_path / "m"], check=True)
    finally:
        subprocess.run(["partx", "-d", loop], check=False, capture_output=True)
        subprocess.run(["losetup", "-d", loop], check=True)
    work = tmp_path / "w"
    work.mkdir()
    with baseimport.mount_root(image, read_only=True, workdir=work) as root:
        assert (root / "etc" / "os-release").read_text() == "ID=test\n"
    assert baseimport.cleanup_workdir(work) == []
    assert subprocess.run(["losetup", "-j", image], capture_output=True, text=True).stdout == ""
    baseimport.export_rootfs(image, tmp_path / "root.tar.gz", workdir=work)
    listing = subprocess.run(
        ["tar", "-tzf", tmp_path / "root.tar.gz"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "./etc/os-release" in listing
    assert subprocess.run(["losetup", "-j", image], capture_output=True, text=True).stdout == ""


# --- the customization stage end to end, on a tiny busybox image (seconds, no DIB) ---------

APPLETS = (
    "sh",
    "mkdir",
    "cp",
    "chown",
    "chmod",
    "rm",
    "find",
    "truncate",
    "cat",
    "echo",
    "kill",
    "sleep",
    "wc",
    "ls",
)


def _tiny_base(tmp_path: Path) -> Path:
    """A qcow2 image: MBR, one ext4 partition holding busybox and some machine identity."""
    raw = tmp_path / "tiny.raw"
    _partitioned_image(raw)
    subprocess.run(["sfdisk", "-q", raw], input="label: dos\n,,L\n", text=True, check=True)
    loop = subprocess.run(
        ["losetup", "--find", "--show", raw], capture_output=True, text=True, check=True
    ).stdout.strip()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        subprocess.run(["partx", "-a", loop], check=True)
        subprocess.run(["mkfs.ext4", "-q", f"{loop}p1"], check=True)
        subprocess.run(["mount", f"{loop}p1", mnt], check=True)
        try:
            for d in ("bin", "etc/ssh", "tmp", "usr/sbin", "var/log", "root", "proc", "sys", "dev"):
                (mnt / d).mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "/bin/busybox", mnt / "bin" / "busybox"], check=True)
            for applet in APPLETS:
                (mnt / "bin" / applet).symlink_to("busybox")
            (mnt / "bin" / "bash").write_text('#!/bin/sh\nexec /bin/busybox sh "$@"\n')
            (mnt / "bin" / "bash").chmod(0o755)
            (mnt / "etc" / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
            (mnt / "etc" / "ssh" / "ssh_host_ed25519_key").write_text("secret\n")
            (mnt / "etc" / "resolv.conf").write_text("nameserver 192.0.2.1\n")
            (mnt / "var" / "log" / "build.log").write_text("noise\n")
            (mnt / "root" / ".bash_history").write_text("echo secret\n")
        finally:
            subprocess.run(["umount", mnt], check=True)
    finally:
        subprocess.run(["partx", "-d", loop], check=False)
        subprocess.run(["losetup", "-d", loop], check=True)
    qcow2 = tmp_path / "tiny.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2], check=True)
    raw.unlink()
    return qcow2


def _no_leftovers(cache: Path, out: Path) -> None:
    assert not list(out.parent.glob(f".{out.name}*.part"))
    assert list((cache / "build" / "work").iterdir()) == []
    assert str(cache) not in Path("/proc/self/mountinfo").read_text()
    backing = subprocess.run(
        ["losetup", "-l", "-n", "-O", "BACK-FILE"], capture_output=True, text=True, check=True
    ).stdout
    assert str(cache) not in backing


@pytest.fixture
def tiny(tmp_path: Path) -> dict:
    if os.geteuid() != 0:
        pytest.skip("needs root for loop devices and mounts")
    base = _tiny_base(tmp_path)
    (tmp_path / "motd").write_text("tiny appliance\n")
    (tmp_path / "motd").chmod(0o600)
    return {"base": base, "cache": tmp_path / "cache", "dir": tmp_path}


def test_build_on_an_image_places_files_runs_scripts_and_generalizes(tiny: dict) -> None:
    from imagekit.build import build_image

    work: Path = tiny["dir"]
    (work / "one.sh").write_text("#!/bin/sh\necho one > /etc/marker\n")
    (work / "two.sh").write_text("echo two >> /etc/marker\ncat /etc/motd >> /etc/marker\n")
    recipe = Recipe.make(
        base=str(tiny["base"]),
        files=["/etc/motd=motd"],
        scripts=["one.sh", "two.sh"],
        format="raw",
        title="tiny",
        relative_to=work,
    )
    out = work / "out.raw"
    phases: list[tuple[str, float | None]] = []
    result = build_image(
        recipe, out, cache_dir=tiny["cache"], phase=lambda n, s: phases.append((n, s))
    )
    assert result.image == out and not result.layer_cached
    assert [n for n, s in phases if s is None] == [
        "hash base",
        "import base image",
        "copy layer",
        "customize (files, scripts, generalize)",
        "convert to raw",
        "describe",
    ]
    assert "=== phase: customize" in result.log_path.read_text()
    _no_leftovers(tiny["cache"], out)
    mounts = work / "check"
    mounts.mkdir()
    with baseimport.mount_root(out, read_only=True, workdir=mounts) as root:
        assert (root / "etc" / "marker").read_text() == "one\ntwo\ntiny appliance\n"
        assert (root / "etc" / "motd").stat().st_mode & 0o7777 == 0o600
        assert (root / "etc" / "machine-id").read_text() == ""
        assert not list((root / "etc" / "ssh").iterdir())
        assert (root / "var" / "log" / "build.log").read_text() == ""
        assert not (root / "root" / ".bash_history").exists()
        # What the chroot needed is gone again; what the image had is back.
        assert (root / "etc" / "resolv.conf").read_text() == "nameserver 192.0.2.1\n"
        assert not (root / "usr" / "sbin" / "policy-rc.d").exists()
        assert not (root / "tmp" / "in_target.d").exists()
    if result.entry_path is not None:
        from imagekit.entry import parse_entry_bytes

        entry = parse_entry_bytes(result.entry_path.read_bytes())
        assert entry.identifier == result.identifier
        assert str(entry.format) == "raw" and entry.title == "tiny"
        assert '"scripts": ["one.sh", "two.sh"]' in (entry.description or "")
    # The same base again: the imported layer comes from the cache.
    again = build_image(recipe, work / "again.raw", cache_dir=tiny["cache"])
    assert again.layer_cached
    assert "import base image" not in [n for n, _ in again.phases]


def test_failing_script_leaves_no_image_and_names_the_log(tiny: dict) -> None:
    from imagekit.build import build_image
    from imagekit.errors import EnvironmentProblem

    work: Path = tiny["dir"]
    (work / "fail.sh").write_text("#!/bin/sh\necho about to fail\nexit 3\n")
    recipe = Recipe.make(base=str(tiny["base"]), scripts=["fail.sh"], relative_to=work)
    out = work / "out.qcow2"
    with pytest.raises(EnvironmentProblem) as info:
        build_image(recipe, out, cache_dir=tiny["cache"])
    log_path = work / "out.qcow2.build.log"
    assert str(info.value) == (f"31-imagekit-script-fail-sh exited with 3 (log: {log_path})")
    assert "about to fail" in log_path.read_text()
    assert not out.exists() and not (work / "out.qcow2.xml").exists()
    _no_leftovers(tiny["cache"], out)


@pytest.fixture
def sigint_raises() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt, even in a run started in the background (which
    inherits SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("sigint_raises")
def test_interrupt_during_a_script_cleans_up(tiny: dict) -> None:
    """Ctrl-C while a script runs in the chroot: mounts and loop devices are undone."""
    from imagekit.build import build_image
    from imagekit.errors import Interrupted

    work: Path = tiny["dir"]
    (work / "slow.sh").write_text(f"#!/bin/sh\nkill -INT {os.getpid()}\nsleep 30\n")
    recipe = Recipe.make(base=str(tiny["base"]), scripts=["slow.sh"], relative_to=work)
    out = work / "out.qcow2"
    with pytest.raises(Interrupted):
        build_image(recipe, out, cache_dir=tiny["cache"])
    assert not out.exists()
    assert "interrupted; cleaning up" in (work / "out.qcow2.build.log").read_text()
    _no_leftovers(tiny["cache"], out)


def test_cli_builds_from_a_recipe_file_and_prints_the_id(tiny: dict, cli) -> None:
    from imagekit.image.identifier import is_identifier

    work: Path = tiny["dir"]
    (work / "tune.sh").write_text("#!/bin/sh\necho tuned > /etc/tuned\n")
    (work / "appliance.yaml").write_text(
        f"base: {tiny['base'].name}\nscripts: [tune.sh]\nformat: qcow2\ntag: tiny\n"
    )
    from imagekit.entry import entry_to_bytes, parse_entry_bytes
    from imagekit.entry.describe import describe_image

    base_entry = describe_image(tiny["base"], os="tinyos", os_version="7", os_arch="x86_64")
    Path(f"{tiny['base']}.xml").write_bytes(entry_to_bytes(base_entry))
    out = work / "tuned.qcow2"
    result = cli("build", "-f", work / "appliance.yaml", "-o", out, "--cache-dir", tiny["cache"])
    assert result.exit_code == 0, result.stderr
    identifier = result.stdout.strip()
    assert is_identifier(identifier)
    lines = result.stderr.splitlines()
    assert lines[0] == f"imagekit: build log: {work / 'tuned.qcow2.build.log'}"
    assert "imagekit: build: customize (files, scripts, generalize) ..." in lines
    assert any(line.startswith("imagekit: build: convert to qcow2: ") for line in lines)
    assert out.read_bytes()[:4] == b"QFI\xfb"
    entry = parse_entry_bytes((work / "tuned.qcow2.xml").read_bytes())
    assert entry.identifier == identifier
    assert (entry.os, entry.os_version, entry.tag) == ("tinyos", "7", "tiny")  # os inherited
