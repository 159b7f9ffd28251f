"""Time a long text under shrink_to_fit: `studio proof` of a full-HD layout holding one text layer of N words,
and line breaking alone (`compose.wrap`) beside the whole-line greedy loop it replaced, on the same text.

Usage: python benchmarks/text_fit.py [--words 2000 8000 32000] [--wrap-words 8000]

The words are drawn from a fixed list with a fixed seed; the font is DejaVu Sans when it is found, else
Pillow's bundled one. `proof` lays the text out at every size the shrink search tries (and again to draw it
and to check it for warnings); `wrap` is timed at one size, 4 px (over a hundred words a line, as the shrink
search meets them), in a 1800 px box.
"""

import argparse
import random
import tempfile
import time
from pathlib import Path

WORDS = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et "
         "dolore magna aliqua wave yacht office AVAILABLE fly").split()


def text(n: int) -> str:
    rng = random.Random(0)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def whole_line_wrap(paragraph: str, font, width: float, spacing: float) -> list[str]:
    """The greedy loop before: every candidate line measured whole (quadratic in a line's length)."""
    from studio.compose import GAP_WORD, line_width, pieces

    lines, line = [], ""
    for gap, word in GAP_WORD.findall(paragraph):
        for n, piece in enumerate(pieces(word)):
            candidate = line + ("" if n else gap) + piece
            if line and line_width(candidate, font, spacing) > width:
                lines.append(line)
                line = piece
            else:
                line = candidate
    return lines + [line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, nargs="+", default=[2000, 8000, 32000])
    parser.add_argument("--wrap-words", type=int, default=8000)
    args = parser.parse_args()

    from studio import fonts
    from studio.compose import wrap
    from studio.layout import load_layout
    from studio.render import proof

    font = "DejaVu Sans" if fonts.find_font("DejaVu Sans") else None
    print(f"font: {font or 'Pillow default'}")
    print(f"{'words':>7}  {'proof s':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.words:
            path = Path(tmp) / f"t{n}.yaml"
            path.write_text(f"canvas: {{preset: fhd}}\nlayers:\n  - text: {{shrink_to_fit: true, size: 96px, "
                            f"{'font: ' + font + ', ' if font else ''}text: \"{text(n)}\"}}\n")
            layout = load_layout(path)
            t0 = time.perf_counter()
            proof(layout, Path(tmp) / f"t{n}.png", overwrite=True)
            print(f"{n:>7}  {time.perf_counter() - t0:>8.2f}")

    sample, f = text(args.wrap_words), fonts.load_font(font, 4)
    t0 = time.perf_counter()
    ours = wrap(sample, f, 1800, 0)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    before = whole_line_wrap(sample, f, 1800, 0)
    t_before = time.perf_counter() - t0
    assert ours == before, "the line breaks differ"
    print(f"wrap of {args.wrap_words} words at 4 px: {t_ours:.3f} s; whole-line greedy {t_before:.3f} s; "
          f"ratio {t_ours / t_before:.3f} ({len(ours)} lines, identical)")


if __name__ == "__main__":
    main()
