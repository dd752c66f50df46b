"""ADTR and ADTR+: anomaly detection transformer with feature reconstruction (Zhiyuan You, Kai Yang,
Wenhan Luo, Lei Cui, Yu Zheng and Xinyi Le, ICONIP 2022, arXiv:2209.01816). The network and the
losses are in ``adtr_model``.

Pipeline (paper Sec. 3, Fig. 2):

1. A frozen ImageNet CNN gives multi-scale features: the paper takes EfficientNet-B4 layers 1-5
   (App. A: 24 + 32 + 56 + 160 + 448 = 720 channels); the default here is EfficientNet-Lite0's five
   stage outputs (tap set "adtr", strides 2..32, 16+24+40+112+320 = 512 channels). Each is resized
   bilinearly to the stride-16 grid (``input_size / 16`` squared, 16 x 16 for 256 px; the paper says
   "resized", not how) and they are concatenated: f, C x H x W.
2. ``ADTRNet`` reconstructs f from its tokens: a 1x1 projection to ``hidden``, a Transformer
   encoder, a decoder fed the learned auxiliary query embedding, a 1x1 projection back.
3. Normal-only training minimises L_norm, the MSE between f and f_hat (Eq. 1), with AdamW and a step
   decay of the learning rate. Without augmentation the frozen features of the training set are
   extracted once and reused every epoch.
4. Scoring (``_score`` / ``_maps``, shared by validation and inference): s(u) = ||f(:, u) - f_hat(:, u)||_2
   over the channels (Eq. 2-3), upsampled bilinearly to the input size; the image score is "the maximum
   value of the averagely pooled s(u)" (Sec. 3.1), pooled with a ``pool`` x ``pool`` window (16 px, the
   window of UniAD's code by the same first author; the paper gives none).

ADTR+ (Sec. 3.3; ``plus=True`` or ``fit_plus``) fine-tunes a normal-only model with anomalies: with
pixel labels the push-pull loss L_px on the pseudo-Huber map phi (Eq. 6-7; masks area-downsampled
to the grid), with image labels only the top-k image loss L_img (Eq. 8-9); alpha = 0.003, k = 20.
The anomalies are confetti noise pasted on training images ("following [22] (FCDD)", Sec. 4.1; the
default) or a user-given labelled dataset. Its schedule: ``plus_epochs`` at ``plus_lr``, multiplied by
``plus_lr_gamma`` after every ``plus_lr_step`` epochs.

Ablations of Table 4 (``ablation``): "no_attention" (token-wise MLPs instead of attention),
"no_query" (the decoder starts from the encoder output), "pixels" (reconstruct the RGB image
average-pooled to the grid instead of CNN features; no backbone), "last_layer" (only the deepest
tap, resized to the grid, instead of the multi-scale concatenation).

Training budget: the defaults are the paper's schedule (Sec. 4.2, App. A): AdamW lr 1e-4, weight
decay 1e-4, batch 16, 500 epochs with the lr multiplied by 0.1 after 400; ADTR+ 300 epochs at 1e-4,
1e-5 after 200. ``quick=True`` is the CPU setting of the example and tests (a smaller Transformer,
60 epochs at lr 1e-3, per-channel standardised features with area downsampling of the finer taps;
see ``quick_overrides``).

Paper mode (``paper=True``; test: tests/methods/test_paper_mode.py) sets, besides that schedule:
EfficientNet-B4 from the checkpoint App. A names (lukemelas ``efficientnet-b4-6ed6700e.pth``, backbone
``efficientnet_b4_lukemelas``: set $NPAD_EFFICIENTNET_B4_PTH to that file; without it paper mode
stops with a one-line error saying so, and no other B4 is used) with the "adtr" taps (720 channels);
256 px images and a 16 x 16 grid (Sec. 4.2; App. A says 512 px and 32 x 32 for MVTec AD, the same
stride); hidden width 256, 8 heads, 4 encoder and 4 decoder layers, FFN 1024 (App. A); L_px with
alpha 0.003 for ADTR+ (Sec. 4.2). Dropout (0.1), the position-embedding and query initialisation,
the image-score window and the confetti parameters are not in the paper: npad's values stay
(docs/DEVIATIONS.md).

Reported (MVTec AD, EfficientNet-B4, 256 px). Table 1 (pixel AUROC) and Table 2 (image AUROC): the
ADTR / ADTR+ rows are lost in our text extraction of the paper; from Sec. 4.2's text, pixel AUROC
ADTR 97.2 (SPADE's 96.0 + 1.2; also Table 4's full model) and ADTR+ 97.5 (+0.3); image AUROC ADTR at
least 3.9 points above every baseline (the best readable baseline mean is 92.1) and ADTR+ 0.5 above
ADTR. Table 3 (CIFAR-10 one-class image AUROC, mean): ADTR 94.7, ADTR+ 96.1 (with CIFAR-100 as
anomalies). Table 4 (pixel AUROC): (a) CNN 94.4, without attention 94.8, without query 94.2,
attention + query 97.2; (b) pixels 91.3, features 97.2; (c) ResNet-18 95.3, ResNet-34 95.7,
EfficientNet-B0 96.4, EfficientNet-B4 97.2; (d) last layer 96.0, multi-scale 97.2. npad's own
numbers (EfficientNet-Lite0, quick budget, no MVTec AD here): docs/RESULTS.md.
"""
import numpy

from .. import functional as F
from ..backend import get_array_module, to_cpu
from ..data import DataLoader, confetti_batch
from ..data import transforms as T
from ..features import FeatureExtractor
from ..maps import image_scores, upsample
from ..optim import AdamW, StepLR
from ..progress import progress
from ..tensor import Tensor, manual_seed, no_grad
from .adtr_model import ADTRNet, adtr_normal_loss, anomaly_map, image_level_loss, pixel_push_pull_loss
from .base import AnomalyModel, backward_step, train_loop

ABLATIONS = ("none", "no_attention", "no_query", "pixels", "last_layer")
GRID_STRIDE = 16


class ADTR(AnomalyModel):
    """ADTR (normal-only) and, with ``plus=True`` or ``fit_plus``, ADTR+.

    >>> model = ADTR(quick=True).fit(train_dataset)            # doctest: +SKIP
    >>> scores, maps = model.predict(test_images)              # doctest: +SKIP
    >>> plus = ADTR(quick=True, plus=True).fit(train_dataset)  # ADTR+ with confetti anomalies  # doctest: +SKIP
    """

    method = "adtr"
    defaults = dict(
        backbone="efficientnet_lite0",   # a name in npad.backbones
        onnx_path=None,                  # the backbone's ONNX file when it is not built in
        taps="adtr",                     # tap set of the backbone (five stages) or a list of value names
        input_size=256,                  # the feature grid is input_size / 16 squared
        ablation="none",                 # Table 4: none, no_attention, no_query, pixels, last_layer
        resize="bilinear",               # finer taps to the grid: "bilinear" (paper) or "area" (cell means)
        standardize=False,               # per-channel z-score of f with training-set statistics (not in the paper)
        hidden=256,                      # Transformer width
        num_heads=8,
        num_encoder_layers=4,
        num_decoder_layers=4,
        dim_feedforward=1024,
        dropout=0.1,
        lr=1e-4,                         # AdamW
        weight_decay=1e-4,
        epochs=500,                      # Sec. 4.2: 500 epochs, lr x 0.1 after 400, batch 16
        lr_step=400,                     # StepLR: lr * lr_gamma every lr_step epochs
        lr_gamma=0.1,
        batch_size=16,
        grad_clip=None,                  # max gradient norm (None: no clipping)
        rotation=0.0,                    # degrees of random rotation of training images (0: features cached)
        hflip=False,                     # random horizontal flips of training images
        pool=16,                         # image score: max of the map average-pooled with this window (px; UniAD's)
        # ADTR+
        plus=False,                      # fit() continues with ADTR+ fine-tuning on confetti anomalies
        plus_epochs=300,                 # Sec. 4.2: 300 epochs, 1e-4 then 1e-5 after 200
        plus_lr=1e-4,
        plus_lr_step=200,                # StepLR of ADTR+: plus_lr * plus_lr_gamma every plus_lr_step epochs
        plus_lr_gamma=0.1,               #   (plus_lr_step None or 0: a constant lr)
        plus_loss="auto",                # "pixel" (Eq. 7), "image" (Eq. 9), "auto": pixel when masks exist
        alpha=0.003,                     # weight of the push terms (Eq. 7, 9)
        topk=20,                         # k of the image-level loss (Eq. 8)
        confetti_p=0.5,                  # share of each batch that gets confetti noise
        mask_fraction=0.25,              # a grid cell is anomalous when this share of its pixels is
        seed=0,
        quick=False,
        paper=False,
    )

    paper_weights = ("efficientnet_b4_lukemelas", "lukemelas:efficientnet-b4-6ed6700e")

    def quick_overrides(self):
        # a 2+2-layer, 128-wide Transformer; z-scored, cell-averaged features converge within 60 epochs
        # (synthetic gear: pixel AUROC 0.92 after 10 epochs, 0.985 after 60; without them 0.82 after 10)
        return dict(hidden=128, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=512,
                    epochs=60, lr_step=45, lr=1e-3, standardize=True, resize="area", plus_epochs=10, plus_lr=1e-4,
                    batch_size=8)

    def _paper_weights(self):
        return None if self.config["ablation"] == "pixels" else self.paper_weights      # "pixels": no backbone

    def paper_overrides(self):
        """The paper's settings (module docstring, "Paper mode"; Sec. 4.2 and App. A)."""
        return dict(backbone="efficientnet_b4_lukemelas", taps="adtr", input_size=256, resize="bilinear",
                    standardize=False, hidden=256, num_heads=8, num_encoder_layers=4, num_decoder_layers=4,
                    dim_feedforward=1024, lr=1e-4, weight_decay=1e-4, epochs=500, lr_step=400, lr_gamma=0.1,
                    batch_size=16, rotation=0.0, hflip=False, plus_epochs=300, plus_lr=1e-4, plus_lr_step=200,
                    plus_lr_gamma=0.1, plus_loss="pixel", alpha=0.003, topk=20)

    def __init__(self, **config):
        super().__init__(**config)
        c = self.config
        if c["ablation"] not in ABLATIONS:
            raise ValueError(f"ADTR: ablation must be one of {ABLATIONS}, got {c['ablation']!r}")
        if c["resize"] not in ("bilinear", "area"):
            raise ValueError(f"ADTR: resize must be 'bilinear' or 'area', got {c['resize']!r}")
        if c["plus_loss"] not in ("auto", "pixel", "image"):
            raise ValueError(f"ADTR: plus_loss must be 'auto', 'pixel' or 'image', got {c['plus_loss']!r}")
        h, w = self.input_hw
        if h % GRID_STRIDE or w % GRID_STRIDE:
            raise ValueError(f"ADTR: input_size must be a multiple of {GRID_STRIDE}, got {c['input_size']}")
        self.grid = (h // GRID_STRIDE, w // GRID_STRIDE)
        if c["ablation"] == "pixels":
            self.encoder, channels = None, 3
        else:
            self.encoder = FeatureExtractor(c["backbone"], taps=c["taps"], onnx_path=c["onnx_path"])
            channels = self.encoder.channels[-1] if c["ablation"] == "last_layer" else sum(self.encoder.channels)
        manual_seed(c["seed"])            # npad.nn.init and dropout draw from npad's generator
        self.net = ADTRNet(channels, self.grid, hidden=c["hidden"], num_heads=c["num_heads"],
                           num_encoder_layers=c["num_encoder_layers"], num_decoder_layers=c["num_decoder_layers"],
                           dim_feedforward=c["dim_feedforward"], dropout=c["dropout"],
                           use_attention=c["ablation"] != "no_attention",
                           use_query_embedding=c["ablation"] != "no_query")
        self.net.eval()
        self._train_ds = None
        self._norm = None                 # (mean, std), 1 x C x 1 x 1, with standardize=True

    def train_transform(self):
        c = self.config
        steps = [self.eval_transform()]   # square, as every method's (base.AnomalyModel)
        if c["rotation"]:
            steps.append(T.RandomRotation(c["rotation"]))
        if c["hflip"]:
            steps.append(T.RandomHorizontalFlip())
        return T.Compose(steps, seed=c["seed"])

    @property
    def augmenting(self):
        return bool(self.config["rotation"] or self.config["hflip"])

    # ---- features ----------------------------------------------------------------
    @no_grad()
    def features(self, images):
        """f of Sec. 3.1 for B x 3 x H x W images in [0, 1]: the frozen backbone's taps resized
        bilinearly to the stride-16 grid and concatenated, B x C x h x w (a constant Tensor);
        with ``standardize=True`` each channel is z-scored with the training-set statistics."""
        x = images if isinstance(images, Tensor) else Tensor(images, dtype=numpy.float32)
        if tuple(x.shape[2:]) != self.input_hw:
            raise ValueError(f"ADTR: expected images of {self.input_hw} px, got {tuple(x.shape)}")
        f = self._raw_features(x)
        if self._norm is None:
            return f
        xp = get_array_module(f.data)
        mean, std = (xp.asarray(a, f.dtype) for a in self._norm)
        return Tensor((f.data - mean) / std)

    def _raw_features(self, x):
        if self.encoder is None:                           # "pixels": the normalised RGB image per grid cell
            xp = get_array_module(x.data)
            mean = xp.asarray(T.IMAGENET_MEAN, x.dtype).reshape(1, 3, 1, 1)
            std = xp.asarray(T.IMAGENET_STD, x.dtype).reshape(1, 3, 1, 1)
            return F.avg_pool2d(Tensor((x.data - mean) / std), GRID_STRIDE)
        feats = self.encoder(x)
        if self.config["ablation"] == "last_layer":
            feats = feats[-1:]
        feats = [self._to_grid(f) for f in feats]
        return feats[0] if len(feats) == 1 else F.cat(feats, dim=1)

    def _to_grid(self, f):
        """One tap resized to the grid: bilinear (align_corners=True, as the upsampling layers of UniAD's
        code; the paper says "resized"), or with ``resize="area"`` the mean over each grid cell for taps
        finer than the grid."""
        h, w = self.grid
        if tuple(f.shape[2:]) == (h, w):
            return f
        if self.config["resize"] == "area" and f.shape[2] >= h and f.shape[3] >= w:
            return F.adaptive_avg_pool2d(f, (h, w))
        return F.interpolate(f, size=(h, w), mode="bilinear", align_corners=True)

    def _features_of(self, dataset, desc):
        """Features of every image of a dataset (its own order), N x C x h x w array."""
        loader = DataLoader(dataset, batch_size=self.config["batch_size"], prefetch=2)
        return numpy.concatenate([to_cpu(self.features(b["image"]).data) for b in progress(loader, desc=desc,
                                                                                           unit="batch")])

    # ---- training ----------------------------------------------------------------
    def _fit(self, dataset, quiet=None):
        """Train the reconstruction network on normal images (Eq. 1); with ``plus=True`` continue
        with ADTR+ on confetti anomalies (``fit_plus``)."""
        c = self.config
        ds = self._with_transform(dataset, train=True)
        self._train_ds = dataset
        rng = numpy.random.default_rng(c["seed"])
        manual_seed(c["seed"])
        cached = None
        if not self.augmenting or c["standardize"]:
            self._norm = None
            cached = self._features_of(self._with_transform(dataset, train=False), "ADTR features")
            if c["standardize"]:
                mean = cached.mean(axis=(0, 2, 3), keepdims=True, dtype=numpy.float64)
                std = cached.std(axis=(0, 2, 3), keepdims=True, dtype=numpy.float64) + 1e-6
                self._norm = (mean.astype(numpy.float32), std.astype(numpy.float32))
                cached = ((cached - self._norm[0]) / self._norm[1]).astype(numpy.float32)
            if self.augmenting:
                cached = None
        loader = DataLoader(ds, batch_size=c["batch_size"], shuffle=True, seed=c["seed"], prefetch=2)
        opt = AdamW(self.net.parameters(), lr=c["lr"], weight_decay=c["weight_decay"])
        sched = StepLR(opt, step_size=max(int(c["lr_step"]), 1), gamma=c["lr_gamma"])

        def batches(epoch):
            """B x C x h x w feature batches: the cached features reshuffled, or those of augmented images."""
            if cached is None:
                return (self.features(b["image"]).data for b in loader)
            perm, bs = rng.permutation(len(cached)), c["batch_size"]
            return (cached[perm[i:i + bs]] for i in range(0, len(perm), bs))

        def step(f):
            f = Tensor(f)
            return backward_step(opt, adtr_normal_loss(f, self.net(f)), c["grad_clip"]), len(f)      # Eq. 1

        self.history = {}
        train_loop(step, batches, c["epochs"], opt, sched, modules=[self.net], desc="ADTR epochs", quiet=quiet,
                   history=self.history)
        if c["plus"]:
            self.fit_plus(quiet=quiet)
        else:
            self._fit_reference(self._with_transform(dataset, train=False))
        return self

    def grid_masks(self, masks):
        """B x 1 x H x W pixel masks -> B x h x w 0/1 grid labels: a cell is anomalous when at least
        ``mask_fraction`` of its pixels are (area downsampling to the feature grid)."""
        m = numpy.asarray(to_cpu(masks), numpy.float32)
        if m.ndim == 3:
            m = m[:, None]
        with no_grad():
            frac = F.adaptive_avg_pool2d(Tensor(m), self.grid).data[:, 0]
        return (frac >= self.config["mask_fraction"]).astype(numpy.float32)

    def fit_plus(self, anomalies=None, epochs=None, quiet=None):
        """ADTR+: fine-tune the normal-only model with anomalies (Sec. 3.3).

        anomalies: None -- confetti noise (``npad.data.confetti_batch``) pasted on a share
        ``confetti_p`` of every batch of the training set given to ``fit``, fresh each epoch, with
        exact masks; or a labelled dataset (normal and anomalous images; its masks are used when it
        has them, else its image labels). The loss is L_px (Eq. 7) with masks, L_img (Eq. 9) with
        labels only (``plus_loss`` chooses)."""
        c = self.config
        if not self.history.get("loss"):
            raise RuntimeError("ADTR.fit_plus: fine-tuning starts from a normal-only model; call fit(normal_images) first")
        if anomalies is None:
            if self._train_ds is None:
                raise RuntimeError("ADTR.fit_plus: no training set to paste confetti on; pass anomalies=dataset")
            source, with_masks = self._with_transform(self._train_ds, train=True), True
        else:
            source = self._with_transform(anomalies, train=True)
            if (source.labels < 0).any():
                raise ValueError("ADTR.fit_plus: the anomalies dataset needs labels (normal 0, anomalous 1)")
            with_masks = bool(source.has_masks)
        use = c["plus_loss"]
        if use == "auto":
            use = "pixel" if with_masks else "image"
        if use == "pixel" and not with_masks:
            raise ValueError("ADTR.fit_plus: plus_loss='pixel' needs masks; the dataset has none")
        epochs = c["plus_epochs"] if epochs is None else int(epochs)
        rng = numpy.random.default_rng(c["seed"] + 1)
        loader = DataLoader(source, batch_size=c["batch_size"], shuffle=True, seed=c["seed"] + 1, prefetch=2)
        opt = AdamW(self.net.parameters(), lr=c["plus_lr"], weight_decay=c["weight_decay"])
        sched = StepLR(opt, step_size=int(c["plus_lr_step"]), gamma=c["plus_lr_gamma"]) if c["plus_lr_step"] else None

        def step(b):
            images = b["image"]
            if anomalies is None:
                images, masks, labels = confetti_batch(images, rng, p=c["confetti_p"])
            else:
                masks, labels = b.get("mask"), b["label"]
            f = self.features(images)
            f_hat = self.net(f)
            if use == "pixel":
                loss = pixel_push_pull_loss(f, f_hat, self.grid_masks(masks), alpha=c["alpha"])       # Eq. 7
            else:
                loss = image_level_loss(f, f_hat, labels, alpha=c["alpha"], k=c["topk"])              # Eq. 9
            return backward_step(opt, loss, c["grad_clip"]), len(images)

        plus = train_loop(step, lambda epoch: loader, epochs, opt, sched, modules=[self.net], desc="ADTR+ epochs",
                          quiet=quiet)
        self.history.update({f"plus_{k}": v for k, v in plus.items()}, plus_kind=use)
        self.history["train_seconds"] = self.history.get("train_seconds", 0.0) + plus["train_seconds"]
        if self._train_ds is not None:
            self._fit_reference(self._with_transform(self._train_ds, train=False))
        return self

    def _fit_reference(self, train_ds):
        """Statistics of the training images, for predict(normalization='train') and inspection.
        ADTR's maps are absolute (no normalisation), so these do not change any score."""
        res = self.predict(train_ds, normalization="set")
        self.stats = dict(train_score_max=numpy.float64(res.scores.max()),
                          train_score_mean=numpy.float64(res.scores.mean()),
                          train_map_max=numpy.float64(res.maps.max()))

    # ---- scoring (shared by validation and inference) ----------------------------------
    @no_grad()
    def _score(self, images):
        """s(u) on the feature grid (Eq. 2-3), N x h x w."""
        f = self.features(images)
        return {"grid": numpy.asarray(to_cpu(anomaly_map(f, self.net(f)).data), numpy.float32)}

    def _maps(self, stats, reference=None):
        """(scores N, maps N x H x W): s(u) upsampled bilinearly to the input size; score = max of the
        ``pool``-averaged map. The reference is not needed: the maps are not normalised."""
        maps = upsample(stats["grid"], self.input_hw, align_corners=True).astype(numpy.float32)
        pool = self.config["pool"]
        scores = image_scores(maps, pool=pool) if pool and pool > 1 else image_scores(maps)
        return numpy.asarray(scores, numpy.float32), maps

    # ---- persistence ----------------------------------------------------------------------
    def state_dict(self):
        state = dict(self.net.state_dict())
        if self._norm is not None:
            state["feature_mean"], state["feature_std"] = self._norm
        return state

    def load_state_dict(self, state):
        state = dict(state)
        mean, std = state.pop("feature_mean", None), state.pop("feature_std", None)
        self._norm = None if mean is None else (numpy.asarray(to_cpu(mean), numpy.float32),
                                                numpy.asarray(to_cpu(std), numpy.float32))
        self.net.load_state_dict(state)
        self.net.eval()
        self.history.setdefault("loss", [float("nan")])      # a loaded model counts as trained (fit_plus)
