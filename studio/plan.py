"""Layout spec -> plan: pure data about what rendering will do, with no tensor and no weight read.

For every layer its box on the canvas; for every `generate` layer the size the model generates at (its
checkpoint's aspect-ratio bin, or the region itself rounded up to the model's size multiple: VAE factor x
patch size, 16 px for PixArt-Sigma), the strategy that fills the region
(`direct`: generate at the region's size through chunked attention and tiled decoding, then cut the
rounding off; `upscale`: generate at the native bin and resample with Lanczos), latent size, token count,
the memory plan (peak bytes, attention chunks, VAE tiles), a relative cost (1.0 = one 1024x1024 generation
of the same model with 20 steps and guidance), and whether an earlier layer makes the same generation
(`reuses`: it is generated once). A sampler or step count the layer's model can't run is an error here,
before any generation.
"""

import json
import os
from dataclasses import asdict, dataclass

from studio import binning
from studio.check import check_arguments, check_layout
from studio.errors import CheckpointError, ConfigError, InputError, PlanError, StudioError
from studio.geometry import Box, monitor_dpi, resolve, span_canvas
from studio.hub import HubId, split_revision
from studio.manifest import model_identity
from studio.memory import format_bytes, parse_bytes, resolve_budget, tensor_cap
from studio.memory_plan import GenerationPlan, plan_generation
from studio.models.t5 import T5Config
from studio.models.transformer import PixArtTransformerConfig
from studio.models.vae import AutoencoderKLConfig
from studio.spec import Canvas, GenerateLayer, Layout, Span, layer_kind, layer_label

# `auto` generates directly between these multiples of the checkpoint's native pixel count; outside them the
# model is far from the resolutions it was trained at, and resampling its nearest bin (up for a large region,
# down for a small one) is the safer bet. (The 1024 checkpoint: 512x512 to 1536x1536.)
DIRECT_MIN_AREA = 0.25
DIRECT_MAX_AREA = 2.25
SDXL_VAE = AutoencoderKLConfig(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                               up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, scaling_factor=0.13025,
                               force_upcast=False, sample_size=512)  # as PixArt-Sigma publishes it
# Published checkpoints, for planning when the weights are not on this machine.
PUBLISHED = {
    "PixArt-alpha/PixArt-Sigma-XL-2-512-MS": PixArtTransformerConfig(sample_size=64, interpolation_scale=1,
                                                                     use_additional_conditions=False),
    "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS": PixArtTransformerConfig(sample_size=128, interpolation_scale=2,
                                                                      use_additional_conditions=False),
    "PixArt-alpha/PixArt-Sigma-XL-2-2K-MS": PixArtTransformerConfig(sample_size=256, interpolation_scale=4,
                                                                    use_additional_conditions=False),
}


@dataclass(frozen=True)
class GenerateJob:
    layer: int  # index in layout.layers
    box: Box  # the region it fills, full-raster px
    strategy: str  # direct | upscale
    gen_width: int  # px the model generates at
    gen_height: int
    latent: tuple[int, int]  # (h, w)
    tokens: int  # image tokens per sample
    memory: GenerationPlan
    cost: float  # relative to one 1024x1024 generation with 20 steps and guidance (relative_cost); 0 when reused
    model: str | None  # the model it runs (None: planned from given configs)
    reuses: int | None  # the layer whose identical generation it takes (same model, settings and size)

    def summary(self) -> dict:
        d = asdict(self)
        d["memory"] = {p.name: {"peak": p.peak, "chunks": [asdict(c) for c in p.chunks], "chunking": p.chunking(),
                                "vae_tiles": None if p.tiles is None else p.tiles.describe()}
                       for p in self.memory.phases}
        d["memory"]["peak"] = self.memory.peak
        return d


@dataclass(frozen=True)
class Plan:
    source: str
    width: int  # full raster (trim + bleed), px
    height: int
    boxes: tuple[Box, ...]  # per layer
    jobs: tuple[GenerateJob, ...]
    budget: int  # bytes: the given budget, or the automatic one at planning time
    canvas: Canvas  # the layout's: trim size, bleed, dpi
    layers: tuple[tuple[str, str], ...]  # per layer: (type, name), e.g. ("generate", "sky")
    budget_automatic: bool  # budget is the free memory at planning time, not a given one
    span: Span | None  # the layout's: the monitors `monitors` are cut for

    @property
    def file_dpi(self) -> int:
        """The DPI written in the canvas's files (`file_dpi`): a span's densest monitor's, not canvas.dpi."""
        return _files_dpi(self.canvas, self.span)

    @property
    def monitors(self) -> tuple[Box, ...]:
        """The span's cuts, one box per monitor (`geometry.span_canvas`); none without a span."""
        return tuple(span_canvas(self.span)[2]) if self.span else ()

    @property
    def peak(self) -> int:
        return max((j.memory.peak for j in self.jobs), default=0)

    @property
    def cost(self) -> float:
        """The generations' relative cost in all (reused ones count once)."""
        return round(sum(j.cost for j in self.jobs), 4)

    def to_json(self) -> str:
        """Everything `describe` shows, as JSON."""
        c = self.canvas
        return json.dumps({"source": self.source, "width": self.width, "height": self.height,
                           "trim": {"width": c.width, "height": c.height}, "bleed": c.bleed, "dpi": c.dpi,
                           "file_dpi": self.file_dpi,
                           "layers": [{"type": kind, "name": name, "box": asdict(box)}
                                      for (kind, name), box in zip(self.layers, self.boxes)],
                           "boxes": [asdict(b) for b in self.boxes], "jobs": [j.summary() for j in self.jobs],
                           "monitors": [asdict(b) for b in self.monitors], "budget": self.budget,
                           "budget_automatic": self.budget_automatic, "peak": self.peak, "cost": self.cost},
                          indent=2)

    def describe(self) -> str:
        """The plan in lines of text."""
        c, n = self.canvas, len(self.boxes)
        budget = format_bytes(self.budget) + (" (automatic: free memory now)" if self.budget_automatic else "")
        dpi = f"{c.dpi} dpi" + (f", files at {self.file_dpi} dpi" if self.file_dpi != c.dpi else "")
        lines = [f"{self.source}: canvas {self.width}x{self.height} px (trim {c.width}x{c.height}, bleed {c.bleed}, "
                 f"{dpi}), {n} layer{'' if n == 1 else 's'}, budget {budget}"]
        for i, ((kind, name), box) in enumerate(zip(self.layers, self.boxes)):
            lines.append(f"  [{i}] {kind:<9} {box.w}x{box.h} at ({box.x}, {box.y}){f' ({name})' if name else ''}")
        several_models = len({job.model for job in self.jobs}) > 1
        for job in self.jobs:
            peaks = ", ".join(f"{p.name} {format_bytes(p.peak)}" for p in job.memory.phases)
            reused = f" (the generation of [{job.reuses}], reused)" if job.reuses is not None else ""
            lines.append(f"  generate [{job.layer}]: {job.strategy} at {job.gen_width}x{job.gen_height} "
                         f"(latent {job.latent[1]}x{job.latent[0]}, {job.tokens} tokens)"
                         f"{f' with {job.model}' if several_models else ''}, cost {job.cost:.2f}{reused}, "
                         f"peak {format_bytes(job.memory.peak)} ({peaks})")
            lines.extend(f"      {p.name}: {p.chunking()}" for p in job.memory.phases)
        for m, box in zip(self.span.monitors if self.span else (), self.monitors):
            sx, sy = f"{m.width / box.w:.3g}", f"{m.height / box.h:.3g}"
            scale = "" if (box.w, box.h) == (m.width, m.height) else f" (scale {sx if sx == sy else f'{sx} x {sy}'})"
            lines.append(f"  monitor {m.name}: {m.width}x{m.height} px at {monitor_dpi(m)} dpi, cut from "
                         f"{box.w}x{box.h} at ({box.x}, {box.y}) of the span{scale}")
        lines.append(f"peak memory {format_bytes(self.peak)}, cost {self.cost:.2f}")
        return "\n".join(lines)


def model_configs(model: str, revision: str | None = None) -> tuple[PixArtTransformerConfig, T5Config,
                                                                  AutoencoderKLConfig]:
    """The configs of `model` (folder, or hub id at `revision`): read from its config files when present on
    this machine, else the published configs of the known checkpoints. A transformer-only model whose base is
    the published BASE_PIPELINE, not on this machine: its own transformer config with the base's published ones."""
    from studio.checkpoint import MissingBase, read_config, resolve_model_dir
    from studio.pipeline import read_configs

    try:
        return read_configs(resolve_model_dir(model, weights=False, revision=revision))
    except MissingBase as e:
        if not e.default:
            raise
        return read_config(PixArtTransformerConfig, e.transformer / "config.json"), T5Config(), SDXL_VAE
    except CheckpointError:
        repo = split_revision(model)[0]
        if repo in PUBLISHED:
            return PUBLISHED[repo], T5Config(), SDXL_VAE
        raise


def model_sampler(model: str, revision: str | None = None):
    """The sampler `model`'s scheduler_config.json configures (`pipeline.read_scheduler`: a SamplerConfig, or
    an UnrunnableScheduler), or None for a published checkpoint that is not on this machine (or a
    transformer-only model whose published base is not)."""
    from studio.checkpoint import MissingBase, resolve_model_dir
    from studio.pipeline import read_scheduler

    try:
        folder = resolve_model_dir(model, weights=False, revision=revision)
    except MissingBase as e:
        if not e.default:
            raise
        return None
    except CheckpointError:
        if split_revision(model)[0] in PUBLISHED:
            return None
        raise
    return read_scheduler(folder / "scheduler" / "scheduler_config.json")


def check_schedule(sampler, layer: GenerateLayer) -> int:
    """The error the layer's generation would raise before its first step, raised now: its model's scheduler
    is one studio can't run and the layer names no `sampler`, or the schedule can't take its step count. Returns
    the steps it runs (dpm++ with a lambda_min_clipped may run fewer than asked)."""
    from studio import sampling
    from studio.pipeline import UnrunnableScheduler

    config = sampler if layer.sampler is None else sampler.with_sampler(layer.sampler)
    if isinstance(config, UnrunnableScheduler):
        first, *others = config.runnable or [None]
        also = f" (or {', '.join(others)})" if others else ""
        hint = f"; give the layer `sampler: {first}`{also} to sample with one of studio's samplers" if first else ""
        raise ConfigError(f"{config.error}{hint}")
    return len(sampling.timesteps_and_sigmas(config, layer.steps).timesteps)


def choose_generation(width: int, height: int, cfg: PixArtTransformerConfig, vae: AutoencoderKLConfig,
                      strategy: str) -> tuple[str, int, int]:
    """(strategy, gen_width, gen_height) to fill a width x height region with a model of transformer config
    `cfg` and VAE config `vae`. `direct` rounds each side up to a multiple of the latent patch in px, the VAE's
    downsample factor times the patch size (16 for PixArt-Sigma; `pipeline.check_size`): the generation covers
    the region, whose pixels are then a crop of it, not a resampling (a side rounded down would stretch the
    whole picture by a few px). A model without an aspect-ratio bin table has nothing to upscale from: `auto`
    is then `direct`, and `upscale` a ConfigError."""
    native = (cfg.sample_size * vae.downsample_factor) ** 2
    bins = binning.BINS_BY_SAMPLE_SIZE.get(cfg.sample_size)
    if strategy == "auto":
        direct = bins is None or DIRECT_MIN_AREA * native <= width * height <= DIRECT_MAX_AREA * native
        strategy = "direct" if direct else "upscale"
    if strategy == "direct":
        multiple = vae.downsample_factor * cfg.patch_size
        return strategy, -(-width // multiple) * multiple, -(-height // multiple) * multiple
    if bins is None:
        raise ConfigError(f"`strategy: upscale` generates at the model's aspect-ratio bins, and a transformer of "
                          f"sample_size {cfg.sample_size} has none (there are bins for sample_size "
                          f"{', '.join(map(str, sorted(binning.BINS_BY_SAMPLE_SIZE)))}); give the layer "
                          f"`strategy: direct`")
    gen_h, gen_w = binning.closest_bin(height, width, bins)
    return strategy, gen_w, gen_h


def plan_region(box: Box, layer: GenerateLayer, configs: tuple, budget: int | None,
                max_tensor: int | None) -> tuple[str, int, int, GenerationPlan]:
    """(strategy, gen_width, gen_height, memory plan) of a generate layer filling `box` with a model of
    `configs` (transformer, t5, vae), on a device whose largest tensor is `max_tensor` bytes (None: no limit;
    `plan_generation`). `auto` takes the other strategy when the budget can't plan its choice
    and the other generates fewer pixels. A budget that plans neither: the PlanError of the one that needs
    the smaller budget (its `minimum` is then the layer's)."""
    tr, t5, vae = configs
    strategy, gen_w, gen_h = choose_generation(box.w, box.h, tr, vae, layer.strategy)
    try:
        return strategy, gen_w, gen_h, plan_generation(tr, t5, vae, gen_h, gen_w, 1, budget, layer.guided,
                                                       max_tensor=max_tensor)
    except PlanError as e:
        if layer.strategy != "auto" or tr.sample_size not in binning.BINS_BY_SAMPLE_SIZE:
            raise
        first = e
    other = "upscale" if strategy == "direct" else "direct"
    _, alt_w, alt_h = choose_generation(box.w, box.h, tr, vae, other)
    if alt_w * alt_h >= gen_w * gen_h:  # the other way is no smaller: no use trying it
        raise first
    try:
        return other, alt_w, alt_h, plan_generation(tr, t5, vae, alt_h, alt_w, 1, budget, layer.guided,
                                                    max_tensor=max_tensor)
    except PlanError as smaller:
        if first.minimum is None or (smaller.minimum is not None and smaller.minimum <= first.minimum):
            raise
        raise first from None


def relative_cost(cfg: PixArtTransformerConfig, gen_w: int, gen_h: int, steps: int = 20,
                  guidance: bool = True, vae: AutoencoderKLConfig = SDXL_VAE) -> float:
    """Transformer FLOPs of a generation relative to one of the same model (`cfg`, its KV compression
    included, with `vae`) at 1024x1024 with 20 steps and guidance: steps x (2 with guidance) x one pass. Per
    token and layer, ~24 D^2 in the linears and 4 N_kv D in self-attention (scores and weighted values), where
    N_kv is the number of keys: all N tokens, or in the layers with KV compression at ratio r, (h // r)(w // r)
    on an h x w token grid. Like the norms, the compression's depthwise conv (~4 D a token) is not counted."""
    def flops(grid_h, grid_w, steps, batch):
        n, r, layers = grid_h * grid_w, cfg.kv_compress_scale_factor, cfg.num_layers
        compressed = len(set(cfg.kv_compress_layers))
        keys = (layers - compressed) * n + compressed * (grid_h // r) * (grid_w // r)  # summed over the layers
        return steps * batch * (layers * n * 24 * cfg.inner_dim ** 2 + 4 * n * keys * cfg.inner_dim)
    px = vae.downsample_factor * cfg.patch_size  # a token's side
    return flops(gen_h // px, gen_w // px, steps, 2 if guidance else 1) / flops(1024 // px, 1024 // px, 20, 2)


def plan_layout(layout: Layout, model: str | None = None, budget=None, configs=None, device: str | None = None) -> Plan:
    """Resolve every layer's box and plan every generation. `configs` (transformer, t5, vae) skip the
    model lookup and the sampler check (tests); otherwise the layer's model, the layout's, or `model` gives
    them. The layout is checked first (`check.check_layout`: a Layout built in code gets the loader's checks);
    then every layer is planned, and the problems of all of them raised together (`together`), a line each.
    device: as `PixArtSigmaPipeline.from_pretrained`'s (the automatic budget is its free memory); MindSpore's
    device is set once per process, so a plan made before loading chooses it."""
    check_arguments("plan_layout", model)
    check_layout(layout)
    from studio import backend
    backend.setup(device)
    given = budget if budget is not None else layout.memory_budget
    budget_bytes = resolve_budget(given)
    max_tensor = tensor_cap()  # the device's, as the pipeline plans the generation when it runs
    boxes = tuple(resolve(layer.region, layout.canvas, layout.grids) for layer in layout.layers)
    jobs, models, generations = [], {}, {}
    problems = []  # each layer's errors, placed in the layout: all of them are reported at once
    short = []  # (PlanError, layer label, where) of each layer the budget is too small for
    for i, (layer, box) in enumerate(zip(layout.layers, boxes)):
        if not isinstance(layer, GenerateLayer):
            continue
        model_id = layer.model or layout.model or model
        if isinstance(model_id, os.PathLike):  # a Path or any os.PathLike as its text (a HubId stays one)
            model_id = os.fspath(model_id)
        key = None if model_id is None else model_key(model_id)  # the model, however the layer spells it
        label = layer_label(i, layer)
        where = layout.where(f"layers[{i}]")  # 'poster.yaml:14', the layer's line (its source alone in code)
        at = f"{where}: {label}"
        if model_id is None and not configs:
            raise InputError(f"{at}: no model: pass model= (CLI: --model) or set the layout's or the layer's model")
        if configs:
            (tr, t5, vae), sampler = configs, None
        else:
            if key not in models:
                try:
                    models[key] = model_configs(model_id), model_sampler(model_id)
                except StudioError as e:
                    models[key] = None  # said once, at the first layer that names it
                    problems.append(model_problem(e, layout, i, label))
            if models[key] is None:
                continue
            (tr, t5, vae), sampler = models[key]
        steps = layer.steps
        if sampler is not None:
            try:
                steps = check_schedule(sampler, layer)
            except (ConfigError, InputError) as e:
                problems.append(schedule_problem(e, layout, i, label))
        try:
            strategy, gen_w, gen_h, memory = plan_region(box, layer, (tr, t5, vae), budget_bytes, max_tensor)
        except ConfigError as e:  # `strategy: upscale` with a model without bins
            problems.append(placed(e, key_at(layout, i, label, "strategy")))
            continue
        except PlanError as e:
            if e.minimum is None:
                problems.append(placed(e, at))
            else:
                short.append((e, label, where))  # the other layers are planned too: the error names all their needs
            continue
        f = vae.downsample_factor
        # what decides the pixels (the budget, and so the attention blocks, is the layout's for every layer);
        # the negative prompt and the guidance scale only count when guided
        same = (key, layer.prompt, layer.negative_prompt if layer.guided else None, layer.seed, layer.steps,
                layer.guidance if layer.guided else None, layer.sampler, gen_w, gen_h)
        reuses = generations.setdefault(same, i)
        cost = relative_cost(tr, gen_w, gen_h, steps, layer.guided, vae) if reuses == i else 0.0
        jobs.append(GenerateJob(i, box, strategy, gen_w, gen_h, (gen_h // f, gen_w // f),
                                (gen_h // f // tr.patch_size) * (gen_w // f // tr.patch_size), memory,
                                round(cost, 4), None if model_id is None else str(model_id),
                                None if reuses == i else reuses))
    if short:
        from_file = budget is None and layout.memory_budget is not None
        problems.append(too_small(budget_bytes, short, layout.where("memory_budget") if from_file else None))
    if problems:
        raise together(problems)
    return Plan(layout.source, layout.canvas.full_width, layout.canvas.full_height, boxes, tuple(jobs), budget_bytes,
                layout.canvas, layer_kinds(layout), parse_bytes(given) is None, layout.span)


def model_key(model) -> str:
    """The model `model` names, which its generations are grouped and shared by and render's pipelines= matched
    with: a folder by its resolved path, however spelled ('tiny', '/work/tiny', a symbolic link:
    `manifest.model_identity`); a hub id, and a layout's `HubId` whatever the working folder holds, as written
    (never a folder's key: that path is absolute, an 'owner/name' is not)."""
    if isinstance(model, HubId):
        return model
    try:
        return model_identity(os.fspath(model))
    except OSError:  # a name no folder can have (too long): as written, for loading it to say what is wrong
        return os.fspath(model)


def layer_kinds(layout: Layout) -> tuple[tuple[str, str], ...]:
    """(kind, name) of each layer, as `Plan.layers` holds them: ('generate', 'sky'), ('text', '')."""
    return tuple((layer_kind(layer), layer.name) for layer in layout.layers)


def file_dpi(layout: Layout) -> int:
    """The DPI written in the canvas's files: canvas.dpi, except for a span, whose canvas is drawn at its
    densest monitor's pixel density (canvas.dpi then only sizes its pt/mm lengths)."""
    return _files_dpi(layout.canvas, layout.span)


def _files_dpi(canvas: Canvas, span: Span | None) -> int:
    return max(map(monitor_dpi, span.monitors)) if span else canvas.dpi


def placed(e: StudioError, at: str) -> StudioError:
    """`e`, its message placed in the layout: '<at>: <message>', `at` as 'poster.yaml:14: layers[2] (sky)'; its
    class and attributes (a PlanError's minimum, a MissingBase's folder) kept."""
    e.args = (f"{at}: {e}",)
    return e


def model_problem(e: StudioError, layout: Layout, index: int, label: str) -> StudioError:
    """`e`, the error reading the model of layers[index] (labelled `label`), placed at the key of the file that
    names the model: the layer's `model:`, else the layout's; the command line's model's as it is."""
    if layout.layers[index].model:
        return placed(e, key_at(layout, index, label, "model"))
    if layout.model:
        return placed(e, f"{layout.where('model')}: model")
    return e


def schedule_problem(e: StudioError, layout: Layout, index: int, label: str) -> StudioError:
    """`e`, `check_schedule`'s error for layers[index] (labelled `label`), placed: a step count the schedule
    can't run at the layer's `steps:` (its line, or the layer's when it takes the default), in a layout's words
    ('20 must be ...', not the API's 'num_steps=20 ...'); a scheduler studio can't run, at the layer."""
    from studio.sampling import StepsError

    if not isinstance(e, StepsError):
        return placed(e, f"{layout.where(f'layers[{index}]')}: {label}")
    problem = e.reason
    if e.limit is not None:
        problem = f"{layout.layers[index].steps} {e.reason} (the model's scheduler has {e.limit} training steps)"
    e.args = (f"{key_at(layout, index, label, 'steps')}: {problem}",)
    return e


def key_at(layout: Layout, index: int, label: str, key: str) -> str:
    """Generate layer `index`'s `key` as messages name it: 'poster.yaml:14: layers[2] (sky).generate.steps', at
    the key's line, or the layer's when the key is not written (its default)."""
    path = f"layers[{index}].generate.{key}"
    return f"{layout.where(path if path in layout.lines else f'layers[{index}]')}: {label}.generate.{key}"


def together(problems: list[StudioError]) -> StudioError:
    """One error for `problems` (each a line placed in the layout: the layers' in layer order, then the budget's
    shortfall): the first, its class and attributes kept, its message all their lines."""
    first = problems[0]
    first.args = ("\n".join(map(str, problems)),)
    return first


def too_small(budget: int, short: list[tuple[PlanError, str, str]], budget_where: str | None) -> PlanError:
    """One error for the layers `budget` is too small for ((their PlanError, with its `minimum`, their label,
    and where they are: 'poster.yaml:14') in layer order), naming the smallest budget that plans them all, the
    largest of their minima: one layer's own error, at the layer; for several, what each needs, the largest
    first (three of them at most), at the layout's memory_budget when it is the budget used (`budget_where`),
    else at the layer that needs the most."""
    minimum = max(e.minimum for e, _, _ in short)
    if len(short) == 1:
        [(e, label, where)] = short
        return PlanError(f"{where}: {label}: {e}", minimum)
    ranked = sorted(short, key=lambda s: -s[0].minimum)  # sorted() is stable: layer order among equals
    needs = ", ".join(f"{label}{' needs' if n == 0 else ''} {format_bytes(e.minimum, up=True)}"
                      for n, (e, label, _) in enumerate(ranked[:3]))
    if len(ranked) > 3:
        needs += f" and {len(ranked) - 3} more, each at most {format_bytes(ranked[3][0].minimum, up=True)}"
    return PlanError(f"{budget_where or ranked[0][2]}: memory budget {format_bytes(budget)} is too small for "
                     f"{len(short)} generate layers: {needs}; the smallest budget that works is "
                     f"{format_bytes(minimum, up=True)}", minimum)
