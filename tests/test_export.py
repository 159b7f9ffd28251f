"""Export: every format carries DPI, sRGB and metadata; files are written all-or-none and never clobbered; a span's
files are named by render.output_stems."""

import contextlib
import errno
import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio import export as E
from studio.errors import InputError
from studio.geometry import monitor_dpi
from studio.render import file_dpi, output_paths, output_sizes, output_stems, proof
from studio.spec import Canvas, FillLayer, Layout, Monitor, Output, Region, Span, TextLayer

ALL = ("png", "jpeg", "tiff", "pdf")


def poster(formats=ALL, dpi=300, bleed=6):
    """A 100x60 px trim at 300 dpi with 6 px bleed: a 112x72 px raster."""
    return Layout("<string>", Canvas(100, 60, dpi=dpi, bleed=bleed), (FillLayer((255, 0, 0, 255)),),
                  output=Output(formats=formats, jpeg_quality=90))


def raster(w=112, h=72, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def pdf_image(data: bytes) -> np.ndarray:
    """Decode our PDF's image XObject (Flate + PNG Up predictor) back to (H, W, 3) pixels."""
    head = re.search(rb"/Subtype /Image /Width (\d+) /Height (\d+).*?/Length (\d+) >>\nstream\n", data)
    w, h, length = (int(v) for v in head.groups())
    rows = np.frombuffer(zlib.decompress(data[head.end():head.end() + length]), np.uint8).reshape(h, 3 * w + 1)
    assert (rows[:, 0] == 2).all()
    return np.cumsum(rows[:, 1:], axis=0, dtype=np.uint8).reshape(h, w, 3)  # undo "minus the row above"


def box(data: bytes, name: str, kind=float) -> list:
    return [kind(v) for v in re.search(r"/" + name + r" \[([^\]]*)\]", data.decode("latin-1")).group(1).split()]


def test_writes_every_format_with_dpi_and_srgb(tmp_path):
    paths = E.export(raster(), poster(), tmp_path, "poster")
    assert [p.name for p in paths] == ["poster.png", "poster.jpg", "poster.tif", "poster.pdf"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temporaries left
    for path in paths[:3]:
        with Image.open(path) as im:
            assert im.size == (112, 72)
            assert tuple(round(v) for v in im.info["dpi"]) == (300, 300)  # PNG pHYs stores px/m: 299.9994
            assert im.info["icc_profile"] == E.srgb_profile()
    assert b"/ICCBased" in paths[3].read_bytes()


def test_webp_carries_its_dpi_in_exif(tmp_path):
    """WebP has no density field; save_image (proof, generate) writes EXIF's resolution tags, in inches."""
    path = E.save_image(raster(), tmp_path / "a.webp", dpi=150)
    with Image.open(path) as im:
        assert (dict(im.getexif()), im.info["icc_profile"]) == ({282: 150, 283: 150, 296: 2}, E.srgb_profile())


def test_webp_carries_metadata_as_a_json_image_description_in_exif(tmp_path):
    """As in a TIFF: EXIF is a TIFF block; JSON's \\u escapes keep the characters ASCII leaves out."""
    meta = {"prompt": "a café at dusk, 猫 \u0085", "seed": 7, "layers": [{"steps": 20}]}
    for dpi in (None, 150):
        path = E.save_image(raster(), tmp_path / f"{dpi}.webp", metadata=meta, dpi=dpi)
        with Image.open(path) as im:
            exif = dict(im.getexif())
        assert json.loads(exif.pop(270)) == meta
        assert exif == ({} if dpi is None else {282: 150, 283: 150, 296: 2})
    with Image.open(E.save_image(raster(), tmp_path / "bare.webp")) as im:
        assert "exif" not in im.info


def test_a_tiff_without_a_dpi_is_72_dpi(tmp_path):
    """TIFF requires XResolution, YResolution (and ResolutionUnit): `generate` gives no dpi."""
    with Image.open(E.save_image(raster(), tmp_path / "a.tif", metadata={"seed": 3})) as im:
        assert (im.tag_v2[282], im.tag_v2[283], im.tag_v2[296]) == (72, 72, 2)
    with Image.open(E.save_image(raster(), tmp_path / "b.tif", dpi=150)) as im:
        assert im.info["dpi"] == (150, 150)


def png_text_chunks(path: Path) -> dict[str, bytes]:
    """keyword -> chunk type (b'tEXt', b'zTXt', b'iTXt') of a PNG's text chunks."""
    data, found, at = path.read_bytes(), {}, 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            found[data[at + 8:at + 8 + length].split(b"\0", 1)[0].decode("latin-1")] = kind
        at += 12 + length
    return found


def test_png_text_other_than_printable_latin_1_goes_in_itxt(tmp_path):
    """tEXt holds Latin-1 less its control characters (newline aside): U+0085 or a no-break space would be
    discouraged there (pngcheck), a cat can't be written at all; UTF-8 iTXt holds them."""
    meta = {"plain": "a café\nat dusk", "c1": "next\u0085line", "nbsp": "a\xa0b", "cat": "猫", "tab": "a\tb"}
    path = E.save_image(raster(), tmp_path / "a.png", metadata=meta)
    assert png_text_chunks(path) == {"plain": b"tEXt", "c1": b"iTXt", "nbsp": b"iTXt", "cat": b"iTXt", "tab": b"iTXt"}
    with Image.open(path) as im:
        assert im.text == meta


def test_pdf_page_is_the_physical_size_with_trim_and_bleed_boxes(tmp_path):
    image = raster()
    (path,) = E.export(image, poster(("pdf",)), tmp_path, "poster")
    data = path.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    assert box(data, "MediaBox") == pytest.approx([0, 0, 112 / 300 * 72, 72 / 300 * 72])  # 26.88 x 17.28 pt
    assert box(data, "BleedBox") == box(data, "MediaBox")
    assert box(data, "TrimBox") == [1.44, 1.44, 25.44, 15.84]  # 6 px bleed = 1.44 pt
    assert (pdf_image(data) == np.asarray(image)).all()  # lossless


def image_matrix(data: bytes, kind=float) -> list:
    """The `cm` that places the PDF's image: [width, 0, 0, height, x, y] in the page's units."""
    return [kind(v) for v in re.search(r"q ([^q]*) cm /Im0 Do", data.decode("latin-1")).group(1).split()]


@pytest.mark.parametrize("w, h, dpi, bleed", [(640, 360, 110, 0), (640, 360, 254, 0), (640, 360, 350, 0),
                                              (640, 360, 27, 0), (641, 359, 41, 7), (640, 360, 72, 0),
                                              (333, 211, 300, 5), (6000, 10, 27, 0)])  # the last: UserUnit 2
def test_a_pdf_page_is_never_larger_than_its_raster(tmp_path, w, h, dpi, bleed):
    """Lengths are written to 4 decimals: the boxes round inward, else a rasteriser at the file's dpi rounds a page
    0.0001 pt too large up to a px more (640x360 px at 110 dpi, 418.9091 pt: 641x361); the image rounds outward."""
    layout = Layout("<string>", Canvas(w - 2 * bleed, h - 2 * bleed, dpi=dpi, bleed=bleed), (),
                    output=Output(("pdf",)))
    (path,) = E.export(raster(w, h), layout, tmp_path, "p")
    data = path.read_bytes()
    match = re.search(rb"/UserUnit (\d+) ", data)
    px = (int(match.group(1)) if match else 1) * Fraction(dpi, 72)  # px per unit, exactly as the file says
    page = box(data, "MediaBox", Fraction)
    assert page[:2] == [0, 0] and box(data, "BleedBox", Fraction) == page
    for side, size in zip(page[2:], (w, h)):
        assert size - 1e-3 < side * px <= size
    trim = box(data, "TrimBox", Fraction)
    for near, far, size in ((trim[0], trim[2], w), (trim[1], trim[3], h)):
        assert bleed <= near * px < bleed + 1e-3 and size - bleed - 1e-3 < far * px <= size - bleed
    sx, _, _, sy, x, y = image_matrix(data, Fraction)
    assert (x, y) == (0, 0) and w <= sx * px < w + 1e-3 and h <= sy * px < h + 1e-3


@pytest.mark.parametrize("tool", ["pdftoppm", "pdftocairo"])
@pytest.mark.parametrize("dpi, bleed", [(110, 0), (254, 0), (41, 3), (97, 5)])
def test_poppler_rasterises_a_pdf_at_its_dpi_to_its_raster_size(tmp_path, tool, dpi, bleed):
    """What the box test above stands for, where poppler is installed (CI's machine may have none)."""
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    layout = Layout("<string>", Canvas(640 - 2 * bleed, 360 - 2 * bleed, dpi=dpi, bleed=bleed), (),
                    output=Output(("pdf",)))
    (path,) = E.export(raster(640, 360), layout, tmp_path, "p")
    subprocess.run([tool, "-r", str(dpi), "-png", "-singlefile", str(path), str(tmp_path / "r")], check=True)
    with Image.open(tmp_path / "r.png") as im:
        assert im.size == (640, 360)


def test_a_pdf_image_covers_its_bleed_box_beside_crop_marks(tmp_path):
    layout = Layout("<string>", Canvas(627, 347, dpi=110, bleed=7), (), output=Output(("pdf",), crop_marks=True))
    (path,) = E.export(raster(641, 361), layout, tmp_path, "p")
    data = path.read_bytes()
    sx, _, _, sy, x, y = image_matrix(data, Fraction)
    left, bottom, right, top = box(data, "BleedBox", Fraction)
    assert x <= left and y <= bottom and x + sx >= right and y + sy >= top
    assert 641 - 1e-3 < (right - left) * Fraction(110, 72) <= 641 and right < box(data, "MediaBox", Fraction)[2]


def test_pdf_xref_offsets_point_at_objects(tmp_path):
    (path,) = E.export(raster(8, 6), poster(("pdf",)), tmp_path, "p")
    data = path.read_bytes()
    start = int(re.search(rb"startxref\n(\d+)", data).group(1))
    assert data[start:start + 4] == b"xref"
    offsets = [int(m) for m in re.findall(rb"(\d{10}) 00000 n", data)]
    for number, offset in enumerate(offsets, start=1):
        assert data[offset:].startswith(b"%d 0 obj" % number)


def test_metadata_in_png_text_chunks_jpeg_comment_tiff_description(tmp_path):
    meta = {"prompt": "a café at dusk", "seed": 7, "layers": [{"steps": 20}]}
    png, jpg, tif, pdf = E.export(raster(), poster(), tmp_path, "p", metadata=meta)
    with Image.open(png) as im:
        assert im.text == {"prompt": "a café at dusk", "seed": "7", "layers": '[{"steps": 20}]'}
    with Image.open(jpg) as im:
        assert im.info["comment"].decode() == '{"prompt": "a café at dusk", "seed": 7, "layers": [{"steps": 20}]}'
    with Image.open(tif) as im:  # an ASCII tag: JSON escapes keep the accent
        assert json.loads(im.tag_v2[270]) == meta
    assert b"/Subject <FEFF" in pdf.read_bytes()


def test_metadata_too_long_for_a_jpeg_comment_leaves_out_its_longest_entries(tmp_path):
    meta = {"software": "studio", "variables": {"story": "é" * 40000}, "prompt": "a fox " * 3000}
    (jpg, png) = E.export(raster(), poster(("jpeg", "png")), tmp_path, "p", metadata=meta)
    with Image.open(jpg) as im:  # 80,000 bytes of variables leave, the 18,000-byte prompt fits
        assert json.loads(im.info["comment"]) == {"software": "studio", "prompt": meta["prompt"],
                                                  "left_out": ["variables"]}
    with Image.open(png) as im:
        assert json.loads(im.text["variables"]) == meta["variables"]  # PNG text chunks have no such limit


def test_jpeg_is_rgb_at_the_layout_quality(tmp_path):
    (jpg,) = E.export(raster().convert("RGBA"), poster(("jpeg",)), tmp_path, "p")
    with Image.open(jpg) as im:
        assert im.mode == "RGB"


def test_a_numpy_jpeg_quality_is_taken(tmp_path):
    """Pillow refuses a numpy integer quality ('Invalid quality setting'), after the whole generation."""
    layout = replace(poster(("png", "jpeg")), output=Output(formats=("png", "jpeg"), jpeg_quality=np.int64(90)))
    (_, jpg) = E.export(raster(), layout, tmp_path, "p")
    (same,) = E.export(raster(), poster(("jpeg",)), tmp_path, "q")
    assert jpg.read_bytes() == same.read_bytes()


@pytest.mark.parametrize("kind", [np.int64, np.int32])
def test_a_numpy_dpi_and_bleed_are_taken_in_every_format(tmp_path, kind):
    """libtiff refused a numpy integer dpi ('cannot encode ... as TIFF (Error setting from dictionary)'), after
    the whole generation: every format's file is the one a Python int gives, at 150 dpi."""
    numpy_files = E.export(raster(), poster(dpi=kind(150), bleed=kind(6)), tmp_path, "n")
    int_files = E.export(raster(), poster(dpi=150, bleed=6), tmp_path, "i")
    assert [p.name for p in numpy_files] == ["n.png", "n.jpg", "n.tif", "n.pdf"]
    for ours, same in zip(numpy_files, int_files):
        assert ours.read_bytes() == same.read_bytes(), ours.name
    for path in numpy_files[:3]:
        with Image.open(path) as im:
            assert tuple(round(v) for v in im.info["dpi"]) == (150, 150), path.name
    assert box(numpy_files[3].read_bytes(), "MediaBox") == pytest.approx([0, 0, 112 / 150 * 72, 72 / 150 * 72])
    with Image.open(E.save_image(raster(), tmp_path / "s.tif", dpi=kind(150))) as im:
        assert im.info["dpi"] == (150, 150)
    with Image.open(E.save_image(raster(), tmp_path / "s.webp", dpi=kind(150), quality=kind(90))) as im:
        assert {k: v for k, v in im.getexif().items() if k in (282, 283, 296)} == {282: 150, 283: 150, 296: 2}
    with Image.open(proof(poster(dpi=kind(150)), tmp_path / "proof.tif")) as im:
        assert im.info["dpi"] == (150, 150)


def test_a_file_name_from_os_fsdecode_is_measured_in_its_bytes(tmp_path):
    """A name that is no UTF-8 (os.fsdecode gives surrogates for its bytes) is as long as its bytes: no
    UnicodeEncodeError."""
    name = os.fsdecode(b"caf\xe9.png")
    assert E.check_free(tmp_path / name, overwrite=False) == tmp_path / name
    with pytest.raises(InputError, match=r"file name too long \(237 bytes, at most 236\)$"):
        E.check_free(tmp_path / os.fsdecode(b"\xe9" * 233 + b".png"), overwrite=False)


def test_tiff_is_lossless(tmp_path):
    image = raster()
    (tif,) = E.export(image, poster(("tiff",)), tmp_path, "p")
    with Image.open(tif) as im:
        assert im.info["compression"] == "tiff_adobe_deflate"
        assert im.tobytes() == image.tobytes()


def test_no_clobber_without_overwrite(tmp_path):
    E.export(raster(seed=1), poster(), tmp_path, "p")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    (tmp_path / "q.pdf").write_bytes(b"mine")
    with pytest.raises(InputError, match="file exists"):
        E.export(raster(seed=2), poster(), tmp_path, "p")
    with pytest.raises(InputError, match="q.pdf: file exists"):
        E.export(raster(seed=2), poster(), tmp_path, "q")
    assert not (tmp_path / "q.png").exists()  # checked before anything is written
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.stem == "p"} == before


def test_a_folder_or_a_name_too_long_is_refused_before_writing(tmp_path):
    (tmp_path / "p.png").mkdir()
    for overwrite in (False, True):
        with pytest.raises(InputError, match=f"^{tmp_path / 'p.png'}: is a folder, not a file$"):
            E.export(raster(), poster(), tmp_path, "p", overwrite=overwrite)
    with pytest.raises(InputError, match=f"^{'x' * 40}...: file name too long \\(240 bytes, at most 236\\)$"):
        E.export(raster(), poster(), tmp_path, "x" * 236)  # 236 + '.png'
    E.export(raster(), poster(("png",)), tmp_path, "x" * 232)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png", "x" * 232 + ".png"]


def test_the_loaders_longest_stem_is_the_exporters_longest_name_less_a_suffix(tmp_path):
    """layout.MAX_STEM_BYTES is derived from MAX_NAME_BYTES: a stem that long, with any format's suffix, still has
    room for the temporary file and the backup of the file it replaces ('.<name>.<tag>.part.old', 255 bytes)."""
    from studio.layout import MAX_STEM_BYTES

    assert (MAX_STEM_BYTES, E.MAX_NAME_BYTES) == (232, 236)
    for suffix in E.EXPORT_SUFFIXES.values():
        tmp = E.write_temp(tmp_path, "x" * MAX_STEM_BYTES + suffix, lambda f: f.write(b"1"))
        assert len((tmp.name + ".old").encode()) == 255
        tmp.rename(tmp.with_name(tmp.name + ".old")).unlink()


def test_overwrite_replaces(tmp_path):
    E.export(raster(seed=1), poster(("png",)), tmp_path, "p")
    E.export(raster(seed=2), poster(("png",)), tmp_path, "p", overwrite=True)
    with Image.open(tmp_path / "p.png") as im:
        assert im.tobytes() == raster(seed=2).tobytes()


def test_failure_while_encoding_leaves_no_files(tmp_path, monkeypatch):
    def broken_pdf(image, f, *args):
        f.write(b"%PDF-1.4 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(E, "write_pdf", broken_pdf)
    with pytest.raises(OSError, match="disk full"):
        E.export(raster(), poster(), tmp_path, "p")
    assert list(tmp_path.iterdir()) == []


def test_formats_are_encoded_at_once_and_a_failure_waits_for_the_others(tmp_path, monkeypatch):
    import threading

    started = threading.Barrier(2, timeout=10)  # broken (an error) unless the PNG and the PDF encode together
    encode_png, finished = E.write_raster, []

    def png(image, f, *args):
        started.wait()
        encode_png(image, f, *args)
        finished.append("png")

    def broken_pdf(image, f, *args):
        started.wait()
        raise OSError("disk full")

    monkeypatch.setattr(E.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(E, "write_raster", png)
    monkeypatch.setattr(E, "write_pdf", broken_pdf)
    with pytest.raises(OSError, match="disk full"):
        E.export(raster(), poster(("png", "pdf")), tmp_path, "p")
    assert finished == ["png"] and list(tmp_path.iterdir()) == []  # the PNG was written, then removed


def test_failure_while_renaming_leaves_no_new_files_and_restores_old_ones(tmp_path, monkeypatch):
    E.export(raster(seed=1), poster(("png", "jpeg")), tmp_path, "old")
    old = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_move, calls = E.move_into_place, []

    def move_fails_second_time(tmp, path, overwrite):
        calls.append(path)
        if len(calls) % 2 == 0:
            raise OSError("rename failed")
        real_move(tmp, path, overwrite)

    monkeypatch.setattr(E, "move_into_place", move_fails_second_time)
    with pytest.raises(OSError):
        E.export(raster(seed=2), poster(("png", "jpeg")), tmp_path, "new")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == old  # new.png removed, no temporaries
    with pytest.raises(OSError):
        E.export(raster(seed=2), poster(("png", "jpeg")), tmp_path, "old", overwrite=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == old  # old.png restored


@contextlib.contextmanager
def paused(script: str, folder, point: str, name: str, seconds: int):
    """`python -c script folder` from the repository, paused for `seconds` at the pause point (`point`, `name`):
    yields the process there."""
    env = {**os.environ, "STUDIO_TEST_PAUSE_IN": f"{point}:{name}", "STUDIO_TEST_PAUSE_SECONDS": str(seconds)}
    with subprocess.Popen([sys.executable, "-c", script, str(folder)], env=env, stderr=subprocess.PIPE,
                          text=True, cwd=Path(__file__).parent.parent) as run:
        assert run.stderr.readline() == f"studio: test pause: {point} {name}\n"
        yield run


def test_a_run_killed_while_placing_its_files_is_finished_by_the_next_one(tmp_path):
    """SIGKILL between two renames: the next run into the folder finishes them (all new files, no leftovers)."""
    E.export(raster(seed=1), poster(("png", "jpeg")), tmp_path, "p")
    script = ("import sys; import numpy as np; from tests.test_export import E, poster, raster; "
              "E.export(raster(seed=2), poster(('png', 'jpeg')), sys.argv[1], 'p', overwrite=True)")
    with paused(script, tmp_path, "place", "p.png", 60) as run:
        run.send_signal(signal.SIGKILL)
    pixels = {}
    for name in ("p.png", "p.jpg"):
        with Image.open(tmp_path / name) as im:
            pixels[name] = im.tobytes()
    assert pixels["p.png"] == raster(seed=2).tobytes() and pixels["p.jpg"] != pixels["p.png"]  # half done
    assert len([p for p in tmp_path.iterdir() if p.name.endswith(".commit")]) == 1
    assert E.remove_temporaries(tmp_path, {"p.png", "p.jpg"}) == {"p.png"}  # the journal's: its export is written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jpg", "p.png"]
    assert E.remove_temporaries(tmp_path, {"p.png", "p.jpg"}) == set()
    with Image.open(tmp_path / "p.jpg") as im:
        assert np.abs(np.asarray(im, float) - np.asarray(raster(seed=2), float)).mean() < 8  # the new JPEG


def mode(path) -> int:
    return os.lstat(path).st_mode & 0o7777


@pytest.fixture
def umask_022(monkeypatch):
    """The process's umask 022 for the test (the kernel applies the real one, whatever export reads)."""
    monkeypatch.setattr(E, "_UMASK", 0o022)
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize("links", [True, False])
def test_overwrite_keeps_the_replaced_file_s_mode(tmp_path, monkeypatch, links, umask_022):
    """A private 600 file replaced with overwrite became 644 (the temporary's mode, from the umask): its
    replacement now keeps its mode, as cp and a shell's redirect do (also where a replaced file is kept by a
    rename, no hard links); a new file still follows the umask."""
    if not links:
        monkeypatch.setattr(E.os, "link", lambda src, dst: (_ for _ in ()).throw(PermissionError(errno.EPERM, "no")))
    E.export(raster(seed=1), poster(("png", "pdf")), tmp_path, "p")
    E.save_image(raster(seed=1), tmp_path / "s.png")
    assert [mode(tmp_path / n) for n in ("p.png", "p.pdf", "s.png")] == [0o644] * 3
    (tmp_path / "p.png").chmod(0o600)
    (tmp_path / "p.pdf").chmod(0o750)
    (tmp_path / "s.png").chmod(0o600)
    E.export(raster(seed=2), poster(("png", "pdf", "jpeg")), tmp_path, "p", overwrite=True)
    E.save_image(raster(seed=2), tmp_path / "s.png", overwrite=True)
    assert {p.name: mode(p) for p in tmp_path.iterdir()} == {"p.png": 0o600, "p.pdf": 0o750, "p.jpg": 0o644,
                                                              "s.png": 0o600}
    with Image.open(tmp_path / "p.png") as im, Image.open(tmp_path / "s.png") as s:
        assert im.tobytes() == s.tobytes() == raster(seed=2).tobytes()


def test_overwrite_replaces_a_link_by_a_file_of_the_umask_s_mode(tmp_path, umask_022):
    """A link at a target name is replaced itself (its target left alone): a new file, of the umask's mode."""
    target = tmp_path / "target.png"
    target.write_bytes(b"theirs")
    target.chmod(0o600)
    (tmp_path / "p.png").symlink_to(target)
    E.export(raster(), poster(("png",)), tmp_path, "p", overwrite=True)
    assert not (tmp_path / "p.png").is_symlink() and mode(tmp_path / "p.png") == 0o644
    assert (target.read_bytes(), mode(target)) == (b"theirs", 0o600)


def test_a_killed_run_s_renames_keep_the_replaced_files_modes(tmp_path):
    """The renames a killed run left to its journal give each temporary the mode of the file it replaces, read
    when it is replaced (here changed since the kill)."""
    E.export(raster(seed=1), poster(("png", "jpeg")), tmp_path, "p")
    (tmp_path / "p.png").chmod(0o600)
    (tmp_path / "p.jpg").chmod(0o600)
    script = ("import os, sys; os.umask(0o022); from tests.test_export import E, poster, raster; "
              "E.export(raster(seed=2), poster(('png', 'jpeg')), sys.argv[1], 'p', overwrite=True)")
    with paused(script, tmp_path, "place", "p.png", 60) as run:
        run.send_signal(signal.SIGKILL)
    (tmp_path / "p.jpg").chmod(0o640)
    assert E.remove_temporaries(tmp_path, {"p.png", "p.jpg"}) == {"p.png"}
    assert {p.name: mode(p) for p in tmp_path.iterdir()} == {"p.png": 0o600, "p.jpg": 0o640}
    with Image.open(tmp_path / "p.jpg") as im:
        assert np.abs(np.asarray(im, float) - np.asarray(raster(seed=2), float)).mean() < 8  # the new JPEG


def test_a_killed_run_s_rename_takes_the_mode_of_the_backup_it_renamed_its_file_to(tmp_path):
    """Without hard links a replaced file is kept by a rename (`_keep_old`): a run killed right after it leaves
    only the backup, whose mode the journal's rename gives the new file."""
    path = tmp_path / "p.png"
    path.write_bytes(b"old")
    path.chmod(0o600)
    tmp = E.write_temp(tmp_path, "p.png", lambda f: f.write(b"new"))
    tmp.chmod(0o644)
    journal = E._write_journal(tmp_path, [(tmp, path)], True)
    path.rename(tmp.with_name(tmp.name + ".old"))
    E._finish_journal(tmp_path, journal)
    assert (path.read_bytes(), mode(path)) == (b"new", 0o600)


def exporting(name, seed, tmp_path, overwrite, errors) -> threading.Thread:
    """A thread `name` exporting raster(seed) as p.png and p.jpg into tmp_path; its exception into `errors`."""
    def run():
        try:
            E.export(raster(seed=seed), poster(("png", "jpeg")), tmp_path, "p", overwrite=overwrite)
        except Exception as e:
            errors.append(e)
    thread = threading.Thread(target=run, name=name)
    thread.start()
    return thread


def test_two_exports_into_one_folder_rename_in_turn(tmp_path, monkeypatch):
    """Run B, encoded while run A renames, waits for A's renames to end (A here fails after its first and
    removes that file): B's files are then all in place (A's removal took B's p.png, A's later ones mixed)."""
    placed, go, move = threading.Event(), threading.Event(), E.move_into_place

    def move_a_fails_second(tmp, path, overwrite):
        if threading.current_thread().name == "A" and placed.is_set():
            raise OSError("rename failed")
        move(tmp, path, overwrite)
        if threading.current_thread().name == "A":
            placed.set()
            assert go.wait(10)

    monkeypatch.setattr(E, "move_into_place", move_a_fails_second)
    a_errors, b_errors = [], []
    a = exporting("A", 1, tmp_path, True, a_errors)
    assert placed.wait(10)
    b = exporting("B", 2, tmp_path, True, b_errors)
    b.join(0.5)  # done by now unless it waits for A
    go.set()
    a.join(10), b.join(10)
    assert ([str(e) for e in a_errors], b_errors) == (["rename failed"], [])
    with Image.open(tmp_path / "p.png") as im:
        assert im.tobytes() == raster(seed=2).tobytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jpg", "p.png"]  # no lock file left


def test_an_export_waiting_for_another_s_renames_checks_its_files_again(tmp_path, monkeypatch):
    """Without overwrite, the later of two exports of the same names fails naming the file the earlier wrote."""
    ready, go, write_journal = threading.Event(), threading.Event(), E._write_journal

    def a_waits(folder, moves, overwrite):
        if threading.current_thread().name == "A":
            ready.set()
            assert go.wait(10)
        return write_journal(folder, moves, overwrite)

    monkeypatch.setattr(E, "_write_journal", a_waits)
    a_errors, b_errors = [], []
    a = exporting("A", 1, tmp_path, False, a_errors)
    assert ready.wait(10)
    b = exporting("B", 2, tmp_path, False, b_errors)
    b.join(0.5)
    go.set()
    a.join(10), b.join(10)
    assert a_errors == [] and [str(e) for e in b_errors] == [f"{tmp_path / 'p.png'}: file appeared while writing "
                                                             "(not replaced)"]
    with Image.open(tmp_path / "p.png") as im:
        assert im.tobytes() == raster(seed=1).tobytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jpg", "p.png"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_failed_export_leaves_a_file_another_process_put_in_its_place(tmp_path, monkeypatch, overwrite):
    """A process that takes no lock (another program) replaces p.png after this export placed it: the export, failing
    at p.jpg, neither removes that file nor restores the old p.png over it."""
    if overwrite:
        E.export(raster(seed=1), poster(("png", "jpeg")), tmp_path, "p")
    old_jpg = (tmp_path / "p.jpg").read_bytes() if overwrite else None
    move = E.move_into_place

    def replaced_then_fails(tmp, path, overwrite):
        if path.name == "p.jpg":
            (tmp_path / "other").write_bytes(b"another program's")
            os.replace(tmp_path / "other", tmp_path / "p.png")
            raise OSError("rename failed")
        move(tmp, path, overwrite)

    monkeypatch.setattr(E, "move_into_place", replaced_then_fails)
    with pytest.raises(OSError, match="rename failed"):
        E.export(raster(seed=2), poster(("png", "jpeg")), tmp_path, "p", overwrite=overwrite)
    assert (tmp_path / "p.png").read_bytes() == b"another program's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jpg", "p.png"] if overwrite else ["p.png"]
    if overwrite:
        assert (tmp_path / "p.jpg").read_bytes() == old_jpg


def test_a_ctrl_c_while_the_encoders_start_leaves_no_temporary_file(tmp_path, monkeypatch):
    """Ctrl-C as the second file is handed to a thread, the first being written: that one is waited for and removed."""
    written, submitted = threading.Event(), []

    class Pool(E.ThreadPoolExecutor):
        def submit(self, *args):
            if submitted:
                raise KeyboardInterrupt
            submitted.append(args)
            return super().submit(*args)

    def write(f):
        f.write(b"x")
        written.set()

    monkeypatch.setattr(E, "ThreadPoolExecutor", Pool)
    with pytest.raises(KeyboardInterrupt):
        E.write_temps(tmp_path, [("a.png", write), ("b.png", write)])
    assert written.wait(10) and list(tmp_path.iterdir()) == []


def test_a_ctrl_c_while_the_finished_encoders_are_joined_leaves_no_temporary_file(tmp_path, monkeypatch):
    """Ctrl-C once every file is written, while the pool's threads are joined: all of them are removed."""
    interrupted = []

    class Pool(E.ThreadPoolExecutor):
        def shutdown(self, *args, **kwargs):
            super().shutdown(*args, **kwargs)  # the workers are done, their files written
            if not interrupted:
                interrupted.append(sorted(p.name for p in tmp_path.iterdir()))
                raise KeyboardInterrupt

    monkeypatch.setattr(E, "ThreadPoolExecutor", Pool)
    with pytest.raises(KeyboardInterrupt):
        E.export(raster(), poster(), tmp_path, "p")
    assert [re.sub(r"\.[0-9a-f]{8}\.part$", ".part", name) for name in interrupted[0]] == [
        ".p.jpg.part", ".p.pdf.part", ".p.png.part", ".p.tif.part"]
    assert list(tmp_path.iterdir()) == []


def test_a_write_its_caller_stopped_waiting_for_removes_its_file(tmp_path):
    abandoned = threading.Event()
    abandoned.set()
    E.write_temp(tmp_path, "a.png", lambda f: f.write(b"x"), abandoned)
    assert list(tmp_path.iterdir()) == []


def test_a_second_ctrl_c_still_waits_for_the_encoders_and_removes_their_files(tmp_path):
    script = ("import sys; from studio import export as E; "
              "E.write_temps(sys.argv[1], [('a.png', lambda f: f.write(b'a'))])")
    with paused(script, tmp_path, "write", "a.png", 2) as run:
        run.send_signal(signal.SIGINT)
        assert run.stderr.readline() == "studio: stopping: waiting for 1 file being encoded\n"
        run.send_signal(signal.SIGINT)  # held until the file is written and removed, then taken
        assert run.stderr.read().rstrip().endswith("KeyboardInterrupt")
    assert run.returncode == -signal.SIGINT and list(tmp_path.iterdir()) == []  # an uncaught KeyboardInterrupt


def test_an_output_folder_removed_while_writing_is_named(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(E, "check_size", lambda *args: out.rmdir() if out.exists() else None)  # after the checks
    with pytest.raises(FileNotFoundError) as e:
        E.export(raster(), poster(("png", "pdf")), out, "p")
    assert (e.value.strerror, e.value.filename) == (f"output folder {out} disappeared", None)


def test_file_systems_without_hard_links(tmp_path, monkeypatch):
    """FAT/exFAT and many network mounts refuse link(): a check and a rename instead, a rename for backups."""
    def no_links(src, dst):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(E.os, "link", no_links)
    E.export(raster(seed=1), poster(("png", "pdf")), tmp_path, "p")
    with pytest.raises(InputError, match="file exists"):
        E.export(raster(seed=2), poster(("png", "pdf")), tmp_path, "p")
    E.export(raster(seed=2), poster(("png", "pdf")), tmp_path, "p", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.pdf", "p.png"]
    with Image.open(tmp_path / "p.png") as im:
        assert im.tobytes() == raster(seed=2).tobytes()

    real_move = E.move_into_place

    def second_fails(tmp, path, overwrite):
        if path.suffix == ".pdf":
            raise OSError("rename failed")
        real_move(tmp, path, overwrite)

    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(E, "move_into_place", second_fails)
    with pytest.raises(OSError, match="rename failed"):
        E.export(raster(seed=3), poster(("png", "pdf")), tmp_path, "p", overwrite=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # old files back from their backups


def test_a_symbolic_link_at_a_target_name_is_an_existing_file(tmp_path):
    (tmp_path / "p.png").symlink_to(tmp_path / "nowhere.png")  # broken
    with pytest.raises(InputError, match="p.png: file exists"):
        E.export(raster(), poster(("png",)), tmp_path, "p")


def test_crop_marks_sit_outside_the_bleed_on_a_larger_page(tmp_path):
    layout = replace(poster(("pdf",)), output=Output(("pdf",), crop_marks=True))
    (path,) = E.export(raster(), layout, tmp_path, "poster")  # 112x72 px at 300 dpi, 6 px (1.44 pt) bleed
    data = path.read_bytes()
    margin = 6 + 18 + 6 - 1.44  # offset 6 pt from the trim (the bleed is less), 18 pt marks, 6 pt beyond
    assert box(data, "MediaBox") == pytest.approx([0, 0, 26.88 + 2 * margin, 17.28 + 2 * margin], abs=1e-4)
    assert box(data, "BleedBox") == pytest.approx([margin, margin, margin + 26.88, margin + 17.28], abs=1e-4)
    assert box(data, "TrimBox") == pytest.approx([margin + 1.44, margin + 1.44, margin + 25.44, margin + 15.84],
                                                 abs=1e-4)
    stroke = re.search(rb"q 0.25 w 0 G (.*?) S Q", data).group(1).decode()
    segments = [[float(v) for v in seg.split()[:2] + seg.split()[3:5]] for seg in stroke.split(" l") if seg.strip()]
    assert len(segments) == 8
    trim = box(data, "TrimBox")
    for xa, ya, xb, yb in segments:  # each mark on a trim line, 6 to 24 pt beyond the trim corner, outside the bleed
        if ya == yb:
            assert ya in (pytest.approx(trim[1]), pytest.approx(trim[3]))
            ends = sorted(min(abs(v - trim[0]), abs(v - trim[2])) for v in (xa, xb))
        else:
            assert xa in (pytest.approx(trim[0]), pytest.approx(trim[2]))
            ends = sorted(min(abs(v - trim[1]), abs(v - trim[3])) for v in (ya, yb))
        assert ends == pytest.approx([6, 24], abs=1e-4)
    assert (pdf_image(data) == np.asarray(raster())).all()


def test_a_page_over_200_inches_counts_in_larger_units(tmp_path):
    (path,) = E.export(raster(300, 10), Layout("<string>", Canvas(300, 10, dpi=1), (), output=Output(("pdf",))),
                       tmp_path, "banner")
    data = path.read_bytes()  # 300 in = 21,600 pt: over PDF's 14,400, so 2/72 in per unit
    assert data.startswith(b"%PDF-1.7\n") and b"/UserUnit 2 " in data
    assert box(data, "MediaBox") == [0, 0, 10800, 360]
    assert (pdf_image(data) == np.asarray(raster(300, 10))).all()


def test_a_full_disk_names_the_file(tmp_path, monkeypatch):
    def full(image, f, *args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(E, "write_pdf", full)
    with pytest.raises(OSError) as info:
        E.export(raster(), poster(("pdf",)), tmp_path, "p")
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(tmp_path / "p.pdf"))
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_writing_the_rename_journal_names_it(tmp_path, monkeypatch):
    """The journal written once every file is (`_write_journal`): named like the files, and nothing is left."""
    write_temps = E.write_temps

    def then_full(*args):
        temps = write_temps(*args)

        def full(fd):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(os, "fsync", full)  # the next file synced: the journal
        return temps
    monkeypatch.setattr(E, "write_temps", then_full)
    with pytest.raises(OSError) as info:
        E.export(raster(), poster(("png",)), tmp_path, "p")
    assert info.value.errno == errno.ENOSPC
    assert re.fullmatch(re.escape(str(tmp_path / ".p.png.")) + r"[0-9a-f]{8}\.commit", info.value.filename)
    assert list(tmp_path.iterdir()) == []


def test_unknown_format(tmp_path):
    with pytest.raises(InputError, match="unknown format 'gif'"):
        E.export(raster(), poster(("png", "gif")), tmp_path, "p")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, width, height, limit", [
    ("a.webp", 16384, 8, 16383), ("a.webp", 8, 16384, 16383), ("a.jpg", 65501, 8, 65500), ("a.JPEG", 8, 65501, 65500)])
def test_a_size_the_format_cannot_hold_is_refused(tmp_path, name, width, height, limit):
    fmt = "WEBP" if name.endswith("webp") else "JPEG"
    with pytest.raises(InputError, match=f"^{re.escape(str(tmp_path / name))}: {width}x{height} px is too large for "
                                         f"{fmt} \\(at most {limit} px a side\\); write a PNG or TIFF instead$"):
        E.check_size(tmp_path / name, width, height)
    E.check_size(tmp_path / name, min(width, limit), min(height, limit))
    for other in ("a.png", "a.tif", "a.pdf"):  # far beyond any canvas
        E.check_size(tmp_path / other, 65536, 65536)


def test_save_image_and_export_refuse_a_size_their_format_cannot_hold(tmp_path, monkeypatch):
    with pytest.raises(InputError, match=r"a.webp: 16384x1 px is too large for WEBP \(at most 16383 px a side\)"):
        E.save_image(Image.new("RGB", (16384, 1)), tmp_path / "a.webp")
    monkeypatch.setitem(E.MAX_SIDES, "JPEG", 100)
    with pytest.raises(InputError, match=r"p.jpg: 112x72 px is too large for JPEG \(at most 100 px a side\)"):
        E.export(raster(), poster(), tmp_path, "p")  # 112 px wide
    assert list(tmp_path.iterdir()) == []


def test_an_encoder_failure_is_one_line_naming_the_format_and_size():
    """What the encoder refuses (past the sizes check_size knows) is an InputError, not Pillow's traceback; the
    disk's errors stay OSErrors (write_temp names the file)."""
    with pytest.raises(InputError, match=r"^cannot encode a 16384x1 px image as WEBP \(encoding error 5: Image size "
                                         r"exceeds WebP limit of 16383 pixels\)$"):
        E.write_raster(Image.new("RGB", (16384, 1)), io.BytesIO(), "WEBP", None, None, 90)
    with pytest.raises(InputError, match=r"^cannot encode a 65501x1 px image as JPEG \(broken data stream when "
                                         r"writing image file\)$"):
        E.write_raster(Image.new("RGB", (65501, 1)), io.BytesIO(), "JPEG", None, None, 90)

    class FullDisk(io.BytesIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError) as info:
        E.write_raster(raster(), FullDisk(), "PNG", None, None, 90)
    assert info.value.errno == errno.ENOSPC


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_a_tiff_write_error_is_the_disk_s(code, tmp_path, capfd):
    """libtiff, writing to the descriptor itself, made any failed write 'encoder error -2' and printed its own
    lines; it now encodes in memory, and the disk's error is an OSError (write_temp names the file)."""
    class Failing(io.BytesIO):
        def write(self, data):
            raise OSError(code, os.strerror(code))

    with pytest.raises(OSError) as info:
        E.write_raster(raster(), Failing(), "TIFF", None, None, 90)
    assert info.value.errno == code
    (tmp_path / "a.tif").write_bytes(b"")
    with open(tmp_path / "a.tif", "rb") as read_only, pytest.raises(OSError) as info:
        E.write_raster(raster(), read_only, "TIFF", None, None, 90)
    assert isinstance(info.value, io.UnsupportedOperation) and capfd.readouterr().err == ""


def test_a_file_size_limit_is_one_line_naming_the_file(tmp_path):
    """As `ulimit -f` (or a full quota) makes it: 'p.tif: File too large', not an encoder error."""
    layout = tmp_path / "l.yaml"
    layout.write_text("canvas: {width: 112, height: 72}\nlayers: [{image: {path: noise.png}}]\n")
    raster().save(tmp_path / "noise.png")  # 24 KiB that no encoder shrinks
    code = ("import resource, signal, sys; from studio.cli import main; signal.signal(signal.SIGXFSZ, signal.SIG_IGN);"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); sys.exit(main(sys.argv[1:]))")
    for name in ("p.tif", "p.png"):
        done = subprocess.run([sys.executable, "-c", code, "proof", str(layout), "-o", str(tmp_path / name)],
                              capture_output=True, text=True, timeout=120)
        assert (done.returncode, done.stderr) == (2, f"studio: error: {tmp_path / name}: File too large\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.yaml", "noise.png"]


def test_proof_refuses_a_size_its_format_cannot_hold_before_composing(tmp_path, monkeypatch):
    import studio.render

    monkeypatch.setattr(studio.render, "compose", lambda *args, **kwargs: pytest.fail("composed"))
    layout = Layout("<string>", Canvas(17000, 200), (FillLayer((255, 0, 0, 255)),))
    with pytest.raises(InputError, match=r"proof.webp: 17000x200 px is too large for WEBP \(at most 16383 px a side\)"):
        proof(layout, tmp_path / "proof.webp")
    assert list(tmp_path.iterdir()) == []


def test_generate_refuses_a_size_its_format_cannot_hold_before_planning(tiny_dir, tmp_path, capsys):
    from studio.cli import main

    out = tmp_path / "wide.webp"
    assert main(["generate", "a cat", "--model", str(tiny_dir), "--size", "16384x64", "-o", str(out), "--dry-run"]) == 2
    assert capsys.readouterr().err == (f"studio: error: {out}: 16384x64 px is too large for WEBP (at most 16383 px a "
                                       "side); write a PNG or TIFF instead\n")


def test_save_image_still_writes_one_file(tmp_path):
    (tmp_path / ".a.png.k1llxd.part").write_bytes(b"half")  # a killed write's leftover: removed
    path = E.save_image(raster(), tmp_path / "a.png", metadata={"seed": "3"}, dpi=150)
    with Image.open(path) as im:
        assert im.text["seed"] == "3" and round(im.info["dpi"][0]) == 150
    with pytest.raises(InputError, match="file exists"):
        E.save_image(raster(), path)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_temporaries_of_a_running_process_are_left_alone(tmp_path):
    """A second render into the same folder removes what killed runs left, not what a live one is writing."""
    import subprocess
    import sys
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    alive = os.getppid()
    (tmp_path / f".a.png.{int(dead):06x}ab.part").write_bytes(b"killed")
    (tmp_path / f".a.png.{alive:06x}cd.part").write_bytes(b"being written")
    (tmp_path / f".a.png.{alive:06x}cd.part.old").write_bytes(b"its backup")
    E.save_image(raster(), tmp_path / "a.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["a.png", f".a.png.{alive:06x}cd.part", f".a.png.{alive:06x}cd.part.old"])


def test_clean_up_waits_for_another_exports_renames(tmp_path, monkeypatch):
    """An export making its renames from another PID namespace or host: its pid (the tags') is none this machine
    has, so only the commit lock it holds says it runs. The next run's clean-up waits for that lock, touching
    nothing meanwhile; the export's own files are gone by then, and what a killed run left goes as before."""
    tag = "ffffff00"  # no process here has pid 0xffffff
    theirs = [f".p.png.{tag}.commit", f".p.png.{tag}.part", f".p.jpg.{tag}.part", f".p.jpg.{tag}.part.old"]
    for name in theirs:
        (tmp_path / name).write_bytes(b"theirs")
    (tmp_path / ".p.jpg.ffffff01.part").write_bytes(b"killed")
    other = E.FileLock(tmp_path / ".studio-export-lock")
    assert other.take() is None
    waiting, flock = threading.Event(), E.fcntl.flock

    def noting(fd, operation):
        if operation == E.fcntl.LOCK_EX:  # waited for
            waiting.set()
        return flock(fd, operation)
    monkeypatch.setattr(E.fcntl, "flock", noting)
    with ThreadPoolExecutor(1) as pool:
        cleaning = pool.submit(E.remove_temporaries, tmp_path, {"p.png", "p.jpg"})
        assert waiting.wait(30)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [*theirs, ".p.jpg.ffffff01.part", ".studio-export-lock"])
        for name, placed in zip(theirs[1:3], ["p.png", "p.jpg"]):  # its renames made, its journal and backup gone
            (tmp_path / name).rename(tmp_path / placed)
        (tmp_path / theirs[0]).unlink()
        (tmp_path / theirs[3]).unlink()
        other.release()
        assert cleaning.result(30) == set()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {"p.png": b"theirs", "p.jpg": b"theirs"}


def test_threads_writing_the_same_files_leave_each_other_s_temporaries_alone(tmp_path):
    """Threads of one process (a service) proofing one file and rendering into one folder, all with overwrite: a
    thread's clean-up (render's, save_image's) took another's temporary files, which have this process's pid
    (FileNotFoundError on '.same.png.<tag>.part'). Now each succeeds, the last rename winning: p.png and p.tif of
    one export; this process's leftover of a failed write (not being written) still goes."""
    leftover = tmp_path / f".same.png.{os.getpid():06x}ff.part"
    leftover.write_bytes(b"half")
    images, errors = [raster(seed=seed) for seed in range(6)], []

    def proofing(seed):
        try:
            E.save_image(images[seed], tmp_path / "same.png", overwrite=True)
        except Exception as e:
            errors.append(e)

    def rendering(seed):
        try:
            E.remove_temporaries(tmp_path, {"p.png", "p.tif"})  # as render does first
            E.export(images[seed], poster(("png", "tiff")), tmp_path, "p", overwrite=True)
        except Exception as e:
            errors.append(e)

    for _ in range(10):
        threads = [threading.Thread(target=proofing if seed % 2 else rendering, args=(seed,)) for seed in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert [f"{type(e).__name__}: {e}" for e in errors] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png", "p.tif", "same.png"]
    with Image.open(tmp_path / "same.png") as im:
        assert im.tobytes() in [images[seed].tobytes() for seed in (1, 3, 5)]
    with Image.open(tmp_path / "p.png") as png, Image.open(tmp_path / "p.tif") as tif:
        assert png.tobytes() == tif.tobytes() in [images[seed].tobytes() for seed in (0, 2, 4)]


def test_a_temporary_file_being_written_is_left_alone_whatever_path_reaches_its_folder(tmp_path, monkeypatch):
    """A thread's temporary file in a folder it reached through a link, or by a relative path before a chdir:
    another thread's clean-up by the folder's real path took it (the live files were known by path)."""
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    link.symlink_to(real)
    fd, linked = E._temporary(link, "x.png")
    os.close(fd)
    monkeypatch.chdir(tmp_path)
    fd, relative = E._temporary(Path("real"), "y.png")
    os.close(fd)
    relative = tmp_path / relative
    monkeypatch.chdir(real)
    leftover = real / f".x.png.{os.getpid():06x}ff.part"  # of a failed write: no thread here writes it
    leftover.write_bytes(b"half")
    assert E.remove_temporaries(real, {"x.png", "y.png"}) == set()
    assert sorted(p.name for p in real.iterdir()) == sorted([Path(linked).name, relative.name])
    relative.rename(real / "y.png")  # renamed: no longer being written, its name free for a leftover
    relative.write_bytes(b"left over")
    E.remove_temporaries(tmp_path / "link", {"x.png", "y.png"})
    assert sorted(p.name for p in real.iterdir()) == sorted([Path(linked).name, "y.png"])


@pytest.mark.parametrize("writer", ["save_image", "export"])
def test_a_written_file_s_temporary_name_is_not_removed_after_its_rename(tmp_path, monkeypatch, writer):
    """Once renamed, a temporary's name is free for another thread of this process to take: save_image and export
    removed it afterwards anyway, taking that thread's file (2 random hex digits in a tag: 1 in 256)."""
    ours = f".same.png.{os.getpid():06x}"
    monkeypatch.setattr(E.secrets, "token_hex", lambda n: "cd" if (tmp_path / f"{ours}ab.part").exists() else "ab")
    placed, go, move = threading.Event(), threading.Event(), E.move_into_place

    def move_and_wait(tmp, path, overwrite):
        move(tmp, path, overwrite)
        if path.name == "same.png":
            placed.set()
            assert go.wait(10)

    monkeypatch.setattr(E, "move_into_place", move_and_wait)
    write = {"save_image": lambda: E.save_image(raster(), tmp_path / "same.png", overwrite=True),
             "export": lambda: E.export(raster(), poster(("png",)), tmp_path, "same", overwrite=True)}[writer]
    with ThreadPoolExecutor(1) as pool:
        writing = pool.submit(write)
        assert placed.wait(10)
        other = E.write_temp(tmp_path, "same.png", lambda f: f.write(b"another thread's"))
        go.set()
        writing.result(10)
    assert other.name == f"{ours}ab.part" and other.read_bytes() == b"another thread's"


def test_extra_pictures_are_written_in_every_format_at_their_own_dpi(tmp_path):
    left = raster(40, 30, seed=1)
    paths = E.export(raster(), poster(), tmp_path, "span",
                     extra=[E.Picture(left, "span-left", 109, metadata={"monitor": "left"})])
    assert [p.name for p in paths] == ["span.png", "span.jpg", "span.tif", "span.pdf",
                                       "span-left.png", "span-left.jpg", "span-left.tif", "span-left.pdf"]
    for path in paths[4:7]:
        with Image.open(path) as im:
            assert im.size == (40, 30) and tuple(round(v) for v in im.info["dpi"]) == (109, 109)
            assert im.info["icc_profile"] == E.srgb_profile()
    with Image.open(paths[4]) as im:
        assert im.text == {"monitor": "left"} and im.tobytes() == left.tobytes()
    data = paths[7].read_bytes()
    assert box(data, "MediaBox") == pytest.approx([0, 0, 40 / 109 * 72, 30 / 109 * 72])  # 26.4220 x 19.8165 pt
    assert box(data, "TrimBox") == box(data, "MediaBox")  # no bleed


def test_an_existing_extra_file_stops_the_export_before_writing(tmp_path):
    (tmp_path / "span-left.jpg").write_bytes(b"mine")
    with pytest.raises(InputError, match="span-left.jpg: file exists"):
        E.export(raster(), poster(("png", "jpeg")), tmp_path, "span", extra=[E.Picture(raster(4, 3), "span-left", 96)])
    assert [p.name for p in tmp_path.iterdir()] == ["span-left.jpg"]


# -- output names (studio.render) ---------------------------------------------------------------------------------

def span_layout(name="{layout}-{monitor}", monitors=("left", "right"), per_monitor=True):
    span = Span(tuple(Monitor(m, 2560, 1440, 597, 336) for m in monitors), (18,) * (len(monitors) - 1))
    return Layout("/layouts/span-2.yaml", Canvas(100, 20), (FillLayer((0, 0, 0, 255)),), span=span,
                  output=Output(formats=("png", "jpeg"), name=name, per_monitor=per_monitor))


@pytest.mark.parametrize("name,stems", [
    ("{layout}-{monitor}", ["span-2-span", "span-2-left", "span-2-right"]),  # not 'span-2-'
    ("{layout}", ["span-2", "span-2-left", "span-2-right"]),
    ("{monitor}", ["span", "left", "right"]),
])
def test_output_stems_of_a_span(name, stems):
    assert output_stems(span_layout(name)) == stems
    assert output_stems(span_layout(name), stem="batch/item-1") == ["batch/item-1", "batch/item-1-left",
                                                                     "batch/item-1-right"]
    assert output_stems(span_layout(name, per_monitor=False)) == stems[:1]


def test_output_paths_are_every_stem_in_every_format(tmp_path):
    assert [p.name for p in output_paths(span_layout(), tmp_path)] == [
        "span-2-span.png", "span-2-span.jpg", "span-2-left.png", "span-2-left.jpg", "span-2-right.png",
        "span-2-right.jpg"]


def test_output_sizes_are_the_canvas_then_each_monitor():
    layout = replace(span_layout(), span=replace(span_layout().span, monitors=(
        Monitor("left", 2560, 1440, 597, 336), Monitor("right", 1920, 1080, 527, 296))))
    assert output_sizes(layout) == [(100, 20), (2560, 1440), (1920, 1080)]
    assert output_sizes(span_layout(per_monitor=False)) == [(100, 20)]
    assert output_sizes(poster()) == [(112, 72)]  # with the bleed


def test_a_monitor_named_span_clashes_with_the_whole_span():
    with pytest.raises(InputError) as e:
        output_stems(span_layout(monitors=("span", "right")))
    assert str(e.value) == ("/layouts/span-2.yaml: output.name '{layout}-{monitor}' gives monitor 'span' the file name "
                            "'span-2-span', which is the whole span's 'span-2-span' ({monitor} is 'span' there)")


def test_a_span_file_has_the_density_its_canvas_is_drawn_at():
    layout = span_layout(monitors=("left", "laptop"))
    layout = replace(layout, canvas=replace(layout.canvas, dpi=300),  # dpi sizes pt lengths, not the span
                     span=replace(layout.span, monitors=(layout.span.monitors[0],
                                                         Monitor("laptop", 2880, 1800, 301.6, 188.5))))
    assert file_dpi(layout) == 243 and file_dpi(poster()) == 300


def test_monitor_dpi_is_its_pixel_density():
    assert monitor_dpi(Monitor("left", 2560, 1440, 597, 336)) == 109  # 108.9 px per inch
    assert monitor_dpi(Monitor("laptop", 2880, 1800, 301.6, 188.5)) == 243  # 242.6


def test_an_escaped_monitor_field_is_literal_text():
    assert output_stems(span_layout("{layout}-{{monitor}}")) == ["span-2-{monitor}", "span-2-{monitor}-left",
                                                                  "span-2-{monitor}-right"]


def test_proof_warns_about_clipped_text(tmp_path, capsys):
    layout = Layout("<string>", Canvas(200, 80), (TextLayer("Grand Opening", size=30, wrap=False, name="title",
                                                            region=Region("px", 20, 10, 60, 30)),))
    path = proof(layout, tmp_path / "proof.png")
    with Image.open(path) as im:
        assert im.size == (200, 80)
    assert capsys.readouterr().err == ("studio: warning: <string>: layers[0] (title): text overflows its region "
                                       "(right clipped)\n")


def test_an_output_whose_folder_is_a_file_says_so(tmp_path):
    """A file, nothing, and symbolic links that loop or lead nowhere, each said as what it is (a link was 'no such
    folder')."""
    (tmp_path / "cover.png").write_bytes(b"")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for parent, what in [("cover.png", "is a file, not a folder"), ("nowhere", "no such folder"),
                         ("loop", "is a symbolic link loop"),
                         ("dangling", f"is a broken symbolic link (to {tmp_path / 'nowhere'})")]:
        with pytest.raises(InputError) as info:
            E.check_free(tmp_path / parent / "a.png", overwrite=False)
        assert str(info.value) == f"{tmp_path / parent}: {what}"


def test_a_jpeg_proof_has_the_layouts_jpeg_quality(tmp_path):
    def tables(quality):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, "JPEG", quality=quality, subsampling=0)
        return Image.open(buf).quantization

    layout = poster()  # jpeg_quality=90
    with Image.open(proof(layout, tmp_path / "proof.jpg")) as im:
        assert im.quantization == tables(90) != tables(95)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="Linux's /proc")
def test_a_folder_that_creates_no_file_is_found_before_any_work():
    """/proc passes access(W_OK) for root (mode bits alone) yet creates no file: an output there failed after the
    whole generation."""
    from studio.export import check_target

    with pytest.raises(InputError, match=r"^/proc: cannot write in this folder \("):
        check_target(Path("/proc/x.png"), overwrite=False)


def test_read_pixels_reads_back_every_format_but_jpeg_exactly(tmp_path):
    """`read_pixels` (rerender compares files with it): the raster of each file export wrote, a PDF's included;
    None for a PDF of another program's or a file that is no image."""
    image = raster()
    for path in E.export(image, poster(), tmp_path, "poster"):
        pixels = E.read_pixels(path)
        if path.suffix == ".jpg":
            assert pixels.shape == (72, 112, 3) and np.abs(pixels.astype(int) - np.asarray(image)).mean() < 40
        else:
            assert np.array_equal(pixels, np.asarray(image)), path.name
    (tmp_path / "other.pdf").write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n")
    (tmp_path / "notes.png").write_text("not an image")
    assert E.read_pixels(tmp_path / "other.pdf") is None and E.read_pixels(tmp_path / "notes.png") is None
