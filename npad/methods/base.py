"""What every method shares: the result object, the images a model takes, the hold-out split and
calibration around training, evaluation, saving/loading through one ``.h5`` checkpoint, and the
training loop.

A method subclasses ``AnomalyModel`` and provides ``_fit(dataset, quiet)`` (training on normal
images; a trained network writes one training step, its loss, and hands it to :func:`train_loop`),
``_score(images)`` (raw per-batch statistics) and ``_maps(stats)`` (anomaly maps and image scores
from those statistics); ``fit``, ``predict``, ``calibrate``, ``evaluate``, ``save`` and ``load``
are written once here.

Calibration (``fit`` without ``validation``): a share ``calib_fraction`` of the normal training
images (at least ``CALIB_MIN``, at most half) is kept out of training, and the threshold is chosen
on their scores s, which the model never trained on:

    t = max(max(s), median(s) + k * 1.4826 * MAD(s))      (k = CALIB_MADS = 4, MAD = median |s - median(s)|)

so that few unseen normal images score above it (the share measured on the synthetic set and on
BSData pitting is in docs/RESULTS.md). The two terms guard each other: a dozen held-out scores
bunched together say little about the tail, so the robust spread (1.4826 MAD estimates the
standard deviation of a normal distribution, unmoved by outliers) extends it by four of them;
a heavy tail shows in the largest score, which the threshold never goes below. With a labelled ``validation`` set holding anomalies, t is
its F1-max threshold instead. The pixel threshold follows the same rule on the maps' maxima (on
pixels, F1-max against the masks when the validation set has them). The normalised score

    n(s) = clip(0.5 + 0.5 (s - t) / (t - s_min), 0, 1)    (s_min: the lowest calibration score)

is 0 at the lowest calibration score, 0.5 at the threshold and 1 at t + (t - s_min): a linear
min-max normalisation around the threshold, anomalib's convention, without a sigmoid.

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
import functools
import hashlib
import os
import time
import warnings
from pathlib import Path

import numpy

from .. import io, metrics
from ..backend import to_cpu
from ..data import ArrayDataset, DataLoader, UnreadableImageError, list_images, load_image
from ..data import transforms as T
from ..maps import threshold_normalize
from ..optim import clip_grad_norm_
from ..progress import log_line, plain_log, progress
from ..tensor import Tensor
from ..utils.data import Subset

CALIB_FRACTION = 0.2      # share of the normal training images kept out of training to calibrate on
CALIB_MIN = 5             # ... but at least this many (and at most half of them)
CALIB_MADS = 4.0          # threshold >= median + CALIB_MADS robust std of the held-out normal scores

# options that count or scale something: refused unless > 0 (other numbers only refuse negatives)
POSITIVE_OPTIONS = ("input_size", "texture_size", "batch_size", "fiber_batch", "lr", "plus_lr", "variance_lr",
                    "eps", "epochs", "meta_epochs", "sub_epochs", "samples_per_epoch", "d", "latent", "hidden",
                    "n_blocks", "num_heads", "dim_feedforward", "width", "dim", "projection",
                    "num_neighbours", "topk")
MIN_INPUT_SIZE = 32       # the backbones downsample by up to 32 (the command line refuses smaller sizes)


class NoImagesError(ValueError):
    """None of the images given to predict could be read (each was skipped with a warning)."""


class Result:
    """What ``predict`` returns for N images (unpacks as ``scores, maps = model.predict(images)``).

    * ``scores`` (N,) raw image scores, ``maps`` (N x H x W) raw anomaly maps at the model's input size;
    * ``threshold`` / ``pixel_threshold``: the model's stored ones (None when it has none);
    * ``labels`` (N,) bool: the **decisions**, ``scores >= threshold`` (None without a threshold);
    * ``masks`` (N x H x W) bool: ``maps >= pixel_threshold``;
    * ``normalized_scores`` (N,) and ``normalized_maps`` (N x H x W) in [0, 1] with 0.5 at the
      thresholds (see the module docstring; None without a calibration);
    * ``paths`` (where each image came from) and ``sizes`` (each input's (H, W) before resizing);
      ``at_input_size(i)`` gives image i's map and mask resized back to its own size.
    """

    def __init__(self, scores, maps, threshold=None, pixel_threshold=None, score_min=None, map_min=None,
                 paths=None, sizes=None):
        self.scores, self.maps, self.threshold = scores, maps, threshold
        self.pixel_threshold = threshold if pixel_threshold is None else pixel_threshold
        self.score_min, self.map_min = score_min, map_min
        self.labels = None if threshold is None else scores >= threshold
        self.masks = None if self.pixel_threshold is None else maps >= self.pixel_threshold
        self.paths = list(paths) if paths is not None else [f"image[{i}]" for i in range(len(scores))]
        self.sizes = list(sizes) if sizes is not None else [tuple(maps.shape[1:])] * len(scores)

    @functools.cached_property
    def normalized_scores(self):
        if self.threshold is None or self.score_min is None:
            return None
        return threshold_normalize(self.scores, self.score_min, self.threshold)

    @functools.cached_property
    def normalized_maps(self):
        if self.pixel_threshold is None or self.map_min is None:
            return None
        return threshold_normalize(self.maps, self.map_min, self.pixel_threshold)

    def at_input_size(self, i, normalized=False):
        """(map H0 x W0, mask H0 x W0 or None) of image i, resized bilinearly to its input's size."""
        from ..maps import upsample
        if normalized and self.normalized_maps is None:
            raise ValueError("Result.at_input_size: no normalised maps without a calibration")
        size = lambda a: to_cpu(upsample(numpy.asarray(a[i:i + 1], numpy.float32), tuple(self.sizes[i]),
                                         align_corners=False))[0]                # upsample may answer on the GPU
        raw = size(self.maps)                                            # H0 x W0
        m = size(self.normalized_maps) if normalized else raw
        return m, None if self.pixel_threshold is None else raw >= self.pixel_threshold

    def __iter__(self):
        return iter((self.scores, self.maps))

    def __len__(self):
        return len(self.scores)

    def __repr__(self):
        flagged = "" if self.labels is None else f", anomalous={int(self.labels.sum())}"
        return (f"Result(n={len(self.scores)}, map size={tuple(self.maps.shape[1:])}, "
                f"threshold={self.threshold}{flagged})")


# ---- the images predict takes ---------------------------------------------------------------
def _chw(a, what):
    """One image array -> float32 3 x H x W in [0, 1]: H x W x 3 or 3 x H x W, uint8 (0-255) or
    float in [0, 1]; anything else is refused with a message naming ``what``."""
    a = numpy.asarray(to_cpu(a.data if isinstance(a, Tensor) else a))
    if a.ndim != 3 or 3 not in (a.shape[0], a.shape[-1]):
        raise ValueError(f"{what}: expected an image H x W x 3 or 3 x H x W, got shape {a.shape}")
    if a.shape[0] != 3:
        a = a.transpose(2, 0, 1)                                             # H x W x 3 -> 3 x H x W
    if a.dtype == numpy.uint8:
        return a.astype(numpy.float32) / 255.0
    if a.dtype.kind != "f":
        raise ValueError(f"{what}: expected uint8 (0-255) or float (0-1) values, got dtype {a.dtype}")
    return _check_range(a.astype(numpy.float32), what)


def _check_range(a, what, unit=True):
    """``a`` itself when it holds finite values in [0, 1] (any finite values with ``unit=False``); else a
    ValueError saying what is wrong."""
    if not numpy.isfinite(a).all():
        raise ValueError(f"{what}: has NaN or infinite values")
    if not unit:
        return a
    lo, hi = float(a.min(initial=0.0)), float(a.max(initial=0.0))
    if hi > 1.0 + 1e-3:
        raise ValueError(f"{what}: float images must be in [0, 1], got values up to {hi:.4g} "
                         "(divide 0-255 images by 255, or pass uint8 arrays)")
    if lo < -1e-3:
        raise ValueError(f"{what}: float images must be in [0, 1], got values down to {lo:.4g} "
                         "(pass images before normalisation: npad normalises them itself)")
    return a


class _Inputs:
    """Image files, PIL images and arrays of any size as a dataset for the DataLoader: each image
    resized to the model's input, its original size and its source kept beside it."""

    strict = False

    def __init__(self, items, transform):
        self.items, self.transform, self.skipped = items, transform, []

    def __len__(self):
        return len(self.items)

    def get(self, i, rng=None):
        item = self.items[i]
        if isinstance(item, (str, os.PathLike)):
            path = str(item)
            try:
                image = load_image(item)                                    # 3 x H x W in [0, 1]
            except ValueError as e:                      # NaN or out-of-range pixels: skip this image only
                raise UnreadableImageError(path, str(e)) from None
            if not numpy.isfinite(image).all():
                raise UnreadableImageError(path, "NaN or infinite values")
        elif hasattr(item, "convert") and hasattr(item, "size"):            # a PIL image
            path, image = f"image[{i}]", _chw(numpy.asarray(item.convert("RGB")), f"predict: image {i}")
        else:
            path, image = f"image[{i}]", _chw(item, f"predict: image {i}")
        size = tuple(image.shape[1:])
        image, _ = self.transform(image, None, rng)
        return {"image": numpy.ascontiguousarray(image, numpy.float32), "path": path, "size": size}


def image_files(path):
    """The image files a path names: itself, or those in a folder and its subfolders (sorted)."""
    p = Path(path)
    if p.is_dir():
        found = list_images(p, recursive=True)
        if not found:
            raise ValueError(f"predict: no images in folder {p}")
        return found
    if not p.is_file():
        raise FileNotFoundError(f"predict: {p} does not exist")
    return [p]


def _expand(images):
    """A flat list of image files, PIL images and single-image arrays from what the user gave."""
    if isinstance(images, (str, os.PathLike)) or hasattr(images, "shape") or hasattr(images, "convert"):
        images = [images]
    out = []
    for item in images:
        if isinstance(item, (str, os.PathLike)):
            out += image_files(item)
        elif hasattr(item, "shape") and numpy.ndim(item) == 4:
            out += list(item)
        else:
            out.append(item)
    return out


class _Subset(Subset):
    """``npad.utils.data.Subset`` of an npad dataset (any with ``get(i, rng)`` or ``[i]``): its labels,
    paths and defect types follow the indices, it takes a transform of its own once one is set (as
    ``_with_transform`` does), and other attributes are the dataset's."""

    def __init__(self, dataset, indices):
        super().__init__(dataset, indices)
        self.transform = getattr(dataset, "transform", None)

    def __getattr__(self, name):                      # category, strict, seed, has_masks, ...
        if name.startswith("__") or name in ("dataset", "indices"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def _pick(self, name, default):
        values = getattr(self.dataset, name, None)
        return default if values is None else [values[i] for i in self.indices]

    @property
    def labels(self):
        return numpy.asarray(self._pick("labels", [0] * len(self)), numpy.int64)

    @property
    def paths(self):
        return self._pick("paths", [f"image[{i}]" for i in self.indices])

    @property
    def defect_types(self):
        return self._pick("defect_types", ["good"] * len(self))

    def get(self, i, rng=None):
        j, get = self.indices[i], getattr(self.dataset, "get", None)
        item = dict(get(j, rng) if get is not None else self.dataset[j])
        if self.transform is not None and self.transform is not getattr(self.dataset, "transform", None):
            item["image"], mask = self.transform(item["image"], item.get("mask"), rng)
            if mask is not None:
                item["mask"] = mask
        return item

    def __getitem__(self, i):
        return self.get(i, numpy.random.default_rng([getattr(self.dataset, "seed", 0), self.indices[i]]))


def upper_bound(s, mads=CALIB_MADS):
    """max(max(s), median(s) + mads * 1.4826 * median(|s - median(s)|)): the threshold rule on normal scores."""
    med = numpy.median(s)
    return float(max(s.max(), med + mads * 1.4826 * numpy.median(numpy.abs(s - med))))


@functools.lru_cache(maxsize=8)
def _file_sha256(path, size, mtime_ns):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _finite(value, name, path):
    """``value`` as a finite float (None stays None); a CheckpointError naming ``name`` otherwise."""
    if value is None:
        return None
    try:
        v = float(numpy.asarray(value).reshape(()))
    except (TypeError, ValueError):
        raise io.CheckpointError(f"{path}: {name} must be a number, got {numpy.asarray(value)!r}") from None
    if not numpy.isfinite(v):
        raise io.CheckpointError(f"{path}: {name} is {v}; a threshold must be a finite number")
    return v


class AnomalyModel:
    """Base class: configuration, transforms, fit/predict/calibrate/evaluate/save/load for all methods."""

    method = "base"
    defaults = {}
    square_input = False          # True: the network needs a square input_size
    unit_range = True             # inputs are images in [0, 1]; False: any finite values (see FAVAE's output)

    def __init__(self, **config):
        unknown = sorted(set(config) - set(self.defaults))
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown option(s) {unknown}; options are {sorted(self.defaults)}")
        self.stats, self.calibration, self.history = {}, {}, {}
        self.threshold = self.pixel_threshold = None
        self.fitted = False
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
        self._check_config()

    def _check_config(self):
        """Each option of the type of its default, numbers finite and not negative (> 0 for the
        POSITIVE_OPTIONS), input_size an int or (H, W); errors name the option."""
        name = type(self).__name__
        for key, value in self.config.items():
            default = self.defaults.get(key)
            if key == "input_size":
                self.config[key] = value = self._input_size(value)
            elif default is None and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
                continue                                 # an option off by default (None) or given as text
            elif isinstance(default, bool):
                if not isinstance(value, (bool, numpy.bool_)):
                    raise TypeError(f"{name}: option {key} must be True or False, got {value!r}")
            elif default is None or isinstance(default, (int, float)):
                if isinstance(value, bool) or not isinstance(value, (int, float, numpy.number)) or (
                        isinstance(default, int) and not float(value).is_integer()):
                    kind = "an integer" if isinstance(default, int) else "a number"
                    raise TypeError(f"{name}: option {key} must be {kind}, got {value!r}")
                if not numpy.isfinite(value) or value < 0 or (value == 0 and key in POSITIVE_OPTIONS):
                    bound = "> 0" if key in POSITIVE_OPTIONS else ">= 0"
                    raise ValueError(f"{name}: option {key} must be {bound}, got {value!r}")
                if isinstance(default, int) and not isinstance(default, bool):
                    self.config[key] = int(value)
            elif isinstance(default, str):
                if not (isinstance(value, str) or isinstance(value, (list, tuple))
                        and all(isinstance(v, str) for v in value)):
                    raise TypeError(f"{name}: option {key} must be a string, got {value!r}")
            elif isinstance(default, (list, tuple)) and not isinstance(value, (list, tuple)):
                raise TypeError(f"{name}: option {key} must be a tuple, got {value!r}")

    def _input_size(self, value):
        """input_size as an int (square) or an (H, W) tuple, checked."""
        name = type(self).__name__
        if value == "auto":                        # chosen by the method's fit (CFLOW's paper sizes)
            return value
        hw = value if isinstance(value, (list, tuple)) else (value, value)
        if len(hw) != 2 or not all(isinstance(v, (int, numpy.integer)) and not isinstance(v, bool) for v in hw):
            raise TypeError(f"{name}: option input_size must be an int or (height, width), got {value!r}")
        if min(hw) < 1:
            raise ValueError(f"{name}: option input_size must be > 0, got {value!r}")
        if hw[0] == hw[1]:
            return int(hw[0])
        if self.square_input:
            raise ValueError(f"{name}: input_size must be square (its network takes a fixed square input), "
                             f"got {tuple(hw)}")
        return (int(hw[0]), int(hw[1]))

    @property
    def input_hw(self):
        """(H, W) of the model's input."""
        s = self.config["input_size"]
        return tuple(s) if isinstance(s, (list, tuple)) else (s, s)

    def is_fitted(self):
        """True once fit() has run (or the model was loaded from a fitted checkpoint)."""
        return self.fitted

    def quick_overrides(self):
        """Option values of the fast setting (``quick=True``) used by tests and the default example."""
        return {}

    def __repr__(self):
        c = self.config
        parts = [f"method={self.method!r}"]
        if "backbone" in c:
            parts.append(f"backbone={c['backbone']!r}")
        parts.append("input_size={}x{}".format(*self.input_hw))
        parts.append("fitted" if self.is_fitted() else "not fitted")
        if self.threshold is None:
            parts.append("no threshold")
        else:
            rule = self.calibration.get("rule")
            parts.append(f"threshold={self.threshold:.6g}" + (f" ({rule})" if rule else ""))
        return f"{type(self).__name__}({', '.join(parts)})"

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
        return T.Resize(self.input_hw)

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

    def _batches(self, images, batch_size):
        """Batches (dicts with "image" N_b x 3 x H x W float32 in [0, 1] at the model's size, "path"
        and, for images given one by one, "size") of anything ``predict`` takes."""
        if isinstance(images, DataLoader):
            yield from images
            return
        if not isinstance(images, (list, tuple, str, os.PathLike)) and not hasattr(images, "shape") \
                and hasattr(images, "__len__") and hasattr(images, "__getitem__"):          # a dataset
            yield from DataLoader(self._with_transform(images, train=False), batch_size=batch_size)
            return
        if hasattr(images, "shape") and numpy.ndim(images) == 4 and images.shape[1] == 3 \
                and numpy.asarray(images[:0]).dtype.kind == "f":
            arr = _check_range(numpy.asarray(to_cpu(images), numpy.float32), "predict: images", self.unit_range)
            t = self.eval_transform()
            if isinstance(t, T.Resize) and tuple(t.target(*arr.shape[2:])) == tuple(arr.shape[2:]):
                for i in range(0, len(arr), batch_size):                 # already the model's size
                    chunk = arr[i:i + batch_size]
                    yield {"image": chunk, "path": [f"image[{k}]" for k in range(i, i + len(chunk))]}
                return
            images = arr
        items = _expand(images)
        if not items:
            raise ValueError("predict: no images given")
        yield from DataLoader(_Inputs(items, self.eval_transform()), batch_size=batch_size)

    # ---- training: hold-out split, the method's training, calibration ---------------
    def fit(self, dataset, validation=None, quiet=None, calib_fraction=CALIB_FRACTION):
        """Train on normal images (a dataset, or an N x 3 x H x W array in [0, 1]) and calibrate.

        Without ``validation``, a share ``calib_fraction`` of the images (at least CALIB_MIN, at most
        half) is kept out of training and the threshold and score normalisation are chosen on them
        (module docstring). With ``validation`` (a dataset of images the model does not train on,
        labelled or normal only) all images train and the calibration uses ``validation``.
        ``calib_fraction=0`` (or fewer than 4 images) trains on all images and calibrates on them,
        which underestimates the false alarms (a warning says so)."""
        ds = ArrayDataset(dataset) if hasattr(dataset, "shape") else dataset
        if not 0 <= calib_fraction < 1:
            raise ValueError(f"fit: calib_fraction must be in [0, 1), got {calib_fraction}")
        held = validation
        if validation is None and calib_fraction > 0:
            n = len(ds)
            k = min(max(int(round(calib_fraction * n)), CALIB_MIN), n // 2)
            if k >= 2:
                perm = numpy.random.default_rng(self.config.get("seed", 0)).permutation(n)
                held, ds = _Subset(ds, numpy.sort(perm[:k])), _Subset(ds, numpy.sort(perm[k:]))
        self.fitted = False
        self._fit(ds, quiet=quiet)
        self.fitted = True
        if held is None:
            why = "calib_fraction=0" if calib_fraction == 0 else f"{len(ds)} images are too few to keep some out, so it"
            warnings.warn(f"fit: {why} calibrates on the training images themselves; unseen normal images score "
                          "higher, so expect more false alarms than the threshold suggests", stacklevel=2)
        with warnings.catch_warnings():
            if held is None:                             # said above; one warning is enough
                warnings.filterwarnings("ignore", "calibrate: the threshold rests on only")
            self.calibrate(ds if held is None else held, held_out=validation is None and held is not None)
        return self

    def _fit(self, dataset, quiet=None):
        """The method's training on normal images (stores whatever ``_maps`` needs)."""
        raise NotImplementedError

    def calibrate(self, dataset, mads=CALIB_MADS, held_out=False):
        """Choose and store the threshold, the pixel threshold and the score normalisation on
        ``dataset`` (images the model did not train on): F1-max when it holds normal and anomalous
        images, else max(max, median + ``mads`` robust std) of its scores (module docstring).
        ``held_out`` only words the stored rule. Returns the threshold."""
        ds = self._with_transform(dataset, train=False)
        res, extra = self._run(ds, None, "train", keep=("mask", "has_mask"))
        y = numpy.asarray(getattr(ds, "labels", numpy.zeros(len(res))))
        if len(y) != len(res):                                   # unreadable images were skipped
            raise ValueError(f"calibrate: {len(y) - len(res)} of {len(y)} images could not be read")
        scores = numpy.asarray(res.scores, numpy.float64)
        tops = numpy.asarray(res.maps, numpy.float64).reshape(len(res), -1).max(axis=1)   # N
        if not (numpy.isfinite(scores).all() and numpy.isfinite(tops).all()):
            raise ValueError("calibrate: some anomaly maps have NaN or infinite values; no threshold chosen")
        labelled = bool((y == 1).any() and (y == 0).any())
        normal = y != 1
        src = ("held-out normal training images" if held_out else "validation images" if labelled
               else "normal validation images")
        if labelled:
            t = metrics.f1_max(y == 1, scores)[1]
            rule = f"F1-max on {len(y)} {src} ({int((y == 1).sum())} anomalous)"
            masks = extra.get("mask")
            if masks is not None and ds.has_masks and masks[:, 0].any():
                pt = metrics.f1_max(masks[:, 0].ravel() > 0.5, numpy.asarray(res.maps).ravel())[1]
                pixel_rule = "pixel F1-max against the validation masks"
            else:
                pt = metrics.f1_max(y == 1, tops)[1]
                pixel_rule = "F1-max of the maps' maxima"
        else:
            t, pt = upper_bound(scores, mads), upper_bound(tops, mads)
            rule = f"max, or median + {mads:g} robust std if higher, of the scores of {len(y)} {src}"
            pixel_rule = "the same of their maps' maxima"
            if len(y) < CALIB_MIN:
                warnings.warn(f"calibrate: the threshold rests on only {len(y)} normal images; expect more "
                              "false alarms than with more images to calibrate on", stacklevel=2)
        self.threshold, self.pixel_threshold = float(t), float(pt)
        self.calibration = dict(rule=rule, pixel_rule=pixel_rule, n_images=len(y), n_anomalous=int((y == 1).sum()),
                                score_min=float(scores[normal].min()),
                                map_min=float(numpy.asarray(res.maps)[normal].min()),
                                scores=scores.astype(numpy.float32), labels=y.astype(numpy.int64))
        return self.threshold

    # ---- scoring: written once, used by training, calibration and inference -------------
    def _score(self, images):
        """Per-batch raw statistics (arrays) for N x 3 x H x W float32 images in [0, 1]."""
        raise NotImplementedError

    def _maps(self, stats, reference=None):
        """(scores N, maps N x H x W) from the concatenated raw statistics."""
        raise NotImplementedError

    def _collect(self, images, batch_size, desc="scoring"):
        """Raw statistics of all images, batch by batch, concatenated along the batch axis."""
        parts = [self._score(b["image"]) for b in progress(self._batches(images, batch_size), desc=desc,
                                                          unit="batch")]
        return {k: numpy.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _run(self, images, batch_size, normalization, keep=()):
        """(Result, dict of the batches' ``keep`` entries concatenated) in one pass over the images."""
        if normalization not in ("set", "batch", "train"):
            raise ValueError(f"normalization must be 'train', 'set' or 'batch', got {normalization!r}")
        if normalization == "train" and not self.is_fitted():
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(normal_images) first, "
                               "or load a saved model")
        bs = batch_size or self.config.get("batch_size", 8)
        parts, paths, sizes, extra = [], [], [], {k: [] for k in keep}
        for b in progress(self._batches(images, bs), desc="scoring", unit="batch"):
            _check_range(numpy.asarray(to_cpu(b["image"])), f"predict: the batch of {b.get('path', ['?'])[0]}",
                         self.unit_range)
            stats = self._score(b["image"])
            parts.append(self._maps(stats) if normalization == "batch" else stats)
            n = len(b["image"])
            paths += list(b.get("path", [None] * n))
            sizes += list(b.get("size", [tuple(b["image"].shape[2:])] * n))
            for k in keep:
                if k in b:
                    extra[k].append(numpy.asarray(b[k]))
        if not parts:
            raise NoImagesError("predict: none of the images could be read (see the warnings)")
        if normalization == "batch":
            scores = numpy.concatenate([p[0] for p in parts])
            maps = numpy.concatenate([p[1] for p in parts])
        else:
            stats = {k: numpy.concatenate([p[k] for p in parts]) for k in parts[0]}
            scores, maps = self._maps(stats, reference=self.stats if normalization == "train" else None)
        scores, maps = numpy.asarray(to_cpu(scores)), numpy.asarray(to_cpu(maps))
        bad = ~numpy.isfinite(scores) | ~numpy.isfinite(maps.reshape(len(maps), -1)).all(axis=1)
        if bad.any():
            scores = numpy.where(bad, numpy.nan, scores)
            names = ", ".join(str(paths[i]) for i in numpy.flatnonzero(bad)[:5])
            warnings.warn(f"predict: the anomaly maps of {int(bad.sum())} image(s) have NaN or infinite values "
                          f"(their scores are NaN and they are not flagged): {names}", RuntimeWarning, stacklevel=3)
        train = normalization == "train"
        cal = self.calibration if train else {}
        res = Result(scores, maps, self.threshold if train else None, self.pixel_threshold if train else None,
                     cal.get("score_min"), cal.get("map_min"), paths, sizes)
        return res, {k: numpy.concatenate(v) for k, v in extra.items() if v}

    def predict(self, images, batch_size=None, normalization="train"):
        """Score images: file paths, folders, PIL images, H x W x 3 uint8 arrays, N x 3 x H x W float
        arrays in [0, 1], lists of these (any size: each is resized to the model's input), a dataset
        or a DataLoader. Returns a :class:`Result`.

        normalization: "train" (default) scores with the statistics stored at fit, so an image
        scores the same alone or in any batch and the stored threshold applies (decisions and masks);
        "set" normalises over all the given images (the papers' per-set evaluation; no decisions);
        "batch" over each batch of ``batch_size``."""
        return self._run(images, batch_size, normalization)[0]

    def evaluate(self, dataset, batch_size=None, normalization="set"):
        """All metrics of npad.metrics.evaluate on a labelled dataset, with inference speed.

        normalization="set" (default) is the papers' per-set evaluation; "train" scores as the model
        is deployed, and adds the decisions at the stored threshold: ``threshold``,
        ``false_alarm_rate`` (share of normal images flagged) and ``detection_rate`` (of anomalous)."""
        ds = self._with_transform(dataset, train=False)
        t0 = time.perf_counter()
        res, extra = self._run(ds, batch_size, normalization, keep=("mask", "label", "has_mask", "defect_type"))
        seconds = time.perf_counter() - t0
        y = extra.get("label", ds.labels)
        masks = extra["mask"][:, 0] if ds.has_masks and "mask" in extra else None
        kinds = list(extra["defect_type"]) if "defect_type" in extra else ds.defect_types
        out = metrics.evaluate(res.scores, res.maps if masks is not None else None, y, masks, defect_types=kinds,
                               image_threshold=res.threshold, pixel_threshold=res.pixel_threshold)
        if res.labels is not None:
            out["threshold"], out["pixel_threshold_stored"] = res.threshold, res.pixel_threshold
            out["false_alarm_rate"] = float(res.labels[y == 0].mean()) if (y == 0).any() else float("nan")
            out["detection_rate"] = float(res.labels[y == 1].mean()) if (y == 1).any() else float("nan")
        out["images_per_s"] = len(res) / seconds
        out["result"] = res
        return out

    # ---- persistence ------------------------------------------------------------------
    def model_megabytes(self):
        """Size of the trained state (what ``save`` writes) in MB."""
        return sum(v.nbytes for v in self.state_dict().values()) / 2 ** 20

    def state_dict(self):
        raise NotImplementedError

    def load_state_dict(self, state):
        raise NotImplementedError

    def backbone_file(self):
        """The backbone's ONNX file (None when the configuration names none or it cannot be found)."""
        if not self.config.get("backbone"):
            return None
        from ..backbones import get_backbone
        try:
            return Path(get_backbone(self.config["backbone"]).onnx_path(self.config.get("onnx_path")))
        except (ValueError, OSError):
            return None

    def _provenance(self):
        """npad's version, the backbone file's name and SHA-256, and whether the model is fitted."""
        from .. import __version__
        out = dict(npad_version=__version__, fitted=int(self.fitted))
        f = self.backbone_file()
        if f is not None and f.is_file():
            st = f.stat()
            out.update(backbone_file=f.name, backbone_sha256=_file_sha256(str(f), st.st_size, st.st_mtime_ns))
        return out

    def save(self, path):
        """Write weights, configuration, statistics, threshold and calibration (how the threshold
        was chosen), npad's version and the backbone file's hash to one .h5 file, atomically."""
        if not self.is_fitted():
            raise ValueError(f"{type(self).__name__}.save: the model is not fitted; call fit(normal_images) first")
        stats = dict(self.stats)
        if self.threshold is not None:
            stats["threshold"] = numpy.float64(self.threshold)
        if self.pixel_threshold is not None:
            stats["pixel_threshold"] = numpy.float64(self.pixel_threshold)
        if self.calibration:
            stats["calibration"] = dict(self.calibration)
        stats["provenance"] = self._provenance()
        io.save_checkpoint(path, {k: to_cpu(v) for k, v in self.state_dict().items()}, self.config,
                           stats, method=self.method)
        return path

    @classmethod
    def load(cls, path):
        """The model saved at ``path`` (its class must match; see npad.methods.load for any method).

        A checkpoint with missing or mistyped entries, an edited configuration that no longer fits
        the weights, or a NaN threshold raises ``npad.io.CheckpointError`` naming the entry; a backbone
        file that differs from the one the model was trained with gives a warning."""
        ck = io.load_checkpoint(path)
        if ck.get("method") != cls.method:
            raise ValueError(f"{path}: holds a {ck.get('method')!r} model, not {cls.method!r}")
        config = ck.get("config")
        if not isinstance(config, dict):
            raise io.CheckpointError(f"{path}: its config is not a dict of options")
        unknown = sorted(set(config) - set(cls.defaults))
        if unknown:
            warnings.warn(f"{path}: ignoring option(s) unknown to {cls.__name__}: {unknown}", stacklevel=2)
        try:
            model = cls(**{k: v for k, v in config.items() if k in cls.defaults})
        except (TypeError, ValueError) as e:
            raise io.CheckpointError(f"{path}: config: {e}") from None
        stats = dict(ck.get("stats") or {})
        model.threshold = _finite(stats.pop("threshold", None), "threshold", path)
        model.pixel_threshold = _finite(stats.pop("pixel_threshold", None), "pixel_threshold", path)
        cal = stats.pop("calibration", None) or {}
        for key in ("score_min", "map_min"):
            if key in cal:
                cal[key] = _finite(cal[key], f"calibration/{key}", path)
        model.calibration = {k: (str(v) if numpy.asarray(v).dtype.kind == "U" else v) for k, v in cal.items()}
        prov = stats.pop("provenance", None) or {}
        model.fitted = bool(numpy.asarray(prov.get("fitted", 1)))
        model.stats = stats
        _check_state(model, ck["state"], path)
        try:
            model.load_state_dict(ck["state"])
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise io.CheckpointError(f"{path}: state: {e}") from None
        model._check_backbone(prov, path)
        return model

    def _check_backbone(self, prov, path):
        """Warn when the backbone file differs from the one the checkpoint was trained with."""
        want = prov.get("backbone_sha256")
        have = self._provenance().get("backbone_sha256")
        if want is not None and have is not None and str(want) != have:
            warnings.warn(f"{path}: trained with backbone file {prov.get('backbone_file')} (sha256 {str(want)[:12]}), "
                          f"but {self.backbone_file()} has sha256 {have[:12]}: its features differ, so the scores "
                          "and the stored threshold may not hold", stacklevel=3)


def _check_state(model, state, path):
    """Every entry the fresh model has is in the checkpoint's state, numeric and of the same shape."""
    if not isinstance(state, dict):
        raise io.CheckpointError(f"{path}: state is not a dict of arrays")
    for key, want in model.state_dict().items():
        if key not in state:
            raise io.CheckpointError(f"{path}: state has no entry {key!r}")
        got = numpy.asarray(state[key]) if not isinstance(state[key], dict) else None
        if got is None or got.dtype.kind not in "biuf":
            raise io.CheckpointError(f"{path}: state entry {key!r} is not a numeric array")
        if want is not None and tuple(numpy.shape(want)) != got.shape:
            raise io.CheckpointError(f"{path}: state entry {key!r} has shape {got.shape}, but the model's "
                                     f"configuration needs {tuple(numpy.shape(want))} (an edited config?)")

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
