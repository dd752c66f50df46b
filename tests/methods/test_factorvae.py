"""FactorVAE / AD-FactorVAE (npad.methods.factorvae): Kim and Mnih's metric on ideal and random
encoders, the total-correlation estimate (known-optimal and trained discriminators), the
attention-disentanglement loss (Eq. 5) and its maps, and short training runs."""
import numpy as np
import pytest

import npad
from npad import functional as F
from npad.backend import to_cpu
from npad.data.dsprites import FACTOR_SIZES, DSprites
from npad.methods.factorvae import (Discriminator, DSpritesVAE, _bilinear_matrix, ad_loss, ad_maps,
                                    attention_disentanglement, attention_image, discriminator_loss,
                                    disentanglement_score, factorvae_loss, fit_factorvae, gaussian_tc,
                                    model_encoder, permute_dims, tc_estimate, traversal_image)
from npad.methods.vae_attention import attention_maps
from npad.nn import Module
from npad.optim import Adam
from npad.tensor import Tensor

DS = DSprites()


# ---------------------------------------------------------------------------------------------
# the metric
# ---------------------------------------------------------------------------------------------
def test_metric_is_one_for_an_encoder_that_copies_the_factors():
    sizes = np.array(FACTOR_SIZES, float)

    def copy(images, factors):
        n = len(factors)
        extra = np.stack([np.full(n, 3.0), np.random.default_rng(n).normal(0, 0.01, n)], 1)   # collapsed dims
        return np.concatenate([factors / sizes, extra], 1)

    r = disentanglement_score(copy, DS, n_train=60, n_eval=60, L=16, n_std=500)
    assert r["score"] == 1.0 and r["train_accuracy"] == 1.0
    np.testing.assert_array_equal(r["active"], np.arange(5))            # the two collapsed dims pruned
    np.testing.assert_array_equal(r["classifier"][:5], np.arange(5))


def test_metric_is_near_chance_for_a_random_encoder():
    def rand(images, factors):
        return np.random.default_rng(int(factors.sum())).normal(size=(len(factors), 10))

    r = disentanglement_score(rand, DS, n_train=300, n_eval=300, L=8, n_std=200, seed=1)
    assert 0.1 < r["score"] < 0.32, r["score"]                           # chance: 1/5


def test_metric_on_a_model_encoder_runs():
    npad.manual_seed(0)
    vae = DSpritesVAE(latent=4, width=0.25)
    r = disentanglement_score(model_encoder(vae, batch_size=64), DS, n_train=10, n_eval=10, L=8, n_std=64)
    assert 0.0 <= r["score"] <= 1.0 and r["std"].shape == (4,)


# ---------------------------------------------------------------------------------------------
# total correlation
# ---------------------------------------------------------------------------------------------
class _OptimalD(Module):
    """The Bayes-optimal discriminator of N(0, C) against N(0, diag C): logit_0 - logit_1 is the
    log density ratio log q(z) - sum_j log q(z_j)."""

    def __init__(self, cov):
        super().__init__()
        c = np.asarray(cov, float)
        self.prec = np.linalg.inv(c) - np.diag(1 / np.diag(c))
        self.const = -0.5 * (np.linalg.slogdet(c)[1] - np.log(np.diag(c)).sum())

    def forward(self, z):
        q = -0.5 * np.einsum("ni,ij,nj->n", z.data, self.prec, z.data) + self.const
        return Tensor(np.stack([q, np.zeros_like(q)], 1))


@pytest.mark.parametrize("rho", [0.0, 0.8])
def test_tc_density_ratio_with_the_optimal_discriminator(rho):
    cov = np.array([[1.0, rho, 0], [rho, 1.0, 0], [0, 0, 2.0]])
    z = np.random.default_rng(0).multivariate_normal(np.zeros(3), cov, 40000)
    est = tc_estimate(_OptimalD(cov), Tensor(z)).item()
    true = gaussian_tc(cov)
    assert abs(est - true) < 0.03, (est, true)
    assert (true == pytest.approx(0.0)) if rho == 0 else true > 0.5


def _trained_tc(rho, steps=250, seed=0):
    rng = np.random.default_rng(seed)
    cov = np.array([[1.0, rho], [rho, 1.0]])
    npad.manual_seed(seed)
    d = Discriminator(2, hidden=32, layers=2)
    opt = Adam(list(d.parameters()), lr=3e-3, betas=(0.5, 0.9))
    for _ in range(steps):
        z = rng.multivariate_normal([0, 0], cov, 256).astype(np.float32)
        z2 = rng.multivariate_normal([0, 0], cov, 256).astype(np.float32)
        loss = discriminator_loss(d, Tensor(z), permute_dims(z2, rng))
        opt.zero_grad()
        loss.backward()
        opt.step()
    z = rng.multivariate_normal([0, 0], cov, 4000).astype(np.float32)
    return tc_estimate(d, Tensor(z)).item(), gaussian_tc(cov), loss.item()


def test_tc_estimate_with_a_trained_discriminator():
    tc0, true0, _ = _trained_tc(0.0)
    tc1, true1, d_loss = _trained_tc(0.9)
    assert abs(tc0) < 0.1, tc0                       # independent: D cannot tell, TC ~ 0
    assert tc1 > 0.4 and true1 == pytest.approx(0.830, abs=1e-3), tc1      # correlated: clearly positive
    assert d_loss < 0.65                             # below log 2: D tells them apart


def test_permute_dims_keeps_marginals_and_breaks_dependence():
    rng = np.random.default_rng(0)
    a = rng.normal(size=5000)
    z = np.stack([a, a + 0.01 * rng.normal(size=5000)], 1)
    p = permute_dims(z, rng).numpy()
    for j in range(2):
        np.testing.assert_array_equal(np.sort(p[:, j]), np.sort(z[:, j]))
    assert abs(np.corrcoef(p.T)[0, 1]) < 0.05 < np.corrcoef(z.T)[0, 1]


# ---------------------------------------------------------------------------------------------
# the attention disentanglement loss
# ---------------------------------------------------------------------------------------------
def test_ad_loss_zero_for_disjoint_positive_for_overlapping():
    m = np.zeros((2, 3, 8, 8))
    m[:, 0, :4] = 1.0
    m[:, 1, 4:] = 2.0
    m[:, 2, :, :2] = 0.5
    assert attention_disentanglement(m[:, :2]) == 0.0                              # disjoint supports
    assert attention_disentanglement(np.stack([m[:, 0], m[:, 0]], 1)) == pytest.approx(1.0)   # equal maps
    a = np.zeros((1, 2, 8, 8))
    a[0, 0, :4] = 1.0            # rows 0-3 (32 px)
    a[0, 1, 2:6] = 1.0           # rows 2-5 (32 px), 16 px shared
    assert attention_disentanglement(a) == pytest.approx(2 * 16 / 64)
    # all pairs: (0,1) disjoint, (0,2) and (1,2) overlapping
    v = attention_disentanglement(m)
    t = attention_disentanglement(Tensor(m))
    assert v > 0 and t.item() == pytest.approx(v)
    assert attention_disentanglement(Tensor(m), pairs="consecutive").item() == pytest.approx(
        attention_disentanglement(m, pairs=[(0, 1), (1, 2)]))


def test_ad_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    m0 = rng.uniform(0.1, 1.0, (2, 3, 4, 4))
    t = Tensor(m0, requires_grad=True)
    attention_disentanglement(t).backward()
    g = t.grad.numpy()
    eps = 1e-6
    for idx in [(0, 0, 1, 2), (1, 2, 3, 0), (0, 1, 0, 0)]:
        d = np.zeros_like(m0)
        d[idx] = eps
        fd = (attention_disentanglement(m0 + d, eps=0) - attention_disentanglement(m0 - d, eps=0)) / (2 * eps)
        assert g[idx] == pytest.approx(fd, rel=1e-4, abs=1e-8)


def test_bilinear_matrix_matches_interpolate():
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8))
    ref = F.interpolate(Tensor(x), size=(64, 64), mode="bilinear", align_corners=False).numpy()
    u = _bilinear_matrix(8, 64)
    np.testing.assert_allclose(u @ x @ u.T, ref, atol=1e-10)


def test_ad_maps_are_the_attention_maps_and_train_the_encoder():
    npad.manual_seed(0)
    vae = DSpritesVAE(latent=4, width=0.25).eval()
    vae.to(dtype=np.float64)
    x, _ = DS.sample(3, rng=0)
    x = x.astype(np.float64)
    m = ad_maps(vae, Tensor(x))
    ref = attention_maps(vae, x, "encoder.5", target="each", activation="abs", grad_norm=None)
    assert m.shape == (3, 4, 64, 64)
    np.testing.assert_allclose(m.numpy(), to_cpu(ref), rtol=1e-8, atol=1e-14)
    for p in vae.parameters():
        p.grad = None
    ad_loss(vae, Tensor(x)).backward()
    g = vae.get_submodule("encoder.0").weight.grad
    assert g is not None and np.abs(g.numpy()).sum() > 0                      # through A into the layers below
    with pytest.raises(ValueError):
        ad_maps(vae, Tensor(x), layer="decoder.1")


def test_minimising_the_ad_loss_lowers_it():
    """alpha is a stop-gradient constant, yet descending the gradient through A lowers L_AD."""
    npad.manual_seed(1)
    vae = DSpritesVAE(latent=4, width=0.25).eval()
    x, _ = DS.sample(16, rng=1)
    opt = Adam(list(vae.parameters()), lr=3e-3)
    vals = []
    for _ in range(15):
        loss = ad_loss(vae, Tensor(x))
        vals.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert vals[-1] < 0.85 * vals[0], vals


# ---------------------------------------------------------------------------------------------
# models and training
# ---------------------------------------------------------------------------------------------
def test_model_shapes_and_loss_parts():
    npad.manual_seed(0)
    vae = DSpritesVAE(latent=10, width=0.25)
    d = Discriminator(10, hidden=16, layers=2)
    x, _ = DS.sample(4, rng=0)
    logits, mu, logvar, z = vae(Tensor(x))
    assert logits.shape == (4, 1, 64, 64) and mu.shape == logvar.shape == z.shape == (4, 10)
    assert d(z).shape == (4, 2)
    loss, parts, _ = factorvae_loss(vae, d, x, gamma=35, lam=1.0)
    assert set(parts) == {"recon", "kl", "tc", "ad", "loss"}
    assert parts["loss"] == pytest.approx(parts["recon"] + parts["kl"] + 35 * parts["tc"] + parts["ad"], rel=1e-5)
    assert 0 <= parts["ad"] <= 1


@pytest.mark.parametrize("lam", [0.0, 5.0])
def test_a_few_training_steps_lower_the_loss(lam):
    vae_seed = 0
    npad.manual_seed(vae_seed)
    vae = DSpritesVAE(latent=6, width=0.25)
    d = Discriminator(6, hidden=32, layers=2)
    hist = fit_factorvae(vae, d, DS, iterations=40, batch_size=16, gamma=10.0, lam=lam, lr=2e-3, lr_d=1e-3,
                         log_every=10, quiet=True, seed=0)
    assert hist["iteration"] == [10, 20, 30, 40]
    first = hist["recon"][0] + hist["kl"][0]
    last = hist["recon"][-1] + hist["kl"][-1]
    assert last < 0.8 * first, (first, last)
    assert all(0 <= a <= 1 for a in hist["ad"]) and np.isfinite(hist["d_loss"]).all()
    assert not vae.training


def test_pictures():
    npad.manual_seed(0)
    vae = DSpritesVAE(latent=3, width=0.25)
    x, _ = DS.sample(2, rng=0)
    t = traversal_image(vae, x[0], steps=5)
    assert t.shape == (3 * 66 - 2, 5 * 66 - 2) and 0 <= t.min() and t.max() <= 1
    a = attention_image(vae, x)
    assert a.shape == (2 * 66 - 2, 4 * 66 - 2, 3) and a.dtype == np.uint8
