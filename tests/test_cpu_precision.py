"""`bf16: true` on a CPU-only machine: the plugin asks transformers for CPU autocast, and only then."""

from __future__ import annotations

from axolotl_tell import cpu_precision


def test_use_cpu_only_for_bf16_without_an_accelerator(monkeypatch):
    monkeypatch.setattr(cpu_precision, "has_accelerator", lambda: False)
    assert cpu_precision.cpu_bf16_training_args({"bf16": True}) == {"use_cpu": True}
    assert cpu_precision.cpu_bf16_training_args({"bfloat16": True}) == {"use_cpu": True}
    assert cpu_precision.cpu_bf16_training_args({"bf16": False}) is None
    assert cpu_precision.cpu_bf16_training_args({"bf16": "auto"}) is None  # Axolotl resolves auto to off on CPU
    assert cpu_precision.cpu_bf16_training_args({}) is None
    monkeypatch.setattr(cpu_precision, "has_accelerator", lambda: True)
    assert cpu_precision.cpu_bf16_training_args({"bf16": True}) is None
