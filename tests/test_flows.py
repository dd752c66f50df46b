"""Flows: exact inverse, log-determinant against a numerical Jacobian, gradients, positional encoding."""
import math

import numpy as np
import pytest

import npad
from npad.flows import (ConditionalAffineCoupling, SequenceFlow, cflow_decoder, gaussian_log_prob,
                        positional_encoding_2d)
from npad.testing import gradcheck

R = np.random.default_rng(0)


def _randomise(flow):
    """Move the block off its near-identity start so the checks see real couplings."""
    for p in flow.parameters():
        xp = npad.get_array_module(p.data)
        p.data = p.data + 0.3 * xp.asarray(R.standard_normal(p.shape), p.dtype)
    return flow


@pytest.mark.parametrize("channels,permutation", [(5, "soft"), (6, "hard"), (2, "soft")])
def test_inverse_recovers_input(channels, permutation):
    flow = _randomise(SequenceFlow(*[ConditionalAffineCoupling(channels, 4, permutation=permutation, seed=k)
                                     for k in range(3)]))
    x = npad.tensor(R.standard_normal((32, channels)).astype(np.float32))
    c = npad.tensor(R.standard_normal((32, 4)).astype(np.float32))
    y, _ = flow(x, c)
    assert not np.allclose(y.numpy(), x.numpy(), atol=1e-2)
    np.testing.assert_allclose(flow.inverse(y, c).numpy(), x.numpy(), atol=1e-5)


@pytest.mark.parametrize("channels", [3, 4])
def test_log_det_equals_numerical_jacobian(channels):
    flow = _randomise(cflow_decoder(channels, cond_channels=2, n_blocks=2)).double()
    x = R.standard_normal((1, channels))
    c = npad.tensor(R.standard_normal((1, 2)))
    _, log_det = flow(npad.tensor(x), c)
    eps = 1e-6
    jac = np.zeros((channels, channels))
    for i in range(channels):
        d = np.zeros_like(x)
        d[0, i] = eps
        jac[:, i] = (flow(npad.tensor(x + d), c)[0].numpy() - flow(npad.tensor(x - d), c)[0].numpy())[0] / (2 * eps)
    assert log_det.numpy()[0] == pytest.approx(np.log(abs(np.linalg.det(jac))), abs=1e-6)


def test_initial_global_scale_is_one_and_permutation_is_orthogonal():
    block = ConditionalAffineCoupling(6, 3)
    np.testing.assert_allclose(block._scale().numpy(), np.ones(6), rtol=1e-6)
    w = block.w_perm.numpy()
    np.testing.assert_allclose(w @ w.T, np.eye(6), atol=1e-6)


def test_gradients_through_a_block():
    block = _randomise(ConditionalAffineCoupling(4, 3, seed=1)).double()

    def logp(x, c):
        return gaussian_log_prob(*block(x, c))
    x, c = R.standard_normal((5, 4)), R.standard_normal((5, 3))
    gradcheck(logp, x, c, atol=1e-6)
    # parameters: backward against central differences along a random direction
    for p in block.parameters():
        p.grad = None
    logp(npad.tensor(x), npad.tensor(c)).sum().backward()
    for name, p in block.named_parameters():
        d = R.standard_normal(p.shape)
        base, xp = p.data.copy(), npad.get_array_module(p.data)
        p.data = base + 1e-6 * xp.asarray(d)
        up = logp(npad.tensor(x), npad.tensor(c)).sum().item()
        p.data = base - 1e-6 * xp.asarray(d)
        down = logp(npad.tensor(x), npad.tensor(c)).sum().item()
        p.data = base
        assert (p.grad.numpy() * d).sum() == pytest.approx((up - down) / 2e-6, rel=1e-5, abs=1e-7), name


def test_gaussian_log_prob_is_the_normal_density_for_identity():
    z = R.standard_normal((7, 3))
    logp = gaussian_log_prob(npad.tensor(z), npad.tensor(np.zeros(7))).numpy()
    ref = (-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)).sum(1)
    np.testing.assert_allclose(logp, ref, rtol=1e-12)


def test_positional_encoding_matches_the_formula():
    p = positional_encoding_2d(128, 5, 7, dtype=np.float64)
    assert p.shape == (128, 5, 7)
    for k in (0, 3, 31):
        w = 10000 ** (-2 * k / 64)
        for r, col in ((0, 0), (2, 6), (4, 3)):
            assert p[2 * k, r, col] == pytest.approx(math.sin(col * w))
            assert p[2 * k + 1, r, col] == pytest.approx(math.cos(col * w))
            assert p[64 + 2 * k, r, col] == pytest.approx(math.sin(r * w))
            assert p[65 + 2 * k, r, col] == pytest.approx(math.cos(r * w))


def test_bad_shapes():
    with pytest.raises(ValueError, match="expected input N x 4"):
        ConditionalAffineCoupling(4, 2)(npad.zeros(3, 5), npad.zeros(3, 2))
    with pytest.raises(ValueError, match="permutation"):
        ConditionalAffineCoupling(4, 2, permutation="random")


@pytest.mark.parametrize("soft_clamp", ["scaled", "unscaled"])
def test_unconditional_and_unscaled_blocks(soft_clamp):
    """cond_channels=0: FrEIA's block without a condition (CFLOW-AD Table 2's UFLOW): exact inverse and the
    log-determinant of a numerical Jacobian; soft_clamp="unscaled" is s' = clamp tanh(s) (FrEIA at the commit
    the CFLOW-AD authors pinned), "scaled" s' = clamp tanh(s / clamp)."""
    flow = _randomise(cflow_decoder(4, cond_channels=0, n_blocks=2, soft_clamp=soft_clamp)).double()
    x = R.standard_normal((1, 4))
    y, log_det = flow(npad.tensor(x), None)
    np.testing.assert_allclose(flow.inverse(y, None).numpy(), x, atol=1e-6)      # W stored in float32
    eps, jac = 1e-6, np.zeros((4, 4))
    for i in range(4):
        d = np.zeros_like(x)
        d[0, i] = eps
        jac[:, i] = (flow(npad.tensor(x + d))[0].numpy() - flow(npad.tensor(x - d))[0].numpy())[0] / (2 * eps)
    assert log_det.numpy()[0] == pytest.approx(np.log(abs(np.linalg.det(jac))), abs=1e-6)
    block = list(flow)[0]
    a = block.subnet(npad.tensor(x[:, :block.c1])).numpy() * block.prescale
    s = a[:, :block.c2]
    want = block.clamp * np.tanh(s) if soft_clamp == "unscaled" else block.clamp * np.tanh(s / block.clamp)
    np.testing.assert_allclose(block._coefficients(npad.tensor(x[:, :block.c1]), None)[0].numpy(), want, rtol=1e-12)
    with pytest.raises(ValueError, match="built for 0 condition channels"):
        block(npad.tensor(x), npad.tensor(np.zeros((1, 2))))
    with pytest.raises(ValueError, match="positive multiple of 4"):
        positional_encoding_2d(0, 2, 2)
