"""OpenStack fixture: a real single-node cloud (Debian 12's Zed packages) on loopback.

- ``openstack_cloud`` (session): ``imagekit.devtools.testcloud.up()`` once per session (it
  installs the packages on a fresh machine, ~80 s, then configures and starts the cloud,
  ~60 s; on a cloud already running it returns in under a second) and yields its
  ``RunningCloud``:

  - ``.clouds_yaml``: the client configuration (``/var/tmp/imagekit-testcloud/clouds.yaml``)
  - ``.cloud`` / ``.demo_cloud``: ``imagekit-test`` (admin) / ``imagekit-test-demo`` (member)
  - ``.flavors``: ``m1.tiny`` (128 MiB, 1 GiB disk), ``m1.small`` (256 MiB, 1 GiB),
    ``m1.medium`` (512 MiB, 2 GiB), ``m1.large`` (1 GiB, 10 GiB); 1 vCPU each
  - ``.block_storage``: False (no cinder on these hosts: no device-mapper, NFS or iSCSI)
  - ``.env(demo=False)``: ``OS_CLIENT_CONFIG_FILE`` and ``OS_CLOUD`` for a child process
  - ``.connect(demo=False)``: an openstacksdk ``Connection``

  The cloud lives in a fixed directory (``$IMAGEKIT_TESTCLOUD_DIR`` or
  ``/var/tmp/imagekit-testcloud``) and keeps running after the session, so the next session
  (and a developer's shell) reuses it; ``python -m imagekit.devtools.testcloud down`` stops it.
  It is shared: create resources with unique names and delete them.

Every test that uses ``openstack_cloud`` is marked ``slow`` here, whatever its module says.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from imagekit.devtools.testcloud import RunningCloud


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "openstack_cloud" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def openstack_cloud() -> RunningCloud:
    from imagekit.devtools import testcloud

    if os.geteuid() != 0:
        pytest.skip("the OpenStack test cloud runs as root (libvirt, nova's privsep, apt)")
    if not Path("/usr/bin/apt-get").exists():
        pytest.skip("the OpenStack test cloud is made of Debian packages")
    directory = Path(os.environ.get("IMAGEKIT_TESTCLOUD_DIR") or testcloud.DEFAULT_DIR)
    return testcloud.up(directory)
