"""Attention backends behind one interface, chosen by name from a registry.

    torch_ref   plain PyTorch, one sequence at a time; CPU and CUDA; the reference for the others
    varlen      CUDA: gather each sequence's KV, then PyTorch's packed varlen_attn (FlashAttention-2)
    triton      CUDA: our split-KV paged decode kernel, varlen for prefill; the default on CUDA
    flex        CUDA: flex attention over the paged pool for decode, varlen for prefill
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch

from .base import AttentionBackend, BatchLayout, StepContext, paged_attention
from .torch_ref import ReferenceBackend


def _varlen(device: torch.device) -> AttentionBackend:
    if device.type != "cuda":
        raise ValueError("the varlen attention backend needs a CUDA device")
    from .varlen import VarlenBackend

    return VarlenBackend()


def _flex(device: torch.device) -> AttentionBackend:
    if device.type != "cuda":
        raise ValueError("the flex attention backend needs a CUDA device")
    from .flex_paged import FlexPagedBackend

    return FlexPagedBackend(prefill=_varlen(device))


def _triton(device: torch.device) -> AttentionBackend:
    if device.type != "cuda":
        raise ValueError("the triton attention backend needs a CUDA device")
    from .triton_paged import TritonPagedBackend

    return TritonPagedBackend(prefill=_varlen(device), device=device)


# name -> factory(device)
BACKENDS: dict[str, Callable[[torch.device], AttentionBackend]] = {
    "torch_ref": lambda device: ReferenceBackend(),
    "varlen": _varlen,
    "flex": _flex,
    "triton": _triton,
}


def create_backend(name: str, device: torch.device) -> AttentionBackend:
    """The backend called ``name``; ``auto`` picks the best one for ``device``."""
    if name == "auto":
        name = "torch_ref"
        if device.type == "cuda" and _has_varlen():
            # Some CUDA builds of torch (Windows, say) come without Triton.
            name = "triton" if importlib.util.find_spec("triton") is not None else "varlen"
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of: auto, {', '.join(BACKENDS)}")
    return BACKENDS[name](device)


def _has_varlen() -> bool:
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401  (torch >= 2.10)
    except ImportError:
        return False
    return True


__all__ = ["BACKENDS", "AttentionBackend", "BatchLayout", "StepContext", "create_backend", "paged_attention"]
