"""Stop, start, reboot and recovery with real qemu running a one-sector guest (sub-second
boots): the state machine, what survives a stop, what the CLI says when the input is wrong.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from imagekit.errors import EnvironmentProblem, InputError, InvalidState, NotFound
from imagekit.launch import lifecycle
from imagekit.launch import qemu as q
from imagekit.launch.disks import prepare_root_disk
from imagekit.launch.instances import InstanceStore, State, is_our_qemu
from imagekit.launch.launcher import kill
from tests.plugins.lifecycle import console_count, dataclasses_replace


def booted(inst, times: int = 1, timeout: float = 20) -> None:
    """Wait until the guest printed its banner ``times`` times (it then watches the button)."""
    deadline = time.monotonic() + timeout
    while console_count(inst) < times:
        assert time.monotonic() < deadline, "guest did not boot"
        time.sleep(0.05)
    time.sleep(0.1)  # from the banner to PWRBTN_EN: a few instructions


def qemu_io(path: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", command, str(path)], capture_output=True, text=True
    )


def has_pattern(path: Path, byte: int, offset: int = 512 << 10, length: int = 65536) -> bool:
    out = qemu_io(path, f"read -P {byte:#x} {offset} {length}")
    assert "read" in out.stdout or "Pattern" in out.stdout + out.stderr, out
    return out.returncode == 0 and "verification failed" not in out.stdout + out.stderr


def info(path: Path) -> dict:
    return json.loads(
        subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", str(path)], check=True, capture_output=True
        ).stdout
    )


def store_of(settings) -> InstanceStore:
    return InstanceStore(settings.state_dir)


# --- stop -------------------------------------------------------------------------------


def test_stop_powers_the_guest_off_cleanly_and_keeps_the_disks(
    sector_vm, lifecycle_settings, no_stray_qemu
):
    inst = sector_vm("vm-clean")
    booted(inst)
    (pid,) = no_stray_qemu()
    stopped = lifecycle.stop(lifecycle_settings, "vm-clean", timeout=20)
    assert stopped.state is State.STOPPED and stopped.reason == "stopped"
    assert stopped.pid is None and stopped.finished is not None
    assert not is_our_qemu(pid, inst.directory) and no_stray_qemu() == []
    assert all(d.path.exists() for d in stopped.drives)
    assert not inst.qmp_socket.exists() and not inst.pid_file.exists()
    # the state is on disk: a new process (a new store) sees Stopped
    assert store_of(lifecycle_settings).load("vm-clean").state is State.STOPPED


def test_stop_refuses_a_guest_that_ignores_the_button_unless_forced(
    sector_vm, lifecycle_settings, no_stray_qemu
):
    inst = sector_vm("vm-hung", acpi=False)
    booted(inst)
    with pytest.raises(lifecycle.StopTimeout, match="did not power off within 1s") as e:
        lifecycle.stop(lifecycle_settings, "vm-hung", timeout=1)
    assert "--force" in (e.value.hint or "")
    still = store_of(lifecycle_settings).refresh(store_of(lifecycle_settings).load("vm-hung"))
    assert still.state is State.RUNNING and len(no_stray_qemu()) == 1
    forced = lifecycle.stop(lifecycle_settings, "vm-hung", timeout=1, force=True)
    assert forced.state is State.STOPPED and forced.reason == "stopped (forced off)"
    assert no_stray_qemu() == []


def test_stopping_a_stopped_and_starting_a_running_instance_are_refused(
    sector_vm, lifecycle_settings
):
    sector_vm("vm-twice")
    with pytest.raises(InvalidState, match="already Running"):
        lifecycle.start(lifecycle_settings, "vm-twice")
    booted(store_of(lifecycle_settings).load("vm-twice"))
    lifecycle.stop(lifecycle_settings, "vm-twice", timeout=20)
    with pytest.raises(InvalidState, match="already Stopped"):
        lifecycle.stop(lifecycle_settings, "vm-twice")
    with pytest.raises(InvalidState, match="not Running"):
        lifecycle.reboot(lifecycle_settings, "vm-twice")


def test_unknown_instance_is_not_found(lifecycle_settings):
    for op in (lifecycle.stop, lifecycle.start, lifecycle.reboot):
        with pytest.raises(NotFound, match="no instance 'vm-nope'"):
            op(lifecycle_settings, "vm-nope")


# --- start ------------------------------------------------------------------------------


def test_start_rebuilds_qemu_from_the_saved_instance(sector_vm, lifecycle_settings, no_stray_qemu):
    inst = sector_vm("vm-again")
    booted(inst)
    lifecycle.stop(lifecycle_settings, "vm-again", timeout=20)
    again = lifecycle.start(lifecycle_settings, "vm-again")
    assert again.state is State.RUNNING and again.reason == ""
    (pid,) = no_stray_qemu()
    assert again.pid == pid and again.finished is None
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    assert [a.decode() for a in cmdline] == q.qemu_argv(again, qemu=again.qemu)
    booted(again)
    assert inst.console_log.with_name("console.log.1").read_text().count("IKOK") == 1


def test_ephemeral_start_begins_from_the_image_persistent_keeps_its_disk(
    sector_vm, lifecycle_settings
):
    eph = sector_vm("vm-eph", start=False, disk_size_mib=8)
    per = sector_vm("vm-per", start=False, persistent=True)
    assert "backing-filename" in info(eph.drives[0].path)
    assert "backing-filename" not in info(per.drives[0].path)  # stands alone
    for inst in (eph, per):  # what a guest would have written
        assert qemu_io(inst.drives[0].path, "write -P 0x5a 512k 64k").returncode == 0
        assert has_pattern(inst.drives[0].path, 0x5A)
    for name in ("vm-eph", "vm-per"):
        lifecycle.start(lifecycle_settings, name)
        lifecycle.stop(lifecycle_settings, name, timeout=1, force=True)
    assert not has_pattern(eph.drives[0].path, 0x5A)  # a fresh overlay...
    assert has_pattern(eph.drives[0].path, 0x00)
    assert info(eph.drives[0].path)["virtual-size"] == 8 << 20  # ...of the same size
    assert has_pattern(per.drives[0].path, 0x5A)


def test_persistent_disk_survives_cache_loss_ephemeral_start_says_what_is_missing(
    sector_vm, lifecycle_settings, tmp_path, no_stray_qemu
):
    per = sector_vm("vm-p2", start=False, persistent=True)
    eph = sector_vm("vm-e2", start=False)
    assert eph.base_image in lifecycle.images_in_use(lifecycle_settings)
    assert per.base_image not in lifecycle.images_in_use(lifecycle_settings)
    per.base_image.unlink()
    eph.base_image.unlink()  # "cache prune"
    assert lifecycle.start(lifecycle_settings, "vm-p2").state is State.RUNNING
    with pytest.raises(EnvironmentProblem, match=r"cached image .* is gone") as e:
        lifecycle.start(lifecycle_settings, "vm-e2")
    assert "imagekit launch" in (e.value.hint or "")
    assert store_of(lifecycle_settings).load("vm-e2").state is State.STOPPED
    assert len(no_stray_qemu()) == 1


def test_grow_root_disk_and_refuse_to_shrink(tmp_path: Path):
    base = tmp_path / "base.img"
    base.write_bytes(os.urandom(1 << 20))
    disk = tmp_path / "root.qcow2"
    q.create_overlay(base, "raw", disk)
    prepare_root_disk(disk, persistent=True, size_mib=20)
    meta = info(disk)
    assert meta["virtual-size"] == 20 << 20 and "backing-filename" not in meta
    out = subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(base), str(disk)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout  # the image's bytes, zeros beyond
    with pytest.raises(InputError, match="disks only grow"):
        prepare_root_disk(disk, persistent=False, size_mib=4)


# --- reboot -----------------------------------------------------------------------------


def test_reboot_clean_and_hard_boot_the_guest_again_in_the_same_qemu(
    sector_vm, lifecycle_settings, no_stray_qemu
):
    inst = sector_vm("vm-reboot")
    booted(inst)
    (pid,) = no_stray_qemu()
    lifecycle.reboot(lifecycle_settings, "vm-reboot", timeout=20)
    booted(inst, 2)
    lifecycle.reboot(lifecycle_settings, "vm-reboot", hard=True)
    booted(inst, 3)
    after = store_of(lifecycle_settings).refresh(store_of(lifecycle_settings).load("vm-reboot"))
    assert after.state is State.RUNNING and no_stray_qemu() == [pid]


def test_soft_reboot_of_a_guest_ignoring_the_button_changes_nothing(sector_vm, lifecycle_settings):
    inst = sector_vm("vm-rb-hung", acpi=False)
    booted(inst)
    with pytest.raises(lifecycle.StopTimeout) as e:
        lifecycle.reboot(lifecycle_settings, "vm-rb-hung", timeout=1)
    assert "--hard" in (e.value.hint or "")
    lifecycle.reboot(lifecycle_settings, "vm-rb-hung", hard=True)
    booted(inst, 2)


# --- recovery ---------------------------------------------------------------------------


def test_dead_qemu_is_failed_with_the_console_log_named_and_start_recovers(
    sector_vm, lifecycle_settings, no_stray_qemu, cli
):
    inst = sector_vm("vm-crash")
    booted(inst)
    (pid,) = no_stray_qemu()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while is_our_qemu(pid, inst.directory) and time.monotonic() < deadline:
        time.sleep(0.05)
    store = store_of(lifecycle_settings)
    failed = store.refresh(store.load("vm-crash"))
    assert failed.state is State.FAILED
    assert failed.reason == f"qemu exited unexpectedly (see console log {inst.console_log})"
    with pytest.raises(InvalidState, match="Failed, not Running"):
        lifecycle.stop(lifecycle_settings, "vm-crash")
    env = {"IMAGEKIT_STATE_DIR": str(lifecycle_settings.state_dir)}
    shown = cli("console", "vm-crash", env=env)
    assert shown.exit_code == 0 and "IKOK" in shown.stdout
    result = cli("start", "vm-crash", env=env)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "vm-crash"
    assert store.load("vm-crash").state is State.RUNNING
    # the crashed boot's log is kept beside the new one, for finding where it stopped
    before = cli("console", "vm-crash", "--previous", "--tail", "1", env=env)
    assert before.exit_code == 0 and before.stdout == "IKOK\n"
    both = cli("console", "vm-crash", "--previous", "--follow", env=env)
    assert both.exit_code == 2 and "--previous" in both.stderr


def test_a_killed_instance_cannot_be_started(sector_vm, lifecycle_settings, no_stray_qemu):
    sector_vm("vm-gone")
    kill(lifecycle_settings, "vm-gone")
    with pytest.raises(InvalidState, match="disks are gone") as e:
        lifecycle.start(lifecycle_settings, "vm-gone")
    assert "imagekit launch" in (e.value.hint or "")
    assert no_stray_qemu() == []


# --- the command line -------------------------------------------------------------------


def test_cli_stop_start_and_errors(sector_vm, lifecycle_settings, cli):
    inst = sector_vm("vm-cli")
    booted(inst)
    env = {"IMAGEKIT_STATE_DIR": str(lifecycle_settings.state_dir)}
    result = cli("stop", "vm-cli", env=env)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "vm-cli\n"
    assert "vm-cli: stopped (Stopped, stopped)" in result.stderr
    again = cli("stop", "vm-cli", env=env)
    assert again.exit_code == 2
    assert again.stderr.splitlines() == [
        "imagekit: error: instance vm-cli is already Stopped",
        "imagekit: hint: imagekit start vm-cli",
    ]
    missing = cli("start", "vm-missing", env=env)
    assert missing.exit_code == 2
    assert missing.stderr.splitlines()[0] == "imagekit: error: no instance 'vm-missing'"
    assert cli("start", "vm-cli", env=env).exit_code == 0
    running = cli("start", "vm-cli", env=env)
    assert running.exit_code == 2 and "already Running" in running.stderr
    listing = cli("instances", env=env)
    assert any(
        line.startswith("vm-cli") and "ephemeral" in line for line in listing.stdout.splitlines()
    )
    assert cli("stop", "--force", "--timeout", "5", "vm-cli", env=env).exit_code == 0


# --- bootable volumes -------------------------------------------------------------------


@pytest.fixture
def published(marketplace, make_endorser, http_files, monkeypatch):
    """``publish(data, served=None) -> ID``: signed entry on a real server, bytes on HTTP."""
    import hashlib

    from imagekit.image.identifier import sha1_to_id
    from imagekit.market.client import MarketplaceClient
    from tests.plugins.market import draft_entry, sign

    endorser = make_endorser()
    client = MarketplaceClient(marketplace.url)
    monkeypatch.setenv("IMAGEKIT_MARKETPLACE", marketplace.url)
    monkeypatch.setenv("IMAGEKIT_TRUST", str(endorser.cert_path))
    monkeypatch.setenv("IMAGEKIT_ALLOW_PRIVATE_LOCATIONS", "1")

    def publish(data: bytes, *, served: bytes | None = None) -> str:
        url = http_files.add(hashlib.sha1(data).hexdigest(), data if served is None else served)
        client.upload(sign(draft_entry(data, locations=(url,)), endorser))
        return sha1_to_id(hashlib.sha1(data).hexdigest())

    yield publish
    client.close()


def test_bootable_volume_from_a_verified_image(published, tmp_path):
    from imagekit.errors import ChecksumMismatch
    from imagekit.launch.volumes import VolumeStore
    from imagekit.settings import load_settings
    from tests.plugins.lifecycle import boot_sector

    settings = load_settings({"state_dir": tmp_path / "state", "cache_dir": tmp_path / "cache"})
    image = boot_sector(acpi=True, payload=os.urandom(4096))
    image_id = published(image)
    states: list[str] = []
    vol = lifecycle.create_boot_volume(
        settings, "web-root", image_id, size_mib=16, on_state=states.append
    )
    assert states == ["Downloading", "Available"]
    assert [v.name for v in VolumeStore(settings.state_dir).list()] == ["web-root"]
    meta = info(vol.path)
    assert meta["format"] == "qcow2" and "backing-filename" not in meta
    assert meta["virtual-size"] == 16 << 20
    raw = tmp_path / "image.raw"
    raw.write_bytes(image)
    assert (
        subprocess.run(
            ["qemu-img", "compare", "-f", "raw", str(raw), str(vol.path)], capture_output=True
        ).returncode
        == 0
    )
    with pytest.raises(InputError, match="already exists"):
        lifecycle.create_boot_volume(settings, "web-root", image_id)

    other = boot_sector(acpi=False, payload=os.urandom(4096))
    bad_id = published(other, served=other[:-1] + b"!")  # tampered on the server
    with pytest.raises(ChecksumMismatch):
        lifecycle.create_boot_volume(settings, "bad-root", bad_id)
    assert [v.name for v in VolumeStore(settings.state_dir).list()] == ["web-root"]
    assert sorted(
        p.name for p in (settings.state_dir / "volumes").iterdir() if not p.name.startswith(".lock")
    ) == ["web-root.json", "web-root.origin", "web-root.qcow2"]


# --- boot volumes: volume create --from-image, launch --boot-volume ---------------------


@pytest.fixture
def boot_env(published, monkeypatch, no_stray_qemu):
    """Settings from the environment (as the CLI sees them), accel tcg, a published guest."""
    from imagekit.settings import load_settings
    from tests.plugins.lifecycle import boot_sector

    monkeypatch.setenv("IMAGEKIT_ACCEL", "tcg")

    def publish(size: int = 1 << 20) -> str:
        return published(boot_sector(acpi=True, pad_to=size, payload=os.urandom(4096)))

    return load_settings({}), publish


TINY = ("--type", "t1.micro", "--ram", "32M", "--swap", "0")


def launch_boot_volume(cli, name: str) -> str:
    result = cli("launch", "--boot-volume", name, *TINY)
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


def test_cli_boot_volume_outlives_kill_and_boots_the_next_launch(boot_env, cli, no_stray_qemu):
    from imagekit.launch.instances import DriveKind
    from imagekit.launch.volumes import VolumeStore

    settings, publish = boot_env
    image_id = publish()
    made = cli("volume", "create", "--from-image", image_id, "--name", "web-root", "--size", "8M")
    assert made.exit_code == 0, made.stderr
    assert made.stdout == "web-root\n"
    assert made.stderr.splitlines() == ["web-root: Downloading", "web-root: Available"]
    volumes = VolumeStore(settings.state_dir)
    disk = volumes.get("web-root").path

    vm = launch_boot_volume(cli, "web-root")
    store = store_of(settings)
    inst = store.load(vm)
    root = lifecycle.root_drive(inst)
    assert (root.kind, root.path, root.identifier) == (DriveKind.BOOT_VOLUME, disk, "web-root")
    assert inst.image_id == image_id and inst.persistent
    assert not (inst.directory / "overlay.qcow2").exists()
    booted(inst)
    assert volumes.get("web-root").attached_to == vm
    listing = cli("instances").stdout.splitlines()
    assert any(line.startswith(vm) and " volume " in line for line in listing)

    # one VM at a time: a second launch from the same volume is refused before qemu starts
    second = cli("launch", "--boot-volume", "web-root", *TINY)
    assert second.exit_code == 2
    assert second.stderr.splitlines()[0] == f"imagekit: error: volume web-root is attached to {vm}"
    assert len(no_stray_qemu()) == 1 and store.ids() == [vm]

    # what was written while Stopped is still there after start (no fresh overlay) and
    # after kill, which releases the volume and keeps it; the next launch boots from it
    lifecycle.stop(settings, vm, timeout=20)
    assert qemu_io(disk, "write -P 0x5a 512k 64k").returncode == 0
    lifecycle.start(settings, vm)
    booted(inst)  # the console log of this boot (start keeps the last one as console.log.1)
    assert cli("kill", vm).exit_code == 0
    assert disk.exists() and volumes.get("web-root").attached_to is None
    assert has_pattern(disk, 0x5A)
    again = launch_boot_volume(cli, "web-root")
    booted(store.load(again))
    assert cli("kill", again).exit_code == 0
    assert no_stray_qemu() == []
    with pytest.raises(InvalidState, match="disks are gone") as e:
        lifecycle.start(settings, again)
    assert e.value.hint == "launch a new one: imagekit launch --boot-volume web-root"

    # delete removes the disk, the registry record and the origin
    assert cli("volume", "delete", "web-root").exit_code == 0
    assert sorted(p.name for p in volumes.root.iterdir()) == [".lock"]


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("--boot-volume", "nope"), "no volume 'nope'"),
        (("--boot-volume", "data"), "volume data is not bootable (it was not made from an image)"),
        (
            ("IMAGE", "--boot-volume", "web-root"),
            "give either an image (ID or endorser:tag), --entry FILE or --boot-volume NAME",
        ),
        ((), "give either an image (ID or endorser:tag), --entry FILE or --boot-volume NAME"),
        (
            ("--boot-volume", "web-root", "--persistent"),
            "--persistent does not apply to a boot volume: it always keeps its data",
        ),
        (
            ("--boot-volume", "web-root", "--disk-size", "1G"),
            "--disk-size does not apply to a boot volume",
        ),
        (
            ("--boot-volume", "web-root", "--persistent-disk", "web-root"),
            "a persistent disk is given twice",
        ),
    ],
    ids=[
        "unknown-volume",
        "blank-volume",
        "image-and-volume",
        "neither",
        "persistent",
        "disk-size",
        "twice",
    ],
)
def test_launch_boot_volume_refusals_leave_nothing_behind(boot_env, cli, no_stray_qemu, args, line):
    from imagekit.launch.volumes import VolumeStore

    settings, publish = boot_env
    image_id = publish()
    assert lifecycle.create_boot_volume(settings, "web-root", image_id).name == "web-root"
    assert cli("volume", "create", "data", "1").exit_code == 0
    args = tuple(image_id if a == "IMAGE" else a for a in args)
    result = cli("launch", *args, *TINY)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.splitlines()[0] == f"imagekit: error: {line}"
    assert result.stdout == "" and no_stray_qemu() == []
    assert store_of(settings).ids() == []
    assert all(v.attached_to is None for v in VolumeStore(settings.state_dir).list())


def test_shrinking_disk_size_is_refused_before_any_download(
    boot_env, cli, http_files, no_stray_qemu
):
    settings, publish = boot_env
    image_id = publish(4 << 20)
    result = cli("launch", image_id, "--disk-size", "2M", *TINY)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        "imagekit: error: disk size 2 MiB is smaller than the image (4 MiB): disks only grow"
    )
    assert http_files.requests == []  # nothing fetched
    assert not settings.cache_dir.exists()  # refused before the cache was even made
    assert store_of(settings).ids() == [] and no_stray_qemu() == []


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("--from-image", "X"), "give the volume a name (--name NAME)"),
        (("--from-image", "X", "--name", "a", "b"), "two names given: 'b' and --name 'a'"),
        (
            ("--from-image", "X", "--name", "a", "--size", "lots"),
            "not a size: 'lots' (use e.g. 512M or 2G)",
        ),
        (
            ("--name", "a", "--size", "1G"),
            "--size goes with --from-image; a blank volume takes SIZE_GB",
        ),
        (("a",), "give the size in GB (imagekit volume create NAME SIZE_GB) or --from-image ID"),
        (("--from-image", "X", "a", "3"), "a volume made --from-image takes --size, not SIZE_GB"),
        (
            ("--from-image", "X", "--name", "bad/name"),
            "volume name 'bad/name': use letters, digits, . _ - (max 64)",
        ),
    ],
    ids=[
        "no-name",
        "two-names",
        "bad-size",
        "size-without-image",
        "no-size",
        "size-gb",
        "bad-name",
    ],
)
def test_cli_volume_create_usage_errors_are_one_line(cli, tmp_path, args, line):
    env = {"IMAGEKIT_STATE_DIR": str(tmp_path / "state")}
    result = cli("volume", "create", *args, env=env)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"imagekit: error: {line}"]
    assert not (tmp_path / "state" / "volumes").exists()


# --- one rule each: images in use, volume holders ---------------------------------------


def test_cache_prune_keeps_the_readonly_disk_a_done_instance_starts_with(
    sector_vm, lifecycle_settings, cli, monkeypatch
):
    """``start`` boots Done instances again, so their read-only disks are still in use."""
    import dataclasses

    from imagekit.launch.instances import Drive, DriveKind

    monkeypatch.setenv("IMAGEKIT_STATE_DIR", str(lifecycle_settings.state_dir))
    monkeypatch.setenv("IMAGEKIT_CACHE_DIR", str(lifecycle_settings.cache_dir))
    images = lifecycle_settings.cache_dir / "images"
    images.mkdir(parents=True)
    data = images / ("SHA-256-" + "ab" * 32)
    data.write_bytes(b"data disk")
    (images / (data.name + ".json")).write_text(
        json.dumps(
            {
                "size": 9,
                "verified": {"SHA-256": "ab" * 32},
                "identifiers": [],
                "last_used": "2020-01-01T00:00:00Z",
            }
        )
    )
    inst = sector_vm("vm-ro", start=False)
    store = InstanceStore(lifecycle_settings.state_dir)
    drive = Drive(DriveKind.READONLY, data, "raw", readonly=True, serial="data")
    store.save(dataclasses.replace(inst, drives=(*inst.drives, drive), state=State.DONE))
    assert data in lifecycle.images_in_use(lifecycle_settings)
    assert cli("cache", "prune").exit_code == 0
    assert data.exists()


def test_volume_held_by_an_instance_whose_qemu_is_gone_is_free_again(sector_vm, lifecycle_settings):
    """A record saying Running is not a holder once its qemu has died (the one liveness
    rule: state re-derived from the process)."""
    from imagekit.launch.volumes import VolumeStore

    volumes = VolumeStore(lifecycle_settings.state_dir)
    volumes.create("scratch", 1)
    inst = sector_vm("vm-holder")  # running
    volumes.acquire("scratch", inst.id)
    assert volumes.get("scratch").attached_to == inst.id
    os.kill(inst.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while is_our_qemu(inst.pid, inst.directory) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert volumes.get("scratch").attached_to is None


def test_start_keeps_a_chosen_host_port_or_refuses_and_moves_a_picked_one(
    sector_vm, lifecycle_settings, no_stray_qemu
):
    import socket

    from imagekit.errors import InvalidState
    from imagekit.launch.instances import PortForward

    store = store_of(lifecycle_settings)
    inst = sector_vm("vm-ports", start=False)
    with socket.socket() as a, socket.socket() as b:
        for s in (a, b):
            s.bind(("127.0.0.1", 0))
            s.listen()
        chosen, picked = a.getsockname()[1], b.getsockname()[1]
        store.save(
            dataclasses_replace(
                inst,
                ports=(
                    PortForward(chosen, 80, source="option", fixed=True),
                    PortForward(picked, 8081, source="entry", fixed=False),
                ),
            )
        )
        with pytest.raises(InvalidState, match=f"host port 127.0.0.1:{chosen} .*is in use"):
            lifecycle.start(lifecycle_settings, "vm-ports")
        assert no_stray_qemu() == []  # refused before qemu started
        a.close()
        again = lifecycle.start(lifecycle_settings, "vm-ports")
    assert again.state is State.RUNNING
    by_guest = {p.guest_port: p.host_port for p in again.ports}
    assert by_guest[80] == chosen and by_guest[8081] != picked
    (pid,) = no_stray_qemu()
    netdev = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert any(f"hostfwd=tcp:127.0.0.1:{by_guest[8081]}-:8081".encode() in x for x in netdev)
