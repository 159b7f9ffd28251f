"""Model folders in the diffusers layout -> weights in MindSpore cells.

Takes a local folder or a Hugging Face hub id; gives configs (dicts) and fills a cell's parameters from
the component's safetensors, strictly: parameter names equal checkpoint keys, every key must match a
parameter of the same shape, and every parameter must be in the checkpoint. Safetensors are read one
tensor (or some rows of one) at a time with plain reads, straight into the target dtype. Pickle files are
refused.
"""

import json
import os
from pathlib import Path

import mindspore as ms
import numpy as np

from studio.errors import CheckpointError
from studio.hub import is_hub_id

PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pkl")
WEIGHT_STEMS = ("diffusion_pytorch_model", "model")

# safetensors dtype code -> numpy dtype of the stored bytes (bf16 as its raw 16 bits)
_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}

_NP_FLOAT = {ms.float16: np.float16, ms.float32: np.float32, ms.float64: np.float64}  # bf16 goes via fp32


def resolve_model_dir(path_or_id: str | os.PathLike, weights: bool = True) -> Path:
    """A local folder as is; otherwise a hub id looked up in the local Hugging Face cache, then
    downloaded with huggingface_hub when the machine is online: the whole pipeline, or with
    weights=False only its JSON configs (what a memory plan reads; no multi-GB download to plan)."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise CheckpointError(f"{path}: no model_index.json; expected a pipeline folder in the diffusers layout")
        return path
    name = str(path_or_id)
    if not is_hub_id(name):
        raise CheckpointError(f"{name}: no such model folder (and not a hub id like 'owner/name')")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - a dependency of transformers
        raise CheckpointError(f"{name}: not a local folder and huggingface_hub is not installed") from e
    patterns = ["*.json", "*.safetensors", "*.model", "*.txt"] if weights else ["*.json"]
    cache_dir = os.environ.get("HF_HUB_CACHE") or None  # read now: huggingface_hub reads it at import
    try:
        folder = Path(snapshot_download(name, local_files_only=True, allow_patterns=patterns, cache_dir=cache_dir))
        # a snapshot a plan fetched holds only the configs: then the weights are still to download
        if not weights or any((folder / "transformer").glob("*.safetensors")):
            return folder
    except (OSError, ValueError):  # not in the cache (LocalEntryNotFoundError), or an id it refuses
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        if offline:
            raise ConnectionError("HF_HUB_OFFLINE is set")
        return Path(snapshot_download(name, allow_patterns=patterns, cache_dir=cache_dir))
    except Exception as e:  # no network, no such repository, a gated one, ...: said in one line
        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{name}: not a local folder, not in the Hugging Face cache, and could not be downloaded "
            f"({type(e).__name__}: {why}); pass the folder of a downloaded copy") from e


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e


def weight_files(component_dir: Path, variant: str | None = None) -> list[Path]:
    """The safetensors files of one component (single file or shards listed by an index), for a
    variant such as 'fp16' (`*.fp16.safetensors`), else the plain names: like the reference, a component
    that has no files of the variant loads its plain ones."""
    if not component_dir.is_dir():
        raise CheckpointError(f"{component_dir}: missing folder")
    infix = f".{variant}" if variant else ""
    for stem in WEIGHT_STEMS:
        single = component_dir / f"{stem}{infix}.safetensors"
        if single.is_file():
            return [single]
        index = component_dir / f"{stem}.safetensors.index{infix}.json"
        if not index.is_file():
            index = component_dir / f"{stem}{infix}.safetensors.index.json"
        if index.is_file():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{index}: no 'weight_map' in the shard index")
            shards = [component_dir / name for name in dict.fromkeys(weight_map.values())]
            for shard in shards:
                if not shard.is_file():
                    raise CheckpointError(f"{shard}: missing shard listed in {index.name}")
            return shards
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
    want = f"{WEIGHT_STEMS[0]}{infix}.safetensors or {WEIGHT_STEMS[1]}{infix}.safetensors"
    raise CheckpointError(f"{component_dir}: no weight file ({want}, or a .safetensors.index.json)")


class SafetensorsFile:
    """A safetensors file: names and shapes from its header, then one tensor (or some rows of one) at a time.

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
                header = json.loads(f.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from e
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
        header.pop("__metadata__", None)
        for key, entry in header.items():
            _check_entry(path, key, entry)
        self.data_start = 8 + n
        self.entries = header
        end = max((e["data_offsets"][1] for e in header.values()), default=0)
        if self.data_start + end > size:
            last = max(header, key=lambda k: header[k]["data_offsets"][1])
            raise CheckpointError(f"{path}: truncated safetensors file: key '{last}' ends at byte "
                                  f"{self.data_start + end}, file has {size}")

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

    def rows(self, key: str, index: np.ndarray) -> np.ndarray:
        """Rows `index` (int array of any shape) of a 2D tensor, reading only those rows:
        (*index.shape, columns). For an embedding table of which a prompt needs a few dozen rows."""
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


def _check_entry(path: Path, key: str, entry) -> None:
    """One header entry: a known dtype, a shape, and data offsets spanning exactly that many bytes."""
    try:
        code, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        ints = [*shape, begin, end]
        if not all(isinstance(i, int) and i >= 0 for i in ints):
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: corrupt safetensors header: key '{key}' needs a dtype, a shape and "
                              "two data offsets") from None
    if code not in _ST_DTYPES:
        raise CheckpointError(f"{path}: key '{key}' has unsupported dtype {code}")
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(_ST_DTYPES[code]).itemsize
    if end - begin != nbytes:
        raise CheckpointError(f"{path}: corrupt safetensors header: key '{key}' of shape {list(shape)} "
                              f"{code} takes {nbytes} bytes, its data offsets span {end - begin}")


def load_weights(cell: ms.nn.Cell, files: list["Path | SafetensorsFile"], prefix: str = "") -> None:
    """Copy every tensor of `files` into the parameter of the same name, in the parameter's dtype.

    Strict: an unexpected key, a shape mismatch, or a parameter no file provides is a CheckpointError.
    A cell may define `checkpoint_aliases`, {checkpoint key: parameter name}, for keys stored under a
    second name (T5's tied embedding: `encoder.embed_tokens.weight` is `shared.weight`). With a `prefix`
    (e.g. "encoder.block.3.") only the keys under it are read, into the parameters named by the rest of
    the key: one part of a model at a time (the streamed T5 encoder, which passes its files opened once:
    `SafetensorsFile`s, so their headers are not read again for every part), strict within that part.
    """
    params = dict(cell.parameters_and_names())
    aliases = getattr(cell, "checkpoint_aliases", {})
    filled: set[str] = set()
    for st in files:
        st = st if isinstance(st, SafetensorsFile) else SafetensorsFile(st)
        path = st.path
        for key in st.keys():
            if not key.startswith(prefix):
                continue
            local = key[len(prefix):]
            name = local if local in params else aliases.get(local)
            if name is None:
                raise CheckpointError(f"{path}: unexpected key '{key}' (not a parameter of {type(cell).__name__})")
            p = params[name]
            if st.shape(key) != tuple(p.shape):
                raise CheckpointError(f"{path}: key '{key}' has shape {list(st.shape(key))}, "
                                      f"the model expects {list(p.shape)}")
            arr = st.array(key)  # a fresh array: the tensor may take it over without a copy
            if np.issubdtype(arr.dtype, np.floating):
                arr = arr.astype(_NP_FLOAT.get(p.dtype, np.float32), copy=False)
            arr = np.ascontiguousarray(arr)
            same = arr.dtype == _NP_FLOAT.get(p.dtype)  # from_numpy: no copy (a third of a T5 block's load)
            p.set_data(ms.from_numpy(arr) if same else ms.Tensor(arr, dtype=p.dtype))
            filled.add(name)
    missing = [name for name in params if name not in filled]
    if missing:
        paths = [getattr(f, "path", f) for f in files]
        where = paths[0] if len(paths) == 1 else f"{paths[0].parent} ({', '.join(p.name for p in paths)})"
        raise CheckpointError(f"{where}: missing key '{prefix}{missing[0]}' in the checkpoint"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))


def load_component(model_cls, config_cls, folder, dtype, variant: str | None = None):
    """Build `model_cls(config_cls.from_dict(folder/config.json), dtype)` and load its weights strictly."""
    folder = Path(folder)
    model = model_cls(config_cls.from_dict(read_json(folder / "config.json")), dtype)
    load_weights(model, weight_files(folder, variant))
    return model
