"""Paged decode with flex attention; packed prefill with ``varlen_attn`` (an alternative to ``triton``).

A decode step (every sequence brings exactly one new token) reads the KV pool where it lies,
through a flex-attention ``BlockMask`` built from the block tables. The pool of one layer,
``[slots, kv_heads, head_dim]``, is viewed as one long "sequence" of keys ``[1, kv_heads,
slots, head_dim]``, and query row b may attend only to the slots its block table covers:

    block table of row b: [7, 2, 9], 37 tokens, block_size 16
    full blocks, read unmasked:      7, 2         full_kv_num_blocks[b] = 2
    last block, read through the mask:  9         kv_num_blocks[b] = 1, kv_indices[b][0] = 9
    mask_mod(b, kv):  logical = block_position[b][kv // 16]     (7 -> 0, 2 -> 1, 9 -> 2, else -1)
                      logical >= 0 and logical * 16 + kv % 16 < 37

The BlockMask says which blocks to visit (the kernel skips all others); ``mask_mod`` is the exact
rule, evaluated only inside the partly filled last block. So a step reads each sequence's own
KV once. All of this lives in static tensors, one set per padded batch size, rewritten in
place every step (``paged_decode.py``), so that a CUDA graph can replay the step.

Any other step (prefills, chunks, draft verification) goes to :class:`VarlenBackend`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from ..block_allocator import blocks_for
from ..kv_cache import KVPool
from .base import AttentionBackend, BatchLayout
from .paged_decode import DecodeMetadata, PagedDecodeBackend

Q_BLOCK = 128  # flex attention's query tile; a decode row is one query, so this is never split


@dataclass(frozen=True)
class FlexDecodeMetadata(DecodeMetadata):
    """The shared decode tensors, plus the BlockMask's."""

    full_blocks: torch.Tensor  # [rows] int32: how many of a row's blocks are full
    last_block: torch.Tensor  # [rows, pool blocks] int32: column 0 is the last (partial) block
    block_position: torch.Tensor  # [rows, pool blocks] int32: index of a block in the row's table, or -1
    block_mask: BlockMask


class FlexPagedBackend(PagedDecodeBackend):
    """flex attention over the paged pool for decode steps; any other step goes to ``prefill``."""

    def __init__(self, prefill: AttentionBackend, compile: bool = True) -> None:
        super().__init__(prefill)
        # Each padded batch size and each pool size is one compiled shape; several engines in one
        # process (tests, benchmarks) would pass dynamo's default limit of 8 and stop compiling.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        # Uncompiled, flex attention computes every score of the whole pool: correct, but only
        # fit for small pools (tests on CPU). Compiled, it runs the block-sparse Triton kernels.
        self._flex = torch.compile(flex_attention, dynamic=False, fullgraph=True) if compile else flex_attention

    def allocate(self, rows: int, kv: KVPool) -> FlexDecodeMetadata:
        shared = super().allocate(rows, kv)
        device, bs = kv.storage.device, kv.block_size
        pool_blocks = kv.num_blocks + 1  # with the scratch block
        full_blocks = torch.zeros(rows, dtype=torch.int32, device=device)
        last_block = torch.full((rows, pool_blocks), kv.scratch_block, dtype=torch.int32, device=device)
        block_position = torch.full((rows, pool_blocks), -1, dtype=torch.int32, device=device)
        block_position[:, kv.scratch_block] = 0
        context_lens = shared.context_lens

        def in_own_blocks(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
            logical = block_position[b, kv_idx // bs]
            return (logical >= 0) & (logical * bs + kv_idx % bs < context_lens[b])

        # BlockMask index tensors span every block of the pool, so their width is the pool's.
        block_mask = BlockMask.from_kv_blocks(
            torch.ones(rows, 1, 1, dtype=torch.int32, device=device), last_block.view(rows, 1, 1, pool_blocks),
            full_blocks.view(rows, 1, 1), shared.block_tables.view(rows, 1, 1, pool_blocks),
            BLOCK_SIZE=(Q_BLOCK, bs), mask_mod=in_own_blocks, seq_lengths=(1, pool_blocks * bs),
            compute_q_blocks=False,
        )
        return FlexDecodeMetadata(rows, shared.slot_mapping, context_lens, shared.block_tables, full_blocks,
                                  last_block, block_position, block_mask)

    def fill(self, metadata: FlexDecodeMetadata, layout: BatchLayout, kv: KVPool) -> None:  # type: ignore[override]
        super().fill(metadata, layout, kv)
        # The rest is computed where the tables now are, with no further transfer.
        bs, rows = kv.block_size, metadata.rows
        width = blocks_for(max(layout.context_lens), bs)
        count = (metadata.context_lens + (bs - 1)) // bs
        torch.sub(count, 1, out=metadata.full_blocks)
        metadata.last_block[:, :1].copy_(metadata.block_tables.gather(1, metadata.full_blocks[:, None].long()))
        used = metadata.block_tables[:, :width].long()
        metadata.block_position.fill_(-1)
        order = torch.arange(width, dtype=torch.int32, device=used.device).expand(rows, width)
        metadata.block_position.scatter_(1, used, order)
        metadata.block_position[:, kv.scratch_block] = -1  # table padding; a padding row's own scratch
        metadata.block_position[len(layout.context_lens):, kv.scratch_block] = 0  # block is its block 0

    def decode(
        self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, kv: KVPool,
        metadata: DecodeMetadata, scale: float,
    ) -> torch.Tensor:
        assert isinstance(metadata, FlexDecodeMetadata)
        rows = q.shape[0]
        if rows < metadata.rows:
            q = torch.cat([q, q.new_zeros(metadata.rows - rows, *q.shape[1:])])
        out = self._flex(
            q.unsqueeze(2),  # [rows, heads, 1, dim]
            k_cache.permute(1, 0, 2).unsqueeze(0),  # [1, kv_heads, slots, dim], a view of the pool
            v_cache.permute(1, 0, 2).unsqueeze(0),
            block_mask=metadata.block_mask, scale=scale, enable_gqa=True,
        )
        return out[:rows, :, 0]
