"""npad's thread pool and its control of OpenBLAS (private; the names are re-exported by npad.backend).

NumPy's own loops (copies, einsum, elementwise ops) run on one core while BLAS uses all of them.
``parallel_over(n, fn)`` splits a few memory-bound loops of the fast kernels (``npad.kernels``) over a
pool of threads (NumPy releases the GIL inside them). The thread count is ``set_num_threads(n)`` or, by
default, the first of ``NPAD_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS`` that is set,
else the CPUs this process may use, so a job limited to one BLAS thread stays on one core. The pool
changes nothing outside npad.

BLAS itself is left as the process found it unless the user asks, with one call: ``tune_cpu()``
restarts OpenBLAS's workers with a short idle timeout and allows npad to set OpenBLAS's thread count
for the duration of a block (``blas_threads``, used when a frozen forward splits its batch over
threads). The examples, the command line and the speed benchmarks make that call at start.
"""
import contextlib
import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy

_threads = None         # threads of parallel_over, resolved lazily from the environment
_pool = None            # the ThreadPoolExecutor behind parallel_over
_tuned = False          # tune_cpu was called


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
    """Use ``n`` threads in ``parallel_over`` (1: everything runs in the calling thread)."""
    global _threads, _pool
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: need at least one thread, got {n}")
    if _pool is not None and n != _threads:
        _pool.shutdown(wait=True)
        _pool = None
    _threads = n


def batch_slices(n):
    """The contiguous slices of range(n) that ``parallel_over`` hands its threads, one per thread
    (min(threads, n) of them, sizes differing by at most one)."""
    k = max(min(get_num_threads(), n), 1)
    return [slice(n * i // k, n * (i + 1) // k) for i in range(k)]


def parallel_over(n, fn, xp=numpy):
    """Call ``fn(slice)`` on contiguous slices covering range(n), one per thread, and wait.
    ``fn`` must write disjoint outputs; results are returned in order. On CuPy, with one
    thread, with n < 2 or when called from one of the pool's threads, it is one call
    ``fn(slice(0, n))``."""
    global _pool
    if min(get_num_threads(), n) < 2 or xp is not numpy or threading.current_thread().name.startswith("npad-pool"):
        return [fn(slice(0, n))]
    if _pool is None:
        _pool = ThreadPoolExecutor(get_num_threads(), thread_name_prefix="npad-pool")
    return list(_pool.map(fn, batch_slices(n)))


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


def tune_cpu(log2_cycles=16):
    """Tune OpenBLAS for npad's mix of BLAS calls and threaded NumPy loops; the one call that changes
    BLAS settings (npad never does on import or first use).

    1. Idle OpenBLAS workers sleep after 2^log2_cycles cycles (2^16: about 20 us) instead of OpenBLAS's
       default 2^28 (about 0.1 s of each core spinning after every BLAS call, which takes the cores from
       npad's threads between two GEMMs): the OpenBLAS libraries loaded in this process re-read their
       settings with ``OPENBLAS_THREAD_TIMEOUT`` = log2_cycles and restart their workers. A timeout the
       user set in ``OPENBLAS_THREAD_TIMEOUT`` is kept; ``os.environ`` is left as it was.
    2. From now on ``cpu_tuned()`` is True, which allows npad to run a frozen forward with its batch split
       over threads, setting OpenBLAS to one thread per slice for the duration (``blas_threads``).

    Linux only (the libraries are found in /proc/self/maps). Returns the paths of the libraries it
    restarted (none on a second call)."""
    global _tuned
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
    libs = [(f_get, f_set) for lib in _openblas_libs()
            for f_get, f_set in [(_openblas_fn(lib, "openblas_get_num_threads"),
                                  _openblas_fn(lib, "openblas_set_num_threads"))] if f_get and f_set]
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
