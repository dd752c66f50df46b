"""FAVAE / gamma-VAE: the loss terms against closed forms, gamma -> sigma_n on the toy normal
data (Appendix B), a short fit lowers the loss, the toy orderings (Appendix A) in a small
configuration, save/load.  Small images (16-32 px) and tiny widths keep it to seconds."""
import math

import numpy
import pytest

from npad.metrics import auroc
from npad.data.toy import SIGMA_N, ToyDataset, toy_samples
from npad.methods.favae import FAVAE
from npad.methods.favae_model import ConvVAE, gaussian_nll_map, kl_per_image
from npad.tensor import Tensor, no_grad

TOY = dict(features="none", mode="object", samples_per_epoch=320, batch_size=16, lr=3e-3, width=0.25,
           latent=4, variance_lr=0.03, batch_norm=False, output="linear")     # App. A's grey levels are N(0, 1)


def test_kl_closed_form():
    rng = numpy.random.default_rng(0)
    mu, lv = rng.standard_normal((3, 5, 1, 1)), rng.standard_normal((3, 5, 1, 1))
    got = kl_per_image(Tensor(mu), Tensor(lv)).numpy()
    # KL(N(m, s^2) || N(0, 1)) = log(1/s) + (s^2 + m^2)/2 - 1/2, summed over dimensions
    s2 = numpy.exp(lv)
    want = (0.5 * (-lv + s2 + mu ** 2 - 1)).reshape(3, -1).sum(1)
    numpy.testing.assert_allclose(got, want, rtol=1e-6)


def test_gaussian_nll_closed_form_and_gradient_of_variance():
    rng = numpy.random.default_rng(1)
    x, m = rng.random((2, 3, 4, 4)), rng.random((2, 3, 4, 4))
    lv = numpy.log(numpy.array([0.01, 0.04, 0.09])).reshape(1, 3, 1, 1)
    got = gaussian_nll_map(Tensor(x), Tensor(m), Tensor(lv)).numpy()
    var = numpy.exp(lv)
    want = (0.5 * numpy.log(2 * math.pi * var) + (x - m) ** 2 / (2 * var)).sum(1)
    numpy.testing.assert_allclose(got, want, rtol=1e-6)
    # the NLL summed over data is minimised by the empirical variance: d/dlogvar = 0 there
    err2 = ((x - m) ** 2).mean()
    t = Tensor(numpy.full((1, 1, 1, 1), math.log(err2)), requires_grad=True)
    gaussian_nll_map(Tensor(x), Tensor(m), t).sum().backward()
    assert abs(float(t.grad.data.ravel()[0])) < 1e-6 * x.size


def test_shapes_and_decoder_taps():
    vae = ConvVAE(input_size=32, latent=6, width=0.25)
    x = Tensor(numpy.random.default_rng(0).random((2, 3, 32, 32)).astype(numpy.float32))
    with no_grad():
        mu, lv = vae(x)
        xh, taps = vae.decode(mu)
    assert mu.shape == lv.shape == (2, 6, 1, 1)
    assert xh.shape == (2, 3, 32, 32) and 0 <= xh.data.min() and xh.data.max() <= 1
    assert {s: t.shape[-1] for s, t in taps.items()} == {16: 2, 8: 4, 4: 8, 2: 16}


@pytest.fixture(scope="module")
def toy_vae():
    return FAVAE(input_size=16, epochs=60, **TOY).fit(ToyDataset(16), quiet=True)


def test_gamma_approaches_noise_level_on_toy_normal_data(toy_vae):
    """Appendix B: the learned decoder std of the gamma-VAE goes to the data noise sigma_n (from 1, the
    grey levels' spread, at the start; within 3 sigma_n after this short fit, 1.3 sigma_n after 100 epochs)."""
    m = toy_vae
    assert m.history["gamma"][0] > 10 * SIGMA_N and m.gamma < 3 * SIGMA_N, m.gamma
    assert m.history["loss"][-1] < m.history["loss"][0] - 3      # a short fit lowers the loss


def test_toy_orderings_vanilla_vae(toy_vae):
    """Appendix A (b), (c) with the literal data of App. A: the VAE likelihood does not flag the stripes a
    human sees (the stripes' residual G^2 / 2 lies below the normal noise sigma_n^2 for about half of the
    anomalies, |G| < sqrt(2) sigma_n, so about half look *more* likely); typicality rejects both the
    anomalies and their shuffled versions."""
    m = toy_vae
    s = {k: m.image_scores(toy_samples(k, 40, 16, seed=7)) for k in ("normal", "anomaly", "shuffled")}
    y = numpy.r_[numpy.zeros(40), numpy.ones(40)]
    assert auroc(y, numpy.r_[s["normal"]["elbo"], s["anomaly"]["elbo"]]) < 0.65
    assert auroc(y, numpy.r_[s["normal"]["typicality"], s["anomaly"]["typicality"]]) > 0.75
    assert auroc(y, numpy.r_[s["normal"]["typicality"], s["shuffled"]["typicality"]]) > 0.75


def test_fit_predict_save_load_roundtrip(tmp_path):
    rng = numpy.random.default_rng(0)
    m = FAVAE(features="none", mode="texture", input_size=16, texture_size=32, width=0.25, latent=4,
              epochs=1, samples_per_epoch=8, batch_size=4, output="linear")    # App. A's data is N(0, 1)
    m.fit(ToyDataset(32), quiet=True)
    x = rng.random((3, 3, 32, 32)).astype(numpy.float32)
    scores, maps = m.predict(x)
    assert scores.shape == (3,) and maps.shape == (3, 32, 32) and numpy.isfinite(maps).all()
    path = m.save(tmp_path / "favae.h5")
    m2 = FAVAE.load(path)
    assert m2.config["mode"] == "texture"
    s2, maps2 = m2.predict(x)
    numpy.testing.assert_allclose(s2, scores, rtol=1e-5)
    numpy.testing.assert_allclose(maps2, maps, rtol=1e-5, atol=1e-5)


def test_unknown_options_rejected():
    with pytest.raises(ValueError):
        FAVAE(features="vgg")
    with pytest.raises(TypeError):
        FAVAE(gama=1)


def test_toy_ordering_favae():
    """Appendix A (d): in feature space the stripes are flagged and the shuffled anomalies,
    which look like noise, are not (small configuration: 32 px, three Lite0 stages; with App. A's
    G ~ N(0, sigma_a^2) many stripes are faint, so the separation is partial)."""
    m = FAVAE(input_size=32, epochs=1, taps=["stage1", "stage2", "stage3"],
              **{**TOY, "features": "pretrained", "samples_per_epoch": 64})
    m.fit(ToyDataset(32), quiet=True)
    s = {k: m.image_scores(toy_samples(k, 20, 32, seed=3))["sum"] for k in ("normal", "anomaly", "shuffled")}
    y = numpy.r_[numpy.zeros(20), numpy.ones(20)]
    assert auroc(y, numpy.r_[s["normal"], s["anomaly"]]) > 0.75
    assert auroc(y, numpy.r_[s["normal"], s["shuffled"]]) < 0.65


def test_random_backbone_is_reinitialised_deterministically():
    from npad.features import FeatureExtractor
    x = Tensor(numpy.random.default_rng(0).random((1, 3, 32, 32)).astype(numpy.float32))
    a = FAVAE(features="random", input_size=32, width=0.25, latent=4)._features(x)
    b = FAVAE(features="random", input_size=32, width=0.25, latent=4)._features(x)
    with no_grad():
        p = FeatureExtractor("efficientnet_lite0", taps=["stage1", "stage2", "stage3"])(x)
    for fa, fb, fp in zip(a, b, p):
        numpy.testing.assert_array_equal(fa.numpy(), fb.numpy())
        assert fa.shape == fp.shape and not numpy.allclose(fa.numpy(), fp.numpy())
