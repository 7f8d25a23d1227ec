"""ISO writing: imagekit against genisoimage and xorriso on the same trees, same run.

Two trees (sizes from the environment; ``--quick`` shrinks them):

* many small files: ``BENCH_ISO_FILES`` (default 50,000) files of ~100 bytes in 100
  directories (the per-file cost: directory records, Rock Ridge, Joliet);
* a few large files: ``BENCH_ISO_LARGE_BYTES`` (default 2G) in 2 files (the streaming cost).

Each tool runs as a child process (imagekit's ``make_iso``, Python start-up included; also
with the image's SHA-1 and SHA-256 computed while it is written, as ``imagekit cdrom`` does;
``genisoimage -R -J`` and ``xorriso -as mkisofs -R -J``, each followed by ``sync FILE`` since
imagekit fsyncs its output), timed with its CPU time and peak RSS
(through ``/usr/bin/time``, so the bench's own size does not leak into the children's):
one untimed round of every tool, then the best of three interleaved rounds (``--repeat``
if more): on this kind of machine a single 2 GiB write varies by ±30% from run to run.
Targets: large files <= 1.1x genisoimage's wall time, many small files <= 2x; imagekit's
peak RSS on the large tree stays flat (<= 150 MiB, whatever the data size; it grows with
the number of files, about 4 KiB each, not with their bytes).
Alone: ``.venv/bin/python -m bench iso``.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import sys
from pathlib import Path

from ._common import (
    BenchArgs,
    Measured,
    Row,
    bench_dir,
    env_bytes,
    make_test_file,
    time_command,
)

NAME = "iso"

_IMAGEKIT = """
import sys
from pathlib import Path
from imagekit.image.digests import MultiHasher
from imagekit.isofs import make_iso
if sys.argv[3] == "hash":
    with MultiHasher(["SHA-1", "SHA-256"]) as hasher:
        make_iso(Path(sys.argv[1]), Path(sys.argv[2]), label="BENCH", sink=hasher.update)
        hasher.finish()
else:
    make_iso(Path(sys.argv[1]), Path(sys.argv[2]), label="BENCH")
"""


def _small_tree(root: Path, count: int) -> None:
    per_dir = max(1, count // 100)
    made = 0
    for d in range(100):
        sub = root / f"dir{d:03d}"
        sub.mkdir(parents=True)
        for f in range(per_dir):
            if made >= count:
                return
            (sub / f"file-{f:05d}.txt").write_text(f"{d} {f} " * 12 + "\n")
            made += 1


def _large_tree(root: Path, total: int) -> None:
    root.mkdir(parents=True)
    for i in range(2):
        make_test_file(root / f"large-{i}.bin", total // 2, seed=i)


def _tools(tree: Path, out: Path) -> dict[str, list[str]]:
    """argv per tool. imagekit's output is atomic and durable (fsync before the rename),
    so each baseline is followed by ``sync FILE``: every side pays for writing to disk."""
    tools = {
        "imagekit": [sys.executable, "-c", _IMAGEKIT, str(tree), str(out), "-"],
        # as `imagekit cdrom` runs it: SHA-1 and SHA-256 of the image computed while written
        "imagekit+hashes": [sys.executable, "-c", _IMAGEKIT, str(tree), str(out), "hash"],
    }
    quoted = shlex.quote(str(out)), shlex.quote(str(tree))
    if shutil.which("genisoimage"):
        tools["genisoimage"] = [
            "bash",
            "-c",
            f"genisoimage -quiet -R -J -V BENCH -o {quoted[0]} {quoted[1]} && sync {quoted[0]}",
        ]
    if shutil.which("xorriso"):
        tools["xorriso"] = [
            "bash",
            "-c",
            f"xorriso -as mkisofs -quiet -R -J -V BENCH -o "
            f"{quoted[0]} {quoted[1]} 2>/dev/null && sync {quoted[0]}",
        ]
    return tools


def _measure(tree: Path, work: Path, rounds: int) -> dict[str, Measured]:
    """Each tool's best run over ``rounds`` interleaved rounds, after one untimed round.

    The untimed round matters on a virtual machine: the first write into guest memory that
    the host has not backed yet costs a page-in on the host, so on a fresh machine the tool
    that happened to run first paid up to three times its time for the page cache it filled.
    Peak RSS comes from /usr/bin/time (a small process): Linux keeps ru_maxrss across exec,
    so a child forked straight from this (larger) Python process would report the bench's
    own size."""
    results: dict[str, Measured] = {}
    rss_file = work / "rss"
    timer = shutil.which("time", path="/usr/bin:/bin")
    tools = _tools(tree, work / "out.iso")
    for round_ in range(1 + rounds):
        for name, argv in tools.items():
            wrapped = [timer, "-f", "%M", "-o", str(rss_file), *argv] if timer else argv
            os.sync()  # no tool pays for the previous one's dirty pages
            m = time_command(wrapped, env=dict(os.environ))
            if timer:
                m = dataclasses.replace(m, peak_rss=int(rss_file.read_text().split()[-1]) * 1024)
            (work / "out.iso").unlink(missing_ok=True)
            if round_ and (name not in results or m.seconds < results[name].seconds):
                results[name] = m
    return results


def _rows(case: str, results: dict[str, Measured], target: str | None) -> list[Row]:
    ik = results["imagekit"]
    rows = []
    if "genisoimage" in results:
        rows.append(
            Row.make(
                NAME,
                f"{case}: wall time, hashing too",
                results["imagekit+hashes"].seconds,
                "s",
                baseline=("genisoimage", results["genisoimage"].seconds),
            )
        )
    for base in ("genisoimage", "xorriso"):
        if base in results:
            rows.append(
                Row.make(
                    NAME,
                    f"{case}: wall time",
                    ik.seconds,
                    "s",
                    baseline=(base, results[base].seconds),
                    target=target if base == "genisoimage" else None,
                )
            )
            rows.append(
                Row.make(
                    NAME,
                    f"{case}: CPU time",
                    ik.cpu_seconds,
                    "s",
                    baseline=(base, results[base].cpu_seconds),
                )
            )
            rows.append(
                Row.make(
                    NAME,
                    f"{case}: peak RSS",
                    ik.peak_rss / 2**20,
                    "MiB",
                    baseline=(base, results[base].peak_rss / 2**20),
                )
            )
    return rows


def run(args: BenchArgs) -> list[Row]:
    files = 2000 if args.quick else int(env_bytes("BENCH_ISO_FILES", 50_000))
    large = (128 << 20) if args.quick else env_bytes("BENCH_ISO_LARGE_BYTES", 2 << 30)
    rounds = 1 if args.quick else max(3, args.repeat)
    rows: list[Row] = []
    with bench_dir("bench-iso-", need=3 * large + (256 << 20), keep=args.keep) as work:
        small = work / "small"
        _small_tree(small, files)
        rows += _rows(f"{files} small files", _measure(small, work, rounds), "<= 2")
        shutil.rmtree(small)
        big = work / "large"
        _large_tree(big, large)
        measured = _measure(big, work, rounds)
        rows += _rows(f"2 files, {large >> 20} MiB", measured, "<= 1.1")
        rows.append(
            Row.make(
                NAME,
                "large tree: imagekit peak RSS",
                measured["imagekit"].peak_rss / 2**20,
                "MiB",
                target="<= 150",
            )
        )
    return rows
