"""Execution strategies beside the interpreter (run.py), for forwards that record no graph:

* in-place reuse: an op whose input dies at it (graph.Step.dying) writes its result into that
  input's array instead of a new one, when the array is the op's own fresh output (FRESH);
* Conv + activation: a Conv whose output only feeds the Relu / Clip right after it runs as one step,
  the convolution kernel (npad.kernels) clipping each block of its output while in cache;
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
from ..functional.conv import _conv_padding, _pair, conv2d_kernel, conv_output_size
from ..tensor import Tensor, is_grad_enabled
from .graph import Node, Step
from .ops import _isint, _window, _wrap, _xp, clip_bounds, implementation

__all__ = ["FRESH", "mark_inplace", "call", "run_split"]

FUSED = "npad.fused"    # attribute of a Conv node that stands for (Conv node, Relu / Clip node) in one step

# ops whose output is always a new array that nothing else references (safe to overwrite later)
FRESH = {"Conv", "ConvTranspose", "BatchNormalization", "ScaleShift", "Add", "Sub", "Mul", "Div", "Relu",
         "Clip", "Sigmoid", "HardSwish", "HardSigmoid", "LeakyRelu", "Tanh", "Exp", "Gemm", "MatMul",
         "MaxPool", "AveragePool", "GlobalAveragePool", "Erf", "Sqrt", "Pow"}


def mark_inplace(graph, steps):
    """Set each step's ``inplace``: the dying input positions whose array a FRESH op made; then join each
    Conv whose only output dies at the Relu / Clip right after it with that step (``_conv_act``)."""
    for step in steps:
        ins = step.node.inputs
        step.inplace = tuple(p for p in step.dying if graph.nodes[graph.producer[ins[p]]].op in FRESH)
    joined = []
    for step in steps:
        prev = joined[-1].node if joined else None
        if (prev is not None and prev.op == "Conv" and step.node.op in ("Relu", "Clip") and FUSED not in prev.attrs
                and not joined[-1].constant and not step.constant and len(prev.outputs) == 1
                and step.node.inputs[0] == prev.outputs[0] and 0 in step.dying):
            act = step.node
            node = Node("Conv", prev.name, prev.inputs + act.inputs[1:], act.outputs,
                        {**prev.attrs, FUSED: (prev, act)}, prev.opset)
            node.dtype = prev.dtype
            fused = Step(node, False)
            fused.frees = joined[-1].frees + step.frees
            joined[-1] = fused
        else:
            joined.append(step)
    steps[:] = joined


def _conv_act(node, args, recording):
    """Conv + Relu / Clip (a step ``mark_inplace`` joined): when nothing records and a conv kernel serves the
    NumPy arrays, one kernel call that clips while in cache; else the op table's Conv, then the activation."""
    conv, act = node.a(FUSED)
    cargs, aargs = args[:len(conv.inputs)], args[len(conv.inputs):]
    recording = recording or (is_grad_enabled() and any(a is not None and a.requires_grad for a in args)) or \
        get_array_module(*args) is not np                               # CuPy: the op table's kernels
    y = None if recording else _clipped_conv(conv, act, cargs, aargs)
    if y is not None:
        return y
    y = implementation("Conv")(conv, *cargs)
    fast = None if recording else UNRECORDED[act.op](act, (0,), y, *aargs)
    return implementation(act.op)(act, y, *aargs) if fast is None else fast


def _clipped_conv(conv, act, cargs, aargs):
    """The 2-D conv of ``conv`` on cargs clipped to ``act``'s bounds by its kernel (``npad.kernels``), or None
    when no kernel serves it (CuPy, NPAD_REFERENCE, bad shapes: the op table handles and reports those)."""
    x, w, b = cargs[0], cargs[1], (cargs[2] if len(cargs) > 2 else None)
    lo, hi = (0, None) if act.op == "Relu" else clip_bounds(act, *aargs)
    if x.ndim != 4 or w.ndim != 4 or _isint(x) or (lo is None and hi is None):
        return None
    _, s, d, padding = _window(conv, x, w.shape[2:])
    (B, C, H, W), (O, Cg, KH, KW), groups = x.shape, w.shape, conv.a("group", 1)
    stride, dilation = _pair(s), _pair(d)
    pads = _conv_padding(padding, (H, W), (KH, KW), stride, dilation)
    size = (conv_output_size(H, KH, stride[0], pads[0], pads[1], dilation[0]),
            conv_output_size(W, KW, stride[1], pads[2], pads[3], dilation[1]))
    if C != Cg * groups or O % groups or min(size) <= 0:
        return None
    kernel = conv2d_kernel(x.data, w.data, stride, pads, dilation, groups, size)
    if kernel is None:
        return None
    return _wrap(kernel.forward(x.data, w.data, None if b is None else b.data, False, clip=(lo, hi)))


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
    when the op itself is recorded (a joined Conv + activation runs its two ops then). While any op of
    the run records, no input array is overwritten (a recorded op may have saved it for its backward)."""
    if FUSED in step.node.attrs:
        return _conv_act(step.node, args, recording)
    fn = UNRECORDED.get(step.node.op)
    if fn is None or get_array_module(*args) is not np or \
            (is_grad_enabled() and any(a is not None and a.requires_grad for a in args)):
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
