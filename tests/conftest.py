"""Shared fixtures: one engine on the bundled model (float32, CPU) for the whole session."""

from __future__ import annotations

import pytest
import torch

from engine_core import Engine, EngineConfig


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine(EngineConfig(device="cpu", dtype="float32"))


@pytest.fixture(scope="session")
def hf_model(engine: Engine):
    """transformers' own model for the same weights, with its stock sdpa attention."""
    from transformers import AutoModelForCausalLM

    from engine_core.models import bundled

    path = bundled.converted_dir(engine.config.cache_dir)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").eval()


@pytest.fixture(scope="session")
def chat_prompts(engine: Engine) -> list[list[int]]:
    """Chat prompts of quite different lengths, as token ids."""
    questions = [
        "Hi",
        "Tell me a story about a dragon who learns to bake bread.",
        "Explain, step by step and in plain words, how a bicycle stays upright while moving, "
        "what role the rider plays, why it is harder to balance when going slowly, and what "
        "the trail of the front fork has to do with it. Then give three tips for beginners.",
        "Write a short poem about the sea.",
    ]
    return [engine.tokenizer.apply_chat_template([{"role": "user", "content": q}]) for q in questions]
