"""Build a layout in Python (no YAML), plan it and render it: a 1920x1080 title card.

    python examples/layout_in_code.py --model tiny -o out/
"""

import argparse

from studio.plan import plan_layout
from studio.render import render
from studio.spec import Canvas, GenerateLayer, GradientLayer, Layout, Output, Region, Shadow, TextLayer

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("-o", "--output", default="out")
parser.add_argument("--steps", type=int, default=20)
args = parser.parse_args()

layout = Layout(
    source="title-card",
    canvas=Canvas(width=1920, height=1080, safe_margin=60, background=(12, 16, 28, 255)),
    layers=(
        GenerateLayer("aurora over a frozen lake, long exposure, stars", seed=5, steps=args.steps),
        GradientLayer(stops=((0.0, (12, 16, 28, 0)), (1.0, (12, 16, 28, 220))), region=Region("percent", 0, 60, 100, 40)),
        TextLayer("Northern Lights", size=120, color=(255, 255, 255, 255), region=Region("percent", 5, 70, 90, 20),
                  align="center", valign="middle", shrink_to_fit=True, shadow=Shadow(dx=4, dy=4, blur=6)),
    ),
    output=Output(formats=("png", "jpeg"), name="title-card"),
)
print(plan_layout(layout, model=args.model).describe())  # sizes, strategy and memory, no model loaded
for path in render(layout, args.output, model=args.model, overwrite=True):
    print(f"wrote {path}")
