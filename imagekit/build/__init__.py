"""Build a bootable appliance image from a recipe.

``build_image(recipe, out)`` writes three things: the image at ``out`` (qcow2 or raw), a
metadata entry ready to sign at ``<out>.xml`` (checksums, ID, format, os fields, the recipe
in the description) and a build log at ``<out>.build.log``.

Two layers, each cached by content (see ``cache.py``):

1. the package layer: for ``debian:<release>``, diskimage-builder's ``debian-minimal`` with
   an MBR/GPT partitioned disk, grub, cloud-init (NoCloud, ConfigDrive, OpenNebula), an SSH
   server and the recipe's packages; for an image base, the image converted to raw (its
   packages then go in with the scripts);
2. the customization: a sparse copy of that layer, attached with loop + partx, its root
   mounted, and in a chroot the recipe's files placed, its scripts run in order, and the
   image generalized (``elements/imagekit-generalize``); then converted to the output.

So changing a script or a file reruns step 2 only; changing the package list reruns both.
Nothing is written at ``out`` until the image is complete (temporary file, then
``os.replace``); mounts and loop devices are undone on failure and on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .. import __version__
from .._files import atomic_write
from .._run import find_tool, run
from ..errors import CommandError, EnvironmentProblem, ImagekitError, InputError, Interrupted
from . import baseimport, dib
from .elements import (
    GENERALIZE_HOOK,
    SHIPPED_ELEMENTS,
    hook_order,
    write_customize_element,
    write_packages_element,
)
from .layers import LayerCache, file_digest, layer_key
from .recipe import DEFAULT_SIZE, BaseKind, Recipe

__all__ = ["BuildResult", "Phase", "Recipe", "build_image"]

log = logging.getLogger(__name__)

# Called with (phase name, None) when a phase starts and (name, seconds) when it ends.
Phase = Callable[[str, float | None], None]

# Bump when the package layer's recipe (elements, settings) changes meaning.
LAYER_FORMAT = 1
HOOK_TIMEOUT = 3600.0


@dataclasses.dataclass(frozen=True)
class BuildResult:
    image: Path
    identifier: str | None
    entry_path: Path | None
    log_path: Path
    phases: tuple[tuple[str, float], ...]
    layer_cached: bool


class _Phases:
    def __init__(self, callback: Phase | None, log_fp: IO[bytes]) -> None:
        self.callback = callback
        self.log_fp = log_fp
        self.done: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.note(f"=== phase: {name}")
        if self.callback:
            self.callback(name, None)
        start = time.monotonic()
        yield
        elapsed = time.monotonic() - start
        self.done.append((name, elapsed))
        self.note(f"=== phase: {name} done in {elapsed:.1f}s")
        if self.callback:
            self.callback(name, elapsed)

    def note(self, line: str) -> None:
        self.log_fp.write(f"{time.strftime('%H:%M:%S')} imagekit: {line}\n".encode())
        self.log_fp.flush()


def default_log_path(out: Path) -> Path:
    return out.with_name(out.name + ".build.log")


def default_entry_path(out: Path) -> Path:
    return out.with_name(out.name + ".xml")


def build_image(
    recipe: Recipe,
    out: Path,
    *,
    cache_dir: Path,
    log_path: Path | None = None,
    entry_path: Path | None = None,
    phase: Phase | None = None,
    use_cache: bool = True,
    resolve_base: Callable[[str, Path], Path] | None = None,
) -> BuildResult:
    """Build ``recipe`` into ``out``; return where everything went and how long each phase took.

    ``cache_dir`` holds the layer cache and diskimage-builder's cache; ``use_cache=False``
    rebuilds every layer (the debootstrap tarball is still reused). ``resolve_base`` turns a
    Marketplace ID into a verified local image (the launcher's resolve and fetch).

    Raises InputError (bad recipe or output path), EnvironmentProblem (not root, a tool
    missing, diskimage-builder or a script failed: the message names the log), Interrupted.
    """
    out = Path(out).absolute()
    log_path = (log_path or default_log_path(out)).absolute()
    entry_path = entry_path or default_entry_path(out)
    _check_preconditions(recipe, out, resolve_base)
    build_root = cache_dir / "build"
    (build_root / "work").mkdir(parents=True, exist_ok=True)
    layers = LayerCache(build_root / "layers")
    workdir = Path(tempfile.mkdtemp(prefix="build.", dir=build_root / "work")).resolve()
    part = out.with_name(f".{out.name}.part")
    log_path.write_bytes(b"")
    # Append mode: diskimage-builder appends its own output to the same file meanwhile.
    with log_path.open("ab", buffering=0) as log_fp:
        phases = _Phases(phase, log_fp)
        phases.note(f"imagekit {__version__} build of {recipe.summary()}")
        try:
            layer, cached = _package_layer(
                recipe, layers, workdir, log_fp, phases, use_cache, resolve_base
            )
            disk = workdir / "disk.raw"
            with phases("copy layer"):
                baseimport.copy_sparse(layer, disk)
                if recipe.size and recipe.size > baseimport.virtual_size(disk):
                    # An image base grows; cloud-init's growpart fills the space at first boot.
                    run([find_tool("qemu-img"), "resize", "-f", "raw", disk, str(recipe.size)])
            with phases("customize (files, scripts, generalize)"):
                _customize(recipe, disk, workdir, log_fp, phases)
            with phases(f"convert to {recipe.format}"):
                run(
                    [
                        find_tool("qemu-img"),
                        "convert",
                        "-f",
                        "raw",
                        "-O",
                        str(recipe.format),
                        disk,
                        part,
                    ],
                    timeout=3600,
                )
            with phases("describe"):
                identifier, entry_xml = _describe(part, recipe)
            os.replace(part, out)
            if entry_xml is not None:
                atomic_write(entry_path, entry_xml)
            phases.note(f"image {out} ID {identifier}")
            return BuildResult(
                image=out,
                identifier=identifier,
                entry_path=entry_path if entry_xml is not None else None,
                log_path=log_path,
                phases=tuple(phases.done),
                layer_cached=cached,
            )
        except KeyboardInterrupt:
            phases.note("interrupted; cleaning up")
            raise Interrupted(f"build interrupted (log: {log_path})") from None
        except ImagekitError as e:
            phases.note(f"failed: {e}")
            if isinstance(e, EnvironmentProblem) and "log:" not in str(e):
                raise _with_log(e, log_path) from e
            raise
        except OSError as e:  # no space, a vanished file: the host's trouble, not a bug
            phases.note(f"failed: {e}")
            raise EnvironmentProblem(f"build failed: {e} (log: {log_path})") from e
        finally:
            undone = baseimport.cleanup_workdir(workdir)
            if undone:
                phases.note("cleanup: " + ", ".join(undone))
            shutil.rmtree(workdir, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            if use_cache:
                layers.prune()


def _with_log(error: ImagekitError, log_path: Path) -> ImagekitError:
    """The same failure, naming the build log (where the whole story is)."""
    return EnvironmentProblem(f"{error} (log: {log_path})", hint=error.hint)


def _check_preconditions(
    recipe: Recipe, out: Path, resolve_base: Callable[[str, Path], Path] | None
) -> None:
    if not out.parent.is_dir():
        raise InputError(f"output directory does not exist: {out.parent}")
    if out.is_dir():
        raise InputError(f"output is a directory: {out}")
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "building images needs root (loop devices, mounts, chroot)", hint="run it as root"
        )
    for tool in ("qemu-img", "losetup", "partx", "mount", "umount", "chroot", "blkid"):
        find_tool(tool)
    if recipe.base_kind is BaseKind.DISTRO:
        for tool in ("debootstrap", "sfdisk"):
            find_tool(tool)
        dib.dib_bin()
    if recipe.base_kind is BaseKind.MARKETPLACE and resolve_base is None:
        raise InputError(f"cannot resolve Marketplace base {recipe.base}: no marketplace given")


def _package_layer(
    recipe: Recipe,
    layers: LayerCache,
    workdir: Path,
    log_fp: IO[bytes],
    phases: _Phases,
    use_cache: bool,
    resolve_base: Callable[[str, Path], Path] | None,
) -> tuple[Path, bool]:
    """The cached (or freshly built) raw layer under the customization; (path, was cached)."""
    if recipe.base_kind is BaseKind.DISTRO:
        assert recipe.release is not None
        parts: dict[str, Any] = {
            "layer": "dib",
            "format": LAYER_FORMAT,
            "release": recipe.release,
            "mirror": dib.DEBIAN_MIRROR,
            "packages": sorted(recipe.packages),
            "size": recipe.size or DEFAULT_SIZE,
            "partition_table": str(recipe.partition_table),
            "elements": dib.base_elements(recipe.partition_table),
            "datasources": dib.CLOUD_INIT_DATASOURCES,
            "dib": _dib_version(),
        }
    else:
        base = Path(recipe.base)
        if recipe.base_kind is BaseKind.MARKETPLACE:
            assert resolve_base is not None
            with phases("resolve base"):
                base = resolve_base(recipe.base, workdir)
        with phases("hash base"):
            parts = {"layer": "import", "format": LAYER_FORMAT, "sha256": file_digest(base)}
    key = layer_key(parts)
    if use_cache and (found := layers.find(key)):
        phases.note(f"package layer {key[:16]} from cache")
        return found, True
    if parts["layer"] == "import":
        with phases("import base image"):
            raw = workdir / "layer.raw"
            baseimport.convert_to_raw(base, raw)
    else:
        with phases("package layer (diskimage-builder)"):
            raw = _run_dib(recipe, workdir, layers.root.parent, log_fp, phases)
    return layers.store(key, raw, parts), False


def _dib_version() -> str:
    try:
        from importlib.metadata import version

        return version("diskimage-builder")
    except Exception:
        return "unknown"


def _run_dib(
    recipe: Recipe, workdir: Path, build_root: Path, log_fp: IO[bytes], phases: _Phases
) -> Path:
    assert recipe.release is not None
    elements_dir = workdir / "elements"
    elements = dib.base_elements(recipe.partition_table)
    if recipe.packages:
        write_packages_element(recipe.packages, elements_dir)
        elements.append("imagekit-packages")
    elements_dir.mkdir(parents=True, exist_ok=True)
    tmp = workdir / "dib-tmp"
    tmp.mkdir()
    env = dib.dib_environment(
        release=recipe.release,
        image_cache=build_root / "dib-cache",
        tmp_dir=tmp,
        element_paths=[elements_dir, SHIPPED_ELEMENTS],
        stand_ins=dib.write_stand_ins(workdir / "stand-ins"),
    )
    phases.note(f"disk-image-create {' '.join(elements)} (DIB_RELEASE={recipe.release})")
    return dib.run_dib(
        elements,
        output=workdir / "layer",
        image_type="raw",
        size=recipe.size or DEFAULT_SIZE,
        env=env,
        log_path=Path(log_fp.name),
    )


_CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
    "TMPDIR": "/tmp",
}


def _customize(
    recipe: Recipe, disk: Path, workdir: Path, log_fp: IO[bytes], phases: _Phases
) -> None:
    """Files, scripts and generalization, in a chroot on the mounted working copy."""
    element = write_customize_element(
        recipe, workdir / "elements", install_packages=recipe.base_kind is not BaseKind.DISTRO
    )
    with baseimport.mount_root(disk, read_only=False, workdir=workdir) as root:
        # the image's /tmp as the chroot sees it: never a symlink out to the host's files
        tmp = baseimport.resolve_in_root(root, "/tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        in_target = tmp / "in_target.d"
        if in_target.is_symlink() or in_target.is_file():
            in_target.unlink()
        elif in_target.exists():
            shutil.rmtree(in_target)
        shutil.copytree(element / "post-install.d", in_target / "post-install.d")
        shutil.copytree(element / "files", in_target / "imagekit-files")
        (in_target / "finalise.d").mkdir()
        shutil.copy2(GENERALIZE_HOOK, in_target / "finalise.d" / GENERALIZE_HOOK.name)
        hooks = [f"post-install.d/{p.name}" for p in hook_order(in_target)]
        hooks.append(f"finalise.d/{GENERALIZE_HOOK.name}")
        try:
            with baseimport.chroot_mounts(root):
                for hook in hooks:
                    phases.note(f"run {hook}")
                    _run_hook(root, f"/tmp/in_target.d/{hook}", log_fp)
        finally:
            shutil.rmtree(in_target, ignore_errors=True)


def _run_hook(root: Path, hook: str, log_fp: IO[bytes]) -> None:
    # Both output streams into the build log, in order: 'exec "$@" 2>&1' inside the chroot.
    argv: list[str | Path] = [
        find_tool("chroot"),
        root,
        "/bin/sh",
        "-c",
        'exec "$@" 2>&1',
        "sh",
        hook,
    ]
    try:
        run(argv, env=_CHROOT_ENV, stdout=log_fp.fileno(), timeout=HOOK_TIMEOUT)
    except CommandError as e:
        name = hook.rsplit("/", 1)[-1]
        raise CommandError([name], e.returncode, "") from e


def _describe(image: Path, recipe: Recipe) -> tuple[str | None, bytes | None]:
    """The image's ID and its unsigned metadata entry (None, None without the metadata module)."""
    try:
        from ..entry import entry_to_bytes
        from ..entry.describe import describe_image
        from ..entry.model import TEXT_LIMITS
    except ImportError:
        log.warning("imagekit.entry.describe is not available: no metadata entry written")
        return _identifier(image), None
    os_, os_version, os_arch = recipe.entry_os
    inherited = _base_entry(recipe)
    if inherited is not None:
        # Layered onto an image imagekit described: its os fields unless the recipe says.
        os_ = recipe.os or inherited.os or os_
        os_version = recipe.os_version or inherited.os_version or os_version
        os_arch = inherited.os_arch or os_arch if recipe.os_arch == "x86_64" else os_arch
    head = recipe.description + "\n\n" if recipe.description else ""
    # the machine-written summary gives way to the entry model's length limit, not the build
    room = TEXT_LIMITS["description"] - len(head)
    summary = recipe.summary()
    if len(summary) > room:
        summary = summary[: max(room - 3, 0)] + "..."
    description = head + summary
    fields: dict[str, Any] = {
        "kind": "machine",
        "title": recipe.title,
        "alternative": recipe.tag,
        "description": description,
        "version": recipe.version,
        "creator": recipe.creator,
        "os": os_,
        "os_version": os_version,
        "os_arch": os_arch,
    }
    entry = describe_image(image, **{k: v for k, v in fields.items() if v is not None})
    return entry.identifier, entry_to_bytes(entry)


def _base_entry(recipe: Recipe) -> Any:
    """The metadata entry written beside an image base (``<base>.xml``), if any and valid."""
    if recipe.base_kind is not BaseKind.IMAGE:
        return None
    path = Path(recipe.base + ".xml")
    try:
        from ..entry import parse_entry_bytes

        return parse_entry_bytes(path.read_bytes())
    except (OSError, ImportError, InputError):
        return None


def _identifier(image: Path) -> str | None:
    try:
        from ..image.digests import DigestAlgorithm, digest_file
        from ..image.identifier import sha1_to_id
    except ImportError:
        return None
    digests = digest_file(image, [DigestAlgorithm.SHA1], compression="")
    return sha1_to_id(digests.values[DigestAlgorithm.SHA1])
