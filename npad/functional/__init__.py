"""Differentiable ops with PyTorch's names (``import npad.functional as F``).

math: arithmetic, matmul, reductions; shape: views, indexing, cat/split, pad;
nn: activations, softmax, dropout, linear, layer_norm, losses.
"""
from .math import *   # noqa: F401,F403
from .shape import *  # noqa: F401,F403
from .nn import *     # noqa: F401,F403
from .conv import *  # noqa
from .image import *  # noqa
