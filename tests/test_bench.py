"""`make bench` end to end in its smoke size: every bench named runs against its baseline
in the same run and lands in the one table (and the JSON rows)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_prints_ratios_against_baselines_measured_in_the_same_run(
    tmp_path: Path,
) -> None:
    rows_file = tmp_path / "rows.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "digests",
            "iso",
            "hostile",
            "--json",
            str(rows_file),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(rows_file.read_text())
    compared = [r for r in rows if r["ratio"] is not None]
    by_bench = {r["bench"]: r for r in compared}
    assert set(by_bench) == {"digests", "iso", "hostile"}
    named = {r["baseline_name"] for r in compared} | {r["metric"] for r in compared}
    assert {"coreutils 4 *sum in a row", "genisoimage", "xorriso", "ordinary signed entry"} <= named
    for row in compared:
        assert row["value"] > 0 and row["baseline_value"] > 0
        assert row["ratio"] == pytest.approx(row["value"] / row["baseline_value"], rel=0.01) or row[
            "ratio"
        ] == pytest.approx(row["baseline_value"] / row["value"], rel=0.01)
    # the table people read carries the same rows
    assert "coreutils 4 *sum in a row" in proc.stdout and "genisoimage" in proc.stdout
    assert "machine: " in proc.stdout
