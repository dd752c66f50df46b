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

from .._threads import active_threads, parallel_over
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


def shifted_rows(xs, r0, r1, top, left, phases, width, out):
    """Rows r0 <= r < r1 of xz, the channels-last images xs (n x H x W x C) moved down by ``top`` and right
    by ``left`` with zeros around (xz[:, r, c] = xs[:, r - top, c - left]; a negative shift crops), their
    columns dealt into ``phases``: out[:, r - r0, f, k] = xz[:, r, k phases + f], out n x (r1 - r0) x
    phases x width x C. With phases = s, a horizontal stride s becomes stride 1 within each phase."""
    H, W = xs.shape[1:3]
    a0 = min(max(r0, top), r1)
    a1 = max(min(r1, top + H), a0)                                      # rows r0 <= a0 <= r < a1 hold data
    out[:, :a0 - r0] = 0
    out[:, a1 - r0:] = 0
    for f in range(phases):                 # phase f holds columns k phases + f - left of xs for k0 <= k < k1
        k0 = min(max(-(-(left - f) // phases), 0), width)
        k1 = min(max(-(-(left + W - f) // phases), k0), width)
        dst = out[:, a0 - r0:a1 - r0, f]
        dst[:, :, :k0] = 0
        dst[:, :, k1:] = 0
        if k1 > k0:
            c0 = k0 * phases + f - left
            dst[:, :, k0:k1] = xs[:, a0 - top:a1 - top, c0: c0 + phases * (k1 - k0 - 1) + 1: phases]
    return out


def pad_nhwc(x, pads):
    """The reference's pad_nhwc with the images split over threads (``shifted_rows``), and no copy at
    all for a channels-last input without padding."""
    t, b, l, r = pads
    B, C, H, W = x.shape
    if not (t or b or l or r) and is_channels_last(x):
        return x.transpose(0, 2, 3, 1)
    out = numpy.empty((B, H + t + b, 1, W + l + r, C), x.dtype)
    parallel_over(B, lambda sl: shifted_rows(x[sl].transpose(0, 2, 3, 1), 0, H + t + b, t, l, 1, W + l + r, out[sl]))
    return out[:, :, 0]


def bias_clip(y, bias=None, clip=None):
    """y += bias, then y clipped to clip = (lo, hi) (a bound may be None), in place; returns y. Both
    bounds go to NumPy's clip (with one of them None it takes a slower, unvectorised path)."""
    if bias is not None:
        y += bias
    if clip is not None:
        lo, hi = clip
        numpy.clip(y, -numpy.inf if lo is None else lo, numpy.inf if hi is None else hi, out=y)
    return y


def tall_matmul(a, b, bias=None, clip=None, chunk_bytes=1 << 19):
    """a @ b (+ bias, clipped to ``clip``) for a tall a (N x K); with K <= 256 computed in blocks of rows
    whose output is about ``chunk_bytes``, bias and clip applied to each block while it is in cache.
    OpenBLAS runs such tall-skinny products faster on blocks that stay in cache, and bias and clip cost no
    pass of their own."""
    n, k = a.shape
    rows = max(chunk_bytes // (b.shape[1] * a.itemsize), 256)
    if n < 4 * rows or k > 256:
        return bias_clip(a @ b, bias, clip)
    out = numpy.empty((n, b.shape[1]), numpy.result_type(a, b))
    for s in range(0, n, rows):
        bias_clip(numpy.matmul(a[s:s + rows], b, out=out[s:s + rows]), bias, clip)
    return out


# ---- the kernels -----------------------------------------------------------------------------
class ConvKernel:
    """conv2d for the shapes one kernel serves. ``forward(x, w, bias, keep, clip=None)`` returns y (NCHW),
    clipped to clip = (lo, hi) when given (a Conv + Clip / Relu of the ONNX fast path, no graph), and keeps
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

    def forward(self, x, w, bias, keep, clip=None):
        B, C, H, W = x.shape
        O = w.shape[0]
        self.w, self.channels_last = w.reshape(O, C), is_channels_last(x)
        if self.channels_last:
            xm = x.transpose(0, 2, 3, 1).reshape(B * H * W, C)           # (B H W) x C, a view
            self.xm = xm if keep else None
            return to_nchw(tall_matmul(xm, self.w.T, bias, clip).reshape(B, H, W, O))
        x3 = x.reshape(B, C, H * W)                                     # B x C x HW (a view when contiguous)
        self.xm = x3 if keep else None
        y = numpy.matmul(self.w, x3).reshape(B, O, H, W)
        return bias_clip(y, None if bias is None else bias.reshape(1, O, 1, 1), clip)

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


def row_gemms(a, wr, n, step, bias=None, clip=None):
    """sum_p a[:, p step : p step + n] @ wr[p] (+ bias, clipped) for p < len(wr), a B x R x K, wr P x K x O:
    image by image, so that each partial product, the bias and the clip are applied while in cache."""
    y = numpy.empty((a.shape[0], n, wr.shape[2]), numpy.result_type(a, wr))
    tmp = numpy.empty((n, wr.shape[2]), y.dtype)
    for b in range(a.shape[0]):
        numpy.matmul(a[b, :n], wr[0], out=y[b])
        for p in range(1, len(wr)):
            numpy.matmul(a[b, p * step: p * step + n], wr[p], out=tmp)
            y[b] += tmp
        bias_clip(y[b], bias, clip)
    return y


class KernelRows(ConvKernel):
    """Stride 1, kernels of more than one row, groups 1 (most 3x3 convolutions). The im2col copy runs
    over one kernel *row* only, rows = B x (Hp Wo) x (KW C) (a third of the full im2col at 3x3), and
    y[b, i, j] = sum_p rows[b, i + p dh, j] @ W[p]: KH GEMMs on the rows shifted by p dh image rows
    (``row_gemms``). Less memory traffic, a third of the buffer kept for dW; dX is the same kernel-row
    convolution of the padded dY with the flipped kernel."""

    def forward(self, x, w, bias, keep, clip=None):
        B, C = x.shape[:2]
        O, _, KH, KW = w.shape
        ho, wo = self.out_size
        rows = kernel_rows(pad_nhwc(x, self.pads), KW, wo, self.dilation[1])   # B x (Hp Wo) x (KW C)
        wr = w.transpose(2, 3, 1, 0).reshape(KH, KW * C, O)             # KH x (KW C) x O
        y = row_gemms(rows, wr, ho * wo, self.dilation[0] * wo, bias, clip)   # B x (Ho Wo) x O
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


BAND_BYTES = 1 << 20     # a depthwise band: about 1 MiB of output rows, with its input rows in cache


def width_block(wo, c):
    """J, the divisor of wo for which J x C (the depthwise einsum's inner loop) is nearest 2048."""
    return min((d for d in range(1, wo + 1) if wo % d == 0), key=lambda d: abs(math.log(d * c / 2048)))


def tap_grid(kw, sw, dw):
    """Where kernel column q reads in ``shifted_rows(..., phases=sw)``: column j sw + q dw is phase r,
    column j + o of it, with (o, r) = divmod(q dw, sw). Returns (R, Q, step, taps): the view runs over
    R phases x Q columns o = 0, step, 2 step...; taps[q] = (r, index)."""
    if dw % sw == 0:                        # one phase: stride 1, or a dilation the stride divides
        return 1, kw, dw // sw, [(0, q) for q in range(kw)]
    taps = [(q * dw % sw, q * dw // sw) for q in range(kw)]
    return sw, max(o for _, o in taps) + 1, 1, taps     # grid cells no tap lands on get zero weights


def depthwise_view(xb, kernel, stride, dilation, out_size, J):
    """The depthwise taps of a band ``shifted_rows(...)`` (n x rows x phases x width x C) as a strided view
    n x Ho' x KH x R x Q x (Wo/J) x (J C) whose last axis is contiguous:
    v[b, i, p, r, o, k, jj C + c] = xb[b, i sh + p dh, r, k J + jj + o step, c]."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_size
    R, Q, step, _ = tap_grid(kw, sw, dw)
    s0, s1, s2, s3, s4 = xb.strides
    return numpy.lib.stride_tricks.as_strided(xb, (xb.shape[0], ho, kh, R, Q, wo // J, J * xb.shape[4]),
                                              (s0, s1 * sh, s1 * dh, s2, s3 * step, s3 * J, s4))


class DepthwiseBands:
    """The bands of one depthwise conv: x (NCHW, any strides) moved by ``shift`` = (top, left) with zeros
    around is xz; output row i reads xz rows i sh + p dh. A band is about BAND_BYTES of output: ``rows``
    rows of one image, or whole images, ``images`` of them, when an image's output is smaller (then at
    least one band per thread). ``bands`` are (image slice, first output row); ``view(band, buf)`` copies
    the band's input rows into a per-thread ``buf`` (``shifted_rows``) and returns its ``depthwise_view``."""

    def __init__(self, x, kernel, shift, stride, dilation, out_size):
        (self.kh, kw), self.shift, self.stride, self.dilation, self.out_size = kernel, shift, stride, dilation, out_size
        B, C = x.shape[:2]
        (ho, wo), (sh, sw), dh = out_size, stride, dilation[0]
        self.x, self.R, Q, step, self.taps = x, *tap_grid(kw, sw, dilation[1])
        self.Q, self.J, self.width = Q, width_block(wo, C), wo + (Q - 1) * step   # phase columns the taps read
        row_bytes = wo * C * x.itemsize
        self.rows = min(ho, max(1, BAND_BYTES // row_bytes))
        images = 1 if self.rows < ho else max(1, min(BAND_BYTES // (ho * row_bytes), -(-B // active_threads())))
        self.bands = [(slice(b, min(b + images, B)), i) for b in range(0, B, images) for i in range(0, ho, self.rows)]
        self.buf_shape = (images, (self.rows - 1) * sh + (self.kh - 1) * dh + 1, sw, self.width, C)

    def view(self, band, buf):
        (bs, i), (sh, sw) = band, self.stride
        n = min(self.rows, self.out_size[0] - i)
        r0 = i * sh
        r1 = r0 + (n - 1) * sh + (self.kh - 1) * self.dilation[0] + 1
        xs = self.x[bs].transpose(0, 2, 3, 1)                           # images x H x W x C (a view)
        xb = shifted_rows(xs, r0, r1, *self.shift, sw, self.width, buf[:len(xs), :r1 - r0])
        return depthwise_view(xb, (self.kh, len(self.taps)), self.stride, self.dilation, (n, self.out_size[1]), self.J)

    def run(self, fn):
        """fn(buf, bands) on the bands split over threads, each thread with its own buffer."""
        return parallel_over(len(self.bands), lambda s: fn(numpy.empty(self.buf_shape, self.x.dtype), self.bands[s]))


def depthwise(x, wq, shift, stride, dilation, out_size, bias=None, clip=None):
    """y[b, i, j, c] = bias[c] + sum_{p,q} xz[b, i sh + p dh, j sw + q dw, c] wq[p, q, c] (B x Ho x Wo x C),
    clipped to ``clip`` = (lo, hi) when given; xz as in ``DepthwiseBands``, wq KH x KW x C. Band by band
    of output rows over all images, the bands split over threads: the band's input rows are copied
    (zero-padded, columns dealt into phases by the horizontal stride), one einsum over a strided view
    whose last, contiguous axis is J output pixels x C channels sums all taps, and bias and clip follow
    while the band is in cache. The weights lie on the tap grid, tiled J times."""
    KH, KW, C = wq.shape
    B, (ho, wo) = x.shape[0], out_size
    plan = DepthwiseBands(x, (KH, KW), shift, stride, dilation, out_size)
    R, Q, J = plan.R, plan.Q, plan.J
    wg = numpy.zeros((KH, R, Q, J, C), wq.dtype)
    for q, (r, o) in enumerate(plan.taps):
        wg[:, r, o] = wq[:, q, None]
    wg = wg.reshape(KH, R, Q, J * C)
    y = numpy.empty((B, ho, wo // J, J * C), numpy.result_type(x, wq))
    bias = None if bias is None else numpy.tile(bias, J)                # J C

    def run(buf, bands):
        for band in bands:
            yb = y[band[0], band[1]:band[1] + plan.rows]
            bias_clip(numpy.einsum("biprokx,prox->bikx", plan.view(band, buf), wg, out=yb), bias, clip)
    plan.run(run)
    return y.reshape(B, ho, wo, C)


def depthwise_grad_w(x, g, shift, kernel, stride, dilation):
    """dW[p, q, c] = sum_{b,i,j} xz[b, i sh + p dh, j sw + q dw, c] g[b, i, j, c] (KH x KW x C), g B x Ho x Wo x C
    contiguous: the forward's bands, each adding one einsum per tap over its view and g's rows to its
    thread's sum (one einsum over all taps, a reduction with a small output, runs at half the speed)."""
    B, ho, wo, C = g.shape
    plan = DepthwiseBands(x, kernel, shift, stride, dilation, (ho, wo))
    gv = g.reshape(B, ho, wo // plan.J, plan.J * C)

    def run(buf, bands):
        acc = numpy.zeros((kernel[0], kernel[1], plan.J * C), g.dtype)
        for band in bands:
            v, gb = plan.view(band, buf), gv[band[0], band[1]:band[1] + plan.rows]
            for p in range(kernel[0]):
                for q, (r, o) in enumerate(plan.taps):
                    acc[p, q] += numpy.einsum("bikx,bikx->x", v[:, :, p, r, o], gb)
        return acc
    return sum(plan.run(run)).reshape(kernel[0], kernel[1], plan.J, C).sum(axis=2)   # KH x KW x C


def phase_taps(n, shift, stride, dilation, k):
    """For dX of a depthwise conv along one axis (dX[u] gets gy[i] w[p] where u + shift = i stride + p dilation):
    per phase u0 < stride of dX, (u0, taps p ascending in i, first offset o, offset step d') with
    dX[u0 + m stride] = sum_t gy[m + o + t d'] w[taps[t]]."""
    out = []
    for u0 in range(min(stride, n)):
        taps = [p for p in range(k - 1, -1, -1) if (u0 + shift - p * dilation) % stride == 0]
        if taps:
            step = (taps[0] - taps[1]) * dilation // stride if len(taps) > 1 else 1
            out.append((u0, taps, (u0 + shift - taps[0] * dilation) // stride, step))
        else:
            out.append((u0, [], 0, 1))
    return out


def depthwise_grad_x(gy, wq, shift, stride, dilation, size):
    """dX[b, u, v, c] = sum gy[b, c, i, j] wq[p, q, c] over u + top = i sh + p dh, v + left = j sw + q dw
    (B x H x W x C; the adjoint of ``depthwise``): for each phase (u mod sh, v mod sw) of dX, the stride-1
    ``depthwise`` of gy with the taps that reach it (``phase_taps``; stride 1: one phase, all taps flipped)."""
    (H, W), C = size, wq.shape[2]
    gx = None
    for u0, ps, oh, dh in phase_taps(H, shift[0], stride[0], dilation[0], wq.shape[0]):
        for v0, qs, ow, dw in phase_taps(W, shift[1], stride[1], dilation[1], wq.shape[1]):
            rows, cols = len(range(u0, H, stride[0])), len(range(v0, W, stride[1]))
            if stride == (1, 1):
                return depthwise(gy, wq[ps][:, qs], (-oh, -ow), (1, 1), (dh, dw), (rows, cols))
            if gx is None:
                gx = numpy.zeros((gy.shape[0], H, W, C), numpy.result_type(gy, wq))
            if ps and qs:
                gx[:, u0::stride[0], v0::stride[1]] = depthwise(gy, wq[ps][:, qs], (-oh, -ow), (1, 1), (dh, dw),
                                                                 (rows, cols))
    return gx


class Depthwise(ConvKernel):
    """Depthwise, groups = C = O: y[b, c, i, j] = sum_{p,q} x_pad[b, c, i sh + p dh, j sw + q dw] w[c, p, q].
    The reference's batched GEMM over C groups multiplies C tiny matrices; here one einsum per band of
    output rows over a strided view whose last, contiguous axis is J output pixels x C channels
    (``depthwise``), so einsum's inner loop is long; bias and an optional clip are applied while the band
    is in cache. Keeps x itself (no padded copy) for dW, one einsum per band (``depthwise_grad_w``); dX is
    ``depthwise`` again, per phase of the stride (``depthwise_grad_x``)."""

    def forward(self, x, w, bias, keep, clip=None):
        C, KH, KW = x.shape[1], w.shape[2], w.shape[3]
        self.w, self.x = w, (x if keep else None)
        wq = w.reshape(C, KH, KW).transpose(1, 2, 0)                    # KH x KW x C
        return to_nchw(depthwise(x, wq, self.pads[::2], self.stride, self.dilation, self.out_size, bias, clip))

    def backward(self, gy, nx, nw, retain):
        C, (KH, KW) = self.xshape[1], self.wshape[2:]
        gx = gw = None
        if nw:
            gh = gy.transpose(0, 2, 3, 1)                               # B x Ho x Wo x C
            g = gh if gh.flags.c_contiguous else copy(gh)
            gw = depthwise_grad_w(self.x, g, self.pads[::2], (KH, KW), self.stride, self.dilation)
            gw = gw.transpose(2, 0, 1).reshape(self.wshape)
        if nx:
            wq = self.w.reshape(C, KH, KW).transpose(1, 2, 0)
            gx = to_nchw(depthwise_grad_x(gy, wq, self.pads[::2], self.stride, self.dilation, self.xshape[2:]))
        return gx, gw


class Im2colGemm(ConvKernel):
    """Groups 1 where no other kernel serves (strided convolutions, 1x1 with stride or padding): the
    reference's im2col + one GEMM with its memory-bound steps split over threads (padded copy, im2col
    copy, col2im), the GEMM in blocks of rows with the bias added while in cache (``tall_matmul``), and
    dX's columns written into the kept im2col buffer instead of a fresh one."""

    def forward(self, x, w, bias, keep, clip=None):
        B, C = x.shape[:2]
        O, _, KH, KW = w.shape
        ho, wo = self.out_size
        v = reference.im2col(pad_nhwc(x, self.pads), (KH, KW), self.stride, self.dilation, self.out_size)
        cols = copy(v).reshape(B * ho * wo, KH * KW * C)                # the im2col copy
        wm = w.transpose(2, 3, 1, 0).reshape(KH * KW * C, O)
        self.w, self.cols = w, (cols if keep else None)
        return to_nchw(tall_matmul(cols, wm, bias, clip).reshape(B, ho, wo, O))

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
