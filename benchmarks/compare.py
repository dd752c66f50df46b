"""Every npad method on one MVTec-layout folder with the same backbone(s): one markdown table
(image AUROC, pixel AUROC, AUPRO, training time, inference images/s, model size), PaDiM as
the reference row.

    python benchmarks/compare.py                                       # synthetic dataset
    python benchmarks/compare.py --data ../shared/data/bsdata_pitting --out runs/compare_bsdata
    python benchmarks/compare.py --methods padim cflow --epochs 8
    python benchmarks/compare.py --methods padim patchcore --backbone efficientnet_lite0 efficientnet_lite2
    python benchmarks/compare.py --methods patchcore --set taps='["stage2","stage3"]' coreset_ratio=0.1
    python benchmarks/compare.py --paper --data /path/to/mvtec --category bottle   # the papers' settings

Each method runs with its ``quick`` budget unless ``--full`` (npad's full budget) or ``--paper``
(each paper's settings, its backbone and input size; the methods with a paper mode: CFLOW-AD,
ADTR, FAVAE, VAE attention), on each ``--backbone`` in turn; ``--set`` passes other options to
the methods that have them. The table is also written to
``--out``/compare.md, and the run record (``npad.experiment.write_record``: the command, every
model's configuration and rows) to ``--out``/compare.json, from which ``benchmarks/results.py``
writes docs/RESULTS.md; each run's own outputs go to ``--out``/<method>[_<backbone>]/.
"""
import argparse
import datetime
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from npad import methods, tune_cpu  # noqa: E402
from npad.cli import UsageError, _options  # noqa: E402
from npad.experiment import (COLUMNS, add_budget_arguments, budget_name, budget_options, machine, run,  # noqa: E402
                             write_record)
from npad.io import atomic_write  # noqa: E402

ORDER = ["padim", "patchcore", "cflow", "adtr", "favae", "vae_attention"]


def main(argv=None):
    tune_cpu()                          # as the examples run
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None)
    p.add_argument("--category", default=None)
    p.add_argument("--methods", nargs="*", default=None, choices=ORDER,
                   help="default: all, with --paper those with a paper mode")
    p.add_argument("--backbone", nargs="+", default=None,
                   help="one or more backbone names (default: efficientnet_lite0, with --paper each paper's)")
    p.add_argument("--onnx", default=None)
    p.add_argument("--size", type=int, default=None, help="input size (default: 256, with --paper each paper's)")
    p.set_defaults(size_default=256)
    p.add_argument("--epochs", type=int, default=None)
    add_budget_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/compare")
    p.add_argument("--panels", type=int, default=8)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="other options, for every method that has them")
    args = p.parse_args(argv)
    if args.methods is None:
        args.methods = [m for m in ORDER if not args.paper or m in methods.methods_with_paper_mode()]
    without = [m for m in args.methods if args.paper and not methods.get(m).has_paper_mode()]
    if without:
        p.error(f"--paper: {without} have no paper mode (see docs/DEVIATIONS.md)")
    try:
        extra = _options(args.set)
    except UsageError as e:
        p.error(str(e))
    unknown = sorted(set(extra) - set().union(*(methods.get(m).defaults for m in args.methods)))
    if unknown:
        p.error(f"--set {unknown}: no option of {args.methods}")
    means, records = [], []
    backbones = args.backbone or [None if args.paper else "efficientnet_lite0"]
    for backbone in backbones:
        for name in args.methods:
            cls = methods.get(name)
            opts = dict(budget_options(argparse.Namespace(**{**vars(args), "backbone": backbone})), seed=args.seed,
                        **extra)
            if args.epochs:
                opts[getattr(cls, "epochs_option", "epochs")] = args.epochs
            opts = {k: v for k, v in opts.items() if k in cls.defaults}
            label = cls.__name__ if len(backbones) == 1 else f"{cls.__name__} ({backbone})"
            folder = name if len(backbones) == 1 else f"{name}_{backbone}"
            sub = argparse.Namespace(**{**vars(args), "out": os.path.join(args.out, folder)})
            made = []                                                   # the model, to record its whole config
            rows = run(lambda: made.append(cls(**opts)) or made[-1], sub, cls.__name__)
            means.append((label, rows[-1]))
            records.append(dict(method=cls.__name__, backbone=backbone, config=made[-1].config, rows=rows))
    head = "| method | " + " | ".join(label for _, label, _ in COLUMNS) + " |"
    budget = budget_name(args)
    size = args.size or ("each paper's" if args.paper else 256)
    names = ", ".join(b or "each paper's" for b in backbones)
    lines = [f"Data: {args.data or 'npad synthetic (weave, gear)'}; backbone {names}; {size} px; "
             f"{budget} budgets; mean over categories.",
             f"Machine: {machine()}; "
             f"{datetime.date.today().isoformat()}.", "", head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, r in means:
        lines.append(f"| {name} | " + " | ".join(f"{r[k] * s:.2f}" for k, _, s in COLUMNS) + " |")
    table = "\n".join(lines)
    print("\n" + table)
    os.makedirs(args.out, exist_ok=True)
    with atomic_write(os.path.join(args.out, "compare.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    write_record(os.path.join(args.out, "compare.json"), records, args,
                 argv=None if argv is None else [os.path.relpath(__file__)] + list(argv))


if __name__ == "__main__":
    main()
