"""Chunked attention equals whole attention: query blocks, key blocks with online softmax, masks, biases."""

import mindspore as ms
import numpy as np
import pytest

from studio import memory
from studio.models.attention import attention
from tests.util import rel_l2


def inputs(b, h, nq, nk, d, seed=0):
    rng = np.random.default_rng(seed)
    return [ms.Tensor(rng.standard_normal(s).astype(np.float32) * 2) for s in
            [(b, h, nq, d), (b, h, nk, d), (b, h, nk, d)]]


def reference(q, k, v, mask=None, bias=None, scale=None):
    """float64 numpy attention; a row with no key to attend averages v uniformly (attention's convention)."""
    q, k, v = (t.asnumpy().astype(np.float64) for t in (q, k, v))
    s = q @ k.swapaxes(-1, -2) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if bias is not None:
        s = s + bias.asnumpy()
    if mask is not None:
        attend = np.broadcast_to(mask.asnumpy(), s.shape)
        s = np.where(attend.any(-1, keepdims=True), np.where(attend, s, -np.inf), 0.0)
    s = np.exp(s - s.max(-1, keepdims=True))
    return (s / s.sum(-1, keepdims=True)) @ v


def budget_for(chunks_wanted, b, h, nq, nk, d):
    """A budget whose plan is the given mode; checked through the planner itself."""
    if chunks_wanted == "query-chunked":
        return memory.attention_workspace(b * h, max(memory.MIN_Q_ROWS, nq // 3 + 1), nk, d)
    return memory.attention_workspace(b * h, min(memory.KEY_CHUNK_Q_ROWS, nq), 7, d)


@pytest.mark.parametrize("mode", ["whole", "query-chunked", "key-chunked"])
@pytest.mark.parametrize("b,h,nq,nk,d", [(2, 3, 101, 101, 8), (2, 2, 130, 67, 16), (1, 1, 300, 257, 4)])
def test_chunked_equals_whole(mode, b, h, nq, nk, d):
    q, k, v = inputs(b, h, nq, nk, d)
    rng = np.random.default_rng(1)
    mask = rng.random((b, 1, 1, nk)) < 0.7
    mask[:, ..., 0] = True
    mask = ms.Tensor(mask)
    whole = attention(q, k, v, mask=mask).asnumpy()
    budget = None if mode == "whole" else budget_for(mode, b, h, nq, nk, d)
    chunks = memory.attention_chunks(b * h, nq, nk, d, budget)
    assert chunks.mode(nq, nk) == mode
    with memory.attention_budget(budget):
        got = attention(q, k, v, mask=mask).asnumpy()
    assert rel_l2(got, whole) <= 1e-5
    assert rel_l2(got, reference(q, k, v, mask)) <= 1e-5


@pytest.mark.parametrize("rows,cols,mode", [(None, None, "whole"), (5, 37, "query-chunked"),
                                             (1, 37, "query-chunked"), (1, 4, "key-chunked")])
def test_bias_and_full_mask_rows(rows, cols, mode):
    """T5-style additive bias over (1, H, Nq, Nk) and a per-query mask (B, 1, Nq, Nk) with a fully masked row,
    which averages v uniformly, as the other paths do (`_MASKED` is finite: no NaN)."""
    b, h, nq, nk, d = 2, 2, 37, 37, 8
    q, k, v = inputs(b, h, nq, nk, d, seed=3)
    rng = np.random.default_rng(4)
    bias = ms.Tensor(rng.standard_normal((1, h, nq, nk)).astype(np.float32))
    mask_np = np.tril(np.ones((nq, nk), bool))[None, None].repeat(b, 0)
    mask_np[0, 0, 6] = False  # sample 0, query 6: no key
    mask = ms.Tensor(mask_np)
    budget = None if rows is None else memory.attention_workspace(b * h, rows, cols, d)
    assert memory.attention_chunks(b * h, nq, nk, d, budget).mode(nq, nk) == mode
    with memory.attention_budget(budget):
        got = attention(q, k, v, mask=mask, bias=bias, scale=1.0).asnumpy()
    assert rel_l2(got, reference(q, k, v, mask, bias, scale=1.0)) <= 1e-5
    assert np.abs(got[0, :, 6] - v.asnumpy()[0].mean(axis=1)).max() <= 1e-6


@pytest.mark.parametrize("mode", ["whole", "query-chunked", "key-chunked"])
@pytest.mark.parametrize("channels_first", [False, True])
def test_lower_rank_masks_and_biases_broadcast(mode, channels_first):
    """(Nk,), (Nq, Nk) and (1, Nq, Nk) masks and biases give leading 1-axes, as numpy broadcasts them."""
    b, h, nq, nk, d = 2, 2, 9, 12, 4
    q, k, v = inputs(b, h, nq, nk, d, seed=9)
    if channels_first:
        q, k, v = (t.swapaxes(2, 3) for t in (q, k, v))  # (B, H, D, N)
    rng = np.random.default_rng(10)
    mask_np, bias_np = rng.random((nq, nk)) < 0.7, rng.standard_normal((nq, nk)).astype(np.float32)
    budget = {"whole": None, "query-chunked": memory.attention_workspace(b * h, 2, nk, d),
              "key-chunked": memory.attention_workspace(b * h, 1, 4, d)}[mode]
    assert memory.attention_chunks(b * h, nq, nk, d, budget).mode(nq, nk) == mode
    with memory.attention_budget(budget):
        def run(mask, bias):
            return attention(q, k, v, mask=ms.Tensor(mask), bias=ms.Tensor(bias),
                             channels_first=channels_first).asnumpy()
        four_d = run(mask_np[None, None], bias_np[None, None])
        assert np.array_equal(run(mask_np, bias_np), four_d)
        assert np.array_equal(run(mask_np[None], bias_np[None]), four_d)
        assert np.array_equal(run(mask_np[-1], bias_np[-1]), run(mask_np[None, None, -1:], bias_np[None, None, -1:]))


def test_key_chunks_that_do_not_divide():
    b, h, nq, nk, d = 1, 2, 300, 4000, 8
    q, k, v = inputs(b, h, nq, nk, d, seed=5)
    budget = memory.attention_workspace(b * h, memory.KEY_CHUNK_Q_ROWS, 333, d)
    chunks = memory.attention_chunks(b * h, nq, nk, d, budget)
    assert chunks == memory.AttentionChunks(256, 333)
    with memory.attention_budget(budget):
        got = attention(q, k, v).asnumpy()
    assert rel_l2(got, reference(q, k, v)) <= 1e-5


@pytest.mark.parametrize("channels_first", [False, True])
def test_fp16_key_chunks_do_not_overflow_where_the_whole_attention_does_not(channels_first):
    """Diffuse attention over values ~40 in fp16: a key block's unnormalised weighted sum (up to 2000 x 40) passed
    65504 and gave inf; each block's weights now sum to 1 in fp16 and are rescaled in fp32."""
    rng = np.random.default_rng(0)
    nq, nk, d = 256, 16384, 16
    q, k, v = (rng.standard_normal((1, 1, n, d)) * scale + shift for n, scale, shift in
               [(nq, 0.1, 0), (nk, 1, 0), (nk, 1, 40)])
    if channels_first:
        q, k, v = (t.swapaxes(2, 3) for t in (q, k, v))
    q, k, v = (ms.Tensor(t.astype(np.float16)) for t in (q, k, v))
    budget = memory.attention_workspace(1, 256, 2000, d)
    assert memory.attention_chunks(1, nq, nk, d, budget) == memory.AttentionChunks(256, 2000)
    whole = attention(q, k, v, channels_first=channels_first).asnumpy().astype(np.float32)
    with memory.attention_budget(budget):
        got = attention(q, k, v, channels_first=channels_first).asnumpy().astype(np.float32)
    assert np.isfinite(whole).all() and np.isfinite(got).all()
    assert np.abs(got - whole).max() <= 0.0625  # two fp16 steps at 40


def test_transformer_block_under_a_small_budget_equals_unbounded():
    """Query/key-chunked attention and row-blocked MLP inside a whole PixArt block."""
    from studio.models.transformer import PixArtBlock, PixArtTransformerConfig
    from studio.tiny import random_weights

    cfg = PixArtTransformerConfig(num_attention_heads=2, attention_head_dim=8, num_layers=1, cross_attention_dim=16)
    block = PixArtBlock(cfg, ms.float32)
    params = dict(block.parameters_and_names())
    for name, w in random_weights(block, 3).items():
        params[name].set_data(ms.Tensor(w))
    rng = np.random.default_rng(6)
    x = ms.Tensor(rng.standard_normal((2, 90, 16)).astype(np.float32))  # a 9 x 10 token grid
    kv = block.context_keys_values(ms.Tensor(rng.standard_normal((2, 7, 16)).astype(np.float32)))
    mask = ms.Tensor(np.array([[True] * 7, [True] * 3 + [False] * 4]).reshape(2, 1, 1, 7))
    t6 = ms.Tensor(rng.standard_normal((2, 96)).astype(np.float32) * 0.2)
    whole = block(x, kv, mask, t6, (9, 10)).asnumpy()
    budget = 2 * 64 * memory.MLP_BYTES_PER_HIDDEN * 10  # ~51 KB: MLP in blocks of 10 rows, attention in blocks
    assert memory.mlp_rows(90, 2 * 64, budget) == 10
    assert memory.attention_chunks(2 * 2, 90, 90, 8, budget).mode(90, 90) == "key-chunked"
    with memory.attention_budget(budget):
        got = block(x, kv, mask, t6, (9, 10)).asnumpy()
    assert rel_l2(got, whole) <= 1e-5
