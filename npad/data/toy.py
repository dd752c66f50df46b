"""The toy images of FAVAE's Appendix A (Dehaene and Eline, 2020): grey noise, faint stripes and
shuffled stripes, where a pixel-space likelihood and a human disagree (examples/favae_toy.py)."""
import numpy

from . import transforms as T

SIGMA_N, SIGMA_A, PSI = 0.0285, 0.0570, 5        # App. A: "sigma_n = 0.0285, sigma_a = 0.0570, psi = 5"


def toy_samples(kind, n, size=128, seed=0, sigma_n=SIGMA_N, sigma_a=SIGMA_A, psi=PSI):
    """``n`` grey toy images of Appendix A, n x 3 x size x size float32 (the grey value in all three
    channels, since npad's models take RGB; App. A: d = 128 x 128, grey):

    * ``"normal"``: x_k = mu + N(0, sigma_n^2) for every pixel k, mu ~ N(0, 1) per image;
    * ``"anomaly"``: x_ij = mu + G sin(2 pi psi j + phi) with mu ~ N(0, 1), G ~ N(0, sigma_a^2),
      phi ~ U(0, 2 pi) per image, "where i, j respectively index pixels by columns and rows": the
      sinusoid runs down the rows (horizontal stripes);
    * ``"shuffled"``: "we first sample from the anomaly distribution, then we randomly shuffle the
      pixels" (Sec. 3.1).

    Where the text leaves a choice, we take the formulas literally:

    (a) j is the row's position as a fraction of the height, j = row / size, so that psi = 5 is five
        periods per image; with the integer row index, sin(2 pi psi j + phi) = sin(phi) for every row
        and there would be no stripes;
    (b) the anomaly formula has no noise term, although Sec. 3.1 and App. A's prose say "with added
        white noise of an amplitude smaller than the noise amplitude of the normal data
        distribution": we follow the formula;
    (c) "sigma_a s.t. Var[q_a(x_ij | mu, G, phi)] < sigma_n" compares a variance with a standard
        deviation: the stripes' variance, sigma_a^2 / 2 = 0.0016, is below sigma_n = 0.0285 but above
        sigma_n^2 = 0.0008 (their RMS, 0.040, exceeds the normal noise, 0.0285);
    (d) no value range is stated: the images are not clipped (mu ~ N(0, 1) leaves [0, 1] for most
        images), so a model of them needs an unbounded decoder mean (App. B: mu_theta(z) = z), e.g.
        FAVAE(output="linear").
    """
    rng = numpy.random.default_rng(seed)
    mu = rng.standard_normal((n, 1, 1, 1))
    if kind == "normal":
        x = mu + sigma_n * rng.standard_normal((n, 1, size, size))
    elif kind in ("anomaly", "shuffled"):
        g = sigma_a * rng.standard_normal((n, 1, 1, 1))
        phi = rng.uniform(0, 2 * numpy.pi, (n, 1, 1, 1))
        j = (numpy.arange(size) / size)[None, None, :, None]                       # rows
        x = numpy.broadcast_to(mu + g * numpy.sin(2 * numpy.pi * psi * j + phi), (n, 1, size, size))
        if kind == "shuffled":
            flat = x.reshape(n, -1)
            x = numpy.stack([f[rng.permutation(f.size)] for f in flat]).reshape(x.shape)
    else:
        raise ValueError(f"toy_samples: kind must be 'normal', 'anomaly' or 'shuffled', got {kind!r}")
    return numpy.repeat(x, 3, axis=1).astype(numpy.float32)


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
