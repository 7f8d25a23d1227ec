"""Real guests: the tiny appliance published to a real marketplace, its bytes served over
HTTP on loopback, launched with ``imagekit launch`` under qemu -accel tcg. The serial
console shows what the guest saw: that it booted, its context, its data disk.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
from pathlib import Path

import pytest

from imagekit.image.identifier import sha1_to_id
from imagekit.isofs.writer import write_iso_files
from imagekit.launch.instances import InstanceStore, State
from imagekit.market.client import MarketplaceClient
from imagekit.settings import load_settings
from tests.plugins.market import draft_entry, sign

pytestmark = pytest.mark.slow
BOOT_TIMEOUT = 240


def ident(data: bytes) -> str:
    return sha1_to_id(hashlib.sha1(data).hexdigest())


@pytest.fixture
def world(
    marketplace, make_endorser, http_files, tiny_appliance, monkeypatch, tmp_path, no_stray_qemu
):
    endorser = make_endorser()
    client = MarketplaceClient(marketplace.url)
    monkeypatch.setenv("IMAGEKIT_MARKETPLACE", marketplace.url)
    monkeypatch.setenv("IMAGEKIT_TRUST", str(endorser.cert_path))
    monkeypatch.setenv("IMAGEKIT_ACCEL", "tcg")
    monkeypatch.setenv("IMAGEKIT_ALLOW_PRIVATE_LOCATIONS", "1")

    def publish(data: bytes, name: str, **fields) -> str:
        url = http_files.add(name, data)
        client.upload(sign(draft_entry(data, locations=(url,), **fields), endorser))
        return ident(data)

    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "tester@imagekit",
            "-f",
            str(tmp_path / "id"),
        ],
        check=True,
    )
    image = tiny_appliance.read_bytes()
    yield {
        "publish": publish,
        "image": image,
        "image_id": publish(image, "tiny.raw", title="tiny appliance", tag="tiny"),
        "email": endorser.email,
        "pubkey": tmp_path / "id.pub",
        "http": http_files,
        "started": no_stray_qemu,
        "store": InstanceStore(load_settings({}).state_dir),
    }
    client.close()


def data_disk(files: dict[str, bytes], label: str) -> bytes:
    import io

    buf = io.BytesIO()
    write_iso_files(files, buf, label=label)
    return buf.getvalue()


def console_lines(inst) -> list[str]:
    return [
        line.strip()
        for line in inst.console_log.read_text(errors="replace").splitlines()
        if "IMAGEKIT-TINY:" in line
    ]


def test_guest_boots_verified_image_sees_context_and_reads_data_disk(world, cli, tmp_path):
    disk = data_disk({"hello.txt": b"data-disk-content-42\n", "imagekit-poweroff": b""}, "DATA42")
    disk_id = world["publish"](disk, "data.iso", kind="disk", os_name="none")
    script = tmp_path / "setup.sh"
    script.write_text("#!/bin/sh\necho hello-from-user-data\n")
    result = cli(
        "launch",
        world["image_id"],
        "--type",
        "t1.micro",
        "--swap",
        "0",
        "--ssh-key",
        world["pubkey"],
        "--user-data",
        script,
        "--hostname",
        "tiny1",
        "--readonly-disk",
        disk_id,
        "--volatile-disk",
        "1",
    )
    assert result.exit_code == 0, result.stderr
    instance_id = result.stdout.strip()
    store: InstanceStore = world["store"]
    inst = store.wait(store.load(instance_id), {State.DONE}, timeout=BOOT_TIMEOUT)
    lines = console_lines(inst)
    assert inst.state is State.DONE, (inst.reason, lines)
    assert inst.reason == "guest powered off"

    key = world["pubkey"].read_text().split()[1]
    assert any(x.startswith("IMAGEKIT-TINY: booted") for x in lines), lines
    (ctx,) = [x for x in lines if "context scheme=cidata" in x]
    assert "hostname=tiny1" in ctx and key[:20] in ctx
    assert any("user-data: hello-from-user-data" in x for x in lines), lines
    assert any("label=DATA42" in x for x in lines), lines
    assert any("hello.txt: data-disk-content-42" in x for x in lines), lines

    # it booted from the verified image: the overlay's backing file is the cache file named
    # by the SHA-256 of the published bytes, and those bytes are the tiny appliance's
    overlay = inst.directory / "overlay.qcow2"
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", "-U", str(overlay)],
            check=True,
            capture_output=True,
        ).stdout
    )
    backing = Path(info["backing-filename"])
    assert backing.name == "SHA-256-" + hashlib.sha256(world["image"]).hexdigest()
    assert backing.read_bytes() == world["image"]

    listing = cli("instances")
    assert any(
        line.startswith(instance_id) and " Done " in line for line in listing.stdout.splitlines()
    )

    owned = [overlay, inst.directory / "context.iso", inst.directory / "volatile-0.qcow2"]
    assert all(p.exists() for p in owned)
    assert cli("kill", instance_id).exit_code == 0
    assert not any(p.exists() for p in owned)
    assert inst.console_log.exists()
    assert world["started"]() == []


def test_running_instance_volume_lock_cache_hit_and_kill(world, cli):
    assert cli("volume", "create", "data", "1").exit_code == 0
    ref = f"{world['email']}:tiny"  # by tag this time
    result = cli(
        "launch",
        ref,
        "--type",
        "t1.micro",
        "--swap",
        "64M",
        "--persistent-disk",
        "data",
        "--ssh-key",
        world["pubkey"],
    )
    assert result.exit_code == 0, result.stderr
    first_id = result.stdout.strip()
    store: InstanceStore = world["store"]
    inst = store.load(first_id)
    assert inst.state is State.RUNNING
    (pid,) = world["started"]()
    # stays up: wait until the guest says it is idle
    import time

    deadline = time.monotonic() + BOOT_TIMEOUT
    while "IMAGEKIT-TINY: idle" not in console_lines(inst) and time.monotonic() < deadline:
        assert store.refresh(store.load(first_id)).state is State.RUNNING
        time.sleep(1)
    assert "IMAGEKIT-TINY: idle" in console_lines(inst)
    with socket.create_connection(("127.0.0.1", inst.ssh_port), timeout=5):
        pass  # qemu forwards the port to the guest
    row = next(x for x in cli("instances").stdout.splitlines() if x.startswith(first_id))
    cells = row.split()
    assert cells[1:3] == ["-", "Running"]  # no name
    assert {"512M", str(inst.ssh_port), inst.image_id} <= set(cells)

    # hot-plug another volume into the running guest, then unplug it (the guest's PCIe
    # hot-plug driver must let go of it: DEVICE_DELETED)
    assert cli("volume", "create", "extra", "1").exit_code == 0
    result = cli("volume", "attach", "extra", first_id)
    assert result.exit_code == 0, result.stderr
    assert f"extra                    1G {first_id}" in cli("volume", "list").stdout
    assert cli("volume", "delete", "extra").exit_code == 2  # held
    result = cli("volume", "detach", "extra")
    assert result.exit_code == 0, result.stderr
    assert cli("volume", "delete", "extra").exit_code == 0

    # the volume is held: a second VM may not take it, and nothing starts
    result = cli("launch", world["image_id"], "--persistent-disk", "data")
    assert result.exit_code == 2
    assert f"volume data is attached to {first_id}" in result.stderr
    assert world["started"]() == [pid]
    assert cli("volume", "delete", "data").exit_code == 2

    assert cli("kill", first_id).exit_code == 0
    inst = store.load(first_id)
    assert (inst.state, inst.reason) == (State.DONE, "killed")
    assert world["started"]() == []
    assert not (inst.directory / "swap.qcow2").exists()
    assert "-" in cli("volume", "list").stdout.splitlines()[1].split()

    # a warm launch: the image comes from the cache, no download
    image_requests = [p for p, _ in world["http"].requests if p == "tiny.raw"]
    result = cli(
        "launch",
        world["image_id"],
        "--persistent-disk",
        "data",
        "--swap",
        "0",
        "--type",
        "t1.micro",
    )
    assert result.exit_code == 0, result.stderr
    assert [p for p, _ in world["http"].requests if p == "tiny.raw"] == image_requests
    second = result.stdout.strip()
    assert cli("kill", second).exit_code == 0
    assert world["started"]() == []


# --- the first hour: keys, names, ports, swap, disk buses, the console, local entries ----


def padded(image: bytes, mib: int) -> bytes:
    """The tiny appliance with ``mib`` MiB of zeros after it: other bytes, another ID, the
    same boot (the partition table ends well before)."""
    return image + b"\0" * (mib << 20)


def wait_for_line(inst, text: str, timeout: float = BOOT_TIMEOUT) -> list[str]:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = console_lines(inst)
        if any(text in x for x in lines):
            return lines
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not in the console: {console_lines(inst)}")


def http_get(port: int, timeout: float = 60) -> str:
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                return r.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


HTTP_SCRIPT = """#!/bin/sh
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
mkdir -p /www
echo "hello-from-the-guest" > /www/index.html
for port in 80 8081; do
    /bin/busybox httpd -p $port -h /www </dev/null >/dev/null 2>&1
done
echo http-ready
"""


def test_default_key_name_and_ports_reach_a_web_server_in_the_guest(
    world, cli, tmp_path, isolated_home
):
    (isolated_home / ".ssh").mkdir()
    default_key = isolated_home / ".ssh" / "id_ed25519.pub"
    default_key.write_bytes(world["pubkey"].read_bytes())
    image_id = world["publish"](padded(world["image"], 1), "web.raw", inbound_ports=(8081,))
    script = tmp_path / "http.sh"
    script.write_text(HTTP_SCRIPT)
    result = cli(
        "launch",
        image_id,
        "--name",
        "web1",
        "--port",
        "80",
        "--user-data",
        script,
        "--type",
        "t1.micro",
        "--swap",
        "0",
    )
    assert result.exit_code == 0, result.stderr
    assert f"ssh key: {default_key}" in result.stderr.splitlines()
    assert "warning" not in result.stderr
    store: InstanceStore = world["store"]
    inst = store.find("web1")
    assert inst.id == result.stdout.strip() and inst.name == "web1"
    lines = wait_for_line(inst, "user-data: http-ready")
    (ctx,) = [x for x in lines if "context scheme=cidata" in x]
    assert "hostname=web1" in ctx  # the name is the default host name
    assert world["pubkey"].read_text().split()[1][:20] in ctx  # the default key went in

    by_guest = {p.guest_port: p for p in inst.ports}
    assert sorted(by_guest) == [80, 8081]
    assert (by_guest[80].source, by_guest[8081].source) == ("option", "entry")
    assert {p.address for p in inst.ports} == {"127.0.0.1"}
    for p in inst.ports:
        assert http_get(p.host_port) == "hello-from-the-guest\n"

    detail = cli("instances", "web1").stdout.splitlines()
    assert "name:         web1" in detail
    assert f"  127.0.0.1:{by_guest[80].host_port}->80/tcp  --port" in detail
    assert f"  127.0.0.1:{by_guest[8081].host_port}->8081/tcp  entry inbound-port" in detail
    assert f"image:        {image_id}" in detail
    assert f"endorser:     {world['email']}" in detail
    assert f"console log:  {inst.console_log}" in detail
    assert any(x.startswith("  context ") and "ro virtio raw" in x for x in detail)
    row = next(x for x in cli("instances").stdout.splitlines() if x.startswith(inst.id))
    assert row.split()[1:3] == ["web1", "Running"]
    assert f"{by_guest[80].host_port}->80" in row

    result = cli("kill", "--rm", "web1")
    assert result.exit_code == 0, result.stderr
    assert store.ids() == [] and world["started"]() == []


def test_count_launches_named_instances_over_one_cached_image_and_warns_without_a_key(world, cli):
    result = cli(
        "launch",
        world["image_id"],
        "--count",
        "2",
        "--name",
        "worker",
        "--type",
        "t1.micro",
        "--swap",
        "0",
    )
    assert result.exit_code == 0, result.stderr
    warning = [x for x in result.stderr.splitlines() if x.startswith("imagekit: warning:")]
    assert warning == [
        "imagekit: warning: no ssh key injected (no --ssh-key, no ssh_key "
        "setting, no ~/.ssh/id_*.pub): imagekit ssh will not get in"
    ]
    store: InstanceStore = world["store"]
    workers = [store.find(f"worker-{i}") for i in (1, 2)]
    assert [w.id for w in workers] == result.stdout.split()
    assert len(world["started"]()) == 2
    assert workers[0].base_image == workers[1].base_image  # one cached image under both
    assert [p for p, _ in world["http"].requests].count("tiny.raw") == 1
    for w in workers:
        assert "hostname=worker-" in " ".join(wait_for_line(w, "context scheme=cidata"))
    assert cli("kill", "--rm", "worker-1", "worker-2").exit_code == 0
    assert world["started"]() == []


@pytest.mark.parametrize("scheme", ["nocloud", "configdrive", "opennebula", "stratuslab"])
def test_swap_is_formatted_and_enabled_through_the_context(world, cli, tmp_path, scheme):
    script = tmp_path / "off.sh"
    script.write_text("#!/bin/sh\n/bin/busybox poweroff -f\n")
    result = cli(
        "launch",
        world["image_id"],
        "--type",
        "t1.micro",
        "--swap",
        "64M",
        "--context-scheme",
        scheme,
        "--user-data",
        script,
    )
    assert result.exit_code == 0, result.stderr
    store: InstanceStore = world["store"]
    inst = store.wait(store.load(result.stdout.strip()), {State.DONE}, timeout=BOOT_TIMEOUT)
    lines = console_lines(inst)
    assert inst.state is State.DONE, (inst.reason, lines)
    # /proc/swaps in the guest: the third disk (root, context, swap), 64 MiB less a page
    (swap,) = [x.split() for x in lines if x.startswith("IMAGEKIT-TINY: swap ")]
    assert swap[2:5] == ["/dev/vdc", "partition", "65532"], lines


def test_tiny_appliance_boots_from_an_ide_root_disk(world, cli, tmp_path):
    image_id = world["publish"](padded(world["image"], 2), "ide.raw", disks_bus="ide")
    script = tmp_path / "disks.sh"
    script.write_text(
        "#!/bin/sh\necho blocks: $(ls /sys/block | tr '\\n' ' ')\n"
        "echo vendor: $(cat /sys/block/sda/device/vendor)\n"
        "/bin/busybox poweroff -f\n"
    )
    result = cli("launch", image_id, "--type", "t1.micro", "--swap", "0", "--user-data", script)
    assert result.exit_code == 0, result.stderr
    store: InstanceStore = world["store"]
    inst = store.wait(store.load(result.stdout.strip()), {State.DONE}, timeout=BOOT_TIMEOUT)
    lines = console_lines(inst)
    assert inst.state is State.DONE, (inst.reason, lines)
    assert {d.bus for d in inst.drives} == {"ide"}
    # SeaBIOS booted the root disk from the PIIX controller; Linux sees it as sda (ata_piix)
    assert "IMAGEKIT-TINY: disk sda not-iso9660" in lines, lines
    assert "IMAGEKIT-TINY: disk sr0 label=cidata" in lines, lines  # read-only: a CD-ROM
    (blocks,) = [x for x in lines if "user-data: blocks:" in x]
    assert "vda" not in blocks and "sda" in blocks
    assert "IMAGEKIT-TINY: user-data: vendor: ATA" in lines


SHELL_SCRIPT = """#!/bin/sh
# a shell on the serial console, for a person (or a test) attached to it
/bin/busybox setsid /bin/busybox sh -c \
    'exec /bin/busybox sh -i </dev/ttyS0 >/dev/ttyS0 2>&1' </dev/null >/dev/null 2>&1 &
echo shell-on-console
"""


def test_console_attach_types_into_the_guest_shell_through_a_pty(world, cli, tmp_path):
    import os
    import pty
    import select
    import shutil
    import sys
    import time

    script = tmp_path / "shell.sh"
    script.write_text(SHELL_SCRIPT)
    result = cli(
        "launch",
        world["image_id"],
        "--name",
        "con1",
        "--type",
        "t1.micro",
        "--swap",
        "0",
        "--user-data",
        script,
    )
    assert result.exit_code == 0, result.stderr
    store: InstanceStore = world["store"]
    inst = store.find("con1")
    wait_for_line(inst, "IMAGEKIT-TINY: idle")

    imagekit = shutil.which("imagekit", path=os.path.dirname(sys.executable))
    assert imagekit
    pid, fd = pty.fork()
    if pid == 0:  # the child: a user at a terminal
        os.execv(imagekit, [imagekit, "console", "con1", "--attach"])

    def read_until(needle: bytes, timeout: float = 60) -> bytes:
        seen = b""
        deadline = time.monotonic() + timeout
        while needle not in seen and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    break
        assert needle in seen, seen
        return seen

    try:
        read_until(b"detach: Ctrl-] then q")
        # as a person would: press Enter until the shell's prompt shows, then type
        seen, deadline = b"", time.monotonic() + 60
        while b"# " not in seen and time.monotonic() < deadline:
            os.write(fd, b"\r")
            if select.select([fd], [], [], 2)[0]:
                seen += os.read(fd, 4096)
        assert b"# " in seen, seen
        os.write(fd, b"echo answer-$((6 * 7))\r")
        read_until(b"answer-42")  # the shell computed it: the echo of the line says $((
        os.write(fd, b"\x1dq")  # the documented detach key
        read_until(b"detached from con1")
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    # the log kept everything while attached: console (and --follow) read it
    assert "answer-42" in cli("console", "con1").stdout
    assert store.refresh(store.find("con1")).state is State.RUNNING  # detaching left it up
    assert cli("kill", "--rm", "con1").exit_code == 0
    assert world["started"]() == []


def test_launch_entry_file_boots_a_local_signed_image_without_a_marketplace(
    world, cli, tmp_path, make_endorser, monkeypatch
):
    from tests.plugins.market import draft_entry, sign

    data = padded(world["image"], 3)
    endorser = make_endorser()
    monkeypatch.setenv("IMAGEKIT_TRUST", str(endorser.cert_path))
    monkeypatch.setenv("IMAGEKIT_MARKETPLACE", "http://127.0.0.1:9")  # nothing listens
    (tmp_path / "local.xml").write_bytes(sign(draft_entry(data, title="local"), endorser))
    (tmp_path / "local.raw").write_bytes(data)
    script = tmp_path / "off.sh"
    script.write_text("#!/bin/sh\necho local-image-up\n/bin/busybox poweroff -f\n")
    result = cli(
        "launch",
        "--entry",
        tmp_path / "local.xml",
        "--image",
        tmp_path / "local.raw",
        "--name",
        "local1",
        "--type",
        "t1.micro",
        "--swap",
        "0",
        "--user-data",
        script,
    )
    assert result.exit_code == 0, result.stderr
    store: InstanceStore = world["store"]
    inst = store.wait(store.find("local1"), {State.DONE}, timeout=BOOT_TIMEOUT)
    assert "IMAGEKIT-TINY: user-data: local-image-up" in console_lines(inst)
    assert inst.image_id == ident(data) and inst.endorser == endorser.email
    assert inst.base_image.name == "SHA-256-" + hashlib.sha256(data).hexdigest()
    assert inst.base_image.read_bytes() == data
