"""Timing child processes: wall seconds and peak memory, as the benchmarks report them."""

from __future__ import annotations

import os
import subprocess
import time


def run(command: list[str], stdin: str | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS in MiB (from os.wait4) of one child process; fails loudly if it fails."""
    start = time.perf_counter()
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as source:
        process = subprocess.Popen(command, stdin=source, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{process.stderr.read().decode()}")
    return seconds, usage.ru_maxrss / 1024
