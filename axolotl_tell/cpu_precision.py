"""`bf16: true` on a machine without an accelerator: CPU autocast instead of transformers' refusal.

Axolotl loads the base weights in bf16 and asks transformers for bf16 mixed precision; transformers refuses
bf16 without a GPU unless ``use_cpu`` is set ("Your setup doesn't support bf16/gpu"), and Axolotl has no key
for ``use_cpu``. CPUs with AVX512-BF16 or AMX run a SmolLM2 LoRA step ~1.9x faster in bf16 than in fp32
(``bench/results/precision_cpu.json``), so the plugin passes ``use_cpu`` in that one case.
"""

from __future__ import annotations

import logging

LOG = logging.getLogger("axolotl.tell")


def has_accelerator() -> bool:
    import torch

    for name in ("cuda", "xpu", "npu", "mps"):
        backend = getattr(torch, name, None) if name != "mps" else getattr(torch.backends, "mps", None)
        try:
            if backend is not None and backend.is_available():
                return True
        except Exception:  # a backend stub that cannot answer is not an accelerator
            continue
    return False


def cpu_bf16_training_args(cfg) -> dict | None:
    """``{"use_cpu": True}`` when the config asks for bf16 (``bf16: true`` or ``bfloat16: true``) and no
    accelerator is present; else None (Axolotl's own arguments stand)."""
    if not (cfg.get("bf16") is True or cfg.get("bfloat16") is True) or has_accelerator():
        return None
    LOG.info("[axolotl_tell] bf16 on a CPU-only machine: training with CPU bf16 autocast (use_cpu=True)")
    return {"use_cpu": True}
