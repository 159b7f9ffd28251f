"""A Layout built in code -> checked as the loader checks a file: `check_layout(layout)` raises one InputError
listing every problem, one line each, `source: field.path: what is wrong`:

    title-card: layers[2] (TextLayer).align: 'centre' is not one of left, center, right (did you mean 'center'?)
    title-card: canvas.bleed: must be at least 0, got -10

`layout.load_layout` checks a file while it reads it; its output always passes here. A Layout built from
spec's dataclasses is checked by `plan.plan_layout` (and so by render) and by proof before any work: types (bool
is no number, colours are RGBA tuples of 0..255 ints; a list where a tuple is expected is fine where it is a list
of values, not a colour; text holds no lone surrogate), the loader's ranges and choices, and what goes
together: gradient stops in order, boxes on the canvas and at least 1 x 1 px once rounded, cells inside their
grid, grids that fit their region, a span's canvas equal to `geometry.span_canvas(span)` with one bezel per gap,
output names that give file names, image files that exist and can be drawn (`compose.picture_problem`, as the
loader reads them) and fonts that can be drawn (`layout.font_problem`). `check_arguments` checks plan_layout's,
render's and proof's model=, pipelines=, progress= and warn=.

The limits and choices in the tables below are the loader's (its constants, or equal to its key tables'
values: tests/test_spec.py compares them).
"""

import difflib
import math
import numbers
import os
import sys
from dataclasses import dataclass, fields
from decimal import Decimal
from pathlib import Path

from studio.compose import picture_problem
from studio.errors import InputError, control_problem, one_line, refuses
from studio.export import EXPORT_SUFFIXES
from studio.geometry import percent, resolve, span_canvas
from studio.layout import (MAX_DPI, MAX_PIXELS, MAX_SEED, MAX_SIDE, SAMPLERS, _an, _count, aspect_problem,
                           density_problem, empty_problem, font_problem, grid_fit_problem, name_pattern_problem,
                           outside_problem, range_problem, stem_problems)
from studio.memory import budget_problem
from studio.spec import (Canvas, FillLayer, GenerateLayer, GradientLayer, Grid, ImageLayer, Layout, Monitor, Output,
                         Region, Shadow, ShapeLayer, Span, TextLayer, file_problem, input_path)
from studio.text import surrogate_problem, surrogates_escaped

MAX_STEPS = 1000
MAX_TRACKS = 1000  # rows (columns) of a grid
MAX_WEIGHT = 1e6  # a grid row's (column's) relative size
FORMATS = tuple(EXPORT_SUFFIXES)  # png, jpeg, tiff, pdf
REGION_KINDS = ("full", "safe", "px", "percent", "cell")
BOX_FIELDS = ("x", "y", "w", "h")  # what a px or percent region uses
CELL_FIELDS = ("grid", "row", "column", "row_span", "column_span")  # what a cell region uses


class _Checker:
    """One check: the problems found, and what later checks rely on once it is known to be valid."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.problems: list[str] = []
        self.canvas: Canvas | None = None  # once its size is valid: regions are checked against it
        self.grids: dict[str, Grid] = {}  # the valid grids so far
        self.bad_grids: set = set()  # grids reported invalid: cells of them are not reported again
        self.grids_known = True  # False when layout.grids is no dict
        self.seed: int | None = 0  # what {seed} stands for (`layout.first_seed`); None when not known to be valid

    def error(self, path: str, message: str) -> bool:
        self.problems.append(f"{path}: {message}")
        return False

    def base_dir(self) -> Path | None:
        """The folder relative image and font paths are read from, as compose reads them."""
        from studio.compose import layout_dir

        return layout_dir(self.layout) if isinstance(self.layout.source, str) else None


# -- how values are named in messages -------------------------------------------------------------------------

def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _a(value) -> str:
    """A wrong value as a message names it: "'20' (text)", '200.5 (a number)', '(255, 0, 0) (a tuple)'."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return f"{value} (a boolean)"
    if type(value) is float and value.is_integer() and "e" not in _n(value):
        return f"{_n(value)}.0 (a number)"  # 400.0, which a whole number is not
    if type(value) in (int, float):
        return f"{_n(value)} (a number)"
    if isinstance(value, str):
        return f"{_short(repr(value))} (text)"
    kind = type(value)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__.split('.')[0]}.{kind.__name__}"
    return f"{_short(repr(value))} ({_an(name)})"


def _q(value) -> str:
    """A value quoted: "'centre'", or as `_a` names it when it is not text."""
    return _short(repr(value)) if isinstance(value, str) else _a(value)


def _n(number) -> str:
    """A number as messages write it: 3.5 for a float or a Fraction (7/2), a whole number as it is."""
    return str(number) if isinstance(number, numbers.Integral) else f"{float(number):g}"


def _closest(word, choices) -> str:
    """" (did you mean 'x'?)" for the choice closest to `word` (ignoring case), or ""."""
    if not isinstance(word, str):
        return ""
    by_folded = {c.casefold(): c for c in choices}
    match = difflib.get_close_matches(word.casefold(), by_folded, n=1, cutoff=0.6)
    return f" (did you mean '{by_folded[match[0]]}'?)" if match else ""


# -- value kinds: check(checker, path, value) -> whether it is valid (problems reported) ----------------------

def _in_range(c: _Checker, path: str, value, lo, hi) -> bool:
    problem = range_problem(value, lo, hi)
    return problem is None or c.error(path, problem)


@dataclass(frozen=True)
class Int:
    lo: int | None = None
    hi: int | None = None

    def check(self, c, path, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            return c.error(path, f"expected a whole number, got {_a(value)}")
        return _in_range(c, path, value, self.lo, self.hi)


@dataclass(frozen=True)
class Number:
    lo: float | None = None
    hi: float | None = None
    positive: bool = False

    def check(self, c, path, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return c.error(path, f"expected a number, got {_a(value)}")
        try:
            float(value)
        except OverflowError:  # a whole number beyond floats: 10 ** 400
            return c.error(path, f"{Decimal(int(value)).normalize():.6g} is out of range: a number is at "
                                 f"{'least -' if value < 0 else 'most '}{sys.float_info.max:.6g}")
        if not math.isfinite(value):
            return c.error(path, f"expected a finite number, got {value}")
        if self.positive and value <= 0:
            return c.error(path, f"must be greater than 0, got {_n(value)}")
        return _in_range(c, path, value, self.lo, self.hi)


@dataclass(frozen=True)
class Length:
    """px, at most the largest canvas's side either way (the loader bounds a length written in a file by its
    canvas's larger side; spec's defaults, e.g. a text size of 48 px, go on any canvas). minimum: 'positive' |
    'zero' | 'any'."""

    minimum: str = "zero"

    def check(self, c, path, value):
        if not Number().check(c, path, value):
            return False
        if self.minimum == "positive" and value <= 0:
            return c.error(path, f"must be greater than 0, got {_n(value)}")
        if self.minimum == "zero" and value < 0:
            return c.error(path, f"must not be negative, got {_n(value)}")
        if abs(value) > MAX_SIDE:
            return c.error(path, f"{_n(value)} px is larger than any canvas: at {'least -' if value < 0 else 'most '}"
                                 f"{MAX_SIDE} px")
        return True


@dataclass(frozen=True)
class TextSize(Length):
    """A text size: at least 1 px (FreeType draws nothing legible under it)."""

    minimum: str = "positive"

    def check(self, c, path, value):
        if not super().check(c, path, value):
            return False
        return value >= 1 or c.error(path, f"{_n(value)} px is too small; a text size is at least 1 px")


class Enum:
    """One of `choices`; `elsewhere`: value -> the other field it is a value of ('middle' -> "valign='middle'")."""

    def __init__(self, *choices: str, elsewhere: dict[str, str] | None = None):
        self.choices, self.elsewhere = choices, elsewhere or {}

    def check(self, c, path, value):
        if isinstance(value, str) and value in self.choices:
            return True
        hint = _closest(value, self.choices)
        other = self.elsewhere.get(value) if isinstance(value, str) else None
        if other:
            hint = f" (did you mean {other}?)"
        return c.error(path, f"{_q(value)} is not one of {', '.join(self.choices)}{hint}")


class Bool:
    def check(self, c, path, value):
        return isinstance(value, bool) or c.error(path, f"expected True or False, got {_a(value)}")


class Text:
    """A str without lone surrogates (os.fsdecode's stand-ins for bytes that are no UTF-8: no file, metadata or
    tokenizer takes them)."""

    def check(self, c, path, value):
        if not isinstance(value, str):
            return c.error(path, f"expected text, got {_a(value)}")
        problem = surrogate_problem(value)
        return problem is None or c.error(path, problem)


class NamePattern:
    """output.name: text with the fields {layout}, {seed} and {monitor} as they are (`layout.name_pattern_problem`)."""

    def check(self, c, path, value):
        if not Text().check(c, path, value):
            return False
        problem = name_pattern_problem(value)
        return problem is None or c.error(path, problem)


@dataclass(frozen=True)
class Optional:
    """None, or a value of `kind`."""

    kind: object

    def check(self, c, path, value):
        return value is None or self.kind.check(c, path, value)


@dataclass(frozen=True)
class Colour:
    """An RGBA tuple of 4 whole numbers 0..255 (compose appends to its slices: a list would fail there; a
    gradient stop's colour may be a list, `lists`)."""

    lists: bool = False

    def check(self, c, path, value):
        channels = isinstance(value, (tuple, list)) and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
        if channels and isinstance(value, (tuple, list) if self.lists else tuple) and len(value) == 4:
            return True
        hint = ""
        if channels and len(value) == 3:
            hint = f"; add the alpha: {tuple(value) + (255,)}"
        elif channels and len(value) == 4:
            hint = f"; give it as a tuple: {tuple(value)}"
        elif isinstance(value, str):
            hint = f"; PIL.ImageColor.getcolor({_short(repr(value))}, 'RGBA') reads text colours"
        return c.error(path, f"expected an RGBA colour, a tuple of 4 whole numbers 0..255, got {_a(value)}{hint}")


@dataclass(frozen=True)
class Seq:
    """A tuple (or list) of `item`s."""

    item: object
    min_items: int = 0
    max_items: int | None = None
    unique: bool = False
    noun: str = "item"

    def check(self, c, path, value):
        if not isinstance(value, (tuple, list)):
            return c.error(path, f"expected a tuple, got {_a(value)}")
        n = len(value)
        if n < self.min_items or (self.max_items is not None and n > self.max_items):
            wanted = (_count(self.min_items, self.noun) if self.min_items == self.max_items else
                      f"at least {_count(self.min_items, self.noun)}" if self.max_items is None else
                      f"{self.min_items} to {self.max_items} {self.noun}s")
            return c.error(path, f"expected {wanted}, got {n}")
        ok = all([self.item.check(c, f"{path}[{i}]", item) for i, item in enumerate(value)])
        twice = next((v for i, v in enumerate(value) if v in value[:i]), None) if ok and self.unique else None
        if twice is not None:
            return c.error(path, f"{_q(twice)} is listed twice")
        return ok


@dataclass(frozen=True)
class Of:
    """An instance of spec class `cls`, its fields checked against `table`."""

    cls: type
    table: dict

    def check(self, c, path, value):
        if not isinstance(value, self.cls):
            return c.error(path, f"expected {_an(self.cls.__name__)}, got {_a(value)}")
        return all(_fields(c, path, value, self.table).values())


def path_str(value) -> str | None:
    """A path given as text or any os.PathLike, as its text; None for anything else (a path of bytes too)."""
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    return text if isinstance(text, str) else None


def _path_text(c, path, value, what: str) -> bool:
    text = path_str(value)
    if text is None:
        return c.error(path, f"expected {what} (text or a Path), got {_a(value)}")
    if not text.strip():
        return c.error(path, f"expected {what}, got {_q(text)}")
    if control_problem(text):
        return c.error(path, f"{_q(text)} {control_problem(text)}")
    return True


class Model:
    """A model folder or hub id (plan looks it up)."""

    def check(self, c, path, value):
        return _path_text(c, path, value, "a model folder or hub id")


class ImagePath:
    """An image file, relative to the layout's folder (the current folder for a source like '<code>'), that the
    compositor can draw, as the loader checks it (`compose.picture_problem`)."""

    def check(self, c, path, value):
        if not _path_text(c, path, value, "an image file"):
            return False
        base = c.base_dir()
        file = input_path(value, base)
        name = os.fspath(value)
        problem = file_problem(name, file, "image file", _where(base)) or picture_problem(name, file)
        return problem is None or c.error(path, problem)


def _where(base: Path | None) -> str:
    """Where a checked layout's relative paths are read from, in words."""
    return "the current folder" if base is None or base == Path(".") else f"{base}, the folder of the layout's source"


class Font:
    """A font file (text or a Path, '#index' for another face than the first) or an installed family that can be
    drawn, as the loader checks it (`layout.font_problem`; None, the bundled font, is Optional's)."""

    def check(self, c, path, value):
        name = path_str(value)
        if name is None:
            return c.error(path, f"expected a font file or family (text or a Path), got {_a(value)}")
        base = c.base_dir()
        problem = font_problem(name, base, _where(base))
        return problem is None or c.error(path, one_line(problem))  # a control character shown escaped


@dataclass(frozen=True)
class RegionKind:
    """A spec.Region: its kind, the fields that kind uses (numbers; a cell's grid, row and column in range)
    and, for px and percent, lying on the canvas, at least 1 x 1 px once rounded. allow_empty: w and h may be 0
    (lines; `_shape` checks a rect's and an ellipse's)."""

    allow_empty: bool = False

    def check(self, c, path, region):
        if not isinstance(region, Region):
            return c.error(path, f"expected a Region, got {_a(region)}")
        if not Enum(*REGION_KINDS).check(c, f"{path}.kind", region.kind):
            return False
        used = BOX_FIELDS if region.kind in ("px", "percent") else CELL_FIELDS if region.kind == "cell" else ()
        default = Region()
        for name in BOX_FIELDS + CELL_FIELDS:
            value = getattr(region, name)
            if name not in used and value != getattr(default, name):
                users = ("x, y, w and h are for kind 'px' or 'percent'" if name in BOX_FIELDS else
                         "grid, row, column and the spans are for kind 'cell'")
                return c.error(f"{path}.{name}", f"{_short(repr(value))} is not used by {_an(repr(region.kind))} "
                                                 f"region: {users}")
        if region.kind in ("px", "percent"):
            return self._box(c, path, region)
        if region.kind == "cell":
            return _cell(c, path, region)
        return True

    def _box(self, c, path, region):
        if not all([Number().check(c, f"{path}.{k}", getattr(region, k)) for k in BOX_FIELDS]):
            return False
        unit = "%" if region.kind == "percent" else " px"
        for k in "wh":
            size = getattr(region, k)
            if size < 0 or (size == 0 and not self.allow_empty):
                return c.error(f"{path}.{k}", f"must be greater than 0, got {_n(size)}{unit}" if not self.allow_empty
                               else f"must not be negative, got {_n(size)}{unit}")
        if c.canvas is None:
            return True
        w, h = c.canvas.width, c.canvas.height

        def px(value, size: int):  # an edge in trim px, as `geometry.resolve` computes it
            return percent(value, size) if region.kind == "percent" else value

        edges = (px(region.x, w), px(region.y, h), px(region.x + region.w, w), px(region.y + region.h, h))
        if problem := outside_problem(*edges, c.canvas):
            return c.error(path, f"the region is outside the canvas: {problem}")
        problem = None if self.allow_empty else empty_problem(region, c.canvas)
        return problem is None or c.error(path, problem)


def _cell(c: _Checker, path: str, region: Region) -> bool:
    """A cell region: its grid exists (a grid's region: an earlier grid), row and column with their spans in it."""
    ok = Text().check(c, f"{path}.grid", region.grid)
    ok = all([Int(0).check(c, f"{path}.row", region.row), Int(0).check(c, f"{path}.column", region.column),
              Int(1).check(c, f"{path}.row_span", region.row_span),
              Int(1).check(c, f"{path}.column_span", region.column_span)]) and ok
    if not ok:
        return False
    grid = c.grids.get(region.grid)
    if grid is None:
        if region.grid in c.bad_grids or not c.grids_known:
            return False  # the grid's own problem is reported
        if isinstance(c.layout.grids, dict) and region.grid in c.layout.grids:
            return c.error(f"{path}.grid", f"{region.grid!r} comes later in grids: a grid's region may only be a "
                                           f"cell of an earlier grid")
        known = ", ".join(c.grids) or "none"
        return c.error(f"{path}.grid", f"no grid {region.grid!r}{_closest(region.grid, c.grids)} (grids: {known})")
    for what, index, extent, count in (("row", region.row, region.row_span, grid.rows),
                                       ("column", region.column, region.column_span, grid.columns)):
        if index + extent > count:
            cells = f"{what}s {index}..{index + extent - 1}" if extent > 1 else f"{what} {index}"
            return c.error(f"{path}.{what}", f"{cells} out of range: grid {region.grid!r} has "
                                             f"{_count(count, what)} (0..{count - 1})")
    return True


class Stops:
    """((position 0..1, RGBA), ...): at least 2, positions not decreasing."""

    def check(self, c, path, stops):
        if not isinstance(stops, (tuple, list)) or len(stops) < 2:
            got = _a(stops) if not isinstance(stops, (tuple, list)) else _count(len(stops), "stop")
            return c.error(path, f"expected at least 2 (position, colour) stops, got {got}")
        ok = True
        for i, stop in enumerate(stops):
            if not isinstance(stop, (tuple, list)) or len(stop) != 2:
                ok = c.error(f"{path}[{i}]", f"expected a (position, colour) pair, got {_a(stop)}")
                continue
            ok = all([Number(0, 1).check(c, f"{path}[{i}][0]", stop[0]),
                      Colour(lists=True).check(c, f"{path}[{i}][1]", stop[1])]) and ok
        if not ok:
            return False
        for (a, _), (b, _) in zip(stops, stops[1:]):
            if b < a:
                return c.error(path, f"positions must not decrease: {_n(b)} comes after {_n(a)}")
        return True


# -- the tables: a spec class's fields -> their kinds (the loader's key tables, in spec's names) ---------------

COMMON_FIELDS = {"opacity": Number(0, 1), "name": Text()}
GENERATE_FIELDS = {
    "prompt": Text(), "negative_prompt": Text(), "seed": Int(0, MAX_SEED), "steps": Int(1, MAX_STEPS),
    "guidance": Number(0), "sampler": Optional(Enum(*SAMPLERS)), "model": Optional(Model()), "region": RegionKind(),
    "fit": Enum("cover", "contain"), "strategy": Enum("auto", "direct", "upscale"),
} | COMMON_FIELDS
IMAGE_FIELDS = {"path": ImagePath(), "region": RegionKind(), "fit": Enum("cover", "contain")} | COMMON_FIELDS
SHADOW_FIELDS = {"dx": Length("any"), "dy": Length("any"), "blur": Length(), "color": Colour()}
TEXT_FIELDS = {
    "text": Text(), "font": Optional(Font()), "size": TextSize(), "color": Colour(), "region": RegionKind(),
    "align": Enum("left", "center", "right", elsewhere={"middle": "valign='middle'"}),
    "valign": Enum("top", "middle", "bottom", elsewhere={"center": "align='center'"}),
    "wrap": Bool(), "shrink_to_fit": Bool(), "line_height": Number(hi=100, positive=True),
    "letter_spacing": Length("any"), "stroke_width": Length(), "stroke_color": Colour(),
    "shadow": Optional(Of(Shadow, SHADOW_FIELDS)),
} | COMMON_FIELDS
SHAPE_FIELDS = {
    "shape": Enum("rect", "ellipse", "line"), "region": RegionKind(allow_empty=True), "fill": Optional(Colour()),
    "stroke": Optional(Colour()), "stroke_width": Length(), "radius": Length(),
} | COMMON_FIELDS
FILL_FIELDS = {"color": Colour(), "region": RegionKind()} | COMMON_FIELDS
GRADIENT_FIELDS = {"stops": Stops(), "kind": Enum("linear", "radial"), "angle": Number(),
                   "region": RegionKind()} | COMMON_FIELDS
LAYER_FIELDS = {GenerateLayer: GENERATE_FIELDS, ImageLayer: IMAGE_FIELDS, TextLayer: TEXT_FIELDS,
                ShapeLayer: SHAPE_FIELDS, FillLayer: FILL_FIELDS, GradientLayer: GRADIENT_FIELDS}
CANVAS_FIELDS = {"width": Int(1), "height": Int(1), "dpi": Int(1, MAX_DPI), "bleed": Int(0), "safe_margin": Int(0),
                 "background": Colour(), "preset": Optional(Text())}
MONITOR_FIELDS = {"name": Text(), "width": Int(1, MAX_SIDE), "height": Int(1, MAX_SIDE),
                  "width_mm": Number(positive=True), "height_mm": Number(positive=True)}
SPAN_FIELDS = {"monitors": Seq(Of(Monitor, MONITOR_FIELDS), 1, noun="monitor"), "bezels_mm": Seq(Number(0)),
               "align": Enum("top", "center", "bottom")}
GRID_FIELDS = {"name": Text(), "rows": Int(1, MAX_TRACKS), "columns": Int(1, MAX_TRACKS),
               "gutter": Seq(Int(0), 2, 2), "region": RegionKind(),
               "row_weights": Seq(Number(hi=MAX_WEIGHT, positive=True), 0, MAX_TRACKS),
               "column_weights": Seq(Number(hi=MAX_WEIGHT, positive=True), 0, MAX_TRACKS)}
OUTPUT_FIELDS = {"formats": Seq(Enum(*FORMATS), 1, unique=True, noun="format"), "name": NamePattern(),
                 "jpeg_quality": Int(1, 100), "per_monitor": Bool(), "crop_marks": Bool()}


def _fields(c: _Checker, path: str, obj, table: dict) -> dict[str, bool]:
    """Each field of `obj` checked against `table`: field -> valid."""
    return {f.name: table[f.name].check(c, f"{path}.{f.name}", getattr(obj, f.name)) for f in fields(obj)}


# -- the sections ----------------------------------------------------------------------------------------------

def check_layout(layout: Layout) -> None:
    """Raise InputError listing every problem of `layout` (one line each, `source: field.path: problem`), in the
    order the loader reads a file: canvas, span, grids, layers, output, variables, memory budget, model."""
    if not isinstance(layout, Layout):
        raise InputError(f"expected a studio.spec.Layout, got {_a(layout)}")
    c = _Checker(layout)
    source_ok = Text().check(c, "source", layout.source)
    _canvas(c, layout.canvas)
    monitors = _span(c, layout.span, layout.canvas)
    _grids(c, layout.grids)
    _layers(c, layout.layers)
    # a loaded layout's names the loader checked, or a batch gives (parse_layout's own_names=False): one built in
    # code's; {seed} once the seed is known to be valid (its problem is reported)
    if Of(Output, OUTPUT_FIELDS).check(c, "output", layout.output) and source_ok and monitors is not None \
            and not layout.lines and c.seed is not None:
        _file_names(c, layout.output, layout.source, c.seed, monitors)
    _variables(c, layout.variables)
    if layout.memory_budget is not None and (problem := budget_problem(layout.memory_budget)):
        c.error("memory_budget", problem)
    Optional(Model()).check(c, "model", layout.model)
    if c.problems:
        source = layout.source
        if isinstance(source, str):  # its lone surrogates (reported) escaped: the message prints anywhere
            source = surrogates_escaped(source)
        raise InputError("\n".join(f"{source}: {problem}" for problem in c.problems))


def check_arguments(caller: str, model=None, pipelines=None, progress=None, warn=None) -> None:
    """A one-line InputError unless `caller`'s (plan_layout's, render's, proof's) arguments are what it takes: model
    None or a model folder or hub id (text or a Path); pipelines None or a dict of such models ->
    PixArtSigmaPipeline; progress None or a function called as progress(label, phase, done, total); warn None or a
    function called as warn(where, problem)."""
    c = _Checker(None)
    Optional(Model()).check(c, f"{caller}: model", model)
    if progress is not None and refuses(progress, "layer 0", "text", 0, 1):
        c.error(f"{caller}: progress", f"is called as progress(label, phase, done, total), got {_short(repr(progress))}")
    if warn is not None and refuses(warn, "poster.yaml:3", "layers[0]: text overflows its region"):
        c.error(f"{caller}: warn", f"is called as warn(where, problem), got {_short(repr(warn))}")
    if isinstance(pipelines, dict):
        from studio.pipeline import PixArtSigmaPipeline  # here: it imports MindSpore

        for key, pipe in pipelines.items():
            if Model().check(c, f"{caller}: pipelines", key) and not isinstance(pipe, PixArtSigmaPipeline):
                c.error(f"{caller}: pipelines[{key!r}]", f"expected a PixArtSigmaPipeline, got {_a(pipe)}")
    elif pipelines is not None:
        c.error(f"{caller}: pipelines", f"expected a dict of model -> PixArtSigmaPipeline, got {_a(pipelines)}")
    if c.problems:
        raise InputError(c.problems[0])


def _canvas(c: _Checker, canvas) -> None:
    if not isinstance(canvas, Canvas):
        c.error("canvas", f"expected a Canvas, got {_a(canvas)}")
        return
    ok = _fields(c, "canvas", canvas, CANVAS_FIELDS)
    if not (ok["width"] and ok["height"] and ok["bleed"]):
        return
    w, h = canvas.full_width, canvas.full_height
    if max(w, h) > MAX_SIDE:
        c.error("canvas", f"{w} x {h} px (bleed included) is too large: at most {MAX_SIDE} px per side")
    elif w * h > MAX_PIXELS:
        c.error("canvas", f"{w} x {h} px (bleed included) = {w * h} pixels is too large: at most {MAX_PIXELS} (2^28)")
    else:
        c.canvas = canvas
    if ok["safe_margin"] and 2 * canvas.safe_margin >= min(canvas.width, canvas.height):
        c.error("canvas.safe_margin", f"{canvas.safe_margin} px on each side leaves no safe area in "
                                      f"{canvas.width} x {canvas.height} px")


def _span(c: _Checker, span, canvas) -> list[str] | None:
    """The span's fields, its monitors' names, densities and aspect ratios, one bezel per gap, and the canvas it
    needs; returns the monitors' names ([] without a span), or None when they are not known to be valid."""
    if span is None:
        return []
    if not isinstance(span, Span):
        c.error("span", f"expected a Span or None, got {_a(span)}")
        return None
    ok = _fields(c, "span", span, SPAN_FIELDS)
    if not ok["monitors"]:
        return None
    seen = {}
    for i, m in enumerate(span.monitors):
        path = f"span.monitors[{i}]"
        if not m.name.strip():
            ok["monitors"] = c.error(f"{path}.name", f"expected a name (monitor names are used in file names), "
                                                     f"got {m.name!r}")
        elif m.name.casefold() in seen:
            ok["monitors"] = c.error(f"{path}.name", f"{m.name!r} is already the name of {seen[m.name.casefold()]} "
                                                     f"(names used in file names differ in more than case)")
        seen.setdefault(m.name.casefold(), path)
        if problem := density_problem(m.width, m.width_mm):
            ok["monitors"] = c.error(f"{path}.width_mm", problem)
        w, h = _n(m.width_mm), _n(m.height_mm)
        if problem := aspect_problem(m.width, m.height, m.width_mm, m.height_mm,
                                     f"{w} x {h} mm (width_mm x height_mm)", f"width_mm={h}, height_mm={w}"):
            ok["monitors"] = c.error(path, problem)
    gaps = len(span.monitors) - 1
    if ok["bezels_mm"] and len(span.bezels_mm) != gaps:
        ok["bezels_mm"] = c.error("span.bezels_mm", f"{_count(gaps + 1, 'monitor')} have {_count(gaps, 'gap')}; got "
                                                    f"{_count(len(span.bezels_mm), 'bezel')} (give one per gap)")
    names = [m.name for m in span.monitors] if ok["monitors"] else None
    sized = isinstance(canvas, Canvas) and all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                               for v in (canvas.width, canvas.height, canvas.bleed))
    if not (all(ok.values()) and sized):
        return names  # what is wrong is reported
    width, height, _ = span_canvas(span)
    if (canvas.width, canvas.height) != (width, height):
        c.error("canvas", f"{canvas.width} x {canvas.height} px is not the span's {width} x {height} px: "
                          f"give it the size geometry.span_canvas(span) returns")
    if canvas.bleed != 0:
        c.error("canvas.bleed", f"a span has no bleed, got {canvas.bleed}")
    return names


def _file_names(c: _Checker, output: Output, source: str, seed: int, monitors: list[str]) -> None:
    """The files output.name gives can be written (`layout.stem_problems`), as the loader checks them: each
    problem at output.name, or at the monitor whose file it is."""
    for p in stem_problems(output.name, source, seed, monitors if output.per_monitor else []):
        path, what = ("output.name", _q(output.name)) if p.index == 0 else (f"span.monitors[{p.index - 1}].name",
                                                                            _q(monitors[p.index - 1]))
        hint = "; give the monitor another name" if p.kind == "case" else ""
        c.error(path, f"{what} gives the file name {_q(p.stem)}, which {p.text}{hint}")


def _grids(c: _Checker, grids) -> None:
    """Each grid in order (a grid's region may be a cell of an earlier one), checked to divide its region."""
    if not isinstance(grids, dict):
        c.grids_known = False
        c.error("grids", f"expected a dict of name -> Grid, got {_a(grids)}")
        return
    for key, grid in grids.items():
        path = f"grids[{key!r}]"
        if not isinstance(grid, Grid):
            c.bad_grids.add(key)
            c.error(path, f"expected a Grid, got {_a(grid)}")
            continue
        ok = _fields(c, path, grid, GRID_FIELDS)
        if ok["name"] and grid.name != key:
            ok["name"] = c.error(f"{path}.name", f"{grid.name!r} is not its key in grids, {key!r}")
        for tracks, weights in (("rows", "row_weights"), ("columns", "column_weights")):
            count, sizes = getattr(grid, tracks), getattr(grid, weights)
            if ok[tracks] and ok[weights] and sizes and len(sizes) != count:
                ok[weights] = c.error(f"{path}.{weights}", f"{_count(len(sizes), 'weight')} for "
                                                           f"{_count(count, tracks[:-1])} (one each, or none for "
                                                           f"equal {tracks})")
        if all(ok.values()) and c.canvas is not None:
            if problem := grid_fit_problem(grid, resolve(grid.region, c.canvas, c.grids)):
                ok["region"] = c.error(path, problem)
        if all(ok.values()):
            c.grids[key] = grid
        else:
            c.bad_grids.add(key)


def _layers(c: _Checker, layers) -> None:
    if not isinstance(layers, (tuple, list)):
        c.seed = None
        c.error("layers", f"expected a tuple of layers, got {_a(layers)}")
        return
    if not layers:
        c.error("layers", "expected at least 1 layer, got none")
    named, seeded = {}, False
    for i, layer in enumerate(layers):
        table = next((t for cls, t in LAYER_FIELDS.items() if isinstance(layer, cls)), None)
        if table is None:
            c.error(f"layers[{i}]", f"expected a layer ({', '.join(cls.__name__ for cls in LAYER_FIELDS)}), "
                                    f"got {_a(layer)}")
            continue
        name = layer.name if isinstance(layer.name, str) else ""
        path = f"layers[{i}] ({type(layer).__name__}{f' {name!r}' if name else ''})"
        ok = _fields(c, path, layer, table)
        if name in named:
            c.error(f"{path}.name", f"{name!r} is already the name of {named[name]}")
        elif name:
            named[name] = f"layers[{i}]"
        if isinstance(layer, GenerateLayer) and not seeded:
            c.seed, seeded = (layer.seed if ok["seed"] else None), True
        if all(ok.values()) and isinstance(layer, ShapeLayer):
            _shape(c, path, layer)
        if isinstance(layer, GradientLayer) and ok["kind"] and ok["angle"] and layer.kind == "radial" \
                and layer.angle != 90:
            c.error(f"{path}.angle", f"{_n(layer.angle)} degrees: a radial gradient has no angle (it spreads from "
                                     f"its region's centre); leave angle at 90 or make the gradient linear")


def _shape(c: _Checker, path: str, s: ShapeLayer) -> None:
    """What the loader's shape rules refuse: a line needs a stroke and takes no fill; a rect or ellipse needs a
    fill or a stroke and a region with an area; a stroke needs a width; radius is a rect's."""
    if s.shape == "line" and s.fill is not None:
        c.error(f"{path}.fill", "a line has no fill; give it a stroke colour and a stroke_width")
    elif s.shape == "line" and s.stroke is None:
        c.error(f"{path}.stroke", "a line needs a stroke colour and a stroke_width")
    elif s.fill is None and s.stroke is None:
        c.error(path, f"{_an(s.shape)} with neither fill nor stroke draws nothing")
    if s.stroke is not None and s.stroke_width == 0:
        c.error(f"{path}.stroke_width", "a stroke needs a width greater than 0, got 0")
    if s.stroke is None and s.stroke_width > 0:
        c.error(f"{path}.stroke_width", f"{_n(s.stroke_width)} px without a stroke colour draws nothing")
    if s.shape != "rect" and s.radius:
        c.error(f"{path}.radius", "applies to rect only")
    if s.shape != "line" and s.region.kind in ("px", "percent") and not (s.region.w and s.region.h):
        c.error(f"{path}.region", f"{_an(s.shape)} needs a region with w and h greater than 0")
    elif s.shape != "line" and s.region.kind in ("px", "percent") and c.canvas is not None and \
            (problem := empty_problem(s.region, c.canvas)):
        c.error(f"{path}.region", problem)


def _variables(c: _Checker, variables) -> None:
    if not isinstance(variables, dict):
        c.error("variables", f"expected a dict of name -> text, got {_a(variables)}")
        return
    for name, value in variables.items():
        if not isinstance(name, str):
            c.error("variables", f"a variable's name is text, got {_a(name)}")
        elif problem := surrogate_problem(name):
            c.error("variables", f"a variable's name: {problem}")
        elif not isinstance(value, str):
            c.error(f"variables[{name!r}]", f"expected text (values are recorded as written), got {_a(value)}")
        else:
            Text().check(c, f"variables[{name!r}]", value)
