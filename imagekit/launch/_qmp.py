"""A minimal QMP (QEMU Machine Protocol) client over a unix socket.

The socket lives in the instance directory; its absolute path may exceed the 107-byte limit
of ``sun_path``, so we connect through ``/proc/self/fd/<dirfd>/<name>``, which is always
short and names the same socket.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

from ..errors import EnvironmentProblem


class QMPError(EnvironmentProblem):
    pass


def connect_unix(path: Path, *, timeout: float, what: str) -> socket.socket:
    """Connect to a unix socket, raising EnvironmentProblem naming ``what`` on failure.

    Goes through /proc/self/fd: an instance's absolute path may be longer than sun_path
    (108 bytes) allows.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sock.connect(f"/proc/self/fd/{dirfd}/{path.name}")
    except OSError as e:
        sock.close()
        raise QMPError(f"cannot connect to {what} at {path}: {e}") from e
    finally:
        os.close(dirfd)
    return sock


class JsonLines:
    """Newline-delimited JSON commands over a unix socket, as QMP and the guest agent speak."""

    def __init__(self, path: Path, *, timeout: float, what: str) -> None:
        self.what = what
        self._sock = connect_unix(path, timeout=timeout, what=what)
        self._buf = b""

    def send(self, name: str, arguments: dict[str, Any], *, prefix: bytes = b"") -> None:
        msg: dict[str, Any] = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        try:
            self._sock.sendall(prefix + json.dumps(msg).encode() + b"\n")
        except OSError as e:
            raise QMPError(f"{self.what}: write failed: {e}") from e

    def line(self) -> bytes:
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(65536)
            except OSError as e:
                raise QMPError(f"{self.what}: read failed: {e}") from e
            if not chunk:
                raise QMPError(f"{self.what} closed the connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


class QMP:
    def __init__(self, path: Path, *, timeout: float = 5.0) -> None:
        self._channel = JsonLines(path, timeout=timeout, what="QMP socket")
        self.events: list[dict[str, Any]] = []
        self._read()  # greeting
        self.command("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        msg: dict[str, Any] = json.loads(self._channel.line())
        return msg

    def command(self, name: str, **arguments: Any) -> Any:
        self._channel.send(name, arguments)
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise QMPError(f"QMP {name}: {reply['error'].get('desc', reply['error'])}")
            return reply.get("return")

    def wait_event(self, name: str) -> dict[str, Any]:
        for i, ev in enumerate(self.events):
            if ev.get("event") == name:
                return self.events.pop(i)
        while True:
            msg = self._read()
            if msg.get("event") == name:
                return msg
            if "event" in msg:
                self.events.append(msg)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> QMP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
