"""Gather a sweep's run folders into its tables (runs, layer_stats, metrics, histograms, events).

    make collect SWEEP=results/sweeps/default
    python experiments/collect.py results/sweeps/default

Works on a sweep that is still running and skips broken run folders, saying which.
The last line printed is the sweep folder.
"""

import sys

from initsuite.sweep import collect_main

if __name__ == "__main__":
    sys.exit(collect_main())
