"""Progress bars for the command line: one tqdm bar on stderr per (generation, phase).

The pipeline reports progress(phase, done, total) for its phases, "text", "denoise" and "decode"
(`PixArtSigmaPipeline.__call__`), and `render` adds a label naming the layer, then its own phases "compose"
and "export". `PhaseBars` turns those calls into bars: "encoding prompt" (one unit), "denoising" (steps),
"decoding" (tile passes when tiled, images otherwise), "composing", "writing files" (files), "loading model"
(bytes of weights read), and for a batch "encoding prompts ahead", each opened when its phase starts and
closed when it completes, so a 4K decode that takes minutes shows where it is like the denoising does.
On a terminal a description too long to leave the numbers in view is cut in its middle (`fitted`); on a file
that is not a terminal (a log) the bars are plain lines instead (`LineBar`): no escape sequences.
What else goes to the terminal while bars are drawn (notes, warnings, a batch's lines) goes above them
(`write_line`, `above_bars`): printed among them, a line would be glued onto a bar and then drawn over.
"""

import os
import sys
import time
from contextlib import contextmanager

from studio.memory import format_bytes

LINE_SECONDS = 10.0  # a log's progress lines between a phase's first and last: at most one per 10 s ...
LINE_STEP = 0.1  # ... and per 10% of the phase
NUMBERS = 60  # a terminal's columns a bar keeps for ': 100%|', a bar and '| 1.21G/4.47G [1:23:20<15:45:00, 108MB/s]'
SHORTEST = 17  # columns a shortened part of a bar's description keeps: 'a-red-f...w/512-1'
ROWS = 24  # a terminal's rows when neither it nor $LINES says (a VT100's)

PHASES = {"text": ("encoding prompt", "prompt"), "denoise": ("denoising", "step"), "decode": ("decoding", "step"),
          "compose": ("composing", "canvas"), "export": ("writing files", "file"),
          "ahead": ("encoding prompts ahead", "prompt"), "load": ("loading model", "B")}


def progress_bar(total: int, desc: str, unit: str, file, position: int | None = None, leave: bool = True):
    """A tqdm bar on `file` when it is a terminal, its description `fitted` to leave the numbers room (tqdm cuts
    a line at the terminal's width), else a `LineBar`."""
    if not getattr(file, "isatty", lambda: False)():
        return LineBar(total, desc, unit, file)
    from tqdm import tqdm
    width = terminal_width(file)
    if width is not None:
        desc = fitted(desc, width - NUMBERS)
    # nrows given: tqdm hides the bars at or below the screen's last row, which it takes from the terminal: on one
    # that says it has 0 rows (`script`, some CI ptys), -1, hiding them all. Less one as tqdm counts (the cursor's).
    return tqdm(total=total, desc=desc, unit=unit, file=file, position=position, leave=leave, unit_scale=unit == "B",
                unit_divisor=1024 if unit == "B" else 1000, ncols=width, nrows=(terminal_height(file) or ROWS) - 1)


def terminal_width(file) -> int | None:
    """Columns of the terminal `file` writes to, else $COLUMNS's, else None (unknown)."""
    return _terminal_size(file, "columns", "COLUMNS")


def terminal_height(file) -> int | None:
    """Rows of the terminal `file` writes to, else $LINES's, else None (unknown)."""
    return _terminal_size(file, "lines", "LINES")


def _terminal_size(file, dimension: str, variable: str) -> int | None:
    """`dimension` ("columns" or "lines") of the terminal `file` writes to, else the environment `variable`'s, else
    None."""
    try:
        size = getattr(os.get_terminal_size(file.fileno()), dimension)
    except (AttributeError, OSError, ValueError):  # not a file descriptor (io.UnsupportedOperation), or closed
        size = 0
    if size <= 0:  # or a terminal that does not say its size (0x0)
        size = int(os.environ[variable]) if os.environ.get(variable, "").isdigit() else 0
    return size or None


def fitted(desc: str, width: int) -> str:
    """A bar's description 'item: layer 0 (1/2) direct 512x512: denoising' in `width` columns: its parts but the
    last (the phase, kept whole) cut in their middle, first to last, none below SHORTEST columns
    ('a-red-f...w/512-1: layer 0 (1/2) direct 512x512: denoising'); longer when that is not enough."""
    from tqdm.utils import disp_len, disp_trim

    parts = desc.split(": ")
    for i, part in enumerate(parts[:-1]):
        over = disp_len(": ".join(parts)) - width
        if over <= 0:
            break
        keep = max(disp_len(part) - over - 3, SHORTEST - 3)  # columns of the part around its '...'
        if keep < disp_len(part) - 3:
            tail = keep // 2
            parts[i] = disp_trim(part, keep - tail) + "..." + disp_trim(part[::-1], tail)[::-1]
    return ": ".join(parts)


@contextmanager
def above_bars(file=None):
    """What is written to `file` (stderr) within goes above the progress bars drawn on its terminal: they are
    cleared before and drawn again below it after. A signal handler must not use it (it takes tqdm's lock)."""
    file = sys.stderr if file is None else file
    if "tqdm" not in sys.modules:  # no bar was ever drawn
        yield
        return
    from tqdm import tqdm
    with tqdm.external_write_mode(file=file):
        yield


def write_line(text: str, file=None) -> None:
    """Print `text` on `file` (stderr), above the progress bars drawn there (`above_bars`)."""
    file = sys.stderr if file is None else file
    with above_bars(file):
        print(text, file=file, flush=True)


def warnings_above_bars(show):
    """A warnings.showwarning that calls `show` (the one it replaces) above the progress bars (`above_bars`)."""
    def showwarning(message, category, filename, lineno, file=None, line=None):
        with above_bars(file):
            show(message, category, filename, lineno, file, line)
    return showwarning


class LineBar:
    """A bar for a file that is not a terminal (a log): a plain line 'desc: done/total (p%, s s)' when it is
    opened (its phase starts: 0/total) and when done reaches total, and between them at most one per LINE_SECONDS
    and per LINE_STEP of total, those with the time left at the rate so far: 'desc: 4/20 (20%, 8.0 s, ~32 s
    left)'. Has what studio uses of a tqdm bar: n, update, close."""

    def __init__(self, total: int, desc: str, unit: str, file):
        self.total, self.desc, self.unit, self.file = total, desc, unit, file
        self.n, self.start = 0, time.monotonic()
        self.said: tuple[int, float]  # (n, time) of the last line
        self._say(self.start)  # as tqdm draws 0/total when opened: a phase's first line comes when it starts

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.monotonic()
        n, at = self.said
        if self.n >= self.total > n or self.n > n and self.n - n >= LINE_STEP * self.total and now - at >= LINE_SECONDS:
            self._say(now)

    def _say(self, now: float) -> None:
        self.said = self.n, now
        count = (f"{format_bytes(self.n)}/{format_bytes(self.total)}" if self.unit == "B"
                 else f"{self.n}/{self.total}")
        percent = 100 * self.n // self.total if self.total else 100
        seconds = now - self.start
        left = f", ~{seconds * (self.total - self.n) / self.n:.0f} s left" if 0 < self.n < self.total else ""
        print(f"{self.desc}: {count} ({percent}%, {seconds:.1f} s{left})", file=self.file, flush=True)

    def close(self) -> None:
        pass


class PhaseBars:
    """progress(label, phase, done, total) -> bars (`progress_bar`). quiet: no bars at all. Bars go to `file`
    (stderr) at `position` (below a batch's overall bar) and stay on screen unless `leave` is False."""

    def __init__(self, quiet: bool = False, prefix: str = "", file=None, position: int | None = None,
                 leave: bool = True):
        self.quiet, self.prefix, self.position, self.leave = quiet, prefix, position, leave
        self.file = sys.stderr if file is None else file
        self.bars: dict = {}

    def __call__(self, label: str, phase: str, done: int, total: int) -> None:
        if self.quiet:
            return
        bar = self.bars.get((label, phase))
        if bar is None:
            name, unit = PHASES.get(phase, (phase, "it"))
            desc = ": ".join(part for part in (self.prefix, label, name) if part)
            bar = self.bars[label, phase] = progress_bar(total, desc, unit, self.file, self.position, self.leave)
        bar.update(done - bar.n)
        if done >= total:
            self.close(label, phase)

    def close(self, label: str | None = None, phase: str | None = None) -> None:
        """Close one bar, or all of them when no label is given (an item that failed half way)."""
        keys = list(self.bars) if label is None else [(label, phase)]
        for key in keys:
            bar = self.bars.pop(key, None)
            if bar is not None:
                bar.close()
