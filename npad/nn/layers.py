"""Basic layers: Linear, containers (Sequential, ModuleList, ModuleDict), Dropout, Embedding, LayerNorm, activations."""
from collections import OrderedDict

from .. import functional as F
from ..tensor import empty, ones, zeros
from . import init
from .module import Module, Parameter


class Identity(Module):
    """y = x"""
    def forward(self, x):
        return x


class Linear(Module):
    """y = x W^T + b, W: out_features x in_features (PyTorch's default initialisation)."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(empty(out_features, in_features))
        self.bias = Parameter(empty(out_features)) if bias else None
        init.default_init_(self.weight, self.bias)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Sequential(Module):
    """Modules applied in order; indexable like a list; built from modules or an OrderedDict."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    def __getitem__(self, i):
        mods = list(self._modules.values())
        return Sequential(*mods[i]) if isinstance(i, slice) else mods[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x


class ModuleList(Module):
    """A list of modules, registered so their parameters are found."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def __getitem__(self, i):
        mods = list(self._modules.values())
        return ModuleList(mods[i]) if isinstance(i, slice) else mods[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class ModuleDict(Module):
    """An ordered dict of modules, registered under their keys (state_dict names "key.weight")."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def update(self, modules):
        for key, m in (modules.items() if hasattr(modules, "items") else modules):
            self.add_module(key, m)

    def pop(self, key):
        return self._modules.pop(key)


class Dropout(Module):
    """Zero elements with probability p in training mode (scaled by 1/(1-p))."""

    def __init__(self, p=0.5):
        super().__init__()
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class Embedding(Module):
    """A lookup table of num_embeddings vectors of size embedding_dim, initialised N(0, 1)."""

    def __init__(self, num_embeddings, embedding_dim):
        super().__init__()
        self.weight = Parameter(empty(num_embeddings, embedding_dim))
        init.normal_(self.weight)

    def forward(self, idx):
        return F.embedding(idx, self.weight)


class LayerNorm(Module):
    """(x - mean) / sqrt(var + eps) * weight + bias over the trailing normalized_shape."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        self.weight = Parameter(ones(*shape), requires_grad=elementwise_affine)
        self.bias = Parameter(zeros(*shape), requires_grad=elementwise_affine)

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"


def _activation(name, fn, doc, **defaults):
    """A Module class wrapping the functional activation ``fn`` with keyword options."""
    def __init__(self, *args, **kwargs):
        Module.__init__(self)
        opts = dict(defaults)
        opts.update(zip(defaults, args))
        opts.update(kwargs)
        self.opts = opts

    def forward(self, x):
        return fn(x, **self.opts)

    def extra_repr(self):
        return ", ".join(f"{k}={v}" for k, v in self.opts.items())

    return type(name, (Module,), {"__init__": __init__, "forward": forward, "extra_repr": extra_repr,
                                  "__doc__": doc})


ReLU = _activation("ReLU", F.relu, "max(x, 0)")
ReLU6 = _activation("ReLU6", F.relu6, "min(max(x, 0), 6)")
LeakyReLU = _activation("LeakyReLU", F.leaky_relu, "x if x > 0 else slope x", negative_slope=0.01)
Sigmoid = _activation("Sigmoid", F.sigmoid, "1 / (1 + exp(-x))")
Tanh = _activation("Tanh", F.tanh, "tanh(x)")
Softplus = _activation("Softplus", F.softplus, "log(1 + exp(beta x)) / beta", beta=1.0, threshold=20.0)
SiLU = _activation("SiLU", F.silu, "x sigmoid(x)")
GELU = _activation("GELU", F.gelu, "x Phi(x)", approximate="none")
Hardswish = _activation("Hardswish", F.hardswish, "x relu6(x + 3) / 6")
Hardsigmoid = _activation("Hardsigmoid", F.hardsigmoid, "relu6(x + 3) / 6")
ELU = _activation("ELU", F.elu, "x if x > 0 else alpha (exp(x) - 1)", alpha=1.0)
Softmax = _activation("Softmax", F.softmax, "softmax over dim", dim=-1)
LogSoftmax = _activation("LogSoftmax", F.log_softmax, "log softmax over dim", dim=-1)
