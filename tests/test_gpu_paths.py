"""The paths a GPU takes, checked on the strict CuPy stand-in (npad/strict_cupy.py) in the plain run too:
public entry points take device arrays and keep results on the device they came from, and the
CPU-only speed work (the kernels of npad/kernels/cpu.py, npad's threads, OpenBLAS control, the ONNX
importer's in-place and batch-split runs) is never taken for device arrays."""
import sys

import numpy as np
import pytest

import npad
import npad.functional as F
from npad import _threads, backend, maps, viz
from npad.backend import is_cupy_array, to_cpu
from npad.data import ArrayDataset, MVTecDataset
from npad.onnx import fast

rng = np.random.default_rng(0)


def _patch_everywhere(monkeypatch, original, replacement):
    """Replace ``original`` in every npad module that imported it by name."""
    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith("npad") and vars(mod).get(original.__name__) is original:
            monkeypatch.setattr(mod, original.__name__, replacement)


@pytest.fixture
def cpu_work(monkeypatch):
    """Counts of CPU-only work: a fast conv kernel chosen, the flow kernel chosen, parallel_over on NumPy, blas_threads entered,
    an ONNX op run in place (fast.call), a batch split run (fast.run_split)."""
    from npad.functional import conv
    counts = dict.fromkeys(("kernel", "flow", "parallel_over", "blas_threads", "inplace", "split"), 0)

    def counted(key, fn, hit=lambda result, *args, **kwargs: result is not None):
        def wrapper(*args, **kwargs):
            result = fn(*args, **kwargs)
            counts[key] += bool(hit(result, *args, **kwargs))
            return result
        return wrapper
    monkeypatch.setattr(conv, "conv2d_kernel", counted("kernel", conv.conv2d_kernel))
    from npad.methods import cflow
    monkeypatch.setattr(cflow, "flow_kernel", counted("flow", cflow.flow_kernel))

    def on_numpy(result, n, fn, *rest, **kwargs):                          # parallel_over(n, fn, xp=numpy, ...)
        return kwargs.get("xp", rest[0] if rest else np) is np
    _patch_everywhere(monkeypatch, _threads.parallel_over, counted("parallel_over", _threads.parallel_over, on_numpy))
    _patch_everywhere(monkeypatch, _threads.blas_threads, counted(
        "blas_threads", _threads.blas_threads, lambda *a, **k: True))
    # a joined Conv + activation step always answers (on CuPy through the op table): not counted
    monkeypatch.setattr(fast, "call", counted("inplace", fast.call, lambda result, step, *rest: result is not None
                                              and fast.FUSED not in step.node.attrs))
    monkeypatch.setattr(fast, "run_split", counted("split", fast.run_split))
    monkeypatch.setattr(backend, "cpu_tuned", lambda: True)       # the batch split is on the table
    before = npad.get_num_threads()
    npad.set_num_threads(2)
    yield counts
    npad.set_num_threads(before)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_cpu_speed_work_never_runs_on_device_arrays(stand_in, cpu_work, tiny_mvtec, device):
    """Convolutions of each kernel kind, the Lite0 forward and a CFLOW quick fit and predict: on the
    CPU each kind of CPU work happens (so the counters count), on the stand-in none does."""
    from npad.features import FeatureExtractor
    from npad.methods.cflow import CFlow
    npad.set_device(device)
    for c, o, k, s, g in [(4, 6, 1, 1, 1), (4, 6, 3, 1, 1), (6, 6, 3, 1, 6), (4, 6, 3, 2, 1)]:
        x = npad.randn(2, c, 9, 9, requires_grad=True)
        w = npad.randn(o, c // g, k, k, requires_grad=True)
        F.conv2d(x, w, None, s, k // 2, 1, g).sum().backward()
    with npad.no_grad():
        feats = FeatureExtractor("efficientnet_lite0", taps="cflow")(npad.rand(4, 3, 64, 64))
    model = CFlow(quick=True, input_size=64, n_blocks=1, meta_epochs=1, fiber_batch=256)
    model.fit(MVTecDataset(tiny_mvtec, split="train"), quiet=True)
    res = model.predict(MVTecDataset(tiny_mvtec, split="test"))
    assert all(f.device == device for f in feats) and res.maps.shape == (8, 64, 64)
    if device == "cuda":
        assert cpu_work == dict.fromkeys(cpu_work, 0)
    else:
        assert all(cpu_work[k] > 0 for k in ("parallel_over", "blas_threads", "inplace")), cpu_work
        assert (cpu_work["kernel"] > 0 and cpu_work["flow"] > 0) or npad.kernels.reference_only(), cpu_work


def test_maps_stay_on_their_device(stand_in):
    host = rng.random((2, 4, 5)).astype(np.float32)
    dev = stand_in.asarray(host)
    for default in ("cuda", "cpu"):
        npad.set_device(default)
        up, pooled = maps.upsample(host, (8, 10)), maps.image_scores(host, pool=3)
        assert type(up) is np.ndarray and type(pooled) is np.ndarray
        up_d, pooled_d = maps.upsample(dev, (8, 10)), maps.image_scores(dev, pool=3)
        assert is_cupy_array(up_d) and is_cupy_array(pooled_d)
        np.testing.assert_array_equal(to_cpu(up_d), up)
        np.testing.assert_array_equal(to_cpu(pooled_d), pooled)


def test_viz_takes_device_arrays(stand_in, tmp_path):
    """Every picture from device arrays equals the one from their host copies, byte for byte."""
    d = stand_in.asarray
    imgs = rng.random((2, 3, 16, 16)).astype(np.float32)
    hms = rng.random((2, 8, 8)).astype(np.float32)
    masks = (rng.random((2, 16, 16)) > 0.7).astype(np.float32)
    scores, labels = np.array([0.2, 0.9]), np.array([0, 1])
    for fn, args in [(viz.apply_colormap, (hms[0],)), (viz.to_rgb, (imgs[0],)), (viz.overlay, (imgs[0], hms[0])),
                     (viz.contour, (masks[0],)), (viz.draw_contour, (imgs[0], masks[0])),
                     (viz.panel, (imgs[0], hms[0], masks[0]))]:
        np.testing.assert_array_equal(fn(*map(d, args)), fn(*args), err_msg=fn.__name__)
    np.testing.assert_array_equal(viz.panel(d(imgs[0]), d(hms[0]), d(masks[0]), 0.5),
                                  viz.panel(imgs[0], hms[0], masks[0], 0.5))

    def pictures(a, tag):       # the PNG writers, on arrays made by ``a``
        return [viz.save_image(tmp_path / f"image_{tag}.png", a(imgs[0])),
                viz.save_panels(tmp_path / f"panels_{tag}.png", a(imgs), a(hms), a(masks), 0.5, scores=a(scores)),
                viz.score_histogram(tmp_path / f"hist_{tag}.png", a(scores), a(labels), backend="pillow")]
    for host, dev in zip(pictures(np.asarray, "host"), pictures(d, "dev")):
        assert host.read_bytes() == dev.read_bytes(), host.name


def test_vae_training_and_elbo_take_device_data(stand_in):
    from npad.methods.vae_attention import ConvVAE, fit_vae, negative_elbo
    npad.set_device("cuda")
    x = rng.random((6, 1, 8, 8))

    def fit(data):
        npad.manual_seed(0)
        model = ConvVAE(latent=4, in_channels=1, size=8, hidden=16, width=0.05)
        return fit_vae(model, data, epochs=2, batch_size=3, quiet=True), negative_elbo(model, data)
    (loss, elbo), (loss_d, elbo_d) = fit(x), fit(stand_in.asarray(x))
    np.testing.assert_allclose(loss_d, loss, rtol=1e-6)
    np.testing.assert_allclose(elbo_d, elbo, rtol=1e-6)


def test_array_dataset_and_permute_dims_take_device_arrays(stand_in):
    from npad.methods.factorvae import permute_dims
    d = stand_in.asarray
    imgs, labels = rng.random((3, 3, 8, 8)).astype(np.float32), np.array([0, 1, 1])
    masks = (rng.random((3, 8, 8)) > 0.5).astype(np.float32)
    ds, ds_d = ArrayDataset(imgs, labels, masks), ArrayDataset(d(imgs), d(labels), d(masks))
    np.testing.assert_array_equal(ds_d.images, ds.images)
    np.testing.assert_array_equal(ds_d.masks, ds.masks)
    assert ds_d.labels.tolist() == ds.labels.tolist() == [0, 1, 1]
    npad.set_device("cuda")
    z = npad.tensor(rng.standard_normal((5, 2)), device="cpu")
    assert permute_dims(z, 0).device == "cpu" and permute_dims(d(z.numpy()), 0).device == "cuda"
