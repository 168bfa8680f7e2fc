"""Put a benchmark's table into its page under docs/benchmarks/, between the markers its script
owns, stamped with the date, the commit and the machine that produced it."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "docs" / "benchmarks"


def stamp(script: str) -> str:
    """`Written by SCRIPT on DATE at commit C on MACHINE.` (the commit gets `+` when the tree differs from it)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") + ("+" if git("status", "--porcelain", "--untracked-files=no") else "")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, Python {platform.python_version()}"
    return f"*Written by `{script}` on {datetime.date.today().isoformat()} at commit {commit} on {machine}.*"


def write_table(page: str, script: str, table: str) -> None:
    """Replace what lies between `<!-- SCRIPT writes the table below -->` and `<!-- end of SCRIPT -->`
    in docs/benchmarks/PAGE.md (page "README": the README) with the stamp and `table`."""
    path = ROOT / "README.md" if page == "README" else PAGES / f"{page}.md"
    text = path.read_text()
    start, end = f"<!-- {script} writes the table below -->", f"<!-- end of {script} -->"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        path.write_text(f"{before}{start}\n{stamp(script)}\n\n{table}\n{end}{rest.split(end, 1)[1]}")
