"""Build benchmark: imagekit's cold build, warm rebuilds, and a plain disk-image-create.

Measured in one run, on the same machine and mirror:

* baseline: ``disk-image-create`` of the same stock elements plus the recipe's packages
  (with imagekit's kpartx/dmsetup stand-ins, which this host needs), fresh caches;
* imagekit cold: empty cache directory (debootstrap included);
* imagekit warm, nothing changed;
* imagekit warm, only the last script changed.

Target: the warm rebuild with one script changed takes at most 40% of the cold build.
Run as root: ``.venv/bin/python -m bench.build`` (about 15 minutes on 2 loaded cores).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from imagekit.build import build_image, dib
from imagekit.build.elements import write_packages_element
from imagekit.build.recipe import DEFAULT_SIZE, Recipe

PACKAGES = ["curl"]


def _recipe(work: Path, script_text: str) -> Recipe:
    (work / "setup.sh").write_text("#!/bin/sh\necho setup > /etc/bench-setup\n")
    (work / "last.sh").write_text(script_text)
    (work / "motd").write_text("bench\n")
    return Recipe.make(
        base="debian:bookworm", packages=PACKAGES, scripts=["setup.sh", "last.sh"],
        files=["/etc/motd=motd"], relative_to=work,
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
    elements = [*dib.base_elements(Recipe.make(base="debian:bookworm").partition_table),
                "imagekit-packages"]
    start = time.monotonic()
    dib.run_dib(elements, output=work / "plain", image_type="qcow2", size=DEFAULT_SIZE, env=env,
                log_path=work / "plain.log")
    return time.monotonic() - start


def imagekit_build(recipe: Recipe, out: Path, cache: Path) -> tuple[float, bool]:
    start = time.monotonic()
    result = build_image(recipe, out, cache_dir=cache)
    return time.monotonic() - start, result.layer_cached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imagekit-bench-build."))
    figures: dict[str, float] = {}
    try:
        if not args.skip_baseline:
            (work / "plain").mkdir()
            figures["plain disk-image-create"] = plain_dib(work / "plain")
            print(f"plain disk-image-create:      {figures['plain disk-image-create']:7.1f} s",
                  flush=True)
        cache = work / "cache"
        src = work / "src"
        src.mkdir()
        recipe = _recipe(src, "#!/bin/sh\necho one > /etc/bench-last\n")
        figures["imagekit cold"], cached = imagekit_build(recipe, work / "a.qcow2", cache)
        assert not cached
        print(f"imagekit cold build:          {figures['imagekit cold']:7.1f} s", flush=True)
        figures["imagekit warm, unchanged"], cached = imagekit_build(
            recipe, work / "b.qcow2", cache
        )
        assert cached
        print(f"imagekit warm, unchanged:     {figures['imagekit warm, unchanged']:7.1f} s",
              flush=True)
        recipe = _recipe(src, "#!/bin/sh\necho two > /etc/bench-last\n")
        figures["imagekit warm, last script changed"], cached = imagekit_build(
            recipe, work / "c.qcow2", cache
        )
        assert cached
        warm = figures["imagekit warm, last script changed"]
        print(f"imagekit warm, script changed:{warm:7.1f} s", flush=True)
        ratio = warm / figures["imagekit cold"]
        print(f"ratio warm(script changed)/cold = {ratio:.2f}  (target <= 0.40)")
        if "plain disk-image-create" in figures:
            print(f"ratio imagekit cold/plain disk-image-create = "
                  f"{figures['imagekit cold'] / figures['plain disk-image-create']:.2f}")
        print(json.dumps({k: round(v, 1) for k, v in figures.items()}, sort_keys=True))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
