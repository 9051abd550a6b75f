"""Model loading: the bundled default, ``random:`` presets, local directories and hub ids."""

from .errors import ModelLoadError
from .loader import LoadedModel, load_model
from .presets import PRESETS

__all__ = ["PRESETS", "LoadedModel", "ModelLoadError", "load_model"]
