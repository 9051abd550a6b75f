"""The reference attention backend: plain PyTorch; runs on CPU and CUDA.

Correct and readable rather than clever; every other backend is tested against this one, and it
is the backend of CPU runs. A sequence with several new tokens (a prompt, a chunk, draft tokens)
is attended on its own: gather the keys and values of all its positions through its block table,
then ``scaled_dot_product_attention`` with a causal mask aligned bottom-right, so the last new
query sees every cached and new position:

    query rows (new tokens 5..7 of a sequence with 8 in KV), x = may attend
            kv 0 1 2 3 4 5 6 7
      q 5      x x x x x x . .
      q 6      x x x x x x x .
      q 7      x x x x x x x x

The sequences with one new token (decodes) are attended together, in one call per layer: each
one's slots are padded to the longest context with the scratch slot, and a mask hides the padding.

    decode rows   b (37 in KV), d (3 in KV)        slots  [ b0 b1 ... b36 ]
                                                          [ d0 d1 d2  s .. s ]   s = scratch slot
                                                   mask   [ x  x  ...  x ]
                                                          [ x  x  x   .. .  ]

One call instead of one per sequence is what makes a batch of decodes cost little more than a
single one on a CPU, as it does on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..block_allocator import blocks_for
from ..kv_cache import KVPool
from .base import AttentionBackend, BatchLayout


@dataclass(frozen=True)
class DecodeRows:
    """The sequences of a step that have one new token each, attended in one call."""

    rows: torch.Tensor  # [B]: each one's token in the packed step
    slots: torch.Tensor  # [B * width]: each one's context slots, padded to width with the scratch slot
    mask: torch.Tensor  # [B, 1, 1, width]: True where the row may attend


@dataclass(frozen=True)
class ReferenceMetadata:
    slot_mapping: torch.Tensor
    decode: DecodeRows | None
    query_starts: list[int]  # the other sequences: offset of the first new token in the packed step,
    query_lens: list[int]
    context_slots: list[torch.Tensor]  # the slots of all their positions in order,
    masks: list[torch.Tensor]  # and [query_len, context_len] causal masks


class ReferenceBackend(AttentionBackend):
    """Decodes in one batched call; every other sequence gathered and attended on its own."""

    def prepare(self, layout: BatchLayout, kv: KVPool) -> ReferenceMetadata:
        device = layout.slot_mapping.device
        starts, lens, slots, masks = [], [], [], []
        decodes: list[int] = []
        offset = 0
        for index, (q_len, ctx_len) in enumerate(zip(layout.query_lens, layout.context_lens)):
            if q_len == 1:
                decodes.append(index)
            else:
                starts.append(offset)
                lens.append(q_len)
                slots.append(_context_slots(layout, index, ctx_len).to(device))
                masks.append(_causal_mask(q_len, ctx_len, device))
            offset += q_len
        decode = _decode_rows(layout, decodes, kv.scratch_slot, device) if decodes else None
        return ReferenceMetadata(layout.slot_mapping, decode, starts, lens, slots, masks)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv: KVPool, layer: int,
        metadata: ReferenceMetadata, scale: float,
    ) -> torch.Tensor:
        k_cache, v_cache = kv.layer(layer)
        k_cache.index_copy_(0, metadata.slot_mapping, k)
        v_cache.index_copy_(0, metadata.slot_mapping, v)
        out = torch.empty_like(q)
        if metadata.decode is not None:
            rows = metadata.decode.rows
            out[rows] = _attend_decodes(q[rows], k_cache, v_cache, metadata.decode, scale)
        for start, q_len, slots, mask in zip(
            metadata.query_starts, metadata.query_lens, metadata.context_slots, metadata.masks
        ):
            k_seq = k_cache.index_select(0, slots)
            v_seq = v_cache.index_select(0, slots)
            out[start:start + q_len] = _attend(q[None, start:start + q_len], k_seq[None], v_seq[None], mask, scale)[0]
        return out


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """Grouped-query attention of B sequences' queries to their own keys and values.

    q: ``[B, q_len, heads, dim]``; k, v: ``[B, ctx_len, kv_heads, dim]``; mask: broadcastable to
    ``[B, 1, q_len, ctx_len]``. Returns ``[B, q_len, heads, dim]``.
    """
    batch, q_len, num_heads, dim = q.shape
    num_kv_heads = k.shape[2]
    group = num_heads // num_kv_heads
    # The `group` query heads that share a KV head become extra query rows of that head, so K and V
    # are not copied per query head: [B, q_len, heads, dim] -> [B, kv_heads, group * q_len, dim].
    q = q.reshape(batch, q_len, num_kv_heads, group, dim).permute(0, 2, 3, 1, 4)
    q = q.reshape(batch, num_kv_heads, group * q_len, dim)
    if mask.shape[-2] > 1:
        mask = mask.repeat(1, 1, group, 1)
    o = F.scaled_dot_product_attention(q, k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, scale=scale)
    o = o.reshape(batch, num_kv_heads, group, q_len, dim).permute(0, 3, 1, 2, 4)
    return o.reshape(batch, q_len, num_heads, dim)


def _attend_decodes(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, decode: DecodeRows, scale: float
) -> torch.Tensor:
    batch, width = decode.mask.shape[0], decode.mask.shape[-1]
    k = k_cache.index_select(0, decode.slots).view(batch, width, *k_cache.shape[1:])
    v = v_cache.index_select(0, decode.slots).view(batch, width, *v_cache.shape[1:])
    return _attend(q[:, None], k, v, decode.mask, scale)[:, 0]


def _context_slots(layout: BatchLayout, index: int, ctx_len: int) -> torch.Tensor:
    """The slots of positions ``0 .. ctx_len - 1`` of sequence ``index``."""
    table = torch.tensor(layout.block_tables[index][:blocks_for(ctx_len, layout.block_size)], dtype=torch.long)
    return _slots(table[None], torch.arange(ctx_len), layout.block_size)[0]


def _decode_rows(layout: BatchLayout, indices: list[int], scratch_slot: int, device: torch.device) -> DecodeRows:
    ctx_lens = torch.tensor([layout.context_lens[i] for i in indices])
    positions = torch.arange(int(ctx_lens.max()))
    num_blocks = blocks_for(len(positions), layout.block_size)
    tables = torch.tensor([_padded(layout.block_tables[i][:num_blocks], num_blocks) for i in indices])
    mask = positions[None, :] < ctx_lens[:, None]
    slots = torch.where(mask, _slots(tables, positions, layout.block_size), scratch_slot)
    token_of = torch.tensor(layout.query_lens).cumsum(0) - 1  # a sequence's last (here: only) token
    return DecodeRows(token_of[indices].to(device), slots.flatten().to(device), mask[:, None, None].to(device))


def _slots(tables: torch.Tensor, positions: torch.Tensor, block_size: int) -> torch.Tensor:
    """``[rows, len(positions)]``: where each row's positions live, through its block table row."""
    return tables[:, positions // block_size] * block_size + positions % block_size


def _padded(table: list[int], length: int) -> list[int]:
    return table + [0] * (length - len(table))


def _causal_mask(q_len: int, ctx_len: int, device: torch.device) -> torch.Tensor:
    """Bottom-right causal mask ``[1, 1, q_len, ctx_len]``."""
    first = ctx_len - q_len
    rows = torch.arange(q_len, device=device)[:, None] + first
    return (torch.arange(ctx_len, device=device)[None, :] <= rows)[None, None]
