"""Tests for initsuite.setup.data: file formats, tfds path, synthetic data, error messages."""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import pickle
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from initsuite.config import DatasetConfig
from initsuite.setup import data as D

try:
    from . import data_fixtures as F
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    import data_fixtures as F

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist


def cfg(**kw) -> DatasetConfig:
    return DatasetConfig(**kw)


def scaled(x_uint8: np.ndarray) -> np.ndarray:
    return x_uint8.astype(np.float32) / np.float32(255)


def assert_well_formed(b: D.DataBundle, shape, num_classes) -> None:
    for split in ("train", "valid", "test"):
        x, y = b.split(split)
        assert x.dtype == np.float32 and y.dtype == np.int64, split
        assert x.ndim == 4 and x.shape[1:] == tuple(shape), split
        assert len(x) == len(y), split
        if len(x):
            assert 0.0 <= x.min() and x.max() <= 1.0, split
            assert 0 <= y.min() and y.max() < num_classes, split
    assert b.input_shape == tuple(shape)
    assert b.num_classes == num_classes


# --------------------------------------------------------------------------- IDX files


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    arrays = F.write_mnist(tmp_path, n_train=70, n_test=20, gz=gz, seed=1)
    b = D.load(cfg(name="mnist", source="files", path=str(tmp_path), valid_size=10))

    assert (b.name, b.source) == ("mnist", "files")
    assert_well_formed(b, (28, 28, 1), 10)
    assert (len(b.x_train), len(b.x_valid), len(b.x_test)) == (60, 10, 20)
    # first 60 -> train, last 10 -> valid, in file order
    np.testing.assert_array_equal(b.x_train, scaled(arrays["train_images"][:60, :, :, None]))
    np.testing.assert_array_equal(b.y_train, arrays["train_labels"][:60])
    np.testing.assert_array_equal(b.x_valid, scaled(arrays["train_images"][60:, :, :, None]))
    np.testing.assert_array_equal(b.y_valid, arrays["train_labels"][60:])
    np.testing.assert_array_equal(b.x_test, scaled(arrays["test_images"][:, :, :, None]))
    np.testing.assert_array_equal(b.y_test, arrays["test_labels"])
    assert b.x_train.min() == 0.0 and b.x_train.max() == 1.0  # the fixture has 0 and 255 pixels


def test_limit_train_keeps_first_examples(tmp_path):
    arrays = F.write_mnist(tmp_path, n_train=70, n_test=20)
    b = D.load(cfg(name="mnist", source="files", path=str(tmp_path), valid_size=10, limit_train=25))
    assert (len(b.x_train), len(b.x_valid), len(b.x_test)) == (25, 10, 20)
    np.testing.assert_array_equal(b.y_train, arrays["train_labels"][:25])
    np.testing.assert_array_equal(b.y_valid, arrays["train_labels"][60:])  # validation unaffected


@pytest.mark.parametrize("sub", ["fashion_mnist", "fashion-mnist"])
def test_files_found_in_dataset_subfolder(tmp_path, sub):
    arrays = F.write_mnist(tmp_path / sub, n_train=30, n_test=10)
    b = D.load(cfg(name="fashion_mnist", source="files", path=str(tmp_path), valid_size=5))
    assert (len(b.x_train), len(b.x_valid), len(b.x_test)) == (25, 5, 10)
    np.testing.assert_array_equal(b.y_test, arrays["test_labels"])


def test_small_train_set_shrinks_validation_with_warning(tmp_path):
    F.write_mnist(tmp_path, n_train=12, n_test=4)
    with pytest.warns(D.DataWarning, match="valid"):
        b = D.load(cfg(name="mnist", source="files", path=str(tmp_path), valid_size=10000))
    assert len(b.x_valid) == 2  # 12 * 10000/60000, MNIST's own ratio
    assert len(b.x_train) == 10 and len(b.x_test) == 4


def test_wrong_magic(tmp_path):
    arrays = F.write_mnist(tmp_path)
    bad = F.mnist_path(tmp_path, "train_images")
    F.write_idx(bad, arrays["train_labels"])  # a label file where the images belong
    with pytest.raises(D.DataError) as e:
        D.load(cfg(name="mnist", source="files", path=str(tmp_path), valid_size=10))
    msg = str(e.value)
    assert str(bad) in msg and "magic" in msg
    assert "0x00000803" in msg and "0x00000801" in msg  # expected vs found


def test_truncated_idx(tmp_path):
    arrays = F.write_mnist(tmp_path)
    bad = F.mnist_path(tmp_path, "test_images")
    bad.write_bytes(gzip.compress(F.idx_bytes(arrays["test_images"])[:-100]))
    with pytest.raises(D.DataError, match="truncated") as e:
        D.load(cfg(name="mnist", source="files", path=str(tmp_path), valid_size=10))
    expected = 16 + arrays["test_images"].size
    assert str(bad) in str(e.value) and str(expected) in str(e.value) and str(expected - 100) in str(e.value)


def test_truncated_gzip_stream(tmp_path):
    F.write_mnist(tmp_path)
    bad = F.mnist_path(tmp_path, "train_labels")
    bad.write_bytes(bad.read_bytes()[:-20])
    with pytest.raises(D.DataError, match="gzip") as e:
        D.load(cfg(name="mnist", source="files", path=str(tmp_path), valid_size=10))
    assert str(bad) in str(e.value)


def test_not_gzip(tmp_path):
    F.write_mnist(tmp_path)
    bad = F.mnist_path(tmp_path, "train_images")
    bad.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(D.DataError, match="gzip") as e:
        D.load(cfg(name="mnist", source="files", path=str(tmp_path), valid_size=10))
    assert str(bad) in str(e.value) and "1f 8b" in str(e.value)


def test_image_label_count_mismatch(tmp_path):
    arrays = F.write_mnist(tmp_path, n_train=70)
    labels = F.mnist_path(tmp_path, "train_labels")
    F.write_idx(labels, arrays["train_labels"][:69])
    with pytest.raises(D.DataError) as e:
        D.load(cfg(name="mnist", source="files", path=str(tmp_path), valid_size=10))
    msg = str(e.value)
    assert str(labels) in msg and str(F.mnist_path(tmp_path, "train_images")) in msg
    assert "70" in msg and "69" in msg


def test_label_out_of_range(tmp_path):
    arrays = F.write_mnist(tmp_path)
    labels = F.mnist_path(tmp_path, "test_labels")
    y = arrays["test_labels"].copy()
    y[3] = 10
    F.write_idx(labels, y)
    with pytest.raises(D.DataError, match="label 10") as e:
        D.load(cfg(name="mnist", source="files", path=str(tmp_path), valid_size=10))
    assert str(labels) in str(e.value)


def test_missing_files(tmp_path):
    with pytest.raises(D.DataError) as e:
        D.load(cfg(name="mnist", source="files", path=str(tmp_path)))
    msg = str(e.value)
    assert "dataset.path" in msg and str(tmp_path) in msg
    for name in F.MNIST_NAMES.values():
        assert f"{name}.gz" in msg
    assert "https://" in msg


def test_partly_missing_files_names_the_missing_one(tmp_path):
    F.write_mnist(tmp_path)
    F.mnist_path(tmp_path, "test_labels").unlink()
    with pytest.raises(D.DataError, match="lacks t10k-labels-idx1-ubyte.gz") as e:
        D.load(cfg(name="mnist", source="files", path=str(tmp_path)))
    assert "dataset.path" in str(e.value)


def test_files_source_without_path():
    with pytest.raises(D.DataError, match="dataset.path") as e:
        D.load(cfg(name="fashion_mnist", source="files"))
    assert "train-images-idx3-ubyte.gz" in str(e.value)


def test_path_that_is_not_a_folder(tmp_path):
    with pytest.raises(D.DataError, match="dataset.path"):
        D.load(cfg(name="mnist", source="files", path=str(tmp_path / "nope")))


# --------------------------------------------------------------------------- CIFAR-10 files


def _expected_cifar(arrays, n_valid):
    x = np.concatenate([arrays[b][0] for b in F.CIFAR_TRAIN])
    y = np.concatenate([arrays[b][1] for b in F.CIFAR_TRAIN])
    n = len(x) - n_valid
    return (x[:n], y[:n]), (x[n:], y[n:]), arrays[F.CIFAR_TEST]


WRITERS = {
    "binary_dir": F.write_cifar_binary_dir,
    "binary_tar": F.write_cifar_binary_tar,
    "python_dir": F.write_cifar_python_dir,
    "python_tar": F.write_cifar_python_tar,
    "python_dir_numpy2_names": lambda d, a: F.write_cifar_python_dir(d, a, legacy_numpy_names=False),
}


@pytest.mark.parametrize("layout", list(WRITERS))
def test_cifar_round_trip(tmp_path, layout):
    arrays = F.cifar_arrays(n_per_batch=6, n_test=7, seed=3)
    WRITERS[layout](tmp_path, arrays)
    b = D.load(cfg(name="cifar10", source="files", path=str(tmp_path), valid_size=6))

    assert_well_formed(b, (32, 32, 3), 10)
    assert (len(b.x_train), len(b.x_valid), len(b.x_test)) == (24, 6, 7)
    (xt, yt), (xv, yv), (xs, ys) = _expected_cifar(arrays, 6)
    np.testing.assert_array_equal(b.x_train, scaled(xt))
    np.testing.assert_array_equal(b.y_train, yt)
    np.testing.assert_array_equal(b.x_valid, scaled(xv))
    np.testing.assert_array_equal(b.y_valid, yv)
    np.testing.assert_array_equal(b.x_test, scaled(xs))
    np.testing.assert_array_equal(b.y_test, ys)


def test_cifar_channel_order(tmp_path):
    """One red, one green, one blue image: the CHW -> HWC conversion puts each in its channel."""
    x = np.zeros((3, 32, 32, 3), np.uint8)
    for c in range(3):
        x[c, :, :, c] = 200
    x[0, 5, 7, 0] = 17  # a single pixel checks the row/column order too
    arrays = {b: (x, np.array([0, 1, 2])) for b in F.CIFAR_TRAIN + [F.CIFAR_TEST]}
    F.write_cifar_binary_dir(tmp_path, arrays)
    b = D.load(cfg(name="cifar10", source="files", path=str(tmp_path), valid_size=3))
    np.testing.assert_array_equal(b.x_test, scaled(x))


def test_cifar_binary_size_not_multiple_of_record(tmp_path):
    arrays = F.cifar_arrays()
    d = F.write_cifar_binary_dir(tmp_path, arrays)
    bad = d / "data_batch_3.bin"
    bad.write_bytes(bad.read_bytes() + b"\x00")
    with pytest.raises(D.DataError, match="3073") as e:
        D.load(cfg(name="cifar10", source="files", path=str(tmp_path), valid_size=6))
    assert str(bad) in str(e.value)


def test_cifar_binary_tar_truncated_member(tmp_path):
    arrays = F.cifar_arrays()
    members = {f"cifar-10-batches-bin/{n}.bin": F.cifar_binary_bytes(x, y) for n, (x, y) in arrays.items()}
    members["cifar-10-batches-bin/test_batch.bin"] = members["cifar-10-batches-bin/test_batch.bin"][:-5]
    F.write_tar_gz(tmp_path / "cifar-10-binary.tar.gz", members)
    with pytest.raises(D.DataError, match="3073") as e:
        D.load(cfg(name="cifar10", source="files", path=str(tmp_path), valid_size=6))
    assert "cifar-10-binary.tar.gz" in str(e.value) and "test_batch.bin" in str(e.value)


def test_cifar_corrupt_archive(tmp_path):
    arrays = F.cifar_arrays()
    tar = F.write_cifar_binary_tar(tmp_path, arrays)
    tar.write_bytes(tar.read_bytes()[: len(tar.read_bytes()) // 2])
    with pytest.raises(D.DataError) as e:
        D.load(cfg(name="cifar10", source="files", path=str(tmp_path), valid_size=6))
    assert str(tar) in str(e.value)


def test_cifar_archive_missing_member(tmp_path):
    arrays = F.cifar_arrays()
    del arrays["data_batch_4"]
    F.write_cifar_binary_tar(tmp_path, arrays)
    with pytest.raises(D.DataError, match="data_batch_4.bin"):
        D.load(cfg(name="cifar10", source="files", path=str(tmp_path), valid_size=6))


def test_cifar_incomplete_folder(tmp_path):
    d = F.write_cifar_binary_dir(tmp_path, F.cifar_arrays())
    (d / "data_batch_5.bin").unlink()
    with pytest.raises(D.DataError, match="data_batch_5.bin") as e:
        D.load(cfg(name="cifar10", source="files", path=str(tmp_path), valid_size=6))
    assert str(d) in str(e.value)


def test_cifar_missing_files(tmp_path):
    with pytest.raises(D.DataError) as e:
        D.load(cfg(name="cifar10", source="files", path=str(tmp_path)))
    msg = str(e.value)
    assert "dataset.path" in msg and str(tmp_path) in msg
    assert "cifar-10-binary.tar.gz" in msg and "cifar-10-python.tar.gz" in msg
    assert "https://www.cs.toronto.edu/~kriz/" in msg


def test_cifar_python_pickle_needs_bytes_encoding():
    """The fixture is a genuine Python-2-style pickle: a default pickle.loads cannot read it."""
    x, y = F.cifar_arrays()["data_batch_1"]
    blob = F.cifar_python_batch(x, y, "data_batch_1")
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(blob)


@pytest.mark.parametrize("kind", ["os.system", "eval"])
def test_malicious_pickle_payload_is_real(tmp_path, kind):
    """Control: an unrestricted unpickler runs the payload, so the refusal test below means something."""
    marker = tmp_path / "pwned"
    pickle.loads(F.malicious_pickle(marker, kind))
    assert marker.exists()


@pytest.mark.parametrize("kind", ["os.system", "eval"])
@pytest.mark.parametrize("layout", ["python_dir", "python_tar"])
def test_malicious_pickle_is_refused(tmp_path, kind, layout):
    marker = tmp_path / "pwned"
    arrays = F.cifar_arrays()
    data = tmp_path / "data"
    data.mkdir()
    members = {n: F.cifar_python_batch(x, y, n) for n, (x, y) in arrays.items()}
    members["data_batch_2"] = F.malicious_pickle(marker, kind)
    if layout == "python_dir":
        d = data / "cifar-10-batches-py"
        d.mkdir()
        for n, blob in members.items():
            (d / n).write_bytes(blob)
    else:
        F.write_tar_gz(data / "cifar-10-python.tar.gz", {f"cifar-10-batches-py/{n}": b for n, b in members.items()})

    with pytest.raises(D.DataError, match="refusing to unpickle") as e:
        D.load(cfg(name="cifar10", source="files", path=str(data), valid_size=6))
    assert "data_batch_2" in str(e.value)
    # the refused global is named (protocol 2 spells them posix.system / __builtin__.eval)
    assert re.search(r"(posix|os)\.system" if kind == "os.system" else r"(__builtin__|builtins)\.eval", str(e.value))
    assert not marker.exists()


def test_unpickler_allows_only_array_reconstruction():
    u = D._CifarUnpickler(__import__("io").BytesIO(b""), "f")
    assert u.find_class("numpy", "ndarray") is np.ndarray
    assert u.find_class("numpy", "dtype") is np.dtype
    assert callable(u.find_class("numpy.core.multiarray", "_reconstruct"))
    assert u.find_class("numpy._core.multiarray", "_reconstruct") is u.find_class("numpy.core.multiarray", "_reconstruct")
    for module, name in [("numpy", "load"), ("builtins", "getattr"), ("numpy.core.numeric", "_frombuffer"), ("os", "system")]:
        with pytest.raises(D.DataError, match=f"{module}.{name}"):
            u.find_class(module, name)


def test_cifar_python_wrong_structure(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    arrays = F.cifar_arrays()
    for n, (x, y) in arrays.items():
        (d / n).write_bytes(F.cifar_python_batch(x, y, n))
    (d / "test_batch").write_bytes(F.py2_pickle({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}))
    with pytest.raises(D.DataError, match="3072") as e:
        D.load(cfg(name="cifar10", source="files", path=str(tmp_path), valid_size=6))
    assert str(d / "test_batch") in str(e.value)


def test_binary_is_preferred_over_python(tmp_path):
    """With both versions present the binary one is read (no unpickling at all)."""
    arrays = F.cifar_arrays(seed=1)
    F.write_cifar_binary_tar(tmp_path, arrays)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for n in F.CIFAR_TRAIN + [F.CIFAR_TEST]:
        (d / n).write_bytes(b"not a pickle")
    b = D.load(cfg(name="cifar10", source="files", path=str(tmp_path), valid_size=6))
    np.testing.assert_array_equal(b.y_test, arrays[F.CIFAR_TEST][1])


# --------------------------------------------------------------------------- tfds


@pytest.fixture
def tfds():
    return pytest.importorskip("tensorflow_datasets")


@pytest.fixture
def no_network_check(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the network must not be probed for a mocked or prepared dataset")

    monkeypatch.setattr(D, "_network_reachable", boom)


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_mock_data(tfds, tmp_path, no_network_check, name, shape):
    with tfds.testing.mock_data(num_examples=12):
        with pytest.warns(D.DataWarning, match="valid"):
            b = D.load(cfg(name=name, source="tfds", data_dir=str(tmp_path)))
    assert (b.name, b.source) == (name, "tfds")
    assert_well_formed(b, shape, 10)
    # 12 "official" train examples < valid_size + 1: the paper's ratio (1/6 MNIST, 1/5 CIFAR-10) is held out
    n_valid = round(12 * (10000 / (60000 if name == "mnist" else 50000)))
    assert (len(b.x_train), len(b.x_valid), len(b.x_test)) == (12 - n_valid, n_valid, 12)
    assert b.x_train.std() > 0.1  # random pixels, scaled


def test_tfds_mock_data_limit_train(tfds, tmp_path, no_network_check):
    with tfds.testing.mock_data(num_examples=30):
        b = D.load(cfg(name="fashion_mnist", source="tfds", data_dir=str(tmp_path), valid_size=6, limit_train=7))
    assert (len(b.x_train), len(b.x_valid), len(b.x_test)) == (7, 6, 30)


def test_tfds_offline_fails_fast_with_instructions(tfds, tmp_path, monkeypatch):
    monkeypatch.setattr(D, "_network_reachable", lambda *a, **k: False)
    called = []
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", lambda *a, **k: called.append(1))
    start = time.monotonic()
    with pytest.raises(D.DataError) as e:
        D.load(cfg(name="mnist", source="tfds", data_dir=str(tmp_path)))
    assert time.monotonic() - start < 5
    assert not called
    msg = str(e.value)
    assert str(tmp_path) in msg and "not prepared" in msg
    assert "tfds build mnist" in msg
    assert "dataset.source=files dataset.path=" in msg
    for name in F.MNIST_NAMES.values():
        assert f"{name}.gz" in msg
    assert "https://storage.googleapis.com/cvdf-datasets/mnist/" in msg


def test_tfds_offline_cifar_names_the_archives(tfds, tmp_path, monkeypatch):
    monkeypatch.setattr(D, "_network_reachable", lambda *a, **k: False)
    with pytest.raises(D.DataError) as e:
        D.load(cfg(name="cifar10", source="tfds", data_dir=str(tmp_path)))
    msg = str(e.value)
    assert "cifar-10-binary.tar.gz" in msg and "cifar-10-python.tar.gz" in msg
    assert "https://www.cs.toronto.edu/~kriz/" in msg and "tfds build cifar10" in msg


def test_network_check_is_bounded(monkeypatch):
    """The reachability probe passes its timeout to the socket and reports failure as False."""
    seen = []

    def fake_connect(address, timeout):
        seen.append((address, timeout))
        raise OSError("unreachable")

    monkeypatch.setattr(D.socket, "create_connection", fake_connect)
    assert D._network_reachable([("example.invalid", 443)], timeout=0.5) is False
    assert seen == [(("example.invalid", 443), 0.5)]


def test_tfds_online_downloads_and_wraps_failures(tfds, tmp_path, monkeypatch):
    monkeypatch.setattr(D, "_network_reachable", lambda *a, **k: True)
    calls = []

    def fake_prepare(self, *a, **k):
        calls.append(str(self.data_dir))
        raise RuntimeError("connection reset by the test")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fake_prepare)
    with pytest.raises(D.DataError, match="connection reset by the test") as e:
        D.load(cfg(name="mnist", source="tfds", data_dir=str(tmp_path)))
    assert len(calls) == 1 and calls[0].startswith(str(tmp_path))  # data_dir honoured
    assert "dataset.source=files" in str(e.value)


def test_tfds_reads_a_prepared_dataset(tfds, tmp_path, monkeypatch, no_network_check):
    """The real (unmocked) read path: prepare a tiny MNIST with tfds' own builder, then load it."""
    from tensorflow_datasets.image_classification import mnist as tfds_mnist

    raw = tmp_path / "raw"
    arrays = F.write_mnist(raw, n_train=30, n_test=12, gz=False, seed=5)
    files = {
        "train_data": raw / "train-images-idx3-ubyte",
        "train_labels": raw / "train-labels-idx1-ubyte",
        "test_data": raw / "t10k-images-idx3-ubyte",
        "test_labels": raw / "t10k-labels-idx1-ubyte",
    }
    # Stand-in for the download: tfds' MNIST builder reads our files instead.
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", lambda self, urls: {k: str(files[k]) for k in urls})
    monkeypatch.setattr(tfds_mnist, "_TRAIN_EXAMPLES", 30)
    monkeypatch.setattr(tfds_mnist, "_TEST_EXAMPLES", 12)
    # tensorflow-datasets 4.9.x imports importlib_resources when preparing but does not
    # declare it for Python >= 3.9 (tensorflow/datasets#11212); the stdlib module serves.
    if importlib.util.find_spec("importlib_resources") is None:
        importlib.import_module("importlib.resources.abc")
        monkeypatch.setitem(sys.modules, "importlib_resources", importlib.import_module("importlib.resources"))
    data_dir = tmp_path / "tfds"
    tfds.builder("mnist", data_dir=str(data_dir)).download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )

    b = D.load(cfg(name="mnist", source="tfds", data_dir=str(data_dir), valid_size=6))
    assert_well_formed(b, (28, 28, 1), 10)
    assert (len(b.x_train), len(b.x_valid), len(b.x_test)) == (24, 6, 12)
    # tfds stores examples in its own order: compare as sets of (image, label)
    def rows(x, y):
        return sorted((xi.tobytes(), int(yi)) for xi, yi in zip(np.asarray(x), y))

    got = rows(np.concatenate([b.x_train, b.x_valid]), np.concatenate([b.y_train, b.y_valid]))
    assert got == rows(scaled(arrays["train_images"][..., None]), arrays["train_labels"])
    assert rows(b.x_test, b.y_test) == rows(scaled(arrays["test_images"][..., None]), arrays["test_labels"])


# --------------------------------------------------------------------------- names and config


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(D.DataError) as e:
        D.load(cfg(name="mnsit"))
    msg = str(e.value)
    for name in ("mnist", "fashion_mnist", "cifar10", "synthetic"):
        assert name in msg
    assert "Did you mean mnist" in msg


def test_unknown_source_lists_valid_sources():
    with pytest.raises(D.DataError) as e:
        D.load(cfg(name="mnist", source="file"))
    assert "tfds" in str(e.value) and "files" in str(e.value) and "'file'" in str(e.value)


def test_datasets_registry():
    assert set(D.DATASETS) == {"mnist", "fashion_mnist", "cifar10", "synthetic", "shapeset"}
    assert D.DATASETS["shapeset"].image_shape == (32, 32, 1) and D.DATASETS["shapeset"].num_classes == 9
    assert D.DATASETS["cifar10"].image_shape == (32, 32, 3)
    assert D.DATASETS["mnist"].tfds_name == "mnist" and D.DATASETS["mnist"].num_classes == 10
    assert "train-images-idx3-ubyte.gz" in D.DATASETS["fashion_mnist"].file_names
    assert issubclass(D.DataError, ValueError)


@pytest.mark.parametrize("field,value", [("valid_size", -1), ("limit_train", 0), ("n_train", 0), ("num_classes", 1)])
def test_bad_numbers(tmp_path, field, value):
    name = "mnist" if field in ("valid_size", "limit_train") else "synthetic"
    with pytest.raises(D.DataError, match=field):
        D.load(cfg(name=name, source="files", path=str(tmp_path), **{field: value}))


def test_bad_image_shape():
    with pytest.raises(D.DataError, match="image_shape"):
        D.load(cfg(name="synthetic", image_shape=[8, 8]))


def test_split_accessor():
    b = D.load(cfg(name="synthetic"))
    assert b.split("valid")[0] is b.x_valid
    with pytest.raises(D.DataError, match="train, valid, test"):
        b.split("validation")


# --------------------------------------------------------------------------- synthetic


def test_synthetic_shapes_and_determinism():
    c = cfg(name="synthetic", image_shape=[6, 5, 2], num_classes=4, n_train=40, n_valid=12, n_test=8)
    a, b, other = D.load(c, seed=7), D.load(c, seed=7), D.load(c, seed=8)
    assert a.source == "synthetic"
    assert_well_formed(a, (6, 5, 2), 4)
    assert (len(a.x_train), len(a.x_valid), len(a.x_test)) == (40, 12, 8)
    for f in ("x_train", "y_train", "x_valid", "y_valid", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.x_train, other.x_train)
    assert np.bincount(a.y_train, minlength=4).tolist() == [10] * 4  # balanced


def test_synthetic_splits_independent_of_other_sizes():
    a = D.load(cfg(name="synthetic", n_train=64), seed=3)
    b = D.load(cfg(name="synthetic", n_train=128), seed=3)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.x_valid, b.x_valid)
    c = D.load(cfg(name="synthetic", n_train=128, limit_train=50), seed=3)
    np.testing.assert_array_equal(c.x_train, b.x_train[:50])


def test_synthetic_is_learnable():
    """A nearest-class-mean classifier fit on train beats chance by far on test."""
    b = D.load(cfg(name="synthetic"), seed=0)
    k = b.num_classes
    means = np.stack([b.x_train[b.y_train == c].mean(axis=0) for c in range(k)])
    dist = ((b.x_test[:, None] - means[None]) ** 2).reshape(len(b.x_test), k, -1).sum(-1)
    accuracy = (dist.argmin(1) == b.y_test).mean()
    assert accuracy > 0.8, accuracy
    # ... but the task is not trivially noiseless
    assert b.x_train.std(axis=0).mean() > 0.1


def test_synthetic_accepts_omegaconf_node():
    omegaconf = pytest.importorskip("omegaconf")
    node = omegaconf.OmegaConf.structured(cfg(name="synthetic", image_shape=[4, 4, 3], n_train=10, n_valid=5, n_test=5))
    b = D.load(node, seed=1)
    assert b.input_shape == (4, 4, 3)


# --------------------------------------------------------------------------- real Fashion-MNIST


@pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist not installed")
@pytest.mark.parametrize("path", [FASHION_DIR, FASHION_DIR.parent])  # the folder, or its parent (fashion-mnist/ subfolder)
def test_real_fashion_mnist(path):
    b = D.load(cfg(name="fashion_mnist", source="files", path=str(path)))
    assert_well_formed(b, (28, 28, 1), 10)
    assert (len(b.x_train), len(b.x_valid), len(b.x_test)) == (50000, 10000, 10000)
    full = np.bincount(np.concatenate([b.y_train, b.y_valid]), minlength=10)
    assert full.tolist() == [6000] * 10
    assert np.bincount(b.y_test, minlength=10).tolist() == [1000] * 10
    train = np.bincount(b.y_train, minlength=10)
    assert train.min() > 0.9 * 5000 and train.max() < 1.1 * 5000
    assert b.x_train.min() == 0.0 and b.x_train.max() == 1.0
    assert 0.2 < b.x_train.mean() < 0.4  # Fashion-MNIST's mean pixel is about 0.29
