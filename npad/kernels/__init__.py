"""Fast kernels beside the reference ops of ``npad.functional``.

The reference (``npad/functional/conv.py``) is the definition. A kernel here computes the same
numbers faster for some shapes on one backend, forward and backward as a pair (the backward uses
what its own forward kept), and is tested equal to the reference over the shapes it serves
(``tests/test_kernels.py``). ``conv2d_kernel`` is the one place that picks a convolution kernel
(``cpu.py``), ``flow_kernel`` the unrecorded forward of a coupling flow that scoring uses
(``flows.py``): a kernel, or None and the reference runs. Deleting this folder leaves npad working,
slower.

The reference alone runs when the environment has ``NPAD_REFERENCE=1`` (read at every decision) or
after ``use_reference(True)``, which also works as a context manager::

    with npad.kernels.use_reference():
        y = F.conv2d(x, w)          # im2col + one GEMM, as written in functional/conv.py
"""
import os

import numpy

from . import cpu

__all__ = ["conv2d_kernel", "flow_kernel", "use_reference", "reference_only"]

_forced = None          # True / False from use_reference; None: NPAD_REFERENCE decides


def reference_only():
    """True when the reference ops must run: use_reference(True), else NPAD_REFERENCE set and not 0."""
    if _forced is not None:
        return _forced
    return os.environ.get("NPAD_REFERENCE", "").strip() not in ("", "0")


class use_reference:
    """``use_reference(True)``: run the reference ops only from now on (False: the kernels again,
    None: NPAD_REFERENCE decides). As a context manager the previous choice comes back at the end."""

    def __init__(self, on=True):
        global _forced
        self._before, _forced = _forced, (None if on is None else bool(on))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        global _forced
        _forced = self._before


def conv2d_kernel(x, w, stride, pads, dilation, groups, out_size):
    """The kernel that computes conv2d(x, w) with these settings (x B x C x H x W, w O x C/groups x KH x KW,
    pads (top, bottom, left, right), out_size (Ho, Wo)), or None for the reference. NumPy arrays only."""
    if not isinstance(x, numpy.ndarray) or reference_only():
        return None
    C, (O, _, KH, KW) = x.shape[1], w.shape
    geometry = (x.shape, w.shape, stride, pads, dilation, out_size)
    if groups > 1:
        return cpu.Depthwise(*geometry) if groups == C == O else None
    if KH == KW == 1 and stride == (1, 1) and not any(pads):
        return cpu.Pointwise(*geometry)
    if KH > 1 and stride == (1, 1):
        return cpu.KernelRows(*geometry)
    return cpu.Im2colGemm(*geometry)


def flow_kernel(flow, x):
    """The kernel that runs ``flow`` (an ``npad.flows.SequenceFlow``) forward on the NumPy array x
    without a graph (``kernels.flows.CouplingFlow``), or None for the module itself."""
    if not isinstance(x, numpy.ndarray) or reference_only():
        return None
    from .flows import CouplingFlow
    return CouplingFlow.for_flow(flow)
