"""Ctrl-C during training: the first asks training to stop and keep its best weights, the second aborts.

Signals reach only the main thread; elsewhere (a notebook's worker, a server) this does nothing
and Ctrl-C keeps its usual meaning.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class StopRequest:
    """Callable flag polled by the training loop: True once the user has pressed Ctrl-C."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested


@contextmanager
def first_interrupt_stops() -> Iterator[StopRequest]:
    """Within the block, the first SIGINT sets the flag; a second raises KeyboardInterrupt as usual."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum, frame) -> None:
        request.requested = True
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, previous)
