"""Weight initialisations with PyTorch's names and defaults (torch.nn.init).

Numbers are drawn on the CPU from npad's seeded generator (``npad.manual_seed``)
and copied to the tensor's device, so a seed gives the same weights everywhere.
"""
import math

import numpy

from ..backend import get_array_module
from ..tensor import get_rng


def _fill(tensor, values):
    xp = get_array_module(tensor.data)
    tensor.data = xp.asarray(numpy.asarray(values, dtype=tensor.dtype).reshape(tensor.shape))
    return tensor


def _fans(tensor):
    """(fan_in, fan_out) of a Linear (out x in) or Conv (out x in x k...) weight."""
    if tensor.ndim < 2:
        raise ValueError(f"fan in/out needs at least 2 dimensions, got shape {tuple(tensor.shape)}")
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def calculate_gain(nonlinearity, param=None):
    """Recommended gain: 1 (linear, sigmoid), 5/3 (tanh), sqrt 2 (relu), sqrt(2 / (1 + a^2)) (leaky_relu)."""
    if nonlinearity in ("linear", "conv1d", "conv2d", "conv_transpose2d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        a = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + a * a))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def uniform_(tensor, a=0.0, b=1.0):
    """U(a, b)"""
    return _fill(tensor, get_rng().uniform(a, b, tensor.shape))


def normal_(tensor, mean=0.0, std=1.0):
    """N(mean, std^2)"""
    return _fill(tensor, get_rng().normal(mean, std, tensor.shape))


def constant_(tensor, val):
    return _fill(tensor, numpy.full(tensor.shape, val))


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor, gain=1.0):
    """U(-b, b), b = gain sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010)"""
    fi, fo = _fans(tensor)
    b = gain * math.sqrt(6.0 / (fi + fo))
    return uniform_(tensor, -b, b)


def xavier_normal_(tensor, gain=1.0):
    """N(0, s^2), s = gain sqrt(2 / (fan_in + fan_out))"""
    fi, fo = _fans(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fi + fo)))


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """U(-b, b), b = gain sqrt(3 / fan) (He et al. 2015); PyTorch's Linear/Conv default uses a = sqrt 5"""
    fan = _fans(tensor)[0 if mode == "fan_in" else 1]
    b = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return uniform_(tensor, -b, b)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """N(0, s^2), s = gain / sqrt(fan)"""
    fan = _fans(tensor)[0 if mode == "fan_in" else 1]
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan))


def orthogonal_(tensor, gain=1.0):
    """A (semi-)orthogonal matrix from the QR decomposition of a Gaussian matrix (Saxe et al. 2013)"""
    rows = tensor.shape[0]
    cols = math.prod(tensor.shape[1:])
    a = get_rng().standard_normal((max(rows, cols), min(rows, cols)))
    q, r = numpy.linalg.qr(a)
    q *= numpy.sign(numpy.diag(r))
    q = q if rows >= cols else q.T
    return _fill(tensor, gain * q[:rows, :cols])


def default_init_(weight, bias=None):
    """PyTorch's Linear/Conv default: kaiming_uniform_(a=sqrt 5) and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        b = 1 / math.sqrt(_fans(weight)[0])
        uniform_(bias, -b, b)


def he_normal_(module, a=0.0, generator=None):
    """He-normal start of every parameter of ``module`` (He et al. 2015): weights (2 or more
    dimensions) ~ N(0, 2 / ((1 + a^2) fan_in)) for LeakyReLU(a) (a = 0: ReLU), everything else 0.

    fan_in counts the inputs that reach one output: in x k... for Linear / Conv weights (out x in x
    k...); C_in k^2 / (stride_h stride_w) for a ConvTranspose2d weight (C_in x C_out x k x k), whose
    outputs each see only every stride-th input (PyTorch's fan for it would be C_out k^2). The
    signal then keeps its scale through a network without normalisation. ``generator``: a NumPy
    Generator or seed to draw from (default: npad's generator), drawn in ``named_parameters`` order."""
    from .conv import ConvTranspose2d
    rng = get_rng() if generator is None else numpy.random.default_rng(generator)
    gain2 = 2.0 / (1 + a * a)
    seen = set()
    for m in module.modules():
        for name, p in m._parameters.items():
            if p is None or id(p) in seen:
                continue
            seen.add(id(p))
            if p.ndim < 2:
                zeros_(p)
                continue
            fan_in = math.prod(p.shape[1:])
            if isinstance(m, ConvTranspose2d) and name == "weight":
                fan_in = p.shape[0] * math.prod(p.shape[2:]) / (m.stride[0] * m.stride[1])
            _fill(p, rng.standard_normal(p.shape) * math.sqrt(gain2 / (fan_in or 1)))
    return module
