"""The rows a cell trains and is scored on, written as chat-message JSONL for Axolotl's ``chat_template`` type.

Every choice here is seeded and documented, so every method of a cell sees the same rows:

* task train file -> a fixed permutation (seed 0); its first ``val_rows`` rows are the validation split
  (never trained on), the rest is the train pool; a run with ``n`` rows and seed ``s`` trains on the first ``n``
  rows of a permutation of that pool seeded by ``s`` (so 10 rows are a subset of 30 rows for the same seed);
* task test file -> ``test_rows`` rows, a fixed seeded sample (seed 0), the same for every run;
* general sources -> each a fixed permutation (seed 0): the first ``heldout`` rows are held out (general loss
  and generation check), the rest (up to ``max_rows``, rows of at most ``max_chars``) joins one pool file.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from pathlib import Path

from tellbench import ROOT

SHARED_PREFIX = "../shared/data/"


def resolve(path: str, shared_data: str | None = None) -> Path:
    """A data path from a spec: relative to the repository root; ``../shared/data/`` can be redirected.

    A missing ``X.jsonl`` is read from ``X.jsonl.gz`` when that exists (``bench/stage_data.py`` writes those).
    """
    if shared_data and path.startswith(SHARED_PREFIX):
        p = Path(shared_data) / path[len(SHARED_PREFIX):]
    else:
        p = Path(path) if Path(path).is_absolute() else ROOT / path
    gz = p.with_name(p.name + ".gz")
    return gz if not p.is_file() and gz.is_file() else p


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write rows; an identical file is left untouched (its mtime is part of the plugin's cache key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if not (path.is_file() and path.read_text(encoding="utf-8") == text):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return path


def chat(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def task_answer(spec: dict, row: dict) -> str:
    """The trained assistant turn of a raw task row (wrapped as JSON when the spec says so)."""
    answer = row[spec["assistant_field"]]
    if spec.get("answer_json_field"):
        return json.dumps({spec["answer_json_field"]: answer})
    return str(answer)


def task_reference(spec: dict, row: dict) -> str:
    """What the metric compares with: the raw label (json_fields compares the parsed field with it)."""
    return str(row[spec["assistant_field"]])


def task_message_row(spec: dict, row: dict) -> dict:
    return chat(str(row[spec["user_field"]]), task_answer(spec, row))


def _perm(n: int, seed) -> list[int]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


class TaskData:
    """The fixed splits of one task (see the module docstring)."""

    def __init__(self, spec: dict, shared_data: str | None = None, test_rows: int | None = None,
                 val_rows: int | None = None):
        self.spec = spec
        train = read_jsonl(resolve(spec["train"], shared_data))
        test = read_jsonl(resolve(spec["test"], shared_data))
        n_val = spec["val_rows"] if val_rows is None else val_rows
        n_test = spec["test_rows"] if test_rows is None else test_rows
        order = _perm(len(train), f"{spec['name']}:split")
        self.val = [train[i] for i in order[:n_val]]
        self.pool = [train[i] for i in order[n_val:]]
        test_order = _perm(len(test), f"{spec['name']}:test")
        self.test = [test[i] for i in test_order[:n_test]]

    def train_rows(self, n: int, seed: int) -> list[dict]:
        if n > len(self.pool):
            raise ValueError(f"{self.spec['name']}: {n} task rows asked, the train pool has {len(self.pool)}")
        return [self.pool[i] for i in _perm(len(self.pool), f"{self.spec['name']}:train:{seed}")[:n]]


def _general_user(row: dict) -> str:
    if "messages" in row:
        return row["messages"][0]["content"]
    return row["instruction"] + ("\n\n" + row["input"] if row.get("input") else "")


def _general_chat(row: dict) -> dict | None:
    if "messages" in row:
        return {"messages": row["messages"]}
    if not str(row.get("output", "")).strip():
        return None
    return chat(_general_user(row), row["output"])


def general_digest(general_cfg: dict) -> str:
    return hashlib.sha256(json.dumps(general_cfg, sort_keys=True).encode()).hexdigest()[:12]


def write_general(general_cfg: dict, out_dir: Path, shared_data: str | None = None) -> dict:
    """The general pool file, the held-out rows and the generation-check prompts; returns their paths/sizes."""
    pool, heldout, gen_prompts = [], [], []
    max_chars = int(general_cfg.get("max_chars") or 10**9)
    gen = general_cfg.get("gen_check") or {}
    for i, source in enumerate(general_cfg["sources"]):
        raw = read_jsonl(resolve(source["path"], shared_data))
        rows = [r for r in (_general_chat(x) for x in raw) if r is not None]
        rows = [r for r in rows if sum(len(m["content"]) for m in r["messages"]) <= max_chars]
        order = _perm(len(rows), f"general:{source['path']}")
        n_held = int(source.get("heldout", 0))
        held = [rows[j] for j in order[:n_held]]
        rest = [rows[j] for j in order[n_held:]]
        if source.get("max_rows"):
            rest = rest[: int(source["max_rows"])]
        heldout += held
        pool += rest
        if i == gen.get("source", 0):
            gen_prompts = [r["messages"][0]["content"] for r in held[: int(gen.get("prompts", 20))]]
    # one pool file, shuffled once (seed 0) so sources interleave; the plan draws its own seeded order anyway
    pool = [pool[j] for j in _perm(len(pool), "general:pool")]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "pool": str(write_jsonl(out_dir / "general_pool.jsonl", pool)),
        "heldout": str(write_jsonl(out_dir / "general_heldout.jsonl", heldout)),
        "gen_prompts": str(write_jsonl(out_dir / "general_prompts.jsonl", [{"prompt": p} for p in gen_prompts])),
        "pool_rows": len(pool), "heldout_rows": len(heldout), "gen_prompt_rows": len(gen_prompts),
        "gen_max_new_tokens": int(gen.get("max_new_tokens", 64)),
    }
    (out_dir / "general.json").write_text(json.dumps({"config": general_cfg, **paths}, indent=2))
    return paths
