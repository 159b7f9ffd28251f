"""Plan a layout file and print its memory estimate, without loading any weights.

    python examples/plan_memory.py layouts/wallpaper-4k.yaml --model PixArt-alpha/PixArt-Sigma-XL-2-1024-MS
    python examples/plan_memory.py layouts/poster-a2.yaml --model tiny --budget 2GiB
"""

import argparse

from studio.layout import load_layout
from studio.memory import format_bytes
from studio.plan import plan_layout

parser = argparse.ArgumentParser()
parser.add_argument("layout")
parser.add_argument("--model", default="PixArt-alpha/PixArt-Sigma-XL-2-1024-MS")
parser.add_argument("--budget", default=None, help="e.g. 6GiB; default: free memory minus a margin")
args = parser.parse_args()

layout = load_layout(args.layout)
plan = plan_layout(layout, model=args.model, budget=args.budget)
print(plan.describe())
for job in plan.jobs:
    for phase in job.memory.phases:
        print(f"layer {job.layer} {phase.name:>8}: peak {format_bytes(phase.peak)}, "
              f"unchunked {format_bytes(phase.unchunked())}")
print(f"whole layout: peak {format_bytes(plan.peak)}")
