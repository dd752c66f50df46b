"""FAVAE (Dehaene and Eline, 2020) and its VAE baselines on MVTec AD or the embedded synthetic dataset.

    python examples/favae_mvtec.py                        # FAVAE, synthetic dataset, quick setting
    python examples/favae_mvtec.py --features none        # the vanilla gamma-VAE baseline
    python examples/favae_mvtec.py --features random      # randomly initialised backbone (Fig. 3b)
    python examples/favae_mvtec.py --data /path/to/mvtec --category carpet --full

Prints image AUROC, pixel AUROC and AUPRO per category and writes heatmap panels, score
histograms, results.md / results.csv and the trained models under --out.  Textures (MVTec's
carpet, grid, leather, tile, wood and the synthetic weave) are trained on random patches of
the image resized to --texture-size and scored by tiling; objects are resized to --size.
The quick setting (default) trains 64 px patches/images for a few minutes per category;
--full is the paper's 128 px setting.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npad.experiment import common_arguments, run  # noqa: E402
from npad.methods.favae import FAVAE  # noqa: E402


def options(args):
    opts = dict(features=args.features, backbone=args.backbone, onnx_path=args.onnx, seed=args.seed,
                quick=not args.full)
    if args.taps:
        opts["taps"] = args.taps.split(",") if "," in args.taps else args.taps
    for key, value in (("input_size", args.size), ("texture_size", args.texture_size), ("epochs", args.epochs),
                       ("samples_per_epoch", args.samples_per_epoch), ("batch_size", args.batch_size)):
        if value is not None:
            opts[key] = value
    return opts


def main(argv=None):
    p = common_arguments(__doc__.splitlines()[0], default_size=None)
    p.set_defaults(out="runs/favae")
    p.add_argument("--features", choices=["pretrained", "random", "none"], default="pretrained",
                   help="pretrained backbone features (FAVAE), a random backbone, or none (vanilla gamma-VAE)")
    p.add_argument("--taps", default=None, help="tap set of the backbone or comma-separated value names")
    p.add_argument("--texture-size", type=int, default=None, help="textures are resized to this before patching")
    p.add_argument("--samples-per-epoch", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    args = p.parse_args(argv)
    opts = options(args)
    name = {"pretrained": "FAVAE", "random": "FAVAE-random", "none": "VAE"}[args.features]
    print(f"{name} options: {opts}")
    return run(lambda: FAVAE(**opts), args, name)


if __name__ == "__main__":
    main()
