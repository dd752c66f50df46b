"""The forms of pooling and resampling the ONNX importer needs: explicit per-side pads, "same",
and resample (one resize axis as K weighted taps): float64 gradient checks and brute-force references."""
import numpy
import pytest

import npad
import npad.functional as F
from npad import Tensor
from npad.testing import gradcheck

rng = numpy.random.default_rng(3)
PADS = [((0, 2), (1, 0)), (1, 0, 2, 1), "same", "valid"]


def _distinct(*shape):
    """Values without ties (max pooling is not differentiable at ties)."""
    return rng.permutation(numpy.prod(shape)).reshape(shape) * 0.1 + rng.uniform(0, 0.01, shape)


def _padded(x, padding, k, s, fill):
    """x padded by hand: (top, bottom, left, right) from the forms conv2d takes."""
    from npad.functional.conv import _conv_padding
    t, b, l, r = _conv_padding(padding, x.shape[2:], k, s, (1, 1))
    return numpy.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=fill), (t, b, l, r)


def _windows(xp, k, s, out):
    """B x C x Ho x Wo x (k k) array of the windows of xp (the brute-force pooling)."""
    return numpy.stack([xp[:, :, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]].reshape(xp.shape[:2] + (-1,))
                        for i in range(out[0]) for j in range(out[1])], 2).reshape(xp.shape[:2] + out + (-1,))


@pytest.mark.parametrize("padding", PADS, ids=str)
@pytest.mark.parametrize("ceil", [False, True])
def test_pools_with_explicit_pads_match_brute_force(padding, ceil):
    x = _distinct(2, 3, 9, 8)
    k, s = (3, 3), (2, 2)
    ymax = F.max_pool2d(Tensor(x), k, s, padding, ceil_mode=ceil).numpy()
    yavg = F.avg_pool2d(Tensor(x), k, s, padding, ceil_mode=ceil, count_include_pad=False).numpy()
    out = ymax.shape[2:]
    xpad, _ = _padded(x, padding, k, s, numpy.nan)
    grow = [max((o - 1) * st + kk - n, 0) for o, st, kk, n in zip(out, s, k, xpad.shape[2:])]   # ceil mode
    xpad = numpy.pad(xpad, ((0, 0), (0, 0), (0, grow[0]), (0, grow[1])), constant_values=numpy.nan)
    win = _windows(xpad, k, s, out)
    numpy.testing.assert_allclose(ymax, numpy.nanmax(win, -1))
    numpy.testing.assert_allclose(yavg, numpy.nanmean(win, -1), rtol=1e-12)


@pytest.mark.parametrize("padding", PADS, ids=str)
def test_pools_with_explicit_pads_gradcheck(xp, padding):
    x = xp.asarray(_distinct(2, 2, 7, 6))
    gradcheck(lambda x: F.max_pool2d(x, 3, 2, padding, ceil_mode=True), x)
    gradcheck(lambda x: F.avg_pool2d(x, 3, 2, padding, ceil_mode=True, count_include_pad=False), x)


def test_pool_padding_errors_and_int_input():
    with pytest.raises(ValueError, match="at most half the kernel"):
        F.max_pool2d(Tensor(numpy.zeros((1, 1, 5, 5))), 3, 1, 2)
    x = numpy.arange(2 * 3 * 5 * 5).reshape(2, 3, 5, 5)
    y = F.max_pool2d(Tensor(x), 2, 2, (0, 1, 0, 1)).numpy()               # the padding never wins
    last = [1, 3, 4]                                                        # the last row/column of each window
    assert y.dtype == x.dtype and (y == x[:, :, last][:, :, :, last]).all()


def test_max_pool_keeps_channels_last_memory():
    x = numpy.ascontiguousarray(_distinct(2, 5, 6, 7).transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    with npad.no_grad():
        y = F.max_pool2d(Tensor(x), 3, 2, 1).numpy()
    assert y.transpose(0, 2, 3, 1).flags.c_contiguous
    numpy.testing.assert_array_equal(y, F.max_pool2d(Tensor(numpy.ascontiguousarray(x)), 3, 2, 1).numpy())


@pytest.mark.parametrize("taps", [1, 2, 4])
def test_resample_matches_weighted_gather_and_gradcheck(xp, taps):
    x = rng.standard_normal((2, 3, 5, 4))
    index = rng.integers(0, 5, (7, taps))
    w = rng.random((7, taps))
    w /= w.sum(1, keepdims=True)
    weight = None if taps == 1 else w
    want = sum((1 if weight is None else weight[:, k][None, None, :, None]) * x[:, :, index[:, k]]
               for k in range(taps))
    numpy.testing.assert_allclose(F.resample(Tensor(x), 2, index, weight).numpy(), want, rtol=1e-12)
    gradcheck(lambda x: F.resample(x, -2, index, weight), xp.asarray(x))
