"""Layout files (YAML) -> the validated `spec.Layout`: the first stage of layout -> plan -> render -> compose.

`load_layout(path, variables)` reads a file, `parse_layout(text, ...)` a string. Sizes come out in canvas
pixels (mm/cm/in/pt converted with the canvas DPI); regions stay symbolic (`spec.Region`). Every problem
in a file is collected and raised at once as one `LayoutError`, one line each:
`poster.yaml:14: layers[2].text.font: no such font 'Inter' (a .ttf/.otf path or an installed family)`.

The allowed keys live in the tables below (`TOP_KEYS`, `CANVAS_KEYS`, ...), each key with its value kind;
the same tables give the JSON Schema (`layout_schema()`, written to layouts/layout.schema.json by
`python -m studio.layout --schema`). The format is documented in layouts/README.md.
"""

import collections.abc
import difflib
import json
import math
import numbers
import os
import re
from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageColor

from studio import fonts
from studio.errors import (CONTROL_RE, YAML11_BREAKS, InputError, LayoutError, control_problem, first_line,
                           one_line)
from studio.export import EXPORT_SUFFIXES, MAX_NAME_BYTES
from studio.hub import HubId, is_hub_id
from studio.geometry import edge, monitor_dpi, percent, resolve, span_canvas, split
from studio.memory import _UNITS, budget_problem
from studio.text import join_surrogates, surrogate_problem
from studio.spec import (Canvas, FillLayer, GenerateLayer, GradientLayer, Grid, ImageLayer, Layout, Monitor,
                         Output, Region, Shadow, ShapeLayer, Span, TextLayer, file_problem,
                         input_path)

MAX_SIDE = 32768  # px per side of the full canvas (bleed included)
MAX_PIXELS = 2 ** 28  # px in the full canvas
MAX_DPI = 10000
# how far (5%) a monitor's given width:height may be from its pixels' (pixels are square): a ruler's or a
# datasheet's rounding is well inside it, a rotated monitor's size given in the unrotated order far outside
MAX_ASPECT_OFF = 0.05
MAX_SEED = 2 ** 32 - 1  # seeds are 0..MAX_SEED here, on the command line and when drawn at random
SAMPLERS = ("dpm++", "ddim", "euler")  # = sampling.SAMPLERS (not imported: it loads MindSpore)
OUTPUT_FIELDS = ("layout", "seed", "monitor")  # placeholders output.name keeps for the exporter
# the fields no variable may be named (a variable `seed` is the usual way to set a generate layer's seed; in
# output.name {seed} is still the field, which it then equals)
FIELD_NAMES = {"layout": "the layout file's name", "monitor": "a span's monitor's name"}
OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".pdf")  # what the formats add to output.name
# bytes of a file stem: export.MAX_NAME_BYTES (room for the exporter's temporary and backup names) less the
# longest suffix a format adds, so '.<stem>.png.<8 random>.part.old' has at most 255
MAX_STEM_BYTES = MAX_NAME_BYTES - max(len(suffix) for suffix in EXPORT_SUFFIXES.values())
MAX_SOURCE = 64 << 20  # bytes of a layout or job file (a batch's CSV of 100,000 long rows stays below)
MAX_DEPTH = 100  # levels of nested lists and mappings (a layout needs six; PyYAML recurses once per level)
MAX_DIGITS = 100  # characters of a number as written: no size, seed or angle needs more, and Python's int()
# refuses more than 4300 digits

# Images may have as many pixels as a canvas: the loader checks each image against MAX_PIXELS, and Pillow's
# own bomb check (179 MP by default), which every later Image.open also makes, is set to the same limit.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

MM_PER_UNIT = {"mm": Fraction(1), "cm": Fraction(10), "in": Fraction(254, 10), "pt": Fraction(254, 720)}
UNITS = ("px", "pt", "mm", "cm", "in")

# name: (width, height, unit) in the preset's natural orientation
PRESETS = {
    "fhd": (1920, 1080, "px"), "qhd": (2560, 1440, "px"), "4k": (3840, 2160, "px"), "5k": (5120, 2880, "px"),
    "8k": (7680, 4320, "px"), "uwfhd": (2560, 1080, "px"), "uwqhd": (3440, 1440, "px"),
    "5k-ultrawide": (5120, 1440, "px"), "dqhd": (5120, 1440, "px"), "5k2k": (5120, 2160, "px"),
    "iphone-15": (1179, 2556, "px"), "iphone-15-pro-max": (1290, 2796, "px"), "pixel-8": (1080, 2400, "px"),
    "pixel-8-pro": (1344, 2992, "px"), "galaxy-s24": (1080, 2340, "px"), "ipad-pro-13": (2064, 2752, "px"),
    "a0": (841, 1189, "mm"), "a1": (594, 841, "mm"), "a2": (420, 594, "mm"), "a3": (297, 420, "mm"),
    "a4": (210, 297, "mm"), "a5": (148, 210, "mm"),
    "letter": (Fraction(17, 2), 11, "in"), "legal": (Fraction(17, 2), 14, "in"), "tabloid": (11, 17, "in"),
    "poster-18x24": (18, 24, "in"), "poster-24x36": (24, 36, "in"), "poster-27x40": (27, 40, "in"),
}

_NUMBER = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"  # ASCII: Python's \d takes '١' too, ECMA's (the schema's) not
_LENGTH_RE = re.compile(rf"\s*({_NUMBER})\s*({'|'.join(UNITS)})?\s*", re.IGNORECASE)  # 12PT is 12pt
_PERCENT_RE = re.compile(rf"\s*({_NUMBER})\s*%\s*")
_VARIABLE_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MUSTACHE_RE = re.compile(r"\{\{ *([A-Za-z_][A-Za-z0-9_]*) *\}\}")  # a name in doubled braces, spaces inside
# a float as YAML 1.2 (and JSON, and so editors' schema checks) reads it; YAML 1.1 reads '1e300' as text
# YAML 1.2's core schema: what a plain (unquoted) scalar is; anything else is text. As editors' schema
# checks (JSON) read it, unlike PyYAML's YAML 1.1: yes/no/on/off, 1_000, 0b101, 1:30 and dates are text,
# 0010 is 10 (not octal 8), 0o17 is 15, 1e3 is a number.
_CORE_12 = (
    (re.compile(r"null|Null|NULL|~|"), lambda t: None),
    (re.compile(r"true|True|TRUE"), lambda t: True),
    (re.compile(r"false|False|FALSE"), lambda t: False),
    (re.compile(r"[-+]?[0-9]+"), int),
    (re.compile(r"0o[0-7]+"), lambda t: int(t[2:], 8)),
    (re.compile(r"0x[0-9a-fA-F]+"), lambda t: int(t[2:], 16)),
    (re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?"), float),
    (re.compile(r"[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)"), lambda t: float(t.replace(".", "", 1))),
)
_INDEX_RE = re.compile(r"\d+", re.ASCII)  # its pattern is the schema's (ECMA \d is ASCII)
_RESOLVER = yaml.resolver.Resolver()
_MERGE = "tag:yaml.org,2002:merge"  # the tag of a plain '<<' key
YAML11_BOOLS = ("yes", "no", "on", "off", "y", "n")


class _Bad(Exception):
    """A value is invalid. With a message: still to be reported at the value; without: already reported."""


def _a(value) -> str:
    """How a wrong value is named in a message: "'high' (text)", '3.5 (a number)', 'a list'."""
    if isinstance(value, yaml.MappingNode):
        return "a mapping"
    if isinstance(value, yaml.SequenceNode):
        return "a list"
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, (int, float)):
        return f"{value} (a number)"
    return f"'{value}' (text)"


def _q(value) -> str:
    """A value quoted in a message: "'centre'", or as `_a` names it when it is not text."""
    return f"'{value}'" if isinstance(value, str) else _a(value)


def _suggest(word, choices) -> str | None:
    """The choice closest to `word` (ignoring case), or None when none is close."""
    by_folded = {str(c).casefold(): str(c) for c in choices}
    match = difflib.get_close_matches(str(word).casefold(), by_folded, n=1, cutoff=0.6)
    return by_folded[match[0]] if match else None


def _count(n: int, word: str) -> str:
    """'1 row', '2 rows'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def _an(word: str) -> str:
    """'a rect', 'an ellipse', 'an Output'."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _closest(word, choices) -> str:
    """" (did you mean 'x'?)" for the closest choice, or ""."""
    match = _suggest(word, choices)
    return f" (did you mean '{match}'?)" if match else ""


# What other tools call our keys and values: word -> our candidates; the first one allowed where the word
# is written is suggested (before spelling neighbours). Words are compared in lower case, keys with '-' as '_'.
KEY_SYNONYMS = {
    "width": ("w",), "height": ("h",), "w": ("width",), "h": ("height",), "left": ("x",), "top": ("y",),
    "file": ("path", "name"), "filename": ("path", "name"), "src": ("path",), "source": ("path",),
    "cfg": ("guidance",), "cfg_scale": ("guidance",), "guidance_scale": ("guidance",),
    "num_inference_steps": ("steps",), "negative": ("negative_prompt",),
    "font_size": ("size",), "fontsize": ("size",), "font_family": ("font",), "colour": ("color",),
    "fill": ("color",), "alpha": ("opacity",), "margin": ("safe_margin",), "format": ("formats",),
    "quality": ("jpeg_quality",), "gap": ("gutter",), "spacing": ("gutter", "letter_spacing"),
    "tracking": ("letter_spacing",), "leading": ("line_height",), "line_spacing": ("line_height",),
    "outline": ("stroke",), "border": ("stroke",), "type": ("shape", "kind"), "rotation": ("angle",),
    "direction": ("angle",), "from": ("stops",), "to": ("stops",), "colors": ("stops",),
    "colours": ("stops",), "corner_radius": ("radius",), "text_align": ("align",),
    "vertical_align": ("valign",), "box": ("region",), "area": ("region",), "position": ("region",),
}
_WEIGHT = ("font", "the weight and style are part of the font: font: DejaVu Sans Bold")
KEY_NOTES = {  # keys other tools have, said another way here: word -> (a key of the mapping it is written in, hint)
    "bold": _WEIGHT, "weight": _WEIGHT, "font_weight": _WEIGHT, "italic": _WEIGHT, "font_style": _WEIGHT,
    "orientation": ("diagonal", "for a monitor turned to portrait, swap width and height (and size's two lengths): "
                                "width: 1080, height: 1920"),
}
VALUE_SYNONYMS = {
    "middle": ("center",), "centre": ("center", "middle"), "center": ("middle",), "centered": ("center",),
    "start": ("left", "top"), "end": ("right", "bottom"), "rectangle": ("rect",), "square": ("rect",),
    "circle": ("ellipse",), "oval": ("ellipse",), "crop": ("cover",), "fill": ("cover",),
    "fit": ("contain",), "letterbox": ("contain",), "horizontal": ("landscape",), "vertical": ("portrait",),
    "jpg": ("jpeg",), "tif": ("tiff",), "1080p": ("fhd",), "full-hd": ("fhd",), "fullhd": ("fhd",),
    "1440p": ("qhd",), "wqhd": ("qhd",), "uhd": ("4k",), "2160p": ("4k",), "4320p": ("8k",),
    "dpmpp": ("dpm++",), "dpm-solver": ("dpm++",), "dpmsolver": ("dpm++",), "dpm++2m": ("dpm++",),
}
LAYER_SYNONYMS = {  # a layer type written as another tool names it -> what to write instead
    "rect": "shape: {shape: rect, ...}", "rectangle": "shape: {shape: rect, ...}",
    "box": "shape: {shape: rect, ...}", "ellipse": "shape: {shape: ellipse, ...}",
    "circle": "shape: {shape: ellipse, ...}", "line": "shape: {shape: line, ...}",
    "picture": "image", "photo": "image", "logo": "image", "img": "image",
    "label": "text", "title": "text", "heading": "text", "caption": "text",
    "solid": "fill", "color": "fill", "colour": "fill", "background": "fill",
    "prompt": "generate", "ai": "generate", "art": "generate",
}


def _synonym(word, synonyms: dict, choices) -> str | None:
    """Our name, among `choices`, for what another tool calls `word` (any case); None if there is none."""
    return next((c for c in synonyms.get(str(word).casefold(), ()) if c in choices), None)


# -- the reader: errors with lines, variables, what is known so far -------------------------------------------

class _Reader:
    """State of one load: where errors go, the variables, and the canvas and grids once they are read."""

    def __init__(self, source: str, variables: dict[str, str], base_dir: Path):
        self.source, self.variables, self.base_dir = source, variables, base_dir
        self.relative_to = "the layout file's folder"  # where relative paths are read from, in words
        self.errors: list[tuple[int, str]] = []
        self.dpi = 72
        self.canvas: Canvas | None = None
        self.stand_in = False  # the canvas is invalid: later sections are checked on a lenient stand-in
        self.is_span = False  # a multi-monitor span: the whole span's file name has {monitor} = 'span'
        self.grids: dict[str, Grid] = {}
        self.bad_grids: set[str] = set()  # grids reported invalid: cells of them are not reported again
        self._explicit: dict[int, list] = {}  # mapping node id -> its written keys (merge keys applied)
        self.origins: dict[int, tuple] = {}  # scalar node id -> (variables in it, its value): for messages
        self.own_names = True  # output.name names the files: check it with the variables' values
        self.unset: set[str] = set()  # variables reported without a value: what they fill is not reported again
        self.used: set[str] = set()  # variables a value outside the variables block fills in
        self.alias_lines: dict[tuple[int, int], int] = {}  # _Loader.alias_lines
        self.written = ""  # the YAML text, for what YAML dropped: comments after a value, anchors no alias uses
        self.lines: list[str] = []  # its lines (LF)

    def error(self, node, path: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        path, message = one_line(path), one_line(message)  # whatever values (and layer names in paths) hold
        self.errors.append((line, f"{self.source}:{line}: {path}: {message}" if path else
                            f"{self.source}:{line}: {message}"))

    def parse(self, kind, node, path: str):
        """kind.parse, reporting its complaint at `node`; raises a bare _Bad when the value is invalid."""
        try:
            return kind.parse(self, node, path)
        except _Bad as bad:
            if bad.args and not self.unset.intersection(self.origins.get(id(node), ((),))[0]):
                self.error(node, path, self._sourced(node, bad.args[0]) + self.comment_hint(node))
            raise _Bad() from None

    def comment_hint(self, node) -> str:
        """`hash_comment_hint` for a value left empty (`tint: #ff5a5f`, YAML's null), from the rest of its line."""
        if not isinstance(node, yaml.ScalarNode) or node.value or not node.tag.endswith(":null") or \
                node.start_mark.line >= len(self.lines):
            return ""
        return hash_comment_hint(self.lines[node.start_mark.line][node.start_mark.column:])

    def dropped(self, node) -> str | None:
        """What YAML drops of a text scalar as written, and what to write: a comment right after a plain one that
        starts with a word right after its '#' (`Summer Sale #SummerSale`: a hashtag, where a note is '# note'), or
        a tag (`!Sale now`) or an anchor no alias uses (`&NEW arrivals`) before it; None when nothing is."""
        if not isinstance(node, yaml.ScalarNode) or not node.value or node.end_mark.line >= len(self.lines):
            return None
        start, end = node.start_mark, node.end_mark
        head = re.match(r"(?:[!&]\S*[ \t]+)*", self.lines[start.line][start.column:])[0]  # tags and anchors
        for word in head.split():
            unused = word[:1] == "&" and f"*{word[1:]}" not in self.written
            if unused or word[:1] == "!" and word != "!" and word[:2] != "!!":  # a local tag ('!!str': YAML's)
                return (f"'{word}' is a YAML {'anchor' if unused else 'tag'}, which would be dropped: quote the "
                        f"whole value to keep it: {yaml_quoted(head + node.value)}")
        rest = self.lines[end.line][end.column:].rstrip()
        if node.style is None and (m := re.match(r"[ \t]+(#\S+)", rest)):
            return (f"text after ' #' is a YAML comment, which would be dropped: quote the whole value to keep "
                    f"'{m[1]}': {yaml_quoted(node.value + rest)} (a comment has a space after '#')")
        return None

    def _sourced(self, node, message: str) -> str:
        """`message` naming the variables a bad value came from: "'centre' (from {a}) is not one of ..."."""
        if id(node) not in self.origins:
            return message
        names, value = self.origins[id(node)]
        note = f" (from {' and '.join(f'{{{n}}}' for n in names)})"
        shown = _q(value)
        at = message.find(shown)
        return message[:at + len(shown)] + note + message[at + len(shown):] if at >= 0 else message + note

    def substitute(self, text: str, keep: tuple[str, ...] = ()) -> str:
        """'{name}' -> the variable's value, '{{' / '}}' -> a brace; names in `keep` stay as they are, a variable
        of the same name or not, and so do the escapes and the braces in values (the result is a str.format
        pattern for the exporter, variables filled in literally)."""
        def one(m):
            token, name = m[0], m[1]
            if token in ("{{", "}}"):
                return token if keep else token[0]
            if name in keep:
                return token
            if problem := _brace_problem(text, m, (*keep, *self.variables)):
                raise _Bad(problem)
            if name not in self.variables:
                known = ", ".join(sorted(self.variables)) or "none"
                raise _Bad(f"undefined variable {{{name}}} (defined: {known}){_closest(name, self.variables)}")
            value = self.variables[name]
            self.used.add(name)
            return value.replace("{", "{{").replace("}", "}}") if keep else value
        for m in _VARIABLE_RE.finditer(text):  # '{{title}}', '{{ title }}' (mustache's, Jinja's): the escapes
            # around a name, where '{title}' was meant; not in a longer run of braces ('{{{{title}}}}' is '{{title}}')
            name = _MUSTACHE_RE.match(text, m.start()) if m[0] == "{{" and text[m.start() - 1:m.start()] != "{" \
                else None
            if name and name[1] in self.variables and text[name.end():name.end() + 1] != "}":
                literal = name[0][1:-1]
                raise _Bad(f"'{name[0]}' is a literal '{literal}' (doubled braces escape); write {{{name[1]}}} to use "
                           f"the variable, or, for the text '{literal}', put it in another variable's value (values "
                           f"are used as written)")
        return _VARIABLE_RE.sub(one, text)

    def text(self, node) -> str:
        """A scalar node's text as written, variables substituted; where it came from is kept for messages."""
        text = self.substitute(node.value)
        self._note_origin(node, text)
        return text

    def _note_origin(self, node, value) -> None:
        """Keep which variables the node's text names, and the value they gave, for messages (`_sourced`)."""
        names = [m[1] for m in _VARIABLE_RE.finditer(node.value) if m[1] in self.variables]
        if names:  # not when only an escape ('{{') changed the text
            self.origins[id(node)] = (names, value)

    def scalar(self, node):
        """A scalar node's value, variables substituted in text (then re-read: "{seed}" can be an int)."""
        if isinstance(node, yaml.MappingNode) and len(node.value) == 1 and node.value[0][1].tag.endswith(":null"):
            raise _Bad(f"got a mapping {{{node.value[0][0].value}}}; quote text that starts with '{{': "
                       f"\"{{{node.value[0][0].value}}}\"")
        if not isinstance(node, yaml.ScalarNode):
            raise _Bad(f"expected a single value, got {_a(node)}")
        value = _scalar_value(node)
        if isinstance(value, str) and ("{" in value or "}" in value):
            text = self.substitute(value)
            # read again, as if the value had been written there; unchanged, as written (a variable whose value is
            # its own '{name}' too: noted, for the messages)
            value = text if text == value else _plain_12(text)
            self._note_origin(node, value)
        return value

    def entries(self, node, path: str, table: dict) -> dict | None:
        """key -> (key node, value node) of a mapping, after reporting unknown, duplicate and missing keys."""
        if not isinstance(node, yaml.MappingNode):
            self.error(node, path, f"expected a mapping with keys {', '.join(table)}, got {_a(_value_of(node))}")
            return None
        explicit = self.flatten(node, path)
        seen, found = set(), {}
        for key_node in explicit:
            if key_node.value in seen:
                self.error(key_node, _join(path, key_node.value), "duplicate key")
            seen.add(key_node.value)
        misspelt = set()  # required keys an unknown key was taken for: not reported missing as well
        for key_node, value_node in node.value:
            key = key_node.value
            if key in table:
                found[key] = (key_node, value_node)
            elif key_node in explicit:
                match = _synonym(key.replace("-", "_"), KEY_SYNONYMS, table) or _suggest(key, table)
                misspelt.add(match)
                hint = f"did you mean '{match}'?" if match else f"allowed: {', '.join(table)}"
                if (note := KEY_NOTES.get(key.replace("-", "_").casefold())) and note[0] in table:
                    hint = note[1]
                self.error(key_node, _join(path, key), f"unknown key ({hint})")
        for key, spec in table.items():
            if spec.required and key not in found and key not in misspelt:
                self.error(node, path, f"missing required key '{key}'")
        return found

    def flatten(self, node, path: str) -> list:
        """Apply YAML merge keys (<<: *style, <<: [*a, *b]) to a mapping node, once, as YAML says: a written key
        overrides a merged one, an earlier mapping in the list a later one. Returns the written keys; the node's
        pairs are then the merged ones that stay, then the written ones (duplicates too: `entries` reports them).
        (PyYAML's flatten_mapping keeps the first of a mapping's own pairs and a merged one of the same key.)"""
        if id(node) in self._explicit:
            return self._explicit[id(node)]
        written = [(k, v) for k, v in node.value if k.tag != _MERGE]
        self._explicit[id(node)] = [k for k, _ in written]
        merged = {}  # key -> the pair that stays
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE:
                continue
            for source in value_node.value if isinstance(value_node, yaml.SequenceNode) else (value_node,):
                if not isinstance(source, yaml.MappingNode):
                    self.error(source, _join(path, "<<"), f"bad YAML merge: expected a mapping or a list of "
                                                          f"mappings, got {_a(_value_of(source))}")
                    continue
                self.flatten(source, _join(path, "<<"))  # a mapping merging itself: once, as written
                last = {k.value: (k, v) for k, v in source.value if k.tag != _MERGE}  # its duplicates: the last
                for name, pair in last.items():
                    merged.setdefault(name, pair)
        names = {k.value for k, _ in written}
        node.value = [pair for name, pair in merged.items() if name not in names] + written
        return self._explicit[id(node)]

    def read(self, node, path: str, table: dict) -> tuple[dict, set]:
        """A mapping read against `table`, every problem reported: (key -> parsed value of each valid key,
        the keys without one: written but invalid, or required and missing; every key if not a mapping)."""
        found = self.entries(node, path, table)
        if found is None:
            return {}, set(table)
        values = {}
        for key, (_, value_node) in found.items():
            try:
                values[key] = self.parse(table[key].kind, value_node, _join(path, key))
            except _Bad:
                pass
        return values, set(found) - set(values) | {k for k, s in table.items() if s.required and k not in found}

    def values(self, node, path: str, table: dict) -> dict | None:
        """A mapping read against `table`: key -> parsed value; None if anything in it was invalid."""
        ok = len(self.errors)
        values, bad = self.read(node, path, table)
        return None if bad or len(self.errors) > ok else values


def _construct(node):
    """A scalar node's Python value (str, int, float, bool, None, date)."""
    try:
        return yaml.constructor.SafeConstructor().construct_object(node)
    except (yaml.YAMLError, ValueError) as e:
        raise _Bad(f"cannot read {node.value!r} as {node.tag.rsplit(':', 1)[-1]}: {getattr(e, 'problem', e)}") \
            from None


def _plain_12(text: str):
    """The value of a plain scalar written `text`, as YAML 1.2 reads it (`_CORE_12`)."""
    return next((make(_number_text(text)) for pattern, make in _CORE_12 if pattern.fullmatch(text)), text)


def _number_text(text: str) -> str:
    """`text`, a number as written, if it has at most MAX_DIGITS characters."""
    if len(text.strip()) > MAX_DIGITS:
        raise _Bad(f"'{text.strip()[:20]}...' is a number of {len(text.strip())} characters: at most {MAX_DIGITS}")
    return text


def _scalar_value(node):
    """A scalar node's value: plain scalars as YAML 1.2 reads them, quoted or explicitly tagged ones as written."""
    if node.style is None and node.tag == _RESOLVER.resolve(yaml.ScalarNode, node.value, (True, False)):
        return _plain_12(node.value)
    return _construct(node)


def _value_of(node):
    """A node as a message names it: a scalar's value, else the node (a list or mapping)."""
    if not isinstance(node, yaml.ScalarNode):
        return node
    try:
        return _scalar_value(node)
    except _Bad:
        return node.value


def _join(path: str, key) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


# -- value kinds: parse(reader, node, path) -> value, schema(defs) -> JSON Schema -----------------------------

_VARIABLE_SCHEMA = {"type": "string", "pattern": r"\{[A-Za-z_][A-Za-z0-9_]*\}"}
_SCALAR_SCHEMA = {"type": ["string", "number", "boolean"]}  # text as written: `text: 2024` is "2024"


def _ref(defs: dict, name: str, schema: dict) -> dict:
    defs.setdefault(name, schema)
    return {"$ref": f"#/$defs/{name}"}


@dataclass(frozen=True)
class Text:
    """Any scalar as written ("2024" stays "2024"), variables substituted. Refused: what YAML would drop of the
    text as written (`_Reader.dropped`: `Summer Sale #SummerSale`, `!Sale now`); and in prose (text drawn or
    prompted), a '\\n' written outside double quotes (in a | or > block too), which is a backslash and an n
    there."""

    prose: bool = False

    def parse(self, r, node, path):
        if isinstance(node, yaml.ScalarNode):
            if node.tag.endswith(":null"):
                raise _Bad("expected text, got nothing")
            if problem := r.dropped(node):
                raise _Bad(problem)
            if self.prose and node.style != '"' and "\\n" in node.value:  # plain, '', | and >: as written
                raise _Bad("a literal \\n: write the text in double quotes for a line break, or put each line on "
                           "its own line in a | block")
            return r.text(node)
        return r.scalar(node)  # reports the mapping / list

    def schema(self, defs):
        return dict(_SCALAR_SCHEMA)


class Template(Text):
    """output.name: a file name pattern that keeps the exporter's placeholders {layout}, {seed}, {monitor}
    (variables are filled in literally); as written, it must give a file name. The names it gives with the
    variables' values are checked by `_output_names`."""

    def parse(self, r, node, path):
        if not isinstance(node, yaml.ScalarNode) or node.tag.endswith(":null"):
            return super().parse(r, node, path)
        if problem := r.dropped(node):
            raise _Bad(problem)
        pattern = r.substitute(node.value, keep=OUTPUT_FIELDS)
        if "monitor" in _fields(r, node.value) and not r.is_span:
            raise _Bad(f"'{node.value}': {{monitor}} exists only in spans (a monitor's name in its own file)")
        suffix = next((x for x in OUTPUT_SUFFIXES if node.value.lower().endswith(x)), None)
        if suffix:
            raise _Bad(f"'{node.value}' ends in '{suffix}': output.formats adds the suffix (write "
                       f"'{node.value[:-len(suffix)]}')")
        # each variable stands for a plain word here: the name as written
        written = _VARIABLE_RE.sub(lambda m: "x" if _is_variable(r, m[1]) else m[0], node.value)
        problem = file_name_problem(written.format(layout=Path(r.source).stem, seed=0, monitor="span"))
        if problem:
            raise _Bad(f"'{node.value}' gives a file name that {problem} ({FILE_NAME_RULE})")
        return pattern


FILE_NAME_RULE = "a name in the output folder: not empty, '.' or '..', without '/', '\\' or control characters"


def _brace_problem(text: str, m: re.Match, fields) -> str | None:
    """What is wrong with `m`, a `_VARIABLE_RE` match in `text` whose {names} may be `fields`: a lone brace, or a
    field with a format, conversion, attribute or index ({seed:04d}, {layout.__class__}); else None."""
    if m[1] is None:
        lone = m[0] not in ("{{", "}}")
        return f"unmatched '{m[0]}' in '{text}' (write {m[0] * 2} for a literal brace)" if lone else None
    field = re.split(r"[:!.\[]", m[1])[0]
    if field != m[1] and field in fields:
        return f"write {{{field}}}, not {{{m[1]}}}: fields take no format, conversion or index"
    return None


def name_pattern_problem(pattern: str) -> str | None:
    """Why `pattern`, an output.name as the loader gives it (variables filled in, their braces doubled), is not one
    `file_stems` fills: a lone brace, or a field other than {layout}, {seed} or {monitor} as they are; else None."""
    for m in _VARIABLE_RE.finditer(pattern):
        if problem := _brace_problem(pattern, m, OUTPUT_FIELDS):
            return problem
        if m[1] is not None and m[1] not in OUTPUT_FIELDS:
            return f"{{{m[1]}}} is not a field ({{layout}}, {{seed}} or {{monitor}}; write {{{{ or }}}} for a brace)"
    return None


def _fields(r, written: str) -> set[str]:
    """The exporter's fields ({layout}, {seed}, {monitor}) a name pattern uses (a variable `seed` does not take
    the place of the field)."""
    return {m[1] for m in _VARIABLE_RE.finditer(written) if m[1] in OUTPUT_FIELDS}


def _is_variable(r, name) -> bool:
    """Whether {name} in output.name is a variable, filled in by the loader, not a field the exporter fills."""
    return name in r.variables and name not in OUTPUT_FIELDS


def _bad_character(text: str) -> str | None:
    """The first '/', '\\' or control character in `text`, or None."""
    return next((c for c in text if c in "/\\" or CONTROL_RE.match(c)), None)


def file_name_problem(name: str) -> str | None:
    """Why `name` cannot name a file in the output folder ("has a '/'", ...), or None."""
    if name in ("", ".", ".."):
        return "is empty" if not name else f"is '{name}'"
    if surrogate_problem(name):  # os.fsdecode's stand-in for a byte that is no UTF-8 (a layout file's name)
        return "has half of a UTF-16 surrogate pair, which no file's metadata encodes"
    c = _bad_character(name)
    if c is None:
        return None
    return f"has a '{c}'" if c in "/\\" else "has a control character"


def _finite(value):
    """`value` (a number) if it is finite; YAML's .inf and .nan are no sizes, angles or scales."""
    if not math.isfinite(value):
        raise _Bad(f"expected a finite number, got {value}")
    return value


@dataclass(frozen=True)
class Int:
    lo: int | None = None
    hi: int | None = None
    form: str = ""  # what to write, for the message: "the monitor's pixels, e.g. 3840; ..."

    def parse(self, r, node, path):
        value = r.scalar(node)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"expected a whole number{f' ({self.form})' if self.form else ''}, got {_a(value)}")
        return _in_range(value, self.lo, self.hi)

    def schema(self, defs):
        body = {"type": "integer"} | _bounds(self.lo, self.hi)
        return {"anyOf": [body, _VARIABLE_SCHEMA]}


@dataclass(frozen=True)
class Number:
    lo: float | None = None
    hi: float | None = None
    positive: bool = False
    form: str = ""  # what to write, for the message: '0..1: 0.8 for 80%'
    fraction: bool = False  # 1 is 100%: a value over hi, up to 100 times it, of 10 or more is likely a percentage

    def parse(self, r, node, path):
        value = r.scalar(node)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Bad(f"expected a number{f' ({self.form})' if self.form else ''}, got {_a(value)}"
                       f"{_number_hint(value, units=False)}")
        _finite(value)
        if self.positive and value <= 0:
            raise _Bad(f"must be greater than 0, got {value}")
        if self.fraction and self.hi < value <= 100 * self.hi and value >= 10:
            raise _Bad(f"{range_problem(value, self.lo, self.hi)} ({value / 100:g} for {value:g}%)")
        return _in_range(value, self.lo, self.hi)

    def schema(self, defs):
        body = {"type": "number"} | _bounds(self.lo, self.hi)
        if self.positive:
            body["exclusiveMinimum"] = 0
        return {"anyOf": [body, _VARIABLE_SCHEMA]}


def grid_fit_problem(grid: Grid, area) -> str | None:
    """'3 x 4 cells with 20 px gutters do not fit in 50 x 40 px' when `grid` can't divide its `area` (a Box) into
    cells of at least 1 px, else None; the loader's and studio.check's wording."""
    try:
        split(area.h, grid.rows, grid.gutter[0], grid.row_weights)
        split(area.w, grid.columns, grid.gutter[1], grid.column_weights)
    except ValueError:
        rows, columns = grid.gutter
        gutters = (f"{rows} px gutters" if rows == columns else
                   f"{rows} px gutters between rows and {columns} px between columns")
        sized = " of their relative sizes" if grid.row_weights or grid.column_weights else ""
        return f"{grid.rows} x {grid.columns} cells{sized} with {gutters} do not fit in {area.w} x {area.h} px"
    return None


def range_problem(value, lo, hi) -> str | None:
    """'must be at least 1, got 0' when `value` is outside lo..hi (None: unbounded), else None; the loader's
    and studio.check's wording."""
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        if isinstance(value, int) and value.bit_length() > 64:  # str() refuses over 4300 digits
            value = f"{Decimal(value):.6g}"
        if hi is None:
            return f"must be at least {lo}, got {value}"
        if lo is None:
            return f"must be at most {hi}, got {value}"
        return f"{value} is out of range {lo}..{hi}"
    return None


def _in_range(value, lo, hi):
    if problem := range_problem(value, lo, hi):
        raise _Bad(problem)
    return value


def _bounds(lo, hi) -> dict:
    return ({} if lo is None else {"minimum": lo}) | ({} if hi is None else {"maximum": hi})


class Bool:
    def parse(self, r, node, path):
        value = r.scalar(node)
        if not isinstance(value, bool):
            yaml11 = " (yes, no, on and off are text in YAML 1.2)" if str(value).lower() in YAML11_BOOLS else ""
            raise _Bad(f"expected true or false, got {_a(value)}{yaml11}")
        return value

    def schema(self, defs):
        return {"anyOf": [{"type": "boolean"}, _VARIABLE_SCHEMA]}


class Enum:
    """One of `choices`; `elsewhere`: value -> the other key it is a value of ('middle' -> 'valign: middle')."""

    def __init__(self, *choices: str, elsewhere: dict[str, str] | None = None):
        self.choices, self.elsewhere = choices, elsewhere or {}

    def parse(self, r, node, path):
        value = r.scalar(node)
        if value not in self.choices or not isinstance(value, str):
            match = _synonym(value, VALUE_SYNONYMS, self.choices) or _suggest(value, self.choices)
            other = self.elsewhere.get(str(value).casefold())
            hint = " or ".join(([f"'{match}'"] if match else []) + ([other] if other else []))
            raise _Bad(f"{_q(value)} is not one of {', '.join(self.choices)}"
                       f"{f' (did you mean {hint}?)' if hint else ''}")
        return value

    def schema(self, defs):
        return {"anyOf": [{"enum": list(self.choices)}, _VARIABLE_SCHEMA]}


LENGTH_FORM = "a length (a number with px, pt, mm, cm or in, e.g. 3mm; a bare number is px)"
# units as other tools and people write them -> ours
_UNIT_WORDS = ((re.compile(r'"|\'\'|inch(es)?|in\.', re.IGNORECASE), "in"),
               (re.compile(r"millimet(er|re)s?", re.IGNORECASE), "mm"),
               (re.compile(r"centimet(er|re)s?", re.IGNORECASE), "cm"),
               (re.compile(r"points?", re.IGNORECASE), "pt"), (re.compile(r"pixels?", re.IGNORECASE), "px"))
_DECIMAL_COMMA_RE = re.compile(r"\s*([-+]?[0-9]+),([0-9]+)\s*(%|[a-z]*)\s*", re.IGNORECASE)
_NUMBER_WORD_RE = re.compile(rf"\s*({_NUMBER})\s*(.+?)\s*")


def _number_hint(value, units: bool = True) -> str:
    """What to write for a number or length written another way: with a decimal comma ('; use a decimal point:
    1.5mm'), or (units) with a unit as a word or mark ('; for 27" write 27in'); else ''."""
    if not isinstance(value, str):
        return ""
    if m := _DECIMAL_COMMA_RE.fullmatch(value):
        number, fraction, unit = m.groups()
        if len(fraction) == 3:  # 1,500: a thousands separator, or a decimal comma
            return f"; write numbers without commas: {number}{fraction}{unit}, or {number}.{fraction}{unit}"
        return f"; use a decimal point: {number}.{fraction}{unit}"
    m = _NUMBER_WORD_RE.fullmatch(value) if units else None
    unit = next((ours for word, ours in _UNIT_WORDS if m and word.fullmatch(m[2])), None)
    return f"; for {value.strip()} write {m[1]}{unit}" if unit else ""


def _length(r, node, form: str = LENGTH_FORM) -> tuple[Fraction, str]:
    """A length value -> (number, unit in lower case); a bare number is px. form: what a length is, for the
    message."""
    value = r.scalar(node)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Fraction(_finite(value)), "px"
    m = _LENGTH_RE.fullmatch(value) if isinstance(value, str) else None
    if not m:
        raise _Bad(f"{_q(value)} is not {form}{_number_hint(value)}")
    return Fraction(_number_text(m[1])), (m[2] or "px").lower()


def _units(*units: str) -> str:
    """A schema pattern's alternatives of `units` in any case, as the loader reads them: 'px' -> '[Pp][Xx]'."""
    return "|".join(map(_any_case, units))


def _to_px(number: Fraction, unit: str, dpi: int) -> Fraction:
    return number if unit == "px" else number * MM_PER_UNIT[unit] * dpi / Fraction(254, 10)


def _on_canvas(r, px: Fraction) -> float:
    """A length or offset in px, if it is at most the canvas's larger side (bleed included) either way."""
    side = MAX_SIDE if r.stand_in else max(r.canvas.full_width, r.canvas.full_height)
    if abs(px) > side:
        canvas = "any canvas" if r.stand_in else \
            f"the canvas ({r.canvas.full_width} x {r.canvas.full_height} px, bleed included)"
        raise _Bad(f"{_show(px)} px is larger than {canvas}: at {'least -' if px < 0 else 'most '}{side} px")
    return float(px)


def _sign_check(number, minimum: str) -> None:
    if minimum == "positive" and number <= 0:
        raise _Bad(f"must be greater than 0, got {_show(number)}")
    if minimum == "zero" and number < 0:
        raise _Bad(f"must not be negative, got {_show(number)}")


def _show(number: Fraction) -> str:
    return str(int(number)) if number.denominator == 1 and abs(number) < 10 ** 15 else f"{float(number):g}"


def _length_schema(defs, minimum: str) -> dict:
    """A length's schema; minimum as Length's."""
    number, bound, name = {
        "any": (r"[-+]?(\d+(\.\d*)?|\.\d+)", {}, "signed_length"),
        "zero": (r"\+?(\d+(\.\d*)?|\.\d+)|-(0+(\.0*)?|\.0+)", {"minimum": 0}, "length"),  # -0 is not negative
        "positive": (r"\+?(\d*[1-9]\d*(\.\d*)?|\d*\.\d*[1-9]\d*)", {"exclusiveMinimum": 0}, "positive_length"),
    }[minimum]
    pattern = rf"^\s*({number})\s*({_units(*UNITS)})?\s*$"
    body = {"anyOf": [{"type": "number"} | bound, {"type": "string", "pattern": pattern}, _VARIABLE_SCHEMA],
            "description": "a length: a number of px, or a number with px, pt, mm, cm or in"
                           + (", greater than 0" if minimum == "positive" else "")}
    return _ref(defs, name, body)


@dataclass(frozen=True)
class Length:
    """A length -> px (float) at the canvas DPI; its size at most the canvas's larger side (bleed included).
    minimum: 'positive' | 'zero' | 'any'."""

    minimum: str = "zero"

    def parse(self, r, node, path):
        number, unit = _length(r, node)
        _sign_check(number, self.minimum)
        return _on_canvas(r, _to_px(number, unit, r.dpi))

    def schema(self, defs):
        return _length_schema(defs, self.minimum)


@dataclass(frozen=True)
class TextSize(Length):
    """A text size -> px: a length of at least 1 px at the canvas DPI (FreeType refuses sizes under 0.5 px and
    draws nothing legible under 1 px)."""

    minimum: str = "positive"

    def parse(self, r, node, path):
        px = super().parse(r, node, path)
        value, (_, unit) = r.scalar(node), _length(r, node)
        if px < 1 and not (r.stand_in and unit != "px"):  # a stand-in canvas's DPI may not be the file's
            at = f"{_q(value)} is {px:g} px at {r.dpi} dpi" if unit != "px" else f"{px:g} px is too small"
            raise _Bad(f"{at}; a text size is at least 1 px")
        return px

    def schema(self, defs):
        px = r"\+?0*[1-9]\d*(\.\d*)?"  # from 1
        physical = r"\+?(\d*[1-9]\d*(\.\d*)?|\d*\.\d*[1-9]\d*)"  # positive: its px depend on the dpi
        pattern = rf"^\s*(({px})\s*({_units('px')})?|({physical})\s*({_units('pt', 'mm', 'cm', 'in')}))\s*$"
        body = {"anyOf": [{"type": "number", "minimum": 1}, {"type": "string", "pattern": pattern}, _VARIABLE_SCHEMA],
                "description": "a text size: a number of px, or a number with px, pt, mm, cm or in; at least 1 px at "
                               "the canvas's dpi"}
        return _ref(defs, "text_size", body)


@dataclass(frozen=True)
class CanvasLength(Length):
    """A canvas length -> (number, unit), converted once the canvas DPI is known."""

    def parse(self, r, node, path):
        number, unit = _length(r, node)
        _sign_check(number, self.minimum)
        return number, unit


@dataclass(frozen=True)
class PhysicalLength(Length):
    """A physical length (mm, cm, in, pt) -> mm (float); 0 needs no unit."""

    def parse(self, r, node, path):
        number, unit = _length(r, node, "a physical length (a number with mm, cm, in or pt: 27in, 597mm)")
        if unit == "px" and number != 0:
            raise _Bad(f"{_q(r.scalar(node))} has no physical size; give it in mm, cm, in or pt")
        _sign_check(number, self.minimum)
        return float(number * MM_PER_UNIT.get(unit, 0))

    def schema(self, defs):
        if self.minimum == "positive":
            number, zero, name = r"\+?(\d*[1-9]\d*(\.\d*)?|\d*\.\d*[1-9]\d*)", [], "positive_physical_length"
        else:  # a 0 may be bare or px
            number, name = r"\+?(\d+(\.\d*)?|\.\d+)|-(0+(\.0*)?|\.0+)", "physical_length"
            zero = [{"const": 0},
                    {"type": "string", "pattern": rf"^\s*[-+]?(0+(\.0*)?|\.0+)\s*({_units('px')})?\s*$"}]
        physical = _units("pt", "mm", "cm", "in")
        body = {"anyOf": [{"type": "string", "pattern": rf"^\s*({number})\s*({physical})\s*$"}, *zero,
                          _VARIABLE_SCHEMA],
                "description": "a physical length: a number with pt, mm, cm or in"
                               + (", greater than 0" if self.minimum == "positive" else " (0 needs none)")}
        return _ref(defs, name, body)


@dataclass(frozen=True)
class Position:
    """A region coordinate: '12.5%' of the trim size -> ('%', 12.5), or a length -> ('px', px): a Fraction, exact
    (a bare number as written: 0.1 is 1/10). extent: a width or height, whose schema refuses a negative one (a 0,
    which lines take, is the region's to judge)."""

    extent: bool = False

    def parse(self, r, node, path):
        value = r.scalar(node)
        m = _PERCENT_RE.fullmatch(value) if isinstance(value, str) else None
        if m:
            return "%", float(_number_text(m[1]))
        if isinstance(value, float):
            _finite(value)
        written = isinstance(value, str) and _LENGTH_RE.fullmatch(value)
        if not written and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _Bad(f"{_q(value)} is not a percentage or a length (10%, 120px, 20mm){_number_hint(value)}")
        number, unit = _length(r, node)
        px = _to_px(Fraction(repr(value)) if isinstance(value, float) else number, unit, r.dpi)
        _on_canvas(r, px)
        return "px", px

    def schema(self, defs):
        if self.extent:  # -0 is not negative
            number, bound, name = r"\+?(\d+(\.\d*)?|\.\d+)|-(0+(\.0*)?|\.0+)", {"minimum": 0}, "extent"
        else:
            number, bound, name = r"[-+]?(\d+(\.\d*)?|\.\d+)", {}, "position"
        body = {"anyOf": [{"type": "number"} | bound,
                          {"type": "string", "pattern": rf"^\s*({number})\s*(%|{_units(*UNITS)})?\s*$"},
                          _VARIABLE_SCHEMA],
                "description": "10% of the trim size, or a length: 120px, 20mm, 1in"
                               + (", not negative" if self.extent else "")}
        return _ref(defs, name, body)


COLOURS = ("'#rgb', '#rgba', '#rrggbb', '#rrggbbaa', a name like 'navy', transparent, rgb(r, g, b), "
           "rgba(r, g, b, alpha 0..1), rgb(r g b / alpha), hsl(h, s%, l%), hsv(h, s%, v%) (or hsb), [r, g, b] or "
           "[r, g, b, a]")
# rgb()/rgba() with an alpha: CSS's alpha is 0..1 or a percentage, where Pillow reads rgba()'s as 0..255
_CSS_ALPHA_RE = re.compile(rf"\s*(rgba?\([^,()]*,[^,()]*,[^,()]*),\s*({_NUMBER})\s*(%?)\s*\)\s*", re.IGNORECASE)
# CSS4's space-separated form of the functions (Pillow reads only commas): 'rgb(10 20 30 / 50%)'
_CSS_SPACED_RE = re.compile(rf"\s*(rgba?|hsl|hsv|hsb)\(\s*({_NUMBER}%?)\s+({_NUMBER}%?)\s+({_NUMBER}%?)\s*"
                            rf"(?:/\s*({_NUMBER}%?)\s*)?\)\s*", re.IGNORECASE)


_HEX_RE = re.compile(r"\s*(0x)?([0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})\s*", re.IGNORECASE)  # a colour without '#'


def _comma_form(text: str) -> str:
    """'rgb(10 20 30 / 50%)' -> 'rgb(10, 20, 30, 50%)'; any other text as it is."""
    m = _CSS_SPACED_RE.fullmatch(text)
    return f"{m[1]}({', '.join(c for c in m.groups()[1:] if c is not None)})" if m else text


class Colour:
    """'#rgb', '#rgba', '#rrggbb', '#rrggbbaa', CSS names and functions (Pillow's ImageColor; rgba() with CSS's alpha;
    CSS4's space-separated rgb(r g b / alpha)), 'transparent', [r, g, b(, a)] -> RGBA."""

    def parse(self, r, node, path):
        if isinstance(node, yaml.SequenceNode):
            return self._channels(r, node)
        value = r.scalar(node)
        if value is None:
            raise _Bad("expected a colour, got nothing")
        if isinstance(value, str) and value.strip().casefold() == "transparent":
            return 0, 0, 0, 0  # CSS's: transparent black (gradients mix premultiplied, so it takes any hue)
        text = _comma_form(value) if isinstance(value, str) else None
        m = _CSS_ALPHA_RE.fullmatch(text) if text else None
        try:
            rgba = (ImageColor.getrgb(f"rgb{m[1][m[1].index('('):]})") if m else
                    ImageColor.getrgb(text) if text else None)
        except ValueError:
            rgba = None
        if rgba is None:
            written = value if isinstance(value, str) else node.value  # 0xff5a5f or 000000, a number in YAML
            hexa = _HEX_RE.fullmatch(written)
            if hexa and (hexa[1] or len(hexa[2]) in (6, 8) or not hexa[2].isdigit()):  # not 255, a grey's value
                raise _Bad(f"'{written}' is not a colour (did you mean \"#{hexa[2]}\", quoted?)")
            raise _Bad(f"{_q(value)} is not a colour ({COLOURS})")
        alpha = float(m[2]) / (100 if m[3] else 1) if m else 1
        if not all(0 <= c <= 255 for c in rgba) or not 0 <= alpha <= 1:  # Pillow reads rgb(300, 0, 0) as is
            allowed = ("saturation and lightness (or value) are 0%..100%" if value.lower().startswith("hs") else
                       "components are 0..255, or 0%..100%; alpha is 0..1 or 0%..100%" if m else
                       "components are 0..255, or 0%..100%")
            raise _Bad(f"'{value}' is out of range: {allowed}")
        if m:
            return tuple(rgba) + (round(alpha * 255),)
        return tuple(rgba) + (255,) * (4 - len(rgba))

    def _channels(self, r, node):
        items = [r.scalar(n) for n in node.value]
        if len(items) not in (3, 4) or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255
                                                for c in items):
            raise _Bad(f"{items} is not a colour: a list is [r, g, b] or [r, g, b, a] with whole numbers 0..255")
        return tuple(items) + (255,) * (4 - len(items))

    def schema(self, defs):
        channel = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 255}, _VARIABLE_SCHEMA]}
        body = {"anyOf": [{"type": "string"},
                          {"type": "array", "items": channel, "minItems": 3, "maxItems": 4}],
                "description": COLOURS}
        return _ref(defs, "colour", body)


def font_problem(name: str, base_dir: Path | None, relative_to: str) -> str | None:
    """Why the font `name` (a file relative to `base_dir`, '#index' for another face, or an installed family;
    `relative_to` says where relative paths are read) can't be drawn: blank, a control character, not found
    (`fonts.not_found`), no font Pillow reads or no such face (`fonts.index_problem`); else None. The loader's and
    studio.check's wording."""
    if not name.strip():  # fonts.find_face reads '' as the bundled font; written, it is a slip
        return f"expected a font file or an installed family, got '{name}'; leave font out for the bundled font"
    if control_problem(name):
        return f"'{name}' {control_problem(name)}"
    face = fonts.find_face(name, base_dir)
    if face is None:
        return fonts.not_found(name, base_dir, relative_to)
    if face.path == fonts.DEFAULT:
        return None
    try:
        fonts.open_face(face, 12)
    except (OSError, ValueError) as e:
        problem = fonts.index_problem(face)
        return f"'{name}': {problem}" if problem else f"'{name}' is not a font Pillow can read ({e})"
    return None


class Font(Text):
    """A font file (relative to the layout file's folder, '#index' for another face than the first) or an installed
    family -> the file, with its '#index'; `default` (any case) -> None, the bundled font, as leaving font out."""

    def parse(self, r, node, path):
        name = super().parse(r, node, path)
        if problem := font_problem(name, r.base_dir, r.relative_to):
            raise _Bad(problem)
        face = fonts.find_face(name, r.base_dir)
        return None if face.path == fonts.DEFAULT else str(face)  # the file, with '#index' for another face

    def schema(self, defs):
        return super().schema(defs) | {"pattern": r"\S"}  # not blank (a pattern binds only text)


class ImagePath(Text):
    """An image file (relative to the layout file's folder) that the compositor can draw, of at most MAX_PIXELS
    (`compose.picture_problem`) -> its absolute path."""

    def parse(self, r, node, path):
        from studio.compose import picture_problem  # compose imports this module

        name = super().parse(r, node, path)
        if control_problem(name):
            raise _Bad(f"'{name}' {control_problem(name)}")
        file = input_path(name, r.base_dir)
        if problem := file_problem(name, file, "image file", r.relative_to):
            raise _Bad(problem)
        file = file.resolve()  # a regular file: no loop on the way
        if problem := picture_problem(name, file):
            raise _Bad(problem)
        return str(file)


class Model(Text):
    """A model folder (relative to the layout file's folder) -> its absolute path, or a hub id 'owner/name' (a
    `HubId`: a folder of that name in the working folder does not replace it)."""

    def parse(self, r, node, path):
        name = super().parse(r, node, path)
        if not name.strip():
            raise _Bad("expected a model folder or hub id, got ''")
        if control_problem(name):
            raise _Bad(f"'{name}' {control_problem(name)}")
        folder = input_path(name, r.base_dir)
        if folder.is_dir():
            if not (folder / "model_index.json").is_file() and not (folder / "transformer" / "config.json").is_file():
                raise _Bad(f"'{name}' has no model_index.json (expected a pipeline folder in the diffusers layout, "
                           f"or a transformer-only one: transformer/config.json)")
            return str(folder.resolve())
        if not is_hub_id(name, r.base_dir):
            raise _Bad(f"no such model folder '{name}' (folders are relative to {r.relative_to}; a hub id is "
                       f"'owner/name')")
        return HubId(name)


class ByteSize(Text):
    """A memory size with its unit: 6GiB, 512MiB, 2GB (a bare number is refused: bytes? GiB?); or auto, also
    written none, in any case (`memory.parse_bytes`, as --memory-budget takes it): the automatic budget."""

    def parse(self, r, node, path):
        text = super().parse(r, node, path)
        if not text.strip():  # parse_bytes reads '' as auto (no --memory-budget); written, it is a slip
            raise _Bad(f"'{text}' is not a size: write one like 6GiB, or auto")
        if problem := budget_problem(text):
            raise _Bad(problem)
        return text

    def schema(self, defs):
        units = "|".join(map(_any_case, _UNITS))
        size = {"type": "string",
                "pattern": rf"^\s*([0-9]*\.?[0-9]+\s*({units})|{_any_case('auto')}|{_any_case('none')})\s*$"}
        return {"anyOf": [size, _VARIABLE_SCHEMA]}


def _any_case(word: str) -> str:
    """A pattern of `word` in any case: 'gib' -> '[Gg][Ii][Bb]' (JSON Schema patterns have no flags)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word)


@dataclass(frozen=True)
class ListOf:
    item: object
    min_items: int = 0
    max_items: int | None = None
    single_ok: bool = False  # a single item may stand for a one-item list
    unique: bool = False  # no item twice
    form: str = ""  # what to write, for the message: '[rows, columns], e.g. [1, 2]'

    def parse(self, r, node, path):
        if self.single_ok and not isinstance(node, yaml.SequenceNode):
            return (r.parse(self.item, node, path),)
        if not isinstance(node, yaml.SequenceNode):
            raise _Bad(f"expected a list{f' ({self.form})' if self.form else ''}, got {_a(_value_of(node))}")
        n = len(node.value)
        if n < self.min_items or (self.max_items is not None and n > self.max_items):
            wanted = (_count(self.min_items, "item") if self.min_items == self.max_items else
                      f"at least {_count(self.min_items, 'item')}" if self.max_items is None else
                      f"{self.min_items} to {self.max_items} items")
            raise _Bad(f"expected {wanted}, got {n}")
        items, bad = [], False
        for i, child in enumerate(node.value):
            try:
                items.append(r.parse(self.item, child, _join(path, i)))
            except _Bad:
                bad = True
        if bad:
            raise _Bad()
        twice = next((item for i, item in enumerate(items) if item in items[:i]), None) if self.unique else None
        if twice is not None:
            raise _Bad(f"'{twice}' is listed twice")
        return tuple(items)

    def schema(self, defs):
        body = {"type": "array", "items": self.item.schema(defs), "minItems": self.min_items}
        if self.unique:
            body["uniqueItems"] = True
        if self.max_items is not None:
            body["maxItems"] = self.max_items
        return {"anyOf": [self.item.schema(defs), body]} if self.single_ok else body


@dataclass(frozen=True)
class Mapping:
    """A nested mapping read against a key table -> dict (key -> value)."""

    name: str
    table: dict

    def parse(self, r, node, path):
        values = r.values(node, path, self.table)
        if values is None:
            raise _Bad()
        return values

    def schema(self, defs):
        return _ref(defs, self.name, _object_schema(self.table, defs))


def _object_schema(table: dict, defs: dict) -> dict:
    body = {"type": "object", "properties": {}, "additionalProperties": False}
    for key, spec in table.items():
        body["properties"][key] = spec.kind.schema(defs) | ({"description": spec.doc} if spec.doc else {})
    required = [k for k, s in table.items() if s.required]
    return body | ({"required": required} if required else {})


@dataclass(frozen=True)
class Key:
    kind: object
    doc: str = ""
    required: bool = False


# -- regions ------------------------------------------------------------------------------------------------

class Cell:
    """[grid, row, column] -> (the grid's name as written, row, column): the row and the column each a whole number
    from 0 as YAML 1.2 reads it (1, +1, 0x1, 0o1) or as digits in text ('1'), else its text as written, which
    `RegionKind._cell` reports."""

    def parse(self, r, node, path):
        name, *texts = ListOf(Text(), 3, 3).parse(r, node, path)
        indices = []
        for text, item in zip(texts, node.value[1:]):
            value = r.scalar(item)
            if isinstance(value, str) and _INDEX_RE.fullmatch(value):
                value = int(_number_text(value))
            whole = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            indices.append(value if whole else text)
        return name, *indices

    def schema(self, defs):
        index = {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": rf"^{_INDEX_RE.pattern}$"},
                           _VARIABLE_SCHEMA]}
        # prefixItems is draft 2020-12's; a draft-07 validator (older editors) skips it: no "items": false beside
        # it, which draft-07 would read as "no items" (the length is minItems and maxItems)
        return ListOf(Text(), 3, 3).schema(defs) | {"prefixItems": [dict(_SCALAR_SCHEMA), index, index]}


BOX_KEYS = {
    "x": Key(Position(), "left edge from the trim's left: 10%, 120px, 20mm (default 0)"),
    "y": Key(Position(), "top edge from the trim's top (default 0)"),
    "w": Key(Position(extent=True), "width", required=True),
    "h": Key(Position(extent=True), "height", required=True),
}
CELL_KEYS = {
    "cell": Key(Cell(), "[grid, row, column], row and column from 0", required=True),
    "span": Key(ListOf(Int(1), 2, 2, form="[rows, columns], e.g. [1, 2]"),
                "[rows, columns] the region covers (default [1, 1])"),
}


class RegionKind:
    """'full' | 'safe' | {x, y, w, h} | {cell: [grid, row, column], span: [rows, columns]} -> spec.Region."""

    def __init__(self, allow_empty: bool = False):
        self.allow_empty = allow_empty  # lines may have no width or height, written or rounded (shapes: `_shape`)

    def parse(self, r, node, path):
        if not isinstance(node, yaml.MappingNode):
            value = r.scalar(node)
            if value not in ("full", "safe"):
                raise _Bad(f"{_q(value)} is not a region (full, safe, {{x, y, w, h}} or "
                           f"{{cell: [grid, row, column]}}){_closest(value, ('full', 'safe'))}")
            return Region(value)
        r.flatten(node, path)
        if any(k.value == "cell" for k, _ in node.value):
            return self._cell(r, node, path)
        return self._box(r, node, path)

    def _box(self, r, node, path):
        values = r.values(node, path, BOX_KEYS)
        if values is None:
            raise _Bad()
        coords = {k: values.get(k, ("%", 0.0)) for k in "xywh"}
        for k in "wh":
            if coords[k][1] < 0 or (coords[k][1] == 0 and not self.allow_empty):
                raise _Bad(f"{k} must be greater than 0, got "
                           f"{float(coords[k][1]):g}{'%' if coords[k][0] == '%' else ' px'}")
        trim = {"x": r.canvas.width, "w": r.canvas.width, "y": r.canvas.height, "h": r.canvas.height}
        # exact: edges that meet in exact arithmetic round alike (a float sum may fall a hair short of a half)
        px = {k: v if unit == "px" else percent(v, trim[k]) for k, (unit, v) in coords.items()}
        _check_inside(px, r.canvas)
        units = {unit for unit, _ in coords.values()}
        region = (Region("percent", *(coords[k][1] for k in "xywh")) if units == {"%"} else
                  Region("px", *(px[k] for k in "xywh")))
        # not on a stand-in: its percentages round unlike the canvas's
        if not self.allow_empty and not r.stand_in and (problem := empty_problem(region, r.canvas)):
            raise _Bad(problem)
        return region

    def _cell(self, r, node, path):
        values = r.values(node, path, CELL_KEYS)
        if values is None:
            raise _Bad()
        name, row, column = values["cell"]
        rows, columns = values.get("span", (1, 1))
        grid = r.grids.get(name)
        if grid is None and name in r.bad_grids:
            raise _Bad()  # the grid's own error says what is wrong
        if grid is None:
            known = ", ".join(r.grids) or "none defined before this point"
            raise _Bad(f"cell: no grid '{name}'{_closest(name, r.grids)} (grids: {known})")
        indices = []
        for what, index, count, extent in (("row", row, grid.rows, rows), ("column", column, grid.columns, columns)):
            if isinstance(index, str):
                raise _Bad(f"cell: the {what} must be a whole number from 0, got '{index}'")
            if index + extent > count:
                last = f"{what}s {index}..{index + extent - 1}" if extent > 1 else f"{what} {index}"
                raise _Bad(f"cell: {last} out of range: grid '{name}' has {_count(count, what)} (0..{count - 1})")
            indices.append(index)
        return Region("cell", grid=name, row=indices[0], column=indices[1], row_span=rows, column_span=columns)

    def schema(self, defs):
        box = _object_schema(BOX_KEYS, defs)
        cell = _object_schema(CELL_KEYS, defs)
        body = {"anyOf": [{"enum": ["full", "safe"]}, _VARIABLE_SCHEMA, box, cell],
                "description": "full (trim + bleed), safe (trim minus safe_margin), {x, y, w, h} or "
                               "{cell: [grid, row, column], span: [rows, columns]}"}
        return _ref(defs, "region", body)


def _check_inside(px: dict, canvas: Canvas) -> None:
    """A box (trim coordinates, px) must lie on the full canvas (`outside_problem`)."""
    problem = outside_problem(px["x"], px["y"], px["x"] + px["w"], px["y"] + px["h"], canvas)
    if problem:
        raise _Bad(f"the region is outside the canvas: {problem}")


def outside_problem(left, top, right, bottom, canvas: Canvas) -> str | None:
    """What of a box (its edges in trim px) leaves the full canvas, bleed included, once its edges are rounded to
    whole pixels as the planner rounds them (`geometry.edge`: x: -3mm at 70 dpi is -8.27 px, -9, the edge of a
    3 mm bleed of 9 px); None when it lies on the canvas. A box of no width (a line's) is the column at its left
    edge, which must be on the canvas too: x: 100% is one past the last column (as y: 100% is past the last row),
    where w: 100% ends a line at the last one. The loader and `check.check_layout` say it alike."""
    b, w, h = canvas.bleed, canvas.width, canvas.height
    edges = ((edge(left, w) < -b, f"x = {float(left):g} px is left of the canvas (from {-b} px)"),
             (edge(top, h) < -b, f"y = {float(top):g} px is above the canvas (from {-b} px)"),
             (edge(right, w) > w + b, f"x + w = {float(right):g} px is right of the canvas (to {w + b} px)"),
             (edge(bottom, h) > h + b, f"y + h = {float(bottom):g} px is below the canvas (to {h + b} px)"),
             (right == left and edge(left, w) >= w + b, _past_the_last("x", "w", "column", left, w, b)),
             (bottom == top and edge(top, h) >= h + b, _past_the_last("y", "h", "row", top, h, b)))
    return next((message for outside, message in edges if outside), None)


def empty_problem(region: Region, canvas: Canvas) -> str | None:
    """What is wrong with a box region (px or percent) less than 1 px wide or high once its edges are rounded to
    whole pixels as the planner and compositor round them (`geometry.resolve`: {x: 9.6px, w: 0.5px} is 10 to 10,
    no column), which would draw nothing; None when it is at least 1 x 1 px. The loader and `check.check_layout`
    say it alike."""
    box = resolve(region, canvas, {})
    if box.w >= 1 and box.h >= 1:
        return None
    key, size, trim = ("x", "w", canvas.width) if box.w < 1 else ("y", "h", canvas.height)
    start, end = getattr(region, key), getattr(region, key) + getattr(region, size)
    if region.kind == "percent":  # as resolve: the sum's percentage
        start, end = percent(start, trim), percent(end, trim)
    return (f"the region is {box.w} x {box.h} px once its edges are rounded to whole pixels ({key} = "
            f"{float(start):g} px and {key} + {size} = {float(end):g} px both round to {edge(start, trim)}); a region "
            f"is at least 1 px wide and high")


def _past_the_last(key: str, size: str, line: str, at, trim: int, bleed: int) -> str:
    last = trim + bleed - 1
    return (f"with {size}: 0 the region is the {line} at {key}, and {key} = {float(at):g} px is past the last "
            f"{line}, {last} px ({f'{key}: 100% is one past it; ' if not bleed else ''}write {key}: {last}px)")


# -- gradient stops -----------------------------------------------------------------------------------------

class StopPosition:
    """A gradient stop's position: a number 0..1, or a percentage 0%..100% -> 0..1."""

    NUMBER = Number(0, 1, form="0..1, or a percentage: 0.5 or 50%", fraction=True)

    def parse(self, r, node, path):
        value = r.scalar(node)
        m = _PERCENT_RE.fullmatch(value) if isinstance(value, str) else None
        if not m:
            return self.NUMBER.parse(r, node, path)
        percent = _finite(float(_number_text(m[1])))
        if not 0 <= percent <= 100:
            raise _Bad(f"'{value}' is out of range 0%..100%")
        return percent / 100

    def schema(self, defs):
        return {"anyOf": [*self.NUMBER.schema(defs)["anyOf"],
                          {"type": "string", "pattern": r"^\s*\+?(\d+(\.\d*)?|\.\d+)\s*%\s*$"}]}


class Stops:
    """['#000', '#fff'] (evenly spaced) or [[0, '#000'], [0.3, red], [1, '#fff']] -> ((pos, RGBA), ...)."""

    def parse(self, r, node, path):
        if not isinstance(node, yaml.SequenceNode) or len(node.value) < 2:
            raise _Bad(f"expected a list of at least 2 colours or [position, colour] pairs, "
                       f"got {_a(_value_of(node)) if not isinstance(node, yaml.SequenceNode) else 'one'}")
        pairs = [isinstance(n, yaml.SequenceNode) and len(n.value) == 2 for n in node.value]
        if any(pairs) and not all(pairs):
            raise _Bad("mixes colours and [position, colour] pairs; use one form")
        if not any(pairs):
            colours = r.parse(ListOf(Colour()), node, path)
            return tuple((i / (len(colours) - 1), c) for i, c in enumerate(colours))
        stops, bad = [], False
        for i, pair in enumerate(node.value):
            try:
                stops.append((r.parse(StopPosition(), pair.value[0], _join(_join(path, i), 0)),
                              r.parse(Colour(), pair.value[1], _join(_join(path, i), 1))))
            except _Bad:
                bad = True
        if bad:
            raise _Bad()
        for (a, _), (b, _) in zip(stops, stops[1:]):
            if b < a:
                raise _Bad(f"positions must not decrease: {b:g} comes after {a:g}")
        return tuple(stops)

    def schema(self, defs):
        colour = Colour().schema(defs)
        pair = {"type": "array", "prefixItems": [StopPosition().schema(defs), colour],  # see RegionKind.schema
                "minItems": 2, "maxItems": 2}
        return {"type": "array", "items": {"anyOf": [colour, pair]}, "minItems": 2,
                "description": "colours evenly spaced, or [position 0..1 or 0%..100%, colour] pairs"}


# -- layers -------------------------------------------------------------------------------------------------

STROKE_KEYS = {
    "width": Key(Length("positive"), "stroke width", required=True),
    "color": Key(Colour(), "stroke colour (default black)"),
}
SHADOW_KEYS = {
    "dx": Key(Length("any"), "offset right (default 4px)"),
    "dy": Key(Length("any"), "offset down (default 4px)"),
    "blur": Key(Length(), "the Gaussian blur's standard deviation (default 4px; CSS's blur radius is about twice it)"),
    "color": Key(Colour(), "shadow colour (default #000000a0)"),
}
COMMON_KEYS = {
    "opacity": Key(Number(0, 1, form="0..1: 0.8 for 80%", fraction=True),
                   "0..1, multiplies the layer's alpha (default 1)"),
    "name": Key(Text(), "a name for messages and manifests (unique)"),
}
GENERATE_KEYS = {
    "prompt": Key(Text(prose=True), "what to generate", required=True),
    "negative_prompt": Key(Text(prose=True), "what to avoid"),
    "seed": Key(Int(0, MAX_SEED), "random seed (default 0)"),
    "steps": Key(Int(1, 1000), "sampling steps (default 20)"),
    "guidance": Key(Number(0), "classifier-free guidance scale (default 4.5)"),
    "sampler": Key(Enum(*SAMPLERS), "default: the model's scheduler"),
    "model": Key(Model(), "model folder (relative to the layout file) or hub id (default: the layout's "
                          "model, else the command line's --model)"),
    "region": Key(RegionKind(), "where the image goes (default full)"),
    "fit": Key(Enum("cover", "contain"), "cover crops, contain letterboxes (default cover)"),
    "strategy": Key(Enum("auto", "direct", "upscale"), "direct: at the region's size; upscale: at the model's bin, "
                    "resampled (default auto: direct from 0.25x to 2.25x the model's native pixels)"),
} | COMMON_KEYS
IMAGE_KEYS = {
    "path": Key(ImagePath(), "image file, relative to the layout's folder", required=True),
    "region": Key(RegionKind(), "default full"),
    "fit": Key(Enum("cover", "contain"), "default cover"),
} | COMMON_KEYS
TEXT_KEYS = {
    "text": Key(Text(prose=True), "the text; '\\n' in double quotes breaks lines", required=True),
    "font": Key(Font(), "a .ttf/.otf/.ttc path (#index: another face than the first) or an installed family "
                        "(default: the bundled font, also written default)"),
    "size": Key(TextSize(), "font size: 48pt, 120px, 10mm, at least 1 px (default 48px)"),
    "color": Key(Colour(), "default black"),
    "region": Key(RegionKind(), "default safe"),
    "align": Key(Enum("left", "center", "right", elsewhere={"middle": "valign: middle"}), "default left"),
    "valign": Key(Enum("top", "middle", "bottom", elsewhere={"center": "align: center"}), "default top"),
    "wrap": Key(Bool(), "wrap words to the region's width (default true)"),
    "shrink_to_fit": Key(Bool(), "shrink the size until the text fits the region (default false)"),
    "line_height": Key(Number(hi=100, positive=True, form="a multiple of the size: 1.3 for 130%", fraction=True),
                       "multiple of the size, at most 100 (default 1.2)"),
    "letter_spacing": Key(Length("any"), "extra space between letters (default 0)"),
    "stroke": Key(Mapping("stroke", STROKE_KEYS), "outline: {width, color}"),
    "shadow": Key(Mapping("shadow", SHADOW_KEYS), "drop shadow: {dx, dy, blur, color}"),
} | COMMON_KEYS
SHAPE_KEYS = {
    "shape": Key(Enum("rect", "ellipse", "line"), "line: from the region's top-left to bottom-right",
                 required=True),
    "region": Key(RegionKind(allow_empty=True), required=True),
    "fill": Key(Colour(), "fill colour (rect, ellipse)"),
    "stroke": Key(Mapping("stroke", STROKE_KEYS), "outline: {width, color}"),
    "radius": Key(Length(), "corner radius (rect)"),
} | COMMON_KEYS
FILL_KEYS = {
    "color": Key(Colour(), required=True),
    "region": Key(RegionKind(), "default full"),
} | COMMON_KEYS
GRADIENT_KEYS = {
    "stops": Key(Stops(), required=True),
    "kind": Key(Enum("linear", "radial"), "default linear"),
    "angle": Key(Number(), "degrees, linear only: 0 left to right, 90 top to bottom (default 90)"),
    "region": Key(RegionKind(), "default full"),
} | COMMON_KEYS


def _generate(v: dict, r, node, path) -> GenerateLayer:
    return GenerateLayer(**v)


def _image(v: dict, r, node, path) -> ImageLayer:
    return ImageLayer(**v)


def _text(v: dict, r, node, path) -> TextLayer:
    stroke, shadow = v.pop("stroke", None), v.pop("shadow", None)
    if stroke:
        v |= {"stroke_width": stroke["width"], "stroke_color": stroke.get("color", (0, 0, 0, 255))}
    if shadow is not None:
        v["shadow"] = Shadow(**shadow)
    return TextLayer(**v)


def _shape(v: dict, r, node, path) -> ShapeLayer:
    stroke = v.pop("stroke", None)
    if stroke:
        v |= {"stroke": stroke.get("color", (0, 0, 0, 255)), "stroke_width": stroke["width"]}
    problem = (
        "a line has no fill; give it a stroke: {width, color}" if v["shape"] == "line" and "fill" in v else
        "a line needs a stroke: {width, color}" if v["shape"] == "line" and not stroke else
        f"{_an(v['shape'])} with neither fill nor stroke draws nothing" if not stroke and "fill" not in v else
        "radius applies to rect only" if v["shape"] != "rect" and v.get("radius") else
        None)
    if problem:
        raise _Bad(problem)
    if v["shape"] != "line" and (v["region"].kind in ("px", "percent")) and not (v["region"].w and v["region"].h):
        raise _Bad(f"{_an(v['shape'])} needs a region with w and h greater than 0")
    if v["shape"] != "line" and v["region"].kind in ("px", "percent") and not r.stand_in and \
            (problem := empty_problem(v["region"], r.canvas)):
        r.error(_node_at(node, "region"), _join(path, "region"), problem)
        raise _Bad()
    return ShapeLayer(**v)


def _fill(v: dict, r, node, path) -> FillLayer:
    return FillLayer(**v)


def _gradient(v: dict, r, node, path) -> GradientLayer:
    if v.get("kind") == "radial" and "angle" in v:
        raise _Bad("angle applies to linear gradients only (a radial one spreads from its region's centre; "
                   "remove angle or make it kind: linear)")
    return GradientLayer(**v)


# type key -> (key table, builder(values, reader, node, path) -> spec layer)
LAYER_TYPES = {
    "generate": (GENERATE_KEYS, _generate),
    "image": (IMAGE_KEYS, _image),
    "text": (TEXT_KEYS, _text),
    "shape": (SHAPE_KEYS, _shape),
    "fill": (FILL_KEYS, _fill),
    "gradient": (GRADIENT_KEYS, _gradient),
}


def _named(r: _Reader, path: str, body) -> str:
    """A layer's path in messages with its name when its body gives one: 'layers[2] (title)'."""
    name = _written_name(r, body)
    return f"{path} ({name})" if name else path


def _written_name(r: _Reader, node) -> str | None:
    """The `name:` written in a mapping node, variables substituted; None when there is none (or it is bad)."""
    value = _node_at(node, "name") if isinstance(node, yaml.MappingNode) else node
    if value is node or not isinstance(value, yaml.ScalarNode) or not value.value:
        return None
    try:
        return r.substitute(value.value)
    except _Bad:
        return None


def _layer_body(node):
    """The mapping under a layer's type key (`- text: {...}`), or None."""
    kind = _layer_type(node)
    return _node_at(node, kind) if kind else None


class LayerKind:
    """- text: {...}: a one-key mapping, the key naming the layer type."""

    def parse(self, r, node, path):
        if not isinstance(node, yaml.MappingNode) or not node.value:
            raise _Bad(f"expected a layer, one of {', '.join(LAYER_TYPES)}: {{...}}, got {_a(_value_of(node))}")
        r.flatten(node, path)
        types = [(k, v) for k, v in node.value if k.value in LAYER_TYPES]
        type_keys = LAYER_TYPES[types[0][0].value][0] if types else {}
        # a setting named like a layer type beside the layer (`- text:` then `text: hi` below it, not indented)
        types = types[:1] + [(k, v) for k, v in types[1:]
                             if k.value not in type_keys or isinstance(v, yaml.MappingNode)]
        if len(types) == 1:
            if isinstance(types[0][1], yaml.MappingNode):  # its name may be merged
                r.flatten(types[0][1], _join(path, types[0][0].value))
            path = _named(r, path, types[0][1])
        for key_node, _ in node.value:
            if any(key_node is k for k, _ in types):
                continue
            if key_node.value in type_keys:
                r.error(key_node, _join(path, key_node.value),
                        f"belongs inside '{types[0][0].value}:' (indent it under the layer type)")
            else:
                other = LAYER_SYNONYMS.get(str(key_node.value).casefold())
                hint = (f" (did you mean {other}?)" if other and " " in other else
                        f" (did you mean '{other}'?)" if other else
                        _closest(key_node.value, LAYER_TYPES) or f" (layer types: {', '.join(LAYER_TYPES)})")
                r.error(key_node, _join(path, key_node.value), f"unknown layer type{hint}")
        if len(types) > 1:
            raise _Bad(f"one layer per list item; this one is {' and '.join(k.value for k, _ in types)}")
        stray = len(types) != len(node.value)  # reported above; the layer's own settings are still checked
        if not types or (stray and types[0][1].tag.endswith(":null")):
            raise _Bad()
        key_node, body = types[0]
        sub = _join(path, key_node.value)
        table, build = LAYER_TYPES[key_node.value]
        values = r.values(body, sub, table)
        if values is None or stray:
            raise _Bad()
        try:
            return build(values, r, body, sub)
        except _Bad as bad:
            if bad.args:
                r.error(body, sub, bad.args[0])
            raise _Bad() from None

    def schema(self, defs):
        options = [{"type": "object", "properties": {name: _ref(defs, f"{name}_layer", _object_schema(table, defs))},
                    "required": [name], "additionalProperties": False}
                   for name, (table, _) in LAYER_TYPES.items()]
        return {"oneOf": options}


# -- the sections -------------------------------------------------------------------------------------------

CANVAS_KEYS = {
    "preset": Key(Enum(*PRESETS), "a named size (see layouts/README.md); or width and height"),
    "orientation": Key(Enum("landscape", "portrait"), "swap width and height to this orientation"),
    "width": Key(CanvasLength("positive"), "trim width: 3000px, 420mm, 16.5in"),
    "height": Key(CanvasLength("positive"), "trim height"),
    "dpi": Key(Int(1, MAX_DPI), "pixels per inch (default 300 for physical sizes, else 72; in a span, the "
                                "densest monitor's, rounded)"),
    "bleed": Key(CanvasLength(), "extra margin cut off in print, on every side (default 0)"),
    "safe_margin": Key(CanvasLength(), "margin inside the trim kept clear of cuts (default 0)"),
    "background": Key(Colour(), "default white"),
}
class Tracks:
    """A grid's rows (columns): a count of equal ones, or a list of relative sizes ([1, 2, 1]) -> (count, sizes),
    sizes () when equal."""

    COUNT, SIZES = Int(1, 1000), ListOf(Number(hi=1e6, positive=True), 1, 1000)

    def parse(self, r, node, path):
        if isinstance(node, yaml.SequenceNode):
            sizes = r.parse(self.SIZES, node, path)
            return len(sizes), sizes
        return r.parse(self.COUNT, node, path), ()

    def schema(self, defs):
        return {"anyOf": [*self.COUNT.schema(defs)["anyOf"], self.SIZES.schema(defs)]}


GRID_KEYS = {
    "rows": Key(Tracks(), "a count, or relative heights: [1, 2, 1]", required=True),
    "columns": Key(Tracks(), "a count, or relative widths: [2, 1]", required=True),
    "gutter": Key(ListOf(Length(), 1, 2, single_ok=True),
                  "gap between cells: one length, or [between rows, between columns] (default 0)"),
    "region": Key(RegionKind(), "the area divided (default full)"),
}
MONITOR_KEYS = {
    "name": Key(Text(), "default monitor-1, monitor-2, ..."),
    "width": Key(Int(1, MAX_SIDE, form="the monitor's pixels, e.g. 3840; its physical size goes in size: "
                                       "[597mm, 336mm]"), "pixels", required=True),
    "height": Key(Int(1, MAX_SIDE, form="the monitor's pixels, e.g. 2160; its physical size goes in size: "
                                        "[597mm, 336mm]"), "pixels", required=True),
    "size": Key(ListOf(PhysicalLength("positive"), 2, 2),
                "[width, height] of the picture as the monitor stands: [597mm, 336mm] (in portrait: [336mm, 597mm])"),
    "diagonal": Key(PhysicalLength("positive"), "picture diagonal, e.g. 27in (instead of size)"),
}


def aspect_problem(width: int, height: int, width_mm, height_mm, given: str, swapped: str) -> str | None:
    """Why a monitor of `width` x `height` px cannot have a picture of `width_mm` x `height_mm` (written `given`):
    its ratio is more than MAX_ASPECT_OFF from the pixels' (pixels are square), with `swapped` (the size the
    other way round) suggested when that one fits; else None. The loader's and studio.check's wording."""
    pixels = width / height

    def off(ratio) -> bool:
        return max(ratio / pixels, pixels / ratio) > 1 + MAX_ASPECT_OFF

    width_mm, height_mm = float(width_mm), float(height_mm)  # a layout built in code may give a Fraction
    ratio = width_mm / height_mm if height_mm else math.inf
    if not (0 < ratio < math.inf):  # sizes far apart enough to overflow or round to 0 (a layout built in code)
        return f"{given} is no picture size for a monitor of {width}x{height} px"
    if not off(ratio):
        return None
    hint = (f": did you mean {swapped}?" if not off(1 / ratio) else
            f"; pixels are square, so a picture {width_mm:g} mm wide is {width_mm / pixels:.4g} mm high")
    return f"{given} is {ratio:.3g}:1 but the monitor is {width}x{height} px ({pixels:.3g}:1){hint}"


class MonitorKind:
    """A monitor of a span -> spec.Monitor, its picture in mm (name '' when not given: `_span` numbers it).
    A given size is checked against the pixels' aspect ratio (`aspect_problem`); only its width is used."""

    def parse(self, r, node, path):
        ok = len(r.errors)
        m, bad = r.read(node, path, MONITOR_KEYS)
        if not isinstance(node, yaml.MappingNode):
            raise _Bad()
        sized = ("size" in m or "size" in bad), ("diagonal" in m or "diagonal" in bad)
        if all(sized):
            r.error(node, path, "give the picture's size or its diagonal, not both")
        elif not any(sized):
            r.error(node, path, "give the picture's size: [width, height] or diagonal (one of them)")
        name = m.get("name", "x")
        if problem := file_name_problem(name) or ("is blank" if not name.strip() else None):
            r.error(_node_at(node, "name"), _join(path, "name"),
                    r._sourced(_node_at(node, "name"), f"'{name}' {problem}: monitor names are used in file names"))
        if bad or len(r.errors) > ok:
            raise _Bad()
        if "size" in m:
            w_mm, h_mm = m["size"]
        else:
            d = m["diagonal"] / (m["width"] ** 2 + m["height"] ** 2) ** 0.5
            w_mm, h_mm = m["width"] * d, m["height"] * d
        if problem := density_problem(m["width"], w_mm):
            key = "size" if "size" in m else "diagonal"
            r.error(_node_at(node, key), _join(path, key), problem)
            raise _Bad()
        if "size" in m:
            w, h = (str(r.scalar(item)) for item in _node_at(node, "size").value)  # as written
            if problem := aspect_problem(m["width"], m["height"], w_mm, h_mm, f"[{w}, {h}]", f"[{h}, {w}]"):
                r.error(_node_at(node, "size"), _join(path, "size"), problem)
                raise _Bad()
        return Monitor(m.get("name", ""), m["width"], m["height"], w_mm, h_mm)

    def schema(self, defs):
        return Mapping("monitor", MONITOR_KEYS).schema(defs)


def density_problem(width: int, width_mm: float) -> str | None:
    """Why a monitor `width` px across `width_mm` mm has a density studio can't use, or None: its dpi, rounded, is
    the span's (when it is the densest) and its files' (1 to MAX_DPI; rounded to 0, lengths would be off by more
    than their own size)."""
    dpi = width * 25.4 / width_mm
    if dpi > MAX_DPI:
        return f"{width} px across {width_mm:g} mm is {dpi:.0f} dpi: at most {MAX_DPI} (a picture at least " \
               f"{width * 25.4 / MAX_DPI:g} mm wide)"
    if round(dpi) < 1:
        return f"{width} px across {width_mm:g} mm is {dpi:.2g} dpi, which rounds to 0: at least 1 (a picture " \
               f"narrower than {width * 25.4 / 0.5:g} mm)"
    return None


SPAN_KEYS = {
    "monitors": Key(ListOf(MonitorKind(), 1), "left to right", required=True),
    "bezels": Key(ListOf(PhysicalLength(), single_ok=True),
                  "gap between neighbouring pictures (both bezels): one length or one per gap (default 0)"),
    "align": Key(Enum("top", "center", "bottom"), "vertical alignment of monitors of different heights"),
}
OUTPUT_KEYS = {
    "formats": Key(ListOf(Enum("png", "jpeg", "tiff", "pdf"), 1, single_ok=True, unique=True), "default [png]"),
    "name": Key(Template(), "file name pattern: layout variables and {layout}, {seed}, {monitor}"),
    "jpeg_quality": Key(Int(1, 100), "default 92"),
    "per_monitor": Key(Bool(), "spans: also write one file per monitor (default true)"),
    "crop_marks": Key(Bool(), "PDF: trim marks outside the bleed, on a larger page (default false)"),
}


class Variables:
    def parse(self, r, node, path):
        raise AssertionError("variables are read by _variables")

    def schema(self, defs):
        return {"type": "object", "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                                                    "not": {"enum": list(FIELD_NAMES)}},
                "additionalProperties": {"not": {"type": ["object", "array"]},  # any scalar, dates too
                                         "description": "text, a number, true/false, or ~ (no default)"}}


class Grids:
    def parse(self, r, node, path):
        raise AssertionError("grids are read by _grids")

    def schema(self, defs):
        return {"type": "object", "additionalProperties": _ref(defs, "grid", _object_schema(GRID_KEYS, defs))}


TOP_KEYS = {
    "canvas": Key(Mapping("canvas", CANVAS_KEYS), "size, dpi, bleed, safe margin, background"),
    "variables": Key(Variables(), "defaults for {name} in any text; --set name=value overrides"),
    "grids": Key(Grids(), "named grids of cells: {rows, columns, gutter, region}"),
    "span": Key(Mapping("span", SPAN_KEYS), "a multi-monitor wallpaper; the span sets the canvas size"),
    "layers": Key(ListOf(LayerKind(), 1), "drawn in order, first at the bottom", required=True),
    "output": Key(Mapping("output", OUTPUT_KEYS), "formats and file names"),
    "memory_budget": Key(ByteSize(), "e.g. 6GiB; auto or none: free memory minus a margin (the default)"),
    "model": Key(Model(), "default model folder (relative to the layout file) or hub id"),
}


def _variables(r: _Reader, node, overrides: dict[str, str]) -> dict[str, str]:
    """The file's variables with the overrides applied; a null default must be overridden."""
    defaults, nodes = {}, {}
    if node is not None:
        if not isinstance(node, yaml.MappingNode):
            r.error(node, "variables", f"expected a mapping of name: value, got {_a(_value_of(node))}")
        else:
            r.flatten(node, "variables")
            seen = set()
            for key_node, value_node in node.value:
                name, path = key_node.value, _join("variables", key_node.value)
                if not _NAME_RE.fullmatch(name):
                    r.error(key_node, path, f"'{name}' is not a variable name (letters, digits and _)")
                elif name in seen:
                    r.error(key_node, path, "duplicate key")
                elif not isinstance(value_node, yaml.ScalarNode):
                    r.error(value_node, path, f"expected text, got {_a(value_node)}")
                else:
                    if name in FIELD_NAMES:  # kept: what it fills is not reported again
                        r.error(key_node, path, _field_problem(name))
                    if dropped := r.dropped(value_node):
                        r.error(value_node, path, dropped)
                    defaults[name] = None if value_node.tag.endswith(":null") else value_node.value
                    nodes[name] = value_node
                seen.add(name)
    for name in overrides:
        if name in FIELD_NAMES and name not in defaults:
            r.error(node, f"variables.{name}", f"given a value (--set, or a batch job's variables), but "
                                               f"{_field_problem(name)}")
        elif name in defaults and overrides[name] is None:
            r.error(nodes[name], f"variables.{name}", "is given no value (null, None): give it text or a number, or "
                                                      "leave it out for the file's default")
            r.unset.add(name)
        elif name in defaults and (problem := surrogate_problem(overrides[name])):  # as the file's values are
            r.error(nodes[name], f"variables.{name}", f"the value given (--set, or a batch job's variables): {problem}")
        elif name not in defaults:
            r.error(node, f"variables.{name}",
                    f"given a value (--set, or a batch job's variables) but not defined in the file"
                    f"{_closest(name, defaults)}")
    resolved = {k: v if overrides.get(k) is None else _without_surrogates(overrides[k]) for k, v in defaults.items()}
    for name, value in resolved.items():
        if value is None and name not in overrides:  # given None: said above
            r.error(nodes[name], f"variables.{name}", f"has no default; set it: --set {name}=... (or a batch job's "
                                                      f"variables){r.comment_hint(nodes[name])}")
            r.unset.add(name)
    return {k: "" if v is None else str(v) for k, v in resolved.items()}  # "" after an error: no follow-ups


def _field_problem(name: str) -> str:
    """Why no variable may be called `name`, one of FIELD_NAMES."""
    return (f"'{name}' is a field of output.name ({{{name}}}: {FIELD_NAMES[name]}), not a variable name; give the "
            f"variable another name")


SIZE_KEYS = {"preset", "orientation", "width", "height", "bleed", "dpi"}  # canvas keys that decide its size
SPAN_SIZE_KEYS = SIZE_KEYS - {"dpi"}  # the ones a span decides


def _canvas(r: _Reader, node, where, span: Span | None) -> Canvas | None:
    """The canvas section (or the span) -> spec.Canvas in px, sizes checked; None when the size is unknown or
    invalid. A bad value that does not decide the size (background, safe_margin) is reported and defaulted.
    where: the node a problem of the size is reported at (the span, the canvas, or the file)."""
    values, bad = r.read(node, "canvas", CANVAS_KEYS) if node is not None else ({}, set())
    r.dpi = values.get("dpi", 72)  # the stand-in's, if this returns None (the canvas's is set by the caller)
    if r.is_span:
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            if key_node.value in SPAN_SIZE_KEYS:
                r.error(key_node, f"canvas.{key_node.value}", "a span sets the canvas size; remove this key or "
                                                              "the span")
        if span is None or "dpi" in bad:
            return None
        values = {k: v for k, v in values.items() if k not in SPAN_SIZE_KEYS}
        width, height, _ = span_canvas(span)
        physical = False
    elif node is None:
        r.error(where, "canvas", "missing: give canvas (preset or width and height) or a span")
        return None
    elif bad & (SIZE_KEYS - {"bleed"}):  # a bad bleed leaves the trim size, which the safe margin is checked in
        return None  # reported where it is wrong
    elif "preset" in values:
        for key in ("width", "height"):
            if key in values:
                r.error(node, f"canvas.{key}", "give either preset or width and height, not both")
        w, h, unit = PRESETS[values["preset"]]
        width, height, physical = (Fraction(w), unit), (Fraction(h), unit), unit != "px"
    else:
        missing = [k for k in ("width", "height") if k not in values]
        if missing:
            r.error(where, "canvas", f"missing {' and '.join(missing)} (or give a preset)")
            return None
        width, height = values["width"], values["height"]
        physical = width[1] != "px" or height[1] != "px"
    # a span's default: the densest monitor's, at which its canvas is drawn (pt/mm lengths as on that monitor)
    dpi = values.get("dpi", max(map(monitor_dpi, span.monitors)) if span else 300 if physical else 72)
    px = lambda q: round(_to_px(q[0], q[1], dpi))  # noqa: E731
    if span is None:
        width, height = px(width), px(height)
        wants = values.get("orientation")
        if (wants == "landscape" and height > width) or (wants == "portrait" and width > height):
            width, height = height, width
    # the bleed rounds up: a print shop's 3 mm is at least 3 mm (36 px at 300 dpi, not 35)
    bleed = math.ceil(_to_px(*values.get("bleed", (0, "px")), dpi))
    safe = px(values.get("safe_margin", (0, "px")))
    canvas = Canvas(width, height, dpi, bleed, safe, values.get("background", (255, 255, 255, 255)),
                    values.get("preset"))
    problem = _size_problem(canvas)
    if problem:
        r.error(where, "span" if span is not None else "canvas", problem)
        return None
    if 2 * safe >= min(width, height):
        r.error(_node_at(node, "safe_margin"), "canvas.safe_margin",
                f"{safe} px on each side leaves no safe area in {width} x {height} px")
        canvas = Canvas(width, height, dpi, bleed, 0, canvas.background, canvas.preset)
    return None if "bleed" in bad else canvas


def _size_problem(canvas: Canvas) -> str | None:
    w, h = canvas.full_width, canvas.full_height
    if w < 1 or h < 1:
        return f"{w} x {h} px is empty"
    if max(w, h) > MAX_SIDE:
        return f"{w} x {h} px (bleed included) is too large: at most {MAX_SIDE} px per side"
    if w * h > MAX_PIXELS:
        return f"{w} x {h} px (bleed included) = {w * h} pixels is too large: at most {MAX_PIXELS} (2^28)"
    return None


def _span(r: _Reader, node) -> Span | None:
    """span -> spec.Span; None when invalid. Each monitor is checked on its own, their names against each
    other and the bezels against their number, whatever else is wrong."""
    ok = len(r.errors)
    values, bad = r.read(node, "span", SPAN_KEYS)
    monitors = _node_at(node, "monitors") if isinstance(node, yaml.MappingNode) else None
    if not isinstance(monitors, yaml.SequenceNode):
        return None
    _unique_names(r, [(_written_name(r, m) or f"monitor-{i + 1}", f"span.monitors[{i}]", m)
                      for i, m in enumerate(monitors.value)], fold=True)
    bezels, gaps = values.get("bezels", (0.0,)), len(monitors.value) - 1
    if len(bezels) not in (1, gaps):
        r.error(_node_at(node, "bezels"), "span.bezels",
                f"{_count(gaps + 1, 'monitor')} have {_count(gaps, 'gap')}; got {_count(len(bezels), 'bezel')} "
                f"(give one length or {gaps})")
    if bad or len(r.errors) > ok:
        return None
    named = tuple(replace(m, name=m.name or f"monitor-{i + 1}") for i, m in enumerate(values["monitors"]))
    return Span(named, (bezels * gaps)[:gaps], values.get("align", "center"))


def _node_at(node, key: str):
    """The value node under `key` of a mapping node, or the node itself. Of a key written twice, the last: the
    one the constructed mapping takes."""
    for key_node, value_node in reversed(node.value if isinstance(node, yaml.MappingNode) else ()):
        if getattr(key_node, "value", None) == key:
            return value_node
    return node


def _grids(r: _Reader, node) -> None:
    """grids: {name: {rows, columns, gutter, region}} -> r.grids, in order (a grid's region may be a cell of
    an earlier grid); each checked to divide its region. Invalid ones go to r.bad_grids."""
    if not isinstance(node, yaml.MappingNode):
        r.error(node, "grids", f"expected a mapping of name: {{rows, columns, gutter, region}}, "
                               f"got {_a(_value_of(node))}")
        return
    r.flatten(node, "grids")
    for key_node, value_node in node.value:
        name, path = key_node.value, _join("grids", key_node.value)
        if name in r.grids or name in r.bad_grids:
            r.error(key_node, path, "duplicate key")
            continue
        values = r.values(value_node, path, GRID_KEYS)
        if values is None:
            r.bad_grids.add(name)
            continue
        gutter = values.get("gutter", (0,))
        (rows, row_weights), (columns, column_weights) = values["rows"], values["columns"]
        grid = Grid(name, rows, columns, (round(gutter[0]), round(gutter[-1])), values.get("region", Region("full")),
                    row_weights, column_weights)
        if problem := grid_fit_problem(grid, resolve(grid.region, r.canvas, r.grids)):
            r.error(value_node, path, problem)
            r.bad_grids.add(name)
            continue
        r.grids[name] = grid


def _unique_names(r: _Reader, named: list[tuple[str | None, str, object]], fold: bool = False) -> None:
    """Report each (name, path, node) whose name an earlier one has (None: no name); fold: names that differ
    only in case are the same (they name files, and macOS and Windows ignore case)."""
    first = {}
    for name, path, node in named:
        if name is None:
            continue
        key = name.casefold() if fold else name
        if key not in first:
            first[key] = (name, path)
            continue
        earlier, where = first[key]
        if earlier == name:
            r.error(node, f"{path}.name", f"'{name}' is already the name of {where}")
        else:
            r.error(node, f"{path}.name", f"'{name}' differs only in case from '{earlier}' ({where}): names used in "
                                          f"file names must differ in more (macOS and Windows ignore case)")


# -- entry points -------------------------------------------------------------------------------------------

def source_text(path: Path, what: str, pipes: bool = True, save_as: str = "") -> str:
    """The text of a user's file (a layout, a job) as stored, at most MAX_SOURCE bytes (/dev/zero has no end);
    a missing, unreadable or larger file, or one that is not UTF-8 (the line and byte named; `save_as`: how to
    save one as UTF-8, in parentheses; UTF-16 told as such) or holds only NUL bytes, raises a one-line InputError.
    pipes: a device or pipe is read too (`studio render /dev/stdin`); else it is refused."""
    try:
        if not pipes and path.exists() and not path.is_file() and not path.is_dir():
            raise InputError(f"{path}: is a device, pipe or socket, not a {what} file")
        with open(path, "rb") as f:
            data = f.read(MAX_SOURCE + 1)
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a {what} file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read the {what} ({type(e).__name__}: {e.strerror or e})") from None
    if len(data) > MAX_SOURCE:
        raise InputError(f"{path}: more than {MAX_SOURCE >> 20} MiB, too large for a {what} file")
    how = f" ({save_as})" if save_as else ""
    if _utf16(data):
        raise InputError(f"{path}:1: UTF-16 text, not UTF-8; save the {what} as UTF-8{how}")
    if data and not data.strip(b"\0"):  # what a crash can leave of a file being written
        raise InputError(f"{path}: only NUL bytes (0x00), no text; write the {what} again")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        before = data[:e.start]
        line = before.count(b"\n") + before.count(b"\r") - before.count(b"\r\n") + 1  # LF, CRLF or CR (old Macs)
        raise InputError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the {what} as UTF-8"
                         f"{how}") from None


def _utf16(data: bytes) -> bool:
    """Whether a file's bytes are UTF-16, as Excel's "Unicode Text" and Notepad's "Unicode" save: a byte-order
    mark FF FE or FE FF, or in the first 512 bytes, most of the even or of the odd ones NUL (the high bytes of
    Latin text) and most of the others not (a file of zeros, as a crash can leave, is no text at all)."""
    head = data[:512]
    mostly = [half.count(0) * 2 > len(half) for half in (head[0::2], head[1::2])]
    return head.startswith((b"\xff\xfe", b"\xfe\xff")) or len(head) > 1 and mostly[0] != mostly[1]


def read_source(path: Path, what: str, error, save_as: str = "") -> str:
    """`source_text` with CRLF and CR read as LF (YAML11_BREAKS stay characters, as YAML 1.2 has them:
    `parse_layout` counts lines by LF alone); its problem raised as error([the line])."""
    try:
        text = source_text(path, what, save_as=save_as)
    except InputError as e:
        raise error([str(e)]) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _plain_number(value: numbers.Real) -> int | float:
    """A number (numpy's too) as Python's int or float."""
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _without_surrogates(text: str) -> str:
    """`text` with each lone surrogate, reported already, as U+FFFD: no follow-up error holds one."""
    return re.sub("[\ud800-\udfff]", "\ufffd", text)


def _variable_text(name: str, value) -> str:
    """A variable's value given in Python as the text --set would give: a str as is, a number (numpy's too)
    written out; None (a batch job's null) stays, for the loader to report."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
        return str(_plain_number(value))
    raise InputError(f"variables['{name}']: {value!r} is not a value (give text, or a number)")


def _yaml_data(value, source: str, path: str):
    """A layout given as a dict, with what yaml.safe_dump has no form for as the value it stands for: a number
    (numpy's too) as Python's, an os.PathLike as its text, a tuple as a list, a str subclass as a str; an
    InputError naming the key path of anything else."""
    if isinstance(value, dict):
        return {_yaml_data(k, source, path): _yaml_data(v, source, f"{path}.{k}" if path else str(k))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_yaml_data(v, source, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, np.generic):
        value = value.item()  # numpy's bool, number or text as Python's
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, numbers.Real):
        return _plain_number(value)
    if isinstance(value, str):
        return str.__str__(value)  # a HubId's str() is a HubId
    raise InputError(f"{source}: {path or 'the layout'}: {value!r:.60} ({type(value).__name__}) is no layout value "
                     "(give text, a number, true/false, a list or a dict)")


def load_layout(path, variables: dict[str, str] | None = None) -> Layout:
    """A layout file -> the validated Layout; `variables` (from --set) override the file's defaults.

    Raises LayoutError listing every problem in the file, each `file:line: key.path: message`.
    """
    path = Path(path)
    return parse_layout(read_source(path, "layout", LayoutError), str(path), variables, path.parent)


def parse_layout(text: str | dict, source: str | os.PathLike = "<string>", variables: dict[str, str] | None = None,
                 base_dir: Path | None = None, *, own_names: bool = True) -> Layout:
    """Layout YAML text, or a dict of the same keys, -> the validated Layout (a dict is read as its YAML: the
    messages' line numbers are of that). source: the name used in messages and Layout.source (a Path as its
    text); variables: values (text, or numbers) overriding the file's defaults, as --set; base_dir: the folder
    relative image and font paths are found in (default: the current folder); own_names: output.name names the
    files, so the names it gives with the variables' values are checked (False for a caller that names the files
    itself, as batches do: output.name is checked as written)."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise InputError(f"source: {source!r:.80} is not a name (give text, or a Path)")
    if variables is not None and not isinstance(variables, collections.abc.Mapping):
        raise InputError(f"variables: {variables!r:.80} is not a dict of name -> value (text, or a number)")
    if isinstance(text, dict):
        text = yaml.safe_dump(_yaml_data(text, source, ""), sort_keys=False, allow_unicode=True)
    if not isinstance(text, str):
        raise TypeError(f"parse_layout takes YAML text (str) or a dict, not {type(text).__name__}")
    variables = {name: _variable_text(name, value) for name, value in (variables or {}).items()}
    r = _Reader(source, {}, Path(base_dir) if base_dir is not None else Path.cwd())
    where = "the layout file's folder" if base_dir is not None else "the current folder"
    r.relative_to = f"{where}, {os.path.abspath(r.base_dir)}"  # the folder too: a --set path is read from it
    r.own_names = own_names
    r.written, r.lines = text, text.split("\n")
    try:
        root, loader = compose_yaml(text, _Loader)  # as yaml.compose does, keeping the loader's alias_lines
    except yaml.YAMLError as e:
        line, problem = yaml_problem(text, e)
        raise LayoutError([f"{source}:{line}: YAML syntax: {one_line(problem)}"]) from None
    loader.dispose()
    r.alias_lines = loader.alias_lines
    if root is None:
        raise LayoutError([f"{source}:1: the layout is empty; it needs canvas (or span) and layers"])
    _drop_complex_keys(r, root)
    for node in _nodes(root):
        if isinstance(node, yaml.ScalarNode) and surrogate_problem(node.value):
            r.error(node, "", surrogate_problem(node.value))
            node.value = _without_surrogates(node.value)  # reported: not again, as a value
    layout = _read(r, root, variables)
    if r.errors:
        raise LayoutError([message for _, message in sorted(r.errors, key=lambda e: e[0])])
    return layout


def compose_yaml(text: str, loader_class) -> tuple:
    """(root node, or None for no document; the loader, for the caller to dispose) of YAML `text` composed by
    `loader_class`, YAML11_BREAKS read as YAML 1.2 (and editors) read them, as characters of the text: each is a
    private-use character that is not in the text while PyYAML reads it, then given back to the scalars, so
    lines count LFs only. Raises PyYAML's YAMLError, its marks in `text`'s lines and columns."""
    free = (c for c in map(chr, range(0xF0000, 0xFFFFE)) if c not in text)
    stand_ins = {c: next(free) for c in YAML11_BREAKS if c in text}
    loader = loader_class(text.translate(str.maketrans(stand_ins)))
    try:
        root = loader.get_single_node()
    except BaseException:
        loader.dispose()
        raise
    if stand_ins and root is not None:
        back = str.maketrans({v: k for k, v in stand_ins.items()})
        for node in _nodes(root):
            if isinstance(node, yaml.ScalarNode):
                node.value = node.value.translate(back)
    return root, loader


class ShallowLoader(yaml.SafeLoader):
    """PyYAML's safe loader, nesting at most MAX_DEPTH levels: it composes a level per call, and deeper would
    run out of Python's stack (layouts and batch jobs)."""

    depth = 0

    def scan_flow_scalar(self, style):
        """A quoted scalar, its escaped surrogate pairs ("\\ud83e\\udd8a", as JSON writes an emoji) joined."""
        token = super().scan_flow_scalar(style)
        token.value = join_surrogates(token.value)
        return token

    def compose_node(self, parent, index):
        if self.depth == MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep (lists and "
                                              f"mappings inside each other)", self.peek_event().start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Loader(ShallowLoader):
    """The layout loader: tabs before a comment or a line's end are skipped as YAML 1.2 (and editors) skip them;
    PyYAML (YAML 1.1) stops at them. `alias_lines`: (id of a list node, index) -> the line of an item written
    as an alias (`- *sky`), whose node is the anchor's, with the anchor's line."""

    def __init__(self, stream):
        super().__init__(stream)
        self.alias_lines: dict[tuple[int, int], int] = {}

    def compose_node(self, parent, index):
        if isinstance(parent, yaml.SequenceNode) and self.check_event(yaml.AliasEvent):
            self.alias_lines[(id(parent), index)] = self.peek_event().start_mark.line + 1
        return super().compose_node(parent, index)

    def scan_to_next_token(self):
        while True:
            super().scan_to_next_token()
            k = 0
            while self.peek(k) in " \t":
                k += 1
            if k == 0 or self.peek(k) not in "#\0\r\n\x85\u2028\u2029":
                return
            self.forward(k)


# `key: #value`, `- #value  # a note`: a comment where a value is (to a '# note' after it)
_HASH_VALUE_RE = re.compile(r"(?:^|[:-])[ \t]+(#\S.*?)(?:[ \t]+#(?:[ \t].*)?)?[ \t]*$")


def hash_comment_hint(written: str) -> str:
    """' (quote values that start with \'#\': "#ff5a5f")' when `written`, a line of YAML whose value came out
    empty (null), or the part of it from where the value would start, has a comment where the value would be
    that starts with a word right after its '#' (`tint: #ff5a5f`, `- #fff`): the value YAML read as a comment.
    Else '' (a comment such as '# note' is one)."""
    m = _HASH_VALUE_RE.search(written)
    return f" (quote values that start with '#': {yaml_quoted(m[1])})" if m else ""


def yaml_quoted(text: str) -> str:
    """`text` as a quoted YAML scalar of the same text: in double quotes, or in single quotes when it has a '"' or
    a backslash (an escape in double quotes)."""
    if '"' not in text and "\\" not in text:
        return f'"{text}"'
    return "'" + text.replace("'", "''") + "'"


def yaml_problem(text: str, e: yaml.YAMLError, what: str = "layout") -> tuple[int, str]:
    """(line, one-line message) for a YAML error in a `what` file, with a hint where one helps."""
    if isinstance(e, yaml.reader.ReaderError):  # a character YAML does not allow (NUL, other controls)
        return text.count("\n", 0, e.position) + 1, (f"character #x{e.character:04x} is not allowed in YAML "
                                                      f"(control characters other than tab and line breaks)")
    mark = getattr(e, "problem_mark", None)
    line = mark.line + 1 if mark is not None else 1
    if getattr(e, "context", None) == "while scanning a quoted scalar" and getattr(e, "problem", None) in (
            "found unexpected end of stream", "found unexpected document separator"):  # not a bad escape
        return _unclosed_quote(text, e.context_mark)
    comment = _flow_comment(text, line)
    if comment:
        n, word, value = comment
        how = f"the whole value: {yaml_quoted(value)}" if value != word and value[:1] not in "'\"" else \
            f"values that start with '#': {yaml_quoted(word)}"
        return n, f"'{word}' starts a comment, which ends the line early; quote {how}"
    written = text.split("\n")[mark.line] if mark is not None else ""
    if mark is not None and written[mark.column:mark.column + 1] == "\t":
        before = written[:mark.column].rstrip(" \t")
        if before and before[-1] not in ":-,[{?":  # after a value's first word
            return line, "a tab inside a value: write a space, or quote the text"
        return line, "a tab: indent with spaces, and put spaces, not tabs, after ':', '-', ',' or a bracket"
    if getattr(e, "problem", None) == "but found another document":
        return line, f"a second document ('---'): a {what} is one YAML document"
    braces = _BRACED_RE.search(written[:mark.column]) if mark is not None else None
    if braces:  # the value from its '{' to the end of the line, or of the item in brackets
        value = (written[braces.start(1):mark.column] + re.match(r"[^#,\]}]*", written[mark.column:])[0]).rstrip()
        return line, (f"'{value}' starts with a mapping, {braces[1]}, and goes on; quote text that starts with "
                      f"'{{': \"{value}\"")
    plain = None
    if mark is not None:
        plain = _flow_problem(text, written, e) or _punctuation_problem(written, e)
    return line, plain or getattr(e, "problem", None) or first_line(e)


def _unclosed_quote(text: str, opening: yaml.Mark) -> tuple[int, str]:
    """(line, message) for a quoted value that runs to the end of the file, at the line of its opening quote
    (PyYAML says 'found unexpected end of stream' past the last line)."""
    written = text.split("\n")[opening.line]
    quote, value = written[opening.column], _written_value(written, opening.column)
    return opening.line + 1, f"this quote is never closed: {value}; close it where the value ends: {value}{quote}"


def _flow_problem(text: str, written: str, e: yaml.YAMLError) -> str | None:
    """The plain message for a value in brackets where PyYAML expected a ',' or the closing bracket (`{text: a: b}`,
    `["Summer" Sale]`): as `_punctuation_problem`'s for the same value in block style, when the line shows the
    mistake: ': ' inside a value, or text after a closing quote. None for anything else."""
    problem = getattr(e, "problem", None) or ""
    if not problem.startswith("expected ',' or "):
        return None
    value = _scalar_before(text, e.problem_mark)  # the value it stopped in: the scalar before where it stopped
    if value is None or value.start_mark.line != e.problem_mark.line:
        return None
    start, end = value.start_mark.column, value.end_mark.column
    written_value = (written[start:end] + re.split(r"[,\]}]|[ \t]#", written[end:], maxsplit=1)[0]).rstrip()
    if problem.endswith("but got ':'"):
        return _colon_hint(written_value)
    if problem.endswith("but got '<scalar>'") and value.style in ("'", '"'):
        return _closing_quote_hint(written_value)
    return None


def _scalar_before(text: str, mark: yaml.Mark) -> yaml.ScalarToken | None:
    """The last scalar PyYAML scans in `text` before `mark`, or None."""
    last = None
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if token.start_mark.index >= mark.index:
                break
            if isinstance(token, yaml.ScalarToken):
                last = token
    except yaml.YAMLError:  # past the mark, or just where it stopped
        pass
    return last


def _colon_hint(value: str) -> str:
    return f"': ' inside a value starts a mapping; quote the whole value: {yaml_quoted(value)}"


def _closing_quote_hint(value: str) -> str:
    """The hint for `value`, as written, going on after its closing quote. A value in quotes that holds the same
    quote ('Don't stop': the apostrophe closes it) is text meant in quotes: the text written in the other quote or
    with the quote doubled, so that no quote mark is drawn; else the whole value, its quotes drawn as written."""
    quote = value[0]
    if len(value) > 2 and value.endswith(quote):
        inner = value[1:-1]
        ways = dict.fromkeys([yaml_quoted(inner), "'" + inner.replace("'", "''") + "'"])
        return f"text after a closing quote: the {quote} inside {value} closes it; write {' or '.join(ways)}"
    return f"text after a closing quote: quote the whole value: {yaml_quoted(value)}"


# a line's indentation, list marks and key: `  - text: `; group 1 the key
_KEY_RE = re.compile(r"[ \t]*(?:-[ \t]+)*(?:([^\s:#'\"{}\[\],-][^:#]*?|\"[^\"]*\"|'[^']*')[ \t]*:(?:[ \t]+|$))?")
_STARTS = {"*": "reads as an alias (*name)", "&": "reads as an anchor (&name)", "!": "reads as a tag (!name)",
           "|": "reads as the start of a block of lines", ">": "reads as the start of a block of lines",
           "@": "reserves", "`": "reserves", "%": "reads as a directive"}


def _punctuation_problem(written: str, e: yaml.YAMLError) -> str | None:
    """A plain message for PyYAML's at everyday punctuation on the line `written` where it stopped: ': ' inside a
    value, a value that starts with a character YAML reads otherwise (@ ` * & ! | > %), text after a closing quote,
    or a key or list item out of line with its neighbours. None for anything else."""
    problem = getattr(e, "problem", None) or ""
    key = _KEY_RE.match(written)
    start, column = key.end(), e.problem_mark.column  # where the line's value starts, where YAML stopped
    context = getattr(e, "context_mark", None)  # of an alias, anchor or block scalar: where it starts
    if context is not None and context.line == e.problem_mark.line and "while scanning" in (e.context or ""):
        column = context.column
    if problem == "mapping values are not allowed here" and column > start:
        return _colon_hint(_written_value(written, start))
    first, value = written[column:column + 1], _written_value(written, column)
    an_alias = problem.startswith("found undefined alias") and len(value.split()) == 1  # `*name` meant as one
    if first in _STARTS and not an_alias:
        return f"'{value}' starts with '{first}', which YAML {_STARTS[first]}; quote the whole value: " \
               f"{yaml_quoted(value)}"
    if problem == "expected <block end>, but found '<scalar>'":  # more after a quoted value or a list
        value = _written_value(written, start)
        if value[:1] in ("'", '"'):
            return _closing_quote_hint(value)
        return f"'{value}' starts with a list and goes on; quote the whole value: {yaml_quoted(value)}" \
            if value[:1] == "[" else None
    if problem == "mapping values are not allowed here" or \
            problem.startswith(("expected <block end>, but found", "expected '<document start>', but found")):
        if problem.endswith(("'-'", "'<block sequence start>'")):  # not the key after the '- '
            return ("a list item at the wrong indentation: check this line's indentation against the previous "
                    "item's (a list's items start in the same column)")
        if key[1]:
            return (f"'{key[1]}' is at the wrong indentation: check this line's indentation against the previous "
                    f"key's (a mapping's keys start in the same column)")
    return None


def _written_value(written: str, start: int) -> str:
    """The value on the line `written` from `start`: to a comment (' #'), and in brackets to a ',', ']' or '}'."""
    value = re.split(r"[ \t]#", written[start:], maxsplit=1)[0]
    before = written[:start]
    if before.count("[") + before.count("{") > before.count("]") + before.count("}"):
        value = re.split(r"[,\]}]", value, maxsplit=1)[0]
    return value.strip()


# a value in braces just before where YAML stopped (`text: {title} 2024` stops at 2024): text that starts with '{'
_BRACED_RE = re.compile(r"(?:^|[:,\[-])\s+(\{[^{}]*\})\s*$")
_FLOW_STARTS = (yaml.FlowSequenceStartToken, yaml.FlowMappingStartToken)
_FLOW_ENDS = (yaml.FlowSequenceEndToken, yaml.FlowMappingEndToken)
_COMMENT_RE = re.compile(r"^[ \t]*(#[^\s,\]}]+)", re.MULTILINE)  # the first '#' of a line's gap starts a comment


def _flow_comment(text: str, last_line: int) -> tuple[int, str, str] | None:
    """(line, word, value) of the first comment by line `last_line` that starts with a word right after its '#'
    inside a list or mapping in brackets (`[#000, #fff]`, `{color: #fff}`, `{text: Summer Sale #Sale}`): a value,
    or its end, that YAML took for a comment, which cut the line short; `value` is the whole value as written, to
    its ',', ']' or '}'. Comments are what YAML skips between its tokens."""
    depth, start, gaps = 0, 0, []
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if depth:
                gaps.append((start, token.start_mark.index))
            depth += isinstance(token, _FLOW_STARTS) - isinstance(token, _FLOW_ENDS)
            start = token.end_mark.index
    except yaml.YAMLError as e:
        if depth and getattr(e, "problem_mark", None) is not None:
            gaps.append((start, e.problem_mark.index))
    for a, b in gaps:
        comment = _COMMENT_RE.search(text[a:b])
        if comment:
            at = a + comment.start(1)
            line = text.count("\n", 0, at) + 1
            head = re.split(r"[{\[,]|:[ \t]", text[text.rfind("\n", 0, at) + 1:at])[-1].lstrip()  # the value's start
            return (line, comment[1], head + re.match(r"[^,\]}\n]*", text[at:])[0].rstrip()) \
                if line <= last_line else None
    return None


def _nodes(root):
    """Every node of a composed document once (aliases share nodes), each before what it holds."""
    seen, todo = set(), [root]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, yaml.MappingNode):
            todo.extend(reversed([v for pair in node.value for v in pair]))
        elif isinstance(node, yaml.SequenceNode):
            todo.extend(reversed(node.value))


def _drop_complex_keys(r: _Reader, root) -> None:
    """Report and remove mapping keys that are lists or mappings (every key in a layout is a name)."""
    for node in _nodes(root):
        if isinstance(node, yaml.MappingNode):
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    r.error(key_node, "", f"a key must be a name, not {_a(key_node)}")
            node.value = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)]


_INVALID = object()  # a section that was reported invalid


def _read(r: _Reader, root, overrides: dict[str, str]) -> Layout | None:
    """The sections in dependency order: variables, span, canvas, grids, then the rest, each checked whatever
    is wrong elsewhere; without a valid canvas, on a lenient stand-in (no false "outside" errors)."""
    found = r.entries(root, "", TOP_KEYS)
    if found is None:
        return None
    node = {k: v for k, (_, v) in found.items()}
    r.variables = _variables(r, node.get("variables"), overrides)
    r.is_span = "span" in node
    span = _span(r, node["span"]) if r.is_span else None
    canvas = _canvas(r, node.get("canvas"), node.get("span", node.get("canvas", root)), span)
    r.canvas = canvas or Canvas(MAX_SIDE, MAX_SIDE, r.dpi, bleed=MAX_SIDE)
    r.dpi, r.stand_in = r.canvas.dpi, canvas is None
    if "grids" in node:
        _grids(r, node["grids"])

    def section(key):
        try:
            return r.parse(TOP_KEYS[key].kind, node[key], key) if key in node else None
        except _Bad:
            return _INVALID

    layers, output, memory_budget, model = (section(k) for k in ("layers", "output", "memory_budget", "model"))
    items = node["layers"].value if isinstance(node.get("layers"), yaml.SequenceNode) else []
    _unique_names(r, [(_written_name(r, _layer_body(item)), f"layers[{i}]", item) for i, item in enumerate(items)])
    if output is not _INVALID:
        _output_names(r, node.get("output"), output or {}, span, node.get("span"), items, layers)
    if r.errors:
        return None
    layout = Layout(source=r.source, canvas=canvas, layers=layers, grids=dict(r.grids), span=span,
                    output=Output(**(output or {})), variables=dict(r.variables), memory_budget=memory_budget,
                    model=model)
    object.__setattr__(layout, "lines", _lines(r, found, items))
    object.__setattr__(layout, "unused_variables", tuple(name for name in r.variables if name not in r.used))
    return layout


PLANNED_KEYS = ("model", "steps", "strategy")  # the generate keys the planner reports problems at (`plan.key_at`)


def _lines(r: _Reader, found: dict, items: list) -> dict[str, int]:
    """`Layout.lines`: the line of each top-level key, of each layer where it is written in `layers` (an alias
    item at the alias), and of each generate layer's keys the planner reports problems at (`PLANNED_KEYS`; a
    merged one where the merged mapping has it)."""
    lines = {key: key_node.start_mark.line + 1 for key, (key_node, _) in found.items()}
    for i, item in enumerate(items):
        lines[f"layers[{i}]"] = r.alias_lines.get((id(found["layers"][1]), i), item.start_mark.line + 1)
        if _layer_type(item) == "generate":
            for key_node, _ in _layer_body(item).value:  # the last of a repeated key is the one taken
                if key_node.value in PLANNED_KEYS:
                    lines[f"layers[{i}].generate.{key_node.value}"] = key_node.start_mark.line + 1
    return lines


def _output_names(r: _Reader, node, output: dict, span: Span | None, span_node, items: list, layers) -> None:
    """output.name (valid as written) against the rest of the file: {seed} needs a generate layer; and when
    the layout names its files (r.own_names), the files it gives (the variables' values filled in, each
    monitor's) must be writable (`stem_problems`): a name or length problem is reported at output.name with the
    variables it comes from, a monitor's file named as the whole span's at the monitor."""
    name_node = _node_at(node, "name") if isinstance(node, yaml.MappingNode) else node  # the output's if none
    written = name_node.value if isinstance(name_node, yaml.ScalarNode) else "{layout}"
    if "seed" in _fields(r, written) and not any(_layer_type(item) == "generate" for item in items):
        r.error(name_node, "output.name", f"'{written}': {{seed}} is the first generate layer's seed, and this "
                                          f"layout has no generate layer")
    if not r.own_names:
        return
    seed = first_seed(layers) if isinstance(layers, tuple) else 0
    monitors = [m.name for m in span.monitors] if span and output.get("per_monitor", True) else []
    used = [m[1] for m in _VARIABLE_RE.finditer(written) if _is_variable(r, m[1])]
    monitor_nodes = _node_at(span_node, "monitors").value if monitors else []
    for p in stem_problems(output.get("name", "{layout}"), r.source, seed, monitors):
        if p.kind == "case":
            i = p.index - 1
            r.error(_node_at(monitor_nodes[i], "name"), f"span.monitors[{i}].name",
                    f"'{monitors[i]}' names its file '{p.stem}', which {p.text}; give the monitor another name")
            continue
        if p.kind == "name":
            culprits = [n for n in used if _bad_character(r.variables[n])] or used
        else:
            culprits = sorted(used, key=lambda n: len(r.variables[n].encode()))[-1:]
        r.error(name_node, "output.name", f"'{written}'{_with(r, culprits)} gives a file name that {p.text}")


def _layer_type(node) -> str | None:
    """A layer item's type key (`- text: {...}` -> 'text'), or None."""
    types = [k.value for k, _ in node.value if k.value in LAYER_TYPES] if isinstance(node, yaml.MappingNode) else []
    return types[0] if len(types) == 1 else None


def _with(r: _Reader, names: list[str]) -> str:
    """" with {title} = 'x'" for the variables a file name's problem comes from (long values cut short)."""
    def value(v):
        return f"'{v}'" if len(v) <= 40 else f"'{v[:20]}...' ({len(v.encode())} bytes)"
    return "".join(f" {'with' if i == 0 else 'and'} {{{n}}} = {value(r.variables[n])}" for i, n in enumerate(names))


def file_stems(pattern: str, source: str, seed: int, monitors: list[str]) -> list[str]:
    """The file stems an output.name pattern gives (render.output_stems): the canvas's, then each monitor's
    (`{monitor}` is 'span' in the canvas's; without it a monitor's stem is the canvas's + '-<monitor>'). {layout}
    is the source file's stem; 'layout' for a layout from text ('<string>', parse_layout's default source).
    ValueError for a pattern `name_pattern_problem` refuses (str.format would fill {layout.__class__} too)."""
    if problem := name_pattern_problem(pattern):
        raise ValueError(problem)
    fields = {"layout": "layout" if source.startswith("<") else Path(source).stem, "seed": seed}
    if "{monitor}" not in pattern.replace("{{", ""):
        whole = pattern.format(**fields, monitor="")
        return [whole] + [f"{whole}-{m}" for m in monitors]
    return [pattern.format(**fields, monitor=m) for m in ("span", *monitors)]


def first_seed(layers) -> int:
    """The seed {seed} stands for in output.name: the first generate layer's; 0 without one."""
    return next((layer.seed for layer in layers if isinstance(layer, GenerateLayer)), 0)


@dataclass(frozen=True)
class StemProblem:
    """Why one of the file stems an output.name gives can't be written (`stem_problems`)."""
    index: int  # its place in `file_stems`' list: 0 the canvas's, i the span's monitor i - 1's
    stem: str
    kind: str  # 'name': not a name in the output folder; 'length': too long; 'case': an earlier stem's, ignoring case
    text: str  # what is wrong, to follow "which": "has a '/' (a name in the output folder: ...)"


def stem_problems(pattern: str, source: str, seed: int, monitors: list[str]) -> list[StemProblem]:
    """What is wrong with the files `file_stems(pattern, source, seed, monitors)` gives (seed: `first_seed`, the
    one render fills in): each stem must be a name in the output folder of at most MAX_STEM_BYTES (room for the
    exporter's suffixes), and differ from every earlier one in more than case (macOS and Windows ignore case: a
    monitor 'Span' where {monitor} is 'span'). Of the names and lengths, the first problem only (the later stems
    share its cause); then each stem like an earlier one. ValueError as `file_stems`."""
    stems = file_stems(pattern, source, seed, monitors)
    problems = []
    for i, stem in enumerate(stems):
        if problem := file_name_problem(stem):
            problems.append(StemProblem(i, stem, "name", f"{problem} ({FILE_NAME_RULE})"))
            break
        if (size := len(stem.encode())) > MAX_STEM_BYTES:
            problems.append(StemProblem(i, stem, "length", f"has {size} bytes: at most {MAX_STEM_BYTES} (the file "
                                                           f"system's 255 less the suffixes the exporter adds)"))
            break
    for i, stem in enumerate(stems):
        same = next((j for j in range(i) if stems[j].casefold() == stem.casefold()), None)
        if same is not None:
            how = "is" if stems[same] == stem else "differs only in case from"
            whose = (f"the whole span's '{stems[0]}' ({{monitor}} is 'span' there)" if same == 0 else
                     f"'{stems[same]}', the file of monitor '{monitors[same - 1]}'")
            problems.append(StemProblem(i, stem, "case", f"{how} {whose}"))
    return problems


def layout_schema() -> dict:
    """The JSON Schema (draft 2020-12) of layout files, built from the key tables above."""
    defs: dict = {}
    body = _object_schema(TOP_KEYS, defs)
    body["anyOf"] = [{"required": ["canvas"]}, {"required": ["span"]}]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "studio layout"} | body | {
        "$defs": dict(sorted(defs.items()))}


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--schema"]:
        sys.exit("usage: python -m studio.layout --schema > layouts/layout.schema.json")
    print(json.dumps(layout_schema(), indent=2))
