"""2-D convolution and transposed convolution (NCHW, PyTorch semantics): the reference.

This file is the definition a reader follows; ``npad.kernels`` holds faster paths for common
shapes, each tested equal to what is written here (``NPAD_REFERENCE=1`` runs this file only).

A convolution is one matrix product. The input is copied once into a zero-padded channels-last
array ``xh`` (B x Hp x Wp x C); ``im2col`` is a strided *view* of it, B x Ho x Wo x KH x KW x C,
whose row (b, i, j) holds the KH x KW x C input values that output pixel (b, i, j) sees. Copying
that view into a matrix ``cols`` (B Ho Wo) x (KH KW C) and multiplying by the weight laid out as
(KH KW C) x O gives the output rows:

    Y = cols W,    dW = cols^T dY,    dX = col2im(dY W^T),    db = sum dY

where ``col2im``, the adjoint of im2col, adds each row's KH x KW x C values back where they came
from. With groups g the channels split into g independent convolutions, so the same three lines run
as one batched matrix product over the groups (depthwise: g = C). ``conv_transpose2d`` is the same
pair of maps with the roles swapped: Y = col2im(X W), dX = im2col(dY) W^T.

The output is an NCHW *view* of channels-last memory (no copy): elementwise ops keep that layout
and the next convolution's channels-last copy of it is a plain contiguous copy.
"""
from ..backend import get_array_module
from ..tensor import Function, is_grad_enabled

try:                                    # the fast paths; without npad/kernels/ the reference runs
    from ..kernels import conv2d_kernel
except ModuleNotFoundError as e:
    if e.name != "npad.kernels":
        raise

    def conv2d_kernel(*args):
        return None

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


def pad_nhwc(x, pads):
    """Zero-padded channels-last copy B x (H+t+b) x (W+l+r) x C of an NCHW array; pads (t, b, l, r)."""
    t, b, l, r = pads
    return get_array_module(x).pad(x.transpose(0, 2, 3, 1), ((0, 0), (t, b), (l, r), (0, 0)))


def im2col(xh, kernel, stride, dilation, out_size):
    """Strided view B x Ho x Wo x KH x KW x C... of a channels-last (padded) array
    B x Hp x Wp x C...: view[b, i, j, p, q] = xh[b, i sh + p dh, j sw + q dw] (no copy)."""
    xp = get_array_module(xh)
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_size
    s = xh.strides
    shape = (xh.shape[0], ho, wo, kh, kw) + xh.shape[3:]
    strides = (s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw) + s[3:]
    return xp.lib.stride_tricks.as_strided(xh, shape, strides)


def col2im(cols, padded_shape, stride, dilation, out=None):
    """The adjoint of im2col: out[b, i sh + p dh, j sw + q dw] += cols[b, i, j, p, q] for cols
    B x Ho x Wo x KH x KW x C..., out channels-last ``padded_shape`` (zeros, or ``out`` given zeroed)."""
    xp = get_array_module(cols)
    B, ho, wo, kh, kw = cols.shape[:5]
    (sh, sw), (dh, dw) = stride, dilation
    out = xp.zeros(padded_shape, cols.dtype) if out is None else out
    for p in range(kh):
        for q in range(kw):
            out[:, p * dh: p * dh + sh * (ho - 1) + 1: sh, q * dw: q * dw + sw * (wo - 1) + 1: sw] += cols[:, :, :, p, q]
    return out


def _group_weight(w, g):
    """O x Cg x KH x KW weight as g x (KH KW Cg) x O/g matrices, rows in im2col's (p, q, c) order."""
    O, Cg, KH, KW = w.shape
    return w.reshape(g, O // g, Cg, KH, KW).transpose(0, 3, 4, 2, 1).reshape(g, KH * KW * Cg, O // g)


class Conv2d(Function):
    """y[b,o,i,j] = bias[o] + sum_{c,p,q} w[o,c,p,q] x_pad[b, k(o) Cg + c, i sh + p dh, j sw + q dw]
    (k(o) = o // (O/g), the group of o); per group Y = cols W, dW = cols^T dY, dX = col2im(dY W^T),
    db = sum dY. A fast kernel from ``npad.kernels`` computes both directions when one serves the shapes."""

    def forward(self, x, w, *bias, stride, pads, dilation, groups, keep_cols):
        B, C, H, W = x.shape
        O, Cg, KH, KW = w.shape
        t, b, l, r = pads
        ho = conv_output_size(H, KH, stride[0], t, b, dilation[0])
        wo = conv_output_size(W, KW, stride[1], l, r, dilation[1])
        if ho <= 0 or wo <= 0:
            raise ValueError(f"conv2d: input {H}x{W} (padded {H + t + b}x{W + l + r}) is smaller than the "
                             f"dilated kernel {dilation[0] * (KH - 1) + 1}x{dilation[1] * (KW - 1) + 1}")
        self.xshape, self.w, self.has_bias = x.shape, w, bool(bias)
        self.kernel = conv2d_kernel(x, w, stride, pads, dilation, groups, (ho, wo))
        if self.kernel is not None:
            return self.kernel.forward(x, w, bias[0] if bias else None, keep_cols)
        self.pads, self.stride, self.dilation, self.groups, self.out_size = pads, stride, dilation, groups, (ho, wo)
        xp = get_array_module(x)
        g, N = groups, B * ho * wo
        xh = pad_nhwc(x, pads).reshape(B, H + t + b, W + l + r, g, Cg)     # B x Hp x Wp x g x Cg
        v = im2col(xh, (KH, KW), stride, dilation, (ho, wo))               # B x Ho x Wo x KH x KW x g x Cg (a view)
        cols = v.transpose(5, 0, 1, 2, 3, 4, 6).reshape(g, N, KH * KW * Cg)  # g x N x KKCg: the im2col copy
        y = xp.matmul(cols, _group_weight(w, g))                            # g x N x O/g: one (batched) GEMM
        y = y.transpose(1, 0, 2).reshape(B, ho, wo, O)                      # B x Ho x Wo x O
        if bias:
            y += bias[0]
        self.cols = cols if keep_cols else None                             # only dW needs it
        return y.transpose(0, 3, 1, 2)                                      # NCHW view of channels-last memory

    def backward(self, gy):
        nx, nw = self.needs_input_grad[:2]
        gb = gy.sum(axis=(0, 2, 3)) if self.has_bias and self.needs_input_grad[2] else None
        if self.kernel is not None:
            return self.kernel.backward(gy, nx, nw, self.retain_graph) + (gb,)
        xp = get_array_module(gy)
        B, C, H, W = self.xshape
        O, Cg, KH, KW = self.w.shape
        (t, b, l, r), g, (ho, wo) = self.pads, self.groups, self.out_size
        gg = gy.transpose(0, 2, 3, 1).reshape(B * ho * wo, g, O // g).transpose(1, 0, 2)  # g x N x O/g
        gx = gw = None
        if nw:
            gw = xp.matmul(self.cols.transpose(0, 2, 1), gg)                # g x KKCg x O/g
            gw = gw.reshape(g, KH, KW, Cg, O // g).transpose(0, 4, 3, 1, 2).reshape(self.w.shape)
        if nx:
            gc = xp.matmul(gg, _group_weight(self.w, g).transpose(0, 2, 1))  # g x N x KKCg
            gc = gc.reshape(g, B, ho, wo, KH, KW, Cg).transpose(1, 2, 3, 4, 5, 0, 6)   # B x Ho x Wo x KH x KW x g x Cg
            gxh = col2im(gc, (B, H + t + b, W + l + r, g, Cg), self.stride, self.dilation)
            gx = gxh.reshape(B, H + t + b, W + l + r, C)[:, t:t + H, l:l + W].transpose(0, 3, 1, 2)
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
    """The adjoint of conv2d in x, weight Cin x Cout/g x KH x KW read as conv2d's O x Cg x KH x KW:
    per group Y = crop(col2im(X W^T)) + bias, dX = im2col(dY_pad) W, dW = (X^T im2col(dY_pad))^T."""

    def forward(self, x, w, *bias, stride, padding, output_padding, dilation, groups):
        xp = get_array_module(x)
        B, Cin, H, W = x.shape
        _, Cog, KH, KW = w.shape
        g = groups
        fh = (H - 1) * stride[0] + dilation[0] * (KH - 1) + 1 + output_padding[0]   # uncropped output size
        fw = (W - 1) * stride[1] + dilation[1] * (KW - 1) + 1 + output_padding[1]
        (ph, pw), N = padding, B * H * W
        ho, wo = fh - 2 * ph, fw - 2 * pw
        if ho <= 0 or wo <= 0:
            raise ValueError(f"conv_transpose2d: output size {ho}x{wo} is not positive")
        self.xshape, self.w, self.stride, self.dilation, self.groups = x.shape, w, stride, dilation, groups
        self.pads, self.has_bias = (ph, fh - ph - ho, pw, fw - pw - wo), bool(bias)
        self.xm = x.transpose(0, 2, 3, 1).reshape(N, g, Cin // g).transpose(1, 0, 2)   # g x N x Cig
        cols = xp.matmul(self.xm, _group_weight(w, g).transpose(0, 2, 1))  # g x N x KKCog
        cols = cols.reshape(g, B, H, W, KH, KW, Cog).transpose(1, 2, 3, 4, 5, 0, 6)   # B x H x W x KH x KW x g x Cog
        yh = col2im(cols, (B, fh, fw, g, Cog), stride, dilation)
        y = yh.reshape(B, fh, fw, g * Cog)[:, ph:ph + ho, pw:pw + wo]      # B x Ho x Wo x Cout
        if bias:
            y += bias[0]
        return y.transpose(0, 3, 1, 2)

    def backward(self, gy):
        xp = get_array_module(gy)
        nx, nw = self.needs_input_grad[:2]
        gb = gy.sum(axis=(0, 2, 3)) if self.has_bias and self.needs_input_grad[2] else None
        B, Cin, H, W = self.xshape
        _, Cog, KH, KW = self.w.shape
        g = self.groups
        gyh = pad_nhwc(gy, self.pads)                                      # B x fh x fw x Cout
        v = im2col(gyh.reshape(gyh.shape[:3] + (g, Cog)), (KH, KW), self.stride, self.dilation, (H, W))
        cols = v.transpose(5, 0, 1, 2, 3, 4, 6).reshape(g, B * H * W, KH * KW * Cog)   # g x N x KKCog
        gx = gw = None
        if nw:
            gw = xp.matmul(self.xm.transpose(0, 2, 1), cols)                # g x Cig x KKCog
            gw = gw.reshape(g, Cin // g, KH, KW, Cog).transpose(0, 1, 4, 2, 3).reshape(self.w.shape)
        if nx:
            gx = xp.matmul(cols, _group_weight(self.w, g))                  # g x N x Cig
            gx = gx.transpose(1, 0, 2).reshape(B, H, W, Cin).transpose(0, 3, 1, 2)
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
