"""Font names -> font faces, the one lookup shared by the layout loader (validation) and the compositor.

A layout names a font as a path to a .ttf/.otf/.ttc file (relative to the layout's folder) or as an
installed family ("DejaVu Sans", "DejaVuSans", "dejavu-sans-bold"). Families are found with fontconfig's
`fc-match` when it is installed, else (or when fontconfig has no such family) in the usual font folders
and those of our dependencies (opencv-python's Linux wheels carry DejaVu Sans), by the family and style
names inside each face (every face of a .ttc collection, every named instance of a variable font:
"Roboto" = "Roboto Regular", "Roboto Bold", "Inter Bold" in Inter[wght].ttf) or by the file's name
("Roboto-Regular.ttf" is also "Roboto"). Absent = Pillow's bundled default (Aileron: basic Latin only, no
accents), which always exists.

A face is a file and FreeType's face index, as fontconfig prints it (`fc-list : file index`): the face of
a collection, plus 65536 x the named instance of a variable font (1 = the first). A path names a face
other than the first with `#index`: `fonts/NotoSansCJK.ttc#2`, `Inter[wght].ttf#262144`.
"""

import functools
import importlib.util
import io
import itertools
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import NamedTuple

from studio.errors import InputError
from studio.spec import file_problem, input_path

DEFAULT = "default"
FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts", "~/.local/share/fonts",
             "/Library/Fonts", "/System/Library/Fonts", "~/Library/Fonts", "C:/Windows/Fonts")
PLAIN_STYLES = ("regular", "book", "normal", "roman")  # the style a bare family name means
INSTANCE = 1 << 16  # FreeType's face index: face + INSTANCE x named instance (1-based; 0 = the default)
MAX_INDEX = (1 << 31) - 1  # FreeType reads bits 0-30 of a face index (Pillow overflows past 2^63)
# '#index': ASCII digits, at most 100 (int() refuses over 4300); `index_problem` bounds the value
_INDEXED_RE = re.compile(rf"(.+(?:{'|'.join(map(re.escape, FONT_SUFFIXES))}))#([0-9]{{1,100}})", re.IGNORECASE)


class Face(NamedTuple):
    """A font file (or DEFAULT) and FreeType's face index in it."""

    path: str
    index: int = 0

    def __str__(self) -> str:
        """As a layout names it: the path, with '#index' for a face other than the first."""
        return f"{self.path}#{self.index}" if self.index else self.path


def find_face(name_or_path: str | os.PathLike | None, base_dir: Path | str | None = None) -> Face | None:
    """The face `name_or_path` names, Face("default") for None/"" (the bundled font), None if not found.

    A value with a font suffix (optionally '#index') or a path separator is a path, relative to `base_dir`
    (default: the current folder); anything else is a family name, matched case-, space-, '-' and
    '_'-insensitively. A Path (any os.PathLike) is read as its text.
    """
    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    if name_or_path is None or not name_or_path.strip() or name_or_path.strip().lower() == DEFAULT:
        return Face(DEFAULT)
    indexed = _INDEXED_RE.fullmatch(name_or_path)
    name, index = (indexed[1], int(indexed[2])) if indexed else (name_or_path, 0)
    if _looks_like_path(name):
        path = input_path(name, base_dir)
        return Face(str(path.resolve()), index) if path.is_file() else None
    return _find_family(_normal(name_or_path))


def not_found(name: str, base_dir: Path | str | None, relative_to: str) -> str:
    """Why find_face(name, base_dir) found nothing, one line; `relative_to` says where relative paths are read."""
    indexed = _INDEXED_RE.fullmatch(name)
    bare = indexed[1] if indexed else name
    file = input_path(bare, base_dir)
    problem = file_problem(name, file, "font file", relative_to)
    if problem and (os.path.lexists(file) or _looks_like_path(bare)):  # a folder, a device, a link, a missing path
        return problem
    if file.is_file():
        return f"'{name}' is not a font file ({', '.join(FONT_SUFFIXES)}) nor an installed family"
    return f"no such font '{name}' (a .ttf/.otf path or an installed family){_styles_hint(name)}"


def _styles_hint(name: str) -> str:
    """'; DejaVu Sans has the styles Bold, Bold Oblique, Book, Oblique' when `name` is an installed family (in
    the usual font folders) and a style it lacks ('DejaVu Sans Italic': DejaVu calls it Oblique); else ''."""
    normal, styles = _normal(name), _font_files().styles
    family = max((f for f in styles if normal.startswith(f) and normal != f), key=len, default=None)
    if family is None:
        return ""
    shown, named = styles[family]
    named = sorted(named, key=str.casefold)
    more = f" and {len(named) - 12} more" if len(named) > 12 else ""
    return f"; {shown} has the styles {', '.join(named[:12])}{more}"


def find_font(name_or_path: str | None, base_dir: Path | str | None = None) -> str | None:
    """The font file `name_or_path` names (whichever face of it), "default" for None/"", None if not found."""
    face = find_face(name_or_path, base_dir)
    return face and face.path


def load_font(name_or_path: str | None, size: float, base_dir: Path | str | None = None):
    """A Pillow FreeType font of `size` px for a layout's font value (None: the bundled default)."""
    face = find_face(name_or_path, base_dir)
    if face is None:
        raise InputError(f"no such font '{name_or_path}' (a .ttf/.otf path or an installed family)")
    try:
        return open_face(face, size)
    except OSError as e:  # FreeType: 'invalid ppem value' below 0.5 px, a bitmap font at a size it lacks, ...
        raise InputError(f"cannot draw font '{name_or_path or 'default'}' at {size:g} px ({e})") from None


@functools.lru_cache(maxsize=64)
def open_face(face: Face, size: float):
    """Pillow's font for `face` at `size` px, laid out by raqm when Pillow has it (OSError from FreeType: see
    `index_problem` for a bad index)."""
    from PIL import ImageFont

    if face.path == DEFAULT:  # Pillow's bundled FreeType font (Pillow >= 10.1); load_default lays it out with the
        # basic engine (no kerning, zero-width characters drawn as boxes), so its bytes are opened as any font's
        return ImageFont.truetype(io.BytesIO(ImageFont.load_default(size).font_bytes), size)
    if face.index > MAX_INDEX:
        raise OSError(index_problem(face))
    try:
        font = ImageFont.truetype(face.path, size, index=face.index)
    except OSError:
        if (strikes := bitmap_strikes(face)) is None:
            raise
        sizes, colour = strikes
        raise OSError(f"a bitmap font, with fixed sizes only: {', '.join(map(str, sizes))} px"
                      + ("; its glyphs are colour pictures, which studio does not draw" if colour else "")) from None
    if face.index >= INSTANCE:  # FreeType without variation support ignores the instance: say so instead
        try:
            font.get_variation_names()
        except OSError:
            raise OSError("a named instance of a variable font, and this Pillow's FreeType cannot vary "
                          "fonts") from None
    return font


def index_problem(face: Face) -> str | None:
    """Why `face.index` names no face of its file ('no face 5: the file has 2, #0 to #1'), or None."""
    from PIL import ImageFont

    if face.index > MAX_INDEX:
        return f"#{face.index} is out of range: a face index is at most {MAX_INDEX} (2^31 - 1)"
    try:
        faces = face_count(face.path)
    except OSError:
        return None
    number, instance = face.index % INSTANCE, face.index // INSTANCE
    if number >= faces:
        return f"no face {number}: the file has {faces}, #0{f' to #{faces - 1}' if faces > 1 else ''}"
    if instance:
        try:
            count = len(_named_instances(ImageFont.truetype(face.path, 10, index=number), face.path, number))
        except OSError:
            return None
        if instance > count:
            has = f"has {count} named instances" if count else "is not a variable font"
            return (f"no named instance {instance} (#{face.index} = face {number} + {instance} x 65536): "
                    f"face {number} {has}")
    return None


def bitmap_strikes(face: Face) -> tuple[list[int], bool] | None:
    """(pixel sizes, in colour) of a font whose glyphs are bitmaps only (no glyf, CFF or CFF2 outlines): colour
    emoji (CBLC, sbix) or a bitmap font (EBLC); None for any other file."""
    try:
        data = Path(face.path).read_bytes()
        start = struct.unpack_from(">I", data, 12 + 4 * (face.index % INSTANCE))[0] if data[:4] == b"ttcf" else 0
        tables = {tag: at for tag, _, at, _ in (struct.unpack_from(">4s3I", data, start + 12 + 16 * n)
                                                for n in range(struct.unpack_from(">H", data, start + 4)[0]))}
        if tables.keys() & {b"glyf", b"CFF ", b"CFF2"}:
            return None
        if b"sbix" in tables:  # strike offsets, each strike starting with its ppem
            at = tables[b"sbix"]
            offsets = struct.unpack_from(f">{struct.unpack_from('>I', data, at + 4)[0]}I", data, at + 8)
            sizes = [struct.unpack_from(">H", data, at + offset)[0] for offset in offsets]
        elif at := tables.get(b"CBLC", tables.get(b"EBLC")):  # 48-byte BitmapSize records, ppemY at 45
            sizes = [data[at + 8 + 48 * n + 45] for n in range(struct.unpack_from(">I", data, at + 4)[0])]
        else:
            return None
    except (OSError, IndexError, struct.error):
        return None
    return sorted(set(sizes)), b"EBLC" not in tables


def face_count(path: str) -> int:
    """The number of faces in a font file: a collection's header says (OpenType's 'ttcf'), others have one."""
    with open(path, "rb") as f:
        head = f.read(12)
    return int.from_bytes(head[8:12], "big") if head[:4] == b"ttcf" and len(head) == 12 else 1


def _looks_like_path(text: str) -> bool:
    return text.lower().endswith(FONT_SUFFIXES) or "/" in text or "\\" in text


def _normal(name: str) -> str:
    """'DejaVu Sans-Bold' -> 'dejavusansbold': the form in which families and file stems are compared."""
    return re.sub(r"[\s_\-]+", "", name).casefold()


@functools.lru_cache(maxsize=None)
def _find_family(normal_name: str) -> Face | None:
    return _fc_match(normal_name) or _font_files().faces.get(normal_name)


def _fc_match(normal_name: str) -> Face | None:
    """fontconfig's face for the family, or None. A family + a plain style ('dejavusansregular', a family
    fontconfig does not know) is the family's face of a plain style (DejaVu Sans Book)."""
    if shutil.which("fc-match") is None:
        return None
    plain = re.fullmatch(rf"(.+)({'|'.join(PLAIN_STYLES)})", normal_name)
    return (_fc_face(normal_name, normal_name)
            or (_fc_face(f"{plain[1]}:style={plain[2]}", plain[1], plain=True) if plain else None))


def _fc_face(pattern: str, normal_family: str, plain: bool = False) -> Face | None:
    """fc-match's face for `pattern` if its family is `normal_family` (and its style a plain one, if `plain`):
    fc-match always answers, with the default font for a family it does not know."""
    try:
        out = subprocess.run(["fc-match", "-f", "%{family}\n%{style}\n%{file}\n%{index}", pattern],
                             capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, ValueError, subprocess.SubprocessError):  # ValueError: a NUL in the name
        return None
    families, styles, file, index = (out.split("\n") + ["", "", ""])[:4]
    if plain and not any(style.strip().casefold() in PLAIN_STYLES for style in styles.split(",")):
        return None
    if file and normal_family in {_normal(f) for f in families.split(",")} and Path(file).is_file():
        return Face(file, int(index) if index.isdigit() else 0)
    return None


def _dependency_font_dirs() -> list[str]:
    """Font folders our dependencies install: opencv-python's wheels for Linux carry DejaVu Sans (for its
    Qt windows), so on a machine with no fonts installed `DejaVu Sans` is still found."""
    spec = importlib.util.find_spec("cv2")
    return [str(Path(location) / "qt" / "fonts") for location in (spec and spec.submodule_search_locations or [])]


class FontFiles(NamedTuple):
    """The usual font folders' faces by name (`_font_files`), and each family's styles: normalised family ->
    (the family's name, its style names)."""

    faces: dict[str, Face]
    styles: dict[str, tuple[str, set[str]]]


@functools.lru_cache(maxsize=1)
def _font_files() -> FontFiles:
    """Normalised name -> face, over the usual font folders. Each face of each readable font file is known by
    its family + style ('robotobold') and, for a plain style, by its family alone ('roboto') and its family +
    any plain style ('dejavusansregular' for DejaVu Sans Book), and so is each named instance of a variable font
    ('interbold'); the file's first face also by its stem and its stem less a plain-style suffix
    ('Roboto-Regular' -> 'roboto'). A face's own family and style win over another plain style's name (Avenir
    Roman is not Avenir Book), which wins over file names; among equals, the first file and face found (a face's
    own names before its instances')."""
    from PIL import ImageFont

    by_name, by_plain, by_file, styles = {}, {}, {}, {}

    def known_as(family: str | None, style: str | None, face: Face) -> None:
        family, style = family or "", style or ""
        by_name.setdefault(_normal(family + style), face)
        if family and style:
            styles.setdefault(_normal(family), (family, set()))[1].add(style)
        if style.casefold() in PLAIN_STYLES:
            by_name.setdefault(_normal(family), face)
            for plain in PLAIN_STYLES:  # 'DejaVu Sans Regular' is its Book
                by_plain.setdefault(_normal(family + plain), face)

    for folder in (*FONT_DIRS, *_dependency_font_dirs()):
        root = Path(os.path.expanduser(folder))
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() not in FONT_SUFFIXES:
                continue
            try:
                faces = face_count(str(path))
            except OSError:
                continue
            for index in range(faces):
                try:
                    font = ImageFont.truetype(str(path), 10, index=index)
                except OSError:  # not a font after all (nor the faces a damaged header counts after this one)
                    break
                known_as(*font.getname(), Face(str(path), index))
                if index == 0:
                    by_file.setdefault(_normal(path.stem), Face(str(path)))
                    plain = re.fullmatch(rf"(.+)[\s_\-]({'|'.join(PLAIN_STYLES)})", path.stem, re.IGNORECASE)
                    if plain:
                        by_file.setdefault(_normal(plain[1]), Face(str(path)))
                for instance in _named_instances(font, str(path), index):
                    known_as(*instance.getname(), Face(str(path), instance.index))
    return FontFiles(by_file | by_plain | by_name, styles)


def _named_instances(font, path: str, index: int) -> list:
    """Pillow's fonts of each named instance of face `index`, if it is a variable font (its style name is the
    instance's: 'Bold'); none when FreeType cannot vary fonts."""
    from PIL import ImageFont

    try:
        font.get_variation_names()
    except OSError:  # not a variable font, or FreeType without variation support
        return []
    instances = []
    for number in itertools.count(1):  # FreeType refuses the number after the last
        try:
            instances.append(ImageFont.truetype(path, 10, index=index + number * INSTANCE))
        except OSError:
            return instances
