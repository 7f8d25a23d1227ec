"""Numbers and dates as people read them; the exact value stays at hand (``title``)."""

from __future__ import annotations

from datetime import UTC, datetime

_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(n: int | None) -> str:
    """``1536`` -> ``1.5 KiB``; binary units, one decimal under 10, none above."""
    if n is None:
        return ""
    value = float(n)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            if unit == "bytes":
                return f"{int(value)} bytes"
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


_STEPS = (
    (365 * 86400, "year"),
    (30 * 86400, "month"),
    (7 * 86400, "week"),
    (86400, "day"),
    (3600, "hour"),
    (60, "minute"),
)


def relative_time(text: str | None, now: datetime) -> str:
    """``2026-11-28T10:00:00Z`` -> ``3 days ago`` / ``in 29 days`` / ``just now``."""
    when = parse_time(text)
    if when is None:
        return text or ""
    seconds = (when - now).total_seconds()
    span = abs(seconds)
    for size, unit in _STEPS:
        if span >= size:
            n = int(span // size)
            phrase = f"{n} {unit}{'' if n == 1 else 's'}"
            return f"in {phrase}" if seconds > 0 else f"{phrase} ago"
    return "just now"
