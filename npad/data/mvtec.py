"""MVTec AD dataset (Bergmann et al., CVPR 2019) and anything laid out like it.

Layout, per category::

    <root>/<category>/train/good/*.png
    <root>/<category>/test/good/*.png
    <root>/<category>/test/<defect>/*.png
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png

Images may be png, jpg or bmp (any extension in
:data:`~npad.data.folder.IMAGE_EXTENSIONS`); grey images become 3-channel.
``root`` may also *be* a category folder (containing ``train/``, ``test/`` and
``ground_truth/`` directly), as the BSData pitting set in MVTec layout is.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .folder import IMAGE_EXTENSIONS, ImageDataset, find_mask, list_images

__all__ = ["MVTEC_CATEGORIES", "MVTEC_TEXTURES", "MVTEC_OBJECTS", "list_categories", "category_dir", "MVTecDataset"]

MVTEC_TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
MVTEC_OBJECTS = ("bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw", "toothbrush",
                 "transistor", "zipper")
MVTEC_CATEGORIES = tuple(sorted(MVTEC_TEXTURES + MVTEC_OBJECTS))


def _is_category(path: Path) -> bool:
    return (path / "train").is_dir() or (path / "test").is_dir()


def list_categories(root: str | os.PathLike) -> list[str]:
    """Sorted names of category folders under ``root`` (folders with ``train/`` or ``test/``); ``[root.name]`` if root is one."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a directory")
    if _is_category(root):
        return [root.name]
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and _is_category(p))


def category_dir(root: str | os.PathLike, category: str | None = None) -> Path:
    """Folder of ``category`` under ``root``; ``root`` itself when it is a category folder (and ``category`` is None or its name)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a directory")
    if _is_category(root) and (category is None or category == root.name):
        return root
    found = list_categories(root)
    if not found:
        raise FileNotFoundError(
            f"no dataset category under {root}: expected {root}/<category>/train/good or {root}/train/good"
        )
    if category is None and len(found) == 1:
        return root / found[0]
    if category is None:
        raise ValueError(f"{root} holds several categories; pass category= one of {found}")
    cdir = root / category
    if cdir.is_dir() and _is_category(cdir):
        return cdir
    hint = "" if category in MVTEC_CATEGORIES else f"; MVTec AD categories are {list(MVTEC_CATEGORIES)}"
    raise ValueError(f"category {category!r} not found under {root}; categories found there: {found}{hint}")


class MVTecDataset(ImageDataset):
    """One category of an MVTec-AD-layout dataset, ``split`` 'train' (normal only) or 'test' (normal + defects).

    Test images in ``test/good`` are normal (label 0, empty mask).  Images in
    ``test/<defect>`` are anomalous (label 1) and must have a mask in
    ``ground_truth/<defect>/`` named ``<stem>_mask.<ext>`` (or ``<stem>.<ext>``);
    a missing one is an error naming the image.  ``dataset.defect_types`` lists each
    sample's folder name.  See :class:`~npad.data.folder.ImageDataset` for samples.
    """

    def __init__(self, root: str | os.PathLike, category: str | None = None, split: str = "train", *,
                 transform: Callable | None = None, strict: bool = False, seed: int = 0,
                 verify: str | None = "header"):
        if split not in ("train", "test"):
            raise ValueError(f"MVTecDataset: split must be 'train' or 'test', got {split!r}")
        cdir = category_dir(root, category)
        self.root = Path(root)
        self.category = cdir.name
        self.category_dir = cdir
        samples: list[dict] = []
        if split == "train":
            tdir = cdir / "train" / "good"
            if not tdir.is_dir():
                raise FileNotFoundError(f"training folder {tdir} does not exist")
            files = list_images(tdir)
            if not files:
                raise FileNotFoundError(f"training folder {tdir} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
            samples = [dict(path=p, label=0, defect_type="good", mask_path=None) for p in files]
        else:
            tdir = cdir / "test"
            if not tdir.is_dir():
                raise FileNotFoundError(f"test folder {tdir} does not exist")
            gt = cdir / "ground_truth"
            for ddir in sorted(d for d in tdir.iterdir() if d.is_dir() and not d.name.startswith(".")):
                defect = ddir.name
                for p in list_images(ddir):
                    if defect == "good":
                        samples.append(dict(path=p, label=0, defect_type="good", mask_path=None))
                        continue
                    mp = find_mask(gt / defect, p.stem)
                    if mp is None:
                        raise FileNotFoundError(
                            f"no ground-truth mask for defective test image {p}: expected "
                            f"{gt / defect / (p.stem + '_mask.png')}"
                        )
                    samples.append(dict(path=p, label=1, defect_type=defect, mask_path=mp))
            if not samples:
                raise FileNotFoundError(f"test folder {tdir} contains no images")
        super().__init__(samples, transform, strict, seed, verify, name=f"{self.category}/{split}")
