"""Tiled VAE decoding and encoding: a latent of any size <-> an image, in memory set by the tile, seam-free.

Plan (pure integers, latent px): `plan_tiles` cuts the latent into a grid of tile *cores* that partition it
exactly, as large as the memory budget allows.

Execute (`decode_tiled`, `encode_tiled`): the layers at latent resolution (decoder: conv_in, mid-block,
the first up block's ResNets; encoder: the last down block, mid-block, conv_out) run once over the whole
latent, the mid-block's attention through the budgeted `attention`. The layers at higher resolution run
one layer at a time over all tiles: each reads its input feature map in crops (the core at that
resolution plus the 1 px its 3x3 conv reaches), writes its output core to a new map, and adds up that
map's GroupNorm sums as it goes. Every GroupNorm therefore normalises with the
exact statistics of its whole input, and every pixel is computed exactly as untiled, up to float
rounding: cores simply abut, there is no seam to blend away and no tone shift between tiles. Memory holds
one tile's crops; the maps live in memory when the plan says so (`TilePlan.maps_in_memory`), else in
unnamed temporary files (`map_disk_bytes`), which the system frees even when the process is killed.
"""

import contextlib
import errno
import functools
import math
import mmap
import numbers
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import ops

from studio import backend
from studio.errors import InputError, PlanError
from studio.geometry import Box, split
from studio.memory import format_bytes
from studio.models.vae import LOGVAR_RANGE, AutoencoderKL, AutoencoderKLConfig
from studio.paths import expanded

DEFAULT_TILE = 64  # latent px (512 px), diffusers' tile for the SDXL VAE: the core when tiling is forced
MIN_TILE = 16  # latent px: the smallest core the budget search tries; below it launches cost most of the time
HALO = 1  # latent px a tile's crop may reach beyond its core: a 3x3 conv reads 1 px at its own resolution
# The largest core the budget search starts from, latent px (1024 px): larger tiles save little (crops grow
# by 1 px per layer) and their maps outgrow what MindSpore's CPU allocator takes in one tensor (~5.5 GiB;
# 256 channels at 2048^2 are 4 GiB).
MAX_TILE = 128
# Feature maps (latent px x widest channels, fp32) the decoder's latent-resolution stage holds at its peak,
# besides its attention's workspace, as estimated before the measured ratio (memory_plan.measured, 1.7x):
# 6 x 1.7 = 10.2, and 9.1-9.6 measured (peak RSS of the stage after a warm-up, c = 256 and 512 channels,
# 128^2 and 180^2 latents: x, its norms, conv outputs, q, k, v, the attention's tokens and output).
LATENT_STAGE_MAPS = 6
# Bytes a decode's activation is counted at, in every dtype: fp32's, which the estimates were measured in
# (memory_plan.DECODE_MEASURED_RATIO, UNTILED_DECODE_EXTRA); an fp16 decode on the CPU takes more, not half
# (MindSpore's fp16 CPU kernels keep wider temporaries: README, What is left).
DECODE_ITEMSIZE = 4


# -- plan ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tile:
    core: Box  # latent px this tile produces; the cores of a plan partition the latent exactly
    crop: Box  # the core grown by the halo on every side and clipped to the latent: a tile's reach, for sizing


@dataclass(frozen=True)
class TilePlan:
    """A grid of tiles over a height x width latent (latent px)."""

    height: int
    width: int
    halo: int
    rows: tuple[tuple[int, int], ...]  # (start, length) of each tile row
    cols: tuple[tuple[int, int], ...]
    maps_in_memory: bool = False  # feature maps in RAM (when the budget holds them), else in temporary files

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
        where = "in memory" if self.maps_in_memory else "in temporary files"
        return f"{rows}x{cols} tiles of <= {factor * w}x{factor * h} px, layer by layer, maps {where}"


def _check_px(height, width, tile) -> None:
    """PlanError unless the latent's height and width and the tile side are whole latent px, at least 1."""
    for name, value in (("latent height", height), ("latent width", width), ("tile side", tile)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise PlanError(f"{name} must be a whole number of latent px, at least 1, got {value!r}")


def grid_plan(height: int, width: int, tile: int, halo: int) -> TilePlan:
    """The fewest rows and columns of cores at most `tile` latent px on a side, sizes within 1 px."""
    _check_px(height, width, tile)
    return TilePlan(height, width, halo, tuple(split(height, math.ceil(height / tile))),
                    tuple(split(width, math.ceil(width / tile))))


def vae_decode_activations(cfg: AutoencoderKLConfig, height: int, width: int) -> int:
    """Bytes of the largest stage of the decoder's up path: input, GroupNorm/SiLU temporaries, conv out,
    residual."""
    rev, f = tuple(reversed(cfg.block_out_channels)), cfg.downsample_factor
    pixels = (height // f) * (width // f)
    peak = 0
    for i, c in enumerate(rev):
        c_in = rev[max(i - 1, 0)]
        peak = max(peak, pixels * (2 * c_in + 4 * c))
        if i < len(rev) - 1:  # nearest 2x then conv: the small input, the 4x upsampled map, the conv output
            peak = max(peak, pixels * c + 2 * 4 * pixels * c)
            pixels *= 4
    return DECODE_ITEMSIZE * (peak + 2 * pixels * cfg.out_channels)


def largest_decode_tensor(cfg: AutoencoderKLConfig, height: int, width: int, itemsize: int) -> int:
    """Bytes of the largest single feature map of an untiled decode to height x width px: each up stage's
    maps and its upsampler's output, at twice the resolution before the next stage narrows it."""
    rev, f = tuple(reversed(cfg.block_out_channels)), cfg.downsample_factor
    pixels = (height // f) * (width // f)
    largest = 0
    for i, c in enumerate(rev):
        largest = max(largest, pixels * max(c, rev[max(i - 1, 0)]))
        if i < len(rev) - 1:
            pixels *= 4
            largest = max(largest, pixels * c)
    return itemsize * largest


def tiled_activations(cfg: AutoencoderKLConfig, plan: TilePlan) -> int:
    """Bytes of a tiled decode besides the image it writes (the caller's output, `decode_tiled(out=)`) and
    the mid-block attention's workspace: the latent-resolution features, held throughout; the whole-latent
    stage (conv_in, mid-block, first up block: about LATENT_STAGE_MAPS maps at the widest channel count);
    and, on top of it, one tile's largest layer (that of the up path on the largest crop): MindSpore's
    pool keeps what the whole-latent stage took, and the tile passes grow it further (measured, README).
    The encoder's layers are smaller than the decoder's (no upsampling temporaries); the same bound serves."""
    f, c = cfg.downsample_factor, cfg.block_out_channels[-1]
    n = plan.height * plan.width
    # the largest crop: every row of tiles meets every column, so the tallest crop and the widest share a
    # tile (counted from the rows and columns: 16384^2 px in the smallest tiles are 16,384 tiles)
    tile = vae_decode_activations(cfg, f * _longest_crop(plan.rows, plan.halo, plan.height),
                                  f * _longest_crop(plan.cols, plan.halo, plan.width))
    return DECODE_ITEMSIZE * (n * c + LATENT_STAGE_MAPS * n * c) + tile


def _longest_crop(spans: tuple[tuple[int, int], ...], halo: int, total: int) -> int:
    """The longest of the (start, length) spans grown by `halo` each way and clipped to 0..total."""
    return max(min(start + length + halo, total) - max(start - halo, 0) for start, length in spans)


def plan_tiles(cfg: AutoencoderKLConfig, height: int, width: int, tile: int | None = None,
               budget: int | None = None) -> TilePlan:
    """Tiles for a height x width latent (latent px).

    tile: the largest core side in latent px (default: MAX_TILE with a budget, else DEFAULT_TILE);
    budget: bytes for activations (`tiled_activations`); the core is then the largest <= tile that fits.
    Raises PlanError naming the bytes the smallest tile needs when none fits, or a size that is not a whole
    number of latent px >= 1.
    """
    _check_px(height, width, DEFAULT_TILE if tile is None else tile)
    halo = HALO
    if budget is None:
        return grid_plan(height, width, DEFAULT_TILE if tile is None else tile, halo)
    side = min(max(height, width), MAX_TILE) if tile is None else tile
    while True:
        plan = grid_plan(height, width, side, halo)
        if tiled_activations(cfg, plan) <= budget:
            return plan
        if side <= MIN_TILE:
            raise PlanError(f"VAE tiles of {side} latent px need {format_bytes(tiled_activations(cfg, plan))} of "
                            f"activations for a {width}x{height} latent; the budget gives {format_bytes(budget)}")
        side = max(MIN_TILE, side - max(1, side // 16))  # ~6% steps: as fine as the size estimate


# -- execute ------------------------------------------------------------------------------------------------

CHANNEL_STEP = 16  # channels of a tile's crop mapped at once (`_Map._crops`)


class _Map:
    """A (B, C, H, W) fp32 feature map that a step writes tile by tile and the next step reads in crops, with
    the per-(sample, group) sums of everything written (the statistics of the GroupNorm that reads it).

    Held in `array` when given one (the caller's output, written here), in a new numpy array when there is
    no `folder` (the plan keeps the maps in memory), else in an unnamed temporary file in `folder` (its disk
    reserved when made, `_reserve`; the system frees it when the map is deleted or the process ends, SIGKILL
    included), mapped only while a tile is read or written so that the resident pages stay those of one
    tile's crop (`_crops`). Its contents come only through `write`, which adds up their sums: a map's
    statistics are always those of what it holds.
    """

    def __init__(self, shape: tuple[int, ...], groups: int, folder=None, array: np.ndarray | None = None,
                 shift: ms.Tensor | None = None):
        self.shape, self.groups = tuple(shape), groups
        self.shift = shift  # (C,): a conv bias not yet added to the stored values (the reader's norm adds it)
        self.array = np.empty(self.shape, np.float32) if array is None and folder is None else array
        self.file = None
        if self.array is None:
            self.file = tempfile.TemporaryFile(dir=folder)
            _reserve(self.file, 4 * math.prod(self.shape), folder)
        self.total = np.zeros(self.shape[:1] + (groups,))
        self.squares = np.zeros_like(self.total)

    @contextlib.contextmanager
    def _mapped(self, mode: str, random: bool = False):
        """(the whole map as an array, its file's mapping or None) for the block; from its file, mapped for the
        block (random: advised as random access, for crops: the kernel otherwise kept far more than the pages a
        crop touches, 485 MiB of a 512 MiB map for one 66 x 66 px tile). No view of it may outlive the block."""
        if self.array is not None:
            yield self.array, None
            return
        mapping = mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ if mode == "r" else mmap.ACCESS_WRITE)
        try:
            if random and hasattr(mapping, "madvise"):  # not on Windows
                mapping.madvise(mmap.MADV_RANDOM)
            yield np.ndarray(self.shape, np.float32, buffer=mapping), mapping
        finally:
            mapping.close()  # unmapped: its pages leave the resident set

    def _crops(self, mode: str, box: Box, fn: Callable[[slice, np.ndarray], None]) -> None:
        """fn(channels, the crop `box` of those channels: a view) for CHANNEL_STEP channels at a time; from a
        file, the pages of each step's channels are dropped from the mapping after it (they stay in the file and
        the page cache): a crop touches a page per channel and row of a map wider than a page (1024 px and up),
        which made a 256 px tile of a 256-channel map hold 260 MiB of pages, 8 times the tile."""
        with self._mapped(mode, random=True) as (m, mapping):
            step = self.shape[1] if mapping is None else CHANNEL_STEP
            for first in range(0, self.shape[1], step):
                fn(slice(first, first + step), m[:, first:first + step, box.y:box.bottom, box.x:box.right])
                if mapping is not None and hasattr(mapping, "madvise"):
                    self._drop(mapping, first, min(first + step, self.shape[1]))

    def _drop(self, mapping, first: int, end: int) -> None:
        """Drop channels first..end-1 of every sample from `mapping` (shared: written pages stay in the file)."""
        plane = 4 * self.shape[2] * self.shape[3]
        for b in range(self.shape[0]):
            start, stop = (b * self.shape[1] + first) * plane, (b * self.shape[1] + end) * plane
            start -= start % mmap.PAGESIZE
            mapping.madvise(mmap.MADV_DONTNEED, start, stop - start)

    def read(self, box: Box, dtype=ms.float32) -> ms.Tensor:
        t, crop = backend.filled_on_host(self.shape[:2] + (box.h, box.w))  # one copy, in MindSpore's pool on the CPU

        def take(channels, part):
            crop[:, channels] = part

        self._crops("r", box, take)
        return t if dtype == ms.float32 else t.astype(dtype)

    def write(self, box: Box, y: ms.Tensor, record: bool = True) -> None:
        if record:
            total, squares = backend.group_sums(y, self.groups, self.shift)
            self.total += total.asnumpy()
            self.squares += squares.asnumpy()
        values = (y if y.dtype == ms.float32 else y.astype(ms.float32)).asnumpy()

        def put(channels, part):
            part[...] = values[:, channels]

        self._crops("r+", box, put)

    def moments(self) -> tuple[ms.Tensor, ms.Tensor]:
        """(mean, biased variance) over the whole map, (B, groups) fp32, from float64 sums."""
        count = self.shape[1] // self.groups * self.shape[2] * self.shape[3]
        mean = self.total / count
        var = np.maximum(self.squares / count - mean * mean, 0.0)
        return ms.Tensor(mean, ms.float32), ms.Tensor(var, ms.float32)

    def delete(self) -> None:
        self.array = None
        if self.file is not None:
            self.file.close()


def _reserve(file, size: int, folder) -> None:
    """Give the new temporary file `size` bytes of disk now, so that a full disk is an OSError here naming
    `folder` (the file has none), not a SIGBUS when the mapping first writes a page. Sparse where the file
    system or platform can't reserve blocks, and there a full disk is still a SIGBUS. Closes the file on failure."""
    allocate = getattr(os, "posix_fallocate", None)  # none on macOS and Windows
    try:
        try:
            if allocate is None:
                file.truncate(size)
            else:
                allocate(file.fileno(), 0, size)
        except OSError as e:
            if allocate is None or e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            file.truncate(size)
    except OSError as e:
        file.close()
        hint = "; set STUDIO_TMPDIR to a folder on a larger disk" if e.errno == errno.ENOSPC else ""
        raise OSError(e.errno, f"{e.strerror} (tiled VAE feature maps{hint})", str(folder)) from e
    except BaseException:
        file.close()
        raise


def _grow(box: Box, before: int, after: int, height: int, width: int) -> Box:
    """box grown by `before` px up/left and `after` px down/right, clipped to height x width."""
    x0, y0 = max(box.x - before, 0), max(box.y - before, 0)
    x1, y1 = min(box.right + after, width), min(box.bottom + after, height)
    return Box(x0, y0, x1 - x0, y1 - y0)


def _scale(box: Box, num: int, den: int = 1) -> Box:
    return Box(box.x * num // den, box.y * num // den, box.w * num // den, box.h * num // den)


def _trim(y: ms.Tensor, origin: Box, core: Box) -> ms.Tensor:
    """The core's part of an output computed on a crop whose output starts at origin's corner."""
    if (y.shape[2], y.shape[3]) == (core.h, core.w):
        return y
    return backend.crop(y, core.y - origin.y, core.x - origin.x, core.h, core.w)


class _Steps:
    """Runs the tiled layers of a decoder or encoder one layer at a time over all tiles.

    Each step reads its input map in crops (a tile's core at the map's resolution, grown by the conv's
    reach: 1 px), computes the layer and writes the core to a new map, adding up its GroupNorm sums. A
    norm therefore always normalises with the exact statistics of its whole input map: every pixel is
    computed as in the untiled run, up to float rounding, whatever tile holds it. Used in a `with`, whose end
    deletes every map made here (those a failure left alive too: their files are closed, not left to the
    garbage collector).
    """

    def __init__(self, plan: TilePlan, groups: int, folder, dtype, passes: int,
                 progress: Callable[[int, int], None] | None = None):
        self.plan, self.groups, self.folder, self.dtype = plan, groups, folder, dtype
        self.total, self.done = passes * len(plan.tiles), 0  # progress in tile passes: one map() over one tile
        self.progress = progress
        self.maps: list[_Map] = []
        self._report()

    def __enter__(self) -> "_Steps":
        return self

    def __exit__(self, *exc) -> None:
        for m in self.maps:
            m.delete()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.done, self.total)

    def map(self, fn, src: _Map, r_in: int, r_out: int, channels: int, before: int = 1, after: int = 1,
            out: _Map | None = None, record: bool = True, shift: ms.Tensor | None = None) -> _Map:
        """out[core] = fn(read, origin, core) for every tile, `read()` giving the src crop: src at r_in px per latent
        px, out at r_out; the crop is the core at r_in grown by before/after px. fn reads the crop when it needs it,
        and it is freed once fn is done with it (passed in, the call kept it alive to the end). shift: the bias fn
        leaves out, for the sums."""
        if out is None:
            b, _, h, w = src.shape
            out = _Map((b, channels, h * r_out // r_in, w * r_out // r_in), self.groups, self.folder, shift=shift)
            self.maps.append(out)
        for tile in self.plan.tiles:
            crop = _grow(_scale(tile.core, r_in), before, after, src.shape[2], src.shape[3])
            core = _scale(tile.core, r_out)
            out.write(core, fn(functools.partial(src.read, crop, self.dtype), _scale(crop, r_out, r_in), core),
                      record)
            self.done += 1
            self._report()
        return out

    def conv(self, conv, src: _Map, r: int, norm=None, fuse_bias: bool = False) -> _Map:
        """A 3x3 conv (padding 1), after GroupNorm + SiLU with src's whole-map statistics if `norm`. With
        `fuse_bias` the conv's bias is left for the next norm to add in its own pass (the map's shift)."""
        stats = src.moments() if norm is not None else None

        def fn(read, origin, core):
            x = read() if norm is None else self.normalize(read(), stats, norm, src.shift)
            return _trim(conv.without_bias(x) if fuse_bias else conv(x), origin, core)
        return self.map(fn, src, r, r, conv.weight.shape[0], shift=conv.bias if fuse_bias else None)

    @staticmethod
    def normalize(x, stats, norm, shift):
        return backend.normalize_channels(x, *stats, norm.num_groups, norm.weight, norm.bias, norm.eps, norm.silu,
                                          shift)

    def resnet(self, resnet, src: _Map, r: int) -> _Map:
        """x + conv2(silu(norm2(conv1(silu(norm1(x)))))), the skip through conv_shortcut when it has one."""
        h = self.conv(resnet.conv1, src, r, resnet.norm1, fuse_bias=True)
        stats = h.moments()

        def fn(read, origin, core):  # the crop freed once normalized, before the skip's is read
            y = _trim(resnet.conv2.without_bias(self.normalize(read(), stats, resnet.norm2, h.shift)), origin, core)
            skip = src.read(core, self.dtype)
            if resnet.conv_shortcut is not None:
                skip = resnet.conv_shortcut(skip)
            return backend.residual_add(skip, y, resnet.conv2.bias)  # conv2's bias added in the same pass
        out = self.map(fn, h, r, r, resnet.conv2.weight.shape[0])
        h.delete()
        return out

    def block(self, block, src: _Map, r: int) -> tuple[_Map, int]:
        """An up or down block's ResNets, then its resampler if it has one: the output map and its px per
        latent px. Each input map is deleted once read for the last time."""
        for resnet in block.resnets:
            src, old = self.resnet(resnet, src, r), src
            old.delete()
        if getattr(block, "upsamplers", None) is not None:
            src, old, r = self.upsample(block.upsamplers[0], src, r), src, 2 * r
            old.delete()
        elif getattr(block, "downsamplers", None) is not None:
            src, old, r = self.downsample(block.downsamplers[0], src, r), src, r // 2
            old.delete()
        return src, r

    def upsample(self, upsampler, src: _Map, r: int) -> _Map:
        conv = upsampler.conv
        return self.map(lambda read, origin, core: _trim(backend.upsample2x_conv3x3(read(), conv.weight, conv.bias),
                                                         origin, core), src, r, 2 * r, conv.weight.shape[0])

    def downsample(self, downsampler, src: _Map, r: int) -> _Map:
        """The stride-2 conv padded only after: output px i reads input px 2i..2i+2, so crops grow 1 px
        down/right and start on even px (cores scaled by r, which is even here)."""
        conv = downsampler.conv
        return self.map(lambda read, origin, core: _trim(conv(read()), origin, core), src, r, r // 2,
                        conv.weight.shape[0], before=0, after=1)


def _folder(cfg: AutoencoderKLConfig, batch: int, height: int, width: int) -> str:
    """The folder for the feature maps of a tiled decode or encode of a batch x height x width latent:
    $STUDIO_TMPDIR (~ and $VARIABLES expanded) or the system's temporary folder; PlanError when its disk has less
    free than the maps take (`map_disk_bytes`, each map in whole blocks of the folder's file system)."""
    base = expanded(os.environ.get("STUDIO_TMPDIR") or tempfile.gettempdir())
    if not os.path.isdir(base):
        problem = "is a file, not a folder" if os.path.exists(base) else "no such folder"
        raise PlanError(f"STUDIO_TMPDIR={base}: {problem} (tiled VAE decoding keeps its feature maps there)")
    try:  # a folder that can't be written (read-only, no permission) fails here, not after the denoising
        tempfile.TemporaryFile(dir=base).close()
    except OSError as e:
        raise PlanError(f"{base}: cannot write there ({e.strerror or e}); tiled VAE decoding keeps its feature maps "
                        f"there (set STUDIO_TMPDIR to a writable folder)") from None
    statvfs = getattr(os, "statvfs", None)  # none on Windows
    need = map_disk_bytes(cfg, batch, height, width, max(statvfs(base).f_frsize, 1) if statvfs else 1)
    free = shutil.disk_usage(base).free
    if free < need:
        raise PlanError(f"tiled VAE needs {format_bytes(need)} of temporary disk for its feature maps; {base} has "
                        f"{format_bytes(free)} free (set STUDIO_TMPDIR to a folder on a larger disk)")
    return base


def check_map_disk(cfg: AutoencoderKLConfig, plan: TilePlan | None) -> None:
    """The PlanError a tiled decode (one image at a time) would raise when its maps go to files and their disk
    lacks room (`_folder`), raised now, before any work; nothing for an untiled decode or maps in memory."""
    if plan is not None and not plan.maps_in_memory:
        _folder(cfg, 1, plan.height, plan.width)


def map_disk_bytes(cfg: AutoencoderKLConfig, batch: int, height: int, width: int, block: int = 1) -> int:
    """Temporary disk of a tiled decode or encode of a height x width latent: the most maps alive at once,
    over every layer (a ResNet's input, inner map and output; a resampler's input and output). block: bytes
    of the file system's allocation unit, of which each map's file takes whole ones."""
    rev, ch, f = tuple(reversed(cfg.block_out_channels)), cfg.block_out_channels, cfg.downsample_factor

    def size(channels: int, s: int) -> int:  # a map at s px per latent px (area), in whole blocks
        return -(-4 * batch * height * width * channels * s // block) * block

    peaks = [size(rev[0], 4)]  # the first upsampler's output (its input is in memory)
    for i in range(1, len(rev)):  # decoder stage i at 2^i px per latent px
        s = 4 ** i
        peaks.append(size(rev[i - 1], s) + 2 * size(rev[i], s))
        if i < len(rev) - 1:
            peaks.append(size(rev[i], s) + size(rev[i], 4 * s))
    for k in range(len(ch) - 1):  # encoder block k at f / 2^k px per latent px
        s = (f >> k) ** 2
        peaks += [size(ch[max(k - 1, 0)], s) + 2 * size(ch[k], s), size(ch[k], s) + size(ch[k], s // 4)]
    return max(peaks)


def _block_passes(block) -> int:
    """map() calls of `_Steps.block`: two per ResNet, one for a resampler."""
    resampler = getattr(block, "upsamplers", None) is not None or getattr(block, "downsamplers", None) is not None
    return 2 * len(block.resnets) + resampler


def _check(what: str, shape, plan: TilePlan, f: int) -> None:
    if tuple(shape[2:]) != (plan.height * f, plan.width * f):
        raise InputError(f"{what} of size {shape[3]}x{shape[2]} does not match the tile plan's "
                         f"{plan.width * f}x{plan.height * f}")


def _decoder_latent_stage(vae: AutoencoderKL, z: ms.Tensor) -> ms.Tensor:
    """post_quant_conv, conv_in, mid-block and the first up block's ResNets, on the whole latent."""
    dec = vae.decoder
    x = vae.post_quant_conv(z) if vae.post_quant_conv is not None else z
    x = dec.mid_block(dec.conv_in(x))
    for resnet in dec.up_blocks[0].resnets:
        x = resnet(x)
    return x


def decode_tiled(vae: AutoencoderKL, z: ms.Tensor, plan: TilePlan,
                 progress: Callable[[int, int], None] | None = None, out: np.ndarray | None = None) -> ms.Tensor:
    """`vae.decode(z)` tile by tile: latent (B, C, h, w) already divided by scaling_factor -> image (B, 3, fh, fw).

    plan: from `plan_tiles(vae.config, h, w, ...)`. The layers at latent resolution run once on the whole
    latent; the rest one layer at a time over the tiles (`_Steps`), through feature maps in unnamed
    temporary files (`map_disk_bytes` of disk), or in memory when `plan.maps_in_memory`. progress(done,
    total) counts tile passes (one layer over one tile), from 0 before the latent-resolution stage.
    out: a C-contiguous float32 array (B, 3, fh, fw) the tiles are written into (a fp32 result shares it);
    else one is allocated.
    """
    _check("latent", z.shape, plan, 1)
    cfg, dec = vae.config, vae.decoder
    f = cfg.downsample_factor
    shape = (z.shape[0], cfg.out_channels, f * plan.height, f * plan.width)
    if out is not None and (out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous):
        raise InputError(f"decode_tiled: out must be a C-contiguous float32 array of shape {shape}, got "
                         f"{out.dtype} {out.shape}")
    folder = None if plan.maps_in_memory else _folder(cfg, z.shape[0], plan.height, plan.width)
    first_upsampler = dec.up_blocks[0].upsamplers is not None
    passes = first_upsampler + sum(_block_passes(block) for block in dec.up_blocks[1:]) + 1  # + conv_out
    with _Steps(plan, cfg.norm_num_groups, folder, z.dtype, passes, progress) as steps:
        x = _decoder_latent_stage(vae, z)  # (B, C, h, w)
        src, r = _Map(x.shape, cfg.norm_num_groups), 1  # in memory: small, and read by every tile of the next step
        src.write(Box(0, 0, plan.width, plan.height), x)  # with its sums: conv_norm_out reads it when f = 1
        del x
        if first_upsampler:
            src, r = steps.upsample(dec.up_blocks[0].upsamplers[0], src, r), 2 * r
        for block in dec.up_blocks[1:]:
            src, r = steps.block(block, src, r)
        image = _Map(shape, 1, array=np.empty(shape, np.float32) if out is None else out)
        norm = dec.conv_norm_out
        stats = src.moments()
        steps.map(lambda read, origin, core: _trim(dec.conv_out(steps.normalize(read(), stats, norm, src.shift)),
                                                   origin, core), src, r, r, cfg.out_channels, out=image, record=False)
    result = ms.from_numpy(image.array)  # shares the array: no copy
    return result if z.dtype == ms.float32 else result.astype(z.dtype)


def encode_tiled(vae: AutoencoderKL, x: ms.Tensor, plan: TilePlan,
                 progress: Callable[[int, int], None] | None = None) -> tuple[ms.Tensor, ms.Tensor]:
    """`vae.encode(x)` tile by tile: image (B, 3, fh, fw) in [-1, 1] -> (mean, logvar), each (B, 4, h, w).

    plan: from `plan_tiles(vae.config, h, w, ...)`, in latent px. conv_in and every down block
    but the last run one layer at a time over the tiles; the rest on the whole latent. progress(done, total)
    counts tile passes.
    """
    cfg, enc = vae.config, vae.encoder
    f = cfg.downsample_factor
    _check("image", x.shape, plan, f)
    folder = None if plan.maps_in_memory else _folder(cfg, x.shape[0], plan.height, plan.width)
    passes = 1 + sum(_block_passes(block) for block in enc.down_blocks[:-1])  # conv_in + blocks
    with _Steps(plan, cfg.norm_num_groups, folder, x.dtype, passes, progress) as steps:
        image = _Map(x.shape, 1)
        image.write(Box(0, 0, x.shape[3], x.shape[2]), x)
        src, r = steps.conv(enc.conv_in, image, f), f
        image.delete()
        for block in enc.down_blocks[:-1]:
            src, r = steps.block(block, src, r)
        with src._mapped("r") as (m, _):
            features = ms.Tensor(np.array(m)).astype(x.dtype)
    h = enc.mid_block(enc.down_blocks[-1](features))
    moments = enc.conv_out(enc.conv_norm_out(h))  # GroupNorm + SiLU
    if vae.quant_conv is not None:
        moments = vae.quant_conv(moments)
    mean, logvar = ops.split(moments, cfg.latent_channels, axis=1)  # 2 x (B, latent, h, w)
    return mean, ops.clamp(logvar, *LOGVAR_RANGE)
