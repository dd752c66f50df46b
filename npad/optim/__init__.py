"""Optimizers and gradient clipping (torch.optim names); learning-rate schedules in
``npad.optim.lr_scheduler`` (also reachable here, as ``npad.optim.StepLR``).

Updates work in place on the parameters' arrays, one vectorised expression per
parameter; ``state_dict()`` / ``load_state_dict()`` let training resume.
"""
import math

from ..backend import get_array_module, to_cpu
from ..tensor import mark_modified


class Optimizer:
    """Holds parameter groups (dicts with "params" and hyper-parameters) and per-parameter state."""

    def __init__(self, params, defaults):
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups = []
        for g in groups:
            group = dict(defaults)
            group.update(g)
            group["params"] = list(group["params"])
            self.param_groups.append(group)
        self.state = {}  # id(param) -> dict of arrays

    def zero_grad(self, set_to_none=True):
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    def _params_with_grad(self):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is not None and p.requires_grad:
                    yield g, p, p.grad.data

    def step(self):
        for group, p, grad in self._params_with_grad():
            self._update(group, p, grad, self.state.setdefault(id(p), {}))
            mark_modified(p)  # a graph recorded before this step cannot backward through p any more

    def _update(self, group, p, grad, state):
        raise NotImplementedError

    def state_dict(self):
        """{"state": {index: {...}}, "param_groups": [{hyper-parameters, "params": [indices]}]}"""
        index = {}
        groups = []
        for g in self.param_groups:
            ids = []
            for p in g["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": ids})
        state = {index[k]: {n: (to_cpu(v) if hasattr(v, "shape") else v) for n, v in s.items()}
                 for k, s in self.state.items() if k in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(a["params"]) != len(b["params"]) for a, b in zip(groups, self.param_groups)):
            raise ValueError(f"{type(self).__name__}.load_state_dict: the saved parameter groups "
                             f"({[len(g['params']) for g in groups]} parameters) do not match this "
                             f"optimizer's ({[len(g['params']) for g in self.param_groups]})")
        params = [p for g in self.param_groups for p in g["params"]]
        self.state = {}
        for i, s in state_dict["state"].items():
            p = params[int(i)]
            xp = get_array_module(p.data)
            self.state[id(p)] = {n: (xp.asarray(v) if hasattr(v, "shape") else v) for n, v in s.items()}
        for mine, saved in zip(self.param_groups, groups):
            mine.update({k: v for k, v in saved.items() if k != "params"})


class SGD(Optimizer):
    """v = mu v + (g + wd p); p -= lr v (nesterov: p -= lr (g + mu v)), as torch.optim.SGD."""

    def __init__(self, params, lr=1e-3, momentum=0.0, weight_decay=0.0, nesterov=False, dampening=0.0):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      nesterov=nesterov, dampening=dampening))

    def _update(self, group, p, grad, state):
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        mu = group["momentum"]
        if mu:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.copy()
            else:
                buf = state["momentum_buffer"]
                buf *= mu
                buf += (1 - group["dampening"]) * grad
            buf = state["momentum_buffer"]
            grad = grad + mu * buf if group["nesterov"] else buf
        p.data -= group["lr"] * grad


class Adam(Optimizer):
    """m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= lr m^ / (sqrt(v^) + eps), with bias
    corrections m^ = m / (1 - b1^t), v^ = v / (1 - b2^t) (Kingma & Ba 2015, Alg. 1). weight_decay adds
    wd p to g (L2, as torch.optim.Adam)."""

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _update(self, group, p, grad, state):
        xp = get_array_module(p.data)
        b1, b2 = group["betas"]
        lr, wd = group["lr"], group["weight_decay"]
        if wd and self.decoupled:
            p.data *= 1 - lr * wd                 # AdamW: decay the weights, not the gradient
        elif wd:
            grad = grad + wd * p.data
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
        m *= b1
        m += (1 - b1) * grad
        v *= b2
        v += (1 - b2) * grad * grad
        step = lr / (1 - b1 ** t)
        denom = xp.sqrt(v / (1 - b2 ** t))
        denom += group["eps"]
        p.data -= step * m / denom


class AdamW(Adam):
    """Adam with decoupled weight decay: p -= lr wd p before the Adam step (Loshchilov & Hutter 2019),
    as torch.optim.AdamW (default weight_decay 1e-2)."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0):
    """Scale all gradients by min(1, max_norm / ||g||) where ||g|| is the norm over all of them; returns ||g||."""
    grads = [p.grad.data for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    xp = get_array_module(grads[0])
    if norm_type == math.inf:
        total = max(float(xp.abs(g).max()) for g in grads)
    else:
        total = float(sum(float((xp.abs(g) ** norm_type).sum()) for g in grads) ** (1.0 / norm_type))
    scale = max_norm / (total + 1e-6)
    if scale < 1:
        for g in grads:
            g *= scale
    return total


from .lr_scheduler import LRScheduler, LambdaLR, StepLR, CosineAnnealingLR  # noqa: E402,F401  (as torch.optim.*)
