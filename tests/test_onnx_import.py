"""npad.onnx op by op against onnxruntime on small graphs built with onnx.helper.

Each case builds a one-or-few-node model (opset 17 unless the case is about an
opset where an attribute moved to an input: 11/13/18 variants), runs it with
onnxruntime and with OnnxModule (frozen and unfrozen), and compares:
max|a - b| / max|b| <= 1e-4 (float32) or exact equality for integer/bool outputs.
"""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import npad  # noqa: E402
from npad.onnx import OnnxModule, OnnxRuntimeError, UnsupportedOpError, supported_ops  # noqa: E402

FLOAT = TensorProto.FLOAT
RNG = np.random.default_rng(1234)


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def make_model(nodes, inputs, outputs, inits=None, opset=17):
    """inputs: {name: array}; outputs: [names]; inits: {name: array}."""
    vis = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
           for k, v in inputs.items()]
    outs = [onnx.ValueInfoProto(name=o) for o in outputs]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    g = helper.make_graph(nodes, "test", vis, outs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8 if opset <= 18 else 9
    return m


def ort_run(model, inputs):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, inputs)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-12) if b.size else 0.0


def check(nodes, inputs, outputs, inits=None, opset=17, tol=1e-4, frozen=(False, True)):
    model = make_model(nodes, inputs, outputs, inits, opset)
    ref = ort_run(model, inputs)
    for fz in frozen:
        m = OnnxModule(model, frozen=fz)
        with npad.no_grad():
            out = m(*inputs.values())
        out = out if isinstance(out, list) else [out]
        assert len(out) == len(ref)
        for a, b, name in zip(out, ref, outputs):
            a = a.numpy()
            assert a.shape == b.shape, (name, a.shape, b.shape)
            if b.dtype.kind in "iub":
                np.testing.assert_array_equal(a, b)
            else:
                assert rel_err(a, b) <= tol, (name, rel_err(a, b))
    return ref


def node(op, inputs, outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), **attrs)


# ---------------------------------------------------------------------------
# elementwise
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Min", "Max", "Sum"])
def test_binary_broadcast(op):
    a, b = randn(2, 3, 4, 5), randn(1, 3, 1, 1) + (3 if op == "Div" else 0)
    check([node(op, ["a", "b"])], {"a": a, "b": b}, ["y"])


@pytest.mark.parametrize("op,pos", [("Sqrt", True), ("Exp", False), ("Log", True), ("Abs", False),
                                    ("Neg", False), ("Reciprocal", True), ("Erf", False), ("Relu", False),
                                    ("Sigmoid", False), ("Tanh", False), ("HardSwish", False),
                                    ("Softplus", False), ("Floor", False), ("Ceil", False)])
def test_unary(op, pos):
    x = randn(2, 3, 4, 5) * 3
    if pos:
        x = np.abs(x) + 0.1
    check([node(op, ["x"])], {"x": x}, ["y"])


@pytest.mark.parametrize("attrs", [{}, {"alpha": 0.3}])
def test_leaky_relu_elu(attrs):
    x = randn(2, 8) * 3
    check([node("LeakyRelu", ["x"], **attrs)], {"x": x}, ["y"])
    check([node("Elu", ["x"], **attrs)], {"x": x}, ["y"])


@pytest.mark.parametrize("attrs", [{}, {"alpha": 1 / 6, "beta": 0.5}])
def test_hard_sigmoid(attrs):
    check([node("HardSigmoid", ["x"], **attrs)], {"x": randn(3, 16) * 5}, ["y"])


def test_pow_scalar_and_tensor():
    x = np.abs(randn(2, 3, 4)) + 0.5
    check([node("Pow", ["x", "p"])], {"x": x}, ["y"], {"p": np.array(2.0, np.float32)})
    check([node("Pow", ["x", "p"])], {"x": x}, ["y"], {"p": np.array(0.5, np.float32)})
    check([node("Pow", ["x", "e"])], {"x": x, "e": randn(2, 3, 4)}, ["y"])


def test_clip_opset11_inputs_and_opset6_attributes():
    x = randn(2, 3, 8, 8) * 8
    lo, hi = np.array(0.0, np.float32), np.array(6.0, np.float32)
    check([node("Clip", ["x", "lo", "hi"])], {"x": x}, ["y"], {"lo": lo, "hi": hi}, opset=11)
    check([node("Clip", ["x", "lo", "hi"])], {"x": x}, ["y"], {"lo": lo, "hi": hi}, opset=13)
    check([node("Clip", ["x", "", "hi"])], {"x": x}, ["y"], {"hi": hi}, opset=13)   # min missing
    check([node("Clip", ["x", "lo"])], {"x": x}, ["y"], {"lo": lo}, opset=13)       # max missing
    check([node("Clip", ["x"], min=-1.0, max=2.0)], {"x": x}, ["y"], opset=6)


def test_where_equal_cast():
    a, b = randn(3, 4), randn(3, 4)
    nodes = [node("Greater", ["a", "b"], ["c"]), node("Where", ["c", "a", "b"], ["y"]),
             node("Cast", ["c"], ["ci"], to=TensorProto.INT64), node("Equal", ["ci", "one"], ["e"]),
             node("Cast", ["a"], ["ad"], to=TensorProto.DOUBLE)]
    check(nodes, {"a": a, "b": b}, ["y", "ci", "e", "ad"], {"one": np.array(1, np.int64)})


def test_softmax_opset11_flattens_and_opset13_axis():
    x = randn(2, 3, 4)
    check([node("Softmax", ["x"])], {"x": x}, ["y"], opset=11)           # axis=1: over (3, 4) together
    check([node("Softmax", ["x"], axis=1)], {"x": x}, ["y"], opset=13)   # axis=1 alone
    check([node("Softmax", ["x"])], {"x": x}, ["y"], opset=13)           # default -1
    check([node("LogSoftmax", ["x"], axis=-1)], {"x": x}, ["y"], opset=13)


# ---------------------------------------------------------------------------
# matrix products
# ---------------------------------------------------------------------------
def test_matmul_shapes():
    check([node("MatMul", ["a", "b"])], {"a": randn(4, 5), "b": randn(5, 3)}, ["y"])
    check([node("MatMul", ["a", "b"])], {"a": randn(2, 4, 5), "b": randn(5, 3)}, ["y"])
    check([node("MatMul", ["a", "b"])], {"a": randn(2, 1, 4, 5), "b": randn(3, 5, 2)}, ["y"])


@pytest.mark.parametrize("ta,tb,alpha,beta,cshape", [
    (0, 1, 1.0, 1.0, (3,)), (0, 0, 1.0, 1.0, (3,)), (1, 0, 0.5, 2.0, (4, 3)),
    (1, 1, 1.0, 1.0, (1, 3)), (0, 1, 2.0, 1.0, None), (0, 1, 1.0, 0.5, ())])
def test_gemm_variants(ta, tb, alpha, beta, cshape):
    a = randn(5, 4) if ta else randn(4, 5)
    b = randn(3, 5) if tb else randn(5, 3)
    ins = ["a", "b"] + (["c"] if cshape is not None else [])
    inits = {"b": b}
    if cshape is not None:
        inits["c"] = randn(*cshape) if cshape else np.array(0.7, np.float32)
    check([node("Gemm", ins, transA=ta, transB=tb, alpha=alpha, beta=beta)], {"a": a}, ["y"], inits)


# ---------------------------------------------------------------------------
# convolutions, normalisation
# ---------------------------------------------------------------------------
CONV_CASES = [
    dict(k=3, pads=[1, 1, 1, 1]),
    dict(k=3, strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(k=3, strides=[2, 2], pads=[0, 1, 1, 2]),                  # asymmetric
    dict(k=3, strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(k=4, strides=[2, 2], auto_pad="SAME_LOWER"),
    dict(k=3, auto_pad="VALID"),
    dict(k=3, dilations=[2, 2], pads=[2, 2, 2, 2]),
    dict(k=3, group=2, pads=[1, 1, 1, 1]),
    dict(k=3, group=8, pads=[1, 1, 1, 1], cout=8),                 # depthwise
    dict(k=5, group=8, strides=[2, 2], pads=[2, 2, 2, 2], cout=16),  # depthwise multiplier 2
    dict(k=1),
    dict(k=(1, 3), pads=[0, 1, 0, 1], bias=False),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_conv(case):
    case = dict(case)
    k = case.pop("k")
    k = (k, k) if isinstance(k, int) else k
    cout, bias = case.pop("cout", 6), case.pop("bias", True)
    group = case.get("group", 1)
    x = randn(2, 8, 11, 10)
    inits = {"w": randn(cout, 8 // group, *k) * 0.3}
    ins = ["x", "w"]
    if bias:
        inits["b"] = randn(cout)
        ins.append("b")
    check([node("Conv", ins, kernel_shape=list(k), **case)], {"x": x}, ["y"], inits)


def test_conv1d():
    check([node("Conv", ["x", "w", "b"], kernel_shape=[3], pads=[1, 2], strides=[2])],
          {"x": randn(2, 4, 17)}, ["y"], {"w": randn(5, 4, 3), "b": randn(5)})


@pytest.mark.parametrize("case", [
    dict(strides=[2, 2]), dict(strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
    dict(strides=[2, 2], pads=[0, 1, 1, 0]),                         # asymmetric
    dict(strides=[2, 2], output_shape=[15, 13]),
    dict(strides=[2, 2], group=2, pads=[1, 1, 1, 1]),
    dict(strides=[1, 1], dilations=[2, 2]),
], ids=str)
def test_conv_transpose(case):
    g = case.get("group", 1)
    check([node("ConvTranspose", ["x", "w", "b"], kernel_shape=[3, 3], **case)],
          {"x": randn(2, 4, 7, 6)}, ["y"], {"w": randn(4, 6 // g, 3, 3) * 0.3, "b": randn(6)})


def _bn_inits(c, prefix="bn"):
    return {f"{prefix}.g": randn(c) * 0.5 + 1, f"{prefix}.b": randn(c) * 0.1,
            f"{prefix}.m": randn(c) * 0.1, f"{prefix}.v": np.abs(randn(c)) + 0.5}


def test_batchnorm_standalone_and_after_conv():
    x = randn(2, 4, 6, 6)
    bn = _bn_inits(4)
    check([node("BatchNormalization", ["x", "bn.g", "bn.b", "bn.m", "bn.v"], epsilon=1e-3)], {"x": x}, ["y"], bn)
    nodes = [node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             node("BatchNormalization", ["c", "bn.g", "bn.b", "bn.m", "bn.v"], ["y"])]
    check(nodes, {"x": x}, ["y"], {"w": randn(4, 4, 3, 3), **bn})
    model = make_model(nodes, {"x": x}, ["y"], {"w": randn(4, 4, 3, 3), **bn})
    frozen, live = OnnxModule(model, frozen=True), OnnxModule(model, frozen=False)
    assert [n.op for n in frozen.graph.nodes] == ["Conv"]                      # BN folded into the conv
    assert not any(p.requires_grad for p in frozen.parameters())
    assert {"bn_m", "bn_v"} <= set(dict(live.named_buffers()))            # running stats are buffers
    assert all(p.requires_grad for p in live.parameters())


# ---------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------
POOL_CASES = [
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[2, 2], strides=[2, 2]),
    dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 1, 0]),
    dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(kernel_shape=[3, 2], strides=[1, 2], pads=[1, 0, 1, 1]),
    dict(kernel_shape=[2, 3], strides=[2, 2], auto_pad="SAME_LOWER"),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 2, 1, 0], ceil_mode=1),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_max_pool(case):
    check([node("MaxPool", ["x"], **case)], {"x": randn(2, 3, 11, 10)}, ["y"])


def test_max_pool_dilation_and_1d():
    check([node("MaxPool", ["x"], kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2])],
          {"x": randn(1, 2, 9, 9)}, ["y"])
    check([node("MaxPool", ["x"], kernel_shape=[3], strides=[2], pads=[1, 1])], {"x": randn(2, 3, 15)}, ["y"])


@pytest.mark.parametrize("include", [0, 1])
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_average_pool(case, include):
    check([node("AveragePool", ["x"], count_include_pad=include, **case)], {"x": randn(2, 3, 11, 10)}, ["y"])


def test_global_pools():
    x = randn(2, 5, 7, 6)
    check([node("GlobalAveragePool", ["x"])], {"x": x}, ["y"])
    check([node("GlobalMaxPool", ["x"])], {"x": x}, ["y"])


def test_reduce_mean_axes_attribute_and_input():
    x = randn(2, 3, 4, 5)
    check([node("ReduceMean", ["x"], axes=[2, 3])], {"x": x}, ["y"], opset=17)
    check([node("ReduceMean", ["x"], axes=[-1], keepdims=0)], {"x": x}, ["y"], opset=13)
    check([node("ReduceMean", ["x", "ax"])], {"x": x}, ["y"], {"ax": np.array([2, 3])}, opset=18)
    check([node("ReduceMean", ["x", "ax"], keepdims=0)], {"x": x}, ["y"], {"ax": np.array([1])}, opset=18)
    check([node("ReduceMean", ["x"])], {"x": x}, ["y"], opset=18)                   # all axes
    check([node("ReduceSum", ["x", "ax"])], {"x": x}, ["y"], {"ax": np.array([1])}, opset=13)
    check([node("ReduceMax", ["x"], axes=[1])], {"x": x}, ["y"], opset=13)


# ---------------------------------------------------------------------------
# shapes and data movement
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_flatten(axis):
    check([node("Flatten", ["x"], axis=axis)], {"x": randn(2, 3, 4, 5)}, ["y"])


def test_reshape_zero_and_minus_one_transpose():
    x = randn(2, 3, 4, 5)
    check([node("Reshape", ["x", "s"])], {"x": x}, ["y"], {"s": np.array([0, -1, 5])})
    check([node("Reshape", ["x", "s"])], {"x": x}, ["y"], {"s": np.array([0, 0, 20])})
    check([node("Transpose", ["x"], perm=[0, 2, 3, 1])], {"x": x}, ["y"])
    check([node("Transpose", ["x"])], {"x": x}, ["y"])


def test_concat_split_variants():
    a, b = randn(2, 3, 4), randn(2, 5, 4)
    check([node("Concat", ["a", "b"], axis=1)], {"a": a, "b": b}, ["y"])
    x = randn(2, 8, 3)
    check([node("Split", ["x"], ["p", "q"], axis=1, split=[3, 5])], {"x": x}, ["p", "q"], opset=11)
    check([node("Split", ["x", "s"], ["p", "q"], axis=1)], {"x": x}, ["p", "q"], {"s": np.array([6, 2])}, opset=13)
    check([node("Split", ["x"], ["p", "q"], axis=1)], {"x": x}, ["p", "q"], opset=13)    # equal halves
    check([node("Split", ["x"], ["p", "q", "r"], axis=1, num_outputs=3)], {"x": x}, ["p", "q", "r"], opset=18)


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([1], [3], [1], None), ([0, 1], [-1, 100], [2, 3], None), ([-1], [-1000], [3], [-1]),
    ([4], [0], [3], [-2]), ([0], [9223372036854775807], [1], [2]), ([1, 0], [3, 2], None, None)])
def test_slice(starts, ends, axes, steps):
    x = randn(3, 4, 5, 6)
    inits = {"s": np.array(starts), "e": np.array(ends)}
    ins = ["x", "s", "e"]
    if axes is not None or steps is not None:
        inits["a"] = np.array(axes if axes is not None else list(range(len(starts))))
        ins.append("a")
    if steps is not None:
        inits["t"] = np.array(steps)
        ins.append("t")
    check([node("Slice", ins)], {"x": x}, ["y"], inits, opset=13)


def test_slice_opset9_attributes():
    check([node("Slice", ["x"], starts=[1, 0], ends=[3, -1], axes=[0, 2])], {"x": randn(4, 3, 5)}, ["y"], opset=9)


def test_gather():
    x = randn(4, 5, 6)
    check([node("Gather", ["x", "i"], axis=1)], {"x": x}, ["y"], {"i": np.array(2)})
    check([node("Gather", ["x", "i"], axis=0)], {"x": x}, ["y"], {"i": np.array([3, -1, 0])})
    check([node("Gather", ["x", "i"], axis=2)], {"x": x}, ["y"], {"i": np.array([[1, 2], [0, 5]])})


def test_unsqueeze_squeeze_by_opset():
    x = randn(3, 1, 4)
    check([node("Unsqueeze", ["x"], axes=[0, -1])], {"x": x}, ["y"], opset=11)
    check([node("Unsqueeze", ["x", "a"])], {"x": x}, ["y"], {"a": np.array([0, 4])}, opset=13)
    check([node("Squeeze", ["x"], axes=[1])], {"x": x}, ["y"], opset=11)
    check([node("Squeeze", ["x", "a"])], {"x": x}, ["y"], {"a": np.array([-2])}, opset=13)
    check([node("Squeeze", ["x"])], {"x": x}, ["y"], opset=13)


def test_constants_identity_dropout_shape_range():
    x = randn(2, 3, 4)
    nodes = [node("Constant", [], ["c"], value=numpy_helper.from_array(randn(3, 4))),
             node("Add", ["x", "c"], ["s"]), node("Identity", ["s"], ["i"]),
             node("Dropout", ["i"], ["y"]),
             node("Shape", ["x"], ["sh"]), node("Shape", ["x"], ["sh1"], start=1),
             node("Shape", ["x"], ["sh2"], start=-2, end=-1),
             node("ConstantOfShape", ["sh"], ["z"], value=numpy_helper.from_array(np.array([2.5], np.float32))),
             node("Constant", [], ["k"], value_ints=[1, 2]),
             node("Constant", [], ["f"], value_float=3.0),
             node("Mul", ["z", "f"], ["zf"])]
    check(nodes, {"x": x}, ["y", "sh", "sh1", "sh2", "zf", "k"], opset=15)


def test_expand_tile_where_range_shape_math():
    x = randn(3, 1)
    nodes = [node("Expand", ["x", "s"], ["e"]), node("Tile", ["x", "r"], ["t"]),
             node("Range", ["a", "b", "c"], ["rg"])]
    check(nodes, {"x": x}, ["e", "t", "rg"], {"s": np.array([2, 3, 4]), "r": np.array([2, 3]),
                                                "a": np.array(1), "b": np.array(10), "c": np.array(3)})


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_opset11_and_18(mode):
    x = randn(1, 2, 5, 6)
    pads = np.array([0, 0, 1, 2, 0, 0, 2, 1])
    inits = {"p": pads, "v": np.array(1.5, np.float32)}
    ins = ["x", "p", "v"] if mode == "constant" else ["x", "p"]
    check([node("Pad", ins, mode=mode)], {"x": x}, ["y"], inits, opset=11)
    check([node("Pad", ["x", "p2", "", "ax"], mode=mode)], {"x": x}, ["y"],
          {"p2": np.array([1, 2, 2, 1]), "ax": np.array([2, 3])}, opset=18)
    check([node("Pad", ["x"], mode=mode, pads=[0, 0, 1, 1, 0, 0, 1, 1])], {"x": x}, ["y"], opset=2)


def test_pad_negative_crops():
    check([node("Pad", ["x", "p"])], {"x": randn(1, 2, 5, 6)}, ["y"], {"p": np.array([0, 0, -1, 2, 0, 0, 1, -2])},
          opset=13)


# ---------------------------------------------------------------------------
# Resize
# ---------------------------------------------------------------------------
COORD = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]


@pytest.mark.parametrize("coord", COORD)
@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("how", ["scales_up", "scales_down", "sizes"])
def test_resize_linear_cubic(coord, mode, how):
    x = randn(2, 3, 6, 7)
    empty = np.array([], np.float32)
    if how == "sizes":
        ins, inits = ["x", "", "", "sz"], {"sz": np.array([2, 3, 9, 14])}
    else:
        sc = [1, 1, 2.0, 1.5] if how == "scales_up" else [1, 1, 0.5, 0.6]
        ins, inits = ["x", "", "sc"], {"sc": np.array(sc, np.float32)}
    check([node("Resize", ins, mode=mode, coordinate_transformation_mode=coord)], {"x": x}, ["y"], inits,
          opset=13)
    if how == "sizes":   # opset 11: roi and scales are required inputs (empty)
        check([node("Resize", ["x", "roi", "scl", "sz"], mode=mode, coordinate_transformation_mode=coord)],
              {"x": x}, ["y"], {"roi": empty, "scl": empty, "sz": inits["sz"]}, opset=11)


@pytest.mark.parametrize("coord", COORD + ["tf_half_pixel_for_nn"])
@pytest.mark.parametrize("nearest", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
def test_resize_nearest(coord, nearest):
    x = randn(1, 2, 5, 6)
    check([node("Resize", ["x", "", "sc"], mode="nearest", coordinate_transformation_mode=coord,
                nearest_mode=nearest)], {"x": x}, ["y"], {"sc": np.array([1, 1, 2.0, 1.5], np.float32)}, opset=13)
    check([node("Resize", ["x", "", "", "sz"], mode="nearest", coordinate_transformation_mode=coord,
                nearest_mode=nearest)], {"x": x}, ["y"], {"sz": np.array([1, 2, 3, 4])}, opset=13)


def test_resize_cubic_exclude_outside_and_opset18_axes():
    x = randn(1, 2, 5, 6)
    check([node("Resize", ["x", "", "sc"], mode="cubic", exclude_outside=1, cubic_coeff_a=-0.5)],
          {"x": x}, ["y"], {"sc": np.array([1, 1, 1.6, 2.0], np.float32)}, opset=13)
    check([node("Resize", ["x", "", "", "sz"], mode="linear", axes=[2, 3])],
          {"x": x}, ["y"], {"sz": np.array([10, 3])}, opset=18)
    check([node("Resize", ["x", "", "", "sz"], mode="linear", axes=[2, 3], keep_aspect_ratio_policy="not_larger")],
          {"x": x}, ["y"], {"sz": np.array([10, 9])}, opset=18)


def test_resize_tf_crop_and_resize():
    x = randn(1, 2, 6, 6)
    check([node("Resize", ["x", "roi", "", "sz"], mode="linear", coordinate_transformation_mode="tf_crop_and_resize",
                extrapolation_value=-2.0)], {"x": x}, ["y"],
          {"roi": np.array([0, 0, -0.2, 0.1, 1, 1, 0.8, 1.3], np.float32), "sz": np.array([1, 2, 5, 7])}, opset=13)


# ---------------------------------------------------------------------------
# shape arithmetic folding (the classic exporter's flatten pattern)
# ---------------------------------------------------------------------------
def test_shape_chain_is_folded_and_cached_per_input_shape():
    nodes = [node("Shape", ["x"], ["s"]), node("Gather", ["s", "zero"], ["n"], axis=0),
             node("Unsqueeze", ["n", "ax0"], ["n1"]), node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             node("Reshape", ["x", "shape"], ["flat"]), node("Relu", ["flat"], ["y"])]
    inits = {"zero": np.array(0), "ax0": np.array([0]), "minus1": np.array([-1])}
    x = randn(2, 3, 4, 4)
    check(nodes, {"x": x}, ["y"], inits, opset=13)
    m = OnnxModule(make_model(nodes, {"x": x}, ["y"], inits, opset=13))
    for b in (2, 5, 2):
        xb = randn(b, 3, 4, 4)
        with npad.no_grad():
            y = m(xb)
        np.testing.assert_allclose(y.numpy(), np.maximum(xb.reshape(b, -1), 0))
    assert len(m._static) == 2                                   # one folded set per input shape
    assert sorted(m.profile(randn(2, 3, 4, 4), repeat=1)) == ["Relu", "Reshape"]   # shape nodes skipped now


# ---------------------------------------------------------------------------
# op coverage and errors
# ---------------------------------------------------------------------------
REQUIRED = """Conv ConvTranspose BatchNormalization Relu Clip LeakyRelu Sigmoid HardSigmoid HardSwish Erf Mul Add
Sub Div Pow Sqrt MatMul Gemm MaxPool AveragePool GlobalAveragePool ReduceMean Flatten Reshape Transpose Concat
Split Slice Gather Shape Unsqueeze Squeeze Constant ConstantOfShape Identity Dropout Pad Resize Softmax Cast""".split()


def test_required_ops_are_supported():
    missing = set(REQUIRED) - set(supported_ops())
    assert not missing


def test_unknown_op_error_names_op_node_and_supported_list():
    m = make_model([helper.make_node("Relu", ["x"], ["r"], name="ok"),
                    helper.make_node("NonMaxSuppression", ["r"], ["y"], name="nms_1")], {"x": randn(2, 3)}, ["y"])
    with pytest.raises(UnsupportedOpError) as e:
        OnnxModule(m)
    msg = str(e.value)
    assert "NonMaxSuppression" in msg and "nms_1" in msg and "Conv" in msg and "Resize" in msg


def test_custom_domain_op_is_rejected():
    m = make_model([helper.make_node("Relu", ["x"], ["y"], domain="com.example", name="custom")],
                   {"x": randn(2, 3)}, ["y"])
    with pytest.raises(UnsupportedOpError, match="com.example"):
        OnnxModule(m)


def test_runtime_error_names_node():
    m = make_model([helper.make_node("Reshape", ["x", "s"], ["y"], name="bad_reshape")], {"x": randn(2, 3)}, ["y"],
                   {"s": np.array([4, -1])})
    with pytest.raises(OnnxRuntimeError, match="bad_reshape"):
        OnnxModule(m)(randn(2, 3))


# ---------------------------------------------------------------------------
# ops of other exporters and of the ONNX Model Zoo
# ---------------------------------------------------------------------------
def test_normalisations_and_misc_activations():
    x = randn(2, 4, 5, 6)
    check([node("LayerNormalization", ["x", "s", "b"], axis=-1, epsilon=1e-5)], {"x": x}, ["y"],
          {"s": randn(6), "b": randn(6)}, opset=17)
    check([node("LayerNormalization", ["x", "s"], axis=2)], {"x": x}, ["y"], {"s": randn(5, 6)}, opset=17)
    check([node("InstanceNormalization", ["x", "s", "b"])], {"x": x}, ["y"], {"s": randn(4), "b": randn(4)})
    check([node("PRelu", ["x", "s"])], {"x": x}, ["y"], {"s": randn(4, 1, 1)})
    check([node("Mish", ["x"])], {"x": x}, ["y"], opset=18)
    check([node("Gelu", ["x"])], {"x": x}, ["y"], opset=20)
    check([node("Gelu", ["x"], approximate="tanh")], {"x": x}, ["y"], opset=20)
    check([node("LRN", ["x"], size=3, alpha=1e-3, beta=0.75, bias=2.0)], {"x": x}, ["y"])
    check([node("ArgMax", ["x"], axis=1, keepdims=0)], {"x": x}, ["y"])


def test_upsample_opset9():
    x = randn(1, 2, 3, 4)
    check([node("Upsample", ["x", "s"], mode="nearest")], {"x": x}, ["y"],
          {"s": np.array([1, 1, 2, 3], np.float32)}, opset=9)
    check([node("Upsample", ["x", "s"], mode="linear")], {"x": x}, ["y"],
          {"s": np.array([1, 1, 2, 2], np.float32)}, opset=9)
