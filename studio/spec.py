"""The validated layout: what `layout.load_layout` returns and every later stage reads.

Frozen dataclasses, all sizes already in pixels of the canvas (physical sizes and points converted with
the canvas DPI by the loader), except a span's monitors and bezels, kept in mm (`*_mm`) for the planner's
bezel compensation; regions stay symbolic (`Region`) until the planner resolves them to boxes.
Colours are RGBA tuples of 0-255 ints.

Built in code, a Layout gets the loader's checks from `check.check_layout`, which `plan.plan_layout` (and so
render) runs before any work.

Coordinates: the canvas is the trim size; `bleed` px extend it on every side. Region coordinates are
relative to the trim box; the region `full` covers trim and bleed.
"""

import errno
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar, Mapping

RGBA = tuple[int, int, int, int]


def user_path(name: str) -> Path:
    """Path(name) with a leading '~' or '~user' expanded; as written when there is no such user (or no home), so
    that a 'no such file' names it rather than a RuntimeError escaping."""
    try:
        return Path(name).expanduser()
    except RuntimeError:  # 'Could not determine home directory.'
        return Path(name)


def input_path(name: str, base_dir: Path | str | None) -> Path:
    """A file or folder a layout names, as every stage reads it: '~' expanded, relative to `base_dir` (the layout
    file's folder; None: the current folder); an absolute path stays as it is."""
    return Path(base_dir or ".") / user_path(name)


def link_problem(path: Path) -> str | None:
    """'a symbolic link loop' or 'a broken symbolic link (to X)' when `path` is a link that leads to nothing;
    else None."""
    if not os.path.islink(path) or os.path.exists(path):
        return None
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop"
    return f"a broken symbolic link (to {os.readlink(path)})"


def file_problem(name: str, file: Path, kind: str, relative_to: str) -> str | None:
    """Why `file`, which a layout names `name`, is no `kind` ('image file') to read: a folder, a device, a
    symbolic link that leads nowhere, or missing (`relative_to`: where relative paths are read, in words); None
    for a regular file."""
    article = "an" if kind[0] in "aeiou" else "a"
    if problem := link_problem(file):
        return f"'{name}' is {problem}"
    if file.is_dir():
        return f"'{name}' is a folder, not {article} {kind}"
    if file.exists() and not file.is_file():
        return f"'{name}' is a device, pipe or socket, not {article} {kind}"
    if not file.is_file():
        return f"no such {kind} '{name}' (relative paths are read from {relative_to})"
    return None


@dataclass(frozen=True)
class Region:
    """Where a layer goes. kind: 'full' | 'safe' (trim minus safe margin) | 'px' | 'percent' | 'cell'.

    px: x, y, w, h in px (the loader's are exact Fractions); percent: x, y, w, h in % of the trim box; cell: grid
    name, row, column (0-based) and spans.
    """

    kind: str = "full"
    x: float = 0
    y: float = 0
    w: float = 0
    h: float = 0
    grid: str | None = None
    row: int = 0
    column: int = 0
    row_span: int = 1
    column_span: int = 1


@dataclass(frozen=True)
class Grid:
    """rows x columns cells over `region` (triptychs, collages), separated by `gutter` px: (between rows,
    between columns); one int stands for both. Rows (columns) share the height (width) in proportion to
    `row_weights` (`column_weights`), equally when empty."""

    name: str
    rows: int
    columns: int
    gutter: tuple[int, int] = (0, 0)
    region: Region = Region("full")
    row_weights: tuple[float, ...] = ()
    column_weights: tuple[float, ...] = ()

    def __post_init__(self):
        if isinstance(self.gutter, numbers.Integral):  # numpy's too
            object.__setattr__(self, "gutter", (self.gutter, self.gutter))


@dataclass(frozen=True)
class Monitor:
    """One screen of a multi-monitor span: pixels and physical size (mm)."""

    name: str
    width: int
    height: int
    width_mm: float
    height_mm: float


@dataclass(frozen=True)
class Span:
    """Monitors left to right, `bezels_mm[i]` the physical gap between monitor i and i+1 (both bezels): one per
    gap. A Layout with a span has the canvas `geometry.span_canvas(span)` sizes, without bleed.

    The artwork covers the whole physical span; each monitor shows the part in front of it, so lines
    continue straight across the bezels. `align` places monitors of different heights: top|center|bottom.
    """

    monitors: tuple[Monitor, ...]
    bezels_mm: tuple[float, ...]
    align: str = "center"


@dataclass(frozen=True)
class Canvas:
    width: int  # trim size, px
    height: int
    dpi: int = 72
    bleed: int = 0  # px on each side
    safe_margin: int = 0  # px inside the trim box
    background: RGBA = (255, 255, 255, 255)
    preset: str | None = None

    @property
    def full_width(self) -> int:
        return self.width + 2 * self.bleed

    @property
    def full_height(self) -> int:
        return self.height + 2 * self.bleed


@dataclass(frozen=True)
class GenerateLayer:
    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 20
    guidance: float = 4.5
    sampler: str | None = None  # None: the model's scheduler_config.json
    model: str | None = None  # None: the command line's --model
    region: Region = Region("full")
    fit: str = "cover"  # cover | contain
    strategy: str = "auto"  # auto | direct | upscale
    opacity: float = 1.0
    name: str = ""

    @property
    def guided(self) -> bool:
        """Classifier-free guidance on (as the pipeline decides it: guidance above 1)."""
        return self.guidance > 1.0

    @property
    def texts(self) -> list[str]:
        """What its generation encodes with T5: the prompt, and the negative prompt when guided."""
        return [self.prompt] + ([self.negative_prompt] if self.guided else [])


@dataclass(frozen=True)
class ImageLayer:
    path: str
    region: Region = Region("full")
    fit: str = "cover"
    opacity: float = 1.0
    name: str = ""


@dataclass(frozen=True)
class Shadow:
    dx: float = 4
    dy: float = 4
    blur: float = 4
    color: RGBA = (0, 0, 0, 160)


@dataclass(frozen=True)
class TextLayer:
    text: str
    font: str | None = None  # a font file path (with "#index" for another face than the first) or an installed family; None: the bundled default
    size: float = 48  # px (the loader converts pt with the canvas DPI)
    color: RGBA = (0, 0, 0, 255)
    region: Region = Region("safe")
    align: str = "left"  # left | center | right
    valign: str = "top"  # top | middle | bottom
    wrap: bool = True
    shrink_to_fit: bool = False
    line_height: float = 1.2  # multiple of the font size
    letter_spacing: float = 0  # px
    stroke_width: float = 0  # px
    stroke_color: RGBA = (0, 0, 0, 255)
    shadow: Shadow | None = None
    opacity: float = 1.0
    name: str = ""


@dataclass(frozen=True)
class ShapeLayer:
    shape: str  # rect | ellipse | line
    region: Region
    fill: RGBA | None = None
    stroke: RGBA | None = None
    stroke_width: float = 0
    radius: float = 0  # rounded rectangle corner radius, px
    opacity: float = 1.0
    name: str = ""


@dataclass(frozen=True)
class FillLayer:
    color: RGBA
    region: Region = Region("full")
    opacity: float = 1.0
    name: str = ""


@dataclass(frozen=True)
class GradientLayer:
    stops: tuple[tuple[float, RGBA], ...]  # (position 0..1, colour), sorted
    kind: str = "linear"  # linear | radial
    angle: float = 90  # degrees, linear only: 0 = left to right, 90 = top to bottom
    region: Region = Region("full")
    opacity: float = 1.0
    name: str = ""


Layer = GenerateLayer | ImageLayer | TextLayer | ShapeLayer | FillLayer | GradientLayer


def layer_label(index: int, layer: Layer) -> str:
    """'layers[2] (title)', 'layers[2]' for a layer without a name: a layer as messages name it."""
    return f"layers[{index}]{f' ({layer.name})' if layer.name else ''}"


def layer_kind(layer: Layer) -> str:
    """The key a layout writes the layer under: 'text', 'generate', ..."""
    return type(layer).__name__.removesuffix("Layer").lower()


@dataclass(frozen=True)
class Output:
    formats: tuple[str, ...] = ("png",)  # png | jpeg | tiff | pdf
    name: str = "{layout}"  # file stem pattern; {layout} and layout variables
    jpeg_quality: int = 92
    per_monitor: bool = True  # spans: also one file per monitor
    crop_marks: bool = False  # PDF: trim marks outside the bleed, on a page that much larger


@dataclass(frozen=True)
class Layout:
    source: str  # file path (or "<string>")
    canvas: Canvas
    layers: tuple[Layer, ...]
    grids: dict[str, Grid] = field(default_factory=dict)
    span: Span | None = None
    output: Output = Output()
    variables: dict[str, str] = field(default_factory=dict)  # as resolved, for manifests
    memory_budget: str | None = None
    model: str | None = None
    # key path ('layers[2]', 'memory_budget', 'layers[2].generate.model') -> the line of the file it is written
    # on, as the loader read it (a layer's: its item in `layers`, an alias too). Not a field: not compared,
    # hashed or checked; a Layout built in code has none, and so has a copy changed in code (dataclasses.replace),
    # whose layers may no longer be the file's.
    lines: ClassVar[Mapping[str, int]] = MappingProxyType({})
    # the variables the file defines that no value outside its `variables` block fills in (setting one changes
    # nothing but the files' metadata), as the loader read it; not a field either
    unused_variables: ClassVar[tuple[str, ...]] = ()

    def where(self, path: str) -> str:
        """Where key path `path` is, as messages name it: 'poster.yaml:14'; the source alone without its line."""
        line = self.lines.get(path)
        return f"{self.source}:{line}" if line else self.source
