"""ADTRNet and the ADTR / ADTR+ losses (You et al. 2022): shapes, gradients, ablations, hand-computed
loss values, and that a tiny network learns (reconstruction overfit, push-pull separation)."""
import math

import numpy
import pytest

import npad
import npad.nn as nn
from npad.backend import get_array_module
from npad.methods.adtr_model import (ADTRNet, adtr_normal_loss, anomaly_map, image_level_loss, log1mexp,
                                     pixel_push_pull_loss, pseudo_huber_map, topk_mean)
from npad.testing import gradcheck


def tiny(**kw):
    opts = dict(hidden=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=24, dropout=0.0)
    opts.update(kw)
    return ADTRNet(6, (3, 4), **opts)


# ---- the network -----------------------------------------------------------------------
def test_shapes_and_defaults():
    net = tiny()
    x = npad.randn(2, 6, 3, 4)
    assert net(x).shape == (2, 6, 3, 4)
    assert net.query_embed.shape == (12, 16) and net.pos_embed.shape == (12, 16)
    with pytest.raises(ValueError):
        net(npad.randn(2, 6, 4, 3))
    with pytest.raises(ValueError):
        net(npad.randn(2, 5, 3, 4))
    full = ADTRNet(720, (4, 4))                                   # the paper's sizes (grid kept small)
    assert len(full.encoder) == 4 and len(full.decoder) == 4
    assert full.encoder[0].linear1.weight.shape == (1024, 256)
    assert full.encoder[0].self_attn.num_heads == 8
    assert full.input_proj.weight.shape == (256, 720) and full.output_proj.weight.shape == (720, 256)


@pytest.mark.parametrize("attn,query", [(True, True), (True, False), (False, True), (False, False)])
def test_gradient_reaches_every_parameter(attn, query):
    net = tiny(use_attention=attn, use_query_embedding=query, num_encoder_layers=2, num_decoder_layers=2)
    x = npad.randn(2, 6, 3, 4)
    adtr_normal_loss(x, net(x)).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert numpy.abs(p.grad.numpy()).max() > 0, name


def test_ablation_switches():
    with_all = tiny()
    no_query = tiny(use_query_embedding=False)
    no_attn = tiny(use_attention=False)
    neither = tiny(use_attention=False, use_query_embedding=False)
    names = lambda m: {n for n, _ in m.named_parameters()}  # noqa: E731
    has_mha = lambda m: any(isinstance(s, nn.MultiheadAttention) for s in m.modules())  # noqa: E731
    assert "query_embed" in names(with_all) and "query_embed" not in names(no_query)
    assert has_mha(with_all) and has_mha(no_query)
    assert not has_mha(no_attn) and not has_mha(neither)
    assert "query_embed" in names(no_attn) and "fuse.weight" in names(no_attn)
    assert "pos_embed" not in names(no_attn) and "query_embed" not in names(neither)
    # the decoder starts from the query embedding: changing it changes the reconstruction
    x = npad.randn(2, 6, 3, 4)
    before = with_all(x).numpy()
    with_all.query_embed.data = with_all.query_embed.data + 1.0
    assert not numpy.allclose(before, with_all(x).numpy())


def test_tokens_are_grid_positions():
    """Without positions and learned queries the network is equivariant to permuting the tokens; the
    learned position embedding (added to queries and keys) breaks that symmetry."""
    net = tiny(use_query_embedding=False).double()
    x = numpy.random.default_rng(0).standard_normal((1, 6, 3, 4))
    perm = numpy.random.default_rng(1).permutation(12)
    xp = x.reshape(1, 6, 12)[:, :, perm].reshape(1, 6, 3, 4)
    out = lambda a: net(npad.tensor(a)).numpy().reshape(1, 6, 12)  # noqa: E731
    assert not numpy.allclose(out(xp), out(x)[:, :, perm], atol=1e-8)
    net.pos_embed.data = net.pos_embed.data * 0
    numpy.testing.assert_allclose(out(xp), out(x)[:, :, perm], rtol=1e-10, atol=1e-10)


def test_float64_gradcheck_through_network():
    net = tiny(hidden=8, dim_feedforward=12).double()
    x = numpy.random.default_rng(2).standard_normal((2, 6, 3, 4))
    gradcheck(lambda a: net(a), x, direction=True, seed=5)
    rng = numpy.random.default_rng(3)
    w = rng.standard_normal(x.shape)
    net.zero_grad()
    (net(npad.tensor(x)) * npad.tensor(w)).sum().backward()
    for name in ("query_embed", "pos_embed", "encoder.0.self_attn.in_proj_weight",
                 "decoder.0.multihead_attn.in_proj_weight", "input_proj.weight"):
        p = dict(net.named_parameters())[name]
        d, base, eps = rng.standard_normal(p.shape), p.data.copy(), 1e-6
        xd = get_array_module(base).asarray(d)                   # the direction on the parameter's device
        p.data = base + eps * xd
        lp = float((net(npad.tensor(x)).numpy() * w).sum())
        p.data = base - eps * xd
        lm = float((net(npad.tensor(x)).numpy() * w).sum())
        p.data = base
        num, ana = (lp - lm) / (2 * eps), float((p.grad.numpy() * d).sum())
        assert abs(num - ana) <= 1e-7 + 1e-5 * abs(num), (name, ana, num)


def test_eval_is_deterministic():
    net = tiny(dropout=0.2).eval()
    x = npad.randn(2, 6, 3, 4)
    numpy.testing.assert_array_equal(net(x).numpy(), net(x).numpy())


def test_tiny_net_overfits_fixed_features():
    npad.manual_seed(0)
    x = npad.tensor(numpy.random.default_rng(0).standard_normal((4, 8, 4, 4)).astype(numpy.float32))
    net = ADTRNet(8, (4, 4), hidden=32, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                  dim_feedforward=64, dropout=0.0)
    opt = npad.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=1e-4)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = adtr_normal_loss(x, net(x))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5, losses


# ---- losses: hand-computed values ----------------------------------------------------------
def _pair():
    f = numpy.array([[[[1.0, 2.0]], [[3.0, -4.0]]]])             # B=1, C=2, H=1, W=2
    return npad.tensor(f), npad.tensor(numpy.zeros_like(f))


def test_normal_loss_and_anomaly_map_by_hand():
    f, z = _pair()
    assert adtr_normal_loss(f, z).item() == pytest.approx((1 + 4 + 9 + 16) / 4)   # Eq. 1 (element mean)
    s = anomaly_map(f, z).numpy()                                                   # Eq. 2-3
    assert s.shape == (1, 1, 2)
    numpy.testing.assert_allclose(s[0, 0], [math.sqrt(10), math.sqrt(20)], rtol=1e-12)


def test_pseudo_huber_by_hand():
    f, z = _pair()
    phi = pseudo_huber_map(f, z).numpy()                                            # Eq. 6
    numpy.testing.assert_allclose(phi[0, 0], [math.sqrt(2 ** 2 + 1) - 1, math.sqrt(3 ** 2 + 1) - 1], rtol=1e-12)
    small = pseudo_huber_map(npad.tensor(numpy.full((1, 3, 1, 1), 1e-3)), npad.tensor(numpy.zeros((1, 3, 1, 1))))
    assert small.item() == pytest.approx(0.5e-6, rel=1e-5)                         # ~ a^2 / 2 near 0


def test_push_pull_by_hand():
    f, z = _pair()
    p0, p1 = math.sqrt(5) - 1, math.sqrt(10) - 1
    y = numpy.array([[[0, 1]]])
    want = p0 / 2 - 0.003 * math.log(1 - math.exp(-p1 / 2))                        # Eq. 7
    assert pixel_push_pull_loss(f, z, y).item() == pytest.approx(want, rel=1e-12)
    assert pixel_push_pull_loss(f, z, y[:, None].astype(bool)).item() == pytest.approx(want, rel=1e-12)
    # an image without anomalous positions: only the pull term (no log(1 - e^0) = -inf)
    assert pixel_push_pull_loss(f, z, numpy.zeros((1, 1, 2))).item() == pytest.approx((p0 + p1) / 2, rel=1e-12)
    alpha = 0.1
    both = pixel_push_pull_loss(f, z, numpy.ones((1, 1, 2)), alpha=alpha).item()
    assert both == pytest.approx(-alpha * math.log(1 - math.exp(-(p0 + p1) / 2)), rel=1e-12)
    with pytest.raises(ValueError):
        pixel_push_pull_loss(f, z, numpy.zeros((1, 2, 2)))


def test_image_level_loss_by_hand():
    f = numpy.array([[[[1.0, 2.0, 0.0]]], [[[0.5, 3.0, 1.0]]]])                     # B=2, C=1, H=1, W=3
    z = numpy.zeros_like(f)
    phi = numpy.sqrt(numpy.abs(f[:, 0, 0]) ** 2 + 1) - 1
    q = numpy.sort(phi, axis=1)[:, ::-1][:, :2].mean(axis=1)                        # Eq. 8, k = 2
    want = ((1 - 0) * q[0] + (-0.003 * 1 * math.log(1 - math.exp(-q[1])))) / 2     # Eq. 9, labels (0, 1)
    got = image_level_loss(npad.tensor(f), npad.tensor(z), numpy.array([0, 1]), k=2).item()
    assert got == pytest.approx(want, rel=1e-12)
    # k larger than the grid: the mean of all positions
    assert topk_mean(npad.tensor(phi), 20).numpy() == pytest.approx(phi.mean(axis=1), rel=1e-12)


def test_topk_mean_gradient_only_to_the_top_k():
    x = npad.tensor(numpy.array([[0.1, 0.9, 0.5, 0.7]]), requires_grad=True)
    topk_mean(x, 2).sum().backward()
    numpy.testing.assert_allclose(x.grad.numpy(), [[0, 0.5, 0, 0.5]])


def test_log1mexp_values_and_gradcheck():
    x = numpy.array([1e-8, 1e-3, 0.5, math.log(2), 0.8, 5.0, 50.0])
    # accurate references: log(-expm1(-x)) for small x, log1p(-exp(-x)) for large x (~ -e^-x)
    ref = numpy.array([math.log(-math.expm1(-v)) if v < 1 else math.log1p(-math.exp(-v)) for v in x])
    assert ref[-1] == pytest.approx(-math.exp(-50.0), rel=1e-12)
    numpy.testing.assert_allclose(log1mexp(npad.tensor(x)).numpy(), ref, rtol=1e-12)
    assert numpy.isfinite(log1mexp(npad.tensor(numpy.zeros(1))).numpy()).all()
    gradcheck(log1mexp, numpy.array([1e-2, 0.3, 0.9, 3.0, 20.0]), rtol=1e-6)


def test_loss_gradchecks():
    rng = numpy.random.default_rng(4)
    f, fh = rng.standard_normal((2, 3, 2, 3)), rng.standard_normal((2, 3, 2, 3))
    mask = numpy.zeros((2, 2, 3))
    mask[0, 0, :2] = 1
    gradcheck(lambda a: pixel_push_pull_loss(npad.tensor(f), a, mask, alpha=0.5), fh)
    gradcheck(lambda a: image_level_loss(npad.tensor(f), a, numpy.array([1, 0]), alpha=0.5, k=3), fh)
    gradcheck(lambda a: anomaly_map(npad.tensor(f), a), fh)
    gradcheck(lambda a: adtr_normal_loss(npad.tensor(f), a), fh)


# ---- ADTR+: the push-pull loss separates anomalous from normal positions --------------------------
def test_push_pull_training_separates_anomalies():
    npad.manual_seed(1)
    rng = numpy.random.default_rng(1)
    feats = rng.standard_normal((6, 8, 4, 4)).astype(numpy.float32)
    masks = numpy.zeros((6, 4, 4), numpy.float32)
    for i in range(3):                                     # 3 images with a 2 x 2 anomalous patch
        r, c = rng.integers(0, 3, size=2)
        masks[i, r:r + 2, c:c + 2] = 1
        feats[i, :, r:r + 2, c:c + 2] += 2.0               # that looks different
    x = npad.tensor(feats)
    net = ADTRNet(8, (4, 4), hidden=32, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                  dim_feedforward=64, dropout=0.0)
    opt = npad.optim.AdamW(net.parameters(), lr=5e-3, weight_decay=1e-4)
    alpha = 0.1                                            # stronger push than the paper's 0.003 for a quick toy

    def phi_means():
        with npad.no_grad():
            phi = pseudo_huber_map(x, net(x)).numpy()
        return phi[masks > 0].mean(), phi[masks == 0].mean()

    (anom0, norm0), losses = phi_means(), []
    for _ in range(30):
        opt.zero_grad()
        loss = pixel_push_pull_loss(x, net(x), masks, alpha=alpha)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    anom, norm = phi_means()
    assert anom > anom0 and norm < norm0                   # pushed up / pulled towards 0
    assert anom > 5 * norm
