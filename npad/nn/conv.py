"""Convolution, normalisation, pooling and reshaping layers (torch.nn names, defaults and state_dict keys)."""
import numpy

from .. import functional as F
from ..tensor import Tensor, empty, ones, zeros
from . import init
from .module import Module, Parameter


def _ntuple(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _pair(v):
    return _ntuple(v, 2)


class _ConvNd(Module):
    """y = conv(x, weight, bias) over ``n`` spatial axes; weight out x in/groups x kernel_size,
    PyTorch's default initialisation; padding_mode other than "zeros" pads with F.pad first."""

    n = 2

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros"):
        super().__init__()
        name = type(self).__name__
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: in_channels {in_channels} and out_channels {out_channels} must be "
                             f"divisible by groups {groups}")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"{name}: padding_mode {padding_mode!r} is not supported")
        n = self.n
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, _ntuple(kernel_size, n)
        self.stride, self.dilation, self.groups = _ntuple(stride, n), _ntuple(dilation, n), groups
        self.padding = padding if isinstance(padding, str) else _ntuple(padding, n)
        self.padding_mode = padding_mode
        self.weight = Parameter(empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = Parameter(empty(out_channels)) if bias else None
        init.default_init_(self.weight, self.bias)

    def forward(self, x):
        conv, padding = (F.conv1d if self.n == 1 else F.conv2d), self.padding
        if self.padding_mode != "zeros" and not isinstance(padding, str):
            x = F.pad(x, [p for p in reversed(padding) for _ in (0, 1)], mode=self.padding_mode)  # last axis first
            padding = 0
        return conv(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}")


class Conv1d(_ConvNd):
    """y = conv1d(x, weight, bias); x B x C x L, weight out x in/groups x K."""
    n = 1


class Conv2d(_ConvNd):
    """y = conv2d(x, weight, bias); x B x C x H x W, weight out x in/groups x KH x KW."""
    n = 2


class ConvTranspose2d(Module):
    """y = conv_transpose2d(x, weight, bias); weight in x out/groups x KH x KW, PyTorch's default initialisation."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"ConvTranspose2d: channels {in_channels}, {out_channels} must be divisible by groups {groups}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, _pair(kernel_size)
        self.stride, self.padding, self.output_padding = _pair(stride), _pair(padding), _pair(output_padding)
        self.groups, self.dilation = groups, _pair(dilation)
        self.weight = Parameter(empty(in_channels, out_channels // groups, *self.kernel_size))
        self.bias = Parameter(empty(out_channels)) if bias else None
        # PyTorch's fan_in for a transposed conv weight is weight.shape[1] * KH * KW
        init.default_init_(self.weight, self.bias)

    def forward(self, x, output_size=None):
        op = self.output_padding
        if output_size is not None:  # choose output_padding to hit output_size, as PyTorch
            op = []
            for i, n in enumerate(tuple(output_size)[-2:]):
                base = ((x.shape[2 + i] - 1) * self.stride[i] - 2 * self.padding[i]
                        + self.dilation[i] * (self.kernel_size[i] - 1) + 1)
                op.append(n - base)
            op = tuple(op)
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, op, self.groups,
                                  self.dilation)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, output_padding={self.output_padding}, groups={self.groups}")


class _Norm(Module):
    def __init__(self, num_features, eps, momentum, affine, track_running_stats):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(ones(num_features))
            self.bias = Parameter(zeros(num_features))
        else:
            self.weight = self.bias = None
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features))
            self.register_buffer("running_var", ones(num_features))
            self.register_buffer("num_batches_tracked", Tensor(numpy.array(0, numpy.int64)))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def _momentum(self):
        """The update factor: momentum, or 1 / num_batches_tracked (cumulative average) when momentum is None."""
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data = self.num_batches_tracked.data + 1
            if self.momentum is None:
                return 1.0 / float(self.num_batches_tracked.data)
        return 0.0 if self.momentum is None else self.momentum

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data = self.num_batches_tracked.data * 0

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class _BatchNorm(_Norm):
    """Per-channel batch normalisation; buffers running_mean, running_var, num_batches_tracked."""

    dims = (4,)  # the input ranks this layer takes

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)

    def forward(self, x):
        if x.ndim not in self.dims:
            raise ValueError(f"{type(self).__name__}: expected a {' or '.join(f'{d}-D' for d in self.dims)} "
                             f"input, got shape {tuple(x.shape)}")
        m = self._momentum()
        batch_stats = self.training or not self.track_running_stats
        return F.batch_norm(x, self.running_mean if not self.training or self.track_running_stats else None,
                            self.running_var if not self.training or self.track_running_stats else None,
                            self.weight, self.bias, batch_stats, m, self.eps)


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of B x C or B x C x L inputs (statistics over B, and L)."""
    dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of B x C x H x W inputs (statistics over B, H, W)."""
    dims = (4,)


class InstanceNorm2d(_Norm):
    """Per-sample, per-channel normalisation (PyTorch defaults: affine=False, track_running_stats=False)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)

    def forward(self, x):
        m = self._momentum()
        use_input = self.training or not self.track_running_stats
        return F.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias, use_input, m, self.eps)


class GroupNorm(Module):
    """Normalisation over groups of channels (weight ones, bias zeros)."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: {num_channels} channels are not divisible by {num_groups} groups")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        self.weight = Parameter(ones(num_channels)) if affine else None
        self.bias = Parameter(zeros(num_channels)) if affine else None

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class MaxPool2d(Module):
    """max_pool2d with fixed kernel_size, stride (default: kernel_size), padding, dilation, ceil_mode."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride if stride is not None else kernel_size, padding
        self.dilation, self.ceil_mode = dilation, ceil_mode

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """avg_pool2d with fixed options (count_include_pad=True by default, as PyTorch)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride if stride is not None else kernel_size, padding
        self.ceil_mode, self.count_include_pad, self.divisor_override = ceil_mode, count_include_pad, divisor_override

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                            self.divisor_override)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average over adaptive bins to a fixed output_size (an int, a pair, None entries keep a size)."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class Upsample(Module):
    """interpolate with a fixed size or scale_factor, mode and align_corners."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None):
        super().__init__()
        self.size, self.scale_factor, self.mode, self.align_corners = size, scale_factor, mode, align_corners

    def forward(self, x):
        return F.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners)

    def extra_repr(self):
        what = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        return f"{what}, mode={self.mode!r}"


class Flatten(Module):
    """x with axes start_dim..end_dim merged (default 1..-1, as torch.nn.Flatten)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Axis ``dim`` split into ``unflattened_size``."""

    def __init__(self, dim, unflattened_size):
        super().__init__()
        self.dim, self.unflattened_size = dim, tuple(unflattened_size)

    def forward(self, x):
        d = self.dim % x.ndim
        return F.reshape(x, tuple(x.shape[:d]) + self.unflattened_size + tuple(x.shape[d + 1:]))

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


class ZeroPad2d(Module):
    """Zero padding of the last two axes: an int or (left, right, top, bottom)."""

    def __init__(self, padding):
        super().__init__()
        self.padding = (padding,) * 4 if isinstance(padding, int) else tuple(padding)
        if len(self.padding) != 4:
            raise ValueError(f"ZeroPad2d: padding must be an int or 4 numbers, got {padding!r}")

    def forward(self, x):
        return F.pad(x, self.padding, mode="constant", value=0.0)

    def extra_repr(self):
        return f"{self.padding}"
