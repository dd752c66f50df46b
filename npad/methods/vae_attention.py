"""Gradient attention maps of variational autoencoders: "Towards Visually Explaining
Variational Autoencoders" (Liu, Li, Zheng, Karanam, Wu, Bhanu, Radke and Camps, CVPR 2020,
arXiv:1911.07389), as checked by its ML Reproducibility Challenge 2020 report.

The attention map (paper Sec. 3.1, Eq. 1-2; the authors' ``gradcam.py``):

1. Forward an image batch through the VAE's encoder; capture the activations A (N x C x h x w)
   of a chosen layer, picked by name (``"encoder.2"``; for an ONNX-imported encoder the ONNX
   value name, ``"trunk.fx.model:stage5"`` or just ``"stage5"``). The model is not edited: a
   forward hook (inside an :class:`~npad.onnx.OnnxModule`, a value hook) swaps A for a tensor
   whose gradient is kept.
2. Back-propagate the latent mean: the sum over latent dimensions (``target="sum"``, what the
   authors' code does) or one dimension z_i. Images do not interact (the model is in eval
   mode), so the batch sum gives every image its own gradient dmu/dA.
3. Divide the gradient by its root mean square (``grad_norm``: per image, ``"image"``, the
   default, so a map does not depend on the other images of its batch; ``"batch"``, one RMS
   over the whole batch, the authors' code exactly; ``None``), take its spatial mean per channel:
   alpha_c = mean_{h,w} dmu/dA_c.
4. M = sum_c alpha_c A_c, upsampled bilinearly to the input size, then ``activation="abs"``
   (the authors' code), ``"relu"`` (the paper's Grad-CAM-style figure) or ``None`` (signed).

Per-dimension maps M^i (``target="each"``: N x D x H x W, one backward per dimension) and
their mean (``target="mean"``, the report's Sec. 3.1 variant) are available too.

Inside a training loss (``differentiable=True``, for the attention-disentanglement loss of a
FactorVAE, issue 11): M comes back as a Tensor in the graph, differentiable with respect to A
and therefore the model parameters, with alpha treated as a constant. npad has no double
backward (no ``create_graph``), so the second-order path through alpha = mean dmu/dA is
dropped; that is the usual Grad-CAM-loss approximation. alpha comes from a first, detached pass
(frozen parameters, every ``.grad`` left as it was); a second forward gives the activations in
the caller's graph, so one ordinary ``loss.backward()`` follows (the graph of the first pass is
gone: npad's convolution frees its saved columns on backward, so no graph is walked twice).

Models (the report's appendix):

* :class:`ConvVAE`, the MNIST-size VAE of the authors' code: two 4x4 stride-2 convolutions
  (64, 128 channels) with ReLU, a 1024-unit linear layer, two linear heads to mu and log-var
  (latent 32), a mirrored decoder with a sigmoid output. Loss: BCE (summed over pixels) + KL,
  averaged over the batch. Authors' code: Adam lr 1e-3, batch 128, 100 epochs, attention at
  ``"encoder.2"`` (the second convolution).
* :class:`TrunkVAE`, the MVTec VAE: an ImageNet-pretrained trunk imported through ONNX, its output
  tap following the backbone (the tap set "vae_attention": EfficientNet-Lite0 ``stage7`` by default,
  ResNet-18 ``layer4``, i.e. "ResNet18 (w/o last 2 layers)"; frozen, or unfrozen and trained with the
  rest), then either flattening with a 1024-unit layer (``head="flatten"``: the report's appendix
  table (d), "Resnet18 (w/o last 2 layers) 8x8x512; Linear 1024; Linear 32", with the flatten its
  caption adds) or global average pooling (``head="pool"``, npad's default: small, any input size),
  linear heads to a 32-d latent, and a decoder Linear(32, 1024) - Linear(1024, C0 x 4 x 4) -
  transposed 4x4 stride-2 convolutions with BatchNorm and ReLU doubling the size up to the
  input (256 x 256 by default; 1024-512-256-128-64-32 channels at ``width=32``, table (d)) - sigmoid.
  Table (d) lists no activation after the Linear layers; npad puts a ReLU there
  (``linear_relu=True``), paper mode follows the table (``linear_relu=False``).

:class:`VAEAttention` (method ``"vae_attention"``) trains a VAE on normal images and scores
with the attention map: anomaly map = the attention map of the summed latent mean at the chosen
layer (default: the trunk output), image score = the map's maximum (``score="max"``; or its
mean). Maps are not renormalised per set: pixel metrics are rank-based, and per-image RMS
normalisation of the gradient already puts the maps of different images on one scale.

Paper mode (``paper=True``; the reproducibility report's MVTec setting; test:
tests/methods/test_paper_mode.py): ResNet-18 (torchvision IMAGENET1K_V1; the report says "a
pre-trained ResNet18") with the flatten head of table (d) and no activations between its Linear
layers; 256 px (table (d)'s 8x8x512 trunk output and 256x256x3 output, and Table 1's 72,803,363
parameters, which this network has; Sec. 3.2's text says 224 px, where table (d) cannot work);
latent 32 (Sec. 3.1, Table 1); Adam with PyTorch's default betas, lr 1e-4, batch 8, 300 epochs
(Table 1, Sec. 3.3); 10000 training images per epoch drawn with a random rotation in
[-30, 30] degrees and, for the categories whose mirror image is still normal (``MIRRORED``, npad's
list: "the mirroring is described as being used when the object permits it", Sec. 5.2), a random
horizontal flip; 20 % of the training images held out as a validation set (Sec. 3.2; npad records
its loss per epoch, ``history["val_loss"]``); the mean of the per-dimension maps (``target="mean"``,
Sec. 3.1) with the authors' batch-wide gradient normalisation. Not in the report: whether the trunk
is trained (npad trains it), the attention layer for MVTec (npad: the trunk output), the image
score (npad: the map's maximum).

Reported (the report's Table 4, MVTec AD pixel AUROC / IoU, ten categories): mean 0.86 / 0.24
claimed by Liu et al., 0.51 / 0.06 reproduced by the report (per class in docs/DEVIATIONS.md).
"""
import numpy

from .. import functional as F
from ..backend import get_array_module, to_cpu
from ..data import ArrayDataset, DataLoader
from ..data import transforms as T
from ..data.sampling import Resampled
from ..utils.data import Subset
from ..maps import upsample
from ..nn import (BatchNorm2d, Conv2d, ConvTranspose2d, Flatten, Linear, Module, ReLU, Sequential, Sigmoid,
                  Unflatten)
from ..optim import Adam
from ..tensor import Tensor, enable_grad, manual_seed, no_grad
from .base import AnomalyModel, backward_step, train_loop

__all__ = ["LayerCapture", "attention_maps", "map_activation", "find_layer", "ConvVAE", "TrunkVAE", "OnnxTrunk",
           "reparameterize", "vae_loss", "fit_vae", "best_iou", "VAEAttention", "MIRRORED"]

#: MVTec AD categories whose mirror image is a normal sample (paper mode's mirroring; npad's list, since the
#: report only says "when the object permits it"): the textures and the objects without a handedness. Not
#: cable (the wire colours' order), capsule and pill (printing), metal_nut ("flip" is a defect type), screw
#: (the thread's handedness), transistor (lead and body layout).
MIRRORED = ("carpet", "grid", "leather", "tile", "wood", "bottle", "hazelnut", "toothbrush", "zipper")


# ---------------------------------------------------------------------------------------------
# capturing one layer's activations without editing the model
# ---------------------------------------------------------------------------------------------
def _onnx_modules(model):
    from ..onnx import OnnxModule
    return [(n, m) for n, m in model.named_modules() if isinstance(m, OnnxModule)]


def find_layer(model, layer):
    """Where ``layer`` lives in ``model``: ``("module", submodule, None)`` for a submodule path
    (``"encoder.2"``; ``""`` is the model itself), or ``("onnx", onnx_module, value)`` for an ONNX
    value, written ``"path.to.onnx_module:value"`` or just ``"value"`` when one OnnxModule of the
    model has it (ONNX value names may contain dots, so a submodule path wins when both match)."""
    if ":" in layer:
        path, value = layer.split(":", 1)
        m = model.get_submodule(path)
        if not hasattr(m, "register_value_hook"):
            raise TypeError(f"layer {layer!r}: {path!r} is a {type(m).__name__}, not an OnnxModule")
        m.check_values([value])
        return "onnx", m, value
    try:
        return "module", model.get_submodule(layer), None
    except AttributeError:
        pass
    hits = [(n, m) for n, m in _onnx_modules(model) if layer in m.value_names()]
    if len(hits) == 1:
        return "onnx", hits[0][1], layer
    if len(hits) > 1:
        raise KeyError(f"layer {layer!r} is a value of several ONNX modules {[n for n, _ in hits]}; "
                       f"write it as '<module path>:{layer}'")
    onnx = _onnx_modules(model)
    removed = [n for n, m in onnx if layer in m.folded_values]
    if removed:
        raise KeyError(f"layer {layer!r} was folded away (BatchNorm folded into its convolution) in {removed}; "
                       "take the BatchNorm output's name, or import the backbone with frozen=False")
    names = [n for n, _ in model.named_modules() if n][:20]
    hint = f"; ONNX modules: {[n or '<model>' for n, _ in onnx]} (list values with .value_shapes())" if onnx else ""
    raise KeyError(f"{type(model).__name__} has no layer {layer!r}: submodules are e.g. {names}{hint}")


class LayerCapture:
    """Capture the activations of ``layer`` of ``model`` on the next forward passes.

    ``detach=True`` hands the rest of the network a fresh leaf holding the same values (its
    gradient is what backward leaves in ``.activation.grad``; nothing upstream is differentiated);
    ``detach=False`` keeps the graph through the layer and asks the tensor to retain its gradient
    (a leaf copy only when nothing upstream requires a gradient). Use as a context manager or call
    ``remove()``. ``activation`` holds the tensor of the latest forward."""

    def __init__(self, model, layer, detach=True):
        self.layer, self.detach, self.activation = layer, detach, None
        kind, mod, value = find_layer(model, layer)
        if kind == "module":
            self._handle = mod.register_forward_hook(lambda m, inputs, out: self._swap(out))
        else:
            self._handle = mod.register_value_hook(value, self._swap)

    def _swap(self, a):
        if not isinstance(a, Tensor):
            raise TypeError(f"layer {self.layer!r}: its output is a {type(a).__name__}, not one Tensor")
        if self.detach or not a.requires_grad:
            a = Tensor._make(a.data, True, None, 0)
        else:
            a.retain_grad()
        self.activation = a
        return a

    def remove(self):
        self._handle.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


# ---------------------------------------------------------------------------------------------
# the attention map
# ---------------------------------------------------------------------------------------------
def _default_encode(model):
    if hasattr(model, "encode"):
        return lambda x: model.encode(x)[0]
    return lambda x: model(x)[1]


def _alphas(model, x, layer, target, grad_norm, encode):
    """Channel weights alpha (N x C per target) from the normalised gradient of the latent mean
    at ``layer``; the layer's activations are a detached leaf, every parameter is frozen for the
    pass (nothing but the path from the layer to mu is differentiated) and ``.grad`` is left as is."""
    params = list(model.parameters())
    frozen = [p for p in params if p.requires_grad]
    saved = [(p, p.grad) for p in params]
    for p in frozen:
        p.requires_grad = False
    try:
        with LayerCapture(model, layer, detach=True) as cap:
            with enable_grad():
                mu = encode(x)
        a = cap.activation
        if a is None:
            raise RuntimeError(f"attention_maps: layer {layer!r} was not used when encoding")
        if mu.ndim != 2:
            raise ValueError(f"attention_maps: expected the latent mean as N x D, got shape {tuple(mu.shape)}")
        n_lat = mu.shape[1]
        if isinstance(target, str):
            if target == "sum":
                dims, single = [None], True
            elif target in ("each", "mean"):
                dims, single = list(range(n_lat)), False
            else:
                raise ValueError(f"attention_maps: target must be 'sum', 'each', 'mean', an int or a list, got {target!r}")
        elif isinstance(target, (int, numpy.integer)):
            dims, single = [int(target)], True
        else:
            dims, single = [int(d) for d in target], False
        for d in dims:
            if d is not None and not 0 <= d < n_lat:
                raise IndexError(f"attention_maps: latent dimension {d} out of range for {n_lat} dimensions")
        if not mu.requires_grad:
            raise RuntimeError(f"attention_maps: the latent mean does not depend on layer {layer!r}")
        alphas = []
        xp = get_array_module(a.data)
        for k, d in enumerate(dims):
            a.grad = None
            score = mu.sum() if d is None else mu[:, d].sum()
            score.backward(retain_graph=k < len(dims) - 1)
            g = a.grad.data if a.grad is not None else xp.zeros_like(a.data)
            if grad_norm == "image":
                g = g / (xp.sqrt((g * g).mean(axis=(1, 2, 3), keepdims=True)) + 1e-5)
            elif grad_norm == "batch":
                g = g / (float(xp.sqrt((g * g).mean())) + 1e-5)
            elif grad_norm is not None:
                raise ValueError(f"attention_maps: grad_norm must be 'image', 'batch' or None, got {grad_norm!r}")
            alphas.append(g.mean(axis=(2, 3)).astype(a.dtype))          # N x C
        a.grad = None
    finally:
        for p in frozen:
            p.requires_grad = True
        for p, g in saved:
            p.grad = g
    return alphas, dims, single, a


def map_activation(m, activation):
    """|M| (``"abs"``), max(M, 0) (``"relu"``) or M (None), for a Tensor (differentiable) or an array."""
    if activation not in ("abs", "relu", None):
        raise ValueError(f"attention maps: activation must be 'abs', 'relu' or None, got {activation!r}")
    if activation is None:
        return m
    if isinstance(m, Tensor):
        return F.abs(m) if activation == "abs" else F.relu(m)
    xp = get_array_module(m)
    return xp.abs(m) if activation == "abs" else xp.maximum(m, 0)


def attention_maps(model, x, layer, target="sum", activation="abs", grad_norm="image", size=None,
                   encode=None, differentiable=False, align_corners=False):
    """Gradient attention maps of the latent mean of ``model`` for images ``x`` (N x C x H x W).

    ``layer``: the layer's name (see :func:`find_layer`). ``target``: ``"sum"`` (sum over latent
    dimensions), an int i (dimension z_i), a list of ints or ``"each"`` (one map per dimension,
    N x K x H x W), ``"mean"`` (the mean of the per-dimension maps). ``activation``: ``"abs"``,
    ``"relu"`` or None (applied after upsampling, per map). ``grad_norm``: ``"image"``, ``"batch"``
    or None (see the module docstring). ``size``: output size (None: the input's; False: the
    layer's own grid). ``encode``: a callable x -> mu (default
    ``model.encode(x)[0]``). ``differentiable``: return a Tensor in the graph (alpha constant) for
    use in a loss; otherwise a NumPy/CuPy array, computed without touching any parameter.

    Put the model in eval mode first (BatchNorm with batch statistics couples the images)."""
    if not isinstance(x, Tensor):
        x = Tensor(x)
    encode = encode or _default_encode(model)
    alphas, dims, single, a = _alphas(model, x, layer, target, grad_norm, encode)
    if differentiable:   # a second forward, in the caller's graph, for the activations themselves
        with LayerCapture(model, layer, detach=False) as cap:
            with enable_grad():
                encode(x)
        a = cap.activation
    xp = get_array_module(a.data)
    if size is None:
        size = tuple(x.shape[2:])
    if differentiable:
        maps = [F.sum(a * Tensor(al[:, :, None, None]), 1, keepdim=True) for al in alphas]   # N x 1 x h x w
        m = maps[0] if len(maps) == 1 else F.cat(maps, 1)
        if size is not False and tuple(m.shape[2:]) != tuple(size):
            m = F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=align_corners)
        m = map_activation(m, activation)
        if target == "mean":
            return m.mean(1)
        return m[:, 0] if single else m
    m = xp.stack([(a.data * al[:, :, None, None]).sum(axis=1) for al in alphas], axis=1)   # N x K x h x w
    if size is not False and tuple(m.shape[2:]) != tuple(size):
        n, k = m.shape[:2]
        m = upsample(m.reshape(n * k, *m.shape[2:]), tuple(size), align_corners=align_corners)
        m = m.reshape(n, k, *m.shape[1:])
    m = map_activation(m, activation)
    if target == "mean":
        return m.mean(axis=1)
    return m[:, 0] if single else m


# ---------------------------------------------------------------------------------------------
# VAEs
# ---------------------------------------------------------------------------------------------
def reparameterize(mu, logvar, sample=True):
    """z = mu + exp(logvar / 2) eps, eps ~ N(0, I) from npad's generator (the reparametrisation trick:
    z ~ q(z|x) with a gradient to mu and logvar); z = mu when not ``sample``."""
    if not sample:
        return mu
    from ..tensor import randn
    return mu + F.exp(logvar * 0.5) * randn(*mu.shape, dtype=mu.dtype, device=mu.device)


class _VAE(Module):
    """``forward(x)`` -> (recon, mu, logvar): ``encode``, z = mu + sigma eps in training mode (z = mu in
    eval mode), ``decoder``."""

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x):
        mu, logvar = self.encode(x)
        return self.decode(reparameterize(mu, logvar, self.training)), mu, logvar


class ConvVAE(_VAE):
    """The MNIST-size VAE of the authors' code (for ``size`` x ``size`` images, size % 4 == 0):
    encoder Conv(c, 64, 4, 2, 1) - ReLU - Conv(64, 128, 4, 2, 1) - ReLU - Flatten -
    Linear(128 (size/4)^2, hidden) - ReLU; heads ``fc1`` (mu) and ``fc2`` (log-var);
    decoder mirrored, sigmoid output. ``width`` scales the channel counts (64 w, 128 w)."""

    def __init__(self, latent=32, in_channels=1, size=28, hidden=1024, width=1.0):
        super().__init__()
        if size % 4:
            raise ValueError(f"ConvVAE: size must be a multiple of 4, got {size}")
        c1, c2 = max(int(64 * width), 1), max(int(128 * width), 1)
        s = size // 4
        self.latent = latent
        self.encoder = Sequential(Conv2d(in_channels, c1, 4, 2, 1), ReLU(), Conv2d(c1, c2, 4, 2, 1), ReLU(),
                                  Flatten(), Linear(c2 * s * s, hidden), ReLU())
        self.fc1 = Linear(hidden, latent)
        self.fc2 = Linear(hidden, latent)
        self.decoder = Sequential(Linear(latent, hidden), ReLU(), Linear(hidden, c2 * s * s), ReLU(),
                                  Unflatten(1, (c2, s, s)), ConvTranspose2d(c2, c1, 4, 2, 1), ReLU(),
                                  ConvTranspose2d(c1, in_channels, 4, 2, 1), Sigmoid())
        self.default_layer = "encoder.2"

    def encode(self, x):
        h = self.encoder(x)
        return self.fc1(h), self.fc2(h)


class OnnxTrunk(Module):
    """A pretrained backbone (npad.backbones, through the ONNX importer) returning one feature
    map: the value ``tap``, by default the backbone's "vae_attention" tap (``"stage7"`` of
    EfficientNet-Lite0, ``"layer4"`` of ResNet-18)."""

    def __init__(self, backbone="efficientnet_lite0", tap=None, onnx_path=None, frozen=True):
        super().__init__()
        from ..features import FeatureExtractor
        self.fx = FeatureExtractor(backbone, taps="vae_attention" if tap is None else [tap], onnx_path=onnx_path,
                                   frozen=frozen)
        if len(self.fx.taps) != 1:
            raise ValueError(f"OnnxTrunk: one tap, got {self.fx.taps}")
        if not frozen:
            self.fx.model.requires_grad_(True)
        self.channels, self.stride = self.fx.channels[0], self.fx.strides[0]

    def forward(self, x):
        return self.fx(x)[0]


class TrunkVAE(_VAE):
    """The MVTec VAE: pretrained trunk, linear heads to the latent, transposed-convolution decoder
    with BatchNorm up to ``size`` (a power of two times 4). See the module docstring."""

    def __init__(self, latent=32, size=256, backbone="efficientnet_lite0", tap=None, onnx_path=None,
                 frozen=True, head="pool", hidden=1024, width=32, trunk=None, linear_relu=True):
        super().__init__()
        n_up = int(round(numpy.log2(size / 4)))
        if 4 * 2 ** n_up != size:
            raise ValueError(f"TrunkVAE: size must be 4 * 2^k, got {size}")
        self.latent, self.size, self.head = latent, size, head
        self.trunk = trunk if trunk is not None else OnnxTrunk(backbone, tap, onnx_path, frozen)
        c = self.trunk.channels
        if head == "pool":
            self.neck = Sequential()
            feat = c
        elif head == "flatten":
            s = size // self.trunk.stride
            self.neck = Sequential(Flatten(), Linear(c * s * s, hidden), *([ReLU()] if linear_relu else []))
            feat = hidden
        else:
            raise ValueError(f"TrunkVAE: head must be 'pool' or 'flatten', got {head!r}")
        self.fc_mu = Linear(feat, latent)
        self.fc_logvar = Linear(feat, latent)
        chans = [width * 2 ** (n_up - 1 - i) for i in range(n_up)]          # e.g. 1024 .. 32 for width 32
        act = [ReLU()] if linear_relu else []
        layers = [Linear(latent, hidden), *act, Linear(hidden, chans[0] * 16), Unflatten(1, (chans[0], 4, 4)), *act]
        for i in range(n_up):
            last = i == n_up - 1
            cout = 3 if last else chans[i + 1]
            layers.append(ConvTranspose2d(chans[i], cout, 4, 2, 1))
            layers += [Sigmoid()] if last else [BatchNorm2d(cout), ReLU()]
        self.decoder = Sequential(*layers)
        self.default_layer = "trunk"

    def encode(self, x):
        h = self.trunk(x)
        h = F.mean(h, (2, 3)) if self.head == "pool" else self.neck(h)
        return self.fc_mu(h), self.fc_logvar(h)


def vae_loss(recon, x, mu, logvar):
    """Negative ELBO per image: BCE summed over pixels + KL(q(z|x) || N(0, I)), batch mean
    (the authors' loss divided by the batch size)."""
    n = x.shape[0]
    return (F.binary_cross_entropy(recon, x, reduction="sum") + F.kl_normal(mu, logvar, reduction="sum")) / n


def _trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def fit_vae(model, data, epochs=10, lr=1e-3, batch_size=128, seed=0, quiet=None, desc="VAE epochs", history=None,
            validation=None):
    """Train ``model`` (forward -> (recon, mu, logvar)) with Adam on ``data``: an N x C x H x W
    array in [0, 1] or a dataset of dicts with "image". Returns the per-epoch mean negative ELBO;
    ``history`` (a dict) receives the whole training history (``npad.methods.base.train_loop``), with
    ``validation`` (an array of held-out images) also their mean negative ELBO per epoch, "val_loss"."""
    manual_seed(seed)
    opt = Adam(_trainable(model), lr=lr)
    rng = numpy.random.default_rng(seed)
    if hasattr(data, "shape"):
        arr = get_array_module(data).asarray(data, numpy.float32)          # on its own device

        def batches(epoch):
            perm = rng.permutation(len(arr))
            return (arr[perm[i:i + batch_size]] for i in range(0, len(arr), batch_size))
    else:
        loader = DataLoader(data, batch_size=batch_size, shuffle=True, seed=seed, prefetch=2)

        def batches(epoch):
            return (b["image"] for b in loader)

    def step(xb):
        x = Tensor(xb)
        recon, mu, logvar = model(x)
        return backward_step(opt, vae_loss(recon, x, mu, logvar)), len(xb)

    def end_epoch(epoch):
        val = float(negative_elbo(model, validation).mean())
        model.train()
        return {"val_loss": val}

    history = train_loop(step, batches, epochs, opt, modules=[model], desc=desc, quiet=quiet, history=history,
                         end_epoch=None if validation is None else end_epoch)
    return history["loss"]


@no_grad()
def negative_elbo(model, x, batch_size=64):
    """Per-image negative ELBO (with z = mu) of an N x C x H x W array, eval mode."""
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = Tensor(x[i:i + batch_size], dtype=numpy.float32)
        recon, mu, logvar = model(xb)
        bce = F.binary_cross_entropy(recon, xb, reduction="none")
        kl = F.kl_normal(mu, logvar, reduction="none")
        out.append(to_cpu(bce.data).reshape(len(xb), -1).sum(1) + to_cpu(kl.data).sum(1))
    return numpy.concatenate(out)


def best_iou(masks, maps):
    """The best IoU of ``maps >= t`` with the ground truth over every threshold t (the report's
    Table 4 "best IoU"), pooled over all pixels: IoU(t) = TP / (|G| + FP). Returns (iou, t)."""
    g = numpy.asarray(to_cpu(masks)) > 0.5
    m = numpy.asarray(to_cpu(maps))
    if g.ndim == 4:
        g = g[:, 0]
    if m.ndim == 4:
        m = m[:, 0]
    g, m = g.ravel(), m.ravel()
    if not g.any():
        return float("nan"), float("nan")
    order = numpy.argsort(-m, kind="stable")
    ms, gs = m[order], g[order]
    tp = numpy.cumsum(gs)
    fp = numpy.cumsum(~gs)
    last = numpy.r_[ms[1:] != ms[:-1], True]          # the end of each run of equal values
    iou = tp[last] / (g.sum() + fp[last])
    k = int(iou.argmax())
    return float(iou[k]), float(ms[last][k])


# ---------------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------------
class VAEAttention(AnomalyModel):
    """Anomaly localisation by gradient attention maps of a VAE trained on normal images.

    >>> model = VAEAttention(quick=True)                       # doctest: +SKIP
    >>> model.fit(train_dataset)                               # doctest: +SKIP
    >>> scores, maps = model.predict(test_images)              # doctest: +SKIP

    ``arch="trunk"``: :class:`TrunkVAE` (the MVTec VAE); ``arch="conv"``: :class:`ConvVAE` on the
    RGB input (small and fast). ``layer``: where the map is taken (default: the trunk output, or
    ``"encoder.2"`` of the ConvVAE). Image score: the map's maximum (``score="max"``) or mean.
    """

    method = "vae_attention"
    square_input = True                  # the VAE decodes to a square image
    defaults = dict(
        arch="trunk",                    # "trunk" (MVTec VAE) or "conv" (the authors' MNIST VAE, RGB)
        backbone="efficientnet_lite0",
        onnx_path=None,
        tap=None,                        # the trunk's output value (None: the backbone's "vae_attention" tap)
        frozen=False,                    # train the trunk with the rest (the report does not say)
        head="pool",                     # "pool" (npad's) or "flatten" (the report's table (d))
        linear_relu=True,                # ReLU after the hidden Linear layers (table (d) lists none)
        latent=32,
        hidden=1024,
        width=32,                        # decoder channels: width * 2^k (1024 .. 32 at 256 px)
        input_size=256,
        lr=1e-4,                         # the report's MVTec setting (Table 1; MNIST: 1e-3)
        batch_size=32,
        epochs=100,
        rotation=0.0,                    # training images: random rotation in [-rotation, rotation] degrees
        mirror="none",                   # random horizontal flips: "none", "all", or "auto" (MIRRORED categories)
        samples_per_epoch=None,          # training images drawn per epoch (None: each image once)
        validation_split=0.0,            # share of the training images held out (their loss: history["val_loss"])
        layer=None,                      # attention layer (None: the architecture's default)
        target="sum",                    # "sum", "mean" (of per-dimension maps) or a latent index
        activation="abs",                # "abs" (authors' code) or "relu" (paper's figure)
        grad_norm="image",
        score="max",
        seed=0,
        quick=False,
        paper=False,
    )

    paper_weights = ("resnet18", "torchvision:IMAGENET1K_V1")

    def quick_overrides(self):
        return dict(input_size=128, frozen=True, width=8, hidden=256, epochs=8, batch_size=8, lr=1e-3)

    def paper_overrides(self):
        """The report's MVTec setting (module docstring, "Paper mode"; Table 1, Sec. 3.1-3.3, 5.2, table (d))."""
        return dict(arch="trunk", backbone="resnet18", tap="layer4", head="flatten", linear_relu=False, latent=32,
                    hidden=1024, width=32, input_size=256, lr=1e-4, batch_size=8, epochs=300, rotation=30.0,
                    mirror="auto", samples_per_epoch=10000, validation_split=0.2, target="mean", activation="abs",
                    grad_norm="batch")

    def _paper_weights(self):
        return self.paper_weights if self.config["arch"] == "trunk" else None

    def __init__(self, **config):
        super().__init__(**config)
        c = self.config
        manual_seed(c["seed"])
        if c["mirror"] not in ("none", "all", "auto"):
            raise ValueError(f"VAEAttention: mirror must be 'none', 'all' or 'auto', got {c['mirror']!r}")
        if not 0 <= c["validation_split"] < 1:
            raise ValueError(f"VAEAttention: validation_split must be in [0, 1), got {c['validation_split']!r}")
        if c["arch"] == "trunk":
            self.vae = TrunkVAE(c["latent"], c["input_size"], c["backbone"], c["tap"], c["onnx_path"], c["frozen"],
                                c["head"], c["hidden"], c["width"], linear_relu=c["linear_relu"])
        elif c["arch"] == "conv":
            self.vae = ConvVAE(c["latent"], 3, c["input_size"], c["hidden"], width=c["width"] / 32)
        else:
            raise ValueError(f"VAEAttention: arch must be 'trunk' or 'conv', got {c['arch']!r}")
        self.layer = c["layer"] or self.vae.default_layer
        self._mirrored = c["mirror"] == "all"
        self.vae.eval()

    def train_transform(self):
        """Resize; with ``rotation`` a random rotation (the report: [-30, 30] degrees); with ``mirror`` a
        random horizontal flip ("auto": only for the MIRRORED categories, decided by ``fit``)."""
        c = self.config
        steps = [self.eval_transform()]
        if c["rotation"]:
            steps.append(T.RandomRotation(c["rotation"]))
        if self._mirrored:
            steps.append(T.RandomHorizontalFlip())
        return T.Compose(steps, seed=c["seed"])

    def _fit(self, dataset, quiet=None):
        c = self.config
        cat = str(getattr(dataset, "category", "") or "").lower()
        self._mirrored = c["mirror"] == "all" or (c["mirror"] == "auto" and cat in MIRRORED)
        if hasattr(dataset, "shape"):
            dataset = ArrayDataset(dataset)
        n = len(dataset)
        order = numpy.random.default_rng(c["seed"]).permutation(n)
        n_val = int(round(c["validation_split"] * n))
        if n_val and n - n_val < 1:
            raise ValueError(f"VAEAttention: validation_split {c['validation_split']} leaves no training image of {n}")
        ds, held = self._with_transform(dataset, train=True), None
        if n_val:
            val = Subset(self._with_transform(dataset, train=False), sorted(order[:n_val]))
            held = numpy.stack([val[i]["image"] for i in range(len(val))])
            ds = Subset(ds, sorted(order[n_val:]))
        if c["samples_per_epoch"]:
            ds = Resampled(ds, c["samples_per_epoch"])
        self.history = {}
        fit_vae(self.vae, ds, c["epochs"], c["lr"], c["batch_size"], c["seed"], quiet=quiet, history=self.history,
                validation=held)
        return self

    def attention(self, images, **kw):
        """Attention maps of an N x 3 x H x W batch with the model's settings (keywords override)."""
        c = self.config
        layer = kw.pop("layer", self.layer)
        args = dict(target=c["target"], activation=c["activation"], grad_norm=c["grad_norm"])
        args.update(kw)
        self.vae.eval()
        return attention_maps(self.vae, images, layer, **args)

    def _score(self, images):
        m = self.attention(images)
        return {"map": numpy.asarray(to_cpu(m), numpy.float32)}

    def _maps(self, stats, reference=None):
        maps = stats["map"]
        flat = maps.reshape(len(maps), -1)
        scores = flat.max(axis=1) if self.config["score"] == "max" else flat.mean(axis=1)
        return scores, maps

    def state_dict(self):
        return self.vae.state_dict()

    def load_state_dict(self, state):
        self.vae.load_state_dict(state)
        self.vae.eval()
