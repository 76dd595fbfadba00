"""What initsuite's instrumentation costs against plain Keras: throughput, peak memory,

Kept for `python experiments/bench.py ...`; the same as `initsuite bench ...` (initsuite/cli.py).
"""

import sys

from initsuite.cli import main

if __name__ == "__main__":
    main(["bench", *sys.argv[1:]])
