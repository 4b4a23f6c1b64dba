"""Allows `python -m ecst`."""

from ecst.cli.main import main

main()
