"""The documentation stays true to the app: the CLI reference is generated from it and names
every option of every command, and every option the README and the docs mention exists."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import typer.main

from flowcli.cli import app

ROOT = Path(__file__).resolve().parent.parent
# The pages about flowcli's own commands (the benchmark pages describe the bench scripts' options).
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md") if "benchmarks" not in p.parts)]
# Options of other tools that the pages show beside flowcli's.
FOREIGN = {"--nproc-per-node", "--nnodes", "--node-rank", "--master-addr", "--master-port", "--rdzv-endpoint",
           "--rdzv-backend", "--rdzv-id", "--standalone", "--index-url", "--strict", "--site-dir", "--no-deps"}


def hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def options() -> dict[str, list[set[str]]]:
    """Each command's options, every spelling of each (e.g. {'-o', '--output'})."""
    group = typer.main.get_command(app)
    return {name: [set(parameter.opts) for parameter in command.params if parameter.opts[0].startswith("-")]
            for name, command in group.commands.items()}


def test_the_generated_cli_reference_has_every_command_and_option():
    reference = hooks().cli_reference()
    for command, parameters in options().items():
        section = reference.split(f"### `flowcli {command}`", 1)[1].split("### `flowcli ", 1)[0]
        for spellings in parameters:
            assert any(f"`{spelling}" in section or f", {spelling}" in section for spelling in spellings), (command, spellings)


def test_the_cli_page_carries_the_marker_the_hook_replaces():
    assert hooks().MARKER in (ROOT / "docs" / "cli.md").read_text()


def test_every_option_the_pages_mention_exists():
    known = {spelling for parameters in options().values() for spellings in parameters for spelling in spellings}
    known |= {"--help", "-h", "--version"} | FOREIGN
    for page in PAGES:
        mentioned = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", page.read_text()))
        assert mentioned <= known, f"{page.relative_to(ROOT)} mentions options the app lacks: {sorted(mentioned - known)}"


def test_the_readme_is_a_front_door_that_shows_both_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert "make demo" in text and "make test" in text
    for link in re.findall(r"\]\((docs/[^)#]+|CHANGELOG\.md)", text):
        assert (ROOT / link).exists(), link
