"""The ADTR network and its losses (Zhiyuan You, Kai Yang, Wenhan Luo, Lei Cui, Yu Zheng and Xinyi Le,
"ADTR: Anomaly Detection Transformer with Feature Reconstruction", ICONIP 2022, arXiv:2209.01816).
Equation numbers refer to that paper.

ADTR reconstructs frozen pre-trained CNN features f (B x C x H x W) with a Transformer:

* every grid position is a token; a 1x1 convolution (= a Linear over the channel axis) takes the
  C channels to ``hidden`` (256) and another takes them back (Sec. 3.1);
* a learned position embedding (H W x hidden) is added to the queries and keys of every attention
  layer ("the position embedding is added in each self-attention layer rather than only in the first
  layer", App. A; as DETR, whose code the paper cites for it);
* a 4-layer encoder embeds the tokens; a 4-layer decoder starts from a learned *auxiliary query
  embedding* with one query per token and attends to the encoder output. Sec. 3.2 argues that this
  query is what keeps the network from learning the identity: to reconstruct, softmax(q x^T / sqrt C)
  must approach the identity matrix, which q only learns for normal features x+, so anomalous x-
  are reconstructed badly.

Losses: Eq. 1 (normal samples only), Eq. 2-3 (anomaly score map), and ADTR+ for the case with
labelled anomalies: Eq. 6 (pseudo-Huber difference map phi), Eq. 7 (pixel-level push-pull loss),
Eq. 8-9 (image-level loss on the top-k mean of phi), as Sec. 3.1 and 3.3 write them:

    phi(u)  = sqrt((1/C sum_i |d(i, u)|)^2 + 1) - 1,      d = f - f_hat               (Eq. 6)
    L_px    = 1/HW sum_u (1 - y(u)) phi(u)
              - alpha log(1 - exp(-1/HW sum_u y(u) phi(u)))                          (Eq. 7)
    q       = 1/k sum top_k(phi)                                                      (Eq. 8)
    L_img   = (1 - y) q - alpha y log(1 - exp(-q))                                    (Eq. 9)

with alpha = 0.003 and k = 20 in the paper's experiments (Sec. 4.2-4.3). Eq. 1 is a sum over
channels per position, 1/(HW) ||f - f_hat||^2; ``adtr_normal_loss`` takes the mean over channels too,
C times smaller, which Adam(W)'s scale invariance makes equivalent up to weight decay and epsilon.
"""
import math

import numpy

from .. import functional as F
from ..backend import get_array_module
from ..nn import init
from ..nn.layers import Dropout, LayerNorm, Linear, ModuleList
from ..nn.module import Module, Parameter
from ..nn.transformer import TransformerDecoderLayer, TransformerEncoderLayer
from ..tensor import Function, Tensor, empty

__all__ = ["ADTRNet", "adtr_normal_loss", "anomaly_map", "pseudo_huber_map", "pixel_push_pull_loss",
           "image_level_loss", "topk_mean", "log1mexp"]


class _TokenMLPBlock(Module):
    """A Transformer layer with its attention removed: x = norm(x + linear2(dropout(relu(linear1(x)))))."""

    def __init__(self, d_model, dim_feedforward, dropout):
        super().__init__()
        self.linear1 = Linear(d_model, dim_feedforward)
        self.linear2 = Linear(dim_feedforward, d_model)
        self.dropout = Dropout(dropout)
        self.dropout1 = Dropout(dropout)
        self.norm = LayerNorm(d_model)

    def forward(self, x):
        return self.norm(x + self.dropout1(self.linear2(self.dropout(F.relu(self.linear1(x))))))


class ADTRNet(Module):
    """Feature reconstruction network of ADTR: B x C x H x W features -> B x C x H x W reconstruction.

    in_channels: C of the backbone features (720 for EfficientNet-B4 layers 1-5 in the paper);
    grid_hw: (H, W) of the feature grid (the number of tokens, of position and query embeddings);
    hidden, num_heads, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout: the
    Transformer (paper: 256, 8, 4, 4, 1024; FFN 256 -> 1024 -> 256 with ReLU), post-norm as DETR
    (``norm_first=True`` for pre-norm).

    Ablations of Table 4(a):
    * ``use_attention=False`` ("w/o Attn"): no attention anywhere. Encoder and decoder keep their
      depth as token-wise MLP blocks (Transformer layers without their attention sub-layers); the
      decoder input is the concatenation [query embedding, encoder output] projected back to
      ``hidden`` (only the encoder output without the query embedding).
    * ``use_query_embedding=False`` ("w/o Query"): the decoder is fed the encoder output as its
      queries instead of the learned auxiliary query embedding.
    """

    def __init__(self, in_channels, grid_hw, hidden=256, num_heads=8, num_encoder_layers=4,
                 num_decoder_layers=4, dim_feedforward=1024, dropout=0.1, use_attention=True,
                 use_query_embedding=True, norm_first=False):
        super().__init__()
        self.in_channels, self.grid_hw, self.hidden = in_channels, tuple(grid_hw), hidden
        self.use_attention, self.use_query_embedding = use_attention, use_query_embedding
        tokens = self.grid_hw[0] * self.grid_hw[1]
        self.input_proj = Linear(in_channels, hidden)           # the 1x1 convolution C -> hidden
        if use_query_embedding:
            # the auxiliary query embedding, one learned query per token (Sec. 3.2); N(0, 1) as the
            # nn.Embedding that holds DETR's queries
            self.query_embed = Parameter(empty(tokens, hidden))
            init.normal_(self.query_embed)
        if use_attention:
            # learned position embedding, added to queries and keys in every attention layer
            self.pos_embed = Parameter(empty(tokens, hidden))
            init.uniform_(self.pos_embed)                        # U(0, 1) as DETR's learned position embedding
            self.encoder = ModuleList(TransformerEncoderLayer(hidden, num_heads, dim_feedforward, dropout,
                                                              batch_first=True, norm_first=norm_first)
                                      for _ in range(num_encoder_layers))
            self.decoder = ModuleList(TransformerDecoderLayer(hidden, num_heads, dim_feedforward, dropout,
                                                              batch_first=True, norm_first=norm_first)
                                      for _ in range(num_decoder_layers))
            for layer in list(self.encoder) + list(self.decoder):     # DETR's _reset_parameters
                for p in layer.parameters():
                    if p.ndim > 1:
                        init.xavier_uniform_(p)
            self.encoder_norm = LayerNorm(hidden) if norm_first else None
            self.decoder_norm = LayerNorm(hidden)                 # DETR normalises the decoder output
        else:
            self.encoder = ModuleList(_TokenMLPBlock(hidden, dim_feedforward, dropout)
                                      for _ in range(num_encoder_layers))
            self.decoder = ModuleList(_TokenMLPBlock(hidden, dim_feedforward, dropout)
                                      for _ in range(num_decoder_layers))
            if use_query_embedding:
                self.fuse = Linear(2 * hidden, hidden)            # concatenation + projection
        self.output_proj = Linear(hidden, in_channels)          # the 1x1 convolution hidden -> C

    def extra_repr(self):
        return (f"in_channels={self.in_channels}, grid_hw={self.grid_hw}, hidden={self.hidden}, "
                f"use_attention={self.use_attention}, use_query_embedding={self.use_query_embedding}")

    def forward(self, features):
        if features.ndim != 4 or features.shape[1] != self.in_channels or tuple(features.shape[2:]) != self.grid_hw:
            raise ValueError(f"ADTRNet(in_channels={self.in_channels}, grid_hw={self.grid_hw}) expects "
                             f"B x {self.in_channels} x {self.grid_hw[0]} x {self.grid_hw[1]} features, "
                             f"got {tuple(features.shape)}")
        b, c, h, w = features.shape
        tokens = features.reshape(b, c, h * w).permute(0, 2, 1)          # B x HW x C
        x = self.input_proj(tokens)                                       # B x HW x hidden
        query = None
        if self.use_query_embedding:
            query = self.query_embed.unsqueeze(0).expand(b, h * w, self.hidden)
        if self.use_attention:
            pos = self.pos_embed                                          # HW x hidden, broadcast over B
            for layer in self.encoder:
                x = layer(x, pos=pos)
            memory = x if self.encoder_norm is None else self.encoder_norm(x)
            t = query if query is not None else memory                    # Table 4 "w/o Query": memory
            for layer in self.decoder:
                t = layer(t, memory, pos=pos, query_pos=pos)
            t = self.decoder_norm(t)
        else:
            for layer in self.encoder:
                x = layer(x)
            t = x if query is None else self.fuse(F.cat([query, x], dim=-1))
            for layer in self.decoder:
                t = layer(t)
        out = self.output_proj(t)                                         # B x HW x C
        return out.permute(0, 2, 1).reshape(b, c, h, w)


# ---- losses and scores -----------------------------------------------------------------
def _check_pair(f, f_hat, name):
    if f.shape != f_hat.shape or f.ndim != 4:
        raise ValueError(f"{name}: f and f_hat must both be B x C x H x W, got {tuple(f.shape)} and {tuple(f_hat.shape)}")


def adtr_normal_loss(f, f_hat):
    """Eq. 1, the loss with normal samples only: the MSE between the features and their reconstruction.

    The mean over all B C H W elements (as nn.MSELoss in UniAD's code, by the same first author). Eq. 1
    writes it per image as 1/(H W) ||f - f_hat||_2^2, i.e. C times this value; the factor does not change
    the optimum."""
    _check_pair(f, f_hat, "adtr_normal_loss")
    return F.mse_loss(f_hat, f)


def anomaly_map(f, f_hat):
    """Eq. 2-3: d = f - f_hat (Eq. 2), s(u) = ||d(:, u)||_2 over the channels (Eq. 3) -> B x H x W."""
    _check_pair(f, f_hat, "anomaly_map")
    d = f - f_hat
    return F.sqrt((d * d).sum(dim=1))


def pseudo_huber_map(f, f_hat):
    """Eq. 6, the pseudo-Huber difference map: phi(u) = sqrt((1/C sum_i |d(i, u)|)^2 + 1) - 1 -> B x H x W.

    About a^2 / 2 for a small mean absolute difference a = 1/C sum_i |d(i, u)|, about a - 1 for a large one."""
    _check_pair(f, f_hat, "pseudo_huber_map")
    a = F.abs(f - f_hat).mean(dim=1)
    return F.sqrt(a * a + 1.0) - 1.0


class Log1mExp(Function):
    """y = log(1 - e^-x) for x > 0, stable: log(-expm1(-x)) below ln 2, log1p(-e^-x) above (Maechler 2012);
    dx = g e^-x / (1 - e^-x). Inputs are clamped to >= ``tiny`` so x = 0 gives a large finite value."""

    def forward(self, x, tiny):
        xp = get_array_module(x)
        x = xp.maximum(x, tiny)
        self.x = x
        with numpy.errstate(divide="ignore"):
            return xp.where(x < math.log(2), xp.log(-xp.expm1(-x)), xp.log1p(-xp.exp(-x)))

    def backward(self, g):
        xp = get_array_module(g)
        return g * xp.exp(-self.x) / -xp.expm1(-self.x)


def log1mexp(x, tiny=1e-12):
    """log(1 - exp(-x)) for x >= 0 (the push term of Eq. 7 and Eq. 9), computed stably."""
    return Log1mExp.apply(x, tiny=tiny)


def _mask_like(mask, like, name):
    """0/1 labels as a (constant) tensor of the dtype and device of ``like``; B x 1 x H x W masks lose their channel axis."""
    xp = get_array_module(like.data)
    m = mask.data if isinstance(mask, Tensor) else mask
    m = xp.asarray(m)
    if m.ndim == like.ndim + 1 and m.shape[1] == 1:
        m = m[:, 0]
    if m.shape != like.shape:
        raise ValueError(f"{name}: labels of shape {tuple(m.shape)} do not fit {tuple(like.shape)}; resize "
                         f"pixel masks to the feature grid first")
    m = (m > 0.5) if m.dtype.kind == "f" else (m != 0)
    return Tensor._make(m.astype(like.dtype), False, None, 0)


def pixel_push_pull_loss(f, f_hat, mask, alpha=0.003):
    """Eq. 7, the ADTR+ loss with pixel-level labels y(u) (1: anomalous) at the feature resolution:

        L_px = 1/HW sum_u (1 - y(u)) phi(u) - alpha log(1 - exp(-1/HW sum_u y(u) phi(u)))

    with phi of Eq. 6. The first term pulls the reconstruction of normal positions onto the features,
    the second pushes anomalous ones away (it falls towards 0 as their phi grows). Computed per image
    and averaged over the batch; an image without anomalous positions has no push term.
    mask: B x H x W or B x 1 x H x W (bool or 0/1)."""
    phi = pseudo_huber_map(f, f_hat)                                     # B x H x W
    y = _mask_like(mask, phi, "pixel_push_pull_loss")
    hw = phi.shape[1] * phi.shape[2]
    pull = ((1.0 - y) * phi).sum(dim=(1, 2)) / hw                         # B
    pushed = (y * phi).sum(dim=(1, 2)) / hw                               # B
    has = Tensor._make((y.data.sum(axis=(1, 2)) > 0).astype(phi.dtype), False, None, 0)
    push = -alpha * log1mexp(pushed) * has
    return (pull + push).mean()


def topk_mean(x, k):
    """Eq. 8: the mean of the k largest values of each B x ... map -> B (gradient to those k values)."""
    xp = get_array_module(x.data)
    flat = x.reshape(x.shape[0], -1)
    k = min(int(k), flat.shape[1])
    idx = xp.argpartition(-flat.data, k - 1, axis=1)[:, :k]
    rows = xp.arange(flat.shape[0])[:, None]
    return flat[rows, idx].mean(dim=1)


def image_level_loss(f, f_hat, labels, alpha=0.003, k=20):
    """Eq. 8-9, the ADTR+ loss with image-level labels y (1: anomalous image):

        q = 1/k sum top_k(phi)   (Eq. 8),     L_img = (1 - y) q - alpha y log(1 - exp(-q))   (Eq. 9)

    The top-k mean looks only at the most different positions, since an anomalous image is mostly
    normal. Averaged over the batch. labels: B (bool or 0/1)."""
    phi = pseudo_huber_map(f, f_hat)
    q = topk_mean(phi, k)                                                # B
    y = _mask_like(labels, q, "image_level_loss")
    return ((1.0 - y) * q - alpha * y * log1mexp(q)).mean()
