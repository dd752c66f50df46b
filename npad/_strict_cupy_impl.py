"""The machinery of the strict CuPy stand-in; its namespace is npad/strict_cupy.py (read that first).

Kept apart so that CuPy's names there (all, any, sum, max, bool...) never shadow Python's here."""
import ast as _ast
import importlib as _importlib
import inspect as _inspect
import types as _types
import warnings as _warnings

import numpy as _np

from ._cupy_names import CUPY_VERSION as _VERSION, NAMESPACE as _NAMESPACE, NDARRAY as _NDARRAY

_SCALARS = (int, float, bool, complex, _np.generic)   # what CuPy takes beside its arrays (_kernel.pyx)


def _wrap(a):
    """A stand-in array holding the NumPy array ``a`` (no copy)."""
    out = object.__new__(ndarray)
    out._a = a
    return out


def _result(r):
    """NumPy's result as CuPy gives it: arrays wrapped, NumPy scalars as 0-d arrays, in tuples and lists too."""
    if type(r) is _np.ndarray:
        return _wrap(r)
    if isinstance(r, _np.generic):
        return _wrap(_np.asarray(r))
    if isinstance(r, (tuple, list)):       # a named tuple (NumPy's eigh, slogdet) as CuPy's plain one
        return (list if type(r) is list else tuple)(_result(x) for x in r)
    return r


def _host_error(where, x):
    if isinstance(x, _np.ndarray):
        return TypeError(f"{where}: Unsupported type {type(x)}: a host array where CuPy needs a device array "
                         f"(move it with cupy.asarray / npad.backend.to_gpu, or keep the computation on the host)")
    return TypeError(f"{where}: Unsupported type {type(x)} (CuPy takes its arrays and scalars here)")


def _dev(x, where):
    """``x`` with stand-in arrays unwrapped, in lists and tuples too; a host NumPy array raises TypeError."""
    t = type(x)
    if t is ndarray:
        return x._a
    if t is list or t is tuple:
        return t(_dev(v, where) for v in x)
    if isinstance(x, _np.ndarray):
        raise _host_error(where, x)
    return x


def _host(x):
    """``x`` with stand-in arrays unwrapped and host arrays copied, as CuPy's copy to the device."""
    t = type(x)
    if t is ndarray:
        return x._a
    if t is list or t is tuple:
        return t(_host(v) for v in x)
    if isinstance(x, _np.ndarray):
        return _np.array(x)
    return x


def _operand(x, where):
    """A ufunc operand: a stand-in array or a scalar (CuPy's _preprocess_args); anything else raises TypeError."""
    if type(x) is ndarray:
        return x._a
    if isinstance(x, _SCALARS):
        return x
    raise _host_error(where, x)


def _defers(x):
    """True when an operator should return NotImplemented so that ``x``'s reflected one runs (CuPy's
    _should_use_rop: ``x`` opts out of ufuncs, or outranks CuPy's __array_priority__ of 100)."""
    hook = getattr(type(x), "__array_ufunc__", ndarray)
    return hook is None or (hook is ndarray and getattr(x, "__array_priority__", 0) > 100)


def _other(x, where):
    """The second operand of an operator unwrapped, or NotImplemented (see _defers)."""
    if type(x) is ndarray:
        return x._a
    if isinstance(x, _SCALARS):
        return x
    if not isinstance(x, _np.ndarray) and _defers(x):
        return NotImplemented
    raise _host_error(where, x)


def _signature(params):
    return None if params is None else _inspect.signature(eval(f"lambda {params}: None", {"numpy": _np}))


# Parameters that give shapes, axes, sizes or split points: CuPy reads them on the host (tuple(),
# iteration, numpy.asarray: cupy/_manipulation/split.py, _padding/pad.py...), so a host array there
# is no device operand and passes.
_LAYOUT = frozenset({"axis", "axes", "shape", "newshape", "new_shape", "indices_or_sections", "reps", "repeats",
                     "pad_width", "source", "destination", "kth", "s", "size", "window_shape", "strides",
                     "dims", "dimensions", "output_shape"})


def _checker(name, params, host=()):
    """f(args, kwargs) -> (args, kwargs) unwrapped for NumPy, after checking them against CuPy's signature;
    parameters in ``host`` (and layout parameters, see _LAYOUT) may hold host arrays, every other one
    refuses them."""
    sig = _signature(params)
    if sig is None:
        return lambda args, kwargs: (_dev(args, name), {k: _dev(v, name) for k, v in kwargs.items()})
    positional = [p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    rest = next((p.name for p in sig.parameters.values() if p.kind == p.VAR_POSITIONAL), None)
    host = frozenset(host) | (_LAYOUT & set(sig.parameters))

    def check(args, kwargs):
        try:
            sig.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{name}(): {e} (CuPy's signature: {name}({params}))") from None
        if not host:
            return _dev(args, name), {k: _dev(v, name) for k, v in kwargs.items()}
        args = tuple(_host(a) if (positional[i] if i < len(positional) else rest) in host else _dev(a, name)
                     for i, a in enumerate(args))
        return args, {k: _host(v) if k in host else _dev(v, name) for k, v in kwargs.items()}
    return check


def _not_emulated(name):
    def missing(*args, **kwargs):
        raise NotImplementedError(f"{name} exists in CuPy {_VERSION} but the strict stand-in "
                                  f"(npad.strict_cupy) does not emulate it")
    missing.__name__ = missing.__qualname__ = name.rsplit(".", 1)[-1]
    return missing


def _function(name, target, params, host=()):
    """CuPy's function ``name`` done by ``target()`` (the NumPy/SciPy namesake, found on first use)."""
    check = _checker(name, params, host)
    found = []

    def call(*args, **kwargs):
        if not found:
            fn = target()
            found.append(fn if fn is not None else _not_emulated(name))
        args, kwargs = check(args, kwargs)
        return _result(found[0](*args, **kwargs))
    call.__name__ = call.__qualname__ = name.rsplit(".", 1)[-1]
    call.__doc__ = f"CuPy's {name}({params or '...'}) on the strict stand-in."
    return call


class ufunc:
    """A CuPy ufunc on the stand-in: operands are stand-in arrays or scalars (a host array raises TypeError)."""

    def __init__(self, name, target, params):
        self.__name__ = name.rsplit(".", 1)[-1]
        self._qualname, self._target, self._fn = name, target, None
        self._check = _checker(name, params)

    @property
    def _f(self):
        if self._fn is None:
            self._fn = self._target()
            if self._fn is None:
                _not_emulated(self._qualname)()
        return self._fn

    nin = property(lambda self: self._f.nin)
    nout = property(lambda self: self._f.nout)
    nargs = property(lambda self: self._f.nargs)
    types = property(lambda self: self._f.types)

    def __repr__(self):
        return f"<ufunc '{self.__name__}' (strict CuPy stand-in)>"

    def __call__(self, *args, **kwargs):
        nin = self.nin
        self._check(args, {k: v for k, v in kwargs.items() if k != "out"})
        out = kwargs.pop("out", None)
        outs = tuple(args[nin:]) + ((out if isinstance(out, tuple) else (out,)) if out is not None else ())
        ins = [_operand(a, self._qualname) for a in args[:nin]]
        for o in outs:
            if type(o) is not ndarray:
                raise TypeError(f"{self._qualname}: out must be a cupy.ndarray, got {type(o)}")
        if outs:
            kwargs["out"] = tuple(o._a for o in outs)
        r = self._f(*ins, **kwargs)
        if outs:
            return outs[0] if len(outs) == 1 else outs
        return _result(r)

    def at(self, a, indices, b=None):
        """a[indices] op= b, repeated indices accumulating (CuPy copies host indices and, for advanced
        indices, host values to the device)."""
        if type(a) is not ndarray:
            raise _host_error(f"{self._qualname}.at", a)
        idx = _index(indices)
        args = () if b is None else ((_host(b) if _advanced(idx) else _operand(b, f"{self._qualname}.at")),)
        self._f.at(a._a, idx, *args)

    def _method(method):
        def run(self, a, *args, **kwargs):
            out = kwargs.get("out")
            if out is not None:
                kwargs["out"] = _dev(out, self._qualname)
            r = getattr(self._f, method)(_operand(a, f"{self._qualname}.{method}"),
                                         *[_dev(x, self._qualname) for x in args], **kwargs)
            return out if out is not None else _result(r)
        run.__name__ = method
        return run

    reduce, accumulate, reduceat = _method("reduce"), _method("accumulate"), _method("reduceat")
    del _method

    def outer(self, a, b, **kwargs):
        where = f"{self._qualname}.outer"
        return _result(self._f.outer(_operand(a, where), _operand(b, where), **kwargs))


def _index(idx):
    """An index with stand-in arrays unwrapped; host index arrays and lists stay (CuPy copies them)."""
    if type(idx) is tuple:
        return tuple(i._a if type(i) is ndarray else i for i in idx)
    return idx._a if type(idx) is ndarray else idx


def _advanced(idx):
    """True for an index with arrays, lists or booleans in it (NumPy's and CuPy's advanced indexing)."""
    return any(isinstance(i, (_np.ndarray, list, bool, _np.bool_)) for i in (idx if type(idx) is tuple else (idx,)))


def _rebuild(host):
    return _wrap(host)


class ndarray:
    """A CuPy array on the strict stand-in (CuPy's ``cupy.ndarray(shape, dtype, ...)`` makes an empty one)."""

    __slots__ = ("_a",)
    __module__ = "cupy_strict"      # npad.backend.is_cupy_array keys on type(a).__module__.startswith("cupy")
    __array_priority__ = 100        # CuPy's
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            _not_emulated("cupy.ndarray(memptr=..., strides=...)")()
        self._a = _np.empty(shape, dtype, order=order)

    # ---- the ways to and from the host ----------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def get(self, stream=None, order="C", out=None, blocking=True):
        """A NumPy copy of the array (the device -> host copy)."""
        if out is None:
            return _np.array(self._a, order=order)
        if not isinstance(out, _np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be obtained from cupy.ndarray, got {type(out)}")
        out[...] = self._a
        return out

    def set(self, arr, stream=None):
        """Copy the NumPy array ``arr`` (same shape and dtype) into this array (the host -> device copy)."""
        if not isinstance(arr, _np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        if arr.shape != self.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        if arr.dtype != self.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        self._a[...] = arr

    def fill(self, value):
        """Fill with a scalar (a 0-d array); a non-scalar host array raises ValueError as in CuPy."""
        if type(value) is ndarray:
            if value.shape != ():
                raise ValueError("non-scalar cupy.ndarray cannot be used for fill")
            value = value._a
        else:
            value = _np.asarray(value, dtype=self.dtype)
            if value.shape != ():
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        self._a.fill(value)

    def __reduce__(self):
        return _rebuild, (self.get(),)

    def __copy__(self):
        return _wrap(self._a.copy())

    def __deepcopy__(self, memo):
        return _wrap(self._a.copy())

    # ---- NumPy's protocols, answered as CuPy does (cupy/_core/core.pyx) ----------
    def __array_ufunc__(self, ufunc_, method, *inputs, **kwargs):
        target = _MODULE.__dict__.get(ufunc_.__name__)
        if not isinstance(target, ufunc):
            target = _special_ufunc(ufunc_.__name__)
            if target is None:
                return NotImplemented
        for x in inputs + tuple(kwargs.get("out", ())):
            if not isinstance(x, _SCALARS + (ndarray, _np.ndarray)):
                return NotImplemented
        if "out" in kwargs:
            if len(kwargs["out"]) != 1:
                raise ValueError("The 'out' parameter must have exactly one array value")
            kwargs["out"] = kwargs["out"][0]
        if method == "__call__":
            if ufunc_.__name__ in ("greater", "greater_equal", "less", "less_equal", "equal", "not_equal"):
                inputs = tuple(x.item() if isinstance(x, _np.ndarray) and x.ndim == 0 else x for x in inputs)
            return target(*inputs, **kwargs)
        if method in ("at", "reduce", "accumulate", "reduceat", "outer"):
            return getattr(target, method)(*inputs, **kwargs)
        return NotImplemented

    def __array_function__(self, func, types, args, kwargs):
        try:
            module = _MODULE
            for part in func.__module__.split(".")[1:]:
                module = getattr(module, part)
            target = getattr(module, func.__name__)
        except (AttributeError, NotImplementedError):
            return NotImplemented
        if target is func or not all(issubclass(t, (ndarray, _np.ndarray)) for t in types):
            return NotImplemented
        return target(*args, **kwargs)

    # ---- attributes ----------------------------------------------------------
    shape = property(lambda self: self._a.shape, lambda self, shape: setattr(self._a, "shape", shape))
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: _wrap(self._a.T))
    mT = property(lambda self: _wrap(self._a.mT))
    real = property(lambda self: _wrap(self._a.real))
    imag = property(lambda self: _wrap(self._a.imag))
    base = property(lambda self: _wrap(self._a.base) if isinstance(self._a.base, _np.ndarray) else None)
    device = property(lambda self: _Device(0))
    data = property(lambda self: _MemoryPointer(self._a))

    # ---- Python's protocols ----------------------------------------------------
    def __repr__(self):
        return repr(self._a)

    def __str__(self):
        return str(self._a)

    def __format__(self, spec):
        return format(self._a, spec)

    def __len__(self):
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    def __bool__(self):
        if self._a.size == 0:           # CuPy warns and answers False where NumPy 2 raises
            _warnings.warn("The truth value of an empty array is ambiguous. Returning False, but in future "
                           "this will result in an error. Use `array.size > 0` to check that an array is not "
                           "empty.", DeprecationWarning, stacklevel=2)
            return False
        return bool(self._a)

    def __int__(self):
        return int(self._a)

    def __float__(self):
        return float(self._a)

    def __complex__(self):
        return complex(self._a)

    def __getitem__(self, idx):
        return _result(self._a[_index(idx)])

    def __setitem__(self, idx, value):
        idx = _index(idx)
        if type(value) is ndarray:
            value = value._a
        elif not isinstance(value, _SCALARS) and not _advanced(idx):
            value = _np.asarray(value)   # CuPy fills a basic index from a host value: a scalar only
            if value.shape != ():
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill "
                                 "(CuPy refuses a[...] = host_array: copy it with cupy.asarray first)")
        self._a[idx] = value


def _operators():
    """ndarray's arithmetic, comparison and unary operators, each NumPy's ufunc under CuPy's operand rules."""
    binary = {"add": _np.add, "sub": _np.subtract, "mul": _np.multiply, "truediv": _np.true_divide,
              "floordiv": _np.floor_divide, "mod": _np.remainder, "pow": _np.power, "matmul": _np.matmul,
              "and": _np.bitwise_and, "or": _np.bitwise_or, "xor": _np.bitwise_xor,
              "lshift": _np.left_shift, "rshift": _np.right_shift, "divmod": _np.divmod}

    def make(fn, name, reflected=False, inplace=False):
        def op(self, other):
            o = _other(other, f"cupy.ndarray.{name}")
            if o is NotImplemented:
                return NotImplemented
            if inplace:
                fn(self._a, o, out=self._a)
                return self
            return _result(fn(o, self._a) if reflected else fn(self._a, o))
        op.__name__ = name
        return op

    for short, fn in binary.items():
        setattr(ndarray, f"__{short}__", make(fn, f"__{short}__"))
        setattr(ndarray, f"__r{short}__", make(fn, f"__r{short}__", reflected=True))
        if short != "divmod":
            setattr(ndarray, f"__i{short}__", make(fn, f"__i{short}__", inplace=True))
    def compare(fn, name):
        def op(self, other):
            if type(other) is not ndarray and not isinstance(other, _SCALARS):
                if isinstance(other, _np.ndarray) and other.ndim == 0:
                    other = other.item()        # CuPy compares with a 0-d host array's value
                elif not isinstance(other, _np.ndarray) and _defers(other):
                    return NotImplemented
                elif name in ("__eq__", "__ne__") and (other is None or type(other).__eq__ is object.__eq__):
                    return _wrap(_np.full(self.shape, name == "__ne__"))  # never equal to an element
            return _result(fn(self._a, _operand(other, f"cupy.ndarray.{name}")))
        op.__name__ = name
        return op

    for short, fn in {"eq": _np.equal, "ne": _np.not_equal, "lt": _np.less, "le": _np.less_equal,
                      "gt": _np.greater, "ge": _np.greater_equal}.items():
        setattr(ndarray, f"__{short}__", compare(fn, f"__{short}__"))
    for short, fn in {"neg": _np.negative, "pos": _np.positive, "abs": _np.absolute, "invert": _np.invert}.items():
        setattr(ndarray, f"__{short}__", lambda self, fn=fn: _result(fn(self._a)))


# ndarray methods whose parameters CuPy copies to the device when they are on the host (_routines_indexing.pyx)
_METHOD_HOST = {"take": ("indices",), "put": ("indices", "values"), "compress": ("condition",), "repeat": ("repeats",)}


def _methods():
    """ndarray's methods and attributes: CuPy's names and signatures, NumPy's work; the rest not emulated."""
    for name, entry in _NDARRAY.items():
        if name in ndarray.__dict__:
            continue
        numpy_method = getattr(_np.ndarray, name, None)
        if name.startswith("_"):            # __cuda_array_interface__, __dlpack__: absent, so hasattr() says False
            continue
        if entry[0] == "attribute":
            setattr(ndarray, name, property(_not_emulated(f"cupy.ndarray.{name}")))
            continue
        if numpy_method is None:
            setattr(ndarray, name, _not_emulated(f"cupy.ndarray.{name}"))
            continue
        check = _checker(f"cupy.ndarray.{name}", entry[1], _METHOD_HOST.get(name, ()))

        def method(self, *args, _fn=numpy_method, _check=check, **kwargs):
            args, kwargs = _check(args, kwargs)
            return _result(_fn(self._a, *args, **kwargs))
        method.__name__ = name
        setattr(ndarray, name, method)


_operators()
_methods()


# ---- functions CuPy writes itself (no NumPy namesake does the same) ------------------

def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    """``a`` on the device: a stand-in array is returned as is (unless dtype or copy asks otherwise),
    anything else is copied from the host."""
    if type(a) is ndarray:
        r = _np.array(a._a, dtype=dtype, order=order or "K", copy=copy)
        return a if r is a._a else _wrap(r)
    if copy is False:
        raise ValueError("Unable to avoid copy while creating an array from the host as requested.")
    return _wrap(_np.array(_host(a), dtype=dtype, order=order or "K"))


def asanyarray(a, dtype=None, order=None, *, blocking=False):
    return asarray(a, dtype, order)


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    """A device array from ``obj``; a copy unless ``obj`` is a stand-in array and copy=False allows none."""
    if type(obj) is ndarray:
        r = _np.array(obj._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin)
        return obj if r is obj._a else _wrap(r)
    return _wrap(_np.array(_host(obj), dtype=dtype, order=order, ndmin=ndmin))


def ascontiguousarray(a, dtype=None):
    if type(a) is not ndarray:
        raise TypeError(f"Argument 'a' has incorrect type (expected cupy.ndarray, got {type(a).__name__})")
    r = _np.ascontiguousarray(a._a, dtype=dtype)
    return a if r is a._a else _wrap(r)


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    """A NumPy array holding ``a`` (copied from the device when it is a stand-in array)."""
    if type(a) is ndarray:
        return a.get(order=order, out=out)
    r = _np.asarray(a, order=order)
    if out is not None:
        out[...] = r
        return out
    return r


def get_array_module(*args):
    """This module if any argument is a stand-in array, else numpy."""
    return _MODULE if any(type(a) is ndarray for a in args) else _np


def fuse(*args, **kwargs):
    """Kernel fusion is a compilation step: on the stand-in the function runs as written."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda fn: fn


def is_available():
    return True


class _IndexMaker:
    """cupy.mgrid, ogrid, r_, c_: NumPy's, on device arrays."""

    def __init__(self, numpy_maker, name):
        self._m, self._name = numpy_maker, name

    def __getitem__(self, key):
        return _result(self._m[_dev(key, self._name)])


class _Pool:
    """A memory-pool stub: nothing is held."""
    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self, stream=None):
        pass

    def set_limit(self, size=None, fraction=None):
        pass

    def get_limit(self):
        return 0


def get_default_memory_pool():
    return _POOL


def get_default_pinned_memory_pool():
    return _POOL


_POOL = _Pool()


class _Device:
    """cupy.cuda.Device stub: device 0 of one."""

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise ValueError(f"the strict stand-in has one device (0), not {self.id}")

    compute_capability = "90"

    def use(self):
        pass

    def synchronize(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __eq__(self, other):
        return isinstance(other, _Device) and other.id == self.id

    def __hash__(self):
        return self.id

    def __repr__(self):
        return f"<CUDA Device {self.id} (strict stand-in)>"


class _MemoryPointer:
    """cupy.cuda.MemoryPointer stub: the address of the array's first element."""

    def __init__(self, a):
        self.ptr, self.device_id = a.__array_interface__["data"][0], 0
        self.device = _Device(0)


class _Stream:
    """cupy.cuda.Stream stub: work is done when it is issued."""

    def __init__(self, null=False, non_blocking=False, ptds=False):
        self.null = null

    def synchronize(self):
        pass

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        pass

    def record(self, stream=None):
        pass

    def synchronize(self):
        pass


class _RandomDrawer:
    """cupy.random's RandomState or Generator: NumPy's draws, as device arrays."""

    def __init__(self, numpy_generator, name):
        self._g, self._name = numpy_generator, name

    def __getattr__(self, name):
        attr = getattr(self._g, name)
        if not callable(attr):
            return attr
        where = f"{self._name}.{name}"

        def draw(*args, dtype=None, **kwargs):
            r = attr(*_dev(args, where), **{k: _dev(v, where) for k, v in kwargs.items()})
            if dtype is not None and isinstance(r, (_np.ndarray, _np.generic)):
                r = _np.asarray(r).astype(dtype, copy=False)
            return _result(r)
        draw.__name__ = name
        return draw


# ---- building the namespace ------------------------------------------------------------

def _numpy_object(path):
    """The NumPy object CuPy re-exports: a top-level name or module.qualname."""
    if "." not in path:
        return getattr(_np, path)
    module, _, qualname = path.rpartition(".")
    return getattr(_importlib.import_module(module), qualname)


def _attr_of(module_name, name):
    """A function finding ``module_name.name`` on first use, or None when it is not there."""
    def find():
        try:
            return getattr(_importlib.import_module(module_name), name, None)
        except ImportError:
            return None
    return find


def _placeholder_module(name):
    """A CuPy submodule the stand-in does not emulate: any attribute raises NotImplementedError."""
    mod = _types.ModuleType(name)

    def __getattr__(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        _not_emulated(f"{name}.{attr}")()
    mod.__getattr__ = __getattr__
    return mod


def _missing_name(cupy_name):
    def __getattr__(attr):
        raise AttributeError(f"module {cupy_name!r} has no attribute {attr!r} "
                             f"(the strict stand-in mirrors CuPy {_VERSION}'s namespace)")
    return __getattr__


def _fill(module, cupy_name, numpy_module, custom):
    """Give ``module`` CuPy's names of ``cupy_name``: ``custom`` ones, else NumPy's namesakes from
    ``numpy_module`` under CuPy's rules, else placeholders raising NotImplementedError."""
    for name, entry in _NAMESPACE[cupy_name].items():
        qualname, kind = f"{cupy_name}.{name}", entry[0]
        if name in custom:
            value = custom[name]
        elif kind == "module":
            sub = f"{cupy_name}.{name}"
            value = _SUBMODULES[sub]() if sub in _SUBMODULES else _placeholder_module(sub)
        elif kind == "ufunc":
            value = ufunc(qualname, _attr_of(numpy_module, name), entry[1]) if numpy_module else None
        elif kind == "function" and numpy_module:
            value = _function(qualname, _attr_of(numpy_module, name), entry[1], entry[2])
        elif kind == "numpy":
            value = _numpy_object(entry[1])
        elif kind == "const":
            value = float(entry[1]) if entry[1] in ("inf", "-inf", "nan") else _ast.literal_eval(entry[1])
        elif kind == "class":
            value = type(name, (), {"__init__": lambda self, *a, _n=qualname, **k: _not_emulated(_n)(),
                                    "__module__": "cupy_strict", "__doc__": f"{qualname}: not emulated"})
        else:
            value = None
        if value is None:
            value = _not_emulated(qualname)
        setattr(module, name, value)
    module.__getattr__ = _missing_name(cupy_name)
    return module


def _submodule(cupy_name, numpy_module=None, custom=None):
    def make():
        mod = _types.ModuleType(f"npad.strict_cupy.{cupy_name.split('.', 1)[1]}", f"CuPy's {cupy_name} on the stand-in.")
        return _fill(mod, cupy_name, numpy_module, custom or {})
    return make


_STATE = _np.random.RandomState()


def _random_custom():
    def seed(seed=None):
        _STATE.seed(None if seed is None else int(seed) % 2 ** 32)

    def default_rng(seed=None):
        return _RandomDrawer(_np.random.default_rng(seed), "cupy.random.Generator")

    def RandomState(seed=None, method=None):
        return _RandomDrawer(_np.random.RandomState(seed), "cupy.random.RandomState")

    drawer = _RandomDrawer(_STATE, "cupy.random")
    custom = {"seed": seed, "default_rng": default_rng, "RandomState": RandomState,
              "get_random_state": lambda: drawer, "shuffle": lambda a: _STATE.shuffle(_dev(a, "cupy.random.shuffle"))}
    for name, entry in _NAMESPACE["cupy.random"].items():
        if name not in custom and entry[0] == "function" and hasattr(_STATE, name):
            check = _checker(f"cupy.random.{name}", entry[1])

            def draw(*args, _name=name, _check=check, **kwargs):
                _check(args, kwargs)
                return getattr(drawer, _name)(*args, **kwargs)
            draw.__name__ = name
            custom[name] = draw
    return custom


def _runtime():
    mod = _types.ModuleType("npad.strict_cupy.cuda.runtime")
    return _fill(mod, "cupy.cuda.runtime", None, {
        "getDeviceCount": lambda: 1, "getDevice": lambda: 0, "setDevice": lambda device: None,
        "deviceSynchronize": lambda: None, "runtimeGetVersion": lambda: 12080, "driverGetVersion": lambda: 12080,
        "is_hip": False})


_SUBMODULES = {
    "cupy.linalg": _submodule("cupy.linalg", "numpy.linalg"),
    "cupy.fft": _submodule("cupy.fft", "numpy.fft"),
    "cupy.random": lambda: _submodule("cupy.random", None, _random_custom())(),
    "cupy.lib": _submodule("cupy.lib"),
    "cupy.lib.stride_tricks": _submodule("cupy.lib.stride_tricks", "numpy.lib.stride_tricks", {"np": _np}),
    "cupy.exceptions": _submodule("cupy.exceptions"),
    "cupy.cuda": _submodule("cupy.cuda", None, {
        "Device": _Device, "Stream": _Stream, "Event": _Event, "get_device_id": lambda: 0,
        "get_current_stream": lambda device_id=None: _Stream(), "is_available": lambda: True}),
    "cupy.cuda.runtime": _runtime,
}

_MODULE = None      # npad.strict_cupy, set by fill()


def _cupyx():
    """The stand-in's cupyx (the parts npad imports): scatter_add/max/min and cupyx.scipy.special and
    .ndimage on SciPy; installed as sys.modules["cupyx"] by npad.testing.use_strict_cupy()."""
    def scatter(op):
        def scatter_op(a, slices, value):
            op.at(a, slices, value)
        scatter_op.__name__ = f"scatter_{op.__name__}"
        return scatter_op

    special = _submodule("cupyx.scipy.special", "scipy.special")
    ndimage = _submodule("cupyx.scipy.ndimage", "scipy.ndimage")
    _SUBMODULES.update({"cupyx.scipy.special": special, "cupyx.scipy.ndimage": ndimage,
                        "cupyx.scipy": _submodule("cupyx.scipy", None, {"get_array_module": get_array_module})})
    root = _types.ModuleType("cupyx", "CuPy's cupyx on the strict stand-in (npad.strict_cupy).")
    _fill(root, "cupyx", None, {"scatter_add": scatter(_MODULE.add), "scatter_max": scatter(_MODULE.maximum),
                                "scatter_min": scatter(_MODULE.minimum)})
    return {"cupyx": root, "cupyx.scipy": root.scipy, "cupyx.scipy.special": root.scipy.special,
            "cupyx.scipy.ndimage": root.scipy.ndimage}


_CUPYX = {}


def _special_ufunc(name):
    """cupyx.scipy.special's ufunc ``name`` (CuPy's __array_ufunc__ looks there second), or None."""
    f = getattr(_cupyx_modules()["cupyx.scipy.special"], name, None) if name in _NAMESPACE["cupyx.scipy.special"] else None
    return f if isinstance(f, ufunc) else None


def fill(module):
    """Give ``module`` (npad.strict_cupy) CuPy's namespace."""
    global _MODULE
    _MODULE = module
    _fill(module, "cupy", "numpy", {
        "ndarray": ndarray, "ufunc": ufunc, "asarray": asarray, "asanyarray": asanyarray, "array": array,
        "ascontiguousarray": ascontiguousarray, "asnumpy": asnumpy, "get_array_module": get_array_module,
        "fuse": fuse, "is_available": is_available, "get_default_memory_pool": get_default_memory_pool,
        "get_default_pinned_memory_pool": get_default_pinned_memory_pool,
        "mgrid": _IndexMaker(_np.mgrid, "cupy.mgrid"), "ogrid": _IndexMaker(_np.ogrid, "cupy.ogrid"),
        "r_": _IndexMaker(_np.r_, "cupy.r_"), "c_": _IndexMaker(_np.c_, "cupy.c_")})


def _cupyx_modules():
    """{"cupyx": ..., "cupyx.scipy": ..., ...}: the stand-in's cupyx, for sys.modules."""
    if not _CUPYX:
        _CUPYX.update(_cupyx())
    return dict(_CUPYX)
