"""Site policy: rules, composition, filters, the TOML format and StratusLab's policy.cfg."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from imagekit.entry import Checksum, Endorsement, Endorser, Entry, entry_to_bytes
from imagekit.errors import Deprecated, Expired, InputError, PolicyRefused
from imagekit.image.digests import DigestAlgorithm
from imagekit.image.identifier import sha1_to_id
from imagekit.policy.rules import (
    AllOf,
    Listed,
    ListKind,
    MinDigest,
    NotDeprecated,
    NotExpired,
    Policy,
    TrustedCertFor,
    UnsafeAcceptAll,
    default_policy,
    load_policy,
    parse_policy_toml,
    parse_stratuslab_policy,
)
from imagekit.signing.trust import TrustStore
from imagekit.signing.verify import verify_entry

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@dataclasses.dataclass(frozen=True)
class Subject:
    """What rules see (VerifiedEntry has the same two attributes)."""

    entry: Any
    certificate: Any = None


def make(
    *,
    sha1: str | None = None,
    email: str = "jane.tester@example.org",
    algorithms: tuple[str, ...] = ("SHA-1", "SHA-256"),
    valid: datetime | None = NOW + timedelta(days=1),
    deprecated: str | None = None,
    seed: str = "x",
    subject: str | None = None,
    certificate: Any = None,
) -> Subject:
    sha1 = sha1 or hashlib.sha1(seed.encode()).hexdigest()
    sums = [Checksum("SHA-1", sha1)]
    if "SHA-256" in algorithms:
        sums.append(Checksum("SHA-256", hashlib.sha256(seed.encode()).hexdigest()))
    if "SHA-512" in algorithms:
        sums.append(Checksum("SHA-512", hashlib.sha512(seed.encode()).hexdigest()))
    endorser = Endorser(email, subject or f"CN=Someone,EMAILADDRESS={email}", "CN=Some CA")
    entry = Entry(
        identifier=sha1_to_id(sha1),
        bytes=1,
        checksums=tuple(sums),
        endorsement=Endorsement(NOW - timedelta(days=1), endorser),
        valid=valid,
        deprecated=deprecated,
    )
    return Subject(entry, certificate)


def test_empty_allof_refuses():
    with pytest.raises(PolicyRefused, match="no rules"):
        AllOf().check(make(), now=NOW)
    assert not Policy(AllOf()).is_allowed(make(), now=NOW)


def test_default_policy_accepts_a_fresh_sha256_entry():
    default_policy().check(make(), now=NOW)


def test_expired_entry_refused_as_expired():
    with pytest.raises(Expired):
        default_policy().check(make(valid=NOW - timedelta(seconds=1)), now=NOW)


def test_deprecated_entry_refused_as_deprecated_even_with_empty_reason():
    with pytest.raises(Deprecated):
        default_policy().check(make(deprecated=""), now=NOW)
    with pytest.raises(Deprecated, match="use v2"):
        NotDeprecated().check(make(deprecated="use v2"), now=NOW)


def test_min_digest_refuses_sha1_only_entry():
    with pytest.raises(PolicyRefused, match="SHA-256 or stronger"):
        default_policy().check(make(algorithms=("SHA-1",)), now=NOW)


def test_digest_algorithms_are_those_meeting_the_floor():
    subject = make(algorithms=("SHA-1", "SHA-256", "SHA-512"))
    # one digest meeting the floor is computed on the bytes, the cheapest that qualifies
    assert default_policy().digest_algorithms(subject.entry) == [DigestAlgorithm.SHA256]
    only_512 = make(algorithms=("SHA-1", "SHA-512"))
    assert default_policy().digest_algorithms(only_512.entry) == [DigestAlgorithm.SHA512]
    strict = Policy(AllOf(MinDigest("sha512")))
    assert strict.digest_algorithms(subject.entry) == [DigestAlgorithm.SHA512]
    with pytest.raises(PolicyRefused):
        strict.check(make(algorithms=("SHA-1", "SHA-256")), now=NOW)


def test_endorser_lists_match_email_case_insensitively_or_dn():
    allowed = Listed.of(ListKind.ENDORSERS, ["Jane.Tester@Example.org"], allow=True)
    allowed.check(make(), now=NOW)
    with pytest.raises(PolicyRefused, match="not on the allowed list"):
        allowed.check(make(email="mallory@example.org"), now=NOW)
    by_dn = Listed.of(
        ListKind.ENDORSERS, ["CN=Someone, EMAILADDRESS=jane.tester@example.org"], allow=True
    )
    by_dn.check(make(), now=NOW)
    with pytest.raises(PolicyRefused, match="denied"):
        Listed.of(ListKind.ENDORSERS, ["jane.tester@example.org"], allow=False).check(
            make(), now=NOW
        )


@pytest.mark.parametrize(
    "written",
    [
        pytest.param("CN = Hacker,O=Evil", id="spaces-around-equals"),
        pytest.param("CN=Hacker,  O=Evil ", id="spaces-between-rdns"),
        pytest.param("cn=hacker,o=evil", id="lower-case"),
        pytest.param("2.5.4.3=Hacker,2.5.4.10=Evil", id="oids"),
        pytest.param("OID.2.5.4.3=Hacker,O=Evil", id="oid-prefix"),
        pytest.param("CN=#0c064861636b6572,O=Evil", id="hex-der-value"),
        pytest.param("CN=Hack\\65r,O=Evil", id="escaped-hex-character"),
        pytest.param('CN="Hacker",O=Evil', id="quoted-value"),
        pytest.param("CN=Hacker,O=  Evil", id="leading-value-space"),
    ],
)
def test_denied_dn_written_another_way_refused(written: str):
    hacker = make(email="hacker@evil.example", subject=written)
    with pytest.raises(PolicyRefused, match="denied"):
        Listed.of(ListKind.ENDORSERS, ["CN=Hacker,O=Evil"], allow=False).check(hacker, now=NOW)
    with pytest.raises(PolicyRefused, match="not on the allowed list"):
        Listed.of(ListKind.ENDORSERS, ["CN=Jane,O=Example"], allow=True).check(hacker, now=NOW)
    Listed.of(ListKind.ENDORSERS, [written], allow=True).check(
        make(email="x@example.org", subject="CN=Hacker,O=Evil"), now=NOW
    )


def test_denied_dn_matches_the_certificate_subject():
    from tests.plugins.signing import make_cert

    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evil"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Hacker"),
        ]
    )
    _, cert = make_cert(name)
    assert cert.subject.rfc4514_string() == "CN=Hacker,O=Evil"
    hacker = make(email="hacker@evil.example", subject="CN=Someone", certificate=cert)
    with pytest.raises(PolicyRefused, match="denied"):
        Listed.of(ListKind.ENDORSERS, ["CN=Hacker, O=Evil"], allow=False).check(hacker, now=NOW)


def test_malformed_dn_in_policy_is_input_error():
    with pytest.raises(InputError, match="not a distinguished name"):
        Listed.of(ListKind.ENDORSERS, ["CN=Hacker,O"], allow=False)


def test_id_lists():
    s = make()
    Listed.of(ListKind.IMAGES, [s.entry.identifier], allow=True).check(s, now=NOW)
    with pytest.raises(PolicyRefused):
        Listed.of(ListKind.IMAGES, ["MMZu9WvwKIro-rtBQfDk4PsKO7_"], allow=True).check(s, now=NOW)
    with pytest.raises(PolicyRefused, match="denied"):
        Listed.of(ListKind.IMAGES, [s.entry.identifier], allow=False).check(s, now=NOW)


def test_sha1_denied_compares_numerically():
    s = make(sha1="0" + hashlib.sha1(b"q").hexdigest()[1:])
    stripped = s.entry.sha1.lstrip("0")
    with pytest.raises(PolicyRefused, match="denied"):
        Listed.of(ListKind.SHA1, [stripped.upper()], allow=False).check(s, now=NOW)


def test_filter_rejects_consecutive_entries_and_leaves_input_alone():
    """StratusLab removed rejected entries from the list it iterated, so of two consecutive
    rejected entries the second was skipped (and kept)."""
    bad = [make(email="hackers@example.org", seed=str(i)) for i in range(4)]
    good = [make(seed="good1"), make(seed="good2")]
    entries = [bad[0], bad[1], good[0], bad[2], bad[3], good[1]]
    before = list(entries)
    policy = Policy(
        AllOf(Listed.of(ListKind.ENDORSERS, ["hackers@example.org"], allow=False), NotExpired())
    )
    assert policy.filter(entries, now=NOW) == good
    assert entries == before
    accepted, rejected = policy.partition(entries, now=NOW)
    assert accepted == good
    assert [r.subject for r in rejected] == bad
    assert all(isinstance(r.reason, PolicyRefused) for r in rejected)


def test_unsafe_accept_all_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="imagekit.policy.rules"):
        rule = UnsafeAcceptAll()
    assert "UnsafeAcceptAll" in caplog.text
    rule.check(make(valid=NOW - timedelta(days=9)), now=NOW)


# --- StratusLab policy.cfg -----------------------------------------------------------


def test_stratuslab_policy_cfg_imported(asset):
    policy = load_policy(asset("stratuslab/policy.cfg"))
    assert policy.allow_sha1_signatures
    listed = make(sha1="c319bbd5afc0a22ba3eaed0507c39383ec28eeff")  # MMZu9WvwKIro-rtBQfDk4PsKO7_
    policy.check(listed, now=NOW)
    # a whitelisted endorser with trailing spaces in the file still matches
    policy.check(
        make(
            sha1="c319bbd5afc0a22ba3eaed0507c39383ec28eeff", email="Konstantin.Skaburskas@cern.ch"
        ),
        now=NOW,
    )
    with pytest.raises(PolicyRefused, match="not on the allowed list"):
        policy.check(
            make(sha1="c319bbd5afc0a22ba3eaed0507c39383ec28eeff", email="someone@else.org"), now=NOW
        )
    with pytest.raises(PolicyRefused, match=r"image .* is not on the allowed list"):
        policy.check(make(), now=NOW)
    # imagekit's additions apply to imported policies too
    with pytest.raises(Expired):
        policy.check(
            make(sha1="c319bbd5afc0a22ba3eaed0507c39383ec28eeff", valid=NOW - timedelta(days=1)),
            now=NOW,
        )


def test_stratuslab_blacklists(asset):
    text = asset("stratuslab/policy.cfg").read_text()
    text = text.replace("whitelistimages=", "whitelistimagesX=")  # drop the ID whitelist
    policy = parse_stratuslab_policy(text)
    with pytest.raises(PolicyRefused, match="denied"):
        policy.check(make(sha1="639ac4915da045efa809bd02b2609d9d3f932e85"), now=NOW)
    policy.check(make(), now=NOW)


def test_stratuslab_policy_garbage_is_input_error():
    with pytest.raises(InputError):
        parse_stratuslab_policy("whitelistendorsers = a\n")


# --- TOML ----------------------------------------------------------------------------


def test_toml_policy_round(tmp_path: Path):
    path = tmp_path / "policy.toml"
    path.write_text(
        '[endorsers]\nallow = ["jane.tester@example.org"]\n'
        '[images]\ndeny = ["GOaxJFdoEXvqAm9ArJgnZ0_GGG"]\n'
        '[digests]\nminimum = "SHA-512"\n'
    )
    policy = load_policy(path)
    assert not policy.allow_sha1_signatures
    policy.check(make(algorithms=("SHA-1", "SHA-512")), now=NOW)
    with pytest.raises(PolicyRefused, match="SHA-512"):
        policy.check(make(), now=NOW)
    with pytest.raises(Expired):
        policy.check(make(algorithms=("SHA-1", "SHA-512"), valid=NOW), now=NOW)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[endorser]\nallow = []\n", "unknown table"),
        ("[endorsers]\nalow = []\n", "unknown key 'alow'"),
        ('[endorsers]\nallow = "a@b.c"\n', "list of strings"),
        ('[digests]\nminimum = "MD5"\n', "weaker than SHA-256"),
        ("[unsafe]\nallow-expired = 1\n", "true or false"),
        ("[endorsers\n", "policy"),
    ],
    ids=["table", "key", "type", "weak-digest", "unsafe-type", "syntax"],
)
def test_toml_policy_refuses_bad_files(text: str, message: str):
    with pytest.raises(InputError, match=message):
        parse_policy_toml(text)


def test_toml_unsafe_switches_are_named_and_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="imagekit.policy.rules"):
        policy = parse_policy_toml("[unsafe]\nallow-expired = true\nallow-deprecated = true\n")
    assert "UNSAFE allow-expired" in caplog.text
    policy.check(make(valid=NOW - timedelta(days=1), deprecated="old"), now=NOW)


# --- pinned certificates per endorser (real signatures) ------------------------------


def test_trusted_cert_for_endorser_refuses_another_certificate(
    signer, make_signer, sign_xml, image_entry, tmp_path: Path
):
    impostor = make_signer(email=signer.email, name="Impostor", key_type="rsa")
    trust = TrustStore.from_paths([signer.cert_path, impostor.cert_path])
    draft = entry_to_bytes(image_entry(b"payload"))
    now = datetime.now(UTC)
    genuine = verify_entry(sign_xml(draft), trust, now=now)
    forged = verify_entry(sign_xml(draft, signer=impostor), trust, now=now)
    assert genuine.entry.endorser_email == forged.entry.endorser_email
    policy = Policy(
        AllOf(
            TrustedCertFor(signer.email, [signer.cert_path.read_bytes()]),
            *default_policy().rule.rules,
        )
    )
    policy.check(genuine)
    with pytest.raises(PolicyRefused, match="not signed with a certificate the policy trusts"):
        policy.check(forged)
    # and through the TOML form, certificates relative to the policy file
    (tmp_path / "pins").mkdir()
    (tmp_path / "pins" / "me.pem").write_bytes(signer.cert_path.read_bytes())
    path = tmp_path / "p.toml"
    path.write_text(f'[trusted-certificates]\n"{signer.email}" = ["pins/me.pem"]\n')
    toml_policy = load_policy(path)
    toml_policy.check(genuine)
    with pytest.raises(PolicyRefused):
        toml_policy.check(forged)


def test_stratuslab_policy_converts_to_equivalent_toml(asset, cli, tmp_path: Path):
    cfg = asset("stratuslab/policy.cfg")
    out = tmp_path / "policy.toml"
    result = cli("policy", "import", cfg, "-o", out)
    assert result.exit_code == 0, result.stderr
    imported, direct = load_policy(out), load_policy(cfg)
    assert imported.describe() == direct.describe()
    assert imported.allow_sha1_signatures and direct.allow_sha1_signatures
    subjects = [
        make(sha1="c319bbd5afc0a22ba3eaed0507c39383ec28eeff"),
        make(),
        make(sha1="c319bbd5afc0a22ba3eaed0507c39383ec28eeff", email="x@y.org"),
    ]
    assert [imported.is_allowed(s, now=NOW) for s in subjects] == [True, False, False]
    assert [direct.is_allowed(s, now=NOW) for s in subjects] == [True, False, False]
    shown = cli("policy", "show", "--policy", out)
    assert shown.exit_code == 0 and "SHA-1 signatures accepted" in shown.stdout
