"""Pooling, resizing and normalisation of NCHW images (PyTorch semantics).

Pooling is a loop over the KH x KW window offsets on strided slices (never over
batch items, pixels or channels); its backward adds strided slices back.
Adaptive average pooling is two small averaging matrices (A_h x A_w^T);
interpolation resamples one axis at a time with gathers (backward: scatter-add).
"""
import math

import numpy

from ..backend import get_array_module
from ..tensor import Function, is_grad_enabled
from .conv import _conv_padding, _pair
from .shape import scatter_add

__all__ = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "global_avg_pool2d", "interpolate",
           "upsample", "resample", "batch_norm", "group_norm", "instance_norm"]


def _pool_size(n, k, s, pb, pe, d, ceil_mode):
    """PyTorch's pooling output length for pads pb before and pe after (a ceil_mode window must start
    inside the input or the padding before it)."""
    span = n + pb + pe - d * (k - 1) - 1
    if span < 0:
        raise ValueError(f"pooling: input size {n} (padding {pb}, {pe}) is smaller than the window {d * (k - 1) + 1}")
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + pb:
        out -= 1
    return out


def _pool_geometry(x, kernel, stride, padding, dilation, ceil_mode, name):
    """(pads (top, bottom, left, right), output size) of a pooling. ``padding``: an int or (ph, pw),
    at most half the kernel (PyTorch's rule), or any form conv2d takes (explicit per side, "same", "valid")."""
    if not isinstance(padding, (str, tuple, list)) or (len(padding) == 2 and not isinstance(padding[0], (tuple, list))):
        p = _pair(padding, "padding")
        if p[0] > kernel[0] // 2 or p[1] > kernel[1] // 2:
            raise ValueError(f"{name}: padding {p} must be at most half the kernel {kernel}")
    pads = _conv_padding(padding, x.shape[2:], kernel, stride, dilation)
    out = tuple(_pool_size(n, k, s, pb, pe, d, ceil_mode) for n, k, s, pb, pe, d
                in zip(x.shape[2:], kernel, stride, pads[0::2], pads[1::2], dilation))
    return pads, out


def _window_slices(p, q, dil, stride, out):
    """The strided slices of the padded input that window offset (p, q) reads for every output pixel."""
    (dh, dw), (sh, sw), (ho, wo) = dil, stride, out
    return (slice(None), slice(None), slice(p * dh, p * dh + sh * (ho - 1) + 1, sh),
            slice(q * dw, q * dw + sw * (wo - 1) + 1, sw))


def _padded(x, pads, out, k, s, d, fill):
    """x padded with ``fill`` by pads = (top, bottom, left, right), the bottom/right grown to hold
    out = (ho, wo) windows; in x's memory order (conv2d's channels-last outputs stay channels-last)."""
    xp = get_array_module(x)
    B, C, H, W = x.shape
    t, b, l, r = pads
    hp = max(H + t + b, (out[0] - 1) * s[0] + d[0] * (k[0] - 1) + 1)
    wp = max(W + l + r, (out[1] - 1) * s[1] + d[1] * (k[1] - 1) + 1)
    if (hp, wp) == (H, W):
        return x
    if x.transpose(0, 2, 3, 1).flags.c_contiguous:
        xpd = xp.empty((B, hp, wp, C), x.dtype).transpose(0, 3, 1, 2)
    else:
        xpd = xp.empty((B, C, hp, wp), x.dtype)
    xpd[:, :, :t] = fill
    xpd[:, :, t + H:] = fill
    xpd[:, :, t:t + H, :l] = fill
    xpd[:, :, t:t + H, l + W:] = fill
    xpd[:, :, t:t + H, l:l + W] = x
    return xpd


def _lowest(dtype):
    """The fill that never wins a maximum: -inf, or the smallest integer."""
    return -numpy.inf if dtype.kind == "f" else numpy.iinfo(dtype).min


class MaxPool2d(Function):
    """y = max over the (dilated) window of x padded with -inf;  dx = g at the first arg-max of each window
    (the arg-max is kept only when a gradient will be asked for: ``argmax``)"""
    def forward(self, x, kernel, stride, pads, out, dilation, argmax):
        xp = get_array_module(x)
        xpd = _padded(x, pads, out, kernel, stride, dilation, _lowest(x.dtype))
        self.shape, self.pshape, self.pads = x.shape, xpd.shape, pads
        self.args = (dilation, stride, out)
        self.kernel = kernel
        y = None
        if argmax:
            self.arg = xp.zeros(x.shape[:2] + out, numpy.uint8 if kernel[0] * kernel[1] < 256 else numpy.int32)
        for k in range(kernel[0] * kernel[1]):
            v = xpd[_window_slices(*divmod(k, kernel[1]), *self.args)]
            if y is None:
                y = v.copy(order="K")
            elif not argmax:
                xp.maximum(y, v, out=y)
            else:
                better = v > y                    # strict: the first maximum wins, as PyTorch
                xp.copyto(y, v, where=better)
                xp.copyto(self.arg, k, where=better)
        return y

    def backward(self, g):
        xp = get_array_module(g)
        gx = xp.zeros(self.pshape, g.dtype)
        for k in range(self.kernel[0] * self.kernel[1]):
            gx[_window_slices(*divmod(k, self.kernel[1]), *self.args)] += g * (self.arg == k)
        B, C, H, W = self.shape
        t, _, l, _ = self.pads
        return gx[:, :, t:t + H, l:l + W]


def _avg_divisor(n, k, s, pb, pe, out, count_include_pad):
    """Per-output window sizes along one axis (PyTorch's rule: clipped to the padded input, then
    to the input itself when padding is not counted)."""
    start = numpy.arange(out) * s - pb
    end = numpy.minimum(start + k, n + pe)
    size = end - start
    if not count_include_pad:
        size = numpy.minimum(end, n) - numpy.maximum(start, 0)
    return size


class AvgPool2d(Function):
    """y = sum over the window of x padded with zeros / divisor;  dx = g / divisor added back over each window"""
    def forward(self, x, kernel, stride, pads, out, count_include_pad, divisor_override):
        xp = get_array_module(x)
        B, C, H, W = x.shape
        (ho, wo), (t, b, l, r) = out, pads
        xpd = _padded(x, pads, out, kernel, stride, (1, 1), 0)
        self.shape, self.pshape, self.pads, self.kernel = x.shape, xpd.shape, pads, kernel
        self.args = ((1, 1), stride, (ho, wo))
        if divisor_override:
            div = numpy.full((ho, wo), float(divisor_override))
        else:
            dh = _avg_divisor(H, kernel[0], stride[0], t, b, ho, count_include_pad)
            dw = _avg_divisor(W, kernel[1], stride[1], l, r, wo, count_include_pad)
            div = numpy.outer(dh, dw).astype(numpy.float64)
        self.inv = xp.asarray(1.0 / div, dtype=x.dtype)
        y = xp.zeros((B, C, ho, wo), x.dtype)
        for k in range(kernel[0] * kernel[1]):
            y += xpd[_window_slices(*divmod(k, kernel[1]), *self.args)]
        y *= self.inv
        return y

    def backward(self, g):
        xp = get_array_module(g)
        gd = g * self.inv
        gx = xp.zeros(self.pshape, g.dtype)
        for k in range(self.kernel[0] * self.kernel[1]):
            gx[_window_slices(*divmod(k, self.kernel[1]), *self.args)] += gd
        B, C, H, W = self.shape
        t, _, l, _ = self.pads
        return gx[:, :, t:t + H, l:l + W]


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """y[b,c,i,j] = max_{p,q} x_pad[b, c, i s + p d, j s + q d] (padding counts as -inf). ``padding``: an int or
    (ph, pw) as PyTorch, or (npad, as conv2d) ((top, bottom), (left, right)), (left, right, top, bottom),
    'same' or 'valid'"""
    k = _pair(kernel_size, "kernel_size")
    s = k if stride is None or stride == [] else _pair(stride, "stride")
    d = _pair(dilation, "dilation")
    pads, out = _pool_geometry(input, k, s, padding, d, ceil_mode, "max_pool2d")
    return MaxPool2d.apply(input, kernel=k, stride=s, pads=pads, out=out, dilation=d,
                           argmax=is_grad_enabled() and input.requires_grad)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """y[b,c,i,j] = sum_{p,q} x_pad[b, c, i s + p, j s + q] / (window size, padding counted or not);
    ``padding`` as max_pool2d"""
    k = _pair(kernel_size, "kernel_size")
    s = k if stride is None or stride == [] else _pair(stride, "stride")
    pads, out = _pool_geometry(input, k, s, padding, (1, 1), ceil_mode, "avg_pool2d")
    return AvgPool2d.apply(input, kernel=k, stride=s, pads=pads, out=out,
                           count_include_pad=bool(count_include_pad), divisor_override=divisor_override)


def _adaptive_matrix(n, out):
    """out x n averaging matrix: row i averages x[floor(i n / out) : ceil((i + 1) n / out)]."""
    a = numpy.zeros((out, n))
    for i in range(out):  # builds a tiny constant matrix, not a loop over data
        s, e = (i * n) // out, -(-((i + 1) * n) // out)
        a[i, s:e] = 1.0 / (e - s)
    return a


class AdaptiveAvgPool2d(Function):
    """y = A_h x A_w^T (A: bin-averaging matrices);  dx = A_h^T g A_w"""
    def forward(self, x, output_size):
        xp = get_array_module(x)
        H, W = x.shape[-2:]
        self.ah = xp.asarray(_adaptive_matrix(H, output_size[0]), dtype=x.dtype)
        self.aw = xp.asarray(_adaptive_matrix(W, output_size[1]), dtype=x.dtype)
        return xp.matmul(self.ah, xp.matmul(x, self.aw.T))

    def backward(self, g):
        xp = get_array_module(g)
        return xp.matmul(self.ah.T, xp.matmul(g, self.aw))


def adaptive_avg_pool2d(input, output_size):
    """Average over PyTorch's adaptive bins [floor(i H / Ho), ceil((i + 1) H / Ho)); None keeps a size"""
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    H, W = input.shape[-2:]
    oh, ow = (H if output_size[0] is None else int(output_size[0])), (W if output_size[1] is None else int(output_size[1]))
    if (oh, ow) == (1, 1):
        return global_avg_pool2d(input)
    if H % oh == 0 and W % ow == 0 and (oh, ow) != (H, W):
        return avg_pool2d(input, (H // oh, W // ow))
    return AdaptiveAvgPool2d.apply(input, output_size=(oh, ow))


def global_avg_pool2d(input, keepdim=True):
    """mean over H and W: B x C x 1 x 1 (B x C with keepdim=False)"""
    from .math import mean
    return mean(input, dim=(-2, -1), keepdim=keepdim)


# ---- interpolation --------------------------------------------------------------
def _source_index(n_in, n_out, mode, align_corners, scale):
    """For each output position along one axis: (i0, i1, lam) with y = (1 - lam) x[i0] + lam x[i1]
    (lam None for nearest modes). ``scale`` is in/out, or 1/scale_factor when that was given."""
    dst = numpy.arange(n_out, dtype=numpy.float64)
    if mode in ("nearest", "nearest-exact"):
        src = numpy.floor((dst + (0.5 if mode == "nearest-exact" else 0.0)) * scale)
        return numpy.minimum(src.astype(numpy.int64), n_in - 1), None, None
    if align_corners:
        src = dst * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    else:
        src = numpy.maximum((dst + 0.5) * scale - 0.5, 0.0)
    i0 = numpy.minimum(numpy.floor(src).astype(numpy.int64), n_in - 1)
    i1 = numpy.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0


class Resample(Function):
    """y = x[i_0] + sum_{k>0} w_k (x[i_k] - x[i_0]) along ``axis``, which is sum_k w_k x[i_k] as the
    weights sum to 1 (2 taps: the lerp a + lam (b - a)); nearest: y = x[i_0];
    dx = g w_k scatter-added to i_k, and g (1 - sum_{k>0} w_k) to i_0"""
    def forward(self, x, axis, index, weight):
        xp = get_array_module(x)
        self.axis, self.n = axis, x.shape[axis]
        shape = [1] * x.ndim
        shape[axis] = -1
        self.index = [xp.asarray(i) for i in numpy.asarray(index).reshape(len(index), -1).T]   # K x out
        a = x.take(self.index[0], axis=axis)
        self.w = [] if weight is None else [xp.asarray(w.reshape(shape), dtype=x.dtype) for w in weight.T[1:]]
        y = a
        for i, w in zip(self.index[1:], self.w):
            y = y + w * (x.take(i, axis=axis) - a)
        return y

    def backward(self, g):
        xp = get_array_module(g)
        gt = xp.moveaxis(g, self.axis, 0)
        out = xp.zeros((self.n,) + gt.shape[1:], g.dtype)
        gk = [gt * xp.moveaxis(w, self.axis, 0) for w in self.w]
        g0 = gt
        for gb in gk:
            g0 = g0 - gb
        for i, gi in zip(self.index, [g0] + gk):
            scatter_add(xp, out, i, gi)
        return xp.moveaxis(out, 0, self.axis)


def resample(input, dim, index, weight=None):
    """y[.., i, ..] = sum_k weight[i, k] input[.., index[i, k], ..] along ``dim``: one axis of a resize.
    index, weight: out x K NumPy arrays, each row of weight summing to 1 (K = 2: linear, 4: cubic);
    weight None: y[.., i, ..] = input[.., index[i], ..] (nearest)"""
    return Resample.apply(input, axis=dim % input.ndim, index=index, weight=weight)


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """Resize the last two axes (torch.nn.functional.interpolate): mode "nearest", "nearest-exact" or
    "bilinear" (align_corners True: corners map to corners; False: half-pixel centres, clamped at 0)"""
    if mode not in ("nearest", "nearest-exact", "bilinear"):
        raise ValueError(f"interpolate: mode {mode!r} is not supported; use 'nearest', 'nearest-exact' or 'bilinear'")
    if mode != "bilinear" and align_corners:
        raise ValueError("interpolate: align_corners only applies to mode='bilinear'")
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size and scale_factor")
    n_in = tuple(input.shape[-2:])
    if size is not None:
        n_out = _pair(size, "size")
        scales = [i / o for i, o in zip(n_in, n_out)]
    else:
        sf = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor, scale_factor)
        n_out = tuple(int(math.floor(i * float(f))) for i, f in zip(n_in, sf))
        scales = [1.0 / float(f) for f in sf]
    if min(n_out) <= 0:
        raise ValueError(f"interpolate: output size {n_out} must be positive")
    out = input
    for ax, ni, no, sc in ((input.ndim - 2, n_in[0], n_out[0], scales[0]), (input.ndim - 1, n_in[1], n_out[1], scales[1])):
        if ni == no and (mode != "bilinear" or align_corners or sc == 1.0):
            continue
        i0, i1, lam = _source_index(ni, no, mode, bool(align_corners), sc)
        if lam is None:
            out = resample(out, ax, i0)
        else:
            out = resample(out, ax, numpy.stack([i0, i1], 1), numpy.stack([1 - lam, lam], 1))
    return out


upsample = interpolate


# ---- normalisation ---------------------------------------------------------------
class Normalize(Function):
    """y = (x - mean) invstd * w + b with stats over ``axes`` of the (reshaped) input;
    batch stats: dx = invstd (gh - mean(gh) - xhat mean(gh xhat)), gh = g w; fixed stats: dx = g w invstd"""
    def forward(self, x, *wb, mean, invstd, axes, group_shape, batch_stats, has_w, has_b):
        self.shape, self.axes, self.group_shape, self.batch_stats = x.shape, axes, group_shape, batch_stats
        self.has_w, self.has_b = has_w, has_b
        xr = x.reshape(group_shape) if group_shape else x
        self.invstd = invstd
        xhat = (xr - mean) * invstd
        if group_shape:
            xhat = xhat.reshape(x.shape)
        self.xhat = xhat
        w = wb[0].reshape(1, -1, *([1] * (x.ndim - 2))) if has_w else None
        self.w = w
        y = xhat * w if has_w else xhat.copy()
        if has_b:
            y += wb[has_w].reshape(1, -1, *([1] * (x.ndim - 2)))
        return y

    def backward(self, g):
        need = self.needs_input_grad
        red = (0,) + tuple(range(2, g.ndim))
        out = [None]
        gh = g * self.w if self.has_w else g
        if need[0]:
            if self.batch_stats:
                gr, xr = gh, self.xhat
                if self.group_shape:
                    gr, xr = gh.reshape(self.group_shape), xr.reshape(self.group_shape)
                gx = (gr - gr.mean(axis=self.axes, keepdims=True)
                      - xr * (gr * xr).mean(axis=self.axes, keepdims=True)) * self.invstd
                out[0] = gx.reshape(self.shape)
            else:
                out[0] = gh * self.invstd
        if self.has_w:
            out.append((g * self.xhat).sum(axis=red) if need[1] else None)
        if self.has_b:
            out.append(g.sum(axis=red) if need[1 + self.has_w] else None)
        return tuple(out)


def _stats(x, axes):
    xp = get_array_module(x)
    mean = x.mean(axis=axes, keepdims=True)
    var = xp.square(x - mean).mean(axis=axes, keepdims=True)
    return mean, var


def _affine_args(x, weight, bias):
    return (x,) + tuple(t for t in (weight, bias) if t is not None), dict(has_w=weight is not None, has_b=bias is not None)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """(x - mean) / sqrt(var + eps) * weight + bias per channel. training: batch statistics over (B, H, W),
    and running_mean/var (when given) <- (1 - momentum) running + momentum batch (unbiased var for
    running_var); eval: the running statistics"""
    x = input.data
    xp = get_array_module(x)
    axes = (0,) + tuple(range(2, x.ndim))
    if training:
        n = x.size // x.shape[1]
        if n <= 1:
            raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got input "
                             f"{tuple(input.shape)}")
        mean, var = _stats(x, axes)
        if running_mean is not None:
            rm = running_mean.data
            rm *= (1 - momentum)
            rm += (momentum * mean.reshape(-1)).astype(rm.dtype)
        if running_var is not None:
            rv = running_var.data
            rv *= (1 - momentum)
            rv += (momentum * n / (n - 1) * var.reshape(-1)).astype(rv.dtype)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: eval mode needs running_mean and running_var")
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mean = running_mean.data.reshape(shape).astype(x.dtype)
        var = running_var.data.reshape(shape).astype(x.dtype)
    invstd = (1 / xp.sqrt(var + eps)).astype(x.dtype)
    args, kw = _affine_args(input, weight, bias)
    return Normalize.apply(*args, mean=mean.astype(x.dtype), invstd=invstd, axes=axes, group_shape=None,
                           batch_stats=bool(training), **kw)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """(x - mean) / sqrt(var + eps) * weight + bias with statistics over each group of C / num_groups
    channels and all pixels of a sample"""
    B, C = input.shape[:2]
    if C % num_groups:
        raise ValueError(f"group_norm: {C} channels are not divisible into {num_groups} groups")
    x = input.data
    xp = get_array_module(x)
    gshape = (B, num_groups, -1)
    mean, var = _stats(x.reshape(gshape), (2,))
    invstd = (1 / xp.sqrt(var + eps)).astype(x.dtype)
    args, kw = _affine_args(input, weight, bias)
    return Normalize.apply(*args, mean=mean, invstd=invstd, axes=(2,), group_shape=gshape, batch_stats=True, **kw)


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5):
    """(x - mean) / sqrt(var + eps) * weight + bias with statistics over the pixels of each sample and
    channel; the running statistics (when given) follow batch_norm's update with the per-sample stats averaged"""
    x = input.data
    if not use_input_stats:
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    if running_mean is not None or running_var is not None:
        axes = tuple(range(2, x.ndim))
        mean, var = _stats(x, axes)
        n = math.prod(x.shape[2:])
        if running_mean is not None:
            rm = running_mean.data
            rm *= (1 - momentum)
            rm += (momentum * mean.mean(axis=0).reshape(-1)).astype(rm.dtype)
        if running_var is not None:
            rv = running_var.data
            rv *= (1 - momentum)
            rv += (momentum * n / max(n - 1, 1) * var.mean(axis=0).reshape(-1)).astype(rv.dtype)
    return group_norm(input, input.shape[1], weight, bias, eps)
