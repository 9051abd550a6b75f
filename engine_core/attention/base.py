"""The attention backend interface.

The engine runs the transformers model unchanged, except that every attention layer calls
:func:`paged_attention` (registered with transformers under the name ``engine_paged``). That
function hands the layer's new queries, keys and values to the engine's backend, which

1. writes the new keys and values into the paged KV pool, at each token's slot, and
2. attends each new query to its own sequence's keys and values (cached and new), causally.

A step's tokens are *packed*: sequence after sequence, each contributing any number of new
tokens. ``query_lens`` and ``context_lens`` say where one ends and the next begins:

    packed new tokens   | a0 a1 a2 a3 | b0 | c0 c1 |        query_lens   = [4, 1, 2]
    tokens in KV after  | 4           | 37 | 9     |        context_lens = [4, 37, 9]

Sequence b has 36 cached tokens and decodes one; c continues a prompt whose first 7 tokens are
already cached (a chunked prefill). A new token at index i of its sequence's chunk sees
positions ``0 .. context_len - query_len + i`` of that sequence and nothing of any other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from ..kv_cache import KVPool


@dataclass(frozen=True)
class BatchLayout:
    """Where each sequence's tokens are in a packed step, and where its KV lives.

    query_lens: new tokens per sequence, in packing order.
    context_lens: tokens per sequence in the KV pool once this step has written its new ones.
    block_tables: per sequence, the block ids holding its positions in order.
    slot_mapping: one slot per new token (``[total new tokens]``, on the model's device).
    block_size: tokens per block.
    """

    query_lens: list[int]
    context_lens: list[int]
    block_tables: list[list[int]]
    slot_mapping: torch.Tensor
    block_size: int


class AttentionBackend(ABC):
    """Writes new KV into the pool and computes attention for one packed step.

    ``prepare`` runs once per step (host-side bookkeeping: index tensors, masks); ``forward``
    runs once per layer and must not synchronise with the host more than it has to.

    A backend whose decode steps can be captured in a CUDA graph sets ``supports_cuda_graphs``
    and implements ``static_metadata`` and ``fill`` (see ``paged_decode.py``): the graph keeps
    reading the same tensors, and each step only rewrites their contents.
    """

    supports_cuda_graphs: bool = False

    @abstractmethod
    def prepare(self, layout: BatchLayout, kv: KVPool) -> Any:
        """Build this backend's per-step metadata from the batch layout."""

    def static_metadata(self, rows: int, kv: KVPool) -> Any:
        """Metadata tensors for decode steps of ``rows`` sequences, allocated once."""
        raise NotImplementedError(f"{type(self).__name__} cannot run decode steps in a CUDA graph")

    def fill(self, metadata: Any, layout: BatchLayout, kv: KVPool) -> None:
        """Write a decode step of at most ``rows`` sequences into ``static_metadata(rows)``."""
        raise NotImplementedError(f"{type(self).__name__} cannot run decode steps in a CUDA graph")

    @abstractmethod
    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv: KVPool, layer: int,
        metadata: Any, scale: float,
    ) -> torch.Tensor:
        """Attend one layer.

        q: ``[T, num_heads, head_dim]``; k, v: ``[T, num_kv_heads, head_dim]`` for the T new
        tokens of the step. Writes k and v into ``kv.layer(layer)`` at the step's slots, and
        returns ``[T, num_heads, head_dim]``.
        """


@dataclass(frozen=True)
class StepContext:
    """Everything one forward's attention layers need; passed to the model as a keyword."""

    backend: AttentionBackend
    kv: KVPool
    metadata: Any


# torch.compile (decode steps on CUDA) stops here and calls this function as it is: the KV pool
# and the backend's kernels stay plain Python, and every layer shares one compiled graph instead
# of specialising on its layer index.
@torch.compiler.disable
def paged_attention(
    module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, *, scaling: float | None = None,
    engine_step: StepContext | None = None, **_: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature, routed to the engine's backend.

    transformers gives ``[1, heads, T, head_dim]`` and expects ``[1, T, heads, head_dim]`` back.
    """
    if engine_step is None:
        raise RuntimeError("engine_paged attention was called outside an engine step")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    out = engine_step.backend.forward(
        query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1),
        engine_step.kv, getattr(module, "layer_idx"), engine_step.metadata, scale,
    )
    return out.unsqueeze(0), None
