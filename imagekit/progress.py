"""Progress is reported by callback; only the CLI draws bars.

Library functions that do long work take ``progress: Progress | None`` and call it with the
number of bytes (or items) just completed. ``ProgressBar`` is the CLI's rich-based drawing of
that, with rate and ETA, written to stderr so stdout stays data.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

Progress = Callable[[int], None]


class ProgressBar:
    """A context manager whose instance is a ``Progress`` callback.

    Silent when stderr is not a terminal (CI logs, pipes), so tests and scripts stay quiet.
    """

    def __init__(self, description: str, total: int | None, *, console: Console | None = None):
        # rich is imported here, not at the top: every library module imports ``Progress``,
        # and a command that draws no bar should not pay for loading rich.
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgress

        self._console = console or Console(stderr=True)
        self._bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self._console,
            transient=True,
            disable=not self._console.is_terminal,
        )
        self._task = self._bar.add_task(description, total=total)

    def __enter__(self) -> ProgressBar:
        self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bar.stop()

    def __call__(self, advance: int) -> None:
        self._bar.advance(self._task, advance)

    def set_total(self, total: int | None) -> None:
        self._bar.update(self._task, total=total)
