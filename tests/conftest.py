"""Shared fixtures: every backend test runs on NumPy, and on CuPy when it can be used.

The CI runs the conv and method tests a second time with NPAD_REFERENCE=1 (.ci/run): the reference
ops alone, as if npad/kernels/ were deleted; and the whole suite a third time with NPAD_TEST_XP=strict,
every tensor on the strict CuPy stand-in (below). A test about CPU-only machinery (the NumPy kernels of
npad/kernels/cpu.py, npad's threads and BLAS control, the ONNX batch split, NumPy's view of a tensor)
carries ``@pytest.mark.cpu``: it runs on the CPU under that switch too, and with NPAD_DEVICE=cuda on a GPU
(benchmarks/gpu_check.py). Subprocesses a test starts run on the CPU under the switch: the stand-in lives in
the test process."""
import os

import numpy as np
import pytest
from PIL import Image

import npad
from npad.backend import cupy_available

# The suite runs as the examples and the CLI do, with OpenBLAS tuned for npad's threads: left at its
# default, each idle BLAS worker spins for 0.1 s after every call and takes the cores from npad's threads.
# Without the CoreWatch, which would make thread counts depend on the machine's load (test_threads.py
# tests it on its own).
npad.tune_cpu(watch_cores=False)

# NPAD_TEST_XP=strict: the whole suite with every tensor on npad.strict_cupy, a CuPy stand-in that
# refuses NumPy-only paths as CuPy would on a GPU (see npad/strict_cupy.py).
_XP = os.environ.get("NPAD_TEST_XP", "numpy")
if _XP not in ("numpy", "strict"):
    raise ValueError(f"NPAD_TEST_XP={_XP!r}: use 'numpy' (the default) or 'strict'")
if _XP == "strict":
    from npad.testing import use_strict_cupy
    _STRICT = use_strict_cupy()
    npad.set_device("cuda")
DEVICE = npad.get_device()      # where each test starts: "cuda" under the switch or with NPAD_DEVICE=cuda
BACKENDS = ["strict"] if _XP == "strict" else ["numpy"] + (["cupy"] if cupy_available() else [])


def _on_cpu(request):
    return request.node.get_closest_marker("cpu") is not None


@pytest.fixture(params=BACKENDS)
def xp(request):
    """The array module under test: numpy, and cupy when a GPU is there (the strict stand-in alone under
    NPAD_TEST_XP=strict); numpy for a test marked cpu."""
    if _on_cpu(request):
        if request.param == "cupy":
            pytest.skip("a test of CPU-only machinery")
        return np
    if request.param == "cupy":
        import cupy
        return cupy
    return _STRICT if request.param == "strict" else np


def pytest_configure(config):
    config.addinivalue_line("markers", "cpu: about CPU-only machinery; runs on the CPU whatever the default device")


@pytest.fixture(autouse=True)
def _device(request, monkeypatch):
    """Each test starts on the run's device; one marked cpu on the CPU, its subprocesses too."""
    if _on_cpu(request):
        monkeypatch.setenv("NPAD_DEVICE", "cpu")
    npad.set_device("cpu" if _on_cpu(request) else DEVICE)
    yield
    npad.set_device(DEVICE)     # module fixtures made before the next test starts: on the run's device


@pytest.fixture(autouse=True)
def _seed():
    npad.manual_seed(0)
    yield


@pytest.fixture
def stand_in(monkeypatch):
    """The strict CuPy stand-in as device "cuda" for one test, in the plain run too (a real CuPy, the
    default device and cupyx come back after it); returns the stand-in module."""
    import sys
    from npad import backend
    from npad.testing import use_strict_cupy
    for name in ("_cupy", "_cupy_error", "_device"):
        monkeypatch.setattr(backend, name, getattr(backend, name))
    for name in ("cupyx", "cupyx.scipy", "cupyx.scipy.special", "cupyx.scipy.ndimage"):
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name))
    return use_strict_cupy()


@pytest.fixture(autouse=True)
def _no_core_watch():
    """The command line's tune_cpu() starts a CoreWatch: stopped after the test, so that thread counts in
    later tests do not depend on the machine's load."""
    yield
    if npad._threads._watch is not None:
        npad.tune_cpu(watch_cores=False)


SIZE = 96


def _texture(rng):
    """Smooth stripes with a random phase, angle and brightness: normal images vary."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    a = rng.uniform(0, np.pi)
    base = 0.5 + 0.2 * np.sin(2 * np.pi * 6 * (np.cos(a) * xx + np.sin(a) * yy) + rng.uniform(0, 6.3))
    img = np.stack([base * c for c in rng.uniform(0.7, 1.0, 3)]) + rng.normal(0, 0.02, (3, SIZE, SIZE))
    return np.clip(img, 0, 1)


def _write(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = (np.clip(arr, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(a.transpose(1, 2, 0) if a.ndim == 3 else a).save(path)


@pytest.fixture(scope="session")
def tiny_mvtec(tmp_path_factory):
    """A 96 px MVTec-layout category made here: striped textures, red squares as defects."""
    root = tmp_path_factory.mktemp("tiny_mvtec") / "stripes"
    rng = np.random.default_rng(0)
    for i in range(10):
        _write(root / "train" / "good" / f"{i:03d}.png", _texture(rng))
    for i in range(4):
        _write(root / "test" / "good" / f"{i:03d}.png", _texture(rng))
    for i in range(4):
        img, mask = _texture(rng), np.zeros((SIZE, SIZE))
        y, x = rng.integers(16, SIZE - 36, 2)
        img[:, y:y + 20, x:x + 20] = [[[0.9]], [[0.1]], [[0.1]]]      # a red square
        mask[y:y + 20, x:x + 20] = 1
        _write(root / "test" / "square" / f"{i:03d}.png", img)
        _write(root / "ground_truth" / "square" / f"{i:03d}_mask.png", mask)
    return root

