"""Time compose's full-canvas shortcuts beside the general paths they replaced, and check they give the same bytes.

Usage: python benchmarks/compose_speed.py [--repeats 2]

Canvases: the A2 poster (layouts/poster-a2.yaml, 300 dpi with bleed), the 4K wallpaper (layouts/wallpaper-4k.yaml)
and the span of layouts/span-3-monitors.yaml (a 4K monitor between two 1440p ones). Timed, best of --repeats:
  background  the canvas filled with its background over white (`compose.over_white`), against a white canvas
              with a canvas-sized background composited over it
  gradient    `compose.gradient_tile` over the whole canvas, against `compose.gradient_every_pixel`: the stops
              of the layout's gradient, linear at 0 and 90 degrees and radial
  guides      `compose.draw_guides` on the proof, tinting the bleed or the bezel gaps rectangle by rectangle
              on the RGB raster (`compose.tint_outside`), against it as it was: the raster made RGBA, a
              canvas-sized tint with the trim or the monitors transparent composited whole, and made RGB again
Each pair's outputs are asserted byte-identical.
"""

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from PIL import Image

LAYOUTS = Path(__file__).resolve().parent.parent / "layouts"


def composited_background(width: int, height: int, colour) -> Image.Image:
    """The background before: a white canvas with a canvas-sized background composited over it."""
    image = Image.new("RGBA", (width, height), (255, 255, 255, 255))
    image.alpha_composite(Image.new("RGBA", image.size, colour))
    return image


def best(repeats: int, run):
    """(fastest seconds of `repeats` calls of `run`, its last result)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t0)
    return min(times), result


def row(repeats: int, canvas: str, what: str, ours, before) -> None:
    """Time `ours` and `before`, assert they return the same bytes, print a line of the table."""
    t_ours, a = best(repeats, ours)
    t_before, b = best(repeats, before)
    assert a.tobytes() == b.tobytes(), f"{canvas} {what}: the bytes differ"
    print(f"{canvas:<27} {what:<23} {t_before:>9.3f} {t_ours:>9.3f} {t_before / t_ours:>8.1f}x  identical")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    sys.path.insert(0, str(LAYOUTS.parent))
    from studio import compose
    from studio.geometry import Box
    from studio.layout import load_layout
    from studio.spec import GradientLayer
    from tests.test_compose import guides_tinted_whole  # the guides as they were, the tests' reference

    poster, wallpaper, span = (load_layout(LAYOUTS / f"{name}.yaml") for name in
                               ("poster-a2", "wallpaper-4k", "span-3-monitors"))
    print(f"{'canvas':<27} {'what':<23} {'before s':>9} {'after s':>9} {'speed-up':>9}")
    for name, layout in (("poster-a2", poster), ("wallpaper-4k", wallpaper)):
        canvas = layout.canvas
        w, h = canvas.full_width, canvas.full_height
        label = f"{name} {w}x{h}"
        row(args.repeats, label, "background",
            lambda: Image.new("RGBA", (w, h), compose.over_white(canvas.background)),
            lambda: composited_background(w, h, canvas.background))
        own = next(layer for layer in layout.layers if isinstance(layer, GradientLayer))
        for what, layer in (("gradient linear 0 deg", replace(own, kind="linear", angle=0)),
                            ("gradient linear 90 deg", replace(own, kind="linear", angle=90)),
                            ("gradient radial", replace(own, kind="radial"))):
            box = Box(0, 0, w, h)
            row(args.repeats, label, what, lambda: compose.gradient_tile(layer, box),
                lambda: compose.gradient_every_pixel(layer, box))

    for name, layout in (("poster-a2", poster), ("span-3-monitors", span)):
        image = compose.compose(layout, proof=True)
        row(args.repeats, f"{name} {image.width}x{image.height}", "draw_guides",
            lambda: compose.draw_guides(image, layout), lambda: guides_tinted_whole(image, layout))


if __name__ == "__main__":
    main()
