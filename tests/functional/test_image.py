"""Pooling, interpolation and normalisation: float64 gradient checks and forward equality with the
equivalent onnxruntime node (MaxPool, AveragePool, GlobalAveragePool, Resize, BatchNormalization, Pad)."""
import numpy
import pytest

import npad.functional as F
from npad import Tensor
from npad.testing import gradcheck

rng = numpy.random.default_rng(1)


def _r(*shape):
    return rng.standard_normal(shape)


def _distinct(*shape):
    """Values without ties (max pooling is not differentiable at ties)."""
    return rng.permutation(numpy.prod(shape)).reshape(shape) * 0.1 + rng.uniform(0, 0.01, shape)


# ---- gradient checks ---------------------------------------------------------------
@pytest.mark.parametrize("k,s,p,d,ceil", [(3, 2, 1, 1, False), (3, 2, 1, 1, True), (2, None, 0, 1, True),
                                          ((3, 2), (2, 1), (1, 0), (2, 1), True), (3, 3, 1, 2, True)])
def test_max_pool2d_gradcheck(xp, k, s, p, d, ceil):
    x = xp.asarray(_distinct(2, 2, 7, 6))
    gradcheck(lambda x: F.max_pool2d(x, k, s, p, d, ceil), x)


@pytest.mark.parametrize("k,s,p,ceil,cip", [(3, 2, 1, False, True), (3, 2, 1, True, True), (3, 2, 1, True, False),
                                            (2, None, 0, True, False), ((3, 2), (2, 1), (1, 1), True, False)])
def test_avg_pool2d_gradcheck(xp, k, s, p, ceil, cip):
    gradcheck(lambda x: F.avg_pool2d(x, k, s, p, ceil, cip), xp.asarray(_r(2, 2, 7, 6)))


@pytest.mark.parametrize("out", [(1, 1), (3, 4), (4, 3), (5, 7), (2, None)])
def test_adaptive_avg_pool2d_gradcheck(xp, out):
    gradcheck(lambda x: F.adaptive_avg_pool2d(x, out), xp.asarray(_r(2, 2, 7, 6)))


@pytest.mark.parametrize("kw", [dict(size=(5, 11), mode="bilinear", align_corners=False),
                                dict(size=(5, 11), mode="bilinear", align_corners=True),
                                dict(scale_factor=2, mode="bilinear", align_corners=False),
                                dict(scale_factor=1.7, mode="bilinear"),
                                dict(scale_factor=2, mode="nearest"), dict(size=(3, 11), mode="nearest"),
                                dict(size=(5, 11), mode="nearest-exact")])
def test_interpolate_gradcheck(xp, kw):
    gradcheck(lambda x: F.interpolate(x, **kw), xp.asarray(_r(1, 2, 4, 5)))


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradcheck(xp, training):
    rm, rv = Tensor(xp.asarray(_r(3))), Tensor(xp.asarray(rng.uniform(0.5, 2, 3)))
    x, w, b = xp.asarray(_r(2, 3, 4, 5)), xp.asarray(_r(3)), xp.asarray(_r(3))
    gradcheck(lambda x, w, b: F.batch_norm(x, rm, rv, w, b, training, 0.0), x, w, b, atol=1e-5)


def test_batch_norm_running_stats(xp):
    x = xp.asarray(_r(4, 3, 5, 5) * 2 + 1)
    rm, rv = Tensor(xp.zeros(3)), Tensor(xp.ones(3))
    F.batch_norm(Tensor(x), rm, rv, training=True, momentum=0.1)
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3), ddof=1)
    numpy.testing.assert_allclose(rm.numpy(), 0.1 * numpy.asarray(mean.tolist()), rtol=1e-12)
    numpy.testing.assert_allclose(rv.numpy(), 0.9 + 0.1 * numpy.asarray(var.tolist()), rtol=1e-12)


def test_group_and_instance_norm_gradcheck(xp):
    x, w, b = xp.asarray(_r(2, 6, 3, 4)), xp.asarray(_r(6)), xp.asarray(_r(6))
    gradcheck(lambda x, w, b: F.group_norm(x, 3, w, b), x, w, b, atol=1e-5)
    gradcheck(lambda x: F.group_norm(x, 2), x, atol=1e-5)
    gradcheck(lambda x, w, b: F.instance_norm(x, weight=w, bias=b), x, w, b, atol=1e-5)


def test_norms_on_channels_last_conv_output(xp):
    """conv2d returns NCHW views of channels-last memory; the norms and pools must not care."""
    x, w = xp.asarray(_r(2, 3, 6, 5)), xp.asarray(_r(4, 3, 3, 3))
    gradcheck(lambda x, w: F.group_norm(F.conv2d(x, w, padding=1), 2), x, w, atol=1e-5, direction=True)
    gradcheck(lambda x, w: F.max_pool2d(F.conv2d(x, w, padding=1), 2), x, w, atol=1e-5, direction=True)
    gradcheck(lambda x, w: F.interpolate(F.conv2d(x, w, padding=1), scale_factor=2, mode="bilinear"),
              x, w, atol=1e-5, direction=True)


def test_global_avg_pool(xp):
    x = xp.asarray(_r(2, 3, 4, 5))
    y = F.global_avg_pool2d(Tensor(x))
    assert y.shape == (2, 3, 1, 1)
    numpy.testing.assert_allclose(y.numpy()[..., 0, 0], numpy.asarray(x.mean(axis=(2, 3)).tolist()))
    assert F.global_avg_pool2d(Tensor(x), keepdim=False).shape == (2, 3)


# ---- onnxruntime equality -------------------------------------------------------------
def _run_onnx(op, inputs, attrs, consts=()):
    """Run a one-node ONNX model (opset 17): ``inputs`` are float32 graph inputs, ``consts`` are
    (name, array) initializers appended to the node inputs ("" for an omitted optional input)."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper
    names = [f"in{i}" for i in range(len(inputs))]
    inits = [numpy_helper.from_array(a, n) for n, a in consts if n]
    node = helper.make_node(op, names + [n for n, _ in consts], ["out"], **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape)) for n, a in zip(names, inputs)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {n: a.astype(numpy.float32) for n, a in zip(names, inputs)})[0]


def _f32(*shape):
    return rng.standard_normal(shape).astype(numpy.float32)


def _close(y, ref):
    y = y.numpy() if isinstance(y, Tensor) else y
    assert y.shape == ref.shape, (y.shape, ref.shape)
    assert numpy.abs(y - ref).max() <= 1e-4


@pytest.mark.parametrize("k,s,p,d,ceil", [(3, 2, 1, 1, False), (3, 2, 1, 1, True), (2, 2, 0, 1, True),
                                          ((3, 2), (2, 1), (1, 0), (2, 1), True), (3, 3, 1, 2, False)])
def test_max_pool2d_matches_onnxruntime(k, s, p, d, ceil):
    x = _f32(2, 3, 9, 8)
    k2, s2, p2, d2 = (k if isinstance(k, tuple) else (k, k)), (s if isinstance(s, tuple) else (s, s)), \
        (p if isinstance(p, tuple) else (p, p)), (d if isinstance(d, tuple) else (d, d))
    ref = _run_onnx("MaxPool", [x], dict(kernel_shape=list(k2), strides=list(s2), pads=[p2[0], p2[1], p2[0], p2[1]],
                                         dilations=list(d2), ceil_mode=int(ceil)))
    _close(F.max_pool2d(Tensor(x), k, s, p, d, ceil), ref)


@pytest.mark.parametrize("k,s,p,ceil,cip", [(3, 2, 1, False, True), (3, 2, 1, False, False), (3, 2, 1, True, True),
                                            (3, 2, 1, True, False), ((3, 2), (2, 1), (1, 1), True, False)])
def test_avg_pool2d_matches_onnxruntime(k, s, p, ceil, cip):
    x = _f32(2, 3, 9, 8)
    k2, s2, p2 = (k if isinstance(k, tuple) else (k, k)), (s if isinstance(s, tuple) else (s, s)), \
        (p if isinstance(p, tuple) else (p, p))
    ref = _run_onnx("AveragePool", [x], dict(kernel_shape=list(k2), strides=list(s2),
                                             pads=[p2[0], p2[1], p2[0], p2[1]], ceil_mode=int(ceil),
                                             count_include_pad=int(cip)))
    _close(F.avg_pool2d(Tensor(x), k, s, p, ceil, cip), ref)


def test_global_average_pool_matches_onnxruntime():
    x = _f32(2, 5, 7, 6)
    _close(F.global_avg_pool2d(Tensor(x)), _run_onnx("GlobalAveragePool", [x], {}))
    _close(F.adaptive_avg_pool2d(Tensor(x), 1), _run_onnx("GlobalAveragePool", [x], {}))


@pytest.mark.parametrize("size", [(11, 13), (4, 3), (7, 6), (1, 1)])
@pytest.mark.parametrize("mode", ["align_corners", "half_pixel", "pytorch_half_pixel", "nearest"])
def test_interpolate_matches_onnx_resize(size, mode):
    x = _f32(2, 3, 7, 6)
    sizes = numpy.array([2, 3, *size], numpy.int64)
    if mode == "nearest":
        attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        y = F.interpolate(Tensor(x), size=size, mode="nearest")
    else:
        attrs = dict(mode="linear", coordinate_transformation_mode=mode)
        if mode == "pytorch_half_pixel" and 1 in size:
            pytest.skip("ONNX's pytorch_half_pixel samples x[0] for outputs of length 1; PyTorch (and npad) "
                        "sample the centre, as half_pixel does (covered there)")
        y = F.interpolate(Tensor(x), size=size, mode="bilinear", align_corners=mode == "align_corners")
    ref = _run_onnx("Resize", [x], attrs, consts=[("", None), ("", None), ("sizes", sizes)])
    _close(y, ref)


def test_interpolate_scale_factor_matches_onnx_resize():
    x = _f32(1, 2, 5, 6)
    scales = numpy.array([1, 1, 2, 3], numpy.float32)
    ref = _run_onnx("Resize", [x], dict(mode="linear", coordinate_transformation_mode="half_pixel"),
                    consts=[("", None), ("scales", scales)])
    _close(F.interpolate(Tensor(x), scale_factor=(2, 3), mode="bilinear", align_corners=False), ref)


def test_batch_norm_matches_onnxruntime():
    x, w, b, m = _f32(2, 4, 5, 6), _f32(4), _f32(4), _f32(4)
    v = rng.uniform(0.5, 2, 4).astype(numpy.float32)
    ref = _run_onnx("BatchNormalization", [x, w, b, m, v], dict(epsilon=1e-5))
    _close(F.batch_norm(Tensor(x), Tensor(m), Tensor(v), Tensor(w), Tensor(b), training=False, eps=1e-5), ref)


@pytest.mark.parametrize("mode,onnx_mode", [("constant", "constant"), ("reflect", "reflect"), ("replicate", "edge")])
def test_pad_matches_onnxruntime(mode, onnx_mode):
    x = _f32(2, 3, 5, 6)
    left, right, top, bottom = 2, 1, 3, 0
    pads = numpy.array([0, 0, top, left, 0, 0, bottom, right], numpy.int64)
    consts = [("pads", pads)] + ([("value", numpy.array(0.5, numpy.float32))] if mode == "constant" else [])
    ref = _run_onnx("Pad", [x], dict(mode=onnx_mode), consts=consts)
    _close(F.pad(Tensor(x), (left, right, top, bottom), mode=mode, value=0.5), ref)
