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

A checkpoint may come from someone else, so :func:`load_checkpoint` reads only
what lies inside the file: it refuses soft and external links, datasets with
external storage and virtual datasets (all of which make HDF5 read other files),
objects reached twice (hard-link cycles), groups nested deeper than
:data:`MAX_DEPTH`, and datasets whose declared size the file cannot hold: at
most :data:`MAX_EXPANSION` times the bytes the dataset stores (no compression
reaches that) and :data:`MAX_CHECKPOINT_BYTES` in all.  Each refusal is a
:class:`CheckpointError` naming the file and the object.

Temporary files are named ``.<name>.npad-<host>-<pid>-<random><suffix>.tmp``.
After a crash (``kill -9``) they stay behind; the first write of a process into
a folder removes those whose writer is gone: same host and the process no longer
exists, or another host and untouched for :data:`STALE_TEMP_SECONDS`.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import math
import os
import re
import socket
import stat
import tempfile
import threading
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
    "check_output_dir",
    "check_writable",
    "FORMAT_MARKER",
    "FORMAT_VERSION",
    "MAX_CHECKPOINT_BYTES",
    "MAX_DEPTH",
    "MAX_EXPANSION",
    "STALE_TEMP_SECONDS",
]

FORMAT_MARKER = "npad-checkpoint"
FORMAT_VERSION = 1

#: Most array bytes :func:`load_checkpoint` reads from one file (all datasets together).
#: Raise it for bigger models: ``npad.io.MAX_CHECKPOINT_BYTES = 64 * 2**30`` or ``load_checkpoint(path, max_bytes=...)``.
MAX_CHECKPOINT_BYTES = 8 * 2 ** 30
#: A dataset may declare at most this many times the bytes it stores (+64 KiB): deflate expands at most ~1032x,
#: so only an unwritten (fill-value) or crafted dataset declares more.
MAX_EXPANSION = 1100
#: Deepest group nesting :func:`load_checkpoint` follows (npad writes 2 or 3 levels).
MAX_DEPTH = 32
#: A temporary file of a writer on another host is removed once untouched this long (seconds).
STALE_TEMP_SECONDS = 3600


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import (os.umask is process-wide, not thread-safe)


def default_mode(directory: bool = False) -> int:
    """Permission bits a plain ``open``/``mkdir`` would give: 0o666 (files) or 0o777 (folders) minus the umask.

    Temporary files from :mod:`tempfile` are private (0o600/0o700); :func:`atomic_path` gives a new file this
    mode, and a replaced file's own mode, before the rename.
    """
    return (0o777 if directory else 0o666) & ~_UMASK


class CheckpointError(ValueError, OSError):
    """A checkpoint that cannot be used: missing, truncated, foreign or of an unknown version; unsafe to read
    (links or storage outside the file, sizes beyond the limits); or missing keys / holding mistyped values.

    The message names the file and, where there is one, the object or key.  A ``ValueError`` (and an
    ``OSError``, as it always was).
    """


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


# ----------------------------------------------------------------------------
# temporary files: npad's naming, and removing those a crashed writer left
# ----------------------------------------------------------------------------

_TEMP_RE = re.compile(r"^\..*\.npad-([0-9a-f]{6})-([0-9]+)-[^/]*\.tmp$", re.DOTALL)
_TEMP_NAME_CHARS = 64  # of the destination's name kept in the temp name, so any valid name has a valid temp name
_cleaned: set[str] = set()
_cleaned_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


def _temp_prefix(path: Path) -> str:
    return f".{path.name[:_TEMP_NAME_CHARS]}.npad-{_host_tag()}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (True when unsure: never remove a live writer's file)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return True  # os.kill(pid, 0) would send CTRL_C_EVENT on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: it exists, owned by someone else
    return True


def _is_stale_temp(entry: os.DirEntry) -> bool:
    m = _TEMP_RE.match(entry.name)
    if m is None or not entry.is_file(follow_symlinks=False):
        return False
    host, pid = m.group(1), int(m.group(2))
    if host == _host_tag():
        return not _pid_alive(pid)
    try:
        return time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_SECONDS
    except OSError:
        return False


def _remove_stale_temps(folder: Path) -> None:
    """Remove temporary files of npad's naming left in ``folder`` by writers that are gone (once per process and folder)."""
    key = os.path.abspath(folder)
    with _cleaned_lock:
        if key in _cleaned:
            return
        _cleaned.add(key)
    try:
        with os.scandir(folder) as it:
            stale = [e.path for e in it if e.name.startswith(".") and _is_stale_temp(e)]
    except OSError:
        return
    for p in stale:
        with contextlib.suppress(OSError):
            os.unlink(p)


def _mode_for(path: Path) -> int:
    """The destination's permission bits when it exists (a private 0600 checkpoint stays private), else the umask's."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return default_mode()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and ``os.replace`` it onto ``path``.

    For writers that need a file *name* (h5py, savefig of some backends).  On an
    exception the temporary file is removed and ``path`` is left untouched.
    The parent folder is created if needed.  The new file keeps the mode of the
    file it replaces, or gets the umask's mode (:func:`default_mode`) when new.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path.parent)
    suffix = (path.suffix if suffix is None else suffix)[:_TEMP_NAME_CHARS]
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=suffix + ".tmp", dir=str(path.parent))
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:  # flush the writer's data to disk
            os.fsync(f.fileno())
        os.chmod(tmp_path, _mode_for(path))  # mkstemp makes 0o600 files
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


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def check_output_dir(folder: str | os.PathLike, names: tuple[str, ...] | list[str] = ()) -> Path:
    """Fail now, not after an hour of training, when ``folder`` cannot receive npad's outputs.

    Refuses (one line naming the path): ``folder`` or one of its parents existing as a file
    (``NotADirectoryError``), a folder that cannot be created or written (``PermissionError``),
    and a name in ``names`` too long for this file system (``OSError`` ENAMETOOLONG).  Nothing is
    created: an existing folder is probed with a temporary file of npad's naming, removed at once.
    Returns ``folder`` as a Path.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:  # the nearest existing ancestor
        if existing.is_symlink():
            raise NotADirectoryError(f"output folder {folder}: {existing} is a broken symbolic link")
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == folder else f" ({existing} is a file)"
        raise NotADirectoryError(f"output folder {folder} cannot be created: a file is in the way{where}")
    if existing == folder:
        try:  # the only reliable test (ACLs, read-only mounts, root)
            fd, probe = tempfile.mkstemp(prefix=_temp_prefix(folder / "probe"), suffix=".tmp", dir=folder)
        except OSError as e:
            raise PermissionError(f"output folder {folder} is not writable ({e.strerror})") from None
        os.close(fd)
        os.unlink(probe)
    elif not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {folder} cannot be created: {existing} is not writable")
    limit = _name_max(existing)
    for name in names:
        if len(os.fsencode(name)) > limit:
            raise OSError(errno.ENAMETOOLONG,
                          f"output file name too long ({len(os.fsencode(name))} > {limit} bytes): {folder / name}")
    return folder


def check_writable(path: str | os.PathLike) -> Path:
    """Fail now when file ``path`` cannot be written atomically later: see :func:`check_output_dir`; a folder at
    ``path`` is refused too (``IsADirectoryError``).  Nothing is created.  Returns ``path`` as a Path."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"output file {path} is a folder")
    check_output_dir(path.parent, [path.name])
    return path


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


class _Reader:
    """Reads the groups of one checkpoint, refusing whatever reads outside the file or allocates without bound."""

    def __init__(self, path: Path, max_bytes: int):
        self.path, self.left, self.max_bytes = path, int(max_bytes), int(max_bytes)
        self.seen: set[int] = set()

    def fail(self, where: str, why: str):
        raise CheckpointError(f"checkpoint {self.path}: {where}: {why}")

    def attr(self, obj, name: str, default: Any = None) -> Any:
        """Attribute ``name`` of ``obj`` (a string or a scalar), size-checked before reading."""
        import h5py

        if name not in obj.attrs:
            return default
        aid = obj.attrs.get_id(name)
        if aid.shape is None or math.prod(aid.shape) * aid.dtype.itemsize > 2 ** 24:
            self.fail(f"{obj.name} attribute {name!r}", f"refusing a {aid.shape} {aid.dtype} attribute")
        value = obj.attrs[name]
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value.item()
        if isinstance(value, (np.ndarray, h5py.Empty)):
            self.fail(f"{obj.name} attribute {name!r}", f"expected a string or a number, got {value!r:.80}")
        return value

    def child(self, group, name: str):
        """``group[name]``: refused when a soft or external link, or when reached before (hard-link cycle)."""
        import h5py

        where = f"{group.name.rstrip('/')}/{name}"
        link = group.get(name, getlink=True)
        if link is None:
            self.fail(where, "missing (listed in npad_keys)")
        if isinstance(link, h5py.SoftLink):
            self.fail(where, f"refusing a soft link (to {link.path})")
        if isinstance(link, h5py.ExternalLink):
            self.fail(where, f"refusing an external link (to {link.filename}:{link.path})")
        item = group[name]
        if hash(item.id) in self.seen:
            self.fail(where, "refusing an object linked twice (a hard-link cycle; npad writes each object once)")
        self.seen.add(hash(item.id))
        return item

    def tree(self, group, depth: int = 0) -> dict:
        """The nested dict ``name -> array`` stored in ``group`` by :func:`_write_tree`."""
        import h5py

        if depth > MAX_DEPTH:
            self.fail(group.name, f"groups nested deeper than npad.io.MAX_DEPTH = {MAX_DEPTH}")
        keys = self.attr(group, "npad_keys")
        names = [_unescape(k) for k in group] if keys is None else json.loads(keys)
        if not isinstance(names, list) or not all(isinstance(k, str) for k in names):
            self.fail(group.name, f"attribute npad_keys is not a list of names: {keys!r:.80}")
        out: dict[str, Any] = {}
        for key in names:
            item = self.child(group, _escape(key))
            out[key] = self.tree(item, depth + 1) if isinstance(item, h5py.Group) else self.array(item)
        return out

    def array(self, dset) -> np.ndarray:
        """A dataset's values, after checking where they are stored and what they would allocate."""
        where = dset.name
        if dset.is_virtual:
            self.fail(where, "refusing a virtual dataset (its data live in other files)")
        dcpl = dset.id.get_create_plist()
        if dcpl.get_external_count():
            other = dcpl.get_external(0)[0].decode("utf-8", "replace")
            self.fail(where, f"refusing a dataset with external storage (its data live in {other})")
        if dset.shape is None or dset.dtype.kind not in "biufcS":
            self.fail(where, f"unsupported dataset of dtype {dset.dtype} and shape {dset.shape}")
        nbytes = math.prod(dset.shape) * dset.dtype.itemsize
        stored = dset.id.get_storage_size()
        if nbytes > MAX_EXPANSION * stored + 2 ** 16:
            self.fail(where, f"declares shape {dset.shape} ({nbytes} bytes) but stores only {stored} bytes")
        if nbytes > self.left:
            self.fail(where, f"declares shape {dset.shape} ({nbytes} bytes): the file's arrays exceed max_bytes = "
                             f"{self.max_bytes} (raise npad.io.MAX_CHECKPOINT_BYTES to read it)")
        self.left -= nbytes
        arr = np.asarray(dset[()])
        if self.attr(dset, "npad_unicode", False):
            arr = np.char.decode(arr, "utf-8")
        return arr


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


def load_checkpoint(path: str | os.PathLike, max_bytes: int | None = None) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; returns ``dict(state, config, stats, method, format_version)``.

    Raises :class:`CheckpointError` naming the file when it is missing,
    truncated, not HDF5, HDF5 without npad's format marker, or unsafe to read
    (see the module notes); ``max_bytes`` (default :data:`MAX_CHECKPOINT_BYTES`)
    caps the bytes of all its arrays together.
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
    reader = _Reader(path, MAX_CHECKPOINT_BYTES if max_bytes is None else max_bytes)
    try:
        with f:
            marker = reader.attr(f, "npad_format")
            if marker != FORMAT_MARKER:
                raise CheckpointError(
                    f"{path} is an HDF5 file but not an npad checkpoint (missing format marker "
                    f"npad_format={FORMAT_MARKER!r}; found {marker!r})"
                )
            version = reader.attr(f, "format_version", -1)
            if not isinstance(version, (int, np.integer)) or not 1 <= version <= FORMAT_VERSION:
                raise CheckpointError(
                    f"checkpoint {path} has format version {version!r}; this npad reads versions 1..{FORMAT_VERSION}"
                )
            if "state" not in f:
                raise CheckpointError(f"checkpoint {path} has no 'state' group (incomplete file)")
            groups = {}
            for name in ("state", "stats"):
                if name in f:
                    item = reader.child(f, name)
                    if not isinstance(item, h5py.Group):
                        reader.fail(f"/{name}", "a dataset where a group is expected")
                    groups[name] = reader.tree(item)
            config = json.loads(reader.attr(f, "config", "{}"))
            if not isinstance(config, dict):
                reader.fail("attribute 'config'", f"not a JSON object: {config!r:.80}")
            method = str(reader.attr(f, "method", "")) if bool(reader.attr(f, "has_method", False)) else None
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or corrupted ({e})") from None
    return {"state": groups["state"], "config": config, "stats": groups.get("stats"), "method": method,
            "format_version": int(version)}
