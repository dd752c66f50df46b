"""Every npad method on one MVTec-layout folder with the same backbone: one markdown table
(image AUROC, pixel AUROC, AUPRO, training time, inference images/s, model size), PaDiM as
the reference row.

    python benchmarks/compare.py                                       # synthetic dataset
    python benchmarks/compare.py --data ../shared/data/bsdata_pitting --out runs/compare_bsdata
    python benchmarks/compare.py --methods padim cflow --epochs 8

Each method runs with its ``quick`` budget unless ``--full``; the table is also written to
``--out``/compare.md together with each method's own outputs.
"""
import argparse
import datetime
import os
import platform
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import blas_info  # noqa: E402

from npad import methods, tune_cpu  # noqa: E402
from npad.experiment import COLUMNS, run  # noqa: E402
from npad.io import atomic_write  # noqa: E402

ORDER = ["padim", "cflow", "adtr", "favae", "vae_attention"]


def main(argv=None):
    tune_cpu()                          # as the examples run
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None)
    p.add_argument("--category", default=None)
    p.add_argument("--methods", nargs="*", default=ORDER, choices=ORDER)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--onnx", default=None)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--full", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/compare")
    p.add_argument("--panels", type=int, default=8)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = p.parse_args(argv)
    means = []
    for name in args.methods:
        cls = methods.get(name)
        opts = dict(backbone=args.backbone, onnx_path=args.onnx, input_size=args.size, seed=args.seed,
                    quick=not args.full)
        if args.epochs:
            opts[getattr(cls, "epochs_option", "epochs")] = args.epochs
        opts = {k: v for k, v in opts.items() if k in cls.defaults}
        sub = argparse.Namespace(**{**vars(args), "out": os.path.join(args.out, name)})
        rows = run(lambda: cls(**opts), sub, cls.__name__)
        means.append((cls.__name__, rows[-1]))
    head = "| method | " + " | ".join(label for _, label, _ in COLUMNS) + " |"
    lines = [f"Data: {args.data or 'npad synthetic (weave, gear)'}; backbone {args.backbone}; {args.size} px; "
             f"{'full' if args.full else 'quick'} budgets; mean over categories.",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {blas_info()}; "
             f"{datetime.date.today().isoformat()}.", "", head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, r in means:
        lines.append(f"| {name} | " + " | ".join(f"{r[k] * s:.2f}" for k, _, s in COLUMNS) + " |")
    table = "\n".join(lines)
    print("\n" + table)
    os.makedirs(args.out, exist_ok=True)
    with atomic_write(os.path.join(args.out, "compare.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
