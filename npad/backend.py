"""Array backend: NumPy on the CPU, CuPy on an NVIDIA GPU.

Every op starts with ``xp = get_array_module(x)`` so that one piece of code
runs on both. The device that new tensors are made on is chosen by
``set_device("cpu" | "cuda")`` or the environment variable ``NPAD_DEVICE``.
CuPy is imported lazily; if it was asked for and cannot be used, the error says
why (the original import error is kept as ``__cause__``).

NumPy's own loops (copies, einsum, elementwise ops) run on one core while BLAS
uses all of them. ``parallel_over(n, fn)`` splits the few memory-bound loops of
the convolutions over a pool of threads (NumPy releases the GIL inside them);
the thread count is ``set_num_threads(n)`` or, by default, the first of
``NPAD_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS`` that is set,
else the CPUs this process may use, so a job limited to one BLAS thread stays on
one core. When the pool starts, OpenBLAS's idle worker threads are told to sleep
at once (``calm_blas_threads``) instead of spinning for about 0.1 s after every
call, which would take the cores from the pool between two GEMMs.
"""
import contextlib
import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy

_cupy = None            # the cupy module once imported
_cupy_error = None      # why importing cupy failed, kept for later messages
_device = None          # "cpu" or "cuda", resolved lazily from NPAD_DEVICE
_threads = None         # threads of parallel_over, resolved lazily from the environment
_pool = None            # the ThreadPoolExecutor behind parallel_over


def _import_cupy():
    global _cupy, _cupy_error
    if _cupy is None and _cupy_error is None:
        try:
            import cupy
            cupy.cuda.runtime.getDeviceCount()  # raises when there is no GPU/driver
            _cupy = cupy
        except Exception as e:  # ImportError, CUDARuntimeError, ...
            _cupy_error = e
    return _cupy


def cupy_available():
    """True when CuPy imports and sees a GPU."""
    return _import_cupy() is not None


def require_cupy():
    """Return the cupy module or raise a RuntimeError saying why it cannot be used."""
    cp = _import_cupy()
    if cp is None:
        raise RuntimeError(
            f"device 'cuda' was requested but CuPy cannot be used: "
            f"{type(_cupy_error).__name__}: {_cupy_error}. "
            f"Install it with `pip install npad[gpu]` (cupy-cuda12x) on a machine with an NVIDIA GPU."
        ) from _cupy_error
    return cp


def set_device(device):
    """Choose where new tensors live: "cpu" (NumPy) or "cuda" (CuPy)."""
    global _device
    device = _check_device(device)
    if device == "cuda":
        require_cupy()
    _device = device


def get_device():
    """The current default device, "cpu" or "cuda" (from set_device or NPAD_DEVICE)."""
    global _device
    if _device is None:
        env = os.environ.get("NPAD_DEVICE", "cpu")
        try:
            set_device(env)
        except ValueError as e:
            raise ValueError(f"NPAD_DEVICE: {e}") from None
    return _device


def _check_device(device):
    device = str(device).lower()
    if device.startswith("cuda"):
        return "cuda"
    if device != "cpu":
        raise ValueError(f"unknown device {device!r}; use 'cpu' or 'cuda'")
    return device


def default_xp():
    """The array module of the default device."""
    return require_cupy() if get_device() == "cuda" else numpy


def device_xp(device):
    """The array module of ``device`` ("cpu" or "cuda")."""
    return require_cupy() if _check_device(device) == "cuda" else numpy


def is_cupy_array(a):
    """True for a CuPy ndarray, without importing CuPy."""
    return type(a).__module__.startswith("cupy")


def get_array_module(*arrays):
    """cupy if any argument is a CuPy array (or a Tensor holding one), else numpy."""
    for a in arrays:
        if is_cupy_array(a) or is_cupy_array(getattr(a, "data", None)):
            return _cupy
    return numpy


def to_cpu(a):
    """A NumPy array holding ``a`` (copies from the GPU when needed)."""
    if is_cupy_array(a):
        return a.get()
    return numpy.asarray(a)


def to_gpu(a):
    """A CuPy array holding ``a``."""
    cp = require_cupy()
    return cp.asarray(a)


def to_device(a, device):
    """``a`` moved to ``device`` ("cpu" or "cuda")."""
    return to_gpu(a) if _check_device(device) == "cuda" else to_cpu(a)


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


def parallel_over(n, fn, xp=numpy):
    """Call ``fn(slice)`` on contiguous slices covering range(n), one per thread, and wait.
    ``fn`` must write disjoint outputs; results are returned in order. On CuPy, with one
    thread, with n < 2 or when called from one of the pool's threads, it is one call
    ``fn(slice(0, n))``."""
    global _pool
    k = min(get_num_threads(), n)
    if k < 2 or xp is not numpy or threading.current_thread().name.startswith("npad-pool"):
        return [fn(slice(0, n))]
    if _pool is None:
        calm_blas_threads()
        _pool = ThreadPoolExecutor(get_num_threads(), thread_name_prefix="npad-pool")
    return list(_pool.map(fn, batch_slices(n)))


def batch_slices(n):
    """The contiguous slices of range(n) that ``parallel_over`` hands its threads, one per thread
    (min(threads, n) of them, sizes differing by at most one)."""
    k = max(min(get_num_threads(), n), 1)
    return [slice(n * i // k, n * (i + 1) // k) for i in range(k)]


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


_blas_lock = threading.Lock()
_blas_users = [0, None]  # blocks inside blas_threads now, the thread counts saved by the first


@contextlib.contextmanager
def blas_threads(n):
    """Within the block every loaded OpenBLAS library uses ``n`` threads; the counts from before are
    restored when the last of the blocks open in any thread ends. Yields True when there was an
    OpenBLAS to set, False when BLAS is something else (then nothing changes)."""
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


def calm_blas_threads(log2_cycles=16):
    """Restart the OpenBLAS thread pools loaded in this process with ``OPENBLAS_THREAD_TIMEOUT`` =
    ``log2_cycles`` (unless the variable is already set): an idle worker then waits 2^log2_cycles
    cycles (2^16: about 20 us) before it sleeps instead of OpenBLAS's default 2^28 (about 0.1 s of a
    core spinning after every BLAS call). Measured on 2 cores: EfficientNet-Lite0 forward (batch 8 at
    256 px) 380-410 -> 320-330 ms, since its depthwise convolutions and copies run in
    ``parallel_over`` between GEMMs. Linux only (the libraries are found in /proc/self/maps);
    returns the paths of the libraries it restarted."""
    if os.environ.get("OPENBLAS_THREAD_TIMEOUT"):
        return []
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(int(log2_cycles))
    done = []
    for lib in _openblas_libs():
        read_env, shutdown = _openblas_fn(lib, "openblas_read_env"), _openblas_fn(lib, "blas_thread_shutdown_")
        if read_env and shutdown:
            read_env()   # OpenBLAS reads its variables at load time: read them again,
            shutdown()   # stop the workers; the next threaded call starts them with the new timeout
            done.append(lib._name)
    return done


def cpu_tuned():
    """True once npad.tune_cpu() was called (placeholder until the thread module lands)."""
    return True
