"""The generated dSprites (npad.data.dsprites): factor coverage, determinism, geometry."""
import numpy as np
import pytest

from npad.data.dsprites import (CENTER_RANGE, FACTOR_SIZES, FACTORS, N_IMAGES, UNIT, DSprites, factor_values,
                                render)


def test_factor_values_and_size():
    v = factor_values()
    assert tuple(len(v[n]) for n in FACTORS) == FACTOR_SIZES == (3, 6, 40, 32, 32)
    assert N_IMAGES == 737280 == len(DSprites())
    assert v["scale"][0] == 0.5 and v["scale"][-1] == 1.0
    assert v["orientation"][0] == 0.0 and v["orientation"][-1] < 2 * np.pi
    assert v["pos_x"][0] == 0.0 and v["pos_x"][-1] == 1.0


def test_every_combination_once_and_index_roundtrip():
    ds = DSprites()
    f = ds.all_factors()
    assert f.shape == (N_IMAGES, 5)
    for k, n in enumerate(FACTOR_SIZES):           # every value of every factor, equally often
        counts = np.bincount(f[:, k], minlength=n)
        assert len(counts) == n and (counts == N_IMAGES // n).all()
    assert len(np.unique(ds.factors_to_index(f))) == N_IMAGES
    idx = np.array([0, 1, 4095, 123456, N_IMAGES - 1])
    np.testing.assert_array_equal(ds.factors_to_index(ds.index_to_factors(idx)), idx)
    item = ds[123456]
    assert item["image"].shape == (1, 64, 64) and item["image"].dtype == np.float32
    np.testing.assert_array_equal(item["image"], render(item["factors"][None])[0])
    with pytest.raises(IndexError):
        ds[N_IMAGES]


def test_deterministic_and_sampling_covers_values():
    ds = DSprites()
    x1, f1 = ds.sample(200, rng=7)
    x2, f2 = ds.sample(200, rng=7)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(f1, f2)
    assert x1.shape == (200, 1, 64, 64) and set(np.unique(x1)) <= {0.0, 1.0}
    np.testing.assert_array_equal(x1, render(f1))          # images are the factors' images
    _, f = ds.sample(5000, rng=0)
    for k, n in enumerate(FACTOR_SIZES):
        assert set(np.unique(f[:, k])) == set(range(n))
    xs, fs = ds.sample_fixed(50, "scale", rng=3)
    assert len(np.unique(fs[:, 1])) == 1 and len(np.unique(fs[:, 3])) > 1
    xs, fs = ds.sample_fixed(10, 0, value=2, rng=3)
    assert (fs[:, 0] == 2).all()


def test_square_pixel_count_and_scale():
    # a square of side 2 * UNIT * scale covers that many pixels when axis-aligned
    for s_idx, scale in enumerate(factor_values()["scale"]):
        img = render([[0, s_idx, 0, 16, 16]])[0, 0]
        side = 2 * UNIT * scale
        assert abs(img.sum() - side * side) <= 4 * side + 4, (scale, img.sum())
    area = [render([[shape, 5, 0, 16, 16]])[0, 0].sum() for shape in range(3)]
    assert area[0] == 400 and 250 < area[1] < 350 and 300 < area[2] < 440
    # smaller scale -> smaller area, for every shape
    for shape in range(3):
        a = [render([[shape, s, 7, 10, 20]])[0, 0].sum() for s in range(6)]
        assert all(b > a_ for a_, b in zip(a, a[1:]))


def test_position_moves_centroid_and_shapes_stay_inside():
    lo, hi = CENTER_RANGE
    for px, py in [(0, 0), (31, 0), (0, 31), (31, 31), (16, 8)]:
        img = render([[0, 5, 0, px, py]])[0, 0]
        rows, cols = np.nonzero(img)
        ex = lo + (hi - lo) * px / 31
        ey = lo + (hi - lo) * py / 31
        assert abs(cols.mean() - ex) < 0.6 and abs(rows.mean() - ey) < 0.6
    # the largest shapes at every orientation, in the corners, never touch the border
    f = np.array([[s, 5, o, p, q] for s in range(3) for o in range(0, 40, 3) for p in (0, 31) for q in (0, 31)])
    imgs = render(f)[:, 0]
    border = imgs[:, 0].sum() + imgs[:, -1].sum() + imgs[:, :, 0].sum() + imgs[:, :, -1].sum()
    assert border == 0 and (imgs.sum(axis=(1, 2)) > 0).all()


def test_orientation_rotates_and_heart_points_down():
    base = render([[1, 5, 0, 16, 16]])[0, 0]                       # ellipse, long axis horizontal
    quarter = render([[1, 5, 10, 16, 16]])[0, 0]                   # 10/40 of a turn = 90 degrees
    rows, cols = np.nonzero(base)
    assert np.ptp(cols) > 1.7 * np.ptp(rows)
    rows, cols = np.nonzero(quarter)
    assert np.ptp(rows) > 1.7 * np.ptp(cols)
    np.testing.assert_array_equal(quarter, base.T)                 # symmetric placement: a transpose
    heart = render([[2, 5, 0, 16, 16]])[0, 0]
    top, bottom = heart[:32].sum(axis=1), heart[32:].sum(axis=1)
    assert top.max() > bottom[bottom > 0].min()                    # wide lobes above, a point below


def test_supersampling_antialiases():
    f = [[2, 3, 5, 10, 20]]
    hard, soft = render(f)[0, 0], render(f, supersample=4)[0, 0]
    assert set(np.unique(hard)) <= {0.0, 1.0}
    assert ((soft > 0) & (soft < 1)).any() and abs(soft.sum() - hard.sum()) < 0.05 * hard.sum()
    with pytest.raises(ValueError):
        render(np.zeros((2, 4), int))
    with pytest.raises(IndexError):
        render([[3, 0, 0, 0, 0]])
