"""Small host lists to device tensors, without making the host wait.

A copy from ordinary (pageable) host memory to the GPU blocks the host until the GPU has run
everything queued before it. From pinned (page-locked) memory the copy is queued like a kernel
(``non_blocking``), so the host goes on preparing the step while the GPU works.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pinned(values: Sequence, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``values`` as a host tensor, pinned when ``device`` is a GPU (a source for ``copy_``)."""
    return torch.tensor(values, dtype=dtype, pin_memory=device.type == "cuda")


def to_device(values: Sequence, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``values`` on ``device``; on CUDA copied from pinned memory, without waiting."""
    return pinned(values, dtype, device).to(device, non_blocking=True)
