"""Execution strategies beside the interpreter (run.py), for forwards that record no graph:

* in-place reuse: an op whose input dies at it (graph.Step.dying) writes its result into that
  input's array instead of a new one, when the array is the op's own fresh output (FRESH);
* a few elementwise ops as single passes over the batch split across npad's threads (Clip, Relu)
  or in one buffer (Sigmoid);
* the batch split (:func:`run_split`): each thread runs the whole graph on a slice of the batch with
  one BLAS thread, so an op's slice stays in its core's caches and no core waits for the other
  between ops. Only after ``npad.tune_cpu()`` (``backend.cpu_tuned()``).

Each result equals the op table's (ops.py) to the bit; deleting this module leaves a slower importer.
"""
from __future__ import annotations

import threading

import numpy as np

from ..backend import batch_slices, blas_threads, get_array_module, parallel_over
from ..tensor import Tensor, is_grad_enabled
from .ops import _isint, _wrap, _xp, clip_bounds

__all__ = ["FRESH", "mark_inplace", "call", "run_split"]

# ops whose output is always a new array that nothing else references (safe to overwrite later)
FRESH = {"Conv", "ConvTranspose", "BatchNormalization", "ScaleShift", "Add", "Sub", "Mul", "Div", "Relu",
         "Clip", "Sigmoid", "HardSwish", "HardSigmoid", "LeakyRelu", "Tanh", "Exp", "Gemm", "MatMul",
         "MaxPool", "AveragePool", "GlobalAveragePool", "Erf", "Sqrt", "Pow"}


def mark_inplace(graph, steps):
    """Set each step's ``inplace``: the dying input positions whose array a FRESH op made."""
    for step in steps:
        ins = step.node.inputs
        step.inplace = tuple(p for p in step.dying if graph.nodes[graph.producer[ins[p]]].op in FRESH)


def _into(inplace, i, x):
    """Where to write a result computed from input ``i``: its own array when it dies here, else None."""
    return x.data if i in inplace else None


def _clip(inplace, x, lo, hi):
    """min(max(x, lo), hi) in one pass, split over the batch in threads. A missing bound is passed as
    -inf / inf: NumPy's clip with both bounds is vectorised, with one of them None it is not (3x slower)."""
    xp, y = _xp(x), x.data
    lo, hi = (-np.inf if lo is None else lo), (np.inf if hi is None else hi)
    if y.ndim == 0:
        return _wrap(xp.clip(y, lo, hi))
    out = _into(inplace, 0, x)
    out = xp.empty_like(y) if out is None else out
    parallel_over(y.shape[0], lambda s: xp.clip(y[s], lo, hi, out=out[s]), xp)
    return _wrap(out)


def _clip_op(n, inplace, x, lo=None, hi=None):
    lo, hi = clip_bounds(n, lo, hi)
    return None if _isint(x) or (lo is None and hi is None) else _clip(inplace, x, lo, hi)


def _sigmoid(n, inplace, x):
    """0.5 (tanh(x / 2) + 1), F.sigmoid's formula, in one buffer."""
    xp = _xp(x)
    y = xp.multiply(x.data, 0.5, out=_into(inplace, 0, x))
    xp.tanh(y, out=y)
    y += 1
    y *= 0.5
    return _wrap(y)


def _binary(ufunc):
    """a (op) b written into whichever float input dies here and already has the result's shape and dtype."""
    def op(n, inplace, a, b):
        if not inplace or _isint(a) or _isint(b):
            return None
        for i, t in ((0, a), (1, b)):
            if i in inplace and t.shape == np.broadcast_shapes(a.shape, b.shape) and \
                    t.dtype == np.result_type(a.dtype, b.dtype):
                return _wrap(getattr(_xp(a), ufunc)(a.data, b.data, out=t.data))
        return None
    return op


#: op type -> fn(node, inplace positions, *inputs): the result, or None to use the op table
UNRECORDED = {
    "Relu": lambda n, inplace, x: _clip(inplace, x, 0, None),
    "Clip": _clip_op,
    "Sigmoid": _sigmoid,
    "Add": _binary("add"),
    "Sub": _binary("subtract"),
    "Mul": _binary("multiply"),
    "Div": _binary("divide"),
}


def call(step, args, recording):
    """The fast result of ``step`` on ``args``, or None (then the op table's function runs): always None
    when the op itself is recorded. While any op of the run records, no input array is overwritten
    (a recorded op may have saved it for its backward)."""
    fn = UNRECORDED.get(step.node.op)
    if fn is None or (is_grad_enabled() and any(a is not None and a.requires_grad for a in args)):
        return None
    return fn(step.node, () if recording else step.inplace, *args)


def run_split(module, feeds, targets):
    """The values ``targets`` of an unrecorded NumPy run of ``module`` on ``feeds`` with the batch split
    over npad's threads (``backend.parallel_over``), each slice run with one BLAS thread. The first run
    at a slice shape runs the slices one after the other, which folds that shape's constants and checks
    that every target is batch-major. None when the split does not apply: one thread or image, CuPy, a
    batch dimension fixed in the graph, a non-batch-major target, a graph being recorded."""
    first = next(iter(feeds.values()), None)
    B = first.shape[0] if first is not None and first.ndim else 0
    slices = batch_slices(B)                                        # one per thread
    if (len(slices) < 2 or get_array_module(first.data) is not np
            or threading.current_thread().name.startswith("npad-pool")
            or any(t.ndim == 0 or t.shape[0] != B for t in feeds.values())
            or any((module.input_dims.get(k) or (0,))[0] is not None for k in feeds)
            or module._records(feeds.values())):
        return None
    keys = {s.stop - s.start: tuple(((s.stop - s.start,) + tuple(t.shape[1:]), t.dtype.str)
                                    for t in feeds.values()) for s in slices}
    if any(module._split.get(key) is False for key in keys.values()):
        return None

    def run(s):
        part = module._execute({n: Tensor(t.data[s]) for n, t in feeds.items()}, targets)
        return [v.data for v in part]
    with blas_threads(1) as limited:
        if not limited:
            return None
        settled = all(module._split.get(key) for key in keys.values())
        parts = parallel_over(B, run, slices=slices) if settled else [run(s) for s in slices]
    if not settled:
        ok = all(v.ndim and v.shape[0] == s.stop - s.start for p, s in zip(parts, slices) for v in p)
        module._split.update({key: ok for key in keys.values()})
        if not ok:
            return None
    return [Tensor(np.concatenate(col)) for col in zip(*parts)]
