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


# -- a token grid smaller than the ratio: one error before any work, from every path -----------------------

def kv_checkpoint(tiny_dir, folder, ratio: int = 2):
    """The tiny pipeline with KV compression at `ratio` in both transformer layers (random conv and norm)."""
    import json
    import shutil

    from safetensors.numpy import load_file
    shutil.copytree(tiny_dir, folder)
    config_path = folder / "transformer" / "config.json"
    config = json.loads(config_path.read_text())
    config.update(kv_compress_layers=[0, 1], kv_compress_scale_factor=ratio)
    config_path.write_text(json.dumps(config))
    weights_path = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    weights, rng, d = load_file(str(weights_path)), np.random.default_rng(0), 32
    for i in (0, 1):
        weights[f"transformer_blocks.{i}.attn1.kv_compress.weight"] = (
            0.3 * rng.standard_normal((d, 1, ratio, ratio)) + 1 / ratio ** 2).astype(np.float32)
        weights[f"transformer_blocks.{i}.attn1.kv_compress.bias"] = np.zeros(d, np.float32)
        weights[f"transformer_blocks.{i}.attn1.kv_norm.weight"] = np.ones(d, np.float32)
        weights[f"transformer_blocks.{i}.attn1.kv_norm.bias"] = np.zeros(d, np.float32)
    save_file(weights, str(weights_path))
    return folder


def small_grid(ratio: int, width: int, height: int) -> str:
    side, tokens = 16 * ratio, f"{width // 16} x {height // 16}"
    return (f"KV compression at ratio {ratio} needs a token grid of at least {ratio} x {ratio} ({side} x {side} px); "
            f"size {width}x{height} px makes {tokens}: make each side at least {side} px")


@pytest.mark.parametrize("ratio,width,height,message", [
    (2, 16, 256, "KV compression at ratio 2 needs a token grid of at least 2 x 2 (32 x 32 px); size 16x256 px "
                 "makes 1 x 16: make each side at least 32 px"),
    (2, 512, 16, "KV compression at ratio 2 needs a token grid of at least 2 x 2 (32 x 32 px); size 512x16 px "
                 "makes 32 x 1: make each side at least 32 px"),
    (4, 1024, 48, "KV compression at ratio 4 needs a token grid of at least 4 x 4 (64 x 64 px); size 1024x48 px "
                  "makes 64 x 3: make each side at least 64 px"),
])
def test_a_grid_smaller_than_the_ratio_is_a_plan_error(ratio, width, height, message):
    """Before any budget check (the budget here is far too small as well): the size is what is wrong."""
    from studio.errors import PlanError
    from studio.memory_plan import plan_generation
    from studio.models.t5 import T5Config
    from studio.plan import SDXL_VAE
    tr = PixArtTransformerConfig(sample_size=128, kv_compress_layers=(3,), kv_compress_scale_factor=ratio)
    assert small_grid(ratio, width, height) == message
    with pytest.raises(PlanError) as e:
        plan_generation(tr, T5Config(), SDXL_VAE, height, width, budget=2 ** 20)
    assert str(e.value) == message and e.value.minimum is None
    # a grid of ratio x ratio tokens plans: one key
    denoise = plan_generation(tr, T5Config(), SDXL_VAE, 16 * ratio, 16 * ratio, budget=None).phases[1]
    assert [a[:4] for a in denoise.attention if a[0] != "cross"] == [("self", 32, ratio ** 2, ratio ** 2),
                                                                      ("self-kv", 32, ratio ** 2, 1)]


def test_every_path_reports_a_small_grid_before_any_work(tiny_dir, tmp_path, capsys):
    """`studio generate` (planned with --dry-run, and run), `studio plan`/`render` of a layout, and the pipeline
    called directly: the plan's one-line error, exit status 2, no image, no phase started."""
    from studio.cli import main
    from studio.errors import PlanError
    from studio.pipeline import PixArtSigmaPipeline
    folder = kv_checkpoint(tiny_dir, tmp_path / "kv")
    out = tmp_path / "cat.png"
    args = ["generate", "a cat", "--model", str(folder), "-o", str(out), "--size", "16x256", "--no-binning",
            "--steps", "2"]
    for extra in (["--dry-run"], []):
        assert main(args + extra) == 2
        assert capsys.readouterr().err == f"studio: error: {small_grid(2, 16, 256)}\n"
    assert not out.exists()

    layout = tmp_path / "strip.yaml"
    layout.write_text("canvas: {width: 512px, height: 256px}\nlayers:\n  - generate: {prompt: a strip, steps: 2, "
                      "strategy: direct, region: {x: 0px, y: 0px, w: 512px, h: 16px}}\n")
    (tmp_path / "out").mkdir()
    for command in (["plan", str(layout)], ["render", str(layout), "-o", str(tmp_path / "out")]):
        assert main(command + ["--model", str(folder)]) == 2
        assert capsys.readouterr().err == f"studio: error: {layout}:3: layers[0]: {small_grid(2, 512, 16)}\n"
    assert not any((tmp_path / "out").iterdir())

    pipe = PixArtSigmaPipeline.from_pretrained(folder)
    phases = []
    with pytest.raises(PlanError) as e:
        pipe("a cat", height=16, width=256, use_resolution_binning=False, num_inference_steps=2,
             progress=lambda phase, done, total: phases.append(phase))
    assert str(e.value) == small_grid(2, 256, 16) and phases == []
    # at the smallest size that works, it generates
    image = pipe("a cat", height=32, width=256, use_resolution_binning=False, num_inference_steps=2, seed=1,
                 output_type="np").images[0]
    assert image.shape == (32, 256, 3) and np.isfinite(image).all()


# -- the plan's relative cost counts the compressed keys ----------------------------------------------------

COST_TINY = dict(num_layers=2, num_attention_heads=2, attention_head_dim=16, caption_channels=32,
                 cross_attention_dim=32, sample_size=128)  # D = 32


@pytest.mark.parametrize("layers,ratio,w,h,steps,guidance,expected", [
    # a 1024x1024 generation of the same model is 1.0, compressed or not
    ((1,), 2, 1024, 1024, 20, True, 1.0),
    ((0, 1), 4, 1024, 1024, 10, False, 0.25),
    # per pass and layer, tokens N x (24 D^2 + 4 N_kv D); N_kv = N uncompressed, (h // r)(w // r) compressed;
    # one layer of two compressed at ratio 2: 2048x1024 is 128 x 64 tokens, 64 x 32 keys, against 64 x 64, 32 x 32
    ((1,), 2, 2048, 1024, 20, True,
     (2 * 8192 * 24 * 32 ** 2 + 4 * 8192 * 32 * (8192 + 2048)) /
     (2 * 4096 * 24 * 32 ** 2 + 4 * 4096 * 32 * (4096 + 1024))),
    # a grid the ratio doesn't divide: 1008x1040 is 63 x 65 tokens, 31 x 32 keys (the conv drops the remainder)
    ((1,), 2, 1008, 1040, 20, True,
     (2 * 4095 * 24 * 32 ** 2 + 4 * 4095 * 32 * (4095 + 992)) /
     (2 * 4096 * 24 * 32 ** 2 + 4 * 4096 * 32 * (4096 + 1024))),
    # every layer at ratio 4, 2048x2048 unguided, 30 steps: 128 x 128 tokens, 32 x 32 keys, against 16 x 16
    ((0, 1), 4, 2048, 2048, 30, False,
     30 * (2 * 16384 * 24 * 32 ** 2 + 4 * 16384 * 32 * 2 * 1024) /
     (20 * 2 * (2 * 4096 * 24 * 32 ** 2 + 4 * 4096 * 32 * 2 * 256))),
])
def test_relative_cost_counts_compressed_keys(layers, ratio, w, h, steps, guidance, expected):
    from studio.plan import relative_cost
    cfg = PixArtTransformerConfig(**COST_TINY, kv_compress_layers=layers, kv_compress_scale_factor=ratio)
    assert relative_cost(cfg, w, h, steps, guidance) == expected  # both a quotient of integers, rounded once


# -- the original repository's config keys -------------------------------------------------------------------

@pytest.mark.parametrize("extra,message", [
    ({"kv_compress_config": {"sampling": "conv", "scale_factor": 2, "kv_compress_layer": [1, 2]}},
     "t/config.json: 'kv_compress_config' is the original PixArt-sigma repository's name for studio's "
     "kv_compress_sampling, kv_compress_scale_factor and kv_compress_layers (its sampling, scale_factor and "
     "kv_compress_layer)"),
    ({"qk_norm": False},
     "t/config.json: 'qk_norm' is the original PixArt-sigma repository's key, and studio doesn't support "
     "query-key normalization (with qk_norm false, remove the key)"),
    # both at once, with a key nobody knows: the ones studio can say more about first, in file order, then it
    ({"qk_norm": True, "future_flag": 1, "kv_compress_config": {}},
     "t/config.json: 'qk_norm' is the original PixArt-sigma repository's key, and studio doesn't support "
     "query-key normalization (with qk_norm false, remove the key); 'kv_compress_config' is the original "
     "PixArt-sigma repository's name for studio's kv_compress_sampling, kv_compress_scale_factor and "
     "kv_compress_layers (its sampling, scale_factor and kv_compress_layer); unknown key 'future_flag': studio "
     "doesn't know it (a newer diffusers may have written it); if it holds its default value, remove it from the "
     "file, else this model needs what studio doesn't implement"),
])
def test_the_original_repositorys_keys_are_named_as_such(extra, message):
    config = {k: v for k, v in CFG.items() if not k.startswith("kv_")}
    with pytest.raises(ConfigError) as e:
        PixArtTransformerConfig.from_dict({**config, **extra}, "t/config.json")
    assert str(e.value) == message
