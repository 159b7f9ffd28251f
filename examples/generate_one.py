"""Generate one image from a prompt with the Python API.

    python examples/generate_one.py --model PixArt-alpha/PixArt-Sigma-XL-2-1024-MS -o lighthouse.png
    python examples/generate_one.py --model tiny -o noise.png      # studio make-tiny tiny: output is noise
"""

import argparse

from studio.pipeline import PixArtSigmaPipeline

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True, help="pipeline folder or hub id")
parser.add_argument("-o", "--output", default="generated.png")
parser.add_argument("--size", default="768x512", help="WIDTHxHEIGHT")
parser.add_argument("--steps", type=int, default=20)
args = parser.parse_args()

width, height = map(int, args.size.split("x"))
pipe = PixArtSigmaPipeline.from_pretrained(args.model)
result = pipe("a lighthouse on a rocky coast at dusk, cinematic light", negative_prompt="blurry, text",
              width=width, height=height, num_inference_steps=args.steps, guidance_scale=4.5, seed=11)
result.images[0].save(args.output)
print(f"saved {args.output} ({width}x{height}, seed {result.seed})")
