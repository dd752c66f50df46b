"""Learning-rate schedules (torch.optim.lr_scheduler names): each ``step()`` sets every
parameter group's lr to base_lr * factor(epoch)."""
import math


class LRScheduler:
    """Sets each group's lr to base_lr * factor(epoch) on every ``step()``."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.base_lrs = [g.setdefault("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.last_epoch = 0
        self._set()

    def factor(self, epoch):
        raise NotImplementedError

    def lr_at(self, base_lr, epoch):
        return base_lr * self.factor(epoch)

    def _set(self):
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = self.lr_at(base, self.last_epoch)

    def step(self):
        self.last_epoch += 1
        self._set()

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state):
        self.last_epoch, self.base_lrs = state["last_epoch"], list(state["base_lrs"])
        self._set()


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(epoch)"""

    def __init__(self, optimizer, lr_lambda):
        self.lr_lambda = lr_lambda
        super().__init__(optimizer)

    def factor(self, epoch):
        return self.lr_lambda(epoch)


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size)"""

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def factor(self, epoch):
        return self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) (1 + cos(pi t / T_max)) / 2, after a linear warm-up
    from warmup_start_factor * base_lr over ``warmup`` steps (warmup=0: torch's CosineAnnealingLR)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, warmup=0, warmup_start_factor=0.0):
        self.T_max, self.eta_min, self.warmup, self.start = T_max, eta_min, warmup, warmup_start_factor
        super().__init__(optimizer)

    def lr_at(self, base_lr, epoch):
        t = min(epoch, self.T_max)
        lr = self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2
        if epoch < self.warmup:
            return lr * (self.start + (1 - self.start) * epoch / self.warmup)
        return lr
