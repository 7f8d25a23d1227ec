"""Build benchmark: imagekit's cold build, warm rebuilds, and a plain disk-image-create.

Measured in one run, on the same machine and mirror:

* baseline: ``disk-image-create`` of the same stock elements plus the recipe's packages
  (with imagekit's kpartx/dmsetup stand-ins, which this host needs), fresh caches;
* imagekit cold: empty cache directory (debootstrap included);
* imagekit warm, nothing changed;
* imagekit warm, only the last script changed.

Target: the warm rebuild with one script changed takes at most 40% of the cold build.
Run as root: ``.venv/bin/python -m bench build`` (about 15 minutes on 2 loaded cores;
``--skip-baseline`` leaves out the plain disk-image-create).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from imagekit.build import build_image, dib
from imagekit.build.elements import write_packages_element
from imagekit.build.recipe import DEFAULT_SIZE, Recipe

from ._common import BenchArgs, Row, bench_dir, format_table, load_average

NAME = "build"
PACKAGES = ["curl"]


def _recipe(work: Path, script_text: str) -> Recipe:
    (work / "setup.sh").write_text("#!/bin/sh\necho setup > /etc/bench-setup\n")
    (work / "last.sh").write_text(script_text)
    (work / "motd").write_text("bench\n")
    return Recipe.make(
        base="debian:bookworm",
        packages=PACKAGES,
        scripts=["setup.sh", "last.sh"],
        files=["/etc/motd=motd"],
        relative_to=work,
    )


def plain_dib(work: Path) -> float:
    """Seconds for a stock disk-image-create of the same elements (qcow2 output)."""
    elements_dir = work / "elements"
    write_packages_element(tuple(PACKAGES), elements_dir)
    tmp = work / "dib-tmp"
    tmp.mkdir()
    env = dib.dib_environment(
        release="bookworm",
        image_cache=work / "dib-cache",
        tmp_dir=tmp,
        element_paths=[elements_dir],
        stand_ins=dib.write_stand_ins(work / "stand-ins"),
        cache_debootstrap=False,  # stock behaviour
    )
    elements = [
        *dib.base_elements(Recipe.make(base="debian:bookworm").partition_table),
        "imagekit-packages",
    ]
    start = time.monotonic()
    dib.run_dib(
        elements,
        output=work / "plain",
        image_type="qcow2",
        size=DEFAULT_SIZE,
        env=env,
        log_path=work / "plain.log",
    )
    return time.monotonic() - start


def imagekit_build(recipe: Recipe, out: Path, cache: Path) -> tuple[float, bool]:
    start = time.monotonic()
    result = build_image(recipe, out, cache_dir=cache)
    return time.monotonic() - start, result.layer_cached


def run(args: BenchArgs) -> list[Row]:
    """Baseline, cold, warm unchanged, warm with the last script changed (see the module)."""
    rows: list[Row] = []
    skip_baseline = "skip-baseline" in args.extra
    with bench_dir("build", need=8 << 30, keep=args.keep) as work:
        plain: float | None = None
        if not skip_baseline:
            (work / "plain").mkdir()
            plain = plain_dib(work / "plain")
            rows.append(Row.make(NAME, "plain disk-image-create", plain, "s"))
        cache = work / "cache"
        src = work / "src"
        src.mkdir()
        recipe = _recipe(src, "#!/bin/sh\necho one > /etc/bench-last\n")
        cold, cached = imagekit_build(recipe, work / "a.qcow2", cache)
        assert not cached
        rows.append(
            Row.make(
                NAME,
                "imagekit cold build",
                cold,
                "s",
                baseline=("plain disk-image-create", plain) if plain else None,
            )
        )
        same, cached = imagekit_build(recipe, work / "b.qcow2", cache)
        assert cached
        rows.append(
            Row.make(
                NAME,
                "imagekit warm, unchanged",
                same,
                "s",
                baseline=("imagekit cold build", cold),
                target="<= 0.4",
            )
        )
        recipe = _recipe(src, "#!/bin/sh\necho two > /etc/bench-last\n")
        changed, cached = imagekit_build(recipe, work / "c.qcow2", cache)
        assert cached
        rows.append(
            Row.make(
                NAME,
                "imagekit warm, last script changed",
                changed,
                "s",
                baseline=("imagekit cold build", cold),
                target="<= 0.4",
            )
        )
        rows.append(Row.make(NAME, "load average (1 min) at the end", load_average(), ""))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    ns = parser.parse_args()
    extra = {"skip-baseline": "1"} if ns.skip_baseline else {}
    print(format_table(run(BenchArgs(keep=ns.keep, extra=extra))))


if __name__ == "__main__":
    main()
