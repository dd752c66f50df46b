"""Module and Parameter, as torch.nn.Module and torch.nn.Parameter.

Parameters, buffers and submodules are registered in insertion order, so
``state_dict()`` keys come out in a fixed order with PyTorch's dotted names
(``"encoder.0.weight"``) and checkpoints map onto PyTorch's.
"""
from collections import OrderedDict

import numpy

from ..backend import device_xp, get_array_module
from ..tensor import Tensor, _device_dtype


class Parameter(Tensor):
    """A tensor that a Module registers as trainable (requires_grad=True by default)."""

    def __init__(self, data, requires_grad=True):
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class _HookHandle:
    def __init__(self, hooks, key):
        self.hooks, self.key = hooks, key

    def remove(self):
        self.hooks.pop(self.key, None)


class Module:
    """Base class of all layers and models: ``forward`` defines the computation."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning {name!r}")
        for d in (self._parameters, self._buffers, self._modules):
            d.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif name in self.__dict__.get("_buffer_names", ()):
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)
            return
        self.__dict__.pop(name, None)

    def __getattr__(self, name):
        for d in ("_parameters", "_buffers", "_modules"):
            table = self.__dict__.get(d)
            if table is not None and name in table:
                return table[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for d in (self._parameters, self._buffers, self._modules):
            if name in d:
                del d[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name, tensor):
        """A tensor saved in state_dict but not trained (e.g. BatchNorm running statistics)."""
        names = self.__dict__.setdefault("_buffer_names", set())
        names.add(name)
        self.__dict__.pop(name, None)
        self._buffers[name] = tensor if tensor is None or isinstance(tensor, Tensor) else Tensor(tensor)

    def register_parameter(self, name, param):
        if param is None:
            object.__setattr__(self, name, None)
        else:
            self._parameters[name] = param

    def add_module(self, name, module):
        self._modules[name] = module

    # ---- calling ------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        out = self.forward(*args, **kwargs)
        if self._forward_hooks:
            for hook in list(self._forward_hooks.values()):
                r = hook(self, args, out)
                if r is not None:
                    out = r
        return out

    def register_forward_hook(self, hook):
        """Call ``hook(module, inputs, output)`` after every forward; returns a handle with .remove()."""
        key = object()
        self._forward_hooks[key] = hook
        return _HookHandle(self._forward_hooks, key)

    # ---- traversal ------------------------------------------------------------
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_children(self):
        return ((n, m) for n, m in self._modules.items() if m is not None)

    def children(self):
        return (m for _, m in self.named_children())

    def get_submodule(self, target):
        """The submodule at a dotted path such as ``"encoder.3"``."""
        m = self
        for part in target.split(".") if target else []:
            if part not in m._modules:
                raise AttributeError(f"{type(self).__name__} has no submodule {target!r} "
                                     f"(no {part!r} in {type(m).__name__}: {list(m._modules)})")
            m = m._modules[part]
        return m

    def named_parameters(self, prefix="", recurse=True):
        seen = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mp, m in mods:
            for n, p in m._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{mp}.{n}" if mp else n), p

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix=""):
        for mp, m in self.named_modules(prefix):
            for n, b in m._buffers.items():
                if b is not None:
                    yield (f"{mp}.{n}" if mp else n), b

    def buffers(self):
        return (b for _, b in self.named_buffers())

    # ---- state ---------------------------------------------------------------------
    def state_dict(self):
        """OrderedDict of dotted name -> array (NumPy or CuPy) for every parameter and buffer."""
        out = OrderedDict()
        for mp, m in self.named_modules():
            for table in (m._parameters, m._buffers):
                for n, t in table.items():
                    if t is not None:
                        out[f"{mp}.{n}" if mp else n] = t.data
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters and buffers; with strict, keys must match exactly."""
        own = OrderedDict()
        for mp, m in self.named_modules():
            for table in (m._parameters, m._buffers):
                for n, t in table.items():
                    if t is not None:
                        own[f"{mp}.{n}" if mp else n] = t
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict for {type(self).__name__}: missing keys {missing}, "
                           f"unexpected keys {unexpected}")
        for k, t in own.items():
            if k not in state_dict:
                continue
            v = state_dict[k]
            v = v.data if isinstance(v, Tensor) else v
            if tuple(v.shape) != tuple(t.shape):
                raise ValueError(f"load_state_dict for {type(self).__name__}: {k!r} has shape "
                                 f"{tuple(v.shape)} in the state dict but {tuple(t.shape)} in the model")
            xp = get_array_module(t.data)
            t.data = xp.array(v.get() if hasattr(v, "get") and xp is numpy else v, dtype=t.dtype)
        return missing, unexpected

    # ---- modes and devices ------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        """Freeze (False) or unfreeze every parameter."""
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            p.grad = None

    def apply(self, fn):
        """Call ``fn(module)`` on every submodule, then on self (as torch, e.g. to initialise weights)."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def _apply(self, fn):
        for t in list(self.parameters()) + list(self.buffers()):
            t.data = fn(t.data)
            if t.grad is not None:
                t.grad = None
        return self

    def to(self, *args, device=None, dtype=None):
        """Move parameters and buffers to a device and/or cast floating ones to a dtype, in place:
        ``to("cuda")``, ``to(npad.float64)``, ``to(device=..., dtype=...)``."""
        device, dtype = _device_dtype(args, device, dtype)
        if device is not None:
            xp = device_xp(device)
            self._apply(lambda a: a.get() if xp is numpy and hasattr(a, "get") else xp.asarray(a))
        if dtype is not None:
            self._apply(lambda a: a.astype(dtype) if a.dtype.kind == "f" else a)
        return self

    def cuda(self):
        return self.to("cuda")

    def cpu(self):
        return self.to("cpu")

    def double(self):
        return self.to(dtype=numpy.float64)

    def float(self):
        return self.to(dtype=numpy.float32)

    def num_parameters(self):
        """Total number of parameter elements."""
        return sum(int(p.data.size) for p in self.parameters())

    # ---- printing -------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"  ({n}): " + repr(m).replace("\n", "\n  ") for n, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ("\n" + "\n".join(lines) + "\n)" if lines else ")")
