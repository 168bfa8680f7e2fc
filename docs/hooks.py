"""MkDocs hooks: pages made from the code at build time, so they cannot drift from it.

- `<!-- cli-reference -->` in a page becomes the reference typer generates from the app itself
  (`typer.cli.get_docs_for_click`): every command, argument and option with its help.
- `changelog.md` is CHANGELOG.md at the repository's root, which stays the one copy (its links
  into docs/ made relative to the site).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- cli-reference -->"


def cli_reference() -> str:
    """The whole CLI reference as markdown, headings from level 3 down."""
    import typer
    import typer.main
    from typer.cli import get_docs_for_click

    from flowcli.cli import app

    command = typer.main.get_command(app)
    text = get_docs_for_click(obj=command, ctx=typer.Context(command), name="flowcli")
    return "\n".join("##" + line if line.startswith("#") else line for line in text.splitlines())


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, cli_reference())
    if page.file.src_uri == "changelog.md":
        markdown = (ROOT / "CHANGELOG.md").read_text().replace("](docs/", "](")
    return markdown
