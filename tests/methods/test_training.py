"""The training skeleton (npad.methods.base.train_loop): the history it keeps, the schedule it
steps, its log line in batch logs, what an exception leaves behind; and that every method trains
through it (the same history keys everywhere)."""
import math

import numpy as np
import pytest

import npad
from npad import progress as P
from npad.methods.base import backward_step, train_loop
from npad.nn import Linear
from npad.optim import SGD, StepLR
from npad.tensor import Tensor

COMMON = {"loss", "lr", "seconds", "train_seconds", "samples_per_s"}


def epoch_lists(history):
    """The per-epoch lists of a history, checked to have one length; returns that length."""
    lengths = {k: len(v) for k, v in history.items() if isinstance(v, list)}
    assert len(set(lengths.values())) == 1, lengths
    return next(iter(lengths.values()))


def fixed_steps(values):
    """A step returning given (loss parts, n) per batch, and a batches() of as many batches."""
    def step(i):
        return values[i]
    return step, lambda epoch: range(len(values))


class FakeOptimizer:
    def __init__(self, lr=0.1):
        self.param_groups = [{"lr": lr, "params": []}]


class CountingScheduler:
    def __init__(self, opt):
        self.opt, self.steps = opt, 0

    def step(self):
        self.steps += 1
        self.opt.param_groups[0]["lr"] = 0.1 * 0.5 ** self.steps


def test_history_rows_are_weighted_means_per_epoch():
    step, batches = fixed_steps([({"loss": 1.0, "kl": 4.0}, 1), ({"loss": 4.0, "kl": 1.0}, 3)])
    h = train_loop(step, batches, 3, FakeOptimizer(), quiet=True)
    assert epoch_lists(h) == 3 and COMMON <= set(h)
    assert h["loss"] == [pytest.approx(13 / 4)] * 3                    # (1 * 1 + 4 * 3) / 4
    assert h["kl"] == [pytest.approx(7 / 4)] * 3
    assert h["lr"] == [0.1] * 3
    assert all(np.diff(h["seconds"]) >= 0) and h["train_seconds"] >= h["seconds"][-1]
    assert h["samples_per_s"] == pytest.approx(12 / h["train_seconds"])
    assert list(h)[0] == "loss"


def test_a_float_loss_end_epoch_entries_and_callback():
    rows = []
    step, batches = fixed_steps([(2.0, 5)])
    h = train_loop(step, batches, 2, FakeOptimizer(), quiet=True, end_epoch=lambda e: {"epoch_no": e + 1},
                   callback=lambda e, row: rows.append((e, dict(row))))
    assert h["loss"] == [2.0, 2.0] and h["epoch_no"] == [1, 2]
    assert [e for e, _ in rows] == [0, 1] and rows[1][1]["seconds"] == h["seconds"][1]


def test_parts_missing_in_some_epochs_are_nan_padded():
    step, batches = fixed_steps([(1.0, 1)])
    h = train_loop(step, batches, 3, FakeOptimizer(), quiet=True,
                   end_epoch=lambda e: {"probe": 7.0} if e == 1 else {})
    assert epoch_lists(h) == 3
    assert math.isnan(h["probe"][0]) and h["probe"][1] == 7.0 and math.isnan(h["probe"][2])


def test_an_epoch_without_batches_has_nan_loss():
    h = train_loop(lambda b: (1.0, 1), lambda e: [], 2, FakeOptimizer(), quiet=True)
    assert epoch_lists(h) == 2 and all(math.isnan(v) for v in h["loss"])


@pytest.mark.parametrize("schedule, per_epoch", [("epoch", 1), ("batch", 4)])
def test_schedule_steps_per_epoch_or_per_batch(schedule, per_epoch):
    opt = FakeOptimizer()
    sched = CountingScheduler(opt)
    step, batches = fixed_steps([(1.0, 1)] * 4)
    h = train_loop(step, batches, 3, opt, sched, schedule=schedule, quiet=True)
    assert sched.steps == 3 * per_epoch
    assert h["lr"] == [pytest.approx(0.1 * 0.5 ** (per_epoch * (e + 1))) for e in range(3)]


def test_a_real_scheduler_and_backward_step_train_a_model():
    npad.manual_seed(0)
    model = Linear(2, 1)
    x = np.random.default_rng(0).standard_normal((16, 2)).astype(np.float32)
    y = x @ np.array([[2.0], [-1.0]], np.float32)
    opt = SGD(model.parameters(), lr=0.1)

    def step(i):
        err = model(Tensor(x[i:i + 8])) - Tensor(y[i:i + 8])
        return backward_step(opt, (err * err).mean()), 8

    h = train_loop(step, lambda e: (0, 8), 30, opt, StepLR(opt, step_size=10, gamma=0.5), modules=[model],
                   quiet=True)
    assert h["loss"][-1] < 0.05 * h["loss"][0]
    assert h["lr"][8] == pytest.approx(0.1) and h["lr"][9] == pytest.approx(0.05) and h["lr"][-1] == pytest.approx(0.0125)
    assert not model.training


def test_backward_step_clips_the_gradient_norm():
    w = npad.nn.Parameter(np.zeros(4, np.float32))
    opt = SGD([w], lr=1.0)
    loss = (w * Tensor(np.full(4, 10.0, np.float32))).sum()          # gradient 10 per entry, norm 20
    assert backward_step(opt, loss, max_norm=2.0) == 0.0
    np.testing.assert_allclose(w.numpy(), -np.ones(4), rtol=1e-5)       # the step: the gradient scaled to norm 2


def test_an_exception_in_a_step_keeps_the_finished_epochs():
    model = Linear(1, 1)
    history = {}
    calls = []

    def step(b):
        calls.append(b)
        if len(calls) == 5:                                          # epoch 2 (0-based 1), its third batch
            raise KeyboardInterrupt
        return {"loss": 1.0, "part": 2.0}, 1

    with pytest.raises(KeyboardInterrupt):
        train_loop(step, lambda e: range(3), 4, FakeOptimizer(), modules=[model], quiet=True, history=history)
    assert epoch_lists(history) == 1 and history["loss"] == [1.0] and history["part"] == [2.0]
    assert history["train_seconds"] >= history["seconds"][0]
    assert not model.training


def test_bad_schedule_is_named():
    with pytest.raises(ValueError, match="schedule must be 'epoch' or 'batch'"):
        train_loop(lambda b: (0.0, 1), lambda e: [], 1, FakeOptimizer(), schedule="step")


# ---- the log line in batch logs ------------------------------------------------------------------
def test_plain_log_lines_when_output_is_not_a_terminal(monkeypatch, capsys):
    monkeypatch.delenv("NPAD_QUIET", raising=False)                    # pytest captures: not a terminal
    step, batches = fixed_steps([({"loss": 0.5, "kl": 0.25}, 2)])
    train_loop(step, batches, 3, FakeOptimizer(), desc="toy epochs", log_every=0.0)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all("\r" not in line for line in lines)
    assert lines[0].startswith("toy epochs 1/3: loss 0.5, kl 0.25, lr 1.00e-01 (")
    assert lines[-1].startswith("toy epochs 3/3:") and lines[-1].endswith(" s)")


def test_plain_log_lines_keep_first_and_last_within_the_interval(monkeypatch, capsys):
    monkeypatch.delenv("NPAD_QUIET", raising=False)
    step, batches = fixed_steps([(1.0, 1)])
    train_loop(step, batches, 50, FakeOptimizer(), desc="fast", log_every=3600.0)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["fast 1/50", "fast 50/50"]


@pytest.mark.parametrize("quiet, env", [(True, None), (None, "1")])
def test_quiet_silences_the_log_lines(monkeypatch, capsys, quiet, env):
    if env is None:
        monkeypatch.delenv("NPAD_QUIET", raising=False)
    else:
        monkeypatch.setenv("NPAD_QUIET", env)
    step, batches = fixed_steps([(1.0, 1)])
    train_loop(step, batches, 3, FakeOptimizer(), quiet=quiet, log_every=0.0)
    assert capsys.readouterr().err == ""


def test_a_bar_forced_on_replaces_the_log_lines(monkeypatch, capsys):
    monkeypatch.setenv("NPAD_QUIET", "0")
    assert not P.plain_log()
    step, batches = fixed_steps([(1.0, 1)])
    train_loop(step, batches, 3, FakeOptimizer(), desc="barred", log_every=0.0)
    err = capsys.readouterr().err
    assert "3/3" in err and "barred 1/3:" not in err


# ---- every method trains through it ----------------------------------------------------------------
def _cflow(tiny_mvtec):
    from npad.data import MVTecDataset
    from npad.methods.cflow import CFlow
    m = CFlow(quick=True, input_size=64, n_blocks=1, meta_epochs=2, batch_size=10)
    return m.fit(MVTecDataset(tiny_mvtec, split="train"), quiet=True).history, 2


def _adtr(tiny_mvtec):
    from npad.methods.adtr import ADTR
    images = np.random.default_rng(0).random((8, 3, 32, 32)).astype(np.float32)
    m = ADTR(ablation="pixels", input_size=32, hidden=8, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
             dim_feedforward=16, epochs=2, plus=True, plus_epochs=1)
    h = m.fit(images, quiet=True).history
    assert {f"plus_{k}" for k in COMMON} <= set(h) and len(h["plus_loss"]) == 1
    return {k: v for k, v in h.items() if not k.startswith("plus_")}, 2


def _favae(tiny_mvtec):
    from npad.data.toy import ToyDataset
    from npad.methods.favae import FAVAE
    m = FAVAE(features="none", mode="object", input_size=16, width=0.25, latent=4, epochs=2, samples_per_epoch=8,
              batch_size=4, output="linear")
    h = m.fit(ToyDataset(16), quiet=True).history
    assert h["gamma"][-1] == pytest.approx(m.gamma) and {"pixel", "kl"} <= set(h)
    return h, 2


def _vae_attention(tiny_mvtec):
    from npad.methods.vae_attention import VAEAttention
    images = np.random.default_rng(0).random((4, 3, 16, 16)).astype(np.float32)
    m = VAEAttention(arch="conv", input_size=16, width=4, hidden=16, latent=4, epochs=2, batch_size=4)
    return m.fit(images, quiet=True).history, 2


def _factorvae(tiny_mvtec):
    from npad.data.dsprites import DSprites
    from npad.methods.factorvae import Discriminator, DSpritesVAE, fit_factorvae
    npad.manual_seed(0)
    h = fit_factorvae(DSpritesVAE(latent=3, width=0.125), Discriminator(3, hidden=8, layers=1), DSprites(),
                      iterations=5, batch_size=4, log_every=3, quiet=True)
    assert h["iteration"] == [3, 5]
    return h, 2


@pytest.mark.filterwarnings("ignore:.*(threshold rests on only|too few to keep some out)")  # tiny fits: calibrated on few images
@pytest.mark.parametrize("fit", [_cflow, _adtr, _favae, _vae_attention, _factorvae], ids=lambda f: f.__name__[1:])
def test_every_method_keeps_the_same_history(fit, tiny_mvtec):
    history, epochs = fit(tiny_mvtec)
    assert COMMON <= set(history)
    assert epoch_lists(history) == epochs
    assert all(np.isfinite(history["loss"])) and history["train_seconds"] > 0


def test_an_exception_inside_a_method_step_keeps_its_history(monkeypatch):
    from npad.methods import adtr as adtr_module
    calls = []
    real = adtr_module.adtr_normal_loss

    def failing(f, f_hat):
        calls.append(1)
        if len(calls) == 3:                   # one batch per epoch: fails in the third epoch
            raise RuntimeError("disk full")
        return real(f, f_hat)

    monkeypatch.setattr(adtr_module, "adtr_normal_loss", failing)
    images = np.random.default_rng(0).random((4, 3, 32, 32)).astype(np.float32)
    m = adtr_module.ADTR(ablation="pixels", input_size=32, hidden=8, num_heads=2, num_encoder_layers=1,
                         num_decoder_layers=1, dim_feedforward=16, epochs=5, batch_size=4)
    with pytest.raises(RuntimeError, match="disk full"):
        m.fit(images, quiet=True)
    assert epoch_lists(m.history) == 2 and not m.net.training
