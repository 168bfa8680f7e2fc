"""Timing child processes: wall seconds and peak memory, as the benchmarks report them."""

from __future__ import annotations

import subprocess
import sys

# Linux carries a process's peak RSS over fork and exec, so a child of this (large) script would
# report at least the script's own size. A small launcher starts the command instead and reports
# its wall time and peak, from os.wait4.
_LAUNCHER = """
import os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status))
"""


def run(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS in MiB of one run of `command`; fails loudly if it fails."""
    result = subprocess.run([sys.executable, "-c", _LAUNCHER, *command], capture_output=True, text=True, check=True)
    seconds, peak, status = result.stdout.split()
    if int(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr}")
    return float(seconds), float(peak)
