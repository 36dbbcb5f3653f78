"""`sft_scaled`'s weight interpolation (bench/tellbench/scoring.set_lora_scale): 0 is the base model, 1 the adapter
as trained, and scales never compound."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


def test_lora_scale_moves_between_the_base_model_and_the_adapter(tiny_model):
    import torch
    from peft import LoraConfig, get_peft_model
    from tellbench.scoring import set_lora_scale
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    with torch.no_grad():
        base_logits = base(ids).logits.clone()
    # init_lora_weights=False: B is random, so the adapter changes the outputs
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False)).eval()
    with torch.no_grad():
        trained = model(ids).logits.clone()
        assert not torch.allclose(trained, base_logits, atol=1e-4)
        layers = set_lora_scale(model, 0.0)
        assert layers == 2 * model.config.num_hidden_layers
        assert torch.allclose(model(ids).logits, base_logits, atol=1e-6)
        set_lora_scale(model, 0.5)
        half = model(ids).logits.clone()
        assert not torch.allclose(half, trained, atol=1e-4) and not torch.allclose(half, base_logits, atol=1e-4)
        set_lora_scale(model, 0.5)  # relative to the trained scaling: a second call changes nothing
        assert torch.equal(model(ids).logits, half)
        set_lora_scale(model, 1.0)
        assert torch.allclose(model(ids).logits, trained, atol=1e-6)


def test_lora_scale_refuses_a_model_without_an_adapter(tiny_model):
    from tellbench.scoring import set_lora_scale
    from transformers import AutoModelForCausalLM

    with pytest.raises(RuntimeError, match="no LoRA layer"):
        set_lora_scale(AutoModelForCausalLM.from_pretrained(str(tiny_model)), 0.5)
