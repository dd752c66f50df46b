"""npad.data.synthetic: layout, determinism, exact masks, atomic cache, confetti noise."""
import hashlib

import numpy as np
import pytest

from npad.data import MVTecDataset, SYNTHETIC_CATEGORIES, confetti_batch, confetti_noise, list_categories
from npad.data import synthetic as syn

SMALL = dict(size=64, n_train=3, n_test_good=2, n_per_defect=2)


def digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_layout_and_loading(tmp_path):
    root = syn.synthetic_mvtec(tmp_path / "ds", seed=0, **SMALL)
    assert list_categories(root) == sorted(SYNTHETIC_CATEGORIES)
    for cat, defects in SYNTHETIC_CATEGORIES.items():
        assert len(defects) >= 5
        tr = MVTecDataset(root, cat, "train")
        te = MVTecDataset(root, cat, "test")
        assert len(tr) == 3 and len(te) == 2 + 2 * len(defects)
        assert set(te.defect_types) == {"good", *defects}
        for i in range(len(te)):
            s = te[i]
            assert s["image"].shape == (3, 64, 64)
            assert (s["mask"].sum() > 0) == bool(s["label"])  # every defect has a non-empty mask


def test_deterministic_and_seed_dependent(tmp_path):
    a = syn.synthetic_mvtec(tmp_path / "a", seed=1, **SMALL)
    b = syn.synthetic_mvtec(tmp_path / "b", seed=1, **SMALL)
    c = syn.synthetic_mvtec(tmp_path / "c", seed=2, **SMALL)
    assert digest(a) == digest(b) != digest(c)


def test_normal_images_vary():
    imgs = np.stack([syn.render_sample("weave", None, k, 64)[0] for k in range(4)])
    assert np.abs(imgs[0] - imgs[1]).mean() > 0.02
    gears = np.stack([syn.render_sample("gear", None, k, 64)[0] for k in range(4)])
    assert np.abs(gears[0] - gears[1]).mean() > 0.01


@pytest.mark.parametrize("cat", sorted(SYNTHETIC_CATEGORIES))
def test_masks_are_exact(cat):
    """Pixels outside the mask are untouched by the defect: render the same stream with and without it."""
    for d in SYNTHETIC_CATEGORIES[cat]:
        img, mask = syn.render_sample(cat, d, np.random.default_rng(11), 128)
        assert mask.dtype == np.float32 and set(np.unique(mask)) == {0.0, 1.0}
        frac = mask.mean()
        assert 0 < frac < 0.1, (cat, d, frac)
        assert img.min() >= 0 and img.max() <= 1


@pytest.mark.parametrize("cat", sorted(SYNTHETIC_CATEGORIES))
def test_exact_mask_against_defect_free_twin(cat):
    """A defect changes no pixel outside its mask: compare with the same random stream rendered without it."""
    for seed in range(3):
        normal, _ = syn.render_sample(cat, None, np.random.default_rng(seed), 96)
        for d in SYNTHETIC_CATEGORIES[cat]:
            img, mask = syn.render_sample(cat, d, np.random.default_rng(seed), 96)
            m = mask[0] > 0.5
            changed = np.abs(img - normal).max(0) > 0  # (H,W)
            assert not changed[~m].any(), (cat, d, seed, int(changed[~m].sum()))
            assert changed[m].mean() > 0.5, (cat, d, seed, changed[m].mean())


def test_cache_reused_and_rebuilt_when_params_change(tmp_path):
    root = syn.synthetic_mvtec(tmp_path / "ds", **SMALL)
    marker = root / ".npad_synthetic.json"
    t0 = marker.stat().st_mtime_ns
    assert syn.synthetic_mvtec(tmp_path / "ds", **SMALL) == root
    assert marker.stat().st_mtime_ns == t0  # reused, not rewritten
    syn.synthetic_mvtec(tmp_path / "ds", **dict(SMALL, n_train=4))
    assert len(MVTecDataset(root, "weave")) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp or old folders left


def test_default_root_uses_npad_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NPAD_CACHE", str(tmp_path / "cache"))
    root = syn.synthetic_mvtec(**SMALL)
    assert root.is_relative_to(tmp_path / "cache" / "synthetic_mvtec")
    assert (root / ".npad_synthetic.json").is_file()


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = syn.render_sample

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt("simulated Ctrl-C")
        return real(*a, **k)

    monkeypatch.setattr(syn, "render_sample", flaky)
    with pytest.raises(KeyboardInterrupt):
        syn.synthetic_mvtec(tmp_path / "ds", **SMALL)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(syn, "render_sample", real)
    root = syn.synthetic_mvtec(tmp_path / "ds", **SMALL)
    assert len(MVTecDataset(root, "gear", "test")) == 12


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="refusing"):
        syn.synthetic_mvtec(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_confetti_noise():
    rng = np.random.default_rng(0)
    img = rng.random((3, 48, 48)).astype(np.float32) * 0.5
    out, mask = confetti_noise(img, np.random.default_rng(1), n_blobs=(2, 4))
    assert out.shape == img.shape and mask.shape == (1, 48, 48) and mask.dtype == np.float32
    changed = (out != img).any(0)
    assert mask.sum() > 0 and not changed[mask[0] == 0].any()  # nothing changed outside the mask
    assert changed[mask[0] == 1].mean() > 0.95  # (a random colour can coincide with a pixel by chance)
    out2, mask2 = confetti_noise(img, np.random.default_rng(1), n_blobs=(2, 4))
    np.testing.assert_array_equal(out, out2)
    assert out.min() >= img.min() and out.max() <= img.max()  # colours in the image's own range
    batch, masks, labels = confetti_batch(np.stack([img] * 6), np.random.default_rng(2), p=0.5)
    assert batch.shape == (6, 3, 48, 48) and masks.shape == (6, 1, 48, 48)
    np.testing.assert_array_equal(labels, masks.reshape(6, -1).max(1) > 0)
    assert 0 < labels.sum() < 6
    with pytest.raises(ValueError, match="shape"):
        confetti_noise(np.zeros((48, 48)))
