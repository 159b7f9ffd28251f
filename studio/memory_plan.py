"""Model configs + size + budget -> the peak bytes of each generation phase and the chunks it will use.

Pure data: nothing here touches a tensor or a weight file, so `studio generate --dry-run` and the layout
planner call it before loading anything. Parameter counts are exact (tested against the models);
activation sizes are estimates of the largest set of tensors alive at once (see README for how they
compare with measured peaks). The attention workspace is whatever the budget leaves after weights and
activations, and the chunk sizes follow from it through `memory.attention_chunks`.
"""

from dataclasses import dataclass, replace

from studio import binning
from studio.memory import MAX_TENSOR, AttentionChunks, attention_chunks, attention_workspace, format_bytes
from studio.errors import PlanError
from studio.models.t5 import T5Config
from studio.models.transformer import TIMESTEP_CHANNELS, PixArtTransformerConfig
from studio.models.vae import AutoencoderKLConfig
from studio.vae_tiling import (DEFAULT_TILE, MIN_TILE, TilePlan, largest_decode_tensor, map_disk_bytes,
                                plan_tiles, tiled_activations, vae_decode_activations)

MAX_TOKENS = 300
# The smallest attention block the planner accepts: below it, chunking costs more in launches than it
# saves (64 query rows x 1024 keys).
MIN_BLOCK_Q, MIN_BLOCK_K = 64, 1024
# ... and at least 1/64 of each side, so that at the planner's minimum one attention call runs in about
# 64 x 64 blocks (at most 5,120 with rounding): each block costs launches (the 4K decode's mid-block
# attention in 1 MiB took ~267k blocks, ~80 minutes) and, in MindSpore 2.8, ~7 KiB of RSS that is never
# given back (README, Memory). From about 9,700^2 px (XL's self-attention with guidance) such a block's
# scores would exceed MAX_TENSOR: every budget then runs the capped blocks `attention_chunks` picks, as few
# as that limit allows but more than 5,120 (`smallest_workspace`).
MAX_BLOCKS_SIDE = 64


def smallest_block(nq: int, nk: int) -> tuple[int, int]:
    """The smallest (query, key) block the planner accepts for an nq x nk attention."""
    return (min(nq, max(MIN_BLOCK_Q, -(-nq // MAX_BLOCKS_SIDE))),
            min(nk, max(MIN_BLOCK_K, -(-nk // MAX_BLOCKS_SIDE))))


def smallest_workspace(bh: int, nq: int, nk: int, head_dim: int) -> int:
    """The least workspace the planner gives one attention: that of the blocks `attention_chunks` picks in a
    `smallest_block`'s workspace. Those are the blocks it picks again in this much, and they are smaller
    than the smallest block only where its scores would exceed MAX_TENSOR (no budget runs larger ones)."""
    c = attention_chunks(bh, nq, nk, head_dim, attention_workspace(bh, *smallest_block(nq, nk), head_dim))
    return attention_workspace(bh, c.q, c.k, head_dim)


# -- exact parameter counts -------------------------------------------------------------------------------

def _linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + c_out


def transformer_params(cfg: PixArtTransformerConfig) -> int:
    d, p, x = cfg.inner_dim, cfg.patch_size, cfg.cross_attention_dim
    bias = cfg.attention_bias
    n = cfg.in_channels * p * p * d + d  # patch embedding
    n += _linear(TIMESTEP_CHANNELS, d) + _linear(d, d) + _linear(d, 6 * d)  # adaLN-single
    if cfg.with_size_conditions:
        n += 2 * (_linear(TIMESTEP_CHANNELS, d // 3) + _linear(d // 3, d // 3))
    if cfg.caption_channels:
        n += _linear(cfg.caption_channels, d) + _linear(d, d)
    block = 3 * _linear(d, d, bias) + _linear(d, d)  # self-attention
    block += _linear(d, d, bias) + 2 * _linear(x, d, bias) + _linear(d, d)  # cross-attention
    block += _linear(d, 4 * d) + _linear(4 * d, d) + 6 * d  # MLP, modulation table
    block += 4 * d if cfg.norm_elementwise_affine else 0
    return n + cfg.num_layers * block + 2 * d + _linear(d, p * p * cfg.output_channels)


def _t5_block(cfg: T5Config) -> int:
    inner = cfg.num_heads * cfg.d_kv
    return 4 * cfg.d_model * inner + (3 if cfg.is_gated_act else 2) * cfg.d_model * cfg.d_ff + 2 * cfg.d_model


def t5_params(cfg: T5Config) -> int:
    return (cfg.vocab_size * cfg.d_model + cfg.num_layers * _t5_block(cfg)
            + cfg.relative_attention_num_buckets * cfg.num_heads + cfg.d_model)


def t5_streamed_params(cfg: T5Config) -> int:
    """What the streamed encoder (`StreamedT5Encoder`) holds at once: two blocks (one running, the next
    being copied in with its read buffer), the bias table, the final norm."""
    return 2 * _t5_block(cfg) + cfg.relative_attention_num_buckets * cfg.num_heads + cfg.d_model


def t5_bytes(cfg: T5Config, itemsize: int, streamed: bool = False) -> int:
    """Bytes of the T5 weights held at once, whole (`t5_params`) or streamed (`t5_streamed_params`), in a
    model of `itemsize`-byte parameters: each block's feed-forward output `wo` (d_ff x d_model, no bias) stays
    fp32 in every dtype (`T5DenseReluDense`), 4 bytes a parameter. T5-XXL in fp16: 10.75 GiB, not 8.87."""
    params, blocks = (t5_streamed_params(cfg), 2) if streamed else (t5_params(cfg), cfg.num_layers)
    wo = blocks * cfg.d_ff * cfg.d_model
    return itemsize * (params - wo) + 4 * wo


def _resnet(c_in: int, c_out: int) -> int:
    n = 2 * c_in + _conv(c_in, c_out, 3) + 2 * c_out + _conv(c_out, c_out, 3)
    return n + (_conv(c_in, c_out, 1) if c_in != c_out else 0)


def _mid(c: int, attention: bool) -> int:
    return 2 * _resnet(c, c) + ((2 * c + 4 * _linear(c, c)) if attention else 0)


def vae_params(cfg: AutoencoderKLConfig) -> int:
    ch, lat, n_layers = cfg.block_out_channels, cfg.latent_channels, cfg.layers_per_block
    enc = _conv(cfg.in_channels, ch[0], 3)
    for i, c in enumerate(ch):
        c_in = ch[max(i - 1, 0)]
        enc += _resnet(c_in, c) + (n_layers - 1) * _resnet(c, c) + (_conv(c, c, 3) if i < len(ch) - 1 else 0)
    enc += _mid(ch[-1], cfg.mid_block_add_attention) + 2 * ch[-1] + _conv(ch[-1], 2 * lat, 3)
    rev = tuple(reversed(ch))
    dec = _conv(lat, rev[0], 3) + _mid(rev[0], cfg.mid_block_add_attention)
    for i, c in enumerate(rev):
        c_in = rev[max(i - 1, 0)]
        dec += _resnet(c_in, c) + n_layers * _resnet(c, c) + (_conv(c, c, 3) if i < len(rev) - 1 else 0)
    dec += 2 * rev[-1] + _conv(rev[-1], cfg.out_channels, 3)
    quant = (_conv(2 * lat, 2 * lat, 1) if cfg.use_quant_conv else 0) + (
        _conv(lat, lat, 1) if cfg.use_post_quant_conv else 0)
    return enc + dec + quant


def vae_itemsize(vae: AutoencoderKLConfig, itemsize: int) -> int:
    """Bytes per weight and feature-map element of the VAE in a pipeline of `itemsize`: 4 when its config says
    force_upcast (it then runs in fp32, as the pipeline loads it)."""
    return 4 if vae.force_upcast else itemsize


# -- activation estimates ---------------------------------------------------------------------------------

def t5_activations(cfg: T5Config, batch: int, itemsize: int) -> int:
    """Hidden states, their norm, q/k/v/out and the gated MLP's temporaries, for `batch` x 300 tokens."""
    return itemsize * batch * MAX_TOKENS * (8 * cfg.d_model + 5 * cfg.d_ff)


def transformer_activations(cfg: PixArtTransformerConfig, batch: int, tokens: int, itemsize: int) -> int:
    """Ten full-size tensors: a block's five when its self-attention is chunked (x, its norm, keys, values,
    the output; the rest of the block runs in the same row blocks inside the workspace budget, MLP
    included) and the sampler's latents, noise predictions and guidance, with margin; plus every block's
    caption keys and values."""
    d = cfg.inner_dim
    return itemsize * (batch * tokens * 10 * d + 2 * cfg.num_layers * batch * MAX_TOKENS * d)


def measured(decode_estimate: int) -> int:
    """A tiled VAE decode's activation estimate scaled by what we measured above it (MindSpore's memory pool
    and GroupNorm temporaries); see UNTILED_DECODE_EXTRA for the untiled decode."""
    return decode_estimate * DECODE_MEASURED_RATIO // 10


DECODE_MEASURED_RATIO = 17  # tenths
# An untiled decode's estimate (`vae_decode_activations`) is above what the decode itself grows a fresh process
# by (peak RSS less RSS before it, fp32 on the CPU, the tiny and SDXL VAEs from 256^2 to 3840x2160: 0.68-0.91
# of it), but for a fixed start-up cost, 15 MiB at 256^2. The 1.7 that tiles keep overcounted it ~2x: a
# 2048^2 decode that runs in 1 GiB was refused below 1.5 GiB, and tiled between.
UNTILED_DECODE_EXTRA = 16 * 2 ** 20


# -- the plan ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Phase:
    name: str
    weights: int  # bytes of weights resident in this phase
    activations: int  # bytes of activations besides attention scores
    # (what, batch*heads, Nq, Nk, head_dim); a "cross" runs in the row blocks of the self-attention before it
    attention: tuple[tuple[str, int, int, int, int], ...]
    workspace: int | None  # bytes the budget leaves for attention scores; None: no budget, attention whole
    chunks: tuple[AttentionChunks, ...]
    tiles: TilePlan | None = None  # decode: the VAE tile grid, or None for one untiled decode
    streamed: bool = False  # text: the T5 encoder runs block by block from its files (StreamedT5Encoder)
    # bytes of the resize to the output size after decoding (`binning.resize_bytes`), left free in every phase:
    # its numpy arrays come on top of MindSpore's pool, which keeps the high-water mark of every phase before
    resize: int = 0

    @property
    def peak(self) -> int:
        return self.weights + self.activations + self.resize + max(
            (attention_workspace(bh, c.q, c.k, d) for (_, bh, _, _, d), c in zip(self.attention, self.chunks)),
            default=0)

    def unchunked(self) -> int:
        """Bytes this phase would need with every attention whole."""
        return self.weights + self.activations + self.resize + max(
            (attention_workspace(bh, nq, nk, d) for _, bh, nq, nk, d in self.attention), default=0)

    def chunking(self) -> str:
        """How the phase runs: each attention's mode and blocks, and the VAE's tiles, e.g.
        'self: query-chunked q=994 k=32400; cross: query-chunked q=994 k<=300'."""
        return "; ".join([f"{what}: {c.mode(nq, nk)} q={c.q} k{'<=' if what == 'cross' else '='}{c.k}"
                          for (what, _, nq, nk, _), c in zip(self.attention, self.chunks)]
                         + ([f"vae: {self.tiles.describe()}"] if self.tiles is not None else [])
                         + (["t5: block by block from its files"] if self.streamed else []))

    def minimum(self) -> int:
        """The smallest budget the planner accepts for this phase: every attention gets its
        `smallest_workspace`."""
        return self.weights + self.activations + self.resize + max(
            (smallest_workspace(bh, nq, nk, d) for _, bh, nq, nk, d in self.attention), default=0)


@dataclass(frozen=True)
class GenerationPlan:
    height: int  # generation size in px (after binning)
    width: int
    images: int
    budget: int | None
    phases: tuple[Phase, ...]
    minimum: int  # bytes: the smallest budget this generation plans in; every larger one plans too
    output: tuple[int, int] | None = None  # (height, width) px the images are resized to after decoding

    @property
    def peak(self) -> int:
        return max(p.peak for p in self.phases)

    def describe(self) -> str:
        budget = "unbounded" if self.budget is None else format_bytes(self.budget)
        output = "" if self.output is None else \
            f", output {self.output[1]}x{self.output[0]} px (resized after decoding)"
        resize = self.output is not None  # then a column for the resize's bytes, which every phase leaves free
        lines = [f"generation {self.width}x{self.height} px{output}, {self.images} image(s), memory budget {budget}",
                 f"{'phase':<12}{'weights':>12}{'activations':>14}" + (f"{'resize':>12}" if resize else "")
                 + f"{'attention':>12}{'peak':>12}  chunks"]
        for p in self.phases:
            lines.append(f"{p.name:<12}{format_bytes(p.weights):>12}{format_bytes(p.activations):>14}"
                         + (f"{format_bytes(p.resize):>12}" if resize else "")
                         + f"{format_bytes(p.peak - p.weights - p.activations - p.resize):>12}"
                         f"{format_bytes(p.peak):>12}  {p.chunking()}")
        lines.append(f"peak {format_bytes(self.peak)} (unchunked it would be "
                     f"{format_bytes(max(p.unchunked() for p in self.phases))})")
        return "\n".join(lines)


def plan_generation(transformer: PixArtTransformerConfig, t5: T5Config, vae: AutoencoderKLConfig, height: int,
                    width: int, images: int = 1, budget: int | None = None, guidance: bool = True,
                    itemsize: int = 4, keep_text_encoder: bool = False,
                    vae_tiling: bool | None = None, stream_text_encoder: bool = True,
                    max_tensor: int | None = MAX_TENSOR, output: tuple[int, int] | None = None,
                    output_type: str = "pil") -> GenerationPlan:
    """Peak bytes and attention chunks of text encoding, denoising and VAE decoding at height x width px.

    output: (height, width) px the decoded images are resized to (resolution binning); None, the generation
    size, or output_type 'latent' (which decodes nothing) for none. The resize's arrays for `output_type`
    (`binning.resize_bytes`) are numpy's, made after decoding on top of what MindSpore's pool kept from every
    phase, so every phase leaves them free.
    vae_tiling: None decodes in tiles only when one untiled decode would exceed the budget or make a feature
    map above `max_tensor`, True always (cores of at most DEFAULT_TILE latent px), False never.
    max_tensor: bytes of the largest single tensor the device allocates, MAX_TENSOR (the CPU allocator's
    limit) by default; None: no limit beside the budget (GPU/Ascend; `memory.tensor_cap` says which). It
    bounds the VAE's feature maps; attention blocks keep MAX_TENSOR on every device (`attention_chunks`).
    stream_text_encoder: T5 runs block by block from its files (StreamedT5Encoder), unless False or
    keep_text_encoder (which holds it whole). An encoder loaded for one call and released takes longer
    than streaming it (benchmarks/t5_streaming.py, T5-XXL: 30 s loaded whole from disk and run, 22 s
    streamed from disk, 11.6 s with the files cached), so only one kept across calls is loaded whole. Raises
    PlanError when `budget` is below the smallest budget that works (`GenerationPlan.minimum`, the error's
    `minimum`), naming it and the phase that needs it.
    """
    batch = images * (2 if guidance else 1)
    w_t5, w_tr = t5_bytes(t5, itemsize), itemsize * transformer_params(transformer)
    w_vae = vae_itemsize(vae, itemsize) * vae_params(vae)
    f = vae.downsample_factor
    grid_h, grid_w = height // f // transformer.patch_size, width // f // transformer.patch_size
    tokens = grid_h * grid_w
    heads, head_dim = transformer.num_attention_heads, transformer.attention_head_dim
    latent_tokens = (height // f) * (width // f)
    mid_c = vae.block_out_channels[-1]
    w_decode = w_tr + w_vae + (w_t5 if keep_text_encoder else 0)
    mid_attention = [("vae-mid", 1, latent_tokens, latent_tokens, mid_c)] if vae.mid_block_add_attention else []
    untiled = vae_decode_activations(vae, height, width) + UNTILED_DECODE_EXTRA
    outputs = images * vae.out_channels * height * width * 4  # pipeline.decode's (N, 3, H, W) float32 array
    output = None if output in (None, (height, width)) or output_type == "latent" else tuple(output)
    resize = 0 if output is None else binning.resize_bytes(images, vae.out_channels, height, width, *output,
                                                            output_type)
    t5_attention = [("self", batch * t5.num_heads, MAX_TOKENS, MAX_TOKENS, t5.d_kv)]
    whole_text = ("text", w_t5 + w_tr + w_vae, t5_activations(t5, batch, itemsize), t5_attention)
    streamed_text = ("text", t5_bytes(t5, itemsize, streamed=True) + w_tr + w_vae, *whole_text[2:])
    streamed = stream_text_encoder and not keep_text_encoder
    specs = [
        streamed_text if streamed else whole_text,
        ("denoise", w_tr + w_vae + (w_t5 if keep_text_encoder else 0),
         transformer_activations(transformer, batch, tokens, itemsize),
         [a for self_attention in _self_attention(transformer, batch, height, width, f * transformer.patch_size)
          for a in (self_attention, ("cross", batch * heads, tokens, MAX_TOKENS, head_dim))]),
    ]
    untiled_decode = Phase("decode", w_decode, outputs + untiled, tuple(mid_attention), 0, (), resize=resize)
    decodes = output_type != "latent"  # latents are returned before any decode: it needs nothing then
    # whether an untiled decode's largest feature map, in the VAE's dtype, is one the device allocates
    allocates = decodes and _untiled_allowed(vae, height, width, vae_tiling, vae_itemsize(vae, itemsize), max_tensor)
    tiles = _vae_tiles(vae, height, width, budget, vae_tiling, allocates, untiled_decode, outputs,
                       _pool_high_water(specs, budget, resize)) if decodes else None
    # what each phase needs at the least, the decode in its cheapest way (`_least_decode`): at every budget
    # from the largest of them up, `_vae_tiles` picks a way that fits
    least = [Phase(name, weights, acts, tuple(attn), 0, (), resize=resize) for name, weights, acts, attn in specs]
    if decodes:
        least.append(_least_decode(vae, height, width, vae_tiling, allocates, untiled_decode, outputs))
    needs = max(least, key=Phase.minimum)  # the phase that sets the smallest budget (the first of equals)
    minimum = needs.minimum()
    if budget is not None and budget < minimum:
        resized = "" if output is None else f" + the resize to {output[1]}x{output[0]} {format_bytes(resize)}"
        hint = ""
        if vae_tiling is False and needs.name == "decode":  # tiling turned off: say what tiles would need
            tiled = _least_decode(vae, height, width, None, allocates, untiled_decode, outputs)
            if (in_tiles := max([*least[:-1], tiled], key=Phase.minimum).minimum()) < minimum:
                hint = (f"; with tiled decoding (vae_tiling None or True; the CLI's --vae-tiling auto or on) it is "
                        f"{format_bytes(in_tiles, up=True)}")
        raise PlanError(f"memory budget {format_bytes(budget)} is too small for {width}x{height}: the {needs.name} "
                        f"phase needs the most (weights {format_bytes(needs.weights)} + activations "
                        f"{format_bytes(needs.activations)}{resized} + attention); the smallest budget that works "
                        f"is {format_bytes(minimum, up=True)}{hint}",
                        minimum)
    specs.append(("decode", w_decode, _decode_phase(vae, untiled_decode, outputs, tiles).activations, mid_attention)
                 if decodes else ("decode", 0, 0, []))
    phases = [replace(_planned(name, weights, acts, attn, budget, resize), tiles=tiles if name == "decode" else None,
                      streamed=streamed and name == "text") for name, weights, acts, attn in specs]
    return GenerationPlan(height, width, images, budget, tuple(phases), minimum, output)


def _planned(name: str, weights: int, acts: int, attn, budget: int | None, resize: int = 0) -> Phase:
    """A phase whose attention takes what the budget leaves after its weights, activations and the later
    `resize`. A "cross" attention runs in the row blocks of the self-attention listed before it
    (`PixArtBlock`), against the trimmed caption's keys: MAX_TOKENS bounds them."""
    workspace = None if budget is None else budget - weights - acts - resize
    chunks = []
    for what, bh, nq, nk, d in attn:
        rows = chunks[-1].q if what == "cross" else nq
        chunks.append(attention_chunks(bh, rows, nk, d, workspace))
    return Phase(name, weights, acts, tuple(attn), workspace, tuple(chunks), resize=resize)


def _pool_high_water(specs, budget: int | None, resize: int = 0) -> int | None:
    """The most the text and denoise phases hold at once in MindSpore's pool (planned leaving `resize` free,
    which is numpy's). MindSpore's memory pool keeps its high-water mark
    for later tensors, so memory allocated outside it afterwards (the tiled decode's maps, in numpy) comes
    on top of it: measured on the tiny checkpoint at 3840x2160 in 2 GiB, 1.79 GiB resident after denoising
    and 2.95 GiB at the end of a decode that kept its maps in memory."""
    if budget is None:
        return None
    try:
        return max(_planned(*spec, budget, resize).peak - resize for spec in specs)
    except PlanError:  # a phase that can't be met: the caller reports it
        return budget - resize


def _self_attention(cfg: PixArtTransformerConfig, batch: int, height: int, width: int, token_px: int) -> list[tuple]:
    """The transformer's self-attention shapes at height x width px (`token_px` px a token a side): over all
    tokens in the layers without KV compression, over the keys and values the depthwise conv leaves (grid //
    ratio a side) in the layers with it. PlanError when a side of the grid is shorter than the ratio: the
    conv would leave no key."""
    grid_h, grid_w = height // token_px, width // token_px
    bh, tokens, r = batch * cfg.num_attention_heads, grid_h * grid_w, cfg.kv_compress_scale_factor
    compressed = set(cfg.kv_compress_layers)
    if compressed and min(grid_h, grid_w) < r:
        raise PlanError(f"KV compression at ratio {r} needs a token grid of at least {r} x {r} ({r * token_px} x "
                        f"{r * token_px} px); size {width}x{height} px makes {grid_w} x {grid_h}: make each side "
                        f"at least {r * token_px} px")
    return ([("self", bh, tokens, tokens, cfg.attention_head_dim)] if len(compressed) < cfg.num_layers else []) + \
        ([("self-kv", bh, tokens, (grid_h // r) * (grid_w // r), cfg.attention_head_dim)] if compressed else [])


def _untiled_allowed(vae: AutoencoderKLConfig, height: int, width: int, vae_tiling: bool | None, itemsize: int,
                     max_tensor: int | None) -> bool:
    """Whether the decode may run untiled: always with tiling off, never when forced, and when automatic
    if none of the untiled decode's feature maps (`itemsize` bytes an element, the VAE's) exceeds
    `max_tensor` (None: no limit). PlanError when tiling is off and one would."""
    largest = largest_decode_tensor(vae, height, width, itemsize)
    fits = max_tensor is None or largest <= max_tensor
    if vae_tiling is False and not fits:
        raise PlanError(f"an untiled decode of {width}x{height} makes a {format_bytes(largest)} feature map, more "
                        f"than MindSpore allocates in one tensor ({format_bytes(max_tensor)}); let it tile "
                        f"(vae_tiling None or True, --vae-tiling auto|on)")
    return vae_tiling is False or (vae_tiling is None and fits)


def _decode_phase(vae: AutoencoderKLConfig, untiled: Phase, outputs: int, tiles: TilePlan | None) -> Phase:
    """The decode phase (unplanned) with `tiles`, or `untiled` itself for None."""
    return untiled if tiles is None else replace(untiled, activations=outputs + tiled_decode_activations(vae, tiles))


def _least_decode(vae: AutoencoderKLConfig, height: int, width: int, vae_tiling: bool | None, allowed: bool,
                  untiled: Phase, outputs: int) -> Phase:
    """The decode phase with the smallest `minimum` among what `_vae_tiles` falls back to at small budgets:
    untiled when `allowed` (`_untiled_allowed`), the smallest tiles (MIN_TILE, maps in files) unless tiling
    is off."""
    ways = ([None] if allowed else []) + (
        [] if vae_tiling is False else
        [plan_tiles(vae, height // vae.downsample_factor, width // vae.downsample_factor, tile=MIN_TILE)])
    return min((_decode_phase(vae, untiled, outputs, tiles) for tiles in ways), key=Phase.minimum)


def _vae_tiles(vae: AutoencoderKLConfig, height: int, width: int, budget: int | None, vae_tiling: bool | None,
               allowed: bool, untiled: Phase, outputs: int, resident: int | None) -> TilePlan | None:
    """The decode phase's tile grid for height x width px, or None for one untiled decode. Automatic
    (vae_tiling None): untiled when it fits the budget and is `allowed` (`_untiled_allowed`: none of its
    feature maps exceeds the device's largest tensor), else the largest tiles whose activations fit what the
    budget leaves after the weights, the `outputs` (the decoded images' array, counted in `untiled`'s
    activations) and the smallest attention workspace;
    the smallest tiles when none fit (the caller then reports the budget that would work). Whatever it
    picks fits every budget from `_least_decode`'s minimum up. `resident`: what MindSpore's pool holds
    from the earlier phases (`_pool_high_water`)."""
    if vae_tiling is False or (allowed and (budget is None or untiled.minimum() <= budget)):
        return None
    latent_h, latent_w = height // vae.downsample_factor, width // vae.downsample_factor
    room = None if budget is None else (budget - untiled.minimum() + untiled.activations - outputs) * 10 // \
        DECODE_MEASURED_RATIO
    try:
        plan = plan_tiles(vae, latent_h, latent_w, tile=DEFAULT_TILE if vae_tiling else None, budget=room)
    except PlanError:
        return plan_tiles(vae, latent_h, latent_w, tile=MIN_TILE)
    in_memory = replace(plan, maps_in_memory=True)
    if budget is None:
        return in_memory
    # the maps in memory when they take at most half of what the budget leaves beside MindSpore's pool (its
    # high-water mark from denoising, or the weights and tiles, whichever is more; the other half stays for
    # the mid-block's attention), the outputs and the resize (numpy, like the maps), and the phase still fits
    # with them (the attention's smallest workspace may want more than that half): files cost time (at 2048^2 1.46x
    # untiled, 1.24x with the maps in memory: benchmarks/vae_tiling.py), memory is what tiling saves
    left = budget - outputs - untiled.resize - max(resident, untiled.weights + tiled_decode_activations(vae, plan))
    if 2 * map_disk_bytes(vae, 1, latent_h, latent_w) <= left and \
            _decode_phase(vae, untiled, outputs, in_memory).minimum() <= budget:
        return in_memory
    return plan


def tiled_decode_activations(vae: AutoencoderKLConfig, plan: TilePlan) -> int:
    """A tiled decode's activations as the plan counts them: the tiles' (scaled as measured), and the
    feature maps when they are held in memory."""
    maps = map_disk_bytes(vae, 1, plan.height, plan.width) if plan.maps_in_memory else 0
    return measured(tiled_activations(vae, plan)) + maps
