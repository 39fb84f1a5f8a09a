"""harvest.backends.pool.LazyThreadPool: the readers' fan-out, started on first use."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from harvest.backends.pool import LazyThreadPool


def _thread_name(_: object) -> str:
    return threading.current_thread().name


def test_one_item_runs_inline_and_starts_no_thread() -> None:
    pool = LazyThreadPool(4, "t-read")
    assert pool.map(_thread_name, [0]) == [threading.current_thread().name]
    assert pool._pool is None


def test_items_run_on_named_threads_in_order_and_close_restarts() -> None:
    pool = LazyThreadPool(3, "t-read")
    assert pool.map(lambda x: x * x, list(range(10))) == [x * x for x in range(10)]
    names = pool.map(_thread_name, list(range(6)))
    assert all(n.startswith("t-read") for n in names)
    pool.close()
    assert pool._pool is None
    assert pool.map(lambda x: -x, [1, 2]) == [-1, -2]  # a closed pool starts again
    pool.close()
    pool.close()  # twice is fine


def test_size_one_never_starts_threads() -> None:
    pool = LazyThreadPool(1, "t-read")
    assert set(pool.map(_thread_name, [1, 2, 3])) == {threading.current_thread().name}
    assert pool._pool is None


def test_first_use_from_many_threads_starts_one_pool() -> None:
    pool = LazyThreadPool(2, "t-read")
    barrier = threading.Barrier(8)
    seen: list[object] = []

    def use(_: int) -> None:
        barrier.wait()
        pool.map(lambda x: x, [1, 2, 3])
        seen.append(pool._pool)

    with ThreadPoolExecutor(8) as outer:
        list(outer.map(use, range(8)))
    assert len({id(p) for p in seen}) == 1
    pool.close()
