"""Scores of one trained (or untouched) model: the task metric, the held-out general loss, a general generation check.

Prompts are the training prompts, token for token: every token of a test row, tokenized by the strategy the method
trained with, before its first supervised token.

* anchored methods (``tell``, ``sft_anchor``, ``zero_shot``): ``axolotl_tell.prompting.prompt_ids_many`` on a
  ``tell.json`` spec (the TELL run's own, or one with the same anchor and template for the others);
* the others (``sft*``, ``tell_no_anchor``): Axolotl's plain ``chat_template`` strategy, cut the same way.

Greedy decoding (``axolotl_tell.generate.generate``), then ``axolotl_tell.metrics.score`` against the raw label.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter

from axolotl_tell.generate import generate
from axolotl_tell.metrics import constant_answer, score  # noqa: F401 - constant_answer: the benchmark's too


def load(base_model: str, adapter: str | None = None, device: str = "cpu"):
    from axolotl_tell.generate import load_model

    model, tokenizer = load_model(str(base_model), adapter=str(adapter) if adapter else None)
    return model.to(device), tokenizer


def set_lora_scale(model, factor: float) -> int:
    """Scale every LoRA delta of a loaded PEFT model to ``factor`` times its trained size: 0 is the base model, 1 the
    adapter as trained, between them a WiSE-FT-style interpolation of the weights (no training). Always relative to
    the trained scaling, so calls do not compound. Returns the number of LoRA layers scaled."""
    from peft.tuners.lora import LoraLayer

    layers = 0
    for module in model.modules():
        if isinstance(module, LoraLayer):
            trained = module.__dict__.setdefault("_bench_trained_scaling", dict(module.scaling))
            for name, value in trained.items():
                module.scaling[name] = value * float(factor)
            layers += 1
    if not layers:
        raise RuntimeError("set_lora_scale: the model has no LoRA layer (load it with its adapter)")
    return layers


def anchored_spec(anchor: str, chat_template: str = "tokenizer_default") -> dict:
    """A ``tell.json``-like spec: the anchor and a chat_template task entry, as the plugin writes it."""
    return {"anchor": {"text": anchor, "placement_requested": "auto", "separator": "\n\n", "source": "config"},
            "task_datasets": [{"type": "chat_template", "ds_type": "json"}], "chat_template": chat_template}


def _cut_at_first_supervised(input_ids, labels) -> list[list[int]]:
    prompts = []
    for ids, lab in zip(input_ids, labels):
        first = next((i for i, v in enumerate(lab) if v != -100), len(lab))
        prompts.append(list(ids[:first]))
    return prompts


def anchored_prompts(spec: dict, tokenizer, message_rows: list[dict]) -> list[list[int]]:
    from axolotl_tell.prompting import prompt_ids_many

    return prompt_ids_many(spec, tokenizer, message_rows)


def plain_prompts(tokenizer, message_rows: list[dict], chat_template: str = "tokenizer_default") -> list[list[int]]:
    """Prompts as plain Axolotl's ``chat_template`` strategy tokenizes the rows (no anchor)."""
    from axolotl.utils.dict import DictDefault
    from datasets import Dataset

    from axolotl_tell import compat
    from axolotl_tell.prepare import NO_LIMIT

    ds_cfg = compat.normalize_dataset_entry({"path": "bench", "type": "chat_template"})
    cfg = DictDefault({"sequence_len": NO_LIMIT, "train_on_inputs": False, "chat_template": chat_template,
                       "dataset_num_proc": 1})
    tokenized = compat.tokenize_with_axolotl(ds_cfg, cfg, tokenizer, Dataset.from_list(message_rows))
    if len(tokenized) != len(message_rows):
        raise RuntimeError(f"plain chat_template kept {len(tokenized)} of {len(message_rows)} rows")
    return _cut_at_first_supervised(tokenized["input_ids"], tokenized["labels"])


def task_eval(model, tokenizer, prompts: list[list[int]], references: list[str], metric: str,
              max_new_tokens: int, batch_size: int = 16, keep_predictions: int = 5) -> dict:
    predictions = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    result = score(metric, predictions, references)
    result["metric"] = metric
    # each test row's hit, "1"/"0" in test order: two runs on the same rows can then be compared row by row
    result["row_hits"] = "".join("1" if score(metric, [p], [r])["score"] >= 1.0 else "0"
                                 for p, r in zip(predictions, references))
    result["examples"] = [{"prediction": p, "reference": r}
                          for p, r in list(zip(predictions, references))[:keep_predictions]]
    result["answer_mix"] = answer_mix(predictions)
    result["constant_answer"] = constant_answer(metric, references)
    result["off_constant"] = off_constant(metric, references, result["row_hits"], result["constant_answer"])
    return result


def off_constant(metric: str, references: list[str], row_hits: str, constant: dict | None) -> dict | None:
    """The rows the constant answer gets wrong, and how many of them a run got right: ``{"rows", "hits"}``.

    Where a cell sits at its one-answer floor, two runs with the same score can have learnt different things: one
    answers the constant ("unknown") almost everywhere, the other the task itself; this split shows which. None
    without a constant answer or when the hits do not cover the rows."""
    if not constant or len(row_hits) != len(references):
        return None
    off = [i for i, ref in enumerate(references) if score(metric, [constant["answer"]], [ref])["score"] < 1.0]
    return {"rows": len(off), "hits": sum(row_hits[i] == "1" for i in off)}


def answer_mix(predictions: list[str], top: int = 5, width: int = 40) -> list[list]:
    """The most frequent predictions (stripped, cut to ``width`` characters) with their counts: a run that answers
    one label everywhere shows here, where its score alone looks like skill."""
    counts = Counter(p.strip()[:width] for p in predictions)
    return [[text, n] for text, n in counts.most_common(top)]


def general_eval(model, tokenizer, heldout_rows: list[dict], gen_prompts: list[str], leak_regex: str | None,
                 max_new_tokens: int = 64, batch_size: int = 16) -> dict:
    """Held-out general loss (no anchor, the model's own template) and a generation check on general prompts.

    The check: greedy answers to ``gen_prompts`` (open-ended general requests, never trained on);
    ``nonempty`` = fraction of non-empty answers, ``task_format`` = fraction that match the task's
    ``general_leak_regex`` (the task's answer format leaking into general use), ``ok`` = non-empty and not in
    the task format, ``distinct`` = distinct answers / prompts (collapse onto one answer shows here).
    """
    from axolotl_tell.evaluate import general_loss

    result = {"general_loss": general_loss(model, tokenizer, heldout_rows) if heldout_rows else None,
              "general_rows": len(heldout_rows)}
    if not gen_prompts:
        return result
    prompts = []
    for text in gen_prompts:
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                 tokenize=False)
        prompts.append(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    answers = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    leak = re.compile(leak_regex) if leak_regex else None
    nonempty = [bool(a.strip()) for a in answers]
    task_like = [bool(leak and leak.search(a.strip())) for a in answers]
    n = len(answers)
    result["gen_check"] = {
        "n": n,
        "nonempty": sum(nonempty) / n,
        "task_format": sum(task_like) / n,
        "ok": sum(e and not t for e, t in zip(nonempty, task_like)) / n,
        "distinct": len(set(answers)) / n,
        "mean_words": statistics.mean(len(a.split()) for a in answers),
        "examples": [{"prompt": p[:120], "answer": a[:200]} for p, a in list(zip(gen_prompts, answers))[:3]],
    }
    return result
