"""CPU training precision: one SmolLM2 LoRA step in fp32 vs bf16, side by side in one process (issue 13, step 1).

usage: python bench/precision.py [--model .cache/models/smollm2-135m-instruct] [--batch 8] [--seq 256]
                                 [--repeats 5] [--out bench/results/precision_cpu.json]

A step = forward + backward + AdamW step of a LoRA model (r16, all linear layers) on one fixed batch (half the
tokens supervised). Three arms, run in rotation so drift hits all alike, medians reported:
* ``fp32``: weights and compute in float32 (the benchmark's CPU profile and the demo today);
* ``bf16_autocast``: float32 weights, ``torch.autocast("cpu", dtype=torch.bfloat16)`` (mixed precision);
* ``bf16_weights``: the base weights loaded in bfloat16 (what Axolotl's ``bf16: true`` loads), LoRA in bf16 too.
Also the first step's loss of each arm on the same batch and initial weights (how far bf16 moves it).
Whether scores hold in bf16 is not answered here: that needs trained runs scored side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ARMS = ("fp32", "bf16_autocast", "bf16_weights")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / ".cache/models/smollm2-135m-instruct"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench/results/precision_cpu.json"))
    a = ap.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    def lora(dtype):
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype)
        model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                task_type="CAUSAL_LM"))
        model.train()
        return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    models = {"fp32": lora(torch.float32), "bf16_weights": lora(torch.bfloat16)}
    models["bf16_autocast"] = models["fp32"]  # same weights; only the compute differs
    torch.manual_seed(1)
    vocab = models["fp32"][0].config.vocab_size
    ids = torch.randint(10, vocab, (a.batch, a.seq))
    labels = ids.clone()
    labels[:, : a.seq // 2] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    first_loss = {}
    with torch.no_grad():
        for arm in ARMS:
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if arm == "bf16_autocast" else nullcontext()
            with ctx:
                first_loss[arm] = float(models[arm][0](**batch).loss)

    def step(arm: str) -> float:
        model, optim = models[arm]
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if arm == "bf16_autocast" else nullcontext()
        start = time.perf_counter()
        with ctx:
            loss = model(**batch).loss
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for arm in ARMS:  # warm-up
        step(arm)
    times = {arm: [] for arm in ARMS}
    for _ in range(a.repeats):
        for arm in ARMS:
            times[arm].append(step(arm))
    med = {arm: statistics.median(v) for arm, v in times.items()}
    result = {
        "what": "LoRA training step time, fp32 vs bf16 on CPU (same process, rotating arms)",
        "model": a.model, "batch": a.batch, "seq": a.seq, "repeats": a.repeats,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "median_s": med, "all_s": times,
        "speedup_vs_fp32": {arm: round(med["fp32"] / med[arm], 3) for arm in ARMS},
        "first_step_loss": first_loss,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(f"{'arm':<15} {'median step (s)':>16} {'speed-up':>9} {'first loss':>11}")
    for arm in ARMS:
        print(f"{arm:<15} {med[arm]:>16.3f} {result['speedup_vs_fp32'][arm]:>9.2f} {first_loss[arm]:>11.4f}")
    print(f"-> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
