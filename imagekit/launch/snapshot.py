"""Snapshot an instance's root disk into a new standalone appliance plus its metadata entry.

Consistency first, then the copy:

* a Running instance whose guest runs the qemu guest agent (its ``org.qemu.guest_agent.0``
  virtio-serial port is open): freeze the guest's file systems (``guest-fsfreeze-freeze``),
  pause the vCPUs (QMP ``stop``, which also flushes qemu's qcow2 metadata to the file),
  copy, resume, thaw;
* a Running instance without an agent: a clean shutdown first (ACPI power button, as
  ``imagekit stop``), copy, boot it again on the same disks;
* a Stopped (or powered-off) instance: copy as is.

The copy is ``qemu-img convert -O qcow2 -c``: flattened (no backing file), compressed,
written to a temporary file beside the output and renamed into place only when complete,
so a full disk leaves nothing behind. The entry is written from scratch by
``describe_image`` over the new bytes (fresh checksums and ID), with ``dcterms:replaces``
naming the base ID, the version bumped (1.0 -> 1.1) and the base entry's descriptive terms
carried over unless overridden: an unsigned draft for ``imagekit sign``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from .._files import atomic_write
from .._run import find_tool, run
from ..entry import Entry, entry_to_bytes
from ..entry.describe import describe_image
from ..errors import (
    CommandError,
    EnvironmentProblem,
    ImagekitError,
    InputError,
    InvalidState,
)
from ..settings import Settings
from . import lifecycle
from . import qemu as q
from ._qmp import JsonLines
from .instances import Instance, InstanceStore, State

log = logging.getLogger(__name__)

# descriptive terms a snapshot inherits from its base entry (never the measured head,
# locations, dates, tag, serial number or deprecation)
CARRIED = (
    "type",
    "title",
    "description",
    "creator",
    "publisher",
    "hypervisor",
    "disks_bus",
    "inbound_ports",
    "outbound_ports",
    "icmp",
    "os",
    "os_version",
    "os_arch",
)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    image: Path
    entry_path: Path
    entry: Entry
    method: str  # "guest-agent freeze" | "stopped first" | "instance not running"
    seconds: float


def bump_version(version: str | None) -> str:
    """The next version: 1.0 -> 1.1, 1.2.9 -> 1.2.10, 2 -> 2.1, none -> 1.1, beta -> beta.1."""
    if not version:
        return "1.1"
    parts = version.split(".")
    if len(parts) >= 2 and parts[-1].isdigit():
        parts[-1] = str(int(parts[-1]) + 1)
        return ".".join(parts)
    return f"{version}.1"


# --- the guest agent --------------------------------------------------------------------


class GuestAgent:
    """A minimal qemu guest agent client over the instance's ``qga.sock``."""

    def __init__(self, path: Path, *, timeout: float = 10.0) -> None:
        self._channel = JsonLines(path, timeout=timeout, what="the guest agent")
        self._sync()

    def _reply(self) -> dict[str, Any]:
        line = b""
        while not line:  # the agent may answer the sync's 0xff with a bare delimiter
            line = self._channel.line().strip().lstrip(b"\xff")
        try:
            reply: dict[str, Any] = json.loads(line)
        except ValueError as e:
            raise EnvironmentProblem(f"guest agent sent garbage: {line[:80]!r}") from e
        return reply

    def _sync(self) -> None:
        # guest-sync-delimited makes the agent drop stale input; the reply echoes our id
        token = int.from_bytes(os.urandom(4), "big") >> 1
        self._channel.send("guest-sync-delimited", {"id": token}, prefix=b"\xff")
        while True:
            reply = self._reply()
            if reply.get("return") == token:
                return

    def command(self, name: str, **arguments: Any) -> Any:
        self._channel.send(name, arguments)
        reply = self._reply()
        if "error" in reply:
            raise EnvironmentProblem(f"guest agent {name}: {reply['error'].get('desc')}")
        return reply.get("return")

    def close(self) -> None:
        self._channel.close()


@contextlib.contextmanager
def frozen(instance: Instance) -> Any:
    """Freeze the guest's file systems through its agent; thaw on the way out."""
    agent = GuestAgent(instance.directory / q.QGA_SOCKET)
    try:
        count = agent.command("guest-fsfreeze-freeze")
        log.debug("froze %s file systems in %s", count, instance.id)
        try:
            yield
        finally:
            agent.command("guest-fsfreeze-thaw")
    finally:
        agent.close()


# --- snapshot ---------------------------------------------------------------------------


# Suffixes that promise another format than the qcow2 a snapshot is.
_NOT_QCOW2 = frozenset({".raw", ".img", ".iso", ".vmdk", ".vdi", ".vhd", ".vhdx"})


def _check_output(path: Path, *, overwrite: bool) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists", hint="choose another name (or --overwrite)")
    parent = path.parent.resolve()
    if not parent.is_dir():
        raise InputError(f"output directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EnvironmentProblem(f"output directory {parent} is not writable")
    return path


def _convert(src: Path, src_format: str, out: Path, *, shared: bool) -> None:
    """Flatten and compress ``src`` into ``out`` atomically. Raises EnvironmentProblem
    (no space: nothing left behind) or CommandError."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
    argv = [find_tool(q.QEMU_IMG), "convert", "-O", "qcow2", "-c", "-f", src_format]
    if shared:
        argv.append("-U")  # qemu holds the image: read it without its lock (guest paused)
    try:
        run([*argv, str(src), str(tmp)], timeout=6 * 3600)
        with open(tmp, "rb") as fp:
            os.fsync(fp.fileno())
        os.replace(tmp, out)
    except CommandError as e:
        if "No space left" in e.stderr or "ENOSPC" in e.stderr:
            raise EnvironmentProblem(
                f"no space left in {out.parent.resolve()} while writing the snapshot",
                hint="free some space or write it elsewhere (-o); nothing was written",
            ) from e
        raise
    except OSError as e:
        raise EnvironmentProblem(f"writing {out}: {e.strerror}") from e
    finally:
        tmp.unlink(missing_ok=True)


def base_entry(settings: Settings, instance: Instance, *, client: Any = None) -> Entry | None:
    """The verified entry the instance was launched from, if the marketplace still serves
    an acceptable one (its terms are carried into the snapshot), else None."""
    from .images import make_resolver

    try:
        resolver, _policy = make_resolver(settings, client=client)
        return resolver.resolve(instance.image_id, endorser=instance.endorser or None).entry
    except ImagekitError as e:
        log.warning("base entry %s not carried over: %s", instance.image_id, e)
        return None


def snapshot(
    settings: Settings,
    name: str,
    output: Path,
    *,
    entry_output: Path | None = None,
    fields: dict[str, Any] | None = None,
    base: Entry | None = None,
    carry_base: bool = True,
    overwrite: bool = False,
    force_stop: bool = False,
    stop_timeout: float = lifecycle.STOP_TIMEOUT,
    client: Any = None,
) -> Snapshot:
    """Write a consistent, flattened, compressed copy of instance ``name``'s root disk to
    ``output`` and its unsigned metadata entry to ``entry_output`` (default
    ``<output>.xml``). ``fields`` override entry terms (title, description, version, tag,
    os...); ``base`` is the base entry to carry terms from (default: resolved from the
    marketplace when ``carry_base``).

    Raises NotFound, Ambiguous, InvalidState (launching, or killed: no disk), InputError
    (output exists, bad field), StopTimeout (no agent and the guest ignored the power button;
    pass ``force_stop``), EnvironmentProblem (no space: nothing written; instance left as
    it was found).
    """
    t0 = time.monotonic()
    store = InstanceStore(settings.state_dir)
    inst = store.refresh(store.find(name))
    if inst.state in (State.PENDING, State.PROLOG, State.BOOT):
        raise InvalidState(f"instance {inst.id} is {inst.state}: wait until it runs")
    root = lifecycle.root_drive(inst)
    if not root.path.exists():
        raise InvalidState(
            f"instance {inst.id} is {inst.state} and its root disk is gone",
            hint="snapshot before kill",
        )
    output = _check_output(output, overwrite=overwrite)
    if output.suffix.lower() in _NOT_QCOW2:
        raise InputError(
            f"{output}: a snapshot is written as qcow2, not {output.suffix}",
            hint="name it .qcow2; qemu-img convert makes other formats from it",
        )
    entry_output = _check_output(
        entry_output or output.with_name(output.name + ".xml"), overwrite=overwrite
    )
    find_tool(q.QEMU_IMG)
    values = dict(fields or {})
    if "tag" in values:
        values["alternative"] = values.pop("tag")
    unknown = set(values) - {f.name for f in dataclasses.fields(Entry)}
    if unknown:
        raise InputError(f"unknown entry field(s): {', '.join(sorted(unknown))}")
    if base is None and carry_base:
        base = base_entry(settings, inst, client=client)
    draft: dict[str, Any] = {}
    if base is not None:
        draft = {k: getattr(base, k) for k in CARRIED if getattr(base, k) not in (None, ())}
    draft["version"] = bump_version(base.version if base else None)
    draft.update({k: v for k, v in values.items() if v is not None})
    draft["replaces"] = inst.image_id

    if inst.state is State.RUNNING and lifecycle.guest_agent_connected(inst):
        method = "guest-agent freeze"
        with store.lock(inst.id), frozen(inst), lifecycle.paused(inst):
            _convert(root.path, root.format, output, shared=True)
    elif inst.state is State.RUNNING:
        method = "stopped first"
        with store.lock(inst.id):
            inst = store.load(inst.id)
            how = lifecycle.power_off(store, inst, timeout=stop_timeout, force=force_stop)
            inst = store.transition(
                inst, State.STOPPED, f"stopped for a snapshot ({how})", pid=None
            )
            try:
                _convert(root.path, root.format, output, shared=False)
            finally:
                # back up on the same disks, whatever happened to the copy
                inst = lifecycle.boot(settings, store, inst, fresh_root=False)
        lifecycle.wait_running(store, inst, lifecycle.START_TIMEOUT)
    else:
        method = "instance not running"
        with store.lock(inst.id):
            _convert(root.path, root.format, output, shared=False)

    try:
        entry = describe_image(output, format="qcow2", kind="machine", **draft)
        atomic_write(entry_output, entry_to_bytes(entry))
    except BaseException:
        output.unlink(missing_ok=True)  # no image without its entry
        raise
    return Snapshot(output, entry_output, entry, method, time.monotonic() - t0)
