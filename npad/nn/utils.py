"""``npad.nn.utils.clip_grad_norm_`` (as torch.nn.utils)."""
from ..optim import clip_grad_norm_  # noqa: F401
