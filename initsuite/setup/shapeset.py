"""Shapeset-3x2: the generated image task of Glorot & Bengio (2010), section 2.1.

Each 32x32 grey image holds one or two objects, each a triangle, a parallelogram or an
ellipse, with random shape parameters, area (scale), rotation, translation and grey level.
The task is to say which types are present: 9 classes, 3 with one object and the 6
unordered pairs of types (repetition allowed) with two (:data:`CLASSES`). The paper trained
on a stream of fresh images (online learning); here

* :func:`make` draws ``n`` images from a seed, vectorised over the batch: each object's
  inside test (half-planes for the polygons, the quadratic form for the ellipse) is
  evaluated at every pixel centre of every image at once;
* :func:`stream` yields an unbounded, seeded sequence of fresh training batches
  (:func:`train_dataset` wraps it as a ``tf.data.Dataset``);
* ``initsuite.setup.data.load`` makes the suite's :class:`~initsuite.setup.data.DataBundle` of them: fixed valid, test
  (hence probe: the first test examples) and train-evaluation sets drawn from
  :data:`SPLIT_SEED`, the same for every run like a real dataset's files, and the online
  training stream drawn from the run's seed. One "epoch" is ``dataset.n_train`` streamed
  examples.

What the paper states and what this generator chooses where it does not (all constants below):

* shape parameters: triangle angles, each at least :data:`MIN_TRIANGLE_ANGLE` (a uniform
  draw on the simplex of angles); parallelogram side ratio in :data:`SIDE_RATIO` and
  angle in :data:`PARALLELOGRAM_ANGLE`; ellipse axis ratio in :data:`AXIS_RATIO`;
* scale: the object's area, uniform in :data:`AREA_PX` pixels; rotation uniform in
  [0, 2 pi); translation uniform over the positions that keep the object inside the image;
* grey level uniform in :data:`GREY` on a black background; the second object is drawn on
  top and differs from the first by at least :data:`MIN_CONTRAST`;
* overlap: the paper lets the second object cover at most 50 % of the first one's area;
  here the overlapping pixels may be at most :data:`MAX_OVERLAP` of the *smaller* of the two
  objects' pixel areas (which implies the paper's rule for either reading of "its area").
  Violating second objects are redrawn;
* classes are balanced: each chunk of :data:`CHUNK` images holds every class equally often,
  in a random order; the order of the two types in a pair is random.

Pixels are 1 inside an object's mask (pixel centre inside the shape) times its grey level:
no anti-aliasing, so the stored masks and the image agree exactly.
"""

from __future__ import annotations

from typing import Iterator, Tuple

import numpy as np

SIZE = 32  # image side, pixels
SHAPES = ("triangle", "parallelogram", "ellipse")
TRIANGLE, PARALLELOGRAM, ELLIPSE = range(3)
# class id -> the types present (unordered, with repetition): 3 singles, then the 6 pairs
CLASSES: Tuple[Tuple[int, ...], ...] = ((0,), (1,), (2,), (0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
CLASS_NAMES = tuple("+".join(SHAPES[t] for t in c) for c in CLASSES)
NUM_CLASSES = len(CLASSES)

AREA_PX = (64.0, 224.0)  # object area in pixels (of 1024)
MIN_TRIANGLE_ANGLE = np.deg2rad(25.0)
SIDE_RATIO = (0.4, 1.0)  # parallelogram: short side / long side
PARALLELOGRAM_ANGLE = (np.deg2rad(40.0), np.deg2rad(90.0))
AXIS_RATIO = (0.35, 1.0)  # ellipse: minor / major axis
GREY = (0.3, 1.0)
MIN_CONTRAST = 0.2
MAX_OVERLAP = 0.5  # overlap pixels <= MAX_OVERLAP * min(pixel area of object 1, of object 2)
MAX_REDRAWS = 200  # rounds of redrawing violating second objects (far more than ever needed)
CHUNK = 9 * 112  # images per generated chunk; a multiple of the 9 classes, so every chunk is balanced
SPLIT_SEED = 2010  # the fixed train-evaluation / valid / test sets
_STREAM_KEY = 0x5A7E  # keeps every run's training stream apart from the fixed sets

_PIX = (np.arange(SIZE, dtype=np.float32) + 0.5)
_PY, _PX = (a.reshape(1, -1) for a in np.meshgrid(_PIX, _PIX, indexing="ij"))  # (1, 1024): row, column


def _objects(rng: np.random.Generator, types: np.ndarray) -> dict:
    """Random parameters of one object per entry of ``types``: canonical shape (unit area,
    centred at its centroid), area, rotation, centre, grey level."""
    n = len(types)
    f32 = np.float32
    # polygons: 4 counter-clockwise vertices (a triangle repeats its apex: a zero-length edge)
    tri = MIN_TRIANGLE_ANGLE + (np.pi - 3 * MIN_TRIANGLE_ANGLE) * rng.dirichlet(np.ones(3), size=n)
    a, b = tri[:, 0], tri[:, 1]
    apex_len = np.sin(b) / np.sin(a + b)  # law of sines, base of length 1
    apex = np.stack([apex_len * np.cos(a), apex_len * np.sin(a)], -1)
    zeros, base = np.zeros((n, 2)), np.tile([1.0, 0.0], (n, 1))
    tri_v = np.stack([zeros, base, apex, apex], 1)
    ratio = rng.uniform(*SIDE_RATIO, size=n)
    phi = rng.uniform(*PARALLELOGRAM_ANGLE, size=n)
    side = np.stack([ratio * np.cos(phi), ratio * np.sin(phi)], -1)
    par_v = np.stack([zeros, base, base + side, side], 1)
    is_tri = (types == TRIANGLE)[:, None, None]
    verts = np.where(is_tri, tri_v, par_v)
    centroid = np.where(is_tri[:, 0], tri_v[:, :3].mean(1), par_v.mean(1))
    poly_area = np.where(types == TRIANGLE, 0.5 * apex[:, 1], ratio * np.sin(phi))
    verts = (verts - centroid[:, None]) / np.sqrt(poly_area)[:, None, None]
    # ellipse with unit area: pi * ax * ay = 1
    axis = rng.uniform(*AXIS_RATIO, size=n)
    ax = 1.0 / np.sqrt(np.pi * axis)
    ay = axis * ax
    area = rng.uniform(*AREA_PX, size=n)
    scale = np.sqrt(area)
    theta = rng.uniform(0.0, 2 * np.pi, size=n)
    c, s = np.cos(theta), np.sin(theta)
    # half extents of the placed object around its centre
    wx = scale * (np.abs(c[:, None] * verts[..., 0] - s[:, None] * verts[..., 1])).max(1)
    wy = scale * (np.abs(s[:, None] * verts[..., 0] + c[:, None] * verts[..., 1])).max(1)
    ex = scale * np.sqrt((ax * c) ** 2 + (ay * s) ** 2)
    ey = scale * np.sqrt((ax * s) ** 2 + (ay * c) ** 2)
    is_ell = types == ELLIPSE
    hx, hy = np.where(is_ell, ex, wx), np.where(is_ell, ey, wy)
    u = rng.uniform(size=(n, 2))
    cx = np.where(hx < SIZE / 2, hx + u[:, 0] * (SIZE - 2 * hx), SIZE / 2)
    cy = np.where(hy < SIZE / 2, hy + u[:, 1] * (SIZE - 2 * hy), SIZE / 2)
    grey = rng.uniform(*GREY, size=n)
    return dict(types=types, verts=verts.astype(f32), ax=ax.astype(f32), ay=ay.astype(f32), scale=scale.astype(f32),
                cos=c.astype(f32), sin=s.astype(f32), cx=cx.astype(f32), cy=cy.astype(f32), grey=grey.astype(f32),
                area=area)


def masks(obj: dict) -> np.ndarray:
    """Boolean masks (n, 32, 32): pixel centres inside each object.

    A pixel centre p maps to the object's canonical frame as q = R(-theta) (p - c) / scale;
    it is inside a polygon when cross(v_{k+1} - v_k, q - v_k) >= 0 for every edge k
    (counter-clockwise vertices), inside the ellipse when (q_x / a_x)^2 + (q_y / a_y)^2 <= 1.
    """
    dx, dy = _PX - obj["cx"][:, None], _PY - obj["cy"][:, None]
    inv = (1.0 / obj["scale"])[:, None]
    c, s = obj["cos"][:, None], obj["sin"][:, None]
    qx, qy = (c * dx + s * dy) * inv, (-s * dx + c * dy) * inv
    out = np.empty(qx.shape, dtype=bool)
    ell = obj["types"] == ELLIPSE
    if ell.any():
        e = np.flatnonzero(ell)
        out[e] = (qx[e] / obj["ax"][e, None]) ** 2 + (qy[e] / obj["ay"][e, None]) ** 2 <= 1.0
    if (~ell).any():
        p = np.flatnonzero(~ell)
        v, x, y = obj["verts"][p], qx[p], qy[p]
        inside = np.ones(x.shape, dtype=bool)
        for k in range(4):
            v0, v1 = v[:, k], v[:, (k + 1) % 4]
            ex, ey = (v1[:, 0] - v0[:, 0])[:, None], (v1[:, 1] - v0[:, 1])[:, None]
            inside &= ex * (y - v0[:, 1:2]) - ey * (x - v0[:, 0:1]) >= 0
        out[p] = inside
    return out.reshape(-1, SIZE, SIZE)


def _subset(obj: dict, idx: np.ndarray) -> dict:
    return {k: v[idx] for k, v in obj.items()}


def _chunk(rng: np.random.Generator, n: int, return_masks: bool = False):
    """``n`` images with balanced labels (``n`` a multiple of 9 gives exact balance)."""
    y = rng.permutation(np.arange(n) % NUM_CLASSES).astype(np.int64)
    pairs = np.array([c + c if len(c) == 1 else c for c in CLASSES])[y]  # (n, 2) types, singles repeated
    swap = rng.random(n) < 0.5
    pairs = np.where(swap[:, None], pairs[:, ::-1], pairs)
    two = np.array([len(c) == 2 for c in CLASSES])[y]
    first = _objects(rng, pairs[:, 0])
    m1 = masks(first)
    m2 = np.zeros_like(m1)
    g2 = np.zeros(n, dtype=np.float32)
    todo = np.flatnonzero(two)
    for _ in range(MAX_REDRAWS):
        if not len(todo):
            break
        second = _objects(rng, pairs[todo, 1])
        mk = masks(second)
        a1, a2 = m1[todo].sum((1, 2)), mk.sum((1, 2))
        overlap = (m1[todo] & mk).sum((1, 2))
        ok = (overlap <= MAX_OVERLAP * np.minimum(a1, a2)) & (np.abs(second["grey"] - first["grey"][todo]) >= MIN_CONTRAST)
        m2[todo[ok]], g2[todo[ok]] = mk[ok], second["grey"][ok]
        todo = todo[~ok]
    if len(todo):  # pragma: no cover - the rule is easy to meet; never reached in practice
        raise RuntimeError(f"shapeset: {len(todo)} second objects still break the overlap rule after {MAX_REDRAWS} draws")
    x = np.where(m2, g2[:, None, None], np.where(m1, first["grey"][:, None, None], np.float32(0)))
    x = x.astype(np.float32)[..., None]
    return (x, y, m1, m2) if return_masks else (x, y)


def make(n: int, seed, return_masks: bool = False):
    """``n`` images (float32, (n, 32, 32, 1), values in [0, 1]) and labels (int64 class ids of
    :data:`CLASSES`) from ``seed`` (an int or a ``numpy.random.SeedSequence``); the same seed
    gives the same arrays. ``return_masks=True`` also returns both objects' masks (n, 32, 32)
    (all False for the absent second object of one-object images)."""
    rng = np.random.default_rng(seed)
    parts = [_chunk(rng, min(CHUNK, n - i), return_masks) for i in range(0, n, CHUNK)]
    if not parts:
        empty = (np.zeros((0, SIZE, SIZE, 1), np.float32), np.zeros(0, np.int64))
        return empty + (np.zeros((0, SIZE, SIZE), bool),) * 2 if return_masks else empty
    return tuple(np.concatenate(p) for p in zip(*parts))


def stream(seed: int, batch_size: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Unbounded seeded stream of fresh training batches ``(x, y)`` of ``batch_size``."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _STREAM_KEY]))
    x_left, y_left = np.zeros((0, SIZE, SIZE, 1), np.float32), np.zeros(0, np.int64)
    while True:
        x, y = _chunk(rng, CHUNK)
        x, y = np.concatenate([x_left, x]), np.concatenate([y_left, y])
        n = len(x) // batch_size * batch_size
        for i in range(0, n, batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]
        x_left, y_left = x[n:], y[n:]


def train_dataset(seed: int, batch_size: int):
    """:func:`stream` as a prefetched ``tf.data.Dataset`` of ``(x, y)`` batches."""
    import tensorflow as tf

    spec = (tf.TensorSpec((batch_size, SIZE, SIZE, 1), tf.float32), tf.TensorSpec((batch_size,), tf.int64))
    ds = tf.data.Dataset.from_generator(lambda: stream(seed, batch_size), output_signature=spec)
    return ds.prefetch(tf.data.AUTOTUNE)


def splits(n_train: int, n_valid: int, n_test: int, split_seed: int = SPLIT_SEED):
    """The fixed train-evaluation, valid and test sets: one child stream each, so one size
    never changes another split's images."""
    ss = np.random.SeedSequence(split_seed).spawn(3)
    return tuple(make(n, s) for n, s in zip((n_train, n_valid, n_test), ss))
