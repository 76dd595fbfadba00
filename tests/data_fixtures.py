"""Writers for small files in the real distribution formats, for the data loader tests.

Each writer returns the arrays it wrote (images uint8 NHWC, labels int64), so a
test can check that the loader gives back exactly what is on disk.

* IDX (MNIST, Fashion-MNIST): big-endian magic ``0x00000803`` / ``0x00000801``,
  one uint32 per dimension, then uint8 values; gzipped like the originals.
* CIFAR-10 binary: records of 1 label byte + 3072 pixel bytes (R, G, B planes),
  in ``cifar-10-batches-bin/`` and ``cifar-10-binary.tar.gz``.
* CIFAR-10 Python: Python 2 protocol-2 pickles of ``{b"data": uint8 (N, 3072),
  b"labels": [...], ...}`` in ``cifar-10-batches-py/`` and ``cifar-10-python.tar.gz``.
"""

from __future__ import annotations

import builtins
import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

MNIST_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST = "test_batch"


# --------------------------------------------------------------------------- IDX


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An IDX uint8 file: magic 0x000008NN (NN = ndim), the dimensions as big-endian uint32, the data."""
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x00000800 | array.ndim
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = True, magic: int | None = None) -> Path:
    data = idx_bytes(array, magic)
    Path(path).write_bytes(gzip.compress(data) if gz else data)
    return Path(path)


def random_images(rng: np.random.Generator, n: int, shape: Tuple[int, ...]) -> np.ndarray:
    # Use the full 0..255 range so scaling errors show up at both ends.
    x = rng.integers(0, 256, size=(n,) + shape, dtype=np.uint8)
    if n:
        x.reshape(n, -1)[0, 0], x.reshape(n, -1)[0, 1] = 0, 255
    return x


def balanced_labels(rng: np.random.Generator, n: int, num_classes: int = 10) -> np.ndarray:
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)


def write_mnist(folder: Path, n_train: int = 70, n_test: int = 20, gz: bool = True, seed: int = 0) -> Dict[str, np.ndarray]:
    """The four MNIST IDX files (28x28 images) in ``folder``; returns the arrays written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": random_images(rng, n_train, (28, 28)),
        "train_labels": balanced_labels(rng, n_train),
        "test_images": random_images(rng, n_test, (28, 28)),
        "test_labels": balanced_labels(rng, n_test),
    }
    for key, name in MNIST_NAMES.items():
        write_idx(folder / (name + (".gz" if gz else "")), arrays[key], gz=gz)
    return arrays


def mnist_path(folder: Path, key: str, gz: bool = True) -> Path:
    return Path(folder) / (MNIST_NAMES[key] + (".gz" if gz else ""))


# --------------------------------------------------------------------------- CIFAR-10 common


def cifar_arrays(n_per_batch: int = 6, n_test: int = 7, seed: int = 0) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Random CIFAR-like batches: name -> (uint8 images NHWC 32x32x3, int64 labels)."""
    rng = np.random.default_rng(seed)
    out = {b: (random_images(rng, n_per_batch, (32, 32, 3)), balanced_labels(rng, n_per_batch)) for b in CIFAR_TRAIN}
    out[CIFAR_TEST] = (random_images(rng, n_test, (32, 32, 3)), balanced_labels(rng, n_test))
    return out


def hwc_to_cifar_rows(x: np.ndarray) -> np.ndarray:
    """NHWC -> (N, 3072) rows of 1024 R, 1024 G, 1024 B values, as in the CIFAR distribution."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(len(x), -1)


def cifar_binary_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    records = np.concatenate([y.astype(np.uint8)[:, None], hwc_to_cifar_rows(x)], axis=1)
    return records.tobytes()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_tar_gz(path: Path, members: Dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            _add_bytes(tar, name, data)
    return Path(path)


# --------------------------------------------------------------------------- CIFAR-10 binary


def write_cifar_binary_dir(folder: Path, arrays: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> Path:
    """``folder/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin``."""
    d = Path(folder) / "cifar-10-batches-bin"
    d.mkdir(parents=True, exist_ok=True)
    for name, (x, y) in arrays.items():
        (d / f"{name}.bin").write_bytes(cifar_binary_bytes(x, y))
    (d / "batches.meta.txt").write_text("\n".join(f"class_{i}" for i in range(10)) + "\n")
    return d


def write_cifar_binary_tar(folder: Path, arrays: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> Path:
    members = {f"cifar-10-batches-bin/{n}.bin": cifar_binary_bytes(x, y) for n, (x, y) in arrays.items()}
    members["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\n"
    return write_tar_gz(Path(folder) / "cifar-10-binary.tar.gz", members)


# --------------------------------------------------------------------------- CIFAR-10 python


class Py2StylePickler(pickle._Pickler):  # the pure-Python pickler lets us override how str/bytes are written
    """Protocol 2 with every str and bytes written as a Python 2 ``str`` (BINSTRING).

    That is how the CIFAR-10 Python batches were written, and why they must be
    read with ``encoding="bytes"``.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle(obj, legacy_numpy_names: bool = True) -> bytes:
    buf = io.BytesIO()
    Py2StylePickler(buf, protocol=2).dump(obj)
    data = buf.getvalue()
    if legacy_numpy_names:  # the real files name NumPy 1's module
        data = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    return data


def cifar_python_batch(x: np.ndarray, y: np.ndarray, name: str, legacy_numpy_names: bool = True) -> bytes:
    batch = {
        b"batch_label": f"{name} of 5".encode(),
        b"labels": [int(v) for v in y],
        b"data": hwc_to_cifar_rows(x),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(y))],
    }
    return py2_pickle(batch, legacy_numpy_names)


def write_cifar_python_dir(folder: Path, arrays, legacy_numpy_names: bool = True) -> Path:
    d = Path(folder) / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    for name, (x, y) in arrays.items():
        (d / name).write_bytes(cifar_python_batch(x, y, name, legacy_numpy_names))
    return d


def write_cifar_python_tar(folder: Path, arrays, legacy_numpy_names: bool = True) -> Path:
    members = {
        f"cifar-10-batches-py/{n}": cifar_python_batch(x, y, n, legacy_numpy_names) for n, (x, y) in arrays.items()
    }
    return write_tar_gz(Path(folder) / "cifar-10-python.tar.gz", members)


class _SystemPayload:
    """Unpickling calls os.system(command)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _EvalPayload:
    """Unpickling calls builtins.eval(expression)."""

    def __init__(self, expression: str):
        self.expression = expression

    def __reduce__(self):
        return (builtins.eval, (self.expression,))


def malicious_pickle(marker: Path, kind: str = "os.system") -> bytes:
    """A 'CIFAR batch' whose b'data' runs code that creates ``marker`` when unpickled."""
    if kind == "os.system":
        payload = _SystemPayload(f"touch '{marker}'")
    elif kind == "eval":
        payload = _EvalPayload(f"open({str(marker)!r}, 'w').write('pwned')")
    else:
        raise ValueError(kind)
    # Written like the real batches, so the payload is the first global the unpickler meets.
    return py2_pickle({b"labels": [0], b"data": payload})
