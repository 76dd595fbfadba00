"""Glorot & Bengio (2010) reproduction: the paper's figures, Table 1 and report.html of a glorot2010 sweep.

    make paper                                   # runs the sweep (make sweep EXP=glorot2010), then this script
    make paper PAPER_SCALE=long                  # the paper's schedule, for a GPU (PAPER_SCALE=tiny: seconds)
    python experiments/paper.py results/sweeps/glorot2010     # redraw from the sweep's tables
"""

import argparse
from pathlib import Path

from initsuite import paper, report


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", nargs="?", type=Path, help="the glorot2010 sweep folder")
    p.add_argument("--overrides", metavar="SCALE", help="print the overrides of a PAPER_SCALE (for make paper)")
    p.add_argument("--fig2-overrides", action="store_true", help="print the overrides of Fig. 2's extra run")
    a = p.parse_args(argv)
    if a.overrides is not None or a.fig2_overrides:
        print(" ".join(paper.scale_overrides(a.overrides) if a.overrides is not None else paper.FIG2_RUN))
        return
    if a.sweep is None:
        p.error("give the sweep folder")
    if not (a.sweep / "runs.parquet").exists():  # not collected yet: collect now (imports the sweep machinery)
        from initsuite.sweep import collect

        collect(a.sweep)
    html = report.build(a.sweep)
    print(f"Table 1: {a.sweep / 'table1.md'}\nfigures: {a.sweep / 'figures'}\nreport:  {html}")


if __name__ == "__main__":
    main()
