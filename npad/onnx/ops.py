"""The op table: ONNX op type -> a short function on npad Tensors calling :mod:`npad.functional`.

An entry is ``fn(node, *inputs) -> Tensor`` (or a tuple, one per output): ``node.a(name, default)``
reads an attribute, ``node.opset`` is the model's opset, a missing optional input is None. Inputs
at the positions of :data:`STATIC_INPUTS` (Reshape's shape, Slice's starts, Clip's bounds, ...) are
constants read with ``_ints`` / ``_arr``. Integer and boolean tensors (shape arithmetic, masks)
carry no gradient and take plain array code. What ONNX adds to PyTorch's semantics (auto_pad,
opset differences, Resize's coordinate modes) is translated here; the maths is npad.functional's.
"""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..backend import get_array_module, to_cpu
from ..functional.conv import _conv_padding
from ..tensor import Tensor
from .fold import SCALE_SHIFT

__all__ = ["OPS", "STATIC_INPUTS", "supported_ops", "implementation"]


# ---- reading inputs ------------------------------------------------------------------
def _wrap(a):
    """An array as a Tensor outside any graph."""
    return Tensor._make(a, False, None, 0)


def _arr(t):
    """A NumPy array of a value (Tensor or array)."""
    return to_cpu(t.data) if isinstance(t, Tensor) else np.asarray(t)


def _ints(t):
    return [int(v) for v in _arr(t).reshape(-1)]


def _isint(t):
    return t.dtype.kind in "iub"


def _xp(t):
    return get_array_module(t.data)


def _raw1(f):
    return lambda n, x: _wrap(f(_xp(x), x.data))


def _raw2(f):
    return lambda n, a, b: _wrap(f(_xp(a), a.data, b.data))


def _arith(fop, raw):
    """fop on float tensors; integer arithmetic (shapes) on the arrays."""
    return lambda n, a, b: _wrap(raw(_xp(a), a.data, b.data)) if _isint(a) or _isint(b) else fop(a, b)


def _float_or_raw(fop, raw):
    return lambda n, x: _wrap(raw(_xp(x), x.data)) if _isint(x) else fop(x)


def _variadic(f):
    def op(n, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = f(out, x)
        return out
    return op


def _int_div(xp, a, b):
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        return (xp.trunc(a / b)).astype(xp.result_type(a, b))
    return a / b


# ---- activations ------------------------------------------------------------------------
def clip_bounds(n, lo=None, hi=None):
    """Clip's (min, max) as Python numbers or None: attributes before opset 11, inputs from it on."""
    if n.opset < 11:
        return n.a("min", None), n.a("max", None)
    return (None if lo is None else _arr(lo).item()), (None if hi is None else _arr(hi).item())


def _clip(n, x, lo=None, hi=None):
    lo, hi = clip_bounds(n, lo, hi)
    if lo is None and hi is None:
        return x
    return _wrap(_xp(x).clip(x.data, lo, hi)) if _isint(x) else F.clamp(x, lo, hi)


def _prelu(n, x, slope):
    if slope.ndim == 1 and x.ndim > 2 and slope.shape[0] == x.shape[1]:
        slope = F.reshape(slope, (1, -1) + (1,) * (x.ndim - 2))
    return F.where(x.data > 0, x, x * slope)


def _softmax(f):
    def op(n, x):
        if n.opset < 13:   # softmax over the flattened axes from ``axis`` on
            axis = n.a("axis", 1) % x.ndim
            y = f(F.reshape(x, (int(np.prod(x.shape[:axis])), -1)), 1)
            return F.reshape(y, x.shape)
        return f(x, n.a("axis", -1))
    return op


# ---- convolution and pooling ----------------------------------------------------------
def _window(n, x, kernel):
    """(kernel, strides, dilations, padding) of a Conv/Pool node on the 4-D ``x``, in the form
    F.conv2d and F.max_pool2d take; 1-D attributes (x was B x C x L, now B x C x 1 x L) gain a leading 1."""
    def two(v):
        return tuple([1] * (2 - len(v)) + list(v))
    kernel, strides, dil = two(kernel), two(n.a("strides", [1, 1])), two(n.a("dilations", [1, 1]))
    auto = n.a("auto_pad", "NOTSET")
    if auto == "VALID":
        padding = "valid"
    elif auto == "SAME_UPPER":
        padding = "same"
    elif auto == "SAME_LOWER":   # as SAME_UPPER with the odd pixel at the start
        t, b, l, r = _conv_padding("same", x.shape[2:], kernel, strides, dil)
        padding = ((b, t), (r, l))
    else:
        p = list(n.a("pads", [0, 0, 0, 0]))   # [begin..., end...]
        padding = ((p[0], p[2]), (p[1], p[3])) if len(p) == 4 else ((0, 0), (p[0], p[1]))
    return kernel, strides, dil, padding


def _check_2d(n, x):
    if x.ndim != 4:
        raise NotImplementedError(f"{n.op}: only 1-D and 2-D are supported, got input {tuple(x.shape)}")


def _conv(n, x, w, b=None):
    if x.ndim == 3:   # 1-D as 2-D of height 1
        return F.squeeze(_conv(n, F.unsqueeze(x, 2), F.unsqueeze(w, 2), b), 2)
    _check_2d(n, x)
    kernel, s, d, padding = _window(n, x, w.shape[2:])
    return F.conv2d(x, w, b, stride=s, padding=padding, dilation=d, groups=n.a("group", 1))


def _pool(n, x):
    if x.ndim == 3:
        return F.squeeze(_pool(n, F.unsqueeze(x, 2)), 2)
    _check_2d(n, x)
    if len([o for o in n.outputs if o]) > 1:
        raise NotImplementedError(f"{n.op}: the Indices output is not supported")
    kernel, s, d, padding = _window(n, x, n.a("kernel_shape"))
    ceil = bool(n.a("ceil_mode", 0))
    if n.op == "MaxPool":
        return F.max_pool2d(x, kernel, s, padding, d, ceil)
    if any(v != 1 for v in d):
        raise NotImplementedError("AveragePool: dilations > 1 are not supported")
    return F.avg_pool2d(x, kernel, s, padding, ceil, count_include_pad=bool(n.a("count_include_pad", 0)))


def _conv_transpose(n, x, w, b=None):
    """ConvTranspose: ONNX's output_shape / auto_pad / asymmetric pads become F.conv_transpose2d with
    symmetric padding, or a crop of its unpadded output."""
    if x.ndim != 4:
        raise NotImplementedError(f"ConvTranspose: only 2-D is supported, got input {tuple(x.shape)}")
    kernel = list(w.shape[2:])
    strides, dil = list(n.a("strides", [1, 1])), list(n.a("dilations", [1, 1]))
    group, outpad = n.a("group", 1), list(n.a("output_padding", [0, 0]))
    out_shape, auto = n.a("output_shape", None), n.a("auto_pad", "NOTSET")
    full = [s * (i - 1) + op + (k - 1) * d + 1 for i, k, s, d, op in zip(x.shape[2:], kernel, strides, dil, outpad)]
    if out_shape is None and auto in ("SAME_UPPER", "SAME_LOWER"):
        out_shape = [i * s for i, s in zip(x.shape[2:], strides)]
    if out_shape is not None:
        total = [f - o for f, o in zip(full, list(out_shape)[-2:])]
        small, big = [t // 2 for t in total], [t - t // 2 for t in total]
        begin, end = (small, big) if auto == "SAME_UPPER" else (big, small)
    else:
        p = list(n.a("pads", [0, 0, 0, 0]))
        begin, end = p[:2], p[2:]
    if begin == end and all(op < max(s, d) for op, s, d in zip(outpad, strides, dil)):
        return F.conv_transpose2d(x, w, b, stride=tuple(strides), padding=tuple(begin),
                                  output_padding=tuple(outpad), groups=group, dilation=tuple(dil))
    y = F.conv_transpose2d(x, w, None, stride=tuple(strides), groups=group, dilation=tuple(dil))
    grow = [max(f - yi, 0) for f, yi in zip(full, y.shape[2:])]   # zeros where ONNX asks for more
    if any(grow):
        y = F.pad(y, (0, grow[1], 0, grow[0]))
    y = y[(slice(None), slice(None)) + tuple(slice(bg, f - e) for bg, f, e in zip(begin, full, end))]
    return y if b is None else y + F.reshape(b, (1, -1, 1, 1))


# ---- normalisation -------------------------------------------------------------------------
def _channel(t, x):
    """A per-channel vector shaped to broadcast over x (1 x C x 1 x ...)."""
    return F.reshape(t, (1, -1) + (1,) * (x.ndim - 2))


def _scale_shift(n, x, scale, shift):
    """A BatchNormalization folded without a convolution (fold.py): x scale + shift per channel."""
    return x * _channel(scale, x) + _channel(shift, x)


def _layer_norm(n, x, scale, bias=None):
    if len([o for o in n.outputs if o]) > 1:
        raise NotImplementedError("LayerNormalization: Mean/InvStdDev outputs are not supported")
    shape = tuple(x.shape[n.a("axis", -1) % x.ndim:])
    if tuple(scale.shape) != shape:
        scale = F.expand(scale, shape)
    if bias is None:
        bias = _wrap(_xp(x).zeros(shape, x.dtype))
    elif tuple(bias.shape) != shape:
        bias = F.expand(bias, shape)
    return F.layer_norm(x, shape, scale, bias, n.a("epsilon", 1e-5))


def _lrn(n, x):
    """y = x / (bias + alpha / size * sum of x^2 over ``size`` channels, (size - 1) // 2 of them before)^beta
    (PyTorch's local_response_norm puts the extra channel of an even size before, ONNX after)"""
    size = n.a("size")
    lo = (size - 1) // 2
    sq = F.pad(x * x, (0, 0) * (x.ndim - 2) + (lo, size - 1 - lo))
    C = x.shape[1]
    acc = sq[:, 0:C]
    for i in range(1, size):
        acc = acc + sq[:, i:i + C]
    return x / F.pow(acc * (n.a("alpha", 1e-4) / size) + n.a("bias", 1.0), n.a("beta", 0.75))


def _image_scaler(n, x):
    bias = np.asarray(n.a("bias", [0.0] * x.shape[1]), x.dtype).reshape(1, -1, *([1] * (x.ndim - 2)))
    return x * n.a("scale", 1.0) + _wrap(_xp(x).asarray(bias))


# ---- reductions ------------------------------------------------------------------------------
def _reduce(f, raw=None):
    def op(n, x, axes=None):
        axes = _ints(axes) if axes is not None else n.a("axes", None)   # an input from opset 18 (13 for Sum)
        keep = bool(n.a("keepdims", 1))
        if not axes:
            if n.a("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.ndim))
        axes = tuple(a % x.ndim for a in axes)
        if _isint(x) and raw is not None:
            return _wrap(np.asarray(raw(_arr(x), axis=axes, keepdims=keep)))
        return f(x, axes, keep)
    return op


def _argext(which):
    def op(n, x):
        axis, xp, data = n.a("axis", 0) % x.ndim, _xp(x), x.data
        if n.a("select_last_index", 0):
            out = x.shape[axis] - 1 - getattr(xp, which)(xp.flip(data, axis), axis=axis)
        else:
            out = getattr(xp, which)(data, axis=axis)
        out = out.astype(np.int64)
        return _wrap(xp.expand_dims(out, axis) if n.a("keepdims", 1) else out)
    return op


# ---- shapes and data movement --------------------------------------------------------------------
def _flatten(n, x):
    axis = n.a("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    lead = int(np.prod(x.shape[:axis], dtype=np.int64))
    return F.reshape(x, (lead, -1)) if x.numel() else _wrap(x.data.reshape(lead, -1))


def _reshape(n, x, shape=None):
    shape = _ints(shape) if shape is not None else list(n.a("shape"))
    if not n.a("allowzero", 0):   # 0 copies the input's dimension
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return F.reshape(x, tuple(shape))


def _as_shape(x, shape):
    """x reshaped (integer tensors on the array, floats through F.reshape)."""
    return _wrap(x.data.reshape(shape)) if _isint(x) else F.reshape(x, tuple(shape))


def _unsqueeze(n, x, axes=None):
    axes = _ints(axes) if axes is not None else list(n.a("axes"))
    shape = list(x.shape)
    for a in sorted(a % (x.ndim + len(axes)) for a in axes):
        shape.insert(a, 1)
    return _as_shape(x, shape)


def _squeeze(n, x, axes=None):
    axes = _ints(axes) if axes is not None else n.a("axes", None)
    axes = {i for i, s in enumerate(x.shape) if s == 1} if axes is None else {a % x.ndim for a in axes}
    return _as_shape(x, [s for i, s in enumerate(x.shape) if i not in axes])


def _transpose(n, x):
    perm = n.a("perm", None)
    return F.permute(x, tuple(perm) if perm is not None else tuple(reversed(range(x.ndim))))


def _concat(n, *xs):
    xs = [x for x in xs if x is not None]
    axis = n.a("axis") % xs[0].ndim
    if any(_isint(x) for x in xs):
        return _wrap(_xp(xs[0]).concatenate([x.data for x in xs], axis=axis))
    xs = [x for x in xs if x.shape[axis]] or xs[:1]
    return xs[0] if len(xs) == 1 else F.cat(xs, axis)


def _split(n, x, split=None):
    axis = n.a("axis", 0) % x.ndim
    if split is not None:
        sizes = _ints(split)
    elif n.a("split", None) is not None:
        sizes = list(n.a("split"))
    else:
        num, size = n.a("num_outputs", len(n.outputs)), x.shape[axis]
        chunk = -(-size // num)
        sizes = [min(chunk, size - i * chunk) for i in range(num)]
    if _isint(x):
        return tuple(_wrap(a) for a in np.split(x.data, np.cumsum(sizes)[:-1], axis=axis))
    return tuple(F.split(x, sizes, axis))


def _slice(n, x, starts=None, ends=None, axes=None, steps=None):
    if n.opset < 10:
        starts, ends, axes, steps = list(n.a("starts")), list(n.a("ends")), n.a("axes", None), None
    else:
        starts, ends = _ints(starts), _ints(ends)
        axes = None if axes is None else _ints(axes)
        steps = None if steps is None else _ints(steps)
    axes = list(range(len(starts))) if axes is None else [a % x.ndim for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    idx = [slice(None)] * x.ndim
    for a, s, e, st in zip(axes, starts, ends, steps):
        d = x.shape[a]
        s, e = s + d if s < 0 else s, e + d if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), d), min(max(e, 0), d)
        else:
            s, e = min(max(s, 0), d - 1), min(max(e, -1), d - 1)
            e = None if e == -1 else e
        idx[a] = slice(s, e, st)
    idx = tuple(idx)
    return _wrap(x.data[idx]) if _isint(x) else x[idx]


def _gather(n, x, idx):
    axis = n.a("axis", 0) % x.ndim
    ind = _arr(idx).astype(np.int64)
    ind = np.where(ind < 0, ind + x.shape[axis], ind)
    key = (slice(None),) * axis + ((int(ind),) if ind.ndim == 0 else (_xp(x).asarray(ind),))
    return _wrap(x.data[key]) if _isint(x) else x[key]


def _shape(n, x):
    start, end = n.a("start", 0), n.a("end", None)
    return _wrap(np.array(x.shape[start:end], np.int64))


def _constant_of_shape(n, shape):
    v = n.a("value", None)
    v = np.zeros(1, np.float32) if v is None else np.asarray(v).reshape(-1)
    return _wrap(np.full(tuple(_ints(shape)), v[0], v.dtype))


def _dropout(n, x, *rest):
    """Inference: the identity (and an all-True mask when asked for)."""
    if len([o for o in n.outputs if o]) > 1:
        return x, _wrap(_xp(x).ones(x.shape, bool))
    return x


def _pad(n, x, pads=None, value=None, axes=None):
    if n.opset < 11:
        pads, value = list(n.a("pads")), n.a("value", 0.0)
    else:
        pads = _ints(pads)
        value = 0.0 if value is None or _arr(value).size == 0 else _arr(value).item()
    nd = x.ndim
    axes = list(range(nd)) if axes is None else [a % nd for a in _ints(axes)]
    widths = [[0, 0] for _ in range(nd)]
    for j, a in enumerate(axes):
        widths[a] = [pads[j], pads[j + len(axes)]]
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}[n.a("mode", "constant")]
    crop = tuple(slice(-b if b < 0 else None, e if e < 0 else None) for b, e in widths)   # negative pads crop
    widths = [[max(b, 0), max(e, 0)] for b, e in widths]
    if _isint(x):
        npmode = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]
        kw = {"constant_values": value} if mode == "constant" else {}
        return _wrap(np.pad(_arr(x), widths, mode=npmode, **kw)[crop])
    if any(s != slice(None) for s in crop):
        x = x[crop]
    if any(b or e for b, e in widths):
        flat = [w for b, e in reversed(widths) for w in (b, e)]   # F.pad: last axis first
        while len(flat) > 2 and flat[-1] == 0 and flat[-2] == 0:
            flat = flat[:-2]
        x = F.pad(x, tuple(flat), mode=mode, value=value)
    return x


def _cast(n, x, like=None):
    import onnx
    to = like.dtype if like is not None else np.dtype(onnx.helper.tensor_dtype_to_np_dtype(n.a("to")))
    if x.dtype == to:
        return x
    if x.dtype.kind == "f" and to.kind == "f":
        if n.dtype is not None and n.dtype != np.float32 and to == np.float32:
            to = n.dtype   # a model cast with .double() computes in double throughout
        return F.astype(x, to) if x.dtype != to else x
    return _wrap(x.data.astype(to))


def _expand(n, x, shape):
    out = tuple(np.broadcast_shapes(tuple(x.shape), tuple(_ints(shape))))
    return _wrap(_xp(x).broadcast_to(x.data, out)) if _isint(x) else F.expand(x, out)


def _tile(n, x, reps):
    reps = _ints(reps)
    if _isint(x):
        return _wrap(_xp(x).tile(x.data, reps))
    y = F.reshape(x, tuple(v for d in x.shape for v in (1, d)))                      # 1 x d0 x 1 x d1 ...
    y = F.expand(y, tuple(v for r, d in zip(reps, x.shape) for v in (r, d)))        # r0 x d0 x r1 x d1 ...
    return F.reshape(y, tuple(r * d for r, d in zip(reps, x.shape)))


def _range(n, start, limit, delta):
    s, l, d = _arr(start), _arr(limit), _arr(delta)
    return _wrap(np.arange(s.item(), l.item(), d.item(), dtype=s.dtype))


# ---- matrix products and misc -----------------------------------------------------------------------
def _gemm(n, a, b, c=None):
    """alpha op(a) op(b) + beta c; the common Linear layer (transB, no scaling) is F.linear."""
    alpha, beta = n.a("alpha", 1.0), n.a("beta", 1.0)
    ta, tb = n.a("transA", 0), n.a("transB", 0)
    if tb and not ta and alpha == 1.0 and (c is None or (beta == 1.0 and c.ndim == 1 and c.shape[0] == b.shape[0])):
        return F.linear(a, b, c)
    y = F.matmul(F.transpose(a, 0, 1) if ta else a, F.transpose(b, 0, 1) if tb else b)
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (c * beta if beta != 1.0 else c)
    return y


def _matmul(n, a, b):
    return _wrap(_xp(a).matmul(a.data, b.data)) if _isint(a) else F.matmul(a, b)


def _pow(n, x, p):
    if _isint(x):
        return _wrap(x.data ** p.data)
    if p.numel() == 1 and not p.requires_grad:
        return F.pow(x, float(_arr(p).reshape(-1)[0]))
    return F.pow(x, p)


def _where(n, c, a, b):
    if _isint(a) and _isint(b):
        return _wrap(_xp(a).where(c.data, a.data, b.data))
    return F.where(c.data, a, b)


# ---- Resize: ONNX's coordinate modes, then F.resample along each axis ---------------------------------
def _source_coords(mode, out, size, scale, roi_start=0.0, roi_end=1.0):
    """The input coordinate each output position samples (ONNX coordinate_transformation_mode)."""
    x = np.arange(out, dtype=np.float64)
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        return size / 2 * (1 - out / (scale * size)) + (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out > 1 else np.zeros(out)
    if mode == "align_corners":
        return x * (size - 1) / (out - 1) if out > 1 else np.zeros(out)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    if mode == "tf_crop_and_resize":
        if out > 1:
            return roi_start * (size - 1) + x * (roi_end - roi_start) * (size - 1) / (out - 1)
        return np.full(out, 0.5 * (roi_start + roi_end) * (size - 1))
    raise NotImplementedError(f"Resize: coordinate_transformation_mode {mode!r} is not supported")


def _nearest_index(src, size, nearest_mode):
    if nearest_mode in ("round_prefer_floor", "round_prefer_ceil"):
        tie = np.floor(src) if nearest_mode == "round_prefer_floor" else np.ceil(src)
        i = np.where(src - np.floor(src) == 0.5, tie, np.round(src))
    elif nearest_mode in ("floor", "ceil"):
        i = getattr(np, nearest_mode)(src)
    else:
        raise NotImplementedError(f"Resize: nearest_mode {nearest_mode!r} is not supported")
    return np.clip(i, 0, size - 1).astype(np.int64)


def _taps(src, size, mode, a, exclude_outside):
    """(index, weight), out x K, of linear (K = 2) or cubic (K = 4, Keys' kernel with coefficient a)
    interpolation at the coordinates ``src``; taps past the border repeat the edge, or get weight 0
    (and the rest renormalised) with ``exclude_outside``."""
    if mode == "linear":
        s = np.clip(src, 0, size - 1)
        i0 = np.floor(s).astype(np.int64)
        w = s - i0
        return np.stack([i0, np.minimum(i0 + 1, size - 1)], 1), np.stack([1 - w, w], 1)
    i0 = np.floor(src).astype(np.int64)
    d = np.abs((src - i0)[:, None] - np.arange(-1, 3))                 # distances to the 4 taps
    w = np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                 np.where(d < 2, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a, 0.0))
    idx = i0[:, None] + np.arange(-1, 3)
    if exclude_outside:
        w = np.where((idx < 0) | (idx >= size), 0.0, w)
        w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    return np.clip(idx, 0, size - 1), w


def _resize_args(n, x, rest):
    """([(axis, scale, output size, (roi start, roi end))], coordinate mode, nearest mode) of a
    Resize/Upsample node: scales or sizes (opset 11 on: inputs roi, scales, sizes; before: scales)."""
    r = x.ndim
    if n.op == "Upsample" or n.opset < 11:
        scales = _arr(rest[0]).astype(np.float64) if rest else np.asarray(n.a("scales"), np.float64)
        return [(a, s, int(math.floor(x.shape[a] * s)), (0.0, 1.0)) for a, s in enumerate(scales)], \
            "asymmetric", "floor"
    roi, scales, sizes = (list(rest) + [None] * 3)[:3]
    roi = None if roi is None or roi.numel() == 0 else _arr(roi).astype(np.float64)
    scales = None if scales is None or scales.numel() == 0 else _arr(scales).astype(np.float64)
    sizes = None if sizes is None or sizes.numel() == 0 else _ints(sizes)
    axes = [a % r for a in n.a("axes", list(range(r)))]
    in_sizes = [x.shape[a] for a in axes]
    if sizes is not None:
        sc = [o / i for o, i in zip(sizes, in_sizes)]
        policy = n.a("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            s = min(sc) if policy == "not_larger" else max(sc)
            sc, sizes = [s] * len(sc), [int(math.floor(s * i + 0.5)) for i in in_sizes]
    else:
        sc, sizes = list(scales), [int(math.floor(i * s)) for i, s in zip(in_sizes, scales)]
    rois = list(zip(roi[:len(roi) // 2], roi[len(roi) // 2:])) if roi is not None else [(0.0, 1.0)] * len(axes)
    return list(zip(axes, sc, sizes, rois)), n.a("coordinate_transformation_mode", "half_pixel"), \
        n.a("nearest_mode", "round_prefer_floor")


def _resize(n, x, *rest):
    mode = {"bilinear": "linear", "trilinear": "linear"}.get(n.a("mode", "nearest"), n.a("mode", "nearest"))
    if mode not in ("nearest", "linear", "cubic"):
        raise NotImplementedError(f"Resize: mode {mode!r} is not supported")
    if n.a("antialias", 0):
        raise NotImplementedError("Resize: antialias=1 is not supported")
    per_axis, ctm, nearest = _resize_args(n, x, rest)
    mask = None   # tf_crop_and_resize: where the sample lies outside the input
    for a, s, out, (r0, r1) in per_axis:
        size = x.shape[a]
        if out == size and s == 1.0 and ctm != "tf_crop_and_resize":
            continue
        src = _source_coords(ctm, out, size, s, r0, r1)
        if ctm == "tf_crop_and_resize" and not ((src >= 0) & (src <= size - 1)).all():
            ok = ((src >= 0) & (src <= size - 1)).reshape([-1 if i == a else 1 for i in range(x.ndim)])
            mask = ok if mask is None else mask & ok
        if mode == "nearest":
            x = F.resample(x, a, _nearest_index(src, size, nearest))
        else:
            x = F.resample(x, a, *_taps(src, size, mode, n.a("cubic_coeff_a", -0.75), n.a("exclude_outside", 0)))
    if mask is not None:
        xp, ext = _xp(x), n.a("extrapolation_value", 0.0)
        x = x * _wrap(xp.asarray(mask.astype(x.dtype))) + _wrap(xp.asarray(((~mask) * ext).astype(x.dtype)))
    return x


#: op type -> implementation fn(node, *inputs)
OPS = {
    # elementwise arithmetic
    "Add": _arith(F.add, lambda xp, a, b: a + b),
    "Sub": _arith(F.sub, lambda xp, a, b: a - b),
    "Mul": _arith(F.mul, lambda xp, a, b: a * b),
    "Div": _arith(F.div, _int_div),
    "Mod": lambda n, a, b: _wrap(_xp(a).fmod(a.data, b.data) if n.a("fmod", 0) else _xp(a).mod(a.data, b.data)),
    "Pow": _pow,
    "Sqrt": lambda n, x: F.sqrt(x),
    "Exp": lambda n, x: F.exp(x),
    "Log": lambda n, x: F.log(x),
    "Abs": _float_or_raw(F.abs, lambda xp, a: xp.abs(a)),
    "Neg": _float_or_raw(F.neg, lambda xp, a: -a),
    "Reciprocal": lambda n, x: F.div(1.0, x),
    "Erf": lambda n, x: F.erf(x),
    "Floor": _raw1(lambda xp, a: xp.floor(a)),
    "Ceil": _raw1(lambda xp, a: xp.ceil(a)),
    "Round": _raw1(lambda xp, a: xp.round(a)),
    "Sign": _raw1(lambda xp, a: xp.sign(a)),
    "Min": _variadic(lambda a, b: _wrap(_xp(a).minimum(a.data, b.data)) if _isint(a) else F.minimum(a, b)),
    "Max": _variadic(lambda a, b: _wrap(_xp(a).maximum(a.data, b.data)) if _isint(a) else F.maximum(a, b)),
    "Sum": _variadic(lambda a, b: _wrap(a.data + b.data) if _isint(a) else F.add(a, b)),
    "Mean": lambda n, *xs: _variadic(F.add)(n, *xs) / float(len(xs)),
    "MatMul": _matmul,
    "Gemm": _gemm,
    # comparisons and logic (not differentiable)
    "Equal": _raw2(lambda xp, a, b: xp.equal(a, b)),
    "Less": _raw2(lambda xp, a, b: xp.less(a, b)),
    "LessOrEqual": _raw2(lambda xp, a, b: xp.less_equal(a, b)),
    "Greater": _raw2(lambda xp, a, b: xp.greater(a, b)),
    "GreaterOrEqual": _raw2(lambda xp, a, b: xp.greater_equal(a, b)),
    "And": _raw2(lambda xp, a, b: xp.logical_and(a, b)),
    "Or": _raw2(lambda xp, a, b: xp.logical_or(a, b)),
    "Xor": _raw2(lambda xp, a, b: xp.logical_xor(a, b)),
    "Not": _raw1(lambda xp, a: xp.logical_not(a)),
    "Where": _where,
    "ArgMax": _argext("argmax"),
    "ArgMin": _argext("argmin"),
    # activations
    "Relu": lambda n, x: F.relu(x),
    "Clip": _clip,
    "LeakyRelu": lambda n, x: F.leaky_relu(x, n.a("alpha", 0.01)),
    "PRelu": _prelu,
    "Sigmoid": lambda n, x: F.sigmoid(x),
    "Tanh": lambda n, x: F.tanh(x),
    "HardSigmoid": lambda n, x: F.hardsigmoid(x, n.a("alpha", 0.2), n.a("beta", 0.5)),
    "HardSwish": lambda n, x: F.hardswish(x),
    "Elu": lambda n, x: F.elu(x, n.a("alpha", 1.0)),
    "Selu": lambda n, x: F.elu(x, n.a("alpha", 1.67326319217681884765625)) * n.a("gamma", 1.05070102214813232421875),
    "Softplus": lambda n, x: F.softplus(x),
    "Mish": lambda n, x: x * F.tanh(F.softplus(x)),
    "Gelu": lambda n, x: F.gelu(x, approximate=n.a("approximate", "none")),
    "Softmax": _softmax(F.softmax),
    "LogSoftmax": _softmax(F.log_softmax),
    # convolution, normalisation, pooling, resizing
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "BatchNormalization": lambda n, x, scale, bias, mean, var, *rest:
        F.batch_norm(x, mean, var, scale, bias, training=False, eps=n.a("epsilon", 1e-5)),
    "InstanceNormalization": lambda n, x, scale, bias: F.instance_norm(x, weight=scale, bias=bias,
                                                                        eps=n.a("epsilon", 1e-5)),
    "LRN": _lrn,
    "ImageScaler": _image_scaler,
    "LayerNormalization": _layer_norm,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": lambda n, x: F.mean(x, tuple(range(2, x.ndim)), True),
    "GlobalMaxPool": lambda n, x: F.amax(x, tuple(range(2, x.ndim)), True),
    "ReduceMean": _reduce(F.mean, np.mean),
    "ReduceSum": _reduce(F.sum, np.sum),
    "ReduceMax": _reduce(F.amax, np.max),
    "ReduceMin": _reduce(F.amin, np.min),
    "ReduceProd": _reduce(None, np.prod),
    "ReduceSumSquare": _reduce(lambda x, a, k: F.sum(x * x, a, k)),
    "ReduceL2": _reduce(lambda x, a, k: F.sqrt(F.sum(x * x, a, k))),
    "ReduceL1": _reduce(lambda x, a, k: F.sum(F.abs(x), a, k)),
    "ReduceLogSumExp": _reduce(lambda x, a, k: F.logsumexp(x, a, k)),
    "Resize": _resize,
    "Upsample": _resize,
    # shapes and data movement
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Concat": _concat,
    "Split": _split,
    "Slice": _slice,
    "Gather": _gather,
    "Shape": _shape,
    "Size": lambda n, x: _wrap(np.array(int(np.prod(x.shape)), np.int64)),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Expand": _expand,
    "Tile": _tile,
    "Range": _range,
    "ConstantOfShape": _constant_of_shape,
    "Identity": lambda n, x: x,
    "Dropout": _dropout,
    "Pad": _pad,
    "Cast": _cast,
    "CastLike": lambda n, x, like: _cast(n, x, like),
    # Constant becomes an initializer when the file is read (load.read_nodes); listed so the check accepts it
    "Constant": None,
}

# input positions that are shape-like arguments (read with NumPy, never parameters)
STATIC_INPUTS = {
    "Reshape": {1}, "Resize": {1, 2, 3}, "Upsample": {1}, "Slice": {1, 2, 3, 4}, "Squeeze": {1},
    "Unsqueeze": {1}, "Split": {1}, "Pad": {1, 2, 3}, "Clip": {1, 2}, "Expand": {1}, "Tile": {1},
    "ConstantOfShape": {0}, "Gather": {1}, "ReduceMean": {1}, "ReduceSum": {1}, "ReduceMax": {1},
    "ReduceMin": {1}, "ReduceProd": {1}, "ReduceSumSquare": {1}, "ReduceL2": {1}, "ReduceL1": {1},
    "ReduceLogSumExp": {1}, "Range": {0, 1, 2}, "Pow": {1}, "Shape": {0}, "Size": {0},
}


def supported_ops():
    """The op types the importer runs (sorted)."""
    return sorted(OPS)


def implementation(op):
    """The function running ``op``: its OPS entry, or the ScaleShift of a folded BatchNorm."""
    return _scale_shift if op == SCALE_SHIFT else OPS[op]
