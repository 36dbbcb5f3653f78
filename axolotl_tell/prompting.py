"""Inference prompts built exactly as in training, from ``tell.json``.

A raw task row goes through the very strategy that made the training rows
(:class:`~axolotl_tell.anchored.AnchoredDatasetStrategy`, Axolotl's own prompt
format inside); the prompt is every token before the first supervised one. So
the prompt matches training token for token, for any supported dataset type.
"""

from __future__ import annotations

import json
from pathlib import Path

from axolotl_tell.anchor import COMPLETION, INSTRUCTION, MESSAGES, Anchor, dataset_family
from axolotl_tell.report import INFERENCE_FILE

PLACEHOLDER_ANSWER = "ok"  # stands in for the unknown answer; everything from it on is cut


def load_spec(path) -> dict:
    """``tell.json`` from a file or from the folder that holds it (``output_dir``)."""
    p = Path(path)
    if p.is_dir():
        p = p / INFERENCE_FILE
    if not p.is_file():
        raise FileNotFoundError(f"[axolotl_tell] no {INFERENCE_FILE} at {path}. Fix: train (or `axolotl preprocess`) "
                                "with the TELL plugin first, or point at the run's output_dir.")
    return json.loads(p.read_text())


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
