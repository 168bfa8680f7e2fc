"""Ctrl-C during training: the first asks training to stop and keep its best weights, the second aborts.

Signals reach only the main thread; elsewhere (a notebook's worker, a server) this does nothing
and Ctrl-C keeps its usual meaning. Meant for a process that ends after the block, as the CLI.
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
        self.abortable = True  # until the output is written, a second Ctrl-C aborts

    def __call__(self) -> bool:
        return self.requested

    def written(self) -> None:
        """The output is complete: from now on Ctrl-C no longer aborts anything."""
        self.abortable = False


@contextmanager
def first_interrupt_stops() -> Iterator[StopRequest]:
    """Within the block, the first SIGINT sets the flag and a second raises KeyboardInterrupt,
    until `written()`. After a requested stop, later presses are ignored while the process exits."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def on_interrupt(signum, frame) -> None:
        if not request.requested:
            request.requested = True
        elif request.abortable:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN if request.requested else previous)
