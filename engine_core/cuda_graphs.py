"""CUDA graphs for decode steps.

Run eagerly, a decode step of a 4B model launches about a thousand small kernels, and the GPU
waits for Python to launch each one: about 50 ms per step whatever the batch size, where the
weights alone take 2 ms to read. A CUDA graph records those launches once and replays them with
one call. The price is static shapes and addresses: a graph always reads the same input tensors
and writes the same output tensor, so each step copies its inputs into them.

    batch of 5 decodes -> padded to 8 (a power of two, like the attention backend's padding)
    static input_ids  [ t0 t1 t2 t3 t4 | 0 0 0 ]        positions [ p0 .. p4 | 0 0 0 ]
    backend metadata  rows 0-4: the real block tables; rows 5-7: one token in the scratch block
    replay -> static logits [8, vocab]; rows 0-4 are returned

One graph is captured per padded batch size at start-up, largest first, sharing one memory pool.
Run eagerly (``--enforce-eager``, or a batch larger than any graph), a decode step goes through
the same padded static tensors, so both paths run the same kernels on the same shapes and give
the same tokens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from .attention import AttentionBackend, BatchLayout
from .attention.paged_decode import padded_batch_size
from .kv_cache import KVPool
from .transfer import pinned

log = logging.getLogger(__name__)

# (input_ids [1, rows], position_ids [1, rows], backend metadata) -> logits [rows, vocab]
DecodeForward = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


class _Graph:
    """The static inputs of one padded batch size, and the graph once captured."""

    def __init__(self, rows: int, metadata: Any, device: torch.device) -> None:
        self.rows = rows
        self.metadata = metadata
        self.input_ids = torch.zeros(1, rows, dtype=torch.long, device=device)
        self.positions = torch.zeros(1, rows, dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None


class DecodeGraphs:
    """Padded decode steps: replayed graphs once captured, else run eagerly."""

    def __init__(self, forward: DecodeForward, backend: AttentionBackend, kv: KVPool) -> None:
        if not backend.supports_cuda_graphs:
            raise ValueError(f"the {type(backend).__name__} attention backend cannot run in a CUDA graph")
        self.forward = forward
        self.backend = backend
        self.kv = kv
        self._graphs: dict[int, _Graph] = {}

    def capture(self, max_batch_size: int) -> None:
        """Capture every padded batch size up to ``max_batch_size``, logging progress."""
        device = self.kv.storage.device
        pool = torch.cuda.graph_pool_handle()
        sizes = [1 << i for i in range(padded_batch_size(max_batch_size).bit_length())][::-1]
        started = time.perf_counter()
        for done, rows in enumerate(sizes, 1):
            graph = self._static(rows)
            scratch = BatchLayout([1], [1], [[self.kv.scratch_block]], graph.positions[0, :1], self.kv.block_size)
            self._fill(graph, scratch, [0], [0])
            for _ in range(2):  # compiles the kernels of this shape, outside the capture
                self.forward(graph.input_ids, graph.positions, graph.metadata)
            torch.cuda.synchronize(device)
            graph.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph.graph, pool=pool):
                graph.logits = self.forward(graph.input_ids, graph.positions, graph.metadata)
            log.info("captured CUDA graph for decode batch size %d (%d/%d, %.1f s)",
                     rows, done, len(sizes), time.perf_counter() - started)

    def run(self, layout: BatchLayout, input_ids: list[int], positions: list[int]) -> torch.Tensor:
        """One decode step, padded; logits ``[batch, vocab]``.

        Replayed, the logits are a view of the graph's output: read them before the next step.
        """
        graph = self._static(padded_batch_size(len(input_ids)))
        self._fill(graph, layout, input_ids, positions)
        logits: torch.Tensor | None
        if graph.graph is None:
            logits = self.forward(graph.input_ids, graph.positions, graph.metadata)
        else:
            graph.graph.replay()
            logits = graph.logits
        assert logits is not None
        return logits[:len(input_ids)]

    def is_captured(self, batch_size: int) -> bool:
        graph = self._graphs.get(padded_batch_size(batch_size))
        return graph is not None and graph.graph is not None

    def _static(self, rows: int) -> _Graph:
        if rows not in self._graphs:
            self._graphs[rows] = _Graph(rows, self.backend.static_metadata(rows, self.kv), self.kv.storage.device)
        return self._graphs[rows]

    def _fill(self, graph: _Graph, layout: BatchLayout, input_ids: list[int], positions: list[int]) -> None:
        padding = [0] * (graph.rows - len(input_ids))
        host = pinned([input_ids + padding, positions + padding], torch.long, self.kv.storage.device)
        graph.input_ids.copy_(host[:1], non_blocking=True)
        graph.positions.copy_(host[1:], non_blocking=True)
        self.backend.fill(graph.metadata, layout, self.kv)
