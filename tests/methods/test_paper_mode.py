"""Paper mode (``paper=True``): each method's configuration equals its paper's numbers (each test cites the
sections), the network it builds is the paper's, and it trains one step on tiny inputs.

No paper backbone is available offline (Wide-ResNet-50-2, EfficientNet-B4, VGG-16, ResNet-18 weights), so a
small stand-in extractor with the registry's strides takes their place, and the weights check is recorded
instead of run (npad.backbones.require_weights has its own tests in tests/test_export_weights.py)."""
import math

import numpy
import pytest

import npad
from npad import backbones
from npad import functional as F
from npad.methods import methods_with_paper_mode
from npad.methods.base import AnomalyModel
from npad.methods.adtr import ADTR
from npad.methods.cflow import MVTEC_INPUT_SIZES, CFlow, authors_lr_factor
from npad.methods.favae import FAVAE
from npad.methods.favae_model import APPENDIX_D_WIDTHS, ConvVAE
from npad.methods.padim import PaDiM
from npad.methods.vae_attention import MIRRORED, TrunkVAE, VAEAttention
from npad.nn import BatchNorm2d, Conv2d, ConvTranspose2d, LeakyReLU, Module
from npad.tensor import Tensor


class StandIn(Module):
    """FeatureExtractor's interface for any registered backbone: per tap of the requested set, the image
    average-pooled by the tap's registry stride and projected by a fixed 1x1 map to a few channels."""

    def __init__(self, backbone="efficientnet_lite0", taps="default", onnx_path=None, normalize=True, frozen=True):
        super().__init__()
        spec = backbones.get_backbone(backbone)
        names = spec.tap_names(taps) if isinstance(taps, str) else list(taps)
        self.backbone, self.taps = backbone, names
        self.strides = [spec.strides[t] for t in names]
        self.channels = [4 + 2 * i for i in range(len(names))]
        rng = numpy.random.default_rng(7)
        self.w = [rng.standard_normal((c, 3, 1, 1)).astype(numpy.float32) for c in self.channels]

    @property
    def model(self):                     # the imported network (OnnxTrunk unfreezes it); here no parameters
        return self

    def forward(self, x):
        x = x if isinstance(x, Tensor) else Tensor(numpy.asarray(x, numpy.float32))
        return [F.tanh(F.conv2d(F.avg_pool2d(x, s), Tensor(w))) for s, w in zip(self.strides, self.w)]


@pytest.fixture
def standin(monkeypatch):
    """Stand-in backbones for every method; the paper-weights checks are recorded in the returned list."""
    import npad.features
    from npad.methods import adtr, cflow
    for mod in (npad.features, cflow, adtr):
        monkeypatch.setattr(mod, "FeatureExtractor", StandIn)
    checked = []
    monkeypatch.setattr(backbones, "require_weights", lambda *a, **k: checked.append((a[0], a[1])))
    return checked


def images(n, size, seed=0):
    return numpy.random.default_rng(seed).random((n, 3, size, size)).astype(numpy.float32)


def test_budgets_are_exclusive_and_explicit_options_win(standin):
    with pytest.raises(ValueError, match="two budgets"):
        CFlow(quick=True, paper=True)
    with pytest.raises(NotImplementedError, match="PaDiM has no paper mode"):
        PaDiM(paper=True)
    assert CFlow(paper=True, lr=1e-3, input_size=64).config["lr"] == 1e-3
    assert set(methods_with_paper_mode()) == {"cflow", "adtr", "favae", "vae_attention"}
    assert not PaDiM.has_paper_mode() and AnomalyModel.has_paper_mode() is False


def test_cflow_paper_config(standin):
    """CFLOW-AD (Gudovskiy et al., WACV 2022): Sec. 4.2 (C_k = 128), Sec. 5.1 (Adam 2e-4, batch 32, +-5 degree
    rotations), Sec. 5.3 (WRN-50, 8 coupling layers, 3 pooling layers), Sec. 5.2-5.3 with Tables 2-3 (the
    per-class input size); the authors' code for the schedule (25 x 8, warm-up 2, eta_min = lr 1e-3), the
    fiber batch (256), the taps (layer2..4), the black rotation fill and FrEIA's unscaled soft clamp."""
    m = CFlow(paper=True)
    c = m.config
    assert standin == [("wide_resnet50_2", "torchvision:IMAGENET1K_V1")]
    assert (c["backbone"], m.encoder.taps) == ("wide_resnet50_2", ["layer2", "layer3", "layer4"])
    assert m.encoder.strides == [8, 16, 32]                   # Sec. 5.2: "layer 1 ... 32 x 32" at 256 px
    assert (c["n_blocks"], c["cond_channels"], c["clamp"], c["soft_clamp"]) == (8, 128, 1.9, "unscaled")
    assert (c["lr"], c["batch_size"], c["fiber_batch"], c["rotation"], c["rotation_fill"]) == (2e-4, 32, 256, 5.0,
                                                                                                 "black")
    assert (c["meta_epochs"], c["sub_epochs"], c["warmup_epochs"], c["schedule"]) == (25, 8, 2, "authors")
    assert c["standardize"] is False and c["input_size"] == "auto"
    assert MVTEC_INPUT_SIZES == {**dict.fromkeys(["bottle", "carpet", "grid", "hazelnut", "leather", "screw", "tile",
                                                  "toothbrush", "wood", "zipper"], 512),
                                 **dict.fromkeys(["cable", "capsule", "metal_nut", "pill"], 256), "transistor": 128}
    assert all(len(d) == 8 for d in m.decoders)


def test_cflow_authors_schedule():
    """The authors' code: per meta-epoch e, lr_e = eta + (lr - eta)(1 + cos(pi e / 25)) / 2, eta = lr 0.1^3;
    in the first 2 meta-epochs the lr rises per batch from lr / 10 to lr_2 (main.py, utils.py)."""
    per_meta, lr = 7, 2e-4                                  # 7 image batches x sub-epochs per meta-epoch
    eta = lr * 0.1 ** 3
    cos = [eta + (lr - eta) * (1 + math.cos(math.pi * e / 25)) / 2 for e in range(26)]
    warm = [lr / 10 + k / (2 * per_meta) * (cos[2] - lr / 10) for k in range(2 * per_meta)]
    want = warm + [cos[e] for e in range(2, 25) for _ in range(per_meta)]
    got = [lr * authors_lr_factor(k, per_meta, 25, 2) for k in range(25 * per_meta)]
    numpy.testing.assert_allclose(got, want, rtol=1e-12)


class Named:
    """An array dataset with a category name."""

    def __init__(self, x, category):
        self.images, self.category = x, category
        self.transform = None

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.get(i)

    def get(self, i, rng=None):
        image, _ = self.transform(self.images[i], None, rng) if self.transform else (self.images[i], None)
        return {"image": image, "label": 0}


def test_cflow_paper_trains_at_the_class_size_and_uflow(standin):
    """Paper mode picks the class's size at fit (transistor: 128 px, Sec. 5.2) and runs the authors' schedule;
    cond_channels=0 is Table 2's UFLOW (unconditional flows), which trains and scores too."""
    x = images(4, 160)
    for cond in (128, 0):
        m = CFlow(paper=True, meta_epochs=1, sub_epochs=1, batch_size=2, cond_channels=cond)
        m.fit(Named(x, "transistor"), quiet=True)
        assert m.config["input_size"] == 128 and len(m.history["loss"]) == 1
        assert numpy.isfinite(m.history["loss"]).all()
        assert m.history["lr"][0] == pytest.approx(2e-4 * authors_lr_factor(2, 2, 1, 2))    # after 2 image batches
        scores, maps = m.predict(x[:2])
        assert maps.shape == (2, 128, 128) and numpy.isfinite(scores).all()
    with pytest.warns(UserWarning, match="no MVTec AD category"):
        m = CFlow(paper=True, meta_epochs=1, sub_epochs=1, batch_size=2).fit(Named(x, "mine"), quiet=True)
    assert m.config["input_size"] == 256


def test_adtr_paper_config(standin):
    """ADTR (You et al.): Sec. 4.2 (256 px, 16 x 16 grid, 4 + 4 layers, 256 channels, AdamW wd 1e-4, batch 16,
    500 epochs, lr 1e-4 x 0.1 after 400; ADTR+: L_px, alpha 0.003, 300 epochs, 1e-4 then 1e-5 after 200);
    App. A (EfficientNet-B4 from lukemelas's efficientnet-b4-6ed6700e.pth, layer1..5 = 24, 32, 56, 160, 448
    channels, 8 heads, FFN 1024); Sec. 4.3 (k = 20)."""
    m = ADTR(paper=True)
    c = m.config
    assert standin == [("efficientnet_b4_lukemelas", "lukemelas:efficientnet-b4-6ed6700e")]
    spec = backbones.get_backbone(c["backbone"])
    assert spec.tap_channels(c["taps"]) == [24, 32, 56, 160, 448] and spec.tap_strides(c["taps"]) == [2, 4, 8, 16, 32]
    assert (c["input_size"], m.grid) == (256, (16, 16))
    assert (c["hidden"], c["num_heads"], c["num_encoder_layers"], c["num_decoder_layers"], c["dim_feedforward"]) \
        == (256, 8, 4, 4, 1024)
    assert (c["lr"], c["weight_decay"], c["batch_size"], c["epochs"], c["lr_step"], c["lr_gamma"]) \
        == (1e-4, 1e-4, 16, 500, 400, 0.1)
    assert (c["plus_epochs"], c["plus_lr"], c["plus_lr_step"], c["plus_lr_gamma"], c["plus_loss"], c["alpha"],
            c["topk"]) == (300, 1e-4, 200, 0.1, "pixel", 0.003, 20)
    assert c["standardize"] is False and c["rotation"] == 0 and not c["hflip"]
    for key in ("epochs", "lr_step", "batch_size", "plus_epochs", "plus_lr_step"):   # the defaults are the paper's
        assert ADTR.defaults[key] == c[key]


def test_adtr_paper_trains_one_step_and_drops_the_plus_lr(standin):
    """The paper's Transformer (at 64 px: a 4 x 4 grid, to keep it to seconds) trains, and ADTR+'s lr drops."""
    x = images(4, 64)
    m = ADTR(paper=True, input_size=64, epochs=1, batch_size=2, plus=True, plus_epochs=3, plus_lr_step=2)
    m.fit(x, quiet=True)
    assert numpy.isfinite(m.history["loss"]).all()
    assert m.history["plus_lr"] == pytest.approx([1e-4, 1e-5, 1e-5])          # dropped by 0.1 after plus_lr_step


def _layers(seq):
    """(kind, in, out, kernel, stride, padding) of every convolution, and the BN / LReLU between them."""
    out = []
    for m in seq:
        if isinstance(m, (Conv2d, ConvTranspose2d)):
            w = m.weight.shape
            cin, cout = (w[1], w[0]) if isinstance(m, Conv2d) else (w[0], w[1])
            out.append(("T" if isinstance(m, ConvTranspose2d) else "C", cin, cout, w[-1], m.stride[0], m.padding[0]))
        elif isinstance(m, BatchNorm2d):
            out.append(("BN", m.num_features))
        elif isinstance(m, LeakyReLU):
            out.append(("LReLU", m.opts["negative_slope"]))
    return out


def test_favae_appendix_d_network():
    """FAVAE App. D: the encoder and decoder printouts, module by module (3 x 128 x 128 in, a 200 x 1 x 1
    encoder output, latent 100), and the decoder layers of Table 2 (22, 10, 16): the transposed convolutions
    opening the 64, 16 and 32 px resolutions, with the channels of VGG-16's conv2_2, conv4_3, conv3_3."""
    vae = ConvVAE(128, 100, widths=APPENDIX_D_WIDTHS, decoder="appendix_d")
    enc = [("C", 3, 128, 4, 2, 1), ("C", 128, 128, 4, 2, 1), ("C", 128, 256, 3, 1, 1), ("C", 256, 256, 4, 2, 1),
           ("C", 256, 512, 3, 1, 1), ("C", 512, 512, 4, 2, 1), ("C", 512, 512, 3, 1, 1), ("C", 512, 32, 3, 1, 1)]
    want = [x for c in enc for x in (c, ("BN", c[2]), ("LReLU", 0.2))] + [("C", 32, 200, 8, 1, 0)]
    assert _layers(vae.encoder) == want
    dec = [("T", 100, 32, 8, 1, 0), ("T", 32, 512, 3, 1, 1), ("T", 512, 512, 3, 1, 1), ("T", 512, 512, 4, 2, 1),
           ("T", 512, 256, 3, 1, 1), ("T", 256, 256, 4, 2, 1), ("T", 256, 128, 3, 1, 1), ("T", 128, 128, 4, 2, 1)]
    got = [x for stage in vae.stages for x in _layers(stage)] + _layers([vae.head])
    assert got == [x for c in dec for x in (c, ("BN", c[2]), ("LReLU", 0.2))] + [("T", 128, 3, 4, 2, 1)]
    x = Tensor(images(2, 128))
    mu, logvar = vae(x)
    assert mu.shape == logvar.shape == (2, 100, 1, 1)
    x_hat, taps = vae.decode(mu)
    assert x_hat.shape == (2, 3, 128, 128) and 0 <= x_hat.data.min() and x_hat.data.max() <= 1     # (27) Sigmoid
    assert {s: tuple(t.shape[1:]) for s, t in taps.items() if s < 16} == {2: (128, 64, 64), 8: (512, 16, 16),
                                                                           4: (256, 32, 32)}


def test_favae_paper_config_and_one_step(standin):
    """FAVAE: Sec. 5.2 / Table 2 (VGG-16 conv2_2, conv3_3, conv4_3 before ReLU), App. D (the network, latent
    100, 128 px, BatchNorm), Sec. 5.1 (textures: 512 px cut into 128 px patches for training and testing;
    10000 images; 100 epochs), Eq. 8 and Fig. 3 (the merged map includes the pixel layer; the image score
    is the map's sum, Sec. 4.2)."""
    m = FAVAE(paper=True)
    c = m.config
    assert standin == [("vgg16", "torchvision:IMAGENET1K_V1")]
    assert (c["backbone"], m.encoder.taps, m.encoder.strides) == ("vgg16", ["conv2_2", "conv3_3", "conv4_3"], [2, 4, 8])
    assert (c["widths"], c["decoder"], c["latent"], c["input_size"], c["batch_norm"]) == (
        APPENDIX_D_WIDTHS, "appendix_d", 100, 128, True)
    assert (c["texture_size"], c["texture_test"], c["samples_per_epoch"], c["epochs"]) == (512, "patch", 10000, 100)
    assert c["score_pixels"] is True and c["image_score"] == "sum"
    assert [h.tap_stride for h in m.net.heads] == [2, 4, 8]
    x = images(4, 128)
    m = FAVAE(paper=True, epochs=1, samples_per_epoch=2, batch_size=2).fit(x, quiet=True)
    assert numpy.isfinite(m.history["loss"]).all()
    loss, parts = m.loss(x[:2])
    assert {"pixel", "feature_0", "feature_1", "feature_2", "kl"} <= set(parts)


def test_favae_texture_patches_at_test_time(standin, tmp_path):
    """Sec. 5.1: textures are tested on random 128 px patches of the 512 px image; the mask is cut alike."""
    from npad.data import ArrayDataset
    x = images(3, 600)
    masks = numpy.zeros((3, 600, 600), numpy.float32)
    masks[:, :300] = 1
    m = FAVAE(paper=True, mode="texture")
    ds = m._with_transform(ArrayDataset(x, labels=[0, 1, 1], masks=masks), train=False)
    a, b = ds[1], ds[1]
    assert a["image"].shape == (3, 128, 128) and a["mask"].shape == (1, 128, 128)
    numpy.testing.assert_array_equal(a["image"], b["image"])                 # fixed by the dataset's seed


class Trunk(Module):
    """ResNet-18's layer4 shape (512 channels, stride 32) without parameters."""
    channels, stride = 512, 32

    def forward(self, x):
        return F.avg_pool2d(x, 32) * Tensor(numpy.ones((1, 512, 1, 1), numpy.float32))


def test_vae_attention_report_network_has_table_1s_parameter_count():
    """The report's Table 1: 72,803,363 parameters for MVTec AD = ResNet-18 without its last two layers
    (torchvision's 11,689,512 less the fc's 513,000) + table (d): flatten, Linear 1024, two Linear 32 heads,
    Linear 1024, Linear 1024 x 4 x 4, five ConvTranspose + BatchNorm and the output ConvTranspose, at 256 px."""
    vae = TrunkVAE(latent=32, size=256, trunk=Trunk(), head="flatten", hidden=1024, width=32, linear_relu=False)
    assert sum(p.data.size for p in vae.parameters()) == 72_803_363 - (11_689_512 - 513_000)


def test_vae_attention_paper_config_and_one_step(standin):
    """The reproducibility report: Table 1 (lr 1e-4, batch 8, latent 32, 300 epochs), Sec. 3.1 and table (d)
    (ResNet-18 without its last two layers, flatten, Linear 1024, no activation listed; the mean of the
    per-dimension maps), Sec. 3.2 (20 % validation; 256 px by table (d), not the text's 224), Sec. 3.3 (Adam),
    Sec. 5.2 (10000 images, rotations in [-30, 30] degrees, mirroring when the object permits)."""
    m = VAEAttention(paper=True)
    c = m.config
    assert standin == [("resnet18", "torchvision:IMAGENET1K_V1")]
    assert (c["backbone"], m.vae.trunk.fx.taps, c["head"], c["linear_relu"]) == ("resnet18", ["layer4"], "flatten",
                                                                                 False)
    assert (c["lr"], c["batch_size"], c["latent"], c["epochs"], c["input_size"]) == (1e-4, 8, 32, 300, 256)
    assert (c["samples_per_epoch"], c["rotation"], c["mirror"], c["validation_split"]) == (10000, 30.0, "auto", 0.2)
    assert (c["target"], c["activation"]) == ("mean", "abs")
    assert {"carpet", "hazelnut"} <= set(MIRRORED) and not {"metal_nut", "cable", "screw"} & set(MIRRORED)
    m = VAEAttention(paper=True, epochs=1, samples_per_epoch=2, batch_size=2)
    m.fit(Named(images(5, 64), "hazelnut"), quiet=True)
    assert m._mirrored and len(m.history["val_loss"]) == 1 and numpy.isfinite(m.history["val_loss"]).all()
    maps = m.attention(images(2, 256))
    assert maps.shape == (2, 256, 256) and numpy.isfinite(maps).all()


def test_vae_attention_tap_follows_the_backbone(standin):
    """--backbone resnet18 without --tap: the trunk output is layer4 (EfficientNet-Lite0: stage7)."""
    assert VAEAttention(backbone="resnet18").vae.trunk.fx.taps == ["layer4"]
    assert VAEAttention().vae.trunk.fx.taps == ["stage7"]
    npad.manual_seed(0)
