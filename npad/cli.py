"""The ``npad`` command line (also ``python -m npad``): fit, test, predict, backbones.

    npad fit cflow --data ~/mvtec --category bottle --out runs/bottle
    npad test runs/bottle/model.h5 --data ~/mvtec --category bottle
    npad predict runs/bottle/model.h5 new_images/ --out runs/bottle/predictions
    npad backbones
"""
import argparse
import ast
import csv
import io as _io
import sys
import warnings
from pathlib import Path

import numpy

from .backend import tune_cpu

EPILOG = __doc__.split("\n\n", 1)[1]


def _options(pairs):
    """--set key=value pairs as a dict (values parsed as Python literals when they are)."""
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise SystemExit(f"npad: --set expects key=value, got {p!r}")
        k, v = p.split("=", 1)
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def _train_dataset(data, category):
    """MVTec layout (root with categories, or one category folder) or a plain folder of normal images."""
    from .data import FolderDataset, MVTecDataset, list_categories
    root = Path(data)
    if not root.is_dir():
        raise SystemExit(f"npad: --data {root} is not a folder")
    if category or (root / "train" / "good").is_dir():
        return MVTecDataset(root, category, "train")
    cats = list_categories(root)
    if len(cats) > 1:
        raise SystemExit(f"npad: {root} holds several categories {cats}; choose one with --category")
    if len(cats) == 1:
        return MVTecDataset(root, cats[0], "train")
    return FolderDataset(root, "train")


def _test_dataset(data, category):
    from .data import MVTecDataset
    root = Path(data)
    if not root.is_dir():
        raise SystemExit(f"npad: --data {root} is not a folder")
    try:
        return MVTecDataset(root, category, "test")
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"npad: {e}")


def cmd_fit(args):
    from . import methods
    try:
        cls = methods.get(args.method)
    except ValueError as e:
        raise SystemExit(f"npad: {e}")
    from .experiment import budget_options
    opts = dict(budget_options(args), seed=args.seed, **_options(args.set))
    if args.epochs:
        opts[getattr(cls, "epochs_option", "epochs")] = args.epochs
    opts = {k: v for k, v in opts.items() if k in cls.defaults}
    train = _train_dataset(args.data, args.category)
    print(f"fitting {cls.__name__} on {len(train)} images from {args.data}")
    try:
        model = cls(**opts)
    except (FileNotFoundError, ValueError, NotImplementedError) as e:      # e.g. --paper without the paper's weights
        raise SystemExit(f"npad: {e}")
    model.fit(train)
    if args.val:
        model.calibrate(_test_dataset(args.val, args.category))
    else:
        model.calibrate(train)          # no anomalies: a high percentile of normal scores, with a warning
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = model.save(out / "model.h5")
    print(f"saved {path} (threshold {model.threshold:.6g})")


def cmd_test(args):
    from . import viz
    from .experiment import _sample
    from .metrics import format_results
    model = _load(args.model)
    test = _test_dataset(args.data, args.category)
    ev = model.evaluate(test)
    res = ev.pop("result")
    print(format_results(ev))
    print(f"  inference {ev['images_per_s']:.2f} images/s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    idx = _sample(test.labels, 12, 0)
    ds = model._with_transform(test, train=False)
    items = [ds[int(i)] for i in idx]
    viz.save_panels(out / "panels.png", numpy.stack([it["image"] for it in items]), res.maps[idx],
                    numpy.stack([it["mask"][0] for it in items]), scores=res.scores[idx],
                    titles=[test.defect_types[i] for i in idx], ncols=2, max_images=None)
    viz.score_histogram(out / "histogram.png", res.scores, test.labels, ev.get("image_threshold"))
    print(f"panels and histogram in {out}/")


def cmd_predict(args):
    from . import viz
    from .data import DataLoader, PredictionDataset, list_images
    from .io import atomic_write
    model = _load(args.model)
    threshold = args.threshold if args.threshold is not None else model.threshold
    if threshold is None:
        raise SystemExit(f"npad: {args.model} stores no threshold; pass --threshold")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files = []
        for item in args.images:
            p = Path(item)
            if not p.exists():
                raise SystemExit(f"npad: {p} does not exist")
            files += list_images(p, recursive=True) if p.is_dir() else [p]
        if not files:
            raise SystemExit(f"npad: no images in {' '.join(args.images)}")
        ds = model._with_transform(PredictionDataset(files), train=False)
        rows, out = [], Path(args.out)
        (out / "heatmaps").mkdir(parents=True, exist_ok=True)
        (out / "masks").mkdir(parents=True, exist_ok=True)
        for batch in DataLoader(ds, batch_size=8):
            res = model.predict(batch["image"], normalization="train")
            pixel_t = model.pixel_threshold if model.pixel_threshold is not None else threshold
            for path, img, score, amap in zip(batch["path"], batch["image"], res.scores, res.maps):
                stem = Path(path).stem
                viz.save_image(out / "heatmaps" / f"{stem}.png", viz.overlay(img, amap))
                viz.save_image(out / "masks" / f"{stem}.png",
                               numpy.repeat(((amap >= pixel_t) * 255).astype(numpy.uint8)[..., None], 3, -1))
                rows.append((path, float(score), int(score >= threshold)))
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    buf = _io.StringIO()
    wr = csv.writer(buf)
    wr.writerow(["path", "score", "anomalous"])
    wr.writerows(rows)
    with atomic_write(out / "scores.csv", "w", encoding="utf-8") as f:
        f.write(buf.getvalue())
    print(f"scored {len(rows)} images ({sum(r[2] for r in rows)} anomalous at threshold {threshold:.6g}); "
          f"{out / 'scores.csv'}, heatmaps/ and masks/ in {out}/")


def cmd_backbones(args):
    from .backbones import BACKBONES
    print("Backbones (pass --backbone NAME; a file of your own with --onnx PATH):\n")
    for name, spec in BACKBONES.items():
        try:
            where = str(spec.onnx_path())
        except (FileNotFoundError, OSError) as e:
            where = "not found: " + str(e).split(";")[0]
        taps = ", ".join(f"{k}={len(v)}" for k, v in spec.taps.items())
        env = f" (or ${spec.env_var})" if spec.env_var else ""
        print(f"  {name:20s} {where}{env}\n  {'':20s} tap sets: {taps}")
    print("\nTo add a backbone from an ONNX file: list its values with npad.onnx.list_values(path, (1, 3, 256, 256)),"
          "\npick the feature maps you want and pass their names as taps=[...] with --onnx PATH"
          "\n(see weights/README.md).")


def _load(path):
    from . import methods
    from .io import CheckpointError
    if not Path(path).is_file():
        raise SystemExit(f"npad: model file {path} does not exist")
    try:
        return methods.load(path)
    except (CheckpointError, ValueError, OSError) as e:
        raise SystemExit(f"npad: cannot load {path}: {e}")


def main(argv=None):
    from .experiment import add_budget_arguments
    tune_cpu()                          # OpenBLAS tuned for npad's threads (README: Threads)
    p = argparse.ArgumentParser(prog="npad", description="Visual anomaly detection on NumPy.", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="train a method on normal images and save the model",
                       epilog="example: npad fit cflow --data ~/mvtec --category bottle --out runs/bottle")
    f.add_argument("method", help="cflow, adtr, favae, vae_attention or padim")
    f.add_argument("--data", required=True, help="MVTec-layout root/category folder, or a folder of normal images")
    f.add_argument("--category", default=None)
    f.add_argument("--val", default=None, help="MVTec-layout folder whose test split sets the F1-max threshold")
    f.add_argument("--backbone", default=None)
    f.add_argument("--onnx", default=None, help="ONNX file of the backbone")
    f.add_argument("--size", type=int, default=None, help="input size (default 256; with --paper the paper's)")
    f.set_defaults(size_default=256)
    f.add_argument("--epochs", type=int, default=None)
    add_budget_arguments(f)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="any other option of the method")
    f.add_argument("--out", default="runs/model")
    f.set_defaults(fn=cmd_fit)
    t = sub.add_parser("test", help="metrics table, panels and histogram on a labelled test split",
                       epilog="example: npad test runs/bottle/model.h5 --data ~/mvtec --category bottle")
    t.add_argument("model")
    t.add_argument("--data", required=True)
    t.add_argument("--category", default=None)
    t.add_argument("--out", default="runs/test")
    t.set_defaults(fn=cmd_test)
    r = sub.add_parser("predict", help="score images: CSV of scores and decisions, heatmaps, masks",
                       epilog="example: npad predict runs/bottle/model.h5 photos/ --out runs/predictions")
    r.add_argument("model")
    r.add_argument("images", nargs="+", help="image files or folders")
    r.add_argument("--threshold", type=float, default=None, help="default: the threshold stored in the model")
    r.add_argument("--out", default="runs/predict")
    r.set_defaults(fn=cmd_predict)
    b = sub.add_parser("backbones", help="list the backbones, where their weights are, and how to add one")
    b.set_defaults(fn=cmd_backbones)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    main()
