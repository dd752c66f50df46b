"""PaDiM: a Patch Distribution Modeling framework for anomaly detection and localization
(Defard, Setkov, Loesch and Audigier, ICPR 2021, arXiv:2011.08785) — the reference row of
npad's comparison: no training beyond mean and covariance.

1. Frozen backbone features at three scales, upsampled to the finest (stride 4) grid and
   concatenated; a fixed random subset of d channels is kept (Sec. 4.2: random dimensionality
   reduction, d = 100 for ResNet-18).
2. For each grid position ij, the normal features x_ij^k of the N training images are modelled
   by a Gaussian N(mu_ij, Sigma_ij), Sigma_ij = cov + eps I (Eq. 1, eps = 0.01).
3. Anomaly map: the Mahalanobis distance M(x_ij) = sqrt((x - mu)^T Sigma^-1 (x - mu)) (Eq. 2),
   bilinearly upsampled to the input and smoothed by a Gaussian (sigma = 4 px); the image score
   is the maximum of the map.

Reported (Table 2, MVTec AD, WRN-50-2): 95.3 image AUROC (ResNet-18: 89.1), 97.5 pixel AUROC,
92.1 AUPRO.
"""
import numpy

from ..backend import to_cpu
from ..data import DataLoader
from ..features import FeatureExtractor
from ..maps import gaussian_smooth, upsample
from ..progress import progress
from ..tensor import no_grad
from .. import functional as F
from .base import AnomalyModel


class PaDiM(AnomalyModel):
    """PaDiM with per-position Gaussians of concatenated multi-scale features."""

    method = "padim"
    defaults = dict(backbone="efficientnet_lite0", onnx_path=None, taps="cflow", input_size=256, d=100,
                    eps=0.01, sigma=4.0, batch_size=16, seed=0, quick=False, paper=False)

    def __init__(self, **config):
        super().__init__(**config)
        c = self.config
        self.encoder = FeatureExtractor(c["backbone"], taps=c["taps"], onnx_path=c["onnx_path"])
        total = sum(self.encoder.channels)
        d = min(c["d"], total)
        self.channels = numpy.sort(numpy.random.default_rng(c["seed"]).choice(total, d, replace=False))
        self.mean = self.inv_cov = None

    @no_grad()
    def _embed(self, images):
        """N x d x h x w: the features resized to the first tap's grid, concatenated, subsampled."""
        feats = self.encoder(images)
        h, w = feats[0].shape[2:]
        maps = [f if f.shape[2:] == (h, w) else F.interpolate(f, size=(h, w), mode="bilinear", align_corners=False)
                for f in feats]
        return numpy.asarray(to_cpu(F.cat(maps, 1).data[:, self.channels]), numpy.float64)

    def _fit(self, dataset, quiet=None):
        """Mean and regularised inverse covariance per position, from one pass over the data
        accumulating n, sum e and sum e e^T (float64): cov = (sum e e^T - n mu mu^T) / (n - 1)."""
        ds = self._with_transform(dataset, train=True)
        n, s1, s2 = 0, 0.0, 0.0
        for batch in progress(DataLoader(ds, batch_size=self.config["batch_size"]), desc="PaDiM", quiet=quiet):
            e = self._embed(batch["image"])                                   # B x d x h x w
            e = e.reshape(e.shape[0], e.shape[1], -1).transpose(2, 0, 1)       # P x B x d
            n += e.shape[1]
            s1 = s1 + e.sum(1)                                                  # P x d
            s2 = s2 + e.transpose(0, 2, 1) @ e                                  # P x d x d (batched GEMM)
        if n < 2:
            raise ValueError(f"PaDiM needs at least 2 training images, got {n}")
        mean = s1 / n
        cov = (s2 - n * mean[:, :, None] * mean[:, None, :]) / (n - 1)          # Eq. 1
        cov += self.config["eps"] * numpy.eye(cov.shape[-1])
        self.mean, self.inv_cov = mean.astype(numpy.float32), numpy.linalg.inv(cov).astype(numpy.float32)
        return self

    def _score(self, images):
        """Mahalanobis distance on the grid, N x h x w (Eq. 2)."""
        e = self._embed(images)                                                  # N x d x h x w
        N, d, h, w = e.shape
        if h * w != len(self.mean):
            raise ValueError(f"PaDiM: fitted on a grid of {len(self.mean)} positions, but input_size "
                             f"{self.config['input_size']} gives {h} x {w}; was the config edited?")
        diff = e.reshape(N, d, -1).transpose(2, 0, 1) - self.mean[:, None]      # P x N x d
        m = ((diff @ self.inv_cov) * diff).sum(-1)                               # P x N
        return {"dist": numpy.sqrt(numpy.maximum(m, 0)).T.reshape(N, h, w)}

    def _maps(self, stats, reference=None):
        """Upsampled, smoothed distance maps and their maxima."""
        maps = gaussian_smooth(upsample(stats["dist"], self.input_hw, align_corners=False),
                               self.config["sigma"])
        return maps.reshape(maps.shape[0], -1).max(axis=1), maps

    def state_dict(self):
        return {"mean": self.mean, "inv_cov": self.inv_cov, "channels": self.channels}

    def load_state_dict(self, state):
        total, channels = sum(self.encoder.channels), numpy.asarray(state["channels"])
        if channels.size and not (0 <= channels.min() and channels.max() < total):
            raise ValueError(f"channels: indices {channels.min()}..{channels.max()} out of range: the backbone's "
                             f"taps have {total} channels")
        mean, inv_cov = numpy.asarray(state["mean"]), numpy.asarray(state["inv_cov"])
        if mean.ndim != 2 or inv_cov.shape != mean.shape + mean.shape[1:] or channels.shape != mean.shape[1:]:
            raise ValueError(f"mean {mean.shape}, inv_cov {inv_cov.shape} and channels {channels.shape} do not "
                             "fit together (P x d, P x d x d, d)")
        self.mean, self.inv_cov, self.channels = mean, inv_cov, channels
