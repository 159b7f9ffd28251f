"""Tiled vs untiled SDXL VAE decoding in studio (MindSpore) and diffusers (PyTorch), fp32, random weights.

Usage: python benchmarks/vae_tiling.py [--sizes 1024 2048] [--big 3840x2160] [--tile 64] [--big-tile 64]
       [--roles studio-untiled studio-tiled studio-memtiled torch-untiled torch-tiled]

One diffusers AutoencoderKL with the published SDXL config and random weights
is saved once. For each square size, five runs (or --roles), each in its own subprocess so that its peak
RSS is its own: studio untiled, studio tiled (`vae_tiling.decode_tiled`, cores of --tile latent px, feature
maps in temporary files), studio tiled with the maps in memory ("memtiled"), diffusers untiled and
diffusers `enable_tiling()` with its 512 px tiles (tile_sample_min_size, 25% overlap, linear blend).
Each run loads the model, then decodes one latent once, timed (no warm-up call: it would double the
time of the largest runs, and a first call costs well under a second more here). Then studio
tiled alone at --big. The latent is standard normal with its amplitude varying smoothly from 0.4 to 1.6
across the image (flat and busy regions, which per-tile GroupNorm statistics tell apart). Prints seconds,
peak RSS and each tiled image's PSNR (and largest difference) against its own framework's untiled image,
on [0, 1].
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from core_speed import SDXL_VAE

ROLES = ("studio-untiled", "studio-tiled", "studio-memtiled", "torch-untiled", "torch-tiled")
ATTENTION_BUDGET = 1024 ** 3  # bytes for studio's mid-block attention scores (key-chunked beyond that)


def latent(h: int, w: int) -> np.ndarray:
    z = np.random.default_rng(0).standard_normal((1, 4, h, w)).astype(np.float32)
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    amplitude = 1.0 + 0.6 * np.sin(2 * np.pi * xx) * np.cos(np.pi * yy)  # 0.4 .. 1.6
    return (z * amplitude).astype(np.float32)


def make(folder: Path) -> None:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    model = AutoencoderKL(**SDXL_VAE)
    with torch.no_grad():  # keep activations O(1) through 30 residual blocks
        for name, p in model.named_parameters():
            if p.ndim == 1 and "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder / "vae", safe_serialization=True)


def run_torch(folder: Path, z: np.ndarray, tiled: bool, args) -> np.ndarray:
    import torch
    from diffusers import AutoencoderKL

    model = AutoencoderKL.from_pretrained(folder / "vae").eval()
    if tiled:
        model.enable_tiling()
        model.tile_sample_min_size = 8 * args.tile  # the published config's 1024 would not tile 1024 px
        model.tile_latent_min_size = args.tile
    with torch.no_grad():
        start = time.perf_counter()
        image = model.decode(torch.from_numpy(z)).sample.numpy()
    return image, time.perf_counter() - start


def run_studio(folder: Path, z: np.ndarray, tiled: bool, args, maps_in_memory: bool = False) -> np.ndarray:
    import dataclasses

    import mindspore as ms

    from studio import backend, memory, vae_tiling
    from studio.models.vae import AutoencoderKL

    backend.setup()
    model = AutoencoderKL.from_pretrained(folder / "vae")
    plan = vae_tiling.plan_tiles(model.config, z.shape[2], z.shape[3], tile=args.tile)
    plan = dataclasses.replace(plan, maps_in_memory=maps_in_memory)
    start = time.perf_counter()
    with memory.attention_budget(ATTENTION_BUDGET):  # asnumpy waits for the result
        if tiled:
            image = vae_tiling.decode_tiled(model, ms.Tensor(z), plan).asnumpy()
        else:
            image = model.decode(ms.Tensor(z)).asnumpy()
    return image, time.perf_counter() - start


def child(role: str, folder: Path, args) -> None:
    if role == "make":
        make(folder)
        return
    framework, mode = role.split("-")
    w, h = args.size
    z = latent(h // 8, w // 8)
    if framework == "torch":
        image, seconds = run_torch(folder, z, mode == "tiled", args)
    else:
        image, seconds = run_studio(folder, z, mode != "untiled", args, maps_in_memory=mode == "memtiled")
    np.save(folder / f"{role}-{w}x{h}.npy", image)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb}))


def spawn(role: str, folder: Path, size: tuple[int, int], tile: int, args) -> dict:
    cmd = [sys.executable, __file__, "--child", role, "--folder", str(folder), "--size", f"{size[0]}x{size[1]}",
           "--tile", str(tile)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1]) if role != "make" else {}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images in [-1, 1], compared on [0, 1]."""
    a, b = (np.clip(x.astype(np.float64) / 2 + 0.5, 0, 1) for x in (a, b))
    return float(10 * np.log10(1.0 / max(np.mean((a - b) ** 2), 1e-20)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1024], help="square sizes in px (multiples of 8)")
    parser.add_argument("--big", default="3840x2160", help="WxH for studio tiled alone ('' to skip)")
    parser.add_argument("--tile", type=int, default=64, help="tile core in latent px (studio); diffusers: 8x px")
    parser.add_argument("--big-tile", type=int, default=64, help="tile core for --big, latent px")
    parser.add_argument("--roles", nargs="+", choices=ROLES, default=ROLES, help="runs per size (default: all)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=lambda s: tuple(int(v) for v in s.split("x")), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(Path(__file__).parents[1]))
        child(args.child, args.folder, args)
        return
    print("SDXL VAE decode, fp32, random weights; studio: tile cores in latent px, layer by layer with exact "
          "statistics; diffusers: tiles of 8 x tile px, 25% overlap")
    print("| size | run | tile (latent px) | seconds | peak RSS MB | PSNR vs own untiled (dB) |")
    print("|---|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spawn("make", folder, (0, 0), 0, args)
        runs = [((n, n), role, args.tile) for n in args.sizes for role in ROLES if role in args.roles]
        if args.big:
            runs.append((tuple(int(v) for v in args.big.split("x")), "studio-tiled", args.big_tile))
        for size, role, tile in runs:
            r = spawn(role, folder, size, tile, args)
            quality = ""
            untiled = folder / f"{role.split('-')[0]}-untiled-{size[0]}x{size[1]}.npy"
            if role.endswith("tiled") and not role.endswith("untiled") and untiled.exists():
                tiled, reference = np.load(folder / f"{role}-{size[0]}x{size[1]}.npy"), np.load(untiled)
                quality = f"{psnr(tiled, reference):.1f} (max abs diff {np.abs(tiled - reference).max():.1e})"
            print(f"| {size[0]}x{size[1]} | {role} | {tile if 'untiled' not in role else ''} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {quality} |",
                  flush=True)


if __name__ == "__main__":
    main()
