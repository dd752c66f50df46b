"""Shape ops: views, indexing, joining, splitting and padding."""
import numpy

from ..backend import get_array_module
from ..tensor import Function, Tensor

__all__ = ["reshape", "transpose", "permute", "flatten", "unsqueeze", "squeeze", "expand",
           "getitem", "cat", "concatenate", "stack", "split", "chunk", "pad", "scatter_add"]


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


def getitem(x, idx):
    """x[idx] with NumPy's basic and advanced indexing"""
    if isinstance(idx, Tensor):
        idx = idx.data
    elif isinstance(idx, tuple):
        idx = tuple(i.data if isinstance(i, Tensor) else i for i in idx)
    elif isinstance(idx, list):
        idx = get_array_module(x.data).asarray(idx)
    return GetItem.apply(x, idx=idx)


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
