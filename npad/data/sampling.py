"""Drawing a fixed number of training samples per epoch from a dataset of any size."""


class Resampled:
    """``n`` samples per epoch drawn with replacement from ``dataset``, each with its own random
    transform (FAVAE's fixed number of training samples per epoch, Sec. 5.1).

    For a :class:`~npad.data.DataLoader`: slot k of an epoch gets the loader's per-sample generator,
    which picks the image index and then drives the dataset's transform, so epochs are
    reproducible and differ from each other."""

    def __init__(self, dataset, n):
        if len(dataset) == 0:
            raise ValueError("Resampled: the dataset is empty")
        self.dataset, self.n = dataset, int(n)
        self.strict = getattr(dataset, "strict", False)

    def __len__(self):
        return self.n

    def get(self, k, rng):
        i = int(rng.integers(len(self.dataset)))
        get = getattr(self.dataset, "get", None)
        return get(i, rng) if get is not None else self.dataset[i]
