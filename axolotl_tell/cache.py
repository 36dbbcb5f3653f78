"""Where a prepared TELL mix lives, and when it may be reused.

Axolotl's own prepared-dataset hash ignores plugin keys and ``seed``; this
key covers everything that changes the mix: every ``tell_*`` key, the anchor
text (also from a file), the seed, the dataset entries and the size and mtime
of local data files, the tokenizer, and the config keys that change
tokenization. Saves are atomic: a killed run never leaves a loadable
half-written mix; the marker records each file's size, so a folder damaged
later (:func:`damage`) is found before it is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from axolotl_tell.version import __version__

DEFAULT_PREPARED_PATH = "last_run_prepared"
READY_MARKER = "tell_ready.json"

# Config keys (besides tell_* and datasets) that change the tokens or the mix.
TOKENIZATION_KEYS = (
    "base_model", "tokenizer_config", "tokenizer_type", "sequence_len", "sample_packing",
    "train_on_inputs", "chat_template", "chat_template_jinja", "default_system_message",
    "excess_length_strategy", "min_sample_len", "special_tokens", "tokens", "added_tokens_overrides",
    "model_config_type", "eot_tokens", "roles_to_train", "train_on_eos", "seed",
)


def fingerprint_path(path: str) -> list:
    """Size and mtime of a local file, or of every file under a local folder."""
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return [[str(p), st.st_size, st.st_mtime_ns]]
    if p.is_dir():
        out = []
        for f in sorted(p.rglob("*")):
            if f.is_file():
                st = f.stat()
                out.append([str(f), st.st_size, st.st_mtime_ns])
        return out
    return []  # hub or remote: identified by its entry (path, name, revision)


def tokenizer_identity(tokenizer) -> dict:
    return {
        "name": getattr(tokenizer, "name_or_path", None),
        "class": type(tokenizer).__name__,
        "vocab": len(tokenizer),
        "chat_template": getattr(tokenizer, "chat_template", None),
        "special": {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())},
    }


def cache_key(cfg, tokenizer, anchor_text: str, general_entries: list, task_entries: list) -> str:
    """A hex digest that changes whenever the prepared mix could change."""
    from axolotl_tell.compat import axolotl_version

    payload = {
        "plugin": __version__,
        "axolotl": axolotl_version(),
        "tell": {k: cfg.get(k) for k in sorted(cfg) if str(k).startswith("tell_")},
        "anchor": anchor_text,
        "config": {k: cfg.get(k) for k in TOKENIZATION_KEYS},
        "general": [dict(e) for e in general_entries],
        "task": [dict(e) for e in task_entries],
        "files": [fingerprint_path(e["path"]) for e in [*general_entries, *task_entries]],
        "tokenizer": tokenizer_identity(tokenizer),
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def prepared_dir(cfg, key: str) -> Path:
    root = Path(cfg.get("dataset_prepared_path") or DEFAULT_PREPARED_PATH)
    return root / f"tell-{key[:20]}"


def is_ready(path: Path) -> bool:
    return (path / READY_MARKER).is_file()


def _file_sizes(folder: Path) -> dict[str, int]:
    return {f.relative_to(folder).as_posix(): f.stat().st_size for f in sorted(folder.rglob("*")) if f.is_file()}


def damage(path: Path) -> str | None:
    """What is wrong with a ready folder whose files were changed after its save (a file cut short by a full
    disk, a killed copy or a partial sync; a file lost), or None.

    The marker records every file's size at save time; checking is one ``stat`` per file: cheap, and sure for a
    cut or missing file. Contents are not hashed (that would read the whole cache on every run). A marker without
    sizes (an older save) passes: its loader's own errors and row counts are the check then.
    """
    try:
        sizes = json.loads((path / READY_MARKER).read_text()).get("files")
    except (OSError, ValueError, AttributeError) as err:
        return f"{READY_MARKER} is unreadable ({type(err).__name__})"
    for name, size in (sizes or {}).items():
        try:
            actual = (path / name).stat().st_size
        except OSError:
            return f"{name} is missing"
        if actual != size:
            return f"{name} is {actual} bytes, {size} when saved"
    return None


def _temp_prefix(path: Path) -> str:
    return f".tmp-{path.name}-"


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete the temporary folders a killed save of ``path`` left behind (``.tmp-<name>-*`` siblings only).

    Only safe under the caller's lock on ``path``: no other process is then writing one of them.
    """
    stale = [p for p in path.parent.glob(_temp_prefix(path) + "*") if p.is_dir()]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale


def save_atomically(path: Path, write) -> None:
    """Call ``write(tmp_dir)``, then move ``tmp_dir`` to ``path`` in one rename.

    The marker file is written last inside the temporary folder, so a folder
    without it (a crash before the rename leaves only ``.tmp-*``) is never loaded.
    The caller holds the lock on ``path``, so earlier ``.tmp-*`` folders of the
    same target are leftovers of killed saves: they are removed first.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), dir=path.parent))
    try:
        write(tmp)
        (tmp / READY_MARKER).write_text(json.dumps({"plugin": __version__, "files": _file_sizes(tmp)}))
        if path.exists():  # a stale, unmarked folder from an older crash
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
