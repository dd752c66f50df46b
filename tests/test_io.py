"""npad.io: atomic writes and h5 checkpoints."""
import os
import time

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


# --- hostile checkpoints: nothing outside the file is read, nothing unbounded allocated ----------------------------

def _hostile(tmp_path, name, add):
    """A valid checkpoint with ``add(state_group)`` run on it, listed in npad_keys as 'bad'."""
    p = io.save_checkpoint(tmp_path / f"{name}.h5", {"w": np.arange(4.0)}, {"a": 1}, method="m")
    with h5py.File(p, "a") as f:
        add(f["state"])
        f["state"].attrs["npad_keys"] = '["w", "bad"]'
    return p


def _virtual(g):
    layout = h5py.VirtualLayout(shape=(4,), dtype="f8")
    layout[:] = h5py.VirtualSource(g.file.filename, "/state/w", shape=(4,))
    g.create_virtual_dataset("bad", layout)


def _cycle(g):
    sub = g.create_group("bad")
    sub.attrs["npad_keys"] = '["loop"]'
    sub["loop"] = sub


def _deep(g):
    for _ in range(io.MAX_DEPTH + 2):
        g = g.create_group("bad")
        g.attrs["npad_keys"] = '["bad"]'


HOSTILE_H5 = {
    "external_storage": (lambda g: g.create_dataset("bad", shape=(16,), dtype="u1",
                                                    external=[("/etc/hostname", 0, 16)]),
                         "external storage.*/etc/hostname"),
    "external_link": (lambda g: g.__setitem__("bad", h5py.ExternalLink("/etc/hostname", "/x")),
                      "external link.*/etc/hostname"),
    "soft_link": (lambda g: g.__setitem__("bad", h5py.SoftLink("/state/w")), "soft link"),
    "virtual": (_virtual, "virtual dataset"),
    "huge_declared": (lambda g: g.create_dataset("bad", shape=(10 ** 6, 10 ** 6), dtype="f8", chunks=(1, 1024),
                                                 compression="gzip"), r"shape \(1000000, 1000000\).*stores only"),
    "hard_link_cycle": (_cycle, "linked twice"),
    "shared_hard_link": (lambda g: g.__setitem__("bad", g["w"]), "linked twice"),
    "deep": (_deep, "nested deeper"),
    "object_dtype": (lambda g: g.create_dataset("bad", data=["a", "bc"], dtype=h5py.string_dtype()),
                     "unsupported dataset"),
    "missing_key": (lambda g: None, "missing"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_H5))
def test_hostile_checkpoint_refused(tmp_path, kind):
    add, match = HOSTILE_H5[kind]
    p = _hostile(tmp_path, kind, add)
    with pytest.raises(io.CheckpointError, match=f"{kind}.h5: /state/bad.*{match}") as e:
        io.load_checkpoint(p)
    assert "\n" not in str(e.value)
    assert isinstance(e.value, ValueError) and isinstance(e.value, OSError)


def test_checkpoint_size_cap(tmp_path, monkeypatch):
    p = io.save_checkpoint(tmp_path / "big.h5", {"w": np.ones((64, 64))})  # 32 KiB of float64
    assert io.load_checkpoint(p)["state"]["w"].shape == (64, 64)
    with pytest.raises(io.CheckpointError, match=r"big.h5: /state/w: declares.*max_bytes = 1000.*MAX_CHECKPOINT"):
        io.load_checkpoint(p, max_bytes=1000)
    monkeypatch.setattr(io, "MAX_CHECKPOINT_BYTES", 64 * 64 * 8)  # the documented knob, met exactly
    assert io.load_checkpoint(p)["state"]["w"].sum() == 64 * 64


def test_checkpoint_mistyped_attributes(tmp_path):
    p = io.save_checkpoint(tmp_path / "typed.h5", {"w": np.ones(2)})
    for name, value, match in [("config", "[1, 2]", "config.*not a JSON object"),
                               ("config", "{nope", "typed.h5"),
                               ("format_version", "one", "format version 'one'"),
                               ("format_version", np.arange(3), "attribute 'format_version'")]:
        with h5py.File(p, "a") as f:
            old = f.attrs[name]
            f.attrs[name] = value
        with pytest.raises(io.CheckpointError, match=match):
            io.load_checkpoint(p)
        with h5py.File(p, "a") as f:
            f.attrs[name] = old
    with h5py.File(p, "a") as f:
        f["state"].attrs["npad_keys"] = "{}"
    with pytest.raises(io.CheckpointError, match="typed.h5: /state: attribute npad_keys"):
        io.load_checkpoint(p)


# --- nothing lost: crashed writers' temp files, file modes, output folders checked early ---------------------------

_KILLED_SAVE = """
import os, signal, sys, numpy as np
from npad import io
with io.atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"x" * 100000)
    os.kill(os.getpid(), signal.SIGKILL)
"""

_HELD_SAVE = """
import sys
from npad import io
with io.atomic_write(sys.argv[1]) as f:
    f.write(b"half")
    f.flush()
    print("writing", flush=True)
    sys.stdin.readline()
"""


def _temps(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(".tmp"))


def test_killed_save_leaves_old_file_and_its_temp_is_removed_next_time(tmp_path, monkeypatch):
    import subprocess
    import sys

    dest = tmp_path / "model.h5"
    io.save_checkpoint(dest, {"w": np.ones(3)})
    root = os.path.dirname(os.path.dirname(os.path.abspath(io.__file__)))
    # a concurrent writer, alive and still writing, then a save killed with SIGKILL half way
    writer = subprocess.Popen([sys.executable, "-c", _HELD_SAVE, str(tmp_path / "scores.csv")], cwd=root,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "writing\n"
        live = _temps(tmp_path)
        r = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(dest)], cwd=root)
        assert r.returncode == -9
        assert io.load_checkpoint(dest)["state"]["w"].tolist() == [1, 1, 1]  # the last good state
        killed = [n for n in _temps(tmp_path) if n not in live]
        assert len(killed) == 1 and killed[0].startswith(".model.h5.npad-")
        # another program's hidden temp file, and two of npad on another host: one recent, one a day old
        (tmp_path / ".other.tmp").write_text("not ours")
        far_recent = tmp_path / ".x.h5.npad-abcdef-1-zzzz.h5.tmp"
        far_old = tmp_path / ".y.h5.npad-abcdef-1-zzzz.h5.tmp"
        far_recent.write_text("")
        far_old.write_text("")
        os.utime(far_old, (time.time() - 86400,) * 2)
        monkeypatch.setattr(io, "_cleaned", set())  # as in the next run: this process saved here before
        io.save_checkpoint(dest, {"w": np.zeros(3)})
        assert _temps(tmp_path) == sorted(live + [".other.tmp", far_recent.name])
    finally:
        writer.communicate("\n", timeout=30)
    assert writer.returncode == 0 and (tmp_path / "scores.csv").read_bytes() == b"half"
    assert io.load_checkpoint(dest)["state"]["w"].tolist() == [0, 0, 0]


def test_save_keeps_private_mode(tmp_path):
    p = io.save_checkpoint(tmp_path / "private.h5", {"w": np.ones(1)})
    assert (p.stat().st_mode & 0o777) == io.default_mode()  # new file: the umask's mode
    os.chmod(p, 0o600)
    io.save_checkpoint(p, {"w": np.zeros(1)})
    assert (p.stat().st_mode & 0o777) == 0o600
    with io.atomic_write(tmp_path / "private.h5") as f:
        f.write(b"x")
    assert (p.stat().st_mode & 0o777) == 0o600


def test_long_names_get_a_temp_name(tmp_path):
    p = tmp_path / ("n" * 240 + ".h5")  # the temp name would pass 255 bytes if it held the whole name
    io.save_checkpoint(p, {"w": np.ones(1)})
    assert io.load_checkpoint(p)["state"]["w"].tolist() == [1]


def test_check_output_dir(tmp_path, monkeypatch):
    assert io.check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # nothing created
    assert io.check_writable(tmp_path / "model.h5") == tmp_path / "model.h5"
    assert os.listdir(tmp_path) == []  # the probe is gone
    (tmp_path / "afile").write_text("")
    with pytest.raises(NotADirectoryError, match="afile"):
        io.check_output_dir(tmp_path / "afile")
    with pytest.raises(NotADirectoryError, match=r"afile/sub.*afile is a file"):
        io.check_writable(tmp_path / "afile" / "sub" / "model.h5")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        io.check_writable(tmp_path)
    with pytest.raises(OSError, match="name too long.*" + "x" * 20):
        io.check_writable(tmp_path / ("x" * 300 + ".h5"))
    with pytest.raises(OSError, match="name too long"):
        io.check_output_dir(tmp_path, ["y" * 300])

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(io.tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError, match=f"output folder {tmp_path} is not writable"):
        io.check_output_dir(tmp_path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions and a non-root user")
def test_check_output_dir_read_only(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        with pytest.raises(PermissionError, match="ro is not writable"):
            io.check_output_dir(ro)
        with pytest.raises(PermissionError, match="ro is not writable"):
            io.check_output_dir(ro / "sub")
    finally:
        os.chmod(ro, 0o755)
