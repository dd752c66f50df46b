"""FactorVAE and AD-FactorVAE on dSprites, with Kim and Mnih's disentanglement metric (issue 11).

Sources:

* FactorVAE: Kim and Mnih, "Disentangling by Factorising", ICML 2018 (arXiv:1802.05983).
  Loss per batch (their Eq. 2, Algorithm 2): the negative ELBO (Bernoulli decoder: BCE summed over
  pixels, plus KL(q(z|x) || N(0, I)), both averaged over the batch) plus gamma times the total
  correlation TC(z) = KL(q(z) || prod_j q(z_j)), estimated by the density-ratio trick with a
  discriminator D: TC ~ E_q(z)[log D(z) / (1 - D(z))] = mean(logit_0 - logit_1) of D's two
  logits (class 0: a sample of q(z); class 1: a sample of prod_j q(z_j), made by permuting every
  latent dimension independently across a second batch). D minimises the cross-entropy
  0.5 (CE(D(z), 0) + CE(D(z_perm), 1)), trained alongside the VAE. Kim and Mnih: VAE Adam lr 1e-4,
  betas (0.9, 0.999); D Adam lr 1e-4, betas (0.5, 0.9); D an MLP of 6 hidden layers of 1000 units
  with LeakyReLU(0.2); gamma = 35 on dSprites (our default), batch 64, 3e5 iterations.
* The dSprites VAE (Kim and Mnih, Table 1; the report's appendix; the reproducers' code,
  1Konny/FactorVAE): encoder Conv 4x4 stride 2 to 32, 32, 64, 64 channels (64 -> 32 -> 16 -> 8
  -> 4 px), each with ReLU, Conv 4x4 (valid) to 128 (1 x 1) with ReLU, Conv 1x1 to 2 x latent
  (mean, log-variance; latent 10); decoder Conv 1x1 to 128, ConvTranspose 4x4 to 64 (4 x 4), then
  ConvTranspose 4x4 stride 2 to 64, 32, 32, 1 with ReLU between; the output is the Bernoulli
  logits.
* AD-FactorVAE: Liu et al., "Towards Visually Explaining Variational Autoencoders", CVPR 2020
  (arXiv:1911.07389), Sec. 3.3: FactorVAE plus lambda times the attention disentanglement loss
  of the gradient attention maps M^i (Sec. 3.1, :func:`npad.methods.vae_attention.attention_maps`)
  of the latent dimensions. Their Eq. 5, for two maps M^i, M^j of one image:

      L_AD = 2 * sum_p min(M^i_p, M^j_p) / sum_p (M^i_p + M^j_p)

  (a soft intersection over the soft sum: 0 for maps with disjoint supports, 1 for equal maps;
  the form implemented as "equation 5 from author's paper" in the reproducers' code,
  Carmoondedraak/FACT-2021, ``disentanglement/ops.py``). Details the paper leaves open, and what
  is done here (the simplest reading):

  - which pairs: every pair i < j of the latent dimensions, averaged (the reproducers' code
    pairs consecutive maps instead);
  - the sums run over the pixels of one image; the loss is averaged over images and pairs;
  - the map: Sec. 3.1's Grad-CAM form M^i = |sum_c alpha^i_c A_c| with alpha^i_c the spatial mean
    of dmu_i/dA_c, upsampled bilinearly to 64 x 64 (``ad_size``), at the encoder layer
    ``ad_layer`` (default ``"encoder.5"``, the 64 x 8 x 8 ReLU output of the third convolution;
    the later 4 x 4 layer, ``"encoder.7"``, works too; the 1 x 1 layers above it, such as the
    output convolution ``encode.10`` named in an older solver of the reproducers' code, give
    maps that are constant over the image). The gradient is not renormalised
    (``grad_norm=None``, the paper's Eq. 1): a collapsed dimension's near-zero gradient then gives
    a near-zero map that adds nothing to L_AD, where per-dimension renormalisation would blow its
    noise up to the scale of the active dimensions.
  - gradients: npad has no double backward, so alpha (itself a gradient) is a constant, computed
    by a first backward pass from mu_i to A (a stop-gradient); L_AD is differentiated through the
    activations A only (and through them the encoder below the layer). This is what an
    implementation with ``create_graph=False`` computes. (In the version of the reproducers' code
    read here, the AD term is computed under ``torch.no_grad()`` and so adds no gradient at all,
    which may be why the report could not test the claim.)

  lambda = 1 by default (the reproducers' default).

* Disentanglement metric (Kim and Mnih, Sec. 4): for each vote, pick a factor k, fix it at a
  random value, draw L = 100 images with the other factors random, encode them (posterior
  means), divide each latent dimension by its standard deviation over the data, take the
  dimension of least empirical variance; the votes (dimension, k) train a majority-vote
  classifier (each dimension predicts the factor it was most often voted for); the score is its
  accuracy on fresh votes (800 training and 800 evaluation votes in the paper). Dimensions with
  standard deviation < 0.05 over the data (collapsed to the prior) are pruned.

Main API: :class:`DSpritesVAE`, :class:`Discriminator`, :func:`permute_dims`,
:func:`tc_estimate`, :func:`discriminator_loss`, :func:`attention_disentanglement`
(the Eq. 5 loss of given maps), :func:`ad_maps` / :func:`ad_loss` (maps and loss of a model),
:func:`fit_factorvae` (FactorVAE with ``lam=0``, AD-FactorVAE with ``lam > 0``),
:func:`disentanglement_score`, :func:`model_encoder`, :func:`traversal_image`,
:func:`attention_image`.
"""
from __future__ import annotations

import numpy

from .. import functional as F
from ..backend import get_array_module, to_cpu
from ..nn import Conv2d, ConvTranspose2d, Identity, LeakyReLU, Linear, Module, ReLU, Sequential
from ..optim import Adam
from ..tensor import Tensor, manual_seed, no_grad
from .base import backward_step, train_loop
from .vae_attention import attention_maps, map_activation, reparameterize

__all__ = ["DSpritesVAE", "Discriminator", "permute_dims", "tc_estimate", "discriminator_loss", "gaussian_tc",
           "attention_disentanglement", "ad_maps", "ad_loss", "factorvae_loss", "fit_factorvae",
           "disentanglement_score", "model_encoder", "traversal_image", "attention_image"]


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
class DSpritesVAE(Module):
    """The dSprites VAE of Kim and Mnih / the report (see the module docstring), for 1 x 64 x 64
    images. ``width`` scales every channel count (1: 32-32-64-64-128). ``forward`` returns
    (logits, mu, logvar, z) with z sampled in training mode and z = mu in eval mode."""

    def __init__(self, latent=10, width=1.0):
        super().__init__()
        c = [max(int(round(k * width)), 1) for k in (32, 32, 64, 64, 128)]
        self.latent = latent
        self.encoder = Sequential(
            Conv2d(1, c[0], 4, 2, 1), ReLU(),          # 0, 1: 32 x 32
            Conv2d(c[0], c[1], 4, 2, 1), ReLU(),       # 2, 3: 16 x 16
            Conv2d(c[1], c[2], 4, 2, 1), ReLU(),       # 4, 5: 8 x 8
            Conv2d(c[2], c[3], 4, 2, 1), ReLU(),       # 6, 7: 4 x 4
            Conv2d(c[3], c[4], 4, 1, 0), ReLU(),       # 8, 9: 1 x 1
            Conv2d(c[4], 2 * latent, 1))               # 10: mean and log-variance
        self.decoder = Sequential(
            Conv2d(latent, c[4], 1), ReLU(),
            ConvTranspose2d(c[4], c[3], 4, 1, 0), ReLU(),   # 4 x 4
            ConvTranspose2d(c[3], c[2], 4, 2, 1), ReLU(),   # 8 x 8
            ConvTranspose2d(c[2], c[1], 4, 2, 1), ReLU(),   # 16 x 16
            ConvTranspose2d(c[1], c[0], 4, 2, 1), ReLU(),   # 32 x 32
            ConvTranspose2d(c[0], 1, 4, 2, 1))              # 64 x 64 logits
        self.default_layer = "encoder.5"

    def _heads(self, h):
        h = F.reshape(h, h.shape[0], 2 * self.latent)
        return h[:, :self.latent], h[:, self.latent:]

    def encode(self, x):
        return self._heads(self.encoder(x))

    def encode_from(self, a, start):
        """(mu, logvar) from the activations ``a`` entering encoder layer ``start``."""
        h = a
        for m in list(self.encoder)[start:]:
            h = m(h)
        return self._heads(h)

    def decode(self, z):
        """Bernoulli logits (N, 1, 64, 64) of latents z (N, latent)."""
        return self.decoder(F.reshape(z, z.shape[0], self.latent, 1, 1))

    def forward(self, x):
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, self.training)
        return self.decode(z), mu, logvar, z


class Discriminator(Module):
    """Kim and Mnih's total-correlation discriminator: ``layers`` hidden Linear layers of
    ``hidden`` units with LeakyReLU(0.2) (6 x 1000 in the paper), then Linear to 2 logits
    (class 0: a sample of q(z); class 1: of the product of its marginals)."""

    def __init__(self, latent=10, hidden=1000, layers=6):
        super().__init__()
        mods, d = [], latent
        for _ in range(layers):
            mods += [Linear(d, hidden), LeakyReLU(0.2)]
            d = hidden
        mods.append(Linear(d, 2))
        self.net = Sequential(*mods)

    def forward(self, z):
        return self.net(z)


# ---------------------------------------------------------------------------------------------
# total correlation
# ---------------------------------------------------------------------------------------------
def permute_dims(z, rng=None):
    """Every column of ``z`` (N x D, Tensor or array) permuted independently across the batch:
    a sample of prod_j q(z_j). Returns a Tensor cut from the graph."""
    rng = numpy.random.default_rng(rng)
    data = z.data if isinstance(z, Tensor) else z
    n, d = data.shape
    rows = numpy.stack([rng.permutation(n) for _ in range(d)], axis=1)
    cols = numpy.broadcast_to(numpy.arange(d), (n, d))
    xp = get_array_module(data)
    return Tensor(data[xp.asarray(rows), xp.asarray(cols)])


def tc_estimate(disc, z):
    """The density-ratio estimate of TC(z): mean over the batch of D's logit_0 - logit_1
    (a Tensor, differentiable with respect to z and D)."""
    logits = disc(z)
    return F.mean(logits[:, 0] - logits[:, 1])


def _ce2(logits, label):
    """Mean cross-entropy of two-class logits against one class for the whole batch."""
    return -F.mean(F.log_softmax(logits, 1)[:, label])


def discriminator_loss(disc, z, z_perm):
    """D's loss: 0.5 (CE(D(z), 0) + CE(D(z_perm), 1)), z a sample of q(z) (cut from the graph)
    and z_perm one of prod_j q(z_j)."""
    z = z.detach() if isinstance(z, Tensor) else Tensor(z)
    return 0.5 * (_ce2(disc(z), 0) + _ce2(disc(z_perm), 1))


def gaussian_tc(cov):
    """The exact total correlation of a zero-mean Gaussian with covariance ``cov``:
    -0.5 log det(R), R the correlation matrix (a reference for the estimator)."""
    c = numpy.asarray(cov, numpy.float64)
    s = numpy.sqrt(numpy.diag(c))
    return float(-0.5 * numpy.linalg.slogdet(c / numpy.outer(s, s))[1])


# ---------------------------------------------------------------------------------------------
# the attention disentanglement loss
# ---------------------------------------------------------------------------------------------
def _pairs(k, pairs):
    if pairs is None or (isinstance(pairs, str) and pairs == "all"):
        ii, jj = numpy.triu_indices(k, 1)
    elif isinstance(pairs, str) and pairs == "consecutive":
        ii, jj = numpy.arange(k - 1), numpy.arange(1, k)
    else:
        p = numpy.asarray(pairs, numpy.int64).reshape(-1, 2)
        ii, jj = p[:, 0], p[:, 1]
    return ii, jj


def attention_disentanglement(maps, pairs="all", eps=1e-12):
    """Liu et al.'s Eq. 5 for non-negative maps (N x K x H x W, a Tensor or an array): per image
    and pair (i, j), 2 sum_p min(M^i, M^j) / sum_p (M^i + M^j); averaged over images and pairs.
    ``pairs``: "all" (every i < j), "consecutive" ((0, 1), (1, 2), ...) or a list of (i, j).
    Returns a Tensor (differentiable) for a Tensor, a float for an array."""
    k = maps.shape[1]
    if k < 2:
        raise ValueError(f"attention_disentanglement: need at least 2 maps per image, got {k}")
    ii, jj = _pairs(k, pairs)
    if not isinstance(maps, Tensor):
        m = numpy.asarray(to_cpu(maps), numpy.float64).reshape(maps.shape[0], k, -1)
        num = numpy.minimum(m[:, ii], m[:, jj]).sum(-1)
        s = m.sum(-1)
        return float((2 * num / (s[:, ii] + s[:, jj] + eps)).mean())
    m = F.reshape(maps, maps.shape[0], k, -1)
    s = F.sum(m, -1)                                          # N x K
    if isinstance(pairs, str) and pairs == "all":             # basic slices only (cheap backward)
        terms = [F.sum(F.minimum(m[:, i:i + 1], m[:, i + 1:]), -1) / (s[:, i:i + 1] + s[:, i + 1:] + eps)
                 for i in range(k - 1)]
        return 2 * F.mean(F.cat(terms, 1))
    num = F.sum(F.minimum(m[:, ii], m[:, jj]), -1)          # N x P
    return F.mean(2 * num / (s[:, ii] + s[:, jj] + eps))


class _HeadProbe(Module):
    """The encoder above a layer, as a model of its own for :func:`attention_maps`: its input is
    the layer's activation A, passed through an identity tap ``"tap"`` so the attention code can
    capture it; ``encode`` gives (mu, logvar)."""

    def __init__(self, vae, start):
        super().__init__()
        self.tap = Identity()
        self.vae = vae
        self.start = start

    def encode(self, a):
        return self.vae.encode_from(self.tap(a), self.start)


def _layer_index(vae, layer):
    prefix = "encoder."
    if not layer.startswith(prefix) or not layer[len(prefix):].isdigit():
        raise ValueError(f"ad layer must be 'encoder.<i>', got {layer!r}")
    i = int(layer[len(prefix):])
    if not 0 <= i < len(vae.encoder) - 1:
        raise ValueError(f"ad layer {layer!r}: the encoder has layers 0..{len(vae.encoder) - 2} below the heads")
    return i


def ad_maps(vae, x, layer="encoder.5", size=None, activation="abs", grad_norm=None, activations=None):
    """Per-dimension attention maps (N x latent x H x W Tensor, differentiable through the
    activations, alpha constant) at encoder ``layer``, for the loss. ``activations``: the
    layer's output already computed in the caller's graph (saves an encoder pass); otherwise it
    is computed here. Built on :func:`npad.methods.vae_attention.attention_maps` applied to
    the part of the encoder above the layer."""
    i = _layer_index(vae, layer)
    if activations is None:
        h = x if isinstance(x, Tensor) else Tensor(x)
        for m in list(vae.encoder)[:i + 1]:
            h = m(h)
        activations = h
    if size is None:
        size = tuple(x.shape[2:])
    probe = _HeadProbe(vae, i + 1)
    m = attention_maps(probe, activations, "tap", target="each", activation=None, grad_norm=grad_norm,
                       size=False, differentiable=True)                     # N x K x h x w, signed
    if size is not False and tuple(m.shape[2:]) != tuple(size):
        # bilinear upsampling (align_corners=False, as attention_maps') as two small matrix
        # products: the same values, with a much cheaper backward than a gather/scatter
        uh = Tensor(_bilinear_matrix(m.shape[2], size[0]).astype(m.dtype))
        uw = Tensor(_bilinear_matrix(m.shape[3], size[1]).T.astype(m.dtype))
        m = F.matmul(F.matmul(uh, m), uw)
    return map_activation(m, activation)


def _bilinear_matrix(n_in, n_out):
    """(n_out, n_in) weights of 1-d linear interpolation with align_corners=False (half-pixel
    centres, clamped at the borders), as F.interpolate(mode="bilinear")."""
    u = numpy.zeros((n_out, n_in), numpy.float64)
    src = numpy.clip((numpy.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    i0 = numpy.floor(src).astype(numpy.int64)
    i1 = numpy.minimum(i0 + 1, n_in - 1)
    w = src - i0
    numpy.add.at(u, (numpy.arange(n_out), i0), 1 - w)
    numpy.add.at(u, (numpy.arange(n_out), i1), w)
    return u


def ad_loss(vae, x, layer="encoder.5", size=None, pairs="all", activations=None):
    """L_AD of a model on images ``x``: :func:`attention_disentanglement` of :func:`ad_maps`."""
    return attention_disentanglement(ad_maps(vae, x, layer, size, activations=activations), pairs)


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def factorvae_loss(vae, disc, x, gamma=35.0, lam=0.0, ad_layer="encoder.5", ad_size=None, pairs="all"):
    """The (AD-)FactorVAE loss of a batch: recon + kl + gamma tc (+ lam L_AD). Returns
    (loss Tensor, dict of floats, z Tensor)."""
    x = x if isinstance(x, Tensor) else Tensor(x)
    n = x.shape[0]
    if lam:
        i = _layer_index(vae, ad_layer)
        enc = list(vae.encoder)
        a = x
        for m in enc[:i + 1]:
            a = m(a)
        h = a
        for m in enc[i + 1:]:
            h = m(h)
        mu, logvar = vae._heads(h)
    else:
        mu, logvar = vae.encode(x)
    z = reparameterize(mu, logvar, vae.training)
    logits = vae.decode(z)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / n
    kl = F.kl_normal(mu, logvar, reduction="sum") / n
    tc = tc_estimate(disc, z)
    loss = recon + kl + gamma * tc
    parts = dict(recon=recon.item(), kl=kl.item(), tc=tc.item())
    if lam:
        ad = ad_loss(vae, x, ad_layer, ad_size, pairs, activations=a)
        loss = loss + lam * ad
        parts["ad"] = ad.item()
    parts["loss"] = loss.item()
    return loss, parts, z


def _ad_value(vae, x, layer, size, pairs):
    """L_AD of a batch as a float, without touching the graph or the parameters' gradients."""
    m = attention_maps(vae, x, layer, target="each", activation="abs", grad_norm=None, size=size)
    return attention_disentanglement(m, pairs)


def fit_factorvae(vae, disc, data, iterations=3000, batch_size=64, gamma=35.0, lam=0.0, lr=1e-4,
                  betas=(0.9, 0.999), lr_d=1e-4, betas_d=(0.5, 0.9), ad_layer="encoder.5", ad_size=None,
                  pairs="all", seed=0, log_every=100, quiet=None, callback=None):
    """Train a FactorVAE (``lam=0``) or an AD-FactorVAE (``lam > 0``) on ``data`` (a
    :class:`~npad.data.dsprites.DSprites`, sampled afresh every iteration: two independent
    batches, one for the VAE and one, permuted, for the discriminator).

    Per iteration: (1) the VAE step on batch 1 (D's parameters frozen, z the reparametrised
    sample); (2) the D step on z of batch 1 (detached) against the permuted z of batch 2.
    Returns the history (``npad.methods.base.train_loop``), one row per block of ``log_every``
    iterations: the iteration reached, the block's mean of loss, recon, kl, tc, ad (the
    AD-FactorVAE's training L_AD; for FactorVAE L_AD is measured on the block's last batch without
    training on it) and d_loss, the VAE's lr and the elapsed seconds. ``callback(iteration, row)``
    sees each row."""
    manual_seed(seed)
    rng = numpy.random.default_rng(seed)
    opt = Adam(list(vae.parameters()), lr=lr, betas=betas)
    opt_d = Adam(list(disc.parameters()), lr=lr_d, betas=betas_d)
    dparams = list(disc.parameters())
    last = {}

    def block(b):
        """The iterations of log block b (1-based): one row of the history each."""
        return range(b * log_every + 1, min((b + 1) * log_every, iterations) + 1)

    def step(it):
        x1 = Tensor(data.sample(batch_size, rng)[0])
        x2 = Tensor(data.sample(batch_size, rng)[0])
        for p in dparams:                                  # the VAE step does not train D
            p.requires_grad = False
        try:
            loss, parts, z = factorvae_loss(vae, disc, x1, gamma, lam, ad_layer, ad_size, pairs)
        finally:
            for p in dparams:
                p.requires_grad = True
        backward_step(opt, loss)
        with no_grad():
            mu2, logvar2 = vae.encode(x2)
            z2 = reparameterize(mu2, logvar2)
        parts["d_loss"] = backward_step(opt_d, discriminator_loss(disc, z.detach(), permute_dims(z2, rng)))
        last["x"] = x1
        return parts, batch_size

    def end_block(b):
        row = {"iteration": block(b)[-1]}
        if not lam:                                        # L_AD measured on the block's last batch
            vae.eval()
            row["ad"] = _ad_value(vae, last["x"], ad_layer, ad_size, pairs)
            vae.train()
        return row

    on_row = None if callback is None else (lambda b, row: callback(row["iteration"], row))
    return train_loop(step, block, -(-iterations // log_every), opt, modules=[vae, disc],
                      desc="AD-FactorVAE" if lam else "FactorVAE", unit=f"{log_every} it", quiet=quiet,
                      end_epoch=end_block, callback=on_row)


# ---------------------------------------------------------------------------------------------
# the disentanglement metric
# ---------------------------------------------------------------------------------------------
def model_encoder(vae, batch_size=256):
    """A metric encoder: (images, factors) -> posterior means (N x latent float64), eval mode,
    no gradients; the factors are ignored."""
    def encode(images, factors=None):
        vae.eval()
        out = []
        with no_grad():
            for i in range(0, len(images), batch_size):
                mu, _ = vae.encode(Tensor(numpy.asarray(images[i:i + batch_size], numpy.float32)))
                out.append(to_cpu(mu.data).astype(numpy.float64))
        return numpy.concatenate(out)
    return encode


def disentanglement_score(encode, data, n_train=800, n_eval=800, L=100, n_std=10000, prune=0.05, seed=0,
                          chunk=1000):
    """Kim and Mnih's disentanglement metric (see the module docstring).

    ``encode(images, factors)`` -> (N, D) representations (:func:`model_encoder` for a VAE;
    the factors let tests build ideal encoders). ``data``: a DSprites (``sample``,
    ``sample_fixed``, ``factors``). Returns a dict: ``score`` (evaluation accuracy),
    ``train_accuracy``, ``active`` (kept dimensions), ``std`` (per dimension, over ``n_std``
    images), ``votes`` (D x K counts of the training votes), ``classifier`` (the factor each
    dimension predicts; -1 for dimensions never voted for)."""
    rng = numpy.random.default_rng(seed)
    x, f = data.sample(n_std, rng)
    z = numpy.asarray(encode(x, f), numpy.float64)
    std = z.std(axis=0)
    active = numpy.flatnonzero(std >= prune)
    n_dims, n_fac = z.shape[1], len(data.factors)

    def votes(n):
        ks = rng.integers(0, n_fac, n)
        dims = numpy.empty(n, numpy.int64)
        per = max(chunk // L, 1)
        for s in range(0, n, per):
            batch = ks[s:s + per]
            xs, fs = zip(*[data.sample_fixed(L, int(k), rng=rng) for k in batch])
            zz = numpy.asarray(encode(numpy.concatenate(xs), numpy.concatenate(fs)), numpy.float64)
            zz = zz.reshape(len(batch), L, n_dims)
            if len(active) == 0:
                dims[s:s + len(batch)] = -1
                continue
            v = (zz[:, :, active] / std[active]).var(axis=1)           # votes x active
            dims[s:s + len(batch)] = active[v.argmin(axis=1)]
        return dims, ks

    d_tr, k_tr = votes(n_train)
    d_ev, k_ev = votes(n_eval)
    counts = numpy.zeros((n_dims + 1, n_fac), numpy.int64)              # last row: "no active dimension"
    numpy.add.at(counts, (d_tr, k_tr), 1)
    classifier = numpy.where(counts.sum(1) > 0, counts.argmax(1), -1)
    train_acc = float(numpy.mean(classifier[d_tr] == k_tr))
    score = float(numpy.mean(classifier[d_ev] == k_ev))
    return dict(score=score, train_accuracy=train_acc, active=active, std=std, votes=counts[:n_dims],
                classifier=classifier[:n_dims])


# ---------------------------------------------------------------------------------------------
# pictures
# ---------------------------------------------------------------------------------------------
def traversal_image(vae, x, dims=None, span=2.0, steps=8):
    """Latent traversal: for one image ``x`` (1 x 64 x 64), each row varies one latent dimension
    of its posterior mean over [-span, span] (``steps`` columns), decoded (sigmoid); rows are
    ``dims`` (default: all). Returns (rows * 64, steps * 64) float in [0, 1] with 2 px gaps."""
    vae.eval()
    dims = list(range(vae.latent)) if dims is None else list(dims)
    with no_grad():
        mu, _ = vae.encode(Tensor(numpy.asarray(x, numpy.float32)[None]))
        base = to_cpu(mu.data)[0]
        vals = numpy.linspace(-span, span, steps)
        z = numpy.repeat(base[None], len(dims) * steps, 0)
        for r, d in enumerate(dims):
            z[r * steps:(r + 1) * steps, d] = vals
        imgs = to_cpu(F.sigmoid(vae.decode(Tensor(z.astype(numpy.float32)))).data)[:, 0]
    return _tile(imgs.reshape(len(dims), steps, 64, 64))


def _tile(a, gap=2, fill=0.5):
    r, c, h, w = a.shape
    out = numpy.full((r * (h + gap) - gap, c * (w + gap) - gap), fill, numpy.float64)
    for i in range(r):
        for j in range(c):
            out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = a[i, j]
    return out


def attention_image(vae, images, layer="encoder.5", dims=None):
    """Per-dimension attention maps of a few images: RGB uint8, one row per image, the image
    then one jet-coloured map per latent dimension in ``dims`` (each map scaled by the row's
    maximum, so the dimensions of one image compare)."""
    from ..viz import apply_colormap
    vae.eval()
    x = numpy.asarray(images, numpy.float32)
    dims = list(range(vae.latent)) if dims is None else list(dims)
    m = numpy.asarray(to_cpu(attention_maps(vae, x, layer, target=dims, activation="abs", grad_norm=None)))
    rows = []
    for n in range(len(x)):
        top = max(float(m[n].max()), 1e-12)
        cells = [numpy.repeat((x[n, 0] * 255).astype(numpy.uint8)[:, :, None], 3, 2)]
        cells += [apply_colormap(m[n, k] / top, vmin=0.0, vmax=1.0) for k in range(len(dims))]
        rows.append(cells)
    h, w = x.shape[2:]
    gap = 2
    out = numpy.full((len(rows) * (h + gap) - gap, len(rows[0]) * (w + gap) - gap, 3), 128, numpy.uint8)
    for i, cells in enumerate(rows):
        for j, c in enumerate(cells):
            out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = c
    return out
