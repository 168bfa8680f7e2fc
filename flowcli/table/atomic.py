"""Write output files so that a crash leaves either the old file, the new file, or nothing.

Every file flowcli writes goes to a temporary file in the destination's folder, is fsynced,
given the mode a plain `open()` would give it, and renamed into place.
"""

from __future__ import annotations

import glob
import os
import tempfile
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
    # The process id in the name lets `finally` find the file even when Ctrl-C lands between
    # its creation and the assignment of its name.
    prefix = f".{destination.name}.{os.getpid()}."
    temporary = None
    try:
        try:
            descriptor, name = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=destination.parent)
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
        for leftover in [temporary] if temporary else destination.parent.glob(glob.escape(prefix) + "*.part"):
            leftover.unlink(missing_ok=True)


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
