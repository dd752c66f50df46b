"""``npad.utils.data`` (as torch.utils.data), loaded on first use: it pulls in npad.data."""
import importlib


def __getattr__(name):
    if name == "data":
        return importlib.import_module(".data", __name__)
    raise AttributeError(f"module 'npad.utils' has no attribute {name!r}")
