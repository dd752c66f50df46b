"""npad.maps: upsample equals F.interpolate (bilinear), whose weights it applies as two matrix products."""
import numpy
import pytest

import npad
import npad.functional as F
from npad.maps import resize_matrix, upsample


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("shape,size", [((3, 8, 6), 20), ((2, 16, 16), (256, 100)), ((1, 9, 7), (4, 3)),
                                        ((2, 1, 5), (3, 9))], ids=["up", "wide", "down", "one-row"])
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_upsample_equals_interpolate(shape, size, align_corners, dtype):
    maps = numpy.random.default_rng(0).standard_normal(shape).astype(dtype)
    with npad.no_grad():
        ref = F.interpolate(npad.tensor(maps[:, None]), size=size, mode="bilinear", align_corners=align_corners)
    got = upsample(maps, size, align_corners=align_corners)
    assert got.dtype == dtype and got.shape == ref.shape[:1] + ref.shape[2:]
    numpy.testing.assert_allclose(got, ref.numpy()[:, 0], rtol=1e-5 if dtype == numpy.float32 else 1e-12, atol=1e-6)


def test_resize_matrix_rows_are_interpolation_weights():
    m = resize_matrix(4, 7, True)
    numpy.testing.assert_allclose(m.sum(axis=1), 1.0)
    numpy.testing.assert_allclose(m @ numpy.arange(4.0), numpy.linspace(0, 3, 7))     # linear data stays linear
    same = numpy.ones((2, 5, 5))
    assert upsample(same, 5) is same and upsample(same, (5, 5)) is same           # already that size: no copy
