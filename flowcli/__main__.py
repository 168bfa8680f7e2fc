"""`python -m flowcli` runs the command-line interface (and works under torchrun)."""

from flowcli.cli.app import main

main()
