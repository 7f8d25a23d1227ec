"""The cloud backend's pure parts: which Glance image proves an entry, flavors, the site
config, error lines, and the CLI's refusals (no cloud needed; the real-cloud tests are in
test_cloud_openstack.py)."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from imagekit.cloud import images as gi
from imagekit.cloud.errors import NoValidHost, QuotaExceeded, classify
from imagekit.cloud.servers import Flavor, choose_flavor
from imagekit.cloud.sync import Action, SiteConfig, SyncItem
from imagekit.errors import InputError, NotFound

DATA = b"the verified bytes of an appliance" * 100
OTHER = b"other bytes, planted behind imagekit's back" * 100


def glance_image(entry: Any, data: bytes = DATA, **changes: Any) -> gi.GlanceImage:
    """What Glance would report for an upload of ``data`` carrying ``entry``'s properties."""
    image = gi.GlanceImage(
        id="g-1",
        name="x",
        status="active",
        size=len(data),
        hash_algo="sha512",
        hash_value=hashlib.sha512(data).hexdigest(),
        hidden=False,
        visibility="private",
        owner="p1",
        created_at="2026-12-01T10:00:00Z",
        properties={
            gi.P_ID: entry.identifier,
            gi.P_SHA256: hashlib.sha256(DATA).hexdigest(),
            gi.P_ORIGIN: "sync",
        },
    )
    return dataclasses.replace(image, **changes)


def record(entry: Any) -> dict[str, dict[str, Any]]:
    """What imagekit keeps after hashing DATA itself while uploading it."""
    sha256 = hashlib.sha256(DATA).hexdigest()
    sha512 = hashlib.sha512(DATA).hexdigest()
    return {entry.identifier: {"sha256": sha256, "sha512": sha512, "size": len(DATA)}}


def test_upload_of_the_verified_bytes_is_proven(image_entry):
    entry = image_entry(DATA)
    assert gi.assess(glance_image(entry), entry, {}) is gi.Proof.PROVEN


def test_same_properties_other_bytes_is_tampered(image_entry):
    """A new image that copies every imagekit property but holds other bytes: Glance's own
    hash of what it stored gives it away."""
    entry = image_entry(DATA)
    fake = glance_image(entry, OTHER, size=len(DATA))
    assert gi.assess(fake, entry, {}) is gi.Proof.TAMPERED
    assert gi.match([fake], entry, {}).best is None


def test_same_hash_other_size_is_tampered(image_entry):
    entry = image_entry(DATA)
    assert gi.assess(glance_image(entry, size=len(DATA) + 1), entry, {}) is gi.Proof.TAMPERED


def test_forged_sha512_property_cannot_prove_other_bytes(image_entry):
    """The entry has no SHA-512: a property claiming one proves nothing, only the SHA-512
    imagekit computed itself from the verified bytes (kept locally) does."""
    entry = image_entry(DATA, algorithms=("SHA-1", "SHA-256"))
    fake = glance_image(entry, OTHER, size=len(DATA))
    fake = dataclasses.replace(
        fake, properties={**fake.properties, "imagekit_sha512": fake.hash_value or ""}
    )
    assert gi.assess(fake, entry, {}) is gi.Proof.UNPROVEN
    genuine = glance_image(entry, id="g-2")
    assert gi.assess(genuine, entry, {}) is gi.Proof.UNPROVEN
    assert gi.assess(genuine, entry, record(entry)) is gi.Proof.PROVEN
    assert gi.match([fake, genuine], entry, record(entry)).best == genuine


def test_known_digest_exposes_other_bytes_uploaded_elsewhere(image_entry):
    """Other bytes planted under the entry's properties, with the genuine copy removed:
    the SHA-512 computed here from the verified bytes disagrees with Glance's hash."""
    entry = image_entry(DATA, algorithms=("SHA-1", "SHA-256"))
    fake = glance_image(entry, OTHER, size=len(DATA))
    assert gi.assess(fake, entry, record(entry)) is gi.Proof.TAMPERED


def test_known_digest_of_other_entry_bytes_is_not_used(image_entry):
    entry = image_entry(DATA, algorithms=("SHA-1", "SHA-256"))
    stale = record(entry)
    stale[entry.identifier]["sha256"] = hashlib.sha256(OTHER).hexdigest()
    assert gi.assess(glance_image(entry), entry, stale) is gi.Proof.UNPROVEN


def test_interrupted_upload_is_never_used(image_entry):
    entry = image_entry(DATA)
    for status in ("queued", "saving", "uploading"):
        assert gi.assess(glance_image(entry, status=status), entry, {}) is gi.Proof.PARTIAL
    assert gi.assess(glance_image(entry, status="killed"), entry, {}) is gi.Proof.FAILED
    assert gi.match([glance_image(entry, status="saving")], entry, {}).best is None


def test_image_of_another_entry_is_not_matched(image_entry):
    entry = image_entry(DATA)
    other = image_entry(OTHER)
    assert gi.assess(glance_image(other, OTHER), entry, {}) is gi.Proof.OTHER


def test_glance_hash_of_unknown_algorithm_is_unproven(image_entry):
    entry = image_entry(DATA)
    image = glance_image(entry, hash_algo="sha3_512", hash_value="00")
    assert gi.assess(image, entry, {}) is gi.Proof.UNPROVEN


def test_visible_proven_image_preferred(image_entry):
    entry = image_entry(DATA)
    hidden = glance_image(entry, id="a", hidden=True, created_at="2026-01-01T00:00:00Z")
    visible = glance_image(entry, id="b")
    assert gi.match([hidden, visible], entry, {}).best == visible


def test_properties_from_entry(image_entry, sign_xml):
    from imagekit.entry import entry_to_bytes
    from imagekit.signing.verify import VerifiedEntry

    entry = image_entry(DATA, os="Debian", os_version="12", os_arch="x86_64", disks_bus="VIRTIO")
    verified = VerifiedEntry(entry=entry, xml=b"<signed/>", certificate=None)  # type: ignore[arg-type]
    props = gi.image_properties(verified, origin="sync")
    assert props["os_distro"] == "debian"
    assert props["os_version"] == "12"
    assert props["architecture"] == "x86_64"
    assert props["hw_disk_bus"] == "virtio"
    assert props["min_disk"] == 1
    assert props[gi.P_ID] == entry.identifier
    assert props[gi.P_SHA256] == hashlib.sha256(DATA).hexdigest()
    assert props[gi.P_ENTRY_SHA256] == hashlib.sha256(b"<signed/>").hexdigest()
    assert entry_to_bytes(entry)  # the entry itself is untouched


FLAVORS = [
    Flavor("1", "tiny", 1, 128, 1),
    Flavor("2", "small", 1, 512, 2),
    Flavor("3", "big", 4, 4096, 20),
    Flavor("4", "m1.small", 1, 2048, 20),
]


def test_flavor_by_name():
    assert choose_flavor(FLAVORS, name="tiny", cpu=None, ram_mib=None).id == "1"


def test_flavor_smallest_fitting_cpu_ram_disk():
    assert choose_flavor(FLAVORS, name=None, cpu=1, ram_mib=200).name == "small"
    assert choose_flavor(FLAVORS, name=None, cpu=2, ram_mib=None).name == "big"
    assert choose_flavor(FLAVORS, name=None, cpu=1, ram_mib=100, min_disk_gb=2).name == "small"


def test_flavor_from_machine_type_values_when_no_flavor_has_its_name():
    # t1.micro is 1 CPU, 512 MiB: the smallest flavor holding that
    assert choose_flavor(FLAVORS, name="t1.micro", cpu=None, ram_mib=None).name == "small"


def test_flavor_unknown_name_lists_flavors():
    with pytest.raises(NotFound) as e:
        choose_flavor(FLAVORS, name="huge", cpu=None, ram_mib=None)
    assert "tiny (1 CPU, 128 MiB)" in (e.value.hint or "")


def test_flavor_nothing_fits():
    with pytest.raises(NotFound, match="no flavor has 8 CPU"):
        choose_flavor(FLAVORS, name=None, cpu=8, ram_mib=None)


def test_site_config():
    site = SiteConfig.parse(
        '[sync]\nsubscribe = ["a@example.org:web", "MMZu9WvwKIro-rtBQfDk4PsKO7_"]\n'
        'retire = "delete"\n'
    )
    assert [str(r) for r in site.subscriptions] == [
        "a@example.org:web",
        "MMZu9WvwKIro-rtBQfDk4PsKO7_",
    ]
    assert site.retire == "delete" and site.visibility == "private"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sync]\nsubscribe = []\n", "subscribe lists nothing"),
        ('[sync]\nsubscribe = ["a@b.org:x"]\nretire = "burn"\n', "retire must be hide or delete"),
        ('[sync]\nsubscribe = ["a@b.org:x"]\nvisibility = "all"\n', "visibility must be"),
        ('[sync]\nsubscribe = ["a@b.org:x"]\nretyre = "hide"\n', "unknown key"),
        ('[sink]\nsubscribe = ["a@b.org:x"]\n', "unknown table"),
        ('[sync]\nsubscribe = ["no spaces allowed"]\n', "neither a Marketplace ID"),
        ("[sync\n", "site config"),
    ],
    ids=["empty", "retire", "visibility", "misspelt-key", "misspelt-table", "bad-ref", "toml"],
)
def test_site_config_refused(text: str, message: str):
    """A misspelt option is an error, never a silently weaker sync."""
    with pytest.raises(InputError, match=message):
        SiteConfig.parse(text)


def test_cloud_errors_are_one_line_naming_the_cause():
    from openstack import exceptions as ox

    quota = ox.HttpException(
        message="Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"
    )
    err = classify(quota, "create server web1")
    assert isinstance(err, QuotaExceeded)
    assert str(err).startswith("create server web1: quota exceeded: Quota exceeded for instances")
    host = classify(
        ox.ResourceFailure("No valid host was found. There are not enough hosts"),
        "server web1 failed",
    )
    assert isinstance(host, NoValidHost) and "\n" not in str(host)


def test_sync_item_line():
    item = SyncItem(Action.KEEP, "MMZu9WvwKIro-rtBQfDk4PsKO7_", "a@b.org:web", "g-1")
    assert item.line() == "keep      MMZu9WvwKIro-rtBQfDk4PsKO7_ a@b.org:web glance g-1"


def test_cli_launch_cloud_refuses_local_only_options(cli):
    r = cli("launch", "--cloud", "x", "--volatile-disk", "2", "--accel", "tcg", "ID")
    assert r.exit_code == 2
    assert r.stderr.splitlines()[0] == (
        "imagekit: error: --volatile-disk, --accel: not available with --cloud"
    )


def test_cli_launch_cloud_needs_name(cli):
    r = cli("launch", "--cloud", "x", "ID")
    assert r.exit_code == 2
    assert r.stderr.splitlines()[0] == "imagekit: error: launch --cloud needs --name for the server"


def test_cli_unknown_cloud_is_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "clouds.yaml"))
    (tmp_path / "clouds.yaml").write_text("clouds: {}\n")
    r = cli("instances", "--cloud", "nosuchcloud")
    assert r.exit_code == 2
    assert r.stderr.startswith("imagekit: error: cloud configuration: ")
    assert "nosuchcloud" in r.stderr.splitlines()[0]


def test_cli_sync_without_site_config(cli):
    r = cli("sync", "--cloud", "x")
    assert r.exit_code == 2
    assert r.stderr.splitlines()[0] == "imagekit: error: no site config: nothing to subscribe to"


def test_duration():
    from imagekit.cli.cloud_cmd import parse_duration

    assert parse_duration("4h") == 14400
    assert parse_duration("30m") == 1800
    assert parse_duration("90") == 90
    with pytest.raises(InputError):
        parse_duration("soon")


def test_compute_api_too_old_is_one_line():
    """A Nova that cannot make servers without a NIC is refused before anything is made."""
    from imagekit.cloud.connection import Cloud
    from imagekit.cloud.errors import CloudError

    class Endpoint:
        max_microversion = (2, 36)

    class Compute:
        def get_endpoint_data(self) -> Endpoint:
            return Endpoint()

    class Conn:
        compute = Compute()

    with pytest.raises(CloudError) as e:
        Cloud("old", Conn()).check_compute_version()
    assert str(e.value) == (
        "cloud old: the compute API speaks up to 2.36; servers without a network interface "
        "need 2.37"
    )
