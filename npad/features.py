"""Feature extraction from a registered backbone (npad.backbones) through the ONNX importer.

>>> fx = FeatureExtractor("efficientnet_lite0", taps="cflow")     # doctest: +SKIP
>>> feats = fx(images)               # list of B x C_i x H/s_i x W/s_i Tensors
>>> fx.channels, fx.strides          # ([24, 40, 112], [4, 8, 16])

Images are RGB in [0, 1], B x 3 x H x W; with ``normalize=True`` they are
normalised with the backbone's mean/std, ``(x - mean) / std``, first.
"""
from __future__ import annotations

import numpy as np

from . import functional as F
from .backend import get_array_module
from .nn.module import Module
from .onnx import OnnxModule
from .tensor import Tensor, is_grad_enabled, no_grad

__all__ = ["FeatureExtractor"]


class FeatureExtractor(Module):
    """Frozen backbone returning the feature maps at ``taps``.

    ``backbone``: a name of :data:`npad.backbones.BACKBONES`; ``taps``: a tap-set
    name of that backbone (``"cflow"``, ``"adtr"``, ``"favae"``, ``"default"``,
    ``"all"``) or a list of ONNX value names; ``onnx_path``: the file to use
    instead of the registry's; ``normalize``: apply the backbone's mean/std;
    ``frozen``: fold BatchNorm and freeze (``False`` keeps it trainable).

    Attributes: ``taps`` (value names in the file), ``channels`` and ``strides``
    (one per tap), ``mean``/``std``, ``model`` (the :class:`OnnxModule`).
    """

    def __init__(self, backbone="efficientnet_lite0", taps="default", onnx_path=None, normalize=True,
                 frozen=True):
        super().__init__()
        from .backbones import get_backbone
        spec = get_backbone(backbone)
        path = spec.onnx_path(onnx_path)
        if isinstance(taps, str):
            names = spec.resolve_taps(path, taps)
            reg = spec.tap_names(taps)
        else:
            names = list(taps)
            reg = [t if t in spec.channels else None for t in names]
        self.backbone = spec.name
        self.model = OnnxModule(path, frozen=frozen, outputs=names)
        self.taps = names
        self.normalize = bool(normalize)
        self.mean = tuple(float(v) for v in spec.mean)
        self.std = tuple(float(v) for v in spec.std)
        if all(r is not None and r in spec.channels for r in reg):
            self.channels = [spec.channels[r] for r in reg]
            self.strides = [spec.strides[r] for r in reg]
        else:
            self.channels, self.strides = self._probe()

    def _probe(self, size=64):
        """Channels and strides of the taps from one small zero input."""
        x = Tensor(np.zeros((1, 3, size, size), np.float32))
        with no_grad():
            outs = self.model(x)
        return [int(o.shape[1]) for o in outs], [size // int(o.shape[2]) for o in outs]

    def _normalize(self, x):
        if not self.normalize:
            return x
        xp = get_array_module(x.data)
        mean = xp.asarray(self.mean, x.dtype).reshape(1, -1, 1, 1)
        std = xp.asarray(self.std, x.dtype).reshape(1, -1, 1, 1)
        if x.requires_grad and is_grad_enabled():
            return F.div(F.sub(x, Tensor(mean)), Tensor(std))
        return Tensor._make((x.data - mean) / std, False, None, 0)

    def forward(self, x):
        """List of feature maps (one per tap) of ``x`` (B x 3 x H x W in [0, 1]). A graph is recorded
        only when the input or a parameter requires a gradient (the model sees that itself)."""
        if not isinstance(x, Tensor):
            x = Tensor(x)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"FeatureExtractor({self.backbone}): expected B x 3 x H x W RGB images, "
                             f"got shape {tuple(x.shape)}")
        dt = self.model.dtype
        if dt is not None and x.dtype != dt:
            x = F.astype(x, dt)
        return self.model(self._normalize(x))

    def extract(self, images, batch_size=16):
        """Features of many images (array or Tensor, N x 3 x H x W), run in batches under no_grad;
        returns one Tensor per tap with all N rows."""
        data = images.data if isinstance(images, Tensor) else images
        outs = None
        with no_grad():
            for i in range(0, len(data), batch_size):
                feats = self(Tensor(data[i:i + batch_size]))
                outs = [[f] for f in feats] if outs is None else [o + [f] for o, f in zip(outs, feats)]
        if outs is None:
            raise ValueError("FeatureExtractor.extract: no images")
        return [o[0] if len(o) == 1 else F.cat(o, 0) for o in outs]

    def extra_repr(self):
        return (f"{self.backbone!r}, taps={self.taps}, channels={self.channels}, strides={self.strides}, "
                f"normalize={self.normalize}")
