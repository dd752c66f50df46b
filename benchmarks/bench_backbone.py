"""Backbone forward throughput: npad's ONNX importer (frozen, BN folded, no_grad) against
onnxruntime on the same file, images/s at 256x256, batch 8.

    python benchmarks/bench_backbone.py [--size 256] [--batch 8] [--profile] [--threads 1]

Models: the converted EfficientNet-Lite0 (npad.backbones) and a ResNet-18-shaped graph
built with onnx.helper and random weights (same ops and sizes as torchvision's resnet18:
conv7x7/2 + BN + ReLU + maxpool, 4 stages of 2 basic blocks, 64-512 channels).
onnxruntime runs with its default threads and with intra_op_num_threads = the BLAS
threads npad uses. After ``npad.tune_cpu()`` npad's unrecorded forward runs one batch slice per thread,
each with one BLAS thread (``npad.onnx.fast.run_split``); its time by op type is taken on the whole batch
instead (op by op, so the sum is larger than the forward). ``--profile`` prints the top functions of one npad
forward (cProfile). ``--threads 1``: npad, BLAS and onnxruntime on one thread, timed by that thread's CPU
time (steadier on a shared machine). Also printed: the tracemalloc peak of one npad forward.
"""
import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import npad  # noqa: E402
from common import best_time, blas_info, matmul_gflops  # noqa: E402
from npad.onnx import OnnxModule  # noqa: E402

CLOCK = time.perf_counter       # time.thread_time with --threads 1


def resnet18_onnx(path, seed=0):
    """A ResNet-18-shaped ONNX graph (random weights, BN kept unfolded) written to ``path``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    k = [0]

    def new(p):
        k[0] += 1
        return f"{p}{k[0]}"

    def init(arr, p):
        n = new(p)
        inits.append(numpy_helper.from_array(arr.astype(np.float32), n))
        return n

    def conv_bn(x, cin, cout, ks, s, relu=True):
        w = init(rng.standard_normal((cout, cin, ks, ks)) * np.sqrt(2 / (cin * ks * ks)), "w")
        c = new("conv")
        nodes.append(helper.make_node("Conv", [x, w], [c], kernel_shape=[ks, ks], strides=[s, s],
                                      pads=[ks // 2] * 4))
        bn = [init(rng.random(cout) + 0.5, "g"), init(rng.standard_normal(cout) * 0.1, "b"),
              init(rng.standard_normal(cout) * 0.1, "m"), init(rng.random(cout) + 0.5, "v")]
        y = new("bn")
        nodes.append(helper.make_node("BatchNormalization", [c] + bn, [y]))
        if relu:
            r = new("relu")
            nodes.append(helper.make_node("Relu", [y], [r]))
            return r
        return y

    x = conv_bn("input", 3, 64, 7, 2)
    p = new("pool")
    nodes.append(helper.make_node("MaxPool", [x], [p], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, cin = p, 64
    outputs = []
    for i, cout in enumerate((64, 128, 256, 512)):
        for j in range(2):
            s = 2 if (i > 0 and j == 0) else 1
            y = conv_bn(conv_bn(x, cin, cout, 3, s), cout, cout, 3, 1, relu=False)
            sc = conv_bn(x, cin, cout, 1, s, relu=False) if (s != 1 or cin != cout) else x
            a, r = new("add"), (f"layer{i + 1}" if j == 1 else new("relu"))
            nodes += [helper.make_node("Add", [y, sc], [a]), helper.make_node("Relu", [a], [r])]
            x, cin = r, cout
        outputs.append(x)
    g = helper.make_graph(nodes, "resnet18", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            ["N", 3, "H", "W"])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def ort_session(path, threads=None):
    import onnxruntime as ort
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def blas_threads():
    try:
        from threadpoolctl import threadpool_info
        return max((i.get("num_threads") or 0) for i in threadpool_info() if i.get("user_api") == "blas")
    except Exception:  # noqa: BLE001
        return os.cpu_count()


def bench(name, path, x, profile=False):
    m = OnnxModule(path, frozen=True)
    xt = npad.tensor(x)

    def run_npad():
        with npad.no_grad():
            return m(xt)

    t_np = best_time(run_npad, repeat=3, min_time=1.0, clock=CLOCK)
    rows = [("npad (frozen, no_grad)", t_np)]
    try:
        threads = blas_threads()
        for label, th in (("onnxruntime default threads", None), (f"onnxruntime intra_op={threads}", threads)):
            if label.endswith("default threads") and CLOCK is time.thread_time:
                continue                    # its own threads: the calling thread's CPU time would not see them
            s = ort_session(path, th)
            feed = {s.get_inputs()[0].name: x}
            rows.append((label, best_time(lambda: s.run(None, feed), repeat=3, min_time=1.0, clock=CLOCK)))
    except ImportError:
        print("onnxruntime not installed: no peer")
    B = x.shape[0]
    tracemalloc.start()
    run_npad()
    peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    print(f"\n{name}: batch {B} x {x.shape[1]} x {x.shape[2]} x {x.shape[3]}; tracemalloc peak of one npad "
          f"forward {peak:.1f} MiB")
    for label, t in rows:
        ratio = f"   npad / this = {rows[0][1] and t / rows[0][1]:.2f}x" if label != rows[0][0] else ""
        print(f"  {label:32s} {t * 1e3:8.1f} ms/batch {B / t:8.1f} images/s{ratio}")
    ops = m.profile(xt)
    total = sum(ops.values())
    print("  npad time by op type (whole batch): " + ", ".join(f"{k} {v * 1e3:.0f} ms ({100 * v / total:.0f}%)"
                                                for k, v in list(ops.items())[:6]))
    if profile:
        pr = cProfile.Profile()
        pr.enable()
        run_npad()
        pr.disable()
        print(f"  cProfile of one npad forward ({name}), by total time:")
        pstats.Stats(pr).sort_stats("tottime").print_stats(12)
    return rows


def main():
    global CLOCK
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="threads of npad, BLAS and onnxruntime")
    args = ap.parse_args()
    try:                                            # the documented opt-in to the batch split and BLAS tuning
        npad.tune_cpu(watch_cores=args.threads != 1)
    except TypeError:                               # an npad from before the CoreWatch
        npad.tune_cpu()
    if args.threads:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)
        npad.set_num_threads(args.threads)
        if args.threads == 1:
            CLOCK = time.thread_time
    print(blas_info())
    load = ", load average %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    print(f"NumPy float32 matmul: {matmul_gflops():.0f} GFLOP/s; CPUs: {os.cpu_count()}{load}")
    x = np.random.default_rng(0).random((args.batch, 3, args.size, args.size)).astype(np.float32)
    from npad.backbones import efficientnet_lite0_onnx
    try:
        bench("EfficientNet-Lite0", str(efficientnet_lite0_onnx()), x, args.profile)
    except (FileNotFoundError, ImportError) as e:
        print(f"EfficientNet-Lite0 skipped: {e}")
    with tempfile.TemporaryDirectory() as d:
        bench("ResNet-18-shaped graph", resnet18_onnx(os.path.join(d, "resnet18.onnx")), x, args.profile)


if __name__ == "__main__":
    main()
