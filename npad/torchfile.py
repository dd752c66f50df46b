"""Torch-free reader for PyTorch checkpoint files (``torch.save`` output).

A checkpoint is a pickle whose tensors refer to raw "storages" through
pickle's persistent-id mechanism; tensor = as_strided(storage[offset:], size,
stride).  Two container formats exist (see ``torch/serialization.py`` in the
PyTorch sources):

* **legacy** (torch < 1.6, ``_use_new_zipfile_serialization=False``): five
  pickles in sequence -- magic number ``0x1950a86a20f9469cfc6c``, protocol
  version (1001), sys-info dict (endianness, type sizes), the object itself,
  and the list of storage keys -- followed by each storage as a little-endian
  int64 element count plus its raw bytes, in the order of that list.
* **zip** (torch >= 1.6, torchvision's checkpoints): a zip archive
  ``<prefix>/data.pkl`` with storages in ``<prefix>/data/<key>`` (raw bytes,
  no header) and an optional ``<prefix>/byteorder``.

Unpickling uses a restricted :class:`pickle.Unpickler` whose ``find_class``
only resolves the handful of torch rebuild functions, storage types and
``collections.OrderedDict``; torch is never imported, and arbitrary code in a
hostile file cannot run.

Main entry point: :func:`load_torch_checkpoint` (``path -> OrderedDict[str,
np.ndarray]``); :func:`load_torch_file` returns the unpickled object with
tensors as numpy arrays (nested dicts/lists kept).
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, Dict

import numpy as np

__all__ = ["load_torch_checkpoint", "load_torch_file", "TorchFileError",
           "LEGACY_MAGIC"]

#: Magic number that opens a legacy (pre-zip) ``torch.save`` file.
LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001


class TorchFileError(ValueError):
    """A file could not be read as a PyTorch checkpoint (message names it)."""


# storage class name -> numpy dtype ("bfloat16" handled specially)
_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
    "ComplexFloatStorage": np.dtype("<c8"),
    "ComplexDoubleStorage": np.dtype("<c16"),
    "UntypedStorage": np.dtype("u1"),
}


class _StorageType:
    """Stand-in for a ``torch.<X>Storage`` class (only its dtype matters)."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else self.dtype.itemsize

    def __repr__(self):
        return f"<storage type {self.name}>"


class _Storage:
    """A flat, typed buffer; ``data`` (bytes) may be filled in later (legacy)."""

    def __init__(self, stype: _StorageType, numel: int, data: bytes | None = None,
                 base: "_Storage | None" = None, base_offset: int = 0):
        self.stype = stype
        self.numel = int(numel)
        self.data = data
        self.base = base              # legacy storage views
        self.base_offset = base_offset

    def array(self, swap: bool) -> np.ndarray:
        """The storage as a 1-D numpy array of its dtype (native order)."""
        if self.base is not None:
            return self.base.array(swap)[self.base_offset:self.base_offset + self.numel]
        if self.data is None:
            raise TorchFileError("storage data missing")
        if self.stype.dtype == "bfloat16":
            raw = np.frombuffer(self.data, dtype=">u2" if swap else "<u2",
                                count=self.numel)
            return (raw.astype(np.uint32) << 16).view(np.float32)
        dt = self.stype.dtype
        if swap:
            dt = dt.newbyteorder(">")
        return np.frombuffer(self.data, dtype=dt, count=self.numel)


class _TensorRef:
    """A tensor awaiting materialisation: ``as_strided(storage, size, stride, offset)``."""

    def __init__(self, storage: _Storage, offset: int, size, stride):
        if not isinstance(storage, _Storage):
            raise TorchFileError(f"tensor built from a non-storage {type(storage).__name__}")
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)


class _TypeStub:
    """Stand-in for ``torch.Tensor`` / ``torch.nn.Parameter`` passed as a type."""

    def __init__(self, name):
        self.name = name


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None,
                                  state=None):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    return func(*args)


def _codecs_encode(text, encoding="utf-8"):
    if encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise TorchFileError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode(encoding)


class _Unpickler(pickle.Unpickler):
    """Restricted unpickler: resolves only torch rebuild helpers and storages."""

    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
        ("torch._tensor", "Tensor"): _TypeStub("Tensor"),
        ("torch", "Tensor"): _TypeStub("Tensor"),
        ("torch.nn.parameter", "Parameter"): _TypeStub("Parameter"),
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("__builtin__", "set"): set,
        ("_codecs", "encode"): _codecs_encode,   # protocol-2 pickles of bytes
    }

    def __init__(self, file, persistent_load, path, extra=None):
        super().__init__(file, encoding="latin1")
        self._pload = persistent_load
        self._path = path
        self._extra = extra or {}

    def find_class(self, module, name):
        key = (module, name)
        if key in self._extra:
            return self._extra[key]
        if key in self._ALLOWED:
            return self._ALLOWED[key]
        if module in ("torch", "torch.cuda") and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise TorchFileError(
            f"{self._path}: refusing to unpickle global {module}.{name} "
            "(only torch tensors/storages and OrderedDict are allowed)")

    def persistent_load(self, pid):
        return self._pload(pid)


def _materialize(obj, swap: bool, path):
    """Replace every :class:`_TensorRef` in a nested structure by a numpy array."""
    if isinstance(obj, _TensorRef):
        flat = obj.storage.array(swap)
        size, stride = obj.size, obj.stride
        if len(size) != len(stride):
            raise TorchFileError(f"{path}: tensor size {size} and stride {stride} differ in rank")
        if 0 in size:
            return np.zeros(size, dtype=flat.dtype.newbyteorder("="))
        last = obj.offset + sum((n - 1) * s for n, s in zip(size, stride))
        if obj.offset < 0 or last >= flat.size or min(stride, default=0) < 0:
            raise TorchFileError(
                f"{path}: tensor (offset {obj.offset}, size {size}, stride {stride}) "
                f"exceeds its storage of {flat.size} elements (truncated or corrupt file?)")
        base = flat[obj.offset:]
        view = np.lib.stride_tricks.as_strided(
            base, shape=size, strides=tuple(s * flat.itemsize for s in stride),
            writeable=False)
        # np.array keeps 0-d shapes (np.ascontiguousarray would make them 1-d)
        return np.array(view, dtype=view.dtype.newbyteorder("="), order="C", copy=True)
    if isinstance(obj, collections.OrderedDict):
        out = collections.OrderedDict((k, _materialize(v, swap, path)) for k, v in obj.items())
        return out
    if isinstance(obj, dict):
        return {k: _materialize(v, swap, path) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_materialize(v, swap, path) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(v, swap, path) for v in obj)
    return obj


def _contains_tensor(obj) -> bool:
    if isinstance(obj, _TensorRef):
        return True
    if isinstance(obj, dict):
        return any(_contains_tensor(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_contains_tensor(v) for v in obj)
    return False


def _load_from_bytes_factory(path):
    # torch.storage._load_from_bytes(b) == torch.load(BytesIO(b)) of one storage
    def _load_from_bytes(b):
        obj, _ = _load_stream(io.BytesIO(b), f"{path} (embedded storage)", raw=True)
        return obj
    return _load_from_bytes


def _load_legacy(f, path, raw=False):
    """Legacy format; ``f`` positioned at start.  Returns (object, swap)."""
    def no_pid(pid):
        raise TorchFileError(f"{path}: unexpected persistent id {pid!r}")

    extra = {("torch.storage", "_load_from_bytes"): _load_from_bytes_factory(path)}

    def pickle_load(what):
        try:
            return _Unpickler(f, no_pid, path, extra).load()
        except TorchFileError:
            raise
        except Exception as e:  # noqa: BLE001 - report as file error
            raise TorchFileError(f"{path}: not a PyTorch checkpoint or truncated ({what}: {e})") from e

    magic = pickle_load("magic number")
    if not (isinstance(magic, int) and magic == LEGACY_MAGIC):
        # Not torch.save output; a plain pickle of tensors (pickle.dump(state_dict))
        # embeds each storage as torch.storage._load_from_bytes(<legacy torch.save>).
        if raw or not _contains_tensor(magic):
            raise TorchFileError(f"{path}: not a PyTorch checkpoint (no torch.save magic "
                                 "number and no tensors in the pickle)")
        return _materialize(magic, False, path), False
    proto = pickle_load("protocol version")
    if proto != _LEGACY_PROTOCOL:
        raise TorchFileError(f"{path}: unsupported legacy protocol version {proto!r}")
    sys_info = pickle_load("sys info")
    if not isinstance(sys_info, dict):
        raise TorchFileError(f"{path}: malformed sys info {sys_info!r}")
    swap = not sys_info.get("little_endian", True)

    storages: Dict[str, _Storage] = {}

    def pload(pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise TorchFileError(f"{path}: unsupported persistent id {pid!r}")
        _, stype, key, _location, numel, view_meta = pid
        if key not in storages:
            storages[key] = _Storage(stype, numel)
        root = storages[key]
        if view_meta is not None:
            view_key, offset, view_size = view_meta
            if view_key not in storages:
                storages[view_key] = _Storage(stype, view_size, base=root, base_offset=offset)
            return storages[view_key]
        return root

    try:
        obj = _Unpickler(f, pload, path, extra).load()
        keys = _Unpickler(f, no_pid, path).load()
    except TorchFileError:
        raise
    except Exception as e:  # noqa: BLE001
        raise TorchFileError(f"{path}: truncated or corrupt checkpoint ({type(e).__name__}: {e})") from e
    for key in keys:
        st = storages.get(key)
        if st is None or st.base is not None:
            raise TorchFileError(f"{path}: storage key {key!r} not referenced by the pickle")
        head = f.read(8)
        if len(head) != 8:
            raise TorchFileError(f"{path}: truncated (missing storage {key!r})")
        (n,) = struct.unpack(">q" if swap else "<q", head)
        if n != st.numel:
            raise TorchFileError(f"{path}: storage {key!r} has {n} elements, expected {st.numel}")
        nbytes = n * st.stype.itemsize
        data = f.read(nbytes)
        if len(data) != nbytes:
            raise TorchFileError(
                f"{path}: truncated (storage {key!r} has {len(data)} of {nbytes} bytes)")
        st.data = data
    if raw and isinstance(obj, _Storage):
        return obj, swap
    return _materialize(obj, swap, path), swap


def _load_zip(zf: zipfile.ZipFile, path):
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if not pkl:
        raise TorchFileError(f"{path}: zip file without <prefix>/data.pkl, not a PyTorch checkpoint")
    prefix = pkl[0][: -len("data.pkl")]
    swap = False
    if prefix + "byteorder" in names:
        swap = zf.read(prefix + "byteorder").strip() == b"big"
    storages: Dict[str, _Storage] = {}

    def pload(pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise TorchFileError(f"{path}: unsupported persistent id {pid!r}")
        _, stype, key, _location, numel = pid[:5]
        if key not in storages:
            member = f"{prefix}data/{key}"
            try:
                data = zf.read(member)
            except KeyError:
                raise TorchFileError(f"{path}: missing storage {member}") from None
            if isinstance(stype, _StorageType) and stype.name == "UntypedStorage":
                numel = len(data)
            need = int(numel) * stype.itemsize
            if len(data) < need:
                raise TorchFileError(
                    f"{path}: truncated storage {member} ({len(data)} of {need} bytes)")
            storages[key] = _Storage(stype, numel, data)
        return storages[key]

    try:
        with zf.open(pkl[0]) as fh:
            obj = _Unpickler(io.BytesIO(fh.read()), pload, path).load()
    except TorchFileError:
        raise
    except Exception as e:  # noqa: BLE001
        raise TorchFileError(f"{path}: truncated or corrupt checkpoint ({type(e).__name__}: {e})") from e
    return _materialize(obj, swap, path)


def _load_stream(f, path, raw=False):
    start = f.read(4)
    f.seek(0)
    if start[:2] == b"PK":
        try:
            zf = zipfile.ZipFile(f)
        except zipfile.BadZipFile as e:
            raise TorchFileError(f"{path}: truncated or corrupt zip checkpoint ({e})") from e
        with zf:
            try:
                return _load_zip(zf, path), False
            except (zipfile.BadZipFile, EOFError, OSError) as e:
                raise TorchFileError(f"{path}: truncated or corrupt zip checkpoint ({e})") from e
    if start[:1] != b"\x80":
        raise TorchFileError(f"{path}: not a PyTorch checkpoint (neither zip nor pickle)")
    return _load_legacy(f, path, raw=raw)


def load_torch_file(path) -> Any:
    """Unpickle a ``torch.save`` file without torch; tensors become numpy arrays.

    Nested containers (dict / OrderedDict / list / tuple) and plain Python
    values are kept as they are.  Raises ``FileNotFoundError`` for a missing
    file and :class:`TorchFileError` (a ``ValueError``) naming the file for
    truncated, corrupt or non-checkpoint files.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PyTorch checkpoint not found: {path}")
    with open(path, "rb") as f:
        obj, _ = _load_stream(f, path)
    return obj


def _is_state_dict(d) -> bool:
    return isinstance(d, dict) and len(d) > 0 and all(
        isinstance(v, np.ndarray) for v in d.values())


def _flatten(obj, prefix, out):
    if isinstance(obj, np.ndarray):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)


def load_torch_checkpoint(path) -> "collections.OrderedDict[str, np.ndarray]":
    """Read a PyTorch checkpoint into ``OrderedDict(name -> np.ndarray)``.

    Accepts a plain ``state_dict`` file, or a training checkpoint dict holding
    one under ``state_dict`` / ``model_state_dict`` / ``model`` / ``net``
    (other nested dicts are flattened with ``.``-joined keys; non-tensor
    values are dropped).  Arrays are C-contiguous, native-endian copies;
    bfloat16 tensors are widened to float32.
    """
    obj = load_torch_file(path)
    if _is_state_dict(obj):
        return collections.OrderedDict(obj)
    if isinstance(obj, dict):
        for k in ("state_dict", "model_state_dict", "model", "net"):
            if _is_state_dict(obj.get(k)):
                return collections.OrderedDict(obj[k])
    out: "collections.OrderedDict[str, np.ndarray]" = collections.OrderedDict()
    _flatten(obj, "", out)
    if not out:
        raise TorchFileError(f"{os.fspath(path)}: checkpoint holds no tensors")
    return out

