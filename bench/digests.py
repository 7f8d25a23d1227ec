"""Checksums: imagekit's four digests in one pass against the machine's limit and coreutils.

On one file (2 GiB; ``BENCH_DIGEST_BYTES`` overrides, ``--quick`` uses 256 MiB) in the page
cache, measured in the same run:

* imagekit: MD5, SHA-1, SHA-256 and SHA-512 in one read (``digest_file``, in a child process,
  timed inside it so interpreter start-up is not counted; peak RSS from the child);
* each digest alone with plain hashlib on one core (read and hash, 4 MiB at a time);
  for comparison, the best fixed assignment of whole digests to cores (imagekit instead
  moves the hash objects between its threads, so it can beat any fixed split), and CPU
  times (a CPU ratio near 1 with a higher wall ratio means other load, not overhead);
* coreutils: ``md5sum``, ``sha1sum``, ``sha256sum``, ``sha512sum`` one after another.

The limit is ``max(slowest single digest, sum of the single digests / cores)``: no schedule
can beat the slowest hash (it is sequential), nor spread the total work over more cores than
there are. Targets: imagekit / limit <= 1.2; coreutils / imagekit is reported.
Alone: ``.venv/bin/python -m bench digests``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
from pathlib import Path

from imagekit.image.digests import DigestAlgorithm

from ._common import (
    BenchArgs,
    Row,
    bench_dir,
    cores,
    env_bytes,
    human_bytes,
    make_test_file,
    time_call,
    time_command,
    warm_page_cache,
)

NAME = "digests"
DEFAULT_BYTES = 2 << 30
QUICK_BYTES = 256 << 20
COREUTILS = {
    DigestAlgorithm.MD5: "md5sum",
    DigestAlgorithm.SHA1: "sha1sum",
    DigestAlgorithm.SHA256: "sha256sum",
    DigestAlgorithm.SHA512: "sha512sum",
}
_CHILD = """
import json, sys, time
from imagekit.image.digests import digest_file
cpu, start = time.process_time(), time.perf_counter()
digests = digest_file(sys.argv[1])
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, **digests.to_dict()}))
"""


def best_fixed_split(costs: list[float], cores: int) -> float:
    """The makespan of the best assignment of whole digests to cores (a static schedule)."""
    groups = min(cores, len(costs))
    best = float("inf")
    for assignment in itertools.product(range(groups), repeat=len(costs)):
        loads = [0.0] * groups
        for cost, group in zip(costs, assignment, strict=True):
            loads[group] += cost
        best = min(best, max(loads))
    return best


def hashlib_alone(path: Path, algorithm: DigestAlgorithm) -> str:
    """One digest of the file, the plain way: read 4 MiB, update, repeat, on one thread."""
    h = hashlib.new(algorithm.hashlib_name)
    buffer = bytearray(4 << 20)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fp:
        while n := fp.readinto(buffer):
            h.update(view[:n])
    return h.hexdigest()


def run(args: BenchArgs) -> list[Row]:
    size = env_bytes("BENCH_DIGEST_BYTES", QUICK_BYTES if args.quick else DEFAULT_BYTES)
    repeat = args.repeat
    with bench_dir(NAME, need=size, keep=args.keep) as work:
        path = make_test_file(work / "image.raw", size)
        warm_page_cache(path)
        print(f"   {human_bytes(size)} file at {path}", file=sys.stderr, flush=True)

        singles: dict[DigestAlgorithm, float] = {}
        singles_cpu = 0.0
        expected: dict[DigestAlgorithm, str] = {}
        for algorithm in DigestAlgorithm:
            timed = time_call(hashlib_alone, path, algorithm, repeat=repeat)
            singles[algorithm], expected[algorithm] = timed.seconds, timed.result
            singles_cpu += timed.cpu_seconds

        child = time_command([sys.executable, "-c", _CHILD, str(path)], repeat=repeat)
        report = json.loads(child.stdout)
        imagekit = float(report["seconds"])
        imagekit_cpu = float(report["cpu_seconds"])

        coreutils = 0.0
        for algorithm, tool in COREUTILS.items():
            m = time_command([tool, str(path)], repeat=repeat)
            coreutils += m.seconds
            if m.stdout.split()[0].decode() != expected[algorithm]:
                raise RuntimeError(f"{tool} and hashlib disagree on {algorithm}")

    for algorithm in DigestAlgorithm:
        if report[algorithm.value] != expected[algorithm]:
            raise RuntimeError(f"imagekit's {algorithm} differs from hashlib's")
    if report["bytes"] != size:
        raise RuntimeError(f"imagekit counted {report['bytes']} bytes, not {size}")

    n = cores()
    slowest = max(singles.values())
    limit = max(slowest, sum(singles.values()) / n)
    rows = [Row.make(NAME, f"hashlib {a} alone", s, "s") for a, s in singles.items()]
    rows += [
        Row.make(
            NAME,
            f"imagekit 4 digests, {human_bytes(size)}",
            imagekit,
            "s",
            baseline=(f"limit max(slowest, sum/{n} cores)", limit),
            target="<= 1.2",
        ),
        Row.make(
            NAME,
            "imagekit CPU time (all threads)",
            imagekit_cpu,
            "s",
            baseline=("CPU time of the 4 singles", singles_cpu),
        ),
        # Below the core count means other processes held the cores: the wall-time ratio then
        # measures the machine's load, the CPU-time ratio above still measures imagekit.
        Row.make(
            NAME,
            "cores imagekit got (CPU/wall)",
            imagekit_cpu / imagekit,
            "cores",
            baseline=("usable cores", n),
        ),
        Row.make(
            NAME,
            "best fixed split of the singles",
            best_fixed_split(list(singles.values()), n),
            "s",
            baseline=("limit", limit),
        ),
        Row.make(
            NAME,
            "coreutils 4 *sum in a row",
            coreutils,
            "s",
            baseline=("imagekit 4 digests", imagekit),
        ),
        Row.make(NAME, "imagekit throughput", size / imagekit / (1 << 20), "MiB/s"),
        Row.make(NAME, "imagekit peak RSS (whole process)", child.peak_rss / (1 << 20), "MiB"),
    ]
    return rows


if __name__ == "__main__":
    from ._common import format_table

    print(format_table(run(BenchArgs(quick="--quick" in sys.argv))))
