"""The README's story, end to end, as users run it (``DEMO_FAST=1 make demo``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from imagekit.devtools.demo import DOG


@pytest.mark.slow
def test_demo_story_launches_appliance_that_reads_dog_from_data_disk(tmp_path: Path):
    env = {**os.environ, "DEMO_FAST": "1", "DEMO_DIR": str(tmp_path / "demo")}
    proc = subprocess.run(
        [sys.executable, "-m", "imagekit.devtools.demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    # the guest itself printed the file's content from the verified, attached data disk
    assert f"IMAGEKIT-TINY: file /animals/dog.txt: {DOG}" in out
    assert "Running" in out  # `imagekit instances` showed the VM up
    # launched by name with the configured default key, no --ssh-key and no ID parsing
    (launch,) = [line for line in out.splitlines() if line.startswith("   $ imagekit launch ")]
    assert "--name demo" in launch and "--ssh-key" not in launch
    assert "ssh key: " in proc.stderr and "warning: no ssh key" not in proc.stderr
    assert "   $ imagekit kill --rm demo" in out
    assert out.rstrip().endswith("Demo complete.")
    # kill left no qemu behind for this demo's state directory
    state = tmp_path / "demo" / "state"
    leftover = subprocess.run(["pgrep", "-f", f"qemu-system.*{state}"], capture_output=True)
    assert leftover.returncode == 1, leftover.stdout
