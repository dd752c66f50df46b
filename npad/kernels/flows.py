"""A fast unrecorded forward of a conditional coupling flow (``npad.flows``) for scoring with NumPy.

CFLOW scores every position of B feature maps: fibers x (B x n x C) whose condition c (n x P, the
positional encoding) is the same for the B images. The reference runs the flow on B n rows with the
condition copied to every row and the first subnet layer on [x1, c]. Here that layer is split,

    W [x1; c] + b = W_x x1 + (W_c c + b)

and W_c c + b, which does not depend on the image, is computed once per position and block. At
CFLOW's widths (C = 24, 40, 112 with P = 128) that removes 2/3 of the multiply-adds; for CFLOW's
positional encoding, [a part that depends on the column only, a part that depends on the row only],
W_c c + b itself is a row term plus a column term. The rows then run
through all blocks in chunks of ``CHUNK_ROWS`` that stay in cache (hidden layer and all), the chunks
split over npad's threads with one BLAS thread each when ``npad.tune_cpu()`` allows it. The block's
global affine and fixed rotation are one matrix: (x * scale + offset) R^T = x (diag(scale) R^T) + offset R^T.
"""
import numpy

from .._threads import blas_threads, cpu_tuned, parallel_over

CHUNK_ROWS = 1024       # rows per chunk: the 1024 x 2 (C/2 + P) float32 hidden layer is about 1 MiB


def condition_term(cond, wc, b):
    """q -> c W_c^T + b at the positions q (a slice; npos x H), c from cond as in ``CouplingFlow.forward``.
    For a grid pair it is rows[i] W_r^T + cols[j] W_c'^T + b, made per slice from an h x H and a w x H
    term: (h + w) P H multiply-adds instead of h w P H, and no n x H array."""
    if cond is None:                                                     # an unconditional flow: the bias alone
        return lambda q: b
    if not isinstance(cond, tuple):
        return (cond @ wc.T + b).__getitem__
    cols, rows = cond
    pc, width = cols.shape[1], len(cols)
    row_term, col_term = rows @ wc[:, pc:].T, cols @ wc[:, :pc].T + b        # h x H, w x H

    def term(q):
        i = numpy.arange(q.start, q.stop)
        return row_term[i // width] + col_term[i % width]
    return term


class CouplingFlow:
    """The forward of a SequenceFlow of ConditionalAffineCoupling blocks whose subnets are
    Linear - ReLU - Linear (``npad.flows.subnet_fc``), as plain arrays. ``for_flow(flow)`` gives
    None for any other flow."""

    @classmethod
    def for_flow(cls, flow):
        from ..flows import ConditionalAffineCoupling, SequenceFlow
        from ..nn import Linear, ReLU
        blocks = list(flow) if isinstance(flow, SequenceFlow) else []
        ok = bool(blocks) and all(
            type(b) is ConditionalAffineCoupling and len(b.subnet) == 3 and type(b.subnet[0]) is Linear
            and type(b.subnet[1]) is ReLU and type(b.subnet[2]) is Linear and b.subnet[0].bias is not None
            and b.subnet[2].bias is not None for b in blocks)
        return cls(blocks) if ok else None

    def __init__(self, blocks):
        self.blocks = blocks

    def _matrices(self, cond):
        """Per block: W_x^T (C1 x H), q -> c W_c^T + b (``condition_term``), the second layer times [prescale
        (/ clamp with the scaled soft clamp) for the s rows, prescale for the t rows] (2 C2 x H) and its bias
        (2 C2 x 1), (diag(scale) R^T)^T, (offset R^T)^T (C x 1), and sum log scale."""
        out = []
        for blk in self.blocks:
            lin1, lin2 = blk.subnet[0], blk.subnet[2]
            w1 = lin1.weight.data                                           # H x (C1 + P)
            scale = (0.1 * numpy.logaddexp(0, 0.5 * blk.global_scale.data) / 0.5).astype(w1.dtype)
            rot = blk.w_perm.data.T                                         # C x C
            scaled = getattr(blk, "soft_clamp", "scaled") == "scaled"    # clamp tanh(s / clamp), else clamp tanh(s)
            pre = numpy.repeat([blk.prescale / (blk.clamp if scaled else 1), blk.prescale], blk.c2)
            pre = pre.astype(w1.dtype)[:, None]
            out.append((blk, w1[:, :blk.c1].T, condition_term(cond, w1[:, blk.c1:], lin1.bias.data),
                        lin2.weight.data * pre, lin2.bias.data[:, None] * pre, (scale[:, None] * rot).T,
                        (blk.global_offset.data @ rot)[:, None], numpy.log(scale).sum()))
        return out

    def forward(self, x, cond):
        """(z, log_det) of the flow on x (B x n x C) with condition cond at every image: z B x n x C,
        log_det B x n, equal to ``flow(x.reshape(-1, C), cond repeated B times)``. cond is n x P, None (an
        unconditional flow), or for n positions of an h x w grid whose condition is [a column part, a row
        part] (as CFLOW's positional encoding) the pair (cols w x Pc, rows h x Pr): cond[i w + j] = [cols[j], rows[i]].

        Layout: the hidden layer h is rows x H (the condition term adds to it per position), the
        fibers y and the subnet output a are transposed, C x rows and 2 C2 x rows, so that the
        coupling's elementwise steps run over contiguous rows of C2 halves."""
        B, n, C = x.shape
        mats = self._matrices(cond)
        z = numpy.empty(x.shape, numpy.result_type(x, mats[0][1]))
        log_det = numpy.empty((B, n), z.dtype)
        step = max(CHUNK_ROWS // B, 1)                                      # positions per chunk
        chunks = [slice(q, min(q + step, n)) for q in range(0, n, step)]
        log_scales = sum(m[-1] for m in mats)

        def run(span):
            for q in chunks[span]:
                y = numpy.ascontiguousarray(x[:, q].reshape(-1, C).T, z.dtype)     # C x rows, rows = B x positions
                ld = numpy.full(y.shape[1], log_scales, z.dtype)
                for blk, wx, cw, w2, b2, rot, off, _ in mats:
                    c1, c2 = blk.c1, blk.c2
                    h = y[:c1].T @ wx                                       # rows x H
                    h3 = h.reshape(B, -1, h.shape[1])
                    h3 += cw(q)                                             # + the condition's term
                    numpy.clip(h, 0, numpy.inf, out=h)                     # ReLU (clip: vectorised, maximum is not)
                    a = w2 @ h.T                                            # 2 C2 x rows: prescale (/ clamp) folded in
                    a += b2
                    s = a[:c2]
                    numpy.tanh(s, out=s)
                    s *= blk.clamp                                          # s' = clamp tanh(prescale s [/ clamp])
                    ld += s.sum(0)
                    y[c1:] *= numpy.exp(s, out=s)
                    y[c1:] += a[c2:]                                        # x2 exp(s') + t
                    y = rot @ y                                             # ((y^T scale + offset) R^T)^T
                    y += off
                z[:, q] = y.T.reshape(B, -1, C)
                log_det[:, q] = ld.reshape(B, -1)

        if len(chunks) > 1 and cpu_tuned():
            with blas_threads(1) as limited:
                if limited:
                    parallel_over(len(chunks), run)
                    return z, log_det
        run(slice(0, len(chunks)))
        return z, log_det
