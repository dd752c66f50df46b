"""npad.io: atomic writes and h5 checkpoints."""
import os

import h5py
import numpy as np
import pytest

from npad import io
from npad import progress as P


def test_atomic_write_replaces_and_cleans_up(tmp_path):
    p = tmp_path / "sub" / "a.txt"
    with io.atomic_write(p, "w") as f:
        f.write("one")
    assert p.read_text() == "one"
    with pytest.raises(RuntimeError):
        with io.atomic_write(p, "w") as f:
            f.write("two-half")
            raise RuntimeError("crash")
    assert p.read_text() == "one"  # old content kept
    assert sorted(os.listdir(p.parent)) == ["a.txt"]  # no temp files left
    with io.atomic_write(p) as f:
        f.write(b"bytes")
    assert p.read_bytes() == b"bytes"
    with pytest.raises(ValueError, match="mode"):
        with io.atomic_write(p, "a"):
            pass


def test_atomic_path(tmp_path):
    p = tmp_path / "x.bin"
    with io.atomic_path(p) as tmp:
        assert tmp.parent == p.parent and tmp != p
        tmp.write_bytes(b"abc")
        assert not p.exists()
    assert p.read_bytes() == b"abc"
    assert (p.stat().st_mode & 0o777) == io.default_mode()  # not mkstemp's private 0o600


class FakeCupy:
    """Mimics a cupy.ndarray: has .get() returning the host copy."""

    def __init__(self, a):
        self._a = a

    def get(self):
        return self._a


def test_checkpoint_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    state = {
        "encoder.conv1.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "encoder/odd/name": np.arange(5, dtype=np.int64),
        "bn.num_batches_tracked": np.array(7),
        "flow.0.scale": FakeCupy(np.ones(3, np.float16)),
        "a%b": np.zeros((0, 2)),
    }
    config = {"method": "cflow", "size": 256, "layers": ["l2", "l3"], "lr": np.float32(2e-4), "k": (1, 2)}
    stats = {"mean": np.float64(1.5), "std": np.array([2.0, 3.0]), "per_layer": {"l2": np.ones(2)}}
    p = io.save_checkpoint(tmp_path / "m.h5", state, config, stats, method="cflow")
    ck = io.load_checkpoint(p)
    assert list(ck["state"]) == list(state)  # order kept
    for k, v in state.items():
        v = v.get() if isinstance(v, FakeCupy) else v
        np.testing.assert_array_equal(ck["state"][k], v)
        assert ck["state"][k].dtype == v.dtype and ck["state"][k].shape == v.shape
    assert ck["config"] == {"method": "cflow", "size": 256, "layers": ["l2", "l3"], "lr": pytest.approx(2e-4),
                            "k": [1, 2]}
    assert float(ck["stats"]["mean"]) == 1.5
    np.testing.assert_array_equal(ck["stats"]["per_layer"]["l2"], np.ones(2))
    assert ck["method"] == "cflow" and ck["format_version"] == io.FORMAT_VERSION
    ck2 = io.load_checkpoint(io.save_checkpoint(tmp_path / "n.h5", {"w": np.ones(2)}))
    assert ck2["stats"] is None and ck2["method"] is None and ck2["config"] == {}


def test_checkpoint_bad_inputs(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        io.save_checkpoint(tmp_path / "c.h5", {"w": np.ones(1)}, {"f": object()})
    assert not (tmp_path / "c.h5").exists()
    assert os.listdir(tmp_path) == []  # failed save leaves nothing behind
    with pytest.raises(TypeError, match="dict"):
        io.save_checkpoint(tmp_path / "c.h5", [np.ones(1)])


def test_checkpoint_foreign_truncated_missing(tmp_path):
    good = io.save_checkpoint(tmp_path / "good.h5", {"w": np.ones((100, 100))}, {"a": 1})
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(io.CheckpointError, match="trunc.h5"):
        io.load_checkpoint(trunc)
    txt = tmp_path / "notes.h5"
    txt.write_text("hello")
    with pytest.raises(io.CheckpointError, match=r"notes\.h5.*not an HDF5"):
        io.load_checkpoint(txt)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.ones(3)
    with pytest.raises(io.CheckpointError, match=r"foreign\.h5.*not an npad checkpoint"):
        io.load_checkpoint(foreign)
    with pytest.raises(io.CheckpointError, match="missing.h5.*does not exist"):
        io.load_checkpoint(tmp_path / "missing.h5")


def test_to_numpy():
    a = np.ones(3)
    assert io.to_numpy(a) is a
    np.testing.assert_array_equal(io.to_numpy(FakeCupy(a)), a)
    assert io.to_numpy([1, 2]).tolist() == [1, 2]


def test_progress_quiet(monkeypatch, capsys):
    monkeypatch.setenv("NPAD_QUIET", "1")
    assert P.is_quiet() is True
    assert list(P.progress(range(5), desc="x")) == list(range(5))
    assert capsys.readouterr().err == ""
    monkeypatch.delenv("NPAD_QUIET")
    assert P.is_quiet() is True  # pytest captures: not a terminal
    assert P.is_quiet(False) is False
    bar = P.progress(range(3), desc="y", quiet=False, unit="img")
    assert list(bar) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "y" in err and "3/3" in err and "img/s" in err
