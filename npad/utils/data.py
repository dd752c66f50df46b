"""Datasets and batching with torch.utils.data's names.

>>> import npad
>>> from npad.utils.data import TensorDataset, DataLoader
>>> ds = TensorDataset(npad.randn(10, 3), npad.arange(10))
>>> x, y = next(iter(DataLoader(ds, batch_size=4, shuffle=True)))
>>> tuple(x.shape), tuple(y.shape)
((4, 3), (4,))

``DataLoader`` is ``npad.data.DataLoader``: tuple samples batch into tensors as
torch's default_collate does; ``shuffle`` draws its order from ``seed`` and the
epoch, and ``num_workers`` are threads (see npad.data.loader).
"""
import math

import numpy as np

from ..data.loader import DataLoader, collate as default_collate
from ..tensor import Tensor, as_tensor

__all__ = ["Dataset", "TensorDataset", "Subset", "random_split", "DataLoader", "default_collate"]


class Dataset:
    """A map-style dataset: subclasses define ``__getitem__(i)`` and ``__len__()``."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} has no __getitem__")

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} has no __len__")


class TensorDataset(Dataset):
    """Sample i is ``(t[i] for t in tensors)``; all tensors share their first dimension."""

    def __init__(self, *tensors):
        tensors = [as_tensor(t) for t in tensors]
        sizes = [t.shape[0] if t.ndim else None for t in tensors]
        if not tensors or len(set(sizes)) != 1 or sizes[0] is None:
            raise ValueError(f"TensorDataset: tensors must share their first dimension, got shapes "
                             f"{[tuple(t.shape) for t in tensors]}")
        self.tensors = tuple(tensors)

    def __getitem__(self, index):
        return tuple(Tensor._make(t.data[index], False, None, 0) for t in self.tensors)

    def __len__(self):
        return self.tensors[0].shape[0]


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``; ``get(index, rng)`` hands npad's DataLoader generator to
    the dataset's own ``get`` (its random transforms then differ from epoch to epoch)."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, [int(i) for i in indices]

    def __getitem__(self, index):
        return self.dataset[self.indices[index]]

    def get(self, index, rng=None):
        get = getattr(self.dataset, "get", None)
        return get(self.indices[index], rng) if get is not None and rng is not None else self[index]

    def __len__(self):
        return len(self.indices)


def random_split(dataset, lengths, seed=0):
    """Subsets of the given lengths (or fractions summing to 1) drawn at random without overlap, as
    torch.utils.data.random_split; ``seed`` replaces torch's generator."""
    n = len(dataset)
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        counts = [int(math.floor(n * f)) for f in lengths]
        for i in range(n - sum(counts)):             # the remainder, round-robin (as torch)
            counts[i % len(counts)] += 1
        lengths = counts
    if sum(lengths) != n:
        raise ValueError(f"random_split: lengths {list(lengths)} do not add up to the dataset's {n} samples")
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([0] + list(lengths))
    return [Subset(dataset, order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
