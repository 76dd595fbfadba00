"""Redraw a sweep's figures (PNG + PDF in <sweep>/figures/) and its report.html from its tables.

Kept for `python experiments/figures.py ...`; the same as `initsuite figures ...` (initsuite/cli.py).
"""

import sys

from initsuite.cli import main

if __name__ == "__main__":
    main(["figures", *sys.argv[1:]])
