"""CPU precision: bf16 only where the CPU computes it natively (detection faked both ways, and the real one), through
the plugin's own config load; `use_cpu` for transformers only for bf16 without an accelerator."""

from __future__ import annotations

import logging

import pytest
from tiny import make_workspace

from axolotl_tell import cpu_precision
from axolotl_tell.cpu_precision import ENV, CpuPrecisionError, detect_cpu_bf16

# /proc/cpuinfo excerpts (flags trimmed to the ones that matter plus neighbours)
EPYC_AVX2 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"
             "flags\t\t: fpu sse sse2 avx avx2 fma bmi2 sha_ni\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n")
SKYLAKE_AVX512 = "model name\t: Intel(R) Xeon(R) Gold 6148\nflags\t\t: avx2 avx512f avx512bw avx512_vnni\n"
SAPPHIRE_RAPIDS = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
COOPER_LAKE = "model name\t: Intel(R) Xeon(R) Gold 6348H\nflags\t\t: avx2 avx512f avx512_bf16\n"
GRAVITON3 = "processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd sve bf16 i8mm\nCPU part\t: 0xd40\n"


def _detect(tmp_path, text, machine="x86_64", env=None):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return detect_cpu_bf16(str(path), machine=machine, env=env or {})


def test_native_bf16_is_the_avx512_bf16_or_amx_flag_and_nothing_else(tmp_path):
    avx2 = _detect(tmp_path, EPYC_AVX2)
    assert not avx2.native and "AMD EPYC 7B13" in avx2.cpu and "no avx512_bf16 / amx_bf16 flag" in avx2.why
    assert not _detect(tmp_path, SKYLAKE_AVX512).native  # AVX512 without the bf16 instructions: emulated
    spr = _detect(tmp_path, SAPPHIRE_RAPIDS)
    assert spr.native and "avx512_bf16 and amx_bf16" in spr.why and "Platinum 8480+" in spr.cpu
    assert _detect(tmp_path, COOPER_LAKE).native


def test_the_cpu_family_and_model_name_a_generic_vm_model_name(tmp_path):
    # A VM's "AMD EPYC" says nothing of the generation; the family and model numbers do (25/17: Zen 4 Genoa).
    genoa = _detect(tmp_path, "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                              "model name\t: AMD EPYC\nflags\t\t: avx2 avx512f avx512_bf16\n\n"
                              "processor\t: 1\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n")
    assert genoa.native and genoa.cpu.startswith("AMD EPYC (family 25 model 17) (torch: ")
    assert "family" not in _detect(tmp_path, SAPPHIRE_RAPIDS).cpu  # no numbers in the file: the name alone


def test_arm_and_unreadable_cpuinfo_count_as_not_native(tmp_path):
    arm = _detect(tmp_path, GRAVITON3, machine="aarch64")  # its `bf16` feature is not trusted (not measured)
    assert not arm.native and "aarch64" in arm.why and ENV in arm.why
    assert not _detect(tmp_path, SAPPHIRE_RAPIDS, machine="arm64").native
    missing = detect_cpu_bf16(str(tmp_path / "absent"), machine="x86_64", env={})
    assert not missing.native and "no CPU flags" in missing.why


def test_the_environment_overrides_the_detection_both_ways(tmp_path):
    assert _detect(tmp_path, EPYC_AVX2, env={ENV: "1"}).native
    assert not _detect(tmp_path, SAPPHIRE_RAPIDS, env={ENV: "0"}).native
    assert _detect(tmp_path, GRAVITON3, machine="aarch64", env={ENV: "true"}).native
    with pytest.raises(CpuPrecisionError, match=f"{ENV}='yes'.*Fix: set {ENV}=1 or {ENV}=0"):
        _detect(tmp_path, EPYC_AVX2, env={ENV: "yes"})


def test_the_real_detection_on_this_machine_does_not_crash(monkeypatch):
    import os
    import platform

    monkeypatch.delenv(ENV, raising=False)
    found = detect_cpu_bf16()
    assert isinstance(found.native, bool) and found.cpu and found.why
    if platform.machine().lower() in cpu_precision.X86 and os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            flags = f.read().split()
        assert found.native == any(flag in flags for flag in cpu_precision.BF16_FLAGS)


# -- through the plugin's config load (Axolotl's own load_cfg, in process) -----------------------------------------

@pytest.fixture()
def cpu_only(monkeypatch):
    """No accelerator, whatever the test machine has; the detection is faked through the environment."""
    monkeypatch.setattr(cpu_precision, "has_accelerator", lambda: False)
    return monkeypatch


@pytest.fixture()
def tell_log():
    import axolotl.cli.config  # noqa: F401  (configures Axolotl's logging first, as `axolotl train` does)

    records: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("axolotl.tell")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def _load(tiny_model, tmp_path, **overrides):
    from axolotl.cli.config import load_cfg

    path, _ = make_workspace(tmp_path, tiny_model, fp16=None, **overrides)
    return load_cfg(str(path))


def test_bf16_auto_on_a_cpu_without_native_bf16_trains_fp32_and_says_why(cpu_only, tell_log, tiny_model, tmp_path):
    """Axolotl alone turns `bf16: auto` off without a GPU and switches fp16 on (fp16 weights on the CPU)."""
    import torch

    cpu_only.setenv(ENV, "0")
    cfg = _load(tiny_model, tmp_path, bf16="auto")
    assert cfg.bf16 is False and not cfg.fp16 and cfg.torch_dtype == torch.float32
    said = [m for m in tell_log if "bf16: auto" in m]
    assert len(said) == 1 and "-> fp32" in said[0] and f"{ENV}=0" in said[0]
    assert cpu_precision.cpu_bf16_training_args(cfg) is None


def test_bf16_auto_on_a_cpu_with_native_bf16_trains_bf16(cpu_only, tell_log, tiny_model, tmp_path):
    import torch

    cpu_only.setenv(ENV, "1")
    cfg = _load(tiny_model, tmp_path, bf16="auto")
    assert cfg.bf16 is True and not cfg.fp16 and cfg.torch_dtype == torch.bfloat16
    assert any("-> bf16 (CPU autocast)" in m for m in tell_log)
    assert cpu_precision.cpu_bf16_training_args(cfg) == {"use_cpu": True}


@pytest.mark.parametrize("key", ["bf16", "bfloat16"])
def test_bf16_true_on_a_cpu_without_native_bf16_is_a_config_error_with_the_fix(cpu_only, tiny_model, tmp_path, key):
    cpu_only.setenv(ENV, "0")
    with pytest.raises(Exception) as err:
        _load(tiny_model, tmp_path, **{key: True})
    text = str(err.value)
    assert f"`{key}: true`" in text and "no native bf16" in text and "(torch: " in text
    assert f"Fix: `{key}: false`, or `bf16: auto`" in text


def test_bf16_true_where_the_cpu_has_it_or_a_gpu_decides_loads_unchanged(cpu_only, tiny_model, tmp_path):
    cpu_only.setenv(ENV, "1")
    assert _load(tiny_model, tmp_path / "a", bf16=True).bf16 is True
    cpu_only.setenv(ENV, "0")
    cpu_only.setattr(cpu_precision, "has_accelerator", lambda: True)  # the GPU's precision: Axolotl's business
    assert _load(tiny_model, tmp_path / "b", bf16=True).bf16 is True
    assert _load(tiny_model, tmp_path / "c", bf16=False).bf16 is False


# -- training arguments ---------------------------------------------------------------------------------------------

def test_use_cpu_only_for_bf16_without_an_accelerator(monkeypatch):
    monkeypatch.setattr(cpu_precision, "has_accelerator", lambda: False)
    assert cpu_precision.cpu_bf16_training_args({"bf16": True}) == {"use_cpu": True}
    assert cpu_precision.cpu_bf16_training_args({"bfloat16": True}) == {"use_cpu": True}
    assert cpu_precision.cpu_bf16_training_args({"bf16": "full"}) == {"use_cpu": True}  # bf16_full_eval too
    assert cpu_precision.cpu_bf16_training_args({"bf16": False}) is None
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
