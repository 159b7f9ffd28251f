"""render: generations on the tiny checkpoint, one model at a time, placed on their regions pixel for pixel."""

import contextlib
import gc
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import studio.pipeline
from studio.errors import CheckpointError, InputError
from studio.layout import load_layout
from studio.plan import plan_layout
from studio.render import render
from studio.tiny import make_tiny

KEY = "0123456789abcdef" * 2  # an art_key: 32 hex digits


@pytest.fixture(scope="module")
def other_tiny(tmp_path_factory):
    """A second tiny pipeline (other random weights), for layouts that use two models."""
    return make_tiny(tmp_path_factory.mktemp("tiny") / "other", sample_size=32, seed=1)


@pytest.fixture
def watched(monkeypatch):
    """Records each pipeline load with the pipelines still alive then, and each generation."""
    loads, calls, alive = [], [], []
    Pipeline = studio.pipeline.PixArtSigmaPipeline
    load, call = Pipeline.from_pretrained.__func__, Pipeline.__call__

    def from_pretrained(cls, path, *args, **kwargs):
        gc.collect()
        loads.append((str(path), [str(ref().model_dir) for ref in alive if ref() is not None]))
        pipe = load(cls, path, *args, **kwargs)
        alive.append(weakref.ref(pipe))
        return pipe

    def generate(self, prompt, **kwargs):
        out = call(self, prompt, **kwargs)
        calls.append((str(self.model_dir), prompt, kwargs["seed"], np.asarray(out.images[0])))
        return out

    monkeypatch.setattr(Pipeline, "from_pretrained", classmethod(from_pretrained))
    monkeypatch.setattr(Pipeline, "__call__", generate)
    return loads, calls


def test_one_model_at_a_time_and_a_shared_generation_made_once(tiny_dir, other_tiny, tmp_path, watched):
    """Layers alternating between two models: each model loads once, its bar named by it, and is released before
    the next loads (the plan's peak counts one model's weights); a layer repeating another's generation takes its
    pixels."""
    loads, calls = watched
    (tmp_path / "two.yaml").write_text(f"""\
canvas: {{width: 96, height: 32}}
grids: {{g: {{rows: 1, columns: 3}}}}
layers:
  - generate: {{prompt: a fox, seed: 1, steps: 1, strategy: direct, model: {tiny_dir}, region: {{cell: [g, 0, 0]}}}}
  - generate: {{prompt: an owl, seed: 2, steps: 1, strategy: direct, model: {other_tiny}, region: {{cell: [g, 0, 1]}}}}
  - generate: {{prompt: a fox, seed: 1, steps: 1, strategy: direct, model: {tiny_dir}, region: {{cell: [g, 0, 2]}}}}
output: {{formats: [png]}}
""")
    reports = []
    [file] = render(load_layout(tmp_path / "two.yaml"), tmp_path / "out", memory_budget="1GiB",
                    progress=lambda *report: reports.append(report))
    assert loads == [(str(tiny_dir), []), (str(other_tiny), [])]
    # each load's bar names its model: two 'loading model' bars alike would not say which is which
    assert [label for label, phase, done, total in reports if phase == "load" and done == total] == [
        str(tiny_dir), str(other_tiny)]
    assert [c[:3] for c in calls] == [(str(tiny_dir), "a fox", 1), (str(other_tiny), "an owl", 2)]
    gc.collect()
    with Image.open(file) as image:
        pixels = np.asarray(image.convert("RGB"))
        generations = json.loads(image.text["generations"])
        source, keys = image.text["layout"], set(image.text)
    assert np.array_equal(pixels[:, :32], calls[0][3]) and np.array_equal(pixels[:, 64:], calls[0][3])
    assert np.array_equal(pixels[:, 32:64], calls[1][3])
    assert [(g["layer"], g["model"], g["prompt"], g["seed"]) for g in generations] == [
        (0, tiny_dir.name, "a fox", 1), (1, other_tiny.name, "an owl", 2), (2, tiny_dir.name, "a fox", 1)]
    assert source == "two.yaml"  # the file's name: files travel, local paths stay
    # not the budget: an automatic one changes with free memory, and the same pixels should make the same file
    assert keys == {"software", "layout", "variables", "generations"}


def test_the_same_pixels_make_the_same_file_whatever_the_budget(tiny_dir, tmp_path, monkeypatch):
    """A render's files don't record the budget or the peak it planned (an automatic budget changes with free
    memory), nor a local model's folders, even given relative to the working folder."""
    monkeypatch.chdir(tiny_dir.parent.parent)
    model = f"{tiny_dir.parent.name}/{tiny_dir.name}"  # a folder, relative to the working folder
    (tmp_path / "card.yaml").write_text("canvas: {width: 64, height: 64}\n"
                                        "layers: [{generate: {prompt: a fox, seed: 1, steps: 1}}]\n")
    layout = load_layout(tmp_path / "card.yaml")
    budgets = ("40MiB", "2GiB")  # the same generation, planned to peak at 40.00 and 40.35 MiB
    assert len({plan_layout(layout, model, budget).peak for budget in budgets}) == 2
    texts = []
    for budget in budgets:
        [file] = render(layout, tmp_path / budget, model=model, memory_budget=budget)
        with Image.open(file) as image:
            texts.append(dict(image.text))
    assert texts[0] == texts[1]
    [generation] = json.loads(texts[0]["generations"])
    assert generation["model"] == tiny_dir.name and "peak_memory_planned" not in generation


def side_by_side(path, fox_model, owl_model) -> None:
    """A 64x32 layout: a fox by `fox_model` on the left, an owl by `owl_model` on the right."""
    path.write_text(f"""\
canvas: {{width: 64, height: 32}}
grids: {{g: {{rows: 1, columns: 2}}}}
layers:
  - generate: {{prompt: a fox, steps: 1, model: {fox_model}, region: {{cell: [g, 0, 0]}}}}
  - generate: {{prompt: an owl, steps: 1, model: {owl_model}, region: {{cell: [g, 0, 1]}}}}
""")


def test_pipelines_the_caller_passes_are_used_and_kept(tiny_dir, other_tiny, tmp_path, watched):
    loads, calls = watched
    side_by_side(tmp_path / "two.yaml", tiny_dir, other_tiny)
    pipe = studio.pipeline.PixArtSigmaPipeline.from_pretrained(str(tiny_dir))
    pipelines = {str(tiny_dir): pipe}
    render(load_layout(tmp_path / "two.yaml"), tmp_path / "out", memory_budget="1GiB", pipelines=pipelines)
    assert [path for path, _ in loads] == [str(tiny_dir), str(other_tiny)]  # ours, then render's for the other
    assert pipelines == {str(tiny_dir): pipe}
    assert [c[0] for c in calls] == [str(tiny_dir), str(other_tiny)]
    # the same folder under another spelling (a Path, a trailing slash) is the same model: not loaded again
    render(load_layout(tmp_path / "two.yaml"), tmp_path / "again", memory_budget="1GiB", pipelines={tiny_dir: pipe})
    render(load_layout(tmp_path / "two.yaml"), tmp_path / "again2", memory_budget="1GiB",
           pipelines={f"{tiny_dir}/": pipe})
    assert [path for path, _ in loads] == [str(tiny_dir), str(other_tiny), str(other_tiny), str(other_tiny)]


def test_a_model_given_as_any_path_like_is_its_path(tiny_dir, tmp_path, watched):
    """model= and pipelines= take any os.PathLike as the path it gives (they read its repr: '<Fspath object at
    0x...>: no such model folder'), as do from_pretrained and studio.plan."""
    from studio.spec import Canvas, GenerateLayer, Layout
    from tests.util import Fspath

    loads, calls = watched
    layout = Layout("card", Canvas(64, 64), (GenerateLayer("a fox", steps=1),))
    assert [job.model for job in plan_layout(layout, Fspath(tiny_dir), "1GiB").jobs] == [str(tiny_dir)]
    render(layout, tmp_path / "out", model=Fspath(tiny_dir), memory_budget="1GiB")
    assert [path for path, _ in loads] == [str(tiny_dir)] and [c[0] for c in calls] == [str(tiny_dir)]
    pipe = studio.pipeline.PixArtSigmaPipeline.from_pretrained(Fspath(tiny_dir))
    assert pipe.model_dir == tiny_dir
    del loads[:]
    render(layout, tmp_path / "again", model=str(tiny_dir), memory_budget="1GiB", pipelines={Fspath(tiny_dir): pipe})
    assert loads == [] and len(calls) == 2  # the pipeline passed, not one loaded
    assert studio.pipeline.plan(Fspath(tiny_dir)).peak == studio.pipeline.plan(str(tiny_dir)).peak
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(tmp_path / 'none'))}: no such model folder"):
        render(layout, tmp_path / "none-out", model=Fspath(tmp_path / "none"))


def test_renders_sharing_a_pipeline_from_two_threads_each_encode_their_prompts_once(tiny_dir, tmp_path, monkeypatch):
    """A render lends the cache of its prompts encoded ahead to its own thread's calls, and leaves the pipeline's
    embedding_cache as it is: a second render starting on the pipeline while the first runs encodes its own prompts
    ahead, and its generations, run after the first render ended, find them (they found the first render's cache
    set on the pipeline, then cleared, and encoded their prompts again)."""
    import threading

    Pipeline = studio.pipeline.PixArtSigmaPipeline
    pipe = Pipeline.from_pretrained(tiny_dir)
    encoded, seen, failed = [], [], []  # (render, prompts encoded in one pass); pipe.embedding_cache at each call
    encode, call, ahead = Pipeline._encode_misses, Pipeline.__call__, studio.pipeline.encode_all_ahead
    second_encoded_ahead, first_done = threading.Event(), threading.Event()

    def render_of(n: int):
        (tmp_path / f"{n}.yaml").write_text(f"""\
canvas: {{width: 64, height: 32}}
grids: {{g: {{rows: 1, columns: 2}}}}
layers:
  - generate: {{prompt: a fox {n}, seed: 1, steps: 1, region: {{cell: [g, 0, 0]}}}}
  - generate: {{prompt: an owl {n}, seed: 2, steps: 1, region: {{cell: [g, 0, 1]}}}}
""")
        render(load_layout(tmp_path / f"{n}.yaml"), tmp_path / f"out{n}", str(tiny_dir), "1GiB",
               pipelines={str(tiny_dir): pipe})

    def second_render():
        try:
            render_of(2)
        except BaseException as e:
            failed.append(e)

    second = threading.Thread(target=second_render, name="2")

    def counted(self, misses, *args):
        encoded.append((threading.current_thread().name, len(misses)))
        return encode(self, misses, *args)

    def ahead_then_said(*args, **kwargs):
        n = ahead(*args, **kwargs)
        if threading.current_thread() is second:
            second_encoded_ahead.set()
        return n

    def in_turn(self, *args, **kwargs):  # the second render's generations wait for the first render to end
        seen.append(self.embedding_cache)
        if threading.current_thread() is second:
            first_done.wait(60)
        elif second.ident is None:  # the first render's first generation: the second starts and encodes ahead
            second.start()
            assert second_encoded_ahead.wait(60)
        return call(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "_encode_misses", counted)
    monkeypatch.setattr(Pipeline, "__call__", in_turn)
    monkeypatch.setattr(studio.pipeline, "encode_all_ahead", ahead_then_said)
    threading.current_thread().name, name = "1", threading.current_thread().name
    try:
        render_of(1)
    finally:
        threading.current_thread().name = name
        first_done.set()
        second.join(60)
    assert not failed and not second.is_alive()
    assert encoded == [("1", 3), ("2", 3)]  # 'a fox n', 'an owl n' and '' ahead, once per render
    assert seen == [None] * 4 and pipe.embedding_cache is None
    [alone] = render(load_layout(tmp_path / "2.yaml"), tmp_path / "alone", str(tiny_dir), "1GiB")
    with Image.open(alone) as a, Image.open(tmp_path / "out2" / "2.png") as b:  # the second's own prompts
        assert np.array_equal(np.asarray(a), np.asarray(b))

@pytest.mark.parametrize("fit", ["cover", "contain"])
def test_a_direct_generation_is_its_regions_pixels(tiny_dir, tmp_path, watched, fit):
    """40x20 px is generated at 48x32 (each side rounded up to 16 px) and the region is its centre, pixel for
    pixel: nothing resampled, no letterbox with `fit: contain` (the red background stays hidden)."""
    _, calls = watched
    (tmp_path / "d.yaml").write_text(f"""\
canvas: {{width: 40, height: 20, background: "#ff0000"}}
layers:
  - generate: {{prompt: a fox, seed: 5, steps: 1, strategy: direct, fit: {fit}}}
""")
    [file] = render(load_layout(tmp_path / "d.yaml"), tmp_path / "out", str(tiny_dir), "1GiB")
    [(_, _, _, generated)] = calls
    assert generated.shape == (32, 48, 3)
    with Image.open(file) as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), generated[6:26, 4:44])


def test_a_model_that_cannot_load_fails_before_the_first_generation(tiny_dir, tmp_path, watched):
    """The second model's weights are missing: found before the first layer is generated, not after."""
    _, calls = watched
    broken = shutil.copytree(tiny_dir, tmp_path / "broken")
    for weights in (broken / "vae").glob("*.safetensors"):
        weights.unlink()
    side_by_side(tmp_path / "b.yaml", tiny_dir, broken)
    with pytest.raises(CheckpointError, match="broken/vae"):
        render(load_layout(tmp_path / "b.yaml"), tmp_path / "out", memory_budget="1GiB")
    assert calls == []
    assert list((tmp_path / "out").iterdir()) == []


def test_a_render_stopped_after_a_layer_takes_its_art_up_again(tiny_dir, other_tiny, tmp_path, watched, monkeypatch):
    """The second model fails (its generation raises, as a kill or a full disk would stop it): the first
    layer's picture is kept in .studio-art, the next render uses it instead of generating again (its model
    is not even loaded), writes the files a render that never failed writes, and leaves no .studio-art."""
    loads, calls = watched
    (tmp_path / "two.yaml").write_text(f"""\
canvas: {{width: 192, height: 64}}
grids: {{g: {{rows: 1, columns: 2}}}}
layers:
  - generate: {{prompt: a fox, seed: 1, steps: 1, model: {tiny_dir}, region: {{cell: [g, 0, 0]}}}}
  - generate: {{prompt: an owl, seed: 2, steps: 1, model: {other_tiny}, region: {{cell: [g, 0, 1]}}}}
output: {{formats: [png]}}
""")
    layout = load_layout(tmp_path / "two.yaml")
    [clean] = render(layout, tmp_path / "clean", None, "1GiB")
    generate = studio.pipeline.PixArtSigmaPipeline.__call__

    def owl_fails(self, prompt, **kwargs):
        if prompt == "an owl":
            raise KeyboardInterrupt
        return generate(self, prompt, **kwargs)
    monkeypatch.setattr(studio.pipeline.PixArtSigmaPipeline, "__call__", owl_fails)
    with pytest.raises(KeyboardInterrupt):
        render(layout, tmp_path / "out", None, "1GiB")
    [kept] = (tmp_path / "out" / ".studio-art").iterdir()
    assert kept.suffix == ".png" and list((tmp_path / "out").iterdir()) == [tmp_path / "out" / ".studio-art"]

    monkeypatch.setattr(studio.pipeline.PixArtSigmaPipeline, "__call__", generate)
    del loads[:], calls[:]
    [again] = render(layout, tmp_path / "out", None, "1GiB")
    assert [c[:2] for c in calls] == [(str(other_tiny), "an owl")]  # the fox came from .studio-art
    assert [path for path, _ in loads] == [str(other_tiny)]
    assert again.read_bytes() == clean.read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["two.png"]


def fox_and_failing_owl(tiny_dir, folder, monkeypatch, failure: list) -> Path:
    """A layout of two generations, the second (an owl, layers[1] 'sky', at line 5) raising failure[0]."""
    (folder / "two.yaml").write_text(f"""\
canvas: {{width: 128, height: 64}}
grids: {{g: {{rows: 1, columns: 2}}}}
layers:
  - generate: {{prompt: a fox, seed: 1, steps: 1, model: {tiny_dir}, region: {{cell: [g, 0, 0]}}}}
  - generate: {{prompt: an owl, seed: 2, steps: 1, model: {tiny_dir}, region: {{cell: [g, 0, 1]}}, name: sky}}
output: {{formats: [png]}}
""")
    generate = studio.pipeline.PixArtSigmaPipeline.__call__

    def owl_fails(self, prompt, **kwargs):
        if prompt == "an owl":
            raise failure[0]
        return generate(self, prompt, **kwargs)
    monkeypatch.setattr(studio.pipeline.PixArtSigmaPipeline, "__call__", owl_fails)
    return folder / "two.yaml"


def test_a_generation_that_fails_is_named_by_its_layer(tiny_dir, tmp_path, monkeypatch):
    """An overflow in one of several generations names that layer, at its line, as a plan's errors do; the
    error keeps its class."""
    from studio.errors import NumericalError

    path = fox_and_failing_owl(tiny_dir, tmp_path, monkeypatch, [NumericalError("denoising overflowed in float32")])
    with pytest.raises(NumericalError) as e:
        render(load_layout(path), tmp_path / "out", None, "1GiB")
    assert str(e.value) == f"{path}:5: layers[1] (sky): denoising overflowed in float32"


def test_running_out_of_memory_in_a_generation_is_named_by_its_layer(tiny_dir, tmp_path, monkeypatch, capsys):
    """MindSpore failing to allocate (a RuntimeError with its C++ trace) in one of several generations: one line
    naming that layer, as the CLI prints it; it said 'out of memory' with no layer. Other RuntimeErrors are not
    caught."""
    from studio import cli

    failure = [RuntimeError("Allocate memory failed, size: 3GB\n- C++ Call Stack: (For framework developers)\n"
                            "MallocForOutputs")]
    path = fox_and_failing_owl(tiny_dir, tmp_path, monkeypatch, failure)
    assert cli.main(["render", str(path), "-o", str(tmp_path / "out"), "--memory-budget", "1GiB"]) == 2
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("studio:")] == [
        f"studio: error: {path}:5: layers[1] (sky): out of memory: MindSpore could not allocate a "
        f"tensor; set a smaller memory budget"]
    failure[0] = RuntimeError("some bug")
    with pytest.raises(RuntimeError, match="^some bug$"):
        render(load_layout(path), tmp_path / "out", None, "1GiB")


def test_kept_art_of_an_edited_layout_goes_when_its_output_is_written(tiny_dir, tmp_path):
    """Pictures kept for an output by earlier renders that stopped (before its layout was edited: other keys)
    and their temporaries go once the output is written; another output's kept pictures stay; a kept picture
    of the wrong size is not used."""
    (tmp_path / "one.yaml").write_text(f"""\
canvas: {{width: 64, height: 64}}
layers:
  - generate: {{prompt: a fox, seed: 1, steps: 1, strategy: direct, model: {tiny_dir}}}
output: {{formats: [png]}}
""")
    layout = load_layout(tmp_path / "one.yaml")
    [clean] = render(layout, tmp_path / "clean", None, "1GiB")
    art = tmp_path / "out" / ".studio-art"
    art.mkdir(parents=True)
    old, temporary, other = art / f"one.{KEY}.png", art / f".one.{KEY[::-1]}.png.ffffff00.part", art / "two.89ab.png"
    for path in (old, temporary, other):
        Image.new("RGB", (8, 8)).save(path, "PNG")
    [done] = render(layout, tmp_path / "out", None, "1GiB")
    assert done.read_bytes() == clean.read_bytes()
    assert sorted(p.name for p in art.iterdir()) == ["two.89ab.png"]

    from PIL.PngImagePlugin import PngInfo
    from studio.render import _kept_art
    assert _kept_art(other, (8, 8)) is None  # no sampler recorded: not one of ours
    info = PngInfo()
    info.add_text("sampler", "ddim")
    Image.new("RGB", (8, 8), "red").save(other, "PNG", pnginfo=info)
    picture, sampler = _kept_art(other, (8, 8))
    assert sampler == "ddim" and picture.getpixel((0, 0)) == (255, 0, 0)
    assert _kept_art(other, (16, 16)) is None  # not the size this generation makes


def test_an_output_drops_only_its_own_kept_art(tmp_path):
    """'poster' written: its pictures and their temporaries go, not those of 'poster.v2' (nor a name that is not
    '<stem>.<key>.png')."""
    from studio.render import _drop_art

    names = [f"poster.{KEY}.png", f".poster.{KEY}.png.ffffff00.part", f"poster.v2.{KEY}.png",
             f".poster.v2.{KEY}.png.ffffff00.part", "poster.v2.png", f"poster.{KEY[:8]}.png"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    _drop_art(tmp_path, "poster")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])


@pytest.mark.parametrize("stem, kept", [
    ("poster", "poster"),
    ("n" * 199, "n" * 199),  # '<stem>.<key>.png' is 236 bytes, export.MAX_NAME_BYTES
    ("n" * 200, "n" * 182 + "~1be63cc0bde6bd45"),  # the first 16 hex digits of its SHA-256
    ("é" * 116, "é" * 91 + "~9102139bdb9ca1e5"),  # 232 bytes: as many whole characters as fit
])
def test_kept_art_of_a_long_output_name_has_a_name_that_fits(tmp_path, stem, kept):
    from studio.render import _drop_art, art_stem

    assert art_stem(stem) == kept
    temporary = f".{kept}.{KEY}.png.ffffff00.part"
    assert len(temporary.encode()) <= 255
    for name in (f"{kept}.{KEY}.png", temporary, f"{art_stem(stem + 'x')}.{KEY}.png"):
        (tmp_path / name).write_bytes(b"")
    _drop_art(tmp_path, stem)
    assert [p.name for p in tmp_path.iterdir()] == [f"{art_stem(stem + 'x')}.{KEY}.png"]  # another output's


def stop_while_writing(layout, out, monkeypatch) -> None:
    """Render `layout` into `out` and stop it as Ctrl-C would while its files are written (its art is kept)."""
    import studio.render

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt
    with monkeypatch.context() as patch:
        patch.setattr(studio.render, "export", stopped)
        with pytest.raises(KeyboardInterrupt):
            render(layout, out, None, "1GiB")


def test_a_long_output_name_keeps_its_art(tiny_dir, tmp_path, watched, monkeypatch, capsys):
    """A 232-byte output name (the longest the loader takes): its art is kept when the export fails, and used."""
    _, calls = watched
    name = "n" * 232
    (tmp_path / "long.yaml").write_text(f"""\
canvas: {{width: 32, height: 32}}
layers:
  - generate: {{prompt: a fox, seed: 1, steps: 1, model: {tiny_dir}}}
output: {{formats: [png], name: {name}}}
""")
    layout = load_layout(tmp_path / "long.yaml")
    stop_while_writing(layout, tmp_path / "out", monkeypatch)
    [kept] = (tmp_path / "out" / ".studio-art").iterdir()
    assert kept.name.startswith("n" * 182 + "~") and "cannot keep" not in capsys.readouterr().err
    [file] = render(layout, tmp_path / "out", None, "1GiB")
    assert len(calls) == 1 and file.name == name + ".png"
    assert [p.name for p in (tmp_path / "out").iterdir()] == [file.name]


def test_art_kept_by_another_build_of_studio_is_generated_again(tiny_dir, tmp_path, watched, monkeypatch, capsys):
    """studio's version stays the same between commits: kept art is keyed by its build (manifest.studio_build),
    so another build generates the layer again, as a rerender of the files it writes would."""
    import studio.manifest

    _, calls = watched
    (tmp_path / "one.yaml").write_text(f"""\
canvas: {{width: 32, height: 32}}
layers:
  - generate: {{prompt: a fox, seed: 1, steps: 1, model: {tiny_dir}}}
output: {{formats: [png]}}
""")
    layout = load_layout(tmp_path / "one.yaml")
    stop_while_writing(layout, tmp_path / "out", monkeypatch)
    assert len(list((tmp_path / "out" / ".studio-art").iterdir())) == 1
    monkeypatch.setattr(studio.manifest, "studio_build", lambda: "another build")
    capsys.readouterr()
    render(layout, tmp_path / "out", None, "1GiB")
    assert len(calls) == 2 and "its art from an earlier render" not in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one.png"]


def test_a_model_file_changed_with_its_size_and_mtime_restored_changes_the_art_key(tiny_dir, tmp_path):
    """A weight file rewritten in place with its old mtime (cp -p, tar x): its ctime tells it changed."""
    from studio.render import model_stamp

    model = shutil.copytree(tiny_dir, tmp_path / "m")
    before = model_stamp(model)
    weights = model / "vae" / "diffusion_pytorch_model.safetensors"
    st, data = weights.stat(), bytearray(weights.read_bytes())
    data[-1] ^= 1
    time.sleep(0.05)  # file times tick coarsely (a few ms): the change lands in a later tick
    weights.write_bytes(data)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (weights.stat().st_size, weights.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    changed = [name for name, stamp in model_stamp(model)["files"].items() if stamp != before["files"][name]]
    assert changed == ["vae/diffusion_pytorch_model.safetensors"]


def test_a_model_folder_is_named_by_the_folder_it_resolves_to(tiny_dir, tmp_path, monkeypatch):
    """'.', '..' and a symbolic link name the model as its folder does (a layout's `model:` resolves it): the
    same pixels make the same file."""
    from studio.render import model_name

    (tmp_path / "mylink").symlink_to(tiny_dir)
    (tmp_path / "card.yaml").write_text("canvas: {width: 32, height: 32}\n"
                                        "layers: [{generate: {prompt: a fox, seed: 1, steps: 1}}]\n")
    layout = load_layout(tmp_path / "card.yaml")
    files = []
    for folder, model in ((tmp_path, "mylink"), (tiny_dir, "."), (tiny_dir / "vae", ".."), (tmp_path, str(tiny_dir))):
        monkeypatch.chdir(folder)
        assert model_name(model) == tiny_dir.name
        [file] = render(layout, tmp_path / f"out{len(files)}", model, "1GiB")
        files.append(file.read_bytes())
    assert files[1:] == files[:1] * 3
    assert model_name("owner/name") == "owner/name"


def test_a_layouts_hub_id_means_the_hub_model_whatever_the_working_folder_holds(tiny_dir, other_tiny, tmp_path,
                                                                               monkeypatch, watched):
    """`model: someone/tiny-pixart` with no such folder beside the layout is the hub id, from any working folder:
    a folder of that name where studio runs doesn't replace it (it did, silently), in the render, its plan and
    the file's metadata."""
    from studio.checkpoint import resolve_model_dir
    from studio.hub import HubId
    from studio.render import model_key, model_name
    from tests.test_checkpoint import _hub_cache

    loads, calls = watched
    snapshot = _hub_cache(tiny_dir, tmp_path / "hub", ["a" * 40], {"main": "a" * 40}) / ("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "layouts").mkdir()
    (tmp_path / "layouts" / "card.yaml").write_text("canvas: {width: 32, height: 32}\nmodel: someone/tiny-pixart\n"
                                                    "layers: [{generate: {prompt: a fox, seed: 1, steps: 1}}]\n")
    shutil.copytree(other_tiny, tmp_path / "work" / "someone" / "tiny-pixart")  # another model, same name
    monkeypatch.chdir(tmp_path / "work")
    layout = load_layout(tmp_path / "layouts" / "card.yaml")
    assert layout.model == "someone/tiny-pixart" and isinstance(str(layout.model), HubId)  # str() keeps it
    assert json.dumps(layout.model) == '"someone/tiny-pixart"'
    assert model_key(layout.model) == model_name(layout.model) == "someone/tiny-pixart"
    assert resolve_model_dir(plan_layout(layout, None, "1GiB").jobs[0].model, weights=False) == snapshot
    [file] = render(layout, tmp_path / "out", memory_budget="1GiB")
    assert [c[0] for c in calls] == [str(snapshot)]
    with Image.open(file) as image:
        assert json.loads(image.text["generations"])[0]["model"] == "someone/tiny-pixart"
    # --model's plain name: the working folder's, as before
    assert resolve_model_dir("someone/tiny-pixart").resolve() == tmp_path / "work" / "someone" / "tiny-pixart"


def test_generations_are_shared_by_model_not_by_its_spelling(tiny_dir, other_tiny, tmp_path, monkeypatch, watched):
    """model='someone/tiny-pixart', the working folder's, and a layer's absolute path to that folder are one model:
    loaded once, one generation for two layers that make the same; a layer's hub id of the same spelling (no such
    folder beside the layout) is the hub's model: loaded and generated on its own, not taken from the folder's."""
    from tests.test_checkpoint import _hub_cache

    loads, calls = watched
    snapshot = _hub_cache(tiny_dir, tmp_path / "hub", ["a" * 40], {"main": "a" * 40}) / ("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = shutil.copytree(other_tiny, tmp_path / "work" / "someone" / "tiny-pixart")
    (tmp_path / "layouts").mkdir()
    (tmp_path / "layouts" / "three.yaml").write_text(f"""\
canvas: {{width: 128, height: 32}}
grids: {{g: {{rows: 1, columns: 4}}}}
layers:
  - generate: {{prompt: a fox, seed: 1, steps: 1, strategy: direct, region: {{cell: [g, 0, 0]}}}}
  - generate: {{prompt: a fox, seed: 1, steps: 1, strategy: direct, model: {folder}, region: {{cell: [g, 0, 1]}}}}
  - generate: {{prompt: a fox, seed: 1, steps: 1, strategy: direct, model: someone/tiny-pixart,
                region: {{cell: [g, 0, 2]}}}}
  - generate: {{prompt: an owl, seed: 2, steps: 1, strategy: direct, model: {folder}, region: {{cell: [g, 0, 3]}}}}
output: {{formats: [png]}}
""")
    monkeypatch.chdir(tmp_path / "work")
    layout = load_layout(tmp_path / "layouts" / "three.yaml")
    plan = plan_layout(layout, "someone/tiny-pixart", "1GiB")
    assert [(job.model, job.reuses) for job in plan.jobs] == [  # each model as its layer names it
        ("someone/tiny-pixart", None), (str(folder), 0), ("someone/tiny-pixart", None), (str(folder), None)]
    [file] = render(layout, tmp_path / "out", "someone/tiny-pixart", "1GiB")
    assert [path for path, _ in loads] == ["someone/tiny-pixart", "someone/tiny-pixart"]
    assert [(Path(c[0]).resolve(), c[1]) for c in calls] == [
        (folder, "a fox"), (folder, "an owl"), (snapshot.resolve(), "a fox")]
    with Image.open(file) as image:
        pixels = np.asarray(image.convert("RGB"))
        generations = json.loads(image.text["generations"])
    assert np.array_equal(pixels[:, :32], calls[0][3]) and np.array_equal(pixels[:, 32:64], calls[0][3])
    assert np.array_equal(pixels[:, 64:96], calls[2][3]) and not np.array_equal(calls[0][3], calls[2][3])
    assert [g["model"] for g in generations] == ["tiny-pixart", "tiny-pixart", "someone/tiny-pixart", "tiny-pixart"]


@contextlib.contextmanager
def render_paused_placing(tiny_dir, tmp_path, seconds: int):
    """`studio render` of a 32 px card as PNG and JPEG into tmp_path/out, in a subprocess paused for `seconds` as
    it puts card.png in place: yields (the process, the output folder) there."""
    (tmp_path / "card.yaml").write_text("canvas: {width: 32, height: 32}\noutput: {formats: [png, jpeg]}\n"
                                        "layers: [{generate: {prompt: a fox, seed: 1, steps: 1}}]\n")
    out = tmp_path / "out"
    env = {**os.environ, "STUDIO_TEST_PAUSE_IN": "place:card.png", "STUDIO_TEST_PAUSE_SECONDS": str(seconds)}
    with subprocess.Popen([sys.executable, "-m", "studio.cli", "render", tmp_path / "card.yaml", "-o", out,
                           "--model", tiny_dir, "--memory-budget", "1GiB", "--quiet"], env=env,
                          stderr=subprocess.PIPE, text=True) as run:
        assert any(line == "studio: test pause: place card.png\n" for line in run.stderr)  # read until it
        yield run, out


def test_a_finished_rename_log_drops_the_outputs_kept_art(tiny_dir, tmp_path):
    """A render killed between its renames, its art still kept: the next render finishes the renames and, though
    it then stops at 'file exists', the art kept for those files goes (they are written)."""
    with render_paused_placing(tiny_dir, tmp_path, 60) as (run, out):
        run.send_signal(signal.SIGKILL)
    assert (out / "card.png").exists() and not (out / "card.jpg").exists()
    assert len(list((out / ".studio-art").iterdir())) == 1
    with pytest.raises(InputError, match="card.png: file exists"):
        render(load_layout(tmp_path / "card.yaml"), out, str(tiny_dir), "1GiB")
    assert sorted(p.name for p in out.iterdir()) == ["card.jpg", "card.png"]


def test_render_refuses_a_size_its_formats_cannot_hold_before_generating(tiny_dir, tmp_path, watched, monkeypatch):
    import studio.export

    _, calls = watched
    (tmp_path / "wide.yaml").write_text(f"""\
canvas: {{width: 64, height: 32}}
layers:
  - generate: {{prompt: a fox, seed: 1, steps: 1, model: {tiny_dir}}}
output: {{formats: [png, jpeg]}}
""")
    monkeypatch.setitem(studio.export.MAX_SIDES, "JPEG", 48)
    with pytest.raises(InputError, match=f"^{tmp_path / 'out' / 'wide.jpg'}: 64x32 px is too large for JPEG "
                                         r"\(at most 48 px a side\); write a PNG or TIFF instead$"):
        render(load_layout(tmp_path / "wide.yaml"), tmp_path / "out", None, "1GiB")
    assert calls == [] and list((tmp_path / "out").iterdir()) == []


def test_a_tiled_decodes_missing_temporary_disk_fails_before_any_model_loads(tiny_dir, tmp_path, watched,
                                                                            monkeypatch):
    """The second layer's decode keeps its tiles' maps in files ($STUDIO_TMPDIR, here missing): found, at that
    layer, before the model loads, as `studio generate` finds it, not after the first layer was generated and
    kept; a pipeline the caller passes is checked as it plans."""
    from studio.errors import PlanError
    from studio.pipeline import PixArtSigmaPipeline

    loads, calls = watched
    (tmp_path / "big.yaml").write_text("""\
canvas: {width: 1088, height: 1024}
layers:
  - generate: {prompt: a fox, seed: 1, steps: 1, strategy: direct, region: {x: 0, y: 0, w: 64, h: 64}}
  - generate: {prompt: an owl, seed: 2, steps: 1, strategy: direct, region: {x: 64, y: 0, w: 1024, h: 1024}, name: sky}
output: {formats: [png]}
""")
    layout = load_layout(tmp_path / "big.yaml")
    [fox, owl] = plan_layout(layout, str(tiny_dir), "59MiB").jobs
    assert (fox.memory.phases[2].tiles, owl.memory.phases[2].tiles.describe()) == (
        None, "4x4 tiles of <= 256x256 px, layer by layer, maps in temporary files")
    nowhere = tmp_path / "nowhere"
    monkeypatch.setenv("STUDIO_TMPDIR", str(nowhere))
    message = (f"{tmp_path / 'big.yaml'}:4: layers[1] (sky): STUDIO_TMPDIR={nowhere}: no such folder (tiled VAE "
               f"decoding keeps its feature maps there)")
    reports = []
    with pytest.raises(PlanError) as e:
        render(layout, tmp_path / "out", str(tiny_dir), "59MiB", progress=lambda *report: reports.append(report))
    assert str(e.value) == message
    assert (loads, calls, reports, list((tmp_path / "out").iterdir())) == ([], [], [], [])
    pipe = PixArtSigmaPipeline.from_pretrained(tiny_dir)
    with pytest.raises(PlanError) as e:
        render(layout, tmp_path / "out", str(tiny_dir), "59MiB", pipelines={tiny_dir: pipe})
    assert str(e.value) == message
    assert (calls, list((tmp_path / "out").iterdir())) == ([], [])


def test_a_killed_renders_temporaries_go_in_every_format_of_its_own_names(tmp_path):
    """Killed while writing x.pdf, the layout then edited to write PNG only: the PDF's temporary goes too;
    those of other names (another render's, writing now) stay."""
    (tmp_path / "x.yaml").write_text("canvas: {width: 16, height: 16}\nlayers:\n  - fill: {color: navy}\n"
                                     "output: {formats: [png]}\n")
    out = tmp_path / "out"
    out.mkdir()
    for name in [".x.pdf.k1.part", ".x.tif.k2.part.old", ".x.jpg.k3.part", ".y.pdf.k1.part", ".x-2.pdf.k1.part"]:
        (out / name).write_bytes(b"")
    render(load_layout(tmp_path / "x.yaml"), out, None, "1GiB")
    assert sorted(p.name for p in out.iterdir()) == [".x-2.pdf.k1.part", ".y.pdf.k1.part", "x.png"]


def test_render_warns_about_clipped_text_as_the_proof_does(tiny_dir, tmp_path, capsys):
    (tmp_path / "title.yaml").write_text("""\
canvas: {width: 200, height: 80}
layers:
  - text: {text: Grand Opening, size: 30px, wrap: false, name: title, region: {x: 20px, y: 10px, w: 60px, h: 30px}}
output: {formats: [png]}
""")
    [file] = render(load_layout(tmp_path / "title.yaml"), tmp_path / "out", str(tiny_dir), "1GiB")
    assert file.name == "title.png"
    assert capsys.readouterr().err == (f"studio: warning: {tmp_path / 'title.yaml'}:3: layers[0] (title): text "
                                       "overflows its region (right clipped)\n")


def test_a_proof_warns_through_warn_when_given(tmp_path, capsys):
    """proof's warn=, as render's: warn(where, problem) for each text problem instead of a line on stderr; a plan
    that is no Plan is refused in one line (an AttributeError)."""
    from studio.render import proof

    (tmp_path / "title.yaml").write_text("""\
canvas: {width: 200, height: 80}
layers:
  - text: {text: Grand Opening, size: 30px, wrap: false, name: title, region: {x: 20px, y: 10px, w: 60px, h: 30px}}
""")
    layout = load_layout(tmp_path / "title.yaml")
    said = []
    proof(layout, tmp_path / "a.png", warn=lambda where, problem: said.append((where, str(problem))))
    assert said == [(f"{tmp_path / 'title.yaml'}:3", "layers[0] (title): text overflows its region (right clipped)")]
    proof(layout, tmp_path / "b.png")
    assert capsys.readouterr().err == (f"studio: warning: {tmp_path / 'title.yaml'}:3: layers[0] (title): text "
                                       "overflows its region (right clipped)\n")
    with pytest.raises(InputError, match=r"^proof: plan: expected a Plan \(plan_layout's\) or None, got 'x'$"):
        proof(layout, tmp_path / "c.png", plan="x")
    assert not (tmp_path / "c.png").exists()


def test_proof_and_render_warn_of_layers_listed_top_first(tiny_dir, tmp_path, capsys):
    """Layers in Photoshop's order, top layer first: the title and the logo are drawn under the full-canvas
    generation. Both proof and render say so, at each hidden layer's line."""
    from studio.render import proof

    Image.new("RGBA", (8, 8), (255, 0, 0, 128)).save(tmp_path / "logo.png")
    (tmp_path / "poster.yaml").write_text("""\
canvas: {width: 64, height: 48}
layers:
  - text: {text: Hi, size: 12px, name: title, region: {x: 4px, y: 4px, w: 40px, h: 20px}}
  - image: {path: logo.png, region: {x: 48px, y: 4px, w: 8px, h: 8px}}
  - generate: {prompt: a sky, steps: 2, seed: 1}
""")
    layout = load_layout(tmp_path / "poster.yaml")
    warnings = (f"studio: warning: {tmp_path / 'poster.yaml'}:3: layers[0] (title): text is hidden under the "
                f"generate layer layers[2], drawn after it: layers are listed bottom first\n"
                f"studio: warning: {tmp_path / 'poster.yaml'}:4: layers[1]: image is hidden under the generate layer "
                f"layers[2], drawn after it: layers are listed bottom first\n")
    proof(layout, tmp_path / "proof.png")
    assert capsys.readouterr().err == warnings
    render(layout, tmp_path / "out", str(tiny_dir), "1GiB")
    assert capsys.readouterr().err == warnings + (f"note: {tiny_dir}: tiny random checkpoint: its output is noise, "
                                                  f"not an image of the prompt\n")


def test_a_layout_from_text_names_its_files_layout():
    from studio.layout import parse_layout
    from studio.render import output_stems

    text = "canvas: {width: 8, height: 8}\nlayers: [fill: {color: red}]\n"
    assert output_stems(parse_layout(text)) == ["layout"]
    assert output_stems(parse_layout(text, "posters/a.yaml")) == ["a"]


def test_a_layout_built_in_code_with_numpy_numbers_renders(tiny_dir, tmp_path):
    """check_layout takes numpy numbers (a layout computed with numpy): the generation's key hashes them as the
    Python numbers they equal (it raised 'Object of type int64 is not JSON serializable'), and the files'
    metadata writes them as JSON numbers."""
    from studio.spec import Canvas, GenerateLayer, Layout

    layout = Layout("card", Canvas(64, 64), (GenerateLayer("a fox", seed=np.int64(5), steps=np.int64(1),
                                                           guidance=np.float64(4.5)),))
    [file] = render(layout, tmp_path / "out", model=str(tiny_dir), memory_budget="1GiB")
    with Image.open(file) as image:
        [generation] = json.loads(image.text["generations"])
    assert (generation["seed"], generation["steps"], generation["guidance"]) == (5, 1, 4.5)


def test_arguments_of_another_kind_are_refused_before_any_folder_is_made(tiny_dir, tmp_path):
    """model=, pipelines=, progress= and warn= in one line each (not a TypeError or AttributeError after the folder is
    made); a bad output name creates no folder either."""
    from studio.spec import Canvas, FillLayer, GenerateLayer, Layout, Output

    layout = Layout("card", Canvas(64, 64), (GenerateLayer("a fox", steps=1),))
    two = lambda done, total: None  # noqa: E731 (the pipeline's progress, not render's)
    one = lambda where: None  # noqa: E731 (warn takes where and problem)
    for kwargs, message in [
        (dict(model=3), "render: model: expected a model folder or hub id (text or a Path), got 3 (a number)"),
        (dict(pipelines=["x"]), "render: pipelines: expected a dict of model -> PixArtSigmaPipeline, got ['x'] "
                                "(a list)"),
        (dict(pipelines={str(tiny_dir): "pipe"}), f"render: pipelines['{tiny_dir}']: expected a "
                                                  f"PixArtSigmaPipeline, got 'pipe' (text)"),
        (dict(progress=5), "render: progress: is called as progress(label, phase, done, total), got 5"),
        (dict(progress=two), f"render: progress: is called as progress(label, phase, done, total), got "
                             f"{repr(two)[:57]}..."),
        (dict(warn=5), "render: warn: is called as warn(where, problem), got 5"),
        (dict(warn=one), f"render: warn: is called as warn(where, problem), got {repr(one)[:57]}..."),
    ]:
        with pytest.raises(InputError) as e:
            render(layout, tmp_path / "out", **{"model": str(tiny_dir), **kwargs})
        assert str(e.value) == message
    slash = Layout("card", Canvas(64, 64), (FillLayer((1, 2, 3, 255)),), output=Output(name="a/b"))
    with pytest.raises(InputError, match=r"^card: output.name: 'a/b' gives the file name 'a/b', which has a '/'"):
        render(slash, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    for out_dir in (None, ""):  # Path('') is the working folder
        with pytest.raises(InputError, match=rf"^render: out_dir: expected an output folder \(text or a Path\), got "
                                             rf"{re.escape(repr(out_dir))}$"):
            render(slash, out_dir)


def test_a_proofs_path_and_warn_are_refused_before_any_file_is_written(tmp_path):
    """proof's path as render's out_dir, its warn= as render's: one line each (not a TypeError, for warn= after the
    file was written)."""
    from studio.render import proof
    from studio.spec import Canvas, Layout, TextLayer

    layout = Layout("card", Canvas(64, 64), (TextLayer("a text far too long for its canvas " * 5, size=30),))
    for path in (b"z.png", 5, ""):
        with pytest.raises(InputError) as e:
            proof(layout, path)
        assert str(e.value) == f"proof: path: expected an image file name (text or a Path), got {path!r}"
    for warn in (5, lambda where: None):
        with pytest.raises(InputError) as e:
            proof(layout, tmp_path / "w.png", warn=warn)
        assert str(e.value) == f"proof: warn: is called as warn(where, problem), got {repr(warn)[:57]}" + (
            "..." if len(repr(warn)) > 60 else "")
    for flag in ("overwrite", "guides"):  # a truthy "no" would be read as yes
        with pytest.raises(InputError) as e:
            proof(layout, tmp_path / "w.png", **{flag: "no"})
        assert str(e.value) == f"proof: {flag} must be True or False, got 'no'"
    with pytest.raises(InputError) as e:
        render(layout, tmp_path / "out", overwrite="yes")
    assert str(e.value) == "render: overwrite must be True or False, got 'yes'"
    assert list(tmp_path.iterdir()) == []


def test_a_proof_checks_a_layout_edited_after_its_plan_and_refuses_another_layouts_plan(tiny_dir, tmp_path):
    """With plan= too, proof checks the layout (an edit since planning raised KeyError, a Pillow TypeError or drew a
    region off the canvas), and refuses a plan made for another layout (its placeholders' labels, by layer index,
    would land on other layers); an edit the plan does not rely on (a text) keeps it."""
    import dataclasses

    from studio.render import proof
    from studio.spec import Canvas, FillLayer, GenerateLayer, Layout, Region, TextLayer

    layout = Layout("card", Canvas(64, 64), (GenerateLayer("a fox", steps=1, region=Region("px", 0, 0, 32, 32)),
                                             TextLayer("Hi", size=12)))
    plan = plan_layout(layout, str(tiny_dir), "1GiB")
    generate, text = layout.layers
    out = tmp_path / "p.png"
    for layers, message in [
        ((generate, text, TextLayer("Hi", align="centre")),
         "card: layers[2] (TextLayer).align: 'centre' is not one of left, center, right (did you mean 'center'?)"),
        ((generate, text, FillLayer((0, 0, 0, 255), region=Region("px", 500, 500, 5, 5))),
         "card: layers[2] (FillLayer).region: the region is outside the canvas: x + w = 505 px is right of the canvas "
         "(to 64 px)"),
        ((generate, text, TextLayer("Yo")),
         "proof: plan= was made for another layout (of 2 layers, not 3); pass plan_layout(layout) or plan=None"),
        ((text, generate),
         "proof: plan= was made for another layout (layers[0] was 'generate', not 'text'); pass plan_layout(layout) "
         "or plan=None"),
        ((dataclasses.replace(generate, region=Region("px", 0, 0, 48, 32)), text),
         "proof: plan= was made for another layout (layers[0] had another region); pass plan_layout(layout) or "
         "plan=None"),
    ]:
        with pytest.raises(InputError) as e:
            proof(dataclasses.replace(layout, layers=layers), out, plan=plan)
        assert str(e.value) == message
    with pytest.raises(InputError) as e:
        proof(dataclasses.replace(layout, source="poster", canvas=Canvas(64, 80)), out, plan=plan)
    assert str(e.value) == ("proof: plan= was made for another layout ('card', not 'poster'); pass "
                            "plan_layout(layout) or plan=None")
    with pytest.raises(InputError) as e:
        proof(dataclasses.replace(layout, canvas=Canvas(64, 80)), out, plan=plan)
    assert str(e.value) == ("proof: plan= was made for another layout (of 64 x 64 px, not 64 x 80 px); pass "
                            "plan_layout(layout) or plan=None")
    assert not out.exists()
    assert proof(dataclasses.replace(layout, layers=(generate, TextLayer("Bye", size=12))), out, plan=plan) == out


def test_a_lone_surrogate_is_no_file_name():
    """os.fsdecode's stand-in for a byte that is no UTF-8 names no file with metadata (check_layout refuses it in a
    source, test_spec); the message shows it escaped."""
    from studio.render import output_stems
    from studio.spec import Canvas, FillLayer, Layout

    with pytest.raises(InputError) as e:
        output_stems(Layout("caf\udce9.yaml", Canvas(8, 8), (FillLayer((1, 2, 3, 255)),)))
    assert str(e.value) == ("caf\\udce9.yaml: output.name '{layout}' gives the file name 'caf\\udce9', which has half "
                            "of a UTF-16 surrogate pair, which no file's metadata encodes (a name in the output folder: "
                            "not empty, '.' or '..', without '/', '\\' or control characters)")


def test_a_proof_written_over_a_symbolic_link_loop_replaces_the_link(tmp_path):
    """A loop is no input of the layout (Path.resolve raised RuntimeError: Symlink loop); it exists as a link, so
    it is replaced only with overwrite."""
    from studio.render import proof

    Image.new("RGB", (4, 4), "red").save(tmp_path / "logo.png")
    (tmp_path / "card.yaml").write_text("canvas: {width: 16, height: 16}\nlayers: [image: {path: logo.png}]\n")
    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    layout = load_layout(tmp_path / "card.yaml")
    with pytest.raises(InputError, match=r"a\.png: file exists \(pass --overwrite"):
        proof(layout, tmp_path / "a.png")
    proof(layout, tmp_path / "a.png", overwrite=True, guides=False)
    with Image.open(tmp_path / "a.png") as image:
        assert not (tmp_path / "a.png").is_symlink() and image.getpixel((8, 8)) == (255, 0, 0)


def test_output_names_take_no_attribute_format_or_conversion():
    """str.format filled '{layout.__class__}' with "<class 'str'>"; check_layout refuses it too (test_spec)."""
    from studio.layout import file_stems
    from studio.render import output_stems
    from studio.spec import Canvas, FillLayer, Layout, Output

    layout = Layout("card", Canvas(8, 8), (FillLayer((1, 2, 3, 255)),), output=Output(name="{layout.__class__}"))
    with pytest.raises(InputError) as e:
        output_stems(layout)
    assert str(e.value) == ("card: output.name: write {layout}, not {layout.__class__}: fields take no format, "
                            "conversion or index")
    with pytest.raises(ValueError, match=r"^\{x\} is not a field \(\{layout\}, \{seed\} or \{monitor\}; write \{\{ or "
                                         r"\}\} for a brace\)$"):
        file_stems("{x}", "card", 0, [])
    assert file_stems("{{x}}-{layout}-{seed}", "a/card.yaml", 7, ["l"]) == ["{x}-card-7", "{x}-card-7-l"]


def test_a_ctrl_c_among_the_final_renames_waits_for_them_and_the_kept_art(tiny_dir, tmp_path):
    """Held until every file is in place and the kept art is gone, then taken (exit 130): no half-replaced set, and
    no art left that stops the next run at 'file exists'."""
    with render_paused_placing(tiny_dir, tmp_path, 2) as (run, out):
        run.send_signal(signal.SIGINT)
        assert run.stderr.read() == ("studio: stopping, after the files were written (card.png, card.jpg)\n"
                                     "studio: interrupted\n")
    assert run.returncode == 130
    assert sorted(p.name for p in out.iterdir()) == ["card.jpg", "card.png"]


def test_art_that_cannot_be_kept_leaves_no_empty_folder(tmp_path, monkeypatch, capsys):
    import errno

    import studio.render

    def full_disk(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(studio.render, "write_temp", full_disk)
    studio.render._keep_art(tmp_path / ".studio-art" / "x.png", Image.new("RGB", (4, 4)), "dpm")
    assert list(tmp_path.iterdir()) == [] and "cannot keep the art of a layer" in capsys.readouterr().err


def test_an_output_folder_that_cant_be_one_says_what_it_is(tmp_path):
    """-o a file, or a symbolic link that loops or leads nowhere: said as such (each was 'File exists')."""
    from studio.layout import parse_layout

    layout = parse_layout("canvas: {width: 8, height: 8}\nlayers: [fill: {color: red}]\n")
    (tmp_path / "afile").write_bytes(b"")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for name, why in [("afile", "is a file, not a folder"), ("loop", "is a symbolic link loop"),
                      ("dangling", f"is a broken symbolic link (to {tmp_path / 'nowhere'})")]:
        with pytest.raises(InputError) as info:
            render(layout, tmp_path / name)
        assert str(info.value) == f"{tmp_path / name}: cannot be the output folder ({why})"
