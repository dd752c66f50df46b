"""CFLOW-AD: real-time unsupervised anomaly detection with localization via conditional
normalizing flows (Gudovskiy, Ishizaka and Kozuka, WACV 2022, arXiv:2107.12571).

Pipeline (paper Sec. 4, Fig. 2):

1. A frozen ImageNet encoder gives feature maps at three scales (EfficientNet-Lite0 by
   default: strides 4, 8, 16; in paper mode Wide-ResNet-50-2 layer2..4, strides 8, 16, 32).
2. Every feature vector ("fiber") z_i of scale k, together with a 2-D positional encoding
   c_i of its grid position (C_k = 128 channels, Sec. 4.2), goes through a conditional
   normalizing flow g_k (8 affine coupling blocks, ``npad.flows``): u_i = g_k^-1(z_i, c_i).
   ``cond_channels=0`` drops the condition: the unconditional UFLOW of Table 2.
3. Its exact log-likelihood (Eq. 8) is log p(z_i | c_i) = -0.5 (||u_i||^2 + D log 2 pi) + log|det J|.
   Training minimises the mean over fiber batches of -logsigmoid(log p / D), as the authors'
   code does (Eq. 7's negative log-likelihood, divided by D and bounded by the log-sigmoid).
4. Scoring (``_maps``, used by validation and inference alike): per scale, log p / D minus
   its maximum over the scored set, exp, bilinear upsample (align_corners=True) to the input
   size; summed over scales this is a likelihood map; anomaly map = its maximum - map
   (Sec. 4.2, S = max sum_k P_k - sum_k P_k); the image score is the anomaly map's maximum
   (the authors' code; the paper does not say).

Training: Adam lr 2e-4, image batches of 32, ``meta_epochs`` x ``sub_epochs`` passes over the
training set; within each image batch and scale all positions are flattened into fibers,
shuffled, and fiber batches of 256 each take one step; training images are rotated randomly
by up to +-5 degrees (Sec. 5.1). The learning rate follows ``schedule``: "smooth" (npad's: a
cosine over every image batch down to lr * 1e-3, the first ``warmup_epochs`` meta-epochs
ramping from a tenth of it) or "authors" (the authors' code: the cosine steps once per
meta-epoch, lr_e = eta + (lr - eta)(1 + cos(pi e / meta_epochs)) / 2 with eta = lr * 1e-3,
and during the first ``warmup_epochs`` meta-epochs the lr rises linearly per image batch
from lr / 10 to lr_{warmup_epochs}; incomplete image batches are dropped).

Paper mode (``paper=True``; test: tests/methods/test_paper_mode.py). Where the text and the
authors' code (github.com/gudovskiy/cflow-ad, whose README says its commands reproduce the
reported tables) differ, paper mode follows the code, since the tables came from it:

* encoder Wide-ResNet-50-2 (Sec. 5.3) with torchvision's IMAGENET1K_V1 weights (the code's
  ``wide_resnet50_2-95faca4d.pth``); taps layer2, layer3, layer4 (tap set "cflow_paper": the
  code, and Sec. 5.2's "layer 1 ... 32 x 32" at 256 px; Sec. 5.1's "identical to PaDiM" would
  be layer1..3, the tap set "cflow");
* input size per MVTec category (``input_size="auto"``, :data:`MVTEC_INPUT_SIZES`; Sec. 5.2-5.3:
  "512x512, 256x256 or 128x128 depending on the MVTec class"), rotation +-5 degrees with black
  corners (Sec. 5.1; the code's torchvision default fill);
* 8 coupling blocks, C_k = 128, clamp 1.9 (Sec. 4.2, 5.3; the code's ``clamp_alpha``), the
  unscaled soft clamp of the FrEIA version the code pins (``soft_clamp="unscaled"``);
* Adam lr 2e-4, image batch 32 (Sec. 5.1); the code's schedule ("authors": 25 meta-epochs x 8
  sub-epochs, warm-up 2 meta-epochs; the text says "100 train epochs ... 2 warm-up epochs") and
  fiber batch 256 (the code's ``N = 256``; the text says 8,192 = 32 x 256);
* no per-channel standardisation of the fibers (npad's addition, below).

Reported (MVTec AD, WRN-50-2, the per-class sizes; Table 4, mean of 15 classes and of four
runs): 98.26 image AUROC, 98.62 pixel AUROC, 94.60 AUPRO; per class in Table 3; Table 2 gives
the ablations (e.g. 97.87 pixel AUROC at 256 px for every class, UFLOW 96.86 vs CFLOW 97.36 at
512 px).

npad, quick budget (8 meta-epochs, lr 6e-3), EfficientNet-Lite0 at 256 px, on the embedded
synthetic dataset: gear 98.2 / 99.0 / 97.6 and weave 95.4 / 98.3 / 96.1 (image AUROC / pixel
AUROC / AUPRO).

npad's defaults differ from the paper where the CPU asks for it (EfficientNet-Lite0 at 256 px)
and in three choices of its own: fibers standardised per channel before the flow
(``standardize``; the Jacobian of that map is added to log p, so log p stays the density of the
raw features), the scaled soft clamp, and rotated images filling their corners by reflection.
Every deviation, and what paper mode does about it: docs/DEVIATIONS.md.
"""
import math
import warnings

import numpy

from .. import functional as F
from ..data import DataLoader
from ..data import transforms as T
from ..features import FeatureExtractor
from ..flows import cflow_decoder, gaussian_log_prob, positional_encoding_2d
from ..maps import upsample
from ..nn import ModuleList
from ..optim import Adam, CosineAnnealingLR, LambdaLR
from ..backend import get_array_module, to_cpu
from ..tensor import Tensor, no_grad
from .base import AnomalyModel, backward_step, train_loop

try:                                    # the fast scoring path; without npad/kernels/ the decoders run as modules
    from ..kernels import flow_kernel
except ModuleNotFoundError as e:
    if e.name != "npad.kernels":
        raise

    def flow_kernel(flow, x):
        return None

#: The input size CFLOW-AD used for each MVTec AD class (Sec. 5.2-5.3: "512x512, 256x256 or 128x128
#: depending on the MVTec class"; no list in the text). Derived from the paper's own tables: the WRN-50-2
#: localization AUROC of Table 3 equals, per class, Table 2's WRN50 column at 256 or at 512 px, and the
#: transistor (97.99, in neither) is the class Sec. 5.2 names for 128 px. The authors' README commands agree
#: except for hazelnut, run there at 256 px (Table 2: 98.82 at 256, 98.89 at 512 = Table 3's 98.89).
MVTEC_INPUT_SIZES = dict(bottle=512, cable=256, capsule=256, carpet=512, grid=512, hazelnut=512, leather=512,
                         metal_nut=256, pill=256, screw=512, tile=512, toothbrush=512, transistor=128, wood=512,
                         zipper=512)


class CFlow(AnomalyModel):
    """CFLOW-AD with one conditional flow decoder per feature scale.

    >>> model = CFlow(quick=True)                              # doctest: +SKIP
    >>> model.fit(train_dataset)                               # doctest: +SKIP
    >>> scores, maps = model.predict(test_images)              # doctest: +SKIP
    """

    method = "cflow"
    epochs_option = "meta_epochs"
    defaults = dict(
        backbone="efficientnet_lite0",   # a name in npad.backbones
        onnx_path=None,                  # the backbone's ONNX file when it is not built in
        taps="cflow",                    # tap set of the backbone (three scales) or a list of value names
        input_size=256,                  # or "auto": MVTEC_INPUT_SIZES by the training set's category (paper)
        n_blocks=8,                      # coupling blocks per decoder
        cond_channels=128,               # C_k, the positional-encoding size; 0: unconditional flows (UFLOW)
        clamp=1.9,
        soft_clamp="scaled",             # "scaled": clamp tanh(s / clamp); "unscaled": clamp tanh(s) (FrEIA 2021)
        prescale=0.1,
        permutation="soft",
        lr=2e-4,
        meta_epochs=25,
        sub_epochs=8,
        warmup_epochs=2,
        schedule="smooth",               # lr schedule: "smooth" (npad's) or "authors" (the authors' code)
        batch_size=32,                   # images per batch
        fiber_batch=256,                 # fibers per optimizer step
        rotation=5.0,                    # degrees of random rotation of training images
        rotation_fill="reflect",         # corners of rotated images: "reflect" or "black" (the authors' code)
        standardize=True,                # fibers -> (e - mean) / std before the flow (npad's addition)
        seed=0,
        quick=False,
        paper=False,
    )

    paper_weights = ("wide_resnet50_2", "torchvision:IMAGENET1K_V1")

    def quick_overrides(self):
        # measured on the synthetic dataset (gear, 8 epochs): lr 1e-3 / 3e-3 / 6e-3 gave image AUROC 88 / 93 / 98
        return dict(meta_epochs=8, sub_epochs=1, warmup_epochs=1, batch_size=8, fiber_batch=512, lr=6e-3)

    def paper_overrides(self):
        """The paper's settings (module docstring, "Paper mode"; Sec. 4.2, 5.1-5.3 and the authors' code)."""
        return dict(backbone="wide_resnet50_2", taps="cflow_paper", input_size="auto", n_blocks=8, cond_channels=128,
                    clamp=1.9, soft_clamp="unscaled", lr=2e-4, meta_epochs=25, sub_epochs=8, warmup_epochs=2,
                    schedule="authors", batch_size=32, fiber_batch=256, rotation=5.0, rotation_fill="black",
                    standardize=False)

    def __init__(self, **config):
        super().__init__(**config)
        c = self.config
        for key, allowed in (("schedule", ("smooth", "authors")), ("rotation_fill", ("reflect", "black"))):
            if c[key] not in allowed:
                raise ValueError(f"CFlow: {key} must be one of {allowed}, got {c[key]!r}")
        self.encoder = FeatureExtractor(c["backbone"], taps=c["taps"], onnx_path=c["onnx_path"])
        self.decoders = ModuleList([
            cflow_decoder(ch, c["cond_channels"], c["n_blocks"], c["clamp"], c["prescale"], c["permutation"],
                          seed=c["seed"] + 100 * i, soft_clamp=c["soft_clamp"])
            for i, ch in enumerate(self.encoder.channels)])
        self._pos = {}

    def _resolve_size(self, dataset):
        """``input_size="auto"``: the paper's size for the training set's MVTec category, else 256 (the authors'
        default), with a warning."""
        if self.config["input_size"] == "auto":
            cat = str(getattr(dataset, "category", "") or "").lower()
            if cat not in MVTEC_INPUT_SIZES:
                warnings.warn(f"CFlow(input_size='auto'): {cat or 'the training set'!r} is no MVTec AD category; "
                              "input_size 256 (the authors' default)", stacklevel=3)
            self.config["input_size"] = MVTEC_INPUT_SIZES.get(cat, 256)
        return self.config["input_size"]

    def eval_transform(self):
        if self.config["input_size"] == "auto":
            raise RuntimeError("CFlow(input_size='auto'): the size is chosen by fit() from the training set's "
                               "category; fit first, or pass input_size")
        return super().eval_transform()

    def train_transform(self):
        c = self.config
        if c["rotation_fill"] == "black":      # the authors' code: torchvision's RandomRotation, fill 0
            rotate = T.RandomRotation(c["rotation"], fill=0.0, padding_mode="constant")
        else:                                  # no black corners: borders stay texture
            rotate = T.RandomRotation(c["rotation"], padding_mode="reflect")
        return T.Compose([self.eval_transform(), rotate], seed=c["seed"])

    # ---- fibers ----------------------------------------------------------------
    def _position(self, h, w, xp):
        """P x h x w positional encoding, cached per grid size (None without a condition)."""
        if self.config["cond_channels"] == 0:
            return None
        key = (h, w, xp.__name__)
        if key not in self._pos:
            self._pos[key] = positional_encoding_2d(self.config["cond_channels"], h, w, xp=xp)
        return self._pos[key]

    def _fibers(self, feat):
        """B x C x h x w features -> (B h w) x C fibers and (B h w) x P conditions (None: UFLOW)."""
        b, c, h, w = feat.shape
        xp = get_array_module(feat)
        e = feat.transpose(0, 2, 3, 1).reshape(-1, c)                            # BHW x C
        p = self._position(h, w, xp)                                               # P x h x w
        if p is None:
            return e, None
        p = xp.broadcast_to(p.reshape(p.shape[0], -1).T[None], (b, h * w, p.shape[0])).reshape(-1, p.shape[0])
        return e, p                                                                # BHW x P

    def _log_prob(self, i, e, p):
        """log p / C per fiber (N,) of scale i (Eq. 8 divided by the feature width). With
        ``standardize``, fibers are first mapped to (e - mean) / std (per channel, fixed at the start
        of fit) and the Jacobian of that map, -sum log std, is added, so log p stays the density
        of the raw features."""
        e, log_det0 = self._standardized(i, e)
        z, log_det = self.decoders[i](Tensor(e), None if p is None else Tensor(p))
        return (gaussian_log_prob(z, log_det) + log_det0) / e.shape[1]

    def _standardized(self, i, e):
        """(e - mean) / std for fibers ... x C of scale i and the log-Jacobian of that map (e and 0.0
        without ``standardize``)."""
        if not self.config["standardize"]:
            return e, 0.0
        xp = get_array_module(e)
        mean, std = self.stats[f"feat_mean_{i}"], self.stats[f"feat_std_{i}"]
        return (e - xp.asarray(mean, e.dtype)) / xp.asarray(std, e.dtype), -float(numpy.log(std).sum())

    def _standardization(self, loader, n_batches=4):
        """Per-channel mean and std of each scale's fibers over the first ``n_batches`` training
        batches (a data-dependent start, as Glow's ActNorm; kept fixed afterwards)."""
        sums = None
        for k, batch in enumerate(loader):
            if k == n_batches:
                break
            with no_grad():
                feats = self.encoder(batch["image"])
            fib = [to_cpu(self._fibers(f.data)[0]).astype(numpy.float64) for f in feats]
            part = [(len(e), e.sum(0), (e * e).sum(0)) for e in fib]
            sums = part if sums is None else [tuple(a + b for a, b in zip(s, q)) for s, q in zip(sums, part)]
        for i, (n, s1, s2) in enumerate(sums):
            mean = s1 / n
            self.stats[f"feat_mean_{i}"] = mean
            self.stats[f"feat_std_{i}"] = numpy.sqrt(numpy.maximum(s2 / n - mean * mean, 0)) + 1e-6

    # ---- training ----------------------------------------------------------------
    def _fit(self, dataset, quiet=None):
        """Train the decoders on normal images (a dataset; the method's transform is used when it
        has none)."""
        c = self.config
        self._resolve_size(dataset)
        ds = self._with_transform(dataset, train=True)
        authors = c["schedule"] == "authors"
        loader = DataLoader(ds, batch_size=c["batch_size"], shuffle=True, seed=c["seed"], prefetch=2, drop_last=authors)
        if len(loader) == 0:
            raise ValueError(f"CFlow: {len(ds)} training images make no full batch of {c['batch_size']}")
        self.stats = {}
        if c["standardize"]:
            self._standardization(loader)
        opt = Adam(self.decoders.parameters(), lr=c["lr"])
        per_meta = c["sub_epochs"] * len(loader)                                   # image batches per meta-epoch
        if authors:
            sched = LambdaLR(opt, lambda k: authors_lr_factor(k, per_meta, c["meta_epochs"], c["warmup_epochs"]))
        else:
            sched = CosineAnnealingLR(opt, T_max=c["meta_epochs"] * per_meta, eta_min=c["lr"] * 1e-3,
                                      warmup=c["warmup_epochs"] * per_meta, warmup_start_factor=0.1)
        rng = numpy.random.default_rng(c["seed"])

        def step(batch):
            """One image batch: per scale, its fibers shuffled and cut into batches of ``fiber_batch``,
            one update each on -logsigmoid(log p / D) (Eq. 7's form in the authors' code). Returns
            (mean loss, fibers)."""
            with no_grad():
                feats = self.encoder(batch["image"])
            total, n = 0.0, 0
            for i, feat in enumerate(feats):
                e, p = self._fibers(feat.data)                                     # BHW x C, BHW x P
                perm = get_array_module(e).asarray(rng.permutation(len(e)))
                for f in range(len(e) // c["fiber_batch"]):
                    idx = perm[f * c["fiber_batch"]:(f + 1) * c["fiber_batch"]]
                    loss = -F.logsigmoid(self._log_prob(i, e[idx], None if p is None else p[idx])).mean()
                    total += backward_step(opt, loss) * len(idx)
                    n += len(idx)
            return total / max(n, 1), n

        self.history = {}
        train_loop(step, lambda epoch: loader, c["meta_epochs"] * c["sub_epochs"], opt, sched, schedule="batch",
                   modules=[self.decoders], desc="CFLOW epochs", quiet=quiet, history=self.history)
        self.history["fibers_per_s"] = self.history["samples_per_s"]
        self._fit_reference(self._with_transform(dataset, train=False))
        return self

    def _fit_reference(self, train_ds):
        """Normalisation statistics of the training images (for predict(normalization='train')):
        the maximum log p / C per scale and the maximum of the summed likelihood map."""
        stats = self._collect(train_ds, self.config["batch_size"], desc="reference")
        self.stats.update({f"logp_max_{i}": numpy.float64(stats[f"logp_{i}"].max()) for i in range(len(self.decoders))})
        self.stats["prob_max"] = numpy.float64(self._likelihood(stats, self.stats).max())

    # ---- scoring (shared by validation and inference) ----------------------------------
    @no_grad()
    def _score(self, images):
        """Per scale: log p / C on the feature grid, N x h_l x w_l (NumPy arrays)."""
        feats = self.encoder(images)
        return {f"logp_{i}": numpy.asarray(self._scale_log_prob(i, f.data), numpy.float64) for i, f in enumerate(feats)}

    @no_grad()
    def _scale_log_prob(self, i, feat):
        """log p / C of scale i at every position of its features B x C x h x w: B x h x w (NumPy). The
        fibers of all images go through the decoder at once; ``npad.kernels.flow_kernel``, where it
        serves, computes the condition's share of the subnets once for all images."""
        b, c, h, w = feat.shape
        kernel = flow_kernel(self.decoders[i], feat)
        if kernel is None:
            return self._log_prob(i, *self._fibers(feat)).numpy().reshape(b, h, w)
        e, log_det0 = self._standardized(i, feat.transpose(0, 2, 3, 1).reshape(b, h * w, c))   # B x hw x C
        pos = self._position(h, w, numpy)                                                 # P x h x w
        half = None if pos is None else len(pos) // 2   # the encoding's first half varies with the column only
        cond = None if pos is None else (pos[:half, 0].T, pos[half:, :, 0].T)             # w x P/2, h x P/2
        z, log_det = kernel.forward(e, cond)                                               # B x hw x C, B x hw
        return ((gaussian_log_prob(z.reshape(-1, c), log_det.reshape(-1)) + log_det0) / c).reshape(b, h, w)

    def _likelihood(self, stats, reference=None):
        """Sum over scales of exp(log p / C - max) upsampled to the input size: N x H x W."""
        size = self.input_hw
        total = 0.0
        for i in range(len(self.decoders)):
            logp = stats[f"logp_{i}"]
            top = reference[f"logp_max_{i}"] if reference else logp.max()
            # float64: anomalous regions have exp(...) ~ 1e-9 or less, which float32 would round into ties
            total = total + upsample(numpy.exp(logp - top), size, align_corners=True)
        return total

    def _maps(self, stats, reference=None):
        """(scores N, anomaly maps N x H x W): map = max - likelihood, score = max of the map."""
        prob = self._likelihood(stats, reference)
        top = reference["prob_max"] if reference else prob.max()
        maps = top - prob                                                          # N x H x W, float64
        return maps.reshape(maps.shape[0], -1).max(axis=1), maps

    # ---- persistence ----------------------------------------------------------------------
    def state_dict(self):
        return self.decoders.state_dict()

    def load_state_dict(self, state):
        self.decoders.load_state_dict(state)
        self.decoders.eval()


def authors_lr_factor(step, per_meta, meta_epochs, warmup_epochs, decay=1e-3):
    """The learning rate of the authors' code (``adjust_learning_rate`` / ``warmup_learning_rate``) at image
    batch ``step``, as a factor of the base lr: with e = step // per_meta the meta-epoch and
    cos(e) = decay + (1 - decay)(1 + cos(pi e / meta_epochs)) / 2, it is cos(e), except during the first
    ``warmup_epochs`` meta-epochs, where it rises linearly per batch from 1/10 to cos(warmup_epochs)."""
    def cosine(e):
        return decay + (1 - decay) * (1 + math.cos(math.pi * e / meta_epochs)) / 2
    if step < warmup_epochs * per_meta:
        return 0.1 + step / (warmup_epochs * per_meta) * (cosine(warmup_epochs) - 0.1)
    return cosine(step // per_meta)
