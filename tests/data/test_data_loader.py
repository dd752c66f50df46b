"""npad.data.loader: batching, shuffling, determinism across prefetch/worker settings, thread cleanup."""
import threading
import time

import numpy as np
import pytest

from npad.data import DataLoader, collate
from npad.data.folder import UnreadableImageError


class ArrayDataset:
    """In-memory dataset with the npad sample format; `get` uses the rng like a random transform would."""

    def __init__(self, n=10, h=4, bad=(), delay=0.0):
        self.n, self.h, self.bad, self.delay = n, h, set(bad), delay
        self.strict = False

    def __len__(self):
        return self.n

    def get(self, i, rng=None):
        if self.delay:
            time.sleep(self.delay)
        if i in self.bad:
            raise UnreadableImageError(f"/data/{i}.png", "truncated")
        noise = rng.random() if rng is not None else 0.0
        img = np.full((3, self.h, self.h), i + noise, np.float32)
        return {"image": img, "mask": np.zeros((1, self.h, self.h), np.float32), "label": i % 2,
                "has_mask": True, "path": f"/data/{i}.png", "defect_type": "good" if i % 2 == 0 else "x"}


def ids(batch):
    return np.floor(batch["image"][:, 0, 0, 0]).astype(int).tolist()


def test_batch_shapes_and_types():
    b = next(iter(DataLoader(ArrayDataset(), batch_size=4)))
    assert b["image"].shape == (4, 3, 4, 4) and b["image"].dtype == np.float32
    assert b["mask"].shape == (4, 1, 4, 4)
    assert b["label"].dtype == np.int64 and b["label"].tolist() == [0, 1, 0, 1]
    assert b["has_mask"].dtype == bool
    assert b["path"] == [f"/data/{i}.png" for i in range(4)] and b["defect_type"][:2] == ["good", "x"]


@pytest.mark.parametrize("drop_last,sizes", [(False, [4, 4, 2]), (True, [4, 4])])
def test_drop_last(drop_last, sizes):
    dl = DataLoader(ArrayDataset(10), batch_size=4, drop_last=drop_last)
    assert [len(b["path"]) for b in dl] == sizes and len(dl) == len(sizes)


def test_shuffle_deterministic_and_epochs_differ():
    a = DataLoader(ArrayDataset(20), batch_size=5, shuffle=True, seed=3)
    b = DataLoader(ArrayDataset(20), batch_size=5, shuffle=True, seed=3)
    ea1 = sum((ids(x) for x in a), [])
    eb1 = sum((ids(x) for x in b), [])
    ea2 = sum((ids(x) for x in a), [])
    assert ea1 == eb1 and sorted(ea1) == list(range(20)) and ea1 != list(range(20))
    assert ea2 != ea1 and sorted(ea2) == list(range(20))
    c = DataLoader(ArrayDataset(20), batch_size=5, shuffle=True, seed=4)
    assert sum((ids(x) for x in c), []) != ea1


def test_same_batches_for_any_prefetch_and_workers():
    ref = [x["image"] for x in DataLoader(ArrayDataset(13), batch_size=3, shuffle=True, prefetch=0)]
    for prefetch, workers in [(1, 0), (3, 2), (0, 3)]:
        got = [x["image"] for x in DataLoader(ArrayDataset(13), batch_size=3, shuffle=True, prefetch=prefetch,
                                              num_workers=workers)]
        assert len(got) == len(ref)
        for g, r in zip(got, ref):
            np.testing.assert_array_equal(g, r)  # includes the per-sample rng draw


def test_bad_samples_skipped_with_warning_then_excluded():
    dl = DataLoader(ArrayDataset(10, bad={2, 7}), batch_size=4)
    with pytest.warns(UserWarning) as rec:
        got = [ids(b) for b in dl]
    msgs = [str(r.message) for r in rec]
    assert any("/data/2.png" in m for m in msgs) and any("/data/7.png" in m for m in msgs)
    assert got == [[0, 1, 3, 4], [5, 6, 8, 9]]
    assert len(dl) == 2
    assert sum((ids(b) for b in dl), []) == [0, 1, 3, 4, 5, 6, 8, 9]  # no warning storm, same result
    with pytest.raises(UnreadableImageError, match="2.png"):
        list(DataLoader(ArrayDataset(10, bad={2}), batch_size=4, strict=True))


def test_prefetch_thread_ends_on_break_and_errors_propagate():
    before = threading.active_count()
    it = iter(DataLoader(ArrayDataset(50, delay=0.001), batch_size=2, prefetch=2))
    next(it)
    it.close()  # like breaking out of a for loop
    time.sleep(0.2)
    assert threading.active_count() <= before

    class Boom(ArrayDataset):
        def get(self, i, rng=None):
            if i == 5:
                raise RuntimeError("decode exploded at 5")
            return super().get(i, rng)

    with pytest.raises(RuntimeError, match="exploded at 5"):
        list(DataLoader(Boom(10), batch_size=2, prefetch=2))


def test_collate_shape_mismatch_names_paths():
    a = {"image": np.zeros((3, 4, 4)), "path": "a.png"}
    b = {"image": np.zeros((3, 5, 4)), "path": "b.png"}
    with pytest.raises(ValueError, match=r"a\.png.*b\.png.*Resize"):
        collate([a, b])


def test_prefetch_overlaps_work():
    """With prefetch the next batch is loaded while the consumer still holds the current one;
    without it, nothing is loaded until the consumer asks (event order, no timing)."""
    import threading

    class Watched(ArrayDataset):
        def __init__(self):
            super().__init__(4)
            self.loaded = [threading.Event() for _ in range(4)]

        def get(self, i, rng=None):
            out = super().get(i, rng)
            self.loaded[i].set()
            return out

    ds = Watched()
    it = iter(DataLoader(ds, batch_size=1, prefetch=2))
    next(it)
    assert ds.loaded[1].wait(timeout=30), "prefetch thread did not load batch 1 while batch 0 was in use"
    list(it)
    ds = Watched()
    it = iter(DataLoader(ds, batch_size=1, prefetch=0))
    next(it)
    assert not ds.loaded[1].is_set()
