"""Self-generated anchors (``tell_anchor: auto``): the model describes the task from k examples.

Before the mix is planned, a model (``tell_anchor_model``, default the
``base_model``) reads ``tell_anchor_examples`` task examples (default 8) and
writes a concise task description, which becomes the anchor of every task row.

Steps, each deterministic:

1. **Examples.** All rows of all ``tell_task_datasets`` entries are pooled in
   order; ``random.Random(seed).sample`` picks ``min(k, rows)`` of them (the run's
   ``seed``, default 42), shown in data order. Each is rendered in its
   dataset's own fields: alpaca-style ``Input:`` (instruction, then ``input``)
   and ``Output:``; chat ``User:`` / ``Assistant:`` / ``System:`` turns (the
   entry's ``field_messages``, ``message_property_mappings`` and ``roles`` are
   honoured); completion ``Text:``. Every field is cut to
   :data:`MAX_FIELD_CHARS` characters (``…`` marks a cut).
2. **Prompt.** The examples go into the template (``tell_anchor_template``,
   default :data:`DEFAULT_TEMPLATE`): ``{examples}`` (required) is replaced by
   the rendered examples, ``{k}`` by their number; any other brace is literal.
   If the generating model's tokenizer has a chat template, the prompt is one
   user turn with the generation prompt added; otherwise it is plain text.
3. **Generation.** Greedy (no sampling), at most ``tell_anchor_max_tokens + 1``
   new tokens (default 96), stopping at EOS, with no 4-gram generated twice
   (:data:`NO_REPEAT_NGRAM_SIZE`: small models otherwise loop on a phrase until
   the budget runs out; a one- or two-sentence description never needs a
   repeated 4-gram); on CUDA if available (bfloat16), else CPU (float32). The
   model is freed afterwards.
4. **Clean-up** (:func:`clean_anchor`): keep the first paragraph (text before
   the first blank line); drop a leading ``Task description:`` /
   ``Description:`` / ``Task:`` / ``Anchor:`` label; collapse whitespace;
   strip surrounding quotes or backticks.
5. **Validation** (:func:`validate_anchor`): the anchor must be non-empty (a
   letter or digit),
   at most ``tell_anchor_max_tokens`` tokens (tokenizer of the generating
   model; a paragraph still running at the limit is rejected, never cut
   mid-sentence), and must not contain any task answer verbatim: an answer of
   :data:`MIN_ANSWER_WORDS` or more words (after lower-casing and turning every
   run of non-alphanumeric characters into one space) must not occur in the
   anchor normalised the same way, on word boundaries. Answers are the
   ``output`` of alpaca rows, every assistant turn of chat rows and the text of
   completion rows, over *all* task rows. A failure is an error naming the fix.
6. **Cache.** The anchor is stored in
   ``dataset_prepared_path/tell-anchor-<key>.json``; the key covers the model
   identity (name, and size + mtime of a local model folder's files), the
   full prompt (so the template, k, seed and the chosen examples' content),
   the token budget and the generation settings. The next run (or
   ``axolotl-tell anchor CONFIG``) reuses it; a changed model or changed
   examples give a new key and a new anchor.

Default template::

    Here are {k} examples of one task. Each shows what the assistant is given and the answer it must write.

    {examples}

    Describe this task in one or two sentences, as an instruction to the assistant that starts with "You".
    Say what it is given, what it must do, and the exact form of the answer. Do not copy the examples or
    their answers. Write only the instruction.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from axolotl_tell import ranks
from axolotl_tell.anchor import INSTRUCTION, MESSAGES, Anchor, AnchorError, dataset_family

LOG = logging.getLogger("axolotl.tell")

AUTO = "auto"
DEFAULT_EXAMPLES = 8
DEFAULT_MAX_TOKENS = 96
DEFAULT_SEED = 42
MAX_FIELD_CHARS = 600
MIN_ANSWER_WORDS = 3
CACHE_PREFIX = "tell-anchor-"
NO_REPEAT_NGRAM_SIZE = 4
GENERATION_VERSION = 2  # bump when prompt building, generation or clean-up changes (2: no repeated 4-grams)

DEFAULT_TEMPLATE = (
    "Here are {k} examples of one task. Each shows what the assistant is given and the answer it must write.\n"
    "\n"
    "{examples}\n"
    "\n"
    'Describe this task in one or two sentences, as an instruction to the assistant that starts with "You".\n'
    "Say what it is given, what it must do, and the exact form of the answer. Do not copy the examples or\n"
    "their answers. Write only the instruction."
)

_LABEL = re.compile(r"^\s*(?:task description|description|task|anchor|instruction)\s*:\s*", re.IGNORECASE)
_QUOTES = [('"', '"'), ("'", "'"), ("\u201c", "\u201d"), ("\u2018", "\u2019"), ("`", "`"), ("\u00ab", "\u00bb")]


class AutoAnchorError(AnchorError):
    """The self-generated anchor is missing, too long or leaks an answer."""


def is_auto(cfg) -> bool:
    value = cfg.get("tell_anchor")
    return isinstance(value, str) and value.strip() == AUTO


# ---------------------------------------------------------------- examples


@dataclass(frozen=True)
class Example:
    dataset: int  # index into tell_task_datasets
    row: int  # row index in that dataset
    text: str  # rendered for the prompt
    answers: tuple[str, ...]  # what the anchor must not copy


def _cut(value) -> str:
    text = "" if value is None else str(value).strip()
    return text if len(text) <= MAX_FIELD_CHARS else text[:MAX_FIELD_CHARS].rstrip() + "…"


def _canonical_roles(ds_cfg: dict) -> dict:
    """raw role name -> system | user | assistant (Axolotl's defaults, then the entry's `roles`)."""
    names = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
             "model": "assistant"}
    for canonical, raws in (ds_cfg.get("roles") or {}).items():
        for raw in raws or []:
            names[raw] = canonical
    return names


def render_row(row: dict, ds_type: str, ds_cfg: dict) -> tuple[str, tuple[str, ...]]:
    """One raw task row as example text, and its answers."""
    family = dataset_family(ds_type)
    if family == INSTRUCTION:
        prompt = "\n".join(p for p in (_cut(row.get("instruction")), _cut(row.get("input"))) if p)
        answer = row.get("output", row.get("response"))
        return f"Input: {prompt}\nOutput: {_cut(answer)}", (str(answer or ""),)
    if family == MESSAGES:
        field_name = ds_cfg.get("field_messages") or "messages"
        mapping = ds_cfg.get("message_property_mappings") or {}
        role_key, content_key = mapping.get("role", "role"), mapping.get("content", "content")
        roles = _canonical_roles(ds_cfg)
        lines, answers = [], []
        for msg in row.get(field_name) or []:
            if not isinstance(msg, dict):
                continue
            raw_role = str(msg.get(role_key))
            role = roles.get(raw_role, raw_role)
            content = msg.get(content_key)
            lines.append(f"{role.capitalize()}: {_cut(content)}")
            if role == "assistant":
                answers.append(str(content or ""))
        return "\n".join(lines), tuple(answers)
    text = row.get(ds_cfg.get("field") or "text")
    return f"Text: {_cut(text)}", (str(text or ""),)


def collect_examples(task_data, k: int, seed: int) -> tuple[list[Example], list[str]]:
    """The k seeded examples (in data order) and every task answer.

    ``task_data``: ``[(ds_cfg, rows), ...]`` per task entry, rows any sequence of dicts.
    """
    pool = []
    for d, (ds_cfg, rows) in enumerate(task_data):
        for r in range(len(rows)):
            pool.append((d, r))
    if not pool:
        raise AutoAnchorError("[axolotl_tell] `tell_anchor: auto`: the task data has no rows to describe. "
                              "Fix: point `tell_task_datasets` at task examples.")
    chosen = sorted(random.Random(seed).sample(range(len(pool)), min(k, len(pool))))
    chosen_set = set(chosen)
    examples, answers = [], []
    for i, (d, r) in enumerate(pool):
        ds_cfg, rows = task_data[d]
        text, row_answers = render_row(dict(rows[r]), str(ds_cfg["type"]), dict(ds_cfg))
        answers.extend(row_answers)
        if i in chosen_set:
            examples.append(Example(d, r, text, row_answers))
    return examples, answers


def render_prompt(template: str, examples: list[Example]) -> str:
    body = "\n\n".join(f"Example {i}\n{e.text}" for i, e in enumerate(examples, 1))
    return template.replace("{examples}", body).replace("{k}", str(len(examples)))


# ---------------------------------------------------------------- clean-up and validation


def clean_anchor(text: str) -> str:
    """First paragraph, no leading label, single spaces, no surrounding quotes."""
    text = (text or "").strip()
    text = re.split(r"\n\s*\n", text, maxsplit=1)[0]
    text = _LABEL.sub("", text, count=1)
    text = " ".join(text.split())
    changed = True
    while changed and len(text) >= 2:
        changed = False
        for left, right in _QUOTES:
            if text.startswith(left) and text.endswith(right):
                text, changed = text[len(left):len(text) - len(right)].strip(), True
    return text


def _normalized(text: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", str(text).lower()).split())


def copied_answer(anchor: str, answers) -> str | None:
    """The first answer (of >= MIN_ANSWER_WORDS words) found verbatim in the anchor, normalised; else None."""
    haystack = f" {_normalized(anchor)} "
    for answer in answers:
        needle = _normalized(answer)
        if len(needle.split()) >= MIN_ANSWER_WORDS and f" {needle} " in haystack:
            return str(answer)
    return None


def _reject(problem: str, text: str) -> None:
    shown = text if len(text) <= 300 else text[:300] + "…"
    raise AutoAnchorError(
        f"[axolotl_tell] `tell_anchor: auto`: the generated anchor {problem}: {shown!r}. Fix: write the anchor "
        "by hand (`tell_anchor: \"You ...\"`), or change `tell_anchor_template` (ask for one short sentence), "
        "`tell_anchor_model` (an instruction-tuned model) or `tell_anchor_max_tokens`; "
        "`axolotl-tell anchor CONFIG` shows the result without training."
    )


def validate_anchor(text: str, *, answers, max_tokens: int, count_tokens) -> str:
    """Return ``text`` if it is a usable anchor, else raise :class:`AutoAnchorError`.

    ``count_tokens(text) -> int`` measures it with the generating model's tokenizer.
    """
    if not text or not re.search(r"[^\W_]", text):
        _reject("is empty after clean-up (no letter or digit in its first paragraph)", text or "")
    n = count_tokens(text)
    if n > max_tokens:
        _reject(f"has {n} tokens, more than `tell_anchor_max_tokens` ({max_tokens})", text)
    copied = copied_answer(text, answers)
    if copied is not None:
        _reject(f"copies the answer of a task example ({copied[:80]!r})", text)
    return text


# ---------------------------------------------------------------- settings, cache key


@dataclass
class AutoSettings:
    model: str
    tokenizer: str
    revision: str | None
    k: int
    seed: int
    template: str
    max_tokens: int
    cache_root: Path
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_cfg(cls, cfg) -> AutoSettings:
        from axolotl_tell.cache import DEFAULT_PREPARED_PATH

        own_model = cfg.get("tell_anchor_model")
        model = str(own_model or cfg.get("base_model") or "")
        if not model:
            raise AutoAnchorError("[axolotl_tell] `tell_anchor: auto` needs a model. "
                                  "Fix: set `base_model` or `tell_anchor_model`.")
        tokenizer = model if own_model else str(cfg.get("tokenizer_config") or model)
        return cls(
            model=model,
            tokenizer=tokenizer,
            revision=None if own_model else cfg.get("revision_of_model"),
            k=int(cfg.get("tell_anchor_examples") or DEFAULT_EXAMPLES),
            seed=int(cfg.get("seed")) if cfg.get("seed") is not None else DEFAULT_SEED,
            template=cfg.get("tell_anchor_template") or DEFAULT_TEMPLATE,
            max_tokens=int(cfg.get("tell_anchor_max_tokens") or DEFAULT_MAX_TOKENS),
            cache_root=Path(cfg.get("dataset_prepared_path") or DEFAULT_PREPARED_PATH),
        )


def _local_files(path: str) -> list:
    from axolotl_tell.cache import fingerprint_path

    return fingerprint_path(path) if Path(path).is_dir() else []


def model_identity(settings: AutoSettings) -> dict:
    """Name, revision and, for a local folder, every file's size and mtime."""
    return {"model": settings.model, "tokenizer": settings.tokenizer, "revision": settings.revision,
            "files": _local_files(settings.model),
            "tokenizer_files": _local_files(settings.tokenizer) if settings.tokenizer != settings.model else []}


def anchor_key(settings: AutoSettings, prompt: str, examples: list[Example]) -> str:
    payload = {
        "version": GENERATION_VERSION,
        "model": model_identity(settings),
        "template": settings.template,
        "k": settings.k,
        "seed": settings.seed,
        "examples": [[e.dataset, e.row, e.text] for e in examples],
        "prompt": prompt,
        "max_tokens": settings.max_tokens,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def cache_path(settings: AutoSettings, key: str) -> Path:
    return settings.cache_root / f"{CACHE_PREFIX}{key[:20]}.json"


def _read_cache(path: Path, key: str) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("key") != key or not isinstance(data.get("anchor"), str) or not data["anchor"].strip():
        return None
    return data


def _write_cache(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


# ---------------------------------------------------------------- generation


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{ranks.local_rank()}"
    return "cpu"


def prompt_token_ids(tokenizer, prompt: str) -> list[int]:
    """The prompt as one user turn of the tokenizer's chat template, or plain text without one."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt)["input_ids"]


def generate_text(settings: AutoSettings, prompt: str) -> dict:
    """Greedy generation from ``prompt``; returns the raw text, the token counter's tokenizer and device info."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from axolotl_tell.generate import generate

    device = _device()
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(settings.tokenizer)
    kwargs = {"revision": settings.revision} if settings.revision else {}
    model = AutoModelForCausalLM.from_pretrained(settings.model, dtype=dtype, **kwargs).to(device).eval()
    try:
        torch.manual_seed(settings.seed)
        ids = prompt_token_ids(tokenizer, prompt)
        raw = generate(model, tokenizer, [ids], max_new_tokens=settings.max_tokens + 1, batch_size=1,
                       no_repeat_ngram_size=NO_REPEAT_NGRAM_SIZE)[0]
    finally:
        del model
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return {"raw": raw, "tokenizer": tokenizer, "device": device, "dtype": str(dtype).replace("torch.", ""),
            "prompt_tokens": len(ids)}


def _count_tokens(tokenizer):
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


# ---------------------------------------------------------------- entry points


@dataclass
class AutoResult:
    anchor: Anchor
    prompt: str
    cache_file: Path
    reused: bool
    raw: str | None = None


def generate_anchor(cfg, task_data, *, placement: str = "auto", separator: str = "\n\n",
                    use_cache: bool = True) -> AutoResult:
    """The self-generated anchor for ``cfg``: from its cache file if current, else generated, validated, cached.

    ``task_data``: ``[(normalized ds_cfg, raw rows), ...]`` for every ``tell_task_datasets`` entry.
    """
    from filelock import FileLock

    settings = AutoSettings.from_cfg(cfg)
    examples, answers = collect_examples(task_data, settings.k, settings.seed)
    prompt = render_prompt(settings.template, examples)
    key = anchor_key(settings, prompt, examples)
    path = cache_path(settings, key)
    meta = {"model": settings.model, "examples": len(examples), "example_rows": [[e.dataset, e.row] for e in examples],
            "seed": settings.seed, "max_tokens": settings.max_tokens,
            "template": "default" if settings.template == DEFAULT_TEMPLATE else "custom",
            "key": key, "cache_file": str(path)}

    def anchor_of(text: str, data: dict) -> Anchor:
        return Anchor(text=text, placement=placement, separator=separator, source=AUTO,
                      meta={**meta, "device": data.get("device"), "dtype": data.get("dtype")})

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):  # one rank generates, the others read the file
        if use_cache:
            cached = _read_cache(path, key)
            if cached is not None:
                LOG.info("[axolotl_tell] reusing the self-generated anchor from %s: %r", path, cached["anchor"])
                return AutoResult(anchor_of(cached["anchor"], cached), prompt, path, True, cached.get("raw"))
        LOG.info("[axolotl_tell] generating the anchor with %s from %d task examples", settings.model, len(examples))
        out = generate_text(settings, prompt)
        text = validate_anchor(clean_anchor(out["raw"]), answers=answers, max_tokens=settings.max_tokens,
                               count_tokens=_count_tokens(out["tokenizer"]))
        data = {"key": key, "anchor": text, "raw": out["raw"], "device": out["device"], "dtype": out["dtype"],
                **{k: v for k, v in meta.items() if k not in ("key", "cache_file")},
                "template_text": settings.template, "prompt": prompt, "model_identity": model_identity(settings)}
        _write_cache(path, data)
    LOG.warning("[axolotl_tell] self-generated anchor (review it; saved to %s):\n\n    %s\n\n"
                "To keep or edit it, paste it into `tell_anchor:`.", path, text)
    return AutoResult(anchor_of(text, data), prompt, path, False, out["raw"])
