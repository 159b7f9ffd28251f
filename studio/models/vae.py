"""The SDXL VAE of PixArt-Sigma (diffusers' AutoencoderKL): images <-> latents.

`encode` takes an image (B, 3, H, W) in [-1, 1] and gives the mean and log-variance of the diagonal
Gaussian over latents (B, 4, H/8, W/8); `decode` takes a latent already divided by `scaling_factor` and
gives the image back. The encoder and decoder are the convolutional autoencoder of latent diffusion
(Rombach et al. 2022): ResNet blocks with GroupNorm + SiLU, one single-head self-attention in the
middle, stride-2 convolutions down and nearest-neighbour 2x + convolution up.
"""

from dataclasses import dataclass

import mindspore as ms
from mindspore import nn, ops

from studio import backend
from studio.checkpoint import EMA_KEYS, config_kwargs, load_component
from studio.errors import ConfigError
from studio.models.attention import attention
from studio.models.layers import Conv2d, GroupNorm, Linear

EPS = 1e-6  # every GroupNorm of this VAE
LOGVAR_RANGE = (-30.0, 20.0)  # the reference clamps the log-variance to this range

# config.json keys that are neither fields nor private ("_class_name", ...) but safe to ignore: the training state
# diffusers' EMAModel writes into the config of a model it saves (every other key diffusers has written for
# AutoencoderKL is a field)
_IGNORED_KEYS = EMA_KEYS

# diffusers' AutoencoderKL switches (PixArt users call pipe.vae.enable_tiling(); the pipeline's enable_vae_tiling()
# names them too): an AttributeError saying what studio does instead
VAE_SWITCHES = {
    "enable_tiling": "pass vae_tiling=True to the pipeline's call (None, the default, tiles when the decode would "
                     "not fit)",
    "disable_tiling": "pass vae_tiling=False to the pipeline's call",
    "enable_slicing": "the pipeline decodes images one at a time already (vae_tiling= of its call tiles each)",
    "disable_slicing": "the pipeline decodes images one at a time, as its memory plan counts them",
}


@dataclass(frozen=True)
class AutoencoderKLConfig:
    """vae/config.json. Defaults are diffusers' AutoencoderKL defaults, which apply when a key is absent."""

    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",)
    up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",)
    block_out_channels: tuple[int, ...] = (64,)
    layers_per_block: int = 1
    act_fn: str = "silu"
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int | tuple[int, ...] = 32
    scaling_factor: float = 0.18215
    # read, not applied: the reference's PixArt-Sigma pipeline decodes latents / scaling_factor alone
    shift_factor: float | None = None
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    force_upcast: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    @property
    def downsample_factor(self) -> int:
        """Image px per latent px: 2 per down block after the first (8 for the SDXL VAE)."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_dict(cls, d: dict, where="vae config") -> "AutoencoderKLConfig":
        """From a config.json dict; `where` (its path) names it in errors."""
        config = cls(**config_kwargs(cls, d, where, _IGNORED_KEYS))
        config.validate(where)
        return config

    def validate(self, where="vae config") -> None:
        """Refuse what this implementation does not build (other block types or activations), and a
        scaling_factor of 0."""
        n = len(self.block_out_channels)
        if not n or min(self.block_out_channels) < 1:
            raise ConfigError(f"{where}: block_out_channels {list(self.block_out_channels)}: expected one positive "
                              "channel count per block")
        if self.down_block_types != ("DownEncoderBlock2D",) * n:
            raise ConfigError(f"{where}: down_block_types {list(self.down_block_types)}: only "
                              f"{n} x DownEncoderBlock2D (one per block_out_channels entry) is supported")
        if self.up_block_types != ("UpDecoderBlock2D",) * n:
            raise ConfigError(f"{where}: up_block_types {list(self.up_block_types)}: only "
                              f"{n} x UpDecoderBlock2D (one per block_out_channels entry) is supported")
        if self.act_fn != "silu":
            raise ConfigError(f"{where}: act_fn '{self.act_fn}': only 'silu' is supported")
        if not self.scaling_factor:
            raise ConfigError(f"{where}: scaling_factor={self.scaling_factor!r} must not be 0 (latents are divided "
                              "by it)")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ConfigError(f"{where}: block_out_channels {list(self.block_out_channels)}: {bad[0]} is not "
                              f"a multiple of norm_num_groups {self.norm_num_groups}")


# ---------------------------------------------------------------------------------------------------------
# Blocks


class ResnetBlock(nn.Cell):
    """x + conv2(silu(norm2(conv1(silu(norm1(x)))))), with a 1x1 conv on the skip when channels change."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, dtype=ms.float32):
        super().__init__()
        self.norm1 = GroupNorm(groups, in_channels, EPS, dtype=dtype, silu=True)
        self.conv1 = Conv2d(in_channels, out_channels, 3, padding=1, dtype=dtype)
        self.norm2 = GroupNorm(groups, out_channels, EPS, dtype=dtype, silu=True)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1, dtype=dtype)
        self.conv_shortcut = Conv2d(in_channels, out_channels, 1, dtype=dtype) if in_channels != out_channels else None

    def construct(self, x):
        # norms here are GroupNorm + SiLU; each conv's bias is added inside the next op's pass
        h = self.conv1.without_bias(self.norm1(x))
        h = self.conv2.without_bias(self.norm2(h, self.conv1.bias))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return backend.residual_add(x, h, self.conv2.bias)


class Downsample(nn.Cell):
    """Zero-pad one row at the bottom and one column at the right, then a 3x3 stride-2 conv: H, W -> H/2, W/2."""

    def __init__(self, channels: int, dtype=ms.float32):
        super().__init__()
        # the pad is the conv's own, given as (top, bottom, left, right)
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=(0, 1, 0, 1), dtype=dtype)

    def construct(self, x):
        return self.conv(x)


class Upsample(nn.Cell):
    """Nearest-neighbour 2x, then a 3x3 conv: H, W -> 2H, 2W."""

    def __init__(self, channels: int, dtype=ms.float32):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1, dtype=dtype)

    def construct(self, x):
        return backend.upsample2x_conv3x3(x, self.conv.weight, self.conv.bias)  # at x's resolution, 2.25x fewer FLOPs


class SelfAttention(nn.Cell):
    """x + to_out(attention(q, k, v)) over the H*W positions of GroupNorm(x); one head, head_dim = channels."""

    def __init__(self, channels: int, groups: int, dtype=ms.float32):
        super().__init__()
        self.group_norm = GroupNorm(groups, channels, EPS, dtype=dtype)
        self.to_q = Linear(channels, channels, dtype=dtype)
        self.to_k = Linear(channels, channels, dtype=dtype)
        self.to_v = Linear(channels, channels, dtype=dtype)
        self.to_out = nn.CellList([Linear(channels, channels, dtype=dtype)])  # key `to_out.0`

    def construct(self, x):
        b, c, h, w = x.shape
        tokens = self.group_norm(x).reshape(b, c, h * w).swapaxes(1, 2)  # (B, HW, C)
        q = self.to_q(tokens).reshape(b, 1, h * w, c)  # (B, 1 head, HW, C)
        k = self.to_k(tokens).reshape(b, 1, h * w, c)
        v = self.to_v(tokens).reshape(b, 1, h * w, c)
        out = attention(q, k, v).reshape(b, h * w, c)  # (B, HW, C)
        out = self.to_out[0](out).swapaxes(1, 2).reshape(b, c, h, w)  # (B, C, H, W)
        return x + out


class MidBlock(nn.Cell):
    """ResNet, self-attention, ResNet, at the lowest resolution."""

    def __init__(self, channels: int, groups: int, add_attention: bool, dtype=ms.float32):
        super().__init__()
        self.resnets = nn.CellList([ResnetBlock(channels, channels, groups, dtype) for _ in range(2)])
        self.attentions = nn.CellList([SelfAttention(channels, groups, dtype)]) if add_attention else None

    def construct(self, x):
        x = self.resnets[0](x)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x)


class DownBlock(nn.Cell):
    """`num_layers` ResNet blocks, then an optional Downsample (diffusers' DownEncoderBlock2D)."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int, downsample: bool,
                 dtype=ms.float32):
        super().__init__()
        self.resnets = nn.CellList([ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups, dtype)
                                    for i in range(num_layers)])
        self.downsamplers = nn.CellList([Downsample(out_channels, dtype)]) if downsample else None

    def construct(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class UpBlock(nn.Cell):
    """`num_layers` ResNet blocks, then an optional Upsample (diffusers' UpDecoderBlock2D)."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int, upsample: bool,
                 dtype=ms.float32):
        super().__init__()
        self.resnets = nn.CellList([ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups, dtype)
                                    for i in range(num_layers)])
        self.upsamplers = nn.CellList([Upsample(out_channels, dtype)]) if upsample else None

    def construct(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


# ---------------------------------------------------------------------------------------------------------
# Encoder, decoder, autoencoder


class Encoder(nn.Cell):
    """Image (B, in_channels, H, W) -> moments (B, 2 * latent_channels, H / f, W / f), f = 2 ** (blocks - 1)."""

    def __init__(self, config: AutoencoderKLConfig, dtype=ms.float32):
        super().__init__()
        channels = config.block_out_channels
        groups = config.norm_num_groups
        self.conv_in = Conv2d(config.in_channels, channels[0], 3, padding=1, dtype=dtype)
        self.down_blocks = nn.CellList([
            DownBlock(channels[max(i - 1, 0)], channels[i], config.layers_per_block, groups,
                      downsample=i < len(channels) - 1, dtype=dtype)
            for i in range(len(channels))])
        self.mid_block = MidBlock(channels[-1], groups, config.mid_block_add_attention, dtype)
        self.conv_norm_out = GroupNorm(groups, channels[-1], EPS, dtype=dtype, silu=True)
        self.conv_out = Conv2d(channels[-1], 2 * config.latent_channels, 3, padding=1, dtype=dtype)

    def construct(self, x):
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(self.conv_norm_out(x))


class Decoder(nn.Cell):
    """Latent (B, latent_channels, h, w) -> image (B, out_channels, h * f, w * f), f = 2 ** (blocks - 1)."""

    def __init__(self, config: AutoencoderKLConfig, dtype=ms.float32):
        super().__init__()
        channels = tuple(reversed(config.block_out_channels))  # widest first
        groups = config.norm_num_groups
        self.conv_in = Conv2d(config.latent_channels, channels[0], 3, padding=1, dtype=dtype)
        self.mid_block = MidBlock(channels[0], groups, config.mid_block_add_attention, dtype)
        # each up block has one ResNet more than its encoder counterpart
        self.up_blocks = nn.CellList([
            UpBlock(channels[max(i - 1, 0)], channels[i], config.layers_per_block + 1, groups,
                    upsample=i < len(channels) - 1, dtype=dtype)
            for i in range(len(channels))])
        self.conv_norm_out = GroupNorm(groups, channels[-1], EPS, dtype=dtype, silu=True)
        self.conv_out = Conv2d(channels[-1], config.out_channels, 3, padding=1, dtype=dtype)

    def construct(self, z):
        x = self.conv_in(z)
        x = self.mid_block(x)
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(self.conv_norm_out(x))


class AutoencoderKL(nn.Cell):
    """The VAE; parameter names equal diffusers' checkpoint keys (`encoder.`, `decoder.`, `quant_conv`, ...)."""

    def __init__(self, config: AutoencoderKLConfig, dtype=ms.float32):
        super().__init__()
        self.config = config
        latent = config.latent_channels
        self.encoder = Encoder(config, dtype)
        self.decoder = Decoder(config, dtype)
        self.quant_conv = Conv2d(2 * latent, 2 * latent, 1, dtype=dtype) if config.use_quant_conv else None
        self.post_quant_conv = Conv2d(latent, latent, 1, dtype=dtype) if config.use_post_quant_conv else None

    @classmethod
    def from_pretrained(cls, folder, dtype=ms.float32, variant: str | None = None, progress=None) -> "AutoencoderKL":
        """Build from a diffusers `vae/` folder (config.json + safetensors) and load its weights strictly."""
        return load_component(cls, AutoencoderKLConfig, folder, dtype, variant, progress)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)  # the Cell's parameters, buffers and sub-cells
        except AttributeError:
            if name not in VAE_SWITCHES:
                raise
        raise AttributeError(f"studio's AutoencoderKL has no {name}(): {VAE_SWITCHES[name]}")

    def encode(self, x: ms.Tensor) -> tuple[ms.Tensor, ms.Tensor]:
        """Image (B, 3, H, W) in [-1, 1] -> (mean, logvar), each (B, latent_channels, H/8, W/8) for the SDXL VAE.

        Unscaled: multiply a latent drawn from N(mean, exp(logvar)) by scaling_factor before diffusion.
        """
        moments = self.encoder(x)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = ops.split(moments, self.config.latent_channels, axis=1)  # 2 x (B, latent, h, w)
        return mean, ops.clamp(logvar, *LOGVAR_RANGE)

    def decode(self, z: ms.Tensor) -> ms.Tensor:
        """Latent (B, latent_channels, h, w), already divided by scaling_factor -> image (B, 3, 8h, 8w), ~[-1, 1]."""
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def construct(self, z):
        return self.decode(z)
