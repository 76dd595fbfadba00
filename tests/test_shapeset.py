"""Tests for initsuite.setup.shapeset: Shapeset-3x2 classes, seeds, the overlap rule, pixels, the stream."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from initsuite.config import DatasetConfig
from initsuite.setup import data as D, shapeset as S


@pytest.fixture(scope="module")
def sample():
    return S.make(9 * 120, 11, return_masks=True)


def test_nine_classes_are_the_singles_and_unordered_pairs_of_three_types():
    assert S.NUM_CLASSES == 9
    expected = [(t,) for t in range(3)] + list(itertools.combinations_with_replacement(range(3), 2))
    assert list(S.CLASSES) == expected
    assert len(set(S.CLASS_NAMES)) == 9 and S.CLASS_NAMES[4] == "triangle+parallelogram"


def test_classes_are_balanced_in_fixed_sets_and_in_each_stream_chunk(sample):
    _, y, _, _ = sample
    assert np.bincount(y, minlength=9).tolist() == [120] * 9
    batches = list(itertools.islice(S.stream(0, 8), S.CHUNK // 8))  # 1008 / 8 = 126 batches = one chunk
    y_stream = np.concatenate([b[1] for b in batches])
    assert np.bincount(y_stream, minlength=9).tolist() == [S.CHUNK // 9] * 9
    assert y_stream[:50].tolist() != sorted(y_stream[:50].tolist())  # shuffled, not grouped by class


def test_same_seed_same_images_other_seed_other_images():
    a, b, c = S.make(50, 3), S.make(50, 3), S.make(50, 4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    s1, s2, s3 = (list(itertools.islice(S.stream(seed, 10), 3)) for seed in (7, 7, 8))
    for (x1, y1), (x2, y2) in zip(s1, s2):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(s1[0][0], s3[0][0])


def test_object_count_matches_the_class_and_overlap_at_most_half_the_smaller_object(sample):
    _, y, m1, m2 = sample
    two = np.array([len(S.CLASSES[c]) == 2 for c in y])
    assert m1.any((1, 2)).all()
    assert (m2.any((1, 2)) == two).all()
    a1, a2 = m1.sum((1, 2)), m2.sum((1, 2))
    overlap = (m1 & m2).sum((1, 2))
    assert (overlap[two] <= S.MAX_OVERLAP * np.minimum(a1, a2)[two]).all()
    assert (overlap[two] > 0).mean() > 0.2  # overlapping does happen: the rule is not vacuous


def test_pixels_are_the_objects_grey_levels_on_black(sample):
    x, y, m1, m2 = sample
    assert x.shape == (len(y), 32, 32, 1) and x.dtype == np.float32
    img = x[..., 0]
    assert (img[~(m1 | m2)] == 0).all()
    inside = img[m1 | m2]
    assert inside.min() >= S.GREY[0] and inside.max() <= S.GREY[1]
    for i in range(0, len(y), 97):  # each object one grey level; the second drawn on top
        assert len(np.unique(img[i][m2[i]])) <= 1
        assert len(np.unique(img[i][m1[i] & ~m2[i]])) <= 1
        if m2[i].any() and (m1[i] & ~m2[i]).any():
            assert abs(img[i][m2[i]][0] - img[i][m1[i] & ~m2[i]][0]) >= S.MIN_CONTRAST - 1e-6
    # rasterised areas follow the drawn areas (pixel-centre sampling: small edge error; a few cut by the border)
    areas = m1.sum((1, 2))
    assert np.quantile(areas, 0.02) >= 0.8 * S.AREA_PX[0] and areas.max() <= 1.15 * S.AREA_PX[1]
    single = np.array([len(S.CLASSES[c]) == 1 for c in y])
    cover = (img > 0).mean((1, 2))
    assert 0.05 < cover[single].mean() < 0.2 and cover[~single].mean() > cover[single].mean()


def _one(shape_type, verts=None, ax=1.0, ay=1.0, scale=1.0, theta=0.0, c=(16.0, 16.0)):
    v = np.zeros((1, 4, 2), np.float32) if verts is None else np.asarray(verts, np.float32)[None]
    return dict(types=np.array([shape_type]), verts=v, ax=np.float32([ax]), ay=np.float32([ay]),
                scale=np.float32([scale]), cos=np.float32([np.cos(theta)]), sin=np.float32([np.sin(theta)]),
                cx=np.float32([c[0]]), cy=np.float32([c[1]]))


def test_masks_against_closed_form_shapes():
    # unit square scaled to side 10 around (16, 16): pixel centres 11.5 .. 20.5 -> exactly 10 x 10
    sq = _one(S.PARALLELOGRAM, [[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]], scale=10.0)
    m = S.masks(sq)[0]
    assert m.sum() == 100 and m[11:21, 11:21].all()
    # a disc of radius 8: the pixel count is close to pi r^2, and symmetric
    disc = S.masks(_one(S.ELLIPSE, ax=1.0, ay=1.0, scale=8.0))[0]
    assert abs(disc.sum() - np.pi * 64) < 10 and (disc == disc[::-1]).all() and (disc == disc.T).all()
    # a right triangle (repeated apex) of legs 12.3 (no pixel centre on its edges): x + y below the hypotenuse
    tri = S.masks(_one(S.TRIANGLE, [[0, 0], [1, 0], [0, 1], [0, 1]], scale=12.3, c=(4.0, 4.0)))[0]
    rows, cols = np.indices((32, 32)) + 0.5
    expected = (cols >= 4) & (rows >= 4) & ((cols - 4) + (rows - 4) <= 12.3)
    np.testing.assert_array_equal(tri, expected)
    # rotation by 90 degrees of an ellipse elongated along x gives the transposed mask
    e0 = S.masks(_one(S.ELLIPSE, ax=1.0, ay=0.4, scale=10.0))[0]
    e90 = S.masks(_one(S.ELLIPSE, ax=1.0, ay=0.4, scale=10.0, theta=np.pi / 2))[0]
    np.testing.assert_array_equal(e0, e90.T)
    assert e0.sum(1).max() > e0.sum(0).max()  # wide along x (columns)


def test_load_gives_fixed_splits_and_a_seeded_online_stream():
    cfg = DatasetConfig(name="shapeset", n_train=90, n_valid=45, n_test=36)
    a, b = D.load(cfg, seed=0), D.load(cfg, seed=1)
    assert a.name == "shapeset" and a.num_classes == 9 and a.input_shape == (32, 32, 1) and a.source == "generated"
    assert (len(a.x_train), len(a.x_valid), len(a.x_test)) == (90, 45, 36)
    for split in ("train", "valid", "test"):  # the same fixed sets for every run seed
        np.testing.assert_array_equal(a.split(split)[0], b.split(split)[0])
    assert not np.array_equal(a.x_valid[:36], a.x_test)  # splits are different images
    from initsuite.run.train import train_dataset

    xa, ya = next(iter(train_dataset(a, 16, 5)))
    xb, _ = next(iter(train_dataset(b, 16, 5)))
    xc, _ = next(iter(train_dataset(a, 16, 6)))
    assert xa.shape == (16, 32, 32, 1) and ya.dtype.name == "int64"
    np.testing.assert_array_equal(xa.numpy(), xb.numpy())  # the stream depends on the run seed only
    assert not np.array_equal(xa.numpy(), xc.numpy())
    assert not any(np.array_equal(xa.numpy()[0], t) for t in a.x_train)  # fresh images, not the train sample
    assert len(D.load(DatasetConfig(name="shapeset", n_train=90, limit_train=20), seed=0).x_train) == 20
    with pytest.raises(D.DataError, match="n_valid"):
        D.load(DatasetConfig(name="shapeset", n_valid=0), seed=0)


def test_a_run_trains_on_the_stream(make_cfg):
    from initsuite.run.train import run

    r = run(make_cfg("dataset=shapeset", "dataset.n_train=180", "dataset.n_valid=90", "dataset.n_test=90",
                     "model.depth=2", "model.width=16", "train.batch_size=10", "train.max_steps=6",
                     "probes.every=3", "probes.batch_size=30"))
    assert r.status == "done"
    m = r.metrics
    assert set(m.split) == {"train", "valid", "test"} and m.step.max() == 6
