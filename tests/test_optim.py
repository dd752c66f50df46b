"""Optimizer updates against hand-computed steps, resumable state, schedules, clipping."""
import math

import numpy as np
import pytest

import npad
import npad.nn as nn
from npad import optim


def _param(values):
    return nn.Parameter(npad.tensor(np.array(values, dtype=np.float64)))


def test_adamw_matches_the_formula_on_hand_computed_steps():
    p = _param([1.0, -2.0])
    opt = optim.AdamW([p], lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.5)
    g1, g2 = np.array([0.5, -1.0]), np.array([-0.25, 2.0])
    w, m, v = np.array([1.0, -2.0]), 0, 0
    for t, g in enumerate([g1, g2], start=1):
        p.grad = npad.tensor(g)
        opt.step()
        w = w * (1 - 0.1 * 0.5)                        # decoupled decay
        m = 0.9 * m + 0.1 * g
        v = 0.99 * v + 0.01 * g * g
        w = w - 0.1 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.99 ** t)) + 1e-8)
        np.testing.assert_allclose(p.numpy(), w, rtol=1e-12)
    # first step by hand: m^ = g, v^ = g^2, so the step is lr * sign(g)
    q = _param([1.0])
    o = optim.AdamW([q], lr=0.1, weight_decay=0.0)
    q.grad = npad.tensor(np.array([3.0]))
    o.step()
    assert q.numpy()[0] == pytest.approx(0.9, abs=1e-7)


def test_adam_l2_differs_from_adamw():
    p, q = _param([1.0]), _param([1.0])
    a, b = optim.Adam([p], lr=0.1, weight_decay=0.5), optim.AdamW([q], lr=0.1, weight_decay=0.5)
    for o, t in ((a, p), (b, q)):
        t.grad = npad.tensor(np.array([0.1]))
        o.step()
    assert p.numpy()[0] == pytest.approx(0.9)                 # L2 folded into g: sign step
    assert q.numpy()[0] == pytest.approx(1 * 0.95 - 0.1)


def test_sgd_momentum_and_nesterov_by_hand():
    p = _param([1.0])
    o = optim.SGD([p], lr=0.1, momentum=0.9)
    for _ in range(2):
        p.grad = npad.tensor(np.array([1.0]))
        o.step()
    assert p.numpy()[0] == pytest.approx(1 - 0.1 * 1 - 0.1 * 1.9)
    q = _param([1.0])
    o = optim.SGD([q], lr=0.1, momentum=0.9, nesterov=True)
    for _ in range(2):
        q.grad = npad.tensor(np.array([1.0]))
        o.step()
    assert q.numpy()[0] == pytest.approx(1 - 0.1 * 1.9 - 0.1 * (1 + 0.9 * 1.9))


def test_optimizer_state_dict_resumes_exactly():
    def run(steps, resume_from=None):
        npad.manual_seed(0)
        m = nn.Linear(3, 2)
        o = optim.Adam(m.parameters(), lr=1e-2)
        if resume_from:
            m.load_state_dict(resume_from[0])
            o.load_state_dict(resume_from[1])
        x = npad.tensor(np.ones((4, 3), np.float32))
        for _ in range(steps):
            o.zero_grad()
            (m(x) ** 2).sum().backward()
            o.step()
        return m, o
    full, _ = run(6)
    half, ho = run(3)
    state = ({k: v.copy() for k, v in half.state_dict().items()}, ho.state_dict())
    resumed, _ = run(3, resume_from=state)
    for k, v in full.state_dict().items():
        np.testing.assert_array_equal(v, resumed.state_dict()[k])


def test_schedulers():
    p = _param([0.0])
    o = optim.SGD([p], lr=1.0)
    s = optim.StepLR(o, step_size=2, gamma=0.5)
    lrs = []
    for _ in range(5):
        lrs.append(s.get_last_lr()[0])
        s.step()
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.25]
    o = optim.SGD([_param([0.0])], lr=2.0)
    c = optim.CosineAnnealingLR(o, T_max=10, eta_min=0.02, warmup=2)
    got = []
    for _ in range(11):
        got.append(c.get_last_lr()[0])
        c.step()
    cos = [0.02 + (2 - 0.02) * (1 + math.cos(math.pi * t / 10)) / 2 for t in range(11)]
    assert got[0] == pytest.approx(0.0) and got[1] == pytest.approx(cos[1] * 0.5)
    assert got[2:] == pytest.approx(cos[2:]) and got[10] == pytest.approx(0.02)
    o = optim.SGD([_param([0.0])], lr=1.0)
    lam = optim.LambdaLR(o, lambda e: 1 / (e + 1))
    lam.step()
    assert lam.get_last_lr() == [0.5]


def test_clip_grad_norm():
    a, b = _param([0.0, 0.0]), _param([0.0])
    a.grad, b.grad = npad.tensor(np.array([3.0, 0.0])), npad.tensor(np.array([4.0]))
    total = optim.clip_grad_norm_([a, b], 1.0)
    assert total == pytest.approx(5.0)
    assert np.sqrt((a.grad.numpy() ** 2).sum() + (b.grad.numpy() ** 2).sum()) == pytest.approx(1.0, rel=1e-5)


def test_empty_params_error():
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])


def test_schedulers_live_in_lr_scheduler_as_in_torch():
    from npad.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, StepLR
    assert (optim.StepLR, optim.CosineAnnealingLR, optim.LambdaLR) == (StepLR, CosineAnnealingLR, LambdaLR)
    assert optim.lr_scheduler.LRScheduler is optim.LRScheduler
