"""The `studio` command line: generate, plan, proof, render, batch, rerender, make-tiny.

User mistakes (bad sizes, missing folders, broken checkpoints, existing outputs) print one line and exit
with status 2; no tracebacks.
"""

import argparse
import importlib
import math
import os
import re
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

from studio.errors import (CheckpointError, InputError, StudioError, control_problem, headline, interrupt_in,
                           one_line, out_of_memory, signals_held)
from studio.hub import split_revision
from studio.layout import MAX_PIXELS, MAX_SEED, MAX_SIDE, SAMPLERS
from studio.progress import PhaseBars, warnings_above_bars
from studio.spec import user_path

PUBLISHED_MODEL = "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"
VAE_TILING = {"auto": None, "on": True, "off": False}
DEVICE_HELP = ("CPU, GPU or Ascend, with :N for the device number, e.g. GPU:1 (default: $STUDIO_DEVICE, else "
               "MindSpore's default)")
BUDGET_HELP = "bound on memory for weights and activations, e.g. 6GiB (default: free memory minus 1 GiB)"


def env_model() -> str | None:
    """$STUDIO_MODEL, the default --model; None when unset or empty (a blank one is refused: `check_names`)."""
    return os.environ.get("STUDIO_MODEL") or None


def default_model() -> str:
    """The model of a command given no --model: $STUDIO_MODEL, else the published 1024 px checkpoint."""
    return env_model() or PUBLISHED_MODEL


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' (px) -> (width, height), within a layout canvas's limits."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not m or int(m[1]) < 1 or int(m[2]) < 1:
        raise argparse.ArgumentTypeError(f"size '{text}' is not WIDTHxHEIGHT in pixels, e.g. 1024x1024")
    width, height = int(m[1]), int(m[2])
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise argparse.ArgumentTypeError(f"size '{text}' is too large (at most {MAX_SIDE} px a side and "
                                         f"{MAX_PIXELS} pixels)")
    return width, height


def parse_guidance(text: str) -> float:
    """A finite guidance scale >= 0 (1 or less: no classifier-free guidance)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"guidance '{text}' is not a number >= 0, e.g. 4.5")
    return value


def parse_seed(text: str) -> int:
    """A seed in 0..2^32-1, the range a layout's seed takes."""
    if not re.fullmatch(r"\s*\d+\s*", text) or int(text) > MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed '{text}' is not a whole number in 0..{MAX_SEED}")
    return int(text)


def not_empty(what: str, kind=Path):
    """An argparse type: `kind(text)`, but an empty or blank value (what an unset shell variable gives, `-o "$OUT"`,
    `--model "$A $B"`) is refused, saying `what` to give; Path('') would be the working folder."""
    def parse(text: str):
        if not text.strip():
            raise argparse.ArgumentTypeError(f"{'blank' if text else 'empty'}; give {what}")
        return kind(text)
    return parse


IMAGE_FILE = not_empty("an image file name (.png, .jpg, .tif, .webp)")
OUTPUT_FOLDER = not_empty("an output folder")
MODEL = not_empty("a pipeline folder or a hub id owner/name (or leave --model out for the default)", str)
BUDGET = not_empty("a memory budget, e.g. 6GiB (or leave --memory-budget out for the default)", str)
DEVICE = not_empty("a device, e.g. CPU or GPU:1 (or leave --device out for the default)", str)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error for a bad command line (no usage dump): the command's subparsers are
    of this class too."""

    def error(self, message):
        option = re.fullmatch(r"argument (?:\S+/)?(--\S+): expected one argument", message)
        if option:  # or its value starts with '-', which argparse reads as an option
            message += f" (a value that starts with '-' takes '=': {option[1]}=-value)"
        elif "arguments are required: prompt" in message:
            message += " (a prompt that starts with '-' goes last, after '--': -o x.png -- \"-cat\")"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _print_message(self, message, file=None):
        """As argparse's, which ignores any failed write, but --help or --version to a stdout that can't take it (a
        full disk) is an error, `_Output`'s naming it, as a command's; a reader gone (`studio --help | head`) is
        not."""
        if message:
            try:
                (file or sys.stderr).write(message)
            except BrokenPipeError:
                pass

    def parse_known_args(self, args=None, namespace=None):
        """As argparse's, but an unknown argument is an error of the command it follows (its --help named),
        not only of the top-level parser."""
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="studio", description="Posters and wallpapers with PixArt-Sigma.")
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate one image from a prompt")
    gen.add_argument("prompt", help="what to generate (T5 reads up to 300 tokens)")
    gen.add_argument("-o", "--output", required=True, type=IMAGE_FILE, help="image file (.png, .jpg, .tif, .webp)")
    gen.add_argument("--model", type=MODEL, default=None,
                     help=f"pipeline folder or Hugging Face hub id (default: $STUDIO_MODEL or {PUBLISHED_MODEL})")
    gen.add_argument("--size", type=parse_size, default=(None, None),
                     help="WIDTHxHEIGHT in px (default: the checkpoint's native size, 1024x1024 for the 1024 model)")
    gen.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    gen.add_argument("--guidance", type=parse_guidance, default=4.5,
                     help="classifier-free guidance scale (default 4.5; 1 or less: none)")
    gen.add_argument("--seed", type=parse_seed, default=None, help=f"0..{MAX_SEED} (default: random, printed)")
    gen.add_argument("--negative", default="", help="negative prompt")
    gen.add_argument("--sampler", choices=SAMPLERS, default=None, help="default: the model's scheduler_config.json")
    gen.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                     help="weight and compute type (default float32)")
    gen.add_argument("--variant", type=not_empty("a weight-file variant, e.g. fp16 (or leave --variant out for "
                                                 "*.safetensors)", str), default=None,
                     help="weight-file variant, e.g. fp16 for *.fp16.safetensors")
    gen.add_argument("--revision", type=not_empty("a branch, tag or commit hash (or leave --revision out for main)",
                                                  str), default=None,
                     help="hub ids: a branch, tag or commit hash of the repository (default main)")
    gen.add_argument("--no-binning", action="store_true", help="generate at the exact size (multiple of 16 px)")
    gen.add_argument("--memory-budget", type=BUDGET, default=None, help=BUDGET_HELP)
    gen.add_argument("--device", type=DEVICE, default=None, help=DEVICE_HELP)
    gen.add_argument("--vae-tiling", choices=tuple(VAE_TILING), default="auto",
                     help="decode in tiles: auto (the default: when the untiled decode would exceed the budget or "
                          "make a feature map above 4 GiB), on, off")
    gen.add_argument("--dry-run", action="store_true", help="print the memory plan and exit; loads no weights")
    gen.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    gen.add_argument("--quiet", action="store_true", help="no progress bars")

    def layout_command(name: str, help_text: str):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("layout", type=not_empty("a layout file (YAML)"),
                         help="layout file (YAML), see layouts/README.md")
        cmd.add_argument("--set", dest="variables", action="append", default=[], metavar="NAME=VALUE",
                         help="fill a {variable} of the layout (repeatable)")
        return cmd

    plan = layout_command("plan", "print what rendering a layout will do, without loading a model")
    plan.add_argument("--model", type=MODEL, default=None,
                      help=f"model for layers that name none (its config is read; default: $STUDIO_MODEL or "
                           f"{PUBLISHED_MODEL})")
    plan.add_argument("--memory-budget", type=BUDGET, default=None, help=BUDGET_HELP)
    plan.add_argument("--device", type=DEVICE, default=None,
                      help=DEVICE_HELP + "; its free memory is the automatic budget")
    plan.add_argument("--json", action="store_true", help="machine-readable plan")

    proof = layout_command("proof", "draw the layout with labelled placeholders instead of generated art")
    proof.add_argument("-o", "--output", required=True, type=IMAGE_FILE, help="image file (.png, .jpg, .tif, .webp)")
    proof.add_argument("--model", type=MODEL, default=None,
                       help="model whose generation sizes label the placeholders (its config is read; default: as "
                            "render)")
    proof.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    proof.add_argument("--no-guides", action="store_true", help="without the bleed, trim, safe-area and bezel "
                                                                "guides")

    render = layout_command("render", "plan, generate, compose and export a layout")
    render.add_argument("-o", "--output", required=True, type=OUTPUT_FOLDER, help="output folder (created)")
    render.add_argument("--model", type=MODEL, default=None,
                        help=f"model for layers that name none (default: $STUDIO_MODEL or {PUBLISHED_MODEL})")
    render.add_argument("--memory-budget", type=BUDGET, default=None, help=BUDGET_HELP + "; overrides the layout's")
    render.add_argument("--device", type=DEVICE, default=None, help=DEVICE_HELP)
    render.add_argument("--overwrite", action="store_true", help="replace the output files if they exist")
    render.add_argument("--quiet", action="store_true", help="no progress bars")

    # -- batch (studio.batch) --
    batch = sub.add_parser("batch", help="render every item of a job file into a folder: resumable, shardable")
    batch.add_argument("job", type=not_empty("a job file (YAML or CSV)"),
                       help="job file (YAML or CSV), see layouts/README.md, 'Batch jobs'")
    batch.add_argument("-o", "--output", type=OUTPUT_FOLDER, help="output folder (created); required unless --list")
    batch.add_argument("--model", type=MODEL, default=None,
                       help=f"model for layouts that name none (default: the job's, else $STUDIO_MODEL or "
                            f"{PUBLISHED_MODEL})")
    batch.add_argument("--shard", default="0/1", type=parse_shard, metavar="I/N",
                       help="render items I, I+N, I+2N, ... (0 <= I < N; default 0/1, all), e.g. "
                            "$SLURM_ARRAY_TASK_ID/8")
    batch.add_argument("--memory-budget", type=BUDGET, default=None, help="overrides the job's and the layouts'")
    batch.add_argument("--device", type=DEVICE, default=None, help=DEVICE_HELP)
    batch.add_argument("--cache-dir", type=not_empty("a cache folder (or leave --cache-dir out for OUTDIR/.cache)"),
                       default=None,
                       help="T5 feature cache and the hashes of weights and outputs (default OUTDIR/.cache)")
    batch.add_argument("--no-cache", action="store_true",
                       help="encode every prompt, store no T5 features, and read every output a rerun checks (not "
                            "only those changed since hashed)")
    batch.add_argument("--list", action="store_true",
                       help="print the items (of this shard) and exit: 1 when any would fail (a problem shown)")
    batch.add_argument("--quiet", action="store_true", help="no progress bars: one line per item, for logs")

    rerender = sub.add_parser("rerender", help="render a batch item again from its manifest; compare the bytes")
    rerender.add_argument("manifest", type=not_empty("a batch item's <name>.manifest.json"),
                          help="an item's <name>.manifest.json")
    rerender.add_argument("-o", "--output", type=OUTPUT_FOLDER, default=None,
                          help="folder for the files (default: a temporary one, only compared)")
    rerender.add_argument("--overwrite", action="store_true", help="replace the files in the -o folder if they exist")
    rerender.add_argument("--device", type=DEVICE, default=None, help=DEVICE_HELP)
    rerender.add_argument("--quiet", action="store_true", help="no progress bars")

    tiny = sub.add_parser("make-tiny", help="write a tiny random PixArt-Sigma pipeline (its output is noise)")
    tiny.add_argument("folder", type=not_empty("a folder to write the pipeline into"),
                      help="folder to write the pipeline into (created)")
    tiny.add_argument("--sample-size", type=int, default=128, choices=(32, 64, 128, 256),
                      help="latent size of the native bin (default 128, which behaves like the 1024 px checkpoint)")
    tiny.add_argument("--seed", type=parse_seed, default=0, help=f"0..{MAX_SEED}, for the random weights (default 0)")
    tiny.add_argument("--overwrite", action="store_true",
                      help="replace the folder if it holds a pipeline (model_index.json)")
    return parser


def version_line() -> str:
    """'studio X (mindspore Y, numpy Z)', read from the installed packages' metadata (nothing imported)."""
    from importlib import metadata

    from studio import __version__

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"
    return f"studio {__version__} (mindspore {installed('mindspore')}, numpy {installed('numpy')})"


def check_steps(model: str, revision: str | None, steps: int, sampler: str | None) -> None:
    """--steps against the model's scheduler config, as `studio plan` checks a layer's (`plan.check_schedule`),
    without reading any weight; a scheduler studio can't run without --sampler fails here too."""
    from studio.errors import ConfigError
    from studio.pipeline import UnrunnableScheduler
    from studio.plan import check_schedule, model_sampler
    from studio.sampling import SamplerConfig, StepsError
    from studio.spec import GenerateLayer

    config = model_sampler(model, revision)
    if config is None:  # a published checkpoint not on this machine: its published config, SamplerConfig's defaults
        config = SamplerConfig()
    if isinstance(config, UnrunnableScheduler) and sampler is None:
        raise ConfigError(config.problem)
    try:
        check_schedule(config, GenerateLayer("", steps=steps, sampler=sampler))
    except StepsError as e:  # the sampler's 'num_steps=N must be ...', in the CLI's words
        raise InputError(f"--steps {steps}: {e.reason}") from None


def cmd_generate(args) -> None:
    from studio import export, pipeline
    from studio.checkpoint import resolve_model_dir
    from studio.pipeline import PixArtSigmaPipeline
    from studio.render import model_name
    from studio.tiny import note_if_tiny

    if args.steps < 1:
        raise InputError(f"--steps must be at least 1, got {args.steps}")
    model = args.model or default_model()
    width, height = args.size
    export.check_target(args.output, args.overwrite)  # a bad -o fails even a dry run
    if width:  # the picture comes out at the size asked for (binning generates at another, then resizes)
        export.check_size(args.output, width, height)
    # plan first: a budget that can't be met, or a step count the scheduler can't run, fails here, before any
    # weight is read
    try:
        the_plan = pipeline.plan(model, height, width, guidance_scale=args.guidance, memory_budget=args.memory_budget,
                                 use_resolution_binning=not args.no_binning, dtype=args.dtype,
                                 vae_tiling=VAE_TILING[args.vae_tiling], revision=args.revision)
    except pipeline.SizeError as e:  # a size binning would take: said in the CLI's words, not the API's
        raise InputError(f"{e.problem}, or leave out --no-binning") from None
    check_steps(model, args.revision, args.steps, args.sampler)
    folder = user_path(model)
    if args.revision and folder.is_dir():  # from_pretrained would read the folder as it is
        raise InputError(f"--revision {one_line(args.revision)}: {model} is a local folder; a revision is of a hub id")
    if args.variant and folder.is_dir():  # no weight is read: the files' names
        pipeline.variant_files(resolve_model_dir(model, weights=False), args.variant, warn=False)
    if args.dry_run:
        print(the_plan.describe())
        return
    t0 = time.perf_counter()
    bars = PhaseBars(args.quiet)
    try:
        pipe = PixArtSigmaPipeline.from_pretrained(model, dtype=args.dtype, variant=args.variant,
                                                   revision=args.revision,
                                                   progress=lambda done, total: bars("", "load", done, total))
        note_if_tiny(model, pipe)
        out = pipe(args.prompt, negative_prompt=args.negative, height=height, width=width,
                   num_inference_steps=args.steps, guidance_scale=args.guidance, seed=args.seed,
                   use_resolution_binning=not args.no_binning, sampler=args.sampler,
                   memory_budget=args.memory_budget, vae_tiling=VAE_TILING[args.vae_tiling],
                   progress=lambda phase, done, total: bars("", phase, done, total))
    finally:
        bars.close()
    meta = {"prompt": args.prompt, "negative_prompt": args.negative, "seed": out.seed, "steps": args.steps,
            "guidance_scale": args.guidance, "sampler": args.sampler or pipe.sampler.sampler,
            "size": "{}x{}".format(*out.images[0].size),
            "model": model_name(model, args.revision), "software": "studio"}
    export.save_image(out.images[0], args.output, overwrite=args.overwrite, metadata=meta)
    print(f"wrote {args.output} ({meta['size']}, seed {out.seed}, {time.perf_counter() - t0:.1f} s)")


def parse_variables(pairs: list[str]) -> dict[str, str]:
    """--set NAME=VALUE pairs -> {name: value}; a name given twice is an error (which value was meant?)."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--set '{one_line(pair)}' is not NAME=VALUE")
        if name.strip() in out:
            raise InputError(f"--set {one_line(name.strip())}: given twice ('{one_line(out[name.strip()])}' and "
                             f"'{one_line(value)}'); give each variable once")
        out[name.strip()] = value
    return out


def load(args):
    """The layout file with --set's variables; a warning for each of them the layout defines but uses nowhere
    (`Layout.unused_variables`: it would change nothing)."""
    from studio.layout import load_layout

    variables = parse_variables(args.variables)
    layout = load_layout(args.layout, variables)
    for name in layout.unused_variables:
        if name in variables:
            print(f"studio: warning: --set {name}: the layout defines {{{name}}} but uses it nowhere", file=sys.stderr)
    return layout


def cmd_plan(args) -> None:
    from studio.plan import plan_layout

    layout = load(args)
    the_plan = plan_layout(layout, args.model or default_model(), args.memory_budget)
    print(the_plan.to_json() if args.json else the_plan.describe())


def cmd_proof(args) -> None:
    from studio.checkpoint import is_hub_id, resolve_model_dir
    from studio.plan import plan_layout
    from studio.render import proof

    layout = load(args)
    model = args.model or env_model()  # named, on the command line or in $STUDIO_MODEL
    if model and not is_hub_id(model):
        resolve_model_dir(model, weights=False)  # a mistyped folder is an error, even for a proof
    try:
        the_plan = plan_layout(layout, args.model or default_model())
    except StudioError as e:  # a proof needs no model: label without generation sizes
        if model:
            print(f"note: placeholders without generation sizes ({_said_of_env_model(e, one_line(headline(e)), args)})",
                  file=sys.stderr)
        the_plan = None
    path = proof(layout, args.output, the_plan, overwrite=args.overwrite, guides=not args.no_guides)
    print(f"wrote {path} ({layout.canvas.full_width}x{layout.canvas.full_height}, placeholders for generated art)")


def cmd_render(args) -> None:
    from studio.export import FORMATS
    from studio.render import render

    if args.output.suffix.lower() in {*FORMATS, ".pdf"} and not args.output.is_dir():
        raise InputError(f"-o {args.output}: render writes into a folder (the file names come from the layout's "
                         f"output.name); give a folder, or use `studio proof -o FILE` for one image")
    layout = load(args)
    bars = PhaseBars(args.quiet)
    t0 = time.perf_counter()
    try:
        files = render(layout, args.output, args.model or default_model(), args.memory_budget, args.overwrite, bars)
    finally:
        bars.close()
    for path in files:
        print(f"wrote {path}")
    print(f"rendered {args.layout} in {time.perf_counter() - t0:.1f} s")


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not int(m[1]) < int(m[2]):
        raise argparse.ArgumentTypeError(f"shard '{text}' is not I/N with 0 <= I < N, e.g. 0/4")
    return int(m[1]), int(m[2])


def cmd_batch(args) -> int:
    from studio.batch import check_job, describe_items, load_job, planned, run_batch, select_shard, warn_job

    job = load_job(args.job, args.model, default_model())
    if args.list:
        items = select_shard(job.items, args.shard)
        check_job(job, items, args.memory_budget)  # what the run refuses before rendering, --list refuses
        warn_job(job, sys.stderr)  # and what it warns of
        items = planned(job, items, args.memory_budget)  # and what fails an item when the run plans it
        describe_items(items, sys.stdout)
        if not items:
            print(f"{args.job}: {len(job.items)} items; shard {args.shard[0]}/{args.shard[1]}: none in this shard",
                  file=sys.stderr)
        return 1 if any(item.problem for item in items) else 0  # a pre-flight check: these would fail
    if args.output is None:
        raise InputError("-o/--output OUTDIR is required (unless --list)")
    summary = run_batch(job, args.output, args.shard, args.cache_dir, not args.no_cache, args.memory_budget,
                        args.quiet)
    return summary.exit_code


def cmd_rerender(args) -> int:
    from studio.batch import rerender

    bars = PhaseBars(args.quiet)
    try:
        compared = rerender(args.manifest, args.output, args.overwrite, bars)
    finally:
        bars.close()
    different = 0
    for name, recorded, now, how in compared:
        same = recorded == now
        different += not same
        note = "" if same else f" (manifest {recorded[:16]}): {how}"
        print(f"{'identical' if same else 'DIFFERENT'}  {name}  {now[:16]}{note}")
    return 1 if different else 0


def cmd_make_tiny(args) -> None:
    from studio.tiny import NOISE_NOTICE, make_tiny

    make_tiny(args.folder, sample_size=args.sample_size, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote {args.folder}: {NOISE_NOTICE}")


COMMANDS = {"generate": cmd_generate, "plan": cmd_plan, "proof": cmd_proof, "render": cmd_render,
            "make-tiny": cmd_make_tiny, "batch": cmd_batch, "rerender": cmd_rerender}


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings on the command line in one line each: 'studio: warning: ...'."""
    return f"studio: warning: {str(message).removeprefix('studio: ')}\n"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that what is being written is cleaned up as on Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated()


def _import_mindspore() -> None:
    """Import MindSpore with SIGINT and SIGTERM held back (`signals_held`): a Ctrl-C in the middle of its C++
    start-up failed the import or aborted the interpreter at exit; held, it arrives right after (a
    KeyboardInterrupt, as anywhere else)."""
    with signals_held():
        importlib.import_module("mindspore")


def not_utf8(argv: list[str]) -> str | None:
    """The error for the first argument that is not UTF-8 text (os.fsdecode gives its undecodable bytes as lone
    surrogates, which no file name, prompt or file metadata can hold), those bytes shown as \\x escapes; or None."""
    for arg in argv:
        try:
            arg.encode()
        except UnicodeEncodeError:
            try:
                shown = arg.encode(errors="surrogateescape").decode(errors="backslashreplace")
            except UnicodeEncodeError:  # a surrogate no undecodable byte gives (a caller's string)
                shown = arg.encode(errors="backslashreplace").decode()
            return f"argument '{shown}' is not valid UTF-8 text"
    return None


class _Messages:
    """The command's stderr: its notes, warnings and progress, which must not stop the work they report on. Once
    a write fails (a log's reader gone, `2>&1 | head`; its disk full; stderr closed) the rest are dropped, and
    the command goes on writing its files."""

    def __init__(self, stream):
        self._stream, self.lost = stream, stream is None

    def write(self, text: str) -> int:
        return self._try("write", text) or len(text)

    def flush(self) -> None:
        self._try("flush")

    def isatty(self) -> bool:
        return bool(self._try("isatty"))

    def _try(self, method: str, *arguments):
        if not self.lost:
            try:
                return getattr(self._stream, method)(*arguments)
            except (OSError, ValueError):  # ValueError: the stream closed
                self.lost = True
        return None

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class _Output:
    """The command's stdout, flushed at each write, a failure of which names it: 'standard output: No space left
    on device', not a file the command writes (a reader gone stays a BrokenPipeError: `studio plan --json | head`
    ends quietly)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            n = self._stream.write(text)
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise OSError(e.errno, e.strerror, "standard output") from e
        return n

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _silence_stdout() -> None:
    """Point file descriptor 1 at /dev/null after a failed write to stdout, so that what it still holds doesn't fail
    the exit's flush too."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # a stream without a descriptor (a caller's)
        pass


def _write_failed(e: OSError) -> int:
    """Say a failed read or write (the disk, not the program: full, read-only, gone) in one line; status 2."""
    if e.filename == "standard output":
        _silence_stdout()
    where = f"{e.filename}: " if e.filename else ""
    print(f"studio: error: {where}{e.strerror or e}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    on_main_thread = threading.current_thread() is threading.main_thread()
    streams = sys.stdout, sys.stderr
    if on_main_thread:  # the process's streams are the command's (not when a caller runs main in its threads)
        sys.stderr = _Messages(sys.stderr)
        if sys.stdout is not None:
            sys.stdout = _Output(sys.stdout)
    try:
        problem = not_utf8(argv)
        if problem:
            print(f"studio: error: {problem}", file=sys.stderr)
            return 2
        try:
            args = build_parser().parse_args(argv)
        except OSError as e:  # --help or --version's text not written (`_Parser._print_message`)
            return _write_failed(e)
        warnings.formatwarning = _one_line_warning
        shown, warnings.showwarning = warnings.showwarning, warnings_above_bars(warnings.showwarning)
        before = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
        try:
            return _run(args)
        finally:
            warnings.showwarning = shown
            if on_main_thread:
                signal.signal(signal.SIGTERM, before)
    finally:
        if on_main_thread:
            sys.stdout, sys.stderr = streams


def _said_of_env_model(e: StudioError, line: str, args) -> str:
    """A line of `e`, when `e` is about $STUDIO_MODEL's model (a CheckpointError whose `model` it is: 'nosuch: no
    such model folder ...') and the command took its model from there, saying so: 'nosuch (from $STUDIO_MODEL):
    ...'; about the published model a command took by default, with how to name another. Else as it is."""
    about = e.model if isinstance(e, CheckpointError) else None
    if about is None or getattr(args, "model", "") is not None:  # --model given, or a command without one
        return line
    model = env_model()
    if model is None:
        if about == PUBLISHED_MODEL and line.startswith(f"{PUBLISHED_MODEL}: "):
            return (f"{line} (no --model given: the published checkpoint is the default; pass --model DIR, set "
                    f"$STUDIO_MODEL, or try `studio make-tiny tiny` and --model tiny)")
        return line
    if about == model:  # named as given, as checkpoint names a folder, or a hub id without its '@revision'
        for name in dict.fromkeys([model, str(user_path(model)), split_revision(model)[0]]):
            if line.startswith(f"{name}: "):
                return f"{name} (from $STUDIO_MODEL): {line.removeprefix(f'{name}: ')}"
    return line


def check_names(args) -> None:
    """InputError for a --model (or the $STUDIO_MODEL a command without one takes) or an -o with a control
    character, in the words of the layout loader's `model:`; an -o's would split 'wrote ...' and errors too. A
    blank $STUDIO_MODEL ('  ') too, named: argparse refuses a blank --model."""
    model = getattr(args, "model", "")
    named = [("--model", model) if model is not None else ("$STUDIO_MODEL", env_model())]
    if model is None and (env_model() or "").isspace():
        raise InputError(f"$STUDIO_MODEL '{one_line(env_model())}' is blank; set it to a pipeline folder or a hub id "
                         f"owner/name, or unset it for the default")
    if getattr(args, "output", None) is not None:
        named.append(("-o", str(args.output)))
    for name, value in named:
        if value and control_problem(value):
            raise InputError(f"{name} '{one_line(value)}' {control_problem(value)}")


def _run(args) -> int:
    """The command, its user-side failures as one line and an exit status."""
    try:
        try:
            check_names(args)
            try:
                os.getcwd()  # which MindSpore's import reads, failing with a message that names no folder
            except FileNotFoundError:
                raise InputError("the working folder no longer exists (deleted since the shell entered it); cd to "
                                 "an existing folder") from None
            _import_mindspore()
            if getattr(args, "device", None):
                from studio import backend
                backend.setup(args.device)
            code = COMMANDS[args.command](args)
        except ImportError as e:  # a lazy import cut short by a signal: the signal's
            raise interrupt_in(e) or e
    except StudioError as e:
        for line in str(e).splitlines() or [type(e).__name__]:
            print(f"studio: error: {_said_of_env_model(e, line, args)}", file=sys.stderr)
        return 2
    except Terminated:
        print("studio: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("studio: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # whoever read our output stopped (`studio plan --json | head`): no traceback
        _silence_stdout()
        return 1
    except OSError as e:
        return _write_failed(e)
    except RuntimeError as e:
        if not out_of_memory(e):
            raise
        print("studio: error: out of memory: MindSpore could not allocate a tensor; set a smaller --memory-budget "
              "(see --dry-run for the plan)", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
