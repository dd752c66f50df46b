"""ADTR / ADTR+ on an MVTec-AD-layout folder (default: npad's embedded synthetic dataset).

    python examples/adtr_mvtec.py                                    # synthetic data, quick budget
    python examples/adtr_mvtec.py --plus                             # ADTR+: confetti-noise anomalies
    python examples/adtr_mvtec.py --ablation no_query                # a Table 4 ablation
    python examples/adtr_mvtec.py --data /path/to/mvtec --category bottle --full     # npad's full budget
    python examples/adtr_mvtec.py --data /path/to/mvtec --category bottle --paper    # Sec. 4.2 (needs the B4 file)

Prints per category and averaged: image AUROC, pixel AUROC, AUPRO, the F1-max threshold,
training time, inference images/s and the reconstruction network's size in MB; writes heatmap
panels, the score histogram, results.md / results.csv and the trained model into --out.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import npad  # noqa: E402
from npad.experiment import budget_options, common_arguments, run  # noqa: E402
from npad.methods.adtr import ABLATIONS, ADTR  # noqa: E402


def main(argv=None):
    npad.tune_cpu()                     # OpenBLAS tuned for npad's threads (README: Threads)
    p = common_arguments(__doc__.splitlines()[0])
    p.add_argument("--plus", action="store_true", help="ADTR+: fine-tune with confetti-noise anomalies (Eq. 6-7)")
    p.add_argument("--plus-epochs", type=int, default=None, help="ADTR+ fine-tuning epochs (default: the method's)")
    p.add_argument("--ablation", default="none", choices=ABLATIONS, help="Table 4 ablation")
    p.add_argument("--hidden", type=int, default=None, help="Transformer width (default: the method's)")
    args = p.parse_args(argv)
    opts = dict(budget_options(args), ablation=args.ablation, plus=args.plus, seed=args.seed)
    if args.epochs:
        opts["epochs"] = args.epochs
    if args.plus_epochs is not None:
        opts["plus_epochs"] = args.plus_epochs
    if args.hidden:
        opts["hidden"] = args.hidden
    name = "ADTR+" if args.plus else "ADTR"
    if args.ablation != "none":
        name += f"-{args.ablation}"
    return run(lambda: ADTR(**opts), args, name)


if __name__ == "__main__":
    main()
