"""Text -> image with PixArt-Sigma: prompt -> T5 features -> denoised latents -> VAE -> pixels.

`PixArtSigmaPipeline` takes the reference's argument names, so a diffusers user switches by changing an
import. It loads a pipeline folder in the diffusers layout (or a hub id from the local Hugging Face cache).
"""

import contextlib
import contextvars
import copy
import functools
import json
import os
import sys
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import mindspore as ms
import numpy as np

from studio import backend, binning, memory, sampling, vae_tiling as tiling
from studio.checkpoint import (LOADING, WEIGHTED_COMPONENTS, check_types, check_weights, describe_path, falls_back,
                               read_config, read_json, resolve_model_dir, weight_files)
from studio.memory_plan import GenerationPlan, plan_generation
from studio.errors import CheckpointError, ConfigError, InputError, NumericalError, check_flag, one_line, refuses
from studio.models.t5 import StreamedT5Encoder, T5Config, T5EncoderModel
from studio.models.transformer import PixArtTransformer2DModel, PixArtTransformerConfig
from studio.models.vae import VAE_SWITCHES, AutoencoderKL, AutoencoderKLConfig
from studio.text import MAX_LENGTH, load_tokenizer, preprocess, surrogate_problem, tokenize, truncated_text

COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
OUTPUT_TYPES = ("pil", "np", "latent")
BINNING_ON = "leave resolution binning on (use_resolution_binning=True)"  # the CLI says it in its words (SizeError)
DTYPES = {"float32": ms.float32, "fp32": ms.float32, "float16": ms.float16, "fp16": ms.float16,
          "bfloat16": ms.bfloat16, "bf16": ms.bfloat16}
# studio's fused CPU kernels are fp32 only, and MindSpore's fp16 CPU kernels are slow and take several times
# their input in temporaries (an fp16 add or SiLU 9-10x its input's bytes; fp32's, its output only). The tiny
# checkpoint at 1024^2, 4 steps, denoised in 4.4-5.1 s (fp32: 0.9-1.35 s) and decoded in 5.0-6.6 s (1.5-2.2 s)
# in two runs; at 2048^2 its peak RSS was 10.7 GiB denoising (fp32: 8.6) and 16.5 GiB decoding (13.4).
FLOAT16_ON_CPU = ("studio: float16 on the CPU is about 4x slower than float32 (MindSpore's float16 kernels) and "
                  "saves only the weights' memory: its activations take more than float32's")


@dataclass
class PipelineOutput(Mapping):
    """`images`: PIL images ("pil"), float array (N, H, W, 3) in [0, 1] ("np"), or latents (N, 4, h, w).

    As diffusers' output, an ordered mapping of its fields ({"images": ...}) that an integer also indexes:
    out["images"], out[0], out.to_tuple(), dict(out), "images" in out. `seed` is an attribute only, studio's
    own: the mapping and the tuple stay the reference's, as return_dict=False's (images,)."""

    images: list | np.ndarray
    seed: int | None = None  # the seed that drew the initial noise; None when `latents` or a generator did

    def _fields(self) -> dict:
        return {"images": self.images}

    def __getitem__(self, key):
        return self._fields()[key] if isinstance(key, str) else self.to_tuple()[key]

    def __iter__(self):
        return iter(self._fields())

    def __len__(self) -> int:
        return len(self._fields())

    def __contains__(self, key) -> bool:  # a key, not an index: Mapping's would take out[0] as one
        return key in self._fields()

    def to_tuple(self) -> tuple:
        return tuple(self._fields().values())


def as_dtype(dtype) -> ms.Type:
    """A MindSpore type from one (mindspore.float16), or from a name ("float16", "fp16") or a torch/numpy dtype
    (torch.float16); InputError unless float32, float16 or bfloat16, here rather than at the first call."""
    if isinstance(dtype, ms.dtype.Type):
        found = dtype if dtype in DTYPES.values() else None
    else:
        name = dtype if isinstance(dtype, str) else (getattr(dtype, "__name__", None)  # np.float16
                                                     or str(dtype).removeprefix("torch."))  # torch.float16
        found = DTYPES.get(name)
    if found is None:
        raise InputError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)} (or mindspore.float32, float16, "
                         "bfloat16)")
    return found


def as_prompts(value, name: str) -> list[str]:
    """A prompt argument as a list of prompts: a string is one."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(p, str) for p in value):
        value = list(value)
    else:
        raise InputError(f"{name} must be a string or a non-empty list of strings, got {value!r:.80}")
    for p in value:
        if problem := surrogate_problem(p):  # the tokenizer raises a TypeError
            raise InputError(f"{name} {p!r:.80}: {problem}")
    return value


def check_max_sequence_length(value) -> None:
    """InputError unless `value` is a token count from 1 to 300 (the memory plan bounds captions by 300)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 1 <= value <= MAX_LENGTH:
        raise InputError(f"max_sequence_length must be an integer from 1 to {MAX_LENGTH} (PixArt-Sigma's caption "
                         f"length), got {value!r:.80}")


def torch_noise(generator, shape: tuple, dtype: ms.Type) -> np.ndarray:
    """The initial noise the reference draws from a torch.Generator, or a list of one per image (`check_generator`):
    torch.randn on the generator's device in the pipeline's dtype, as diffusers' `randn_tensor`."""
    import torch

    torch_dtype = {ms.float16: torch.float16, ms.bfloat16: torch.bfloat16}.get(dtype, torch.float32)
    if not isinstance(generator, (list, tuple)):
        noise = torch.randn(shape, generator=generator, device=generator.device, dtype=torch_dtype)
        return noise.float().cpu().numpy()
    return np.concatenate([torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=torch_dtype)
                           .float().cpu().numpy() for g in generator])


def check_generator(generator, images: int) -> None:
    """InputError unless `generator` is a torch.Generator or a list (tuple) of one per image."""
    torch = sys.modules.get("torch")  # a torch.Generator was made with torch imported: no import of a dev extra
    several = isinstance(generator, (list, tuple))
    if torch is None or not all(isinstance(g, torch.Generator) for g in (generator if several else [generator])):
        raise InputError(f"generator must be a torch.Generator or a list of {images} (one per image), got "
                         f"{generator!r:.80}")
    if several and len(generator) != images:
        raise InputError(f"{len(generator)} generators for {images} image{'s' * (images != 1)}; pass one per image, "
                         "or one")


def check_count(name: str, value) -> None:
    """InputError unless `value` is a positive integer (numpy's too; not a bool)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r:.80}")


def numbers_array(value, what: str) -> np.ndarray:
    """`value`, a numpy, torch or MindSpore array of numbers (bool, int or float), as numpy; else an InputError
    '{what}, got <value>'."""
    try:
        array = None if value is None else _numpy(value)
    except (TypeError, ValueError):  # a ragged list
        array = None
    if array is None or array.dtype.kind not in "biuf":  # None, text, objects
        raise InputError(f"{what}, got {value!r:.80}")
    return array


def check_binary_mask(mask: np.ndarray, name: str) -> None:
    """InputError unless every value of `mask` is 0 or 1 (False or True): the reference adds a fractional
    mask to the attention scores as a bias, which studio's keep-or-drop masks can't do."""
    bad = ~np.isin(mask, (0, 1))
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"{name} must hold only 0 and 1 (or False and True; 1 for tokens, 0 for padding): "
                         f"{name}[{', '.join(map(str, first))}] is {mask[first]:g}")


def as_latents(latents, shape: tuple) -> np.ndarray:
    """A call's `latents=` (numpy, torch or MindSpore) as float32 numpy; InputError unless of `shape`, the
    generation's (N, C, h, w), and finite as float32."""
    given = numbers_array(latents, "latents must be a numpy, torch or MindSpore array of numbers")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused below
        latents = given.astype(np.float32, copy=False)
    if latents.shape != shape:
        raise InputError(f"latents have shape {latents.shape}, expected {shape} (N, C, height/8, width/8 "
                         f"of the generation size)")
    bad = ~np.isfinite(latents)
    if bad.any():  # here, not as a NumericalError blaming overflow after the whole run
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"latents must be finite float32 numbers (magnitude up to {np.finfo(np.float32).max:.2g}): "
                         f"latents[{', '.join(map(str, first))}] is {float(given[first]):g} ({bad.sum()} of "
                         f"{bad.size} values are not)")
    return latents


def default_size(tr: PixArtTransformerConfig, vae: AutoencoderKLConfig, height: int | None,
                 width: int | None) -> tuple[int, int]:
    """height, width, each defaulting to the checkpoint's native size (sample_size latent px), as the reference."""
    native = tr.sample_size * vae.downsample_factor
    return height or native, width or native


def generation_size(cfg: PixArtTransformerConfig, height: int, width: int, use_binning: bool) -> tuple[int, int]:
    """The size the model generates at for a requested height x width (px): its aspect-ratio bin, or as is."""
    if use_binning:
        return binning.closest_bin(height, width, binning.bins_for(cfg.sample_size))
    return height, width


def read_configs(folder: Path) -> tuple[PixArtTransformerConfig, T5Config, AutoencoderKLConfig]:
    """The three model configs of a pipeline folder, without reading any weights."""
    return (read_config(PixArtTransformerConfig, folder / "transformer" / "config.json"),
            read_config(T5Config, folder / "text_encoder" / "config.json"),
            read_config(AutoencoderKLConfig, folder / "vae" / "config.json"))


def read_scheduler(path: Path) -> "sampling.SamplerConfig | UnrunnableScheduler":
    """A pipeline folder's scheduler/scheduler_config.json as the sampler it configures, of the scheduler class
    the folder's model_index.json names (the file's `_class_name` when it names none), as diffusers builds it;
    one studio can't run (another scheduler class, or settings studio doesn't implement) as an
    `UnrunnableScheduler`, which a call's sampler= replaces. A file of a class studio implements with a key none
    of studio's classes takes (a typo, or a newer diffusers' setting) is a ConfigError: no sampler= would read it."""
    d = read_json(path)
    check_types(sampling.SamplerConfig, {k: v for k, v in d.items() if k not in ("sampler", "given")}, path,
                min_int=None)
    entry = read_json(path.parent.parent / "model_index.json").get("scheduler")
    named = entry[1] if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], str) else None
    where = path
    own = d.get("_class_name", named)
    if own in sampling.SAMPLERS.values():  # studio knows its every key; another class's file drops its own (_as_class)
        sampling.check_keys(d, own, path)
    if named is not None and own != named:  # another class's file: read as sampler= reads it
        d, where = _as_class(d, named), f"{path} (read as model_index.json's {named})"
    d = {"_class_name": named, **d}
    try:
        return sampling.SamplerConfig.from_scheduler_config(d, where)
    except ConfigError as e:
        return UnrunnableScheduler(where, d, e)


def _as_class(config: dict, class_name: str) -> dict:
    """A scheduler config read as `class_name`'s, as diffusers' `from_config`: of the keys some sampler of studio's
    takes (the others are another class's), from_scheduler_config keeps those of `class_name`."""
    known = {k: v for k, v in config.items() if k in sampling.KNOWN_KEYS or k == "_use_default_values"}
    return {**known, "_class_name": class_name}


class UnrunnableScheduler:
    """`pipe.sampler` when scheduler_config.json holds a scheduler studio can't run. `with_sampler(name)` (a call's
    sampler=) gives one of studio's samplers with the settings of the file it takes, as diffusers'
    `NewScheduler.from_config(config)`; a call without sampler= raises `problem`: the file's `error` (said of
    `path`), naming the samplers that take the file's settings when the error is a class or setting studio
    doesn't implement (a wrong value is the file's to fix, whichever sampler reads it)."""

    def __init__(self, path: Path | str, config: dict, error: ConfigError):
        self.path = path
        self.config = config
        self.error = error
        # the samplers to offer: those taking the file, when another sampler is the way round its error
        self.runnable = [name for name in sampling.SAMPLERS
                         if isinstance(error, sampling.Unimplemented) and self._takes(name)]
        quoted = [f"'{name}'" for name in self.runnable]
        listed = " or ".join(filter(None, [", ".join(quoted[:-1]), *quoted[-1:]]))
        hint = (f"; pass sampler={listed} (CLI: --sampler) to sample with one of studio's samplers instead"
                if quoted else "")
        self.problem = f"{error}{hint}"

    def _takes(self, name: str) -> bool:
        try:
            self.with_sampler(name)
        except ConfigError:
            return False
        return True

    def with_sampler(self, name: str) -> sampling.SamplerConfig:
        if name not in sampling.SAMPLERS:
            return sampling.SamplerConfig().with_sampler(name)  # its InputError
        try:
            return sampling.SamplerConfig.from_scheduler_config(_as_class(self.config, sampling.SAMPLERS[name]),
                                                                self.path)
        except ConfigError as e:
            raise ConfigError(f"{e} (sampler={name!r} takes it from this file)") from None



def plan(path_or_id, height: int | None = None, width: int | None = None, images: int = 1, guidance_scale: float = 4.5,
         memory_budget=None, use_resolution_binning: bool = True, dtype="float32",
         keep_text_encoder: bool = False, vae_tiling: bool | None = None,
         revision: str | None = None, device: str | None = None, output_type: str = "pil") -> GenerationPlan:
    """The memory plan of a generation, from the configs alone (no weights are read).

    height, width: px, by default the checkpoint's native size; memory_budget: bytes, a string like "6GiB", or
    None for automatic (free memory minus a margin);
    vae_tiling: None (tile when the untiled decode would not fit the budget, or, on the CPU, one of its
    feature maps would exceed MAX_TENSOR), True or False.
    Raises PlanError with the smallest workable budget when it can't be met, or when a tiled decode's
    feature maps go to temporary files and their disk lacks room ($STUDIO_TMPDIR). A published checkpoint that is
    not on this machine is planned from its published configs, as `studio plan` does. revision: of a hub id.
    device: as `from_pretrained`'s, chosen here when the plan is made first (it reads the device's memory and
    MindSpore's device is set once per process). output_type: as the call's; with binning, the resize to
    height x width after decoding is planned for it (`binning.resize_bytes`).
    """
    from studio.plan import model_configs

    check_count("images", images)
    check_flag("use_resolution_binning", use_resolution_binning)
    check_flag("keep_text_encoder", keep_text_encoder)
    tr, t5, vae = model_configs(os.fspath(path_or_id), revision)
    height, width = default_size(tr, vae, height, width)
    gen_h, gen_w = generation_size(tr, height, width, use_resolution_binning)
    check_size(tr, vae, gen_h, gen_w)
    backend.setup(device)  # the device decides the automatic budget and the dtype's size (bf16 runs in fp32 on the CPU)
    budget = memory.resolve_budget(memory_budget)
    itemsize = 2 if backend.compute_dtype(as_dtype(dtype)) in (ms.float16, ms.bfloat16) else 4
    result = plan_generation(tr, t5, vae, gen_h, gen_w, images, budget, guidance_scale > 1.0, itemsize,
                             keep_text_encoder, vae_tiling, max_tensor=memory.tensor_cap(), output=(height, width),
                             output_type=output_type)
    tiling.check_map_disk(vae, result.phases[-1].tiles)
    return result


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """Decoded pixels in about [-1, 1] -> [0, 1], in place (returns `images`)."""
    images *= 0.5
    images += 0.5
    return np.clip(images, 0.0, 1.0, out=images)


class SizeError(InputError):
    """A generation size that is not a multiple of the latent patch. `problem` says so without the way out the
    message ends with (BINNING_ON, in the API's words), for a caller that says it in its own (the CLI)."""

    def __init__(self, problem: str):
        super().__init__(f"{problem}, or {BINNING_ON}")
        self.problem = problem


def check_size(tr: PixArtTransformerConfig, vae: AutoencoderKLConfig, height: int, width: int) -> None:
    """SizeError unless height and width are multiples of the latent patch in px: the VAE's downsample factor
    times the transformer's patch size (16 for PixArt-Sigma)."""
    multiple = vae.downsample_factor * tr.patch_size
    if height % multiple or width % multiple:
        raise SizeError(f"size {width}x{height} is not a multiple of {multiple} px; pick a multiple of {multiple}")


def size_conditions(cfg: PixArtTransformerConfig, height: int, width: int, batch: int) -> tuple:
    """(resolution (B, 2), aspect ratio (B, 1)) of the generation size for transformers conditioned on size
    (PixArt-alpha's 1024 px checkpoint; its pipeline passes them so), else ()."""
    if not cfg.with_size_conditions:
        return ()
    return (ms.Tensor(np.tile([[float(height), float(width)]], (batch, 1)), ms.float32),
            ms.Tensor(np.full((batch, 1), height / width), ms.float32))


def real_tokens(ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and mask (B, L) cut after the last position that is a real token in some row (at least 1).
    Tokens are padded on the right."""
    keep = max(1, int(mask.sum(axis=1).max()))
    return ids[:, :keep], mask[:, :keep]


def trim_caption(features: ms.Tensor, mask: ms.Tensor) -> tuple[ms.Tensor, ms.Tensor]:
    """Drop the caption positions after the last one any row attends to: (B, L, C), (B, L) -> (B, keep, C), (B, keep).

    Those keys are masked in every row and get weight exp(-inf) = 0 (the reference's -10000 bias underflows to
    0 as well): dropping them is exact, and makes cross-attention up to 300 / keep times cheaper. Tokenized
    prompts are padded on the right, so `keep` is the longest prompt's token count; a given mask may also hold
    zeros before its last one (a token masked out, left padding), which is why the cut is not at sum(mask).
    One host read per generation, outside the sampling loop.
    """
    used = np.flatnonzero(mask.astype(ms.int32).max(axis=0).asnumpy())  # positions some row attends to
    keep = int(used[-1]) + 1 if used.size else 1
    return features[:, :keep], mask[:, :keep]


def initial_noise(seed: int, shape: tuple) -> np.ndarray:
    """Standard normal float32 noise from numpy's PCG64: the same for a seed on every machine and process."""
    return np.random.Generator(np.random.PCG64(seed)).standard_normal(shape, dtype=np.float32)


# MindSpore's CPU kernels are not safe to call from two threads at once (two threads generating crashed the
# process): the pipeline's entry points run one at a time per process, callers from other threads wait.
_MINDSPORE = threading.RLock()  # re-entrant: a call decodes through the public `decode`

# (pipeline, embedding cache) lent for this thread's (or task's) calls on that pipeline (`lent_embedding_cache`)
_LENT_CACHE: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("lent_embedding_cache", default=None)


@contextlib.contextmanager
def lent_embedding_cache(pipe: "PixArtSigmaPipeline", cache):
    """Within this block, `pipe`'s calls and `encode_ahead` in this thread read and fill `cache` in place of
    `pipe.embedding_cache`, which is left as it is: render's cache for a layout's prompts, which calls on the
    same pipeline from other threads neither see nor clear."""
    token = _LENT_CACHE.set((pipe, cache))
    try:
        yield
    finally:
        _LENT_CACHE.reset(token)


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _outside_studio() -> int:
    """warnings.warn's stacklevel for the caller's first frame outside studio: the user's line, however deep the
    call (what Python 3.12's skip_file_prefixes does; studio runs on 3.10)."""
    frame, level = sys._getframe(1), 1  # the frame that warns
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def _one_at_a_time(method):
    @functools.wraps(method)
    def locked(*args, **kwargs):
        with _MINDSPORE:
            return method(*args, **kwargs)
    return locked


def variant_files(folder: Path, variant: str | None, warn: bool = True) -> dict[str, list[Path]]:
    """Each weighted component's safetensors files for `variant` (`weight_files`); a component without them
    loads its plain ones, as diffusers (warned about with `warn`), but a variant no component has is an error,
    as there."""
    files = {c: weight_files(folder / c, variant) for c in WEIGHTED_COMPONENTS}
    plain = {c: f for c, f in files.items() if falls_back(f, variant)}
    if plain and len(plain) == len(files):
        raise CheckpointError(f"{folder}: no component has {variant} weights (*.{variant}.safetensors); pass no "
                              "variant to load the plain ones")
    for c, f in plain.items() if warn else ():
        warnings.warn(f"studio: {folder / c} has no {variant} weights; loading its plain ones ({f[0].name}"
                      f"{', ...' if len(f) > 1 else ''}), as diffusers does", stacklevel=4)
    return files


def check_folder(folder: Path, variant: str | None = None, warn: bool = True):
    """Everything of a pipeline folder but its weights, checked as loading it does first (components, configs,
    scheduler, tokenizer, the weight files' names and shard indexes, and every weight file's header: each
    component's keys, shapes and dtypes against its config; `warn`: a variant's fallback to plain files):
    CheckpointError/ConfigError at the first problem. Returns (vae config, sampler, tokenizer)."""
    index = read_json(folder / "model_index.json")
    for c in COMPONENTS:
        what = describe_path(folder / c) if c in index else "missing"
        if what == "missing":
            raise CheckpointError(f"{folder}: component '{c}' is missing (a PixArt-Sigma pipeline has "
                                  f"{', '.join(COMPONENTS)})")
        if what != "a folder":
            raise CheckpointError(f"{folder / c}: is {what}, where the '{c}' component's folder should be")
    transformer_config, t5_config, vae_config = read_configs(folder)
    sampler = read_scheduler(folder / "scheduler" / "scheduler_config.json")
    tokenizer = load_tokenizer(folder / "tokenizer", t5_config.vocab_size)
    files = variant_files(folder, variant, warn)
    # the headers of every file, before any tensor is read (the models built here allocate no parameter): a bad
    # VAE fails the load at once, not after minutes of XL transformer weights; the text encoder's are read at
    # the first prompt
    for model, component in [(PixArtTransformer2DModel(transformer_config), "transformer"),
                             (AutoencoderKL(vae_config), "vae"), (T5EncoderModel(t5_config), "text_encoder")]:
        check_weights(model, files[component])
    return vae_config, sampler, tokenizer


class _LoadProgress:
    """Calls progress(bytes read, total) as tensors load (`load_weights`' progress(bytes)); total is the size
    of the components' weight files (headers included: `done` reports the end)."""

    def __init__(self, progress, components: list[Path], variant: str | None):
        self.progress, self.read = progress, 0
        self.total = sum(f.stat().st_size for c in components for f in weight_files(c, variant)) if progress else 0
        if progress is not None:
            progress(0, self.total)

    def __call__(self, nbytes: int) -> None:
        if self.progress is not None:
            self.read += nbytes
            self.progress(min(self.read, self.total), self.total)

    def done(self) -> None:
        if self.progress is not None:
            self.progress(self.total, self.total)


TORCH_DEVICES = {"CPU": "cpu", "GPU": "cuda", "Ascend": "npu"}  # MindSpore's device targets as torch names them
_OFFLOAD = ("the text encoder is released before denoising, and memory_budget= bounds the rest (chunked attention, "
            "tiled decoding)")
_REFERENCE_ONLY = {
    "enable_model_cpu_offload": _OFFLOAD, "enable_sequential_cpu_offload": _OFFLOAD,
    "enable_attention_slicing": "attention is chunked from memory_budget= (exactly, whenever it would not fit)",
    "disable_attention_slicing": "attention is chunked from memory_budget= only when it would not fit",
    "enable_xformers_memory_efficient_attention": "attention is chunked from memory_budget=",
    "disable_xformers_memory_efficient_attention": "attention is chunked from memory_budget=",
    **{f"{verb}_vae_{what}": VAE_SWITCHES[f"{verb}_{what}"] for verb in ("enable", "disable")
       for what in ("tiling", "slicing")},  # the pipeline's names of the VAE's switches
    "set_progress_bar_config": "it draws no progress bar; pass progress=(phase, done, total) or callback=(step, total)"
                               " to a call",
}


class PixArtSigmaPipeline:
    def __init__(self, model_dir: Path, transformer: PixArtTransformer2DModel, vae: AutoencoderKL, tokenizer,
                 sampler: sampling.SamplerConfig, dtype=ms.float32, vae_dtype=ms.float32,
                 variant: str | None = None,
                 keep_text_encoder: bool = False):
        self.model_dir = model_dir
        self.transformer = transformer
        self.vae = vae
        self.tokenizer = tokenizer
        self.sampler = sampler
        self.dtype = dtype
        self.vae_dtype = vae_dtype
        self.variant = variant
        self.keep_text_encoder = keep_text_encoder
        self._text_encoder: T5EncoderModel | None = None
        self.embedding_cache = None  # optional T5 feature cache, see encode_prompt
        self._auto_budget: int | None = None  # the automatic budget, from the first call without one (`_budget`)
        # set for studio's tiny random checkpoint, whose output is noise
        self.tiny_notice: str | None = read_json(model_dir / "model_index.json").get("_studio_tiny")

    @property
    def scheduler(self):
        raise AttributeError("studio's pipeline has no scheduler object: its sampler settings are `pipe.sampler`; "
                             "pass sampler='dpm++', 'ddim' or 'euler' to a call to change the sampler")

    @scheduler.setter
    def scheduler(self, value):
        raise InputError("studio's pipeline takes no scheduler object (diffusers' pipe.scheduler = ...): pass "
                         "sampler='dpm++', 'ddim' or 'euler' to a call; the settings of scheduler_config.json carry "
                         "over, as with diffusers' from_config")

    @classmethod
    def from_pretrained(cls, path_or_id, dtype=None, variant: str | None = None, device: str | None = None,
                        keep_text_encoder: bool = False, torch_dtype=None, revision: str | None = None,
                        cache_dir=None, local_files_only: bool = False,
                        progress: Callable[[int, int], None] | None = None,
                        use_safetensors: bool | None = None, transformer=None) -> "PixArtSigmaPipeline":
        """Load a pipeline folder (or a hub id in the local Hugging Face cache / downloadable).

        dtype: "float32" (default) | "float16" | "bfloat16", or a MindSpore type; `torch_dtype` is the
        reference's name for it (torch.float16 is read by name). variant: e.g. "fp16" for
        `*.fp16.safetensors` (a component without them loads its plain files, with a warning). device: "CPU",
        "GPU", "Ascend" or e.g. "GPU:1" (default $STUDIO_DEVICE, else MindSpore's), once per process. For a hub id, as
        diffusers: revision (a branch, tag or commit hash; default "main"), cache_dir (the hub cache) and
        local_files_only (no download). Every config, the tokenizer and the weight files' names are checked
        before any weight is read. The text encoder is loaded when a prompt is encoded and released
        afterwards unless keep_text_encoder=True. A scheduler_config.json studio can't run loads, and is an
        error at a call without sampler=. progress(done, total): bytes of the transformer's and VAE's weight
        files read, after each tensor. use_safetensors: the reference's switch; studio reads only safetensors.
        transformer: as diffusers' keyword, the transformer to load in place of the pipeline's: the folder or hub id
        of a model whose transformer/ it is (e.g. "PixArt-alpha/PixArt-Sigma-XL-2-2K-MS"), or a transformer folder
        (holding config.json); a model object is not taken. A model of a transformer only (no model_index.json)
        needs no base named: it is completed with $STUDIO_BASE_PIPELINE, else BASE_PIPELINE (`resolve_model_dir`).

        Loads from several threads run one at a time. On the CPU, the process's first load (or `plan`) lowers
        the calling thread's priority to nice 19 for good (`backend.setup`), and the threads and subprocesses that
        thread starts afterwards inherit it: a service keeps its main thread's priority with STUDIO_CPU_NICE=0, or
        by loading from a worker thread.
        """
        if transformer is not None and not isinstance(transformer, (str, os.PathLike)):
            raise InputError(f"transformer={type(transformer).__name__}(...): studio loads the transformer itself; "
                             "pass the folder or hub id it was loaded from (e.g. transformer=\"PixArt-alpha/"
                             "PixArt-Sigma-XL-2-2K-MS\")")
        if dtype is not None and torch_dtype is not None:
            raise InputError("pass dtype or torch_dtype (the reference's name for it), not both")
        check_flag("keep_text_encoder", keep_text_encoder)
        if use_safetensors is False:
            raise InputError("use_safetensors=False: studio reads only safetensors files (pickle weights can run "
                             "code when loaded)")
        # one load at a time (`LOADING`): transformers' lazy import is not thread-safe, and loading sets
        # process-wide state (the device, the libraries' log levels) that two loads overlapping would leave changed
        with LOADING:
            backend.setup(device)
            backend.give_back_memory(collect=False)  # a model released before (`del pipe`): not resident now
            asked = as_dtype(next((d for d in (dtype, torch_dtype) if d is not None), "float32"))
            dtype = backend.widened(asked, stacklevel=2)
            if dtype == ms.float16 and backend.on_cpu():  # said: a user picks fp16 for speed as on a GPU
                warnings.warn(FLOAT16_ON_CPU, stacklevel=2)
            folder = resolve_model_dir(path_or_id, variant=variant, revision=revision, cache_dir=cache_dir,
                                       local_files_only=local_files_only, transformer=transformer)
            # everything but the weights first: a bad file fails the load at once, not after minutes of XL weights
            vae_config, sampler, tokenizer = check_folder(folder, variant)
            read = _LoadProgress(progress, [folder / c for c in ("transformer", "vae")], variant)
            transformer = PixArtTransformer2DModel.from_pretrained(folder / "transformer", dtype, variant, read)
            # a VAE whose config says force_upcast (diffusers' default; PixArt-Sigma publishes false) decodes in fp32
            vae_dtype = ms.float32 if vae_config.force_upcast else dtype
            vae = AutoencoderKL.from_pretrained(folder / "vae", vae_dtype, variant, read)
            read.done()
            return cls(folder, transformer, vae, tokenizer, sampler, dtype, vae_dtype, variant, keep_text_encoder)

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent pixel (8 for the SDXL VAE), as the reference's attribute."""
        return self.vae.config.downsample_factor

    @property
    def device(self) -> str:
        """The reference's `pipe.device`, as torch spells this process's MindSpore device: "cpu", "cuda" or "npu"
        (a string, not a torch.device: torch is not needed). `pipe.to(pipe.device)` returns the pipeline, and
        `torch.Generator(device=pipe.device)` on the CPU draws the reference's CPU noise."""
        return TORCH_DEVICES[backend.device_target()]

    def to(self, device=None):
        """The reference's `pipe.to(device)`: MindSpore's device is chosen once per process, so `device` ('cpu',
        'cuda', 'cuda:1', 'npu', or studio's 'CPU', 'GPU:1', 'Ascend') must be the one this pipeline loaded on
        (choose it with from_pretrained(device=) or $STUDIO_DEVICE). Returns the pipeline."""
        name = str(device)
        kind, _, number = name.partition(":")
        kind = {torch: ours for ours, torch in TORCH_DEVICES.items()}.get(kind, kind)
        number = "" if kind == "CPU" and number == "0" else number  # torch's 'cpu:0' is the CPU
        if not isinstance(device, str) and not hasattr(device, "type") or kind not in ("CPU", "GPU", "Ascend"):
            raise InputError(f"pipe.to({device!r}): the dtype is chosen at load (from_pretrained(dtype=)); a device "
                             "is 'cpu', 'cuda[:N]', 'npu' or 'CPU', 'GPU[:N]', 'Ascend[:N]'")
        backend.setup(kind + (f":{number}" if number else ""))
        return self

    def __reduce__(self):
        raise TypeError("a PixArtSigmaPipeline cannot be pickled (its MindSpore operators cannot): load it in each "
                        "worker process (PixArtSigmaPipeline.from_pretrained); copy.deepcopy copies it in one")

    # copy and deepcopy as for any object: not through __reduce__, which refuses pickle
    def __copy__(self):
        copied = object.__new__(type(self))
        copied.__dict__.update(self.__dict__)
        return copied

    def __deepcopy__(self, memo: dict):
        copied = memo[id(self)] = object.__new__(type(self))
        copied.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return copied

    def __getattr__(self, name: str):
        if name in _REFERENCE_ONLY:  # the reference's memory and progress switches: said what studio does instead
            raise AttributeError(f"studio's pipeline has no {name}(): {_REFERENCE_ONLY[name]}")
        return object.__getattribute__(self, name)  # the usual error (or a property's own)

    # -- text --------------------------------------------------------------------------------------------

    @property
    def text_encoder(self) -> T5EncoderModel:
        if self._text_encoder is None:
            self._text_encoder = T5EncoderModel.from_pretrained(self.model_dir / "text_encoder", self.dtype,
                                                                self.variant)
        return self._text_encoder

    def _encoder(self, stream: bool):
        """The T5 encoder to run: loaded whole (and kept until released), or streamed block by block from
        its files when the memory plan says so and it isn't loaded already."""
        if stream and self._text_encoder is None:
            return StreamedT5Encoder(self.model_dir / "text_encoder", self.dtype, self.variant)
        return self.text_encoder

    def release_text_encoder(self) -> None:
        if self._text_encoder is None:  # not loaded (every prompt from the embedding cache): skip a ~0.2 s gc
            return
        self._text_encoder = None
        backend.give_back_memory()

    @_one_at_a_time
    def encode_prompt(self, prompts: str | list[str], *, max_sequence_length: int = 300,
                      stream: bool | None = None) -> tuple[ms.Tensor, ms.Tensor]:
        """Prompts (a string is one) -> T5 features (B, L, C) and their mask (B, L), 1 = token; L is the
        longest prompt's token count (at most max_sequence_length).

        The reference pads every prompt to max_sequence_length tokens and encodes the padding too, but the
        denoiser never attends to padded positions, and T5's features at real positions don't depend on the
        padding after them (padded keys are masked; the relative position bias depends on distances only),
        so only the tokens up to the longest prompt are encoded: a 20-token prompt costs 20/300 of the
        reference's encoder time, with the same real-position features
        (tests/test_pipeline.py::test_encode_prompt_encodes_real_tokens_only).

        Each prompt is encoded alone, so that its features are the same bits whatever it is encoded with
        (its negative prompt, a batch's other prompts, the cache): `studio generate`, `render` and `batch`
        make the same file from the same layout. With `self.embedding_cache` set, or one lent to the thread
        (`lent_embedding_cache`), a cached prompt skips the text encoder: get(key) -> (features (1, L, C)
        float32, mask (1, L)) or None; put(key, features, mask); `key in cache` for `encode_ahead`; `key` a
        dict of the text settings, to which the cache adds the model's identity (studio.batch.EmbeddingCache).

        `stream` runs the encoder block by block from its files (`StreamedT5Encoder`: one block's weights
        in memory, the same features) unless it is loaded already, each block read once for all prompts;
        False loads it whole. None (default): as the pipeline is set, loaded and kept with keep_text_encoder,
        else streamed. An encoder loaded here is released afterwards unless the pipeline keeps it.

        max_sequence_length and stream are keyword-only: the reference's second argument is
        do_classifier_free_guidance, which would otherwise be taken for a length of 1 token.
        """
        max_sequence_length = _scalar(max_sequence_length)
        check_max_sequence_length(max_sequence_length)
        check_flag("stream", stream, none="as the pipeline is set")
        stream = not self.keep_text_encoder if stream is None else stream
        try:
            rows = self._caption_rows(as_prompts(prompts, "prompt"), max_sequence_length, stream)
        finally:  # an interrupted call (Ctrl-C, a raising callback) leaves no whole T5 behind either
            if not self.keep_text_encoder:
                self.release_text_encoder()
        return Captions.joined(rows, self.dtype)  # (B, L, C), (B, L)

    def _caption_rows(self, prompts: list[str], max_sequence_length: int, stream: bool) -> list["Captions"]:
        """Each prompt's features (1, L, C) and mask (1, L), L its own token count: `encode_prompt`'s rows. A
        cached row that is not this prompt's shape (L tokens, C = T5's d_model) or mask is damaged: a miss,
        encoded again and put back in its place."""
        entries = self._prompt_keys(prompts, max_sequence_length)
        cache, channels = self._embedding_cache(), self._t5_config.d_model
        # prompts of the same ids (one given for several images, the default negative "" of each, 'a dog' and
        # 'A  Dog') are looked up and encoded once, at the first of them: each encoding is a pass over all of T5
        first = {}
        for i, (ids, _, _) in enumerate(entries):
            first.setdefault(ids.tobytes(), i)
        rows = [None] * len(entries)
        for i in first.values():
            ids, mask, key = entries[i]
            cached = None if cache is None else cache.get(key)
            fits = cached is not None and cached[0].shape == (1, ids.shape[1], channels) \
                and np.array_equal(cached[1], mask)
            if fits:
                rows[i] = (cached[0].astype(np.float32, copy=False), mask)  # the tokenizer's mask
        misses = [(i, *entries[i]) for i in first.values() if rows[i] is None]
        if misses:
            self._encode_misses(misses, rows, stream, cache)
        return [Captions(*rows[first[ids.tobytes()]]) for ids, _, _ in entries]

    def _embedding_cache(self):
        """The embedding cache of this thread's calls: the one lent to it (`lent_embedding_cache`), else the
        pipeline's (None: none)."""
        lent = _LENT_CACHE.get()
        return lent[1] if lent is not None and lent[0] is self else self.embedding_cache

    def _prompt_keys(self, prompts: list[str], max_sequence_length: int) -> list[tuple]:
        """(ids (1, L), mask (1, L), cache key) of each prompt; a prompt cut at max_sequence_length tokens is
        warned about (the reference logs it), naming what was dropped."""
        t5 = self._t5_config
        entries = []
        for text in (preprocess(p) for p in prompts):
            ids, mask = real_tokens(*tokenize(self.tokenizer, [text], max_sequence_length))
            if ids.shape[1] == max_sequence_length and (dropped := truncated_text(self.tokenizer, text,
                                                                                  max_sequence_length)):
                warnings.warn(f"studio: '{one_line(_excerpt(text, 40))}' is cut at {max_sequence_length} tokens, "
                              f"T5's limit here; dropped: '{one_line(_excerpt(dropped, 80))}'",
                              stacklevel=_outside_studio())
            # the attention blocks the budget gives T5 change the features' last bits, so they are part of the key
            chunks = memory.attention_chunks(t5.num_heads, ids.shape[1], ids.shape[1], t5.d_kv,
                                             memory.current_attention_budget())
            # the ids, not the text: the features are the ids' (the tokenizer's files are in the cache's identity),
            # so 'a dog', 'A DOG ' and 'a  dog' share an entry, and another tokenizer package cutting the same text
            # differently gets its own
            key = {"ids": ids[0].tolist(), "dtype": str(self.dtype), "attention_chunks": [chunks.q, chunks.k],
                   "positions": "real tokens"}
            entries.append((ids, mask, key))
        return entries

    def _encode_misses(self, misses: list, rows: list, stream: bool, cache) -> None:
        """Encode the prompts `cache` lacks (all, without a cache: None), misses = [(index in rows, ids, mask,
        key)], each alone, in one pass over T5: into `rows`, and the cache when there is one."""
        encoded = self._encoder(stream).encode_each([(ms.Tensor(ids), ms.Tensor(mask)) for _, ids, mask, _ in misses])
        for (i, _, mask, key), features in zip(misses, encoded):
            rows[i] = (features.astype(ms.float32).asnumpy(), mask)
            if cache is not None:
                cache.put(key, *rows[i])

    @_one_at_a_time
    def encode_ahead(self, prompts: str | list[str], room: int | None = None, stream: bool = True,
                     max_sequence_length: int = 300, progress: Callable[[int, int], None] | None = None) -> int:
        """Put into the embedding cache the features of the prompts it lacks, in as few passes over T5 as
        `room` bytes allow (None: one pass): a pass holds every prompt's hidden state and position bias
        between blocks. `encode_all_ahead` calls it for a batch's items or a layout's layers, under the
        attention budget of their text phase (its attention blocks are part of the cache key).
        progress(done, total) in prompts. Returns how many prompts were encoded. A string is one prompt."""
        prompts = [] if isinstance(prompts, (list, tuple)) and not prompts else as_prompts(prompts, "prompts")
        check_max_sequence_length(max_sequence_length)
        check_flag("stream", stream)
        cache = self._embedding_cache()  # read once: another thread may set pipe.embedding_cache meanwhile
        if cache is None:
            raise InputError("encode_ahead puts features into an embedding cache: set pipe.embedding_cache first")
        keyed = {ids.tobytes(): (ids, mask, key) for ids, mask, key in  # texts of the same ids: one entry
                 self._prompt_keys(list(dict.fromkeys(prompts)), max_sequence_length)}
        entries = [e for e in keyed.values() if e[2] not in cache]  # a file test: cached features are not read
        if not entries:
            return 0
        rows, misses = [None] * len(entries), [(i, *entry) for i, entry in enumerate(entries)]
        t5, report = self._t5_config, progress or (lambda done, total: None)
        passes, held = [], 0
        for miss in misses:
            n = miss[1].shape[1]  # tokens
            size = 4 * (n * t5.d_model + t5.num_heads * n * n)  # fp32 hidden state and bias, (n, d) + (heads, n, n)
            if not passes or (room is not None and held + size > room):
                passes.append([])
                held = 0
            passes[-1].append(miss)
            held += size
        done = 0
        report(done, len(misses))
        for group in passes:
            self._encode_misses(group, rows, stream, cache)
            done += len(group)
            report(done, len(misses))
        return len(misses)

    # -- generation --------------------------------------------------------------------------------------

    def generation_plan(self, height: int, width: int, images: int, budget: int | None, guidance: bool,
                        vae_tiling: bool | None = None, stream_text_encoder: bool = True,
                        keep_text_encoder: bool | None = None, output: tuple[int, int] | None = None,
                        output_type: str = "pil") -> GenerationPlan:
        """The memory plan of a call at height x width px (after binning) with this pipeline's weights and
        dtype (`memory_plan.plan_generation`); keep_text_encoder None: as the pipeline is set; output: the
        (height, width) the images are resized to after decoding, for `output_type`."""
        keep = self.keep_text_encoder if keep_text_encoder is None else keep_text_encoder
        return plan_generation(self.transformer.config, self._t5_config, self.vae.config, height, width, images,
                               budget, guidance, self._itemsize, keep, vae_tiling, stream_text_encoder,
                               memory.tensor_cap(), output, output_type)

    @_one_at_a_time
    def __call__(self, prompt: str | list[str] | None = None, negative_prompt: str | list[str] = "",
                 num_inference_steps: int = 20, *, height: int | None = None, width: int | None = None,
                 guidance_scale: float = 4.5, seed: int | None = None, latents: np.ndarray | None = None,
                 num_images_per_prompt: int = 1, use_resolution_binning: bool = True,
                 max_sequence_length: int = 300, output_type: str = "pil", sampler: str | None = None,
                 memory_budget=None, vae_tiling: bool | None = None, stream_text_encoder: bool = True,
                 callback: Callable[[int, int], None] | None = None, callback_steps: int = 1,
                 progress: Callable[[str, int, int], None] | None = None, generator=None, return_dict: bool = True,
                 clean_caption: bool = False, prompt_embeds=None, prompt_attention_mask=None,
                 negative_prompt_embeds=None, negative_prompt_attention_mask=None, timesteps=None, sigmas=None,
                 eta: float = 0.0) -> PipelineOutput | tuple:
        """Generate images. prompt, negative_prompt and num_inference_steps may be given by position (the
        reference's first three); the rest by name. height/width in px (default: the checkpoint's native size, 1024
        for the 1024 checkpoint); `seed` a non-negative integer; `latents` (N, 4, h/8, w/8) replace the initial
        noise; `sampler` ("dpm++" | "ddim" | "euler") overrides scheduler_config.json; `memory_budget` (bytes,
        "6GiB", or None = free memory minus a margin, the first call's, kept) bounds the attention workspace and
        the VAE decode;
        `vae_tiling` decodes in tiles: None when the untiled decode would exceed the budget (or, on the CPU,
        make a feature map above MAX_TENSOR, 4 GiB), True always, False never; `stream_text_encoder` (default)
        runs T5 block by block from its files (one block's weights in memory, the same features, about the
        time of loading it whole) unless the pipeline keeps it loaded (keep_text_encoder); False loads it
        whole for the call; callback(step, total) after each denoising step (step from 0; with the reference's
        callback_steps=k, after every k-th: steps 0, k, 2k, ...). progress(phase, done,
        total) for every phase: "text" (0 then 1 of 1), "denoise" (steps done), "decode" (tile passes
        done when tiled, else images), each called with done = 0 when the phase starts.

        The reference's `generator` (a torch.Generator, or one per image) draws the noise the reference
        draws, in place of `seed` (torch needed); return_dict=False returns (images,); clean_caption (the
        reference's caption cleaning, which needs beautifulsoup4 and ftfy) is not supported: prompts are
        encoded as written, as the reference does without those packages. `prompt_embeds` (B, L, C) T5
        features with `prompt_attention_mask` (B, L) stand for the prompts, `negative_prompt_embeds` and its
        mask for the negatives, as the reference takes them (numpy, torch or MindSpore arrays). The reference's
        custom `timesteps`/`sigmas` and a DDIM `eta` other than 0 are not supported (a ValueError)."""
        for name, value in (("timesteps", timesteps), ("sigmas", sigmas)):
            if value is not None:
                raise InputError(f"{name}= is not supported: the schedule comes from scheduler_config.json and "
                                 "num_inference_steps; pass sampler= to choose another sampler")
        if eta != 0:
            raise InputError(f"eta={eta!r} is not supported: studio's samplers are deterministic (DDIM with eta 0)")
        check_flag("return_dict", return_dict)
        check_flag("stream_text_encoder", stream_text_encoder)
        prompts, negatives, given, given_negatives = self._text_inputs(
            prompt, negative_prompt, prompt_embeds, prompt_attention_mask, negative_prompt_embeds,
            negative_prompt_attention_mask)
        # 0-d arrays and tensors (torch.tensor(64), as the reference takes them) as numpy scalars, checked as such
        height, width, num_inference_steps, num_images_per_prompt, max_sequence_length, guidance_scale, seed, \
            callback_steps, use_resolution_binning = map(_scalar, (
                height, width, num_inference_steps, num_images_per_prompt, max_sequence_length, guidance_scale, seed,
                callback_steps, use_resolution_binning))
        height, width = default_size(self.transformer.config, self.vae.config, height, width)
        output_type = "np" if output_type is None else output_type  # as the reference's postprocess reads None
        self._check_inputs(prompts, negatives, height, width, num_inference_steps, num_images_per_prompt,
                           max_sequence_length, output_type, seed, guidance_scale, use_resolution_binning,
                           vae_tiling, generator,
                           clean_caption, latents, given is not None, given_negatives is not None, callback,
                           callback_steps, progress)
        # numpy scalars pass the checks; MindSpore takes only Python numbers where they meet tensors
        height, width, num_inference_steps, num_images_per_prompt = map(
            int, (height, width, num_inference_steps, num_images_per_prompt))
        guidance_scale, seed = float(guidance_scale), None if seed is None else int(seed)
        out_height, out_width = height, width
        height, width = generation_size(self.transformer.config, height, width, use_resolution_binning)
        check_size(self.transformer.config, self.vae.config, height, width)
        n_images = len(prompts) * num_images_per_prompt
        vae_scale = self.vae.config.downsample_factor
        shape = (n_images, self.transformer.config.in_channels, height // vae_scale, width // vae_scale)
        if latents is not None:  # here, not after the text encoder ran
            latents = as_latents(latents, shape)
        config = self.sampler if sampler is None else self.sampler.with_sampler(sampler)
        if isinstance(config, UnrunnableScheduler):
            raise ConfigError(config.problem)
        # a schedule it can't run fails before any work; some configs run fewer steps than asked
        steps = len(sampling.timesteps_and_sigmas(config, num_inference_steps).timesteps)
        cfg = guidance_scale > 1.0
        budget = self._budget(memory_budget)
        text_phase, denoise_phase, decode_phase = self.generation_plan(
            height, width, n_images, budget, cfg, vae_tiling, stream_text_encoder, output=(out_height, out_width),
            output_type=output_type).phases
        tiling.check_map_disk(self.vae.config, decode_phase.tiles)  # not after minutes of denoising (latents: none)

        report = progress or (lambda phase, done, total: None)

        # 1. text: positive (and negative) features, then free the encoder
        try:
            report("text", 0, 1)
            features, mask = self._captions(prompts, negatives if cfg else None, given, given_negatives,
                                            num_images_per_prompt, max_sequence_length, text_phase)
            report("text", 1, 1)
        finally:  # an interrupted call (Ctrl-C, a raising progress) leaves no whole T5 behind either
            if not self.keep_text_encoder:
                self.release_text_encoder()
        context = self.transformer.encode_context(features.astype(self.dtype))

        # 2. initial latents
        latents, seed = self._initial_latents(shape, latents, generator, seed)
        x = ms.Tensor(latents * sampling.init_noise_sigma(config, num_inference_steps), self.dtype)

        # 3. denoise
        learned_sigma = self.transformer.config.output_channels // 2 == shape[1]
        sizes = size_conditions(self.transformer.config, height, width, n_images * (2 if cfg else 1))

        def model_fn(x_in: ms.Tensor, t: float) -> ms.Tensor:
            batch = ms.ops.cat([x_in, x_in]) if cfg else x_in
            timestep = ms.ops.full((batch.shape[0],), t, dtype=ms.float32)
            out = self.transformer(batch.astype(self.dtype), timestep, context, mask, *sizes)
            if learned_sigma:
                out = out[:, :shape[1]]
            if cfg:
                uncond, cond = ms.ops.split(out, n_images, axis=0)
                out = uncond + guidance_scale * (cond - uncond)
            return out

        def after_step(i: int, total: int) -> None:
            if callback is not None and i % callback_steps == 0:
                callback(i, total)
            report("denoise", i + 1, total)

        report("denoise", 0, steps)
        with memory.attention_budget(denoise_phase.workspace):
            x = sampling.sample(model_fn, x, config, num_inference_steps, callback=after_step)
        final = x.astype(ms.float32).asnumpy()
        if not np.isfinite(final).all():
            raise NumericalError(self._overflow("denoising", guidance_scale))
        if output_type == "latent":
            return self._output(final, seed, return_dict)

        # 4. decode, then one image at a time back to the requested size (binning: `binning.resized`) and to
        # [0, 1], in place: at 8192^2 a float image is 768 MiB, beside what MindSpore's pool keeps (the memory
        # plan's `resize` counts what this holds)
        with memory.attention_budget(decode_phase.workspace):
            images = self.decode(x, decode_phase.tiles, progress=lambda done, total: report("decode", done, total))
        if output_type == "np":
            out = binning.resize_and_center_crop(images, out_height, out_width)
            for image in out:
                self._check_finite(image, guidance_scale)
                to_unit_range(image)
            return self._output(out.transpose(0, 2, 3, 1), seed, return_dict)  # (N, H, W, 3)
        from PIL import Image
        pixels = []  # (H, W, 3) uint8 each, C-contiguous: PIL copies it once
        for image in binning.resized(images, out_height, out_width):  # each in one reused float buffer
            self._check_finite(image, guidance_scale)
            to_unit_range(image)
            image *= 255
            pixels.append(np.round(image, out=image).transpose(1, 2, 0).astype(np.uint8, order="C"))
        del images, image  # the floats go before PIL copies the pixels (8192^2: 768 MiB, beside 192 MiB each)
        pictures = [Image.fromarray(pixels.pop(0)) for _ in range(len(pixels))]  # each one's pixels then go
        return self._output(pictures, seed, return_dict)

    def _check_finite(self, image: np.ndarray, guidance_scale: float) -> None:
        """NumericalError when a decoded image holds NaN or infinite values (its pixels are about [-1, 1], so
        their sum is finite unless one is not; a resize carries such a value on)."""
        if not np.isfinite(image.sum(dtype=np.float64)):
            raise NumericalError(self._overflow("decoding", guidance_scale))

    def _overflow(self, phase: str, guidance_scale: float) -> str:
        """What to say when `phase` gave NaN or infinite values."""
        dtype = {ms.float16: "float16", ms.bfloat16: "bfloat16"}.get(self.vae_dtype if phase == "decoding"
                                                                     else self.dtype, "float32")
        hint = (f"; guidance_scale {guidance_scale:g} is far above the usual 1-20" if guidance_scale > 100 else
                "; float16's range is +-65504: try float32" + (", or force_upcast: true in vae/config.json"
                                                              if phase == "decoding" else "")
                if dtype == "float16" else "")
        return f"{phase} overflowed in {dtype}: the result holds NaN or infinite values, no image is returned{hint}"

    def _text_inputs(self, prompt, negative_prompt, prompt_embeds, prompt_attention_mask, negative_prompt_embeds,
                     negative_prompt_attention_mask) -> tuple[list[str], list[str], "Captions | None",
                                                              "Captions | None"]:
        """The text arguments as (prompts, negatives, given prompt features, given negative features): each
        side as texts, or as the reference's embeddings with '' standing for their texts."""
        given = Captions.given(prompt_embeds, prompt_attention_mask, "prompt")
        if given is not None and prompt is not None:
            raise InputError("pass prompt or prompt_embeds, not both")
        if prompt is None and given is None:
            raise InputError("prompt must be a string or a non-empty list of strings, got None (or pass prompt_embeds "
                             "with prompt_attention_mask)")
        prompts = as_prompts(prompt, "prompt") if given is None else [""] * given.rows
        negative = "" if negative_prompt is None else negative_prompt
        if isinstance(negative, (list, tuple)) and not negative:  # unguided, unused (the reference takes it); guided,
            negatives = []  # "negative_prompt has 0 entries" (_check_inputs; the reference's IndexError)
        else:
            negatives = as_prompts(negative, "negative_prompt") * (len(prompts) if isinstance(negative, str) else 1)
        given_negatives = Captions.given(negative_prompt_embeds, negative_prompt_attention_mask, "negative_prompt")
        if given_negatives is not None:
            if negative_prompt:
                raise InputError("pass negative_prompt or negative_prompt_embeds, not both")
            negatives = [""] * given_negatives.rows
        channels = self._t5_config.d_model
        for name, captions in (("prompt_embeds", given), ("negative_prompt_embeds", given_negatives)):
            if captions is not None and captions.features.shape[2] != channels:
                raise InputError(f"{name} have {captions.features.shape[2]} channels; this model's text encoder "
                                 f"gives {channels}")
        return prompts, negatives, given, given_negatives

    def _captions(self, prompts: list[str], negatives: list[str] | None, given, given_negatives,
                  per_prompt: int, max_sequence_length: int, text_phase) -> tuple[ms.Tensor, ms.Tensor]:
        """The caption features (B, L, C) and mask (B, L) the denoiser attends to, one row per image, negatives
        first when guided (negatives not None; the reference's order), cut after the longest prompt. The
        texts among them are encoded in one pass over T5, in the text phase's attention budget."""
        texts = (prompts if given is None else []) + (negatives if negatives is not None and given_negatives is None
                                                      else [])
        with memory.attention_budget(text_phase.workspace):
            encoded = self._caption_rows(texts, max_sequence_length, text_phase.streamed)
        parts = [given] if given is not None else encoded[:len(prompts)]
        if negatives is not None:
            parts += [given_negatives] if given_negatives is not None else encoded[len(texts) - len(negatives):]
        features, mask = Captions.joined(parts, self.dtype)
        rows = np.repeat(np.arange(len(prompts)), per_prompt)
        rows = ms.Tensor(np.concatenate([rows + len(prompts), rows]) if negatives is not None else rows, ms.int32)
        return trim_caption(ms.ops.gather(features, rows, 0), ms.ops.gather(mask, rows, 0))

    def _initial_latents(self, shape: tuple, latents, generator, seed: int | None) -> tuple[np.ndarray, int | None]:
        """(the initial noise (N, C, h, w) float32, the seed that drew it): `latents` as given (`as_latents`), the
        reference's draw from a torch `generator`, or numpy's from `seed` (a random one, in a layout's seed range,
        if None)."""
        if latents is not None:
            return latents, None
        if generator is not None:
            return torch_noise(generator, shape, self.dtype), None
        seed = int(np.random.SeedSequence().entropy % 2**32) if seed is None else seed
        return initial_noise(seed, shape), seed

    @staticmethod
    def _output(images, seed: int | None, return_dict: bool) -> PipelineOutput | tuple:
        return PipelineOutput(images, seed) if return_dict else (images,)

    @_one_at_a_time
    def decode(self, latents, tiles: tiling.TilePlan | None = None,
               progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Latents (N, 4, h, w), a MindSpore, numpy or torch array (a call's output_type="latent" gives numpy)
        -> images (N, 3, 8h, 8w) float32 in about [-1, 1], one image at a time into one array (the memory plan
        counts one image's decode and the N outputs); in tiles with a plan (`vae_tiling.plan_tiles`), each
        written straight into its output. progress(done, total): tile passes when tiled, else images."""
        channels = self.vae.config.latent_channels
        if not isinstance(latents, ms.Tensor):
            array = numbers_array(latents, f"decode: latents must be a numpy, torch or MindSpore array "
                                           f"(N, {channels}, h, w)")
            latents = ms.Tensor(array.astype(np.float32, copy=False))  # as a call's latents=
        if latents.ndim != 4 or latents.shape[1] != channels or 0 in latents.shape:
            raise InputError(f"decode: latents have shape {tuple(latents.shape)}, expected (N, {channels}, h, w), "
                             "none of them 0")
        z = latents.astype(self.vae_dtype) / self.vae.config.scaling_factor
        n, _, h, w = z.shape
        f = self.vae.config.downsample_factor
        images = np.empty((n, self.vae.config.out_channels, f * h, f * w), np.float32)  # (N, 3, 8h, 8w)
        per_image = progress is not None and tiles is None
        if per_image:
            progress(0, n)
        for i in range(n):
            if tiles is None:
                images[i:i + 1] = self.vae.decode(z[i:i + 1]).asnumpy()  # a view of the tensor, copied (cast) once
            else:
                passes = (lambda done, total, i=i: progress(i * total + done, n * total)) if progress else None
                tiling.decode_tiled(self.vae, z[i:i + 1], tiles, passes, out=images[i:i + 1])
            if per_image:
                progress(i + 1, n)
        return images

    # -- memory --------------------------------------------------------------------------------------------

    @property
    def _itemsize(self) -> int:
        return 2 if self.dtype in (ms.float16, ms.bfloat16) else 4

    @functools.cached_property
    def _t5_config(self) -> T5Config:
        return T5Config.from_dict(read_json(self.model_dir / "text_encoder" / "config.json"))

    def _budget(self, memory_budget) -> int:
        """A call's budget in bytes (`memory.resolve_budget`). The automatic one is worked out at the first call
        without one and kept: MindSpore's CPU pool keeps what a call allocated, idle for the next, but it no longer
        counts as free, so each later call would plan in less (an identical call refused, or other chunks)."""
        budget = memory.parse_bytes(memory_budget)  # "auto" is None's
        if budget is not None:
            return budget
        if self._auto_budget is None:
            self._auto_budget = memory.resolve_budget(None, resident=self._resident_bytes)
        return self._auto_budget

    def _resident_bytes(self) -> int:
        cells = [self.transformer, self.vae] + ([self._text_encoder] if self._text_encoder is not None else [])
        return sum(p.nbytes for cell in cells for _, p in cell.parameters_and_names())

    # -- checks ------------------------------------------------------------------------------------------

    def _check_inputs(self, prompts, negatives, height, width, steps, per_prompt, max_len, output_type, seed,
                      guidance, binning, vae_tiling, generator, clean_caption, latents, embeds_given, negative_embeds_given,
                      callback, callback_steps, progress):
        number = isinstance(guidance, (int, float, np.number)) and not isinstance(guidance, bool)
        if not number or not np.isfinite(guidance):
            raise InputError(f"guidance_scale must be a finite number, got {guidance!r:.80}")
        if guidance > 1 and len(negatives) != len(prompts):  # unguided, the negatives are not used
            n = len(negatives)
            what = (f"negative_prompt_embeds has {n} row{'s' * (n != 1)}" if negative_embeds_given else
                    f"negative_prompt has {n} entr{'ies' if n != 1 else 'y'}")
            raise InputError(f"{what}, {'prompt_embeds' if embeds_given else 'prompt'} has {len(prompts)}")
        check_flag("use_resolution_binning", binning)  # a truthy "no" would generate at the bin's size
        if vae_tiling not in (None, True, False):
            raise InputError(f"vae_tiling must be None (automatic), True or False, got {vae_tiling!r:.80}")
        if seed is not None and generator is not None:
            raise InputError("pass seed or generator (a torch.Generator, as the reference takes), not both")
        if latents is not None and (seed is not None or generator is not None):
            raise InputError("latents replace the initial noise: pass no seed or generator with them")
        if clean_caption:
            raise InputError("clean_caption=True is not supported: studio encodes prompts as written (the "
                             "reference does too when beautifulsoup4 or ftfy is missing)")
        if output_type not in OUTPUT_TYPES:
            raise InputError(f"output_type '{output_type}' is not one of {', '.join(OUTPUT_TYPES)}")
        for name, value in [("height", height), ("width", width), ("num_inference_steps", steps),
                            ("num_images_per_prompt", per_prompt), ("callback_steps", callback_steps)]:
            check_count(name, value)
        check_max_sequence_length(max_len)
        if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0):
            raise InputError(f"seed must be a non-negative integer, got {seed!r}")
        if generator is not None:  # here, not after the text encoder ran
            check_generator(generator, len(prompts) * per_prompt)
        # checked here, not after the text encoder and a denoising step
        for function, arguments, how in [
                (callback, (0, steps), "callback is called as callback(step, total) after each denoising step (the "
                                       "reference's callback(step, timestep, latents) is not taken)"),
                (progress, ("text", 0, 1), "progress is called as progress(phase, done, total) for each phase "
                                           "('text', 'denoise', 'decode')")]:
            if function is not None and refuses(function, *arguments):
                raise InputError(f"{how}, got {function!r:.80}")


class Captions(NamedTuple):
    """T5 features (B, L, C) float32 and their mask (B, L), 1 = token, as numpy arrays."""

    features: np.ndarray
    mask: np.ndarray

    @property
    def rows(self) -> int:
        return self.features.shape[0]

    @classmethod
    def given(cls, embeds, mask, name: str) -> "Captions | None":
        """The reference's `<name>_embeds` and `<name>_attention_mask` arguments (numpy, torch or MindSpore)."""
        if embeds is None:
            if mask is not None:
                raise InputError(f"{name}_attention_mask without {name}_embeds")
            return None
        if mask is None:
            raise InputError(f"{name}_embeds needs {name}_attention_mask (B, L): 1 for tokens, 0 for padding")
        features = numbers_array(embeds, f"{name}_embeds must be a numpy, torch or MindSpore array of numbers")
        mask = numbers_array(mask, f"{name}_attention_mask must be a numpy, torch or MindSpore array of numbers")
        if features.ndim != 3 or mask.shape != features.shape[:2]:
            raise InputError(f"{name}_embeds {features.shape} and {name}_attention_mask {mask.shape} are not "
                             f"(B, L, C) and (B, L)")
        if 0 in features.shape[:2]:
            raise InputError(f"{name}_embeds {features.shape}: needs at least one row and one token position")
        check_binary_mask(mask, f"{name}_attention_mask")
        mask = mask.astype(np.int32)  # as `tokenize` gives masks (a copy: the caller's is not changed)
        # a row that attends to no token attends to all its L positions in the reference: its -10000 bias is the
        # same for every key, so softmax cancels it, as for a row of ones; here masked keys weigh exactly 0 (and
        # trim_caption drops them), so such a row is taken as the ones it acts as
        empty = ~mask.any(axis=1)
        mask[empty] = 1
        attended = np.flatnonzero(mask.any(axis=0))
        if attended.size and attended[-1] >= MAX_LENGTH:  # positions past it are dropped unread (trim_caption)
            raise InputError(f"{name}_attention_mask attends to position {attended[-1] + 1}: at most {MAX_LENGTH} "
                             f"(PixArt-Sigma's caption length, which the memory plan counts)"
                             + ("; a row of zeros attends to all its positions, as in the reference" if empty.any()
                                else ""))
        return cls(features.astype(np.float32), mask)

    @staticmethod
    def joined(parts: list["Captions"], dtype) -> tuple[ms.Tensor, ms.Tensor]:
        """The parts' rows in order, padded with masked zeros to the longest: (B, L, C), (B, L) tensors."""
        length = max(p.features.shape[1] for p in parts)
        features = np.concatenate([np.pad(p.features, ((0, 0), (0, length - p.features.shape[1]), (0, 0)))
                                   for p in parts])
        mask = np.concatenate([np.pad(p.mask, ((0, 0), (0, length - p.mask.shape[1]))) for p in parts])
        return ms.Tensor(features).astype(dtype), ms.Tensor(mask)


def _excerpt(text: str, n: int) -> str:
    """`text`, its first `n` characters and '...' if longer."""
    return text if len(text) <= n else text[:n] + "..."


def _scalar(value):
    """A 0-d numpy, torch or MindSpore array as a numpy scalar (the reference takes torch.tensor(64) for a size);
    anything else as it is."""
    return _numpy(value)[()] if getattr(value, "ndim", None) == 0 and not isinstance(value, np.generic) else value


def _numpy(a) -> np.ndarray:
    """A numpy array of a numpy, torch or MindSpore array; bfloat16 as float32 (numpy has no bfloat16: MindSpore's
    asnumpy() gives ml_dtypes' one, of kind 'V', which no check of a float kind takes)."""
    if hasattr(a, "detach"):  # torch
        a = a.detach().cpu()
        return (a.float() if a.is_floating_point() else a).numpy()
    if isinstance(a, ms.Tensor):
        return (a.astype(ms.float32) if a.dtype == ms.bfloat16 else a).asnumpy()
    a = np.asarray(a)
    return a.astype(np.float32) if a.dtype.name == "bfloat16" else a


class MemoryCache:
    """An embedding cache in memory (`PixArtSigmaPipeline.embedding_cache`): holds the features `render`
    encodes ahead for a layout's generate layers while it renders them (`lent_embedding_cache`)."""

    def __init__(self):
        self.entries: dict[str, tuple] = {}

    @staticmethod
    def _id(key: dict) -> str:
        return json.dumps(key, sort_keys=True)

    def __contains__(self, key: dict) -> bool:
        return self._id(key) in self.entries

    def get(self, key: dict):
        return self.entries.get(self._id(key))

    def put(self, key: dict, features: np.ndarray, mask: np.ndarray) -> None:
        self.entries[self._id(key)] = (features, mask)


def encode_all_ahead(requests, progress: Callable[[int, int], None] | None = None) -> int:
    """Encode the prompts of several generations before any of them runs, so that a T5 streamed from its
    files is read once for all of them instead of once per generation (T5-XXL: 19 GB, 12-22 s a read).

    requests: (pipeline, prompts, text phase of the generation's plan, bytes its budget leaves beside that
    phase or None), the pipelines with an embedding cache (their own, or one lent to this thread), which
    receives the features. Prompts of phases that don't stream T5 are left to their generation (a loaded
    encoder costs no read). One `PixArtSigmaPipeline.encode_ahead` per pipeline and T5 attention budget (part
    of the cache key).
    progress(done, total) in prompts, per group. Returns how many prompts were encoded."""
    groups: dict = {}  # (pipeline, workspace) -> (pipeline, prompts, rooms)
    for pipe, prompts, text, room in requests:
        if text.streamed:
            _, group, rooms = groups.setdefault((id(pipe), text.workspace), (pipe, [], []))
            group += prompts
            rooms += [] if room is None else [room]
    encoded = 0
    for (_, workspace), (pipe, prompts, rooms) in groups.items():
        with memory.attention_budget(workspace):
            encoded += pipe.encode_ahead(prompts, min(rooms, default=None), progress=progress)
    return encoded
