"""A PyTorch user's habits, written the PyTorch way: each case is one function of ``L``, the library
(npad or torch), run on both when torch is installed (skipped otherwise; torch is never needed).
Values, dtypes, named-tuple fields, gradients and the kind of error raised must agree."""
import importlib
import os
import tempfile

import numpy as np
import pytest

import npad

R = np.random.default_rng(0)
A = R.standard_normal((4, 5))                      # float64
TIES = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])
LOGITS = R.standard_normal((6, 4))
TARGET = np.array([0, 3, -100, 1, 2, 2])           # one ignored sample
WEIGHT = np.array([0.5, 2.0, 1.0, 1.5])
PROBS = R.dirichlet(np.ones(4), 6)
CONV_W, CONV_B = R.standard_normal((4, 3, 3)), R.standard_normal(4)
SIGNAL = R.standard_normal((2, 3, 9))              # B x C x L
SPATIAL, SPATIAL_T = R.standard_normal((2, 4, 3, 3)), R.integers(0, 4, (2, 3, 3))


def grad_of(L, fn, *arrays):
    """the gradients of fn(*tensors) w.r.t. every input, as PyTorch users get them: backward, then .grad"""
    ts = [L.tensor(a, requires_grad=True) for a in arrays]
    fn(*ts).backward()
    return [t.grad for t in ts]


# ---- silently different before -------------------------------------------------------------
def max_unpack(L):
    _, pred = L.tensor(LOGITS).max(1)
    return pred


def max_dim_grad(L):
    x = L.tensor(TIES, requires_grad=True)
    x.max(dim=1).values.sum().backward()           # the gradient goes to the index returned
    return x.grad


def sgd_by_hand(L):
    p = L.tensor([1.0, -2.0], requires_grad=True)
    (p * p).sum().backward()
    with L.no_grad():
        p -= 0.1 * p.grad
        p.grad.zero_()
    return p, p.grad


def inplace_methods(L):
    x = L.tensor([[-1.0, 0.5, 3.0], [2.0, -4.0, 0.25]])
    alias = x
    x.add_(1, alpha=2).sub_(L.tensor([0.5, 1.0, 1.5])).mul_(3).div_(2).clamp_(-2, 5)
    row = x[1]
    row.fill_(7)                                   # a view: writes into x
    x *= 2
    x /= 4
    return alias, x is alias


def copy_into_parameter(L):
    lin = L.nn.Linear(3, 2)
    with L.no_grad():
        lin.weight.copy_(L.tensor(A[:2, :3]))
        lin.bias.zero_()
    return lin(L.tensor(A[:, :3], dtype=L.float32)), lin.weight.requires_grad


def inplace_on_leaf(L):
    p = L.tensor([1.0], requires_grad=True)
    p += 1


def modified_saved_input(L):
    x, w = L.tensor([1.0, 3.0]), L.tensor([1.0, 1.0], requires_grad=True)
    y = x * w
    x.mul_(2)
    y.sum().backward()


def step_between_backwards(L):
    p = L.tensor([1.0, 2.0], requires_grad=True)
    opt = L.optim.SGD([p], lr=0.1)
    loss = (p * p).sum()
    loss.backward(retain_graph=True)
    opt.step()
    loss.backward()


def inplace_in_graph(L):
    x, w = L.tensor(A[0], requires_grad=True), L.tensor(A[1], requires_grad=True)
    y = x * 2
    y *= w
    y += x
    y[1:3] = w[:2] * 3
    y.sum().backward()
    return y, x.grad, w.grad


def int_tensor_plus_float(L):
    t = L.tensor([1, 2])
    t += 1.5


def inplace_broadcast_grows(L):
    L.ones(2).add_(L.ones(3, 2))


def to_numpy_implicitly(L):
    t = L.tensor(A)
    return np.asarray(t), np.array(t, dtype=np.float32).dtype, np.mean(np.asarray(t), 1)


# ---- what a PyTorch user reaches for -------------------------------------------------------
def cross_entropy_forms(L):
    F = L.nn.functional
    x, t, w = L.tensor(LOGITS), L.tensor(TARGET), L.tensor(WEIGHT)
    spatial, st = L.tensor(SPATIAL), L.tensor(SPATIAL_T)
    return [F.cross_entropy(x, t), F.cross_entropy(x, t, weight=w, label_smoothing=0.1),
            F.cross_entropy(x, t, reduction="none", label_smoothing=0.3),
            F.cross_entropy(x, L.tensor(np.where(TARGET < 0, 3, TARGET)), weight=w, reduction="sum", ignore_index=3),
            F.cross_entropy(x, L.tensor(PROBS), label_smoothing=0.2), F.cross_entropy(x[0], t[0]),
            F.cross_entropy(spatial, st), F.nll_loss(F.log_softmax(x, 1), t, weight=w),
            F.one_hot(L.tensor([[0, 2], [3, 1]]), 5)]


def cross_entropy_grads(L):
    F = L.nn.functional
    t, w = L.tensor(TARGET), L.tensor(WEIGHT)
    return grad_of(L, lambda x: F.cross_entropy(x, t, weight=w, label_smoothing=0.15), LOGITS)


def loss_modules(L):
    nn = L.nn
    x, y = L.tensor(A), L.tensor(np.tanh(A[::-1].copy()))
    p = L.tensor(1 / (1 + np.exp(-A)))
    ce = nn.CrossEntropyLoss(weight=L.tensor(WEIGHT), label_smoothing=0.1)
    return [nn.MSELoss()(x, y), nn.L1Loss(reduction="sum")(x, y), nn.SmoothL1Loss(beta=0.5)(x, y),
            nn.BCELoss()(p, (y > 0).double()), nn.BCEWithLogitsLoss(pos_weight=L.tensor(A[0] ** 2))(x, (y > 0).double()),
            nn.NLLLoss()(L.log_softmax(L.tensor(LOGITS), 1), L.tensor(TARGET)),
            ce(L.tensor(LOGITS), L.tensor(TARGET)), list(ce.state_dict())]


def conv1d_and_batchnorm1d(L):
    nn = L.nn
    conv = nn.Conv1d(3, 4, 3, stride=2, padding=1)
    with L.no_grad():
        conv.weight.copy_(L.tensor(CONV_W, dtype=L.float32))
        conv.bias.copy_(L.tensor(CONV_B, dtype=L.float32))
    x = L.tensor(SIGNAL, dtype=L.float32)
    bn, bn2 = nn.BatchNorm1d(4), nn.BatchNorm1d(5, momentum=None)
    y = bn(conv(x))
    z = bn2(L.tensor(A, dtype=L.float32))
    bn.eval()
    return y, z, bn.running_mean, bn.running_var, bn(conv(x)), bn2.running_var, tuple(conv.weight.shape)


def containers(L):
    nn = L.nn
    d = nn.ModuleDict({"enc": nn.Linear(3, 4), "dec": nn.Sequential(nn.ReLU(), nn.Linear(4, 2))})
    d["head"] = nn.Conv1d(2, 1, 1)
    seen = []
    d.apply(lambda m: seen.append(type(m).__name__))
    return list(d.keys()), len(d), "dec" in d, list(d.state_dict()), seen, type(d["enc"]).__name__


def tensor_methods(L):
    x = L.tensor(A)
    i = L.tensor([[0, 4], [1, 1], [3, 2], [2, 0]])
    return [x.clone(), x.long(), x.float().dtype, x.to(L.float32).dtype, x.to(L.tensor([1], dtype=L.int32)),
            x.gather(1, i), x.topk(2), x.topk(3, dim=0, largest=False), x.sort(dim=0, descending=True),
            x.argsort(1), L.tensor([2, 1, 2, 1]).argsort(stable=True), x.repeat(2, 1, 2),
            x.T.contiguous(), x[None].mT, x.argmax(1, keepdim=True), x.argmin(), L.tensor(TIES).min(0)]


def tensor_method_grads(L):
    i = L.tensor([[0, 4], [1, 1], [3, 2], [2, 0]])
    return grad_of(L, lambda x: (x.gather(1, i).sum() + x.topk(2).values.sum() + x.sort(0)[0][0].sum()
                                 + x.repeat(1, 2, 3).pow(2).sum() + x.clone().mT.sum()), A)


def top_level(L):
    x = L.tensor(A)
    return [L.max(x), L.max(x, 1), L.min(x, 0, keepdim=True), L.max(x, L.zeros(5, dtype=L.float64)),
            L.sum(x, 1), L.logsumexp(x, 1), L.argmax(x), L.tensor([1, 2], dtype=L.long).dtype == L.int64,
            L.ones(2, dtype=L.float64).dtype == L.double]


def clamp_grads_at_bounds(L):
    F = L.nn.functional
    x = np.array([-1.0, 0.0, 3.0, 6.0, 7.0])
    return [grad_of(L, lambda t: t.clamp(0, 6).sum(), x), grad_of(L, lambda t: F.hardtanh(t, 0.0, 6.0).sum(), x),
            grad_of(L, lambda t: F.relu6(t).sum(), x), grad_of(L, lambda t: L.clamp(t, min=0.0).sum(), x)]


def schedulers(L):
    p = L.tensor([1.0], requires_grad=True)
    opt = L.optim.SGD([p], lr=1.0)
    StepLR = importlib.import_module(L.__name__ + ".optim.lr_scheduler").StepLR
    sched, lrs = StepLR(opt, step_size=2, gamma=0.5), []
    for _ in range(5):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr())
    return lrs, L.optim.lr_scheduler.CosineAnnealingLR.__name__


def data_loading(L):
    data = L.utils.data

    class Pairs(data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return A[i % 4].astype(np.float32), i, float(i) / 2

    ds = data.TensorDataset(L.tensor(A), L.tensor([0, 1, 0, 1]))
    first = [(x, y) for x, y in data.DataLoader(ds, batch_size=3)]
    second = list(data.DataLoader(Pairs(), batch_size=2, drop_last=True))
    return first, second, [len(s) for s in data.random_split(Pairs(), [0.6, 0.4])], len(ds), ds[2]


def save_and_load(L):
    src, dst = L.nn.Linear(3, 2), L.nn.Linear(3, 2)
    with tempfile.TemporaryDirectory() as d:
        L.save(src.state_dict(), os.path.join(d, "model.pt"))
        dst.load_state_dict(L.load(os.path.join(d, "model.pt")))
    return [bool((a == b).all()) for a, b in zip(src.parameters(), dst.parameters())]


CASES = [max_unpack, max_dim_grad, sgd_by_hand, inplace_methods, copy_into_parameter, inplace_on_leaf,
         modified_saved_input, step_between_backwards, inplace_in_graph, int_tensor_plus_float,
         inplace_broadcast_grows, to_numpy_implicitly, cross_entropy_forms, cross_entropy_grads, loss_modules,
         conv1d_and_batchnorm1d, containers, tensor_methods, tensor_method_grads, top_level,
         clamp_grads_at_bounds, schedulers, data_loading, save_and_load,
         lambda L: L.tensor(A).max(dim=1), lambda L: L.tensor(A).max(dim=1)[0], lambda L: L.tensor(TIES).max(),
         lambda L: grad_of(L, lambda x: x.max(), TIES), lambda L: L.tensor(A).min(dim=0, keepdim=True)]


def plain(out):
    """An output as nested Python values: arrays (dtype kept) for tensors, named tuples with their fields."""
    fields = getattr(type(out), "__match_args__", None)      # named tuples, torch.return_types
    if isinstance(out, tuple) and fields:
        return (type(out).__name__, {f: plain(getattr(out, f)) for f in fields})
    if isinstance(out, (tuple, list)):
        return [plain(o) for o in out]
    if isinstance(out, npad.Tensor):
        return out.numpy()
    if type(out).__module__.startswith("torch") and hasattr(out, "detach"):
        return out.detach().numpy()
    return out


def assert_same(ours, theirs, where="output"):
    if isinstance(theirs, tuple) and len(theirs) == 2 and isinstance(theirs[1], dict):  # a named tuple
        assert ours[0] == theirs[0] and list(ours[1]) == list(theirs[1]), f"{where}: {ours[0]} vs {theirs[0]}"
        for f in theirs[1]:
            assert_same(ours[1][f], theirs[1][f], f"{where}.{f}")
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), f"{where}: {ours!r} vs {theirs!r}"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(theirs, np.ndarray):
        assert isinstance(ours, np.ndarray) and ours.dtype == theirs.dtype, f"{where}: {ours!r} vs {theirs!r}"
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6, err_msg=where)
    elif "torch" in repr(theirs):                     # a dtype
        assert str(ours) == repr(theirs).replace("torch.", ""), f"{where}: {ours} vs {theirs}"
    else:
        assert ours == theirs, f"{where}: {ours!r} vs {theirs!r}"


def raised(result):
    return isinstance(result, tuple) and result[:1] == ("raises",)


def outcome(case, L):
    try:
        return plain(case(L))
    except Exception as e:  # the kind of error must agree
        return ("raises", type(e).__name__, str(e))


RAISE = {inplace_on_leaf, modified_saved_input, step_between_backwards, int_tensor_plus_float,
         inplace_broadcast_grows}   # the habits PyTorch refuses, and npad must refuse too


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # torch's own __array__
@pytest.mark.parametrize("case", CASES, ids=[c.__name__ if c.__name__ != "<lambda>" else f"lambda{i}"
                                              for i, c in enumerate(CASES)])
def test_like_torch(case):
    torch = pytest.importorskip("torch")
    theirs, ours = outcome(case, torch), outcome(case, npad)
    assert raised(theirs) == (case in RAISE), f"the case itself is wrong: torch gives {theirs}"
    if raised(theirs) or raised(ours):
        assert raised(ours) and ours[:2] == theirs[:2], f"npad: {ours}\ntorch: {theirs}"
        return
    assert_same(ours, theirs)
