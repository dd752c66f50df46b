"""Invertible blocks for conditional normalizing flows (as FrEIA, used by CFLOW-AD).

Contract of every block: ``forward(x, cond) -> (y, log_det)`` and
``inverse(y, cond) -> x``, with x, y of shape N x C, cond N x P and log_det
(N,) = log |det dy/dx| per row. ``SequenceFlow`` chains blocks and adds their
log-determinants.

The conditional affine coupling block (FrEIA's "all-in-one" block), for an
input x = [x1, x2] with x1 the first C - C//2 channels:

    a      = prescale * subnet([x1, cond])            (prescale 0.1; subnet(x1) without a condition)
    s, t   = a[:, :C//2], a[:, C//2:]
    s'     = clamp * tanh(s / clamp)                    (soft clamp, clamp 1.9; soft_clamp="scaled")
    x2    <- x2 * exp(s') + t                           log_det += sum(s')
    x     <- x * scale + offset                         log_det += sum(log scale)
             scale = 0.1 * softplus_{beta=0.5}(g), g set so that scale starts at 1
    y      = x @ W^T                                    W fixed: random orthogonal ("soft"
                                                        permutation, |det W| = 1) or a permutation

``soft_clamp="unscaled"`` computes s' = clamp * tanh(s), the form of FrEIA's block at
the commit the CFLOW-AD authors pinned (4e0c6ab, April 2021; FrEIA switched to
clamp * tanh(s / clamp) in 2023): both saturate at +-clamp, but near 0 the scaled
form's s' ~ s and the unscaled form's ~ clamp * s. With ``cond_channels=0`` the block
is unconditional (FrEIA's block without ``cond``; CFLOW-AD's UFLOW ablation). The
inverse runs the steps backwards: x = y @ W, undo the affine, x2 = (x2 - t) * exp(-s'),
where s', t come from the unchanged x1.
"""
import math

import numpy

from . import functional as F
from .nn import Linear, Module, Parameter, ReLU, Sequential
from .tensor import Tensor


def subnet_fc(d_in, d_out):
    """CFLOW's coupling subnet: Linear(d_in, 2 d_in) - ReLU - Linear(2 d_in, d_out)."""
    return Sequential(Linear(d_in, 2 * d_in), ReLU(), Linear(2 * d_in, d_out))


def _inverse_softplus_half(y):
    """g with 0.1 * softplus_{beta=0.5}(g) = y:  g = 2 log(exp(5 y) - 1)."""
    return 2.0 * math.log(math.expm1(5.0 * y))


class ConditionalAffineCoupling(Module):
    """One conditional affine coupling block (FrEIA AllInOneBlock with a soft permutation);
    the maths is in the module docstring."""

    def __init__(self, channels, cond_channels, subnet_constructor=subnet_fc, clamp=1.9, prescale=0.1,
                 permutation="soft", seed=0, soft_clamp="scaled"):
        super().__init__()
        if channels < 2:
            raise ValueError(f"ConditionalAffineCoupling needs at least 2 channels, got {channels}")
        if permutation not in ("soft", "hard"):
            raise ValueError(f"permutation must be 'soft' (random orthogonal) or 'hard', got {permutation!r}")
        if soft_clamp not in ("scaled", "unscaled"):
            raise ValueError(f"soft_clamp must be 'scaled' (clamp tanh(s / clamp)) or 'unscaled' (clamp tanh(s)), "
                             f"got {soft_clamp!r}")
        if cond_channels < 0:
            raise ValueError(f"ConditionalAffineCoupling: cond_channels must be >= 0, got {cond_channels}")
        self.channels, self.cond_channels = channels, cond_channels
        self.c2 = channels // 2
        self.c1 = channels - self.c2
        self.clamp, self.prescale, self.permutation, self.soft_clamp = clamp, prescale, permutation, soft_clamp
        self.subnet = subnet_constructor(self.c1 + cond_channels, 2 * self.c2)
        self.global_scale = Parameter(numpy.full((channels,), _inverse_softplus_half(1.0), numpy.float32))
        self.global_offset = Parameter(numpy.zeros((channels,), numpy.float32))
        rng = numpy.random.default_rng(seed)
        if permutation == "soft":
            q, r = numpy.linalg.qr(rng.standard_normal((channels, channels)))
            w = q * numpy.sign(numpy.diag(r))   # Haar-distributed orthogonal matrix
        else:
            w = numpy.eye(channels)[rng.permutation(channels)]
        self.register_buffer("w_perm", Tensor(w.astype(numpy.float32)))

    def _coefficients(self, x1, cond):
        """s' (N x C//2) and t (N x C//2) from the unchanged half and the condition."""
        if (cond is None) != (self.cond_channels == 0):
            raise ValueError(f"ConditionalAffineCoupling: built for {self.cond_channels} condition channels, "
                             f"called with {'no condition' if cond is None else 'a condition'}")
        h = x1 if cond is None else F.cat([x1, cond], 1)                  # N x (C1 + P)
        a = self.subnet(h) * self.prescale                                # N x 2 C2
        s, t = a[:, :self.c2], a[:, self.c2:]
        if self.soft_clamp == "unscaled":
            return self.clamp * F.tanh(s), t
        return self.clamp * F.tanh(s / self.clamp), t

    def _scale(self):
        return 0.1 * F.softplus(self.global_scale, beta=0.5)             # C

    def forward(self, x, cond=None):
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise ValueError(f"ConditionalAffineCoupling: expected input N x {self.channels}, got {tuple(x.shape)}")
        x1, x2 = x[:, :self.c1], x[:, self.c1:]
        s, t = self._coefficients(x1, cond)
        x2 = x2 * F.exp(s) + t
        scale = self._scale()
        y = F.cat([x1, x2], 1) * scale + self.global_offset               # N x C
        y = y @ self.w_perm.T
        log_det = s.sum(1) + F.log(scale).sum()                           # N
        return y, log_det

    def inverse(self, y, cond=None):
        x = (y @ self.w_perm - self.global_offset) / self._scale()        # W^-1 = W^T
        x1, x2 = x[:, :self.c1], x[:, self.c1:]
        s, t = self._coefficients(x1, cond)
        return F.cat([x1, (x2 - t) * F.exp(-s)], 1)


class SequenceFlow(Module):
    """Blocks applied in order; log-determinants add up (FrEIA's SequenceINN)."""

    def __init__(self, *blocks):
        super().__init__()
        for i, b in enumerate(blocks):
            self.add_module(str(i), b)

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)

    def forward(self, x, cond=None):
        log_det = 0.0
        for block in self:
            x, ld = block(x, cond)
            log_det = ld + log_det
        return x, log_det

    def inverse(self, y, cond=None):
        for block in reversed(list(self)):
            y = block.inverse(y, cond)
        return y


def cflow_decoder(channels, cond_channels=128, n_blocks=8, clamp=1.9, prescale=0.1, permutation="soft", seed=0,
                  soft_clamp="scaled"):
    """CFLOW's decoder for one scale: ``n_blocks`` conditional affine couplings (Gudovskiy et al., Sec. 4.2);
    ``cond_channels=0``: unconditional couplings (Table 2's UFLOW)."""
    return SequenceFlow(*[ConditionalAffineCoupling(channels, cond_channels, clamp=clamp, prescale=prescale,
                                                    permutation=permutation, seed=seed + k, soft_clamp=soft_clamp)
                          for k in range(n_blocks)])


def gaussian_log_prob(z, log_det):
    """log p(x) = -0.5 (||z||^2 + C log 2 pi) + log|det J|  (CFLOW-AD Eq. 8), per row of z (N x C)."""
    c = z.shape[1]
    return -0.5 * ((z * z).sum(1) + c * math.log(2 * math.pi)) + log_det


def positional_encoding_2d(channels, height, width, xp=numpy, dtype=numpy.float32):
    """CFLOW's 2-D sinusoidal encoding, channels x H x W: with w_k = 10000^(-2k / (channels/2)),
    channels 2k, 2k+1 are sin, cos(column * w_k) and channels/2 + 2k, +1 are sin, cos(row * w_k)."""
    if channels % 4 or channels <= 0:
        raise ValueError(f"positional_encoding_2d: channels must be a positive multiple of 4, got {channels}")
    half = channels // 2
    w = numpy.exp(numpy.arange(0, half, 2) * -(math.log(1e4) / half))          # half/2
    cols = numpy.arange(width)[:, None] * w                                     # W x half/2
    rows = numpy.arange(height)[:, None] * w                                    # H x half/2
    p = numpy.zeros((channels, height, width))
    p[0:half:2] = numpy.sin(cols).T[:, None, :]
    p[1:half:2] = numpy.cos(cols).T[:, None, :]
    p[half::2] = numpy.sin(rows).T[:, :, None]
    p[half + 1::2] = numpy.cos(rows).T[:, :, None]
    return xp.asarray(p.astype(dtype))
