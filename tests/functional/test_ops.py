"""Every op of the foundation: forward against a NumPy reference, gradients against
float64 central differences (npad.testing.gradcheck), on each backend."""
import numpy as np
import pytest
from scipy.special import erf, expit, log_softmax as sp_log_softmax, logsumexp as sp_logsumexp, softmax as sp_softmax

import npad
import npad.functional as F
from npad.testing import gradcheck

R = np.random.default_rng(0)


def helper_test_op(xp, shapes, ours, ref, low=-2.0, high=2.0, atol=1e-6, rtol=1e-5, direction=False):
    """ours: function of Tensors; ref: the same expression on NumPy arrays."""
    arrays = [R.uniform(low, high, s) for s in shapes]
    out = ours(*[npad.Tensor(xp.asarray(a)) for a in arrays])
    np.testing.assert_allclose(out.numpy(), ref(*arrays), rtol=1e-7, atol=1e-9)
    gradcheck(ours, *[xp.asarray(a) for a in arrays], atol=atol, rtol=rtol, direction=direction)


def _put(a):
    """x[idx] = v recorded in the graph: a slice from another part of a, then a mask"""
    y = a * 1.0
    y[:, 1] = a[:, 0] * 2
    y[a.data > 1] = 0.5
    return y


def _put_ref(a):
    y = a.copy()
    y[:, 1] = a[:, 0] * 2
    y[a > 1] = 0.5
    return y


def _inplace_chain(a, b):
    """in-place ops on a non-leaf inside a graph: y = (a * 1) * b + a, clamped"""
    y = a * 1.0
    y *= b
    y += a
    y.sub_(b, alpha=0.5)
    y /= 2
    return y.clamp_(-1, 1)


IDX = np.array([[0, 0, 3], [1, 2, 1], [3, 3, 3]])

# (name, shapes, ours, ref[, low, high]) -- broadcasting cases included
BINARY = [
    ("add", [(3, 4), (4,)], lambda a, b: a + b, lambda a, b: a + b),
    ("sub", [(2, 1, 4), (3, 1)], lambda a, b: a - b, lambda a, b: a - b),
    ("mul", [(3, 4), (3, 1)], lambda a, b: a * b, lambda a, b: a * b),
    ("div", [(3, 4), (1, 4)], lambda a, b: a / (b * b + 1), lambda a, b: a / (b * b + 1)),
    ("pow_tensor", [(3, 4), (3, 4)], lambda a, b: F.pow(a * a + 0.5, b), lambda a, b: (a * a + 0.5) ** b),
    ("maximum", [(3, 4), (4,)], F.maximum, np.maximum),
    ("minimum", [(3, 4), (3, 1)], F.minimum, np.minimum),
    ("matmul", [(3, 4), (4, 5)], lambda a, b: a @ b, lambda a, b: a @ b),
    ("matmul_batched", [(2, 3, 4), (2, 4, 5)], lambda a, b: a @ b, lambda a, b: a @ b),
    ("matmul_bcast", [(2, 3, 4), (4, 5)], lambda a, b: a @ b, lambda a, b: a @ b),
    ("matmul_bcast_lead", [(2, 1, 3, 4), (3, 4, 2)], lambda a, b: a @ b, lambda a, b: a @ b),
    ("matvec", [(3, 4), (4,)], lambda a, b: a @ b, lambda a, b: a @ b),
    ("vecmat", [(4,), (2, 4, 3)], lambda a, b: a @ b, lambda a, b: a @ b),
    ("where", [(3, 4), (3, 4)], lambda a, b: F.where(a.data > 0, a, b), lambda a, b: np.where(a > 0, a, b)),
    ("inplace_in_graph", [(3, 4), (3, 4)], _inplace_chain,
     lambda a, b: np.clip((a * b + a - 0.5 * b) / 2, -1, 1)),
    ("copy_", [(3, 4), (4,)], lambda a, b: (a * 1.0).copy_(b) * a, lambda a, b: np.broadcast_to(b, a.shape) * a),
]

UNARY = [
    ("neg", (3, 4), lambda a: -a, lambda a: -a),
    ("pow_scalar", (3, 4), lambda a: a ** 3, lambda a: a ** 3),
    ("rpow", (3, 4), lambda a: 2.0 ** a, lambda a: 2.0 ** a),
    ("scalar_ops", (3, 4), lambda a: (2 - a) * 3 / (1 + a * a) + 1, lambda a: (2 - a) * 3 / (1 + a * a) + 1),
    ("exp", (3, 4), F.exp, np.exp),
    ("log", (3, 4), lambda a: F.log(a * a + 0.1), lambda a: np.log(a * a + 0.1)),
    ("sqrt", (3, 4), lambda a: F.sqrt(a * a + 0.1), lambda a: np.sqrt(a * a + 0.1)),
    ("abs", (3, 4), F.abs, np.abs),
    ("clamp", (3, 4), lambda a: F.clamp(a, -0.5, 0.7), lambda a: np.clip(a, -0.5, 0.7)),
    ("clamp_min", (3, 4), lambda a: a.clamp(min=0.1), lambda a: np.maximum(a, 0.1)),
    ("sum", (3, 4, 2), lambda a: a.sum(), lambda a: a.sum()),
    ("sum_axis", (3, 4, 2), lambda a: a.sum(1), lambda a: a.sum(1)),
    ("sum_axes_keep", (3, 4, 2), lambda a: a.sum((0, 2), keepdim=True), lambda a: a.sum((0, 2), keepdims=True)),
    ("mean", (3, 4, 2), lambda a: a.mean(-1), lambda a: a.mean(-1)),
    ("mean_all", (3, 4), lambda a: a.mean(), lambda a: a.mean()),
    ("max", (3, 4, 2), lambda a: a.max(1).values, lambda a: a.max(1)),
    ("amax", (3, 4, 2), lambda a: a.amax((0, 2)), lambda a: a.max((0, 2))),
    ("max_all", (3, 4), lambda a: a.max(), lambda a: a.max()),
    ("min_keep", (3, 4), lambda a: a.min(0, keepdim=True)[0], lambda a: a.min(0, keepdims=True)),
    ("max_dim_keep", (3, 4), lambda a: a.max(-1, keepdim=True).values, lambda a: a.max(-1, keepdims=True)),
    ("gather", (3, 4), lambda a: a.gather(1, npad.tensor(IDX)), lambda a: np.take_along_axis(a, IDX, 1)),
    ("gather_small_index", (3, 4), lambda a: a.gather(0, [[2, 0, 2]]), lambda a: a[[2, 0, 2], [0, 1, 2]][None]),
    ("sort", (3, 5), lambda a: a.sort(1, descending=True).values, lambda a: -np.sort(-a, 1)),
    ("topk", (5, 3), lambda a: a.topk(2, dim=0).values, lambda a: -np.sort(-a, 0)[:2]),
    ("topk_smallest", (3, 5), lambda a: a.topk(3, largest=False)[0], lambda a: np.sort(a, 1)[:, :3]),
    ("repeat", (2, 3), lambda a: a.repeat(2, 1, 3), lambda a: np.tile(a, (2, 1, 3))),
    ("clone", (3, 4), lambda a: a.clone(), lambda a: a.copy()),
    ("contiguous", (3, 4), lambda a: a.T.contiguous(), lambda a: a.T),
    ("mT", (2, 3, 4), lambda a: a.mT, lambda a: a.swapaxes(-1, -2)),
    ("setitem_recorded", (3, 4), _put, _put_ref),
    ("var", (3, 5), lambda a: a.var(1), lambda a: a.var(1, ddof=1)),
    ("var_biased_all", (3, 5), lambda a: F.var(a, unbiased=False), lambda a: a.var()),
    ("std", (4, 3), lambda a: a.std(0, keepdim=True), lambda a: a.std(0, ddof=1, keepdims=True)),
    ("logsumexp", (3, 4), lambda a: a.logsumexp(1), lambda a: sp_logsumexp(a, 1)),
    ("reshape", (3, 4), lambda a: a.reshape(2, 6) * 1, lambda a: a.reshape(2, 6)),
    ("view_infer", (3, 4), lambda a: a.view(-1, 2), lambda a: a.reshape(-1, 2)),
    ("transpose", (3, 4, 2), lambda a: a.transpose(0, 2), lambda a: a.transpose(2, 1, 0)),
    ("permute", (3, 4, 2), lambda a: a.permute(1, 2, 0), lambda a: a.transpose(1, 2, 0)),
    ("T", (3, 4), lambda a: a.T, lambda a: a.T),
    ("flatten", (2, 3, 4), lambda a: a.flatten(1), lambda a: a.reshape(2, 12)),
    ("unsqueeze", (3, 4), lambda a: a.unsqueeze(1), lambda a: a[:, None]),
    ("squeeze", (3, 1, 4), lambda a: a.squeeze(1), lambda a: a[:, 0]),
    ("expand", (3, 1), lambda a: a.expand(2, 3, 4), lambda a: np.broadcast_to(a, (2, 3, 4))),
    ("getitem_slice", (5, 4), lambda a: a[1:4, ::2], lambda a: a[1:4, ::2]),
    ("getitem_int_none", (5, 4), lambda a: a[2, None], lambda a: a[2, None]),
    ("getitem_fancy_repeat", (5, 4), lambda a: a[[0, 2, 2, 4]], lambda a: a[[0, 2, 2, 4]]),
    ("getitem_fancy_2d", (5, 4), lambda a: a[np.array([0, 1, 1]), np.array([3, 3, 0])],
     lambda a: a[np.array([0, 1, 1]), np.array([3, 3, 0])]),
    ("getitem_bool", (5, 4), lambda a: a[np.arange(20).reshape(5, 4) % 3 == 0],
     lambda a: a[np.arange(20).reshape(5, 4) % 3 == 0]),
    ("split", (6, 4), lambda a: F.split(a, [1, 2, 3])[1] * 2, lambda a: a[1:3] * 2),
    ("chunk", (5, 4), lambda a: a.chunk(2, 0)[1], lambda a: a[3:]),
    ("split_two_outputs", (6, 4), lambda a: a.split(2, 1)[0] * a.split(2, 1)[1], lambda a: a[:, :2] * a[:, 2:]),
    ("pad_constant", (2, 3, 4), lambda a: F.pad(a, (1, 2, 0, 1), value=0.5),
     lambda a: np.pad(a, ((0, 0), (0, 1), (1, 2)), constant_values=0.5)),
    ("pad_reflect", (2, 3, 4), lambda a: F.pad(a, (2, 3, 1, 2), mode="reflect"),
     lambda a: np.pad(a, ((0, 0), (1, 2), (2, 3)), mode="reflect")),
    ("pad_replicate", (2, 3, 4), lambda a: F.pad(a, (3, 1, 2, 0), mode="replicate"),
     lambda a: np.pad(a, ((0, 0), (2, 0), (3, 1)), mode="edge")),
    ("pad_circular", (2, 3, 4), lambda a: F.pad(a, (1, 2), mode="circular"),
     lambda a: np.pad(a, ((0, 0), (0, 0), (1, 2)), mode="wrap")),
    ("erf", (3, 4), F.erf, erf),
    ("relu", (3, 4), F.relu, lambda a: np.maximum(a, 0)),
    ("relu6", (3, 4), lambda a: F.relu6(a * 4), lambda a: np.clip(a * 4, 0, 6)),
    ("hardtanh", (3, 4), lambda a: F.hardtanh(a, -0.5, 0.7), lambda a: np.clip(a, -0.5, 0.7)),
    ("leaky_relu", (3, 4), lambda a: F.leaky_relu(a, 0.2), lambda a: np.where(a > 0, a, 0.2 * a)),
    ("sigmoid", (3, 4), F.sigmoid, expit),
    ("logsigmoid", (3, 4), lambda a: F.logsigmoid(a * 10), lambda a: np.log(expit(a * 10))),
    ("tanh", (3, 4), F.tanh, np.tanh),
    ("softplus", (3, 4), F.softplus, lambda a: np.log1p(np.exp(a))),
    ("softplus_beta", (3, 4), lambda a: F.softplus(a * 5, beta=0.5, threshold=3),
     lambda a: np.where(0.5 * a * 5 > 3, a * 5, np.log1p(np.exp(0.5 * a * 5)) / 0.5)),
    ("silu", (3, 4), F.silu, lambda a: a * expit(a)),
    ("gelu", (3, 4), F.gelu, lambda a: a * 0.5 * (1 + erf(a / np.sqrt(2)))),
    ("gelu_tanh", (3, 4), lambda a: F.gelu(a, approximate="tanh"),
     lambda a: 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a ** 3)))),
    ("hardswish", (3, 4), lambda a: F.hardswish(a * 3), lambda a: a * 3 * np.clip(a * 3 + 3, 0, 6) / 6),
    ("hardsigmoid", (3, 4), lambda a: F.hardsigmoid(a * 3), lambda a: np.clip(a * 3 / 6 + 0.5, 0, 1)),
    ("elu", (3, 4), lambda a: F.elu(a, 0.7), lambda a: np.where(a > 0, a, 0.7 * (np.exp(a) - 1))),
    ("softmax", (3, 4), lambda a: F.softmax(a, 1), lambda a: sp_softmax(a, 1)),
    ("softmax_dim0", (3, 4), lambda a: F.softmax(a * 20, 0), lambda a: sp_softmax(a * 20, 0)),
    ("log_softmax", (3, 4), lambda a: F.log_softmax(a, -1), lambda a: sp_log_softmax(a, -1)),
]


@pytest.mark.parametrize("name,shapes,ours,ref", BINARY, ids=[c[0] for c in BINARY])
def test_binary(xp, name, shapes, ours, ref):
    helper_test_op(xp, shapes, ours, ref)


@pytest.mark.parametrize("name,shape,ours,ref", UNARY, ids=[c[0] for c in UNARY])
def test_unary(xp, name, shape, ours, ref):
    helper_test_op(xp, [shape], ours, ref)


def test_cat_stack(xp):
    shapes = [(2, 3), (2, 1), (2, 4)]
    helper_test_op(xp, shapes, lambda a, b, c: F.cat([a, b, c], 1), lambda a, b, c: np.concatenate([a, b, c], 1))
    helper_test_op(xp, [(2, 3)] * 3, lambda a, b, c: F.stack([a, b, c], 1), lambda a, b, c: np.stack([a, b, c], 1))


def test_linear_and_layer_norm(xp):
    helper_test_op(xp, [(2, 3, 5), (4, 5), (4,)], F.linear, lambda x, w, b: x @ w.T + b)
    helper_test_op(xp, [(6, 5), (4, 5)], F.linear, lambda x, w: x @ w.T)

    def ln_ref(x, w, b):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * w + b
    helper_test_op(xp, [(2, 3, 5), (5,), (5,)], lambda x, w, b: F.layer_norm(x, (5,), w, b), ln_ref)

    def ln2_ref(x, w, b):
        mu, var = x.mean((-2, -1), keepdims=True), x.var((-2, -1), keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * w + b
    helper_test_op(xp, [(2, 3, 4), (3, 4), (3, 4)], lambda x, w, b: F.layer_norm(x, (3, 4), w, b), ln2_ref)


def test_embedding(xp):
    idx = np.array([[0, 2], [2, 3]])
    helper_test_op(xp, [(4, 3)], lambda w: F.embedding(idx, w), lambda w: w[idx])


LOSSES = [
    ("mse", lambda a, b: F.mse_loss(a, b), lambda a, b: ((a - b) ** 2).mean()),
    ("mse_sum", lambda a, b: F.mse_loss(a, b, reduction="sum"), lambda a, b: ((a - b) ** 2).sum()),
    ("l1", lambda a, b: F.l1_loss(a, b), lambda a, b: np.abs(a - b).mean()),
    ("smooth_l1", lambda a, b: F.smooth_l1_loss(a, b, beta=0.5, reduction="none"),
     lambda a, b: np.where(np.abs(a - b) < 0.5, 0.5 * (a - b) ** 2 / 0.5, np.abs(a - b) - 0.25)),
    ("bce", lambda a, b: F.binary_cross_entropy(F.sigmoid(a), F.sigmoid(b)),
     lambda a, b: -(expit(b) * np.log(expit(a)) + (1 - expit(b)) * np.log(1 - expit(a))).mean()),
    ("bce_logits", lambda a, b: F.binary_cross_entropy_with_logits(a * 5, F.sigmoid(b), reduction="none"),
     lambda a, b: -(expit(b) * np.log(expit(a * 5)) + (1 - expit(b)) * np.log(1 - expit(a * 5)))),
    ("gaussian_nll", lambda a, b: F.gaussian_nll_loss(a, b, F.exp(a), full=True),
     lambda a, b: (0.5 * (a + (a - b) ** 2 / np.exp(a)) + 0.5 * np.log(2 * np.pi)).mean()),
    ("gaussian_nll_scalar_var", lambda a, b: F.gaussian_nll_loss(a, b, 0.3, reduction="sum"),
     lambda a, b: (0.5 * (np.log(0.3) + (a - b) ** 2 / 0.3)).sum()),
    ("kl_normal", lambda a, b: F.kl_normal(a, b), lambda m, lv: -0.5 * (1 + lv - m * m - np.exp(lv)).sum()),
]


@pytest.mark.parametrize("name,ours,ref", LOSSES, ids=[c[0] for c in LOSSES])
def test_losses(xp, name, ours, ref):
    helper_test_op(xp, [(3, 4), (3, 4)], ours, ref)


CLASS_T = np.array([0, 3, -100, 1, 2])           # one ignored sample
CLASS_W = np.array([0.5, 2.0, 1.0, 1.5])
CLASS_P = sp_softmax(R.standard_normal((5, 4)), 1)  # class probabilities, a fixed target


def _ce_ref(x, t, w=None, smoothing=0.0):
    """cross entropy with weights, ignore_index -100 and label smoothing, in NumPy (PyTorch's reductions)"""
    logp = sp_log_softmax(x, 1)
    w = np.ones(x.shape[1]) if w is None else w
    keep = t != -100
    ts = np.where(keep, t, 0)
    nll = -(logp[np.arange(len(t)), ts] * w[ts] * keep).sum() / (w[ts] * keep).sum()
    smooth = -((logp * w).sum(1) * keep).sum() / (w[ts] * keep).sum()
    return (1 - smoothing) * nll + smoothing / x.shape[1] * smooth


CLASSIFICATION = [
    ("ce", lambda x: F.cross_entropy(x, CLASS_T), lambda x: _ce_ref(x, CLASS_T)),
    ("ce_weight_smoothing", lambda x: F.cross_entropy(x, CLASS_T, npad.tensor(CLASS_W), label_smoothing=0.2),
     lambda x: _ce_ref(x, CLASS_T, CLASS_W, 0.2)),
    ("ce_sum", lambda x: F.cross_entropy(x, CLASS_T, reduction="sum"),
     lambda x: _ce_ref(x, CLASS_T) * 4),
    ("ce_probabilities", lambda x: F.cross_entropy(x, CLASS_P, label_smoothing=0.1),
     lambda x: -(sp_log_softmax(x, 1) * (0.9 * CLASS_P + 0.025)).sum(1).mean()),
    ("nll_none", lambda x: F.nll_loss(F.log_softmax(x, 1), CLASS_T, reduction="none"),
     lambda x: np.where(CLASS_T == -100, 0, -sp_log_softmax(x, 1)[np.arange(5), np.maximum(CLASS_T, 0)])),
    ("ce_single_sample", lambda x: F.cross_entropy(x[1], 3), lambda x: -sp_log_softmax(x[1], 0)[3]),
    ("bce_logits_weights", lambda x: F.binary_cross_entropy_with_logits(
        x, npad.tensor(CLASS_P), weight=npad.tensor(CLASS_W), pos_weight=npad.tensor(CLASS_W[::-1].copy())),
     lambda x: -(CLASS_W * (CLASS_W[::-1] * CLASS_P * np.log(expit(x)) + (1 - CLASS_P) * np.log(expit(-x)))).mean()),
]


@pytest.mark.parametrize("name,ours,ref", CLASSIFICATION, ids=[c[0] for c in CLASSIFICATION])
def test_classification_losses(xp, name, ours, ref):
    helper_test_op(xp, [(5, 4)], ours, ref)


def test_cross_entropy_spatial_and_one_hot(xp):
    """N x C x H x W logits with N x H x W targets; one_hot is the indicator the loss picks"""
    t = np.array([[[0, 2], [1, -100]], [[2, 2], [0, 1]]])

    def ref(x):
        logp = sp_log_softmax(x, 1)
        oh = np.eye(3)[np.maximum(t, 0)].transpose(0, 3, 1, 2) * (t != -100)[:, None]
        return -(logp * oh).sum() / (t != -100).sum()
    helper_test_op(xp, [(2, 3, 2, 2)], lambda x: F.cross_entropy(x, t), ref)
    oh = F.one_hot(npad.tensor([[0, 2], [1, 1]]), 4)
    assert oh.dtype == np.int64 and oh.numpy().tolist() == [[[1, 0, 0, 0], [0, 0, 1, 0]], [[0, 1, 0, 0]] * 2]
    assert F.one_hot(npad.tensor([3, 0])).shape == (2, 4)


def test_conv1d(xp):
    def ref(x, w, b, stride=1, pad=0, dil=1):
        xp_ = np.pad(x, ((0, 0), (0, 0), (pad, pad)))
        K, L = w.shape[2], xp_.shape[2]
        n = (L - dil * (K - 1) - 1) // stride + 1
        cols = np.stack([xp_[:, :, k * dil: k * dil + stride * (n - 1) + 1: stride] for k in range(K)], 2)  # B C K n
        return np.einsum("bckn,ock->bon", cols, w) + b[:, None]
    helper_test_op(xp, [(2, 3, 9), (4, 3, 3), (4,)], lambda x, w, b: F.conv1d(x, w, b, 2, 1, 2),
                   lambda x, w, b: ref(x, w, b, 2, 1, 2))
    helper_test_op(xp, [(2, 3, 7), (4, 3, 3), (4,)], lambda x, w, b: F.conv1d(x, w, b, padding="same"),
                   lambda x, w, b: ref(x, w, b, 1, 1))


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5)])
def test_batch_norm_on_1d_inputs(xp, shape):
    """BatchNorm1d's functional: statistics over every axis but the channels (axis 1)"""
    axes = (0,) + tuple(range(2, len(shape)))
    c = (1, 4) + (1,) * (len(shape) - 2)

    def ref(x, w, b):
        return (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + 1e-5) * w.reshape(c) + b.reshape(c)
    helper_test_op(xp, [shape, (4,), (4,)], lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), ref,
                   atol=1e-5)


def test_classification_loss_errors():
    x = npad.randn(3, 4)
    with pytest.raises(IndexError, match="target 4 is out of bounds for 4 classes"):
        F.cross_entropy(x, [0, 4, 1])
    with pytest.raises(TypeError, match="class indices"):
        F.nll_loss(x, npad.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"target shape \(2,\)"):
        F.cross_entropy(x, [0, 1])
    with pytest.raises(ValueError, match=r"class values must lie in \[0, 2\)"):
        F.one_hot(npad.tensor([0, 2]), 2)
    with pytest.raises(IndexError, match="gather: index values"):
        x.gather(1, [[0], [4], [1]])
    with pytest.raises(ValueError, match="topk: k = 5"):
        x.topk(5)
    with pytest.raises(ValueError, match="clamp: at least one"):
        x.clamp()
    with pytest.raises(TypeError, match="use amax"):
        x.max((0, 1))


def test_kl_normal_closed_form():
    """KL(N(m, s^2) || N(0, 1)) = log(1/s) + (s^2 + m^2)/2 - 1/2, per dimension."""
    m, s = np.array([0.3, -1.2]), np.array([0.5, 2.0])
    kl = F.kl_normal(npad.tensor(m), npad.tensor(np.log(s ** 2))).item()
    assert kl == pytest.approx(np.sum(np.log(1 / s) + (s ** 2 + m ** 2) / 2 - 0.5), rel=1e-10)


def test_dropout():
    x = npad.ones(1000, 100)
    y = F.dropout(x, 0.3, training=True)
    kept = (y.numpy() != 0).mean()
    assert abs(kept - 0.7) < 0.01
    assert np.allclose(y.numpy()[y.numpy() != 0], 1 / 0.7)
    assert F.dropout(x, 0.3, training=False) is x
    xd = npad.tensor(R.standard_normal((4, 5)), requires_grad=True)
    npad.manual_seed(1)
    gradcheck(lambda a: (npad.manual_seed(3), F.dropout(a, 0.5))[1], xd.numpy())


def test_shape_errors():
    a, b = npad.ones(2, 3), npad.ones(4, 5)
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4, 5\)"):
        a @ b
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4, 5\)"):
        a + b
    with pytest.raises(ValueError, match="cannot view shape"):
        a.reshape(4, 2)
    with pytest.raises(ValueError, match="differ outside dim"):
        F.cat([a, b], 0)
    with pytest.raises(ValueError, match="input shape"):
        F.mse_loss(a, b)
    with pytest.raises(ValueError, match="reflect padding"):
        F.pad(a, (3, 3), mode="reflect")
