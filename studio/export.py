"""Pixels -> files, written atomically: a temporary file in the target folder, fsync, then a rename.

`save_image(image, path)` writes one PNG/JPEG/TIFF/WEBP file. `export(image, layout, out_dir, stem)` writes
every format of `layout.output.formats` (png | jpeg | tiff | pdf) for one composed raster and for each
monitor's cut of a span, all or none: every temporary file is written first (several at once, in threads),
then all are renamed into place. Every file carries its DPI (the canvas's, or the monitor's pixel density;
PNG pHYs, JPEG JFIF density, TIFF resolution, WebP EXIF resolution, PDF page size) and the sRGB ICC
profile; the PDF page is the full raster (trim + bleed) at its physical size, with BleedBox and TrimBox set.

An existing file is never replaced unless the caller passes overwrite=True (its replacement then keeps its
permission bits, `_keep_mode`; a new file has the umask's), and a size its format can't hold
(WebP past 16383 px a side, JPEG past 65500) is refused before any work (`check_size`).
"""

import contextlib
import errno
import functools
import hashlib
import io
import json
import math
import os
import re
import secrets
import stat
import struct
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from studio.errors import InputError, signals_held
from studio.progress import write_line
from studio.spec import link_problem

try:
    import fcntl  # flock, for `FileLock`
except ImportError:  # Windows
    fcntl = None

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}
EXPORT_SUFFIXES = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif", "pdf": ".pdf"}  # layout format -> suffix
# file systems allow 255 bytes per name; the temporary '.<name>.<8-character tag>.part.old' adds 19 (a layout's
# file stems have this less a format's suffix: layout.MAX_STEM_BYTES)
MAX_NAME_BYTES = 255 - 19
# px per side the encoders take: libjpeg's JPEG_MAX_DIMENSION, WebP's 14-bit size fields (PNG and TIFF take
# far more than a canvas may have, PDF pages count in larger units instead)
MAX_SIDES = {"JPEG": 65500, "WEBP": 16383}
PDF_MAX_UNITS = 14400  # the largest page side, in user units (Acrobat's limit, PDF 1.7 annex C)
ICC_DATE = struct.pack(">6H", 2024, 1, 1, 0, 0, 0)  # the creation date written in the sRGB profile


def check_target(path: Path, overwrite: bool) -> Path:
    """Fail early (before any work) if `path` can't be written: unknown format, existing file, no folder."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name ending {', '.join(sorted(FORMATS))}")
    if path.suffix.lower() not in FORMATS:
        raise InputError(f"{path}: unknown image format '{path.suffix}' (allowed: {', '.join(sorted(FORMATS))})")
    return check_free(path, overwrite)


def check_free(path: Path, overwrite: bool) -> Path:
    """`path` unless it can't be written: a name too long for its temporary names, a folder, an existing file
    (without overwrite), or no folder to hold it."""
    size = len(os.fsencode(path.name))  # the bytes the file system stores (os.fsdecode's surrogates as theirs)
    if size > MAX_NAME_BYTES:
        raise InputError(f"{path.name[:40]}...: file name too long ({size} bytes, at most "
                         f"{MAX_NAME_BYTES})")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a file")
    if os.path.lexists(path) and not overwrite:  # a symbolic link, even a broken one, is a file here
        raise InputError(f"{path}: file exists (pass --overwrite, or overwrite=True, to replace it)")
    check_writable(path.parent)
    return path


def check_writable(folder: Path) -> None:
    """InputError unless `folder` is a folder that files can be made in."""
    if not folder.is_dir():
        raise InputError(f"{folder}: {not_a_folder(folder)}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{folder}: cannot write in this folder (read-only, or no permission)")
    try:  # access() answers for root from the mode bits alone: /sys and /proc say yes and create nothing
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise InputError(f"{folder}: cannot write in this folder ({e.strerror or e})") from None


def not_a_folder(path: Path) -> str:
    """Why `path`, no folder, is none: a file, a symbolic link that loops or leads nowhere (`link_problem`), or
    nothing there."""
    if problem := link_problem(path):
        return f"is {problem}"
    return "is a file, not a folder" if os.path.lexists(path) else "no such folder"


def check_size(path: Path, width: int, height: int) -> None:
    """Fail early (before any work) if a `width` x `height` px image is too large for `path`'s format."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    limit = MAX_SIDES.get(fmt)
    if limit and max(width, height) > limit:
        raise InputError(f"{path}: {width}x{height} px is too large for {fmt} (at most {limit} px a side); "
                         f"write a PNG or TIFF instead")


@functools.lru_cache(maxsize=1)
def srgb_profile() -> bytes:
    """An sRGB ICC profile (LittleCMS's built-in), embedded in every file we write.

    LittleCMS stamps the profile header with the time it was made (bytes 24-35); a fixed date makes the same
    pixels give the same file bytes in every process (batch reruns and `studio rerender` compare hashes).
    """
    from PIL import ImageCms

    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    profile[24:36] = ICC_DATE
    if any(profile[84:100]):  # a profile ID is the MD5 of the profile with flags, intent and ID zeroed
        profile[84:100] = bytes(16)
        unsigned = profile[:44] + bytes(4) + profile[48:64] + bytes(4) + profile[68:]
        profile[84:100] = hashlib.md5(unsigned).digest()
    return bytes(profile)


def text_value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


PNG_LATIN1 = re.compile(r"[\n\x20-\x7e\xa1-\xff]*")  # what a PNG tEXt chunk may hold: printable Latin-1


def write_raster(image, f, fmt: str, dpi: int | None, metadata: dict | None, quality: int) -> None:
    """Encode a PIL image to the open file `f`: PNG (metadata as text chunks: tEXt, or UTF-8 iTXt for text
    other than printable Latin-1), JPEG (RGB, 4:4:4, metadata as a JSON comment), TIFF (deflate, metadata as a
    JSON ImageDescription, 72 dpi unless given: TIFF requires a resolution) or WEBP (dpi and metadata, as in
    TIFF, in an EXIF block)."""
    from PIL import Image, PngImagePlugin, TiffImagePlugin

    if fmt == "TIFF":
        dpi = dpi or 72
    options = {"icc_profile": srgb_profile()}
    if dpi:
        dpi = int(dpi)  # libtiff refuses a numpy integer ('Error setting from dictionary')
        options["dpi"] = (dpi, dpi)
    if fmt == "PNG" and metadata:
        info = PngImagePlugin.PngInfo()
        for key, value in metadata.items():
            text = text_value(value)
            if PNG_LATIN1.fullmatch(text):
                info.add_text(key, text)
            else:
                info.add_itxt(key, text)
        options["pnginfo"] = info
    if fmt == "JPEG":
        image = image.convert("RGB")
        # int(): Pillow refuses a numpy integer; no chroma subsampling: keeps coloured text crisp
        options.update(quality=int(quality), subsampling=0)
        if metadata:
            options["comment"] = jpeg_comment(metadata)
    if fmt == "TIFF":
        options["compression"] = "tiff_deflate"
        if metadata:  # ImageDescription is ASCII: JSON's \u escapes keep other characters
            options["description"] = json.dumps(metadata)
    if fmt == "WEBP":
        options.update(quality=int(quality))
        exif = Image.Exif()
        if dpi:  # WebP has no density field: EXIF's XResolution, YResolution and ResolutionUnit (inch)
            exif[282] = exif[283] = TiffImagePlugin.IFDRational(dpi)
            exif[296] = 2
        if metadata:  # EXIF is a TIFF block: the TIFF's ImageDescription
            exif[270] = json.dumps(metadata)
        if exif:
            options["exif"] = exif.tobytes()
    # libtiff writes to a file's descriptor itself, reporting a failed write (a full disk or quota, a file size
    # limit) as an encoder error and on stderr: a TIFF is encoded in memory, and Python writes it
    target = io.BytesIO() if fmt == "TIFF" else f
    try:
        image.save(target, format=fmt, **options)
    except (OSError, ValueError, RuntimeError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise  # the disk, not the encoder: write_temp names the file
        raise InputError(f"cannot encode a {image.width}x{image.height} px image as {fmt} ({e})") from None
    if target is not f:
        f.write(target.getbuffer())


JPEG_COMMENT_BYTES = 65533  # a JPEG segment's length field counts itself (2 bytes) in 16 bits


def jpeg_comment(metadata: dict) -> str:
    """`metadata` as JSON for a JPEG comment; the longest entries are left out (with a note naming them)
    while it is longer than a comment holds, which only very long variables or prompts make it."""
    kept, dropped = dict(metadata), []
    while True:
        text = json.dumps({**kept, **({"left_out": dropped} if dropped else {})}, ensure_ascii=False)
        if len(text.encode()) <= JPEG_COMMENT_BYTES or not kept:
            return text
        longest = max(kept, key=lambda key: len(text_value(kept[key])))
        dropped.append(longest)
        del kept[longest]


# crop marks, in pt: hairlines this long, from this far outside the trim (and never inside the bleed)
CROP_MARK_LENGTH, CROP_MARK_OFFSET, CROP_MARK_WIDTH = 18, 6, 0.25


def write_pdf(image, f, dpi: int, bleed: int = 0, metadata: dict | None = None, crop_marks: bool = False) -> None:
    """A one-page PDF 1.7 showing `image` at its physical size (px / dpi inches).

    BleedBox = the whole raster, TrimBox = the raster less `bleed` px per side; MediaBox = BleedBox, or with
    crop_marks a page larger by a margin holding trim marks at the four corners (0.25 pt black hairlines,
    18 pt long, from 6 pt outside the trim or outside the bleed, whichever is further). The image is an
    sRGB (ICCBased, the ICC v4 profile PDF 1.7 allows) XObject, Flate-compressed with the PNG 'Up'
    predictor (lossless). A page over 200 inches (PDF's limit of 14,400 units) counts in larger units
    (UserUnit), as PDF 1.6 and later allow.
    """
    rgb = np.asarray(image.convert("RGB"))  # (H, W, 3)
    h, w = rgb.shape[:2]
    rows = rgb.reshape(h, w * 3)
    up = np.empty((h, w * 3 + 1), dtype=np.uint8)  # each row: filter type 2 (Up), then bytes - bytes above
    up[:, 0] = 2
    up[0, 1:] = rows[0]
    up[1:, 1:] = rows[1:] - rows[:-1]  # uint8 arithmetic wraps mod 256, as the filter wants
    pixels = zlib.compress(up.tobytes(), 6)
    icc = zlib.compress(srgb_profile())

    px_pt = Fraction(72, dpi)  # pt per px, exactly
    offset = max(CROP_MARK_OFFSET, bleed * px_pt)  # from the trim to a mark's near end
    margin = (offset + CROP_MARK_LENGTH + CROP_MARK_OFFSET - bleed * px_pt) if crop_marks else 0  # page beyond bleed
    unit = max(1, math.ceil((max(w, h) * px_pt + 2 * margin) / PDF_MAX_UNITS))  # in 1/72 inch

    # lengths are written to 1/10000 of a unit: boxes round inward, never past their true edges (a rasteriser
    # at `dpi` rounds a page up to whole px: one 0.0001 too wide is a px more), the image outward (it covers them)
    def snap(value, rounding) -> Fraction:  # a length in pt, rounded to what is written
        return Fraction(rounding(value / unit * 10000), 10000) * unit

    def pt(value) -> str:  # a length in pt, in the page's units
        return f"{round(value / unit * 10000) / 10000:.4f}".rstrip("0").rstrip(".")

    def inward(left, bottom, right, top) -> list[Fraction]:
        return [snap(left, math.ceil), snap(bottom, math.ceil), snap(right, math.floor), snap(top, math.floor)]

    x0, y0, x1, y1 = margin, margin, margin + w * px_pt, margin + h * px_pt  # the raster on the page
    b = bleed * px_pt
    page = inward(0, 0, x1 + margin, y1 + margin)
    bleed_box = inward(x0, y0, x1, y1)
    trim = inward(x0 + b, y0 + b, x1 - b, y1 - b)
    ix, iy = snap(x0, math.floor), snap(y0, math.floor)  # the image's corner, then its size from there
    content = f"q {pt(snap(x1 - ix, math.ceil))} 0 0 {pt(snap(y1 - iy, math.ceil))} {pt(ix)} {pt(iy)} cm /Im0 Do Q"
    if crop_marks:
        lines = []
        for x, sx in ((trim[0], -1), (trim[2], 1)):  # each trim corner: a horizontal and a vertical mark
            for y, sy in ((trim[1], -1), (trim[3], 1)):
                near, far = offset, offset + CROP_MARK_LENGTH  # from the trim outward
                lines.append(f"{pt(x + sx * near)} {pt(y)} m {pt(x + sx * far)} {pt(y)} l")
                lines.append(f"{pt(x)} {pt(y + sy * near)} m {pt(x)} {pt(y + sy * far)} l")
        content += f" q {pt(CROP_MARK_WIDTH)} w 0 G {' '.join(lines)} S Q"
    content = content.encode()
    info = "<< /Producer (studio)"
    if metadata:
        info += f" /Subject <{pdf_text(json.dumps(metadata, ensure_ascii=False))}>"
    info += " >>"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (f"<< /Type /Page /Parent 2 0 R {f'/UserUnit {unit} ' if unit > 1 else ''}"
         f"/MediaBox [{' '.join(map(pt, page))}] /BleedBox [{' '.join(map(pt, bleed_box))}] "
         f"/TrimBox [{' '.join(map(pt, trim))}] "
         f"/Resources << /XObject << /Im0 5 0 R >> >> /Contents 4 0 R >>").encode(),
        stream(b"", content),
        stream(f"/Type /XObject /Subtype /Image /Width {w} /Height {h} /ColorSpace [/ICCBased 6 0 R] "
               f"/BitsPerComponent 8 /Filter /FlateDecode "
               f"/DecodeParms << /Predictor 12 /Colors 3 /BitsPerComponent 8 /Columns {w} >>".encode(), pixels),
        stream(b"/N 3 /Alternate /DeviceRGB /Filter /FlateDecode", icc),
        info.encode(),
    ]
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, len(objects), xref)
    f.write(out)


def stream(entries: bytes, data: bytes) -> bytes:
    """A PDF stream object: the dictionary `entries` plus /Length, then the bytes."""
    head = b"<< " + (entries + b" " if entries else b"") + b"/Length %d >>" % len(data)
    return head + b"\nstream\n" + data + b"\nendstream"


def pdf_text(text: str) -> str:
    """A PDF text string as hex: UTF-16BE with a byte-order mark."""
    return (b"\xfe\xff" + text.encode("utf-16-be")).hex().upper()


_PDF_IMAGE = re.compile(rb"/Subtype /Image /Width (\d+) /Height (\d+) .*?/Columns \d+ >> /Length (\d+) >>\nstream\n")


def read_pixels(path: Path) -> np.ndarray | None:
    """The pixels of a file studio exported, (H, W, channels) as decoded: an image Pillow reads, or a PDF of
    `write_pdf`'s (its image's Flate-compressed 'Up' rows undone); None for a file of neither kind."""
    from PIL import Image, UnidentifiedImageError

    if path.suffix.lower() == ".pdf":
        data = path.read_bytes()
        head = _PDF_IMAGE.search(data)
        if head is None:
            return None
        w, h, length = map(int, head.groups())
        try:
            rows = np.frombuffer(zlib.decompress(data[head.end():head.end() + length]), np.uint8)
        except zlib.error:
            return None
        if rows.size != h * (3 * w + 1) or (rows.reshape(h, -1)[:, 0] != 2).any():
            return None
        return np.cumsum(rows.reshape(h, -1)[:, 1:], axis=0, dtype=np.uint8).reshape(h, w, 3)
    try:
        with Image.open(path) as image:
            return np.asarray(image)
    except (UnidentifiedImageError, OSError):
        return None


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def temporary_name(name: str, suffix: str) -> str:
    """'.<name>.<tag>.part': the tag this process's pid (6 hex digits) and `suffix` (2), which `remove_temporaries`
    reads to leave alone what a running process is writing."""
    return f".{name}.{os.getpid():06x}{suffix}.part"


# the temporary files `_temporary` made in this process that are still there, being written or waiting for their
# rename by a thread here (another thread's clean-up leaves them alone: `_live`): (st_dev, st_ino) -> real path.
# By file, not by path: a folder reached through a link, or by a relative path before a chdir, is the same folder.
_LIVE: dict[tuple[int, int], str] = {}
_LIVE_LOCK = threading.Lock()


def _temporary(folder: Path, name: str) -> tuple[int, str]:
    """A new file '.<name>.<tag>.part' in `folder`, open for writing: (fd, path). The 8-character tag is this
    process's pid (6 hex digits) and 2 random ones, so that `remove_temporaries` leaves alone the files a
    running process is writing (another render into the same folder); one a thread of this process is writing
    is in `_LIVE` until renamed or removed."""
    mode = 0o666 & ~_UMASK
    with contextlib.suppress(OSError):
        st = os.lstat(os.path.join(folder, name))
        if stat.S_ISREG(st.st_mode):  # the file it may replace: readable by no more than that one while written
            mode = stat.S_IMODE(st.st_mode)
    return _make_temporary(folder, name, lambda path: os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))


def temporary_folder(folder: Path, name: str) -> Path:
    """A new empty folder '.<name>.<tag>.part' in `folder`, tagged and kept in `_LIVE` as `_temporary`'s files
    are: a pipeline written there whole, then renamed into place, by one thread of several at once."""
    return Path(_make_temporary(folder, name, os.mkdir)[1])


def _make_temporary(folder: Path, name: str, make: Callable[[str], Any]) -> tuple[Any, str]:
    """(what `make(path)` returned, path) of a new temporary '.<name>.<tag>.part' in `folder` that `make` created
    (raising FileExistsError when the name is taken), registered in `_LIVE`."""
    with _LIVE_LOCK:
        _forget_gone()
        for _ in range(1000):
            path = os.path.join(folder, temporary_name(name, secrets.token_hex(1)))
            try:
                made = make(path)
            except FileExistsError:
                continue
            st = os.lstat(path)
            _LIVE[st.st_dev, st.st_ino] = os.path.join(os.path.realpath(folder), os.path.basename(path))
            return made, path
    raise FileExistsError(f"{folder}: no free temporary name for {name}")


def _forget_gone() -> None:
    """Drop from `_LIVE` the temporary files renamed or removed since (with `_LIVE_LOCK` held): their file's number
    may now be another file's."""
    for key, made in list(_LIVE.items()):
        try:
            st = os.lstat(made)
        except OSError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != key:
            del _LIVE[key]


def _live(path) -> bool:
    """Whether `path` is a temporary file `_temporary` made in this process that is still there (with
    `_LIVE_LOCK` held)."""
    _forget_gone()
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) in _LIVE


def _being_written(path: Path, tag: str) -> bool:
    """Whether the temporary file `path`, with this tag, is being written: by a thread of this process (`_LIVE`;
    any other with this process's pid is a leftover of a failed write), or by another process still running."""
    if len(tag) != 8 or any(c not in "0123456789abcdef" for c in tag):
        return False  # not one of ours (or from before tags named their process): a leftover
    pid = int(tag[:6], 16)
    if pid == os.getpid():
        with _LIVE_LOCK:
            return _live(path)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


@contextlib.contextmanager
def naming(path):
    """An OSError inside that names no file (a full disk's says nothing of where) raised again naming `path`."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from e


def write_temp(folder: Path, name: str, write, abandoned: threading.Event | None = None) -> Path:
    """Call write(f) on a new temporary file in `folder`, fsync it, and return its path (removed on failure, and
    once written when `abandoned` is set by then: its caller stopped waiting for it)."""
    fd, tmp = _temporary(folder, name)
    try:
        with naming(Path(folder) / name), os.fdopen(fd, "wb") as f:
            write(f)
            pause_point("write", name)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if abandoned is not None and abandoned.is_set():
        Path(tmp).unlink(missing_ok=True)
    return Path(tmp)


def write_temps(folder: Path, writes: Sequence[tuple[str, Any]],
                progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """`write_temp(folder, name, write)` for each (name, write), several at once: the PNG and zlib (PDF)
    encoders release the GIL, so on two cores a PNG and a PDF take about the time of the slower one.
    progress(done, total) after each file. Returns the temporary paths in order; on any failure (or
    interrupt) waits for the writes under way (a second Ctrl-C waits too), removes every file written and raises."""
    report = progress or (lambda done, total: None)
    report(0, len(writes))
    futures, pool, abandoned, submitting = [], None, threading.Event(), 0
    try:
        pool = ThreadPoolExecutor(max_workers=min(len(writes), os.cpu_count() or 1))
        for name, write in writes:
            submitting += 1  # a Ctrl-C inside submit() loses its future, not its write, which may have begun
            futures.append(pool.submit(write_temp, folder, name, write, abandoned))
        for done, future in enumerate(as_completed(futures), 1):
            future.result()  # raises the first failure
            report(done, len(writes))
        pool.shutdown()  # here, not in a `finally`: a Ctrl-C while it joins the threads removes the files too
        return [future.result() for future in futures]
    except BaseException as e:
        abandoned.set()  # a write that ends after all removes its own file (one whose future was lost too)
        with signals_held():
            running = sum(not future.cancel() and not future.done() for future in futures) + submitting - len(futures)
            if running and isinstance(e, KeyboardInterrupt):
                write_line(f"studio: stopping: waiting for {running} file{'s' * (running > 1)} being encoded")
            if pool is not None:
                pool.shutdown()  # every write under way, a lost future's too
            for future in futures:
                if not future.cancelled() and future.exception() is None:
                    future.result().unlink(missing_ok=True)
        raise


def remove_temporaries(folder: Path, names: set[str], remove: Callable[[Path], None] | None = None) -> set[str]:
    """Clean up after a killed run for these file names: finish the renames an `export` had begun (its
    '.<name>.<tag>.commit' journal), then delete the temporary files ('.<name>.<tag>.part', and '.part.old'
    backups). Only for these names (a batch's other shards write theirs in the same folder), and not those a
    running process is writing (two renders of one layout at once: the later one fails with 'file exists'
    or, with overwrite, replaces the files after the first): its pid, the tag's, is alive. With the folder's
    commit lock (`_commit_lock`, waited for): an export making its renames, maybe from another PID namespace
    or host sharing the folder, whose pid can't be seen from here, has made them all and removed its own
    files first. `remove`: how (default: unlink a file). Returns the names whose journals it finished (each
    export's first file: its files are written)."""
    finished: set[str] = set()
    if not folder.is_dir():
        return finished
    if not _leftovers(folder, names):
        _remove_stale_lock(folder)
        return finished
    lock = FileLock(folder / _COMMIT_LOCK)
    try:
        lock.take()
    except OSError:  # a folder no file can be made in (read-only): unlocked, as where locks are not supported
        pass
    try:
        for path, suffix, target in _leftovers(folder, names):  # again: another export's are gone now
            if suffix == ".commit":
                _finish_journal(folder, path)
                finished.add(target)
            else:
                with _LIVE_LOCK:  # gone (a finished journal moved it into place), or made again by a thread here
                    if os.path.lexists(path) and not _live(path):
                        (remove or (lambda p: p.unlink(missing_ok=True)))(path)
    finally:
        lock.release()
    return finished


def _leftovers(folder: Path, names: set[str]) -> list[tuple[Path, str, str]]:
    """(path, suffix, name) of the temporary files and journals in `folder` for these names that no running
    process here is writing (`_being_written`), journals first."""
    found = []
    for path in sorted(folder.iterdir(), key=lambda p: not p.name.endswith(".commit")):
        n = path.name
        for suffix in (".part", ".part.old", ".commit"):
            if n.startswith(".") and n.endswith(suffix):
                target, _, tag = n[1:].removesuffix(suffix).rpartition(".")
                if target in names and not _being_written(path, tag):
                    found.append((path, suffix, target))
                break
    return found


_PAUSES: dict[str, int] = {}


def pause_point(name: str, detail: str = "") -> None:
    """Test hook, inert unless STUDIO_TEST_PAUSE_IN=name[:detail][@n]: the n-th time (default 1) this process
    reaches `name` (with this `detail`, e.g. the file name) it prints 'studio: test pause: ...' to stderr
    and sleeps $STUDIO_TEST_PAUSE_SECONDS (default 600), so a test can kill or signal it right there."""
    spec, _, nth = os.environ.get("STUDIO_TEST_PAUSE_IN", "").partition("@")
    point, _, want = spec.partition(":")
    if point != name or (want and want != detail):
        return
    _PAUSES[spec] = _PAUSES.get(spec, 0) + 1
    if _PAUSES[spec] == int(nth or 1):
        print(f"studio: test pause: {name} {detail}", file=sys.stderr, flush=True)
        time.sleep(float(os.environ.get("STUDIO_TEST_PAUSE_SECONDS", 600)))


# link() errors of file systems without hard links (FAT/exFAT, many network and FUSE mounts)
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}


def move_into_place(tmp: Path, path: Path, overwrite: bool) -> None:
    """Rename `tmp` to `path`; without overwrite, a hard link makes "only if absent" atomic (where the file
    system has no hard links: a check, then a rename)."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise InputError(f"{path}: file appeared while writing (not replaced)") from None
    except OSError as e:
        if e.errno not in _NO_LINKS:
            raise
        if os.path.lexists(path):
            raise InputError(f"{path}: file appeared while writing (not replaced)") from None
        os.rename(tmp, path)
        return
    tmp.unlink()


def _keep_mode(tmp: Path, old: Path) -> None:
    """Give `tmp` the permission bits of the regular file `old` it is about to replace, as cp, a shell's redirect
    and Pillow's save keep them (a private 600 file stays private: `_temporary` made it with that mode, within
    the umask); called just before the rename, with the folder's commit lock held, as the file may have changed
    since. A new file keeps the umask's, and so does one replacing a link (the link itself is replaced, its
    target left alone) or a file of another kind."""
    try:
        st = os.lstat(old)
        if stat.S_ISREG(st.st_mode) and stat.S_IMODE(os.lstat(tmp).st_mode) != stat.S_IMODE(st.st_mode):
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
    except OSError:  # gone; or a file system that takes no chmod (some FUSE, SMB mounts): the file as written
        pass


def _keep_old(path: Path, backup: Path) -> None:
    """Keep the file `path` as `backup` until its replacement is in place: a second link, so that `path` never
    goes missing (where the file system has no hard links: a rename)."""
    try:
        os.link(path, backup)
    except OSError as e:
        if e.errno not in _NO_LINKS:
            raise
        os.rename(path, backup)


def _sync_folder(folder: Path) -> None:
    """Make the renames in `folder` durable (POSIX; where folders can't be opened, as on Windows, nothing)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_journal(folder: Path, moves: list[tuple[Path, Path]], overwrite: bool) -> Path:
    """Record, once every temporary file is complete, the renames `export` is about to make: a process killed
    among them leaves this '.<first name>.<tag>.commit' file, and the next run into the folder finishes them
    (`_finish_journal`), so that a render's files end up all in place, never some old and some new."""
    body = json.dumps({"overwrite": overwrite, "moves": [[tmp.name, path.name] for tmp, path in moves]}).encode()
    fd, tmp = _temporary(folder, moves[0][1].name)
    journal = Path(tmp).with_suffix(".commit")
    try:
        with naming(journal):
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, journal)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_folder(folder)
    return journal


def _finish_journal(folder: Path, journal: Path) -> None:
    """Make the renames a killed `export` recorded in `journal` and had not made yet, then remove it."""
    try:
        entry = json.loads(journal.read_bytes())
        moves, overwrite = [(str(a), str(b)) for a, b in entry["moves"]], bool(entry["overwrite"])
    except (OSError, ValueError, KeyError, TypeError):
        moves, overwrite = [], False  # not one of ours: nothing to finish
    for tmp_name, name in moves:
        tmp, path = folder / tmp_name, folder / name
        if Path(name).name != name or Path(tmp_name).name != tmp_name or not tmp.is_file():
            continue
        try:
            if overwrite:  # the file it replaces, or (killed after `_keep_old` renamed it away) its backup
                _keep_mode(tmp, path if os.path.lexists(path) else tmp.with_name(tmp_name + ".old"))
            move_into_place(tmp, path, overwrite)
        except InputError:
            pass  # without overwrite, a file made since then stays
        finally:
            tmp.unlink(missing_ok=True)
    _sync_folder(folder)
    journal.unlink(missing_ok=True)


def save_image(image, path, overwrite: bool = False, metadata: dict[str, str] | None = None,
               dpi: int | None = None, quality: int = 95) -> Path:
    """Write a PIL image atomically (removing what a killed write of it left), with `metadata` and `dpi` as
    `write_raster` stores them in its format; JPEG and WebP at `quality`. Renamed into place with the folder's
    commit lock held, as `export`'s files are."""
    path = check_target(Path(path), overwrite)
    check_size(path, image.width, image.height)
    fmt = FORMATS[path.suffix.lower()]
    remove_temporaries(path.parent, {path.name})
    tmp = write_temp(path.parent, path.name, lambda f: write_raster(image, f, fmt, dpi, metadata, quality))
    try:
        with _commit_lock(path.parent):
            if overwrite:
                _keep_mode(tmp, path)
            move_into_place(tmp, path, overwrite)
    except BaseException:
        tmp.unlink(missing_ok=True)  # only unless renamed: a thread here may have made a file of that name since
        raise
    return path


@dataclass(frozen=True)
class Picture:
    """A raster that `export` writes in every format, as `<stem>.<ext>`."""

    image: Any  # PIL image
    stem: str
    dpi: int
    bleed: int = 0  # px per side, for the PDF's TrimBox
    metadata: dict | None = None


def export(image, layout, out_dir, stem: str, overwrite: bool = False, metadata: dict | None = None,
           extra: Sequence[Picture] = (), progress: Callable[[int, int], None] | None = None,
           dpi: int | None = None, on_written: Callable[[], None] | None = None) -> list[Path]:
    """Write `image` (the composed full raster) as `out_dir/stem.<ext>` for each of layout.output.formats,
    at `dpi` (default: the canvas's) with the canvas's bleed, then each `extra` picture (a span's monitors)
    likewise.

    metadata: generation parameters (JSON-able values) stored in the files. All files or none: any failure
    removes every file this call created and restores any it replaced. progress(done, total) counts the
    files written. Two exports into one folder make their renames one after the other (`_commit_lock`); from
    the first rename until every file is in place and on_written() (render drops its kept art) has run, SIGINT and
    SIGTERM are held back (`signals_held`), then delivered. Returns the paths, the image's in format order, then
    each extra picture's.
    """
    out_dir = Path(out_dir)
    for fmt in layout.output.formats:
        if fmt not in EXPORT_SUFFIXES:
            raise InputError(f"output.formats: unknown format '{fmt}' (allowed: {', '.join(EXPORT_SUFFIXES)})")
    pictures = [Picture(image, stem, dpi or layout.canvas.dpi, layout.canvas.bleed, metadata), *extra]
    targets = [(fmt, check_free(out_dir / (picture.stem + EXPORT_SUFFIXES[fmt]), overwrite), picture)
               for picture in pictures for fmt in layout.output.formats]
    for _, path, picture in targets:
        check_size(path, picture.image.width, picture.image.height)

    # Pillow's save keeps its options on the image object (encoderinfo): one image saves in one format at a
    # time, while the PDF (numpy and zlib) and other pictures' files are written alongside
    saving = {id(picture.image): threading.Lock() for picture in pictures}

    def writer(fmt, picture):
        if fmt == "pdf":
            return lambda f: write_pdf(picture.image, f, picture.dpi, picture.bleed, picture.metadata,
                                       layout.output.crop_marks)

        def save(f):
            with saving[id(picture.image)]:
                write_raster(picture.image, f, fmt.upper(), picture.dpi, picture.metadata, layout.output.jpeg_quality)
        return save

    order = sorted(range(len(targets)), key=lambda i: targets[i][0] != "pdf")  # PDFs first: they wait for no lock
    written, committing = [], False  # the temporary files, this call's to remove until `_commit` takes them over
    try:
        try:  # assigned within: a Ctrl-C just after write_temps returned removes them too
            written = write_temps(out_dir, [(targets[i][1].name, writer(targets[i][0], targets[i][2]))
                                            for i in order], progress)
            temps = [tmp for _, tmp in sorted(zip(order, written))]
            with _commit_lock(out_dir), signals_held() as held:  # waiting for another run's commit can be interrupted
                committing = True  # from here `_commit` removes the temporary files it has not renamed
                _commit(out_dir, [(tmp, path) for tmp, (_, path, _) in zip(temps, targets)], overwrite)
                if on_written:
                    on_written()
                if held:  # a Ctrl-C that came too late to stop them
                    names = ", ".join(path.name for _, path, _ in targets)
                    write_line(f"studio: stopping, after the files were written ({names})")
        except BaseException:
            if not committing:
                with signals_held():
                    for tmp in written:
                        tmp.unlink(missing_ok=True)
            raise
    except FileNotFoundError:
        if out_dir.is_dir():
            raise
        raise FileNotFoundError(errno.ENOENT, f"output folder {out_dir} disappeared") from None
    return [path for _, path, _ in targets]


_COMMIT_LOCK = ".studio-export-lock"  # in the output folder; no '.lock' suffix: a batch item's lock is '.<stem>.lock'


class FileLock:
    """An exclusive lock (flock) on the file `path`, made when missing (a link there is replaced by a file:
    `_open_lock_file`): held by one open file at a time and released by the kernel when its process dies,
    SIGKILL included. `release` removes the file, then unlocks it, so `take` retries until the file it locked
    is the one the path names (another process may have removed it after it was opened here). Without fcntl
    (Windows), or on a file system that takes no locks (ENOLCK: NFS without its lock daemon), nothing is
    locked. Used for an export's commit (`_commit_lock`) and a batch item's render (`batch._ItemLock`)."""

    def __init__(self, path: Path):
        self.path, self.fd = path, None

    def take(self, wait: bool = True) -> int | None:
        """Lock it, waiting for another holder when `wait`: None when this process holds it now (or nothing can
        be locked); otherwise (not `wait`) the descriptor of the file another process holds, for the caller to
        read and close. A folder that is gone is FileNotFoundError."""
        while fcntl is not None:
            fd = _open_lock_file(self.path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                return fd
            except OSError:  # no locks on this file system: no lock file either
                os.close(fd)
                self.path.unlink(missing_ok=True)
                return None
            except BaseException:  # interrupted while waiting
                os.close(fd)
                raise
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return None
            os.close(fd)
        return None

    def release(self) -> None:
        """Remove the file, then unlock it: a process that opened it meanwhile finds it removed once it locks it."""
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


def _open_lock_file(path: Path) -> int:
    """The lock file `path` (made when missing), open for reading and writing: a file of its own, never what a
    symbolic link there names (a dangling one would make its target); a link, or a file of another kind
    (a FIFO), is removed and a file made in its place, as outputs that are links are replaced, targets
    left alone."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            if e.errno != errno.ELOOP or not os.path.islink(path):
                raise
            path.unlink(missing_ok=True)
            continue
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            return fd
        os.close(fd)
        if _is(path, st):
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def _commit_lock(folder: Path):
    """The folder's commit lock ('.studio-export-lock', `FileLock`, waited for), so that two exports into one
    folder make their renames one after the other, never interleaved."""
    lock = FileLock(folder / _COMMIT_LOCK)
    lock.take()
    try:
        yield
    finally:
        lock.release()


def _remove_stale_lock(folder: Path) -> None:
    """Remove the commit lock file a killed export left (the kernel unlocked it), not one a running export holds."""
    if os.path.lexists(folder / _COMMIT_LOCK):
        lock = FileLock(folder / _COMMIT_LOCK)
        held = lock.take(wait=False)
        if held is None:
            lock.release()
        else:
            os.close(held)


def _is(path: Path, stat: os.stat_result | None) -> bool:
    """Whether `path` is still the file `stat` describes (not one another process has put there since)."""
    try:
        return stat is not None and os.path.samestat(os.lstat(path), stat)
    except FileNotFoundError:
        return False


def _commit(folder: Path, moves: list[tuple[Path, Path]], overwrite: bool) -> None:
    """Rename each (temporary, path) of `moves` into place, all or none: a journal first (`_write_journal`), and with
    overwrite each replaced file kept until all are in place, its permission bits given to its replacement
    (`_keep_mode`). On failure removes the files it placed and restores those it replaced, unless another
    process has put a file of its own there since; in any case removes the temporary files it did not rename.
    With the folder's commit lock held: the paths are checked again, since another run may have written them
    while this one encoded."""
    backups, placed, journal = {}, {}, None  # placed: path -> what this run put there
    try:
        if not overwrite:
            for _, path in moves:
                if os.path.lexists(path):
                    raise InputError(f"{path}: file appeared while writing (not replaced)")
        journal = _write_journal(folder, moves, overwrite)
        for tmp, path in moves:
            if overwrite:  # before `_keep_old`, which may rename it away
                _keep_mode(tmp, path)
            if overwrite and os.path.lexists(path):  # kept until every file is in place, to restore on failure
                backup = tmp.with_name(tmp.name + ".old")
                _keep_old(path, backup)
                backups[path] = backup
            ours = os.stat(tmp)
            move_into_place(tmp, path, overwrite)
            placed[path] = ours
            pause_point("place", path.name)
        _sync_folder(folder)
    except BaseException:
        for path, ours in placed.items():
            if path not in backups and _is(path, ours):
                path.unlink(missing_ok=True)
        for path, old in backups.items():
            if not os.path.lexists(path) or _is(path, placed.get(path)):
                os.replace(old, path)
        raise
    finally:  # not a renamed one's name: a thread here may have made a file of that name since
        unplaced = [tmp for tmp, path in moves if path not in placed]
        for tmp in unplaced + list(backups.values()) + ([journal] if journal else []):
            tmp.unlink(missing_ok=True)
