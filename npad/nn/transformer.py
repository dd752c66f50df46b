"""Attention and Transformer layers with PyTorch's names and parameter layout.

``scaled_dot_product_attention``: softmax(Q K^T / sqrt(d)) V (Vaswani et al. 2017, Eq. 1).
``MultiheadAttention``: h heads of it on learned projections of query, key and value, as
torch.nn.MultiheadAttention (in_proj_weight 3E x E, in_proj_bias 3E, out_proj Linear E -> E),
so a PyTorch state_dict maps one to one.
``TransformerEncoderLayer`` / ``TransformerDecoderLayer``: as torch.nn's (same submodule
names: self_attn, multihead_attn, linear1, linear2, norm1..3, dropout, dropout1..3), post-norm
by default as DETR (Carion et al. 2020), whose code ADTR builds on, pre-norm with
``norm_first=True``; with DETR's positional hook: ``pos`` / ``query_pos`` are added to the
queries and keys of every attention (never to the values), so each layer sees where a token is.
"""
import math

import numpy

from .. import functional as F
from ..backend import get_array_module
from ..tensor import Tensor, empty, zeros
from . import init
from .layers import Dropout, LayerNorm, Linear
from .module import Module, Parameter

__all__ = ["scaled_dot_product_attention", "MultiheadAttention", "TransformerEncoderLayer",
           "TransformerDecoderLayer"]


def _as_additive(mask, like, allowed_when_true):
    """A float mask to add to the attention scores: 0 where attending is allowed, -inf where not.

    A boolean mask is read with ``allowed_when_true`` (True: True marks the keys that take part, as
    torch's scaled_dot_product_attention; False: True marks the keys to leave out, as torch's
    MultiheadAttention); a floating mask is returned as it is (it is added as given)."""
    if mask is None:
        return None
    data = mask.data if isinstance(mask, Tensor) else mask
    xp = get_array_module(like.data)
    data = xp.asarray(data)
    if data.dtype.kind == "b":
        allowed = data if allowed_when_true else ~data
        data = xp.where(allowed, 0.0, -numpy.inf).astype(like.dtype)
    return Tensor._make(data.astype(like.dtype, copy=False), False, None, 0)


def _attention(query, key, value, mask=None, dropout_p=0.0, scale=None):
    """(softmax(Q K^T * scale + mask) V, the attention weights); ``mask`` is additive (or None).

    Q: ... x L x d, K: ... x S x d, V: ... x S x d_v -> ... x L x d_v and ... x L x S."""
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = (query @ key.transpose(-2, -1)) * scale       # Q K^T / sqrt(d):        ... x L x S
    if mask is not None:
        scores = scores + mask                              # -inf: that key is not attended
    # numerically stable softmax over the keys: exp(s - max_j s_j) / sum_j exp(s_j - max_j s_j)
    # (F.softmax subtracts the row maximum before exp, so large scores cannot overflow; a row
    # whose keys are all masked has no maximum and gives NaN, as in PyTorch)
    weights = F.softmax(scores, dim=-1)
    if dropout_p > 0:
        weights = F.dropout(weights, dropout_p, training=True)
    return weights @ value, weights                         # sum_j w_ij v_j:         ... x L x d_v


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, scale=None):
    """softmax(Q K^T / sqrt(d) + mask) V over the last two axes (leading axes are batch / heads).

    query: ... x L x d, key: ... x S x d, value: ... x S x d_v -> ... x L x d_v.
    ``attn_mask`` (broadcastable to ... x L x S): boolean, True where a query may attend to a key
    (torch.nn.functional.scaled_dot_product_attention's convention), or floating, added to the
    scores. ``dropout_p``: dropout on the attention weights, applied whenever it is > 0 (as torch;
    pass 0 in evaluation). ``scale`` replaces 1 / sqrt(d)."""
    if key.shape[-1] != query.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: query {tuple(query.shape)}, key {tuple(key.shape)} "
                         f"and value {tuple(value.shape)} do not fit (need ... x L x d, ... x S x d, ... x S x d_v)")
    out, _ = _attention(query, key, value, _as_additive(attn_mask, query, True), dropout_p, scale)
    return out


class MultiheadAttention(Module):
    """Multi-head attention, as torch.nn.MultiheadAttention:

    head_i = softmax(Q_i K_i^T / sqrt(d)) V_i with Q_i = query W_q,i + b_q,i (likewise K, V),
    d = embed_dim / num_heads; output = concat(head_1..head_h) W_o^T + b_o.
    Parameters: in_proj_weight (3E x E: the rows of W_q, W_k, W_v), in_proj_bias (3E), out_proj.

    forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True) -> (output, weights or None). Inputs are L x N x E (S x N x E for
    key and value), or N x L x E with ``batch_first``, or unbatched L x E. Masks follow
    torch.nn.MultiheadAttention: boolean True means "do not attend"; floating ones are added.
    attn_mask: L x S or (N num_heads) x L x S; key_padding_mask: N x S. Weights: N x L x S
    averaged over heads (N x num_heads x L x S when ``average_attn_weights=False``)."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, batch_first=False):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.head_dim, self.batch_first = embed_dim // num_heads, batch_first
        self.in_proj_weight = Parameter(empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = Parameter(zeros(3 * embed_dim)) if bias else None
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias)
        init.xavier_uniform_(self.in_proj_weight)          # torch's _reset_parameters
        if bias:
            init.zeros_(self.out_proj.bias)

    def _project(self, x, i):
        """x W_i^T + b_i for i = 0 (query), 1 (key), 2 (value)."""
        E = self.embed_dim
        w = self.in_proj_weight[i * E:(i + 1) * E]
        b = self.in_proj_bias[i * E:(i + 1) * E] if self.in_proj_bias is not None else None
        return F.linear(x, w, b)

    def _heads(self, x):
        """N x L x E -> N x h x L x d"""
        n, length = x.shape[0], x.shape[1]
        return x.reshape(n, length, self.num_heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True):
        unbatched = query.ndim == 2
        if unbatched:
            query, key, value = (t.unsqueeze(0) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = (key_padding_mask.data if isinstance(key_padding_mask, Tensor)
                                    else key_padding_mask)[None]
        elif not self.batch_first:                          # L x N x E -> N x L x E
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if query.shape[-1] != self.embed_dim or key.shape[-1] != self.embed_dim or value.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiheadAttention(embed_dim={self.embed_dim}): got query {tuple(query.shape)}, "
                             f"key {tuple(key.shape)}, value {tuple(value.shape)}")
        if key.shape[:2] != value.shape[:2] or key.shape[0] != query.shape[0]:
            raise ValueError(f"MultiheadAttention: batch or length of query {tuple(query.shape)}, "
                             f"key {tuple(key.shape)}, value {tuple(value.shape)} do not match")
        n, length, s = query.shape[0], query.shape[1], key.shape[1]
        q, k, v = (self._heads(self._project(t, i)) for i, t in enumerate((query, key, value)))
        mask = self._mask(attn_mask, key_padding_mask, q, n, length, s)
        p = self.dropout if self.training else 0.0
        out, weights = _attention(q, k, v, mask, p)         # N x h x L x d, N x h x L x S
        out = out.permute(0, 2, 1, 3).reshape(n, length, self.embed_dim)
        out = self.out_proj(out)
        if unbatched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = weights.mean(dim=1)
        return out, (weights.squeeze(0) if unbatched else weights)

    def _mask(self, attn_mask, key_padding_mask, like, n, length, s):
        """attn_mask and key_padding_mask as one additive mask broadcastable to N x h x L x S."""
        mask = _as_additive(attn_mask, like, False)
        if mask is not None:
            if mask.shape == (length, s):
                pass
            elif mask.shape == (n * self.num_heads, length, s):
                mask = mask.reshape(n, self.num_heads, length, s)
            else:
                raise ValueError(f"MultiheadAttention: attn_mask of shape {tuple(mask.shape)}; expected "
                                 f"{(length, s)} or {(n * self.num_heads, length, s)}")
        pad = _as_additive(key_padding_mask, like, False)
        if pad is not None:
            if pad.shape != (n, s):
                raise ValueError(f"MultiheadAttention: key_padding_mask of shape {tuple(pad.shape)}, expected {(n, s)}")
            pad = pad.reshape(n, 1, 1, s)
            mask = pad if mask is None else mask + pad
        return mask

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, batch_first={self.batch_first}"


def _activation_fn(activation):
    if callable(activation):
        return activation
    if activation == "relu":
        return F.relu
    if activation == "gelu":
        return F.gelu
    raise ValueError(f"activation must be 'relu', 'gelu' or a callable, got {activation!r}")


def _with_pos(x, pos):
    return x if pos is None else x + pos


class TransformerEncoderLayer(Module):
    """Self-attention and a feed-forward network, each with a residual connection and LayerNorm.

    post-norm (default, DETR / the original Transformer):
        x = norm1(x + dropout1(self_attn(x + pos, x + pos, x)))
        x = norm2(x + dropout2(linear2(dropout(act(linear1(x))))))
    pre-norm (``norm_first=True``): x = x + dropout1(self_attn(n + pos, n + pos, n)) with n = norm1(x),
    then x = x + dropout2(ffn(norm2(x))).
    forward(src, pos=None, src_mask=None, src_key_padding_mask=None); src: S x N x E (N x S x E with
    ``batch_first``); pos: broadcastable to src (e.g. S x 1 x E, or S x E with batch_first)."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=batch_first)
        self.linear1 = Linear(d_model, dim_feedforward)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.norm_first = norm_first
        self.activation = _activation_fn(activation)

    def _sa(self, x, pos, mask, pad):
        qk = _with_pos(x, pos)
        return self.dropout1(self.self_attn(qk, qk, x, key_padding_mask=pad, attn_mask=mask, need_weights=False)[0])

    def _ff(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, src, pos=None, src_mask=None, src_key_padding_mask=None):
        x = src
        if self.norm_first:
            x = x + self._sa(self.norm1(x), pos, src_mask, src_key_padding_mask)
            return x + self._ff(self.norm2(x))
        x = self.norm1(x + self._sa(x, pos, src_mask, src_key_padding_mask))
        return self.norm2(x + self._ff(x))


class TransformerDecoderLayer(Module):
    """Self-attention over the targets, cross-attention to the encoder output (memory) and a
    feed-forward network, each with a residual connection and LayerNorm.

    post-norm (default, DETR):
        t = norm1(t + dropout1(self_attn(t + query_pos, t + query_pos, t)))
        t = norm2(t + dropout2(multihead_attn(t + query_pos, memory + pos, memory)))
        t = norm3(t + dropout3(linear2(dropout(act(linear1(t))))))
    pre-norm (``norm_first=True``): each block reads norm_i(t) and adds its output to t.
    forward(tgt, memory, pos=None, query_pos=None, tgt_mask=None, memory_mask=None,
    tgt_key_padding_mask=None, memory_key_padding_mask=None): ``pos`` goes with the memory's keys,
    ``query_pos`` with the targets' queries (and keys, in self-attention)."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=batch_first)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=batch_first)
        self.linear1 = Linear(d_model, dim_feedforward)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)
        self.norm_first = norm_first
        self.activation = _activation_fn(activation)

    def _sa(self, t, query_pos, mask, pad):
        qk = _with_pos(t, query_pos)
        return self.dropout1(self.self_attn(qk, qk, t, key_padding_mask=pad, attn_mask=mask, need_weights=False)[0])

    def _ca(self, t, memory, pos, query_pos, mask, pad):
        out = self.multihead_attn(_with_pos(t, query_pos), _with_pos(memory, pos), memory,
                                  key_padding_mask=pad, attn_mask=mask, need_weights=False)[0]
        return self.dropout2(out)

    def _ff(self, t):
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(t)))))

    def forward(self, tgt, memory, pos=None, query_pos=None, tgt_mask=None, memory_mask=None,
                tgt_key_padding_mask=None, memory_key_padding_mask=None):
        t = tgt
        if self.norm_first:
            t = t + self._sa(self.norm1(t), query_pos, tgt_mask, tgt_key_padding_mask)
            t = t + self._ca(self.norm2(t), memory, pos, query_pos, memory_mask, memory_key_padding_mask)
            return t + self._ff(self.norm3(t))
        t = self.norm1(t + self._sa(t, query_pos, tgt_mask, tgt_key_padding_mask))
        t = self.norm2(t + self._ca(t, memory, pos, query_pos, memory_mask, memory_key_padding_mask))
        return self.norm3(t + self._ff(t))
