"""The one attention entry point of studio's models.

Transformer self- and cross-attention, the T5 encoder and the VAE mid-block all call `attention`. Masks
follow one convention: boolean, True = attend, broadcastable to (B, heads, Nq, Nk). How a call runs comes
from the memory budget in force (`memory.attention_budget`): whole when its scores fit; in query blocks
when not; and when one query block against all keys is still too big, in key blocks with an online
(running max and sum) softmax. All three compute the same function up to fp32 rounding.

Two layouts: "tokens-first" (B, H, N, D), and "channels-first" (B, H, D, N), which is what a projection
W @ xᵀ gives directly: the transformer and the VAE use it and never transpose heads (each head transpose
of a (2, 1024, 1152) activation took 10-19 ms on the CPU, as long as a third of a projection).
"""

import mindspore as ms
import numpy as np
from mindspore import ops

from studio import backend, memory

_MASKED = float(np.finfo(np.float32).min)  # finite, so a fully masked row gives uniform weights, not NaN
_TINY = float(np.finfo(np.float32).tiny)


def attention(q: ms.Tensor, k: ms.Tensor, v: ms.Tensor, mask: ms.Tensor | None = None,
              bias: ms.Tensor | None = None, scale: float | None = None, channels_first: bool = False) -> ms.Tensor:
    """softmax(q kᵀ * scale + bias, masked) v for q (B, H, Nq, D), k and v (B, H, Nk, D) -> (B, H, Nq, D);
    with channels_first, q (B, H, D, Nq), k and v (B, H, D, Nk) -> (B, H, D, Nq).

    mask: bool, True = attend; bias: additive float (e.g. T5's relative position bias), finite: mask with
    `mask`, or with `fold_mask`'s finite minimum (a -inf bias gives NaN rows when key-chunked, and MindSpore's
    CPU softmax mishandles rows of -inf; clamping it would cost T5 a pass per block); both broadcast to
    (B, H, Nq, Nk), lower ranks gaining leading 1-axes (numpy's rule).
    A row with no key to attend averages v uniformly. scale defaults to D ** -0.5.
    q kᵀ is formed in the inputs' dtype (fp16 logits beyond 65504 overflow), then cast to fp32 for the
    bias, the mask and the softmax statistics; the result has v's dtype.
    """
    if mask is not None and mask.ndim < 4:
        mask = mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape))  # e.g. (Nq, Nk) -> (1, 1, Nq, Nk)
    if bias is not None and bias.ndim < 4:
        bias = bias.reshape((1,) * (4 - bias.ndim) + tuple(bias.shape))
    layout = _ChannelsFirst if channels_first else _TokensFirst
    b, h = q.shape[:2]
    d, nq, nk = layout.dim(q), layout.tokens(q), layout.tokens(k)
    scale = d ** -0.5 if scale is None else scale
    if scale != 1.0:
        q = q * scale  # on nq x D values rather than on the nq x nk scores: one pass less over the largest tensor
    chunks = memory.attention_chunks(b * h, nq, nk, d, memory.current_attention_budget())
    blocks = []
    for i in range(0, nq, chunks.q):
        j = min(i + chunks.q, nq)
        qi, mask_i, bias_i = layout.take(q, i, j), _rows(mask, nq, i, j), _rows(bias, nq, i, j)
        if chunks.k < nk:
            blocks.append(_online_softmax_block(layout, qi, k, v, mask_i, bias_i, chunks.k))
        else:
            p = backend.softmax_fp32(_scores(layout, qi, k, mask_i, bias_i))
            blocks.append(layout.weighted_values(p if p.dtype == v.dtype else p.astype(v.dtype), v))
    return blocks[0] if len(blocks) == 1 else ops.cat(blocks, axis=layout.token_axis)


def fold_mask(bias: ms.Tensor, mask: ms.Tensor | None, shape: tuple[int, ...]) -> ms.Tensor:
    """The bias of shape (B, H, Nq, Nk) in fp32 with masked positions set to the fp32 minimum, for layers that
    share one bias and mask across calls (T5: every block): each call then adds one same-shape tensor instead
    of broadcasting a bias and filling a mask (17 of 64 ms per T5-XXL block at 2 x 300 tokens, a scratch
    measurement). Scores added to the minimum round back to it, so the result equals masking after the bias."""
    bias = backend.expand(bias.astype(ms.float32), shape)
    return bias if mask is None else ops.masked_fill(bias, ~backend.expand(mask, shape), _MASKED)


class _TokensFirst:
    """(B, H, N, D)."""
    token_axis = 2

    @staticmethod
    def dim(t):
        return t.shape[3]

    @staticmethod
    def tokens(t):
        return t.shape[2]

    @staticmethod
    def take(t, i, j):
        return t[:, :, i:j]

    @staticmethod
    def scores(q, k):
        return backend.bmm(q, k, transpose_b=True)  # (B, H, nq, nk)

    @staticmethod
    def weighted_values(p, v):
        return backend.bmm(p, v)  # (B, H, nq, D)

    @staticmethod
    def per_query(t):
        """(B, H, nq, 1) statistics shaped to scale an output block."""
        return t


class _ChannelsFirst:
    """(B, H, D, N)."""
    token_axis = 3

    @staticmethod
    def dim(t):
        return t.shape[2]

    @staticmethod
    def tokens(t):
        return t.shape[3]

    @staticmethod
    def take(t, i, j):
        return t[..., i:j]

    @staticmethod
    def scores(q, k):
        return backend.bmm(q, k, transpose_a=True)  # (B, H, nq, nk)

    @staticmethod
    def weighted_values(p, v):
        return backend.bmm(v, p, transpose_b=True)  # v pᵀ: (B, H, D, nq)

    @staticmethod
    def per_query(t):
        b, h, nq, _ = t.shape
        return t.reshape(b, h, 1, nq)  # a size-1 axis moves: a reshape, no copy


def _rows(t: ms.Tensor | None, nq: int, i: int, j: int) -> ms.Tensor | None:
    """Query rows i:j of a mask/bias that has them (its axis 2 has size Nq), else the broadcast tensor."""
    return t[:, :, i:j] if t is not None and t.shape[2] == nq and nq > 1 else t


def _cols(t: ms.Tensor | None, nk: int, a: int, b: int) -> ms.Tensor | None:
    return t[..., a:b] if t is not None and t.shape[-1] == nk and nk > 1 else t


def _scores(layout, q, k, mask, bias):
    """fp32 scores (B, H, nq, nk) of a block, bias added and masked positions set to the fp32 minimum.
    Casts happen only when the dtype differs."""
    s = layout.scores(q, k)
    if s.dtype != ms.float32:
        s = s.astype(ms.float32)
    if bias is not None:
        s = s + backend.expand(bias.astype(ms.float32), s.shape)
    if mask is not None:
        s = ops.masked_fill(s, ~backend.expand(mask, s.shape), _MASKED)
    return s


def _online_softmax_block(layout, q, k, v, mask, bias, k_chunk):
    """A query block against keys in blocks of k_chunk: running max m, running sum l, rescaled output."""
    nk = layout.tokens(k)
    m = l = acc = None
    for a in range(0, nk, k_chunk):
        b = min(a + k_chunk, nk)
        s = _scores(layout, q, layout.take(k, a, b), _cols(mask, nk, a, b), _cols(bias, nk, a, b))
        block_max = s.max(axis=-1, keepdims=True)  # (B, H, rows, 1)
        m_new = block_max if m is None else ops.maximum(m, block_max)
        p = ops.exp(s - backend.expand(m_new, s.shape))  # (B, H, rows, cols)
        p_sum = p.sum(axis=-1, keepdims=True)  # (B, H, rows, 1)
        if v.dtype == ms.float32:
            pv = layout.weighted_values(p, layout.take(v, a, b))
        else:  # weights summing to 1 in v's dtype: unnormalised, a block's sum of up to k_chunk values overflows fp16
            weights = p / backend.expand(ops.maximum(p_sum, _TINY), p.shape)  # a block far below the max: p = 0
            pv = layout.weighted_values(weights.astype(v.dtype), layout.take(v, a, b)).astype(ms.float32)
            pv = pv * backend.expand(layout.per_query(p_sum), pv.shape)
        if m is None:
            l, acc = p_sum, pv
        else:
            correction = ops.exp(m - m_new)  # (B, H, rows, 1)
            l = l * correction + p_sum
            acc = acc * backend.expand(layout.per_query(correction), acc.shape) + pv
        m = m_new
    return (acc / backend.expand(layout.per_query(l), acc.shape)).astype(v.dtype)
