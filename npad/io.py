"""Atomic file writes and HDF5 checkpoints.

Every writer in npad goes through :func:`atomic_write` (or :func:`atomic_path`):
data are written to a temporary file in the destination folder, flushed and
``fsync``-ed, then moved over the destination with :func:`os.replace`, which is
atomic on POSIX and Windows.  A crash therefore leaves either the old file or
the new one, never half of one.

Checkpoints (:func:`save_checkpoint`, :func:`load_checkpoint`) are single
``.h5`` files (h5py) holding

* ``state``  -- a flat or nested dict ``name -> array`` (a model's state_dict),
* ``config`` -- a JSON-serialisable dict (stored as a JSON string attribute),
* ``stats``  -- optional score-normalisation statistics (dict of arrays/scalars),
* ``method`` -- optional method name (e.g. ``"cflow"``),

plus the format marker ``npad_format = "npad-checkpoint"`` and a format
version, so foreign HDF5 files are recognised and refused with a clear error.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

__all__ = [
    "atomic_write",
    "atomic_path",
    "default_mode",
    "to_numpy",
    "save_checkpoint",
    "load_checkpoint",
    "CheckpointError",
    "FORMAT_MARKER",
    "FORMAT_VERSION",
]

FORMAT_MARKER = "npad-checkpoint"
FORMAT_VERSION = 1


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import (os.umask is process-wide, not thread-safe)


def default_mode(directory: bool = False) -> int:
    """Permission bits a plain ``open``/``mkdir`` would give: 0o666 (files) or 0o777 (folders) minus the umask.

    Temporary files from :mod:`tempfile` are private (0o600/0o700); writers chmod them to this before the rename.
    """
    return (0o777 if directory else 0o666) & ~_UMASK


class CheckpointError(OSError):
    """A checkpoint file is missing, truncated, foreign or of an unknown version."""


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable by fsync-ing its directory (best effort, POSIX only)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(str(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and ``os.replace`` it onto ``path``.

    For writers that need a file *name* (h5py, savefig of some backends).  On an
    exception the temporary file is removed and ``path`` is left untouched.
    The parent folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=str(path.parent))
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:  # flush the writer's data to disk
            os.fsync(f.fileno())
        os.chmod(tmp_path, default_mode())  # mkstemp makes 0o600 files
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[Any]:
    """Open a temporary file next to ``path`` for writing; on success fsync and ``os.replace`` it onto ``path``.

    ``mode`` is ``"wb"`` (default) or ``"w"`` (text, ``encoding`` defaults to
    UTF-8).  Usage::

        with atomic_write("scores.json", "w") as f:
            json.dump(scores, f)

    If the block raises, the destination is untouched and the temp file removed.
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_write: mode must be 'w', 'wt' or 'wb', got {mode!r}")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def to_numpy(a: Any) -> np.ndarray:
    """Convert an array-like to a NumPy array: CuPy arrays via ``.get()``, tensors via ``.numpy()``/``.data``.

    CuPy is never imported: any non-mapping object with a callable ``get``
    attribute (``cupy.ndarray.get`` copies device -> host) is treated as a
    device array.
    """
    if isinstance(a, np.ndarray):
        return a
    if isinstance(a, (np.generic, int, float, bool, complex, list, tuple)):
        return np.asarray(a)
    if not isinstance(a, Mapping):
        get = getattr(a, "get", None)
        if callable(get):
            try:
                out = get()
            except TypeError:
                out = None
            if out is not None:
                return np.asarray(out)
        numpy_fn = getattr(a, "numpy", None)
        if callable(numpy_fn):
            return to_numpy(numpy_fn())
        data = getattr(a, "data", None)
        if data is not None and not isinstance(data, memoryview):
            return to_numpy(data)
    return np.asarray(a)


# ----------------------------------------------------------------------------
# h5 helpers
# ----------------------------------------------------------------------------

def _escape(name: str) -> str:
    """HDF5 names cannot contain '/' (path separator) or be '.'; escape '%', '/' percent-style."""
    s = str(name).replace("%", "%25").replace("/", "%2F")
    if s in ("", "."):
        s = s.replace(".", "%2E") or "%00"
    return s


def _unescape(name: str) -> str:
    if name == "%00":
        return ""
    return name.replace("%2E", ".").replace("%2F", "/").replace("%25", "%")


def _write_tree(group, tree: Mapping, what: str) -> None:
    """Write a (nested) mapping of arrays into an h5 group, preserving key order."""
    keys = []
    for key, value in tree.items():
        if not isinstance(key, str):
            raise TypeError(f"save_checkpoint: {what} keys must be str, got {type(key).__name__} {key!r}")
        keys.append(key)
        hname = _escape(key)
        if isinstance(value, Mapping):
            sub = group.create_group(hname, track_order=True)
            _write_tree(sub, value, f"{what}[{key!r}]")
            continue
        arr = to_numpy(value)
        if arr.dtype == object:
            raise TypeError(f"save_checkpoint: {what}[{key!r}] is not a numeric array (dtype=object)")
        is_unicode = arr.dtype.kind == "U"
        if is_unicode:
            arr = np.char.encode(arr, "utf-8")
        dset = group.create_dataset(hname, data=arr)
        if is_unicode:
            dset.attrs["npad_unicode"] = True
    group.attrs["npad_keys"] = json.dumps(keys)


def _read_tree(group) -> dict:
    import h5py

    names = json.loads(group.attrs["npad_keys"]) if "npad_keys" in group.attrs else [_unescape(k) for k in group]
    out: dict[str, Any] = {}
    for key in names:
        item = group[_escape(key)]
        if isinstance(item, h5py.Group):
            out[key] = _read_tree(item)
        else:
            arr = item[()]
            if item.attrs.get("npad_unicode", False):
                arr = np.char.decode(np.asarray(arr), "utf-8")
            out[key] = np.asarray(arr) if not isinstance(arr, np.ndarray) else arr
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"object of type {type(o).__name__} is not JSON serialisable")


def save_checkpoint(
    path: str | os.PathLike,
    state: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    stats: Mapping[str, Any] | None = None,
    method: str | None = None,
) -> Path:
    """Write ``state`` (name -> array), ``config`` (JSON dict), ``stats`` and ``method`` to one ``.h5`` file atomically.

    Arrays may be NumPy or CuPy (copied to host with ``.get()``).  Nested
    dicts are stored as HDF5 groups.  Returns the path written.
    """
    import h5py

    path = Path(path)
    if not isinstance(state, Mapping):
        raise TypeError(f"save_checkpoint({path}): state must be a dict name -> array, got {type(state).__name__}")
    config = {} if config is None else config
    if not isinstance(config, Mapping):
        raise TypeError(f"save_checkpoint({path}): config must be a dict, got {type(config).__name__}")
    try:
        config_json = json.dumps(dict(config), default=_json_default, allow_nan=True)
    except TypeError as e:
        raise TypeError(f"save_checkpoint({path}): config is not JSON-serialisable: {e}") from None
    if stats is not None and not isinstance(stats, Mapping):
        raise TypeError(f"save_checkpoint({path}): stats must be a dict or None, got {type(stats).__name__}")

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            f.attrs["npad_format"] = FORMAT_MARKER
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            f.attrs["method"] = "" if method is None else str(method)
            f.attrs["has_method"] = method is not None
            f.attrs["config"] = config_json
            _write_tree(f.create_group("state", track_order=True), state, "state")
            if stats is not None:
                _write_tree(f.create_group("stats", track_order=True), stats, "stats")
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; returns ``dict(state, config, stats, method, format_version)``.

    Raises :class:`CheckpointError` naming the file when it is missing,
    truncated, not HDF5, or HDF5 without npad's format marker.
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not an .h5 file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise CheckpointError(
            f"cannot read checkpoint {path}: not an HDF5 file, or truncated/corrupted ({e})"
        ) from None
    try:
        with f:
            marker = f.attrs.get("npad_format", None)
            if isinstance(marker, bytes):
                marker = marker.decode()
            if marker != FORMAT_MARKER:
                raise CheckpointError(
                    f"{path} is an HDF5 file but not an npad checkpoint (missing format marker "
                    f"npad_format={FORMAT_MARKER!r}; found {marker!r})"
                )
            version = int(f.attrs.get("format_version", -1))
            if version > FORMAT_VERSION or version < 1:
                raise CheckpointError(
                    f"checkpoint {path} has format version {version}; this npad reads versions 1..{FORMAT_VERSION}"
                )
            if "state" not in f:
                raise CheckpointError(f"checkpoint {path} has no 'state' group (incomplete file)")
            state = _read_tree(f["state"])
            stats = _read_tree(f["stats"]) if "stats" in f else None
            config = json.loads(f.attrs.get("config", "{}"))
            method = str(f.attrs["method"]) if bool(f.attrs.get("has_method", False)) else None
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or corrupted ({e})") from None
    return {"state": state, "config": config, "stats": stats, "method": method, "format_version": version}
