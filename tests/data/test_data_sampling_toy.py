"""Data helpers shared by the methods: RandomShift (image and mask move together), Resampled (a
fixed number of random samples per epoch, reproducible) and FAVAE's Appendix A toy images."""
import numpy as np
import pytest

from npad.data import DataLoader
from npad.data import transforms as T
from npad.data.arrays import ArrayDataset
from npad.data.sampling import Resampled
from npad.data.toy import PSI, SIGMA_A, SIGMA_N, ToyDataset, toy_samples


def coords(h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([yy, xx, np.zeros_like(yy)])                        # 3 x h x w: row, column, 0


def test_random_shift_moves_image_and_mask_together():
    img, mask = coords(20, 30) + 1, np.ones((1, 20, 30), np.float32)
    seen = set()
    for s in range(20):
        im, m = T.RandomShift(0.1)(img, mask, np.random.default_rng(s))   # m = 2 px
        dy, dx = int(img[0, 10, 15] - im[0, 10, 15]), int(img[1, 10, 15] - im[1, 10, 15])
        assert abs(dy) <= 2 and abs(dx) <= 2
        seen.add((dy, dx))
        np.testing.assert_array_equal(im[:2, 2:-2, 2:-2], img[:2, 2 - dy:18 - dy, 2 - dx:28 - dx])
        assert im.min() >= 1                                               # edge padding: no zeros come in
        assert m.sum() == (20 - abs(dy)) * (30 - abs(dx))                  # the mask is padded with zeros
    assert len(seen) > 5


def test_random_shift_zero_and_reproducible_and_checked():
    img = coords(8, 8)
    assert T.RandomShift(0.0)(img)[0] is img
    a = T.RandomShift(0.25)(img, None, np.random.default_rng(1))[0]
    np.testing.assert_array_equal(a, T.RandomShift(0.25)(img, None, np.random.default_rng(1))[0])
    with pytest.raises(ValueError, match="RandomShift: mask shape"):
        T.RandomShift(0.1)(img, np.zeros((1, 4, 4), np.float32))


def test_resampled_draws_n_reproducible_samples_per_epoch():
    images = np.arange(5, dtype=np.float32)[:, None, None, None] * np.ones((5, 3, 2, 2), np.float32)
    ds = Resampled(ArrayDataset(images), 12)
    assert len(ds) == 12

    def epoch_values(loader):
        return np.concatenate([b["image"][:, 0, 0, 0] for b in loader])
    loader = DataLoader(ds, batch_size=4, seed=3, prefetch=0)
    first, second = epoch_values(loader), epoch_values(loader)
    assert len(first) == 12 and set(first) <= set(range(5)) and len(set(first)) > 2
    assert not np.array_equal(first, second)                               # a new draw every epoch
    np.testing.assert_array_equal(first, epoch_values(DataLoader(ds, batch_size=4, seed=3, prefetch=2)))
    with pytest.raises(ValueError, match="empty"):
        Resampled(ArrayDataset(np.zeros((0, 3, 2, 2), np.float32)), 3)


def test_toy_distributions():
    """FAVAE App. A, literally: normal = mu + N(0, sigma_n^2) per pixel, anomaly = mu + G sin(2 pi psi j + phi)
    down the rows (j = row / size: psi periods per image), no noise, no clipping; mu ~ N(0, 1),
    G ~ N(0, sigma_a^2) per image; shuffled = the anomaly's pixels permuted."""
    n, size = 400, 32
    normal, anomaly, shuffled = (toy_samples(k, n, size, seed=2) for k in ("normal", "anomaly", "shuffled"))
    for x in (normal, anomaly, shuffled):
        assert x.shape == (n, 3, size, size) and x.dtype == np.float32
        np.testing.assert_array_equal(x[:, 0], x[:, 2])                   # grey
    mu = normal[:, 0].mean(axis=(1, 2))
    assert mu.std() == pytest.approx(1, abs=0.1) and (np.abs(normal) > 1).any()        # N(0, 1), unclipped
    assert (normal[:, 0] - mu[:, None, None]).std() == pytest.approx(SIGMA_N, rel=0.02)
    a = anomaly[:, 0]
    np.testing.assert_allclose(a, a[:, :, :1].repeat(size, axis=2))       # constant along each row: no noise
    rows = a[:, :, 0] - a[:, :, 0].mean(axis=1, keepdims=True)            # G sin(2 pi 5 j + phi), n x size
    spectrum = np.abs(np.fft.rfft(rows, axis=1))
    assert (spectrum.argmax(axis=1) == PSI).all()                          # psi = 5 periods down the image
    g = np.sqrt(2) * rows.std(axis=1)                                      # |G| per image
    assert np.sqrt((g ** 2).mean()) == pytest.approx(SIGMA_A, rel=0.1)
    np.testing.assert_array_equal(np.sort(shuffled.reshape(n, -1)), np.sort(anomaly.reshape(n, -1)))
    assert not np.array_equal(shuffled, anomaly)
    with pytest.raises(ValueError, match="kind must be"):
        toy_samples("stripes", 1)


def test_toy_dataset_draws_from_the_given_generator():
    ds = ToyDataset(16, n=7)
    assert len(ds) == 7 and ds.transform(np.ones((3, 2, 2)))[0].shape == (3, 2, 2)
    a, b = ds.get(0, np.random.default_rng(4)), ds.get(0, np.random.default_rng(4))
    np.testing.assert_array_equal(a["image"], b["image"])
    assert a["image"].shape == (3, 16, 16) and a["label"] == 0
    assert not np.array_equal(ds[0]["image"], ds[1]["image"])
