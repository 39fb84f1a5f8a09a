"""What both readers share: a lazily started thread pool, and pickling by dataclass fields."""

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


class PicklesFields:
    """Mixin for a dataclass reader: pickles its fields only, rebuilds the rest on arrival.

    A reader goes to Dask workers by pickle; its pool, locks, caches and open handles stay in
    the process that made them and ``__post_init__`` makes fresh ones in the receiving process.
    """

    def __getstate__(self) -> dict[str, Any]:
        fields = getattr(self, "__dataclass_fields__", {})
        return {k: getattr(self, k) for k in fields}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__post_init__()  # type: ignore[attr-defined]
