"""Threads for row-wise work: chunks of rows computed side by side, and input read ahead.

Scoring and sampling are row-wise, and numpy and pyarrow release the GIL in their kernels, so
threads share the cores without copies. BLAS is held to one thread meanwhile, so that two levels
of threading do not fight over the cores and results do not depend on the thread count; and
chunks of a few thousand rows keep a conditioner's hidden activations in cache, which alone
makes the matmuls about 1.7× faster than whole batches of 65,536 rows.
"""

from __future__ import annotations

import ctypes
import functools
import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

CHUNK_ROWS = 8192
Result = TypeVar("Result")
Item = TypeVar("Item")


def threads() -> int:
    """The worker threads to use: FLOWCLI_THREADS when set, else the cores this process may use."""
    try:
        return max(1, int(os.environ.get("FLOWCLI_THREADS", "")))
    except ValueError:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def map_rows(function: Callable[[int, int], Result], rows: int, chunk_rows: int = CHUNK_ROWS) -> list[Result]:
    """[function(start, stop) for each chunk of range(rows)], in row order, computed in threads.

    An exception from a chunk propagates, the earliest chunk's first, so row numbers in error
    messages are those of the first bad row. Called from any thread but the main one (a Dask
    worker's, say), it computes the chunks in that thread alone, so that parallel callers do
    not multiply their threads by ours.
    """
    _keep_freed_memory()
    bounds = [(start, min(start + chunk_rows, rows)) for start in range(0, rows, chunk_rows)]
    nested = threading.current_thread() is not threading.main_thread()
    workers = 1 if nested else min(threads(), len(bounds))
    if not bounds:
        return []
    from threadpoolctl import threadpool_limits

    # BLAS on one thread even with one worker: a matmul split over threads sums in another order,
    # and results must not depend on the thread count.
    with threadpool_limits(limits=1, user_api="blas"):
        if workers == 1:
            return [function(start, stop) for start, stop in bounds]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda bound: function(*bound), bounds))


@functools.cache
def _keep_freed_memory() -> None:
    """Have glibc keep freed blocks of up to 32 MiB for reuse, rather than map them afresh.

    A chunk's arrays are a few MiB each. glibc maps such blocks from the OS and unmaps them
    when freed, so every chunk paid page faults for fresh memory: half of the time scoring took
    (measured: 690,000 page faults and 1.1 s of system time for 650,000 rows). glibc raises its
    thresholds by itself only after a larger block is freed; this sets them as that would.
    Elsewhere (macOS, musl) there is no `mallopt` and nothing changes.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 64 << 20)


def read_ahead(items: Iterator[Item], depth: int = 2) -> Iterator[Item]:
    """`items`, produced by a background thread up to `depth` ahead of the consumer, so that
    reading and parsing input overlap the work done on it. An exception in the producer is
    raised here, in its place in the sequence; closing this generator stops the producer."""
    handoff: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    end = object()

    def hand(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not hand(item):
                    return
            hand(end)
        except BaseException as error:  # noqa: BLE001  (handed to the consumer, which raises it)
            hand(_Failure(error))

    threading.Thread(target=produce, name="flowcli-read-ahead", daemon=True).start()
    try:
        while (item := handoff.get()) is not end:
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error
