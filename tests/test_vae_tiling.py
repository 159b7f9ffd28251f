"""Tiled VAE decoding/encoding: exact plan tables, and tiled == untiled on small random VAEs."""

import errno
import os
import re
from dataclasses import replace

import mindspore as ms
import numpy as np
import pytest

from studio import vae_tiling
from studio.errors import PlanError
from studio.geometry import Box
from studio.memory import GiB, MiB, attention_chunks, parse_bytes
from studio.memory_plan import measured, plan_generation, tiled_decode_activations
from studio.models.t5 import T5Config
from studio.models.transformer import PixArtTransformerConfig
from studio.models.vae import AutoencoderKL, AutoencoderKLConfig
from studio.tiny import random_weights, t5_config, transformer_config, vae_config
from studio.vae_tiling import HALO, Tile, grid_plan, map_disk_bytes, plan_tiles, tiled_activations
from tests.util import cache_environment


def config(channels, layers, groups=8) -> AutoencoderKLConfig:
    n = len(channels)
    return AutoencoderKLConfig(block_out_channels=channels, layers_per_block=layers, norm_num_groups=groups,
                               down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n)


SDXL = config((128, 256, 512, 512), 2, 32)
SMALL = config((16, 32, 32), 1)  # 3 blocks: f = 4


# -- plan: exact tables -------------------------------------------------------------------------------------

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
    (16 * GiB, (3, 4), (90, 120)),  # room for larger tiles: capped at MAX_TILE (128)
    (4 * GiB, (3, 5), (90, 96)),  # the tiles come on top of the latent stage's 7 maps of 265 MB
    (2 * GiB, (9, 15), (30, 32)),
])
def test_plan_tiles_from_budget(budget, grid, core):
    plan = plan_tiles(SDXL, 270, 480, budget=budget)
    assert plan.grid == grid and plan.halo == HALO == 1
    assert (max(n for _, n in plan.rows), max(n for _, n in plan.cols)) == core
    assert tiled_activations(SDXL, plan) <= budget


def test_tiled_activations_count_the_latent_stage_under_the_tiles():
    """The tile passes run on top of what the whole-latent stage took (MindSpore's pool keeps it): the
    features copied out (1 map), the stage's maps (LATENT_STAGE_MAPS, 6) and the largest tile's layer add
    up. SDXL VAE at 3840x2160: maps of 270 x 480 x 512 fp32 (265 MB), the largest crop 56 x 62 latent px."""
    plan = plan_tiles(SDXL, 270, 480, tile=64)
    assert plan.grid == (5, 8) and vae_tiling.vae_decode_activations(SDXL, 8 * 56, 8 * 62) == 4 * 228_874_240
    assert tiled_activations(SDXL, plan) == 4 * (7 * 270 * 480 * 512 + 228_874_240)


def test_plan_tiles_defaults_and_errors():
    assert plan_tiles(SDXL, 128, 128).grid == (2, 2)  # DEFAULT_TILE 64 without a budget
    assert plan_tiles(SDXL, 270, 480, tile=100, budget=16 * GiB).grid == (3, 5)  # tile caps the budget's choice
    with pytest.raises(PlanError, match="VAE tiles of 16 latent px need 1.81 GiB .* budget gives 1.50 GiB"):
        plan_tiles(SDXL, 270, 480, budget=1536 * MiB)


@pytest.mark.parametrize("height,width,tile,budget,message", [
    (0, 5, None, None, "latent height must be a whole number of latent px, at least 1, got 0"),
    (5, 0, None, GiB, "latent width must be a whole number of latent px, at least 1, got 0"),
    (-3, 5, None, None, "latent height must be a whole number of latent px, at least 1, got -3"),
    (100, 100, 0, None, "tile side must be a whole number of latent px, at least 1, got 0"),  # not the default
    (100, 100, 0, GiB, "tile side must be a whole number of latent px, at least 1, got 0"),
    (100, 100, 2.5, None, "tile side must be a whole number of latent px, at least 1, got 2.5"),
    (100.0, 100, None, None, "latent height must be a whole number of latent px, at least 1, got 100.0"),
])
def test_plan_tiles_rejects_sizes(height, width, tile, budget, message):
    with pytest.raises(PlanError, match=f"^{re.escape(message)}$"):
        plan_tiles(SDXL, height, width, tile=tile, budget=budget)
    with pytest.raises(PlanError, match=f"^{re.escape(message)}$"):
        grid_plan(height, width, 64 if tile is None else tile, HALO)


def test_plan_tiles_takes_numpy_integers():
    assert plan_tiles(SDXL, np.int64(128), np.int32(128), tile=np.int64(64)) == plan_tiles(SDXL, 128, 128, tile=64)


def test_generation_plan_tiles_only_when_needed():
    tr = PixArtTransformerConfig.from_dict(transformer_config(sample_size=32, caption_channels=t5_config()["d_model"]))
    t5, vae = T5Config.from_dict(t5_config()), AutoencoderKLConfig.from_dict(vae_config())

    def decode(budget, tiling=None):
        return plan_generation(tr, t5, vae, 2160, 3840, budget=budget, vae_tiling=tiling).phases[2]

    assert decode(8 * GiB).tiles is None  # untiled fits
    assert decode(300 * MiB).tiles.grid == (7, 12)  # tile estimates carry the measured decode ratio (17/10)
    assert decode(8 * GiB, True).tiles.grid == (5, 8)  # forced: cores of at most DEFAULT_TILE
    # the maps in memory when they take at most half of what is left beside what denoising held (MindSpore's
    # pool keeps it: at 8 GiB the chunked attention filled it), and then counted as activations
    maps = map_disk_bytes(vae, 1, 270, 480)
    assert not decode(300 * MiB).tiles.maps_in_memory and not decode(8 * GiB, True).tiles.maps_in_memory
    assert decode(64 * GiB, True).tiles.maps_in_memory  # denoising's scores stop at MAX_TENSOR: room is left
    assert decode(64 * GiB, True).activations == (measured(tiled_activations(vae, decode(64 * GiB, True).tiles)) + maps
                                                  + 3 * 2160 * 3840 * 4)  # and the image
    assert decode(300 * MiB).peak <= 300 * MiB
    assert "vae: 7x12 tiles of <= 320x312 px, layer by layer" in plan_generation(
        tr, t5, vae, 2160, 3840, budget=300 * MiB).describe()
    with pytest.raises(PlanError, match="decode phase"):
        decode(300 * MiB, False)
    with pytest.raises(PlanError, match="smallest budget that works"):
        decode(100 * MiB)


def test_the_decode_phase_counts_every_output_image():
    """pipeline.decode writes the N images into one (N, 3, H, W) float32 array: the plan counts all of it."""
    tr = PixArtTransformerConfig.from_dict(transformer_config(sample_size=32, caption_channels=t5_config()["d_model"]))
    t5, vae = T5Config.from_dict(t5_config()), AutoencoderKLConfig.from_dict(vae_config())
    for tiling in (False, True):
        one, three = (plan_generation(tr, t5, vae, 1024, 1024, images=n, vae_tiling=tiling).phases[2] for n in (1, 3))
        assert three.tiles == one.tiles and three.activations - one.activations == 2 * 3 * 1024 * 1024 * 4
    plan = plan_generation(tr, t5, vae, 1024, 1024, images=3, budget=96 * MiB)
    three, outputs = plan.phases[2], 3 * 3 * 1024 * 1024 * 4
    assert three.tiles is not None and three.peak <= 96 * MiB
    assert three.activations == outputs + tiled_decode_activations(vae, three.tiles)


def _configs(model: str) -> tuple:
    """(transformer, T5, VAE) configs: the tiny checkpoint's, or PixArt-Sigma XL's as published."""
    if model == "xl":
        from studio.plan import PUBLISHED, SDXL_VAE
        return PUBLISHED["PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"], T5Config(), SDXL_VAE
    return (PixArtTransformerConfig.from_dict(transformer_config(sample_size=32, caption_channels=t5_config()["d_model"])),
            T5Config.from_dict(t5_config()), AutoencoderKLConfig.from_dict(vae_config()))


# the smallest budget named, as printed (rounded up): README quotes the 1024^2 to 3840x2160 ones. From
# 12288^2 the smallest attention block outgrows MAX_TENSOR (test_memory.py) and the capped blocks decide.
@pytest.mark.parametrize("model,height,width,images,named", [
    ("tiny", 1024, 1024, 1, "35.67 MiB"), ("tiny", 1024, 1024, 3, "59.67 MiB"), ("tiny", 256, 256, 1, "9.45 MiB"),
    ("tiny", 608, 800, 1, "20.29 MiB"), ("tiny", 2048, 2048, 1, "119.51 MiB"), ("tiny", 1024, 4096, 1, "119.51 MiB"),
    ("tiny", 2160, 3840, 1, "259.72 MiB"), ("tiny", 256, 8192, 1, "63.22 MiB"),
    ("tiny", 12288, 12288, 1, "19.37 GiB"), ("tiny", 8192, 16384, 1, "18.97 GiB"),
    ("tiny", 16384, 16384, 1, "21.93 GiB"), ("tiny", 8192, 32768, 1, "21.93 GiB"),
    ("xl", 1024, 1024, 1, "4.26 GiB"), ("xl", 2048, 2048, 1, "4.28 GiB"), ("xl", 2160, 3840, 1, "5.83 GiB"),
    ("xl", 12288, 12288, 1, "73.96 GiB"), ("xl", 8192, 16384, 1, "67.80 GiB"),
    ("xl", 16384, 16384, 1, "116.87 GiB"), ("xl", 8192, 32768, 1, "116.87 GiB"),
])
def test_the_smallest_budget_named_works(model, height, width, images, named):
    """The smallest budget (`GenerationPlan.minimum`, what a refusal names) plans, exactly and as printed,
    within itself, and so does every larger budget; one byte less is refused. Every attention then runs in
    at most ~64 x 64 blocks (the 4K decode's mid-block took 266,175 before), or, where a block that size
    would pass MAX_TENSOR, in the capped blocks that no budget enlarges. (16384^2 on the tiny checkpoint
    named 70 GiB, which was refused for 94 GiB, which was refused for 94.36 GiB.)"""
    configs = _configs(model)
    minimum = plan_generation(*configs, height, width, images).minimum
    with pytest.raises(PlanError, match=f"the smallest budget that works is {named}$"):
        plan_generation(*configs, height, width, images, budget=minimum - 1)
    for budget in (minimum, parse_bytes(named), int(minimum * 1.0001), 2 * minimum, 10 * minimum):
        plan = plan_generation(*configs, height, width, images, budget=budget)
        assert plan.peak <= budget and plan.minimum == minimum
        for phase in plan.phases:
            for i, ((what, bh, nq, nk, d), c) in enumerate(zip(phase.attention, phase.chunks)):
                rows = phase.chunks[i - 1].q if what == "cross" else nq  # cross: in the self-attention's row blocks
                blocks = -(-rows // c.q) * -(-nk // c.k) * -(-nq // rows)
                assert blocks <= 5120 or c == attention_chunks(bh, rows, nk, d, None), (budget, phase.name, what, c)


def test_untiled_decode_beyond_max_tensor_is_refused_when_forced():
    tr = PixArtTransformerConfig.from_dict(transformer_config(sample_size=32, caption_channels=t5_config()["d_model"]))
    with pytest.raises(PlanError, match=r"untiled decode of 2560x2560 makes a 6.25 GiB feature map.*--vae-tiling"):
        plan_generation(tr, T5Config.from_dict(t5_config()), SDXL, 2560, 2560, budget=1024 * GiB, vae_tiling=False)


@pytest.mark.parametrize("side,largest,tiled", [
    (1024, 1 * GiB, False),  # 256 ch at 1024^2: the upsampler into the last stage
    (2048, 4 * GiB, False),  # exactly MAX_TENSOR: allocates (measured untiled at 2048^2)
    (2560, 256 * 2560 ** 2 * 4, True),  # 6.25 GiB: MindSpore's CPU allocator refuses it, so tiles
])
def test_untiled_decode_only_when_its_maps_can_be_allocated(side, largest, tiled):
    """However large the budget, a decode whose largest feature map exceeds MAX_TENSOR runs in tiles."""
    assert vae_tiling.largest_decode_tensor(SDXL, side, side, 4) == largest
    tr = PixArtTransformerConfig.from_dict(transformer_config(sample_size=32, caption_channels=t5_config()["d_model"]))
    decode = plan_generation(tr, T5Config.from_dict(t5_config()), SDXL, side, side, budget=1024 * GiB).phases[2]
    assert (decode.tiles is not None) == tiled
    if tiled:  # the budget holds the maps twice over: in memory. The most alive at once: the last stage's
        # first ResNet at 8x8 px per latent px, its 256-channel input, 128-channel inner map and output
        assert decode.tiles.maps_in_memory and map_disk_bytes(SDXL, 1, 320, 320) == 4 * 320 ** 2 * 64 * (256 + 2 * 128)


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


@pytest.mark.parametrize("tile,grid", [(12, (4, 5)), (20, (2, 3)), (5, (8, 10))])
def test_tiled_decode_equals_untiled(vae, decoded, tile, grid):
    """Every GroupNorm sees its whole map's statistics, every conv its real neighbours: the same image,
    down to cores of 5 x 5 latent px (8 x 10 tiles)."""
    z, untiled = decoded
    plan = plan_tiles(SMALL, H, W, tile=tile)
    assert plan.grid == grid
    tiled = vae_tiling.decode_tiled(vae, z, plan).asnumpy()
    assert np.abs(tiled - untiled).max() < 1e-4 and psnr(tiled, untiled) >= 90.0


@pytest.mark.parametrize("tile,grid", [(64, (1, 1)), (3, (2, 2))])
def test_tiled_decode_of_a_one_block_vae(tile, grid):
    """Downsample factor 1 (AutoencoderKLConfig's defaults): no upsampler, so conv_norm_out reads the
    latent-resolution map itself, whose GroupNorm sums must be recorded like every other map's."""
    cfg = config((16,), 1)
    model = AutoencoderKL(cfg)
    weights = random_weights(model, 0)
    for name, p in model.parameters_and_names():
        p.set_data(ms.Tensor(weights[name]))
    z = ms.Tensor(uneven_latent(2, 5, 6))
    plan = plan_tiles(cfg, 5, 6, tile=tile)
    assert plan.grid == grid
    assert np.abs(vae_tiling.decode_tiled(model, z, plan).asnumpy() - model.decode(z).asnumpy()).max() < 1e-4


def test_tiled_decode_batch_and_own_statistics(vae):
    """Statistics are per (sample, group): a batch of two differently scaled latents decodes as untiled,
    while decoding the same tiles independently (own statistics, no neighbours) does not come close."""
    z = uneven_latent(2, 21, 30, seed=1)
    z[1] *= 0.5
    z = ms.Tensor(z)
    untiled = vae.decode(z).asnumpy()
    plan = plan_tiles(SMALL, 21, 30, tile=8)
    assert plan.grid == (3, 4)
    assert np.abs(vae_tiling.decode_tiled(vae, z, plan).asnumpy() - untiled).max() < 1e-4
    own = np.concatenate([np.concatenate([vae.decode(z[:, :, y:y + 7, x:x + 10]).asnumpy()
                                          for x in (0, 10, 20)], axis=3) for y in (0, 7, 14)], axis=2)
    assert psnr(own, untiled) < 30.0


@pytest.mark.parametrize("tile", [20, 7])
def test_tiled_encode_equals_untiled(vae, decoded, tile):
    image = ms.Tensor(np.clip(decoded[1], -1, 1))
    mean, logvar = (t.asnumpy() for t in vae.encode(image))
    plan = plan_tiles(SMALL, H, W, tile=tile)
    assert plan.grid[0] >= 2 and plan.grid[1] >= 3
    calls = []
    t_mean, t_logvar = (t.asnumpy() for t in vae_tiling.encode_tiled(vae, image, plan, lambda *c: calls.append(c)))
    passes = 1 + 2 * (2 * 1 + 1)  # conv_in, then 2 down blocks of 1 ResNet (2 convs) and a downsampler
    assert calls == [(done, passes * len(plan.tiles)) for done in range(passes * len(plan.tiles) + 1)]
    assert np.abs(t_mean - mean).max() < 1e-4 * np.abs(mean).max()
    assert np.abs(t_logvar - logvar).max() < 1e-4 * np.abs(logvar).max()
    assert psnr(t_mean, mean, mean.min(), mean.max()) >= 45.0  # on the latents' own range


def test_feature_maps_use_a_temporary_folder(vae, decoded, tmp_path, monkeypatch):
    """The maps are unnamed files in $STUDIO_TMPDIR (nothing left behind, even if killed); too little disk is
    a one-line PlanError."""
    z, _ = decoded
    monkeypatch.setenv("STUDIO_TMPDIR", str(tmp_path))
    folders = []
    temporary_file = vae_tiling.tempfile.TemporaryFile
    monkeypatch.setattr(vae_tiling.tempfile, "TemporaryFile", lambda dir: folders.append(dir) or temporary_file(dir=dir))
    calls = []
    plan = plan_tiles(SMALL, H, W, tile=20)
    vae_tiling.decode_tiled(vae, z, plan, progress=lambda done, total: calls.append((done, total)))
    # one probe that the folder takes files (before any work), then 2 upsamplers, 2 x 2 ResNets x 2 maps
    assert len(folders) == 1 + 10 and set(folders) == {str(tmp_path)}
    # progress: one pass per map and tile, and one more per tile for conv_out into the image
    assert calls == [(done, 11 * 6) for done in range(11 * 6 + 1)] and plan.grid == (2, 3)
    assert list(tmp_path.iterdir()) == []
    # the largest: the last up stage's first ResNet at 4x, input 32 ch, inner map and output 16 ch
    assert map_disk_bytes(SMALL, 1, H, W) == 4 * 37 * 50 * 16 * (32 + 16 + 16)
    monkeypatch.setattr(vae_tiling.shutil, "disk_usage", lambda path: type("U", (), {"free": 1000})())
    with pytest.raises(PlanError, match=r"tiled VAE needs .* of temporary disk .* has 1000 B free \(set STUDIO_TMPDIR"):
        vae_tiling.decode_tiled(vae, z, plan_tiles(SMALL, H, W, tile=20))


def test_a_full_disk_while_decoding_is_an_error_naming_the_folder(vae, decoded, tmp_path, monkeypatch):
    """Each map's disk is reserved when it is made: a disk that fills up after the plan's check is an OSError
    naming the folder there, not a SIGBUS on writing a page of the mapping. Every map's file is closed and
    nothing is left behind."""
    z, _ = decoded
    monkeypatch.setenv("STUDIO_TMPDIR", str(tmp_path))
    reserved, opened = [], []
    temporary_file = vae_tiling.tempfile.TemporaryFile

    def opening(dir):
        opened.append(temporary_file(dir=dir))
        return opened[-1]
    monkeypatch.setattr(vae_tiling.tempfile, "TemporaryFile", opening)

    def fallocate(fd, offset, size):
        if len(reserved) == 2:  # the third map: the first ResNet's output
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        reserved.append((offset, size))
        os.ftruncate(fd, offset + size)  # the file's length, as posix_fallocate gives it
    monkeypatch.setattr(os, "posix_fallocate", fallocate)
    plan = plan_tiles(SMALL, H, W, tile=20)
    with pytest.raises(OSError) as info:
        vae_tiling.decode_tiled(vae, z, plan)
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(tmp_path))
    assert info.value.strerror == ("No space left on device (tiled VAE feature maps; set STUDIO_TMPDIR to a folder on "
                                   "a larger disk)")
    assert reserved == [(0, 4 * 32 * 37 * 50 * 4), (0, 4 * 32 * 37 * 50 * 4)]  # the upsampler's, the inner map
    assert len(opened) == 1 + 3 and all(f.closed for f in opened) and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("unsupported", ["EOPNOTSUPP", "EINVAL", "missing"])
def test_maps_are_sparse_files_where_blocks_cannot_be_reserved(vae, decoded, tmp_path, monkeypatch, unsupported):
    """A file system without fallocate, or a platform without posix_fallocate (macOS, Windows): as before."""
    z, untiled = decoded
    monkeypatch.setenv("STUDIO_TMPDIR", str(tmp_path))

    def fallocate(fd, offset, size):
        code = getattr(errno, unsupported)
        raise OSError(code, os.strerror(code))
    if unsupported == "missing":
        monkeypatch.delattr(os, "posix_fallocate", raising=False)
    else:
        monkeypatch.setattr(os, "posix_fallocate", fallocate)
    tiled = vae_tiling.decode_tiled(vae, z, plan_tiles(SMALL, H, W, tile=20)).asnumpy()
    assert np.abs(tiled - untiled).max() < 1e-4 and list(tmp_path.iterdir()) == []


def test_the_disk_check_counts_the_maps_in_whole_blocks(tmp_path, monkeypatch):
    """A map's file takes whole blocks of its file system, and the check counts them: at 4 KiB, the last up
    stage's first ResNet (4x, as in test_feature_maps_use_a_temporary_folder) takes 925 blocks for its input
    and 463 (462.5) for each 16-channel map; one byte less free is refused."""
    assert map_disk_bytes(SMALL, 1, H, W, block=4096) == 4096 * (925 + 2 * 463) == map_disk_bytes(SMALL, 1, H, W) + 4096
    monkeypatch.setenv("STUDIO_TMPDIR", str(tmp_path))
    monkeypatch.setattr(os, "statvfs", lambda path: type("S", (), {"f_frsize": 4096})(), raising=False)
    free = [4096 * (925 + 2 * 463) - 1]
    monkeypatch.setattr(vae_tiling.shutil, "disk_usage", lambda path: type("U", (), {"free": free[0]})())
    plan = plan_tiles(SMALL, H, W, tile=20)
    with pytest.raises(PlanError, match=r"tiled VAE needs 7\.23 MiB of temporary disk .* has 7\.23 MiB free"):
        vae_tiling.check_map_disk(SMALL, plan)
    free[0] += 1
    vae_tiling.check_map_disk(SMALL, plan)


@pytest.mark.parametrize("value, expected", [("~/t", "t"), ("$CACHES/t", "caches/t")])
def test_the_temporary_folder_is_expanded_as_the_cache_is(tmp_path, monkeypatch, value, expected):
    """$STUDIO_TMPDIR with ~ and $VARIABLES expanded, as $STUDIO_CACHE is ('~/t' was 'no such folder')."""
    cache_environment(monkeypatch, tmp_path, {})
    (tmp_path / expected).mkdir(parents=True)
    monkeypatch.setenv("STUDIO_TMPDIR", value)
    folders, temporary_file = [], vae_tiling.tempfile.TemporaryFile
    monkeypatch.setattr(vae_tiling.tempfile, "TemporaryFile",
                        lambda dir: folders.append(dir) or temporary_file(dir=dir))
    vae_tiling.check_map_disk(SMALL, plan_tiles(SMALL, H, W, tile=20))
    assert folders == [str(tmp_path / expected)]
    assert list((tmp_path / expected).iterdir()) == []


def test_a_temporary_folder_that_is_a_file_or_missing_is_said_to_be(tmp_path, monkeypatch):
    plan = plan_tiles(SMALL, H, W, tile=20)
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("STUDIO_TMPDIR", str(tmp_path / "afile"))
    with pytest.raises(PlanError) as info:
        vae_tiling.check_map_disk(SMALL, plan)
    assert str(info.value) == (f"STUDIO_TMPDIR={tmp_path / 'afile'}: is a file, not a folder (tiled VAE decoding "
                               f"keeps its feature maps there)")
    cache_environment(monkeypatch, tmp_path, {})
    monkeypatch.setenv("STUDIO_TMPDIR", "~/nowhere")
    with pytest.raises(PlanError) as info:
        vae_tiling.check_map_disk(SMALL, plan)
    assert str(info.value) == (f"STUDIO_TMPDIR={tmp_path / 'nowhere'}: no such folder (tiled VAE decoding keeps its "
                               f"feature maps there)")


def test_maps_in_memory(vae, decoded, monkeypatch):
    """A plan that keeps the maps in memory decodes the same image and opens no temporary file."""
    z, untiled = decoded
    monkeypatch.setattr(vae_tiling.tempfile, "TemporaryFile", lambda dir: pytest.fail("a temporary file"))
    plan = replace(plan_tiles(SMALL, H, W, tile=12), maps_in_memory=True)
    assert "maps in memory" in plan.describe()
    assert np.abs(vae_tiling.decode_tiled(vae, z, plan).asnumpy() - untiled).max() < 1e-4


def test_pipeline_decodes_in_tiles(tiny_dir, monkeypatch):
    from studio.pipeline import PixArtSigmaPipeline

    pipe = PixArtSigmaPipeline.from_pretrained(tiny_dir)
    latents = ms.Tensor(uneven_latent(1, 32, 24, seed=3) * pipe.vae.config.scaling_factor)
    plan = plan_tiles(pipe.vae.config, 32, 24, tile=12)
    assert plan.grid == (3, 2)
    untiled = pipe.decode(latents)
    assert np.abs(pipe.decode(latents, plan) - untiled).max() < 1e-4
    # two images decode one at a time, each straight into its part of one output array (no copy of the
    # pair): the same images, progress over both
    calls, outs = [], []
    decode_tiled = vae_tiling.decode_tiled
    monkeypatch.setattr(vae_tiling, "decode_tiled", lambda *a, out=None: outs.append(out) or decode_tiled(*a, out=out))
    pair = pipe.decode(ms.ops.cat([latents, latents * 0.5]), plan, lambda *call: calls.append(call))
    assert len(outs) == 2 and all(np.shares_memory(out, pair[i]) for i, out in enumerate(outs))
    monkeypatch.undo()
    assert np.abs(pair[:1] - untiled).max() < 1e-4 and np.abs(pair[1:] - pipe.decode(latents * 0.5)).max() < 1e-4
    per_image = len(calls) // 2  # calls (0..T, T..2T): T + 1 each
    assert calls[0] == (0, 2 * (per_image - 1)) and calls[-1] == (2 * (per_image - 1),) * 2
    args = dict(prompt="a lighthouse", height=256, width=256, num_inference_steps=2, seed=1, output_type="np")
    phases = {True: [], False: []}
    forced, untiled = (pipe(**args, vae_tiling=tiled, progress=lambda *call, tiled=tiled: phases[tiled].append(call))
                       for tiled in (True, False))
    # one 32 x 32 tile at DEFAULT_TILE: the same image as untiled
    assert np.abs(forced.images - untiled.images).max() < 1e-4
    start = [("text", 0, 1), ("text", 1, 1), ("denoise", 0, 2), ("denoise", 1, 2), ("denoise", 2, 2)]
    assert phases[False] == start + [("decode", 0, 1), ("decode", 1, 1)]
    decode = phases[True][len(start):]
    assert phases[True][:len(start)] == start and decode == [("decode", d, len(decode) - 1) for d in range(len(decode))]
    # automatic: a budget the untiled decode would exceed tiles it, 2 x 2 here, and changes nothing
    from studio import pipeline
    assert pipeline.plan(tiny_dir, 256, 256, memory_budget="16MiB").phases[2].tiles.grid == (2, 2)
    auto = pipe(**args, memory_budget="16MiB")
    assert np.abs(auto.images - untiled.images).max() < 1e-3


def _resident_file_bytes() -> int:
    """The process's resident pages of files: RssFile, and RssShmem for a tmpfs (a temporary folder in memory)."""
    with open("/proc/self/status") as status:
        return sum(int(line.split()[1]) * 1024 for line in status if line.startswith(("RssFile:", "RssShmem:")))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads Linux's /proc/self/status")
def test_a_tiles_crop_of_a_map_in_a_file_holds_the_pages_of_a_few_channels_at_a_time(tmp_path, monkeypatch):
    """A 16 px wide crop of a map 1024 px wide touches a page per channel and row: written or read whole, it held
    all 64 MiB of this map (and the kernel's fault-around mapped more); CHANNEL_STEP channels at a time, it
    holds 16 MiB at most. The values go in and come out as they are."""
    shape, box = (1, 64, 256, 1024), Box(500, 0, 16, 256)
    tile = np.random.default_rng(0).standard_normal((1, 64, 256, 16)).astype(np.float32)
    drop, held = vae_tiling._Map._drop, []

    def dropping(self, mapping, first, end):
        held.append(_resident_file_bytes() - before)
        drop(self, mapping, first, end)
    monkeypatch.setattr(vae_tiling._Map, "_drop", dropping)
    feature_map, values = vae_tiling._Map(shape, 32, folder=tmp_path), ms.Tensor(tile)
    values.asnumpy()  # MindSpore's pages for it, before the count starts
    before = _resident_file_bytes()
    feature_map.write(box, values, record=False)
    np.testing.assert_array_equal(feature_map.read(box).asnumpy(), tile)
    assert len(held) == 2 * 64 // vae_tiling.CHANNEL_STEP
    step = vae_tiling.CHANNEL_STEP * 256 * 4096  # a page per channel and row
    assert step <= max(held) < step + 4 * MiB
    feature_map.delete()


def _resident_bytes() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads Linux's /proc/self/status")
def test_a_crop_is_read_into_memory_mindspores_pool_already_holds():
    """A tile's crop lands in MindSpore's pool on the CPU (`backend.filled_on_host`), where the pool's high-water
    mark from denoising is already resident, not in new numpy memory on top of it: a 64 MiB crop read after a
    64 MiB tensor was freed grows the process by far less than 64 MiB (a numpy crop grew it by all of it). The
    values are the map's."""
    shape, box = (1, 64, 512, 512), Box(0, 0, 512, 512)
    values = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    feature_map = vae_tiling._Map(shape, 32, array=values)
    warm = ms.Tensor(values) * 2  # the pool's high-water mark: one crop's bytes, freed
    warm.asnumpy()
    del warm
    before = _resident_bytes()
    crop = feature_map.read(box)
    grown = _resident_bytes() - before
    np.testing.assert_array_equal((crop * 1).asnumpy(), values)
    assert grown < 16 * MiB
