"""Image I/O, the dataset base class, user folder datasets and prediction datasets.

Samples are dicts of NumPy arrays::

    {"image": float32 (3, H, W)   # in [0, 1], or normalised by the transform
     "mask":  float32 (1, H, W)   # {0, 1}; zeros for normal images
     "label": int                 # 1 anomalous, 0 normal
     "has_mask": bool             # False when no ground truth exists for this image
     "path": str, "defect_type": str}

Reading rules (:func:`load_image`, :func:`load_mask`):

* the EXIF orientation is applied, so images and masks are as a viewer shows them;
* 8-bit images are divided by 255, 16-bit ones by 65535; float images (TIFF mode
  ``F``) by the smallest of 1, 255 and 65535 that bounds their maximum, so float
  images in [0, 1], [0, 255] and [0, 65535] all come out in [0, 1], never
  clipped; values outside [0, 65535], NaN and inf are refused (``ValueError``
  naming the file);
* a mask pixel is anomalous when any colour channel is non-zero (label masks
  {0, 1, 2} and coloured masks keep every class; fully transparent pixels count
  as zero); JPEG masks, whose compression smears edges, above half their maximum.

Bad input: a file that PIL cannot open or that is truncated is skipped at
construction with a warning naming the file (sample, label and mask dropped
together), or raises :class:`UnreadableImageError` with ``strict=True``.  The
check is cheap: the header, plus the end marker of PNG and JPEG files; files
without one (other formats, or a missing marker) are decoded once to decide.  A
file that still fails when loaded (changed since, or corrupt inside) is skipped
by :class:`~npad.data.loader.DataLoader` with a warning.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

__all__ = [
    "IMAGE_EXTENSIONS",
    "UnreadableImageError",
    "DataWarning",
    "list_images",
    "load_image",
    "load_mask",
    "find_mask",
    "ImageDataset",
    "FolderDataset",
    "PredictionDataset",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class UnreadableImageError(OSError):
    """An image or mask file cannot be opened or decoded; ``.path`` names it, ``.reason`` says why."""

    def __init__(self, path: str | os.PathLike, reason: str = ""):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}" + (f": {reason}" if reason else ""))


class DataWarning(UserWarning):
    """Skipped files, missing anomalies and similar data problems that do not stop the run."""


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Sorted image files (extensions in :data:`IMAGE_EXTENSIONS`, any case) in ``folder``; hidden files ignored."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist or is not a directory")
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def _open(path: Path):
    """The decoded PIL image, turned as its EXIF orientation says; float pixels checked finite."""
    from PIL import Image, ImageOps

    im = None
    try:
        im = Image.open(path)
        im.load()  # decode now: truncated files fail here, not later
        if im.getexif().get(0x0112, 1) != 1:  # Orientation tag: rotate/flip as viewers do
            im = ImageOps.exif_transpose(im)
    except FileNotFoundError:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, Image.DecompressionBombError...
        if im is not None:
            im.close()
        raise UnreadableImageError(path, f"{type(e).__name__}: {e}") from None
    if im.mode == "F":
        bad = ~np.isfinite(np.asarray(im))
        if bad.any():
            raise ValueError(f"image {path} has {int(bad.sum())} NaN or inf pixel value(s) of {bad.size}; "
                             "npad needs finite pixels")
    return im


def _unit_scale(a: np.ndarray, path: Path, float_range: bool) -> np.ndarray:
    """Grey values of a 16-bit (``float_range=False``: x / 65535) or float image (x / the smallest of 1, 255,
    65535 above its maximum) as float32 in [0, 1]; values outside [0, 65535] are refused, never clipped."""
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if lo < 0 or hi > 65535:
        raise ValueError(f"image {path} has values in [{lo:g}, {hi:g}]; npad reads float images in [0, 1], "
                         "[0, 255] or [0, 65535] and integer images of 8 or 16 bits")
    scale = 65535.0 if not float_range or hi > 255 else 255.0 if hi > 1 else 1.0
    return (a / np.float32(scale)).astype(np.float32)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to float32 ``(3, H, W)`` in [0, 1]; grey/palette/alpha/16-bit/float converted to RGB.

    x = value / (2^bits - 1) for integer images; float images see the module notes.  Raises
    :class:`UnreadableImageError` naming the file when it cannot be decoded, ``ValueError`` when its values
    are not finite or out of range.
    """
    path = Path(path)
    im = _open(path)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = _unit_scale(np.asarray(im, dtype=np.float32), path, im.mode == "F")  # (H,W)
        return np.repeat(a[None], 3, axis=0)  # (3,H,W)
    if im.mode != "RGB":
        im = im.convert("RGB")
    a = np.asarray(im, dtype=np.uint8)  # (H,W,3)
    return (a.transpose(2, 0, 1).astype(np.float32) / 255.0)  # (3,H,W)


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """Decode a ground-truth mask to float32 ``(1, H, W)`` in {0, 1}: m = [any colour channel > 0].

    Label masks ({0, 1, 2, ...}), 0/255 masks and coloured masks (one colour per class) keep every class;
    fully transparent pixels count as 0.  JPEG masks (lossy: compression smears the edges) use
    m = [v > max(v) / 2].
    """
    path = Path(path)
    im = _open(path)
    if im.mode not in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "RGB", "RGBA"):
        im = im.convert("RGBA")  # palette (with its transparency), CMYK, YCbCr, ...
    a = np.asarray(im)  # (H,W) or (H,W,C)
    if a.ndim == 3:
        alpha = a[..., -1] if im.mode in ("LA", "RGBA") else None
        a = (a if alpha is None else a[..., :-1]).max(axis=2)  # (H,W)
        if alpha is not None:
            a = np.where(alpha > 0, a, 0)
    cut = float(a.max()) / 2.0 if im.format == "JPEG" and a.size else 0.0
    return (a > cut)[None].astype(np.float32)  # (1,H,W)


def find_mask(mask_dir: Path, stem: str, suffixes: Sequence[str] = ("_mask", "")) -> Path | None:
    """First existing ``mask_dir/<stem><suffix><ext>`` over suffixes ('_mask' first, MVTec style) and image extensions."""
    for suf in suffixes:
        for ext in (".png",) + tuple(e for e in IMAGE_EXTENSIONS if e != ".png"):
            for e in (ext, ext.upper()):
                p = mask_dir / f"{stem}{suf}{e}"
                if p.is_file():
                    return p
    return None


# end marker of a complete file: PNG's IEND chunk (with its CRC), JPEG's EOI
_END_MARKERS = {"PNG": b"IEND\xaeB`\x82", "JPEG": b"\xff\xd9", "MPO": b"\xff\xd9"}


def _ends_complete(path: Path, marker: bytes) -> bool:
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 64))
        return f.read().rstrip(b"\0").endswith(marker)  # some cameras pad JPEGs with zeros


def _check_file(path: Path, how: str) -> str | None:
    """None if ``path`` can be read, else the reason.  "header": the header, plus the end marker of PNG and
    JPEG files (others, or a missing marker, are decoded once to decide); "full": decoded."""
    from PIL import Image

    if how == "header":
        try:
            with Image.open(path) as im:
                marker = _END_MARKERS.get(im.format)
        except FileNotFoundError:
            raise
        except Exception as e:  # not an image PIL knows
            return f"{type(e).__name__}: {e}"
        if marker is not None and _ends_complete(path, marker):
            return None
    try:
        _open(path)  # a float image with NaN raises ValueError: refused, not skipped
    except UnreadableImageError as e:
        return e.reason
    return None


class ImageDataset:
    """Base class: a list of samples (path, label, defect type, mask path) loaded lazily and transformed.

    ``transform(image, mask, rng) -> (image, mask)`` (see :mod:`npad.data.transforms`).
    ``dataset[i]`` uses the generator ``default_rng([seed, i])``; the DataLoader passes
    ``default_rng([loader_seed, epoch, i])`` through :meth:`get` instead.
    """

    def __init__(self, samples: list[dict], transform: Callable | None = None, strict: bool = False,
                 seed: int = 0, verify: str | None = "header", name: str = "dataset"):
        self.transform = transform
        self.strict = strict
        self.seed = seed
        self.name = name
        self.skipped: list[str] = []  # files skipped as unreadable
        if verify not in (None, "header", "full"):
            raise ValueError(f"verify must be None, 'header' or 'full', got {verify!r}")
        self.samples = self._verify(samples, verify) if verify else list(samples)

    # -- bookkeeping --------------------------------------------------------
    def _bad(self, path: str, reason: str) -> None:
        if self.strict:
            raise UnreadableImageError(path, reason)
        warnings.warn(f"skipping unreadable image {path}: {reason}", DataWarning, stacklevel=3)
        self.skipped.append(str(path))

    def _verify(self, samples: list[dict], how: str) -> list[dict]:
        good = []
        for s in samples:
            files = [s["path"]] + ([s["mask_path"]] if s.get("mask_path") else [])
            reason = None
            for f in files:
                reason = _check_file(Path(f), how)
                if reason:
                    self._bad(str(f), reason)
                    break
            if reason is None:
                good.append(s)
        return good

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def paths(self) -> list[str]:
        return [str(s["path"]) for s in self.samples]

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 labels without loading any image."""
        return np.array([s.get("label", -1) for s in self.samples], dtype=np.int64)

    @property
    def defect_types(self) -> list[str]:
        return [s.get("defect_type", "") for s in self.samples]

    @property
    def has_masks(self) -> bool:
        """True when every anomalous sample has a ground-truth mask (pixel metrics possible)."""
        anom = [s for s in self.samples if s.get("label", 0) == 1]
        return bool(anom) and all(s.get("mask_path") for s in anom)

    def __repr__(self) -> str:
        n_anom = int((self.labels == 1).sum())
        return f"{type(self).__name__}({self.name!r}, n={len(self)}, anomalous={n_anom})"

    # -- loading ------------------------------------------------------------
    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {self!r}")
        i = i % len(self)
        return self.get(i, np.random.default_rng([self.seed, i]))

    def get(self, i: int, rng: np.random.Generator | None = None) -> dict:
        """Load, check and transform sample ``i`` with generator ``rng``."""
        s = self.samples[i]
        path = Path(s["path"])
        image = load_image(path)  # (3,H,W)
        has_mask = bool(s.get("mask_path")) or s.get("label", 0) == 0
        if s.get("mask_path"):
            mask = load_mask(s["mask_path"])  # (1,H,W)
            if mask.shape[1:] != image.shape[1:]:
                raise ValueError(
                    f"mask {s['mask_path']} has size {mask.shape[2]}x{mask.shape[1]} but image {path} is "
                    f"{image.shape[2]}x{image.shape[1]}"
                )
        elif "label" in s:
            mask = np.zeros((1,) + image.shape[1:], np.float32)  # (1,H,W)
        else:
            mask = None  # unlabelled (prediction) sample
        if self.transform is not None:
            image, mask = self.transform(image, mask, rng)
        out = {"image": np.ascontiguousarray(image, dtype=np.float32), "path": str(path)}
        if mask is not None:
            out["mask"] = np.ascontiguousarray(mask, dtype=np.float32)
        if "label" in s:
            out["label"] = int(s["label"])
            out["defect_type"] = s.get("defect_type", "")
            out["has_mask"] = has_mask
        return out


def _collect(dirs: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[Path]:
    if dirs is None:
        return []
    if isinstance(dirs, (str, os.PathLike)):
        return [Path(dirs)]
    return [Path(d) for d in dirs]


class FolderDataset(ImageDataset):
    """A dataset from the user's own folders (layout-free).

    * ``normal_dir``: normal images, used for ``split="train"`` (sub-folders included).
    * ``normal_test_dir``: normal test images (optional).  Without it, ``normal_split_ratio``
      > 0 holds out that fraction of ``normal_dir`` (chosen with ``seed``) as normal test images.
    * ``abnormal_dir``: one folder or a list; images directly inside get defect type
      ``"anomaly"`` (or the folder's name when several folders are given), images in a
      sub-folder get the sub-folder's name as defect type (MVTec ``test/<defect>`` style).
    * ``mask_dir``: masks matched by stem (``<stem>_mask.*`` or ``<stem>.*``, searched in
      ``mask_dir`` and ``mask_dir/<defect type>``).  Given, an abnormal image without a mask is
      an error naming the file; absent, the dataset has no masks (image-level metrics only).

    A test split without abnormal images warns that AUROC will be skipped.
    """

    def __init__(self, normal_dir: str | os.PathLike, split: str = "train", *,
                 abnormal_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                 normal_test_dir: str | os.PathLike | None = None, mask_dir: str | os.PathLike | None = None,
                 normal_split_ratio: float = 0.0, transform: Callable | None = None, strict: bool = False,
                 seed: int = 0, verify: str | None = "header"):
        if split not in ("train", "test"):
            raise ValueError(f"FolderDataset: split must be 'train' or 'test', got {split!r}")
        if not 0.0 <= normal_split_ratio < 1.0:
            raise ValueError(f"FolderDataset: normal_split_ratio must be in [0, 1), got {normal_split_ratio}")
        normal_dir = Path(normal_dir)
        normals = list_images(normal_dir, recursive=True)
        held_out: list[Path] = []
        if normal_test_dir is None and normal_split_ratio > 0:
            perm = np.random.default_rng(seed).permutation(len(normals))
            n_test = int(round(normal_split_ratio * len(normals)))
            held = set(perm[:n_test].tolist())
            held_out = [p for k, p in enumerate(normals) if k in held]
            normals = [p for k, p in enumerate(normals) if k not in held]
        samples: list[dict] = []
        if split == "train":
            if not normals:
                raise FileNotFoundError(f"training folder {normal_dir} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
            samples = [dict(path=p, label=0, defect_type="good", mask_path=None) for p in normals]
        else:
            test_normals = list_images(normal_test_dir, recursive=True) if normal_test_dir is not None else held_out
            samples = [dict(path=p, label=0, defect_type="good", mask_path=None) for p in test_normals]
            adirs = _collect(abnormal_dir)
            mdir = Path(mask_dir) if mask_dir is not None else None
            if mdir is not None and not mdir.is_dir():
                raise FileNotFoundError(f"mask folder {mdir} does not exist")
            for ad in adirs:
                for p in list_images(ad, recursive=True):
                    rel = p.parent.relative_to(ad)
                    dtype = rel.parts[0] if rel.parts else ("anomaly" if len(adirs) == 1 else ad.name)
                    mp = None
                    if mdir is not None:
                        mp = find_mask(mdir, p.stem) or find_mask(mdir / dtype, p.stem) or find_mask(mdir / rel, p.stem)
                        if mp is None:
                            raise FileNotFoundError(
                                f"no ground-truth mask for abnormal image {p}: looked for {p.stem}_mask.* or "
                                f"{p.stem}.* in {mdir} and {mdir / dtype}"
                            )
                    samples.append(dict(path=p, label=1, defect_type=dtype, mask_path=mp))
            if not samples:
                raise FileNotFoundError(
                    "FolderDataset test split is empty: give normal_test_dir, abnormal_dir or normal_split_ratio > 0"
                )
            if not any(s["label"] == 1 for s in samples):
                warnings.warn(
                    f"FolderDataset test split has no abnormal images ({len(samples)} normal): AUROC and F1 "
                    f"will be skipped; thresholds fall back to a percentile of normal scores",
                    DataWarning, stacklevel=2,
                )
            elif mdir is None:
                warnings.warn("FolderDataset: no mask_dir given, only image-level metrics are possible",
                              DataWarning, stacklevel=2)
        super().__init__(samples, transform, strict, seed, verify, name=f"{normal_dir.name}/{split}")


class PredictionDataset(ImageDataset):
    """Unlabelled images for inference: a folder (``recursive`` optional), a single file, or a list of files.

    Samples have ``image`` and ``path`` only.
    """

    def __init__(self, source: str | os.PathLike | Iterable[str | os.PathLike], transform: Callable | None = None,
                 recursive: bool = False, strict: bool = False, verify: str | None = "header"):
        if isinstance(source, (str, os.PathLike)):
            src = Path(source)
            if src.is_dir():
                files = list_images(src, recursive)
            elif src.is_file():
                files = [src]
            else:
                raise FileNotFoundError(f"PredictionDataset: {src} does not exist")
            name = src.name
        else:
            files = [Path(p) for p in source]
            missing = [str(p) for p in files if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"PredictionDataset: {len(missing)} file(s) do not exist, e.g. {missing[0]}")
            name = "files"
        if not files:
            raise FileNotFoundError(f"PredictionDataset: no images found in {source}")
        super().__init__([dict(path=p) for p in files], transform, strict, 0, verify, name=name)
