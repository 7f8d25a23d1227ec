"""Shared pieces of imagekit's benchmarks: rows of results, timing, memory, test files.

A bench is a module ``bench/<name>.py`` with ``run(args) -> list[Row]``; ``python -m bench
[names...]`` imports each, runs it and prints one table. A bench reports, it does not
assert: a missed target shows as ``ok = no`` in the table, and the command still exits 0.
Each ratio compares imagekit with a baseline measured in the same run, on the same machine
and the same input, so that load from other users affects both sides.

API
---
``Row(bench, metric, value, unit, baseline_name=None, baseline_value=None, ratio=None,
target=None, ok=None)``
    One result. Build it with ``Row.make(...)``, which computes ``ratio`` (value/baseline,
    or baseline/value with ``invert=True``) and ``ok`` from ``target``, a string such as
    ``"<= 1.2"`` or ``">= 2"`` that the ratio (or the value, if there is no baseline) must
    meet.
``BenchArgs``
    What ``run`` receives: ``quick`` (smaller inputs, for a smoke run), ``repeat`` (timings
    are the best of this many runs), ``keep`` (keep work directories), ``extra`` (unparsed
    ``--key=value`` options, a dict).
``time_call(fn, *args, repeat=1, **kwargs) -> Timed``
    Best wall time of a Python call (``Timed.seconds``, ``Timed.cpu_seconds`` of the whole
    process in that run, ``Timed.result``).
``time_command(argv, *, repeat=1, env=None, cwd=None, stdin=None, check=True) -> Measured``
    Best wall time of an external command, its CPU time and peak resident memory
    (``cpu_seconds``, ``peak_rss`` in bytes, from the child's own rusage via ``os.wait4``:
    no psutil, no /usr/bin/time), plus its stdout (bytes) and return code. CPU time next
    to wall time tells a slow program from a busy machine.
``time_shell(script, **kw) -> Measured``
    The same for a ``bash -c`` pipeline (peak RSS is then the largest of its processes).
``make_test_file(path, size, *, seed=0) -> Path``
    ``size`` bytes of incompressible, deterministic, non-repeating content, written at disk
    speed (one random block, rotated differently for every block written).
``bench_dir(prefix, *, need=0) -> context manager of Path``
    A fresh work directory on a disk (``/var/tmp`` or ``/tmp``, whichever has ``need`` bytes
    free), removed afterwards unless ``keep``.
``warm_page_cache(path)``
    Read a file once so that timed runs measure hashing, not the disk.
``env_bytes(name, default) -> int``
    A size from the environment (``BENCH_DIGEST_BYTES=1G``; suffixes K, M, G, T).
``cores() -> int``, ``load_average() -> float``, ``human_bytes(n) -> str``
``format_table(rows) -> str``
    The table ``python -m bench`` prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import operator
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BenchArgs",
    "Measured",
    "Row",
    "Timed",
    "bench_dir",
    "cores",
    "env_bytes",
    "format_table",
    "human_bytes",
    "load_average",
    "make_test_file",
    "time_call",
    "time_command",
    "time_shell",
    "warm_page_cache",
]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}


@dataclass(frozen=True)
class Row:
    bench: str
    metric: str
    value: float
    unit: str
    baseline_name: str | None = None
    baseline_value: float | None = None
    ratio: float | None = None
    target: str | None = None
    ok: bool | None = None

    @classmethod
    def make(
        cls,
        bench: str,
        metric: str,
        value: float,
        unit: str,
        *,
        baseline: tuple[str, float] | None = None,
        invert: bool = False,
        target: str | None = None,
    ) -> Row:
        """A row whose ratio and verdict are computed: value/baseline (baseline/value with
        ``invert``, for "how many times faster"), checked against ``target``."""
        baseline_name, baseline_value = baseline if baseline else (None, None)
        ratio = None
        if baseline_value is not None:
            num, den = (baseline_value, value) if invert else (value, baseline_value)
            ratio = num / den if den else float("inf")
        ok = None
        if target is not None:
            ok = check_target(ratio if ratio is not None else value, target)
        return cls(bench, metric, value, unit, baseline_name, baseline_value, ratio, target, ok)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_target(value: float, target: str) -> bool:
    """``check_target(1.1, "<= 1.2")`` -> True. Raises ValueError for a malformed target."""
    text = target.replace(" ", "")
    for op in ("<=", ">=", "<", ">"):
        if text.startswith(op):
            return _OPS[op](value, float(text[len(op) :]))
    raise ValueError(f"target {target!r} must start with <=, >=, < or >")


@dataclass(frozen=True)
class BenchArgs:
    quick: bool = False
    repeat: int = 1
    keep: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)


# --- timing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    seconds: float
    cpu_seconds: float  # user + system time of this process (all threads) in that run
    result: Any


def time_call(fn: Callable[..., Any], *args: Any, repeat: int = 1, **kwargs: Any) -> Timed:
    """Best wall time of ``fn(*args, **kwargs)`` over ``repeat`` runs, and its last result."""
    best: Timed | None = None
    for _ in range(max(1, repeat)):
        cpu = time.process_time()
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        timed = Timed(time.perf_counter() - start, time.process_time() - cpu, result)
        if best is None or timed.seconds < best.seconds:
            best = timed
    assert best is not None
    return best


@dataclass(frozen=True)
class Measured:
    seconds: float
    cpu_seconds: float  # user + system time of the child and the children it waited for
    peak_rss: int  # bytes, largest resident set of the child (or of its largest descendant)
    returncode: int
    stdout: bytes


def _run_once(
    argv: Sequence[str], env: Mapping[str, str] | None, cwd: Path | None, stdin: bytes | None
) -> Measured:
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=out,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
        # wait4 gives this child's own rusage: ru_maxrss is its peak RSS in KiB (for a shell,
        # the largest of the processes it waited for).
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        cpu = usage.ru_utime + usage.ru_stime
        return Measured(seconds, cpu, usage.ru_maxrss * 1024, proc.returncode, out.read())


def time_command(
    argv: Sequence[str],
    *,
    repeat: int = 1,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: bytes | None = None,
    check: bool = True,
) -> Measured:
    """Best wall time (and that run's peak RSS) of an external command over ``repeat`` runs.

    Raises subprocess.CalledProcessError if ``check`` and the command fails.
    """
    best: Measured | None = None
    for _ in range(max(1, repeat)):
        m = _run_once(argv, env, cwd, stdin)
        if check and m.returncode != 0:
            raise subprocess.CalledProcessError(m.returncode, list(argv), m.stdout)
        if best is None or m.seconds < best.seconds:
            best = m
    assert best is not None
    return best


def time_shell(script: str, **kwargs: Any) -> Measured:
    """``time_command(["bash", "-c", script], ...)`` (pipefail on)."""
    return time_command(["bash", "-o", "pipefail", "-c", script], **kwargs)


# --- files ----------------------------------------------------------------------------------

_BLOCK = 16 << 20


def make_test_file(path: str | os.PathLike[str], size: int, *, seed: int = 0) -> Path:
    """Write ``size`` bytes of random-looking, deterministic content to ``path``.

    os.urandom is slower than the disk; one 16 MiB random block, rotated by a different
    offset for each block written, gives incompressible data in which no block repeats.
    """
    path = Path(path)
    rng = random.Random(seed)
    base = rng.randbytes(_BLOCK)
    doubled = base + base
    view = memoryview(doubled)
    written = 0
    with open(path, "wb") as fp:
        block = 0
        while written < size:
            shift = (block * 1_000_003 + seed) % _BLOCK
            n = min(_BLOCK, size - written)
            fp.write(view[shift : shift + n])
            written += n
            block += 1
    return path


def warm_page_cache(path: str | os.PathLike[str]) -> None:
    """Read the file once so it sits in the page cache."""
    buffer = bytearray(8 << 20)
    with open(path, "rb", buffering=0) as fp:
        while fp.readinto(buffer):
            pass


@contextlib.contextmanager
def bench_dir(prefix: str, *, need: int = 0, keep: bool = False) -> Iterator[Path]:
    """A fresh directory on /var/tmp or /tmp with ``need`` bytes free (disk-backed first)."""
    for base in ("/var/tmp", "/tmp", tempfile.gettempdir()):
        if os.path.isdir(base) and shutil.disk_usage(base).free > need + (256 << 20):
            break
    else:
        raise OSError(f"no temporary directory has {human_bytes(need)} free")
    path = Path(tempfile.mkdtemp(prefix=f"imagekit-bench-{prefix}.", dir=base))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


# --- environment ----------------------------------------------------------------------------

_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def env_bytes(name: str, default: int) -> int:
    """A byte count from the environment: ``2G``, ``512M``, ``1048576``, ``1.5G``."""
    text = os.environ.get(name, "").strip().upper().removesuffix("IB").removesuffix("B")
    if not text:
        return default
    suffix = text[-1] if text[-1] in _SUFFIXES else ""
    number = text[:-1] if suffix else text
    try:
        return int(float(number) * _SUFFIXES[suffix])
    except ValueError:
        raise ValueError(f"{name}={os.environ[name]!r} is not a size like 2G or 512M") from None


def cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def load_average() -> float:
    """The 1-minute load average (how busy the machine was around a measurement)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# --- output ---------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.3g}"


def format_table(rows: Sequence[Row]) -> str:
    """Rows as an aligned text table (one line per row, a header, ok as yes/no)."""
    header = (
        "bench",
        "metric",
        "value",
        "unit",
        "baseline",
        "baseline value",
        "ratio",
        "target",
        "ok",
    )
    lines = [header]
    for r in rows:
        lines.append(
            (
                r.bench,
                r.metric,
                _fmt(r.value),
                r.unit,
                r.baseline_name or "",
                _fmt(r.baseline_value),
                _fmt(r.ratio),
                r.target or "",
                "" if r.ok is None else ("yes" if r.ok else "NO"),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = {2, 5, 6}
    out = []
    for n, line in enumerate(lines):
        cells = [
            cell.rjust(widths[i]) if i in numeric and n else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def free_port() -> int:
    """A loopback port nothing listens on (for a server the bench starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_marketplace(
    data_dir: Path, *, files_dir: Path | None = None, db: str | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """A real ``python -m marketplace_server`` of this checkout on a free loopback port,
    answering (its base URL); the caller stops it with ``stop_process``."""
    port = free_port()
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEKIT_")}
    argv = [
        sys.executable,
        "-m",
        "marketplace_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]
    argv += ["--files-dir", str(files_dir)] if files_dir is not None else []
    argv += ["--db", db] if db else []
    proc = subprocess.Popen(
        argv,
        env=dict(env, PYTHONPATH=str(root)),
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the marketplace server exited with {proc.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url + "/api/endorsers", timeout=2),
        ):
            return proc, url
        if time.monotonic() > deadline:
            stop_process(proc)
            raise RuntimeError("the marketplace server did not come up")
        time.sleep(0.1)


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Terminate a server the bench started; kill it if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
