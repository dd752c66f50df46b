"""CFLOW-AD speed: training fibers/s of one decoder (8 coupling blocks, condition 128, fiber batch
256) at the default backbone's three widths, against the same decoder step written in plain
PyTorch when torch is installed; and inference images/s at 256 x 256 (backbone + 3 decoders).

    python benchmarks/bench_cflow.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_cflow.py
"""
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import best_time, blas_info, matmul_gflops, torch_or_none  # noqa: E402

import npad  # noqa: E402
import npad.functional as F  # noqa: E402
from npad.flows import cflow_decoder, gaussian_log_prob  # noqa: E402
from npad.optim import Adam  # noqa: E402

FIBERS, COND, BLOCKS = 256, 128, 8


def npad_step(channels):
    dec = cflow_decoder(channels, COND, BLOCKS)
    opt = Adam(dec.parameters(), lr=2e-4)
    rng = np.random.default_rng(0)
    e = rng.standard_normal((FIBERS, channels)).astype(np.float32)
    p = rng.standard_normal((FIBERS, COND)).astype(np.float32)

    def step():
        z, ld = dec(npad.Tensor(e), npad.Tensor(p))
        loss = -F.logsigmoid(gaussian_log_prob(z, ld) / channels).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def torch_step(torch, channels):
    """The same decoder in plain torch: subnet, 0.1 prescale, soft clamp, global affine, fixed rotation."""
    c2 = channels // 2
    c1 = channels - c2
    blocks = []
    for k in range(BLOCKS):
        net = torch.nn.Sequential(torch.nn.Linear(c1 + COND, 2 * (c1 + COND)), torch.nn.ReLU(),
                                  torch.nn.Linear(2 * (c1 + COND), 2 * c2))
        g = torch.nn.Parameter(torch.full((channels,), 2 * math.log(math.expm1(5.0))))
        b = torch.nn.Parameter(torch.zeros(channels))
        q, _ = torch.linalg.qr(torch.randn(channels, channels))
        blocks.append((net, g, b, q))
    params = [p for net, g, b, _ in blocks for p in list(net.parameters()) + [g, b]]
    opt = torch.optim.Adam(params, lr=2e-4)
    e, p = torch.randn(FIBERS, channels), torch.randn(FIBERS, COND)

    def step():
        x, log_det = e, 0.0
        for net, g, b, q in blocks:
            x1, x2 = x[:, :c1], x[:, c1:]
            a = net(torch.cat([x1, p], 1)) * 0.1
            s = 1.9 * torch.tanh(a[:, :c2] / 1.9)
            x2 = x2 * torch.exp(s) + a[:, c2:]
            scale = 0.1 * torch.nn.functional.softplus(g, beta=0.5)
            x = (torch.cat([x1, x2], 1) * scale + b) @ q.T
            log_det = log_det + s.sum(1) + torch.log(scale).sum()
        logp = -0.5 * ((x * x).sum(1) + channels * math.log(2 * math.pi)) + log_det
        loss = -torch.nn.functional.logsigmoid(logp / channels).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def main():
    npad.tune_cpu()                     # as the examples run
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="BLAS and torch threads (1 gives steadier ratios on a shared machine)")
    threads = ap.parse_args().threads
    from threadpoolctl import threadpool_limits
    threadpool_limits(threads)
    torch = torch_or_none()
    print(blas_info())
    print(f"NumPy float32 matmul: {matmul_gflops():.1f} GFLOP/s; {threads} thread(s) for npad and torch")
    if torch:
        torch.set_num_threads(threads)
    print(f"{'decoder width':>14} {'npad fibers/s':>14} {'torch fibers/s':>15} {'npad/torch':>10}")
    for ch in (24, 40, 112):
        t = best_time(npad_step(ch), repeat=3)
        row = f"{ch:>14} {FIBERS / t:14.0f}"
        if torch:
            tt = best_time(torch_step(torch, ch), repeat=3)
            row += f" {FIBERS / tt:15.0f} {tt / t:10.2f}"
        print(row)
    from npad.methods.cflow import CFlow
    model = CFlow(quick=True)
    model.stats = {f"feat_mean_{i}": np.zeros(c) for i, c in enumerate(model.encoder.channels)}
    model.stats.update({f"feat_std_{i}": np.ones(c) for i, c in enumerate(model.encoder.channels)})
    images = np.random.default_rng(0).random((8, 3, 256, 256)).astype(np.float32)
    t = best_time(lambda: model._score(images), repeat=2, min_time=0.0)
    print(f"inference at 256 x 256, batch 8 (EfficientNet-Lite0 + 3 decoders): {8 / t:.2f} images/s")


if __name__ == "__main__":
    main()
