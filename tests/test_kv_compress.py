"""KV token compression: config-driven, weights loaded by name, same function as a float64 reference."""

import mindspore as ms
import numpy as np
import pytest
from safetensors.numpy import save_file

from studio.checkpoint import load_weights
from studio.errors import CheckpointError, ConfigError
from studio.models.transformer import Attention, PixArtTransformer2DModel, PixArtTransformerConfig
from studio.tiny import random_weights
from tests.util import rel_l2

CFG = dict(num_attention_heads=2, attention_head_dim=8, num_layers=3, cross_attention_dim=16, caption_channels=12,
           sample_size=8, kv_compress_layers=[1, 2], kv_compress_scale_factor=2)


def set_weights(cell, seed=0):
    weights = random_weights(cell, seed)
    params = dict(cell.parameters_and_names())
    for name, w in weights.items():
        params[name].set_data(ms.Tensor(w))
    return weights


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w + b


def test_compressed_self_attention_matches_reference():
    attn = Attention(16, 2, 8, None, True, ms.float32, kv_ratio=2)
    w = {k: v.astype(np.float64) for k, v in set_weights(attn).items()}
    gh, gw = 6, 10
    x = np.random.default_rng(0).standard_normal((2, gh * gw, 16))
    got = attn(ms.Tensor(x.astype(np.float32)), grid=(gh, gw)).asnumpy()

    def lin(t, name):
        return t @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    def compress(t):  # (B, N, C) -> depthwise 2x2 stride-2 conv, then LayerNorm
        b, _, c = t.shape
        g = t.reshape(b, gh // 2, 2, gw // 2, 2, c)  # (B, h/2, 2, w/2, 2, C)
        k = w["kv_compress.weight"].reshape(c, 2, 2)  # (C, 1, 2, 2) -> (C, 2, 2)
        pooled = np.einsum("bhiwjc,cij->bhwc", g, k) + w["kv_compress.bias"]
        return layer_norm(pooled.reshape(b, -1, c), w["kv_norm.weight"], w["kv_norm.bias"], 1e-5)

    def heads(t):
        return t.reshape(t.shape[0], t.shape[1], 2, 8).transpose(0, 2, 1, 3)

    q, k, v = heads(lin(x, "to_q")), heads(compress(lin(x, "to_k"))), heads(compress(lin(x, "to_v")))
    assert k.shape[2] == gh * gw // 4
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(8)
    p = np.exp(s - s.max(-1, keepdims=True))
    out = (p / p.sum(-1, keepdims=True)) @ v
    expected = lin(out.transpose(0, 2, 1, 3).reshape(2, gh * gw, 16), "to_out.0")
    assert rel_l2(got, expected) <= 1e-5


def test_compression_weights_load_by_name(tmp_path):
    model = PixArtTransformer2DModel(PixArtTransformerConfig.from_dict(CFG))
    names = [n for n, _ in model.parameters_and_names() if "kv_" in n]
    assert names == [f"transformer_blocks.{i}.attn1.{p}" for i in (1, 2)
                     for p in ("kv_compress.weight", "kv_compress.bias", "kv_norm.weight", "kv_norm.bias")]
    weights = random_weights(model, 1)
    save_file(weights, str(tmp_path / "w.safetensors"))
    load_weights(model, [tmp_path / "w.safetensors"])
    del weights["transformer_blocks.2.attn1.kv_norm.bias"]
    save_file(weights, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match="missing key 'transformer_blocks.2.attn1.kv_norm.bias'"):
        load_weights(model, [tmp_path / "w.safetensors"])
    out = model(ms.Tensor(np.ones((1, 4, 8, 12), np.float32)), ms.Tensor(np.array([5.0], np.float32)),
                model.encode_context(ms.Tensor(np.ones((1, 3, 12), np.float32))))
    assert out.shape == (1, 8, 8, 12) and np.isfinite(out.asnumpy()).all()


def test_published_configs_have_no_compression():
    assert PixArtTransformerConfig().kv_compress_layers == ()


@pytest.mark.parametrize("bad,match", [
    ({"kv_compress_layers": [5]}, "layers must be in"), ({"kv_compress_scale_factor": 1}, "factor at least 2"),
    ({"kv_compress_sampling": "uniform"}, "kv_compress_sampling")])
def test_bad_compression_config(bad, match):
    with pytest.raises(ConfigError, match=match):
        PixArtTransformerConfig.from_dict({**CFG, **bad})


@pytest.mark.parametrize("kv_ratio", [1, 2])
@pytest.mark.parametrize("mode", ["query-chunked", "key-chunked"])
def test_block_in_row_blocks_equals_whole(kv_ratio, mode):
    """Under a budget that chunks the self-attention's queries, the block runs in row blocks: same output."""
    from studio import memory
    from studio.models.transformer import PixArtBlock
    cfg = PixArtTransformerConfig.from_dict({**CFG, "num_layers": 1, "kv_compress_layers": []})
    block = PixArtBlock(cfg, ms.float32, kv_ratio)
    set_weights(block, 3)
    rng = np.random.default_rng(0)
    grid = (10, 14)  # 140 tokens: row blocks that don't divide it
    x = ms.Tensor(rng.standard_normal((2, 140, 16), dtype=np.float32))
    context = block.context_keys_values(ms.Tensor(rng.standard_normal((2, 5, 16), dtype=np.float32)))
    mask = ms.Tensor(np.arange(5)[None, None, None, :] < np.array([3, 5])[:, None, None, None])
    t6 = ms.Tensor(0.3 * rng.standard_normal((2, 96), dtype=np.float32))
    nk = 140 // kv_ratio ** 2
    budget = memory.attention_workspace(4, 100, nk, 8) if mode == "query-chunked" else 10_000  # 100 / 17 rows
    chunks = memory.attention_chunks(4, 140, nk, 8, budget)
    assert chunks.mode(140, nk) == mode and 140 % chunks.q
    whole = block(x, context, mask, t6, grid).asnumpy()
    with memory.attention_budget(budget):
        chunked = block(x, context, mask, t6, grid).asnumpy()
    assert rel_l2(chunked, whole) <= 1e-5


@pytest.mark.parametrize("layers,expected", [
    ([], [("self", 32, 4096, 4096)]),  # 1024 px: 64 x 64 tokens, CFG batch 2 x 16 heads
    ([0, 5], [("self", 32, 4096, 4096), ("self-kv", 32, 4096, 1024)]),
    (list(range(28)), [("self-kv", 32, 4096, 1024)]),  # every layer compressed: keys are 32 x 32
])
def test_memory_plan_counts_compressed_keys(layers, expected):
    from studio.memory_plan import plan_generation
    from studio.models.t5 import T5Config
    from studio.plan import SDXL_VAE
    tr = PixArtTransformerConfig(sample_size=128, kv_compress_layers=tuple(layers),
                                 kv_compress_scale_factor=2 if layers else 1)
    denoise = plan_generation(tr, T5Config(), SDXL_VAE, 1024, 1024, budget=None).phases[1]
    assert [a[:4] for a in denoise.attention if a[0] != "cross"] == expected
    plain = plan_generation(PixArtTransformerConfig(sample_size=128), T5Config(), SDXL_VAE, 1024, 1024).phases[1]
    assert (denoise.unchunked() < plain.unchunked()) == (len(layers) == 28)
