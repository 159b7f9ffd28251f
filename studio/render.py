"""Plan -> pixels -> files: run every generation of a planned layout, compose, export.

`render(layout, out_dir, ...)` plans (failing early on budgets, samplers, models, existing outputs and a tiled
decode's temporary disk), generates every `generate` layer at its planned size one model at a time (each loaded
once and released after its last layer, so that one model's weights are resident, as the plan counts), makes a
generation that two layers share once, composes the canvas and exports it in the layout's formats (for spans also
each monitor's cut, at the monitor's pixel density). Each generation's picture is kept in the output
folder's `.studio-art/` until the files are written, so that a render that fails or is stopped after some
layers takes their art up again the next time, not minutes of generation (`art_key`). `proof(layout, path)`
composes with labelled placeholders instead of generated art: no model, seconds.
"""

import contextlib
import hashlib
import os
import re
from pathlib import Path
from typing import Callable

from studio import __version__, backend
from studio.check import check_arguments, check_layout, path_str
from studio.compose import compose, cut_span, draw_guides, hidden_problems, layout_dir, text_problems
from studio.errors import OUT_OF_MEMORY, InputError, StudioError, check_flag, out_of_memory
from studio.export import (EXPORT_SUFFIXES, MAX_NAME_BYTES, Picture, check_free, check_size, check_target, export,
                           not_a_folder, remove_temporaries, save_image, write_temp)
from studio.geometry import monitor_dpi, resolve
from studio.hub import HubId, split_revision
from studio.layout import file_stems, first_seed, stem_problems
from studio.memory import format_bytes
from studio.plan import GenerateJob, Plan, file_dpi, layer_kinds, model_key, placed, plan_layout
from studio.progress import write_line
from studio.spec import GenerateLayer, Layout, TextLayer, layer_label, user_path
from studio.text import surrogates_escaped


def output_stems(layout: Layout, stem: str | None = None) -> list[str]:
    """The stems `render` writes, each in every format: the canvas's, then one per monitor of a span (with
    output.per_monitor): layout.output.name with {layout} (the file's stem), {seed} (`layout.first_seed`) and
    {monitor} filled (`span` in the whole span's stem). `stem` replaces layout.output.name (batches name their
    outputs); monitor files are then `stem-<monitor>`. Stems that can't be written are refused
    (`layout.stem_problems`: the loader checks the layout's own names; a batch's variables may still give one)."""
    monitors = [m.name for m in layout.span.monitors] if layout.span and layout.output.per_monitor else []
    if stem is not None:
        return [stem] + [f"{stem}-{m}" for m in monitors]
    seed = first_seed(layout.layers)
    try:  # the loader escapes braces in variables' values: they come out literally
        stems = file_stems(layout.output.name, layout.source, seed, monitors)
    except ValueError as e:
        raise InputError(f"{layout.where('output')}: output.name: {e}") from None
    if problems := stem_problems(layout.output.name, layout.source, seed, monitors):
        p = problems[0]
        whose = "" if p.index == 0 else f" monitor '{monitors[p.index - 1]}'"
        raise InputError(surrogates_escaped(f"{layout.where('output')}: output.name '{layout.output.name}' gives"
                                            f"{whose} the file name '{p.stem}', which {p.text}"))
    return stems


def output_paths(layout: Layout, out_dir: Path, stem: str | None = None) -> list[Path]:
    """The files `render` writes: each of `output_stems` in each of output.formats."""
    return [out_dir / (s + EXPORT_SUFFIXES[f]) for s in output_stems(layout, stem) for f in layout.output.formats]


def temporary_targets(layout: Layout, stem: str | None = None) -> set[str]:
    """The file names whose temporaries a killed render of `layout` may have left: each of `output_stems` in
    every export format, not only output.formats (a layout edited since may no longer write a format)."""
    return {s + suffix for s in output_stems(layout, stem) for suffix in EXPORT_SUFFIXES.values()}


def layout_inputs(layout: Layout, base_dir: Path | None) -> list[tuple[str, str, Path]]:
    """The files a layout reads besides itself, each as (its key, 'layers[0].image.path'; its name in batch
    manifests, 'image:logo.png'; the file): every image layer's path (relative to `base_dir`, the layout's
    folder) and every text layer's font file (not the bundled default). A file in the layout's folder is named
    relative to it, so that a project moved whole (or a share mounted elsewhere) names its inputs as before."""
    from studio import fonts
    from studio.spec import ImageLayer, input_path

    folder = os.path.realpath(base_dir or ".")  # as the loader resolves an image's path

    def name(kind, path):
        inside = os.path.commonpath([folder, os.path.abspath(path)]) == folder
        return f"{kind}:{Path(os.path.relpath(path, folder)).as_posix() if inside else path}"
    out = []
    for i, layer in enumerate(layout.layers):
        if isinstance(layer, ImageLayer):
            path = input_path(layer.path, base_dir)
            out.append((f"layers[{i}].image.path", name("image", path), path))
        elif isinstance(layer, TextLayer) and layer.font:
            path = fonts.find_font(layer.font, base_dir)
            if path and path != fonts.DEFAULT:
                out.append((f"layers[{i}].text.font", name("font", path), Path(path)))
    return out


def check_not_input(layout: Layout, paths) -> None:
    """InputError when one of `paths`, files to write, is a file the layout reads (`layout_inputs`), even with
    overwrite: it would replace its own input."""
    inputs = layout_inputs(layout, layout_dir(layout))
    for path in map(Path, paths):
        for key, _, file in inputs:
            if _same_file(path, file):
                raise InputError(f"{path} is an input of the layout ({key})")


def model_name(model: str, revision: str | None = None) -> str:
    """A model as a file's metadata names it: a local folder by the name of the folder it resolves to (so that
    '.', '..' and a symbolic link name it as a layout's `model:` does; as resolve_model_dir, a folder before a
    hub id, but a layout's `HubId`), a hub id as it is, with '@revision' when `revision` is given and it names
    none (the form a layout's `model:` and --model take)."""
    folder = user_path(model)
    if not isinstance(model, HubId) and folder.is_dir():
        return folder.resolve().name
    return f"{model}@{revision}" if revision and split_revision(model)[1] is None else model


def _plain(number):
    """A number as JSON writes it: a numpy number (a layout built in code may hold one) as Python's."""
    return number.item() if hasattr(number, "item") else number


def _same_file(a: Path, b: Path) -> bool:
    """os.path.samefile where both exist (links, other spellings), else whether the resolved paths are equal (not
    when one is a symbolic link loop: that is no file)."""
    try:
        return os.path.samefile(a, b) if a.exists() and b.exists() else a.resolve() == b.resolve()
    except RuntimeError:  # a loop (Python 3.13 resolves what it can)
        return False


def check_outputs(layout: Layout, targets: list[Path], overwrite: bool) -> None:
    """Before any work, that `render` can write `targets` (`output_paths`' files): none is a file the layout reads
    (`check_not_input`), none exists unless overwrite, each is within its format's size limit."""
    check_not_input(layout, targets)
    sizes = [size for size in output_sizes(layout) for _ in layout.output.formats]  # in output_paths' order
    for path, (width, height) in zip(targets, sizes, strict=True):
        check_free(path, overwrite)
        check_size(path, width, height)


def output_sizes(layout: Layout) -> list[tuple[int, int]]:
    """(width, height) px of each of `output_stems`' files: the full canvas, then each monitor of a span."""
    monitors = layout.span.monitors if layout.span and layout.output.per_monitor else ()
    return [(layout.canvas.full_width, layout.canvas.full_height)] + [(m.width, m.height) for m in monitors]


def proof(layout: Layout, path, plan: Plan | None = None, overwrite: bool = False, guides: bool = True,
          warn: Callable[[str, str], None] | None = None) -> Path:
    """The layout with labelled placeholders for generated art, written to `path` (PNG/JPEG/TIFF), with the
    bleed, trim, safe area and a span's bezel gaps marked (`compose.draw_guides`) unless guides=False; plan:
    `plan_layout`'s of this layout (`plan_difference`), whose strategies and sizes label the placeholders. A
    warning for each text layer that leaves its region or enters the safe margin, and for each text or image layer
    a later layer hides (`warn_text_problems`): warn(where, problem) when given, else a line on stderr."""
    check_arguments("proof", warn=warn)
    check_flag("proof: overwrite", overwrite)
    check_flag("proof: guides", guides)
    if plan is not None and not isinstance(plan, Plan):
        raise InputError(f"proof: plan: expected a Plan (plan_layout's) or None, got {plan!r:.80}")
    if not path_str(path):  # not text or a Path (bytes), or empty
        raise InputError(f"proof: path: expected an image file name (text or a Path), got {path!r:.80}")
    check_layout(layout)  # with a plan too: the layout may have been edited since (a millisecond)
    if plan is not None and (difference := plan_difference(plan, layout)):
        raise InputError(f"proof: plan= was made for another layout ({difference}); pass plan_layout(layout) or "
                         f"plan=None")
    path = check_target(Path(path), overwrite)  # before any work
    check_not_input(layout, [path])
    check_size(path, layout.canvas.full_width, layout.canvas.full_height)
    labels = {}
    for job in plan.jobs if plan else ():
        labels[job.layer] = f"{job.strategy} {job.gen_width}x{job.gen_height}"
    image = compose(layout, proof=True, labels=labels)
    if guides:
        image = draw_guides(image, layout)
    path = save_image(image, path, overwrite=overwrite, dpi=file_dpi(layout), quality=layout.output.jpeg_quality)
    warn_text_problems(layout, warn)
    return path


def plan_difference(plan: Plan, layout: Layout) -> str | None:
    """How the layout `plan` was made for differs from `layout` in what the plan's jobs rely on (its source, its
    full canvas, its layers' kinds and names, the generate layers' boxes), one phrase; None when it does not."""
    kinds = layer_kinds(layout)
    canvas = layout.canvas
    if plan.source != layout.source:
        return f"{plan.source!r}, not {layout.source!r}"
    if (plan.width, plan.height) != (canvas.full_width, canvas.full_height):
        return f"of {plan.width} x {plan.height} px, not {canvas.full_width} x {canvas.full_height} px"
    if len(plan.layers) != len(kinds):
        return f"of {len(plan.layers)} layers, not {len(kinds)}"
    for i, (planned, given) in enumerate(zip(plan.layers, kinds)):
        if planned != given:
            return f"layers[{i}] was {' '.join(filter(None, planned))!r}, not {' '.join(filter(None, given))!r}"
    for job in plan.jobs:
        if job.box != resolve(layout.layers[job.layer].region, canvas, layout.grids):
            return f"layers[{job.layer}] had another region"
    return None


def warn_text_problems(layout: Layout, warn: Callable[[str, str], None] | None = None) -> None:
    """A warning for each line of `compose.hidden_problems` (a text or image layer that a later layer hides) and
    of `compose.text_problems` (text that leaves its region, enters the safe margin or the bleed, fits at no
    size, shows on no monitor, lacks glyphs, ...): warn(where, problem), where the layer is written
    ('poster.yaml:14'; the source alone for a layout built in code); default a line on stderr."""
    warn = warn or (lambda where, problem: write_line(f"studio: warning: {where}: {problem}"))
    for problem in hidden_problems(layout) + text_problems(layout):
        warn(layout.where(problem.path), problem)


def cut_to_region(picture, job: GenerateJob):
    """A `direct` generation cut to its region: the generation is the region with each side rounded up to
    16 px, so the region is its centre, pixel for pixel (compose would otherwise resample the whole picture
    by that rounding, and `fit: contain` would letterbox it). An `upscale` one as it is (compose fits it)."""
    if job.strategy != "direct":
        return picture
    dx, dy = (picture.width - job.box.w) // 2, (picture.height - job.box.h) // 2
    return picture.crop((dx, dy, dx + job.box.w, dy + job.box.h))


def check_loadable(model_id) -> None:
    """What loading `model_id` checks before reading any weight (`pipeline.check_folder`; a hub id's files
    fetched), so that a model whose layers come later fails before the first layer is generated, not after."""
    from studio.checkpoint import resolve_model_dir
    from studio.pipeline import check_folder

    check_folder(resolve_model_dir(model_id), warn=False)


def check_map_disks(layout: Layout, plan: Plan, by_model: dict, loaded: dict) -> None:
    """The temporary disk of every generation in `by_model` (`model_key` -> its jobs) whose decode keeps its tiles'
    maps in files, checked before any model loads, as `studio generate` checks its own, not when the layer
    comes after minutes of others (`vae_tiling.check_map_disk`: $STUDIO_TMPDIR missing, unwritable or too
    small); the error at the layer. A pipeline in `loaded` tiles as it plans (its dtype), one render loads
    as the layout's plan does, with the VAE config read from the model's files (`plan.model_configs`)."""
    from studio.plan import model_configs
    from studio.vae_tiling import check_map_disk

    for model, jobs in by_model.items():
        pipe = loaded.get(model)
        for job in jobs:
            layer = layout.layers[job.layer]
            try:  # a loaded pipeline's plan fails as its call would: at the layer too
                memory = job.memory if pipe is None else pipe.generation_plan(job.gen_height, job.gen_width, 1,
                                                                               plan.budget, layer.guided)
                tiles = memory.phases[2].tiles
                if tiles is not None and not tiles.maps_in_memory:  # the VAE's config read only then
                    check_map_disk(model_configs(job.model)[2] if pipe is None else pipe.vae.config, tiles)
            except StudioError as e:
                raise placed(e, _layer_at(layout, job.layer)) from None


def _layer_at(layout: Layout, index: int) -> str:
    """Where layer `index` is, for messages: 'poster.yaml:4: layers[1] (sky)'."""
    return f"{layout.where(f'layers[{index}]')}: {layer_label(index, layout.layers[index])}"


ART_FOLDER = ".studio-art"  # in the output folder: generated pictures, until the render's files are written
ART_KEY_DIGITS = 32  # hex digits of `art_key`


def model_stamp(model_id) -> dict:
    """What tells a model folder's files apart without reading them: each file's `manifest.file_stamp`."""
    from studio.checkpoint import resolve_model_dir
    from studio.manifest import file_stamp

    folder = resolve_model_dir(model_id)
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            files[p.relative_to(folder).as_posix()] = file_stamp(p)
    return {"folder": str(folder.resolve()), "files": files}


def art_key(job: GenerateJob, layer: GenerateLayer, stamp: dict, pipe=None) -> str:
    """The name of a generation's kept picture: a hash of everything that decides its pixels (the model's
    files, and the dtype and weight variant of `pipe` when given, else float32 as render loads them; the
    settings, the size, the attention blocks and VAE tiles its memory plan chose, and the software that computes
    it, `manifest.computing_software`: studio's build, whose version stays the same between commits). Not the budget
    itself: an automatic one moves with the free memory, the blocks it gives mostly don't."""
    from studio import manifest

    blocks = [[p.name, repr(p.chunks), p.tiles.describe() if p.tiles else None] for p in job.memory.phases]
    weights = [str(pipe.dtype), pipe.variant] if pipe is not None else ["Float32", None]
    return manifest.sha256_json({
        **manifest.computing_software(), "model": stamp,
        "weights": weights, "prompt": layer.prompt, "negative_prompt": layer.negative_prompt, "seed": layer.seed,
        "steps": layer.steps, "guidance": layer.guidance, "sampler": layer.sampler,
        "size": [job.gen_width, job.gen_height], "blocks": blocks})[:ART_KEY_DIGITS]


def _kept_art(path: Path, size: tuple[int, int]):
    """(picture, sampler) an earlier, unfinished render of the same generation kept at `path`, or None."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.size != size:  # not what this generation makes (a file put there by hand): made again
                return None
            return im.convert("RGB"), im.text["sampler"]
    except (OSError, KeyError, ValueError):  # none, or damaged: generated again
        return None


def _keep_art(path: Path, picture, sampler: str) -> None:
    """Keep a generation's picture (atomically) until the render's files are written; a failure to (a full
    disk) only costs the reuse."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("sampler", sampler)
    try:
        path.parent.mkdir(exist_ok=True)
        tmp = write_temp(path.parent, path.name, lambda f: picture.save(f, "PNG", pnginfo=info, compress_level=1))
        os.replace(tmp, path)
    except OSError as e:
        write_line(f"studio: warning: cannot keep the art of a layer in {path.parent} ({e.strerror or e}): a "
                   f"failed render will generate it again")
        with contextlib.suppress(OSError):  # the folder, when nothing else is kept there
            path.parent.rmdir()


def art_stem(stem: str) -> str:
    """How the names of the pictures kept for the output `stem` begin ('<art_stem>.<key>.png'): `stem`, or for a
    stem too long for such a name's temporary file (MAX_NAME_BYTES) as many of its first characters as fit,
    '~' and 16 hex digits of its hash."""
    room = MAX_NAME_BYTES - len(f".{'0' * ART_KEY_DIGITS}.png")
    if len(stem.encode()) <= room:
        return stem
    tail = "~" + hashlib.sha256(stem.encode()).hexdigest()[:16]
    return stem.encode()[:room - len(tail)].decode(errors="ignore") + tail  # no character cut in two


def _drop_art(folder: Path, stem: str) -> None:
    """Once an output's files are written: every picture kept for it ('<art_stem>.<key>.png'), this render's and
    those of earlier ones that stopped (before its layout was edited, say), with their temporary files
    ('.<art_stem>.<key>.png.<tag>.part'), not another output's ('poster.v2.<key>.png' stays when 'poster' is
    written); then the folder, when nothing else is kept there."""
    if not folder.is_dir():
        return
    ours = re.compile(re.escape(art_stem(stem)) + rf"\.[0-9a-f]{{{ART_KEY_DIGITS}}}\.png")
    names = set()
    for path in folder.iterdir():
        name = path.name
        if name.startswith(".") and name.endswith(".part"):  # a temporary: the name it was to have
            name = name[1:].removesuffix(".part").rpartition(".")[0]
        if ours.fullmatch(name):
            names.add(name)
    remove_temporaries(folder, names)
    for name in names:
        (folder / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


@contextlib.contextmanager
def _prompts_ahead(layout: Layout, plan: Plan, jobs: list[GenerateJob], pipe, report):
    """With several generations on one pipeline, their prompts encoded in one read of its streamed T5 before
    the first runs, instead of one read per generation (`pipeline.encode_all_ahead`), into the pipeline's
    embedding cache (a batch's), else into one in memory. That cache is lent to this thread's calls until they
    are done (`pipeline.lent_embedding_cache`), not set on the pipeline: renders sharing the pipeline from
    other threads keep their own."""
    from studio.pipeline import MemoryCache, encode_all_ahead, lent_embedding_cache

    if len(jobs) < 2:
        yield
        return
    cache = pipe.embedding_cache
    with lent_embedding_cache(pipe, MemoryCache() if cache is None else cache):
        requests = []
        for job in jobs:
            layer = layout.layers[job.layer]
            text = pipe.generation_plan(job.gen_height, job.gen_width, 1, plan.budget, layer.guided).phases[0]
            requests.append((pipe, layer.texts, text, max(plan.budget - text.peak, 0)))
        encode_all_ahead(requests, progress=lambda done, total: report("", "ahead", done, total))
        yield


def render(layout: Layout, out_dir, model: str | None = None, memory_budget=None, overwrite: bool = False,
           progress: Callable[[str, str, int, int], None] | None = None, pipelines: dict | None = None,
           stem: str | None = None, metadata: dict | None = None, record: dict | None = None,
           reuse_art: bool = True, warn: Callable[[str, str], None] | None = None,
           device: str | None = None) -> list[Path]:
    """Generate, compose and export `layout` into `out_dir`; returns the written files.

    model: the default model for layers and layouts that name none. progress(label, phase, done, total)
    reports each generation's phases as the pipeline's `progress` does ("text", "denoise", "decode"), label
    naming the layer, then "compose" (0, then 1 of 1) and "export" (files written), label "", and before a
    model's generations "load" (bytes of its weights read, when render loads it) and, when it has several,
    "ahead" (their prompts encoded). pipelines: a dict model (folder or hub id, `model_key`) -> loaded
    pipeline, used and left loaded (batches reuse them across calls); a model not in it is loaded when its
    first generation comes and released after its last, so that models don't add up in memory.
    Generations run model by model, each model's in layer order; a layer whose generation an earlier one
    makes (`GenerateJob.reuses`) takes its picture. Text that leaves its region, and a layer that a later one
    hides, are warned about before any generation, as `proof` does (`warn_text_problems`; warn(where, problem)
    instead of a line on stderr when given).
    For batches (studio.batch): stem replaces layout.output.name; metadata entries are added to (or
    replace) those stored in the files; record, a dict, receives the memory budget and each generation's
    settings. reuse_art=False generates every layer even when an earlier render kept its picture (rerender,
    which checks that the generation gives the recorded bytes). device: as `PixArtSigmaPipeline.from_pretrained`'s.
    """
    from studio.checkpoint import resolve_model_dir
    from studio.pipeline import PixArtSigmaPipeline
    from studio.tiny import note_if_tiny

    check_arguments("render", model, pipelines, progress, warn)
    check_flag("render: overwrite", overwrite)
    check_flag("render: reuse_art", reuse_art)
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):  # Path('') would be the working folder
        raise InputError(f"render: out_dir: expected an output folder (text or a Path), got {out_dir!r:.80}")
    out_dir = Path(out_dir)
    plan = plan_layout(layout, model, memory_budget, device=device)
    targets = output_paths(layout, out_dir, stem)  # names only: a bad one (a batch's stem) creates no folder
    if not out_dir.exists():  # no art kept there: every model is needed; one that can't be found creates no folder
        for model_id in dict.fromkeys(job.model for job in plan.jobs):
            if model_key(model_id) not in {model_key(m) for m in pipelines or {}}:
                resolve_model_dir(model_id)
    try:  # created when missing, as a designer expects of `-o out/posters`
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file there, a link that loops or leads nowhere: said as such, not 'File exists'
        why = not_a_folder(out_dir) if os.path.lexists(out_dir) else e.strerror or e
        raise InputError(f"{out_dir}: cannot be the output folder ({why})") from None
    # what a killed run of this layout left: its temporary files, or renames to finish; an output whose renames
    # are finished is written, so the art kept for it goes (as when that run ends)
    for name in remove_temporaries(out_dir, temporary_targets(layout, stem)):
        _drop_art(out_dir / ART_FOLDER, name.rpartition(".")[0])
    check_outputs(layout, targets, overwrite)  # before any generation: don't compute what can't be written
    warn_text_problems(layout, warn)  # the final files clip such text as the proof does
    loaded = {model_key(m): pipe for m, pipe in (pipelines or {}).items()}
    report = progress or (lambda label, phase, done, total: None)
    main_stem, *monitor_stems = output_stems(layout, stem)
    art_dir, stamps, kept_at = out_dir / ART_FOLDER, {}, {}  # kept_at: layer -> where its picture is kept
    made = {}  # layer -> (picture, sampler)
    # model_key -> its generations to run, models in the order of their first layer: one model however spelled
    by_model: dict = {}
    for job in plan.jobs:
        if job.reuses is None:
            model = model_key(job.model)
            if model not in stamps:
                stamps[model] = model_stamp(job.model)
            key = art_key(job, layout.layers[job.layer], stamps[model], loaded.get(model))
            kept_at[job.layer] = art_dir / f"{art_stem(main_stem)}.{key}.png"
    remove_temporaries(art_dir, {path.name for path in kept_at.values()})  # of a kill while keeping art
    for job in plan.jobs:
        kept = (_kept_art(kept_at[job.layer], (job.gen_width, job.gen_height)) if job.reuses is None and reuse_art
                else None)
        if kept is not None:
            made[job.layer] = kept
            write_line(f"note: layer {job.layer}: its art from an earlier render that stopped before writing its "
                       f"files")
        elif job.reuses is None:
            by_model.setdefault(model_key(job.model), []).append(job)
    for model, jobs in list(by_model.items())[1:]:  # the first loads before any generation anyway
        if model not in loaded:
            check_loadable(jobs[0].model)
    check_map_disks(layout, plan, by_model, loaded)
    n, runs = 0, sum(map(len, by_model.values()))
    for model, jobs in by_model.items():
        model_id, pipe = jobs[0].model, loaded.get(model)  # the model as its first layer to generate names it
        if pipe is None:
            pipe = PixArtSigmaPipeline.from_pretrained(model_id, progress=lambda done, total: report(
                str(model_id), "load", done, total))  # named: a layout's models load one after another
            note_if_tiny(model_id, pipe)
        with _prompts_ahead(layout, plan, jobs, pipe, report):
            for job in jobs:
                n += 1
                layer = layout.layers[job.layer]
                name = f" {layer.name}" if layer.name else ""
                label = f"layer {job.layer}{name} ({n}/{runs}) {job.strategy} {job.gen_width}x{job.gen_height}"
                try:
                    out = pipe(layer.prompt, negative_prompt=layer.negative_prompt, height=job.gen_height,
                               width=job.gen_width, num_inference_steps=layer.steps, guidance_scale=layer.guidance,
                               seed=layer.seed, use_resolution_binning=False, sampler=layer.sampler,
                               memory_budget=plan.budget,
                               progress=lambda phase, done, total, label=label: report(label, phase, done, total))
                except StudioError as e:  # an overflow: at the layer, as a plan's errors are
                    raise placed(e, _layer_at(layout, job.layer)) from None
                except RuntimeError as e:
                    if not out_of_memory(e):
                        raise
                    # MindSpore's allocation failure, with its C++ trace: in one line, as the CLI and batch say it
                    raise StudioError(f"{_layer_at(layout, job.layer)}: {OUT_OF_MEMORY}") from e
                made[job.layer] = out.images[0], layer.sampler or pipe.sampler.sampler
                _keep_art(kept_at[job.layer], *made[job.layer])
        if model not in loaded:  # released before the next model loads
            del pipe
            backend.give_back_memory()
    art, jobs_meta = {}, []
    for job in plan.jobs:
        layer, (picture, sampler) = layout.layers[job.layer], made[job.layer if job.reuses is None else job.reuses]
        art[job.layer] = cut_to_region(picture, job)
        jobs_meta.append({"layer": job.layer, "model": str(job.model), "prompt": layer.prompt,
                          "negative_prompt": layer.negative_prompt, "seed": _plain(layer.seed),
                          "steps": _plain(layer.steps), "guidance": _plain(layer.guidance), "sampler": sampler,
                          "strategy": job.strategy,
                          "size": f"{job.gen_width}x{job.gen_height}",
                          "peak_memory_planned": format_bytes(job.memory.peak)})
    report("", "compose", 0, 1)
    image = compose(layout, art)
    report("", "compose", 1, 1)
    if record is not None:
        record.update(budget=plan.budget, generations=jobs_meta)
    # files travel: no local paths; and the same pixels make the same file, whatever the budget planned
    public = [{**{k: v for k, v in meta.items() if k != "peak_memory_planned"}, "model": model_name(meta["model"])}
              for meta in jobs_meta]
    metadata = {"software": f"studio {__version__}", "layout": Path(layout.source).name,
                "variables": dict(sorted(layout.variables.items())), "generations": public, **(metadata or {})}
    monitors = []
    if monitor_stems:
        cuts = cut_span(image, list(plan.monitors), layout.span.monitors)
        monitors = [Picture(cut, s, monitor_dpi(m), metadata={**metadata, "monitor": m.name})
                    for m, cut, s in zip(layout.span.monitors, cuts, monitor_stems, strict=True)]
    # the kept art goes with the files' renames, a Ctrl-C held until both are done: never files written and their
    # art kept (the next run would stop at 'file exists'), nor "interrupted" with the files replaced
    return export(image, layout, out_dir, main_stem, overwrite, metadata, extra=monitors, dpi=file_dpi(layout),
                  progress=lambda done, total: report("", "export", done, total),
                  on_written=lambda: _drop_art(art_dir, main_stem))
