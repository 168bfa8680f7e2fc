"""The README's CLI reference stays true to the app: every option is documented, and every
documented option exists."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from flowcli.cli import app

README = Path(__file__).resolve().parent.parent / "README.md"


def reference() -> str:
    text = README.read_text()
    return text[text.index("## CLI reference"):text.index("## Recipe")]


def options() -> dict[str, set[str]]:
    """Each command's options, every spelling of each (e.g. {'-o', '--output'})."""
    group = typer.main.get_command(app)
    return {name: [set(parameter.opts) for parameter in command.params if parameter.opts[0].startswith("-")]
            for name, command in group.commands.items()}


def test_every_option_of_every_command_is_documented():
    text = reference()
    undocumented = [
        f"{command} {sorted(spellings)}"
        for command, parameters in options().items()
        for spellings in parameters
        if not any(re.search(rf"(?<![\w-]){re.escape(spelling)}(?![\w-])", text) for spelling in spellings)
    ]
    assert not undocumented, f"options missing from the README's CLI reference: {undocumented}"


def test_every_documented_option_exists():
    known = {spelling for parameters in options().values() for spellings in parameters for spelling in spellings}
    known |= {"--help", "-h", "--version"}
    documented = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", reference()))
    assert documented <= known, f"the README documents options the app lacks: {sorted(documented - known)}"
