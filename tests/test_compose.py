"""Compositor tests on tiny canvases with exact expected pixels (ASCII maps: one character per pixel)."""


import io
import itertools
import math
import random
import re
import shutil
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from studio import compose as C
from studio.errors import InputError, LayoutError
from studio.export import srgb_profile
from studio.geometry import Box, span_canvas
from studio.layout import load_layout, parse_layout
from studio.spec import (Canvas, FillLayer, GenerateLayer, GradientLayer, Grid, ImageLayer, Layout, Monitor, Region,
                         ShapeLayer, Shadow, Span, TextLayer)

WHITE, BLACK = (255, 255, 255, 255), (0, 0, 0, 255)
RED, BLUE, GREEN = (255, 0, 0, 255), (0, 0, 255, 255), (0, 255, 0, 255)
PALETTE = {".": WHITE[:3], "R": RED[:3], "B": BLUE[:3], "G": GREEN[:3], "K": BLACK[:3]}


def layout(*layers, w=8, h=6, bleed=0, safe=0, grids=None, source="<string>", background=WHITE):
    canvas = Canvas(w, h, bleed=bleed, safe_margin=safe, background=background)
    return Layout(source, canvas, tuple(layers), grids=grids or {})


def ascii_map(image: Image.Image) -> list[str]:
    names = {rgb: ch for ch, rgb in PALETTE.items()}
    a = np.asarray(image.convert("RGB"))
    return ["".join(names.get(tuple(int(v) for v in px), "?") for px in row) for row in a]


def ink(image: Image.Image) -> np.ndarray:
    """Mask of pixels that are not white."""
    return (np.asarray(image.convert("RGB")) != 255).any(axis=2)


def colours(image: Image.Image) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in px) for px in np.asarray(image).reshape(-1, len(image.getbands()))}


def ink_box(image: Image.Image) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the non-white pixels, right/bottom exclusive."""
    ys, xs = np.nonzero(ink(image))
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


# -- fills and regions ------------------------------------------------------------------------------------------

def test_background_and_px_region():
    image = C.compose(layout(FillLayer(RED, Region("px", 2, 1, 3, 2)), background=BLUE))
    assert image.mode == "RGB" and image.size == (8, 6)
    assert ascii_map(image) == [
        "BBBBBBBB",
        "BBRRRBBB",
        "BBRRRBBB",
        "BBBBBBBB",
        "BBBBBBBB",
        "BBBBBBBB",
    ]


def test_a_translucent_background_is_composited_over_white():
    """One pixel composited over white stands for the canvas: the bytes of a canvas-sized background
    composited over a white canvas, at every alpha."""
    for colour in [(11, 29, 42, a) for a in range(256)] + [(255, 0, 0, 128), (0, 0, 255, 1)]:
        whole = Image.new("RGBA", (5, 3), WHITE)
        whole.alpha_composite(Image.new("RGBA", whole.size, colour))
        assert C.compose(layout(w=5, h=3, background=colour)).tobytes() == whole.convert("RGB").tobytes(), colour


def test_background_over_white():
    assert C.over_white((255, 0, 0, 128)) == (255, 127, 127, 255)
    assert C.over_white((0, 0, 255, 1)) == (254, 254, 255, 255)
    assert C.over_white((11, 29, 42, 0)) == WHITE


def test_percent_region():
    image = C.compose(layout(FillLayer(RED, Region("percent", 50, 0, 50, 50))))
    assert ascii_map(image) == [
        "....RRRR",
        "....RRRR",
        "....RRRR",
        "........",
        "........",
        "........",
    ]


def test_cell_region():
    # 2 columns with a 2 px gutter over 8 px: columns 0..2 and 5..7
    grids = {"g": Grid("g", rows=1, columns=2, gutter=2)}
    image = C.compose(layout(FillLayer(RED, Region("cell", grid="g", column=0)),
                             FillLayer(BLUE, Region("cell", grid="g", column=1)), grids=grids))
    assert ascii_map(image) == ["RRR..BBB"] * 6


def test_boxes_of_whole_pixels_at_half_pixel_positions_keep_their_size():
    """Edges round half up: two 5% columns of a 20 px canvas at 7.5% and 12.5% (1.5 and 2.5 px) are 1 px each, not
    0 and 2 px (half to even), and a 1 px rect at 5.5, 1.5 px is the pixel at 6, 2."""
    image = C.compose(layout(FillLayer(RED, Region("percent", 7.5, 0, 5, 100)),
                             FillLayer(BLUE, Region("percent", 12.5, 0, 5, 100)),
                             ShapeLayer("rect", Region("px", 5.5, 1.5, 1, 1), fill=GREEN), w=20, h=4))
    assert ascii_map(image) == [
        "..RB................",
        "..RB................",
        "..RB..G.............",
        "..RB................",
    ]


def test_bleed_offsets_regions():
    # trim 4x2 + 1 px bleed = 6x4 raster; px regions count from the trim corner, 'full' includes the bleed
    image = C.compose(layout(FillLayer(BLUE), FillLayer(RED, Region("safe")), FillLayer(GREEN, Region("px", 0, 0, 1, 1)),
                             w=4, h=2, bleed=1))
    assert ascii_map(image) == [
        "BBBBBB",
        "BGRRRB",
        "BRRRRB",
        "BBBBBB",
    ]


def test_safe_margin():
    image = C.compose(layout(FillLayer(RED, Region("safe")), w=6, h=4, safe=1))
    assert ascii_map(image) == ["......", ".RRRR.", ".RRRR.", "......"]


def test_region_partly_off_canvas_is_clipped():
    image = C.compose(layout(FillLayer(RED, Region("px", -2, 4, 4, 5))))
    assert ascii_map(image)[4:] == ["RR......", "RR......"]


def test_layers_stack_in_list_order():
    image = C.compose(layout(FillLayer(RED, Region("px", 0, 0, 4, 1)), FillLayer(BLUE, Region("px", 2, 0, 4, 1))))
    assert ascii_map(image)[0] == "RRBBBB.."


def test_opacity_multiplies_alpha():
    # alpha 255 * 0.5 -> 128; over white: 255 - 255 * 128 / 255 = 127
    image = C.compose(layout(FillLayer(RED, opacity=0.5)))
    assert image.getpixel((0, 0)) == (255, 127, 127)
    image = C.compose(layout(FillLayer((255, 0, 0, 128), opacity=0.5)))  # 128 * 0.5 = 64
    assert image.getpixel((0, 0)) == (255, 191, 191)


# -- shapes ------------------------------------------------------------------------------------------------------

def test_rect_with_stroke():
    image = C.compose(layout(ShapeLayer("rect", Region("px", 1, 1, 6, 4), fill=RED, stroke=BLUE, stroke_width=1)))
    assert ascii_map(image) == [
        "........",
        ".BBBBBB.",
        ".BRRRRB.",
        ".BRRRRB.",
        ".BBBBBB.",
        "........",
    ]


@pytest.mark.parametrize("stroke, ring", [(0.4, 1), (1.5, 2), (2.5, 3)])
def test_strokes_are_whole_pixels_rounded_half_up(stroke, ring):
    """A thin stroke still draws a pixel; 2.5 px is 3 (not half to even)."""
    image = C.compose(layout(ShapeLayer("rect", Region("full"), fill=RED, stroke=BLUE, stroke_width=stroke), w=8, h=8))
    assert ascii_map(image)[3] == "B" * ring + "R" * (8 - 2 * ring) + "B" * ring


@pytest.mark.parametrize("shape, radius", [("rect", 0), ("rect", 3), ("ellipse", 0)])
def test_a_translucent_stroke_is_composited_over_the_fill(shape, radius):
    """Half-transparent blue over red (SVG's and CSS's order), on the pixels an opaque stroke covers: not over
    the white below, as when the stroke's pixels replaced the fill's."""
    def drawn(stroke):
        return np.asarray(C.compose(layout(ShapeLayer(shape, Region("full"), fill=RED, stroke=stroke, stroke_width=2,
                                                      radius=radius), w=10, h=8)))
    opaque, translucent = drawn(BLUE), drawn((0, 0, 255, 128))
    ring = (opaque == BLUE[:3]).all(axis=2)
    assert ring.sum() > 0 and (translucent[ring] == (127, 0, 128)).all()  # 255 * 127 / 255, 255 * 128 / 255
    assert (translucent[~ring] == opaque[~ring]).all()


def test_a_translucent_stroke_over_a_translucent_fill_is_rounded_as_two_layers():
    """#e0401080 over #2060a010 over white: each composited once, as a fill layer and a stroke layer would be
    (232, 154, 132), not through a tile of the two combined at 8 bits first (233, 154, 132)."""
    fill, stroke, region = (0x20, 0x60, 0xA0, 0x10), (0xE0, 0x40, 0x10, 0x80), Region("px", 1, 1, 4, 3)
    image = np.asarray(C.compose(layout(ShapeLayer("rect", region, fill=fill, stroke=stroke, stroke_width=1))))
    assert tuple(image[1, 1]) == (232, 154, 132) and tuple(image[2, 2]) == (241, 245, 249)  # ring, inside
    apart = C.compose(layout(ShapeLayer("rect", region, fill=fill), ShapeLayer("rect", region, stroke=stroke,
                                                                                stroke_width=1)))
    assert image.tobytes() == apart.tobytes()
    faded = np.asarray(C.compose(layout(ShapeLayer("rect", region, fill=fill, stroke=stroke, stroke_width=1,
                                                   opacity=0.5))))
    assert tuple(faded[1, 1]) == (244, 205, 193)  # faded together: one tile, alpha 136 * 0.5 -> 68


def test_rounded_rect_cuts_corners():
    image = C.compose(layout(ShapeLayer("rect", Region("full"), fill=RED, radius=2)))
    assert ascii_map(image) == [
        "..RRRR..",
        ".RRRRRR.",
        "RRRRRRRR",
        "RRRRRRRR",
        ".RRRRRR.",
        "..RRRR..",
    ]


def test_ellipse():
    image = C.compose(layout(ShapeLayer("ellipse", Region("px", 1, 1, 6, 4), fill=RED, stroke=BLUE, stroke_width=1)))
    assert ascii_map(image) == [
        "........",
        "..BBBB..",
        ".BRRRRB.",
        ".BRRRRB.",
        "..BBBB..",
        "........",
    ]


def test_line_from_top_left_to_bottom_right():
    image = C.compose(layout(ShapeLayer("line", Region("px", 1, 1, 6, 4), stroke=BLUE)))
    assert ascii_map(image) == [
        "........",
        ".B......",
        "..BB....",
        "....BB..",
        "......B.",
        "........",
    ]


def test_lines_of_zero_width_or_height():
    # a zero-width region at x draws the column x (2 px wide: x and x + 1), a zero-height one the row y,
    # and an empty one the pixel
    image = C.compose(layout(ShapeLayer("line", Region("px", 3, 0, 0, 6), stroke=BLUE, stroke_width=2),
                             ShapeLayer("line", Region("px", 0, 4, 8, 0), stroke=RED, stroke_width=1),
                             ShapeLayer("line", Region("px", 7, 1, 0, 0), stroke=GREEN)))
    assert ascii_map(image) == [
        "...BB...",
        "...BB..G",
        "...BB...",
        "...BB...",
        "RRRRRRRR",
        "...BB...",
    ]


def test_lines_of_zero_width_or_height_on_the_last_column_and_row_and_in_the_bleed():
    """x: 7px is the last column of 8 (x: 100%, one past it, is refused: it drew nothing); with a bleed x: 100% is
    the bleed's first column."""
    frame = parse_layout("canvas: {width: 8, height: 6}\nlayers:\n"
                         "  - shape: {shape: line, region: {x: 7px, w: 0, h: 100%}, stroke: {width: 1, color: red}}\n"
                         "  - shape: {shape: line, region: {y: 5px, w: 100%, h: 0}, stroke: {width: 1, color: blue}}\n")
    assert ascii_map(C.compose(frame)) == [".......R"] * 5 + ["BBBBBBBB"]
    bled = parse_layout("canvas: {width: 6, height: 2, bleed: 1px}\nlayers:\n"
                        "  - shape: {shape: line, region: {x: 100%, w: 0, h: 100%}, stroke: {width: 1, color: red}}\n")
    assert ascii_map(C.compose(bled)) == ["........", ".......R", ".......R", "........"]


def test_empty_regions_draw_nothing_but_lines():
    image = C.compose(layout(FillLayer(RED, Region("px", 3, 0, 0, 6)),
                             ShapeLayer("rect", Region("px", 0, 4, 8, 0), fill=RED)))
    assert ascii_map(image) == ["........"] * 6


def test_one_pixel_ellipse_and_rounded_rect_draw_their_pixel():
    image = C.compose(layout(ShapeLayer("ellipse", Region("px", 1, 1, 1, 1), fill=RED),
                             ShapeLayer("rect", Region("px", 3, 1, 1, 1), fill=BLUE, radius=2),
                             ShapeLayer("ellipse", Region("px", 5, 1, 1, 1), fill=RED, stroke=GREEN, stroke_width=1)))
    assert ascii_map(image)[:3] == ["........", ".R.B.G..", "........"]


# -- gradients -----------------------------------------------------------------------------------------------------

BLACK_TO_WHITE = ((0.0, BLACK), (1.0, WHITE))


def red(image):
    return np.asarray(image)[:, :, 0].tolist()


def test_linear_gradient_0_degrees_runs_left_to_right():
    # t = (x + 0.5) / 8 at pixel centres; 255 t rounded half up
    image = C.compose(layout(GradientLayer(BLACK_TO_WHITE, angle=0)))
    assert red(image) == [[16, 48, 80, 112, 143, 175, 207, 239]] * 6


def test_linear_gradient_90_degrees_runs_top_to_bottom():
    # t = (y + 0.5) / 6
    image = C.compose(layout(GradientLayer(BLACK_TO_WHITE, angle=90)))
    assert red(image) == [[v] * 8 for v in (21, 64, 106, 149, 191, 234)]


def test_linear_gradient_45_degrees_runs_corner_to_corner():
    # t = (x + y + 1) / 8 on a 4x4 box (the lines through opposite corners are t = 0 and t = 1)
    image = C.compose(layout(GradientLayer(BLACK_TO_WHITE, angle=45), w=4, h=4))
    assert red(image) == [
        [32, 64, 96, 128],
        [64, 96, 128, 159],
        [96, 128, 159, 191],
        [128, 159, 191, 223],
    ]


def test_radial_gradient_from_centre_to_farthest_corner():
    # t = distance from the centre / distance to a corner (2 sqrt 2): 0.25, 0.559, 0.75
    image = C.compose(layout(GradientLayer(BLACK_TO_WHITE, kind="radial"), w=4, h=4))
    assert red(image) == [
        [191, 143, 143, 191],
        [143, 64, 64, 143],
        [143, 64, 64, 143],
        [191, 143, 143, 191],
    ]


def test_gradient_with_three_stops_in_a_region():
    stops = ((0.0, BLACK), (0.5, RED), (1.0, BLUE))
    image = C.compose(layout(GradientLayer(stops, angle=0, region=Region("px", 2, 0, 4, 1))))
    # t = 0.125, 0.375, 0.625, 0.875
    assert np.asarray(image)[0].tolist() == [
        [255, 255, 255], [255, 255, 255],
        [64, 0, 0], [191, 0, 0], [191, 0, 64], [64, 0, 191],
        [255, 255, 255], [255, 255, 255],
    ]


def test_gradient_fading_to_transparent_keeps_its_hue():
    stops = ((0.0, RED), (1.0, (0, 0, 0, 0)))  # premultiplied interpolation: red fading, not darkening
    tile = C.gradient_tile(GradientLayer(stops, angle=0), Box(0, 0, 4, 1))
    assert np.asarray(tile)[0].tolist() == [[255, 0, 0, 223], [255, 0, 0, 159], [255, 0, 0, 96], [255, 0, 0, 32]]


def test_linear_gradients_at_180_and_270_degrees_run_backwards():
    assert red(C.gradient_tile(GradientLayer(BLACK_TO_WHITE, angle=180), Box(0, 0, 8, 1))) == [
        [239, 207, 175, 143, 112, 80, 48, 16]]
    assert red(C.gradient_tile(GradientLayer(BLACK_TO_WHITE, angle=270), Box(0, 0, 1, 6))) == [
        [234], [191], [149], [106], [64], [21]]


def test_radial_gradients_of_odd_sizes_are_centred_on_the_middle_pixel():
    # 3x3: t = 0 at the centre, 1 / (1.5 sqrt 2) at the edges' middles, 2 / 3 at the corners
    assert red(C.gradient_tile(GradientLayer(BLACK_TO_WHITE, kind="radial"), Box(0, 0, 3, 3))) == [
        [170, 120, 170],
        [120, 0, 120],
        [170, 120, 170],
    ]
    assert red(C.gradient_tile(GradientLayer(BLACK_TO_WHITE, kind="radial"), Box(0, 0, 5, 2))) == [
        [195, 106, 47, 106, 195]] * 2


GRADIENT_STOPS = [BLACK_TO_WHITE,
                  ((0, (11, 29, 42, 0)), (0.5, (11, 29, 42, 0)), (1, (11, 29, 42, 238))),
                  ((0.0, RED), (0.3, (0, 0, 0, 0)), (0.3, (0, 200, 10, 128)), (1.0, (3, 4, 5, 7)))]
SHORTCUT_ANGLES = [0, 90, 180, 270, 360, -90, 450, 90.00000000000001, 1e-13]  # cos or sin rounds to 0
GRADIENT_SIZES = [(1, 1), (1, 6), (7, 1), (2, 2), (5, 5), (6, 4), (7, 9), (40, 33), (9, 600), (600, 3)]


@pytest.mark.parametrize("stops", GRADIENT_STOPS)
@pytest.mark.parametrize("kind, angle", [("radial", 0), ("radial", 33)] + [("linear", a) for a in SHORTCUT_ANGLES]
                         + [("linear", 45), ("linear", 30), ("linear", 89.9999999)])
def test_gradient_shortcuts_give_every_pixels_bytes(stops, kind, angle):
    """A row or column repeated, a quarter mirrored: the bytes of computing every pixel, for odd and even sizes,
    quarters taller than `GRADIENT_ROWS`, and the angles that take no shortcut."""
    layer = GradientLayer(stops, kind=kind, angle=angle)
    for w, h in GRADIENT_SIZES:
        box = Box(3, 5, w, h)
        assert C.gradient_tile(layer, box).tobytes() == C.gradient_every_pixel(layer, box).tobytes(), (w, h)


def test_gradients_along_an_axis_and_radial_ones_take_a_shortcut(monkeypatch):
    def every_pixel(layer, box):
        raise AssertionError(f"every pixel computed at {layer.angle} degrees")

    monkeypatch.setattr(C, "gradient_every_pixel", every_pixel)
    for angle in SHORTCUT_ANGLES:
        C.gradient_tile(GradientLayer(BLACK_TO_WHITE, angle=angle), Box(0, 0, 7, 6))
    C.gradient_tile(GradientLayer(BLACK_TO_WHITE, kind="radial", angle=45), Box(0, 0, 7, 6))
    with pytest.raises(AssertionError, match="every pixel computed at 45 degrees"):
        C.gradient_tile(GradientLayer(BLACK_TO_WHITE, angle=45), Box(0, 0, 7, 6))


# -- pictures ------------------------------------------------------------------------------------------------------

def halves(w, h, left, right):
    image = Image.new("RGBA", (w, h), left)
    image.paste(Image.new("RGBA", (w - w // 2, h), right), (w // 2, 0))
    return image


def test_art_cover_crops_centre():
    # 4x2 art into a 2x2 box: scale 1, the middle two columns show
    art = {0: halves(4, 2, RED, BLUE)}
    image = C.compose(layout(GenerateLayer("x", region=Region("px", 3, 2, 2, 2), fit="cover")), art=art)
    assert ascii_map(image) == ["........", "........", "...RB...", "...RB...", "........", "........"]


def test_art_contain_letterboxes():
    # 4x2 art into a 4x4 box: scale 1, centred vertically; the bars stay transparent
    art = {0: Image.new("RGB", (4, 2), GREEN[:3])}
    image = C.compose(layout(GenerateLayer("x", region=Region("px", 2, 1, 4, 4), fit="contain")), art=art)
    assert ascii_map(image) == ["........", "........", "..GGGG..", "..GGGG..", "........", "........"]


def test_art_is_resized_to_cover_the_box():
    art = {0: Image.new("RGB", (3, 2), GREEN[:3])}
    image = C.compose(layout(GenerateLayer("x")), art=art)
    assert ascii_map(image) == ["GGGGGGGG"] * 6


def test_image_layer_path_relative_to_layout(tmp_path):
    halves(2, 1, RED, BLUE).save(tmp_path / "logo.png")
    lay = layout(ImageLayer("logo.png", Region("px", 0, 0, 2, 1)), source=str(tmp_path / "poster.yaml"))
    assert ascii_map(C.compose(lay))[0] == "RB......"


def test_image_path_from_home_reads_the_same_in_code_and_yaml(tmp_path, monkeypatch):
    """'~/logo.png' is the home folder's file whether the layout is a YAML file or built in code."""
    from studio.check import check_layout

    monkeypatch.setenv("HOME", str(tmp_path))
    halves(2, 1, RED, BLUE).save(tmp_path / "logo.png")
    in_code = layout(ImageLayer("~/logo.png", Region("px", 0, 0, 2, 1)), source="<code>")
    check_layout(in_code)
    from_yaml = parse_layout("canvas: {width: 8, height: 6}\nlayers:\n  - image: {path: ~/logo.png, region: {x: 0, y: 0, w: 2, h: 1}}\n",
                             source=str(tmp_path / "sub" / "poster.yaml"))
    assert ascii_map(C.compose(in_code))[0] == ascii_map(C.compose(from_yaml))[0] == "RB......"


def image_layer(tmp_path, name, w=2, h=1):
    return layout(ImageLayer(name, Region("px", 0, 0, w, h), fit="contain"), source=str(tmp_path / "poster.yaml"))


def test_image_layer_is_turned_upright_by_its_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: turn 90 degrees clockwise to show
    halves(2, 1, RED, BLUE).convert("RGB").save(tmp_path / "phone.png", exif=exif)
    assert ascii_map(C.compose(image_layer(tmp_path, "phone.png", 2, 2)))[:2] == ["R.......", "B......."]


def test_16_bit_grey_is_scaled_to_8_bits(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)  # v / 257: 0, 1, 127.5, 255
    Image.fromarray(values).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as im:
        assert im.mode == "I;16"
    image = C.compose(image_layer(tmp_path, "grey16.png", 4, 1))
    assert np.asarray(image)[0, :4].tolist() == [[0] * 3, [1] * 3, [128] * 3, [255] * 3]


def test_16_bit_big_endian_grey_is_scaled_to_8_bits(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=">u2")
    Image.frombytes("I;16B", (4, 1), values.tobytes()).save(tmp_path / "grey16b.tif")
    with Image.open(tmp_path / "grey16b.tif") as im:
        assert im.mode == "I;16B"
    image = C.compose(image_layer(tmp_path, "grey16b.tif", 4, 1))
    assert np.asarray(image)[0, :4].tolist() == [[0] * 3, [1] * 3, [128] * 3, [255] * 3]


def test_16_bit_grey_keeps_its_transparent_value(tmp_path):
    """A tRNS chunk makes the 16-bit value 257 transparent; 300, which is 1 at 8 bits too, stays opaque."""
    Image.fromarray(np.array([[0, 257, 300, 65535]], dtype=np.uint16)).save(tmp_path / "key.png", transparency=257)
    with Image.open(tmp_path / "key.png") as im:
        assert (im.mode, im.info["transparency"]) == ("I;16", 257)
    picture = C.open_image(ImageLayer("key.png"), 0, tmp_path)
    assert np.asarray(picture)[0].tolist() == [[0, 0, 0, 255], [1, 1, 1, 0], [1, 1, 1, 255], [255, 255, 255, 255]]


def png(path: Path, width: int, height: int, depth: int, colour_type: int, samples: list[list[int]],
        trns: tuple[int, ...], orientation: int | None = None) -> None:
    """A PNG written byte by byte (Pillow writes no 16-bit colour, nor 2- or 4-bit grey with a tRNS chunk): rows of
    samples of `depth` bits, a tRNS colour key of 16-bit values (none for ()), an EXIF orientation in an eXIf chunk."""
    def chunk(name: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + name + data + struct.pack(">I", zlib.crc32(name + data))

    def row(values: list[int]) -> bytes:
        if depth == 16:
            return np.array(values, ">u2").tobytes()
        bits = "".join(format(v, f"0{depth}b") for v in values)
        return int(bits + "0" * (-len(bits) % 8), 2).to_bytes((len(bits) + 7) // 8, "big")

    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + (chunk(b"tRNS", struct.pack(f">{len(trns)}H", *trns)) if trns else b"")
                     + (chunk(b"eXIf", exif.tobytes()[6:]) if orientation else b"")  # less the 'Exif\0\0' of JPEG
                     + chunk(b"IDAT", zlib.compress(b"".join(b"\0" + row(r) for r in samples))) + chunk(b"IEND", b""))


def test_16_bit_colour_is_keyed_by_all_16_bits(tmp_path):
    """The key (0, 0, 255) is a near black: Pillow keeps the high byte, (0, 0, 0), and keyed its 8-bit pixels with
    the 16-bit key, so this pixel was drawn black and pure blue (0, 0, 65535 -> 255) transparent. (0, 0, 254),
    one level off, stays opaque (0, 0, 0)."""
    png(tmp_path / "key16.png", 4, 1, 16, 2, [[0, 0, 255, 0, 0, 65535, 65535, 65535, 65535, 0, 0, 254]], (0, 0, 255))
    with Image.open(tmp_path / "key16.png") as im:
        assert (im.mode, im.info["transparency"]) == ("RGB", (0, 0, 255))
    image = C.compose(replace(image_layer(tmp_path, "key16.png", 4, 1), canvas=Canvas(4, 1, background=RED)))
    assert np.asarray(image).tolist() == [[[255, 0, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]]]


def test_16_bit_colour_key_turns_with_the_exif_orientation(tmp_path):
    """Stored 3 x 1 px with orientation 6 (turn 90 degrees clockwise): shown 1 x 3, the keyed pixel on top."""
    png(tmp_path / "turned.png", 3, 1, 16, 2, [[0, 0, 255, 0, 0, 65535, 65535, 0, 0]], (0, 0, 255), orientation=6)
    picture = C.open_image(ImageLayer("turned.png"), 0, tmp_path)
    assert np.asarray(picture).tolist() == [[[0, 0, 0, 0]], [[0, 0, 255, 255]], [[255, 0, 0, 255]]]


def test_16_bit_grey_with_alpha_is_scaled_to_8_bits(tmp_path):
    """Grey and alpha of a 16-bit grey + alpha PNG as v / 257 rounded (1, 2, 255; 255, 128, 1), as 16-bit grey is:
    Pillow kept each sample's high byte (0, 1, 255; 255, 128, 1)."""
    png(tmp_path / "la16.png", 3, 1, 16, 4, [[255, 65535, 510, 32768, 65535, 300]], ())
    assert np.asarray(C.open_image(ImageLayer("la16.png"), 0, tmp_path)).tolist() == [
        [[1, 1, 1, 255], [2, 2, 2, 128], [255, 255, 255, 1]]]
    image = C.compose(replace(image_layer(tmp_path, "la16.png", 3, 1), canvas=Canvas(3, 1, background=BLACK)))
    assert np.asarray(image).tolist() == [[[1, 1, 1], [1, 1, 1], [1, 1, 1]]]  # 255 x 1/255 over black


@pytest.mark.parametrize("depth, key, pixels", [
    (2, 1, [[0, 0, 0, 255], [85, 85, 85, 0], [170, 170, 170, 255], [255, 255, 255, 255]]),  # 0..3 x 85
    (4, 5, [[0, 0, 0, 255], [85, 85, 85, 0], [170, 170, 170, 255], [255, 255, 255, 255]]),  # 0..15 x 17
    (1, 1, [[0, 0, 0, 255], [255, 255, 255, 0], [255, 255, 255, 0], [0, 0, 0, 255]]),  # Pillow keys this one itself
])
def test_grey_of_fewer_than_8_bits_is_keyed_by_the_level_written(tmp_path, depth, key, pixels):
    """Pillow scales 2- and 4-bit grey to 0..255 but kept the key as written (1 of 0..3), which then keyed no
    pixel: the level written (1) is transparent, the others opaque."""
    written = {2: [0, 1, 2, 3], 4: [0, 5, 10, 15], 1: [0, 1, 1, 0]}[depth]
    png(tmp_path / "grey.png", 4, 1, depth, 0, [written], (key,))
    assert np.asarray(C.open_image(ImageLayer("grey.png"), 0, tmp_path)).tolist() == [pixels]


ORIENTATIONS = {5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}  # EXIF orientation -> Pillow's turn that shows it upright


# stored 3 x 2 px, one value each: every turn shows another arrangement
TURNED = np.array([[10, 60, 110], [160, 210, 250]], dtype=np.uint8)


@pytest.mark.parametrize("suffix", ["jpg", "png", "tif", "webp"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_turns_as_pillows_exif_transpose(tmp_path, suffix, orientation):
    """The compositor turns a picture by `TURNS`, not by ImageOps.exif_transpose (which writes the EXIF again):
    the same pixels, for each orientation and format."""
    from PIL import ImageOps

    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.merge("RGB", [Image.fromarray(TURNED), Image.fromarray(255 - TURNED), Image.fromarray(TURNED // 2)]).save(
        tmp_path / f"photo.{suffix}", exif=exif)
    with Image.open(tmp_path / f"photo.{suffix}") as im:
        assert im.getexif()[0x0112] == orientation
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGBA"))
    picture = np.asarray(C.open_image(ImageLayer(f"photo.{suffix}"), 0, tmp_path))
    assert picture.shape == ((2, 3, 4) if orientation < 5 else (3, 2, 4))
    assert np.array_equal(picture, expected)


def exif_block(entries: list[tuple[int, int, int, bytes]], count: int | None = None) -> bytes:
    """An EXIF block written by hand, as Pillow's save takes it ('Exif\\0\\0', then a big-endian TIFF header and
    IFD): (tag, type, count, 4 value bytes) entries; `count` entries announced (a damaged block announces more)."""
    ifd = struct.pack(">H", len(entries) if count is None else count)
    ifd += b"".join(struct.pack(">HHI", tag, kind, n) + value for tag, kind, n, value in entries) + bytes(4)
    return b"Exif\0\0MM\0\x2a" + struct.pack(">I", 8) + ifd


STORED = [[list(RED)] * 2 + [list(BLUE)] * 2] * 2  # 4 x 2, red left of blue
SHOWN = [[list(RED)] * 2] * 2 + [[list(BLUE)] * 2] * 2  # turned by orientation 6: 2 x 4, red on top


def test_exif_with_a_tag_of_a_non_standard_type_still_turns(tmp_path):
    """Orientation 6 beside a tag (T6Options) stored as text, not its standard LONG: exif_transpose failed writing
    the EXIF again (struct.error), so proof and render stopped. Stored 4 x 2, red left of blue: shown 2 x 4, red on
    top."""
    exif = exif_block([(0x0112, 3, 1, struct.pack(">HH", 6, 0)), (0x0125, 2, 2, b"x\0\0\0")])
    halves(4, 2, RED, BLUE).convert("RGB").save(tmp_path / "photo.png", exif=exif)
    assert np.asarray(C.open_image(ImageLayer("photo.png"), 0, tmp_path)).tolist() == SHOWN


@pytest.mark.parametrize("exif, pixels", [
    (b"Exif\0\0not a TIFF header", STORED),
    (exif_block([(0x0112, 3, 1, struct.pack(">HH", 6, 0))])[:20], STORED),  # cut inside the orientation's entry
    (exif_block([(0x0112, 3, 1, struct.pack(">HH", 6, 0))], count=5), SHOWN),  # 5 entries announced, the first read
])
def test_damaged_exif_turns_by_what_can_be_read(tmp_path, exif, pixels):
    """An orientation that cannot be read leaves the picture as stored, as image viewers show it; one that can
    turns it, the damage after it ignored; no error and no warning (Pillow's 'Corrupt EXIF data': pytest fails on
    one)."""
    halves(4, 2, RED, BLUE).convert("RGB").save(tmp_path / "photo.png", exif=exif)
    assert np.asarray(C.open_image(ImageLayer("photo.png"), 0, tmp_path)).tolist() == pixels


def test_damaged_avif_is_an_input_error(tmp_path):
    """Pillow's AVIF decoder raises SyntaxError for a cut-short file (and RuntimeError for others), which no
    `except OSError` caught: a traceback, not a one-line error."""
    from PIL import features

    if not features.check("avif"):
        pytest.skip("Pillow was built without AVIF")
    out = io.BytesIO()
    halves(16, 16, RED, BLUE).convert("RGB").save(out, "AVIF")
    (tmp_path / "cut.avif").write_bytes(out.getvalue()[:-10])
    # (libavif's words, 'Failed to decode frame 0: Truncated data' here, are its version's)
    with pytest.raises(InputError, match=r"^layers\[3\]\.image\.path: cannot read image 'cut.avif' \(.+\)$"):
        C.open_image(ImageLayer("cut.avif"), 3, tmp_path)
    problem = C.picture_problem("cut.avif", tmp_path / "cut.avif")
    assert re.fullmatch(r"'cut.avif' is damaged: .+", problem)
    with pytest.raises(LayoutError) as loaded:  # the loader's check is that one
        parse_layout("canvas: {width: 8, height: 8}\nlayers:\n  - image: {path: cut.avif}\n", "l.yaml",
                     base_dir=tmp_path)
    assert loaded.value.errors == [f"l.yaml:3: layers[0].image.path: {problem}"]


def test_decoder_runtime_error_is_an_input_error(tmp_path, monkeypatch):
    """RuntimeError, as Pillow's AVIF decoder raises for a file it cannot decode ('Not implemented')."""
    halves(2, 1, RED, BLUE).save(tmp_path / "logo.png")

    def fails(self):
        raise RuntimeError("Failed to decode image: Not implemented")

    monkeypatch.setattr(Image.Image, "load", fails)
    with pytest.raises(InputError, match=r"^layers\[0\]\.image\.path: cannot read image 'logo.png' \(Failed to "
                                         r"decode image: Not implemented\)$"):
        C.open_image(ImageLayer("logo.png"), 0, tmp_path)
    assert C.picture_problem("logo", tmp_path / "logo.png") == "'logo' is damaged: Failed to decode image: Not implemented"


def unreadable_images(folder: Path) -> dict[str, str]:
    """Image files the compositor cannot draw -> what the loader says of each."""
    (folder / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>')
    out = io.BytesIO()
    halves(8, 8, RED, BLUE).save(out, "PNG")
    (folder / "cut.png").write_bytes(out.getvalue()[:-30])
    halves(2, 1, RED, BLUE).convert("RGB").save(folder / "badicc.png", icc_profile=b"not a profile")
    (folder / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(  # a header of 20000 x 20000 px, no pixels
        struct.pack(">I", len(data)) + name + data + struct.pack(">I", zlib.crc32(name + data))
        for name, data in [(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)), (b"IDAT", b""),
                           (b"IEND", b"")]))
    return {"logo.svg": "'logo.svg' is not an image Pillow can read",
            "cut.png": "'cut.png' is damaged: image file is truncated",
            "badicc.png": "'badicc.png' has a colour profile that cannot be used (cannot open profile from string)",
            "huge.png": "'huge.png' is too large: an image may have at most 268435456 pixels (2^28); it is 20000 x "
                        "20000 px = 400000000"}


def test_code_built_layout_with_an_unreadable_image_is_refused_before_generating(tmp_path):
    """plan_layout (which render calls first) refused only a missing file: an SVG, a cut-short PNG, an unusable
    profile, a picture over the limit failed in the compositor, after the generations. Refused now with the
    words the loader gives."""
    from studio.check import check_layout
    from studio.plan import plan_layout

    for name, problem in unreadable_images(tmp_path).items():
        with pytest.raises(LayoutError) as loaded:
            parse_layout(f"canvas: {{width: 8, height: 8}}\nlayers:\n  - generate: {{prompt: fox}}\n"
                         f"  - image: {{path: {name}}}\n", "poster.yaml", base_dir=tmp_path)
        assert loaded.value.errors == [f"poster.yaml:4: layers[1].image.path: {problem}"]
        code = Layout(str(tmp_path / "code.yaml"), Canvas(8, 8), (GenerateLayer("fox"), ImageLayer(name)))
        for check in (check_layout, lambda lay: plan_layout(lay, model=str(tmp_path / "no-model"))):
            with pytest.raises(InputError) as checked:
                check(code)
            assert str(checked.value) == f"{tmp_path / 'code.yaml'}: layers[1] (ImageLayer).path: {problem}"


@pytest.mark.parametrize("mode", ["L", "I;16", "P", "RGB", "RGBA", "CMYK"])
@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_an_uncompressed_tiff_turned_by_90_degrees_is_drawn_upright(tmp_path, mode, orientation):
    """Each mode from an uncompressed TIFF stored sideways (EXIF orientation 5-8) as from an upright one."""
    def picture(values):
        if mode == "I;16":
            return Image.fromarray(values.astype(np.uint16) * 257)
        if mode == "RGBA":
            return Image.merge("RGBA", [Image.fromarray(values)] * 3 + [Image.fromarray(255 - values // 2)])
        return Image.fromarray(values).convert(mode)

    exif = Image.Exif()
    exif[0x0112] = orientation
    picture(TURNED).save(tmp_path / "turned.tif", compression="raw", exif=exif)
    upright = np.asarray(Image.fromarray(TURNED).transpose(ORIENTATIONS[orientation]))  # as Pillow turns a picture
    picture(upright).save(tmp_path / "upright.tif", compression="raw")
    with Image.open(tmp_path / "turned.tif") as im:
        assert (im.mode, im.info["compression"]) == (mode, "raw")
    composed = [np.asarray(C.compose(image_layer(tmp_path, name, 2, 3))) for name in ("turned.tif", "upright.tif")]
    assert np.array_equal(*composed)


def test_32_bit_integer_grey_is_read_as_16_bit_values(tmp_path):
    """Mode I (a 32-bit TIFF; Pillow's 16-bit PGM): v / 257 as for 16 bits, clipped to 0..65535."""
    values = np.array([[0, -5, 257, 32768, 65535, 70000]], dtype=np.int32)
    Image.fromarray(values).save(tmp_path / "grey32.tif")
    with Image.open(tmp_path / "grey32.tif") as im:
        assert im.mode == "I"
    image = C.compose(layout(ImageLayer("grey32.tif", Region("px", 0, 0, 6, 1)), source=str(tmp_path / "p.yaml")))
    assert np.asarray(image)[0, :6, 0].tolist() == [0, 0, 1, 128, 255, 255]


def test_float_grey_is_scaled_from_0_1_to_8_bits(tmp_path):
    """Mode F (a float TIFF): 0..1 is black..white, v * 255 rounded half up; outside 0..1 clipped, NaN black.
    Pillow's own conversion drew it all black (1.0 -> 1)."""
    values = np.array([[0, 0.25, 0.5, 1, -0.5, 2, np.nan, 1 / 255]], dtype=np.float32)
    Image.fromarray(values).save(tmp_path / "float.tif")
    with Image.open(tmp_path / "float.tif") as im:
        assert im.mode == "F"
    image = C.compose(layout(ImageLayer("float.tif", Region("px", 0, 0, 8, 1)), source=str(tmp_path / "p.yaml")))
    assert np.asarray(image)[0, :8, 0].tolist() == [0, 64, 128, 255, 0, 255, 0, 1]


def icc_tags(profile: bytes) -> dict[bytes, int]:
    """Tag signature -> offset of its entry in the tag table."""
    count = struct.unpack(">I", profile[128:132])[0]
    return {profile[132 + 12 * i:136 + 12 * i]: 132 + 12 * i for i in range(count)}


def swapped_primaries_profile() -> bytes:
    """An RGB profile whose red primary is sRGB's green and vice versa: sRGB's with two tags swapped."""
    tags, profile = icc_tags(srgb_profile()), bytearray(srgb_profile())
    r, g = tags[b"rXYZ"], tags[b"gXYZ"]
    profile[r + 4:r + 12], profile[g + 4:g + 12] = profile[g + 4:g + 12], profile[r + 4:r + 12]
    profile[84:100] = bytes(16)  # no profile ID
    return bytes(profile)


def s15f16(*values: float) -> bytes:
    return b"".join(struct.pack(">i", round(v * 65536)) for v in values)


def cmyk_profile(inks: dict[str, tuple[int, int, int]]) -> bytes:
    """A v2 CMYK -> XYZ profile (lut16, 2 grid points per ink) in which each ink multiplies linear sRGB by
    its colour: 100% of one ink alone is exactly that sRGB colour."""
    d50 = (0.9642, 1.0, 0.8249)
    srgb_to_xyz = np.array([[0.4360747, 0.3850649, 0.1430804], [0.2225045, 0.7168786, 0.0606169],
                            [0.0139322, 0.0971045, 0.7141733]])  # linear sRGB -> XYZ (D50)

    def linear(rgb):
        c = np.asarray(rgb, dtype=np.float64) / 255
        return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)

    grid = []
    for on in itertools.product((0, 1), repeat=4):  # C, M, Y, K; K varies fastest
        rgb = np.prod([linear(inks[ink]) for ink, o in zip("CMYK", on) if o] or [np.ones(3)], axis=0)
        grid += [round(min(v, 1.99997) * 32768) for v in srgb_to_xyz @ rgb]  # u1Fixed15
    # lut16: 4 inputs, 3 outputs, 2 grid points; identity matrix; 2-entry identity input and output curves
    lut = (b"mft2" + bytes(4) + bytes([4, 3, 2, 0]) + s15f16(1, 0, 0, 0, 1, 0, 0, 0, 1) + struct.pack(">HH", 2, 2)
           + struct.pack(">8H", *[0, 65535] * 4) + struct.pack(f">{len(grid)}H", *grid)
           + struct.pack(">6H", *[0, 65535] * 3))
    desc = b"desc" + bytes(4) + struct.pack(">I", 5) + b"CMYK\0" + bytes(78)
    tags = [(b"desc", desc), (b"wtpt", b"XYZ " + bytes(4) + s15f16(*d50)), (b"A2B0", lut)]
    table, data, start = b"", b"", 132 + 12 * len(tags)
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", start + len(data), len(body))
        data += body
    header = (struct.pack(">I", start + len(data)) + b"lcms" + struct.pack(">I", 0x02100000) + b"prtrCMYKXYZ "
              + bytes(12) + b"acsp" + bytes(28) + s15f16(*d50) + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + data


def test_icc_profile_is_converted_to_srgb(tmp_path):
    picture = Image.new("RGB", (3, 1))
    picture.putpixel((0, 0), RED[:3])
    picture.putpixel((1, 0), GREEN[:3])
    picture.putpixel((2, 0), (128, 128, 128))
    picture.save(tmp_path / "swapped.png", icc_profile=swapped_primaries_profile())
    image = C.compose(image_layer(tmp_path, "swapped.png", 3, 1))
    assert np.asarray(image)[0, :3].tolist() == [[0, 255, 0], [255, 0, 0], [128, 128, 128]]
    picture.save(tmp_path / "srgb.png", icc_profile=srgb_profile())  # sRGB to sRGB changes nothing
    assert np.asarray(C.compose(image_layer(tmp_path, "srgb.png", 3, 1)))[0, :3].tolist() == [
        [255, 0, 0], [0, 255, 0], [128, 128, 128]]


def test_cmyk_jpeg_is_converted_with_its_profile(tmp_path):
    inks = {"C": (0, 160, 220), "M": (230, 0, 126), "Y": (255, 240, 0), "K": (35, 31, 32)}
    picture = Image.new("CMYK", (5, 1))
    for x, cmyk in enumerate([(255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 255, 0), (0, 0, 0, 255), (0, 0, 0, 0)]):
        picture.putpixel((x, 0), cmyk)
    picture.save(tmp_path / "press.jpg", quality=100, icc_profile=cmyk_profile(inks))
    pixels = np.asarray(C.compose(image_layer(tmp_path, "press.jpg", 5, 1)))[0, :5].astype(int)
    expected = np.array([inks["C"], inks["M"], inks["Y"], inks["K"], (255, 255, 255)])
    assert np.abs(pixels - expected).max() <= 1  # not Pillow's naive (0, 255, 255), (255, 0, 255), ...


def test_lab_image_with_its_lab_profile_is_converted(tmp_path):
    Image.new("RGB", (2, 1), RED[:3]).convert("LAB").save(tmp_path / "lab.tif")  # Pillow embeds its Lab profile
    with Image.open(tmp_path / "lab.tif") as saved:
        assert saved.info.get("icc_profile")
    pixels = np.asarray(C.compose(image_layer(tmp_path, "lab.tif", 2, 1)))[0, :2].astype(int)
    assert np.abs(pixels - np.array([RED[:3]] * 2)).max() <= 6  # sRGB red through Lab (8-bit a, b) and back


def test_colour_profile_of_another_colour_space_is_an_error(tmp_path):
    Image.new("RGB", (1, 1)).save(tmp_path / "odd.png", icc_profile=cmyk_profile(dict.fromkeys("CMYK", (0, 0, 0))))
    with pytest.raises(InputError, match=r"layers\[0\].image.path: cannot read image 'odd.png' .*CMYK colour profile"):
        C.compose(image_layer(tmp_path, "odd.png"))


def test_proof_draws_placeholders_instead_of_art():
    lay = layout(GenerateLayer("a sunset", name="sky", region=Region("px", 0, 0, 64, 48)), w=80, h=60)
    art = {0: Image.new("RGB", (64, 48), GREEN[:3])}
    with_art, proof, missing = C.compose(lay, art), C.compose(lay, art, proof=True), C.compose(lay)
    assert ascii_map(with_art)[0][:64] == "G" * 64
    for image in (proof, missing):
        assert ink(image)[:48, :64].all()  # the whole box is tinted
        assert not ink(image)[48:, :].any() and not ink(image)[:, 64:].any()
        assert len(colours(image.crop((0, 0, 64, 48)))) > 3  # tint, hatching, frame, label
    labelled = C.compose(lay, proof=True, labels={0: "generate 1024x768"})
    assert labelled.tobytes() != proof.tobytes()


def test_proof_at_4k():
    lay = Layout("<string>", Canvas(3840, 2160), (GenerateLayer("a city at night"),))
    image = C.compose(lay, proof=True, labels={0: "generate 2048x1152 + upscale"})
    assert image.size == (3840, 2160)


# -- text ------------------------------------------------------------------------------------------------------------

def text_layout(w=200, h=80, **text):
    text.setdefault("region", Region("px", 20, 10, 160, 60))
    return layout(TextLayer(**text), w=w, h=h)


def test_default_font_draws_text():
    assert C.fonts.find_font(None) == C.fonts.DEFAULT  # Pillow's bundled font: no installed fonts needed
    image = C.compose(text_layout(text="Hello", size=20))
    assert ink(image).sum() > 20
    assert np.asarray(image).min() == 0  # solid black core: antialiased, not all grey


@pytest.fixture
def font_dir(tmp_path, monkeypatch):
    """A font folder holding only Pillow's bundled face (family 'Aileron', style 'Regular') as Brand-Regular.ttf;
    no fontconfig."""
    from PIL import ImageFont

    folder = tmp_path / "fonts"
    folder.mkdir()
    (folder / "Brand-Regular.ttf").write_bytes(ImageFont.load_default(10).path.getvalue())
    monkeypatch.setattr(C.fonts, "FONT_DIRS", (str(folder),))
    monkeypatch.setattr(C.fonts, "_fc_match", lambda name: None)
    monkeypatch.setattr(C.fonts, "_dependency_font_dirs", lambda: [])
    C.fonts._font_files.cache_clear()
    C.fonts._find_family.cache_clear()
    yield folder
    C.fonts._font_files.cache_clear()
    C.fonts._find_family.cache_clear()


@pytest.mark.parametrize("name", ["Aileron", "aileron-regular", "Aileron Regular", "Brand", "brand_regular",
                                  "Aileron Book", "aileron_normal", "Aileron Roman"])  # plain styles are one
def test_family_is_found_by_the_names_inside_the_file_and_its_file_name(font_dir, name):
    assert C.fonts.find_font(name) == str(font_dir / "Brand-Regular.ttf")


@pytest.mark.parametrize("name", ["Aileron Bold", "Brand Bold", "Regular"])
def test_family_not_found(font_dir, name):
    assert C.fonts.find_font(name) is None


def test_a_style_a_family_lacks_is_said_with_the_styles_it_has(font_dir):
    """'DejaVu Sans Italic' is not found (DejaVu calls it Oblique): the message lists the family's styles."""
    assert C.fonts.not_found("Aileron Bold", None, "") == ("no such font 'Aileron Bold' (a .ttf/.otf path or an "
                                                           "installed family); Aileron has the styles Regular")
    assert C.fonts.not_found("Brand Bold", None, "").endswith("installed family)")  # a file name, not a family


def test_dejavu_sans_from_opencv_is_found_with_no_fonts_installed(tmp_path, monkeypatch):
    """opencv-python's Linux wheels carry DejaVu Sans: a family with accents, Greek and Cyrillic on any such
    machine, where Pillow's bundled default has basic Latin only."""
    folders = C.fonts._dependency_font_dirs()
    if not any(Path(folder, "DejaVuSans.ttf").is_file() for folder in folders):
        pytest.skip("this opencv-python wheel carries no fonts (its Linux wheels do)")
    monkeypatch.setattr(C.fonts, "FONT_DIRS", (str(tmp_path),))  # no fonts installed, no fontconfig
    monkeypatch.setattr(C.fonts, "_fc_match", lambda name: None)
    C.fonts._font_files.cache_clear()
    C.fonts._find_family.cache_clear()
    try:
        assert C.fonts.find_font("DejaVu Sans") == str(Path(folders[0], "DejaVuSans.ttf"))
        assert C.fonts.find_font("DejaVu Sans Bold") == str(Path(folders[0], "DejaVuSans-Bold.ttf"))
        assert C.fonts.find_font("DejaVu Sans Regular") == str(Path(folders[0], "DejaVuSans.ttf"))  # its Book
    finally:
        C.fonts._font_files.cache_clear()
        C.fonts._find_family.cache_clear()


# Tiny TrueType fonts built byte by byte: one glyph, 'I', a bar 700 units high from x = 100 to 100 + bar
# (1000 units per em: at 10 px, whole pixels, so every pixel is exactly ink or paper).

def sfnt(tables: dict[str, bytes]) -> bytes:
    """An OpenType file of `tables` (search fields zero: FreeType does not read them)."""
    out = struct.pack(">IHHHH", 0x00010000, len(tables), 0, 0, 0)
    offset, body = 12 + 16 * len(tables), b""
    for tag in sorted(tables):
        data = tables[tag] + bytes(-len(tables[tag]) % 4)
        checksum = sum(struct.unpack(f">{len(data) // 4}I", data)) & 0xFFFFFFFF
        out += struct.pack(">4sIII", tag.encode(), checksum, offset + len(body), len(tables[tag]))
        body += data
    return out + body


def name_table(names: dict[int, str]) -> bytes:
    records, strings = b"", b""
    for name_id, text in names.items():  # Windows, Unicode BMP, US English
        records += struct.pack(">6H", 3, 1, 0x409, name_id, len(text.encode("utf-16-be")), len(strings))
        strings += text.encode("utf-16-be")
    return struct.pack(">3H", 0, len(names), 6 + 12 * len(names)) + records + strings


def tiny_font(family: str, style: str, bar: int = 300, variable: bool = False) -> bytes:
    """variable: a 'wght' axis 400..700 (default 400) whose 700 widens the bar by 500 units, with named
    instances Regular (400) and Bold (700)."""
    x0, x1 = 100, 100 + bar
    glyph = (struct.pack(">5h", 1, x0, 0, x1, 700) + struct.pack(">HH", 3, 0) + bytes([1] * 4)  # 4 on-curve points
             + struct.pack(">4h", x0, 0, x1 - x0, 0) + struct.pack(">4h", 0, 700, 0, -700))  # x, y deltas
    tables = {
        "head": struct.pack(">4I2H2Q4h2H3h", 0x10000, 0x10000, 0, 0x5F0F3CF5, 0b1011, 1000, 0, 0,
                            0, 0, 1000, 1000, 0, 3, 2, 0, 0),
        "hhea": struct.pack(">I3hH11hH", 0x10000, 800, -200, 0, 1000, 0, 0, 1000, 1, 0, 0, 0, 0, 0, 0, 0, 2),
        "maxp": struct.pack(">I14H", 0x10000, 2, 4, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0),
        "hmtx": struct.pack(">HhHh", 1000, 0, 1000, x0),
        "loca": struct.pack(">3H", 0, 0, len(glyph) // 2),
        "glyf": glyph,
        "cmap": struct.pack(">4HI", 0, 1, 3, 1, 12) + struct.pack(  # format 4: 'I' -> glyph 1
            ">7H 2H H 2H 2h 2H", 4, 32, 0, 4, 4, 1, 0, 0x49, 0xFFFF, 0, 0x49, 0xFFFF, 1 - 0x49, 1, 0, 0),
        "post": struct.pack(">2I2h5I", 0x30000, 0, 0, 0, 1, 0, 0, 0, 0),
    }
    names = {1: family, 2: style, 4: f"{family} {style}", 6: f"{family}-{style}".replace(" ", "")}
    if variable:
        names |= {256: "Weight", 257: "Regular", 258: "Bold"}
        fixed = lambda v: v << 16  # noqa: E731
        tables["fvar"] = (struct.pack(">8H", 1, 0, 16, 2, 1, 20, 2, 8)
                          + struct.pack(">4s3i2H", b"wght", fixed(400), fixed(400), fixed(700), 0, 256)
                          + struct.pack(">2Hi", 257, 0, fixed(400)) + struct.pack(">2Hi", 258, 0, fixed(700)))
        # glyph 1's one tuple, peak wght = 700, for all its points (4 + 4 phantom): x deltas 0 0 500 500 0 0 0 0
        # (the bar's right edge), y deltas all 0; packed: 'all points', 2 zeros, 2 words, 4 zeros; 8 zeros
        deltas = bytes([0, 0x81, 0x41]) + struct.pack(">2h", 500, 500) + bytes([0x83, 0x87])
        data = struct.pack(">4Hh", 1, 10, len(deltas), 0xA000, 0x4000) + deltas  # embedded peak, own points
        data += bytes(len(data) % 2)
        tables["gvar"] = (struct.pack(">4HI2HI", 1, 0, 1, 0, 0, 2, 0, 26)
                          + struct.pack(">3H", 0, 0, len(data) // 2) + data)
    tables["name"] = name_table(names)
    return sfnt(tables)


def collection(*fonts: bytes) -> bytes:
    """A .ttc of whole fonts: each font's table offsets moved by where it lands in the file."""
    starts = list(itertools.accumulate([12 + 4 * len(fonts)] + [len(f) for f in fonts[:-1]]))
    out = b"ttcf" + struct.pack(f">2I{len(fonts)}I", 0x10000, len(fonts), *starts)
    for font, start in zip(fonts, starts):
        font = bytearray(font)  # each a multiple of 4 bytes long
        for i in range(struct.unpack(">H", font[4:6])[0]):
            at = 12 + 16 * i + 8
            font[at:at + 4] = struct.pack(">I", struct.unpack(">I", font[at:at + 4])[0] + start)
        out += bytes(font)
    return out


BARS = {3: [".###......."] * 7, 5: [".#####....."] * 7, 8: [".########.."] * 7}  # rows 2..8 of an 'I' at 10 px


def bar(font) -> list[str]:
    """'I' drawn at (0, 9) on its baseline in an 11 x 10 canvas: its rows 2..8 (# ink, . paper, ? partial)."""
    mask = Image.new("L", (11, 10))
    ImageDraw.Draw(mask).text((0, 9), "I", font=font, fill=255, anchor="ls")
    rows = ["".join("#" if v == 255 else "." if v == 0 else "?" for v in row) for row in np.asarray(mask)]
    assert rows[:2] + rows[9:] == ["." * 11] * 3
    return rows[2:9]


@pytest.fixture
def tiny_fonts(tmp_path, monkeypatch):
    """A font folder (no fontconfig) with a collection of two families, Test JP (face 0, a 3-unit bar) and
    Test SC (face 1, 5), and a variable Test Var (Regular: 3, Bold: 8)."""
    folder = tmp_path / "fonts"
    folder.mkdir()
    (folder / "cjk.ttc").write_bytes(collection(tiny_font("Test JP", "Regular"), tiny_font("Test SC", "Regular", 500)))
    (folder / "Var[wght].ttf").write_bytes(tiny_font("Test Var", "Regular", variable=True))
    monkeypatch.setattr(C.fonts, "FONT_DIRS", (str(folder),))
    monkeypatch.setattr(C.fonts, "_fc_match", lambda name: None)
    monkeypatch.setattr(C.fonts, "_dependency_font_dirs", lambda: [])
    caches = (C.fonts._font_files, C.fonts._find_family, C.fonts.open_face)
    for cache in caches:
        cache.cache_clear()
    yield folder
    for cache in caches:
        cache.cache_clear()


@pytest.mark.parametrize("name, face, width", [
    ("Test JP", ("cjk.ttc", 0), 3),
    ("Test SC", ("cjk.ttc", 1), 5),  # was face 0, Test JP's
    ("test-sc-regular", ("cjk.ttc", 1), 5),
    ("Test Var", ("Var[wght].ttf", 0), 3),
    ("Test Var Regular", ("Var[wght].ttf", 0), 3),
    ("Test Var Bold", ("Var[wght].ttf", 2 * 65536), 8),  # the second named instance; was not found
    ("cjk", ("cjk.ttc", 0), 3),  # the file's name: its first face
])
def test_faces_of_collections_and_instances_of_variable_fonts(tiny_fonts, name, face, width):
    assert C.fonts.find_face(name) == (str(tiny_fonts / face[0]), face[1])
    assert C.fonts.find_font(name) == str(tiny_fonts / face[0])  # the file, as manifests hash it
    assert bar(C.fonts.load_font(name, 10)) == BARS[width]


@pytest.mark.parametrize("path, width", [("cjk.ttc", 3), ("cjk.ttc#0", 3), ("cjk.ttc#1", 5),
                                         ("Var[wght].ttf#65536", 3), ("Var[wght].ttf#131072", 8)])
def test_a_path_picks_a_face_with_its_index(tiny_fonts, path, width):
    assert bar(C.fonts.load_font(path, 10, tiny_fonts)) == BARS[width]


def test_a_family_in_a_collection_is_drawn_with_its_own_face(tiny_fonts):
    """The layout keeps the face ('path#1') and the compositor draws it."""
    layout_file = tiny_fonts / "poster.yaml"
    layout_file.write_text("canvas: {width: 12, height: 10}\nlayers:\n"
                           "  - text: {text: I, font: Test SC, size: 10, region: {x: 0, y: 0, w: 12, h: 10}}\n"
                           "  - text: {text: I, font: 'cjk.ttc#1', size: 10, region: {x: 0, y: 0, w: 12, h: 10}}\n"
                           "  - text: {text: I, font: Test Var Bold, size: 10, region: {x: 2, y: 0, w: 10, h: 10}}\n")
    lay = load_layout(layout_file)
    assert [layer.font for layer in lay.layers] == [f"{tiny_fonts / 'cjk.ttc'}#1"] * 2 + [
        f"{tiny_fonts / 'Var[wght].ttf'}#131072"]
    sc, bold = [".KKKKK......"] * 7, ["...KKKKKKKK."] * 7  # Test SC's 5 px bar from x = 0, Bold's 8 from x = 2
    for layer, bar_rows in zip(lay.layers, [sc, sc, bold]):
        assert ascii_map(C.compose(replace(lay, layers=(layer,)))) == ["." * 12] + bar_rows + ["." * 12] * 2


def plain_style_fonts(folder: Path) -> None:
    """Test Av in two files, Book (a 3-unit bar) and Roman (5), and Test Bd in Bold only (8)."""
    (folder / "av-book.ttf").write_bytes(tiny_font("Test Av", "Book"))
    (folder / "av-roman.ttf").write_bytes(tiny_font("Test Av", "Roman", 500))
    (folder / "bd.ttf").write_bytes(tiny_font("Test Bd", "Bold", 800))


def test_a_plain_style_is_named_by_any_plain_style(tiny_fonts):
    """'DejaVu Sans Regular' is DejaVu Sans Book: a face of a plain style (regular, book, normal, roman) is also
    the family + any of them; a face's own style wins (Avenir has both a Book and a Roman)."""
    plain_style_fonts(tiny_fonts)
    for name, face in [("Test JP Book", ("cjk.ttc", 0)), ("test-sc-normal", ("cjk.ttc", 1)),
                       ("Test Var Roman", ("Var[wght].ttf", 0)), ("Test Av Book", ("av-book.ttf", 0)),
                       ("Test Av Roman", ("av-roman.ttf", 0)), ("Test Av Regular", ("av-book.ttf", 0))]:
        assert C.fonts.find_face(name) == (str(tiny_fonts / face[0]), face[1]), name
    assert C.fonts.find_face("Test Bd Regular") is None  # Bold is no plain style
    assert C.fonts.not_found("Test Bd Regular", None, "").endswith("; Test Bd has the styles Bold")


def test_dejavu_sans_regular_is_dejavu_sans(dejavu):
    """DejaVu calls its regular face Book: 'DejaVu Sans Regular' was refused, though fc-match gives Book."""
    assert C.fonts.find_font("DejaVu Sans Regular") == C.fonts.find_font("DejaVu Sans Book") == dejavu


FC_MATCH = C.fonts._fc_match  # the real one: the tiny_fonts fixture replaces it


def test_fontconfig_gives_the_face_index(tiny_fonts, tmp_path, monkeypatch):
    """fc-match answers with the file and the face of a collection (its %{index}); a family + a plain style is
    asked for as the family with that style, and must be a plain style."""
    if shutil.which("fc-match") is None:
        pytest.skip("no fontconfig")
    plain_style_fonts(tiny_fonts)
    conf = tmp_path / "fonts.conf"
    conf.write_text(f"<?xml version='1.0'?>\n<fontconfig><dir>{tiny_fonts}</dir>"
                    f"<cachedir>{tmp_path / 'fc-cache'}</cachedir></fontconfig>\n")
    monkeypatch.setenv("FONTCONFIG_FILE", str(conf))  # fontconfig knows only the tiny fonts
    assert FC_MATCH("testsc") == FC_MATCH("testscbook") == (str(tiny_fonts / "cjk.ttc"), 1)
    assert FC_MATCH("testjp") == FC_MATCH("testjpregular") == (str(tiny_fonts / "cjk.ttc"), 0)
    assert FC_MATCH("testvarbold") is None  # no such family: the folder scan finds styles
    assert FC_MATCH("testavbook") == (str(tiny_fonts / "av-book.ttf"), 0)
    assert FC_MATCH("testavroman") == (str(tiny_fonts / "av-roman.ttf"), 0)
    assert FC_MATCH("testbdregular") is None  # fc-match answers Bold


@pytest.mark.parametrize("font, message", [
    ("cjk.ttc#2", "'cjk.ttc#2': no face 2: the file has 2, #0 to #1"),
    ("Var[wght].ttf#1", "'Var[wght].ttf#1': no face 1: the file has 1, #0"),
    ("Var[wght].ttf#196608", "'Var[wght].ttf#196608': no named instance 3 (#196608 = face 0 + 3 x 65536): face 0 "
                             "has 2 named instances"),
    ("cjk.ttc#65537", "'cjk.ttc#65537': no named instance 1 (#65537 = face 1 + 1 x 65536): face 1 is not a "
                      "variable font"),
    ("cjk.ttc#x", "no such font 'cjk.ttc#x' (a .ttf/.otf path or an installed family)"),
    ("cjk.ttc#\u0661", "no such font 'cjk.ttc#\u0661' (a .ttf/.otf path or an installed family)"),  # ASCII digits
    ("cjk.ttc#99999999999999999999", "'cjk.ttc#99999999999999999999': #99999999999999999999 is out of range: a face "
                                     "index is at most 2147483647 (2^31 - 1)"),  # Pillow: OverflowError
])
def test_a_face_the_file_lacks_is_a_layout_error(tiny_fonts, font, message):
    with pytest.raises(LayoutError) as info:
        parse_layout(f"canvas: {{width: 12, height: 10}}\nlayers:\n  - text: {{text: I, font: '{font}'}}\n",
                     "poster.yaml", base_dir=tiny_fonts)
    assert info.value.errors == [f"poster.yaml:3: layers[0].text.font: {message}"]


def test_a_face_index_beyond_freetypes_is_refused_when_drawn(tiny_fonts):
    """FreeType reads bits 0-30 of an index: #4294967296 (2^32) would draw face 0."""
    with pytest.raises(InputError) as info:
        C.fonts.load_font("cjk.ttc#4294967296", 10, tiny_fonts)
    assert str(info.value) == ("cannot draw font 'cjk.ttc#4294967296' at 10 px (#4294967296 is out of range: a face "
                               "index is at most 2147483647 (2^31 - 1))")


def test_a_colour_bitmap_font_is_refused_naming_its_sizes(tiny_fonts):
    """A colour emoji font (CBLC/CBDT bitmaps, no outlines) has glyphs at its strikes' sizes only (FreeType:
    'invalid pixel size' at any other)."""
    tables = {}
    font = tiny_font("Test Emoji", "Regular")
    for n in range(struct.unpack(">H", font[4:6])[0]):
        tag, _, offset, length = struct.unpack(">4s3I", font[12 + 16 * n:28 + 16 * n])
        tables[tag.decode()] = font[offset:offset + length]
    del tables["glyf"], tables["loca"]
    strike = bytes(40) + struct.pack(">2H4B", 0, 0, 109, 109, 32, 1)  # a BitmapSize: ppem 109, 32-bit colour
    tables |= {"CBLC": struct.pack(">2HI", 3, 0, 1) + strike, "CBDT": struct.pack(">2H", 3, 0)}
    (tiny_fonts / "emoji.ttf").write_bytes(sfnt(tables))
    with pytest.raises(LayoutError) as info:
        parse_layout("canvas: {width: 12, height: 10}\nlayers:\n  - text: {text: I, font: emoji.ttf}\n",
                     "poster.yaml", base_dir=tiny_fonts)
    assert info.value.errors == ["poster.yaml:3: layers[0].text.font: 'emoji.ttf' is not a font Pillow can read (a "
                                 "bitmap font, with fixed sizes only: 109 px; its glyphs are colour pictures, which "
                                 "studio does not draw)"]


def test_without_variation_support_a_named_instance_is_an_error(tiny_fonts, monkeypatch):
    """FreeType built without variation support would draw an instance's index as the default: refused instead,
    and the folder scan knows no instances."""
    from PIL import ImageFont

    def unsupported(self):
        raise OSError("unimplemented feature")
    monkeypatch.setattr(ImageFont.FreeTypeFont, "get_variation_names", unsupported)
    assert C.fonts.find_face("Test Var Bold") is None
    assert C.fonts.find_face("Test Var") == (str(tiny_fonts / "Var[wght].ttf"), 0)
    with pytest.raises(InputError) as info:
        C.fonts.load_font("Var[wght].ttf#131072", 10, tiny_fonts)
    assert str(info.value) == ("cannot draw font 'Var[wght].ttf#131072' at 10 px (a named instance of a variable "
                               "font, and this Pillow's FreeType cannot vary fonts)")


def test_wrap_breaks_lines_inside_the_box():
    text = "mama sees a cocoon near ocean area"  # x-height letters only: lines never touch
    image = C.compose(text_layout(text=text, size=16, region=Region("px", 20, 10, 100, 60)))
    left, top, right, bottom = ink_box(image)
    assert left >= 20 and right <= 120 and top >= 10 and bottom <= 70
    rows = ink(image).any(axis=1)
    bands = int(np.sum(rows[1:] & ~rows[:-1]) + rows[0])
    lines = C.wrap(text, C.fonts.load_font(None, 16), 100, 0)
    assert bands == len(lines) == 3
    assert " ".join(lines) == text


def test_no_wrap_keeps_one_line():
    lay = text_layout(text="alpha beta gamma delta", size=16, wrap=False, region=Region("px", 20, 10, 70, 60))
    rows = ink(C.compose(lay)).any(axis=1)
    assert int(np.sum(rows[1:] & ~rows[:-1])) == 1


def test_shrink_to_fit_makes_text_fit():
    region = Region("px", 20, 10, 100, 30)
    big = C.compose(text_layout(text="Grand Opening", size=60, region=region))
    fitted = C.compose(text_layout(text="Grand Opening", size=60, region=region, shrink_to_fit=True))
    assert ink_box(big)[2] > 120  # overflows the box
    left, top, right, bottom = ink_box(fitted)
    assert left >= 20 and right <= 120 and top >= 10 and bottom <= 40
    layer = TextLayer("Grand Opening", size=60, region=region, shrink_to_fit=True)
    size = C.fitting_size(layer, Box(20, 10, 100, 30), None)
    assert 1 <= size < 60
    font = C.fonts.load_font(None, size + 1)
    assert C.line_width("Grand Opening", font, 0) > 100 or sum(font.getmetrics()) > 30  # size + 1 would not fit


def test_shrink_to_fit_keeps_a_size_that_fits():
    region = Region("px", 20, 10, 160, 60)
    layer = TextLayer("Hi", size=41.67, region=region, shrink_to_fit=True)
    assert C.fitting_size(layer, Box(20, 10, 160, 60), None) == 41.67  # not floored to 41
    fitted = C.compose(text_layout(text="Hi", size=41.67, region=region, shrink_to_fit=True))
    assert fitted.tobytes() == C.compose(text_layout(text="Hi", size=41.67, region=region)).tobytes()
    assert C.fitting_size(TextLayer("Hi", size=41.67, region=region), Box(20, 10, 160, 30), None) == 24


def test_shrink_to_fit_keeps_glyphs_reaching_out_of_their_advance_inside():
    """An oblique J reaches left of its line's start: shrink_to_fit sizes and places the text by its ink too."""
    oblique = C.fonts.find_font("DejaVu Sans Oblique")
    if oblique is None:
        pytest.skip("no DejaVu Sans Oblique on this machine")
    lay = layout(TextLayer("Jump", font=oblique, size=100, shrink_to_fit=True, wrap=False,
                           region=Region("px", 20, 10, 100, 40)), w=140, h=60)
    assert ink_box(C.compose(lay)) == (20, 17, 109, 48)
    assert C.text_problems(lay) == []



def test_shrink_to_fit_takes_the_largest_size_whose_ink_fits():
    """Lines wrap by their advances but fit by their ink: at 13 px 'july and summer' is one line of 96.2 px whose
    ink is 98 px (the j reaches left of it), while 14 px wraps it in two; `fits` is not monotonic in the size."""
    layer, box = TextLayer("july and summer", size=36, shrink_to_fit=True), Box(0, 0, 97, 36)
    assert [C.fits(layer, size, box, None) for size in (12, 13, 14, 15)] == [True, False, True, False]
    assert C.fitting_size(layer, box, None) == 14  # was 12


@pytest.mark.parametrize("text, w, h", [
    ("july and summer", 97, 36),
    ("harbour now festival music the us", 62, 67),
    ("food july at music summer food", 98, 27),
    ("Grand Opening", 100, 30),
    ("summer nights festival of lights join us for music food and friends at the old harbour", 300, 120),
])
def test_shrink_to_fit_size_is_the_largest_that_fits(text, w, h):
    layer, box = TextLayer(text, size=min(w, h), shrink_to_fit=True), Box(0, 0, w, h)
    largest = max(size for size in range(1, min(w, h)) if C.fits(layer, size, box, None))
    assert C.fitting_size(layer, box, None) == largest


def test_shrink_to_fit_of_a_bold_line_a_hair_too_wide(dejavu):
    """At 14 px the first line is 340.9 px of advances in a 341 px box, and its ink 342 px."""
    bold = C.fonts.find_font("DejaVu Sans Bold")
    layer = TextLayer("harbour old us harbour in and food festival join friends july tickets", font=bold, size=106,
                      shrink_to_fit=True)
    box = Box(0, 0, 341, 106)
    assert [size for size in range(13, 28) if C.fits(layer, size, box, None)] == [13, 15, 16, 17, 18, 19, 20, 21,
                                                                                   22, 23, 24, 25, 26]
    assert C.fitting_size(layer, box, None) == 26  # was 13

def canvas_with_safe_margin(*layers, safe=10):
    return Layout("<string>", Canvas(200, 80, safe_margin=safe), tuple(layers))


def test_text_problems_measure_ink_leaving_the_region_or_entering_the_safe_margin():
    inside = TextLayer("Hi", size=24, region=Region("px", 20, 10, 100, 40), stroke_width=3, align="right",
                       valign="bottom")  # the stroke is laid out inside the region too
    assert C.text_problems(canvas_with_safe_margin(inside)) == []
    corner = canvas_with_safe_margin(TextLayer("Hi", size=24, region=Region("px", 0, 0, 200, 80), align="right",
                                               valign="bottom"))
    _, _, right, bottom = ink_box(C.compose(corner))
    assert right in (198, 199) and bottom == 74  # the safe area ends at 190, 70 (199: without raqm, whole-px advances)
    assert C.text_problems(corner) == [
        f"layers[0]: text reaches into the safe margin (right {right - 190} px, bottom 4 px)"]


def test_text_problems_report_clipped_text():
    layer = TextLayer("Grand Opening", size=30, wrap=False, name="title", region=Region("px", 20, 10, 60, 30))
    wide = canvas_with_safe_margin(layer, safe=0)
    pad = C.text_layout(layer, Box(20, 10, 60, 30), None).pad
    assert ink_box(C.compose(wide))[2] == 80 + pad  # the ink reaches the tile's edge, past the region's at 80
    assert C.text_problems(wide) == ["layers[0] (title): text overflows its region (right clipped)"]


def test_text_problems_report_lines_wholly_outside_the_tile():
    """A wrapped line that falls wholly below the region's tile leaves no ink to measure; it is reported."""
    layer = TextLayer("one two", size=20, line_height=3, region=Region("px", 20, 10, 50, 30))
    laid = C.text_layout(layer, Box(20, 10, 50, 30), None)
    _, ink_mask = C.text_masks(layer, laid)
    assert laid.window.y + ink_mask.getbbox()[3] < laid.tile_size[1]  # the first line's ink stays off the tile's edge
    assert C.text_problems(canvas_with_safe_margin(layer, safe=0)) == [
        "layers[0]: text overflows its region (bottom clipped)"]


def test_text_problems_report_text_cut_between_glyphs():
    """'Hello world' in a 100 px box: the tile's edge falls in the space, so ' world' is cut off whole and
    'Hello' leaves no ink at the edge."""
    layer = TextLayer("Hello world", size=40, wrap=False, region=Region("px", 10, 10, 100, 60))
    laid = C.text_layout(layer, Box(10, 10, 100, 60), None)
    _, ink_mask = C.text_masks(layer, laid)
    assert laid.window.x + ink_mask.getbbox()[2] <= laid.tile_size[0] - 8  # the ink ends 8 px or more before the edge
    assert C.text_problems(layout(layer, w=200, h=80)) == ["layers[0]: text overflows its region (right clipped)"]


def test_text_problems_report_text_crossing_the_trim_into_the_bleed():
    """Without a safe margin, text reaching past the trim (into the bleed, cut off when trimmed) is reported;
    with one, the safe margin's report covers it."""
    def problems(safe):
        return C.text_problems(layout(TextLayer("Hi", size=20, region=Region("full")), w=60, h=30, bleed=5, safe=safe))

    full = layout(TextLayer("Hi", size=20, region=Region("full")), w=60, h=30, bleed=5)
    assert ink_box(C.compose(full))[:2] == (2, 5)
    assert problems(0) == ["layers[0]: text crosses the trim into the bleed (left 3 px)"]
    assert problems(4) == ["layers[0]: text reaches into the safe margin (left 7 px, top 4 px)"]
    assert C.text_problems(layout(TextLayer("Hi", size=20), w=60, h=30, bleed=5)) == []  # region: safe = the trim


def test_text_problems_say_why_shrink_to_fit_finds_no_size():
    """Letter spacing and stroke are lengths that do not shrink with the text: at 1 px they may still not fit."""
    def problems(text, region=Region("px", 0, 0, 100, 40), **kw):
        return C.text_problems(canvas_with_safe_margin(TextLayer(text, size=40, wrap=False, shrink_to_fit=True,
                                                                 region=region, **kw), safe=0))

    spaced = problems("ABCDE", letter_spacing=30)  # 4 gaps of 30 px
    assert spaced[0].startswith("layers[0]: text fits at no size with shrink_to_fit (letter_spacing alone takes "
                                "120 px of the region's 100 px width) and overflows its region (")
    assert problems("ABCDE", letter_spacing=20, stroke_width=15)[0].startswith(
        "layers[0]: text fits at no size with shrink_to_fit (letter_spacing and the stroke take 110 px of the "
        "region's 100 px width)")
    assert problems("Hi", stroke_width=25)[0].startswith(
        "layers[0]: text fits at no size with shrink_to_fit (the stroke alone takes 50 px of the region's 40 px "
        "height)")
    assert problems("\n".join("abcdefghijklmnopqrstuvwxyz"), region=Region("px", 0, 0, 100, 10))[0].startswith(
        "layers[0]: text fits at no size with shrink_to_fit (the region is too small for it even at 1 px)")
    assert problems("ABCDE", letter_spacing=10) == []  # 40 px of spacing: a smaller size fits


def test_hidden_problems_name_the_text_and_images_a_later_opaque_layer_hides(tmp_path):
    """Layers listed top first, as Photoshop lists them: the title and the logo are drawn first, then the
    full-canvas generation over them."""
    logo = Image.new("RGBA", (4, 4), RED)
    logo.putpixel((0, 0), (0, 0, 0, 0))  # a logo with transparency hides nothing but is hidden
    logo.save(tmp_path / "logo.png")
    title = TextLayer("Hi", size=20, name="title", region=Region("px", 10, 5, 60, 30))
    image = ImageLayer("logo.png", Region("px", 80, 5, 20, 20))
    source = str(tmp_path / "poster.yaml")
    top_first = layout(title, image, GenerateLayer("sky", name="sky"), w=120, h=50, source=source)
    assert C.hidden_problems(top_first) == [
        "layers[0] (title): text is hidden under the generate layer layers[2] (sky), drawn after it: layers are "
        "listed bottom first",
        "layers[1]: image is hidden under the generate layer layers[2] (sky), drawn after it: layers are listed "
        "bottom first"]
    assert [p.path for p in C.hidden_problems(top_first)] == ["layers[0]", "layers[1]"]
    assert C.hidden_problems(layout(GenerateLayer("sky"), title, image, w=120, h=50, source=source)) == []
    covered = layout(title, image, FillLayer(BLUE), w=120, h=50, source=source)
    assert C.hidden_problems(covered) == [
        "layers[0] (title): text is hidden under the fill layer layers[2], drawn after it: layers are listed bottom "
        "first",
        "layers[1]: image is hidden under the fill layer layers[2], drawn after it: layers are listed bottom first"]
    assert C.compose(covered).tobytes() == C.compose(layout(FillLayer(BLUE), w=120, h=50)).tobytes()


def test_hidden_problems_say_text_hidden_only_when_all_its_ink_and_shadow_is_covered():
    """A rectangle over exactly the text's ink and shadow hides it (the pixels are the rectangle's alone); one a
    pixel smaller on any side does not, and is not said."""
    text = TextLayer("Hi", size=20, region=Region("px", 10, 5, 60, 30), shadow=Shadow(3, 2, 1, (0, 0, 0, 200)))
    left, top, right, bottom = map(int, ink_box(C.compose(layout(text, w=120, h=50))))
    ink = Box(left, top, right - left, bottom - top)
    for cover, hidden in [(ink, True), (Box(left + 1, top, ink.w - 1, ink.h), False),
                          (Box(left, top + 1, ink.w, ink.h - 1), False), (Box(left, top, ink.w - 1, ink.h), False),
                          (Box(left, top, ink.w, ink.h - 1), False)]:
        rect = ShapeLayer("rect", Region("px", cover.x, cover.y, cover.w, cover.h), fill=BLUE)
        lay = layout(text, rect, w=120, h=50)
        alone = C.compose(layout(rect, w=120, h=50)).tobytes()
        assert (C.compose(lay).tobytes() == alone) is hidden, cover
        assert C.hidden_problems(lay) == (["layers[0]: text is hidden under the shape layer layers[1], drawn after "
                                           "it: layers are listed bottom first"] if hidden else []), cover


def test_hidden_problems_say_nothing_a_later_layer_may_let_show(tmp_path):
    """Only a layer certainly opaque over all the text's box hides it: not a translucent colour, an opacity below
    1, a picture with a transparent pixel or fitted to contain, rounded corners, an ellipse, a gradient with a
    translucent stop, a generation fitted to contain, nor two layers that cover it together."""
    hole = Image.new("RGB", (4, 4), "red").convert("RGBA")
    hole.putpixel((3, 3), (255, 0, 0, 254))
    hole.save(tmp_path / "hole.png")
    Image.new("RGB", (4, 4), "red").save(tmp_path / "opaque.png")
    text = TextLayer("Hi", size=20, region=Region("px", 10, 5, 60, 30))
    for covers in [[FillLayer((0, 0, 255, 254))], [FillLayer(BLUE, opacity=0.99)], [ImageLayer("hole.png")],
                   [ImageLayer("opaque.png", fit="contain")],
                   [ShapeLayer("rect", Region("full"), fill=BLUE, radius=2)],
                   [ShapeLayer("ellipse", Region("full"), fill=BLUE)],
                   [ShapeLayer("rect", Region("full"), stroke=BLUE, stroke_width=5)],
                   [GradientLayer(((0, BLUE), (1, (0, 0, 255, 254))))], [GenerateLayer("sky", fit="contain")],
                   [FillLayer(BLUE, Region("percent", 0, 0, 15, 100)),
                    FillLayer(BLUE, Region("percent", 15, 0, 85, 100))]]:
        assert C.hidden_problems(layout(text, *covers, w=120, h=50, source=str(tmp_path / "p.yaml"))) == [], covers
    for kind, cover in [("image", ImageLayer("opaque.png")), ("gradient", GradientLayer(((0, BLUE), (1, RED)))),
                        ("generate", GenerateLayer("sky")),
                        ("shape", ShapeLayer("rect", Region("full"), fill=BLUE, stroke=(0, 0, 0, 100), stroke_width=2))]:
        assert C.hidden_problems(layout(text, cover, w=120, h=50, source=str(tmp_path / "p.yaml"))) == [
            f"layers[0]: text is hidden under the {kind} layer layers[1], drawn after it: layers are listed bottom "
            f"first"], cover


def test_text_problems_name_the_characters_the_font_lacks():
    """Pillow's bundled font has basic Latin only: 'é' and '✨' come out as its missing-glyph box."""
    region = Region("px", 0, 0, 200, 80)
    font = C.fonts.load_font(None, 24)
    assert C.missing_glyphs("Cafe, 100% «ok»!", font) == []
    assert C.missing_glyphs("5 € for a café in Zürich, 5 € ", font) == ["€", "é", "ü"]
    problems = C.text_problems(canvas_with_safe_margin(TextLayer("Café ✨ é\u0301", size=12, region=region), safe=0))
    assert problems[0].startswith("layers[0]: text has no glyph for 'é' '✨' in its font (drawn as boxes")
    assert C.text_problems(canvas_with_safe_margin(TextLayer("Cafe", size=12, region=region), safe=0)) == []


def test_the_hint_to_use_dejavu_sans_is_given_only_when_it_has_the_characters(dejavu):
    def problems(text):
        return C.text_problems(canvas_with_safe_margin(TextLayer(text, size=12, region=Region("full")), safe=0))

    assert problems("Café") == ["layers[0]: text has no glyph for 'é' in its font (drawn as boxes; the default font "
                                "has basic Latin only: try font: DejaVu Sans)"]
    assert problems("夏夜 é") == ["layers[0]: text has no glyph for '夏' '夜' 'é' in its font (drawn as boxes)"]


def test_decomposed_text_is_drawn_and_checked_composed(dejavu):
    """'e' + U+0301 is drawn as the font's 'é' (NFC), and reported when the font lacks 'é'."""
    for font in (dejavu, None):
        decomposed = C.compose(text_layout(text="Cafe\u0301 nai\u0308ve", font=font, size=20))
        assert decomposed.tobytes() == C.compose(text_layout(text="Café naïve", font=font, size=20)).tobytes()
    decomposed = canvas_with_safe_margin(TextLayer("Cafe\u0301", size=12, region=Region("full")), safe=0)
    assert C.text_problems(decomposed) == [
        "layers[0]: text has no glyph for 'é' in its font (drawn as boxes; the default font has basic Latin only: "
        "try font: DejaVu Sans)"]


def test_format_characters_are_checked_and_reported_only_when_drawn_as_boxes():
    """Laid out by the basic engine (Pillow without raqm) U+200B is a missing-glyph box; raqm draws nothing."""
    from PIL import ImageFont, features

    default = C.fonts.load_font(None, 20)
    basic = ImageFont.truetype(io.BytesIO(default.font_bytes), 20, layout_engine=ImageFont.Layout.BASIC)
    assert C.missing_glyphs("a\u200bb\u00adc", basic) == ["\u200b", "\u00ad"]
    if features.check("raqm"):
        assert C.missing_glyphs("a\u200bb\u00adc\u2060d\ufeffe\u200ef\u2066g\u2069", default) == []


def test_without_raqm_right_to_left_and_indic_text_is_reported(dejavu, monkeypatch):
    """Pillow built without libraqm (or libfribidi) draws Hebrew left to right and Devanagari unshaped."""
    from PIL import features

    def problems(text):
        return C.text_problems(canvas_with_safe_margin(TextLayer(text, font=dejavu, size=12, region=Region("full")),
                                                       safe=0))

    if features.check("raqm"):
        assert problems("\u05e9\u05dc\u05d5\u05dd") == []
    check = features.check
    monkeypatch.setattr(features, "check", lambda feature: feature != "raqm" and check(feature))
    assert problems("\u05e9\u05dc\u05d5\u05dd") == [
        "layers[0]: text needs complex text layout (libraqm with libfribidi), which this Pillow lacks: Hebrew"]
    assert C.shaping_problem("\u0645\u0631\u062d\u0628\u0627 \u0915\u094d\u0937") == (
        "needs complex text layout (libraqm with libfribidi), which this Pillow lacks: Arabic, Devanagari")
    assert C.shaping_problem("Caf\u00e9 \u6771\u4eac") is None


@pytest.mark.parametrize("align", ["left", "center", "right"])
def test_alignment_moves_ink(align):
    image = C.compose(text_layout(text="Hi", size=20, align=align))
    left, _, right, _ = ink_box(image)
    middle = (left + right) / 2
    expected = {"left": 20 + (right - left) / 2, "center": 100, "right": 180 - (right - left) / 2}[align]
    assert abs(middle - expected) <= 3


@pytest.mark.parametrize("valign", ["top", "middle", "bottom"])
def test_vertical_alignment_moves_ink(valign):
    image = C.compose(text_layout(text="HH", size=20, valign=valign))
    _, top, _, bottom = ink_box(image)
    if valign == "top":
        assert 10 <= top <= 16
    elif valign == "middle":
        assert abs((top + bottom) / 2 - 40) <= 4
    else:
        assert 64 <= bottom <= 70


def test_line_height_spreads_lines():
    tight = ink_box(C.compose(text_layout(text="A\nA", size=16, line_height=1.0)))
    loose = ink_box(C.compose(text_layout(text="A\nA", size=16, line_height=2.0)))
    assert (loose[3] - loose[1]) - (tight[3] - tight[1]) == 16


def test_letter_spacing_widens_text():
    plain = ink_box(C.compose(text_layout(text="abc", size=16)))
    spaced = ink_box(C.compose(text_layout(text="abc", size=16, letter_spacing=5)))
    assert (spaced[2] - spaced[0]) - (plain[2] - plain[0]) in (9, 10, 11)  # 2 gaps x 5 px, +-1 px rounding


def test_stroke_adds_stroke_coloured_pixels():
    plain = C.compose(text_layout(text="Hi", size=24))
    stroked = C.compose(text_layout(text="Hi", size=24, stroke_width=2, stroke_color=RED))
    assert ink(stroked).sum() > ink(plain).sum()
    assert (255, 0, 0) in colours(stroked)


def test_stroke_and_fill_lie_side_by_side():
    """Outline lettering: with a transparent fill only the stroke is drawn; a translucent fill shows what lies
    below it, not the stroke; opaque colours cover exactly the ink (no seam between fill and stroke)."""
    box, region = Box(0, 0, 60, 70), Region("px", 0, 0, 60, 70)

    def tile(color):
        layer = TextLayer("O", size=60, color=color, stroke_width=2, stroke_color=WHITE, region=region)
        return np.asarray(C.text_tile(layer, box, None)[0]).astype(int)

    layer = TextLayer("O", size=60, stroke_width=2, region=region)
    fill, ink_mask = (np.asarray(m).astype(int) for m in C.text_masks(layer, C.text_layout(layer, box, None)))
    inside = fill == 255
    assert inside.sum() > 100 and ((ink_mask > fill) & (fill == 0)).sum() > 100  # letters, and a ring around
    hollow = tile((0, 0, 0, 0))
    assert (hollow[..., 3] == np.clip(ink_mask - fill, 0, None)).all() and not hollow[inside, 3].any()
    assert (hollow[hollow[..., 3] > 0, :3] == 255).all()
    assert (tile((0, 0, 255, 128))[inside] == (0, 0, 255, 128)).all()
    assert (tile(RED)[..., 3] == np.maximum(ink_mask, fill)).all()


def test_shadow_adds_pixels_below_the_text():
    plain = C.compose(text_layout(text="Hi", size=24, color=RED))
    shadowed = C.compose(text_layout(text="Hi", size=24, color=RED, shadow=Shadow(dx=3, dy=3, blur=1)))
    assert ink(shadowed).sum() > ink(plain).sum()
    assert ink_box(shadowed)[3] > ink_box(plain)[3] and ink_box(shadowed)[2] > ink_box(plain)[2]
    assert (255, 0, 0) in colours(shadowed)  # the text stays on top of its shadow


def test_a_shadows_blur_may_be_a_numpy_number():
    """Pillow's GaussianBlur takes a numpy number for a list of radii (ValueError: truth value of an array)."""
    blurred = C.compose(text_layout(text="Hi", size=24, color=RED, shadow=Shadow(dx=3, dy=3, blur=1)))
    for blur in (np.int64(1), np.float64(1)):
        same = C.compose(text_layout(text="Hi", size=24, color=RED, shadow=Shadow(dx=3, dy=3, blur=blur)))
        assert same.tobytes() == blurred.tobytes()


def test_text_opacity():
    image = C.compose(text_layout(text="Hi", size=24, opacity=0.5))
    assert np.asarray(image).min() == 127


@pytest.fixture
def dejavu():
    """DejaVu Sans's path (installed, or from opencv-python's wheel): kerning, accents, Hebrew, and raqm's layout."""
    path = C.fonts.find_font("DejaVu Sans")
    if path is None:
        pytest.skip("no DejaVu Sans on this machine")
    return path


def test_every_line_end_breaks_a_line_and_a_final_one_adds_none():
    assert C.paragraphs("a\r\nb\rc\u2029d\u2028e\n") == ["a", "b", "c", "d", "e"]
    assert C.paragraphs("a\n\n") == ["a", ""] and C.paragraphs("") == [""]
    # NEL, VT and FF are mandatory breaks in Unicode's line breaking; raqm cannot lay out NEL or U+001C-U+001E
    assert C.paragraphs("a\x85b\x0bc\x0cd\x1ce\x1df\x1eg") == list("abcdefg")
    for end in "\x85\x1c":
        two_lines = C.compose(text_layout(text=f"Wait{end}what", size=20))
        assert two_lines.tobytes() == C.compose(text_layout(text="Wait\nwhat", size=20)).tobytes()
    # a YAML `|` block ends with a line end: no empty last line lifting bottom-aligned text
    block = C.compose(text_layout(text="Hello\n", size=20, valign="bottom"))
    assert block.tobytes() == C.compose(text_layout(text="Hello", size=20, valign="bottom")).tobytes()


@pytest.mark.parametrize("wrap", [True, False])
def test_carriage_returns_are_line_ends(dejavu, wrap):
    """raqm cannot lay out a CR (RuntimeError 'raqm_layout() failed'): a CRLF from a CSV cell is a line end."""
    crlf = C.compose(text_layout(text="one\r\ntwo\u2029three", font=dejavu, size=16, wrap=wrap))
    assert crlf.tobytes() == C.compose(text_layout(text="one\ntwo\nthree", font=dejavu, size=16, wrap=wrap)).tobytes()


def test_wrap_keeps_no_break_spaces(dejavu):
    font = C.fonts.load_font(dejavu, 20)
    assert C.wrap("Prix\u00a0: 10\u00a0km", font, 60, 0) == ["Prix\u00a0:", "10\u00a0km"]
    assert C.wrap("a 20\u202f% b \u6771\u00a0\u4eac\u6771", font, 30, 0) == ["a", "20\u202f%", "b",
                                                                             "\u6771\u00a0\u4eac", "\u6771"]


def test_wrap_keeps_the_spaces_written(dejavu):
    """Runs of spaces, a line's indentation and em, thin and ideographic spaces stay as written; only spaces at a
    break go. U+200B is a break with no space."""
    font = C.fonts.load_font(dejavu, 20)
    ideographic = "\u3000".translate(C.plain_spaces("\u3000", font))  # a plain space where the font lacks it
    text = "Day 1:   Opening\n    indented\u2003em\u2009thin\u3000ideographic"
    assert C.wrap(text, font, 1000, 0) == ["Day 1:   Opening",
                                           f"    indented\u2003em\u2009thin{ideographic}ideographic"]
    assert C.wrap("one   two\u200bthree", font, 60, 0) == ["one", "two", "three"]
    assert C.wrap("one\u200btwo", font, 1000, 0) == ["one\u200btwo"]
    for text in ("Day 1:   Opening", "    indented\u2003em\u2009thin"):
        wrapped = C.compose(text_layout(text=text, font=dejavu, size=12, wrap=True))
        assert wrapped.tobytes() == C.compose(text_layout(text=text, font=dejavu, size=12, wrap=False)).tobytes()


def test_spaces_the_font_lacks_are_drawn_as_plain_spaces():
    """Pillow's bundled font has no U+00A0 or U+2009: laid out by the basic engine (Pillow without raqm) they'd
    be missing-glyph boxes; raqm draws them as spaces itself."""
    from PIL import ImageFont

    basic = ImageFont.truetype(io.BytesIO(C.fonts.load_font(None, 20).font_bytes), 20,
                               layout_engine=ImageFont.Layout.BASIC)
    assert C.plain_spaces("a\u00a0b\u2009c\td", basic) == {0x9: " ", 0xa0: " ", 0x2009: " "}
    assert C.wrap("Prix\u00a0: 10\u00a0km", basic, 50, 0) == ["Prix :", "10 km"]  # still no break there
    for wrap in (True, False):
        nbsp = C.compose(text_layout(text="a\u00a0b", size=20, wrap=wrap))
        assert nbsp.tobytes() == C.compose(text_layout(text="a b", size=20, wrap=wrap)).tobytes()


def test_cjk_text_wraps_between_characters():
    """Chinese and Japanese have no spaces: lines break between characters, but not before closing
    punctuation (，。」) nor after opening punctuation (「)."""
    font = C.fonts.load_font(None, 20)  # no CJK glyphs: each is its 10 px missing-glyph box
    assert C.line_width("\u6625\u3002", font, 0) == 20
    text = "\u6625\u7720\u4e0d\u89c9\u6653\uff0c\u300c\u5904\u5904\u300d\u95fb\u557c\u9e1f\u3002"
    assert C.wrap(text, font, 80, 0) == ["\u6625\u7720\u4e0d\u89c9\u6653\uff0c\u300c\u5904",
                                         "\u5904\u300d\u95fb\u557c\u9e1f\u3002"]
    assert C.wrap(text, font, 50, 0) == ["\u6625\u7720\u4e0d\u89c9", "\u6653\uff0c\u300c\u5904",
                                         "\u5904\u300d\u95fb\u557c", "\u9e1f\u3002"]



def test_cjk_text_breaks_between_closing_and_opening_punctuation():
    """」「 and 。「 are break opportunities (wide punctuation is CJK), not one piece overflowing the line."""
    font = C.fonts.load_font(None, 20)  # each CJK character is a 10 px missing-glyph box
    text = "\u300c\u6625\u304c\u6765\u305f\u300d\u300c\u590f\u304c\u6765\u305f\u300d"  # 「春が来た」「夏が来た」
    assert C.wrap(text, font, 30, 0) == ["\u300c\u6625\u304c", "\u6765\u305f\u300d", "\u300c\u590f\u304c",
                                         "\u6765\u305f\u300d"]  # was 「春が, 来, た」「夏 (40 px), が来, た」
    assert C.wrap(text, font, 60, 0) == [text[:6], text[6:]]
    assert C.wrap("\u6625\u304c\u6765\u305f\u3002\u300c\u590f\u300d", font, 40, 0) == [
        "\u6625\u304c\u6765", "\u305f\u3002", "\u300c\u590f\u300d"]  # 春が来た。「夏」: 。「 breaks
    assert not C.breakable("\u300c", "\u6625") and not C.breakable("\u305f", "\u300d")  # 「春, た」 stay

@pytest.mark.parametrize("align", ["center", "right"])
def test_trailing_spaces_do_not_move_aligned_text(align):
    spaced = C.compose(text_layout(text="Hi   \nthere ", size=20, wrap=False, align=align))
    assert spaced.tobytes() == C.compose(text_layout(text="Hi\nthere", size=20, wrap=False, align=align)).tobytes()


def test_a_tab_is_a_space_not_a_missing_glyph_box():
    tab = C.compose(text_layout(text="a\tb", size=20, wrap=False))
    assert tab.tobytes() == C.compose(text_layout(text="a b", size=20, wrap=False)).tobytes()
    assert C.wrap("a\tb", C.fonts.load_font(None, 20), 100, 0) == ["a b"]


def letter_spaced(text, font, spacing, size=(300, 100)):
    mask = Image.new("L", size)
    C.draw_line(ImageDraw.Draw(mask), (10, 70), text, font, spacing, 0)
    return np.asarray(mask)


def test_letter_spacing_keeps_kerning_and_accents(dejavu):
    font = C.fonts.load_font(dejavu, 60)
    assert font.getlength("AV") < font.getlength("A") + font.getlength("V")  # a kerned pair
    assert C.line_width("AVAV", font, 2) == font.getlength("AVAV") + 3 * 2
    assert (letter_spaced("AVAV", font, 1e-6) == letter_spaced("AVAV", font, 0)).all()
    # an accent written as a combining mark (NFD) stays on its letter, not a spacing away on a dotted circle
    assert C.clusters("e\u0301te") == ["e\u0301", "t", "e"]
    assert (letter_spaced("e\u0301", font, 20) == letter_spaced("e\u0301", font, 0)).all()
    assert C.line_width("e\u0301t", font, 5) == font.getlength("e\u0301t") + 5



class MeasuredFont:
    """A font that counts the characters it measures (getlength)."""

    def __init__(self, font):
        self.font, self.measured, self.size = font, 0, font.size

    def getlength(self, text):
        self.measured += len(text)
        return self.font.getlength(text)


@pytest.mark.parametrize("text", ["office affine ffi ffl Tj AVAWAY To. Ta, fjord", "e\u0301te\u0301 cafe\u0301 AVAV",
                                  "Wave Yacht office AVAILABLE fly " * 20])
def test_letter_spaced_positions_are_the_kerned_line_measured_whole(dejavu, text):
    """Each cluster sits where the whole kerned (and ligated) line up to it puts it, measured in linear time."""
    for path in (dejavu, None):
        font = MeasuredFont(C.fonts.load_font(path, 37.5))
        parts = C.clusters(text)
        whole = [font.font.getlength("".join(parts[:n + 1])) - font.font.getlength(part) + n * 3
                 for n, part in enumerate(parts)]
        assert C.spaced_clusters(text, font, 3) == list(zip(whole, parts))
        assert font.measured <= 40 * len(text)  # was the sum of all prefixes: 189,300 characters for 600


def whole_width(line, font, spacing):
    """`line_width` as it was."""
    return font.getlength(line) + C.tracking(line, spacing) * max(0, len(C.clusters(line)) - 1)


def greedy_wrap(text, font, width, spacing):
    """`wrap` as it was: every candidate line measured whole."""
    lines, spaces = [], C.plain_spaces(text, font)
    for paragraph in C.paragraphs(text):
        line = ""
        for gap, word in C.GAP_WORD.findall(paragraph):
            for n, piece in enumerate(C.pieces(word.translate(spaces))):
                candidate = line + ("" if n else gap.translate(spaces)) + piece
                if line and whole_width(candidate, font, spacing) > width:
                    lines.append(line)
                    line = piece
                else:
                    line = candidate
        lines.append(line)
    return lines


WRAP_WORDS = ("AV To Ty Wa Yo T. P, L'amour office affine fjord ffl (a) [b] 1,200 e\u0301te\u0301 cafe\u0301 "
              "na\u00efve 10\u00a0km 20\u202f% a\u200bb \u03b1\u03b2\u03b3 \u043f\u0440\u0438 \u0915\u094d\u0937 "
              "\U0001f1eb\U0001f1f7 \U0001f44d\U0001f3fd \u6625\u7720\u4e0d\u89c9\u6653\uff0c\u300c\u590f\u300d "
              "i l m W , . --").split()
HEBREW = ["\u05e9\u05dc\u05d5\u05dd", "(\u05d0)", "\u05d9\u05d5\u05dd."]


def test_wrap_breaks_where_measuring_every_candidate_line_whole_does(dejavu):
    """Lines sum their pieces' widths but break exactly where measuring each candidate line whole broke them: random
    texts (kerning, ligatures, accents, CJK, no-break and odd spaces, emoji, a virama, Hebrew), fonts, sizes,
    letter spacings and widths, some exactly a line's width or a hair either side of it."""
    rng = random.Random(0)
    faces = [None, dejavu] + [face for face in map(C.fonts.find_font, ["DejaVu Serif Italic", "DejaVu Sans Bold"])
                              if face]
    for trial in range(32):
        font = C.fonts.load_font(rng.choice(faces), rng.choice([4, 7.5, 12, 20, 37.5]))
        spacing = rng.choice([0, 0, 0.1, 1, 2.5, -0.5, -3])
        words = WRAP_WORDS + HEBREW if trial % 4 == 0 else WRAP_WORDS
        text = "".join(rng.choice([" "] * 8 + ["  ", "\t", "\u2003", "\u2009", "\u200b", "\n"]) + rng.choice(words)
                       for _ in range(rng.choice([10, 50, 150])))
        exact = whole_width(greedy_wrap(text, font, rng.uniform(50, 1000), spacing)[0], font, spacing)
        for width in (rng.uniform(0, 2000), rng.uniform(0, 2000), exact, math.nextafter(exact, 0),
                      math.nextafter(exact, 1e9)):
            assert C.wrap(text, font, width, spacing) == greedy_wrap(text, font, width, spacing), (trial, width)


def test_wrap_measures_long_lines_in_linear_time():
    """A shrink_to_fit search tries small sizes, where a line holds hundreds of words."""
    font, text = MeasuredFont(C.fonts.load_font(None, 2)), " ".join(["word"] * 1500)
    lines = C.wrap(text, font, 1900, 0)
    assert len(lines) == 4 and lines == greedy_wrap(text, font.font, 1900, 0)
    assert font.measured <= 20 * len(text)  # was the sum of all candidate lines: 189 times the text's length


def test_right_to_left_text_is_not_letter_spaced(dejavu):
    """Hebrew drawn letter by letter from the left would come out reversed; Arabic would lose its joins."""
    font, shalom = C.fonts.load_font(dejavu, 60), "\u05e9\u05dc\u05d5\u05dd"
    assert (letter_spaced(shalom, font, 5) == letter_spaced(shalom, font, 0)).all()
    assert C.line_width(shalom, font, 5) == font.getlength(shalom)


def test_letter_spacing_keeps_emoji_sequences_and_indic_conjuncts_whole(dejavu):
    """Flags (regional indicator pairs), skin tones, variation selectors and tag sequences move as one; a line
    with a virama (Devanagari's conjuncts join letters around it) is not letter-spaced."""
    flags = "\U0001f1eb\U0001f1f7\U0001f1e9\U0001f1ea\U0001f1ee"  # FR, DE and a lone I
    assert C.clusters(flags) == ["\U0001f1eb\U0001f1f7", "\U0001f1e9\U0001f1ea", "\U0001f1ee"]
    assert C.clusters("\U0001f44d\U0001f3fda\u2764\ufe0f") == ["\U0001f44d\U0001f3fd", "a", "\u2764\ufe0f"]
    england = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"
    assert C.clusters(england + "a") == [england, "a"]
    font, ksha = C.fonts.load_font(dejavu, 60), "\u0915\u094d\u0937"
    assert C.tracking(ksha, 5) == 0 and C.tracking("abc", 5) == 5
    assert C.line_width(ksha, font, 5) == font.getlength(ksha)
    assert (letter_spaced(ksha, font, 5) == letter_spaced(ksha, font, 0)).all()


def test_the_default_font_is_kerned_and_draws_invisible_characters_as_nothing():
    """Pillow's load_default lays its font out with the basic engine: no kerning, and U+200B, U+2060, U+FEFF,
    U+200E and bidi isolates drawn as boxes."""
    from PIL import features

    if not features.check("raqm"):
        pytest.skip("Pillow without raqm")
    font = C.fonts.load_font(None, 100)
    assert font.getlength("AV") < font.getlength("A") + font.getlength("V")  # a kerned pair
    assert C.line_width("AVAV", font, 2) == font.getlength("AVAV") + 3 * 2
    invisible = C.compose(text_layout(text="a\u200bb\u2060c\ufeffd\u200ee\u2066f\u2069", size=20))
    assert invisible.tobytes() == C.compose(text_layout(text="abcdef", size=20)).tobytes()


def test_text_too_large_for_pillows_bitmap_limit(monkeypatch):
    """Pillow checks each line's glyph bitmap as a decompression bomb: within twice its limit the text is drawn
    without its warning, beyond it the layer is an input error."""
    from PIL import Image

    lay = text_layout(text="Hi", size=100, valign="bottom", region=Region("px", 20, 0, 20, 80))  # a 26 x 86 tile
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)  # 'Hi' at 100 px: a bitmap of 6887 px
    assert ink(C.compose(lay)).sum() > 100
    assert C.text_problems(lay) == ["layers[0]: text overflows its region (top clipped, right clipped)"]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
    message = "layers[0]: text too large to draw: a line's glyphs need a bitmap of more than 6000 px (use a smaller"
    with pytest.raises(InputError, match=re.escape(message)):
        C.compose(lay)
    with pytest.raises(InputError, match=re.escape(message)):
        C.text_problems(lay)


def test_fractional_text_stroke_is_whole_pixels_around_the_fill():
    """Pillow draws a stroke of 2.5 px up to a pixel off its fill (3 px on one side, 1 on the other): text
    strokes round to whole pixels as shapes' do."""
    def masks(stroke):
        layer = TextLayer("H", size=20, stroke_width=stroke, region=Region("px", 0, 0, 40, 30))
        return C.text_masks(layer, C.text_layout(layer, Box(0, 0, 40, 30), None))

    fill, ink_mask = masks(2.5)
    (fl, ft, fr, fb), (il, it, ir, ib) = fill.getbbox(), ink_mask.getbbox()
    assert (fl - il, ft - it, ir - fr, ib - fb) == (3, 3, 3, 3)
    assert [m.tobytes() for m in masks(2.5)] == [m.tobytes() for m in masks(3)]


def test_glyphs_reaching_out_of_their_advance_are_not_cut():
    """An oblique J reaches left of where its line starts: text that fits its region keeps all its ink (and
    the proof says how far it reaches out)."""
    oblique = C.fonts.find_font("DejaVu Sans Oblique")
    if oblique is None:
        pytest.skip("no DejaVu Sans Oblique on this machine")
    left = C.fonts.load_font(oblique, 100).getbbox("Jump", anchor="ls")[0]
    assert left <= -5  # more than the tile's 2 px margin
    lay = layout(TextLayer("Jump", font=oblique, size=100, region=Region("px", 50, 20, 300, 150)), w=400, h=200)
    assert ink_box(C.compose(lay))[0] == 50 + left
    assert C.text_problems(lay) == [f"layers[0]: text overflows its region (left {-left} px)"]


def test_text_is_drawn_on_the_window_its_ink_can_reach():
    """'Hi' at 20 px in a 2000 x 2000 px region: the tile is the corner the letters and their shadow reach, not
    the region; it lies where the region's tile would put those pixels."""
    box = Box(30, 40, 2000, 2000)
    for shadow in (None, Shadow(dx=-6, dy=5, blur=3)):
        layer = TextLayer("Hi", size=20, shadow=shadow, region=Region("px", 30, 40, 2000, 2000))
        laid = C.text_layout(layer, box, None)
        tile, at = C.text_tile(layer, box, None)
        assert tile.width < 100 and tile.height < 100
        assert at == (box.x - laid.pad + laid.window.x, box.y - laid.pad + laid.window.y)
        assert tile.size == (laid.window.w, laid.window.h) and laid.tile_size == (2000 + 2 * laid.pad,) * 2


def test_text_drawn_on_its_window_is_the_text_drawn_on_the_whole_tile(monkeypatch):
    """Parity with the whole tile (the region + pad, as drawn before windows): the same composed bytes and the
    same problems, for wrapped, stroked, letter-spaced, aligned, shadowed (blurred, offset up and left),
    overflowing (clipped at the tile's edges) and shrunk text, and text whose second line leaves the tile."""
    shadow = Shadow(dx=-3.4, dy=-2.6, blur=2.5, color=(0, 0, 255, 160))
    lay = layout(
        FillLayer((200, 220, 240, 255), Region("full")),
        TextLayer("Summer nights on the pier", size=14, align="center", valign="bottom", letter_spacing=1.5,
                  stroke_width=1.5, stroke_color=RED, shadow=shadow, region=Region("px", 5, 5, 90, 60)),
        TextLayer("Overflowing", size=30, wrap=False, align="right", color=(0, 128, 0, 200),
                  shadow=Shadow(dx=4, dy=-5, blur=1), region=Region("px", 100, 70, 40, 20)),
        TextLayer("Grand Opening", size=60, shrink_to_fit=True, letter_spacing=-1, valign="middle", stroke_width=1,
                  shadow=Shadow(dx=2, dy=3, blur=0), region=Region("px", 10, 80, 80, 30)),
        TextLayer("one two", size=12, line_height=3, opacity=0.6, shadow=Shadow(dx=1, dy=1, blur=0.5),
                  region=Region("px", 110, 5, 40, 20)),
        TextLayer("Hi", size=20, align="right", valign="bottom", color=(0, 0, 0, 0), stroke_width=2,
                  stroke_color=BLUE, shadow=Shadow(dx=-5, dy=4, blur=4), region=Region("full")),
        w=160, h=120)
    windowed, problems = C.compose(lay).tobytes(), C.text_problems(lay)
    assert problems == ["layers[2]: text overflows its region (left clipped, bottom clipped)",
                        "layers[4]: text overflows its region (bottom clipped)"]
    laid = [C.text_layout(layer, C.resolve(layer.region, lay.canvas, lay.grids), None) for layer in lay.layers[1:]]
    assert [(t.window.w, t.window.h) == t.tile_size for t in laid] == [False, True, False, False, False]

    def on_whole_tile(layer, box, base_dir, laid_out=C.text_layout):
        laid = laid_out(layer, box, base_dir)
        return laid._replace(window=Box(0, 0, *laid.tile_size))

    monkeypatch.setattr(C, "text_layout", on_whole_tile)
    assert C.compose(lay).tobytes() == windowed
    assert C.text_problems(lay) == problems


def test_a_blank_letter_spaced_line_is_measured_as_unspaced():
    """A blank line has no glyphs to space apart: its box is Pillow's for no text, as without letter spacing."""
    lay = text_layout(text="a\n\nb", size=12, letter_spacing=2, shrink_to_fit=True)
    assert C.text_problems(lay) == []
    assert C.compose(lay).tobytes() == C.compose(text_layout(text="a\n\nb", size=12, letter_spacing=2)).tobytes()


def test_text_too_small_for_freetype_is_an_input_error():
    with pytest.raises(InputError, match=r"cannot draw font 'default' at 0.3 px \(invalid ppem value\)"):
        C.compose(text_layout(text="fine print", size=0.3))


# -- spans ---------------------------------------------------------------------------------------------------------------

def test_cut_span_gives_each_monitor_its_pixels():
    span = Span((Monitor("a", 40, 30, 400, 300), Monitor("b", 20, 15, 400, 300)), bezels_mm=(20,), align="top")
    width, height, boxes = span_canvas(span)
    assert (width, height) == (82, 30) and boxes[1] == Box(42, 0, 40, 30)
    canvas = C.compose(layout(GradientLayer(BLACK_TO_WHITE, angle=0), w=width, h=height))
    cuts = C.cut_span(canvas, boxes, span.monitors)
    assert [c.size for c in cuts] == [(40, 30), (20, 15)]
    assert cuts[0].tobytes() == canvas.crop((0, 0, 40, 30)).tobytes()
    assert sum(b.w for b in boxes) + 2 == width  # monitors + bezel gap cover the canvas


def test_text_problems_report_span_text_that_shows_on_no_monitor():
    """Monitor b is 100 px high beside a's 150, bottom-aligned: above b, and in the gap, no monitor shows the
    text; a line crossing the gap from one monitor to the other is not reported."""
    span = Span((Monitor("a", 200, 150, 200, 150), Monitor("b", 200, 100, 200, 100)), bezels_mm=(20,), align="bottom")
    assert span_canvas(span) == (420, 150, [Box(0, 0, 200, 150), Box(220, 50, 200, 100)])

    def problems(region, text="Hi"):
        layer = TextLayer(text, size=30, wrap=False, region=Region("px", *region))
        return C.text_problems(Layout("<string>", Canvas(420, 150), (layer,), span=span))

    assert problems((250, 0, 150, 40)) == ["layers[0]: text shows on no monitor (it is outside the monitors)"]
    assert problems((200, 60, 20, 60), text="I") == ["layers[0]: text shows on no monitor (it is in the bezel gap)"]
    assert problems((250, 30, 150, 40)) == ["layers[0]: text partly shows on no monitor (above or below a shorter one)"]
    assert problems((180, 60, 120, 40), text="Hello") == []  # ink from x 183 to 250: on a, the gap and b
    assert problems((250, 60, 150, 40)) == []


def test_proof_guides_mark_bleed_trim_safe_area_and_bezels():
    image = C.draw_guides(C.compose(layout(w=10, h=8, bleed=1, safe=2)), layout(w=10, h=8, bleed=1, safe=2))
    px = image.load()
    assert image.size == (12, 10)
    assert px[0, 0] == (255, 199, 199)  # the bleed, tinted red: 56/255 of (255, 0, 0) over white
    assert px[1, 1] == px[10, 8] == (255, 0, 255)  # the trim's edge
    assert px[3, 3] == px[8, 6] == (0, 150, 255)  # the safe area's edge
    assert px[2, 2] == px[5, 5] == (255, 255, 255)  # between them, and inside: untouched
    m = Monitor("m", 4, 4, 4, 4)
    span = Layout("<string>", Canvas(9, 4), (), span=Span((m, m), (1,)))
    px = C.draw_guides(C.compose(span), span).load()
    assert px[4, 0] == (159, 159, 159) and px[3, 0] == px[5, 0] == (255, 255, 255)  # the bezel gap, darkened


def guides_tinted_whole(image, layout):
    """`draw_guides` as it was: a canvas-sized tint, composited whole over the raster made RGBA, then its lines
    (opaque: the same drawn before or after going back to RGB)."""
    canvas = layout.canvas
    out = image.convert("RGBA")
    tint = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(tint)
    trim = C.trim_box(canvas)
    if canvas.bleed:
        draw.rectangle((0, 0, out.width - 1, out.height - 1), fill=C.GUIDE_BLEED)
        draw.rectangle((trim.x, trim.y, trim.right - 1, trim.bottom - 1), fill=(0, 0, 0, 0))
    if layout.span:
        draw.rectangle((0, 0, out.width - 1, out.height - 1), fill=C.GUIDE_HIDDEN)
        for box in span_canvas(layout.span)[2]:
            draw.rectangle((box.x, box.y, box.right - 1, box.bottom - 1), fill=(0, 0, 0, 0))
    out.alpha_composite(tint)
    out = out.convert("RGB")
    C.draw_guide_lines(out, layout)
    return out


def span_layout(align, bleed=0):
    monitors = (Monitor("a", 40, 30, 400, 300), Monitor("b", 20, 15, 400, 300), Monitor("c", 30, 24, 400, 300))
    span = Span(monitors, bezels_mm=(20, 30), align=align)
    width, height, _ = span_canvas(span)
    return Layout("<string>", Canvas(width - 2 * bleed, height - 2 * bleed, bleed=bleed), (), span=span)


@pytest.mark.parametrize("lay", [
    layout(w=10, h=8, bleed=1, safe=2), layout(w=13, h=7, bleed=3), layout(w=13, h=7, safe=3), layout(w=5, h=4),
    layout(w=1600, h=1520, bleed=21, safe=40), span_layout("top"), span_layout("center"), span_layout("bottom"),
    span_layout("center", bleed=2)], ids=["bleed-safe", "bleed", "safe", "none", "2px-lines", "span-top",
                                          "span-center", "span-bottom", "span-bleed"])
def test_guides_tinted_strip_by_strip_give_the_bytes_of_a_whole_canvas_tint(lay):
    """Only the bleed or the bezel gaps tinted, on the RGB raster: the bytes of compositing a canvas-sized tint
    over it made RGBA, on a raster of varied colours, and the bezel gaps' tint covering a bleed's. The tint only:
    the reference draws its lines with `draw_guide_lines` too (1 px and 2 px wide), so their pixels are
    test_proof_guides_mark_bleed_trim_safe_area_and_bezels's to check."""
    w, h = lay.canvas.full_width, lay.canvas.full_height
    raster = C.compose(replace(lay, layers=(GradientLayer(GRADIENT_STOPS[2], angle=0), FillLayer((9, 99, 199, 77)),
                                            GradientLayer(BLACK_TO_WHITE, angle=90, opacity=0.4))))
    assert len(raster.getcolors(w * h)) > min(w, h)
    assert C.draw_guides(raster, lay).tobytes() == guides_tinted_whole(raster, lay).tobytes()


@pytest.mark.parametrize("width, height, holes, parts", [
    (12, 10, [Box(1, 1, 10, 8)], [Box(0, 0, 12, 1), Box(0, 1, 1, 8), Box(11, 1, 1, 8), Box(0, 9, 12, 1)]),
    (9, 4, [Box(0, 0, 4, 4), Box(5, 0, 4, 4)], [Box(4, 0, 1, 4)]),
    (10, 6, [Box(6, 0, 4, 6), Box(0, 1, 4, 4)], [Box(0, 0, 6, 1), Box(4, 1, 2, 4), Box(0, 5, 6, 1)]),
    (6, 4, [Box(-2, -1, 4, 3), Box(1, 0, 3, 2)], [Box(4, 0, 2, 2), Box(0, 2, 6, 2)]),  # off the canvas, overlapping
    (5, 5, [Box(-1, -1, 7, 7)], []),
    (3, 2, [], [Box(0, 0, 3, 2)]),
])
def test_uncovered_parts_of_a_canvas(width, height, holes, parts):
    assert C.uncovered(width, height, holes) == parts


def test_cover_resamples_only_what_it_keeps(monkeypatch):
    """A thin strip covered by a picture: only the kept part is resampled (the whole picture scaled to cover
    32768 x 200 px would be 32768 x 8192 px, 1 GiB), with the pixels of scaling it whole, then cropping."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (512, 2048, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    picture, box = Image.fromarray(pixels, "RGBA"), Box(5, 7, 2999, 700)
    w, h, _ = C.fit_box(2048, 512, box, "cover")
    dx, dy = (w - box.w) // 2, (h - box.h) // 2
    whole = np.asarray(picture.resize((w, h), Image.Resampling.LANCZOS).crop((dx, dy, dx + box.w, dy + box.h)))
    sizes, resize = [], Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda im, size, *a, **k: sizes.append(size) or resize(im, size, *a, **k))
    tile, at = C.fitted(picture, box, "cover")
    assert at == (5, 7) and set(sizes) == {(2999, 700)}  # (Pillow resizes RGBA through RGBa: twice)
    assert np.abs(np.asarray(tile).astype(int) - whole).max() <= 2  # the box's fractional edges: rounding only
    C.fitted(picture, Box(0, 0, 32768, 200), "cover")
    assert sizes[-1] == (32768, 200)


def test_leading_spaces_are_not_ink_that_is_cut(dejavu):
    """Pillow's box of '      ab' starts at the line's origin, left of the tile here: the spaces leave no ink,
    so nothing is cut."""
    lay = layout(TextLayer("            ab", font=dejavu, size=40, region=Region("px", 250, 50, 100, 60), align="right"),
                 w=400, h=200)
    assert C.text_problems(lay) == []
    assert C.text_problems(layout(TextLayer("            ab", font=dejavu, size=40, wrap=False,
                                            region=Region("px", 250, 50, 40, 60)), w=400, h=200)) == [
        "layers[0]: text overflows its region (right clipped)"]
