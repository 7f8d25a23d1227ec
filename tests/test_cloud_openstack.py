"""The cloud backend against a real single-node OpenStack (keystone, glance, placement, nova
with libvirt/qemu under TCG, neutron-server) on loopback, driven through the real CLI.

Entries are signed by a fresh endorser and published to a real marketplace server; the
image bytes are served by it over HTTP on loopback. Every test makes its own random image
bytes (hence its own IDs), so runs against the same long-lived cloud do not see each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagekit.cloud import images as gi
from imagekit.cloud.servers import M_IMAGE
from imagekit.entry import entry_to_bytes
from imagekit.image.identifier import sha1_to_id
from imagekit.market.client import MarketplaceClient
from tests.plugins.launch import make_entry
from tests.plugins.market import draft_entry, sign

pytestmark = pytest.mark.slow
BOOT_TIMEOUT = 180


def ident(data: bytes) -> str:
    return sha1_to_id(hashlib.sha1(data).hexdigest())


class World:
    """A marketplace, an endorser, the CLI's environment for the test cloud."""

    def __init__(self, cloud: Any, marketplace: Any, endorser: Any, tmp: Path, cli: Any) -> None:
        self.cloud = cloud
        self.marketplace = marketplace
        self.endorser = endorser
        self.tmp = tmp
        self.cli_ = cli
        self.client = MarketplaceClient(marketplace.url)
        self.policy = tmp / "policy.toml"
        self.policy.write_text("")
        self.env = {
            **cloud.env(),
            "IMAGEKIT_MARKETPLACE": marketplace.url,
            "IMAGEKIT_TRUST": str(endorser.cert_path),
            "IMAGEKIT_POLICY": str(self.policy),
            "IMAGEKIT_ALLOW_PRIVATE_LOCATIONS": "1",
        }
        self.tag = f"t{uuid.uuid4().hex[:8]}"

    def publish(self, data: bytes, *, sha512: bool = False, ago: float = 0, **fields: Any) -> str:
        """Serve ``data``, sign an entry for it (SHA-1 + SHA-256, or all with ``sha512``)."""
        name = f"{ident(data)}.raw"
        (self.marketplace.files_dir / name).write_bytes(data)
        url = f"{self.marketplace.url}/files/{name}"
        if sha512:
            fields = {
                "alternative": fields.pop("tag", None),
                "os": "debian",
                "os_version": "12",
                **fields,
            }
            xml = entry_to_bytes(make_entry(data, locations=[url], title="t", **fields))
        else:
            xml = draft_entry(data, locations=(url,), **fields)
        self.client.upload(sign(xml, self.endorser, ago=ago))
        return ident(data)

    def cli(self, *args: object) -> Any:
        return self.cli_(*args, env=self.env)

    def site(self, *refs: str, retire: str = "hide") -> Path:
        path = self.tmp / "site.toml"
        subscribe = ", ".join(json.dumps(r) for r in refs)
        path.write_text(f'[sync]\nsubscribe = [{subscribe}]\nretire = "{retire}"\n')
        return path

    def images(self, identifier: str, *, hidden: bool | None = None) -> list[Any]:
        conn = self.cloud.connect()
        out = []
        for flag in (False, True) if hidden is None else (hidden,):
            query: dict[str, Any] = {"tag": gi.TAG, "limit": 1000}
            if flag:
                query["is_hidden"] = True
            out += [
                i
                for i in conn.image.images(**query)
                if (i.properties or {}).get(gi.P_ID) == identifier
            ]
        return out


@pytest.fixture
def world(openstack_cloud, marketplace, make_endorser, tmp_path, cli) -> Iterator[World]:
    w = World(openstack_cloud, marketplace, make_endorser(), tmp_path, cli)
    yield w
    w.client.close()


def sync_json(world: World, site: Path, *extra: str) -> dict[str, Any]:
    r = world.cli("sync", "--cloud", world.cloud.cloud, "--site", site, "--json", *extra)
    assert r.exit_code == 0, r.stderr
    report: dict[str, Any] = json.loads(r.stdout)
    return report


def by_id(report: dict[str, Any], *ids: str) -> dict[str, list[str]]:
    """Actions per image of this test (the cloud holds other tests' images too)."""
    out: dict[str, list[str]] = {}
    for item in report["items"]:
        if item["identifier"] in ids:
            out.setdefault(item["identifier"], []).append(item["action"])
    return out


def test_sync_adds_reuses_and_hides_under_policy(world: World):
    web = os.urandom(1 << 20)
    db = os.urandom(1 << 20)
    web_id = world.publish(web, tag=f"{world.tag}-web")
    db_id = world.publish(db, tag=f"{world.tag}-db", sha512=True)
    site = world.site(
        f"{world.endorser.email}:{world.tag}-web", f"{world.endorser.email}:{world.tag}-db"
    )

    dry = sync_json(world, site, "--dry-run")
    assert by_id(dry, web_id, db_id) == {web_id: ["add"], db_id: ["add"]}
    assert world.images(web_id) == [] and world.images(db_id) == []

    first = sync_json(world, site)
    assert by_id(first, web_id, db_id) == {web_id: ["add"], db_id: ["add"]}
    for data, identifier in ((web, web_id), (db, db_id)):
        [image] = world.images(identifier)
        assert image.status == "active" and not image.is_hidden
        assert image.size == len(data)
        # Glance's own hash of what it stored is the verified bytes' hash
        assert image.hash_algo == "sha512"
        assert image.hash_value == hashlib.sha512(data).hexdigest()
        props = image.properties
        assert props[gi.P_ENDORSER] == world.endorser.email
        assert props[gi.P_SHA256] == hashlib.sha256(data).hexdigest()
        assert image.os_distro == "debian" and image.architecture == "x86_64"
        assert image.min_disk == 1

    again = sync_json(world, site)
    assert by_id(again, web_id, db_id) == {web_id: ["keep"], db_id: ["keep"]}
    assert again["glance_calls"] == 1  # nothing to do: one image list, no per-image call
    assert len(world.images(web_id)) == 1 and len(world.images(db_id)) == 1  # not re-uploaded

    # the site policy now refuses the db image: it is hidden, not deleted, the web one kept
    world.policy.write_text(f'[images]\ndeny = ["{db_id}"]\n')
    third = sync_json(world, site)
    assert by_id(third, web_id)[web_id] == ["keep"]
    assert "hide" in by_id(third, db_id)[db_id]
    [hidden] = world.images(db_id)
    assert hidden.is_hidden
    assert world.images(db_id, hidden=False) == []

    # accepted again: the same Glance image is unhidden, nothing uploaded
    world.policy.write_text("")
    fourth = sync_json(world, site)
    assert by_id(fourth, db_id)[db_id] == ["update"]
    [back] = world.images(db_id)
    assert back.id == hidden.id and not back.is_hidden


def test_sync_hides_deprecated_and_replaced_under_a_tag(world: World):
    tag = f"{world.endorser.email}:{world.tag}"
    v1 = os.urandom(1 << 19)
    v1_id = world.publish(v1, tag=world.tag, ago=120)
    site = world.site(tag)
    assert by_id(sync_json(world, site), v1_id) == {v1_id: ["add"]}
    v2 = os.urandom(1 << 19)
    v2_id = world.publish(v2, tag=world.tag, ago=60)
    report = by_id(sync_json(world, site), v1_id, v2_id)
    assert report[v2_id] == ["add"] and report[v1_id] == ["hide"]
    assert all(i.is_hidden for i in world.images(v1_id))
    assert not any(i.is_hidden for i in world.images(v2_id))
    # the endorser deprecates v2 (a newer signed entry): the tag leads nowhere, v2 is hidden
    world.publish(v2, tag=world.tag, deprecated="CVE-2026-0001")
    report = by_id(sync_json(world, site), v1_id, v2_id)
    assert report[v2_id] == ["hide"]
    assert all(i.is_hidden for i in world.images(v2_id))


def test_sync_hides_deprecated_id_and_says_why(world: World):
    data = os.urandom(1 << 19)
    identifier = world.publish(data, tag=world.tag, ago=60)
    site = world.site(identifier)
    assert by_id(sync_json(world, site), identifier) == {identifier: ["add"]}
    world.publish(data, tag=world.tag, deprecated="superseded")
    report = sync_json(world, site)
    assert by_id(report, identifier) == {identifier: ["refused", "hide"]}
    hide = [i for i in report["items"] if i["action"] == "hide" and i["identifier"] == identifier]
    assert "deprecated" in hide[0]["reason"].lower()


def test_tampered_glance_image_is_never_booted(world: World, openstack_cloud):
    """Someone uploads other bytes as a new Glance image carrying every property imagekit
    set (and removes the genuine one): launch verifies, sees Glance's hash disagree, never
    boots it, and boots a verified copy it uploads itself."""
    data = os.urandom(1 << 20)
    ref = f"{world.endorser.email}:{world.tag}"
    identifier = world.publish(data, tag=world.tag)
    assert by_id(sync_json(world, world.site(ref)), identifier) == {identifier: ["add"]}
    conn = openstack_cloud.connect()
    [genuine] = world.images(identifier)
    forged = {k: v for k, v in genuine.properties.items() if k.startswith("imagekit_")}
    fake = conn.image.create_image(
        name=genuine.name,
        disk_format="raw",
        container_format="bare",
        tags=[gi.TAG],
        data=os.urandom(len(data)),
        allow_duplicates=True,
        wait=True,
        **forged,
    )
    conn.image.delete_image(genuine.id)
    name = f"tamper-{uuid.uuid4().hex[:6]}"
    r = world.cli(
        "launch",
        "--cloud",
        openstack_cloud.cloud,
        ref,
        "--type",
        "m1.tiny",
        "--name",
        name,
        "--json",
    )
    try:
        assert r.exit_code == 0, r.stderr
        assert f"Glance image {fake.id} claims {identifier} but its bytes differ" in r.stderr
        server = conn.compute.get_server(json.loads(r.stdout)["id"])
        booted = conn.image.get_image(server.image["id"])
        assert booted.id != fake.id
        assert booted.hash_value == hashlib.sha512(data).hexdigest()
        # sync flags the planted image and never keeps it as the entry's image
        report = sync_json(world, world.site(ref))
        assert "tampered" in by_id(report, identifier)[identifier]
    finally:
        world.cli("kill", "--cloud", openstack_cloud.cloud, name)
        conn.image.delete_image(fake.id, ignore_missing=True)


def wait_console(world: World, name: str, pattern: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        r = world.cli("console", "--cloud", world.cloud.cloud, name)
        assert r.exit_code == 0, r.stderr
        out = r.stdout
        if re.search(pattern, out):
            return out
        time.sleep(2)
    raise AssertionError(f"{pattern!r} not on the console within {timeout}s:\n{out[-3000:]}")


def test_server_prints_its_context_from_the_config_drive_and_kill_leaves_nothing(
    world: World, openstack_cloud, tiny_appliance: Path, tmp_path: Path
):
    import subprocess

    # the tiny appliance has the same ID in every run: with a SHA-512 in its entry, the copy
    # an earlier run uploaded is proven by Glance's hash and re-used
    identifier = world.publish(tiny_appliance.read_bytes(), tag=world.tag, sha512=True)
    script = tmp_path / "setup.sh"
    script.write_text("#!/bin/sh\necho hello-from-the-cloud $(cat /proc/cmdline | wc -c)\n")
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "tester@imagekit",
            "-f",
            str(tmp_path / "id"),
        ],
        check=True,
    )
    name = f"ctx-{uuid.uuid4().hex[:6]}"
    r = world.cli(
        "launch",
        "--cloud",
        openstack_cloud.cloud,
        f"{world.endorser.email}:{world.tag}",
        "--type",
        "m1.tiny",
        "--name",
        name,
        "--user-data",
        script,
        "--ssh-key",
        tmp_path / "id.pub",
        "--var",
        "ROLE=web",
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    server = json.loads(r.stdout)
    conn = openstack_cloud.connect()
    try:
        assert server["status"] == "ACTIVE"
        assert server["image_id"] == identifier
        listed = world.cli("instances", "--cloud", openstack_cloud.cloud, "--json")
        assert name in [s["name"] for s in json.loads(listed.stdout)]
        out = wait_console(world, name, r"user-data: hello-from-the-cloud", BOOT_TIMEOUT)
        assert re.search(rf"IMAGEKIT-TINY: context scheme=config-2 hostname={name}\b", out)
        assert "IMAGEKIT-TINY: user-data: hello-from-the-cloud" in out
        keypair = server["keypair"]
        assert conn.compute.find_keypair(keypair) is not None
    finally:
        k = world.cli("kill", "--cloud", openstack_cloud.cloud, name)
    assert k.exit_code == 0, k.stderr
    # nothing of the launch is left: no server (404, not DELETED), no key pair, no volume
    assert conn.compute.find_server(server["id"]) is None
    assert conn.compute.find_keypair(server["keypair"]) is None
    assert [
        s for s in conn.compute.servers() if (s.metadata or {}).get(M_IMAGE) == identifier
    ] == []
    # the verified image stays in Glance for the next launch, which re-uses it
    [kept] = [i for i in world.images(identifier) if i.id == server["glance_image"]]
    assert kept.hash_value == hashlib.sha512(tiny_appliance.read_bytes()).hexdigest()


def test_no_valid_host_is_one_line_and_leaves_nothing(world: World, openstack_cloud):
    conn = openstack_cloud.connect()
    # more memory than the one host has (about 13 GiB with its allocation ratio), less than
    # the RAM quota (50 GiB): the scheduler, not the quota, refuses it
    flavor = conn.compute.create_flavor(
        name=f"huge-{uuid.uuid4().hex[:6]}", ram=40 << 10, vcpus=1, disk=1
    )
    data = os.urandom(1 << 20)
    identifier = world.publish(data, tag=world.tag)
    name = f"nohost-{uuid.uuid4().hex[:6]}"
    try:
        r = world.cli(
            "launch",
            "--cloud",
            openstack_cloud.cloud,
            identifier,
            "--type",
            flavor.name,
            "--name",
            name,
            "--ssh-key",
            _pubkey(world.tmp),
        )
    finally:
        conn.compute.delete_flavor(flavor.id)
    assert r.exit_code == 4
    lines = r.stderr.strip().splitlines()
    assert re.fullmatch(rf"imagekit: error: server {name} failed: no valid host: .*", lines[-1])
    assert not [s for s in conn.compute.servers() if s.name == name]
    assert not [k for k in conn.compute.keypairs() if k.name.startswith(f"imagekit-{name}-")]
    assert world.images(identifier) == []  # the image this launch uploaded is gone too


def test_quota_exceeded_is_one_line(world: World, openstack_cloud):
    conn = openstack_cloud.connect()
    demo = conn.identity.find_project("demo")
    before = conn.compute.get_quota_set(demo, usage=True)
    # exactly what the project uses already: one more server is over the quota
    conn.compute.update_quota_set(demo, instances=before.usage["instances"])
    data = os.urandom(1 << 19)
    identifier = world.publish(data, tag=world.tag)
    name = f"quota-{uuid.uuid4().hex[:6]}"
    env = {**world.env, **openstack_cloud.env(demo=True)}
    try:
        r = world.cli_(
            "launch",
            "--cloud",
            openstack_cloud.demo_cloud,
            identifier,
            "--type",
            "m1.tiny",
            "--name",
            name,
            env=env,
        )
    finally:
        conn.compute.update_quota_set(demo, instances=before.instances)
    assert r.exit_code == 4
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"imagekit: error: cloud {openstack_cloud.demo_cloud}: create server "
        f"{name}: quota exceeded: "
    )
    demo_conn = openstack_cloud.connect(demo=True)
    assert not [s for s in demo_conn.compute.servers() if s.name == name]
    assert [
        i
        for i in demo_conn.image.images(tag=gi.TAG)
        if (i.properties or {}).get(gi.P_ID) == identifier
    ] == []


def _pubkey(tmp: Path) -> Path:
    import subprocess

    key = tmp / "k"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return tmp / "k.pub"


def test_readonly_disk_without_block_storage_is_one_line(world: World, openstack_cloud):
    data = os.urandom(1 << 19)
    identifier = world.publish(data, tag=world.tag)
    disk = world.publish(os.urandom(1 << 19), tag=f"{world.tag}-disk", kind="disk")
    r = world.cli(
        "launch",
        "--cloud",
        openstack_cloud.cloud,
        identifier,
        "--name",
        "ro",
        "--readonly-disk",
        disk,
    )
    assert r.exit_code == 4
    assert r.stderr.splitlines()[0] == (
        f"imagekit: error: cloud {openstack_cloud.cloud} has no block-storage service: "
        "--readonly-disk needs one (cinder)"
    )


def _library(world: World) -> tuple[Any, Any]:
    """Settings as the CLI would load them, and the resolver's verified entry helper."""
    from imagekit.settings import load_settings

    env = {k: v for k, v in world.env.items() if k.startswith("IMAGEKIT_")}
    return load_settings({}, env=env), env


def test_interrupted_upload_leaves_no_image(world: World, openstack_cloud, monkeypatch):
    from imagekit.cloud.connection import connect
    from imagekit.fetch.cache import ImageCache
    from imagekit.launch.launcher import make_resolver

    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(openstack_cloud.clouds_yaml))
    data = os.urandom(6 << 20)
    identifier = world.publish(data, tag=world.tag)
    settings, _env = _library(world)
    resolver, policy = make_resolver(settings)
    verified = resolver.resolve(identifier)
    cached = ImageCache(settings.cache_dir).get(
        verified.entry, policy.digest_algorithms(verified.entry), allow_private=True
    )
    sent = []

    def pull_the_plug(n: int) -> None:
        sent.append(n)
        if sum(sent) > 2 << 20:
            raise KeyboardInterrupt

    with connect(openstack_cloud.cloud) as cloud, pytest.raises(KeyboardInterrupt):
        gi.upload_verified(
            cloud,
            verified,
            cached.path,
            origin="sync",
            records=gi.VerifiedDigests(settings.state_dir),
            progress=pull_the_plug,
        )
    assert 2 << 20 < sum(sent) < len(data)
    assert world.images(identifier) == []  # neither visible nor hidden, in no state


def test_sync_removes_an_upload_a_crash_left_behind(world: World, openstack_cloud, monkeypatch):
    from datetime import timedelta

    from imagekit.cloud.connection import connect
    from imagekit.cloud.sync import SiteConfig, sync

    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(openstack_cloud.clouds_yaml))
    data = os.urandom(1 << 20)
    identifier = world.publish(data, tag=world.tag)
    conn = openstack_cloud.connect()
    # what a sync killed between creating the image and sending its bytes leaves: hidden,
    # queued, carrying the entry's properties
    from openstack.image.v2.image import Image

    crashed = Image.new(
        name="crashed",
        disk_format="raw",
        container_format="bare",
        tags=[gi.TAG],
        is_hidden=True,
        imagekit_id=identifier,
        imagekit_origin="sync",
        imagekit_sha256=hashlib.sha256(data).hexdigest(),
    ).create(conn.image)
    settings, _env = _library(world)
    site = SiteConfig.parse(f'[sync]\nsubscribe = ["{identifier}"]\n')
    with connect(openstack_cloud.cloud) as cloud:
        report = sync(settings, site, cloud, partial_grace=timedelta(0))
    actions = {(i.action, i.glance_id) for i in report.items if i.identifier == identifier}
    assert ("clean", crashed.id) in actions
    assert conn.image.find_image(crashed.id) is None
    [good] = world.images(identifier)
    assert good.status == "active" and good.hash_value == hashlib.sha512(data).hexdigest()


def test_image_a_server_uses_is_not_retired(world: World, openstack_cloud):
    data = os.urandom(1 << 20)
    identifier = world.publish(data, tag=world.tag)
    site = world.site(identifier)
    assert by_id(sync_json(world, site), identifier) == {identifier: ["add"]}
    [synced] = world.images(identifier)
    name = f"inuse-{uuid.uuid4().hex[:6]}"
    r = world.cli(
        "launch",
        "--cloud",
        openstack_cloud.cloud,
        identifier,
        "--type",
        "m1.tiny",
        "--name",
        name,
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    try:
        assert json.loads(r.stdout)["glance_image"] == synced.id  # re-used, not uploaded
        world.policy.write_text(f'[images]\ndeny = ["{identifier}"]\n')
        report = sync_json(world, site)
        assert by_id(report, identifier) == {identifier: ["refused", "in-use"]}
        [still] = world.images(identifier)
        assert not still.is_hidden
    finally:
        assert world.cli("kill", "--cloud", openstack_cloud.cloud, name).exit_code == 0
    report = sync_json(world, site)
    assert by_id(report, identifier) == {identifier: ["refused", "hide"]}
    assert all(i.is_hidden for i in world.images(identifier))


def test_stop_start_and_snapshot_on_the_cloud(
    world: World, openstack_cloud, tiny_appliance: Path, tmp_path: Path
):
    from imagekit.entry import parse_entry_bytes

    identifier = world.publish(tiny_appliance.read_bytes(), tag=world.tag, sha512=True)
    name = f"life-{uuid.uuid4().hex[:6]}"
    cloud = openstack_cloud.cloud
    r = world.cli("launch", "--cloud", cloud, identifier, "--type", "m1.tiny", "--name", name)
    assert r.exit_code == 0, r.stderr
    conn = openstack_cloud.connect()
    try:
        wait_console(world, name, r"IMAGEKIT-TINY: (idle|done)", BOOT_TIMEOUT)
        stop = world.cli("stop", "--cloud", cloud, name)
        assert stop.exit_code == 0, stop.stderr
        assert f"{name}: SHUTOFF" in stop.stderr
        start = world.cli("start", "--cloud", cloud, name)
        assert start.exit_code == 0, start.stderr
        assert f"{name}: ACTIVE" in start.stderr
        out = tmp_path / "life.qcow2"
        snap = world.cli("snapshot", "--cloud", cloud, name, "-o", out, "--version", "2.0")
        assert snap.exit_code == 0, snap.stderr
        entry = parse_entry_bytes((tmp_path / "life.qcow2.xml").read_bytes())
        assert entry.replaces == identifier and entry.version == "2.0"
        assert entry.bytes == out.stat().st_size
        assert str(entry.format) == "qcow2" and entry.is_draft
        assert snap.stdout.strip() == entry.identifier
        # shown as a local snapshot is (one renderer): what it replaces, what comes next
        assert f"replaces {identifier}" in snap.stderr
        assert "next: imagekit sign" in snap.stderr
        # Nova's snapshot image was only a means: it is gone from Glance
        assert not [
            i for i in conn.image.images() if i.name.startswith(f"imagekit-snapshot-{name}")
        ]
    finally:
        assert world.cli("kill", "--cloud", cloud, name).exit_code == 0


def test_sync_reports_an_image_it_cannot_fetch_and_uploads_nothing(world: World):
    data = os.urandom(1 << 19)
    identifier = world.publish(data, tag=world.tag)
    (world.marketplace.files_dir / f"{identifier}.raw").unlink()  # the mirror lost it
    site = world.site(identifier)
    r = world.cli("sync", "--cloud", world.cloud.cloud, "--site", site)
    assert r.exit_code == 1
    [line] = [ln for ln in r.stdout.splitlines() if identifier in ln]
    assert line.startswith(f"error     {identifier} ")
    assert world.images(identifier) == []


def test_sync_hides_images_of_an_endorser_no_longer_trusted(world: World, make_endorser):
    """The site stops trusting the endorser's certificate: its entries no longer verify
    here, so their images leave the site's Glance (hidden), though the marketplace still
    serves them."""
    data = os.urandom(1 << 19)
    identifier = world.publish(data, tag=world.tag)
    site = world.site(f"{world.endorser.email}:{world.tag}")
    assert by_id(sync_json(world, site), identifier) == {identifier: ["add"]}
    world.env["IMAGEKIT_TRUST"] = str(make_endorser().cert_path)  # someone else entirely
    report = sync_json(world, site)
    assert by_id(report, identifier) == {identifier: ["hide"]}
    refused = [i for i in report["items"] if i["action"] == "refused"]
    assert refused and refused[0]["subscription"] == f"{world.endorser.email}:{world.tag}"
    assert all(i.is_hidden for i in world.images(identifier))


def test_marketplace_down_retires_nothing(world: World):
    """A marketplace that does not answer says nothing about the entries: sync reports the
    error and hides no image (a retire on silence would empty the site's Glance)."""
    data = os.urandom(1 << 19)
    identifier = world.publish(data, tag=world.tag)
    site = world.site(identifier)
    assert by_id(sync_json(world, site), identifier) == {identifier: ["add"]}
    world.env["IMAGEKIT_MARKETPLACE"] = "http://127.0.0.1:9"  # discard: nothing listens
    r = world.cli("sync", "--cloud", world.cloud.cloud, "--site", site, "--json")
    assert r.exit_code == 1
    report = json.loads(r.stdout)
    assert {i["action"] for i in report["items"]} == {"error"}
    assert [i.is_hidden for i in world.images(identifier)] == [False]


def test_sync_every_keeps_running_and_stops_on_interrupt(world: World):
    import signal
    import subprocess
    import sys

    identifier = world.publish(os.urandom(1 << 18), tag=world.tag)
    site = world.site(identifier)
    argv = [
        str(Path(sys.executable).parent / "imagekit"),
        "sync",
        "--cloud",
        world.cloud.cloud,
        "--site",
        str(site),
        "--every",
        "1s",
    ]
    proc = subprocess.Popen(
        argv,
        env={**os.environ, **world.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(world.images(identifier)) == 0:
            time.sleep(0.5)
        time.sleep(3)  # a few more rounds: each finds the image and keeps it
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    lines = [ln for ln in out.splitlines() if identifier in ln]
    assert lines[0].startswith("add ") and lines[1].startswith("keep ")
    assert len(world.images(identifier)) == 1
    assert err.count(f"sync {world.cloud.cloud}: ") >= 2


def test_interrupted_launch_leaves_nothing(world: World, openstack_cloud):
    """Ctrl-C while Nova builds the server: the server and its key pair are removed before
    the command exits (130)."""
    import signal
    import subprocess
    import sys

    identifier = world.publish(os.urandom(1 << 19), tag=world.tag)
    name = f"intr-{uuid.uuid4().hex[:6]}"
    argv = [
        str(Path(sys.executable).parent / "imagekit"),
        "launch",
        "--cloud",
        openstack_cloud.cloud,
        identifier,
        "--type",
        "m1.tiny",
        "--name",
        name,
        "--ssh-key",
        str(_pubkey(world.tmp)),
    ]
    proc = subprocess.Popen(
        argv,
        env={**os.environ, **world.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if f"{name}: server " in line and "BUILD" in line:
            proc.send_signal(signal.SIGINT)
            break
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(seen) + err
    assert "interrupted" in err
    conn = openstack_cloud.connect()
    assert not [s for s in conn.compute.servers() if s.name == name]
    assert not [k for k in conn.compute.keypairs() if k.name.startswith(f"imagekit-{name}-")]
    assert world.images(identifier) == []  # the image this launch uploaded went with it
