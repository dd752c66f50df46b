"""CFLOW-AD end to end on a tiny dataset made here: it learns, localises, and saves exactly."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npad.data import MVTecDataset
from npad.methods.cflow import CFlow

ROOT = Path(__file__).resolve().parents[2]
SIZE = 96   # the tiny_mvtec fixture's image size (tests/conftest.py)


@pytest.fixture(scope="module")
def fitted(tiny_mvtec):
    model = CFlow(quick=True, input_size=SIZE, n_blocks=2, meta_epochs=2, fiber_batch=256)
    model.fit(MVTecDataset(tiny_mvtec, split="train"), quiet=True)
    return model


def test_learns_and_localises(fitted, tiny_mvtec):
    test = MVTecDataset(tiny_mvtec, split="test")
    loss = fitted.history["loss"]
    assert loss[-1] < loss[0]
    ev = fitted.evaluate(test)
    res = ev["result"]
    labels = test.labels
    assert res.scores[labels == 1].min() > res.scores[labels == 0].max()
    assert ev["pixel_auroc"] > 0.9
    masks = np.stack([test[i]["mask"][0] for i in range(len(test))])
    for i in np.flatnonzero(labels == 1):
        y, x = np.unravel_index(res.maps[i].argmax(), res.maps[i].shape)
        assert masks[i, max(y - 4, 0):y + 5, max(x - 4, 0):x + 5].any(), "map peak is not at the defect"


def test_save_load_reproduces_scores(fitted, tiny_mvtec, tmp_path):
    test = MVTecDataset(tiny_mvtec, split="test")
    before = fitted.predict(test, normalization="train")
    fitted.threshold = 0.5
    path = fitted.save(tmp_path / "cflow.h5")
    loaded = CFlow.load(path)
    after = loaded.predict(test, normalization="train")
    np.testing.assert_array_equal(before.scores, after.scores)
    np.testing.assert_array_equal(before.maps, after.maps)
    assert loaded.threshold == 0.5 and after.labels is not None
    with pytest.raises(ValueError, match="not 'adtr'"):
        from npad.methods.adtr import ADTR
        ADTR.load(path)


def test_batch_normalisation_differs_from_set(fitted, tiny_mvtec):
    test = MVTecDataset(tiny_mvtec, split="test")
    a = fitted.predict(test, normalization="set")
    b = fitted.predict(test, batch_size=2, normalization="batch")
    assert a.maps.shape == b.maps.shape and not np.allclose(a.maps, b.maps)
    scores, maps = a                                   # unpacks as (scores, maps)
    assert scores.shape == (len(test),) and maps.shape == (len(test), SIZE, SIZE)


def test_unknown_option_is_named():
    with pytest.raises(TypeError, match="unknown option.*'epochs'"):
        CFlow(epochs=3)


def test_example_script_runs(tiny_mvtec, tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "cflow_mvtec.py"), "--data", str(tiny_mvtec),
                        "--size", str(SIZE), "--epochs", "1", "--blocks", "1", "--panels", "4", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "image AUROC" in r.stdout and "mean" in r.stdout
    for f in ["results.md", "results.csv", "results.json", "stripes/panels.png", "stripes/histogram.png",
              "stripes/cflow.h5"]:
        assert (out / f).is_file(), f
    record = json.loads((out / "results.json").read_text())          # what benchmarks/results.py reads
    assert record["command"].startswith("python ") and "--epochs 1" in record["command"]
    assert record["budget"] == "quick" and record["runs"][0]["config"]["meta_epochs"] == 1
    assert [r["category"] for r in record["runs"][0]["rows"]] == ["stripes", "mean"]
