"""Write TensorBoard event files from a sweep's tables: one TensorBoard run per suite run,

Kept for `python experiments/tensorboard.py ...`; the same as `initsuite tensorboard ...` (initsuite/cli.py).
"""

import sys

from initsuite.cli import main

if __name__ == "__main__":
    main(["tensorboard", *sys.argv[1:]])
