"""Shared fixtures: every backend test runs on NumPy, and on CuPy when it can be used."""
import numpy
import pytest

import npad
from npad.backend import cupy_available

BACKENDS = ["numpy"] + (["cupy"] if cupy_available() else [])


@pytest.fixture(params=BACKENDS)
def xp(request):
    """The array module under test (numpy always, cupy when a GPU is there)."""
    if request.param == "cupy":
        import cupy
        return cupy
    return numpy


@pytest.fixture(autouse=True)
def _seed():
    npad.manual_seed(0)
    yield
