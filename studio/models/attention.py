"""The one attention entry point of studio's models.

Transformer self- and cross-attention, the T5 encoder and the VAE mid-block all call `attention`.
Masks follow one convention: boolean, True = attend, broadcastable to (B, heads, Nq, Nk).
"""

import mindspore as ms
import numpy as np
from mindspore import ops

from studio import backend

_MASKED = float(np.finfo(np.float32).min)  # finite, so a fully masked row gives uniform weights, not NaN


def attention(q: ms.Tensor, k: ms.Tensor, v: ms.Tensor, mask: ms.Tensor | None = None,
              bias: ms.Tensor | None = None, scale: float | None = None) -> ms.Tensor:
    """softmax(q kᵀ * scale + bias, masked) v for q (B, H, Nq, D), k and v (B, H, Nk, D) -> (B, H, Nq, D).

    mask: bool, True = attend; bias: additive float (e.g. T5's relative position bias); both broadcast
    to (B, H, Nq, Nk). scale defaults to D ** -0.5. The softmax runs in fp32, then casts back to v's dtype.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = backend.bmm(q, k, transpose_b=True).astype(ms.float32)  # (B, H, Nq, Nk)
    if scale != 1.0:
        scores = scores * scale
    if bias is not None:
        scores = scores + bias.astype(ms.float32)
    if mask is not None:
        scores = ops.masked_fill(scores, ~mask, _MASKED)
    probs = backend.softmax_fp32(scores).astype(v.dtype)
    return backend.bmm(probs, v)  # (B, H, Nq, D)
