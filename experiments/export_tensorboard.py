"""Write TensorBoard event files from a sweep's tables: one TensorBoard run per suite run,
per-layer scalars and histograms tagged <layer>/<tensor>/<stat>.

    make tensorboard SWEEP=results/sweeps/glorot2010
    tensorboard --logdir results/sweeps/glorot2010/tensorboard     # pip install tensorboard
"""

import sys
from pathlib import Path

from initsuite.export import write_tensorboard


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: python experiments/export_tensorboard.py <sweep folder>   (make tensorboard SWEEP=<folder>)")
    log_dir = write_tensorboard(Path(argv[0]))
    print(f"view with: tensorboard --logdir {log_dir}")


if __name__ == "__main__":
    main()
