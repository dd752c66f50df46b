"""The path every method shares after training: hold-out calibration, the normalised score, the
images predict takes, Result, save/load of hostile checkpoints, repr."""
import warnings

import h5py
import numpy as np
import pytest
from PIL import Image

from npad import methods
from npad.data import MVTecDataset
from npad.io import CheckpointError
from npad.maps import threshold_normalize
from npad.methods.base import CALIB_MADS, AnomalyModel

TINY = {
    "padim": dict(input_size=64, d=20),
    "cflow": dict(quick=True, input_size=64, n_blocks=1, meta_epochs=1),
    "adtr": dict(quick=True, input_size=64, hidden=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                 dim_feedforward=16, epochs=2),
    "favae": dict(quick=True, input_size=32, epochs=1, samples_per_epoch=16, width=0.25, latent=4),
    "vae_attention": dict(quick=True, input_size=64, epochs=1),
    "patchcore": dict(input_size=64, coreset_ratio=0.5),
}


@pytest.fixture(scope="module")
def padim(tiny_mvtec):
    return methods.get("padim")(**TINY["padim"]).fit(MVTecDataset(tiny_mvtec, split="train"), quiet=True)


@pytest.fixture(scope="module")
def test_images(tiny_mvtec):
    ds = MVTecDataset(tiny_mvtec, split="test")
    return np.stack([ds[i]["image"] for i in range(len(ds))]), ds.labels, ds.paths


# ---- calibration ---------------------------------------------------------------------------
def test_fit_keeps_images_out_and_calibrates_on_them(padim, tiny_mvtec):
    train = MVTecDataset(tiny_mvtec, split="train")
    cal = padim.calibration
    assert cal["n_images"] == 5 and "held-out normal" in cal["rule"]      # 10 images: the floor, at most half
    held = np.sort(np.random.default_rng(0).permutation(10)[:5])
    kept = padim._with_transform(train, train=False)
    e = padim._embed(np.stack([kept[i]["image"] for i in range(10) if i not in held]))   # N x d x h x w
    np.testing.assert_allclose(padim.mean[0], e[:, :, 0, 0].mean(0), rtol=1e-4, atol=1e-5)   # trained on the rest
    s = padim.predict([train.paths[i] for i in held]).scores
    np.testing.assert_allclose(np.sort(cal["scores"]), np.sort(s), rtol=1e-5)
    robust = np.median(s) + CALIB_MADS * 1.4826 * np.median(np.abs(s - np.median(s)))
    assert padim.threshold == pytest.approx(max(s.max(), robust), rel=1e-5)
    assert cal["score_min"] == pytest.approx(s.min(), rel=1e-5)


def test_the_threshold_rule_guards_both_tails():
    from npad.methods.base import upper_bound
    bunched = np.array([10.0, 10.5, 11.0, 11.5, 12.0])      # MAD 0.5: median + 4 * 1.4826 * 0.5 = 13.97
    assert upper_bound(bunched) == pytest.approx(11.0 + 4 * 1.4826 * 0.5)
    tailed = np.r_[bunched, 40.0]                            # one far score: the threshold never goes below it
    assert upper_bound(tailed) == 40.0
    assert upper_bound(np.full(4, 3.0)) == 3.0


def test_validation_with_anomalies_gives_f1_max(tiny_mvtec):
    from npad.metrics import f1_max
    val = MVTecDataset(tiny_mvtec, split="test")
    m = methods.get("padim")(**TINY["padim"]).fit(MVTecDataset(tiny_mvtec, split="train"), validation=val, quiet=True)
    s = m.predict(val).scores
    assert m.threshold == pytest.approx(f1_max(val.labels, s)[1]) and "F1-max" in m.calibration["rule"]
    assert "pixel F1-max" in m.calibration["pixel_rule"]


def test_unseen_normal_images_are_rarely_flagged():
    """The point of calibrating on held-out images: about 5% or fewer of unseen normal images flagged."""
    from npad.data import synthetic_mvtec
    root = synthetic_mvtec()
    m = methods.get("padim")(input_size=128).fit(MVTecDataset(root, "gear", "train"), quiet=True)
    test = MVTecDataset(root, "gear", "test")
    res = m.predict(test)
    assert res.labels[test.labels == 0].mean() <= 0.05
    assert res.labels[test.labels == 1].mean() > 0.3


def test_calibration_options_are_checked(tiny_mvtec):
    m = methods.get("padim")(**TINY["padim"])
    with pytest.raises(ValueError, match="calib_fraction"):
        m.fit(MVTecDataset(tiny_mvtec, split="train"), calib_fraction=1.0)
    x = np.random.default_rng(0).random((3, 3, 64, 64)).astype(np.float32)
    with pytest.warns(UserWarning, match="too few to keep some out"):
        m.fit(x, quiet=True)                             # 3 images: calibrated on themselves, with a warning
    assert m.calibration["n_images"] == 3


# ---- the normalised score and the decisions ---------------------------------------------------
def test_normalised_score_is_half_at_the_threshold(padim, test_images):
    x, y, _ = test_images
    res = padim.predict(x)
    n = res.normalized_scores
    t, lo = padim.threshold, padim.calibration["score_min"]
    assert threshold_normalize(np.array([lo, t, 2 * t - lo, 10 * t]), lo, t).tolist() == [0, 0.5, 1, 1]
    assert ((n >= 0.5) == res.labels).all() and (n >= 0).all() and (n <= 1).all()
    assert np.array_equal(np.argsort(n[n < 1], kind="stable"), np.argsort(res.scores[n < 1], kind="stable"))
    assert res.labels.dtype == bool and res.masks.shape == res.maps.shape
    assert ((res.normalized_maps >= 0.5) == res.masks).all()


def test_no_decisions_with_the_papers_set_normalisation(padim, test_images):
    res = padim.predict(test_images[0], normalization="set")
    assert res.labels is None and res.masks is None and res.normalized_scores is None


# ---- every method through the same path ----------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TINY))
def test_every_method_scores_alone_as_in_a_batch_and_round_trips(name, tiny_mvtec, test_images, tmp_path):
    model = methods.get(name)(**TINY[name]).fit(MVTecDataset(tiny_mvtec, split="train"), quiet=True)
    x = test_images[0][:4]
    res = model.predict(x)
    assert res.labels is not None and res.masks is not None and res.normalized_scores is not None
    alone = np.concatenate([model.predict(x[i:i + 1]).scores for i in range(len(x))])
    np.testing.assert_allclose(alone, res.scores, rtol=1e-5, atol=1e-6)
    back = methods.load(model.save(tmp_path / "m.h5"))
    assert back.threshold == model.threshold and back.calibration["rule"] == model.calibration["rule"]
    np.testing.assert_allclose(back.predict(x).normalized_scores, res.normalized_scores, rtol=1e-5, atol=1e-6)
    text = repr(back)
    assert name in text and "fitted" in text and f"{model.threshold:.6g}" in text and "held-out" in text


@pytest.mark.parametrize("name", ["padim", "cflow", "adtr", "patchcore"])
def test_non_square_input_size_end_to_end(name, tiny_mvtec):
    model = methods.get(name)(**{**TINY[name], "input_size": (48, 96)}).fit(MVTecDataset(tiny_mvtec, split="train"),
                                                                             quiet=True)
    res = model.predict(MVTecDataset(tiny_mvtec, split="test"))
    assert res.maps.shape[1:] == (48, 96) and res.labels is not None
    assert "48x96" in repr(model)


@pytest.mark.parametrize("name", ["favae", "vae_attention"])
def test_square_only_methods_say_so(name):
    with pytest.raises(ValueError, match="square"):
        methods.get(name)(**{**TINY[name], "input_size": (64, 128)})


# ---- the images predict takes -------------------------------------------------------------------
def test_paths_folders_pil_and_arrays_give_the_same_scores(padim, tiny_mvtec):
    files = sorted((tiny_mvtec / "test" / "square").glob("*.png"))
    u8 = [np.asarray(Image.open(f).convert("RGB")) for f in files]                  # H x W x 3 uint8
    want = padim.predict([str(f) for f in files])
    assert want.paths == [str(f) for f in files] and want.sizes == [(96, 96)] * 4
    for other in (tiny_mvtec / "test" / "square", [Image.open(f) for f in files], u8, np.stack(u8),
                  np.stack([a.transpose(2, 0, 1) / np.float32(255) for a in u8])):
        np.testing.assert_allclose(padim.predict(other).scores, want.scores, rtol=1e-5)
    np.testing.assert_allclose(padim.predict(u8[2]).scores, want.scores[2:3], rtol=1e-5)   # one image alone


def test_any_size_is_resized_and_mapped_back(padim):
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 255, (46, 113, 3), np.uint8), rng.integers(0, 255, (80, 30, 3), np.uint8)]
    res = padim.predict(photos)
    assert res.maps.shape == (2, 64, 64) and res.sizes == [(46, 113), (80, 30)]
    m, mask = res.at_input_size(0)
    assert m.shape == (46, 113) and mask.shape == (46, 113) and mask.dtype == bool
    assert res.at_input_size(1, normalized=True)[0].max() <= 1


@pytest.mark.parametrize("images,message", [
    (np.full((1, 3, 64, 64), 200.0, np.float32), "must be in \\[0, 1\\], got values up to 200"),
    (np.full((1, 3, 64, 64), np.nan, np.float32), "NaN"),
    (np.full((1, 3, 32, 40), -1.0, np.float32), "down to -1"),
    (np.zeros((64, 64), np.uint8), "H x W x 3"),
    (np.zeros((2, 4, 64, 64), np.float32), "H x W x 3"),
    (np.zeros((64, 64, 3), np.int32), "dtype int32"),
    ([], "no images"),
])
def test_bad_images_are_refused_clearly(padim, images, message):
    with pytest.raises(ValueError, match=message):
        padim.predict(images)


def test_a_dataset_of_0_255_floats_is_refused(padim):
    from npad.data import ArrayDataset
    with pytest.raises(ValueError, match="values up to 255"):
        padim.predict(ArrayDataset(np.full((2, 3, 64, 64), 255.0, np.float32)))


def test_missing_files_and_empty_folders(padim, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.png does not exist"):
        padim.predict(tmp_path / "nothing.png")
    with pytest.raises(ValueError, match="no images in folder"):
        padim.predict(tmp_path)


def test_predict_before_fit_says_so():
    with pytest.raises(RuntimeError, match="not fitted: call fit"):
        methods.get("padim")(**TINY["padim"]).predict(np.zeros((1, 3, 64, 64), np.float32))


def test_one_nan_map_does_not_stop_the_others(padim, test_images, monkeypatch):
    x = test_images[0][:3]
    ok = padim.predict(x)
    maps = type(padim)._maps

    def one_nan(self, stats, reference=None):
        scores, m = maps(self, stats, reference)
        m = m.copy()
        m[1, 3, 3] = np.nan
        return scores, m
    monkeypatch.setattr(type(padim), "_maps", one_nan)
    with pytest.warns(RuntimeWarning, match="1 image\\(s\\) have NaN"):
        res = padim.predict(x)
    assert np.isnan(res.scores[1]) and not res.labels[1]
    np.testing.assert_array_equal(res.scores[[0, 2]], ok.scores[[0, 2]])


# ---- checkpoints ------------------------------------------------------------------------------
def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)
    return path


def _replace(group, key, data=None):
    """Delete (data None) or replace ``group[key]``, keeping npad's list of the group's keys right."""
    import json
    del group[key]
    if data is None:
        group.attrs["npad_keys"] = json.dumps([k for k in json.loads(group.attrs["npad_keys"]) if k != key])
    else:
        group.create_dataset(key, data=np.bytes_(data.encode()) if isinstance(data, str) else data)
        if isinstance(data, str):                        # as npad.io writes text
            group[key].attrs["npad_unicode"] = True


@pytest.mark.parametrize("edit,message", [
    (lambda f: _replace(f["stats"], "threshold", np.nan), "threshold is nan"),
    (lambda f: _replace(f["stats"], "threshold", "high"), "threshold must be a number"),
    (lambda f: _replace(f["state"], "mean"), "state has no entry 'mean'"),
    (lambda f: _replace(f["state"], "channels", "x"), "'channels' is not a numeric array"),
    (lambda f: _replace(f["state"], "inv_cov", np.zeros((3, 3))), "inv_cov \\(3, 3\\) and channels"),
    (lambda f: _replace(f["state"], "channels", np.arange(20) + 900), "channels: indices 900..919 out of range"),
    (lambda f: f.attrs.__setitem__("config", f.attrs["config"].replace('"input_size": 64', '"input_size": "big"')),
     "config: PaDiM: option input_size must be an int"),
    (lambda f: f.attrs.__setitem__("config", f.attrs["config"].replace('"eps": 0.01', '"eps": -1')),
     "config: PaDiM: option eps must be > 0"),
])
def test_hostile_checkpoints_name_the_entry(padim, tmp_path, edit, message):
    path = _edit(padim.save(tmp_path / "m.h5"), edit)
    with pytest.raises(CheckpointError, match=message):
        methods.load(path)


def test_edited_input_size_is_reported_at_predict(padim, tmp_path):
    path = _edit(padim.save(tmp_path / "m.h5"),
                 lambda f: f.attrs.__setitem__("config", f.attrs["config"].replace('"input_size": 64', '"input_size": 96')))
    with pytest.raises(ValueError, match="was the config edited"):
        methods.load(path).predict(np.zeros((1, 3, 96, 96), np.float32))


def test_checkpoint_says_which_npad_and_backbone_and_warns_on_another_backbone(padim, tmp_path):
    path = padim.save(tmp_path / "m.h5")
    with h5py.File(path, "r") as f:
        prov = f["stats"]["provenance"]
        assert prov["npad_version"][()].decode() and len(prov["backbone_sha256"][()].decode()) == 64
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        methods.load(path)                               # the same backbone file: quiet
    _edit(path, lambda f: _replace(f["stats/provenance"], "backbone_sha256", "0" * 64))
    with pytest.warns(UserWarning, match="trained with backbone file .* differ"):
        methods.load(path)


def test_repr_of_an_unfitted_model():
    text = repr(methods.get("cflow")(quick=True))
    assert text.startswith("CFlow(") and "efficientnet_lite0" in text and "not fitted" in text
    assert "no threshold" in text and "256x256" in text


@pytest.mark.parametrize("option,message", [
    (dict(lr=-1.0), "lr must be > 0"), (dict(sigma=-2.0), "sigma must be >= 0"), (dict(eps=float("nan")), "eps"),
    (dict(d="ten"), "d must be an integer"), (dict(d=2.5), "d must be an integer"),
    (dict(input_size=(64, 64, 3)), "input_size must be an int or \\(height, width\\)"),
])
def test_options_are_type_checked(option, message):
    name = "cflow" if "lr" in option else "padim"
    with pytest.raises((TypeError, ValueError), match=message):
        methods.get(name)(**option)


def test_an_unfitted_model_is_not_saved(tmp_path):
    with pytest.raises(ValueError, match="not fitted"):
        methods.get("cflow")(quick=True).save(tmp_path / "m.h5")


def test_the_base_class_has_nothing_to_train():
    with pytest.raises(NotImplementedError):
        AnomalyModel()._fit(None)
