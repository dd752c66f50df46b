"""The ADTR / ADTR+ method (npad.methods.adtr): a tiny model on tiny synthetic images learns to
reconstruct normal features and scores a pasted defect higher; ADTR+ push-pull fine-tuning lowers
its losses and separates anomalous positions; ablations; save/load; options.

The backbone is a small fixed stand-in (two taps at strides 4 and 16) so the tests need no weights
and stay fast; one test checks the real EfficientNet-Lite0 taps when its weights are there."""
import numpy
import pytest
from PIL import Image

from npad import functional as F
from npad.data import MVTecDataset
from npad.methods import adtr as adtr_module
from npad.methods.adtr import ADTR
from npad.methods.adtr_model import pseudo_huber_map
from npad.nn.module import Module
from npad.tensor import Tensor

SIZE = 64                     # 4 x 4 feature grid


class StandInExtractor(Module):
    """FeatureExtractor's interface: a list of B x C_i x H/s_i x W/s_i Tensors from B x 3 x H x W images.
    Tap 0: a fixed random 4x4 stride-4 convolution + tanh (6 channels); tap 1: a 16x16 average of the
    image and of tap 0's square (9 channels)."""

    def __init__(self, backbone="stand-in", taps="adtr", onnx_path=None):
        super().__init__()
        rng = numpy.random.default_rng(123)
        self.w = rng.standard_normal((6, 3, 4, 4)).astype(numpy.float32) / 4
        self.channels, self.strides = [6, 9], [4, 16]

    def forward(self, x):
        x = x if isinstance(x, Tensor) else Tensor(x)
        a = F.tanh(F.conv2d(x - 0.5, Tensor(self.w), stride=4))
        b = F.cat([F.avg_pool2d(x, 16), F.avg_pool2d(a * a, 4)], dim=1)
        return [a, b]


@pytest.fixture
def standin(monkeypatch):
    monkeypatch.setattr(adtr_module, "FeatureExtractor", StandInExtractor)


def normal_image(rng):
    """Stripes with a random phase, colour jitter and noise, 3 x SIZE x SIZE in [0, 1]."""
    yy, xx = numpy.mgrid[0:SIZE, 0:SIZE] / SIZE
    img = 0.5 + 0.25 * numpy.sin(2 * numpy.pi * (4 * xx + rng.uniform())) * numpy.ones((3, 1, 1))
    img = img * rng.uniform(0.9, 1.1, (3, 1, 1)) + rng.normal(0, 0.02, (3, SIZE, SIZE))
    return numpy.clip(img, 0, 1).astype(numpy.float32)


def with_defect(img, rng):
    """A bright magenta square pasted at a random cell-aligned place; returns (image, mask)."""
    out, mask = img.copy(), numpy.zeros((SIZE, SIZE), numpy.float32)
    y, x = rng.integers(0, SIZE - 16, 2)
    out[:, y:y + 16, x:x + 16] = numpy.array([1.0, 0.0, 1.0])[:, None, None]
    mask[y:y + 16, x:x + 16] = 1
    return out, mask


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = numpy.asarray(arr)
    a = a.transpose(1, 2, 0) if a.ndim == 3 else a
    Image.fromarray((numpy.clip(a, 0, 1) * 255).round().astype(numpy.uint8)).save(path)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """An MVTec-layout category: 16 normal training images; test: 4 normal, 4 with a pasted square."""
    root = tmp_path_factory.mktemp("adtr_toy") / "stripes"
    rng = numpy.random.default_rng(0)
    for i in range(16):
        _png(root / "train" / "good" / f"{i:03d}.png", normal_image(rng))
    for i in range(4):
        _png(root / "test" / "good" / f"{i:03d}.png", normal_image(rng))
        img, mask = with_defect(normal_image(rng), rng)
        _png(root / "test" / "square" / f"{i:03d}.png", img)
        _png(root / "ground_truth" / "square" / f"{i:03d}_mask.png", mask)
    return root


TINY = dict(input_size=SIZE, hidden=32, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
            dim_feedforward=64, dropout=0.0, lr=3e-3, epochs=40, lr_step=30, batch_size=8, pool=8)


@pytest.fixture(scope="module")
def fitted(toy):
    """One tiny normal-only model shared by the scoring and persistence tests."""
    mp = pytest.MonkeyPatch()
    mp.setattr(adtr_module, "FeatureExtractor", StandInExtractor)
    try:
        model = ADTR(**TINY).fit(MVTecDataset(toy, None, "train"), quiet=True)
    finally:
        mp.undo()
    return model


def test_learns_normal_features_and_scores_defect_higher(fitted, toy):
    loss = fitted.history["loss"]
    assert loss[-1] < 0.2 * loss[0]
    test = MVTecDataset(toy, None, "test")
    res = fitted.predict(test)
    assert res.maps.shape == (8, SIZE, SIZE) and res.scores.shape == (8,)
    bad = test.labels == 1
    assert res.scores[bad].min() > res.scores[~bad].max()
    ev = fitted.evaluate(test)
    assert ev["image_auroc"] == 1.0 and ev["pixel_auroc"] > 0.9
    # the score is the maximum of the average-pooled map, the map the upsampled feature distance
    grid = fitted._score(numpy.stack([test[0]["image"]]))["grid"]
    assert grid.shape == (1, 4, 4)
    numpy.testing.assert_allclose(res.maps[0].max(), grid.max(), rtol=1e-5)


def test_normalization_modes_agree_and_reference(fitted, toy):
    """ADTR's maps are absolute: set, batch and train normalisation give the same scores."""
    test = MVTecDataset(toy, None, "test")
    a = fitted.predict(test).scores
    numpy.testing.assert_allclose(fitted.predict(test, normalization="batch", batch_size=3).scores, a, rtol=1e-6)
    numpy.testing.assert_allclose(fitted.predict(test, normalization="train").scores, a, rtol=1e-6)
    assert fitted.stats["train_score_max"] > 0


def test_save_load_reproduces_scores_exactly(fitted, toy, tmp_path, standin):
    test = MVTecDataset(toy, None, "test")
    fitted.threshold = 0.5
    path = fitted.save(tmp_path / "adtr.h5")
    back = ADTR.load(path)
    assert back.config == fitted.config and back.threshold == 0.5 and back.stats == fitted.stats
    a, b = fitted.predict(test), back.predict(test)
    numpy.testing.assert_array_equal(a.scores, b.scores)
    numpy.testing.assert_array_equal(a.maps, b.maps)
    assert fitted.model_megabytes() > 0


def test_push_pull_fine_tuning(fitted, toy, standin):
    """ADTR+ from the normal-only model: confetti (pixel loss, Eq. 7) and a labelled set (image loss,
    Eq. 9) both lower their loss; anomalous positions end up further from their reconstruction."""
    train, test = MVTecDataset(toy, None, "train"), MVTecDataset(toy, None, "test")
    model = ADTR(**{**TINY, "plus_lr": 3e-3})
    model.load_state_dict(fitted.state_dict())
    model._train_ds = train
    model.fit_plus(epochs=12, quiet=True)                             # confetti on the training images
    assert model.history["plus_kind"] == "pixel"
    pl = model.history["plus_loss"]
    assert numpy.mean(pl[-3:]) < numpy.mean(pl[:3])

    labelled = ADTR(**{**TINY, "plus_lr": 3e-3, "plus_loss": "image"})
    labelled.load_state_dict(fitted.state_dict())
    items = [test[i] for i in range(len(test))]
    x = numpy.stack([it["image"] for it in items])
    y = test.labels.astype(bool)

    def phi_gap(m):
        f = m.features(x)
        phi = pseudo_huber_map(f, m.net(f)).numpy()
        q = numpy.sort(phi.reshape(len(x), -1), axis=1)[:, -4:].mean(1)
        return q[y].mean() - q[~y].mean()

    before = phi_gap(labelled)
    labelled.fit_plus(test, epochs=15, quiet=True)                    # image labels of a labelled set
    assert labelled.history["plus_kind"] == "image"
    il = labelled.history["plus_loss"]
    assert numpy.mean(il[-3:]) < numpy.mean(il[:3])
    assert phi_gap(labelled) > before
    with pytest.raises(ValueError, match="needs masks"):
        _pixel_without_masks(fitted, train)


def _pixel_without_masks(fitted, train):
    class NoMasks:                       # a labelled dataset that has no masks
        transform, labels, has_masks = None, train.labels, False
    m = ADTR(**TINY, plus_loss="pixel")
    m.load_state_dict(fitted.state_dict())
    m.fit_plus(NoMasks(), epochs=1, quiet=True)


def test_plus_option_runs_after_normal_training(toy, standin):
    model = ADTR(**{**TINY, "epochs": 3, "plus": True, "plus_epochs": 2}).fit(MVTecDataset(toy, None, "train"),
                                                                            quiet=True)
    assert len(model.history["loss"]) == 3 and len(model.history["plus_loss"]) == 2
    assert model.stats["train_score_max"] > 0


def test_grid_masks_area_fraction(standin):
    model = ADTR(**TINY)
    m = numpy.zeros((1, 1, SIZE, SIZE), numpy.float32)
    m[0, 0, :16, :16] = 1                  # one whole cell
    m[0, 0, 16:20, 16:32] = 1              # a quarter of the next diagonal cell
    m[0, 0, 32:34, 32:48] = 1              # an eighth of the next
    g = model.grid_masks(m)
    assert g.shape == (1, 4, 4) and g.sum() == 2 and g[0, 0, 0] == 1 and g[0, 1, 1] == 1


@pytest.mark.parametrize("ablation", ["no_attention", "no_query", "pixels", "last_layer"])
def test_ablations(ablation, toy, standin):
    model = ADTR(**{**TINY, "epochs": 2, "ablation": ablation}).fit(MVTecDataset(toy, None, "train"), quiet=True)
    c = model.net.in_channels
    assert c == {"pixels": 3, "last_layer": 9}.get(ablation, 15)
    assert (model.encoder is None) == (ablation == "pixels")
    assert model.net.use_attention == (ablation != "no_attention")
    assert model.net.use_query_embedding == (ablation != "no_query")
    res = model.predict(numpy.stack([normal_image(numpy.random.default_rng(5))] * 2))
    assert res.maps.shape == (2, SIZE, SIZE) and numpy.isfinite(res.scores).all()


def test_augmented_training_recomputes_features(toy, standin):
    model = ADTR(**{**TINY, "epochs": 2, "hflip": True}).fit(MVTecDataset(toy, None, "train"), quiet=True)
    assert model.augmenting and len(model.history["loss"]) == 2


def test_options_are_checked(standin):
    with pytest.raises(TypeError, match="unknown option"):
        ADTR(hiden=32)
    with pytest.raises(ValueError, match="ablation"):
        ADTR(**TINY, ablation="no_decoder")
    with pytest.raises(ValueError, match="multiple of 16"):
        ADTR(**{**TINY, "input_size": 72})
    with pytest.raises(ValueError, match="plus_loss"):
        ADTR(**TINY, plus_loss="both")
    with pytest.raises(RuntimeError, match="normal-only"):
        ADTR(**TINY).fit_plus()
    quick = ADTR(quick=True, hidden=64, input_size=SIZE)
    assert quick.config["hidden"] == 64 and quick.config["epochs"] < ADTR.defaults["epochs"]
    assert ADTR.defaults["lr"] == 1e-4 and ADTR.defaults["weight_decay"] == 1e-4
    assert ADTR.defaults["alpha"] == 0.003 and ADTR.defaults["topk"] == 20


def test_real_backbone_features():
    """The default Lite0 taps, each resized to the stride-16 grid and concatenated (512 channels)."""
    try:
        model = ADTR(input_size=SIZE, hidden=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                     dim_feedforward=16)
    except (FileNotFoundError, ImportError) as e:
        pytest.skip(f"EfficientNet-Lite0 weights not available: {e}")
    assert model.encoder.strides == [2, 4, 8, 16, 32]
    f = model.features(numpy.random.default_rng(0).random((2, 3, SIZE, SIZE)).astype(numpy.float32))
    assert f.shape == (2, sum(model.encoder.channels), 4, 4) == (2, 512, 4, 4)
    assert not f.requires_grad
    last = ADTR(input_size=SIZE, hidden=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                dim_feedforward=16, ablation="last_layer")
    assert last.net.in_channels == 320


def test_standardized_features_survive_save_load(toy, tmp_path, standin):
    """standardize=True: f is z-scored per channel with the training-set statistics, which are part
    of the saved state; resize="area" averages the finer taps over each grid cell."""
    train, test = MVTecDataset(toy, None, "train"), MVTecDataset(toy, None, "test")
    model = ADTR(**{**TINY, "epochs": 3, "standardize": True, "resize": "area"}).fit(train, validation=test,
                                                                                    quiet=True)
    x = numpy.stack([train[i]["image"] for i in range(len(train))])
    f = model.features(x).numpy()
    numpy.testing.assert_allclose(f.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    numpy.testing.assert_allclose(f.std(axis=(0, 2, 3)), 1, atol=1e-3)
    raw = StandInExtractor()(x)
    numpy.testing.assert_allclose(model._raw_features(Tensor(x)).numpy()[:, :6],
                                  raw[0].numpy().reshape(16, 6, 4, 4, 4, 4).mean(axis=(3, 5)), rtol=1e-5, atol=1e-6)
    back = ADTR.load(model.save(tmp_path / "std.h5"))
    numpy.testing.assert_array_equal(model.predict(test).scores, back.predict(test).scores)
    with pytest.raises(ValueError, match="resize"):
        ADTR(**TINY, resize="nearest")
