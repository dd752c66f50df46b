"""dSprites, generated: white 2-D shapes on a black 64 x 64 canvas (Matthey, Higgins, Hassabis
and Lerchner, 2017, "dSprites: disentanglement testing sprites dataset"), rendered procedurally
from its five factors of variation, so nothing is downloaded and every image is reproducible.

Factors (:data:`FACTORS`, with the number of values of each):

* ``shape``: square, ellipse, heart (3)
* ``scale``: 6 values, linearly spaced in [0.5, 1]
* ``orientation``: 40 values, linearly spaced in [0, 2 pi) (no duplicate 2 pi; the square and
  the ellipse are symmetric, so some orientations look alike, as in the original)
* ``pos_x``, ``pos_y``: 32 values each, linearly spaced in [0, 1] (x to the right, y downward)

Every combination once gives 3 * 6 * 40 * 32 * 32 = 737,280 images (:data:`N_IMAGES`); index i
is the combination in C order (``numpy.unravel_index(i, FACTOR_SIZES)``), as the original.

Geometry (pixel centres at integer coordinates 0..63): the shape's centre moves over
[15, 48] in x and y (:data:`CENTER_RANGE`); in the shape's own frame (rotated by the orientation,
divided by ``scale * UNIT`` with ``UNIT`` = 10 pixels), a pixel is inside when

* square: max(|u|, |v|) <= 1                      (side 20 px at scale 1, 400 px)
* ellipse: (u / 1.4)^2 + (v / 0.7)^2 <= 1        (semi-axes 14 x 7 px at scale 1, ~308 px)
* heart: (u^2 + w^2 - 1)^3 - u^2 w^3 <= 0, w = -v + 0.1  (the classic implicit heart, point
  down; ~370 px at scale 1)

so every shape at every scale and orientation stays inside the canvas. Images are binary
(``supersample=1``, like the original) or antialiased by averaging ``supersample^2`` sub-pixel
samples. Rendering is vectorised over a batch of factor tuples.

>>> from npad.data.dsprites import DSprites
>>> ds = DSprites()
>>> x, f = ds.sample(64, rng=0)           # (64, 1, 64, 64) float32 in [0, 1], (64, 5) int
>>> ds[12345]["factors"]                  # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np

__all__ = ["FACTORS", "FACTOR_SIZES", "N_IMAGES", "SHAPES", "UNIT", "CENTER_RANGE", "factor_values",
           "render", "DSprites"]

SHAPES = ("square", "ellipse", "heart")
FACTORS = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
N_IMAGES = int(np.prod(FACTOR_SIZES))
SIZE = 64
UNIT = 10.0                       # pixels per shape unit at scale 1
CENTER_RANGE = (15.0, 48.0)       # pixel coordinates of the centre at position 0 and 1


def factor_values():
    """The value of every index of every factor: a dict name -> 1-d array."""
    return {
        "shape": np.arange(3),
        "scale": np.linspace(0.5, 1.0, 6),
        "orientation": np.linspace(0.0, 2 * np.pi, 40, endpoint=False),
        "pos_x": np.linspace(0.0, 1.0, 32),
        "pos_y": np.linspace(0.0, 1.0, 32),
    }


_VALUES = factor_values()


def _inside(shape, u, v):
    """Boolean inside-test in the shape frame; ``shape`` broadcasts against u, v."""
    sq = np.maximum(np.abs(u), np.abs(v)) <= 1.0
    el = (u / 1.4) ** 2 + (v / 0.7) ** 2 <= 1.0
    w = -v + 0.1
    r = u * u + w * w - 1.0
    he = r * r * r - u * u * w * w * w <= 0.0
    return np.where(shape == 0, sq, np.where(shape == 1, el, he))


def render(factors, supersample=1, chunk=256):
    """Images of a batch of factor index tuples: ``factors`` (N, 5) ints in the order of
    :data:`FACTORS` -> (N, 1, 64, 64) float32 in [0, 1] (binary when ``supersample == 1``)."""
    f = np.asarray(factors)
    if f.ndim == 1:
        f = f[None]
    if f.ndim != 2 or f.shape[1] != 5:
        raise ValueError(f"render: factors must be (N, 5) indices, got shape {f.shape}")
    f = f.astype(np.int64)
    for k, (n, name) in enumerate(zip(FACTOR_SIZES, FACTORS)):
        if f.size and (f[:, k].min() < 0 or f[:, k].max() >= n):
            raise IndexError(f"render: factor {name!r} index out of range 0..{n - 1}")
    s = int(supersample)
    if s < 1:
        raise ValueError(f"render: supersample must be >= 1, got {supersample}")
    offs = (np.arange(s) + 0.5) / s - 0.5                           # sub-pixel sample offsets
    grid = (np.arange(SIZE)[:, None] + offs[None, :]).reshape(-1).astype(np.float32)   # SIZE * s coordinates
    out = np.empty((len(f), 1, SIZE, SIZE), np.float32)
    lo, hi = CENTER_RANGE
    for i in range(0, len(f), chunk):
        b = f[i:i + chunk]
        shape = b[:, 0][:, None, None]
        scale = (_VALUES["scale"][b[:, 1]][:, None, None] * UNIT).astype(np.float32)
        th = _VALUES["orientation"][b[:, 2]][:, None, None].astype(np.float32)
        cx = (lo + (hi - lo) * _VALUES["pos_x"][b[:, 3]])[:, None, None].astype(np.float32)
        cy = (lo + (hi - lo) * _VALUES["pos_y"][b[:, 4]])[:, None, None].astype(np.float32)
        dx = grid[None, None, :] - cx                                # columns
        dy = grid[None, :, None] - cy                                # rows
        c, sn = np.cos(th), np.sin(th)
        u = (c * dx + sn * dy) / scale                               # rotate by -theta into the shape frame
        v = (-sn * dx + c * dy) / scale
        m = _inside(shape, u, v).astype(np.float32)
        if s > 1:
            m = m.reshape(len(b), SIZE, s, SIZE, s).mean(axis=(2, 4))
        out[i:i + chunk, 0] = m
    return out


class DSprites:
    """The generated dSprites: indexable like the original (``len`` 737,280, item i a dict with
    ``image`` (1, 64, 64) float32, ``factors`` (5,) int64 indices and ``values`` (5,) float64),
    and sampled lazily (:meth:`sample`, :meth:`sample_fixed`) without building the whole set.

    ``supersample``: 1 for binary images, k > 1 for antialiasing by k x k sub-pixel samples."""

    factors = FACTORS
    factor_sizes = FACTOR_SIZES

    def __init__(self, supersample=1):
        self.supersample = int(supersample)
        self.values = factor_values()

    def __len__(self):
        return N_IMAGES

    @staticmethod
    def index_to_factors(index):
        """Combination index (or array of them) -> (..., 5) factor indices (C order)."""
        idx = np.asarray(index)
        if np.any(idx < 0) or np.any(idx >= N_IMAGES):
            raise IndexError(f"DSprites: index out of range 0..{N_IMAGES - 1}")
        return np.stack(np.unravel_index(idx, FACTOR_SIZES), axis=-1).astype(np.int64)

    @staticmethod
    def factors_to_index(factors):
        f = np.asarray(factors, np.int64)
        return np.ravel_multi_index(tuple(np.moveaxis(f, -1, 0)), FACTOR_SIZES)

    def to_values(self, factors):
        """Factor indices (..., 5) -> factor values (..., 5) float64 (shape as 0, 1, 2)."""
        f = np.asarray(factors, np.int64)
        return np.stack([self.values[n][f[..., k]] for k, n in enumerate(FACTORS)], axis=-1).astype(np.float64)

    def __getitem__(self, index):
        if isinstance(index, slice):
            index = np.arange(N_IMAGES)[index]
        if np.ndim(index) == 0:
            f = self.index_to_factors(int(index))
            return {"image": self.render(f[None])[0], "factors": f, "values": self.to_values(f)}
        f = self.index_to_factors(index)
        return {"image": self.render(f), "factors": f, "values": self.to_values(f)}

    def render(self, factors):
        return render(factors, self.supersample)

    def sample_factors(self, n, rng=None):
        """``n`` factor tuples drawn uniformly (each factor independently), (n, 5) int64."""
        rng = np.random.default_rng(rng)
        return np.stack([rng.integers(0, k, n) for k in FACTOR_SIZES], axis=1).astype(np.int64)

    def sample(self, n, rng=None):
        """``n`` images with their factors, uniform over the 737,280 combinations:
        ((n, 1, 64, 64) float32, (n, 5) int64)."""
        f = self.sample_factors(n, rng)
        return self.render(f), f

    def sample_fixed(self, n, factor, value=None, rng=None):
        """``n`` images sharing one value of ``factor`` (name or index; ``value`` an index, random
        when None), the other factors uniform: ((n, 1, 64, 64), (n, 5))."""
        rng = np.random.default_rng(rng)
        k = FACTORS.index(factor) if isinstance(factor, str) else int(factor)
        f = self.sample_factors(n, rng)
        f[:, k] = rng.integers(0, FACTOR_SIZES[k]) if value is None else int(value)
        return self.render(f), f

    def all_factors(self):
        """Every combination once, (737280, 5) int64, in index order."""
        return self.index_to_factors(np.arange(N_IMAGES))

    def iter_all(self, batch_size=4096):
        """Every image once, in index order, as (images, factors) batches (rendered lazily)."""
        for i in range(0, N_IMAGES, batch_size):
            f = self.index_to_factors(np.arange(i, min(i + batch_size, N_IMAGES)))
            yield self.render(f), f
