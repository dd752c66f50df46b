"""npad._threads: the thread pool, OpenBLAS thread counts, and tune_cpu as the only call that changes
BLAS settings (checked in fresh interpreters, since OpenBLAS's state is process-wide)."""
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy
import pytest

from npad import _threads, backend

pytestmark = pytest.mark.cpu            # on the CPU under NPAD_TEST_XP=strict too

ROOT = Path(__file__).resolve().parents[1]
# what OpenBLAS reports in a fresh interpreter: environment, timeout, thread count of each library
PROBE = """
import json, os
ENV0 = dict(os.environ)                                           # before npad is imported
from npad import _threads
def probe():
    libs = _threads._openblas_libs()
    fn = lambda name: [f() for f in (_threads._openblas_fn(lib, name) for lib in libs) if f]
    return dict(env=dict(os.environ), timeout=fn("openblas_thread_timeout"),
                threads=fn("openblas_get_num_threads"), tuned=_threads.cpu_tuned())
"""


def _fresh(code, **env):
    """Run PROBE + code in a fresh interpreter from the repository root; its last line parsed as JSON."""
    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-c", PROBE + code], cwd=ROOT, env=dict(environ, **env),
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def _has_openblas():
    return sys.platform == "linux" and "openblas" in str(numpy.show_config(mode="dicts")).lower()


def test_import_and_threaded_conv_leave_blas_and_environment_alone():
    r = _fresh("""
before = probe()
import numpy, npad, npad.functional as F
npad.set_num_threads(2)
x = npad.tensor(numpy.random.rand(4, 8, 9, 9).astype("float32"), requires_grad=True)
w = npad.tensor(numpy.random.rand(8, 1, 3, 3).astype("float32"), requires_grad=True)
F.conv2d(x, w, stride=2, padding=1, groups=8).sum().backward()     # depthwise: threaded einsums
print(json.dumps(dict(env0=ENV0, before=before, after=probe(), pool=_threads._pool is not None)))
""")
    assert r["pool"], "the conv did not use npad's threads: the test checks nothing"
    assert r["after"] == r["before"] and r["after"]["env"] == r["env0"] and not r["after"]["tuned"]
    if _has_openblas():
        assert r["before"]["timeout"] and r["before"]["threads"]


def test_tune_cpu_sets_the_openblas_timeout_without_touching_the_environment():
    r = _fresh("""
import numpy, npad
a = numpy.arange(40000.).reshape(200, 200) / 4e4
ref = a @ a
before = probe()
done = npad.tune_cpu(watch_cores=False)
after = probe()
print(json.dumps(dict(before=before, after=after, done=done, again=npad.backend.tune_cpu(watch_cores=False),
                      same=bool(numpy.array_equal(a @ a, ref)))))
""")
    assert r["same"] and r["again"] == [] and r["after"]["tuned"] and not r["before"]["tuned"]
    assert r["after"]["env"] == r["before"]["env"] and "OPENBLAS_THREAD_TIMEOUT" not in r["after"]["env"]
    assert r["after"]["threads"] == r["before"]["threads"]
    if _has_openblas():
        assert len(r["done"]) >= 1
        assert set(r["after"]["timeout"]) == {16} and set(r["before"]["timeout"]) == {0}


def test_tune_cpu_keeps_a_timeout_the_user_set():
    r = _fresh("import npad\nprint(json.dumps(dict(done=npad.tune_cpu(watch_cores=False), after=probe())))",
               OPENBLAS_THREAD_TIMEOUT="20")
    assert r["done"] == [] and r["after"]["env"]["OPENBLAS_THREAD_TIMEOUT"] == "20" and r["after"]["tuned"]
    if _has_openblas():
        assert set(r["after"]["timeout"]) == {20}


def test_parallel_over_covers_the_range_in_order():
    before = backend.get_num_threads()
    try:
        backend.set_num_threads(3)
        parts = backend.parallel_over(10, lambda s: list(range(10))[s])
        assert sum(parts, []) == list(range(10)) and len(parts) == 3
        assert [(s.start, s.stop) for s in backend.batch_slices(10)] == [(0, 3), (3, 6), (6, 10)]
        assert backend.parallel_over(1, lambda s: (s.start, s.stop)) == [(0, 1)]
        with pytest.raises(ValueError, match="at least one thread"):
            backend.set_num_threads(0)
    finally:
        backend.set_num_threads(before)


def test_thread_count_from_the_environment(monkeypatch):
    monkeypatch.setattr(_threads, "_threads", None)
    monkeypatch.setenv("NPAD_NUM_THREADS", "3")
    assert backend.get_num_threads() == 3
    monkeypatch.setattr(_threads, "_threads", None)
    monkeypatch.setenv("NPAD_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="NPAD_NUM_THREADS='many'"):
        backend.get_num_threads()


def test_blas_threads_blocks_overlapping_in_two_threads():
    """blas_threads(1) in two threads at once: the count comes back only when the last block ends."""
    libs = [_threads._openblas_fn(lib, "openblas_get_num_threads") for lib in _threads._openblas_libs()]
    libs = [f for f in libs if f]
    if not libs:
        pytest.skip("no OpenBLAS loaded")
    before = [f() for f in libs]
    entered, release = threading.Event(), threading.Event()

    def other():
        with backend.blas_threads(1):
            entered.set()
            release.wait(5)
    t = threading.Thread(target=other)
    t.start()
    entered.wait(5)
    with backend.blas_threads(1) as ok:
        assert ok and [f() for f in libs] == [1] * len(libs)
    assert [f() for f in libs] == [1] * len(libs)                   # the other block is still open
    release.set()
    t.join()
    assert [f() for f in libs] == before


def test_threads_for_the_free_cores():
    assert [_threads.threads_for(b, 2, 2) for b in (0.0, 0.4, 0.6, 1.0, 2.0)] == [2, 2, 1, 1, 1]
    assert [_threads.threads_for(b, 16, 8) for b in (0.0, 8.7, 14.0)] == [8, 7, 2]


def test_core_watch_measures_the_others_load():
    """update() from two samples (wall s, busy jiffies of our cores, our CPU s): busy minus ours, smoothed."""
    w = _threads.CoreWatch()
    w.cpus, w._hz, w._apply = [0, 1], 100, lambda n: None
    before = backend.get_num_threads()
    try:
        backend.set_num_threads(2)
        t = (0.0, 0, 0.0)
        for k in range(1, 5):                          # others keep one core busy, we use one: 2 x 100 jiffies/s
            assert w.update(t, (k * 1.0, k * 200, k * 1.0)) in (1, 2)
            t = (k * 1.0, k * 200, k * 1.0)
        assert abs(w.busy_elsewhere - 1.0) < 0.1 and w.threads == 1
        for k in range(5, 9):                          # they stop; we use two cores
            w.update(t, (k * 1.0, t[1] + 200, t[2] + 2.0))
            t = (k * 1.0, t[1] + 200, t[2] + 2.0)
        assert w.busy_elsewhere < 0.1 and w.threads == 2
        now = w.sample()                               # the real /proc/stat: counters that only grow
        assert now[1] >= 0 and now[2] >= 0 and w.sample()[1] >= now[1]
    finally:
        backend.set_num_threads(before)


def test_core_watch_sets_openblas_within_its_bounds():
    """The watch gives OpenBLAS its count, never above the count from before or one someone else set,
    defers to open blas_threads blocks, and stop() restores the count from before (fresh interpreter)."""
    if not _has_openblas():
        pytest.skip("no OpenBLAS loaded")
    r = _fresh("""
import npad
from npad._threads import CoreWatch, blas_threads, _blas_counts
get = lambda: [f() for f, _ in _blas_counts()]
setall = lambda n: [f(n) for _, f in _blas_counts()]
setall(2)
w = CoreWatch()
out = {}
w._apply(1); out["one"] = get()
w._apply(8); out["eight"] = get()                              # not above the 2 it found
with blas_threads(1):
    w._apply(2); out["in_block"] = get()
out["after_block"] = get()
setall(1)                                                      # someone else (threadpoolctl...) sets 1
w._apply(2); out["user"] = get()
w.stop(); out["stopped"] = get()
print(json.dumps(out))
""")
    n = len(r["one"])
    assert r["one"] == [1] * n and r["eight"] == [2] * n and r["in_block"] == [1] * n
    assert r["after_block"] == [2] * n and r["user"] == [1] * n and r["stopped"] == [1] * n


def test_tune_cpu_starts_and_stops_the_watch():
    r = _fresh("""
import time, npad
from npad import _threads
npad.tune_cpu()
started = _threads._watch is not None and _threads._watch.is_alive()
time.sleep(0.5)
n = _threads.active_threads()
npad.tune_cpu(watch_cores=False)
print(json.dumps(dict(started=started, n=n, stopped=_threads._watch is None)))
""")
    assert r["started"] and r["stopped"] and 1 <= r["n"] <= os.cpu_count()


def test_active_threads_follow_the_watch_unless_set(monkeypatch):
    class Watch:
        threads = 1

        def stop(self):    # the autouse _no_core_watch fixture may stop it after the test
            pass
    monkeypatch.setattr(_threads, "_watch", Watch())
    monkeypatch.setattr(_threads, "_threads", 3)
    monkeypatch.setattr(_threads, "_explicit", False)
    assert _threads.active_threads() == 1 and len(backend.batch_slices(8)) == 1
    monkeypatch.setattr(_threads, "_explicit", True)                  # set_num_threads(3) was called
    assert _threads.active_threads() == 3 and len(backend.batch_slices(8)) == 3
