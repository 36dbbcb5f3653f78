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
    """Whatever transformers itself accepts bf16 on (its own checks), or any CUDA device (an old GPU without
    bf16 must get transformers' own error, not a silent move to the CPU)."""
    import torch
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    return bool(torch.cuda.is_available() or is_torch_bf16_gpu_available() or is_torch_xla_available()
                or (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()))


def cpu_bf16_training_args(cfg) -> dict | None:
    """``{"use_cpu": True}`` when the config asks for bf16 (``bf16: true``, ``bf16: full`` or ``bfloat16: true``)
    and no accelerator is present; else None (Axolotl's own arguments stand)."""
    wants_bf16 = cfg.get("bf16") is True or cfg.get("bf16") == "full" or cfg.get("bfloat16") is True
    if not wants_bf16 or has_accelerator():
        return None
    LOG.info("[axolotl_tell] bf16 on a CPU-only machine: training with CPU bf16 autocast (use_cpu=True)")
    return {"use_cpu": True}
