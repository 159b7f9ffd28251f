"""Job files -> many rendered layouts, resumable, reproducible and shardable (`studio batch`, `studio rerender`).

A job (YAML or CSV, see layouts/README.md "Batch jobs") lists items: a layout file and its variables,
from a matrix over one template, an explicit list, or CSV rows. `load_job` expands it into `Item`s, each
with its parsed layout, an output name (a pattern filled with its variables, always inside OUTDIR; no two
items write the same file) and a key (the hash of the layout's bytes, the variables and, when the item uses
it, the job model's identity). `run_batch` takes every n-th item (`--shard i/n`), skips those whose manifest
proves them finished (studio.manifest) or that another run is rendering (`_ItemLock`), and renders the rest
grouped by the models they use, with T5 features cached on disk (`EmbeddingCache`): the models stay loaded
from item to item when they fit the memory budget together, else each is loaded only while its items
render. Outputs are written atomically, the manifest after them, so a run killed at any moment resumes where
it stopped. `rerender` renders one item again from its manifest and compares the bytes.
"""

import csv
import dataclasses
import io
import itertools
import json
import math
import os
import re
import signal
import string
import sys
import tempfile
import threading
import time
import traceback
import unicodedata
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from studio import backend, manifest
from studio.errors import (OUT_OF_MEMORY, CheckpointError, InputError, StudioError, control_problem, headline,
                           one_line, out_of_memory)
from studio.layout import ShallowLoader, compose_yaml, hash_comment_hint, yaml_problem
from studio.export import MAX_NAME_BYTES, FileLock, pause_point, read_pixels, remove_temporaries, write_temp
from studio.hub import HubId
from studio.progress import PhaseBars, above_bars, progress_bar, write_line
from studio.text import surrogate_problem
from studio.spec import GenerateLayer, user_path

JOB_KEYS = ("layout", "name", "model", "memory_budget", "variables", "matrix", "items")
RESERVED = ("layout", "name")  # keys of matrix axes, items and CSV columns that are not variables
NAME_FIELDS = ("n", "key")  # fields of names that are not variables (nor are 'layout' and '<x>_slug')
DEFAULT_NAME = "{layout}-{n}"
MAX_NAME_PART = 200  # bytes per folder or file name, leaving room for suffixes
MAX_NAME_PATH = 240  # bytes of an item's longest file path inside OUTDIR: Windows' paths stop at 260 characters
MAX_ITEMS = 100_000  # per job: a matrix's combinations are counted before they are made
SLUG_LENGTH = 60
STALE_PART = 15 * 60  # s: an older temporary file in the cache was left by a killed run, not a running shard
EMBEDDINGS, HASHES = "embeddings", "file-hashes.json"  # in the cache folder: T5 features, the files' hash memo
SAVE_HASHES = 60  # s: the hash memo is written after an item at most this often (and at the end of a run)


class JobError(InputError):
    """A job file has problems: one line each, `jobs.yaml:12: matrix.seed: what is wrong`; a line that several
    items share (a matrix's, at its line) once."""

    def __init__(self, errors: list[str]):
        self.errors = list(dict.fromkeys(one_line(e) for e in errors))  # values in them may hold line breaks
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class Item:
    index: int  # position in the job, from 0
    layout: str  # the layout path as the job writes it (relative to the job file's folder, a CSV's to the CSV's)
    layout_file: Path  # where it is read
    layout_text: str | None  # its contents (None: unreadable, the item fails)
    variables: dict  # name -> text, given to the layout as --set
    name: str  # output path without suffix, relative to OUTDIR, '/'-separated
    key: str  # manifest.item_key: sha256 of (layout bytes, variables, job model identity if `_uses_job_model`)
    where: str  # 'jobs.yaml:12', for messages
    spec: object = None  # the parsed layout (spec.Layout); None: the item fails with `problem`
    problem: str | None = None
    outputs: tuple[str, ...] = ()  # the files it writes, relative to OUTDIR (`_outputs`)


@dataclass(frozen=True)
class Job:
    source: Path
    model: str  # for layouts and layers that name none, as the job or --model spells it (and the files name it)
    memory_budget: str | None
    items: tuple[Item, ...]
    model_identity: str  # manifest.model_identity(model): what item keys name the model by
    model_where: str | None = None  # 'jobs.yaml:3' when the model is the job's `model:`, for messages
    warnings: tuple[str, ...] = ()  # 'jobs.yaml:5: variable ...': what `run_batch` and --list warn of, once a job


# -- names ----------------------------------------------------------------------------------------------------

def slug(text: str) -> str:
    """'A Red Fox, at dusk!' -> 'a-red-fox-at-dusk': ASCII letters and digits joined by '-', at most 60
    characters; text with no such characters (e.g. Chinese) -> 'x' + the first 8 hex of its sha256."""
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    out = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:SLUG_LENGTH].rstrip("-")
    return out or "x" + manifest.sha256_json(str(text))[:8]


WINDOWS_CHARACTERS = '<>:"|?*'  # not allowed in Windows file names, nor are control characters
DEVICE_NAMES = {"CON", "PRN", "AUX", "NUL", *(f"{port}{i}" for port in ("COM", "LPT") for i in "0123456789¹²³")}


def name_problem(name: str) -> str | None:
    """Why `name` can't be an output path inside OUTDIR, or None. Sub-folders ('a/b') are allowed; absolute
    paths, '..', '.', empty parts, backslashes, hidden names ('.x', studio's temporary files and cache), a
    first part named like the batch's logs (manifest*.jsonl), and what Windows refuses in file names (outputs
    move between machines: < > : " | ? *, control characters, a part ending in a space or '.', device names
    such as CON or COM1, also before an extension and spaces: 'CON .png') are not."""
    if not name:
        return "is empty"
    if surrogate_problem(name):  # {seed:c} of 55296
        return "has half of a UTF-16 surrogate pair, which is no character"
    if name.startswith("/") or "\\" in name:
        return "is absolute or has a backslash (use '/' between folders inside OUTDIR)"
    if re.fullmatch(r"manifest.*\.jsonl", name.split("/")[0], re.I):
        return "starts with the name of a batch log (manifest*.jsonl in OUTDIR)"
    for part in name.split("/"):
        if not part:
            return "has an empty part ('//' or a '/' at the end)"
        if part in (".", ".."):
            return f"has a '{part}' part (names stay inside OUTDIR)"
        if part.startswith("."):
            return f"has a hidden part '{part}' (names starting with '.' are studio's temporary files)"
        bad = next((c for c in part if c in WINDOWS_CHARACTERS or ord(c) < 32 or ord(c) == 127), None)
        if bad is not None:
            shown = f"'{bad}'" if bad in WINDOWS_CHARACTERS else "a control character"
            return f"has {shown} (file names may not hold < > : \" | ? * or control characters on Windows)"
        if part.endswith((" ", ".")):
            return f"has a part ending in {part[-1]!r} ('{part}'), which Windows drops"
        if part.split(".")[0].rstrip(" ").upper() in DEVICE_NAMES:  # Windows drops the spaces: 'CON .png' is CON
            return (f"has a part '{part}' that Windows reserves for a device (CON, PRN, AUX, NUL, COM0-9, LPT0-9, "
                    f"COM¹²³, LPT¹²³)")
        if len(part.encode()) > MAX_NAME_PART:
            return f"has a part longer than {MAX_NAME_PART} bytes"
    return None


_SPEC = re.compile(r"(?:.?(?P<align>[<>=^]))?(?P<sign>[-+ ])?(?P<z>z)?(?P<alt>#)?(?P<zero>0)?(?P<width>\d*)"
                   r"(?P<grouping>[,_])?(?:\.(?P<precision>\d+))?(?P<type>[a-zA-Z%])?", re.S)  # Python's format spec
NUMBER_TYPES = "bcdoxXneEfFgG%"
_WHOLE, _DECIMAL = re.compile(r"[-+]?[0-9]+"), re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _formats_numbers(spec: re.Match) -> bool:
    """Whether a format spec is for numbers: a number type, or an option only numbers take (a sign, '=', 'z',
    '#', '0' padding, ',' or '_' grouping). Other specs ('.10', '<12', '0>5') format text."""
    return bool(spec["type"] and spec["type"] in NUMBER_TYPES or spec["align"] == "=" or spec["sign"] or spec["z"]
                or spec["alt"] or spec["zero"] or spec["grouping"])


def format_name(pattern: str, fields: dict) -> str:
    """`pattern` with {field} and {field:spec} filled from `fields` (text); raises ValueError naming a bad field.
    A numeric spec ({seed:04d}) reads the value as a number, written in decimal ('0009' is 9); any other spec
    formats the text as it is. Widths and precisions above MAX_NAME_PART are refused (no name part is longer)."""
    out = []
    for literal, field_name, spec, conversion in string.Formatter().parse(pattern):
        out.append(literal)
        if field_name is None:
            continue
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", field_name) or conversion:
            raise ValueError(f"'{{{field_name}}}' is not a plain field name")
        if field_name not in fields:
            raise ValueError(f"{{{field_name}}} is not set for this item (fields: {', '.join(sorted(fields))})")
        value = fields[field_name]
        if spec:
            m = _SPEC.fullmatch(spec)
            if m and max(int(m["width"] or 0), int(m["precision"] or 0)) > MAX_NAME_PART:
                raise ValueError(f"{{{field_name}:{spec}}}: width or precision above {MAX_NAME_PART}")
            shown = f"'{value}'" if len(value) <= 20 else f"'{value[:20]}...' ({len(value)} characters)"
            number = m and _formats_numbers(m)
            if number and not _DECIMAL.fullmatch(value):
                raise ValueError(f"{{{field_name}:{spec}}}: formats a number, got {shown}")
            kind = ("the whole number" if _WHOLE.fullmatch(value) else "the number") if number else "the text"
            try:
                if number:  # int() refuses over 4300 digits
                    value = int(value) if _WHOLE.fullmatch(value) else float(value)
                text = format(value, spec)
            except (ValueError, OverflowError):  # 'd' of 1.5, 'c' of a number above 0x10ffff
                raise ValueError(f"{{{field_name}:{spec}}}: cannot format {kind} {shown} as '{spec}'") from None
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{{{field_name}:{spec}}}: {shown} is not a finite number (it would write '{text}')")
            value = text
        out.append(str(value))
    return "".join(out)


def name_fields(layout: str, variables: dict, n: int, key: str) -> dict:
    """What a name pattern can use: the item's variables, each also as <name>_slug, {layout} (the layout
    file's stem) and {layout_slug}, {n} (the item number from 1, not padded: adding items renames none;
    {n:04d} pads) and {key} (12 hex)."""
    fields = dict(variables)
    fields["layout"] = Path(layout).stem
    fields.update({f"{k}_slug": slug(v) for k, v in list(fields.items())})
    fields["n"] = str(n)
    fields["key"] = key[:12]
    return fields


def path_key(path: str) -> str:
    """What two output paths share when macOS or Windows takes them for one file: case ignored character by
    character, as APFS/HFS+ and NTFS's upcase table compare (Unicode simple case folding: 'Fox' is 'fox', but
    'Straße' is not 'STRASSE' nor 'ﬁle' 'file'), and (macOS) Unicode normalization: 'Café' with 'é' as one
    character or as 'e' and a combining accent gives 'café'."""
    return unicodedata.normalize("NFC", "".join(map(_fold, unicodedata.normalize("NFC", path))))


def _fold(c: str) -> str:
    """A character's simple case folding: its full folding when that is one character, else its lowercase
    when that is one ('ẞ' -> 'ß'), else itself ('ß', 'ﬁ', 'İ' fold to several characters)."""
    return next((f for f in (c.casefold(), c.lower()) if len(f) == 1), c)


def shadowed(name: str, variables) -> bool:
    """Whether a name field hides the variable `name`: {n}, {key}, {layout_slug}, or {x_slug} of a variable x."""
    return name in NAME_FIELDS or name.endswith("_slug") and name.removesuffix("_slug") in {*variables, "layout"}


# -- job files ------------------------------------------------------------------------------------------------

class _Map(dict):
    """A YAML mapping that remembers the line of each key."""
    line = 1
    lines: dict = {}


class _Seq(list):
    line = 1
    lines: list = []


class _JobLoader(ShallowLoader):
    pass


def _construct_map(loader, node):
    """A mapping with YAML merge keys (`<<: *base`) applied as layouts apply them: a key written in the mapping
    overrides a merged one; a key written twice is an error."""
    written = {id(key_node) for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge"}
    loader.flatten_mapping(node)  # merged keys first, then the written ones
    out = _Map()
    out.line, out.lines = node.start_mark.line + 1, {}
    seen = set()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise yaml.constructor.ConstructorError(None, None, "a key must be a name", key_node.start_mark)
        if surrogate_problem(key):
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r}: {surrogate_problem(key)}",
                                                    key_node.start_mark)
        if id(key_node) in written:
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
            seen.add(key)
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


def _construct_seq(loader, node):
    out = _Seq(loader.construct_object(child, deep=True) for child in node.value)
    out.line, out.lines = node.start_mark.line + 1, [child.start_mark.line + 1 for child in node.value]
    return out


def _construct_text(loader, node):
    """A scalar as written in the file, as a layout reads its variables (the node's value): `NO`, `010`,
    `1_000`, `0x1F`, `1.10`, `=` and `<<` stay what they say, not YAML 1.1's false, 8, 1000, 31, 1.1 and
    its value and merge tags (which have no value). Null is None."""
    return None if node.tag.endswith(":null") else node.value


_JobLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_JobLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)
for _tag in ("null", "bool", "int", "float", "timestamp", "value", "merge"):
    _JobLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _construct_text)


def _kind(value) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "nothing" if value is None else repr(value)


def _value_problem(value, expected: str, empty_ok: bool = True, path: bool = False) -> str | None:
    """Why a job's value is not what a key takes (text: scalars are read as written; a path or model name has no
    control character), or None."""
    if not isinstance(value, str):
        return f"expected {expected}, got {_kind(value)}"
    if not value and not empty_ok:
        return "expected text, got ''"
    if path and control_problem(value):
        return f"'{value}' {control_problem(value)}"
    return surrogate_problem(value) or _mojibake(value, "correct the text")


# What UTF-8 text becomes when read as Windows-1252 (or Latin-1) and saved again: a lead byte C2 or C3 as 'Â'
# or 'Ã' (U+0080-U+00FF: NBSP, ©, é, ü ...), E2 as 'â' (U+2000-U+2FFF: dashes, quotes, €, ™), F0 as 'ð'
# (emoji), each continuation byte 80-BF as Windows-1252 shows it (U+0080-U+009F where it has no character, as
# Windows reads them; U+FFFD where the reader dropped it). Real words hold such pairs too rarely to matter
# ('São', 'Âge', 'château').
_CONTINUATION = "".join(sorted({*bytes(range(0x80, 0xC0)).decode("cp1252", "ignore"), *map(chr, range(0x80, 0xC0)),
                                "\ufffd"}))
_MOJIBAKE_RE = re.compile(f"[ÂÃ][{_CONTINUATION}]|â[{_CONTINUATION}]{{2}}|ð[{_CONTINUATION}]{{3}}")


def _mojibake(text: str, fix: str) -> str | None:
    """"'cafÃ©' looks like 'café' read as Windows-1252 and saved again: <fix>" when `text` holds what UTF-8
    becomes when so read (the first word that does, repaired when its bytes are all there), else None. A word
    is not taken for it when it holds other non-ASCII characters (all of a garbled word's are pairs: 'MAÇÃ”' is
    Portuguese), or when its pair is 'Ã' or 'Â' at its end followed by closing punctuation ('IRMÃ…')."""
    def garbled(word: str) -> bool:
        pairs = [m for m in _MOJIBAKE_RE.finditer(word)
                 if not (len(m[0]) == 2 and m.end() == len(word) and m[0][1] in "…”’»“‘°·–—")]
        rest = _MOJIBAKE_RE.sub("", word)
        return bool(pairs) and rest.isascii()

    if not _MOJIBAKE_RE.search(text):  # the common case: one pass, no word split
        return None
    word = next((m[0] for m in re.finditer(r"\S+", text) if garbled(m[0])), None)
    if word is None:
        return None
    try:
        meant = _MOJIBAKE_RE.sub(lambda m: b"".join(c.encode("latin-1" if ord(c) < 256 else "cp1252")
                                                    for c in m[0]).decode("utf-8"), word)
    except UnicodeError:  # a byte was dropped (U+FFFD)
        return f"'{word}' looks like UTF-8 text read as Windows-1252 and saved again: {fix}"
    return f"'{word}' looks like '{meant}' read as Windows-1252 and saved again: {fix}"


def load_job(path, model: str | None = None, default_model: str | None = None) -> Job:
    """A job file (.yaml/.yml or .csv) -> its items in order. model overrides the file's `model`;
    default_model is used when neither names one. Raises JobError listing every problem: the items are checked
    (names, layouts) whatever is wrong elsewhere, those with a problem of their own left out."""
    path = Path(path)
    text = _read_text(path, "CSV" if path.suffix.lower() == ".csv" else "job")
    errors: list[str] = []
    if path.suffix.lower() == ".csv":
        doc, rows = {}, _csv_rows(text, str(path), path.parent, errors)
    else:
        doc, rows = _yaml_job(text, path, errors)
    if len(rows) > MAX_ITEMS:
        errors.append(f"{rows[MAX_ITEMS][1]}: item {MAX_ITEMS + 1} of {len(rows)}: a job has at most {MAX_ITEMS} "
                      f"items (split it into several jobs)")
        rows = []
    model_where = None if model or doc.get("model") is None else f"{path}:{doc.lines['model']}"
    model = model or _job_model(doc.get("model"), path.parent) or default_model
    if not model and "model" not in doc:  # a bad `model:` is reported as such
        errors.append(f"{path}: no model: give `model:` in the job or --model")
    identity = manifest.model_identity(str(model)) if model else None
    notes: list[str] = []
    items = _items(path, rows, doc, identity, errors, notes)
    if errors:
        raise JobError(errors)
    budget = doc.get("memory_budget")
    return Job(path, str(model), None if budget is None else str(budget), tuple(items), identity, model_where,
               tuple(notes))


SAVE_CSV_UTF8 = 'in Excel: Save As -> "CSV UTF-8 (Comma delimited)"'


def _read_text(path: Path, what: str) -> str:
    """A job's or CSV's text (`read_source`: not UTF-8 is an error naming the line and byte), without a leading
    byte-order mark. Decoded as plain UTF-8, then the mark dropped: utf-8-sig would count the byte from after
    the mark, and name the wrong one. what: 'CSV' or 'job', as messages call the file (a CSV's name Excel's
    way to save UTF-8)."""
    from studio.layout import read_source

    return read_source(path, what, JobError, SAVE_CSV_UTF8 if what == "CSV" else "").removeprefix("\ufeff")


def _job_model(name: str | None, folder: Path) -> str | None:
    """A job file's `model`: a folder relative to the job file's folder when it exists there; otherwise as
    written (a hub id 'owner/name', or a folder relative to the working folder, as --model)."""
    if name is None:
        return None
    there = folder / user_path(name)
    return str(there) if there.exists() else name


def _table_hint(text: str) -> str:
    """' (a table? a CSV job is read as CSV only when ...)' when a job file that is no YAML job begins
    with a line of separated names, not a key, list item or comment: a table saved as .txt or .tsv."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    table = ":" not in first and first.lstrip()[:1] not in "-#[{" and any(sep in first for sep in ",;\t")
    return " (a table? a CSV job is read as CSV only when its name ends in .csv)" if table else ""


def _yaml_job(text: str, path: Path, errors: list[str]) -> tuple[dict, list]:
    """The job's top-level settings (one with a problem set to None) and its raw rows: (values, where, folder)
    with values a dict of scalars, None for a row with a problem of its own (it keeps its place: {n} counts
    it), and folder the one a `layout` among them is relative to. No rows when what every row is made of has
    a problem: `variables`, the matrix's axes."""
    from studio.memory import budget_problem

    src = str(path)
    try:
        root, loader = compose_yaml(text, _JobLoader)  # lines count LFs only, as a layout's (YAML 1.2, editors)
        try:
            doc = None if root is None else loader.construct_document(root)  # as yaml.load does
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        line, problem = yaml_problem(text, e, "job")
        errors.append(f"{src}:{line}: YAML: {one_line(problem)}{_table_hint(text)}")
        return {}, []
    if not isinstance(doc, _Map):
        errors.append(f"{src}:1: a job is a mapping with keys {', '.join(JOB_KEYS)}{_table_hint(text)}")
        return {}, []
    unknown = [key for key in doc if key not in JOB_KEYS]
    for key in unknown:
        errors.append(f"{src}:{doc.lines[key]}: {key}: unknown key (allowed: {', '.join(JOB_KEYS)})")
    for key in ("layout", "name", "model", "memory_budget"):
        if key not in doc:
            continue
        problem = _value_problem(doc[key], "text", empty_ok=False, path=key in ("layout", "model"))
        if problem is None and key == "memory_budget":
            problem = budget_problem(doc[key])
        if problem:
            errors.append(f"{src}:{doc.lines[key]}: {key}: {problem}")
            doc[key] = None  # the items that take it are not checked: this is their problem
    if unknown and "layout" not in doc:
        doc["layout"] = None  # likely mistyped: items without a layout of their own are not checked
    reported = len(errors)
    base = doc.get("variables", _Map())
    if not isinstance(base, _Map):
        errors.append(f"{src}:{doc.lines['variables']}: variables: expected a mapping of name: value")
        base = _Map()
    base_vars = _scalars(base, "variables", src, errors, text, reserved_ok=False)
    whole = len(errors) == reported  # the rows are what they would be without the errors
    rows = []
    if "matrix" in doc:
        matrix = _matrix(doc["matrix"], doc.lines["matrix"], src, errors, text)
        whole = whole and matrix is not None
        rows += [(values, where, path.parent) for values, where in matrix or []]
    if "items" in doc:
        items = doc["items"]
        line = doc.lines["items"]
        if isinstance(items, str) and control_problem(items):
            errors.append(f"{src}:{line}: items: '{items}' {control_problem(items)}")
        elif isinstance(items, str):
            csv_path = path.parent / items
            try:
                text = _read_text(csv_path, "CSV")
            except JobError as e:  # 'rows.csv:3: not UTF-8 text (byte 0xe9); save the CSV as UTF-8'
                errors.append(f"{src}:{line}: items: {e.errors[0]}")
            else:
                rows += _csv_rows(text, str(csv_path), csv_path.parent, errors, "layout" in doc)
        elif isinstance(items, _Seq) and items:
            for i, (entry, entry_line) in enumerate(zip(items, items.lines)):
                values, reported = None, len(errors)
                if isinstance(entry, _Map):
                    values = _scalars(entry, f"items[{i}]", src, errors, text)
                else:
                    errors.append(f"{src}:{entry_line}: items[{i}]: expected a mapping of name: value")
                rows.append((values if len(errors) == reported else None, f"{src}:{entry_line}", path.parent))
        else:
            errors.append(f"{src}:{line}: items: expected a non-empty list of mappings or a CSV file name")
    if "matrix" not in doc and "items" not in doc:
        rows.append(({}, f"{src}:{doc.line}", path.parent))
    if not whole:
        return doc, []
    rows = [(values if values is None else {**base_vars, **values}, where, folder) for values, where, folder in rows]
    return doc, rows


def _scalars(mapping: _Map, path: str, src: str, errors: list[str], text: str, reserved_ok: bool = True) -> dict:
    """A mapping of a job table -> {key: text}; a `layout` or `name` among them may not be empty. text: the job
    file's (`_comment_hint`)."""
    out = {}
    for key, value in mapping.items():
        where = f"{src}:{mapping.lines[key]}: {path}.{key}"
        problem = _value_problem(value, "text or a number", empty_ok=key not in RESERVED)
        if not reserved_ok and key in RESERVED:
            errors.append(f"{where}: '{key}' is set at the top of the job, not among the variables")
        elif problem:
            errors.append(f"{where}: {problem}{_comment_hint(text, mapping.lines[key]) if value is None else ''}")
        else:
            out[key] = value
    return out


def _comment_hint(text: str, line: int) -> str:
    """`layout.hash_comment_hint` of line `line` (from 1, counting LFs only, as `_yaml_job` does) of the job
    file's `text`: a value YAML read as nothing for the comment it starts (`tint: #ff5a5f`, `- #ff5a5f`)."""
    lines = text.split("\n")
    return hash_comment_hint(lines[line - 1]) if 0 < line <= len(lines) else ""


def _matrix(matrix, line: int, src: str, errors: list[str], text: str) -> list | None:
    """Every combination of the axes' values, the first axis outermost; a combination with a bad value is None.
    A value may be a mapping: several variables set together (size: [{width: 1920, height: 1080}, ...]); a
    variable is set by one axis only. None when the axes have a problem (not lists, too many combinations)."""
    if not isinstance(matrix, _Map) or not matrix:
        errors.append(f"{src}:{line}: matrix: expected a mapping of name: [values]")
        return None
    axes = []
    setters: dict[str, str] = {}  # variable -> the axis that sets it
    whole = True  # every axis is a list of values, and sets its own variables
    for axis, values in matrix.items():
        where = f"{src}:{matrix.lines[axis]}: matrix.{axis}"
        if not isinstance(values, _Seq) or not values:
            errors.append(f"{where}: expected a non-empty list of values")
            whole = False
            continue
        choices = []  # a bad value's is None
        for j, value in enumerate(values):
            before = len(errors)
            if isinstance(value, _Map) and axis not in RESERVED:
                choice = _scalars(value, f"matrix.{axis}[{j}]", src, errors, text)
                choices.append(choice if len(errors) == before else None)
                continue
            problem = _value_problem(value, "text, a number or a mapping of them", empty_ok=axis not in RESERVED)
            if problem:
                hint = _comment_hint(text, values.lines[j]) if value is None else ""
                errors.append(f"{src}:{values.lines[j]}: matrix.{axis}[{j}]: {problem}{hint}")
            choices.append(None if problem else {axis: value})
        for var in dict.fromkeys(k for choice in choices if choice for k in choice):
            other = setters.setdefault(var, axis)
            if other != axis:
                errors.append(f"{where}: sets '{var}', which matrix.{other} ({src}:{matrix.lines[other]}) sets too; "
                              f"a variable may come from one axis only")
                whole = False
        axes.append(choices)
    if not whole:
        return None
    count = math.prod(map(len, axes))
    if count > MAX_ITEMS:
        errors.append(f"{src}:{line}: matrix: {count} combinations of its axes' values; a job has at most {MAX_ITEMS} "
                      f"items (split it into several jobs)")
        return None
    return [(None if None in combo else {k: v for choice in combo for k, v in choice.items()}, f"{src}:{line}")
            for combo in itertools.product(*axes)]


EXPORT_COMMAS = "export as comma-separated CSV (or save with commas)"
REIMPORT = ("import the original UTF-8 file instead (Excel: Data > From Text/CSV, File Origin '65001: Unicode "
            "(UTF-8)') and save it as CSV UTF-8, or correct the text")


def _csv_rows(text: str, src: str, folder: Path, errors: list[str], layout_given: bool = False) -> list:
    """CSV rows as items (values, where, folder): a header of variable names (and `layout`, relative to
    `folder`, and `name`), one item per row; cells are stripped, an empty one leaves the variable unset (the
    job's `variables`, else the layout's default; an empty `layout` is an error unless the job gives one:
    layout_given). Empty rows before the header (a spreadsheet's empty first row) and Excel's `sep=,` line are
    skipped; trailing empty cells, in the header (as Excel writes) or a row, are dropped. Quoted cells may hold
    commas, quotes ("") and line breaks, and may follow a space (`a, "b, c"`, as CSV is written by hand); a quote
    left open is an error. Cells between other separators (';', tabs, `sep=;`) are an error, told from the
    header's line before it is parsed (quoted cells would fail it first). A row with too many cells, or a cell
    holding UTF-8 read as Windows-1252 (`_mojibake`), is None; no rows when the header has a problem."""
    lines = text.split("\n")
    sep = re.fullmatch(r"sep=(.)[,;\t ]*", lines[0])  # Excel's line; a spreadsheet that shows it adds cells
    if sep and sep[1] != ",":
        shown = "tabs" if sep[1] == "\t" else f"'{sep[1]}'"
        errors.append(f"{src}:1: the columns are separated by {shown} (the first line says sep={sep[1]}): "
                      f"{EXPORT_COMMAS}")
        return []
    skip = 1 if sep else 0
    while skip < len(lines) and re.fullmatch(r'[\s,;"]*', lines[skip]):
        skip += 1
    if skip == len(lines):
        errors.append(f"{src}:1: empty CSV; the first row names the columns")
        return []
    line = skip + 1  # the header's
    bare = re.sub(r'"[^"]*"', "", lines[skip])  # the header's line outside its quotes
    if "," not in bare and (";" in bare or "\t" in bare):  # Excel where ',' is the decimal mark, LibreOffice
        shown = "';'" if bare.count(";") >= bare.count("\t") else "tabs"
        errors.append(f"{src}:{line}: the columns are separated by {shown}: {EXPORT_COMMAS}")
        return []
    lines[:skip] = [""] * skip  # read as empty rows: the line numbers stay
    reader = csv.reader(io.StringIO("\n".join(lines), newline=""), strict=True, skipinitialspace=True)
    rows, start = [], line  # start: the line the row being read begins on
    try:
        for _ in range(skip):
            next(reader)
        header = _trimmed(next(reader))
        reported = len(errors)
        first = next((i for i, name in enumerate(header) if name), 0)  # the first named column
        if first:
            errors.append(f"{src}:{line}: column 1 has no name: the table must start in column A (delete the "
                          f"empty column{'s' if first > 1 else ''} before '{_visible(header[first])}')")
        for i, name in enumerate(header[first:], first):
            if not name:
                errors.append(f"{src}:{line}: column {i + 1} has no name (name it, or delete the column)")
            elif not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                errors.append(f"{src}:{line}: column {i + 1}: '{_visible(name)}' is not a variable name")
            elif header.index(name) != i:
                errors.append(f"{src}:{line}: column {i + 1}: '{name}' appears twice")
        whole = len(errors) == reported
        start = reader.line_num + 1
        for cells in reader:
            where, start = f"{src}:{start}", reader.line_num + 1
            cells = _trimmed(cells)
            if not cells:
                continue
            if len(cells) > len(header):
                errors.append(f"{where}: {len(cells)} cells, the header names {len(header)} columns")
                rows.append((None, where, folder))  # an item still: {n} counts it
                continue
            values = {k: v for k, v in zip(header, cells) if v}
            problems = [f"{where}: column '{k}': {p}" for k, v in values.items() if (p := _mojibake(v, REIMPORT))]
            if "layout" in header and "layout" not in values and not layout_given:
                problems.append(f"{where}: the `layout` cell (column {header.index('layout') + 1}) is empty: give the "
                                f"row's layout file")
            errors += problems
            rows.append((None if problems else values, where, folder))
    except csv.Error as e:
        row = lines[start - 1:reader.line_num]  # the lines of the row that failed
        errors.append(f"{src}:{start}: CSV: {e}{_csv_hint(str(e), row)}")
        return []
    if not rows and not errors:
        errors.append(f"{src}:{line}: no rows after the header")
    return rows if whole else []


def _visible(text: str) -> str:
    """`text` with what does not print escaped ('\\u200bseed' for a zero-width space, '\\xa0' for a no-break
    space, '\\t'): for names that are wrong only by what can't be seen."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _csv_hint(message: str, lines: list[str]) -> str:
    """What a person likely did to cause the csv module's error `message` in the row of `lines`, or ""."""
    if "end of data" in message:
        return " (a quote is not closed)"
    if "expected after" in message:
        if any(re.search(r'" +(,|$)', line) for line in lines):
            return " (a space after a closing quote: delete it, or put it inside the quotes)"
        return ' (text after a closing quote: quote the whole cell, writing a quote inside it as "")'
    return ""


def _trimmed(cells: list[str]) -> list[str]:
    """A CSV row's cells, stripped, without the empty ones at its end."""
    cells = [c.strip() for c in cells]
    while cells and not cells[-1]:
        cells.pop()
    return cells


def _items(path: Path, rows: list, doc: dict, model_identity: str | None, errors: list[str],
           notes: list[str]) -> list[Item]:
    """The rows (`_yaml_job`'s) as items; a row that is None, or takes a top-level `layout` or `name` that is
    None, has its problem reported already and is left out. A variable an item gives that its layout defines
    but uses nowhere (`Layout.unused_variables`) is added to `notes` once per layout, at its first item."""
    layouts: dict[Path, tuple[str | None, str | None]] = {}  # file -> (text, why it can't be read)
    unused: dict[Path, tuple[str, ...]] = {}  # layout file -> the variables it defines and uses nowhere
    said = set()  # (layout file, variable) warned of
    items, names, hidden = [], {}, set()  # names: path_key(output name) -> the item that has it
    taken: dict[str, tuple[str, str, str]] = {}  # path_key(path in OUTDIR) -> (file or folder, item name, where)
    for index, (values, where, folder) in enumerate(rows):
        if values is None:
            continue
        pattern = values.get("name", doc.get("name", DEFAULT_NAME))
        if pattern is None or "layout" not in values and doc.get("layout", "") is None:
            continue  # a top-level `name` or `layout` with a problem
        variables = {k: v for k, v in values.items() if k not in RESERVED}
        for var in sorted(v for v in variables if shadowed(v, variables) and v not in hidden):
            hidden.add(var)  # once per variable, not per item
            errors.append(f"{where}: variable '{var}': output names use {{{var}}} for the item's "
                          f"{'number' if var == 'n' else 'key' if var == 'key' else 'slug'}; rename the variable")
        if "layout" in values:  # from an item, a matrix axis or a CSV column (relative to the CSV file)
            layout, layout_file = values["layout"], folder / values["layout"]
        elif "layout" in doc:
            layout, layout_file = doc["layout"], path.parent / doc["layout"]
        else:
            near = next((k for k in values if k.lower() == "layout"), None)  # 'Layout' is a variable
            hint = f" ('{near}' is a variable: did you mean 'layout'?)" if near else ""
            errors.append(f"{where}: no layout: give `layout:` in the job or a `layout` column/key{hint}")
            continue
        if control_problem(layout):
            errors.append(f"{where}: layout '{layout}' {control_problem(layout)}")
            continue
        if layout_file not in layouts:
            layouts[layout_file] = _read_layout(layout_file)
        text, unreadable = layouts[layout_file]
        spec, problem = (None, unreadable) if text is None else _parse(text, layout_file, variables)
        if spec is not None:
            if layout_file not in unused:
                unused[layout_file] = spec.unused_variables
            for var in (v for v in variables if v in unused[layout_file] and (layout_file, v) not in said):
                said.add((layout_file, var))
                base = doc.get("variables")  # where the value is given: the job's variables, unless the row's
                given = isinstance(base, _Map) and base.get(var) == variables[var]
                at = f"{path}:{base.lines[var]}" if given else where
                notes.append(f"{at}: variable '{var}': {layout} defines {{{var}}} but uses it nowhere (items that "
                             f"differ only in it render the same picture)")
        key = manifest.item_key(None if text is None else manifest.sha256_text(text), variables,
                                model_identity if _uses_job_model(spec) else None)
        try:
            name = format_name(pattern, name_fields(layout, variables, index + 1, key))
        except ValueError as e:
            errors.append(f"{where}: name '{pattern}': {e}")
            continue
        why = name_problem(name)
        if why:
            errors.append(f"{where}: output name '{name}' {why}")
            continue
        this = f"item {index + 1} {json.dumps(variables, ensure_ascii=False)}"  # matrix items share a line
        if path_key(name) in names:
            errors.append(f"{where}: output name '{name}' of {this} is also that of {names[path_key(name)]}")
            continue
        names[path_key(name)] = f"{this} at {where}"
        outputs = _outputs(name, spec)
        longest = max(outputs, key=lambda p: len(p.encode()))
        if len(longest.encode()) > MAX_NAME_PATH:
            errors.append(f"{where}: output name {_shown_name(name)} is too long: its file <name>{longest[len(name):]} "
                          f"has {len(longest.encode())} bytes inside OUTDIR, at most {MAX_NAME_PATH} (Windows' "
                          f"paths stop at 260 characters, OUTDIR's included)")
            continue
        file = max((p.rpartition("/")[2] for p in outputs), key=lambda f: len(f.encode()))
        if len(file.encode()) > MAX_NAME_BYTES:  # `export.check_free` would refuse it at every render
            errors.append(f"{where}: output name {_shown_name(name)} is too long: its file <name>"
                          f"{file[len(name.rpartition('/')[2]):]} has {len(file.encode())} bytes in its name, at "
                          f"most {MAX_NAME_BYTES} (255 a file system allows, less 19 for its temporary names)")
            continue
        clash = _claim(taken, outputs, name, where)
        if clash:
            errors.append(clash)
            continue
        items.append(Item(index, layout, layout_file, text, variables, name, key, where, spec, problem,
                          tuple(outputs)))
    return items


def _shown_name(name: str) -> str:
    """An output name as messages quote it: whole up to 40 characters, else its start and its size."""
    return f"'{name}'" if len(name) <= 40 else f"'{name[:40]}...' ({len(name.encode())} bytes)"


def _read_layout(path: Path) -> tuple[str | None, str | None]:
    """(a layout file's text, None) or (None, why it can't be read): that fails its items when they run, the
    others go on. As stored (`layout.source_text`: no newline translation), so the text hashes as the file. A
    device or pipe is not read (/dev/zero has no end, a pipe may never give one)."""
    from studio.layout import source_text

    try:
        return source_text(path, "layout", pipes=False), None
    except InputError as e:
        return None, str(e)


def _parse(text: str, layout_file: Path, variables: dict):
    """(the parsed layout, None) or (None, why it can't be parsed): a bad layout fails its item when it runs."""
    from studio.layout import parse_layout

    try:
        return parse_layout(text, str(layout_file), variables, layout_file.parent, own_names=False), None
    except Exception as e:  # whatever it is, it is that item's failure: the others go on
        return None, _failure(e)


def _outputs(name: str, spec) -> list[str]:
    """The files an item writes, relative to OUTDIR: one per format, one per monitor of a span, the sidecar."""
    from studio.render import output_paths

    folder, _, stem = name.rpartition("/")
    files = [p.name for p in output_paths(spec, Path(), stem)] if spec is not None else []
    return [f"{folder}/{f}" if folder else f for f in files + [stem + manifest.SIDECAR_SUFFIX]]


def _claim(taken: dict, outputs: list[str], name: str, where: str) -> str | None:
    """Claim an item's files and folders in `taken` (keys `path_key`: macOS and Windows ignore case); or the
    error when another item has one of these files, or a file where this item needs a folder."""
    wanted = [(path, "file") for path in outputs]
    parts = outputs[0].split("/")[:-1]
    wanted += [("/".join(parts[:i]), "folder") for i in range(1, len(parts) + 1)]
    for path, kind in wanted:
        other = taken.get(path_key(path))
        if other and other[1] != name and "file" in (kind, other[0]):
            return (f"{where}: '{path}' is a {kind} of item '{name}' and a {other[0]} of item '{other[1]}' at "
                    f"{other[2]} (output paths are compared ignoring case)")
    for path, kind in wanted:
        taken.setdefault(path_key(path), (kind, name, where))
    return None


def select_shard(items, shard: tuple[int, int]) -> list:
    """Shard i of n: the items at positions i, i+n, i+2n, ... (every item in exactly one shard)."""
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise InputError(f"shard {i}/{n}: expected i/n with 0 <= i < n")
    return list(items)[i::n]


def log_path(out_dir: Path, shard: tuple[int, int]) -> Path:
    """OUTDIR/manifest.jsonl; a shard of several writes its own log, so shard folders merge by copying."""
    i, n = shard
    return out_dir / (manifest.LOG_NAME if n == 1 else f"manifest-{i}-of-{n}.jsonl")


# -- T5 feature cache -----------------------------------------------------------------------------------------

def _usable(features: np.ndarray, mask: np.ndarray) -> bool:
    """Whether an entry's arrays are one prompt's features: (1, L, C) finite floats and a (1, L) mask of 0s and
    1s. (That L is the prompt's token count and C the encoder's width, the pipeline checks.)"""
    return (features.ndim == 3 and features.shape[0] == 1 and mask.shape == features.shape[:2]
            and np.issubdtype(features.dtype, np.floating) and bool(np.isfinite(features).all())
            and bool(np.isin(mask, (0, 1)).all()))


class EmbeddingCache:
    """T5 features on disk, one .npz per key: the pipeline's `embedding_cache` (see encode_prompt).

    identity: the hash of the model's text encoder and tokenizer files, added to every key with the software
    that computes the features (`manifest.computing_software`: another build or device changes their last bits,
    a cache shared between machines or kept across upgrades serves each its own). folder None:
    nothing is stored (every prompt is encoded, in the same way as when cached). store=False: entries are
    read, not written (a read-only shared cache). An entry that can't be written (a full disk) is only
    encoded again next time: `warn` gets the first such failure. Within `holding`, what is put is also
    kept in memory, stored or not: the prompts an item's render encodes ahead reach its layers.
    """

    def __init__(self, folder: Path | None, identity: str, warn=None, store: bool = True):
        self.folder, self.identity, self.warn = folder, identity, warn
        self.software = manifest.computing_software()
        self.store = folder is not None and store
        self.hits = self.misses = 0
        self.failed = False
        self.held: dict | None = None  # digest -> (features, mask), within `holding`
        self.served: set[str] = set()  # digests whose last `get` read them from disk: put back, a miss after all

    def _path(self, key: dict) -> tuple[str, Path | None]:
        digest = manifest.sha256_json({"text_model": self.identity, **self.software, **key})
        return digest, None if self.folder is None else self.folder / digest[:2] / f"{digest}.npz"

    def __contains__(self, key: dict) -> bool:
        """Whether an entry for `key` is held (`holding`) or stored: an archive that opens and holds this key
        (its features are not read; `get` checks them)."""
        digest, path = self._path(key)
        if self.held and digest in self.held:
            return True
        if path is None:
            return False
        try:
            with np.load(path) as data:
                return str(data["key"]) == digest
        except Exception:  # whatever a damaged archive makes numpy or zipfile raise: a cache never fails an item
            return False

    def get(self, key: dict):
        """(features (1, L, C), mask (1, L)) of `key`, or None: absent, or damaged (not an archive, another
        key, or rows that are not features: see `_usable`), which the caller encodes again and puts back."""
        digest, path = self._path(key)
        self.served.discard(digest)
        if self.held and digest in self.held:
            self.hits += 1
            return self.held[digest]
        if path is not None:
            try:
                with np.load(path) as data:
                    if str(data["key"]) == digest and _usable(features := data["features"], mask := data["mask"]):
                        self.hits += 1
                        self.served.add(digest)
                        return features, mask
            except Exception:  # absent or damaged (as in __contains__): encode again
                pass
        self.misses += 1
        return None

    def put(self, key: dict, features: np.ndarray, mask: np.ndarray) -> None:
        digest, path = self._path(key)
        if digest in self.served:  # read, then found unusable by the pipeline (not its prompt's length or width)
            self.served.discard(digest)
            self.hits, self.misses = self.hits - 1, self.misses + 1
        if self.held is not None:
            self.held[digest] = features, mask
        if not self.store:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            archive = io.BytesIO()  # whole before the file is written: numpy's ZipFile, left open by a failed
            np.savez(archive, features=features, mask=mask, key=np.array(digest))  # write, fails again when collected
            tmp = write_temp(path.parent, path.name, lambda f: f.write(archive.getbuffer()))
            os.replace(tmp, path)
        except OSError as e:
            if not self.failed and self.warn is not None:
                self.warn(f"cannot write T5 features to {self.folder} ({e.strerror or e}); they are encoded again "
                          f"next run")
            self.failed = True


@contextmanager
def holding(caches):
    """Within it, each of the EmbeddingCaches `caches` keeps in memory what is put, stored on disk or not, for
    one item's render: the prompts it encodes ahead reach its layers, and memory does not grow from item to
    item."""
    for cache in caches:
        cache.held = {}
    try:
        yield
    finally:
        for cache in caches:
            cache.held = None


def text_identity(model_files: dict) -> str:
    """What decides T5 features: the text encoder's and tokenizer's files (relative path -> sha256)."""
    return manifest.sha256_json({k: v for k, v in model_files.items()
                                 if k.startswith(("text_encoder/", "tokenizer/"))})


# -- running --------------------------------------------------------------------------------------------------

class Interrupted(BaseException):
    """A second SIGINT/SIGTERM: drop the current item now."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def warn_job(job, err) -> None:
    """The job's warnings (`Job.warnings`: variables it sets that its layouts use nowhere), on `err`."""
    for warning in job.warnings:
        write_line(f"studio: batch: warning: {warning}", err)


class _Signals:
    """SIGINT/SIGTERM: the first asks to stop after the current item, the second raises Interrupted; while
    `checking` (the finished items' manifests and files, which has nothing to finish) the first raises it."""

    def __init__(self, err):
        self.err, self.received, self.saved = err, None, {}
        self.checking = self.said = False
        self.saying = threading.Lock()  # `acknowledge` runs in the loop and in a thread of the handler's

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None or self.checking:
            self.received = signum
            raise Interrupted(signum)
        self.received = signum
        # said from a thread: printed here, it could split a bar being drawn (tqdm's lock is the drawing thread's)
        threading.Thread(target=self.acknowledge, daemon=True).start()

    def acknowledge(self) -> None:
        """Say once that a first signal came, above the bars: from a thread the handler starts (at once, in a
        phase that reports no progress for minutes), and from the batch's loop and each progress report (which
        wait for it: the line comes before the next report's)."""
        if self.received is None or self.said:  # each progress report asks: no lock then
            return
        with self.saying:
            if self.received is not None and not self.said:
                self.said = True
                write_line(f"studio: batch: {signal.Signals(self.received).name}: stopping after the current item "
                           f"(again to drop it now)", self.err)

    def __exit__(self, *exc):
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


@dataclass
class Summary:
    items: int  # in the job
    selected: int  # in this shard
    rendered: list = field(default_factory=list)  # names
    skipped: list = field(default_factory=list)  # names, finished by an earlier run
    elsewhere: list = field(default_factory=list)  # names, being rendered by another run (`_ItemLock`)
    failed: list = field(default_factory=list)  # (name, message)
    dropped: str | None = None  # the item interrupted by a second signal
    signal: int | None = None
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        if self.signal is not None:
            return 128 + self.signal
        return 1 if self.failed else 0


@dataclass
class _Task:
    item: Item
    layout: object  # spec.Layout
    plan: object  # plan.Plan
    folder: Path
    stem: str
    inputs: dict
    models: dict  # model id -> {relative path: sha256}
    folders: dict  # model id -> the resolved folder it was read from (and the base that completed it)
    stale: list = field(default_factory=list)  # files of its last render that no item writes now: removed


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def run_batch(job: Job, out_dir, shard: tuple[int, int] = (0, 1), cache_dir=None, use_cache: bool = True,
              memory_budget=None, quiet: bool = False, out=None, err=None) -> Summary:
    """Render the items of shard i/n of `job` into `out_dir` (created), skipping finished ones.

    cache_dir: T5 features and the hashes of weights, inputs and outputs (default OUTDIR/.cache; a read-only
    one is read, with a warning); use_cache=False encodes every prompt and reads every output a rerun checks.
    memory_budget overrides the job's and the layouts'. Progress goes to `err` (bars) and one line per item to
    `out`. A bad memory budget, model, output or cache folder, or a batch log that can't be read, raises
    InputError (CheckpointError) before any item is rendered; after that, never raises for a bad item: it is
    reported in the summary. A shard without items says so and creates nothing. An unsharded run first merges
    the shards' logs into OUTDIR/manifest.jsonl.
    """
    out, err = out or sys.stdout, err or sys.stderr
    t_start = time.perf_counter()
    items = select_shard(job.items, shard)
    check_job(job, items, memory_budget)
    warn_job(job, err)
    where = f"shard {shard[0]}/{shard[1]}: " if shard[1] > 1 else ""
    if not items:
        print(f"{job.source}: {_item_count(len(job.items))}; {where}none in this shard, nothing to do", file=out,
              flush=True)
        return Summary(len(job.items), 0)
    out_dir = Path(out_dir)
    given = cache_dir is not None
    cache_dir = Path(cache_dir) if given else out_dir / ".cache"
    if given:  # checked before OUTDIR is created: a bad --cache-dir leaves nothing behind
        _make_folder(cache_dir, "cache folder")
    if not _make_folder(out_dir, "output folder"):
        raise InputError(f"output folder {out_dir}: not writable")
    store = _make_folder(cache_dir, "cache folder")  # a read-only one (a shared, pre-warmed cache) is read
    if not store:
        print(f"studio: batch: warning: cache folder {cache_dir}: read-only; the T5 features and file hashes "
              f"it holds are used, new ones are not stored", file=err, flush=True)
    root = out_dir.resolve()
    logged = _logged(root)
    _sweep_cache(cache_dir)
    hashes = manifest.FileHashes(cache_dir / HASHES, store)
    outputs = hashes if use_cache else manifest.FileHashes(None)  # the outputs' hashes, remembered or not
    summary = Summary(len(job.items), len(items))
    log = log_path(out_dir, shard)
    if shard[1] == 1:
        remove_temporaries(out_dir, {manifest.LOG_NAME})  # of a merge killed while writing
        try:
            manifest.merge_logs(out_dir)
        except OSError as e:
            print(f"studio: batch: warning: cannot merge the shards' logs into {log} ({e.strerror or e})", file=err)
    with _Signals(err) as signals:
        try:
            signals.checking = True
            todo = _scan(job, items, root, hashes, outputs, memory_budget, log, logged, summary, out)
            signals.checking = False
            in_shard = f", {len(items)} in shard {shard[0]}/{shard[1]}" if shard[1] > 1 else ""
            print(f"{job.source}: {_item_count(len(job.items))}{in_shard}: {len(summary.skipped)} already done, "
                  f"{len(summary.failed)} failed, {len(todo)} to render", file=out, flush=True)
            embeddings = cache_dir / EMBEDDINGS if use_cache else None
            _render_all(job, todo, root, hashes, outputs, embeddings, store, quiet, log, summary, signals, out,
                        err)
        except Interrupted as e:
            summary.signal = e.signum
        _save_hashes(hashes, err)
    if signals.received is not None and summary.signal is None:
        summary.signal = signals.received
    summary.seconds = time.perf_counter() - t_start
    _print_summary(job, summary, out, where)
    return summary


def check_job(job: Job, items, memory_budget=None) -> None:
    """What `run_batch` checks of `items` (a shard's) before it renders or creates anything, and `studio batch
    --list` too: the memory budget that overrides the job's, and the job's model when an item uses it
    (`check_model`: no weights read), a job's `model:` named at its line. Raises InputError, CheckpointError."""
    from studio.memory import parse_bytes

    parse_bytes(memory_budget)
    if not any(_uses_job_model(item.spec) for item in items):
        return
    try:
        check_model(job.model)
    except StudioError as e:
        if job.model_where is None:  # --model's, $STUDIO_MODEL's: named as given
            raise
        raise CheckpointError(f"{job.model_where}: model: {one_line(str(e))}") from None


def planned(job: Job, items, memory_budget=None) -> list[Item]:
    """`items`, each with the problem it would fail with when `run_batch` plans it (a budget too small for its
    layout, a model's config that can't run it, ...), no weight read: `studio batch --list`."""
    from studio.plan import plan_layout

    automatic: dict = {}
    checked = []
    for item in items:
        if item.spec is not None:
            try:
                plan_layout(item.spec, job.model, _budget(job, item.spec, memory_budget, automatic)[0])
            except StudioError as e:
                item = dataclasses.replace(item, problem=str(e))
        checked.append(item)
    return checked


def _budget(job: Job, layout, memory_budget, automatic: dict) -> tuple[int | None, bool]:
    """(the memory budget an item is planned with, whether one was chosen): --memory-budget's, else the job's,
    else (None) its layout's own; else one automatic budget for the whole batch, found when first needed and
    kept in `automatic`."""
    from studio.memory import auto_budget, parse_bytes

    budget = parse_bytes(memory_budget if memory_budget is not None else job.memory_budget)
    if budget is not None or layout.memory_budget is not None:
        return budget, True
    if "budget" not in automatic:
        from studio import backend

        automatic["budget"] = auto_budget(backend.free_memory())
    return automatic["budget"], False


def check_model(model: str) -> None:
    """Raise CheckpointError (one line) when `model` is neither a pipeline folder nor a hub id that the
    Hugging Face cache holds or the hub serves. Reads configs only: a hub id not cached downloads its JSON
    files, not its weights (the first item that renders with it does that)."""
    from studio.checkpoint import resolve_model_dir

    resolve_model_dir(str(model), weights=False)


def _uses_job_model(spec) -> bool:
    """Whether an item whose layout is `spec` renders a layer with the job's model: one its layout and layer name
    none for. An item whose layout did not load (None) fails on its own, whatever the model."""
    if spec is None:
        return False
    return any(isinstance(layer, GenerateLayer) and layer.model is None and spec.model is None
               for layer in spec.layers)


def _make_folder(path: Path, what: str) -> bool:
    """Create `path` (and its parents) or raise InputError saying why it can't be a folder; returns whether
    files can be written in it."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path}: is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{what} {path}: cannot create it ({e.strerror or type(e).__name__})") from None
    return os.access(path, os.W_OK | os.X_OK)


def _logged(root: Path) -> set:
    """The digests of the records in OUTDIR's logs (manifest*.jsonl): one per render of an item, so a render
    whose line is missing is told from an earlier render of the same item; a log that can't be read (a
    folder, no permission, a disk error) raises InputError."""
    logged = set()
    for path in root.glob("manifest*.jsonl"):
        try:
            records = manifest.read_lines(path)
        except OSError as e:
            raise InputError(f"{path}: cannot read this batch log ({e.strerror or type(e).__name__})") from None
        logged |= {r["digest"] for r in records if isinstance(r.get("digest"), str)}
    return logged


def _sweep_cache(cache_dir: Path) -> None:
    """Delete the temporary files a killed run left in the cache (T5 features, file hashes): those unchanged
    for STALE_PART seconds; younger ones may be another shard's, being written. Only studio's own names, where
    studio writes them: --cache-dir may be a folder other programs use too."""
    now = time.time()
    for path in [*cache_dir.glob(f".{HASHES}.*.part"), *cache_dir.glob(f"{EMBEDDINGS}/*/.*.npz.*.part")]:
        try:
            if now - path.lstat().st_mtime > STALE_PART:
                path.unlink()
        except OSError:
            pass  # removed by another shard, or not ours to remove


def _save_hashes(hashes, err, every: float = 0.0) -> None:
    warning = hashes.save(every)
    if warning:
        write_line(f"studio: batch: warning: {warning}", err)


def _scan(job, items, root, hashes, outputs, memory_budget, log, logged, summary, out) -> list[_Task]:
    """Plan each item, clean its leftover temporary files (`_clean`), and sort it into done (its manifest checks
    out, its files hashed by `outputs`), failed (bad layout, budget, model, another item's file through a
    symbolic link: `_real_owners`) or to render, with the files its last manifest lists that no item of the job
    writes now (`stale`). Notes once when finished items had another budget. logged: `_logged`."""
    from studio.memory import format_bytes
    from studio.plan import plan_layout
    from studio.render import temporary_targets

    owners = _real_owners(job.items, root)
    claimed = set(owners)
    models: dict = {}
    automatic: dict = {}
    todo, budgets = [], []  # budgets: (recorded, now) of finished items planned with another budget
    for item in items:
        pause_point("check", item.name)
        try:
            target = root / item.name
            folder = target.parent.resolve()
            if folder != root and root not in folder.parents:
                raise InputError(f"output '{item.name}' leaves OUTDIR through a symbolic link ({folder})")
            _check_owner(item, folder, root, owners)
            if item.spec is None:
                raise InputError(item.problem)
            layout = item.spec
            budget, chosen = _budget(job, layout, memory_budget, automatic)
            the_plan = plan_layout(layout, job.model, budget)
            used = sorted({str(layout.layers[j.layer].model or layout.model or job.model) for j in the_plan.jobs})
            for model_id in used:
                if model_id not in models:
                    models[model_id] = manifest.model_record(model_id, hashes)
            task = _Task(item, layout, the_plan, folder, target.name, _inputs(layout, item.layout_file.parent, hashes),
                         {m: models[m]["files"] for m in used},
                         {m: models[m]["folder"] + (f", with the base pipeline {models[m]['base']}"
                                                    if "base" in models[m] else "") for m in used})
            sidecar = manifest.sidecar_path(folder, task.stem)
            _clean(folder, task.stem, temporary_targets(layout, task.stem) | {task.stem + manifest.SIDECAR_SUFFIX})
            record, reason = _recorded(task, outputs)
        except Exception as e:  # a bad item (layout, budget, model, unreadable file) must not stop the batch
            message = _failure(e)
            summary.failed.append((item.name, message))
            print(f"failed {item.name} (item {item.index + 1}, {item.where}): {headline(message)}", file=out,
                  flush=True)
            continue
        if reason is not None:
            print(f"{item.name}: rendering again ({reason})", file=out, flush=True)
        if record is not None and reason is None:
            summary.skipped.append(item.name)
            if chosen and record["memory_budget"] != the_plan.budget:
                budgets.append((record["memory_budget"], the_plan.budget))
            if record["digest"] not in logged:  # killed between the manifest and its log line
                note = _log(log, record, sidecar, root)
                if note:
                    print(f"{item.name}: {note}", file=out, flush=True)
        else:
            if record is not None:  # a valid manifest of an earlier render of this name: its files are ours
                task.stale = _stale(record, folder, task.stem, root, claimed)
            todo.append(task)
    if budgets:  # the budget decides attention chunking, so the bytes: say so, but keep finished work
        recorded, now = budgets[0]
        print(f"note: {len(budgets)} finished item(s) were rendered with another memory budget (e.g. "
              f"{format_bytes(recorded)}, now {format_bytes(now)}), which may change their bytes; they are kept "
              f"(delete their manifests to render them again)", file=out, flush=True)
    return todo


def _clean(folder: Path, stem: str, names: set[str]) -> None:
    """Remove what a killed run left of the item `stem` (`remove_temporaries` of `names`: its own stems' files in
    any format, its layout may have dropped one; not other items'), holding its lock (`_ItemLock`): not while
    another run renders it, from another host or PID namespace too, where its pid can't be seen."""
    lock = _ItemLock(folder, stem)
    try:
        free = folder.is_dir() and lock.take() is None
    except OSError:  # a folder no file can be made in (read-only): nothing can be removed either
        return
    if free:
        try:
            remove_temporaries(folder, names)
        finally:
            lock.release()


def _real_outputs(item, folder: Path, root: Path) -> list[str]:
    """The files `item` writes as they are in OUTDIR `root`, its folder `folder` resolved (links followed)."""
    return [(folder.relative_to(root) / Path(path).name).as_posix() for path in item.outputs]


def _real_owners(items, root: Path) -> dict:
    """path_key of each file the job's `items` write, as it is in OUTDIR (`_real_outputs`) -> the item that
    writes it: the one whose name is that path, else the first. A symbolic link to a folder inside OUTDIR
    can make two items' names one file: the others fail (`_check_owner`)."""
    direct, linked, folders = {}, {}, {}
    for item in items:
        written = item.name.rpartition("/")[0]
        if written not in folders:
            try:
                folders[written] = (root / item.name).parent.resolve()
            except (OSError, RuntimeError):  # a loop of links (RuntimeError before Python 3.13)
                folders[written] = None
        folder = folders[written]
        if folder is None or folder != root and root not in folder.parents:
            continue  # it fails (`_scan`)
        through_link = path_key(folder.relative_to(root).as_posix()) != path_key(Path(written).as_posix())
        for path in _real_outputs(item, folder, root):
            (linked if through_link else direct).setdefault(path_key(path), item.name)
    return {**linked, **direct}


def _check_owner(item, folder: Path, root: Path, owners: dict) -> None:
    """InputError when a file `item` writes is, through a symbolic link, another item's (`_real_owners`)."""
    for path in _real_outputs(item, folder, root):
        owner = owners.get(path_key(path), item.name)
        if owner != item.name:
            parts = item.name.split("/")[:-1]
            links = [root.joinpath(*parts[:i]) for i in range(1, len(parts) + 1)]
            link = next((f" {p} (-> {os.readlink(p)})" for p in links if p.is_symlink()), "")
            raise InputError(f"output '{item.name}' is the file '{path}' of item '{owner}' through the symbolic "
                             f"link{link} (two items never share a file)")


def _recorded(task, outputs) -> tuple[dict | None, str | None]:
    """(the item's manifest, why it is not done or None when it is done, its files hashed by `outputs`);
    (None, None) when it has none."""
    try:
        record = manifest.load_sidecar(manifest.sidecar_path(task.folder, task.stem))
        return record, manifest.check(record, task.folder, {"item": task.item.key, "inputs": task.inputs,
                                                            "models": task.models}, outputs,
                                      task.item.layout_file.parent)
    except (FileNotFoundError, NotADirectoryError):  # none (its folder may be a file: the item fails)
        return None, None
    except (OSError, ValueError) as e:
        return None, f"damaged manifest: {e}"


class _ItemLock(FileLock):
    """An item's lock file '.<stem>.lock' in its folder (`export.FileLock`), locked while a run renders the item,
    so that two runs of one job into one OUTDIR (a requeued Slurm job beside its first attempt) don't both render
    it. A killed run's file stays, unlocked, and the next run takes it."""

    def __init__(self, folder: Path, stem: str):
        super().__init__(folder / f".{stem}.lock")

    def take(self) -> str | None:
        """Lock it: None when this process holds it (or nothing can be locked), else ' (pid N)' naming the process
        that does ('' when it has not written its pid yet)."""
        while True:
            try:
                held = super().take(wait=False)
                break
            except FileNotFoundError:  # another run's failed item removed the folder it had made
                self.path.parent.mkdir(parents=True, exist_ok=True)
        if held is not None:
            with os.fdopen(held, "rb") as f:
                pid = f.read(20).decode(errors="replace").strip()
            return f" (pid {pid})" if pid.isdigit() else ""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # a killed run's pid may be there
            os.write(self.fd, f"{os.getpid()}\n".encode())
        return None


def _new_folders(folder: Path, root: Path) -> list[Path]:
    """The folders that creating `folder` inside `root` makes, deepest first."""
    new = []
    while folder != root and not folder.exists():
        new.append(folder)
        folder = folder.parent
    return new


def _remove_empty(folders: list[Path]) -> None:
    """Remove `folders` (deepest first) while they are empty: another run may have put files in them."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _log(log: Path, record: dict, sidecar: Path, root: Path) -> str | None:
    """Add a rendered item's line to the batch log; or, when it can't be written (a full disk), what to say
    of it: its manifest is written, so the item is done, and the next run adds the line (`_scan`)."""
    try:
        manifest.append_line(log, manifest.log_record(record, sidecar, root))
    except OSError as e:
        return f"cannot add its line to {log} ({e.strerror or e}); the next run adds it"
    return None


def _stale(record: dict, folder: Path, stem: str, root: Path, claimed: set) -> list[Path]:
    """The files a manifest of the item `stem` lists (its own: in its folder, named after it) that no item of
    the job writes now (`claimed`: `path_key` of paths in OUTDIR), e.g. a PDF its layout no longer asks for."""
    paths = [folder / e["path"] for e in record["files"] if "/" not in e["path"] and e["path"].startswith(stem)]
    return [p for p in paths if path_key(p.relative_to(root).as_posix()) not in claimed]


def _item_count(n: int) -> str:
    return f"{n} item{'' if n == 1 else 's'}"


def _inputs(layout, base_dir: Path, hashes) -> dict:
    """sha256 of the files a layout reads besides itself (`render.layout_inputs`; None: an image that is not a
    file): images, and fonts named by path or family."""
    from studio.render import layout_inputs

    return {name: hashes(path) if path.is_file() else None for _, name, path in layout_inputs(layout, base_dir)}


def _render_all(job, todo, root, hashes, outputs, embeddings, store, quiet, log, summary, signals, out, err):
    from studio.render import render

    pipelines: dict = {}
    caches: dict = {}
    software = manifest.software()
    durations: list[float] = []
    weights = _weights(todo)
    keep_all = _fit_together(todo, weights)
    todo = _grouped(todo)
    bar = None
    if not quiet and todo:
        bar = progress_bar(len(todo), "batch", "item", err, position=0)
    say = lambda text: write_line(text, out)  # noqa: E731
    below = _BatchBars(quiet, err, signals)  # loading models, encoding ahead
    if len(weights) > 1 and not keep_all:
        say(f"note: the job's {len(weights)} models don't fit the memory budget together: each is loaded only "
            f"while its items render")
    ahead = embeddings is not None and store  # prompts are encoded ahead into the cache (one that stores them)
    group = None  # the models of the items being rendered
    ahead_load = ahead_encode = 0.0  # s: the group's models loaded and prompts encoded ahead, for its first record
    for k, task in enumerate(todo, 1):
        if signals.received is not None:
            break
        _hold(task, pipelines, keep_all)
        if ahead and set(task.models) != group:  # a group's first item: its models load, its prompts are encoded
            group = set(task.models)
            ta = time.perf_counter()
            try:
                _load_models(job, task, pipelines, caches, embeddings, store, err, below)
            except Exception:  # the item fails on its own, with this error, when its turn comes
                pass
            tb = time.perf_counter()
            unstored = any(caches[m].failed for m in group if m in caches)  # a full disk: ahead would be lost
            if signals.received is None and not unstored:
                _encode_ahead([t for t in todo if set(t.models) == group], pipelines, job.model, weights, below,
                              say, err)
            ahead_load, ahead_encode = tb - ta, time.perf_counter() - tb
        item = task.item
        head = f"[{k}/{len(todo)}]"
        t0 = time.perf_counter()
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        lock = _ItemLock(task.folder, task.stem)
        new = _new_folders(task.folder, root)
        try:
            task.folder.mkdir(parents=True, exist_ok=True)
            holder = lock.take()
            if holder is not None:
                summary.elsewhere.append(item.name)
                skipped = f"being rendered by another studio run{holder}; skipped"
            else:  # ours now: another run may have finished the item since it was checked
                record, reason = _recorded(task, outputs)
                skipped = "finished by another studio run; already done" if record and reason is None else None
                if skipped:
                    summary.skipped.append(item.name)
            if skipped:
                write_line(f"{head} {item.name}: {skipped}", out)
                if bar is not None:
                    bar.update(1)
                continue
            loading = _load_models(job, task, pipelines, caches, embeddings, store, err, below)
            if signals.received is not None:  # asked to stop while models loaded or prompts were encoded ahead
                break  # before the item starts
            keep = _keep_text_encoder(task, pipelines, job.model, weights)
            hits0 = {m: (c.hits, c.misses) for m, c in caches.items()}
            bars = _BatchBars(quiet, err, signals, item.name)
            warning = f"{head} warning: {item.name}: {item.layout}"  # text that leaves its region, say
            info: dict = {}
            t1 = time.perf_counter()
            try:
                with holding([caches[m] for m in task.models]):
                    files = render(task.layout, task.folder, job.model, task.plan.budget, overwrite=True,
                                   progress=bars, pipelines=pipelines, stem=task.stem, record=info,
                                   metadata={"batch_item": item.key},  # files travel: the layout's name alone
                                   warn=lambda where, problem: write_line(  # the layout as the job names it
                                       f"{warning}{where.removeprefix(task.layout.source)}: {problem}", out))
            finally:
                bars.close()
            t2 = time.perf_counter()
            caching = {"text_encoder": {m: "kept" if kept else "released" for m, kept in keep.items()},
                       "embedding_cache": {m: {"stored": c.store, "hits": c.hits - hits0[m][0],
                                               "misses": c.misses - hits0[m][1]}
                                           for m, c in caches.items() if m in keep}}
            timings = {"started": started, "load_s": round(ahead_load + loading, 3),
                       "encode_ahead_s": round(ahead_encode, 3), "render_s": round(t2 - t1, 3),
                       "total_s": round(time.perf_counter() - t0 + ahead_load + ahead_encode, 3)}
            ahead_load = ahead_encode = 0.0  # the group's next items did not wait for them
            record = _item_record(job, task, files, outputs, info, caching, software, timings)
            for path in task.stale:  # before the manifest: a kill here leaves the old one, which lists them
                path.unlink(missing_ok=True)
            pause_point("manifest", item.name)
            sidecar = manifest.sidecar_path(task.folder, task.stem)
            manifest.write_sidecar(sidecar, record)
            note = _log(log, record, sidecar, root)
            if note:
                write_line(f"{head} {item.name}: {note}", out)
        except Interrupted:
            summary.dropped = item.name
            raise
        except Exception as e:  # one bad item must not stop the batch; StudioError or not, it is reported
            lock.release()
            _remove_empty(new)  # the folders made for the item: a failed item leaves none behind
            message = _failure(e, err)
            summary.failed.append((item.name, message))
            write_line(f"{head} failed {item.name}: {headline(message)}", out)
            if bar is not None:
                bar.update(1)
            continue
        finally:
            lock.release()
            _save_hashes(hashes, err, SAVE_HASHES)
        seconds = time.perf_counter() - t0
        durations.append(seconds - loading)  # the ETA leaves out loading models, done at most once per group
        summary.rendered.append(item.name)
        left = len(todo) - k
        eta = f", {left} left, eta {_clock(left * sum(durations) / len(durations))}" if left else ""
        write_line(f"{head} rendered {item.name} ({seconds:.1f} s{eta})", out)
        if bar is not None:
            bar.update(1)
    signals.acknowledge()  # a signal after the last report: the loop stopped, or its last item is done
    if bar is not None:
        bar.close()


def _item_record(job, task, files, outputs, info: dict, caching: dict, software: dict, timings: dict) -> dict:
    """The manifest of a rendered item (manifest.FORMAT), with its digest: what it is (job, layout text,
    variables, model files), how it was made (`render`'s info: budget, generations; T5 kept or released and
    the embedding cache's hits, `caching`; the software) and what it wrote (files with sizes and sha256,
    hashed by `outputs`, which remembers them for the next run's check)."""
    item = task.item
    record = {
        "format": manifest.FORMAT, "item": item.key, "index": item.index, "name": item.name,
        "job": str(job.source),
        "layout": {"path": item.layout, "file": str(item.layout_file.absolute()),  # a link: its folder
                   "sha256": manifest.sha256_text(item.layout_text), "text": item.layout_text},
        "variables": item.variables, "resolved_variables": task.layout.variables, "inputs": task.inputs,
        "model": job.model, "model_identity": job.model_identity if _uses_job_model(task.layout) else None,
        "models": task.models,
        "model_folders": task.folders, "cwd": os.getcwd(), "memory_budget": info["budget"],
        "generations": info["generations"], **caching, "software": software, "timings": timings,
        "files": manifest.file_entries(files, task.folder, outputs),
    }
    record["digest"] = manifest.record_digest(record)
    return record


def _load_models(job, task, pipelines, caches, embeddings, store, err, bars) -> float:
    """Load the models this item needs that are not loaded yet, each with its embedding cache (in the folder
    `embeddings`, None: none; store=False: read only), with a bar each on `bars` (`_BatchBars`); seconds."""
    from studio.pipeline import PixArtSigmaPipeline
    from studio.tiny import note_if_tiny

    t0 = time.perf_counter()
    for model_id, files in task.models.items():
        if model_id in pipelines:
            continue
        try:
            pipe = PixArtSigmaPipeline.from_pretrained(model_id, progress=lambda done, total: bars(
                str(model_id), "load", done, total))
        finally:
            bars.close()
        note_if_tiny(model_id, pipe, err)
        warn = lambda text: write_line(f"studio: batch: warning: {text}", err)  # noqa: E731
        pipe.embedding_cache = caches[model_id] = EmbeddingCache(embeddings, text_identity(files), warn, store)
        pipelines[model_id] = pipe
    return time.perf_counter() - t0


def _weights(todo) -> dict:
    """Model id -> the bytes of its weights that stay loaded from item to item (transformer and VAE), as the
    items' plans count them in their denoising phase (T5 released)."""
    return {job.model: next(p.weights for p in job.memory.phases if p.name == "denoise")
            for task in todo for job in task.plan.jobs}


def _fit_together(todo, weights: dict) -> bool:
    """Whether all the batch's models can stay loaded from item to item (the fastest): every generation's
    planned peak, which counts its own model's weights, fits its item's budget beside the other models'."""
    total = sum(weights.values())
    return all(job.memory.peak - weights[job.model] + total <= task.plan.budget
               for task in todo for job in task.plan.jobs)


def _grouped(todo) -> list:
    """The items in the order they render: grouped by the set of models they use, so that a model that can't
    stay loaded loads as few times as it can. The first item's group comes first, then each time the group
    sharing the most models with the one before (the first in job order on a tie); job order within a group."""
    groups: dict = {}
    for task in todo:
        groups.setdefault(frozenset(task.models), []).append(task)
    order, left = [], list(groups)
    while left:
        before = order[-1] if order else frozenset()
        order.append(max(left, key=lambda models: len(models & before)))  # max: the first of the best
        left.remove(order[-1])
    return [task for models in order for task in groups[models]]


def _hold(task, pipelines: dict, keep_all: bool) -> None:
    """Before an item, release what its memory plan does not count: the models it doesn't use, or, when all
    stay loaded (`_fit_together` counts their transformers and VAEs), the T5 encoders those models keep."""
    unused = [model_id for model_id in pipelines if model_id not in task.models]
    for model_id in unused:
        if keep_all:
            pipelines[model_id].release_text_encoder()
        else:
            del pipelines[model_id]
    if unused and not keep_all:
        backend.give_back_memory()  # their memory is free before the next model loads


def _generations(task, pipelines, default_model, weights: dict):
    """Per generation of the item: (model id, its layer, its plan with T5 released before denoising, and with
    T5 kept loaded, None when the budget can't keep it, and the bytes of the other models loaded beside it)."""
    from studio.errors import PlanError

    for job in task.plan.jobs:
        layer = task.layout.layers[job.layer]
        model_id = str(layer.model or task.layout.model or default_model)
        pipe = pipelines[model_id]
        args = (job.gen_height, job.gen_width, 1, task.plan.budget, layer.guided)
        try:
            kept = pipe.generation_plan(*args, keep_text_encoder=True)
        except PlanError:
            kept = None
        beside = sum(weights[m] for m in pipelines if m != model_id)
        yield model_id, layer, pipe.generation_plan(*args, keep_text_encoder=False), kept, beside


def _kept(generations: list) -> dict:
    """Per model, from an item's `_generations`: keep T5 loaded through denoising only when that changes no
    attention chunk (memory allows it without slowing or changing anything) and fits the budget beside the
    other models loaded, in an item that uses one model (render runs an item's models one after another: a
    kept T5 would stay beside the next, whose plan does not count it); else release it before."""
    one_model = len({model_id for model_id, *_ in generations}) == 1
    keep = {}
    for model_id, _, released, kept, beside in generations:
        same = kept is not None and [p.chunks for p in kept.phases] == [p.chunks for p in released.phases]
        keep[model_id] = keep.get(model_id, True) and one_model and same and kept.peak + beside <= kept.budget
    return keep


def _keep_text_encoder(task, pipelines, default_model, weights: dict) -> dict:
    """Set each of the item's models to keep T5 or release it (`_kept`); returns model id -> kept."""
    keep = _kept(list(_generations(task, pipelines, default_model, weights)))
    for model_id, kept in keep.items():
        pipelines[model_id].keep_text_encoder = kept
    return keep


def _encode_ahead(todo, pipelines, default_model, weights: dict, bars, say, err) -> None:
    """Put every prompt the items `todo` need, and the embedding cache lacks, into the cache before rendering
    them, in one read of each model's streamed T5 (or as few as the items' memory budget allows), where
    each item would otherwise read the whole encoder for its own prompts (`encode_all_ahead`). Needs the
    items' models loaded (they are planned with `pipelines` as they will render). Items whose T5 stays
    loaded encode their own. A failure here only warns: the items then encode their prompts, or fail,
    themselves. bars: `_BatchBars`; say(text): a line for the log."""
    from studio.pipeline import encode_all_ahead

    requests = []
    for task in todo:
        if not all(model_id in pipelines for model_id in task.models):
            continue  # a model that did not load: the item fails on its own
        generations = list(_generations(task, pipelines, default_model, weights))
        keep = _kept(generations)
        for model_id, layer, released, _, beside in generations:
            if not keep[model_id]:
                text = released.phases[0]
                requests.append((pipelines[model_id], layer.texts, text,
                                 max(task.plan.budget - text.peak - beside, 0)))
    try:
        encoded = encode_all_ahead(requests, progress=lambda done, total: bars("", "ahead", done, total))
    except Exception as e:  # the items encode (or fail) on their own
        message = _failure(e, err)
        write_line(f"studio: batch: warning: encoding the prompts ahead failed: {headline(message)}", err)
        return
    finally:
        bars.close()
    if encoded:
        say(f"encoded {encoded} prompt{'s' * (encoded != 1)} ahead")


class _BatchBars(PhaseBars):
    """Bars below the batch's bar: of loading models, encoding ahead, or an item's phases (prefixed with its
    `name`). Each report first says a signal that came (`_Signals.acknowledge`); an item's first denoising step
    is a pause point (tests)."""

    def __init__(self, quiet: bool, err, signals: _Signals, name: str = ""):
        super().__init__(quiet, prefix=name, file=err, position=1, leave=False)
        self.signals, self.name = signals, name

    def __call__(self, label: str, phase: str, done: int, total: int) -> None:
        if phase == "denoise" and done == 1:
            pause_point("denoise", self.name)
        self.signals.acknowledge()
        super().__call__(label, phase, done, total)


def _failure(e: Exception, err=None) -> str:
    """What an item's failure says: a StudioError its message, an OSError (the disk or a file: full, missing,
    in the way) the file and what is wrong, running out of memory so in plain words; any other exception,
    most likely a bug in studio, its type and message, with its traceback on `err` (default stderr) for the
    bug report."""
    if isinstance(e, StudioError):
        return str(e)
    if isinstance(e, OSError):  # not a bug: no traceback
        return f"{e.filename}: {e.strerror}" if e.filename and e.strerror else f"{type(e).__name__}: {e}"
    if out_of_memory(e):
        return OUT_OF_MEMORY
    with above_bars(err):
        traceback.print_exception(e, file=err or sys.stderr)
    return f"{type(e).__name__}: {e}"


def _print_summary(job, summary: Summary, out, where: str) -> None:
    parts = [f"{len(summary.rendered)} rendered", f"{len(summary.skipped)} already done",
             f"{len(summary.failed)} failed"]
    if summary.elsewhere:
        parts.append(f"{len(summary.elsewhere)} left to another studio run")
    if summary.signal is not None:
        left = (summary.selected - len(summary.rendered) - len(summary.skipped) - len(summary.failed)
                - len(summary.elsewhere))
        parts.append(f"stopped by {signal.Signals(summary.signal).name} with {left} not rendered"
                     + (f" ({summary.dropped} dropped)" if summary.dropped else ""))
    print(f"{job.source}: {where}{', '.join(parts)} in {_clock(summary.seconds)}", file=out)
    by_message: dict[str, list[str]] = {}  # the same reason once, with every item it failed
    for name, message in summary.failed:
        by_message.setdefault(message, []).append(name)
    for message, names in by_message.items():
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        print(f"  failed {shown}:", file=out)
        for line in message.splitlines():
            print(f"    {line}", file=out)
    out.flush()


# -- rerender -------------------------------------------------------------------------------------------------

def rerender(manifest_file, out_dir=None, overwrite: bool = False,
             progress: Callable[[str, str, int, int], None] | None = None) -> list[tuple[str, str, str, str]]:
    """Render the item of a batch manifest again, as it was: same layout text, variables, model files
    (checked), memory budget; into `out_dir`, or a temporary folder when None. Returns (file, sha256 in the
    manifest, sha256 now, note) per file; equal hashes mean bit-identical files, else the note says how they
    differ (`pixel_difference`, the original read beside the manifest). A manifest that is damaged or was
    edited (`manifest.record_problem`) is refused. Runs in the batch's working folder when it still exists,
    so model paths relative to it mean the same folders (the files name models as the batch spelled them).
    progress(label, phase, done, total): loading each model ('load'), then as `render` reports."""
    manifest_file = Path(manifest_file)
    try:
        record = manifest.load_sidecar(manifest_file)
    except FileNotFoundError:
        raise InputError(f"{manifest_file}: no such manifest") from None
    except OSError as e:
        raise InputError(f"{manifest_file}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:
        raise InputError(f"{manifest_file}: not a usable batch manifest: {e}") from None
    out_dir = None if out_dir is None else Path(out_dir).absolute()
    manifest_file = manifest_file.absolute()  # here, not in the batch's working folder
    with _working_folder(record["cwd"]):
        return _rerender(record, manifest_file, out_dir, overwrite, progress)


@contextmanager
def _working_folder(folder: str | None):
    """Run in `folder` when it is an existing folder, else where we are; back afterwards."""
    here = os.getcwd()
    if not folder or not Path(folder).is_dir():
        yield
        return
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(here)


def _rerender(record: dict, manifest_file: Path, out_dir: Path | None, overwrite: bool, progress) -> list:
    from studio.layout import parse_layout
    from studio.pipeline import PixArtSigmaPipeline
    from studio.render import check_outputs, output_paths, render
    from studio.tiny import note_if_tiny

    lay = record["layout"]
    layout_file = Path(lay["file"])
    layout = parse_layout(lay["text"], str(layout_file), record["variables"], layout_file.parent, own_names=False)
    stem = record["name"].rsplit("/", 1)[-1]
    if out_dir is not None:  # before hashing and loading the models: a folder that can't take the files fails now
        _make_folder(out_dir, "output folder")
        check_outputs(layout, output_paths(layout, out_dir, stem), overwrite)
    hashes = manifest.FileHashes(None)
    inputs = _inputs(layout, layout_file.parent, hashes)
    changed = manifest.changed_input(record["inputs"], inputs, layout_file.parent)
    if changed is not None:
        raise InputError(f"{manifest_file}: input {changed} changed since the item was rendered")
    pipelines = {}
    # a hub id the layout names is one (a HubId) whatever folder of that name the working folder holds
    hub_ids = {m: m for m in [layout.model, *(getattr(layer, "model", None) for layer in layout.layers)]
               if isinstance(m, HubId)}
    for model_id, files in record["models"].items():
        model_id = hub_ids.get(model_id, model_id)
        try:
            now = manifest.model_record(model_id, hashes)
        except StudioError as e:
            used = record["model_folders"].get(model_id)
            raise InputError(f"{manifest_file}: model {model_id}: {headline(e)}"
                             + (f" (the batch read {used}, from {record.get('cwd')})" if used else "")) from None
        changed = sorted(set(files.items()) ^ set(now["files"].items()))
        if changed:
            raise InputError(f"{manifest_file}: model {model_id}: {changed[0][0]} differs from the recorded file")
        loading = None if progress is None else (lambda done, total: progress(model_id, "load", done, total))
        pipe = PixArtSigmaPipeline.from_pretrained(model_id, progress=loading)
        note_if_tiny(model_id, pipe)
        pipe.embedding_cache = EmbeddingCache(None, text_identity(files))
        pipe.keep_text_encoder = record["text_encoder"].get(model_id) == "kept"
        pipelines[model_id] = pipe
    changes = manifest.software_changes(record["software"], manifest.software())
    if changes:
        warnings.warn(f"{manifest_file}: rendered with other software or hardware ({'; '.join(changes)}): the "
                      f"files may differ in their last bits")
    with tempfile.TemporaryDirectory(prefix="studio-rerender-") as tmp:
        folder = out_dir if out_dir is not None else Path(tmp)  # made above, or by the context: render writes there
        with holding([pipe.embedding_cache for pipe in pipelines.values()]):
            files = render(layout, folder, record["model"], record["memory_budget"], overwrite=overwrite,
                           progress=progress, pipelines=pipelines, stem=stem, metadata={"batch_item": record["item"]},
                           reuse_art=False)  # every generation made again: that's what is checked
        now = {p.name: (manifest.sha256_file(p), p) for p in files}
        compared = []
        for entry in record["files"]:
            digest, again = now.get(Path(entry["path"]).name, ("", None))
            note = "" if digest == entry["sha256"] else \
                "not written again" if again is None else \
                pixel_difference(manifest_file.parent / entry["path"], entry["sha256"], again)
            compared.append((entry["path"], entry["sha256"], digest, note))
    return compared


def pixel_difference(original: Path, recorded: str, again: Path) -> str:
    """How a file rendered `again` differs from the `original` one (whose bytes have the sha256 `recorded`), which
    it does not equal byte for byte: in its pixels (how many, by how much), or only in the bytes that encode them
    (compression, metadata)."""
    if not original.is_file():
        return f"pixels not compared: the original is not at {original}"
    if manifest.sha256_file(original) != recorded:
        return f"pixels not compared: {original} is not the file the manifest records"
    before, after = read_pixels(original), read_pixels(again)
    if before is None or after is None:
        return "pixels not compared: not a file studio reads back"
    if before.shape != after.shape:
        return f"other pixels: {before.shape} as recorded, {after.shape} now"
    differ = (before != after).reshape(before.shape[0], before.shape[1], -1).any(axis=-1)
    if not differ.any():
        return "the same pixels; only their encoding differs (compression, metadata)"
    largest = int(np.abs(before.astype(np.int64) - after.astype(np.int64)).max())
    return f"{np.count_nonzero(differ)} of {differ.size} pixels differ, by at most {largest}"


def describe_items(items, out) -> None:
    """One line per item: number, output name, layout, variables (`studio batch --list`); an item whose
    layout has problems gets them on the next lines, indented, after where the job gives the item
    ('jobs.csv:12', its row): it would fail when rendered."""
    for item in items:
        print(f"{item.index + 1}\t{item.name}\t{item.layout}\t{json.dumps(item.variables, ensure_ascii=False)}",
              file=out)
        for line in (item.problem or "").splitlines():
            print(f"\tproblem (item at {item.where}): {line}", file=out)
