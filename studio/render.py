"""Plan -> pixels -> files: run every generation of a planned layout, compose, export.

`render(layout, out_dir, ...)` plans (failing early on budgets and existing outputs), loads each model
once, generates every `generate` layer at its planned size, composes the canvas and exports it in the
layout's formats (and per monitor for spans). `proof(layout, path)` composes with labelled placeholders
instead of generated art: no model, seconds.
"""

import json
import sys
from pathlib import Path
from typing import Callable

from studio import __version__
from studio.compose import compose, cut_span
from studio.errors import InputError
from studio.export import EXPORT_SUFFIXES, check_free, export
from studio.memory import format_bytes
from studio.plan import Plan, plan_layout
from studio.spec import GenerateLayer, Layout


def output_stem(layout: Layout, monitor: str | None = None) -> str:
    """layout.output.name with {layout} (the file's stem), {seed} (the first generate layer's) and
    {monitor} filled; a stem that would leave the output folder is refused."""
    seeds = [layer.seed for layer in layout.layers if isinstance(layer, GenerateLayer)]
    fields = {"layout": Path(layout.source).stem, "seed": seeds[0] if seeds else 0, "monitor": monitor or ""}
    stem = layout.output.name.format(**fields)
    if monitor and "{monitor}" not in layout.output.name:
        stem = f"{stem}-{monitor}"
    if not stem or "/" in stem or "\\" in stem or stem in (".", ".."):
        raise InputError(f"{layout.source}: output.name '{layout.output.name}' gives '{stem}', not a file name")
    return stem


def output_paths(layout: Layout, out_dir: Path, stem: str | None = None) -> list[Path]:
    """The files `render` writes: one per format, then one PNG per monitor of a span. `stem` replaces
    layout.output.name (batches name their outputs); monitor files are then `stem-<monitor>`."""
    def name(monitor=None):
        if stem is None:
            return output_stem(layout, monitor)
        return f"{stem}-{monitor}" if monitor else stem

    paths = [out_dir / (name() + EXPORT_SUFFIXES[f]) for f in layout.output.formats]
    if layout.span and layout.output.per_monitor:
        paths += [out_dir / (name(m.name) + ".png") for m in layout.span.monitors]
    return paths


def proof(layout: Layout, path, plan: Plan | None = None, overwrite: bool = False) -> Path:
    """The layout with labelled placeholders for generated art, written to `path` (PNG/JPEG/TIFF)."""
    from studio.export import save_image

    labels = {}
    for job in plan.jobs if plan else ():
        labels[job.layer] = f"{job.strategy} {job.gen_width}x{job.gen_height}"
    return save_image(compose(layout, proof=True, labels=labels), path, overwrite=overwrite, dpi=layout.canvas.dpi)


def render(layout: Layout, out_dir, model: str | None = None, memory_budget=None, overwrite: bool = False,
           progress: Callable[[str, str, int, int], None] | None = None, pipelines: dict | None = None,
           stem: str | None = None, metadata: dict | None = None, record: dict | None = None) -> list[Path]:
    """Generate, compose and export `layout` into `out_dir`; returns the written files.

    model: the default model for layers and layouts that name none. progress(label, phase, done, total)
    reports each generation's phases as the pipeline's `progress` does ("text", "denoise", "decode"), label
    naming the layer. pipelines: a dict model -> loaded pipeline, reused across calls (batches).
    For batches (studio.batch): stem replaces layout.output.name; metadata entries are added to (or
    replace) those stored in the files; record, a dict, receives the memory budget and each generation's
    settings.
    """
    from studio.pipeline import PixArtSigmaPipeline

    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise InputError(f"{out_dir}: no such output folder")
    plan = plan_layout(layout, model, memory_budget)
    targets = output_paths(layout, out_dir, stem)
    for path in targets:  # before any generation: don't compute what can't be written
        check_free(path, overwrite)
    pipelines = {} if pipelines is None else pipelines
    art, jobs_meta = {}, []
    for n, job in enumerate(plan.jobs, 1):
        layer = layout.layers[job.layer]
        model_id = layer.model or layout.model or model
        if model_id not in pipelines:
            pipelines[model_id] = PixArtSigmaPipeline.from_pretrained(model_id)
            if pipelines[model_id].tiny_notice:
                print(f"note: {model_id}: {pipelines[model_id].tiny_notice}", file=sys.stderr)
        pipe = pipelines[model_id]
        label = f"layer {job.layer} ({n}/{len(plan.jobs)}) {job.strategy} {job.gen_width}x{job.gen_height}"
        out = pipe(layer.prompt, negative_prompt=layer.negative_prompt, height=job.gen_height, width=job.gen_width,
                   num_inference_steps=layer.steps, guidance_scale=layer.guidance, seed=layer.seed,
                   use_resolution_binning=False, sampler=layer.sampler, memory_budget=plan.budget,
                   progress=(lambda phase, done, total, label=label: progress(label, phase, done, total))
                   if progress else None)
        art[job.layer] = out.images[0]
        jobs_meta.append({"layer": job.layer, "model": str(model_id), "prompt": layer.prompt,
                          "negative_prompt": layer.negative_prompt, "seed": layer.seed, "steps": layer.steps,
                          "guidance": layer.guidance, "sampler": layer.sampler or pipe.sampler.sampler,
                          "strategy": job.strategy, "size": f"{job.gen_width}x{job.gen_height}",
                          "peak_memory_planned": format_bytes(job.memory.peak)})
    image = compose(layout, art)
    if record is not None:
        record.update(budget=plan.budget, generations=jobs_meta)
    metadata = {"software": f"studio {__version__}", "layout": layout.source,
                "variables": json.dumps(layout.variables, sort_keys=True), "generations": json.dumps(jobs_meta),
                **(metadata or {})}
    files = export(image, layout, out_dir, output_stem(layout) if stem is None else stem, overwrite, metadata)
    if layout.span and layout.output.per_monitor:
        from studio.export import save_image
        cuts = cut_span(image, list(plan.monitors), layout.span.monitors)
        for monitor, cut, path in zip(layout.span.monitors, cuts, targets[len(files):]):
            files.append(save_image(cut, path, overwrite=overwrite, metadata={**metadata, "monitor": monitor.name}))
    return files
