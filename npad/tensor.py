"""Tensor and the define-by-run autograd graph.

A ``Tensor`` holds an ``xp`` array (NumPy or CuPy). Every differentiable op is
a ``Function`` with ``forward`` on raw arrays and ``backward`` on the output
gradient, side by side. Calling an op records the Function as the ``_creator``
of its output, but only when gradients are enabled and some input requires
them; frozen inputs and ``no_grad`` blocks cost nothing beyond the forward.

``loss.backward()`` visits the Functions in reverse topological order, asks
each for the gradients of the inputs that need one, sums gradients that meet
at a tensor, and stores them in ``.grad`` of leaf tensors. The graph is freed
afterwards unless ``retain_graph=True``.

In-place ops (``x += y``, ``x.add_(y)``, ``p.zero_()``, ``x[i] = v``) write into
``x.data`` when no graph is recorded (under ``no_grad``, or nothing requires grad);
inside a graph ``x`` takes the result's new array and place in the graph. Either
way they stamp ``x._version`` with a global clock; each recorded Function keeps the
clock of when it ran, and backward refuses a Function whose input changed since,
which would otherwise give silently wrong gradients (PyTorch's version counter).
"""
import numpy

from .backend import default_xp, device_xp, get_array_module, is_cupy_array, to_cpu

_grad_enabled = True
_default_dtype = numpy.float32
_clock = 0  # counts in-place writes; Tensor._version and Function._version hold its value


class no_grad:
    """Context manager (and decorator) under which no graph is recorded."""

    def __enter__(self):
        global _grad_enabled
        self._prev, _grad_enabled = _grad_enabled, False

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._prev

    def __call__(self, fn):
        def wrapped(*args, **kwargs):
            with type(self)():
                return fn(*args, **kwargs)
        wrapped.__name__, wrapped.__doc__ = fn.__name__, fn.__doc__
        return wrapped


class enable_grad(no_grad):
    """Context manager that turns graph recording back on inside ``no_grad``."""

    def __enter__(self):
        global _grad_enabled
        self._prev, _grad_enabled = _grad_enabled, True


def is_grad_enabled():
    return _grad_enabled


def set_default_dtype(dtype):
    """Floating dtype for tensors made from Python numbers and lists (float32 unless changed)."""
    global _default_dtype
    _default_dtype = numpy.dtype(dtype).type


def get_default_dtype():
    return _default_dtype


def sum_to(g, shape):
    """Sum a broadcast gradient ``g`` back down to ``shape`` (the inverse of broadcasting)."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape) if n == 1 and g.shape[i + lead] != 1)
    g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape) if lead else g


class Function:
    """One differentiable op. Subclasses define ``forward(*arrays, **params)``
    returning an array (or a tuple of arrays for several outputs) and
    ``backward(*grad_outputs)`` returning one gradient (or None) per input.
    ``self.needs_input_grad[i]`` says whether input i wants a gradient."""

    n_out = 1
    retain_graph = False  # set by Tensor.backward before each call of backward(): True keeps saved buffers alive

    @classmethod
    def apply(cls, *inputs, **params):
        arrays = [t.data for t in inputs]
        if len(arrays) > 1:
            gpu = [is_cupy_array(a) for a in arrays]
            if any(gpu) and not all(gpu):
                raise TypeError(f"{cls.__name__}: cannot mix NumPy (cpu) and CuPy (cuda) tensors; "
                                f"devices of the inputs: {['cuda' if g else 'cpu' for g in gpu]}")
        fn = cls()
        out = fn.forward(*arrays, **params)
        requires = _grad_enabled and any(t.requires_grad for t in inputs)
        if requires:
            fn.inputs = inputs
            fn.needs_input_grad = tuple(t.requires_grad for t in inputs)
            fn._version = _clock
        if type(out) is not tuple:
            return Tensor._make(out, requires, fn if requires else None, 0)
        if requires:
            fn.n_out, fn.out_meta = len(out), [(o.shape, o.dtype) for o in out]
        return tuple(Tensor._make(o, requires, fn if requires else None, i) for i, o in enumerate(out))

    def forward(self, *arrays, **params):
        raise NotImplementedError

    def backward(self, *grad_outputs):
        raise NotImplementedError


class Tensor:
    """An n-dimensional array with an optional gradient, as ``torch.Tensor``."""

    __slots__ = ("data", "requires_grad", "grad", "_creator", "_index", "_retain", "_version", "__weakref__")
    __array_priority__ = 1000  # so ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None, device=None):
        if isinstance(data, Tensor):
            data = data.data
        xp = device_xp(device) if device is not None else (get_array_module(data) if is_cupy_array(data) else None)
        if xp is None:
            xp = default_xp()
        if dtype is None and not hasattr(data, "dtype"):
            arr = numpy.asarray(data)
            dtype = _default_dtype if arr.dtype.kind == "f" else arr.dtype
        data = xp.asarray(data, dtype=dtype)
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"only floating tensors can require gradients, got dtype {data.dtype}")
        self.data = data
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._creator = None
        self._index = 0
        self._retain = False
        self._version = 0

    @classmethod
    def _make(cls, data, requires_grad, creator, index):
        """Fast constructor for op outputs (no conversion)."""
        t = cls.__new__(cls)
        if not hasattr(data, "shape"):  # NumPy reductions return scalars
            data = numpy.asarray(data)
        t.data, t.requires_grad, t.grad = data, requires_grad, None
        t._creator, t._index, t._retain, t._version = creator, index, False, 0
        return t

    # ---- array attributes -------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    device = property(lambda self: "cuda" if is_cupy_array(self.data) else "cpu")
    is_leaf = property(lambda self: self._creator is None)
    T = property(lambda self: self.permute(*reversed(range(self.ndim))))
    mT = property(lambda self: F.transpose(self, -2, -1))  # the last two axes swapped

    def size(self, dim=None):
        return self.data.shape if dim is None else self.data.shape[dim]

    def numel(self):
        return int(self.data.size)

    def dim(self):
        return self.data.ndim

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = ", device='cuda'" if self.device == "cuda" else ""
        return f"tensor({to_cpu(self.data)}{dev}{grad})"

    def __bool__(self):
        return bool(self.data)

    def __float__(self):
        return float(self.data)

    def __int__(self):
        return int(self.data)

    def __hash__(self):
        return id(self)

    # ---- conversion --------------------------------------------------------
    def numpy(self):
        """The data as a NumPy array (copied from the GPU when needed)."""
        return to_cpu(self.data)

    def item(self):
        return self.data.item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor._make(self.data, False, None, 0)

    def requires_grad_(self, flag=True):
        self.requires_grad = bool(flag)
        return self

    def retain_grad(self):
        """Keep ``.grad`` of this non-leaf tensor after backward (as PyTorch)."""
        self._retain = True
        return self

    def to(self, *args, device=None, dtype=None):
        """A copy on a device and/or with a dtype, as torch: ``to("cuda")``, ``to(npad.float64)``,
        ``to(other)`` (other's device and dtype); ``self`` when nothing changes. Gradients flow through."""
        from .functional.math import to_device, astype
        device, dtype = _device_dtype(args, device, dtype)
        out = self
        if device is not None and device != self.device:
            out = to_device(out, device)
        if dtype is not None and numpy.dtype(dtype) != self.dtype:
            out = astype(out, dtype)
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def float(self):
        return self.to(dtype=numpy.float32)

    def double(self):
        return self.to(dtype=numpy.float64)

    def half(self):
        return self.to(dtype=numpy.float16)

    def long(self):
        return self.to(dtype=numpy.int64)

    def int(self):
        return self.to(dtype=numpy.int32)

    def bool(self):
        return self.to(dtype=numpy.bool_)

    def __array__(self, dtype=None, copy=None):
        """The data for NumPy (``numpy.asarray(t)``), without a copy; a CUDA tensor raises, as CuPy."""
        if is_cupy_array(self.data):
            raise TypeError("cannot convert a CUDA tensor to a NumPy array implicitly; "
                            "call .numpy() or .cpu() first")
        a = self.data if dtype is None else self.data.astype(dtype, copy=False)
        return a.copy() if copy else a

    # ---- autograd ----------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires it."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input of its graph has requires_grad=True, or it was made under no_grad)")
        xp = get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient argument needs a scalar output, "
                                   f"got shape {tuple(self.shape)}; pass grad= of that shape")
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise RuntimeError(f"backward(): grad shape {tuple(grad.shape)} != tensor shape {tuple(self.shape)}")
        if self._creator is None:
            self._accumulate(grad)
            return
        order = _topological_order(self._creator)
        pending = {self._creator: [None] * self._creator.n_out}
        pending[self._creator][self._index] = grad
        for fn in order:
            gouts = pending.pop(fn, None)
            if gouts is None:
                continue
            if fn.inputs is None:
                raise RuntimeError("trying to backward through the graph a second time; "
                                   "use backward(retain_graph=True) the first time")
            if fn.n_out > 1:
                gouts = [g if g is not None else xp.zeros(s, d) for g, (s, d) in zip(gouts, fn.out_meta)]
            fn.retain_graph = retain_graph
            gins = fn.backward(*gouts)
            if not isinstance(gins, tuple):
                gins = (gins,)
            for t, g, need in zip(fn.inputs, gins, fn.needs_input_grad):
                if t._version > fn._version:  # changed in place since fn ran (-1: fn's saved output was)
                    _modified_error(fn, t)
                if not need or g is None:
                    continue
                if g.shape != t.data.shape:
                    g = sum_to(g, t.data.shape)
                c = t._creator
                if c is None or t._retain:
                    t._accumulate(g)
                if c is not None:
                    slot = pending.setdefault(c, [None] * c.n_out)
                    slot[t._index] = g if slot[t._index] is None else slot[t._index] + g
            if not retain_graph:
                fn.inputs = None  # cuts the graph: saved arrays die with the tensors that reference fn

    def _accumulate(self, g):
        if g.dtype != self.data.dtype:
            g = g.astype(self.data.dtype)
        if self.grad is None:
            self.grad = Tensor._make(g, False, None, 0)
        else:
            self.grad = Tensor._make(self.grad.data + g, False, None, 0)

    # ---- operators (defined in functional, bound here) ----------------------
    def __add__(self, o): return F.add(self, o)
    def __radd__(self, o): return F.add(o, self)
    def __sub__(self, o): return F.sub(self, o)
    def __rsub__(self, o): return F.sub(o, self)
    def __mul__(self, o): return F.mul(self, o)
    def __rmul__(self, o): return F.mul(o, self)
    def __truediv__(self, o): return F.div(self, o)
    def __rtruediv__(self, o): return F.div(o, self)
    def __pow__(self, o): return F.pow(self, o)
    def __rpow__(self, o): return F.pow(o, self)
    def __neg__(self): return F.neg(self)
    def __matmul__(self, o): return F.matmul(self, o)
    def __rmatmul__(self, o): return F.matmul(o, self)
    def __getitem__(self, idx): return F.getitem(self, idx)
    def __lt__(self, o): return _compare(self, o, "less")
    def __le__(self, o): return _compare(self, o, "less_equal")
    def __gt__(self, o): return _compare(self, o, "greater")
    def __ge__(self, o): return _compare(self, o, "greater_equal")
    def __eq__(self, o): return _compare(self, o, "equal")
    def __ne__(self, o): return _compare(self, o, "not_equal")

    # ---- in-place ops (torch's trailing underscore) -----------------------------
    def _inplace(self, name, op, *args, write=None):
        """Make self hold op(self, *args). With a graph to record (grad enabled and self or an
        argument requires grad), self takes the result's array and place in the graph, so arrays
        that ops saved for backward stay intact. Otherwise the result is written into self.data
        (``write()`` when given does it directly), so views and optimizers see it; ops that took
        self before then refuse their backward (see ``_version``)."""
        others = [a for a in args if isinstance(a, Tensor)]
        if _grad_enabled and (self.requires_grad or any(a.requires_grad for a in others)):
            if self.requires_grad and self._creator is None:
                raise RuntimeError(f"{name}: a leaf tensor that requires grad (shape {tuple(self.shape)}) is "
                                   f"used in an in-place operation; do it under `with npad.no_grad():`")
            out = op(Tensor._make(self.data, self.requires_grad, self._creator, self._index), *args)
            out = _fits(self, out, name)
            if out.dtype != self.dtype:
                out = F.astype(out, self.dtype)
            self.data, self.requires_grad, self._creator, self._index = (out.data, out.requires_grad,
                                                                         out._creator, out._index)
            _stamp(self)
        else:
            if write is not None:
                write()
            else:
                with no_grad():
                    out = _fits(self, op(self, *args), name)
                get_array_module(self.data).copyto(self.data, out.data, casting="unsafe")
            mark_modified(self)
        return self

    def add_(self, other, alpha=1): return self._inplace("add_", lambda x, o: x + (o if alpha == 1 else o * alpha), other)
    def sub_(self, other, alpha=1): return self._inplace("sub_", lambda x, o: x - (o if alpha == 1 else o * alpha), other)
    def mul_(self, other): return self._inplace("mul_", F.mul, other)
    def div_(self, other): return self._inplace("div_", F.div, other)
    def clamp_(self, min=None, max=None): return self._inplace("clamp_", lambda x: F.clamp(x, min, max))
    def fill_(self, value): return self._inplace("fill_", lambda x: full_like(x, value))
    def zero_(self): return self.fill_(0)

    def copy_(self, src):
        """self <- src broadcast to self's shape, cast to its dtype and moved to its device"""
        src = src if isinstance(src, Tensor) else Tensor(src)
        return self._inplace("copy_", lambda x, s: F.clone(F.expand(s.to(x.device, x.dtype), x.shape)), src)

    def __iadd__(self, o): return self.add_(o)
    def __isub__(self, o): return self.sub_(o)
    def __imul__(self, o): return self.mul_(o)
    def __itruediv__(self, o): return self.div_(o)

    def __setitem__(self, idx, value):
        """self[idx] = value, recorded in the graph when self or value requires grad"""
        def write():
            self.data[raw_index(self, idx)] = value.data if isinstance(value, Tensor) else value
        return self._inplace("__setitem__", lambda x, v: F.index_put(x, idx, v), value, write=write)

    # ---- methods mirroring torch.Tensor --------------------------------------
    def all(self, dim=None, keepdim=False): return _reduce_bool(self, "all", dim, keepdim)
    def any(self, dim=None, keepdim=False): return _reduce_bool(self, "any", dim, keepdim)
    def sum(self, dim=None, keepdim=False): return F.sum(self, dim, keepdim)
    def mean(self, dim=None, keepdim=False): return F.mean(self, dim, keepdim)
    def var(self, dim=None, unbiased=True, keepdim=False): return F.var(self, dim, unbiased, keepdim)
    def std(self, dim=None, unbiased=True, keepdim=False): return F.sqrt(F.var(self, dim, unbiased, keepdim))
    def max(self, dim=None, keepdim=False): return F.max(self, dim, keepdim)
    def min(self, dim=None, keepdim=False): return F.min(self, dim, keepdim)
    def amax(self, dim=None, keepdim=False): return F.amax(self, dim, keepdim)
    def amin(self, dim=None, keepdim=False): return F.amin(self, dim, keepdim)
    def logsumexp(self, dim, keepdim=False): return F.logsumexp(self, dim, keepdim)
    def argmax(self, dim=None, keepdim=False): return F.argmax(self, dim, keepdim)
    def argmin(self, dim=None, keepdim=False): return F.argmin(self, dim, keepdim)
    def sort(self, dim=-1, descending=False, stable=False): return F.sort(self, dim, descending, stable)
    def argsort(self, dim=-1, descending=False, stable=False): return F.argsort(self, dim, descending, stable)
    def topk(self, k, dim=-1, largest=True, sorted=True): return F.topk(self, k, dim, largest, sorted)
    def gather(self, dim, index): return F.gather(self, dim, index)
    def clone(self): return F.clone(self)
    def contiguous(self): return self if self.data.flags.c_contiguous else F.clone(self)
    def repeat(self, *sizes): return F.repeat(self, *sizes)
    def reshape(self, *shape): return F.reshape(self, *shape)
    def view(self, *shape): return F.reshape(self, *shape)
    def transpose(self, dim0, dim1): return F.transpose(self, dim0, dim1)
    def permute(self, *dims): return F.permute(self, *dims)
    def flatten(self, start_dim=0, end_dim=-1): return F.flatten(self, start_dim, end_dim)
    def unsqueeze(self, dim): return F.unsqueeze(self, dim)
    def squeeze(self, dim=None): return F.squeeze(self, dim)
    def expand(self, *shape): return F.expand(self, *shape)
    def split(self, split_size, dim=0): return F.split(self, split_size, dim)
    def chunk(self, chunks, dim=0): return F.chunk(self, chunks, dim)
    def exp(self): return F.exp(self)
    def log(self): return F.log(self)
    def sqrt(self): return F.sqrt(self)
    def abs(self): return F.abs(self)
    def pow(self, p): return F.pow(self, p)
    def clamp(self, min=None, max=None): return F.clamp(self, min, max)
    def matmul(self, o): return F.matmul(self, o)
    def relu(self): return F.relu(self)
    def sigmoid(self): return F.sigmoid(self)
    def tanh(self): return F.tanh(self)
    def softmax(self, dim): return F.softmax(self, dim)
    def log_softmax(self, dim): return F.log_softmax(self, dim)
    def astype(self, dtype): return F.astype(self, dtype)


def _modified_error(fn, t):
    i = next(k for k, u in enumerate(fn.inputs) if u is t)
    what = "its output" if fn._version < 0 else f"its input {i} (shape {tuple(t.shape)})"
    raise RuntimeError(f"{type(fn).__name__}: {what} was modified by an in-place operation after the op ran, "
                       f"so its gradient would be wrong; use an out-of-place op (x = x + y) or "
                       f"clone() before the in-place change")


def _stamp(t):
    global _clock
    _clock += 1
    t._version = _clock


def mark_modified(t):
    """Record that ``t.data`` was changed in place (by an in-place op or an optimizer step): ops that
    took t, or the op that made t if it saved its output, refuse their backward afterwards."""
    c = t._creator
    if c is not None and any(v is t.data for v in vars(c).values()):
        c._version = -1  # the op that made t saved t.data for its backward
    _stamp(t)


def _fits(self, out, name):
    """``out`` as the new value of ``self`` in an in-place op: same shape, a dtype it can take."""
    if not isinstance(out, Tensor):
        out = as_tensor(out, like=self)
    if out.shape != self.shape:
        raise RuntimeError(f"{name}: the result has shape {tuple(out.shape)}, which does not fit in place "
                           f"into shape {tuple(self.shape)}")
    if not numpy.can_cast(out.dtype, self.dtype, "same_kind"):
        raise RuntimeError(f"{name}: result type {out.dtype} cannot be cast in place to {self.dtype}")
    return out


def _device_dtype(args, device=None, dtype=None):
    """(device, dtype) from torch-style ``to`` arguments: a device string, a dtype, or a tensor."""
    for a in args:
        if isinstance(a, Tensor):
            device, dtype = a.device, a.dtype
        elif isinstance(a, str):
            device = a
        elif a is not None:
            dtype = a
    if device is not None:
        device = "cuda" if str(device) in ("cuda", "cuda:0") else str(device)
        if device not in ("cpu", "cuda"):
            raise ValueError(f"unknown device {device!r}; use 'cpu' or 'cuda' (one GPU, through CuPy)")
    return device, dtype


def _reduce_bool(t, op, dim, keepdim):
    """all / any over ``dim``: a bool tensor outside the graph."""
    return Tensor._make(getattr(t.data.astype(bool, copy=False), op)(axis=dim, keepdims=keepdim), False, None, 0)


def _compare(a, b, op):
    """Elementwise comparison; returns a bool tensor outside the graph."""
    xp = get_array_module(a.data)
    b = b.data if isinstance(b, Tensor) else b
    return Tensor._make(getattr(xp, op)(a.data, b), False, None, 0)


def _topological_order(root):
    """Functions reachable from ``root``, each before the Functions that made its inputs."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        fn, done = stack.pop()
        if done:
            order.append(fn)
            continue
        if fn in visited:
            continue
        visited.add(fn)
        stack.append((fn, True))
        if fn.inputs is not None:
            for t in fn.inputs:
                c = t._creator
                if c is not None and t.requires_grad and c not in visited:
                    stack.append((c, False))
    order.reverse()
    return order


# ---- factories (torch names) ------------------------------------------------
def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new tensor from data (Python numbers and lists become the default float dtype)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


def as_tensor(x, like=None):
    """``x`` as a Tensor; a Python number takes the dtype and device of ``like``."""
    if isinstance(x, Tensor):
        return x
    if like is not None:
        xp = get_array_module(like.data)
        if isinstance(x, (int, float, bool)):
            return Tensor._make(xp.asarray(x, dtype=like.dtype if like.dtype.kind == "f" else None), False, None, 0)
        return Tensor._make(xp.asarray(x), False, None, 0)
    return Tensor(x)


def _factory(fill):
    def make(*shape, dtype=None, device=None, requires_grad=False):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        xp = device_xp(device) if device else default_xp()
        return Tensor._make(fill(xp, tuple(shape), dtype or _default_dtype), requires_grad, None, 0)
    return make


zeros = _factory(lambda xp, s, d: xp.zeros(s, d))
ones = _factory(lambda xp, s, d: xp.ones(s, d))
empty = _factory(lambda xp, s, d: xp.empty(s, d))


def full(shape, fill_value, dtype=None, device=None, requires_grad=False):
    xp = device_xp(device) if device else default_xp()
    return Tensor._make(xp.full(tuple(shape), fill_value, dtype or _default_dtype), requires_grad, None, 0)


def full_like(t, fill_value, dtype=None):
    xp = get_array_module(t.data)
    return Tensor._make(xp.full(t.shape, fill_value, dtype or t.dtype), False, None, 0)


def zeros_like(t, dtype=None):
    xp = get_array_module(t.data)
    return Tensor._make(xp.zeros(t.shape, dtype or t.dtype), False, None, 0)


def ones_like(t, dtype=None):
    xp = get_array_module(t.data)
    return Tensor._make(xp.ones(t.shape, dtype or t.dtype), False, None, 0)


def arange(*args, dtype=None, device=None):
    xp = device_xp(device) if device else default_xp()
    return Tensor._make(xp.arange(*args, dtype=dtype), False, None, 0)


def from_numpy(a):
    """A tensor sharing memory with the NumPy array ``a`` (dtype kept)."""
    return Tensor._make(numpy.asarray(a), False, None, 0)


# ---- random numbers: one seeded generator, drawn on the CPU so runs are
#      reproducible across devices, then moved to the default device ---------
_rng = numpy.random.default_rng(0)


def manual_seed(seed):
    """Seed npad's generator (weights initialisation, dropout, randn)."""
    global _rng
    _rng = numpy.random.default_rng(seed)
    try:
        import sys
        cp = sys.modules.get("cupy")
        if cp is not None:
            cp.random.seed(seed)
    except Exception:
        pass


def get_rng():
    """npad's NumPy random generator."""
    return _rng


def _random(draw):
    def make(*shape, dtype=None, device=None, requires_grad=False):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        a = draw(tuple(shape)).astype(dtype or _default_dtype)
        xp = device_xp(device) if device else default_xp()
        return Tensor._make(xp.asarray(a), requires_grad, None, 0)
    return make


randn = _random(lambda s: _rng.standard_normal(s))
rand = _random(lambda s: _rng.random(s))


from . import functional as F  # noqa: E402  (functional needs Tensor defined first)
from .functional.shape import raw_index  # noqa: E402
