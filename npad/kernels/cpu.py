"""Fast conv2d kernels for NumPy on the CPU; ``npad.kernels.conv2d_kernel`` picks one.

Each kernel computes what ``npad.functional.conv.Conv2d`` defines (y = cols W, dW = cols^T dY,
dX = col2im(dY W^T)) with less memory traffic for the shapes it serves. They share three habits:
NumPy's copies and einsums run on one core while BLAS uses all of them, so the memory-bound steps
are split over the batch in npad's threads (``parallel_over``; NumPy releases the GIL inside them);
outputs are NCHW *views* of channels-last memory, like the reference's; and a tall matrix product
runs in blocks of rows that stay in cache (``tall_matmul``).
"""
import math

import numpy

from .._threads import parallel_over
from ..functional import conv as reference


# ---- threaded building blocks ----------------------------------------------------------------
def is_channels_last(x):
    """True when x (NCHW logically) is stored B x H x W x C contiguous."""
    return x.transpose(0, 2, 3, 1).flags.c_contiguous


def to_nchw(y):
    """An NCHW view of channels-last memory B x H x W x C."""
    return y.transpose(0, 3, 1, 2)


def copy(v):
    """A C-contiguous copy of ``v`` (an im2col copy), split over the batch axis in threads."""
    out = numpy.empty(v.shape, v.dtype)

    def run(s):
        out[s] = v[s]
    parallel_over(v.shape[0], run)
    return out


def col2im(cols, padded_shape, stride, dilation):
    """The reference's col2im with the batch split over threads."""
    out = numpy.empty(padded_shape, cols.dtype)

    def add(s):
        out[s] = 0
        reference.col2im(cols[s], None, stride, dilation, out=out[s])
    parallel_over(padded_shape[0], add)
    return out


def pad_nhwc(x, pads, phases=1, width=None):
    """The reference's pad_nhwc split over threads, zeroing only the border, and no copy at all for a
    channels-last input without padding. With ``phases`` = s the padded columns are dealt into s
    phases, B x Hp x s x width x C: out[b, h, r, k] = x_pad[b, h, k s + r] (zeros past the padded
    width), so that a horizontal stride s becomes stride 1 within each phase."""
    t, b, l, r = pads
    B, C, H, W = x.shape
    Hp, Wp = H + t + b, W + l + r
    width = -(-Wp // phases) if width is None else width
    if phases == 1 and width == Wp and not (t or b or l or r) and is_channels_last(x):
        return x.transpose(0, 2, 3, 1)
    out = numpy.empty((B, Hp, phases, width, C), x.dtype)
    spans = []                              # phase f holds input columns f - l + s k for k0 <= k < k1
    for f in range(phases):
        k0 = max(-(-(l - f) // phases), 0)
        k1 = min(max(-(-(l + W - f) // phases), k0), width)
        spans.append((f, k0, k1))
    if t:
        out[:, :t] = 0
    if b:
        out[:, t + H:] = 0

    def run(sl):
        xs = x[sl].transpose(0, 2, 3, 1)                                # b x H x W x C (a view)
        for f, k0, k1 in spans:
            dst = out[sl, t:t + H, f]
            dst[:, :, :k0] = 0
            dst[:, :, k1:] = 0
            c0 = k0 * phases + f - l
            dst[:, :, k0:k1] = xs[:, :, c0: c0 + phases * (k1 - k0 - 1) + 1: phases]
    parallel_over(B, run)
    return out.reshape(B, Hp, width, C) if phases == 1 else out


def tall_matmul(a, b, bias=None, chunk_bytes=1 << 19):
    """a @ b (+ bias) for a tall a (N x K); with K <= 256 computed in blocks of rows whose output is
    about ``chunk_bytes``, the bias added to each block while it is in cache. OpenBLAS runs such
    tall-skinny products faster on blocks that stay in cache, and the bias costs no pass of its own."""
    n, k = a.shape
    rows = max(chunk_bytes // (b.shape[1] * a.itemsize), 256)
    if n < 4 * rows or k > 256:
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


# ---- the kernels -----------------------------------------------------------------------------
class ConvKernel:
    """conv2d for the shapes one kernel serves. ``forward(x, w, bias, keep)`` returns y (NCHW) and keeps
    what backward needs (the input side only when ``keep``: the weight wants a gradient);
    ``backward(gy, nx, nw, retain)`` returns (dX or None, dW or None); ``retain``: the graph is kept for
    another backward, so kept buffers must not be overwritten."""

    def __init__(self, xshape, wshape, stride, pads, dilation, out_size):
        self.xshape, self.wshape, self.stride, self.pads = xshape, wshape, stride, pads
        self.dilation, self.out_size = dilation, out_size
        B, C, H, W = xshape
        t, b, l, r = pads
        self.padded = (H + t + b, W + l + r)

    def _crop(self, gxh):
        """dX from the gradient of the padded channels-last input B x Hp x Wp x C."""
        (t, _, l, _), (H, W) = self.pads, self.xshape[2:]
        return to_nchw(gxh[:, t:t + H, l:l + W])


class Pointwise(ConvKernel):
    """1x1, stride 1, no padding: y = W x at every pixel, a matrix product on the input itself with no
    im2col copy. A channels-last input (another conv's output) is a (B H W) x C matrix already
    (``tall_matmul``); a contiguous NCHW input goes through one broadcast matmul O x C @ B x C x (H W)."""

    def forward(self, x, w, bias, keep):
        B, C, H, W = x.shape
        O = w.shape[0]
        self.w, self.channels_last = w.reshape(O, C), is_channels_last(x)
        if self.channels_last:
            xm = x.transpose(0, 2, 3, 1).reshape(B * H * W, C)           # (B H W) x C, a view
            self.xm = xm if keep else None
            return to_nchw(tall_matmul(xm, self.w.T, bias).reshape(B, H, W, O))
        x3 = x.reshape(B, C, H * W)                                     # B x C x HW (a view when contiguous)
        self.xm = x3 if keep else None
        y = numpy.matmul(self.w, x3).reshape(B, O, H, W)
        if bias is not None:
            y += bias.reshape(1, O, 1, 1)
        return y

    def backward(self, gy, nx, nw, retain):
        B, C, H, W = self.xshape
        O = self.w.shape[0]
        gx = gw = None
        if self.channels_last:
            gm = gy.transpose(0, 2, 3, 1).reshape(B * H * W, O)         # copies unless gy is channels-last
            if nw:
                gw = (gm.T @ self.xm).reshape(self.wshape)
            if nx:
                gx = to_nchw((gm @ self.w).reshape(B, H, W, C))
        else:
            g3 = gy.reshape(B, O, H * W)
            if nw:
                gw = numpy.matmul(g3, self.xm.transpose(0, 2, 1)).sum(axis=0).reshape(self.wshape)
            if nx:
                gx = numpy.matmul(self.w.T, g3).reshape(B, C, H, W)
        return gx, gw


def kernel_rows(xh, kw, wo, dw):
    """The kernel-row im2col copy of a channels-last (padded) array B x Hp x Wp x C, stride 1:
    rows[b, i Wo + j] = xh[b, i, j + q dw, :] for q < kw, as B x (Hp Wo) x (kw C)."""
    B, Hp, _, C = xh.shape
    s0, s1, s2, s3 = xh.strides
    v = numpy.lib.stride_tricks.as_strided(xh, (B, Hp, wo, kw, C), (s0, s1, s2, s2 * dw, s3))
    return copy(v).reshape(B, Hp * wo, kw * C)


def row_gemms(a, wr, n, step, bias=None):
    """sum_p a[:, p step : p step + n] @ wr[p] (+ bias) for p < len(wr), a B x R x K, wr P x K x O:
    image by image, so that each partial product and the bias are added while in cache."""
    y = numpy.empty((a.shape[0], n, wr.shape[2]), numpy.result_type(a, wr))
    tmp = numpy.empty((n, wr.shape[2]), y.dtype)
    for b in range(a.shape[0]):
        numpy.matmul(a[b, :n], wr[0], out=y[b])
        for p in range(1, len(wr)):
            numpy.matmul(a[b, p * step: p * step + n], wr[p], out=tmp)
            y[b] += tmp
        if bias is not None:
            y[b] += bias
    return y


class KernelRows(ConvKernel):
    """Stride 1, kernels of more than one row, groups 1 (most 3x3 convolutions). The im2col copy runs
    over one kernel *row* only, rows = B x (Hp Wo) x (KW C) (a third of the full im2col at 3x3), and
    y[b, i, j] = sum_p rows[b, i + p dh, j] @ W[p]: KH GEMMs on the rows shifted by p dh image rows
    (``row_gemms``). Less memory traffic, a third of the buffer kept for dW; dX is the same kernel-row
    convolution of the padded dY with the flipped kernel."""

    def forward(self, x, w, bias, keep):
        B, C = x.shape[:2]
        O, _, KH, KW = w.shape
        ho, wo = self.out_size
        rows = kernel_rows(pad_nhwc(x, self.pads), KW, wo, self.dilation[1])   # B x (Hp Wo) x (KW C)
        wr = w.transpose(2, 3, 1, 0).reshape(KH, KW * C, O)             # KH x (KW C) x O
        y = row_gemms(rows, wr, ho * wo, self.dilation[0] * wo, bias)   # B x (Ho Wo) x O
        self.w, self.rows = w, (rows if keep else None)
        return to_nchw(y.reshape(B, ho, wo, O))

    def backward(self, gy, nx, nw, retain):
        B, C = self.xshape[:2]
        O, _, KH, KW = self.wshape
        (ho, wo), (dh, dw), (Hp, Wp) = self.out_size, self.dilation, self.padded
        gx = gw = None
        if nw:  # dW[p] = sum_b rows_p^T dY
            step, n = dh * wo, ho * wo
            gm = gy.transpose(0, 2, 3, 1).reshape(B, n, O)              # copies unless gy is channels-last
            gwr = numpy.stack([numpy.matmul(self.rows[:, p * step: p * step + n].transpose(0, 2, 1), gm).sum(axis=0)
                               for p in range(KH)])                     # KH x (KW C) x O
            gw = gwr.reshape(KH, KW, C, O).transpose(3, 2, 0, 1)
        if nx:
            # dX_pad[b, y, x] = sum_{p,q} dY_pad[b, y + p dh, x + q dw] @ W[:, :, KH-1-p, KW-1-q]
            eh, ew = dh * (KH - 1), dw * (KW - 1)
            if not retain:
                self.rows = None                                        # dW is done: free the kept buffer first
            rows = kernel_rows(pad_nhwc(gy, (eh, eh, ew, ew)), KW, Wp, dw)      # B x ((Ho+2eh) Wp) x (KW O)
            wf = self.w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(KH, KW * O, C)  # KH x (KW O) x C
            gx = self._crop(row_gemms(rows, wf, Hp * Wp, dh * Wp).reshape(B, Hp, Wp, C))
        return gx, gw


def width_block(wo, c):
    """J, the divisor of wo for which J x C (the depthwise einsum's inner loop) is nearest 2048."""
    return min((d for d in range(1, wo + 1) if wo % d == 0), key=lambda d: abs(math.log(d * c / 2048)))


def tap_grid(kw, sw, dw):
    """Where kernel column q reads in the phase layout of ``pad_nhwc(..., phases=sw)``: column
    j sw + q dw is phase r, column j + o of it, with (o, r) = divmod(q dw, sw). Returns (R, Q, step,
    taps): the view runs over R phases x Q columns o = 0, step, 2 step...; taps[q] = (r, index)."""
    if dw % sw == 0:                        # one phase: stride 1, or a dilation the stride divides
        return 1, kw, dw // sw, [(0, q) for q in range(kw)]
    taps = [(q * dw % sw, q * dw // sw) for q in range(kw)]
    return sw, max(o for _, o in taps) + 1, 1, taps     # grid cells no tap lands on get zero weights


def depthwise_input(x, pads, kernel, stride, dilation, out_size):
    """The padded channels-last input of a depthwise conv, its columns dealt into phases by the
    horizontal stride (B x Hp x R x Wq x C, see ``tap_grid``)."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_size
    R, Q, step, _ = tap_grid(kw, sw, dw)
    t, b, l, r = pads
    width = max(-(-(x.shape[3] + l + r) // sw), wo + (Q - 1) * step)
    xh = pad_nhwc(x, pads, sw, width)
    return xh[:, :, None] if sw == 1 else xh


def depthwise_view(xh, kernel, stride, dilation, out_size, J):
    """The depthwise taps of ``depthwise_input``'s B x Hp x R' x Wq x C as a strided view
    B x Ho x KH x R x Q x (Wo/J) x (J C) whose last axis is contiguous:
    v[b, i, p, r, o, k, jj C + c] = xh[b, i sh + p dh, r, k J + jj + o step, c]."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_size
    R, Q, step, _ = tap_grid(kw, sw, dw)
    B, C = xh.shape[0], xh.shape[4]
    s0, s1, s2, s3, s4 = xh.strides
    return numpy.lib.stride_tricks.as_strided(xh, (B, ho, kh, R, Q, wo // J, J * C),
                                              (s0, s1 * sh, s1 * dh, s2, s3 * step, s3 * J, s4))


def depthwise(xh, wq, stride, dilation, out_size, bias=None):
    """y[b, i, j, c] = bias[c] + sum_{p,q} x_pad[b, i sh + p dh, j sw + q dw, c] wq[p, q, c], with xh from
    ``depthwise_input`` and wq KH x KW x C: one einsum per image over ``depthwise_view`` (images split
    over threads), the weights laid on the tap grid and tiled J times so that einsum's inner loop runs
    over J pixels x C channels; the bias is added to each image while it is in cache."""
    KH, KW, C = wq.shape
    B, (ho, wo) = xh.shape[0], out_size
    R, Q, _, taps = tap_grid(KW, stride[1], dilation[1])
    J = width_block(wo, C)
    v = depthwise_view(xh, (KH, KW), stride, dilation, out_size, J)     # B x Ho x KH x R x Q x Wo/J x JC
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


def depthwise_grad_w(xh, g, kernel, stride, dilation):
    """dW[p, q, c] = sum_{b,i,j} x_pad[b, i sh + p dh, j sw + q dw, c] g[b, i, j, c] (KH x KW x C), g B x Ho x Wo x C
    contiguous: per-thread partial sums of one einsum over the forward's view."""
    B, ho, wo, C = g.shape
    _, _, _, taps = tap_grid(kernel[1], stride[1], dilation[1])
    J = width_block(wo, C)
    v = depthwise_view(xh, kernel, stride, dilation, (ho, wo), J)
    gv = g.reshape(B, ho, wo // J, J * C)
    parts = parallel_over(B, lambda s: numpy.einsum("biprokx,bikx->prox", v[s], gv[s]))
    grid = sum(parts).reshape(parts[0].shape[:3] + (J, C)).sum(axis=3)  # KH x R x Q x C
    return numpy.stack([grid[:, r, o] for r, o in taps], axis=1)       # KH x KW x C


class Depthwise(ConvKernel):
    """Depthwise, groups = C = O: y[b, c, i, j] = sum_{p,q} x_pad[b, c, i sh + p dh, j sw + q dw] w[c, p, q].
    The reference's batched GEMM over C groups multiplies C tiny matrices; here one einsum per image
    over a strided view whose last, contiguous axis is J output pixels x C channels (``depthwise``),
    so einsum's inner loop is long; a horizontal stride deals the padded columns into phases, each
    read at stride 1. dW: one einsum over the same view; dX at stride 1: the same einsum on the padded
    dY with the flipped kernel; at larger strides, one multiply-add per kernel offset."""

    def forward(self, x, w, bias, keep):
        C, KH, KW = x.shape[1], w.shape[2], w.shape[3]
        xh = depthwise_input(x, self.pads, (KH, KW), self.stride, self.dilation, self.out_size)  # B x Hp x R x Wq x C
        self.w, self.xh = w, (xh if keep else None)
        wq = w.reshape(C, KH, KW).transpose(1, 2, 0)                    # KH x KW x C
        return to_nchw(depthwise(xh, wq, self.stride, self.dilation, self.out_size, bias))

    def backward(self, gy, nx, nw, retain):
        B, C = self.xshape[:2]
        KH, KW = self.wshape[2:]
        (ho, wo), (sh, sw), (dh, dw), (Hp, Wp) = self.out_size, self.stride, self.dilation, self.padded
        gh = gy.transpose(0, 2, 3, 1)                                   # B x Ho x Wo x C (a view)
        gx = gw = None
        if nw:
            g = gh if gh.flags.c_contiguous else copy(gh)
            gw = depthwise_grad_w(self.xh, g, (KH, KW), self.stride, self.dilation)
            gw = gw.transpose(2, 0, 1).reshape(self.wshape)
        if nx and self.stride == (1, 1):
            # dX = the full correlation of dY with the flipped kernel: the forward's einsum again
            eh, ew = dh * (KH - 1), dw * (KW - 1)
            gp = pad_nhwc(gy, (eh, eh, ew, ew))[:, :, None]             # B x (Ho + 2 eh) x 1 x (Wo + 2 ew) x C
            wf = self.w.reshape(C, KH, KW)[:, ::-1, ::-1].transpose(1, 2, 0)
            full = depthwise(gp, wf, (1, 1), (dh, dw), (ho + eh, wo + ew))   # B x Hp' x Wp' x C
            if full.shape[1:3] != (Hp, Wp):                             # rows / columns no output reached
                gxh = numpy.zeros((B, Hp, Wp, C), gy.dtype)
                gxh[:, :ho + eh, :wo + ew] = full
                full = gxh
            gx = self._crop(full)
        elif nx:
            wk = self.w.reshape(C, KH * KW)
            gxh = numpy.zeros((B, Hp, Wp, C), gy.dtype)
            tmp = numpy.empty((B, ho, wo, C), gy.dtype)
            for k in range(KH * KW):
                p, q = divmod(k, KW)
                numpy.multiply(gh, wk[:, k], out=tmp)
                gxh[:, p * dh: p * dh + sh * (ho - 1) + 1: sh, q * dw: q * dw + sw * (wo - 1) + 1: sw] += tmp
            gx = self._crop(gxh)
        return gx, gw


class Im2colGemm(ConvKernel):
    """Groups 1 where no other kernel serves (strided convolutions, 1x1 with stride or padding): the
    reference's im2col + one GEMM with its memory-bound steps split over threads (padded copy, im2col
    copy, col2im), the GEMM in blocks of rows with the bias added while in cache (``tall_matmul``), and
    dX's columns written into the kept im2col buffer instead of a fresh one."""

    def forward(self, x, w, bias, keep):
        B, C = x.shape[:2]
        O, _, KH, KW = w.shape
        ho, wo = self.out_size
        v = reference.im2col(pad_nhwc(x, self.pads), (KH, KW), self.stride, self.dilation, self.out_size)
        cols = copy(v).reshape(B * ho * wo, KH * KW * C)                # the im2col copy
        wm = w.transpose(2, 3, 1, 0).reshape(KH * KW * C, O)
        self.w, self.cols = w, (cols if keep else None)
        return to_nchw(tall_matmul(cols, wm, bias).reshape(B, ho, wo, O))

    def backward(self, gy, nx, nw, retain):
        B, C = self.xshape[:2]
        O, _, KH, KW = self.wshape
        (ho, wo), (Hp, Wp) = self.out_size, self.padded
        gm = gy.transpose(0, 2, 3, 1).reshape(B * ho * wo, O)           # copies unless gy is channels-last
        wm = self.w.transpose(2, 3, 1, 0).reshape(KH * KW * C, O)
        gx = gw = None
        if nw:
            gw = (self.cols.T @ gm).reshape(KH, KW, C, O).transpose(3, 2, 0, 1)
        if nx:
            buf = self.cols                                             # reused unless it must survive
            if retain or buf is None or buf.dtype != numpy.result_type(gm, wm):
                buf = None
            else:
                self.cols = None
            gc = numpy.matmul(gm, wm.T, out=buf)                        # N x KKC
            gx = self._crop(col2im(gc.reshape(B, ho, wo, KH, KW, C), (B, Hp, Wp, C), self.stride, self.dilation))
        return gx, gw
