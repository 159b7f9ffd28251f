"""Tiled VAE decoding/encoding: exact plan tables, and tiled vs untiled on small random VAEs."""

import mindspore as ms
import numpy as np
import pytest

from studio import vae_tiling
from studio.errors import PlanError
from studio.geometry import Box
from studio.memory import GiB, MiB
from studio.memory_plan import plan_generation
from studio.models.t5 import T5Config
from studio.models.transformer import PixArtTransformerConfig
from studio.models.vae import AutoencoderKL, AutoencoderKLConfig
from studio.tiny import random_weights, t5_config, transformer_config, vae_config
from studio.vae_tiling import (Tile, decode_halo, encode_halo, grid_plan, plan_tiles, tiled_activations)


def config(channels, layers, groups=8) -> AutoencoderKLConfig:
    n = len(channels)
    return AutoencoderKLConfig(block_out_channels=channels, layers_per_block=layers, norm_num_groups=groups,
                               down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n)


SDXL = config((128, 256, 512, 512), 2, 32)
SMALL = config((16, 32, 32), 1)  # 3 blocks: f = 4; tiled norms: 9 in the decoder, 4 in the encoder


# -- plan: exact tables -------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg,decode,encode", [
    (SDXL, 7, 5),  # reach 50 px at 8x (6.25 latent px); encoder 4.5 latent px
    (SMALL, 4, 3),  # reach 16 px at 4x
    (AutoencoderKLConfig.from_dict(vae_config()), 5, 3),  # studio's tiny checkpoint: 36 px at 8x
    (config((32,), 1), 1, 0),  # one block, no resampling: conv_out only
])
def test_halos(cfg, decode, encode):
    assert (decode_halo(cfg), encode_halo(cfg)) == (decode, encode)


def test_grid_plan_table():
    plan = grid_plan(10, 7, tile=4, halo=2)
    assert plan.rows == ((0, 3), (3, 4), (7, 3)) and plan.cols == ((0, 4), (4, 3)) and plan.grid == (3, 2)
    assert plan.tiles[0] == Tile(core=Box(0, 0, 4, 3), crop=Box(0, 0, 6, 5))
    assert plan.tiles[3] == Tile(core=Box(4, 3, 3, 4), crop=Box(2, 1, 5, 8))
    assert plan.tiles[5] == Tile(core=Box(4, 7, 3, 3), crop=Box(2, 5, 5, 5))


@pytest.mark.parametrize("h,w,tile", [(37, 50, 12), (1, 1, 64), (270, 480, 64), (135, 240, 100), (64, 64, 64)])
def test_cores_partition_the_latent(h, w, tile):
    plan = grid_plan(h, w, tile, halo=7)
    covered = np.zeros((h, w), int)
    for t in plan.tiles:
        covered[t.core.y:t.core.bottom, t.core.x:t.core.right] += 1
        assert t.core.w <= tile and t.core.h <= tile
        assert t.crop.x == max(t.core.x - 7, 0) and t.crop.right == min(t.core.right + 7, w)
    assert (covered == 1).all()


# SDXL VAE at 3840x2160 (latent 480x270): budget for activations -> grid and largest core (rows, cols)
@pytest.mark.parametrize("budget,grid,core", [
    (16 * GiB, (2, 2), (135, 240)),
    (4 * GiB, (3, 4), (90, 120)),
    (2 * GiB, (4, 7), (68, 69)),
])
def test_plan_tiles_from_budget(budget, grid, core):
    plan = plan_tiles(SDXL, 270, 480, budget=budget)
    assert plan.grid == grid and plan.halo == 7
    assert (max(n for _, n in plan.rows), max(n for _, n in plan.cols)) == core
    assert tiled_activations(SDXL, plan) <= budget


def test_plan_tiles_defaults_and_errors():
    assert plan_tiles(SDXL, 128, 128).grid == (2, 2)  # DEFAULT_TILE 64 without a budget
    assert plan_tiles(SDXL, 128, 128, encode=True).halo == 5
    assert plan_tiles(SDXL, 270, 480, tile=100, budget=16 * GiB).grid == (3, 5)  # tile caps the budget's choice
    with pytest.raises(PlanError, match="VAE tiles of 16 latent px need 1.82 GiB .* budget gives 1.50 GiB"):
        plan_tiles(SDXL, 270, 480, budget=1536 * MiB)


def test_generation_plan_tiles_only_when_needed():
    tr = PixArtTransformerConfig.from_dict(transformer_config(sample_size=32, caption_channels=t5_config()["d_model"]))
    t5, vae = T5Config.from_dict(t5_config()), AutoencoderKLConfig.from_dict(vae_config())

    def decode(budget, tiling=None):
        return plan_generation(tr, t5, vae, 2160, 3840, budget=budget, vae_tiling=tiling).phases[2]

    assert decode(8 * GiB).tiles is None  # untiled fits
    assert decode(300 * MiB).tiles.grid == (5, 8)  # tile estimates carry the measured decode ratio (17/10)
    assert decode(8 * GiB, True).tiles.grid == (5, 8)  # forced: cores of at most DEFAULT_TILE
    assert decode(300 * MiB).peak <= 300 * MiB
    assert "vae: 5x8 tiles of <= 480x432 px + 40 px halo" in plan_generation(
        tr, t5, vae, 2160, 3840, budget=300 * MiB).describe()
    with pytest.raises(PlanError, match="decode phase"):
        decode(300 * MiB, False)
    with pytest.raises(PlanError, match="smallest budget that works"):
        decode(100 * MiB)


# -- execution: tiled vs untiled ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vae():
    model = AutoencoderKL(SMALL)
    weights = random_weights(model, 0)
    for name, p in model.parameters_and_names():
        p.set_data(ms.Tensor(weights[name]))
    return model


def uneven_latent(batch, h, w, seed=0) -> np.ndarray:
    """Normal noise with a loud left third and a bright patch: regions whose own GroupNorm statistics
    differ from the whole map's, as sky and foliage do."""
    z = np.random.default_rng(seed).standard_normal((batch, 4, h, w)).astype(np.float32)
    z[:, :, :, : w // 3] *= 3.0
    z[:, :2, h // 4: 2 * h // 3, 3 * w // 5: 9 * w // 10] += 2.5
    return z


def psnr(a, b, lo=-1.0, hi=1.0) -> float:
    """PSNR in dB of a against b, both mapped from [lo, hi] to [0, 1] (clipped)."""
    a, b = (np.clip((np.asarray(x, np.float64) - lo) / (hi - lo), 0, 1) for x in (a, b))
    return float(10 * np.log10(1.0 / max(np.mean((a - b) ** 2), 1e-30)))


H, W = 37, 50  # latent px: ragged against every tile size below


@pytest.fixture(scope="module")
def decoded(vae):
    z = ms.Tensor(uneven_latent(1, H, W))
    return z, vae.decode(z).asnumpy()


def test_tiled_decode_with_exact_statistics_is_exact(vae):
    """Halos wide enough: with the whole map's statistics (from a one-tile plan) every core is exact."""
    z = ms.Tensor(uneven_latent(2, 21, 30, seed=1))  # two samples: statistics per (sample, group)
    plan = plan_tiles(SMALL, 21, 30, tile=8)  # 3 x 4 tiles, cores 7 x 7-8 latent px, halo 4
    exact = vae_tiling.decode_statistics(vae, z, grid_plan(21, 30, 30, plan.halo), stats_passes=1)
    tiled = vae_tiling.decode_tiled(vae, z, plan, statistics=exact).asnumpy()
    assert np.abs(tiled - vae.decode(z).asnumpy()).max() < 1e-4


@pytest.mark.parametrize("tile,grid", [(12, (4, 5)), (20, (2, 3))])
def test_tiled_decode_matches_untiled(vae, decoded, tile, grid):
    z, untiled = decoded
    plan = plan_tiles(SMALL, H, W, tile=tile)
    assert plan.grid == grid
    shared = vae_tiling.decode_tiled(vae, z, plan).asnumpy()  # 2 statistics passes
    own = vae_tiling.decode_tiled(vae, z, plan, stats_passes=0).asnumpy()  # per-tile statistics
    assert psnr(shared, untiled) >= 45.0
    assert psnr(own, untiled) < 25.0  # without sharing: tone shifts and seams


def test_statistics_estimate_error(vae, decoded):
    """The two-pass estimate against the exact whole-map statistics, for all 9 tiled GroupNorms."""
    z, _ = decoded
    plan = plan_tiles(SMALL, H, W, tile=12)
    exact = vae_tiling.moments(vae_tiling.decode_statistics(vae, z, grid_plan(H, W, 64, plan.halo), 1))
    estimate = vae_tiling.moments(vae_tiling.decode_statistics(vae, z, plan))
    assert len(exact) == len(estimate) == 9
    for key, (mean, var) in exact.items():
        assert np.abs(estimate[key][1] / var - 1).max() < 0.03  # measured 1.5% at most
        assert (np.abs(estimate[key][0] - mean) / np.sqrt(var)).max() < 0.03  # measured 0.012 std at most


@pytest.mark.parametrize("tile", [20])
def test_tiled_encode_matches_untiled(vae, decoded, tile):
    image = ms.Tensor(np.clip(decoded[1], -1, 1))
    mean, logvar = (t.asnumpy() for t in vae.encode(image))
    plan = plan_tiles(SMALL, H, W, tile=tile, encode=True)
    assert plan.halo == 3 and plan.grid[0] >= 2 and plan.grid[1] >= 3
    t_mean, t_logvar = (t.asnumpy() for t in vae_tiling.encode_tiled(vae, image, plan))
    lo, hi = mean.min(), mean.max()
    assert psnr(t_mean, mean, lo, hi) >= 45.0
    assert psnr(t_logvar, logvar, logvar.min(), logvar.max()) >= 45.0
    own, _ = vae_tiling.encode_tiled(vae, image, plan, stats_passes=0)
    assert psnr(own.asnumpy(), mean, lo, hi) < 35.0


def test_pipeline_decodes_in_tiles(tiny_dir):
    from studio.pipeline import PixArtSigmaPipeline

    pipe = PixArtSigmaPipeline.from_pretrained(tiny_dir)
    latents = ms.Tensor(uneven_latent(1, 32, 24, seed=3) * pipe.vae.config.scaling_factor)
    plan = plan_tiles(pipe.vae.config, 32, 24, tile=12)
    assert plan.grid == (3, 2)
    untiled = pipe.decode(latents)
    assert psnr(pipe.decode(latents, plan), untiled) >= 45.0
    args = dict(prompt="a lighthouse", height=256, width=256, num_inference_steps=2, seed=1, output_type="np")
    forced = pipe(**args, vae_tiling=True).images  # one 32 x 32 tile at DEFAULT_TILE: same as untiled
    assert np.abs(forced - pipe(**args, vae_tiling=False).images).max() < 1e-4
