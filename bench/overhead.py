"""Cost of per-source logging: one LoRA training step with and without it, side by side in one process.

usage: python bench/overhead.py [--model .cache/models/smollm2-135m-instruct] [--batch 8] [--seq 256]
                                [--repeats 7] [--out bench/results/overhead_cpu.json]

A step = forward + backward + optimizer step of a LoRA model (r16, all linear layers) on a fixed batch. "with"
adds what the plugin adds per micro-batch: the collator wrapper (per-token source ids) and
SourceLossMeter.update on the logits the model already returned, plus one pop() per step (the logging
all-reduce is a no-op on one process). Steps alternate with/without, so drift hits both alike; the median
of each is reported and their ratio is the overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / ".cache/models/smollm2-135m-instruct"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "bench/results/overhead_cpu.json"))
    a = ap.parse_args()

    import torch
    from axolotl.utils.collators import DataCollatorForSeq2Seq
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from axolotl_tell.source_metrics import SOURCE_IDS, SourceIdsCollator, SourceLossMeter

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).to(device)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    vocab = model.config.vocab_size
    features = []
    for i in range(a.batch):  # half the tokens supervised, rows alternate task/general
        ids = torch.randint(10, vocab, (a.seq,)).tolist()
        features.append({"input_ids": ids, "attention_mask": [1] * a.seq,
                         "labels": [-100] * (a.seq // 2) + ids[a.seq // 2:], "tell_source": i % 2})
    plain = DataCollatorForSeq2Seq(tok, padding=True, return_tensors="pt")
    wrapped = SourceIdsCollator(DataCollatorForSeq2Seq(tok, padding=True, return_tensors="pt"))
    meter = SourceLossMeter({0: "general", 1: "task"})

    def step(with_sources: bool) -> float:
        batch_features = [dict(f) for f in features]
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        if with_sources:
            batch = wrapped(batch_features)
            source_ids = batch.pop(SOURCE_IDS)
        else:
            for f in batch_features:
                f.pop("tell_source")
            batch = plain(batch_features)
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(**batch)
        out.loss.backward()
        if with_sources:
            meter.update(out.logits.detach(), batch["labels"], source_ids, "train")
            meter.pop("train")
        optim.step()
        optim.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    step(True), step(False)  # warm-up
    times = {"with": [], "without": []}
    for _ in range(a.repeats):
        times["with"].append(step(True))
        times["without"].append(step(False))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "what": "LoRA training step time with vs without per-source logging (same process, alternating)",
        "model": a.model, "batch": a.batch, "seq": a.seq, "repeats": a.repeats, "device": device,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "median_s": med, "all_s": times, "ratio_with_over_without": med["with"] / med["without"],
        "command": "python bench/overhead.py " + " ".join(sys.argv[1:]),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(f"{'':<10}{'median step (s)':>18}")
    for k in ("without", "with"):
        print(f"{k:<10}{med[k]:>18.3f}")
    print(f"overhead ratio (with / without): {result['ratio_with_over_without']:.4f}   -> {a.out}")


if __name__ == "__main__":
    main()
