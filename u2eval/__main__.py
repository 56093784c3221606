"""``python -m u2eval`` runs the CLI."""

from u2eval.cli.app import main

main()
