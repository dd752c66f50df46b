"""What every method shares: the result object, batching of images, evaluation,
thresholds, and saving/loading through one ``.h5`` checkpoint.

A method subclasses ``AnomalyModel`` and provides ``fit(dataset)``, ``_score(images)``
(raw per-batch statistics) and ``_maps(stats)`` (anomaly maps and image scores from those
statistics); ``predict``, ``evaluate``, ``save`` and ``load`` are written once here.
"""
import copy
import time

import numpy

from .. import io, metrics
from ..backend import to_cpu
from ..data import ArrayDataset, DataLoader
from ..data import transforms as T
from ..progress import progress


class Result:
    """Image scores (N,), anomaly maps (N x H x W) and, when a threshold is known, binary masks
    (N x H x W) and decisions (N,). Unpacks as ``scores, maps = model.predict(images)``."""

    def __init__(self, scores, maps, threshold=None, pixel_threshold=None):
        self.scores, self.maps, self.threshold = scores, maps, threshold
        self.labels = None if threshold is None else scores >= threshold
        pt = threshold if pixel_threshold is None else pixel_threshold
        self.masks = None if pt is None else maps >= pt

    def __iter__(self):
        return iter((self.scores, self.maps))

    def __len__(self):
        return len(self.scores)

    def __repr__(self):
        return f"Result(n={len(self.scores)}, map size={tuple(self.maps.shape[1:])}, threshold={self.threshold})"


def _batches(images, batch_size):
    """Yield N_b x 3 x H x W float32 arrays from an array, a dataset or a DataLoader."""
    if hasattr(images, "shape"):
        arr = numpy.asarray(to_cpu(images), dtype=numpy.float32)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[1] != 3:
            raise ValueError(f"predict: expected images N x 3 x H x W, got shape {arr.shape}")
        for i in range(0, len(arr), batch_size):
            yield arr[i:i + batch_size]
        return
    loader = images if isinstance(images, DataLoader) else DataLoader(images, batch_size=batch_size)
    for batch in loader:
        yield batch["image"]


class AnomalyModel:
    """Base class: configuration, transforms, predict/evaluate/save/load for all methods."""

    method = "base"
    defaults = {}

    def __init__(self, **config):
        unknown = sorted(set(config) - set(self.defaults))
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown option(s) {unknown}; options are {sorted(self.defaults)}")
        self.config = {**self.defaults, **config}
        if self.config.get("quick"):
            self.config.update({k: v for k, v in self.quick_overrides().items() if k not in config})
        self.stats = {}
        self.threshold = None
        self.pixel_threshold = None
        self.history = {}

    def is_fitted(self):
        """True once fit() has stored what predict(normalization='train') needs."""
        return bool(self.stats)

    def quick_overrides(self):
        """Option values of the fast setting (``quick=True``) used by tests and the default example."""
        return {}

    # ---- data ------------------------------------------------------------------
    def eval_transform(self):
        """Resize to the model's input size (masks nearest)."""
        s = self.config["input_size"]
        return T.Resize((s, s))

    def train_transform(self):
        return self.eval_transform()

    def _with_transform(self, dataset, train):
        """The dataset with the method's transform when it has none of its own (an array of
        N x 3 x H x W images in [0, 1] becomes an ArrayDataset first)."""
        if hasattr(dataset, "shape"):
            dataset = ArrayDataset(dataset)
        if getattr(dataset, "transform", None) is not None:
            return dataset
        ds = copy.copy(dataset)
        ds.transform = self.train_transform() if train else self.eval_transform()
        return ds

    # ---- scoring: written once, used by validation and inference -------------------
    def _score(self, images):
        """Per-batch raw statistics (arrays) for N x 3 x H x W float32 images in [0, 1]."""
        raise NotImplementedError

    def _maps(self, stats, reference=None):
        """(scores N, maps N x H x W) from the concatenated raw statistics."""
        raise NotImplementedError

    def _collect(self, images, batch_size, desc="scoring"):
        """Raw statistics of all images, batch by batch, concatenated along the batch axis."""
        parts = []
        for batch in progress(_batches(images, batch_size), desc=desc, unit="batch"):
            parts.append(self._score(batch))
        return {k: numpy.concatenate([p[k] for p in parts]) for k in parts[0]}

    def predict(self, images, batch_size=None, normalization="set"):
        """Score images (an N x 3 x H x W array in [0, 1], a dataset or a DataLoader).

        normalization: "set" normalises over all given images (the papers' evaluation);
        "batch" over each batch of ``batch_size`` (streaming); "train" with the statistics
        stored at fit time, so scores are comparable across calls and with the stored threshold."""
        if normalization not in ("set", "batch", "train"):
            raise ValueError(f"normalization must be 'set', 'batch' or 'train', got {normalization!r}")
        if not hasattr(images, "shape"):
            images = self._with_transform(images, train=False)
        bs = batch_size or self.config.get("batch_size", 8)
        if normalization == "batch":
            out = [self._maps(self._score(b)) for b in _batches(images, bs)]
            scores = numpy.concatenate([o[0] for o in out])
            maps = numpy.concatenate([o[1] for o in out])
        else:
            ref = self.stats if normalization == "train" else None
            if normalization == "train" and not self.is_fitted():
                raise RuntimeError(f"{type(self).__name__}.predict(normalization='train') needs a fitted model")
            scores, maps = self._maps(self._collect(images, bs), reference=ref)
        return Result(scores, maps, self.threshold if normalization == "train" else None,
                      self.pixel_threshold if normalization == "train" else None)

    def evaluate(self, dataset, batch_size=None, normalization="set"):
        """All metrics of npad.metrics.evaluate on a labelled dataset, with inference speed."""
        ds = self._with_transform(dataset, train=False)
        t0 = time.perf_counter()
        res = self.predict(ds, batch_size=batch_size, normalization=normalization)
        seconds = time.perf_counter() - t0
        loader = DataLoader(ds, batch_size=batch_size or 8)
        masks = numpy.concatenate([b["mask"][:, 0] for b in loader]) if ds.has_masks else None
        out = metrics.evaluate(res.scores, res.maps if masks is not None else None, ds.labels, masks,
                               defect_types=ds.defect_types)
        out["images_per_s"] = len(ds) / seconds
        out["result"] = res
        return out

    def calibrate(self, dataset, percentile=99.0):
        """Store the deployment threshold: F1-max on ``dataset`` when it has anomalies, else the
        ``percentile`` of its (normal) scores, with a warning (npad.metrics.choose_threshold)."""
        ds = self._with_transform(dataset, train=False)
        res = self.predict(ds, normalization="train")
        labels = ds.labels if (ds.labels >= 0).all() else None
        self.threshold = metrics.choose_threshold(res.scores, labels, percentile)
        return self.threshold

    # ---- persistence ------------------------------------------------------------------
    def model_megabytes(self):
        """Size of the trained state (what ``save`` writes) in MB."""
        return sum(v.nbytes for v in self.state_dict().values()) / 2 ** 20

    def state_dict(self):
        raise NotImplementedError

    def load_state_dict(self, state):
        raise NotImplementedError

    def save(self, path):
        """Write weights, configuration, normalisation statistics and threshold to one .h5 file, atomically."""
        stats = dict(self.stats)
        if self.threshold is not None:
            stats["threshold"] = numpy.float64(self.threshold)
        if self.pixel_threshold is not None:
            stats["pixel_threshold"] = numpy.float64(self.pixel_threshold)
        io.save_checkpoint(path, {k: to_cpu(v) for k, v in self.state_dict().items()}, self.config,
                           stats, method=self.method)
        return path

    @classmethod
    def load(cls, path):
        """The model saved at ``path`` (its class must match; see npad.methods.load for any method)."""
        ck = io.load_checkpoint(path)
        if ck.get("method") != cls.method:
            raise ValueError(f"{path}: holds a {ck.get('method')!r} model, not {cls.method!r}")
        model = cls(**{k: v for k, v in ck["config"].items() if k in cls.defaults})
        stats = dict(ck.get("stats") or {})
        th, pth = stats.pop("threshold", None), stats.pop("pixel_threshold", None)
        model.threshold = None if th is None else float(th)
        model.pixel_threshold = None if pth is None else float(pth)
        model.stats = stats
        model.load_state_dict(ck["state"])
        return model
