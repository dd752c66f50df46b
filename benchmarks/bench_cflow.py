"""CFLOW-AD speed: training fibers/s of one decoder (8 coupling blocks, condition 128, fiber batch
256) at the default backbone's three widths, against the same decoder step written in plain
PyTorch when torch is installed; inference images/s at 256 x 256 (backbone + 3 decoders + maps);
the tracemalloc peaks of one decoder step and of scoring one batch.

    python benchmarks/bench_cflow.py                  the table above
    python benchmarks/bench_cflow.py --busy           the decoder steps, then the same with another process
                                                      keeping one core busy: npad/torch and busy/before ratios
    python benchmarks/bench_cflow.py --profile [DIR]  scoring a folder of images end to end, stage by stage
                                                      (default: the BSData pitting set, else the synthetic set)
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_cflow.py
"""
import argparse
import math
import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import best_time, blas_info, matmul_gflops, torch_or_none  # noqa: E402

import npad  # noqa: E402
import npad.functional as F  # noqa: E402
from npad.flows import cflow_decoder, gaussian_log_prob  # noqa: E402
from npad.optim import Adam  # noqa: E402

FIBERS, COND, BLOCKS, WIDTHS = 256, 128, 8, (24, 40, 112)
PITTING = "/work/shared/data/bsdata_pitting"


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


def decoder_rates(torch, rounds=3):
    """{width: (npad s/step, torch s/step or None)}: medians of ``rounds`` interleaved best-of-3 timings."""
    steps = {ch: (npad_step(ch), torch_step(torch, ch) if torch else None) for ch in WIDTHS}
    times = {ch: ([], []) for ch in WIDTHS}
    for _ in range(rounds):
        for ch, (ns, ts) in steps.items():
            times[ch][0].append(best_time(ns, repeat=3, min_time=0.1))
            if ts:
                times[ch][1].append(best_time(ts, repeat=3, min_time=0.1))
    return {ch: (float(np.median(a)), float(np.median(b)) if b else None) for ch, (a, b) in times.items()}


def print_decoder_table(rates, label=""):
    print(f"{'decoder width':>14} {'npad fibers/s':>14} {'torch fibers/s':>15} {'npad/torch':>10}  {label}")
    for ch, (t, tt) in rates.items():
        row = f"{ch:>14} {FIBERS / t:14.0f}"
        if tt:
            row += f" {FIBERS / tt:15.0f} {tt / t:10.2f}"
        print(row, flush=True)


def busy_core():
    """A process that keeps one core busy until killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def cflow_model():
    """CFlow(quick=True) with identity standardisation (speed does not depend on training)."""
    from npad.methods.cflow import CFlow
    model = CFlow(quick=True)
    model.stats = {f"feat_mean_{i}": np.zeros(c) for i, c in enumerate(model.encoder.channels)}
    model.stats.update({f"feat_std_{i}": np.ones(c) for i, c in enumerate(model.encoder.channels)})
    return model


def peak_mib(fn):
    """tracemalloc peak (MiB) of one call of fn (after one warm-up call)."""
    fn()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2 ** 20
    finally:
        tracemalloc.stop()


def profile(folder, n_images, batch):
    """Score ``n_images`` test images of an MVTec-layout folder at 256 x 256, stage by stage."""
    from npad.data import MVTecDataset
    from npad.data import transforms as T
    from npad.data.folder import load_image, load_mask
    from npad.maps import gaussian_smooth
    from npad import metrics
    model = cflow_model()
    ds = MVTecDataset(folder, split="test")
    pick = np.random.default_rng(0).permutation(len(ds))[:n_images]
    samples = [ds.samples[i] for i in sorted(pick)]
    ds.samples = samples
    stages = {}

    def timed(name, fn, *args):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args)
        wall, cpu = stages.get(name, (0.0, 0.0))
        stages[name] = (wall + time.perf_counter() - t0, cpu + time.process_time() - c0)
        return out

    resize = T.Resize((256, 256))
    images, masks = [], []
    for s in samples:
        im = timed("decode image + mask", load_image, s["path"])
        mk = timed("decode image + mask", load_mask, s["mask_path"]) if s.get("mask_path") else \
            np.zeros((1,) + im.shape[1:], np.float32)
        im, mk = timed("resize to 256 x 256", resize, im, mk)
        images.append(im)
        masks.append(mk)
    images, masks = np.stack(images), np.stack(masks)
    model._score(images[:batch])                                       # warm-up: graph plans, constants
    scale_log_prob = getattr(model, "_scale_log_prob", None) or (      # older npad: the same steps inline
        lambda k, f: model._log_prob(k, *model._fibers(f)).numpy().reshape(f.shape[0], *f.shape[2:]))
    stats = []
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        with npad.no_grad():
            feats = timed("backbone", model.encoder, x)
        part = {}
        for k, f in enumerate(feats):
            logp = timed("decoders", scale_log_prob, k, f.data)
            part[f"logp_{k}"] = np.asarray(logp, np.float64)
        stats.append(part)
    stats = {k: np.concatenate([p[k] for p in stats]) for k in stats[0]}
    scores, maps = timed("upsample, sum scales, maps, scores", model._maps, stats)
    timed("blur (sigma 4; PaDiM, PatchCore)", gaussian_smooth, maps, 4.0)
    timed("metrics (AUROC, AUPRO, F1, IoU)", metrics.evaluate, scores, maps, ds.labels, masks[:, 0])
    total = sum(w for w, _ in stages.values())
    n = len(images)
    print(f"\nscoring {n} test images of {folder} ({images.shape[2]} x {images.shape[3]}, batch {batch}), "
          f"stage by stage (wall time; CPU time of all threads, which load on the machine changes less):")
    for name, (t, c) in stages.items():
        print(f"  {name:34s} {t * 1e3 / n:8.2f} ms/image {100 * t / total:5.1f}%   CPU {c * 1e3 / n:8.2f} ms/image")
    print(f"  {'total':34s} {total * 1e3 / n:8.2f} ms/image = {n / total:.1f} images/s")
    ds.transform = resize
    t0 = time.perf_counter()
    res = model.evaluate(ds, batch_size=batch)
    t = time.perf_counter() - t0
    print(f"  end to end, model.evaluate (loader decoding in its thread while the model runs, metrics): "
          f"{n / t:.1f} images/s (image AUROC of the untrained decoders {100 * res['image_auroc']:.1f})")


def main():
    npad.tune_cpu()                     # as the examples run
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="BLAS and torch threads (1 gives steadier ratios on a shared machine)")
    ap.add_argument("--busy", action="store_true",
                    help="decoder steps without, then with another process keeping one core busy")
    ap.add_argument("--profile", nargs="?", const="", default=None, metavar="DIR",
                    help="scoring of a folder's test images, stage by stage")
    ap.add_argument("--images", type=int, default=64, help="images scored by --profile")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits
    threadpool_limits(args.threads)
    torch = torch_or_none()
    print(blas_info())
    print(f"NumPy float32 matmul: {matmul_gflops():.1f} GFLOP/s; {args.threads} thread(s) for npad and torch")
    if torch:
        torch.set_num_threads(args.threads)
    if args.profile is not None:
        folder = args.profile or (PITTING if os.path.isdir(PITTING) else None)
        if folder is None:
            from npad.data.synthetic import synthetic_mvtec
            folder = os.path.join(synthetic_mvtec(), "gear")
        profile(folder, args.images, 8)
        return
    if args.busy:
        idle = decoder_rates(torch)
        print_decoder_table(idle, "without the busy process")
        hog = busy_core()
        try:
            time.sleep(0.5)
            busy = decoder_rates(torch)
        finally:
            hog.kill()
            hog.wait()
        print_decoder_table(busy, "one core kept busy by another process")
        print(f"{'decoder width':>14} {'npad busy/before':>17} {'torch busy/before':>18}  (throughput kept)")
        for ch in WIDTHS:
            (t0, tt0), (t1, tt1) = idle[ch], busy[ch]
            print(f"{ch:>14} {t0 / t1:17.2f} " + (f"{tt0 / tt1:18.2f}" if tt0 else ""))
        return
    print_decoder_table(decoder_rates(torch))
    model = cflow_model()
    images = np.random.default_rng(0).random((8, 3, 256, 256)).astype(np.float32)
    t = best_time(lambda: model._maps(model._score(images)), repeat=3, min_time=0.0)
    print(f"inference at 256 x 256, batch 8 (EfficientNet-Lite0 + 3 decoders + maps): {8 / t:.2f} images/s")
    print(f"tracemalloc peak: one decoder step (width {WIDTHS[0]}, {FIBERS} fibers) "
          f"{peak_mib(npad_step(WIDTHS[0])):.1f} MiB; scoring a batch of 8 at 256 x 256 "
          f"{peak_mib(lambda: model._maps(model._score(images))):.1f} MiB")


if __name__ == "__main__":
    main()
