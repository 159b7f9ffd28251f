"""Progress bars for the command line: one tqdm bar on stderr per (generation, phase).

The pipeline reports progress(phase, done, total) for its phases, "text", "denoise" and "decode"
(`PixArtSigmaPipeline.__call__`), and `render` adds a label naming the layer, then its own phases "compose"
and "export". `PhaseBars` turns those calls into bars: "encoding prompt" (one unit), "denoising" (steps),
"decoding" (tile passes when tiled, images otherwise), "composing", "writing files" (files), "loading model"
(bytes of weights read), and for a batch "encoding prompts ahead", each opened when its phase starts and
closed when it completes, so a 4K decode that takes minutes shows where it is like the denoising does.
On a file that is not a terminal (a log) the bars are plain lines instead (`LineBar`): no escape sequences.
"""

import sys
import time

from studio.memory import format_bytes

LINE_SECONDS = 10.0  # a log's progress lines between a phase's first and last: at most one per 10 s ...
LINE_STEP = 0.1  # ... and per 10% of the phase

PHASES = {"text": ("encoding prompt", "prompt"), "denoise": ("denoising", "step"), "decode": ("decoding", "step"),
          "compose": ("composing", "canvas"), "export": ("writing files", "file"),
          "ahead": ("encoding prompts ahead", "prompt"), "load": ("loading model", "B")}


def progress_bar(total: int, desc: str, unit: str, file, position: int | None = None, leave: bool = True):
    """A tqdm bar on `file` when it is a terminal, else a `LineBar`."""
    if not getattr(file, "isatty", lambda: False)():
        return LineBar(total, desc, unit, file)
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, file=file, position=position, leave=leave, unit_scale=unit == "B",
                unit_divisor=1024 if unit == "B" else 1000)


class LineBar:
    """A bar for a file that is not a terminal (a log): a plain line 'desc: done/total (p%, s s)' when it is
    opened (its phase starts: 0/total) and when done reaches total, and between them at most one per LINE_SECONDS
    and per LINE_STEP of total. Has what studio uses of a tqdm bar: n, update, close, write."""

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
        print(f"{self.desc}: {count} ({percent}%, {now - self.start:.1f} s)", file=self.file, flush=True)

    def close(self) -> None:
        pass

    def write(self, text: str, file=None) -> None:
        print(text, file=file or self.file, flush=True)


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
