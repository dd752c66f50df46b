"""Elementwise arithmetic, matrix multiply and reductions.

Each Function keeps its forward and its local derivative side by side; the
engine sums gradients over broadcast axes (``npad.tensor.sum_to``).
"""
import math as _math
from collections import namedtuple

import numpy

from ..backend import device_xp, get_array_module, to_cpu
from ..tensor import Function, Tensor, as_tensor
from .shape import gather, squeeze

__all__ = ["add", "sub", "mul", "div", "neg", "pow", "exp", "log", "sqrt", "abs", "clamp", "clone",
           "maximum", "minimum", "where", "matmul", "sum", "mean", "max", "min", "amax", "amin",
           "argmax", "argmin", "var", "std", "logsumexp", "astype", "to_device", "square"]


def _pair(a, b, name):
    """Both operands as tensors; a Python number takes the other's dtype and device."""
    if not isinstance(a, Tensor):
        a = as_tensor(a, like=b)
    if not isinstance(b, Tensor):
        b = as_tensor(b, like=a)
    if a.shape != b.shape:
        try:
            numpy.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise ValueError(f"{name}: shapes {tuple(a.shape)} and {tuple(b.shape)} do not broadcast") from None
    return a, b


class Add(Function):
    """y = a + b;  da = g, db = g"""
    def forward(self, a, b):
        return a + b

    def backward(self, g):
        return g, g


class Sub(Function):
    """y = a - b;  da = g, db = -g"""
    def forward(self, a, b):
        return a - b

    def backward(self, g):
        return g, (-g if self.needs_input_grad[1] else None)


class Mul(Function):
    """y = a * b;  da = g b, db = g a"""
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        na, nb = self.needs_input_grad
        return (g * self.b if na else None), (g * self.a if nb else None)


class Div(Function):
    """y = a / b;  da = g / b, db = -g a / b^2"""
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        na, nb = self.needs_input_grad
        ga = g / self.b
        return (ga if na else None), (-ga * self.a / self.b if nb else None)


class Neg(Function):
    """y = -x;  dx = -g"""
    def forward(self, x):
        return -x

    def backward(self, g):
        return -g


class PowScalar(Function):
    """y = x^p (p a number);  dx = g p x^(p-1)"""
    def forward(self, x, p):
        self.x, self.p = x, p
        return x ** p

    def backward(self, g):
        if self.p == 2:
            return g * 2 * self.x
        return g * self.p * self.x ** (self.p - 1)


class Pow(Function):
    """y = a^b;  da = g b a^(b-1), db = g y log(a)"""
    def forward(self, a, b):
        self.a, self.b = a, b
        self.y = a ** b
        return self.y

    def backward(self, g):
        xp = get_array_module(g)
        na, nb = self.needs_input_grad
        ga = g * self.b * self.a ** (self.b - 1) if na else None
        gb = g * self.y * xp.log(xp.where(self.a > 0, self.a, 1)) if nb else None
        return ga, gb


class Exp(Function):
    """y = e^x;  dx = g y"""
    def forward(self, x):
        self.y = get_array_module(x).exp(x)
        return self.y

    def backward(self, g):
        return g * self.y


class Log(Function):
    """y = ln x;  dx = g / x"""
    def forward(self, x):
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, g):
        return g / self.x


class Sqrt(Function):
    """y = sqrt(x);  dx = g / (2 y)"""
    def forward(self, x):
        self.y = get_array_module(x).sqrt(x)
        return self.y

    def backward(self, g):
        return g / (2 * self.y)


class Abs(Function):
    """y = |x|;  dx = g sign(x)"""
    def forward(self, x):
        self.x = x
        return get_array_module(x).abs(x)

    def backward(self, g):
        return g * get_array_module(g).sign(self.x)


class Clamp(Function):
    """y = min(max(x, lo), hi);  dx = g where lo <= x <= hi (torch.clamp), or where lo < x < hi
    when ``open`` (torch's hardtanh and relu6, which like relu pass nothing at a bound), else 0"""
    def forward(self, x, lo, hi, open=False):
        xp = get_array_module(x)
        self.mask = xp.ones(x.shape, bool)
        if lo is not None:
            self.mask &= (x > lo) if open else (x >= lo)
        if hi is not None:
            self.mask &= (x < hi) if open else (x <= hi)
        return xp.clip(x, lo, hi)

    def backward(self, g):
        return g * self.mask


class Clone(Function):
    """y = a C-contiguous copy of x;  dx = g"""
    def forward(self, x):
        return x.copy()

    def backward(self, g):
        return g


class Maximum(Function):
    """y = max(a, b);  the gradient goes to the larger (to a on ties)"""
    def forward(self, a, b):
        xp = get_array_module(a)
        self.pick_a = a >= b
        return xp.maximum(a, b)

    def backward(self, g):
        return g * self.pick_a, g * ~self.pick_a


class Minimum(Function):
    """y = min(a, b);  the gradient goes to the smaller (to a on ties)"""
    def forward(self, a, b):
        xp = get_array_module(a)
        self.pick_a = a <= b
        return xp.minimum(a, b)

    def backward(self, g):
        return g * self.pick_a, g * ~self.pick_a


class Where(Function):
    """y = a where cond else b;  da = g cond, db = g (1 - cond)"""
    def forward(self, a, b, cond):
        self.cond = cond
        return get_array_module(a).where(cond, a, b)

    def backward(self, g):
        xp = get_array_module(g)
        na, nb = self.needs_input_grad
        return (xp.where(self.cond, g, 0) if na else None), (xp.where(self.cond, 0, g) if nb else None)


class MatMul(Function):
    """Y = A @ B (batched, broadcast over leading dims);  dA = G B^T, dB = A^T G"""
    def forward(self, a, b):
        self.a, self.b = a, b
        return get_array_module(a).matmul(a, b)

    def backward(self, g):
        xp = get_array_module(g)
        a, b = self.a, self.b
        na, nb = self.needs_input_grad
        if a.ndim == 1:   # (K) @ (.., K, N): treat a as (1, K)
            a, g = a[None], g[..., None, :]
        if b.ndim == 1:   # (.., M, K) @ (K): treat b as (K, 1)
            b, g = b[:, None], g[..., None]
        ga = xp.matmul(g, b.swapaxes(-1, -2)) if na else None
        gb = None
        if nb:
            if a.ndim > 2 and b.ndim == 2:  # weight shared over the batch: one big GEMM
                gb = a.reshape(-1, a.shape[-1]).T @ g.reshape(-1, g.shape[-1])
            else:
                gb = xp.matmul(a.swapaxes(-1, -2), g)
        if ga is not None and self.a.ndim == 1:
            ga = sum_leading(ga, 1).reshape(self.a.shape)
        if gb is not None and self.b.ndim == 1:
            gb = sum_leading(gb, 2).reshape(self.b.shape)
        return ga, gb


def sum_leading(g, keep):
    """Sum over all but the last ``keep`` axes."""
    return g.reshape(-1, *g.shape[g.ndim - keep:]).sum(axis=0) if g.ndim > keep else g


def _norm_axis(dim, ndim):
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(d % ndim for d in dims)


def _count(shape, axis):
    """Number of elements reduced over ``axis``."""
    return _math.prod(shape) if axis is None else _math.prod(shape[a] for a in axis)


def _expand_grad(g, shape, axis, keepdims):
    """Broadcast a reduced gradient back to ``shape``."""
    xp = get_array_module(g)
    if axis is not None and not keepdims:
        g = xp.expand_dims(g, axis)
    return xp.broadcast_to(g, shape)


class Sum(Function):
    """y = sum_axis x;  dx = g broadcast back"""
    def forward(self, x, axis, keepdims):
        self.shape, self.axis, self.keepdims = x.shape, axis, keepdims
        return x.sum(axis=axis, keepdims=keepdims)

    def backward(self, g):
        return _expand_grad(g, self.shape, self.axis, self.keepdims)


class Mean(Function):
    """y = mean_axis x;  dx = g / n broadcast back"""
    def forward(self, x, axis, keepdims):
        self.shape, self.axis, self.keepdims = x.shape, axis, keepdims
        self.n = _count(x.shape, axis)
        return x.mean(axis=axis, keepdims=keepdims)

    def backward(self, g):
        return _expand_grad(g / self.n, self.shape, self.axis, self.keepdims)


class Extreme(Function):
    """y = max_axis x (or min);  dx = g at the arg-extreme positions, split equally on ties"""
    def forward(self, x, axis, keepdims, op):
        y = getattr(x, op)(axis=axis, keepdims=True)
        self.mask = x == y
        self.axis, self.keepdims, self.shape = axis, keepdims, x.shape
        return y if keepdims else (y.reshape(()) if axis is None else y.squeeze(axis))

    def backward(self, g):
        g = _expand_grad(g, self.shape, self.axis, self.keepdims)
        return g * self.mask / self.mask.sum(axis=self.axis, keepdims=True)


class Var(Function):
    """y = sum (x - mean)^2 / (n - ddof);  dx = g 2 (x - mean) / (n - ddof)"""
    def forward(self, x, axis, ddof, keepdims):
        self.d = x - x.mean(axis=axis, keepdims=True)
        self.n = _count(x.shape, axis) - ddof
        self.axis, self.keepdims = axis, keepdims
        return (self.d * self.d).sum(axis=axis, keepdims=keepdims) / self.n

    def backward(self, g):
        return _expand_grad(g, self.d.shape, self.axis, self.keepdims) * (2 / self.n) * self.d


class LogSumExp(Function):
    """y = log sum exp x = m + log sum exp(x - m);  dx = g softmax(x)"""
    def forward(self, x, axis, keepdims):
        xp = get_array_module(x)
        m = x.max(axis=axis, keepdims=True)
        e = xp.exp(x - m)
        s = e.sum(axis=axis, keepdims=True)
        self.p, self.axis, self.keepdims = e / s, axis, keepdims
        y = xp.log(s) + m
        return y if keepdims else y.squeeze(axis)

    def backward(self, g):
        return _expand_grad(g, self.p.shape, self.axis, self.keepdims) * self.p


class AsType(Function):
    """y = x cast to dtype;  dx = g cast back"""
    def forward(self, x, dtype):
        self.dtype = x.dtype
        return x.astype(dtype)

    def backward(self, g):
        return g.astype(self.dtype)


class ToDevice(Function):
    """y = x copied to another device;  dx = g copied back"""
    def forward(self, x, device):
        self.src = "cuda" if get_array_module(x) is not numpy else "cpu"
        return to_cpu(x) if device == "cpu" else device_xp(device).asarray(x)

    def backward(self, g):
        return to_cpu(g) if self.src == "cpu" else device_xp("cuda").asarray(g)


# ---- the functions users call ---------------------------------------------
def add(a, b):
    """a + b"""
    return Add.apply(*_pair(a, b, "add"))


def sub(a, b):
    """a - b"""
    return Sub.apply(*_pair(a, b, "sub"))


def mul(a, b):
    """a * b"""
    return Mul.apply(*_pair(a, b, "mul"))


def div(a, b):
    """a / b"""
    return Div.apply(*_pair(a, b, "div"))


def neg(x):
    """-x"""
    return Neg.apply(x)


def pow(x, p):
    """x ** p (p a number or a tensor)"""
    if isinstance(p, (int, float)) and isinstance(x, Tensor):
        return PowScalar.apply(x, p=p)
    return Pow.apply(*_pair(x, p, "pow"))


def square(x):
    """x ** 2"""
    return PowScalar.apply(x, p=2)


def exp(x):
    """e ** x"""
    return Exp.apply(x)


def log(x):
    """natural logarithm"""
    return Log.apply(x)


def sqrt(x):
    """square root"""
    return Sqrt.apply(x)


def abs(x):
    """|x|"""
    return Abs.apply(x)


def clamp(x, min=None, max=None):
    """min(max(x, min), max); either bound may be None (the gradient passes at the bounds, as torch.clamp)"""
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    return Clamp.apply(x, lo=min, hi=max)


def clone(x):
    """a copy of x that gradients flow through (C-contiguous)"""
    return Clone.apply(x)


def maximum(a, b):
    """elementwise max(a, b)"""
    return Maximum.apply(*_pair(a, b, "maximum"))


def minimum(a, b):
    """elementwise min(a, b)"""
    return Minimum.apply(*_pair(a, b, "minimum"))


def where(condition, a, b):
    """a where condition else b (condition: bool tensor or array, not differentiated)"""
    a, b = _pair(a, b, "where")
    cond = condition.data if isinstance(condition, Tensor) else condition
    return Where.apply(a, b, cond=cond)


def matmul(a, b):
    """a @ b with NumPy's batching rules"""
    a, b = (x if isinstance(x, Tensor) else as_tensor(x) for x in (a, b))
    ka = a.shape[-1]
    kb = b.shape[-2] if b.ndim > 1 else b.shape[0]
    if a.ndim == 0 or b.ndim == 0 or ka != kb:
        raise ValueError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} do not match "
                         f"(inner dimensions {ka} and {kb})")
    return MatMul.apply(a, b)


def sum(x, dim=None, keepdim=False):
    """sum over ``dim`` (an int, a tuple, or None for all)"""
    return Sum.apply(x, axis=_norm_axis(dim, x.ndim), keepdims=keepdim)


def mean(x, dim=None, keepdim=False):
    """mean over ``dim``"""
    return Mean.apply(x, axis=_norm_axis(dim, x.ndim), keepdims=keepdim)


def amax(x, dim=None, keepdim=False):
    """maximum over ``dim`` (values only)"""
    return Extreme.apply(x, axis=_norm_axis(dim, x.ndim), keepdims=keepdim, op="max")


def amin(x, dim=None, keepdim=False):
    """minimum over ``dim`` (values only)"""
    return Extreme.apply(x, axis=_norm_axis(dim, x.ndim), keepdims=keepdim, op="min")


MaxResult = namedtuple("max", ["values", "indices"])
MinResult = namedtuple("min", ["values", "indices"])


def _extreme(x, dim, keepdim, op):
    """torch.max / torch.min: over all elements, along ``dim`` as (values, indices), or elementwise."""
    if dim is None:
        return Extreme.apply(x, axis=None, keepdims=False, op=op)
    if isinstance(dim, Tensor):
        return maximum(x, dim) if op == "max" else minimum(x, dim)
    if isinstance(dim, (tuple, list)):
        raise TypeError(f"{op}: dim must be one int (it returns values and indices); use a{op} for several dims")
    idx = (argmax if op == "max" else argmin)(x, dim, keepdim=True)
    values = gather(x, dim, idx)          # the gradient goes to the index found, as PyTorch
    if not keepdim:
        values, idx = squeeze(values, dim), squeeze(idx, dim)
    return (MaxResult if op == "max" else MinResult)(values, idx)


def max(x, dim=None, keepdim=False):
    """the largest element; with ``dim`` the named pair (values, indices) along it; with a tensor
    ``dim``, maximum(x, dim) (torch.max)"""
    return _extreme(x, dim, keepdim, "max")


def min(x, dim=None, keepdim=False):
    """the smallest element; with ``dim`` the named pair (values, indices) along it; with a tensor
    ``dim``, minimum(x, dim) (torch.min)"""
    return _extreme(x, dim, keepdim, "min")


def argmax(x, dim=None, keepdim=False):
    """index of the largest element along ``dim`` (of the flattened x when dim is None); int64, no gradient"""
    return Tensor._make(x.data.argmax(axis=dim, keepdims=keepdim).astype(numpy.int64, copy=False), False, None, 0)


def argmin(x, dim=None, keepdim=False):
    """index of the smallest element along ``dim``; int64, no gradient"""
    return Tensor._make(x.data.argmin(axis=dim, keepdims=keepdim).astype(numpy.int64, copy=False), False, None, 0)


def var(x, dim=None, unbiased=True, keepdim=False):
    """sum (x - mean)^2 / (n - 1) (n when unbiased=False)"""
    return Var.apply(x, axis=_norm_axis(dim, x.ndim), ddof=1 if unbiased else 0, keepdims=keepdim)


def std(x, dim=None, unbiased=True, keepdim=False):
    """sqrt(var(x))"""
    return sqrt(var(x, dim, unbiased, keepdim))


def logsumexp(x, dim, keepdim=False):
    """log sum_dim exp(x), computed stably"""
    return LogSumExp.apply(x, axis=_norm_axis(dim, x.ndim), keepdims=keepdim)


def astype(x, dtype):
    """x cast to ``dtype``"""
    return AsType.apply(x, dtype=numpy.dtype(dtype))


def to_device(x, device):
    """x copied to ``device`` ("cpu" or "cuda")"""
    return ToDevice.apply(x, device="cuda" if str(device).startswith("cuda") else "cpu")
