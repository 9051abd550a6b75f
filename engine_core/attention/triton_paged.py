"""Paged decode attention as a Triton kernel of our own; prefill with ``varlen_attn`` (the CUDA default).

A decode step has one query token per sequence, so the work is reading each sequence's keys
and values once, straight out of the paged pool through its block table. One sequence alone
would keep only ``kv_heads`` programs busy on a GPU with 132 multiprocessors, so each sequence's
context is cut into ``splits`` pieces that run in parallel (split-KV, "flash decoding"):

    program (seq b, kv head h, split s)          context of b: 1000 tokens, 4 splits
      queries: the q heads that share kv head h  split 0: tokens   0..255   -> m0, l0, acc0
      keys:    tokens of split s, BLOCK_N at a   split 1: tokens 256..511   -> m1, l1, acc1
               time, each token found at         ...
               slot = table[t // bs] * bs + t % bs
      keeps a running max m, sum l and weighted sum acc (online softmax), written per split

    combine (seq b, q head): out = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s,  M = max_s m_s

The number of splits depends only on the padded batch size, and every shape lives in static
tensors (``paged_decode.py``), so a decode step runs inside a CUDA graph. Any other step
(prefills, chunks, draft verification) goes to the ``prefill`` backend.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..kv_cache import KVPool
from .base import AttentionBackend
from .paged_decode import DecodeMetadata, PagedDecodeBackend

BLOCK_N = 64  # keys per loop iteration
MAX_SPLITS = 32


@triton.jit
def _decode_split_kernel(
    q_ptr, k_ptr, v_ptr, tables_ptr, lens_ptr, acc_ptr, max_ptr, sum_ptr, scale,
    stride_q_row, stride_q_head, stride_k_slot, stride_k_head, stride_table,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, PAGE: tl.constexpr,
    BLOCK_N: tl.constexpr, SPLITS: tl.constexpr,
):
    row, kv_head, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    context = tl.load(lens_ptr + row)
    per_split = tl.cdiv(tl.cdiv(context, SPLITS), BLOCK_N) * BLOCK_N
    start = split * per_split
    end = tl.minimum(start + per_split, context)

    heads = kv_head * GROUP + tl.arange(0, GROUP_PAD)
    is_head = tl.arange(0, GROUP_PAD) < GROUP
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + row * stride_q_row + heads[:, None] * stride_q_head + dims[None, :],
                mask=is_head[:, None], other=0.0)
    running_max = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    running_sum = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
    for first in range(start, end, BLOCK_N):
        tokens = first + tl.arange(0, BLOCK_N)
        valid = tokens < end
        block = tl.load(tables_ptr + row * stride_table + tokens // PAGE, mask=valid, other=0)
        slots = (block * PAGE + tokens % PAGE).to(tl.int64)
        kv_offsets = slots[:, None] * stride_k_slot + kv_head * stride_k_head + dims[None, :]
        k = tl.load(k_ptr + kv_offsets, mask=valid[:, None], other=0.0)
        scores = tl.dot(q, tl.trans(k)) * scale  # [GROUP_PAD, BLOCK_N]
        scores = tl.where(valid[None, :], scores, float("-inf"))
        new_max = tl.maximum(running_max, tl.max(scores, 1))
        weights = tl.exp(scores - new_max[:, None])
        rescale = tl.exp(running_max - new_max)
        v = tl.load(v_ptr + kv_offsets, mask=valid[:, None], other=0.0)
        acc = acc * rescale[:, None] + tl.dot(weights.to(v.dtype), v)
        running_sum = running_sum * rescale + tl.sum(weights, 1)
        running_max = new_max

    # Partials are [rows, q heads, splits] (+ [head_dim] for acc), contiguous.
    part = (row * (tl.num_programs(1) * GROUP) + heads) * SPLITS + split
    tl.store(max_ptr + part, running_max, mask=is_head)
    tl.store(sum_ptr + part, running_sum, mask=is_head)
    tl.store(acc_ptr + part[:, None] * HEAD_DIM + dims[None, :], acc, mask=is_head[:, None])


@triton.jit
def _combine_kernel(acc_ptr, max_ptr, sum_ptr, out_ptr, stride_out_row, stride_out_head,
                    HEAD_DIM: tl.constexpr, SPLITS: tl.constexpr, SPLITS_PAD: tl.constexpr):
    row, head = tl.program_id(0), tl.program_id(1)
    splits = tl.arange(0, SPLITS_PAD)
    in_range = splits < SPLITS
    part = (row * tl.num_programs(1) + head) * SPLITS + splits
    split_max = tl.load(max_ptr + part, mask=in_range, other=float("-inf"))
    split_sum = tl.load(sum_ptr + part, mask=in_range, other=0.0)
    overall = tl.max(split_max, 0)  # split 0 always holds at least one token, so this is finite
    weight = tl.where(in_range, tl.exp(split_max - overall), 0.0)  # empty splits: e^-inf = 0
    dims = tl.arange(0, HEAD_DIM)
    acc = tl.load(acc_ptr + part[:, None] * HEAD_DIM + dims[None, :], mask=in_range[:, None], other=0.0)
    out = tl.sum(acc * weight[:, None], 0) / tl.sum(split_sum * weight, 0)
    tl.store(out_ptr + row * stride_out_row + head * stride_out_head + dims, out.to(out_ptr.dtype.element_ty))


def num_splits(rows: int, kv_heads: int, multiprocessors: int) -> int:
    """Enough programs to give every multiprocessor about two, within 1 .. MAX_SPLITS."""
    return max(1, min(MAX_SPLITS, triton.cdiv(2 * multiprocessors, rows * kv_heads)))


class TritonPagedBackend(PagedDecodeBackend):
    """Split-KV paged decode (Triton) for decode steps; any other step goes to ``prefill``."""

    def __init__(self, prefill: AttentionBackend, device: torch.device) -> None:
        super().__init__(prefill)
        self._multiprocessors = torch.cuda.get_device_properties(device).multi_processor_count

    def decode(
        self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, kv: KVPool,
        metadata: DecodeMetadata, scale: float,
    ) -> torch.Tensor:
        rows, heads, head_dim = q.shape
        kv_heads = k_cache.shape[1]
        group = heads // kv_heads
        splits = num_splits(metadata.rows, kv_heads, self._multiprocessors)
        acc = torch.empty(rows, heads, splits, head_dim, dtype=torch.float32, device=q.device)
        split_max = torch.empty(rows, heads, splits, dtype=torch.float32, device=q.device)
        split_sum = torch.empty_like(split_max)
        _decode_split_kernel[(rows, kv_heads, splits)](
            q, k_cache, v_cache, metadata.block_tables, metadata.context_lens, acc, split_max, split_sum, scale,
            q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), metadata.block_tables.stride(0),
            GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim,
            PAGE=kv.block_size, BLOCK_N=BLOCK_N, SPLITS=splits,
        )
        out = torch.empty_like(q)
        _combine_kernel[(rows, heads)](
            acc, split_max, split_sum, out, out.stride(0), out.stride(1),
            HEAD_DIM=head_dim, SPLITS=splits, SPLITS_PAD=triton.next_power_of_2(splits),
        )
        return out
