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
def world(marketplace, make_endorser, http_files, tiny_appliance, monkeypatch, tmp_path,
          no_stray_qemu):  # fmt: skip
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

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tester@imagekit",
                    "-f", str(tmp_path / "id")], check=True)  # fmt: skip
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
    disk = data_disk({"hello.txt": b"data-disk-content-42\n", "imagekit-poweroff": b""},
                     "DATA42")  # fmt: skip
    disk_id = world["publish"](disk, "data.iso", kind="disk", os_name="none")
    script = tmp_path / "setup.sh"
    script.write_text("#!/bin/sh\necho hello-from-user-data\n")
    result = cli("launch", world["image_id"], "--type", "t1.micro", "--swap", "0",
                 "--ssh-key", world["pubkey"], "--user-data", script, "--hostname", "tiny1",
                 "--readonly-disk", disk_id, "--volatile-disk", "1")  # fmt: skip
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
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U", str(overlay)],
                                     check=True, capture_output=True).stdout)  # fmt: skip
    backing = Path(info["backing-filename"])
    assert backing.name == "SHA-256-" + hashlib.sha256(world["image"]).hexdigest()
    assert backing.read_bytes() == world["image"]

    listing = cli("instances")
    assert any(line.startswith(instance_id) and " Done " in line
               for line in listing.stdout.splitlines())  # fmt: skip

    owned = [overlay, inst.directory / "context.iso", inst.directory / "volatile-0.qcow2"]
    assert all(p.exists() for p in owned)
    assert cli("kill", instance_id).exit_code == 0
    assert not any(p.exists() for p in owned)
    assert inst.console_log.exists()
    assert world["started"]() == []


def test_running_instance_volume_lock_cache_hit_and_kill(world, cli):
    assert cli("volume", "create", "data", "1").exit_code == 0
    ref = f"{world['email']}:tiny"  # by tag this time
    result = cli("launch", ref, "--type", "t1.micro", "--swap", "64M", "--persistent-disk",
                 "data", "--ssh-key", world["pubkey"])  # fmt: skip
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
    result = cli("launch", world["image_id"], "--persistent-disk", "data", "--swap", "0",
                 "--type", "t1.micro")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert [p for p, _ in world["http"].requests if p == "tiny.raw"] == image_requests
    second = result.stdout.strip()
    assert cli("kill", second).exit_code == 0
    assert world["started"]() == []
