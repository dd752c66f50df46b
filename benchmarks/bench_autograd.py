"""Autograd overhead and Linear throughput.

1. Per-op overhead: microseconds per op (forward + backward) on tiny arrays, where the array
   work is negligible, so the time is npad's Python bookkeeping; PyTorch's figure beside it.
2. Linear forward+backward at large sizes as a fraction of the machine's NumPy matmul rate
   (forward 2NKM flops, backward 4NKM), and against PyTorch CPU when installed.

    python benchmarks/bench_autograd.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_autograd.py
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import best_time, blas_info, matmul_gflops, torch_or_none  # noqa: E402

import npad  # noqa: E402
import npad.functional as F  # noqa: E402
import npad.nn as nn  # noqa: E402


def op_overhead(n_ops=200):
    x = npad.tensor(np.ones(4, np.float32), requires_grad=True)

    def chain():
        y = x
        for _ in range(n_ops // 2):
            y = F.tanh(y * 1.0001)
        y.sum().backward()
    return best_time(chain) / n_ops * 1e6


def torch_op_overhead(torch, n_ops=200):
    x = torch.ones(4, requires_grad=True)

    def chain():
        y = x
        for _ in range(n_ops // 2):
            y = torch.tanh(y * 1.0001)
        y.sum().backward()
    return best_time(chain) / n_ops * 1e6


def linear_rate(n, k, m):
    lin = nn.Linear(k, m)
    x = npad.tensor(np.random.default_rng(0).standard_normal((n, k)).astype(np.float32), requires_grad=True)

    def step():
        lin(x).sum().backward()
    return 6 * n * k * m / best_time(step, repeat=3) / 1e9


def torch_linear_rate(torch, n, k, m):
    lin = torch.nn.Linear(k, m)
    x = torch.randn(n, k, requires_grad=True)

    def step():
        lin(x).sum().backward()
    return 6 * n * k * m / best_time(step, repeat=3) / 1e9


def main():
    npad.tune_cpu()                     # as the examples run
    torch = torch_or_none()
    print(blas_info())
    peak = matmul_gflops()
    print(f"NumPy float32 matmul 2048^3: {peak:.1f} GFLOP/s (the reference rate)")
    ov = op_overhead()
    line = f"autograd overhead per op (forward+backward, 4 elements): {ov:.2f} us"
    if torch:
        tov = torch_op_overhead(torch)
        line += f"; PyTorch {tov:.2f} us; ratio npad/torch {ov / tov:.2f}"
    print(line)
    print(f"{'Linear N x K -> M':>24} {'GFLOP/s':>8} {'/matmul':>8} {'torch GFLOP/s':>14} {'npad/torch':>10}")
    for n, k, m in [(4096, 1024, 1024), (8192, 512, 512), (16384, 256, 256), (65536, 256, 128)]:
        r = linear_rate(n, k, m)
        row = f"{f'{n} x {k} -> {m}':>24} {r:8.1f} {r / peak:8.2f}"
        if torch:
            tr = torch_linear_rate(torch, n, k, m)
            row += f" {tr:14.1f} {r / tr:10.2f}"
        print(row)


if __name__ == "__main__":
    main()
