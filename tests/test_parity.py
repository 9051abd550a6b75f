"""Greedy tokens from the engine equal transformers' own greedy generate on the bundled model."""

from __future__ import annotations

import torch

from engine_core import SamplingParams

NEW_TOKENS = 32


def hf_greedy(hf_model, prompt: list[int], new_tokens: int) -> list[int]:
    # No EOS: run the full length, like the engine's ignore_eos. (eos_token_id=None passed to
    # generate would be filled in again from the model's generation config, so clear it there.)
    hf_model.generation_config.eos_token_id = None
    out = hf_model.generate(torch.tensor([prompt]), max_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def test_greedy_matches_transformers_generate(engine, hf_model, chat_prompts):
    assert len({len(p) for p in chat_prompts}) == len(chat_prompts), "prompts should differ in length"
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)
    for prompt in chat_prompts:
        expected = hf_greedy(hf_model, prompt, NEW_TOKENS)
        got = engine.generate([prompt], params)[0]
        assert len(got) == NEW_TOKENS
        assert got == expected, (
            f"prompt of {len(prompt)} tokens: engine {engine.tokenizer.decode(got)!r} "
            f"!= transformers {engine.tokenizer.decode(expected)!r}"
        )


def test_generate_stops_at_eos(engine, chat_prompts):
    """Without ignore_eos, a chat answer ends at the model's end-of-turn token."""
    out = engine.generate([chat_prompts[0]], SamplingParams(temperature=0, max_tokens=64))[0]
    assert out[-1] in engine.tokenizer.eos_token_ids
    assert len(out) < 64
    assert engine.allocator.num_used == 0
