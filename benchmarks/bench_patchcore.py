"""PatchCore's two costly steps at a realistic size: the greedy coreset of a memory bank and the
blocked nearest-neighbour search of the test patches, with time and peak memory.

    python benchmarks/bench_patchcore.py                       # 1,000,000 patches x 152 channels, 1% coreset
    python benchmarks/bench_patchcore.py --patches 563200      # bsdata_pitting: 550 images x 32 x 32 patches

Default sizes: EfficientNet-Lite0's "patchcore" taps (40 + 112 channels) at 256 px give 32 x 32
patches per image, so a million patches are ~980 training images; the queries are 305 test
images' patches. Peers: the coreset's floor is one M x 128 matrix-vector product per step (memory
bandwidth), printed as a ratio; the search is compared with scikit-learn's brute-force
NearestNeighbors on the same data when it is installed. Peak memory: NumPy's allocations as
tracemalloc sees them, and the process's maximum resident set.
"""
import argparse
import os
import resource
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import best_time, blas_info, matmul_gflops  # noqa: E402

from npad.methods.patchcore import coreset, nearest  # noqa: E402


def mb(n_bytes):
    return n_bytes / 2 ** 20


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patches", type=int, default=1_000_000, help="memory bank rows before the coreset")
    p.add_argument("--channels", type=int, default=152, help="feature dimension C")
    p.add_argument("--ratio", type=float, default=0.01, help="coreset ratio")
    p.add_argument("--projection", type=int, default=128)
    p.add_argument("--queries", type=int, default=305 * 1024, help="test patches searched")
    p.add_argument("--peer-queries", type=int, default=50_000, help="queries given to the scikit-learn peer")
    args = p.parse_args(argv)
    print(blas_info())
    print(f"machine sgemm: {matmul_gflops():.0f} GFLOP/s")
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((args.patches, args.channels), dtype=np.float32)
    queries = rng.standard_normal((args.queries, args.channels), dtype=np.float32)
    print(f"bank {args.patches:,} x {args.channels} float32 = {mb(bank.nbytes):.0f} MB; "
          f"queries {args.queries:,} ({mb(queries.nbytes):.0f} MB)")

    tracemalloc.start()
    t0 = time.perf_counter()
    core = coreset(bank, args.ratio, args.projection, quiet=False)
    t_core = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    d = min(args.projection, args.channels)
    proj = rng.standard_normal((args.patches, d), dtype=np.float32)     # the projected bank's layout
    step = float(np.median([best_time(lambda: proj @ proj[rng.integers(args.patches)], repeat=1, min_time=0.05)
                            for _ in range(5)]))
    print(f"coreset {len(core):,} of {args.patches:,}: {t_core:.1f} s ({t_core / len(core) * 1e3:.1f} ms per step; "
          f"floor, one {args.patches:,} x {d} product: {step * 1e3:.1f} ms, ratio {t_core / len(core) / step:.2f}); "
          f"peak NumPy memory {mb(peak):.0f} MB beyond the bank")
    del proj

    tracemalloc.start()
    t0 = time.perf_counter()
    dist, idx = nearest(queries, core)
    t_nn = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gflops = 2 * args.queries * len(core) * args.channels / t_nn / 1e9
    print(f"search {args.queries:,} queries x {len(core):,} bank rows: {t_nn:.1f} s ({gflops:.0f} GFLOP/s in the "
          f"distance products); peak NumPy memory {mb(peak):.0f} MB")
    try:
        from sklearn.neighbors import NearestNeighbors
    except ImportError:
        print("scikit-learn not installed: no peer for the search")
    else:
        q = queries[:args.peer_queries]
        nn = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(core)
        t0 = time.perf_counter()
        ref_d, ref_i = nn.kneighbors(q)
        t_sk = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours_d, ours_i = nearest(q, core)
        t_ours = time.perf_counter() - t0
        agree = float((ours_i[:, 0] == ref_i[:, 0]).mean())
        print(f"peer, {len(q):,} queries: scikit-learn brute {t_sk:.2f} s, npad {t_ours:.2f} s, "
              f"ratio npad/sklearn {t_ours / t_sk:.2f}; same neighbour for {agree:.4%}, "
              f"max distance difference {np.abs(ours_d[:, 0] - ref_d[:, 0]).max():.2g}")
    print(f"process peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10:.0f} MB")


if __name__ == "__main__":
    main()
