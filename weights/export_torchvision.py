#!/usr/bin/env python
"""Export torchvision backbones to ONNX with npad's feature taps as named outputs.

Needs torch + torchvision (npad itself never imports them).  For each model the
graph outputs are the tap values named exactly as in ``npad.backbones``'s
registry (e.g. ``layer1``..``layer4`` for ResNets, ``conv2_2``/``conv3_3``/
``conv4_3`` -- *before* ReLU -- for VGG16, ``features.N`` for EfficientNet-B4
and MobileNetV3-Large), so ``npad.backbones.get_backbone(name)`` finds them
without further configuration.  The graph is pruned after the deepest tap
(pass ``--with-logits`` to keep the classifier, output ``logits``).  Input
``input`` [N,3,H,W] float32 with dynamic N, H, W; ImageNet mean/std
normalisation expected.

Usage::

    python weights/export_torchvision.py resnet18 wide_resnet50_2 --out weights/
    python weights/export_torchvision.py wide_resnet50_2 --padding reflect   # CFLOW-AD's encoder
    python weights/export_torchvision.py vgg16 --weights none      # random init (tests)
    python weights/export_torchvision.py all

Models: resnet18, wide_resnet50_2, vgg16, efficientnet_b4, mobilenet_v3_large.
``--weights IMAGENET1K_V1`` (the default) downloads the ImageNet weights the papers
used (torchvision's first release of each model: CFLOW-AD's code loads
``wide_resnet50_2-95faca4d.pth`` / ``resnet18-5c106cde.pth``, which are these;
torchvision's ``DEFAULT`` is ``IMAGENET1K_V2`` for Wide-ResNet-50-2 and
MobileNetV3-Large, weights trained later with another recipe); any other
torchvision weights name (``DEFAULT``, ``IMAGENET1K_V2``) is accepted;
``--weights FILE.pth`` loads a local state dict; ``--weights none`` keeps
random init.  The file records what it holds in its metadata (``npad.weights``:
``torchvision:IMAGENET1K_V1``, ``file:NAME.pth`` or ``none``; ``npad.padding``),
which npad's paper modes check.  ``--padding reflect`` makes every padded
convolution of a ResNet pad by reflection, as the CFLOW-AD authors' ResNet
(``custom_models/resnet.py``, ``PADDING_MODE = 'reflect'``) does.

EfficientNet-B4 as the ADTR paper used it is another checkpoint (lukemelas's
``efficientnet-b4-6ed6700e.pth``, not torchvision's): npad converts that file
itself (backbone ``efficientnet_b4_lukemelas``; weights/README.md).
"""
from __future__ import annotations

import argparse
import os
import sys

# module path in the torchvision model -> npad tap name (the ONNX output name)
TAPS = {
    "resnet18": {"relu": "relu", "layer1": "layer1", "layer2": "layer2",
                 "layer3": "layer3", "layer4": "layer4"},
    "wide_resnet50_2": {"relu": "relu", "layer1": "layer1", "layer2": "layer2",
                        "layer3": "layer3", "layer4": "layer4"},
    # conv outputs before the (made non-inplace) ReLU
    "vgg16": {"features.2": "conv1_2", "features.7": "conv2_2", "features.14": "conv3_3",
              "features.21": "conv4_3", "features.28": "conv5_3"},
    "efficientnet_b4": {f"features.{i}": f"features.{i}" for i in range(9)},
    "mobilenet_v3_large": {f"features.{i}": f"features.{i}" for i in (1, 3, 6, 12, 15, 16)},
}
CLASSIFIER = {"resnet18": "fc", "wide_resnet50_2": "fc", "vgg16": "classifier.6",
              "efficientnet_b4": "classifier.1", "mobilenet_v3_large": "classifier.3"}


#: The ImageNet weights the papers used, as torchvision names them (the --weights default).
PAPER_WEIGHTS = "IMAGENET1K_V1"


def weights_tag(name, weights):
    """(torchvision ``weights=`` argument, ``npad.weights`` metadata) for a --weights value: ``none``, a
    .pth file, or a torchvision weights name (``DEFAULT`` resolves to the name it stands for)."""
    if weights in (None, "none", "None"):
        return None, "none"
    if os.path.isfile(weights):
        return weights, f"file:{os.path.basename(weights)}"
    import torchvision
    enum = torchvision.models.get_model_weights(name)
    try:
        w = enum[weights]
    except KeyError:
        raise SystemExit(f"--weights {weights!r}: not a file, 'none' or a weights name of {name} "
                         f"({', '.join(enum.__members__)})") from None
    return w, f"torchvision:{w.name}"


def set_padding_mode(model, mode):
    """Every convolution of ``model`` with padding pads with ``mode`` ("zeros", "reflect", ...)."""
    for m in model.modules():
        if type(m).__name__ == "Conv2d" and any(p > 0 for p in m.padding):
            m.padding_mode = mode
    return model


def add_metadata(path, meta):
    """Write ``meta`` (str -> str) into the ONNX file's metadata_props, atomically."""
    import onnx
    m = onnx.load(path)
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    tmp = path + ".meta.tmp"
    onnx.save(m, tmp)
    os.replace(tmp, path)


def export(name, out_dir, weights=PAPER_WEIGHTS, with_logits=False, opset=17, size=224, padding="zeros"):
    import torch
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    ctor = getattr(torchvision.models, name)
    arg, tag = weights_tag(name, weights)
    if tag.startswith("file:"):
        model = ctor(weights=None)
        sd = torch.load(arg, map_location="cpu", weights_only=True)
        model.load_state_dict(sd.get("state_dict", sd) if isinstance(sd, dict) else sd)
    else:
        model = ctor(weights=arg)
    if padding != "zeros":
        if not name.startswith(("resnet", "wide_resnet")):
            raise SystemExit(f"--padding {padding}: only for the ResNets (CFLOW-AD's encoder), not {name}")
        set_padding_mode(model, padding)
    model.eval()
    for m in model.modules():           # keep pre-ReLU taps intact
        if hasattr(m, "inplace"):
            m.inplace = False
    nodes = dict(TAPS[name])
    if with_logits:
        nodes[CLASSIFIER[name]] = "logits"
    fx = create_feature_extractor(model, return_nodes=nodes).eval()
    names = list(nodes.values())

    class Wrap(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            d = self.inner(x)
            return tuple(d[n] for n in names)

    x = torch.randn(1, 3, size, size)
    path = os.path.join(out_dir, f"{name}.onnx")
    tmp = path + ".tmp"
    # VGG's classifier sits behind AdaptiveAvgPool2d(7), which the TorchScript
    # exporter cannot express for dynamic H, W: keep H, W fixed then.
    static_hw = with_logits and name == "vgg16"
    dyn = {"input": {0: "N"} if static_hw else {0: "N", 2: "H", 3: "W"}}
    for n in names:
        dyn[n] = {0: "N"} if (n == "logits" or static_hw) else {0: "N", 2: f"{n}_h", 3: f"{n}_w"}
    kw = dict(input_names=["input"], output_names=names, dynamic_axes=dyn,
              opset_version=opset, do_constant_folding=True)
    try:
        torch.onnx.export(Wrap(fx), (x,), tmp, dynamo=False, **kw)
    except TypeError:                   # torch without the dynamo switch
        torch.onnx.export(Wrap(fx), (x,), tmp, **kw)
    add_metadata(tmp, {"npad.weights": tag, "npad.padding": padding})
    os.replace(tmp, path)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help=f"model names or 'all': {', '.join(TAPS)}")
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                    help="output directory (default: this weights/ folder)")
    ap.add_argument("--weights", default=PAPER_WEIGHTS,
                    help="a torchvision weights name (default: the papers' IMAGENET1K_V1; DEFAULT is torchvision's "
                         "latest), none, or a .pth state dict")
    ap.add_argument("--padding", default="zeros", choices=["zeros", "reflect"],
                    help="padding of the ResNets' convolutions (reflect: the CFLOW-AD authors' encoder)")
    ap.add_argument("--with-logits", action="store_true", help="keep the classifier (output 'logits')")
    ap.add_argument("--opset", type=int, default=17)
    a = ap.parse_args(argv)
    models = list(TAPS) if a.models == ["all"] else a.models
    bad = [m for m in models if m not in TAPS]
    if bad:
        ap.error(f"unknown model(s) {bad}; choose from {list(TAPS)}")
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError:
        sys.exit("export_torchvision.py needs torch and torchvision: pip install torch torchvision")
    os.makedirs(a.out, exist_ok=True)
    for m in models:
        p = export(m, a.out, a.weights, a.with_logits, a.opset, padding=a.padding)
        print(f"{m}: wrote {p} (outputs: {', '.join(TAPS[m].values())}"
              f"{', logits' if a.with_logits else ''})")


if __name__ == "__main__":
    main()
