"""Glorot & Bengio (2010) reproduction: the paper's figures, Table 1 and report.html of a glorot2010 sweep.

Kept for `python experiments/paper.py ...`; the same as `initsuite paper ...` (initsuite/cli.py).
"""

import sys

from initsuite.cli import main

if __name__ == "__main__":
    main(["paper", *sys.argv[1:]])
