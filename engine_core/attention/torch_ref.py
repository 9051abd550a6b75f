"""The reference attention backend: plain PyTorch, one sequence at a time.

Correct and readable rather than fast; runs on CPU and CUDA. Every other backend is tested
against this one. For each sequence it gathers the keys and values of all its positions
(through its block table) and runs ``scaled_dot_product_attention`` with a causal mask that
is aligned bottom-right: the last new query sees every cached and new position.

    query rows (new tokens 5..7 of a sequence with 8 in KV), x = may attend
            kv 0 1 2 3 4 5 6 7
      q 5      x x x x x x . .
      q 6      x x x x x x x .
      q 7      x x x x x x x x
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..kv_cache import KVPool
from .base import AttentionBackend, BatchLayout


@dataclass(frozen=True)
class ReferenceMetadata:
    slot_mapping: torch.Tensor
    query_starts: list[int]  # offset of each sequence's first new token in the packed step
    query_lens: list[int]
    context_slots: list[torch.Tensor]  # per sequence, the slots of all its positions in order
    masks: list[torch.Tensor | None]  # per sequence, [query_len, context_len] bool, or None


class ReferenceBackend(AttentionBackend):
    """Gather each sequence's KV, then dense causal attention per sequence."""

    def prepare(self, layout: BatchLayout, kv: KVPool) -> ReferenceMetadata:
        device = layout.slot_mapping.device
        starts, slots, masks = [], [], []
        offset = 0
        for q_len, ctx_len, table in zip(layout.query_lens, layout.context_lens, layout.block_tables):
            starts.append(offset)
            offset += q_len
            positions = torch.arange(ctx_len)
            blocks = torch.tensor(table, dtype=torch.long)[positions // layout.block_size]
            slots.append((blocks * layout.block_size + positions % layout.block_size).to(device))
            masks.append(_causal_mask(q_len, ctx_len, device))
        return ReferenceMetadata(layout.slot_mapping, starts, list(layout.query_lens), slots, masks)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv: KVPool, layer: int,
        metadata: ReferenceMetadata, scale: float,
    ) -> torch.Tensor:
        k_cache, v_cache = kv.layer(layer)
        k_cache.index_copy_(0, metadata.slot_mapping, k)
        v_cache.index_copy_(0, metadata.slot_mapping, v)
        num_heads, num_kv_heads = q.shape[1], k.shape[1]
        group = num_heads // num_kv_heads
        out = torch.empty_like(q)
        for start, q_len, slots, mask in zip(
            metadata.query_starts, metadata.query_lens, metadata.context_slots, metadata.masks
        ):
            # Grouped-query attention without copying K/V per query head: the `group` query heads
            # that share a KV head become extra query rows of that head.
            # [q_len, heads, dim] -> [kv_heads, group * q_len, dim]
            q_seq = q[start:start + q_len].reshape(q_len, num_kv_heads, group, -1).permute(1, 2, 0, 3)
            q_seq = q_seq.reshape(num_kv_heads, group * q_len, -1)
            k_seq = k_cache.index_select(0, slots).transpose(0, 1)  # [kv_heads, ctx_len, dim]
            v_seq = v_cache.index_select(0, slots).transpose(0, 1)
            # 4-D inputs ([1, heads, rows, dim]): PyTorch's fused CPU kernel only takes those.
            o = F.scaled_dot_product_attention(
                q_seq[None], k_seq[None], v_seq[None], scale=scale,
                attn_mask=None if mask is None else mask.repeat(group, 1),
            )
            o = o[0].reshape(num_kv_heads, group, q_len, -1).permute(2, 0, 1, 3)
            out[start:start + q_len] = o.reshape(q_len, num_heads, -1)
        return out


def _causal_mask(q_len: int, ctx_len: int, device: torch.device) -> torch.Tensor | None:
    """Bottom-right causal mask; None when every query may see every key (a single new token)."""
    if q_len == 1:
        return None
    first = ctx_len - q_len
    rows = torch.arange(q_len, device=device)[:, None] + first
    return torch.arange(ctx_len, device=device)[None, :] <= rows
