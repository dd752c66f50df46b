"""What every method shares: the result object, batching of images, evaluation,
thresholds, saving/loading through one ``.h5`` checkpoint, and the training loop.

A method subclasses ``AnomalyModel`` and provides ``fit(dataset)``, ``_score(images)``
(raw per-batch statistics) and ``_maps(stats)`` (anomaly maps and image scores from those
statistics); ``predict``, ``evaluate``, ``save`` and ``load`` are written once here. Its
``fit`` writes one training step (its loss) and hands it to :func:`train_loop`.

Three budgets, the same for every method:

* ``quick=True`` (``quick_overrides``): minutes on a CPU; tests, examples and the command
  line's default.
* neither (the class's ``defaults``; ``--full`` on the command line): npad's own full setting.
* ``paper=True`` (``paper_overrides``; ``--paper``): the settings of the method's paper, each
  value with its section in the method's docstring and its test; where npad cannot follow the
  paper, the method's "Deviations from the paper" section (docs/DEVIATIONS.md) says why.

Options given explicitly always win over the budget's values.
"""
import copy
import time

import numpy

from .. import io, metrics
from ..backend import to_cpu
from ..data import ArrayDataset, DataLoader
from ..data import transforms as T
from ..optim import clip_grad_norm_
from ..progress import log_line, plain_log, progress


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
        quick, paper = bool(self.config.get("quick")), bool(self.config.get("paper"))
        if quick and paper:
            raise ValueError(f"{type(self).__name__}: quick=True and paper=True are two budgets; choose one")
        budget = self.quick_overrides() if quick else self.paper_overrides() if paper else {}
        self.config.update({k: v for k, v in budget.items() if k not in config})
        weights = self._paper_weights() if paper else None
        if weights and self.config.get("backbone") == weights[0]:
            from ..backbones import require_weights
            require_weights(*weights, onnx_path=self.config.get("onnx_path"), who=f"{type(self).__name__}(paper=True)")
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

    def paper_overrides(self):
        """Option values of the paper's setting (``paper=True``); a method without one refuses."""
        raise NotImplementedError(f"{type(self).__name__} has no paper mode (paper=True): its paper is not among "
                                  "npad's sources; see docs/DEVIATIONS.md")

    #: (backbone, weights) of the paper: paper mode refuses a file of that backbone whose ``npad.weights``
    #: metadata names other weights (npad.backbones.require_weights)
    paper_weights = None

    def _paper_weights(self):
        return self.paper_weights

    @classmethod
    def has_paper_mode(cls):
        """True when the method defines ``paper_overrides`` (``paper=True`` / ``--paper``)."""
        return cls.paper_overrides is not AnomalyModel.paper_overrides

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


# ---- training: the loop every method runs -------------------------------------------------------
def backward_step(optimizer, loss, max_norm=None):
    """One update on ``loss``: zero the gradients, back-propagate, clip the total gradient norm of
    the optimiser's parameters to ``max_norm`` when given, step. Returns the loss as a float."""
    optimizer.zero_grad()
    loss.backward()
    if max_norm:
        clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_norm)
    optimizer.step()
    return loss.item()


def train_loop(step, batches, epochs, optimizer, scheduler=None, schedule="epoch", modules=(), desc="train",
               unit="epoch", quiet=None, history=None, end_epoch=None, callback=None, log_every=10.0):
    """Run ``epochs`` epochs of ``step`` over ``batches(epoch)`` and keep the loss history.

    step(batch) -> (loss, n): one update (the method's loss, then :func:`backward_step`); ``loss``
        is the batch's mean loss as a float, or a dict of floats (its "loss" and parts such as
        "kl"); ``n`` weighs the batch in the epoch's mean (images, fibers, ...).
    batches(epoch): the iterable of batches of that epoch.
    scheduler, schedule: ``scheduler.step()`` after every "batch" or every "epoch".
    modules: put in training mode for the loop and in eval mode after it.
    end_epoch(epoch) -> dict: more entries of the epoch's row (a learned variance, an iteration).
    callback(epoch, row): called with every finished row.

    ``history`` (filled in place and returned) gets, per epoch, the ``n``-weighted mean of each
    part ("loss", ...), the entries of ``end_epoch``, "lr" (the optimiser's first group after the
    epoch) and "seconds" (elapsed since the start); then "train_seconds" and "samples_per_s"
    (the sum of n per second). A row is added only when its epoch completes, so after an exception
    in a step every list holds the finished epochs and the modules are in eval mode.

    Progress: a bar (``npad.progress``; ``quiet`` as there), or, where output is not a terminal
    (a batch log), one plain line per epoch: the first, the last, and at most one every
    ``log_every`` seconds between them.
    """
    if schedule not in ("epoch", "batch"):
        raise ValueError(f"train_loop: schedule must be 'epoch' or 'batch', got {schedule!r}")
    history = {} if history is None else history
    plain, logged, seen = plain_log(quiet), None, 0
    t0 = time.perf_counter()
    bar = progress(range(epochs), desc=desc, unit=unit, quiet=quiet)
    for m in modules:
        m.train()
    try:
        for epoch in bar:
            sums, weights = {"loss": 0.0}, {"loss": 0}
            for batch in batches(epoch):
                parts, n = step(batch)
                for k, v in (parts if isinstance(parts, dict) else {"loss": parts}).items():
                    sums[k] = sums.get(k, 0.0) + v * n
                    weights[k] = weights.get(k, 0) + n
                seen += n
                if scheduler is not None and schedule == "batch":
                    scheduler.step()
            if scheduler is not None and schedule == "epoch":
                scheduler.step()
            row = {k: sums[k] / weights[k] if weights[k] else float("nan") for k in sums}
            row.update(end_epoch(epoch) if end_epoch is not None else {})
            row.update(lr=optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - t0)
            _append_row(history, row)
            bar.set_postfix({k: _short(k, v) for k, v in row.items() if k != "seconds"})
            if plain and (logged is None or epoch == epochs - 1 or row["seconds"] - logged >= log_every):
                logged = row["seconds"]
                log_line(f"{desc} {epoch + 1}/{epochs}: " + ", ".join(f"{k} {_short(k, v)}" for k, v in row.items()
                                                                       if k != "seconds") + f" ({logged:.0f} s)")
            if callback is not None:
                callback(epoch, row)
    finally:
        for m in modules:
            m.eval()
        if hasattr(bar, "close"):
            bar.close()
        history["train_seconds"] = time.perf_counter() - t0
        history["samples_per_s"] = seen / max(history["train_seconds"], 1e-9)
    return history


def _append_row(history, row):
    """Append one epoch's row; a key missing on either side gets NaN, so every list has one entry per epoch."""
    done = len(history.get("seconds", ()))
    for k in list(row) + [k for k, v in history.items() if isinstance(v, list) and k not in row]:
        history.setdefault(k, [float("nan")] * done).append(row.get(k, float("nan")))


def _short(key, value):
    if isinstance(value, (int, numpy.integer)):
        return str(value)
    return f"{value:.2e}" if key == "lr" else f"{value:.4g}"
