"""One experiment loop shared by every method's example script (and the command line):
for each category of an MVTec-layout folder, fit on train/good, evaluate on test, print
the metrics, and write panels, a score histogram, a results table and the model, and
results.json: the command, date, machine, each model's whole configuration and the rows, the run
record from which ``benchmarks/results.py`` writes the tables of docs/RESULTS.md.

Evaluation follows the papers (per-set normalisation, F1-max thresholds of the test set, named as
such in the pictures); the saved model keeps the threshold calibrated at fit on held-out normal
images (``--calib-fraction``), which is the one ``npad predict`` uses.
"""
import argparse
import csv
import datetime
import io as _io
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy

from . import backend, viz
from .data import MVTecDataset, list_categories, synthetic_mvtec
from .io import atomic_write
from .metrics import format_results

COLUMNS = [("image_auroc", "image AUROC", 100), ("pixel_auroc", "pixel AUROC", 100), ("aupro", "AUPRO", 100),
           ("image_threshold", "F1-max thr.", 1), ("train_seconds", "train s", 1),
           ("images_per_s", "infer img/s", 1), ("model_mb", "model MB", 1)]


def common_arguments(description, default_size=256):
    """The arguments every example takes (``budget_options`` turns the budget ones into options)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=None, help="MVTec-layout root or one category folder "
                                                "(default: the embedded synthetic dataset, generated on first use)")
    p.add_argument("--category", default=None, help="one category (default: every category found)")
    p.add_argument("--backbone", default=None, help="backbone name (see npad.backbones; default: "
                                                    "efficientnet_lite0, with --paper the paper's)")
    p.add_argument("--onnx", default=None, help="ONNX file of the backbone when it is not built in")
    size = default_size or "the method's"
    p.add_argument("--size", type=int, default=None, help=f"input size in pixels (default: {size}; with --paper "
                                                          "the paper's)")
    p.set_defaults(size_default=default_size)
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the budget's)")
    add_budget_arguments(p)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cpu (NumPy) or cuda (CuPy)")
    p.add_argument("--out", default="runs/example", help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calib-fraction", type=float, default=None,
                   help="share of train/good kept out of training to calibrate the saved model's threshold "
                        "(default: the library's, 0.2; 0 trains on all of them as the papers do)")
    p.add_argument("--panels", type=int, default=12, help="test images drawn in the panel picture")
    return p


def add_budget_arguments(p):
    """--full and --paper: the three budgets of every method (npad.methods.base); neither is quick."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--full", action="store_true",
                   help="npad's full budget (the method's defaults) instead of the quick one; not the paper's")
    g.add_argument("--paper", action="store_true",
                   help="the paper's settings (paper=True; each method's docstring and docs/DEVIATIONS.md)")


def budget_options(args):
    """Method options from the budget arguments: ``quick`` / ``paper``; ``input_size`` from --size,
    else the example's default size except with --paper (the paper's size applies); ``backbone``
    and ``onnx_path`` when given (else the budget's: EfficientNet-Lite0, or the paper's)."""
    opts = dict(quick=not (args.full or args.paper), paper=bool(args.paper))
    size = args.size if args.size is not None else None if args.paper else getattr(args, "size_default", None)
    if size is not None:
        opts["input_size"] = size
    if getattr(args, "backbone", None):
        opts["backbone"] = args.backbone
    if getattr(args, "onnx", None):
        opts["onnx_path"] = args.onnx
    return opts


def categories(data, category):
    """(root, [category names]) for --data / --category; the synthetic dataset by default."""
    root = Path(data) if data else synthetic_mvtec()
    if not root.exists():
        raise FileNotFoundError(f"--data {root} does not exist")
    if category:
        return root, [category]
    if (root / "train").is_dir():   # a single category folder
        return root, [None]
    cats = list_categories(root)
    if not cats:
        raise FileNotFoundError(f"--data {root} holds no MVTec-layout category (train/good, test/...)")
    return root, cats


def _sample(labels, n, seed):
    """Indices of up to n test images, two thirds anomalous, in a fixed random order."""
    rng = numpy.random.default_rng(seed)
    bad, good = numpy.flatnonzero(labels == 1), numpy.flatnonzero(labels == 0)
    k_bad = min(len(bad), max(n - min(len(good), n // 3), 0))
    pick = numpy.concatenate([rng.permutation(bad)[:k_bad], rng.permutation(good)[:n - k_bad]])
    return numpy.sort(pick.astype(int))


def run(make_model, args, method_name):
    """Fit and evaluate ``make_model()`` on each category; returns the list of result rows."""
    if args.device == "cuda":
        backend.set_device("cuda")
    root, cats = categories(args.data, args.category)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for cat in cats:
        name = cat or root.name
        train = MVTecDataset(root, cat, "train")
        test = MVTecDataset(root, cat, "test")
        print(f"\n== {method_name} / {name}: {len(train)} training images, {len(test)} test images "
              f"({int((test.labels == 1).sum())} anomalous)")
        model = make_model()
        t0 = time.perf_counter()
        cf = getattr(args, "calib_fraction", None)
        model.fit(train, **({} if cf is None else dict(calib_fraction=cf)))
        train_s = time.perf_counter() - t0
        ev = model.evaluate(test)
        res = ev.pop("result")
        print(format_results(ev))
        row = dict(category=name, train_seconds=train_s, model_mb=model.model_megabytes(),
                   **{k: ev.get(k, float("nan")) for k, _, _ in COLUMNS[:4]}, images_per_s=ev["images_per_s"])
        print("  " + "  ".join(f"{label} {row[k] * s:.2f}" for k, label, s in COLUMNS))
        rows.append(row)
        _pictures(out / name, test, res, ev, args)
        model.save(out / name / f"{method_name.lower()}.h5")
    mean = {k: float(numpy.nanmean([r[k] for r in rows])) for k, _, _ in COLUMNS}
    rows.append(dict(category="mean", **mean))
    table = results_table(rows, method_name)
    print("\n" + table)
    with atomic_write(out / "results.md", "w", encoding="utf-8") as f:
        f.write(table + "\n")
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["category"] + [k for k, _, _ in COLUMNS])
    w.writeheader()
    w.writerows({k: r.get(k) for k in w.fieldnames} for r in rows)
    with atomic_write(out / "results.csv", "w", encoding="utf-8") as f:
        f.write(buf.getvalue())
    write_record(out / "results.json", [dict(method=method_name, config=model.config, rows=rows)], args)
    print(f"outputs in {out}/")
    return rows


def write_record(path, runs, args, argv=None):
    """The run record (JSON): the command that ran (``argv``, default ``sys.argv``), the date, the
    machine and BLAS, the data, and ``runs`` (method, config, per-category rows with their mean)."""
    argv = sys.argv if argv is None else argv
    command = shlex.join(["python", os.path.relpath(argv[0]) if os.path.isabs(argv[0]) else argv[0]] + argv[1:])
    record = dict(command=command, date=datetime.date.today().isoformat(), machine=machine(),
                  data=getattr(args, "data", None) or "npad synthetic", budget=budget_name(args), runs=runs)
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, default=str)
        f.write("\n")


def machine():
    """One line: CPU, cores and the BLAS that NumPy runs (kernel and threads, with threadpoolctl)."""
    line = f"{platform.machine()}, {os.cpu_count()} cores"
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return line
    blas = [f"{i.get('internal_api')} {i.get('version')} kernel={i.get('architecture')} threads={i.get('num_threads')}"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return line + "; BLAS " + "; ".join(sorted(set(blas)) or ["none found"])


def budget_name(args):
    """'paper', 'full' or 'quick', from the budget arguments."""
    return "paper" if getattr(args, "paper", False) else "full" if getattr(args, "full", False) else "quick"


def _pictures(folder, test, res, ev, args):
    """Heatmap panels for a sample of test images and the score histogram."""
    folder.mkdir(parents=True, exist_ok=True)
    idx = _sample(test.labels, args.panels, args.seed)
    ds = test
    if ds.transform is None:
        from .data import transforms as T
        ds = MVTecDataset(test.root, test.category if test.category_dir != test.root else None, "test",
                          transform=T.Resize(tuple(res.maps.shape[-2:])))
    items = [ds[int(i)] for i in idx]
    images = numpy.stack([it["image"] for it in items])
    masks = numpy.stack([it["mask"][0] for it in items])
    thr = ev.get("pixel_threshold")
    viz.save_panels(folder / "panels.png", images, res.maps[idx], masks, thr if numpy.isfinite(thr) else None,
                    scores=res.scores[idx], titles=[f"{test.defect_types[i]}" for i in idx], ncols=2,
                    max_images=None, bar_label="anomaly map (prediction: test-set pixel F1-max)")
    viz.score_histogram(folder / "histogram.png", res.scores, test.labels,
                        {"test-set F1-max": ev.get("image_threshold")}, title=f"image scores, {folder.name}")


def results_table(rows, method_name):
    """A markdown table of the result rows."""
    head = "| category | " + " | ".join(label for _, label, _ in COLUMNS) + " |"
    lines = [f"### {method_name}", "", head, "|" + "---|" * (len(COLUMNS) + 1)]
    for r in rows:
        cells = [f"{r[k] * s:.2f}" if r.get(k) is not None and numpy.isfinite(r[k]) else "n/a" for k, _, s in COLUMNS]
        lines.append(f"| {r['category']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
