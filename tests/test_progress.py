"""progress: a terminal's bars keep their numbers in view, and lines written while they are drawn go above them."""

import io
import os
import re
import struct
import sys
import warnings

import pytest

from studio.progress import PhaseBars, fitted, terminal_width, warnings_above_bars, write_line

ITEM = "a-red-fox-in-the-snow-with-a-very-long-name-indeed/512-1"


class Terminal(io.StringIO):
    """What tqdm draws on a terminal, kept as text."""

    def isatty(self):
        return True


@pytest.mark.parametrize("desc, width, shown", [
    ("batch", 10, "batch"),
    (f"{ITEM}: layer 0 (1/2) direct 512x512: denoising", 100,
     f"{ITEM}: layer 0 (1/2) direct 512x512: denoising"),
    # the item's name first, in its middle: both ends tell items apart ('.../1', '.../2')
    (f"{ITEM}: layer 0 (1/2) direct 512x512: denoising", 78,
     "a-red-fox-in-the-...name-indeed/512-1: layer 0 (1/2) direct 512x512: denoising"),
    (f"{ITEM}: layer 0 (1/2) direct 512x512: denoising", 58,
     "a-red-f...d/512-1: layer 0 (1/2) direct 512x512: denoising"),
    # then the layer's label; the phase stays whole, even when that is not enough
    (f"{ITEM}: layer 0 (1/2) direct 512x512: denoising", 38, "a-red-f...d/512-1: layer 0...512x512: denoising"),
    (f"{ITEM}: layer 0 (1/2) direct 512x512: denoising", 0, "a-red-f...d/512-1: layer 0...512x512: denoising"),
    ("/models/" + "x" * 60 + "/tiny: loading model", 40, "/models/xxx...xxxxxx/tiny: loading model"),  # 40 columns
    ("风景" * 20 + ": denoising", 30, "风景风景...风景风景: denoising"),  # wide characters: two columns each
])
def test_a_long_description_is_cut_in_its_middle(desc, width, shown):
    assert fitted(desc, width) == shown


def test_a_bar_keeps_its_numbers_in_view_on_a_narrow_terminal(monkeypatch):
    """tqdm cuts a line at the terminal's width, from the right: a long description would push the count, the
    percentage and the time left off the screen."""
    monkeypatch.setenv("COLUMNS", "100")  # a StringIO has no terminal size
    shown = Terminal()
    assert terminal_width(shown) == 100
    bars = PhaseBars(prefix=ITEM, file=shown)
    for done in range(4):
        bars("layer 0 (1/2) direct 512x512", "denoise", done, 3)
    last = shown.getvalue().rstrip("\n").rsplit("\r", 1)[-1]
    assert last.startswith("a-red-f...d/512-1: layer 0...512x512: denoising: 100%|")
    assert "| 3/3 [00:00<00:00, " in last and len(last) <= 100


def test_a_line_written_while_bars_are_drawn_goes_above_them():
    """The bars are cleared, the line written, the bars drawn again below it: printed among them, it would be
    glued onto a bar and then drawn over."""
    shown = Terminal()
    bars = PhaseBars(file=shown)
    bars("", "denoise", 0, 3)
    bars("", "denoise", 1, 3)
    before = len(shown.getvalue())
    write_line("note: a tiny checkpoint", shown)
    assert re.fullmatch(r"\r +\rnote: a tiny checkpoint\n\rdenoising:  33%\|[^\r\n]*\| 1/3 \[[^\r\n]*\]",
                        shown.getvalue()[before:])
    bars.close()

    log = io.StringIO()  # no bars: the line alone
    write_line("note: a tiny checkpoint", log)
    assert log.getvalue() == "note: a tiny checkpoint\n"


def test_a_warning_shown_while_bars_are_drawn_goes_above_them(monkeypatch):
    """`warnings_above_bars` wraps the hook it replaces (pytest's recorder, in a test; Python's printer, in
    `studio`): the bars are cleared around it."""
    shown = Terminal()
    monkeypatch.setattr(sys, "stderr", shown)
    bars = PhaseBars()
    bars("", "text", 0, 1)
    before = len(shown.getvalue())
    said = []

    def show(message, category, filename, lineno, file=None, line=None):
        said.append((str(message), category, filename, lineno))
        (file or sys.stderr).write(f"studio: warning: {message}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = warnings_above_bars(show)
        warnings.warn_explicit("a prompt is cut", UserWarning, "x.py", 7)
    assert said == [("a prompt is cut", UserWarning, "x.py", 7)]
    assert re.fullmatch(r"\r +\rstudio: warning: a prompt is cut\n\rencoding prompt:   0%\|[^\r\n]*",
                        shown.getvalue()[before:])
    bars.close()


def test_bars_show_on_a_terminal_that_says_it_has_no_rows(monkeypatch):
    """A terminal that reports 0 rows (`script`, some CI ptys): tqdm takes the screen to have -1 rows and hides
    every bar at or beyond it, all of them; the bars must still be drawn."""
    pty, fcntl, termios = (pytest.importorskip(name) for name in ("pty", "fcntl", "termios"))
    reader, writer = pty.openpty()
    fcntl.ioctl(writer, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 80, 0, 0))  # rows, columns, (pixels)
    monkeypatch.delenv("LINES", raising=False)
    with os.fdopen(writer, "w") as shown:
        monkeypatch.setattr(sys, "stderr", shown)  # tqdm asks the terminal its size only for stderr and stdout
        bars = PhaseBars()
        for done in range(4):
            bars("", "denoise", done, 3)
        shown.flush()
        drawn = os.read(reader, 65536).decode()
    os.close(reader)
    assert "denoising: 100%|" in drawn and "| 3/3 [" in drawn
