"""Sizes and dates as the catalogue prints them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from marketplace_server._humanize import human_size, relative_time

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "n, text",
    [
        (0, "0 bytes"),
        (1023, "1023 bytes"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (10 * 1024, "10 KiB"),
        (3 << 19, "1.5 MiB"),
        (2 << 30, "2.0 GiB"),
        (5 << 50, "5.0 PiB"),
    ],
)
def test_human_size(n: int, text: str) -> None:
    assert human_size(n) == text


@pytest.mark.parametrize(
    "when, text",
    [
        ("2026-12-01T11:59:30Z", "just now"),
        ("2026-12-01T11:59:00Z", "1 minute ago"),
        ("2026-12-01T09:00:00Z", "3 hours ago"),
        ("2026-11-28T12:00:00Z", "3 days ago"),
        ("2026-12-30T13:00:00Z", "in 4 weeks"),
        ("2028-01-01T00:00:00Z", "in 1 year"),
        ("not a date", "not a date"),
    ],
)
def test_relative_time(when: str, text: str) -> None:
    assert relative_time(when, NOW) == text
