"""``npad.save`` / ``npad.load`` for state dicts, as torch.save / torch.load are used for them.

The file is an npad checkpoint (HDF5, written atomically by npad.io), not a pickle:
loading one reads arrays and never runs code from the file.
"""
from collections.abc import Mapping

from .backend import device_xp

__all__ = ["save", "load"]


def save(obj, f):
    """Write a state dict (str -> tensor, array or number; nested dicts allowed) to the path ``f``."""
    from .io import save_checkpoint
    if not isinstance(obj, Mapping):
        raise TypeError(f"npad.save({f}): expected a state dict (a dict of arrays), got {type(obj).__name__}; "
                        f"save model.state_dict()")
    _check_tree(obj, f, "state")
    save_checkpoint(f, state=obj)


def _check_tree(tree, f, where):
    for k, v in tree.items():
        if not isinstance(k, str):
            raise TypeError(f"npad.save({f}): {where} has the key {k!r}; state dict keys must be str")
        if isinstance(v, Mapping):
            _check_tree(v, f, f"{where}[{k!r}]")
        elif not (hasattr(v, "shape") or isinstance(v, (int, float, bool))):
            raise TypeError(f"npad.save({f}): {where}[{k!r}] is a {type(v).__name__}; npad.save writes state "
                            f"dicts of arrays, tensors and numbers (nested dicts allowed), such as model.state_dict()")


def load(f, map_location=None, weights_only=True):
    """The state dict saved by :func:`save` as a dict of NumPy arrays (CuPy with map_location="cuda");
    ``weights_only`` is accepted for torch's signature: npad files hold nothing else."""
    from .io import load_checkpoint
    state = load_checkpoint(f)["state"]
    if map_location is None or str(map_location) == "cpu":
        return state
    xp = device_xp("cuda" if str(map_location).startswith("cuda") else str(map_location))

    def move(tree):
        return {k: move(v) if isinstance(v, Mapping) else xp.asarray(v) for k, v in tree.items()}
    return move(state)
