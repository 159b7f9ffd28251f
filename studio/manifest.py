"""Written files -> records of how they were made: the manifest of one batch item and the batch's log.

A batch item's outputs get a sidecar `<name>.manifest.json` next to them, written atomically after the
outputs, and a line in `OUTDIR/manifest.jsonl`. The sidecar is the proof an item is finished: `check`
says why an item is not done (no sidecar, another item's, changed inputs or weights, a missing or
altered file) or None when it is. File hashes are sha256; `FileHashes` remembers the hashes of big
files (weights) by path, size and modification time, so a batch hashes each weight file once.
"""

import hashlib
import json
import os
import platform
from pathlib import Path

from studio.export import write_temp

FORMAT = "studio-batch-manifest/1"
SIDECAR_SUFFIX = ".manifest.json"
LOG_NAME = "manifest.jsonl"


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
    """The hash of a JSON-able value in canonical form (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class FileHashes:
    """sha256 of files, remembered in `memo` (a JSON file) by resolved path, size and mtime."""

    def __init__(self, memo: Path | None):
        self.memo = memo
        self.known: dict = {}
        if memo is not None and memo.is_file():
            try:
                self.known = json.loads(memo.read_text())
            except (OSError, ValueError):  # a damaged memo only costs a rehash
                self.known = {}
        self.changed = False

    def __call__(self, path: Path) -> str:
        path = Path(path).resolve()
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        entry = self.known.get(str(path))
        if entry and entry[:2] == stamp:
            return entry[2]
        digest = sha256_file(path)
        self.known[str(path)] = stamp + [digest]
        self.changed = True
        return digest

    def save(self) -> None:
        if self.memo is None or not self.changed:
            return
        self.memo.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(self.known, sort_keys=True).encode()
        os.replace(write_temp(self.memo.parent, self.memo.name, lambda f: f.write(data)), self.memo)
        self.changed = False


def model_files(folder: Path, variant: str | None = None) -> list[Path]:
    """The files of a pipeline folder that decide its output: configs, weights (as the loader picks them for
    `variant`), tokenizer, scheduler."""
    from studio.checkpoint import weight_files

    files = [folder / "model_index.json", folder / "scheduler" / "scheduler_config.json"]
    for component in ("transformer", "vae", "text_encoder"):
        files += [folder / component / "config.json"] + weight_files(folder / component, variant)
    files += sorted(p for p in (folder / "tokenizer").iterdir() if p.is_file())
    return files


def model_record(model_id: str, hashes: FileHashes, variant: str | None = None) -> dict:
    """{"id", "folder", "files": {relative path: sha256}} of a model folder or hub id."""
    from studio.checkpoint import resolve_model_dir

    folder = resolve_model_dir(model_id)
    return {"id": str(model_id), "folder": str(folder.resolve()),
            "files": {p.relative_to(folder).as_posix(): hashes(p) for p in model_files(folder, variant)}}


def software() -> dict:
    """Versions of what decides the pixels and the file bytes."""
    import mindspore
    import numpy
    import PIL

    from studio import __version__

    return {"studio": __version__, "mindspore": mindspore.__version__, "numpy": numpy.__version__,
            "pillow": PIL.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "machine": platform.machine()}


# -- the sidecar ----------------------------------------------------------------------------------------------

def sidecar_path(folder: Path, stem: str) -> Path:
    return folder / (stem + SIDECAR_SUFFIX)


def write_sidecar(path: Path, record: dict) -> None:
    """Write `record` as JSON atomically (temporary file, fsync, rename)."""
    data = (json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    os.replace(write_temp(path.parent, path.name, lambda f: f.write(data)), path)


def read_sidecar(path: Path) -> dict | None:
    """The record in `path`, or None when it is missing, unreadable or not a studio manifest."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == FORMAT else None


def check(record: dict | None, folder: Path, expect: dict) -> str | None:
    """Why the item whose sidecar holds `record` is not done, or None when it is.

    expect: the values the record must hold (item key, inputs, models); then every listed file must exist
    with its recorded size and sha256.
    """
    if record is None:
        return "no manifest"
    for key, value in expect.items():
        if record.get(key) != value:
            return f"{key} changed"
    files = record.get("files")
    if not isinstance(files, list) or not files:
        return "manifest lists no files"
    for entry in files:
        path = folder / entry.get("path", "")
        if not path.is_file() or path.parent != folder:
            return f"{entry.get('path')}: missing"
        if path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
            return f"{entry['path']}: differs from its manifest"
    return None


def file_entries(files: list[Path], folder: Path) -> list[dict]:
    return [{"path": p.relative_to(folder).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in files]


# -- the log --------------------------------------------------------------------------------------------------

def append_line(path: Path, record: dict) -> None:
    """Append `record` as one JSON line with a single write, then fsync. A line torn by a crash is isolated:
    when the file does not end with a newline, this line starts with one."""
    line = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
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
    """The records of a log, skipping lines that are not complete JSON objects (torn by a crash)."""
    records = []
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return records
    for raw in data.splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def log_record(record: dict, sidecar: Path, out_dir: Path) -> dict:
    """The log line of an item: its sidecar's record without the layout text, and where the sidecar is."""
    layout = {k: v for k, v in record.get("layout", {}).items() if k != "text"}
    return {**record, "layout": layout, "manifest": sidecar.relative_to(out_dir).as_posix()}

