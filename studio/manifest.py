"""Written files -> records of how they were made: the manifest of one batch item and the batch's log.

A batch item's outputs get a sidecar `<name>.manifest.json` next to them, written atomically after the
outputs, and a line in `OUTDIR/manifest.jsonl`. The sidecar is the proof an item is finished: `check`
says why an item is not done (no sidecar, a damaged or edited one, another item's, changed inputs or
weights, a missing or altered file) or None when it is. A record carries its item key (`item_key`: the
layout's sha256, the variables, the job model's identity when the item uses that model) and a digest over
all its other keys, so an edit shows. File hashes are sha256; `FileHashes` remembers them by path and
`file_stamp`, so a batch reads each weight file once, and a rerun reads no output unchanged since its hash.
"""

import functools
import hashlib
import json
import os
import platform
import time
from pathlib import Path

from studio.export import write_temp
from studio.spec import user_path

FORMAT = "studio-batch-manifest/1"
SIDECAR_SUFFIX = ".manifest.json"
LOG_NAME = "manifest.jsonl"
# Pillow's native libraries that decide text layout, drawing and the files' bytes (`pillow_libraries`)
PILLOW_LIBRARIES = ("raqm", "fribidi", "harfbuzz", "freetype2", "zlib", "libjpeg_turbo", "libtiff", "littlecms2")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    """The sha256 of text as UTF-8: of a file's bytes when `text` was read without newline translation."""
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_json(value) -> str:
    """The hash of a JSON-able value in canonical form (sorted keys, no spaces); numpy numbers (a layout built
    in code may hold them) as the Python numbers they equal."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"), default=_number).encode()
                          ).hexdigest()


def _number(value):
    """json's fallback: a numpy number as its Python number; anything else is not JSON."""
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def file_stamp(path: Path) -> list[int]:
    """What tells a file's versions apart without reading it: [size, mtime_ns, inode, ctime_ns]. The mtime alone
    can be set back (cp -p, tar x, reproducible builds); the ctime can't, and a file written anew by a rename
    has another inode."""
    st = Path(path).stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def _json(text: str | bytes):
    """json.loads, with nesting too deep for the parser (a RecursionError) raised as a ValueError, as other
    damage is: a damaged memo, sidecar or log line is told from a sound one the same way."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("not JSON (nested too deeply)") from None


def _is_memo_entry(value) -> bool:
    """[size, mtime_ns, inode, ctime_ns, sha256]: a `FileHashes` memo's entry (`file_stamp` and the hash)."""
    return isinstance(value, list) and len(value) == 5 and all(map(_is_count, value[:4])) and _is_text(value[4])


def _read_memo(memo: Path | None) -> dict:
    """The entries of a `FileHashes` memo; what is not an entry is dropped, none for a missing or damaged one."""
    try:
        known = _json(memo.read_text()) if memo is not None and memo.is_file() else {}
    except (OSError, ValueError):
        known = {}
    return {path: entry for path, entry in known.items() if _is_memo_entry(entry)} if isinstance(known, dict) else {}


class FileHashes:
    """sha256 of files, remembered in `memo` (a JSON file: {resolved path: `file_stamp` + [sha256]}) by resolved
    path and stamp: a file whose stamp is the memo's is not read again; any change (a write, truncation, touch,
    a file renamed over it) gives another stamp, so it is read anew. A damaged memo (not JSON, or not of that
    shape) only costs a rehash: what is not an entry is dropped, as are the entries of memos written before
    the stamp held the inode and ctime ([size, mtime_ns, sha256]). store=False: the memo is read, never
    written (a read-only shared cache)."""

    def __init__(self, memo: Path | None, store: bool = True):
        self.memo, self.store = memo, store
        self.known = _read_memo(memo)
        self.new: dict = {}  # the entries hashed here since the memo was last written
        self.saved = None  # time.monotonic() of the last write
        self.failed = False

    def __call__(self, path: Path) -> str:
        path = Path(path).resolve()
        stamp = file_stamp(path)  # before reading: a write while it is read changes the ctime after this stamp
        entry = self.known.get(str(path))
        if entry and entry[:4] == stamp:
            return entry[4]
        digest = sha256_file(path)
        self.known[str(path)] = self.new[str(path)] = stamp + [digest]
        return digest

    def save(self, every: float = 0.0) -> str | None:
        """Write the memo when it gained entries, unless it was written less than `every` seconds ago (its
        size grows with a batch's outputs). Shards share it: the entries another wrote since it was read are
        kept, this one's over them, and those of files deleted since are dropped (the memo would grow with every
        output ever hashed); two writes at one moment may lose the first's, which are hashed again next time.
        One that can't be written (a full disk, a read-only folder) only costs hashing again next time: the
        first failure returns a warning, the others None."""
        if self.memo is None or not self.new or not self.store:
            return None
        if self.saved is not None and time.monotonic() - self.saved < every:
            return None
        self.saved = time.monotonic()
        merged = {**self.known, **_read_memo(self.memo), **self.new}
        self.known = {path: entry for path, entry in merged.items() if os.path.lexists(path)}  # not deleted files
        data = json.dumps(self.known, sort_keys=True).encode()
        try:
            self.memo.parent.mkdir(parents=True, exist_ok=True)
            os.replace(write_temp(self.memo.parent, self.memo.name, lambda f: f.write(data)), self.memo)
        except OSError as e:
            first, self.failed = not self.failed, True
            return f"cannot write {self.memo} ({e.strerror or e}); files are hashed again next run" if first else None
        self.new = {}
        return None


def model_files(folder: Path) -> list[Path]:
    """The files of a pipeline folder that decide its output: configs, weights (the plain ones: a batch loads
    no variant), tokenizer, scheduler."""
    from studio.checkpoint import weight_files

    files = [folder / "model_index.json", folder / "scheduler" / "scheduler_config.json"]
    for component in ("transformer", "vae", "text_encoder"):
        files += [folder / component / "config.json"] + weight_files(folder / component)
    files += sorted(p for p in (folder / "tokenizer").iterdir() if p.is_file())
    return files


def model_identity(model: str, cwd: str | None = None) -> str:
    """The model as an item key names it: a local folder by its resolved absolute path, however it is spelled
    ('m', './m', a symbolic link), anything else (a hub id) as given. A relative name is read from `cwd` (None:
    the working folder)."""
    path = Path(cwd or ".") / user_path(model)
    return str(path.resolve()) if path.is_dir() else str(model)


def models_by_identity(models: dict, cwd: str | None = None) -> dict:
    """{`model_identity`: files} of a record's `models` ({model as spelled: {file: sha256}}), its names read from
    `cwd`: 'm', './m' and '/abs/m' are one model, and each model keeps its own files (a layout's layers name
    their models, so two models' folders swapped are other models for its layers)."""
    return {model_identity(name, cwd): files for name, files in models.items()}


def same_models(recorded: dict, cwd: str | None, now: dict) -> bool:
    """Whether a record's `models` (its names read from its `cwd`) are the models an item uses `now`: model by
    model while they are the same models (`models_by_identity`), so two folders swapped differ; when the names
    are others (a project moved whole, its models inside it: a layout names them by absolute path), by their
    files alone, as a moved project's images are found by their names relative to the layout."""
    before, after = models_by_identity(recorded, cwd), models_by_identity(now)
    if before.keys() == after.keys():
        return before == after
    return sorted(map(sha256_json, before.values())) == sorted(map(sha256_json, after.values()))


def item_key(layout_sha256: str | None, variables: dict, model_identity: str | None) -> str:
    """An item's identity: the hash of its layout file's bytes, its variables and the job's model (None for an
    item whose layout names its models: the job's does not make it)."""
    return sha256_json({"layout": layout_sha256, "variables": variables, "model": model_identity})


def model_record(model_id: str, hashes: FileHashes) -> dict:
    """{"id", "folder", "files": {relative path: sha256}} of a model folder or hub id; of a transformer-only
    model, also "base": the base pipeline that completed it (`checkpoint.base_label`)."""
    from studio.checkpoint import base_label, is_composed, resolve_model_dir

    folder = resolve_model_dir(model_id)
    record = {"id": str(model_id), "folder": str(folder.resolve()),
              "files": {p.relative_to(folder).as_posix(): hashes(p) for p in model_files(folder)}}
    return record | ({"base": base_label()} if is_composed(folder) else {})


def software() -> dict:
    """Versions of what decides the pixels and the file bytes; `studio_build` tells two builds of studio apart,
    which share a version number."""
    import PIL

    from studio import __version__

    return {"studio": __version__, **computing_software(), "pillow": PIL.__version__,
            "transformers": _version("transformers"), "tokenizers": _version("tokenizers"),
            "python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "pillow_libraries": pillow_libraries()}


def pillow_libraries() -> str:
    """The native libraries Pillow lays text out, draws and encodes with, as found at run time: 'raqm 0.11.0,
    fribidi 1.0.8, ...', 'none' for one missing (without fribidi, raqm is off: text is laid out without
    kerning); a from-source Pillow links the system's codecs, whose versions change the files' bytes."""
    from PIL import features

    return ", ".join(f"{name} {features.version(name) if features.check(name) else 'none'}"
                     for name in PILLOW_LIBRARIES)


def _version(package: str) -> str | None:
    """An installed package's version (the tokenizer's packages decide the token ids), None if absent."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


SOURCE_SUFFIXES = (".py", ".cc")  # the modules, and the fused CPU kernels' C++ (compiled on first use)


def source_hash(root: Path) -> str:
    """sha256 over the source files under `root` (SOURCE_SUFFIXES, in every subfolder): each one's path
    relative to `root` and the sha256 of its bytes, in path order. A file edited, added, removed or renamed
    changes it; compiled files (__pycache__) don't."""
    files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*")
                   if p.suffix in SOURCE_SUFFIXES and p.is_file())
    return sha256_json([[name, sha256_file(path)] for name, path in files])


def computing_software() -> dict:
    """What decides computed values beyond their inputs: studio's build, MindSpore's and numpy's versions, and
    how this process computes (`compute_identity`). Part of the keys of what is kept between runs (T5 features,
    generated art), so that after a `git pull` or an upgrade none is served that another build computed."""
    import mindspore
    import numpy

    return {"studio_build": studio_build(), "mindspore": mindspore.__version__, "numpy": numpy.__version__,
            "compute": compute_identity()}


@functools.cache
def studio_build() -> str:
    """The build of studio this process runs: `source_hash` of the package's folder, computed once. The
    kernels' C++ counts too (`compute` also names their compiled build): it decides the pixels on a CPU that
    uses them."""
    return source_hash(Path(__file__).resolve().parent)


def compute_identity() -> str:
    """How this process computes, which changes results in their last bits: the device, and on the CPU the
    fused kernels' build (named by a hash of their source, the compiler and the CPU's flags) or none
    (STUDIO_CPU_KERNELS=0, no compiler). Keeps apart the machines that share a T5 cache; recorded with the
    software, so that `rerender` can say why bytes may differ."""
    from studio import backend, kernels

    if not backend.on_cpu():
        return backend.device_target()
    library = kernels.library()
    return f"CPU with {library.name}" if library else "CPU without fused kernels"


def software_changes(recorded: dict, now: dict) -> list[str]:
    """'name: recorded -> now' for what decides the pixels or the bytes and differs (the platform string
    aside: a kernel update changes it, not the results). A key the record lacks is not compared, but for
    `studio_build`: a manifest written before studio recorded its build was made by an unknown build, which
    may differ ('studio_build: unknown -> 0123456789ab'; builds show 12 hex digits of their hash)."""
    keys = ("studio", "studio_build", "mindspore", "numpy", "pillow", "pillow_libraries", "transformers",
            "tokenizers", "python", "machine", "compute")
    changes = []
    for k in keys:
        before = recorded.get(k, "unknown" if k == "studio_build" else now.get(k))
        if before != now.get(k):
            show = (lambda v: str(v)[:12]) if k == "studio_build" else str
            changes.append(f"{k}: {show(before)} -> {show(now.get(k))}")
    return changes


# -- the sidecar ----------------------------------------------------------------------------------------------

def sidecar_path(folder: Path, stem: str) -> Path:
    return folder / (stem + SIDECAR_SUFFIX)


def record_digest(record: dict) -> str:
    """The hash of every key of a record but `digest` (canonical JSON): stored as its `digest`."""
    return sha256_json({k: v for k, v in record.items() if k != "digest"})


def write_sidecar(path: Path, record: dict) -> None:
    """Write `record` as JSON atomically (temporary file, fsync, rename)."""
    data = (json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    os.replace(write_temp(path.parent, path.name, lambda f: f.write(data)), path)


def load_sidecar(path: Path) -> dict:
    """The record in `path`; FileNotFoundError when there is none, another OSError when it can't be read,
    ValueError saying what is wrong when it is not a whole, unedited studio manifest (`record_problem`)."""
    try:
        record = _json(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    problem = record_problem(record)
    if problem:
        raise ValueError(problem)
    return record


def _is_text(value) -> bool:
    return isinstance(value, str)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _mapping_of(test):
    return lambda value: isinstance(value, dict) and all(_is_text(k) and test(v) for k, v in value.items())


def _is_file_entry(value) -> bool:
    return isinstance(value, dict) and _is_text(value.get("path")) and _is_count(value.get("bytes")) \
        and _is_text(value.get("sha256"))


_SHAPE = {  # key -> (test, what it must be); what the batch's resume and rerender read
    "item": (_is_text, "text"),
    "name": (_is_text, "text"),
    "model": (_is_text, "text"),
    "layout": (lambda v: isinstance(v, dict) and all(_is_text(v.get(k)) for k in ("path", "file", "sha256", "text")),
               "a mapping of text: path, file, sha256, text"),
    "variables": (_mapping_of(_is_text), "a mapping of name: text"),
    "inputs": (_mapping_of(lambda v: v is None or _is_text(v)), "a mapping of input: sha256"),
    "models": (_mapping_of(_mapping_of(_is_text)), "a mapping of model: {file: sha256}"),
    "memory_budget": (lambda v: _is_count(v) and v > 0, "a positive byte count"),
    "generations": (lambda v: isinstance(v, list), "a list"),
    "text_encoder": (_mapping_of(_is_text), "a mapping of model: kept or released"),
    "files": (lambda v: isinstance(v, list) and v and all(map(_is_file_entry, v)),
              "a non-empty list of {path, bytes, sha256}"),
    "model_identity": (lambda v: v is None or _is_text(v), "text or null"),
    "model_folders": (_mapping_of(_is_text), "a mapping of model: folder"),
    "cwd": (_is_text, "text"),
    "digest": (_is_text, "text"),
}


def record_problem(record) -> str | None:
    """Why `record` is not a whole, unedited item record, or None: each key the batch reads is there with the
    right kind; the layout text hashes to layout.sha256; the item key is that of the layout, variables and
    model; the digest is that of the record."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return f"not a studio batch manifest (format {FORMAT})"
    for key, (test, what) in _SHAPE.items():
        if key not in record:
            return f"'{key}' is missing"
        if not test(record[key]):
            return f"'{key}' is not {what}"
    layout = record["layout"]
    if sha256_text(layout["text"]) != layout["sha256"]:
        return "layout.text does not match layout.sha256 (edited)"
    if item_key(layout["sha256"], record["variables"], record["model_identity"]) != record["item"]:
        return "'item' is not the key of its layout, variables and model (edited)"
    if record["digest"] != record_digest(record):
        return "'digest' does not match the record (edited after it was written)"
    return None


def changed_input(recorded: dict, now: dict, layout_folder: Path | str | None) -> str | None:
    """The first name (in order) whose file differs between a manifest's `inputs` ({'image:logo.png': sha256})
    and those the layout reads `now` (names relative to `layout_folder`, `render.layout_inputs`), or one only
    one side has; None when each name has its recorded file.

    Before 2026-11-28 manifests named every input by its absolute path, a font's with '#index' for another
    face; a record whose names are all absolute (so also one whose files all lie outside the layout's folder)
    is compared with `now`'s names made absolute as that folder resolves. A legacy project moved since has
    other absolute paths: its inputs changed, and its items render again, never matched by hashes alone
    (which would take two files swapped for the same inputs)."""
    if all(os.path.isabs(name.partition(":")[2]) for name in recorded):
        recorded = {_without_face(name): digest for name, digest in recorded.items()}
        now = _absolute_names(now, layout_folder)
    names = sorted(recorded.keys() | now.keys())
    return next((n for n in names if n not in recorded or n not in now or recorded[n] != now[n]), None)


def _without_face(name: str) -> str:
    """'font:/fonts/x.ttc#2' -> 'font:/fonts/x.ttc': a legacy font's name as the file alone, as inputs name it
    now (the layout's text says which face); other names as they are."""
    from studio.fonts import _INDEXED_RE  # how a font value names a face: 'x.ttc#2'

    kind, _, path = name.partition(":")
    indexed = _INDEXED_RE.fullmatch(path) if kind == "font" else None
    return f"{kind}:{indexed[1]}" if indexed else name


def _absolute_names(inputs: dict, layout_folder: Path | str | None) -> dict:
    """`inputs` with the names relative to the layout's folder made absolute, against the folder as
    `render.layout_inputs` resolves it (realpath) when it makes them relative."""
    folder = os.path.realpath(layout_folder or ".")
    absolute = {}
    for name, digest in inputs.items():
        kind, _, path = name.partition(":")
        absolute[f"{kind}:{os.path.join(folder, path)}"] = digest  # an absolute path stays as it is
    return absolute


def check(record: dict | None, folder: Path, expect: dict, hashes=sha256_file,
          layout_folder: Path | None = None) -> str | None:
    """Why the item whose sidecar holds `record` is not done, or None when it is.

    The record must be whole and unedited (`record_problem`) and hold the `expect`ed values: the item key;
    the inputs, named relative to `layout_folder` (`changed_input`); the models, {model: {file: sha256}},
    each model's files its own whatever its name's spelling (`models_by_identity`; the record's names read
    from its `cwd`). Then every listed file must exist with its recorded size and sha256, as `hashes` gives
    it (a `FileHashes` reads only the files its memo lacks at their stamp).
    """
    if record is None:
        return "no manifest"
    problem = record_problem(record)
    if problem:
        return f"damaged manifest: {problem}"
    for key, value in expect.items():
        if key == "models":
            same = same_models(record[key], record["cwd"], value)
        elif key == "inputs":
            same = changed_input(record[key], value, layout_folder) is None
        else:
            same = record.get(key) == value
        if not same:
            return f"{key} changed"
    for entry in record["files"]:
        path = folder / entry["path"]
        if not path.is_file() or path.parent != folder:
            return f"{entry['path']}: missing"
        if path.stat().st_size != entry["bytes"] or hashes(path) != entry["sha256"]:
            return f"{entry['path']}: differs from its manifest"
    return None


def file_entries(files: list[Path], folder: Path, hashes=sha256_file) -> list[dict]:
    """{path relative to `folder`, bytes, sha256} of each file, hashed by `hashes` (a `FileHashes` remembers
    them for the next run's `check`)."""
    return [{"path": p.relative_to(folder).as_posix(), "bytes": p.stat().st_size, "sha256": hashes(p)}
            for p in files]


# -- the log --------------------------------------------------------------------------------------------------

def _json_line(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def append_line(path: Path, record: dict) -> None:
    """Append `record` as one JSON line with a single write, then fsync. A line torn by a crash is isolated:
    when the file does not end with a newline, this line starts with one. A symbolic link at `path` is replaced
    by a file holding its target's lines and this one (as `merge_logs` replaces it), its target left alone."""
    line = _json_line(record)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError:
        if not os.path.islink(path):
            raise
        _rewrite_log(path, [*read_lines(path), record])  # its lines read through the link
        return
    try:
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[dict]:
    """The records of a log, skipping lines that are not complete JSON objects (torn by a crash); none when
    there is no log. A log that can't be read (a folder, no permission, a disk error) raises OSError."""
    records = []
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return records
    for raw in data.splitlines():
        try:
            record = _json(raw)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def log_record(record: dict, sidecar: Path, out_dir: Path) -> dict:
    """The log line of an item: its sidecar's record without the layout text, with where the sidecar is
    (`manifest`) and each file's path in OUTDIR (`output`; `path` stays relative to the sidecar's folder). Its
    `digest` stays the sidecar's: `record_digest` of the line is not it."""
    layout = {k: v for k, v in record.get("layout", {}).items() if k != "text"}
    folder = sidecar.parent.relative_to(out_dir)
    files = [{**entry, "output": (folder / entry["path"]).as_posix()} for entry in record.get("files", [])]
    return {**record, "layout": layout, "files": files, "manifest": sidecar.relative_to(out_dir).as_posix()}



def merge_logs(out_dir: Path) -> int:
    """Add to OUTDIR/manifest.jsonl the lines of the shards' logs (`manifest-<i>-of-<n>.jsonl`) it lacks,
    in the order their items were started, rewriting it atomically; returns how many were added. The
    shards' logs stay (a shard may still be writing); merging again adds nothing."""
    log = out_dir / LOG_NAME
    lines = read_lines(log)
    seen = {sha256_json(r) for r in lines}
    new = []
    for path in sorted(out_dir.glob("manifest-*-of-*.jsonl")):
        for record in read_lines(path):
            digest = sha256_json(record)
            if digest not in seen:
                seen.add(digest)
                new.append(record)
    if not new:
        return 0
    new.sort(key=lambda r: str((r.get("timings") if isinstance(r.get("timings"), dict) else {}).get("started", "")))
    _rewrite_log(log, lines + new)
    return len(new)


def _rewrite_log(path: Path, records: list[dict]) -> None:
    """Write the log `path` anew with `records`, atomically (a link there replaced by a file)."""
    data = b"".join(map(_json_line, records))
    os.replace(write_temp(path.parent, path.name, lambda f: f.write(data)), path)
