"""Real guests through the whole lifecycle: the tiny appliance published to a real
marketplace, launched with ``imagekit launch`` under qemu -accel tcg, its user-data script
keeping a boot counter in a file on the root disk's FAT partition (and honouring the ACPI
power button with busybox acpid, so ``imagekit stop`` is a clean shutdown).

Each boot prints ``marker=<n>`` (the counter it found) and writes n+1: an ephemeral root
forgets it at kill, a persistent one keeps it across stop/start, and a snapshot carries it
into a new appliance that is signed, published and launched by its new ID.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from imagekit.entry import parse_entry_bytes
from imagekit.image.identifier import sha1_to_id
from imagekit.launch import lifecycle
from imagekit.launch.instances import InstanceStore, State
from imagekit.market.client import MarketplaceClient
from imagekit.settings import load_settings
from tests.plugins.market import draft_entry, sign

pytestmark = pytest.mark.slow
BOOT_TIMEOUT = 240

COUNTER_SCRIPT = r"""#!/bin/sh
# power button -> unmount, sync, power off (what an init system would do)
mkdir -p /etc/acpi/PWRF /mnt/rootfs
cat > /etc/acpi/PWRF/00000080 <<'EOF'
#!/bin/sh
echo "IMAGEKIT-TINY: power button: unmount, sync, power off" > /dev/ttyS0
umount /mnt/rootfs
sync
/bin/busybox poweroff -f
EOF
chmod +x /etc/acpi/PWRF/00000080
# busybox acpid: -d (foreground, log to stderr): its default log file has no directory here
(/bin/busybox acpid -d -c /etc/acpi </dev/null >/dev/null 2>&1 &)
# the root disk's own partition (FAT), read-write
mount -t vfat -o rw /dev/vda1 /mnt/rootfs || echo "mount-failed"
n=$(cat /mnt/rootfs/marker.txt 2>/dev/null || echo 0)
echo "marker=$n"
echo $((n + 1)) > /mnt/rootfs/marker.txt
sync
echo "marker-written=$((n + 1))"
"""


# A test guest agent (busybox sh) on the org.qemu.guest_agent.0 port, speaking the qemu
# guest agent protocol for what a snapshot needs. FAT has no FIFREEZE, so "freeze" is the
# next best thing: flush and remount the partition read-only (thaw: read-write again).
AGENT_SCRIPT = r"""
for p in /sys/class/virtio-ports/*; do
    [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/${p##*/}
done
agent() {
    exec 3<>"$port"
    while :; do
        while IFS= read -r line <&3; do
            case "$line" in
            *guest-sync-delimited*)
                id=$(echo "$line" | sed 's/.*"id": *\([0-9]*\).*/\1/')
                printf '\377{"return": %s}\n' "$id" >&3 ;;
            *guest-fsfreeze-freeze*)
                sync; mount -o remount,ro /mnt/rootfs
                echo "IMAGEKIT-TINY: agent: frozen" > /dev/ttyS0
                printf '{"return": 1}\n' >&3 ;;
            *guest-fsfreeze-thaw*)
                mount -o remount,rw /mnt/rootfs
                echo "IMAGEKIT-TINY: agent: thawed" > /dev/ttyS0
                printf '{"return": 1}\n' >&3 ;;
            *) printf '{"error": {"class": "CommandNotFound", "desc": "test agent"}}\n' >&3 ;;
            esac
        done
        sleep 0.5  # no host on the other end yet
    done
}
[ -n "$port" ] && (agent </dev/null >/dev/null 2>&1 &)
echo "agent=${port:-none}"
"""


@pytest.fixture
def world(
    marketplace,
    make_endorser,
    http_files,
    tiny_appliance,
    monkeypatch,
    tmp_path,
    no_stray_qemu,
    cli,
):
    endorser = make_endorser()
    client = MarketplaceClient(marketplace.url)
    monkeypatch.setenv("IMAGEKIT_MARKETPLACE", marketplace.url)
    monkeypatch.setenv("IMAGEKIT_TRUST", str(endorser.cert_path))
    monkeypatch.setenv("IMAGEKIT_ACCEL", "tcg")
    monkeypatch.setenv("IMAGEKIT_ALLOW_PRIVATE_LOCATIONS", "1")
    image = tiny_appliance.read_bytes()
    url = http_files.add("tiny.raw", image)
    client.upload(
        sign(
            draft_entry(
                image,
                locations=(url,),
                title="tiny appliance",
                description="busybox test appliance",
            ),
            endorser,
        )
    )
    script = tmp_path / "counter.sh"
    script.write_text(COUNTER_SCRIPT)
    with_agent = tmp_path / "counter-agent.sh"
    with_agent.write_text(COUNTER_SCRIPT + AGENT_SCRIPT)
    launched: list[str] = []

    def launch(image_id: str, *extra: object, agent: bool = False) -> str:
        user_data = with_agent if agent else script
        result = cli(
            "launch",
            image_id,
            "--type",
            "t1.micro",
            "--swap",
            "0",
            "--user-data",
            user_data,
            *extra,
        )
        assert result.exit_code == 0, result.stderr
        launched.append(result.stdout.strip())
        return launched[-1]

    yield {
        "image_id": sha1_to_id(hashlib.sha1(image).hexdigest()),
        "endorser": endorser,
        "marketplace": marketplace,
        "launch": launch,
        "started": no_stray_qemu,
        "store": InstanceStore(load_settings({}).state_dir),
    }
    for instance_id in launched:
        cli("kill", instance_id)
    client.close()


def user_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    text = path.read_text(errors="replace")
    return [m.group(1) for m in re.finditer(r"IMAGEKIT-TINY: user-data: (\S+)", text)]


def wait_counter(store: InstanceStore, instance_id: str) -> int:
    """Wait for this boot's ``marker-written``; return the counter the boot found."""
    inst = store.load(instance_id)
    deadline = time.monotonic() + BOOT_TIMEOUT
    while not any(x.startswith("marker-written=") for x in user_lines(inst.console_log)):
        assert time.monotonic() < deadline, inst.console_log.read_text(errors="replace")
        assert store.refresh(store.load(instance_id)).state is State.RUNNING
        time.sleep(0.5)
    lines = user_lines(inst.console_log)
    assert "mount-failed" not in lines, lines
    (found,) = [int(x.split("=")[1]) for x in lines if x.startswith("marker=")]
    return found


def test_ephemeral_root_forgets_a_written_file_at_kill(world, cli):
    store: InstanceStore = world["store"]
    first = world["launch"](world["image_id"])
    assert wait_counter(store, first) == 0  # ...and it wrote 1
    assert cli("kill", first).exit_code == 0
    second = world["launch"](world["image_id"])
    assert wait_counter(store, second) == 0  # the file is gone: fresh from the image
    listing = cli("instances").stdout.splitlines()
    assert any(line.startswith(second) and " ephemeral " in line for line in listing)


def test_boot_volume_keeps_the_counter_across_kill_and_relaunch(world, cli):
    store: InstanceStore = world["store"]
    made = cli("volume", "create", "--from-image", world["image_id"], "--name", "tiny-root")
    assert made.exit_code == 0, made.stderr
    assert made.stderr.splitlines() == ["tiny-root: Downloading", "tiny-root: Available"]
    first = world["launch"]("--boot-volume=tiny-root")
    assert wait_counter(store, first) == 0  # ...and it wrote 1 on the volume
    assert cli("kill", first).exit_code == 0
    second = world["launch"]("--boot-volume=tiny-root")
    assert wait_counter(store, second) == 1  # the volume outlived the first instance


def test_persistent_root_keeps_it_across_stop_start_and_a_snapshot_carries_it(world, cli, tmp_path):
    store: InstanceStore = world["store"]
    vm = world["launch"](world["image_id"], "--persistent", "--disk-size", "64M")
    listing = cli("instances").stdout.splitlines()
    assert any(line.startswith(vm) and " persistent " in line for line in listing)
    assert wait_counter(store, vm) == 0
    # its root disk stands alone (no backing file in the cache) and was grown to 64M
    root = json.loads(
        subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", str(store.load(vm).drives[0].path)],
            check=True,
            capture_output=True,
        ).stdout
    )
    assert "backing-filename" not in root and root["virtual-size"] == 64 << 20

    t0 = time.monotonic()
    stopped = cli("stop", vm, "--timeout", "60")
    t_stop = time.monotonic() - t0
    assert stopped.exit_code == 0, stopped.stderr
    inst = store.load(vm)
    assert inst.state is State.STOPPED and inst.reason == "stopped"  # clean, not forced
    assert "power button" in inst.console_log.read_text(errors="replace")
    assert world["started"]() == []

    t0 = time.monotonic()
    started = cli("start", vm)
    t_start = time.monotonic() - t0
    assert started.exit_code == 0, started.stderr
    assert wait_counter(store, vm) == 1  # survived stop and start
    t_boot = time.monotonic() - t0

    assert cli("stop", vm).exit_code == 0
    out = tmp_path / "tiny-v2.qcow2"
    t0 = time.monotonic()
    snap = cli("snapshot", vm, "-o", out, "--title", "tiny appliance v2")
    t_snap = time.monotonic() - t0
    assert snap.exit_code == 0, snap.stderr
    new_id = snap.stdout.strip()
    entry_path = Path(f"{out}.xml")
    entry = parse_entry_bytes(entry_path.read_bytes())
    assert entry.identifier == new_id != world["image_id"]
    assert entry.replaces == world["image_id"] and entry.version == "1.1"
    assert entry.description == "busybox test appliance"  # carried from the base
    print(
        f"\nTIMING stop={t_stop:.2f}s start={t_start:.2f}s (boot to marker {t_boot:.1f}s) "
        f"snapshot={t_snap:.2f}s image={out.stat().st_size} bytes\n"
        f"ENTRY\n{entry_path.read_text()}"
    )

    # sign and publish the new appliance the documented way, then launch it by its ID
    market = world["marketplace"]
    endorser = world["endorser"]
    prepared = cli(
        "publish",
        entry_path,
        "--image",
        out,
        "--to",
        market.files_dir,
        "--url-base",
        f"{market.url}/files",
        "--prepare",
    )
    assert prepared.exit_code == 0, prepared.stderr
    signed = cli("sign", entry_path, "--key", endorser.key_path, "--cert", endorser.cert_path)
    assert signed.exit_code == 0, signed.stderr
    published = cli("publish", entry_path)
    assert published.exit_code == 0, published.stderr
    assert cli("kill", vm).exit_code == 0

    child = world["launch"](new_id)
    assert store.load(child).image_id == new_id
    assert wait_counter(store, child) == 2  # the snapshot kept the file


def test_snapshot_of_a_running_guest_with_an_agent_freezes_instead_of_stopping(
    world, cli, tmp_path
):
    store: InstanceStore = world["store"]
    vm = world["launch"](world["image_id"], agent=True)
    assert wait_counter(store, vm) == 0  # wrote 1
    inst = store.load(vm)
    deadline = time.monotonic() + 30
    while not lifecycle.guest_agent_connected(inst):
        assert time.monotonic() < deadline, inst.console_log.read_text(errors="replace")
        time.sleep(0.5)
    (pid,) = world["started"]()
    out = tmp_path / "frozen.qcow2"
    t0 = time.monotonic()
    result = cli("snapshot", vm, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    print(f"\nTIMING snapshot with agent freeze={time.monotonic() - t0:.2f}s")
    assert json.loads(result.stdout)["method"] == "guest-agent freeze"
    console = inst.console_log.read_text(errors="replace")
    assert console.index("agent: frozen") < console.index("agent: thawed")
    assert world["started"]() == [pid]  # never stopped
    assert store.refresh(store.load(vm)).state is State.RUNNING
    # the copy holds what the guest wrote: read the FAT partition of the new image
    raw = tmp_path / "frozen.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(out), str(raw)], check=True)
    marker = subprocess.run(
        ["mtype", "-i", f"{raw}@@1M", "::marker.txt"],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    ).stdout
    assert marker.strip() == "1"
