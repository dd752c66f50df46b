"""Write npad/_cupy_names.py: CuPy's public namespace, as the strict stand-in (npad/strict_cupy.py) mirrors it.

CuPy imports without a GPU, so this runs anywhere the wheel installs (about 300 MB, not needed in CI):

    pip install --target /tmp/cupy_probe cupy-cuda12x cuda-pathfinder
    PYTHONPATH=/tmp/cupy_probe python tools/cupy_names.py

It records, for cupy, its submodules and cupyx (the parts npad imports), each public name with
  - its kind: module, ufunc, function, class, numpy (an object CuPy re-exports from NumPy), const, object;
  - its signature: from inspect for Python functions, from the signature Cython embeds in the
    docstring for compiled ones (types such as ``_ndarray_base`` dropped);
  - for functions written in Python, the parameters CuPy itself passes through cupy.asarray/array
    (those accept host arrays, e.g. einsum's operands); every other parameter refuses them;
and the attributes and method signatures of cupy.ndarray.
"""
import builtins
import inspect
import pprint
import re
import sys
import types
import warnings
from pathlib import Path

import numpy

import cupy
import cupyx
import cupyx.scipy.ndimage
import cupyx.scipy.special

MODULES = ["cupy", "cupy.linalg", "cupy.fft", "cupy.random", "cupy.lib", "cupy.lib.stride_tricks", "cupy.cuda",
           "cupy.cuda.runtime", "cupy.exceptions",
           "cupyx", "cupyx.scipy", "cupyx.scipy.special", "cupyx.scipy.ndimage"]
NO_PROBE = {"save", "savez", "savez_compressed", "savetxt", "load", "loadtxt", "genfromtxt", "fromfile", "disp",
            "set_printoptions", "set_string_function", "show_config", "who", "seterr", "printoptions"}
CONVERT = re.compile(r"\b(?:cupy|_core|core)\.(?:asarray|asanyarray|array|atleast_[123]d)\(\s*\*?(\w+)\b")
CONVERT_EACH = re.compile(r"\b(?:cupy|_core|core)\.(?:asarray|asanyarray|array|atleast_[123]d)\(\s*(\w+)\s*\)\s*"
                          r"for\s+\1\s+in\s+(\w+)\b")
CYTHON_TYPE = re.compile(r"^(?:_ndarray_base|ndarray|int|Py_ssize_t|bint|str|tuple|list|dict|object|double|"
                         r"size_t|intptr_t|unsigned int|bool)\s+(?=\w)")


def _params(text):
    """'f(self, int axis=-1, /, *, x=None) -> t' -> 'axis=-1, /, *, x=None' (self and Cython types dropped),
    or None when it is no signature Python can parse."""
    m = re.match(r"^[\w.]*?(\w+)\((.*)\)(?:\s*->.*)?$", text.strip())
    if not m:
        return None
    parts = [CYTHON_TYPE.sub("", p.strip()).replace("\\*", "*") for p in m.group(2).split(",") if p.strip()]
    parts = [p for p in parts if p != "self"]
    params = ", ".join(parts)
    try:
        eval(f"lambda {params}: None", {"numpy": numpy})
    except Exception:
        return None
    return params


def _default(value):
    """A default as source text: its repr when that evaluates back, else ``...`` (only binding needs it)."""
    if isinstance(value, type) and getattr(builtins, value.__name__, None) is value:
        return value.__name__
    try:
        eval(repr(value), {"numpy": numpy})
        return repr(value)
    except Exception:
        return "..."


def _signature(obj):
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        doc = (getattr(obj, "__doc__", None) or "").lstrip().split("\n", 1)[0]
        return _params(doc)
    parts, kinds = [], [p.kind for p in sig.parameters.values()]
    for i, p in enumerate(sig.parameters.values()):
        if p.kind == p.KEYWORD_ONLY and (i == 0 or kinds[i - 1] not in (p.KEYWORD_ONLY, p.VAR_POSITIONAL)):
            parts.append("*")
        star = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        parts.append(star + p.name + ("" if p.default is p.empty else "=" + _default(p.default)))
        if p.kind == p.POSITIONAL_ONLY and (i + 1 == len(kinds) or kinds[i + 1] != p.POSITIONAL_ONLY):
            parts.append("/")
    return ", ".join(parts)


def _numpy_name(obj, name):
    """Where NumPy keeps ``obj``: its top-level name if it has one, else module.qualname."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if getattr(numpy, name, object()) is obj:
            return name
        for n in dir(numpy):
            if getattr(numpy, n, None) is obj:
                return n
    return f"{obj.__module__}.{obj.__qualname__}"


def _host_params(fn):
    """Parameters that CuPy's Python source converts with cupy.asarray/array (they take host arrays)."""
    try:
        src = inspect.getsource(fn)
        names = list(inspect.signature(fn).parameters)
    except (OSError, TypeError, ValueError):
        return ()
    body = src.split('"""')[-1] if src.count('"""') >= 2 else src
    found = {m.group(1) for m in CONVERT.finditer(body)} | {m.group(2) for m in CONVERT_EACH.finditer(body)}
    if fn.__name__.endswith("_like") or _reads_metadata(fn):
        found.add(names[0])     # they read only the shape or dtype of their first argument
    return tuple(n for n in names if n in found)


def _reads_metadata(fn):
    """True when fn(host array) answers without touching the device and with no array (shape, ndim,
    result_type...): a host argument is fine there."""
    if fn.__name__ in NO_PROBE:
        return False
    try:
        out = fn(numpy.ones((2, 3)))
    except Exception:
        return False
    return not isinstance(out, (numpy.ndarray, numpy.generic))


def _entry(mod, name):
    obj = getattr(mod, name)
    if isinstance(obj, types.ModuleType):
        return ("module",)
    if isinstance(obj, cupy.ufunc) or type(obj).__name__ == "ufunc":
        return ("ufunc", _signature(obj))
    if (getattr(obj, "__module__", None) or type(obj).__module__).startswith("numpy"):
        return ("numpy", _numpy_name(obj, name))
    if isinstance(obj, type):
        return ("class", _signature(obj))
    if callable(obj):
        return ("function", _signature(obj), _host_params(obj))
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return ("const", repr(obj))     # repr: inf and nan are no Python literals
    return ("object",)


def main(out=Path(__file__).resolve().parents[1] / "npad" / "_cupy_names.py"):
    namespace = {}
    for path in MODULES:
        mod = sys.modules.get(path) or __import__(path, fromlist=["_"])
        namespace[path] = {n: _entry(mod, n) for n in sorted(dir(mod)) if not n.startswith("_") and n != "annotations"}
    ndarray = {}
    for n in sorted(dir(cupy.ndarray)):
        if n.startswith("_") and n not in ("__dlpack__", "__dlpack_device__", "__cuda_array_interface__"):
            continue
        attr = inspect.getattr_static(cupy.ndarray, n)
        ndarray[n] = ("attribute",) if type(attr).__name__ == "getset_descriptor" else ("method", _signature(attr))
    text = (f'"""CuPy {cupy.__version__}\'s public namespace, for the strict stand-in npad/strict_cupy.py.\n\n'
            f'Generated by tools/cupy_names.py (see there how to rerun it); do not edit by hand.\n"""\n'
            f"CUPY_VERSION = {cupy.__version__!r}\n\n"
            f"NAMESPACE = {pprint.pformat(namespace, width=118, compact=True)}\n\n"
            f"NDARRAY = {pprint.pformat(ndarray, width=118, compact=True)}\n")
    out.write_text(text)
    print(f"wrote {out}: {sum(map(len, namespace.values()))} names of CuPy {cupy.__version__}")


if __name__ == "__main__":
    main()
