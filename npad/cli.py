"""The ``npad`` command line (also ``python -m npad``): fit, test, predict, backbones.

    npad fit cflow --data ~/mvtec --category bottle --out runs/bottle
    npad test runs/bottle/model.h5 --data ~/mvtec --category bottle
    npad predict runs/bottle/model.h5 new_images/ --out runs/bottle/predictions
    npad backbones

A mistake in the command (an option, a path, a data or model file) is reported as one line on
stderr with exit status 2.
"""
import argparse
import ast
import contextlib
import csv
import difflib
import hashlib
import io as _io
import json
import os
import sys
import warnings
from pathlib import Path

import numpy

from .backend import tune_cpu

EPILOG = __doc__.split("\n\n")[1]


class UsageError(Exception):
    """A mistake of the user's: printed as one line, exit status 2."""


# ---- options --------------------------------------------------------------------------------
def _literal(text):
    """A --set value: a Python literal when it is one (true/false/none too), else the string."""
    low = text.strip().lower()
    if low in ("true", "false", "none"):
        return {"true": True, "false": False, "none": None}[low]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _options(pairs):
    """--set KEY=VALUE pairs as a dict, each value a Python literal when it is one (see _literal)."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UsageError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = (t.strip() for t in pair.split("=", 1))
        out[key] = _literal(value)
    return out


def _fit_options(cls, args):
    """The method's options from the command line, each checked: --set names against the method's
    options, no --set of an option that has its own flag, --epochs, --size and --calib-fraction."""
    epochs_key = getattr(cls, "epochs_option", "epochs")
    flags = {"input_size": "--size", "backbone": "--backbone", "onnx_path": "--onnx", "seed": "--seed",
             "quick": "--full", "paper": "--paper", epochs_key: "--epochs"}
    opts = _options(args.set)
    for key in opts:
        if key not in cls.defaults:
            near = difflib.get_close_matches(key, cls.defaults, n=1)
            hint = f"did you mean {near[0]}? " if near else ""
            raise UsageError(f"--set {key}: {args.method} has no option {key!r}; {hint}"
                             f"its options are {', '.join(sorted(k for k in cls.defaults if k not in flags))}")
        if key in flags:
            raise UsageError(f"--set {key}: give it with {flags[key]} instead")
    opts.update(quick=not (args.full or args.paper), paper=bool(args.paper), seed=args.seed)
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if args.size is not None:
        if len(args.size) not in (1, 2):
            raise UsageError(f"--size takes one number (square) or two (height width), got {len(args.size)}")
        from .methods.base import MIN_INPUT_SIZE
        if min(args.size) < MIN_INPUT_SIZE:
            raise UsageError(f"--size {' '.join(map(str, args.size))} is too small for the backbone, which "
                             f"downsamples by up to {MIN_INPUT_SIZE}: use at least {MIN_INPUT_SIZE} (64 or more)")
        opts["input_size"] = args.size[0] if len(args.size) == 1 else tuple(args.size)
    if args.backbone:
        opts["backbone"] = args.backbone
    if args.onnx:
        if not Path(args.onnx).is_file():
            raise UsageError(f"--onnx {args.onnx} is not a file")
        opts["onnx_path"] = args.onnx
    if args.epochs is not None:
        if args.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
        if epochs_key not in cls.defaults:
            raise UsageError(f"--epochs: {args.method} does not train for epochs")
        opts[epochs_key] = args.epochs
    if args.calib_fraction is not None:
        if args.val:
            raise UsageError("--calib-fraction does not apply with --val: all training images train and "
                             "--val calibrates")
        if not 0 <= args.calib_fraction < 1:
            raise UsageError(f"--calib-fraction must be in [0, 1), got {args.calib_fraction}")
    missing = [flags[k] for k in ("backbone", "onnx_path") if k in opts and k not in cls.defaults]
    if missing:
        raise UsageError(f"{' and '.join(missing)}: {args.method} uses no backbone")
    return {k: v for k, v in opts.items() if k in cls.defaults}


def _out_dir(path, names):
    """The output folder, checked before any work (``npad.io.check_output_dir``: not a file, writable,
    names not too long) and created."""
    from . import io
    try:
        out = io.check_output_dir(path, names)
    except OSError as e:
        raise UsageError(f"--out: {e}") from None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {path}: cannot create the folder ({e.strerror or e})") from None
    return out


# ---- data and models -------------------------------------------------------------------------
def _train_dataset(data, category):
    """MVTec layout (root with categories, or one category folder) or a plain folder of normal images."""
    from .data import FolderDataset, MVTecDataset, list_categories
    root = Path(data)
    if not root.is_dir():
        raise UsageError(f"--data {root} is not a folder")
    if category or (root / "train" / "good").is_dir():
        ds = MVTecDataset(root, category, "train")
    else:
        cats = list_categories(root)
        if len(cats) > 1:
            raise UsageError(f"{root} holds several categories {cats}; choose one with --category")
        ds = MVTecDataset(root, cats[0], "train") if cats else FolderDataset(root, "train")
    if len(ds) == 0:
        raise UsageError(f"--data {root}: no readable training images")
    return ds


def _test_dataset(data, category, option="--data"):
    from .data import MVTecDataset
    root = Path(data)
    if not root.is_dir():
        raise UsageError(f"{option} {root} is not a folder")
    ds = MVTecDataset(root, category, "test")
    if len(ds) == 0:
        raise UsageError(f"{option} {root}: no readable test images")
    return ds


def _load(path):
    from . import methods
    if not Path(path).is_file():
        raise UsageError(f"model file {path} " + ("is a folder" if Path(path).is_dir() else "does not exist"))
    try:
        model = methods.load(path)
    except (ValueError, OSError) as e:                   # most messages name the file already
        raise UsageError(str(e) if str(path) in str(e) else f"cannot load {path}: {e}") from None
    if not model.is_fitted():
        raise UsageError(f"{path} holds a model that was never fitted; run npad fit first")
    return model


def _finite_number(value):
    try:
        t = float(value)
    except ValueError:
        t = None
    if t is None or not numpy.isfinite(t):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {value!r}")
    return t


def _count(value):
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value!r}")
    return n


# ---- commands --------------------------------------------------------------------------------
def cmd_fit(args):
    from . import methods, viz
    try:
        cls = methods.get(args.method)
    except ValueError as e:
        raise UsageError(str(e)) from None
    opts = _fit_options(cls, args)
    try:
        model = cls(**opts)
    except (TypeError, ValueError, KeyError, FileNotFoundError, NotImplementedError) as e:
        # an option the method refuses (KeyError: backbone, taps); --paper without the paper's weights
        raise UsageError(str(e.args[0]) if e.args else type(e).__name__) from None
    train = _train_dataset(args.data, args.category)
    val = _test_dataset(args.val, args.category, "--val") if args.val else None
    out = _out_dir(args.out, ["model.h5", "calibration.png"])
    print(f"fitting {cls.__name__} on {len(train)} normal images from {args.data}"
          + (f", calibrating on {len(val)} images of {args.val}" if val is not None else ""))
    fit = dict(validation=val) if args.calib_fraction is None else dict(calib_fraction=args.calib_fraction)
    try:
        model.fit(train, **fit)
    except BaseException as e:
        if model.is_fitted():                            # trained: keep the model, then report
            path = model.save(out / "model.h5")
            print(f"npad: training finished but calibration failed; the model is saved without a threshold "
                  f"in {path}", file=sys.stderr)
        raise e
    path = model.save(out / "model.h5")
    cal = model.calibration
    print(f"saved {path}\n  threshold {model.threshold:.6g}: {cal['rule']}\n"
          "  (normalised scores put it at 0.5; images scoring at or above it are called anomalous)")
    try:
        viz.score_histogram(out / "calibration.png", cal["scores"], cal["labels"], {"threshold": model.threshold},
                            title=f"{args.method}: scores of the {cal['n_images']} calibration images")
    except Exception as e:                               # the model is saved; a picture is not worth failing for
        print(f"warning: could not draw {out / 'calibration.png'}: {e}", file=sys.stderr)


def cmd_test(args):
    from . import viz
    from .experiment import _sample
    from .maps import threshold_normalize
    from .metrics import format_results
    model = _load(args.model)
    test = _test_dataset(args.data, args.category)
    out = _out_dir(args.out, ["metrics.json", "metrics.csv", "panels.png", "histogram.png"])
    ev = model.evaluate(test, normalization="train")
    res = ev.pop("result")
    print(format_results(ev))
    y = test.labels
    if res.labels is not None:
        print(f"  at the model's threshold {model.threshold:.6g} ({model.calibration.get('rule', 'stored')}):\n"
              f"    {int(res.labels[y == 0].sum())} of {int((y == 0).sum())} normal images flagged "
              f"({100 * ev['false_alarm_rate']:.1f}%), {int(res.labels[y == 1].sum())} of {int((y == 1).sum())} "
              f"anomalous images found ({100 * ev['detection_rate']:.1f}%)")
    f1t = ev.get("image_f1_max_threshold", float("nan"))
    if numpy.isfinite(f1t):
        print(f"  this test set's own F1-max threshold: {f1t:.6g} (chosen on the test labels; not the model's)")
    print(f"  inference {ev['images_per_s']:.2f} images/s")
    _write_metrics(out, ev, model, args, res, test)
    lines = {"model threshold": model.threshold}
    other = numpy.isfinite(f1t) and (model.threshold is None or not numpy.isclose(f1t, model.threshold))
    if other:
        lines["test-set F1-max"] = f1t
    idx = _sample(y, 12, 0)
    items = [_shrunk(test[int(i)]) for i in idx]         # the photos' own aspect, longer side 320 px
    maps, lo, hi, marks, label = res.maps[idx], None, None, None, "anomaly map"
    norm = res.normalized_scores is not None and res.map_min is not None
    if norm:                                             # one fixed colour scale: 0.5 at the pixel threshold
        maps = threshold_normalize(maps, res.map_min, res.pixel_threshold)
        lo, hi, marks, label = 0.0, 1.0, {0.5: "0.5 threshold"}, "normalised anomaly"
    if model.threshold is None:
        title = f"{model.method}: the model stores no threshold (no decisions)"
    else:
        title = (f"{model.method}: decisions and masks at the model's threshold {model.threshold:.4g}"
                 + (" (normalised 0.5)" if norm else "") + f" - {model.calibration.get('rule', 'stored')}")
    notes = None
    if other and model.threshold is not None:            # where the test set's own threshold would decide otherwise
        title += (f"\nthis test set's own F1-max threshold {f1t:.4g} would flag {int((res.scores >= f1t).sum())} "
                  f"of {len(res)} images (the model's flags {int(res.labels.sum())}); panels say where it differs")
        notes = [f"at F1-max {f1t:.3g}: {'anomalous' if s >= f1t else 'normal'}"
                 if (s >= f1t) != (s >= model.threshold) else None for s in res.scores[idx]]
    viz.save_panels(out / "panels.png", numpy.stack([it["image"] for it in items]), maps,
                    numpy.stack([it["mask"][0] for it in items]), threshold=0.5 if norm else res.pixel_threshold,
                    scores=res.scores[idx], titles=[test.defect_types[i] for i in idx], ncols=2, max_images=None,
                    vmin=lo, vmax=hi, bar_label=label, marks=marks,
                    normalized_scores=res.normalized_scores[idx] if norm else None,
                    decisions=None if res.labels is None else res.labels[idx], notes=notes, title=title)
    viz.score_histogram(out / "histogram.png", res.scores, y, lines, title=f"{model.method}: test image scores")
    print(f"metrics.json, metrics.csv, panels.png and histogram.png in {out}/")


def _shrunk(item, side=320):
    """A test sample with image and mask resized to ``side`` px on the longer side, keeping the aspect."""
    from .data import transforms as T
    H, W = item["image"].shape[1:]
    hw = (max(1, round(H * side / max(H, W))), max(1, round(W * side / max(H, W))))
    return dict(item, image=T.resize(item["image"], hw), mask=T.resize(item["mask"], hw, "nearest"))


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (numpy.generic, float)):
        v = v.item() if isinstance(v, numpy.generic) else v
        return None if isinstance(v, float) and not numpy.isfinite(v) else v
    return v


def _write_metrics(out, ev, model, args, res, test):
    """metrics.json (everything) and metrics.csv (one row for all images, one per defect type)."""
    from .io import atomic_write
    per = ev.get("per_defect") or {}
    info = dict(model=str(args.model), method=model.method, data=str(args.data), normalization="train",
                threshold=model.threshold, threshold_rule=model.calibration.get("rule"))
    info.update({k: v for k, v in ev.items() if k not in ("per_defect", "notes")})
    info.update(notes=ev.get("notes", []), per_defect=per)
    with atomic_write(out / "metrics.json", "w") as f:
        json.dump(_jsonable(info), f, indent=2)
    kinds = numpy.asarray(test.defect_types)
    cols = ["n", "image_auroc", "pixel_auroc", "aupro", "flagged"]
    rows = [dict(defect_type="all", n=len(res), image_auroc=ev.get("image_auroc"), pixel_auroc=ev.get("pixel_auroc"),
                 aupro=ev.get("aupro"))]
    if (kinds == "good").any():                          # its "flagged" is the false-alarm rate
        rows.append(dict(defect_type="good", n=int((kinds == "good").sum())))
    rows += [dict(defect_type=t, **{c: r.get(c) for c in cols if c in r}) for t, r in per.items() if t != "good"]
    for r in rows:
        pick = numpy.ones(len(kinds), bool) if r["defect_type"] == "all" else kinds == r["defect_type"]
        r["flagged"] = float(res.labels[pick].mean()) if res.labels is not None and pick.any() else None
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["defect_type"] + cols)
    w.writeheader()
    w.writerows({k: ("" if v is None else f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()}
                for r in rows)                           # DictWriter leaves a row's missing columns empty
    with atomic_write(out / "metrics.csv", "w") as f:
        f.write(buf.getvalue())


def _sources(items):
    """(files, names): the image files of the arguments and each one's output name, its path
    relative to the inputs' common folder (subfolders kept, so equal names never collide)."""
    from .methods.base import image_files
    files = list(dict.fromkeys(f.resolve() for item in items for f in image_files(item)))
    roots = [Path(i).resolve() if Path(i).is_dir() else Path(i).resolve().parent for i in items]
    root = Path(os.path.commonpath(roots)) if roots else Path(".")
    return files, [f.relative_to(root).as_posix() for f in files]


def _picture_name(rel, used):
    """heatmaps/ and masks/ file name of an input: its relative path with .png (the original suffix
    kept where two inputs would share a name); long names shortened with a hash."""
    name = str(Path(rel).with_suffix(".png"))
    if name in used:
        name = rel + ".png"
    parts = Path(name).parts
    if any(len(p) > 150 for p in parts):
        digest = hashlib.sha1(rel.encode()).hexdigest()[:10]
        name = str(Path(*[p if len(p) <= 150 else p[:130] + "-" + digest + ".png" for p in parts]))
    used.add(name)
    return name


def cmd_predict(args):
    from . import viz
    from .data import load_image
    from .io import atomic_write
    from .methods.base import NoImagesError
    model = _load(args.model)
    threshold = args.threshold if args.threshold is not None else model.threshold
    if threshold is None:
        raise UsageError(f"{args.model} stores no threshold; pass --threshold")
    # --threshold moves the decisions; masks keep the stored pixel threshold (another scale for some methods)
    model.threshold = threshold
    files, names = _sources(args.images)
    out = _out_dir(args.out, ["scores.csv", "scores.json"])
    normalized = "score_min" in model.calibration       # False for a model saved without a calibration
    bar = dict(vmin=0.0, vmax=1.0, bar_label="normalised anomaly", marks={0.5: "0.5 threshold"}) if normalized else None
    rows, used = [], set()
    blank = dict(score=None, normalized_score=None, anomalous="", height="", width="", heatmap="", mask="")
    for start in range(0, len(files), args.batch_size):
        chunk = [str(f) for f in files[start:start + args.batch_size]]
        try:
            res = model.predict(chunk)
        except NoImagesError:                            # every file of this batch was skipped, with a warning
            res = None
        found = {} if res is None else {p: i for i, p in enumerate(res.paths)}
        if bar is None and res is not None:              # raw maps: one colour scale, from the first batch
            pt = res.pixel_threshold                     # kept inside the scale, so the bar shows it
            lo, hi = min(float(numpy.nanmin(res.maps)), pt), max(float(numpy.nanmax(res.maps)), pt)
            bar = dict(vmin=lo, vmax=hi, bar_label="anomaly map", marks={pt: f"{pt:.3g} threshold"})
        for k, path in enumerate(chunk):
            row = dict(path=names[start + k], **blank, note="unreadable image (see the warning)")
            rows.append(row)
            if path not in found:
                continue
            i = found[path]
            score, flagged = float(res.scores[i]), bool(res.labels[i])
            nscore = None if res.normalized_scores is None else float(res.normalized_scores[i])
            row.update(score=score, normalized_score=nscore, height=res.sizes[i][0], width=res.sizes[i][1],
                       note="NaN or infinite anomaly map: not scored")
            if not numpy.isfinite(score):
                continue
            name = _picture_name(row["path"], used)
            amap, mask = res.at_input_size(i, normalized=normalized)
            caption = (f"{'ANOMALOUS' if flagged else 'NORMAL'}   score {score:.4g}"
                       + ("" if nscore is None else f"\nnormalised {nscore:.2f} (0.5 = threshold)"))
            viz.save_image(out / "heatmaps" / name, viz.heatmap(
                load_image(path), amap, caption=caption, mask=mask,
                caption_color=(200, 0, 0) if flagged else (0, 110, 0), **bar))
            viz.save_mask(out / "masks" / name, mask)
            row.update(anomalous=int(flagged), heatmap=f"heatmaps/{name}", mask=f"masks/{name}", note="")
    scored = [r for r in rows if r["note"] == ""]
    if not scored:
        raise UsageError(f"none of the {len(files)} images could be scored (see the warnings)")
    if (out / "scores.csv").exists():
        print(f"note: replacing the earlier results in {out}/", file=sys.stderr)
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows({k: ("" if v is None else f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()}
                for r in rows)
    with atomic_write(out / "scores.csv", "w") as f:
        f.write(buf.getvalue())
    info = dict(model=str(args.model), method=model.method, threshold=threshold,
                threshold_rule=model.calibration.get("rule") if args.threshold is None else "--threshold",
                pixel_threshold=model.pixel_threshold,
                normalized_score="0.5 + 0.5 (score - t) / (t - s_min), clipped to [0, 1]: 0.5 at the threshold t",
                images=rows)
    with atomic_write(out / "scores.json", "w") as f:
        json.dump(_jsonable(info), f, indent=2)
    n_bad = sum(1 for r in scored if r["anomalous"] == 1)
    print(f"scored {len(scored)} of {len(rows)} images: {n_bad} anomalous at threshold {threshold:.6g}"
          + (f"; {len(rows) - len(scored)} not scored (see the note column)" if len(scored) < len(rows) else "")
          + f"\n  {out / 'scores.csv'}, {out / 'scores.json'}, heatmaps/ and masks/ (at each photo's size) in {out}/")


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


# ---- entry point -----------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block), exit status 2."""

    def error(self, message):
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _parser():
    from .experiment import add_budget_arguments
    p = _Parser(prog="npad", description="Visual anomaly detection on NumPy.", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="train a method on normal images, calibrate its threshold, save the model",
                       epilog="example: npad fit cflow --data ~/mvtec --category bottle --out runs/bottle")
    f.add_argument("method", help="padim, patchcore, cflow, adtr, favae or vae_attention")
    f.add_argument("--data", required=True, help="MVTec-layout root/category folder, or a folder of normal images")
    f.add_argument("--category", default=None)
    f.add_argument("--val", default=None, help="MVTec-layout folder whose test split calibrates the threshold "
                                               "(F1-max); without it a share of the normal images is kept out")
    f.add_argument("--calib-fraction", type=_finite_number, default=None,
                   help="share of the normal training images kept out of training to calibrate on (default 0.2, "
                        "at least 5 images)")
    f.add_argument("--backbone", default=None)
    f.add_argument("--onnx", default=None, help="ONNX file of the backbone")
    f.add_argument("--size", type=int, nargs="+", default=None, metavar="PX",
                   help="input size: one number (square) or height and width (default: the method's)")
    f.add_argument("--epochs", type=int, default=None)
    add_budget_arguments(f)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="any other option of the method")
    f.add_argument("--out", default="runs/model")
    f.set_defaults(fn=cmd_fit)
    t = sub.add_parser("test", help="metrics, panels and histogram on a labelled test split, at the model's threshold",
                       epilog="example: npad test runs/bottle/model.h5 --data ~/mvtec --category bottle")
    t.add_argument("model")
    t.add_argument("--data", required=True)
    t.add_argument("--category", default=None)
    t.add_argument("--out", default="runs/test")
    t.set_defaults(fn=cmd_test)
    r = sub.add_parser("predict", help="score images: CSV and JSON of scores and decisions, heatmaps, masks",
                       epilog="example: npad predict runs/bottle/model.h5 photos/ --out runs/predictions")
    r.add_argument("model")
    r.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    r.add_argument("--threshold", type=_finite_number, default=None,
                   help="image threshold on the raw score (default: the one stored in the model)")
    r.add_argument("--batch-size", type=_count, default=16, help="images scored at a time (default 16)")
    r.add_argument("--out", default="runs/predict")
    r.set_defaults(fn=cmd_predict)
    b = sub.add_parser("backbones", help="list the backbones, where their weights are, and how to add one")
    b.set_defaults(fn=cmd_backbones)
    return p


def _warn_one_line(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


def main(argv=None):
    """Run one command; a user's mistake ends with one line on stderr and exit status 2."""
    tune_cpu()                          # OpenBLAS tuned for npad's threads (README: Threads)
    args = _parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warn_one_line
            args.fn(args)
            sys.stdout.flush()
    except BrokenPipeError:                              # e.g. npad backbones | head: the reader left
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("npad: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except (UsageError, ValueError, OSError) as e:
        if os.environ.get("NPAD_TRACEBACK"):
            raise
        print(f"npad: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
