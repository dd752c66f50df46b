"""Loss modules (torch.nn names): each holds its options and calls the functional loss."""
from .. import functional as F
from .module import Module


class _Loss(Module):
    def __init__(self, reduction="mean", weight=None):
        super().__init__()
        self.reduction = reduction
        if weight is not None:
            self.register_buffer("weight", weight)   # in state_dict, as PyTorch
        else:
            self.weight = None

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


class MSELoss(_Loss):
    """mean (input - target)^2"""
    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


class L1Loss(_Loss):
    """mean |input - target|"""
    def forward(self, input, target):
        return F.l1_loss(input, target, reduction=self.reduction)


class SmoothL1Loss(_Loss):
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta"""
    def __init__(self, reduction="mean", beta=1.0):
        super().__init__(reduction)
        self.beta = beta

    def forward(self, input, target):
        return F.smooth_l1_loss(input, target, beta=self.beta, reduction=self.reduction)


class BCELoss(_Loss):
    """-w (t log p + (1 - t) log(1 - p)) on probabilities p"""
    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction, weight)

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    """-w (q t log sigmoid(x) + (1 - t) log sigmoid(-x)) on logits x, q = pos_weight"""
    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction, weight)
        if pos_weight is not None:
            self.register_buffer("pos_weight", pos_weight)
        else:
            self.pos_weight = None

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.weight, reduction=self.reduction,
                                                  pos_weight=self.pos_weight)


class NLLLoss(_Loss):
    """-w[t] input[t] on log-probabilities, target class indices"""
    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(reduction, weight)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return F.nll_loss(input, target, self.weight, self.ignore_index, self.reduction)


class CrossEntropyLoss(_Loss):
    """nll_loss(log_softmax(logits, 1), target), target class indices or probabilities"""
    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction, weight)
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing)
