"""PatchCore: Towards Total Recall in Industrial Anomaly Detection (Roth, Pemula, Zepeda, Schoelkopf,
Brox and Gehler, CVPR 2022, arXiv:2106.08265): a memory bank of normal patch features searched by
nearest neighbour; nothing is trained.

1. Locally aware patch features (Sec. 3.1, Eqs. 1-3): two mid-level taps of a frozen backbone
   (WRN-50's layer2 and layer3 in the paper; here the tap set "patchcore", strides 8 and 16), each
   averaged over the p x p neighbourhood of every position (p = 3, ``neighbourhood``; at the border
   over the positions inside the map), the coarser one bilinearly upsampled to the finer grid,
   concatenated. With ``dim`` set, the reference code's two adaptive average poolings over channels
   (each tap to ``dim``, then their concatenation to ``dim``) follow; both are linear, so they are
   one C x dim matrix (``channel_pooling``).
2. Memory bank M: the patch features of all training images (Eq. 4), reduced to a coreset M_C of
   ``coreset_ratio`` |M| patches by greedy k-center selection (Sec. 3.2, Eq. 5, Alg. 1): from a
   random first patch, add m_i = argmax_{m in M} min_{n in M_C} ||psi(m) - psi(n)||_2 until M_C is
   full, psi a random Gaussian projection to ``projection`` = 128 dimensions (Johnson-Lindenstrauss),
   so each step costs one |M| x 128 product.
3. Scores (Sec. 3.3): each test patch's distance to its nearest neighbour in M_C. The image's most
   anomalous patch m_test,* and its neighbour m* give s* = ||m_test,* - m*||_2 (Eq. 6), re-weighted
   by how isolated m* lies in M_C (Eq. 7):
       s = (1 - exp||m_test,* - m*||_2 / sum_{m in N_b(m*)} exp||m_test,* - m||_2) s*,
   N_b(m*) the b = ``num_neighbours`` = 9 nearest neighbours of m* in M_C (``image_score="reweight"``;
   "max" takes the map's maximum, "topk" the mean of its ``topk`` largest pixels).
4. Map: the patch distances bilinearly upsampled to the input and smoothed by a Gaussian of
   sigma = 4 px.

Nearest neighbours are searched in blocks of queries and of the bank (``nearest``), so memory
stays at the bank plus one block of distances; NumPy and CuPy alike.

Reported (MVTec AD means, WRN-50-2 at 224 px; image AUROC from Table 1, pixel AUROC and PRO from
Table 2): PatchCore-25% 99.1 / 98.1 / 93.4, PatchCore-10% 99.0 / 98.1 / 93.5, PatchCore-1%
99.0 / 98.0 / 93.1. npad measures on bsdata_pitting (real photographs, 256 px, 1% coreset, these
defaults; benchmarks/compare.py): 84.3 / 98.5 / 71.6 (image AUROC / pixel AUROC / AUPRO) with
EfficientNet-Lite0, 84.5 / 98.6 / 71.7 with Lite1, 83.9 / 98.8 / 73.8 with Lite2, below PaDiM's
87.2 / 99.1 / 77.6 (Lite0). With these features nearest-neighbour distances are about 20, so the
exponentials of Eq. 7 saturate: its weight lies in 0.996 .. 1 and ranks images as s* alone does.
"""
import numpy

from .. import functional as F
from ..backend import get_array_module, to_cpu
from ..data import DataLoader
from ..features import FeatureExtractor
from ..maps import gaussian_smooth, image_scores, upsample
from ..progress import progress
from ..tensor import no_grad
from .base import AnomalyModel


def greedy_coreset(features, n, seed=0, quiet=True):
    """Indices of ``n`` rows of ``features`` (M x d) by greedy k-center selection (Alg. 1): a random
    first row, then each time the row farthest from all rows chosen so far, with
    ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2 (one M x d matrix-vector product per step)."""
    xp = get_array_module(features)
    sq = (features * features).sum(1)                                        # M
    dmin = xp.full(len(features), xp.inf, dtype=features.dtype)             # M: squared distance to M_C
    chosen = numpy.empty(n, dtype=numpy.int64)
    i = int(numpy.random.default_rng(seed).integers(len(features)))
    for t in progress(range(n), desc="PatchCore coreset", quiet=quiet):
        chosen[t] = i
        xp.minimum(dmin, sq - 2 * (features @ features[i]) + sq[i], out=dmin)
        i = int(dmin.argmax())
    return chosen


def coreset(bank, ratio, projection=128, seed=0, quiet=True):
    """The ``ratio`` |M| rows of the memory bank M (M x C) that greedy k-center selection picks on a
    random Gaussian projection psi to ``projection`` dimensions (Sec. 3.2; none when C is smaller)."""
    xp, size = get_array_module(bank), max(1, int(round(ratio * len(bank))))
    if size >= len(bank):
        return bank
    psi = numpy.random.default_rng(seed).standard_normal((bank.shape[1], projection)) / numpy.sqrt(projection)
    proj = bank @ xp.asarray(psi, bank.dtype) if bank.shape[1] > projection else bank       # M x projection
    return bank[xp.asarray(greedy_coreset(proj, size, seed, quiet=quiet))]


def _k_smallest(d, k):
    """Column indices of the k smallest entries of each row of d (B x n), smallest first."""
    xp = get_array_module(d)
    if k == 1:
        return d.argmin(1)[:, None]
    j = xp.argpartition(d, k - 1, axis=1)[:, :k] if d.shape[1] > k else xp.tile(xp.arange(d.shape[1]), (len(d), 1))
    return xp.take_along_axis(j, xp.argsort(xp.take_along_axis(d, j, 1), axis=1), 1)


def nearest(queries, bank, k=1, block=1 << 22):
    """(distances Q x k, indices Q x k) of the k nearest rows of ``bank`` (M x d) to each row of
    ``queries`` (Q x d), nearest first, in blocks of at most max(``block``, k) distances at a time."""
    xp = get_array_module(queries, bank)
    k = min(k, len(bank))
    bm = min(len(bank), max(k, min(block, 1 << 16)))                         # bank rows per block
    bq = max(1, block // bm)                                                 # query rows per block
    bank_sq = (bank * bank).sum(1)                                           # M
    dist = xp.empty((len(queries), k), dtype=queries.dtype)
    index = xp.empty((len(queries), k), dtype=xp.int64)
    for s in range(0, len(queries), bq):
        q = queries[s:s + bq]
        best_d = best_i = None
        for m in range(0, len(bank), bm):
            d = (-2 * q) @ bank[m:m + bm].T                                  # bq x bm
            d += bank_sq[m:m + bm]                                           # ||q||^2 is added at the end
            j = _k_smallest(d, k)
            cand_d, cand_i = xp.take_along_axis(d, j, 1), j + m
            if best_d is not None:                                           # merge with the earlier blocks' best
                cand_d, cand_i = xp.concatenate([best_d, cand_d], 1), xp.concatenate([best_i, cand_i], 1)
                j = _k_smallest(cand_d, k)
                cand_d, cand_i = xp.take_along_axis(cand_d, j, 1), xp.take_along_axis(cand_i, j, 1)
            best_d, best_i = cand_d, cand_i
        dist[s:s + bq] = xp.sqrt(xp.maximum(best_d + (q * q).sum(1, keepdims=True), 0))
        index[s:s + bq] = best_i
    return dist, index


def channel_pooling(channels, dim):
    """The sum(channels) x dim matrix of the reference code's feature reduction: each tap's channels
    average-pooled to ``dim`` as torch's adaptive_avg_pool1d does (output i averages inputs
    floor(i C / dim) .. ceil((i + 1) C / dim) - 1), then the concatenated taps pooled to ``dim``."""
    def pool(c, d):
        a = numpy.zeros((c, d), numpy.float32)
        for i in range(d):
            lo, hi = i * c // d, -(-(i + 1) * c // d)
            a[lo:hi, i] = 1 / (hi - lo)
        return a
    per_tap = numpy.zeros((sum(channels), len(channels) * dim), numpy.float32)
    for j, (lo, c) in enumerate(zip(numpy.cumsum([0] + list(channels)), channels)):
        per_tap[lo:lo + c, j * dim:(j + 1) * dim] = pool(c, dim)
    return per_tap @ pool(len(channels) * dim, dim)


class PatchCore(AnomalyModel):
    """PatchCore: nearest-neighbour distances to a coreset of normal patch features."""

    method = "patchcore"
    defaults = dict(backbone="efficientnet_lite0", onnx_path=None, taps="patchcore", input_size=256, neighbourhood=3,
                    dim=None, coreset_ratio=0.01, projection=128, num_neighbours=9, image_score="reweight", topk=10,
                    sigma=4.0, batch_size=16, seed=0, quick=False, paper=False)

    def __init__(self, **config):
        super().__init__(**config)
        c = self.config
        if c["image_score"] not in ("reweight", "max", "topk"):
            raise ValueError(f"PatchCore: image_score must be 'reweight', 'max' or 'topk', got {c['image_score']!r}")
        if not 0 < c["coreset_ratio"] <= 1:
            raise ValueError(f"PatchCore: coreset_ratio must lie in (0, 1], got {c['coreset_ratio']!r}")
        if int(c["neighbourhood"]) != c["neighbourhood"] or c["neighbourhood"] < 1 or c["neighbourhood"] % 2 == 0:
            raise ValueError(f"PatchCore: neighbourhood must be an odd positive integer, got {c['neighbourhood']!r}")
        self.encoder = FeatureExtractor(c["backbone"], taps=c["taps"], onnx_path=c["onnx_path"])
        self.pool = channel_pooling(self.encoder.channels, int(c["dim"])) if c["dim"] else None
        self.bank = None

    @no_grad()
    def _embed(self, images):
        """(B h w) x C locally aware patch features on the finest tap's h x w grid (Eqs. 1-3), and (h, w)."""
        p = int(self.config["neighbourhood"])
        feats = self.encoder(images)                                         # B x C_j x h_j x w_j
        h, w = max(tuple(f.shape[2:]) for f in feats)
        maps = []
        for f in feats:
            f = F.avg_pool2d(f, p, stride=1, padding=p // 2, count_include_pad=False)      # Eq. 2: mean over N_p
            maps.append(f if f.shape[2:] == (h, w) else F.interpolate(f, size=(h, w), mode="bilinear",
                                                                      align_corners=False))
        e = F.cat(maps, 1).data                                              # B x C x h x w
        e = e.transpose(0, 2, 3, 1).reshape(-1, e.shape[1])                 # (B h w) x C
        return (e if self.pool is None else e @ get_array_module(e).asarray(self.pool)), (h, w)

    def _fit(self, dataset, quiet=None):
        """Memory bank of every training patch (Eq. 4), reduced to its greedy coreset (Alg. 1)."""
        c = self.config
        ds = self._with_transform(dataset, train=True)
        bank, n = None, 0
        for batch in progress(DataLoader(ds, batch_size=c["batch_size"]), desc="PatchCore features", quiet=quiet):
            e, _ = self._embed(batch["image"])                               # (B h w) x C
            if bank is None:                                                 # one allocation: bounded memory
                bank = get_array_module(e).empty((len(ds) * (len(e) // len(batch["image"])), e.shape[1]), e.dtype)
            if n + len(e) > len(bank):
                raise ValueError(f"PatchCore: training images must share one size; {batch['image'].shape} differs")
            bank[n:n + len(e)] = e
            n += len(e)
        if bank is None:
            raise ValueError("PatchCore needs at least 1 training image, got none")
        self.bank = coreset(bank, c["coreset_ratio"], c["projection"], c["seed"], quiet=quiet)
        return self

    def _bank_on(self, xp):
        """The memory bank on the array module of the features (moved once after load or a device change)."""
        if get_array_module(self.bank) is not xp:
            self.bank = to_cpu(self.bank) if xp is numpy else xp.asarray(self.bank)
        return self.bank

    def _score(self, images):
        """Nearest-neighbour distances on the grid (N x h x w) and the Eq. 7 weight of each image's top patch (N)."""
        e, (h, w) = self._embed(images)                                      # (N h w) x C
        xp = get_array_module(e)
        bank = self._bank_on(xp)
        n = len(e) // (h * w)
        dist, nn = nearest(e, bank)
        dist, nn = dist.reshape(n, h * w), nn.reshape(n, h * w)              # N x hw
        rows, top = xp.arange(n), dist.argmax(1)                             # Eq. 6: m_test,* of each image
        s_star, m_test = dist[rows, top], e.reshape(n, h * w, -1)[rows, top]            # N, N x C
        _, support = nearest(bank[nn[rows, top]], bank, k=self.config["num_neighbours"])  # N x b: N_b(m*)
        d = xp.sqrt(((m_test[:, None] - bank[support]) ** 2).sum(-1))       # N x b
        lse = d.max(1) + xp.log(xp.exp(d - d.max(1, keepdims=True)).sum(1))  # log sum_b exp(d), overflow-free
        weight = 1 - xp.exp(s_star - lse)                                    # Eq. 7
        return {"dist": to_cpu(dist.reshape(n, h, w)), "weight": to_cpu(weight)}

    def _maps(self, stats, reference=None):
        """Upsampled, smoothed distance maps; image scores by ``image_score``."""
        c = self.config
        maps = gaussian_smooth(upsample(stats["dist"], self.input_hw, align_corners=False), c["sigma"])
        if c["image_score"] == "reweight":
            return stats["weight"] * stats["dist"].reshape(len(maps), -1).max(1), maps       # Eq. 7
        return image_scores(maps, c["image_score"], k=c["topk"]), maps

    def state_dict(self):
        return {"bank": self.bank}

    def load_state_dict(self, state):
        self.bank = state["bank"]
