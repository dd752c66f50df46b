"""The graph engine: accumulation, topological order, freeing, no_grad, errors; in-place ops and
their version check; conversions."""
import sys

import numpy as np
import pytest

import npad
from npad.tensor import Function


def test_default_dtypes():
    assert npad.tensor([1.0, 2.0]).dtype == np.float32
    assert npad.tensor(np.zeros(3)).dtype == np.float64          # arrays keep their dtype
    assert npad.tensor([1, 2]).dtype.kind == "i"
    assert npad.tensor([1.0], dtype="float64").dtype == np.float64
    x = npad.tensor([1.0, 2.0])
    assert (x * 2.5).dtype == np.float32                           # Python numbers do not upcast
    assert npad.randn(2, 3).dtype == np.float32


def test_diamond_graph_accumulates_once_per_path():
    x = npad.tensor([2.0], requires_grad=True, dtype="float64")
    a = x * 3
    y = a * a + a            # dy/dx = (2a + 1) * 3 = 39 at x = 2
    y.sum().backward()
    assert x.grad.numpy()[0] == pytest.approx(39.0)


def test_grad_accumulates_across_backward_calls():
    x = npad.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2 + 3, 4 + 3])


def test_graph_freed_unless_retained():
    x = npad.tensor([1.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0])
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_no_grad_records_nothing():
    x = npad.tensor([1.0], requires_grad=True)
    with npad.no_grad():
        y = x * 2
    assert not y.requires_grad and y._creator is None
    with npad.no_grad():
        with npad.enable_grad():
            z = x * 2
    assert z.requires_grad

    @npad.no_grad()
    def f(t):
        return t * 2
    assert not f(x).requires_grad


def test_frozen_inputs_get_no_gradient_work():
    calls = []

    class Spy(Function):
        def forward(self, a, b):
            return a * b

        def backward(self, g):
            calls.append(self.needs_input_grad)
            return (g if self.needs_input_grad[0] else None), (g if self.needs_input_grad[1] else None)

    w = npad.tensor([1.0], requires_grad=True)
    frozen = npad.tensor([2.0])
    Spy.apply(w, frozen).sum().backward()
    assert calls == [(True, False)] and frozen.grad is None
    out = Spy.apply(frozen, frozen)           # nothing requires grad: no graph at all
    assert out._creator is None


def test_retain_grad_and_detach():
    x = npad.tensor([1.0, -2.0], requires_grad=True)
    h = (x * 3).retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * h.numpy())
    d = h.detach()
    assert not d.requires_grad and d._creator is None


def test_backward_errors():
    x = npad.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"scalar output, got shape \(2,\)"):
        (x * 2).backward()
    (x * 2).backward(npad.tensor([1.0, 1.0]))
    with pytest.raises(RuntimeError, match="does not require grad"):
        npad.tensor([1.0]).backward()
    with pytest.raises(TypeError, match="floating"):
        npad.tensor([1, 2], requires_grad=True)


def test_mixing_devices_is_an_error():
    class FakeCupy(np.ndarray):
        pass
    FakeCupy.__module__ = "cupy._core.core"
    a = npad.tensor([1.0])
    b = npad.Tensor._make(np.ones(1).view(FakeCupy), False, None, 0)
    with pytest.raises(TypeError, match="cannot mix NumPy"):
        a + b


def test_cupy_requested_without_cupy_says_why(monkeypatch):
    from npad import backend
    if backend.cupy_available():
        pytest.skip("CuPy is usable here")
    with pytest.raises(RuntimeError, match="CuPy cannot be used"):
        npad.set_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        npad.set_device("tpu")
    monkeypatch.setattr(backend, "_device", None)
    monkeypatch.setenv("NPAD_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="CuPy cannot be used"):
        backend.get_device()
    monkeypatch.setattr(backend, "_device", None)
    monkeypatch.setenv("NPAD_DEVICE", "cpu")
    assert backend.get_device() == "cpu"


def test_to_device_roundtrip(xp):
    x = npad.tensor(np.arange(3.0), requires_grad=True)
    y = x.to("cuda" if xp.__name__ == "cupy" else "cpu") * 2
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2, 2, 2])
    assert x.double().dtype == np.float64


def test_long_chain_does_not_recurse():
    x = npad.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1e-3
    y.sum().backward()
    assert x.grad.item() == 1.0


def test_comparisons_and_setitem():
    x = npad.tensor([1.0, 2.0, 3.0])
    assert (x > 1.5).numpy().tolist() == [False, True, True]
    x[0] = 5.0
    assert x.numpy()[0] == 5.0
    p = npad.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="in-place"):
        p[0] = 2.0


def test_inplace_outside_a_graph_writes_into_the_array():
    p = npad.tensor([1.0, -2.0], requires_grad=True)
    (p * p).sum().backward()
    data = p.data
    with npad.no_grad():
        p -= 0.25 * p.grad                     # the habit that used to rebind the name only
    assert p.data is data and p.numpy().tolist() == [0.5, -1.0] and p.is_leaf and p.requires_grad
    x = npad.zeros(2, 3)
    row = x[1]
    row.fill_(2.0)                             # a view shares x's memory, as in PyTorch
    x.add_(1, alpha=3).mul_(npad.tensor([1.0, 2.0, 3.0])).div_(2).clamp_(max=6.0)
    np.testing.assert_allclose(x.numpy(), [[1.5, 3, 4.5], [2.5, 5, 6]])
    x.copy_(np.arange(3.0))                    # broadcast, cast to x's dtype
    assert x.dtype == np.float32 and x.numpy().tolist() == [[0, 1, 2]] * 2
    assert x.zero_().numpy().sum() == 0


def test_inplace_errors_name_the_problem():
    p = npad.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"add_: a leaf tensor that requires grad \(shape \(1,\)\)"):
        p += 1
    with pytest.raises(RuntimeError, match="__setitem__: a leaf tensor"):
        p[0] = 2.0
    with pytest.raises(RuntimeError, match=r"result type float64 cannot be cast in place to int64"):
        npad.tensor([1, 2]).add_(0.5)
    with pytest.raises(RuntimeError, match=r"shape \(3, 2\), which does not fit in place into shape \(2,\)"):
        npad.ones(2).add_(npad.ones(3, 2))


def test_version_check_refuses_a_stale_graph():
    x, w = npad.tensor([1.0, 3.0]), npad.tensor([1.0, 1.0], requires_grad=True)
    y = (x * w).sum()
    x.mul_(2)                                   # Mul saved x for dw
    with pytest.raises(RuntimeError, match=r"Mul: its input 0 \(shape \(2,\)\) was modified by an in-place"):
        y.backward()
    h = w.exp()                                 # Exp keeps its output for backward
    with npad.no_grad():
        h.add_(1)
    with pytest.raises(RuntimeError, match="Exp: its output was modified"):
        h.sum().backward()
    opt = npad.optim.SGD([w], lr=0.1)
    loss = (w * w).sum()
    loss.backward(retain_graph=True)
    opt.step()                                  # the optimizer changes w in place
    with pytest.raises(RuntimeError, match="modified by an in-place"):
        loss.backward()


def test_inplace_inside_a_graph_is_recorded():
    x = npad.tensor([1.0, 2.0, 3.0], requires_grad=True, dtype="float64")
    y = x.exp()
    y += x                                      # y takes a new array: exp's saved output stays intact
    y[0] = x[1] * 10
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0, 10 + np.exp(2) + 1, np.exp(3) + 1])
    buf = npad.zeros(2, dtype=np.float64)       # a constant that an in-place op joins to the graph
    buf[:] = x[:2] * 2
    assert buf.requires_grad and not buf.is_leaf


def test_retain_graph_flag_follows_each_backward():
    seen = []

    class Spy(Function):
        def forward(self, a):
            return a * 2

        def backward(self, g):
            seen.append(self.retain_graph)
            return g * 2

    x = npad.tensor([1.0], requires_grad=True)
    y = Spy.apply(x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert seen == [True, False]


def test_numpy_sees_the_data(monkeypatch):
    t = npad.tensor([[1.0, 2.0], [3.0, 4.0]])
    a = np.asarray(t)
    assert a is t.data and np.concatenate([t, t]).shape == (4, 2) and np.exp(t)[0, 0] == pytest.approx(np.e)
    assert np.array(t, dtype=np.float64).dtype == np.float64
    monkeypatch.setattr(sys.modules["npad.tensor"], "is_cupy_array", lambda a: True)  # as a CUDA tensor
    with pytest.raises(TypeError, match=r"CUDA tensor to a NumPy array implicitly; call \.numpy\(\)"):
        np.asarray(t)


def test_to_accepts_torch_style_arguments():
    x = npad.tensor([1.5, -2.5])
    assert x.to(npad.float64).dtype == np.float64 and x.to("cpu") is x
    assert x.to(npad.tensor([1], dtype=npad.int32)).numpy().tolist() == [1, -2]
    assert x.long().dtype == npad.long and x.bool().dtype == npad.bool and x.half().dtype == npad.half
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        x.to("tpu")
    m = npad.nn.Linear(2, 1).to(npad.float64)
    assert m.weight.dtype == np.float64


def test_max_with_dim_returns_values_and_indices():
    x = npad.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])
    values, indices = x.max(dim=1)
    assert values.numpy().tolist() == [3, 2] and indices.numpy().tolist() == [1, 0]
    assert x.max(1)[0].numpy().tolist() == [3, 2]            # [0] is the values, not row 0
    assert x.min(0, keepdim=True).indices.shape == (1, 3)
    assert npad.max(x).item() == 3 and x.argmax(1, keepdim=True).shape == (2, 1)
