"""Inference prompts built exactly as in training, from ``tell.json``.

A raw task row goes through the very strategy that made the training rows
(:class:`~axolotl_tell.anchored.AnchoredDatasetStrategy`, Axolotl's own prompt
format inside); the prompt is every token before the first supervised one. So
the prompt matches training token for token, for any supported dataset type.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from axolotl_tell.anchor import COMPLETION, INSTRUCTION, MESSAGES, Anchor, AnchorError, dataset_family
from axolotl_tell.args import PLACEMENTS
from axolotl_tell.report import INFERENCE_FILE, SPEC_ANCHOR_KEYS, SPEC_KEPT_KEYS, SPEC_KEYS

PLACEHOLDER_ANSWER = "ok"  # stands in for the unknown answer; everything from it on is cut

# tell.json is data (an adapter folder may come from anyone): it may name only what the plugin itself writes.
# A dotted `type` or `input_transform` would be imported, a `chat_template_jinja` path would be read.
_NAME = re.compile(r"[A-Za-z0-9_]+")
_TYPE = re.compile(r"(axolotl_tell\.anchored\.)?[A-Za-z0-9_]+(:[A-Za-z0-9_]+)?")
_USED_PLACEMENTS = ("system", "prefix", "segment")
_ANCHOR_SOURCES = ("config", "file", "auto")
_FIX_SPEC = ("use the tell.json the training run wrote (an adapter folder is data: tell.json may not name code "
             "or files), or train again")


class TellSpecError(ValueError):
    """A ``tell.json`` that the plugin would not have written."""


def load_spec(path) -> dict:
    """``tell.json`` from a file or from the folder that holds it (``output_dir``), validated."""
    p = Path(path)
    if p.is_dir():
        p = p / INFERENCE_FILE
    if not p.is_file():
        raise FileNotFoundError(f"[axolotl_tell] no {INFERENCE_FILE} at {path} (only `axolotl train` writes it, next "
                                "to the adapter it saved). Fix: train with the TELL plugin first, or point at a "
                                "trained run's output_dir.")
    try:
        spec = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise TellSpecError(f"[axolotl_tell] {p}: not valid JSON ({err}). Fix: {_FIX_SPEC}.") from err
    validate_spec(spec, str(p))
    return spec


def validate_spec(spec, where: str) -> None:
    """Refuse anything in a ``tell.json`` that :func:`axolotl_tell.report.inference_spec` would not write."""
    def fail(field: str, problem: str) -> None:
        raise TellSpecError(f"[axolotl_tell] {where}: `{field}`: {problem}. Fix: {_FIX_SPEC}.")

    if not isinstance(spec, dict):
        fail("(top level)", f"must be a JSON object, got a {type(spec).__name__}")
    _no_unknown_keys(spec, SPEC_KEYS, "", fail)
    _check_spec_anchor(spec.get("anchor"), fail)
    entries = spec.get("task_datasets")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        fail("task_datasets", "must be a non-empty list of dataset entries")
    entry_keys = {*_dataset_entry_keys(), "placement"}
    for i, entry in enumerate(entries):
        _check_spec_entry(entry, f"task_datasets[{i}]", entry_keys, fail)
    _check_template(spec, "", fail)
    for key in ("base_model", "tell_version", "plan_sha256"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            fail(key, f"must be a string, got {spec[key]!r}")
    if spec.get("sequence_len") is not None and not isinstance(spec["sequence_len"], int):
        fail("sequence_len", f"must be an integer, got {spec['sequence_len']!r}")
    kept = spec.get("kept")
    if kept is not None:
        if not isinstance(kept, dict):
            fail("kept", "must be an object")
        _no_unknown_keys(kept, SPEC_KEPT_KEYS, "kept.", fail)
        if not isinstance(kept.get("step"), int):
            fail("kept.step", f"must be an integer, got {kept.get('step')!r}")


def _no_unknown_keys(data: dict, known, prefix: str, fail) -> None:
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        fail(prefix + unknown[0], f"unknown key (the plugin writes only {sorted(known)})")


def _check_spec_anchor(anchor, fail) -> None:
    if not isinstance(anchor, dict):
        fail("anchor", "missing, or not an object")
    _no_unknown_keys(anchor, SPEC_ANCHOR_KEYS, "anchor.", fail)
    if not isinstance(anchor.get("text"), str) or not anchor["text"].strip():
        fail("anchor.text", "must be the anchor text (a non-empty string)")
    placement = anchor.get("placement", "system")
    if not all(p in _USED_PLACEMENTS for p in (placement if isinstance(placement, list) else [placement])):
        fail("anchor.placement", f"{placement!r} is not one of {list(_USED_PLACEMENTS)}")
    if anchor.get("placement_requested", "auto") not in PLACEMENTS:
        fail("anchor.placement_requested", f"{anchor['placement_requested']!r} is not one of {list(PLACEMENTS)}")
    if not isinstance(anchor.get("separator", ""), str):
        fail("anchor.separator", "must be a string")
    if anchor.get("source", "config") not in _ANCHOR_SOURCES:
        fail("anchor.source", f"{anchor['source']!r} is not one of {list(_ANCHOR_SOURCES)}")
    if not isinstance(anchor.get("auto", {}), dict):
        fail("anchor.auto", "must be an object")


def _check_spec_entry(entry: dict, name: str, known, fail) -> None:
    _no_unknown_keys(entry, known, name + ".", fail)
    ds_type = entry.get("type")
    if not isinstance(ds_type, str) or not _TYPE.fullmatch(ds_type):
        fail(f"{name}.type", f"{ds_type!r} is not a built-in dataset type name (a module path would be imported)")
    try:
        dataset_family(ds_type)
    except AnchorError:
        fail(f"{name}.type", f"{ds_type!r} is not a task dataset type (alpaca-style, chat_template or completion)")
    if entry.get("placement", "system") not in _USED_PLACEMENTS:
        fail(f"{name}.placement", f"{entry['placement']!r} is not one of {list(_USED_PLACEMENTS)}")
    transform = entry.get("input_transform")
    if transform is not None and (not isinstance(transform, str) or not _NAME.fullmatch(transform)):
        fail(f"{name}.input_transform", f"{transform!r} is not a plain name (a module path would be imported)")
    _check_template(entry, name + ".", fail)


def _check_template(data: dict, prefix: str, fail) -> None:
    """``chat_template`` is a template name; ``chat_template_jinja`` the template's text, never a file to read."""
    choice, jinja = data.get("chat_template"), data.get("chat_template_jinja")
    if choice is not None and (not isinstance(choice, str) or not _NAME.fullmatch(choice)):
        fail(prefix + "chat_template", f"{choice!r} is not a chat template name")
    if jinja is None:
        return
    if not isinstance(jinja, str) or not ("{{" in jinja or "{%" in jinja) or os.path.exists(jinja):
        fail(prefix + "chat_template_jinja", "must be the Jinja template text itself (the plugin writes the text; "
             "a file path is not read from tell.json)")


def _dataset_entry_keys() -> set[str]:
    from axolotl_tell import compat

    return compat.dataset_entry_keys()


def spec_anchor(spec: dict) -> Anchor:
    a = spec["anchor"]
    return Anchor(text=a["text"], placement=a.get("placement_requested", "auto"),
                  separator=a.get("separator", "\n\n"), source=a.get("source", "config"))


def row_from_text(entry: dict, text: str, input_text: str = "") -> dict:
    """A raw task row holding a user's prompt (and a placeholder answer) in the entry's format."""
    family = dataset_family(entry["type"])
    if family == INSTRUCTION:
        return {"instruction": text, "input": input_text, "output": PLACEHOLDER_ANSWER}
    if family == MESSAGES:
        mapping = entry.get("message_property_mappings") or {}
        role, content = mapping.get("role", "role"), mapping.get("content", "content")
        roles = entry.get("roles") or {}
        user = (roles.get("user") or ["user"])[0]
        assistant = (roles.get("assistant") or ["assistant"])[0]
        return {entry.get("field_messages") or "messages": [
            {role: user, content: text}, {role: assistant, content: PLACEHOLDER_ANSWER}]}
    return {entry.get("field") or "text": text}


def _strategy_cfg(spec: dict):
    from axolotl.utils.dict import DictDefault

    from axolotl_tell.prepare import NO_LIMIT

    return DictDefault({
        "sequence_len": NO_LIMIT,
        "train_on_inputs": False,  # prompt tokens masked, so the cut below finds them
        "chat_template": spec.get("chat_template"),
        "chat_template_jinja": spec.get("chat_template_jinja"),
        "dataset_num_proc": 1,
    })


def prompt_ids_many(spec: dict, tokenizer, rows: list[dict], dataset_index: int = 0) -> list[list[int]]:
    """Token ids of the training-time prompt of each raw task row (answers, if any, are cut)."""
    from datasets import Dataset

    from axolotl_tell import compat
    from axolotl_tell.anchored import AnchoredDatasetStrategy

    entry = dict(spec["task_datasets"][dataset_index])
    ds_cfg = compat.normalize_dataset_entry({k: v for k, v in entry.items() if k != "placement"})
    strategy = AnchoredDatasetStrategy(entry["type"], tokenizer, _strategy_cfg(spec), ds_cfg, anchor=spec_anchor(spec))
    tokenized = strategy.wrap_dataset(Dataset.from_list(rows))
    if dataset_family(entry["type"]) == COMPLETION:
        # completion trains on all of its text: the prompt is the anchor segment plus the text given
        eos = tokenizer.eos_token_id
        return [ids[:-1] if ids and ids[-1] == eos else list(ids) for ids in tokenized["input_ids"]]
    prompts = []
    for ids, labels in zip(tokenized["input_ids"], tokenized["labels"]):
        first = next((i for i, label in enumerate(labels) if label != -100), len(labels))
        prompts.append(list(ids[:first]))
    return prompts


def prompt_ids(spec: dict, tokenizer, row: dict, dataset_index: int = 0) -> list[int]:
    """Token ids of the training-time prompt for one raw task row."""
    return prompt_ids_many(spec, tokenizer, [row], dataset_index)[0]


def prompt_text(spec: dict, tokenizer, row: dict, dataset_index: int = 0) -> str:
    return tokenizer.decode(prompt_ids(spec, tokenizer, row, dataset_index))
