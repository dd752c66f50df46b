"""The graph engine: accumulation, topological order, freeing, no_grad, errors."""
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
