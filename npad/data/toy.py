"""The toy images of FAVAE's Appendix A (Dehaene and Eline, 2020): grey noise, faint stripes and
shuffled stripes, where a pixel-space likelihood and a human disagree (examples/favae_toy.py)."""
import numpy

from . import transforms as T

SIGMA_N, SIGMA_A, PSI = 0.0285, 0.0570, 5        # normal noise, stripe amplitude, stripe period (rows)


def toy_samples(kind, n, size=128, seed=0, sigma_n=SIGMA_N, sigma_a=SIGMA_A, psi=PSI):
    """``n`` grey toy images (n x 3 x size x size, the grey level repeated in RGB) of Appendix A.

    Our reading of the three distributions (the exact definitions were not available):

    * ``"normal"``: a uniform grey level g ~ U(0.2, 0.8) plus white noise N(0, sigma_n^2);
    * ``"anomaly"``: horizontal stripes of period ``psi`` -- one row in ``psi`` raised by
      sigma_a, the pattern centred on g -- plus a smaller white noise N(0, (sigma_n / 4)^2).
      Its pixels deviate from g by less than sigma_n on average (RMS 0.024 vs 0.0285), so a
      Gaussian decoder with gamma = sigma_n finds it *more* likely than normal samples;
    * ``"shuffled"``: an anomaly with its pixels randomly permuted (same pixel values, no
      structure: a human sees noise).
    """
    rng = numpy.random.default_rng(seed)
    g = rng.uniform(0.2, 0.8, size=(n, 1, 1, 1))
    if kind == "normal":
        x = g + sigma_n * rng.standard_normal((n, 1, size, size))
    elif kind in ("anomaly", "shuffled"):
        rows = (numpy.arange(size) % psi == 0).astype(numpy.float64)
        phase = rng.integers(0, psi, size=n)
        stripes = numpy.stack([numpy.roll(rows, int(p)) for p in phase])              # n x size
        stripes = sigma_a * (stripes - stripes.mean(axis=1, keepdims=True))
        x = g + stripes[:, None, :, None] + 0.25 * sigma_n * rng.standard_normal((n, 1, size, size))
        if kind == "shuffled":
            flat = x.reshape(n, -1)
            x = numpy.stack([f[rng.permutation(f.size)] for f in flat]).reshape(x.shape)
    else:
        raise ValueError(f"toy_samples: kind must be 'normal', 'anomaly' or 'shuffled', got {kind!r}")
    return numpy.repeat(numpy.clip(x, 0, 1), 3, axis=1).astype(numpy.float32)


class ToyDataset:
    """Toy samples of one ``kind`` drawn afresh for every request (an endless training set):
    ``len`` is nominal; ``get(i, rng)`` returns a new sample from ``rng``. Its transform is the
    identity, so a method uses the samples at their own size."""

    category = "toy"

    def __init__(self, size=128, n=1000, seed=0, kind="normal"):
        self.size, self.n, self.seed, self.kind = size, n, seed, kind
        self.transform = T.Compose([])

    def __len__(self):
        return self.n

    def get(self, i, rng=None):
        seed = int(rng.integers(2 ** 31)) if rng is not None else self.seed * 100003 + i
        return {"image": toy_samples(self.kind, 1, self.size, seed)[0], "label": 0}

    def __getitem__(self, i):
        return self.get(i)
