"""The `flowcli` command: the Typer app, what it says on stderr, the `inspect` report and plots.

Owns: typer, exit codes, the console. May import everything below it; nothing imports it.
"""

from flowcli.cli.app import app, main

__all__ = ["app", "main"]
