"""Allows `python -m perkflow`."""

from perkflow.cli import main

main()
