"""Tiled VAE decoding and encoding: a latent of any size <-> an image, in memory set by the tile, seam-free.

Plan (pure integers, latent px): `plan_tiles` cuts the latent into a grid of tile *cores* that partition it
exactly, and grows each core by a *halo* as wide as the receptive-field reach of the tiled layers, so that
every core pixel is computed from the same inputs as in the untiled run (`decode_halo`, `encode_halo`).

Execute (`decode_tiled`, `encode_tiled`): the layers at latent resolution (decoder: conv_in, mid-block,
the first up block's ResNets; encoder: the last down block, mid-block, conv_out) run once over the whole
latent, the mid-block's attention through the budgeted `attention`; the layers at higher resolution run
tile by tile on (core + halo) crops, and each tile keeps its core. What differs from the untiled run is
GroupNorm, whose statistics span the whole feature map. Tiles share them: statistics passes run every
tile and add up, for each GroupNorm, the sums and squared sums over the tile *cores* (each pixel counted
once); the output pass normalises every tile with those whole-map statistics. Within a statistics pass a
norm uses the best estimate so far (Gauss-Seidel: this pass's sums of the tiles done, the previous pass's
of the rest), so the estimate converges in a few passes; `stats_passes` sets how many (measured error in
tests/test_vae_tiling.py). With shared statistics and exact halos every output pixel is computed the same
way whichever tile holds it, so cores simply abut: there is no seam to blend away.
"""

import math
from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import ops

from studio import backend
from studio.errors import InputError, PlanError
from studio.geometry import Box, split
from studio.memory import format_bytes
from studio.models.layers import group_norm_hook
from studio.models.vae import LOGVAR_RANGE, AutoencoderKL, AutoencoderKLConfig

DEFAULT_TILE = 64  # latent px (512 px), diffusers' tile for the SDXL VAE: the core when tiling is forced
MIN_TILE = 16  # latent px: the smallest core the budget search tries; below it the halos cost most of the work
STATS_PASSES = 2  # statistics passes before the output pass (measured: 1 pass 24-32 dB, 2 passes 49-52 dB)


# -- plan ---------------------------------------------------------------------------------------------------

def _factor(cfg: AutoencoderKLConfig) -> int:
    return 2 ** (len(cfg.block_out_channels) - 1)


def decode_halo(cfg: AutoencoderKLConfig) -> int:
    """Latent px around a core that the decoder's tiled layers read: their receptive-field reach, rounded up.

    Counted in px at each resolution: a 3x3 conv reaches 1 px further, nearest 2x doubles the reach.
    """
    n, convs = len(cfg.block_out_channels), 2 * (cfg.layers_per_block + 1)
    reach = 0
    for i in range(n):
        if i > 0:  # the first up block's ResNets run on the whole latent
            reach += convs
        if i < n - 1:
            reach = 2 * reach + 1  # nearest 2x, then a 3x3 conv
    return math.ceil((reach + 1) / _factor(cfg))  # + conv_out


def encode_halo(cfg: AutoencoderKLConfig) -> int:
    """Latent px around a core that the encoder's tiled layers read (conv_in and all but the last down block).

    The stride-2 downsampling pads only after (bottom/right): a crop edge before it stops costing at
    half the reach, rounded up, one after it at half the reach rounded down plus the padded row.
    """
    convs = 2 * cfg.layers_per_block
    before = after = 1  # conv_in
    for _ in range(len(cfg.block_out_channels) - 1):
        before, after = before + convs, after + convs
        before, after = (before + 1) // 2, after // 2 + 1
    return max(before, after) if len(cfg.block_out_channels) > 1 else 0


@dataclass(frozen=True)
class Tile:
    core: Box  # latent px this tile produces; the cores of a plan partition the latent exactly
    crop: Box  # the core grown by the halo on every side and clipped to the latent: what the tile reads


@dataclass(frozen=True)
class TilePlan:
    """A grid of tiles over a height x width latent (latent px)."""

    height: int
    width: int
    halo: int
    rows: tuple[tuple[int, int], ...]  # (start, length) of each tile row
    cols: tuple[tuple[int, int], ...]

    @property
    def tiles(self) -> tuple[Tile, ...]:
        out = []
        for y, h in self.rows:
            for x, w in self.cols:
                y0, x0 = max(y - self.halo, 0), max(x - self.halo, 0)
                y1, x1 = min(y + h + self.halo, self.height), min(x + w + self.halo, self.width)
                out.append(Tile(Box(x, y, w, h), Box(x0, y0, x1 - x0, y1 - y0)))
        return tuple(out)

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, columns)."""
        return len(self.rows), len(self.cols)

    def describe(self, factor: int = 8) -> str:
        rows, cols = self.grid
        h, w = max(n for _, n in self.rows), max(n for _, n in self.cols)
        return f"{rows}x{cols} tiles of <= {factor * w}x{factor * h} px + {factor * self.halo} px halo"


def grid_plan(height: int, width: int, tile: int, halo: int) -> TilePlan:
    """The fewest rows and columns of cores at most `tile` latent px on a side, sizes within 1 px."""
    if tile < 1:
        raise PlanError(f"tile size must be at least 1 latent px, got {tile}")
    return TilePlan(height, width, halo, tuple(split(height, math.ceil(height / tile))),
                    tuple(split(width, math.ceil(width / tile))))


def vae_decode_activations(cfg: AutoencoderKLConfig, height: int, width: int, itemsize: int) -> int:
    """The largest stage of the decoder's up path: input, GroupNorm/SiLU temporaries, conv out, residual."""
    rev = tuple(reversed(cfg.block_out_channels))
    f = 2 ** (len(rev) - 1)
    pixels = (height // f) * (width // f)
    peak = 0
    for i, c in enumerate(rev):
        c_in = rev[max(i - 1, 0)]
        peak = max(peak, pixels * (2 * c_in + 4 * c))
        if i < len(rev) - 1:  # nearest 2x then conv: the small input, the 4x upsampled map, the conv output
            peak = max(peak, pixels * c + 2 * 4 * pixels * c)
            pixels *= 4
    return itemsize * (peak + 2 * pixels * cfg.out_channels)


def tiled_activations(cfg: AutoencoderKLConfig, plan: TilePlan, itemsize: int = 4) -> int:
    """Bytes of a tiled decode: the latent-resolution features the tiles read and the image they write,
    alive throughout, plus the larger of the whole-latent stage (conv_in, mid-block, first up block: about
    six maps at the widest channel count) and one tile's up path (the largest crop). The encoder's tiles
    are smaller than the decoder's (fewer ResNets, no upsampling temporaries); the same bound serves."""
    f, c = _factor(cfg), cfg.block_out_channels[-1]
    n = plan.height * plan.width
    held = n * c + f * f * n * cfg.out_channels
    whole = 6 * n * c
    tile = max(vae_decode_activations(cfg, f * t.crop.h, f * t.crop.w, 1) for t in plan.tiles)
    return itemsize * (held + max(whole, tile))


def plan_tiles(cfg: AutoencoderKLConfig, height: int, width: int, tile: int | None = None,
               budget: int | None = None, encode: bool = False) -> TilePlan:
    """Tiles for a height x width latent (latent px).

    tile: the largest core side in latent px (default: the whole latent with a budget, else DEFAULT_TILE);
    budget: bytes for activations (`tiled_activations`); the core is then the largest <= tile that fits.
    Raises PlanError naming the bytes the smallest tile needs when none fits.
    """
    halo = encode_halo(cfg) if encode else decode_halo(cfg)
    if budget is None:
        return grid_plan(height, width, tile or DEFAULT_TILE, halo)
    side = tile or max(height, width)
    while True:
        plan = grid_plan(height, width, side, halo)
        if tiled_activations(cfg, plan) <= budget:
            return plan
        if side <= MIN_TILE:
            raise PlanError(f"VAE tiles of {side} latent px need {format_bytes(tiled_activations(cfg, plan))} of "
                            f"activations for a {width}x{height} latent; the budget gives {format_bytes(budget)}")
        side = max(MIN_TILE, side - max(1, side // 16))  # ~6% steps: as fine as the size estimate


# -- execute ------------------------------------------------------------------------------------------------

class _SharedNorms:
    """The GroupNorm hook of one tiled pass.

    Output pass (`sums` given, `record` False): every tile normalises with the whole-map statistics of
    `sums`. Statistics pass (`record` True): each norm adds up its sums over the tile's core and
    normalises with the best estimate so far, Gauss-Seidel style: this pass's sums for the tiles already
    done and for this tile, the previous pass's (if any) for the tiles still to come.
    """

    def __init__(self, previous: dict | None, record: bool):
        self.previous = previous or {}  # tile index -> {id(cell): (sum (B, G), squares (B, G), count)}
        self.record = record
        self.sums: dict[int, dict] = {}  # this pass's, same layout
        self.index = 0
        self.tile: Tile | None = None
        self._fixed = {} if record else moments(self.previous)

    def __call__(self, cell, x: ms.Tensor) -> ms.Tensor:
        key = id(cell)
        if self.record:
            self.sums.setdefault(self.index, {})[key] = _core_sums(cell, x, self.tile)
            parts = [tile[key] for i, tile in self.sums.items() if key in tile]
            parts += [tile[key] for i, tile in self.previous.items() if i > self.index and key in tile]
            stats = _moments(*_add(parts))
        else:
            stats = self._fixed.get(key)
        if stats is None:
            return backend.group_norm(x, cell.num_groups, cell.weight, cell.bias, cell.eps, cell.silu)
        mean, var = (ms.Tensor(a, ms.float32) for a in stats)
        return backend.normalize_channels(x, mean, var, cell.num_groups, cell.weight, cell.bias, cell.eps, cell.silu)


def _core_sums(cell, x: ms.Tensor, tile: Tile) -> tuple[np.ndarray, np.ndarray, int]:
    """Sum and squared sum (B, groups) of x over the tile's core, and the count of each."""
    core, crop = tile.core, tile.crop
    r = x.shape[2] // crop.h  # px of x per latent px
    if core != crop:
        y0, x0 = (core.y - crop.y) * r, (core.x - crop.x) * r
        x = x[:, :, y0:y0 + core.h * r, x0:x0 + core.w * r]
    total, squares = backend.group_sums(x, cell.num_groups)
    count = x.shape[1] // cell.num_groups * x.shape[2] * x.shape[3]
    return total.asnumpy().astype(np.float64), squares.asnumpy().astype(np.float64), count


def _add(parts):
    return sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts)


def _moments(total, squares, count):
    """(mean, biased variance) from sums."""
    mean = total / count
    return mean, np.maximum(squares / count - mean * mean, 0.0)


def moments(statistics: dict) -> dict:
    """Statistics from `decode_statistics`/`encode_statistics` -> {id(GroupNorm cell): (mean, variance)},
    each (B, groups) float64 over the whole feature map."""
    return {key: _moments(*_add(parts)) for key, parts in _by_norm(statistics).items()}


def _by_norm(sums: dict) -> dict:
    out: dict = {}
    for tile in sums.values():
        for key, part in tile.items():
            out.setdefault(key, []).append(part)
    return out


def _run_tiles(fn, x: ms.Tensor, plan: TilePlan, scale_in: int, scale_out: int, norms: _SharedNorms,
               write: bool) -> np.ndarray | None:
    """fn on every tile's crop of x (scale_in px per latent px); with `write`, the cores of its outputs
    (scale_out px per latent px) assembled into one array."""
    out = None
    for i, tile in enumerate(plan.tiles):
        crop, core = tile.crop, tile.core
        piece = x
        if (crop.w, crop.h) != (plan.width, plan.height):
            piece = x[:, :, crop.y * scale_in:crop.bottom * scale_in, crop.x * scale_in:crop.right * scale_in]
        norms.index, norms.tile = i, tile
        with group_norm_hook(norms):
            y = fn(piece)
        if not write:
            continue
        y0, x0, s = (core.y - crop.y) * scale_out, (core.x - crop.x) * scale_out, scale_out
        y = y[:, :, y0:y0 + core.h * s, x0:x0 + core.w * s].asnumpy()
        if out is None:
            out = np.empty((y.shape[0], y.shape[1], plan.height * s, plan.width * s), y.dtype)
        out[:, :, core.y * s:core.bottom * s, core.x * s:core.right * s] = y
    return out


def _statistics(fn, x, plan: TilePlan, scale_in: int, stats_passes: int) -> dict | None:
    """Shared GroupNorm statistics after `stats_passes` passes over the tiles (None after none)."""
    statistics = None
    for _ in range(stats_passes):
        norms = _SharedNorms(statistics, record=True)
        _run_tiles(fn, x, plan, scale_in, 1, norms, write=False)
        statistics = norms.sums
    return statistics


def _tiled(fn, x, plan, scale_in, scale_out, stats_passes, statistics) -> np.ndarray:
    if statistics is None:
        statistics = _statistics(fn, x, plan, scale_in, stats_passes)
    return _run_tiles(fn, x, plan, scale_in, scale_out, _SharedNorms(statistics, record=False), write=True)


def _decoder_latent_stage(vae: AutoencoderKL, z: ms.Tensor) -> ms.Tensor:
    """post_quant_conv, conv_in, mid-block and the first up block's ResNets, on the whole latent."""
    dec = vae.decoder
    x = vae.post_quant_conv(z) if vae.post_quant_conv is not None else z
    x = dec.mid_block(dec.conv_in(x))
    for resnet in dec.up_blocks[0].resnets:
        x = resnet(x)
    return x


def _decoder_tile(vae: AutoencoderKL, x: ms.Tensor) -> ms.Tensor:
    """The rest of the decoder, on one crop."""
    dec = vae.decoder
    if dec.up_blocks[0].upsamplers is not None:
        x = dec.up_blocks[0].upsamplers[0](x)
    for block in dec.up_blocks[1:]:
        x = block(x)
    return dec.conv_out(dec.conv_norm_out(x))  # GroupNorm + SiLU


def _check(what: str, shape, plan: TilePlan, f: int) -> None:
    if tuple(shape[2:]) != (plan.height * f, plan.width * f):
        raise InputError(f"{what} of size {shape[3]}x{shape[2]} does not match the tile plan's "
                         f"{plan.width * f}x{plan.height * f}")


def decode_tiled(vae: AutoencoderKL, z: ms.Tensor, plan: TilePlan, stats_passes: int = STATS_PASSES,
                 statistics: dict | None = None) -> ms.Tensor:
    """`vae.decode(z)` tile by tile: latent (B, C, h, w) already divided by scaling_factor -> image (B, 3, fh, fw).

    plan: from `plan_tiles(vae.config, h, w, ...)`. stats_passes: passes that estimate the shared GroupNorm
    statistics (0: each tile uses its own, as diffusers' tiling does). statistics: use these instead
    (from `decode_statistics`).
    """
    _check("latent", z.shape, plan, 1)
    x = _decoder_latent_stage(vae, z)
    out = _tiled(lambda crop: _decoder_tile(vae, crop), x, plan, 1, _factor(vae.config), stats_passes, statistics)
    return ms.Tensor(out)


def decode_statistics(vae: AutoencoderKL, z: ms.Tensor, plan: TilePlan, stats_passes: int = STATS_PASSES) -> dict:
    """The shared GroupNorm statistics `decode_tiled` would use; with a one-tile plan, the exact ones."""
    x = _decoder_latent_stage(vae, z)
    return _statistics(lambda crop: _decoder_tile(vae, crop), x, plan, 1, stats_passes)


def _encoder_tile(vae: AutoencoderKL, x: ms.Tensor) -> ms.Tensor:
    """conv_in and every down block but the last, on one crop."""
    enc = vae.encoder
    x = enc.conv_in(x)
    for block in enc.down_blocks[:-1]:
        x = block(x)
    return x


def _encoder_latent_stage(vae: AutoencoderKL, x: ms.Tensor) -> tuple[ms.Tensor, ms.Tensor]:
    """The last down block, mid-block, conv_out and quant_conv on the whole latent -> (mean, logvar)."""
    enc = vae.encoder
    x = enc.mid_block(enc.down_blocks[-1](x))
    moments = enc.conv_out(enc.conv_norm_out(x))  # GroupNorm + SiLU
    if vae.quant_conv is not None:
        moments = vae.quant_conv(moments)
    mean, logvar = ops.split(moments, vae.config.latent_channels, axis=1)  # 2 x (B, latent, h, w)
    return mean, ops.clamp(logvar, *LOGVAR_RANGE)


def encode_tiled(vae: AutoencoderKL, x: ms.Tensor, plan: TilePlan, stats_passes: int = STATS_PASSES,
                 statistics: dict | None = None) -> tuple[ms.Tensor, ms.Tensor]:
    """`vae.encode(x)` tile by tile: image (B, 3, fh, fw) in [-1, 1] -> (mean, logvar), each (B, 4, h, w).

    plan: from `plan_tiles(vae.config, h, w, ..., encode=True)`, in latent px.
    """
    f = _factor(vae.config)
    _check("image", x.shape, plan, f)
    features = _tiled(lambda crop: _encoder_tile(vae, crop), x, plan, f, 1, stats_passes, statistics)
    return _encoder_latent_stage(vae, ms.Tensor(features))


def encode_statistics(vae: AutoencoderKL, x: ms.Tensor, plan: TilePlan, stats_passes: int = STATS_PASSES) -> dict:
    """The shared GroupNorm statistics `encode_tiled` would use; with a one-tile plan, the exact ones."""
    return _statistics(lambda crop: _encoder_tile(vae, crop), x, plan, _factor(vae.config), stats_passes)
