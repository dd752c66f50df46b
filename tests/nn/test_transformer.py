"""Attention and Transformer layers: NumPy and ONNX Runtime references, float64 gradient checks."""
import numpy
import pytest

import npad
import npad.nn as nn
from npad.backend import get_array_module
from npad.testing import gradcheck


def np_softmax(x, axis=-1):
    e = numpy.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_mha(m, query, key, value, batch_first=False):
    """A direct NumPy reference of torch.nn.MultiheadAttention with m's weights -> (out, mean weights)."""
    E, h = m.embed_dim, m.num_heads
    d = E // h
    W, b = m.in_proj_weight.numpy().astype(numpy.float64), m.in_proj_bias.numpy().astype(numpy.float64)
    if not batch_first:
        query, key, value = (x.transpose(1, 0, 2) for x in (query, key, value))
    q, k, v = (x @ W[i * E:(i + 1) * E].T + b[i * E:(i + 1) * E] for i, x in enumerate((query, key, value)))
    split = lambda x: x.reshape(x.shape[0], x.shape[1], h, d).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    w = np_softmax(q @ k.transpose(0, 1, 3, 2) / numpy.sqrt(d))
    o = (w @ v).transpose(0, 2, 1, 3).reshape(query.shape[0], query.shape[1], E)
    o = o @ m.out_proj.weight.numpy().T + m.out_proj.bias.numpy()
    if not batch_first:
        o = o.transpose(1, 0, 2)
    return o, w.mean(axis=1)


def param_gradcheck(module, fn, eps=1e-6, rtol=1e-5, atol=1e-7, seed=0):
    """Directional central-difference check of d(sum(fn() * w))/d(p) for every parameter of a float64 module."""
    rng = numpy.random.default_rng(seed)
    out = fn()
    w = rng.standard_normal(out.shape)
    module.zero_grad()
    (out * npad.tensor(w)).sum().backward()
    names = []
    for name, p in module.named_parameters():
        assert p.grad is not None, f"no gradient reached {name}"
        d = rng.standard_normal(p.shape)
        base = p.data.copy()
        xd = get_array_module(base).asarray(d)                   # the direction on the parameter's device
        p.data = base + eps * xd
        lp = float((fn().numpy() * w).sum())
        p.data = base - eps * xd
        lm = float((fn().numpy() * w).sum())
        p.data = base
        num, ana = (lp - lm) / (2 * eps), float((p.grad.numpy() * d).sum())
        assert abs(num - ana) <= atol + rtol * abs(num), f"{name}: backward {ana}, central differences {num}"
        names.append(name)
    return names


# ---- scaled dot-product attention -------------------------------------------------
def test_sdpa_matches_numpy():
    rng = numpy.random.default_rng(1)
    q, k, v = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((2, 3, 7, 4)), rng.standard_normal((2, 3, 7, 6))
    out = nn.scaled_dot_product_attention(npad.tensor(q), npad.tensor(k), npad.tensor(v))
    ref = np_softmax(q @ k.transpose(0, 1, 3, 2) / 2.0) @ v
    numpy.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)
    assert out.dtype == numpy.float64


def test_sdpa_masks_and_stability():
    rng = numpy.random.default_rng(2)
    q, k, v = rng.standard_normal((3, 4)), rng.standard_normal((5, 4)), rng.standard_normal((5, 2))
    allowed = rng.random((3, 5)) > 0.4
    allowed[:, 0] = True
    out = nn.scaled_dot_product_attention(npad.tensor(q), npad.tensor(k), npad.tensor(v), attn_mask=allowed)
    s = q @ k.T / 2.0
    ref = np_softmax(numpy.where(allowed, s, -numpy.inf)) @ v
    numpy.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)
    additive = rng.standard_normal((3, 5))
    out = nn.scaled_dot_product_attention(npad.tensor(q), npad.tensor(k), npad.tensor(v), attn_mask=additive)
    numpy.testing.assert_allclose(out.numpy(), np_softmax(s + additive) @ v, rtol=1e-12, atol=1e-12)
    # huge scores: the max-subtracted softmax stays finite
    big = nn.scaled_dot_product_attention(npad.tensor(q * 1e4), npad.tensor(k * 1e4), npad.tensor(v))
    assert numpy.isfinite(big.numpy()).all()


def test_sdpa_gradcheck():
    rng = numpy.random.default_rng(3)
    q, k, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 5, 3))
    mask = rng.standard_normal((3, 5))
    gradcheck(lambda a, b, c: nn.scaled_dot_product_attention(a, b, c, attn_mask=mask), q, k, v)


# ---- MultiheadAttention ------------------------------------------------------------
def test_mha_parameter_layout():
    m = nn.MultiheadAttention(16, 4)
    assert list(m.state_dict()) == ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    assert m.in_proj_weight.shape == (48, 16) and m.in_proj_bias.shape == (48,)
    assert m.out_proj.weight.shape == (16, 16)
    with pytest.raises(ValueError):
        nn.MultiheadAttention(10, 3)


@pytest.mark.parametrize("batch_first", [False, True])
def test_mha_matches_numpy(batch_first):
    m = nn.MultiheadAttention(8, 2, batch_first=batch_first).double()
    npad.nn.init.normal_(m.in_proj_bias, std=0.1)
    npad.nn.init.normal_(m.out_proj.bias, std=0.1)
    rng = numpy.random.default_rng(4)
    shp = (lambda n, length: (n, length, 8)) if batch_first else (lambda n, length: (length, n, 8))
    q, k, v = rng.standard_normal(shp(3, 5)), rng.standard_normal(shp(3, 6)), rng.standard_normal(shp(3, 6))
    out, w = m(npad.tensor(q), npad.tensor(k), npad.tensor(v))
    ro, rw = np_mha(m, q, k, v, batch_first)
    numpy.testing.assert_allclose(out.numpy(), ro, rtol=1e-10, atol=1e-12)
    numpy.testing.assert_allclose(w.numpy(), rw, rtol=1e-10, atol=1e-12)
    o2, none = m(npad.tensor(q), npad.tensor(k), npad.tensor(v), need_weights=False)
    assert none is None
    numpy.testing.assert_allclose(o2.numpy(), ro, rtol=1e-10, atol=1e-12)
    _, wh = m(npad.tensor(q), npad.tensor(k), npad.tensor(v), average_attn_weights=False)
    assert wh.shape == (3, 2, 5, 6)


def test_mha_unbatched_and_masks():
    m = nn.MultiheadAttention(8, 2).double()
    rng = numpy.random.default_rng(5)
    q, k = rng.standard_normal((4, 8)), rng.standard_normal((6, 8))
    out, w = m(npad.tensor(q), npad.tensor(k), npad.tensor(k))
    ro, rw = np_mha(m, q[:, None], k[:, None], k[:, None])
    assert out.shape == (4, 8) and w.shape == (4, 6)
    numpy.testing.assert_allclose(out.numpy(), ro[:, 0], rtol=1e-10, atol=1e-12)
    # key_padding_mask (True = ignore) equals dropping those keys
    kb = rng.standard_normal((6, 2, 8))
    pad = numpy.zeros((2, 6), bool)
    pad[1, 4:] = True
    out, w = m(npad.tensor(kb[:3]), npad.tensor(kb), npad.tensor(kb), key_padding_mask=pad)
    assert numpy.allclose(w.numpy()[1, :, 4:], 0)
    ro, _ = np_mha(m, kb[:3, 1:2], kb[:4, 1:2], kb[:4, 1:2])
    numpy.testing.assert_allclose(out.numpy()[:, 1:2], ro, rtol=1e-10, atol=1e-12)
    # a boolean attn_mask (True = not allowed) equals an additive -inf mask
    am = rng.random((3, 6)) > 0.6
    am[:, 0] = False
    o1, _ = m(npad.tensor(kb[:3]), npad.tensor(kb), npad.tensor(kb), attn_mask=am)
    o2, _ = m(npad.tensor(kb[:3]), npad.tensor(kb), npad.tensor(kb), attn_mask=numpy.where(am, -numpy.inf, 0.0))
    numpy.testing.assert_allclose(o1.numpy(), o2.numpy(), rtol=1e-12, atol=1e-12)


def _onnx_mha(m, L, S, N):
    """An ONNX graph (opset 17) of m: MatMul / Add / Reshape / Transpose / Softmax, batch_first=False."""
    from onnx import TensorProto, helper, numpy_helper
    E, h = m.embed_dim, m.num_heads
    d = E // h
    W, b = m.in_proj_weight.numpy(), m.in_proj_bias.numpy()
    f32 = lambda a: numpy.ascontiguousarray(a, dtype=numpy.float32)  # noqa: E731
    inits = [numpy_helper.from_array(f32(W[i * E:(i + 1) * E].T), f"W{c}") for i, c in enumerate("qkv")]
    inits += [numpy_helper.from_array(f32(b[i * E:(i + 1) * E]), f"b{c}") for i, c in enumerate("qkv")]
    inits += [numpy_helper.from_array(f32(m.out_proj.weight.numpy().T), "Wo"),
              numpy_helper.from_array(f32(m.out_proj.bias.numpy()), "bo"),
              numpy_helper.from_array(numpy.array([0, 0, h, d], numpy.int64), "heads_shape"),
              numpy_helper.from_array(numpy.array([0, 0, E], numpy.int64), "merged_shape"),
              numpy_helper.from_array(numpy.array(1 / numpy.sqrt(d), numpy.float32), "scale")]
    nodes = []
    for c, name in zip("qkv", ("query", "key", "value")):
        nodes += [helper.make_node("Transpose", [name], [f"{c}_nle"], perm=[1, 0, 2]),       # N x L x E
                  helper.make_node("MatMul", [f"{c}_nle", f"W{c}"], [f"{c}_mm"]),
                  helper.make_node("Add", [f"{c}_mm", f"b{c}"], [f"{c}_proj"]),
                  helper.make_node("Reshape", [f"{c}_proj", "heads_shape"], [f"{c}_split"]),  # N x L x h x d
                  helper.make_node("Transpose", [f"{c}_split"], [f"{c}_heads"],
                                   perm=[0, 2, 3, 1] if c == "k" else [0, 2, 1, 3])]
    nodes += [helper.make_node("MatMul", ["q_heads", "k_heads"], ["scores_raw"]),            # N x h x L x S
              helper.make_node("Mul", ["scores_raw", "scale"], ["scores"]),
              helper.make_node("Softmax", ["scores"], ["attn"], axis=-1),
              helper.make_node("MatMul", ["attn", "v_heads"], ["ctx"]),
              helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ctx_t", "merged_shape"], ["ctx_m"]),
              helper.make_node("MatMul", ["ctx_m", "Wo"], ["o_mm"]),
              helper.make_node("Add", ["o_mm", "bo"], ["o_nle"]),
              helper.make_node("Transpose", ["o_nle"], ["output"], perm=[1, 0, 2]),
              helper.make_node("ReduceMean", ["attn"], ["weights"], axes=[1], keepdims=0)]
    graph = helper.make_graph(
        nodes, "mha",
        [helper.make_tensor_value_info("query", TensorProto.FLOAT, [L, N, E]),
         helper.make_tensor_value_info("key", TensorProto.FLOAT, [S, N, E]),
         helper.make_tensor_value_info("value", TensorProto.FLOAT, [S, N, E])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [L, N, E]),
         helper.make_tensor_value_info("weights", TensorProto.FLOAT, [N, L, S])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_mha_matches_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import onnx
    L, S, N, E = 5, 7, 3, 16
    m = nn.MultiheadAttention(E, 4)
    npad.nn.init.normal_(m.in_proj_bias, std=0.1)
    npad.nn.init.normal_(m.out_proj.bias, std=0.1)
    model = _onnx_mha(m, L, S, N)
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = numpy.random.default_rng(6)
    q = rng.standard_normal((L, N, E)).astype(numpy.float32)
    k = rng.standard_normal((S, N, E)).astype(numpy.float32)
    v = rng.standard_normal((S, N, E)).astype(numpy.float32)
    ref_out, ref_w = sess.run(None, {"query": q, "key": k, "value": v})
    out, w = m(npad.tensor(q), npad.tensor(k), npad.tensor(v))
    assert out.dtype == numpy.float32
    assert numpy.abs(out.numpy() - ref_out).max() <= 1e-4
    assert numpy.abs(w.numpy() - ref_w).max() <= 1e-4


def test_mha_gradcheck_inputs_and_parameters():
    m = nn.MultiheadAttention(6, 2).double()
    npad.nn.init.normal_(m.in_proj_bias, std=0.1)
    npad.nn.init.normal_(m.out_proj.bias, std=0.1)
    rng = numpy.random.default_rng(7)
    q, k, v = rng.standard_normal((3, 2, 6)), rng.standard_normal((4, 2, 6)), rng.standard_normal((4, 2, 6))
    gradcheck(lambda a, b, c: m(a, b, c)[0], q, k, v, direction=True, seed=1)
    gradcheck(lambda a, b, c: m(a, b, c)[1], q, k, v, direction=True, seed=2)
    names = param_gradcheck(m, lambda: m(npad.tensor(q), npad.tensor(k), npad.tensor(v))[0])
    assert set(names) == {"in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"}


# ---- Transformer layers ---------------------------------------------------------------
@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_gradcheck(norm_first):
    layer = nn.TransformerEncoderLayer(6, 2, dim_feedforward=10, dropout=0.0, norm_first=norm_first).double()
    rng = numpy.random.default_rng(8)
    src, pos = rng.standard_normal((4, 2, 6)), rng.standard_normal((4, 1, 6))
    gradcheck(lambda s, p: layer(s, pos=p), src, pos, direction=True, seed=3)
    names = param_gradcheck(layer, lambda: layer(npad.tensor(src), pos=npad.tensor(pos)))
    assert len(names) == len(list(layer.parameters()))


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_gradcheck(norm_first):
    layer = nn.TransformerDecoderLayer(6, 2, dim_feedforward=10, dropout=0.0, norm_first=norm_first).double()
    rng = numpy.random.default_rng(9)
    tgt, mem = rng.standard_normal((3, 2, 6)), rng.standard_normal((4, 2, 6))
    pos, qpos = rng.standard_normal((4, 1, 6)), rng.standard_normal((3, 1, 6))
    gradcheck(lambda t, m, p, qp: layer(t, m, pos=p, query_pos=qp), tgt, mem, pos, qpos, direction=True, seed=4)
    names = param_gradcheck(layer, lambda: layer(npad.tensor(tgt), npad.tensor(mem), pos=npad.tensor(pos),
                                                 query_pos=npad.tensor(qpos)))
    assert len(names) == len(list(layer.parameters()))


def test_encoder_layer_post_norm_matches_numpy():
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=12, dropout=0.0).double()
    rng = numpy.random.default_rng(10)
    src, pos = rng.standard_normal((5, 2, 8)), rng.standard_normal((5, 1, 8))

    def ln(x, norm):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / numpy.sqrt(var + 1e-5) * norm.weight.numpy() + norm.bias.numpy()

    lin = lambda x, m: x @ m.weight.numpy().T + m.bias.numpy()  # noqa: E731
    qk = src + pos
    a = np_mha(layer.self_attn, qk, qk, src)[0]             # pos on queries and keys, not on values
    x = ln(src + a, layer.norm1)
    x = ln(x + lin(numpy.maximum(lin(x, layer.linear1), 0), layer.linear2), layer.norm2)
    out = layer(npad.tensor(src), pos=npad.tensor(pos))
    numpy.testing.assert_allclose(out.numpy(), x, rtol=1e-10, atol=1e-12)
    names = [n for n, _ in layer.named_parameters()]
    for n in ("self_attn.in_proj_weight", "linear1.weight", "linear2.weight", "norm1.weight", "norm2.bias"):
        assert n in names


def test_decoder_layer_batch_first_agrees_with_sequence_first():
    npad.manual_seed(3)
    a = nn.TransformerDecoderLayer(8, 2, dim_feedforward=12, dropout=0.0).double()
    b = nn.TransformerDecoderLayer(8, 2, dim_feedforward=12, dropout=0.0, batch_first=True).double()
    b.load_state_dict(a.state_dict())
    rng = numpy.random.default_rng(11)
    tgt, mem = rng.standard_normal((3, 2, 8)), rng.standard_normal((4, 2, 8))
    pos, qpos = rng.standard_normal((4, 1, 8)), rng.standard_normal((3, 1, 8))
    oa = a(npad.tensor(tgt), npad.tensor(mem), pos=npad.tensor(pos), query_pos=npad.tensor(qpos))
    ob = b(npad.tensor(tgt.transpose(1, 0, 2)), npad.tensor(mem.transpose(1, 0, 2)),
           pos=npad.tensor(pos[:, 0]), query_pos=npad.tensor(qpos[:, 0]))
    numpy.testing.assert_allclose(ob.numpy().transpose(1, 0, 2), oa.numpy(), rtol=1e-10, atol=1e-12)


def test_dropout_only_in_training():
    layer = nn.TransformerDecoderLayer(8, 2, dim_feedforward=16, dropout=0.3)
    tgt, mem = npad.randn(4, 2, 8), npad.randn(5, 2, 8)
    o1, o2 = layer(tgt, mem).numpy(), layer(tgt, mem).numpy()
    assert not numpy.allclose(o1, o2)                        # training: random masks differ
    layer.eval()
    e1, e2 = layer(tgt, mem).numpy(), layer(tgt, mem).numpy()
    numpy.testing.assert_array_equal(e1, e2)
    ref = nn.TransformerDecoderLayer(8, 2, dim_feedforward=16, dropout=0.0)
    ref.load_state_dict(layer.state_dict())
    numpy.testing.assert_allclose(e1, ref(tgt, mem).numpy(), rtol=1e-6, atol=1e-6)
    m = nn.MultiheadAttention(8, 2, dropout=0.5).eval()
    _, w = m(tgt, mem, mem)
    numpy.testing.assert_allclose(w.numpy().sum(-1), 1.0, rtol=1e-6)


def test_gelu_and_bad_activation():
    layer = nn.TransformerEncoderLayer(4, 1, dim_feedforward=8, dropout=0.0, activation="gelu")
    assert layer(npad.randn(3, 2, 4)).shape == (3, 2, 4)
    with pytest.raises(ValueError):
        nn.TransformerEncoderLayer(4, 1, activation="swish-ish")
