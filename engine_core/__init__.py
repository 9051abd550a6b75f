"""engine_core: a small paged-KV serving engine on Hugging Face models, for teaching LLM serving."""

from .config import EngineConfig
from .engine import Engine
from .model_runner import ForwardItem
from .sampler import SampleRow
from .sampling_params import SamplingParams

__all__ = ["Engine", "EngineConfig", "ForwardItem", "SampleRow", "SamplingParams"]
