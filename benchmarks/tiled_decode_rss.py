"""Peak RSS of `studio generate` at 1024² with the SDXL VAE's channel widths, decoding in tiles, per budget.

Builds (once per --layers, in --dir) a pipeline of random weights whose VAE has the SDXL VAE's channels (128,
256, 512, 512, 32 groups, 2 layers a block), a transformer of --layers layers (default 4) 1152 wide (16 heads)
and the tiny T5, then runs one step of `studio generate --no-binning --size 1024x1024 --memory-budget B` per
budget in a new process and prints its maximum RSS beside the budget (the bound README states: budget + 0.75
GiB).

    python benchmarks/tiled_decode_rss.py --budgets 1.20GiB 1.6GiB 2.5GiB
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors.numpy import save_file

from studio.memory import parse_bytes

GiB = 2 ** 30


def build(folder: Path, layers: int) -> None:
    """The tiny pipeline with its transformer and VAE replaced by wider ones of random weights."""
    from studio.models.transformer import PixArtTransformer2DModel, PixArtTransformerConfig
    from studio.models.vae import AutoencoderKL, AutoencoderKLConfig
    from studio.tiny import make_tiny, random_weights, t5_config, transformer_config, vae_config

    make_tiny(folder, sample_size=64)
    transformer = transformer_config(sample_size=64, caption_channels=t5_config()["d_model"])
    transformer.update(attention_head_dim=72, num_attention_heads=16, cross_attention_dim=1152, num_layers=layers,
                       norm_num_groups=32)
    vae = vae_config((128, 256, 512, 512), groups=32) | {"layers_per_block": 2}
    for name, config, model in [("transformer", transformer, lambda c: PixArtTransformer2DModel(
                                     PixArtTransformerConfig.from_dict(c))),
                                ("vae", vae, lambda c: AutoencoderKL(AutoencoderKLConfig.from_dict(c)))]:
        (folder / name / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file(random_weights(model(config), seed=1), str(folder / name / "diffusion_pytorch_model.safetensors"),
                  metadata={"format": "pt"})


def pipeline_folder(parent: Path, layers: int) -> Path:
    """The pipeline with `layers` transformer layers in `parent`, built if missing. It is built in a temporary
    sibling and renamed into place when complete, so a build cut short is never taken for a pipeline."""
    folder = parent / f"sdxl-vae-widths-{layers}-layers"
    if not folder.is_dir():
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{folder.name}-", dir=parent) as tmp:
            build(Path(tmp) / "pipeline", layers)
            (Path(tmp) / "pipeline").rename(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/studio-tiled-decode-rss"),
                        help="folder for the built pipelines (one per --layers) and the image")
    parser.add_argument("--layers", type=int, default=4, help="transformer layers")
    parser.add_argument("--budgets", nargs="+", default=["1.20GiB", "1.6GiB", "2.5GiB"])
    args = parser.parse_args()
    model = pipeline_folder(args.dir, args.layers)
    studio = Path(sys.executable).with_name("studio")
    print(f"{'budget':>8} {'max RSS':>9} {'over budget':>12} {'seconds':>8}")
    for budget in args.budgets:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        subprocess.run([str(studio), "generate", "a cat", "--model", str(model), "--size", "1024x1024",
                        "--no-binning", "--steps", "1", "--memory-budget", budget, "--quiet", "--overwrite",
                        "-o", str(args.dir / "tiled-decode-rss.png")], check=True)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
        if peak <= before * 1024:  # the largest child so far was an earlier one: no reading of this one
            print(f"{budget:>8} {'(below an earlier run)':>22} {seconds:8.1f}")
            continue
        print(f"{budget:>8} {peak / GiB:8.2f}G {(peak - parse_bytes(budget)) / GiB:+11.2f}G {seconds:8.1f}")


if __name__ == "__main__":
    main()
