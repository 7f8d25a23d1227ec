"""``console --attach``'s relay and its detach key, against a socket standing in for qemu's
serial chardev (the real guest is in test_launch_guest.py)."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from imagekit.errors import InvalidState
from imagekit.launch.console import attach_console
from imagekit.launch.instances import Instance, State
from imagekit.launch.machines import machine_type


def instance(directory: Path, **changes: object) -> Instance:
    fields: dict[str, object] = dict(
        id="vm-0c0c0c0c",
        directory=directory,
        image_id="",
        base_image=Path(),
        base_format="raw",
        machine=machine_type("t1.micro"),
        accel="tcg",
        ssh_port=1,
        drives=(),
        state=State.RUNNING,
        console="socket",
        name="con1",
    )
    fields.update(changes)
    return Instance(**fields)  # type: ignore[arg-type]


def test_typed_bytes_reach_the_guest_until_ctrl_bracket_q(tmp_path: Path) -> None:
    inst = instance(tmp_path)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(inst.console_socket))
    server.listen(1)
    received = bytearray()

    def guest() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"login: ")
            while data := conn.recv(100):
                received.extend(data)

    t = threading.Thread(target=guest)
    t.start()
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    relay = threading.Thread(target=attach_console, args=(inst, in_r, out_w))
    relay.start()
    assert os.read(out_r, 100) == b"login: "  # what the guest wrote reaches the terminal
    # Ctrl-] Ctrl-] sends one Ctrl-]; Ctrl-] x sends both; Ctrl-] q detaches
    os.write(in_w, b"root\r\x1d\x1d\x1dxls\r\x1dq-not-sent")
    relay.join(timeout=5)
    assert not relay.is_alive()  # detached
    t.join(timeout=5)
    assert bytes(received) == b"root\r\x1d\x1dxls\r"
    for fd in (in_r, in_w, out_r, out_w):
        os.close(fd)
    server.close()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"state": State.STOPPED}, "instance con1 is Stopped, not Running"),
        ({"console": "file"}, "was started without an attachable console"),
    ],
    ids=["stopped", "file-console"],
)
def test_attach_refuses_what_has_no_console_to_join(tmp_path: Path, changes, message) -> None:
    with pytest.raises(InvalidState, match=message):
        attach_console(instance(tmp_path, **changes), 0, 1)
