"""What initsuite's instrumentation costs against plain Keras: throughput, peak memory,
FLOP/s against the matmul peak, sweep speed-up, XLA / mixed-precision statistics.
Writes results/bench/bench.json and bench.md.

    make bench                       # the full benchmark (several minutes on 2 cores)
    make bench BENCH_QUICK=1         # a smoke test: MLP cases, one repetition
    python experiments/bench.py --cases mlp_b128 --reps 5 --no-sweep
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from initsuite.bench import main  # noqa: E402

if __name__ == "__main__":
    main()
