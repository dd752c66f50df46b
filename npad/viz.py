"""Pictures for anomaly detection: colormaps, heatmap overlays, contours, panels, grids, score histograms.

All functions work on NumPy arrays and return ``uint8`` RGB images ``(H, W, 3)``;
the ``save_*`` functions write PNG files atomically through
:func:`npad.io.atomic_write`.  Colormaps are lookup tables computed here
(no matplotlib needed): ``jet`` from matplotlib's piecewise-linear segment
data, ``viridis`` by linear interpolation of its 10 reference colours
(van der Walt & Smith, 2015; R ``viridisLite::viridis(10)``), within a few
levels of matplotlib's table.  The score histogram uses matplotlib when
installed and is drawn with Pillow otherwise.

Images may be ``(3,H,W)``, ``(H,W,3)`` or ``(H,W)``, in [0, 1] or
ImageNet-normalised (detected by negative values, or say ``normalized=True``).
"""
from __future__ import annotations

import io as _io
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .backend import to_cpu
from .data.transforms import IMAGENET_MEAN, IMAGENET_STD
from .io import atomic_write

__all__ = [
    "colormap",
    "apply_colormap",
    "to_rgb",
    "overlay",
    "contour",
    "draw_contour",
    "panel",
    "grid",
    "colorbar",
    "heatmap",
    "save_image",
    "save_mask",
    "save_panels",
    "score_histogram",
]


# matplotlib's _jet_data: (x, y) breakpoints per channel
_JET = {
    "r": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    "g": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    "b": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}
_VIRIDIS10 = ("440154", "482878", "3E4A89", "31688E", "26828E", "1F9E89", "35B779", "6DCD59", "B4DE2C", "FDE725")


def _hex(c: str) -> tuple[float, float, float]:
    return tuple(int(c[i:i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]


def _plane(a: Any, dtype: Any = None) -> np.ndarray:
    """A map or mask as (H, W): leading axes of length 1 dropped ((1, H, W), (1, 1, H, W)), never H or W,
    so a 1-pixel-high photo's map stays 2-D."""
    a = np.asarray(to_cpu(a), dtype)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    return a


def colormap(name: str = "jet", n: int = 256) -> np.ndarray:
    """Lookup table ``(n, 3)`` float32 in [0, 1] for 'jet', 'viridis' or 'gray' (entry k for value k / (n - 1))."""
    x = np.linspace(0.0, 1.0, n)  # (n,)
    if name == "jet":
        chans = [np.interp(x, [p[0] for p in _JET[c]], [p[1] for p in _JET[c]]) for c in "rgb"]
        return np.stack(chans, 1).astype(np.float32)  # (n,3)
    if name == "viridis":
        ref = np.array([_hex(c) for c in _VIRIDIS10])  # (10,3)
        xr = np.linspace(0.0, 1.0, len(ref))
        return np.stack([np.interp(x, xr, ref[:, c]) for c in range(3)], 1).astype(np.float32)
    if name in ("gray", "grey"):
        return np.repeat(x[:, None], 3, 1).astype(np.float32)
    raise ValueError(f"unknown colormap {name!r}; available: 'jet', 'viridis', 'gray'")


def apply_colormap(x: Any, cmap: str = "jet", vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Colour a 2-D map: k = round(255 (x - vmin) / (vmax - vmin)), RGB = LUT[k]; vmin/vmax default to the map's range."""
    x = _plane(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"apply_colormap: expected a 2-D map, got shape {x.shape}")
    lo = float(np.nanmin(x)) if vmin is None else float(vmin)
    hi = float(np.nanmax(x)) if vmax is None else float(vmax)
    scale = 1.0 / (hi - lo) if hi > lo else 0.0
    t = np.clip((np.nan_to_num(x, nan=lo) - lo) * scale, 0.0, 1.0)  # (H,W) in [0,1]
    lut = np.round(colormap(cmap) * 255).astype(np.uint8)  # (256,3)
    return lut[np.round(t * 255).astype(np.intp)]  # (H,W,3)


def to_rgb(image: Any, normalized: bool | None = None, mean: Sequence[float] = IMAGENET_MEAN,
           std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """Image -> uint8 ``(H, W, 3)``: CHW/HWC/HW accepted, x = x' std + mean if normalised, then round(255 clip(x, 0, 1))."""
    a = to_cpu(image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and not (a.shape[-1] in (1, 3) and a.shape[0] == 1):
        a = a.transpose(1, 2, 0)  # (C,H,W) -> (H,W,C); CHW wins when ambiguous (npad's layout)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3):
        raise ValueError(f"to_rgb: expected (3,H,W), (H,W,3) or (H,W), got shape {to_cpu(image).shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float32)
    if normalized is None:
        normalized = bool(a.min() < -1e-3)
    if normalized:
        a = a * np.asarray(std, np.float32) + np.asarray(mean, np.float32)  # (H,W,3)
    return np.round(np.clip(a, 0.0, 1.0) * 255).astype(np.uint8)


def _resize_map(m: np.ndarray, hw: tuple[int, int], nearest: bool = False) -> np.ndarray:
    from PIL import Image

    if m.shape == hw:
        return m
    im = Image.fromarray(np.ascontiguousarray(m, np.float32), mode="F")
    return np.asarray(im.resize((hw[1], hw[0]), Image.NEAREST if nearest else Image.BILINEAR))


def overlay(image: Any, heatmap: Any, alpha: float = 0.5, cmap: str = "jet", vmin: float | None = None,
            vmax: float | None = None, normalized: bool | None = None) -> np.ndarray:
    """Heatmap over image, out = (1 - alpha) image + alpha colormap(heatmap); the map is resized to the image."""
    rgb = to_rgb(image, normalized).astype(np.float32)  # (H,W,3)
    h = _plane(heatmap, np.float32)
    if h.ndim != 2:
        raise ValueError(f"overlay: heatmap must be 2-D (or (1,H,W)), got shape {to_cpu(heatmap).shape}")
    h = _resize_map(h, rgb.shape[:2])
    col = apply_colormap(h, cmap, vmin, vmax).astype(np.float32)
    return np.round((1 - alpha) * rgb + alpha * col).astype(np.uint8)


def contour(mask: Any, thickness: int = 1) -> np.ndarray:
    """Boundary pixels of a binary mask: m & ~erode(m), thickened by ``thickness - 1`` dilations (bool (H, W))."""
    from scipy import ndimage

    m = _plane(mask) > 0.5
    if m.ndim != 2:
        raise ValueError(f"contour: mask must be 2-D (or (1,H,W)), got shape {to_cpu(mask).shape}")
    edge = m & ~ndimage.binary_erosion(m, structure=np.ones((3, 3), bool), border_value=0)
    if thickness > 1:
        edge = ndimage.binary_dilation(edge, structure=np.ones((3, 3), bool), iterations=thickness - 1)
    return edge


def draw_contour(rgb: Any, mask: Any, color: Sequence[int] = (0, 255, 0), thickness: int = 1) -> np.ndarray:
    """Copy of uint8 ``rgb`` with the mask's boundary painted in ``color`` (mask resized by nearest neighbour)."""
    out = np.array(to_rgb(rgb), copy=True)
    m = _plane(mask, np.float32)
    m = _resize_map(m, out.shape[:2], nearest=True)
    out[contour(m, thickness)] = np.asarray(color, np.uint8)
    return out


def _font(size: int):
    """Pillow's default font at ``size`` px (its small bitmap font where FreeType is missing)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _label(img: np.ndarray, text: str, height: int = 14, color: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Put a caption strip above an image: each line of ``text`` ``height`` px high, the font made
    smaller where a line would not fit the image's width."""
    from PIL import Image, ImageDraw

    lines = str(text).split("\n")
    size = max(8, int(height * 0.75))
    while size > 8 and max(_font(size).getlength(t) for t in lines) > img.shape[1] - 4:
        size -= 1
    strip = Image.new("RGB", (img.shape[1], height * len(lines)), (255, 255, 255))
    d = ImageDraw.Draw(strip)
    for k, t in enumerate(lines):
        d.text((2, k * height + height // 10), t, fill=tuple(color), font=_font(size))
    return np.concatenate([np.asarray(strip), img], axis=0)


def colorbar(height: int, vmin: float = 0.0, vmax: float = 1.0, cmap: str = "jet", label: str | None = None,
             marks: dict | None = None, font_size: int | None = None) -> np.ndarray:
    """A vertical colour bar as uint8 ``(height, w, 3)``: vmax at the top, ticks at vmin, vmax and at
    each value of ``marks`` (value -> text), ``label`` written along the right edge."""
    from PIL import Image, ImageDraw

    fs = font_size or int(np.clip(height // 22, 10, 28))
    font = _font(fs)
    pad, bar_w = fs // 2 + 2, max(10, fs)
    top, bot = pad, height - pad
    ticks = {vmin: f"{vmin:.3g}", vmax: f"{vmax:.3g}", **(marks or {})}
    text_w = max(int(font.getlength(t)) if hasattr(font, "getlength") else 6 * len(t) for t in ticks.values())
    label_w = fs + 4 if label else 0
    w = pad + bar_w + 6 + text_w + pad + label_w
    im = Image.new("RGB", (w, height), (255, 255, 255))
    vals = np.linspace(vmax, vmin, max(bot - top, 2))[:, None]  # (h,1), top = vmax
    grad = apply_colormap(np.repeat(vals, bar_w, 1), cmap, vmin, vmax)
    im.paste(Image.fromarray(grad), (pad, top))
    d = ImageDraw.Draw(im)
    d.rectangle([pad, top, pad + bar_w - 1, bot - 1], outline=(0, 0, 0))
    span = (vmax - vmin) or 1.0
    for v, text in ticks.items():
        y = top + (vmax - v) / span * (bot - top - 1)
        d.line([(pad + bar_w, y), (pad + bar_w + 4, y)], fill=(0, 0, 0), width=max(1, fs // 10))
        d.text((pad + bar_w + 6, y - fs * 0.6), text, fill=(0, 0, 0), font=font)
    if label:
        strip = Image.new("RGB", (height, label_w), (255, 255, 255))
        ImageDraw.Draw(strip).text((pad, 1), label, fill=(0, 0, 0), font=font)
        im.paste(strip.rotate(90, expand=True), (w - label_w, 0))
    return np.asarray(im)


def _beside(a: np.ndarray, b: np.ndarray, gap: int = 4) -> np.ndarray:
    """``b`` to the right of ``a`` (white gap), the shorter one padded with white below."""
    h = max(a.shape[0], b.shape[0])
    pad = lambda x: np.pad(x, ((0, h - x.shape[0]), (0, 0), (0, 0)), constant_values=255)
    return np.concatenate([pad(a), np.full((h, gap, 3), 255, np.uint8), pad(b)], axis=1)


def heatmap(image: Any, amap: Any, *, caption: str | None = None, caption_color: Sequence[int] = (0, 0, 0),
            mask: Any = None, vmin: float = 0.0, vmax: float = 1.0, cmap: str = "jet", alpha: float = 0.5,
            bar_label: str | None = None, marks: dict | None = None) -> np.ndarray:
    """The anomaly map over the image at the image's own size, the predicted ``mask`` outlined in
    white, a caption strip above (score and decision) and a colour bar of ``[vmin, vmax]`` on the
    right (give every picture of a run the same vmin/vmax, so colours compare); uint8 ``(H', W', 3)``."""
    over = overlay(image, amap, alpha, cmap, vmin, vmax)  # (H,W,3)
    H, W = over.shape[:2]
    if mask is not None:
        over = draw_contour(over, mask, (255, 255, 255), thickness=max(1, min(H, W) // 200))
    fs = int(np.clip(min(H, W) // 16, 12, 40))
    bar_h = max(H, 160)                                  # readable beside a thin photo too
    bar = colorbar(bar_h, vmin, vmax, cmap, bar_label, marks, font_size=max(10, int(fs * 0.8)))
    out = _beside(over, bar)
    return _label(out, caption, height=int(fs * 1.5), color=caption_color) if caption else out


def panel(image: Any, heatmap: Any, mask: Any = None, threshold: float | None = None, *,
          score: float | None = None, title: str | None = None, cmap: str = "jet", vmin: float | None = None,
          vmax: float | None = None, alpha: float = 0.5, normalized: bool | None = None,
          captions: bool = True, normalized_score: float | None = None, decision: bool | None = None,
          note: str | None = None) -> np.ndarray:
    """One row ``[image | ground truth | heatmap overlay + GT contour | predicted mask]`` as uint8 ``(H', 4W + 6, 3)``.

    The predicted mask is ``heatmap >= threshold`` shown as the image with the region tinted and
    outlined in red (omitted when ``threshold`` is None: an empty panel says "no threshold").
    Ground truth is white on black, outlined green in the overlay. The captions give the image
    ``score`` (and ``normalized_score``) and the ``decision`` (True: anomalous) when known, followed
    by ``note`` (e.g. the decision at another, named threshold).
    """
    rgb = to_rgb(image, normalized)  # (H,W,3)
    H, W = rgb.shape[:2]
    hm = _resize_map(_plane(heatmap, np.float32), (H, W))
    over = overlay(rgb, hm, alpha, cmap, vmin, vmax)
    if mask is not None:
        gt = _resize_map(_plane(mask, np.float32), (H, W), nearest=True) > 0.5
        gt_img = np.repeat((gt * 255).astype(np.uint8)[:, :, None], 3, 2)
        over = draw_contour(over, gt, (0, 255, 0))
    else:
        gt_img = np.full((H, W, 3), 128, np.uint8)
    if threshold is not None:
        pred = hm >= threshold  # (H,W)
        pimg = rgb.astype(np.float32)
        pimg[pred] = 0.6 * pimg[pred] + 0.4 * np.array([255, 0, 0], np.float32)
        pimg = draw_contour(np.round(pimg).astype(np.uint8), pred, (255, 0, 0))
    else:
        pimg = np.full((H, W, 3), 128, np.uint8)
    cols = [rgb, gt_img, over, pimg]
    if captions:
        shown = "" if score is None else f"{score:.3g}" + ("" if normalized_score is None
                                                              else f" ({normalized_score:.2f})")
        verdict = "" if decision is None else (": anomalous" if decision else ": normal")
        names = ["image" if title is None else str(title)[:max(8, W // 6)],
                 "ground truth" if mask is not None else "no ground truth",
                 f"score {shown}" if shown else "anomaly map",
                 ("prediction" + verdict if threshold is not None else "no threshold") + (f"; {note}" if note else "")]
        colors = [(0, 0, 0)] * 3 + [(200, 0, 0) if decision else (0, 110, 0) if decision is not None else (0, 0, 0)]
        cols = [_label(c, n, color=k) for c, n, k in zip(cols, names, colors)]
    gap = np.full((cols[0].shape[0], 2, 3), 255, np.uint8)
    return np.concatenate([cols[0], gap, cols[1], gap, cols[2], gap, cols[3]], axis=1)


def grid(panels: Sequence[np.ndarray], ncols: int = 1, pad: int = 4) -> np.ndarray:
    """Tile uint8 images in ``ncols`` columns with ``pad`` white pixels around each (smaller ones padded)."""
    if not len(panels):
        raise ValueError("grid: no panels")
    h = max(p.shape[0] for p in panels)
    w = max(p.shape[1] for p in panels)
    n = len(panels)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    out = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), 255, np.uint8)
    for k, p in enumerate(panels):  # loop over panels
        r, c = divmod(k, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y:y + p.shape[0], x:x + p.shape[1]] = p
    return out


def save_image(path: str | os.PathLike, rgb: Any) -> Path:
    """Write a uint8 (or [0,1] float) image as PNG, atomically."""
    rgb = to_cpu(rgb)
    a = to_rgb(rgb) if np.asarray(rgb).dtype != np.uint8 or np.asarray(rgb).ndim != 3 else np.asarray(rgb)
    return _save_png(path, a)


def save_mask(path: str | os.PathLike, mask: Any) -> Path:
    """Write a binary mask (H, W) as a single-channel PNG, 255 where anomalous and 0 elsewhere, atomically."""
    m = _plane(mask)
    if m.ndim != 2:
        raise ValueError(f"save_mask: mask must be 2-D, got shape {m.shape}")
    return _save_png(path, np.where(m > 0.5, 255, 0).astype(np.uint8))


def _save_png(path: str | os.PathLike, a: np.ndarray) -> Path:
    from PIL import Image

    path = Path(path)
    buf = _io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    with atomic_write(path) as f:
        f.write(buf.getvalue())
    return path


def save_panels(path: str | os.PathLike, images: Any, maps: Any, masks: Any = None, threshold: float | None = None,
                scores: Sequence[float] | None = None, titles: Sequence[str] | None = None, *, ncols: int = 1,
                max_images: int | None = 32, cmap: str = "jet", vmin: float | None = None,
                vmax: float | None = None, normalized: bool | None = None,
                normalized_scores: Sequence[float] | None = None, decisions: Sequence[bool] | None = None,
                bar_label: str | None = None, marks: dict | None = None, notes: Sequence[str | None] | None = None,
                title: str | None = None) -> Path:
    """Grid of :func:`panel` rows for a batch ``images (N,3,H,W)``, ``maps (N,[1,]h,w)``, saved as PNG atomically.

    Heat colours share one scale over all shown maps (vmin/vmax default to their min/max) so
    panels are comparable; a colour bar of that scale (``bar_label``, ticks ``marks``) sits on the
    right; ``title`` (lines split by newlines) is written above.  At most ``max_images`` are drawn
    (None: all).
    """
    n = len(images)
    if len(maps) != n or (masks is not None and len(masks) != n):
        raise ValueError(f"save_panels: {n} images but {len(maps)} maps" + ("" if masks is None else f" and {len(masks)} masks"))
    k = n if max_images is None else min(n, max_images)
    mm = np.asarray(to_cpu(maps[:k]), np.float32)
    lo = float(mm.min()) if vmin is None else vmin
    hi = float(mm.max()) if vmax is None else vmax
    panels = [
        panel(images[i], maps[i], None if masks is None else masks[i], threshold,
              score=None if scores is None else float(scores[i]), title=None if titles is None else titles[i],
              cmap=cmap, vmin=lo, vmax=hi, normalized=normalized,
              normalized_score=None if normalized_scores is None else float(normalized_scores[i]),
              decision=None if decisions is None else bool(decisions[i]), note=None if notes is None else notes[i])
        for i in range(k)
    ]
    tiles = grid(panels, ncols)
    bar = colorbar(min(tiles.shape[0], max(160, panels[0].shape[0])), lo, hi, cmap, bar_label, marks, font_size=11)
    out = _beside(tiles, bar)
    return save_image(path, _label(out, title, height=18) if title else out)


# ----------------------------------------------------------------------------
# histogram
# ----------------------------------------------------------------------------

_LINE_COLOURS = ((0, 0, 0), (148, 103, 189), (127, 127, 127))  # first threshold black, others purple, grey


def _hist_matplotlib(scores: np.ndarray, labels: np.ndarray, lines, bins, title) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.subplots()
    edges = np.histogram_bin_edges(scores, bins=bins)
    if (labels == 0).any():
        ax.hist(scores[labels == 0], bins=edges, alpha=0.6, color="tab:blue", label=f"normal (n={int((labels == 0).sum())})")
    if (labels == 1).any():
        ax.hist(scores[labels == 1], bins=edges, alpha=0.6, color="tab:red", label=f"anomalous (n={int((labels == 1).sum())})")
    for k, (name, value) in enumerate(lines):
        ax.axvline(value, color=np.array(_LINE_COLOURS[k % 3]) / 255, linestyle=("-", "--", ":")[k % 3],
                   label=f"{name} {value:.3g}")
    ax.set_xlabel("anomaly score")
    ax.set_ylabel("images")
    if title:
        ax.set_title(title)
    ax.legend()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _hist_pillow(scores: np.ndarray, labels: np.ndarray, lines, bins, title) -> bytes:
    from PIL import Image, ImageDraw

    Wd, Ht = 640, 400
    L, R, T, B = 60, 20, 36, 50  # margins
    edges = np.histogram_bin_edges(scores, bins=bins)  # (bins+1,)
    counts = [np.histogram(scores[labels == c], bins=edges)[0] for c in (0, 1)]  # 2 x (bins,)
    ymax = max(1, int(max(c.max() if c.size else 0 for c in counts)))
    n_legend = sum(bool((labels == c).any()) for c in (0, 1)) + len(lines)
    top = ymax / max(0.5, 1 - (16 * n_legend + 12) / (Ht - T - B))  # headroom: the legend sits above the bars
    x0, x1 = float(edges[0]), float(edges[-1])
    for _, value in lines:
        x0, x1 = min(x0, value), max(x1, value)
    if x1 <= x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    px = lambda v: L + (np.asarray(v) - x0) / (x1 - x0) * (Wd - L - R)  # data -> pixel x
    py = lambda c: Ht - B - np.asarray(c) / top * (Ht - T - B)  # count -> pixel y
    base = Image.new("RGBA", (Wd, Ht), (255, 255, 255, 255))
    colours = [(31, 119, 180), (214, 39, 40)]
    for cls, cnt in enumerate(counts):
        layer = Image.new("RGBA", (Wd, Ht), (0, 0, 0, 0))
        d = ImageDraw.Draw(layer)
        lx, rx, ty = px(edges[:-1]), px(edges[1:]), py(cnt)
        for a, b, t, c in zip(lx, rx, ty, cnt):  # loop over bins
            if c > 0:
                d.rectangle([float(a), float(t), max(float(a) + 1, float(b) - 1), Ht - B], fill=colours[cls] + (150,))
        base = Image.alpha_composite(base, layer)
    d = ImageDraw.Draw(base)
    d.line([(L, T), (L, Ht - B), (Wd - R, Ht - B)], fill=(0, 0, 0), width=1)
    for v in np.linspace(x0, x1, 5):  # x ticks
        x = float(px(v))
        d.line([(x, Ht - B), (x, Ht - B + 4)], fill=(0, 0, 0))
        d.text((x - 12, Ht - B + 6), f"{v:.3g}", fill=(0, 0, 0))
    for c in range(0, ymax + 1, max(1, -(-ymax // 5))):  # y ticks at whole counts
        y = float(py(c))
        d.line([(L - 4, y), (L, y)], fill=(0, 0, 0))
        d.text((8, y - 6), f"{c:.0f}", fill=(0, 0, 0))
    d.text((Wd // 2 - 40, Ht - 20), "anomaly score", fill=(0, 0, 0))
    for k, (_, value) in enumerate(lines):
        x = float(px(value))
        for y in range(T, Ht - B, 8):  # dashed line
            d.line([(x, y), (x, min(y + 4, Ht - B))], fill=_LINE_COLOURS[k % 3], width=2)
    legend = [(f"{name} (n={int((labels == c).sum())})", colours[c]) for c, name in enumerate(("normal", "anomalous"))
              if (labels == c).any()]
    legend += [(f"{name} {value:.3g}", _LINE_COLOURS[k % 3]) for k, (name, value) in enumerate(lines)]
    widths = [d.textlength(txt) for txt, _ in legend]
    d.rectangle([Wd - R - 226, T, Wd - R - 196 + max(widths, default=0), T + 8 + 16 * len(legend)],
                fill=(255, 255, 255), outline=(200, 200, 200))  # over the threshold lines
    for k, (txt, col) in enumerate(legend):
        y = T + 4 + 16 * k
        d.rectangle([Wd - R - 220, y, Wd - R - 210, y + 10], fill=col)
        d.text((Wd - R - 204, y - 1), txt, fill=(0, 0, 0))
    if title:
        d.text((L, 10), str(title), fill=(0, 0, 0))
    buf = _io.BytesIO()
    base.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def score_histogram(path: str | os.PathLike, scores: Any, labels: Any, threshold: float | dict | None = None,
                    bins: int = 40, title: str | None = None, backend: str = "auto") -> Path:
    """Histogram of image scores, normal (blue) vs anomalous (red), threshold lines; PNG written atomically.

    ``threshold``: one value (drawn as "threshold") or a dict name -> value, the first drawn solid
    black, the others dashed in other colours (e.g. the model's threshold and a test set's F1-max).
    ``backend``: 'auto' (matplotlib if importable, else Pillow), 'matplotlib' or 'pillow'.
    """
    s = np.asarray(to_cpu(scores), np.float64).ravel()
    y = to_cpu(labels).ravel().astype(int)
    if s.shape != y.shape:
        raise ValueError(f"score_histogram: {s.size} scores but {y.size} labels")
    if s.size == 0:
        raise ValueError("score_histogram: no scores")
    if backend not in ("auto", "matplotlib", "pillow"):
        raise ValueError(f"score_histogram: backend must be 'auto', 'matplotlib' or 'pillow', got {backend!r}")
    named = threshold if isinstance(threshold, dict) else {"threshold": threshold}
    lines = [(str(k), float(v)) for k, v in named.items() if v is not None and np.isfinite(v)]
    data = None
    if backend in ("auto", "matplotlib"):
        try:
            data = _hist_matplotlib(s, y, lines, bins, title)
        except ImportError:
            if backend == "matplotlib":
                raise
    if data is None:
        data = _hist_pillow(s, y, lines, bins, title)
    path = Path(path)
    with atomic_write(path) as f:
        f.write(data)
    return path
