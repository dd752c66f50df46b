"""Anomaly-detection methods built on npad, all with the same verbs:

    model = npad.methods.get("cflow")(quick=True)   # or CFlow(...), ADTR(...), FAVAE(...), ...; paper=True:
                                                    # the paper's settings (docs/DEVIATIONS.md)
    model.fit(train_dataset)
    result = model.predict(images)                  # Result(scores, maps, masks)
    model.save("model.h5");  model = npad.methods.load("model.h5")

Methods are imported on first use, so ``import npad`` stays light.
"""
import importlib

METHODS = {
    "cflow": ("npad.methods.cflow", "CFlow"),
    "adtr": ("npad.methods.adtr", "ADTR"),
    "favae": ("npad.methods.favae", "FAVAE"),
    "vae_attention": ("npad.methods.vae_attention", "VAEAttention"),
    "padim": ("npad.methods.padim", "PaDiM"),
    "patchcore": ("npad.methods.patchcore", "PatchCore"),
}


def get(name):
    """The method class registered as ``name`` (see METHODS)."""
    key = str(name).lower().replace("-", "_")
    if key not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    module, cls = METHODS[key]
    return getattr(importlib.import_module(module), cls)


def methods_with_paper_mode():
    """Names of the methods with a paper mode (``paper=True``), in METHODS order."""
    return [m for m in METHODS if get(m).has_paper_mode()]


def load(path):
    """The model saved at ``path`` by any method's ``save``."""
    from ..io import load_checkpoint
    method = load_checkpoint(path).get("method")
    if method not in METHODS:
        raise ValueError(f"{path}: not an npad model file (method {method!r}; known: {sorted(METHODS)})")
    return get(method).load(path)
