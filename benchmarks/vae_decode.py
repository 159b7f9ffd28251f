"""Time the SDXL VAE decode in studio (MindSpore) and diffusers (PyTorch), fp32, on random weights.

Usage: python benchmarks/vae_decode.py [--latent 64] [--repeats 2]

One diffusers AutoencoderKL with the published SDXL config and random weights is saved to a temporary
folder; each framework then runs in its own subprocess (so peak RSS is its own), loads that folder,
decodes the same random latent (1, 4, n, n) once to warm up and `repeats` times timed, and writes its
image. Prints seconds (best of the timed calls), peak RSS and the relative L2 distance of the two images.
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

SDXL_VAE = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
    "force_upcast": True, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "out_channels": 3, "sample_size": 1024, "scaling_factor": 0.13025, "up_block_types": ["UpDecoderBlock2D"] * 4,
}


def make(folder: Path, latent: int) -> None:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    model = AutoencoderKL(**SDXL_VAE)
    with torch.no_grad():  # keep activations O(1) through 30 residual blocks
        for name, p in model.named_parameters():
            if p.ndim == 1 and "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder / "vae", safe_serialization=True)
    np.save(folder / "z.npy", np.random.default_rng(0).standard_normal((1, 4, latent, latent)).astype(np.float32))


def run_torch(folder: Path, repeats: int) -> list[float]:
    import torch
    from diffusers import AutoencoderKL

    model = AutoencoderKL.from_pretrained(folder / "vae").eval()
    z = torch.from_numpy(np.load(folder / "z.npy"))
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            image = model.decode(z).sample
            times.append(time.perf_counter() - start)
    np.save(folder / "torch.npy", image.numpy())
    return times[1:]


def run_studio(folder: Path, repeats: int) -> list[float]:
    import mindspore as ms

    from studio import backend
    from studio.models.vae import AutoencoderKL

    backend.setup()
    model = AutoencoderKL.from_pretrained(folder / "vae")
    z = ms.Tensor(np.load(folder / "z.npy"))
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        image = model.decode(z).asnumpy()  # asnumpy waits for the result
        times.append(time.perf_counter() - start)
    np.save(folder / "studio.npy", image)
    return times[1:]


def child(role: str, folder: Path, latent: int, repeats: int) -> None:
    if role == "make":
        make(folder, latent)
        return
    times = {"torch": run_torch, "studio": run_studio}[role](folder, repeats)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(json.dumps({"times": times, "peak_rss_mb": peak_mb}))


def spawn(role: str, folder: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--child", role, "--folder", str(folder), "--latent", str(args.latent),
           "--repeats", str(args.repeats)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1]) if role != "make" else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent", type=int, default=64, help="latent side n; the image is 8n px square")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls after one warm-up call")
    parser.add_argument("--child", choices=["make", "torch", "studio"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(Path(__file__).parents[1]))
        child(args.child, args.folder, args.latent, args.repeats)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spawn("make", folder, args)
        results = {role: spawn(role, folder, args) for role in ("torch", "studio")}
        ours, ref = np.load(folder / "studio.npy"), np.load(folder / "torch.npy")
    rel = np.linalg.norm(ours.astype(np.float64) - ref) / np.linalg.norm(ref.astype(np.float64))
    n = args.latent
    print(f"SDXL VAE decode, latent (1, 4, {n}, {n}) -> image {8 * n}x{8 * n}, fp32, best of {args.repeats}")
    print(f"{'':10}{'seconds':>10}{'peak RSS MB':>14}")
    for role in ("torch", "studio"):
        r = results[role]
        print(f"{role:10}{min(r['times']):10.2f}{r['peak_rss_mb']:14.0f}")
    print(f"studio / torch time: {min(results['studio']['times']) / min(results['torch']['times']):.2f}x; "
          f"rel L2(studio, torch) = {rel:.2e}")


if __name__ == "__main__":
    main()
