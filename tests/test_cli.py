"""The npad command line end to end in a tiny configuration."""
import csv
import shutil

import numpy as np
import pytest

from npad.cli import main

SIZE = 96


@pytest.fixture(scope="module")
def model_file(tiny_mvtec, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_fit")
    main(["fit", "cflow", "--data", str(tiny_mvtec), "--size", str(SIZE), "--epochs", "1",
          "--set", "n_blocks=1", "--out", str(out)])
    return out / "model.h5"


def test_fit_saves_a_model_with_a_threshold(model_file):
    from npad.methods import load
    model = load(model_file)
    assert model.threshold is not None and model.config["n_blocks"] == 1


def test_test_prints_metrics_and_writes_pictures(model_file, tiny_mvtec, tmp_path, capsys):
    main(["test", str(model_file), "--data", str(tiny_mvtec), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "image AUROC" in out and "pixel AUROC" in out and "square" in out
    assert (tmp_path / "panels.png").is_file() and (tmp_path / "histogram.png").is_file()


def test_predict_reports_a_corrupt_image_and_scores_the_rest(model_file, tiny_mvtec, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(tiny_mvtec / "test" / "square", images)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)   # a truncated PNG
    out = tmp_path / "pred"
    main(["predict", str(model_file), str(images), "--out", str(out)])
    captured = capsys.readouterr()
    assert "broken.png" in captured.err
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert len(rows) == 4 and all(np.isfinite(float(r["score"])) for r in rows)
    assert all((out / "heatmaps" / f"{i:03d}.png").is_file() and (out / "masks" / f"{i:03d}.png").is_file()
               for i in range(4))


def test_backbones_lists_the_default(capsys):
    main(["backbones"])
    assert "efficientnet_lite0" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["fit", "nosuch", "--data", "."], "unknown method 'nosuch'"),
    (["fit", "cflow", "--data", "/no/such/folder"], "is not a folder"),
    (["test", "/no/model.h5", "--data", "."], "does not exist"),
])
def test_helpful_errors(argv, message):
    with pytest.raises(SystemExit, match=message):
        main(argv)


def test_model_file_from_another_program_is_refused(tmp_path):
    bad = tmp_path / "model.h5"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="cannot load"):
        main(["predict", str(bad), str(tmp_path)])
