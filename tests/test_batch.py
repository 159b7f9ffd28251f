"""Batch jobs: expansion, names, shards, manifests, resume after SIGKILL/SIGTERM/SIGINT, rerender, failures.

The end-to-end tests run `studio batch` on the tiny checkpoint with a 64x64 or 128x128 canvas and one
step, in this process or (for kills) in a subprocess that a test hook (STUDIO_TEST_PAUSE_IN) stops at a
chosen point: mid-denoise; outputs in place without a manifest; mid-write of an output that replaces an
older one (temporary file written, not renamed); mid-write of the manifest.
"""

import codecs
import errno
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from studio import batch, export, manifest
from studio.batch import (JOB_KEYS, STALE_PART, EmbeddingCache, JobError, format_name, load_job, name_problem,
                          rerender, run_batch, select_shard, slug)
from studio.cli import main
from studio.errors import InputError

LAYOUT = """\
canvas: {width: 128, height: 128}
variables: {prompt: "a cat", seed: 1}
layers:
  - generate: {prompt: "{prompt}", seed: "{seed}", steps: 1}
"""


def write_job(folder: Path, body: str, layout: str = LAYOUT, name: str = "job.yaml") -> Path:
    (folder / "card.yaml").write_text(layout)
    (folder / name).write_text(body)
    return folder / name


def job_errors(path: Path, model: str | None = None) -> list[str]:
    """The problems `load_job(path, model)` reports, asserting it raises JobError."""
    with pytest.raises(JobError) as e:
        load_job(path, model)
    return e.value.errors


def run(job: Path, out: Path, model, stderr=None, **kwargs):
    """run_batch, quiet, with a fixed memory budget (the automatic one follows the machine's free memory)."""
    stdout, stderr = io.StringIO(), stderr or io.StringIO()
    kwargs.setdefault("memory_budget", "2GiB")
    summary = run_batch(load_job(job, str(model)), out, quiet=True, out=stdout, err=stderr, **kwargs)
    return summary, stdout.getvalue()


def edit(sidecar: Path, change) -> dict:
    """Change a manifest in place as a person or a damaged disk would (no new digest); returns the record."""
    record = json.loads(sidecar.read_text())
    change(record)
    sidecar.write_text(json.dumps(record))
    return record


def errors_of(argv: list, capsys) -> list[str]:
    """`studio ARGV`'s stderr lines, asserting it exits with 2 (a user mistake) and prints no traceback."""
    assert main([str(a) for a in argv]) == 2
    return capsys.readouterr().err.splitlines()


def sidecars(out: Path) -> dict[str, dict]:
    return {str(p.relative_to(out)).removesuffix(manifest.SIDECAR_SUFFIX): json.loads(p.read_text())
            for p in out.rglob("*" + manifest.SIDECAR_SUFFIX)}


def assert_complete(out: Path, names: set[str]) -> None:
    """Exactly `names` are finished: each sidecar lists files whose bytes hash to the recorded sha256;
    no temporary file is left anywhere in `out`."""
    found = sidecars(out)
    assert set(found) == names
    for name, record in found.items():
        folder = (out / name).parent
        assert manifest.check(record, folder, {"item": record["item"]}) is None, name
    assert not [p for p in out.rglob("*") if ".part" in p.name]


# -- jobs and names (no model) ----------------------------------------------------------------------------------

def test_matrix_then_items_in_order_with_names(tmp_path):
    job = write_job(tmp_path, """\
layout: card.yaml
name: "{prompt_slug}-{seed:03d}-{n}"
variables: {prompt: unused}
matrix:
  prompt: ["A Red Fox!", "misty mountains"]
  seed: [1, 2]
items:
  - {seed: 9}
""")
    items = load_job(job, "m").items
    assert [i.name for i in items] == ["a-red-fox-001-1", "a-red-fox-002-2", "misty-mountains-001-3",
                                       "misty-mountains-002-4", "unused-009-5"]
    assert items[0].variables == {"prompt": "A Red Fox!", "seed": "1"}
    assert len({i.key for i in items}) == 5
    assert [i.key for i in load_job(job, "m").items] == [i.key for i in items]  # stable
    assert load_job(job, "other").items[0].key != items[0].key  # the model is part of an item's identity


def test_matrix_value_sets_several_variables_and_layout_axis(tmp_path):
    layout = LAYOUT.replace("canvas: {width: 128, height: 128}", 'canvas: {width: "{w}", height: "{h}"}')
    layout = layout.replace("variables: {", "variables: {w: 128, h: 128, ")
    job = write_job(tmp_path, """\
layout: card.yaml
name: "{layout}-{w}x{h}"
matrix:
  size: [{w: 128, h: 64}, {w: 64, h: 128}]
""", layout)
    assert [(i.name, i.variables) for i in load_job(job, "m").items] == [
        ("card-128x64", {"w": "128", "h": "64"}), ("card-64x128", {"w": "64", "h": "128"})]


def test_csv_job_with_layout_and_name_columns(tmp_path):
    (tmp_path / "card.yaml").write_text(LAYOUT)
    (tmp_path / "jobs.csv").write_text("layout,name,prompt,seed\ncard.yaml,{prompt_slug}-{seed},a boat,3\n"
                                       "card.yaml,plain-{n},,4\n")
    items = load_job(tmp_path / "jobs.csv", "m").items
    assert [(i.name, i.variables) for i in items] == [("a-boat-3", {"prompt": "a boat", "seed": "3"}),
                                                      ("plain-2", {"seed": "4"})]  # empty cell: unset


def test_yaml_job_reads_items_from_csv(tmp_path):
    (tmp_path / "rows.csv").write_text("prompt,seed\nfox,1\nowl,2\n")
    job = write_job(tmp_path, "layout: card.yaml\nname: '{prompt}/{seed}'\nitems: rows.csv\n")
    assert [i.name for i in load_job(job, "m").items] == ["fox/1", "owl/2"]


def test_slug():
    assert slug("  A Red Fox, at dusk! ") == "a-red-fox-at-dusk"
    assert slug("Café crème") == "cafe-creme"
    assert slug("海边的灯塔").startswith("x") and len(slug("海边的灯塔")) == 9
    assert len(slug("word " * 40)) <= 60


@pytest.mark.parametrize("name", ["../x", "/etc/x", "a/../../b", "a\\b", ".hidden", "a/.cache", "a//b", "a/",
                                  "", ".", "C:x", "a\nb"])
def test_escaping_or_hidden_names_are_rejected(name):
    assert name_problem(name) is not None


@pytest.mark.parametrize("name", ["a", "fox/1", "a b/c-d_e.v2", "x" * 200])
def test_plain_names_and_subfolders_are_accepted(name):
    assert name_problem(name) is None


def test_job_with_escaping_names_fails_before_rendering(tmp_path):
    job = write_job(tmp_path, """\
layout: card.yaml
name: "{prompt}"
items:
  - {prompt: ok}
  - {prompt: ../../outside}
  - {prompt: /etc/passwd}
""")
    errors = job_errors(job, "m")
    assert [line.split(": ", 1)[0] for line in errors] == [f"{job}:5", f"{job}:6"]
    assert "'../../outside'" in errors[0] and "stay inside OUTDIR" in errors[0]
    assert main(["batch", str(job), "-o", str(tmp_path / "out"), "--model", "m"]) == 2
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "outside").exists()


def test_job_errors_name_file_line_and_key(tmp_path):
    job = write_job(tmp_path, """\
layout: card.yaml
nmae: x
matrix:
  seed: []
  prompt: [[1, 2]]
""")
    errors = job_errors(job, "m")
    assert errors == [f"{job}:2: nmae: unknown key (allowed: {', '.join(JOB_KEYS)})",
                      f"{job}:4: matrix.seed: expected a non-empty list of values",
                      f"{job}:5: matrix.prompt[0]: expected text, a number or a mapping of them, got a list"]
    job = write_job(tmp_path, """\
layout: card.yaml
items:
  - {seed: 1, name: "{nope}"}
  - {seed: 1, name: same}
  - {seed: 2, name: SAME}
""")
    errors = job_errors(job, "m")
    assert errors[0].startswith(f"{job}:3: name '{{nope}}': {{nope}} is not set for this item (fields: ")
    assert errors[1] == (f"{job}:5: output name 'SAME' of item 3 {{\"seed\": \"2\"}} is also that of item 2 "
                         f"{{\"seed\": \"1\"}} at {job}:4")
    # the items of a matrix share its line: a problem they all have is said once
    job = write_job(tmp_path, 'layout: card.yaml\nname: "{seed}-{nope}"\nmatrix: {seed: [1, 2, 3]}\n')
    [error] = job_errors(job, "m")
    assert error.startswith(f"{job}:3: name '{{seed}}-{{nope}}': {{nope}} is not set for this item (fields: ")


def test_a_table_not_named_csv_is_read_as_yaml_and_the_error_says_so(tmp_path):
    """Excel's 'Text (Tab delimited)' saves .txt; a .tsv, a comma table named .txt: the YAML error adds that CSV
    jobs are told by their name. A YAML job with a problem of its own gets no such hint."""
    hint = " (a table? a CSV job is read as CSV only when its name ends in .csv)"
    for name, text in [("job.txt", "layout,seed\ncard.yaml,1\n"), ("job.tsv", "layout\tseed\ncard.yaml\t1\n")]:
        [error] = job_errors(write_job(tmp_path, text, name=name), "m")
        assert error.startswith(f"{tmp_path / name}:") and error.endswith(hint), error
    [error] = job_errors(write_job(tmp_path, "- layout, seed\n", name="list.yaml"), "m")
    assert error == f"{tmp_path / 'list.yaml'}:1: a job is a mapping with keys {', '.join(JOB_KEYS)}"


def test_an_unquoted_colour_is_a_comment_and_the_error_says_to_quote_it(tmp_path):
    """`tint: #ff5a5f` and `- #ff5a5f` are a key and a dash followed by a comment: YAML reads nothing. The error
    says to quote the colour; a value left empty on purpose, or a comment after a space, gets no such hint."""
    job = write_job(tmp_path, """\
layout: card.yaml
variables:
  tint: #ff5a5f
  shade:
matrix:
  accent:
    - #0f0   # green
    - # a comment, not a colour
    - "#00f"
items:
  - {seed: 1}
  - tint: #abc
""")
    hint = "(quote values that start with '#': \"{}\")"
    assert job_errors(job, "m") == [
        f"{job}:3: variables.tint: expected text or a number, got nothing {hint.format('#ff5a5f')}",
        f"{job}:4: variables.shade: expected text or a number, got nothing",
        f"{job}:7: matrix.accent[0]: expected text, a number or a mapping of them, got nothing {hint.format('#0f0')}",
        f"{job}:8: matrix.accent[1]: expected text, a number or a mapping of them, got nothing",
        f"{job}:12: items[1].tint: expected text or a number, got nothing {hint.format('#abc')}"]


def test_a_yaml_1_1_line_break_in_a_value_is_text_and_starts_no_line(tmp_path):
    """U+2028 and NEL in a job's value are text, as in a layout (YAML 1.2, editors): lines count LFs only. PyYAML
    counted them as line breaks, so the errors named the line after, and a YAML error quoted another line."""
    job = write_job(tmp_path, "")
    job.write_text('layout: card.yaml\nvariables:\n  prompt: "a fox\u2028at dusk\x85"\n  tint: #ff5a5f\n'
                   'items:\n  - {seed: 1}\n', encoding="utf-8")
    assert job_errors(job, "m") == [f"{job}:4: variables.tint: expected text or a number, got nothing (quote values "
                                    f"that start with '#': \"#ff5a5f\")"]
    job.write_text('layout: card.yaml\nvariables: {prompt: "a fox\u2028at dusk\x85"}\nitems:\n  - {seed: 1}\n',
                   encoding="utf-8")
    [item] = load_job(job, "m").items
    assert item.variables == {"prompt": "a fox\u2028at dusk\x85", "seed": "1"}
    job.write_text('variables: {prompt: "a\u2028fox"}\nitems:\n\t- {seed: 1}\n', encoding="utf-8")
    assert job_errors(job, "m") == [f"{job}:3: YAML: a tab: indent with spaces, and put spaces, not tabs, after ':', "
                                    f"'-', ',' or a bracket"]


def test_the_jobs_problems_and_its_items_are_reported_in_one_round(tmp_path):
    """A problem at the top of the job (a bad budget, an unknown key) does not hide the items' problems; an item
    with a problem of its own is left out of the items' checks, but still counted by {n}."""
    job = write_job(tmp_path, """\
layout: card.yaml
name: "../{seed}"
memory_budget: lots
items:
  - {seed: 1}
  - {seed: 2, n: 3}
""")
    assert job_errors(job, "m") == [
        f"{job}:3: memory_budget: 'lots' is not a size like 6GiB, 512MiB or 2GB",
        f"{job}:5: output name '../1' has a '..' part (names stay inside OUTDIR)",
        f"{job}:6: variable 'n': output names use {{n}} for the item's number; rename the variable",
        f"{job}:6: output name '../2' has a '..' part (names stay inside OUTDIR)"]
    job = write_job(tmp_path, """\
layout: card.yaml
nmae: "{seed}"
items:
  - {seed: [1]}
  - {seed: 2, name: "a{n}"}
  - {seed: 3, name: A2}
""")
    assert job_errors(job, "m") == [
        f"{job}:2: nmae: unknown key (allowed: {', '.join(JOB_KEYS)})",
        f"{job}:4: items[0].seed: expected text or a number, got a list",
        f"{job}:6: output name 'A2' of item 3 {{\"seed\": \"3\"}} is also that of item 2 {{\"seed\": \"2\"}} at "
        f"{job}:5"]
    (tmp_path / "rows.csv").write_text("seed,name\n1,a,x\n2,a{n}\n3,A2\n")  # row 1: a cell too many
    job = write_job(tmp_path, "layout: card.yaml\nitems: rows.csv\nmodle: m\n")
    assert [e.removeprefix(f"{tmp_path}/") for e in job_errors(job, "m")] == [
        "job.yaml:3: modle: unknown key (allowed: layout, name, model, memory_budget, variables, matrix, items)",
        "rows.csv:2: 3 cells, the header names 2 columns",
        f"rows.csv:4: output name 'A2' of item 3 {{\"seed\": \"3\"}} is also that of item 2 {{\"seed\": \"2\"}} at "
        f"{tmp_path}/rows.csv:3"]
    # a layout or name that every item takes, with a problem (or mistyped), is not the items' problem again
    job = write_job(tmp_path, "layuot: card.yaml\nname: [x]\nitems: [{seed: 1}, {seed: 2, layout: card.yaml}]\n")
    assert job_errors(job, "m") == [f"{job}:1: layuot: unknown key (allowed: {', '.join(JOB_KEYS)})",
                                    f"{job}:2: name: expected text, got a list"]


def test_format_name_fields():
    assert format_name("{a}-{n:>4}-{{x}}", {"a": "1", "n": "7"}) == "1-   7-{x}"
    for bad in ["{a.__class__}", "{a!r}", "{0}", "{missing}"]:
        with pytest.raises(ValueError):
            format_name(bad, {"a": "1"})


def test_format_name_refuses_huge_widths_and_characters_out_of_range():
    for bad in ["{seed:c}", "{seed:=^999999999999}", "{seed:.999999999f}", "{seed:>201}"]:
        with pytest.raises(ValueError, match="seed"):  # not OverflowError, not MemoryError
            format_name(bad, {"seed": "9999999"})
    assert format_name("{seed:0>200}", {"seed": "7"}) == "0" * 199 + "7"


def test_default_names_do_not_change_when_items_are_added(tmp_path):
    nine = load_job(write_job(tmp_path, "layout: card.yaml\nmatrix: {seed: [1, 2, 3, 4, 5, 6, 7, 8, 9]}\n"), "m")
    ten = load_job(write_job(tmp_path, "layout: card.yaml\nmatrix: {seed: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}\n"), "m")
    assert [i.name for i in ten.items] == [i.name for i in nine.items] + ["card-10"]
    assert nine.items[0].name == "card-1"
    job = write_job(tmp_path, "layout: card.yaml\nname: '{n:03d}'\nmatrix: {seed: [1, 2]}\n")
    assert [i.name for i in load_job(job, "m").items] == ["001", "002"]


def test_variables_hidden_by_name_fields_are_rejected(tmp_path):
    job = write_job(tmp_path, """\
layout: card.yaml
name: "{n}-{key}"
items:
  - {n: 5, seed: 1}
  - {n: 6, seed: 2}
  - {key: x, prompt: a, prompt_slug: b, layout_slug: c}
""")
    errors = job_errors(job, "m")
    assert errors == [
        f"{job}:4: variable 'n': output names use {{n}} for the item's number; rename the variable",
        f"{job}:6: variable 'key': output names use {{key}} for the item's key; rename the variable",
        f"{job}:6: variable 'layout_slug': output names use {{layout_slug}} for the item's slug; rename the variable",
        f"{job}:6: variable 'prompt_slug': output names use {{prompt_slug}} for the item's slug; rename the variable"]
    job = write_job(tmp_path, "layout: card.yaml\nitems: [{title_slug: ok}]\n")  # no variable 'title'
    assert load_job(job, "m").items[0].variables == {"title_slug": "ok"}


SPAN = """\
span:
  monitors:
    - {name: left, width: 64, height: 64, size: [100mm, 100mm]}
    - {name: right, width: 64, height: 64, size: [100mm, 100mm]}
  bezels: 0mm
variables: {seed: 1}
layers:
  - generate: {prompt: hills, seed: "{seed}", steps: 1}
output: {formats: [png], per_monitor: true}
"""


def test_items_writing_the_same_file_are_rejected(tmp_path):
    (tmp_path / "span.yaml").write_text(SPAN)
    job = write_job(tmp_path, """\
items:
  - {layout: span.yaml, name: wall, seed: 1}
  - {layout: card.yaml, name: Wall-Left, seed: 2}
  - {layout: card.yaml, name: fox, seed: 3}
  - {layout: card.yaml, name: fox.png/x, seed: 4}
  - {layout: card.yaml, name: owl/x, seed: 5}
  - {layout: card.yaml, name: owl, seed: 6}
""")
    errors = job_errors(job, "m")
    assert errors == [
        f"{job}:3: 'Wall-Left.png' is a file of item 'Wall-Left' and a file of item 'wall' at {job}:2 (output "
        "paths are compared ignoring case)",
        f"{job}:5: 'fox.png' is a folder of item 'fox.png/x' and a file of item 'fox' at {job}:4 (output paths "
        "are compared ignoring case)"]  # 'owl/x' and 'owl' (owl.png, a folder owl) do not clash
    assert main(["batch", str(job), "--list", "--model", "m"]) == 2


def test_csv_quoted_cells_line_breaks_bom_crlf_and_spaces(tmp_path):
    (tmp_path / "card.yaml").write_text(LAYOUT)
    rows = tmp_path / "rows.csv"
    rows.write_bytes('\ufefflayout, name ,prompt,seed\r\ncard.yaml, {prompt_slug}-{seed} ,"a fox\r\nin ""snow""",1\r\n'
                     'card.yaml,{seed},"a\u2028b, c", 2 \r\n\r\n'.encode())
    items = load_job(rows, "m").items
    assert [(i.name, i.variables, i.where) for i in items] == [
        ("a-fox-in-snow-1", {"prompt": 'a fox\nin "snow"', "seed": "1"}, f"{rows}:2"),
        ("2", {"prompt": "a\u2028b, c", "seed": "2"}, f"{rows}:4")]
    rows.write_text('layout,prompt,seed\ncard.yaml,"not closed,1\ncard.yaml,b,2\n')
    errors = job_errors(rows, "m")  # not one item swallowing the next row
    assert errors == [f"{rows}:2: CSV: unexpected end of data (a quote is not closed)"]


def test_a_csv_of_items_names_layouts_relative_to_itself(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "card.yaml").write_text(LAYOUT)
    (tmp_path / "data" / "rows.csv").write_text("layout,prompt\ncard.yaml,fox\n")
    (tmp_path / "other.csv").write_text("prompt\nowl\n")  # no layout column: the job's, relative to the job
    job = write_job(tmp_path, "items: data/rows.csv\nname: '{prompt}'\n")
    [item] = load_job(job, "m").items
    assert item.layout_file == tmp_path / "data" / "card.yaml" and item.spec is not None
    job = write_job(tmp_path, "layout: data/card.yaml\nitems: other.csv\nname: '{prompt}'\n")
    assert load_job(job, "m").items[0].layout_file == tmp_path / "data" / "card.yaml"


def test_job_values_are_text_as_written(tiny_dir, tmp_path, capsys):
    """YAML 1.1 would read NO as false, 010 as 8, 1_000 as 1000, 0x1F as 31 and 1.10 as 1.1: a job's values are
    passed to the layout as the text the file holds, as a layout reads its own variables."""
    job = write_job(tmp_path, """\
layout: card.yaml
name: "{n}"
variables: {prompt: 2024-01-01}
matrix: {prompt: [NO, yes, 1_000, 0x1F, 1.10], seed: [010]}
items: [{seed: 0009}]
""")
    items = load_job(job, "m").items
    prompts = ["NO", "yes", "1_000", "0x1F", "1.10"]
    assert [i.variables for i in items] == [{"prompt": p, "seed": "010"} for p in prompts] + [
        {"prompt": "2024-01-01", "seed": "0009"}]
    assert main(["batch", str(job), "--list", "--model", str(tiny_dir)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == '1\t1\tcard.yaml\t{"prompt": "NO", "seed": "010"}'
    (tmp_path / "jobs.csv").write_text("layout,name,seed\ncard.yaml,s0009,0009\ncard.yaml,s0010,0010\n")
    assert [i.variables for i in load_job(tmp_path / "jobs.csv", "m").items] == [{"seed": "0009"}, {"seed": "0010"}]


def test_a_zero_padded_seed_from_a_job_is_decimal(tmp_path):
    (tmp_path / "card.yaml").write_text(LAYOUT)
    (tmp_path / "jobs.csv").write_text("layout,name,seed\ncard.yaml,s0009,0009\ncard.yaml,s0010,0010\n")
    items = load_job(tmp_path / "jobs.csv", "m").items
    assert [(i.problem, i.spec and i.spec.layers[0].seed) for i in items] == [(None, 9), (None, 10)]


def test_name_specs_format_text_unless_they_are_numeric():
    assert format_name("{prompt:.10}-{seed}", {"prompt": "2024", "seed": "1"}) == "2024-1"
    for text in ["Infinity", "1_000", " 12 "]:
        assert format_name("{prompt:<12}|", {"prompt": text}) == f"{text:<12}|"
    assert format_name("{seed:0>5}", {"seed": "1_0"}) == "001_0"  # fill and align: text
    numeric = {"{seed:04d}": "0009", "{seed:03}": "007", "{seed:,}": "1,000", "{seed:+}": "+7", "{seed:=5}": "    7",
               "{seed:.2f}": "7.00", "{seed:x}": "7"}
    for pattern, expected in numeric.items():
        value = "0009" if pattern == "{seed:04d}" else "1000" if pattern == "{seed:,}" else "7"
        assert format_name(pattern, {"seed": value}) == expected, pattern
    assert format_name("{v:.1f}", {"v": "1.25e1"}) == "12.5"
    for text in ["fox", "Infinity", "1_000", " 12 ", "0x1F"]:
        with pytest.raises(ValueError, match=f"{{prompt:d}}: formats a number, got '{text}'"):
            format_name("{prompt:d}", {"prompt": text})


@pytest.mark.parametrize("name, problem", [
    ("a:b", "has ':' (file names may not hold < > : \" | ? * or control characters on Windows)"),
    ("C:x", "has ':'"), ("x/a?b", "has '?'"), ("a*b", "has '*'"), ('a"b', "has '\"'"), ("a<b", "has '<'"),
    ("a>b", "has '>'"), ("a|b", "has '|'"), ("a\tb", "has a control character"),
    ("dir./x", "has a part ending in '.' ('dir.'), which Windows drops"), ("x ", "ending in ' '"),
    ("con", "has a part 'con' that Windows reserves for a device (CON, PRN, AUX, NUL, COM0-9, LPT0-9, COM¹²³, "
            "LPT¹²³)"),
    ("sub/COM1", "reserves for a device"), ("nul.tar/x", "reserves for a device"), ("LPT9", "reserves"),
    ("COM¹", "reserves"), ("lpt³.txt", "reserves"), ("com0", "reserves"), ("CON .png", "reserves"),
    ("a/aux  .x.y", "reserves"),
    ("manifest.jsonl/a", "starts with the name of a batch log (manifest*.jsonl in OUTDIR)"),
    ("Manifest-0-of-2.JSONL/b", "starts with the name of a batch log")])
def test_names_windows_or_the_logs_cannot_have_are_refused(name, problem):
    assert problem in name_problem(name)


def test_names_windows_allows_are_accepted():
    for name in ["console", "com10", "a.b", "sub/lpt", "manifest", "a/manifest.jsonl", " lead", "com⁴", "con_.png",
                 " con"]:
        assert name_problem(name) is None, name


def test_a_name_whose_files_windows_could_not_hold_is_refused(tmp_path):
    """Each part within MAX_NAME_PART, the whole path far beyond Windows' 260 characters: every render would fail
    ('File name too long'). The longest file an item writes counts (its manifest: '.manifest.json')."""
    job = write_job(tmp_path, "layout: card.yaml\nname: " + "/".join(["a" * 190] * 30) + "\n")
    assert job_errors(job, "m") == [
        f"{job}:1: output name '{'a' * 40}...' (5729 bytes) is too long: its file <name>.manifest.json has 5743 "
        f"bytes inside OUTDIR, at most 240 (Windows' paths stop at 260 characters, OUTDIR's included)"]
    name = "b" * 100 + "/c" + "é" * 62  # 226 bytes, 240 with '.manifest.json'
    write_job(tmp_path, f"layout: card.yaml\nname: {name}\n")
    assert load_job(job, "m").items[0].outputs == (f"{name}.png", f"{name}.manifest.json")
    write_job(tmp_path, f"layout: card.yaml\nname: {name}x\n")
    assert job_errors(job, "m") == [
        f"{job}:1: output name '{name[:40]}...' (227 bytes) is too long: its file <name>.manifest.json has 241 "
        f"bytes inside OUTDIR, at most 240 (Windows' paths stop at 260 characters, OUTDIR's included)"]


def test_a_span_file_name_longer_than_a_file_system_takes_is_refused(tmp_path):
    """Within 240 bytes inside OUTDIR, a span's file '<name>-<monitor>.png' with no folder can still be longer
    than a file name may be (export.MAX_NAME_BYTES: 255 less the temporary names' 19): --list showed no problem
    and every render failed 'file name too long (239 bytes, at most 236)'."""
    span = ("span:\n  monitors:\n    - {name: " + "m" * 34 + ", width: 64, height: 64, size: [100mm, 100mm]}\n"
            "    - {name: b, width: 64, height: 64, size: [100mm, 100mm]}\n  bezels: 0mm\nlayers:\n"
            "  - fill: {color: '#ff0000'}\noutput: {formats: [png], per_monitor: true}\n")
    job = write_job(tmp_path, f"layout: card.yaml\nname: {'x' * 200}\n", span)
    assert job_errors(job, "m") == [
        f"{job}:1: output name '{'x' * 40}...' (200 bytes) is too long: its file <name>-{'m' * 34}.png has 239 "
        f"bytes in its name, at most 236 (255 a file system allows, less 19 for its temporary names)"]
    write_job(tmp_path, f"layout: card.yaml\nname: {'x' * 197}\n", span)  # 236 bytes: the longest name taken
    assert [len(f) for f in load_job(job, "m").items[0].outputs] == [201, 236, 203, 211]


def test_a_colon_in_a_name_is_refused_for_what_it_is(tmp_path):
    job = write_job(tmp_path, "layout: card.yaml\nname: '{prompt}'\nitems: [{prompt: 'a:b'}]\n")
    errors = job_errors(job, "m")
    assert errors == [f"{job}:3: output name 'a:b' has ':' (file names may not hold < > : \" | ? * or "
                      "control characters on Windows)"]


def test_names_of_logs_and_sidecars_are_not_taken_by_items(tmp_path):
    job = write_job(tmp_path, """\
layout: card.yaml
items:
  - {name: manifest.jsonl/a}
  - {name: a}
  - {name: a.manifest.json/b}
""")
    errors = job_errors(job, "m")
    assert errors == [
        f"{job}:3: output name 'manifest.jsonl/a' starts with the name of a batch log (manifest*.jsonl in OUTDIR)",
        f"{job}:5: 'a.manifest.json' is a folder of item 'a.manifest.json/b' and a file of item 'a' at {job}:4 "
        "(output paths are compared ignoring case)"]


def test_a_name_clash_inside_a_matrix_names_both_items(tmp_path):
    job = write_job(tmp_path, "layout: card.yaml\nname: '{prompt_slug}'\nmatrix:\n  prompt: [A fox, a fox!]\n")
    errors = job_errors(job, "m")
    assert errors == [f"{job}:3: output name 'a-fox' of item 2 {{\"prompt\": \"a fox!\"}} is also that of "
                      f"item 1 {{\"prompt\": \"A fox\"}} at {job}:3"]


def test_names_that_differ_only_in_unicode_normalization_clash(tmp_path):
    # 'café' with 'é' as one character and as 'e' + a combining accent: one file on macOS, one name to a reader
    job = write_job(tmp_path, 'layout: card.yaml\nname: "{prompt}"\nitems:\n  - {prompt: "caf\\u00e9"}\n'
                              '  - {prompt: "Cafe\\u0301"}\n')
    errors = job_errors(job, "m")
    assert errors == [f"{job}:5: output name 'Cafe\u0301' of item 2 {{\"prompt\": \"Cafe\u0301\"}} is also "
                      f"that of item 1 {{\"prompt\": \"caf\u00e9\"}} at {job}:4"]


def test_names_are_compared_by_simple_case_folding_as_file_systems_do():
    """APFS and NTFS ignore case one character for one: 'ß' is not 'SS', 'ﬁ' not 'fi' (str.casefold merges
    them); 'ẞ' is 'ß' and final 'ς' is 'σ'. Unicode normalization is ignored as macOS does."""
    from studio.batch import path_key

    same = [("Fox/A.png", "fox/a.png"), ("ẞ", "ß"), ("ΣΑΣ", "σας"), ("Caf\u00e9", "cafe\u0301"), ("ǅ", "ǆ")]
    apart = [("Straße", "STRASSE"), ("ﬁle", "file"), ("İ", "i"), ("ŉ", "ʼn")]
    assert [path_key(a) == path_key(b) for a, b in same] == [True] * len(same)
    assert [path_key(a) == path_key(b) for a, b in apart] == [False] * len(apart)


def test_items_named_as_no_file_system_merges_them_are_accepted(tmp_path):
    job = write_job(tmp_path, 'layout: card.yaml\nname: "{prompt}"\nitems:\n  - {prompt: Straße}\n'
                              '  - {prompt: STRASSE}\n  - {prompt: "\\ufb01le"}\n  - {prompt: file}\n')
    assert [i.name for i in load_job(job, "m").items] == ["Straße", "STRASSE", "\ufb01le", "file"]


def test_yaml_merge_keys_are_overridden_by_written_keys(tmp_path):
    job = write_job(tmp_path, """\
layout: card.yaml
name: "{prompt_slug}-{seed}"
variables: &v {prompt: fox, seed: 1}
items:
  - &base {prompt: owl, seed: 1}
  - {<<: *base, seed: 2}
  - {<<: [*base, *v], prompt: cat}
  - {<<: *v}
""")
    assert [(i.name, i.variables) for i in load_job(job, "m").items] == [
        ("owl-1", {"prompt": "owl", "seed": "1"}), ("owl-2", {"prompt": "owl", "seed": "2"}),
        ("cat-1", {"prompt": "cat", "seed": "1"}), ("fox-1", {"prompt": "fox", "seed": "1"})]
    job = write_job(tmp_path, "layout: card.yaml\nitems:\n  - &base {seed: 1}\n  - {<<: *base, seed: 2, seed: 3}\n")
    errors = job_errors(job, "m")
    assert errors == [f"{job}:4: YAML: duplicate key 'seed'"]  # written twice: still an error


def test_equals_and_merge_signs_are_text(tmp_path):
    job = write_job(tmp_path, "layout: card.yaml\nname: '{n}'\nitems:\n  - {prompt: =}\n  - {prompt: <<}\n")
    assert [i.variables for i in load_job(job, "m").items] == [{"prompt": "="}, {"prompt": "<<"}]


def test_lone_surrogates_are_refused_at_load(tmp_path):
    """YAML's "\\udce9" escape is half of a UTF-16 pair: no character, so no file name nor T5 prompt."""
    job = write_job(tmp_path, 'layout: card.yaml\nname: "{n}"\nitems:\n  - {seed: 1, prompt: "caf\\udce9"}\n')
    errors = job_errors(job, "m")
    assert errors == [f"{job}:4: items[0].prompt: \\udce9 is half of a UTF-16 surrogate pair, not a "
                      f"character; write the character itself"]
    job = write_job(tmp_path, 'layout: card.yaml\nvariables:\n  "caf\\ud83d": 1\n')
    errors = job_errors(job, "m")
    assert errors == [f"{job}:3: YAML: key 'caf\\ud83d': \\ud83d is half of a UTF-16 surrogate pair, not "
                      f"a character; write the character itself"]


def test_a_job_written_by_json_dump_keeps_its_emoji(tmp_path):
    """json.dump escapes an emoji as a surrogate pair ("\\ud83e\\udd8a"), which is JSON's (and YAML 1.2's) way
    of writing one character; PyYAML reads the halves, which were refused as lone ones."""
    job = tmp_path / "job.yaml"
    write_job(tmp_path, "")
    job.write_text(json.dumps({"layout": "card.yaml", "items": [{"prompt": "\U0001F98A a fox", "seed": 1}]}))
    assert "\\ud83e\\udd8a" in job.read_text()
    assert load_job(job, "m").items[0].variables["prompt"] == "\U0001F98A a fox"


def test_a_matrix_of_too_many_combinations_is_refused_before_they_are_made(tmp_path, monkeypatch):
    """10 axes of 10 values are 10^10 items: counted, not expanded (which grew by 90 MB/s)."""
    job = write_job(tmp_path, "layout: card.yaml\nmatrix: {a: &v [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], b: *v, c: *v, d: *v, "
                              "e: *v, f: *v, g: *v, h: *v, i: *v, j: *v}\n")
    errors = job_errors(job, "m")
    assert errors == [f"{job}:2: matrix: 10000000000 combinations of its axes' values; a job has at most "
                      f"100000 items (split it into several jobs)"]
    monkeypatch.setattr(batch, "MAX_ITEMS", 3)  # a matrix within the limit, and items after it beyond it
    job = write_job(tmp_path, "layout: card.yaml\nmatrix: {seed: [1, 2]}\nitems:\n  - {seed: 3}\n  - {seed: 4}\n")
    errors = job_errors(job, "m")
    assert errors == [f"{job}:5: item 4 of 4: a job has at most 3 items (split it into several jobs)"]


def test_a_job_nested_too_deep_is_one_error(tmp_path):
    """The layout loader's depth limit: PyYAML recurses once per level."""
    job = write_job(tmp_path, "layout: card.yaml\nvariables: " + "[" * 3000 + "]" * 3000 + "\n")
    errors = job_errors(job, "m")
    assert errors == [f"{job}:2: YAML: nested more than 100 levels deep (lists and mappings inside each other)"]


def test_a_character_yaml_refuses_is_one_line_at_its_line(tmp_path):
    job = write_job(tmp_path, "layout: card.yaml\nname: x\nvariables: {caption: a\x01b}\n")
    assert job_errors(job, "m") == [f"{job}:3: YAML: character #x0001 is not allowed in YAML (control characters "
                                    f"other than tab and line breaks)"]


def test_control_characters_in_paths_and_models_are_refused(tmp_path):
    """The system takes no NUL in a path (ValueError: embedded null byte), and a model 'a/b\\0c' is no hub id."""
    job = write_job(tmp_path, 'layout: "card\\0.yaml"\nmodel: "a/b\\0c"\nitems: "x\\0.csv"\n')
    errors = job_errors(job)
    rule = "has a control character, which no path, font or model name may hold"
    assert errors == [f"{job}:1: layout: 'card\\x00.yaml' {rule}", f"{job}:2: model: 'a/b\\x00c' {rule}",
                      f"{job}:3: items: 'x\\x00.csv' {rule}"]
    (tmp_path / "jobs.csv").write_text("layout,seed\ncard.yaml,1\ncard\0.yaml,2\n")
    errors = job_errors(tmp_path / "jobs.csv", "m")
    assert errors == [f"{tmp_path / 'jobs.csv'}:3: layout 'card\\x00.yaml' {rule}"]


@pytest.mark.parametrize("name, seed, message", [
    ("{seed:c}", "55296", "output name '\ud800' has half of a UTF-16 surrogate pair, which is no character"),
    ("a{seed:c}", "10", "output name 'a\\n' has a control character (file names may not hold < > : \" | ? * or "
                        "control characters on Windows)"),  # one line
    ("a{seed:d}", "1.5", "name 'a{seed:d}': {seed:d}: cannot format the number '1.5' as 'd'"),
    ("a{seed:d}", "9" * 100000, "name 'a{seed:d}': {seed:d}: cannot format the whole number "
                                "'99999999999999999999...' (100000 characters) as 'd'"),  # no int() jargon
    ("a{seed:f}", "1e999", "name 'a{seed:f}': {seed:f}: '1e999' is not a finite number (it would write 'inf')"),
], ids=["surrogate", "line-break", "decimal-as-d", "100000-digits", "infinity"])
def test_names_a_format_cannot_give_are_one_plain_line(tmp_path, name, seed, message):
    job = write_job(tmp_path, f"layout: card.yaml\nname: '{name}'\nvariables: {{seed: '{seed}'}}\n")
    errors = job_errors(job, "m")
    assert errors == [f"{job}:1: {message}"]


def test_two_matrix_axes_setting_one_variable_is_an_error(tmp_path):
    job = write_job(tmp_path, """\
layout: card.yaml
matrix:
  combo: [{prompt: fox, seed: 5}, {prompt: owl}]
  seed: [1, 2]
  prompt: [cat]
""")
    errors = job_errors(job, "m")
    assert errors == [
        f"{job}:4: matrix.seed: sets 'seed', which matrix.combo ({job}:3) sets too; a variable may come from one "
        f"axis only",
        f"{job}:5: matrix.prompt: sets 'prompt', which matrix.combo ({job}:3) sets too; a variable may come from "
        f"one axis only"]


def test_an_empty_item_name_or_layout_is_an_error(tmp_path):
    job = write_job(tmp_path, """\
layout: card.yaml
items:
  - {name: "", seed: 1}
  - {layout: "", seed: 2}
  - {prompt: "", seed: 3}
matrix:
  name: ["{seed}", ""]
""")
    errors = job_errors(job, "m")
    assert errors == [f"{job}:7: matrix.name[1]: expected text, got ''",
                      f"{job}:3: items[0].name: expected text, got ''",
                      f"{job}:4: items[1].layout: expected text, got ''",  # an empty variable is fine
                      f"{job}:6: name '{{seed}}': {{seed}} is not set for this item (fields: key, layout, "
                      f"layout_slug, n)"]  # the other items are checked too


def test_an_unreadable_layout_says_why(tmp_path):
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "latin1.yaml").write_bytes(LAYOUT.replace("a cat", "caf\xe9").encode("latin-1"))
    job = write_job(tmp_path, """\
name: "{layout}"
items: [{layout: missing.yaml}, {layout: folder.yaml}, {layout: latin1.yaml}]
""")
    assert [i.problem for i in load_job(job, "m").items] == [
        f"{tmp_path / 'missing.yaml'}: no such layout file",
        f"{tmp_path / 'folder.yaml'}: is a folder, not a layout file",
        f"{tmp_path / 'latin1.yaml'}:2: not UTF-8 text (byte 0xe9); save the layout as UTF-8"]  # as load_layout says


def test_a_layout_that_is_no_file_is_not_read(tmp_path):
    """/dev/zero has no end (it was read until the process was killed), a pipe may never give one."""
    job = write_job(tmp_path, "layout: /dev/null\n")
    assert [i.problem for i in load_job(job, "m").items] == [
        "/dev/null: is a device, pipe or socket, not a layout file"]
    os.mkfifo(tmp_path / "pipe.yaml")
    write_job(tmp_path, "items: [{layout: pipe.yaml}, {layout: /dev/zero}]\n")
    assert [i.problem for i in load_job(job, "m").items] == [
        f"{tmp_path / 'pipe.yaml'}: is a device, pipe or socket, not a layout file",
        "/dev/zero: is a device, pipe or socket, not a layout file"]


def test_a_layout_file_is_read_up_to_the_loader_s_limit(tmp_path, monkeypatch):
    import studio.layout as L
    monkeypatch.setattr(L, "MAX_SOURCE", 100)
    (tmp_path / "big.yaml").write_text("#" * 101)
    job = write_job(tmp_path, "layout: big.yaml\n")
    assert [i.problem for i in load_job(job, "m").items] == [
        f"{tmp_path / 'big.yaml'}: more than 0 MiB, too large for a layout file"]


def test_a_csv_of_a_header_only_is_an_error_at_its_line(tmp_path):
    (tmp_path / "card.yaml").write_text(LAYOUT)
    (tmp_path / "rows.csv").write_text("layout,seed\n")
    assert job_errors(tmp_path / "rows.csv", "m") == [f"{tmp_path / 'rows.csv'}:1: no rows after the header"]


def test_csv_trailing_empty_columns_and_cells_are_ignored(tmp_path):
    (tmp_path / "card.yaml").write_text(LAYOUT)
    rows = tmp_path / "rows.csv"
    rows.write_text("layout,name,prompt,seed,,\ncard.yaml,a,fox,1,,\ncard.yaml,b,owl,2\ncard.yaml,c,,3,,,\n")
    assert [(i.name, i.variables) for i in load_job(rows, "m").items] == [
        ("a", {"prompt": "fox", "seed": "1"}), ("b", {"prompt": "owl", "seed": "2"}), ("c", {"seed": "3"})]
    rows.write_text("layout,name,prompt,seed,\ncard.yaml,a,fox,1,extra\n")
    errors = job_errors(rows, "m")
    assert errors == [f"{rows}:2: 5 cells, the header names 4 columns"]


def test_csv_cells_quoted_after_a_space_are_read_and_a_space_after_the_quote_is_named(tmp_path):
    """`a, "b, c"` (CSV written by hand) is two cells, the quotes not in the value; a space after a closing
    quote is what the csv module's "',' expected" means here, and the message says so."""
    (tmp_path / "card.yaml").write_text(LAYOUT)
    rows = tmp_path / "rows.csv"
    rows.write_text('layout, prompt, seed\ncard.yaml, "a red, fox", 1\ncard.yaml, "an ""old"" owl", 2\n')
    assert [i.variables for i in load_job(rows, "m").items] == [{"prompt": "a red, fox", "seed": "1"},
                                                                {"prompt": 'an "old" owl', "seed": "2"}]
    rows.write_text('layout,prompt,seed\ncard.yaml,fox,1\ncard.yaml,"a red fox" ,2\n')
    assert job_errors(rows, "m") == [f"{rows}:3: CSV: ',' expected after '\"' (a space after a closing quote: "
                                     f"delete it, or put it inside the quotes)"]
    rows.write_text('layout,prompt,seed\ncard.yaml,"a red" fox,2\n')
    assert job_errors(rows, "m") == [f"{rows}:2: CSV: ',' expected after '\"' (text after a closing quote: quote "
                                     f'the whole cell, writing a quote inside it as "")']


def test_a_csv_of_another_separator_encoding_or_case_says_what_to_do(tmp_path):
    (tmp_path / "card.yaml").write_text(LAYOUT)
    rows = tmp_path / "rows.csv"
    rows.write_text("layout;name;prompt;seed\ncard.yaml;a;fox;1\n")  # European Excel
    assert job_errors(rows, "m") == [
        f"{rows}:1: the columns are separated by ';': export as comma-separated CSV (or save with commas)"]
    rows.write_text("layout\tprompt\ncard.yaml\tfox\n")
    assert job_errors(rows, "m") == [
        f"{rows}:1: the columns are separated by tabs: export as comma-separated CSV (or save with commas)"]
    rows.write_text("Layout,Prompt,Seed\ncard.yaml,a red fox,1\n")
    assert job_errors(rows, "m") == [f"{rows}:2: no layout: give `layout:` in the job or a `layout` column/key "
                                     f"('Layout' is a variable: did you mean 'layout'?)"]
    rows.write_bytes(b"\xef\xbb\xbfprompt\ncaf\xe9 au lait\n")  # Windows-1252 after a byte-order mark
    excel = ' (in Excel: Save As -> "CSV UTF-8 (Comma delimited)")'  # a CSV is called one, Excel's choice named
    assert job_errors(rows, "m") == [f"{rows}:2: not UTF-8 text (byte 0xe9); save the CSV as UTF-8{excel}"]
    job = write_job(tmp_path, "layout: card.yaml\nitems: rows.csv\n")
    assert job_errors(job, "m") == [f"{job}:2: items: {rows}:2: not UTF-8 text (byte 0xe9); save the CSV as "
                                    f"UTF-8{excel}"]
    job.write_bytes(b"layout: caf\xe9.yaml\n")
    assert job_errors(job, "m") == [f"{job}:1: not UTF-8 text (byte 0xe9); save the job as UTF-8"]
    job = write_job(tmp_path, "layout: card.yaml\nitems: gone.csv\n")
    assert job_errors(job, "m") == [f"{job}:2: items: {tmp_path / 'gone.csv'}: no such CSV file"]


def test_csv_text_read_as_windows_1252_and_saved_again_is_named_with_the_text_meant(tmp_path):
    """Excel opens a UTF-8 CSV as Windows-1252 and saves what it showed: 'café' becomes 'cafÃ©', which would
    render as such; each cell is reported at its row, naming its column (and a YAML job's value at its key)."""
    (tmp_path / "card.yaml").write_text(LAYOUT)
    rows = tmp_path / "rows.csv"
    mangled = "a café — “smart”".encode().decode("cp1252", "replace")
    rows.write_bytes(f"\ufefflayout,prompt,seed\r\ncard.yaml,fox,1\r\ncard.yaml,{mangled},2\r\n"
                     f"card.yaml,fine,â€œ3â€\ufffd\r\n".encode())
    fix = ("import the original UTF-8 file instead (Excel: Data > From Text/CSV, File Origin '65001: Unicode "
           "(UTF-8)') and save it as CSV UTF-8, or correct the text")
    assert job_errors(rows, "m") == [
        f"{rows}:3: column 'prompt': 'cafÃ©' looks like 'café' read as Windows-1252 and saved again: {fix}",
        f"{rows}:4: column 'seed': 'â€œ3â€\ufffd' looks like UTF-8 text read as Windows-1252 and saved again: "
        f"{fix}"]  # a byte dropped: not repaired
    job = write_job(tmp_path, "layout: card.yaml\nitems:\n  - {prompt: naÃ¯ve}\n")
    assert job_errors(job, "m") == [
        f"{job}:3: items[0].prompt: 'naÃ¯ve' looks like 'naïve' read as Windows-1252 and saved again: correct the "
        f"text"]
    real = ["São Paulo", "Âge d'or", "château", "SÃO PAULO", "CAFÉ’S", "Straße“", "voilà «x»", "Ã la",
            "A MINHA IRMÃ…", "“MAÇÃ”", "«LÃ»"]  # Portuguese capitals before closing punctuation
    rows.write_text("layout,prompt\n" + "".join(f"card.yaml,{text}\n" for text in real))
    assert [i.variables["prompt"] for i in load_job(rows, "m").items] == real


def test_csv_rows_before_the_header_and_excels_sep_line_are_skipped(tmp_path):
    """Excel writes an empty first row as ',,,' and may start with 'sep=,'; the header after them is read, and
    its problems named at its line. A table that starts in column B, or another separator, says what to do."""
    (tmp_path / "card.yaml").write_text(LAYOUT)
    rows = tmp_path / "rows.csv"
    for before in (",,,\r\n", "\r\n , ,\r\n", "sep=,\r\n", "sep=,\r\n,,\r\n"):
        rows.write_bytes(f"{before}layout,prompt,seed\r\ncard.yaml,fox,1\r\n".encode())
        [item] = load_job(rows, "m").items
        assert (item.variables, item.where) == ({"prompt": "fox", "seed": "1"}, f"{rows}:{before.count(chr(10)) + 2}")
    rows.write_bytes(b",,,\r\nlayout,prompt,s-eed\r\ncard.yaml,fox,1\r\n")
    assert job_errors(rows, "m") == [f"{rows}:2: column 3: 's-eed' is not a variable name"]
    rows.write_bytes(b",,\r\nlayout,seed\r\n")
    assert job_errors(rows, "m") == [f"{rows}:2: no rows after the header"]
    rows.write_bytes(b",,,\r\n,,,\r\n")
    assert job_errors(rows, "m") == [f"{rows}:1: empty CSV; the first row names the columns"]
    rows.write_bytes(b"sep=;\r\nlayout;prompt\r\ncard.yaml;fox\r\ncard.yaml;owl\r\n")  # one error, not one a row
    assert job_errors(rows, "m") == [f"{rows}:1: the columns are separated by ';' (the first line says sep=;): "
                                     f"export as comma-separated CSV (or save with commas)"]
    rows.write_bytes(b",,layout,prompt\r\n,,card.yaml,fox\r\n")
    assert job_errors(rows, "m") == [f"{rows}:1: column 1 has no name: the table must start in column A (delete the "
                                     f"empty columns before 'layout')"]
    rows.write_bytes(b"layout,,prompt\r\ncard.yaml,,fox\r\n")
    assert job_errors(rows, "m") == [f"{rows}:1: column 2 has no name (name it, or delete the column)"]


def test_a_quoted_csv_of_another_separator_is_told_by_its_separator(tmp_path):
    """LibreOffice's "quote all text cells" and pandas' QUOTE_ALL: the quotes would fail the parse first."""
    (tmp_path / "card.yaml").write_text(LAYOUT)
    rows = tmp_path / "rows.csv"
    for data, shown in ((b'"layout";"prompt";"seed"\n"card.yaml";"a, fox";1\n', "';'"),
                        (b'"layout"\t"prompt"\n"card.yaml"\t"fox"\n', "tabs"),
                        (b',,\n"layout";"prompt"\n"card.yaml";"fox"\n', "';'")):
        rows.write_bytes(data)
        line = data.count(b"\n", 0, data.index(b"layout"))
        assert job_errors(rows, "m") == [f"{rows}:{line + 1}: the columns are separated by {shown}: export as "
                                         f"comma-separated CSV (or save with commas)"]
    rows.write_bytes(b'layout,"prompt;seed"\ncard.yaml,fox\n')  # a ';' in a quoted name is no separator
    assert job_errors(rows, "m") == [f"{rows}:1: column 2: 'prompt;seed' is not a variable name"]


def test_a_csv_header_name_wrong_by_an_invisible_character_shows_it(tmp_path):
    (tmp_path / "card.yaml").write_text(LAYOUT)
    rows = tmp_path / "rows.csv"
    rows.write_bytes("layout,prompt,\u200bseed,a\u00a0b\ncard.yaml,fox,1,2\n".encode())
    assert job_errors(rows, "m") == [f"{rows}:1: column 3: '\\u200bseed' is not a variable name",
                                     f"{rows}:1: column 4: 'a\\xa0b' is not a variable name"]


def test_list_names_the_csv_row_of_an_item_with_problems(tiny_dir, tmp_path, capsys):
    (tmp_path / "card.yaml").write_text(LAYOUT)
    rows = tmp_path / "rows.csv"
    rows.write_bytes(b"layout,prompt,promt\ncard.yaml,fox,\ncard.yaml,owl,\ncard.yaml,,bat\n")
    assert main(["batch", str(rows), "--list", "--model", str(tiny_dir)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == ['1\tcard-1\tcard.yaml\t{"prompt": "fox"}', '2\tcard-2\tcard.yaml\t{"prompt": "owl"}',
                         '3\tcard-3\tcard.yaml\t{"promt": "bat"}']
    assert lines[3].startswith(f"\tproblem (item at {rows}:4): {tmp_path / 'card.yaml'}:") and "promt" in lines[3]
    assert len(lines) == 4


def test_an_empty_csv_layout_cell_is_named_unless_the_job_gives_a_layout(tmp_path):
    """An empty cell sets nothing: a YAML job's `layout:` is used then; a CSV job has none to use."""
    (tmp_path / "card.yaml").write_text(LAYOUT)
    rows = tmp_path / "rows.csv"
    rows.write_bytes(b"prompt,layout,seed\nfox,card.yaml,1\n\nowl,,2\nbat, ,3\n")
    assert job_errors(rows, "m") == [
        f"{rows}:4: the `layout` cell (column 2) is empty: give the row's layout file",
        f"{rows}:5: the `layout` cell (column 2) is empty: give the row's layout file"]
    job = write_job(tmp_path, "layout: card.yaml\nname: '{n}'\nitems: rows.csv\n")
    assert [(i.layout, i.variables) for i in load_job(job, "m").items] == [
        ("card.yaml", {"prompt": "fox", "seed": "1"}), ("card.yaml", {"prompt": "owl", "seed": "2"}),
        ("card.yaml", {"prompt": "bat", "seed": "3"})]


def test_a_utf16_job_or_csv_is_told_as_such(tmp_path):
    """Excel's "Unicode Text" and Notepad's "Unicode" are UTF-16, with a byte-order mark or without."""
    (tmp_path / "card.yaml").write_text(LAYOUT)
    rows = tmp_path / "rows.csv"
    text = "layout\tprompt\r\ncard.yaml\tcafé\r\n"
    for data in (codecs.BOM_UTF16_LE + text.encode("utf-16-le"), codecs.BOM_UTF16_BE + text.encode("utf-16-be"),
                 text.replace("\t", ",").encode("utf-16-le")):
        rows.write_bytes(data)
        assert job_errors(rows, "m") == [f"{rows}:1: UTF-16 text, not UTF-8; save the CSV as UTF-8 (in Excel: "
                                         f"Save As -> \"CSV UTF-8 (Comma delimited)\")"]
    job = write_job(tmp_path, "layout: card.yaml\nitems: rows.csv\n")
    assert job_errors(job, "m")[0].startswith(f"{job}:2: items: {rows}:1: UTF-16 text, not UTF-8; save the CSV")
    job.write_bytes("layout: card.yaml\n".encode("utf-16"))
    assert job_errors(job, "m") == [f"{job}:1: UTF-16 text, not UTF-8; save the job as UTF-8"]


def test_an_empty_csv_cell_leaves_the_jobs_variable_else_the_layouts_default(tmp_path):
    (tmp_path / "rows.csv").write_text("prompt,seed\nfox,\n,2\n")
    job = write_job(tmp_path, "layout: card.yaml\nvariables: {seed: 7}\nitems: rows.csv\nname: '{n}'\n")
    assert [(i.variables, i.spec.variables) for i in load_job(job, "m").items] == [
        ({"prompt": "fox", "seed": "7"}, {"prompt": "fox", "seed": "7"}),
        ({"seed": "2"}, {"prompt": "a cat", "seed": "2"})]


def test_a_job_model_is_relative_to_the_job_file(tmp_path, monkeypatch):
    (tmp_path / "jobs" / "m").mkdir(parents=True)
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    job = write_job(tmp_path / "jobs", "layout: card.yaml\nmodel: m\n")
    loaded = load_job(job)
    assert (loaded.model, loaded.model_identity) == (str(tmp_path / "jobs" / "m"), str((tmp_path / "jobs" / "m")))
    assert load_job(job, "other/model").model == "other/model"  # --model is as given
    write_job(tmp_path / "jobs", "layout: card.yaml\nmodel: PixArt-alpha/PixArt-Sigma-XL-2-1024-MS\n")
    assert load_job(job).model == "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"  # not there: a hub id
    (tmp_path / "here" / "local").mkdir()
    write_job(tmp_path / "jobs", "layout: card.yaml\nmodel: local\n")
    assert load_job(job).model_identity == str(tmp_path / "here" / "local")  # nor there: the working folder's


def test_a_shard_without_items_says_so_and_creates_nothing(tmp_path):
    job = write_job(tmp_path, "layout: card.yaml\nmatrix: {seed: [1, 2, 3]}\n")
    out, stdout = tmp_path / "out", io.StringIO()
    summary = run_batch(load_job(job, "m"), out, shard=(5, 8), quiet=True, out=stdout, err=io.StringIO())
    assert stdout.getvalue() == f"{job}: 3 items; shard 5/8: none in this shard, nothing to do\n"
    assert summary.exit_code == 0 and not out.exists()


def test_an_unreadable_batch_log_is_one_error(tiny_dir, tmp_path, capsys):
    job, out = write_job(tmp_path, "layout: card.yaml\n"), tmp_path / "out"
    (out / "manifest.jsonl").mkdir(parents=True)
    assert errors_of(["batch", job, "-o", out, "--model", tiny_dir, "--quiet"], capsys) == [
        f"studio: error: {out / 'manifest.jsonl'}: cannot read this batch log (Is a directory)"]


def test_a_damaged_file_hash_memo_only_costs_a_rehash(tmp_path):
    f, memo = tmp_path / "w.bin", tmp_path / "memo.json"
    f.write_bytes(b"abc")
    key, st = str(f.resolve()), f.stat()
    old_form = [3, st.st_mtime_ns, "0" * 64]  # [size, mtime_ns, sha256], as memos were written before the inode
    for damaged in ([], None, "x", {key: 5}, {key: [3, "x", "y"]}, {key: [3, 1, 2, 3]}, {key: old_form}):
        memo.write_text(json.dumps(damaged))
        hashes = manifest.FileHashes(memo)
        assert hashes(f) == manifest.sha256_file(f)
        assert hashes.save() is None
        assert json.loads(memo.read_text()) == {key: [3, st.st_mtime_ns, st.st_ino, st.st_ctime_ns,
                                                      manifest.sha256_file(f)]}


def test_a_damaged_cache_entry_is_not_counted_as_cached(tmp_path):
    import numpy as np

    cache, key = EmbeddingCache(tmp_path, "model"), {"prompt": "a cat"}
    assert key not in cache and key not in EmbeddingCache(None, "model")
    cache.put(key, np.ones((1, 3, 2), np.float32), np.ones((1, 3), np.int32))
    assert key in cache
    next(tmp_path.rglob("*.npz")).write_bytes(b"PK garbage")
    assert key not in cache  # encoded ahead again, not left to each item


def test_item_keys_name_a_local_model_by_its_folder(tiny_dir, tmp_path, monkeypatch):
    job = write_job(tmp_path, "layout: card.yaml\nitems: [{seed: 1}]\n")
    monkeypatch.chdir(tiny_dir.parent)
    keys = {load_job(job, spelling).items[0].key for spelling in
            (tiny_dir.name, f"./{tiny_dir.name}", str(tiny_dir), f"{tiny_dir}/")}
    assert len(keys) == 1
    # the key of an absolute, resolved folder is what it was before models were normalised: old manifests hold
    old = manifest.sha256_json({"layout": manifest.sha256_file(tmp_path / "card.yaml"), "variables": {"seed": "1"},
                                "model": str(tiny_dir.resolve())})
    assert keys == {old}
    assert load_job(job, "owner/hub-model").items[0].key != old


def test_an_items_key_names_the_job_model_only_when_the_item_uses_it(tiny_dir, tmp_path):
    """An item whose layout names its model is not rendered again when the job's model changes; its manifest
    names no job model."""
    layout = LAYOUT.replace("layers:", f"model: {tiny_dir}\nlayers:")
    job, out = write_job(tmp_path, "layout: card.yaml\nname: '{layout}-{seed}'\nitems: [{seed: 1}]\n", layout), \
        tmp_path / "out"
    assert load_job(job, "owner/a").items[0].key == load_job(job, "owner/b").items[0].key
    summary, _ = run(job, out, tiny_dir)
    assert summary.rendered == ["card-1"] and sidecars(out)["card-1"]["model_identity"] is None
    summary, text = run(job, out, "owner/other-model")
    assert (summary.rendered, summary.skipped) == ([], ["card-1"]), text


def test_bad_arguments_are_one_error_before_anything_is_created(tiny_dir, tmp_path, capsys):
    job, out, afile = write_job(tmp_path, MATRIX_JOB), tmp_path / "out", tmp_path / "afile"
    afile.write_text("")
    batch = ["batch", job, "--model", tiny_dir, "--quiet"]
    assert errors_of(batch, capsys) == ["studio: error: -o/--output OUTDIR is required (unless --list)"]
    assert errors_of(batch + ["-o", out, "--memory-budget", "lots"], capsys) == [
        "studio: error: memory budget 'lots' is not a size like 6GiB, 512MiB or 2GB"]
    assert errors_of(batch + ["-o", out, "--memory-budget", "6"], capsys) == [
        "studio: error: memory budget '6' has no unit: give one, e.g. 6GiB, 512MiB or 2GB"]
    assert errors_of(["batch", job, "-o", out, "--model", tmp_path / "nope"], capsys) == [
        f"studio: error: {tmp_path / 'nope'}: no such model folder (and not a hub id like 'owner/name')"]
    assert errors_of(["batch", job, "-o", out, "--model", tmp_path], capsys) == [
        f"studio: error: {tmp_path}: no model_index.json; expected a pipeline folder in the diffusers layout"]
    assert errors_of(batch + ["-o", out, "--cache-dir", afile], capsys) == [
        f"studio: error: cache folder {afile}: is a file, not a folder"]
    assert not out.exists()
    assert errors_of(batch + ["-o", afile], capsys) == [
        f"studio: error: output folder {afile}: is a file, not a folder"]
    assert errors_of(batch + ["-o", afile / "sub"], capsys) == [
        f"studio: error: output folder {afile / 'sub'}: cannot create it (Not a directory)"]
    write_job(tmp_path, "layout: card.yaml\nmemory_budget: lots\n")
    assert errors_of(batch + ["-o", out], capsys) == [
        f"studio: error: {job}:2: memory_budget: 'lots' is not a size like 6GiB, 512MiB or 2GB"]
    write_job(tmp_path, "layout: card.yaml\nmemory_budget: 6\n")  # bytes? GiB?
    assert errors_of(batch + ["-o", out], capsys) == [
        f"studio: error: {job}:2: memory_budget: '6' has no unit: give one, e.g. 6GiB, 512MiB or 2GB"]
    assert not out.exists()


def test_list_refuses_what_the_run_refuses_before_rendering(tiny_dir, tmp_path, capsys):
    """--list is the pre-flight check: the memory budget and the job's model, checked as the run checks them
    before rendering; a job's `model:` is named at its line. No weights are read."""
    job, out = write_job(tmp_path, MATRIX_JOB), tmp_path / "out"
    for how in (["--list"], ["-o", out]):
        assert errors_of(["batch", job, "--model", tiny_dir, "--memory-budget", "lots", *how], capsys) == [
            "studio: error: memory budget 'lots' is not a size like 6GiB, 512MiB or 2GB"]
        assert errors_of(["batch", job, "--model", tmp_path / "nope", *how], capsys) == [
            f"studio: error: {tmp_path / 'nope'}: no such model folder (and not a hub id like 'owner/name')"]
        write_job(tmp_path, "layout: card.yaml\nmodel: /nonexistent/model\n")
        assert errors_of(["batch", job, *how], capsys) == [
            f"studio: error: {job}:2: model: /nonexistent/model: no such model folder (and not a hub id like "
            f"'owner/name')"]
        write_job(tmp_path, MATRIX_JOB)
    assert not out.exists()
    shutil.copytree(tiny_dir, tmp_path / "configs", ignore=shutil.ignore_patterns("*.safetensors"))
    write_job(tmp_path, "layout: card.yaml\nmodel: configs\n")
    assert main(["batch", str(job), "--list"]) == 0
    assert capsys.readouterr().out == '1\tcard-1\tcard.yaml\t{}\n'


def test_merging_shard_logs(tmp_path):
    def line(name, started):
        return {"name": name, "manifest": f"{name}.manifest.json", "timings": {"started": started}}

    manifest.append_line(tmp_path / "manifest.jsonl", line("a", "2025-01-01T00:00:00"))
    for i, (name, started) in enumerate([("c", "2025-01-03T00:00:00"), ("b", "2025-01-02T00:00:00")]):
        manifest.append_line(tmp_path / f"manifest-{i}-of-2.jsonl", line(name, started))
    manifest.append_line(tmp_path / "manifest-1-of-2.jsonl", line("a", "2025-01-01T00:00:00"))  # already there
    assert manifest.merge_logs(tmp_path) == 2
    assert [r["name"] for r in manifest.read_lines(tmp_path / "manifest.jsonl")] == ["a", "b", "c"]
    assert manifest.merge_logs(tmp_path) == 0 and not list(tmp_path.glob(".*.part"))


def test_a_log_line_names_each_file_by_its_path_in_outdir(tmp_path):
    """A line's `files[].path` is the sidecar's (relative to its folder); `output` is the path in OUTDIR, where
    the log is. Its `digest` is the sidecar's, which resume matches lines by."""
    entry = {"path": "a-fox-1.png", "bytes": 3, "sha256": "s"}
    record = {"name": "sub/a-fox-1", "layout": {"path": "card.yaml", "text": "t"}, "files": [entry], "digest": "d"}
    line = manifest.log_record(record, tmp_path / "sub" / "a-fox-1.manifest.json", tmp_path)
    assert line == {"name": "sub/a-fox-1", "layout": {"path": "card.yaml"}, "digest": "d",
                    "files": [{**entry, "output": "sub/a-fox-1.png"}], "manifest": "sub/a-fox-1.manifest.json"}
    assert record["files"] == [entry]  # the sidecar's record is left as it is
    line = manifest.log_record(record, tmp_path / "a-fox-1.manifest.json", tmp_path)
    assert line["files"] == [{**entry, "output": "a-fox-1.png"}]


def test_shards_are_disjoint_and_complete():
    items = list(range(11))
    for n in range(1, 6):
        shards = [select_shard(items, (i, n)) for i in range(n)]
        assert sorted(x for s in shards for x in s) == items
        assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1
    with pytest.raises(Exception):
        select_shard(items, (2, 2))


def test_log_tolerates_a_torn_line_and_appends_after_it(tmp_path):
    log = tmp_path / "manifest.jsonl"
    manifest.append_line(log, {"a": 1})
    with open(log, "ab") as f:
        f.write(b'{"b": 2, "tor')  # a crash in the middle of a line
    manifest.append_line(log, {"c": 3})
    assert manifest.read_lines(log) == [{"a": 1}, {"c": 3}]
    assert log.read_bytes().count(b"\n") == 3


def test_file_hashes_are_remembered_by_size_mtime_inode_and_ctime(tmp_path):
    f, memo = tmp_path / "w.bin", tmp_path / "memo.json"
    f.write_bytes(b"abc")
    hashes = manifest.FileHashes(memo)
    first = hashes(f)
    hashes.save()
    assert manifest.FileHashes(memo).known[str(f.resolve())][4] == first
    f.write_bytes(b"abcd")
    assert manifest.FileHashes(memo)(f) == manifest.sha256_file(f) != first


def test_file_hashes_see_a_change_whose_size_and_mtime_were_restored(tmp_path):
    """cp -p, tar x and reproducible builds give a changed file its old mtime: the ctime, which can't be set,
    tells it changed."""
    f, memo = tmp_path / "w.bin", tmp_path / "memo.json"
    f.write_bytes(b"abc")
    hashes = manifest.FileHashes(memo)
    first = hashes(f)
    hashes.save()
    st = f.stat()
    time.sleep(0.05)  # file times tick coarsely (a few ms): the change lands in a later tick
    f.write_bytes(b"abd")  # in place: the same inode
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (f.stat().st_size, f.stat().st_mtime_ns, f.stat().st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    assert manifest.FileHashes(memo)(f) == manifest.sha256_file(f) != first


def test_shards_sharing_a_file_hash_memo_keep_each_others_entries(tmp_path):
    a, b, memo = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "memo.json"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    one, two = manifest.FileHashes(memo), manifest.FileHashes(memo)  # two shards, started together
    one(a)
    two(b)
    assert one.save() is None and two.save() is None
    assert json.loads(memo.read_text()) == {str(a.resolve()): manifest.file_stamp(a) + [manifest.sha256_file(a)],
                                            str(b.resolve()): manifest.file_stamp(b) + [manifest.sha256_file(b)]}


def test_a_file_hash_memo_is_written_at_most_every_so_often(tmp_path):
    a, b, memo = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "memo.json"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    hashes = manifest.FileHashes(memo)
    hashes(a)
    hashes.save(every=60)  # the first write is not held back
    hashes(b)
    hashes.save(every=60)
    assert list(json.loads(memo.read_text())) == [str(a.resolve())]
    hashes.save()
    assert list(json.loads(memo.read_text())) == [str(a.resolve()), str(b.resolve())]


def count_reads(monkeypatch) -> list[Path]:
    """The files `manifest.sha256_file` reads from now on, in order (resolved, as `FileHashes` names them)."""
    reads, sha256_file = [], manifest.sha256_file
    monkeypatch.setattr(manifest, "sha256_file", lambda path: reads.append(Path(path)) or sha256_file(path))
    return reads


# -- in-process batches on the tiny checkpoint --------------------------------------------------------------------

MATRIX_JOB = """\
layout: card.yaml
name: "{prompt_slug}/{seed}"
matrix:
  prompt: ["a red fox", "an owl"]
  seed: [1, 2]
"""


def test_batch_renders_then_resumes_and_redoes_only_what_changed(tiny_dir, tmp_path, monkeypatch):
    from studio.pipeline import PixArtSigmaPipeline

    loads, load = [], PixArtSigmaPipeline.from_pretrained.__func__
    monkeypatch.setattr(PixArtSigmaPipeline, "from_pretrained",
                        classmethod(lambda cls, *a, **k: loads.append(a) or load(cls, *a, **k)))
    job, out = write_job(tmp_path, MATRIX_JOB), tmp_path / "out"
    names = {"a-red-fox/1", "a-red-fox/2", "an-owl/1", "an-owl/2"}
    summary, _ = run(job, out, tiny_dir)
    assert (summary.exit_code, set(summary.rendered)) == (0, names)
    assert loads == [(str(tiny_dir),)]  # models load once per batch
    assert_complete(out, names)
    record = sidecars(out)["an-owl/2"]
    assert record["resolved_variables"] == {"prompt": "an owl", "seed": "2"}
    assert record["generations"][0]["seed"] == 2 and record["generations"][0]["steps"] == 1
    assert record["models"][str(tiny_dir)]["transformer/diffusion_pytorch_model.safetensors"]
    assert record["software"]["mindspore"] and record["timings"]["render_s"] > 0
    assert record["layout"]["sha256"] == manifest.sha256_file(tmp_path / "card.yaml")
    assert record["text_encoder"] == {str(tiny_dir): "kept"}  # 2 GiB holds T5 through denoising
    assert record["digest"] == manifest.record_digest(record)
    assert len(manifest.read_lines(out / "manifest.jsonl")) == 4

    summary, _ = run(job, out, tiny_dir)
    assert (summary.rendered, len(summary.skipped)) == ([], 4)

    (out / "an-owl/1.png").write_bytes(b"not the picture")  # an altered output
    (out / "a-red-fox/2.manifest.json").unlink()  # outputs without a manifest (a kill before it)
    summary, text = run(job, out, tiny_dir)
    assert sorted(summary.rendered) == ["a-red-fox/2", "an-owl/1"]
    assert "an-owl/1: rendering again (1.png: differs from its manifest)" in text
    assert_complete(out, names)


def test_a_rerun_reads_no_output_whose_stamp_is_unchanged(tiny_dir, tmp_path, monkeypatch):
    """An output is read once, for its manifest, and enters the hash memo then; a rerun reads no file whose
    stamp the memo holds, from a read-only cache too; --no-cache reads every output."""
    job, out = write_job(tmp_path, "layout: card.yaml\nitems: [{seed: 1}, {seed: 2}]\n"), tmp_path.resolve() / "out"
    pngs = [out / "card-1.png", out / "card-2.png"]
    reads = count_reads(monkeypatch)
    run(job, out, tiny_dir)
    assert [p for p in reads if p.suffix == ".png"] == pngs
    memo = json.loads((out / ".cache" / "file-hashes.json").read_text())
    records = sidecars(out)
    assert [memo[str(p)] for p in pngs] == [manifest.file_stamp(p) + [records[p.stem]["files"][0]["sha256"]]
                                            for p in pngs]
    reads.clear()
    summary, _ = run(job, out, tiny_dir)
    assert (len(summary.skipped), reads) == (2, [])  # nor the weights, nor the layout's inputs

    cache = out / ".cache"
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*")}
    access = os.access  # read-only (root ignores permission bits, so os.access says it)
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != cache and access(path, mode))
    summary, _ = run(job, out, tiny_dir)
    assert (len(summary.skipped), reads) == (2, [])
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*")} == before
    monkeypatch.setattr(os, "access", access)

    summary, _ = run(job, out, tiny_dir, use_cache=False)
    assert (len(summary.skipped), reads) == (2, pngs)


def test_an_output_rewritten_with_its_mtime_restored_is_read_again(tiny_dir, tmp_path, monkeypatch):
    """A writer that keeps the size and sets the mtime back (cp -p, tar x) still changes the ctime, which
    can't be set: the memo's hash is not used. The same bytes are read and kept; other bytes are rendered
    again."""
    job, out = write_job(tmp_path, "layout: card.yaml\nitems: [{seed: 1}, {seed: 2}]\n"), tmp_path.resolve() / "out"
    run(job, out, tiny_dir)
    same, damaged = out / "card-1.png", out / "card-2.png"
    before = {p: p.stat() for p in (same, damaged)}
    time.sleep(0.05)  # file times tick coarsely on some kernels (a few ms): the rewrite lands in a later tick
    same.write_bytes(same.read_bytes())  # in place: the same inode
    data = damaged.read_bytes()
    damaged.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    for p, st in before.items():
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        now = p.stat()
        assert (now.st_size, now.st_mtime_ns, now.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
        assert now.st_ctime_ns != st.st_ctime_ns
    reads = count_reads(monkeypatch)
    summary, text = run(job, out, tiny_dir)
    assert (summary.skipped, summary.rendered) == (["card-1"], ["card-2"])
    assert "card-2: rendering again (card-2.png: differs from its manifest)" in text
    assert [p for p in reads if p.suffix == ".png"] == [same, damaged, damaged]  # checked, then the new file
    assert damaged.read_bytes() == data
    reads.clear()
    assert len(run(job, out, tiny_dir)[0].skipped) == 2 and reads == []


def test_one_bad_item_does_not_stop_the_batch(tiny_dir, tmp_path):
    (tmp_path / "broken.yaml").write_text("canvas: {width: 128}\nlayers: []\n")
    (tmp_path / "greedy.yaml").write_text(LAYOUT.replace("width: 128, height: 128", "width: 16384, height: 16384")
                                          .replace("steps: 1", "steps: 1, strategy: direct"))  # > 2 GiB
    job = write_job(tmp_path, """\
layout: card.yaml
name: "{layout}-{seed}"
items:
  - {seed: 1}
  - {layout: broken.yaml, seed: 2}
  - {layout: greedy.yaml, seed: 2}
  - {layout: missing.yaml, seed: 2}
  - {seed: 3, colour: red}
  - {seed: 4}
""")
    summary, text = run(job, tmp_path / "out", tiny_dir)
    assert sorted(summary.rendered) == ["card-1", "card-4"]
    failed = dict(summary.failed)
    assert sorted(failed) == ["broken-2", "card-3", "greedy-2", "missing-2"]
    assert "broken.yaml:1: canvas" in failed["broken-2"]
    assert "too small" in failed["greedy-2"]
    assert failed["missing-2"] == f"{tmp_path / 'missing.yaml'}: no such layout file"
    assert "colour" in failed["card-3"]  # a variable the layout does not define
    assert summary.exit_code == 1 and "2 rendered, 0 already done, 4 failed" in text
    assert_complete(tmp_path / "out", {"card-1", "card-4"})


def test_output_through_a_symlink_out_of_outdir_fails(tiny_dir, tmp_path):
    job = write_job(tmp_path, "layout: card.yaml\nname: 'link/{seed}'\nitems: [{seed: 1}]\n")
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "link").symlink_to(elsewhere)
    summary, _ = run(job, out, tiny_dir)
    assert "leaves OUTDIR" in summary.failed[0][1] and not list(elsewhere.iterdir())


def test_two_items_made_one_file_by_a_link_inside_outdir_the_one_through_it_fails(tiny_dir, tmp_path):
    """'b -> a' in OUTDIR: items 'b/x' and 'a/x' would both write a/x.png, one rendered again at every run. The
    item whose name is that file keeps it, whichever comes first; the other fails, naming the link."""
    job = write_job(tmp_path, "layout: card.yaml\nname: '{d}/x'\nitems: [{d: b}, {d: a}]\n",
                    FILL + "variables: {d: a}\n")
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "b").symlink_to("a")
    failed = [("b/x", f"output 'b/x' is the file 'a/x.png' of item 'a/x' through the symbolic link "
                      f"{out.resolve() / 'b'} (-> a) (two items never share a file)")]
    summary, _ = run(job, out, tiny_dir)
    assert (summary.rendered, summary.failed) == (["a/x"], failed)
    again, _ = run(job, out, tiny_dir)
    assert (again.rendered, again.skipped, again.failed) == ([], ["a/x"], failed)
    assert sorted(p.name for p in (out / "a").iterdir()) == ["x.manifest.json", "x.png"]


def test_an_item_written_through_a_link_inside_outdir_keeps_its_files_when_rendered_again(tiny_dir, tmp_path):
    """'latest -> 2024' in OUTDIR, item 'latest/card', rendered again after its layout changed: the files of its
    last render that it no longer writes go (the PDF), not those it writes (2024/card.png is its own)."""
    job = write_job(tmp_path, "layout: card.yaml\nname: latest/card\n", FILL + "output: {formats: [png, pdf]}\n")
    out = tmp_path / "out"
    (out / "2024").mkdir(parents=True)
    (out / "latest").symlink_to("2024")
    assert run(job, out, tiny_dir)[0].rendered == ["latest/card"]
    (tmp_path / "card.yaml").write_text(FILL.replace("navy", "teal"))
    assert run(job, out, tiny_dir)[0].rendered == ["latest/card"]
    assert sorted(p.name for p in (out / "2024").iterdir()) == ["card.manifest.json", "card.png"]
    assert run(job, out, tiny_dir)[0].skipped == ["latest/card"]


def test_shards_render_disjoint_parts_into_one_folder(tiny_dir, tmp_path):
    job, out = write_job(tmp_path, MATRIX_JOB), tmp_path / "out"
    first, text = run(job, out, tiny_dir, shard=(0, 2))
    assert text.startswith(f"{job}: 4 items, 2 in shard 0/2: 0 already done, 0 failed, 2 to render\n")
    second, _ = run(job, out, tiny_dir, shard=(1, 2))
    assert set(first.rendered).isdisjoint(second.rendered)
    assert len(first.rendered) == len(second.rendered) == 2
    assert_complete(out, set(first.rendered) | set(second.rendered))
    logs = {p.name: {r["name"] for r in manifest.read_lines(p)} for p in out.glob("manifest*.jsonl")}
    assert logs == {"manifest-0-of-2.jsonl": set(first.rendered), "manifest-1-of-2.jsonl": set(second.rendered)}
    whole, text = run(job, out, tiny_dir)
    assert (whole.rendered, len(whole.skipped)) == ([], 4)
    assert text.startswith(f"{job}: 4 items: 4 already done, 0 failed, 0 to render\n")
    merged = manifest.read_lines(out / "manifest.jsonl")  # an unsharded run merges the shards' logs, once
    assert sorted(r["name"] for r in merged) == sorted(first.rendered + second.rendered)
    run(job, out, tiny_dir)
    assert manifest.read_lines(out / "manifest.jsonl") == merged


def test_embedding_cache_gives_the_same_files_and_skips_the_text_encoder(tiny_dir, tmp_path):
    job = write_job(tmp_path, MATRIX_JOB)
    cache = tmp_path / "cache"
    run(job, tmp_path / "a", tiny_dir, cache_dir=cache)
    run(job, tmp_path / "b", tiny_dir, cache_dir=cache)  # every prompt cached
    run(job, tmp_path / "c", tiny_dir, use_cache=False)
    a, b, c = (sidecars(tmp_path / x) for x in "abc")
    assert [r["embedding_cache"][str(tiny_dir)]["misses"] for r in b.values()] == [0, 0, 0, 0]
    assert sum(r["embedding_cache"][str(tiny_dir)]["misses"] for r in a.values()) == 3  # 2 prompts and ""
    assert not (tmp_path / "c" / ".cache" / "embeddings").exists()
    assert {k: r["files"] for k, r in a.items()} == {k: r["files"] for k, r in b.items()} == {
        k: r["files"] for k, r in c.items()}


def test_a_model_groups_first_item_counts_the_loading_before_it(tiny_dir, tmp_path):
    """With the embedding cache, a group's models load (and its prompts are encoded ahead) before its first
    item starts: that item's timings count them, in load_s, encode_ahead_s and total_s; the next item's
    load nothing. The log's lines name the files where they are in OUTDIR."""
    layout = LAYOUT.replace("width: 128, height: 128", "width: 32, height: 32")
    job, out = write_job(tmp_path, "layout: card.yaml\nname: 'sub/{seed}'\nitems: [{seed: 1}, {seed: 2}]\n",
                         layout), tmp_path / "out"
    summary, _ = run(job, out, tiny_dir)
    assert summary.rendered == ["sub/1", "sub/2"]
    lines = manifest.read_lines(out / "manifest.jsonl")
    first, second = (line["timings"] for line in lines)
    assert first["load_s"] > 0 and (second["load_s"], second["encode_ahead_s"]) == (0.0, 0.0)
    for timings in first, second:
        assert timings["total_s"] >= timings["load_s"] + timings["encode_ahead_s"] + timings["render_s"] - 0.002
    assert [[(f["path"], f["output"]) for f in line["files"]] for line in lines] == [[("1.png", "sub/1.png")],
                                                                                     [("2.png", "sub/2.png")]]
    assert [line["digest"] for line in lines] == [sidecars(out)[name]["digest"] for name in ("sub/1", "sub/2")]


def test_text_encoder_is_released_when_memory_is_tight(tiny_dir, tmp_path):
    # at 128x128 on the tiny model, 7 MiB plans denoising with smaller attention chunks when T5 stays loaded
    job = write_job(tmp_path, "layout: card.yaml\nitems: [{seed: 1}]\n")
    summary, _ = run(job, tmp_path / "out", tiny_dir, memory_budget="7MiB")
    assert summary.rendered == ["card-1"]
    assert sidecars(tmp_path / "out")["card-1"]["text_encoder"] == {str(tiny_dir): "released"}


def test_streamed_prompts_are_encoded_ahead_in_one_read_of_t5(tiny_dir, tmp_path, monkeypatch):
    """With T5 released before denoising (a tight budget), the batch encodes every item's prompts in one pass
    over the streamed encoder before the first item, instead of one pass per item; the files are those of a
    run that encodes each item's prompts itself (--no-cache)."""
    from studio.models.t5 import StreamedT5Encoder

    passes, encode_each = [], StreamedT5Encoder.encode_each
    monkeypatch.setattr(StreamedT5Encoder, "encode_each",
                        lambda self, inputs: passes.append(len(inputs)) or encode_each(self, inputs))
    job = write_job(tmp_path, MATRIX_JOB)  # 2 prompts x 2 seeds
    summary, text = run(job, tmp_path / "ahead", tiny_dir, memory_budget="7MiB")
    assert summary.exit_code == 0 and len(summary.rendered) == 4
    assert passes == [3] and "encoded 3 prompts ahead" in text  # the two prompts and the empty negative one
    ahead = sidecars(tmp_path / "ahead")
    assert {r["text_encoder"][str(tiny_dir)] for r in ahead.values()} == {"released"}
    assert [r["embedding_cache"][str(tiny_dir)]["misses"] for r in ahead.values()] == [0] * 4
    lines = manifest.read_lines(tmp_path / "ahead" / "manifest.jsonl")  # in the order the items rendered
    encoding = [line["timings"]["encode_ahead_s"] for line in lines]
    assert encoding[0] > 0 and encoding[1:] == [0.0] * 3  # the first item's record counts the encoding ahead
    passes.clear()
    run(job, tmp_path / "each", tiny_dir, memory_budget="7MiB", use_cache=False)
    assert passes == [2] * 4  # each item streams T5 for its prompt and the negative one
    assert {k: r["files"] for k, r in ahead.items()} == {k: r["files"] for k, r in sidecars(tmp_path / "each").items()}


def test_an_item_streams_t5_once_when_no_cache_stores_its_prompts(tiny_dir, tmp_path, monkeypatch):
    """Two generate layers, T5 released (7 MiB): without a cache, or with a read-only one that lacks the
    prompts, the item's render encodes its three prompts in one pass of T5 and its layers take them from
    memory (not three passes: ahead, then again for each layer)."""
    from studio.models.t5 import StreamedT5Encoder

    passes, encode_each = [], StreamedT5Encoder.encode_each
    monkeypatch.setattr(StreamedT5Encoder, "encode_each",
                        lambda self, inputs: passes.append(len(inputs)) or encode_each(self, inputs))
    layout = LAYOUT.replace("width: 128, height: 128", "width: 64, height: 64").replace("steps: 1}", (
        "steps: 1, strategy: direct}\n  - generate: {prompt: '{prompt} at night', seed: 9, steps: 1, strategy: "
        "direct, region: {x: 0, y: 0, w: 32, h: 32}}"))
    job = write_job(tmp_path, "layout: card.yaml\nname: '{prompt_slug}'\nitems: [{prompt: a fox}]\n", layout)
    summary, _ = run(job, tmp_path / "none", tiny_dir, memory_budget="7MiB", use_cache=False)
    assert summary.rendered == ["a-fox"] and passes == [3]  # the prompt, '' and the night one
    cache, access = tmp_path / "cache", os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != cache and access(path, mode))
    passes.clear()
    summary, _ = run(job, tmp_path / "read-only", tiny_dir, memory_budget="7MiB", cache_dir=cache)
    assert summary.rendered == ["a-fox"] and passes == [3]
    none, read_only = sidecars(tmp_path / "none"), sidecars(tmp_path / "read-only")
    assert read_only["a-fox"]["embedding_cache"][str(tiny_dir)] == {"stored": False, "hits": 4, "misses": 0}
    assert none["a-fox"]["text_encoder"] == {str(tiny_dir): "released"}
    assert none["a-fox"]["files"] == read_only["a-fox"]["files"]


def test_render_and_batch_make_the_same_pixels(tiny_dir, tmp_path):
    """Each prompt is encoded alone whatever encodes it, so `studio render` of a layout and a batch item of the
    same layout and variables give the same pixels (their files differ only in metadata)."""
    import numpy as np
    from PIL import Image

    from studio.layout import load_layout
    from studio.render import render

    job = write_job(tmp_path, "layout: card.yaml\nname: card\nitems: [{prompt: a fox, seed: 1}]\n",
                    LAYOUT.replace("width: 128, height: 128", "width: 512, height: 256"))
    run(job, tmp_path / "batch", tiny_dir, use_cache=False)
    [rendered] = render(load_layout(tmp_path / "card.yaml", {"prompt": "a fox", "seed": "1"}), tmp_path / "one",
                        str(tiny_dir), "2GiB")
    with Image.open(rendered) as a, Image.open(tmp_path / "batch" / "card.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


TWO_MODELS_JOB = """\
name: "{layout}-{seed}"
items:
  - {layout: a.yaml, seed: 1}
  - {layout: b.yaml, seed: 1}
  - {layout: a.yaml, seed: 2}
  - {layout: b.yaml, seed: 2}
"""


@pytest.fixture(scope="module")
def other_tiny(tmp_path_factory):
    """A second tiny pipeline, with other random weights (a second model for the same job)."""
    from studio.tiny import make_tiny
    return make_tiny(tmp_path_factory.mktemp("tiny-b") / "pixart", sample_size=32, seed=1)


def run_two_models(tmp_path, out, tiny_dir, other_tiny, budget, monkeypatch):
    """A job whose items alternate between two models, at `budget`; returns the summary, stdout and, per model
    load, (model, [(model, T5 loaded) of each pipeline still alive when it starts])."""
    import gc
    import weakref

    from studio.pipeline import PixArtSigmaPipeline

    loads, alive, load = [], [], PixArtSigmaPipeline.from_pretrained.__func__

    def counting(cls, model_id, *args, **kwargs):
        gc.collect()  # what is still referenced, not what awaits the collector
        loads.append((model_id, [(m, ref()._text_encoder is not None) for m, ref in alive if ref() is not None]))
        pipe = load(cls, model_id, *args, **kwargs)
        alive.append((model_id, weakref.ref(pipe)))
        return pipe
    monkeypatch.setattr(PixArtSigmaPipeline, "from_pretrained", classmethod(counting))
    layout = LAYOUT.replace("width: 128, height: 128", "width: 64, height: 64").replace("steps: 1}",
                                                                                        "steps: 1, strategy: direct}")
    (tmp_path / "a.yaml").write_text(f"model: {tiny_dir}\n{layout}")
    (tmp_path / "b.yaml").write_text(f"model: {other_tiny}\n{layout}")
    summary, text = run(write_job(tmp_path, TWO_MODELS_JOB), out, tiny_dir, memory_budget=budget)
    assert summary.exit_code == 0
    return summary, text, loads


def test_models_that_fit_the_budget_together_stay_loaded(tiny_dir, other_tiny, tmp_path, monkeypatch):
    summary, text, loads = run_two_models(tmp_path, tmp_path / "out", tiny_dir, other_tiny, "2GiB", monkeypatch)
    a, b = str(tiny_dir), str(other_tiny)
    # each model loads once and stays; the first one's T5, kept through its items, goes before the other's
    assert loads == [(a, []), (b, [(a, False)])]
    assert summary.rendered == ["a-1", "a-2", "b-1", "b-2"]  # grouped by model, in job order within a group
    assert "don't fit the memory budget together" not in text
    assert [list(r["text_encoder"].values()) for r in sidecars(tmp_path / "out").values()] == [["kept"]] * 4


def test_models_that_do_not_fit_together_load_one_at_a_time_grouped(tiny_dir, other_tiny, tmp_path, monkeypatch):
    """At 64x64 on the tiny models the text phase plans 13.70 MB whole (the T5 attention's workspace), so a
    13.8 MB budget runs every generation as 2 GiB does, but can't hold the other model's 0.48 MB beside it:
    the models load one at a time, each once, and make the files the 2 GiB run makes."""
    summary, text, loads = run_two_models(tmp_path, tmp_path / "tight", tiny_dir, other_tiny, "13.8MB", monkeypatch)
    assert loads == [(str(tiny_dir), []), (str(other_tiny), [])]  # nothing else alive when a model loads
    assert summary.rendered == ["a-1", "a-2", "b-1", "b-2"]
    assert "note: the job's 2 models don't fit the memory budget together" in text
    run_two_models(tmp_path, tmp_path / "roomy", tiny_dir, other_tiny, "2GiB", monkeypatch)
    tight, roomy = sidecars(tmp_path / "tight"), sidecars(tmp_path / "roomy")
    assert {r["memory_budget"] for r in tight.values()} == {13_800_000}
    assert {k: r["files"] for k, r in tight.items()} == {k: r["files"] for k, r in roomy.items()}


def test_prompts_are_encoded_ahead_with_only_their_model_loaded(tiny_dir, other_tiny, tmp_path, monkeypatch):
    """7 MiB releases T5 before denoising and can't hold both models: each model's prompts (the item's and the
    empty negative one) are encoded in one read of its T5 when it loads, the other model not loaded."""
    from studio.models.t5 import StreamedT5Encoder

    passes, encode_each = [], StreamedT5Encoder.encode_each
    monkeypatch.setattr(StreamedT5Encoder, "encode_each",
                        lambda self, inputs: passes.append(len(inputs)) or encode_each(self, inputs))
    summary, text, loads = run_two_models(tmp_path, tmp_path / "out", tiny_dir, other_tiny, "7MiB", monkeypatch)
    assert loads == [(str(tiny_dir), []), (str(other_tiny), [])]
    assert passes == [2, 2] and text.count("encoded 2 prompts ahead") == 2
    assert summary.rendered == ["a-1", "a-2", "b-1", "b-2"]


def test_items_are_grouped_so_that_each_model_loads_as_few_times_as_it_can():
    from types import SimpleNamespace

    from studio.batch import _grouped

    uses = ["A", "B", "AB", "C", "A", "", "B"]  # the models of each item, in job order
    tasks = [SimpleNamespace(n=n, models=dict.fromkeys(models)) for n, models in enumerate(uses)]
    # A's items; A and B (shares A); B (shares B); then C and none in job order (they share nothing)
    assert [t.n for t in _grouped(tasks)] == [0, 4, 2, 1, 6, 3, 5]


def test_a_failure_encoding_ahead_only_warns(tiny_dir, tmp_path, monkeypatch):
    from studio.pipeline import PixArtSigmaPipeline

    def broken(self, *args, **kwargs):
        raise OSError("disk read error")
    monkeypatch.setattr(PixArtSigmaPipeline, "encode_ahead", broken)
    stderr = io.StringIO()
    summary, _ = run(write_job(tmp_path, MATRIX_JOB), tmp_path / "out", tiny_dir, stderr, memory_budget="7MiB")
    assert summary.exit_code == 0 and len(summary.rendered) == 4  # each item encoded its own prompts
    assert "studio: batch: warning: encoding the prompts ahead failed: OSError: disk read error" in stderr.getvalue()


IMAGE_LAYOUT = """\
canvas: {width: 64, height: 64}
variables: {seed: 1, img: good.png}
layers:
  - generate: {prompt: "a cat", seed: "{seed}", steps: 1}
  - image: {path: "{img}", region: {x: 0, y: 0, w: 32, h: 32}}
"""


def test_a_hub_model_is_checked_before_the_batch_when_items_use_it(tiny_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    job, out = write_job(tmp_path, MATRIX_JOB), tmp_path / "out"
    for how in (["-o", out], ["--list"]):  # --list checks it as the run does
        assert errors_of(["batch", job, *how, "--model", "owner/absent", "--quiet"], capsys) == [
            "studio: error: owner/absent: not a local folder, not in the Hugging Face cache, and could not be "
            "downloaded (ConnectionError: HF_HUB_OFFLINE is set); pass the folder of a downloaded copy"]
    assert not out.exists()
    # layouts that name their model don't use the job's: it is not looked up, and the items render
    write_job(tmp_path, MATRIX_JOB, f"model: {tiny_dir}\n" + LAYOUT)
    summary, _ = run(job, out, "owner/absent")
    assert summary.exit_code == 0 and len(summary.rendered) == 4
    # a model a layout names fails its items only, and the summary gives the reason once
    write_job(tmp_path, MATRIX_JOB, "model: owner/gone\n" + LAYOUT)
    summary, text = run(job, tmp_path / "out2", tiny_dir)
    assert len(summary.failed) == 4 and summary.exit_code == 1
    assert text.splitlines()[-2:] == [
        "  failed a-red-fox/1, a-red-fox/2, an-owl/1, an-owl/2:",
        f"    {tmp_path / 'card.yaml'}:1: model: owner/gone: not a local folder, not in the Hugging Face cache, and "
        "could not be downloaded (ConnectionError: HF_HUB_OFFLINE is set); pass the folder of a downloaded copy"]


def test_list_plans_each_item_as_the_run_does(tiny_dir, tmp_path, capsys):
    """--list, a pre-flight check, names the items the run would fail when planning them (no weight read): a
    budget too small for the layout, here for the half of the job whose layout generates."""
    job = write_job(tmp_path, 'name: "{prompt}/{seed}"\nitems:\n  - {layout: card.yaml, prompt: a, seed: 3}\n'
                              '  - {layout: flat.yaml, prompt: b, seed: 4}\n')
    (tmp_path / "flat.yaml").write_text(FILL + "variables: {prompt: x, seed: 1}\n")
    argv = ["batch", str(job), "--list", "--model", str(tiny_dir), "--memory-budget"]
    assert main(argv + ["1KiB"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[1] for line in lines if not line.startswith("\t")] == ["a/3", "b/4"]
    [problem] = [line for line in lines if line.startswith("\tproblem ")]
    assert problem.startswith(f"\tproblem (item at {job}:3): {tmp_path / 'card.yaml'}:4: layers[0]: memory budget "
                              f"1.00 KiB is too small for 128x128")
    assert lines.index(problem) == 1  # under the item whose layout generates
    assert main(argv + ["2GiB"]) == 0 and "problem" not in capsys.readouterr().out


def test_a_failure_while_rendering_fails_that_item_only(tiny_dir, tmp_path):
    """An image cut short after the job was read (the loader decodes images whole, so it was good then): the item's
    plan finds it (plan_layout checks images as the loader does), and that item alone fails."""
    import numpy as np
    from PIL import Image

    for name in ("cut.png", "good.png"):
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(tmp_path / name)
    text = "layout: card.yaml\nname: '{img_slug}'\nitems: [{img: cut.png}, {img: good.png}]\n"
    job = load_job(write_job(tmp_path, text, IMAGE_LAYOUT), str(tiny_dir))
    (tmp_path / "cut.png").write_bytes((tmp_path / "good.png").read_bytes()[:1500])  # truncated in its pixels
    stdout = io.StringIO()
    summary = run_batch(job, tmp_path / "out", memory_budget="2GiB", quiet=True, out=stdout, err=io.StringIO())
    text = stdout.getvalue()
    assert summary.rendered == ["good-png"] and [name for name, _ in summary.failed] == ["cut-png"]
    assert f"failed cut-png (item 1, {tmp_path / 'job.yaml'}:3): " in text
    assert f"'{tmp_path / 'cut.png'}' is damaged: image file is truncated" in text
    assert summary.exit_code == 1 and "1 rendered, 0 already done, 1 failed" in text and "  failed cut-png:" in text
    assert_complete(tmp_path / "out", {"good-png"})


def test_a_cache_that_cannot_be_written_only_warns_and_old_temporaries_go(tiny_dir, tmp_path):
    job, cache = write_job(tmp_path, "layout: card.yaml\nmatrix: {prompt: [a fox, an owl]}\n"), tmp_path / "cache"
    (cache / "file-hashes.json").mkdir(parents=True)  # the memo can't be replaced (as on a full disk)
    (cache / "embeddings").write_text("")  # nor can T5 features be stored
    stale, fresh = cache / ".file-hashes.json.k1.part", cache / ".file-hashes.json.k2.part"  # fresh: another shard's
    stale.write_text("")
    fresh.write_text("")
    old = time.time() - STALE_PART - 60
    os.utime(stale, (old, old))
    err = io.StringIO()
    summary, _ = run(job, tmp_path / "out", tiny_dir, cache_dir=cache, stderr=err)
    assert summary.exit_code == 0 and len(summary.rendered) == 2
    warnings = [line for line in err.getvalue().splitlines() if "warning" in line]
    assert len(warnings) == 2, warnings  # once each, not once per item
    assert f"cannot write T5 features to {cache / 'embeddings'}" in warnings[0]
    assert f"cannot write {cache / 'file-hashes.json'}" in warnings[1]
    assert not stale.exists() and fresh.exists()


def test_a_read_only_cache_is_read_with_one_warning(tiny_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"  # a shared cache, warmed by an earlier batch
    run(write_job(tmp_path, "layout: card.yaml\nmatrix: {prompt: [a fox]}\n"), tmp_path / "warm", tiny_dir,
        cache_dir=cache)
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*")}
    access = os.access  # read-only (root ignores permission bits, so os.access says it)
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != cache and access(path, mode))
    job = write_job(tmp_path, "layout: card.yaml\nname: '{prompt_slug}'\nmatrix: {prompt: [a fox, an owl]}\n")
    err = io.StringIO()
    summary, _ = run(job, tmp_path / "out", tiny_dir, cache_dir=cache, stderr=err)
    assert summary.exit_code == 0 and sorted(summary.rendered) == ["a-fox", "an-owl"]
    assert [line for line in err.getvalue().splitlines() if "warning" in line] == [
        f"studio: batch: warning: cache folder {cache}: read-only; the T5 features and file hashes it holds are "
        "used, new ones are not stored"]
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*")} == before
    used = {name: r["embedding_cache"][str(tiny_dir)] for name, r in sidecars(tmp_path / "out").items()}
    assert used == {"a-fox": {"stored": False, "hits": 2, "misses": 0},  # the prompt and the empty negative
                    "an-owl": {"stored": False, "hits": 1, "misses": 1}}


def test_files_an_item_no_longer_writes_are_removed(tiny_dir, tmp_path):
    job, out = write_job(tmp_path, "layout: card.yaml\n", LAYOUT + "output: {formats: [png, pdf]}\n"), tmp_path / "out"
    run(job, out, tiny_dir)
    assert (out / "card-1.pdf").is_file()
    (out / "card-1.tiff").write_bytes(b"someone's")  # not in its manifest: not the batch's to remove
    write_job(tmp_path, "layout: card.yaml\n")  # png only
    summary, _ = run(job, out, tiny_dir)
    assert summary.rendered == ["card-1"]
    assert sorted(p.name for p in out.iterdir()) == [".cache", "card-1.manifest.json", "card-1.png", "card-1.tiff",
                                                     "manifest.jsonl"]
    assert_complete(out, {"card-1"})


FILL = "canvas: {width: 64, height: 32}\nlayers:\n  - fill: {color: navy}\n"  # no model: fast
CLIPPED = FILL + "  - text: {text: Grand Opening, size: 20px, wrap: false, name: title, region: full}\n"


def test_a_failed_item_leaves_no_folder_it_made(tiny_dir, tmp_path, monkeypatch):
    job = write_job(tmp_path, "layout: card.yaml\nname: '{where}/card'\nitems: [{where: a/b}, {where: c}]\n",
                    FILL + "variables: {where: x}\n")
    from studio import render as R

    out, render = tmp_path / "out", R.render

    def full_disk(layout, folder, *args, **kwargs):
        if folder.name == "b":
            raise OSError(errno.ENOSPC, "No space left on device")
        return render(layout, folder, *args, **kwargs)

    (out / "c").mkdir(parents=True)
    (out / "c" / "keep.txt").write_text("")
    monkeypatch.setattr(R, "render", full_disk)
    summary, _ = run(job, out, tiny_dir)
    assert (summary.rendered, summary.failed) == (["c/card"], [("a/b/card", "OSError: [Errno 28] No space left on device")])
    assert not (out / "a").exists() and sorted(p.name for p in (out / "c").iterdir()) == [
        "card.manifest.json", "card.png", "keep.txt"]


def test_a_killed_runs_temporaries_go_in_any_format_of_the_items_own_names(tiny_dir, tmp_path):
    """A run killed while writing a PDF, then the layout edited to write PNG only: the PDF's temporary goes,
    when the item renders again and when it is finished; another item's (another shard's) stay."""
    job, out = write_job(tmp_path, "layout: card.yaml\n", FILL + "output: {formats: [png]}\n"), tmp_path / "out"
    ours, others = [".card-1.pdf.k1.part", ".card-1.tif.k2.part.old"], [".card-2.pdf.k1.part", ".card.pdf.k1.part"]
    out.mkdir()
    for name in ours + others:
        (out / name).write_bytes(b"")
    assert run(job, out, tiny_dir)[0].rendered == ["card-1"]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".card")) == sorted(others)
    for name in ours:
        (out / name).write_bytes(b"")
    assert run(job, out, tiny_dir)[0].skipped == ["card-1"]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".card")) == sorted(others)


def test_text_problems_are_said_once_per_item_naming_it_on_the_batch_output(tiny_dir, tmp_path, capsys):
    job = write_job(tmp_path, "layout: card.yaml\nitems: [{}, {}]\n", CLIPPED)
    summary, text = run(job, tmp_path / "out", tiny_dir)
    assert summary.rendered == ["card-1", "card-2"]
    assert [line for line in text.splitlines() if "warning" in line] == [
        "[1/2] warning: card-1: card.yaml:4: layers[1] (title): text overflows its region (right clipped)",
        "[2/2] warning: card-2: card.yaml:4: layers[1] (title): text overflows its region (right clipped)"]
    assert capsys.readouterr().err == ""  # not on stderr, naming the layout file only


def test_a_variable_the_layout_uses_nowhere_is_warned_of_once_a_job(tiny_dir, tmp_path, capsys):
    """Items that differ only in a variable their layout defines but writes nowhere are the same picture under
    other names: the run and --list say so once for the job, at the line that gives it, naming the layout."""
    (tmp_path / "other.yaml").write_text(FILL.replace("navy", '"{shade}"') + "variables: {shade: red, tint: red}\n")
    job = write_job(tmp_path, """\
layout: card.yaml
variables: {tint: red}
matrix:
  shade: [red, blue]
  layout: [card.yaml, other.yaml]
""", FILL + "variables: {shade: x, tint: x}  # {shade}\n")
    said = [f"{job}:2: variable 'tint': card.yaml defines {{tint}} but uses it nowhere (items that differ only in it "
            f"render the same picture)",
            f"{job}:3: variable 'shade': card.yaml defines {{shade}} but uses it nowhere (items that differ only "
            f"in it render the same picture)",
            f"{job}:2: variable 'tint': other.yaml defines {{tint}} but uses it nowhere (items that differ only in it "
            f"render the same picture)"]
    assert list(load_job(job, str(tiny_dir)).warnings) == said
    err = io.StringIO()
    summary, _ = run(job, tmp_path / "out", tiny_dir, stderr=err)
    assert summary.rendered == ["card-1", "other-2", "card-3", "other-4"]
    assert err.getvalue() == "".join(f"studio: batch: warning: {line}\n" for line in said)
    assert main(["batch", str(job), "--list", "--model", str(tiny_dir)]) == 0
    assert capsys.readouterr().err == "".join(f"studio: batch: warning: {line}\n" for line in said)


def test_an_item_whose_log_line_cannot_be_written_is_done(tiny_dir, tmp_path, monkeypatch):
    """Its files and manifest are written: a note, not a failure; the next run adds the line."""
    import errno

    def full(path, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    job, out = write_job(tmp_path, "layout: card.yaml\n", FILL), tmp_path / "out"
    with monkeypatch.context() as m:
        m.setattr(manifest, "append_line", full)
        summary, text = run(job, out, tiny_dir)
    assert (summary.rendered, summary.failed, summary.exit_code) == (["card-1"], [], 0)
    assert text.splitlines()[1] == (f"[1/1] card-1: cannot add its line to {out / 'manifest.jsonl'} (No space "
                                    f"left on device); the next run adds it")
    assert text.splitlines()[2].startswith("[1/1] rendered card-1 (")
    summary, _ = run(job, out, tiny_dir)
    assert summary.skipped == ["card-1"]
    assert [r["digest"] for r in manifest.read_lines(out / "manifest.jsonl")] == [sidecars(out)["card-1"]["digest"]]


@pytest.mark.parametrize("where", ["load", "ahead"])
def test_a_signal_while_models_load_or_prompts_are_encoded_ahead_renders_no_item(tiny_dir, tmp_path, monkeypatch,
                                                                                 where):
    import studio.pipeline
    from studio.pipeline import PixArtSigmaPipeline

    load, ahead = PixArtSigmaPipeline.from_pretrained.__func__, studio.pipeline.encode_all_ahead
    if where == "load":  # the items load their models (no cache: nothing is encoded ahead)
        monkeypatch.setattr(PixArtSigmaPipeline, "from_pretrained", classmethod(
            lambda cls, *a, **k: os.kill(os.getpid(), signal.SIGINT) or load(cls, *a, **k)))
    else:
        monkeypatch.setattr(studio.pipeline, "encode_all_ahead",
                            lambda *a, **k: os.kill(os.getpid(), signal.SIGINT) or ahead(*a, **k))
    summary, text = run(write_job(tmp_path, MATRIX_JOB), tmp_path / "out", tiny_dir, memory_budget="7MiB",
                        use_cache=where != "load")
    assert (summary.rendered, summary.failed, summary.dropped, summary.exit_code) == ([], [], None, 130)
    assert "stopped by SIGINT with 4 not rendered" in text and not sidecars(tmp_path / "out")


def test_a_render_whose_log_line_was_lost_gets_it_on_the_next_run(tiny_dir, tmp_path, monkeypatch):
    """Rendered again (a file edited), then killed between its new manifest and its log line: the next run
    adds that render's line, though the log holds a line of the same item from its first render."""
    job, out = write_job(tmp_path, "layout: card.yaml\nitems: [{seed: 1}]\n"), tmp_path / "out"
    run(job, out, tiny_dir)
    (out / "card-1.png").write_bytes(b"edited")
    with monkeypatch.context() as m:
        m.setattr(manifest, "append_line", lambda path, record: None)  # the line a kill would not let it write
        assert run(job, out, tiny_dir)[0].rendered == ["card-1"]
    summary, _ = run(job, out, tiny_dir)
    assert summary.skipped == ["card-1"]
    digests = [r["digest"] for r in manifest.read_lines(out / "manifest.jsonl")]
    assert len(digests) == 2 and digests[-1] == sidecars(out)["card-1"]["digest"]  # the last line is the current


def test_a_file_in_the_way_fails_its_item_in_one_line(tiny_dir, tmp_path):
    job = write_job(tmp_path, "layout: card.yaml\nname: '{prompt_slug}/{seed}'\n"
                              "matrix: {prompt: [fox, owl], seed: [1]}\n")
    out, err = tmp_path / "out", io.StringIO()
    out.mkdir()
    (out / "fox").write_text("")  # where the item fox/1 needs a folder
    summary, text = run(job, out, tiny_dir, stderr=err)
    assert (summary.exit_code, summary.rendered) == (1, ["owl/1"])
    assert summary.failed == [("fox/1", f"{out / 'fox'}: File exists")]  # the disk's problem, not a bug in studio
    assert "Traceback" not in err.getvalue() and "damaged manifest" not in text  # it has none: not damaged


def test_damaged_or_edited_manifests_are_rendered_again_and_refused_by_rerender(tiny_dir, tmp_path, capsys):
    job, out = write_job(tmp_path, "layout: card.yaml\nitems: [{seed: 1}, {seed: 2}]\n"), tmp_path / "out"
    run(job, out, tiny_dir)
    sidecar = out / "card-1.manifest.json"
    good = sidecar.read_text()
    for change, problem in [
            (lambda r: r.pop("inputs"), "'inputs' is missing"),
            (lambda r: r["layout"].update(text=None), "'layout' is not a mapping of text: path, file, sha256, text"),
            (lambda r: r.update(files=["2.png"]), "'files' is not a non-empty list of {path, bytes, sha256}"),
            (lambda r: r["variables"].update(seed="3"), "'item' is not the key of its layout, variables and model"),
            (lambda r: r.pop("digest"), "'digest' is missing"),  # no way around the edit check
            (lambda r: r["generations"][0].update(seed=3), "'digest' does not match the record (edited after")]:
        sidecar.write_text(good)
        edit(sidecar, change)
        [line] = errors_of(["rerender", sidecar], capsys)
        assert line.startswith(f"studio: error: {sidecar}: not a usable batch manifest: {problem}"), line
    summary, text = run(job, out, tiny_dir)  # the last edit: a batch renders the item again
    assert summary.rendered == ["card-1"] and "card-1: rendering again (damaged manifest: 'digest' does not" in text
    edit(sidecar, lambda r: r.update(files=["2.png"]))
    summary, text = run(job, out, tiny_dir)
    assert summary.rendered == ["card-1"] and "card-1: rendering again (damaged manifest: 'files' is not" in text
    assert_complete(out, {"card-1", "card-2"})

    # another memory budget: finished items are kept, with one note per run
    summary, text = run(job, out, tiny_dir, memory_budget="3GiB")
    assert len(summary.skipped) == 2 and text.count("note:") == 1
    assert "note: 2 finished item(s) were rendered with another memory budget (e.g. 2.00 GiB, now 3.00 GiB)" in text


def test_embedding_cache_survives_a_damaged_entry(tmp_path):
    import numpy as np

    cache = EmbeddingCache(tmp_path, "model")
    key = {"prompt": "a cat", "max_sequence_length": 300}
    assert cache.get(key) is None
    cache.put(key, np.ones((1, 3, 2), np.float32), np.ones((1, 3), np.int32))
    features, mask = cache.get(key)
    assert features.shape == (1, 3, 2) and mask.dtype == np.int32
    next(tmp_path.rglob("*.npz")).write_bytes(b"PK garbage")
    assert cache.get(key) is None and (cache.hits, cache.misses) == (1, 2)
    assert EmbeddingCache(tmp_path, "other model").get(key) is None


def test_embedding_cache_keeps_apart_what_other_software_computed(tmp_path, monkeypatch):
    """Features another build of studio, MindSpore or numpy computed differ in their last bits: a cache kept
    across a `git pull` or an upgrade does not serve them (rerender gave different files on the same software)."""
    import numpy as np

    key = {"prompt": "a cat"}
    EmbeddingCache(tmp_path, "model").put(key, np.ones((1, 3, 2), np.float32), np.ones((1, 3), np.int32))
    assert EmbeddingCache(tmp_path, "model").get(key) is not None
    now = manifest.computing_software()
    for name in ("studio_build", "mindspore", "numpy", "compute"):
        monkeypatch.setattr(manifest, "computing_software", lambda: {**now, name: "other"})
        assert EmbeddingCache(tmp_path, "model").get(key) is None, name


def test_embedding_cache_survives_any_damage_numpy_raises_for(tmp_path):
    """A compression method zipfile doesn't know (one damaged header byte) raised NotImplementedError, which
    failed every item using the entry, on every run: never rewritten."""
    cache, key = EmbeddingCache(tmp_path, "model"), {"prompt": "a cat"}
    cache.put(key, np.ones((1, 3, 2), np.float32), np.ones((1, 3), np.int32))
    entry = next(tmp_path.rglob("*.npz"))
    data = bytearray(entry.read_bytes())
    for header in [m.start() for m in re.finditer(b"PK\x01\x02", data)]:  # central directory: method at +10
        data[header + 10:header + 12] = (99).to_bytes(2, "little")
    entry.write_bytes(bytes(data))
    assert key not in cache and cache.get(key) is None


def test_embedding_cache_on_a_full_disk_warns_once_and_leaves_nothing_to_collect(tmp_path, monkeypatch):
    """numpy's ZipFile, left open by a failed write, raised again when collected ('Exception ignored in
    ZipFile.__del__', twice per entry): the archive is made in memory, then written."""
    import gc

    class Full(io.BytesIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_disk(folder, name, write):
        write(Full())

    warned = []
    cache = EmbeddingCache(tmp_path, "model", warn=warned.append)
    monkeypatch.setattr(batch, "write_temp", full_disk)
    for prompt in ("a cat", "an owl"):
        cache.put({"prompt": prompt}, np.ones((1, 3, 2), np.float32), np.ones((1, 3), np.int32))
    gc.collect()  # an unraisable exception here fails the test (filterwarnings = error)
    assert cache.failed and warned == [f"cannot write T5 features to {tmp_path} (No space left on device); they are "
                                       f"encoded again next run"]


def test_embedding_cache_entries_that_are_not_features_are_misses(tmp_path):
    """An archive that opens and holds its key, but not one prompt's finite float features (1, L, C) with a
    (1, L) mask of 0s and 1s, is a miss: encoded again, and put in its place."""
    cache = EmbeddingCache(tmp_path, "model")
    key = {"prompt": "a cat", "max_sequence_length": 300}
    features, mask = np.ones((1, 3, 2), np.float32), np.ones((1, 3), np.int32)
    for bad in [(features[0], mask),  # (L, C): no row axis
                (np.ones((2, 3, 2), np.float32), np.ones((2, 3), np.int32)),  # two rows
                (features, np.ones((1, 4), np.int32)),  # a mask of another length
                (features.astype(np.int32), mask),  # not floats
                (np.full((1, 3, 2), np.nan, np.float32), mask),  # not finite
                (features * np.inf, mask),
                (features, 2 * mask)]:  # a mask not of 0s and 1s
        cache.put(key, *bad)
        assert cache.get(key) is None
    assert (cache.hits, cache.misses) == (0, 7)
    cache.put(key, features, mask)
    assert [a.shape for a in cache.get(key)] == [(1, 3, 2), (1, 3)] and (cache.hits, cache.misses) == (1, 7)


def test_a_cache_entry_of_another_shape_is_encoded_again_and_replaced(tiny_dir, tmp_path):
    """An entry that reads as features but not of its prompt's shape (here narrower than T5's width, which only
    the pipeline knows) fails no item: it is a miss, the item's files are those of a sound cache, and the
    entry is replaced."""
    job, cache = write_job(tmp_path, "layout: card.yaml\nitems: [{seed: 1}]\n"), tmp_path / "cache"
    run(job, tmp_path / "a", tiny_dir, cache_dir=cache)
    entry = max(cache.rglob("*.npz"), key=lambda p: np.load(p)["features"].shape[1])  # 'a cat' (the other: '')
    with np.load(entry) as data:
        sound = dict(data)
    with open(entry, "wb") as f:
        np.savez(f, **{**sound, "features": sound["features"][:, :, :3]})
    for out in ("b", "c"):  # and not only once
        summary, _ = run(job, tmp_path / out, tiny_dir, cache_dir=cache)
        assert summary.exit_code == 0 and summary.rendered == ["card-1"]
    a, b, c = (sidecars(tmp_path / out)["card-1"] for out in "abc")
    assert b["files"] == c["files"] == a["files"]
    assert b["embedding_cache"][str(tiny_dir)] == {"stored": True, "hits": 1, "misses": 1}  # '' hit, 'a cat' not
    assert c["embedding_cache"][str(tiny_dir)] == {"stored": True, "hits": 2, "misses": 0}
    with np.load(entry) as data:
        assert {k: data[k].tolist() for k in data} == {k: v.tolist() for k, v in sound.items()}


def test_cached_t5_features_are_kept_apart_by_how_they_were_computed(tmp_path, monkeypatch):
    """The fused CPU kernels (or another device) change T5 features' last bits, and then the images': a
    cache shared by machines that compute differently must not give one machine's features to another
    (rerender, which encodes afresh, would find the file DIFFERENT)."""
    import numpy as np

    from studio import kernels

    key = {"prompt": "a cat", "max_sequence_length": 300}
    monkeypatch.setattr(kernels, "library", lambda: None)  # a machine without a C++ compiler
    EmbeddingCache(tmp_path, "model").put(key, np.ones((1, 3, 2), np.float32), np.ones((1, 3), np.int32))
    assert key in EmbeddingCache(tmp_path, "model")
    monkeypatch.setattr(kernels, "library", lambda: Path("cpu_kernels-0123456789abcdef.so"))  # one with them
    assert key not in EmbeddingCache(tmp_path, "model")
    assert EmbeddingCache(tmp_path, "model").get(key) is None


def test_the_cache_sweep_removes_only_studios_old_temporary_files(tmp_path):
    from studio.batch import _sweep_cache

    cache, old = tmp_path / "cache", time.time() - STALE_PART - 60
    ours = [cache / ".file-hashes.json.0001a2k1.part", cache / "embeddings" / "ab" / ".ab12.npz.0001a2k1.part"]
    young = cache / "embeddings" / "ab" / ".ab34.npz.0001a2k2.part"  # another shard's, being written
    others = [cache / ".download.k1.part", cache / "app" / ".video.mp4.part"]  # --cache-dir ~/.cache: not ours
    for path in ours + others + [young]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        if path != young:
            os.utime(path, (old, old))
    _sweep_cache(cache)
    assert [p.exists() for p in ours + others + [young]] == [False, False, True, True, True]


# -- subprocesses: kills, signals, rerender --------------------------------------------------------------------

class Studio:
    """`python -m studio.cli ARGS` in a subprocess, its stdout and stderr in files; `pause` sets the test hook."""

    def __init__(self, args, logs: Path, pause: str = "", pause_seconds: float = 600):
        self.out, self.err = logs / "stdout.txt", logs / "stderr.txt"
        env = {**os.environ, "STUDIO_TEST_PAUSE_IN": pause, "STUDIO_TEST_PAUSE_SECONDS": str(pause_seconds)}
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "studio.cli", *map(str, args)], stdout=out,
                                         stderr=err, env=env)

    def wait_for(self, marker: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.err.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"no '{marker}': {self.err.read_text()}")
            time.sleep(0.05)

    def signal(self, signum) -> None:
        self.proc.send_signal(signum)

    def finish(self) -> tuple[int, str]:
        code = self.proc.wait(timeout=120)
        return code, self.out.read_text()


FOX_OWL_JOB = """\
layout: card.yaml
name: "{prompt_slug}-{seed}"
matrix:
  prompt: ["a red fox", "an owl"]
  seed: [1, 2]
"""  # items a-red-fox-1, a-red-fox-2, an-owl-1, an-owl-2


def test_sigkill_anywhere_leaves_only_complete_files_and_resumes(tiny_dir, tmp_path):
    job = write_job(tmp_path, FOX_OWL_JOB)
    out = tmp_path / "out"
    batch = ["batch", job, "-o", out, "--model", tiny_dir, "--quiet", "--memory-budget", "2GiB"]
    names = ["a-red-fox-1", "a-red-fox-2", "an-owl-1", "an-owl-2"]

    def killed_at(pause: str, finished: list[str]) -> None:
        run = Studio(batch, tmp_path, pause)
        run.wait_for("studio: test pause")
        run.signal(signal.SIGKILL)
        assert run.finish()[0] == -signal.SIGKILL
        found = sidecars(out)
        assert set(found) == set(finished)
        for record in found.values():  # every finished item's files are whole
            assert manifest.check(record, out, {}) is None

    killed_at("denoise:a-red-fox-2", names[:1])  # mid-denoise
    assert not (out / "a-red-fox-2.png").exists()
    killed_at("manifest:a-red-fox-2", names[:1])  # its outputs in place, its manifest not written yet
    first = (out / "a-red-fox-2.png").read_bytes()
    killed_at("write:a-red-fox-2.png", names[:1])  # rendering it again over that file: the old one stays whole
    assert (out / "a-red-fox-2.png").read_bytes() == first and list(out.glob(".a-red-fox-2.png.*.part"))
    killed_at("write:a-red-fox-2.manifest.json", names[:1])  # mid-write of the manifest
    assert list(out.glob(".a-red-fox-2.manifest.json.*.part")) and not (out / "a-red-fox-2.manifest.json").exists()
    # export's backup of a file it replaces, left by a kill between its link and the rename (no pause point)
    (out / ".an-owl-1.png.k3.part.old").write_bytes(first)

    summary, text = run(job, out, tiny_dir)  # resume (in this process: one fewer model load)
    assert summary.exit_code == 0 and "3 rendered, 1 already done, 0 failed" in text, text
    assert_complete(out, set(names))  # and the leftover temporary files are gone
    assert {r["name"] for r in manifest.read_lines(out / "manifest.jsonl")} == set(names)

    # the same file, bit for bit, from the manifest, in another process than the one that rendered it
    [(name, recorded, now, _)] = rerender(out / "a-red-fox-1.manifest.json")
    assert name == "a-red-fox-1.png" and recorded == now


def test_two_runs_of_one_job_into_one_outdir_render_each_item_once(tiny_dir, tmp_path):
    """A requeued job beside its first attempt: the first run, paused mid-denoise of its first item, holds that
    item's lock; the second skips it, naming the first's pid, and renders the others, which the first then
    finds done once it holds their locks. Each item is rendered once, with one log line; no lock file stays."""
    job = write_job(tmp_path, FOX_OWL_JOB)
    out, names = tmp_path / "out", ["a-red-fox-1", "a-red-fox-2", "an-owl-1", "an-owl-2"]
    batch = ["batch", job, "-o", out, "--model", tiny_dir, "--quiet", "--memory-budget", "2GiB"]
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = Studio(batch, tmp_path / "first", "denoise:a-red-fox-1", pause_seconds=25)
    first.wait_for("studio: test pause")
    second = Studio(batch, tmp_path / "second")
    (code, text), (first_code, first_text) = second.finish(), first.finish()
    assert (code, first_code) == (0, 0)
    assert f"[1/4] a-red-fox-1: being rendered by another studio run (pid {first.proc.pid}); skipped" in text
    assert "3 rendered, 0 already done, 0 failed, 1 left to another studio run in" in text
    assert "1 rendered, 3 already done, 0 failed in" in first_text
    assert sorted(re.findall(r"rendered (\S+) \(", text + first_text)) == names
    assert sorted(r["name"] for r in manifest.read_lines(out / "manifest.jsonl")) == names
    assert_complete(out, set(names))
    assert not list(out.glob(".*.lock"))


def test_an_item_lock_is_held_once_and_its_removal_is_race_free(tmp_path, monkeypatch):
    """One open file holds the lock; a killed holder's file (its pid in it) is taken over. A run that opened the
    file just before its holder removed it locks a removed file: it sees that and tries the new one."""
    (tmp_path / ".x.lock").write_text("4194999\n56\n")
    first, second, third = (batch._ItemLock(tmp_path, "x") for _ in range(3))
    assert first.take() is None and (tmp_path / ".x.lock").read_text() == f"{os.getpid()}\n"
    assert second.take() == f" (pid {os.getpid()})"
    first.release()
    assert not (tmp_path / ".x.lock").exists()

    assert first.take() is None
    flock, raced = export.fcntl.flock, []

    def release_then_another_takes(fd, operation):
        if not raced:  # second has opened the file: first removes it, third makes and locks a new one
            raced.append(fd)
            first.release()
            assert third.take() is None
        return flock(fd, operation)
    monkeypatch.setattr(export.fcntl, "flock", release_then_another_takes)
    assert second.take() == f" (pid {os.getpid()})" and raced
    third.release()
    assert not (tmp_path / ".x.lock").exists()


def test_a_link_or_fifo_at_an_items_lock_file_is_replaced_its_target_left_alone(tmp_path):
    """A lock file that is a symbolic link (to a file outside OUTDIR, or dangling) or a FIFO: the run's pid goes
    into a file of its own made in its place, never through the link."""
    out, victim = tmp_path / "out", tmp_path / "victim"
    out.mkdir()
    victim.write_text("precious\n")
    (out / ".a.lock").symlink_to("../victim")
    (out / ".b.lock").symlink_to("../made")
    os.mkfifo(out / ".c.lock")
    locks = [batch._ItemLock(out, stem) for stem in "abc"]
    assert [lock.take() for lock in locks] == [None, None, None]
    assert victim.read_text() == "precious\n" and not (tmp_path / "made").exists()
    for stem in "abc":
        path = out / f".{stem}.lock"
        assert not path.is_symlink() and path.is_file() and path.read_text() == f"{os.getpid()}\n"
    for lock in locks:
        lock.release()
    assert not list(out.iterdir())


def test_an_item_another_run_holds_keeps_its_temporaries(tiny_dir, tmp_path):
    """Another run renders the item from another host or PID namespace (a Kubernetes indexed Job, a Slurm array
    sharing OUTDIR): the pid in its temporaries' tags is none this machine has, but it holds the item's lock.
    Its temporaries, journal and backup stay and the item is left to it; once the lock is free they are a
    killed run's: they go, and the item is rendered."""
    job, out = write_job(tmp_path, "layout: card.yaml\n", FILL), tmp_path / "out"
    out.mkdir()
    theirs = [".card-1.png.ffffff00.part", ".card-1.png.ffffff01.part.old", ".card-1.manifest.json.ffffff02.part"]
    for name in theirs:
        (out / name).write_bytes(b"being written")
    journal = ".card-1.png.ffffff03.commit"  # its renames under way
    (out / journal).write_text(json.dumps({"overwrite": True, "moves": [[theirs[0], "card-1.png"]]}))
    other = batch._ItemLock(out, "card-1")
    assert other.take() is None
    summary, _ = run(job, out, tiny_dir)
    assert (summary.elsewhere, summary.rendered, summary.failed) == (["card-1"], [], [])
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".card")) == sorted(
        [*theirs, journal, ".card-1.lock"])
    other.release()
    assert run(job, out, tiny_dir)[0].rendered == ["card-1"]
    assert_complete(out, {"card-1"})


def test_a_signal_finishes_the_current_item_a_second_drops_it(tiny_dir, tmp_path, monkeypatch):
    import studio.batch
    import studio.export

    job, out = write_job(tmp_path, MATRIX_JOB), tmp_path / "out"
    handled, handle = threading.Event(), studio.batch._Signals._handle

    def noting(self, signum, frame):
        handled.set()
        return handle(self, signum, frame)
    monkeypatch.setattr(studio.batch._Signals, "_handle", noting)

    def signal_at(point, detail, signals):
        def pause(name, what=""):
            if (name, what) == (point, detail):
                for signum in signals:
                    handled.clear()
                    os.kill(os.getpid(), signum)
                    # files are written in threads: a second signal sent before the main thread has handled the
                    # first would merge with it (signals of one kind don't queue), as a loaded machine showed
                    assert handled.wait(30)
        return pause

    # one SIGINT mid-denoise: a-red-fox/2 is finished, then the batch stops. (While MindSpore computes, its
    # own handler turns SIGINT into SIGTERM: either means "stop after this item".)
    monkeypatch.setattr(studio.batch, "pause_point", signal_at("denoise", "a-red-fox/2", [signal.SIGINT]))
    summary, text = run(job, out, tiny_dir)
    assert summary.rendered == ["a-red-fox/1", "a-red-fox/2"] and summary.exit_code in (130, 143)
    assert "stopped by SIG" in text and "with 2 not rendered" in text
    assert_complete(out, {"a-red-fox/1", "a-red-fox/2"})

    # two SIGTERMs while an-owl/1.png is written: the item is dropped and its temporary file removed
    monkeypatch.setattr(studio.batch, "pause_point", lambda *a: None)
    monkeypatch.setattr(studio.export, "pause_point", signal_at("write", "1.png", [signal.SIGTERM] * 2))
    summary, text = run(job, out, tiny_dir)
    assert (summary.rendered, summary.dropped, summary.exit_code) == ([], "an-owl/1", 143)
    assert "(an-owl/1 dropped)" in text
    assert_complete(out, {"a-red-fox/1", "a-red-fox/2"})
    # no file of the item; its generated picture kept for the next run (render's .studio-art)
    assert [p.name for p in (out / "an-owl").iterdir()] == [".studio-art"]
    assert [p.suffix for p in (out / "an-owl" / ".studio-art").iterdir()] == [".png"]

    # one SIGINT while the finished items are checked (hashing every output: minutes for a large batch): there
    # is nothing to finish, so the run stops at once
    monkeypatch.setattr(studio.export, "pause_point", lambda *a: None)
    monkeypatch.setattr(studio.batch, "pause_point", signal_at("check", "a-red-fox/2", [signal.SIGINT]))
    summary, text = run(job, out, tiny_dir)
    assert (summary.skipped, summary.rendered, summary.exit_code) == (["a-red-fox/1"], [], 130)
    assert "stopped by SIGINT with 3 not rendered" in text and "to render" not in text
    assert_complete(out, {"a-red-fox/1", "a-red-fox/2"})

    # the rest, an-owl/1 from its kept picture: then nothing is kept
    monkeypatch.setattr(studio.batch, "pause_point", lambda *a: None)
    summary, text = run(job, out, tiny_dir)
    assert summary.rendered == ["an-owl/1", "an-owl/2"] and summary.exit_code == 0
    assert_complete(out, {"a-red-fox/1", "a-red-fox/2", "an-owl/1", "an-owl/2"})
    assert not list(out.rglob(".studio-art"))


def test_rerender_from_another_folder_and_a_different_file(tiny_dir, tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m").symlink_to(tiny_dir)
    monkeypatch.chdir(tmp_path / "models")
    job, out = write_job(tmp_path, "layout: card.yaml\nitems: [{seed: 5}]\n"), tmp_path / "out"
    run(job, out, "m")  # a model relative to the current folder
    sidecar = out / "card-1.manifest.json"
    assert json.loads(sidecar.read_text())["model_folders"] == {"m": str(tiny_dir.resolve())}
    monkeypatch.chdir(tmp_path)  # where 'm' names nothing
    [(name, recorded, now, _)] = rerender(sidecar, "again")
    assert name == "card-1.png" and recorded == now == manifest.sha256_file(tmp_path / "again" / "card-1.png")

    def made_elsewhere(record):  # another machine's bytes, with a valid digest
        record["files"][0]["sha256"] = "0" * 64
        record["digest"] = manifest.record_digest(record)
    edit(sidecar, made_elsewhere)
    [(_, recorded, now, how)] = rerender(sidecar)
    assert recorded == "0" * 64 != now
    assert how == f"pixels not compared: {out / 'card-1.png'} is not the file the manifest records"


def test_rerender_says_whether_the_pixels_differ_or_only_their_encoding(tmp_path, capsys):
    """A file that is not the recorded bytes is read back beside the one rendered again: the same pixels
    encoded otherwise (another zlib, other metadata) are told apart from other pixels, in a PDF too."""
    from PIL import Image

    job = write_job(tmp_path, "layout: card.yaml\n", FILL + "output: {formats: [png, pdf]}\n")
    out = tmp_path / "out"
    run(job, out, None)
    sidecar, png, pdf = out / "card-1.manifest.json", out / "card-1.png", out / "card-1.pdf"
    with Image.open(png) as image:
        fresh = np.array(image)

    def recorded_as_is(record):  # the files as they are now are the ones the manifest records
        for entry in record["files"]:
            entry["sha256"] = manifest.sha256_file(out / entry["path"])
        record["digest"] = manifest.record_digest(record)

    Image.fromarray(fresh).save(png, compress_level=1)  # the same pixels in other bytes
    edit(sidecar, recorded_as_is)
    compared = rerender(sidecar)
    assert [(name, how) for name, _, _, how in compared] == [
        ("card-1.png", "the same pixels; only their encoding differs (compression, metadata)"), ("card-1.pdf", "")]
    in_png = np.array(fresh)
    in_png[3, 5, 0] ^= 7
    in_png[30, 60, 2] ^= 1
    Image.fromarray(in_png).save(png)
    in_pdf = np.array(fresh)
    in_pdf[0, 0, 0] ^= 2
    with open(pdf, "wb") as f:
        export.write_pdf(Image.fromarray(in_pdf), f, dpi=72)
    edit(sidecar, recorded_as_is)
    assert main(["rerender", str(sidecar), "--quiet"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == ["2 of 2048 pixels differ, by at most 7",
                                                          "1 of 2048 pixels differ, by at most 2"]
    assert all(line.startswith("DIFFERENT  card-1.") for line in lines)


def test_the_files_name_the_layout_without_its_folder(tmp_path):
    """Files go to print shops: the layout by its name, as `studio render` writes it, not the job's path to it
    (/home/alice/clients/acme/poster.yaml); the manifest, which stays with the outputs, has the path."""
    from PIL import Image

    write_job(tmp_path, "", FILL)
    job = tmp_path / "jobs" / "job.yaml"
    job.parent.mkdir()
    job.write_text(f"layout: {tmp_path / 'card.yaml'}\n")
    out = tmp_path / "out"
    assert run(job, out, "m")[0].rendered == ["card-1"]
    with Image.open(out / "card-1.png") as image:
        assert image.text["layout"] == "card.yaml" and str(tmp_path) not in json.dumps(image.text)
    assert json.loads((out / "card-1.manifest.json").read_text())["layout"]["path"] == str(tmp_path / "card.yaml")
    [(_, recorded, now, _)] = rerender(out / "card-1.manifest.json")
    assert recorded == now


def test_rerender_of_a_layout_given_through_a_link_reads_its_inputs_where_the_batch_did(tmp_path):
    """current.yaml -> versions/v2.yaml: the batch reads the layout's images beside the link; so does rerender
    (the target's folder was read: 'input changed')."""
    import numpy as np
    from PIL import Image

    (tmp_path / "versions").mkdir()
    (tmp_path / "versions" / "v2.yaml").write_text("canvas: {width: 32, height: 16}\nlayers:\n"
                                                   "  - image: {path: logo.png}\n")
    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(tmp_path / "versions" / "logo.png")
    Image.fromarray(np.full((4, 4, 3), 30, np.uint8)).save(tmp_path / "logo.png")  # the one beside the link
    (tmp_path / "current.yaml").symlink_to(tmp_path / "versions" / "v2.yaml")
    job, out = write_job(tmp_path, "layout: current.yaml\n"), tmp_path / "out"
    assert run(job, out, "m")[0].rendered == ["current-1"]
    [(name, recorded, now, _)] = rerender(out / "current-1.manifest.json")
    assert name == "current-1.png" and recorded == now


def test_a_project_moved_whole_is_done_already(tmp_path):
    """The manifest names an image (and a font file) in the layout's folder relative to it: the project renamed,
    or a share mounted at another path, skips its finished items (named by their absolute paths, every one that
    read an image was 'inputs changed')."""
    import numpy as np
    from PIL import Image, ImageFont

    project = tmp_path / "project"
    project.mkdir()
    (project / "label.ttf").write_bytes(ImageFont.load_default(10).path.getvalue())  # Pillow's bundled face
    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(project / "logo.png")
    job = write_job(project, "layout: card.yaml\nitems: [{}]\n", "canvas: {width: 32, height: 16}\nlayers:\n"
                    "  - image: {path: logo.png}\n  - text: {text: Hi, font: label.ttf}\n")
    assert run(job, project / "out", "m")[0].rendered == ["card-1"]
    record = json.loads((project / "out" / "card-1.manifest.json").read_text())
    assert sorted(record["inputs"]) == ["font:label.ttf", "image:logo.png"]
    moved = project.rename(tmp_path / "moved")
    summary, _ = run(moved / "job.yaml", moved / "out", "m")
    assert (summary.rendered, summary.skipped) == ([], ["card-1"])


def test_two_input_files_outside_the_layouts_folder_swapped_are_changed_inputs(tmp_path):
    """Images outside the layout's folder are named by their absolute paths, as every input was before
    2026-11-28; two of them swapped were the same inputs (such names compared by their hashes alone): the item
    was done, and a rerender drew other pixels and said DIFFERENT."""
    from PIL import Image

    assets, project, out = tmp_path / "assets", tmp_path / "project", tmp_path / "out"
    assets.mkdir()
    project.mkdir()
    Image.new("RGB", (4, 4), (255, 0, 0)).save(assets / "a.png")
    Image.new("RGB", (4, 4), (0, 0, 255)).save(assets / "b.png")
    layout = (f"canvas: {{width: 32, height: 16}}\nlayers:\n"
              f"  - image: {{path: {assets / 'a.png'}, region: {{x: 0%, y: 0%, w: 50%, h: 100%}}}}\n"
              f"  - image: {{path: {assets / 'b.png'}, region: {{x: 50%, y: 0%, w: 50%, h: 100%}}}}\n")
    job = write_job(project, "layout: card.yaml\nitems: [{}]\n", layout)
    assert run(job, out, "m")[0].rendered == ["card-1"]
    (assets / "a.png").rename(assets / "t.png")
    (assets / "b.png").rename(assets / "a.png")
    (assets / "t.png").rename(assets / "b.png")
    with pytest.raises(InputError, match=f"input image:{re.escape(str((assets / 'a.png').resolve()))} changed "):
        rerender(out / "card-1.manifest.json")
    summary, text = run(job, out, "m")
    assert summary.rendered == ["card-1"] and "card-1: rendering again (inputs changed)" in text


def test_two_models_folders_swapped_are_changed_models(tiny_dir, other_tiny, tmp_path, monkeypatch):
    """A layout whose layers use two models: their folders swapped, each layer's model has the other's files.
    Compared as a sorted list of the models' files they were the same, and the item was done. The spelling of
    a model still does not count: the job's model given as 'mB' or './mB' is one."""
    shutil.copytree(tiny_dir, tmp_path / "mA")
    shutil.copytree(other_tiny, tmp_path / "mB")
    monkeypatch.chdir(tmp_path)
    half = "{y: 0%, w: 50%, h: 100%, x: "
    layout = ("canvas: {width: 64, height: 64}\nlayers:\n"
              f"  - generate: {{prompt: a fox, seed: 1, steps: 1, model: ./mA, region: {half}0%}}}}\n"
              f"  - generate: {{prompt: a fox, seed: 1, steps: 1, region: {half}50%}}}}\n")
    job, out = write_job(tmp_path, "layout: card.yaml\nitems: [{}]\n", layout), tmp_path / "out"
    assert run(job, out, "mB")[0].rendered == ["card-1"]
    assert run(job, out, "./mB")[0].skipped == ["card-1"]
    (tmp_path / "mA").rename(tmp_path / "t")
    (tmp_path / "mB").rename(tmp_path / "mA")
    (tmp_path / "t").rename(tmp_path / "mB")
    summary, text = run(job, out, "mB")
    assert summary.rendered == ["card-1"] and "card-1: rendering again (models changed)" in text


def test_rerender_takes_a_layouts_hub_id_from_the_hub_whatever_the_working_folder_holds(tiny_dir, other_tiny,
                                                                                         tmp_path, monkeypatch):
    """The manifest records the layout's `model: someone/tiny-pixart` as text; rerendered from a folder holding
    another model of that name, it is still the hub's (the folder's was hashed and refused as changed)."""
    from tests.test_checkpoint import _hub_cache

    _hub_cache(tiny_dir, tmp_path / "hub", ["a" * 40], {"main": "a" * 40})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    job = write_job(tmp_path, "layout: card.yaml\nitems: [{seed: 5}]\n", LAYOUT.replace("layers:", "model: "
                    "someone/tiny-pixart\nlayers:", 1))
    run(job, tmp_path / "out", None)
    shutil.copytree(other_tiny, tmp_path / "work" / "someone" / "tiny-pixart")  # another model, same name
    [(name, recorded, now, _)] = rerender(tmp_path / "out" / "card-1.manifest.json", tmp_path / "again")
    assert name == "card-1.png" and recorded == now


def test_rerender_checks_its_output_folder_before_reading_the_model_and_notes_a_tiny_one(tiny_dir, tmp_path,
                                                                                         monkeypatch, capsys):
    """-o that is a file, or holds the files already (without --overwrite), fails before the model's files are
    hashed or loaded; a rerender with the tiny checkpoint says that its output is noise, as render does."""
    from studio.tiny import NOISE_NOTICE

    job, out = write_job(tmp_path, "layout: card.yaml\nitems: [{seed: 5}]\n"), tmp_path / "out"
    run(job, out, str(tiny_dir))
    sidecar, afile, again = out / "card-1.manifest.json", tmp_path / "afile.txt", tmp_path / "again"
    afile.write_text("")
    again.mkdir()
    (again / "card-1.png").write_bytes(b"mine")
    with monkeypatch.context() as m:
        m.setattr(manifest, "model_record", lambda *args: pytest.fail("the model was read"))
        assert errors_of(["rerender", sidecar, "-o", afile], capsys) == [
            f"studio: error: output folder {afile}: is a file, not a folder"]
        assert errors_of(["rerender", sidecar, "-o", again], capsys) == [
            f"studio: error: {again / 'card-1.png'}: file exists (pass --overwrite, or overwrite=True, to replace it)"]
    assert (again / "card-1.png").read_bytes() == b"mine"
    assert main(["rerender", str(sidecar), "-o", str(again), "--overwrite", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == f"note: {tiny_dir}: {NOISE_NOTICE}\n"
    assert captured.out.startswith("identical  card-1.png  ")
    assert main(["rerender", str(sidecar)]) == 0  # progress, as render shows it: minutes at 4K
    err = capsys.readouterr().err
    assert re.search(rf"^{re.escape(str(tiny_dir))}: loading model: (\S+ \S+)/\1 \(100%, ", err, re.M)
    assert "layer 0 (1/1) direct 128x128: denoising: 1/1 (100%, " in err and "writing files: 1/1 (100%, " in err


def test_progress_in_a_log_is_plain_lines(tiny_dir, tmp_path):
    """stderr that is not a terminal (a batch's log) gets progress as lines, without a terminal's escape sequences
    (tqdm moves the cursor up to redraw an item's bars below the batch's)."""
    job, out = write_job(tmp_path, "layout: card.yaml\nitems: [{seed: 1}, {seed: 2}]\n"), tmp_path / "out"
    err = io.StringIO()
    summary = run_batch(load_job(job, str(tiny_dir)), out, memory_budget="2GiB", out=io.StringIO(), err=err)
    assert summary.rendered == ["card-1", "card-2"]
    log = err.getvalue()
    assert "\x1b" not in log and "\r" not in log
    assert "card-2: layer 0 (1/1) direct 128x128: denoising: 1/1 (100%, " in log and "\nbatch: 2/2 (100%, " in log
    assert log.index("batch: 0/2 (0%, 0.0 s)\n") < log.index("card-1: ")  # its first line as the batch starts


def test_a_first_signal_is_said_within_a_step_above_the_bars(tiny_dir, tmp_path, monkeypatch):
    """The signal handler does not print (it could split a bar being drawn): a thread it starts, or the next
    progress report, says it, in a log (a line among the bar's) and on a terminal (the bars cleared, the line
    printed, the bars drawn again below it), as the tiny checkpoint's note."""
    job = write_job(tmp_path, "layout: card.yaml\nitems: [{seed: 1}, {seed: 2}]\n",
                    LAYOUT.replace("steps: 1", "steps: 3"))
    said = r"studio: batch: SIG(?:INT|TERM): stopping after the current item \(again to drop it now\)\n"

    def signal_at(name, what=""):
        if (name, what) == ("denoise", "card-1"):  # its first step
            signal.raise_signal(signal.SIGINT)  # to this thread: handled before the next call
    monkeypatch.setattr(batch, "pause_point", signal_at)
    monkeypatch.delenv("COLUMNS", raising=False)  # bars as wide as their text: none is shortened

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    for err in io.StringIO(), Terminal():
        out = io.StringIO() if err.isatty() else err
        summary = run_batch(load_job(job, str(tiny_dir)), tmp_path / f"out-{err.isatty()}", memory_budget="2GiB",
                            out=out, err=err)
        assert summary.rendered == ["card-1"] and summary.exit_code == 130
        text = err.getvalue()
        assert len(re.findall(said, text)) == 1
        if not err.isatty():
            denoising = "card-1: layer 0 (1/1) direct 128x128: denoising: "
            assert text.index(f"{denoising}0/3 (0%, ") < re.search(said, text).start() < text.index(
                f"{denoising}3/3 (100%, ") < text.index("[1/2] rendered card-1")
        else:
            redrawn = r"\r(?:batch|card-1: layer 0 \(1/1\) direct 128x128: denoising)"  # in tqdm's order
            assert re.search(rf"\r +\r(?:\x1b\[A)?{said}{redrawn}", text)
            note = rf"note: {re.escape(str(tiny_dir))}: tiny random checkpoint: [^\n]*\n"
            assert re.search(rf"\r +\r{note}\rbatch: ", text)


def test_a_first_signal_is_said_at_once_in_a_phase_that_reports_nothing():
    """Encoding ahead, an untiled decode, writing an A0 file: no progress report for minutes; the line comes at
    once all the same (else a second Ctrl-C, the user's next move, drops the item)."""
    err = io.StringIO()
    with batch._Signals(err) as signals:
        signal.raise_signal(signal.SIGINT)  # handled before the next line; nothing else calls acknowledge
        deadline = time.monotonic() + 10
        while not err.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert err.getvalue() == "studio: batch: SIGINT: stopping after the current item (again to drop it now)\n"
        signals.acknowledge()  # the loop's call: said once
    assert err.getvalue().count("stopping") == 1 and signals.received == signal.SIGINT


def test_a_bar_in_a_log_says_its_first_line_when_it_opens():
    """As a terminal's bar shows 0/total when it opens, a log's gets its first line then, not at its first
    update, which may come after a long phase (the batch's bar counts finished items)."""
    from studio.progress import progress_bar

    log = io.StringIO()
    bar = progress_bar(3, "batch", "item", log)
    assert log.getvalue() == "batch: 0/3 (0%, 0.0 s)\n"
    bar.update(0)
    assert log.getvalue() == "batch: 0/3 (0%, 0.0 s)\n"
    bar.update(3)
    assert log.getvalue().startswith("batch: 0/3 (0%, 0.0 s)\nbatch: 3/3 (100%, ")
    empty = io.StringIO()
    progress_bar(0, "batch", "item", empty).update(0)
    assert empty.getvalue() == "batch: 0/0 (100%, 0.0 s)\n"


def test_rerender_names_the_software_that_changed(tiny_dir, tmp_path):
    """The manifest records how the process computed (device, fused kernels); a rerender under other software
    warns which part changed, since the bytes may then differ."""
    import transformers

    job, out = write_job(tmp_path, "layout: card.yaml\nitems: [{seed: 5}]\n"), tmp_path / "out"
    run(job, out, str(tiny_dir))
    sidecar = out / "card-1.manifest.json"
    recorded = json.loads(sidecar.read_text())["software"]
    assert recorded["compute"] == manifest.compute_identity() and recorded["compute"].startswith("CPU")
    assert manifest.software_changes(recorded, manifest.software()) == []

    def other_machine(record):  # and an older studio, which did not record its build
        record["software"].update(compute="GPU", numpy="1.0.0", transformers="4.57.0", platform="Linux-other",
                                  pillow_libraries="raqm 0.11.0, fribidi none")  # a host without libfribidi
        record["software"].pop("studio_build")
        record["digest"] = manifest.record_digest(record)
    edit(sidecar, other_machine)
    with pytest.warns(UserWarning) as warned:
        [(_, before, now, _)] = rerender(sidecar)
    assert before == now  # the same bytes here: only a warning
    assert str(warned[0].message) == (
        f"{sidecar}: rendered with other software or hardware (studio_build: unknown -> "
        f"{manifest.studio_build()[:12]}; numpy: 1.0.0 -> {np.__version__}; pillow_libraries: raqm 0.11.0, "
        f"fribidi none -> {manifest.pillow_libraries()}; transformers: 4.57.0 -> "
        f"{transformers.__version__}; compute: GPU -> "
        f"{manifest.compute_identity()}): the files may differ in their last bits")


def test_the_studio_build_is_named_by_a_hash_of_its_source(tmp_path):
    """Every commit of studio has version 0.1.0: the manifest tells builds apart by a hash of the package's
    source (its modules and the fused kernels' C++), which a rerender compares like the versions."""
    build = manifest.studio_build()
    assert len(build) == 64 and set(build) <= set("0123456789abcdef") and manifest.studio_build() is build
    now = manifest.software()
    assert now["studio_build"] == build and manifest.software_changes(dict(now), now) == []
    assert manifest.software_changes({**now, "studio_build": "0123456789abcdef"}, now) == [
        f"studio_build: 0123456789ab -> {build[:12]}"]
    assert manifest.software_changes({k: v for k, v in now.items() if k != "studio_build"}, now) == [
        f"studio_build: unknown -> {build[:12]}"]  # a manifest from before builds were recorded

    root = tmp_path / "studio"
    (root / "kernels" / "__pycache__").mkdir(parents=True)
    (root / "a.py").write_text("x = 1\n")
    (root / "kernels" / "k.cc").write_text("int x;\n")
    hashes = [manifest.source_hash(root)]
    (root / "kernels" / "__pycache__" / "a.cpython-312.pyc").write_bytes(b"compiled")  # not source
    (root / "notes.txt").write_text("not source")
    assert manifest.source_hash(root) == hashes[0]
    for change in [lambda: (root / "a.py").write_text("x = 2\n"), lambda: (root / "kernels" / "k.cc").write_text(""),
                   lambda: (root / "a.py").rename(root / "b.py"), lambda: (root / "kernels" / "c.py").write_text("")]:
        change()
        hashes.append(manifest.source_hash(root))
    assert len(set(hashes)) == len(hashes)


def test_rerender_names_a_relative_manifest_where_it_is_not_in_the_batchs_folder(tiny_dir, tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")  # the batch's working folder, where rerender runs
    job = write_job(tmp_path, "layout: card.yaml\n", FILL)
    run(job, tmp_path / "out", str(tiny_dir))

    def other_machine(record):
        record["software"]["numpy"] = "1.0.0"
        record["digest"] = manifest.record_digest(record)
    edit(tmp_path / "out" / "card-1.manifest.json", other_machine)
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning) as warned:
        rerender("out/card-1.manifest.json")
    assert str(warned[0].message).startswith(f"{tmp_path / 'out' / 'card-1.manifest.json'}: rendered with other ")


def test_cli_reports_an_allocation_failure_in_one_line(monkeypatch, capsys):
    """MindSpore's allocation failure (a RuntimeError with a C++ trace) becomes one line; other errors propagate."""
    from studio import cli

    def fail(message):
        def command(args):
            raise RuntimeError(message)
        return command
    monkeypatch.setitem(cli.COMMANDS, "generate", fail("Allocate memory failed\n- C++ Call Stack:\nMallocForOutputs"))
    assert cli.main(["generate", "a cat", "-o", "x.png"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "studio: error: out of memory: MindSpore could not allocate a tensor; set a smaller --memory-budget "
        "(see --dry-run for the plan)"]
    monkeypatch.setitem(cli.COMMANDS, "generate", fail("some bug"))
    with pytest.raises(RuntimeError, match="some bug"):
        cli.main(["generate", "a cat", "-o", "x.png"])


def test_an_unexpected_error_fails_its_item_with_its_traceback_for_the_bug_report():
    from studio.batch import _failure
    from studio.errors import PlanError

    err = io.StringIO()
    try:
        {}["budget"]
    except KeyError as e:
        assert _failure(e, err) == "KeyError: 'budget'"
    assert err.getvalue().startswith("Traceback (most recent call last):") and "KeyError: 'budget'" in err.getvalue()
    err = io.StringIO()
    assert _failure(PlanError("too small"), err) == "too small"
    assert _failure(RuntimeError("... Allocate memory failed, size: 3GB ..."), err) == (
        "out of memory: MindSpore could not allocate a tensor; set a smaller memory budget")
    assert err.getvalue() == ""


def test_list_shows_the_problems_items_would_fail_with(tmp_path, capsys):
    job = write_job(tmp_path, "layout: card.yaml\nmatrix: {promt: [a fox]}\n")  # a typo'd variable
    assert main(["batch", str(job), "--list", "--model", "m"]) == 1  # a pre-flight check fails
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == '1\tcard-1\tcard.yaml\t{"promt": "a fox"}'
    assert lines[1].startswith(f"\tproblem (item at {job}:2): ") and "variables.promt: given a value" in lines[1]
    assert "(did you mean 'prompt'?)" in lines[1]


def test_a_transformer_only_models_manifest_names_its_base(tiny_dir, tmp_path, monkeypatch):
    """A transformer-only model is completed with a base pipeline: the manifest says which, so a rerender
    that can't find it says what the batch used; with it, the rerender is identical."""
    only, base = tmp_path / "only", tmp_path / "base"
    shutil.copytree(tiny_dir / "transformer", only / "transformer")
    shutil.copytree(tiny_dir, base, ignore=shutil.ignore_patterns("transformer"))
    monkeypatch.setenv("STUDIO_BASE_PIPELINE", str(base))
    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path / "cache"))
    job, out = write_job(tmp_path, "layout: card.yaml\nitems: [{seed: 5}]\n"), tmp_path / "out"
    with pytest.warns(UserWarning, match="holds a transformer only"):
        summary, _ = run(job, out, str(only))
    assert summary.rendered == ["card-1"]
    sidecar = out / "card-1.manifest.json"
    [used] = json.loads(sidecar.read_text())["model_folders"].values()
    assert used.endswith(f", with the base pipeline {base} ($STUDIO_BASE_PIPELINE)")
    [(_, before, now, _)] = rerender(sidecar)
    assert before == now
    monkeypatch.setenv("STUDIO_BASE_PIPELINE", str(tmp_path / "gone"))
    with pytest.raises(InputError, match=re.escape(f"(the batch read {used}, from ")):
        rerender(sidecar)
