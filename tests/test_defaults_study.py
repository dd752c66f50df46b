"""benchmarks/defaults_study.py's split and validation anomalies: validation images come from
train/good only, never from the test split; every anomaly has a non-empty mask that covers all
it changed; seeds reproduce."""
import sys
from pathlib import Path

import numpy
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import defaults_study as ds  # noqa: E402

from npad import metrics  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny MVTec-layout category: 10 train/good, 2 test/good, 2 test/dent with masks (24 x 40 px)."""
    root = tmp_path_factory.mktemp("mvtec") / "part"
    rng = numpy.random.default_rng(0)
    for sub, n in (("train/good", 10), ("test/good", 2), ("test/dent", 2), ("ground_truth/dent", 0)):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=numpy.uint8)).save(root / sub / f"{i:03d}.png")
    for i in range(2):
        Image.fromarray(numpy.full((24, 40), 255, numpy.uint8)).save(root / "ground_truth/dent" / f"{i:03d}_mask.png")
    return root


def test_validation_comes_from_train_good_only(folder):
    fit, val = ds.split(folder, val_fraction=0.2, seed=3, per_image=2)
    train = sorted(str(p) for p in (folder / "train/good").iterdir())
    fit_paths, val_paths = set(fit.paths), set(val.paths)
    assert len(fit) == 8 and (val.labels == 0).sum() == 2 and (val.labels == 1).sum() == 4
    assert fit_paths.isdisjoint(val_paths) and sorted(fit_paths | val_paths) == train
    assert not any("test" in Path(p).relative_to(folder).parts for p in fit_paths | val_paths)
    # each anomaly is a copy of one of the validation normals (its group)
    normals = [val.paths[i] for i in range(len(val)) if val.labels[i] == 0]
    assert all(val.paths[i] == normals[g] for i, g in enumerate(val.groups))
    assert ds.aspect_size(fit) == (192, 320)                                 # 24 x 40 px at about 256^2 px


def test_anomalies_have_masks_covering_every_change(folder):
    _, val = ds.split(folder, seed=1, per_image=3)
    normal = {val.paths[i]: val[i]["image"] for i in range(len(val)) if val.labels[i] == 0}
    for i in range(len(val)):
        item = val[i]
        mask = item["mask"][0] > 0.5                                          # H x W
        if val.labels[i] == 0:
            assert not mask.any()
            continue
        assert item["label"] == 1 and item["has_mask"] and mask.any()
        changed = (item["image"] != normal[val.paths[i]]).any(0)           # H x W
        assert not (changed & ~mask).any()                                   # nothing changed outside the mask
        assert changed.any()


def test_seeds_reproduce_and_differ(folder):
    a_fit, a = ds.split(folder, seed=5)
    b_fit, b = ds.split(folder, seed=5)
    assert a_fit.paths == b_fit.paths and a.paths == b.paths
    for i in range(len(a)):
        numpy.testing.assert_array_equal(a[i]["image"], b[i]["image"])
        numpy.testing.assert_array_equal(a[i]["mask"], b[i]["mask"])
    c_fit, c = ds.split(folder, seed=6)
    assert c.paths != a.paths or any((c[i]["image"] != a[i]["image"]).any() for i in range(len(a)))


def test_refuses_bad_split(folder):
    with pytest.raises(ValueError, match="val_fraction"):
        ds.split(folder, val_fraction=1.0)
    with pytest.raises(ValueError, match="need >= 2"):
        ds.split(folder, val_fraction=0.05)
    with pytest.raises(ValueError, match="per_image"):
        ds.split(folder, per_image=0)


def test_pairwise_mean_is_the_auroc():
    rng = numpy.random.default_rng(0)
    y = numpy.r_[numpy.zeros(7, int), numpy.ones(5, int)]
    s = numpy.round(rng.standard_normal(12), 1)                              # ties included
    assert ds.pairwise(y, s).mean() == pytest.approx(metrics.image_auroc(y, s))
    assert ds.bootstrap_delta([ds.pairwise(y, s)], [ds.pairwise(y, s)], draws=20) == 0.0
