"""Images already in memory as a dataset, so every method's ``fit`` also takes an array."""
import numpy as np


class ArrayDataset:
    """N x 3 x H x W (or one-channel N x 1 x H x W) float images in [0, 1], with optional labels N
    and masks N x H x W, as a dataset with the same samples as the file datasets;
    ``transform(image, mask, rng)`` as theirs."""

    strict = False

    def __init__(self, images, labels=None, masks=None, transform=None, seed=0, name="array"):
        images = np.asarray(images.get() if hasattr(images, "get") else images, np.float32)
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"ArrayDataset: expected images N x 1 x H x W or N x 3 x H x W, got shape {images.shape}")
        bad = ~np.isfinite(images)
        if bad.any():
            raise ValueError(f"ArrayDataset: images hold {int(bad.sum())} NaN or inf value(s), the first in image "
                             f"{int(np.argwhere(bad)[0][0])}")
        n = len(images)
        self.images = images
        self._labels = np.zeros(n, np.int64) if labels is None else np.asarray(labels, np.int64).reshape(n)
        self.masks = None if masks is None else np.asarray(masks, np.float32).reshape(n, 1, *images.shape[2:])
        self.transform, self.seed, self.name = transform, seed, name

    def __len__(self):
        return len(self.images)

    @property
    def labels(self):
        return self._labels

    @property
    def defect_types(self):
        return ["good" if y == 0 else "anomaly" for y in self._labels]

    @property
    def has_masks(self):
        return self.masks is not None and bool(self._labels.any())

    @property
    def paths(self):
        return [f"{self.name}[{i}]" for i in range(len(self))]

    def __getitem__(self, i):
        return self.get(i % len(self), np.random.default_rng([self.seed, i % len(self)]))

    def get(self, i, rng=None):
        image = self.images[i]
        mask = self.masks[i] if self.masks is not None else np.zeros((1,) + image.shape[1:], np.float32)
        if self.transform is not None:
            image, mask = self.transform(image, mask, rng)
        return {"image": np.ascontiguousarray(image, np.float32), "mask": np.ascontiguousarray(mask, np.float32),
                "label": int(self._labels[i]), "defect_type": self.defect_types[i], "has_mask": True,
                "path": f"{self.name}[{i}]"}
