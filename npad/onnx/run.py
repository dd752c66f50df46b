"""The interpreter: run a plan's steps (graph.py) one after the other, each calling its op (ops.py).

``env`` maps value names to the Tensors computed so far; a step reads its inputs from it (or, for
parameters and constants, from ``fetch``), writes its outputs into it and drops the values that die
after it. A constant step (fold.py) writes into ``static`` instead, kept for the next runs at the same
input shapes. ``hooks`` {value: fn} pass a value through fn(value) -> Tensor (or None: unchanged) as it
is computed. Errors name the node, its op and its input shapes.
"""
from __future__ import annotations

import time

from ..tensor import is_grad_enabled, no_grad
from . import fast
from .load import OnnxRuntimeError, UnsupportedOpError
from .ops import _arr, implementation

__all__ = ["execute"]


def execute(steps, env, static, fetch, hooks, recording, source, timing=None):
    """Run ``steps`` on ``env`` (the inputs and given values); returns ``env`` with the results.
    ``recording``: a graph is being recorded (then no input array may be overwritten)."""
    for step in steps:
        node = step.node
        args = [None if v is None else env[v] if v in env else fetch(v, step.constant) for v in node.inputs]
        t0 = time.perf_counter() if timing is not None else 0.0
        out = _call(step, args, recording, source)
        if timing is not None:
            timing[node.op] = timing.get(node.op, 0.0) + time.perf_counter() - t0
        for name, value in zip(node.outputs, out if isinstance(out, tuple) else (out,)):
            if name and step.constant:
                static[name] = _arr(value)
            elif name:
                if name in hooks:
                    hooked = hooks[name](value)
                    value = value if hooked is None else hooked
                    recording = recording or (is_grad_enabled() and value.requires_grad)
                env[name] = value
        for v in step.frees:
            env.pop(v, None)
    return env


def _call(step, args, recording, source):
    node = step.node
    try:
        if step.constant:
            with no_grad():
                return implementation(node.op)(node, *args)
        out = fast.call(step, args, recording)
        return implementation(node.op)(node, *args) if out is None else out
    except (UnsupportedOpError, NotImplementedError) as e:
        raise UnsupportedOpError(f"{source}: node {node.name!r} ({node.op}): {e}") from e
    except Exception as e:  # noqa: BLE001
        shapes = [None if a is None else tuple(a.shape) for a in args]
        raise OnnxRuntimeError(f"{source}: node {node.name!r} ({node.op}) with input shapes {shapes} failed: "
                               f"{type(e).__name__}: {e}") from e
