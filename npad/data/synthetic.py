"""The embedded default dataset (synthetic, MVTec AD layout) and synthetic anomalies for training.

:func:`synthetic_mvtec` writes, once, a small dataset in the MVTec AD layout with
two categories, deterministic from ``seed``:

* ``weave`` (texture): a woven fabric with random phase, orientation (+-10 deg),
  thread period, warp, mottling, colour and lighting.  Defects: ``scratch``
  (thin bright/dark curve), ``hole`` (dark irregular hole), ``stain``
  (translucent blob), ``color`` (local hue change), ``thread`` (a patch woven
  at another angle/period: structural, no colour cue).
* ``gear`` (object): a metal gear on a mottled background with position,
  rotation, scale and lighting jitter.  Defects: ``scratch``, ``hole`` (extra
  drilled hole), ``stain`` (oil), ``color`` (rust), ``missing`` (missing/broken tooth).

Every defect has an exact mask (the set of pixels the defect changed), sizes
and positions vary, and contrasts are moderate, so a detector must model the
normal variation rather than spot any change.  Generation takes a few seconds.

The cache is written atomically: the dataset is built in a temporary sibling
folder and renamed into place; a marker file ``.npad_synthetic.json``
(written last) records version and parameters, so incomplete or outdated
caches are detected and rebuilt.  Default location:
``$NPAD_CACHE/synthetic_mvtec`` or ``~/.cache/npad/synthetic_mvtec``.

:func:`confetti_noise` pastes random coloured blobs on a normal image (the
"confetti noise" of Liznerski et al., ICLR 2021, FCDD, used by ADTR+ as
synthetic anomalies) and returns the image with its exact mask.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "SYNTHETIC_VERSION",
    "SYNTHETIC_CATEGORIES",
    "default_cache_dir",
    "synthetic_mvtec",
    "render_sample",
    "confetti_noise",
    "confetti_batch",
]

SYNTHETIC_VERSION = 1
SYNTHETIC_CATEGORIES = {
    "weave": ("scratch", "hole", "stain", "color", "thread"),
    "gear": ("scratch", "hole", "stain", "color", "missing"),
}
_MARKER = ".npad_synthetic.json"


def default_cache_dir() -> Path:
    """``$NPAD_CACHE`` if set, else ``~/.cache/npad``."""
    env = os.environ.get("NPAD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "npad"


# ----------------------------------------------------------------------------
# building blocks (all vectorised over the pixel grid)
# ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def _gauss_transfer(S: int, sy: float, sx: float) -> np.ndarray:
    """Fourier transfer of a periodic Gaussian blur, H(f) = exp(-2 pi^2 (sy^2 fy^2 + sx^2 fx^2))."""
    fy = np.fft.fftfreq(S)[:, None]  # (S,1) cycles/pixel
    fx = np.fft.rfftfreq(S)[None, :]  # (1,S//2+1)
    return np.exp(-2 * np.pi ** 2 * (sy ** 2 * fy ** 2 + sx ** 2 * fx ** 2))


def _noise(rng: np.random.Generator, S: int, sigma: float | tuple[float, float]) -> np.ndarray:
    """Smooth periodic Gaussian random field, zero mean, unit std: n = (G_sigma * w) / std(.), w white noise."""
    sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma
    w = rng.standard_normal((S, S))  # (S,S)
    n = np.fft.irfft2(np.fft.rfft2(w) * _gauss_transfer(S, float(sy), float(sx)), s=(S, S))  # (S,S)
    return (n - n.mean()) / (n.std() + 1e-12)


@functools.lru_cache(maxsize=8)
def _grid_cached(S: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float64)  # (S,S) pixel coordinates
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _grid(S: int) -> tuple[np.ndarray, np.ndarray]:
    return _grid_cached(int(S))


def _blob(rng: np.random.Generator, S: int, cy: float, cx: float, radius: float) -> np.ndarray:
    """Irregular star-convex blob: |p - c| < R (1 + sum_k a_k sin(k phi + b_k)) in an elliptic metric."""
    yy, xx = _grid(S)
    rot = rng.uniform(0, np.pi)
    asp = rng.uniform(0.55, 1.0)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(rot) + dy * np.sin(rot)
    v = (-dx * np.sin(rot) + dy * np.cos(rot)) / asp
    r, phi = np.hypot(u, v), np.arctan2(v, u)  # (S,S)
    k = np.arange(2, 6)[:, None, None]
    amp = rng.uniform(0.0, 0.18, size=(4, 1, 1)) / np.sqrt(k - 1)
    ph = rng.uniform(0, 2 * np.pi, size=(4, 1, 1))
    rad = radius * (1.0 + (amp * np.sin(k * phi[None] + ph)).sum(0))  # (S,S)
    return r < rad


def _curve(rng: np.random.Generator, S: int, cy: float, cx: float, length: float, width: float) -> np.ndarray:
    """Thin curved line (quadratic Bezier) of given length and width around (cy, cx): EDT(centreline) <= width/2."""
    ang = rng.uniform(0, np.pi)
    d = np.array([np.sin(ang), np.cos(ang)]) * length / 2
    c = np.array([cy, cx])
    p0, p2 = c - d, c + d
    p1 = c + np.array([-d[1], d[0]]) * rng.uniform(-0.6, 0.6)  # bend
    t = np.linspace(0, 1, int(4 * length) + 8)[:, None]  # (T,1)
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2  # (T,2)
    ij = np.round(pts).astype(int)
    ok = (ij >= 0).all(1) & (ij < S).all(1)
    line = np.zeros((S, S), bool)
    line[ij[ok, 0], ij[ok, 1]] = True
    if not line.any():
        line[int(np.clip(cy, 0, S - 1)), int(np.clip(cx, 0, S - 1))] = True
    return ndimage.distance_transform_edt(~line) <= width / 2.0


def _lighting(rng: np.random.Generator, S: int) -> np.ndarray:
    """Multiplicative illumination: brightness b (1 + g <(p - centre)/S, dir>), b ~ U(0.9, 1.1), g ~ U(-0.2, 0.2)."""
    yy, xx = _grid(S)
    a = rng.uniform(0, 2 * np.pi)
    g = rng.uniform(-0.2, 0.2)
    b = rng.uniform(0.9, 1.1)
    return b * (1.0 + g * ((xx / S - 0.5) * np.cos(a) + (yy / S - 0.5) * np.sin(a)))  # (S,S)


def _feather(mask: np.ndarray, px: float) -> np.ndarray:
    """Alpha rising from 0 at the mask border to 1 at ``px`` pixels inside (0 outside: mask stays exact)."""
    if px <= 0:
        return mask.astype(np.float64)
    return np.clip(ndimage.distance_transform_edt(mask) / px, 0.0, 1.0)  # (S,S)


def _place(rng: np.random.Generator, S: int, region: np.ndarray | None, margin: float) -> tuple[float, float]:
    """A random centre inside ``region`` (bool (S,S)) or uniformly inside the margins."""
    if region is not None:
        ys, xs = np.nonzero(region)
        k = int(rng.integers(0, ys.size))
        return float(ys[k]), float(xs[k])
    return float(rng.uniform(margin, S - margin)), float(rng.uniform(margin, S - margin))


# ----------------------------------------------------------------------------
# weave (texture)
# ----------------------------------------------------------------------------

def _weave_field(S: int, theta: float, period: float, ph1: float, ph2: float, warp_u: np.ndarray,
                 warp_v: np.ndarray) -> np.ndarray:
    """Over/under weave intensity: threads along u and v, the upper one chosen by a checkerboard of the crossings."""
    yy, xx = _grid(S)
    u = xx * np.cos(theta) + yy * np.sin(theta) + warp_u  # (S,S)
    v = -xx * np.sin(theta) + yy * np.cos(theta) + warp_v
    a = 2 * np.pi * u / period + ph1
    b = 2 * np.pi * v / period + ph2
    thread_u = np.abs(np.cos(b / 2))  # bright across each horizontal thread
    thread_v = np.abs(np.cos(a / 2))
    top_u = np.sin(a / 2) * np.sin(b / 2) > 0  # which thread lies on top at this crossing
    base = np.where(top_u, thread_u ** 0.6, thread_v ** 0.6)  # (S,S) in [0,1]
    ribs = 0.5 + 0.5 * np.cos(np.where(top_u, a, b) * 3.0)  # fibres along the top thread
    return 0.55 + 0.3 * base + 0.06 * ribs


def _render_weave(rng: np.random.Generator, S: int, defect: str | None):
    scale = S / 256.0
    theta = np.deg2rad(rng.uniform(-10, 10))
    period = rng.uniform(13, 16) * scale
    ph1, ph2 = rng.uniform(0, 2 * np.pi, 2)
    warp_u = 1.5 * scale * _noise(rng, S, 20 * scale)
    warp_v = 1.5 * scale * _noise(rng, S, 20 * scale)
    inten = _weave_field(S, theta, period, ph1, ph2, warp_u, warp_v)  # (S,S)
    inten = inten * (1 + 0.05 * _noise(rng, S, 12 * scale)) + 0.03 * _noise(rng, S, 0.8)
    colour = np.array([0.62, 0.52, 0.40]) + rng.normal(0, 0.02, 3)  # (3,)
    post = np.random.default_rng(rng.integers(0, 2 ** 63))  # lighting/noise stream, independent of the defect
    img = inten[None] * colour[:, None, None]  # (3,S,S)
    mask = np.zeros((S, S), bool)

    if defect is not None:
        cy, cx = _place(rng, S, None, 30 * scale)
        if defect == "scratch":
            mask = _curve(rng, S, cy, cx, rng.uniform(30, 110) * scale, rng.uniform(1.5, 3.5) * scale)
            sign = rng.choice([-1.0, 1.0])
            img = np.where(mask[None], img * (1 + sign * rng.uniform(0.2, 0.35)), img)
        elif defect == "hole":
            mask = _blob(rng, S, cy, cx, rng.uniform(3, 11) * scale)
            dark = 0.08 + 0.03 * _noise(rng, S, 1.5)
            img = np.where(mask[None], dark[None] * np.array([1.0, 0.95, 0.9])[:, None, None], img)
        elif defect == "stain":
            mask = _blob(rng, S, cy, cx, rng.uniform(7, 24) * scale)
            alpha = rng.uniform(0.25, 0.5) * _feather(mask, 3 * scale)  # (S,S)
            tint = np.array([0.30, 0.22, 0.12]) * rng.uniform(0.7, 1.3)
            img = img * (1 - alpha[None]) + alpha[None] * tint[:, None, None]
        elif defect == "color":
            mask = _blob(rng, S, cy, cx, rng.uniform(10, 30) * scale)
            gains = 1 + rng.choice([-1, 1], 3) * rng.uniform(0.12, 0.25, 3)  # (3,) per-channel gain
            alpha = _feather(mask, 2 * scale)
            img = img * (1 + alpha[None] * (gains[:, None, None] - 1))
        elif defect == "thread":
            mask = _blob(rng, S, cy, cx, rng.uniform(12, 30) * scale)
            theta2 = theta + np.deg2rad(rng.uniform(25, 65)) * rng.choice([-1, 1])
            period2 = period * rng.uniform(0.6, 0.8)
            alt = _weave_field(S, theta2, period2, ph1, ph2, warp_u, warp_v)
            alt = alt * (1 + 0.05 * _noise(rng, S, 12 * scale))
            alt = alt * (inten.mean() / alt.mean())  # same mean brightness: structure only
            img = np.where(mask[None], alt[None] * colour[:, None, None], img)
        else:
            raise ValueError(f"unknown weave defect {defect!r}; known: {SYNTHETIC_CATEGORIES['weave']}")

    img = img * _lighting(post, S)[None] + post.normal(0, 0.01, (3, S, S))
    return img, mask


# ----------------------------------------------------------------------------
# gear (object)
# ----------------------------------------------------------------------------

def _gear_alpha(S: int, cy: float, cx: float, rot: float, R: float, teeth: int, tooth_h: float,
                r_hole: float, missing: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Anti-aliased coverage of the gear (1 px ramp) and the polar coordinates (r, phi) of each pixel."""
    yy, xx = _grid(S)
    dy, dx = yy - cy, xx - cx
    r = np.hypot(dy, dx)  # (S,S)
    phi = np.mod(np.arctan2(dy, dx) - rot, 2 * np.pi)  # (S,S) in the gear's frame
    pos = phi * teeth / (2 * np.pi)  # tooth coordinate
    idx = np.floor(pos).astype(int)  # which tooth sector
    frac = pos - idx
    prof = np.clip(3.0 - 6.0 * np.abs(frac - 0.5), 0.0, 1.0)  # trapezoidal tooth profile
    if len(missing):
        prof = np.where(np.isin(idx % teeth, list(missing)), 0.0, prof)
    r_out = R + tooth_h * prof  # (S,S)
    key = (np.abs(np.mod(phi + np.pi, 2 * np.pi) - np.pi) < 0.25) & (r < r_hole + 0.3 * r_hole)  # keyway notch
    inner = np.clip(r - r_hole + 0.5, 0.0, 1.0) * (~key)
    alpha = np.clip(r_out - r + 0.5, 0.0, 1.0) * inner  # (S,S)
    return alpha, r, phi


def _render_gear(rng: np.random.Generator, S: int, defect: str | None):
    scale = S / 256.0
    cy = S / 2 + rng.uniform(-8, 8) * scale
    cx = S / 2 + rng.uniform(-8, 8) * scale
    rot = np.deg2rad(rng.uniform(-15, 15))
    R = rng.uniform(0.97, 1.03) * 78 * scale
    teeth, tooth_h, r_hole = 14, 14 * scale, 24 * scale
    post = np.random.default_rng(rng.integers(0, 2 ** 63))  # lighting/noise stream, independent of the defect
    full, r, phi = _gear_alpha(S, cy, cx, rot, R, teeth, tooth_h, r_hole)  # (S,S) defect-free coverage
    alpha = full

    # background: mottled blue-grey table
    bg = 0.22 + 0.03 * _noise(rng, S, 10 * scale) + 0.015 * _noise(rng, S, 1.0)
    bg_col = np.array([0.85, 0.95, 1.1]) * rng.uniform(0.9, 1.1)
    bg_img = bg[None] * bg_col[:, None, None]  # (3,S,S)
    # metal: radial brushing + concentric machining rings + a specular band
    brushed = 0.02 * np.sin(r / (1.7 * scale) + 2 * np.pi * rng.random())
    streak = 0.03 * _noise(rng, S, (0.6, 6 * scale))  # anisotropic grain
    spec_ang = rng.uniform(0, 2 * np.pi)
    spec = 0.12 * np.exp(-((np.mod(phi + rot - spec_ang + np.pi, 2 * np.pi) - np.pi) ** 2) / 0.5)
    rim = 0.08 * np.clip(1 - np.abs(r - R) / (4 * scale), 0, 1)  # bevel at the rim
    hub = -0.07 * (r < r_hole + 9 * scale)  # recessed hub ring
    metal = 0.58 + brushed + streak + spec + rim + hub  # (S,S)
    metal_col = np.array([1.0, 0.98, 0.94]) * rng.uniform(0.95, 1.05)
    fg = metal[None] * metal_col[:, None, None]  # (3,S,S)
    mark = ((np.abs(np.mod(phi - 0.6 + np.pi, 2 * np.pi) - np.pi) * r < 2.2 * scale)
            & (np.abs(r - (r_hole + 20 * scale)) < 2.2 * scale))  # printed dot: breaks rotational symmetry
    fg = np.where(mark[None], fg * 0.55, fg)

    face = alpha >= 0.999  # pixels fully on the gear (defects on the face)
    face_inner = face & (r < R - 3 * scale) & (r > r_hole + 3 * scale)
    mask = np.zeros((S, S), bool)
    if defect == "missing":
        k = int(rng.integers(0, teeth))
        missing = [k] if rng.random() < 0.7 else [k, (k + 1) % teeth]
        alpha, _, _ = _gear_alpha(S, cy, cx, rot, R, teeth, tooth_h, r_hole, missing)
        if rng.random() < 0.5:  # a rough broken stump rather than a clean cut
            gone = (full >= 0.5) & (alpha < 0.5)
            jag = _blob(rng, S, *_place(rng, S, gone, 0), radius=rng.uniform(2, 5) * scale)
            alpha = np.where(jag, 0.0, alpha)
        mask = np.abs(full - alpha) > 1e-6  # every pixel whose coverage changed (exact)
    elif defect is not None:
        cy2, cx2 = _place(rng, S, face_inner, 0)
        if defect == "scratch":
            m = _curve(rng, S, cy2, cx2, rng.uniform(20, 70) * scale, rng.uniform(1.2, 2.8) * scale)
            mask = m & face
            fg = np.where(mask[None], fg * (1 + rng.uniform(0.2, 0.35)), fg)
        elif defect == "hole":
            m = _blob(rng, S, cy2, cx2, rng.uniform(2.5, 7) * scale) & face
            mask = m
            alpha = np.where(m, 0.0, alpha)  # background shows through
        elif defect == "stain":
            m = _blob(rng, S, cy2, cx2, rng.uniform(6, 18) * scale) & face
            mask = m
            a = rng.uniform(0.3, 0.55) * _feather(m, 2.5 * scale)
            oil = np.array([0.25, 0.22, 0.15]) * rng.uniform(0.8, 1.2)
            fg = fg * (1 - a[None]) + a[None] * oil[:, None, None]
        elif defect == "color":
            m = _blob(rng, S, cy2, cx2, rng.uniform(8, 22) * scale) & face
            mask = m
            a = _feather(m, 2 * scale)
            rust = np.array([1.15, 0.8, 0.55])
            fg = fg * (1 + a[None] * rng.uniform(0.5, 1.0) * (rust[:, None, None] - 1))
        else:
            raise ValueError(f"unknown gear defect {defect!r}; known: {SYNTHETIC_CATEGORIES['gear']}")

    shadow = ndimage.gaussian_filter(full, 4 * scale)  # cast by the intact gear: keeps masks exact
    shadow = ndimage.shift(shadow, (3 * scale, 3 * scale), order=1, mode="nearest")
    bg_img = bg_img * (1 - 0.35 * shadow[None])
    img = alpha[None] * fg + (1 - alpha[None]) * bg_img
    img = img * _lighting(post, S)[None] + post.normal(0, 0.01, (3, S, S))
    return img, mask


_RENDER = {"weave": _render_weave, "gear": _render_gear}


def render_sample(category: str, defect: str | None, rng: np.random.Generator | int, size: int = 256):
    """One synthetic image ``(3, S, S)`` float32 in [0, 1] and its mask ``(1, S, S)`` float32 (``defect=None``: normal)."""
    if category not in _RENDER:
        raise ValueError(f"unknown synthetic category {category!r}; known: {sorted(_RENDER)}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    img, mask = _RENDER[category](rng, int(size), defect)
    return np.clip(img, 0, 1).astype(np.float32), mask[None].astype(np.float32)


# ----------------------------------------------------------------------------
# writing the dataset
# ----------------------------------------------------------------------------

def _save_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    if arr.ndim == 3:
        a = np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)  # (S,S,3)
    else:
        a = arr.astype(np.uint8)
    Image.fromarray(a).save(path, compress_level=3)


def _params(seed: int, size: int, n_train: int, n_test_good: int, n_per_defect: int) -> dict:
    return {"version": SYNTHETIC_VERSION, "seed": int(seed), "size": int(size), "n_train": int(n_train),
            "n_test_good": int(n_test_good), "n_per_defect": int(n_per_defect),
            "categories": {k: list(v) for k, v in SYNTHETIC_CATEGORIES.items()}}


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / _MARKER).read_text())
    except (OSError, ValueError):
        return None


def _build(dest: Path, params: dict) -> None:
    from concurrent.futures import ThreadPoolExecutor

    seed, S = params["seed"], params["size"]
    jobs = []
    for ci, (cat, defects) in enumerate(SYNTHETIC_CATEGORIES.items()):
        jobs += [(ci, cat, "train", "good", 0, k) for k in range(params["n_train"])]
        jobs += [(ci, cat, "test", "good", 0, k) for k in range(params["n_test_good"])]
        jobs += [(ci, cat, "test", d, 1 + di, k) for di, d in enumerate(defects) for k in range(params["n_per_defect"])]
        for split, names in (("train", ["good"]), ("test", ["good", *defects])):
            for d in names:
                (dest / cat / split / d).mkdir(parents=True, exist_ok=True)
        for d in defects:
            (dest / cat / "ground_truth" / d).mkdir(parents=True, exist_ok=True)

    def one(job):
        ci, cat, split, dname, di, k = job
        rng = np.random.default_rng([seed, ci, 0 if split == "train" else 1, di, k])  # per-image stream
        img, mask = render_sample(cat, None if dname == "good" else dname, rng, S)
        _save_png(dest / cat / split / dname / f"{k:03d}.png", img)
        if dname != "good":
            _save_png(dest / cat / "ground_truth" / dname / f"{k:03d}_mask.png", (mask[0] > 0.5).astype(np.uint8) * 255)

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:  # NumPy, FFT and zlib release the GIL
        list(pool.map(one, jobs))
    (dest / "README.txt").write_text(
        "Synthetic anomaly-detection dataset in the MVTec AD layout, generated by npad.data.synthetic_mvtec.\n"
        f"Parameters: {json.dumps(params)}\n"
    )
    from ..io import atomic_write

    with atomic_write(dest / _MARKER, "w") as f:  # written last: marks a complete dataset
        json.dump(dict(params, created=time.strftime("%Y-%m-%dT%H:%M:%S")), f)


def synthetic_mvtec(root: str | os.PathLike | None = None, seed: int = 0, size: int = 256, *,
                    n_train: int = 50, n_test_good: int = 20, n_per_defect: int = 5,
                    overwrite: bool = False) -> Path:
    """Return the root of the synthetic MVTec-layout dataset, generating it first if absent or outdated.

    ``root`` defaults to ``default_cache_dir()/synthetic_mvtec/v<version>-seed<seed>-<size>``.
    Categories ``weave`` and ``gear`` each get ``n_train`` normal training images, ``n_test_good``
    normal test images and ``n_per_defect`` images of each of 5 defect types.  The build goes to a
    temporary sibling folder which is renamed into place, so an interrupted run never leaves a
    half dataset.  A non-empty ``root`` that is not an npad synthetic dataset is never deleted.
    """
    if int(size) < 64:
        raise ValueError(f"synthetic_mvtec: size must be >= 64, got {size}")
    params = _params(seed, size, n_train, n_test_good, n_per_defect)
    if root is None:
        root = default_cache_dir() / "synthetic_mvtec" / f"v{SYNTHETIC_VERSION}-seed{int(seed)}-{int(size)}"
    root = Path(root).expanduser()
    marker = _read_marker(root)
    if marker is not None and not overwrite:
        same = {k: marker.get(k) for k in params} == params
        if same:
            return root
    if root.exists() and marker is None and any(root.iterdir()):
        raise FileExistsError(
            f"synthetic_mvtec: {root} exists, is not empty and is not an npad synthetic dataset "
            f"(no {_MARKER}); refusing to overwrite it"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=str(root.parent)))
    try:
        _build(tmp, params)
        from ..io import default_mode

        os.chmod(tmp, default_mode(directory=True))  # mkdtemp makes a private (0o700) folder
        old = None
        if root.exists():  # outdated complete cache or empty folder: move aside, then swap
            old = root.parent / f".{root.name}.old-{os.getpid()}-{time.time_ns()}"
            os.replace(root, old)
        try:
            os.replace(tmp, root)
        except OSError:
            # another process finished first: keep its dataset if complete and matching
            m = _read_marker(root)
            if m is not None and {k: m.get(k) for k in params} == params:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


# ----------------------------------------------------------------------------
# confetti noise
# ----------------------------------------------------------------------------

def confetti_noise(image: np.ndarray, rng: np.random.Generator | int | None = None, n_blobs: tuple[int, int] = (1, 6),
                   blob_size: tuple[float, float] = (0.02, 0.12), value_range: tuple[float, float] | None = None,
                   rotate: bool = True, square: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Paste random uniformly coloured rectangles ("confetti", FCDD, Liznerski et al. 2021) on a ``(C,H,W)`` image.

    ``n_blobs`` ~ U{lo..hi}; each blob side ~ U(blob_size) * min(H, W) (``square``: equal sides),
    optionally rotated, at a uniform position; colour ~ U(value_range) per channel, where
    ``value_range`` None means the image's own per-channel [min, max] (works for images in
    [0, 1] and ImageNet-normalised ones).  Returns ``(image', mask)`` with ``mask`` float32
    ``(1, H, W)`` = 1 exactly where a blob was pasted.  The input is not modified.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    x = np.asarray(image, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"confetti_noise: image must be (C,H,W), got shape {x.shape}")
    C, H, W = x.shape
    if value_range is None:
        lo = x.reshape(C, -1).min(1)  # (C,)
        hi = x.reshape(C, -1).max(1)
        hi = np.where(hi > lo, hi, lo + 1.0)
    else:
        lo = np.full(C, value_range[0], np.float32)
        hi = np.full(C, value_range[1], np.float32)
    out = x.copy()
    mask = np.zeros((H, W), bool)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)  # (H,W)
    m = min(H, W)
    for _ in range(int(rng.integers(n_blobs[0], n_blobs[1] + 1))):  # loop over blobs, not pixels
        h = rng.uniform(*blob_size) * m
        w = h if square else rng.uniform(*blob_size) * m
        cy, cx = rng.uniform(0, H), rng.uniform(0, W)
        a = rng.uniform(0, np.pi) if rotate else 0.0
        u = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
        v = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
        blob = (np.abs(u) <= max(w, 1.0) / 2) & (np.abs(v) <= max(h, 1.0) / 2)  # (H,W)
        colour = rng.uniform(lo, hi).astype(np.float32)  # (C,)
        out = np.where(blob[None], colour[:, None, None], out)
        mask |= blob
    return out, mask[None].astype(np.float32)


def confetti_batch(images: np.ndarray, rng: np.random.Generator | int | None = None, p: float = 0.5,
                   **kwargs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply :func:`confetti_noise` to each image of ``(B,C,H,W)`` with probability ``p``.

    Returns ``(images', masks (B,1,H,W), labels (B,) int64)`` with label 1 where noise was pasted.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"confetti_batch: images must be (B,C,H,W), got shape {x.shape}")
    out = x.copy()
    masks = np.zeros((x.shape[0], 1) + x.shape[2:], np.float32)  # (B,1,H,W)
    hit = rng.random(x.shape[0]) < p  # (B,)
    for b in np.flatnonzero(hit):  # loop over images
        out[b], masks[b] = confetti_noise(x[b], rng, **kwargs)
    labels = (masks.reshape(x.shape[0], -1).max(1) > 0).astype(np.int64)
    return out, masks, labels
