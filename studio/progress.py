"""Progress bars for the command line: one tqdm bar on stderr per (generation, phase).

The pipeline reports progress(phase, done, total) for its phases, "text", "denoise" and "decode"
(`PixArtSigmaPipeline.__call__`), and `render` adds a label naming the layer, then its own phases "compose"
and "export". `PhaseBars` turns those calls into bars: "encoding prompt" (one unit), "denoising" (steps),
"decoding" (tile passes when tiled, images otherwise), "composing", "writing files" (files), "loading model"
(bytes of weights read), and for a batch "encoding prompts ahead", each opened when its phase starts and
closed when it completes, so a 4K decode that takes minutes shows where it is like the denoising does.
"""

import sys

PHASES = {"text": ("encoding prompt", "prompt"), "denoise": ("denoising", "step"), "decode": ("decoding", "step"),
          "compose": ("composing", "canvas"), "export": ("writing files", "file"),
          "ahead": ("encoding prompts ahead", "prompt"), "load": ("loading model", "B")}


class PhaseBars:
    """progress(label, phase, done, total) -> bars. quiet: no bars at all. Bars go to `file` (stderr) at
    `position` (below a batch's overall bar) and stay on screen unless `leave` is False."""

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
            from tqdm import tqdm
            name, unit = PHASES.get(phase, (phase, "it"))
            desc = ": ".join(part for part in (self.prefix, label, name) if part)
            bar = self.bars[label, phase] = tqdm(total=total, desc=desc, unit=unit, file=self.file,
                                                 position=self.position, leave=self.leave,
                                                 unit_scale=unit == "B", unit_divisor=1024 if unit == "B" else 1000)
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
