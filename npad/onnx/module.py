"""OnnxModule: an ONNX graph as an npad Module (parameters, buffers, forward, run)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .. import backend as _backend
from .. import functional as F
from ..backend import get_array_module
from ..nn.module import Module, Parameter, _HookHandle
from ..tensor import Tensor, is_grad_enabled, no_grad
from . import fast
from .fold import constant_nodes, fold_batchnorm
from .graph import Graph
from .load import load_onnx, read_nodes
from .ops import OPS, STATIC_INPUTS, _wrap
from .run import execute

__all__ = ["OnnxModule"]


class OnnxModule(Module):
    """An ONNX graph as an npad Module.

    ``model``: a path (``.onnx``, external data next to it is loaded) or an
    ``onnx.ModelProto``.  ``frozen=True`` folds BatchNorm into the convolutions
    and freezes the parameters (``requires_grad_(True)`` unfreezes them later);
    ``frozen=False`` keeps BN and makes every parameter trainable.
    ``outputs``: ONNX value names to return instead of the graph outputs (feature
    taps; the graph is cut after the deepest one).

    ``forward(*inputs, taps=None)`` returns the graph outputs (one Tensor when the
    graph has one output, else a list), or a list of the ``taps`` / ``outputs``
    values in the order asked for. :meth:`run` takes value names and overrides;
    :meth:`register_value_hook` sees (and may replace) a value during every forward.
    """

    def __init__(self, model, frozen=True, outputs=None):
        super().__init__()
        source = model if isinstance(model, (str, Path)) else "<ModelProto>"
        proto = load_onnx(model)
        nodes, inits, opset = read_nodes(proto, source, OPS)
        object.__setattr__(self, "source", str(source))
        object.__setattr__(self, "frozen", bool(frozen))
        object.__setattr__(self, "opset", opset)
        g = proto.graph
        self.input_names = [i.name for i in g.input if i.name not in inits]
        self.output_names = [o.name for o in g.output]
        self.input_dims = {}   # input name -> declared dims (None where symbolic), or None
        for i in g.input:
            if i.name not in inits:
                tt = i.type.tensor_type
                self.input_dims[i.name] = (tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
                                           if tt.HasField("shape") else None)
        folded = set()
        if frozen:
            nodes, folded = fold_batchnorm(nodes, inits, set(outputs or ()) | set(self.output_names))
        self._add_initializers(nodes, inits, frozen, set(outputs or ()) | set(self.output_names))
        object.__setattr__(self, "graph", Graph(nodes))
        object.__setattr__(self, "_known", frozenset(self.graph.producer) | set(self._consts)
                           | set(self._value_attr) | set(self.input_names))
        object.__setattr__(self, "folded_values", frozenset(folded))   # values BatchNorm folding removed
        object.__setattr__(self, "_static", {})       # input key -> {value: folded NumPy array}
        object.__setattr__(self, "_plans", {})        # (input key, targets, hooked values) -> (len(static), steps)
        object.__setattr__(self, "_split", {})        # input key of a batch slice -> can it run in threads
        object.__setattr__(self, "_value_hooks", {})  # handle key -> (value name, hook)
        object.__setattr__(self, "_node_dtype", None)
        self.outputs = list(outputs) if outputs is not None else None
        if self.outputs is not None:
            self.check_values(self.outputs)
        if frozen:
            self.eval()

    def _add_initializers(self, nodes, inits, frozen, wanted):
        """Float initializers feeding computation become parameters (BatchNorm statistics: buffers),
        under sanitized names; shape-like arguments, integers and scalars stay NumPy constants."""
        dynamic, bn_stats = set(), set()
        for n in nodes:
            static = STATIC_INPUTS.get(n.op, set())
            for pos, v in enumerate(n.inputs):
                if v is not None and n.op == "BatchNormalization" and pos in (3, 4):
                    bn_stats.add(v)
                elif v is not None and pos not in static:
                    dynamic.add(v)
        used = {v for n in nodes for v in n.inputs if v is not None} | wanted
        taken, consts = set(), {}
        self._value_attr = {}      # ONNX value name -> attribute name of a parameter/buffer
        for name, arr in inits.items():
            if name not in used:
                continue   # e.g. the statistics of a folded BatchNorm
            if arr.dtype.kind == "f" and arr.ndim > 0 and (name in dynamic or name in bn_stats):
                attr = _sanitize(name, taken)
                if name in bn_stats:
                    self.register_buffer(attr, Tensor(arr))
                else:
                    self.register_parameter(attr, Parameter(arr, requires_grad=not frozen))
                self._value_attr[name] = attr
            else:
                consts[name] = arr
        object.__setattr__(self, "_consts", consts)

    # ---- values ------------------------------------------------------------------------
    def value_names(self):
        """The names of the values a run can return or override: the graph inputs, then every computed
        value in node order (after BatchNorm folding when frozen)."""
        return list(self.input_names) + self.graph.value_names()

    def check_values(self, names):
        """Raise a KeyError naming each of ``names`` the graph does not hold (or folding removed)."""
        bad = [t for t in names if t not in self._known]
        if not bad:
            return
        folded = [t for t in bad if t in self.folded_values]
        if folded:
            raise KeyError(f"{self.source}: values {folded} were folded away (BatchNorm folded into the "
                           "convolution); tap the BatchNorm output, or load with frozen=False")
        raise KeyError(f"{self.source}: no values named {bad} in the graph; e.g. {self.graph.value_names()[-8:]} "
                       "(list them all with npad.onnx.list_values(path, input_shape) or .value_shapes())")

    @property
    def dtype(self):
        """The float dtype of the parameters (None when the graph has none)."""
        for t in list(self._parameters.values()) + list(self._buffers.values()):
            return t.dtype
        return None

    def _feeds(self, inputs):
        """{input name: Tensor} of one value, a sequence (graph input order) or a dict; float inputs are
        cast to the module's dtype."""
        if isinstance(inputs, dict):
            missing = [k for k in self.input_names if k not in inputs]
            if missing or len(inputs) != len(self.input_names):
                raise TypeError(f"{self.source}: the model takes the inputs {self.input_names}, got {list(inputs)}")
            inputs = [inputs[k] for k in self.input_names]
        elif not isinstance(inputs, (list, tuple)):
            inputs = [inputs]
        if len(inputs) != len(self.input_names):
            raise TypeError(f"{self.source}: the model takes {len(self.input_names)} input(s) "
                            f"{self.input_names}, got {len(inputs)}")
        feeds, fdt = {}, self.dtype
        for name, x in zip(self.input_names, inputs):
            x = x if isinstance(x, Tensor) else Tensor(x)
            dims = self.input_dims.get(name)
            if dims is not None:
                if len(dims) != x.ndim:
                    raise ValueError(f"{self.source}: input {name!r} must have {len(dims)} dimensions "
                                     f"{_fmt_dims(dims)}, got shape {tuple(x.shape)}")
                if x.ndim >= 2 and dims[1] is not None and dims[1] != x.shape[1]:
                    raise ValueError(f"{self.source}: input {name!r} must have {dims[1]} channels (dim 1 of "
                                     f"{_fmt_dims(dims)}), got shape {tuple(x.shape)}")
            feeds[name] = F.astype(x, fdt) if x.dtype.kind == "f" and fdt is not None and x.dtype != fdt else x
        return feeds

    def _records(self, tensors):
        """True when a run on ``tensors`` records a graph (grad mode on, and one of them or a parameter
        needs a gradient)."""
        return is_grad_enabled() and (any(t.requires_grad for t in tensors)
                                      or any(p.requires_grad for p in self._parameters.values()))

    # ---- running -----------------------------------------------------------------------
    def forward(self, *inputs, taps=None):
        hooks = {}
        for name, hook in self._value_hooks.values():
            hooks.setdefault(name, []).append(hook)
        vals = self.run(inputs, taps, {name: _chain(fns) for name, fns in hooks.items()})
        if taps is None and self.outputs is None and len(vals) == 1:
            return vals[0]
        return vals

    def run(self, inputs, outputs=None, overrides=None):
        """Run the graph on ``inputs`` and return the values named ``outputs``, a list of Tensors in that order.

        ``inputs``: one Tensor or array, a sequence in the order of ``input_names``, or a dict {input
        name: value}. ``outputs``: value names (default: the module's ``outputs``, else the graph
        outputs); only the nodes they need run. ``overrides`` {value name: Tensor or callable}: a Tensor
        is taken as that value (nodes needed only for it are skipped; gradients flow into it when it
        requires grad); a callable fn(value) -> Tensor (or None: unchanged) replaces the value as it is
        computed. Hooks registered with :meth:`register_value_hook` apply to forward calls, not here."""
        feeds = self._feeds(inputs)
        outputs = [outputs] if isinstance(outputs, str) else outputs
        targets = list(self.outputs or self.output_names) if outputs is None else list(outputs)
        overrides = dict(overrides or {})
        self.check_values(targets + list(overrides))
        given = {k: v for k, v in overrides.items() if not callable(v)}
        for k, v in given.items():
            if not isinstance(v, Tensor):
                raise TypeError(f"{self.source}: override {k!r} must be a Tensor or a callable, got {type(v).__name__}")
        hooks = {k: v for k, v in overrides.items() if callable(v)}
        if not overrides and _backend.cpu_tuned():
            vals = fast.run_split(self, feeds, tuple(targets))
            if vals is not None:
                return vals
        return self._execute(feeds, tuple(targets), given, hooks)

    def register_value_hook(self, name, hook):
        """Call ``hook(value)`` whenever a forward computes the value ``name``; a Tensor it returns replaces
        the value for the nodes downstream (a forward hook for one value of the graph). Returns a handle
        with ``.remove()``."""
        self.check_values([name])
        key = object()
        self._value_hooks[key] = (name, hook)
        return _HookHandle(self._value_hooks, key)

    def _execute(self, feeds, targets, given=None, hooks=None, timing=None):
        """The interpreter run of run(): plan (cached per input shapes, targets and hooked values), then
        run.execute."""
        hooks = hooks or {}
        env = {**feeds, **(given or {})}
        for k in set(feeds) & set(hooks):   # hooks on graph inputs see them before any node
            hooked = hooks[k](env[k])
            env[k] = env[k] if hooked is None else hooked
        key = tuple((k, tuple(t.shape), t.dtype.str) for k, t in env.items())
        static = self._static.setdefault(key, {})
        pkey = (key, targets, frozenset(hooks))
        cached = self._plans.get(pkey)
        if cached is None or cached[0] != len(static):   # constants were folded since: a shorter plan
            cached = self._plans[pkey] = (len(static), self._plan(targets, set(env), static, set(targets) | set(hooks)))
        first = next(iter(env.values()), None)
        xp = get_array_module(first.data) if first is not None else np
        dtype = self.dtype
        if dtype != self._node_dtype:   # Cast follows the module's dtype (ops.py), also after a parent's .to()
            for n in self.graph.nodes:
                n.dtype = dtype
            object.__setattr__(self, "_node_dtype", dtype)
        fetch = self._fetcher(static, xp)
        execute(cached[1], env, static, fetch, hooks, self._records(env.values()), self.source, timing)
        return [env[t] if t in env else fetch(t, False) for t in targets]

    def _plan(self, targets, known, static, keep):
        """The steps computing ``targets`` from the values ``known`` (inputs, overrides)."""
        constants = (set(self._consts) | set(static)) - known
        order = self.graph.needed(targets, known | constants | set(self._value_attr))
        steps = self.graph.schedule(order, constant_nodes(self.graph, order, constants), keep)
        fast.mark_inplace(self.graph, steps)
        return steps

    def _fetcher(self, static, xp):
        """fetch(value, host): a parameter or buffer, or a constant as a Tensor (on the device unless host)."""
        def fetch(v, host):
            a = static[v] if v in static else self._consts.get(v)
            if a is None:
                return getattr(self, self._value_attr[v])
            return _wrap(a if host or xp is np else xp.asarray(a))
        return fetch

    # ---- utilities -----------------------------------------------------------------------
    def to(self, device=None, dtype=None):
        super().to(device=device, dtype=dtype)
        if dtype is not None:
            for k, v in list(self._consts.items()):
                if v.dtype.kind == "f":
                    self._consts[k] = v.astype(dtype)
            self._static.clear()
            self._plans.clear()
            self._split.clear()
        return self

    def profile(self, *inputs, repeat=3):
        """Seconds per op type of one forward under no_grad (best of ``repeat`` runs), largest first."""
        best = None
        for _ in range(repeat):
            t = {}
            with no_grad():
                self._execute(self._feeds(inputs), tuple(self.outputs or self.output_names), timing=t)
            best = t if best is None else {k: min(v, t.get(k, v)) for k, v in best.items()}
        return dict(sorted(best.items(), key=lambda kv: -kv[1]))

    def value_shapes(self, input_shape=(1, 3, 224, 224)):
        """[(value name, shape)] of every value computed for one zero input of ``input_shape``
        (in node order, after BatchNorm folding when frozen)."""
        shapes = [input_shape] if isinstance(input_shape[0], int) else list(input_shape)
        ref = next(iter(self._parameters.values()), None)
        xp = get_array_module(ref.data) if ref is not None else np
        xs = [_wrap(xp.zeros(s, self.dtype or np.float32)) for s in shapes]
        names = self.graph.value_names()
        with no_grad():
            vals = self._execute(self._feeds(xs), tuple(names))
        return [(k, tuple(x.shape)) for k, x in zip(self.input_names, xs)] + \
               [(k, tuple(v.shape)) for k, v in zip(names, vals)]

    def extra_repr(self):
        return (f"{self.source!r}, opset={self.opset}, nodes={len(self.graph.nodes)}, frozen={self.frozen}, "
                f"inputs={self.input_names}, outputs={self.outputs or self.output_names}")

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"


def _chain(hooks):
    """One hook running ``hooks`` in turn, each on the value the previous one left."""
    def run(value):
        for hook in hooks:
            out = hook(value)
            value = value if out is None else out
        return value
    return run


def _sanitize(name, taken):
    """A Python identifier for a parameter name ("layer1.0.conv1.weight" -> "layer1_0_conv1_weight"), unique."""
    s = re.sub(r"[^0-9a-zA-Z_]", "_", name).strip("_") or "param"
    if s[0].isdigit():
        s = "p_" + s
    base, i = s, 1
    while s in taken:
        i += 1
        s = f"{base}_{i}"
    taken.add(s)
    return s


def _fmt_dims(dims):
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
