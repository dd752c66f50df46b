"""Array backend: NumPy on the CPU, CuPy on an NVIDIA GPU.

Every op starts with ``xp = get_array_module(x)`` so that one piece of code
runs on both. The device that new tensors are made on is chosen by
``set_device("cpu" | "cuda")`` or the environment variable ``NPAD_DEVICE``.
CuPy is imported lazily; if it was asked for and cannot be used, the error says
why (the original import error is kept as ``__cause__``).

npad's thread pool and OpenBLAS control live in ``npad._threads``; their names are
re-exported here: ``get_num_threads``, ``set_num_threads``, ``parallel_over``,
``batch_slices``, ``blas_threads``, and ``tune_cpu`` (the one call that changes
OpenBLAS settings, made by the examples and the command line) with ``cpu_tuned``.
"""
import os

import numpy

from ._threads import (batch_slices, blas_threads, cpu_tuned, get_num_threads, parallel_over,  # noqa: F401
                       set_num_threads, tune_cpu)

_cupy = None            # the cupy module once imported
_cupy_error = None      # why importing cupy failed, kept for later messages
_device = None          # "cpu" or "cuda", resolved lazily from NPAD_DEVICE


def _import_cupy():
    global _cupy, _cupy_error
    if _cupy is None and _cupy_error is None:
        try:
            import cupy
            cupy.cuda.runtime.getDeviceCount()  # raises when there is no GPU/driver
            _cupy = cupy
        except Exception as e:  # ImportError, CUDARuntimeError, ...
            _cupy_error = e
    return _cupy


def cupy_available():
    """True when CuPy imports and sees a GPU."""
    return _import_cupy() is not None


def require_cupy():
    """Return the cupy module or raise a RuntimeError saying why it cannot be used."""
    cp = _import_cupy()
    if cp is None:
        raise RuntimeError(
            f"device 'cuda' was requested but CuPy cannot be used: "
            f"{type(_cupy_error).__name__}: {_cupy_error}. "
            f"Install it with `pip install npad[gpu]` (cupy-cuda12x) on a machine with an NVIDIA GPU."
        ) from _cupy_error
    return cp


def set_device(device):
    """Choose where new tensors live: "cpu" (NumPy) or "cuda" (CuPy)."""
    global _device
    device = _check_device(device)
    if device == "cuda":
        require_cupy()
    _device = device


def get_device():
    """The current default device, "cpu" or "cuda" (from set_device or NPAD_DEVICE)."""
    global _device
    if _device is None:
        env = os.environ.get("NPAD_DEVICE", "cpu")
        try:
            set_device(env)
        except ValueError as e:
            raise ValueError(f"NPAD_DEVICE: {e}") from None
    return _device


def _check_device(device):
    device = str(device).lower()
    if device.startswith("cuda"):
        return "cuda"
    if device != "cpu":
        raise ValueError(f"unknown device {device!r}; use 'cpu' or 'cuda'")
    return device


def default_xp():
    """The array module of the default device."""
    return require_cupy() if get_device() == "cuda" else numpy


def device_xp(device):
    """The array module of ``device`` ("cpu" or "cuda")."""
    return require_cupy() if _check_device(device) == "cuda" else numpy


def is_cupy_array(a):
    """True for a CuPy ndarray, without importing CuPy."""
    return type(a).__module__.startswith("cupy")


def get_array_module(*arrays):
    """cupy if any argument is a CuPy array (or a Tensor holding one), else numpy."""
    for a in arrays:
        if is_cupy_array(a) or is_cupy_array(getattr(a, "data", None)):
            return _cupy
    return numpy


def to_cpu(a):
    """A NumPy array holding ``a`` (copies from the GPU when needed)."""
    if is_cupy_array(a):
        return a.get()
    return numpy.asarray(a)


def to_gpu(a):
    """A CuPy array holding ``a``."""
    cp = require_cupy()
    return cp.asarray(a)


def to_device(a, device):
    """``a`` moved to ``device`` ("cpu" or "cuda")."""
    return to_gpu(a) if _check_device(device) == "cuda" else to_cpu(a)
