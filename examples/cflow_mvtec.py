"""CFLOW-AD on an MVTec-AD-layout folder (default: npad's embedded synthetic dataset).

    python examples/cflow_mvtec.py                                   # synthetic data, quick budget
    python examples/cflow_mvtec.py --data /path/to/mvtec --category bottle --full    # npad's full budget
    python examples/cflow_mvtec.py --data /path/to/mvtec --category bottle --paper   # the paper's settings

Prints per category and averaged: image AUROC, pixel AUROC, AUPRO, the F1-max threshold,
training time, inference images/s and the decoders' size in MB; writes heatmap panels, the
score histogram, results.md / results.csv and the trained model into --out.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import npad  # noqa: E402
from npad.experiment import budget_options, common_arguments, run  # noqa: E402
from npad.methods.cflow import CFlow  # noqa: E402


def main(argv=None):
    npad.tune_cpu()                     # OpenBLAS tuned for npad's threads (README: Threads)
    p = common_arguments(__doc__.splitlines()[0])
    p.add_argument("--blocks", type=int, default=None, help="coupling blocks per decoder (default 8)")
    p.add_argument("--uflow", action="store_true", help="unconditional flows (Table 2's UFLOW ablation)")
    args = p.parse_args(argv)
    opts = dict(budget_options(args), seed=args.seed)
    if args.blocks:
        opts["n_blocks"] = args.blocks
    if args.uflow:
        opts["cond_channels"] = 0
    if args.epochs:
        opts["meta_epochs"] = args.epochs
    return run(lambda: CFlow(**opts), args, "CFLOW")


if __name__ == "__main__":
    main()
