"""Canvas geometry in whole pixels: boxes, exact splits, region resolution, fit, multi-monitor cuts.

Pure integer arithmetic (Fractions where a ratio is involved), so that grid cells and monitor cuts sum
exactly to what they divide.
"""

import math
import numbers
from dataclasses import dataclass
from fractions import Fraction

from studio.spec import Canvas, Grid, Monitor, Region, Span


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h

    def offset(self, dx: int, dy: int) -> "Box":
        return Box(self.x + dx, self.y + dy, self.w, self.h)


def split(total: int, parts: int, gutter: int = 0, weights: tuple[float, ...] = ()) -> list[tuple[int, int]]:
    """(start, length) of `parts` spans across `total` px with `gutter` px between them, in proportion to
    `weights` (equal when empty: lengths differ by at most 1 px); with the gutters they add up to `total`
    exactly. Weights are positive and taken as their decimals say (0.0000004 and 0.0000012 are 1:3, as are
    0.1 and 0.3). A ValueError when a span would be less than 1 px."""
    shares = [Fraction(str(w)) for w in weights] or [Fraction(1)] * parts
    free = total - gutter * (parts - 1)
    if parts < 1 or len(shares) != parts or free < parts:
        raise ValueError(f"cannot split {total} px into {parts} parts with {gutter} px gutters")
    edges = [Fraction(0)]
    for share in shares:
        edges.append(edges[-1] + share)
    cuts = [round(free * edge / edges[-1]) for edge in edges]
    if any(b <= a for a, b in zip(cuts, cuts[1:])):
        raise ValueError(f"cannot split {total} px into parts of {', '.join(map(str, weights))} with {gutter} px gutters")
    return [(cuts[i] + i * gutter, cuts[i + 1] - cuts[i]) for i in range(parts)]


def exact(value: numbers.Real) -> Fraction:
    """`value` exactly: a float (numpy's too, which Fraction refuses) as the binary number it is."""
    return Fraction(value) if isinstance(value, numbers.Rational) else Fraction(float(value))


def trim_box(canvas: Canvas) -> Box:
    """The trim area in full-raster coordinates (the raster includes the bleed)."""
    return Box(canvas.bleed, canvas.bleed, canvas.width, canvas.height)


def edge(e: float | Fraction, size: int) -> int:
    """A region's edge, px from the trim's left (or top) of `size` px, in whole pixels: the nearest, halves up
    (exactly: a float is taken as the binary number it is), so that a box of whole pixels keeps its size
    wherever it sits (half to even would make 1 px at 589.5 px none, and at 590.5 px two); but more than half
    a pixel into the bleed it rounds outward, as the bleed's own width does, so that an edge put at the
    bleed's length (x: -3mm with bleed: 3mm) reaches the raster's edge."""
    if e < -0.5:
        return math.floor(e)
    if e > size + 0.5:
        return math.ceil(e)
    return math.floor(exact(e) + Fraction(1, 2))


def percent(p: float, size: int) -> Fraction:
    """`p` % of `size` px, exactly, `p` taken as its decimals say (to 6 places: 6.2 is 31/5, not the float)."""
    return exact(p).limit_denominator(10 ** 6) * size / 100


def resolve(region: Region, canvas: Canvas, grids: dict[str, Grid]) -> Box:
    """A symbolic region -> a box in full-raster pixels (bleed included)."""
    trim = trim_box(canvas)
    if region.kind == "full":
        return Box(0, 0, canvas.full_width, canvas.full_height)
    if region.kind == "safe":
        m = canvas.safe_margin
        return Box(trim.x + m, trim.y + m, trim.w - 2 * m, trim.h - 2 * m)
    if region.kind == "px":  # edges rounded, not sizes: regions that meet in mm meet in px
        x0, y0 = edge(region.x, trim.w), edge(region.y, trim.h)
        x1, y1 = edge(region.x + region.w, trim.w), edge(region.y + region.h, trim.h)
        return Box(trim.x + x0, trim.y + y0, x1 - x0, y1 - y0)
    if region.kind == "percent":
        x0, y0 = edge(percent(region.x, trim.w), trim.w), edge(percent(region.y, trim.h), trim.h)
        x1 = edge(percent(region.x + region.w, trim.w), trim.w)
        y1 = edge(percent(region.y + region.h, trim.h), trim.h)
        return Box(trim.x + x0, trim.y + y0, x1 - x0, y1 - y0)
    if region.kind == "cell":
        grid = grids[region.grid]
        area = resolve(grid.region, canvas, grids)
        rows = split(area.h, grid.rows, grid.gutter[0], grid.row_weights)
        cols = split(area.w, grid.columns, grid.gutter[1], grid.column_weights)
        c0, c1 = cols[region.column], cols[region.column + region.column_span - 1]
        r0, r1 = rows[region.row], rows[region.row + region.row_span - 1]
        return Box(area.x + c0[0], area.y + r0[0], c1[0] + c1[1] - c0[0], r1[0] + r1[1] - r0[0])
    raise ValueError(f"unknown region kind '{region.kind}'")


def fit_box(src_w: int, src_h: int, box: Box, fit: str) -> tuple[int, int, Box]:
    """Scale (src_w, src_h) to `box`: 'cover' fills it (cropping the overflow), 'contain' fits inside it.

    Returns the scaled size (w, h) and where that scaled image's visible part lands: for cover the crop
    offset inside the scaled image is (w - box.w) // 2, (h - box.h) // 2; for contain the box is the
    centred sub-box of `box`.
    """
    sx, sy = Fraction(box.w, src_w), Fraction(box.h, src_h)
    scale = max(sx, sy) if fit == "cover" else min(sx, sy)
    w, h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
    if fit == "cover":
        w, h = max(w, box.w), max(h, box.h)
        return w, h, box
    return w, h, Box(box.x + (box.w - w) // 2, box.y + (box.h - h) // 2, w, h)


def monitor_dpi(monitor: Monitor) -> int:
    """The monitor's pixel density, px per inch, rounded to a whole dpi: the DPI written in its files (and, for
    the densest monitor, a span's: its files' and the one its pt/mm lengths are converted at)."""
    return max(1, round(monitor.width * 25.4 / monitor.width_mm))


def span_canvas(span: Span) -> tuple[int, int, list[Box]]:
    """Canvas size (px) for a monitor span and each monitor's box on it.

    The canvas has the highest pixel density of the monitors, exactly (not `monitor_dpi`'s rounding); every
    physical millimetre, bezels included, maps to the same number of canvas pixels, so a straight line crosses
    the gaps straight. Pixels are square: a monitor's picture is as high as its width and pixel aspect say (its
    height_mm is not used; the loader and check.check_layout refuse one more than 5% off, `layout.aspect_problem`),
    so the densest monitor's box is exactly its pixel size, a 1:1 cut. The others' boxes are later resized to
    their own pixel sizes. Edges are rounded, half up, not sizes: monitors that meet (no bezel) meet in pixels
    too, and a whole number of pixels (the densest monitor's) stays whole.
    """
    def mm(value) -> Fraction:
        return exact(value).limit_denominator(10 ** 6)

    def px(length_mm: Fraction) -> int:
        return math.floor(length_mm * density + Fraction(1, 2))

    density = max(m.width / mm(m.width_mm) for m in span.monitors)
    heights = [mm(m.width_mm) * m.height / m.width for m in span.monitors]  # square pixels
    tallest = max(heights)
    x, boxes = Fraction(0), []
    for i, (m, h_mm) in enumerate(zip(span.monitors, heights)):
        top_mm = {"top": Fraction(0), "center": (tallest - h_mm) / 2, "bottom": tallest - h_mm}[span.align]
        x0, y0 = px(x), px(top_mm)
        boxes.append(Box(x0, y0, px(x + mm(m.width_mm)) - x0, px(top_mm + h_mm) - y0))
        x += mm(m.width_mm) + (mm(span.bezels_mm[i]) if i < len(span.bezels_mm) else 0)
    width = max(px(x), *(b.right for b in boxes))
    height = max(px(tallest), *(b.bottom for b in boxes))
    return width, height, boxes
