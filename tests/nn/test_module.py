"""Module registration, state_dict round trips, modes, hooks, and a learning MLP."""
from collections import OrderedDict

import numpy as np
import pytest

import npad
import npad.functional as F
import npad.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Dropout(0.1), nn.Linear(32, 32), nn.ReLU())
        self.norm = nn.LayerNorm(32)
        self.head = nn.Linear(32, 1)
        self.register_buffer("count", npad.zeros(1))

    def forward(self, x):
        return self.head(self.norm(self.body(x)))


def test_ordered_names_like_pytorch():
    m = Net()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["body.0.weight", "body.0.bias", "body.3.weight", "body.3.bias",
                     "norm.weight", "norm.bias", "head.weight", "head.bias"]
    assert list(m.state_dict())[0] == "count"          # own buffers before submodules, as PyTorch
    assert m.get_submodule("body.3") is m.body[3]
    assert m.num_parameters() == 2 * 32 + 32 + 32 * 32 + 32 + 64 + 33


def test_default_linear_init_bounds():
    lin = nn.Linear(100, 50)
    b = 1 / np.sqrt(100)
    w = lin.weight.numpy()
    assert np.abs(w).max() <= b and np.abs(w).max() > 0.9 * b
    assert np.abs(lin.bias.numpy()).max() <= b


def test_state_dict_roundtrip_reproduces_outputs():
    m1, m2 = Net().eval(), Net().eval()
    x = npad.randn(7, 2)
    assert not np.allclose(m1(x).numpy(), m2(x).numpy())
    m2.load_state_dict(m1.state_dict())
    np.testing.assert_array_equal(m1(x).numpy(), m2(x).numpy())


def test_load_state_dict_errors():
    m = Net()
    sd = OrderedDict(m.state_dict())
    sd.pop("head.bias")
    sd["extra"] = np.zeros(1)
    with pytest.raises(KeyError, match=r"missing keys \['head.bias'\].*unexpected keys \['extra'\]"):
        m.load_state_dict(sd)
    sd = m.state_dict()
    sd["head.weight"] = np.zeros((2, 32))
    with pytest.raises(ValueError, match=r"'head.weight' has shape \(2, 32\).*\(1, 32\)"):
        m.load_state_dict(sd)


def test_train_eval_and_freeze():
    m = Net()
    m.eval()
    assert not m.body[2].training
    x = npad.randn(4, 2)
    np.testing.assert_array_equal(m(x).numpy(), m(x).numpy())
    m.requires_grad_(False)
    assert not m(x).requires_grad


def test_forward_hook_captures_and_removes():
    m = Net()
    seen = []
    h = m.body[1].register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    m(npad.randn(3, 2))
    h.remove()
    m(npad.randn(3, 2))
    assert seen == [(3, 32)]


@pytest.mark.parametrize("make_opt", [
    lambda p: npad.optim.SGD(p, lr=0.1, momentum=0.9),
    lambda p: npad.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
    lambda p: npad.optim.Adam(p, lr=1e-2),
    lambda p: npad.optim.AdamW(p, lr=1e-2, weight_decay=1e-2),
], ids=["sgd", "sgd_nesterov", "adam", "adamw"])
def test_mlp_learns_xor_like_problem(make_opt):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (256, 2)).astype(np.float32)
    y = (np.sign(x[:, :1] * x[:, 1:]) > 0).astype(np.float32)   # XOR of the signs: not linear
    m = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
    opt = make_opt(m.parameters())
    xt, yt = npad.tensor(x), npad.tensor(y)
    for _ in range(300):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(m(xt), yt)
        loss.backward()
        npad.nn.utils.clip_grad_norm_(m.parameters(), 5.0)
        opt.step()
    acc = ((m(xt).numpy() > 0) == (y > 0.5)).mean()
    assert acc > 0.95, acc


def test_module_dict_and_apply():
    d = nn.ModuleDict({"enc": nn.Linear(3, 4)})
    d["dec"] = nn.Sequential(nn.ReLU(), nn.Linear(4, 2))
    d.update([("head", nn.Linear(2, 1))])
    assert list(d) == ["enc", "dec", "head"] and len(d) == 3 and "dec" in d
    assert list(d.state_dict()) == ["enc.weight", "enc.bias", "dec.1.weight", "dec.1.bias", "head.weight", "head.bias"]
    assert len(list(d.parameters())) == 6 and [k for k, _ in d.items()] == list(d.keys())
    order = []
    d.apply(lambda m: order.append(type(m).__name__))      # children first, then the module itself
    assert order == ["Linear", "ReLU", "Linear", "Sequential", "Linear", "ModuleDict"]

    def init(m):
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
    d.apply(init)
    assert all((m.bias.numpy() == 0).all() for m in d.modules() if isinstance(m, nn.Linear))
    assert isinstance(d.pop("head"), nn.Linear) and len(d) == 2


def test_loss_modules_hold_their_options():
    w = npad.tensor([1.0, 2.0, 0.5])
    ce = nn.CrossEntropyLoss(weight=w, ignore_index=1, label_smoothing=0.1)
    assert list(ce.state_dict()) == ["weight"] and ce.weight is w      # a buffer, as PyTorch
    x, t = npad.randn(4, 3), npad.tensor([0, 1, 2, 2])
    assert ce(x, t).item() == pytest.approx(F.cross_entropy(x, t, w, 1, "mean", 0.1).item())
    assert list(nn.MSELoss().state_dict()) == [] and repr(nn.L1Loss(reduction="sum")) == "L1Loss(reduction='sum')"
    y = npad.rand(4, 3)
    assert nn.BCEWithLogitsLoss(reduction="none")(x, y).shape == (4, 3)
    assert nn.NLLLoss()(F.log_softmax(x, 1), t).item() == pytest.approx(F.cross_entropy(x, t).item())
