"""npad: a readable deep-learning library on NumPy (CuPy on a GPU) and four
visual anomaly-detection methods built on it (CFLOW-AD, ADTR, FAVAE and
gradient attention maps of VAEs), with PaDiM as a reference.

Autograd in a few lines:

>>> import npad
>>> x = npad.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
>>> (x * x).sum().backward()
>>> x.grad.numpy().tolist()
[[2.0, 4.0], [6.0, 8.0]]

A method end to end (a tiny run; see examples/ for real budgets):

>>> import numpy as np, npad.methods
>>> rng = np.random.default_rng(0)
>>> normal = 0.5 + 0.05 * rng.standard_normal((16, 3, 64, 64)).astype(np.float32)
>>> model = npad.methods.get("padim")(input_size=64)
>>> model.fit(normal, quiet=True)                           # doctest: +ELLIPSIS
PaDiM(method='padim', backbone='efficientnet_lite0', input_size=64x64, fitted, threshold=... (max, or median + 4 robust std ...))
>>> test = normal[:2].copy(); test[1, :, 20:40, 20:40] = 1.0   # image 1 gets a white square
>>> scores, maps = model.predict(test)
>>> bool(scores[1] > scores[0]), maps.shape
(True, (2, 64, 64))
"""
from .backend import (get_array_module, set_device, get_device, to_cpu, to_gpu, cupy_available, set_num_threads,
                      get_num_threads, tune_cpu)
from .tensor import (Tensor, tensor, as_tensor, no_grad, enable_grad, is_grad_enabled, zeros, ones,
                     empty, full, full_like, zeros_like, ones_like, arange, from_numpy, randn, rand,
                     manual_seed, set_default_dtype, get_default_dtype)
from . import functional
from .functional import (cat, stack, where, maximum, minimum, matmul, exp, log, sqrt, abs, sigmoid,
                         tanh, relu, softmax, log_softmax, sum, mean, max, min, amax, amin, argmax, argmin,
                         logsumexp, var, std, clamp, clone, gather, sort, argsort, topk, flatten, reshape,
                         squeeze, unsqueeze, transpose, permute)
from . import nn, optim, utils
from .serialization import save, load

# dtypes with torch's names (NumPy's scalar types: npad.tensor(x, dtype=npad.long), t.to(npad.float64))
from numpy import float16, float32, float64, int8, int16, int32, int64, uint8  # noqa: E402
half, double, short, long = float16, float64, int16, int64
_SHADOWING = {"bool": __import__("numpy").bool_, "int": int32, "float": float32}


def __getattr__(name):
    """npad.bool, npad.int, npad.float (as torch's) without hiding Python's bool/int/float in this module"""
    if name in _SHADOWING:
        return _SHADOWING[name]
    raise AttributeError(f"module 'npad' has no attribute {name!r}")


__version__ = "0.1.0"
