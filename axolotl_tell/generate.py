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


def generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int = 64, batch_size: int = 16,
             no_repeat_ngram_size: int = 0) -> list[str]:
    """Greedy continuations of token-id prompts, batched with left padding; special tokens stripped.

    ``no_repeat_ngram_size`` > 0 forbids generating any n-gram of that size twice (still deterministic).
    """
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    outputs: list[str] = []
    # longest first keeps padding small; results are put back in input order
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    texts: dict[int, str] = {}
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]):] = 1
        with torch.no_grad():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                 max_new_tokens=max_new_tokens, pad_token_id=pad,
                                 eos_token_id=tokenizer.eos_token_id, no_repeat_ngram_size=no_repeat_ngram_size)
        for row, i in enumerate(idx):
            texts[i] = tokenizer.decode(out[row, width:], skip_special_tokens=True).strip()
    outputs = [texts[i] for i in range(len(prompts))]
    return outputs


def write_predictions(path, rows: list[dict]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
