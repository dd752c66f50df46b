"""The strict CuPy stand-in refuses what CuPy refuses and accepts what CuPy accepts."""
import copy
import pickle

import numpy as np
import pytest

import npad
from npad import backend, strict_cupy as cp
from npad._cupy_names import NAMESPACE, NDARRAY
from npad.testing import use_strict_cupy


@pytest.fixture
def a():
    return cp.asarray(np.arange(6.0).reshape(2, 3))


def test_numpy_refuses_implicit_conversion(a):
    for convert in (np.asarray, np.array, np.float32, lambda x: np.testing.assert_allclose(x, 0)):
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
            convert(a)


def test_to_cpu_get_and_asnumpy_are_the_ways_back(a):
    host = backend.to_cpu(a)
    assert type(host) is np.ndarray and backend.is_cupy_array(a) and not backend.is_cupy_array(host)
    np.testing.assert_array_equal(host, np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(a.get(), host)
    np.testing.assert_array_equal(cp.asnumpy(a), host)
    host[0, 0] = 7                      # a copy: the device array keeps its value
    assert float(a[0, 0]) == 0


def test_host_to_device_copies(a):
    h = np.zeros(3)
    d = cp.asarray(h)
    h[0] = 1
    assert float(d[0]) == 0
    assert cp.asarray(a) is a
    with pytest.raises(ValueError):
        cp.asarray(h, copy=False)


@pytest.mark.parametrize("mix", [
    lambda a, h: a + h, lambda a, h: h + a, lambda a, h: a * h, lambda a, h: h - a, lambda a, h: a @ h.T,
    lambda a, h: cp.maximum(a, h), lambda a, h: np.maximum(a, h), lambda a, h: cp.where(a > 0, a, h),
    lambda a, h: cp.concatenate([a, h]), lambda a, h: np.concatenate([a, h]), lambda a, h: cp.stack([a, h]),
    lambda a, h: cp.matmul(a, h.T), lambda a, h: a.dot(h.T), lambda a, h: cp.sum(h),
    lambda a, h: cp.exp(h), lambda a, h: a < h, lambda a, h: a.__iadd__(h)])
def test_mixing_host_and_device_arrays_raises(a, mix):
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        mix(a, np.ones((2, 3)))


def test_lists_are_refused_in_ufuncs_as_in_cupy(a):
    with pytest.raises(TypeError, match="Unsupported type <class 'list'>"):
        cp.exp([1.0, 2.0])
    with pytest.raises(TypeError):
        a + [1.0, 2.0, 3.0]


def test_scalars_mix_freely(a):
    for s in (2, 2.5, True, np.float32(2), np.int64(3)):
        assert type(a * s) is cp.ndarray and type(s * a) is cp.ndarray and type(a - s) is cp.ndarray
    assert type(np.exp(a)) is cp.ndarray        # NumPy's ufunc hands over to the stand-in
    assert bool((np.array(2.0) < a)[1, 0])      # a 0-d host array compares by value, as in CuPy


def test_functions_that_convert_their_operands_take_host_arrays(a):
    h = np.ones((2, 3))
    np.testing.assert_allclose(cp.einsum("ij,ij->i", a, h).get(), [3, 12])
    assert cp.vstack([a, h]).shape == (4, 3)
    assert bool(cp.isclose(a, h)[0, 1])
    assert type(cp.zeros_like(h)) is cp.ndarray
    assert cp.result_type(np.ones(2, np.float32), 1.0) == np.float32
    parts = cp.split(a, np.array([1]), axis=1)      # split points are read on the host
    assert [p.shape for p in parts] == [(2, 1), (2, 2)]
    assert a[np.array([1, 0])].shape == (2, 3)      # host index arrays are copied to the device


def test_setitem_with_a_host_array_is_refused_as_cupy_fill(a):
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
        a[...] = np.ones((2, 3))
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
        a[0] = np.ones(3)
    a[0] = 5.0
    a[1] = np.float64(6.0)
    a[:, 0] = cp.asarray([8.0, 9.0])
    a[np.array([0])] = np.full((1, 3), 4.0)          # advanced index: CuPy copies the values
    np.testing.assert_array_equal(a.get(), [[4, 4, 4], [9, 6, 6]])
    with pytest.raises(ValueError, match="non-scalar"):
        a.fill(np.ones(3))


def test_reductions_and_indexing_give_0d_arrays(a):
    for r in (a.sum(), cp.sum(a), np.sum(a), a.max(), a[1, 2], cp.linalg.norm(a), next(iter(a[0]))):
        assert type(r) is cp.ndarray and r.shape == ()
    assert float(a.sum()) == 15 and int(a[1, 2]) == 5 and a[1, 2].item() == 5.0
    assert f"{a.mean():.2f}" == "2.50"
    with pytest.raises(TypeError):
        [0, 1, 2][a[0, 1].astype(np.int64)]    # CuPy arrays have no __index__


def test_names_cupy_lacks_raise_attribute_error():
    for name in ("trapz_fake", "float128", "matrix", "asmatrix"):
        assert name not in NAMESPACE["cupy"]
        with pytest.raises(AttributeError, match="has no attribute"):
            getattr(cp, name)
    with pytest.raises(AttributeError):
        cp.linalg.matrix_exp_fake
    with pytest.raises(AttributeError):
        cp.ones(2).resize        # numpy.ndarray.resize: not a cupy.ndarray method
    assert "resize" not in NDARRAY


def test_namespace_is_cupys():
    public = {n for n in dir(cp) if not n.startswith("_")}
    assert public == set(NAMESPACE["cupy"])
    for name in ("einsum", "asarray", "get_array_module", "random", "linalg", "fft", "cuda", "float32"):
        assert hasattr(cp, name)
    assert cp.lib.stride_tricks.as_strided(cp.arange(4.0), (2,), (16,)).get().tolist() == [0.0, 2.0]


def test_arguments_outside_cupys_signatures_raise():
    with pytest.raises(TypeError, match="unexpected keyword argument 'like'"):
        cp.zeros(3, like=None)
    with pytest.raises(TypeError, match="unexpected keyword argument 'where'"):
        cp.ones(3).sum(where=True)


def test_cuda_kernels_are_not_emulated():
    for cls in ("RawKernel", "ElementwiseKernel", "ReductionKernel", "RawModule"):
        with pytest.raises(NotImplementedError, match="does not emulate"):
            getattr(cp, cls)("code", "name")


def test_numpy_functions_dispatch_like_cupy(a):
    assert type(np.concatenate([a, a])) is cp.ndarray
    assert type(np.mean(a, axis=0)) is cp.ndarray
    with pytest.raises(TypeError, match="no implementation found"):
        np.nanpercentile(a, 50)       # not a CuPy function


def test_random_pickle_copy_and_module(a):
    cp.random.seed(1)
    x = cp.random.standard_normal((2, 2), dtype=np.float32)
    assert type(x) is cp.ndarray and x.dtype == np.float32
    for b in (pickle.loads(pickle.dumps(a)), copy.deepcopy(a), copy.copy(a)):
        assert type(b) is cp.ndarray and b is not a
        np.testing.assert_array_equal(b.get(), a.get())
    assert cp.get_array_module(a) is cp and cp.get_array_module(np.ones(1)) is np


def test_use_strict_cupy_makes_cuda_the_stand_in(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", backend._cupy)
    monkeypatch.setattr(backend, "_cupy_error", backend._cupy_error)
    monkeypatch.setattr(backend, "_device", backend._device)
    import sys
    for name in ("cupyx", "cupyx.scipy", "cupyx.scipy.special", "cupyx.scipy.ndimage"):
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name))
    assert use_strict_cupy() is cp and backend.require_cupy() is cp
    npad.set_device("cuda")
    t = npad.randn(2, 3)
    assert t.device == "cuda" and backend.get_array_module(t) is cp
    assert npad.get_array_module(t.data) is cp
    y = (t * 2 + 1).sum()
    y2 = npad.functional.erf(npad.tensor(np.ones(3), device="cuda"))   # npad imports cupyx.scipy.special on CuPy
    assert type(y.data) is cp.ndarray and type(y2.data) is cp.ndarray
    np.testing.assert_allclose(t.numpy().sum() * 2 + 6, float(y.item()), rtol=1e-6)
