"""Model loading: the bundled default, random presets, local directories and hub ids."""

from __future__ import annotations

import time

import pytest
import torch

from engine_core import Engine, EngineConfig, SamplingParams
from engine_core.kv_cache import KVPool
from engine_core.models import PRESETS, ModelLoadError, bundled, load_model
from engine_core.models.presets import qwen3_tokenizer_dir


def test_default_model_is_the_bundled_one():
    assert EngineConfig().model == "bundled"


def test_bundled_model_reloads_from_its_converted_copy(engine):
    path = bundled.converted_dir(engine.config.cache_dir)
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    start = time.perf_counter()
    loaded = load_model(EngineConfig(device="cpu"))
    print(f"bundled model reload: {time.perf_counter() - start:.2f} s")
    assert loaded.model.config.num_hidden_layers == 30
    assert loaded.tokenizer.chat_template


def test_bundled_model_answers_sensibly(engine):
    prompt = engine.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    )
    out = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=24))[0]
    assert "Paris" in engine.tokenizer.decode(out)


def test_tiny_random_model_generates(engine):
    tiny = Engine(EngineConfig(model="random:tiny", device="cpu", kv_cache_bytes=1 << 22))
    prompt = tiny.tokenizer.encode("hello world")
    first = tiny.generate([prompt], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))[0]
    again = tiny.generate([prompt], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))[0]
    assert len(first) == 8 and first == again
    # The same seed builds the same weights.
    other = Engine(EngineConfig(model="random:tiny", device="cpu", kv_cache_bytes=1 << 22))
    assert other.generate([prompt], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))[0] == first


def test_unknown_preset_names_the_choices():
    with pytest.raises(ModelLoadError, match="qwen3-4b"):
        load_model(EngineConfig(model="random:nonsense", device="cpu"))


def test_hub_id_offline_gives_one_line_error(monkeypatch):
    with pytest.raises(ModelLoadError) as err:
        load_model(EngineConfig(model="no-such-org/no-such-model-xyz", device="cpu"))
    message = str(err.value)
    assert "\n" not in message
    assert "no-such-org/no-such-model-xyz" in message and "hub" in message


def test_local_directory_without_a_model(tmp_path):
    with pytest.raises(ModelLoadError, match="this directory"):
        load_model(EngineConfig(model=str(tmp_path), device="cpu"))


def test_qwen3_4b_preset_has_the_published_size():
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(PRESETS["qwen3-4b"].config)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == 4_022_468_096
    # 36 layers x 2 x 8 KV heads x 128 x 2 bytes = 144 KiB per token in bf16.
    assert KVPool.bytes_per_block(config, 1, torch.bfloat16) == 144 * 1024


@pytest.mark.slow
def test_qwen3_06b_preset_loads_with_the_real_tokenizer(engine):
    try:
        qwen3_tokenizer_dir(engine.config.cache_dir)
    except ModelLoadError as err:
        pytest.skip(f"Qwen3 tokenizer unavailable here: {err}")
    qwen = Engine(EngineConfig(model="random:qwen3-0.6b", device="cpu", dtype="bfloat16", kv_cache_bytes=1 << 26))
    assert qwen.tokenizer.encode("Hello") == [9707]
    assert qwen.tokenizer.hf.convert_ids_to_tokens(151645) == "<|im_end|>"
    assert 151645 in qwen.tokenizer.eos_token_ids
    prompt = qwen.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], enable_thinking=False)
    assert len(qwen.generate([prompt], SamplingParams(temperature=0, max_tokens=2, ignore_eos=True))[0]) == 2
    assert sum(p.numel() for p in qwen.model.parameters()) == 596_049_920
