"""A real guest (the tiny appliance under qemu TCG) reads imagekit's data and context disks.

Slow: each test boots a VM (about 10 s under TCG here); qemu is killed on any failure.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from imagekit.context import ContextSpec, make_context_iso
from imagekit.isofs.writer import make_iso

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu"),
]

ED25519 = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIClId0OLdjcH/9k62qG1qgHApM0qy3FFWUGhG8AJTJi/ "
    "me@example.org"
)
TIMEOUT = 120


class Guest:
    """qemu with the tiny appliance and extra raw disks; its serial console in a file."""

    def __init__(self, appliance: Path, disks: list[Path], serial: Path) -> None:
        argv = [
            "qemu-system-x86_64",
            "-accel",
            "tcg",  # KVM guests hang on these hosts
            "-m",
            "256",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            f"file:{serial}",
            "-drive",
            f"file={appliance},if=virtio,format=raw,snapshot=on",
        ]
        for disk in disks:
            argv += ["-drive", f"file={disk},if=virtio,format=raw,readonly=on"]
        self.serial = serial
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def output(self) -> str:
        return self.serial.read_text(errors="replace") if self.serial.exists() else ""

    def wait_for(self, marker: str) -> float:
        """Seconds from start until ``marker`` appears on the console."""
        while time.monotonic() - self.started < TIMEOUT:
            if marker in self.output():
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no {marker!r} on the console:\n{self.output()[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.startswith("IMAGEKIT-TINY:")]


def test_guest_reads_data_disk_and_nocloud_context_then_stays_up(
    tiny_appliance: Path, tmp_path: Path
) -> None:
    data = tmp_path / "flora"
    (data / "animals").mkdir(parents=True)
    (data / "animals" / "dog.txt").write_text("woof woof\n")
    (data / "plants.txt").write_text("fern\nmoss\n")
    data_iso = make_iso(data, tmp_path / "flora.iso", label="FLORA")
    spec = ContextSpec.build(
        hostname="web1", ssh_keys=[ED25519], user_data=b"#!/bin/sh\necho hello from $(hostname)\n"
    )
    seed = make_context_iso("nocloud", spec, tmp_path / "seed.iso")
    guest = Guest(tiny_appliance, [data_iso, seed], tmp_path / "serial.log")
    try:
        boot = guest.wait_for("IMAGEKIT-TINY: booted")
        done = guest.wait_for("IMAGEKIT-TINY: idle")
        out = lines(guest.output())
        assert "IMAGEKIT-TINY: disk vdb label=FLORA" in out
        assert "IMAGEKIT-TINY: file /animals/dog.txt: woof woof" in out
        assert "IMAGEKIT-TINY: file /plants.txt: fern moss" in out
        assert "IMAGEKIT-TINY: disk vdc label=cidata" in out
        assert f"IMAGEKIT-TINY: context scheme=cidata hostname=web1 key={ED25519}" in out
        assert "IMAGEKIT-TINY: user-data: hello from web1" in out
        time.sleep(1)
        assert guest.proc.poll() is None  # no poweroff marker: it stays up
        print(f"tiny appliance: booted in {boot:.1f} s, read both disks by {done:.1f} s")
    finally:
        guest.kill()


def test_guest_reads_configdrive_opennebula_stratuslab_then_powers_off(
    tiny_appliance: Path, tmp_path: Path
) -> None:
    spec = ContextSpec.build(
        hostname="ctx-host",
        ssh_keys=[ED25519],
        user_data=b"#!/bin/sh\necho script ran as $(id -u)\n",
    )
    isos = [
        make_context_iso(s, spec, tmp_path / f"{s}.iso")
        for s in ("configdrive", "opennebula", "stratuslab")
    ]
    stop = tmp_path / "stop"
    stop.mkdir()
    (stop / "imagekit-poweroff").write_text("")
    isos.append(make_iso(stop, tmp_path / "stop.iso", label="STOP"))
    guest = Guest(tiny_appliance, isos, tmp_path / "serial.log")
    try:
        guest.wait_for("IMAGEKIT-TINY: done")
        assert guest.proc.wait(timeout=TIMEOUT) == 0  # powered off by itself
        out = lines(guest.output())
        for label in ("config-2", "CONTEXT", "_STRATUSLAB"):
            assert (
                f"IMAGEKIT-TINY: context scheme={label} hostname=ctx-host key={ED25519}" in out
            ), label
        assert out.count("IMAGEKIT-TINY: user-data: script ran as 0") == 3
        assert "IMAGEKIT-TINY: idle" not in out
    finally:
        guest.kill()
