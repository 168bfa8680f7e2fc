"""Everything flowcli says on stderr: errors, warnings, the fit progress bar and its summary.

stdout is for data alone. The progress bar is drawn only when stderr is a terminal, on a
stderr console that leaves sys.stdout alone, and `quiet` silences all but errors.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from flowcli.errors import FlowcliWarning, OutputError

if TYPE_CHECKING:
    from flowcli.flow.train import EpochReport


def print_error(message: str) -> None:
    """One `error:` line on stderr (plain text: messages may hold brackets rich would eat)."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def print_note(message: str, *, quiet: bool) -> None:
    if not quiet:
        sys.stderr.write(f"{message}\n")
        sys.stderr.flush()


@contextmanager
def warnings_to_stderr(*, quiet: bool) -> Iterator[None]:
    """Show each FlowcliWarning as one `warning:` line on stderr (or not at all when quiet)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if quiet else "always", FlowcliWarning)
        original = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, FlowcliWarning):
                print_note(f"warning: {message}", quiet=quiet)
            else:
                original(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def every(*callbacks: Callable | None) -> Callable | None:
    """One callback that calls each of `callbacks` that is not None (None when none is)."""
    present = [callback for callback in callbacks if callback is not None]
    if not present:
        return None

    def call(*args) -> None:
        for callback in present:
            callback(*args)

    return call


@contextmanager
def epoch_log(path: Path | None) -> Iterator[Callable[[EpochReport], None] | None]:
    """A callback that appends each epoch to `path` as one JSON object per line (or None)."""
    if path is None:
        yield None
        return
    try:
        handle = open(path, "a", encoding="utf-8")
    except OSError as error:
        raise OutputError(f"{path}: cannot write the training log ({error.strerror}); choose another --log-json path") from None

    def on_epoch(report: EpochReport) -> None:
        handle.write(json.dumps(dataclasses.asdict(report)) + "\n")
        handle.flush()  # so that `tail -f` sees each epoch as it ends

    with handle:
        yield on_epoch


@contextmanager
def row_progress(verb: str, total: int | None, *, quiet: bool) -> Iterator[Callable[[int], None] | None]:
    """A callback taking each batch's row count, drawing rows, rows per second and (with a total)
    the time left; None when it should not show (not a terminal, or quiet)."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )


    progress = Progress(
        TextColumn(verb), BarColumn(), MofNCompleteColumn(), TextColumn("rows  {task.fields[rate]}"),
        TimeElapsedColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), redirect_stdout=False, redirect_stderr=False, transient=True,
    )
    task = progress.add_task(verb, total=total, rate="")

    def on_rows(rows: int) -> None:
        progress.advance(task, rows)
        state = progress.tasks[task]
        progress.update(task, rate=f"{state.completed / max(state.elapsed or 0, 1e-9):,.0f} rows/s")

    with progress:
        yield on_rows


@contextmanager
def fit_progress(*, quiet: bool) -> Iterator[Callable[[EpochReport], None] | None]:
    """A callback that draws the training progress bar, or None when it should not show."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("epoch {task.completed:>4.0f}/{task.total:.0f}"),
        BarColumn(),
        TextColumn("{task.fields[nll]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        redirect_stdout=False,
        redirect_stderr=False,
        transient=True,
    )
    task = None

    def on_epoch(report: EpochReport) -> None:
        nonlocal task
        total = report.epochs
        if report.max_time:
            # With a time cap, the bar is time: estimate how many epochs fit in it.
            total = min(total, max(report.epoch, round(report.epoch * report.max_time / max(report.elapsed, 1e-9))))
        nll = f"train {report.train_nll:.4f}  val {report.val_nll:.4f}  best {report.best_val_nll:.4f}"
        if task is None:
            task = progress.add_task("fit", total=total, nll=nll)
        progress.update(task, completed=report.epoch, total=total, nll=nll)

    with progress:
        yield on_epoch
