"""Activations, softmax, dropout, linear layers, normalisation and losses."""
import math

import numpy

from ..backend import get_array_module
from ..tensor import Function, Tensor, get_rng
from . import math as M
from .conv import conv2d
from .shape import gather, reshape, squeeze, unsqueeze

__all__ = ["erf", "relu", "relu6", "leaky_relu", "sigmoid", "logsigmoid", "tanh", "softplus", "silu",
           "gelu", "hardswish", "hardsigmoid", "elu", "softmax", "log_softmax", "dropout",
           "linear", "conv1d", "layer_norm", "embedding", "one_hot", "mse_loss", "l1_loss", "nll_loss",
           "cross_entropy", "binary_cross_entropy", "binary_cross_entropy_with_logits", "gaussian_nll_loss",
           "kl_normal", "smooth_l1_loss", "hardtanh"]


def _erf(xp, x):
    """erf through scipy on NumPy arrays, cupyx.scipy on CuPy arrays."""
    if xp.__name__ == "numpy":
        from scipy.special import erf
    else:
        from cupyx.scipy.special import erf
    return erf(x)


class Erf(Function):
    """y = erf(x);  dx = g 2/sqrt(pi) e^(-x^2)"""
    def forward(self, x):
        self.x = x
        return _erf(get_array_module(x), x)

    def backward(self, g):
        return g * (2 / math.sqrt(math.pi)) * get_array_module(g).exp(-self.x * self.x)


class ReLU(Function):
    """y = max(x, 0);  dx = g [x > 0]"""
    def forward(self, x):
        self.mask = x > 0
        return x * self.mask

    def backward(self, g):
        return g * self.mask


class LeakyReLU(Function):
    """y = x if x > 0 else a x;  dx = g (1 if x > 0 else a)"""
    def forward(self, x, slope):
        xp = get_array_module(x)
        self.scale = xp.where(x > 0, 1, slope).astype(x.dtype)
        return x * self.scale

    def backward(self, g):
        return g * self.scale


class Sigmoid(Function):
    """y = 1 / (1 + e^-x);  dx = g y (1 - y)"""
    def forward(self, x):
        xp = get_array_module(x)
        self.y = 0.5 * (xp.tanh(0.5 * x) + 1)  # stable for large |x|
        return self.y

    def backward(self, g):
        return g * self.y * (1 - self.y)


class LogSigmoid(Function):
    """y = log sigmoid(x) = min(x, 0) - log(1 + e^-|x|);  dx = g (1 - sigmoid(x))"""
    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        return xp.minimum(x, 0) - xp.log1p(xp.exp(-xp.abs(x)))

    def backward(self, g):
        xp = get_array_module(g)
        return g * 0.5 * (1 - xp.tanh(0.5 * self.x))


class Tanh(Function):
    """y = tanh x;  dx = g (1 - y^2)"""
    def forward(self, x):
        self.y = get_array_module(x).tanh(x)
        return self.y

    def backward(self, g):
        return g * (1 - self.y * self.y)


class Softplus(Function):
    """y = log(1 + e^(b x)) / b (linear above ``threshold``);  dx = g sigmoid(b x)"""
    def forward(self, x, beta, threshold):
        xp = get_array_module(x)
        bx = beta * x
        self.s = xp.where(bx > threshold, 1, 0.5 * (xp.tanh(0.5 * bx) + 1))
        soft = (xp.maximum(bx, 0) + xp.log1p(xp.exp(-xp.abs(bx)))) / beta
        return xp.where(bx > threshold, x, soft)

    def backward(self, g):
        return g * self.s


class SiLU(Function):
    """y = x sigmoid(x);  dx = g (s + x s (1 - s))"""
    def forward(self, x):
        xp = get_array_module(x)
        self.x, self.s = x, 0.5 * (xp.tanh(0.5 * x) + 1)
        return x * self.s

    def backward(self, g):
        return g * self.s * (1 + self.x * (1 - self.s))


class GELU(Function):
    """y = x Phi(x) = x (1 + erf(x / sqrt 2)) / 2;  dx = g (Phi(x) + x phi(x))"""
    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        self.cdf = 0.5 * (1 + _erf(xp, x / math.sqrt(2)))
        return x * self.cdf

    def backward(self, g):
        xp = get_array_module(g)
        pdf = xp.exp(-0.5 * self.x * self.x) / math.sqrt(2 * math.pi)
        return g * (self.cdf + self.x * pdf)


class GELUTanh(Function):
    """y = x (1 + tanh(u)) / 2, u = sqrt(2/pi) (x + 0.044715 x^3);  dx by the chain rule"""
    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        self.t = xp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))
        return 0.5 * x * (1 + self.t)

    def backward(self, g):
        du = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * self.x ** 2)
        return g * (0.5 * (1 + self.t) + 0.5 * self.x * (1 - self.t ** 2) * du)


class HardSigmoid(Function):
    """y = clip(a x + b, 0, 1) (PyTorch: a = 1/6, b = 1/2);  dx = g a [0 < a x + b < 1]"""
    def forward(self, x, alpha, beta):
        xp = get_array_module(x)
        u = alpha * x + beta
        self.da = ((u > 0) & (u < 1)) * alpha
        return xp.clip(u, 0, 1)

    def backward(self, g):
        return g * self.da


class HardSwish(Function):
    """y = x relu6(x + 3) / 6;  dx = g (0 if x < -3, 1 if x > 3, else (2x + 3) / 6)"""
    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        return x * xp.clip(x + 3, 0, 6) / 6

    def backward(self, g):
        xp = get_array_module(g)
        x = self.x
        return g * xp.where(x < -3, 0, xp.where(x > 3, 1, (2 * x + 3) / 6))


class ELU(Function):
    """y = x if x > 0 else a (e^x - 1);  dx = g (1 if x > 0 else y + a)"""
    def forward(self, x, alpha):
        xp = get_array_module(x)
        self.pos = x > 0
        self.y = xp.where(self.pos, x, alpha * (xp.exp(xp.minimum(x, 0)) - 1))
        self.alpha = alpha
        return self.y

    def backward(self, g):
        xp = get_array_module(g)
        return g * xp.where(self.pos, 1, self.y + self.alpha)


class Softmax(Function):
    """y = e^(x - max) / sum e^(x - max);  dx = y (g - sum(g y))"""
    def forward(self, x, axis):
        xp = get_array_module(x)
        e = xp.exp(x - x.max(axis=axis, keepdims=True))
        self.y, self.axis = e / e.sum(axis=axis, keepdims=True), axis
        return self.y

    def backward(self, g):
        y = self.y
        return y * (g - (g * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    """y = x - logsumexp(x);  dx = g - softmax(x) sum(g)"""
    def forward(self, x, axis):
        xp = get_array_module(x)
        z = x - x.max(axis=axis, keepdims=True)
        y = z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))
        self.y, self.axis = y, axis
        return y

    def backward(self, g):
        xp = get_array_module(g)
        return g - xp.exp(self.y) * g.sum(axis=self.axis, keepdims=True)


class Dropout(Function):
    """y = x m / (1 - p), m ~ Bernoulli(1 - p);  dx = g m / (1 - p)"""
    def forward(self, x, p):
        xp = get_array_module(x)
        keep = get_rng().random(x.shape) >= p
        self.scale = xp.asarray(keep, dtype=x.dtype) / (1 - p)
        return x * self.scale

    def backward(self, g):
        return g * self.scale


class Linear(Function):
    """y = x W^T + b (x: ... x in, W: out x in);  dx = g W, dW = g^T x, db = sum g"""
    def forward(self, x, w, b=None):
        self.x, self.w = x, w
        y = x @ w.T
        if b is not None:
            y += b
        return y

    def backward(self, g):
        g = get_array_module(g).ascontiguousarray(g)          # BLAS needs real strides, not a broadcast view
        nx, nw = self.needs_input_grad[:2]
        g2 = g.reshape(-1, g.shape[-1])                       # N x out
        gx = g @ self.w if nx else None                        # ... x in
        gw = g2.T @ self.x.reshape(-1, self.x.shape[-1]) if nw else None  # out x in
        if len(self.needs_input_grad) == 3:
            return gx, gw, (g2.sum(axis=0) if self.needs_input_grad[2] else None)
        return gx, gw


class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * w + b over the last ``n`` axes;
    dx = (g' - mean(g') - xhat mean(g' xhat)) / sigma with g' = g w"""
    def forward(self, x, w, b, n, eps):
        xp = get_array_module(x)
        axes = tuple(range(x.ndim - n, x.ndim))
        mu = x.mean(axis=axes, keepdims=True)
        d = x - mu
        self.rstd = 1 / xp.sqrt((d * d).mean(axis=axes, keepdims=True) + eps)
        self.xhat, self.w, self.axes = d * self.rstd, w, axes
        return self.xhat * w + b

    def backward(self, g):
        lead = tuple(range(g.ndim - len(self.axes)))
        gw = (g * self.xhat).sum(axis=lead)
        gb = g.sum(axis=lead)
        gh = g * self.w
        gx = self.rstd * (gh - gh.mean(axis=self.axes, keepdims=True)
                          - self.xhat * (gh * self.xhat).mean(axis=self.axes, keepdims=True))
        return gx, gw, gb


class Embedding(Function):
    """y = W[idx];  dW = g added at the rows idx"""
    def forward(self, w, idx):
        self.idx, self.shape = idx, w.shape
        return w[idx]

    def backward(self, g):
        from .shape import scatter_add
        xp = get_array_module(g)
        gw = xp.zeros(self.shape, g.dtype)
        return scatter_add(xp, gw, self.idx.reshape(-1), g.reshape(-1, self.shape[1]))


# ---- activations -------------------------------------------------------------
def erf(x):
    """the error function 2/sqrt(pi) int_0^x e^(-t^2) dt"""
    return Erf.apply(x)


def relu(x):
    """max(x, 0)"""
    return ReLU.apply(x)


def relu6(x):
    """min(max(x, 0), 6) (no gradient at 0 and 6, as relu at 0 and PyTorch)"""
    return hardtanh(x, 0.0, 6.0)


def hardtanh(x, min_val=-1.0, max_val=1.0):
    """min(max(x, min_val), max_val), with no gradient at the bounds (as PyTorch; clamp passes it)"""
    return M.Clamp.apply(x, lo=min_val, hi=max_val, open=True)


def leaky_relu(x, negative_slope=0.01):
    """x if x > 0 else negative_slope * x"""
    return LeakyReLU.apply(x, slope=negative_slope)


def sigmoid(x):
    """1 / (1 + exp(-x))"""
    return Sigmoid.apply(x)


def logsigmoid(x):
    """log(sigmoid(x)), stable"""
    return LogSigmoid.apply(x)


def tanh(x):
    """tanh(x)"""
    return Tanh.apply(x)


def softplus(x, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, linear where beta x > threshold"""
    return Softplus.apply(x, beta=beta, threshold=threshold)


def silu(x):
    """x * sigmoid(x)"""
    return SiLU.apply(x)


def gelu(x, approximate="none"):
    """x Phi(x) (``approximate='tanh'``: the tanh approximation)"""
    if approximate == "tanh":
        return GELUTanh.apply(x)
    if approximate != "none":
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU.apply(x)


def hardsigmoid(x, alpha=1 / 6, beta=0.5):
    """clip(alpha x + beta, 0, 1) (PyTorch's alpha = 1/6; ONNX's default is 0.2)"""
    return HardSigmoid.apply(x, alpha=alpha, beta=beta)


def hardswish(x):
    """x relu6(x + 3) / 6"""
    return HardSwish.apply(x)


def elu(x, alpha=1.0):
    """x if x > 0 else alpha (exp(x) - 1)"""
    return ELU.apply(x, alpha=alpha)


def softmax(x, dim):
    """exp(x) / sum_dim exp(x), stable"""
    return Softmax.apply(x, axis=dim % x.ndim)


def log_softmax(x, dim):
    """x - logsumexp_dim(x)"""
    return LogSoftmax.apply(x, axis=dim % x.ndim)


def dropout(x, p=0.5, training=True):
    """zero each element with probability p and scale the rest by 1/(1-p) (identity when not training)"""
    if not 0 <= p < 1:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    return Dropout.apply(x, p=p)


# ---- layers --------------------------------------------------------------------
def linear(x, weight, bias=None):
    """x @ weight.T + bias (weight: out_features x in_features)"""
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input shape {tuple(x.shape)} has {x.shape[-1]} features, "
                         f"weight shape {tuple(weight.shape)} expects {weight.shape[1]}")
    return Linear.apply(x, weight) if bias is None else Linear.apply(x, weight, bias)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """conv2d on a height-1 image (torch.nn.functional.conv1d): input B x C x L, weight O x C/groups x K;
    padding an int, (p,), 'same' or 'valid'"""
    if input.ndim != 3 or weight.ndim != 3:
        raise ValueError(f"conv1d: expected 3-D input and weight, got {tuple(input.shape)} and {tuple(weight.shape)}")
    one = lambda v: int(v[0]) if isinstance(v, (tuple, list)) else int(v)  # noqa: E731
    pad = padding if isinstance(padding, str) else (0, one(padding))
    y = conv2d(unsqueeze(input, 2), unsqueeze(weight, 2), bias, (1, one(stride)), pad, (1, one(dilation)), groups)
    return squeeze(y, 2)                                                    # B x O x L'


def layer_norm(x, normalized_shape, weight, bias, eps=1e-5):
    """(x - mean) / sqrt(var + eps) * weight + bias over the trailing ``normalized_shape``"""
    n = len(normalized_shape) if isinstance(normalized_shape, (tuple, list)) else 1
    if tuple(x.shape[x.ndim - n:]) != tuple(weight.shape):
        raise ValueError(f"layer_norm: input shape {tuple(x.shape)} does not end in {tuple(weight.shape)}")
    return LayerNorm.apply(x, weight, bias, n=n, eps=eps)


def embedding(input, weight):
    """weight[input] (input: integer indices)"""
    idx = input.data if isinstance(input, Tensor) else input
    return Embedding.apply(weight, idx=get_array_module(weight.data).asarray(idx))


def one_hot(tensor, num_classes=-1):
    """int64 tensor of shape (*tensor.shape, num_classes) with a 1 at each class index
    (num_classes -1: the largest index + 1)"""
    t = tensor.data
    if t.dtype.kind not in "iu":
        raise TypeError(f"one_hot: expected an integer tensor of class indices, got dtype {t.dtype}")
    n = (int(t.max()) + 1 if t.size else 0) if num_classes < 0 else int(num_classes)
    if t.size and (int(t.min()) < 0 or int(t.max()) >= n):
        raise ValueError(f"one_hot: class values must lie in [0, {n}), got [{int(t.min())}, {int(t.max())}]")
    xp = get_array_module(t)
    return Tensor._make((t[..., None] == xp.arange(n)).astype(numpy.int64), False, None, 0)


# ---- losses ---------------------------------------------------------------------
def _reduce(loss, reduction):
    if reduction == "mean":
        return M.mean(loss)
    if reduction == "sum":
        return M.sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_same(a, b, name):
    if a.shape != b.shape:
        raise ValueError(f"{name}: input shape {tuple(a.shape)} != target shape {tuple(b.shape)}")


def mse_loss(input, target, reduction="mean"):
    """mean (input - target)^2"""
    _check_same(input, target, "mse_loss")
    return _reduce(M.square(input - target), reduction)


def l1_loss(input, target, reduction="mean"):
    """mean |input - target|"""
    _check_same(input, target, "l1_loss")
    return _reduce(M.abs(input - target), reduction)


def smooth_l1_loss(input, target, beta=1.0, reduction="mean"):
    """0.5 d^2 / beta if |d| < beta else |d| - 0.5 beta, with d = input - target"""
    _check_same(input, target, "smooth_l1_loss")
    d = M.abs(input - target)
    return _reduce(M.where(d.data < beta, 0.5 * M.square(d) / beta, d - 0.5 * beta), reduction)


def binary_cross_entropy(input, target, weight=None, reduction="mean", eps=1e-12):
    """-w (t log p + (1 - t) log(1 - p)), p clamped to [eps, 1 - eps]"""
    _check_same(input, target, "binary_cross_entropy")
    p = M.clamp(input, eps, 1 - eps)
    loss = -(target * M.log(p) + (1 - target) * M.log(1 - p))
    return _reduce(loss if weight is None else loss * weight, reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """-w (q t log sigmoid(x) + (1 - t) log sigmoid(-x)), stable; q = pos_weight (broadcast over the
    last axis, the classes), w = weight"""
    _check_same(input, target, "binary_cross_entropy_with_logits")
    pos = target * logsigmoid(input)
    loss = -((pos if pos_weight is None else pos * pos_weight) + (1 - target) * logsigmoid(-input))
    return _reduce(loss if weight is None else loss * weight, reduction)


def _class_targets(input, target, weight, ignore_index, name):
    """(t, w, keep): class indices N [x d...] for input N x C [x d...] (ignored entries set to 0),
    each entry's weight weight[t] (1 without weight; 0 where ignored), and target != ignore_index"""
    xp = get_array_module(input.data)
    t = xp.asarray(target.data if isinstance(target, Tensor) else target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name}: target must hold class indices (an integer tensor), got dtype {t.dtype}; "
                        f"float targets of the input's shape are class probabilities (cross_entropy only)")
    if t.shape != input.shape[:1] + input.shape[2:]:
        raise ValueError(f"{name}: target shape {tuple(t.shape)} does not match input {tuple(input.shape)} "
                         f"(expected {tuple(input.shape[:1] + input.shape[2:])})")
    C = input.shape[1]
    keep = t != ignore_index
    bad = keep & ((t < 0) | (t >= C))
    if bad.any():
        raise IndexError(f"{name}: target {int(t[bad][0])} is out of bounds for {C} classes")
    t = xp.where(keep, t, 0)
    w = keep.astype(input.dtype) if weight is None else weight.data[t] * keep
    return t, Tensor._make(w, False, None, 0), keep


def _weighted_mean(loss, w, reduction):
    """sum(loss) / sum(w) for 'mean' (PyTorch's weighted mean), else _reduce"""
    return M.sum(loss) / M.sum(w) if reduction == "mean" else _reduce(loss, reduction)


def _batched(input, target, fn, reduction):
    """fn(input, target as a tensor), on a batch of one when input is a single sample (C,)."""
    target = target if isinstance(target, Tensor) else Tensor(target)
    if input.ndim != 1:
        return fn(input, target)
    loss = fn(unsqueeze(input, 0), unsqueeze(target, 0))
    return squeeze(loss, 0) if reduction == "none" else loss


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """-w[t] input[n, t] for each sample n with class t = target[n]; input: log-probabilities N x C
    [x d1 ...], target N [x d1 ...]; 'mean' divides by the sum of w[t] over the samples kept
    (target != ignore_index), as PyTorch"""
    def nll(input, target):
        t, w, _ = _class_targets(input, target, weight, ignore_index, "nll_loss")
        picked = squeeze(gather(input, 1, unsqueeze(Tensor._make(t, False, None, 0), 1)), 1)  # N [x d...]
        return _weighted_mean(-picked * w, w, reduction)
    return _batched(input, target, nll, reduction)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """nll_loss(log_softmax(input, 1), target) for class indices; for class probabilities (a float
    target of input's shape) -sum_c w[c] target[c] log_softmax(input)[c], 'mean' over the samples.
    label_smoothing e mixes in the uniform target: (1 - e) nll + e / C (-sum_c w[c] log p[c])
    (Szegedy et al. 2016, Sec. 7), reduced as PyTorch does"""
    def ce(input, target):
        C, e = input.shape[1], label_smoothing
        logp = log_softmax(input, 1)                                        # N x C [x d...]
        w = None if weight is None else reshape(weight, (1, C) + (1,) * (input.ndim - 2))
        wlogp = logp if w is None else logp * w
        if target.dtype.kind == "f":                                        # class probabilities
            _check_same(input, target, "cross_entropy")
            per = -M.sum(wlogp * (target * (1 - e) + e / C if e else target), 1)   # N [x d...]
            return M.sum(per) / (per.data.size or 1) if reduction == "mean" else _reduce(per, reduction)
        loss = nll_loss(logp, target, weight, ignore_index, reduction)
        if not e:
            return loss
        _, w, keep = _class_targets(input, target, weight, ignore_index, "cross_entropy")
        smooth = -M.sum(wlogp, 1) * Tensor._make(keep.astype(input.dtype), False, None, 0)  # N [x d...]
        return (1 - e) * loss + _weighted_mean(smooth, w, reduction) * (e / C)
    return _batched(input, target, ce, reduction)


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):
    """0.5 (log max(var, eps) + (input - target)^2 / max(var, eps)) (+ 0.5 log 2 pi when full), as PyTorch"""
    _check_same(input, target, "gaussian_nll_loss")
    v = M.clamp(var, eps, None) if isinstance(var, Tensor) else max(var, eps)
    loss = 0.5 * (M.log(v) + M.square(input - target) / v) if isinstance(v, Tensor) \
        else 0.5 * (math.log(v) + M.square(input - target) / v)
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return _reduce(loss, reduction)


def kl_normal(mu, logvar, reduction="sum"):
    """KL(N(mu, e^logvar) || N(0, I)) = -0.5 sum (1 + logvar - mu^2 - e^logvar) (Kingma & Welling, App. B)"""
    _check_same(mu, logvar, "kl_normal")
    return _reduce(-0.5 * (1 + logvar - M.square(mu) - M.exp(logvar)), reduction)
