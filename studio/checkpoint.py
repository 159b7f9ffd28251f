"""Model folders in the diffusers layout -> weights in MindSpore cells.

Takes a local folder or a Hugging Face hub id (at a revision, from the hub cache or downloaded), a model of a
transformer only completed with a base pipeline in a folder of links (`compose`); gives configs (JSON objects,
their values checked against the config dataclasses' field types) and fills a cell's parameters from the
component's safetensors, strictly: parameter names equal checkpoint keys, every key must be a floating-point
tensor of its parameter's shape stored in one file only, and every parameter must be in the checkpoint.
Safetensors are read one tensor (or some rows of one) at a time with plain reads, straight into the target dtype.
Pickle files are refused.
"""

import collections
import dataclasses
import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import stat
import threading
import types
import typing
import urllib.parse
import warnings
from pathlib import Path

import mindspore as ms
import numpy as np

from studio.errors import CheckpointError, ConfigError, control_problem, first_line, one_line
from studio.export import remove_temporaries, temporary_folder
from studio.hub import HubId, is_hub_id, split_revision
from studio.paths import cache_root, expanded
from studio.spec import user_path

PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pkl")
WEIGHT_STEMS = ("diffusion_pytorch_model", "model")
# the stems whose reader looks for a shard index before a single file: diffusers' ModelMixin (transformer, VAE)
# does for its diffusion_pytorch_model files; transformers (text encoder) takes model.safetensors first
INDEX_FIRST = ("diffusion_pytorch_model",)
WEIGHTED_COMPONENTS = ("transformer", "vae", "text_encoder")
PIPELINE_FOLDERS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")  # a pipeline's components
# the training state diffusers' EMAModel.save_pretrained writes into the config.json of the model it saves (no
# part of the model: ignored)
EMA_KEYS = frozenset({"decay", "inv_gamma", "min_decay", "optimization_step", "power", "update_after_step",
                      "use_ema_warmup"})
BASE_COMPONENTS = ("text_encoder", "vae")  # what a base pipeline holds weights for: it has no transformer
# what completes a transformer-only model (a folder or repository holding transformer/ alone, as the published
# 512 and 2K PixArt-Sigma checkpoints do), as their model card pairs them; $STUDIO_BASE_PIPELINE names another
BASE_PIPELINE = "PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers"
# one load at a time per process: loading sets process-wide state of third-party libraries for its duration
# (huggingface_hub's log level here, transformers' in studio.text), which two threads overlapping would leave
# changed. Re-entrant: `PixArtSigmaPipeline.from_pretrained` holds it while it resolves the folder.
LOADING = threading.RLock()

# safetensors dtype code -> numpy dtype of the stored bytes (bf16 as its raw 16 bits)
_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}

_FLOAT_CODES = ("F32", "F16", "BF16", "F64")
_NP_FLOAT = {ms.float16: np.float16, ms.float32: np.float32, ms.float64: np.float64}  # bf16 goes via fp32


def resolve_model_dir(path_or_id: str | os.PathLike, weights: bool = True, variant: str | None = None,
                      revision: str | None = None, cache_dir: str | os.PathLike | None = None,
                      local_files_only: bool = False, transformer: str | os.PathLike | None = None) -> Path:
    """The pipeline folder of a model, made absolute (not resolved: a link keeps its name), so that the files read
    later (the text encoder's, at a prompt) are this model's whatever the working folder is by then: a local
    folder as is; otherwise a hub id looked up in the local Hugging Face cache, then downloaded with
    huggingface_hub when the machine is online and local_files_only is False: the pipeline (each component's
    `variant` weights where it has them, else its plain ones), or with weights=False only its JSON configs (what
    a memory plan reads; no multi-GB download to plan). Online, a cached snapshot without any of `variant`'s files
    gets them from the hub (where it has them), as diffusers does, and is used as it is when the hub can't be
    reached. revision: a branch, tag or commit hash (default "main"), also written 'owner/name@revision';
    cache_dir: the hub cache (default as huggingface_hub finds it, from the environment as it is now:
    $HF_HUB_CACHE, $HF_HOME/hub, ...). A `HubId` (a layout's hub id) is looked up on the hub only, whatever folder
    of that name the working folder holds.

    A transformer-only model (transformer/ alone, no model_index.json) is completed with the base pipeline
    ($STUDIO_BASE_PIPELINE, else BASE_PIPELINE; found the same way, at its own default revision): the folder
    returned is `compose`d of both, with a warning saying so once.

    transformer: as `PixArtSigmaPipeline.from_pretrained`'s, the model (folder or hub id) whose transformer
    replaces this one's (`transformer_folder`): the folder returned is `compose`d of both, named after it; this
    model then needs no transformer weights of its own (the published base pipeline has none).

    A CheckpointError for the model (or `transformer`) itself, found missing or incomplete, names it as its
    `model`."""
    hub = dict(weights=weights, variant=variant, cache_dir=cache_dir, local_files_only=local_files_only)
    path_or_id = os.fspath(path_or_id)  # a Path or any os.PathLike as its text, for the messages
    transformer = None if transformer is None else os.fspath(transformer)
    try:
        folder = _resolve_one(path_or_id, revision=revision, **hub,
                              components=WEIGHTED_COMPONENTS if transformer is None else BASE_COMPONENTS)
        base = base_pipeline(str(path_or_id), folder / "transformer", **hub) if transformer_only(folder) else None
    except CheckpointError as e:
        raise _about(e, path_or_id)
    if base is not None:
        if (str(path_or_id), base.name) not in _SAID_BASE:  # once per process, whatever filters warnings
            _SAID_BASE.add((str(path_or_id), base.name))
            warnings.warn(f"studio: {path_or_id} holds a transformer only; the rest of the pipeline (text encoder, "
                          f"tokenizer, VAE, scheduler) comes from {base.name}")
        folder = compose(folder / "transformer", base.folder, _model_name(path_or_id))
    if transformer is None:
        return folder.absolute()
    try:
        transformer_dir = transformer_folder(transformer, **hub)
    except CheckpointError as e:
        raise _about(e, transformer)
    return compose(transformer_dir, folder, _model_name(transformer)).absolute()


def _about(e: CheckpointError, model) -> CheckpointError:
    """`e`, said to be about `model` (its `model`) unless it names one already."""
    if e.model is None:
        e.model = str(model)
    return e


_SAID_BASE: set[tuple[str, str]] = set()  # (model, base) pairs the warning has named


def _model_name(path_or_id) -> str:
    """A model's name for a composed folder: a folder's own name (a transformer folder's, its model's), a hub
    id's repository name."""
    parts = split_revision(str(path_or_id))[0].rstrip("/\\").replace("\\", "/").split("/")
    return (parts[-2] if parts[-1] == "transformer" and len(parts) > 1 else parts[-1]) or "model"


class MissingBase(CheckpointError):
    """A transformer-only model whose base pipeline is not found; `transformer`: its transformer folder,
    `default`: whether the base is the published BASE_PIPELINE (not one $STUDIO_BASE_PIPELINE names)."""

    def __init__(self, message: str, transformer: Path, default: bool):
        super().__init__(message)
        self.transformer, self.default = transformer, default


class Base(typing.NamedTuple):
    name: str  # as given: a folder or hub id, with '($STUDIO_BASE_PIPELINE)' when from there
    folder: Path


def base_pipeline(model: str, transformer: Path, weights: bool = True, variant: str | None = None,
                  cache_dir=None, local_files_only: bool = False) -> Base:
    """The pipeline that completes the transformer-only `model` (whose transformer folder is `transformer`):
    $STUDIO_BASE_PIPELINE, else BASE_PIPELINE, resolved as a model is (at its own default revision).
    A MissingBase error when it can't be found or is no full pipeline."""
    given = os.environ.get("STUDIO_BASE_PIPELINE")
    name, label = given or BASE_PIPELINE, base_label()
    try:
        folder = _resolve_one(name, weights=weights, variant=variant, cache_dir=cache_dir,
                              local_files_only=local_files_only, components=BASE_COMPONENTS)
        if not (folder / "model_index.json").is_file():
            raise CheckpointError(f"{name}: holds a transformer only too")
    except CheckpointError as e:
        raise MissingBase(f"{model}: holds a transformer only (transformer/, no model_index.json), and the base "
                          f"pipeline that completes it, {label}, is not usable ({e}); set $STUDIO_BASE_PIPELINE to "
                          f"the folder of a pipeline, or download {BASE_PIPELINE}", transformer, not given) from None
    return Base(label, folder)


def base_label() -> str:
    """The base pipeline in force, as messages and manifests name it: $STUDIO_BASE_PIPELINE's value (said so),
    else BASE_PIPELINE."""
    given = os.environ.get("STUDIO_BASE_PIPELINE")
    return f"{given} ($STUDIO_BASE_PIPELINE)" if given else BASE_PIPELINE


def is_composed(folder: Path) -> bool:
    """Whether `folder` is a pipeline `compose` wrote (a transformer-only model with its base)."""
    return Path(folder).resolve().parent == cache_root("composed").resolve()


def transformer_folder(transformer: str | os.PathLike, weights: bool = True, variant: str | None = None,
                       cache_dir=None, local_files_only: bool = False) -> Path:
    """The transformer folder `from_pretrained(transformer=...)` names: a folder holding config.json itself, or
    the transformer/ of a model (folder or hub id, resolved as a model is, not completed with a base)."""
    path = user_path(transformer)
    if (not isinstance(transformer, HubId) and path.is_dir() and (path / "config.json").is_file()
            and not (path / "transformer").exists()):
        return path
    folder = _resolve_one(transformer, weights=weights, variant=variant, cache_dir=cache_dir,
                          local_files_only=local_files_only, components=("transformer",))  # its weights alone
    return folder / "transformer"


def compose(transformer: Path, base: Path, name: str = "model") -> Path:
    """A pipeline folder of `base`'s files with `transformer` (a folder holding config.json and weights) as its
    transformer/: real folders holding symbolic links to each file (so what lists or hashes a model's files, and
    a file's size and time, sees the linked files), and the base's model_index.json naming the transformer
    (the published base names none). Under `cache_root("composed")` ($STUDIO_CACHE/composed, else
    $XDG_CACHE_HOME/studio/composed, else ~/.cache/studio/composed), named `name` and a digest of its contents: a
    folder is never changed once written (other contents, another name), so processes composing at once
    share it; written to a temporary name and renamed."""
    transformer, base = transformer.resolve(), base.resolve()
    links = {Path("transformer") / rel: target for rel, target in _files(transformer).items()}
    links.update({rel: target for rel, target in _files(base).items()
                  if rel.parts[0] != "transformer" and rel != Path("model_index.json")})
    index = read_json(base / "model_index.json")
    if not isinstance(index.get("transformer"), list) or None in index["transformer"]:
        index["transformer"] = ["diffusers", "Transformer2DModel"]  # as published pipelines name it
    index = json.dumps(index, indent=2, sort_keys=True) + "\n"
    contents = json.dumps([[str(rel), str(target)] for rel, target in sorted(links.items())] + [index])
    folder = cache_root("composed") / f"{name}-{hashlib.sha256(contents.encode()).hexdigest()[:16]}"
    if folder.is_dir():
        return folder
    try:
        return _write_links(folder, links, index)
    except OSError as e:
        raise CheckpointError(f"{folder}: cannot write the pipeline composed of {transformer} and {base} "
                              f"({e.strerror or e}); set $STUDIO_CACHE to a writable folder") from e


def _write_links(folder: Path, links: dict[Path, Path], index: str) -> Path:
    """`compose`'s folder: symbolic links {relative path: target} and model_index.json, written to a temporary
    name and renamed (a folder another process renamed there first is the same: it is kept). The temporary
    folder is removed on any failure; one a killed run left is named after its process as export's temporary
    files are, and removed by the next run (`remove_temporaries`)."""
    root = folder.parent
    root.mkdir(parents=True, exist_ok=True)
    remove_temporaries(root, {folder.name}, remove=lambda path: shutil.rmtree(path, ignore_errors=True))
    temp = temporary_folder(root, folder.name)  # this thread's: another's clean-up leaves it
    try:
        for rel, target in links.items():
            (temp / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, temp / rel)
        (temp / "model_index.json").write_text(index)
        os.rename(temp, folder)
    except OSError:
        shutil.rmtree(temp, ignore_errors=True)
        if not folder.is_dir():
            raise
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return folder


def _files(folder: Path) -> dict[Path, Path]:
    """{path relative to `folder`: the file, resolved} of every file under `folder` but hidden ones, through
    linked folders too."""
    found = {}
    for parent, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith("."):
                path = Path(parent) / name
                found[path.relative_to(folder)] = path.resolve()
    return found


def _resolve_one(path_or_id: str | os.PathLike, weights: bool = True, variant: str | None = None,
                 revision: str | None = None, cache_dir: str | os.PathLike | None = None,
                 local_files_only: bool = False, components: tuple[str, ...] = WEIGHTED_COMPONENTS) -> Path:
    """`resolve_model_dir` of one model, a transformer-only one not completed; `components`: those whose
    weights a cached snapshot must hold (a base pipeline has no transformer)."""
    path_or_id = name = os.fspath(path_or_id)  # a Path or any os.PathLike as its text
    if control_problem(name):  # ($STUDIO_MODEL, the API) the system takes no NUL; a newline would split the message
        raise CheckpointError(f"'{one_line(name)}' {control_problem(name)}")
    path = user_path(path_or_id)
    hub_only = isinstance(path_or_id, HubId)  # a layout's hub id: the same model whatever the working folder holds
    if not hub_only and path.is_dir():
        return _pipeline_folder(path)
    if not hub_only and os.path.lexists(path) or not is_hub_id(name):
        what = describe_path(path)
        raise CheckpointError(f"{name}: no such model folder (and not a hub id like 'owner/name')" if what == "missing"
                              else f"{name}: is {what}, not a model folder; pass the pipeline folder (the one "
                                   "holding model_index.json) or a hub id like 'owner/name'")
    return _pipeline_folder(_snapshot(path_or_id, revision, weights, variant, cache_dir, local_files_only,
                                      components))


def _pipeline_folder(folder: Path) -> Path:
    """`folder`, a pipeline (holding model_index.json) or a transformer-only model; else a CheckpointError that
    names the component folders it holds (a pipeline without its model_index.json is no transformer-only model:
    diffusers refuses it)."""
    problem = not_a_file(folder / "model_index.json")
    if problem is None or problem == "missing file" and transformer_only(folder):
        return folder
    if problem != "missing file":
        raise CheckpointError(f"{folder}: no model_index.json ({problem}); expected a pipeline folder in the "
                              "diffusers layout")
    raise CheckpointError(f"{folder}: {_no_index([c for c in PIPELINE_FOLDERS if os.path.lexists(folder / c)])}")


def _no_index(found: list[str]) -> str:
    """What a model without model_index.json is told; `found`: the component folders it holds."""
    holds = f" (it holds {', '.join(f'{c}/' for c in found)}; a transformer-only model holds transformer/ alone)"
    return f"no model_index.json; expected a pipeline folder in the diffusers layout{holds if found else ''}"


def _snapshot(path_or_id: str, revision: str | None, weights: bool, variant: str | None, cache_dir,
              local_files_only: bool, components: tuple[str, ...]) -> Path:
    """`_resolve_one` of a hub id: its snapshot in the Hugging Face cache, downloaded when the cache lacks what a
    load of `variant` (with `weights`) reads."""
    name, written = split_revision(path_or_id)
    if written is not None:
        if revision is not None and revision != written:
            raise CheckpointError(f"{path_or_id}: names revision '{written}', and revision='{revision}' was given too")
        revision = written
    try:
        from huggingface_hub import list_repo_files, snapshot_download
    except ImportError as e:  # pragma: no cover - a dependency of transformers
        raise CheckpointError(f"{name}: not a local folder and huggingface_hub is not installed") from e
    cache_dir = cache_dir or hub_cache()
    at = f" at revision '{revision}'" if revision else ""
    try:
        cached = Path(snapshot_download(name, revision=revision, cache_dir=cache_dir, local_files_only=True))
    except (OSError, ValueError):  # not in the cache (LocalEntryNotFoundError), or an id it refuses
        cached = None
    offline_by = offline_variable()
    offline = local_files_only or offline_by is not None
    if cached is not None and not weights:
        return cached
    where, complete = f"not in the Hugging Face cache{at}", False
    if cached is not None:
        found = _weight_variants(cached, components)
        held = set().union(*found.values())
        missing = [c for c, variants in found.items() if not variants & {variant, None}]
        # a snapshot a plan fetched holds the configs only: the weights are still to download; and online, a
        # variant the snapshot has no files of is looked for on the hub, as diffusers does, and files lost from
        # the cache (a link to a blob no longer there, a shard an index lists) are downloaded again; offline, a
        # snapshot that names every component's weights is loaded, and a lost file is the loader's error
        complete = not missing
        if complete and (offline or variant in held and _intact(cached, found, variant)):
            return cached
        if not held:
            lacks = "with its configs only, not its weights"
        elif missing:
            kind = "plain" if variant is None else f"{variant} or plain"
            lacks = f"without {kind} weights for {', '.join(missing)}{_variant_hint(held - {variant, None})}"
        else:
            lacks = f"without {variant} weights"
        where = f"in the Hugging Face cache{at} {lacks}"
    if offline:
        why = "local_files_only=True" if local_files_only else f"ConnectionError: {offline_by} is set"
        raise CheckpointError(f"{name}: not a local folder, {where}, and could not be downloaded ({why})"
                              f"{_cached_revisions_hint(name, cache_dir, cached)}; pass the folder of a downloaded "
                              "copy")
    with LOADING:  # the log level is the process's: another thread's download would restore it under us
        hub_log = logging.getLogger("huggingface_hub")
        level = hub_log.level
        hub_log.setLevel(logging.ERROR)  # its retries' warnings ('Retrying in 8s ...'): the error below says it once
        try:
            unreachable = _hub_unreachable()
            if unreachable:
                raise ConnectionError(unreachable)
            patterns = ["*.json"]
            if weights:
                patterns += ["*.model", "*.txt",
                             *download_weight_names(list_repo_files(name, revision=revision), variant, components)]
            return Path(snapshot_download(name, revision=revision, cache_dir=cache_dir, allow_patterns=patterns))
        except CheckpointError as e:  # its weights are not what a load of `variant` reads: nothing downloaded
            raise CheckpointError(f"{name}{at}: {e}") from None
        except Exception as e:  # no network, no such repository or revision, a gated one, ...: said in one line
            if complete:  # the cached snapshot has weights for every component (not the variant's): as offline
                return cached
            raise CheckpointError(
                f"{name}: not a local folder, {where}, and could not be downloaded "
                f"({type(e).__name__}: {first_line(e)}); pass the folder of a downloaded copy") from e
        finally:
            hub_log.setLevel(level)


def offline_variable() -> str | None:
    """The environment variable that makes huggingface_hub offline, read now (it reads them at import):
    HF_HUB_OFFLINE, else TRANSFORMERS_OFFLINE, set to one of its true values (1, ON, YES, TRUE, any case); or
    None."""
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name):  # the first one set decides, as in huggingface_hub ('0' keeps it online)
            return name if os.environ[name].upper() in constants.ENV_VARS_TRUE_VALUES else None
    return None


def hub_cache() -> str:
    """The Hugging Face cache folder, found from the environment now as huggingface_hub finds it at import:
    $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
    ~/.cache/huggingface/hub, with ~ and $VARIABLES expanded."""
    home = expanded(os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"))
    return expanded(os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
                    or os.path.join(home, "hub"))


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")


def _hub_unreachable() -> str | None:
    """Why the hub can't be reached, found at once: its host name does not resolve, which huggingface_hub
    retries for ~25 s before it gives up. None when it resolves, or when a proxy resolves names instead."""
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return None
    from huggingface_hub import constants

    host = urllib.parse.urlsplit(constants.ENDPOINT).hostname
    try:
        socket.getaddrinfo(host, 443)
    except socket.gaierror as e:
        return f"cannot resolve {host}: {e.strerror} (no network?)"
    except (OSError, UnicodeError):
        return None  # not a question of names: left to huggingface_hub
    return None


def transformer_only(folder: Path) -> bool:
    """Whether `folder` is a transformer-only model: transformer/config.json, no model_index.json, and no other
    component's folder (vae/, text_encoder/, tokenizer/, scheduler/: a pipeline that lost its model_index.json)."""
    return (not os.path.lexists(folder / "model_index.json") and (folder / "transformer" / "config.json").is_file()
            and not any(os.path.lexists(folder / c) for c in PIPELINE_FOLDERS if c != "transformer"))


def _weight_variants(folder: Path, components: tuple[str, ...] = WEIGHTED_COMPONENTS) -> dict[str, set]:
    """{component: the variants of its weight files, None for the plain ones} of a cached snapshot (one a plan
    fetched has configs only), of `components`; of a transformer-only one, its transformer's only."""
    components = ("transformer",) if transformer_only(folder) else components
    return {c: {_weight_variant(p.name)[1] for p in (folder / c).iterdir() if _weight_variant(p.name)[0]}
            if (folder / c).is_dir() else set() for c in components}


def _intact(snapshot: Path, components, variant: str | None) -> bool:
    """Whether each component's weight files that a load of `variant` reads are in `snapshot` (`weight_files`: a
    link to a blob no longer in the cache, or a shard an index lists and the cache lost, is not)."""
    try:
        for component in components:
            weight_files(snapshot / component, variant)
    except CheckpointError:
        return False
    return True


def _cached_revisions_hint(name: str, cache_dir, rejected: Path | None = None) -> str:
    """'; the cache holds it at revision=...' naming the snapshots of `name` in the cache (say one reached by
    commit hash only, with no refs/main) but `rejected`, each with the branches and tags that point to it, or
    ''."""
    from huggingface_hub import scan_cache_dir

    try:
        repos = [r for r in scan_cache_dir(cache_dir).repos if r.repo_id == name and r.repo_type == "model"]
    except Exception:  # no cache folder, or one huggingface_hub can't read: nothing to suggest
        return ""
    revisions = sorted((rev.commit_hash, sorted(rev.refs)) for repo in repos for rev in repo.revisions
                       if rejected is None or rev.commit_hash != rejected.name)
    said = [f"revision={h!r}" + (f" ({', '.join(refs)})" if refs else "") for h, refs in revisions]
    return f"; the cache holds it at {', '.join(said)}" if said else ""


# a weight file's name: stem, optional variant, optional shard number ('model.fp16.safetensors',
# 'model.fp16-00001-of-00002.safetensors', the older 'model-00001-of-00002.fp16.safetensors'). A variant is any
# name diffusers takes ('fp16-ema', 'ema.v2'): it puts the variant before '.safetensors' as it is written
_WEIGHT_NAME = re.compile(r"(?P<stem>diffusion_pytorch_model|model)(?:(?:\.(?P<a>.+?))?(?P<shard>-\d+-of-\d+)?"
                          r"|(?P<older_shard>-\d+-of-\d+)\.(?P<b>.+))\.safetensors")


def _weight_variant(name: str) -> tuple[bool, str | None]:
    """(whether `name` is a weight file, its variant or None)."""
    m = _WEIGHT_NAME.fullmatch(name)
    return (m is not None, m and (m["a"] or m["b"]))


def _weight_names(stem: str, variant: str | None) -> list[str]:
    """The names a component's weights of `stem` and `variant` are looked for under, in its reader's order
    (`INDEX_FIRST`): the single file and the shard index (two spellings with a variant)."""
    infix = f".{variant}" if variant else ""
    single = f"{stem}{infix}.safetensors"
    indexes = list(dict.fromkeys([f"{stem}.safetensors.index{infix}.json", f"{stem}{infix}.safetensors.index.json"]))
    return [*indexes, single] if stem in INDEX_FIRST else [single, *indexes]


def download_weight_names(repo_files: list[str], variant: str | None,
                          components: tuple[str, ...] = WEIGHTED_COMPONENTS) -> list[str]:
    """The weight files of a repository's file list that a load of `variant` reads, as diffusers downloads only
    the components it loads: those of `components` (of a transformer-only repository, its transformer alone),
    each component's as `weight_files` picks them: its variant's single file or shards when it has them, else its
    plain ones. A repository without model_index.json that is not transformer-only, or one of `components` with
    weight files of other variants only, is a CheckpointError, as for a local folder (what would be downloaded
    could not load)."""
    files = set(repo_files)
    if "model_index.json" not in files:
        found = [c for c in PIPELINE_FOLDERS if any(f.startswith(f"{c}/") for f in files)]
        if found != ["transformer"] or "transformer/config.json" not in files:
            raise CheckpointError(_no_index(found))
        components = ("transformer",)
    names = []
    for folder in components:
        held = {f.removeprefix(f"{folder}/") for f in files if f.rpartition("/")[0] == folder}
        variants = {_weight_variant(n)[1] for n in held if _weight_variant(n)[0]}
        if variants and not variants & {variant, None}:
            raise _no_weight_file(folder, variant, variants)
        names += [f"{folder}/{n}" for n in _read_names(held, variant)]
    return names


def _read_names(held: set[str], variant: str | None) -> list[str]:
    """Of the file names a component folder holds, the weight files a load of `variant` reads, as `weight_files`
    picks them (the shards of an index by their names: 'model.fp16-00001-of-00002.safetensors' and the like)."""
    for each in dict.fromkeys([variant, None]):
        for stem in WEIGHT_STEMS:
            chosen = next((n for n in _weight_names(stem, each) if n in held), None)
            if chosen is None:
                continue
            if not chosen.endswith(".json"):
                return [chosen]
            matches = [_WEIGHT_NAME.fullmatch(n) for n in sorted(held)]
            return [m[0] for m in matches if m and (m["shard"] or m["older_shard"]) and m["stem"] == stem
                    and (m["a"] or m["b"]) == each]
    return []


def describe_path(path: Path) -> str:
    """What is at `path`, for messages: 'missing', 'a folder', 'a file', 'a symbolic link loop', 'a broken
    symbolic link (to X)', 'not a regular file', or the reason it can't be looked at."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop"
        if os.path.islink(path):
            return f"a broken symbolic link (to {os.readlink(path)})"
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return "missing"
        return f"unreadable ({e.strerror})"
    return "a folder" if stat.S_ISDIR(mode) else "a file" if stat.S_ISREG(mode) else "not a regular file"


def not_a_file(path: Path) -> str | None:
    """None when `path` is a regular file (or a link to one), else what is there instead ('missing file',
    'a folder, not a file', ...)."""
    what = describe_path(path)
    return None if what == "a file" else "missing file" if what == "missing" else f"{what}, not a file"


def read_json(path: Path) -> dict:
    """A JSON file holding an object (config.json, model_index.json, a shard index)."""
    problem = not_a_file(path)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: holds {json.dumps(value)[:40]}, expected a JSON object {{...}}")
    return value


def read_config(config_cls, path: Path):
    """`config_cls.from_dict` of the JSON object in `path`, its errors naming the file."""
    return config_cls.from_dict(read_json(path), path)


# ---------------------------------------------------------------------------------------------------------
# Config values: checked against the dataclass fields' annotations


def config_kwargs(cls, d: dict, where, ignored: frozenset = frozenset(), writer: str = "diffusers",
                  notes: dict[str, str] | None = None) -> dict:
    """The keys of a config dict `d` that are fields of the dataclass `cls`, as its constructor takes them (lists
    as tuples). A ConfigError for a key that is neither a field, private ('_...') nor in `ignored`: for a key in
    `notes` (one another implementation writes), its note says why and what studio takes instead. A
    CheckpointError for a value of the wrong type (`check_types`). `where` names the file in messages."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in d if k not in names and not k.startswith("_") and k not in ignored]
    noted = [f"{k!r} {notes[k]}" for k in unknown if k in (notes or {})]
    unknown = [k for k in unknown if k not in (notes or {})]
    if unknown:
        listed = ", ".join(repr(k) for k in unknown)
        if len(unknown) == 1:
            what = (f"unknown key {listed}: studio doesn't know it (a newer {writer} may have written it); if it "
                    "holds its default value, remove it from the file")
        else:
            what = (f"unknown keys {listed}: studio doesn't know them (a newer {writer} may have written them); if "
                    "they hold their default values, remove them from the file")
        noted.append(f"{what}, else this model needs what studio doesn't implement")
    if noted:
        raise ConfigError(f"{where}: " + "; ".join(noted))
    check_types(cls, d, where)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names}


def check_types(cls, d: dict, where, min_int: int | None = 1) -> None:
    """A CheckpointError naming `where`, the key and its value unless every key of `d` that is a field of the
    dataclass `cls` holds a value of the field's annotation (JSON-like: an int is a float, a list a tuple). An
    integer must be at least `min_int`: the model configs' integers are sizes and counts. A number must be
    finite (JSON as Python reads it has NaN and Infinity), unless it is the field's own non-finite default (the
    scheduler's lambda_min_clipped, -Infinity)."""
    hints = typing.get_type_hints(cls)
    for f in [f for f in dataclasses.fields(cls) if f.name in d]:
        value = d[f.name]
        # (-inf == -inf; a finite float equal to an integer default, solver_order 2.0, is no integer)
        if not (_is_a(value, hints[f.name], min_int) or type(value) is float and not math.isfinite(value)
                and value == f.default):
            raise CheckpointError(f"{where}: '{f.name}' is {json.dumps(value, default=repr)[:60]}; expected "
                                  f"{_describe(hints[f.name], min_int)}")


def _is_a(value, hint, min_int: int | None) -> bool:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return any(_is_a(value, h, min_int) for h in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:  # tuple[X, ...]: a list of X
        return isinstance(value, (list, tuple)) and all(_is_a(v, typing.get_args(hint)[0], None) for v in value)
    if hint is int:
        return type(value) is int and (min_int is None or value >= min_int)
    if hint is float:
        return type(value) is int or type(value) is float and math.isfinite(value)
    return type(value) is (type(None) if hint is None else hint)  # bool, str, None


def _describe(hint, min_int: int | None, plural: bool = False) -> str:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join(_describe(h, min_int, plural) for h in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return f"a list of {_describe(typing.get_args(hint)[0], None, plural=True)}"
    if hint is int:
        return ("integers" if plural else "an integer") + (f" of at least {min_int}" if min_int is not None else "")
    names = {float: ("a finite number", "finite numbers"), bool: ("true or false", "true or false"),
             str: ("a string", "strings"), type(None): ("null", "null")}
    return names.get(hint, (str(hint), str(hint)))[plural]


# ---------------------------------------------------------------------------------------------------------
# Weight files


def weight_files(component_dir: Path, variant: str | None = None) -> list[Path]:
    """The safetensors files of one component (single file or shards listed by an index), for a
    variant such as 'fp16' (`*.fp16.safetensors`), else the plain names: like the reference, a component
    that has no files of the variant loads its plain ones (`falls_back` tells). Of a single file and a shard
    index both there, the one its reader takes (`INDEX_FIRST`): a transformer's or VAE's index, as diffusers; a
    text encoder's single file, as transformers. A shard holding a key that its index maps to another shard is
    an error."""
    what = describe_path(component_dir)
    if what != "a folder":
        raise CheckpointError(f"{component_dir}: " + ("missing folder" if what == "missing" else f"is {what}, "
                                                                                                "not a folder"))
    for stem in WEIGHT_STEMS:
        for candidate in [component_dir / name for name in _weight_names(stem, variant)]:
            if not os.path.lexists(candidate):
                continue
            if not_a_file(candidate):  # a broken link (a blob lost from the hub cache), a folder, ...
                raise CheckpointError(f"{candidate}: {not_a_file(candidate)}")
            return _shards(candidate) if candidate.name.endswith(".json") else [candidate]
    if variant:
        try:
            return weight_files(component_dir)
        except CheckpointError:
            pass  # neither: name the variant's files below
    pickles = sorted(p.name for p in component_dir.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"{component_dir / pickles[0]}: pickle weights are refused (they can run code when loaded); "
            "convert them to safetensors, e.g. with diffusers: "
            "Model.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)")
    raise _no_weight_file(component_dir, variant, {_weight_variant(p.name)[1] for p in component_dir.iterdir()})


def _no_weight_file(where, variant: str | None, variants: set) -> CheckpointError:
    """The error of a component (`where`) with no weight file of `variant` nor plain ones; `variants`: those of
    its files (None: plain, or no weight file), one of which the message says to pass."""
    infix = f".{variant}" if variant else ""
    want = f"{WEIGHT_STEMS[0]}{infix}.safetensors or {WEIGHT_STEMS[1]}{infix}.safetensors"
    return CheckpointError(f"{where}: no weight file ({want}, or a .safetensors.index.json)"
                           f"{_variant_hint(variants - {variant, None})}")


def _variant_hint(variants: set[str]) -> str:
    """' (found fp16 variant files: pass variant='fp16' / --variant fp16)' for the first of `variants`, or ''."""
    found = sorted(variants)
    return f" (found {found[0]} variant files: pass variant='{found[0]}' / --variant {found[0]})" if found else ""


def falls_back(files: list[Path], variant: str | None) -> bool:
    """Whether a component's `weight_files` for `variant` are its plain ones (it has none of the variant)."""
    return variant is not None and _weight_variant(files[0].name)[1] != variant


def _shards(index: Path) -> list[Path]:
    """The shard files an index lists, each checked to exist and to hold only keys the index maps to it."""
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index}: no 'weight_map' in the shard index (an object: key -> shard file name)")
    shards = [index.parent / name for name in dict.fromkeys(weight_map.values())]
    for shard in shards:
        problem = not_a_file(shard)
        if problem:
            raise CheckpointError(f"{shard}: {'missing shard' if problem == 'missing file' else problem} listed in "
                                  f"{index.name}")
    for shard in shards:  # a key in two shards is one of these (or, if the index doesn't list it, a load_weights error)
        for key in SafetensorsFile(shard).keys():
            if weight_map.get(key, shard.name) != shard.name:
                raise CheckpointError(f"{shard}: holds key '{key}', which {index.name} maps to {weight_map[key]}")
    return shards


class SafetensorsFile:
    """A safetensors file: names and shapes from its header (its layout checked as safetensors does), then one
    tensor (or some rows of one) at a time.

    Tensors are read with plain file reads, not through a memory map: a map's pages count in the process's
    resident memory while it is open (`benchmarks/t5_streaming.py --layers 2`, 2.1 GB of weights in two
    shards: 4.24 GiB peak RSS loading through a map, 2.80 GiB with reads), a read's pages only in the
    kernel's reclaimable page cache."""

    def __init__(self, path: Path):
        self.path = path
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated safetensors file (no header)")
            n = int.from_bytes(head, "little")
            if n <= 0 or 8 + n > size:
                raise CheckpointError(f"{path}: truncated or corrupt safetensors file (header of {n} bytes, "
                                      f"file of {size})")
            try:
                header = json.loads(f.read(n), object_pairs_hook=_unique_keys)
            except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, a repeated key
                raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from e
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
        metadata = header.pop("__metadata__", None)
        if not (metadata is None or isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
            raise CheckpointError(f"{path}: corrupt safetensors header: '__metadata__' is "
                                  f"{json.dumps(metadata)[:60]}; expected an object of strings")
        for key, entry in header.items():
            _check_entry(path, key, entry)
        self.data_start = 8 + n
        self.entries = header
        # as safetensors: in offset order, each tensor's bytes start where the previous one's end (zero-size
        # tensors share their offset), from the data's first byte to the file's last
        end, last = 0, None
        for key in sorted(header, key=lambda k: header[k]["data_offsets"]):
            begin, stop = header[key]["data_offsets"]
            if begin != end:
                where = (f"before key '{last}' ends (at {end}): their bytes overlap" if begin < end else
                         f"after a gap: {f'key {last!r} ends' if last else 'the data starts'} at {end}")
                raise CheckpointError(f"{path}: corrupt safetensors header: key '{key}' starts at byte {begin} of "
                                      f"the data, {where}")
            end, last = stop, key
        if self.data_start + end > size:
            raise CheckpointError(f"{path}: truncated safetensors file: key '{last}' ends at byte "
                                  f"{self.data_start + end}, file has {size}")
        if self.data_start + end < size:
            raise CheckpointError(f"{path}: corrupt safetensors file: {size - self.data_start - end} bytes after "
                                  f"the last tensor's data (which ends at byte {self.data_start + end})")

    def keys(self):
        return self.entries.keys()

    def shape(self, key: str) -> tuple:
        return tuple(self.entries[key]["shape"])

    def array(self, key: str) -> np.ndarray:
        """The tensor as a numpy array; BF16 comes back as float32 (numpy has no bfloat16)."""
        entry = self.entries[key]
        begin, end = entry["data_offsets"]
        raw = np.empty(end - begin, np.uint8)
        with open(self.path, "rb") as f:
            f.seek(self.data_start + begin)
            f.readinto(raw)
        return _decode(raw, entry["dtype"]).reshape(entry["shape"])

    def check_float(self, key: str) -> None:
        """A CheckpointError unless `key` holds floating-point values, what a model's parameters take (an integer
        or bool tensor in their place is a damaged or foreign checkpoint, not something to cast)."""
        code = self.entries[key]["dtype"]
        if code not in _FLOAT_CODES:
            raise CheckpointError(f"{self.path}: key '{key}' has dtype {code}; expected a floating dtype (F32, F16 "
                                  "or BF16; F64 is read too)")

    def rows(self, key: str, index: np.ndarray) -> np.ndarray:
        """Rows `index` (int array of any shape) of a 2D float tensor, reading only those rows:
        (*index.shape, columns). For an embedding table of which a prompt needs a few dozen rows."""
        self.check_float(key)
        entry = self.entries[key]
        n, columns = entry["shape"]
        itemsize = np.dtype(_ST_DTYPES[entry["dtype"]]).itemsize
        unique, inverse = np.unique(index, return_inverse=True)
        if unique.size and not 0 <= unique[0] <= unique[-1] < n:
            raise IndexError(f"{self.path}: '{key}' has {n} rows, asked for row {unique[-1]}")
        raw = np.empty((unique.size, columns * itemsize), np.uint8)
        with open(self.path, "rb") as f:
            for row, i in zip(raw, unique):
                f.seek(self.data_start + entry["data_offsets"][0] + int(i) * columns * itemsize)
                f.readinto(row)
        return _decode(raw.reshape(-1), entry["dtype"]).reshape(unique.size, columns)[inverse.reshape(-1)].reshape(
            *index.shape, columns)


def _decode(raw: np.ndarray, code: str) -> np.ndarray:
    """Stored bytes (uint8, 1D) -> values; BF16 widened to float32 (numpy has no bfloat16)."""
    arr = raw.view(_ST_DTYPES[code])
    return (arr.astype(np.uint32) << 16).view(np.float32) if code == "BF16" else arr


def _unique_keys(pairs: list[tuple[str, typing.Any]]) -> dict:
    """A JSON object of a safetensors header; a key given twice is a ValueError (json.loads keeps the last)."""
    twice = [key for key, count in collections.Counter(key for key, _ in pairs).items() if count > 1]
    if twice:
        raise ValueError(f"key '{twice[0]}' is given twice")
    return dict(pairs)


def _check_entry(path: Path, key: str, entry) -> None:
    """One header entry: a known dtype, a shape, and data offsets spanning exactly that many bytes."""
    try:
        code, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        ints = [*shape, begin, end]
        if not all(type(i) is int and i >= 0 for i in ints):
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: corrupt safetensors header: key '{key}' needs a dtype, a shape and "
                              "two data offsets") from None
    if code not in _ST_DTYPES:
        raise CheckpointError(f"{path}: key '{key}' has unsupported dtype {code}")
    nbytes = math.prod(shape) * np.dtype(_ST_DTYPES[code]).itemsize  # Python ints: no overflow
    if end - begin != nbytes:
        raise CheckpointError(f"{path}: corrupt safetensors header: key '{key}' of shape {list(shape)} "
                              f"{code} takes {nbytes} bytes, its data offsets span {end - begin}")


def check_weights(cell: ms.nn.Cell, files: list["Path | SafetensorsFile"],
                  prefix: str = "") -> dict[str, tuple[SafetensorsFile, str]]:
    """Which tensor of `files` fills each parameter of `cell`, from the files' headers alone (no weight is read):
    {parameter name: (file, key)}.

    Strict: an unexpected key, a key in two files, a tensor that is not floating-point, a shape mismatch, or
    a parameter no file provides is a CheckpointError.
    A cell may define `checkpoint_aliases`, {checkpoint key: parameter name}, for keys stored under a
    second name (T5's tied embedding: `encoder.embed_tokens.weight` is `shared.weight`); where a checkpoint
    holds both, the alias fills the parameter, whatever the order of the keys: it is what transformers' T5
    encoder reads (it unties the two when they differ). With a `prefix` (e.g. "encoder.block.3.") only the
    keys under it count, for the parameters named by the rest of the key: one part of a model at a time (the
    streamed T5 encoder, which passes its files opened once: `SafetensorsFile`s, so their headers are not read
    again for every part), strict within that part.
    """
    params = dict(cell.parameters_and_names())
    aliases = getattr(cell, "checkpoint_aliases", {})
    sources: dict[str, tuple[SafetensorsFile, str]] = {}
    read: dict[str, Path] = {}  # key -> the file it is in
    for st in files:
        st = st if isinstance(st, SafetensorsFile) else SafetensorsFile(st)
        path = st.path
        for key in st.keys():
            if not key.startswith(prefix):
                continue
            if key in read:
                raise CheckpointError(f"{path}: key '{key}' is stored twice, here and in {read[key]}")
            read[key] = path
            local = key[len(prefix):]
            name = local if local in params else aliases.get(local)
            if name is None:
                raise CheckpointError(f"{path}: unexpected key '{key}' (not a parameter of {type(cell).__name__})")
            p = params[name]
            if st.shape(key) != tuple(p.shape):
                raise CheckpointError(f"{path}: key '{key}' has shape {list(st.shape(key))}, "
                                      f"the model expects {list(p.shape)}")
            st.check_float(key)
            if local != name or name not in sources:  # the parameter's own key does not replace its alias
                sources[name] = (st, key)
    missing = [name for name in params if name not in sources]
    if missing:
        paths = [getattr(f, "path", f) for f in files]
        where = paths[0] if len(paths) == 1 else f"{paths[0].parent} ({', '.join(p.name for p in paths)})"
        raise CheckpointError(f"{where}: missing key '{prefix}{missing[0]}' in the checkpoint"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return sources


def load_weights(cell: ms.nn.Cell, files: list["Path | SafetensorsFile"], prefix: str = "",
                 progress: typing.Callable[[int], None] | None = None) -> None:
    """Copy into each parameter of `cell` the tensor of `files` that `check_weights` gives it (strictly; aliases
    and `prefix` as there), in the parameter's dtype. progress(bytes): called after each tensor with the bytes
    it took in its file."""
    params = dict(cell.parameters_and_names())
    for name, (st, key) in check_weights(cell, files, prefix).items():
        p = params[name]
        arr = st.array(key)  # a fresh array: the tensor may take it over without a copy
        stored = arr.nbytes
        arr = arr.astype(_NP_FLOAT.get(p.dtype, np.float32), copy=False)
        arr = np.ascontiguousarray(arr)
        same = arr.dtype == _NP_FLOAT.get(p.dtype)  # from_numpy: no copy (a third of a T5 block's load)
        p.set_data(ms.from_numpy(arr) if same else ms.Tensor(arr, dtype=p.dtype))
        if progress is not None:
            progress(stored)


def load_component(model_cls, config_cls, folder, dtype, variant: str | None = None,
                   progress: typing.Callable[[int], None] | None = None):
    """Build `model_cls(config_cls.from_dict(folder/config.json), dtype)` and load its weights strictly
    (progress: see `load_weights`). A dtype the device can't compute in (bf16 on the CPU) is widened, and said."""
    from studio import backend

    folder = Path(folder)
    dtype = backend.widened(dtype, stacklevel=3)  # to the caller of the model's from_pretrained
    model = model_cls(read_config(config_cls, folder / "config.json"), dtype)
    load_weights(model, weight_files(folder, variant), progress=progress)
    return model
