"""Gather a sweep's run folders into its tables (runs, layer_stats, metrics, histograms, events).

Kept for `python experiments/collect.py ...`; the same as `initsuite collect ...` (initsuite/cli.py).
"""

import sys

from initsuite.cli import main

if __name__ == "__main__":
    main(["collect", *sys.argv[1:]])
