"""The graph: nodes in topological order, which node produces each value, and the plan of one run
(only the nodes the requested values need, each value dropped right after its last use)."""
from __future__ import annotations

__all__ = ["Node", "Step", "Graph"]


class Node:
    """One graph node: op type, name, input/output value names (a missing optional input is None),
    attributes, the model's opset, and ``dtype``, the float dtype the module computes in."""
    __slots__ = ("op", "name", "inputs", "outputs", "attrs", "opset", "dtype")

    def __init__(self, op, name, inputs, outputs, attrs, opset):
        self.op, self.name, self.inputs, self.outputs = op, name, list(inputs), list(outputs)
        self.attrs, self.opset, self.dtype = attrs, opset, None

    def a(self, key, default=None):
        """The attribute ``key`` (``default`` when the node does not set it)."""
        return self.attrs.get(key, default)

    def __repr__(self):
        return f"{self.op}({self.name!r}: {self.inputs} -> {self.outputs})"


class Step:
    """One node of a run's plan: ``constant`` (its outputs depend only on constants and input shapes:
    computed once per input shape, then skipped), ``frees`` (values dropped after it), ``dying``
    (input positions whose value dies here: their arrays may be overwritten when nothing records)."""
    __slots__ = ("node", "constant", "frees", "dying", "inplace")

    def __init__(self, node, constant):
        self.node, self.constant, self.frees, self.dying, self.inplace = node, constant, [], (), ()

    def __repr__(self):
        return f"Step({self.node!r}{', constant' if self.constant else ''})"


class Graph:
    """Nodes in topological order; ``producer`` maps each computed value to its node's index."""

    def __init__(self, nodes):
        self.nodes = list(nodes)
        self.producer = {o: i for i, n in enumerate(self.nodes) for o in n.outputs if o}

    def needed(self, targets, leaves):
        """Indices (in graph order) of the nodes that computing ``targets`` needs when the values in
        ``leaves`` are known: everything past the deepest target, or only upstream of a leaf, is pruned."""
        need, stack, seen = set(), list(targets), set()
        while stack:
            v = stack.pop()
            if v in seen or v in leaves:
                continue
            seen.add(v)
            i = self.producer[v]
            if i not in need:
                need.add(i)
                stack.extend(x for x in self.nodes[i].inputs if x is not None)
        return sorted(need)

    def schedule(self, order, constant, keep):
        """Steps for the nodes ``order``: ``constant`` is the set of those folded to constants; a value
        computed by another step dies after its last use unless it is in ``keep`` (the targets)."""
        steps = [Step(self.nodes[i], i in constant) for i in order]
        computed = {o for i in order if i not in constant for o in self.nodes[i].outputs if o}
        last = {}
        for s, step in enumerate(steps):
            for v in step.node.inputs:
                if v in computed and v not in keep:
                    last[v] = s
        for v, s in last.items():
            steps[s].frees.append(v)
        for step in steps:
            ins = step.node.inputs
            step.dying = tuple(p for p, v in enumerate(ins) if v in step.frees and ins.count(v) == 1)
        return steps

    def value_names(self):
        """Every computed value, in node order."""
        return [o for n in self.nodes for o in n.outputs if o]
