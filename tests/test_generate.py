"""Greedy generation as the task eval, `infer` and the benchmark use it (tiny model, CPU)."""

from __future__ import annotations

import pytest
import torch

from axolotl_tell.generate import generate, stop_token_ids


@pytest.fixture()
def model_and_tokenizer(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(tiny_model)


def _first_generated_token(model, prompt: list[int]) -> int:
    with torch.no_grad():
        return int(model(torch.tensor([prompt])).logits[0, -1].argmax())


def test_generation_stops_at_the_models_own_end_of_turn_tokens(model_and_tokenizer):
    """Llama-3 / Gemma-it list several stop tokens in generation_config; passing only the tokenizer's EOS
    would replace that list and the answer would run on."""
    model, tok = model_and_tokenizer
    prompt = tok("the cat sat on", add_special_tokens=False)["input_ids"]
    end_of_turn = _first_generated_token(model, prompt)
    run_on = generate(model, tok, [prompt], max_new_tokens=6)[0]
    model.generation_config.eos_token_id = [tok.eos_token_id, end_of_turn]
    assert stop_token_ids(model, tok) == [tok.eos_token_id, end_of_turn]
    stopped = generate(model, tok, [prompt], max_new_tokens=6)[0]
    assert stopped == tok.decode([end_of_turn], skip_special_tokens=True).strip()  # (a real end-of-turn is special)
    assert len(run_on) > len(stopped)


def test_out_of_memory_halves_the_batch_with_the_same_results(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in
               ["the cat", "a dog ran over the hill", "why", "the red bird sang", "one two three"]]
    want = generate(model, tok, prompts, max_new_tokens=4, batch_size=1)
    real, sizes = model.generate, []

    def generate_with_little_memory(input_ids, **kwargs):
        sizes.append(input_ids.shape[0])
        if input_ids.shape[0] > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(input_ids=input_ids, **kwargs)

    model.generate = generate_with_little_memory
    assert generate(model, tok, prompts, max_new_tokens=4, batch_size=8) == want
    assert sizes == [5, 4, 2, 2, 1], sizes  # 8 (5 prompts) -> 4 -> 2, then the rest in batches of 2

    def broken(input_ids, **kwargs):
        raise RuntimeError("some other failure")

    model.generate = broken  # anything but out-of-memory is not retried
    with pytest.raises(RuntimeError, match="other failure"):
        generate(model, tok, prompts, max_new_tokens=4, batch_size=8)
