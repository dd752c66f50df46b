"""CFLOW-AD: real-time unsupervised anomaly detection with localization via conditional
normalizing flows (Gudovskiy, Ishizaka and Kozuka, WACV 2022, arXiv:2107.12571).

Pipeline (paper Sec. 4, Fig. 2):

1. A frozen ImageNet encoder gives feature maps at three scales (EfficientNet-Lite0 by
   default: strides 4, 8, 16; the paper's Wide-ResNet-50-2 / ResNet-18 layer1..3 when the
   user supplies those ONNX files).
2. Every feature vector ("fiber") z_i of scale l, together with a 2-D positional encoding
   c_i of its grid position (P = 128 channels), goes through a conditional normalizing flow
   g_l (8 affine coupling blocks, ``npad.flows``): u_i = g_l^-1(z_i, c_i).
3. Its exact log-likelihood (Eq. 8) is log p(z_i | c_i) = -0.5 (||u_i||^2 + C log 2 pi) + log|det J|.
   Training minimises the mean over fiber batches of -logsigmoid(log p / C), as the authors'
   code does (Eq. 9 up to this per-dimension, bounded form).
4. Scoring (``_maps``, used by validation and inference alike): per scale, log p / C minus
   its maximum over the scored set, exp, bilinear upsample (align_corners=True) to the input
   size; summed over scales this is a likelihood map; anomaly map = its maximum - map; the
   image score is the anomaly map's maximum.

Training follows the authors' recipe: Adam lr 2e-4; ``meta_epochs`` x ``sub_epochs`` epochs under a
cosine schedule down to lr * 1e-3, with a linear warm-up from lr / 10 over the first
``warmup_epochs`` meta-epochs (the schedule steps after every image batch); within each image batch
and scale all positions are flattened into fibers, shuffled, and fiber batches of 256 each take one
step; training images are rotated randomly by up to +-5 degrees (Sec. 5.1).

Reported (paper Table 2/3, MVTec AD, WRN-50-2, 512x512 px): 98.26 image AUROC, 98.62 pixel
AUROC, 94.60 AUPRO (mean of 15 categories).

npad, quick budget (8 meta-epochs, lr 6e-3), EfficientNet-Lite0 at 256 px, on the embedded
synthetic dataset: gear 98.2 / 99.0 / 97.6 and weave 95.4 / 98.3 / 96.1 (image AUROC / pixel
AUROC / AUPRO).

Where npad differs from the authors' code (all of it):

1. Fibers are standardised per channel before the flow (``standardize``); the Jacobian of that
   map is added to log p, so log p stays the density of the raw features.
2. The coupling's soft clamp is s' = clamp tanh(s / clamp), where FrEIA's block, which the
   authors use, computes s' = clamp tanh(s) (s: the prescaled subnet output; ``npad.flows``).
   Both saturate at +-clamp; near 0 npad's s' ~ s, FrEIA's ~ clamp s.
3. Rotated training images fill their corners by reflection, not with black.
4. The quick budget (``quick=True``) trains fewer, shorter epochs with a larger learning rate.
"""
import numpy

from .. import functional as F
from ..data import DataLoader
from ..data import transforms as T
from ..features import FeatureExtractor
from ..flows import cflow_decoder, gaussian_log_prob, positional_encoding_2d
from ..maps import upsample
from ..nn import ModuleList
from ..optim import Adam, CosineAnnealingLR
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
        input_size=256,
        n_blocks=8,                      # coupling blocks per decoder
        cond_channels=128,               # P, the positional-encoding size
        clamp=1.9,
        prescale=0.1,
        permutation="soft",
        lr=2e-4,
        meta_epochs=25,
        sub_epochs=8,
        warmup_epochs=2,
        batch_size=32,                   # images per batch
        fiber_batch=256,                 # fibers per optimizer step
        rotation=5.0,                    # degrees of random rotation of training images
        standardize=True,                # fibers -> (e - mean) / std before the flow (npad's addition)
        seed=0,
        quick=False,
    )

    def quick_overrides(self):
        # measured on the synthetic dataset (gear, 8 epochs): lr 1e-3 / 3e-3 / 6e-3 gave image AUROC 88 / 93 / 98
        return dict(meta_epochs=8, sub_epochs=1, warmup_epochs=1, batch_size=8, fiber_batch=512, lr=6e-3)

    def __init__(self, **config):
        super().__init__(**config)
        c = self.config
        self.encoder = FeatureExtractor(c["backbone"], taps=c["taps"], onnx_path=c["onnx_path"])
        self.decoders = ModuleList([
            cflow_decoder(ch, c["cond_channels"], c["n_blocks"], c["clamp"], c["prescale"], c["permutation"],
                          seed=c["seed"] + 100 * i)
            for i, ch in enumerate(self.encoder.channels)])
        self._pos = {}

    def train_transform(self):
        c = self.config
        rotate = T.RandomRotation(c["rotation"], padding_mode="reflect")   # no black corners: borders stay texture
        return T.Compose([self.eval_transform(), rotate], seed=c["seed"])

    # ---- fibers ----------------------------------------------------------------
    def _position(self, h, w, xp):
        """P x h x w positional encoding, cached per grid size."""
        key = (h, w, xp.__name__)
        if key not in self._pos:
            self._pos[key] = positional_encoding_2d(self.config["cond_channels"], h, w, xp=xp)
        return self._pos[key]

    def _fibers(self, feat):
        """B x C x h x w features -> (B h w) x C fibers and (B h w) x P conditions."""
        b, c, h, w = feat.shape
        xp = get_array_module(feat)
        e = feat.transpose(0, 2, 3, 1).reshape(-1, c)                            # BHW x C
        p = self._position(h, w, xp)                                               # P x h x w
        p = xp.broadcast_to(p.reshape(p.shape[0], -1).T[None], (b, h * w, p.shape[0])).reshape(-1, p.shape[0])
        return e, p                                                                # BHW x P

    def _log_prob(self, i, e, p):
        """log p / C per fiber (N,) of scale i (Eq. 8 divided by the feature width). With
        ``standardize``, fibers are first mapped to (e - mean) / std (per channel, fixed at the start
        of fit) and the Jacobian of that map, -sum log std, is added, so log p stays the density
        of the raw features."""
        e, log_det0 = self._standardized(i, e)
        z, log_det = self.decoders[i](Tensor(e), Tensor(p))
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
    def fit(self, dataset, validation=None, quiet=None):
        """Train the decoders on normal images (a dataset; the method's transform is used when it
        has none). With ``validation`` (a labelled dataset), stores its F1-max threshold."""
        c = self.config
        ds = self._with_transform(dataset, train=True)
        loader = DataLoader(ds, batch_size=c["batch_size"], shuffle=True, seed=c["seed"], prefetch=2)
        self.stats = {}
        if c["standardize"]:
            self._standardization(loader)
        opt = Adam(self.decoders.parameters(), lr=c["lr"])
        steps = c["meta_epochs"] * c["sub_epochs"] * len(loader)
        warm = c["warmup_epochs"] * c["sub_epochs"] * len(loader)
        sched = CosineAnnealingLR(opt, T_max=steps, eta_min=c["lr"] * 1e-3, warmup=warm, warmup_start_factor=0.1)
        rng = numpy.random.default_rng(c["seed"])

        def step(batch):
            """One image batch: per scale, its fibers shuffled and cut into batches of ``fiber_batch``,
            one update each on -logsigmoid(log p / C) (Eq. 9). Returns (mean loss, fibers)."""
            with no_grad():
                feats = self.encoder(batch["image"])
            total, n = 0.0, 0
            for i, feat in enumerate(feats):
                e, p = self._fibers(feat.data)                                     # BHW x C, BHW x P
                perm = get_array_module(e).asarray(rng.permutation(len(e)))
                for f in range(len(e) // c["fiber_batch"]):
                    idx = perm[f * c["fiber_batch"]:(f + 1) * c["fiber_batch"]]
                    loss = -F.logsigmoid(self._log_prob(i, e[idx], p[idx])).mean()
                    total += backward_step(opt, loss) * len(idx)
                    n += len(idx)
            return total / max(n, 1), n

        self.history = {}
        train_loop(step, lambda epoch: loader, c["meta_epochs"] * c["sub_epochs"], opt, sched, schedule="batch",
                   modules=[self.decoders], desc="CFLOW epochs", quiet=quiet, history=self.history)
        self.history["fibers_per_s"] = self.history["samples_per_s"]
        self._fit_reference(self._with_transform(dataset, train=False))
        if validation is not None:
            self.calibrate(validation)
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
        size = self.config["input_size"]
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
