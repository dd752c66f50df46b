"""ONNX importer: run an ``.onnx`` graph as an npad Module.

>>> from npad.onnx import OnnxModule
>>> net = OnnxModule("resnet18.onnx", frozen=True)            # doctest: +SKIP
>>> with npad.no_grad():                                        # doctest: +SKIP
...     f1, f2 = net(x, taps=["layer1", "layer2"])

How it works
------------
* The file is read with ``onnx.load`` (external data next to it included),
  local functions are inlined, and every node is checked against the op table
  :data:`OPS` (op type -> a short function on npad Tensors, tinygrad style).
* Float initializers that feed computation become ``nn.Parameter`` s with
  sanitized names (``"layer1.0.conv1.weight"`` -> ``"layer1_0_conv1_weight"``),
  BatchNorm running statistics become buffers, and initializers that only
  feed shape-like inputs (Reshape's shape, Resize's scales, Slice's starts,
  Clip's bounds, ...) stay NumPy constants.
* Shape arithmetic is folded: a node whose inputs are all constants (or a
  ``Shape`` of any value) is evaluated once per input shape with NumPy and its
  result cached; later calls with that shape skip it, and values that were only
  needed for their shape are not computed at all.
* Only the nodes needed for the requested outputs run (``taps``/``outputs``
  prune everything past the deepest tap), and intermediate values are dropped
  right after their last use.
* A forward that records nothing (``no_grad`` or a frozen model fed plain
  arrays) on NumPy splits the batch over npad's threads: each thread runs the
  whole graph on its slice with one BLAS thread (``OnnxModule._run_split``).
* ``frozen=True`` folds each BatchNormalization into the convolution in front
  of it at load time, ``w' = w g / sqrt(v + eps)``, ``b' = (b - m) g / sqrt(v + eps) + beta``,
  and makes the parameters ``requires_grad=False``; ``frozen=False`` keeps BN as
  ``F.batch_norm`` in eval mode so gradients reach every parameter.
"""
from __future__ import annotations

import math
import re
import threading
import time
from pathlib import Path

import numpy as np

from . import functional as F
from .backend import batch_slices, blas_threads, get_array_module, parallel_over, to_cpu
from .nn.module import Module, Parameter
from .tensor import Tensor, is_grad_enabled, no_grad

__all__ = ["OnnxModule", "load_onnx", "OPS", "supported_ops", "UnsupportedOpError",
           "OnnxLoadError", "OnnxRuntimeError", "list_values"]


class OnnxLoadError(ValueError):
    """The file is missing pieces, is truncated, or is not an ONNX model."""


class UnsupportedOpError(NotImplementedError):
    """The graph holds an op the importer has no implementation for."""


class OnnxRuntimeError(RuntimeError):
    """A node failed while running; the message names the node and its op."""


def list_values(onnx_path, input_shape=(1, 3, 224, 224), input_name=None):
    """Every value of an ONNX file with its inferred shape (see :func:`npad.backbones.list_values`)."""
    from .backbones import list_values as _lv
    return _lv(onnx_path, input_shape, input_name)


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------
def _wrap(a):
    return Tensor._make(a, False, None, 0)


def _arr(t):
    """A NumPy array of a value (Tensor or array)."""
    return to_cpu(t.data) if isinstance(t, Tensor) else np.asarray(t)


def _ints(t):
    return [int(v) for v in _arr(t).reshape(-1)]


def _isint(t):
    return t.dtype.kind in "iub"


def _grad(*ts):
    """True when an op on ``ts`` would be recorded (so raw array code must not be used)."""
    return is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


def _xp(t):
    return get_array_module(t.data)


def _present(inputs, i):
    return len(inputs) > i and inputs[i] is not None


# ---------------------------------------------------------------------------
# op implementations: fn(node, *inputs) -> Tensor or tuple of Tensors.
# ``node.a(name, default)`` reads an attribute, ``node.opset`` is the model's opset.
# Missing optional inputs are None.  Static (shape-like) inputs are read with _ints/_arr.
# ---------------------------------------------------------------------------
def _binary(fop, raw, ufunc=None):
    def op(n, a, b):
        if _isint(a) or _isint(b) or a.dtype.kind == "b":
            return _wrap(raw(_xp(a), a.data, b.data))
        if ufunc is not None and n.inplace and not _grad(a, b):
            for i, t in ((0, a), (1, b)):   # write into an input that dies here, when shapes allow
                if i in n.inplace and t.shape == np.broadcast_shapes(a.shape, b.shape) and \
                        t.dtype == np.result_type(a.dtype, b.dtype):
                    return _wrap(getattr(_xp(a), ufunc)(a.data, b.data, out=t.data))
        return fop(a, b)
    return op


def _int_div(xp, a, b):
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        return (xp.trunc(a / b)).astype(xp.result_type(a, b))
    return a / b


def _variadic(f):
    def op(n, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = f(out, x)
        return out
    return op


def _out(n, i, x):
    """The array to write a no-grad result of input ``i`` into: the input itself when it dies here."""
    return x.data if i in n.inplace else None


def _clip(n, x, lo=None, hi=None):
    if n.opset < 11:
        lo, hi = n.a("min", None), n.a("max", None)
    else:
        lo = None if lo is None else _arr(lo).item()
        hi = None if hi is None else _arr(hi).item()
    if _isint(x):
        return _wrap(_xp(x).clip(x.data, lo, hi))
    if not _grad(x):
        return _wrap(_bounded(n, x, lo, hi))
    return F.clamp(x, lo, hi)


def _bounded(n, x, lo, hi):
    """min(max(x, lo), hi) without a graph (either bound may be None), one clip pass, in place when
    x dies here, split over the batch in threads."""
    xp, y = _xp(x), x.data
    if lo is None and hi is None:
        return y
    if y.ndim == 0:
        return xp.clip(y, lo, hi)
    out = _out(n, 0, x)
    out = xp.empty_like(y) if out is None else out
    parallel_over(y.shape[0], lambda s: xp.clip(y[s], lo, hi, out=out[s]), xp)
    return out


def _relu(n, x):
    if not _grad(x):
        return _wrap(_bounded(n, x, 0, None))
    return F.relu(x)


def _sigmoid(n, x):
    if not _grad(x):
        xp = _xp(x)
        y = xp.multiply(x.data, 0.5, out=_out(n, 0, x))
        xp.tanh(y, out=y)
        y += 1
        y *= 0.5
        return _wrap(y)
    return F.sigmoid(x)


def _pads_for(n, spatial, kernel, strides, dilations):
    """ONNX pads [b1, b2, ..., e1, e2, ...] with auto_pad resolved."""
    nd = len(spatial)
    auto = n.a("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            total = max((-(-size // s) - 1) * s + d * (k - 1) + 1 - size, 0)
            small, big = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else big)
            end.append(big if auto == "SAME_UPPER" else small)
        return begin + end
    if auto == "VALID":
        return [0] * (2 * nd)
    return list(n.a("pads", [0] * (2 * nd)))


def _conv(n, x, w, b=None):
    nd = x.ndim - 2
    if nd not in (1, 2):
        raise NotImplementedError(f"Conv: only 1-D and 2-D convolutions are supported, got input {tuple(x.shape)}")
    kernel = list(w.shape[2:])
    strides = list(n.a("strides", [1] * nd))
    dil = list(n.a("dilations", [1] * nd))
    group = n.a("group", 1)
    pads = _pads_for(n, x.shape[2:], kernel, strides, dil)
    if nd == 1:
        x, w = F.unsqueeze(x, 2), F.unsqueeze(w, 2)
        strides, dil, pads = [1] + strides, [1] + dil, [0, pads[0], 0, pads[1]]
    t, l, bo, r = pads
    y = F.conv2d(x, w, b, stride=tuple(strides), padding=(l, r, t, bo), dilation=tuple(dil), groups=group)
    return F.squeeze(y, 2) if nd == 1 else y


def _conv_transpose(n, x, w, b=None):
    nd = x.ndim - 2
    if nd != 2:
        raise NotImplementedError(f"ConvTranspose: only 2-D is supported, got input {tuple(x.shape)}")
    kernel = list(w.shape[2:])
    strides = list(n.a("strides", [1] * nd))
    dil = list(n.a("dilations", [1] * nd))
    group = n.a("group", 1)
    outpad = list(n.a("output_padding", [0] * nd))
    out_shape = n.a("output_shape", None)
    auto = n.a("auto_pad", "NOTSET")
    full = [s * (i - 1) + op + (k - 1) * d + 1 for i, k, s, d, op in zip(x.shape[2:], kernel, strides, dil, outpad)]
    if out_shape is None and auto in ("SAME_UPPER", "SAME_LOWER"):
        out_shape = [i * s for i, s in zip(x.shape[2:], strides)]
    if out_shape is not None:
        out_shape = list(out_shape)[-nd:]
        total = [f - o for f, o in zip(full, out_shape)]
        if auto == "SAME_UPPER":
            begin, end = [t // 2 for t in total], [t - t // 2 for t in total]
        else:
            begin, end = [t - t // 2 for t in total], [t // 2 for t in total]
    else:
        p = list(n.a("pads", [0] * (2 * nd)))
        begin, end = p[:nd], p[nd:]
    if begin == end and all(op < max(s, d) for op, s, d in zip(outpad, strides, dil)):
        return F.conv_transpose2d(x, w, b, stride=tuple(strides), padding=tuple(begin),
                                  output_padding=tuple(outpad), groups=group, dilation=tuple(dil))
    # asymmetric pads: no padding, then crop (and zero-pad where ONNX asks for a larger output)
    y = F.conv_transpose2d(x, w, None, stride=tuple(strides), padding=0, output_padding=0,
                           groups=group, dilation=tuple(dil))
    grow = [max(f - yi, 0) for f, yi in zip(full, y.shape[2:])]
    if any(grow):
        y = F.pad(y, (0, grow[1], 0, grow[0]))
    y = y[(slice(None), slice(None)) + tuple(slice(bg, f - e) for bg, f, e in zip(begin, full, end))]
    if b is not None:
        y = y + F.reshape(b, (1, -1, 1, 1))
    return y


def _batch_norm(n, x, scale, bias, mean, var, *rest):
    eps = n.a("epsilon", 1e-5)
    if hasattr(F, "batch_norm"):
        return F.batch_norm(x, mean, var, scale, bias, training=False, eps=eps)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv = F.div(scale, F.sqrt(var + eps))
    return (x - F.reshape(mean, shape)) * F.reshape(inv, shape) + F.reshape(bias, shape)


def _affine(n, x, scale, shift):
    """Folded frozen BatchNormalization without a convolution in front: x * scale + shift."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return x * F.reshape(scale, shape) + F.reshape(shift, shape)


def _pool_geometry(n, spatial):
    nd = len(spatial)
    kernel = list(n.a("kernel_shape"))
    strides = list(n.a("strides", [1] * nd))
    dil = list(n.a("dilations", [1] * nd))
    pads = _pads_for(n, spatial, kernel, strides, dil)
    ceil = n.a("ceil_mode", 0)
    out, extra = [], []
    for i, (size, k, s, d) in enumerate(zip(spatial, kernel, strides, dil)):
        pb, pe = pads[i], pads[i + nd]
        eff = d * (k - 1) + 1
        span = size + pb + pe - eff
        o = (-(-span // s) if ceil else span // s) + 1
        if ceil and (o - 1) * s >= size + pb:   # the last window must start inside the input
            o -= 1
        out.append(o)
        extra.append(max((o - 1) * s + eff - (size + pb + pe), 0))
    return kernel, strides, dil, pads, out, extra


def _pool(kind):
    def op(n, x):
        if len([o for o in n.outputs if o]) > 1:
            raise NotImplementedError(f"{n.op}: the Indices output is not supported")
        one_d = x.ndim == 3
        if one_d:
            x = F.unsqueeze(x, 2)
            n = n.with_attrs(kernel_shape=[1] + list(n.a("kernel_shape")),
                             strides=[1] + list(n.a("strides", [1])),
                             dilations=[1] + list(n.a("dilations", [1])),
                             pads=[0, *n.a("pads", [0, 0])[:1], 0, *n.a("pads", [0, 0])[1:]])
        if x.ndim != 4:
            raise NotImplementedError(f"{n.op}: only 1-D and 2-D pooling are supported, got input {tuple(x.shape)}")
        H, W = x.shape[2:]
        kernel, strides, dil, pads, out, extra = _pool_geometry(n, (H, W))
        t, l, b, r = pads[0], pads[1], pads[2] + extra[0], pads[3] + extra[1]
        if kind == "max" and not _grad(x):
            y = _max_pool_raw(x.data, kernel, strides, dil, (t, l, b, r), out)
        elif kind == "max":
            if t or l or b or r:
                x = F.pad(x, (l, r, t, b), value=-np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min)
            y = F.max_pool2d(x, tuple(kernel), tuple(strides), 0, tuple(dil))
        else:
            if any(d != 1 for d in dil):
                raise NotImplementedError("AveragePool: dilations > 1 are not supported")
            if t or l or b or r:
                x = F.pad(x, (l, r, t, b))
            y = F.avg_pool2d(x, tuple(kernel), tuple(strides), 0)
            counted = []   # per axis: 1 where a position counts towards the divisor
            for size, pb, pe, ex in ((H, pads[0], pads[2], extra[0]), (W, pads[1], pads[3], extra[1])):
                if n.a("count_include_pad", 0):
                    counted.append(np.r_[np.ones(pb + size + pe), np.zeros(ex)])
                else:
                    counted.append(np.r_[np.zeros(pb), np.ones(size), np.zeros(pe + ex)])
            if not all(c.all() for c in counted):
                cnt = [np.array([c[o * s:o * s + k].sum() for o in range(no)])
                       for c, s, k, no in zip(counted, strides, kernel, out)]
                factor = (kernel[0] * kernel[1]) / np.maximum(np.outer(cnt[0], cnt[1]), 1)
                y = y * _wrap(_xp(y).asarray(factor.astype(y.dtype)))
        return F.squeeze(y, 2) if one_d else y
    return op


def _max_pool_raw(x, kernel, strides, dil, pads, out):
    """Max pooling without bookkeeping (no arg-max): one running maximum over the window offsets."""
    xp = get_array_module(x)
    t, l, b, r = pads
    B, C, H, W = x.shape
    if t or l or b or r:
        fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        if x.transpose(0, 2, 3, 1).flags.c_contiguous:   # channels-last memory (conv outputs): keep it
            xpd = xp.empty((B, H + t + b, W + l + r, C), x.dtype).transpose(0, 3, 1, 2)
        else:
            xpd = xp.empty((B, C, H + t + b, W + l + r), x.dtype)
        xpd[:, :, :t] = fill
        xpd[:, :, H + t:] = fill
        xpd[:, :, :, :l] = fill
        xpd[:, :, :, W + l:] = fill
        xpd[:, :, t:t + H, l:l + W] = x
        x = xpd
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, strides, dil, out
    y = None
    for p in range(kh):
        for q in range(kw):
            v = x[:, :, p * dh:p * dh + sh * (ho - 1) + 1:sh, q * dw:q * dw + sw * (wo - 1) + 1:sw]
            if y is None:
                y = v.copy(order="K")
            else:
                xp.maximum(y, v, out=y)
    return _wrap(y)


def _global_pool(f):
    return lambda n, x: f(x, tuple(range(2, x.ndim)), True)


def _axes_of(n, inputs, attr_opset):
    """Reduction/squeeze axes: an input from opset ``attr_opset`` on, an attribute before."""
    if len(inputs) > 1 and inputs[1] is not None:
        return _ints(inputs[1])
    return n.a("axes", None)


def _reduce(f, raw=None):
    def op(n, x, *rest):
        axes = _axes_of(n, (x,) + rest, 18)
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


def _flatten(n, x):
    axis = n.a("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    lead = int(np.prod(x.shape[:axis], dtype=np.int64))
    return F.reshape(x, (lead, -1)) if x.numel() else _wrap(x.data.reshape(lead, -1))


def _reshape(n, x, shape=None):
    shape = _ints(shape) if shape is not None else list(n.a("shape"))
    if not n.a("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return F.reshape(x, tuple(shape))


def _transpose(n, x):
    perm = n.a("perm", None)
    return F.permute(x, tuple(perm) if perm is not None else tuple(reversed(range(x.ndim))))


def _concat(n, *xs):
    xs = [x for x in xs if x is not None]
    axis = n.a("axis") % xs[0].ndim
    if any(_isint(x) for x in xs):
        return _wrap(_xp(xs[0]).concatenate([x.data for x in xs], axis=axis))
    xs = [x for x in xs if x.shape[axis] or len(xs) == 1]
    return xs[0] if len(xs) == 1 else F.cat(xs, axis)


def _split(n, x, split=None):
    axis = n.a("axis", 0) % x.ndim
    size = x.shape[axis]
    nout = len(n.outputs)
    if split is not None:
        sizes = _ints(split)
    elif n.a("split", None) is not None:
        sizes = list(n.a("split"))
    else:
        num = n.a("num_outputs", nout)
        chunk = -(-size // num)
        sizes = [min(chunk, size - i * chunk) for i in range(num)]
    if _isint(x):
        return tuple(_wrap(a) for a in np.split(x.data, np.cumsum(sizes)[:-1], axis=axis))
    out = F.split(x, sizes, axis)
    return tuple(out)


def _slice(n, x, starts=None, ends=None, axes=None, steps=None):
    if n.opset < 10:
        starts, ends, axes = list(n.a("starts")), list(n.a("ends")), n.a("axes", None)
        steps = None
    else:
        starts, ends = _ints(starts), _ints(ends)
        axes = None if axes is None else _ints(axes)
        steps = None if steps is None else _ints(steps)
    axes = list(range(len(starts))) if axes is None else [a % x.ndim for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    idx = [slice(None)] * x.ndim
    for a, s, e, st in zip(axes, starts, ends, steps):
        d = x.shape[a]
        s = s + d if s < 0 else s
        e = e + d if e < 0 else e
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
    s = x.shape
    start, end = n.a("start", 0), n.a("end", None)
    return _wrap(np.array(s[start:end] if end is not None else s[start:], np.int64))


def _unsqueeze(n, x, axes=None):
    axes = _ints(axes) if axes is not None else list(n.a("axes"))
    r = x.ndim + len(axes)
    axes = sorted(a % r for a in axes)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return _wrap(x.data.reshape(shape)) if _isint(x) else F.reshape(x, tuple(shape))


def _squeeze(n, x, axes=None):
    axes = _ints(axes) if axes is not None else n.a("axes", None)
    if axes is None:
        shape = [s for s in x.shape if s != 1]
    else:
        axes = {a % x.ndim for a in axes}
        shape = [s for i, s in enumerate(x.shape) if i not in axes]
    return _wrap(x.data.reshape(shape)) if _isint(x) else F.reshape(x, tuple(shape))


def _constant_of_shape(n, shape):
    v = n.a("value", None)
    v = np.zeros(1, np.float32) if v is None else np.asarray(v).reshape(-1)
    return _wrap(np.full(tuple(_ints(shape)), v[0], v.dtype))


def _dropout(n, x, *rest):
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
    k = len(axes)
    widths = [[0, 0] for _ in range(nd)]
    for j, a in enumerate(axes):
        widths[a] = [pads[j], pads[j + k]]
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}[n.a("mode", "constant")]
    crop = tuple(slice(-b if b < 0 else None, e if e < 0 else None) for b, e in widths)
    widths = [[max(b, 0), max(e, 0)] for b, e in widths]
    if _isint(x):
        npmode = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]
        kw = {"constant_values": value} if mode == "constant" else {}
        return _wrap(np.pad(_arr(x), widths, mode=npmode, **kw)[crop])
    if any(s != slice(None) for s in crop):
        x = x[crop]
    if any(b or e for b, e in widths):
        flat = []
        for b, e in reversed(widths):
            flat += [b, e]
        while len(flat) > 2 and flat[-1] == 0 and flat[-2] == 0:
            flat = flat[:-2]
        x = F.pad(x, tuple(flat), mode=mode, value=value)
    return x


def _softmax(f):
    def op(n, x):
        if n.opset < 13:
            axis = n.a("axis", 1) % x.ndim
            shape = x.shape
            y = f(F.reshape(x, (int(np.prod(shape[:axis])), -1)), 1)
            return F.reshape(y, shape)
        return f(x, n.a("axis", -1))
    return op


def _cast(n, x, like=None):
    import onnx
    to = like.dtype if like is not None else np.dtype(onnx.helper.tensor_dtype_to_np_dtype(n.a("to")))
    if x.dtype == to:
        return x
    if x.dtype.kind == "f" and to.kind == "f":
        if n.module_dtype is not None and n.module_dtype != np.float32 and to == np.float32:
            to = n.module_dtype   # a model cast with .double() computes in double throughout
        return F.astype(x, to) if x.dtype != to else x
    return _wrap(x.data.astype(to))


def _gemm(n, a, b, c=None):
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
    if _isint(a):
        return _wrap(_xp(a).matmul(a.data, b.data))
    return F.matmul(a, b)


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


def _expand(n, x, shape):
    out = tuple(np.broadcast_shapes(tuple(x.shape), tuple(_ints(shape))))
    return _wrap(_xp(x).broadcast_to(x.data, out)) if _isint(x) else F.expand(x, out)


def _tile(n, x, reps):
    reps = _ints(reps)
    if _isint(x):
        return _wrap(_xp(x).tile(x.data, reps))
    inter = []
    for d in x.shape:
        inter += [1, d]
    y = F.reshape(x, tuple(inter))
    big = []
    for r, d in zip(reps, x.shape):
        big += [r, d]
    y = F.expand(y, tuple(big))
    return F.reshape(y, tuple(r * d for r, d in zip(reps, x.shape)))


def _range(n, start, limit, delta):
    s, l, d = _arr(start), _arr(limit), _arr(delta)
    return _wrap(np.arange(s.item(), l.item(), d.item(), dtype=s.dtype))


def _layer_norm(n, x, scale, bias=None):
    axis = n.a("axis", -1) % x.ndim
    if len([o for o in n.outputs if o]) > 1:
        raise NotImplementedError("LayerNormalization: Mean/InvStdDev outputs are not supported")
    shape = tuple(x.shape[axis:])
    if tuple(scale.shape) != shape:
        scale = F.expand(scale, shape)
    if bias is None:
        bias = _wrap(_xp(x).zeros(shape, x.dtype))
    elif tuple(bias.shape) != shape:
        bias = F.expand(bias, shape)
    return F.layer_norm(x, shape, scale, bias, n.a("epsilon", 1e-5))


def _instance_norm(n, x, scale, bias):
    axes = tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mu = F.mean(x, axes, True)
    d = x - mu
    var = F.mean(d * d, axes, True)
    return d / F.sqrt(var + n.a("epsilon", 1e-5)) * F.reshape(scale, shape) + F.reshape(bias, shape)


def _lrn(n, x):
    """y = x / (bias + alpha / size * sum of x^2 over the ``size`` neighbouring channels)^beta"""
    size = n.a("size")
    alpha, beta, bias = n.a("alpha", 1e-4), n.a("beta", 0.75), n.a("bias", 1.0)
    sq = x * x
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    widths = [0, 0] * (x.ndim - 2) + [lo, hi]
    sqp = F.pad(sq, tuple(widths))
    C = x.shape[1]
    acc = sqp[:, 0:C]
    for i in range(1, size):
        acc = acc + sqp[:, i:i + C]
    return x / F.pow(acc * (alpha / size) + bias, beta)


def _image_scaler(n, x):
    bias = np.asarray(n.a("bias", [0.0] * x.shape[1]), x.dtype).reshape(1, -1, *([1] * (x.ndim - 2)))
    return x * n.a("scale", 1.0) + _wrap(_xp(x).asarray(bias))


def _prelu(n, x, slope):
    if slope.ndim == 1 and x.ndim > 2 and slope.shape[0] == x.shape[1]:
        slope = F.reshape(slope, (1, -1) + (1,) * (x.ndim - 2))
    return F.where(x.data > 0, x, x * slope)


def _gelu(n, x):
    return F.gelu(x, approximate=n.a("approximate", "none"))


def _constant_value(attrs):
    """The NumPy value of a Constant node's attributes."""
    for key in ("value", "sparse_value"):
        if key in attrs:
            if key == "sparse_value":
                raise NotImplementedError("Constant: sparse_value is not supported")
            return np.asarray(attrs[key])
    if "value_float" in attrs:
        return np.array(attrs["value_float"], np.float32)
    if "value_floats" in attrs:
        return np.array(attrs["value_floats"], np.float32)
    if "value_int" in attrs:
        return np.array(attrs["value_int"], np.int64)
    if "value_ints" in attrs:
        return np.array(attrs["value_ints"], np.int64)
    if "value_string" in attrs:
        return np.array(attrs["value_string"])
    if "value_strings" in attrs:
        return np.array(attrs["value_strings"])
    raise ValueError("Constant node without a value attribute")


# ---- Resize -----------------------------------------------------------------
def _source_coords(mode, out, size, scale, roi_start=0.0, roi_end=1.0):
    x = np.arange(out, dtype=np.float64)
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        adj = out / (scale * size)
        center = size / 2
        return center * (1 - adj) + (x + 0.5) / scale - 0.5
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
    if nearest_mode == "round_prefer_floor":
        i = np.where(src - np.floor(src) == 0.5, np.floor(src), np.round(src))
    elif nearest_mode == "round_prefer_ceil":
        i = np.where(src - np.floor(src) == 0.5, np.ceil(src), np.round(src))
    elif nearest_mode == "floor":
        i = np.floor(src)
    elif nearest_mode == "ceil":
        i = np.ceil(src)
    else:
        raise NotImplementedError(f"Resize: nearest_mode {nearest_mode!r} is not supported")
    return np.clip(i, 0, size - 1).astype(np.int64)


def _cubic_weights(t, a):
    """Keys cubic convolution weights of the 4 taps at offsets -1, 0, 1, 2 from floor(x), t = frac."""
    def k(d):
        d = np.abs(d)
        return np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                        np.where(d < 2, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a, 0.0))
    return np.stack([k(t + 1), k(t), k(1 - t), k(2 - t)], axis=-1)


def _interp_matrix(src, size, mode, cubic_a, exclude_outside):
    """out x size matrix M with y = M x along one axis."""
    out = len(src)
    m = np.zeros((out, size))
    rows = np.arange(out)
    if mode == "linear":
        s = np.clip(src, 0, size - 1)
        i0 = np.floor(s).astype(np.int64)
        i1 = np.minimum(i0 + 1, size - 1)
        w = s - i0
        np.add.at(m, (rows, i0), 1 - w)
        np.add.at(m, (rows, i1), w)
        return m
    i0 = np.floor(src).astype(np.int64)
    w = _cubic_weights(src - i0, cubic_a)
    for j, off in enumerate((-1, 0, 1, 2)):
        idx = i0 + off
        wj = w[:, j].copy()
        if exclude_outside:
            wj[(idx < 0) | (idx >= size)] = 0
        np.add.at(m, (rows, np.clip(idx, 0, size - 1)), wj)
    if exclude_outside:
        m /= np.maximum(m.sum(axis=1, keepdims=True), 1e-12)
    return m


def _resize(n, x, *rest):
    if n.op == "Upsample" or n.opset < 11:
        roi, sizes = None, None
        scales = rest[0] if rest else None
        scales = _arr(scales).astype(np.float64) if scales is not None else np.asarray(n.a("scales"), np.float64)
        ctm = "asymmetric"
        nearest = "floor" if n.op == "Upsample" or n.opset < 11 else n.a("nearest_mode", "round_prefer_floor")
    else:
        roi = rest[0] if len(rest) > 0 else None
        scales = rest[1] if len(rest) > 1 else None
        sizes = rest[2] if len(rest) > 2 else None
        roi = None if roi is None or roi.numel() == 0 else _arr(roi).astype(np.float64)
        scales = None if scales is None or scales.numel() == 0 else _arr(scales).astype(np.float64)
        sizes = None if sizes is None or sizes.numel() == 0 else _ints(sizes)
        ctm = n.a("coordinate_transformation_mode", "half_pixel")
        nearest = n.a("nearest_mode", "round_prefer_floor")
    mode = n.a("mode", "nearest")
    if mode in ("bilinear", "trilinear"):
        mode = "linear"
    if mode not in ("nearest", "linear", "cubic"):
        raise NotImplementedError(f"Resize: mode {mode!r} is not supported")
    if n.a("antialias", 0):
        raise NotImplementedError("Resize: antialias=1 is not supported")
    r = x.ndim
    axes = [a % r for a in n.a("axes", list(range(r)))]
    in_sizes = [x.shape[a] for a in axes]
    if sizes is not None:
        policy = n.a("keep_aspect_ratio_policy", "stretch")
        sc = [o / i for o, i in zip(sizes, in_sizes)]
        if policy != "stretch":
            s = min(sc) if policy == "not_larger" else max(sc)
            sc = [s] * len(sc)
            sizes = [int(math.floor(s * i + 0.5)) for i in in_sizes]
        outs = list(sizes)
    else:
        sc = list(scales)
        outs = [int(math.floor(i * s)) for i, s in zip(in_sizes, sc)]
    if roi is not None:
        k = len(roi) // 2
        roi_pairs = list(zip(roi[:k], roi[k:]))
    else:
        roi_pairs = [(0.0, 1.0)] * len(axes)
    valid = []
    xp = _xp(x)
    for a, size, out, s, (r0, r1) in zip(axes, in_sizes, outs, sc, roi_pairs):
        if out == size and s == 1.0 and ctm != "tf_crop_and_resize":
            continue
        src = _source_coords(ctm, out, size, s, r0, r1)
        if ctm == "tf_crop_and_resize":
            ok = (src >= 0) & (src <= size - 1)
            if not ok.all():
                valid.append((a, ok))
        if mode == "nearest":
            idx = xp.asarray(_nearest_index(src, size, nearest))
            key = (slice(None),) * a + (idx,)
            x = _wrap(x.data[key]) if _isint(x) else x[key]
            continue
        m = _interp_matrix(src, size, mode, n.a("cubic_coeff_a", -0.75), n.a("exclude_outside", 0))
        mt = _wrap(xp.asarray(m.astype(x.dtype)))
        if a == r - 1:
            x = F.matmul(x, F.transpose(mt, 0, 1))
        elif a == r - 2:
            x = F.matmul(mt, x)
        else:
            perm = [i for i in range(r) if i != a] + [a]
            inv = list(np.argsort(perm))
            x = F.permute(F.matmul(F.permute(x, tuple(perm)), F.transpose(mt, 0, 1)), tuple(inv))
    if valid:
        mask = np.ones([1] * r)
        for a, ok in valid:
            shape = [1] * r
            shape[a] = len(ok)
            mask = mask * ok.reshape(shape)
        ext = n.a("extrapolation_value", 0.0)
        mk = _wrap(xp.asarray(mask.astype(x.dtype)))
        x = x * mk + _wrap(xp.asarray(((1 - mask) * ext).astype(x.dtype)))
    return x


def _raw1(f):
    return lambda n, x: _wrap(f(_xp(x), x.data))


def _raw2(f):
    return lambda n, a, b: _wrap(f(_xp(a), a.data, b.data))


def _float_or_raw(fop, raw):
    return lambda n, x: _wrap(raw(_xp(x), x.data)) if _isint(x) else fop(x)


#: op type -> implementation fn(node, *inputs)
OPS = {
    # elementwise arithmetic
    "Add": _binary(F.add, lambda xp, a, b: a + b, "add"),
    "Sub": _binary(F.sub, lambda xp, a, b: a - b, "subtract"),
    "Mul": _binary(F.mul, lambda xp, a, b: a * b, "multiply"),
    "Div": _binary(F.div, _int_div, "divide"),
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
    "ArgMax": lambda n, x: _wrap(_argext(n, x, "argmax")),
    "ArgMin": lambda n, x: _wrap(_argext(n, x, "argmin")),
    # activations
    "Relu": _relu,
    "Clip": _clip,
    "LeakyRelu": lambda n, x: F.leaky_relu(x, n.a("alpha", 0.01)),
    "PRelu": _prelu,
    "Sigmoid": _sigmoid,
    "Tanh": lambda n, x: F.tanh(x),
    "HardSigmoid": lambda n, x: F.hardsigmoid(x, n.a("alpha", 0.2), n.a("beta", 0.5)),
    "HardSwish": lambda n, x: F.hardswish(x),
    "Elu": lambda n, x: F.elu(x, n.a("alpha", 1.0)),
    "Selu": lambda n, x: F.elu(x, n.a("alpha", 1.67326319217681884765625)) * n.a("gamma", 1.05070102214813232421875),
    "Softplus": lambda n, x: F.softplus(x),
    "Mish": lambda n, x: x * F.tanh(F.softplus(x)),
    "Gelu": _gelu,
    "Softmax": _softmax(F.softmax),
    "LogSoftmax": _softmax(F.log_softmax),
    # convolution, normalisation, pooling, resizing
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "BatchNormalization": _batch_norm,
    "InstanceNormalization": _instance_norm,
    "LRN": _lrn,
    "ImageScaler": _image_scaler,
    "LayerNormalization": _layer_norm,
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "GlobalAveragePool": _global_pool(F.mean),
    "GlobalMaxPool": _global_pool(F.amax),
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
    # Constant is evaluated at load time (see OnnxModule); listed so the check accepts it
    "Constant": None,
}

# input positions that are shape-like arguments (read with NumPy, never parameters)
_STATIC_INPUTS = {
    "Reshape": {1}, "Resize": {1, 2, 3}, "Upsample": {1}, "Slice": {1, 2, 3, 4}, "Squeeze": {1},
    "Unsqueeze": {1}, "Split": {1}, "Pad": {1, 2, 3}, "Clip": {1, 2}, "Expand": {1}, "Tile": {1},
    "ConstantOfShape": {0}, "Gather": {1}, "ReduceMean": {1}, "ReduceSum": {1}, "ReduceMax": {1},
    "ReduceMin": {1}, "ReduceProd": {1}, "ReduceSumSquare": {1}, "ReduceL2": {1}, "ReduceL1": {1},
    "ReduceLogSumExp": {1}, "Range": {0, 1, 2}, "Pow": {1}, "Shape": {0}, "Size": {0},
}
# ops whose output depends only on the shape of their input
_SHAPE_ONLY = {"Shape", "Size"}
# ops whose output is always a new array that nothing else references (safe to overwrite later)
_FRESH = {"Conv", "ConvTranspose", "BatchNormalization", "BatchNormalization*", "Add", "Sub", "Mul", "Div",
          "Relu", "Clip", "Sigmoid", "HardSwish", "HardSigmoid", "LeakyRelu", "Tanh", "Exp", "Gemm",
          "MatMul", "MaxPool", "AveragePool", "GlobalAveragePool", "Erf", "Sqrt", "Pow"}


def _argext(n, x, which):
    axis = n.a("axis", 0) % x.ndim
    a = _xp(x)
    data = x.data
    if n.a("select_last_index", 0):
        data = a.flip(data, axis)
        out = getattr(a, which)(data, axis=axis)
        out = x.shape[axis] - 1 - out
    else:
        out = getattr(a, which)(data, axis=axis)
    out = out.astype(np.int64)
    return a.expand_dims(out, axis) if n.a("keepdims", 1) else out


def supported_ops():
    """The op types the importer runs (sorted)."""
    return sorted(OPS)


# ---------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------
def load_onnx(path):
    """Read and validate an ONNX file (external data included); returns the ModelProto.

    Errors name the file: FileNotFoundError when it is missing, :class:`OnnxLoadError`
    when it cannot be parsed, is not an ONNX model, is truncated, or its external
    data file is missing."""
    import onnx
    if not isinstance(path, (str, Path)):
        if isinstance(path, onnx.ModelProto):
            _validate(path, "<ModelProto>")
            return path
        raise TypeError(f"load_onnx: expected a path or onnx.ModelProto, got {type(path).__name__}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ONNX file not found: {p}")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # noqa: BLE001 (protobuf DecodeError and friends)
        raise OnnxLoadError(f"{p}: not a readable ONNX model (truncated or not ONNX?): "
                            f"{type(e).__name__}: {e}") from e
    if not model.HasField("graph") or not model.ir_version:
        raise OnnxLoadError(f"{p}: not an ONNX model (no graph / IR version); is it the right file?")
    ext = [t for t in _all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]
    if ext:
        from onnx.external_data_helper import load_external_data_for_model
        for t in ext:
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            if loc is None or not (p.parent / loc).is_file():
                raise OnnxLoadError(f"{p}: initializer {t.name!r} is stored in the external data file "
                                    f"{loc!r}, which is missing (expected it at {p.parent / str(loc)})")
        try:
            load_external_data_for_model(model, str(p.parent))
        except Exception as e:  # noqa: BLE001
            raise OnnxLoadError(f"{p}: cannot read its external data: {type(e).__name__}: {e}") from e
    _validate(model, str(p))
    return model


def _all_tensors(model):
    for t in model.graph.initializer:
        yield t
    for node in model.graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t


def _validate(model, where):
    g = model.graph
    if not g.node:
        raise OnnxLoadError(f"{where}: the graph has no nodes (truncated or empty model?)")
    known = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    for node in g.node:
        for i in node.input:
            if i not in known:
                raise OnnxLoadError(f"{where}: node {node.name!r} ({node.op_type}) uses value {i!r} that no "
                                    "earlier node, input or initializer defines (truncated or corrupt file?)")
        known.update(node.output)
    for o in g.output:
        if o.name not in known:
            raise OnnxLoadError(f"{where}: graph output {o.name!r} is never computed (truncated file?)")
    for t in g.initializer:
        raw = len(t.raw_data)
        if raw:
            import onnx
            n = int(np.prod(t.dims, dtype=np.int64))
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
            if raw != n * itemsize:
                raise OnnxLoadError(f"{where}: initializer {t.name!r} holds {raw} bytes, its shape {list(t.dims)} "
                                    f"needs {n * itemsize} (truncated file?)")


def _attrs(node):
    import onnx
    from onnx import numpy_helper
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, onnx.TensorProto):
            v = numpy_helper.to_array(v)
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode() for s in v]
        out[a.name] = v
    return out


class _Node:
    """One graph node: op type, name, input/output value names, attributes, opset."""
    __slots__ = ("op", "name", "inputs", "outputs", "attrs", "opset", "module_dtype", "inplace")

    def __init__(self, op, name, inputs, outputs, attrs, opset):
        self.op, self.name, self.inputs, self.outputs = op, name, list(inputs), list(outputs)
        self.attrs, self.opset, self.module_dtype = attrs, opset, None
        self.inplace = ()   # input positions whose arrays die at this node and may be overwritten

    def a(self, key, default=None):
        return self.attrs.get(key, default)

    def with_attrs(self, **kw):
        n = _Node(self.op, self.name, self.inputs, self.outputs, {**self.attrs, **kw}, self.opset)
        n.module_dtype = self.module_dtype
        return n

    def __repr__(self):
        return f"{self.op}({self.name!r}: {self.inputs} -> {self.outputs})"


def _sanitize(name, taken):
    s = re.sub(r"[^0-9a-zA-Z_]", "_", name).strip("_") or "param"
    if s[0].isdigit():
        s = "p_" + s
    base, i = s, 1
    while s in taken:
        i += 1
        s = f"{base}_{i}"
    taken.add(s)
    return s


# ---------------------------------------------------------------------------
# the module
# ---------------------------------------------------------------------------
class OnnxModule(Module):
    """An ONNX graph as an npad Module.

    ``model``: a path (``.onnx``, external data next to it is loaded) or an
    ``onnx.ModelProto``.  ``frozen=True`` folds BatchNorm into the convolutions
    and freezes the parameters (``requires_grad_(True)`` unfreezes them later);
    ``frozen=False`` keeps BN and makes every parameter trainable.
    ``outputs``: ONNX value names to return instead of the graph outputs (feature
    taps; the graph is cut after the deepest one).

    ``forward(*inputs, taps=None)`` returns the graph outputs (one Tensor when the
    graph has one output, else a list), or a list of the ``taps`` / ``outputs``
    values in the order asked for.
    """

    def __init__(self, model, frozen=True, outputs=None):
        super().__init__()
        import onnx
        from onnx import numpy_helper
        source = model if isinstance(model, (str, Path)) else "<ModelProto>"
        proto = load_onnx(model)
        if proto.functions:
            import onnx.inliner
            proto = onnx.inliner.inline_local_functions(proto)
        object.__setattr__(self, "source", str(source))
        object.__setattr__(self, "frozen", bool(frozen))
        g = proto.graph
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
        inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.input_names = [i.name for i in g.input if i.name not in inits]
        self.output_names = [o.name for o in g.output]
        self.input_dims = {}
        for i in g.input:
            if i.name in inits:
                continue
            tt = i.type.tensor_type
            self.input_dims[i.name] = (tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
                                       if tt.HasField("shape") else None)
        nodes, unknown = [], []
        consts = {}
        for k, nd in enumerate(g.node):
            name = nd.name or f"{nd.op_type}_{k}"
            if nd.domain not in ("", "ai.onnx") or nd.op_type not in OPS:
                unknown.append((nd.op_type if nd.domain in ("", "ai.onnx") else f"{nd.domain}::{nd.op_type}", name))
                continue
            attrs = _attrs(nd)
            if nd.op_type == "Constant":   # treated as an initializer (weights written as Constant nodes train too)
                inits[nd.output[0]] = _constant_value(attrs)
                continue
            nodes.append(_Node(nd.op_type, name, [i or None for i in nd.input], nd.output, attrs, opset))
        if unknown:
            ops = sorted({u[0] for u in unknown})
            raise UnsupportedOpError(
                f"{source}: unsupported ONNX op(s) {ops} (first at node {unknown[0][1]!r}, op {unknown[0][0]}; "
                f"{len(unknown)} node(s) in all). Supported ops: {', '.join(supported_ops())}")
        object.__setattr__(self, "opset", opset)

        if frozen:
            nodes = self._fold_batchnorm(nodes, inits, set(outputs or ()) | set(self.output_names))

        # classify initializers: parameters (float, feeding computation), buffers (BN statistics),
        # constants (shape-like arguments, integers, scalars)
        use_dynamic, use_bn_stat = set(), set()
        for n in nodes:
            static = _STATIC_INPUTS.get(n.op, set())
            for pos, v in enumerate(n.inputs):
                if v is None:
                    continue
                if n.op == "BatchNormalization" and pos in (3, 4):
                    use_bn_stat.add(v)
                elif pos not in static:
                    use_dynamic.add(v)
        taken = set()
        self._value_attr = {}      # ONNX value name -> attribute name of a parameter/buffer
        used = {v for n in nodes for v in n.inputs if v is not None} | set(self.output_names) | set(outputs or ())
        for name, arr in inits.items():
            if name not in used:
                continue   # e.g. the statistics of a folded BatchNorm
            if arr.dtype.kind == "f" and arr.ndim > 0 and (name in use_dynamic or name in use_bn_stat):
                attr = _sanitize(name, taken)
                if name in use_dynamic and name not in use_bn_stat:
                    self.register_parameter(attr, Parameter(arr, requires_grad=not frozen))
                else:
                    self.register_buffer(attr, Tensor(arr))
                self._value_attr[name] = attr
            else:
                consts[name] = arr
        object.__setattr__(self, "_consts", consts)
        object.__setattr__(self, "_nodes", nodes)
        producer = {}
        for i, n in enumerate(nodes):
            for o in n.outputs:
                if o:
                    producer[o] = i
        object.__setattr__(self, "_producer", producer)
        object.__setattr__(self, "_static", {})   # input-shape key -> {value name: folded NumPy array}
        object.__setattr__(self, "_plans", {})
        object.__setattr__(self, "_split", {})    # input-shape key of a batch slice -> can it run in threads
        object.__setattr__(self, "_removed", getattr(self, "_removed", set()))
        self.outputs = list(outputs) if outputs is not None else None
        if self.outputs is not None:
            self._check_targets(self.outputs)
        if frozen:
            self.eval()

    # ---- load-time BatchNorm folding ---------------------------------------------
    def _fold_batchnorm(self, nodes, inits, keep):
        consumers = {}
        for n in nodes:
            for v in n.inputs:
                if v is not None:
                    consumers[v] = consumers.get(v, 0) + 1
        producer = {o: n for n in nodes for o in n.outputs if o}
        removed, out = set(), []
        drop = set()
        for n in nodes:
            if n.op != "BatchNormalization" or len([o for o in n.outputs if o]) != 1:
                continue
            if not all(v in inits for v in n.inputs[1:5]):
                continue
            conv = producer.get(n.inputs[0])
            gamma, beta, mean, var = (inits[v].astype(np.float64) for v in n.inputs[1:5])
            eps = n.a("epsilon", 1e-5)
            scale = gamma / np.sqrt(var + eps)
            if (conv is not None and conv.op == "Conv" and consumers.get(conv.outputs[0]) == 1
                    and conv.outputs[0] not in keep and conv.inputs[1] in inits
                    and consumers.get(conv.inputs[1]) == 1
                    and (len(conv.inputs) < 3 or conv.inputs[2] is None
                         or (conv.inputs[2] in inits and consumers.get(conv.inputs[2]) == 1))):
                w = inits[conv.inputs[1]]
                b = inits[conv.inputs[2]] if len(conv.inputs) > 2 and conv.inputs[2] is not None else None
                wf = (w.astype(np.float64) * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
                bf = (((b.astype(np.float64) if b is not None else 0.0) - mean) * scale + beta).astype(w.dtype)
                bname = conv.inputs[2] if b is not None else n.inputs[2]
                inits[conv.inputs[1]] = wf
                inits[bname] = bf
                removed.add(conv.outputs[0])
                conv.inputs = [conv.inputs[0], conv.inputs[1], bname]
                conv.outputs = list(n.outputs)
                conv.name = f"{conv.name}+{n.name}"
                drop.add(id(n))
            else:   # BN without a foldable conv: y = x * scale + shift with constant scale/shift
                sname, tname = n.inputs[1], n.inputs[2]
                dt = inits[sname].dtype
                inits[sname] = scale.astype(dt)
                inits[tname] = (beta - mean * scale).astype(dt)
                n.op, n.inputs = "BatchNormalization*", [n.inputs[0], sname, tname]
        for n in nodes:
            if id(n) in drop:
                continue
            out.append(n)
        object.__setattr__(self, "_removed", removed)
        return out

    # ---- running ------------------------------------------------------------------
    def _check_targets(self, names):
        known = set(self._producer) | set(self._consts) | set(self._value_attr) | set(self.input_names)
        bad = [t for t in names if t not in known]
        if bad:
            folded = [t for t in bad if t in self._removed]
            if folded:
                raise KeyError(f"{self.source}: values {folded} were folded away (BatchNorm folded into the "
                               "convolution); tap the BatchNorm output, or load with frozen=False")
            sample = [o for n in self._nodes for o in n.outputs if o][-8:]
            raise KeyError(f"{self.source}: no values named {bad} in the graph; e.g. {sample} "
                           "(list them all with npad.onnx.list_values(path, input_shape) or .value_shapes())")

    def _feeds(self, inputs):
        if len(inputs) != len(self.input_names):
            raise TypeError(f"{self.source}: the model takes {len(self.input_names)} input(s) "
                            f"{self.input_names}, got {len(inputs)}")
        feeds = {}
        fdt = self._float_dtype()
        for name, x in zip(self.input_names, inputs):
            if not isinstance(x, Tensor):
                x = Tensor(x)
            dims = self.input_dims.get(name)
            if dims is not None:
                if len(dims) != x.ndim:
                    raise ValueError(f"{self.source}: input {name!r} must have {len(dims)} dimensions "
                                     f"{_fmt_dims(dims)}, got shape {tuple(x.shape)}")
                if x.ndim >= 2 and dims[1] is not None and dims[1] != x.shape[1]:
                    raise ValueError(f"{self.source}: input {name!r} must have {dims[1]} channels (dim 1 of "
                                     f"{_fmt_dims(dims)}), got shape {tuple(x.shape)}")
            if x.dtype.kind == "f" and fdt is not None and x.dtype != fdt:
                x = F.astype(x, fdt)
            feeds[name] = x
        return feeds

    def _float_dtype(self):
        for p in self._parameters.values():
            return p.dtype
        for b in self._buffers.values():
            return b.dtype
        return None

    def forward(self, *inputs, taps=None):
        feeds = self._feeds(inputs)
        if taps is not None:
            taps = [taps] if isinstance(taps, str) else list(taps)
            self._check_targets(taps)
            targets = tuple(taps)
        elif self.outputs is not None:
            targets = tuple(self.outputs)
        else:
            targets = tuple(self.output_names)
        vals = self._run_split(feeds, targets)
        if vals is None:
            vals = self._run(feeds, targets)
        if taps is None and self.outputs is None and len(targets) == 1:
            return vals[0]
        return vals

    def _plan(self, static, targets, feeds):
        need, stack, seen = set(), list(targets), set()
        while stack:
            v = stack.pop()
            if v in seen:
                continue
            seen.add(v)
            if v in static or v in self._consts or v in self._value_attr or v in feeds:
                continue
            i = self._producer[v]
            if i not in need:
                need.add(i)
                stack.extend(x for x in self._nodes[i].inputs if x is not None)
        order = sorted(need)
        last = {}
        for step, i in enumerate(order):
            for v in self._nodes[i].inputs:
                if v is not None:
                    last[v] = step
        keep = set(targets)
        frees = [[] for _ in order]
        for v, step in last.items():
            if v not in keep and v in self._producer and v not in static and v not in feeds:
                frees[step].append(v)
        steps = []
        for s, i in enumerate(order):
            node = self._nodes[i]
            dying = set(frees[s])
            inplace = tuple(pos for pos, v in enumerate(node.inputs)
                            if v in dying and node.inputs.count(v) == 1
                            and self._nodes[self._producer[v]].op in _FRESH)
            steps.append((node, frees[s], inplace))
        return steps

    def _records(self, feeds):
        """True when running on ``feeds`` records a graph (grad mode on, and an input or a parameter
        that needs a gradient)."""
        return is_grad_enabled() and (any(t.requires_grad for t in feeds.values())
                                      or any(p.requires_grad for p in self._parameters.values()))

    def _run_split(self, feeds, targets):
        """An unrecorded NumPy forward with the batch split over npad's threads (``parallel_over``), each
        running the whole graph on its slice with one BLAS thread: every op then works on a slice that
        stays in its core's caches and no core waits for the other between ops (EfficientNet-Lite0,
        batch 8 at 256 px on 2 cores: 330 -> 240 ms). The first call at a slice shape runs the slices one
        after the other, which folds that shape's constants and checks that every output is batch-major.
        None when it does not apply: one thread or image, a batch dimension fixed in the graph, CuPy,
        a graph being recorded, ``profile``."""
        first = next(iter(feeds.values()), None)
        B = first.shape[0] if first is not None and first.ndim else 0
        slices = batch_slices(B)                                        # the slices parallel_over makes
        if (len(slices) < 2 or get_array_module(first.data) is not np
                or threading.current_thread().name.startswith("npad-pool")
                or "_timing" in self.__dict__
                or any(t.ndim == 0 or t.shape[0] != B for t in feeds.values())
                or any((self.input_dims.get(k) or (0,))[0] is not None for k in feeds)
                or self._records(feeds)):
            return None
        keys = {s.stop - s.start: tuple(((s.stop - s.start,) + tuple(t.shape[1:]), t.dtype.str)
                                        for t in feeds.values()) for s in slices}
        if any(self._split.get(key) is False for key in keys.values()):
            return None

        def run(s):
            part = self._run({n: Tensor(t.data[s]) for n, t in feeds.items()}, targets)
            return [v.data for v in part]
        with blas_threads(1) as limited:
            if not limited:
                return None
            settled = all(self._split.get(key) for key in keys.values())
            parts = parallel_over(B, run) if settled else [run(s) for s in slices]
        if not settled:
            ok = all(v.ndim and v.shape[0] == s.stop - s.start for p, s in zip(parts, slices) for v in p)
            self._split.update({key: ok for key in keys.values()})
            if not ok:
                return None
        return [Tensor(np.concatenate(col)) for col in zip(*parts)]

    def _run(self, feeds, targets):
        key = tuple((tuple(t.shape), t.dtype.str) for t in feeds.values())
        static = self._static.setdefault(key, {})
        pkey = (key, targets)
        cached = self._plans.get(pkey)
        if cached is None or cached[0] != len(static):
            cached = (len(static), self._plan(static, targets, feeds))
            self._plans[pkey] = cached
        plan = cached[1]
        env = dict(feeds)
        first = next(iter(feeds.values()), None)
        xp = get_array_module(first.data) if first is not None else np
        consts, attrs = self._consts, self._value_attr
        mdt = self._float_dtype()
        timing = self.__dict__.get("_timing")
        # overwriting dying arrays is safe only when no graph is recorded (a recorded op may keep them)
        inplace_ok = not self._records(feeds)
        for node, frees, inplace in plan:
            inplace = inplace if inplace_ok else ()
            args, all_static = [], True
            for v in node.inputs:
                if v is None:
                    args.append(None)
                elif v in env:
                    args.append(env[v])
                    all_static = False
                elif v in static:
                    args.append(static[v])
                elif v in consts:
                    args.append(consts[v])
                else:
                    args.append(getattr(self, attrs[v]))
                    all_static = False
            all_static = all_static or node.op in _SHAPE_ONLY
            node.module_dtype, node.inplace = mdt, inplace
            fn = _affine if node.op == "BatchNormalization*" else OPS[node.op]
            t0 = time.perf_counter() if timing is not None else 0.0
            try:
                if all_static:
                    with no_grad():
                        out = fn(node, *[a if a is None or isinstance(a, Tensor) else _wrap(a) for a in args])
                else:
                    if xp is not np:
                        args = [a if a is None or isinstance(a, Tensor) else _wrap(xp.asarray(a)) for a in args]
                    else:
                        args = [a if a is None or isinstance(a, Tensor) else _wrap(a) for a in args]
                    out = fn(node, *args)
            except (UnsupportedOpError, NotImplementedError) as e:
                raise UnsupportedOpError(f"{self.source}: node {node.name!r} ({node.op}): {e}") from e
            except Exception as e:  # noqa: BLE001
                shapes = [None if a is None else tuple(a.shape) for a in args]
                raise OnnxRuntimeError(f"{self.source}: node {node.name!r} ({node.op}) with input shapes "
                                       f"{shapes} failed: {type(e).__name__}: {e}") from e
            if timing is not None:
                timing[node.op] = timing.get(node.op, 0.0) + time.perf_counter() - t0
            outs = out if isinstance(out, tuple) else (out,)
            for name, o in zip(node.outputs, outs):
                if not name:
                    continue
                if all_static:
                    static[name] = _arr(o)
                else:
                    env[name] = o
            for v in frees:
                env.pop(v, None)
        res = []
        for t in targets:
            if t in env:
                res.append(env[t])
            elif t in static or t in consts:
                a = static[t] if t in static else consts[t]
                res.append(_wrap(xp.asarray(a)))
            else:
                res.append(getattr(self, attrs[t]))
        return res

    # ---- utilities -----------------------------------------------------------------
    def to(self, device=None, dtype=None):
        super().to(device=device, dtype=dtype)
        if dtype is not None:
            for k, v in list(self._consts.items()):
                if v.dtype.kind == "f":
                    self._consts[k] = v.astype(dtype)
            self._static.clear()
            self._plans.clear()
            self._split.clear()
        return self

    def profile(self, *inputs, repeat=3):
        """Seconds per op type of one forward under no_grad (best of ``repeat`` runs), largest first."""
        best = None
        for _ in range(repeat):
            object.__setattr__(self, "_timing", {})
            try:
                with no_grad():
                    self(*inputs)
                t = self._timing
            finally:
                self.__dict__.pop("_timing", None)
            best = t if best is None else {k: min(v, t.get(k, v)) for k, v in best.items()}
        return dict(sorted(best.items(), key=lambda kv: -kv[1]))

    def value_shapes(self, input_shape=(1, 3, 224, 224)):
        """[(value name, shape)] of every value computed for one zero input of ``input_shape``
        (in node order, after BatchNorm folding when frozen)."""
        shapes = [input_shape] if isinstance(input_shape[0], int) else list(input_shape)
        dt = self._float_dtype() or np.float32
        ref = next(iter(self._parameters.values()), None)
        xp = get_array_module(ref.data) if ref is not None else np
        xs = [_wrap(xp.zeros(s, dt)) for s in shapes]
        names = [o for n in self._nodes for o in n.outputs if o]
        with no_grad():
            feeds = self._feeds(xs)
            vals = self._run(feeds, tuple(names))
        return [(k, tuple(x.shape)) for k, x in zip(self.input_names, xs)] + \
               [(k, tuple(v.shape)) for k, v in zip(names, vals)]

    def extra_repr(self):
        return (f"{self.source!r}, opset={self.opset}, nodes={len(self._nodes)}, frozen={self.frozen}, "
                f"inputs={self.input_names}, outputs={self.outputs or self.output_names}")

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"


def _fmt_dims(dims):
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
