"""Whole models through npad.onnx against onnxruntime: small ResNet-, VGG-, MobileNet-V3- and
EfficientNet-style graphs with random weights (built here with onnx.helper), and the converted
EfficientNet-Lite0; frozen (BN folded) and unfrozen; gradients; taps; errors; external data;
FeatureExtractor."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import npad  # noqa: E402
from npad.onnx import OnnxLoadError, OnnxModule, load_onnx  # noqa: E402
from npad.testing import gradcheck  # noqa: E402


class G:
    """A tiny graph builder: every helper returns the name of its output value."""

    def __init__(self, seed=0, opset=17):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.k, self.opset = [], {}, 0, opset

    def name(self, p):
        self.k += 1
        return f"{p}_{self.k}"

    def const(self, arr, p="c"):
        n = self.name(p)
        self.inits[n] = np.asarray(arr)
        return n

    def op(self, op, inputs, n_out=1, out=None, **attrs):
        outs = [out] if out else [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=self.name("n_" + op), **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x, cin, cout, k, s=1, g=1, bias=False, pads=None, **kw):
        w = self.const((self.rng.standard_normal((cout, cin // g, k, k)) * np.sqrt(2 / (cin // g * k * k)))
                       .astype(np.float32), "w")
        ins = [x, w]
        if bias:
            ins.append(self.const(self.rng.standard_normal(cout).astype(np.float32) * 0.1, "b"))
        p = k // 2 if pads is None else pads
        pads = [p] * 4 if isinstance(p, int) else p
        return self.op("Conv", ins, kernel_shape=[k, k], strides=[s, s], pads=pads, group=g, **kw)

    def bn(self, x, c):
        r = self.rng
        ins = [self.const((r.random(c) + 0.5).astype(np.float32), "gamma"),
               self.const((r.standard_normal(c) * 0.1).astype(np.float32), "beta"),
               self.const((r.standard_normal(c) * 0.1).astype(np.float32), "mean"),
               self.const((r.random(c) + 0.5).astype(np.float32), "var")]
        return self.op("BatchNormalization", [x] + ins, epsilon=1e-3)

    def cbr(self, x, cin, cout, k, s=1, g=1, act="Relu"):
        y = self.bn(self.conv(x, cin, cout, k, s, g), cout)
        if act == "SiLU":
            return self.op("Mul", [y, self.op("Sigmoid", [y])])
        if act == "ReLU6":
            return self.op("Clip", [y, self.const(np.float32(0)), self.const(np.float32(6))])
        return self.op(act, [y]) if act else y

    def gemm(self, x, cin, cout):
        w = self.const((self.rng.standard_normal((cout, cin)) / np.sqrt(cin)).astype(np.float32), "fc_w")
        b = self.const((self.rng.standard_normal(cout) * 0.1).astype(np.float32), "fc_b")
        return self.op("Gemm", [x, w, b], transB=1)

    def model(self, outputs, shape=(2, 3, 32, 32), inp="input", dims=None):
        dims = ["N", shape[1], "H", "W"] if dims is None else dims   # the input's declared dimensions
        g = helper.make_graph(self.nodes, "net", [helper.make_tensor_value_info(inp, TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                              initializer=[numpy_helper.from_array(v, k) for k, v in self.inits.items()])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset)])
        m.ir_version = 8
        return m


def resnet_like(opset=17):
    g = G(1, opset)
    x = g.cbr("input", 3, 16, 7, 2)
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    taps = []
    for cin, cout, s in ((16, 16, 1), (16, 32, 2)):
        y = g.cbr(x, cin, cout, 3, s)
        y = g.bn(g.conv(y, cout, cout, 3), cout)
        sc = x if s == 1 and cin == cout else g.bn(g.conv(x, cin, cout, 1, s, pads=0), cout)
        x = g.op("Relu", [g.op("Add", [y, sc])])
        taps.append(x)
    p = g.op("GlobalAveragePool", [x])
    logits = g.gemm(g.op("Flatten", [p], axis=1), 32, 10)
    return g.model([logits] + taps), taps


def vgg_like():
    g = G(2, 13)
    x, c = "input", 3
    taps = []
    for cout in (8, 16):
        x = g.op("Relu", [g.conv(x, c, cout, 3, bias=True)])
        x = g.op("Relu", [g.conv(x, cout, cout, 3, bias=True)])
        taps.append(x)
        x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        c = cout
    x = g.op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
    # the classic exporter's x.view(x.size(0), -1): Shape -> Gather -> Unsqueeze -> Concat -> Reshape
    n = g.op("Gather", [g.op("Shape", [x]), g.const(np.array(0))], axis=0)
    shape = g.op("Concat", [g.op("Unsqueeze", [n, g.const(np.array([0]))]), g.const(np.array([-1]))], axis=0)
    x = g.op("Reshape", [x, shape])
    x = g.op("Dropout", [g.op("Relu", [g.gemm(x, 16 * 4 * 4, 32)])])
    return g.model([g.gemm(x, 32, 10)] + taps), taps


def mobilenet_v3_like():
    g = G(3, 17)
    x = g.cbr("input", 3, 16, 3, 2, act="HardSwish")
    taps = []
    for cin, exp, cout, k, s, se, act in ((16, 16, 16, 3, 2, True, "Relu"), (16, 48, 24, 5, 1, True, "HardSwish"),
                                          (24, 64, 24, 3, 1, False, "HardSwish")):
        y = g.cbr(x, cin, exp, 1, act=act) if exp != cin else x
        y = g.cbr(y, exp, exp, k, s, g=exp, act=act)
        if se:
            sq = g.op("GlobalAveragePool", [y])
            sq = g.op("Relu", [g.conv(sq, exp, exp // 4, 1, bias=True, pads=0)])
            sq = g.op("HardSigmoid", [g.conv(sq, exp // 4, exp, 1, bias=True, pads=0)], alpha=1 / 6, beta=0.5)
            y = g.op("Mul", [y, sq])
        y = g.cbr(y, exp, cout, 1, act=None)
        x = g.op("Add", [x, y]) if s == 1 and cin == cout else y
        taps.append(x)
    x = g.cbr(x, 24, 96, 1, act="HardSwish")
    p = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    p = g.op("Dropout", [g.op("HardSwish", [g.gemm(p, 96, 64)])])
    return g.model([g.gemm(p, 64, 10)] + taps), taps


def efficientnet_like(opset=17):
    g = G(4, opset)
    x = g.cbr("input", 3, 16, 3, 2, act="SiLU")
    taps = []
    for cin, exp, cout, k, s in ((16, 16, 16, 3, 1), (16, 64, 24, 5, 2), (24, 96, 24, 3, 1)):
        y = g.cbr(x, cin, exp, 1, act="SiLU") if exp != cin else x
        pads = [k // 2 - 1, k // 2 - 1, k // 2, k // 2] if s == 2 else None   # TF-SAME, asymmetric
        y = g.bn(g.conv(y, exp, exp, k, s, g=exp, pads=pads), exp)
        y = g.op("Mul", [y, g.op("Sigmoid", [y])])
        sq = g.op("ReduceMean", [y], axes=[2, 3], keepdims=1) if opset < 18 else \
            g.op("ReduceMean", [y, g.const(np.array([2, 3]))], keepdims=1)
        sq = g.conv(sq, exp, max(exp // 4, 4), 1, bias=True, pads=0)
        sq = g.op("Mul", [sq, g.op("Sigmoid", [sq])])
        sq = g.op("Sigmoid", [g.conv(sq, max(exp // 4, 4), exp, 1, bias=True, pads=0)])
        y = g.cbr(g.op("Mul", [y, sq]), exp, cout, 1, act=None)
        x = g.op("Add", [y, x]) if s == 1 and cin == cout else y
        taps.append(x)
    x = g.cbr(x, 24, 64, 1, act="SiLU")
    p = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    return g.model([g.gemm(p, 64, 10)] + taps), taps


def ort_outputs(model, x):
    s = ort.InferenceSession(model.SerializeToString() if not isinstance(model, str) else model,
                             providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})


def rel_err(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-12))


def assert_matches_ort(model, x, tol=1e-4):
    ref = ort_outputs(model, x)
    for frozen in (True, False):
        m = OnnxModule(model, frozen=frozen)
        x0 = x.copy()
        with npad.no_grad():
            out = m(npad.tensor(x))
        np.testing.assert_array_equal(x, x0)                       # in-place reuse never touches the input
        assert len(out) == len(ref)
        for a, b in zip(out, ref):
            assert a.shape == b.shape
            assert rel_err(a.numpy(), b) <= tol, (frozen, rel_err(a.numpy(), b))
    return ref


X32 = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)


@pytest.mark.parametrize("build", [resnet_like, vgg_like, mobilenet_v3_like, efficientnet_like,
                                   lambda: resnet_like(opset=11), lambda: efficientnet_like(opset=18)],
                         ids=["resnet", "vgg", "mobilenet_v3", "efficientnet", "resnet_opset11",
                              "efficientnet_opset18"])
def test_small_models_match_onnxruntime(build):
    model, _ = build()
    assert_matches_ort(model, X32)
    x = np.random.default_rng(1).standard_normal((1, 3, 40, 48)).astype(np.float32)
    if build is not vgg_like:   # fully convolutional: another input size works too
        assert_matches_ort(model, x)


def test_frozen_folds_every_conv_bn_pair():
    model, _ = resnet_like()
    frozen, live = OnnxModule(model, frozen=True), OnnxModule(model, frozen=False)
    assert not any(n.op.startswith("BatchNormalization") for n in frozen.graph.nodes)
    assert sum(n.op == "BatchNormalization" for n in live.graph.nodes) == 6
    assert len(frozen.state_dict()) < len(live.state_dict())
    assert not any(p.requires_grad for p in frozen.parameters())


def test_taps_prune_the_graph_and_match_onnxruntime():
    model, taps = efficientnet_like()
    ref = ort_outputs(model, X32)
    m = OnnxModule(model, outputs=[taps[1], taps[0]])
    with npad.no_grad():
        a, b = m(npad.tensor(X32))
    assert rel_err(a.numpy(), ref[2]) <= 1e-4 and rel_err(b.numpy(), ref[1]) <= 1e-4
    ran = m.profile(npad.tensor(X32), repeat=1)                  # the op types that ran
    assert "Gemm" not in ran and "GlobalAveragePool" not in ran and "Conv" in ran
    with npad.no_grad():
        (c,) = m(npad.tensor(X32), taps=[taps[2]])                 # per-call taps override
    assert rel_err(c.numpy(), ref[3]) <= 1e-4


def test_unknown_tap_and_folded_tap_errors():
    model, _ = resnet_like()
    m = OnnxModule(model, frozen=True)
    conv_out = model.graph.node[0].output[0]
    with pytest.raises(KeyError, match="folded"):
        m(npad.tensor(X32), taps=[conv_out])
    with pytest.raises(KeyError, match="no values named"):
        m(npad.tensor(X32), taps=["nope"])
    live = OnnxModule(model, frozen=False)                        # unfrozen keeps the conv output
    with npad.no_grad():
        (y,) = live(npad.tensor(X32), taps=[conv_out])
    assert y.shape == (2, 16, 16, 16)


def test_value_shapes():
    model, taps = resnet_like()
    shapes = dict(OnnxModule(model).value_shapes((1, 3, 64, 64)))
    assert shapes["input"] == (1, 3, 64, 64) and shapes[taps[1]] == (1, 32, 8, 8)


# ---------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------
def tiny_graph():
    g = G(5, 17)
    x = g.cbr("input", 2, 3, 3, 2, act="HardSwish")
    sq = g.op("Sigmoid", [g.conv(g.op("GlobalAveragePool", [x]), 3, 3, 1, bias=True, pads=0)])
    x = g.op("Mul", [x, sq])
    x = g.op("Resize", [x, "", g.const(np.array([1, 1, 2.0, 2.0], np.float32))], mode="linear")
    x = g.op("Add", [x, g.op("Erf", [x])])
    x = g.op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = g.op("Flatten", [x])
    return g.model([g.gemm(x, 3 * 3 * 3, 4)], shape=(2, 2, 5, 5))


def test_gradcheck_through_unfrozen_model_float64():
    m = OnnxModule(tiny_graph(), frozen=False).double()
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6))
    names = [n for n, _ in m.named_parameters()]
    assert len(names) == 7

    def fn(x, *params):
        for n, p in zip(names, params):
            m._parameters[n] = p
        return m(x)

    params = [p.data.copy() for p in m.parameters()]
    gradcheck(fn, x, *params, atol=1e-5, rtol=1e-4)


def test_gradients_flow_and_freeze():
    model, _ = efficientnet_like()
    m = OnnxModule(model, frozen=False)
    out = m(npad.tensor(X32))
    (out[0] * out[0]).sum().backward()
    assert all(p.grad is not None and np.abs(p.grad.numpy()).sum() > 0 for p in m.parameters())
    m.zero_grad()
    m.requires_grad_(False)
    x = npad.tensor(X32, requires_grad=True)
    m(x)[1].sum().backward()                                        # gradient w.r.t. the image only
    assert x.grad is not None and all(p.grad is None for p in m.parameters())
    with npad.no_grad():
        y = m(npad.tensor(X32))[0]
    assert not y.requires_grad and y._creator is None


def test_state_dict_roundtrip():
    model, _ = mobilenet_v3_like()
    a, b = OnnxModule(model, frozen=False), OnnxModule(model, frozen=False)
    sd = {k: v * 0.5 for k, v in a.state_dict().items()}
    b.load_state_dict(sd)
    assert set(sd) == set(b.state_dict())
    assert all("." not in k for k in sd)                            # sanitized names
    assert not np.allclose(a(npad.tensor(X32))[0].numpy(), b(npad.tensor(X32))[0].numpy())


# ---------------------------------------------------------------------------
# files: external data, errors
# ---------------------------------------------------------------------------
def test_external_data_file(tmp_path):
    model, _ = resnet_like()
    ref = ort_outputs(model, X32)
    path = tmp_path / "net.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="w.data", size_threshold=0)
    assert (tmp_path / "w.data").stat().st_size > 10000
    m = OnnxModule(str(path))
    with npad.no_grad():
        out = m(npad.tensor(X32))
    assert rel_err(out[0].numpy(), ref[0]) <= 1e-4
    (tmp_path / "w.data").rename(tmp_path / "moved.data")
    with pytest.raises(OnnxLoadError, match="w.data"):
        OnnxModule(str(path))


def test_missing_truncated_and_non_onnx_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.onnx"):
        OnnxModule(str(tmp_path / "nothere.onnx"))
    model, _ = resnet_like()
    data = model.SerializeToString()
    for cut in (len(data) // 2, len(data) - 7, 100):
        p = tmp_path / f"cut{cut}.onnx"
        p.write_bytes(data[:cut])
        with pytest.raises(OnnxLoadError, match=f"cut{cut}.onnx"):
            OnnxModule(str(p))
    p = tmp_path / "notes.onnx"
    p.write_text("this is not a model\n" * 20)
    with pytest.raises(OnnxLoadError, match="notes.onnx"):
        load_onnx(str(p))
    p = tmp_path / "img.onnx"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(OnnxLoadError, match="img.onnx"):
        load_onnx(str(p))


def test_wrong_input_shape_errors():
    model, _ = resnet_like()
    m = OnnxModule(model)
    with pytest.raises(ValueError, match="3 channels"):
        m(npad.zeros(1, 4, 32, 32))
    with pytest.raises(ValueError, match="4 dimensions"):
        m(npad.zeros(3, 32, 32))
    with pytest.raises(TypeError, match="1 input"):
        m(npad.zeros(1, 3, 32, 32), npad.zeros(1, 3, 32, 32))


def test_local_functions_are_inlined():
    fn = helper.make_function("local", "SiLU", ["x"], ["y"],
                              [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])],
                              [helper.make_opsetid("", 18)])
    g = helper.make_graph([helper.make_node("SiLU", ["input"], ["out"], domain="local")], "f",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)],
                              functions=[fn])
    model.ir_version = 8
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    y = OnnxModule(model)(npad.tensor(x))
    np.testing.assert_allclose(y.numpy(), x / (1 + np.exp(-x)), rtol=1e-5)


# ---------------------------------------------------------------------------
# the converted EfficientNet-Lite0 and the FeatureExtractor
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lite0_path():
    from npad.backbones import efficientnet_lite0_onnx
    try:
        return str(efficientnet_lite0_onnx())
    except (FileNotFoundError, ImportError) as e:
        pytest.skip(f"EfficientNet-Lite0 not available: {e}")


def test_efficientnet_lite0_matches_onnxruntime(lite0_path):
    x = np.random.default_rng(0).random((2, 3, 128, 128)).astype(np.float32)
    assert_matches_ort(lite0_path, x)


def test_feature_extractor_lite0(lite0_path):
    from npad.backbones import get_backbone
    from npad.features import FeatureExtractor
    fx = FeatureExtractor("efficientnet_lite0", taps="cflow")
    spec = get_backbone("efficientnet_lite0")
    assert fx.channels == [24, 40, 112] and fx.strides == [4, 8, 16]
    imgs = np.random.default_rng(1).random((3, 3, 64, 64)).astype(np.float32)
    feats = fx.extract(imgs, batch_size=2)
    assert [tuple(f.shape) for f in feats] == [(3, 24, 16, 16), (3, 40, 8, 8), (3, 112, 4, 4)]
    assert not any(f.requires_grad for f in feats)
    norm = (imgs - np.array(spec.mean, np.float32).reshape(1, 3, 1, 1)) / np.array(spec.std, np.float32).reshape(1, 3, 1, 1)
    ref = ort_outputs(lite0_path, norm)
    names = [o.name for o in onnx.load(lite0_path, load_external_data=False).graph.output]
    for f, t in zip(feats, fx.taps):
        assert rel_err(f.numpy(), ref[names.index(t)]) <= 1e-4
    fx2 = FeatureExtractor("efficientnet_lite0", taps=["stage1", "stage4"], normalize=False)
    assert fx2.channels == [16, 80] and fx2.strides == [2, 16]
    x = npad.tensor(imgs[:1], requires_grad=True)                  # gradient maps w.r.t. the image
    fx(x)[0].sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_tapped_values_are_not_overwritten_by_in_place_reuse():
    model, taps = resnet_like()
    m = OnnxModule(model, frozen=False)
    bn_out = model.graph.node[1].output[0]                          # feeds a Relu that may work in place
    with npad.no_grad():
        (alone,) = m(npad.tensor(X32), taps=[bn_out])
        both = m(npad.tensor(X32), taps=[bn_out, taps[1]])
    np.testing.assert_array_equal(both[0].numpy(), alone.numpy())
    assert (alone.numpy() < 0).any()                                # i.e. not the ReLU'd values


def test_constant_node_weights_become_parameters():
    w = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    g = helper.make_graph([helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(w)),
                           helper.make_node("Constant", [], ["two"], value_float=2.0),
                           helper.make_node("MatMul", ["input", "W"], ["h"]),
                           helper.make_node("Mul", ["h", "two"], ["out"])], "c",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    m = OnnxModule(model, frozen=False)
    assert list(dict(m.named_parameters())) == ["W"]                 # the scalar stays a constant
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    m(npad.tensor(x)).sum().backward()
    np.testing.assert_allclose(m.W.grad.numpy(), 2 * x.sum(0)[:, None].repeat(3, 1), rtol=1e-5)


def _split_run(m, x, grad=False):
    """npad.onnx.fast.run_split called directly (forward uses it only after npad.tune_cpu())."""
    from npad.onnx import fast
    with npad.enable_grad() if grad else npad.no_grad():
        return fast.run_split(m, m._feeds([npad.tensor(x)]), tuple(m.output_names))


def test_batch_split_over_threads_matches_one_thread():
    """The batch split runs one slice per thread (npad.backend.parallel_over) once the slice shape has
    run: same numbers as the whole batch and onnxruntime; a fixed batch size, an output that is not
    batch-major or a single thread keep the whole-batch run (None)."""
    from npad import backend
    model, _ = efficientnet_like()
    x = np.random.default_rng(2).standard_normal((5, 3, 32, 32)).astype(np.float32)
    ref = ort_outputs(model, x)
    before = backend.get_num_threads()
    try:
        backend.set_num_threads(1)
        m = OnnxModule(model, frozen=True)
        with npad.no_grad():
            one = [a.numpy() for a in m.run(x)]
        assert _split_run(m, x) is None and m._split == {}
        backend.set_num_threads(2)
        for _ in range(3):                                          # sequential slices, then threads
            out = _split_run(m, x)
            for a, b, r in zip(out, one, ref):
                assert rel_err(a.numpy(), b) <= 1e-5
                assert rel_err(a.numpy(), r) <= 1e-4
        assert sorted(m._split.values()) == [True, True]              # slices of 2 and 3 images
        assert _split_run(OnnxModule(model, frozen=False), x, grad=True) is None   # a graph to record

        g = G(5)                                                      # a batch-wide mean: not batch-major
        y = g.op("ReduceMean", [g.conv("input", 3, 4, 3)], axes=[0, 2, 3], keepdims=0)
        m2 = OnnxModule(g.model([y]), frozen=True)
        assert _split_run(m2, x) is None and _split_run(m2, x) is None
        assert set(m2._split.values()) == {False}

        fixed = G(6)
        m3 = OnnxModule(fixed.model([fixed.conv("input", 3, 4, 3)], dims=[5, 3, 32, 32]), frozen=True)
        assert _split_run(m3, x) is None and m3._split == {}          # batch fixed at 5
    finally:
        backend.set_num_threads(before)


@pytest.mark.parametrize("tuned", [False, True])
def test_forward_splits_the_batch_only_when_the_cpu_is_tuned(monkeypatch, tuned):
    from npad import backend
    model, _ = efficientnet_like()
    x = np.random.default_rng(2).standard_normal((4, 3, 32, 32)).astype(np.float32)
    monkeypatch.setattr(backend, "cpu_tuned", lambda: tuned)
    before = backend.get_num_threads()
    try:
        backend.set_num_threads(2)
        m = OnnxModule(model, frozen=True)
        with npad.no_grad():
            out = m(npad.tensor(x))
        assert bool(m._split) == tuned
        assert rel_err(out[0].numpy(), ort_outputs(model, x)[0]) <= 1e-4
    finally:
        backend.set_num_threads(before)


# ---------------------------------------------------------------------------
# run(): named outputs, overrides; value hooks
# ---------------------------------------------------------------------------
def skip_graph():
    """input -> conv c -> relu r -> conv d -> add(d, r) -> relu out: a skip connection around d."""
    g = G(7)
    c = g.conv("input", 3, 4, 3, bias=True)
    r = g.op("Relu", [c], out="r")
    d = g.op("Add", [g.conv(r, 4, 4, 3, bias=True), g.const(np.float32(0))], out="d")
    out = g.op("Relu", [g.op("Add", [d, r])], out="out")
    return g.model([out]), c


def test_run_returns_named_values_in_order():
    model, taps = resnet_like()
    ref = ort_outputs(model, X32)
    m = OnnxModule(model)
    with npad.no_grad():
        b, a = m.run(X32, [taps[1], taps[0]])
        (c,) = m.run({"input": npad.tensor(X32)}, taps[0])
        full = m.run([X32])
    assert rel_err(a.numpy(), ref[1]) <= 1e-4 and rel_err(b.numpy(), ref[2]) <= 1e-4
    np.testing.assert_array_equal(c.numpy(), a.numpy())
    assert len(full) == 3 and rel_err(full[0].numpy(), ref[0]) <= 1e-4


def test_run_overrides_change_downstream_values_and_take_gradients():
    model, _ = skip_graph()
    m = OnnxModule(model, frozen=False)
    x = np.random.default_rng(8).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with npad.no_grad():
        r, d = m.run(x, ["r", "d"])
    z = npad.tensor(np.random.default_rng(9).standard_normal(d.shape).astype(np.float32), requires_grad=True)
    (out,) = m.run(x, ["out"], overrides={"d": z})
    want = np.maximum(z.numpy() + r.numpy(), 0)                       # the skip path still runs from x
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-6)
    out.sum().backward()
    np.testing.assert_array_equal(z.grad.numpy(), (want > 0).astype(np.float32))
    (same,) = m.run(x, ["out"], overrides={"d": d})
    np.testing.assert_allclose(same.numpy(), m.run(x, ["out"])[0].numpy(), rtol=1e-6)
    (twice,) = m.run(x, ["out"], overrides={"d": lambda v: v * 2})  # a callable sees the computed value
    np.testing.assert_allclose(twice.numpy(), np.maximum(2 * d.numpy() + r.numpy(), 0), rtol=1e-6)


def test_run_unknown_names_are_one_line_errors():
    model, _ = skip_graph()
    m = OnnxModule(model)
    for kw in (dict(outputs=["nope"]), dict(outputs="nope"), dict(overrides={"nope": npad.zeros(1)})):
        with pytest.raises(KeyError, match="nope") as e:
            m.run(np.zeros((1, 3, 8, 8), np.float32), **kw)
        assert "\n" not in str(e.value)
    with pytest.raises(KeyError, match="folded"):
        OnnxModule(resnet_like()[0]).run(X32, [resnet_like()[0].graph.node[0].output[0]])


def test_value_hook_replaces_a_value_in_forward_until_removed():
    model, _ = skip_graph()
    m = OnnxModule(model)
    x = np.random.default_rng(8).standard_normal((2, 3, 8, 8)).astype(np.float32)
    seen = []
    handle = m.register_value_hook("d", lambda v: (seen.append(v.shape), v * 2)[1])
    with npad.no_grad():
        hooked = m(x).numpy()
        want = m.run(x, overrides={"d": lambda v: v * 2})[0].numpy()
    np.testing.assert_array_equal(hooked, want)
    assert seen == [(2, 4, 8, 8)]
    handle.remove()
    with npad.no_grad():
        assert not np.allclose(m(x).numpy(), hooked)
        with_input_hook = m.register_value_hook("input", lambda v: v * 2)          # graph inputs too
        np.testing.assert_allclose(m(x).numpy(), m.run(2 * x)[0].numpy(), rtol=1e-6)
        with_input_hook.remove()
    with pytest.raises(KeyError, match="nope"):
        m.register_value_hook("nope", print)
    assert m.value_names()[0] == "input" and {"r", "d", "out"} <= set(m.value_names())


# ---------------------------------------------------------------------------
# hostile files
# ---------------------------------------------------------------------------
def _matmul_model(w, as_constant=False):
    nodes = [helper.make_node("MatMul", ["input", "W"], ["out"])]
    inits = [numpy_helper.from_array(w, "W")]
    if as_constant:
        nodes.insert(0, helper.make_node("Constant", [], ["W"], value=inits.pop(), name="w_const"))
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 3])], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("as_constant", [False, True])
def test_nan_or_inf_weights_are_refused(tmp_path, bad, as_constant):
    w = np.ones((4, 3), np.float32)
    w[1, 2] = bad
    path = tmp_path / "bad.onnx"
    onnx.save(_matmul_model(w, as_constant), str(path))
    with pytest.raises(OnnxLoadError, match=r"bad\.onnx.*(W|w_const).*NaN or inf"):
        OnnxModule(str(path))


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    sub = tmp_path / "models"
    sub.mkdir()
    onnx.save(_matmul_model(np.ones((4, 3), np.float32)), str(sub / "net.onnx"), save_as_external_data=True,
              location="w.data", size_threshold=0)
    (sub / "w.data").rename(tmp_path / "w.data")
    for loc in ("../w.data", str(tmp_path / "w.data")):
        m = onnx.load(str(sub / "net.onnx"), load_external_data=False)
        for t in m.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = loc
        onnx.save(m, str(sub / "evil.onnx"))
        with pytest.raises(OnnxLoadError, match="evil.onnx.*outside the model's folder"):
            OnnxModule(str(sub / "evil.onnx"))
