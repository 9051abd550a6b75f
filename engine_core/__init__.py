"""engine_core: a small paged-KV serving engine on Hugging Face models, for teaching LLM serving.

The names below are imported on first use (PEP 562), not with the package: ``python -m
engine_core --help`` then answers at once instead of waiting seconds for torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import EngineConfig
    from .engine import Engine
    from .model_runner import ForwardItem
    from .sampler import SampleRow
    from .sampling_params import SamplingParams

_HOMES = {"Engine": ".engine", "EngineConfig": ".config", "ForwardItem": ".model_runner", "SampleRow": ".sampler",
          "SamplingParams": ".sampling_params"}

__all__ = ["Engine", "EngineConfig", "ForwardItem", "SampleRow", "SamplingParams"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'engine_core' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name], __name__), name)
