"""Attention backends behind one interface, chosen by name from a registry."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .base import AttentionBackend, BatchLayout, StepContext, paged_attention
from .torch_ref import ReferenceBackend

# name -> factory(device). CUDA backends add themselves here.
BACKENDS: dict[str, Callable[[torch.device], AttentionBackend]] = {
    "torch_ref": lambda device: ReferenceBackend(),
}


def create_backend(name: str, device: torch.device) -> AttentionBackend:
    """The backend called ``name``; ``auto`` picks the best one for ``device``."""
    if name == "auto":
        name = "torch_ref"
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of: auto, {', '.join(BACKENDS)}")
    return BACKENDS[name](device)


__all__ = ["BACKENDS", "AttentionBackend", "BatchLayout", "StepContext", "create_backend", "paged_attention"]
