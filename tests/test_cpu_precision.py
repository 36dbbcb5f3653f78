"""`bf16: true` on a CPU-only machine: the plugin asks transformers for CPU autocast, and only then."""

from __future__ import annotations

from axolotl_tell import cpu_precision


def test_use_cpu_only_for_bf16_without_an_accelerator(monkeypatch):
    monkeypatch.setattr(cpu_precision, "has_accelerator", lambda: False)
    assert cpu_precision.cpu_bf16_training_args({"bf16": True}) == {"use_cpu": True}
    assert cpu_precision.cpu_bf16_training_args({"bfloat16": True}) == {"use_cpu": True}
    assert cpu_precision.cpu_bf16_training_args({"bf16": "full"}) == {"use_cpu": True}  # bf16_full_eval too
    assert cpu_precision.cpu_bf16_training_args({"bf16": False}) is None
    assert cpu_precision.cpu_bf16_training_args({"bf16": "auto"}) is None  # Axolotl resolves auto to off on CPU
    assert cpu_precision.cpu_bf16_training_args({}) is None
    monkeypatch.setattr(cpu_precision, "has_accelerator", lambda: True)
    assert cpu_precision.cpu_bf16_training_args({"bf16": True}) is None


def test_every_device_transformers_takes_bf16_on_counts_as_an_accelerator(monkeypatch):
    """An HPU / MLU / TPU machine (transformers' own bf16 checks) must never be moved to the CPU."""
    import transformers.utils as tu

    monkeypatch.setattr(tu, "is_torch_bf16_gpu_available", lambda: True)
    assert cpu_precision.has_accelerator()
    assert cpu_precision.cpu_bf16_training_args({"bf16": True}) is None
    monkeypatch.setattr(tu, "is_torch_bf16_gpu_available", lambda: False)
    monkeypatch.setattr(tu, "is_torch_xla_available", lambda: True)
    assert cpu_precision.has_accelerator()

