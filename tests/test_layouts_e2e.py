"""Every file in layouts/ plans, proofs and renders on the tiny checkpoint; examples/ run too."""

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from studio.cli import main
from studio.layout import load_layout

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
    out = tmp_path / "out"
    out.mkdir()
    assert main(["render", str(path), "-o", str(out), "--model", str(tiny_dir), "--set", "steps=2", "--quiet"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == len(layout.output.formats) + (len(layout.span.monitors) if layout.span else 0)
    main_png = next(p for p in out.iterdir() if p.suffix == ".png" and (not layout.span or "-" in p.stem))
    with Image.open(main_png) as image:
        if not layout.span:  # the full canvas, bleed included, at full size
            assert image.size == (layout.canvas.full_width, layout.canvas.full_height)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


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
