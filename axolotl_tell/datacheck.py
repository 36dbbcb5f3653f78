"""Bad input found before tokenization, named by entry and ``file:line``, with the fix.

Axolotl's loaders report a malformed JSON line as ``DatasetGenerationError``
(no file, no line), read invalid UTF-8 without complaint, and fail deep inside
a prompt strategy with ``KeyError: 'output'`` when a column is missing. The
checks here run first, on local files only:

* :func:`check_local_data`: a local path that does not exist; for local
  ``.json`` / ``.jsonl`` files, every line must be UTF-8 and (JSON Lines) a
  JSON object, or the whole file one JSON document (``.json``). One streaming
  pass, O(file) time and O(longest line) memory (a whole-document ``.json`` is
  parsed once); about 3 s per million alpaca rows (``bench/scale.py``). A file
  is checked once per process for a given size and mtime.
* :func:`check_columns`: the columns the dataset ``type`` reads exist and have
  no null (a JSON line that lacks a field Arrow fills with null).
* :func:`row_location`: ``path:line`` of a raw row of a local JSON Lines file,
  for errors about single rows (computed only when there is an error).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

JSON_SUFFIXES = (".json", ".jsonl")
# a path with one of these suffixes, or an explicit local prefix, is a local file (not a hub dataset name)
_LOCAL_SUFFIXES = (*JSON_SUFFIXES, ".csv", ".parquet", ".arrow", ".txt", ".gz", ".zst")
_LOCAL_PREFIXES = ("/", "./", "../", "~")
_FIX_UTF8 = ("re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 in.jsonl > out.jsonl`), "
             "or fix the bytes on that line")
_FIX_JSONL = "make every line one complete JSON object (JSON Lines: one row per line, no trailing commas)"
_checked: dict[tuple, int] = {}  # (path, size, mtime_ns) -> rows, for files already checked in this process


class TellDataError(ValueError):
    """The task or general data cannot make the requested TELL mix."""


def _fail(where: str, problem: str, fix: str) -> None:
    raise TellDataError(f"[axolotl_tell] {where}: {problem}. Fix: {fix}.")


def _looks_local(path: str) -> bool:
    return path.startswith(_LOCAL_PREFIXES) or path.lower().endswith(_LOCAL_SUFFIXES)


def local_files(ds_cfg) -> list[Path]:
    """The local JSON files an entry reads (a file, or the .json/.jsonl files under a folder)."""
    path = Path(str(ds_cfg.get("path"))).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    else:
        return []
    if ds_cfg.get("ds_type") not in (None, "json"):
        return []
    return [f for f in files if f.suffix.lower() in JSON_SUFFIXES]


def check_local_data(ds_cfg, where: str) -> None:
    """Fail on a missing local path or a malformed local JSON file, naming ``file:line``."""
    raw_path = str(ds_cfg.get("path"))
    path = Path(raw_path).expanduser()
    if not path.exists() and _looks_local(raw_path) and not ds_cfg.get("data_files"):
        _fail(where, f"file not found: {raw_path} (working directory {Path.cwd()})",
              "check the path (relative paths are read from the directory you run axolotl in), "
              "or give a Hugging Face dataset name")
    for file in local_files(ds_cfg):
        check_json_file(file, where)


def check_json_file(path: Path, where: str) -> int:
    """Check one local ``.json`` / ``.jsonl`` file; return its row count (-1: a document with `field`)."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo in _checked:
        return _checked[memo]
    if stat.st_size == 0:
        _fail(where, f"{path} is an empty file", "point the entry at a file with rows")
    document = False
    if path.suffix.lower() == ".json":  # a JSON array / object, or JSON Lines in a .json file
        first = _first_line(path)
        if first is not None:
            stripped = first.lstrip("\ufeff").strip()
            document = stripped.startswith("[") or not _parses(stripped)
    rows = _check_document(path, where) if document else _check_lines(path, where)
    if rows == 0:
        _fail(where, f"{path} has no rows", "point the entry at a file with rows")
    _checked[memo] = rows
    return rows


def _first_line(path: Path) -> str | None:
    with path.open("rb") as f:
        for raw in f:
            if raw.strip():
                return raw.decode("utf-8", errors="replace")
    return None


def _parses(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def _check_lines(path: Path, where: str) -> int:
    rows = 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                _fail(where, f"{path}:{lineno}: byte {err.start + 1} of the line ({raw[err.start:err.start + 1]!r}) "
                      "is not UTF-8", _FIX_UTF8)
            if lineno == 1:
                text = text.lstrip("\ufeff")
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except ValueError as err:
                _fail(where, f"{path}:{lineno}: not valid JSON ({err.msg}, column {err.colno})", _FIX_JSONL)
            if not isinstance(row, dict):
                _fail(where, f"{path}:{lineno}: a JSON {type(row).__name__}, not an object with the row's fields",
                      _FIX_JSONL)
            rows += 1
    return rows


def _check_document(path: Path, where: str) -> int:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        lineno = data.count(b"\n", 0, err.start) + 1
        _fail(where, f"{path}:{lineno}: byte {data[err.start:err.start + 1]!r} is not UTF-8", _FIX_UTF8)
    try:
        doc = json.loads(text.lstrip("\ufeff"))
    except ValueError as err:
        _fail(where, f"{path}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno})",
              "fix the JSON document there (a list of row objects), or write one JSON object per line (JSON Lines)")
    if isinstance(doc, list):
        for i, row in enumerate(doc):
            if not isinstance(row, dict):
                _fail(where, f"{path}: element {i} of the list is a JSON {type(row).__name__}, not a row object",
                      "make the file a list of objects with the row's fields")
        return len(doc)
    return -1  # an object: rows are under a `field`, Axolotl's loader checks it


def check_writable_folder(key: str, folder) -> None:
    """``folder`` (the value of config key ``key``) exists or can be created, and a file can be written in it.

    Checked before any tokenization: otherwise a read-only ``output_dir`` fails only after the whole mix was
    built. A test file is created and removed (not a permission-bit check: root ignores those).
    """
    path = Path(str(folder)).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        _fail(f"`{key}` ({folder})", f"cannot write there ({type(err).__name__}: {err.strerror or err})",
              f"point `{key}` at a folder you can write to, or make it writable (a file of that name, or "
              "a file in its path, blocks it too)")


def required_columns(ds_cfg) -> list[str]:
    """The raw columns Axolotl's strategy for ``ds_cfg.type`` reads from every row (known types only)."""
    ds_type = ds_cfg.get("type")
    if not isinstance(ds_type, str) or "." in ds_type:
        return []  # a custom or dotted strategy: Axolotl's own error, wrapped with the entry's name
    base = ds_type.split(":")[0]
    if base in ("alpaca", "alpaca_chat", "alpaca_w_system"):
        return ["instruction", "output"]
    if base == "chat_template":
        return [ds_cfg.get("field_messages") or "messages"]
    if base == "completion":
        return [ds_cfg.get("field") or "text"]
    return []


TOKEN_COLUMNS = ("input_ids", "attention_mask", "labels")


def check_raw_task_rows(raw, where: str) -> None:
    """Task rows must be raw text: token columns would bypass the anchor.

    Axolotl uses a dataset that has ``input_ids``, ``attention_mask`` and ``labels`` as it is (the ids are trained,
    the text fields ignored), so anchored "task rows" would be stray ids with no anchor; with only some of these
    columns the prompt strategy fails deep inside. General data (``datasets:``) may be pre-tokenized, as in
    plain Axolotl.
    """
    found = [c for c in TOKEN_COLUMNS if c in raw.column_names]
    if found:
        _fail(where, f"the rows carry token columns {found} (a tokenized export): Axolotl would train on those ids "
              "as they are, without the anchor", f"drop the columns {found} from the file and keep the raw text "
              "fields the `type` reads (or export the rows untokenized)")


def check_columns(raw, ds_cfg, where: str, row_numbers=None) -> None:
    """Every column the type reads exists and has a value in every row.

    ``row_numbers``: each row's number in its entry, where ``raw`` is not the entry itself (a chunk of a stream).
    """
    if len(raw) == 0:
        return
    needed = required_columns(ds_cfg)
    missing = [c for c in needed if c not in raw.column_names]
    if missing:
        _fail(where, f"the rows have no {missing} field for `type: {ds_cfg.get('type')}` "
              f"(fields found: {sorted(raw.column_names)})",
              "rename the fields in the file, map them (`field_messages`, `field`, `message_property_mappings`), "
              "or set the `type` that matches the data")
    if not needed:
        return
    import pyarrow.compute as pc

    table = raw.select_columns(needed).with_format("arrow")[:]
    for name in needed:
        column = table.column(name)
        if column.null_count:
            row = int(pc.index(pc.is_null(column), True).as_py())
            row = int(row_numbers[row]) if row_numbers is not None else row
            _fail(where, f"row {row}{row_location(ds_cfg, row)} has no value for `{name}` "
                  f"(needed by `type: {ds_cfg.get('type')}`)", "add the field to that row, or remove the row")


def row_location(ds_cfg, row: int) -> str:
    """`` (path:line)`` of raw row ``row`` of a local JSON Lines file, else ``""``."""
    files = local_files(ds_cfg)
    if len(files) != 1 or ds_cfg.get("shards") or row < 0:
        return ""
    path = files[0]
    if path.suffix.lower() == ".json":
        first = _first_line(path)
        if first is None or first.strip().startswith("["):
            return ""
    seen = -1
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if raw.strip():
                seen += 1
                if seen == row:
                    return f" ({path}:{lineno})"
    return ""
