"""npad.data.mvtec and folder datasets on tiny hand-made trees (and BSData when available)."""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from npad.data import (DataLoader, DataWarning, FolderDataset, MVTEC_CATEGORIES, MVTecDataset, PredictionDataset,
                       UnreadableImageError, category_dir, list_categories, load_image, load_mask)
from npad.data import transforms as T


def save(path, arr, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)


def make_category(root, name="bottle", size=(12, 10)):
    """<root>/<name>/{train/good, test/good, test/crack, ground_truth/crack}, mixed formats and modes."""
    rng = np.random.default_rng(0)
    h, w = size
    c = root / name
    rgb = lambda: (rng.random((h, w, 3)) * 255).astype(np.uint8)
    save(c / "train/good/000.png", rgb())
    save(c / "train/good/001.jpg", rgb())
    save(c / "train/good/002.bmp", rgb())
    save(c / "train/good/003.png", (rng.random((h, w)) * 255).astype(np.uint8))  # grey
    save(c / "test/good/000.png", rgb())
    save(c / "test/crack/000.png", rgb())
    save(c / "test/crack/001.jpg", rgb())
    m = np.zeros((h, w), np.uint8)
    m[2:5, 3:6] = 255
    save(c / "ground_truth/crack/000_mask.png", m)
    save(c / "ground_truth/crack/001_mask.png", (m > 0).astype(np.uint8))  # 0/1 mask
    return c


def test_mvtec_train_and_test(tmp_path):
    make_category(tmp_path)
    make_category(tmp_path, "screw")
    assert list_categories(tmp_path) == ["bottle", "screw"]
    tr = MVTecDataset(tmp_path, "bottle", "train")
    assert len(tr) == 4 and (tr.labels == 0).all()
    s = tr[3]  # grey image -> 3 channels
    assert s["image"].shape == (3, 12, 10) and s["image"].dtype == np.float32
    np.testing.assert_array_equal(s["image"][0], s["image"][2])
    assert s["mask"].shape == (1, 12, 10) and s["mask"].max() == 0 and s["label"] == 0
    te = MVTecDataset(tmp_path, "bottle", "test")
    assert te.labels.tolist() == [1, 1, 0] and te.defect_types == ["crack", "crack", "good"]
    for i in (0, 1):
        m = te[i]["mask"]
        assert m.sum() == 9 and set(np.unique(m)) == {0.0, 1.0}
    assert te.has_masks


def test_mvtec_root_is_category(tmp_path):
    c = make_category(tmp_path, "pitting")
    assert list_categories(c) == ["pitting"]
    assert category_dir(c) == c
    assert len(MVTecDataset(c, split="test")) == 3
    assert len(MVTecDataset(tmp_path, split="train")) == 4  # single category found below root


def test_mvtec_unknown_category_lists_found(tmp_path):
    make_category(tmp_path)
    make_category(tmp_path, "screw")
    with pytest.raises(ValueError, match=r"'hazelnut' not found.*\['bottle', 'screw'\]"):
        MVTecDataset(tmp_path, "hazelnut")
    with pytest.raises(ValueError, match="MVTec AD categories are"):
        MVTecDataset(tmp_path, "bottel")
    with pytest.raises(ValueError, match="pass category"):
        MVTecDataset(tmp_path)
    assert len(MVTEC_CATEGORIES) == 15 and "metal_nut" in MVTEC_CATEGORIES


def test_mvtec_missing_mask_names_file(tmp_path):
    c = make_category(tmp_path)
    (c / "ground_truth/crack/001_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"test/crack/001\.jpg"):
        MVTecDataset(tmp_path, "bottle", "test")


def test_mvtec_empty_train_folder(tmp_path):
    (tmp_path / "bottle/train/good").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"train/good contains no images"):
        MVTecDataset(tmp_path, "bottle")


def test_unreadable_images_skipped_or_strict(tmp_path):
    c = make_category(tmp_path, size=(64, 64))
    (c / "train/good/004.png").write_text("not an image")  # bad header
    good = c / "train/good/000.png"
    data = good.read_bytes()
    (c / "train/good/005.png").write_bytes(data[: len(data) // 2])  # truncated: no IEND chunk at the end
    with pytest.warns(DataWarning) as rec:
        ds = MVTecDataset(tmp_path, "bottle")
    skipped = [Path(str(w.message).split()[3].rstrip(":")).name for w in rec if w.category is DataWarning]
    assert skipped == ["004.png", "005.png"]
    assert len(ds) == 4 and len(ds.labels) == 4 and len(ds.skipped) == 2
    # without the check at construction, the loader skips the truncated file when it meets it
    lazy = MVTecDataset(tmp_path, "bottle", verify=None)
    assert len(lazy) == 6
    with pytest.warns(DataWarning) as rec:
        batches = list(DataLoader(lazy, batch_size=2))
    assert sorted(str(w.message).split()[3].rsplit("/", 1)[-1] for w in rec) == ["004.png", "005.png"]
    assert [len(b["path"]) for b in batches] == [2, 2]
    with pytest.raises(UnreadableImageError, match="004.png"):
        MVTecDataset(tmp_path, "bottle", strict=True)
    with pytest.raises(UnreadableImageError, match="005.png"):
        load_image(c / "train/good/005.png")


def test_mask_binarisation(tmp_path):
    m = np.zeros((4, 4), np.uint8)
    m[0, 0], m[1, 1], m[2, 2] = 255, 100, 200
    save(tmp_path / "m.png", m)
    np.testing.assert_array_equal(load_mask(tmp_path / "m.png")[0], (m > 0).astype(np.float32))


def test_folder_dataset(tmp_path):
    rng = np.random.default_rng(0)
    img = lambda: (rng.random((8, 8, 3)) * 255).astype(np.uint8)
    for k in range(10):
        save(tmp_path / f"normal/{k}.png", img())
    for k in range(3):
        save(tmp_path / f"bad/scratch/{k}.png", img())
        save(tmp_path / f"masks/scratch/{k}_mask.png", np.full((8, 8), 255, np.uint8))
    save(tmp_path / "bad/x.png", img())
    save(tmp_path / "masks/x.png", np.full((8, 8), 255, np.uint8))
    tr = FolderDataset(tmp_path / "normal")
    assert len(tr) == 10
    te = FolderDataset(tmp_path / "normal", "test", abnormal_dir=tmp_path / "bad", mask_dir=tmp_path / "masks",
                       normal_split_ratio=0.3)
    tr2 = FolderDataset(tmp_path / "normal", normal_split_ratio=0.3)
    assert len(tr2) == 7 and not set(tr2.paths) & set(te.paths)
    assert sorted(te.defect_types) == ["anomaly"] + ["good"] * 3 + ["scratch"] * 3
    assert te.has_masks and all(te[i]["mask"].min() == 1 for i in np.flatnonzero(te.labels == 1))
    with pytest.warns(DataWarning, match="only image-level"):
        nm = FolderDataset(tmp_path / "normal", "test", abnormal_dir=tmp_path / "bad", normal_split_ratio=0.3)
    assert not nm.has_masks and nm[int(np.flatnonzero(nm.labels == 1)[0])]["has_mask"] is False
    with pytest.warns(DataWarning, match="no abnormal images.*AUROC"):
        FolderDataset(tmp_path / "normal", "test", normal_test_dir=tmp_path / "normal")
    (tmp_path / "masks/x.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"bad/x\.png"):
        FolderDataset(tmp_path / "normal", "test", abnormal_dir=tmp_path / "bad", mask_dir=tmp_path / "masks")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty contains no images"):
        FolderDataset(tmp_path / "empty")


def test_prediction_dataset(tmp_path):
    for k in range(3):
        save(tmp_path / f"p/{k}.png", np.zeros((6, 6, 3), np.uint8))
    (tmp_path / "p/readme.txt").write_text("x")
    ds = PredictionDataset(tmp_path / "p", transform=T.Resize((4, 4)))
    assert len(ds) == 3 and set(ds[0]) == {"image", "path"} and ds[0]["image"].shape == (3, 4, 4)
    assert len(PredictionDataset([tmp_path / "p/1.png"])) == 1
    b = next(iter(DataLoader(ds, batch_size=3)))
    assert b["image"].shape == (3, 3, 4, 4) and len(b["path"]) == 3
    with pytest.raises(FileNotFoundError):
        PredictionDataset(tmp_path / "nothing")


def _bsdata():
    env = os.environ.get("NPAD_SHARED")
    base = Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared"
    p = base / "data" / "bsdata_pitting"
    return p if (p / "train" / "good").is_dir() else None


@pytest.mark.skipif(_bsdata() is None, reason="BSData pitting set not available")
def test_bsdata_pitting_layout():
    root = _bsdata()
    assert list_categories(root) == ["bsdata_pitting"]
    tr = MVTecDataset(root, split="train")
    te = MVTecDataset(root, split="test", transform=T.standard_transform(64, normalize=False))
    assert len(tr) > 100 and (te.labels == 1).sum() > 50 and (te.labels == 0).sum() > 50
    assert set(te.defect_types) == {"good", "pitting"}
    i = int(np.flatnonzero(te.labels == 1)[0])
    s = te[i]
    assert s["image"].shape == (3, 64, 64) and s["mask"].shape == (1, 64, 64) and s["mask"].max() == 1
