"""A strict CuPy stand-in: NumPy underneath, CuPy's rules on top, so CI finds NumPy-only paths without a GPU.

    from npad.testing import use_strict_cupy
    cp = use_strict_cupy()          # in this process, device "cuda" now means this module
    npad.set_device("cuda")         # every new tensor lives on the stand-in

or run the test suite on it: ``NPAD_TEST_XP=strict python -m pytest tests``.

Its arrays (``ndarray``: a wrapper around a NumPy array, not a subclass, so NumPy cannot see through
it) behave as CuPy's where code that works on NumPy would break on a GPU:

- ``numpy.asarray(a)``, ``numpy.array(a)``, ``numpy.float32(a)``: TypeError (CuPy's ``__array__``).
  ``a.get()``, ``asnumpy(a)`` and ``npad.backend.to_cpu(a)`` are the ways back.
- A host ``numpy.ndarray`` in a ufunc, an operator or a function: TypeError; a list in a ufunc or an
  operator too. Python and NumPy scalars are fine. Functions that CuPy writes in Python over
  ``cupy.asarray`` take host arrays in the parameters CuPy converts (einsum's operands, isclose,
  vstack, tile, the ``*_like``...), and functions that only read a shape or dtype take them too.
  Where CuPy would quietly run a host array through NumPy (``cupy.sum(host)`` calls ``host.sum()``)
  the stand-in refuses: the host array is the bug.
- NumPy functions on stand-in arrays go to this module's namesake through ``__array_function__``
  and ``__array_ufunc__``, with CuPy's rules; NumPy functions CuPy lacks raise TypeError.
- Reductions and integer indexing give 0-d arrays, never NumPy scalars.
- ``a[basic index] = host array``: ValueError (CuPy's ``fill()``); index arrays, and the values of
  an advanced-index assignment, may be on the host (CuPy copies them).
- The namespace is CuPy's, read from cupy-cuda12x into ``npad/_cupy_names.py`` by
  ``tools/cupy_names.py``: a name CuPy lacks raises AttributeError, an argument CuPy's signature
  lacks raises TypeError, and a CuPy name the stand-in does not emulate raises NotImplementedError
  when used. CUDA kernels (``RawKernel``, ``ElementwiseKernel``, ``ReductionKernel``,
  ``RawModule``) are among those: GPU kernels must fall back to the reference path here.

Not emulated: devices, streams and memory (``cuda`` holds stubs enough for choosing a device),
CuPy's wrap-around of out-of-bounds advanced indices, results whose dtype or rounding differ from
NumPy's. The rules are CuPy's own, read in cupy/_core/core.pyx (``__array__``, ``__array_ufunc__``,
``__array_function__``, ``fill``), _kernel.pyx (ufunc operands) and _routines_indexing.pyx.
"""
import sys as _sys

from . import _strict_cupy_impl

_strict_cupy_impl.fill(_sys.modules[__name__])
del _sys
