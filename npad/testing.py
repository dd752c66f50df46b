"""Test helpers: float64 central-difference gradient checks, and the strict CuPy stand-in.

``gradcheck(fn, *arrays)`` compares the gradients that backward gives for
L = sum(fn(x1, x2, ...) * w) (w a fixed random weight) with central differences
(L(x + h e_i) - L(x - h e_i)) / 2h, element by element; ``direction=True``
checks one random direction d instead, dL/dx . d, which stays cheap for big tensors.

``use_strict_cupy()`` makes device "cuda" mean ``npad.strict_cupy``, a CuPy stand-in that refuses
what CuPy refuses (host arrays mixed in, implicit conversion to NumPy), so code can be checked for
NumPy-only paths without a GPU.
"""
import sys

import numpy

from . import backend
from .backend import get_array_module, to_cpu
from .tensor import Tensor


def use_strict_cupy():
    """From now on in this process, device "cuda" (``set_device``, ``to_gpu``, ``Tensor(..., device=...)``)
    means the strict CuPy stand-in ``npad.strict_cupy``, and ``import cupyx`` its cupyx; returns the module.
    Call ``npad.set_device("cuda")`` as well to put every new tensor there. For tests only: it replaces a
    real CuPy in this process."""
    from . import strict_cupy
    backend._cupy, backend._cupy_error = strict_cupy, None
    sys.modules.update(strict_cupy._strict_cupy_impl._cupyx_modules())
    return strict_cupy


def _loss(fn, arrays, w):
    out = fn(*[Tensor(a) for a in arrays])
    outs = out if isinstance(out, (tuple, list)) else [out]
    return sum(float((to_cpu(o.data).astype(numpy.float64) * wi).sum()) for o, wi in zip(outs, w))


def gradcheck(fn, *arrays, eps=1e-6, atol=1e-6, rtol=1e-5, direction=False, seed=0, wrt=None):
    """Assert that backward's gradients of ``fn`` match central differences in float64.

    ``arrays``: float64 inputs (NumPy or CuPy); ``wrt``: indices of the inputs to check (default all
    floating ones). Returns the analytic gradients."""
    rng = numpy.random.default_rng(seed)
    arrays = [a for a in arrays]
    for a in arrays:
        if a.dtype.kind == "f" and a.dtype != numpy.float64:
            raise TypeError(f"gradcheck needs float64 inputs, got {a.dtype}")
    wrt = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"] if wrt is None else list(wrt)
    ts = [Tensor(a, requires_grad=i in wrt) for i, a in enumerate(arrays)]
    out = fn(*ts)
    outs = out if isinstance(out, (tuple, list)) else [out]
    w = [rng.standard_normal(o.shape) for o in outs]
    loss = None
    for o, wi in zip(outs, w):
        xp = get_array_module(o.data)
        term = (o * Tensor(xp.asarray(wi))).sum()
        loss = term if loss is None else loss + term
    loss.backward()
    grads = {}
    for i in wrt:
        g = ts[i].grad
        analytic = numpy.zeros(arrays[i].shape) if g is None else to_cpu(g.data)
        grads[i] = analytic
        xp = get_array_module(arrays[i])
        base = arrays[i]
        if direction:
            d = rng.standard_normal(base.shape)
            plus = [a if j != i else base + eps * xp.asarray(d) for j, a in enumerate(arrays)]
            minus = [a if j != i else base - eps * xp.asarray(d) for j, a in enumerate(arrays)]
            num = (_loss(fn, plus, w) - _loss(fn, minus, w)) / (2 * eps)
            ana = float((analytic * d).sum())
            if not abs(num - ana) <= atol + rtol * abs(num):
                raise AssertionError(f"gradcheck input {i} (shape {tuple(base.shape)}): directional "
                                     f"derivative {ana} from backward, {num} from central differences")
            continue
        flat = to_cpu(base).astype(numpy.float64).ravel()
        num = numpy.zeros_like(flat)
        for k in range(flat.size):
            orig = flat[k]
            flat[k] = orig + eps
            lp = _loss(fn, [a if j != i else xp.asarray(flat.reshape(base.shape)) for j, a in enumerate(arrays)], w)
            flat[k] = orig - eps
            lm = _loss(fn, [a if j != i else xp.asarray(flat.reshape(base.shape)) for j, a in enumerate(arrays)], w)
            flat[k] = orig
            num[k] = (lp - lm) / (2 * eps)
        num = num.reshape(base.shape)
        if not numpy.allclose(analytic, num, atol=atol, rtol=rtol):
            err = numpy.abs(analytic - num)
            k = numpy.unravel_index(err.argmax(), err.shape)
            raise AssertionError(f"gradcheck input {i} (shape {tuple(base.shape)}): max error {err.max():.3g} "
                                 f"at {k}: backward {analytic[k]:.8g}, central differences {num[k]:.8g}")
    return grads
