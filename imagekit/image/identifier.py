"""The 27-character Marketplace ID and its SHA-1 (DESIGN 4.2).

The ID is the image's SHA-1 read as a 160-bit big-endian integer, written in base 64 with
the alphabet ``A-Z a-z 0-9 - _`` (A = 0) and left-padded with ``A`` to 27 characters.
That is exactly base64url of one zero byte followed by the 20-byte digest (21 bytes, 28
characters, no padding), without its first character (always ``A``, the zero byte's top six
bits).
"""

from __future__ import annotations

import base64
import re

from ..errors import InputError

ID_LENGTH = 27
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_ID_RE = re.compile(r"[A-Za-z0-9_-]{27}")
_HEX_RE = re.compile(r"[0-9a-fA-F]{1,40}")
# 27 base-64 digits hold 162 bits; a SHA-1 has 160, so the first digit is below 16 (A-P).
_FIRST_DIGIT_MAX = 15

__all__ = ["ID_LENGTH", "id_to_sha1", "is_identifier", "same_sha1", "sha1_to_id"]


def _parse_hex(sha1_hex: str) -> int:
    text = sha1_hex.strip()
    if not _HEX_RE.fullmatch(text):
        raise InputError(f"not a SHA-1 value: {sha1_hex!r} (expected up to 40 hex digits)")
    return int(text, 16)


def sha1_to_id(sha1_hex: str) -> str:
    """The Marketplace ID of a SHA-1 given in hex (leading zeros may be stripped).

    Raises InputError if the value is not 1-40 hex digits.
    """
    digest = _parse_hex(sha1_hex).to_bytes(20, "big")
    return base64.urlsafe_b64encode(b"\0" + digest).decode("ascii")[1:]


def id_to_sha1(identifier: str) -> str:
    """The SHA-1 (40 lower-case hex digits) an ID stands for.

    Raises InputError naming the problem: wrong length, a character outside the alphabet, or
    a value too large for 160 bits.
    """
    if not isinstance(identifier, str):
        raise InputError(f"identifier must be text, not {type(identifier).__name__}")
    if len(identifier) != ID_LENGTH:
        raise InputError(
            f"identifier {identifier!r} has {len(identifier)} characters; expected {ID_LENGTH}"
        )
    for position, char in enumerate(identifier):
        if char not in _ALPHABET:
            raise InputError(
                f"identifier {identifier!r} has {char!r} at position {position + 1}; "
                "allowed are A-Z a-z 0-9 - _"
            )
    if _ALPHABET.index(identifier[0]) > _FIRST_DIGIT_MAX:
        raise InputError(
            f"identifier {identifier!r} is too large for a SHA-1 (first character must be A-P)"
        )
    raw = base64.urlsafe_b64decode("A" + identifier)
    return raw[1:].hex()


def is_identifier(s: object) -> bool:
    """True if ``s`` is a well-formed Marketplace ID (what ``id_to_sha1`` accepts)."""
    return (
        isinstance(s, str)
        and _ID_RE.fullmatch(s) is not None
        and _ALPHABET.index(s[0]) <= _FIRST_DIGIT_MAX
    )


def same_sha1(a_hex: str, b_hex: str) -> bool:
    """True if two hex SHA-1 values are the same number (case and leading zeros ignored).

    Raises InputError if either is not 1-40 hex digits.
    """
    return _parse_hex(a_hex) == _parse_hex(b_hex)
