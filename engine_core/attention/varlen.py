"""CUDA attention with PyTorch's packed variable-length kernel (``varlen_attn``, FlashAttention-2).

One kernel call per layer covers the whole ragged step. ``varlen_attn`` takes the queries of
all sequences packed one after another and, separately, their keys and values packed the same
way, with cumulative lengths saying where each sequence starts:

    queries  | a0 a1 a2 a3 | b36 | c7 c8 |          cu_seq_q = [0, 4, 5, 7]
    keys     | a0 .. a3    | b0 .. b36 | c0 .. c8 | cu_seq_k = [0, 4, 41, 50]

Causality is aligned bottom-right (``window_size=(-1, 0)``), so a sequence's last query sees
all of its keys: that covers prefills, prefill chunks, decodes and draft verification alike.
torch 2.11's kernel reads contiguous keys, not a block table, so each layer first gathers
every sequence's keys and values out of the paged pool (``index_select`` over slots computed
once per step on the GPU). That gather is what makes long decodes slower than a paged kernel.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, cast

import torch

from ..kv_cache import KVPool
from .base import AttentionBackend, BatchLayout


@dataclass(frozen=True)
class VarlenMetadata:
    slot_mapping: torch.Tensor  # [new tokens] where each new K/V goes
    context_slots: torch.Tensor  # [sum(context_lens)] every sequence's slots, packed
    cu_seq_q: torch.Tensor  # int32 [batch + 1]
    cu_seq_k: torch.Tensor  # int32 [batch + 1]
    max_q: int
    max_k: int


def _varlen_kwargs() -> dict[str, Any]:
    # torch 2.11's varlen_attn handles grouped-query attention natively and has no enable_gqa
    # argument; from 2.12 on it takes one and needs it set to accept fewer KV heads.
    from torch.nn.attention.varlen import varlen_attn

    return {"enable_gqa": True} if "enable_gqa" in inspect.signature(varlen_attn).parameters else {}


class VarlenBackend(AttentionBackend):
    """Gather each sequence's paged KV, then one packed causal attention call per layer."""

    def __init__(self) -> None:
        from torch.nn.attention.varlen import varlen_attn

        self._attn = varlen_attn
        self._extra = _varlen_kwargs()

    def prepare(self, layout: BatchLayout, kv: KVPool) -> VarlenMetadata:
        device = layout.slot_mapping.device
        query_lens = torch.tensor(layout.query_lens, dtype=torch.int32)
        context_lens = torch.tensor(layout.context_lens, dtype=torch.int32)
        width = max(len(t) for t in layout.block_tables)
        tables = torch.zeros(len(layout.block_tables), width, dtype=torch.long)
        for row, table in enumerate(layout.block_tables):
            tables[row, :len(table)] = torch.as_tensor(table, dtype=torch.long)
        cu_q = torch.zeros(len(query_lens) + 1, dtype=torch.int32)
        cu_k = torch.zeros(len(context_lens) + 1, dtype=torch.int32)
        torch.cumsum(query_lens, 0, out=cu_q[1:])
        torch.cumsum(context_lens, 0, out=cu_k[1:])
        # Slots of every position of every sequence, computed on the GPU from the block tables.
        tables, lens, starts = (t.to(device, non_blocking=True) for t in (tables, context_lens, cu_k[:-1]))
        total = int(cu_k[-1])
        rows = torch.arange(len(layout.context_lens), device=device)
        seq = torch.repeat_interleave(rows, lens.long(), output_size=total)
        position = torch.arange(total, device=device) - starts.long()[seq]
        bs = layout.block_size
        slots = tables[seq, position // bs] * bs + position % bs
        return VarlenMetadata(
            layout.slot_mapping, slots, cu_q.to(device, non_blocking=True), cu_k.to(device, non_blocking=True),
            max(layout.query_lens), max(layout.context_lens),
        )

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv: KVPool, layer: int,
        metadata: VarlenMetadata, scale: float,
    ) -> torch.Tensor:
        k_cache, v_cache = kv.layer(layer)
        k_cache.index_copy_(0, metadata.slot_mapping, k)
        v_cache.index_copy_(0, metadata.slot_mapping, v)
        keys = k_cache.index_select(0, metadata.context_slots)
        values = v_cache.index_select(0, metadata.context_slots)
        out = self._attn(
            q.contiguous(), keys, values, metadata.cu_seq_q, metadata.cu_seq_k, metadata.max_q, metadata.max_k,
            scale=scale, window_size=(-1, 0), **self._extra,
        )
        return cast(torch.Tensor, out)  # a tuple only when auxiliary outputs are asked for
