"""An interactive serial console: the user's terminal joined to the guest's ttyS0.

qemu serves the serial port on ``console.sock`` in the instance directory (and logs what
the guest writes to ``console.log`` whether or not anyone is attached, see
``qemu._serial``). Attaching relays bytes both ways with the terminal in raw mode, so
Ctrl-C, arrows and the like reach the guest; ``DETACH_KEY`` then ``q`` (or ``.``) detaches,
as ``telnet`` and ``virsh console`` do; the detach key twice sends it once.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import termios
import tty
from collections.abc import Callable, Iterator

from ..errors import EnvironmentProblem, InvalidState
from .instances import Instance, State

DETACH_KEY = b"\x1d"  # Ctrl-]
DETACH_NEXT = (b"q", b".")


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def connect_console(instance: Instance, *, timeout: float = 5.0) -> socket.socket:
    """A connection to the guest's serial console.

    Raises InvalidState (not running, or started without a console socket),
    EnvironmentProblem (qemu does not answer: someone else attached, say).
    """
    if instance.state not in (State.RUNNING, State.BOOT):
        raise InvalidState(f"instance {instance.label} is {instance.state}, not Running")
    if instance.console != "socket":
        raise InvalidState(
            f"instance {instance.label} was started without an attachable console",
            hint=f"imagekit stop {instance.label} && imagekit start {instance.label}",
        )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    # through the directory's fd: the absolute path may be longer than sun_path allows
    dfd = os.open(instance.directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sock.connect(f"/proc/self/fd/{dfd}/{instance.console_socket.name}")
    except OSError as e:
        sock.close()
        raise EnvironmentProblem(
            f"cannot reach {instance.label}'s console: {e.strerror}",
            hint="is another terminal attached?",
        ) from e
    finally:
        os.close(dfd)
    sock.settimeout(None)
    return sock


def attach_console(
    instance: Instance,
    in_fd: int,
    out_fd: int,
    *,
    on_attach: Callable[[], None] | None = None,
) -> None:
    """Relay ``in_fd`` to the guest's console and the console to ``out_fd`` until the user
    detaches, ``in_fd`` ends or qemu closes the console. Raises what ``connect_console``
    raises."""
    sock = connect_console(instance)
    if on_attach:
        on_attach()
    pending = b""  # a detach key waiting for the next byte
    with sock, _raw(in_fd):
        while True:
            ready, _, _ = select.select([in_fd, sock.fileno()], [], [])
            if sock.fileno() in ready:
                data = sock.recv(65536)
                if not data:
                    return
                os.write(out_fd, data)
            if in_fd in ready:
                data = os.read(in_fd, 4096)
                if not data:
                    return
                out = bytearray()
                for b in (bytes([c]) for c in data):
                    if pending:
                        pending = b""
                        if b in DETACH_NEXT:
                            if out:
                                sock.sendall(bytes(out))
                            return
                        out += DETACH_KEY if b == DETACH_KEY else DETACH_KEY + b
                    elif b == DETACH_KEY:
                        pending = b
                    else:
                        out += b
                if out:
                    sock.sendall(bytes(out))
