"""Host-side setup of a mounted base image never follows the image's symlinks out of it.

A base image is a stranger's file system: its ``/etc``, ``/proc`` or ``/usr/sbin`` may be
absolute symlinks to the host's. The builder must write and mount where a process chrooted
in the image would look, inside the image, never on the host.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imagekit.build.baseimport import chroot_mounts, resolve_in_root
from imagekit.errors import InputError


def test_resolve_in_root_never_leaves_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr" / "sbin").mkdir(parents=True)
    (root / "etc").symlink_to("/private/etc")  # absolute: the host's if followed
    (root / "up").symlink_to("../../../../../..")
    (root / "sbin").symlink_to("usr/sbin")
    (root / "chain").symlink_to("/sbin")
    (root / "loop").symlink_to("/loop")  # what the chroot sees as ELOOP
    assert resolve_in_root(root, "/etc/resolv.conf") == root / "private/etc/resolv.conf"
    assert resolve_in_root(root, "/up/usr/sbin") == root / "usr" / "sbin"
    assert resolve_in_root(root, "/../../etc") == root / "private" / "etc"
    assert resolve_in_root(root, "/chain/policy-rc.d") == root / "usr" / "sbin" / "policy-rc.d"
    with pytest.raises(InputError, match="too many symbolic links"):
        resolve_in_root(root, "/loop/x")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_chroot_setup_does_not_follow_absolute_symlinks_to_the_host(tmp_path: Path) -> None:
    host = tmp_path / "host"  # stands for the host's own directories
    for d in ("etc", "sbin", "proc"):
        (host / d).mkdir(parents=True)
    (host / "etc" / "resolv.conf").write_text("host resolver, do not touch\n")
    root = tmp_path / "image"
    (root / "usr").mkdir(parents=True)
    (root / "etc").symlink_to(host / "etc")
    (root / "usr" / "sbin").symlink_to(host / "sbin")
    (root / "proc").symlink_to(host / "proc")

    with chroot_mounts(root):
        assert sorted(os.listdir(host / "etc")) == ["resolv.conf"]
        assert (host / "etc" / "resolv.conf").read_text() == "host resolver, do not touch\n"
        assert os.listdir(host / "sbin") == []
        assert not os.path.ismount(host / "proc")
        inside = root / str(host).lstrip("/")
        assert os.path.ismount(inside / "proc")  # where /proc leads inside the image
        if Path("/etc/resolv.conf").exists():
            assert (inside / "etc" / "resolv.conf").read_bytes() == Path(
                "/etc/resolv.conf"
            ).read_bytes()
    assert not os.path.ismount(inside / "proc")
    assert not os.path.ismount(root / "dev")
    assert (host / "etc" / "resolv.conf").read_text() == "host resolver, do not touch\n"
