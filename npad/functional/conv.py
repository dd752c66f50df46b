"""2-D convolution and transposed convolution (NCHW, PyTorch semantics).

How it is computed: the input is copied once into a zero-padded channels-last
array ``xh`` (B x Hp x Wp x C); ``im2col`` is a strided *view* of it,
B x Ho x Wo x KH x KW x C (``as_strided``), and reshaping that view to
(B*Ho*Wo) x (KH*KW*C) is the one im2col copy. One GEMM with the weight laid out
as (KH*KW*C) x O gives the output rows (B*Ho*Wo) x O, which is returned as an
NCHW *view* of that channels-last memory (no copy; elementwise ops keep that
layout and the next conv's channels-last copy of it is a plain contiguous copy).

* stride 1 (most 3x3 convolutions): the copy is over the kernel *row* only,
  rows = B x Hp x Wo x KW x C (a third of the full im2col at 3x3), and the output is
  KH GEMMs per image on that buffer shifted by p * dilation image rows, summed while in
  cache: y[b, i, j] = sum_p rows[b, i + p dh, j] @ W[p]. Less memory traffic, one third of
  the buffer kept for backward; dX is the same kernel-row convolution of the padded
  dY with the flipped kernel.
* 1x1 convolutions (stride 1, no padding) are a plain matmul on the input
  with no im2col copy: channels-last inputs are a (B*H*W) x C matrix already (multiplied
  in blocks of rows, faster from cache for these tall-skinny shapes), contiguous NCHW
  inputs go through one broadcast matmul O x C @ B x C x (H*W).
* grouped convolutions: one batched matmul over the groups (g x N x K @ g x K x Og).
* depthwise (groups == C): on NumPy one einsum per thread over a strided view
  B x Ho x KH x KW x (Wo/J) x (J C) whose last axis is contiguous (J output pixels x
  C channels, about 2048 numbers, against weights tiled J times), so that einsum's
  inner loop is long; with a horizontal stride s the padded copy deals the columns into
  s phases, so that each phase is read at stride 1.
  On CuPy, a loop over the kernel offsets with a multiply-add on strided slices.

NumPy's copies and einsums run on one core; the im2col copies, the layout change,
col2im and the depthwise einsums are split over the batch in threads
(``npad.backend.parallel_over``; NumPy releases the GIL inside them).

Backward goes through the same machinery: dW = cols^T @ dY (the forward's
im2col buffer is the only one kept, and only when the weight needs a
gradient), dX = col2im(dY @ W^T) (written into the kept buffer's memory when
there is one), where col2im is a loop over the KH x KW offsets adding strided
slices. ``conv_transpose2d`` is the same pair of maps with the roles swapped.
"""

import math

import numpy

from ..backend import get_array_module, parallel_over
from ..tensor import Function, is_grad_enabled

__all__ = ["conv2d", "conv_transpose2d", "im2col", "col2im", "conv_output_size"]


def _pair(v, name="value"):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def conv_output_size(n, k, stride=1, pad_before=0, pad_after=0, dilation=1):
    """floor((n + pads - dilation (k - 1) - 1) / stride) + 1"""
    return (n + pad_before + pad_after - dilation * (k - 1) - 1) // stride + 1


def _conv_padding(padding, size, kernel, stride, dilation):
    """(top, bottom, left, right) from an int, (ph, pw), ((top, bottom), (left, right)),
    a 4-tuple in F.pad order (left, right, top, bottom), "valid" or "same"."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ValueError(f"padding must be 'same', 'valid', an int or a tuple, got {padding!r}")
        out = []
        for n, k, s, d in zip(size, kernel, stride, dilation):
            # stride 1: total = d (k - 1), the odd one at the end (as PyTorch);
            # stride > 1: ONNX SAME_UPPER (output ceil(n / s))
            total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
            out += [total // 2, total - total // 2]
        return tuple(out)
    if isinstance(padding, (tuple, list)):
        if len(padding) == 4:
            left, right, top, bottom = (int(p) for p in padding)
            return (top, bottom, left, right)
        if len(padding) == 2 and all(isinstance(p, (tuple, list)) for p in padding):
            (t, b), (l, r) = padding
            return (int(t), int(b), int(l), int(r))
    ph, pw = _pair(padding, "padding")
    return (ph, ph, pw, pw)


def _pad_nhwc(x, pads, phases=1, width=None):
    """Zero-padded channels-last copy B x (H+t+b) x (W+l+r) x C of an NCHW array. With ``phases`` = s
    the padded columns are dealt into s phases, B x Hp x s x width x C:
    out[b, h, r, k] = x_pad[b, h, k s + r] (zeros past the padded width), so that a horizontal
    stride s becomes stride 1 within each phase."""
    xp = get_array_module(x)
    t, b, l, r = pads
    B, C, H, W = x.shape
    Hp, Wp = H + t + b, W + l + r
    width = -(-Wp // phases) if width is None else width
    if phases == 1 and width == Wp and not (t or b or l or r) and _is_channels_last(x):
        return x.transpose(0, 2, 3, 1)
    out = xp.empty((B, Hp, phases, width, C), x.dtype)
    spans = []                              # phase f holds input columns f - l + s k for k0 <= k < k1
    for f in range(phases):
        k0 = max(-(-(l - f) // phases), 0)
        k1 = min(max(-(-(l + W - f) // phases), k0), width)
        spans.append((f, k0, k1))
    if t:
        out[:, :t] = 0
    if b:
        out[:, t + H:] = 0

    def copy(sl):  # the layout change is a strided copy: split over the batch
        xs = x[sl].transpose(0, 2, 3, 1)                                # b x H x W x C (a view)
        for f, k0, k1 in spans:
            dst = out[sl, t:t + H, f]
            dst[:, :, :k0] = 0
            dst[:, :, k1:] = 0
            c0 = k0 * phases + f - l
            dst[:, :, k0:k1] = xs[:, :, c0: c0 + phases * (k1 - k0 - 1) + 1: phases]
    parallel_over(B, copy, xp)
    return out.reshape(B, Hp, width, C) if phases == 1 else out


def im2col(xh, kernel, stride, dilation, out_size):
    """Strided view B x Ho x Wo x KH x KW x C... of a channels-last (padded) array
    B x Hp x Wp x C...: view[b, i, j, p, q] = xh[b, i sh + p dh, j sw + q dw] (no copy)."""
    xp = get_array_module(xh)
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_size
    s = xh.strides
    shape = (xh.shape[0], ho, wo, kh, kw) + xh.shape[3:]
    strides = (s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw) + s[3:]
    return xp.lib.stride_tricks.as_strided(xh, shape, strides)


def col2im(cols, padded_shape, stride, dilation):
    """The adjoint of im2col: cols B x Ho x Wo x KH x KW x C... summed back into a zero
    channels-last array ``padded_shape`` (a loop over the KH x KW offsets adding strided slices)."""
    xp = get_array_module(cols)
    B, ho, wo, kh, kw = cols.shape[:5]
    (sh, sw), (dh, dw) = stride, dilation
    out = xp.empty(padded_shape, cols.dtype)

    def add(s):  # one thread per batch slice
        out[s] = 0
        for p in range(kh):
            for q in range(kw):
                out[s, p * dh: p * dh + sh * (ho - 1) + 1: sh, q * dw: q * dw + sw * (wo - 1) + 1: sw] += cols[s, :, :, p, q]
    parallel_over(B, add, xp)
    return out


def _copy(v):
    """A C-contiguous copy of ``v`` (the im2col copy), split over the batch axis in threads."""
    xp = get_array_module(v)
    out = xp.empty(v.shape, v.dtype)

    def copy(s):
        out[s] = v[s]
    parallel_over(v.shape[0], copy, xp)
    return out


def _kernel_rows(xh, kw, wo, dw):
    """The kernel-row im2col copy of a channels-last (padded) array B x Hp x Wp x C, stride 1:
    rows[b, i Wo + j] = xh[b, i, j + q dw, :] for q < kw, as B x (Hp Wo) x (kw C)."""
    xp = get_array_module(xh)
    B, Hp, _, C = xh.shape
    s0, s1, s2, s3 = xh.strides
    v = xp.lib.stride_tricks.as_strided(xh, (B, Hp, wo, kw, C), (s0, s1, s2, s2 * dw, s3))
    return _copy(v).reshape(B, Hp * wo, kw * C)


def _width_block(wo, c):
    """J, the divisor of wo for which J x C (the depthwise einsum's inner loop) is nearest 2048."""
    return min((d for d in range(1, wo + 1) if wo % d == 0), key=lambda d: abs(math.log(d * c / 2048)))


def _tap_grid(kw, sw, dw):
    """Where kernel column q reads in the phase layout of ``_pad_nhwc(..., phases=sw)``: column
    j sw + q dw is phase r, column j + o of it, with (o, r) = divmod(q dw, sw). Returns (R, Q, step,
    taps): the view runs over R phases x Q columns o = 0, step, 2 step...; taps[q] = (r, index)."""
    if dw % sw == 0:                        # one phase: stride 1, or a dilation the stride divides
        return 1, kw, dw // sw, [(0, q) for q in range(kw)]
    taps = [(q * dw % sw, q * dw // sw) for q in range(kw)]
    return sw, max(o for _, o in taps) + 1, 1, taps     # grid cells no tap lands on get zero weights


def _depthwise_input(x, pads, kernel, stride, dilation, out_size):
    """The padded channels-last input of a NumPy depthwise conv, its columns dealt into phases by
    the horizontal stride (B x Hp x R x Wq x C, see ``_tap_grid``)."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_size
    R, Q, step, _ = _tap_grid(kw, sw, dw)
    t, b, l, r = pads
    width = max(-(-(x.shape[3] + l + r) // sw), wo + (Q - 1) * step)
    xh = _pad_nhwc(x, pads, sw, width)
    return xh[:, :, None] if sw == 1 else xh


def _depthwise_view(xh, kernel, stride, dilation, out_size, J):
    """The depthwise taps of ``_depthwise_input``'s B x Hp x R' x Wq x C as a strided view
    B x Ho x KH x R x Q x (Wo/J) x (J C) whose last axis is contiguous:
    v[b, i, p, r, o, k, jj C + c] = xh[b, i sh + p dh, r, k J + jj + o step, c]."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_size
    R, Q, step, _ = _tap_grid(kw, sw, dw)
    B, C = xh.shape[0], xh.shape[4]
    s0, s1, s2, s3, s4 = xh.strides
    return numpy.lib.stride_tricks.as_strided(xh, (B, ho, kh, R, Q, wo // J, J * C),
                                              (s0, s1 * sh, s1 * dh, s2, s3 * step, s3 * J, s4))


def _depthwise(xh, wq, stride, dilation, out_size, bias=None):
    """y[b, i, j, c] = bias[c] + sum_{p,q} x_pad[b, i sh + p dh, j sw + q dw, c] wq[p, q, c] on NumPy, with xh
    from ``_depthwise_input`` and wq KH x KW x C: one einsum per image over ``_depthwise_view`` (images
    split over threads), the weights laid on the tap grid and tiled J times so that einsum's inner
    loop runs over J pixels x C channels; the bias is added to each image while it is in cache."""
    KH, KW, C = wq.shape
    B, (ho, wo) = xh.shape[0], out_size
    R, Q, _, taps = _tap_grid(KW, stride[1], dilation[1])
    J = _width_block(wo, C)
    v = _depthwise_view(xh, (KH, KW), stride, dilation, out_size, J)   # B x Ho x KH x R x Q x Wo/J x JC
    wg = numpy.zeros((KH, R, Q, J, C), wq.dtype)
    for q, (r, o) in enumerate(taps):
        wg[:, r, o] = wq[:, q, None]
    wg = wg.reshape(KH, R, Q, J * C)
    y = numpy.empty((B, ho, wo // J, J * C), numpy.result_type(xh, wq))
    bias = None if bias is None else numpy.tile(bias, J)                # J C

    def run(s):
        for b in range(s.start, s.stop):
            numpy.einsum("iprokx,prox->ikx", v[b], wg, out=y[b])
            if bias is not None:
                y[b] += bias
    parallel_over(B, run)
    return y.reshape(B, ho, wo, C)


def _depthwise_grad_w(xh, g, kernel, stride, dilation):
    """dW[p, q, c] = sum_{b,i,j} x_pad[b, i sh + p dh, j sw + q dw, c] g[b, i, j, c] (KH x KW x C), g B x Ho x Wo x C
    contiguous: per-thread partial sums of one einsum over the forward's view."""
    B, ho, wo, C = g.shape
    _, _, _, taps = _tap_grid(kernel[1], stride[1], dilation[1])
    J = _width_block(wo, C)
    v = _depthwise_view(xh, kernel, stride, dilation, (ho, wo), J)
    gv = g.reshape(B, ho, wo // J, J * C)
    parts = parallel_over(B, lambda s: numpy.einsum("biprokx,bikx->prox", v[s], gv[s]))
    grid = sum(parts).reshape(parts[0].shape[:3] + (J, C)).sum(axis=3)  # KH x R x Q x C
    return numpy.stack([grid[:, r, o] for r, o in taps], axis=1)       # KH x KW x C


def _tall_matmul(a, b, bias=None, chunk_bytes=1 << 19):
    """a @ b (+ bias) for a tall a (N x K); with K <= 256 computed in blocks of rows whose output is
    about ``chunk_bytes``, the bias added to each block while it is in cache: OpenBLAS runs such
    tall-skinny shapes up to twice as fast on blocks that stay in cache (1 thread,
    65536 x 16 @ 16 x 96: 14 -> 27 GFLOP/s), and the bias costs no pass of its own."""
    xp = get_array_module(a)
    n, k = a.shape
    rows = max(chunk_bytes // (b.shape[1] * a.itemsize), 256)
    if xp is not numpy or n < 4 * rows or k > 256:
        out = a @ b
        if bias is not None:
            out += bias
        return out
    out = numpy.empty((n, b.shape[1]), numpy.result_type(a, b))
    for s in range(0, n, rows):
        numpy.matmul(a[s:s + rows], b, out=out[s:s + rows])
        if bias is not None:
            out[s:s + rows] += bias
    return out


def _nchw(y_nhwc):
    """An NCHW view of channels-last memory."""
    return y_nhwc.transpose(0, 3, 1, 2)


def _is_channels_last(x):
    """True when x (NCHW logically) is stored B x H x W x C contiguous."""
    return x.transpose(0, 2, 3, 1).flags.c_contiguous


class Conv2d(Function):
    """y[b,o,i,j] = bias[o] + sum_{c,p,q} w[o,c,p,q] x_pad[b, g(o) Cg + c, i sh + p dh, j sw + q dw];
    dW = cols^T dY, dX = col2im(dY W^T), db = sum dY"""

    def forward(self, x, w, *bias, stride, pads, dilation, groups, keep_cols):
        xp = get_array_module(x)
        B, C, H, W = x.shape
        O, Cg, KH, KW = w.shape
        t, b, l, r = pads
        ho = conv_output_size(H, KH, stride[0], t, b, dilation[0])
        wo = conv_output_size(W, KW, stride[1], l, r, dilation[1])
        if ho <= 0 or wo <= 0:
            raise ValueError(f"conv2d: input {H}x{W} (padded {H + t + b}x{W + l + r}) is smaller than the "
                             f"dilated kernel {dilation[0] * (KH - 1) + 1}x{dilation[1] * (KW - 1) + 1}")
        self.xshape, self.pads, self.stride, self.dilation, self.groups = x.shape, pads, stride, dilation, groups
        self.out_size, self.has_bias = (ho, wo), bool(bias)
        self.w = w
        b0 = bias[0] if bias else None                                  # added to y on the way when it can be
        N = B * ho * wo
        self.mode = ("depthwise" if groups == C and groups > 1 else "grouped" if groups > 1
                     else "1x1" if KH == KW == 1 and stride == (1, 1) and not any(pads)
                     else "rows" if KH > 1 and stride == (1, 1) else "gemm")
        if self.mode == "1x1":
            if _is_channels_last(x):
                xm = x.transpose(0, 2, 3, 1).reshape(N, C)           # (B*H*W) x C, a view
                y = _nchw(_tall_matmul(xm, w.reshape(O, C).T, b0).reshape(B, ho, wo, O))
                b0 = None                                               # added
                self.xm, self.cl = (xm if keep_cols else None), True
            else:
                x3 = x.reshape(B, C, H * W)                            # B x C x HW (a view when contiguous)
                y = xp.matmul(w.reshape(O, C), x3).reshape(B, O, ho, wo)
                self.xm, self.cl = (x3 if keep_cols else None), False
        elif self.mode == "depthwise" and O == C and xp is numpy:
            xh = _depthwise_input(x, pads, (KH, KW), stride, dilation, (ho, wo))   # B x Hp x R x Wq x C
            y = _nchw(_depthwise(xh, w.reshape(C, KH, KW).transpose(1, 2, 0), stride, dilation, (ho, wo), b0))
            b0 = None
            self.xh = xh if keep_cols else None
        elif self.mode == "depthwise":
            xh = _pad_nhwc(x, pads)                                    # B x Hp x Wp x C
            m = O // C
            wk = w.reshape(C, m, KH * KW)                               # C x m x KK
            v = im2col(xh, (KH, KW), stride, dilation, (ho, wo))        # B x Ho x Wo x KH x KW x C (view)
            if m == 1:
                y = xp.empty((B, ho, wo, C), x.dtype)
                tmp = xp.empty_like(y)
                for k in range(KH * KW):
                    p, q = divmod(k, KW)
                    if k == 0:
                        xp.multiply(v[:, :, :, p, q], wk[:, 0, k], out=y)
                    else:
                        xp.multiply(v[:, :, :, p, q], wk[:, 0, k], out=tmp)
                        y += tmp
            else:  # channel multiplier m: output channel c m + k reads input channel c
                y = xp.zeros((B, ho, wo, C, m), x.dtype)
                wt = wk.transpose(2, 0, 1)                              # KK x C x m
                for k in range(KH * KW):
                    p, q = divmod(k, KW)
                    y += v[:, :, :, p, q, :, None] * wt[k]
                y = y.reshape(B, ho, wo, O)
            self.xh = xh if keep_cols else None
            y = _nchw(y)
        elif self.mode == "rows":
            # stride 1: im2col over the kernel *row* only (KW x C columns per padded input
            # row, a third of the full im2col at 3x3), then one GEMM per kernel row p on the rows
            # shifted by p dh image rows: y[b, i, j] = sum_p rows[b, i + p dh, j] @ W[p]
            rows = _kernel_rows(_pad_nhwc(x, pads), KW, wo, dilation[1])  # B x (Hp Wo) x (KW C)
            wr = w.transpose(2, 3, 1, 0).reshape(KH, KW * C, O)         # KH x (KW C) x O
            y = self._row_gemms(rows, wr, ho * wo, dilation[0] * wo, b0)    # B x (Ho Wo) x O
            b0 = None
            y = _nchw(y.reshape(B, ho, wo, O))
            self.cols = rows if keep_cols else None
        elif self.mode == "grouped":
            g, Og = groups, O // groups
            xh = _pad_nhwc(x, pads).reshape(B, H + t + b, W + l + r, g, Cg)
            v = im2col(xh, (KH, KW), stride, dilation, (ho, wo))        # B x Ho x Wo x KH x KW x g x Cg
            cols = v.transpose(5, 0, 1, 2, 3, 4, 6).reshape(g, N, KH * KW * Cg)   # the im2col copy
            wg = w.reshape(g, Og, Cg, KH, KW).transpose(0, 3, 4, 2, 1).reshape(g, KH * KW * Cg, Og)
            yg = xp.matmul(cols, wg)                                    # g x N x Og, one batched GEMM
            y = _nchw(yg.transpose(1, 0, 2).reshape(B, ho, wo, O))
            self.cols = cols if keep_cols else None
            self.own = not xp.may_share_memory(cols, x)
        else:
            v = im2col(_pad_nhwc(x, pads), (KH, KW), stride, dilation, (ho, wo))  # B x Ho x Wo x KH x KW x C
            cols = _copy(v).reshape(N, KH * KW * C)                     # the im2col copy
            wm = w.transpose(2, 3, 1, 0).reshape(KH * KW * C, O)
            y = _nchw(_tall_matmul(cols, wm, b0).reshape(B, ho, wo, O))  # (B*Ho*Wo) x O, one GEMM
            b0 = None
            self.cols = cols if keep_cols else None
            self.own = not xp.may_share_memory(cols, x)
        if b0 is not None:                                              # not added on the way
            y += b0.reshape(1, O, 1, 1)
        return y

    @staticmethod
    def _row_gemms(a, wr, n, step, bias=None):
        """sum_p a[:, p step : p step + n] @ wr[p] (+ bias) for p < len(wr): a B x R x K (rows shifted by
        p step), wr P x K x O; image by image, so that each partial product and the bias are added
        while in cache (3x3 64@56 forward 30 -> 27 ms against one batched matmul per p and a pass over y)."""
        xp = get_array_module(a)
        y = xp.empty((a.shape[0], n, wr.shape[2]), xp.result_type(a, wr))
        tmp = xp.empty((n, wr.shape[2]), y.dtype)
        for b in range(a.shape[0]):
            xp.matmul(a[b, :n], wr[0], out=y[b])
            for p in range(1, len(wr)):
                xp.matmul(a[b, p * step: p * step + n], wr[p], out=tmp)
                y[b] += tmp
            if bias is not None:
                y[b] += bias
        return y

    def _reusable_cols(self, gy):
        """The kept im2col buffer, to be overwritten by dX's columns, unless the graph is retained
        for another backward (then a fresh array is used and the buffer stays valid)."""
        cols = self.cols
        if cols is None or not self.own or cols.dtype != gy.dtype or self.retain_graph:
            return None
        self.cols = None
        return cols

    def backward(self, gy):
        xp = get_array_module(gy)
        nx, nw = self.needs_input_grad[:2]
        nb = self.has_bias and self.needs_input_grad[2]
        B, C, H, W = self.xshape
        w = self.w
        O, Cg, KH, KW = w.shape
        ho, wo = self.out_size
        N = B * ho * wo
        t, b, l, r = self.pads
        Hp, Wp = H + t + b, W + l + r
        gx = gw = None
        gb = gy.sum(axis=(0, 2, 3)) if nb else None
        if self.mode == "1x1":
            if self.cl:
                gm = gy.transpose(0, 2, 3, 1).reshape(N, O)             # copies unless gy is channels-last
                if nw:
                    gw = (gm.T @ self.xm).reshape(w.shape)
                if nx:
                    gx = _nchw((gm @ w.reshape(O, C)).reshape(B, H, W, C))
            else:
                g3 = gy.reshape(B, O, H * W)
                if nw:
                    gw = xp.matmul(g3, self.xm.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)
                if nx:
                    gx = xp.matmul(w.reshape(O, C).T, g3).reshape(B, C, H, W)
            return gx, gw, gb
        gh = gy.transpose(0, 2, 3, 1)                                   # B x Ho x Wo x O (a view)
        if self.mode == "depthwise":
            m = O // C
            wt = w.reshape(C, m, KH * KW).transpose(2, 0, 1)            # KK x C x m
            if m == 1:
                gh = gh[..., None]
            else:
                gh = gh.reshape(B, ho, wo, C, m)
            if nw and m == 1 and xp is numpy:
                g0 = gh[..., 0]                                         # B x Ho x Wo x C, made contiguous
                g0 = g0 if g0.flags.c_contiguous else _copy(g0)
                gw = _depthwise_grad_w(self.xh, g0, (KH, KW), self.stride, self.dilation)
                gw = gw.transpose(2, 0, 1).reshape(w.shape)
            elif nw:
                v = im2col(self.xh, (KH, KW), self.stride, self.dilation, (ho, wo))
                gwk = xp.empty((KH * KW, C, m), w.dtype)
                for k in range(KH * KW):
                    p, q = divmod(k, KW)
                    gwk[k] = xp.einsum("bijcm,bijc->cm", gh, v[:, :, :, p, q])
                gw = gwk.transpose(1, 2, 0).reshape(w.shape)
            if nx and m == 1 and xp is numpy and self.stride == (1, 1):
                # dX = full correlation of dY with the flipped kernel: one einsum over a strided view
                dh, dw = self.dilation
                eh, ew = dh * (KH - 1), dw * (KW - 1)
                gp = _pad_nhwc(gy, (eh, eh, ew, ew))[:, :, None]        # B x (Ho + 2 eh) x 1 x (Wo + 2 ew) x C
                wf = w.reshape(C, KH, KW)[:, ::-1, ::-1].transpose(1, 2, 0)
                full = _depthwise(gp, wf, (1, 1), (dh, dw), (ho + eh, wo + ew))
                gxh = numpy.zeros((B, Hp, Wp, C), gy.dtype) if (ho + eh, wo + ew) != (Hp, Wp) else full
                if gxh is not full:
                    gxh[:, :ho + eh, :wo + ew] = full
                gx = _nchw(gxh[:, t:t + H, l:l + W])
            elif nx:
                sh, sw = self.stride
                dh, dw = self.dilation
                gxh = xp.zeros((B, Hp, Wp, C), gy.dtype)
                tmp = xp.empty((B, ho, wo, C), gy.dtype)
                for k in range(KH * KW):
                    p, q = divmod(k, KW)
                    sl = gxh[:, p * dh: p * dh + sh * (ho - 1) + 1: sh, q * dw: q * dw + sw * (wo - 1) + 1: sw]
                    if m == 1:
                        xp.multiply(gh[..., 0], wt[k, :, 0], out=tmp)
                        sl += tmp
                    else:
                        sl += (gh * wt[k]).sum(axis=-1)
                gx = _nchw(gxh[:, t:t + H, l:l + W])
            return gx, gw, gb
        if self.mode == "rows":
            if nw:  # dW[p] = sum_b rows_p^T dY
                step, n = self.dilation[0] * wo, ho * wo
                gm = gh.reshape(B, n, O)                                # copies unless gy is channels-last
                gwr = xp.stack([xp.matmul(self.cols[:, p * step: p * step + n].transpose(0, 2, 1), gm).sum(axis=0)
                                for p in range(KH)])                    # KH x (KW C) x O
                gw = gwr.reshape(KH, KW, C, O).transpose(3, 2, 0, 1)
            if nx:
                # dX = the full correlation of dY with the flipped kernel, itself a kernel-row conv:
                # dXpad[b, y, x] = sum_{p,q} dYpad[b, y + p dh, x + q dw] @ W[:, :, KH-1-p, KW-1-q]
                dh, dw = self.dilation
                eh, ew = dh * (KH - 1), dw * (KW - 1)
                if not self.retain_graph:
                    self.cols = None                                    # dW is done: free the kept buffer first
                rows = _kernel_rows(_pad_nhwc(gy, (eh, eh, ew, ew)), KW, Wp, dw)   # B x ((Ho+2eh) Wp) x (KW O)
                wf = w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(KH, KW * O, C)  # KH x (KW O) x C
                gxh = self._row_gemms(rows, wf, Hp * Wp, dh * Wp).reshape(B, Hp, Wp, C)
                gx = _nchw(gxh[:, t:t + H, l:l + W])
            return gx, gw, gb
        if self.mode == "grouped":
            g, Og = self.groups, O // self.groups
            gg = gh.reshape(N, g, Og).transpose(1, 0, 2)                # g x N x Og
            wg = w.reshape(g, Og, Cg, KH, KW).transpose(0, 3, 4, 2, 1).reshape(g, KH * KW * Cg, Og)
            if nw:
                gwg = xp.matmul(self.cols.transpose(0, 2, 1), gg)       # g x KKCg x Og
                gw = gwg.reshape(g, KH, KW, Cg, Og).transpose(0, 4, 3, 1, 2).reshape(w.shape)
            if nx:
                gc = xp.matmul(gg, wg.transpose(0, 2, 1), out=self._reusable_cols(gy))  # g x N x KKCg
                gc = gc.reshape(g, B, ho, wo, KH, KW, Cg).transpose(1, 2, 3, 4, 5, 0, 6)
                gxh = col2im(gc, (B, Hp, Wp, g, Cg), self.stride, self.dilation)
                gx = _nchw(gxh.reshape(B, Hp, Wp, C)[:, t:t + H, l:l + W])
            return gx, gw, gb
        gm = gh.reshape(N, O)                                           # copies unless gy is channels-last
        wm = w.transpose(2, 3, 1, 0).reshape(KH * KW * C, O)
        if nw:
            gw = (self.cols.T @ gm).reshape(KH, KW, C, O).transpose(3, 2, 0, 1)
        if nx:
            gc = xp.matmul(gm, wm.T, out=self._reusable_cols(gy))       # N x KKC, into the kept buffer
            gxh = col2im(gc.reshape(B, ho, wo, KH, KW, C), (B, Hp, Wp, C), self.stride, self.dilation)
            gx = _nchw(gxh[:, t:t + H, l:l + W])
        return gx, gw, gb


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """y = bias + sum_{c,p,q} weight[o,c,p,q] x_pad[b, c, i s + p d, j s + q d] (torch.nn.functional.conv2d);
    input B x C x H x W, weight O x C/groups x KH x KW; padding: int, (ph, pw), ((top, bottom), (left, right)),
    (left, right, top, bottom), "same" or "valid". The output is an NCHW view of channels-last memory."""
    if input.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"conv2d: expected 4-D input and weight, got {tuple(input.shape)} and {tuple(weight.shape)}")
    B, C, H, W = input.shape
    O, Cg, KH, KW = weight.shape
    if C % groups or O % groups or C // groups != Cg:
        raise ValueError(f"conv2d: input has {C} channels, weight {tuple(weight.shape)} with groups={groups} "
                         f"expects {Cg * groups} (and out channels {O} divisible by groups)")
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    pads = _conv_padding(padding, (H, W), (KH, KW), stride, dilation)
    keep = is_grad_enabled() and weight.requires_grad
    args = (input, weight) + ((bias,) if bias is not None else ())
    return Conv2d.apply(*args, stride=stride, pads=pads, dilation=dilation, groups=groups, keep_cols=keep)


class ConvTranspose2d(Function):
    """y = crop(col2im(x W)) + bias, the adjoint of conv2d in x: weight Cin x Cout/g x KH x KW;
    dX = im2col(dY_pad) W^T, dW = x^T im2col(dY_pad)"""

    def forward(self, x, w, *bias, stride, padding, output_padding, dilation, groups):
        xp = get_array_module(x)
        B, Cin, H, W = x.shape
        _, Cog, KH, KW = w.shape
        g = groups
        Cig, Cout = Cin // g, Cog * g
        (sh, sw), (dh, dw) = stride, dilation
        fh, fw = (H - 1) * sh + dh * (KH - 1) + 1, (W - 1) * sw + dw * (KW - 1) + 1   # full (uncropped) size
        ph, pw = padding
        oph, opw = output_padding
        ho, wo = fh - 2 * ph + oph, fw - 2 * pw + opw
        if ho <= 0 or wo <= 0:
            raise ValueError(f"conv_transpose2d: output size {ho}x{wo} is not positive")
        self.xshape, self.stride, self.dilation, self.groups = x.shape, stride, dilation, groups
        self.full, self.crop, self.out_size, self.has_bias = (fh + oph, fw + opw), (ph, pw), (ho, wo), bool(bias)
        self.w = w
        N = B * H * W
        xm = x.transpose(0, 2, 3, 1).reshape(N, g, Cig).transpose(1, 0, 2)    # g x N x Cig
        wg = w.reshape(g, Cig, Cog, KH, KW).transpose(0, 1, 3, 4, 2).reshape(g, Cig, KH * KW * Cog)
        cols = xp.matmul(xm, wg)                                                # g x N x KK Cog
        cols = cols.reshape(g, B, H, W, KH, KW, Cog).transpose(1, 2, 3, 4, 5, 0, 6)
        yh = col2im(cols, (B, fh + oph, fw + opw, g, Cog), stride, dilation)
        y = _nchw(yh.reshape(B, fh + oph, fw + opw, Cout)[:, ph:ph + ho, pw:pw + wo])
        self.xm = xm
        if bias:
            y += bias[0].reshape(1, Cout, 1, 1)
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        nx, nw = self.needs_input_grad[:2]
        nb = self.has_bias and self.needs_input_grad[2]
        B, Cin, H, W = self.xshape
        w = self.w
        _, Cog, KH, KW = w.shape
        g = self.groups
        Cig = Cin // g
        ph, pw = self.crop
        ho, wo = self.out_size
        fh, fw = self.full
        gb = gy.sum(axis=(0, 2, 3)) if nb else None
        gxh = _pad_nhwc(gy, (ph, fh - ph - ho, pw, fw - pw - wo))               # B x fh x fw x Cout
        v = im2col(gxh.reshape(B, fh, fw, g, Cog), (KH, KW), self.stride, self.dilation, (H, W))
        cols = v.transpose(5, 0, 1, 2, 3, 4, 6).reshape(g, B * H * W, KH * KW * Cog)   # g x N x KK Cog
        gx = gw = None
        if nw:
            gwg = xp.matmul(self.xm.transpose(0, 2, 1), cols)                  # g x Cig x KK Cog
            gw = gwg.reshape(g, Cig, KH, KW, Cog).transpose(0, 1, 4, 2, 3).reshape(w.shape)
        if nx:
            wg = w.reshape(g, Cig, Cog, KH, KW).transpose(0, 1, 3, 4, 2).reshape(g, Cig, KH * KW * Cog)
            gxg = xp.matmul(cols, wg.transpose(0, 2, 1))                       # g x N x Cig
            gx = _nchw(gxg.transpose(1, 0, 2).reshape(B, H, W, Cin))
        return gx, gw, gb


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """The gradient of conv2d with respect to its input (torch.nn.functional.conv_transpose2d):
    output size (H - 1) s - 2 p + d (k - 1) + output_padding + 1; weight Cin x Cout/groups x KH x KW"""
    if input.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"conv_transpose2d: expected 4-D input and weight, got {tuple(input.shape)} "
                         f"and {tuple(weight.shape)}")
    if input.shape[1] != weight.shape[0] or input.shape[1] % groups:
        raise ValueError(f"conv_transpose2d: input has {input.shape[1]} channels but weight "
                         f"{tuple(weight.shape)} expects {weight.shape[0]} (groups={groups})")
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    padding, output_padding = _pair(padding, "padding"), _pair(output_padding, "output_padding")
    for op, s, d in zip(output_padding, stride, dilation):
        if op >= max(s, d):
            raise ValueError(f"conv_transpose2d: output_padding {output_padding} must be smaller than "
                             f"stride {stride} or dilation {dilation}")
    args = (input, weight) + ((bias,) if bias is not None else ())
    return ConvTranspose2d.apply(*args, stride=stride, padding=padding, output_padding=output_padding,
                                 dilation=dilation, groups=groups)
