"""Shared benchmark helpers: timing, the machine's NumPy matmul rate, and the BLAS in use."""
import time

import numpy as np


def best_time(fn, repeat=5, min_time=0.2, clock=time.perf_counter):
    """Best seconds per call of fn() over ``repeat`` rounds of at least ``min_time`` seconds each, by
    ``clock`` (time.thread_time: the calling thread's CPU time, for work that runs on that thread alone)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        n, t0 = 0, clock()
        while True:
            fn()
            n += 1
            dt = clock() - t0
            if dt >= min_time:
                break
        best = min(best, dt / n)
    return best


def matmul_gflops(n=2048, dtype=np.float32):
    """Achieved GFLOP/s of an n x n x n NumPy matmul: the peer when no framework is installed."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
    b = a.copy()
    t = best_time(lambda: a @ b, repeat=3)
    return 2 * n ** 3 / t / 1e9


def blas_info():
    """One line naming the BLAS library, kernel and thread count that NumPy uses."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "BLAS: unknown (pip install threadpoolctl)"
    rows = [f"{i.get('internal_api')} {i.get('version')} kernel={i.get('architecture')} "
            f"threads={i.get('num_threads')}" for i in threadpool_info() if i.get("user_api") == "blas"]
    return "BLAS: " + ("; ".join(rows) or "none found")


def torch_or_none():
    """torch when installed (the peer), else None."""
    try:
        import torch
        return torch
    except ImportError:
        return None
