"""The network of FAVAE (Dehaene and Eline, 2020, Appendix D and Sec. 4.2): the fully convolutional
VAE, the adapters that predict backbone features from decoder activations, and the Gaussian
log-likelihood terms of the loss. The method (training, scoring, data) is in ``favae``."""
import math

import numpy

from .. import functional as F
from ..backend import get_array_module
from ..nn import (BatchNorm2d, Conv2d, ConvTranspose2d, LeakyReLU, Module, ModuleList, Parameter, ReLU,
                  Sequential)
from ..nn.init import he_normal_
from ..tensor import Tensor, no_grad

__all__ = ["ConvVAE", "Adapter", "FeatureHead", "FAVAENet", "gaussian_nll_map", "kl_per_image", "SSIM_AE_WIDTHS",
           "APPENDIX_D_WIDTHS"]

LOG_2PI = math.log(2 * math.pi)


def _block(conv, channels, slope=0.2, bn=True):
    return [conv, BatchNorm2d(channels), LeakyReLU(slope)] if bn else [conv, LeakyReLU(slope)]




#: Channel widths of the eight hidden convolutions: the SSIM autoencoder of Bergmann et al. (npad's default,
#: small enough for a CPU) and FAVAE's Appendix D network.
SSIM_AE_WIDTHS = (32, 32, 32, 64, 64, 128, 64, 32)
APPENDIX_D_WIDTHS = (128, 128, 256, 256, 512, 512, 512, 32)


class ConvVAE(Module):
    """Fully convolutional VAE (Appendix D layout): ``forward(x)`` -> (mu, logvar) of q(z|x);
    ``decode(z)`` -> (x_hat, {stride: decoder activation at that stride}).

    Encoder: Conv 4x4/2, Conv 4x4/2, Conv 3x3, Conv 4x4/2, Conv 3x3, Conv 4x4/2, Conv 3x3, Conv 3x3 with
    ``widths`` c0..c7 (times ``width``), each followed by BatchNorm and LeakyReLU(0.2), then an
    ``input_size / 16`` convolution to 2 x ``latent`` values. The decoder mirrors it: a transposed
    ``input_size / 16`` convolution to c7, then 3x3 layers to c6, c5, and per resolution a transposed
    4x4/2 convolution followed by a 3x3 layer (c5 -> c4 -> c3, c3 -> c2 -> c1, c1 -> c0), a transposed
    4x4/2 convolution to the image and ``output`` ("sigmoid", or "linear" for unbounded data such as the
    toy images of Appendix A).

    ``decoder="appendix_d"``: the 3x3 decoder layers are transposed convolutions (Appendix D's printout)
    and the feature taps are the transposed convolutions that open each resolution (Table 2's decoder
    layers 22, 16, 10 at strides 2, 4, 8, read literally: the module outputs, before BatchNorm).
    ``decoder="npad"``: 3x3 convolutions, and the taps are the last activation at each resolution.

    The latent is ``latent`` x 1 x 1 for ``input_size`` inputs (a grid for larger ones)."""

    def __init__(self, input_size=128, latent=100, width=1.0, in_channels=3, slope=0.2, batch_norm=True,
                 widths=None, decoder="npad", output="sigmoid"):
        super().__init__()
        if input_size % 16 or input_size < 16:
            raise ValueError(f"ConvVAE: input_size must be a multiple of 16, got {input_size}")
        if decoder not in ("npad", "appendix_d"):
            raise ValueError(f"ConvVAE: decoder must be 'npad' or 'appendix_d', got {decoder!r}")
        if output not in ("sigmoid", "linear"):
            raise ValueError(f"ConvVAE: output must be 'sigmoid' or 'linear', got {output!r}")
        widths = tuple(SSIM_AE_WIDTHS if widths is None else widths)
        if len(widths) != 8:
            raise ValueError(f"ConvVAE: widths must give the 8 hidden convolutions' channels, got {widths}")
        k = input_size // 16
        c = [max(1, int(round(v * width))) for v in widths]
        self.input_size, self.latent, self.width, self.decoder, self.output = input_size, latent, width, decoder, output
        bn = bool(batch_norm)
        enc = []
        enc += _block(Conv2d(in_channels, c[0], 4, 2, 1), c[0], slope, bn)      # /2
        enc += _block(Conv2d(c[0], c[1], 4, 2, 1), c[1], slope, bn)             # /4
        enc += _block(Conv2d(c[1], c[2], 3, 1, 1), c[2], slope, bn)
        enc += _block(Conv2d(c[2], c[3], 4, 2, 1), c[3], slope, bn)             # /8
        enc += _block(Conv2d(c[3], c[4], 3, 1, 1), c[4], slope, bn)
        enc += _block(Conv2d(c[4], c[5], 4, 2, 1), c[5], slope, bn)             # /16
        enc += _block(Conv2d(c[5], c[6], 3, 1, 1), c[6], slope, bn)
        enc += _block(Conv2d(c[6], c[7], 3, 1, 1), c[7], slope, bn)
        enc += [Conv2d(c[7], 2 * latent, k)]                                 # 1 x 1
        self.encoder = Sequential(*enc)
        conv3 = ConvTranspose2d if decoder == "appendix_d" else Conv2d         # the decoder's 3x3 layers
        # decoder stages, one per resolution; each opens with a transposed convolution
        self.stages = ModuleList([
            Sequential(*_block(ConvTranspose2d(latent, c[7], k), c[7], slope, bn),
                       *_block(conv3(c[7], c[6], 3, 1, 1), c[6], slope, bn),
                       *_block(conv3(c[6], c[5], 3, 1, 1), c[5], slope, bn)),          # /16
            Sequential(*_block(ConvTranspose2d(c[5], c[4], 4, 2, 1), c[4], slope, bn),
                       *_block(conv3(c[4], c[3], 3, 1, 1), c[3], slope, bn)),          # /8
            Sequential(*_block(ConvTranspose2d(c[3], c[2], 4, 2, 1), c[2], slope, bn),
                       *_block(conv3(c[2], c[1], 3, 1, 1), c[1], slope, bn)),          # /4
            Sequential(*_block(ConvTranspose2d(c[1], c[0], 4, 2, 1), c[0], slope, bn)),  # /2
        ])
        self.head = ConvTranspose2d(c[0], in_channels, 4, 2, 1)                    # /1
        self.strides = [16, 8, 4, 2]
        self.tap_channels = [c[7], c[4], c[2], c[0]] if decoder == "appendix_d" else [c[5], c[3], c[1], c[0]]
        if not bn:      # He-normal keeps the signal's scale; the default init would shrink it layer by layer
            he_normal_(self, a=slope, generator=0)

    def forward(self, x):
        h = self.encoder(x)
        return h[:, :self.latent], h[:, self.latent:]

    @no_grad()
    def data_init(self, x, seed=0):
        """Layer-sequential unit-variance start for the network without BatchNorm: every
        convolution is rescaled so that its output has unit standard deviation on the batch
        ``x`` (on small inputs zero padding otherwise shrinks the signal layer by layer); the
        posterior mean and log-variance start at std 1 and 0.1, the decoder sees z ~ N(0, I) and
        its output starts near 0.5 (pre-sigmoid std 0.1)."""
        def run(layers, h, last_std=1.0):
            convs = [i for i, m in enumerate(layers) if isinstance(m, (Conv2d, ConvTranspose2d))]
            for i, layer in enumerate(layers):
                out = layer(h)
                if i in convs:
                    target = last_std if i == convs[-1] else 1.0
                    b = 0.0 if layer.bias is None else layer.bias.data.reshape(1, -1, 1, 1)
                    sd = float((out.data - b).std()) + 1e-8
                    layer.weight.data[...] *= target / sd
                    out = layer(h)
                h = out
            return h
        layers = list(self.encoder)
        h = run(layers[:-1], x)
        last = layers[-1]
        out = last(h).data
        sd_mu = float(out[:, :self.latent].std()) + 1e-8
        sd_lv = float(out[:, self.latent:].std()) + 1e-8
        last.weight.data[:self.latent] *= 1.0 / sd_mu
        last.weight.data[self.latent:] *= 0.1 / sd_lv
        rng = numpy.random.default_rng(seed)
        xp = get_array_module(x.data)
        z = Tensor(xp.asarray(rng.standard_normal(last(h).shape[:1] + (self.latent,) + tuple(out.shape[2:])),
                              dtype=x.data.dtype))
        h = z
        for stage in self.stages:
            h = run(list(stage), h)
        run([self.head], h, last_std=0.1)

    def decode(self, z):
        taps = {}
        h = z
        first = self.decoder == "appendix_d"     # tap the transposed convolution opening each resolution
        for s, stage in zip(self.strides, self.stages):
            for i, layer in enumerate(stage):
                h = layer(h)
                if first and i == 0:
                    taps[s] = h
            if not first:
                taps[s] = h
        out = self.head(h)
        return (F.sigmoid(out) if self.output == "sigmoid" else out), taps


class Adapter(Module):
    """Two 1x1 convolutions with a ReLU between: decoder activation -> feature prediction,
    bilinearly resized to the feature's resolution when the strides differ."""

    def __init__(self, in_channels, out_channels, hidden=None):
        super().__init__()
        hidden = hidden or out_channels
        self.net = Sequential(Conv2d(in_channels, hidden, 1), ReLU(), Conv2d(hidden, out_channels, 1))

    def forward(self, h, size=None):
        y = self.net(h)
        if size is not None and tuple(y.shape[-2:]) != tuple(size):
            y = F.interpolate(y, size=tuple(size), mode="bilinear", align_corners=False)
        return y


def gaussian_nll_map(target, mean, logvar):
    """-log N(target; mean, exp(logvar)) summed over channels: B x h x w.
    ``logvar`` is a Tensor broadcastable to B x C x h x w (a global scalar or one per channel)."""
    err = F.square(target - mean)
    nll = 0.5 * (err * F.exp(-logvar) + logvar + LOG_2PI)
    return F.sum(nll, 1)


def kl_per_image(mu, logvar):
    """KL(N(mu, e^logvar) || N(0, I)) per image (``F.kl_normal`` summed over latent channels and
    positions): B."""
    kl = F.kl_normal(mu, logvar, reduction="none")
    return F.sum(F.reshape(kl, kl.shape[0], -1), 1)


class FeatureHead(Module):
    """Adapter of one feature space and its per-channel log-variance (Sec. 4.2)."""

    def __init__(self, in_channels, channels, stride, tap_stride):
        super().__init__()
        self.adapter = Adapter(in_channels, channels)
        self.logvar = Parameter(numpy.zeros((1, channels, 1, 1), numpy.float32))
        self.stride, self.tap_stride = int(stride), int(tap_stride)


class FAVAENet(Module):
    """The trainable part: the VAE, the pixel-space log gamma^2 and one FeatureHead per feature space."""

    def __init__(self, input_size, latent, width, feature_channels=(), feature_strides=(), batch_norm=True,
                 widths=None, decoder="npad", output="sigmoid"):
        super().__init__()
        self.vae = ConvVAE(input_size, latent, width, batch_norm=batch_norm, widths=widths, decoder=decoder,
                           output=output)
        self.logvar_px = Parameter(numpy.zeros((1, 1, 1, 1), numpy.float32))
        heads = []
        for ch, s in zip(feature_channels, feature_strides):
            # the decoder layer of matching resolution (Table 2), else the nearest one in log-stride
            tap = min(self.vae.strides, key=lambda t: (abs(math.log2(t) - math.log2(s)), t))
            heads.append(FeatureHead(self.vae.tap_channels[self.vae.strides.index(tap)], ch, s, tap))
        self.heads = ModuleList(heads)

    def forward(self, x, sample=True, rng=None):
        """(mu, logvar, x_hat, taps) for images x (Tensor B x 3 x H x W)."""
        mu, logvar = self.vae(x)
        z = mu
        if sample:
            xp = get_array_module(mu.data)
            eps = (rng or numpy.random.default_rng()).standard_normal(mu.shape).astype(numpy.float32)
            z = mu + F.exp(0.5 * logvar) * Tensor(xp.asarray(eps))
        x_hat, taps = self.vae.decode(z)
        return mu, logvar, x_hat, taps

    def feature_maps(self, taps, feats):
        """-log p(f_l | z) summed over channels, per feature space: list of B x h_l x w_l Tensors."""
        return [gaussian_nll_map(f, head.adapter(taps[head.tap_stride], f.shape[-2:]), head.logvar)
                for head, f in zip(self.heads, feats)]
