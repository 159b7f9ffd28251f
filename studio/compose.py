"""A layout and its generated art -> one RGB raster of the full canvas (trim + bleed).

`compose(layout, art)` takes the validated `Layout` and, for each GenerateLayer, the image generated for it
(`art[i]`, i = the layer's index in `layout.layers`); it returns an RGB image of
`canvas.full_width x canvas.full_height` px: the background, then every layer alpha-composited in list
order. Each layer is drawn into an RGBA tile at its resolved box (`geometry.resolve`), its alpha multiplied
by the layer's opacity, and composited with Pillow's `alpha_composite` (a shape's fill and translucent stroke
as two tiles, `shape_tiles`). Text is antialiased, its letters combined with their shadow in one 8-bit tile (±1
level where both are translucent); fills, shapes and gradients are exact (no antialiasing), so tiny canvases have
exact expected pixels. Image files are turned upright by their EXIF orientation (`exif_turn`) and converted to
sRGB from their embedded ICC profile; greyscale of 16 bits or 32-bit floats (0..1) becomes 8 bits (`eight_bit`,
`grey_alpha_16`); a PNG's transparent colour is found among the file's own samples (`colour_keyed`,
`eight_bit`). `picture_problem(name, file)` says why an image file cannot be drawn, before any work (the loader
and `check.check_layout`).

`text_problems(layout)` lists text that leaves its region, enters the safe margin or the bleed, fits at no size
with shrink_to_fit, shows on no monitor of a span, lacks glyphs or needs raqm; `hidden_problems(layout)` the text
and image layers that a later opaque layer hides (a layout listed top layer first). Proof and render warn of both.
`cut_span(image, boxes, monitors)` cuts a span canvas into one image per monitor.
"""

import contextlib
import functools
import io
import itertools
import math
import os
import re
import struct
import unicodedata
import warnings
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
from PIL import ExifTags, Image, ImageChops, ImageDraw, ImageFilter

from studio import fonts
from studio.errors import InputError
from studio.geometry import Box, fit_box, resolve, span_canvas, trim_box
from studio.layout import MAX_PIXELS  # and Pillow's own limit, which importing layout sets to it
from studio.spec import (FillLayer, GenerateLayer, GradientLayer, ImageLayer, Layout, Monitor, Region, ShapeLayer,
                         TextLayer, input_path, layer_kind, layer_label)

RGBA = tuple[int, int, int, int]
PLACEHOLDER_TINTS = [(120, 160, 220), (220, 140, 120), (130, 200, 140), (200, 170, 90), (170, 130, 210)]
GRADIENT_ROWS = 256  # gradients are computed this many rows at a time (memory stays small at A2 / 300 dpi)
SIDES = ("left", "top", "right", "bottom")
MISSING_PROBE = "\U0010fffd"  # a private-use code point: every font draws it as its missing-glyph box
PROFILE_MODES = {"RGB": "RGB", "CMYK": "CMYK", "GRAY": "L", "LAB": "LAB"}  # ICC colour space -> Pillow mode
# what Pillow raises for a file it cannot read or decode: OSError (truncated, unidentified), ValueError, SyntaxError
# and RuntimeError (AVIF: 'BMFF parsing failed', 'Failed to decode image: ...'), EOFError and struct.error (headers
# cut short); the loader (`layout`) and the compositor catch these, not every exception
PICTURE_ERRORS = (OSError, ValueError, SyntaxError, RuntimeError, EOFError, struct.error)
# EXIF orientation -> the turn that shows the picture upright, as Pillow's ImageOps.exif_transpose turns it (1: as
# stored)
TURNS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
         5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
         8: Image.Transpose.ROTATE_90}
# the spaces a line may break at: not the no-break spaces U+00A0, U+2007 (figure) and U+202F (narrow); and U+200B,
# the zero width space, a break opportunity with no space
BREAKING_SPACES = " \t\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2008\u2009\u200a\u205f\u3000\u200b"
GAP_WORD = re.compile(f"([{BREAKING_SPACES}]*)([^{BREAKING_SPACES}]+)")  # a word and the spaces before it
ZWJ = "\u200d"  # zero width joiner: the characters on either side are drawn as one (emoji sequences)
REGIONAL_INDICATORS = range(0x1F1E6, 0x1F200)  # two make a flag
EMOJI_MODIFIERS = range(0x1F3FB, 0x1F400)  # skin tones, after their emoji
TAGS = range(0xE0020, 0xE0080)  # after a black flag: a subdivision's flag (England, Scotland)
CONTEXT = 16  # clusters back that kerning and ligatures are measured in (`spaced_clusters`, `wrap`)
BIDI = {"R", "AL", "AN", "LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"}  # classes that reorder a line
INK_MARGIN = 2  # px past its glyphs' boxes (getbbox) that antialiased text drawn at a fractional position may reach


def compose(layout: Layout, art: dict[int, Image.Image] | None = None, proof: bool = False,
            labels: dict[int, str] | None = None) -> Image.Image:
    """The full raster (trim + bleed) as RGB.

    art: layer index -> generated image for that GenerateLayer (any size; fitted with Lanczos).
    proof: draw every GenerateLayer as a labelled placeholder (fast at any size); layers without art are
    placeholders anyway. labels: layer index -> extra placeholder text (e.g. "generate 1024x1536, upscale").
    """
    art, labels = art or {}, labels or {}
    canvas, base_dir = layout.canvas, layout_dir(layout)
    image = Image.new("RGBA", (canvas.full_width, canvas.full_height), over_white(canvas.background))
    for i, layer in enumerate(layout.layers):
        box = resolve(layer.region, canvas, layout.grids)
        if (box.w <= 0 or box.h <= 0) and not (isinstance(layer, ShapeLayer) and layer.shape == "line"):
            continue  # an empty region draws nothing, except a line's (horizontal and vertical lines)
        if isinstance(layer, GenerateLayer):
            if proof or i not in art:
                tile, at = placeholder(layer, i, box, labels.get(i, "")), (box.x, box.y)
            else:
                tile, at = fitted(art[i], box, layer.fit)
        elif isinstance(layer, ImageLayer):
            tile, at = fitted(open_image(layer, i, base_dir), box, layer.fit)
        elif isinstance(layer, TextLayer):
            with glyph_bitmaps(i):
                tile, at = text_tile(layer, box, base_dir)
        elif isinstance(layer, ShapeLayer):
            *below, (tile, at) = shape_tiles(layer, box)
            for part, part_at in below:  # a fill below its translucent stroke
                paste(image, part, part_at)
        elif isinstance(layer, FillLayer):
            tile, at = Image.new("RGBA", (box.w, box.h), layer.color), (box.x, box.y)
        elif isinstance(layer, GradientLayer):
            tile, at = gradient_tile(layer, box), (box.x, box.y)
        else:
            raise InputError(f"layers[{i}]: cannot draw a {type(layer).__name__}")
        paste(image, with_opacity(tile, layer.opacity), at)
    return image.convert("RGB")


def over_white(colour: RGBA) -> RGBA:
    """`colour` alpha-composited over white, by Pillow: one pixel stands for a canvas of them."""
    pixel = Image.new("RGBA", (1, 1), (255, 255, 255, 255))
    pixel.alpha_composite(Image.new("RGBA", (1, 1), colour))
    return pixel.getpixel((0, 0))


def layout_dir(layout: Layout) -> Path | None:
    """The folder that image and font paths are relative to (None for a layout from a string)."""
    return None if layout.source.startswith("<") else Path(layout.source).parent


def paste(image: Image.Image, tile: Image.Image, at: tuple[int, int]) -> None:
    """Alpha-composite `tile` onto `image` with its top-left at `at` (may be partly off the image)."""
    x, y = at
    left, top = max(0, -x), max(0, -y)
    right, bottom = min(tile.width, image.width - x), min(tile.height, image.height - y)
    if right <= left or bottom <= top:
        return
    if (left, top, right, bottom) != (0, 0, tile.width, tile.height):
        tile = tile.crop((left, top, right, bottom))
    image.alpha_composite(tile, dest=(x + left, y + top))


def with_opacity(tile: Image.Image, opacity: float) -> Image.Image:
    """alpha := round(alpha * opacity)."""
    if opacity >= 1:
        return tile
    tile = tile.copy()
    tile.putalpha(tile.getchannel("A").point(lambda a: math.floor(a * opacity + 0.5)))
    return tile


# -- pictures ------------------------------------------------------------------------------------------------

def fitted(picture: Image.Image, box: Box, fit: str) -> tuple[Image.Image, tuple[int, int]]:
    """`picture` scaled (Lanczos) to cover or fit inside `box`; cover crops the overflow evenly on both sides,
    contain leaves the rest of the box transparent. Returns the tile and its top-left."""
    picture = picture.convert("RGBA")
    w, h, dest = fit_box(picture.width, picture.height, box, fit)
    if fit == "cover" and (w, h) != (box.w, box.h):
        # only the part that stays is resampled: a thin strip cut from a picture scaled to cover it would
        # first make the whole scaled picture (32768 x 8192 px for a 32768 x 200 strip: 1 GiB)
        dx, dy = (w - box.w) // 2, (h - box.h) // 2
        if picture.size == (w, h):
            return picture.crop((dx, dy, dx + box.w, dy + box.h)), (box.x, box.y)
        sx, sy = picture.width / w, picture.height / h
        return picture.resize((box.w, box.h), Image.Resampling.LANCZOS,
                              box=(dx * sx, dy * sy, (dx + box.w) * sx, (dy + box.h) * sy)), (box.x, box.y)
    if (w, h) != picture.size:
        picture = picture.resize((w, h), Image.Resampling.LANCZOS)
    return picture, (dest.x, dest.y)


def open_image(layer: ImageLayer, index: int, base_dir: Path | None) -> Image.Image:
    """The layer's picture as sRGB RGBA, turned upright by its EXIF orientation, greyscale made 8-bit."""
    from PIL import ImageCms

    path = input_path(layer.path, base_dir)
    try:
        # opened from a file, not a path: from a path Pillow maps an uncompressed TIFF into memory at its upright
        # size, which garbles one turned by 90 degrees (EXIF orientation 5-8) in modes L, I;16, P, RGBA, CMYK
        with open(path, "rb") as f, Image.open(f) as im:
            im.load()
            picture = eight_bit(colour_keyed(grey_alpha_16(im, f), f))
            turn = exif_turn(im)
            return in_srgb(picture.transpose(turn) if turn is not None else picture, im.info.get("icc_profile"))
    except (*PICTURE_ERRORS, ImageCms.PyCMSError, Image.DecompressionBombError) as e:
        raise InputError(f"layers[{index}].image.path: cannot read image '{layer.path}' ({e})") from None


def exif_turn(picture: Image.Image) -> Image.Transpose | None:
    """The turn that shows `picture` upright by its EXIF orientation (or XMP's, as Pillow reads it), None for
    none: `TURNS`, as ImageOps.exif_transpose turns it, but without writing the EXIF again, which it does to drop
    the orientation and which fails on a tag of a non-standard type (the compositor keeps no EXIF). An EXIF too
    damaged to give the orientation leaves the picture as stored, as image viewers show it: a designer's photo is
    not refused for metadata that does not change its pixels (Pillow's warnings about it are not shown)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 'Corrupt EXIF data', 'Possibly corrupt EXIF data', ...
        try:
            orientation = picture.getexif().get(ExifTags.Base.Orientation, 1)
        except PICTURE_ERRORS:  # e.g. SyntaxError: not a TIFF header
            return None
    return TURNS.get(orientation)


def picture_problem(name: str, file: Path) -> str | None:
    """Why the regular file `file`, which a layout names `name`, is no picture `open_image` can draw: not an image
    Pillow can read, more than MAX_PIXELS, damaged (decoded whole, as `open_image` decodes it: it fails here, not
    after the generations; 24 MP: 0.2 s), or with a colour profile that does not convert to sRGB (one pixel of it
    converted); None when it can be drawn. The loader and `check.check_layout` say it alike; the answer for a
    file is kept while its size, modification time and inode stay (a batch's items share their images)."""
    try:
        stat = os.stat(file)
    except OSError:
        return f"'{name}' is not an image Pillow can read"
    return _picture_problem(name, str(file), stat.st_size, stat.st_mtime_ns, stat.st_ino)


@functools.lru_cache(maxsize=256)
def _picture_problem(name: str, file: str, size: int, mtime_ns: int, inode: int) -> str | None:
    from PIL import ImageCms

    unreadable = f"'{name}' is not an image Pillow can read"
    too_large = f"'{name}' is too large: an image may have at most {MAX_PIXELS} pixels (2^28)"
    try:
        f = open(file, "rb")
    except OSError:
        return unreadable
    with f, warnings.catch_warnings():  # the warning Pillow gives up to twice its limit: checked below
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(f)
        except Image.DecompressionBombError:
            return too_large
        except PICTURE_ERRORS:
            return unreadable
        with image:
            w, h = image.size
            if w * h > MAX_PIXELS:
                return f"{too_large}; it is {w} x {h} px = {w * h}"
            try:
                image.load()
                picture = colour_keyed(grey_alpha_16(image, f), f)
            except PICTURE_ERRORS as e:
                return f"'{name}' is damaged: {e}"
            if not image.info.get("icc_profile"):
                return None
            try:
                in_srgb(eight_bit(picture.crop((0, 0, 1, 1))), image.info["icc_profile"])
            except ValueError as e:  # a profile of another colour space than the picture's
                return f"'{name}': {e}"
            except (OSError, ImageCms.PyCMSError) as e:
                return f"'{name}' has a colour profile that cannot be used ({e})"
    return None


def png_header(f: BinaryIO) -> tuple[int, int]:
    """The bit depth and colour type (0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA) in the IHDR chunk of the
    PNG file `f`, read from its start."""
    f.seek(0)
    head = f.read(26)  # signature (8 bytes), IHDR's length and name (8), width, height (8), bit depth, colour type
    if head[12:16] != b"IHDR":
        raise ValueError("its first chunk is not IHDR")
    return head[24], head[25]


def sixteen_bit_samples(f: BinaryIO, picture: Image.Image, what: str) -> np.ndarray:
    """The samples of the 16-bit PNG file `f` (decoded by Pillow as `picture`) as OpenCV reads them, all 16 bits:
    uint16, height x width x 3 (BGR) or 4 (BGRA; grey + alpha as B = G = R). `what`: what they are read for."""
    import cv2

    f.seek(0)
    bgr = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_UNCHANGED)  # as stored: no EXIF turn
    if bgr is None or bgr.dtype != np.uint16 or bgr.ndim != 3 or bgr.shape[:2] != (picture.height, picture.width):
        raise ValueError(f"OpenCV cannot read its 16-bit samples {what}")
    return bgr


def grey_alpha_16(picture: Image.Image, f: BinaryIO) -> Image.Image:
    """A PNG of 16-bit grey with alpha (just decoded from file `f`) as LA, both samples `eight_bits` (v / 257
    rounded) from all 16 bits, read again with OpenCV: Pillow keeps only each sample's high byte (510 -> 1, not 2)
    and makes it RGBA. Any other picture as it is."""
    if picture.format != "PNG" or picture.mode != "RGBA" or png_header(f) != (16, 4):
        return picture
    bgra = sixteen_bit_samples(f, picture, "(grey and alpha)")
    if bgra.shape[2] != 4:
        raise ValueError("OpenCV reads no alpha in its 16-bit grey and alpha")
    return Image.fromarray(eight_bits(bgra[..., [0, 3]]), "LA")


def colour_keyed(picture: Image.Image, f: BinaryIO) -> Image.Image:
    """A PNG (just opened from file `f`) whose tRNS chunk makes one grey level or colour transparent, as LA or
    RGBA with that key applied to the file's own samples, as the PNG spec has it. Pillow scales 2- and 4-bit grey
    to 0..255 and keeps only the high byte of 16-bit colour, but leaves the key in the file's units, so its own
    conversion keys the wrong pixels or none: here the key of 2- and 4-bit grey is scaled as Pillow scales the
    pixels, and 16-bit colour is read again with OpenCV, which keeps all 16 bits, transparent where its three
    samples equal the key's. Any other picture as it is (Pillow keys 1- and 8-bit PNGs right; `eight_bit`
    keys 16-bit grey)."""
    key = picture.info.get("transparency")
    if picture.format != "PNG" or picture.mode not in ("L", "RGB") or key is None:
        return picture
    picture.load()  # Pillow is done with `f`: it may be read again
    depth, _ = png_header(f)
    if depth == 8:
        return picture
    if picture.mode == "L":  # 2 or 4 bits (1 bit is mode 1)
        opaque = np.asarray(picture) != key * 255 // (2 ** depth - 1)
    else:  # 16 bits a sample
        bgr = sixteen_bit_samples(f, picture, "to find its transparent colour")
        opaque = (bgr[..., 2::-1] != np.array(key)).any(axis=2)  # BGR(A) -> RGB
    keyed = picture.copy()  # info (EXIF orientation) kept
    keyed.putalpha(Image.fromarray(np.where(opaque, 255, 0).astype(np.uint8), "L"))
    del keyed.info["transparency"]
    return keyed


def eight_bits(v: np.ndarray) -> np.ndarray:
    """16-bit values -> uint8: v / 257 rounded, so 65535 -> 255 and 32768 -> 128 (v / 257 is never x.5), clipped
    to 0..65535 first."""
    return ((v.astype(np.int64).clip(0, 65535) + 128) // 257).astype(np.uint8)


def eight_bit(picture: Image.Image) -> Image.Image:
    """Greyscale beyond 8 bits -> L, where Pillow's own conversion clips everything above 255 to white:
    16-bit (modes I;16*, and I: 32-bit integers, as Pillow opens 16-bit PGM and some TIFFs) `eight_bits`,
    clipped to 0..65535, and LA where a PNG's tRNS makes one value transparent; 32-bit float (F) v * 255
    rounded, so 0..1 is black..white, clipped, NaN black."""
    if picture.mode == "F":
        v = np.nan_to_num(np.asarray(picture, dtype=np.float64), nan=0.0)
        return Image.fromarray(np.floor(v.clip(0, 1) * 255 + 0.5).astype(np.uint8), "L")
    if not picture.mode.startswith("I"):
        return picture
    v = np.asarray(picture)
    grey = Image.fromarray(eight_bits(v), "L")
    key = picture.info.get("transparency")
    if isinstance(key, int):  # the 16-bit value that is transparent (8-bit, it could stand for others too)
        grey.putalpha(Image.fromarray(np.where(v == key, 0, 255).astype(np.uint8), "L"))
    return grey


def in_srgb(picture: Image.Image, icc: bytes | None) -> Image.Image:
    """RGBA in sRGB. An embedded ICC profile (Display P3, Adobe RGB, a CMYK press profile, ...) is converted
    with LittleCMS, relative colorimetric with black point compensation; without one the picture is taken
    to be sRGB (CMYK by Pillow's naive formula)."""
    if not icc:
        return picture.convert("RGBA")
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    space = profile.profile.xcolor_space.strip().upper()  # 'RGB', 'CMYK', 'GRAY', 'LAB' (tagged 'Lab '), ...
    ours = {"CMYK": "CMYK", "LAB": "LAB", "L": "GRAY", "LA": "GRAY", "1": "GRAY"}.get(picture.mode, "RGB")
    if space not in PROFILE_MODES or (ours != space and (ours, space) != ("GRAY", "RGB")):
        raise ValueError(f"its {space} colour profile does not fit a {picture.mode} picture")
    alpha = picture.convert("RGBA").getchannel("A")
    rgb = ImageCms.profileToProfile(picture.convert(PROFILE_MODES[space]), profile, ImageCms.createProfile("sRGB"),
                                    renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode="RGB",
                                    flags=ImageCms.Flags.BLACKPOINTCOMPENSATION)
    rgb.putalpha(alpha)
    return rgb


def placeholder(layer: GenerateLayer, index: int, box: Box, label: str) -> Image.Image:
    """A tinted, hatched box with a frame and the layer's name, prompt excerpt and `label`."""
    tint = PLACEHOLDER_TINTS[index % len(PLACEHOLDER_TINTS)]
    tile = Image.new("RGBA", (box.w, box.h), tint + (255,))
    draw = ImageDraw.Draw(tile)
    line = tuple(c * 3 // 4 for c in tint) + (255,)
    step = max(8, min(box.w, box.h) // 16)
    for d in range(0, box.w + box.h, step):  # 45-degree hatching
        draw.line((d, 0, d - box.h, box.h), fill=line, width=max(1, step // 8))
    draw.rectangle((0, 0, box.w - 1, box.h - 1), outline=(40, 40, 40, 255), width=max(1, step // 8))
    title = layer.name or f"layers[{index}]"
    prompt = layer.prompt if len(layer.prompt) <= 120 else layer.prompt[:117] + "..."
    text = "\n".join(t for t in (f"{title} (generate)", prompt, label) if t)
    size = max(6, min(box.w, box.h) // 18)
    font = fonts.load_font(None, size)
    margin = max(2, step // 2)
    lines = wrap(text, font, box.w - 2 * margin, 0)
    ascent, _ = font.getmetrics()
    for n, words in enumerate(lines):
        y = margin + ascent + n * round(size * 1.2)
        if y > box.h:
            break
        draw.text((margin, y), words, font=font, fill=(20, 20, 20, 255), anchor="ls")
    return tile


# -- text ------------------------------------------------------------------------------------------------------

def paragraphs(text: str) -> list[str]:
    """The lines of `text` as written, split at every line end `str.splitlines` knows: LF, CRLF, CR, U+2028 and
    U+2029, and NEL, VT and FF (Unicode's line breaking has these as mandatory breaks) and U+001C-U+001E (raqm
    cannot lay out a CR, NEL or U+001C-U+001E inside a line); a line end at the very end starts no new line (a
    YAML `|` block ends with one)."""
    return text.splitlines() or [""]


def clusters(line: str) -> list[str]:
    """`line` cut into the characters letter spacing moves apart, each with what follows it and is drawn with it:
    combining marks (variation selectors among them), zero-width-joined characters, emoji modifiers and tags; and
    regional indicators in pairs (a flag)."""
    out = []
    for ch in line:
        code = ord(ch)
        if out and (unicodedata.category(ch).startswith("M") or ch == ZWJ or out[-1].endswith(ZWJ)
                    or code in EMOJI_MODIFIERS or code in TAGS
                    or (code in REGIONAL_INDICATORS and len(out[-1]) == 1 and ord(out[-1]) in REGIONAL_INDICATORS)):
            out[-1] += ch
        else:
            out.append(ch)
    return out


def needs_shaping(ch: str) -> bool:
    """Whether `ch` needs a line laid out as a whole (raqm): right-to-left (Hebrew, Arabic), or a virama (Indic
    scripts, whose letters join around it)."""
    return unicodedata.bidirectional(ch) in ("R", "AL") or unicodedata.combining(ch) == 9


def reorders(ch: str) -> bool:
    """Whether `ch` may reorder a line (`BIDI`: right-to-left letters and numbers, embeddings, overrides,
    isolates): the line's runs, and so its kerning and mirrored brackets, then depend on all of it."""
    return unicodedata.bidirectional(ch) in BIDI


def tracking(line: str, spacing: float) -> float:
    """The letter spacing of `line`: none for a line with right-to-left text or a virama (`needs_shaping`): drawn
    glyph by glyph it would come out reversed, Arabic's letters would lose their joins and Devanagari's
    conjuncts would fall apart."""
    return 0 if spacing and any(map(needs_shaping, line)) else spacing


def line_width(line: str, font, spacing: float) -> float:
    """Advance width in px (kerned); letter spacing adds `spacing` between characters (`clusters`)."""
    spacing = tracking(line, spacing)
    return font.getlength(line) + (spacing * max(0, len(clusters(line)) - 1) if spacing else 0)


def breakable(a: str, b: str) -> bool:
    """Whether a line may break between the characters `a` and `b` with no space between them: next to a CJK
    character (ideographs, kana, hangul, wide punctuation: between 」 and 「), but not before closing punctuation
    or a mark, nor after opening punctuation (Unicode's line breaking, UAX #14, simplified)."""
    def cjk(ch):
        return unicodedata.east_asian_width(ch) in "WF" and unicodedata.category(ch)[0] in "LP"

    after, before = unicodedata.category(a), unicodedata.category(b)  # a space here is a no-break one
    return ((cjk(a) or cjk(b)) and after not in ("Ps", "Pi", "Zs")
            and before not in ("Pe", "Pf", "Po", "Cf", "Zs") and not before.startswith("M"))


def pieces(word: str) -> list[str]:
    """`word` cut where a line may break inside it (`breakable`): CJK text, which has no spaces."""
    cuts = [0] + [i for i in range(1, len(word)) if breakable(word[i - 1], word[i])] + [len(word)]
    return [word[a:b] for a, b in zip(cuts, cuts[1:])]


def wrap(text: str, font, width: float, spacing: float) -> list[str]:
    """Greedy line breaking of each line of `text` to `width` px, at spaces (not the no-break ones: U+00A0,
    U+2007, U+202F), at U+200B and between CJK characters; a word wider than the box keeps its own line. The
    spaces between words and before a line's first are kept as written; those at a break and at a line's end
    go. Tabs and spaces the font lacks become plain spaces (`plain_spaces`).

    A line breaks before the piece that makes it wider than `width` (`line_width`). That width is the line's
    so far plus what the piece (with the gap before it) adds to the line's last clusters, `CONTEXT` or more
    (as in `spaced_clusters`), not the whole line measured again (quadratic in its length); within `font.size`
    px of `width`, and in a line that `reorders`, it is measured whole, so lines break where they did when
    every candidate line was measured whole."""
    lines, spaces, cuts, joins = [], plain_spaces(text, font), {}, {}
    for paragraph in paragraphs(text):
        line, tail, tail_length, count, length, shaped, reordered = [], [], 0.0, 0, 0.0, False, False
        # line: its pieces; tail: its last clusters, tail_length their advance; count: its clusters; length: its
        # advance; shaped, reordered: whether any of its characters `needs_shaping`, `reorders`
        for gap, word in GAP_WORD.findall(paragraph):
            if (gap, word) not in cuts:  # (what each piece adds, the piece): the gap before the word, none inside
                first, *rest = pieces(word.translate(spaces))
                cuts[gap, word] = [(gap.translate(spaces) + first, first)] + [(piece, piece) for piece in rest]
            for added, piece in cuts[gap, word]:
                last = tail[-1] if tail else ""
                if (last, added) not in joins:  # the last cluster (maybe longer) and those added
                    grown = clusters(last + added)
                    joins[last, added] = (grown, len(grown) - bool(last), any(map(needs_shaping, added)),
                                          any(map(reorders, added)))
                grown, more, shaping, reordering = joins[last, added]
                tail_longer = font.getlength("".join(tail) + added)
                longer = length + tail_longer - tail_length  # the line's advance with `added`
                spaced = (0 if spacing and (shaped or shaping) else spacing) * max(0, count + more - 1)  # `tracking`
                if line and (reordered or reordering or longer + spaced >= width - font.size):
                    exact = line_width("".join(line) + added, font, spacing)
                    if exact > width:
                        lines.append("".join(line))
                        line, tail = [piece], clusters(piece)
                        tail_length = length = font.getlength(piece)
                        count, shaped, reordered = len(tail), any(map(needs_shaping, piece)), any(map(reorders, piece))
                        continue
                    longer = exact - spaced
                line.append(added)
                tail[-1:], tail_length, count, length = grown, tail_longer, count + more, longer
                shaped, reordered = shaped or shaping, reordered or reordering
                if len(tail) > 4 * CONTEXT:
                    tail = tail[-CONTEXT:]
                    tail_length = font.getlength("".join(tail))
        lines.append("".join(line))
    return lines


def text_lines(layer: TextLayer, font, box: Box) -> list[str]:
    """The lines of the layer's text (composed, NFC: 'e' + U+0301 is drawn as the font's 'é'), wrapped or not."""
    text = unicodedata.normalize("NFC", layer.text)
    if layer.wrap:
        return wrap(text, font, box.w - 2 * stroke_px(layer.stroke_width), layer.letter_spacing)
    spaces = plain_spaces(text, font)  # trailing spaces move no line
    return [line.translate(spaces).rstrip(BREAKING_SPACES) for line in paragraphs(text)]


def block_size(lines: list[str], font, size: float, layer: TextLayer) -> tuple[float, float]:
    """(width, height) px of the laid-out lines: widest advance; ascent + descent + (n-1) line pitches."""
    ascent, descent = font.getmetrics()
    width = max(line_width(line, font, layer.letter_spacing) for line in lines)
    height = ascent + descent + (len(lines) - 1) * size * layer.line_height
    stroke = stroke_px(layer.stroke_width)
    return width + 2 * stroke, height + 2 * stroke


def fits(layer: TextLayer, size: float, box: Box, base_dir) -> bool:
    """Whether the text laid out at `size` px fits inside `box`: its `extent`, glyphs reaching out of their lines'
    boxes (an italic's overhang) included."""
    font = fonts.load_font(layer.font, size, base_dir)
    lines = text_lines(layer, font, box)
    left, top, right, bottom = extent(layer, lines, font, positions(layer, lines, font, size, box))
    return right - left <= box.w and bottom - top <= box.h


def block_fits(layer: TextLayer, size: float, box: Box, base_dir) -> bool:
    """Whether the advance boxes of the text laid out at `size` px fit inside `box` (`block_size`): true wherever
    `fits` is and, unlike it, false at the sizes above one where it is false (wrapping measures advances too)."""
    font = fonts.load_font(layer.font, size, base_dir)
    width, height = block_size(text_lines(layer, font, box), font, size, layer)
    return width <= box.w and height <= box.h


def fitting_size(layer: TextLayer, box: Box, base_dir) -> float:
    """layer.size if the laid-out text fits `box`, else the largest integer px size below it that fits (1 if none
    fits): the largest whose advance boxes fit (`block_fits`, binary search), then down one px at a time until
    the ink fits too (`fits` is not monotonic: a line that wraps with 0.1 px to spare may have ink 1 px wider,
    while a size larger wraps elsewhere and fits)."""
    if fits(layer, layer.size, box, base_dir):
        return layer.size
    lo, hi = 1, max(1, math.ceil(layer.size) - 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if block_fits(layer, mid, box, base_dir):
            lo = mid
        else:
            hi = mid - 1
    while lo > 1 and not fits(layer, lo, box, base_dir):
        lo -= 1
    return lo


class LaidText(NamedTuple):
    """Text laid out in its box, on a tile `pad` px larger on every side (room for stroke, shadow and glyphs
    reaching out of their advance boxes; what reaches further is clipped). Only the tile's `window` is drawn:
    the part that the ink and its shadow can reach (`ink_window`), so a short line in a large region costs
    a small bitmap."""

    font: object  # the Pillow font at the size used (after shrink_to_fit)
    pad: int
    tile_size: tuple[int, int]
    placed: list[tuple[str, float, float]]  # (line, x, baseline) in tile px
    window: Box  # in tile px


def positions(layer: TextLayer, lines: list[str], font, size: float, box: Box) -> list[tuple[float, float]]:
    """(x, baseline) px of each line from the top-left of `box`: the lines' advance boxes aligned inside it, the
    stroke's width in from its edges."""
    _, block_h = block_size(lines, font, size, layer)
    stroke, (ascent, _) = stroke_px(layer.stroke_width), font.getmetrics()
    top = {"top": 0, "middle": (box.h - block_h) / 2, "bottom": box.h - block_h}[layer.valign]
    out = []
    for n, line in enumerate(lines):
        slack = box.w - 2 * stroke - line_width(line, font, layer.letter_spacing)
        out.append((stroke + {"left": 0, "center": slack / 2, "right": slack}[layer.align],
                    top + stroke + ascent + n * size * layer.line_height))
    return out


def text_layout(layer: TextLayer, box: Box, base_dir) -> LaidText:
    """The text of `layer` laid out in `box`: wrapped, sized, aligned."""
    size = fitting_size(layer, box, base_dir) if layer.shrink_to_fit else layer.size
    font = fonts.load_font(layer.font, size, base_dir)
    lines = text_lines(layer, font, box)
    shadow, stroke = layer.shadow, stroke_px(layer.stroke_width)
    pad = stroke + INK_MARGIN + overhang(lines, font)
    if shadow:
        pad += math.ceil(max(abs(shadow.dx), abs(shadow.dy)) + 3 * shadow.blur)
    at = positions(layer, lines, font, size, box)
    if layer.shrink_to_fit:  # moved so that glyphs reaching out of their lines' boxes stay inside it too
        left, top, right, bottom = extent(layer, lines, font, at)
        dx, dy = inward(left, right, box.w), inward(top, bottom, box.h)
        at = [(x + dx, baseline + dy) for x, baseline in at]
    placed = [(line, pad + x, pad + baseline) for line, (x, baseline) in zip(lines, at)]
    tile_size = (box.w + 2 * pad, box.h + 2 * pad)
    return LaidText(font, pad, tile_size, placed, ink_window(layer, font, placed, tile_size))


def inward(start: float, end: float, size: int) -> float:
    """The shortest move bringing start..end inside 0..size; none if it is longer than size."""
    return max(-start, min(0, size - end)) if end - start <= size else 0


def extent(layer: TextLayer, lines: list[str], font, at: list[tuple[float, float]]) -> tuple[float, ...]:
    """(left, top, right, bottom) px of `lines` drawn at `at` [(x, baseline)]: their advance boxes (ascent to
    descent) and their glyphs' (`line_box`), all with the stroke."""
    stroke, (ascent, descent) = stroke_px(layer.stroke_width), font.getmetrics()
    boxes = []
    for line, (x, baseline) in zip(lines, at):
        left, top, right, bottom = line_box(line, font, layer.letter_spacing, stroke)
        boxes += [(x - stroke, baseline - ascent - stroke, x + line_width(line, font, layer.letter_spacing) + stroke,
                   baseline + descent + stroke), (x + left, baseline + top, x + right, baseline + bottom)]
    return united(boxes)


def ink_window(layer: TextLayer, font, placed: list[tuple[str, float, float]], tile_size: tuple[int, int]) -> Box:
    """(x, y, w, h) px of the part of a tile that the text drawn at `placed` [(line, x, baseline), tile px] and
    its shadow can reach, within the tile: the lines' `extent`, and the same moved by the shadow's offset and
    grown by its blur (Pillow's Gaussian blur is three box blurs, each reaching at most floor(blur) + 1 px),
    INK_MARGIN px wider on every side.

    The window holds exactly the tile's pixels there (the rest of the tile is transparent): the text on it
    moves by whole px, and no pen position moves past the window's left or top edge, so Pillow, which draws
    a glyph at int(x) rendered at the fraction of x, draws the same glyphs; the shadow's mask is 0 on the
    window's edges after each box blur, as on the tile's, so the box blur's extending of the edges outwards
    changes nothing."""
    lines, at = [line for line, _, _ in placed], [(x, baseline) for _, x, baseline in placed]
    reach = [extent(layer, lines, font, at)]
    if shadow := layer.shadow:
        spread = 3 * (math.floor(shadow.blur) + 1) if shadow.blur > 0 else 0
        dx, dy = round(shadow.dx), round(shadow.dy)
        left, top, right, bottom = reach[0]
        reach.append((left + dx - spread, top + dy - spread, right + dx + spread, bottom + dy + spread))
    left, top, right, bottom = united(reach)
    pens = [x + start for line, x, _ in placed for start, _ in runs(line, font, layer.letter_spacing)]
    x = max(0, min([math.floor(left) - INK_MARGIN] + [math.floor(p) for p in pens if p >= 0]))
    y = max(0, min([math.floor(top) - INK_MARGIN] + [math.floor(b) for _, b in at if b >= 0]))
    right, bottom = min(tile_size[0], math.ceil(right) + INK_MARGIN), min(tile_size[1], math.ceil(bottom) + INK_MARGIN)
    return Box(x, y, max(0, right - x), max(0, bottom - y))


def overhang(lines: list[str], font) -> int:
    """How far (px, rounded up) the glyphs of `lines` reach out of their lines' advance boxes (from the
    line's start to its advance, ascent to descent): a j's or an italic's side bearing, accents above the
    ascent. The tile leaves that much room, so text that fits its box is never cut."""
    ascent, descent = font.getmetrics()
    reach = 0
    for line in lines:
        if line.strip():
            left, top, right, bottom = font.getbbox(line, anchor="ls")
            reach = max(reach, -left, right - font.getlength(line), -top - ascent, bottom - descent)
    return math.ceil(reach)


def text_masks(layer: TextLayer, laid: LaidText) -> tuple[Image.Image, Image.Image]:
    """(fill, ink) L masks of the laid-out text (ink = fill + stroke) on its tile's window; text overflowing its
    box further than the tile's pad (no shrink_to_fit) is clipped."""
    window = laid.window
    fill_mask, ink_mask = Image.new("L", (window.w, window.h)), Image.new("L", (window.w, window.h))
    fill_draw, ink_draw = ImageDraw.Draw(fill_mask), ImageDraw.Draw(ink_mask)
    for line, x, baseline in laid.placed:
        at = (x - window.x, baseline - window.y)
        draw_line(fill_draw, at, line, laid.font, layer.letter_spacing, 0)
        draw_line(ink_draw, at, line, laid.font, layer.letter_spacing, stroke_px(layer.stroke_width))
    return fill_mask, ink_mask


def cut_sides(layer: TextLayer, font, placed: list[tuple[str, float, float]], size: tuple[int, int]) -> set[str]:
    """The sides of a w x h px area (a tile, a box) where the glyphs of the (line, x, baseline) in `placed` are
    cut: those a glyph on the area reaches past, and those a glyph off it lies beyond. A cut may fall in a gap
    between glyphs, leaving no ink at the edge. A line is looked at whole (`line_box`), or glyph by glyph
    (`glyph_boxes`) when it reaches past a corner (a descender beyond the right edge is not cut at the bottom)
    or starts with spaces (which have no ink)."""
    w, h = size
    stroke, sides = stroke_px(layer.stroke_width), set()
    for line, x, baseline in placed:
        boxes = [line_box(line, font, layer.letter_spacing, stroke)]
        left, top, right, bottom = boxes[0]
        # glyph by glyph past a corner, or after leading spaces (Pillow's box of a line starts at its origin)
        if line[:1].isspace() or (x + left < 0 or x + right > w) and (baseline + top < 0 or baseline + bottom > h):
            boxes = glyph_boxes(line, font, layer.letter_spacing, stroke)
        for left, top, right, bottom in boxes:
            left, top, right, bottom = x + left, baseline + top, x + right, baseline + bottom
            if right <= left or bottom <= top:
                continue  # no ink: a space
            if left < w and top < h and right > 0 and bottom > 0:
                cut = (left < 0, top < 0, right > w, bottom > h)
            else:
                cut = (right <= 0, bottom <= 0, left >= w, top >= h)
            sides.update(side for side, beyond in zip(SIDES, cut) if beyond)
    return sides


def text_tile(layer: TextLayer, box: Box, base_dir) -> tuple[Image.Image, tuple[int, int]]:
    """Shadow, stroke and fill of the laid-out text on its tile's window. Returns it and its top-left.

    Stroke and fill lie side by side: a pixel holds `fill` coverage of the fill colour and the rest of its
    ink coverage (ink - fill) of the stroke colour, summed premultiplied, so that a transparent fill leaves
    outline lettering and a translucent one shows what lies below it (not the stroke). The letters are
    composited over the shadow in the tile, at 8 bits: ±1 level where both are translucent."""
    laid = text_layout(layer, box, base_dir)
    fill_mask, ink_mask = text_masks(layer, laid)
    tile_size, shadow = fill_mask.size, layer.shadow
    tile = Image.new("RGBA", tile_size, (0, 0, 0, 0))
    if shadow:
        shifted = Image.new("L", tile_size)
        shifted.paste(ink_mask, (round(shadow.dx), round(shadow.dy)))
        if shadow.blur > 0:
            # float(): Pillow takes a numpy number for a list of radii
            shifted = shifted.filter(ImageFilter.GaussianBlur(float(shadow.blur)))
        tile.alpha_composite(coloured(shifted, shadow.color))
    letters = coloured(fill_mask, layer.color)
    if stroke_px(layer.stroke_width):
        ring = coloured(ImageChops.subtract(ink_mask, fill_mask), layer.stroke_color)
        letters = ImageChops.add(ring.convert("RGBa"), letters.convert("RGBa")).convert("RGBA")
    tile.alpha_composite(letters)
    return tile, (box.x - laid.pad + laid.window.x, box.y - laid.pad + laid.window.y)


class TextProblem(str):
    """A line of `text_problems` ('layers[2] (caption): text ...') that knows its layer's key path, `path`
    ('layers[2]'), for saying where the layer is written."""

    path: str

    def __new__(cls, path: str, line: str):
        problem = super().__new__(cls, line)
        problem.path = path
        return problem


def text_problems(layout: Layout) -> list[TextProblem]:
    """One line per text layer whose ink (fill and stroke, not shadow) leaves its region (clipped where it
    reaches past the edge of its tile) or enters the safe margin (without one, crosses the trim into the
    bleed), which shrink_to_fit fits at no size (`shrink_problem`), which a span's monitors show none or only part
    of (`off_monitor_problem`), whose font lacks some of its characters, or which needs raqm that Pillow lacks, e.g.
    'layers[2] (caption): text overflows its region (right clipped, bottom 3 px)'."""
    canvas, base_dir = layout.canvas, layout_dir(layout)
    safe = resolve(Region("safe"), canvas, layout.grids) if canvas.safe_margin > 0 else None
    trim = trim_box(canvas) if canvas.bleed > 0 else None
    span = span_canvas(layout.span) if layout.span else None  # (width, height, monitor boxes)
    problems = []
    for i, layer in enumerate(layout.layers):
        box = resolve(layer.region, canvas, layout.grids)
        if not isinstance(layer, TextLayer) or box.w <= 0 or box.h <= 0:
            continue
        laid = text_layout(layer, box, base_dir)  # once: shrink_to_fit searches sizes
        with glyph_bitmaps(i):
            _, ink_mask = text_masks(layer, laid)
        clipped, pad, window = cut_sides(layer, laid.font, laid.placed, laid.tile_size), laid.pad, laid.window
        bbox = ink_mask.getbbox()
        tile_origin = (box.x - pad + window.x, box.y - pad + window.y)  # the ink mask's top-left in canvas px
        found = []
        if bbox is None:
            if clipped:
                found.append(f"overflows its region ({', '.join(f'{s} clipped' for s in SIDES if s in clipped)})")
        else:
            left, top, right, bottom = (v + o for v, o in zip(bbox, (window.x, window.y) * 2))  # in tile px
            ink = Box(box.x - pad + left, box.y - pad + top, right - left, bottom - top)
            w, h = laid.tile_size
            margins = (left, top, w - right, h - bottom)  # ink to the tile's edges (not the window's)
            clipped |= {side for side, m in zip(SIDES, margins) if m == 0}
            if overflow := outside(ink, box, clipped):
                found.append(f"overflows its region ({overflow})")
            if safe and (overflow := outside(ink, safe)):
                found.append(f"reaches into the safe margin ({overflow})")
            elif trim and (overflow := outside(ink, trim)):
                found.append(f"crosses the trim into the bleed ({overflow})")
        if layer.shrink_to_fit and (shrink := shrink_problem(layer, laid, box, base_dir)):
            found.insert(0, shrink)
        if span and bbox is not None and (hidden := off_monitor_problem(ink_mask, tile_origin, *span)):
            found.append(hidden)
        if glyphs := glyph_problem(layer, base_dir):
            found.append(glyphs)
        if shaping := shaping_problem(layer.text):
            found.append(shaping)
        if found:
            problems.append(TextProblem(f"layers[{i}]", f"{layer_label(i, layer)}: text {' and '.join(found)}"))
    return problems


def hidden_problems(layout: Layout) -> list[TextProblem]:
    """One line per text or image layer that a single later layer hides whole: all it draws on the canvas (an
    image's box, text's ink and shadow) lies in the box of a later layer that paints its box opaque
    (`paints_box_opaque`), e.g. 'layers[0] (title): text is hidden under the generate layer layers[2], drawn
    after it: layers are listed bottom first' (a layout listed top layer first, as Photoshop lists them). Only
    what is certain: a layer hidden by several together, or by a shape other than a square rectangle, is not
    said."""
    canvas, base_dir, layers = layout.canvas, layout_dir(layout), layout.layers
    whole = Box(0, 0, canvas.full_width, canvas.full_height)
    boxes = [resolve(layer.region, canvas, layout.grids) for layer in layers]
    opaque = {}  # layer index -> paints_box_opaque, asked when first needed (an image is decoded)
    problems = []
    covering = [j for j, layer in enumerate(layers) if paints_box_opaque(layer, j, base_dir, look=False)]
    for i, layer in enumerate(layers):
        if not isinstance(layer, (TextLayer, ImageLayer)) or boxes[i].w <= 0 or boxes[i].h <= 0:
            continue
        later = [j for j in covering if j > i]
        if not later:
            continue
        if isinstance(layer, ImageLayer):
            drawn = clipped_box(boxes[i], whole)
        else:
            with glyph_bitmaps(i):
                tile, (x, y) = text_tile(layer, boxes[i], base_dir)
            ink = tile.getchannel("A").getbbox()
            drawn = ink and clipped_box(Box(x + ink[0], y + ink[1], ink[2] - ink[0], ink[3] - ink[1]), whole)
        if not drawn:  # nothing on the canvas: text_problems says where text went
            continue
        for j in later:
            cover = clipped_box(boxes[j], whole)
            if not cover or outside(drawn, cover):
                continue
            if j not in opaque:
                opaque[j] = paints_box_opaque(layers[j], j, base_dir)
            if opaque[j]:
                problems.append(TextProblem(f"layers[{i}]", f"{layer_label(i, layer)}: {layer_kind(layer)} is hidden "
                                            f"under the {layer_kind(layers[j])} layer {layer_label(j, layers[j])}, "
                                            f"drawn after it: layers are listed bottom first"))
                break
    return problems


def clipped_box(box: Box, outer: Box) -> Box | None:
    """The part of `box` inside `outer`; None when they do not overlap."""
    x, y = max(box.x, outer.x), max(box.y, outer.y)
    right, bottom = min(box.right, outer.right), min(box.bottom, outer.bottom)
    return Box(x, y, right - x, bottom - y) if right > x and bottom > y else None


def paints_box_opaque(layer, index: int, base_dir, look: bool = True) -> bool:
    """Whether `layer` (layers[index]) paints every pixel of its box opaque, at opacity 1: a generate layer fitted
    to cover (its art, and a proof's placeholder, have no transparency), an image fitted to cover whose picture has
    no transparent pixel (look=False: taken as having none, not decoded), a fill of an opaque colour, a rectangle
    with square corners and an opaque fill, a gradient whose stops are all opaque."""
    if layer.opacity < 1:
        return False
    if isinstance(layer, GenerateLayer):
        return layer.fit == "cover"
    if isinstance(layer, ImageLayer):
        return layer.fit == "cover" and (not look or
                                         open_image(layer, index, base_dir).getchannel("A").getextrema() == (255, 255))
    if isinstance(layer, FillLayer):
        return layer.color[3] == 255
    if isinstance(layer, ShapeLayer):
        return layer.shape == "rect" and layer.radius == 0 and layer.fill is not None and layer.fill[3] == 255
    if isinstance(layer, GradientLayer):
        return all(colour[3] == 255 for _, colour in layer.stops)
    return False


def shrink_problem(layer: TextLayer, laid: LaidText, box: Box, base_dir) -> str | None:
    """'fits at no size with shrink_to_fit (letter_spacing alone takes 1654 px of the region's 1404 px width)' when
    shrink_to_fit found no size that fits `box` (`fitting_size` drew it at 1 px): what takes the room (letter
    spacing and stroke are lengths that do not shrink with the text), else that the region is too small even at
    1 px; None when the text fits."""
    if laid.font.size > 1 or fits(layer, laid.font.size, box, base_dir):
        return None
    stroke = 2 * stroke_px(layer.stroke_width)
    spacing = max(tracking(line, layer.letter_spacing) * max(0, len(clusters(line)) - 1) for line, _, _ in laid.placed)
    if spacing > 0 and spacing + stroke >= box.w:
        what = "letter_spacing and the stroke take" if stroke else "letter_spacing alone takes"
        reason = f"{what} {spacing + stroke:.0f} px of the region's {box.w} px width"
    elif stroke >= min(box.w, box.h):
        side, room = ("width", box.w) if box.w <= box.h else ("height", box.h)
        reason = f"the stroke alone takes {stroke} px of the region's {room} px {side}"
    else:
        reason = "the region is too small for it even at 1 px"
    return f"fits at no size with shrink_to_fit ({reason})"


def off_monitor_problem(ink_mask: Image.Image, origin: tuple[int, int], width: int, height: int,
                   monitors: list[Box]) -> str | None:
    """'shows on no monitor (...)' when none of a span's text layer's ink (`ink_mask`, its top-left at `origin`
    px on the `width` x `height` span canvas) lies in a monitor's box (`geometry.span_canvas`): it is in the bezel
    gaps, or outside the monitors (above or below a shorter one); 'partly shows on no monitor (...)' when some of
    it on the canvas and outside the gaps does; else None. Ink in a gap beside ink on a monitor is not reported:
    a line crossing the gap hides behind the bezels."""
    left, top = max(0, origin[0]), max(0, origin[1])  # the part of the mask on the canvas, in canvas px
    right, bottom = min(width, origin[0] + ink_mask.width), min(height, origin[1] + ink_mask.height)
    if right <= left or bottom <= top:
        return None  # off the canvas: `outside` reports it
    on_canvas = ink_mask.crop((left - origin[0], top - origin[1], right - origin[0], bottom - origin[1]))
    if on_canvas.getbbox() is None:
        return None
    hidden = on_canvas.copy()  # then the ink outside the monitors and the gaps between them
    for b in monitors:
        hidden.paste(0, (b.x - left, b.y - top, b.right - left, b.bottom - top))
    for a, b in zip(monitors, monitors[1:]):
        hidden.paste(0, (a.right - left, 0, b.x - left, hidden.height))
    if not any(on_canvas.crop((b.x - left, b.y - top, b.right - left, b.bottom - top)).getbbox() for b in monitors):
        return f"shows on no monitor ({'it is outside the monitors' if hidden.getbbox() else 'it is in the bezel gap'})"
    return "partly shows on no monitor (above or below a shorter one)" if hidden.getbbox() else None


def missing_glyphs(text: str, font) -> list[str]:
    """The characters of `text` (in order, once each) that `font` has no glyph for (`drawn_as_boxes`). Spaces,
    controls and marks are not checked; format characters (U+200B, U+00AD, ...) are: raqm draws them as
    nothing, the basic layout engine as boxes."""
    return drawn_as_boxes([ch for ch in dict.fromkeys(text)
                           if unicodedata.category(ch) == "Cf" or unicodedata.category(ch)[0] not in "ZCM"], font)


def drawn_as_boxes(chars: list[str], font) -> list[str]:
    """Those of `chars` that `font` has no glyph for: drawn as its missing-glyph box, the same bitmap as
    U+10FFFD (private use, in no font)."""
    def bitmap(ch: str) -> bytes:
        tile = Image.new("L", (64, 64))
        ImageDraw.Draw(tile).text((16, 16), ch, font=font, fill=255)
        return tile.tobytes()

    if not chars:
        return []
    missing = bitmap(MISSING_PROBE)
    return [ch for ch in chars if bitmap(ch) == missing]


def plain_spaces(text: str, font) -> dict[int, str]:
    """A `str.translate` table drawing the tabs of `text` and the spaces that `font` lacks (Pillow's bundled
    font has no U+00A0) as plain spaces, not as missing-glyph boxes."""
    spaces = [ch for ch in dict.fromkeys(text) if ch != " " and unicodedata.category(ch) == "Zs"]
    return {ord("\t"): " "} | {ord(ch): " " for ch in drawn_as_boxes(spaces, font)}


def glyph_problem(layer: TextLayer, base_dir) -> str | None:
    """'has no glyph for 'é' '✨' in its font (drawn as boxes)', or None; with a hint to use DejaVu Sans for the
    default font when DejaVu Sans has them all."""
    font = fonts.load_font(layer.font, 24, base_dir)
    missing = missing_glyphs(unicodedata.normalize("NFC", layer.text), font)  # as `text_lines` draws it
    if not missing:
        return None
    shown = " ".join(repr(ch) for ch in missing[:8]) + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
    hint, dejavu = "", fonts.find_font("DejaVu Sans")
    if (fonts.find_font(layer.font, base_dir) == fonts.DEFAULT and dejavu
            and not missing_glyphs("".join(missing), fonts.load_font(dejavu, 24))):
        hint = "; the default font has basic Latin only: try font: DejaVu Sans"
    return f"has no glyph for {shown} in its font (drawn as boxes{hint})"


def shaping_problem(text: str) -> str | None:
    """'needs complex text layout (libraqm with libfribidi), which this Pillow lacks: Hebrew, Devanagari' for text
    with right-to-left letters or a virama (`needs_shaping`) when Pillow has no raqm; else None."""
    from PIL import features

    scripts = dict.fromkeys(unicodedata.name(ch, "").split(" ")[0].title() for ch in text if needs_shaping(ch))
    if not scripts or features.check("raqm"):
        return None
    return f"needs complex text layout (libraqm with libfribidi), which this Pillow lacks: {', '.join(scripts)}"


def outside(inner: Box, outer: Box, clipped: set[str] = frozenset()) -> str:
    """How far `inner` reaches out of `outer`, e.g. 'right 3 px, bottom clipped' (the `clipped` sides, whether
    or not `inner` reaches out there); '' if it is inside and nothing is clipped."""
    beyond = (outer.x - inner.x, outer.y - inner.y, inner.right - outer.right, inner.bottom - outer.bottom)
    return ", ".join(f"{side} clipped" if side in clipped else f"{side} {px} px"
                     for side, px in zip(SIDES, beyond) if px > 0 or side in clipped)


def spaced_clusters(line: str, font, spacing: float) -> list[tuple[float, str]]:
    """The clusters of a letter-spaced line, each with its x px from the line's start: where the kerned line puts
    it plus `spacing` px per cluster before it (see `line_width`). The kerned line's advance up to each cluster
    is summed from the growth of a stretch of the line `CONTEXT` clusters long, not measured whole each time
    (quadratic in the line's length): the same where kerning and ligatures reach back no further."""
    parts = clusters(line)
    starts = list(itertools.accumulate(map(len, parts), initial=0))
    out, end = [], 0.0  # end: the advance of the line up to the end of the cluster
    for n, cluster in enumerate(parts):
        back = starts[max(0, n - CONTEXT)]
        end += font.getlength(line[back:starts[n + 1]]) - font.getlength(line[back:starts[n]])
        out.append((end - font.getlength(cluster) + n * spacing, cluster))
    return out


def glyph_boxes(line: str, font, spacing: float, stroke: int) -> list[tuple[float, float, float, float]]:
    """(left, top, right, bottom) px of the glyphs of `line` as `draw_line` draws it at (0, baseline 0), with the
    stroke: one box per cluster (`spaced_clusters`), or one for a line laid out as a whole (`needs_shaping`). A
    box spans at least its advance (Pillow's getbbox)."""
    if any(map(needs_shaping, line)):
        return [font.getbbox(line, anchor="ls", stroke_width=stroke)]
    return [(x + left, top, x + right, bottom) for x, cluster in spaced_clusters(line, font, tracking(line, spacing))
            for left, top, right, bottom in [font.getbbox(cluster, anchor="ls", stroke_width=stroke)]]


def line_box(line: str, font, spacing: float, stroke: int) -> tuple[float, float, float, float]:
    """The box holding `glyph_boxes`: Pillow's getbbox of the whole line when it is not letter-spaced or is
    empty (a blank line has no glyphs)."""
    if not tracking(line, spacing) or not line:
        return font.getbbox(line, anchor="ls", stroke_width=stroke)
    return united(glyph_boxes(line, font, spacing, stroke))


def united(boxes: list[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    """The smallest (left, top, right, bottom) holding all of `boxes`."""
    lefts, tops, rights, bottoms = zip(*boxes)
    return min(lefts), min(tops), max(rights), max(bottoms)


def runs(line: str, font, spacing: float) -> list[tuple[float, str]]:
    """The pieces `draw_line` draws `line` in, each with its x px from the line's start: the line whole, or
    cluster by cluster when letter-spaced (`spaced_clusters`)."""
    spacing = tracking(line, spacing)
    return spaced_clusters(line, font, spacing) if spacing else [(0, line)]


def draw_line(draw: ImageDraw.ImageDraw, at: tuple[float, float], line: str, font, spacing: float,
              stroke: int) -> None:
    """One line of text at (x, baseline) into an L mask, piece by piece (`runs`)."""
    x, baseline = at
    for dx, run in runs(line, font, spacing):
        draw.text((x + dx, baseline), run, fill=255, font=font, anchor="ls", stroke_width=stroke)


@contextlib.contextmanager
def glyph_bitmaps(index: int):
    """Pillow's decompression-bomb check on the bitmaps of our own glyphs (a line at poster sizes): its warning
    silenced, its error an InputError naming layers[index]."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            yield
        except Image.DecompressionBombError:
            raise InputError(f"layers[{index}]: text too large to draw: a line's glyphs need a bitmap of more than "
                             f"{2 * Image.MAX_IMAGE_PIXELS} px (use a smaller size or shorter lines)") from None


def stroke_px(width: float) -> int:
    """A stroke width in whole px, halves up, at least 1 when set: 0.4 px is 1, 2.5 px is 3. (Pillow draws a
    text stroke of a fractional width up to a pixel off its fill.)"""
    return max(1, math.floor(width + 0.5)) if width > 0 else 0


def coloured(mask: Image.Image, color: RGBA) -> Image.Image:
    """An RGBA image of `color` whose alpha is mask * color alpha / 255."""
    tile = Image.new("RGBA", mask.size, color[:3] + (0,))
    alpha = mask if color[3] == 255 else mask.point(lambda m: math.floor(m * color[3] / 255 + 0.5))
    tile.putalpha(alpha)
    return tile


# -- shapes and gradients -----------------------------------------------------------------------------------

def shape_tiles(layer: ShapeLayer, box: Box) -> list[tuple[Image.Image, tuple[int, int]]]:
    """The (tile, top-left) of a shape, composited in order: rect / ellipse inside `box` (the stroke grows
    inwards, composited over the fill: a translucent stroke shows the fill below it); line from the box's
    top-left pixel to its bottom-right pixel, `stroke` colour (else `fill`). Strokes are whole pixels, at least 1
    (halves round up: 0.4 px is 1, 2.5 px is 3). A line's box may have no width or height: a zero-width box at x
    draws the vertical line through pixel column x, as a 1 px wide box would (Pillow widens it to the right for
    even widths: columns x .. x + 1 for 2 px).

    A fill with a translucent stroke is two tiles, the fill's and the stroke's, each composited as a layer of its
    own would be (a stroke pixel is exactly the stroke over the fill over the canvas); with an opacity below 1
    they fade together, as one tile in which the stroke is composited over the fill at 8 bits (±1 level there)."""
    width = stroke_px(layer.stroke_width)
    if layer.shape == "line":
        w, h = max(1, box.w), max(1, box.h)
        pad = width // 2 + 1
        tile = Image.new("RGBA", (w + 2 * pad, h + 2 * pad), (0, 0, 0, 0))
        color = layer.stroke or layer.fill
        if color:
            ImageDraw.Draw(tile).line((pad, pad, pad + w - 1, pad + h - 1), fill=color, width=max(1, width))
        return [(tile, (box.x - pad, box.y - pad))]
    if layer.shape not in ("rect", "ellipse"):
        raise InputError(f"shape '{layer.shape}' (allowed: rect, ellipse, line)")
    outline, at = layer.stroke if width > 0 else None, (box.x, box.y)
    if not (layer.fill and outline and outline[3] < 255):
        return [(shape_pixels(layer, box, layer.fill, outline, width), at)]
    # Pillow's outline replaces the fill's pixels: a translucent one is drawn apart
    fill, stroke = shape_pixels(layer, box, layer.fill, None, 0), shape_pixels(layer, box, None, outline, width)
    if layer.opacity >= 1:
        return [(fill, at), (stroke, at)]
    fill.alpha_composite(stroke)
    return [(fill, at)]


def shape_pixels(layer: ShapeLayer, box: Box, fill: RGBA | None, outline: RGBA | None, width: int) -> Image.Image:
    """A rect or ellipse filling a tile of the box's size, with `fill` and an `outline` `width` px wide inside
    its edge (written over the fill's pixels, not composited)."""
    tile = Image.new("RGBA", (box.w, box.h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(tile)
    corners = (0, 0, box.w - 1, box.h - 1)
    if (box.w, box.h) == (1, 1):  # the pixel: Pillow fills no 1 px ellipse or rounded rectangle
        draw.rectangle(corners, fill=outline or fill)
    elif layer.shape == "rect" and layer.radius > 0:
        draw.rounded_rectangle(corners, radius=round(layer.radius), fill=fill, outline=outline, width=width)
    elif layer.shape == "rect":
        draw.rectangle(corners, fill=fill, outline=outline, width=width)
    else:
        draw.ellipse(corners, fill=fill, outline=outline, width=width)
    return tile


def gradient_direction(angle: float) -> tuple[float, float]:
    """(cos a, sin a) of a linear gradient's angle, y down, rounded to 12 places: exactly 0 along the axes."""
    a = math.radians(angle)
    return round(math.cos(a), 12), round(math.sin(a), 12)  # cos(90 deg) is exactly 0


def gradient_position(kind: str, angle: float, w: int, h: int, rows: slice, columns: slice | None = None) -> np.ndarray:
    """Gradient parameter t (float64, rows x columns, all w columns by default) at pixel centres of a w x h box.

    linear: projection on the direction (cos a, sin a) (y down), 0 and 1 where the lines through the box's
    extreme corners cross it (CSS semantics). radial: distance from the box centre / distance to a corner.
    """
    y, x = np.mgrid[rows, columns or slice(0, w)]
    px, py = x + 0.5 - w / 2, y + 0.5 - h / 2
    if kind == "radial":
        return np.hypot(px, py) / math.hypot(w / 2, h / 2)
    dx, dy = gradient_direction(angle)
    half = (abs(dx) * w + abs(dy) * h) / 2
    return 0.5 + (px * dx + py * dy) / (2 * half)


def gradient_colours(layer: GradientLayer, t: np.ndarray) -> np.ndarray:
    """The layer's colours at gradient parameters `t` (uint8, t's shape x RGBA): interpolated between stops in
    premultiplied RGBA (a fade to transparent keeps its hue), clamped beyond the first and last stop, rounded
    half up."""
    positions = np.array([p for p, _ in layer.stops], dtype=np.float64)
    colours = np.array([c for _, c in layer.stops], dtype=np.float64)
    premul = np.concatenate([colours[:, :3] * (colours[:, 3:] / 255), colours[:, 3:]], axis=1)
    out = np.empty(t.shape + (4,), dtype=np.uint8)
    alpha = np.interp(t, positions, premul[:, 3])
    scale = np.where(alpha > 0, alpha / 255, 1)
    out[..., 3] = np.floor(alpha + 0.5)
    for c in range(3):
        out[..., c] = np.floor(np.interp(t, positions, premul[:, c]) / scale + 0.5).clip(0, 255)
    return out


def gradient_tile(layer: GradientLayer, box: Box) -> Image.Image:
    """The layer's gradient over `box`: `gradient_every_pixel`'s pixels, computed for fewer of them where that
    is exact. A linear gradient along an axis (t depends on x or y alone) is one row or column repeated; a radial
    one is one quarter mirrored (pixel centres x + 0.5 - w / 2 are exact in float64, so mirrored pixels are the
    same distance from the centre, for odd and even sizes)."""
    w, h = box.w, box.h
    dx, dy = gradient_direction(layer.angle)
    out = np.empty((h, w, 4), dtype=np.uint8)
    pixels = out.view(np.uint32)  # (h, w, 1): a pixel as one 4-byte number, copied whole
    if layer.kind == "radial":
        qw, qh = (w + 1) // 2, (h + 1) // 2  # the top-left quarter, with the middle column and row of odd sizes
        for r0 in range(0, qh, GRADIENT_ROWS):
            rows = slice(r0, min(qh, r0 + GRADIENT_ROWS))
            out[rows, :qw] = gradient_colours(layer, gradient_position("radial", 0, w, h, rows, slice(0, qw)))
        pixels[:qh, qw:] = pixels[:qh, :w - qw][:, ::-1]
        pixels[qh:] = pixels[:h - qh][::-1]
    elif dx == 0 or dy == 0:  # one row (0 or 180 degrees) or one column (90 or 270 degrees), repeated
        rows, columns = (slice(0, 1), slice(0, w)) if dy == 0 else (slice(0, h), slice(0, 1))
        line = gradient_colours(layer, gradient_position("linear", layer.angle, w, h, rows, columns))
        pixels[:] = line.view(np.uint32)
    else:
        return gradient_every_pixel(layer, box)
    return Image.fromarray(out, "RGBA")


def gradient_every_pixel(layer: GradientLayer, box: Box) -> Image.Image:
    """The layer's gradient over `box`, `gradient_colours` at every pixel's `gradient_position`, a band of
    `GRADIENT_ROWS` rows at a time: `gradient_tile` at other angles, and the reference its shortcuts are tested
    against."""
    out = np.empty((box.h, box.w, 4), dtype=np.uint8)
    for r0 in range(0, box.h, GRADIENT_ROWS):
        rows = slice(r0, min(box.h, r0 + GRADIENT_ROWS))
        out[rows] = gradient_colours(layer, gradient_position(layer.kind, layer.angle, box.w, box.h, rows))
    return Image.fromarray(out, "RGBA")


# -- spans ------------------------------------------------------------------------------------------------------

GUIDE_BLEED = (255, 0, 0, 56)  # tint over the bleed: cut off when trimmed
GUIDE_HIDDEN = (0, 0, 0, 96)  # tint over a span's bezel gaps: behind the bezels, never seen
GUIDE_TRIM = (255, 0, 255, 255)
GUIDE_SAFE = (0, 150, 255, 255)


def draw_guides(image: Image.Image, layout: Layout) -> Image.Image:
    """A proof's guides over the composed raster: the bleed tinted red with a magenta line at the trim, the
    safe area's edge dashed in blue, and a span's bezel gaps (behind the bezels) darkened. Lines are about a
    thousandth of the canvas wide (at least 1 px). `image` is taken as RGB (any alpha dropped); returns a new
    RGB image."""
    out = image.convert("RGB")
    if layout.span:  # the bezel gaps' tint covers any bleed's
        tint_outside(out, span_canvas(layout.span)[2], GUIDE_HIDDEN)
    elif layout.canvas.bleed:
        tint_outside(out, [trim_box(layout.canvas)], GUIDE_BLEED)
    draw_guide_lines(out, layout)
    return out


def draw_guide_lines(image: Image.Image, layout: Layout) -> None:
    """`draw_guides`' lines, on `image` in place: the trim's edge and the safe area's, dashed."""
    canvas = layout.canvas
    width = max(1, round(min(image.size) / 1000))
    trim = trim_box(canvas)
    draw = ImageDraw.Draw(image)
    if canvas.bleed:
        draw.rectangle((trim.x, trim.y, trim.right - 1, trim.bottom - 1), outline=GUIDE_TRIM, width=width)
    if canvas.safe_margin:
        safe = resolve(Region("safe"), canvas, layout.grids)
        dash = 8 * width
        corners = [(safe.x, safe.y), (safe.right - 1, safe.y), (safe.right - 1, safe.bottom - 1),
                   (safe.x, safe.bottom - 1), (safe.x, safe.y)]
        for (x0, y0), (x1, y1) in zip(corners, corners[1:]):
            length = max(abs(x1 - x0), abs(y1 - y0))
            for start in range(0, length, 2 * dash):
                a, b = start / length, min(start + dash, length) / length
                draw.line((x0 + (x1 - x0) * a, y0 + (y1 - y0) * a, x0 + (x1 - x0) * b, y0 + (y1 - y0) * b),
                          fill=GUIDE_SAFE, width=width)


def tint_outside(image: Image.Image, holes: list[Box], colour: RGBA) -> None:
    """Alpha-composite `colour` over the RGB `image` outside the `holes`, rectangle by rectangle (`uncovered`):
    the pixels of compositing a canvas-sized tint, the holes transparent, over all of it as RGBA, at the cost of
    the tinted area."""
    for part in uncovered(image.width, image.height, holes):
        corners = (part.x, part.y, part.right, part.bottom)
        tinted = image.crop(corners).convert("RGBA")
        tinted.alpha_composite(Image.new("RGBA", tinted.size, colour))
        image.paste(tinted.convert("RGB"), corners)


def uncovered(width: int, height: int, holes: list[Box]) -> list[Box]:
    """The parts of a width x height px canvas outside all `holes`, as boxes: in each band between the holes'
    top and bottom edges, the runs between the holes crossing that band."""
    edges = sorted({0, height} | {min(max(y, 0), height) for hole in holes for y in (hole.y, hole.bottom)})
    parts = []
    for top, bottom in zip(edges, edges[1:]):
        x = 0  # where the run not yet covered starts
        for hole in sorted((hole for hole in holes if hole.y <= top and hole.bottom >= bottom), key=lambda b: b.x):
            if min(hole.x, width) > x:
                parts.append(Box(x, top, min(hole.x, width) - x, bottom - top))
            x = max(x, hole.right)
        if x < width:
            parts.append(Box(x, top, width - x, bottom - top))
    return parts


def cut_span(image: Image.Image, boxes: list[Box], monitors: tuple[Monitor, ...] | list[Monitor]) -> list[Image.Image]:
    """Each monitor's box of a span canvas (`geometry.span_canvas`), resized (Lanczos) to its pixel size."""
    cuts = []
    for box, monitor in zip(boxes, monitors, strict=True):
        part = image.crop((box.x, box.y, box.right, box.bottom))
        if part.size != (monitor.width, monitor.height):
            part = part.resize((monitor.width, monitor.height), Image.Resampling.LANCZOS)
        cuts.append(part)
    return cuts
