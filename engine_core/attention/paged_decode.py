"""What the CUDA decode backends share: padded decode steps over static tensors.

A decode step (one new token per sequence) is padded to a power of two of rows, and its
metadata lives in tensors allocated once per padded size and rewritten in place each step, so
that a CUDA graph captured once keeps reading them (``cuda_graphs.py``). Padding rows hold one
token in the pool's scratch block:

    batch of 3 decodes, padded to 4          context_lens   [ 37   5  16 |  1 ]
                                             block_tables   [ 7 2 9 | 4 | 3 | S ]   (S = scratch)
                                             slot_mapping   [ 9*16+4, 4*16+4, 3*16+15 | S*16 ]

Any other step (prefills, chunks, draft verification) goes to the ``prefill`` backend.
Subclasses add their own tensors to :class:`DecodeMetadata` and implement ``decode``.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import torch

from ..block_allocator import blocks_for
from ..kv_cache import KVPool
from ..transfer import pinned
from .base import AttentionBackend, BatchLayout


def padded_batch_size(batch_size: int) -> int:
    """Decode batches are padded to a power of two, so that few shapes are ever compiled or captured."""
    return 1 << (batch_size - 1).bit_length()


class DecodeRows:
    """A padded decode step's per-row inputs on the host (pinned on CUDA), kept from step to step.

    Padding rows hold one token in the pool's scratch block; tables are padded with it too.
    Block tables change little between steps (a sequence gains a block every ``block_size``
    tokens; rows shift when a sequence leaves), so a row of ``block_tables`` is rewritten only
    where it differs from the last step's: at 32 sequences of 1,000 tokens that is a few blocks
    a step instead of 2,000 ints converted from Python lists.

        row 0  last step [ 7 2 9 ]  now [ 7 2 9 4 ]  -> writes 4
        row 1  last step [ 5 8 ]    now [ 3 ]        -> writes 3, then scratch over the old 8
    """

    def __init__(self, rows: int, kv: KVPool) -> None:
        self.rows = rows
        self._kv = kv
        self._pin = kv.storage.device.type == "cuda"
        self.block_tables = torch.full((rows, 8), kv.scratch_block, dtype=torch.int32, pin_memory=self._pin)
        self._tables: list[list[int]] = [[] for _ in range(rows)]  # the blocks each row holds now
        # Recorded after the copies out of block_tables: rewriting it before they ran would race them.
        self._copied = torch.cuda.Event() if self._pin else None

    def update(self, layout: BatchLayout) -> tuple[torch.Tensor, torch.Tensor]:
        """Write one step's tables; returns its ``(context_lens [rows] int32, slot_mapping [rows] long)``."""
        kv, rows, bs = self._kv, self.rows, self._kv.block_size
        if len(layout.context_lens) > rows:
            raise ValueError(f"{len(layout.context_lens)} decode rows do not fit metadata padded to {rows}")
        if self._copied is not None:
            self._copied.synchronize()
        lens = [1] * rows
        slots = [kv.scratch_slot] * rows
        tables: list[list[int]] = [[] for _ in range(rows)]
        for row, (n, table) in enumerate(zip(layout.context_lens, layout.block_tables)):
            count = blocks_for(n, bs)
            lens[row], slots[row], tables[row] = n, table[count - 1] * bs + (n - 1) % bs, table[:count]
        width = max(len(t) for t in tables)
        if width > self.block_tables.shape[1]:
            wider = min(max(width, 2 * self.block_tables.shape[1]), kv.num_blocks + 1)  # the static tables' width
            grown = torch.full((rows, wider), kv.scratch_block,
                               dtype=torch.int32, pin_memory=self._pin)
            grown[:, :self.block_tables.shape[1]] = self.block_tables
            self.block_tables = grown
        for row, (new, old) in enumerate(zip(tables, self._tables)):
            if new != old:
                self._write_row(row, new, old)
        device = kv.storage.device
        return pinned(lens, torch.int32, device), pinned(slots, torch.long, device)

    def copied(self) -> None:
        """Call once the step's copies out of ``block_tables`` are queued."""
        if self._copied is not None:
            self._copied.record()

    def _write_row(self, row: int, new: list[int], old: list[int]) -> None:
        start = len(old) if new[:len(old)] == old else 0  # a table that only grew keeps its start
        if len(new) > start:
            self.block_tables[row, start:len(new)] = torch.tensor(new[start:], dtype=torch.int32)
        if len(old) > len(new):
            self.block_tables[row, len(new):len(old)] = self._kv.scratch_block
        self._tables[row] = new


@dataclass(frozen=True)
class DecodeMetadata:
    """Static tensors of one padded decode batch size (``rows``)."""

    rows: int
    slot_mapping: torch.Tensor  # [rows] long: where each row's new K/V goes
    context_lens: torch.Tensor  # [rows] int32: tokens in KV once the new one is written
    block_tables: torch.Tensor  # [rows, pool blocks] int32: each row's blocks in order, then scratch


class PagedDecodeBackend(AttentionBackend):
    """Decode steps through padded static metadata; any other step goes to ``prefill``."""

    supports_cuda_graphs = True

    def __init__(self, prefill: AttentionBackend) -> None:
        self.prefill = prefill
        self._static: dict[int, DecodeMetadata] = {}
        self._host: dict[int, DecodeRows] = {}

    def prepare(self, layout: BatchLayout, kv: KVPool) -> object:
        if any(n != 1 for n in layout.query_lens):
            return self.prefill.prepare(layout, kv)
        metadata = self.static_metadata(padded_batch_size(len(layout.query_lens)), kv)
        self.fill(metadata, layout, kv)
        return metadata

    def static_metadata(self, rows: int, kv: KVPool) -> DecodeMetadata:
        """The static tensors of one padded batch size (made once, then reused)."""
        if rows not in self._static:
            self._static[rows] = self.allocate(rows, kv)
        return self._static[rows]

    def allocate(self, rows: int, kv: KVPool) -> DecodeMetadata:
        """New static tensors for ``rows`` rows; backends with more metadata extend this."""
        device = kv.storage.device
        return DecodeMetadata(
            rows,
            torch.full((rows,), kv.scratch_slot, dtype=torch.long, device=device),
            torch.ones(rows, dtype=torch.int32, device=device),
            # As wide as the pool, so that any table fits (flex attention also needs this width).
            torch.full((rows, kv.num_blocks + 1), kv.scratch_block, dtype=torch.int32, device=device),
        )

    def fill(self, metadata: DecodeMetadata, layout: BatchLayout, kv: KVPool) -> None:
        """Write one step into ``metadata`` (from pinned memory, without waiting)."""
        if metadata.rows not in self._host:
            self._host[metadata.rows] = DecodeRows(metadata.rows, kv)
        host = self._host[metadata.rows]
        context_lens, slot_mapping = host.update(layout)
        metadata.context_lens.copy_(context_lens, non_blocking=True)
        metadata.slot_mapping.copy_(slot_mapping, non_blocking=True)
        metadata.block_tables[:, :host.block_tables.shape[1]].copy_(host.block_tables, non_blocking=True)
        host.copied()

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv: KVPool, layer: int,
        metadata: object, scale: float,
    ) -> torch.Tensor:
        if not isinstance(metadata, DecodeMetadata):
            return self.prefill.forward(q, k, v, kv, layer, metadata, scale)
        rows = q.shape[0]  # the real batch when eager, the padded one inside a CUDA graph
        k_cache, v_cache = kv.layer(layer)
        k_cache.index_copy_(0, metadata.slot_mapping[:rows], k)
        v_cache.index_copy_(0, metadata.slot_mapping[:rows], v)
        return self.decode(q, k_cache, v_cache, kv, metadata, scale)

    @abstractmethod
    def decode(
        self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, kv: KVPool,
        metadata: DecodeMetadata, scale: float,
    ) -> torch.Tensor:
        """Attention of ``q`` ``[rows, heads, head_dim]`` over one layer's pool (new KV already written)."""
