"""POSIX sh variable files (``KEY='value'``): every value stays data when sourced."""

from __future__ import annotations

from collections.abc import Iterable

from ._spec import ContextError


def sh_quote(value: str) -> str:
    """``value`` in single quotes, each ``'`` written as ``'\\''``: no expansion of ``$``,
    backquotes or backslashes, newlines kept, in any POSIX sh."""
    if "\x00" in value:
        raise ContextError("NUL cannot be carried in a shell variable")
    return "'" + value.replace("'", "'\\''") + "'"


def sh_assignments(pairs: Iterable[tuple[str, str]], *, header: str) -> bytes:
    """A sourceable file: a comment header, then ``NAME='value'`` lines."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines += [f"{name}={sh_quote(value)}" for name, value in pairs]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def merge_variables(
    own: list[tuple[str, str]], user: Iterable[tuple[str, str]], scheme: str
) -> list[tuple[str, str]]:
    """The scheme's variables followed by the user's; a user variable may not redefine one
    the scheme sets from a dedicated option (say --hostname instead of --var HOSTNAME=)."""
    taken = {n for n, _ in own}
    out = list(own)
    for name, value in user:
        if name in taken:
            raise ContextError(
                f"{scheme}: variable {name} is set by imagekit; "
                "use the dedicated option instead of --var"
            )
        out.append((name, value))
    return out
