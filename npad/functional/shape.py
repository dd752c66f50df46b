"""Shape ops: views, indexing (gather, sort, topk), joining, splitting, tiling and padding."""
from collections import namedtuple

import numpy

from ..backend import get_array_module
from ..tensor import Function, Tensor, as_tensor

__all__ = ["reshape", "transpose", "permute", "flatten", "unsqueeze", "squeeze", "expand",
           "getitem", "index_put", "gather", "sort", "argsort", "topk", "cat", "concatenate", "stack",
           "split", "chunk", "repeat", "pad", "scatter_add"]


def _shape_arg(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


class Reshape(Function):
    """y = x viewed with a new shape;  dx = g reshaped back"""
    def forward(self, x, shape):
        self.shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot view shape {tuple(x.shape)} ({x.size} elements) "
                             f"as {tuple(shape)}") from None

    def backward(self, g):
        return g.reshape(self.shape)


class Permute(Function):
    """y = x with axes reordered;  dx = g with the inverse order"""
    def forward(self, x, dims):
        self.inv = tuple(numpy.argsort(dims))
        return x.transpose(dims)

    def backward(self, g):
        return g.transpose(self.inv)


class Expand(Function):
    """y = x broadcast to ``shape``;  dx = g summed over the broadcast axes (by the engine)"""
    def forward(self, x, shape):
        return get_array_module(x).broadcast_to(x, shape)

    def backward(self, g):
        return g


def scatter_add(xp, target, index, values):
    """target[index] += values, adding repeated indices (numpy.add.at / cupyx.scatter_add)."""
    if xp is numpy:
        numpy.add.at(target, index, values)
    else:
        import cupyx
        cupyx.scatter_add(target, index, values)
    return target


def _is_basic(idx):
    """True when an index uses only ints, slices, None and Ellipsis (no copy, no repeats)."""
    items = idx if isinstance(idx, tuple) else (idx,)
    return all(isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in items)


class GetItem(Function):
    """y = x[idx];  dx = zeros with g added at idx (repeats accumulate)"""
    def forward(self, x, idx):
        self.shape, self.dtype, self.idx = x.shape, x.dtype, idx
        return x[idx]

    def backward(self, g):
        xp = get_array_module(g)
        gx = xp.zeros(self.shape, self.dtype)
        if _is_basic(self.idx):
            gx[self.idx] = g
            return gx
        return scatter_add(xp, gx, self.idx, g)


class IndexPut(Function):
    """y = x with y[idx] = v;  dx = g with zeros at idx, dv = g[idx] (summed back to v's shape)"""
    def forward(self, x, v, idx):
        self.idx = idx
        y = x.copy()
        y[idx] = v
        return y

    def backward(self, g):
        nx, nv = self.needs_input_grad
        gx = None
        if nx:
            gx = g.copy()
            gx[self.idx] = 0
        return gx, (g[self.idx] if nv else None)


def _along(xp, index, axis):
    """The advanced index that picks x[i0, .., index[i0, .., ik, ..], ..] for every position of ``index``."""
    return tuple(index if d == axis else
                 xp.arange(n).reshape((-1,) + (1,) * (index.ndim - d - 1))
                 for d, n in enumerate(index.shape))


class Gather(Function):
    """y[i, j, ..] = x[i, .., index[i, j, ..], ..] with the index on ``axis`` (torch.gather);
    dx = g added at the gathered positions (repeats accumulate)"""
    def forward(self, x, index, axis):
        self.shape, self.at = x.shape, _along(get_array_module(x), index, axis)
        return x[self.at]

    def backward(self, g):
        xp = get_array_module(g)
        return scatter_add(xp, xp.zeros(self.shape, g.dtype), self.at, g)


class Repeat(Function):
    """y = x tiled reps[d] times along each axis d (torch's repeat, numpy.tile);  dx = g summed over the tiles"""
    def forward(self, x, reps):
        self.xshape, self.reps = x.shape, reps
        self.shape = (1,) * (len(reps) - x.ndim) + x.shape
        return get_array_module(x).tile(x, reps)

    def backward(self, g):
        g = g.reshape([d for r, n in zip(self.reps, self.shape) for d in (r, n)])   # r0 x n0 x r1 x n1 ...
        return g.sum(axis=tuple(range(0, g.ndim, 2))).reshape(self.xshape)


class Concat(Function):
    """y = [x1, x2, ...] joined along ``axis``;  dxi = the matching slice of g"""
    def forward(self, *xs, axis):
        self.axis = axis
        self.bounds = numpy.cumsum([x.shape[axis] for x in xs])[:-1]
        return get_array_module(*xs).concatenate(xs, axis=axis)

    def backward(self, g):
        return tuple(get_array_module(g).split(g, self.bounds, axis=self.axis))


class Stack(Function):
    """y = [x1, x2, ...] stacked on a new ``axis``;  dxi = g indexed at i on that axis"""
    def forward(self, *xs, axis):
        self.axis = axis
        return get_array_module(*xs).stack(xs, axis=axis)

    def backward(self, g):
        return tuple(g.take(i, axis=self.axis) for i in range(g.shape[self.axis]))


class Split(Function):
    """(y1, y2, ...) = x cut along ``axis`` at ``bounds``;  dx = [g1, g2, ...] joined"""
    def forward(self, x, bounds, axis):
        self.axis = axis
        return tuple(get_array_module(x).split(x, bounds, axis=axis))

    def backward(self, *gs):
        return get_array_module(*gs).concatenate(gs, axis=self.axis)


def _pad_index(xp, n, before, after, mode):
    """Source index for each position of an axis of length n padded by (before, after)."""
    idx = xp.arange(-before, n + after)
    if mode == "reflect":
        if before >= n or after >= n:
            raise ValueError(f"pad: reflect padding ({before}, {after}) must be smaller than the size {n}")
        period = 2 * (n - 1)
        idx = xp.abs(idx) % period if n > 1 else idx * 0
        return xp.where(idx >= n, period - idx, idx)
    if mode == "replicate":
        return xp.clip(idx, 0, n - 1)
    if mode == "circular":
        return idx % n
    raise ValueError(f"pad: unknown mode {mode!r}; use 'constant', 'reflect', 'replicate' or 'circular'")


class Pad(Function):
    """y = x padded (constant value, or indices mirrored/clamped/wrapped);  dx = g cropped
    (for index modes: g summed back onto the source positions)"""
    def forward(self, x, widths, mode, value):
        xp = get_array_module(x)
        self.widths, self.mode, self.shape = widths, mode, x.shape
        if mode == "constant":
            return xp.pad(x, widths, mode="constant", constant_values=value)
        self.index = {}
        for ax, (b, a) in enumerate(widths):
            if b or a:
                self.index[ax] = _pad_index(xp, x.shape[ax], b, a, mode)
                x = x.take(self.index[ax], axis=ax)
        return x

    def backward(self, g):
        xp = get_array_module(g)
        if self.mode == "constant":
            return g[tuple(slice(b, g.shape[ax] - a) for ax, (b, a) in enumerate(self.widths))]
        for ax in sorted(self.index, reverse=True):
            gt = xp.moveaxis(g, ax, 0)
            out = xp.zeros((self.shape[ax],) + gt.shape[1:], g.dtype)
            g = xp.moveaxis(scatter_add(xp, out, self.index[ax], gt), 0, ax)
        return g


# ---- the functions users call ---------------------------------------------
def reshape(x, *shape):
    """x viewed as ``shape`` (one entry may be -1)"""
    return Reshape.apply(x, shape=_shape_arg(shape))


def permute(x, *dims):
    """x with its axes in the order ``dims``"""
    dims = tuple(d % x.ndim for d in _shape_arg(dims))
    if sorted(dims) != list(range(x.ndim)):
        raise ValueError(f"permute: {dims} is not a permutation of the {x.ndim} axes of shape {tuple(x.shape)}")
    return Permute.apply(x, dims=dims)


def transpose(x, dim0, dim1):
    """x with axes dim0 and dim1 swapped"""
    dims = list(range(x.ndim))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return Permute.apply(x, dims=tuple(dims))


def flatten(x, start_dim=0, end_dim=-1):
    """x with axes start_dim..end_dim merged into one"""
    s, e = start_dim % max(x.ndim, 1), end_dim % max(x.ndim, 1)
    return reshape(x, x.shape[:s] + (-1,) + x.shape[e + 1:])


def unsqueeze(x, dim):
    """x with a new axis of size 1 at ``dim``"""
    dim = dim % (x.ndim + 1)
    return reshape(x, x.shape[:dim] + (1,) + x.shape[dim:])


def squeeze(x, dim=None):
    """x without axes of size 1 (only ``dim`` when given, and only if it has size 1)"""
    if dim is None:
        return reshape(x, tuple(n for n in x.shape if n != 1))
    dim = dim % x.ndim
    return x if x.shape[dim] != 1 else reshape(x, x.shape[:dim] + x.shape[dim + 1:])


def expand(x, *shape):
    """x broadcast to ``shape`` (-1 keeps a size)"""
    shape = _shape_arg(shape)
    lead = len(shape) - x.ndim
    shape = tuple(x.shape[i - lead] if n == -1 else n for i, n in enumerate(shape))
    try:
        numpy.broadcast_shapes(x.shape, shape)
    except ValueError:
        raise ValueError(f"expand: shape {tuple(x.shape)} cannot be broadcast to {shape}") from None
    return Expand.apply(x, shape=shape)


def raw_index(x, idx):
    """An index for x's array: tensors in it replaced by their arrays, a list by an array."""
    if isinstance(idx, Tensor):
        return idx.data
    if isinstance(idx, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in idx)
    if isinstance(idx, list):
        return get_array_module(x.data).asarray(idx)
    return idx


def getitem(x, idx):
    """x[idx] with NumPy's basic and advanced indexing"""
    return GetItem.apply(x, idx=raw_index(x, idx))


def index_put(x, idx, value):
    """a copy of x with x[idx] = value (what ``x[idx] = value`` records in a graph)"""
    value = value if isinstance(value, Tensor) else as_tensor(value, like=x)
    return IndexPut.apply(x, value, idx=raw_index(x, idx))


def _index_array(x, index, dim, name):
    """``index`` as an integer array of x's ndim, its values checked against x.shape[dim]."""
    index = get_array_module(x.data).asarray(index.data if isinstance(index, Tensor) else index)
    if index.dtype.kind not in "iu" or index.ndim != x.ndim:
        raise ValueError(f"{name}: index must be an integer tensor with {x.ndim} dims like the input "
                         f"{tuple(x.shape)}, got dtype {index.dtype} and shape {tuple(index.shape)}")
    n = x.shape[dim]
    if index.size and (int(index.min()) < 0 or int(index.max()) >= n):
        raise IndexError(f"{name}: index values must lie in [0, {n}) along dim {dim} of shape "
                         f"{tuple(x.shape)}, got [{int(index.min())}, {int(index.max())}]")
    return index


def gather(x, dim, index):
    """out[i][j] = x[i][index[i][j]] for dim = 1 (and so on for each dim), as torch.gather"""
    dim = dim % x.ndim
    return Gather.apply(x, index=_index_array(x, index, dim, "gather"), axis=dim)


SortResult = namedtuple("sort", ["values", "indices"])
TopkResult = namedtuple("topk", ["values", "indices"])


def argsort(x, dim=-1, descending=False, stable=False):
    """the indices that sort x along ``dim`` (always a stable sort: ties keep their order); no gradient"""
    a = x.data
    if descending:
        a = -(a if a.dtype.kind in "fi" else a.astype(numpy.int64))
    idx = get_array_module(a).argsort(a, axis=dim, kind="stable")
    return Tensor._make(idx.astype(numpy.int64, copy=False), False, None, 0)


def sort(x, dim=-1, descending=False, stable=False):
    """the named pair (values, indices) of x sorted along ``dim``; the gradient follows the values"""
    idx = argsort(x, dim, descending)
    return SortResult(gather(x, dim, idx), idx)


def topk(x, k, dim=-1, largest=True, sorted=True):
    """the named pair (values, indices) of the k largest (smallest) elements along ``dim``, in order"""
    n = x.shape[dim]
    if not 0 <= k <= n:
        raise ValueError(f"topk: k = {k} is out of range for dim {dim} of size {n} (shape {tuple(x.shape)})")
    xp = get_array_module(x.data)
    idx = argsort(x, dim, descending=largest).data
    idx = Tensor._make(xp.take(idx, xp.arange(k), axis=dim), False, None, 0)
    return TopkResult(gather(x, dim, idx), idx)


def repeat(x, *sizes):
    """x tiled sizes[d] times along each axis d (sizes may add leading axes), as torch's Tensor.repeat"""
    sizes = _shape_arg(sizes)
    if len(sizes) < x.ndim:
        raise ValueError(f"repeat: {len(sizes)} repeat counts {sizes} for a tensor of {x.ndim} dims "
                         f"{tuple(x.shape)}; give at least one per dim")
    return Repeat.apply(x, reps=tuple(int(r) for r in sizes))


def cat(tensors, dim=0):
    """tensors joined along an existing axis ``dim``"""
    tensors = list(tensors)
    dim = dim % tensors[0].ndim
    ref = tensors[0].shape
    for t in tensors[1:]:
        if t.ndim != len(ref) or any(a != b for i, (a, b) in enumerate(zip(t.shape, ref)) if i != dim):
            raise ValueError(f"cat: shapes {[tuple(t.shape) for t in tensors]} differ outside dim {dim}")
    return Concat.apply(*tensors, axis=dim)


concatenate = cat


def stack(tensors, dim=0):
    """tensors of one shape stacked on a new axis ``dim``"""
    tensors = list(tensors)
    if len({t.shape for t in tensors}) > 1:
        raise ValueError(f"stack: all shapes must be equal, got {[tuple(t.shape) for t in tensors]}")
    return Stack.apply(*tensors, axis=dim % (tensors[0].ndim + 1))


def split(x, split_size_or_sections, dim=0):
    """x cut along ``dim`` into pieces of ``split_size`` (an int) or of the listed sizes"""
    dim = dim % x.ndim
    n = x.shape[dim]
    if isinstance(split_size_or_sections, int):
        sizes = [split_size_or_sections] * (n // split_size_or_sections)
        if n % split_size_or_sections:
            sizes.append(n % split_size_or_sections)
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} do not add up to {n} (dim {dim} of {tuple(x.shape)})")
    return Split.apply(x, bounds=list(numpy.cumsum(sizes)[:-1]), axis=dim)


def chunk(x, chunks, dim=0):
    """x cut along ``dim`` into ``chunks`` pieces of size ceil(n / chunks)"""
    n = x.shape[dim % x.ndim]
    return split(x, -(-n // chunks), dim)


def pad(x, pad, mode="constant", value=0.0):
    """x padded as torch.nn.functional.pad: ``pad`` = (left, right, top, bottom, ...) from the last axis"""
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: {pad} must hold pairs for at most {x.ndim} axes")
    if any(p < 0 for p in pad):
        raise ValueError(f"pad: negative padding {pad} is not supported; slice instead")
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (int(pad[2 * i]), int(pad[2 * i + 1]))
    return Pad.apply(x, widths=tuple(widths), mode=mode, value=value)
