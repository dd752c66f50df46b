"""The npad command line end to end in a tiny configuration, and the mistakes a user makes with it:
each is one line on stderr and exit status 2."""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from npad.cli import main

SIZE = 64


@pytest.fixture(scope="module")
def model_file(tiny_mvtec, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_fit")
    main(["fit", "padim", "--data", str(tiny_mvtec), "--size", str(SIZE), "--set", "d=20", "--out", str(out)])
    return out / "model.h5"


def run(argv, capsys):
    """(exit status, stdout, stderr) of one command."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_fit_saves_a_calibrated_model_and_its_histogram(model_file, capsys):
    from npad.methods import load
    model = load(model_file)
    assert model.threshold is not None and model.config["d"] == 20
    assert "held-out normal training images" in model.calibration["rule"]
    assert (model_file.parent / "calibration.png").is_file()


def test_fit_cflow_with_a_calibration_fraction(tiny_mvtec, tmp_path, capsys):
    code, out, _ = run(["fit", "cflow", "--data", tiny_mvtec, "--size", SIZE, "--epochs", 1, "--set", "n_blocks=1",
                        "--calib-fraction", 0.4, "--out", tmp_path], capsys)
    assert code == 0 and "threshold" in out and "of 5 held-out" in out


def test_fit_vae_attention_from_the_command_line(tiny_mvtec, tmp_path, capsys):
    code, out, err = run(["fit", "vae_attention", "--data", tiny_mvtec, "--size", SIZE, "--epochs", 1,
                          "--out", tmp_path], capsys)
    assert code == 0, err
    assert (tmp_path / "model.h5").is_file() and "threshold" in out


def test_test_writes_metrics_and_draws_the_models_threshold(model_file, tiny_mvtec, tmp_path, capsys):
    code, out, err = run(["test", model_file, "--data", tiny_mvtec, "--out", tmp_path], capsys)
    assert code == 0, err
    assert "image AUROC" in out and "at the model's threshold" in out and "normal images flagged" in out
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["threshold"] > 0 and 0 <= m["false_alarm_rate"] <= 1 and "held-out" in m["threshold_rule"]
    assert m["normalization"] == "train" and "square" in m["per_defect"]
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [r["defect_type"] for r in rows] == ["all", "good", "square"] and float(rows[0]["flagged"]) >= 0
    assert float(rows[1]["flagged"]) == m["false_alarm_rate"] and rows[1]["image_auroc"] == ""
    assert (tmp_path / "panels.png").is_file() and (tmp_path / "histogram.png").is_file()


@pytest.fixture
def photos(tiny_mvtec, tmp_path):
    """Two folders holding files of the same names, photos of another size and aspect, a broken file."""
    root = tmp_path / "photos"
    shutil.copytree(tiny_mvtec / "test" / "square", root / "a")
    shutil.copytree(tiny_mvtec / "test" / "good", root / "b")
    wide = Image.open(tiny_mvtec / "test" / "square" / "000.png").resize((150, 61))
    wide.save(root / "b" / "wide.jpg")
    wide.save(root / "b" / "wide.png")                    # same stem, another suffix
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)   # a truncated PNG
    return root


def test_predict_outputs_at_the_photos_size_with_relative_paths(model_file, photos, tmp_path, capsys):
    out = tmp_path / "pred"
    code, stdout, err = run(["predict", model_file, photos, "--out", out, "--batch-size", 3], capsys)
    assert code == 0 and "broken.png" in err and all(line.startswith("warning:") for line in err.splitlines())
    rows = list(csv.DictReader(open(out / "scores.csv")))
    broken = [r for r in rows if r["path"].endswith("broken.png")]           # listed, with why it has no score
    assert len(broken) == 1 and broken[0]["score"] == "" and "unreadable" in broken[0]["note"]
    rows = [r for r in rows if r not in broken]
    paths = [r["path"] for r in rows]
    assert len(rows) == 10 and "a/000.png" in paths and "b/000.png" in paths and "b/wide.jpg" in paths
    assert "scored 10 of 11 images" in stdout and all(r["note"] == "" for r in rows)
    for r in rows:
        assert 0 <= float(r["normalized_score"]) <= 1 and r["anomalous"] in ("0", "1")
        assert (float(r["normalized_score"]) >= 0.5) == (r["anomalous"] == "1")
        mask, heat = Image.open(out / r["mask"]), Image.open(out / r["heatmap"])
        assert mask.mode == "L" and mask.size == (int(r["width"]), int(r["height"]))
        assert heat.size[0] > int(r["width"]) and heat.size[1] > int(r["height"])   # + colour bar, caption
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
    wide = {r["path"]: r for r in rows}
    assert (wide["b/wide.jpg"]["width"], wide["b/wide.jpg"]["height"]) == ("150", "61")
    assert wide["b/wide.jpg"]["mask"] != wide["b/wide.png"]["mask"]            # no overwrite
    info = json.loads((out / "scores.json").read_text())
    assert info["threshold"] > 0 and len(info["images"]) == 11 and "0.5" in info["normalized_score"]


def test_predict_survives_one_nan_map(model_file, photos, tmp_path, capsys, monkeypatch):
    from npad.methods.padim import PaDiM
    maps = PaDiM._maps

    def first_nan(self, stats, reference=None):
        scores, m = maps(self, stats, reference)
        m = m.copy()
        m[0] = np.nan
        return scores, m
    monkeypatch.setattr(PaDiM, "_maps", first_nan)
    code, stdout, err = run(["predict", model_file, photos / "a", "--out", tmp_path, "--batch-size", 2], capsys)
    rows = list(csv.DictReader(open(tmp_path / "scores.csv")))
    assert code == 0 and "NaN" in err and "2 not scored" in stdout
    assert [r["anomalous"] for r in rows].count("") == 2 and sum(r["heatmap"] != "" for r in rows) == 2
    assert sum("NaN" in r["note"] for r in rows) == 2


def test_fit_keeps_the_trained_model_when_calibration_fails(tiny_mvtec, tmp_path, capsys, monkeypatch):
    from npad.methods.base import AnomalyModel

    def broken(self, *a, **k):
        raise ValueError("calibration went wrong")
    monkeypatch.setattr(AnomalyModel, "calibrate", broken)
    code, _, err = run(["fit", "padim", "--data", tiny_mvtec, "--size", SIZE, "--out", tmp_path], capsys)
    assert code == 2 and "calibration went wrong" in err and "saved without a threshold" in err
    from npad.methods import load
    assert load(tmp_path / "model.h5").threshold is None


def test_output_folder_is_checked_before_training(tiny_mvtec, tmp_path, capsys, monkeypatch):
    from npad.methods.base import AnomalyModel
    monkeypatch.setattr(AnomalyModel, "fit", lambda *a, **k: pytest.fail("training started"))
    (tmp_path / "file").write_text("x")
    for out, message in ((tmp_path / "file", "a file is in the way"), (tmp_path / ("n" * 300), "name too long"),
                         (tmp_path / "file" / "sub", "a file is in the way")):
        code, _, err = run(["fit", "padim", "--data", tiny_mvtec, "--out", out], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def _set(path, key, value):
    """The checkpoint at ``path`` with the dataset ``key`` replaced by ``value``."""
    with h5py.File(path, "r+") as f:
        del f[key]
        f.create_dataset(key, data=value)
    return path


# (command, what stderr says): each a user's mistake, answered with one line and status 2
MISTAKES = [
    (["fit", "nosuch", "--data", "."], "unknown method 'nosuch'"),
    (["fit", "padim", "--data", "/no/such/folder"], "--data /no/such/folder is not a folder"),
    (["fit", "cflow", "--data", "{data}", "--set", "n_blcks=1"], "did you mean n_blocks?"),
    (["fit", "cflow", "--data", "{data}", "--set", "lr=-1"], "option lr must be > 0"),
    (["fit", "cflow", "--data", "{data}", "--set", "lr=abc"], "option lr must be a number, got 'abc'"),
    (["fit", "cflow", "--data", "{data}", "--set", "n_blocks=2.5"], "n_blocks must be an integer"),
    (["fit", "cflow", "--data", "{data}", "--set", "input_size=64"], "--set input_size: give it with --size"),
    (["fit", "cflow", "--data", "{data}", "--set", "meta_epochs=3"], "give it with --epochs"),
    (["fit", "cflow", "--data", "{data}", "--set", "lr"], "--set expects KEY=VALUE"),
    (["fit", "padim", "--data", "{data}", "--set", "sigma=-4"], "option sigma must be >= 0"),
    (["fit", "padim", "--data", "{data}", "--set", "eps=-0.01"], "option eps must be > 0"),
    (["fit", "padim", "--data", "{data}", "--set", "eps=nan"], "option eps must be a number"),
    (["fit", "adtr", "--data", "{data}", "--set", "rotation=(1,2)"], "option rotation must be a number"),
    (["fit", "cflow", "--data", "{data}", "--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["fit", "cflow", "--data", "{data}", "--epochs", "-3"], "--epochs must be at least 1, got -3"),
    (["fit", "padim", "--data", "{data}", "--epochs", "3"], "--epochs: padim does not train for epochs"),
    (["fit", "padim", "--data", "{data}", "--size", "8"], "--size 8 is too small for the backbone"),
    (["fit", "padim", "--data", "{data}", "--size", "64", "64", "64"], "--size takes one number"),
    (["fit", "favae", "--data", "{data}", "--size", "64", "128"], "input_size must be square"),
    (["fit", "padim", "--data", "{data}", "--calib-fraction", "1.5"], "--calib-fraction must be in [0, 1)"),
    (["fit", "padim", "--data", "{data}", "--calib-fraction", "nan"], "must be a finite number"),
    (["fit", "padim", "--data", "{data}", "--calib-fraction", "0.1", "--val", "{data}"], "does not apply with --val"),
    (["fit", "padim", "--data", "{data}", "--onnx", "/no/such.onnx"], "--onnx /no/such.onnx is not a file"),
    (["fit", "padim", "--data", "{data}", "--seed", "-1"], "--seed must be >= 0"),
    (["fit", "padim", "--data", "{data}", "--backbone", "nosuch"], "unknown backbone 'nosuch'; known:"),
    (["fit", "padim", "--data", "{data}", "--set", "taps=nosuch"], "has no tap set 'nosuch'"),
    (["fit", "adtr", "--data", "{data}", "--size", "40"], "input_size must be a multiple of 16"),
    (["fit", "patchcore", "--data", "{data}", "--set", "dim=-5"], "option dim must be > 0, got -5"),
    (["fit", "patchcore", "--data", "{data}", "--set", "num_neighbours=0"], "option num_neighbours must be > 0"),
    (["fit", "patchcore", "--data", "{data}", "--set", "taps=('stage2', 3)"], "option taps must be a string"),
    (["fit", "padim", "--data", "{data}", "--out", "{notmodel}"], "a file is in the way"),
    (["fit", "padim", "--data", "{data}", "--val", "{empty}"], "no dataset category under"),
    (["fit", "padim"], "the following arguments are required: --data"),
    (["test", "/no/model.h5", "--data", "."], "model file /no/model.h5 does not exist"),
    (["test", "{model}", "--data", "/no/such"], "--data /no/such is not a folder"),
    (["test", "{notmodel}", "--data", "{data}"], "not an HDF5 file"),
    (["predict", "{notmodel}", "{data}"], "not an HDF5 file"),
    (["predict", "{model}", "/no/such/image.png"], "/no/such/image.png does not exist"),
    (["predict", "{model}", "{empty}"], "no images in folder"),
    (["predict", "{model}", "{data}", "--threshold", "nan"], "--threshold: must be a finite number, got 'nan'"),
    (["predict", "{model}", "{data}", "--batch-size", "0"], "--batch-size: must be a whole number >= 1"),
    (["predict", "{nanmodel}", "{data}"], "threshold is nan; a threshold must be a finite number"),
    (["test", "{unfitted}", "--data", "{data}"], "holds a model that was never fitted"),
    (["predict", "{model}", "{data}", "--out", "{notmodel}"], "a file is in the way"),
]


def test_set_values_parse_as_python_literals():
    from npad import methods
    from npad.cli import _fit_options, _parser
    args = _parser().parse_args(["fit", "patchcore", "--data", ".", "--set", "taps=('stage2', 'stage3')", "dim=64",
                                 "coreset_ratio=0.1", "image_score=max", "--size", "96", "128"])
    opts = _fit_options(methods.get("patchcore"), args)
    assert opts["taps"] == ("stage2", "stage3") and opts["dim"] == 64 and opts["coreset_ratio"] == 0.1
    assert opts["image_score"] == "max" and opts["input_size"] == (96, 128) and opts["quick"] is True


@pytest.mark.parametrize("argv,message", MISTAKES, ids=[" ".join(a[:3]) + " " + m[:20] for a, m in MISTAKES])
def test_mistakes_are_one_line_and_status_2(argv, message, model_file, tiny_mvtec, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    bad = tmp_path / "model.txt"
    bad.write_text("not a checkpoint")
    nan = _set(shutil.copy(model_file, tmp_path / "nan.h5"), "stats/threshold", np.nan)
    unfitted = _set(shutil.copy(model_file, tmp_path / "unfitted.h5"), "stats/provenance/fitted", 0)
    where = dict(data=tiny_mvtec, model=model_file, notmodel=bad, empty=tmp_path / "empty", nanmodel=nan,
                 unfitted=unfitted)
    code, _, err = run([a.format(**where) for a in argv], capsys)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_listing_into_a_closed_pipe_is_quiet(capsys, monkeypatch):
    class Closed:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass
    monkeypatch.setattr(sys, "stdout", Closed())
    with pytest.raises(SystemExit) as e:
        main(["backbones"])
    assert e.value.code == 1 and capsys.readouterr().err == ""
    r = subprocess.run(f"{sys.executable} -m npad backbones | head -1", shell=True, capture_output=True, text=True,
                       cwd=Path(__file__).parents[1])
    assert r.returncode == 0 and r.stderr == "" and r.stdout.startswith("Backbones")


def test_predict_on_files_none_of_which_can_be_read(model_file, tmp_path, capsys):
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    code, _, err = run(["predict", model_file, tmp_path, "--out", tmp_path / "out"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1] == "npad: none of the 2 images could be scored (see the warnings)"
    assert all(line.startswith("warning: skipping unreadable image") for line in lines[:-1])


def test_predict_with_a_threshold_of_ones_own_and_with_an_older_model(model_file, photos, tmp_path, capsys):
    code, _, _ = run(["predict", model_file, photos / "a", "--out", tmp_path / "low", "--threshold", "0"], capsys)
    rows = list(csv.DictReader(open(tmp_path / "low" / "scores.csv")))
    assert code == 0 and all(r["anomalous"] == "1" for r in rows)
    assert json.loads((tmp_path / "low" / "scores.json").read_text())["threshold_rule"] == "--threshold"
    old = shutil.copy(model_file, tmp_path / "old.h5")              # saved before calibrations were stored
    with h5py.File(old, "r+") as f:
        del f["stats/calibration"]
        f["stats"].attrs["npad_keys"] = json.dumps([k for k in json.loads(f["stats"].attrs["npad_keys"])
                                                    if k != "calibration"])
    code, _, err = run(["predict", old, photos / "a", "--out", tmp_path / "old"], capsys)
    rows = list(csv.DictReader(open(tmp_path / "old" / "scores.csv")))
    assert code == 0 and all(r["normalized_score"] == "" and r["heatmap"] for r in rows), err


def test_predict_shortens_output_names_too_long_for_a_temporary_file(model_file, tiny_mvtec, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    long = src / ("x" * 240 + ".png")                    # .<name>.<random>.png.tmp would pass 255 bytes
    shutil.copy(tiny_mvtec / "test" / "good" / "000.png", long)
    code, _, err = run(["predict", model_file, src, "--out", tmp_path / "out"], capsys)
    row = next(csv.DictReader(open(tmp_path / "out" / "scores.csv")))
    assert code == 0 and row["path"] == long.name and len(row["heatmap"]) < 200, err
    assert (tmp_path / "out" / row["heatmap"]).is_file() and (tmp_path / "out" / row["mask"]).is_file()


def test_predict_skips_a_nan_tiff_and_draws_a_one_pixel_high_photo(model_file, tiny_mvtec, tmp_path, capsys):
    src = tmp_path / "in"
    shutil.copytree(tiny_mvtec / "test" / "good", src)
    nan = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    nan[5, 5] = np.nan
    Image.fromarray(nan, mode="F").save(src / "nan.tif")
    Image.fromarray(np.full((1, 300, 3), 128, np.uint8)).save(src / "thin.png")
    code, stdout, err = run(["predict", model_file, src, "--out", tmp_path / "out"], capsys)
    rows = {r["path"]: r for r in csv.DictReader(open(tmp_path / "out" / "scores.csv"))}
    assert code == 0 and "nan.tif" in err and "NaN" in err, err
    assert rows["nan.tif"]["score"] == "" and "unreadable" in rows["nan.tif"]["note"]
    thin = rows["thin.png"]
    assert (thin["height"], thin["width"]) == ("1", "300") and thin["note"] == ""
    assert Image.open(tmp_path / "out" / thin["mask"]).size == (300, 1)
