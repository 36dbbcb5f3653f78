"""Greedy generation from training-exact prompts: the demo, the benchmark and the CLI use it."""

from __future__ import annotations

import json
from pathlib import Path


def load_model(base_model: str, adapter: str | None = None, dtype: str = "float32"):
    """Base model (+ LoRA adapter, if a folder with ``adapter_config.json`` is given) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter if _has_tokenizer(adapter) else base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=getattr(torch, dtype))
    if adapter and (Path(adapter) / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    return model, tokenizer


def _has_tokenizer(folder: str | None) -> bool:
    return bool(folder) and (Path(folder) / "tokenizer_config.json").is_file()


def stop_token_ids(model, tokenizer) -> list[int]:
    """Every token that ends a turn: the model's generation config (Llama-3, Gemma-it list several) + the tokenizer's.

    Passing only ``tokenizer.eos_token_id`` would replace the model's own list, and answers would run on.
    """
    found: list[int] = []
    config = getattr(model, "generation_config", None)
    for value in (getattr(config, "eos_token_id", None), tokenizer.eos_token_id):
        for token in value if isinstance(value, (list, tuple)) else [value]:
            if token is not None and int(token) not in found:
                found.append(int(token))
    return found


def _is_out_of_memory(err: BaseException) -> bool:
    import torch

    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int = 64, batch_size: int = 16,
             no_repeat_ngram_size: int = 0) -> list[str]:
    """Greedy continuations of token-id prompts, batched with left padding; special tokens stripped.

    Stops at any of the model's end-of-turn tokens (:func:`stop_token_ids`). On out-of-memory the batch is halved
    and retried (down to one prompt), so generation fits wherever one prompt fits; results do not depend on it.
    ``no_repeat_ngram_size`` > 0 forbids generating any n-gram of that size twice (still deterministic).
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = stop_token_ids(model, tokenizer)
    # longest first keeps padding small; results are put back in input order
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    texts: dict[int, str] = {}
    start, size = 0, max(int(batch_size), 1)
    while start < len(order):
        idx = order[start:start + size]
        try:
            for i, text in zip(idx, _generate_batch(model, tokenizer, [prompts[i] for i in idx], pad, stops,
                                                    max_new_tokens, no_repeat_ngram_size)):
                texts[i] = text
        except Exception as err:  # noqa: BLE001 - only out-of-memory is retried
            if not _is_out_of_memory(err) or size == 1:
                raise
            size = max(1, size // 2)
            _empty_cache()
            continue
        start += len(idx)
    return [texts[i] for i in range(len(prompts))]


def _generate_batch(model, tokenizer, prompts, pad: int, stops: list[int], max_new_tokens: int,
                    no_repeat_ngram_size: int) -> list[str]:
    import torch

    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    with torch.no_grad():
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=stops,
                             no_repeat_ngram_size=no_repeat_ngram_size)
    return [tokenizer.decode(out[row, width:], skip_special_tokens=True).strip() for row in range(len(prompts))]


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def write_predictions(path, rows: list[dict]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
