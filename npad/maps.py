"""Anomaly maps: upsampling, smoothing, image scores — shared by every method.

All functions take and return arrays (NumPy or CuPy) outside the autograd graph.
"""
import numpy

from . import functional as F
from .backend import device_of, get_array_module, to_cpu
from .functional.image import _source_index
from .tensor import Tensor, no_grad


def upsample(maps, size, align_corners=True):
    """Bilinear resize of N x h x w maps to N x H x W (``size`` = (H, W) or an int): F.interpolate's
    weights as two matrix products, Y = R_h X R_w^T (``resize_matrix``), which BLAS runs 2-3x faster
    than the gathers of F.interpolate."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(maps.shape[-2:]) == size:
        return maps
    xp = get_array_module(maps)
    rows = resize_matrix(maps.shape[-2], size[0], align_corners, maps.dtype, xp)   # H x h
    cols = resize_matrix(maps.shape[-1], size[1], align_corners, maps.dtype, xp)   # W x w
    return rows @ maps @ cols.T                                            # N x H x W


def resize_matrix(n_in, n_out, align_corners, dtype=numpy.float64, xp=numpy):
    """n_out x n_in: row o holds the bilinear weights F.interpolate gives output o along one axis."""
    i0, i1, lam = _source_index(n_in, n_out, "bilinear", align_corners, n_in / n_out)
    m = numpy.zeros((n_out, n_in))
    numpy.add.at(m, (numpy.arange(n_out), i0), 1 - lam)
    numpy.add.at(m, (numpy.arange(n_out), i1), lam)
    return xp.asarray(m.astype(dtype))


def gaussian_smooth(maps, sigma=4.0):
    """Each N x H x W map convolved with a Gaussian of std ``sigma`` pixels (on the CPU)."""
    if not sigma:
        return maps
    from scipy.ndimage import gaussian_filter
    xp = get_array_module(maps)
    out = gaussian_filter(to_cpu(maps), sigma=(0, sigma, sigma), mode="nearest", truncate=4.0)
    return xp.asarray(out)


def image_scores(maps, reduction="max", k=None, pool=None):
    """One score per map: its max, mean, mean of the top-k values, or max of the average-pooled map."""
    xp = get_array_module(maps)
    if pool:
        with no_grad():
            maps = F.avg_pool2d(Tensor(maps[:, None], device=device_of(maps)), pool, stride=1).data[:, 0]
    flat = maps.reshape(maps.shape[0], -1)                                # N x HW
    if reduction == "max":
        return flat.max(axis=1)
    if reduction == "mean":
        return flat.mean(axis=1)
    if reduction == "sum":
        return flat.sum(axis=1)
    if reduction == "topk":
        k = min(int(k or 1), flat.shape[1])
        return xp.sort(flat, axis=1)[:, -k:].mean(axis=1)
    raise ValueError(f"image_scores: reduction must be 'max', 'mean', 'sum' or 'topk', got {reduction!r}")


def minmax(maps, lo=None, hi=None):
    """(m - lo) / (hi - lo), with lo, hi the minimum and maximum over all maps unless given."""
    lo = float(maps.min()) if lo is None else lo
    hi = float(maps.max()) if hi is None else hi
    return (maps - lo) / max(hi - lo, 1e-12)


def threshold_normalize(x, lo, threshold):
    """n = clip(0.5 + 0.5 (x - t) / (t - lo), 0, 1): 0 at ``lo``, 0.5 at the threshold t, 1 at
    t + (t - lo); a min-max normalisation around the threshold (anomalib's convention, no sigmoid)."""
    xp = get_array_module(x)
    scale = threshold - lo if threshold > lo else max(abs(threshold), 1e-12)
    return xp.clip(0.5 + 0.5 * (xp.asarray(x, dtype=xp.float64) - threshold) / scale, 0.0, 1.0)


def as_numpy(a):
    """A float32 NumPy copy for metrics and pictures."""
    return numpy.asarray(to_cpu(a), dtype=numpy.float32)
