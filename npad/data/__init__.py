"""Datasets, transforms and batching on plain NumPy arrays.

>>> from npad.data import synthetic_mvtec, MVTecDataset, DataLoader, transforms as T
>>> root = synthetic_mvtec()                                   # doctest: +SKIP
>>> ds = MVTecDataset(root, "weave", "test", transform=T.standard_transform(256))  # doctest: +SKIP
>>> for batch in DataLoader(ds, batch_size=8):                 # doctest: +SKIP
...     batch["image"].shape                                   # (8, 3, 256, 256) float32

Samples: ``image`` float32 (3,H,W), ``mask`` float32 (1,H,W) in {0,1}, ``label`` int,
``has_mask`` bool, ``path`` str, ``defect_type`` str.
"""
from . import transforms
from .arrays import ArrayDataset
from .folder import (IMAGE_EXTENSIONS, DataWarning, FolderDataset, ImageDataset, PredictionDataset,
                     UnreadableImageError, find_mask, list_images, load_image, load_mask)
from .loader import DataLoader, collate
from .mvtec import MVTEC_CATEGORIES, MVTEC_OBJECTS, MVTEC_TEXTURES, MVTecDataset, category_dir, list_categories
from .synthetic import (SYNTHETIC_CATEGORIES, confetti_batch, confetti_noise, default_cache_dir, render_sample,
                        synthetic_mvtec)

__all__ = [
    "transforms",
    "IMAGE_EXTENSIONS", "DataWarning", "UnreadableImageError",
    "list_images", "load_image", "load_mask", "find_mask",
    "ImageDataset", "FolderDataset", "PredictionDataset", "ArrayDataset",
    "MVTecDataset", "MVTEC_CATEGORIES", "MVTEC_TEXTURES", "MVTEC_OBJECTS", "list_categories", "category_dir",
    "DataLoader", "collate",
    "synthetic_mvtec", "render_sample", "confetti_noise", "confetti_batch", "default_cache_dir",
    "SYNTHETIC_CATEGORIES",
]
