"""npad.viz: colormaps, overlays, contours, panels and PNG outputs."""
import os

import numpy as np
import pytest
from PIL import Image

from npad import viz


def test_colormaps():
    jet = viz.colormap("jet")
    assert jet.shape == (256, 3)
    np.testing.assert_allclose(jet[0], [0, 0, 0.5], atol=1e-6)  # dark blue
    np.testing.assert_allclose(jet[-1], [0.5, 0, 0], atol=1e-6)  # dark red
    np.testing.assert_allclose(jet[128], [0.51, 1.0, 0.49], atol=0.03)  # green-ish middle
    vir = viz.colormap("viridis")
    np.testing.assert_allclose(vir[0] * 255, [0x44, 0x01, 0x54], atol=0.5)
    np.testing.assert_allclose(vir[-1] * 255, [0xFD, 0xE7, 0x25], atol=0.5)
    lum = vir @ np.array([0.2126, 0.7152, 0.0722])
    assert np.all(np.diff(lum) > 0)  # perceptually ordered: luminance increases
    with pytest.raises(ValueError, match="viridis"):
        viz.colormap("rainbow")


def test_colormaps_close_to_matplotlib():
    mpl = pytest.importorskip("matplotlib")
    for name in ("jet", "viridis"):
        ref = mpl.colormaps[name](np.linspace(0, 1, 256))[:, :3]
        assert np.abs(viz.colormap(name) - ref).max() < (0.01 if name == "jet" else 0.05)


def test_apply_colormap_range():
    x = np.linspace(0, 1, 16).reshape(4, 4)
    c = viz.apply_colormap(x, "jet")
    assert c.shape == (4, 4, 3) and c.dtype == np.uint8
    np.testing.assert_array_equal(c[0, 0], [0, 0, 128])
    np.testing.assert_array_equal(c[-1, -1], [128, 0, 0])
    c2 = viz.apply_colormap(x, "jet", vmin=0, vmax=10)  # everything low -> blue end
    assert (c2[..., 2] >= c2[..., 0]).all()
    assert (viz.apply_colormap(np.ones((3, 3))) == viz.apply_colormap(np.zeros((3, 3)))).all()  # constant map ok


def test_to_rgb_layouts_and_denormalisation():
    img = np.random.default_rng(0).random((3, 5, 7)).astype(np.float32)
    a = viz.to_rgb(img)
    assert a.shape == (5, 7, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(viz.to_rgb(img.transpose(1, 2, 0)), a)
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    np.testing.assert_array_equal(viz.to_rgb((img - mean) / std, normalized=True), a)
    assert viz.to_rgb(img[0]).shape == (5, 7, 3)


def test_overlay_alpha_extremes_and_resize():
    img = np.zeros((3, 8, 8), np.float32)
    hm = np.random.default_rng(1).random((4, 4))
    assert (viz.overlay(img, hm, alpha=0.0) == 0).all()
    full = viz.overlay(img, hm, alpha=1.0)
    assert full.shape == (8, 8, 3)
    np.testing.assert_array_equal(full, viz.apply_colormap(viz._resize_map(hm.astype(np.float32), (8, 8))))


def test_contour_is_boundary_only():
    m = np.zeros((9, 9))
    m[2:7, 2:7] = 1
    e = viz.contour(m)
    assert e.sum() == 16 and not e[3:6, 3:6].any() and not e[0].any()
    out = viz.draw_contour(np.zeros((9, 9, 3), np.uint8), m, (0, 255, 0))
    assert (out[e] == [0, 255, 0]).all() and (out[~e] == 0).all()


def test_panel_and_grid_png(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.random((3, 3, 32, 32)).astype(np.float32)
    maps = rng.random((3, 1, 16, 16)).astype(np.float32)
    masks = np.zeros((3, 1, 32, 32), np.float32)
    masks[0, 0, 5:15, 5:15] = 1
    p = viz.panel(imgs[0], maps[0], masks[0], threshold=0.5, score=0.9)
    assert p.dtype == np.uint8 and p.shape == (32 + 14, 4 * 32 + 6, 3)
    np.testing.assert_array_equal(p[14:, 32 + 2:64 + 2][10, 10], [255, 255, 255])  # GT panel white inside mask
    out = viz.save_panels(tmp_path / "grid.png", imgs, maps, masks, threshold=0.5, scores=[1, 2, 3], ncols=2)
    with Image.open(out) as im:                          # the grid, and a colour bar on its right
        w, h = 2 * (p.shape[1] + 4) + 4, 2 * (p.shape[0] + 4) + 4
        assert im.format == "PNG" and im.size[1] == h and w + 20 < im.size[0] < w + 120
        a = np.asarray(im)
        assert (a[:, :w] == viz.grid([p], 1)[0, 0]).all(axis=-1).any()
    assert os.listdir(tmp_path) == ["grid.png"]  # atomic: no temp leftovers
    viz.save_panels(tmp_path / "nomask.png", imgs, maps)  # works without masks and threshold
    with pytest.raises(ValueError, match="3 images but 2 maps"):
        viz.save_panels(tmp_path / "x.png", imgs, maps[:2])


@pytest.mark.parametrize("backend", ["pillow", "auto"])
def test_score_histogram(tmp_path, backend):
    rng = np.random.default_rng(0)
    s = np.r_[rng.normal(0, 1, 50), rng.normal(3, 1, 20)]
    y = np.r_[np.zeros(50), np.ones(20)]
    p = viz.score_histogram(tmp_path / "h.png", s, y, threshold=1.5, title="weave", backend=backend)
    a = np.asarray(Image.open(p).convert("RGB")).astype(int)
    assert a.shape[0] > 100 and a.shape[1] > 100
    blueish = (a[..., 2] - a[..., 0] > 60).sum()
    reddish = (a[..., 0] - a[..., 2] > 60).sum()
    assert blueish > 200 and reddish > 100  # both classes drawn
    viz.score_histogram(tmp_path / "only_normal.png", s[:50], y[:50], backend=backend)
    with pytest.raises(ValueError, match="labels"):
        viz.score_histogram(tmp_path / "bad.png", s, y[:3])


def test_colorbar_runs_from_vmax_at_the_top_to_vmin():
    bar = viz.colorbar(200, 0.0, 1.0, "jet", label="normalised anomaly", marks={0.5: "0.5 threshold"})
    assert bar.dtype == np.uint8 and bar.shape[0] == 200
    col = bar[:, bar.shape[1] // 20 + 8]                 # a column inside the gradient
    inside = col[(col != 255).any(axis=1)]
    lut = np.round(viz.colormap("jet") * 255)
    np.testing.assert_allclose(inside[2], lut[-1], atol=40)       # dark red at the top
    np.testing.assert_allclose(inside[-3], lut[0], atol=40)       # dark blue at the bottom


def test_heatmap_keeps_the_photos_size_and_adds_caption_and_bar():
    rng = np.random.default_rng(0)
    photo = rng.random((3, 61, 150)).astype(np.float32)
    amap = np.zeros((32, 32), np.float32)
    amap[10:20, 10:20] = 1
    plain = viz.overlay(photo, amap, vmin=0, vmax=1)
    out = viz.heatmap(photo, amap, caption="ANOMALOUS  score 3.2\nnormalised 0.9", mask=amap > 0.5)
    assert out.shape[1] > 150 and out.shape[0] > 61
    cap = out.shape[0] - 160                              # the caption strip's height (the bar: >= 160 px)
    body = out[cap:cap + 61, :150]
    assert (out[cap + 61:, :150] == 255).all()            # white below the short photo
    assert (body == 255).all(axis=-1).sum() > 10           # the mask's outline in white
    edge = viz.contour(viz._resize_map(amap, (61, 150), nearest=True) > 0.5, max(1, 61 // 200))
    np.testing.assert_array_equal(body[~edge], plain[~edge])


def test_masks_are_single_channel_pngs(tmp_path):
    m = np.zeros((5, 7), bool)
    m[1:3, 2:4] = True
    with Image.open(viz.save_mask(tmp_path / "m.png", m)) as im:
        assert im.mode == "L" and im.size == (7, 5)
        np.testing.assert_array_equal(np.asarray(im), m * 255)
    with pytest.raises(ValueError, match="2-D"):
        viz.save_mask(tmp_path / "x.png", np.zeros((2, 5, 7)))


def test_histogram_draws_several_named_thresholds(tmp_path):
    rng = np.random.default_rng(0)
    s, y = rng.normal(0, 1, 40), np.r_[np.zeros(30), np.ones(10)]
    one = np.asarray(Image.open(viz.score_histogram(tmp_path / "1.png", s, y, {"model": 1.0}, backend="pillow")))
    two = np.asarray(Image.open(viz.score_histogram(tmp_path / "2.png", s, y, {"model": 1.0, "test-set F1-max": 0.0},
                                                    backend="pillow")))
    purple = lambda a: ((a[..., 0] > 120) & (a[..., 2] > 160) & (a[..., 1] < 130)).sum()
    assert purple(two) > purple(one) + 20                # the second line, in its own colour


def test_panels_title_and_notes_name_the_other_threshold(tmp_path):
    rng = np.random.default_rng(0)
    imgs, maps = rng.random((2, 3, 160, 160)).astype(np.float32), rng.random((2, 160, 160)).astype(np.float32)
    plain = viz.panel(imgs[0], maps[0], None, 0.5, score=0.4, decision=False)
    noted = viz.panel(imgs[0], maps[0], None, 0.5, score=0.4, decision=False, note="at F1-max 0.3: anomalous")
    assert noted.shape == plain.shape and (noted[:14] != plain[:14]).any()          # the caption, longer
    np.testing.assert_array_equal(noted[14:], plain[14:])
    kw = dict(threshold=0.5, scores=[0.4, 0.9], decisions=[False, True], vmin=0.0, vmax=1.0)
    untitled = np.asarray(Image.open(viz.save_panels(tmp_path / "a.png", imgs, maps, **kw)))
    titled = np.asarray(Image.open(viz.save_panels(tmp_path / "b.png", imgs, maps, notes=["at F1-max: x", None],
                                                   title="model threshold 0.5\nF1-max 0.3", **kw)))
    assert titled.shape[0] == untitled.shape[0] + 2 * 18 and (titled[:36] < 128).any()   # two lines of text


def test_histogram_legend_stays_clear_of_the_bars(tmp_path):
    s, y = np.r_[0.0, np.full(30, 10.0)], np.zeros(31)          # one tall bar at the right, under the legend
    a = np.asarray(Image.open(viz.score_histogram(tmp_path / "h.png", s, y, {"model": 5.0, "F1-max": 9.0},
                                                  backend="pillow")))
    blue = (np.abs(a.astype(int) - [117, 168, 206]).sum(-1) < 40)      # tab:blue at alpha 150 over white
    rows = np.flatnonzero(blue.any(axis=1))
    assert rows.size and rows.min() > 36 + 8 + 16 * 3                  # below the legend's three entries
