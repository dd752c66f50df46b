"""Folding: BatchNorm into the convolution in front of it (at load time, frozen models), and shape
arithmetic into constants (on the first run at each input shape)."""
from __future__ import annotations

import numpy as np

__all__ = ["fold_batchnorm", "constant_nodes", "SHAPE_ONLY", "SCALE_SHIFT"]

# ops whose output depends only on the shape of their input
SHAPE_ONLY = {"Shape", "Size"}
# the op a BatchNormalization without a foldable convolution becomes: y = x scale + shift per channel
SCALE_SHIFT = "ScaleShift"


def fold_batchnorm(nodes, inits, keep):
    """Fold each inference BatchNormalization into the Conv in front of it:
    w' = w g / sqrt(v + eps),  b' = (b - m) g / sqrt(v + eps) + beta   (per output channel).
    The Conv must feed only this BN (and not be in ``keep``, values the caller asked for) and own its
    weight and bias. A BN without such a Conv becomes ScaleShift: x s + (beta - m s), s = g / sqrt(v + eps).
    Edits ``inits`` in place; returns (nodes, names of the values that no longer exist)."""
    consumers = {}
    for n in nodes:
        for v in n.inputs:
            if v is not None:
                consumers[v] = consumers.get(v, 0) + 1
    producer = {o: n for n in nodes for o in n.outputs if o}
    removed, drop = set(), set()
    for n in nodes:
        if n.op != "BatchNormalization" or len([o for o in n.outputs if o]) != 1:
            continue
        if not all(v in inits for v in n.inputs[1:5]):
            continue
        gamma, beta, mean, var = (inits[v].astype(np.float64) for v in n.inputs[1:5])
        scale = gamma / np.sqrt(var + n.a("epsilon", 1e-5))
        conv = producer.get(n.inputs[0])
        bias = conv.inputs[2] if conv is not None and len(conv.inputs) > 2 else None
        if (conv is not None and conv.op == "Conv" and consumers.get(conv.outputs[0]) == 1
                and conv.outputs[0] not in keep and conv.inputs[1] in inits and consumers.get(conv.inputs[1]) == 1
                and (bias is None or (bias in inits and consumers.get(bias) == 1))):
            w = inits[conv.inputs[1]]
            b = inits[bias].astype(np.float64) if bias is not None else 0.0
            inits[conv.inputs[1]] = (w.astype(np.float64) * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
            bname = bias if bias is not None else n.inputs[2]
            inits[bname] = ((b - mean) * scale + beta).astype(w.dtype)
            removed.add(conv.outputs[0])
            conv.inputs = [conv.inputs[0], conv.inputs[1], bname]
            conv.outputs = list(n.outputs)
            conv.name = f"{conv.name}+{n.name}"
            drop.add(id(n))
        else:
            sname, tname = n.inputs[1], n.inputs[2]
            dt = inits[sname].dtype
            inits[sname] = scale.astype(dt)
            inits[tname] = (beta - mean * scale).astype(dt)
            n.op, n.inputs = SCALE_SHIFT, [n.inputs[0], sname, tname]
    return [n for n in nodes if id(n) not in drop], removed


def constant_nodes(graph, order, constants):
    """The nodes of ``order`` whose outputs are constants: a Shape or Size (of anything: the run's
    input shapes are fixed), or a node whose inputs are all in ``constants`` (initializers that are
    not parameters, values folded before) or computed by such nodes. They run once per input shape."""
    known, out = set(constants), set()
    for i in order:
        n = graph.nodes[i]
        if n.op in SHAPE_ONLY or all(v is None or v in known for v in n.inputs):
            out.add(i)
            known.update(o for o in n.outputs if o)
    return out
