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

A hostile file cannot make the reader allocate or work without bound either:
sizes, offsets and strides are checked against their storage before anything is
allocated (stride 0 is allowed, as ``torch.save`` keeps expanded views); the
bytes read and the arrays made together stay under :data:`MAX_EXPANSION` times
the file's size plus :data:`SLACK_BYTES`; objects the pickle shares are
converted once (a pickle DAG is linear, not exponential), and containers nest at
most :data:`MAX_DEPTH` deep.

Main entry point: :func:`load_torch_checkpoint` (``path -> OrderedDict[str,
np.ndarray]``); :func:`load_torch_file` returns the unpickled object with
tensors as numpy arrays (nested dicts/lists kept).
"""
from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
import zipfile
from typing import Any, Dict

import numpy as np

__all__ = ["load_torch_checkpoint", "load_torch_file", "TorchFileError",
           "LEGACY_MAGIC", "MAX_DEPTH", "MAX_EXPANSION", "SLACK_BYTES"]

#: Magic number that opens a legacy (pre-zip) ``torch.save`` file.
LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001

#: Bytes read plus arrays made may reach MAX_EXPANSION x the file's size + SLACK_BYTES (a storage is read once and
#: copied into its tensors once; the rest covers views such as ``w`` and ``w.t()`` saved together).
MAX_EXPANSION = 3
SLACK_BYTES = 256 * 2 ** 20
#: Deepest container nesting followed (checkpoints nest 2 to 5 deep).
MAX_DEPTH = 64
_MAX_KEYS = 1_000_000  # flattened names of a training checkpoint


class TorchFileError(ValueError):
    """A file could not be read as a PyTorch checkpoint (message names it)."""


class _Budget:
    """Bytes one checkpoint may make the reader allocate (see :data:`MAX_EXPANSION`)."""

    def __init__(self, path, file_bytes: int):
        self.path, self.file_bytes = path, int(file_bytes)
        self.left = MAX_EXPANSION * self.file_bytes + SLACK_BYTES

    def take(self, nbytes: int, what: str) -> None:
        if nbytes > self.left:
            raise TorchFileError(
                f"{self.path}: {what} would need {nbytes} bytes, more than a {self.file_bytes}-byte checkpoint "
                f"can hold (npad.torchfile.MAX_EXPANSION = {MAX_EXPANSION}, SLACK_BYTES = {SLACK_BYTES})")
        self.left -= nbytes


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
                 base: "_Storage | None" = None, base_offset: int = 0, path=""):
        if not isinstance(stype, _StorageType):
            raise TorchFileError(f"{path}: storage of unknown type {stype!r:.80}")
        self.stype = stype
        self.numel = int(numel)
        self.data = data
        self.base = base              # legacy storage views
        self.base_offset = int(base_offset)
        if self.numel < 0 or (base is not None and not 0 <= self.base_offset <= base.numel - self.numel):
            raise TorchFileError(f"{path}: storage of {self.numel} elements at offset {self.base_offset} "
                                 f"outside its base storage")

    def raw(self, swap: bool) -> np.ndarray:
        """The storage as a 1-D numpy array of its file dtype (bfloat16 as uint16), no copy."""
        if self.base is not None:
            return self.base.raw(swap)[self.base_offset:self.base_offset + self.numel]
        if self.data is None:
            raise TorchFileError("storage data missing")
        dt = np.dtype("<u2") if self.stype.dtype == "bfloat16" else self.stype.dtype
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


def _tensor(ref: _TensorRef, swap: bool, path, budget: _Budget) -> np.ndarray:
    """``as_strided(storage[offset:], size, stride)`` as a new C-contiguous native-endian array (bfloat16 widened
    to float32); offset, sizes and strides are checked against the storage before anything is allocated."""
    size, stride, off = ref.size, ref.stride, ref.offset
    what = f"tensor (offset {off}, size {size}, stride {stride})"
    if len(size) != len(stride) or len(size) > 64:
        raise TorchFileError(f"{path}: {what}: size and stride differ in rank, or rank > 64")
    if off < 0 or min(size, default=0) < 0 or min(stride, default=0) < 0:
        raise TorchFileError(f"{path}: {what}: negative offset, size or stride")
    bf16 = ref.storage.stype.dtype == "bfloat16"
    itemsize = 4 if bf16 else ref.storage.stype.itemsize
    numel = math.prod(size)
    if numel:
        last = off + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= ref.storage.numel:
            raise TorchFileError(f"{path}: {what} exceeds its storage of {ref.storage.numel} elements "
                                 "(truncated or corrupt file?)")
    budget.take(numel * itemsize, what)
    flat = ref.storage.raw(swap)
    if numel == 0:
        out = np.zeros(size, dtype=np.float32 if bf16 else flat.dtype.newbyteorder("="))
    else:
        stride = tuple(s if n > 1 else 0 for n, s in zip(size, stride))  # unused strides may be anything
        view = np.lib.stride_tricks.as_strided(flat[off:], shape=size,
                                               strides=tuple(s * flat.itemsize for s in stride), writeable=False)
        # np.array keeps 0-d shapes (np.ascontiguousarray would make them 1-d)
        out = np.array(view, dtype=view.dtype.newbyteorder("="), order="C", copy=True)
    return (out.astype(np.uint32) << 16).view(np.float32) if bf16 else out


def _walk(obj, leaf, path, what="container"):
    """Rebuild nested dict / OrderedDict / list / tuple ``obj`` with ``leaf(x)`` for each non-container.

    An object the pickle shares is rebuilt once and shared again (pickles are DAGs: without this a few hundred
    bytes take exponential time); nesting deeper than :data:`MAX_DEPTH` or a container holding itself is refused.
    """
    memo: dict[int, Any] = {}
    active: set[int] = set()

    def go(o, depth):
        if not isinstance(o, (dict, list, tuple)):
            return leaf(o)
        k = id(o)
        if k in memo:
            return memo[k]
        if k in active or depth > MAX_DEPTH:
            raise TorchFileError(f"{path}: {what} nested deeper than {MAX_DEPTH} levels or holding itself")
        active.add(k)
        if isinstance(o, dict):
            out = (collections.OrderedDict if isinstance(o, collections.OrderedDict) else dict)(
                (key, go(v, depth + 1)) for key, v in o.items())
        else:
            out = [go(v, depth + 1) for v in o]
            out = tuple(out) if isinstance(o, tuple) else out
        active.discard(k)
        memo[k] = out
        return out

    return go(obj, 0)


def _materialize(obj, swap: bool, path, budget: _Budget):
    """Replace every :class:`_TensorRef` in a nested structure by a numpy array (a shared one by one array)."""
    arrays: dict[int, np.ndarray] = {}

    def leaf(o):
        if not isinstance(o, _TensorRef):
            return o
        if id(o) not in arrays:
            arrays[id(o)] = _tensor(o, swap, path, budget)
        return arrays[id(o)]

    return _walk(obj, leaf, path)


def _contains_tensor(obj, path) -> bool:
    found = []
    _walk(obj, lambda o: found.append(True) if isinstance(o, _TensorRef) else None, path)
    return bool(found)


def _load_from_bytes_factory(path, budget):
    # torch.storage._load_from_bytes(b) == torch.load(BytesIO(b)) of one storage
    def _load_from_bytes(b):
        obj, _ = _load_stream(io.BytesIO(b), f"{path} (embedded storage)", budget, raw=True)
        return obj
    return _load_from_bytes


def _load_legacy(f, path, budget, raw=False):
    """Legacy format; ``f`` positioned at start.  Returns (object, swap)."""
    def no_pid(pid):
        raise TorchFileError(f"{path}: unexpected persistent id {pid!r}")

    extra = {("torch.storage", "_load_from_bytes"): _load_from_bytes_factory(path, budget)}

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
        if raw or not _contains_tensor(magic, path):
            raise TorchFileError(f"{path}: not a PyTorch checkpoint (no torch.save magic "
                                 "number and no tensors in the pickle)")
        return _materialize(magic, False, path, budget), False
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
            storages[key] = _Storage(stype, numel, path=path)
        root = storages[key]
        if view_meta is not None:
            view_key, offset, view_size = view_meta
            if view_key not in storages:
                storages[view_key] = _Storage(stype, view_size, base=root, base_offset=offset, path=path)
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
        budget.take(nbytes, f"storage {key!r}")
        data = f.read(nbytes)
        if len(data) != nbytes:
            raise TorchFileError(
                f"{path}: truncated (storage {key!r} has {len(data)} of {nbytes} bytes)")
        st.data = data
    if raw and isinstance(obj, _Storage):
        return obj, swap
    return _materialize(obj, swap, path, budget), swap


def _read_member(zf: zipfile.ZipFile, name: str, path, budget: _Budget) -> bytes:
    """A zip member's bytes, its declared size checked first (a deflated member can expand 1000x)."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise TorchFileError(f"{path}: missing storage {name}") from None
    budget.take(info.file_size, f"zip member {name}")
    return zf.read(info)


def _load_zip(zf: zipfile.ZipFile, path, budget):
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if not pkl:
        raise TorchFileError(f"{path}: zip file without <prefix>/data.pkl, not a PyTorch checkpoint")
    prefix = pkl[0][: -len("data.pkl")]
    swap = False
    if prefix + "byteorder" in names:
        swap = _read_member(zf, prefix + "byteorder", path, budget).strip() == b"big"
    storages: Dict[str, _Storage] = {}

    def pload(pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise TorchFileError(f"{path}: unsupported persistent id {pid!r}")
        _, stype, key, _location, numel = pid[:5]
        if key not in storages:
            if not isinstance(stype, _StorageType):
                raise TorchFileError(f"{path}: storage of unknown type {stype!r:.80}")
            member = f"{prefix}data/{key}"
            data = _read_member(zf, member, path, budget)
            if stype.name == "UntypedStorage":
                numel = len(data)
            need = int(numel) * stype.itemsize
            if len(data) < need:
                raise TorchFileError(
                    f"{path}: truncated storage {member} ({len(data)} of {need} bytes)")
            storages[key] = _Storage(stype, numel, data, path=path)
        return storages[key]

    try:
        obj = _Unpickler(io.BytesIO(_read_member(zf, pkl[0], path, budget)), pload, path).load()
    except TorchFileError:
        raise
    except Exception as e:  # noqa: BLE001
        raise TorchFileError(f"{path}: truncated or corrupt checkpoint ({type(e).__name__}: {e})") from e
    return _materialize(obj, swap, path, budget)


def _load_stream(f, path, budget, raw=False):
    start = f.read(4)
    f.seek(0)
    if start[:2] == b"PK":
        try:
            zf = zipfile.ZipFile(f)
        except zipfile.BadZipFile as e:
            raise TorchFileError(f"{path}: truncated or corrupt zip checkpoint ({e})") from e
        with zf:
            try:
                return _load_zip(zf, path, budget), False
            except (zipfile.BadZipFile, EOFError, OSError) as e:
                raise TorchFileError(f"{path}: truncated or corrupt zip checkpoint ({e})") from e
    if start[:1] != b"\x80":
        raise TorchFileError(f"{path}: not a PyTorch checkpoint (neither zip nor pickle)")
    return _load_legacy(f, path, budget, raw=raw)


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
        obj, _ = _load_stream(f, path, _Budget(path, os.fstat(f.fileno()).st_size))
    return obj


def _is_state_dict(d) -> bool:
    return isinstance(d, dict) and len(d) > 0 and all(
        isinstance(v, np.ndarray) for v in d.values())


def _flatten(obj, path) -> "collections.OrderedDict[str, np.ndarray]":
    """Arrays of nested dicts under ``.``-joined names; a shared dict counts once per path to it, so the
    number of visits is bounded (a DAG of dicts would otherwise take exponential time)."""
    out: "collections.OrderedDict[str, np.ndarray]" = collections.OrderedDict()
    visits = 0

    def go(o, prefix):
        nonlocal visits
        visits += 1
        if visits > _MAX_KEYS:
            raise TorchFileError(f"{path}: more than {_MAX_KEYS} entries once nested dicts are flattened")
        if isinstance(o, np.ndarray):
            out[prefix] = o
        elif isinstance(o, dict):
            for k, v in o.items():
                go(v, f"{prefix}.{k}" if prefix else str(k))

    go(obj, "")
    return out


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
    out = _flatten(obj, os.fspath(path))
    if not out:
        raise TorchFileError(f"{os.fspath(path)}: checkpoint holds no tensors")
    return out

