"""False alarms at the default threshold: fit each method as ``npad fit`` does (a share of the
normal training images kept out and calibrated on), then count the unseen normal test images it
flags and the anomalous ones it finds.

    python benchmarks/false_alarms.py --methods padim --seeds 0 1 2
    python benchmarks/false_alarms.py --methods cflow --data /work/shared/data/bsdata_pitting

``--data`` takes MVTec-layout category folders (default: the synthetic gear and weave); the seed
picks the held-out images. Prints one row per run and the means; ``--out`` keeps the rows and the
raw scores (held-out, normal test, anomalous test) as JSON, to study other threshold rules.
"""
import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from npad import methods  # noqa: E402
from npad.data import MVTecDataset, synthetic_mvtec  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["padim"], choices=sorted(methods.METHODS))
    p.add_argument("--data", nargs="+", default=None, help="category folders (default: synthetic gear, weave)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--full", action="store_true", help="the papers' budgets (default: quick)")
    p.add_argument("--out", default=None, help="JSON file for the rows and raw scores")
    args = p.parse_args(argv)
    folders = [Path(d) for d in args.data] if args.data else [synthetic_mvtec() / c for c in ("gear", "weave")]
    rows = []
    print(f"{'method':14s} {'data':16s} seed  held-out  threshold   normal flagged   anomalous found")
    for name in args.methods:
        for folder in folders:
            train, test = MVTecDataset(folder, None, "train"), MVTecDataset(folder, None, "test")
            for seed in args.seeds:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = methods.get(name)(seed=seed, quick=not args.full).fit(train, quiet=True)
                    res = model.predict(test)
                y = test.labels
                fa, det = res.labels[y == 0], res.labels[y == 1]
                rows.append(dict(method=name, data=folder.name, seed=seed, threshold=model.threshold,
                                 rule=model.calibration["rule"], false_alarm_rate=float(fa.mean()),
                                 detection_rate=float(det.mean()),
                                 held_out=model.calibration["scores"].tolist(),
                                 normal=res.scores[y == 0].tolist(), anomalous=res.scores[y == 1].tolist()))
                print(f"{name:14s} {folder.name:16s} {seed:4d}  {model.calibration['n_images']:8d}  "
                      f"{model.threshold:9.4g}   {int(fa.sum()):3d}/{fa.size:<3d} {100 * fa.mean():5.1f}%   "
                      f"{int(det.sum()):3d}/{det.size:<3d} {100 * det.mean():5.1f}%", flush=True)
                if args.out:
                    Path(args.out).write_text(json.dumps(rows))
    print("\nmeans over seeds:")
    for name in args.methods:
        for folder in folders:
            r = [x for x in rows if x["method"] == name and x["data"] == folder.name]
            fa = [x["false_alarm_rate"] for x in r]
            print(f"  {name:14s} {folder.name:16s} normal flagged {100 * numpy.mean(fa):5.1f}% "
                  f"(worst {100 * max(fa):5.1f}%), anomalous found "
                  f"{100 * numpy.mean([x['detection_rate'] for x in r]):5.1f}%  ({len(r)} runs)")


if __name__ == "__main__":
    main()
