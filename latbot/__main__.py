"""`python -m latbot` is the `latbot` command."""

from latbot.cli import main

main()
