"""Metric speed: AUROC and AUPRO on 200 maps of 256 x 256 (the issue's yardstick: a few seconds),
with scikit-learn's roc_auc_score as the peer for pixel AUROC.

    python benchmarks/bench_metrics.py
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import blas_info  # noqa: E402

from npad import metrics as M  # noqa: E402


def main():
    print(blas_info())
    rng = np.random.default_rng(0)
    masks = np.zeros((200, 256, 256), bool)
    for i in range(100):
        y, x = rng.integers(0, 200, size=2)
        masks[i, y:y + 30, x:x + 20] = True
    maps = rng.random((200, 256, 256), dtype=np.float32) + masks * 0.1
    for name, fn in [("aupro", lambda: M.aupro(masks, maps)), ("pixel_auroc", lambda: M.pixel_auroc(masks, maps))]:
        t = time.perf_counter()
        fn()
        print(f"{name:12s} 200 x 256 x 256: {time.perf_counter() - t:.2f} s")
    try:
        from sklearn.metrics import roc_auc_score
        t = time.perf_counter()
        roc_auc_score(masks.ravel(), maps.ravel())
        sk = time.perf_counter() - t
        t = time.perf_counter()
        M.pixel_auroc(masks, maps)
        ours = time.perf_counter() - t
        print(f"pixel AUROC: scikit-learn {sk:.2f} s, npad {ours:.2f} s, ratio npad/sklearn {ours / sk:.2f}")
    except ImportError:
        print("scikit-learn not installed: no peer ratio")


if __name__ == "__main__":
    main()
