"""Guest ports forwarded to the host: what the user asked for (``--port [HOST:]GUEST``) and
what the entry declares (``slterms:inbound-port``), each on a host port that is free when
checked. ssh (guest port 22) is forwarded apart, always to loopback."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterable, Sequence

from ..errors import EnvironmentProblem, InputError, InvalidState
from . import qemu as q
from .instances import PortForward


@dataclasses.dataclass(frozen=True)
class PortRequest:
    guest_port: int
    host_port: int | None = None  # None: a free one


def parse_port(text: str) -> PortRequest:
    """``GUEST`` or ``HOST:GUEST`` (TCP ports 1..65535). Raises InputError."""
    host, sep, guest = text.rpartition(":")
    try:
        g = int(guest)
        h = int(host) if sep else None
    except ValueError:
        raise InputError(f"--port {text!r}: expected GUEST or HOST:GUEST (numbers)") from None
    for port in (g, h):
        if port is not None and not 0 < port < 65536:
            raise InputError(f"--port {text!r}: ports are 1..65535")
    return PortRequest(guest_port=g, host_port=h)


def check_ports(requests: Sequence[PortRequest], address: str) -> None:
    """Raise InputError for a port given twice, InvalidState for a host port in use."""
    guests = [p.guest_port for p in requests]
    if len(set(guests)) != len(guests):
        raise InputError("a guest port is given twice")
    hosts = [p.host_port for p in requests if p.host_port]
    if len(set(hosts)) != len(hosts):
        raise InputError("a host port is given twice")
    for port in hosts:
        if not q.is_port_free(address, port):
            raise InvalidState(f"host port {address}:{port} is in use")


def free_port(address: str, taken: set[int]) -> int:
    """A port free on ``address`` now and not in ``taken`` (which it joins)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as sock:
            sock.bind((address, 0))
            port: int = sock.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port
    raise EnvironmentProblem(f"no free port on {address}")


def forwards(
    requests: Sequence[PortRequest], inbound: Iterable[int], *, address: str, taken: set[int]
) -> tuple[PortForward, ...]:
    """The user's ports, then the entry's ``inbound`` ports the user did not map, each on
    a free host port (22 is ssh's, forwarded apart)."""
    out = [
        PortForward(
            p.host_port or free_port(address, taken),
            p.guest_port,
            address,
            source="option",
            fixed=p.host_port is not None,
        )
        for p in requests
    ]
    mapped = {p.guest_port for p in requests} | {22}
    for port in sorted(set(inbound) - mapped):
        if port > 0:
            out.append(
                PortForward(free_port(address, taken), port, address, source="entry", fixed=False)
            )
    return tuple(out)
