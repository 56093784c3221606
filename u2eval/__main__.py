"""``python -m u2eval`` runs the CLI."""

from u2eval.cli import main

main()
