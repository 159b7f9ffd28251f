"""PixArt-Sigma's diffusion transformer (arXiv 2403.04692, the DiT with adaLN-single).

Latents (B, 4, h, w) are cut into p x p patches and embedded with a 2D sin-cos position code; each block
runs self-attention, cross-attention to the projected T5 caption tokens, and a GELU(tanh) MLP, all three
modulated by one shared timestep embedding (adaLN-single) plus a learned per-block table. The output has
2 x 4 channels: the noise prediction, then the learned variance.

Parameter names equal the keys of diffusers' PixArtTransformer2DModel checkpoints, but for KV compression's,
which diffusers lacks (see PixArtTransformerConfig).
"""

import math
from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from studio import backend, memory
from studio.checkpoint import EMA_KEYS, config_kwargs
from studio.errors import ConfigError
from studio.models.attention import attention
from studio.models.layers import Conv2d, LayerNorm, Linear, param

TIMESTEP_CHANNELS = 256  # sinusoidal features of a timestep (or a size condition), as diffusers' Timesteps(256)


@dataclass(frozen=True)
class PixArtTransformerConfig:
    """`transformer/config.json`; defaults are the XL-2 values."""

    num_attention_heads: int = 16
    attention_head_dim: int = 72
    in_channels: int = 4
    out_channels: int | None = 8
    num_layers: int = 28
    cross_attention_dim: int = 1152
    attention_bias: bool = True
    sample_size: int = 128
    patch_size: int = 2
    caption_channels: int | None = 4096
    norm_eps: float = 1e-6
    norm_elementwise_affine: bool = False
    interpolation_scale: float | None = None
    use_additional_conditions: bool | None = None
    # KV token compression (PixArt-Sigma, sec. 3.2): in these blocks, self-attention keys and values are
    # downsampled by a depthwise conv with kernel = stride = kv_compress_scale_factor, then LayerNorm.
    # No published checkpoint uses it and diffusers has none (its converter can't write these weights), so
    # these three keys and the weight names are studio's own. The weights are
    # transformer_blocks.N.attn1.kv_compress.{weight,bias} and ...attn1.kv_norm.{weight,bias}, which the
    # original repository names blocks.N.attn.sr.* and blocks.N.attn.norm.*; for its config's keys, see
    # ORIGINAL_KEYS.
    kv_compress_layers: tuple[int, ...] = ()
    kv_compress_scale_factor: int = 1
    kv_compress_sampling: str = "conv"
    # keys whose only supported value is the one PixArt uses (REQUIRED_VALUES)
    norm_type: str = "ada_norm_single"
    activation_fn: str = "gelu-approximate"
    attention_type: str = "default"
    # keys PixArt's configs carry that don't change inference here: adaLN-single has no embedding table or
    # group norm, dropout is off at inference, and softmax runs in fp32 whatever upcast_attention says
    num_embeds_ada_norm: int | None = 1000
    upcast_attention: bool = False
    dropout: float = 0.0
    norm_num_groups: int = 32

    # keys written by diffusers that do not change PixArt's function (EMAModel's training state too)
    IGNORED = frozenset({"double_self_attention", "num_vector_embeds", "only_cross_attention",
                         "use_linear_projection"}) | EMA_KEYS
    REQUIRED_VALUES = {"norm_type": "ada_norm_single", "activation_fn": "gelu-approximate",
                       "attention_type": "default"}
    # keys of the original PixArt-sigma repository's model config, which studio doesn't take, each with the note
    # its error gives
    ORIGINAL_KEYS = {
        "kv_compress_config": "is the original PixArt-sigma repository's name for studio's kv_compress_sampling, "
                              "kv_compress_scale_factor and kv_compress_layers (its sampling, scale_factor and "
                              "kv_compress_layer)",
        "qk_norm": "is the original PixArt-sigma repository's key, and studio doesn't support query-key "
                   "normalization (with qk_norm false, remove the key)",
    }

    @classmethod
    def from_dict(cls, d: dict, where="transformer config") -> "PixArtTransformerConfig":
        """From a config.json dict; `where` (its path) names it in errors."""
        cfg = cls(**config_kwargs(cls, d, where, cls.IGNORED, notes=cls.ORIGINAL_KEYS))
        if cfg.kv_compress_sampling != "conv":
            raise ConfigError(f"{where}: kv_compress_sampling={cfg.kv_compress_sampling!r} is not supported "
                              "(allowed: 'conv')")
        bad = [i for i in cfg.kv_compress_layers if not 0 <= i < cfg.num_layers]
        if bad or (cfg.kv_compress_layers and cfg.kv_compress_scale_factor < 2):
            raise ConfigError(f"{where}: kv_compress_layers {list(cfg.kv_compress_layers)} with "
                              f"kv_compress_scale_factor {cfg.kv_compress_scale_factor}: layers must be in "
                              f"[0, {cfg.num_layers}) and the factor at least 2")
        for key, value in cls.REQUIRED_VALUES.items():
            if getattr(cfg, key) != value:
                raise ConfigError(f"{where}: {key}={getattr(cfg, key)!r} is not supported "
                                  f"(PixArt uses {value!r})")
        # norm_eps is added to a variance under a square root, interpolation_scale divides positions (None: its
        # default, from sample_size)
        for key in ("norm_eps", "interpolation_scale"):
            if getattr(cfg, key) is not None and not getattr(cfg, key) > 0:
                raise ConfigError(f"{where}: {key}={getattr(cfg, key)!r} must be > 0")
        return cfg

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def output_channels(self) -> int:
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def pos_interpolation_scale(self) -> float:
        """The reference's default: sample_size / 64, at least 1."""
        if self.interpolation_scale is not None:
            return self.interpolation_scale
        return max(self.sample_size // 64, 1)

    @property
    def with_size_conditions(self) -> bool:
        """PixArt-alpha's 1024 model conditions on resolution and aspect ratio; Sigma configs say false."""
        if self.use_additional_conditions is None:
            return self.sample_size == 128
        return self.use_additional_conditions


# ---------------------------------------------------------------------------------------------------------
# Position and timestep codes (pure numpy: computed once per size, no parameters)

def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """[sin(p * w_i), cos(p * w_i)] with w_i = 10000^(-i / (dim/2)); (M,) -> (M, dim), float64."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.outer(positions.reshape(-1).astype(np.float64), omega)  # (M, dim/2)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int, base_size: int, interpolation_scale: float) -> np.ndarray:
    """PixArt's 2D position code for a grid_h x grid_w patch grid, (grid_h * grid_w, dim) float32.

    Coordinates are rescaled so a grid of any size spans the base grid (`base_size` patches) divided by
    `interpolation_scale`; the first half of the channels encodes the column, the second the row.
    """
    rows = np.arange(grid_h, dtype=np.float32) / np.float32(grid_h / base_size) / np.float32(interpolation_scale)
    cols = np.arange(grid_w, dtype=np.float32) / np.float32(grid_w / base_size) / np.float32(interpolation_scale)
    col_of, row_of = np.meshgrid(cols, rows)  # each (grid_h, grid_w), token index = row * grid_w + col
    emb = np.concatenate([sincos_1d(dim // 2, col_of), sincos_1d(dim // 2, row_of)], axis=1)
    return emb.astype(np.float32)


def timestep_features(t: ms.Tensor) -> ms.Tensor:
    """Sinusoidal timestep features [cos, sin] (flip_sin_to_cos, no frequency shift); (B,) -> (B, TIMESTEP_CHANNELS)."""
    half = TIMESTEP_CHANNELS // 2
    freqs = np.exp(-math.log(10000) * np.arange(half, dtype=np.float32) / half).astype(np.float32)
    angles = t.astype(ms.float32).reshape(-1, 1) * ms.Tensor(freqs).reshape(1, half)  # (B, half)
    return ops.cat([ops.cos(angles), ops.sin(angles)], axis=1)


# ---------------------------------------------------------------------------------------------------------
# Blocks

class MLPEmbedder(nn.Cell):
    """linear_1 -> SiLU -> linear_2 (diffusers' TimestepEmbedding)."""

    def __init__(self, in_dim: int, out_dim: int, dtype):
        super().__init__()
        self.linear_1 = Linear(in_dim, out_dim, dtype=dtype)
        self.linear_2 = Linear(out_dim, out_dim, dtype=dtype)

    def construct(self, x):
        return self.linear_2(backend.silu(self.linear_1(x)))


class CombinedTimestepSizeEmbeddings(nn.Cell):
    """Timestep embedding, plus resolution and aspect-ratio embeddings for models conditioned on size."""

    def __init__(self, dim: int, with_size_conditions: bool, dtype):
        super().__init__()
        self.timestep_embedder = MLPEmbedder(TIMESTEP_CHANNELS, dim, dtype)
        self.with_size_conditions = with_size_conditions
        if with_size_conditions:
            self.resolution_embedder = MLPEmbedder(TIMESTEP_CHANNELS, dim // 3, dtype)
            self.aspect_ratio_embedder = MLPEmbedder(TIMESTEP_CHANNELS, dim // 3, dtype)

    def construct(self, t, resolution=None, aspect_ratio=None):
        emb = self.timestep_embedder(timestep_features(t).astype(self.timestep_embedder.linear_1.weight.dtype))
        if self.with_size_conditions:
            b = emb.shape[0]
            res = self.resolution_embedder(timestep_features(resolution.reshape(-1)).astype(emb.dtype))
            ar = self.aspect_ratio_embedder(timestep_features(aspect_ratio.reshape(-1)).astype(emb.dtype))
            emb = emb + ops.cat([res.reshape(b, -1), ar.reshape(b, -1)], axis=1)
        return emb


class AdaLayerNormSingle(nn.Cell):
    """adaLN-single: one timestep embedding -> 6 modulation vectors shared by every block."""

    def __init__(self, dim: int, with_size_conditions: bool, dtype):
        super().__init__()
        self.emb = CombinedTimestepSizeEmbeddings(dim, with_size_conditions, dtype)
        self.linear = Linear(dim, 6 * dim, dtype=dtype)

    def construct(self, t, resolution=None, aspect_ratio=None):
        embedded = self.emb(t, resolution, aspect_ratio)  # (B, D)
        return self.linear(backend.silu(embedded)), embedded  # (B, 6D), (B, D)


class CaptionProjection(nn.Cell):
    """T5 features (caption_channels) -> model width: linear, GELU(tanh), linear."""

    def __init__(self, in_dim: int, dim: int, dtype):
        super().__init__()
        self.linear_1 = Linear(in_dim, dim, dtype=dtype)
        self.linear_2 = Linear(dim, dim, dtype=dtype)

    def construct(self, x):
        return self.linear_2(backend.gelu_tanh(self.linear_1(x)))


class Attention(nn.Cell):
    """Multi-head attention; keys/values from `context` (cross-attention) or from x itself, optionally
    compressed (KV token compression: depthwise conv, kernel = stride = kv_ratio, then LayerNorm)."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None, bias: bool, dtype,
                 kv_ratio: int = 1):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = Linear(dim, inner, bias=bias, dtype=dtype)
        self.to_k = Linear(context_dim or dim, inner, bias=bias, dtype=dtype)
        self.to_v = Linear(context_dim or dim, inner, bias=bias, dtype=dtype)
        self.to_out = nn.CellList([Linear(inner, dim, dtype=dtype)])
        self.kv_ratio = kv_ratio
        if kv_ratio > 1:
            self.kv_compress = Conv2d(inner, inner, kv_ratio, stride=kv_ratio, groups=inner, dtype=dtype)
            self.kv_norm = LayerNorm(inner, 1e-5, dtype=dtype)  # torch's LayerNorm default, as the paper's code

    def compress(self, x, grid):
        """Channels-first (B, C, N) on a token grid (h, w) -> (B, C, N / ratio^2): depthwise strided conv,
        then LayerNorm over the channels."""
        b, c, _ = x.shape
        x = self.kv_compress(x.reshape(b, c, *grid)).reshape(b, c, -1)  # (B, C, N')
        return self.kv_norm(x.transpose(0, 2, 1)).transpose(0, 2, 1)

    def split_heads(self, x):
        b, c, n = x.shape
        return x.reshape(b, self.heads, c // self.heads, n)  # (B, heads, head_dim, N): a reshape, no copy

    def queries(self, x):
        """Tokens (B, N, C) -> channels-first queries (B, heads, head_dim, N)."""
        return self.split_heads(backend.linear_channels_first(x, self.to_q.weight, self.to_q.bias))

    def keys_values(self, context, grid=None):
        """Keys and values of `context` (B, M, C), each (B, heads, head_dim, M'), M' = M / ratio^2."""
        k = backend.linear_channels_first(context, self.to_k.weight, self.to_k.bias)
        v = backend.linear_channels_first(context, self.to_v.weight, self.to_v.bias)
        if self.kv_ratio > 1:
            k, v = self.compress(k, grid), self.compress(v, grid)
        return self.split_heads(k), self.split_heads(v)

    def output(self, out):
        """Channels-first heads (B, heads, head_dim, N) -> tokens (B, N, D)."""
        b, h, d, n = out.shape
        proj = self.to_out[0]
        return backend.linear_from_channels_first(out.reshape(b, h * d, n), proj.weight, proj.bias)

    def construct(self, x, context=None, mask=None, grid=None):
        k, v = self.keys_values(x if context is None else context, grid)
        return self.output(attention(self.queries(x), k, v, mask=mask, channels_first=True))


class GELUProjection(nn.Cell):
    def __init__(self, dim_in: int, dim_out: int, dtype):
        super().__init__()
        self.proj = Linear(dim_in, dim_out, dtype=dtype)

    def construct(self, x):
        return backend.gelu_tanh(backend.linear(x, self.proj.weight, None), self.proj.bias)


class FeedForward(nn.Cell):
    """net.0 = GELU(tanh) projection to 4D, net.2 = projection back (net.1 is a parameterless dropout)."""

    def __init__(self, dim: int, dtype):
        super().__init__()
        self.net = nn.CellList([GELUProjection(dim, 4 * dim, dtype), nn.Identity(), Linear(4 * dim, dim, dtype=dtype)])

    def construct(self, x):
        return self.net[2](self.net[0](x))


def _affine(norm: LayerNorm, shift, scale):
    """(shift, scale) for LN(x)(1 + scale) + shift that also apply the norm's own weight w and bias b when it
    has them (norm_elementwise_affine): (LN(x) w + b)(1 + scale) + shift = LN(x)(1 + scale') + shift' with
    scale' = w (1 + scale) - 1 and shift' = b (1 + scale) + shift, all (B, 1, D)."""
    if norm.weight is None:
        return shift, scale
    return norm.bias * (1 + scale) + shift, norm.weight * (1 + scale) - 1


class PixArtBlock(nn.Cell):
    """x += g1 * SelfAttn(LN(x)(1+s1)+b1); x += CrossAttn(x, c); x += g2 * MLP(LN(x)(1+s2)+b2)."""

    def __init__(self, cfg: PixArtTransformerConfig, dtype, kv_ratio: int = 1):
        super().__init__()
        dim = cfg.inner_dim
        self.norm1 = LayerNorm(dim, cfg.norm_eps, cfg.norm_elementwise_affine, dtype)
        self.attn1 = Attention(dim, cfg.num_attention_heads, cfg.attention_head_dim, None, cfg.attention_bias, dtype,
                               kv_ratio)
        self.attn2 = Attention(dim, cfg.num_attention_heads, cfg.attention_head_dim, cfg.cross_attention_dim,
                               cfg.attention_bias, dtype)
        self.norm2 = LayerNorm(dim, cfg.norm_eps, cfg.norm_elementwise_affine, dtype)
        self.ff = FeedForward(dim, dtype)
        self.scale_shift_table = param((6, dim), dtype)

    def construct(self, x, context_kv, context_mask, t6, grid=None):
        """x (B, N, D) on a token grid (h, w); context_kv: this block's cross-attention keys and values from
        `context_keys_values`; context_mask (B, 1, 1, L) bool; t6 (B, 6D).

        Everything but the self-attention's keys and values is token-wise, so when the budget in force
        chunks the self-attention's queries, the whole block runs over those same blocks of token rows:
        besides x, its norm, the keys, the values and the output, no full-size tensor is alive (each
        row block's temporaries are ~1% of its attention scores).
        """
        mods = self.scale_shift_table.reshape(1, 6, -1) + t6.reshape(t6.shape[0], 6, -1)  # (B, 6, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = ops.split(mods, 1, axis=1)  # (B, 1, D)
        h = backend.modulated_layer_norm(x, *_affine(self.norm1, shift_msa, scale_msa), self.norm1.eps)
        k, v = self.attn1.keys_values(h, grid)  # each (B, heads, head_dim, N')
        b, n, _ = x.shape
        heads, head_dim, nk = k.shape[1], k.shape[2], k.shape[3]
        rows = memory.attention_chunks(b * heads, n, nk, head_dim, memory.current_attention_budget()).q
        parts = []
        for i in range(0, n, rows):
            xi, hi = (x, h) if rows >= n else (x[:, i:i + rows], h[:, i:i + rows])
            xi = backend.gated_add(xi, gate_msa, self.attn1.output(
                attention(self.attn1.queries(hi), k, v, channels_first=True)))
            xi = xi + self.attn2.output(attention(self.attn2.queries(xi), *context_kv, mask=context_mask,
                                                  channels_first=True))
            parts.append(self.mlp(xi, shift_mlp, scale_mlp, gate_mlp))
        return parts[0] if len(parts) == 1 else ops.cat(parts, axis=1)  # (B, N, D)

    def mlp(self, x, shift, scale, gate):
        """x + gate * MLP(LN(x)(1 + scale) + shift), over blocks of token rows whose 4x-wide hidden activations fit
        the workspace budget in force (the MLP is row-wise, so the blocks give the same result)."""
        b, n, d = x.shape
        rows = memory.mlp_rows(n, b * 4 * d, memory.current_attention_budget())
        shift, scale = _affine(self.norm2, shift, scale)
        parts = []
        for i in range(0, n, rows):
            xi = x[:, i:i + rows]
            parts.append(backend.gated_add(xi, gate, self.ff(backend.modulated_layer_norm(xi, shift, scale,
                                                                                          self.norm2.eps))))
        return parts[0] if len(parts) == 1 else ops.cat(parts, axis=1)  # (B, N, D)

    def context_keys_values(self, context):
        """Cross-attention keys and values of the caption (B, L, D): they don't depend on the timestep."""
        return self.attn2.keys_values(context)


class PatchEmbed(nn.Cell):
    """p x p patches -> tokens, plus the 2D sin-cos position code for the current grid size."""

    def __init__(self, cfg: PixArtTransformerConfig, dtype):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.dim = cfg.inner_dim
        self.base_size = cfg.sample_size // cfg.patch_size
        self.interpolation_scale = cfg.pos_interpolation_scale
        self.proj = Conv2d(cfg.in_channels, cfg.inner_dim, cfg.patch_size, stride=cfg.patch_size, dtype=dtype)
        self._pos_cache: dict[tuple[int, int], ms.Tensor] = {}

    def position_code(self, grid_h: int, grid_w: int) -> ms.Tensor:
        key = (grid_h, grid_w)
        if key not in self._pos_cache:
            code = sincos_2d(self.dim, grid_h, grid_w, self.base_size, self.interpolation_scale)
            self._pos_cache = {key: ms.Tensor(code[None])}  # (1, N, D); keep only the size in use
        return self._pos_cache[key]

    def construct(self, latents):
        x = self.proj(latents)  # (B, D, h/p, w/p)
        b, d, gh, gw = x.shape
        x = x.reshape(b, d, gh * gw).transpose(0, 2, 1)  # (B, N, D)
        return x + self.position_code(gh, gw).astype(x.dtype)


class PixArtTransformer2DModel(nn.Cell):
    def __init__(self, cfg: PixArtTransformerConfig, dtype=ms.float32):
        super().__init__()
        self.config = cfg
        dim = cfg.inner_dim
        self.pos_embed = PatchEmbed(cfg, dtype)
        self.adaln_single = AdaLayerNormSingle(dim, cfg.with_size_conditions, dtype)
        self.caption_projection = CaptionProjection(cfg.caption_channels, dim, dtype) if cfg.caption_channels else None
        self.transformer_blocks = nn.CellList([
            PixArtBlock(cfg, dtype, cfg.kv_compress_scale_factor if i in cfg.kv_compress_layers else 1)
            for i in range(cfg.num_layers)])
        self.norm_out = LayerNorm(dim, 1e-6, elementwise_affine=False, dtype=dtype)
        self.scale_shift_table = param((2, dim), dtype)
        self.proj_out = Linear(dim, cfg.patch_size * cfg.patch_size * cfg.output_channels, dtype=dtype)

    @classmethod
    def from_pretrained(cls, folder, dtype=ms.float32, variant: str | None = None,
                        progress=None) -> "PixArtTransformer2DModel":
        """Build from a diffusers `transformer/` folder (config.json + safetensors), weights loaded strictly."""
        from studio.checkpoint import load_component
        return load_component(cls, PixArtTransformerConfig, folder, dtype, variant, progress)

    def encode_context(self, caption_features: ms.Tensor) -> tuple[tuple[ms.Tensor, ms.Tensor], ...]:
        """T5 features (B, L, caption_channels) -> every block's cross-attention keys and values, each
        (B, heads, head_dim, L). They don't depend on the timestep: computed once per generation."""
        context = caption_features
        if self.caption_projection is not None:
            context = self.caption_projection(caption_features)  # (B, L, D)
        return tuple(block.context_keys_values(context) for block in self.transformer_blocks)

    def construct(self, latents, timestep, context, context_mask=None, resolution=None, aspect_ratio=None):
        """latents (B, C, h, w); timestep (B,); context from `encode_context`; context_mask (B, L),
        nonzero = attend. Returns (B, out_channels, h, w)."""
        p = self.config.patch_size
        b, _, h, w = latents.shape
        x = self.pos_embed(latents)  # (B, N, D)
        t6, t_emb = self.adaln_single(timestep, resolution, aspect_ratio)  # (B, 6D), (B, D)
        mask = None if context_mask is None else context_mask.astype(ms.bool_).reshape(b, 1, 1, -1)  # (B,1,1,L)
        for block, context_kv in zip(self.transformer_blocks, context):
            x = block(x, context_kv, mask, t6, (h // p, w // p))
        shift, scale = ops.split(self.scale_shift_table.reshape(1, 2, -1) + t_emb.reshape(b, 1, -1), 1, axis=1)
        x = self.proj_out(backend.modulated_layer_norm(x, shift, scale, self.norm_out.eps))  # (B, N, p*p*C)
        c = self.config.output_channels
        x = x.reshape(b, h // p, w // p, p, p, c).transpose(0, 5, 1, 3, 2, 4)  # (B, C, h/p, p, w/p, p)
        return x.reshape(b, c, h, w)
