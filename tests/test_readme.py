"""The README's CLI reference stays true to the app: its option tables are generated from the
app's own help, every option is documented, and every documented option exists.

After changing an option, regenerate the tables: .venv/bin/python tests/test_readme.py
"""

from __future__ import annotations

import re
from pathlib import Path

import typer
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


START, END = "<!-- generated from the app's help by tests/test_readme.py -->\n", "<!-- end of generated options -->"


def generated_options() -> str:
    """One markdown table per command: each option as `--help` prints it, with its help text."""
    parts = []
    for name, command in typer.main.get_command(app).commands.items():
        context = typer.Context(command, info_name=name)
        rows = [parameter.get_help_record(context) for parameter in command.params if parameter.param_type_name == "option"]
        cells = [(f"`{spelling}`", text.replace("\\[", "[")) for spelling, text in rows]
        lines = [f"`flowcli {name}`:", "", "| option | meaning |", "|---|---|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in cells]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def test_the_option_tables_are_the_apps_help():
    text = README.read_text()
    assert START in text and END in text, "the README lacks the generated option tables' markers"
    assert text.split(START, 1)[1].split(END, 1)[0] == generated_options(), (
        "the README's option tables differ from the app's help; run: .venv/bin/python tests/test_readme.py")


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


if __name__ == "__main__":
    text = README.read_text()
    before, rest = text.split(START, 1)
    README.write_text(before + START + generated_options() + END + rest.split(END, 1)[1])
