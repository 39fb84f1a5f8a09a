"""The one progress bar every long stage shows: on stderr, so that stdout keeps only results.

A bar reads ``label  ━━━━━━━  n/total  elapsed  info``, where ``info`` is free text a stage
keeps up to date (fetch: chips/s and kept / rejected / failed counts). It stays on screen when
the work ends (its last state is the stage's record in a log), and it is drawn on standard
error like the progress of pip, geedim's downloads or tqdm, so ``harvest ... > out.txt`` or
``| tail -1`` sees only the command's own output. A disabled bar does nothing, so that callers
need no ``if progress`` around each update.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any


class ProgressBar:
    """A rich progress bar on stderr, or nothing when ``enabled`` is False.

    Use it as a context manager (or call :meth:`close`); :meth:`advance` and :meth:`update`
    are cheap no-ops on a disabled bar.
    """

    def __init__(self, label: str, total: int | None, *, enabled: bool = True) -> None:
        self._bar: Any = None
        self._task: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=Console(stderr=True),
        )
        self._task = self._bar.add_task(label, total=total, info="")
        self._bar.start()

    @property
    def enabled(self) -> bool:
        """Whether the bar is drawn."""
        return self._bar is not None

    def advance(self, n: int = 1, info: str | None = None) -> None:
        """Move ``n`` steps on (and replace the info text when given)."""
        if self._bar is None:
            return
        fields = {} if info is None else {"info": info}
        self._bar.update(self._task, advance=n, **fields)

    def update(
        self, *, completed: int | None = None, total: int | None = None, info: str | None = None
    ) -> None:
        """Set the steps done, the total (work found on the way) or the info text."""
        if self._bar is None:
            return
        changes: dict[str, Any] = {}
        if completed is not None:
            changes["completed"] = completed
        if total is not None:
            changes["total"] = total
        if info is not None:
            changes["info"] = info
        self._bar.update(self._task, **changes)

    @property
    def total(self) -> int:
        """The current total (0 for a disabled bar)."""
        if self._bar is None:
            return 0
        return int(self._bar.tasks[0].total or 0)

    def close(self) -> None:
        """Stop drawing (leaves the last state on screen); safe to call twice."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class Progress:
    """How a stage shows its work: the progress object every ``stages.*.run`` takes.

    A stage asks it for one :class:`ProgressBar` per piece of work (:meth:`bar`); a disabled
    ``Progress`` hands out bars that draw nothing. Library callers pass ``Progress(False)`` (or
    just ``False``); the CLI passes ``Progress(True)`` unless ``--no-progress``.

    Attributes:
        enabled: Whether bars are drawn (on stderr).
    """

    enabled: bool = True

    def bar(self, label: str, total: int | None) -> ProgressBar:
        """A bar for ``total`` steps of ``label`` (drawn only when enabled)."""
        return ProgressBar(label, total, enabled=self.enabled)

    @classmethod
    def of(cls, value: bool | Progress) -> Progress:
        """``value`` as a Progress: a bool means on or off."""
        return value if isinstance(value, Progress) else cls(bool(value))


NO_PROGRESS = Progress(False)
"""Draws nothing: the default of every stage called as a library."""
