"""npad.utils.data (torch.utils.data's names), tuple batches, one-channel ArrayDataset, npad.save/load."""
import numpy as np
import pytest

import npad
from npad.data import ArrayDataset, DataLoader
from npad.utils.data import Dataset, Subset, TensorDataset, default_collate, random_split


def test_tensor_dataset_batches_as_tensors():
    x, y = npad.tensor(np.arange(20.0).reshape(10, 2)), npad.arange(10)
    ds = TensorDataset(x, y)
    assert len(ds) == 10 and [t.numpy().tolist() for t in ds[3]] == [[6.0, 7.0], 3]
    batches = list(DataLoader(ds, batch_size=4))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    xb, yb = batches[1]
    assert isinstance(xb, npad.Tensor) and xb.dtype == np.float64 and yb.dtype == np.int64
    assert xb.numpy().tolist() == x.numpy()[4:8].tolist() and yb.numpy().tolist() == [4, 5, 6, 7]
    seen = np.concatenate([b[1].numpy() for b in DataLoader(ds, batch_size=3, shuffle=True, seed=1)])
    assert sorted(seen) == list(range(10)) and list(seen) != list(range(10))
    with pytest.raises(ValueError, match=r"share their first dimension, got shapes \[\(10, 2\), \(9,\)\]"):
        TensorDataset(x, npad.arange(9))


def test_default_collate_follows_torch():
    """tuple samples: arrays and tensors stack, Python numbers become int64 / float64 / bool tensors"""
    samples = [(np.ones((2, 2), np.float32) * i, i, i / 2, i > 0, f"s{i}") for i in range(3)]
    img, idx, half, pos, names = default_collate(samples)
    assert img.shape == (3, 2, 2) and img.dtype == np.float32
    assert idx.dtype == np.int64 and half.dtype == np.float64 and pos.dtype == np.bool_
    assert names == ["s0", "s1", "s2"]
    with pytest.raises(ValueError, match=r"field 0 of the samples differs in shape within a batch"):
        default_collate([(np.zeros(2),), (np.zeros(3),)])
    with pytest.raises(ValueError, match=r"different lengths \[1, 2\]"):
        default_collate([(1,), (1, 2)])
    assert default_collate([{"a": np.zeros(2)}] * 2)["a"].shape == (2, 2)   # dicts keep NumPy arrays


def test_user_dataset_subset_and_random_split():
    class Squares(Dataset):
        def __len__(self):
            return 7

        def __getitem__(self, i):
            return np.float32(i), i * i

    train, test = random_split(Squares(), [0.7, 0.3], seed=0)
    assert (len(train), len(test)) == (5, 2)
    assert sorted(train.indices + test.indices) == list(range(7))
    x, y = next(iter(DataLoader(train, batch_size=5)))
    assert (y.numpy() == x.numpy() ** 2).all() and x.dtype == np.float32
    assert [s[1] for s in Subset(Squares(), [3, 1])] == [9, 1]
    with pytest.raises(ValueError, match="do not add up to the dataset's 7 samples"):
        random_split(Squares(), [3, 3])
    with pytest.raises(NotImplementedError):
        Dataset()[0]


def test_array_dataset_takes_one_channel_images():
    ds = ArrayDataset(np.random.default_rng(0).random((4, 1, 8, 8)))
    assert ds[0]["image"].shape == (1, 8, 8)
    with pytest.raises(ValueError, match=r"N x 1 x H x W or N x 3 x H x W, got shape \(4, 2, 8, 8\)"):
        ArrayDataset(np.zeros((4, 2, 8, 8)))


def test_save_and_load_a_state_dict(tmp_path):
    model = npad.nn.Sequential(npad.nn.Linear(3, 4), npad.nn.BatchNorm1d(4))
    npad.save(model.state_dict(), tmp_path / "model.pt")
    loaded = npad.load(tmp_path / "model.pt", map_location="cpu")
    assert list(loaded) == list(model.state_dict())
    other = npad.nn.Sequential(npad.nn.Linear(3, 4), npad.nn.BatchNorm1d(4))
    other.load_state_dict(loaded)
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    with pytest.raises(TypeError, match=r"expected a state dict \(a dict of arrays\), got Sequential"):
        npad.save(model, tmp_path / "m.pt")
    opt = npad.optim.Adam(model.parameters())
    with pytest.raises(TypeError, match=r"state\['param_groups'\] is a list; npad.save writes state dicts"):
        npad.save(opt.state_dict(), tmp_path / "opt.pt")
    with pytest.raises(TypeError, match=r"state\['state'\] has the key 0; state dict keys must be str"):
        npad.save({"state": {0: np.zeros(2)}}, tmp_path / "opt.pt")
    (tmp_path / "hostile.pt").write_bytes(b"\x80\x04cos\nsystem\n")   # a pickle is never unpickled
    with pytest.raises(OSError, match="not an HDF5 file"):
        npad.load(tmp_path / "hostile.pt")
    assert not list(tmp_path.glob("*.tmp*"))


def test_module_docstring_example_runs():
    import doctest
    import npad.utils.data
    result = doctest.testmod(npad.utils.data)
    assert result.attempted >= 3 and result.failed == 0
