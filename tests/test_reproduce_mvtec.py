"""examples/reproduce_mvtec.sh: every command it prints parses in its example as a paper-mode run of one
MVTec AD category (the paper's backbone and size left to paper mode), with each paper's number of runs."""
import importlib.util
import shlex
import subprocess
from pathlib import Path

import pytest

from npad.data import MVTEC_CATEGORIES
from npad.experiment import budget_options

ROOT = Path(__file__).resolve().parents[1]


def _commands():
    r = subprocess.run(["bash", str(ROOT / "examples" / "reproduce_mvtec.sh"), "/data/mvtec", "all"],
                       env={"DRY_RUN": "1", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [shlex.split(line[2:]) for line in r.stdout.splitlines() if line.startswith("+ ")]


def _module(script):
    spec = importlib.util.spec_from_file_location(Path(script).stem, script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_reproduce_script_runs_each_paper_per_category_and_seed(monkeypatch, tmp_path):
    cmds = _commands()
    by_script = {}
    for c in cmds:
        by_script.setdefault(Path(c[1]).name, []).append(c[2:])
    counts = {k: len(v) for k, v in by_script.items()}
    n = len(MVTEC_CATEGORIES)
    assert counts == {"export_torchvision.py": 3, "cflow_mvtec.py": 4 * n, "adtr_mvtec.py": 2 * n,
                      "favae_mvtec.py": 2 * 5 * n, "vae_attention.py": 10}
    assert ["wide_resnet50_2", "--padding", "reflect"] in by_script["export_torchvision.py"]
    monkeypatch.chdir(tmp_path)
    for script, argvs in by_script.items():
        if script == "export_torchvision.py":
            continue
        mod = _module(ROOT / "examples" / script)
        seen = []
        if script == "vae_attention.py":
            monkeypatch.setattr(mod, "run_mvtec", lambda args, out: seen.append(args))
            monkeypatch.setattr(mod.npad, "set_device", lambda device: None)          # no GPU here
        else:
            monkeypatch.setattr(mod, "run", lambda make, args, name: seen.append(args))
        for argv in argvs[:2] + argvs[-1:]:
            mod.main(argv)
        for args in seen:
            assert args.paper and not args.full and args.category in MVTEC_CATEGORIES and args.device == "cuda"
            opts = budget_options(args)
            assert opts["paper"] and "input_size" not in opts and "backbone" not in opts
    cflow_seeds = {a[a.index("--seed") + 1] for a in by_script["cflow_mvtec.py"]}
    favae_seeds = {a[a.index("--seed") + 1] for a in by_script["favae_mvtec.py"]}
    assert cflow_seeds == {"0", "1", "2", "3"} and favae_seeds == {"0", "1", "2", "3", "4"}


def test_reproduce_script_refuses_an_unknown_table():
    r = subprocess.run(["bash", str(ROOT / "examples" / "reproduce_mvtec.sh"), "/x", "padim"],
                       env={"DRY_RUN": "1", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown table padim" in r.stderr
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run(["bash", str(ROOT / "examples" / "reproduce_mvtec.sh")], check=True, capture_output=True,
                       timeout=60)
