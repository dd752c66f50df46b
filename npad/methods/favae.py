"""FAVAE: anomaly localization by modeling perceptual features (Dehaene and Eline, 2020,
arXiv:2008.05369), with the vanilla gamma-VAE baseline.

Model (paper Sec. 4, Appendix D; the network is in ``favae_model``):

* A fully convolutional VAE for 3 x 128 x 128 inputs (``ConvVAE``): 4x4 stride-2 and 3x3
  convolutions with BatchNorm and LeakyReLU(0.2), ending in an 8x8 convolution (``input_size / 16``)
  to 2 x 100 values, the mean and log-variance of a 100-d Gaussian posterior (App. D); the decoder
  mirrors it and ends in a sigmoid. Widths: by default those of the SSIM autoencoder of Bergmann et
  al., 32, 32, 32, 64, 64, 128, 64, 32 (npad's choice for a CPU: 1.3 M parameters instead of 19.6 M),
  in paper mode App. D's 128, 128, 256, 256, 512, 512, 512, 32 (``widths``; ``width`` multiplies either);
  ``decoder="appendix_d"`` builds App. D's decoder exactly (transposed 3x3 layers too).
* p(x | z) = N(mu(z), gamma^2) with one global learned gamma (Dai and Wipf's gamma-VAE, Sec. 3.1).
* FAVAE (``features="pretrained"``): features f_l(x) of a frozen ImageNet backbone (VGG-16
  conv2_2 / conv3_3 / conv4_3 before ReLU as in the paper, Sec. 5.2 and Table 2's (7, 14, 21);
  ResNet-18 layer1..3; or by default EfficientNet-Lite0's stages 1-3, the paper's strides 2, 4, 8)
  are reconstructed from the decoder layer of matching resolution through an adapter of two 1x1
  convolutions with a ReLU between (App. D). Table 2 names the decoder layers (22, 10, 16): the
  transposed convolutions opening the 64, 16 and 32 px resolutions, paired with the VGG layers of
  the same size (the tuples do not pair in the printed order); ``decoder="appendix_d"`` taps those,
  ``decoder="npad"`` the last activation at each resolution. When no decoder layer has the
  feature's stride the nearest one is used with bilinear resizing (Sec. 4.2). Each feature space has
  its own Gaussian p(f_l | z) = N(adapter_l(z), sigma_l^2) with one learned variance per channel
  (Sec. 4.2).
* Loss (Eq. 8), per image: the Gaussian negative log-likelihood in pixel space (y_0 = x) plus, for
  every feature space, its per-position NLL summed over channels and upsampled to the image size
  (counted as stride^2 pixels each, i.e. the map's mean times H x W), plus the KL term
  KL(q(z|x) || N(0, I)).  Minimised with Adam over samples of z (reparametrisation); the
  reported loss is per image pixel (nats / (H x W)).
* ``features="random"``: the same backbone with random weights (He-normal, zero biases;
  Fig. 3b); ``features="none"``: the vanilla gamma-VAE (pixel space only).
  ``frozen=False`` trains the backbone jointly (the paper shows this degenerates).

Scores (``_maps``, shared by validation and inference; z is the posterior mean):

* anomaly map = per layer, -log p(y_l | z) summed over channels, bilinearly upsampled to the image
  size and summed over layers (Sec. 4.2, Fig. 2b). The paper's merged map includes the pixel layer
  y_0 = x (Eq. 8's sum from i = 0; Fig. 3's column 7 merges the pixel and the three VGG layers):
  ``score_pixels=True``, the default. ``score_pixels=False`` merges the feature layers only; ``None``
  (the default of models saved before) adds the pixel layer only for the vanilla VAE. On npad's
  synthetic set (quick budget, one trained model scored both ways) the pixel layer raised pixel
  AUROC / AUPRO from 91.6 / 54.7 to 92.4 / 57.4 (gear) and from 82.0 / 67.5 to 83.0 / 68.2 (weave).
* image score ``image_score``: "sum" (the sum of the map, Sec. 4.2), "elbo" (the sum plus the
  KL term: -ELBO, the VAE's log-likelihood bound) or "typicality" (Eq. 2 for the vanilla
  VAE: |log p(x | z) - E_{x' ~ p(.|z)} log p(x' | z)| in pixel space, which for
  N(mu, gamma^2) is |sum_i ((x_i - mu_i)^2 / gamma^2 - 1)| / 2).

Data (Sec. 5.1): textures (``mode="texture"``; MVTec texture categories and the synthetic
"weave") are resized to ``texture_size`` (512) and cut into random ``input_size`` patches;
objects are resized to ``input_size`` with random rotation and translation (ranges not in the
paper: npad's 10 degrees and 5 %); each epoch draws ``samples_per_epoch`` random samples (the paper
trains "on 10000 images"). Test textures: the paper tests on random 128 px patches too
(``texture_test="patch"``: one patch per test image, its mask cut alike, fixed by the dataset's
seed); npad's default (``"tile"``) scores the whole ``texture_size`` image by tiling it into
``input_size`` tiles (overlapping where the size is not a multiple; overlaps averaged), every
tile going through the VAE as in training, the maps stitched at each layer's resolution.

Paper mode (``paper=True``; test: tests/methods/test_paper_mode.py): VGG-16 (torchvision
IMAGENET1K_V1) conv2_2 / conv3_3 / conv4_3 features (Sec. 5.2), App. D's widths and decoder,
latent 100, 128 px, BatchNorm (App. D), textures at 512 px cut into 128 px patches for training and
testing, 10000 images per epoch, 100 epochs (Sec. 5.1), the pixel layer in the merged map (Eq. 8,
Fig. 3). The optimiser, learning rate, batch size and schedule are not in the paper ("We did not do
any hyperparameter optimization"): npad's (Adam 5e-4, variances 1e-2, cosine to 5 %, batch 32).

Reported (paper Table 1 / Table 3, MVTec AD mean of 15 classes and of 5 runs, VGG-16 features):
0.953 pixel AUROC, 0.879 image AUROC; vanilla VAE 0.823 / 0.775 (per class: docs/DEVIATIONS.md).
"""
import math

import numpy

from .. import functional as F
from ..backend import get_array_module, to_cpu
from ..data import DataLoader, MVTEC_TEXTURES
from ..data import transforms as T
from ..data.sampling import Resampled
# the toy experiment of Appendix A (examples/favae_toy.py), also importable from here
from ..data.toy import PSI as TOY_PSI, SIGMA_A as TOY_SIGMA_A, SIGMA_N as TOY_SIGMA_N  # noqa: F401
from ..data.toy import ToyDataset, toy_samples  # noqa: F401
from ..maps import upsample
from ..nn.init import he_normal_
from ..optim import Adam, CosineAnnealingLR
from ..tensor import Tensor, no_grad
from .base import AnomalyModel, backward_step, train_loop
from .favae_model import ConvVAE  # noqa: F401 (importable here)
from .favae_model import APPENDIX_D_WIDTHS, FAVAENet, gaussian_nll_map, kl_per_image

TEXTURES = tuple(MVTEC_TEXTURES) + ("weave",)


def _tile_starts(n, tile):
    """Start offsets of tiles of ``tile`` covering ``n`` (evenly spread; overlapping when needed)."""
    if n <= tile:
        return [0]
    k = math.ceil(n / tile)
    return sorted({int(round(v)) for v in numpy.linspace(0, n - tile, k)})


class FAVAE(AnomalyModel):
    """Feature-augmented VAE (``features="pretrained"``), the same with a random backbone
    (``"random"``) or the vanilla gamma-VAE (``"none"``).

    >>> model = FAVAE(quick=True).fit(train_dataset)            # doctest: +SKIP
    >>> scores, maps = model.predict(test_images)              # doctest: +SKIP
    >>> model.save("favae.h5"); FAVAE.load("favae.h5")         # doctest: +SKIP
    """

    method = "favae"
    square_input = True                  # the VAE's input is a square patch
    defaults = dict(
        features="pretrained",           # "pretrained" | "random" | "none" (vanilla gamma-VAE)
        backbone="efficientnet_lite0",   # a name in npad.backbones (vgg16 / resnet18 for the paper's)
        onnx_path=None,                  # the backbone's ONNX file when it is not built in
        taps=None,                       # tap set / value names; None: the paper's strides 2, 4, 8
        frozen=True,                     # False: train the backbone jointly
        mode="auto",                     # "texture" | "object" | "auto" (from the category name)
        input_size=128,                  # VAE input (patch) size
        texture_size=512,                # textures are resized to this, then cut into patches
        rotation=10.0,                   # objects: degrees of random rotation
        translation=0.05,                # objects: random shift, fraction of the size
        latent=100,
        width=1.0,                       # channel multiplier of the VAE
        widths=None,                     # the 8 hidden widths (None: SSIM-AE's 32..; App. D: APPENDIX_D_WIDTHS)
        decoder="npad",                  # "npad" or "appendix_d" (transposed 3x3 layers, Table 2's taps)
        output="sigmoid",                # decoder output: "sigmoid" (App. D) or "linear" (unbounded data)
        batch_norm=True,                 # BatchNorm after each hidden convolution (Appendix D)
        lr=5e-4,
        variance_lr=1e-2,                # Adam lr of the log-variances (pixel gamma, feature sigmas)
        gamma_init=None,                 # initial pixel-space gamma (None: the first batch's std)
        epochs=100,
        samples_per_epoch=1000,          # random training samples per epoch
        batch_size=32,
        score_pixels=True,               # the pixel layer in the merged map (Eq. 8; False: features only)
        texture_test="tile",             # textures at test time: "tile" the whole image or one random "patch"
        image_score="sum",               # "sum" (of the map) | "elbo" (sum + KL) | "typicality" (Eq. 2)
        seed=0,
        quick=False,
        paper=False,
    )

    paper_weights = ("vgg16", "torchvision:IMAGENET1K_V1")

    @property
    def unit_range(self):
        """A linear decoder output models data that is not an image in [0, 1] (App. A's grey levels are
        N(0, 1)): then predict takes any finite values."""
        return self.config["output"] != "linear"

    def quick_overrides(self):
        return dict(epochs=12, samples_per_epoch=200, batch_size=16, lr=2e-3, input_size=64, texture_size=256)

    def paper_overrides(self):
        """The paper's settings (module docstring, "Paper mode"; Sec. 4.2, 5.1-5.2, App. D)."""
        return dict(backbone="vgg16", taps="favae", frozen=True, input_size=128, texture_size=512, latent=100,
                    width=1.0, widths=APPENDIX_D_WIDTHS, decoder="appendix_d", output="sigmoid", batch_norm=True,
                    epochs=100, samples_per_epoch=10000, score_pixels=True, image_score="sum", texture_test="patch")

    def _paper_weights(self):
        return self.paper_weights if self.config["features"] == "pretrained" else None

    def __init__(self, **config):
        super().__init__(**config)
        c = self.config
        if c["features"] not in ("pretrained", "random", "none"):
            raise ValueError(f"FAVAE: features must be 'pretrained', 'random' or 'none', got {c['features']!r}")
        if c["mode"] not in ("auto", "texture", "object"):
            raise ValueError(f"FAVAE: mode must be 'auto', 'texture' or 'object', got {c['mode']!r}")
        if c["image_score"] not in ("sum", "elbo", "typicality"):
            raise ValueError(f"FAVAE: image_score must be 'sum', 'elbo' or 'typicality', got {c['image_score']!r}")
        if c["texture_test"] not in ("tile", "patch"):
            raise ValueError(f"FAVAE: texture_test must be 'tile' or 'patch', got {c['texture_test']!r}")
        self.encoder = None
        if c["features"] != "none":
            from ..features import FeatureExtractor
            # a random backbone is the BN-folded network (convolutions only) with new weights
            self.encoder = FeatureExtractor(c["backbone"], taps=self._taps(), onnx_path=c["onnx_path"],
                                            frozen=c["frozen"] or c["features"] == "random")
            if c["features"] == "random":
                he_normal_(self.encoder, generator=c["seed"] + 1)
                self.encoder.requires_grad_(not c["frozen"])
            self.encoder.eval()
        ch = self.encoder.channels if self.encoder else []
        st = self.encoder.strides if self.encoder else []
        self.net = FAVAENet(c["input_size"], c["latent"], c["width"], ch, st, c["batch_norm"], widths=c["widths"],
                            decoder=c["decoder"], output=c["output"])
        self.net.eval()

    def _taps(self):
        """The feature taps: the option, else the stride-2/4/8 stages of EfficientNet-Lite0 (the
        strides of the paper's VGG-16 conv2_2 / conv3_3 / conv4_3) or the backbone's "favae" set.
        (Lite0's full "favae" set adds stride-16/32 stages, which at 64-128 px inputs dominate
        the summed map with 2x2-4x4 blobs: pixel AUROC 70.8 vs 91.5 on the synthetic gear.)"""
        taps = self.config["taps"]
        if taps is not None:
            return taps
        return ["stage1", "stage2", "stage3"] if self.config["backbone"] == "efficientnet_lite0" else "favae"

    # ---- data ------------------------------------------------------------------
    def _is_texture(self):
        return self.config["mode"] == "texture"

    def _resolve_mode(self, dataset):
        if self.config["mode"] == "auto":
            cat = str(getattr(dataset, "category", "") or "").lower()
            self.config["mode"] = "texture" if cat in TEXTURES else "object"
        return self.config["mode"]

    def eval_transform(self):
        c = self.config
        if self._is_texture() and c["texture_test"] == "patch":      # the paper: test on random patches too
            t = c["texture_size"]
            return T.Compose([T.Resize((t, t)), T.RandomCrop(c["input_size"])], seed=c["seed"])
        s = c["texture_size"] if self._is_texture() else c["input_size"]
        return T.Resize((s, s))                  # square: an int would resize only the shorter side

    def train_transform(self):
        c = self.config
        if self._is_texture():
            t = c["texture_size"]
            return T.Compose([T.Resize((t, t)), T.RandomCrop(c["input_size"])], seed=c["seed"])
        return T.Compose([self.eval_transform(), T.RandomRotation(c["rotation"], padding_mode="reflect"),
                          T.RandomShift(c["translation"])], seed=c["seed"])

    def _features(self, x):
        """Target features (list of Tensors), without gradient unless the backbone trains."""
        if self.encoder is None:
            return []
        if self.config["frozen"]:
            with no_grad():
                return [Tensor(f.data) for f in self.encoder(x)]
        return self.encoder(x)

    def _init_variances(self, x, feats):
        """Data-dependent start of the log-variances: the variance of the first batch (per
        channel in feature spaces), i.e. the error of a constant reconstruction."""
        xp = get_array_module(x.data)
        if not self.config["batch_norm"]:
            self.net.vae.data_init(x, self.config["seed"])
        g = self.config["gamma_init"]
        v = x.data.var() if g is None else float(g) ** 2
        self.net.logvar_px.data[...] = xp.log(xp.maximum(v, 1e-8))
        for head, f in zip(self.net.heads, feats):
            v = f.data.var(axis=(0, 2, 3)).reshape(1, -1, 1, 1)
            head.logvar.data[...] = xp.log(xp.maximum(v, 1e-6)).astype(head.logvar.data.dtype)

    # ---- the loss of Eq. 8 --------------------------------------------------------
    def loss(self, images, rng=None, sample=True):
        """Mean over the batch of Eq. 8 per image, divided by H x W; returns (loss Tensor, parts dict)."""
        x = images if isinstance(images, Tensor) else Tensor(images, dtype=numpy.float32)
        B, _, H, W = x.shape
        feats = self._features(x)
        mu, logvar, x_hat, taps = self.net(x, sample=sample, rng=rng)
        px = F.sum(F.reshape(gaussian_nll_map(x, x_hat, self.net.logvar_px), B, -1), 1)       # B
        total = px
        parts = {"pixel": float(px.data.mean()) / (H * W)}
        for i, m in enumerate(self.net.feature_maps(taps, feats)):
            fl = F.mean(F.reshape(m, B, -1), 1) * float(H * W)                                # upsampled sum
            total = total + fl
            parts[f"feature_{i}"] = float(fl.data.mean()) / (H * W)
        kl = kl_per_image(mu, logvar)
        parts["kl"] = float(kl.data.mean()) / (H * W)
        return F.mean(total + kl) / float(H * W), parts

    # ---- training ------------------------------------------------------------------
    def _trainable(self):
        params = list(self.net.parameters())
        var = [self.net.logvar_px] + [h.logvar for h in self.net.heads]
        ids = {id(p) for p in var}
        rest = [p for p in params if id(p) not in ids]
        if self.encoder is not None and not self.config["frozen"]:
            rest += [p for p in self.encoder.parameters() if p.requires_grad]
        return [{"params": rest}, {"params": var, "lr": self.config["variance_lr"]}]

    def _fit(self, dataset, quiet=None):
        """Train on normal images (a dataset; the method's transform is used when it has none)."""
        c = self.config
        self._resolve_mode(dataset)
        ds = self._with_transform(dataset, train=True)
        loader = DataLoader(Resampled(ds, c["samples_per_epoch"]), batch_size=c["batch_size"], drop_last=True,
                            seed=c["seed"], prefetch=2)
        opt = Adam(self._trainable(), lr=c["lr"])
        sched = CosineAnnealingLR(opt, T_max=max(c["epochs"] * len(loader), 1), eta_min=c["lr"] * 0.05)
        rng = numpy.random.default_rng(c["seed"])
        first = True

        def step(batch):
            nonlocal first
            x = Tensor(batch["image"])
            if first:
                self._init_variances(x, self._features(x))
                first = False
            loss, parts = self.loss(x, rng)                                                     # Eq. 8
            return dict(loss=backward_step(opt, loss), **parts), len(x)

        trained = [self.net] + ([self.encoder] if self.encoder is not None and not c["frozen"] else [])
        self.history = {}
        train_loop(step, lambda epoch: loader, c["epochs"], opt, sched, schedule="batch", modules=trained,
                   desc="FAVAE epochs", quiet=quiet, history=self.history, end_epoch=lambda epoch: {"gamma": self.gamma})
        self.history["images_per_s"] = self.history["samples_per_s"]
        self._fit_reference(dataset)
        return self

    def _fit_reference(self, dataset, n=32):
        """Training statistics: gamma, and the mean pixel-space -log p(x|z) of up to ``n``
        training images (eval transform), the entropy estimate of the typicality score."""
        ds = self._with_transform(dataset, train=False)
        k = min(len(ds), n)
        idx = numpy.random.default_rng(self.config["seed"]).choice(len(ds), k, replace=False)
        get = getattr(ds, "get", None)
        images = numpy.stack([(get(int(i), numpy.random.default_rng(int(i))) if get else ds[int(i)])["image"]
                              for i in idx])
        stats = self._collect(images, self.config["batch_size"], desc="reference")
        self.stats = {"gamma": numpy.float64(self.gamma), "px_nll_mean": numpy.float64(stats["px_nll"].mean()),
                      "score_mean": numpy.float64(self._maps(stats)[0].mean())}

    @property
    def gamma(self):
        """The learned pixel-space standard deviation of p(x | z)."""
        return float(numpy.exp(0.5 * float(to_cpu(self.net.logvar_px.data).ravel()[0])))

    def feature_sigmas(self):
        """Learned standard deviations per channel of each feature space (list of arrays)."""
        return [numpy.exp(0.5 * to_cpu(h.logvar.data).ravel()) for h in self.net.heads]

    # ---- scoring (shared by validation and inference) ----------------------------------
    def _score_at_input(self, x):
        """Per-image statistics of a batch of input_size images (Tensor): dict of arrays with the
        input_size anomaly map ('map'), pixel NLL, its typicality term, feature NLL and KL."""
        c = self.config
        B, _, H, W = x.shape
        feats = self._features(x)
        mu, logvar, x_hat, taps = self.net(x, sample=False)
        px = gaussian_nll_map(x, x_hat, self.net.logvar_px).data                               # B x H x W
        xp = get_array_module(px)
        err = ((x.data - x_hat.data) ** 2).sum(axis=1) * xp.exp(-self.net.logvar_px.data[0, 0])  # B x H x W
        use_px = (c["features"] == "none") if c["score_pixels"] is None else bool(c["score_pixels"])
        total = px if use_px or not feats else 0.0
        fsum = xp.zeros(B, px.dtype)
        for m in self.net.feature_maps(taps, feats):
            fsum = fsum + m.data.reshape(B, -1).mean(axis=1) * (H * W)
            total = total + upsample(m.data, (H, W), align_corners=False)
        kl = kl_per_image(mu, logvar).data
        d = x.shape[1] * H * W
        return {"map": total.astype(numpy.float32), "px_nll": px.reshape(B, -1).sum(axis=1),
                "px_typ": 0.5 * (err.reshape(B, -1).sum(axis=1) - d), "feat_nll": fsum, "kl": kl}

    @no_grad()
    def _score(self, images):
        """Raw statistics of N x 3 x H x W images in [0, 1]: the anomaly map at H x W and
        per-image scalars.  Textures are tiled into input_size patches; other sizes of object
        images are resized to input_size and their maps resized back."""
        s = self.config["input_size"]
        x = numpy.asarray(images, numpy.float32)
        N, _, H, W = x.shape
        if (H, W) == (s, s):
            out = self._score_at_input(Tensor(x))
        elif not self._is_texture():
            with no_grad():
                xs = F.interpolate(Tensor(x), size=(s, s), mode="bilinear", align_corners=False)
            out = self._score_at_input(xs)      # map resized back, rescaled to keep its sum
            out["map"] = upsample(out["map"], (H, W), align_corners=False) * (s * s) / (H * W)
        else:
            acc = count = None
            out = {}
            for ty in _tile_starts(H, s):
                for tx in _tile_starts(W, s):
                    o = self._score_at_input(Tensor(numpy.ascontiguousarray(x[:, :, ty:ty + s, tx:tx + s])))
                    if acc is None:
                        xp = get_array_module(o["map"])
                        acc, count = xp.zeros((N, H, W), numpy.float32), xp.zeros((1, H, W), numpy.float32)
                    acc[:, ty:ty + s, tx:tx + s] += o.pop("map")
                    count[:, ty:ty + s, tx:tx + s] += 1
                    for k, v in o.items():
                        out[k] = out.get(k, 0) + v
            out["map"] = acc / count
        return {k: numpy.asarray(to_cpu(v)) for k, v in out.items()}

    def _maps(self, stats, reference=None):
        """(scores N, anomaly maps N x H x W); maps are absolute -log p (no normalisation)."""
        maps = stats["map"]
        kind = self.config["image_score"]
        if kind == "typicality":
            scores = self._typicality(stats)
        else:
            scores = maps.reshape(len(maps), -1).astype(numpy.float64).sum(axis=1)
            if kind == "elbo":
                scores = scores + stats["kl"]
        return scores, maps

    def _typicality(self, stats):
        """Eq. 2: |-log p(x|z) - H|, H the mean over training images when known (Nalisnick et al.'s
        estimate), else the entropy of N(mu, gamma^2) (then |sum ((x - mu)^2 / gamma^2 - 1)| / 2)."""
        if "px_nll_mean" in self.stats:
            return numpy.abs(stats["px_nll"] - float(self.stats["px_nll_mean"]))
        return numpy.abs(stats["px_typ"])

    def image_scores(self, images, batch_size=None):
        """All image scores at once: dict of N-arrays 'sum' (of the map), 'elbo', 'typicality',
        'pixel_nll' (-log p(x|z)), 'feature_nll' (sum over feature spaces) and 'kl'."""
        stats = self._collect(images, batch_size or self.config["batch_size"])
        total = stats["map"].reshape(len(stats["map"]), -1).astype(numpy.float64).sum(axis=1)
        return {"sum": total, "elbo": total + stats["kl"], "typicality": self._typicality(stats),
                "pixel_nll": stats["px_nll"], "feature_nll": stats["feat_nll"], "kl": stats["kl"]}

    # ---- persistence ----------------------------------------------------------------------
    def state_dict(self):
        state = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        if self.encoder is not None and not self.config["frozen"]:
            state.update({f"backbone.{k}": v for k, v in self.encoder.state_dict().items()})
        return state

    def load_state_dict(self, state):
        self.net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        bb = {k[9:]: v for k, v in state.items() if k.startswith("backbone.")}
        if bb and self.encoder is not None:
            self.encoder.load_state_dict(bb)
        self.net.eval()
        if self.encoder is not None:
            self.encoder.eval()
