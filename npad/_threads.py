"""npad's thread pool and its control of OpenBLAS (private; the names are re-exported by npad.backend).

NumPy's own loops (copies, einsum, elementwise ops) run on one core while BLAS uses all of them.
``parallel_over(n, fn)`` splits a few memory-bound loops of the fast kernels (``npad.kernels``) over a
pool of threads (NumPy releases the GIL inside them). The thread count is ``set_num_threads(n)`` or, by
default, the first of ``NPAD_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS`` that is set,
else the CPUs this process may use, so a job limited to one BLAS thread stays on one core. The pool
changes nothing outside npad.

BLAS itself is left as the process found it unless the user asks, with one call: ``tune_cpu()``
restarts OpenBLAS's workers with a short idle timeout, allows npad to set OpenBLAS's thread count
for the duration of a block (``blas_threads``, used when a frozen forward splits its batch over
threads), and sizes npad's threads and OpenBLAS's to the cores other processes leave free
(``CoreWatch``). The examples, the command line and the speed benchmarks make that call at start.

Why the last: a parallel step (a GEMM split by OpenBLAS, a batch split over the pool) ends when its
slowest thread ends. With another process busy on one of two cores, the thread that shares that
core runs in the scheduler's time slices (milliseconds), so each of the hundreds of sub-millisecond
GEMMs of a training step waits for it: the step runs several times slower than on one thread,
which the scheduler then gives a free core of its own.
"""
import contextlib
import ctypes
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy

_threads = None         # threads of parallel_over, resolved lazily from the environment
_pool = None            # the ThreadPoolExecutor behind parallel_over
_tuned = False          # tune_cpu was called
_watch = None           # the CoreWatch that tune_cpu started
_explicit = False       # set_num_threads was called: the watch leaves npad's count alone


def get_num_threads():
    """Threads used by ``parallel_over`` (see the module docstring for the default)."""
    global _threads
    if _threads is None:
        for var in ("NPAD_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
            value = os.environ.get(var, "").strip()
            if value:
                try:
                    _threads = max(1, int(value.split(",")[0]))
                except ValueError:
                    raise ValueError(f"{var}={value!r} is not a thread count") from None
                break
        else:
            _threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return _threads


def set_num_threads(n):
    """Use ``n`` threads in ``parallel_over`` (1: everything runs in the calling thread), whatever the
    load: a count set here is not lowered by the ``CoreWatch`` (which still sizes OpenBLAS)."""
    global _threads, _pool, _explicit
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: need at least one thread, got {n}")
    if _pool is not None and n != _threads:
        _pool.shutdown(wait=True)
        _pool = None
    _threads, _explicit = n, True


def active_threads():
    """The threads npad uses now: ``get_num_threads()``, or fewer while ``CoreWatch`` (started by
    ``tune_cpu``) sees other processes keeping cores busy, unless the count was set with
    ``set_num_threads``."""
    n = get_num_threads()
    return n if _explicit or _watch is None or _watch.threads is None else max(1, min(n, _watch.threads))


def batch_slices(n):
    """The contiguous slices of range(n) that ``parallel_over`` hands its threads, one per thread
    (min(active_threads(), n) of them, sizes differing by at most one)."""
    k = max(min(active_threads(), n), 1)
    return [slice(n * i // k, n * (i + 1) // k) for i in range(k)]


def parallel_over(n, fn, xp=numpy, slices=None):
    """Call ``fn(slice)`` on contiguous slices covering range(n), one per thread (``batch_slices(n)``
    unless ``slices`` are given), and wait. ``fn`` must write disjoint outputs; results are returned in
    order. On CuPy, with one slice, or when called from one of the pool's threads, it is one call
    ``fn(slice(0, n))``."""
    global _pool
    given, slices = slices is not None, (batch_slices(n) if slices is None else slices)
    if len(slices) < 2 or xp is not numpy or threading.current_thread().name.startswith("npad-pool"):
        return [fn(sl) for sl in slices] if given else [fn(slice(0, n))]
    if _pool is None:
        _pool = ThreadPoolExecutor(get_num_threads(), thread_name_prefix="npad-pool")
    return list(_pool.map(fn, slices))


# ---- OpenBLAS, found through ctypes (Linux) ------------------------------------------------------
_openblas = None        # [ctypes.CDLL] of the OpenBLAS libraries loaded in this process


def _openblas_libs():
    """The OpenBLAS libraries this process has loaded (NumPy's, SciPy's...), found in /proc/self/maps
    (Linux; elsewhere none)."""
    global _openblas
    if _openblas is None:
        try:
            with open("/proc/self/maps") as f:
                paths = sorted({line.split()[-1] for line in f if "openblas" in line and ".so" in line})
        except OSError:
            paths = []
        _openblas = []
        for path in paths:
            try:
                _openblas.append(ctypes.CDLL(path))
            except OSError:
                pass
    return _openblas


def _openblas_fn(lib, name):
    """lib's function ``name``, under the plain or the scipy-openblas (scipy_..., ...64_) symbol, or None."""
    for symbol in (name, "scipy_" + name + "64_", "scipy_" + name, name + "64_"):
        try:
            return getattr(lib, symbol)
        except AttributeError:
            pass
    return None


def _blas_counts():
    """[(get, set)]: openblas_get_num_threads / openblas_set_num_threads of each loaded OpenBLAS."""
    return [(f_get, f_set) for lib in _openblas_libs()
            for f_get, f_set in [(_openblas_fn(lib, "openblas_get_num_threads"),
                                  _openblas_fn(lib, "openblas_set_num_threads"))] if f_get and f_set]


def threads_for(busy_elsewhere, cpus, wanted):
    """Threads to run when other processes keep ``busy_elsewhere`` of our ``cpus`` cores busy: the free
    cores rounded to the nearest, at least 1, at most ``wanted``."""
    return max(1, min(int(wanted), int(cpus - busy_elsewhere + 0.5)))


class CoreWatch(threading.Thread):
    """A daemon thread that every ``interval`` seconds measures how many of this process's cores other
    processes kept busy (``busy_elsewhere``: the busy time of those cores in /proc/stat minus this
    process's CPU time, per second, smoothed over two intervals) and sets ``threads``
    (``threads_for``): the threads of npad's pool (``active_threads``) and of OpenBLAS. OpenBLAS is
    never given more threads than it had when the watch started, or than someone else set since."""

    def __init__(self, interval=0.2):
        super().__init__(name="npad-corewatch", daemon=True)
        self.interval, self.cpus = interval, sorted(os.sched_getaffinity(0))
        self.busy_elsewhere, self.threads = 0.0, None
        self.blas_max = [f_get() for f_get, _ in _blas_counts()]   # OpenBLAS's own counts: the most we set
        self._set = None                                            # the count this watch set last
        self._halt = threading.Event()
        self._hz = os.sysconf("SC_CLK_TCK")

    def sample(self):
        """(wall seconds, busy jiffies of our cores, this process's CPU seconds)."""
        busy = 0
        with open("/proc/stat") as f:
            for line in f:
                name, *v = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in self.cpus:
                    v = [int(x) for x in v[:8]]                     # user nice system idle iowait irq softirq steal
                    busy += sum(v) - v[3] - v[4]
        return time.monotonic(), busy, time.process_time()

    def update(self, before, now):
        """Take one interval's measurement; returns the new thread count."""
        dt = now[0] - before[0]
        if dt > 0:
            others = max(0.0, ((now[1] - before[1]) / self._hz - (now[2] - before[2])) / dt)
            self.busy_elsewhere = 0.5 * (self.busy_elsewhere + others)
        self.threads = threads_for(self.busy_elsewhere, len(self.cpus), get_num_threads())
        self._apply(self.threads)
        return self.threads

    def _apply(self, n):
        """Give each OpenBLAS min(n, its most) threads (the count to restore, inside blas_threads blocks)."""
        with _blas_lock:
            counts = _blas_counts()
            if self._set is not None and _blas_users[0] == 0:      # someone else changed a count: their most
                self.blas_max = [k if k != s else m for (f_get, _), m, s in zip(counts, self.blas_max, self._set)
                                 for k in [f_get()]]
            self._set = [min(n, m) for m in self.blas_max]
            if _blas_users[0]:
                _blas_users[1] = list(self._set)
            else:
                for (f_get, f_set), k in zip(counts, self._set):
                    if f_get() != k:
                        f_set(k)

    def run(self):
        before = self.sample()
        while not self._halt.wait(self.interval):
            now = self.sample()
            self.update(before, now)
            before = now

    def stop(self):
        """End the watch; OpenBLAS keeps its counts from before the watch."""
        self._halt.set()
        if self.ident is not None:
            self.join()
        with _blas_lock:
            if _blas_users[0]:
                _blas_users[1] = list(self.blas_max)
            else:
                for (_, f_set), k in zip(_blas_counts(), self.blas_max):
                    f_set(k)
        self.threads = None


def tune_cpu(log2_cycles=16, watch_cores=True):
    """Tune OpenBLAS for npad's mix of BLAS calls and threaded NumPy loops; the one call that changes
    BLAS settings (npad never does on import or first use).

    1. Idle OpenBLAS workers sleep after 2^log2_cycles cycles (2^16: about 20 us) instead of OpenBLAS's
       default 2^28 (about 0.1 s of each core spinning after every BLAS call, which takes the cores from
       npad's threads between two GEMMs): the OpenBLAS libraries loaded in this process re-read their
       settings with ``OPENBLAS_THREAD_TIMEOUT`` = log2_cycles and restart their workers. A timeout the
       user set in ``OPENBLAS_THREAD_TIMEOUT`` is kept; ``os.environ`` is left as it was.
    2. From now on ``cpu_tuned()`` is True, which allows npad to run a frozen forward with its batch split
       over threads, setting OpenBLAS to one thread per slice for the duration (``blas_threads``).
    3. With ``watch_cores`` a ``CoreWatch`` thread sizes npad's threads and OpenBLAS's to the cores that
       other processes leave free, five times a second (one thread while another process keeps one of
       two cores busy; see the module docstring). ``tune_cpu(watch_cores=False)`` stops it.

    Linux only (the libraries are found in /proc/self/maps, the cores' load in /proc/stat). Returns the
    paths of the libraries it restarted (none on a second call)."""
    global _tuned, _watch
    done = []
    if not _tuned and not os.environ.get("OPENBLAS_THREAD_TIMEOUT"):
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(int(log2_cycles))
        try:
            for lib in _openblas_libs():
                read_env = _openblas_fn(lib, "openblas_read_env")
                shutdown = _openblas_fn(lib, "blas_thread_shutdown_")
                if read_env and shutdown:
                    read_env()   # OpenBLAS reads its variables at load time: read them again,
                    shutdown()   # stop the workers; the next threaded call starts them with the new timeout
                    done.append(lib._name)
        finally:
            del os.environ["OPENBLAS_THREAD_TIMEOUT"]
    _tuned = True
    if watch_cores and _watch is None and os.path.exists("/proc/stat") and hasattr(os, "sched_getaffinity"):
        _watch = CoreWatch()
        _watch.start()
    elif not watch_cores and _watch is not None:
        _watch.stop()
        _watch = None
    return done


def cpu_tuned():
    """True once ``tune_cpu()`` was called: npad may then set OpenBLAS's thread count (``blas_threads``)."""
    return _tuned


_blas_lock = threading.Lock()
_blas_users = [0, None]  # blocks inside blas_threads now, the thread counts saved by the first


@contextlib.contextmanager
def blas_threads(n):
    """Within the block every loaded OpenBLAS library uses ``n`` threads; the counts from before are
    restored when the last of the blocks open in any thread ends. Yields True when there was an
    OpenBLAS to set, False when BLAS is something else (then nothing changes). Within npad it is
    for use only when ``cpu_tuned()`` (the user asked for BLAS tuning)."""
    libs = _blas_counts()
    with _blas_lock:
        if _blas_users[0] == 0:
            _blas_users[1] = [f_get() for f_get, _ in libs]
        _blas_users[0] += 1
        for _, f_set in libs:
            f_set(int(n))
    try:
        yield bool(libs)
    finally:
        with _blas_lock:
            _blas_users[0] -= 1
            if _blas_users[0] == 0:
                for (_, f_set), k in zip(libs, _blas_users[1]):
                    f_set(k)
