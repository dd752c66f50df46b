"""benchmarks/gpu_check.py, the prepared GPU check: its --dry-run-strict mode runs every phase (tiny sizes,
the strict CuPy stand-in on the CPU) and writes the JSON and summary a reader uses; the metric comparison
with a CPU run and the reading of pytest's output on their own."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


@pytest.mark.skipif(os.environ.get("NPAD_TEST_XP") == "strict", reason="a subprocess: the plain run covers it")
def test_dry_run_strict_runs_every_phase(tiny_mvtec, tmp_path):
    out = tmp_path / "check"
    r = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run-strict", "--out", str(out),
                        "--data", str(tiny_mvtec), "--tests", "tests/test_strict_xp.py -k namespace"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    phases = json.loads((out / "gpu_check.json").read_text())["phases"]
    assert {k: p["status"] for k, p in phases.items()} == dict.fromkeys(gpu_check.PHASES, "ok")
    assert "stand-in" in phases["env"]["gpu"]
    assert phases["tests"]["passed"] == 1 and phases["tests"]["failed"] == 0
    rows = {row["category"]: row for row in phases["main"]["rows"]}
    assert set(rows) == {"stripes", "mean"} and all(0 <= rows["stripes"][m] <= 1 for m in gpu_check.METRICS)
    bench = phases["bench"]["rows"]
    assert [row["unit"] for row in bench] == ["fibers/s", "images/s", "images/s"]
    assert all(row["npad_per_s"] > 0 for row in bench)
    if "torch_per_s" in bench[0]:       # the PyTorch peer computes the same numbers as npad
        assert bench[0]["torch_max_rel_diff"] < 1e-5 and bench[1]["torch_max_rel_diff"] < 1e-4
    text = (out / "summary.md").read_text()
    assert "## bench: ok" in text and "- stripes: image_auroc" in text and "npad / onnxruntime" in text


def test_metrics_against_the_cpu_run(tmp_path):
    rows = [dict(category="gear", image_auroc=0.97, pixel_auroc=0.985, aupro=0.95)]
    close = [dict(category="gear", image_auroc=0.968, pixel_auroc=0.985, aupro=0.955)]
    far = [dict(close[0], aupro=0.93)]
    assert gpu_check.compare(rows, close, 0.01)[1]
    table, ok = gpu_check.compare(rows, far, 0.01)
    assert not ok and table["gear"]["aupro"] == [0.95, 0.93, False]
    assert not gpu_check.compare(rows, [dict(far[0], category="weave")], 0.01)[1]     # nothing compared
    csv = tmp_path / "results.csv"
    csv.write_text("category,image_auroc,pixel_auroc,aupro,train_seconds\ngear,0.968,0.985,0.955,200\n")
    assert gpu_check.load_rows(csv) == close


def test_pytest_output_is_counted_even_when_cut_off():
    done = "..F.s\nFAILED tests/test_x.py::test_y - AssertionError\n1 failed, 3 passed, 1 skipped in 2.0s\n"
    assert gpu_check.pytest_counts(done) == dict(passed=3, failed=1, errors=0, skipped=1,
                                                 failures=["FAILED tests/test_x.py::test_y - AssertionError"])
    cut = "........F.......E.s                                     [ 12%]\n......."
    counts = gpu_check.pytest_counts(cut)
    assert (counts["passed"], counts["failed"], counts["errors"], counts["skipped"]) == (23, 1, 1, 1)
