"""Training precision on a machine without an accelerator: bf16 only where the CPU computes it natively.

* Native CPU bf16 means the ``avx512_bf16`` or ``amx_bf16`` flag in ``/proc/cpuinfo`` (Linux x86-64). Those flags
  come from CPUID, the same source oneDNN dispatches on, so they hold in containers and in VMs (a hypervisor that
  hides the instructions hides the flag too). A timed probe was not used: on a shared 2-core machine it is noisy
  and costs seconds at every config load. ``torch.backends.cpu.get_cpu_capability()`` is only named in messages:
  it says ``AVX512`` both with and without the bf16 instructions.
* Without them bf16 is emulated: one 2048x576x1536 matmul took 3,045 ms in bf16 vs 35 ms in fp32 on an AVX2-only
  AMD EPYC (issue 22), a LoRA step ~87x slower. With them a SmolLM2 LoRA step is ~1.9x faster in bf16
  (``bench/results/precision_cpu.json``).
* Anything else (ARM, whose ``bf16`` flag we have not measured; no ``/proc/cpuinfo``) counts as not native: a
  wrong "no" costs at most the 1.9x, a wrong "yes" the 50-90x. ``AXOLOTL_TELL_CPU_BF16=1`` / ``=0`` overrides the
  detection (users who measured their CPU; tests).

Config load (``TellArgs``' validator, before Axolotl's ``resolve_dtype``): ``bf16: auto`` becomes ``true`` or
``false`` here (Axolotl itself would turn it off and switch ``fp16`` on, as it does without a GPU), and ``bf16: true``
/ ``bfloat16: true`` on a CPU without native bf16 is an error naming the fix. Training arguments (the
``get_training_args`` hook): bf16 with no accelerator needs transformers' ``use_cpu`` (it refuses bf16 without a GPU
otherwise: "Your setup doesn't support bf16/gpu", and Axolotl has no key for ``use_cpu``).
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass

LOG = logging.getLogger("axolotl.tell")
ENV = "AXOLOTL_TELL_CPU_BF16"
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
X86 = ("x86_64", "amd64", "i386", "i686")


class CpuPrecisionError(ValueError):
    """``bf16: true`` on a CPU-only machine whose CPU has no native bf16 (or a bad ``AXOLOTL_TELL_CPU_BF16``)."""


@dataclass(frozen=True)
class CpuBf16:
    native: bool
    cpu: str  # model name and torch's capability, for messages and benchmark records
    why: str  # what the answer rests on


def _cpuinfo(path: str) -> tuple[str, set[str]]:
    """(model name, flags) of the first processor in a /proc/cpuinfo file; ("", set()) if unreadable.

    On x86 the name carries the CPU family and model numbers too: a VM often reports only "AMD EPYC", and the
    numbers are what tell one generation from another (family 25 is Zen 3/4, family 26 Zen 5), so a benchmark
    record says which CPU its timings came from.
    """
    fields: dict[str, str] = {}
    flags: set[str] = set()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip() and fields:
                    break  # the end of the first processor's block
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("flags", "features"):  # x86 / ARM spelling
                    flags = flags or set(value.split())
                elif key in ("model name", "cpu family", "model"):
                    fields.setdefault(key, value.strip())
    except OSError:
        pass
    name = fields.get("model name", "")
    if name and "cpu family" in fields and "model" in fields:
        name = f"{name} (family {fields['cpu family']} model {fields['model']})"
    return name, flags


def _torch_capability() -> str:
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # an old torch, or none: the capability is only a label
        return "unknown"


def detect_cpu_bf16(cpuinfo: str = "/proc/cpuinfo", machine: str | None = None,
                    env: dict | None = None) -> CpuBf16:
    """Whether this CPU computes bf16 natively, and why (arguments: for tests)."""
    env = os.environ if env is None else env
    machine = (machine or platform.machine()).lower()
    name, flags = _cpuinfo(cpuinfo)
    cpu = f"{name or machine or 'unknown CPU'} (torch: {_torch_capability()})"
    forced = env.get(ENV, "").strip().lower()
    if forced:
        if forced not in ("0", "1", "true", "false"):
            raise CpuPrecisionError(f"[axolotl_tell] {ENV}={env[ENV]!r}: must be 1 (the CPU has native bf16) or 0 "
                                    f"(it has not). Fix: set {ENV}=1 or {ENV}=0, or unset it to detect the CPU.")
        return CpuBf16(forced in ("1", "true"), cpu, f"set by {ENV}={env[ENV]}, not detected")
    if machine not in X86:
        return CpuBf16(False, cpu, f"{machine}: native CPU bf16 is only detected on x86-64 "
                                   f"(set {ENV}=1 if you measured it faster)")
    found = [f for f in BF16_FLAGS if f in flags]
    if found:
        return CpuBf16(True, cpu, f"{' and '.join(found)} in {cpuinfo}")
    if not flags:
        return CpuBf16(False, cpu, f"no CPU flags readable in {cpuinfo}")
    return CpuBf16(False, cpu, f"no {' / '.join(BF16_FLAGS)} flag in {cpuinfo}: bf16 would be emulated, "
                               f"~50-90x slower than fp32")


def has_accelerator() -> bool:
    """Whatever transformers itself accepts bf16 on (its own checks), or any CUDA device (an old GPU without
    bf16 must get transformers' own error, not a silent move to the CPU)."""
    import torch
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    return bool(torch.cuda.is_available() or is_torch_bf16_gpu_available() or is_torch_xla_available()
                or (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()))


def _bf16_key(cfg) -> str | None:
    """The key that asks for bf16 compute, if one does."""
    if cfg.get("bf16") is True or cfg.get("bf16") == "full":
        return "bf16"
    if cfg.get("bfloat16") is True:
        return "bfloat16"
    return None


def fit_precision_to_cpu(data: dict) -> None:
    """At config load, on a machine without an accelerator: resolve ``bf16: auto`` for this CPU (one log line),
    refuse ``bf16: true`` / ``bfloat16: true`` where the CPU has no native bf16. Changes ``data`` in place."""
    auto = data.get("bf16") == "auto" and not data.get("fp16")  # fp16 + auto: Axolotl turns bf16 off itself
    key = _bf16_key(data)
    if not (auto or key) or has_accelerator():
        return
    found = detect_cpu_bf16()
    if auto:
        data["bf16"] = found.native
        LOG.info("[axolotl_tell] bf16: auto on a CPU-only machine -> %s: %s, %s", "bf16 (CPU autocast)"
                 if found.native else "fp32", found.cpu, found.why)
    elif not found.native:
        raise CpuPrecisionError(
            f"[axolotl_tell] `{key}: true`: this machine has no GPU and its CPU, {found.cpu}, has no native bf16 "
            f"({found.why}); training would run ~50-90x slower than in fp32. Fix: `{key}: false`, or `bf16: auto` "
            f"(bf16 where the GPU or CPU has it, else fp32); {ENV}=1 forces bf16 anyway.")


def cpu_bf16_training_args(cfg) -> dict | None:
    """``{"use_cpu": True}`` when the config asks for bf16 (``bf16: true``, ``bf16: full`` or ``bfloat16: true``)
    and no accelerator is present; else None (Axolotl's own arguments stand)."""
    if not _bf16_key(cfg) or has_accelerator():
        return None
    LOG.info("[axolotl_tell] bf16 on a CPU-only machine: training with CPU bf16 autocast (use_cpu=True)")
    return {"use_cpu": True}


def trainer_precision(trainer) -> str:
    """What the trainer computes in: its mixed-precision flag, else the dtype of the weights (``bfloat16: true``
    loads bf16 weights without autocast)."""
    args = trainer.args
    if getattr(args, "bf16", False):
        return "bf16"
    if getattr(args, "fp16", False):
        return "fp16"
    dtype = next((p.dtype for p in trainer.model.parameters()), None)
    return {"torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(str(dtype), "fp32")
