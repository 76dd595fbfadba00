"""``python -m initsuite <command> ...``: the same as the ``initsuite`` console command."""

from initsuite.cli import main

main()
