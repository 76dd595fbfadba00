"""A resumable sweep over a preset's grid (conf/experiment/<preset>.yaml), collected into tables.

Kept for `python experiments/sweep.py ...`; the same as `initsuite sweep ...` (initsuite/cli.py).
"""

import sys

from initsuite.cli import main

if __name__ == "__main__":
    main(["sweep", *sys.argv[1:]])
