"""A DataLoader-like batching iterator over npad datasets, with background prefetch.

Samples that are tuples (``TensorDataset``, a PyTorch-style ``Dataset``) batch as
torch's ``default_collate`` does: ``for x, y in DataLoader(ds, batch_size=64)`` gives
tensors. npad's image datasets return dicts, and ``for batch in DataLoader(ds,
batch_size=8, shuffle=True, seed=0): ...`` yields dicts of NumPy arrays::

    image       float32 (B, 3, H, W)
    mask        float32 (B, 1, H, W)       (labelled datasets)
    label       int64   (B,)
    has_mask    bool    (B,)
    path        list[str]
    defect_type list[str]

Determinism: the shuffle order of epoch e is ``default_rng([seed, e]).permutation(N)``
and sample i of epoch e is transformed with ``default_rng([seed, e, i])``, so
batches are identical for any ``num_workers``/``prefetch`` setting.

Speed: with ``prefetch`` > 0 a background thread assembles the next batches
while the model runs (PIL decoding and NumPy release the GIL); with
``num_workers`` > 0 the samples of a batch are decoded by that many threads.

Unreadable images (truncated files, ...) are skipped with a warning naming the
file, and left out of later epochs; with ``strict=True`` they raise.
"""
from __future__ import annotations

import math
import queue
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..backend import get_array_module
from ..tensor import Tensor
from .folder import DataWarning, UnreadableImageError

__all__ = ["DataLoader", "collate"]


def _stack_field(vals: list, k: int) -> Any:
    """Field k of tuple samples as one batch (torch's default_collate): tensors and arrays stacked into a
    tensor (B, ...), bools / ints / floats into a bool / int64 / float64 tensor (B,), others a list."""
    v0 = vals[0]
    if isinstance(v0, (Tensor, np.ndarray)):
        arrays = [v.data if isinstance(v, Tensor) else v for v in vals]
        if len({a.shape for a in arrays}) > 1:
            j = next(i for i, a in enumerate(arrays) if a.shape != arrays[0].shape)
            raise ValueError(f"collate: field {k} of the samples differs in shape within a batch: sample 0 has "
                             f"{arrays[0].shape}, sample {j} has {arrays[j].shape}")
        return Tensor._make(get_array_module(arrays[0]).stack(arrays), False, None, 0)  # B x ...
    for kind, dtype in ((bool, np.bool_), (int, np.int64), (float, np.float64)):
        if isinstance(v0, kind):
            return Tensor._make(np.array(vals, dtype=dtype), False, None, 0)        # B
    if isinstance(v0, np.generic):
        return Tensor._make(np.array(vals), False, None, 0)
    return list(vals)


def collate(items: Sequence[Any]) -> Any:
    """Stack a list of samples. Sample dicts: arrays -> (B, ...) arrays, ints -> int64 (B,), bools -> bool (B,),
    others -> lists. Tuple (or list) samples: a list with each field batched as torch's default_collate.

    Raises ValueError naming two paths when array shapes differ (add a Resize transform).
    """
    if not items:
        raise ValueError("collate: empty batch")
    if isinstance(items[0], (tuple, list)):
        n = len(items[0])
        if any(len(it) != n for it in items):
            raise ValueError(f"collate: samples have different lengths {sorted({len(it) for it in items})}")
        return [_stack_field([it[k] for it in items], k) for k in range(n)]
    if not isinstance(items[0], dict):
        return _stack_field(list(items), 0)
    out: dict[str, Any] = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        v0 = vals[0]
        if isinstance(v0, np.ndarray):
            shapes = {v.shape for v in vals}
            if len(shapes) > 1:
                j = next(k for k, v in enumerate(vals) if v.shape != v0.shape)
                raise ValueError(
                    f"collate: '{key}' shapes differ within a batch: {items[0].get('path', 0)} has {v0.shape}, "
                    f"{items[j].get('path', j)} has {vals[j].shape}; add a Resize transform"
                )
            out[key] = np.stack(vals)  # (B, ...)
        elif isinstance(v0, (bool, np.bool_)):
            out[key] = np.array(vals, dtype=bool)  # (B,)
        elif isinstance(v0, (int, np.integer)):
            out[key] = np.array(vals, dtype=np.int64)  # (B,)
        elif isinstance(v0, (float, np.floating)):
            out[key] = np.array(vals, dtype=np.float64)  # (B,)
        else:
            out[key] = list(vals)
    return out


_END = object()


class _Prefetcher:
    """Run a batch generator in a daemon thread, ``depth`` batches ahead; re-raise its errors here."""

    def __init__(self, gen: Iterator, depth: int):
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._gen = gen
        self._thread = threading.Thread(target=self._run, name="npad-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._gen:
                if not self._put(("ok", item)):
                    break
        except BaseException as e:  # forwarded to the consumer
            self._put(("err", e))
        finally:
            self._gen.close()
            self._put(("end", _END))

    def __iter__(self):
        return self

    def __next__(self):
        if self._stop.is_set():
            raise StopIteration
        kind, item = self._q.get()
        if kind == "ok":
            return item
        self.close()
        if kind == "err":
            raise item
        raise StopIteration

    def close(self) -> None:
        self._stop.set()
        try:
            while True:
                self._q.get_nowait()
        except queue.Empty:
            pass
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class DataLoader:
    """Batch a dataset: ``batch_size``, ``shuffle``, ``drop_last``, ``seed`` as in PyTorch; ``prefetch`` batches ahead in a thread.

    ``num_workers`` threads decode the samples of a batch in parallel (0: the
    prefetch thread, or the caller's thread when ``prefetch=0``, decodes them).
    ``strict`` (default: the dataset's ``strict``) makes unreadable images raise.
    ``collate_fn`` defaults to :func:`collate`.
    """

    def __init__(self, dataset: Any, batch_size: int = 1, shuffle: bool = False, drop_last: bool = False,
                 seed: int = 0, num_workers: int = 0, prefetch: int = 2, strict: bool | None = None,
                 collate_fn: Callable[[Sequence[dict]], Any] | None = None):
        if int(batch_size) < 1:
            raise ValueError(f"DataLoader: batch_size must be >= 1, got {batch_size}")
        if num_workers < 0 or prefetch < 0:
            raise ValueError(f"DataLoader: num_workers and prefetch must be >= 0, got {num_workers}, {prefetch}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.num_workers = int(num_workers)
        self.prefetch = int(prefetch)
        self.strict = getattr(dataset, "strict", False) if strict is None else strict
        self.collate_fn = collate_fn or collate
        self.epoch = 0
        self._bad: set[int] = set()

    def __len__(self) -> int:
        n = len(self.dataset) - len(self._bad)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _load(self, i: int, epoch: int) -> tuple[dict | None, str | None]:
        rng = np.random.default_rng([self.seed, epoch, i])
        try:
            get = getattr(self.dataset, "get", None)
            return (get(i, rng) if get is not None else self.dataset[i]), None
        except UnreadableImageError as e:
            if self.strict:
                raise
            self._bad.add(i)
            skipped = getattr(self.dataset, "skipped", None)
            if isinstance(skipped, list):
                skipped.append(e.path)
            return None, f"skipping unreadable image {e.path} ({e})"

    def _batches(self, order: np.ndarray, epoch: int) -> Iterator[tuple[Any, list[str]]]:
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="npad-load") if self.num_workers else None
        buf: list[dict] = []
        msgs: list[str] = []
        bs = self.batch_size
        try:
            for start in range(0, len(order), bs):
                idx = [int(i) for i in order[start:start + bs]]
                loaded = pool.map(self._load, idx, [epoch] * len(idx)) if pool else (self._load(i, epoch) for i in idx)
                for item, msg in loaded:
                    if item is not None:
                        buf.append(item)
                    if msg:
                        msgs.append(msg)
                while len(buf) >= bs:
                    batch, buf = buf[:bs], buf[bs:]
                    yield self.collate_fn(batch), msgs
                    msgs = []
            if buf and not self.drop_last:
                yield self.collate_fn(buf), msgs
                msgs = []
            if msgs:  # skipped files in a dropped or empty tail
                yield None, msgs
        finally:
            if pool is not None:
                pool.shutdown(wait=True)

    def __iter__(self) -> Iterator[Any]:
        epoch = self.epoch
        self.epoch += 1
        n = len(self.dataset)
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        if self._bad:
            order = order[~np.isin(order, list(self._bad))]
        gen = self._batches(order, epoch)
        src: Iterator = _Prefetcher(gen, self.prefetch) if self.prefetch > 0 else gen
        return self._emit(src)

    @staticmethod
    def _emit(src: Iterator) -> Iterator[Any]:
        try:
            for batch, msgs in src:
                for m in msgs:  # warnings are raised in the consumer's thread
                    warnings.warn(m, DataWarning, stacklevel=2)
                if batch is not None:
                    yield batch
        finally:
            close = getattr(src, "close", None)
            if close is not None:
                close()
