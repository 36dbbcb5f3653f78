"""Cost of per-source logging: one LoRA training step with and without it, side by side in one process.

usage: python bench/overhead.py [--model .cache/models/smollm2-135m-instruct] [--batch 8] [--seq 256]
                                [--repeats 7] [--out bench/results/overhead_cpu.json]

A step = forward + backward + optimizer step of a LoRA model (r16, all linear layers) on a fixed batch. "with"
adds what the plugin adds per micro-batch: the collator wrapper (per-token source ids) and the source-aware
causal-LM loss (`install_source_loss`: the per-token CE the training loss needs, read once more for the
per-source sums), plus one pop() per step (the logging all-reduce is a no-op on one process). "without" runs
the same model with nothing pending, i.e. transformers' default loss. Steps alternate with/without, so drift hits both alike; the median
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

    from axolotl_tell.source_metrics import SOURCE_IDS, SourceIdsCollator, SourceLossMeter, install_source_loss

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
    source_loss = install_source_loss(model, meter)
    assert source_loss is not None, "the model does not use transformers' default causal-LM loss"

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
        if with_sources:
            source_loss.pending = (source_ids, "train")
        out = model(**batch)
        out.loss.backward()
        if with_sources:
            meter.pop("train")
        optim.step()
        optim.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def added_work(repeats: int = 50) -> float:
        """Seconds per step of what "with" adds on top of the same CE: collator wrapper + per-source sums."""
        n = a.batch * a.seq
        token_loss = torch.rand(n, device=device)
        labels = torch.randint(0, vocab, (n,), device=device)
        labels[: n // 2] = -100
        sources = torch.randint(0, 2, (n,), device=device)
        start = time.perf_counter()
        for _ in range(repeats):
            wrapped([dict(f) for f in features])
            meter.add_token_losses(token_loss, labels, sources, "eval")
            meter.pop("eval")
        wrapped_s = (time.perf_counter() - start) / repeats
        start = time.perf_counter()
        for _ in range(repeats):
            plain([{k: v for k, v in f.items() if k != "tell_source"} for f in features])
        return wrapped_s - (time.perf_counter() - start) / repeats

    step(True), step(False)  # warm-up
    times = {"with": [], "without": []}
    for _ in range(a.repeats):
        times["with"].append(step(True))
        times["without"].append(step(False))
    med = {k: statistics.median(v) for k, v in times.items()}
    pairwise = [w / wo for w, wo in zip(times["with"], times["without"])]  # neighbours share the drift
    extra_s = added_work()
    result = {
        "what": "LoRA training step time with vs without per-source logging (same process, alternating)",
        "model": a.model, "batch": a.batch, "seq": a.seq, "repeats": a.repeats, "device": device,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "median_s": med, "all_s": times, "ratio_with_over_without": med["with"] / med["without"],
        "median_pairwise_ratio": statistics.median(pairwise), "pairwise_ratios": pairwise,
        "added_work_s_per_step": extra_s, "added_work_over_step": extra_s / med["without"],
        "command": "python bench/overhead.py " + " ".join(sys.argv[1:]),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(f"{'':<10}{'median step (s)':>18}")
    for k in ("without", "with"):
        print(f"{k:<10}{med[k]:>18.3f}")
    print(f"overhead ratio (with / without): medians {result['ratio_with_over_without']:.4f}, "
          f"median of pairwise ratios {result['median_pairwise_ratio']:.4f} "
          f"(range {min(pairwise):.3f}-{max(pairwise):.3f})   -> {a.out}")
    print(f"added work alone (collator wrapper + per-source sums, timed in isolation): {extra_s * 1e3:.2f} ms "
          f"per step = {extra_s / med['without']:.5f} of a step")


if __name__ == "__main__":
    main()
