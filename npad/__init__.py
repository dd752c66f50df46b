"""npad: a readable deep-learning library on NumPy (CuPy on a GPU) and four
visual anomaly-detection methods built on it (CFLOW-AD, ADTR, FAVAE and
gradient attention maps of VAEs).

>>> import npad
>>> x = npad.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
>>> y = (x * x).sum()
>>> y.backward()
>>> x.grad.numpy().tolist()
[[2.0, 4.0], [6.0, 8.0]]
"""
from .backend import get_array_module, set_device, get_device, to_cpu, to_gpu, cupy_available
from .tensor import (Tensor, tensor, as_tensor, no_grad, enable_grad, is_grad_enabled, zeros, ones,
                     empty, full, zeros_like, ones_like, arange, from_numpy, randn, rand,
                     manual_seed, set_default_dtype, get_default_dtype)
from . import functional
from .functional import (cat, stack, where, maximum, minimum, matmul, exp, log, sqrt, sigmoid,
                         tanh, relu, softmax, log_softmax)
from . import nn, optim

__version__ = "0.1.0"
