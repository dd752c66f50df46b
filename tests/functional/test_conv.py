"""conv2d / conv_transpose2d: float64 gradient checks over a grid of stride, padding, dilation and
groups, and forward equality with onnxruntime's Conv / ConvTranspose nodes. They check whatever runs:
the fast kernels by default, the reference alone under NPAD_REFERENCE=1 (the CI runs both; the kernels
are also tested equal to the reference in tests/test_kernels.py)."""
import numpy
import pytest

import npad
import npad.functional as F
from npad import Tensor
from npad.testing import gradcheck

rng = numpy.random.default_rng(0)


def _r(*shape):
    return rng.standard_normal(shape)


# ---- gradient checks ---------------------------------------------------------
CONV_GRID = [
    # (B, C, H, W, O, (KH, KW), stride, padding, dilation, groups)
    (2, 3, 5, 6, 4, (3, 3), 1, 1, 1, 1),
    (1, 3, 7, 6, 2, (3, 2), 2, (1, 0), 1, 1),
    (2, 2, 7, 7, 3, (3, 3), (2, 1), 2, 2, 1),
    (1, 4, 5, 5, 4, (1, 1), 1, 0, 1, 1),        # 1x1: plain matmul
    (1, 4, 5, 5, 2, (1, 1), 2, 1, 1, 1),        # 1x1 with stride and padding
    (1, 4, 6, 5, 6, (3, 3), 1, 1, 1, 2),        # grouped
    (2, 4, 6, 5, 4, (3, 3), 2, 1, 1, 4),        # depthwise
    (1, 3, 7, 6, 6, (3, 3), 1, 2, 2, 3),        # depthwise, multiplier 2, dilated
    (1, 3, 7, 6, 3, (3, 3), 1, 2, 2, 3),        # depthwise, dilated
    (2, 3, 6, 7, 3, (5, 3), 1, (2, 0), 1, 3),   # depthwise, 5x3, stride 1
    (1, 3, 8, 11, 3, (3, 3), 3, 2, 2, 3),       # depthwise, stride 3, dilated: phases with empty cells
    (1, 2, 6, 7, 3, (5, 3), 1, "same", 1, 1),
    (1, 2, 6, 7, 3, (2, 2), 1, "same", (2, 1), 1),   # even kernel: extra padding at the end
    (1, 2, 5, 6, 3, (3, 3), 1, "valid", 1, 1),
    (1, 2, 5, 6, 3, (3, 2), 1, ((2, 0), (1, 3)), 1, 1),   # asymmetric
    (1, 2, 5, 6, 3, (3, 2), 2, (0, 1, 2, 1), 1, 1),       # asymmetric, F.pad order
    (2, 3, 7, 8, 2, (3, 2), (1, 2), 1, (2, 1), 1),        # horizontal stride only, dilated (full im2col)
    (2, 3, 7, 8, 2, (3, 2), 1, 1, (2, 1), 1),             # kernel-row GEMMs, batch 2, dilated
]


@pytest.mark.parametrize("cfg", CONV_GRID, ids=[str(i) for i in range(len(CONV_GRID))])
def test_conv2d_gradcheck(xp, cfg):
    B, C, H, W, O, k, s, p, d, g = cfg
    x, w, b = xp.asarray(_r(B, C, H, W)), xp.asarray(_r(O, C // g, *k)), xp.asarray(_r(O))
    gradcheck(lambda x, w, b: F.conv2d(x, w, b, s, p, d, g), x, w, b, atol=1e-6, rtol=1e-5)


def test_conv2d_gradcheck_direction_bigger(xp):
    x, w = xp.asarray(_r(2, 8, 12, 11)), xp.asarray(_r(8, 4, 3, 3))
    gradcheck(lambda x, w: F.conv2d(x, w, None, 2, 1, 1, 2), x, w, direction=True, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stride, dilation", [(1, 1), ((1, 2), (2, 2)), (2, 1)])
def test_depthwise_gradcheck_wide(xp, stride, dilation):
    """Many channels: the depthwise einsum runs over blocks of J < Wo output pixels x C channels."""
    x, w = xp.asarray(_r(2, 512, 7, 8)), xp.asarray(_r(512, 1, 3, 3))
    gradcheck(lambda x, w: F.conv2d(x, w, None, stride, 2, dilation, 512), x, w, direction=True,
              atol=1e-5, rtol=1e-5)


def test_conv2d_channels_last_input_1x1(xp):
    """A 1x1 conv on a channels-last input (another conv's output) takes the no-copy matmul path."""
    x, w1, w2 = xp.asarray(_r(2, 3, 5, 4)), xp.asarray(_r(4, 3, 3, 3)), xp.asarray(_r(5, 4, 1, 1))
    gradcheck(lambda x, w1, w2: F.conv2d(F.conv2d(x, w1, padding=1), w2), x, w1, w2)


def test_conv2d_frozen_weight_input_grad_only(xp):
    x, w = xp.asarray(_r(1, 2, 5, 5)), xp.asarray(_r(3, 2, 3, 3))
    gradcheck(lambda x, w: F.conv2d(x, w, padding=1), x, w, wrt=[0])


def test_conv2d_errors():
    x = Tensor(numpy.zeros((1, 3, 4, 4), numpy.float32))
    with pytest.raises(ValueError, match="channels"):
        F.conv2d(x, Tensor(numpy.zeros((2, 2, 3, 3), numpy.float32)))
    with pytest.raises(ValueError, match="smaller"):
        F.conv2d(x, Tensor(numpy.zeros((2, 3, 5, 5), numpy.float32)))


CONVT_GRID = [
    # (B, Cin, H, W, Cout/g, (KH, KW), stride, padding, output_padding, groups, dilation)
    (2, 3, 4, 5, 2, (3, 3), 1, 0, 0, 1, 1),
    (1, 2, 4, 3, 3, (3, 3), 2, 1, 1, 1, 1),
    (1, 4, 3, 4, 2, (4, 3), (2, 3), (1, 2), (1, 2), 2, 1),
    (1, 4, 3, 3, 1, (3, 3), 2, 1, 1, 4, 2),
    (1, 2, 3, 3, 2, (2, 2), 2, 0, 0, 1, 1),
]


@pytest.mark.parametrize("cfg", CONVT_GRID, ids=[str(i) for i in range(len(CONVT_GRID))])
def test_conv_transpose2d_gradcheck(xp, cfg):
    B, C, H, W, Og, k, s, p, op, g, d = cfg
    x, w, b = xp.asarray(_r(B, C, H, W)), xp.asarray(_r(C, Og, *k)), xp.asarray(_r(Og * g))
    gradcheck(lambda x, w, b: F.conv_transpose2d(x, w, b, s, p, op, g, d), x, w, b)


def test_conv_transpose_is_adjoint_of_conv(xp):
    """<conv2d(x, w), y> == <x, conv_transpose2d(y, w)> for the same stride/padding/dilation."""
    x, w = xp.asarray(_r(2, 4, 9, 8)), xp.asarray(_r(6, 2, 3, 3))
    y = F.conv2d(Tensor(x), Tensor(w), stride=2, padding=1, dilation=1, groups=2)
    v = xp.asarray(_r(*y.shape))
    op = (9 + 2 - 3) % 2, (8 + 2 - 3) % 2
    xt = F.conv_transpose2d(Tensor(v), Tensor(w), stride=2, padding=1, output_padding=op, groups=2)
    assert xt.shape == (2, 4, 9, 8)
    numpy.testing.assert_allclose(float((y.data * v).sum()), float((x * xt.data).sum()), rtol=1e-10)


def test_conv2d_float32_and_no_grad(xp):
    x = Tensor(xp.asarray(_r(2, 3, 8, 8), dtype=numpy.float32))
    w = Tensor(xp.asarray(_r(4, 3, 3, 3), dtype=numpy.float32), requires_grad=True)
    with npad.no_grad():
        y = F.conv2d(x, w, padding=1)
    assert y.dtype == numpy.float32 and not y.requires_grad and y.shape == (2, 4, 8, 8)


# ---- onnxruntime equality -----------------------------------------------------
def _run_onnx(op, inputs, attrs, n_out=1):
    """Run a one-node ONNX model (opset 17) on float32 inputs with onnxruntime."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    names = [f"in{i}" for i in range(len(inputs))]
    node = helper.make_node(op, names, [f"out{i}" for i in range(n_out)], **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape)) for n, a in zip(names, inputs)],
        [helper.make_tensor_value_info(f"out{i}", TensorProto.FLOAT, None) for i in range(n_out)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {n: a.astype(numpy.float32) for n, a in zip(names, inputs)})


def _f32(*shape):
    return rng.standard_normal(shape).astype(numpy.float32)


ONNX_CONV = [
    # (C, H, W, O, k, stride, pads (t, b, l, r) or auto_pad, dilation, groups)
    (3, 9, 8, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (4, 10, 9, 6, (3, 3), (2, 2), (0, 2, 1, 0), (1, 1), 2),
    (6, 9, 9, 6, (3, 3), (1, 2), (2, 2, 2, 2), (2, 2), 6),
    (6, 9, 9, 12, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1), 6),
    (6, 9, 10, 6, (3, 3), (2, 2), (0, 1, 0, 1), (1, 1), 6),        # depthwise, columns in 2 phases
    (5, 11, 13, 5, (5, 3), (3, 3), (1, 2, 2, 1), (2, 2), 5),       # depthwise, 3 phases, dilated
    (256, 6, 16, 256, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 256),  # depthwise, blocks of J < Wo pixels
    (256, 5, 32, 256, (5, 5), (1, 2), (2, 2, 1, 2), (1, 1), 256),
    (8, 7, 7, 4, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    (3, 9, 8, 4, (4, 3), (1, 1), "SAME_UPPER", (1, 1), 1),
    (3, 9, 8, 4, (3, 3), (2, 2), "SAME_UPPER", (1, 1), 1),
    (3, 9, 8, 4, (3, 3), (1, 1), "VALID", (1, 1), 1),
]


@pytest.mark.parametrize("cfg", ONNX_CONV, ids=[str(i) for i in range(len(ONNX_CONV))])
def test_conv2d_matches_onnxruntime(cfg):
    C, H, W, O, k, s, pads, d, g = cfg
    x, w, b = _f32(2, C, H, W), _f32(O, C // g, *k), _f32(O)
    attrs = dict(kernel_shape=list(k), strides=list(s), dilations=list(d), group=g)
    if isinstance(pads, str):
        attrs["auto_pad"] = pads
        padding = "same" if pads == "SAME_UPPER" else "valid"
    else:
        t, bo, l, r = pads
        attrs["pads"] = [t, l, bo, r]
        padding = ((t, bo), (l, r))
    ref, = _run_onnx("Conv", [x, w, b], attrs)
    y = F.conv2d(Tensor(x), Tensor(w), Tensor(b), s, padding, d, g).numpy()
    assert y.shape == ref.shape
    assert numpy.abs(y - ref).max() <= 1e-4


ONNX_CONVT = [
    # (Cin, H, W, Cout/g, k, stride, pad, output_padding, groups, dilation)
    (3, 5, 4, 2, (3, 3), (2, 2), (1, 1), (1, 1), 1, (1, 1)),
    (4, 4, 5, 3, (4, 3), (2, 3), (1, 0), (0, 2), 2, (1, 1)),
    (4, 4, 4, 1, (3, 3), (1, 1), (2, 2), (0, 0), 4, (2, 2)),
]


@pytest.mark.parametrize("cfg", ONNX_CONVT, ids=[str(i) for i in range(len(ONNX_CONVT))])
def test_conv_transpose2d_matches_onnxruntime(cfg):
    C, H, W, Og, k, s, p, op, g, d = cfg
    x, w, b = _f32(2, C, H, W), _f32(C, Og, *k), _f32(Og * g)
    attrs = dict(kernel_shape=list(k), strides=list(s), pads=[p[0], p[1], p[0], p[1]],
                 output_padding=list(op), group=g, dilations=list(d))
    ref, = _run_onnx("ConvTranspose", [x, w, b], attrs)
    y = F.conv_transpose2d(Tensor(x), Tensor(w), Tensor(b), s, p, op, g, d).numpy()
    assert y.shape == ref.shape
    assert numpy.abs(y - ref).max() <= 1e-4
