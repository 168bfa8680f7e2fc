"""Write output files so that a crash leaves either the old file, the new file, or nothing.

Every file flowcli writes goes to a temporary file in the destination's folder, is fsynced,
given the mode a plain `open()` would give it, and renamed into place.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from flowcli.errors import OutputError


def check_destination(destination: Path, *, force: bool, inputs: Iterable[str | Path] = ()) -> None:
    """Refuse a destination that is an input, lies in a missing or read-only folder, is not a
    regular file (a folder, a device, a pipe), or exists without `force`."""
    for source in inputs:
        if str(source) != "-" and Path(source).exists() and destination.exists():
            if os.path.samefile(source, destination):
                raise OutputError(f"{destination}: the output would overwrite the input; choose another -o path")
    if not destination.parent.is_dir():
        raise OutputError(f"{destination}: folder {destination.parent} does not exist; create it or choose another -o path")
    if destination.is_dir():
        raise OutputError(f"{destination}: is a folder; give a file path with -o")
    if destination.exists() and not destination.is_file():
        raise OutputError(f"{destination}: is not a regular file (a device or a pipe?); flowcli replaces only files")
    if not os.access(destination.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{destination}: folder {destination.parent} is not writable; choose another -o path")
    if destination.exists() and not force:
        raise OutputError(f"{destination}: already exists; pass --force to replace it")


@contextmanager
def atomic_path(destination: Path, *, force: bool, inputs: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Yield a temporary path beside `destination`; when the block succeeds, it becomes `destination`."""
    destination = Path(destination)
    check_destination(destination, force=force, inputs=inputs)
    temporary = None
    try:
        try:
            with _interrupts_held():  # so that `finally` always knows the file it must remove
                descriptor, name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
                temporary = Path(name)
            os.close(descriptor)
            yield temporary
            _fsync(temporary)
            # mkstemp makes 0600 files; give the file the mode the user's umask would give it.
            os.chmod(temporary, 0o666 & ~_umask())
            os.replace(temporary, destination)
        except OSError as error:  # a full disk, a folder that turned read-only
            if isinstance(error, BrokenPipeError):
                raise
            reason = error.strerror or type(error).__name__
            raise OutputError(f"{destination}: cannot write ({reason}); nothing was written there") from None
        _fsync_folder(destination.parent)
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) back until the block ends, where the platform allows it."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX only; a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
