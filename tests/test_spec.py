"""Layouts built in code (studio.spec) -> check.check_layout: what the loader gives passes, what it refuses is
refused with one line per problem, and the checker's limits and choices are the loader's."""

import dataclasses
from pathlib import Path

import pytest

from studio import check
from studio import layout as loader
from studio import spec
from studio.check import check_layout
from studio.errors import InputError
from studio.geometry import span_canvas
from studio.layout import load_layout
from studio.plan import plan_layout
from studio.spec import (Canvas, FillLayer, GenerateLayer, GradientLayer, Grid, ImageLayer, Layout, Monitor, Output,
                         Region, Shadow, ShapeLayer, Span, TextLayer)

ROOT = Path(__file__).resolve().parents[1]
C = Canvas(200, 100)
FILL = FillLayer((1, 2, 3, 255))
BW = ((0.0, (0, 0, 0, 255)), (1.0, (255, 255, 255, 255)))
MONITORS = (Monitor("left", 1920, 1080, 531, 299), Monitor("right", 1920, 1080, 531, 299))
SPAN = Span(MONITORS, (20.0,))  # span_canvas: 3912 x 1080
G3 = {"g": Grid("g", 1, 3)}


def wall(monitor: Monitor, **kw) -> Layout:
    """SPAN's canvas with `monitor` in place of its second one."""
    return Layout("wall", Canvas(3912, 1080), (FILL,), span=Span((MONITORS[0], monitor), (20.0,)), **kw)


def card(*layers, canvas=C, **kw) -> Layout:
    return Layout("card", canvas, layers or (FILL,), **kw)


def cell(**kw) -> FillLayer:
    return FillLayer((1, 2, 3, 255), region=Region("cell", grid="g", **kw))


def problems(layout) -> list[str]:
    with pytest.raises(InputError) as e:
        check_layout(layout)
    return str(e.value).splitlines()


# -- what passes ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted((ROOT / "layouts").glob("*.yaml")), ids=lambda p: p.name)
def test_the_loaders_layouts_pass(path):
    check_layout(load_layout(path))


def test_layouts_built_in_code_pass(tmp_path):
    """The example of examples/layout_in_code.py, lists where tuples are expected (not colours), numpy floats
    (floats), a span on its own canvas, cells of grids, a grid in a cell of an earlier grid, every layer type."""
    import numpy as np
    from PIL import Image

    logo = tmp_path / "logo.png"
    Image.new("RGB", (4, 4)).save(logo)

    check_layout(Layout(
        source="title-card",
        canvas=Canvas(width=1920, height=1080, safe_margin=60, background=(12, 16, 28, 255)),
        layers=(
            GenerateLayer("aurora over a frozen lake, long exposure, stars", seed=5, steps=20),
            GradientLayer(stops=((0.0, (12, 16, 28, 0)), (1.0, (12, 16, 28, 220))),
                          region=Region("percent", 0, 60, 100, 40)),
            TextLayer("Northern Lights", size=120, color=(255, 255, 255, 255), region=Region("percent", 5, 70, 90, 20),
                      align="center", valign="middle", shrink_to_fit=True, shadow=Shadow(dx=4, dy=4, blur=6)),
        ),
        output=Output(formats=("png", "jpeg"), name="title-card")))
    grids = {"g": Grid("g", 2, 3, gutter=[4, 8], column_weights=[1, 2, 1]),
             "inner": Grid("inner", 2, 2, region=Region("cell", grid="g", row=1, column=1))}
    check_layout(Layout("code", Canvas(300, 200, bleed=3), [
        FillLayer((0, 0, 0, 255), region=Region("cell", grid="g", column=1, column_span=2), opacity=np.float64(0.5)),
        GradientLayer(stops=[[0, (0, 0, 0, 255)], [1, (255, 255, 255, 0)]], kind="radial"),
        ShapeLayer("line", Region("px", -3, 50, 306, 0), stroke=(255, 0, 0, 255), stroke_width=2),
        ShapeLayer("line", Region("px", 9.6, 0, 0.5, 10), stroke=(255, 0, 0, 255), stroke_width=1),  # no width
        FillLayer((0, 0, 0, 255), region=Region("px", 0.3, 0, 0.4, 10)),  # column 0
        ShapeLayer("rect", Region("cell", grid="inner", row=1, column=1), fill=(9, 9, 9, 255), radius=3),
        TextLayer("x", font=None, region=Region("full")),
        ImageLayer(str(logo), fit="contain"),
    ], grids=grids, output=Output(formats=["png", "pdf"])))
    check_layout(Layout("wall", Canvas(*span_canvas(SPAN)[:2]), (FILL,), span=SPAN))
    check_layout(Layout("one", Canvas(*span_canvas(Span(MONITORS[:1], ()))[:2]), (FILL,),
                        span=Span(MONITORS[:1], ())))


# -- what is refused, one problem at a time -----------------------------------------------------------------------

BAD = [  # (layout, the exact message)
    (card(GradientLayer(stops=BW, kind="conic")),
     "card: layers[0] (GradientLayer).kind: 'conic' is not one of linear, radial"),
    (card(GradientLayer(stops=(BW[1], BW[0]))),
     "card: layers[0] (GradientLayer).stops: positions must not decrease: 0 comes after 1"),
    (card(GradientLayer(stops=())),
     "card: layers[0] (GradientLayer).stops: expected at least 2 (position, colour) stops, got 0 stops"),
    (card(GradientLayer(stops=((0, "#000"), (1, (0, 0, 0, 255))))),
     "card: layers[0] (GradientLayer).stops[0][1]: expected an RGBA colour, a tuple of 4 whole numbers 0..255, got "
     "'#000' (text); PIL.ImageColor.getcolor('#000', 'RGBA') reads text colours"),
    (card(GradientLayer(stops=BW, kind="radial", angle=45)),
     "card: layers[0] (GradientLayer).angle: 45 degrees: a radial gradient has no angle (it spreads from its "
     "region's centre); leave angle at 90 or make the gradient linear"),
    (card(canvas=Canvas(200, 100, bleed=-10)), "card: canvas.bleed: must be at least 0, got -10"),
    (card(canvas=Canvas(200, 100, safe_margin=-10)), "card: canvas.safe_margin: must be at least 0, got -10"),
    (card(canvas=Canvas(200, 100, safe_margin=50)),
     "card: canvas.safe_margin: 50 px on each side leaves no safe area in 200 x 100 px"),
    (card(canvas=Canvas(width="200", height=100)), "card: canvas.width: expected a whole number, got '200' (text)"),
    (card(canvas=Canvas(width=200.5, height=100)), "card: canvas.width: expected a whole number, got 200.5 (a number)"),
    (card(canvas=Canvas(40000, 100)),
     "card: canvas: 40000 x 100 px (bleed included) is too large: at most 32768 px per side"),
    (card(canvas=Canvas(200, 100, dpi=0)), "card: canvas.dpi: 0 is out of range 1..10000"),
    (card(canvas=Canvas(200, 100, background=(1, 2, 3))),
     "card: canvas.background: expected an RGBA colour, a tuple of 4 whole numbers 0..255, got (1, 2, 3) (a tuple); "
     "add the alpha: (1, 2, 3, 255)"),
    (card(cell(column=-1), grids={"g": Grid("g", 1, 4)}),
     "card: layers[0] (FillLayer).region.column: must be at least 0, got -1"),
    (card(cell(row=5), grids=G3),
     "card: layers[0] (FillLayer).region.row: row 5 out of range: grid 'g' has 1 row (0..0)"),
    (card(cell(column=2, column_span=2), grids=G3),
     "card: layers[0] (FillLayer).region.column: columns 2..3 out of range: grid 'g' has 3 columns (0..2)"),
    (card(FillLayer((1, 2, 3, 255), region=Region("cell", grid="panel")), grids={"panels": Grid("panels", 1, 3)}),
     "card: layers[0] (FillLayer).region.grid: no grid 'panel' (did you mean 'panels'?) (grids: panels)"),
    (card(cell()), "card: layers[0] (FillLayer).region.grid: no grid 'g' (grids: none)"),
    (card(cell(), grids={"g": Grid("g", 0, 3)}), "card: grids['g'].rows: 0 is out of range 1..1000"),
    (card(cell(), grids={"g": Grid("g", 1, 3, gutter=500)}),
     "card: grids['g']: 1 x 3 cells with 500 px gutters do not fit in 200 x 100 px"),
    (card(cell(), grids={"g": Grid("g", 1, 3, column_weights=(1, 2))}),
     "card: grids['g'].column_weights: 2 weights for 3 columns (one each, or none for equal columns)"),
    (card(cell(), grids=[Grid("g", 1, 3)]),
     "card: grids: expected a dict of name -> Grid, got [Grid(name='g', rows=1, columns=3, gutter=(0, 0), region=... "
     "(a list)"),
    (card(grids={"a": Grid("b", 1, 3)}), "card: grids['a'].name: 'b' is not its key in grids, 'a'"),
    (card(grids={"a": Grid("a", 1, 3, region=Region("cell", grid="b")), "b": Grid("b", 1, 1)}),
     "card: grids['a'].region.grid: 'b' comes later in grids: a grid's region may only be a cell of an earlier grid"),
    (card(FillLayer((1, 2, 3, 255), region=Region("px", "0", 0, 10, 10))),
     "card: layers[0] (FillLayer).region.x: expected a number, got '0' (text)"),
    (card(FillLayer((1, 2, 3, 255), region=Region("px", 10 ** 400, 0, 10, 10))),  # no float: not OverflowError
     "card: layers[0] (FillLayer).region.x: 1e+400 is out of range: a number is at most 1.79769e+308"),
    (card(FillLayer((1, 2, 3, 255), region=Region("pixels", 0, 0, 10, 10))),
     "card: layers[0] (FillLayer).region.kind: 'pixels' is not one of full, safe, px, percent, cell"),
    (card(FillLayer((1, 2, 3, 255), region=Region(x=10, y=10, w=50, h=50))),
     "card: layers[0] (FillLayer).region.x: 10 is not used by a 'full' region: x, y, w and h are for kind 'px' or "
     "'percent'"),
    (card(FillLayer((1, 2, 3, 255), region=Region("percent", 50, 50, 100, 100))),
     "card: layers[0] (FillLayer).region: the region is outside the canvas: x + w = 300 px is right of the canvas "
     "(to 200 px)"),
    (card(FillLayer((1, 2, 3, 255), region=Region("px", 0, 0, -10, 10))),
     "card: layers[0] (FillLayer).region.w: must be greater than 0, got -10 px"),
    # under 1 px once its edges are rounded, as plan and compose round them: the layer drew nothing
    (card(GenerateLayer("x", region=Region("px", 9.6, 0, 0.5, 10))),
     "card: layers[0] (GenerateLayer).region: the region is 0 x 10 px once its edges are rounded to whole pixels "
     "(x = 9.6 px and x + w = 10.1 px both round to 10); a region is at least 1 px wide and high"),
    (card(TextLayer("Hi", region=Region("percent", 0, 10, 50, 0.3))),  # 0.3% of 100 px
     "card: layers[0] (TextLayer).region: the region is 100 x 0 px once its edges are rounded to whole pixels "
     "(y = 10 px and y + h = 10.3 px both round to 10); a region is at least 1 px wide and high"),
    (card(ShapeLayer("ellipse", Region("px", -2.8, 0, 0.2, 10), fill=(0, 0, 0, 255)),
          canvas=Canvas(200, 100, bleed=3)),  # in the bleed an edge rounds outward
     "card: layers[0] (ShapeLayer).region: the region is 0 x 10 px once its edges are rounded to whole pixels "
     "(x = -2.8 px and x + w = -2.6 px both round to -3); a region is at least 1 px wide and high"),
    (card(cell(), grids={"g": Grid("g", 1, 3, region=Region("px", 0, 0, 0.4, 10))}),  # once: not again for the cell
     "card: grids['g'].region: the region is 0 x 10 px once its edges are rounded to whole pixels (x = 0 px and "
     "x + w = 0.4 px both round to 0); a region is at least 1 px wide and high"),
    # a line of no width is the column at x (of no height the row at y): x: 100% is one past the last
    (card(ShapeLayer("line", Region("percent", 100, 0, 0, 100), stroke=(0, 0, 0, 255), stroke_width=1)),
     "card: layers[0] (ShapeLayer).region: the region is outside the canvas: with w: 0 the region is the column at "
     "x, and x = 200 px is past the last column, 199 px (x: 100% is one past it; write x: 199px)"),
    (card(ShapeLayer("line", Region("px", 0, 103.6, 200, 0), stroke=(0, 0, 0, 255), stroke_width=1),
          canvas=Canvas(200, 100, bleed=4)),  # 103.6 px is row 104, past the bleed's last, 103
     "card: layers[0] (ShapeLayer).region: the region is outside the canvas: with h: 0 the region is the row at y, "
     "and y = 103.6 px is past the last row, 103 px (write y: 103px)"),
    (card(FillLayer((1, 2, 3, 255), region="full")),
     "card: layers[0] (FillLayer).region: expected a Region, got 'full' (text)"),
    (card(GenerateLayer("x", fit="stretch")),
     "card: layers[0] (GenerateLayer).fit: 'stretch' is not one of cover, contain"),
    (card(GenerateLayer("x", strategy="tile")),
     "card: layers[0] (GenerateLayer).strategy: 'tile' is not one of auto, direct, upscale"),
    (card(GenerateLayer("x", guidance="4.5")),
     "card: layers[0] (GenerateLayer).guidance: expected a number, got '4.5' (text)"),
    (card(GenerateLayer("x", seed=-1, name="sky")),
     "card: layers[0] (GenerateLayer 'sky').seed: -1 is out of range 0..4294967295"),
    (card(GenerateLayer("x", seed=10 ** 5000)),  # str() of it raised ValueError (over 4300 digits)
     "card: layers[0] (GenerateLayer).seed: 1.00000e+5000 is out of range 0..4294967295"),
    (card(GenerateLayer("x", seed="1")),
     "card: layers[0] (GenerateLayer).seed: expected a whole number, got '1' (text)"),
    (card(GenerateLayer("x", steps=True)),
     "card: layers[0] (GenerateLayer).steps: expected a whole number, got True (a boolean)"),
    (card(GenerateLayer(None)), "card: layers[0] (GenerateLayer).prompt: expected text, got None"),
    (card(GenerateLayer("x", sampler="euler_a")),
     "card: layers[0] (GenerateLayer).sampler: 'euler_a' is not one of dpm++, ddim, euler (did you mean 'euler'?)"),
    (card(GenerateLayer("x", model="")),
     "card: layers[0] (GenerateLayer).model: expected a model folder or hub id, got ''"),
    (card(TextLayer("Hi", size="20")), "card: layers[0] (TextLayer).size: expected a number, got '20' (text)"),
    (card(TextLayer("Hi", size=0)), "card: layers[0] (TextLayer).size: must be greater than 0, got 0"),
    (card(TextLayer("Hi", size=0.5)),
     "card: layers[0] (TextLayer).size: 0.5 px is too small; a text size is at least 1 px"),
    (card(TextLayer("Hi", size=40000)),
     "card: layers[0] (TextLayer).size: 40000 px is larger than any canvas: at most 32768 px"),
    (card(TextLayer("Hi", size=float("nan"))), "card: layers[0] (TextLayer).size: expected a finite number, got nan"),
    (card(TextLayer("Hi", align="centre")),
     "card: layers[0] (TextLayer).align: 'centre' is not one of left, center, right (did you mean 'center'?)"),
    (card(TextLayer("Hi", valign="center")),
     "card: layers[0] (TextLayer).valign: 'center' is not one of top, middle, bottom (did you mean align='center'?)"),
    (card(TextLayer("Hi", color=(255, 0, 0))),
     "card: layers[0] (TextLayer).color: expected an RGBA colour, a tuple of 4 whole numbers 0..255, got (255, 0, 0) "
     "(a tuple); add the alpha: (255, 0, 0, 255)"),
    (card(TextLayer("Hi", color="#fff")),
     "card: layers[0] (TextLayer).color: expected an RGBA colour, a tuple of 4 whole numbers 0..255, got '#fff' "
     "(text); PIL.ImageColor.getcolor('#fff', 'RGBA') reads text colours"),
    (card(FillLayer([1, 2, 3, 4])),
     "card: layers[0] (FillLayer).color: expected an RGBA colour, a tuple of 4 whole numbers 0..255, got [1, 2, 3, 4] "
     "(a list); give it as a tuple: (1, 2, 3, 4)"),
    (card(FillLayer((300, -5, 0, 255))),
     "card: layers[0] (FillLayer).color: expected an RGBA colour, a tuple of 4 whole numbers 0..255, got "
     "(300, -5, 0, 255) (a tuple)"),
    (card(TextLayer("Hi", shadow=Shadow(color="#000"))),
     "card: layers[0] (TextLayer).shadow.color: expected an RGBA colour, a tuple of 4 whole numbers 0..255, got "
     "'#000' (text); PIL.ImageColor.getcolor('#000', 'RGBA') reads text colours"),
    (card(TextLayer("Hi", wrap="no")), "card: layers[0] (TextLayer).wrap: expected True or False, got 'no' (text)"),
    (card(TextLayer(None)), "card: layers[0] (TextLayer).text: expected text, got None"),
    (card(TextLayer("Hi", font="NoSuchFontAnywhere")),
     "card: layers[0] (TextLayer).font: no such font 'NoSuchFontAnywhere' (a .ttf/.otf path or an installed family)"),
    (card(TextLayer("Hi", font="Deja\0Vu")),  # not ValueError from fc-match
     "card: layers[0] (TextLayer).font: 'Deja\\x00Vu' has a control character, which no path, font or model name may "
     "hold"),
    (card(GenerateLayer("x", model="a/b\0c")),  # not a hub id
     "card: layers[0] (GenerateLayer).model: 'a/b\\x00c' has a control character, which no path, font or model name "
     "may hold"),
    (card(ImageLayer("x\0.png")),
     "card: layers[0] (ImageLayer).path: 'x\\x00.png' has a control character, which no path, font or model name may "
     "hold"),
    (card(ImageLayer("/dev/null")),
     "card: layers[0] (ImageLayer).path: '/dev/null' is a device, pipe or socket, not an image file"),
    (card(ImageLayer("no-such-logo.png")),
     "card: layers[0] (ImageLayer).path: no such image file 'no-such-logo.png' (relative paths are read from the "
     "current folder)"),
    (card(FillLayer((1, 2, 3, 255), opacity=-1)), "card: layers[0] (FillLayer).opacity: -1 is out of range 0..1"),
    (card(FillLayer((1, 2, 3, 255), opacity="0.5")),
     "card: layers[0] (FillLayer).opacity: expected a number, got '0.5' (text)"),
    (card(ShapeLayer("rect", Region("full"))),
     "card: layers[0] (ShapeLayer): a rect with neither fill nor stroke draws nothing"),
    (card(ShapeLayer("line", Region("px", 0, 10, 100, 0), fill=(0, 0, 0, 255))),
     "card: layers[0] (ShapeLayer).fill: a line has no fill; give it a stroke colour and a stroke_width"),
    (card(ShapeLayer("rect", Region("full"), stroke=(0, 0, 0, 255))),
     "card: layers[0] (ShapeLayer).stroke_width: a stroke needs a width greater than 0, got 0"),
    (card(ShapeLayer("ellipse", Region("full"), fill=(0, 0, 0, 255), radius=5)),
     "card: layers[0] (ShapeLayer).radius: applies to rect only"),
    (card(FillLayer((1, 2, 3, 255), name="bg"), FillLayer((1, 2, 3, 255), name="bg")),
     "card: layers[1] (FillLayer 'bg').name: 'bg' is already the name of layers[0]"),
    (card({"text": "Hi"}),
     "card: layers[0]: expected a layer (GenerateLayer, ImageLayer, TextLayer, ShapeLayer, FillLayer, GradientLayer), "
     "got {'text': 'Hi'} (a dict)"),
    (Layout("card", C, ()), "card: layers: expected at least 1 layer, got none"),
    (Layout("wall", Canvas(3840, 1080), (FILL,), span=SPAN),
     "wall: canvas: 3840 x 1080 px is not the span's 3912 x 1080 px: give it the size geometry.span_canvas(span) "
     "returns"),
    (Layout("wall", Canvas(3912, 1080, bleed=5), (FILL,), span=SPAN), "wall: canvas.bleed: a span has no bleed, got 5"),
    (Layout("wall", Canvas(4021, 1080), (FILL,), span=Span(MONITORS, (20.0, 30.0, 40.0))),
     "wall: span.bezels_mm: 2 monitors have 1 gap; got 3 bezels (give one per gap)"),
    (Layout("wall", Canvas(3912, 1080), (FILL,), span=Span(MONITORS, (20.0,), align="middle")),
     "wall: span.align: 'middle' is not one of top, center, bottom"),
    (Layout("wall", Canvas(100, 100), (FILL,), span=Span((), ())),
     "wall: span.monitors: expected at least 1 monitor, got 0"),
    (Layout("wall", Canvas(100, 100), (FILL,), span=Span((Monitor("a", 100, 100, 0, 10),), ())),
     "wall: span.monitors[0].width_mm: must be greater than 0, got 0"),
    (Layout("wall", Canvas(192, 108), (FILL,), span=Span((Monitor("led", 192, 108, 16000, 9000),), ())),
     "wall: span.monitors[0].width_mm: 192 px across 16000 mm is 0.3 dpi, which rounds to 0: at least 1 (a picture "
     "narrower than 9753.6 mm)"),
    # a rotated monitor given its datasheet size (only width_mm is used: it was 531 mm wide and 944 mm high)
    (wall(Monitor("side", 1080, 1920, 531, 299)),
     "wall: span.monitors[1]: 531 x 299 mm (width_mm x height_mm) is 1.78:1 but the monitor is 1080x1920 px "
     "(0.562:1): did you mean width_mm=299, height_mm=531?"),
    (wall(Monitor("right", 1920, 1080, 531, 250)),
     "wall: span.monitors[1]: 531 x 250 mm (width_mm x height_mm) is 2.12:1 but the monitor is 1920x1080 px "
     "(1.78:1); pixels are square, so a picture 531 mm wide is 298.7 mm high"),
    (wall(Monitor(" ", 1920, 1080, 531, 299)),
     "wall: span.monitors[1].name: expected a name (monitor names are used in file names), got ' '"),
    (wall(MONITORS[0]),
     "wall: span.monitors[1].name: 'left' is already the name of span.monitors[0] (names used in file names differ "
     "in more than case)"),
    (card(output=Output(formats="png")), "card: output.formats: expected a tuple, got 'png' (text)"),
    (card(output=Output(formats=("JPEG",))),
     "card: output.formats[0]: 'JPEG' is not one of png, jpeg, tiff, pdf (did you mean 'jpeg'?)"),
    (card(output=Output(formats=("png", "png"))), "card: output.formats: 'png' is listed twice"),
    (card(output=Output(formats=("jpeg",), jpeg_quality=500)), "card: output.jpeg_quality: 500 is out of range 1..100"),
    (card(output=Output(name="{layout.__class__}")),  # str.format would name the file "<class 'str'>"
     "card: output.name: write {layout}, not {layout.__class__}: fields take no format, conversion or index"),
    (card(output=Output(name="{seed!r}")),
     "card: output.name: write {seed}, not {seed!r}: fields take no format, conversion or index"),
    (card(output=Output(name="{title}")),
     "card: output.name: {title} is not a field ({layout}, {seed} or {monitor}; write {{ or }} for a brace)"),
    (card(output=Output(name="a}b")), "card: output.name: unmatched '}' in 'a}b' (write }} for a literal brace)"),
    (card(variables={"n": 1}),
     "card: variables['n']: expected text (values are recorded as written), got 1 (a number)"),
    (card(memory_budget="lots"), "card: memory_budget: 'lots' is not a size like 6GiB, 512MiB or 2GB"),
    (Layout(Path("card.yaml"), C, (FILL,)),
     "card.yaml: source: expected text, got PosixPath('card.yaml') (a pathlib.PosixPath)"),
    (card(canvas=Canvas(200.0, 100)), "card: canvas.width: expected a whole number, got 200.0 (a number)"),
    # lone surrogates (os.fsdecode of a name that is no UTF-8) write no file name nor metadata
    (Layout("caf\udce9.yaml", C, (FILL,)),
     "caf\\udce9.yaml: source: \\udce9 is half of a UTF-16 surrogate pair, not a character; write the character "
     "itself"),
    (card(output=Output(name="x\udce9")),
     "card: output.name: \\udce9 is half of a UTF-16 surrogate pair, not a character; write the character itself"),
    (card(variables={"n": "\udcff"}),
     "card: variables['n']: \\udcff is half of a UTF-16 surrogate pair, not a character; write the character itself"),
    (card(TextLayer("a\ud800b")), "card: layers[0] (TextLayer).text: \\ud800 is half of a UTF-16 surrogate pair, not a "
                                  "character; write the character itself"),
    # the files output.name gives are names in the output folder, as the loader checks them
    (card(output=Output(name="a/b")),
     "card: output.name: 'a/b' gives the file name 'a/b', which has a '/' (a name in the output folder: not empty, "
     "'.' or '..', without '/', '\\' or control characters)"),
    (card(output=Output(name="")),
     "card: output.name: '' gives the file name '', which is empty (a name in the output folder: not empty, '.' or "
     "'..', without '/', '\\' or control characters)"),
    (Layout("..", C, (FILL,)),
     "..: output.name: '{layout}' gives the file name '..', which is '..' (a name in the output folder: not empty, "
     "'.' or '..', without '/', '\\' or control characters)"),
    (card(output=Output(name="x" * 300)),
     f"card: output.name: '{'x' * 56}... gives the file name '{'x' * 56}..., which has 300 bytes: at most 232 (the "
     "file system's 255 less the suffixes the exporter adds)"),
    (wall(Monitor("a/b", 1920, 1080, 531, 299)),
     "wall: span.monitors[1].name: 'a/b' gives the file name 'wall-a/b', which has a '/' (a name in the output "
     "folder: not empty, '.' or '..', without '/', '\\' or control characters)"),
    # a monitor's file is not the whole span's, ignoring case (macOS and Windows): {monitor} is 'span' there
    (wall(Monitor("Span", 1920, 1080, 531, 299), output=Output(name="{layout}-{monitor}")),
     "wall: span.monitors[1].name: 'Span' gives the file name 'wall-Span', which differs only in case from the whole "
     "span's 'wall-span' ({monitor} is 'span' there); give the monitor another name"),
    (Layout("wall", Canvas(3912, 1080), (FILL,), span=Span((Monitor("span", 1920, 1080, 531, 299), MONITORS[1]),
                                                              (20.0,)), output=Output(name="{monitor}")),
     "wall: span.monitors[0].name: 'span' gives the file name 'span', which is the whole span's 'span' ({monitor} is "
     "'span' there); give the monitor another name"),
]


@pytest.mark.parametrize("layout,message", BAD, ids=[m.split(": ", 1)[1][:60] for _, m in BAD])
def test_bad_layouts_are_refused_with_one_line(layout, message):
    assert problems(layout) == [message]


def test_not_a_layout():
    with pytest.raises(InputError, match=r"^expected a studio.spec.Layout, got \{'canvas': 1\} \(a dict\)$"):
        check_layout({"canvas": 1})


def test_every_problem_at_once():
    """A problem never hides another, unless it is the cause (a cell of a broken grid is not reported again)."""
    layout = Layout("poster", Canvas(200, 100, bleed=-10, background="#fff"), (
        GenerateLayer("sky", seed=-1, strategy="tile", name="sky"),
        TextLayer("Hi", size="20", align="centre", color=(255, 0, 0)),
        FillLayer((0, 0, 0, 255), region=Region("cell", grid="g", row=9)),  # the grid's own problem
        GradientLayer(stops=(BW[1], BW[0])),
    ), grids={"g": Grid("g", 0, 3)}, output=Output(formats=("webp",)), memory_budget="6")
    assert problems(layout) == [
        "poster: canvas.bleed: must be at least 0, got -10",
        "poster: canvas.background: expected an RGBA colour, a tuple of 4 whole numbers 0..255, got '#fff' (text); "
        "PIL.ImageColor.getcolor('#fff', 'RGBA') reads text colours",
        "poster: grids['g'].rows: 0 is out of range 1..1000",
        "poster: layers[0] (GenerateLayer 'sky').seed: -1 is out of range 0..4294967295",
        "poster: layers[0] (GenerateLayer 'sky').strategy: 'tile' is not one of auto, direct, upscale",
        "poster: layers[1] (TextLayer).size: expected a number, got '20' (text)",
        "poster: layers[1] (TextLayer).color: expected an RGBA colour, a tuple of 4 whole numbers 0..255, got "
        "(255, 0, 0) (a tuple); add the alpha: (255, 0, 0, 255)",
        "poster: layers[1] (TextLayer).align: 'centre' is not one of left, center, right (did you mean 'center'?)",
        "poster: layers[3] (GradientLayer).stops: positions must not decrease: 0 comes after 1",
        "poster: output.formats[0]: 'webp' is not one of png, jpeg, tiff, pdf",
        "poster: memory_budget: '6' has no unit: give one, e.g. 6GiB, 512MiB or 2GB",
    ]


def test_file_names_are_checked_with_the_seed_render_fills_in():
    """{seed} is the first generate layer's, as the loader and render fill it (check_layout filled in 0, so 223
    x's and the largest seed, 233 bytes, passed it and failed render later); an invalid seed is its own problem."""
    from studio.render import output_stems

    name = "x" * 223 + "{seed}"
    layout = card(GenerateLayer("sky", seed=4294967295), output=Output(name=name))
    too_long = "has 233 bytes: at most 232 (the file system's 255 less the suffixes the exporter adds)"
    assert problems(layout) == [f"card: output.name: '{'x' * 56}... gives the file name '{'x' * 56}..., which "
                                f"{too_long}"]
    with pytest.raises(InputError) as e:
        output_stems(layout)
    assert str(e.value) == f"card: output.name '{name}' gives the file name '{'x' * 223}4294967295', which {too_long}"
    with pytest.raises(loader.LayoutError) as e:
        loader.parse_layout(f"canvas: {{width: 64, height: 64}}\nlayers: [generate: {{prompt: sky, seed: 4294967295}}]"
                            f"\noutput: {{name: '{name}'}}\n", "card.yaml")
    assert e.value.errors == [f"card.yaml:3: output.name: '{name}' gives a file name that {too_long}"]
    check_layout(card(GenerateLayer("sky", seed=999999999), output=Output(name=name)))  # 232 bytes
    assert problems(card(GenerateLayer("sky", seed=-1), output=Output(name=name))) == [
        "card: layers[0] (GenerateLayer).seed: -1 is out of range 0..4294967295"]


def test_a_monitor_file_named_as_the_spans_is_refused_where_the_names_are_made():
    """Render refuses the names check_layout does (a layout render is given unchecked, as output_stems is called)."""
    from studio.render import output_stems

    layout = wall(Monitor("Span", 1920, 1080, 531, 299))
    assert output_stems(layout) == ["wall", "wall-left", "wall-Span"]  # {layout} alone: the monitor's are '-<name>'
    with pytest.raises(InputError) as e:
        output_stems(dataclasses.replace(layout, output=Output(name="{layout}-{monitor}")))
    assert str(e.value) == ("wall: output.name '{layout}-{monitor}' gives monitor 'Span' the file name 'wall-Span', "
                            "which differs only in case from the whole span's 'wall-span' ({monitor} is 'span' there)")


# -- plan_layout checks first -----------------------------------------------------------------------------------

def test_plan_layout_checks_before_any_work():
    """Nothing is looked up or planned for a layout that would be drawn wrongly or fail later."""
    with pytest.raises(InputError, match=r"^card: layers\[0\] \(GenerateLayer\)\.seed: -1 is out of range"):
        plan_layout(card(GenerateLayer("x", seed=-1)), model="/no/such/model", budget="1GiB")


def test_a_generation_without_a_model_anywhere():
    layout = card(FILL, GenerateLayer("x", name="sky"))
    with pytest.raises(InputError, match=r"^card: layers\[1\] \(sky\): no model: pass model= \(CLI: --model\) or set "
                                         r"the layout's or the layer's model$"):
        plan_layout(layout, budget="1GiB")


# -- the limits and choices are the loader's --------------------------------------------------------------------

def test_limits_are_the_loaders():
    """Those the checker doesn't import from the loader (MAX_SIDE, MAX_SEED, ... it does) equal its key tables'."""
    assert check.FORMATS == loader.OUTPUT_KEYS["formats"].kind.item.choices
    assert (check.MAX_TRACKS, check.MAX_WEIGHT) == (loader.Tracks.COUNT.hi, loader.Tracks.SIZES.item.hi)


TABLES = [  # spec class, the checker's table, the loader's
    (GenerateLayer, check.GENERATE_FIELDS, loader.GENERATE_KEYS), (ImageLayer, check.IMAGE_FIELDS, loader.IMAGE_KEYS),
    (TextLayer, check.TEXT_FIELDS, loader.TEXT_KEYS), (ShapeLayer, check.SHAPE_FIELDS, loader.SHAPE_KEYS),
    (FillLayer, check.FILL_FIELDS, loader.FILL_KEYS), (GradientLayer, check.GRADIENT_FIELDS, loader.GRADIENT_KEYS),
    (Shadow, check.SHADOW_FIELDS, loader.SHADOW_KEYS), (Canvas, check.CANVAS_FIELDS, loader.CANVAS_KEYS),
    (Monitor, check.MONITOR_FIELDS, loader.MONITOR_KEYS), (Span, check.SPAN_FIELDS, loader.SPAN_KEYS),
    (Grid, check.GRID_FIELDS, loader.GRID_KEYS), (Output, check.OUTPUT_FIELDS, loader.OUTPUT_KEYS),
]


def _inner(kind):
    """A kind without its wrappers: Optional, a list's items, a grid's count of rows (Tracks.COUNT)."""
    for inner in ("kind", "item", "COUNT"):
        while hasattr(kind, inner):
            kind = getattr(kind, inner)
    return kind


BOUNDS = {"Enum": ("choices",), "Int": ("lo", "hi"), "Number": ("lo", "hi", "positive"), "Length": ("minimum",),
          "TextSize": ("minimum",)}
# fields the two read differently by design: the loader reads lengths the spec holds as rounded px, a preset name
# the spec only records, nested mappings the spec holds as fields or dataclasses, and output.name, a pattern whose
# variables the loader has filled in
DIFFERENT = {"Canvas.width", "Canvas.height", "Canvas.bleed", "Canvas.safe_margin", "Canvas.preset", "Grid.gutter",
             "TextLayer.shadow", "ShapeLayer.stroke", "Span.monitors", "Output.name"}


def test_tables_name_every_spec_field_and_bound_them_as_the_loader():
    compared, different = 0, set()
    for cls, ours, theirs in TABLES:
        assert set(ours) == {f.name for f in dataclasses.fields(cls)}, cls.__name__
        for name in set(ours) & set(theirs):
            mine, loaders = _inner(ours[name]), _inner(theirs[name].kind)
            if type(mine).__name__ != type(loaders).__name__:
                different.add(f"{cls.__name__}.{name}")
            elif type(mine).__name__ in BOUNDS:
                values = BOUNDS[type(mine).__name__]
                assert [getattr(mine, v) for v in values] == [getattr(loaders, v) for v in values], \
                    f"{cls.__name__}.{name}"
                compared += 1
    assert different == DIFFERENT
    assert compared >= 30  # ranges and choices compared (the rest: text, booleans, colours, regions)
    assert set(check.LAYER_FIELDS) == {GenerateLayer, ImageLayer, TextLayer, ShapeLayer, FillLayer, GradientLayer}
    assert [f.name for f in dataclasses.fields(Region)] == ["kind", *check.BOX_FIELDS, *check.CELL_FIELDS]
    assert {f.name for f in dataclasses.fields(spec.Layout)} == {
        "source", "canvas", "layers", "grids", "span", "output", "variables", "memory_budget", "model"}


def test_what_the_loader_and_old_code_accepted_passes():
    """A default text size (48 px) on a 32 px canvas, a percent region ending on the bleed's edge (the planner's
    exact arithmetic), numpy numbers in geometry and colours, a gradient stop's colour as a list."""
    import numpy as np

    check_layout(Layout("icon", Canvas(32, 32), (FILL, TextLayer("A", region=Region("full")))))
    check_layout(Layout("pct", Canvas(220, 100, bleed=11), (FillLayer((1, 2, 3, 255),
                                                                      region=Region("percent", 0, 0, 105, 50)),)))
    check_layout(Layout("np", Canvas(np.int64(200), 100), (
        FillLayer(tuple(np.array([1, 2, 3, 255], np.uint8)), region=Region("px", np.int64(10), np.float32(10), 50, 20)),
        TextLayer("hi", size=np.int64(20)),
        GradientLayer(stops=((0, [0, 0, 0, 255]), (1, [255, 255, 255, 255]))))))


def test_a_rotated_monitor_given_as_it_stands_passes():
    """Its size as it stands, and a measured height within 5% of the pixels' aspect (299 x 1920/1080 = 531.6 mm;
    558 mm is 4.97% more): check_layout asks what the loader asks."""
    for height_mm in (531, 558):
        span = Span((MONITORS[0], Monitor("side", 1080, 1920, 299, height_mm)), (20.0,))
        # 850 mm x 1920/531 px per mm (the left monitor's density) = 3073.4 px; 531.56 mm high = 1922.0 px
        assert span_canvas(span)[:2] == (3073, 1922)
        check_layout(Layout("wall", Canvas(3073, 1922), (FILL,), span=span))


def test_monitor_sizes_too_far_apart_to_divide_are_one_line():
    """Finite, positive, and their ratio past a float's range: the one-line error, not a ZeroDivisionError."""
    for width_mm, height_mm in ((597, 1e-320), (597, 1e-310)):
        span = Span((Monitor("a", 2560, 1440, width_mm, height_mm),), ())
        with pytest.raises(InputError, match=r"^wall: span.monitors\[0\]: .* is no picture size for a monitor of "
                                             r"2560x1440 px$"):
            check_layout(Layout("wall", Canvas(2560, 1440), (FILL,), span=span))


def test_fraction_monitor_sizes_are_numbers_in_messages():
    """A monitor's mm as a Fraction (a Real): its aspect problem is the one-line message, with 3.5 for 7/2 (a
    TypeError from Fraction.__format__ was raised); a size as one is written as a number too."""
    from fractions import Fraction

    span = Span((Monitor("a", 64, 36, Fraction(7, 2), 340), Monitor("b", 64, 36, 600, 340)), (10,))
    assert problems(Layout("wall", Canvas(64, 64), (FILL,), span=span))[0] == (
        "wall: span.monitors[0]: 3.5 x 340 mm (width_mm x height_mm) is 0.0103:1 but the monitor is 64x36 px "
        "(1.78:1); pixels are square, so a picture 3.5 mm wide is 1.969 mm high")
    tiny = Span((Monitor("a", 64, 36, 600, Fraction(1, 10 ** 400)),), ())  # a float of 0: no ZeroDivisionError
    [problem] = problems(Layout("wall", Canvas(64, 64), (FILL,), span=tiny))
    assert problem.endswith("(width_mm x height_mm) is no picture size for a monitor of 64x36 px")
    assert problems(card(TextLayer("Hi", size=Fraction(-1, 2)))) == [
        "card: layers[0] (TextLayer).size: must be greater than 0, got -0.5"]
    check_layout(Layout("wall", Canvas(*span_canvas(SPAN)[:2]), (FILL,),
                        span=Span((Monitor("left", 1920, 1080, Fraction(531), Fraction(299)), MONITORS[1]), (20,))))


def test_a_font_is_checked_as_the_loader_checks_it(tmp_path):
    """check_layout and the loader share `layout.font_problem`: a file that is no font, a face its file lacks and a
    blank name are refused in the same words (check_layout passed them, and proof failed on drawing after making
    its folder); a font file given as a Path is its text."""
    from PIL import Image, ImageFont

    from studio.render import proof

    (tmp_path / "ok.ttf").write_bytes(ImageFont.load_default(10).font_bytes)
    (tmp_path / "bad.ttf").write_text("no font")
    source = str(tmp_path / "card.yaml")
    for font, message in [("bad.ttf", "'bad.ttf' is not a font Pillow can read (unknown file format)"),
                          ("ok.ttf#7", "'ok.ttf#7': no face 7: the file has 1, #0"),
                          ("", "expected a font file or an installed family, got ''; leave font out for the bundled "
                               "font"),
                          ("   ", "expected a font file or an installed family, got '   '; leave font out for the "
                                  "bundled font")]:
        assert problems(Layout(source, C, (TextLayer("Hi", font=font),))) == [
            f"{source}: layers[0] (TextLayer).font: {message}"]
        (tmp_path / "card.yaml").write_text(f"canvas: {{width: 200, height: 100}}\nlayers: [text: {{text: Hi, "
                                            f"font: '{font}'}}]\n")
        with pytest.raises(loader.LayoutError) as info:
            load_layout(tmp_path / "card.yaml")
        assert info.value.errors == [f"{source}:2: layers[0].text.font: {message}"]
    assert problems(card(TextLayer("Hi", font=b"ok.ttf"))) == [
        "card: layers[0] (TextLayer).font: expected a font file or family (text or a Path), got b'ok.ttf' (a bytes)"]
    drawn = []
    for font in (str(tmp_path / "ok.ttf"), tmp_path / "ok.ttf"):
        path = proof(card(TextLayer("Hi", size=30, font=font)), tmp_path / f"{len(drawn)}.png", guides=False)
        with Image.open(path) as image:
            drawn.append(image.tobytes())
    with Image.open(proof(card(TextLayer("Hi", size=30, font="DejaVu Sans")), tmp_path / "d.png",
                          guides=False)) as image:
        assert drawn[0] == drawn[1] != image.tobytes()  # the Path's font, not another


def test_numpy_floats_in_exact_geometry():
    """Percentages, a monitor's mm and bezels taken exactly (geometry.exact): a numpy float too, as a float."""
    import numpy as np

    check_layout(card(FillLayer((1, 2, 3, 255), region=Region("percent", np.float32(10), 0, 50, 50))))
    monitors = (Monitor("left", 1920, 1080, np.float32(531), np.float64(299)), MONITORS[1])
    span = Span(monitors, (np.float32(20),))
    assert span_canvas(span) == span_canvas(SPAN)
    check_layout(Layout("wall", Canvas(*span_canvas(span)[:2]), (FILL,), span=span))


def test_plan_layout_refuses_a_model_of_another_kind():
    for model, got in [(3, "3 (a number)"), (b"/m", "b'/m' (a bytes)"), (["tiny"], "['tiny'] (a list)")]:
        with pytest.raises(InputError) as e:
            plan_layout(card(GenerateLayer("x")), model=model, budget="1GiB")
        assert str(e.value) == f"plan_layout: model: expected a model folder or hub id (text or a Path), got {got}"


def test_proof_without_a_plan_checks_the_layout(tmp_path):
    """proof given no plan (no model needed) checks the layout itself; a plan's layout was checked by plan_layout."""
    from studio.render import proof

    with pytest.raises(InputError, match=r"^card: layers\[0\] \(TextLayer\)\.align: 'centre' is not one of left, "
                                         r"center, right \(did you mean 'center'\?\)$"):
        proof(card(TextLayer("Hi", align="centre")), tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


def test_a_grid_takes_a_numpy_gutter():
    """One gutter for both directions may be a numpy integer (it stayed one, not a pair, and check_layout refused
    it: 'expected a tuple')."""
    import numpy as np

    grid = Grid("g", 1, 2, gutter=np.int64(4))
    assert grid.gutter == (4, 4)
    check_layout(Layout("card", Canvas(64, 64), (FillLayer((1, 2, 3, 255), region=Region("cell", grid="g", column=1)),),
                        grids={"g": grid}))


def test_a_path_like_that_is_no_pathlib_path_is_checked_by_its_path(tmp_path):
    """Its str() is its repr: a blank or a missing file was not seen as one."""
    from tests.util import Fspath

    def checked(path):
        code = spec.Layout(str(tmp_path / "code.yaml"), spec.Canvas(8, 8), (spec.ImageLayer(path),))
        with pytest.raises(InputError) as info:
            check_layout(code)
        return str(info.value).removeprefix(f"{tmp_path / 'code.yaml'}: layers[0] (ImageLayer).path: ")

    assert checked(Fspath("")) == "expected an image file, got ''"
    assert checked(Fspath("nothing.png")) == (f"no such image file 'nothing.png' (relative paths are read from "
                                              f"{tmp_path}, the folder of the layout's source)")
