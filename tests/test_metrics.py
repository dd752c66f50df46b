"""npad.metrics against scikit-learn and a slow brute-force AUPRO (threshold loop)."""
import warnings

import numpy as np
import pytest
from scipy import ndimage
from sklearn import metrics as skm

from npad import metrics as M


# ---------------------------------------------------------------------------- helpers

def brute_pro_curve(masks, maps):
    """PRO curve by a loop over every distinct threshold and every component (MVTec definition)."""
    comps = []  # list of (image index, bool component mask)
    for i, g in enumerate(masks):
        lab, n = ndimage.label(g, structure=np.ones((3, 3)))
        for k in range(1, n + 1):
            comps.append((i, lab == k))
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        pred = maps >= t
        fprs.append((pred & normal).sum() / normal.sum())
        pros.append(np.mean([(pred[i] & c).sum() / c.sum() for i, c in comps]))
    return np.array(fprs), np.array(pros)


def brute_aupro(masks, maps, limit=0.3):
    fpr, pro = brute_pro_curve(masks, maps)
    area = 0.0
    for j in range(1, len(fpr)):
        x0, x1, y0, y1 = fpr[j - 1], fpr[j], pro[j - 1], pro[j]
        if x0 >= limit:
            break
        if x1 > limit:  # partial last segment, interpolate at exactly the limit
            y1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            x1 = limit
        area += 0.5 * (y0 + y1) * (x1 - x0)
    return area / limit


def random_masks(rng, n, h, w, p_anom=0.6):
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        if rng.random() < p_anom:
            for _ in range(rng.integers(1, 4)):  # several components
                y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
                hh, ww = rng.integers(1, 6, size=2)
                masks[i, y:y + hh, x:x + ww] = True
    return masks


# ---------------------------------------------------------------------------- AUROC

@pytest.mark.parametrize("seed", range(6))
def test_auroc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    y = rng.random(n) < rng.uniform(0.1, 0.9)
    y[0], y[1] = True, False
    s = np.round(rng.normal(size=n) + y * rng.uniform(0, 2), int(rng.integers(0, 3)))  # many ties
    assert M.auroc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


def test_roc_curve_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.random(300) < 0.3
    s = np.round(rng.normal(size=300) + y, 1)
    fpr, tpr, thr = M.roc_curve(y, s)
    f2, t2, th2 = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, f2)
    np.testing.assert_allclose(tpr, t2)
    np.testing.assert_allclose(thr[1:], th2[1:])


def test_pixel_auroc_matches_sklearn():
    rng = np.random.default_rng(2)
    masks = random_masks(rng, 8, 16, 16)
    maps = rng.random((8, 1, 16, 16)).astype(np.float32) + masks[:, None] * 0.3
    assert M.pixel_auroc(masks, maps) == pytest.approx(skm.roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)


def test_auroc_perfect_inverse_constant():
    y = np.array([0, 0, 1, 1])
    assert M.auroc(y, [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert M.auroc(y, [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert M.auroc(y, [1, 1, 1, 1]) == 0.5


def test_auroc_single_class_is_nan_with_warning():
    with pytest.warns(M.MetricWarning, match="no anomalous"):
        assert np.isnan(M.auroc([0, 0, 0], [0.1, 0.2, 0.3]))
    with pytest.warns(M.MetricWarning, match="no normal"):
        assert np.isnan(M.auroc([1, 1], [0.1, 0.2]))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="NaN"):
        M.auroc([0, 1], [np.nan, 1.0])
    with pytest.raises(ValueError, match="binary"):
        M.auroc([0, 2], [0.0, 1.0])
    with pytest.raises(ValueError, match="entries"):
        M.auroc([0, 1, 1], [0.0, 1.0])
    with pytest.raises(ValueError, match=r"\(4, 8, 8\).*\(4, 16, 16\)"):
        M.aupro(np.zeros((4, 8, 8)), np.zeros((4, 16, 16)))
    with pytest.raises(ValueError, match="fpr_limit"):
        M.aupro(np.ones((1, 4, 4)), np.zeros((1, 4, 4)), fpr_limit=0)


# ---------------------------------------------------------------------------- AUPRO

@pytest.mark.parametrize("seed", range(5))
def test_aupro_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    masks = random_masks(rng, 6, 20, 20)
    masks[0, 2:5, 2:5] = True
    masks[0, 5, 5] = True  # diagonal neighbour: same 8-connected component
    # quantised scores -> many ties; correlated with the masks so the curve is non-trivial
    maps = np.round(rng.random((6, 20, 20)) + masks * rng.uniform(0.2, 1.0), 1)
    for limit in (0.3, 0.05, 1.0):
        assert M.aupro(masks, maps, fpr_limit=limit) == pytest.approx(brute_aupro(masks, maps, limit), abs=1e-10)
    fpr, pro, thr = M.pro_curve(masks, maps)
    bf, bp = brute_pro_curve(masks, maps)
    np.testing.assert_allclose(fpr, bf, atol=1e-12)
    np.testing.assert_allclose(pro, bp, atol=1e-12)


def test_aupro_continuous_scores_truncation_exact():
    rng = np.random.default_rng(7)
    masks = random_masks(rng, 5, 24, 24, p_anom=1.0)
    maps = ndimage.gaussian_filter(rng.random((5, 24, 24)), (0, 1, 1)) + masks * 0.05
    assert M.aupro(masks, maps) == pytest.approx(brute_aupro(masks, maps), abs=1e-10)


def test_aupro_component_weighting_not_pixel_weighting():
    # one huge and one tiny component; detecting only the huge one gives PRO 0.5, not ~1
    masks = np.zeros((1, 40, 40), bool)
    masks[0, :20, :20] = True
    masks[0, 30, 30] = True
    maps = masks.astype(float).copy()
    maps[0, 30, 30] = 0.0
    fpr, pro, _ = M.pro_curve(masks, maps)
    assert pro[1] == pytest.approx(0.5) and fpr[1] == 0.0


def test_aupro_perfect_and_constant():
    rng = np.random.default_rng(3)
    masks = random_masks(rng, 4, 16, 16, p_anom=1.0)
    assert M.aupro(masks, masks.astype(float)) == pytest.approx(1.0)
    # constant map: one step from (0,0) to (1,1); interpolated at 0.3 -> area 0.045, / 0.3 = 0.15
    assert M.aupro(masks, np.zeros(masks.shape)) == pytest.approx(0.15)


def test_aupro_components_do_not_connect_across_images():
    masks = np.zeros((2, 8, 8), bool)
    masks[0, 3, 3] = True
    masks[1, 3, 3] = True
    maps = np.zeros((2, 8, 8))
    maps[0, 3, 3] = 1.0  # one of two components found
    _, pro, _ = M.pro_curve(masks, maps)
    assert pro[1] == pytest.approx(0.5)


def test_aupro_no_anomaly_nan_warning():
    with pytest.warns(M.MetricWarning, match="no anomalous pixels"):
        assert np.isnan(M.aupro(np.zeros((2, 8, 8)), np.random.rand(2, 8, 8)))


def test_aupro_on_200_maps_256():
    """The benchmark's case (timed in benchmarks/bench_metrics.py, never here)."""
    rng = np.random.default_rng(0)
    masks = np.zeros((200, 256, 256), bool)
    for i in range(100):
        y, x = rng.integers(0, 200, size=2)
        masks[i, y:y + 30, x:x + 20] = True
    maps = rng.random((200, 256, 256), dtype=np.float32) + masks * 0.1
    a = M.aupro(masks, maps)
    assert 0.15 < a <= 1.0


# ---------------------------------------------------------------------------- F1, IoU, thresholds

@pytest.mark.parametrize("seed", range(4))
def test_f1_max_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(200) < 0.4
    s = np.round(rng.normal(size=200) + y, 1)
    p, r, _ = skm.precision_recall_curve(y, s)
    with np.errstate(invalid="ignore"):
        ref = np.nanmax(2 * p * r / (p + r))
    f1, thr = M.f1_max(y, s)
    assert f1 == pytest.approx(ref, abs=1e-12)
    assert skm.f1_score(y, s >= thr) == pytest.approx(f1, abs=1e-12)
    assert M.f1_score(y, s, thr) == pytest.approx(f1, abs=1e-12)


def test_iou():
    g = np.zeros((2, 4, 4), bool)
    g[0, :2, :2] = True  # 4 px
    m = np.zeros((2, 4, 4))
    m[0, :2, :3] = 1.0  # 6 px predicted, 4 overlap
    m[1, 0, 0] = 1.0  # 1 false positive px in image 1
    assert M.iou(g, m, 0.5) == pytest.approx(4 / 7)
    assert M.iou(g, m, 0.5, reduction="mean") == pytest.approx((4 / 6 + 0) / 2)
    assert M.iou(np.zeros((1, 3, 3)), np.zeros((1, 3, 3)), 0.5) == 1.0
    assert M.iou(g, m, 0.5) == pytest.approx(skm.jaccard_score(g.ravel(), m.ravel() >= 0.5))


def test_choose_threshold():
    rng = np.random.default_rng(0)
    s = np.r_[rng.normal(size=100), rng.normal(size=20) + 4]
    y = np.r_[np.zeros(100), np.ones(20)]
    assert M.choose_threshold(s, y) == M.f1_max(y, s)[1]
    with pytest.warns(M.MetricWarning, match="99th percentile"):
        t = M.choose_threshold(s[:100])
    assert t == pytest.approx(np.percentile(s[:100], 99))
    with pytest.warns(M.MetricWarning, match="percentile"):
        assert M.choose_threshold(s[:100], y[:100], percentile=95) == pytest.approx(np.percentile(s[:100], 95))


# ---------------------------------------------------------------------------- evaluate

def test_evaluate_all_and_per_defect():
    rng = np.random.default_rng(5)
    n = 12
    masks = np.zeros((n, 1, 16, 16), np.float32)
    types = ["good"] * 6 + ["scratch"] * 3 + ["hole"] * 3
    for i in range(6, n):
        y, x = rng.integers(0, 12, size=2)
        masks[i, 0, y:y + 3, x:x + 3] = 1
    maps = rng.random((n, 1, 16, 16)).astype(np.float32) + masks * 0.5
    maps[9:] += masks[9:] * 0.5  # holes easier than scratches
    scores = maps.reshape(n, -1).max(1)
    labels = np.array([0] * 6 + [1] * 6)
    r = M.evaluate(scores, maps, labels, masks, types)
    assert r["image_auroc"] == pytest.approx(skm.roc_auc_score(labels, scores))
    assert r["pixel_auroc"] == pytest.approx(skm.roc_auc_score(masks.ravel() > 0.5, maps.ravel()))
    assert r["aupro"] == pytest.approx(brute_aupro(masks[:, 0] > 0.5, maps[:, 0]))
    assert set(r["per_defect"]) == {"scratch", "hole"}
    sel = np.r_[0:6, 9:12]
    assert r["per_defect"]["hole"]["image_auroc"] == pytest.approx(skm.roc_auc_score(labels[sel], scores[sel]))
    assert r["per_defect"]["hole"]["aupro"] == pytest.approx(brute_aupro(masks[sel, 0] > 0.5, maps[sel, 0]))
    assert r["per_defect"]["hole"]["n"] == 3
    assert 0 <= r["pixel_iou"] <= 1 and 0 < r["pixel_f1_max"] <= 1
    # labels derived from masks, scores from map maxima
    r2 = M.evaluate(None, maps, None, masks)
    assert r2["image_auroc"] == pytest.approx(r["image_auroc"])
    assert "per defect" in M.format_results(r)


def test_evaluate_without_anomalies_or_masks():
    rng = np.random.default_rng(0)
    with pytest.warns(M.MetricWarning, match="no anomalous images"):
        r = M.evaluate(rng.random(10), labels=np.zeros(10))
    assert np.isnan(r["image_auroc"]) and r["n_anomalous"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = M.evaluate(rng.random(10), labels=np.r_[np.zeros(5), np.ones(5)])  # no maps: image level only
    assert "pixel_auroc" not in r and np.isfinite(r["image_auroc"])
    with pytest.raises(ValueError, match="labels or masks"):
        M.evaluate(rng.random(3))


def test_evaluate_has_mask_excludes_images_without_ground_truth():
    rng = np.random.default_rng(1)
    masks = np.zeros((6, 8, 8), np.float32)
    masks[3:5, 2:4, 2:4] = 1
    maps = rng.random((6, 8, 8)).astype(np.float32) + masks
    labels = np.array([0, 0, 0, 1, 1, 1])  # image 5 is anomalous but has no mask (all zeros)
    has = np.array([1, 1, 1, 1, 1, 0], bool)
    r = M.evaluate(None, maps, labels, masks, has_mask=has, defect_types=["good"] * 3 + ["x"] * 3)
    assert r["pixel_auroc"] == pytest.approx(skm.roc_auc_score(masks[:5].ravel() > 0.5, maps[:5].ravel()))
    assert r["aupro"] == pytest.approx(brute_aupro(masks[:5] > 0.5, maps[:5]))
    assert "pixel_auroc" not in r["per_defect"]["x"] and r["n_images"] == 6


# --- NaN and inf are refused, naming the argument and the first bad index ----------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_and_maps_refused(bad):
    y = np.array([0, 1, 0, 1])
    s = np.array([0.1, 0.9, bad, 0.7])
    g = np.zeros((4, 3, 3))
    g[1, 1, 1] = g[3, 0, 0] = 1
    m = np.random.default_rng(0).random((4, 3, 3))
    m_bad = m.copy()
    m_bad[2, 1, 0] = bad
    calls = [
        (lambda: M.auroc(y, s), r"scores contains 1 NaN or inf value\(s\) of 4, the first at index 2"),
        (lambda: M.roc_curve(y, s), "scores"),
        (lambda: M.precision_recall_curve(y, s), "scores"),
        (lambda: M.f1_max(y, s), "scores"),
        (lambda: M.f1_score(y, s, 0.5), "scores"),
        (lambda: M.choose_threshold(s, y), "scores"),
        (lambda: M.choose_threshold(s), "scores"),
        (lambda: M.pixel_auroc(g, m_bad), r"maps contains 1 NaN or inf .*index \(2, 1, 0\)"),
        (lambda: M.aupro(g, m_bad), "maps"),
        (lambda: M.iou(g, m_bad, 0.5), "maps"),
        (lambda: M.evaluate(s, m, y, g), "scores"),
        (lambda: M.evaluate(None, m_bad, y, g), "maps contains 1"),
        (lambda: M.evaluate(None, m_bad, y), "maps contains 1"),
    ]
    for call, match in calls:
        with pytest.raises(ValueError, match=match):
            call()


def test_nan_thresholds_and_masks_refused():
    y = np.array([0, 1, 0, 1])
    s = np.array([0.1, 0.9, 0.2, 0.7])
    g = np.zeros((4, 3, 3))
    g[1, 1, 1] = 1
    m = np.random.default_rng(0).random((4, 3, 3))
    with pytest.raises(ValueError, match="threshold is NaN"):
        M.f1_score(y, s, float("nan"))
    with pytest.raises(ValueError, match="threshold is NaN"):
        M.iou(g, m, np.float32("nan"))
    with pytest.raises(ValueError, match="image_threshold is NaN"):
        M.evaluate(s, labels=y, image_threshold=float("nan"))
    with pytest.raises(ValueError, match="pixel_threshold is NaN"):
        M.evaluate(s, m, y, g, pixel_threshold=float("nan"))
    with pytest.raises(ValueError, match="percentile"):
        M.choose_threshold(s, percentile=float("nan"))
    g_nan = g.copy()
    g_nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"masks contains 1 NaN value\(s\)"):
        M.pixel_auroc(g_nan, m)
    with pytest.raises(ValueError, match="binary"):
        M.auroc(np.array([0, 1, np.nan, 1]), s)
    # an infinite threshold is a valid (if useless) decision rule: nothing predicted anomalous
    assert M.f1_score(y, s, float("inf")) == 0.0
