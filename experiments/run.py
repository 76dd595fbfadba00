"""One instrumented training run.

Kept for `python experiments/run.py ...`; the same as `initsuite run ...` (initsuite/cli.py).
"""

import sys

from initsuite.cli import main

if __name__ == "__main__":
    main(["run", *sys.argv[1:]])
