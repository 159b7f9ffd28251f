"""Layout files -> spec.Layout: exact tables for sizes, units, regions, variables and spans, and a corpus of
broken layouts, each with the exact one-line message it must produce."""

import codecs
import json
import re
import shutil
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import pytest
import yaml
from PIL import Image, ImageFont

from studio import layout as layout_module
from studio.errors import LayoutError
from studio.fonts import find_font
from studio.geometry import Box, resolve
from studio.layout import LAYER_TYPES, TOP_KEYS, layout_schema, load_layout, parse_layout
from studio.spec import Canvas, Grid, Region

ROOT = Path(__file__).resolve().parents[1]
FILL = "layers: [{fill: {color: red}}]\n"


def canvas_of(canvas_yaml: str):
    return parse_layout(f"canvas: {canvas_yaml}\n{FILL}").canvas


# -- sizes and units ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("canvas_yaml, width, height, dpi", [
    ("{preset: fhd}", 1920, 1080, 72),
    ("{preset: 4k}", 3840, 2160, 72),
    ("{preset: 4k, orientation: portrait}", 2160, 3840, 72),
    ("{preset: 4k, orientation: landscape}", 3840, 2160, 72),
    ("{preset: iphone-15}", 1179, 2556, 72),
    ("{preset: iphone-15, orientation: landscape}", 2556, 1179, 72),
    ("{preset: a4}", 2480, 3508, 300),  # 210 x 297 mm at 300 dpi = 2480.3 x 3507.9
    ("{preset: a4, orientation: landscape}", 3508, 2480, 300),
    ("{preset: a4, dpi: 150}", 1240, 1754, 150),
    ("{preset: a3}", 3508, 4961, 300),
    ("{preset: a0, dpi: 100}", 3311, 4681, 100),  # 841 x 1189 mm
    ("{preset: letter}", 2550, 3300, 300),
    ("{preset: tabloid, dpi: 100}", 1100, 1700, 100),
    ("{preset: poster-24x36, dpi: 100}", 2400, 3600, 100),
    ("{width: 3000, height: 2000}", 3000, 2000, 72),
    ("{width: 3000px, height: 2000px, dpi: 300}", 3000, 2000, 300),
    ("{width: 420mm, height: 594mm}", 4961, 7016, 300),
    ("{width: 16.5in, height: 11.7in}", 4950, 3510, 300),
    ("{width: 10cm, height: 5cm, dpi: 254}", 1000, 500, 254),
    ("{width: 72pt, height: 144pt}", 300, 600, 300),
    ("{width: 72pt, height: 144pt, dpi: 72}", 72, 144, 72),
    ("{width: 100mm, height: 500px, orientation: portrait}", 500, 1181, 300),  # swapped
    ("{width: 500px, height: 100mm, orientation: portrait}", 500, 1181, 300),  # already portrait
])
def test_canvas_sizes(canvas_yaml, width, height, dpi):
    canvas = canvas_of(canvas_yaml)
    assert (canvas.width, canvas.height, canvas.dpi) == (width, height, dpi)


@pytest.mark.parametrize("extra, bleed, safe", [
    ("bleed: 3mm, safe_margin: 10mm", 36, 118),  # 35.4, 118.1 px at 300 dpi: the bleed rounds up
    ("bleed: 0.125in, safe_margin: 0.5in", 38, 150),  # 37.5
    ("bleed: 12px, safe_margin: 24", 12, 24),
    ("bleed: 9pt", 38, 0),  # 37.5
    ("bleed: 0.12in, safe_margin: 0.125in", 36, 38),  # exactly 36 stays 36 (exact arithmetic); 37.5 to even
    ("bleed: 0", 0, 0),
])
def test_bleed_and_safe_margin(extra, bleed, safe):
    canvas = canvas_of(f"{{preset: a4, {extra}}}")
    assert (canvas.bleed, canvas.safe_margin) == (bleed, safe)
    assert (canvas.full_width, canvas.full_height) == (2480 + 2 * bleed, 3508 + 2 * bleed)


def test_text_size_in_pt_is_not_judged_by_a_stand_in_dpi():
    """A bad dpi leaves the DPI unknown: a 0.5pt size may be 2 px at the DPI meant, so only px sizes are judged."""
    with pytest.raises(LayoutError) as info:
        parse_layout("canvas: {preset: a4, dpi: 0}\nlayers:\n  - text: {text: a, size: 0.5pt}\n"
                     "  - text: {text: b, size: 0.5px}\n", "poster.yaml")
    assert info.value.errors == [
        "poster.yaml:1: canvas.dpi: 0 is out of range 1..10000",
        "poster.yaml:4: layers[1].text.size: 0.5 px is too small; a text size is at least 1 px"]


@pytest.mark.parametrize("value, rgba", [
    ('"#fff"', (255, 255, 255, 255)),
    ('"#11223344"', (17, 34, 51, 68)),
    ("navy", (0, 0, 128, 255)),
    ("[1, 2, 3]", (1, 2, 3, 255)),
    ("[1, 2, 3, 4]", (1, 2, 3, 4)),
    ('"rgb(10, 20, 30)"', (10, 20, 30, 255)),
    ('"rgba(10, 20, 30, 0.5)"', (10, 20, 30, 128)),  # CSS: alpha 0..1
    ('"RGBA(10, 20, 30, 25%)"', (10, 20, 30, 64)),
    ('"rgb(10, 20, 30, 1)"', (10, 20, 30, 255)),
    ('"rgba(10%, 20%, 30%, 0)"', (26, 51, 77, 0)),
    ('"hsl(200, 50%, 40%)"', (51, 119, 153, 255)),
    ('"hsv(200, 50%, 40%)"', (51, 85, 102, 255)),
    ('"hsb(200, 50%, 40%)"', (51, 85, 102, 255)),  # another name for hsv()
    ('"#1234"', (17, 34, 51, 68)),  # #rgba
    ("transparent", (0, 0, 0, 0)),  # CSS's transparent black
    ("Transparent", (0, 0, 0, 0)),
    ('"rgb(10 20 30)"', (10, 20, 30, 255)),  # CSS4's space-separated forms
    ('"rgb(10 20 30 / 50%)"', (10, 20, 30, 128)),
    ('"rgb(10 20 30 / 0.25)"', (10, 20, 30, 64)),
    ('"rgba(10  20 30/0)"', (10, 20, 30, 0)),
    ('"rgb(10% 20% 30%)"', (26, 51, 77, 255)),
    ('"hsl(200 50% 40%)"', (51, 119, 153, 255)),
])
def test_colours(value, rgba):
    assert canvas_of(f"{{preset: fhd, background: {value}}}").background == rgba


@pytest.mark.parametrize("size, dpi, px", [("48pt", 300, 200.0), ("12pt", 72, 12.0), ("120px", 300, 120.0),
                                           ("120", 300, 120.0), ("1in", 300, 300.0), ("5mm", 254, 50.0),
                                           ("1px", 72, 1.0), ("0.24pt", 300, 1.0),  # the least: 1 px
                                           ("12 PT", 72, 12.0), ("12Pt", 72, 12.0), ("5MM", 254, 50.0),
                                           ("1In", 300, 300.0), ("120PX", 300, 120.0)])  # units in any case
def test_text_sizes(size, dpi, px):
    text = f"canvas: {{width: 1000, height: 1000, dpi: {dpi}}}\nlayers: [{{text: {{text: hi, size: {size}}}}}]"
    assert parse_layout(text).layers[0].size == px


@pytest.mark.parametrize("region, expected", [
    ("full", Region("full")),
    ("safe", Region("safe")),
    ("{x: 10%, y: 20%, w: 50%, h: 25%}", Region("percent", 10, 20, 50, 25)),
    ("{w: 50%, h: 25%}", Region("percent", 0, 0, 50, 25)),
    ("{x: 10px, y: 20, w: 300px, h: 100}", Region("px", 10, 20, 300, 100)),
    ("{x: 1in, y: 0, w: 2in, h: 0.5in}", Region("px", 300, 0, 600, 150)),
    ("{x: 10%, y: 100px, w: 50%, h: 1in}", Region("px", 200, 100, 1000, 300)),  # % of the 2000 x 1000 trim
    ("{x: -10px, y: -10px, w: 2020px, h: 1020px}", Region("px", -10, -10, 2020, 1020)),  # into the bleed
    ("{cell: [g, 1, 2]}", Region("cell", grid="g", row=1, column=2)),
    ("{cell: [g, 0, 0], span: [2, 3]}", Region("cell", grid="g", row=0, column=0, row_span=2, column_span=3)),
])
def test_regions(region, expected):
    text = ("canvas: {width: 2000, height: 1000, dpi: 300, bleed: 10px}\n"
            "grids: {g: {rows: 2, columns: 3, gutter: 10px}}\n"
            f"layers: [{{fill: {{color: red, region: {region}}}}}]")
    assert parse_layout(text).layers[0].region == expected


@pytest.mark.parametrize("variables, cell", [("{}", "[g, +1, 0x2]"), ("{}", "[g, 0o1, '2']"), ("{}", "[g, 01, 2]"),
                                             ("{r: '+1', c: 0x2}", "[g, '{r}', '{c}']")])
def test_a_cells_row_and_column_are_whole_numbers_as_yaml_12_reads_them(variables, cell):
    """As span's and every whole number: +1, 0x2 and 0o1 are numbers; quoted, digits alone ('2')."""
    text = (f"canvas: {{width: 300, height: 200}}\nvariables: {variables}\ngrids: {{g: {{rows: 2, columns: 3}}}}\n"
            f"layers: [{{fill: {{color: red, region: {{cell: {cell}, span: [+1, 0x1]}}}}}}]\n")
    assert parse_layout(text).layers[0].region == Region("cell", grid="g", row=1, column=2)


def test_font_default_is_the_bundled_font():
    layout = parse_layout("canvas: {preset: fhd}\nvariables: {f: Default}\nlayers:\n"
                          "  - text: {text: a, font: default}\n  - text: {text: b, font: DEFAULT}\n"
                          "  - text: {text: c, font: '{f}'}\n  - text: {text: d}\n")
    assert [layer.font for layer in layout.layers] == [None, None, None, None]


def test_a_box_is_at_least_1_px_once_rounded_but_a_lines_may_be_none():
    """{x: 0.3px, w: 0.4px} rounds to column 0; a line's region may round to no width (a vertical line); on a
    stand-in canvas (the canvas is invalid) a percentage is not judged."""
    layout = parse_layout("canvas: {width: 100, height: 100}\nlayers:\n"
                          "  - fill: {color: red, region: {x: 0.3px, w: 0.4px, h: 10}}\n"
                          "  - shape: {shape: line, stroke: {width: 1}, region: {x: 9.6px, w: 0.5px, h: 10}}\n")
    assert [resolve(layer.region, layout.canvas, {}) for layer in layout.layers] == [Box(0, 0, 1, 10),
                                                                                      Box(10, 0, 0, 10)]
    with pytest.raises(LayoutError) as info:
        parse_layout("canvas: {width: 0, height: 100}\nlayers: [{fill: {color: red, region: {w: 0.001%, h: 1}}}]\n",
                     "poster.yaml")
    assert info.value.errors == ["poster.yaml:1: canvas.width: must be greater than 0, got 0"]


@pytest.mark.parametrize("left", ["{x: 6.2%, w: 43.8%, y: 0px, h: 10px}", "{x: 73.098px, w: 43.8%, y: 0, h: 10}",
                                  "{x: 73.098, w: 43.8%, y: 0, h: 10}", "{x: 0, w: 589.5px, y: 0, h: 10%}"])
def test_regions_in_px_and_percent_meet_where_they_meet_exactly(left):
    """6.2% + 43.8% of 1179 px is 589.5 px, 50% of it: both edges round to 590 (a float sum, 589.4999999999999,
    left a 1 px gap)."""
    lay = parse_layout("canvas: {preset: iphone-15}\n"
                       f"layers:\n  - fill: {{color: red, region: {left}}}\n"
                       "  - fill: {color: blue, region: {x: 50%, w: 50%, y: 0%, h: 10%}}\n")
    red, blue = (resolve(layer.region, lay.canvas, lay.grids) for layer in lay.layers)
    assert (red.right, blue.x) == (590, 590)
    assert lay.layers[0].region.x + lay.layers[0].region.w == Fraction(1179, 2)


def test_grids():
    layout = parse_layout("canvas: {preset: fhd}\n"
                          "grids:\n  panels: {rows: 1, columns: 3, gutter: 0.5in, region: safe}\n"
                          "  inner: {rows: 2, columns: 2, region: {cell: [panels, 0, 1]}}\n" + FILL)
    panels, inner = layout.grids["panels"], layout.grids["inner"]
    assert (panels.rows, panels.columns, panels.gutter, panels.region) == (1, 3, (36, 36), Region("safe"))
    assert inner.region == Region("cell", grid="panels", row=0, column=1)


def test_grid_rows_and_columns_of_different_sizes():
    layout = parse_layout("canvas: {width: 1000, height: 400}\n"
                          "grids: {g: {rows: [3, 1], columns: [1, 2, 1], gutter: 10}}\n"
                          "layers: [{fill: {color: red, region: {cell: [g, 0, 1]}}},\n"
                          "         {fill: {color: blue, region: {cell: [g, 1, 0], span: [1, 3]}}}]\n")
    grid = layout.grids["g"]
    assert (grid.rows, grid.columns, grid.row_weights, grid.column_weights) == (2, 3, (3, 1), (1, 2, 1))
    assert [resolve(layer.region, layout.canvas, layout.grids) for layer in layout.layers] == [
        Box(255, 0, 490, 292), Box(0, 302, 1000, 98)]  # 980 px of columns 1:2:1, 390 px of rows 3:1 (292.5 -> 292)


@pytest.mark.parametrize("gutter, dpi, expected", [
    ("10px", 72, (10, 10)), ("[10px, 25px]", 72, (10, 25)), ("[2mm, 1mm]", 254, (20, 10)), ("[0, 3]", 72, (0, 3)),
    ("[7px]", 72, (7, 7)),
])
def test_grid_gutters(gutter, dpi, expected):
    """gutter: one length for both, or [between rows, between columns]."""
    layout = parse_layout(f"canvas: {{width: 1000, height: 1000, dpi: {dpi}}}\n"
                          f"grids: {{g: {{rows: 2, columns: 3, gutter: {gutter}}}}}\n" + FILL)
    assert layout.grids["g"].gutter == expected
    assert Grid("g", 2, 3, gutter=expected[0]).gutter == (expected[0], expected[0])  # an int stands for both


def test_grid_relative_sizes_however_small():
    """Relative sizes are read as their decimals say: 0.0000004 and 0.0000012 are 1:3 (not 0 and 1e-6)."""
    layout = parse_layout("canvas: {width: 1000, height: 100}\n"
                          "grids: {g: {rows: 1, columns: [0.0000004, 0.0000012]}}\n" + FILL)
    assert [resolve(Region("cell", grid="g", column=c), layout.canvas, layout.grids) for c in (0, 1)] == [
        Box(0, 0, 250, 100), Box(250, 0, 750, 100)]


def test_grid_cells_with_row_and_column_gutters():
    """100 x 50 px, 2 rows x 3 columns, 4 px between rows, 5 px between columns: 30 x 23 px cells."""
    grid = Grid("g", rows=2, columns=3, gutter=(4, 5))
    cells = [[resolve(Region("cell", grid="g", row=i, column=j), Canvas(100, 50), {"g": grid}) for j in range(3)]
             for i in range(2)]
    assert cells == [[Box(0, 0, 30, 23), Box(35, 0, 30, 23), Box(70, 0, 30, 23)],
                     [Box(0, 27, 30, 23), Box(35, 27, 30, 23), Box(70, 27, 30, 23)]]


@pytest.mark.parametrize("area, rows, columns, gutter", [
    ((0, 0, 1000, 700), 3, 4, (7, 13)),
    ((37, 11, 997, 613), 7, 3, (0, 29)),
    ((5, 5, 101, 103), 5, 5, (3, 1)),
    ((0, 0, 1920, 1080), 1, 3, (0, 40)),
    ((1, 2, 1999, 997), 13, 17, (11, 2)),
])
def test_grid_cells_and_gutters_sum_exactly(area, rows, columns, gutter):
    """Cells and gutters tile the region in whole pixels: each row and column of cells, with its gutters,
    spans the region exactly; cell sizes differ by at most 1 px; a span covers the cells and gutters."""
    canvas, grid = Canvas(2000, 1000), Grid("g", rows, columns, gutter, Region("px", *area))
    x, y, w, h = area
    cells = [[resolve(Region("cell", grid="g", row=i, column=j), canvas, {"g": grid}) for j in range(columns)]
             for i in range(rows)]
    for row in cells:
        assert (row[0].x, row[-1].right) == (x, x + w)
        assert sum(c.w for c in row) + gutter[1] * (columns - 1) == w
        assert all(b.x == a.right + gutter[1] for a, b in zip(row, row[1:]))
    for column in zip(*cells):
        assert (column[0].y, column[-1].bottom) == (y, y + h)
        assert sum(c.h for c in column) + gutter[0] * (rows - 1) == h
        assert all(b.y == a.bottom + gutter[0] for a, b in zip(column, column[1:]))
    sizes = [(c.w, c.h) for row in cells for c in row]
    assert max(s[0] for s in sizes) - min(s[0] for s in sizes) <= 1
    assert max(s[1] for s in sizes) - min(s[1] for s in sizes) <= 1
    whole = Region("cell", grid="g", row=0, column=0, row_span=rows, column_span=columns)
    assert resolve(whole, canvas, {"g": grid}) == Box(x, y, w, h)


# -- variables --------------------------------------------------------------------------------------------

VARIABLE_LAYOUT = """\
canvas: {preset: fhd}
variables: {title: Summer, year: 2024, seed: 7, subtitle: ~}
layers:
  - generate: {prompt: "{title} beach", seed: "{seed}"}
  - text: {text: "{title} {year} {subtitle} {{braces}}"}
output: {name: "{layout}-{title}-{seed}"}
"""


@pytest.mark.parametrize("overrides, prompt, seed, text, name, stem", [
    ({"subtitle": "Live"}, "Summer beach", 7, "Summer 2024 Live {braces}", "{layout}-Summer-{seed}",
     "layout-Summer-7"),
    ({"subtitle": "", "title": "Winter", "seed": "11"}, "Winter beach", 11, "Winter 2024  {braces}",
     "{layout}-Winter-{seed}", "layout-Winter-11"),
])
def test_variables_and_overrides(overrides, prompt, seed, text, name, stem):
    """{seed} in output.name stays the field (the first generate layer's seed), which the variable `seed` sets."""
    from studio.render import output_stems

    layout = parse_layout(VARIABLE_LAYOUT, variables=overrides)
    assert (layout.layers[0].prompt, layout.layers[0].seed, layout.layers[1].text, layout.output.name) == (
        prompt, seed, text, name)
    assert output_stems(layout) == [stem]
    assert layout.variables == {"title": "Summer", "year": "2024", "seed": "7", "subtitle": ""} | overrides


def test_a_variable_seed_does_not_replace_the_field_seed():
    """A variable `seed` that is not the first generate layer's seed: output.name's {seed} is still the layer's
    (the variable replaced it: x-5)."""
    from studio.render import output_stems

    layout = parse_layout("canvas: {width: 64, height: 64}\nvariables: {seed: '5'}\nlayers:\n"
                          "  - generate: {prompt: a, seed: 9}\n  - text: {text: '{seed}'}\n"
                          "output: {name: 'x-{seed}'}\n", "card.yaml")
    assert (layout.output.name, output_stems(layout), layout.layers[1].text) == ("x-{seed}", ["x-9"], "5")


@pytest.mark.parametrize("text, overrides, message", [
    # the file's name was replaced: mine-x.png
    ("variables: {layout: mine}\n" + FILL + "output: {name: '{layout}-x'}\n", {},
     "card.yaml:2: variables.layout: 'layout' is a field of output.name ({layout}: the layout file's name), not a "
     "variable name; give the variable another name"),
    ("variables: {monitor: left, title: x}\nlayers: [{text: {text: '{monitor} {title}'}}]\n", {"monitor": "right"},
     "card.yaml:2: variables.monitor: 'monitor' is a field of output.name ({monitor}: a span's monitor's name), not "
     "a variable name; give the variable another name"),  # once: not again for the --set, nor the text it fills
    ("variables: {title: x}\n" + FILL, {"layout": "mine"},
     "card.yaml:2: variables.layout: given a value (--set, or a batch job's variables), but 'layout' is a field of "
     "output.name ({layout}: the layout file's name), not a variable name; give the variable another name"),
    (FILL, {"monitor": "left"},
     "card.yaml:1: variables.monitor: given a value (--set, or a batch job's variables), but 'monitor' is a field "
     "of output.name ({monitor}: a span's monitor's name), not a variable name; give the variable another name"),
])
def test_variables_may_not_be_named_as_output_name_fields(text, overrides, message):
    with pytest.raises(LayoutError) as info:
        parse_layout("canvas: {width: 64, height: 64}\n" + text, "card.yaml", overrides)
    assert info.value.errors == [message]


def test_an_escaped_surrogate_pair_is_its_character():
    """"\\ud83e\\udd8a" (JSON's escape of an emoji, which a generated layout may hold) is one character; a lone
    half stays an error (the corpus)."""
    layout = parse_layout('canvas: {width: 64, height: 64}\nlayers: [{text: {text: "\\ud83e\\udd8a fox"}}]\n', "l.yaml")
    assert layout.layers[0].text == "\U0001F98A fox"


def test_output_name_keeps_exporter_fields():
    layout = parse_layout("canvas: {preset: fhd}\nlayers: [{generate: {prompt: x}}]\noutput: {name: '{layout}-{seed}'}")
    assert layout.output.name == "{layout}-{seed}"


@pytest.mark.parametrize("title, stem", [("Rock {n} Roll", "poster-Rock {n} Roll-{x}"), ("a}b", "poster-a}b-{x}"),
                                         ("{layout}", "poster-{layout}-{x}"), ("{{", "poster-{{-{x}")])
def test_output_name_variables_are_literal(title, stem):
    """Braces in a variable's value (--set title='Rock {n} Roll') are text in the file name, not fields."""
    from studio.render import output_stems

    layout = parse_layout("canvas: {preset: fhd}\nvariables: {title: x}\n" + FILL +
                          "output: {name: '{layout}-{title}-{{x}}'}", "poster.yaml", {"title": title})
    assert output_stems(layout) == [stem]


def test_output_name_values_are_checked_where_the_name_is_used():
    """A batch, which names its own files, may set a variable in output.name to 'AC/DC'; render refuses it."""
    from studio.errors import InputError
    from studio.render import output_stems

    layout = parse_layout("canvas: {preset: fhd}\nvariables: {title: x}\n" + FILL + "output: {name: '{title}'}",
                          "poster.yaml", {"title": "AC/DC"}, own_names=False)
    with pytest.raises(InputError, match=r"^poster.yaml:4: output.name 'AC/DC' gives the file name 'AC/DC', which has a "
                                         r"'/' \(a name in the output folder"):
        output_stems(layout)


NAMED = "canvas: {preset: fhd}\nvariables: {title: x}\n" + FILL + "output: {name: '{layout}-{title}'}\n"
SPAN_NAMED = ("span: {monitors: [{name: left, width: 10, height: 10, size: [1mm, 1mm]}]}\nvariables: {title: x}\n"
              + FILL + "output: {name: '{title}'}\n")
RULE = "(a name in the output folder: not empty, '.' or '..', without '/', '\\' or control characters)"


@pytest.mark.parametrize("text, title, message", [
    (NAMED, "AC/DC", f"poster.yaml:4: output.name: '{{layout}}-{{title}}' with {{title}} = 'AC/DC' gives a file name "
                     f"that has a '/' {RULE}"),
    (NAMED, "a\tb", f"poster.yaml:4: output.name: '{{layout}}-{{title}}' with {{title}} = 'a\\tb' gives a file "
                    f"name that has a control character {RULE}"),
    (NAMED, "x" * 300, "poster.yaml:4: output.name: '{layout}-{title}' with {title} = 'xxxxxxxxxxxxxxxxxxxx...' "
                       "(300 bytes) gives a file name that has 307 bytes: at most 232 (the file system's 255 less the "
                       "suffixes the exporter adds)"),
    (NAMED, "é" * 113, "poster.yaml:4: output.name: '{layout}-{title}' with {title} = "  # 2 bytes each
                       "'éééééééééééééééééééé...' (226 bytes) gives a file name that has 233 bytes: at most 232 (the file "
                       "system's 255 less the suffixes the exporter adds)"),
    (SPAN_NAMED, "..", f"poster.yaml:4: output.name: '{{title}}' with {{title}} = '..' gives a file name that is "
                       f"'..' {RULE}"),
    (SPAN_NAMED, "x" * 230, "poster.yaml:4: output.name: '{title}' with {title} = 'xxxxxxxxxxxxxxxxxxxx...' (230 "
                            "bytes) gives a file name that has 235 bytes: at most 232 (the file system's 255 less the "
                            "suffixes the exporter adds)"),  # the monitor's file: '<name>-left'
])
def test_output_name_values_are_checked_at_load(text, title, message):
    """--set values in output.name: the names of the files written (each monitor's too) are checked at load."""
    with pytest.raises(LayoutError) as info:
        parse_layout(text, "poster.yaml", {"title": title})
    assert info.value.errors == [message]
    parse_layout(text, "poster.yaml", {"title": "x" * 224})  # 'poster-' + 224 + '.png...part.old': 255 bytes
    parse_layout(text, "poster.yaml", {"title": title}, own_names=False)  # a batch names its own files


def test_merge_keys_and_lines():
    layout = parse_layout("""\
canvas: {preset: fhd}
layers:
  - text: &headline {text: A, size: 96pt, align: center}
  - text: {<<: *headline, text: B}
  - text: {<<: *headline, text: C}
  - shape: {shape: line, region: {x: 0, y: 10, w: 100, h: 0}, stroke: {width: 2}}
""")
    assert [(t.text, t.size, t.align) for t in layout.layers[:3]] == [("A", 96, "center"), ("B", 96, "center"),
                                                                      ("C", 96, "center")]
    assert (layout.layers[3].region, layout.layers[3].stroke_width) == (Region("px", 0, 10, 100, 0), 2)


def test_merge_keys_give_what_yaml_constructs():
    """A written key overrides a merged one (names too: no false 'already the name'), and a merge works wherever
    a mapping is read: a region, a whole layer, variables, grids, a span's monitors, output."""
    layout = parse_layout("""\
canvas: {preset: fhd}
variables: {<<: [{title: Hi, sub: x}, {title: Ho, n: 2}], sub: there}
grids:
  <<: {a: {rows: 1, columns: 2}}
  b: {<<: {rows: 2}, columns: 1}
layers:
  - text: &h {text: '{title} {sub}', name: title, size: 40}
  - text: {<<: *h, text: B, name: subtitle}
  - &bg {fill: {color: red, region: &c {cell: [a, 0, 1]}}}
  - {<<: *bg}
  - {<<: *bg, fill: {color: blue, region: {<<: *c}}}
  - fill: {color: red, region: {<<: *c, cell: [b, 1, 0]}}
output: {<<: {name: merged}, name: plain}
""", "poster.yaml")
    assert layout.variables == {"title": "Hi", "sub": "there", "n": "2"}  # of a list, the earlier mapping wins
    assert [(g.rows, g.columns) for g in layout.grids.values()] == [(1, 2), (2, 1)]
    assert [(t.text, t.name, t.size) for t in layout.layers[:2]] == [("Hi there", "title", 40), ("B", "subtitle", 40)]
    a01 = Region("cell", grid="a", row=0, column=1)
    assert [(f.color, f.region) for f in layout.layers[2:]] == [
        ((255, 0, 0, 255), a01), ((255, 0, 0, 255), a01), ((0, 0, 255, 255), a01),
        ((255, 0, 0, 255), Region("cell", grid="b", row=1, column=0))]
    assert layout.output.name == "plain"
    span = parse_layout("""\
span:
  monitors:
    - &m {name: left, width: 1920, height: 1080, diagonal: 24in}
    - {<<: *m, name: right}
layers: [{fill: {color: red}}]
output: {name: "{layout}-{monitor}"}
""").span
    assert [m.name for m in span.monitors] == ["left", "right"]


def test_a_merged_mapping_keeps_its_own_keys():
    """A mapping merged by one read first (grids are read before layers) is still read as written: its merged
    x and its own x are not a duplicate."""
    layout = parse_layout("""\
canvas: {width: 100, height: 100}
layers:
  - fill: {color: red, region: &r {<<: {x: 0%, y: 0%}, w: 10%, h: 10%, x: 5%}}
grids:
  g: {rows: 1, columns: 1, region: {<<: *r}}
""")
    assert layout.layers[0].region == Region("percent", 5, 0, 10, 10)
    assert layout.grids["g"].region == Region("percent", 5, 0, 10, 10)


def test_the_loader_records_where_layers_and_keys_are_written():
    """Layout.lines, for the planner's messages: each top-level key's line, each layer's where it is written in
    `layers` (an alias at the alias, not at its anchor; a merge at its item), and each generate layer's model key
    (a merged one where the merged mapping has it). Not a field: layouts read from different lines are equal,
    and a copy changed in code has none (its layers may no longer be the file's)."""
    import copy
    from dataclasses import replace
    text = """\
variables: {subject: fox}
canvas: {width: 64px, height: 64px}

memory_budget: 1GiB
model: studio/base
layers:
  - &sky
    generate: &gen {prompt: "{subject}", model: studio/tiny}
  - generate: {<<: *gen, seed: 2}
  - fill: {color: red}
  - *sky
  - generate:
      prompt: b
      model: studio/other
"""
    layout = parse_layout(text, "poster.yaml")
    assert dict(layout.lines) == {
        "variables": 1, "canvas": 2, "memory_budget": 4, "model": 5, "layers": 6,
        "layers[0]": 7, "layers[0].generate.model": 8, "layers[1]": 9, "layers[1].generate.model": 8,
        "layers[2]": 10, "layers[3]": 11, "layers[3].generate.model": 8, "layers[4]": 12,
        "layers[4].generate.model": 14}
    assert (layout.where("layers[3]"), layout.where("output")) == ("poster.yaml:11", "poster.yaml")
    lower = parse_layout("\n\n" + text, "poster.yaml")
    assert lower == layout and lower.lines["layers[3]"] == 13
    assert replace(layout, layers=layout.layers[:1]).lines == {}
    assert copy.deepcopy(layout).lines == layout.lines  # a copy as it is keeps them (a read-only proxy did not)
    assert parse_layout(text, "poster.yaml", {"subject": "owl"}).lines == layout.lines  # --set: the same lines


# -- spans ------------------------------------------------------------------------------------------------

# dpi: the densest monitor's, rounded (2560 px / 597 mm = 108.9 px per inch; 4 px/mm = 101.6)
@pytest.mark.parametrize("span, width, height, bezels, dpi", [
    # pixels are square: the height follows the width and the pixel aspect (not the measured 336 mm)
    ("{monitors: [{width: 2560, height: 1440, size: [597mm, 336mm]}]}", 2560, 1440, (), 109),
    # 2 x 597 mm + 18 mm at 2560 px / 597 mm
    ("{monitors: [{width: 2560, height: 1440, size: [597mm, 336mm]}, {width: 2560, height: 1440, size: "
     "[59.7cm, 33.6cm]}], bezels: 18mm}", 5197, 1440, (18.0,), 109),
    # 4 px/mm everywhere: 100 + 5 + 100 + 10 + 50 mm
    ("{monitors: [{width: 400, height: 200, size: [100mm, 50mm]}, {width: 400, height: 200, size: [100mm, 50mm]},"
     " {width: 200, height: 120, size: [50mm, 30mm]}], bezels: [5mm, 1cm], align: top}", 1060, 200, (5.0, 10.0),
     102),
])
def test_spans(span, width, height, bezels, dpi):
    layout = parse_layout(f"span: {span}\n{FILL}")
    assert (layout.canvas.width, layout.canvas.height, layout.canvas.dpi) == (width, height, dpi)
    assert layout.span.bezels_mm == bezels


@pytest.mark.parametrize("size, height_mm", [
    ("[336mm, 597mm]", 597),  # rotated, the size given as it stands
    ("[336mm, 627mm]", 627),  # 4.9% taller than 1440x2560 px say: a ruler's error, not checked further
    ("[13.23in, 1692pt]", 596.9),  # 336.04 mm, 596.90 mm: units mixed
])
def test_a_monitors_size_within_5_percent_of_its_pixels_aspect_loads(size, height_mm):
    """Only the width is used: the height is the pixels' (1440 x 2560 px over 336 mm: 597.33 mm high)."""
    layout = parse_layout(f"span: {{monitors: [{{name: side, width: 1440, height: 2560, size: {size}}}]}}\n{FILL}")
    assert layout.span.monitors[0].height_mm == pytest.approx(height_mm, abs=0.01)
    assert (layout.canvas.width, layout.canvas.height) == (1440, 2560)


@pytest.mark.parametrize("size, message", [
    ("[336mm, 628mm]", "[336mm, 628mm] is 0.535:1 but the monitor is 1440x2560 px (0.562:1); pixels are square, so a "
                       "picture 336 mm wide is 597.3 mm high"),  # 5.1% off
    ("[336mm, 568mm]", "[336mm, 568mm] is 0.592:1 but the monitor is 1440x2560 px (0.562:1); pixels are square, so a "
                       "picture 336 mm wide is 597.3 mm high"),  # 5.2% off the other way
])
def test_a_monitors_size_more_than_5_percent_off_its_pixels_aspect_is_an_error(size, message):
    with pytest.raises(LayoutError) as e:
        parse_layout(f"span: {{monitors: [{{name: side, width: 1440, height: 2560, size: {size}}}]}}\n{FILL}")
    assert str(e.value) == f"<string>:1: span.monitors[0].size: {message}"


def test_the_span_example_loads_with_its_monitors_sizes():
    layout = load_layout(ROOT / "layouts" / "span-3-monitors.yaml")
    assert [(m.name, m.width, m.height) for m in layout.span.monitors] == [
        ("left", 2560, 1440), ("center", 3840, 2160), ("right", 2560, 1440)]
    assert (layout.canvas.width, layout.canvas.height, layout.canvas.dpi) == (11742, 2160, 163)


def test_span_monitor_diagonal():
    layout = parse_layout("span: {monitors: [{name: m, width: 3000, height: 4000, diagonal: 50mm}]}\n" + FILL)
    monitor = layout.span.monitors[0]
    assert (monitor.name, monitor.width, monitor.height) == ("m", 3000, 4000)
    assert (monitor.width_mm, monitor.height_mm) == pytest.approx((30.0, 40.0))


# -- the broken corpus: each layout, its one message --------------------------------------------------------

BROKEN = [
    # YAML syntax
    ("canvas: {preset: fhd\nlayers: []\n",
     "poster.yaml:2: YAML syntax: expected ',' or '}', but got ':'"),
    ("", "poster.yaml:1: the layout is empty; it needs canvas (or span) and layers"),
    ("canvas: {preset: fhd}\nlayers:\n  - fill: {color: #fff}\n",
     "poster.yaml:3: YAML syntax: '#fff' starts a comment, which ends the line early; quote values that start "
     "with '#': \"#fff\""),
    ("canvas: {preset: fhd}\nlayers:\n  - gradient: {stops: [red, #0000]}\n  - fill: {color: red}\n",
     "poster.yaml:3: YAML syntax: '#0000' starts a comment, which ends the line early; quote values that start "
     "with '#': \"#0000\""),
    ("canvas: {preset: fhd}\nlayers:\n  - gradient: {stops: [#000000, #ffffff], angle: 90}\n  - fill: {color: red}\n",
     "poster.yaml:3: YAML syntax: '#000000' starts a comment, which ends the line early; quote values that start "
     "with '#': \"#000000\""),
    ("canvas: {preset: fhd}\nlayers:\n  - gradient:\n      stops: [#000000, #ffffff]\n      angle: 90\n",  # YAML
     "poster.yaml:4: YAML syntax: '#000000' starts a comment, which ends the line early; quote values that start "
     "with '#': \"#000000\""),  # stops at line 5's ':', still in the list; the comment is on line 4
    ("canvas: {preset: fhd}\nlayers:\n  - gradient:\n      stops: [ \"#000000\", #ffffff ]\n  - fill: {color: red}\n",
     "poster.yaml:4: YAML syntax: '#ffffff' starts a comment, which ends the line early; quote values that start "
     "with '#': \"#ffffff\""),
    ("canvas: {preset: fhd}\nlayers:\n  - text: {text: Summer Sale #Sale}\n",  # in the text: all of it quoted
     "poster.yaml:3: YAML syntax: '#Sale' starts a comment, which ends the line early; quote the whole value: "
     "\"Summer Sale #Sale\""),
    ("canvas: {preset: fhd}\nlayers:\n  - text: {text: Sale #now on, size: 20}\n",
     "poster.yaml:3: YAML syntax: '#now' starts a comment, which ends the line early; quote the whole value: "
     "\"Sale #now on\""),
    ("canvas: {preset: fhd}\nlayers: [  # under the text\n  {fill: {color: red}}\n",
     "poster.yaml:4: YAML syntax: expected ',' or ']', but got '<stream end>'"),  # a comment, not a colour
    ("canvas: {preset: fhd}\nvariables: {title: Hi}\nlayers:\n  - text:\n      text: {title} 2024\n      size: 20\n",
     "poster.yaml:5: YAML syntax: '{title} 2024' starts with a mapping, {title}, and goes on; quote text that "
     "starts with '{': \"{title} 2024\""),
    ("canvas: {preset: fhd}\nvariables: {s: 12}\nlayers:\n  - text: {text: hi, size: {s}pt}\n",
     "poster.yaml:4: YAML syntax: '{s}pt' starts with a mapping, {s}, and goes on; quote text that starts with "
     "'{': \"{s}pt\""),
    ("canvas:\n\tpreset: fhd\nlayers: [{fill: {color: red}}]\n",
     "poster.yaml:2: YAML syntax: a tab: indent with spaces, and put spaces, not tabs, after ':', '-', ',' or a "
     "bracket"),
    ("canvas: {preset: fhd}\nlayers:\n  - fill: {color: red}\t# behind the text\n  -\ttext: {text: hi}\n",
     "poster.yaml:4: YAML syntax: a tab: indent with spaces, and put spaces, not tabs, after ':', '-', ',' or a "
     "bracket"),  # the tab before the comment is fine (YAML 1.2), not the one after '-'
    ("canvas: {preset: fhd}\nlayers:\n  - text: {text: hello\tworld}\n",
     "poster.yaml:3: YAML syntax: a tab inside a value: write a space, or quote the text"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, name: " + "[" * 1000 + "]" * 1000 + "}}]\n",
     "poster.yaml:2: YAML syntax: nested more than 100 levels deep (lists and mappings inside each other)"),
    ("canvas: {preset: fhd}\nlayers:\n  - fill: {color: red}\n  - text: {text: a\x00b}\n",
     "poster.yaml:4: YAML syntax: character #x0000 is not allowed in YAML (control characters other than tab and "
     "line breaks)"),
    ("canvas: {preset: fhd}\n" + FILL + "---\ncanvas: {preset: 4k}\n",
     "poster.yaml:3: YAML syntax: a second document ('---'): a layout is one YAML document"),
    # everyday punctuation YAML reads otherwise, and keys out of line: what to write, not PyYAML's words
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: Summer: 50% off\n      size: 20\n",
     "poster.yaml:4: YAML syntax: ': ' inside a value starts a mapping; quote the whole value: \"Summer: 50% off\""),
    ("canvas: {preset: fhd}\nlayers:\n  - generate:\n      prompt: a photo, style: vivid\n",
     "poster.yaml:4: YAML syntax: ': ' inside a value starts a mapping; quote the whole value: "
     "\"a photo, style: vivid\""),
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: @nightmarket\n",
     "poster.yaml:4: YAML syntax: '@nightmarket' starts with '@', which YAML reserves; quote the whole value: "
     "\"@nightmarket\""),
    ("canvas: {preset: fhd}\nlayers:\n  - text: {text: @nightmarket, size: 20}\n",  # to the ',' in brackets
     "poster.yaml:3: YAML syntax: '@nightmarket' starts with '@', which YAML reserves; quote the whole value: "
     "\"@nightmarket\""),
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: `date`\n",
     "poster.yaml:4: YAML syntax: '`date`' starts with '`', which YAML reserves; quote the whole value: \"`date`\""),
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: *NEW* arrivals  # the banner\n",
     "poster.yaml:4: YAML syntax: '*NEW* arrivals' starts with '*', which YAML reads as an alias (*name); quote the "
     "whole value: \"*NEW* arrivals\""),
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: *NEW arrivals\n",  # not "undefined alias 'NEW'"
     "poster.yaml:4: YAML syntax: '*NEW arrivals' starts with '*', which YAML reads as an alias (*name); quote the "
     "whole value: \"*NEW arrivals\""),
    ("canvas: {preset: fhd}\nlayers:\n  - text: {<<: *headline, text: hi}\n",  # an alias meant as one
     "poster.yaml:3: YAML syntax: found undefined alias 'headline'"),
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: | Sale\n",
     "poster.yaml:4: YAML syntax: '| Sale' starts with '|', which YAML reads as the start of a block of lines; quote "
     "the whole value: \"| Sale\""),
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: %50 off\n",
     "poster.yaml:4: YAML syntax: '%50 off' starts with '%', which YAML reads as a directive; quote the whole value: "
     "\"%50 off\""),
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: \"Summer\" Sale\n      size: 20\n",
     "poster.yaml:4: YAML syntax: text after a closing quote: quote the whole value: '\"Summer\" Sale'"),
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: 'Summer' Sale  # a note\n",
     "poster.yaml:4: YAML syntax: text after a closing quote: quote the whole value: \"'Summer' Sale\""),
    # an apostrophe inside single quotes closes them: the text quoted so that no quote mark is drawn
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: 'Don't stop'\n",
     "poster.yaml:4: YAML syntax: text after a closing quote: the ' inside 'Don't stop' closes it; write "
     "\"Don't stop\" or 'Don''t stop'"),
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: \"say \"hi\"\"\n",
     "poster.yaml:4: YAML syntax: text after a closing quote: the \" inside \"say \"hi\"\" closes it; write "
     "'say \"hi\"'"),
    # the same mistakes in brackets: the same hints, not "expected ',' or '}'"
    ("canvas: {preset: fhd}\nlayers:\n  - text: {text: a: b, size: 20}\n",
     "poster.yaml:3: YAML syntax: ': ' inside a value starts a mapping; quote the whole value: \"a: b\""),
    ("canvas: {preset: fhd}\nlayers:\n  - text: {text: \"Summer, 2024\" Sale}\n",  # the ',' in quotes
     "poster.yaml:3: YAML syntax: text after a closing quote: quote the whole value: '\"Summer, 2024\" Sale'"),
    ("canvas: {preset: fhd}\nlayers:\n  - text: {text: 'Don't stop', size: 20}\n",
     "poster.yaml:3: YAML syntax: text after a closing quote: the ' inside 'Don't stop' closes it; write "
     "\"Don't stop\" or 'Don''t stop'"),
    ("canvas: {preset: fhd}\nlayers:\n  - fill: {color: [\"Summer\" Sale]}\n",
     "poster.yaml:3: YAML syntax: text after a closing quote: quote the whole value: '\"Summer\" Sale'"),
    ("canvas: {preset: fhd}\nlayers:\n  - fill: {color: [a b c]}\n  - fill: {color: [a, b}\n",  # no such mistake
     "poster.yaml:4: YAML syntax: expected ',' or ']', but got '}'"),
    # a quote never closed: at its line, not past the file's last
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: \"Night\n  - fill: {color: red}\n  - fill: {color: blue}\n",
     "poster.yaml:4: YAML syntax: this quote is never closed: \"Night; close it where the value ends: \"Night\""),
    ("canvas: {preset: fhd}\nlayers:\n  - text: {text: 'Night, size: 20}\n  - fill: {color: red}\n",
     "poster.yaml:3: YAML syntax: this quote is never closed: 'Night; close it where the value ends: 'Night'"),
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: [NEW] arrivals\n",
     "poster.yaml:4: YAML syntax: '[NEW] arrivals' starts with a list and goes on; quote the whole value: "
     "\"[NEW] arrivals\""),
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: hi\n  output:\n    formats: png\n",
     "poster.yaml:5: YAML syntax: 'output' is at the wrong indentation: check this line's indentation against the "
     "previous key's (a mapping's keys start in the same column)"),
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: hi\n     size: 20\n",
     "poster.yaml:5: YAML syntax: 'size' is at the wrong indentation: check this line's indentation against the "
     "previous key's (a mapping's keys start in the same column)"),
    ("canvas:\n  preset: fhd\n   dpi: 300\n" + FILL,  # YAML reads it as more of 'fhd', then stops at its ':'
     "poster.yaml:3: YAML syntax: 'dpi' is at the wrong indentation: check this line's indentation against the "
     "previous key's (a mapping's keys start in the same column)"),
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: hi\n    - fill: {color: red}\n",
     "poster.yaml:5: YAML syntax: a list item at the wrong indentation: check this line's indentation against the "
     "previous item's (a list's items start in the same column)"),
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: hi\n   - fill: {color: blue}\n",  # not 'fill'
     "poster.yaml:5: YAML syntax: a list item at the wrong indentation: check this line's indentation against the "
     "previous item's (a list's items start in the same column)"),
    ("canvas: {preset: fhd}\nlayers:\n  - fill: {color: red}\n - fill: {color: blue}\n",
     "poster.yaml:4: YAML syntax: a list item at the wrong indentation: check this line's indentation against the "
     "previous item's (a list's items start in the same column)"),
    # unknown keys, missing keys, wrong shapes
    ("canvas: {preset: fhd, backgrund: red}\n" + FILL,
     "poster.yaml:1: canvas.backgrund: unknown key (did you mean 'background'?)"),
    ("canvas: {preset: fhd, w: 1000}\n" + FILL,  # w and h are the region's names
     "poster.yaml:1: canvas.w: unknown key (did you mean 'width'?)"),
    ("canvas: {preset: fhd}\nlayer: []\n",
     "poster.yaml:2: layer: unknown key (did you mean 'layers'?)"),
    ("canvas: {preset: fhd}\n",
     "poster.yaml:1: missing required key 'layers'"),
    ("layers: [{fill: {color: red}}]\n",
     "poster.yaml:1: canvas: missing: give canvas (preset or width and height) or a span"),
    ("canvas: {preset: fhd}\nlayers: [{txt: {text: hi}}]\n",
     "poster.yaml:2: layers[0].txt: unknown layer type (did you mean 'text'?)"),
    ("canvas: {preset: fhd}\nlayers:\n  - fill: {color: red}\n    region: safe\n",
     "poster.yaml:4: layers[0].region: belongs inside 'fill:' (indent it under the layer type)"),
    ("canvas: {preset: fhd}\nlayers: [{text: {size: 12}}]\n",
     "poster.yaml:2: layers[0].text: missing required key 'text'"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: {title}}}]\n",
     "poster.yaml:2: layers[0].text.text: got a mapping {title}; quote text that starts with '{': \"{title}\""),
    ("canvas: {preset: fhd, preset: 4k}\n" + FILL,
     "poster.yaml:1: canvas.preset: duplicate key"),
    ("canvas: {preset: fhd}\nvariables:\n  title: Summer\n  title: Winter\n" + FILL,
     "poster.yaml:4: variables.title: duplicate key"),
    ("canvas: {preset: fhd}\nlayers:\n  - shape: {shape: rect, region: safe}\n    fill: red\n",
     "poster.yaml:4: layers[0].fill: belongs inside 'shape:' (indent it under the layer type)"),  # not a fill layer
    # wrong types and enums
    ("canvas: {preset: fhd, dpi: high}\n" + FILL,
     "poster.yaml:1: canvas.dpi: expected a whole number, got 'high' (text)"),
    ("canvas: {preset: fhd}\nlayers: [{generate: {prompt: x, seed: 1.5}}]\n",
     "poster.yaml:2: layers[0].generate.seed: expected a whole number, got 1.5 (a number)"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, wrap: maybe}}]\n",
     "poster.yaml:2: layers[0].text.wrap: expected true or false, got 'maybe' (text)"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, align: centre}}]\n",
     "poster.yaml:2: layers[0].text.align: 'centre' is not one of left, center, right (did you mean 'center'?)"),
    ("canvas: {preset: 4K}\n" + FILL,
     "poster.yaml:1: canvas.preset: '4K' is not one of " + ", ".join(layout_module.PRESETS) + " (did you mean '4k'?)"),
    ("canvas: {preset: fhd}\nlayers: [{generate: {prompt: x, sampler: dpm}}]\n",
     "poster.yaml:2: layers[0].generate.sampler: 'dpm' is not one of dpm++, ddim, euler (did you mean 'dpm++'?)"),
    ("canvas: {preset: fhd}\n" + FILL + "output: {formats: [png, pdf, png]}\n",
     "poster.yaml:3: output.formats: 'png' is listed twice"),
    ("span: {monitors: [{name: Left, width: 9, height: 9, size: [1mm, 1mm]}, {name: left, width: 9, height: 9, "
     "size: [1mm, 1mm]}]}\n" + FILL,
     "poster.yaml:1: span.monitors[1].name: 'left' differs only in case from 'Left' (span.monitors[0]): names used "
     "in file names must differ in more (macOS and Windows ignore case)"),
    ("canvas: {preset: fhd}\n" + FILL + "output: {formats: [png, jpg]}\n",
     "poster.yaml:3: output.formats[1]: 'jpg' is not one of png, jpeg, tiff, pdf (did you mean 'jpeg'?)"),
    # what other tools call our keys and values
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: red, region: {x: 0, width: 50%, h: 20%}}}]\n",
     "poster.yaml:2: layers[0].fill.region.width: unknown key (did you mean 'w'?)"),
    ("canvas: {preset: fhd}\nlayers: [{image: {file: logo.png}}]\n",
     "poster.yaml:2: layers[0].image.file: unknown key (did you mean 'path'?)"),
    ("canvas: {preset: fhd}\nlayers: [{generate: {prompt: x, cfg: 7}}]\n",
     "poster.yaml:2: layers[0].generate.cfg: unknown key (did you mean 'guidance'?)"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, font-size: 20}}]\n",
     "poster.yaml:2: layers[0].text.font-size: unknown key (did you mean 'size'?)"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, font_weight: 700}}]\n",  # not 'line_height'
     "poster.yaml:2: layers[0].text.font_weight: unknown key (the weight and style are part of the font: "
     "font: DejaVu Sans Bold)"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, Italic: true}}]\n",
     "poster.yaml:2: layers[0].text.Italic: unknown key (the weight and style are part of the font: "
     "font: DejaVu Sans Bold)"),
    ("span: {monitors: [{width: 2560, height: 1440, diagonal: 27in, orientation: portrait}]}\n" + FILL,
     "poster.yaml:1: span.monitors[0].orientation: unknown key (for a monitor turned to portrait, swap width and "
     "height (and size's two lengths): width: 1080, height: 1920)"),
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: red, opacity: 80%}}]\n",
     "poster.yaml:2: layers[0].fill.opacity: expected a number (0..1: 0.8 for 80%), got '80%' (text)"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, line_height: 48pt}}]\n",
     "poster.yaml:2: layers[0].text.line_height: expected a number (a multiple of the size: 1.3 for 130%), "
     "got '48pt' (text)"),
    ("canvas: {preset: fhd}\ngrids: {g: {rows: 2, columns: 2}}\n"
     "layers: [{fill: {color: red, region: {cell: [g, 0, 0], span: 2}}}]\n",
     "poster.yaml:3: layers[0].fill.region.span: expected a list ([rows, columns], e.g. [1, 2]), got 2 (a number)"),
    ("canvas: {preset: fhd}\nlayers: [{rectangle: {region: safe, fill: red}}]\n",
     "poster.yaml:2: layers[0].rectangle: unknown layer type (did you mean shape: {shape: rect, ...}?)"),
    ("canvas: {preset: fhd}\nlayers: [{picture: {path: x.png}}]\n",
     "poster.yaml:2: layers[0].picture: unknown layer type (did you mean 'image'?)"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, align: middle}}]\n",
     "poster.yaml:2: layers[0].text.align: 'middle' is not one of left, center, right (did you mean 'center' or "
     "valign: middle?)"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, valign: center}}]\n",
     "poster.yaml:2: layers[0].text.valign: 'center' is not one of top, middle, bottom (did you mean 'middle' or "
     "align: center?)"),
    ("canvas: {preset: fhd}\nlayers: [{shape: {shape: circle, region: safe, fill: red}}]\n",
     "poster.yaml:2: layers[0].shape.shape: 'circle' is not one of rect, ellipse, line (did you mean 'ellipse'?)"),
    ("canvas: {preset: fhd}\nlayers: [{generate: {prompt: x, fit: crop}}]\n",
     "poster.yaml:2: layers[0].generate.fit: 'crop' is not one of cover, contain (did you mean 'cover'?)"),
    # a layer's name in its path
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: red}}, {text: {text: hi, name: title, wrap: maybe}}]\n",
     "poster.yaml:2: layers[1] (title).text.wrap: expected true or false, got 'maybe' (text)"),
    ("canvas: {preset: fhd}\nvariables: {t: head}\nlayers:\n  - text: {text: hi, name: '{t}-line'}\n    size: 10\n",
     "poster.yaml:5: layers[0] (head-line).size: belongs inside 'text:' (indent it under the layer type)"),
    # numbers that are not finite
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, letter_spacing: .inf}}]\n",
     "poster.yaml:2: layers[0].text.letter_spacing: expected a finite number, got inf"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, line_height: .inf}}]\n",
     "poster.yaml:2: layers[0].text.line_height: expected a finite number, got inf"),
    ("canvas: {preset: fhd}\nlayers: [{gradient: {stops: [red, blue], angle: -.inf}}]\n",
     "poster.yaml:2: layers[0].gradient.angle: expected a finite number, got -inf"),
    ("canvas: {preset: fhd}\nlayers: [{generate: {prompt: x, guidance: .nan}}]\n",
     "poster.yaml:2: layers[0].generate.guidance: expected a finite number, got nan"),
    ("canvas: {preset: fhd}\nlayers: [{gradient: {stops: [[0, red], [.nan, blue]]}}]\n",
     "poster.yaml:2: layers[0].gradient.stops[1][0]: expected a finite number, got nan"),
    ("canvas: {preset: fhd, bleed: .inf}\n" + FILL,
     "poster.yaml:1: canvas.bleed: expected a finite number, got inf"),
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: red, region: {x: .inf, w: 10, h: 10}}}]\n",
     "poster.yaml:2: layers[0].fill.region.x: expected a finite number, got inf"),
    # numbers too large for the canvas or too long to read
    ("canvas: {width: 100, height: 100}\nlayers: [{fill: {color: red, region: {x: 1e308, w: 10, h: 10}}}]\n",
     "poster.yaml:2: layers[0].fill.region.x: 1e+308 px is larger than the canvas (100 x 100 px, bleed included): "
     "at most 100 px"),
    ("canvas: {width: 100, height: 100, bleed: 2}\nlayers: [{fill: {color: red, region: {x: -2in, w: 10, h: 10}}}]\n",
     "poster.yaml:2: layers[0].fill.region.x: -144 px is larger than the canvas (104 x 104 px, bleed included): "
     "at least -104 px"),
    ("canvas: {width: 100, height: 100}\nlayers: [{fill: {color: red, region: {w: " + "1" * 400 + "%, h: 10%}}}]\n",
     "poster.yaml:2: layers[0].fill.region.w: '11111111111111111111...' is a number of 400 characters: at most 100"),
    ("canvas: {width: 100, height: 100}\nlayers: [{text: {text: hi, size: " + "9" * 400 + "mm}}]\n",
     "poster.yaml:2: layers[0].text.size: '99999999999999999999...' is a number of 400 characters: at most 100"),
    ("canvas: {preset: fhd}\nlayers: [{generate: {prompt: x, seed: " + "1" * 5000 + "}}]\n",  # int() stops at 4300
     "poster.yaml:2: layers[0].generate.seed: '11111111111111111111...' is a number of 5000 characters: at most 100"),
    ("canvas: {preset: fhd}\nvariables: {s: '" + "1" * 5000 + "'}\nlayers: [{generate: {prompt: x, seed: '{s}'}}]\n",
     "poster.yaml:3: layers[0].generate.seed: '11111111111111111111...' is a number of 5000 characters: at most "
     "100"),
    ("canvas: {preset: fhd}\nlayers: [{gradient: {stops: [red, blue], angle: " + "1" * 400 + "}}]\n",
     "poster.yaml:2: layers[0].gradient.angle: '11111111111111111111...' is a number of 400 characters: at most 100"),
    # sizes and units
    ("canvas: {width: 0, height: 100}\n" + FILL,
     "poster.yaml:1: canvas.width: must be greater than 0, got 0"),
    ("canvas: {width: 40000, height: 100}\n" + FILL,
     "poster.yaml:1: canvas: 40000 x 100 px (bleed included) is too large: at most 32768 px per side"),
    ("canvas: {width: 20000, height: 20000}\n" + FILL,
     "poster.yaml:1: canvas: 20000 x 20000 px (bleed included) = 400000000 pixels is too large: at most "
     "268435456 (2^28)"),
    ("canvas: {preset: a0, dpi: 1200}\n" + FILL,
     "poster.yaml:1: canvas: 39732 x 56173 px (bleed included) is too large: at most 32768 px per side"),
    ("canvas: {preset: fhd, bleed: 3 millimetres}\n" + FILL,
     "poster.yaml:1: canvas.bleed: '3 millimetres' is not a length (a number with px, pt, mm, cm or in, e.g. 3mm;"
     " a bare number is px); for 3 millimetres write 3mm"),
    ("canvas: {preset: fhd, safe_margin: 600px}\n" + FILL,
     "poster.yaml:1: canvas.safe_margin: 600 px on each side leaves no safe area in 1920 x 1080 px"),
    ("canvas: {preset: fhd, width: 100}\n" + FILL,
     "poster.yaml:1: canvas.width: give either preset or width and height, not both"),
    ("canvas: {width: 100}\n" + FILL,
     "poster.yaml:1: canvas: missing height (or give a preset)"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, size: -3pt}}]\n",
     "poster.yaml:2: layers[0].text.size: must be greater than 0, got -3"),
    ("canvas: {width: 200, height: 100}\nlayers: [{text: {text: hi, size: 20000px}}]\n",
     "poster.yaml:2: layers[0].text.size: 20000 px is larger than the canvas (200 x 100 px, bleed included): "
     "at most 200 px"),
    ("canvas: {width: 200, height: 100, bleed: 10px}\nlayers: [{text: {text: hi, letter_spacing: -10in}}]\n",
     "poster.yaml:2: layers[0].text.letter_spacing: -720 px is larger than the canvas (220 x 120 px, bleed "
     "included): at least -220 px"),
    ("canvas: {width: 200, height: 100}\nlayers: [{text: {text: hi, shadow: {blur: 1000}}}]\n",
     "poster.yaml:2: layers[0].text.shadow.blur: 1000 px is larger than the canvas (200 x 100 px, bleed "
     "included): at most 200 px"),
    # regions and grids
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: red, region: {x: 90%, w: 20%, h: 10%}}}]\n",
     "poster.yaml:2: layers[0].fill.region: the region is outside the canvas: x + w = 2112 px is right of the "
     "canvas (to 1920 px)"),
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: red, region: {x: -5px, y: 0, w: 10, h: 10}}}]\n",
     "poster.yaml:2: layers[0].fill.region: the region is outside the canvas: x = -5 px is left of the canvas "
     "(from 0 px)"),
    ("canvas: {width: 8, height: 6}\nlayers: [{shape: {shape: line, region: {x: 100%, w: 0, h: 100%}, "
     "stroke: {width: 1px}}}]\n",
     "poster.yaml:2: layers[0].shape.region: the region is outside the canvas: with w: 0 the region is the column "
     "at x, and x = 8 px is past the last column, 7 px (x: 100% is one past it; write x: 7px)"),
    ("canvas: {width: 8, height: 6}\nlayers: [{shape: {shape: line, region: {y: 100%, w: 100%, h: 0}, "
     "stroke: {width: 1px}}}]\n",
     "poster.yaml:2: layers[0].shape.region: the region is outside the canvas: with h: 0 the region is the row at "
     "y, and y = 6 px is past the last row, 5 px (y: 100% is one past it; write y: 5px)"),
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: red, region: {w: 0%, h: 10%}}}]\n",
     "poster.yaml:2: layers[0].fill.region: w must be greater than 0, got 0%"),
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: red, region: {x: 90%, w: -20%, h: 10%}}}]\n",
     "poster.yaml:2: layers[0].fill.region: w must be greater than 0, got -20%"),
    ("canvas: {preset: fhd}\nlayers: [{shape: {shape: line, region: {w: 10%, h: -1px}, stroke: {width: 1px}}}]\n",
     "poster.yaml:2: layers[0].shape.region: h must be greater than 0, got -1 px"),
    # a box under 1 px once its edges are rounded (as plan and compose round them) drew nothing, silently
    ("canvas: {width: 100, height: 100}\nlayers:\n  - generate: {prompt: a, steps: 1, region: {w: 0.4px, h: 10}}\n",
     "poster.yaml:3: layers[0].generate.region: the region is 0 x 10 px once its edges are rounded to whole pixels "
     "(x = 0 px and x + w = 0.4 px both round to 0); a region is at least 1 px wide and high"),
    ("canvas: {width: 100, height: 100}\nlayers: [{text: {text: hello, region: {w: 0.3%, h: 50}}}]\n",
     "poster.yaml:2: layers[0].text.region: the region is 0 x 50 px once its edges are rounded to whole pixels "
     "(x = 0 px and x + w = 0.3 px both round to 0); a region is at least 1 px wide and high"),
    ("canvas: {width: 100, height: 100}\nlayers: [{image: {path: whole.png, region: {x: 9.6px, w: 0.5px, h: 10}}}]\n",
     "poster.yaml:2: layers[0].image.region: the region is 0 x 10 px once its edges are rounded to whole pixels "
     "(x = 9.6 px and x + w = 10.1 px both round to 10); a region is at least 1 px wide and high"),
    ("canvas: {width: 100, height: 100}\nlayers: [{gradient: {stops: [red, blue], region: {y: 10.6px, w: 10, "
     "h: 0.3px}}}]\n",
     "poster.yaml:2: layers[0].gradient.region: the region is 10 x 0 px once its edges are rounded to whole pixels "
     "(y = 10.6 px and y + h = 10.9 px both round to 11); a region is at least 1 px wide and high"),
    ("canvas: {width: 100, height: 100}\nlayers: [{shape: {shape: rect, fill: red, region: {w: 0.1mm, h: 10}}}]\n",
     "poster.yaml:2: layers[0].shape.region: the region is 0 x 10 px once its edges are rounded to whole pixels "
     "(x = 0 px and x + w = 0.283465 px both round to 0); a region is at least 1 px wide and high"),
    ("canvas: {width: 100, height: 100, bleed: 3}\nlayers: [{fill: {color: red, region: {x: -2.8px, w: 0.2px, "
     "h: 10}}}]\n",  # in the bleed an edge rounds outward
     "poster.yaml:2: layers[0].fill.region: the region is 0 x 10 px once its edges are rounded to whole pixels "
     "(x = -2.8 px and x + w = -2.6 px both round to -3); a region is at least 1 px wide and high"),
    ("canvas: {width: 100, height: 100}\ngrids: {g: {rows: 1, columns: 2, region: {w: 0.4px, h: 10}}}\n"
     "layers: [{fill: {color: red, region: {cell: [g, 0, 1]}}}]\n",  # once: not again for the cell
     "poster.yaml:2: grids.g.region: the region is 0 x 10 px once its edges are rounded to whole pixels "
     "(x = 0 px and x + w = 0.4 px both round to 0); a region is at least 1 px wide and high"),
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: red, region: top}}]\n",
     "poster.yaml:2: layers[0].fill.region: 'top' is not a region (full, safe, {x, y, w, h} or "
     "{cell: [grid, row, column]})"),
    ("canvas: {preset: fhd}\ngrids: {g: {rows: 2, columns: 3}}\nlayers: [{fill: {color: red, region: "
     "{cell: [g, 2, 0]}}}]\n",
     "poster.yaml:3: layers[0].fill.region: cell: row 2 out of range: grid 'g' has 2 rows (0..1)"),
    ("canvas: {preset: fhd}\ngrids: {g: {rows: 2, columns: 3}}\nlayers: [{fill: {color: red, region: "
     "{cell: [g, 0, 1], span: [1, 3]}}}]\n",
     "poster.yaml:3: layers[0].fill.region: cell: columns 1..3 out of range: grid 'g' has 3 columns (0..2)"),
    ("canvas: {preset: fhd}\ngrids: {g: {rows: 2, columns: 3}}\nlayers: [{fill: {color: red, region: "
     "{cell: [panels, 0, 0]}}}]\n",
     "poster.yaml:3: layers[0].fill.region: cell: no grid 'panels' (grids: g)"),
    ("canvas: {width: 100, height: 100}\ngrids: {g: {rows: 1, columns: 30, gutter: 3px}}\n" + FILL,
     "poster.yaml:2: grids.g: 1 x 30 cells with 3 px gutters do not fit in 100 x 100 px"),
    ("canvas: {width: 100, height: 100}\ngrids: {g: {rows: 10, columns: 2, gutter: [11px, 1px]}}\n" + FILL,
     "poster.yaml:2: grids.g: 10 x 2 cells with 11 px gutters between rows and 1 px between columns do not fit "
     "in 100 x 100 px"),
    ("canvas: {width: 100, height: 100}\ngrids: {g: {rows: 1, columns: 2, gutter: [1px, 2px, 3px]}}\n" + FILL,
     "poster.yaml:2: grids.g.gutter: expected 1 to 2 items, got 3"),
    ("canvas: {width: 100, height: 100}\ngrids: {g: {rows: 1, columns: [1e-300, 1]}}\n" + FILL,  # 1e-298 px
     "poster.yaml:2: grids.g: 1 x 2 cells of their relative sizes with 0 px gutters do not fit in 100 x 100 px"),
    ("canvas: {preset: fhd}\ngrids: {g: {rows: 1, columns: 2}, g: {rows: 2, columns: 2}}\n" + FILL,
     "poster.yaml:2: grids.g: duplicate key"),
    # an invalid grid is reported once, not again at each cell of it or grid inside it
    ("canvas: {preset: fhd}\ngrids: {g: {rows: 1, columns: 3, gutter: 2%}}\nlayers:\n"
     "  - fill: {color: red, region: {cell: [g, 0, 1]}}\n  - fill: {color: red, region: {cell: [g, 0, 2]}}\n",
     "poster.yaml:2: grids.g.gutter: '2%' is not a length (a number with px, pt, mm, cm or in, e.g. 3mm; a bare "
     "number is px)"),
    ("canvas: {width: 100, height: 100}\ngrids:\n  g: {rows: 1, columns: 30, gutter: 3px}\n"
     "  inner: {rows: 2, columns: 1, region: {cell: [g, 0, 0]}}\n"
     "layers: [{fill: {color: red, region: {cell: [inner, 0, 0]}}}]\n",
     "poster.yaml:3: grids.g: 1 x 30 cells with 3 px gutters do not fit in 100 x 100 px"),
    # files and fonts
    ("canvas: {preset: fhd}\nlayers: [{image: {path: missing.png}}]\n",
     "poster.yaml:2: layers[0].image.path: no such image file 'missing.png' (relative paths are read from the "
     "layout file's folder, <dir>)"),
    ("canvas: {preset: fhd}\nlayers: [{image: {path: ~nosuchuser/a.png}}]\n",  # Path.expanduser: a RuntimeError
     "poster.yaml:2: layers[0].image.path: no such image file '~nosuchuser/a.png' (relative paths are read from the "
     "layout file's folder, <dir>)"),
    ("canvas: {preset: fhd}\nlayers: [{generate: {prompt: x, steps: '}}'}}]\n",  # an escape, no variable
     "poster.yaml:2: layers[0].generate.steps: expected a whole number, got '}' (text)"),
    ("canvas: {preset: fhd}\nlayers: [{image: {path: notes.txt}}]\n",
     "poster.yaml:2: layers[0].image.path: 'notes.txt' is not an image Pillow can read"),
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: red}}, {image: {path: trunc.png}}]\n",
     "poster.yaml:2: layers[1].image.path: 'trunc.png' is damaged: image file is truncated"),
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: red}}, {image: {path: badicc.png}}]\n",  # not after generating
     "poster.yaml:2: layers[1].image.path: 'badicc.png' has a colour profile that cannot be used (cannot open "
     "profile from string)"),
    ('canvas: {preset: fhd}\nlayers: [{text: {text: "caf\\udce9"}}]\n',  # an escape YAML takes
     "poster.yaml:2: \\udce9 is half of a UTF-16 surrogate pair, not a character; write the character itself"),
    ('canvas: {preset: fhd}\nlayers: [{fill: {color: red}}]\noutput: {name: "x\\ud83d"}\n',  # not a traceback
     "poster.yaml:3: \\ud83d is half of a UTF-16 surrogate pair, not a character; write the character itself"),
    ("canvas: {preset: fhd}\nlayers: [{image: {path: notamodel}}]\n",
     "poster.yaml:2: layers[0].image.path: 'notamodel' is a folder, not an image file"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, font: NoSuchFontFamily}}]\n",
     "poster.yaml:2: layers[0].text.font: no such font 'NoSuchFontFamily' (a .ttf/.otf path or an installed "
     "family)"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, font: fonts/Inter.ttf}}]\n",
     "poster.yaml:2: layers[0].text.font: no such font file 'fonts/Inter.ttf' (relative paths are read from the "
     "layout file's folder, <dir>)"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, font: ''}}]\n",  # not the bundled font, silently
     "poster.yaml:2: layers[0].text.font: expected a font file or an installed family, got ''; leave font out for "
     "the bundled font"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, font: '  '}}]\n",
     "poster.yaml:2: layers[0].text.font: expected a font file or an installed family, got '  '; leave font out for "
     "the bundled font"),
    ("canvas: {preset: fhd}\nvariables: {f: ''}\nlayers: [{text: {text: hi, font: '{f}'}}]\n",
     "poster.yaml:3: layers[0].text.font: expected a font file or an installed family, got '' (from {f}); leave "
     "font out for the bundled font"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, font: notamodel}}]\n",
     "poster.yaml:2: layers[0].text.font: 'notamodel' is a folder, not a font file"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, font: notes.txt}}]\n",
     "poster.yaml:2: layers[0].text.font: 'notes.txt' is not a font file (.ttf, .otf, .ttc, .otc) nor an installed "
     "family"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, font: fake.ttf}}]\n",
     "poster.yaml:2: layers[0].text.font: 'fake.ttf' is not a font Pillow can read (unknown file format)"),
    ("canvas: {preset: fhd}\nlayers: [{image: {path: big.png}}]\n",
     "poster.yaml:2: layers[0].image.path: 'big.png' is too large: an image may have at most 268435456 pixels "
     "(2^28); it is 20000 x 20000 px = 400000000"),
    ("canvas: {preset: fhd}\nlayers: [{image: {path: bomb.png}}]\n",  # beyond Pillow's hard limit, 2 x ours
     "poster.yaml:2: layers[0].image.path: 'bomb.png' is too large: an image may have at most 268435456 pixels "
     "(2^28)"),
    ("canvas: {preset: fhd}\nlayers: [{image: {path: loop.png}}]\n",  # not RuntimeError from Path.resolve
     "poster.yaml:2: layers[0].image.path: 'loop.png' is a symbolic link loop"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, font: loop.ttf}}]\n",  # not 'no such font file'
     "poster.yaml:2: layers[0].text.font: 'loop.ttf' is a symbolic link loop"),
    ("canvas: {preset: fhd}\nlayers: [{image: {path: gone.png}}]\n",
     "poster.yaml:2: layers[0].image.path: 'gone.png' is a broken symbolic link (to /nonexistent/photo.png)"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, font: gone.png}}]\n",  # a link: a path, not a family
     "poster.yaml:2: layers[0].text.font: 'gone.png' is a broken symbolic link (to /nonexistent/photo.png)"),
    ("canvas: {preset: fhd}\nlayers: [{image: {path: /dev/null}}]\n",
     "poster.yaml:2: layers[0].image.path: '/dev/null' is a device, pipe or socket, not an image file"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, font: /dev/null}}]\n",
     "poster.yaml:2: layers[0].text.font: '/dev/null' is a device, pipe or socket, not a font file"),
    ('canvas: {preset: fhd}\nlayers: [{image: {path: "x\\0.png"}}]\n',  # not ValueError: embedded null byte
     "poster.yaml:2: layers[0].image.path: 'x\\x00.png' has a control character, which no path, font or model name "
     "may hold"),
    ('canvas: {preset: fhd}\nlayers: [{text: {text: hi, font: "DejaVu\\0Sans"}}]\n',  # not from fc-match
     "poster.yaml:2: layers[0].text.font: 'DejaVu\\x00Sans' has a control character, which no path, font or model "
     "name may hold"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, font: 'brand.ttf#99999999999999999999'}}]\n",  # no overflow
     "poster.yaml:2: layers[0].text.font: 'brand.ttf#99999999999999999999': #99999999999999999999 is out of range: a "
     "face index is at most 2147483647 (2^31 - 1)"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, font: 'brand.ttf#2147483647'}}]\n",
     "poster.yaml:2: layers[0].text.font: 'brand.ttf#2147483647': no face 65535: the file has 1, #0"),
    # models
    ("canvas: {preset: fhd}\nlayers: [{generate: {prompt: x, model: ./nosuch}}]\n",
     "poster.yaml:2: layers[0].generate.model: no such model folder './nosuch' (folders are relative to the layout "
     "file's folder, <dir>; a hub id is 'owner/name')"),
    ("canvas: {preset: fhd}\nmodel: models/pixart/v1\n" + FILL,
     "poster.yaml:2: model: no such model folder 'models/pixart/v1' (folders are relative to the layout file's "
     "folder, <dir>; a hub id is 'owner/name')"),
    ('canvas: {preset: fhd}\nmodel: "a/b\\0c"\n' + FILL,  # not a hub id
     "poster.yaml:2: model: 'a/b\\x00c' has a control character, which no path, font or model name may hold"),
    ("canvas: {preset: fhd}\nmodel: notamodel\n" + FILL,
     "poster.yaml:2: model: 'notamodel' has no model_index.json (expected a pipeline folder in the diffusers "
     "layout, or a transformer-only one: transformer/config.json)"),
    # output names
    ("canvas: {preset: fhd}\nvariables: {title: x}\n" + FILL + "output: {name: '{layout}/{title}'}\n",
     "poster.yaml:4: output.name: '{layout}/{title}' gives a file name that has a '/' (a name in the output "
     "folder: not empty, '.' or '..', without '/', '\\' or control characters)"),
    ("canvas: {preset: fhd}\n" + FILL + "output: {name: '{layout}-{monitor}'}\n",
     "poster.yaml:3: output.name: '{layout}-{monitor}': {monitor} exists only in spans (a monitor's name in its "
     "own file)"),
    ("canvas: {preset: fhd}\n" + FILL + "output: {name: '{layout}.PNG'}\n",
     "poster.yaml:3: output.name: '{layout}.PNG' ends in '.png': output.formats adds the suffix (write '{layout}')"),
    ("canvas: {preset: fhd}\n" + FILL + "output: {name: 'poster.pdf'}\n",
     "poster.yaml:3: output.name: 'poster.pdf' ends in '.pdf': output.formats adds the suffix (write 'poster')"),
    ("canvas: {preset: fhd}\n" + FILL + "output: {name: '{layout}-{seed}'}\n",
     "poster.yaml:3: output.name: '{layout}-{seed}': {seed} is the first generate layer's seed, and this layout "
     "has no generate layer"),
    ("canvas: {preset: fhd}\n" + FILL + "output: {name: '{seed:04d}'}\n",
     "poster.yaml:3: output.name: write {seed}, not {seed:04d}: fields take no format, conversion or index"),
    # variables
    ("canvas: {preset: fhd}\nvariables: {title: x}\nlayers: [{text: {text: '{titel}'}}]\n",
     "poster.yaml:3: layers[0].text.text: undefined variable {titel} (defined: title) (did you mean 'title'?)"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: 'a {b'}}]\n",
     "poster.yaml:2: layers[0].text.text: unmatched '{' in 'a {b' (write {{ for a literal brace)"),
    ("canvas: {preset: fhd}\nvariables: {title: ~}\nlayers: [{text: {text: '{title}'}}]\n",
     "poster.yaml:2: variables.title: has no default; set it: --set title=... (or a batch job's variables)"),
    ("canvas: {preset: fhd}\nvariables: {seed: ~}\nlayers: [{generate: {prompt: a, seed: '{seed}', steps: "
     "'x{seed}'}}]\n",  # nothing about the seed and steps it fills: one line
     "poster.yaml:2: variables.seed: has no default; set it: --set seed=... (or a batch job's variables)"),
    ("canvas: {preset: fhd}\nvariables: {2nd: x}\n" + FILL,
     "poster.yaml:2: variables.2nd: '2nd' is not a variable name (letters, digits and _)"),
    # colours
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: blu}}]\n",
     "poster.yaml:2: layers[0].fill.color: 'blu' is not a colour ('#rgb', '#rgba', '#rrggbb', '#rrggbbaa', a name "
     "like 'navy', transparent, rgb(r, g, b), rgba(r, g, b, alpha 0..1), rgb(r g b / alpha), hsl(h, s%, l%), "
     "hsv(h, s%, v%) (or hsb), [r, g, b] or [r, g, b, a])"),
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: 'rgb(10 20, 30)'}}]\n",  # CSS: commas or spaces, not both
     "poster.yaml:2: layers[0].fill.color: 'rgb(10 20, 30)' is not a colour ('#rgb', '#rgba', '#rrggbb', "
     "'#rrggbbaa', a name like 'navy', transparent, rgb(r, g, b), rgba(r, g, b, alpha 0..1), rgb(r g b / alpha), "
     "hsl(h, s%, l%), hsv(h, s%, v%) (or hsb), [r, g, b] or [r, g, b, a])"),
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: 'rgb(10 20 30 / 1.5)'}}]\n",
     "poster.yaml:2: layers[0].fill.color: 'rgb(10 20 30 / 1.5)' is out of range: components are 0..255, or "
     "0%..100%; alpha is 0..1 or 0%..100%"),
    ("canvas: {preset: fhd, background: 'rgb(300 0 0)'}\n" + FILL,
     "poster.yaml:1: canvas.background: 'rgb(300 0 0)' is out of range: components are 0..255, or 0%..100%"),
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: 'rgba(0, 0, 0, 128)'}}]\n",  # CSS's alpha, not Pillow's
     "poster.yaml:2: layers[0].fill.color: 'rgba(0, 0, 0, 128)' is out of range: components are 0..255, or "
     "0%..100%; alpha is 0..1 or 0%..100%"),
    ("canvas: {preset: fhd}\nlayers:\n  - fill:\n      color: #fff\n",
     "poster.yaml:4: layers[0].fill.color: expected a colour, got nothing (quote values that start with '#': "
     "\"#fff\")"),
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: [255, 0, 300]}}]\n",
     "poster.yaml:2: layers[0].fill.color: [255, 0, 300] is not a colour: a list is [r, g, b] or [r, g, b, a] "
     "with whole numbers 0..255"),
    ("canvas: {preset: fhd, background: 'rgb(300, 0, 0)'}\n" + FILL,
     "poster.yaml:1: canvas.background: 'rgb(300, 0, 0)' is out of range: components are 0..255, or 0%..100%"),
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: 'rgb(120%, 0%, 0%)'}}]\n",
     "poster.yaml:2: layers[0].fill.color: 'rgb(120%, 0%, 0%)' is out of range: components are 0..255, or "
     "0%..100%"),
    ("canvas: {preset: fhd, background: 'hsl(0, 100%, 150%)'}\n" + FILL,
     "poster.yaml:1: canvas.background: 'hsl(0, 100%, 150%)' is out of range: saturation and lightness (or "
     "value) are 0%..100%"),
    # layer-specific rules
    ("canvas: {preset: fhd}\nlayers: [{shape: {shape: rect, region: safe}}]\n",
     "poster.yaml:2: layers[0].shape: a rect with neither fill nor stroke draws nothing"),
    ("canvas: {preset: fhd}\nlayers: [{shape: {shape: ellipse, region: safe, fill: red, radius: 4px}}]\n",
     "poster.yaml:2: layers[0].shape: radius applies to rect only"),
    ("canvas: {preset: fhd}\nlayers: [{shape: {shape: ellipse, region: safe}}]\n",
     "poster.yaml:2: layers[0].shape: an ellipse with neither fill nor stroke draws nothing"),
    ("canvas: {preset: fhd}\nlayers: [{gradient: {stops: [red, blue], kind: radial, angle: 45}}]\n",
     "poster.yaml:2: layers[0].gradient: angle applies to linear gradients only (a radial one spreads from its "
     "region's centre; remove angle or make it kind: linear)"),
    ("canvas: {preset: fhd}\nlayers: []\n",
     "poster.yaml:2: layers: expected at least 1 item, got 0"),
    ("canvas: {preset: fhd}\ngrids: {g: {rows: 1, columns: 3}}\nlayers: [{fill: {color: red, region: "
     "{cell: [g, 1, 0]}}}]\n",
     "poster.yaml:3: layers[0].fill.region: cell: row 1 out of range: grid 'g' has 1 row (0..0)"),
    ("canvas: {preset: fhd}\nvariables: {a: centre}\nlayers: [{text: {text: hi, align: '{a}'}}]\n",
     "poster.yaml:3: layers[0].text.align: 'centre' (from {a}) is not one of left, center, right (did you mean "
     "'center'?)"),
    ("canvas: {preset: fhd}\nvariables: {s: 0, u: px}\nlayers: [{text: {text: hi, size: '{s}{u}'}}]\n",
     "poster.yaml:3: layers[0].text.size: must be greater than 0, got 0 (from {s} and {u})"),
    ("canvas: {preset: fhd}\nlayers:\n  - text: {text: hi, size: 0.5pt}\n",  # FreeType: 'invalid ppem' < 0.5 px
     "poster.yaml:3: layers[0].text.size: '0.5pt' is 0.5 px at 72 dpi; a text size is at least 1 px"),
    ("canvas: {preset: a4}\nlayers:\n  - text: {text: hi, size: 0.07mm}\n",
     "poster.yaml:3: layers[0].text.size: '0.07mm' is 0.826772 px at 300 dpi; a text size is at least 1 px"),
    ("canvas: {preset: fhd}\nlayers:\n  - text: {text: hi, size: 0.9}\n",
     "poster.yaml:3: layers[0].text.size: 0.9 px is too small; a text size is at least 1 px"),
    ("canvas: {preset: fhd}\nvariables: {s: 0.1pt}\nlayers:\n  - text: {text: hi, size: '{s}'}\n",
     "poster.yaml:4: layers[0].text.size: '0.1pt' (from {s}) is 0.1 px at 72 dpi; a text size is at least 1 px"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, line_height: 1e300}}]\n",  # YAML 1.2's float
     "poster.yaml:2: layers[0].text.line_height: must be at most 100, got 1e+300"),
    ("canvas: {preset: fhd}\nlayers: [{gradient: {stops: [red, blue], angle: 1e1x}}]\n",
     "poster.yaml:2: layers[0].gradient.angle: expected a number, got '1e1x' (text)"),
    ("canvas: {preset: fhd}\nlayers: [{gradient: {stops: [[0, red], [0.6, blue], [0.2, green]]}}]\n",
     "poster.yaml:2: layers[0].gradient.stops: positions must not decrease: 0.2 comes after 0.6"),
    ("canvas: {preset: fhd}\nlayers: [{gradient: {stops: [red]}}]\n",
     "poster.yaml:2: layers[0].gradient.stops: expected a list of at least 2 colours or [position, colour] pairs, "
     "got one"),
    ('canvas: {preset: fhd}\nlayers: [{text: {text: hi, size: 0, name: "a\\nc"}}]\n',  # one line, name and all
     "poster.yaml:2: layers[0] (a\\nc).text.size: must be greater than 0, got 0"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, size: '\u0661\u0660px'}}]\n",  # Arabic-Indic 10: as the schema
     "poster.yaml:2: layers[0].text.size: '\u0661\u0660px' is not a length (a number with px, pt, mm, cm or in, e.g. "
     "3mm; a bare number is px)"),
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: red, region: {x: '\uff11%', w: 10%, h: 10%}}}]\n",  # full width
     "poster.yaml:2: layers[0].fill.region.x: '\uff11%' is not a percentage or a length (10%, 120px, 20mm)"),
    ("canvas: {preset: fhd}\ngrids: {g: {rows: 2, columns: 2}}\nlayers: [{fill: {color: red, region: "
     "{cell: [g, '\u0661', 0]}}}]\n",
     "poster.yaml:3: layers[0].fill.region: cell: the row must be a whole number from 0, got '\u0661'"),
    ("canvas: {preset: fhd}\ngrids: {g: {rows: 2, columns: 2}}\nlayers: [{fill: {color: red, region: "
     "{cell: [g, '+1', 0]}}}]\n",  # quoted: text, as the schema reads it
     "poster.yaml:3: layers[0].fill.region: cell: the row must be a whole number from 0, got '+1'"),
    ("canvas: {preset: fhd}\ngrids: {g: {rows: 2, columns: 2}}\nlayers: [{fill: {color: red, region: "
     "{cell: [g, 0, -1]}}}]\n",
     "poster.yaml:3: layers[0].fill.region: cell: the column must be a whole number from 0, got '-1'"),
    ("canvas: {preset: fhd}\ngrids: {g: {rows: 2, columns: 2}}\nlayers: [{fill: {color: red, region: "
     "{cell: [g, 1.0, 0]}}}]\n",
     "poster.yaml:3: layers[0].fill.region: cell: the row must be a whole number from 0, got '1.0'"),
    ("canvas: {preset: fhd}\ngrids: {g: {rows: 2, columns: 2}}\nlayers: [{fill: {color: red, region: "
     "{cell: [g, 0x2, 0]}}}]\n",
     "poster.yaml:3: layers[0].fill.region: cell: row 2 out of range: grid 'g' has 2 rows (0..1)"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: a, name: t}}, {text: {text: b, name: t}}]\n",
     "poster.yaml:2: layers[1].name: 't' is already the name of layers[0]"),
    ("canvas: {preset: fhd}\n" + FILL + "memory_budget: lots\n",
     "poster.yaml:3: memory_budget: 'lots' is not a size like 6GiB, 512MiB or 2GB"),
    ("canvas: {preset: fhd}\n" + FILL + "memory_budget: 6\n",
     "poster.yaml:3: memory_budget: '6' has no unit: give one, e.g. 6GiB, 512MiB or 2GB"),
    ("canvas: {preset: fhd}\n" + FILL + "memory_budget: 0\n",
     "poster.yaml:3: memory_budget: must be positive, got '0'"),
    ("canvas: {preset: fhd}\n" + FILL + "memory_budget: ''\n",  # --memory-budget '' is auto; written, a slip
     "poster.yaml:3: memory_budget: '' is not a size: write one like 6GiB, or auto"),
    ("canvas: {preset: fhd}\n" + FILL + "memory_budget: '  '\n",
     "poster.yaml:3: memory_budget: '  ' is not a size: write one like 6GiB, or auto"),
    # spans
    ("span: {monitors: [{width: 2560, height: 1440}]}\n" + FILL,
     "poster.yaml:1: span.monitors[0]: give the picture's size: [width, height] or diagonal (one of them)"),
    ("span: {monitors: [{width: 2560, height: 1440, size: [597mm, 336mm], diagonal: 27in}]}\n" + FILL,
     "poster.yaml:1: span.monitors[0]: give the picture's size or its diagonal, not both"),
    ("span: {monitors: [{width: 2560, height: 1440, size: [597, 336mm]}]}\n" + FILL,
     "poster.yaml:1: span.monitors[0].size[0]: 597 (a number) has no physical size; give it in mm, cm, in or pt"),
    ("span: {monitors: [{width: 10, height: 10, size: [1mm, 1mm]}, {width: 10, height: 10, size: [1mm, 1mm]}], "
     "bezels: 18px}\n" + FILL,
     "poster.yaml:1: span.bezels: '18px' has no physical size; give it in mm, cm, in or pt"),
    # a rotated monitor given its datasheet size: 597 mm wide and 1061 mm high, had its height not been checked
    ("span:\n  monitors:\n    - {name: main, width: 2560, height: 1440, size: [597mm, 336mm]}\n"
     "    - {name: side, width: 1440, height: 2560, size: [597mm, 336mm]}\n" + FILL,
     "poster.yaml:4: span.monitors[1].size: [597mm, 336mm] is 1.78:1 but the monitor is 1440x2560 px (0.562:1): "
     "did you mean [336mm, 597mm]?"),
    ("span: {monitors: [{width: 2560, height: 1440, size: [23.5in, 10in]}]}\n" + FILL,
     "poster.yaml:1: span.monitors[0].size: [23.5in, 10in] is 2.35:1 but the monitor is 2560x1440 px (1.78:1); "
     "pixels are square, so a picture 596.9 mm wide is 335.8 mm high"),
    ("span:\n  monitors:\n    - {width: 10, height: 10, size: [1mm, 1mm]}\n    - {width: 10, height: 10, "
     "size: [1mm, 1mm]}\n  bezels: [1mm, 2mm]\n" + FILL,
     "poster.yaml:5: span.bezels: 2 monitors have 1 gap; got 2 bezels (give one length or 1)"),
    ("canvas: {preset: 4k}\nspan: {monitors: [{width: 10, height: 10, size: [1mm, 1mm]}]}\n" + FILL,
     "poster.yaml:1: canvas.preset: a span sets the canvas size; remove this key or the span"),
    ("span: {monitors: [{name: left/top, width: 10, height: 10, size: [1mm, 1mm]}]}\n" + FILL,
     "poster.yaml:1: span.monitors[0].name: 'left/top' has a '/': monitor names are used in file names"),
    ("span:\n  monitors:\n    - {name: ' ', width: 10, height: 10, size: [1mm, 1mm]}\n" + FILL,
     "poster.yaml:3: span.monitors[0].name: ' ' is blank: monitor names are used in file names"),
    ("span:\n  monitors:\n    - {name: left, width: 9, height: 9, size: [1mm, 1mm]}\n"
     "    - {name: Span, width: 9, height: 9, size: [1mm, 1mm]}\n" + FILL + "output: {name: 'wall-{monitor}'}\n",
     "poster.yaml:4: span.monitors[1].name: 'Span' names its file 'wall-Span', which differs only in case from the "
     "whole span's 'wall-span' ({monitor} is 'span' there); give the monitor another name"),
    ("span: {monitors: [{name: span, width: 9, height: 9, size: [1mm, 1mm]}]}\n" + FILL +
     "output: {name: '{monitor}'}\n",
     "poster.yaml:1: span.monitors[0].name: 'span' names its file 'span', which is the whole span's 'span' ({monitor} "
     "is 'span' there); give the monitor another name"),
    ("span:\n  monitors:\n    - {width: 1920, height: 1080, size: [0.0000001mm, 1mm]}\n" + FILL,
     "poster.yaml:3: span.monitors[0].size: 1920 px across 1e-07 mm is 487680000000 dpi: at most 10000 (a picture "
     "at least 4.8768 mm wide)"),
    ("span:\n  monitors:\n    - {name: wall, width: 192, height: 108, size: [1600cm, 900cm]}\n" + FILL,
     "poster.yaml:3: span.monitors[0].size: 192 px across 16000 mm is 0.3 dpi, which rounds to 0: at least 1 (a "
     "picture narrower than 9753.6 mm)"),
    # text YAML would drop: a hashtag read as a comment (a '# note' is one: test_a_comment_after_a_value_is_one)
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: Summer Sale #SummerSale #2024\n",
     "poster.yaml:4: layers[0].text.text: text after ' #' is a YAML comment, which would be dropped: quote the whole "
     "value to keep '#SummerSale': \"Summer Sale #SummerSale #2024\" (a comment has a space after '#')"),
    ("canvas: {preset: fhd}\nlayers:\n  - generate:\n      prompt: a fox,\n        watercolour #cute\n",
     "poster.yaml:4: layers[0].generate.prompt: text after ' #' is a YAML comment, which would be dropped: quote the "
     "whole value to keep '#cute': \"a fox, watercolour #cute\" (a comment has a space after '#')"),
    ("canvas: {preset: fhd}\nvariables:\n  title: We're #1\n" + FILL,
     "poster.yaml:3: variables.title: text after ' #' is a YAML comment, which would be dropped: quote the whole "
     "value to keep '#1': \"We're #1\" (a comment has a space after '#')"),
    ("canvas: {preset: fhd}\nlayers:\n  - text: {text: hi, font: DejaVu Sans}\n  - text:\n      text: hi\n"
     "      font: fonts/Noto.ttc #2\n",  # the face index, written apart
     "poster.yaml:6: layers[1].text.font: text after ' #' is a YAML comment, which would be dropped: quote the whole "
     "value to keep '#2': \"fonts/Noto.ttc #2\" (a comment has a space after '#')"),
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: !Sale now\n",
     "poster.yaml:4: layers[0].text.text: '!Sale' is a YAML tag, which would be dropped: quote the whole value to "
     "keep it: \"!Sale now\""),
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: &NEW arrivals\n",  # an anchor no alias uses
     "poster.yaml:4: layers[0].text.text: '&NEW' is a YAML anchor, which would be dropped: quote the whole value to "
     "keep it: \"&NEW arrivals\""),
    # a value that starts with '#' is a comment, and the value nothing
    ("canvas: {preset: fhd}\nvariables:\n  tint: #ff5a5f\nlayers: [{fill: {color: '{tint}'}}]\n",
     "poster.yaml:3: variables.tint: has no default; set it: --set tint=... (or a batch job's variables) (quote "
     "values that start with '#': \"#ff5a5f\")"),
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: #SummerSale #2024\n",
     "poster.yaml:4: layers[0].text.text: expected text, got nothing (quote values that start with '#': "
     "\"#SummerSale #2024\")"),
    ("canvas: {preset: fhd}\nlayers:\n  - gradient:\n      stops:\n        - red\n        - #000\n",
     "poster.yaml:6: layers[0].gradient.stops[1]: expected a colour, got nothing (quote values that start with "
     "'#': \"#000\")"),
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text:   # the title\n",  # a comment: no hint
     "poster.yaml:4: layers[0].text.text: expected text, got nothing"),
    ("canvas: {preset: fhd}\nlayers:\n  - fill:\n      color:\n",
     "poster.yaml:4: layers[0].fill.color: expected a colour, got nothing"),
    # a path, font or size from a variable: named, and where relative paths are read
    ("canvas: {preset: fhd}\nvariables: {logo: assets/logo.png}\nlayers:\n  - image:\n      path: \"{logo}\"\n",
     "poster.yaml:5: layers[0].image.path: no such image file 'assets/logo.png' (from {logo}) (relative paths are "
     "read from the layout file's folder, <dir>)"),
    ("canvas: {preset: fhd}\nvariables: {f: Inter}\nlayers: [{text: {text: hi, font: 'fonts/{f}.ttf'}}]\n",
     "poster.yaml:3: layers[0].text.font: no such font file 'fonts/Inter.ttf' (from {f}) (relative paths are read "
     "from the layout file's folder, <dir>)"),
    ("canvas: {preset: fhd}\nvariables: {m: lots}\n" + FILL + "memory_budget: '{m}'\n",
     "poster.yaml:4: memory_budget: 'lots' (from {m}) is not a size like 6GiB, 512MiB or 2GB"),
    ("span: {monitors: [{name: '{side}', width: 10, height: 10, size: [1mm, 1mm]}]}\nvariables: {side: a/b}\n"
     + FILL,
     "poster.yaml:1: span.monitors[0].name: 'a/b' (from {side}) has a '/': monitor names are used in file names"),
    # physical lengths and a monitor's pixels
    ('span: {monitors: [{width: 2560, height: 1440, diagonal: 27"}]}\n' + FILL,
     "poster.yaml:1: span.monitors[0].diagonal: '27\"' is not a physical length (a number with mm, cm, in or pt: "
     "27in, 597mm); for 27\" write 27in"),
    ("span: {monitors: [{width: 2560, height: 1440, diagonal: 24 inch}]}\n" + FILL,
     "poster.yaml:1: span.monitors[0].diagonal: '24 inch' is not a physical length (a number with mm, cm, in or pt: "
     "27in, 597mm); for 24 inch write 24in"),
    ("span: {monitors: [{width: 597mm, height: 1440, diagonal: 27in}]}\n" + FILL,
     "poster.yaml:1: span.monitors[0].width: expected a whole number (the monitor's pixels, e.g. 3840; its physical "
     "size goes in size: [597mm, 336mm]), got '597mm' (text)"),
    ("span: {monitors: [{width: 3840, height: 2160px, diagonal: 27in}]}\n" + FILL,
     "poster.yaml:1: span.monitors[0].height: expected a whole number (the monitor's pixels, e.g. 2160; its physical "
     "size goes in size: [597mm, 336mm]), got '2160px' (text)"),
    # near misses
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: ffffff}}]\n",
     "poster.yaml:2: layers[0].fill.color: 'ffffff' is not a colour (did you mean \"#ffffff\", quoted?)"),
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: 0xff5a5f}}]\n",  # a number in YAML 1.2
     "poster.yaml:2: layers[0].fill.color: '0xff5a5f' is not a colour (did you mean \"#ff5a5f\", quoted?)"),
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: 000000}}]\n",
     "poster.yaml:2: layers[0].fill.color: '000000' is not a colour (did you mean \"#000000\", quoted?)"),
    ("canvas: {preset: fhd}\nvariables: {c: fab}\nlayers: [{fill: {color: '{c}'}}]\n",
     "poster.yaml:3: layers[0].fill.color: 'fab' (from {c}) is not a colour (did you mean \"#fab\", quoted?)"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, size: '1,5mm'}}]\n",
     "poster.yaml:2: layers[0].text.size: '1,5mm' is not a length (a number with px, pt, mm, cm or in, e.g. 3mm; a "
     "bare number is px); use a decimal point: 1.5mm"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, letter_spacing: '1,500px'}}]\n",
     "poster.yaml:2: layers[0].text.letter_spacing: '1,500px' is not a length (a number with px, pt, mm, cm or in, "
     "e.g. 3mm; a bare number is px); write numbers without commas: 1500px, or 1.500px"),
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: red, region: {x: '2,5%', w: 10%, h: 10%}}}]\n",
     "poster.yaml:2: layers[0].fill.region.x: '2,5%' is not a percentage or a length (10%, 120px, 20mm); use a "
     "decimal point: 2.5%"),
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: red, opacity: '0,8'}}]\n",
     "poster.yaml:2: layers[0].fill.opacity: expected a number (0..1: 0.8 for 80%), got '0,8' (text); use a decimal "
     "point: 0.8"),
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: red, opacity: 80}}]\n",
     "poster.yaml:2: layers[0].fill.opacity: 80 is out of range 0..1 (0.8 for 80%)"),
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: red, opacity: 255}}]\n",  # an 8-bit alpha, no percentage
     "poster.yaml:2: layers[0].fill.opacity: 255 is out of range 0..1"),
    ("canvas: {preset: fhd}\nlayers: [{fill: {color: red, opacity: 1.5}}]\n",  # not read as 1.5% (0.015)
     "poster.yaml:2: layers[0].fill.opacity: 1.5 is out of range 0..1"),
    ("canvas: {preset: fhd}\nlayers: [{gradient: {stops: [[0, red], [1.2, blue]]}}]\n",
     "poster.yaml:2: layers[0].gradient.stops[1][0]: 1.2 is out of range 0..1"),
    ("canvas: {preset: fhd}\nlayers: [{text: {text: hi, line_height: 120}}]\n",
     "poster.yaml:2: layers[0].text.line_height: must be at most 100, got 120 (1.2 for 120%)"),
    ("canvas: {preset: fhd}\nlayers: [{gradient: {stops: [[0, red], [50, blue]]}}]\n",
     "poster.yaml:2: layers[0].gradient.stops[1][0]: 50 is out of range 0..1 (0.5 for 50%)"),
    ("canvas: {preset: fhd}\nlayers: [{gradient: {stops: [[0, red], [120%, blue]]}}]\n",
     "poster.yaml:2: layers[0].gradient.stops[1][0]: '120%' is out of range 0%..100%"),
    ("canvas: {preset: fhd}\nlayers: [{gradient: {stops: [[0, red], [half, blue]]}}]\n",
     "poster.yaml:2: layers[0].gradient.stops[1][0]: expected a number (0..1, or a percentage: 0.5 or 50%), got "
     "'half' (text)"),
    # what renders otherwise as written, not as meant
    ("canvas: {preset: fhd}\nvariables: {title: Summer}\nlayers: [{text: {text: 'Hello {{title}}!'}}]\n",
     "poster.yaml:3: layers[0].text.text: '{{title}}' is a literal '{title}' (doubled braces escape); write {title} "
     "to use the variable, or, for the text '{title}', put it in another variable's value (values are used as "
     "written)"),
    ("canvas: {preset: fhd}\nvariables: {title: Summer}\nlayers: [{text: {text: 'Hello {{ title }}!'}}]\n",
     "poster.yaml:3: layers[0].text.text: '{{ title }}' is a literal '{ title }' (doubled braces escape); write "
     "{title} to use the variable, or, for the text '{ title }', put it in another variable's value (values are "
     "used as written)"),
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: Night\\nMarket\n",
     "poster.yaml:4: layers[0].text.text: a literal \\n: write the text in double quotes for a line break, or put "
     "each line on its own line in a | block"),
    ("canvas: {preset: fhd}\nlayers:\n  - text: {text: 'Night\\nMarket'}\n",
     "poster.yaml:3: layers[0].text.text: a literal \\n: write the text in double quotes for a line break, or put "
     "each line on its own line in a | block"),
    ("canvas: {preset: fhd}\nlayers:\n  - generate: {prompt: a fox\\nin snow}\n",
     "poster.yaml:3: layers[0].generate.prompt: a literal \\n: write the text in double quotes for a line break, or "
     "put each line on its own line in a | block"),
    ("canvas: {preset: fhd}\nlayers:\n  - text:\n      text: |\n        Night\\nMarket\n",  # a block as written
     "poster.yaml:4: layers[0].text.text: a literal \\n: write the text in double quotes for a line break, or put "
     "each line on its own line in a | block"),
    ("canvas: {preset: fhd}\nlayers:\n  - generate:\n      prompt: >\n        a fox\\nin snow\n",
     "poster.yaml:4: layers[0].generate.prompt: a literal \\n: write the text in double quotes for a line break, or "
     "put each line on its own line in a | block"),
]


def test_a_yaml_error_without_a_message_is_named_by_its_type():
    """(str(e).splitlines()[0] raised IndexError)"""
    assert layout_module.yaml_problem("a: b\n", yaml.YAMLError()) == (1, "YAMLError")
    assert layout_module.yaml_problem("a: b\n", yaml.YAMLError("first\nsecond")) == (1, "first")


def png_header(path: Path, width: int, height: int) -> None:
    """A 1-bit PNG that holds only its header: Pillow opens it (and checks its size) without decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IEND", b""))


@pytest.fixture
def layout_dir(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "fake.ttf").write_text("not a font")
    (tmp_path / "notamodel").mkdir()
    png_header(tmp_path / "big.png", 20000, 20000)  # 400 MP: over 2^28
    png_header(tmp_path / "bomb.png", 30000, 30000)  # 900 MP: over twice 2^28, Pillow refuses to open it
    Image.new("RGB", (64, 64), "red").save(tmp_path / "whole.png")
    (tmp_path / "trunc.png").write_bytes((tmp_path / "whole.png").read_bytes()[:60])  # opens, does not decode
    Image.new("RGB", (4, 4)).save(tmp_path / "badicc.png", icc_profile=b"not a profile")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    (tmp_path / "loop.ttf").symlink_to(tmp_path / "loop.ttf")
    (tmp_path / "gone.png").symlink_to("/nonexistent/photo.png")
    (tmp_path / "brand.ttf").write_bytes(ImageFont.load_default(10).path.getvalue())  # Pillow's bundled face
    return tmp_path


@pytest.mark.parametrize("text, message", BROKEN, ids=[m.split(": ", 2)[1][:40] for _, m in BROKEN])
def test_broken_layouts(text, message, layout_dir):
    """<dir> in a message: the layout's folder (a tmp_path), where relative paths are read from."""
    message = message.replace("<dir>", str(layout_dir))
    with pytest.raises(LayoutError) as info:
        parse_layout(text, "poster.yaml", base_dir=layout_dir)
    assert info.value.errors == [message]
    assert str(info.value) == message


def test_relative_paths_of_a_layout_from_text_are_the_current_folder_s(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LayoutError) as info:
        parse_layout("canvas: {preset: fhd}\nlayers: [{text: {text: hi, font: fonts/Inter.ttf}}, "
                     "{image: {path: logo.png}}]\n")
    assert info.value.errors == [
        f"<string>:2: layers[0].text.font: no such font file 'fonts/Inter.ttf' (relative paths are read from the "
        f"current folder, {tmp_path})",
        f"<string>:2: layers[1].image.path: no such image file 'logo.png' (relative paths are read from the current "
        f"folder, {tmp_path})"]


def test_a_layouts_model_may_be_a_transformer_only_folder(tmp_path):
    """As the published 512 and 2K checkpoints: transformer/ alone, completed with a base when loaded."""
    (tmp_path / "t2k" / "transformer").mkdir(parents=True)
    (tmp_path / "t2k" / "transformer" / "config.json").write_text("{}")
    layout = parse_layout("canvas: {preset: fhd}\nmodel: t2k\n" + FILL, "poster.yaml", base_dir=tmp_path)
    assert layout.model == str(tmp_path / "t2k")


def test_corpus_is_large():
    assert len(BROKEN) >= 20


def test_undeclared_override():
    with pytest.raises(LayoutError) as info:
        parse_layout("canvas: {preset: fhd}\nvariables: {title: x}\n" + FILL, "poster.yaml", {"titel": "y"})
    assert info.value.errors == ["poster.yaml:2: variables.titel: given a value (--set, or a batch job's "
                                 "variables) but not defined in the file (did you mean 'title'?)"]


def test_every_error_at_once(layout_dir):
    text = """\
canvas:
  preset: a7
  backgrund: white
variables: {title: Summer}
layers:
  - text:
      text: "{titel}"
      font: NoSuchFontFamily
      align: centre
  - image: {path: nope.png}
  - txt: {text: hi}
  - generate: {prompt: x, steps: 0, sampler: dpm}
output: {formats: [png, gif], jpeg_quality: 101}
"""
    with pytest.raises(LayoutError) as info:
        parse_layout(text, "poster.yaml", base_dir=layout_dir)
    assert [line.split(": ", 2)[:2] for line in info.value.errors] == [
        ["poster.yaml:2", "canvas.preset"],
        ["poster.yaml:3", "canvas.backgrund"],
        ["poster.yaml:7", "layers[0].text.text"],
        ["poster.yaml:8", "layers[0].text.font"],
        ["poster.yaml:9", "layers[0].text.align"],
        ["poster.yaml:10", "layers[1].image.path"],
        ["poster.yaml:11", "layers[2].txt"],
        ["poster.yaml:12", "layers[3].generate.steps"],
        ["poster.yaml:12", "layers[3].generate.sampler"],
        ["poster.yaml:13", "output.formats[1]"],
        ["poster.yaml:13", "output.jpeg_quality"],
    ]


@pytest.mark.parametrize("layer, expected", [
    # the settings at the layer type's indent, not under it: `text: hi` is a setting, not a second layer
    ("  - text:\n    text: hi\n    size: 12\n",
     ["poster.yaml:4: layers[0].text: belongs inside 'text:' (indent it under the layer type)",
      "poster.yaml:5: layers[0].size: belongs inside 'text:' (indent it under the layer type)"]),
    ("  - shape:\n    shape: rect\n    region: safe\n",
     ["poster.yaml:4: layers[0].shape: belongs inside 'shape:' (indent it under the layer type)",
      "poster.yaml:5: layers[0].region: belongs inside 'shape:' (indent it under the layer type)"]),
    # a stray setting hides nothing wrong inside the layer
    ("  - text: {text: hi, align: centre}\n    size: 12\n",
     ["poster.yaml:3: layers[0].text.align: 'centre' is not one of left, center, right (did you mean 'center'?)",
      "poster.yaml:4: layers[0].size: belongs inside 'text:' (indent it under the layer type)"]),
    ("  - text:\n    image: {path: logo.png}\n",  # two layers in one item
     ["poster.yaml:3: layers[0]: one layer per list item; this one is text and image"]),
])
def test_layer_settings_beside_the_layer_type(layer, expected):
    with pytest.raises(LayoutError) as info:
        parse_layout("canvas: {preset: fhd}\nlayers:\n" + layer, "poster.yaml")
    assert info.value.errors == expected


def test_region_of_numbers_beyond_floats():
    """x + w = 1e308 + 1e308 is no float: each is refused as larger than the canvas, not summed."""
    with pytest.raises(LayoutError) as info:
        parse_layout("canvas: {width: 100, height: 100}\n"
                     "layers: [{fill: {color: red, region: {x: 1e308, y: 0, w: 1e308, h: 10}}}]\n", "poster.yaml")
    assert info.value.errors == [
        "poster.yaml:2: layers[0].fill.region.x: 1e+308 px is larger than the canvas (100 x 100 px, bleed included): "
        "at most 100 px",
        "poster.yaml:2: layers[0].fill.region.w: 1e+308 px is larger than the canvas (100 x 100 px, bleed included): "
        "at most 100 px"]


@pytest.mark.parametrize("text, expected", [
    # a bad value that does not decide the canvas's size hides nothing that needs the size
    ("canvas: {width: 256, height: 256, background: blu}\ngrids: {g: {rows: 1, columns: 3, gutter: 200px}}\n"
     "layers:\n  - fill: {color: red, region: {x: 90%, w: 50%, h: 10%}}\n  - text: {text: hi, size: 5000px}\n",
     [("poster.yaml:1", "canvas.background"), ("poster.yaml:2", "grids.g"), ("poster.yaml:4", "layers[0].fill.region"),
      ("poster.yaml:5", "layers[1].text.size")]),
    ("canvas:\n  width: 256\n  height: 256\n  safe_margin: 200px\ngrids: {g: {rows: 1, columns: 3, gutter: 200px}}\n"
     "layers: [{fill: {color: red, region: {x: 90%, w: 50%, h: 10%}}}]\n",
     [("poster.yaml:4", "canvas.safe_margin"), ("poster.yaml:5", "grids.g"), ("poster.yaml:6", "layers[0].fill.region")]),
    ("canvas: {width: 256, height: 256, safe_margin: 1 inch}\nlayers: [{text: {text: hi, size: 5000px}}]\n",
     [("poster.yaml:1", "canvas.safe_margin"), ("poster.yaml:2", "layers[0].text.size")]),
    # a bad bleed leaves the trim size: the safe margin is checked in it
    ("canvas:\n  preset: fhd\n  bleed: abc\n  safe_margin: 2000px\n" + FILL,
     [("poster.yaml:3", "canvas.bleed"), ("poster.yaml:4", "canvas.safe_margin")]),
    # a bad size still lets everything that does not need it be checked: keys, names, types
    ("canvas: {width: 40000, height: 100, backgrund: red}\nlayers:\n  - text: {text: a, name: t, align: centre}\n"
     "  - text: {text: b, name: t}\n  - shape: {shape: oval, region: safe}\noutput: {name: '{layout}.png'}\n",
     [("poster.yaml:1", "canvas.backgrund"), ("poster.yaml:1", "canvas"), ("poster.yaml:3", "layers[0] (t).text.align"),
      ("poster.yaml:4", "layers[1].name"), ("poster.yaml:5", "layers[2].shape.shape"), ("poster.yaml:6", "output.name")]),
    # a span: the monitors' values, names, bezels and the canvas keys a span decides, all at once
    ("canvas: {preset: 4k, bleed: 3mm, orientation: portrait, background: blu}\nspan:\n  monitors:\n"
     "    - {name: a/b, width: 0, height: 10, size: [1mm, 1mm]}\n    - {name: x, width: 10, height: 10}\n"
     "    - {name: x, width: 10, height: 10, size: [1mm, 1mm]}\n  bezels: [1mm, 2mm, 3mm]\n" + FILL,
     [("poster.yaml:1", "canvas.background"), ("poster.yaml:1", "canvas.preset"), ("poster.yaml:1", "canvas.bleed"),
      ("poster.yaml:1", "canvas.orientation"), ("poster.yaml:4", "span.monitors[0].width"),
      ("poster.yaml:4", "span.monitors[0].name"), ("poster.yaml:5", "span.monitors[1]"),
      ("poster.yaml:6", "span.monitors[2].name"), ("poster.yaml:7", "span.bezels")]),
])
def test_every_error_at_once_around_the_canvas(text, expected):
    with pytest.raises(LayoutError) as info:
        parse_layout(text, "poster.yaml")
    assert [tuple(line.split(": ", 2)[:2]) for line in info.value.errors] == expected


def test_set_values_are_named_in_messages():
    """A bad value that came from --set names its variable: the line shows only '{a}'."""
    with pytest.raises(LayoutError) as info:
        parse_layout("canvas: {preset: fhd}\nvariables: {a: left, n: 1}\n"
                     "layers: [{text: {text: hi, align: '{a}', line_height: '{n}'}}]\n", "poster.yaml",
                     {"a": "centre", "n": "-2"})
    assert info.value.errors == [
        "poster.yaml:3: layers[0].text.align: 'centre' (from {a}) is not one of left, center, right (did you mean "
        "'center'?)",
        "poster.yaml:3: layers[0].text.line_height: must be greater than 0, got -2 (from {n})"]
    # a value that is its own variable's '{name}' is named too
    with pytest.raises(LayoutError) as info:
        parse_layout("canvas: {preset: fhd}\nvariables: {seed: 1}\nlayers: [{generate: {prompt: a, seed: '{seed}'}}]\n",
                     "poster.yaml", {"seed": "{seed}"})
    assert info.value.errors == [
        "poster.yaml:3: layers[0].generate.seed: expected a whole number, got '{seed}' (from {seed}) (text)"]


def test_a_set_value_with_a_lone_surrogate_is_an_error_at_its_variable():
    """As the file's own values: at the variable's line, and not again where it is used (as a file name)."""
    with pytest.raises(LayoutError) as info:
        parse_layout("canvas: {preset: fhd}\nvariables: {v: x}\nlayers: [{text: {text: '{v}'}}]\n"
                     "output: {name: 'a{v}'}\n", "poster.yaml", {"v": "a\ud800"})
    assert info.value.errors == [
        "poster.yaml:2: variables.v: the value given (--set, or a batch job's variables): \\ud800 is half of a "
        "UTF-16 surrogate pair, not a character; write the character itself"]


@pytest.mark.parametrize("value, expected", [("1e1", 10.0), ("1E-1", 0.1), ("+2.5e+1", 25.0), ("'{v}'", 1000.0)])
def test_yaml_12_floats_are_numbers(value, expected):
    """'1e1' is text to YAML 1.1 but a number to YAML 1.2 and JSON (editors' schema checks): a number here too."""
    layout = parse_layout(f"canvas: {{preset: fhd}}\nvariables: {{v: 1e3}}\n"
                          f"layers: [{{gradient: {{stops: [red, blue], angle: {value}}}}}]\n")
    assert layout.layers[0].angle == expected


@pytest.mark.parametrize("written, variable, expected", [
    ("0010", None, 10), ("0009", None, 9), ("'{s}'", "0010", 10), ("'{s}'", "0009", 9), ("'{s}'", "+7", 7),
    ("0o17", None, 15), ("0x1F", None, 31), ("'{s}'", "0o17", 15),
])
def test_whole_numbers_with_leading_zeros_are_decimal(written, variable, expected):
    """YAML 1.1 reads 0010 as octal 8 and 0009 as text; YAML 1.2 (and a spreadsheet's zero-padded seeds) 10, 9."""
    layout = parse_layout(f"canvas: {{preset: fhd}}\nvariables: {{s: 1}}\n"
                          f"layers: [{{generate: {{prompt: x, seed: {written}}}}}]\n",
                          variables=None if variable is None else {"s": variable})
    assert layout.layers[0].seed == expected


@pytest.mark.parametrize("written, message", [
    ("wrap: yes", "expected true or false, got 'yes' (text) (yes, no, on and off are text in YAML 1.2)"),
    ("wrap: Off", "expected true or false, got 'Off' (text) (yes, no, on and off are text in YAML 1.2)"),
    ("size: 1_000", "'1_000' is not a length"),
    ("size: 0b11", "'0b11' is not a length"),
])
def test_yaml_11_readings_are_text_as_in_yaml_12(written, message):
    """What PyYAML (YAML 1.1) reads as booleans or numbers is text to YAML 1.2, and to editors' schema checks."""
    with pytest.raises(LayoutError, match=re.escape(message)):
        parse_layout(f"canvas: {{preset: fhd}}\nlayers: [{{text: {{text: hi, {written}}}}}]\n")
    assert parse_layout("canvas: {preset: fhd}\nlayers: [{text: {text: hi, wrap: FALSE}}]\n").layers[0].wrap is False


@pytest.mark.parametrize("data, message", [
    ("canvas: {preset: fhd}\nlayers:\n  - text: {text: café}\n".encode("latin-1"),
     "poster.yaml:3: not UTF-8 text (byte 0xe9); save the layout as UTF-8"),
    ("canvas: {preset: fhd}\n".encode("utf-16"), "poster.yaml:1: UTF-16 text, not UTF-8; save the layout as UTF-8"),
    ("canvas: {preset: fhd}\n".encode("utf-16-le"), "poster.yaml:1: UTF-16 text, not UTF-8; save the layout as UTF-8"),
    ("canvas: {preset: fhd}\n".encode("utf-16-be"), "poster.yaml:1: UTF-16 text, not UTF-8; save the layout as UTF-8"),
    (codecs.BOM_UTF16_BE + "canvas: {preset: fhd}\n".encode("utf-16-be"),
     "poster.yaml:1: UTF-16 text, not UTF-8; save the layout as UTF-8"),
    ("canvas: {preset: fhd, name: 'Café — 夏'}\n".encode("utf-16-le"),  # not all high bytes NUL
     "poster.yaml:1: UTF-16 text, not UTF-8; save the layout as UTF-8"),
    # NULs: a file of zeros (what a crash can leave), or text that zeros follow; not UTF-16
    (bytes(4096), "poster.yaml: only NUL bytes (0x00), no text; write the layout again"),
    (b"canvas: {preset: fhd}\nlayers: []\n" + bytes(1000),
     "poster.yaml:3: YAML syntax: character #x0000 is not allowed in YAML (control characters other than tab and line "
     "breaks)"),
    # lines counted as YAML counts them: CR (old Macs) and CRLF end one line each
    ("canvas: {preset: fhd}\rlayers:\r\n  - text: {text: café}\r".encode("latin-1"),
     "poster.yaml:3: not UTF-8 text (byte 0xe9); save the layout as UTF-8"),
])
def test_layout_not_utf8(tmp_path, data, message):
    (tmp_path / "poster.yaml").write_bytes(data)
    with pytest.raises(LayoutError) as info:
        load_layout(tmp_path / "poster.yaml")
    assert info.value.errors == [f"{tmp_path}/{message}"]


def test_layout_line_ends(tmp_path):
    """CRLF and CR line ends read as LF: lines are counted the same."""
    (tmp_path / "poster.yaml").write_bytes(b"canvas: {preset: fhd}\r\nlayers:\r  - text: {text: hi, wrap: maybe}\n")
    with pytest.raises(LayoutError) as info:
        load_layout(tmp_path / "poster.yaml")
    assert info.value.errors == [f"{tmp_path}/poster.yaml:3: layers[0].text.wrap: expected true or false, got "
                                 f"'maybe' (text)"]


@pytest.mark.parametrize("mark", ["\u2028", "\u2029", "\x85"])
def test_yaml_11_line_breaks_are_text(tmp_path, mark):
    """NEL, U+2028 and U+2029 end lines to PyYAML (YAML 1.1) but are characters of the text to YAML 1.2 and
    editors: lines are counted without them, and text keeps them, quoted or not (a text layer breaks lines there)."""
    text = (f"canvas: {{preset: fhd}}\nlayers:\n  - text: {{text: \"one{mark}two\"}}\n"
            f"  - text:\n      text: one{mark}two\n")
    assert [layer.text for layer in parse_layout(text).layers] == [f"one{mark}two"] * 2
    bad_align = f"  - text: {{text: hi, align: 'cen{mark}tre'}}\n"
    for more, error in [(bad_align, f"6: layers[2].text.align: 'cen{repr(mark)[1:-1]}tre' is not one of left, center, "
                                    f"right (did you mean 'center'?)"),  # a message stays one line
                        (bad_align + "  - fill: {color: red\n",
                         "8: YAML syntax: expected ',' or '}', but got '<stream end>'"),
                        # a YAML error quoting the text: its own character, on one line
                        (f"  - text: {{text: {{title}}{mark} b}}\n",
                         f"6: YAML syntax: '{{title}}{repr(mark)[1:-1]} b' starts with a mapping, {{title}}, and goes "
                         f"on; quote text that starts with '{{': \"{{title}}{repr(mark)[1:-1]} b\"")]:
        (tmp_path / "poster.yaml").write_text(text + more, encoding="utf-8")
        with pytest.raises(LayoutError) as info:
            load_layout(tmp_path / "poster.yaml")
        assert info.value.errors == [f"{tmp_path}/poster.yaml:{error}"]


def test_missing_layout_file(tmp_path):
    with pytest.raises(LayoutError) as info:
        load_layout(tmp_path / "nope.yaml")
    assert info.value.errors == [f"{tmp_path / 'nope.yaml'}: no such layout file"]
    (tmp_path / "folder.yaml").mkdir()  # as a batch says it (test_batch): the read is shared
    with pytest.raises(LayoutError) as info:
        load_layout(tmp_path / "folder.yaml")
    assert info.value.errors == [f"{tmp_path / 'folder.yaml'}: is a folder, not a layout file"]


def test_a_layout_file_whose_name_is_no_utf8_gives_no_file_name(tmp_path):
    """os.fsdecode's stand-in for the byte (as Path.glob gives the name) would go into every file's metadata, which
    can't encode it: a one-line error (it was a UnicodeEncodeError)."""
    import os
    path = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.yaml")
    with open(path, "w") as f:
        f.write("canvas: {width: 8, height: 8}\nlayers: [{fill: {color: red}}]\n")
    with pytest.raises(LayoutError) as info:
        load_layout(path)
    assert info.value.errors == [
        f"{path}:1: output.name: '{{layout}}' gives a file name that has half of a UTF-16 surrogate pair, which no "
        "file's metadata encodes (a name in the output folder: not empty, '.' or '..', without '/', '\\' or control "
        "characters)"]


def test_a_layout_file_is_read_up_to_a_limit(tmp_path, monkeypatch):
    """/dev/zero as a layout was read until memory ran out; a pipe is still read (`studio render /dev/stdin`)."""
    import studio.layout as L
    monkeypatch.setattr(L, "MAX_SOURCE", 100)
    (tmp_path / "big.yaml").write_text("#" * 101)
    with pytest.raises(LayoutError) as info:
        load_layout(tmp_path / "big.yaml")
    assert info.value.errors == [f"{tmp_path / 'big.yaml'}: more than 0 MiB, too large for a layout file"]
    (tmp_path / "fits.yaml").write_text("canvas: {width: 8, height: 8}\nlayers: [{fill: {color: red}}]\n")
    assert len(L.read_source(tmp_path / "fits.yaml", "layout", LayoutError)) < 100


# -- files relative to the layout ---------------------------------------------------------------------------

def test_image_and_font_paths_are_relative_to_the_layout(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "logo.png")
    font = find_font("DejaVu Sans") or pytest.skip("no DejaVu Sans installed")
    (tmp_path / "fonts").mkdir()
    shutil.copy(font, tmp_path / "fonts" / "Brand.ttf")
    (tmp_path / "poster.yaml").write_text("canvas: {preset: fhd}\nlayers:\n  - image: {path: logo.png}\n"
                                          "  - text: {text: hi, font: fonts/Brand.ttf}\n  - text: {text: hi}\n")
    layout = load_layout(tmp_path / "poster.yaml")
    assert layout.layers[0].path == str((tmp_path / "logo.png").resolve())
    assert layout.layers[1].font == str((tmp_path / "fonts" / "Brand.ttf").resolve())
    assert layout.layers[2].font is None


def test_images_up_to_studio_limit(tmp_path):
    """Pillow refuses images over 179 MP by default; studio takes them up to its own 2^28 px, without a warning."""
    Image.new("1", (14000, 14000)).save(tmp_path / "wide.png")  # 196 MP (1 bit: 0.3 s to write, 0.2 s to read)
    layout = parse_layout("canvas: {preset: fhd}\nlayers: [{image: {path: wide.png}}]\n", base_dir=tmp_path)
    assert layout.layers[0].path == str(tmp_path / "wide.png")
    with Image.open(tmp_path / "wide.png") as image:  # and so does the compositor's Image.open
        assert image.size == (14000, 14000)


def test_model_paths_are_relative_to_the_layout(tmp_path, monkeypatch):
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "tiny" / "model_index.json").write_text("{}")
    (tmp_path / "layouts").mkdir()
    (tmp_path / "layouts" / "poster.yaml").write_text(
        "canvas: {preset: fhd}\nmodel: ../models/tiny\nlayers:\n  - generate: {prompt: x, model: ../models/tiny}\n"
        "  - generate: {prompt: y, model: PixArt-alpha/PixArt-Sigma-XL-2-1024-MS}\n")
    monkeypatch.chdir(tmp_path / "models")  # not the layout's folder: ../models/tiny is not found from here
    layout = load_layout(tmp_path / "layouts" / "poster.yaml")
    folder = str((tmp_path / "models" / "tiny").resolve())
    assert (layout.model, layout.layers[0].model) == (folder, folder)
    assert layout.layers[1].model == "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"  # a hub id stays an id
    # ... one that no folder of the working folder replaces (test_render: ..._whatever_the_working_folder_holds)
    from studio.hub import HubId
    assert isinstance(layout.layers[1].model, HubId) and not isinstance(layout.model, HubId)


def test_find_font():
    assert find_font(None) == "default"
    assert find_font("NoSuchFontFamily") is None
    assert find_font("missing/Inter.ttf") is None


# -- examples, schema, single sources of truth ----------------------------------------------------------------

def test_schema_file_is_generated_from_the_key_tables():
    on_disk = json.loads((ROOT / "layouts" / "layout.schema.json").read_text())
    assert on_disk == json.loads(json.dumps(layout_schema())), \
        "regenerate: python -m studio.layout --schema > layouts/layout.schema.json"


def test_schema_names_what_the_loader_accepts():
    schema = layout_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["properties"]) == set(TOP_KEYS)
    for name, (table, _) in LAYER_TYPES.items():
        assert set(schema["$defs"][f"{name}_layer"]["properties"]) == set(table)
    layer_options = schema["properties"]["layers"]["items"]["oneOf"]
    assert [next(iter(o["properties"])) for o in layer_options] == list(LAYER_TYPES)


def test_schema_lists_by_position_read_alike_in_draft_07():
    """prefixItems is draft 2020-12's; draft-07 validators (older editors' YAML servers) skip it and read a
    beside it "items": false as "no items at all". The length is bounded by minItems and maxItems instead."""
    found = [node for node in schema_objects(layout_schema()) if "prefixItems" in node]
    assert [(len(n["prefixItems"]), n["minItems"], n["maxItems"], n.get("items")) for n in found] == [
        (2, 2, 2, None),  # a gradient stop [position, colour]
        (3, 3, 3, {"type": ["string", "number", "boolean"]})]  # a grid cell [grid, row, column]: scalars in draft-07


def schema_objects(node):
    """Every JSON object in a schema, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from schema_objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from schema_objects(value)


def test_schema_patterns_compile():
    found = [node["pattern"] for node in schema_objects(layout_schema()) if isinstance(node.get("pattern"), str)]
    assert found and all(re.compile(p) for p in found)


def test_key_tables_match_the_spec_fields():
    """Layer keys are the spec dataclass fields, except stroke, which the loader splits into two fields."""
    import dataclasses
    from studio import spec
    classes = {"generate": spec.GenerateLayer, "image": spec.ImageLayer, "text": spec.TextLayer,
               "shape": spec.ShapeLayer, "fill": spec.FillLayer, "gradient": spec.GradientLayer}
    for name, (table, _) in LAYER_TYPES.items():
        fields = {f.name for f in dataclasses.fields(classes[name])}
        assert set(table) - {"stroke"} == fields - {"stroke", "stroke_width", "stroke_color"}, name


class EditorYaml(yaml.SafeLoader):
    """YAML read as an editor's schema check reads it (YAML 1.2, as JSON): 2024-06-21 is text, not a date."""


EditorYaml.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

SCHEMA_ACCEPTED = [  # the loader accepts each; so must the schema
    "span: {monitors: [{width: 9, height: 9, size: [1mm, 0.04in]}, {width: 9, height: 9, size: [2.8346pt, 0.1cm]}, "
    "{width: 9, height: 9, diagonal: 1.5mm}], bezels: [0, 0px]}\n" + FILL,
    "span: {monitors: [{width: 9, height: 9, size: [1mm, 1mm]}, {width: 9, height: 9, size: [1mm, 1mm]}], "
    "bezels: -0.0mm}\n" + FILL,
    "canvas: {preset: fhd}\nlayers: [{text: {text: 2024, name: 1}}, {generate: {prompt: 1984}}]\n",
    "canvas: {preset: fhd}\nlayers: [{text: {text: 2024-06-21}}, {text: {text: true}}]\n",
    "canvas: {preset: '{size}'}\nvariables: {size: fhd}\n" + FILL,
    "canvas: {preset: fhd, orientation: '{o}'}\nvariables: {o: portrait}\n" + FILL,
    "canvas: {preset: fhd}\nvariables: {a: left, w: 'false', v: bottom, s: 2}\n"
    "layers: [{text: {text: x, align: '{a}', wrap: '{w}', valign: '{v}', size: '{s}'}}]\n",
    "canvas: {preset: fhd}\nvariables: {d: 2024-06-21, n: 3, b: true, f: 1.5}\nlayers: [{text: {text: '{d}'}}]\n",
    "canvas: {preset: fhd}\ngrids: {g: {rows: 1, columns: 2}}\n"
    "layers: [{fill: {color: red, region: {cell: [g, '0', '1']}}}]\n",
    "canvas: {preset: fhd}\nvariables: {c: 1, r: 0}\ngrids: {g: {rows: 1, columns: 2}}\n"
    "layers: [{fill: {color: red, region: {cell: [g, '{r}', '{c}']}}}]\n",
    "canvas: {preset: fhd}\ngrids: {1: {rows: 1, columns: 2, gutter: [8px, 1mm]}}\n"
    "layers: [{fill: {color: red, region: {cell: [1, 0, 1], span: [1, 1]}}}]\n",
    "canvas: {preset: fhd}\nvariables: {r: 255, where: safe, p: 0.5}\n"
    "layers: [{fill: {color: ['{r}', 0, 0], region: '{where}'}}, "
    "{gradient: {stops: [[0, red], ['{p}', blue]]}}]\n",
    "canvas: {preset: fhd, bleed: +3mm}\nlayers: [{fill: {color: red, region: {x: +10%, w: 10%, h: 10%}}}]\n",
    "canvas: {preset: fhd}\n" + FILL + "memory_budget: none\n",  # as --memory-budget none: automatic
    "canvas: {preset: fhd}\n" + FILL + "memory_budget: AUTO\n",
    "canvas: {preset: fhd}\nvariables: {seed: 7}\nlayers: [{generate: {prompt: x, seed: '{seed}', "
    "model: owner/name}}]\nmodel: owner/name\nmemory_budget: 6GiB\noutput: {formats: pdf, name: '{layout}-{seed}'}\n",
    "canvas: {preset: fhd}\nlayers:\n  - text: &h {text: A, size: 96pt}\n  - text: {<<: *h, text: B}\n",
    "span: {monitors: [{width: 10, height: 10, size: [1mm, 1mm]}]}\ncanvas: {background: red}\n" + FILL,
    "span: {monitors: [{width: 10, height: 10, size: [1mm, 1mm]}]}\n" + FILL + "output: {name: '{monitor}'}\n",
    "canvas: {preset: fhd, bleed: -0mm, safe_margin: '-.0'}\n" + FILL,  # -0 is not negative
    "canvas: {preset: fhd}\n" + FILL + "memory_budget: 1.5gIb\n",  # units in any case, as parse_bytes reads them
    "canvas: {preset: fhd}\ngrids: {g: {rows: 2, columns: 2}}\n"
    "layers: [{fill: {color: red, region: {cell: [g, +1, 0x1], span: [+1, 1]}}}]\n",
    "canvas: {preset: fhd}\nlayers: [{shape: {shape: line, region: {w: -0px, h: +10%}, stroke: {width: 1px}}}]\n",
    "canvas: {preset: a4}\nlayers: [{text: {text: a, size: 1}}, {text: {text: b, size: 01.5px}}, "
    "{text: {text: c, size: 0.24pt, font: default}}]\n",  # 0.24pt at 300 dpi: 1 px
    "canvas: {width: 100MM, height: 2In, bleed: 3Mm}\nlayers: [{text: {text: a, size: 12PT, letter_spacing: 1PX, "
    "region: {x: 1CM, w: 50%, h: 10Pt}}}, {gradient: {stops: [[0, red], [50%, blue], [' 100 % ', green]]}}]\n",
    "span: {monitors: [{width: 9, height: 9, size: [1MM, 1Mm]}], bezels: 0PX}\n" + FILL,
]
SCHEMA_REJECTED = [  # the loader rejects each; the schema can tell too
    "span: {monitors: [{width: 9, height: 9, size: [1mm, 1mm]}, {width: 9, height: 9, size: [1mm, 1mm]}], "
    "bezels: 18px}\n" + FILL,  # a physical length: no px
    "span: {monitors: [{width: 9, height: 9, size: [1mm, 1mm]}, {width: 9, height: 9, size: [1mm, 1mm]}], "
    "bezels: 18}\n" + FILL,
    "span: {monitors: [{width: 9, height: 9, size: [1, 1mm]}]}\n" + FILL,
    "span: {monitors: [{width: 9, height: 9, diagonal: 0mm}]}\n" + FILL,
    "canvas: {preset: fhd, backgrund: red}\n" + FILL,
    "canvas: {preset: fhd}\nlayers: [{text: {text: hi, align: centre}}]\n",
    "canvas: {preset: fhd}\nlayers: [{text: {text: hi, wrap: maybe}}]\n",
    "canvas: {preset: fhd, bleed: -3mm}\n" + FILL,
    "canvas: {preset: fhd, dpi: 1.5}\n" + FILL,
    "canvas: {preset: fhd}\nlayers: [{fill: {color: [255, 0, 300]}}]\n",
    "canvas: {preset: fhd}\nlayers: []\n",
    "canvas: {preset: fhd}\n",
    FILL,
    "canvas: {preset: fhd}\nlayers: [{txt: {text: hi}}]\n",
    "canvas: {preset: fhd}\nlayers: [{text: {text: {title}}}]\n",
    "canvas: {preset: fhd}\nlayers: [{fill: {color: red, region: top}}]\n",
    "canvas: {preset: fhd}\ngrids: {g: {rows: 1, columns: 2}}\n"
    "layers: [{fill: {color: red, region: {cell: [g, -1, 0]}}}]\n",
    "canvas: {preset: fhd}\ngrids: {g: {rows: 1, columns: 2, gutter: 2%}}\n" + FILL,
    "canvas: {preset: fhd}\ngrids: {g: {rows: 1, columns: 2, gutter: [1, 2, 3]}}\n" + FILL,
    "canvas: {preset: fhd}\n" + FILL + "output: {formats: [png, gif]}\n",
    "canvas: {preset: fhd}\nlayers: [{generate: {prompt: x, seed: -1}}]\n",
    "canvas: {preset: fhd}\nlayers: [{text: {text: hi, stroke: {width: 0px}}}]\n",
    "canvas: {preset: fhd}\nlayers: [{text: {text: hi, size: 0}}]\n",
    "canvas: {width: 0.0mm, height: 10mm}\n" + FILL,
    "canvas: {preset: fhd}\n" + FILL + "memory_budget: 6XB\n",  # parse_bytes's units only
    "canvas: {preset: fhd}\n" + FILL + "memory_budget: ''\n",
    "canvas: {preset: fhd}\nvariables: {layout: mine}\n" + FILL,  # output.name's field
    "canvas: {preset: fhd}\nlayers: [{fill: {color: red, region: {x: 90%, w: -20%, h: 10%}}}]\n",
    "canvas: {preset: fhd}\nlayers: [{fill: {color: red, region: {w: 10%, h: -1}}}]\n",
    "canvas: {preset: fhd}\nlayers: [{text: {text: hi, size: 0.5}}]\n",
    "canvas: {preset: fhd}\nlayers: [{text: {text: hi, size: 0.5px}}]\n",
    "canvas: {preset: fhd}\nlayers: [{text: {text: hi, font: ''}}]\n",
    "canvas: {preset: fhd}\nlayers: [{text: {text: hi, font: ' '}}]\n",
]


def schema_errors(text: str, draft: str = "Draft202012Validator") -> list[str]:
    jsonschema = pytest.importorskip("jsonschema")
    validator = getattr(jsonschema, draft)(json.loads((ROOT / "layouts" / "layout.schema.json").read_text()))
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(yaml.load(text, EditorYaml))]


@pytest.mark.parametrize("draft", ["Draft202012Validator", "Draft7Validator"])  # 7: older editors' YAML servers
@pytest.mark.parametrize("path", sorted((ROOT / "layouts").glob("*.yaml")), ids=lambda p: p.name)
def test_schema_accepts_the_example_layouts(path, draft):
    assert schema_errors(path.read_text(), draft) == []


def test_a_comment_after_a_value_is_one():
    """'# ' starts a comment after any value, '#word' after a number or colour, and '#' inside a word is text: the
    hashtag check (BROKEN) refuses only '#word' after text."""
    layout = parse_layout("canvas: {preset: fhd}  #full-hd\nlayers:\n  - text:\n      text: Summer Sale  # the title\n"
                          "      size: 20 #big\n      color: red #brand\n  - text:\n      text: \"Sale\" #quoted\n"
                          "  - text: {text: C# and F#}\n  - text:\n      text: |\n        Night #1\n        Market\n")
    assert [layer.text for layer in layout.layers] == ["Summer Sale", "Sale", "C# and F#", "Night #1\nMarket\n"]
    assert (layout.layers[0].size, layout.layers[0].color) == (20, (255, 0, 0, 255))
    layout = parse_layout("canvas: {preset: fhd}\nlayers:\n  - text: {text: &t Hi, name: !!str 1}\n"
                          "  - text: {text: *t}\n")  # an anchor an alias uses, and the tag of text: what they mean
    assert [(layer.text, layer.name) for layer in layout.layers] == [("Hi", "1"), ("Hi", "")]


@pytest.mark.parametrize("written, hint", [
    ("  tint: #ff5a5f", " (quote values that start with '#': \"#ff5a5f\")"),
    ("    - #000  ", " (quote values that start with '#': \"#000\")"),
    (" #SummerSale #2024", " (quote values that start with '#': \"#SummerSale #2024\")"),
    ("  text: #\"Hi\"", " (quote values that start with '#': '#\"Hi\"')"),
    ("  tint:   # no default", ""), ("  tint: ~ #ff5a5f", ""), ("  tint:", "")])
def test_hash_comment_hint(written, hint):
    """For a value that came out null (the batch's job files take it too): a comment where the value would be."""
    assert layout_module.hash_comment_hint(written) == hint


def test_what_yaml_reads_as_text_is_text():
    """Doubled braces around a variable's name that are not the escapes of the name's braces, a line break in
    double quotes, and gradient stops as percentages."""
    layout = parse_layout("canvas: {preset: fhd}\nvariables: {title: Summer}\nlayers:\n"
                          "  - text: {text: '{{{title}}} {{x}}'}\n  - text: {text: \"Night\\nMarket\"}\n"
                          "  - gradient: {stops: [[0, red], [50%, blue], ['100 %', green]]}\n")
    assert [layout.layers[0].text, layout.layers[1].text] == ["{Summer} {x}", "Night\nMarket"]
    assert [position for position, _ in layout.layers[2].stops] == [0, 0.5, 1.0]


def test_the_text_of_a_variables_name_in_braces():
    """'{{title}}' is an error where title is a variable (mustache's braces); the README's ways to write the
    texts '{title}' (another variable's value, used as written) and '{{title}}' (doubled twice) draw them."""
    layout = parse_layout("canvas: {preset: fhd}\nvariables: {title: Summer, braced: '{title}'}\nlayers:\n"
                          "  - text: {text: '{braced}'}\n  - text: {text: '{{{{title}}}}'}\n"
                          "  - text: {text: '{{{title}}}'}\n  - text: {text: '{{{{ title }}}}'}\n")
    assert [layer.text for layer in layout.layers] == ["{title}", "{{title}}", "{Summer}", "{{ title }}"]


def test_a_path_set_on_the_command_line_names_its_variable_and_folder(tmp_path):
    """--set logo=assets/logo.png is read from the layout's folder, not the current one: the message says which."""
    with pytest.raises(LayoutError) as info:
        parse_layout("canvas: {preset: fhd}\nvariables: {logo: logo.png}\nlayers: [{image: {path: '{logo}'}}]\n",
                     "poster.yaml", {"logo": "assets/logo.png"}, tmp_path)
    assert info.value.errors == [f"poster.yaml:3: layers[0].image.path: no such image file 'assets/logo.png' (from "
                                 f"{{logo}}) (relative paths are read from the layout file's folder, {tmp_path})"]


def test_tabs_before_comments_and_line_ends_are_space():
    """YAML 1.2 (and editors) take tabs as the space before a comment or at a line's end; PyYAML stops there."""
    layout = parse_layout("canvas:\n  preset: fhd\t# full HD\n\t\nlayers:\n  - fill: {color: red}\t \t# red\n"
                          "  - text: {text: \"a\t# b\"}\t\n")
    assert (layout.canvas.width, layout.layers[0].color, layout.layers[1].text) == (1920, (255, 0, 0, 255), "a\t# b")


@pytest.mark.parametrize("text", SCHEMA_ACCEPTED)
def test_schema_accepts_what_the_loader_accepts(text):
    parse_layout(text)
    assert schema_errors(text) == []


@pytest.mark.parametrize("text", SCHEMA_REJECTED)
def test_schema_rejects_what_it_can_of_what_the_loader_rejects(text):
    with pytest.raises(LayoutError):
        parse_layout(text)
    assert schema_errors(text) != []


@pytest.mark.parametrize("size, loads, schema_takes", [
    ("1", True, True), ("1.", True, True), ("'1'", True, True), ("+1px", True, True), ("01.5px", True, True),
    ("2pt", True, True), ("0.99", False, False), ("'0.99'", False, False), ("0.5px", False, False),
    (".5", False, False), ("0px", False, False),
    ("0.2pt", False, True)])  # in pt, mm, cm or in: at the canvas's dpi, which only the loader knows
def test_schema_takes_a_text_size_of_at_least_1_px_as_the_loader(size, loads, schema_takes):
    text = f"canvas: {{preset: a4, dpi: 72}}\nlayers: [{{text: {{text: hi, size: {size}}}}}]\n"
    try:
        parse_layout(text)
    except LayoutError:
        assert not loads
    else:
        assert loads
    assert (schema_errors(text) == []) == schema_takes


def test_schema_says_a_spans_default_dpi():
    """The hover text of canvas.dpi: in a span the default is the densest monitor's, not 300 or 72."""
    assert layout_schema()["$defs"]["canvas"]["properties"]["dpi"]["description"] == (
        "pixels per inch (default 300 for physical sizes, else 72; in a span, the densest monitor's, rounded)")


def test_schema_takes_dates_in_variables_as_python_reads_them():
    """yaml.safe_load reads 2024-06-21 as a date; a variable's value may be any scalar."""
    jsonschema = pytest.importorskip("jsonschema")
    data = yaml.safe_load("canvas: {preset: fhd}\nvariables: {d: 2024-06-21}\n" + FILL)
    jsonschema.validate(data, layout_schema(), cls=jsonschema.Draft202012Validator)


def test_synonyms_name_real_keys_and_values():
    """The hints for other tools' words point at keys, values and layer types that exist."""
    tables = [table for table, _ in LAYER_TYPES.values()] + [
        layout_module.CANVAS_KEYS, layout_module.GRID_KEYS, layout_module.MONITOR_KEYS, layout_module.SPAN_KEYS,
        layout_module.OUTPUT_KEYS, layout_module.BOX_KEYS, layout_module.CELL_KEYS, layout_module.STROKE_KEYS,
        layout_module.SHADOW_KEYS, TOP_KEYS]
    keys = {key for table in tables for key in table}
    values = {choice for table in tables for spec in table.values()
              for kind in (spec.kind, getattr(spec.kind, "item", None)) if isinstance(kind, layout_module.Enum)
              for choice in kind.choices}
    assert {k for targets in layout_module.KEY_SYNONYMS.values() for k in targets} <= keys
    assert {key for key, _ in layout_module.KEY_NOTES.values()} <= keys
    assert set(layout_module.KEY_NOTES) & keys == {"orientation"}  # the canvas's, not a monitor's
    assert {v for targets in layout_module.VALUE_SYNONYMS.values() for v in targets} <= values
    assert {t.split(":")[0] for t in layout_module.LAYER_SYNONYMS.values()} <= set(LAYER_TYPES)
    # words that are keys in one table and hints in another: canvas width and height vs region w and h; shape fill
    assert set(layout_module.KEY_SYNONYMS) & keys == {"width", "height", "w", "h", "fill"}


def test_samplers_match_sampling():
    sampling = pytest.importorskip("studio.sampling")
    assert layout_module.SAMPLERS == tuple(sampling.SAMPLERS)


def test_poster_example_darkens_into_the_bleed():
    """poster-a2's gradient behind the text covers the bleed too: no hard edge where the poster is cut."""
    from studio.spec import GradientLayer

    layout = load_layout(ROOT / "layouts" / "poster-a2.yaml")
    gradient = next(layer for layer in layout.layers if isinstance(layer, GradientLayer))
    assert resolve(gradient.region, layout.canvas, layout.grids) == Box(
        0, 0, layout.canvas.full_width, layout.canvas.full_height)
    assert [position for position, _ in gradient.stops] == [0, 0.5, 1]  # clear down to the middle


def test_a_region_to_the_bleed_edge_in_mm_fits_whatever_the_dpi():
    """3 mm of bleed at 70 dpi is 9 px (8.27 rounded up); a region from -3mm reaches the same edge, not beyond."""
    text = ("canvas: {{preset: a5, dpi: 70, bleed: 3mm}}\n"
            "layers: [{{fill: {{color: red, region: {{x: {x}, y: -3mm, w: 154mm, h: 216mm}}}}}}]\n")
    layout = parse_layout(text.format(x="-3mm"))
    assert layout.canvas.bleed == 9
    assert resolve(layout.layers[0].region, layout.canvas, {}) == Box(0, 0, 426, 597)  # the full raster
    with pytest.raises(LayoutError, match="x = -11.0236 px is left of the canvas \\(from -9 px\\)"):
        parse_layout(text.format(x="-4mm"))


def test_a_layout_from_python_values():
    """parse_layout takes a dict as it takes YAML text, and variables as text or numbers; None, a bool or bytes
    are said to be what they are."""
    from studio.errors import InputError
    from studio.layout import parse_layout

    text = ("canvas: {width: 64, height: 32}\nvariables: {title: Hi, size: 10}\n"
            "layers:\n  - text: {text: '{title}', size: '{size}'}\n")
    layout = parse_layout(text, variables={"size": 12})
    assert (layout.layers[0].text, layout.layers[0].size) == ("Hi", 12)
    assert layout.variables == {"title": "Hi", "size": "12"}
    assert parse_layout({"canvas": {"width": 64, "height": 32, "background": "#fff"},
                         "layers": [{"text": {"text": "yes"}}]}).layers[0].text == "yes"
    with pytest.raises(LayoutError) as info:
        parse_layout({"canvas": {"width": 64, "height": 32}, "layers": [{"text": {"text": "a", "align": "centre"}}]})
    assert info.value.errors == ["<string>:7: layers[0].text.align: 'centre' is not one of left, center, right (did you "
                                 "mean 'center'?)"]  # the line of the dict's YAML
    with pytest.raises(LayoutError) as info:
        parse_layout(text, variables={"title": None})
    assert info.value.errors == ["<string>:2: variables.title: is given no value (null, None): give it text or a "
                                 "number, or leave it out for the file's default"]
    with pytest.raises(InputError, match=r"^variables\['title'\]: True is not a value \(give text, or a number\)$"):
        parse_layout(text, variables={"title": True})
    with pytest.raises(TypeError, match="^parse_layout takes YAML text \\(str\\) or a dict, not bytes$"):
        parse_layout(text.encode())


def test_a_layout_from_numpy_numbers_and_paths(tmp_path):
    """A dict's and the variables' numpy numbers are the numbers they equal, a dict's os.PathLike its path and a
    tuple a list (yaml.safe_dump refused them: RepresenterError); a value YAML has no form for is an InputError at
    its key path."""
    import numpy as np

    from studio.errors import InputError

    Image.new("RGB", (4, 4)).save(tmp_path / "logo.png")
    layout = parse_layout({"canvas": {"width": np.int64(256), "height": np.float32(128)},
                           "layers": [{"fill": {"color": (np.uint8(1), 2, 3)}},
                                      {"image": {"path": tmp_path / "logo.png", "opacity": np.float64(0.5)}},
                                      {"text": {"text": np.str_("hi")}}]})
    assert (layout.canvas.width, layout.canvas.height, layout.layers[0].color) == (256, 128, (1, 2, 3, 255))
    assert (layout.layers[1].path, layout.layers[1].opacity, layout.layers[2].text) == (
        str(tmp_path / "logo.png"), 0.5, "hi")
    text = "canvas: {width: 64, height: 32}\nvariables: {size: 10}\nlayers:\n  - text: {text: a, size: '{size}'}\n"
    assert parse_layout(text, variables={"size": np.int64(12)}).layers[0].size == 12
    assert parse_layout(text, variables={"size": np.float32(12.5)}).variables == {"size": "12.5"}
    with pytest.raises(InputError) as info:
        parse_layout({"canvas": {"width": 64, "height": 32}, "layers": [{"text": {"text": b"a"}}]}, "card")
    assert str(info.value) == ("card: layers[0].text.text: b'a' (bytes) is no layout value (give text, a number, "
                               "true/false, a list or a dict)")
    with pytest.raises(InputError, match=r"^variables\['size'\]: array\(\[1\]\) is not a value"):
        parse_layout(text, variables={"size": np.array([1])})


def test_a_source_given_as_a_path_is_its_name_and_other_kinds_are_refused(tmp_path):
    """parse_layout's source may be a Path (an AttributeError: no startswith); a source or variables of another
    kind is an InputError in one line (load_layout(path, [...]): an AttributeError)."""
    from studio.errors import InputError

    text = "canvas: {width: 8, height: 8}\nlayers: [fill: {color: red}]\n"
    assert parse_layout(text, Path("posters/a.yaml")).source == "posters/a.yaml"
    with pytest.raises(InputError, match=r"^source: 3 is not a name \(give text, or a Path\)$"):
        parse_layout(text, 3)
    (tmp_path / "a.yaml").write_text(text)
    with pytest.raises(InputError, match=r"^variables: \['steps'\] is not a dict of name -> value \(text, or a "
                                         r"number\)$"):
        load_layout(tmp_path / "a.yaml", ["steps"])


@pytest.mark.parametrize("body, unused", [
    ('layers:\n  - text: {text: "{title}"}\n', ("tint", "note")),
    ('layers:\n  - text: {text: "{title} {note}", color: "{tint}"}\n', ()),
    # in a comment, in an escape, in the variables block: not used
    ('layers:\n  - text: {text: "{title} {{{{note}}}}"}  # {tint} later\n', ("tint", "note")),
    # in output.name, through an alias: used
    ('output: {name: "poster-{note}"}\nlayers:\n  - text: &t {text: "{title}", color: "{tint}"}\n  - text: *t\n', ()),
    # after a tab before a comment (which PyYAML alone refuses): a comment still
    ('layers:\n  - text: {text: "{title}"}\t# {tint} later\n', ("tint", "note")),
])
def test_unused_variables_are_those_no_value_outside_the_variables_block_fills_in(body, unused):
    text = 'canvas: {width: 64, height: 48}\nvariables: {tint: "#000", title: Hi, note: "{title}"}\n' + body
    assert parse_layout(text).unused_variables == unused
    assert parse_layout(text, variables={"note": "x"}).unused_variables == unused  # whatever value it is given
