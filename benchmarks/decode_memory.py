"""The memory plan's VAE decode estimates beside what a decode really takes, on the CPU in fp32.

Usage: python benchmarks/decode_memory.py [--cases tiny:1024:untiled tiny:2048:16:file ...] [--sdxl]

Each case decodes one random latent in its own fresh process, as PixArtSigmaPipeline.decode does (the images
array allocated first; untiled, or `decode_tiled` with the plan's tiles of the given side in latent px, the
maps in files or in memory), and measures the decode's own growth: peak RSS during it (VmHWM, reset just before
by /proc/self/clear_refs) less RSS just before, less the attention workspace the mid-block used (the plan adds
that apart; the images array too, so it is made resident before that RSS is read). Beside it the plan's
activation estimate (memory_plan: `vae_decode_activations` + UNTILED_DECODE_EXTRA untiled,
`tiled_decode_activations` tiled) and measured / plan: at most 1 means the plan covers the decode. Linux only.
`tiny`: the VAE of `studio make-tiny` (written to a temporary folder); `sdxl`: the SDXL VAE's architecture with
random weights (--sdxl adds its cases: minutes, ~6 GB).
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY_CASES = ["tiny:1024:untiled", "tiny:2048:untiled", "tiny:3840x2160:untiled", "tiny:2048:16:file",
              "tiny:2048:64:mem", "tiny:3840x2160:16:file"]
SDXL_CASES = ["sdxl:512:untiled", "sdxl:1024:untiled", "sdxl:512:16:file", "sdxl:1024:16:file"]
WORKSPACE = 64 * 2 ** 20
MiB = 2 ** 20


def rss_status() -> dict:
    """This process's VmRSS (resident now) and VmHWM (peak since start or the last clear_refs "5"), bytes."""
    text = Path("/proc/self/status").read_text()
    return {key: int(re.search(rf"{key}:\s+(\d+)", text)[1]) * 1024 for key in ("VmHWM", "VmRSS")}


def one(case: str, tiny_folder: str) -> dict:
    """Run one case here (a fresh process) and return its record."""
    import gc
    from dataclasses import replace

    import mindspore as ms
    import numpy as np

    from studio import memory
    from studio.memory_plan import UNTILED_DECODE_EXTRA, tiled_decode_activations
    from studio.models.vae import AutoencoderKL
    from studio.vae_tiling import decode_tiled, plan_tiles, vae_decode_activations

    which, size, *tiling = case.split(":")
    width, height = map(int, size.split("x")) if "x" in size else (int(size), int(size))
    if which == "tiny":
        vae = AutoencoderKL.from_pretrained(Path(tiny_folder) / "vae")
    else:
        sys.path.insert(0, str(ROOT))
        from studio.tiny import random_weights
        from tests.test_vae_tiling import SDXL
        vae = AutoencoderKL(SDXL)
        for name, value in random_weights(vae, 0).items():
            dict(vae.parameters_and_names())[name].set_data(ms.Tensor(value))
    cfg = vae.config
    f = cfg.downsample_factor
    h, w = height // f, width // f
    plan = None
    if tiling[0] == "untiled":
        estimate = vae_decode_activations(cfg, height, width) + UNTILED_DECODE_EXTRA
    else:
        plan = replace(plan_tiles(cfg, h, w, tile=int(tiling[0])), maps_in_memory=tiling[1:] == ["mem"])
        estimate = tiled_decode_activations(cfg, plan)
    workspace = 0
    if cfg.mid_block_add_attention:
        chunks = memory.attention_chunks(1, h * w, h * w, cfg.block_out_channels[-1], WORKSPACE)
        workspace = memory.attention_workspace(1, chunks.q, chunks.k, cfg.block_out_channels[-1])
    z = ms.Tensor(np.random.default_rng(0).standard_normal((1, cfg.latent_channels, h, w)).astype(np.float32))
    # Counted apart by the plan, so made resident before `before`: np.zeros would map its pages lazily, and
    # the decode writing them would count them as its own growth.
    images = np.empty((1, cfg.out_channels, height, width), np.float32)  # (1, 3, H, W)
    images.fill(0)
    gc.collect()
    before = rss_status()["VmRSS"]
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here
    with memory.attention_budget(WORKSPACE):
        if plan is None:
            images[:] = vae.decode(z).asnumpy()
        else:
            decode_tiled(vae, z, plan, None, out=images)
    growth = rss_status()["VmHWM"] - before - workspace
    return {"case": case, "estimate": estimate, "measured": growth}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=None, help="VAE:SIZE:untiled or VAE:SIZE:TILE:file|mem")
    parser.add_argument("--sdxl", action="store_true", help="add the SDXL VAE's cases")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--tiny", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.tiny)))
        return
    cases = args.cases or TINY_CASES + (SDXL_CASES if args.sdxl else [])
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "studio", "make-tiny", f"{tmp}/tiny"], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
        print(f"{'case':<26} {'plan (MiB)':>11} {'measured (MiB)':>15} {'measured/plan':>14}")
        for case in cases:
            out = subprocess.run([sys.executable, __file__, "--one", case, "--tiny", f"{tmp}/tiny"], check=True,
                                 cwd=ROOT, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"{case:<26} {r['estimate'] / MiB:>11.1f} {r['measured'] / MiB:>15.1f} "
                  f"{r['measured'] / r['estimate']:>14.2f}", flush=True)


if __name__ == "__main__":
    main()
