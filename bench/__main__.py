"""``python -m bench [names...]``: run benches, print one table of ratios against baselines.

Without names, every bench module (``bench/<name>.py`` defining ``run``) runs, in name
order. A failing bench becomes a row saying so; the command reports and exits 0.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
import traceback
from pathlib import Path

from ._common import BenchArgs, Row, cores, format_table, load_average


def available() -> list[str]:
    """Bench module names (every public module in this package)."""
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def _parse(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, str]]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", help=f"benches to run (default: all of {', '.join(available())})"
    )
    parser.add_argument("--quick", action="store_true", help="small inputs: a smoke run")
    parser.add_argument("--repeat", type=int, default=1, help="timings are best of N runs")
    parser.add_argument("--keep", action="store_true", help="keep work directories")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    parser.add_argument("--list", action="store_true", help="list the benches and exit")
    args, rest = parser.parse_known_args(argv)
    extra: dict[str, str] = {}
    for item in rest:
        if not item.startswith("--"):
            parser.error(f"unexpected argument {item!r}")
        key, _, value = item[2:].partition("=")
        extra[key] = value or "1"
    return args, extra


def main(argv: list[str] | None = None) -> int:
    args, extra = _parse(argv)
    names = args.names or available()
    if args.list:
        print("\n".join(available()))
        return 0
    unknown = [n for n in names if n not in available()]
    if unknown:
        print(
            f"unknown bench(es): {', '.join(unknown)}; known: {', '.join(available())}",
            file=sys.stderr,
        )
        return 2
    bench_args = BenchArgs(quick=args.quick, repeat=args.repeat, keep=args.keep, extra=extra)
    rows: list[Row] = []
    notes: list[str] = []
    started = time.monotonic()
    load_before = load_average()
    for name in names:
        module = importlib.import_module(f"{__package__}.{name}")
        run = getattr(module, "run", None)
        if run is None:
            notes.append(
                f"{name}: no run(args) in bench/{name}.py; run it alone: python -m bench.{name}"
            )
            continue
        print(f"== {name}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            produced = list(run(bench_args))
        except KeyboardInterrupt:
            notes.append(f"{name}: interrupted")
            break
        except Exception as e:  # a bench that breaks is reported, the others still run
            traceback.print_exc()
            notes.append(f"{name}: failed: {type(e).__name__}: {e}")
            continue
        rows.extend(produced)
        print(f"== {name}: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    print(format_table(rows) if rows else "(no results)")
    print(
        f"\nmachine: {cores()} cores, load average {load_before:.2f} before, "
        f"{load_average():.2f} after; {time.monotonic() - started:.0f} s in all"
    )
    for note in notes:
        print(f"note: {note}")
    if args.json:
        args.json.write_text(json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
