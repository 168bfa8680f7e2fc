"""Put a benchmark's table into the README, between the markers its script owns."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def replace_in_readme(script: str, table: str) -> None:
    """Replace what lies between `<!-- SCRIPT writes the table below -->` and `<!-- end of SCRIPT -->`."""
    text = README.read_text()
    start, end = f"<!-- {script} writes the table below -->", f"<!-- end of {script} -->"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        README.write_text(f"{before}{start}\n{table}\n{end}{rest.split(end, 1)[1]}")
