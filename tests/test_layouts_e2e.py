"""Every file in layouts/ plans, proofs and renders on the tiny checkpoint; examples/ run too."""

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from studio.cli import main
from studio.compose import text_tile
from studio.geometry import monitor_dpi, resolve
from studio.layout import load_layout
from studio.render import output_paths
from studio.spec import Region, TextLayer

ROOT = Path(__file__).resolve().parent.parent
LAYOUTS = sorted((ROOT / "layouts").glob("*.yaml"))


def test_there_are_the_six_kinds_of_example():
    names = {p.stem for p in LAYOUTS}
    assert {"wallpaper-4k", "ultrawide", "span-3-monitors", "phone-wallpaper", "poster-a2", "triptych-4k"} <= names


@pytest.mark.parametrize("path", LAYOUTS, ids=lambda p: p.stem)
def test_layout_plans_proofs_and_renders(path, tiny_dir, tmp_path, capsys):
    layout = load_layout(path)
    assert main(["plan", str(path), "--model", str(tiny_dir), "--memory-budget", "6GiB"]) == 0
    assert "canvas" in capsys.readouterr().out
    assert main(["proof", str(path), "-o", str(tmp_path / "proof.png"), "--model", str(tiny_dir)]) == 0
    with Image.open(tmp_path / "proof.png") as proof:
        assert proof.size == (layout.canvas.full_width, layout.canvas.full_height)
    assert "warning" not in capsys.readouterr().err  # no text leaves its region or enters the safe margin
    out = tmp_path / "out" / "posters"  # render creates the folder
    assert main(["render", str(path), "-o", str(out), "--model", str(tiny_dir), "--set", "steps=2", "--quiet"]) == 0
    expected = output_paths(layout, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in expected)  # no temporary files left
    monitors = layout.span.monitors if layout.span else ()
    sizes = [((layout.canvas.full_width, layout.canvas.full_height), layout.canvas.dpi)]  # bleed included
    sizes += [((m.width, m.height), monitor_dpi(m)) for m in monitors]
    formats = layout.output.formats
    assert len(expected) == len(sizes) * len(formats)
    for n, file in enumerate(expected):
        (w, h), dpi = sizes[n // len(formats)]
        if file.suffix == ".pdf":
            x0, y0, x1, y1 = map(float, re.search(rb"/BleedBox \[([^\]]*)\]", file.read_bytes()).group(1).split())
            assert [x1 - x0, y1 - y0] == pytest.approx([w * 72 / dpi, h * 72 / dpi], abs=1e-3)  # the raster
            continue
        with Image.open(file) as image:
            assert image.size == (w, h) and round(image.info["dpi"][0]) == dpi, file.name
    if layout.span:
        assert [p.stem for p in expected[::len(formats)]] == ["span-3-monitors-span", "span-3-monitors-left",
                                                              "span-3-monitors-center", "span-3-monitors-right"]
        assert sizes[1:] == [((2560, 1440), 109), ((3840, 2160), 163), ((2560, 1440), 109)]


@pytest.mark.parametrize("path", LAYOUTS, ids=lambda p: p.stem)
def test_text_ink_stays_inside_its_region_and_the_safe_area(path):
    layout = load_layout(path)
    safe = resolve(Region("safe"), layout.canvas, layout.grids)
    for layer in layout.layers:
        if not isinstance(layer, TextLayer):
            continue
        box = resolve(layer.region, layout.canvas, layout.grids)
        tile, (x, y) = text_tile(replace(layer, shadow=None), box, path.parent)  # fill and stroke
        left, top, right, bottom = tile.getchannel("A").getbbox()
        ink = (x + left, y + top, x + right, y + bottom)
        for area in (box, safe):
            assert area.x <= ink[0] and area.y <= ink[1] and ink[2] <= area.right and ink[3] <= area.bottom, (
                layer.text, ink, area)


@pytest.mark.parametrize("script,args", [
    ("generate_one.py", ["--size", "256x256", "--steps", "2", "-o", "{tmp}/one.png"]),
    ("layout_in_code.py", ["--steps", "2", "-o", "{tmp}/out"]),
    ("plan_memory.py", [str(ROOT / "layouts" / "poster-a2.yaml"), "--budget", "4GiB"]),
])
def test_examples_run(script, args, tiny_dir, tmp_path):
    args = [a.format(tmp=tmp_path) for a in args] + ["--model", str(tiny_dir)]
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote" in proc.stdout or "saved" in proc.stdout or "peak" in proc.stdout


def test_a_layouts_prompts_are_encoded_in_one_read_of_t5(tiny_dir, tmp_path, monkeypatch):
    """Three generate layers: every prompt is encoded in one pass over the streamed T5 before the first layer,
    not one per layer, with the same pixels."""
    import numpy as np

    import studio.pipeline
    from studio.models.t5 import StreamedT5Encoder
    from studio.render import render

    (tmp_path / "three.yaml").write_text("""\
canvas: {width: 384, height: 128}
grids: {main: {rows: 1, columns: 3}}
layers:
  - generate: {prompt: a fox, seed: 1, steps: 1, region: {cell: [main, 0, 0]}}
  - generate: {prompt: an owl, negative_prompt: blurry, seed: 2, steps: 1, region: {cell: [main, 0, 1]}}
  - generate: {prompt: a fox, seed: 3, steps: 1, guidance: 1, region: {cell: [main, 0, 2]}}
""")
    passes, encode_each = [], StreamedT5Encoder.encode_each
    monkeypatch.setattr(StreamedT5Encoder, "encode_each",
                        lambda self, inputs: passes.append(len(inputs)) or encode_each(self, inputs))
    layout = load_layout(tmp_path / "three.yaml")
    [ahead] = render(layout, tmp_path / "ahead", str(tiny_dir), "2GiB")
    assert passes == [4]  # 'a fox', '', 'an owl', 'blurry'; the third layer is unguided: no negative prompt
    passes.clear()
    monkeypatch.setattr(studio.pipeline, "encode_all_ahead", lambda requests, progress=None: 0)
    [each] = render(layout, tmp_path / "each", str(tiny_dir), "2GiB")
    assert passes == [2, 2]  # per layer; the third's 'a fox' is the first's, held for the layout's layers
    with Image.open(ahead) as a, Image.open(each) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
