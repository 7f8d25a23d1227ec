"""The Marketplace ID codec (DESIGN 4.2)."""

from __future__ import annotations

import base64
import hashlib
import random
import re

import pytest

from imagekit.errors import InputError
from imagekit.image.identifier import id_to_sha1, is_identifier, same_sha1, sha1_to_id

WORKED_EXAMPLES = [
    ("c319bbd5afc0a22ba3eaed0507c39383ec28eeff", "MMZu9WvwKIro-rtBQfDk4PsKO7_"),
    ("972a1a11f19934401291cc99117ec614933374ce", "JcqGhHxmTRAEpHMmRF-xhSTM3TO"),
    ("da39a3ee5e6b4b0d3255bfef95601890afd80709", "No5o-5ea0sNMlW_75VgGJCv2AcJ"),
]


@pytest.mark.parametrize(("sha1", "identifier"), WORKED_EXAMPLES, ids=["c319", "972a", "empty"])
def test_worked_examples_encode(sha1: str, identifier: str) -> None:
    assert sha1_to_id(sha1) == identifier


@pytest.mark.parametrize(("sha1", "identifier"), WORKED_EXAMPLES, ids=["c319", "972a", "empty"])
def test_worked_examples_decode(sha1: str, identifier: str) -> None:
    assert id_to_sha1(identifier) == sha1


def test_empty_input_id_is_sha1_of_nothing() -> None:
    assert sha1_to_id(hashlib.sha1(b"").hexdigest()) == "No5o-5ea0sNMlW_75VgGJCv2AcJ"


def _reference_id(digest: bytes) -> str:
    """DESIGN's first definition: the integer in base 64, left-padded with A to 27."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    n = int.from_bytes(digest, "big")
    digits = ""
    while n:
        n, r = divmod(n, 64)
        digits = alphabet[r] + digits
    return digits.rjust(27, "A")


def test_round_trip_on_random_digests() -> None:
    rng = random.Random(20240601)
    samples = [rng.randbytes(20) for _ in range(2000)]
    samples += [bytes(20), b"\xff" * 20, b"\x00" * 19 + b"\x01", b"\x80" + bytes(19)]
    for digest in samples:
        identifier = sha1_to_id(digest.hex())
        assert len(identifier) == 27
        assert identifier == _reference_id(digest)
        assert is_identifier(identifier)
        assert id_to_sha1(identifier) == digest.hex()


def test_encode_equals_base64url_of_zero_byte_and_digest() -> None:
    digest = hashlib.sha1(b"imagekit").digest()
    expected = base64.urlsafe_b64encode(b"\0" + digest).decode()[1:]
    assert sha1_to_id(digest.hex()) == expected


def test_encode_accepts_upper_case_and_stripped_leading_zeros() -> None:
    digest = "000f" + "ab" * 18
    assert sha1_to_id(digest.lstrip("0")) == sha1_to_id(digest)
    assert sha1_to_id(digest.upper()) == sha1_to_id(digest)
    assert id_to_sha1(sha1_to_id(digest.lstrip("0"))) == digest  # always 40 digits back


@pytest.mark.parametrize(
    "bad",
    ["", "xyz", "g" * 40, "a" * 41, "0x" + "a" * 38, "a b"],
    ids=["empty", "not-hex", "hex-letter-g", "41-digits", "0x-prefix", "space"],
)
def test_encode_rejects_non_sha1(bad: str) -> None:
    with pytest.raises(InputError, match="not a SHA-1"):
        sha1_to_id(bad)


@pytest.mark.parametrize("length", [0, 1, 26, 28, 40])
def test_decode_rejects_wrong_length(length: int) -> None:
    with pytest.raises(InputError, match=f"has {length} characters; expected 27"):
        id_to_sha1("A" * length)


@pytest.mark.parametrize(
    ("bad", "char", "position"),
    [
        ("MMZu9WvwKIro+rtBQfDk4PsKO7_", "+", 13),  # standard base64, not base64url
        ("MMZu9WvwKIro-rtBQfDk4PsKO7/", "/", 27),
        ("MMZu9WvwKIro-rtBQfDk4PsKO7=", "=", 27),
        ("MMZu9WvwKIro rtBQfDk4PsKO7_", " ", 13),
        ("MMZu9WvwKIro-rtBQfDk4PsKO7é", "é", 27),
    ],
    ids=["plus", "slash", "padding", "space", "non-ascii"],
)
def test_decode_rejects_character_outside_alphabet(bad: str, char: str, position: int) -> None:
    with pytest.raises(InputError, match=re.escape(f"has {char!r} at position {position};")):
        id_to_sha1(bad)
    assert not is_identifier(bad)


def test_decode_rejects_value_beyond_160_bits() -> None:
    # 27 digits hold 162 bits: a first digit of Q (16) or more cannot come from a SHA-1.
    assert id_to_sha1("P" + "_" * 26) == "f" * 40
    with pytest.raises(InputError, match="too large"):
        id_to_sha1("Q" + "A" * 26)
    assert not is_identifier("Q" + "A" * 26)


@pytest.mark.parametrize("value", [None, 27, b"MMZu9WvwKIro-rtBQfDk4PsKO7_"])
def test_is_identifier_is_false_for_non_text(value: object) -> None:
    assert not is_identifier(value)


def test_decode_rejects_bytes_with_input_error() -> None:
    with pytest.raises(InputError, match="must be text"):
        id_to_sha1(b"MMZu9WvwKIro-rtBQfDk4PsKO7_")  # type: ignore[arg-type]


def test_same_sha1_compares_numerically() -> None:
    sha1 = "00" + "1234567890abcdef" * 2 + "123456"
    assert len(sha1) == 40
    assert same_sha1(sha1, sha1.lstrip("0"))  # 38 digits
    assert same_sha1(sha1.upper(), sha1)
    assert same_sha1("0" + "f" * 39, "f" * 39)  # the 39-character case
    assert not same_sha1(sha1, "1" + sha1[1:])


def test_same_sha1_rejects_non_hex() -> None:
    with pytest.raises(InputError):
        same_sha1("xyz", "00")
