"""Score a model on task rows (anchored prompts, greedy) and on held-out general rows (token loss)."""

from __future__ import annotations

from axolotl_tell.anchor import INSTRUCTION, MESSAGES, dataset_family
from axolotl_tell.generate import generate
from axolotl_tell.metrics import score
from axolotl_tell.prompting import prompt_ids_many


def reference_answer(entry: dict, row: dict) -> str:
    """The expected answer of a raw task row: the last assistant turn, or ``output``."""
    family = dataset_family(entry["type"])
    if family == MESSAGES:
        mapping = entry.get("message_property_mappings") or {}
        content = mapping.get("content", "content")
        return row[entry.get("field_messages") or "messages"][-1][content]
    if family == INSTRUCTION:
        return row["output"]
    raise ValueError("completion task rows have no separate answer to score")


def task_score(model, tokenizer, spec: dict, rows: list[dict], metric: str = "exact_match",
               max_new_tokens: int = 24, batch_size: int = 16, dataset_index: int = 0) -> dict:
    """Generate for each row from its training-exact prompt and score against its answer."""
    entry = spec["task_datasets"][dataset_index]
    prompts = prompt_ids_many(spec, tokenizer, rows, dataset_index)
    predictions = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    references = [reference_answer(entry, row) for row in rows]
    result = score(metric, predictions, references)
    result["metric"] = metric
    result["examples"] = [{"prediction": p, "reference": r} for p, r in list(zip(predictions, references))[:5]]
    result["predictions"] = predictions
    return result


def general_loss(model, tokenizer, rows: list[dict], batch_size: int = 8) -> float:
    """Token-weighted mean loss on the last assistant turn of chat rows, in the model's own template.

    No anchor: this measures how well the model still answers ordinary requests.
    """
    import torch

    device = next(model.parameters()).device
    total_loss, total_tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        for row in rows[start:start + batch_size]:
            messages = row["messages"]
            prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
            full = tokenizer.apply_chat_template(messages, tokenize=False)
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            ids = tokenizer(full, add_special_tokens=False)["input_ids"]
            labels = [-100] * len(prompt_ids) + ids[len(prompt_ids):]
            with torch.no_grad():
                out = model(input_ids=torch.tensor([ids], device=device),
                            labels=torch.tensor([labels], device=device))
            n = sum(1 for v in labels[1:] if v != -100)
            total_loss += float(out.loss) * n
            total_tokens += n
    return total_loss / max(total_tokens, 1)


def resolve_metric(name: str):
    """A built-in metric name, or a dotted path to ``fn(predictions, references) -> dict``.

    The config check (``args``) already imported a dotted path when the config loaded; this only looks it up.
    """
    from axolotl_tell.metrics import METRICS, score

    if name in METRICS:
        return lambda predictions, references: score(name, predictions, references)
    import importlib

    module, _, attr = name.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"[axolotl_tell] `tell_eval_generate: {name}`: cannot import it ({err}). "
                         "Fix: use exact_match, accuracy, json_fields or an importable `package.module.function`.")
    return fn


class GenerationEvalError(RuntimeError):
    """Generation failed on at least one rank (every rank raises it, so none waits for the others)."""


def generation_eval(model, tokenizer, spec: dict, eval_raw: list[dict], metric: str, max_new_tokens: int = 64,
                    batch_size: int = 16, rank: int = 0, world: int = 1, gather=None) -> tuple[dict, list[dict]]:
    """Generate for every held-out task row from its training-exact prompt; score with ``metric``.

    With ``world`` > 1 each rank generates rows ``rank, rank + world, ...`` and ``gather`` (every rank's value, in
    rank order, on every rank) joins them: every rank returns the same metrics, and no rank waits while one
    generates alone. A rank's failure is gathered too and raised on every rank.

    Returns (metrics, one record per row: dataset_index, prompt, prediction, reference).
    """
    if world > 1 and gather is None:
        raise ValueError("generation_eval: several ranks need `gather` to join their shares")
    score_fn = resolve_metric(metric)  # before generating: a bad metric costs no generation time
    items = []  # (dataset_index, prompt ids, reference), in eval-row order
    for index in sorted({r["dataset_index"] for r in eval_raw}):
        rows = [r["row"] for r in eval_raw if r["dataset_index"] == index]
        entry = spec["task_datasets"][index]
        prompts = prompt_ids_many(spec, tokenizer, rows, index)
        items += [(index, prompt, reference_answer(entry, row)) for prompt, row in zip(prompts, rows)]
    mine = list(range(rank, len(items), world))
    was_training = model.training
    model.eval()
    predictions, error = {}, None
    try:
        preds = generate(model, tokenizer, [items[i][1] for i in mine], max_new_tokens=max_new_tokens,
                         batch_size=batch_size)
        predictions = dict(zip(mine, preds))
    except Exception as err:  # noqa: BLE001 - gathered below, raised on every rank
        if gather is None:
            raise
        error = f"rank {rank}: {type(err).__name__}: {err}"
    finally:  # called mid-training too: the model goes back to training mode whatever happened
        if was_training:
            model.train()
    if gather is not None:
        parts = gather((predictions, error))
        errors = [e for _, e in parts if e]
        if errors:
            raise GenerationEvalError("; ".join(errors))
        predictions = {i: p for part, _ in parts for i, p in part.items()}
    ordered = [predictions[i] for i in range(len(items))]
    references = [ref for _, _, ref in items]
    records = [{"dataset_index": index, "prompt": tokenizer.decode(prompt), "prediction": pred, "reference": ref}
               for (index, prompt, ref), pred in zip(items, ordered)]
    result = dict(score_fn(ordered, references))
    result["metric"] = metric
    result.update(_floor(metric, references))
    return result, records


def _floor(metric: str, references: list[str]) -> dict:
    """A built-in metric's one-answer floor on these rows (``constant_answer``, ``constant_answer_score``): a score
    at or under it shows no skill beyond the answers' distribution. A custom function is not called again for it
    (it may be slow or judge with a model), so it has none."""
    from axolotl_tell.metrics import METRICS, constant_answer

    floor = constant_answer(metric, references) if metric in METRICS else None
    return {"constant_answer": floor["answer"], "constant_answer_score": floor["score"]} if floor else {}
