"""The OpenStack test cloud works for a client of openstacksdk: flavors, a Glance upload whose
hash Glance computes, and a server without NICs that reads its config drive and user data
(the tiny appliance prints them on its serial console), deleted down to a 404."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagekit.devtools import testcloud
from imagekit.devtools.testcloud import RunningCloud

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_up_again_returns_quickly(openstack_cloud: RunningCloud) -> None:
    started = time.monotonic()
    again = testcloud.up(openstack_cloud.directory)
    assert time.monotonic() - started < 5
    assert again == openstack_cloud
    assert all(testcloud.status(openstack_cloud.directory).values())
    assert testcloud.main(["status", "--dir", str(openstack_cloud.directory)]) == 0


def test_catalog(openstack_cloud: RunningCloud) -> None:
    conn = openstack_cloud.connect()
    for service in ("identity", "image", "placement", "compute", "network"):
        assert conn.has_service(service), service
    assert conn.has_service("block-storage") is openstack_cloud.block_storage is False


def test_flavors(openstack_cloud: RunningCloud) -> None:
    flavors = {f.name: f for f in openstack_cloud.connect().compute.flavors()}
    assert set(openstack_cloud.flavors) <= set(flavors)
    assert (flavors["m1.tiny"].ram, flavors["m1.small"].ram) == (128, 256)


@pytest.fixture(scope="module")
def glance_tiny(openstack_cloud: RunningCloud, tiny_appliance: Path) -> Iterator[Any]:
    """The tiny appliance in Glance, uploaded by the demo user (private to project demo)."""
    conn = openstack_cloud.connect(demo=True)
    image = conn.image.create_image(
        name=f"tiny-{uuid.uuid4().hex[:8]}",
        filename=str(tiny_appliance),
        disk_format="raw",
        container_format="bare",
        validate_checksum=False,
    )
    try:
        yield conn.image.wait_for_status(image, "active", wait=120, interval=0.5)
    finally:
        conn.image.delete_image(image, ignore_missing=True)


def test_image_upload_hash(glance_tiny: Any, tiny_appliance: Path) -> None:
    data = tiny_appliance.read_bytes()
    assert glance_tiny.size == len(data)
    assert glance_tiny.hash_algo == "sha512"
    assert glance_tiny.hash_value == hashlib.sha512(data).hexdigest()


def _console_until(conn: Any, server: Any, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    output = ""
    while time.monotonic() < deadline:
        output = conn.compute.get_server_console_output(server)["output"] or ""
        if text in output:
            return output
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not on the console within {timeout}s:\n{output[-2000:]}")


def test_server_reads_config_drive_and_user_data(
    openstack_cloud: RunningCloud, glance_tiny: Any
) -> None:
    from openstack import exceptions

    conn = openstack_cloud.connect(demo=True)
    word = f"hello-{uuid.uuid4().hex[:8]}"
    script = f"#!/bin/sh\necho {word}\n"
    flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
    started = time.monotonic()
    # networks="none" needs compute microversion >= 2.37; the SDK negotiates the newest
    server = conn.compute.create_server(
        name=f"tc-{word}",
        image_id=glance_tiny.id,
        flavor_id=flavor.id,
        networks="none",
        config_drive=True,
        user_data=base64.b64encode(script.encode()).decode(),
    )
    try:
        server = conn.compute.wait_for_server(server, status="ACTIVE", wait=180, interval=0.5)
        active = time.monotonic() - started
        output = _console_until(conn, server, f"IMAGEKIT-TINY: user-data: {word}", 120)
        printed = time.monotonic() - started
        assert "IMAGEKIT-TINY: disk sr0 label=config-2" in output  # nova's IDE CD-ROM
        assert f"hostname=tc-{word}" in output
    finally:
        deleting = time.monotonic()
        conn.compute.delete_server(server, ignore_missing=True)
        # a deleted server can still answer with status DELETED for a while: wait for the 404
        deadline = time.monotonic() + 120
        while True:
            try:
                conn.compute.get_server(server.id)
            except exceptions.NotFoundException:
                break
            assert time.monotonic() < deadline, "server not gone within 120s"
            time.sleep(0.5)
    print(
        f"create→ACTIVE {active:.1f}s, user-data on console {printed:.1f}s, "
        f"delete→404 {time.monotonic() - deleting:.1f}s"
    )
