"""One ragged forward over a packed batch of sequences.

The transformers model runs unchanged on a flat batch of shape ``[1, T]``: the new tokens of
every sequence one after the other, each at its own position. Its attention layers go to
:func:`~engine_core.attention.base.paged_attention`, which reads and writes the paged KV pool
through each sequence's block table. Logits are computed only for the rows asked for.

    item A: prompt of 4 tokens, start 0   item B: 1 decode token at 36   item C: chunk of 2 at 7
    input_ids    [ a0 a1 a2 a3 | b36 | c7 c8 ]
    position_ids [  0  1  2  3 |  36 |  7  8 ]
    logits for   [          a3 | b36 |    c8 ]     (num_logits 1 each; 0 = none, k = the last k)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AttentionInterface, PreTrainedModel

from .attention import AttentionBackend, BatchLayout, StepContext, paged_attention
from .block_allocator import BlockAllocator, blocks_for
from .cuda_graphs import DecodeGraphs
from .kv_cache import KVPool
from .transfer import to_device

ATTENTION_NAME = "engine_paged"  # a plain name: transformers gives special treatment to others
AttentionInterface.register(ATTENTION_NAME, paged_attention)


@dataclass(frozen=True)
class ForwardItem:
    """One sequence's part of a step.

    tokens: the new tokens to run (a prompt, a chunk of one, one decode token, or draft tokens).
    start: position of ``tokens[0]``; positions ``0 .. start-1`` must already be in the KV pool.
    block_table: the sequence's blocks; must cover positions ``0 .. start + len(tokens) - 1``.
    num_logits: return logits for the last ``num_logits`` new tokens (0: none, e.g. a
        prefill chunk that does not reach the end of the prompt).
    """

    tokens: list[int]
    start: int
    block_table: list[int]
    num_logits: int = 1


class InvariantError(RuntimeError):
    """A batch that would corrupt the KV pool; the message says which item and why."""


class ModelRunner:
    """Packs items, runs the model once, returns the requested logits."""

    def __init__(
        self, model: PreTrainedModel, kv: KVPool, backend: AttentionBackend,
        allocator: BlockAllocator | None = None, compile_decode: bool = False,
    ) -> None:
        model.set_attn_implementation(ATTENTION_NAME)
        self.model = model
        # Decode steps only: their shapes are few (padded batch sizes); prefills' are not.
        self.decode_model: Callable[..., Any] = model
        if compile_decode:
            # Each engine in a process adds compiled variants (tests and benchmarks make several);
            # past dynamo's default limit of 8 it would quietly fall back to slow eager code.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            # Coordinate-descent tuning of the generated kernels' launch settings: measured on an
            # H200 (random:qwen3-4b), a batch-1 decode step fell from 4.43 to 3.79 ms; batch 32 and 64
            # were unchanged, and start-up takes about 30 s longer.
            self.decode_model = torch.compile(model, options={"coordinate_descent_tuning": True})
        self.kv = kv
        self.backend = backend
        self.allocator = allocator  # when given, every block table is checked against it
        self.device = next(model.parameters()).device
        # Backends that can run decode in a CUDA graph take decode steps padded to static shapes.
        self.decode: DecodeGraphs | None = None
        if backend.supports_cuda_graphs:
            self.decode = DecodeGraphs(self._decode_forward, backend, kv)

    @torch.inference_mode()
    def capture_cuda_graphs(self, max_batch_size: int) -> None:
        """From now on, decode steps of up to ``max_batch_size`` sequences replay CUDA graphs."""
        if self.decode is None:
            raise ValueError(f"the {type(self.backend).__name__} attention backend cannot run in a CUDA graph")
        self.decode.capture(max_batch_size)

    @torch.inference_mode()
    def forward(self, items: list[ForwardItem]) -> torch.Tensor:
        """Logits ``[sum(num_logits), vocab]``, in item order."""
        if not items:
            raise ValueError("a forward needs at least one item")
        if self.allocator is not None:
            for index, item in enumerate(items):
                self._check(index, item)
        bs = self.kv.block_size
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        keep: list[int] = []
        for item in items:
            span = range(item.start, item.start + len(item.tokens))
            input_ids.extend(item.tokens)
            positions.extend(span)
            slots.extend(item.block_table[p // bs] * bs + p % bs for p in span)
            keep.extend(range(len(positions) - item.num_logits, len(positions)))
        # One new token and one logit per sequence: a decode step, padded to a static shape.
        padded_decode = self.decode is not None and len(keep) == len(items) == len(input_ids)
        layout = BatchLayout(
            query_lens=[len(item.tokens) for item in items],
            context_lens=[item.start + len(item.tokens) for item in items],
            block_tables=[item.block_table for item in items],
            # A padded decode step computes its own slots (DecodeRows); anything else needs them here.
            slot_mapping=torch.empty(0, dtype=torch.long) if padded_decode else self._tensor(slots),
            block_size=bs,
        )
        if padded_decode:
            assert self.decode is not None
            return self.decode.run(layout, input_ids, positions)
        step = StepContext(self.backend, self.kv, self.backend.prepare(layout, self.kv))
        out = self.model(
            input_ids=self._tensor(input_ids)[None],
            position_ids=self._tensor(positions)[None],
            use_cache=False,
            logits_to_keep=self._tensor(keep),
            engine_step=step,
        )
        return out.logits[0]

    def _decode_forward(self, input_ids: torch.Tensor, positions: torch.Tensor, metadata: object) -> torch.Tensor:
        """A decode step over static tensors: what a CUDA graph captures."""
        step = StepContext(self.backend, self.kv, metadata)
        out = self.decode_model(input_ids=input_ids, position_ids=positions, use_cache=False, logits_to_keep=0,
                                engine_step=step)
        return out.logits[0]

    def _tensor(self, values: list[int]) -> torch.Tensor:
        return to_device(values, torch.long, self.device)

    def _check(self, index: int, item: ForwardItem) -> None:
        assert self.allocator is not None
        end = item.start + len(item.tokens)
        where = f"forward item {index} (positions {item.start}..{end - 1})"
        if not item.tokens:
            raise InvariantError(f"{where} has no tokens; leave the sequence out of this step instead")
        if item.start < 0 or not 0 <= item.num_logits <= len(item.tokens):
            raise InvariantError(f"{where}: start must be >= 0 and num_logits within 0..{len(item.tokens)}")
        needed = blocks_for(end, self.kv.block_size)
        if len(item.block_table) < needed:
            raise InvariantError(
                f"{where} needs {needed} KV blocks of {self.kv.block_size} tokens but its block table has "
                f"{len(item.block_table)}: its KV would be written outside its blocks; allocate blocks first"
            )
        if self.allocator.all_allocated(item.block_table[:needed]):
            return
        for block in item.block_table[:needed]:
            if not (isinstance(block, int) and 0 <= block < self.kv.num_blocks) or self.allocator.ref_count(block) == 0:
                raise InvariantError(f"{where} uses KV block {block!r}, which is not allocated")
