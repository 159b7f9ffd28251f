"""The one attention entry point of studio's models.

Transformer self- and cross-attention, the T5 encoder and the VAE mid-block all call `attention`. Masks
follow one convention: boolean, True = attend, broadcastable to (B, heads, Nq, Nk). How a call runs comes
from the memory budget in force (`memory.attention_budget`): whole when its scores fit; in query blocks
when not; and when one query block against all keys is still too big, in key blocks with an online
(running max and sum) softmax. All three compute the same function up to fp32 rounding.
"""

import mindspore as ms
import numpy as np
from mindspore import ops

from studio import backend, memory

_MASKED = float(np.finfo(np.float32).min)  # finite, so a fully masked row gives uniform weights, not NaN


def attention(q: ms.Tensor, k: ms.Tensor, v: ms.Tensor, mask: ms.Tensor | None = None,
              bias: ms.Tensor | None = None, scale: float | None = None) -> ms.Tensor:
    """softmax(q kᵀ * scale + bias, masked) v for q (B, H, Nq, D), k and v (B, H, Nk, D) -> (B, H, Nq, D).

    mask: bool, True = attend; bias: additive float (e.g. T5's relative position bias); both broadcast
    to (B, H, Nq, Nk). scale defaults to D ** -0.5. Softmax statistics are fp32; the result has v's dtype.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    b, h, nq, d = q.shape
    nk = k.shape[2]
    chunks = memory.attention_chunks(b * h, nq, nk, d, memory.current_attention_budget())
    if chunks.k < nk:
        blocks = [_online_softmax_block(q, k, v, mask, bias, scale, i, min(i + chunks.q, nq), chunks.k)
                  for i in range(0, nq, chunks.q)]
    else:
        blocks = [_block(q, k, v, mask, bias, scale, i, min(i + chunks.q, nq)) for i in range(0, nq, chunks.q)]
    return blocks[0] if len(blocks) == 1 else ops.cat(blocks, axis=2)


def _rows(t: ms.Tensor | None, nq: int, i: int, j: int) -> ms.Tensor | None:
    """Query rows i:j of a mask/bias that has them (its axis 2 has size Nq), else the broadcast tensor."""
    return t[:, :, i:j] if t is not None and t.shape[2] == nq and nq > 1 else t


def _cols(t: ms.Tensor | None, nk: int, a: int, b: int) -> ms.Tensor | None:
    return t[..., a:b] if t is not None and t.shape[-1] == nk and nk > 1 else t


def _scores(q, k, mask, bias, scale):
    """fp32 scores (B, H, nq, nk) of a block, bias added and masked positions set to the fp32 minimum.

    The scale is applied to q (nq x D values) rather than to the scores (nq x nk): one pass less over
    the largest tensor. Casts happen only when the dtype differs, for the same reason.
    """
    s = backend.bmm(q * scale if scale != 1.0 else q, k, transpose_b=True)  # (B, H, nq, nk)
    if s.dtype != ms.float32:
        s = s.astype(ms.float32)
    if bias is not None:
        s = s + bias.astype(ms.float32)
    if mask is not None:
        s = ops.masked_fill(s, ~mask, _MASKED)
    return s


def _block(q, k, v, mask, bias, scale, i, j):
    """Query rows i:j against all keys, plain softmax."""
    nq = q.shape[2]
    s = _scores(q[:, :, i:j], k, _rows(mask, nq, i, j), _rows(bias, nq, i, j), scale)
    p = backend.softmax_fp32(s)
    return backend.bmm(p if p.dtype == v.dtype else p.astype(v.dtype), v)  # (B, H, j-i, D)


def _online_softmax_block(q, k, v, mask, bias, scale, i, j, k_chunk):
    """Query rows i:j against keys in blocks of k_chunk: running max m, running sum l, rescaled output."""
    nq, nk = q.shape[2], k.shape[2]
    qi, mask_i, bias_i = q[:, :, i:j], _rows(mask, nq, i, j), _rows(bias, nq, i, j)
    m = l = acc = None
    for a in range(0, nk, k_chunk):
        b = min(a + k_chunk, nk)
        s = _scores(qi, k[:, :, a:b], _cols(mask_i, nk, a, b), _cols(bias_i, nk, a, b), scale)
        block_max = s.max(axis=-1, keepdims=True)  # (B, H, rows, 1)
        m_new = block_max if m is None else ops.maximum(m, block_max)
        p = ops.exp(s - m_new)  # (B, H, rows, cols)
        pv = backend.bmm(p if p.dtype == v.dtype else p.astype(v.dtype), v[:, :, a:b])  # (B, H, rows, D)
        pv = pv if pv.dtype == ms.float32 else pv.astype(ms.float32)
        if m is None:
            l, acc = p.sum(axis=-1, keepdims=True), pv
        else:
            correction = ops.exp(m - m_new)
            l = l * correction + p.sum(axis=-1, keepdims=True)
            acc = acc * correction + pv
        m = m_new
    return (acc / l).astype(v.dtype)
