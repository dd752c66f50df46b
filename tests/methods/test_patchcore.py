"""PatchCore: coreset and nearest neighbours against brute force, Eq. 7 by hand, the locally aware
features, separation on the tiny fixture, save/load, bad options."""
import numpy as np
import pytest

from npad.backend import to_cpu
from npad.data import MVTecDataset
from npad.methods import get, load
from npad.methods.patchcore import PatchCore, channel_pooling, greedy_coreset, nearest

SIZE = 96


def brute_force_k_center(x, n, first):
    """Alg. 1 with the full distance matrix: the next row is the farthest from all chosen rows."""
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))                       # M x M
    chosen = [first]
    while len(chosen) < n:
        chosen.append(int(d[:, chosen].min(1).argmax()))
    return chosen


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_coreset_equals_brute_force_k_center(xp, dtype):
    x = np.random.default_rng(1).standard_normal((300, 6)).astype(dtype)
    got = greedy_coreset(xp.asarray(x), 40, seed=3)
    first = int(np.random.default_rng(3).integers(300))
    assert got.tolist() == brute_force_k_center(x.astype(np.float64), 40, first)
    assert len(set(got.tolist())) == 40


def test_coreset_covers_clusters():
    """Five tight clusters far apart: the first five picks hit every cluster once."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 3)) * 100
    x = (centres[rng.integers(0, 5, 500)] + rng.standard_normal((500, 3))).astype(np.float32)
    picks = greedy_coreset(x, 5)
    assert len({int(np.argmin(((centres - x[i]) ** 2).sum(1))) for i in picks}) == 5


@pytest.mark.parametrize("k", [1, 4])
def test_blocked_nearest_equals_brute_force(xp, k):
    rng = np.random.default_rng(2)
    q, bank = rng.standard_normal((97, 5)), rng.standard_normal((211, 5))
    d_all = np.sqrt(((q[:, None] - bank[None]) ** 2).sum(-1))                # Q x M
    want_i = np.argsort(d_all, axis=1)[:, :k]
    for block in (1, 50, 1 << 22):                                           # one row at a time ... everything at once
        d, i = nearest(xp.asarray(q), xp.asarray(bank), k=k, block=block)
        np.testing.assert_array_equal(np.asarray(i.tolist()), want_i)
        np.testing.assert_allclose(np.asarray(d.tolist()), np.take_along_axis(d_all, want_i, 1), rtol=1e-10)


def test_nearest_merges_bank_blocks():
    """Bank blocks of 7 rows: the nearest of each block are merged, with their global indices."""
    rng = np.random.default_rng(4)
    bank = rng.standard_normal((60, 2)).astype(np.float32)
    q = np.concatenate([bank[[5, 57]] + 1e-3, rng.standard_normal((3, 2)).astype(np.float32)])
    d, i = nearest(q, bank, k=3, block=7)
    np.testing.assert_array_equal(i, np.argsort(((q[:, None] - bank[None]) ** 2).sum(-1), axis=1)[:, :3])
    assert i[0, 0] == 5 and i[1, 0] == 57
    assert nearest(q, bank[:2], k=9)[1].shape == (5, 2)                      # k larger than the bank


def test_image_score_reweighting_by_hand(tiny_mvtec):
    """Eq. 7 on a one-dimensional bank: s = (1 - exp(s*) / sum_{N_b(m*)} exp(d)) s*."""
    model = PatchCore(input_size=SIZE, num_neighbours=3)
    model.bank = np.array([[0.0], [1.0], [3.0], [10.0]])
    feats = np.array([[0.5], [4.0], [2.9], [1.1]])              # one image of 2 x 2 patches
    model._embed = lambda images: (feats, (2, 2))
    stats = model._score(None)
    np.testing.assert_allclose(stats["dist"], [[[0.5, 1.0], [0.1, 0.1]]], atol=1e-6)
    # m_test,* = 4.0, m* = 3.0, s* = 1; N_3(m*) = {3, 1, 0}: distances 1, 3, 4 from m_test,*
    s = (1 - np.exp(1) / (np.exp(1) + np.exp(3) + np.exp(4))) * 1.0
    np.testing.assert_allclose(stats["weight"] * 1.0, [s / 1.0], rtol=1e-6)
    scores, maps = model._maps(stats)
    np.testing.assert_allclose(scores, [s], rtol=1e-6)
    assert maps.shape == (1, SIZE, SIZE)
    model.config["image_score"] = "max"
    assert model._maps(stats)[0][0] == pytest.approx(maps.max())
    model.config["image_score"] = "topk"
    assert model._maps(stats)[0][0] == pytest.approx(np.sort(maps.ravel())[-10:].mean())
    # m* in a dense part of the bank: its neighbours are as far as m* itself, weight ~ 1 - 1/b; m* isolated:
    # its neighbours are much farther, weight 1 (distances of 1000 would overflow a plain exp)
    model.bank = np.array([[0.0], [0.01], [0.02], [100.0]])
    feats[:] = [[-1000.0], [0.0], [0.0], [0.0]]
    assert model._score(None)["weight"][0] == pytest.approx(1 - 1 / (1 + np.exp(0.01) + np.exp(0.02)), rel=1e-6)
    feats[:] = [[1000.0], [0.0], [0.0], [0.0]]
    assert model._score(None)["weight"][0] == pytest.approx(1.0)


def test_locally_aware_features_are_neighbourhood_means(tiny_mvtec):
    """Eq. 2 with p = 3 on the finer tap, and the coarser tap upsampled onto its grid."""
    model = PatchCore(input_size=64)
    x = np.random.default_rng(0).random((2, 3, 64, 64)).astype(np.float32)
    e, (h, w) = model._embed(x)
    e = to_cpu(e)                                                            # the features' device: the model's
    f8, f16 = (f.numpy() for f in model.encoder(x))                             # 2 x 40 x 8 x 8, 2 x 112 x 4 x 4
    assert (h, w) == (8, 8) and e.shape == (2 * 8 * 8, 40 + 112)
    grid = e.reshape(2, 8, 8, -1)
    np.testing.assert_allclose(grid[1, 3, 5, :40], f8[1, :, 2:5, 4:7].mean((1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grid[0, 0, 7, :40], f8[0, :, 0:2, 6:8].mean((1, 2)), rtol=1e-5, atol=1e-6)
    p1 = to_cpu(PatchCore(input_size=64, neighbourhood=1)._embed(x)[0]).reshape(2, 8, 8, -1)
    np.testing.assert_allclose(p1[1, 3, 5, :40], f8[1, :, 3, 5], rtol=1e-6)
    np.testing.assert_allclose(p1[..., 40:].mean((1, 2)), f16.mean((2, 3)), rtol=1e-4, atol=1e-5)


def test_channel_pooling_matches_torch_adaptive_pooling():
    torch = pytest.importorskip("torch")
    pool = torch.nn.functional.adaptive_avg_pool1d
    a, b = np.random.default_rng(0).standard_normal((2, 5, 40)), np.random.default_rng(1).standard_normal((2, 5, 112))
    taps = [pool(torch.from_numpy(t.reshape(-1, 1, t.shape[-1])), 64).reshape(10, 64) for t in (a, b)]
    want = pool(torch.stack(taps, 1).reshape(10, 1, -1), 64).reshape(10, 64).numpy()
    got = np.concatenate([a, b], -1).reshape(10, -1) @ channel_pooling([40, 112], 64)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.fixture(scope="module")
def fitted(tiny_mvtec):
    return PatchCore(input_size=SIZE, coreset_ratio=0.1).fit(MVTecDataset(tiny_mvtec, split="train"), quiet=True)


def test_defects_score_higher_and_save_load_is_exact(fitted, tiny_mvtec, tmp_path):
    assert fitted.bank.shape == (72, 152)            # 10% of 5 images x 12 x 12 patches (5 of 10 kept out to calibrate)
    test = MVTecDataset(tiny_mvtec, split="test")
    ev = fitted.evaluate(test)
    assert ev["image_auroc"] == 1.0 and ev["pixel_auroc"] > 0.9
    res = ev["result"]
    assert res.maps.shape == (8, SIZE, SIZE) and (res.scores > 0).all()
    path = fitted.save(tmp_path / "patchcore.h5")
    again = load(path)
    assert type(again) is PatchCore and again.config == fitted.config
    np.testing.assert_array_equal(to_cpu(again.bank), to_cpu(fitted.bank))
    res2 = again.predict(test)
    np.testing.assert_array_equal(res2.maps, res.maps)
    np.testing.assert_array_equal(res2.scores, res.scores)


def test_score_does_not_depend_on_the_batch(fitted, tiny_mvtec):
    test = fitted._with_transform(MVTecDataset(tiny_mvtec, split="test"), train=False)
    x = np.stack([test[i]["image"] for i in range(len(test))])
    together = fitted.predict(x)
    alone = [fitted.predict(x[i:i + 1]).scores[0] for i in (0, 5)]
    np.testing.assert_allclose(alone, together.scores[[0, 5]], rtol=1e-5)


@pytest.mark.filterwarnings("ignore:.*(threshold rests on only|too few to keep some out)")  # tiny fits: calibrated on few images
def test_options_and_errors(tiny_mvtec):
    assert get("patchcore") is PatchCore
    imgs = np.random.default_rng(0).random((2, 3, 64, 64)).astype(np.float32)
    small = PatchCore(input_size=64, dim=32, coreset_ratio=1.0, image_score="topk", topk=5).fit(imgs, quiet=True)
    assert small.bank.shape == (2 * 8 * 8, 32)
    assert small.predict(imgs[:1]).maps.shape == (1, 64, 64)
    taps = PatchCore(input_size=64, taps=["stage2", "stage3"], coreset_ratio=0.5).fit(imgs, quiet=True)
    assert taps.bank.shape == (2 * 16 * 16 // 2, 24 + 40)
    for bad, match in [(dict(image_score="mean"), "image_score"), (dict(coreset_ratio=0), "coreset_ratio"),
                       (dict(neighbourhood=2), "odd"), (dict(k=3), "unknown option")]:
        with pytest.raises((ValueError, TypeError), match=match):
            PatchCore(**bad)
    with pytest.raises(ValueError, match="at least 1 training image"):
        PatchCore(input_size=64).fit(imgs[:0], quiet=True)
