"""A lazily started thread pool: what both readers fan their requests out with."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class LazyThreadPool:
    """A thread pool started on first use and stopped by :meth:`close`; thread-safe.

    What both readers fan their reads out with: a reader that never reads two things at once
    starts no thread, and readers used from several threads at once start one pool.
    """

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """``[fn(x) for x in items]``, on the pool when there are two or more items."""
        if len(items) <= 1 or self.size <= 1:
            return [fn(x) for x in items]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.size, thread_name_prefix=self.name)
            pool = self._pool
        return list(pool.map(fn, items))

    def close(self) -> None:
        """Stop the threads (a later :meth:`map` starts new ones)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
