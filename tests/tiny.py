"""A tiny Llama and BPE tokenizer built locally in seconds (no downloads), plus toy data."""

from __future__ import annotations

import json
import random
from pathlib import Path

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]

WORDS = ("the cat dog bird sat ran flew over under on a an big small red blue green house tree river "
         "question answer statement is are was were did does can will why how what who when where "
         "write list give explain describe translate summarize sentence word number one two three four "
         "five yes no not happy sad good bad because and or but with without from to into").split()


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def build_tiny_model(out: Path) -> Path:
    """Save a 2-layer Llama (~100k params) and a 400-token BPE tokenizer with a ChatML template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [_sentence(rng, 12) for _ in range(2000)] + ["### Instruction:\n### Input:\n### Response:\n"
              "Below is an instruction that describes a task. Write a response that appropriately completes the request."] * 50
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<pad>", unk_token="<|endoftext|>")
    fast.chat_template = CHATML
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                         pad_token_id=fast.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write rows; an identical existing file is left untouched (its mtime is part of the cache key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if not (path.is_file() and path.read_text(encoding="utf-8") == text):
        path.write_text(text, encoding="utf-8")
    return path


def alpaca_rows(n: int, seed: int, words: int = 8) -> list[dict]:
    rng = random.Random(seed)
    return [{"instruction": _sentence(rng, words), "input": _sentence(rng, 4) if i % 2 else "",
             "output": _sentence(rng, words)} for i in range(n)]


def task_alpaca_rows(n: int, seed: int = 1) -> list[dict]:
    """A toy task: turn a statement into a question."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        s = _sentence(rng, 5)
        rows.append({"instruction": "Turn the statement into a question.", "input": s,
                     "output": "Is it true that " + s[:-1].lower() + "?"})
    return rows


def chat_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"messages": [{"role": "user", "content": _sentence(rng, 6)},
                          {"role": "assistant", "content": _sentence(rng, 6)}]} for _ in range(n)]


def completion_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"text": _sentence(rng, 10)} for _ in range(n)]


CPU_TRAINING = {
    "adapter": "lora", "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "lora_target_linear": True,
    "lora_mlp_kernel": False, "lora_qkv_kernel": False, "lora_o_kernel": False, "lora_embedding_kernel": False,
    "micro_batch_size": 4, "gradient_accumulation_steps": 1, "num_epochs": 1, "learning_rate": 1e-3,
    "optimizer": "adamw_torch", "lr_scheduler": "constant", "bf16": False, "fp16": False, "tf32": False,
    "logging_steps": 1, "save_strategy": "no", "dataset_num_proc": 1,
}


def make_workspace(root: Path, model: Path, *, task: str = "alpaca", general_rows: int = 120,
                   task_rows: int = 10, **overrides) -> tuple[Path, dict]:
    """Data files plus a TELL config (dict) for the tiny model; returns (config path, config)."""
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    general = write_jsonl(root / "general.jsonl", alpaca_rows(general_rows, 5))
    if task == "alpaca":
        task_file, task_entry = write_jsonl(root / "task.jsonl", task_alpaca_rows(task_rows)), {"type": "alpaca"}
    elif task == "chat_template":
        task_file = write_jsonl(root / "task.jsonl", chat_rows(task_rows, 3))
        task_entry = {"type": "chat_template"}
    else:
        task_file, task_entry = write_jsonl(root / "task.jsonl", completion_rows(task_rows, 3)), {"type": "completion"}
    cfg = {
        "base_model": str(model),
        "plugins": ["axolotl_tell.TellPlugin"],
        "datasets": [{"path": str(general), "ds_type": "json", "type": "alpaca"}],
        "tell_task_datasets": [{"path": str(task_file), "ds_type": "json", **task_entry}],
        "tell_anchor": "You turn statements into questions about animals.",
        "tell_general_ratio": 2,
        "tell_task_repeats": 3,
        "seed": 7,
        "sequence_len": 256,
        "sample_packing": False,
        "dataset_prepared_path": str(root / "prepared"),
        "output_dir": str(root / "out"),
        **CPU_TRAINING,
    }
    cfg.update(overrides)
    cfg = {k: v for k, v in cfg.items() if v is not None}
    path = root / "config.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path, cfg


def length_metric(predictions, references):
    """A user metric for `tell_eval_generate: tiny.length_metric` (tests)."""
    return {"mean_length": sum(len(p) for p in predictions) / len(predictions)}


def scripted_metric(predictions, references):
    """A user metric whose value at the k-th call is the k-th number of TELL_TEST_METRIC_SCRIPT (then 0): tests
    that must know which evaluation scores best, whatever the tiny model generates. Each process counts its own
    calls; every rank evaluates at the same steps, so every rank reads the same value."""
    import os

    global _SCRIPT_CALLS
    script = [float(x) for x in os.environ.get("TELL_TEST_METRIC_SCRIPT", "").split(",") if x]
    value = script[_SCRIPT_CALLS] if _SCRIPT_CALLS < len(script) else 0.0
    _SCRIPT_CALLS += 1
    return {"score": value, "n": len(predictions)}


_SCRIPT_CALLS = 0


def _probe_plugin_class():
    """A plugin listed after the TELL plugin in a test config (`plugins: [..., tiny.ContractProbe]`): records, at
    each `post_train` call, what the plugin's end-of-run work relies on (tests/test_axolotl_contracts.py)."""
    from axolotl.integrations.base import BasePlugin

    class ContractProbe(BasePlugin):
        calls = 0

        def post_train(self, cfg, model):
            import json
            import os
            from pathlib import Path

            import torch.distributed as dist

            ContractProbe.calls += 1
            out = Path(cfg.output_dir)
            record = {"call": ContractProbe.calls, "adapter_saved": (out / "adapter_model.safetensors").is_file(),
                      "tokenizer_saved": (out / "tokenizer_config.json").is_file(),
                      "process_group": bool(dist.is_available() and dist.is_initialized())}
            with open(out.parent / f"probe.rank{os.environ.get('RANK', '0')}.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    return ContractProbe


def __getattr__(name):  # `tiny.ContractProbe` imports Axolotl only when a config names it
    if name == "ContractProbe":
        return _probe_plugin_class()
    raise AttributeError(name)
