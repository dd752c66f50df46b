"""``npad.nn.functional`` is ``npad.functional`` (as torch.nn.functional)."""
from ..functional import *  # noqa: F401,F403
