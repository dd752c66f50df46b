"""Image/mask transforms on NumPy arrays, applied identically to both where geometric.

Every transform is a callable ``t(image, mask=None, rng=None) -> (image, mask)``:

* ``image``: float32 ``(C, H, W)`` (values in [0, 1] before :class:`Normalize`),
* ``mask``: float32 ``(1, H, W)`` in {0, 1}, or None,
* ``rng``: a ``numpy.random.Generator`` (or an int seed) used by random transforms; when None they
  draw from their own generator seeded at construction (``seed=``), so a
  pipeline is reproducible either way.  Datasets pass a per-sample generator
  derived from ``(seed, epoch, index)`` so results do not depend on threading.

Images are interpolated bilinearly (antialiased when shrinking, as PIL and
torchvision's PIL path do), masks by nearest neighbour so they stay binary.
Rotations follow torchvision: positive angles turn counter-clockwise about the
centre, corners are filled with ``fill`` (0 = black, as in the CFLOW-AD/ADTR
code that uses ``RandomRotation``).
"""
from __future__ import annotations

import numbers
from typing import Callable, Sequence

import numpy as np

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "resize",
    "center_crop",
    "rotate",
    "normalize",
    "denormalize",
    "Compose",
    "Resize",
    "CenterCrop",
    "RandomCrop",
    "RandomRotation",
    "RandomHorizontalFlip",
    "RandomVerticalFlip",
    "RandomShift",
    "Normalize",
    "standard_transform",
    "train_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(size, numbers.Integral):
        size = (int(size), int(size))
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{name}: size must be a positive int or (height, width), got {size}")
    return size  # type: ignore[return-value]


def _check(image: np.ndarray, mask: np.ndarray | None, name: str) -> None:
    if image.ndim != 3:
        raise ValueError(f"{name}: image must be (C,H,W), got shape {image.shape}")
    if mask is not None and (mask.ndim != 3 or mask.shape[1:] != image.shape[1:]):
        raise ValueError(f"{name}: mask shape {mask.shape} does not match image shape {image.shape}")


# ----------------------------------------------------------------------------
# functional ops
# ----------------------------------------------------------------------------

def resize(x: np.ndarray, size: int | Sequence[int], interpolation: str = "bilinear") -> np.ndarray:
    """Resize a ``(C,H,W)`` array to ``size`` = (h, w) (int: square), ``interpolation`` 'bilinear' | 'nearest' | 'bicubic'.

    Uses PIL's float ('F' mode) resampling per channel; bilinear/bicubic are antialiased when shrinking.
    """
    from PIL import Image

    h, w = _pair(size, "resize")
    if x.ndim != 3:
        raise ValueError(f"resize: expected (C,H,W), got shape {x.shape}")
    if x.shape[1:] == (h, w):
        return x.astype(np.float32, copy=False)
    filt = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST, "bicubic": Image.BICUBIC}.get(interpolation)
    if filt is None:
        raise ValueError(f"resize: interpolation must be 'bilinear', 'nearest' or 'bicubic', got {interpolation!r}")
    out = np.empty((x.shape[0], h, w), np.float32)  # (C,h,w)
    for c in range(x.shape[0]):  # loop over channels only
        im = Image.fromarray(np.ascontiguousarray(x[c], dtype=np.float32), mode="F")
        out[c] = np.asarray(im.resize((w, h), resample=filt))
    return out


def center_crop(x: np.ndarray, size: int | Sequence[int]) -> np.ndarray:
    """Central ``(h, w)`` window of a ``(C,H,W)`` array, top = (H - h) // 2 as torchvision (rounded)."""
    h, w = _pair(size, "center_crop")
    H, W = x.shape[-2:]
    if h > H or w > W:
        raise ValueError(f"center_crop: crop {(h, w)} is larger than the image {(H, W)}")
    top, left = int(round((H - h) / 2.0)), int(round((W - w) / 2.0))
    return x[..., top:top + h, left:left + w]  # (C,h,w)


def rotate(x: np.ndarray, angle: float, order: int = 1, fill: float = 0.0, padding_mode: str = "constant") -> np.ndarray:
    """Rotate a ``(C,H,W)`` array by ``angle`` degrees counter-clockwise about its centre, same size.

    ``order`` 1 = bilinear (images), 0 = nearest (masks); ``padding_mode`` 'constant' (with ``fill``),
    'reflect' or 'nearest' for the uncovered corners.
    """
    from scipy import ndimage

    if angle == 0:
        return x
    mode = {"constant": "constant", "reflect": "reflect", "nearest": "nearest"}.get(padding_mode)
    if mode is None:
        raise ValueError(f"rotate: padding_mode must be 'constant', 'reflect' or 'nearest', got {padding_mode!r}")
    out = ndimage.rotate(x, float(angle), axes=(1, 2), reshape=False, order=order, mode=mode, cval=fill)
    return out.astype(np.float32, copy=False)  # (C,H,W)


def normalize(x: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """Per-channel standardisation x' = (x - mean_c) / std_c (ImageNet statistics by default)."""
    m = np.asarray(mean, np.float32).reshape(-1, 1, 1)  # (C,1,1)
    s = np.asarray(std, np.float32).reshape(-1, 1, 1)  # (C,1,1)
    if x.shape[-3] != m.shape[0] and m.shape[0] != 1:
        raise ValueError(f"normalize: image has {x.shape[-3]} channels but mean/std have {m.shape[0]}")
    return ((x - m) / s).astype(np.float32)


def denormalize(x: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """Inverse of :func:`normalize`: x = x' * std_c + mean_c, for ``(C,H,W)`` or ``(B,C,H,W)``."""
    m = np.asarray(mean, np.float32).reshape(-1, 1, 1)  # (C,1,1)
    s = np.asarray(std, np.float32).reshape(-1, 1, 1)
    return (np.asarray(x, np.float32) * s + m).astype(np.float32)


# ----------------------------------------------------------------------------
# transform objects
# ----------------------------------------------------------------------------

class Transform:
    """Base class: deterministic transforms ignore ``rng``; random ones use it or their own seeded generator."""

    def __init__(self, seed: int | None = 0):
        self._rng = np.random.default_rng(seed)

    def _gen(self, rng: np.random.Generator | int | None) -> np.random.Generator:
        if rng is None:
            return self._rng
        return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)

    def __call__(self, image, mask=None, rng=None):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply transforms in order, threading one generator through all of them."""

    def __init__(self, transforms: Sequence[Callable], seed: int | None = 0):
        super().__init__(seed)
        self.transforms = list(transforms)

    def __call__(self, image, mask=None, rng=None):
        rng = self._gen(rng)
        for t in self.transforms:
            image, mask = t(image, mask, rng)
        return image, mask


class Resize(Transform):
    """Resize to ``size``: (h, w), or an int for the *shorter side* keeping the aspect ratio (torchvision semantics).

    Image bilinear (or ``interpolation``), mask nearest.
    """

    def __init__(self, size: int | Sequence[int], interpolation: str = "bilinear"):
        super().__init__(None)
        self.size = size
        self.interpolation = interpolation

    def target(self, H: int, W: int) -> tuple[int, int]:
        if isinstance(self.size, numbers.Integral):
            s = int(self.size)
            return (s, max(1, int(s * W / H))) if H <= W else (max(1, int(s * H / W)), s)
        return _pair(self.size, "Resize")

    def __call__(self, image, mask=None, rng=None):
        _check(image, mask, "Resize")
        hw = self.target(*image.shape[1:])
        image = resize(image, hw, self.interpolation)
        if mask is not None:
            mask = resize(mask, hw, "nearest")
        return image, mask


class CenterCrop(Transform):
    """Central crop of ``size`` applied to image and mask."""

    def __init__(self, size: int | Sequence[int]):
        super().__init__(None)
        self.size = size

    def __call__(self, image, mask=None, rng=None):
        _check(image, mask, "CenterCrop")
        return center_crop(image, self.size), None if mask is None else center_crop(mask, self.size)


class RandomCrop(Transform):
    """Crop of ``size`` at a uniformly random position (FAVAE's random texture patches), same window for the mask.

    ``pad_if_needed`` zero-pads images smaller than the crop instead of raising.
    """

    def __init__(self, size: int | Sequence[int], pad_if_needed: bool = False, seed: int | None = 0):
        super().__init__(seed)
        self.size = size
        self.pad_if_needed = pad_if_needed

    def __call__(self, image, mask=None, rng=None):
        _check(image, mask, "RandomCrop")
        rng = self._gen(rng)
        h, w = _pair(self.size, "RandomCrop")
        H, W = image.shape[1:]
        if h > H or w > W:
            if not self.pad_if_needed:
                raise ValueError(f"RandomCrop: crop {(h, w)} is larger than the image {(H, W)} (pad_if_needed=False)")
            ph, pw = max(0, h - H), max(0, w - W)
            pads = ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
            image = np.pad(image, pads)
            mask = None if mask is None else np.pad(mask, pads)
            H, W = image.shape[1:]
        top = int(rng.integers(0, H - h + 1))
        left = int(rng.integers(0, W - w + 1))
        image = image[:, top:top + h, left:left + w]  # (C,h,w)
        mask = None if mask is None else mask[:, top:top + h, left:left + w]  # (1,h,w)
        return image, mask


class RandomRotation(Transform):
    """Rotate by an angle ~ U(-d, d) (``degrees`` = d) or U(lo, hi) (``degrees`` = (lo, hi)); image bilinear, mask nearest.

    CFLOW-AD-style augmentation uses d = 5, ADTR/DRAEM-style d = 30.
    """

    def __init__(self, degrees: float | Sequence[float], fill: float = 0.0, padding_mode: str = "constant",
                 p: float = 1.0, seed: int | None = 0):
        super().__init__(seed)
        if isinstance(degrees, numbers.Real):
            if degrees < 0:
                raise ValueError(f"RandomRotation: degrees must be >= 0, got {degrees}")
            degrees = (-float(degrees), float(degrees))
        self.degrees = tuple(float(d) for d in degrees)
        self.fill = fill
        self.padding_mode = padding_mode
        self.p = p

    def __call__(self, image, mask=None, rng=None):
        _check(image, mask, "RandomRotation")
        rng = self._gen(rng)
        angle = float(rng.uniform(*self.degrees))
        if rng.random() >= self.p:
            return image, mask
        image = rotate(image, angle, 1, self.fill, self.padding_mode)
        if mask is not None:
            mask = rotate(mask, angle, 0, 0.0, "constant" if self.padding_mode == "constant" else self.padding_mode)
        return image, mask


class RandomHorizontalFlip(Transform):
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5, seed: int | None = 0):
        super().__init__(seed)
        self.p = p

    def __call__(self, image, mask=None, rng=None):
        if self._gen(rng).random() < self.p:
            image = image[:, :, ::-1]
            mask = None if mask is None else mask[:, :, ::-1]
        return image, mask


class RandomVerticalFlip(Transform):
    """Mirror top-bottom with probability ``p``."""

    def __init__(self, p: float = 0.5, seed: int | None = 0):
        super().__init__(seed)
        self.p = p

    def __call__(self, image, mask=None, rng=None):
        if self._gen(rng).random() < self.p:
            image = image[:, ::-1, :]
            mask = None if mask is None else mask[:, ::-1, :]
        return image, mask


class RandomShift(Transform):
    """Translate image and mask by up to ``fraction`` of the shorter side in each direction, an
    integer offset ~ U{-m..m} per axis; the image is edge-padded, the mask zero-padded."""

    def __init__(self, fraction: float = 0.05, seed: int | None = 0):
        super().__init__(seed)
        self.fraction = fraction

    def __call__(self, image, mask=None, rng=None):
        _check(image, mask, "RandomShift")
        rng = self._gen(rng)
        H, W = image.shape[1:]
        m = int(round(self.fraction * min(H, W)))
        if m <= 0:
            return image, mask
        dy, dx = (int(v) for v in rng.integers(-m, m + 1, size=2))

        def shift(a, mode):
            p = np.pad(a, ((0, 0), (m, m), (m, m)), mode=mode)
            return p[:, m - dy:m - dy + H, m - dx:m - dx + W]
        return shift(image, "edge"), None if mask is None else shift(mask, "constant")


class Normalize(Transform):
    """Image-only standardisation (x - mean) / std, ImageNet mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__(None)
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __call__(self, image, mask=None, rng=None):
        return normalize(image, self.mean, self.std), mask


def standard_transform(size: int | Sequence[int] = 256, crop: int | Sequence[int] | None = None,
                       normalize: bool = True) -> Compose:
    """Evaluation pipeline: Resize to (size, size) [-> CenterCrop(crop)] [-> ImageNet Normalize]."""
    ts: list[Transform] = [Resize(_pair(size, "standard_transform"))]
    if crop is not None:
        ts.append(CenterCrop(crop))
    if normalize:
        ts.append(Normalize())
    return Compose(ts)


def train_transform(size: int | Sequence[int] = 256, crop: int | Sequence[int] | None = None,
                    rotation: float = 0.0, hflip: float = 0.0, vflip: float = 0.0,
                    random_crop: int | Sequence[int] | None = None, normalize: bool = True,
                    seed: int | None = 0) -> Compose:
    """Training pipeline: Resize [-> CenterCrop] [-> RandomRotation(+-rotation)] [-> flips] [-> RandomCrop] [-> Normalize]."""
    ts: list[Transform] = [Resize(_pair(size, "train_transform"))]
    if crop is not None:
        ts.append(CenterCrop(crop))
    if rotation:
        ts.append(RandomRotation(rotation))
    if hflip:
        ts.append(RandomHorizontalFlip(hflip))
    if vflip:
        ts.append(RandomVerticalFlip(vflip))
    if random_crop is not None:
        ts.append(RandomCrop(random_crop))
    if normalize:
        ts.append(Normalize())
    return Compose(ts, seed=seed)
