"""Redraw a sweep's figures (PNG + PDF in <sweep>/figures/) and its report.html from its tables.

    make figures SWEEP=results/sweeps/tn_vs_xavier
"""

import sys
from pathlib import Path

from initsuite import report


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: python experiments/figures.py <sweep folder>   (make figures SWEEP=<folder>)")
    sweep = Path(argv[0])
    if not (sweep / "runs.parquet").exists():  # not collected yet: collect now (imports the sweep machinery)
        from initsuite.sweep import collect

        collect(sweep)
    print(report.build(sweep))


if __name__ == "__main__":
    main()
