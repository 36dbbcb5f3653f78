"""Greedy generation from training-exact prompts: the demo, the benchmark and the CLI use it."""

from __future__ import annotations

import json
from pathlib import Path


ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
FSDP_SHARDS = "pytorch_model_fsdp"  # accelerate's folder for a SHARDED_STATE_DICT model save (`<name>_<index>`)


class ModelFolderError(ValueError):
    """A model or adapter folder that cannot be loaded (missing, or half saved)."""


def load_model(base_model: str, adapter: str | None = None, dtype: str = "float32", trust_remote_code: bool = False):
    """Base model (+ the LoRA adapter saved in folder ``adapter``, checked complete first) and its tokenizer.

    ``trust_remote_code`` comes from the caller's config, never from a file in the adapter folder.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if adapter:
        check_adapter_folder(adapter)
    tokenizer_folder = adapter if _has_tokenizer(adapter) else base_model
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder, trust_remote_code=trust_remote_code)
    except Exception as err:
        fix = (_fix_half_saved(adapter) if tokenizer_folder == adapter else
               "check `base_model` (a model folder, or a hub name already in the local cache)")
        raise ModelFolderError(f"[axolotl_tell] the tokenizer in {tokenizer_folder} cannot be loaded "
                               f"({type(err).__name__}: {_first_line(err)}). Fix: {fix}.") from err
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=getattr(torch, dtype),
                                                 trust_remote_code=trust_remote_code)
    if adapter:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter)
        except Exception as err:
            raise ModelFolderError(f"[axolotl_tell] the adapter in {adapter} cannot be loaded onto {base_model} "
                                   f"({type(err).__name__}: {_first_line(err)}). Fix: {_fix_half_saved(adapter)}, "
                                   "with the same `base_model` as the training run.") from err
    model.eval()
    return model, tokenizer


def check_adapter_folder(folder) -> None:
    """``folder`` holds a trained adapter: its config and its weights (a killed save leaves one without the other)."""
    path = Path(folder)
    shards = sorted(p.name for p in path.glob(f"{FSDP_SHARDS}*"))
    if shards and not (path / ADAPTER_CONFIG).is_file():
        raise ModelFolderError(
            f"[axolotl_tell] {folder} is an FSDP checkpoint saved as SHARDED_STATE_DICT ({shards[0]}/ holds each "
            "rank's shard of the whole model, not a LoRA adapter), so nothing here can be loaded for generation. "
            f"Fix: use the run's final adapter in {path.parent} (the end of the run saves it in full); to get an "
            "adapter in every checkpoint, train with `fsdp_config: {state_dict_type: FULL_STATE_DICT}`. The shards "
            "still serve `resume_from_checkpoint`.")
    if not (path / ADAPTER_CONFIG).is_file():
        raise ModelFolderError(
            f"[axolotl_tell] no trained adapter in {folder} (no {ADAPTER_CONFIG}; `axolotl preprocess` trains "
            "nothing). Fix: train first (`axolotl train CONFIG`), or pass `--adapter DIR` "
            "with the trained adapter (and its tell.json), or `--base-model-only` to generate with the base model.")
    try:
        json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ModelFolderError(f"[axolotl_tell] {path / ADAPTER_CONFIG} is not valid JSON ({err}). "
                               f"Fix: {_fix_half_saved(folder)}.") from err
    if not any((path / name).is_file() for name in ADAPTER_WEIGHTS):
        raise ModelFolderError(
            f"[axolotl_tell] {folder} has {ADAPTER_CONFIG} but no adapter weights ({' or '.join(ADAPTER_WEIGHTS)}). "
            f"Fix: {_fix_half_saved(folder)}.")


def _fix_half_saved(folder) -> str:
    return (f"the save into {folder} did not finish: train again (or resume from a checkpoint), or pass "
            "`--adapter` a folder with a complete adapter, tokenizer and tell.json")


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [""])[0][:300]


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
        else:
            start += len(idx)
            continue
        _empty_cache()  # outside the except block: the traceback no longer holds the batch's tensors
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
