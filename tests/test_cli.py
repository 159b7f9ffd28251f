"""`studio generate` end to end on the tiny checkpoint: the file, its metadata, the progress of every phase,
--dry-run, one-line errors, and a 4K run's peak memory against its budget."""

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio import __version__
from studio.cli import build_parser, main
from studio.errors import InputError


def bars(stderr: str) -> dict[str, tuple[int, int]]:
    """The last state of each progress bar counting units (not bytes) in stderr, a log here (not a terminal: plain
    lines, `progress.LineBar`): description -> (done, total)."""
    found = {}
    for desc, done, total in re.findall(r"^(.+): (\d+)/(\d+) \(\d+%, [\d.]+ s(?:, ~\d+ s left)?\)$", stderr, re.M):
        found[desc] = (int(done), int(total))
    return found


def test_generate_writes_the_image_and_shows_every_phase(tiny_dir, tmp_path, capsys):
    out = tmp_path / "cat.png"
    args = ["generate", "a cat", "--model", str(tiny_dir), "-o", str(out), "--size", "256x192", "--steps", "3",
            "--seed", "7", "--no-binning"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "seed 7" in captured.out
    assert "output is noise" in captured.err and "\x1b" not in captured.err and "\r" not in captured.err
    assert bars(captured.err) == {"encoding prompt": (1, 1), "denoising": (3, 3), "decoding": (1, 1)}
    with Image.open(out) as image:
        assert image.size == (256, 192)
        assert image.text["prompt"] == "a cat" and image.text["seed"] == "7"
        assert image.text["model"] == tiny_dir.name  # as render names it: files travel, local paths stay
        first = np.asarray(image)

    # the file exists: refused in one line, untouched
    written = out.read_bytes()
    assert main(args + ["--seed", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("studio: error:") and "--overwrite" in err
    assert out.read_bytes() == written

    # tiled decode: the bar counts tile passes; the same seed gives the same image
    assert main(args + ["--overwrite", "--vae-tiling", "on"]) == 0
    decoding = bars(capsys.readouterr().err)["decoding"]
    assert decoding[0] == decoding[1] > 1
    with Image.open(out) as image:
        assert np.abs(np.asarray(image).astype(int) - first).max() <= 1


def test_generate_writes_its_settings_into_webp_and_tiff(tiny_dir, tmp_path):
    """As into a PNG: WebP in EXIF's ImageDescription, TIFF in its own, both JSON; a TIFF at 72 dpi (it needs one)."""
    args = ["generate", "a café, 猫", "--model", str(tiny_dir), "--size", "128x128", "--steps", "1", "--seed", "5",
            "--quiet", "--no-binning"]
    settings = {"prompt": "a café, 猫", "negative_prompt": "", "seed": 5, "steps": 1, "size": "128x128",
                "model": tiny_dir.name, "software": "studio"}
    for name, dpi in (("x.webp", None), ("x.tif", 72)):  # generate gives no dpi
        assert main(args + ["-o", str(tmp_path / name)]) == 0
        with Image.open(tmp_path / name) as image:
            exif = image.getexif()
        assert json.loads(exif[270]).items() >= settings.items()
        assert (exif.get(282), exif.get(283), exif.get(296)) == ((dpi, dpi, 2) if dpi else (None, None, None))


def test_render_shows_its_phases_and_clears_what_a_killed_run_left(tiny_dir, tmp_path, capsys):
    layout = tmp_path / "card.yaml"
    layout.write_text("canvas: {width: 128, height: 96}\noutput: {formats: [png, jpeg, pdf]}\n"
                      "layers: [{generate: {prompt: a cat, steps: 2}}]\n")
    out = tmp_path / "out"
    out.mkdir()
    for left in (".card.png.k1llxd.part", ".card.pdf.k1llxd.part.old", ".other.png.k1llxd.part"):
        (out / left).write_bytes(b"half a file")  # as killed runs leave them
    assert main(["render", str(layout), "--model", str(tiny_dir), "-o", str(out)]) == 0
    shown = bars(capsys.readouterr().err)
    assert {desc.rsplit(": ", 1)[-1]: state for desc, state in shown.items()} == {
        "encoding prompt": (1, 1), "denoising": (2, 2), "decoding": (1, 1), "composing": (1, 1),
        "writing files": (3, 3)}
    # this layout's leftovers are gone, another's (maybe being written) stay
    assert sorted(p.name for p in out.iterdir()) == [".other.png.k1llxd.part", "card.jpg", "card.pdf", "card.png"]


def test_bfloat16_on_the_cpu_is_said_to_compute_in_float32(tiny_dir, tmp_path):
    args = ["generate", "a cat", "--model", str(tiny_dir), "--size", "128x128", "--steps", "1", "--seed", "3",
            "--quiet", "--no-binning"]
    with pytest.warns(UserWarning, match="^studio: bfloat16 computes in float32 here"):  # printed as one line
        assert main(args + ["-o", str(tmp_path / "bf16.png"), "--dtype", "bfloat16"]) == 0
    assert main(args + ["-o", str(tmp_path / "fp32.png")]) == 0  # no warning (an error in the tests)
    with Image.open(tmp_path / "bf16.png") as a, Image.open(tmp_path / "fp32.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))  # the tiny weights are fp32: the same run


def test_generate_dry_run_and_budget_errors(tiny_dir, tmp_path, capsys):
    out = tmp_path / "x.png"
    base = ["generate", "a cat", "--model", str(tiny_dir), "-o", str(out)]
    assert main(base + ["--dry-run", "--size", "3840x2160", "--no-binning", "--memory-budget", "2GiB"]) == 0
    plan = capsys.readouterr().out
    assert plan.startswith("generation 3840x2160 px, 1 image(s), memory budget 2.00 GiB")
    assert re.search(r"denoise .* self: query-chunked q=994 k=32400", plan)  # 2 x 32,400 tokens
    decode = next(line for line in plan.splitlines() if line.startswith("decode"))
    assert "vae-mid: query-chunked" in decode and "tiles" not in decode  # the untiled decode fits 2 GiB
    assert main(base + ["--dry-run", "--size", "3840x2160", "--no-binning", "--memory-budget", "1GiB"]) == 0
    assert re.search(r"decode .* vae: 3x4 tiles", capsys.readouterr().out) and not out.exists()  # 1 GiB doesn't

    assert main(base + ["--memory-budget", "1MiB"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "smallest budget that works" in err and not out.exists()

    assert main(base + ["--size", "100x100", "--no-binning"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "studio: error: size 100x100 is not a multiple of 16 px; pick a multiple of 16, or leave out " \
                  "--no-binning"  # the CLI's option, not the API's use_resolution_binning

    # more steps than the scheduler's training timesteps: refused before any weight is read, dry run or not
    for dry_run in (["--dry-run"], []):
        assert main(base + ["--steps", "100000", "--size", "128x128"] + dry_run) == 2
        assert capsys.readouterr().err == "studio: error: --steps 100000: must be an integer in 1..1000\n"
        # a variant no component has, and a revision of a local folder, as the real run would find them
        assert main(base + ["--variant", "fp16"] + dry_run) == 2
        assert capsys.readouterr().err == (f"studio: error: {tiny_dir}: no component has fp16 weights "
                                           "(*.fp16.safetensors); pass no variant to load the plain ones\n")
        assert main(base + ["--revision", "main"] + dry_run) == 2
        assert capsys.readouterr().err == (f"studio: error: --revision main: {tiny_dir} is a local folder; a revision "
                                           "is of a hub id\n")
        assert not out.exists()
    assert not out.exists()

    # a scheduler studio can't run, without --sampler: the pipeline's error, before any weight is read
    unipc = tmp_path / "unipc"
    shutil.copytree(tiny_dir, unipc, ignore=shutil.ignore_patterns("*.safetensors"))
    index = json.loads((unipc / "model_index.json").read_text())
    (unipc / "model_index.json").write_text(json.dumps({**index, "scheduler": ["diffusers", "UniPCMultistepScheduler"]}))
    args = ["generate", "a cat", "--model", str(unipc), "-o", str(out), "--dry-run", "--size", "128x128"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"studio: error: {unipc / 'scheduler' / 'scheduler_config.json'} ") and err.count("\n") == 1
    assert err.endswith("pass sampler='dpm++', 'ddim' or 'euler' (CLI: --sampler) to sample with one of studio's "
                        "samplers instead\n")
    assert main(args + ["--sampler", "ddim"]) == 0

    # a misspelt key of a class studio runs: no --sampler would read it, so no hint to pass one, and none works
    config = unipc / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "use_karas_sigmas": True}))
    (unipc / "model_index.json").write_text(json.dumps(index))
    for sampler in ([], ["--sampler", "dpm++"]):
        assert main(args + sampler) == 2
        assert capsys.readouterr().err == (f"studio: error: {config}: unknown key 'use_karas_sigmas' for "
                                           "DPMSolverMultistepScheduler (did you mean 'use_karras_sigmas'?)\n")


@pytest.mark.parametrize("argv, message", [
    (["generate", "a cat", "-o", "x.png", "--size", "0x100"], "studio generate: error: argument --size: size '0x100' "
     "is not WIDTHxHEIGHT in pixels, e.g. 1024x1024 (see studio generate --help)"),
    (["generate", "a cat", "-o", "x.png", "--size", "40000x40000"], "studio generate: error: argument --size: "
     "size '40000x40000' is too large (at most 32768 px a side and 268435456 pixels)"),
    (["generate", "a cat", "-o", "x.png", "--guidance", "nan"], "studio generate: error: argument --guidance: "
     "guidance 'nan' is not a number >= 0, e.g. 4.5"),
    (["generate", "a cat", "-o", "x.png", "--guidance=-1"], "studio generate: error: argument --guidance: "
     "guidance '-1' is not a number >= 0"),
    (["generate", "a cat", "-o", "x.png", "--seed=-1"], "studio generate: error: argument --seed: seed '-1' is "
     "not a whole number in 0..4294967295"),
    (["generate", "a cat", "-o", "x.png", "--seed", "4294967296"], "studio generate: error: argument --seed: "),
    (["render", "x.yaml"], "studio render: error: the following arguments are required: -o/--output "
     "(see studio render --help)"),
    (["make-tiny", "t", "--seed", "-1"], "studio make-tiny: error: argument --seed: seed '-1' is not a whole number "
     "in 0..4294967295 (see studio make-tiny --help)"),
    (["generate", "a cat", "-o", "x.png", "--bogus"], "studio generate: error: unrecognized arguments: --bogus "
     "(see studio generate --help)"),
    (["frob"], "studio: error: argument command: invalid choice: 'frob' (choose from "),  # how choices are
])                                                                                  # quoted varies by Python
def test_a_bad_command_line_is_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(message) and err.count("\n") == 1 and err.endswith("--help)\n")


@pytest.mark.parametrize("argv, shown", [
    (["generate", "cat\udcff", "-o", "x.png"], "cat\\xff"),  # $'cat\xff' as Python decodes argv
    (["proof", "l.yaml", "--set", "caption=caf\udce9", "-o", "p.png"], "caption=caf\\xe9"),
    (["generate", "cat", "-o", "bad\udcff.png"], "bad\\xff.png"),
    (["proof", "lay/f\udcffl.yaml", "-o", "p.png"], "lay/f\\xffl.yaml"),
    (["generate", "cat\ud800", "-o", "x.png"], "cat\\ud800"),  # a surrogate no byte decodes to
])
def test_arguments_that_are_not_utf8_text_are_one_line(argv, shown, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert capsys.readouterr().err == f"studio: error: argument '{shown}' is not valid UTF-8 text\n"
    assert list(tmp_path.iterdir()) == []


# each command that takes --model (or $STUDIO_MODEL), with what else it needs
MODEL_COMMANDS = [["generate", "a cat", "-o", "x.png"], ["plan", "l.yaml"], ["proof", "l.yaml", "-o", "p.png"],
                  ["render", "l.yaml", "-o", "out"], ["batch", "job.yaml", "-o", "out"]]


@pytest.mark.parametrize("command", MODEL_COMMANDS)
@pytest.mark.parametrize("model", ["ti\x00ny", "ti\nny"])
def test_a_model_with_a_control_character_is_refused_as_a_layouts_is(command, model, tmp_path, monkeypatch,
                                                                      capsys):
    monkeypatch.chdir(tmp_path)
    assert main(command + ["--model", model]) == 2
    shown = model.replace("\x00", "\\x00").replace("\n", "\\n")
    assert capsys.readouterr().err == (f"studio: error: --model '{shown}' has a control character, which no path, "
                                       f"font or model name may hold\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_a_studio_model_with_a_control_character_is_refused(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STUDIO_MODEL", "ti\nny")  # (an environment variable holds no NUL)
    assert main(command) == 2
    assert capsys.readouterr().err == ("studio: error: $STUDIO_MODEL 'ti\\nny' has a control character, which no "
                                       "path, font or model name may hold\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_a_blank_studio_model_is_refused_naming_it(command, tmp_path, monkeypatch, capsys):
    """Not said as the API's 'plan_layout: model: ...' or as a folder ' ': named, as its other mistakes are (an
    empty one is unset: the default)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STUDIO_MODEL", "  ")
    assert main(command) == 2
    assert capsys.readouterr().err == ("studio: error: $STUDIO_MODEL '  ' is blank; set it to a pipeline folder or a "
                                       "hub id owner/name, or unset it for the default\n")
    assert list(tmp_path.iterdir()) == []


# each command that takes -o, with what else it needs
OUTPUT_COMMANDS = [["generate", "a cat"], ["proof", "l.yaml"], ["render", "l.yaml"], ["batch", "job.yaml"],
                   ["rerender", "a.manifest.json"]]


@pytest.mark.parametrize("command", OUTPUT_COMMANDS)
@pytest.mark.parametrize("output", ["x\ny.png", "x\ty.png", "out\r"])
def test_an_output_with_a_control_character_is_refused(command, output, tmp_path, monkeypatch, capsys):
    """It would split 'wrote ...' and error lines: refused in one line, as a --model with one is."""
    monkeypatch.chdir(tmp_path)
    assert main(command + ["-o", output]) == 2
    shown = output.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    assert capsys.readouterr().err == (f"studio: error: -o '{shown}' has a control character, which no path, font "
                                       "or model name may hold\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["generate", "a cat", "-o", "x.png", "--model=", "--dry-run"], "studio generate: error: argument --model: empty; "
     "give a pipeline folder or a hub id owner/name (or leave --model out for the default)"),
    (["generate", "a cat", "-o", ""], "studio generate: error: argument -o/--output: empty; give an image file name "
     "(.png, .jpg, .tif, .webp)"),
    (["proof", "l.yaml", "-o", ""], "studio proof: error: argument -o/--output: empty; give an image file name"),
    (["render", "l.yaml", "-o", ""], "studio render: error: argument -o/--output: empty; give an output folder"),
    (["render", "l.yaml", "-o", "out", "--model", ""], "studio render: error: argument --model: empty; "),
    (["plan", "l.yaml", "--model="], "studio plan: error: argument --model: empty; "),
    (["batch", "job.yaml", "-o="], "studio batch: error: argument -o/--output: empty; give an output folder"),
    (["rerender", "a.manifest.json", "-o="], "studio rerender: error: argument -o/--output: empty; give an output "
     "folder"),
    (["generate", "a cat", "-o", "x.png", "--model", " ", "--dry-run"], "studio generate: error: argument --model: "
     "blank; give a pipeline folder or a hub id owner/name (or leave --model out for the default) (see "),
    (["plan", "l.yaml", "--model", "  "], "studio plan: error: argument --model: blank; "),
    (["generate", "a cat", "-o", "x.png", "--memory-budget="], "studio generate: error: argument --memory-budget: "
     "empty; give a memory budget, e.g. 6GiB (or leave --memory-budget out for the default)"),
    (["plan", "l.yaml", "--memory-budget="], "studio plan: error: argument --memory-budget: empty; "),
    (["render", "l.yaml", "-o", "out", "--memory-budget="], "studio render: error: argument --memory-budget: empty; "),
    (["batch", "job.yaml", "--list", "--memory-budget="], "studio batch: error: argument --memory-budget: empty; "),
    (["generate", "a cat", "-o", "x.png", "--device="], "studio generate: error: argument --device: empty; give a "
     "device, e.g. CPU or GPU:1 (or leave --device out for the default)"),
    (["plan", "l.yaml", "--device="], "studio plan: error: argument --device: empty; "),
    (["render", "l.yaml", "-o", "out", "--device="], "studio render: error: argument --device: empty; "),
    (["batch", "job.yaml", "--list", "--device="], "studio batch: error: argument --device: empty; "),
    (["rerender", "a.manifest.json", "--device="], "studio rerender: error: argument --device: empty; "),
    (["generate", "a cat", "-o", "x.png", "--variant", ""], "studio generate: error: argument --variant: empty; give "
     "a weight-file variant, e.g. fp16 (or leave --variant out for *.safetensors)"),
    (["generate", "a cat", "-o", "x.png", "--revision", ""], "studio generate: error: argument --revision: empty; "
     "give a branch, tag or commit hash (or leave --revision out for main)"),
    (["batch", "job.yaml", "--list", "--cache-dir="], "studio batch: error: argument --cache-dir: empty; give a "
     "cache folder (or leave --cache-dir out for OUTDIR/.cache)"),
    (["make-tiny", ""], "studio make-tiny: error: argument folder: empty; give a folder to write the pipeline into"),
    (["plan", ""], "studio plan: error: argument layout: empty; give a layout file (YAML)"),
    (["proof", "", "-o", "p.png"], "studio proof: error: argument layout: empty; give a layout file (YAML)"),
    (["batch", "", "--list"], "studio batch: error: argument job: empty; give a job file (YAML or CSV)"),
    (["rerender", ""], "studio rerender: error: argument manifest: empty; give a batch item's <name>.manifest.json"),
])
def test_an_empty_value_is_refused(argv, message, tmp_path, monkeypatch, capsys):
    """What an unset shell variable gives (`--model "$M"`, `--device "$DEV"`): not the default model, budget or
    device, not the working folder (Path('') is '.'); a blank --model ('--model "$A $B"') is no model either."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "l.yaml").write_text("canvas: {width: 64, height: 64}\nlayers:\n  - fill: {color: red}\n")
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(message) and err.count("\n") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["l.yaml"]


def test_a_variable_set_twice_is_refused(tmp_path, capsys):
    layout = tmp_path / "l.yaml"
    layout.write_text("canvas: {width: 64, height: 64}\nvariables: {steps: 2}\n"
                      "layers:\n  - generate: {prompt: a cat, steps: \"{steps}\"}\n")
    assert main(["proof", str(layout), "-o", str(tmp_path / "p.png"), "--set", "steps=2", "--set", " steps=3"]) == 2
    assert capsys.readouterr().err == ("studio: error: --set steps: given twice ('2' and '3'); give each variable "
                                       "once\n")
    assert not (tmp_path / "p.png").exists()


def test_a_variable_set_but_used_nowhere_is_warned_of(tiny_dir, tmp_path, capsys):
    """--set of a variable the layout defines but writes nowhere (only in a comment or in the variables block)
    would change nothing: plan, proof and render say so, one line each, and go on."""
    layout = tmp_path / "l.yaml"
    layout.write_text('canvas: {width: 64, height: 48}\nvariables: {tint: "#000", title: Hi, sub: "{tint}"}\n'
                      'layers:\n  - fill: {color: "#fff"}  # {tint} later\n  - text: {text: "{title}", size: 8px}\n')
    given = ["--set", "tint=#0f0", "--set", "title=Yo", "--set", "sub=x"]
    warnings = ("studio: warning: --set tint: the layout defines {tint} but uses it nowhere\n"
                "studio: warning: --set sub: the layout defines {sub} but uses it nowhere\n")
    assert main(["plan", str(layout), "--model", str(tiny_dir), *given]) == 0
    assert capsys.readouterr().err == warnings
    assert main(["proof", str(layout), "-o", str(tmp_path / "p.png"), *given]) == 0
    assert capsys.readouterr().err == warnings
    assert main(["render", str(layout), "-o", str(tmp_path / "out"), "--model", str(tiny_dir), "--quiet",
                 *given]) == 0
    assert capsys.readouterr().err == warnings
    assert main(["proof", str(layout), "-o", str(tmp_path / "q.png"), "--set", "title=Yo"]) == 0
    assert capsys.readouterr().err == ""  # tint and sub are not given: their defaults change nothing either


def test_every_argument_has_a_help_text():
    import argparse

    from studio.cli import build_parser
    [commands] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert [f"{name} {a.dest}" for name, cmd in commands.choices.items() for a in cmd._actions if not a.help] == []


def test_every_default_is_stated(capsys):
    """An option's help says its default (make-tiny --sample-size's did not)."""
    import argparse

    [commands] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    unstated = [f"{name} {a.dest}" for name, cmd in commands.choices.items() for a in cmd._actions
                if a.default not in (None, False, "", [], (None, None), argparse.SUPPRESS) and "default" not in a.help]
    assert unstated == []
    with pytest.raises(SystemExit):
        main(["make-tiny", "--help"])
    assert "(default 128," in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command", ["generate", "plan", "render", "batch"])
def test_the_default_model_is_stated(command, capsys, monkeypatch):
    """Every command that falls back to the published model says so in its --help (plan's did not)."""
    monkeypatch.setenv("COLUMNS", "200")  # argparse wraps help at a hyphen, in the model's name
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "$STUDIO_MODEL or PixArt-alpha/PixArt-Sigma-XL-2-1024-MS)" in " ".join(capsys.readouterr().out.split())


def test_the_readmes_format_at_a_glance_plans_as_it_says(tmp_path, capsys):
    """layouts/README.md's whole-format example, given the --set its comment asks for, plans without a warning
    (it declared {date} and used it nowhere: a --set date=... was demanded, then said to be unused)."""
    readme = (Path(__file__).parents[1] / "layouts" / "README.md").read_text()
    [example] = re.findall(r"^## The whole format at a glance\n\n```yaml\n(.*?)^```", readme, re.M | re.S)
    assert "--set date=..." in example
    (tmp_path / "glance.yaml").write_text(example)
    Image.new("RGBA", (40, 20), "white").save(tmp_path / "logo.png")  # the example's image layer
    assert main(["plan", str(tmp_path / "glance.yaml"), "--set", "date=2024"]) == 0
    assert capsys.readouterr().err == ""


def test_progress_is_a_bar_on_a_terminal_and_a_few_plain_lines_in_a_log(monkeypatch):
    """A log (stderr not a terminal) gets no escape sequences: a line when a phase starts and ends, and between
    them at most one per 10 s and per 10% of the phase, with the time left at the rate so far."""
    import io
    import types

    from studio import progress
    from studio.progress import PhaseBars

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    shown = Terminal()
    bars = PhaseBars(file=shown)
    for done in range(4):
        bars("", "denoise", done, 3)
    assert "denoising: 100%|" in shown.getvalue()

    def lines(total, seconds_per_step):
        now = [0.0]
        monkeypatch.setattr(progress, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
        log = io.StringIO()
        bars = PhaseBars(file=log)
        for done in range(total + 1):
            now[0] = done * seconds_per_step
            bars("layer 0", "denoise", done, total)
        return log.getvalue()
    left = lambda n, total, seconds: f", ~{seconds * (total - n)} s left" if 0 < n < total else ""  # noqa: E731
    assert lines(20, 3) == "".join(f"layer 0: denoising: {n}/20 ({5 * n}%, {3 * n:.1f} s{left(n, 20, 3)})\n"
                                   for n in range(0, 21, 4))
    assert lines(20, 3).splitlines()[1] == "layer 0: denoising: 4/20 (20%, 12.0 s, ~48 s left)"
    assert lines(100, 5) == "".join(f"layer 0: denoising: {n}/100 ({n}%, {5 * n:.1f} s{left(n, 100, 5)})\n"
                                    for n in range(0, 101, 10))
    assert lines(3, 0.1) == "layer 0: denoising: 0/3 (0%, 0.0 s)\nlayer 0: denoising: 3/3 (100%, 0.3 s)\n"
    quiet = io.StringIO()
    PhaseBars(quiet=True, file=quiet)("", "denoise", 0, 3)
    assert quiet.getvalue() == ""


def test_a_warning_on_a_terminal_goes_above_the_bars(tiny_dir, tmp_path, monkeypatch):
    """A warning while a bar is drawn (a prompt cut at T5's limit, as its encoding starts): the bars are cleared,
    the warning is printed on its own line, and they are drawn again below it, not glued onto it."""
    import io
    import warnings

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    shown = Terminal()
    monkeypatch.setattr(sys, "stderr", shown)
    prompt = " ".join(f"word{i}" for i in range(400))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(message, category, filename, lineno, line))  # Python's, not pytest's recorder
        assert main(["generate", prompt, "--model", str(tiny_dir), "-o", str(tmp_path / "cut.png"), "--size", "64x64",
                     "--steps", "1", "--no-binning"]) == 0
    assert re.search(r"\r +\rstudio: warning: 'word0 word1 [^\n]*' is cut at \d+ tokens, T5's limit here; dropped: "
                     r"'[^\n]*'\n\rencoding prompt:   0%\|", shown.getvalue())


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    line = capsys.readouterr().out.strip()
    assert line == f"studio {__version__} (mindspore {metadata.version('mindspore')}, numpy {metadata.version('numpy')})"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("args", [["--help"], ["plan", "--help"], ["--version"]])
def test_help_and_version_to_a_full_stdout_are_an_error(args, tmp_path):
    """argparse ignores a failed write of --help or --version (status 0, nothing said): it is an error as any
    command's stdout's."""
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "studio", *args], cwd=tmp_path, stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=300)
    assert (done.returncode, done.stderr) == (2, "studio: error: standard output: No space left on device\n")


# What README states for a whole run: peak RSS <= budget + RUNTIME_OVERHEAD (MindSpore and Python loaded, about
# 0.55-0.65 GiB on these machines, plus the tiny weights and the small tensors the plan does not count).
RUNTIME_OVERHEAD = 0.75 * 2 ** 30


# Runs `studio generate` and writes the process's peak RSS (VmHWM, KiB) to the file argv[1]. Read from /proc in
# the child: the wait4 rusage of a child counts its parent's high-water mark from before the exec (Linux keeps
# it across exec): it measured the test process's own peak whenever that was larger.
GENERATE_AND_REPORT_PEAK = """
import re, sys
from pathlib import Path
from studio.cli import main
from studio.errors import InputError
code = main(sys.argv[2:])
Path(sys.argv[1]).write_text(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1])
sys.exit(code)
"""


@pytest.mark.parametrize("gib", [1, 2])
def test_4k_generate_stays_within_the_budget(tiny_dir, tmp_path, gib):
    """3840x2160 direct (32,400 tokens per image, chunked attention; a tiled decode in 1 GiB, untiled in 2) in a
    1 and a 2 GiB budget: the process's own peak RSS stays within the budget plus the runtime overhead."""
    out, peak_file = tmp_path / "4k.png", tmp_path / "peak.txt"
    cmd = [sys.executable, "-c", GENERATE_AND_REPORT_PEAK, str(peak_file), "generate", "a cat", "--model",
           str(tiny_dir), "-o", str(out), "--size", "3840x2160", "--no-binning", "--memory-budget", f"{gib}GiB",
           "--steps", "1", "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wrote" in done.stdout
    with Image.open(out) as image:
        assert image.size == (3840, 2160)
    peak = int(peak_file.read_text()) * 1024
    assert peak <= gib * 2 ** 30 + RUNTIME_OVERHEAD, f"peak RSS {peak / 2 ** 30:.2f} GiB"


def test_a_prompt_or_value_starting_with_a_dash_is_explained(capsys):
    """argparse reads '-cat' and '-blurry' as options: the error says how to pass them."""
    for argv, expected in [
        (["generate", "-cat", "-o", "x.png"], "studio generate: error: the following arguments are required: prompt (a "
         "prompt that starts with '-' goes last, after '--': -o x.png -- \"-cat\") (see studio generate --help)"),
        (["generate", "a cat", "--negative", "-blurry", "-o", "x.png"], "studio generate: error: argument --negative: "
         "expected one argument (a value that starts with '-' takes '=': --negative=-value) (see studio generate "
         "--help)")]:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2 and capsys.readouterr().err == expected + "\n"
    args = build_parser().parse_args(["generate", "--negative=-blurry", "-o", "x.png", "--", "-cat"])
    assert (args.prompt, args.negative) == ("-cat", "-blurry")


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`studio plan --json | head -c 1`: the reader goes away; no BrokenPipeError traceback."""
    layout = tmp_path / "l.yaml"
    layout.write_text("canvas: {width: 64, height: 64}\nlayers:\n" + "  - fill: {color: red}\n" * 2000)
    with subprocess.Popen([sys.executable, "-m", "studio.cli", "plan", str(layout), "--json"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as run:
        run.stdout.read(1)
        run.stdout.close()
        assert run.stderr.read() == b""
    assert run.returncode == 1


class _Failing:
    """A stream whose writes fail as a full disk's (or a closed pipe's) do."""

    def __init__(self, error: OSError):
        self.error, self.tries = error, 0

    def write(self, text):
        self.tries += 1
        raise self.error

    def flush(self):
        raise self.error

    def isatty(self):
        return False


def test_a_log_that_cant_be_written_doesnt_stop_the_work(tiny_dir, tmp_path, monkeypatch):
    """stderr's reader gone or its disk full: the notes and progress are dropped after the first failed write, and
    the image is written (the first progress line stopped the generation, exit 1 without a word)."""
    import errno

    for error in (BrokenPipeError(errno.EPIPE, "Broken pipe"), OSError(errno.ENOSPC, "No space left on device")):
        err = _Failing(error)
        monkeypatch.setattr(sys, "stderr", err)
        out = tmp_path / f"{error.errno}.png"
        assert main(["generate", "a cat", "--model", str(tiny_dir), "--size", "64x64", "--steps", "1", "-o",
                     str(out)]) == 0
        assert out.is_file() and err.tries == 1


def test_a_full_stdout_is_named_as_such(tiny_dir, tmp_path, monkeypatch, capsys):
    """'wrote x.png' to a full disk: the error says it was standard output (the files are written), not a bare
    'No space left on device', which reads as the files' disk."""
    import errno

    monkeypatch.setattr(sys, "stdout", _Failing(OSError(errno.ENOSPC, "No space left on device")))
    out = tmp_path / "x.png"
    assert main(["generate", "a cat", "--model", str(tiny_dir), "--size", "64x64", "--steps", "1", "-o", str(out),
                 "--quiet"]) == 2
    assert out.is_file()
    assert capsys.readouterr().err.splitlines()[-1] == "studio: error: standard output: No space left on device"


def test_a_working_folder_deleted_under_the_shell_is_said(tmp_path, monkeypatch, capsys):
    layout = tmp_path / "l.yaml"
    layout.write_text("canvas: {width: 64, height: 64}\nlayers: [fill: {color: red}]\n")
    (tmp_path / "gone").mkdir()
    monkeypatch.chdir(tmp_path / "gone")
    (tmp_path / "gone").rmdir()
    assert main(["plan", str(layout)]) == 2
    assert capsys.readouterr().err == ("studio: error: the working folder no longer exists (deleted since the shell "
                                       "entered it); cd to an existing folder\n")


def test_proof_refuses_a_model_folder_that_does_not_exist(tmp_path, capsys):
    """A proof needs no model, but a mistyped --model folder is still a mistake."""
    layout = tmp_path / "l.yaml"
    layout.write_text("canvas: {width: 64, height: 64}\nlayers:\n  - generate: {prompt: a cat}\n")
    assert main(["proof", str(layout), "-o", str(tmp_path / "p.png"), "--model", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"studio: error: {tmp_path / 'nope'}: no such model folder (and not a hub id " \
                                      "like 'owner/name')\n"
    assert not (tmp_path / "p.png").exists()
    # '~user' of no such user: Path.expanduser raises a RuntimeError; the path is taken as written
    assert main(["generate", "a cat", "--model", "~nosuchuser/m", "-o", str(tmp_path / "g.png")]) == 2
    assert capsys.readouterr().err == "studio: error: ~nosuchuser/m: no such model folder (and not a hub id like " \
                                      "'owner/name')\n"


def test_a_dry_run_checks_the_output_and_plans_a_published_checkpoint_offline(tmp_path, capsys, monkeypatch):
    """--dry-run refuses what the real run would (a bad -o), and plans a published checkpoint absent from this
    machine from its published configs, as `studio plan` does."""
    from studio import checkpoint
    from studio.errors import CheckpointError

    def offline(path_or_id, weights=True, revision=None):
        raise CheckpointError(f"{path_or_id}: not a local folder, not in the Hugging Face cache")
    monkeypatch.setattr(checkpoint, "resolve_model_dir", offline)
    hub = "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"
    assert main(["generate", "a cat", "--model", hub, "-o", str(tmp_path / "a.gif"), "--dry-run"]) == 2
    assert "unknown image format '.gif'" in capsys.readouterr().err
    assert main(["generate", "a cat", "--model", hub, "-o", str(tmp_path / "a.png"), "--dry-run",
                 "--memory-budget", "20GiB"]) == 0
    assert "1024x1024" in capsys.readouterr().out


def test_a_full_or_read_only_disk_is_one_line(tmp_path, capsys, monkeypatch):
    """Found before any work when the folder can't be written; a disk that fills up while writing is one line
    too (what was written is removed by the writer, tests/test_export.py)."""
    import os

    from studio import cli
    layout = tmp_path / "l.yaml"
    layout.write_text("canvas: {width: 64, height: 64}\nlayers:\n  - fill: {color: red}\n")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(tmp_path) else
                        real_access(path, mode))
    assert main(["proof", str(layout), "-o", str(tmp_path / "p.png")]) == 2
    assert capsys.readouterr().err == (f"studio: error: {tmp_path}: cannot write in this folder (read-only, or no "
                                       "permission)\n")
    monkeypatch.setattr(os, "access", real_access)

    def full(args):
        raise OSError(28, "No space left on device", str(tmp_path / "p.png"))
    monkeypatch.setitem(cli.COMMANDS, "proof", full)
    assert main(["proof", str(layout), "-o", str(tmp_path / "p.png")]) == 2
    assert capsys.readouterr().err == f"studio: error: {tmp_path / 'p.png'}: No space left on device\n"


def test_make_tiny_is_all_or_nothing(tmp_path, capsys):
    """Written beside the target and renamed into place; a killed run's hidden folder is removed by the next
    run; an existing pipeline is refused, or replaced whole with --overwrite; a file is no folder."""
    import subprocess

    from studio.tiny import make_tiny
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    left = tmp_path / f".tiny.{dead:06x}00.part"
    (left / "transformer").mkdir(parents=True)  # a run killed while writing
    mine = tmp_path / f".tiny.{os.getpid():06x}00.part"  # one of a killed run with our pid (a container's pid 1)
    (mine / "vae").mkdir(parents=True)
    make_tiny(tmp_path / "tiny", sample_size=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
    long = make_tiny(tmp_path / ("a" * 235), sample_size=32)  # its hidden folder's name is longer: 250 bytes
    assert long.is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["a" * 235, "tiny"]
    shutil.rmtree(long)
    first = (tmp_path / "tiny" / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert main(["make-tiny", str(tmp_path / "tiny"), "--sample-size", "32"]) == 2
    assert "folder exists and is not empty (pass --overwrite" in capsys.readouterr().err
    assert main(["make-tiny", str(tmp_path / "tiny"), "--sample-size", "32", "--seed", "5", "--overwrite"]) == 0
    assert (tmp_path / "tiny" / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
    (tmp_path / "afile").write_text("")
    assert main(["make-tiny", str(tmp_path / "afile")]) == 2
    assert capsys.readouterr().err == f"studio: error: {tmp_path / 'afile'}: is a file, not a folder\n"


def test_threads_making_one_tiny_pipeline_at_once_each_write_it_whole(tmp_path):
    """Each thread writes into a hidden folder of its own that another's clean-up of killed runs leaves alone (a
    fixed name, shared, was removed under the first thread by the second); the last rename wins, nothing is left."""
    import threading

    from studio.tiny import make_tiny
    failures = []

    def make(seed):
        try:
            make_tiny(tmp_path / "tiny", sample_size=32, seed=seed, overwrite=True)
        except Exception as e:  # noqa: BLE001 (reported below)
            failures.append(e)
    threads = [threading.Thread(target=make, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["model_index.json", "scheduler", "text_encoder",
                                                                     "tokenizer", "transformer", "vae"]


def test_make_tiny_into_a_folder_it_cannot_write_in_is_said_as_export_says_it(tmp_path, monkeypatch, capsys):
    """Not by the hidden temporary folder's name (tests run as root, where permissions stop no write: the folder is
    made unwritable as os.access answers)."""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(tmp_path / "ro") else
                        real_access(path, mode))
    (tmp_path / "ro").mkdir()
    assert main(["make-tiny", str(tmp_path / "ro" / "t"), "--sample-size", "32"]) == 2
    assert capsys.readouterr().err == (f"studio: error: {tmp_path / 'ro'}: cannot write in this folder (read-only, or "
                                       "no permission)\n")
    assert list((tmp_path / "ro").iterdir()) == []


def test_make_tiny_on_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    """The file named as in the folder asked for, not in the hidden one it is written in (safetensors' own writer
    raised a SafetensorError: a traceback); a failure that names no file names that folder. Nothing is left."""
    from pathlib import Path

    from studio import tiny

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    real_write_bytes = Path.write_bytes

    def write_bytes(path, data):  # the disk fills up at the VAE's weights
        if path.parent.name == "vae" and path.suffix == ".safetensors":
            full()
        return real_write_bytes(path, data)
    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    assert main(["make-tiny", str(tmp_path / "t"), "--sample-size", "32"]) == 2
    weights = tmp_path / "t" / "vae" / "diffusion_pytorch_model.safetensors"
    assert capsys.readouterr().err == f"studio: error: {weights}: No space left on device\n"
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(tiny, "write_tiny_tokenizer", full)
    assert main(["make-tiny", str(tmp_path / "t"), "--sample-size", "32"]) == 2
    assert capsys.readouterr().err == f"studio: error: {tmp_path / 't'}: No space left on device\n"
    assert list(tmp_path.iterdir()) == []


def test_make_tiny_replaces_only_a_pipeline_and_never_the_working_folder(tmp_path, monkeypatch, capsys):
    """--overwrite replaces a pipeline folder or an empty one, never a folder of other files, nor the working
    folder ('.') or one holding it (the shell would be left in a removed folder); '' is refused as empty
    (`test_an_empty_value_is_refused`)."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    assert main(["make-tiny", str(mine), "--sample-size", "32", "--overwrite"]) == 2
    assert capsys.readouterr().err == (f"studio: error: {mine}: not a pipeline folder (no model_index.json) and not "
                                       "empty; nothing was changed (only a pipeline folder is replaced, with "
                                       "--overwrite)\n")
    assert [p.name for p in mine.iterdir()] == ["thesis.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]

    here = tmp_path / "here"
    (here / "sub").mkdir(parents=True)
    monkeypatch.chdir(here / "sub")
    for given, what in ((".", "is the working folder"), ("..", "is the working folder or holds it")):
        assert main(["make-tiny", given, "--sample-size", "32", "--overwrite"]) == 2
        assert capsys.readouterr().err == (f"studio: error: {given}: {what}; make-tiny replaces its folder whole: "
                                           "name another one (e.g. make-tiny tiny)\n")
    assert main(["make-tiny", "tiny", "--sample-size", "32"]) == 0
    assert (here / "sub" / "tiny" / "model_index.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here", "mine"]


def test_an_output_that_is_an_input_of_the_layout_is_refused_even_with_overwrite(tmp_path, capsys):
    """proof -o and render's files may not be a file the layout reads: the same path, or the same file through a
    symbolic link."""
    Image.new("RGB", (8, 8), "red").save(tmp_path / "logo.png")
    logo = (tmp_path / "logo.png").read_bytes()
    layout = tmp_path / "l.yaml"
    layout.write_text("canvas: {width: 64, height: 32}\nlayers:\n  - fill: {color: navy}\n  - image: {path: logo.png}\n"
                      "output: {name: logo, formats: [png]}\n")
    (tmp_path / "again").symlink_to(tmp_path)
    for command, out, path in [("proof", tmp_path / "logo.png", tmp_path / "logo.png"),
                               ("proof", tmp_path / "again" / "logo.png", tmp_path / "again" / "logo.png"),
                               ("render", tmp_path / "again", tmp_path / "again" / "logo.png")]:
        assert main([command, str(layout), "-o", str(out), "--overwrite"]) == 2
        assert capsys.readouterr().err == f"studio: error: {path} is an input of the layout (layers[1].image.path)\n"
    assert (tmp_path / "logo.png").read_bytes() == logo
    assert main(["proof", str(layout), "-o", str(tmp_path / "proof.png")]) == 0


def test_an_output_file_that_is_a_folder_is_said_to_be_one(tmp_path, capsys):
    layout = tmp_path / "l.yaml"
    layout.write_text("canvas: {width: 64, height: 64}\nlayers:\n  - fill: {color: red}\n")
    for argv in (["generate", "a cat", "--dry-run"], ["proof", str(layout)]):
        assert main(argv + ["-o", str(tmp_path)]) == 2
        assert capsys.readouterr().err == (f"studio: error: {tmp_path}: is a folder; give a file name ending .jpeg, "
                                           ".jpg, .png, .tif, .tiff, .webp\n")


def test_the_environments_model_is_named_in_errors(tmp_path, monkeypatch, capsys):
    """$STUDIO_MODEL empty is unset (the published checkpoint); a model taken from it is said to come from there
    when it is wrong."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    layout = tmp_path / "l.yaml"
    layout.write_text("canvas: {width: 64, height: 64}\nlayers:\n  - generate: {prompt: a cat}\n")
    base = ["generate", "a cat", "-o", str(tmp_path / "a.png"), "--dry-run", "--memory-budget", "20GiB"]
    monkeypatch.setenv("STUDIO_MODEL", "")
    assert main(base) == 0
    assert capsys.readouterr().out.startswith("generation 1024x1024 px")  # planned from the published configs
    nope = tmp_path / "nope"
    monkeypatch.setenv("STUDIO_MODEL", str(nope))
    for argv in (base, ["render", str(layout), "-o", str(tmp_path / "out"), "--memory-budget", "2GiB"],
                 ["plan", str(layout)], ["proof", str(layout), "-o", str(tmp_path / "p.png")]):
        assert main(argv) == 2
        assert capsys.readouterr().err == (f"studio: error: {nope} (from $STUDIO_MODEL): no such model folder (and "
                                           "not a hub id like 'owner/name')\n")
    assert not (tmp_path / "p.png").exists()
    assert main(base + ["--model", str(nope)]) == 2
    assert capsys.readouterr().err == (f"studio: error: {nope}: no such model folder (and not a hub id like "
                                       "'owner/name')\n")
    # no model anywhere: the published default, not on this machine, is said to be the default; no folder made
    monkeypatch.delenv("STUDIO_MODEL")
    assert main(["render", str(layout), "-o", str(tmp_path / "out"), "--memory-budget", "8GiB"]) == 2
    assert capsys.readouterr().err.endswith(
        "(no --model given: the published checkpoint is the default; pass --model DIR, set $STUDIO_MODEL, or try "
        "`studio make-tiny tiny` and --model tiny)\n")
    assert not (tmp_path / "out").exists()


def test_only_errors_about_the_environments_model_say_it_comes_from_there(tiny_dir, tmp_path, monkeypatch, capsys):
    """$STUDIO_MODEL=tiny and an -o named tiny too (the model's folder): the -o's error is not said to come from
    $STUDIO_MODEL (every line starting 'tiny: ' was); one about the model is, a hub id's without its revision."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").symlink_to(tiny_dir)
    monkeypatch.setenv("STUDIO_MODEL", "tiny")
    assert main(["generate", "a", "-o", "tiny", "--steps", "1", "--size", "256x256"]) == 2
    assert capsys.readouterr().err == ("studio: error: tiny: is a folder; give a file name ending .jpeg, .jpg, .png, "
                                       ".tif, .tiff, .webp\n")
    (tmp_path / "tiny").unlink()
    (tmp_path / "tiny").mkdir()  # a folder, no model: the model's error
    assert main(["generate", "a", "-o", "a.png", "--steps", "1", "--size", "256x256"]) == 2
    assert capsys.readouterr().err == ("studio: error: tiny (from $STUDIO_MODEL): no model_index.json; expected a "
                                       "pipeline folder in the diffusers layout\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("STUDIO_MODEL", "someone/nope@v1")  # named without its revision
    assert main(["generate", "a", "-o", "a.png", "--dry-run"]) == 2
    assert capsys.readouterr().err == ("studio: error: someone/nope (from $STUDIO_MODEL): not a local folder, not in "
                                       "the Hugging Face cache at revision 'v1', and could not be downloaded "
                                       "(ConnectionError: HF_HUB_OFFLINE is set); pass the folder of a downloaded "
                                       "copy\n")


def test_a_bad_studio_device_is_named(tiny_dir, tmp_path, monkeypatch, capsys):
    """A device from the environment that is wrong is said to come from there: the command line names none."""
    from studio import backend

    monkeypatch.setattr(backend, "_SETUP_DONE", False)  # as in a new process: $STUDIO_DEVICE is read
    monkeypatch.setenv("STUDIO_DEVICE", "TPU")
    assert main(["generate", "a cat", "--model", str(tiny_dir), "-o", str(tmp_path / "a.png"), "--dry-run"]) == 2
    assert capsys.readouterr().err == ("studio: error: STUDIO_DEVICE=TPU: device 'TPU' is not one of CPU, GPU or "
                                       "Ascend, with ':N' for the device number (GPU:1)\n")


@pytest.mark.parametrize("value", ["x", "5.5"])
def test_a_bad_studio_cpu_nice_is_named(tiny_dir, tmp_path, monkeypatch, capsys, value):
    from studio import backend

    monkeypatch.setattr(backend, "_SETUP_DONE", False)  # as in a new process
    monkeypatch.setenv("STUDIO_CPU_NICE", value)
    assert main(["generate", "a cat", "--model", str(tiny_dir), "-o", str(tmp_path / "a.png"), "--dry-run"]) == 2
    assert capsys.readouterr().err == (f"studio: error: STUDIO_CPU_NICE={value}: expected a whole number (19, the "
                                       "default, lowers the waiting thread's priority most; 0 keeps it)\n")


def test_render_takes_a_folder_not_a_file_name(tmp_path, capsys):
    layout = tmp_path / "l.yaml"
    layout.write_text("canvas: {width: 64, height: 64}\nlayers:\n  - fill: {color: red}\n")
    assert main(["render", str(layout), "-o", str(tmp_path / "final.png")]) == 2
    assert "render writes into a folder" in capsys.readouterr().err and not (tmp_path / "final.png").exists()


def test_import_studio_loads_mindspore_only_for_the_pipeline():
    """`from studio import PixArtSigmaPipeline` as from diffusers; `import studio` alone (plans, proofs) stays light."""
    code = ("import sys, studio; light = 'mindspore' not in sys.modules; from studio import PixArtSigmaPipeline; "
            "print(light, 'mindspore' in sys.modules, PixArtSigmaPipeline.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "studio.pipeline"]


def test_revision_picks_a_cached_snapshot_of_a_hub_id(tiny_dir, tmp_path, monkeypatch, capsys):
    """--revision as diffusers' revision=: a snapshot cached by commit hash alone plans and generates; the file
    names the model as a layout's `model:` or --model pins it, owner/name@revision."""
    from tests.test_checkpoint import _hub_cache

    revision = "d" * 40
    _hub_cache(tiny_dir, tmp_path / "hub", [revision], {})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["generate", "a cat", "--model", "someone/tiny-pixart", "-o", str(tmp_path / "cat.png"), "--size",
            "128x128", "--steps", "1", "--seed", "1", "--no-binning", "--quiet"]
    assert main(args) == 2
    assert "not in the Hugging Face cache" in capsys.readouterr().err
    assert main(args + ["--revision", revision, "--dry-run"]) == 0
    assert "generation 128x128 px" in capsys.readouterr().out
    assert main(args + ["--revision", revision]) == 0
    with Image.open(tmp_path / "cat.png") as image:
        assert image.text["model"] == f"someone/tiny-pixart@{revision}"
    assert main(args + [f"--model=someone/tiny-pixart@{revision}", "--revision", revision, "--overwrite"]) == 0
    with Image.open(tmp_path / "cat.png") as image:
        assert image.text["model"] == f"someone/tiny-pixart@{revision}"


@pytest.mark.parametrize("text, expected", [
    ("cpu", ("CPU", None)), ("GPU", ("GPU", None)), (" gpu:1 ", ("GPU", 1)), ("Ascend:0", ("Ascend", 0)),
    ("npu", ("Ascend", None)),
])
def test_device_names(text, expected):
    from studio.backend import parse_device
    assert parse_device(text) == expected


@pytest.mark.parametrize("text", ["tpu", "GPU:", "GPU:x", "gpu:-1", ""])
def test_device_names_refused(text):
    from studio.backend import parse_device
    with pytest.raises(InputError, match=r"is not one of CPU, GPU or Ascend, with ':N'"):
        parse_device(text)


def test_the_cpu_has_no_device_number():
    from studio.backend import parse_device
    with pytest.raises(InputError, match=r"^device 'CPU:3': the CPU has no device number \(write CPU\)$"):
        parse_device("CPU:3")


def test_a_device_this_mindspore_cannot_use_is_one_line(tmp_path):
    """--device GPU with MindSpore's CPU build: MindSpore prints what libraries it could not load and raises
    a C++ error; studio says it in one line, before reading the model."""
    import mindspore as ms
    from studio import backend
    with backend._stderr_held():
        if ms.hal.is_available("GPU"):
            pytest.skip("this machine has a GPU")
    done = subprocess.run([sys.executable, "-m", "studio.cli", "generate", "a cat", "--model", str(tmp_path / "none"),
                           "-o", str(tmp_path / "a.png"), "--device", "gpu:1"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == (f"studio: error: device GPU: this MindSpore ({ms.__version__}) can't use it here (it needs "
                           "MindSpore's GPU build and the device's drivers)\n")
    bad = subprocess.run([sys.executable, "-m", "studio.cli", "plan", "x.yaml", "--device", "tpu"], capture_output=True,
                         text=True)
    assert (bad.returncode, bad.stderr) == (2, "studio: error: device 'tpu' is not one of CPU, GPU or Ascend, with "
                                               "':N' for the device number (GPU:1)\n")


def test_the_device_is_chosen_once_per_process(monkeypatch):
    """Once set, a call without a device (the pipeline's, the automatic budget's) keeps it: $STUDIO_DEVICE only
    chose the first time, so --device wins over it; another device, or another number of it, is refused."""
    from studio import backend
    monkeypatch.setattr(backend, "_SETUP_DONE", True)
    monkeypatch.setattr(backend, "_DEVICE", "CPU")
    monkeypatch.setenv("STUDIO_DEVICE", "GPU")
    assert backend.setup("cpu") == "CPU" and backend.setup() == "CPU"
    with pytest.raises(InputError, match=r"^device 'GPU:0': this process already runs on CPU \(MindSpore's device is "
                                         r"chosen once per process\)$"):
        backend.setup("GPU:0")
    monkeypatch.setattr(backend, "_DEVICE", "GPU")
    monkeypatch.setattr(backend, "_NUMBER", 0)
    assert backend.setup("GPU") == backend.setup("gpu:0") == "GPU"
    with pytest.raises(InputError, match=r"^device 'GPU:1': this process already runs on GPU:0 "):
        backend.setup("GPU:1")
    import mindspore as ms
    monkeypatch.setattr(backend, "_NUMBER", None)  # set without a number: MindSpore's device_id, 0 here
    assert ms.get_context("device_id") == 0 and backend.setup("GPU:0") == "GPU"
    with pytest.raises(InputError, match=r"^device 'GPU:1': this process already runs on GPU:0 "):
        backend.setup("GPU:1")


def test_a_plan_made_before_loading_takes_the_device(tiny_dir, tmp_path):
    """The API's plans and render choose the device as from_pretrained does (a plan reads the device's free
    memory, which sets MindSpore's device for the process): one made without it left a later
    from_pretrained(device="GPU:1") refused. Here the process runs on the CPU, so the GPU is refused by each."""
    from studio import pipeline, render
    from studio.layout import parse_layout
    from studio.plan import plan_layout

    layout = parse_layout("canvas: {width: 64, height: 64}\nlayers:\n  - generate: {prompt: a cat, steps: 1}\n")
    assert pipeline.plan(tiny_dir, 64, 64, device="cpu").budget > 0
    assert plan_layout(layout, str(tiny_dir), device="CPU").jobs[0].model == str(tiny_dir)
    refused = r"^device 'GPU': this process already runs on CPU "
    with pytest.raises(InputError, match=refused):
        pipeline.plan(tiny_dir, 64, 64, memory_budget="1GiB", device="GPU")
    with pytest.raises(InputError, match=refused):
        plan_layout(layout, str(tiny_dir), device="GPU")
    with pytest.raises(InputError, match=refused):
        render.render(layout, tmp_path / "out", str(tiny_dir), device="GPU")
    assert not (tmp_path / "out").exists()


def test_device_flag_wins_over_the_environment(tiny_dir, tmp_path):
    """STUDIO_DEVICE=GPU exported, --device CPU given: the command runs on the CPU (it used to fail when the
    pipeline set the device up again from the environment)."""
    import os
    env = {**os.environ, "STUDIO_DEVICE": "GPU"}
    done = subprocess.run([sys.executable, "-m", "studio.cli", "generate", "a cat", "--model", str(tiny_dir), "-o",
                           str(tmp_path / "a.png"), "--size", "64x64", "--no-binning", "--steps", "1", "--quiet",
                           "--device", "CPU"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-1000:]
    assert (tmp_path / "a.png").is_file()


def test_too_little_temporary_disk_for_a_tiled_decode_fails_before_any_work(tiny_dir, tmp_path, monkeypatch, capsys):
    """The maps of a tiled decode in files need disk ($STUDIO_TMPDIR): too little is found by --dry-run, and by a
    call before it encodes a prompt, not after denoising."""
    import shutil
    from studio import vae_tiling
    from studio.errors import PlanError
    from studio.pipeline import PixArtSigmaPipeline

    monkeypatch.setenv("STUDIO_TMPDIR", str(tmp_path))
    monkeypatch.setattr(vae_tiling.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 4096, 4096))
    (tmp_path / "out").mkdir()
    args = ["generate", "a cat", "--model", str(tiny_dir), "-o", str(tmp_path / "out" / "a.png"), "--size",
            "1024x1024", "--memory-budget", "59MiB", "--dry-run"]  # tiled; 58.45 MiB the least (the resize from 256)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(rf"studio: error: tiled VAE needs [\d.]+ MiB of temporary disk for its feature maps; "
                        rf"{re.escape(str(tmp_path))} has 4.00 KiB free \(set STUDIO_TMPDIR to a folder on a larger "
                        rf"disk\)\n", err), err
    assert main(args[:-3] + ["--memory-budget", "4GiB", "--dry-run"]) == 0  # untiled: no disk needed
    monkeypatch.setenv("STUDIO_TMPDIR", str(tmp_path / "nowhere"))
    assert main(args) == 2
    assert capsys.readouterr().err.endswith(f"studio: error: STUDIO_TMPDIR={tmp_path / 'nowhere'}: no such folder "
                                            "(tiled VAE decoding keeps its feature maps there)\n")
    monkeypatch.setenv("STUDIO_TMPDIR", str(tmp_path))

    real_temporary_file = vae_tiling.tempfile.TemporaryFile

    def read_only(*args, dir=None, **kwargs):  # as a read-only mount answers (root writes through file permissions)
        if str(dir) != str(tmp_path):  # the output's folder, checked first, is another
            return real_temporary_file(*args, dir=dir, **kwargs)
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), dir)
    with monkeypatch.context() as m:
        m.setattr(vae_tiling.tempfile, "TemporaryFile", read_only)
        assert main(args) == 2
    assert capsys.readouterr().err.endswith(f"studio: error: {tmp_path}: cannot write there (Read-only file system); "
                                            "tiled VAE decoding keeps its feature maps there (set STUDIO_TMPDIR to a "
                                            "writable folder)\n")
    capsys.readouterr()
    pipe, phases = PixArtSigmaPipeline.from_pretrained(tiny_dir), []
    with pytest.raises(PlanError, match="tiled VAE needs"):
        pipe("a cat", height=1024, width=1024, num_inference_steps=1, memory_budget="59MiB",
             progress=lambda phase, done, total: phases.append(phase))
    assert phases == []
    assert pipe("a cat", height=1024, width=1024, num_inference_steps=1, memory_budget="25MiB",
                output_type="latent").images.shape == (1, 4, 32, 32)  # no decode: no disk (binned to 256 px)


def run_with_import_hook(module: str, action: str, args: list[str], cwd,
                         sigint_ignored: bool = False) -> subprocess.CompletedProcess:
    """The `studio` command in a new process whose first import of `module` runs `action` (Python, where `os`,
    `signal` and `sys` are imported): a signal at a chosen moment of start-up. `sigint_ignored`: started with
    SIGINT ignored, as `nohup` or a script's background job starts it."""
    script = f"""\
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN if {sigint_ignored} else signal.default_int_handler)
class Hook:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            sys.meta_path.remove(self)
            {action}
sys.meta_path.insert(0, Hook())
from studio.__main__ import main
sys.exit(main())
"""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # set in this process by an import
    env["OPENBLAS_NUM_THREADS"] = "2"  # numpy's threads run, as a user's do: a signal may go to one of them
    return subprocess.run([sys.executable, "-c", script, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("signum, code, said", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_signal_while_mindspore_loads_ends_the_command_cleanly(signum, code, said, tiny_dir, tmp_path):
    """Held until MindSpore is in, then taken as anywhere else (numpy's threads took it through the thread mask
    held before: a half-loaded MindSpore aborted the interpreter at exit, status 134)."""
    done = run_with_import_hook("mindspore.nn", f"os.kill(os.getpid(), signal.{signum})",
                                ["generate", "a cat", "-o", "a.png", "--model", str(tiny_dir), "--size", "64x64"],
                                tmp_path)
    assert (done.returncode, done.stderr) == (code, f"studio: {said}\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("module, action", [
    ("yaml", "os.kill(os.getpid(), signal.SIGINT)"),  # while studio.cli loads, before it handles signals
    ("studio.render", "raise ImportError('initialization failed') from KeyboardInterrupt()"),  # a C extension's
])
def test_a_ctrl_c_while_modules_load_is_one_line(module, action, tmp_path):
    done = run_with_import_hook(module, action, ["proof", "l.yaml", "-o", "p.png"], tmp_path)
    assert (done.returncode, done.stderr) == (130, "studio: interrupted\n")


@pytest.mark.parametrize("module, signum, code, said", [
    ("studio.errors", "SIGINT", 130, "interrupted"),  # the first module of studio's the command loads
    ("datetime", "SIGINT", 130, "interrupted"),  # inside numpy's C start-up: its ImportError hid the interrupt
    ("PIL.Image", "SIGTERM", 143, "terminated"),
])
def test_a_signal_while_the_command_line_loads_is_one_line(module, signum, code, said, tmp_path):
    """Noted from the first line of studio.__main__ until studio.cli is in, then the command ends as the CLI
    ends on that signal: no traceback, not numpy's 'PyCapsule_Import could not import module datetime'."""
    done = run_with_import_hook(module, f"os.kill(os.getpid(), signal.{signum})", ["proof", "l.yaml", "-o", "p.png"],
                                tmp_path)
    assert (done.returncode, done.stderr) == (code, f"studio: {said}\n")
    assert list(tmp_path.iterdir()) == []


def test_a_ctrl_c_the_caller_ignores_is_ignored_while_the_command_line_loads(tmp_path):
    (tmp_path / "l.yaml").write_text("canvas: {width: 64, height: 48}\nlayers:\n  - fill: {color: red}\n")
    done = run_with_import_hook("yaml", "os.kill(os.getpid(), signal.SIGINT)", ["proof", "l.yaml", "-o", "p.png"],
                                tmp_path, sigint_ignored=True)
    assert (done.returncode, done.stderr) == (0, "")
    with Image.open(tmp_path / "p.png") as image:
        assert image.size == (64, 48)


def test_a_command_started_without_stdout_ends_with_its_status(tmp_path):
    """`studio ... >&-`: Python has no sys.stdout (None), which the end of the process flushed no more (a traceback,
    exit 1): an error is its one line and status 2, a command that works exits 0."""
    (tmp_path / "l.yaml").write_text("canvas: {width: 64, height: 48}\nlayers:\n  - fill: {color: red}\n")

    def closed(*args):
        return subprocess.run(["bash", "-c", '"$@" >&-', "bash", sys.executable, "-m", "studio", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
    done = closed("plan", "missing.yaml")
    assert (done.returncode, done.stderr) == (2, "studio: error: missing.yaml: no such layout file\n")
    done = closed("proof", "l.yaml", "-o", "p.png")
    assert (done.returncode, done.stderr, done.stdout) == (0, "", "")
    with Image.open(tmp_path / "p.png") as image:
        assert image.size == (64, 48)


def test_the_process_ends_with_the_commands_status_without_the_interpreters_teardown(tiny_dir, tmp_path):
    """A signal in the teardown after the command (MindSpore's took up to a second) can't change its status or
    print a traceback: there is none (an exit hook, which would say so and send SIGTERM, never runs); the command's
    output is flushed."""
    action = ("import atexit; atexit.register(lambda: print('teardown', file=sys.stderr) or "
              "os.kill(os.getpid(), signal.SIGTERM))")
    done = run_with_import_hook("mindspore", action, ["generate", "a cat", "-o", "a.png", "--model", str(tiny_dir),
                                                      "--size", "64x64", "--dry-run"], tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("generation ") and done.stdout.splitlines()[-1].startswith("peak ")


def test_a_proofs_note_says_a_plan_of_several_problems_in_one_line(tiny_dir, tmp_path, monkeypatch, capsys):
    """The planner reports every layer's problem at once, a line each; a proof, which needs no plan, says the
    first and how many more on its one note line (not the lines joined with an escaped '\\n')."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_dir, "m")
    config = json.loads(Path("m/scheduler/scheduler_config.json").read_text())
    Path("m/scheduler/scheduler_config.json").write_text(json.dumps(config | {"num_train_timesteps": 10}))
    Path("l.yaml").write_text("canvas: {width: 64, height: 64}\nlayers:\n  - generate: {prompt: a, steps: 20}\n"
                              "  - generate: {prompt: b, steps: 30}\n")
    assert main(["proof", "l.yaml", "--model", "m", "-o", "p.png"]) == 0
    note = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: placeholders")]
    assert note == ["note: placeholders without generation sizes (l.yaml:3: layers[0].generate.steps: 20 must be an "
                    "integer in 1..10 (the model's scheduler has 10 training steps) (and 1 more))"]
