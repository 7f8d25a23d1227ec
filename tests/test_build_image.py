"""A real build and a real boot: one Debian image with a package, a file and a script,
layered once more onto itself with a second script, booted under qemu (TCG) with a NoCloud
seed; the guest reports on its serial console what the build and cloud-init did.

One build chain and one boot, with several assertions, to keep the suite's time in bounds
(about 5-10 min cold on a loaded 2-core machine). ``IMAGEKIT_BUILD_TEST_CACHE`` (read at
import, before the isolated home) points the layer cache at a warm directory to iterate.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from imagekit.build.recipe import Recipe

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1500),
    pytest.mark.skipif(os.geteuid() != 0, reason="building needs root (loop devices, mounts)"),
    pytest.mark.skipif(
        shutil.which("qemu-system-x86_64") is None or shutil.which("debootstrap") is None,
        reason="needs qemu-system-x86 and debootstrap",
    ),
]

WARM_CACHE = os.environ.get("IMAGEKIT_BUILD_TEST_CACHE")
PACKAGE = "jq"  # small, and not in debian-minimal
BOOT_TIMEOUT = 720  # about 60 s on an idle machine; 6 min seen on 2 loaded cores

SETUP = """#!/bin/bash
set -eu
echo "setup ran: $(jq -n '1+1')" > /etc/imagekit-marker
"""
TUNE = """#!/bin/sh
echo "tune ran" >> /etc/imagekit-marker
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Build web.qcow2 (debian + jq + motd + setup.sh), then web-tuned.qcow2 on top of it."""
    from imagekit.build import build_image

    work = tmp_path_factory.mktemp("build")
    cache = Path(WARM_CACHE) if WARM_CACHE else work / "cache"
    (work / "setup.sh").write_text(SETUP)
    (work / "tune.sh").write_text(TUNE)
    (work / "motd").write_text("Welcome to the imagekit test appliance\n")
    recipe_file = work / "appliance.yaml"
    recipe_file.write_text(
        "base: debian:bookworm\n"
        f"packages: [{PACKAGE}]\n"
        "files:\n  /etc/motd: motd\n"
        "scripts: [setup.sh]\n"
        "size: 2G\nformat: qcow2\n"
        "title: imagekit test appliance\ntag: test-appliance\nversion: '1.0'\n"
    )
    phases: list[tuple[str, float | None]] = []
    first = build_image(
        Recipe.from_yaml(recipe_file),
        work / "web.qcow2",
        cache_dir=cache,
        phase=lambda name, s: phases.append((name, s)),
    )
    tuned_recipe = Recipe.make(base=str(first.image), scripts=["tune.sh"], relative_to=work)
    second = build_image(tuned_recipe, work / "web-tuned.qcow2", cache_dir=cache)
    return {"work": work, "cache": cache, "first": first, "second": second, "phases": phases}


def test_build_writes_image_entry_and_log(built: dict) -> None:
    from imagekit.entry import parse_entry_bytes
    from imagekit.image.identifier import sha1_to_id

    first = built["first"]
    assert first.image.read_bytes()[:4] == b"QFI\xfb"  # qcow2
    entry = parse_entry_bytes(first.entry_path.read_bytes())
    assert entry.identifier == first.identifier == sha1_to_id(entry.sha1)
    assert entry.bytes == first.image.stat().st_size
    assert (entry.os, entry.os_version, entry.os_arch) == ("debian", "12", "x86_64")
    assert str(entry.format) == "qcow2"
    assert entry.tag == "test-appliance"
    assert f'"packages": ["{PACKAGE}"]' in entry.description
    log_text = first.log_path.read_text(errors="replace")
    if first.layer_cached:  # only with a warm IMAGEKIT_BUILD_TEST_CACHE
        assert "from cache" in log_text
    else:
        assert "Build completed successfully" in log_text  # diskimage-builder's own log
    started = [n for n, s in built["phases"] if s is None]
    assert started[-3:] == [
        "customize (files, scripts, generalize)",
        "convert to qcow2",
        "describe",
    ]
    # Nothing left over: no partial output, no work directories, no mounts, no loops.
    assert not list(built["work"].glob(".*.part"))
    assert list((built["cache"] / "build" / "work").iterdir()) == []
    assert str(built["cache"]) not in Path("/proc/self/mountinfo").read_text()
    loops = subprocess.run(
        ["losetup", "-l", "-n", "-O", "BACK-FILE"], capture_output=True, text=True, check=True
    ).stdout
    assert str(built["cache"]) not in loops


def test_layering_onto_an_image_reuses_it(built: dict) -> None:
    second = built["second"]
    assert second.identifier != built["first"].identifier
    names = [n for n, _ in second.phases]
    assert "package layer (diskimage-builder)" not in names
    assert "import base image" in names
    from imagekit.entry import parse_entry_bytes

    entry = parse_entry_bytes(second.entry_path.read_bytes())
    assert (entry.os, entry.os_version) == ("debian", "12")  # from web.qcow2.xml


def test_image_boots_and_shows_package_script_and_seed_key(built: dict) -> None:
    work: Path = built["work"]
    image: Path = built["second"].image
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "imagekit-test",
            "-f",
            work / "id_test",
        ],
        check=True,
    )
    public_key = (work / "id_test.pub").read_text().strip()
    report = (
        "{ echo IMAGEKIT-REPORT-BEGIN; dpkg -s " + PACKAGE + " | grep '^Status'; "
        "cat /etc/imagekit-marker; cat /etc/motd; "
        "echo KEYS; cat /home/*/.ssh/authorized_keys; "
        "echo MACHINE-ID $(wc -c < /etc/machine-id); "
        "echo IMAGEKIT-REPORT-END; } > /dev/ttyS0 2>&1"
    )
    user_data = (
        "#cloud-config\n"
        "runcmd:\n"
        f"  - [sh, -c, {report!r}]\n"
        "power_state: {mode: poweroff, delay: now, timeout: 30}\n"
    ).encode()
    seed = work / "seed.iso"
    try:
        from imagekit.context import ContextSpec, make_context_iso

        spec = ContextSpec.build(ssh_keys=[public_key], user_data=user_data)
        make_context_iso("nocloud", spec, seed)
    except ImportError:
        keys = f"#cloud-config\nssh_authorized_keys: ['{public_key}']\n".encode()
        (work / "user-data").write_bytes(user_data.replace(b"#cloud-config\n", keys))
        (work / "meta-data").write_text("instance-id: iid-imagekit-test\n")
        subprocess.run(["cloud-localds", seed, work / "user-data", work / "meta-data"], check=True)
    overlay = work / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", image, "-F", "qcow2", overlay], check=True
    )
    console = work / "console.log"
    argv = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",  # KVM guests hang on these hosts
        # -nodefaults: no floppy drive for the guest to probe (seconds of I/O errors).
        "-nodefaults",
        "-m",
        "1024",
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
        "-serial",
        f"file:{console}",
        "-monitor",
        "none",
        "-drive",
        f"file={overlay},if=virtio,format=qcow2",
        "-drive",
        f"file={seed},if=virtio,format=raw,readonly=on",
        "-netdev",
        "user,id=n0",
        "-device",
        "virtio-net-pci,netdev=n0",
    ]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + BOOT_TIMEOUT
    text = ""
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(2)
            text = console.read_text(errors="replace") if console.exists() else ""
            if "IMAGEKIT-REPORT-END" in text:
                break
    finally:
        if proc.poll() is None:
            try:
                proc.wait(timeout=60)  # power_state poweroff
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    text = console.read_text(errors="replace")
    assert "IMAGEKIT-REPORT-END" in text, f"no report on the console; tail:\n{text[-3000:]}"
    report_text = text.split("IMAGEKIT-REPORT-BEGIN")[-1].split("IMAGEKIT-REPORT-END")[0]
    assert "Status: install ok installed" in report_text
    assert "setup ran: 2" in report_text
    assert "tune ran" in report_text
    assert "Welcome to the imagekit test appliance" in report_text
    assert public_key.split()[1] in report_text.split("KEYS", 1)[1]
    # Generalized: the guest made its own machine-id (33 bytes with the newline).
    assert "MACHINE-ID 33" in report_text
