"""npad.kernels: every fast conv2d kernel equals the reference (npad/functional/conv.py, itself checked
by central differences in tests/functional/test_conv.py) on the shapes it claims, forward and every
gradient; the dispatch picks the kernel we expect, and the reference runs when asked or when the
kernels are gone."""
import os
import subprocess
import sys
from pathlib import Path

import numpy
import pytest

import npad
import npad.functional as F
from npad import Tensor, kernels
from npad.kernels import cpu

pytestmark = pytest.mark.cpu            # NumPy kernels: on the CPU under NPAD_TEST_XP=strict too

rng = numpy.random.default_rng(0)

CASES = [
    # (kernel, B, C, H, W, O, (KH, KW), stride, padding, dilation, groups, channels-last input)
    ("Pointwise", 2, 5, 7, 9, 6, (1, 1), 1, 0, 1, 1, False),
    ("Pointwise", 3, 5, 7, 9, 6, (1, 1), 1, 0, 1, 1, True),
    ("Pointwise", 1, 3, 5, 5, 2, (1, 1), 1, 0, 1, 1, True),           # batch 1
    ("KernelRows", 2, 3, 7, 8, 4, (3, 3), 1, 1, 1, 1, False),
    ("KernelRows", 3, 4, 9, 7, 5, (3, 3), 1, 1, 1, 1, True),
    ("KernelRows", 1, 3, 8, 11, 2, (5, 3), 1, (2, 0), (2, 1), 1, False),   # dilated, no horizontal padding
    ("KernelRows", 2, 2, 6, 7, 3, (2, 2), 1, "same", (1, 2), 1, False),    # even kernel, padding at the end
    ("KernelRows", 2, 3, 7, 6, 3, (3, 1), 1, ((2, 0), (1, 3)), 1, 1, True),  # asymmetric
    ("KernelRows", 1, 4, 6, 6, 3, (3, 3), 1, 0, 1, 1, True),          # no padding: no copy of the input
    ("Depthwise", 2, 6, 7, 8, 6, (3, 3), 1, 1, 1, 6, False),
    ("Depthwise", 3, 6, 9, 9, 6, (3, 3), 2, 1, 1, 6, True),
    ("Depthwise", 1, 5, 11, 13, 5, (5, 3), 3, (1, 2), 2, 5, False),    # stride 3, dilated: empty phase cells
    ("Depthwise", 2, 4, 8, 9, 4, (3, 3), (1, 2), (2, 1), (2, 3), 4, True),
    ("Depthwise", 2, 300, 5, 8, 300, (3, 3), 1, 1, 1, 300, True),     # blocks of J < Wo pixels
    ("Depthwise", 2, 4, 6, 7, 4, (3, 3), 1, 0, 2, 4, False),         # output smaller than the padded input
    ("Im2colGemm", 2, 3, 9, 8, 4, (3, 3), 2, 1, 1, 1, False),
    ("Im2colGemm", 3, 4, 11, 10, 5, (3, 3), 3, 1, 1, 1, True),
    ("Im2colGemm", 1, 3, 9, 11, 2, (3, 2), (1, 2), 1, (2, 1), 1, False),
    ("Im2colGemm", 2, 4, 7, 7, 3, (1, 1), 2, 0, 1, 1, True),          # 1x1, stride 2
    ("Im2colGemm", 2, 4, 5, 6, 3, (1, 1), 1, 1, 1, 1, False),         # 1x1 with padding
    ("Im2colGemm", 2, 3, 5, 9, 4, (1, 3), 1, (0, 1), 1, 1, False),    # one kernel row
    (None, 2, 4, 7, 6, 6, (3, 3), 1, 1, 1, 2, False),                 # grouped: the reference
    (None, 2, 3, 7, 6, 6, (3, 3), 2, 1, 1, 3, True),                  # depthwise with multiplier 2
]


def _rand(*shape):
    return rng.standard_normal(shape)


def _channels_last(a):
    return numpy.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _run(reference, x, w, b, gy, args, grads=(True, True, True)):
    """y, dX, dW, db of conv2d (None where not asked) and the kernel that ran, under use_reference(reference)."""
    with kernels.use_reference(reference):
        xt, wt = Tensor(x, requires_grad=grads[0]), Tensor(w, requires_grad=grads[1])
        bt = None if b is None else Tensor(b, requires_grad=grads[2])
        y = F.conv2d(xt, wt, bt, *args)
        kernel = y._creator.kernel
        y.backward(gy)
    got = [y.data] + [None if t is None or t.grad is None else t.grad.data for t in (xt, wt, bt)]
    return kernel, got


def _assert_equal(got, ref, dtype):
    tol = 1e-11 if dtype == numpy.float64 else 3e-5
    for name, a, r in zip(("y", "dX", "dW", "db"), got, ref):
        assert (a is None) == (r is None), name
        if r is not None:
            assert a.shape == r.shape and a.dtype == r.dtype, name
            err = numpy.abs(a - r).max() / max(1.0, numpy.abs(r).max())
            assert err <= tol, f"{name}: relative error {err:.2e}"


@pytest.fixture(autouse=True)
def _three_threads():
    """Enough threads that every batch above is split."""
    before = npad.get_num_threads()
    npad.set_num_threads(3)
    yield
    npad.set_num_threads(before)


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_kernel_equals_reference(case, bias, dtype):
    name, B, C, H, W, O, k, s, p, d, g, cl = case
    x = rng.standard_normal((B, C, H, W)).astype(dtype)
    w = rng.standard_normal((O, C // g) + k).astype(dtype)
    b = rng.standard_normal(O).astype(dtype) if bias else None
    if cl:
        x = _channels_last(x)
    with npad.no_grad():
        shape = F.conv2d(Tensor(x), Tensor(w), None, s, p, d, g).shape
    gy = rng.standard_normal(shape).astype(dtype)
    gy = _channels_last(gy) if cl else gy
    kernel, got = _run(False, x, w, b, gy, (s, p, d, g))
    assert (type(kernel).__name__ if kernel else None) == name
    none, ref = _run(True, x, w, b, gy, (s, p, d, g))
    assert none is None
    _assert_equal(got, ref, dtype)


@pytest.mark.parametrize("bands", ["one-row", "all-images"])
@pytest.mark.parametrize("case", [c for c in CASES if c[0] == "Depthwise"], ids=lambda c: f"{c[7]}-{c[9]}")
def test_depthwise_bands(case, bands, monkeypatch):
    """Bands of one output row (several per image, split over the threads), or one band of all the
    images (one thread), give the same numbers."""
    if bands == "one-row":
        monkeypatch.setattr(cpu, "BAND_BYTES", 1)
    else:
        npad.set_num_threads(1)                                      # the fixture restores the count
    test_kernel_equals_reference(case, True, numpy.float64)


@pytest.mark.parametrize("clip", [(0.0, 6.0), (0.0, None), (None, 0.5)], ids=["relu6", "relu", "upper"])
@pytest.mark.parametrize("kernel", ["Depthwise", "Pointwise", "KernelRows", "Im2colGemm"])
def test_kernel_applies_a_clip(kernel, clip):
    """forward(..., clip=(lo, hi)) = the conv then clip(lo, hi), for the ONNX fast path's Conv + Clip / Relu."""
    case = next(c for c in CASES if c[0] == kernel and c[-1])
    _, B, C, H, W, O, k, s, p, d, g, cl = case
    x = _channels_last(rng.standard_normal((B, C, H, W)))
    w, b = rng.standard_normal((O, C // g) + k), rng.standard_normal(O)
    with kernels.use_reference(False):                               # also under NPAD_REFERENCE=1
        ref = F.conv2d(Tensor(x, requires_grad=True), Tensor(w), Tensor(b), s, p, d, g)
    assert type(ref._creator.kernel).__name__ == kernel
    got = ref._creator.kernel.forward(x, w, b, False, clip=clip)
    lo, hi = clip
    numpy.testing.assert_allclose(got, numpy.clip(ref.data, -numpy.inf if lo is None else lo,
                                                  numpy.inf if hi is None else hi), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shift", [(2, 3), (0, 0), (-1, -2), (4, -5)])
@pytest.mark.parametrize("phases", [1, 2, 3])
def test_shifted_rows(shift, phases):
    """shifted_rows = rows of the image moved by (top, left) with zeros around, columns dealt into phases."""
    xs = rng.standard_normal((2, 5, 7, 3))
    top, left = shift
    big = numpy.zeros((2, 30, 40, 3))
    big[:, 10 + top:15 + top, 10 + left:17 + left] = xs               # xz, offset by 10 rows and columns
    for r0, r1 in ((0, 9), (3, 4), (-2, 12), (6, 6)):
        width = 5
        out = cpu.shifted_rows(xs, r0, r1, top, left, phases, width, numpy.full((2, r1 - r0, phases, width, 3), 9.0))
        for f in range(phases):
            cols = [10 + k * phases + f for k in range(width)]
            numpy.testing.assert_array_equal(out[:, :, f], big[:, 10 + r0:10 + r1][:, :, cols])


@pytest.mark.parametrize("grads", [(True, False), (False, True)], ids=["frozen-weight", "input-constant"])
@pytest.mark.parametrize("case", [c for c in CASES if c[0]], ids=[c[0] for c in CASES if c[0]])
def test_kernel_gives_only_the_gradients_asked(case, grads):
    """A frozen weight keeps no im2col buffer; a constant input gets no dX."""
    name, B, C, H, W, O, k, s, p, d, g, cl = case
    x, w = rng.standard_normal((B, C, H, W)), rng.standard_normal((O, C // g) + k)
    x = _channels_last(x) if cl else x
    with npad.no_grad():
        gy = rng.standard_normal(F.conv2d(Tensor(x), Tensor(w), None, s, p, d, g).shape)
    kernel, got = _run(False, x, w, None, gy, (s, p, d, g), grads)
    _, ref = _run(True, x, w, None, gy, (s, p, d, g), grads)
    _assert_equal(got, ref, numpy.float64)
    if not grads[1]:
        assert all(getattr(kernel, a, None) is None for a in ("xm", "rows", "xh", "cols"))


@pytest.mark.parametrize("stride", [1, 2], ids=["rows", "im2col"])
def test_kept_buffer_survives_retain_graph(stride):
    """Im2colGemm writes dX's columns into its kept im2col buffer, KernelRows frees it: not while the
    graph is retained for another backward."""
    x = npad.tensor(rng.standard_normal((2, 3, 7, 7)), requires_grad=True)
    w = npad.tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    loss = (F.conv2d(x, w, stride=stride, padding=1) ** 2).sum()
    loss.backward(retain_graph=True)
    gx, gw = x.grad.numpy().copy(), w.grad.numpy().copy()
    loss.backward()
    numpy.testing.assert_allclose(x.grad.numpy(), 2 * gx, rtol=1e-12)
    numpy.testing.assert_allclose(w.grad.numpy(), 2 * gw, rtol=1e-12)


def test_threads_give_the_same_result():
    """The kernels' threaded copies and einsums (parallel_over) give what one thread gives."""
    from npad import backend
    x = _rand(3, 5, 9, 8).astype("float32")
    cases = ((_rand(4, 5, 3, 3), 1, 1), (_rand(5, 1, 3, 3), 5, 2), (_rand(4, 5, 3, 3), 1, 2))
    before = backend.get_num_threads()
    outs = []
    try:
        for n in (1, 2, 3):
            backend.set_num_threads(n)
            res = []
            for w, g, s in cases:
                xt, wt = Tensor(x, requires_grad=True), Tensor(w.astype("float32"), requires_grad=True)
                y = F.conv2d(xt, wt, stride=s, padding=1, groups=g)
                y.backward(numpy.ones(y.shape, "float32"))
                res += [numpy.array(t) for t in (y.data, getattr(xt.grad, "data", xt.grad), getattr(wt.grad, "data", wt.grad))]
            outs.append(res)
    finally:
        backend.set_num_threads(before)
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            numpy.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-5)


def test_tall_matmul_blocks_match_one_matmul():
    a, b, bias = rng.standard_normal((5000, 7)), rng.standard_normal((7, 3)), rng.standard_normal(3)
    for chunk in (1 << 19, 256 * 3 * 8, 1000):                  # one block; blocks of 256 rows, last short
        numpy.testing.assert_allclose(cpu.tall_matmul(a, b, chunk_bytes=chunk), a @ b, rtol=1e-12)
        numpy.testing.assert_allclose(cpu.tall_matmul(a, b, bias, chunk_bytes=chunk), a @ b + bias, rtol=1e-12)


def test_threaded_helpers_match_the_reference():
    from npad.functional import conv as reference
    x = rng.standard_normal((3, 4, 5, 6))
    pads = (1, 2, 0, 3)
    numpy.testing.assert_array_equal(cpu.pad_nhwc(x, pads), reference.pad_nhwc(x, pads))
    cols = rng.standard_normal((3, 4, 3, 2, 3, 5))
    numpy.testing.assert_allclose(cpu.col2im(cols, (3, 9, 11, 5), (2, 3), (2, 1)),
                                  reference.col2im(cols, (3, 9, 11, 5), (2, 3), (2, 1)), rtol=1e-14)


def test_reference_switch(monkeypatch):
    x, w = Tensor(rng.standard_normal((2, 3, 6, 6))), Tensor(rng.standard_normal((4, 3, 3, 3)))
    kernel = lambda: F.conv2d(x, w, padding=1)._creator              # noqa: E731
    with npad.enable_grad():
        x.requires_grad = True
        monkeypatch.delenv("NPAD_REFERENCE", raising=False)
        assert kernel().kernel is not None
        monkeypatch.setenv("NPAD_REFERENCE", "1")                    # read at every decision
        assert kernel().kernel is None
        with kernels.use_reference(False):
            assert kernel().kernel is not None
        assert kernel().kernel is None
        monkeypatch.setenv("NPAD_REFERENCE", "0")
        assert kernel().kernel is not None
        with kernels.use_reference():
            assert kernel().kernel is None and kernels.reference_only()
        assert kernel().kernel is not None


def test_everything_works_without_the_kernels():
    """With npad/kernels/ gone (blocked from importing), conv2d runs the reference: same numbers."""
    code = ("import sys; sys.modules['npad.kernels'] = None\n"
            "import numpy, npad, npad.functional as F\n"
            "x = npad.tensor(numpy.arange(2 * 3 * 36.).reshape(2, 3, 6, 6) / 100, requires_grad=True)\n"
            "w = npad.tensor(numpy.arange(4 * 3 * 9.).reshape(4, 3, 3, 3) / 100, requires_grad=True)\n"
            "y = F.conv2d(x, w, padding=1, stride=2); y.sum().backward()\n"
            "assert y._creator.kernel is None\n"
            "print(repr([float(y.data.sum()), float(x.grad.data.sum()), float(w.grad.data.sum())]))")
    env = {k: v for k, v in os.environ.items() if k != "NPAD_REFERENCE"}
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    x = npad.tensor(numpy.arange(2 * 3 * 36.).reshape(2, 3, 6, 6) / 100, requires_grad=True)
    w = npad.tensor(numpy.arange(4 * 3 * 9.).reshape(4, 3, 3, 3) / 100, requires_grad=True)
    with kernels.use_reference(False):
        y = F.conv2d(x, w, padding=1, stride=2)
    y.sum().backward()
    assert y._creator.kernel is not None
    numpy.testing.assert_allclose(eval(out.stdout), [float(y.data.sum()), float(x.grad.data.sum()),
                                                     float(w.grad.data.sum())], rtol=1e-12)


def test_cupy_arrays_never_reach_a_numpy_kernel():
    class FakeCupy:                                                   # not a numpy.ndarray
        shape = (2, 3, 6, 6)
    assert kernels.conv2d_kernel(FakeCupy(), numpy.zeros((4, 3, 3, 3)), (1, 1), (1, 1, 1, 1), (1, 1), 1, (6, 6)) is None


# ---- the coupling flow's unrecorded forward (kernels/flows.py) ---------------------------------
def _decoder(C, P, blocks=3):
    from npad.flows import cflow_decoder
    flow = cflow_decoder(C, P, blocks, seed=1).double()
    for p in flow.parameters():                                      # away from the initial identity-like state
        p.data[...] = rng.standard_normal(p.shape) * 0.3
    return flow


def _variant(name):
    """cflow_decoder options of a variant ("scaled": the default), skipped where this npad lacks them."""
    import inspect
    from npad.flows import cflow_decoder
    opts = {"scaled": {}, "unscaled": {"soft_clamp": "unscaled"}, "no-condition": {"cond_channels": 0}}[name]
    if "soft_clamp" in opts and "soft_clamp" not in inspect.signature(cflow_decoder).parameters:
        pytest.skip("npad.flows has no soft_clamp option")
    if "cond_channels" in opts:
        try:
            cflow_decoder(4, 0, 1)
        except Exception:                                             # noqa: BLE001
            pytest.skip("npad.flows has no unconditional couplings")
    return opts


@pytest.mark.parametrize("variant", ["scaled", "unscaled", "no-condition"])
@pytest.mark.parametrize("threads", [False, True], ids=["one-thread", "chunks-in-threads"])
@pytest.mark.parametrize("B,n,C", [(3, 7, 6), (1, 700, 5), (40, 30, 8)], ids=["small", "one-image", "many-images"])
def test_flow_kernel_equals_the_flow(B, n, C, threads, variant, monkeypatch):
    """CouplingFlow.forward(x, cond) = flow(x rows, cond repeated per image), chunked and threaded or not."""
    from npad.flows import cflow_decoder
    from npad.kernels import flows
    opts = _variant(variant)
    P = opts.get("cond_channels", 8)
    flow = cflow_decoder(C, P, 3, seed=1, **{k: v for k, v in opts.items() if k != "cond_channels"}).double()
    for p in flow.parameters():                                      # away from the initial identity-like state
        p.data[...] = rng.standard_normal(p.shape) * 0.3
    x, cond = rng.standard_normal((B, n, C)), (rng.standard_normal((n, P)) if P else None)
    monkeypatch.setattr(flows, "CHUNK_ROWS", 64)                     # several chunks even at these sizes
    monkeypatch.setattr(flows, "cpu_tuned", lambda: threads)
    with kernels.use_reference(False):                               # also under NPAD_REFERENCE=1
        kernel = kernels.flow_kernel(flow, x)
    assert isinstance(kernel, flows.CouplingFlow)
    z, log_det = kernel.forward(x, cond)
    with npad.no_grad():
        zr, ldr = flow(Tensor(x.reshape(-1, C)), None if cond is None else Tensor(numpy.tile(cond, (B, 1))))
    numpy.testing.assert_allclose(z.reshape(-1, C), zr.data, rtol=1e-11, atol=1e-11)
    numpy.testing.assert_allclose(log_det.reshape(-1), ldr.data, rtol=1e-11, atol=1e-11)


def test_flow_kernel_grid_condition():
    """cond = (cols w x Pc, rows h x Pr) stands for the h w x (Pc + Pr) condition [cols[j], rows[i]]."""
    B, h, w, C = 2, 3, 5, 6
    flow = _decoder(C, 8)
    x, cols, rows = rng.standard_normal((B, h * w, C)), rng.standard_normal((w, 3)), rng.standard_normal((h, 5))
    dense = numpy.concatenate([numpy.tile(cols, (h, 1)), numpy.repeat(rows, w, axis=0)], axis=1)  # hw x 8
    with kernels.use_reference(False):
        kernel = kernels.flow_kernel(flow, x)
    for got, ref in zip(kernel.forward(x, (cols, rows)), kernel.forward(x, dense)):
        numpy.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_flow_kernel_serves_only_the_coupling_flow_it_knows():
    from npad.flows import ConditionalAffineCoupling, SequenceFlow
    from npad.nn import Linear, Sequential, Tanh
    x = numpy.zeros((2, 3, 4))
    odd = SequenceFlow(ConditionalAffineCoupling(4, 4, subnet_constructor=lambda i, o: Sequential(
        Linear(i, 8), Tanh(), Linear(8, o))))
    with kernels.use_reference(False):
        assert kernels.flow_kernel(_decoder(4, 4), x) is not None
        assert kernels.flow_kernel(odd, x) is None                    # another subnet: the module runs
        assert kernels.flow_kernel(Linear(4, 4), x) is None
    with kernels.use_reference():
        assert kernels.flow_kernel(_decoder(4, 4), x) is None


def test_cflow_scoring_equals_the_reference():
    """CFLOW's scoring path with the flow kernel gives the decoders' own log p / C (float32)."""
    from npad.methods.cflow import CFlow
    model = CFlow(quick=True, n_blocks=2)
    model.stats = {}
    for i, c in enumerate(model.encoder.channels):
        model.stats[f"feat_mean_{i}"], model.stats[f"feat_std_{i}"] = rng.standard_normal(c), rng.random(c) + 0.5
    feat = rng.standard_normal((3, model.encoder.channels[1], 5, 6)).astype("float32")
    with kernels.use_reference(False):
        assert kernels.flow_kernel(model.decoders[1], feat) is not None
        fast = model._scale_log_prob(1, feat)
    with kernels.use_reference():
        ref = model._scale_log_prob(1, feat)
    assert fast.shape == ref.shape == (3, 5, 6)
    numpy.testing.assert_allclose(fast, ref, rtol=2e-5, atol=2e-5)


# ---- the ONNX fast path's Conv + Relu / Clip (onnx/fast.py) --------------------------------------
def _conv_act_model(opset=17):
    """input -> depthwise Conv -> Clip(0, 6) -> 1x1 Conv (bias) -> Relu -> 3x3 Conv s2 -> Clip(max only);
    the first Conv's output is also a graph output in the 'tapped' variant."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    r = numpy.random.default_rng(5)
    inits = {"w1": r.standard_normal((8, 1, 3, 3)), "w2": r.standard_normal((6, 8, 1, 1)), "b2": r.standard_normal(6),
             "w3": r.standard_normal((4, 6, 3, 3)) * 0.3, "lo": numpy.array(0.0), "hi": numpy.array(6.0),
             "hi3": numpy.array(0.5)}
    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], group=8, kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c1", "lo", "hi"], ["a1"]),
             helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["c2"], ["a2"]),
             helper.make_node("Conv", ["a2", "w3"], ["c3"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c3", "", "hi3"], ["a3"])]
    g = helper.make_graph(nodes, "acts", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 8, 9, 10])],
                          [helper.make_tensor_value_info("a3", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(v.astype(numpy.float32), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def test_onnx_conv_and_activation_run_as_one_step():
    from npad.onnx import OnnxModule, fast
    model = _conv_act_model()
    x = rng.standard_normal((3, 8, 9, 10)).astype("float32")
    ort = pytest.importorskip("onnxruntime")
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    m = OnnxModule(model, frozen=True)
    with npad.no_grad():
        fused = m(npad.tensor(x)).numpy()
        with kernels.use_reference():                                # no kernel: the two ops of the table
            plain = m(npad.tensor(x)).numpy()
        both = m.run(x, ["c1", "a3"])                                # c1 wanted: its Conv and Clip stay apart
    plans = list(m._plans.values())
    joined = [[fast.FUSED in s.node.attrs for s in steps] for _, steps in plans]
    assert [sum(j) for j in joined] == [3, 2] and [len(j) for j in joined] == [3, 4]   # one plan per targets
    for got in (fused, plain, both[1].numpy()):
        numpy.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert fused.max() <= 0.5 and (both[0].numpy() < 0).any()        # the last clip ran; c1 is the raw conv

    m2 = OnnxModule(model, frozen=False)                               # recorded: the ops of the table, gradients
    y = m2(npad.tensor(x))
    y.sum().backward()
    numpy.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-5)
    assert m2.w1.grad is not None and numpy.abs(m2.w1.grad.numpy()).sum() > 0
