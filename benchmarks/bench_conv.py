"""conv2d speed at ResNet / EfficientNet shapes and at every depthwise layer of EfficientNet-Lite0 at
256 x 256 input (batch 8, float32, CPU).

Prints, per shape: forward and forward+backward time, achieved GFLOP/s, the ratio to this machine's
NumPy float32 matmul GFLOP/s (a big square sgemm), the ratio to PyTorch CPU when torch is installed
(npad time / torch time; 1.0 = as fast), and the tracemalloc peak of one forward+backward.
Also prints threadpoolctl's BLAS info (kernel, threads) and the OPENBLAS_* variables in force.

    python benchmarks/bench_conv.py            [--quick] [--lite0] [--threads 1]
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_conv.py

``--lite0``: the Lite0 depthwise layers only. ``--threads 1``: npad, BLAS and torch on one thread, timed
by the thread's CPU time, which other processes on a shared machine disturb far less than wall time.
"""
import argparse
import os
import sys
import time
import tracemalloc

import numpy

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import npad  # noqa: E402
import npad.functional as F  # noqa: E402
from npad import Tensor  # noqa: E402

SHAPES = [
    # name, C, H, O, k, stride, groups
    ("resnet 3x3 64@56", 64, 56, 64, 3, 1, 1),
    ("resnet 3x3 128@28", 128, 28, 128, 3, 1, 1),
    ("resnet 3x3 256@28", 256, 28, 256, 3, 1, 1),
    ("resnet 3x3 s2 128->256@56", 128, 56, 256, 3, 2, 1),
    ("resnet 1x1 64->256@56", 64, 56, 256, 1, 1, 1),
    ("resnet 1x1 256->64@56", 256, 56, 64, 1, 1, 1),
    ("effnet dw 3x3 144@56", 144, 56, 144, 3, 1, 144),
    ("effnet dw 5x5 240@28", 240, 28, 240, 5, 1, 240),
    # channels-last inputs and gradients, as inside a network (npad's convs return channels-last
    # memory; torch gets the same strides, i.e. torch.channels_last)
    ("effnet dw 3x3 144@56 ch-last", 144, 56, 144, 3, 1, 144, True),
    ("effnet dw 5x5 240@28 ch-last", 240, 28, 240, 5, 1, 240, True),
    ("resnet 3x3 64@56 ch-last", 64, 56, 64, 3, 1, 1, True),
]
# EfficientNet-Lite0's depthwise layers at 256 x 256 input (block: channels @ size, kernel, stride), channels-last
# as inside the network; stride 2 with symmetric padding k // 2 (the ONNX file pads SAME_UPPER: same flops)
LITE0_DW = [("lite0 b0 dw3 32@128", 32, 128, 3, 1), ("lite0 b1 dw3 s2 96@128", 96, 128, 3, 2),
            ("lite0 b2 dw3 144@64", 144, 64, 3, 1), ("lite0 b3 dw5 s2 144@64", 144, 64, 5, 2),
            ("lite0 b4 dw5 240@32", 240, 32, 5, 1), ("lite0 b5 dw3 s2 240@32", 240, 32, 3, 2),
            ("lite0 b6-7 dw3 480@16", 480, 16, 3, 1), ("lite0 b8 dw5 480@16", 480, 16, 5, 1),
            ("lite0 b9-10 dw5 672@16", 672, 16, 5, 1), ("lite0 b11 dw5 s2 672@16", 672, 16, 5, 2),
            ("lite0 b12-14 dw5 1152@8", 1152, 8, 5, 1), ("lite0 b15 dw3 1152@8", 1152, 8, 3, 1)]
SHAPES += [(name, C, H, C, k, s, C, True) for name, C, H, k, s in LITE0_DW]
BATCH = 8
CLOCK = time.perf_counter   # time.thread_time with --threads 1


def best_time(fn, budget=0.6, min_reps=3, max_reps=20):
    """Minimum time of fn (CLOCK) over repetitions filling about ``budget`` seconds."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < budget and len(times) < max_reps):
        t = CLOCK()
        fn()
        times.append(CLOCK() - t)
    return min(times)


def matmul_gflops(n=2048):
    a = numpy.random.default_rng(0).standard_normal((n, n)).astype(numpy.float32)
    b = a.copy()
    return 2 * n ** 3 / best_time(lambda: a @ b, budget=1.0) / 1e9


def blas_info():
    try:
        import threadpoolctl
        return [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "threading_layer")}
                for d in threadpoolctl.threadpool_info() if d.get("user_api") == "blas"]
    except ImportError:
        return "threadpoolctl not installed"


def _channels_last(a):
    """The same NCHW array stored B x H x W x C (torch.channels_last strides)."""
    return numpy.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def main():
    global CLOCK
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="shorter timing budget")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--lite0", action="store_true", help="only EfficientNet-Lite0's depthwise layers")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="threads of npad, BLAS and torch (1: timed by the thread's CPU time)")
    args = ap.parse_args()
    try:                                            # as the examples run
        npad.tune_cpu(watch_cores=args.threads > 1)
    except TypeError:                               # an npad from before the CoreWatch
        npad.tune_cpu()
    npad.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits
    threadpool_limits(args.threads)
    if args.threads == 1:
        CLOCK = time.thread_time
    budget = 0.25 if args.quick else 0.6
    torch = None
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            torch = None
    print(f"numpy {numpy.__version__}, cpus {os.cpu_count()}, OPENBLAS env: "
          f"{ {k: v for k, v in os.environ.items() if k.startswith('OPENBLAS')} }")
    print(f"BLAS: {blas_info()}")
    if torch is not None:
        print(f"torch {torch.__version__} (threads {torch.get_num_threads()})")
    mm = matmul_gflops()
    print(f"NumPy float32 matmul 2048^3: {mm:.0f} GFLOP/s\n")
    hdr = (f"{'shape (batch 8)':28s} {'fwd ms':>8s} {'GF/s':>6s} {'/mm':>5s} {'fwd+bwd ms':>10s} {'GF/s':>6s} {'/mm':>5s}"
           f" {'torch fwd':>9s} {'x torch':>7s} {'torch f+b':>9s} {'x torch':>7s} {'peak MiB':>8s}")
    print(hdr)
    print("-" * len(hdr))
    rng = numpy.random.default_rng(0)
    rows = []
    for name, C, H, O, k, s, g, *layout in (SHAPES[-len(LITE0_DW):] if args.lite0 else SHAPES):
        channels_last = bool(layout and layout[0])
        x = rng.standard_normal((BATCH, C, H, H)).astype(numpy.float32)
        if channels_last:
            x = _channels_last(x)
        w = (rng.standard_normal((O, C // g, k, k)) * 0.1).astype(numpy.float32)
        p = k // 2
        Ho = (H + 2 * p - k) // s + 1
        flops = 2 * BATCH * O * (C // g) * k * k * Ho * Ho
        xt, wt = Tensor(x), Tensor(w, requires_grad=True)
        xg = Tensor(x, requires_grad=True)

        def fwd():
            with npad.no_grad():
                return F.conv2d(xt, wt, None, s, p, 1, g)

        gy = numpy.ones((BATCH, O, Ho, Ho), numpy.float32)
        if channels_last:
            gy = _channels_last(gy)

        def fwd_bwd():
            xg.grad = wt.grad = None
            F.conv2d(xg, wt, None, s, p, 1, g).backward(gy)

        tf, tfb = best_time(fwd, budget), best_time(fwd_bwd, budget)
        tracemalloc.start()
        fwd_bwd()
        peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
        tracemalloc.stop()
        tt = ttb = None
        if torch is not None:
            X, W = torch.from_numpy(x), torch.from_numpy(w).requires_grad_()
            XG = torch.from_numpy(x.copy(order="K")).requires_grad_()
            GY = torch.from_numpy(gy)

            def tfwd():
                with torch.no_grad():
                    return torch.nn.functional.conv2d(X, W, None, s, p, 1, g)

            def tfwd_bwd():
                XG.grad = W.grad = None
                torch.nn.functional.conv2d(XG, W, None, s, p, 1, g).backward(GY)

            tt, ttb = best_time(tfwd, budget), best_time(tfwd_bwd, budget)
        gf, gfb = flops / tf / 1e9, 3 * flops / tfb / 1e9
        tcols = (f" {tt * 1e3:9.2f} {tf / tt:7.2f} {ttb * 1e3:9.2f} {tfb / ttb:7.2f}" if tt else
                 f" {'-':>9s} {'-':>7s} {'-':>9s} {'-':>7s}")
        print(f"{name:28s} {tf * 1e3:8.2f} {gf:6.0f} {gf / mm:5.2f} {tfb * 1e3:10.2f} {gfb:6.0f} {gfb / mm:5.2f}"
              f"{tcols} {peak:8.1f}", flush=True)
        rows.append((name, tf, tfb, tt, ttb, peak))
    lite = [r for r in rows if r[0].startswith("lite0") and r[3]]
    if lite:
        fw, fb = [r[1] / r[3] for r in lite], [r[2] / r[4] for r in lite]
        print(f"\nLite0 depthwise layers, npad time / torch time: forward median {numpy.median(fw):.2f} "
              f"(max {max(fw):.2f}), forward+backward median {numpy.median(fb):.2f} (max {max(fb):.2f})")
    print(f"\nNumPy float32 matmul again: {matmul_gflops():.0f} GFLOP/s (load on the machine shows as a change)")
    print("GF/s: forward counts 2*B*O*(C/g)*k*k*Ho*Wo flops, forward+backward three times that; "
          "/mm: ratio to the matmul GFLOP/s; x torch: npad time / torch time; "
          "peak MiB: tracemalloc peak of one forward+backward (input, weight and output not included).")


if __name__ == "__main__":
    main()
