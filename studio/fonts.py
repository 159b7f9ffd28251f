"""Font names -> font files, the one lookup shared by the layout loader (validation) and the compositor.

A layout names a font as a path to a .ttf/.otf/.ttc file (relative to the layout's folder) or as an
installed family ("DejaVu Sans", "DejaVuSans", "dejavu-sans-bold"). Families are found with fontconfig's
`fc-match` when it is installed, else (or when fontconfig has no such family) in the usual font folders
and those of our dependencies (opencv-python's Linux wheels carry DejaVu Sans), by the family and style
names inside each file ("Roboto" = "Roboto Regular", "Roboto Bold") or by the file's name
("Roboto-Regular.ttf" is also "Roboto"). Absent = Pillow's bundled default (Aileron: basic Latin only, no
accents), which always exists.
"""

import functools
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

from studio.errors import InputError

DEFAULT = "default"
FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts", "~/.local/share/fonts",
             "/Library/Fonts", "/System/Library/Fonts", "~/Library/Fonts", "C:/Windows/Fonts")
PLAIN_STYLES = ("regular", "book", "normal", "roman")  # the style a bare family name means


def find_font(name_or_path: str | None, base_dir: Path | str | None = None) -> str | None:
    """A font file path for `name_or_path`, "default" for None/"" (the bundled font), None if not found.

    A value with a font suffix or a path separator is a path, relative to `base_dir` (default: the
    current folder); anything else is a family name, matched case-, space-, '-' and '_'-insensitively.
    """
    if name_or_path is None or not name_or_path.strip() or name_or_path.strip().lower() == DEFAULT:
        return DEFAULT
    if _looks_like_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_absolute():
            path = Path(base_dir or ".") / path
        return str(path.resolve()) if path.is_file() else None
    return _find_family(_normal(name_or_path))


def load_font(name_or_path: str | None, size: float, base_dir: Path | str | None = None):
    """A Pillow FreeType font of `size` px for a layout's font value (None: the bundled default)."""
    path = find_font(name_or_path, base_dir)
    if path is None:
        raise InputError(f"no such font '{name_or_path}' (a .ttf/.otf path or an installed family)")
    try:
        return _open_font(path, size)
    except OSError as e:  # FreeType: 'invalid ppem value' below 0.5 px, a bitmap font at a size it lacks, ...
        raise InputError(f"cannot draw font '{name_or_path or 'default'}' at {size:g} px ({e})") from None


@functools.lru_cache(maxsize=64)
def _open_font(path: str, size: float):
    from PIL import ImageFont

    if path == DEFAULT:
        return ImageFont.load_default(size)  # Pillow's bundled FreeType font (Pillow >= 10.1)
    return ImageFont.truetype(path, size)


def _looks_like_path(text: str) -> bool:
    return text.lower().endswith(FONT_SUFFIXES) or "/" in text or "\\" in text


def _normal(name: str) -> str:
    """'DejaVu Sans-Bold' -> 'dejavusansbold': the form in which families and file stems are compared."""
    return re.sub(r"[\s_\-]+", "", name).casefold()


@functools.lru_cache(maxsize=None)
def _find_family(normal_name: str) -> str | None:
    return _fc_match(normal_name) or _font_files().get(normal_name)


def _fc_match(normal_name: str) -> str | None:
    """fontconfig's file for the family, or None; fc-match always answers, so its family must match."""
    if shutil.which("fc-match") is None:
        return None
    try:
        out = subprocess.run(["fc-match", "-f", "%{family}\n%{file}", normal_name], capture_output=True,
                             text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    families, _, file = out.partition("\n")
    if file and normal_name in {_normal(f) for f in families.split(",")} and Path(file).is_file():
        return file
    return None


def _dependency_font_dirs() -> list[str]:
    """Font folders our dependencies install: opencv-python's wheels for Linux carry DejaVu Sans (for its
    Qt windows), so on a machine with no fonts installed `DejaVu Sans` is still found."""
    spec = importlib.util.find_spec("cv2")
    return [str(Path(location) / "qt" / "fonts") for location in (spec and spec.submodule_search_locations or [])]


@functools.lru_cache(maxsize=1)
def _font_files() -> dict[str, str]:
    """Normalised name -> path, over the usual font folders. Each readable font file is known by its family
    + style ('robotobold'), its family alone for a plain style ('roboto'), its file stem, and its stem less
    a plain-style suffix ('Roboto-Regular' -> 'roboto'). Family and style names win over file names; among
    equals, the first file found."""
    from PIL import ImageFont

    by_name, by_file = {}, {}
    for folder in (*FONT_DIRS, *_dependency_font_dirs()):
        root = Path(os.path.expanduser(folder))
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() not in FONT_SUFFIXES:
                continue
            try:
                family, style = (n or "" for n in ImageFont.truetype(str(path), 10).getname())  # first face
            except OSError:  # not a font after all
                continue
            by_name.setdefault(_normal(family + style), str(path))
            if style.casefold() in PLAIN_STYLES:
                by_name.setdefault(_normal(family), str(path))
            by_file.setdefault(_normal(path.stem), str(path))
            plain = re.fullmatch(rf"(.+)[\s_\-]({'|'.join(PLAIN_STYLES)})", path.stem, re.IGNORECASE)
            if plain:
                by_file.setdefault(_normal(plain[1]), str(path))
    return by_file | by_name
