"""Launch refusals: each stops BEFORE qemu starts, with its reason, leaving nothing cached.

A real marketplace server and a real HTTP server on loopback; the CLI runs in-process.
(Guests that really boot are in test_launch_guest.py.)
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imagekit.errors import SignatureInvalid
from imagekit.launch.launcher import LaunchRequest, launch
from imagekit.launch.machines import machine_type
from imagekit.market.client import MarketplaceClient
from imagekit.settings import load_settings
from tests.plugins.market import draft_entry, sign

IMAGE = os.urandom(1 << 20)


def identifier(data: bytes) -> str:
    from imagekit.image.identifier import sha1_to_id

    return sha1_to_id(hashlib.sha1(data).hexdigest())


@pytest.fixture
def env(marketplace, make_endorser, http_files, monkeypatch, isolated_home, no_stray_qemu):
    """A published, trusted endorser, the image served on loopback, settings in the env."""

    class Env:
        endorser = make_endorser()
        client = MarketplaceClient(marketplace.url)
        http = http_files
        home = isolated_home
        started = staticmethod(no_stray_qemu)

        def publish(
            self,
            data: bytes = IMAGE,
            *,
            served: bytes | None = None,
            ago: float = 0,
            endorser=None,
            **fields,
        ) -> str:
            name = hashlib.sha1(data).hexdigest()
            url = self.http.add(name, data if served is None else served)
            xml = sign(
                draft_entry(data, locations=(url,), **fields), endorser or self.endorser, ago=ago
            )
            self.client.upload(xml)
            return identifier(data)

        def cache_files(self) -> list[Path]:
            root = self.home / ".cache" / "imagekit"
            if not root.exists():
                return []
            return [p for p in root.rglob("*") if p.is_file() and p.suffix != ".lock"]

        def image_requests(self) -> int:
            return len(self.http.requests)

    e = Env()
    monkeypatch.setenv("IMAGEKIT_MARKETPLACE", marketplace.url)
    monkeypatch.setenv("IMAGEKIT_TRUST", str(e.endorser.cert_path))
    monkeypatch.setenv("IMAGEKIT_ACCEL", "tcg")
    monkeypatch.setenv("IMAGEKIT_ALLOW_PRIVATE_LOCATIONS", "true")
    yield e
    e.client.close()


def assert_nothing_happened(env, result, exit_code: int, line: str) -> None:
    assert result.exit_code == exit_code, result.stderr
    (error,) = [x for x in result.stderr.splitlines() if x.startswith("imagekit: error: ")]
    assert line in error, result.stderr
    assert result.stdout == ""
    assert env.started() == []
    assert env.cache_files() == []


def test_tampered_image_stops_before_qemu(env, cli):
    tampered = bytearray(IMAGE)
    tampered[4096] ^= 0x01
    ident = env.publish(served=bytes(tampered))
    result = cli("launch", ident, "--swap", "0")
    assert_nothing_happened(env, result, 3, "imagekit: error: ")
    assert "SHA-256 of the image" in result.stderr or "SHA-256 of the bytes" in result.stderr
    assert env.image_requests() == 1
    # the instance record says why; it created no disk
    (inst_dir,) = (env.home / ".local" / "state" / "imagekit" / "instances").iterdir()
    listing = cli("instances")
    assert "Failed" in listing.stdout and "SHA-256" in listing.stdout
    assert sorted(p.name for p in inst_dir.iterdir() if p.name != ".lock") == ["instance.json"]


def test_untrusted_signature_stops_before_anything(env, cli, make_endorser):
    stranger = make_endorser()
    ident = env.publish(os.urandom(4096), endorser=stranger)
    result = cli("launch", ident)
    assert_nothing_happened(env, result, 3, "imagekit: error: ")
    assert "trust" in result.stderr.lower()
    assert env.image_requests() == 0


def test_bad_signature_from_server_stops_before_anything(env, tmp_path: Path):
    xml = sign(draft_entry(IMAGE, title="Genuine"), env.endorser)
    tampered = xml.replace(b"Genuine", b"Evil ok")

    class Lying:
        def current_entries(self, ident: str) -> list[bytes]:
            return [tampered]

    settings = load_settings({})
    request = LaunchRequest(image=identifier(IMAGE), machine=machine_type())
    with pytest.raises(SignatureInvalid):
        launch(request, settings, client=Lying())
    assert env.started() == [] and env.cache_files() == []
    assert not (settings.state_dir / "instances").exists()


def test_policy_refusal_stops_before_anything(env, cli, tmp_path: Path):
    ident = env.publish(os.urandom(2048))
    policy = tmp_path / "site.toml"
    policy.write_text(f'[endorsers]\ndeny = ["{env.endorser.email}"]\n')
    result = cli("launch", ident, "--policy", policy)
    assert_nothing_happened(env, result, 3, f"endorser {env.endorser.email} is denied")
    assert env.image_requests() == 0


def test_expired_entry_stops_before_anything(env, cli):
    valid = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    ident = env.publish(os.urandom(2048), valid=valid, ago=3600)
    result = cli("launch", ident)
    assert_nothing_happened(env, result, 3, "expired on")
    assert env.image_requests() == 0


def test_deprecated_entry_stops_before_anything(env, cli):
    data = os.urandom(2048)
    env.publish(data, ago=120)
    ident = env.publish(data, deprecated="CVE-2026-1234: use v2", ago=0)
    result = cli("launch", ident)
    assert_nothing_happened(env, result, 3, "deprecated: CVE-2026-1234: use v2")
    assert env.image_requests() == 0


def test_refused_readonly_disk_stops_before_the_root_image_is_fetched(env, cli, make_endorser):
    root = env.publish(os.urandom(8192))
    disk = env.publish(os.urandom(4096), endorser=make_endorser(), kind="disk")
    result = cli("launch", root, "--readonly-disk", disk)
    assert_nothing_happened(env, result, 3, "imagekit: error: ")
    assert env.image_requests() == 0  # the acceptable root image was not downloaded either


def test_no_trust_configured_is_refused(env, cli, monkeypatch):
    monkeypatch.delenv("IMAGEKIT_TRUST")
    result = cli("launch", env.publish(os.urandom(100)))
    assert_nothing_happened(env, result, 2, "no trusted certificates configured")


def test_private_location_refused_unless_allowed(env, cli, monkeypatch):
    monkeypatch.delenv("IMAGEKIT_ALLOW_PRIVATE_LOCATIONS")
    ident = env.publish(os.urandom(4096))
    result = cli("launch", ident, "--swap", "0")
    assert_nothing_happened(env, result, 4, "non-public address 127.0.0.1")
    assert env.image_requests() == 0


def test_unknown_id_and_machine_type(env, cli):
    result = cli("launch", "A" * 27)
    assert_nothing_happened(env, result, 2, "imagekit: error: ")
    result = cli("launch", env.publish(os.urandom(10)), "--type", "m9.huge")
    assert_nothing_happened(env, result, 2, "unknown machine type 'm9.huge'")


def test_policy_check_command(env, cli, make_endorser, tmp_path: Path):
    data = os.urandom(999)
    ident = env.publish(data, ago=30)
    result = cli("policy", "check", ident)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"ACCEPT {ident} {env.endorser.email}")
    policy = tmp_path / "p.toml"
    policy.write_text(f'[images]\ndeny = ["{ident}"]\n')
    result = cli("policy", "check", ident, "--policy", policy)
    assert result.exit_code == 3
    assert result.stdout.startswith(f"REFUSE {ident}")
    assert "PolicyRefused" in result.stdout


def test_trust_setting_with_several_locations_works_for_launch_as_for_verify(
    env, cli, make_endorser, monkeypatch
):
    """``IMAGEKIT_TRUST=a.pem:b.pem`` is one setting read one way by every command."""
    other = make_endorser()
    monkeypatch.setenv("IMAGEKIT_TRUST", f"{other.cert_path}:{env.endorser.cert_path}")
    ident = env.publish(os.urandom(999), ago=30)
    result = cli("policy", "check", ident)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"ACCEPT {ident}")


def test_volume_commands_and_single_holder(env, cli):
    assert cli("volume", "create", "data", "1").exit_code == 0
    result = cli("volume", "create", "data", "1")
    assert result.exit_code == 2 and "already exists" in result.stderr
    listing = cli("volume", "list")
    assert listing.stdout.splitlines()[1].split()[:3] == ["data", "1G", "-"]
    result = cli("launch", env.publish(os.urandom(64)), "--persistent-disk", "nope")
    assert_nothing_happened(env, result, 2, "no volume 'nope'")
    assert cli("volume", "delete", "data").exit_code == 0
    assert cli("volume", "list").stdout.count("\n") == 1


def test_qcow2_image_naming_a_host_backing_file_refused(env, cli, image_entry, tmp_path):
    """A signed qcow2 whose header points qemu at a host file (here /etc/hostname) must
    not be booted: the launcher checks the verified image before creating the overlay."""
    import subprocess

    from imagekit.entry import entry_to_bytes

    evil = tmp_path / "evil.qcow2"
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "/etc/hostname",
            "-F",
            "raw",
            str(evil),
            "1M",
        ],
        check=True,
    )
    data = evil.read_bytes()
    url = env.http.add("evil.qcow2", data)
    draft = entry_to_bytes(image_entry(data, locations=[url], format="qcow2"))
    env.client.upload(sign(draft, env.endorser))
    result = cli("launch", identifier(data), "--swap", "0")
    assert result.exit_code == 2, result.stderr
    assert "names a backing file: refused" in result.stderr
    assert env.started() == []
    (inst_dir,) = (env.home / ".local" / "state" / "imagekit" / "instances").iterdir()
    assert not (inst_dir / "overlay.qcow2").exists()


def test_ssh_and_console_need_an_instance(env, cli):
    result = cli("ssh", "vm-nope")
    assert result.exit_code == 2 and "no instance 'vm-nope'" in result.stderr
    result = cli("console", "vm-nope")
    assert result.exit_code == 2


def test_types_lists_stratuslab_machine_types(cli):
    result = cli("types")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "* m1.small        1    1536M    1536M  built-in" in lines
    assert any(line.split()[0] == "c1.xlarge" for line in lines[1:])


def test_second_endorser_with_other_bytes_under_the_id_refused_before_download(
    env, cli, make_endorser, monkeypatch
):
    """B publishes an entry under A's ID with its own SHA-256 and location: ``launch ID``
    names both and boots neither; ``--endorser`` picks (here A's, whose bytes are served)."""
    other = make_endorser()
    monkeypatch.setenv("IMAGEKIT_TRUST", f"{env.endorser.cert_path}:{other.cert_path}")
    ident = env.publish(IMAGE, ago=60)
    forged_bytes = os.urandom(len(IMAGE))
    url = env.http.add("forged", forged_bytes)
    draft = draft_entry(IMAGE, locations=(url,))
    theirs = hashlib.sha256(forged_bytes).hexdigest().encode()
    forged = draft.replace(hashlib.sha256(IMAGE).hexdigest().encode(), theirs)
    assert forged != draft
    env.client.upload(sign(forged, other, ago=10))
    result = cli("policy", "check", ident)
    assert result.exit_code == 3
    assert "describe different bytes" in result.stderr and other.email in result.stderr
    result = cli("launch", ident, "--swap", "0")
    assert_nothing_happened(env, result, 3, "describe different bytes (SHA-256 differ)")
    assert env.endorser.email in result.stderr and other.email in result.stderr
    assert env.image_requests() == 0
    picked = cli("policy", "check", ident, "--endorser", env.endorser.email)
    assert picked.exit_code == 0, picked.stderr
    assert f"endorsed by {env.endorser.email}" in picked.stderr


def test_site_machine_types_from_the_config_file_marked_by_source(cli, tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text(
        '[types."site.big"]\ncpu = 8\nram = "16G"\nswap = "2G"\n'
        '[types."m1.small"]\ncpu = 2\nram = 2048\n'
    )
    monkeypatch.setenv("IMAGEKIT_CONFIG", str(config))
    lines = cli("types").stdout.splitlines()
    assert f"  site.big        8   16384M    2048M  {config}" in lines
    assert f"* m1.small        2    2048M       0M  {config}" in lines  # the site's replaces
    assert any(line.split()[0] == "t1.micro" and line.endswith("built-in") for line in lines)
    rows = {t["name"]: t for t in json.loads(cli("types", "--json").stdout)}
    assert rows["site.big"] == {
        "name": "site.big",
        "cpu": 8,
        "ram_mib": 16384,
        "swap_mib": 2048,
        "source": str(config),
    }
    from imagekit.launch.machines import machine_type, site_types

    s = load_settings({})
    assert machine_type("site.big", types=site_types(s.types, config)).cpu == 8


@pytest.mark.parametrize(
    "table, message",
    [
        ("[types.x]\ncpu = 1\n", "type x needs cpu and ram"),
        ('[types.x]\ncpu = 1\nram = "1G"\ndisk = 3\n', "type x: unknown key 'disk'"),
        ('[types.x]\ncpu = "two"\nram = "1G"\n', "type x: cpu must be a whole number"),
        ("types = 3\n", "must be a table of tables"),
    ],
    ids=["no-ram", "unknown-key", "cpu-text", "not-a-table"],
)
def test_bad_site_machine_types_refused_with_the_reason(cli, tmp_path, monkeypatch, table, message):
    config = tmp_path / "config.toml"
    config.write_text(table)
    monkeypatch.setenv("IMAGEKIT_CONFIG", str(config))
    result = cli("types")
    assert result.exit_code == 2
    assert message in result.stderr


# --- hardware terms, names, ports, local entries: refused before qemu starts -------------


@pytest.mark.parametrize(
    "terms, line",
    [
        ({"hypervisor": "xen"}, "is made for hypervisor 'xen'; imagekit runs qemu (kvm or tcg)"),
        ({"disks_bus": "sata"}, "disks-bus 'sata' is not one of ide, scsi, virtio"),
    ],
    ids=["hypervisor-xen", "disks-bus-sata"],
)
def test_hardware_terms_qemu_cannot_give_are_refused_before_qemu(env, cli, terms, line):
    ident = env.publish(os.urandom(4096), **terms)
    result = cli("launch", ident, "--swap", "0")
    assert_nothing_happened(env, result, 2, line)
    assert env.image_requests() == 0


def test_ide_disks_beyond_one_controller_are_refused(env, cli):
    ident = env.publish(os.urandom(4096), disks_bus="ide")
    result = cli(
        "launch", ident, "--volatile-disk", "1", "--volatile-disk", "1", "--volatile-disk", "1"
    )
    assert_nothing_happened(env, result, 2, "the image wants IDE disks: at most 4")


def test_kvm_and_qemu_hypervisors_pass_the_check(image_entry):
    from imagekit.launch.terms import check_hypervisor, disk_bus

    for hv in ("kvm", "QEMU", None):
        check_hypervisor(image_entry(b"x", hypervisor=hv))
    assert str(disk_bus(image_entry(b"x", disks_bus="IDE"))) == "ide"
    assert str(disk_bus(image_entry(b"x"))) == "virtio"


@pytest.mark.parametrize(
    "name, line",
    [
        ("Web_1", "instance name 'Web_1': use lower-case letters"),
        ("vm-1a2b3c4d", "looks like an instance ID"),
    ],
    ids=["bad-characters", "id-shaped"],
)
def test_bad_instance_names_refused(env, cli, name, line):
    ident = env.publish(os.urandom(1024))
    assert_nothing_happened(env, cli("launch", ident, "--name", name), 2, line)


def test_a_taken_name_is_refused_until_rm(env, cli, tmp_path):
    from imagekit.launch.instances import InstanceStore

    ident = env.publish(os.urandom(1024))
    store = InstanceStore(load_settings({}).state_dir)
    taken = named_record(store, "web1")
    result = cli("launch", ident, "--name", "web1")
    assert_nothing_happened(env, result, 2, f"an instance is already named web1 ({taken.id})")
    assert "imagekit rm web1" in result.stderr
    # the name is accepted wherever an ID is
    assert cli("instances", "web1").stdout.splitlines()[0] == f"id:           {taken.id}"
    assert cli("rm", "web1").exit_code == 0
    assert store.ids() == []
    assert cli("instances", "web1").exit_code == 2


def named_record(store, name: str):
    from imagekit.launch.instances import Instance, State

    inst = Instance(
        id="vm-0badc0de",
        directory=store.directory("vm-0badc0de"),
        image_id="",
        base_image=Path(),
        base_format="raw",
        machine=machine_type("t1.micro"),
        accel="tcg",
        ssh_port=1,
        drives=(),
        state=State.DONE,
        reason="killed",
        name=name,
    )
    return store.save(inst)


def test_count_names_each_instance_and_refuses_a_fixed_host_port(env, cli):
    ident = env.publish(os.urandom(1024))
    result = cli("launch", ident, "--count", "2", "--port", "8080:80")
    assert_nothing_happened(env, result, 2, "--count with a fixed host port")


def test_a_host_port_in_use_is_refused_before_qemu(env, cli):
    import socket

    ident = env.publish(os.urandom(1024))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("launch", ident, "--port", f"{port}:80")
    assert_nothing_happened(env, result, 2, f"host port 127.0.0.1:{port} is in use")


@pytest.mark.parametrize(
    "text, line",
    [
        ("http", "expected GUEST or HOST:GUEST"),
        ("8080:0", "ports are 1..65535"),
        ("70000", "ports are 1..65535"),
    ],
    ids=["word", "zero", "too-big"],
)
def test_bad_port_options_refused(env, cli, text, line):
    ident = env.publish(os.urandom(1024))
    assert_nothing_happened(env, cli("launch", ident, "--port", text), 2, line)


def test_entry_ports_and_user_ports_become_forwards():
    from imagekit.launch.ports import PortRequest, forwards

    requests = (PortRequest(80, 8080), PortRequest(9000))
    fwd = forwards(requests, (22, 80, 443), address="127.0.0.1", taken=set())
    assert [(p.host_port, p.guest_port, p.source, p.fixed) for p in fwd][:1] == [
        (8080, 80, "option", True)
    ]
    assert [(p.guest_port, p.source, p.fixed) for p in fwd[1:]] == [
        (9000, "option", False),
        (443, "entry", False),
    ]  # 22 is ssh's, 80 the user mapped
    assert len({p.host_port for p in fwd}) == 3
    assert [p.guest_port for p in forwards(requests, (), address="127.0.0.1", taken=set())] == [
        80,
        9000,
    ]


def test_launch_entry_file_refuses_an_untrusted_entry(env, cli, tmp_path, make_endorser):
    data = os.urandom(4096)
    xml = tmp_path / "local.xml"
    xml.write_bytes(sign(draft_entry(data), make_endorser()))
    image = tmp_path / "local.img"
    image.write_bytes(data)
    result = cli("launch", "--entry", xml, "--image", image)
    assert_nothing_happened(env, result, 3, "imagekit: error: ")
    assert "trust" in result.stderr.lower()


def test_launch_entry_file_refuses_an_image_that_is_not_the_signed_one(env, cli, tmp_path):
    data = os.urandom(1 << 16)
    xml = tmp_path / "local.xml"
    xml.write_bytes(sign(draft_entry(data), env.endorser))
    image = tmp_path / "local.img"
    tampered = bytearray(data)
    tampered[100] ^= 1
    image.write_bytes(bytes(tampered))
    result = cli("launch", "--entry", xml, "--image", image, "--swap", "0")
    assert result.exit_code == 3, result.stderr
    assert "SHA-1" in result.stderr or "SHA-256" in result.stderr
    assert env.started() == [] and env.cache_files() == []
    # and a file of another size is refused before anything is recorded
    image.write_bytes(data + b"x")
    result = cli("launch", "--entry", xml, "--image", image, "--swap", "0")
    assert result.exit_code == 3
    assert f"{len(data) + 1} bytes, the signed entry" in result.stderr


def test_launch_entry_file_goes_through_the_policy_and_rollback_memory(env, cli, tmp_path):
    from imagekit.launch.launcher import plan_launch

    data = os.urandom(4096)
    older = sign(draft_entry(data), env.endorser, ago=600)
    newer = sign(draft_entry(data), env.endorser)
    (tmp_path / "older.xml").write_bytes(older)
    (tmp_path / "newer.xml").write_bytes(newer)
    policy = tmp_path / "site.toml"
    policy.write_text(f'[endorsers]\ndeny = ["{env.endorser.email}"]\n')
    result = cli("launch", "--entry", tmp_path / "newer.xml", "--policy", policy)
    assert_nothing_happened(env, result, 3, f"endorser {env.endorser.email} is denied")
    # a plan (every check, no side effect) of the newer endorsement is remembered: the older
    # one is then a rollback, refused as from a marketplace
    (tmp_path / "image").write_bytes(data)
    request = LaunchRequest(
        image="newer.xml", machine=machine_type(), entry_xml=newer, image_file=tmp_path / "image"
    )
    plan = plan_launch(request, load_settings({}))
    assert plan.root is not None and plan.root.entry.identifier == identifier(data)
    result = cli("launch", "--entry", tmp_path / "older.xml")
    assert_nothing_happened(env, result, 3, "older than")


def test_image_file_needs_an_entry_file(env, cli, tmp_path):
    ident = env.publish(os.urandom(1024))
    (tmp_path / "x.img").write_bytes(b"x")
    result = cli("launch", ident, "--image", tmp_path / "x.img")
    assert_nothing_happened(env, result, 2, "--image FILE goes with --entry FILE")


@pytest.mark.parametrize("os_name, swap", [("debian", True), ("windows", False), ("none", False)])
def test_swap_is_attached_only_to_images_that_can_use_it(env, os_name, swap):
    from imagekit.launch.launcher import plan_launch

    ident = env.publish(os.urandom(2048), os_name=os_name)
    plan = plan_launch(
        LaunchRequest(image=ident, machine=machine_type("t1.micro")), load_settings({})
    )
    assert plan.swap is swap
    assert (plan.context.swap_label == "imagekit-swap") is swap
    assert env.started() == [] and env.cache_files() == []  # a plan does nothing


def test_launch_entry_file_without_image_fetches_from_the_entry_locations(env, tmp_path):
    from imagekit.launch.launcher import plan_launch

    data = os.urandom(8192)
    url = env.http.add("local-image", data)
    xml = sign(draft_entry(data, locations=(url,)), env.endorser)
    request = LaunchRequest(image="local.xml", machine=machine_type("t1.micro"), entry_xml=xml)
    plan = plan_launch(request, load_settings({}))
    assert plan.root is not None and plan.root.entry.locations == (url,)
    assert plan.uncached_bytes == len(data)  # it will be downloaded, verified, cached
    assert env.image_requests() == 0 and env.cache_files() == []  # not yet: a plan
