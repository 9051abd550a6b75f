"""Padded decode steps (the path CUDA graphs replay), run eagerly on CPU, and the CUDA checks.

On CPU the padded path runs with the flex backend uncompiled over a small pool: every decode
step is padded to a power of two, padding rows write only the scratch block, and the tokens
equal the reference backend's. The CUDA tests (Triton kernel, graphs against eager) skip here.
"""

from __future__ import annotations

import pytest
import torch

from engine_core import Engine, EngineConfig, SamplingParams
from engine_core.attention import BatchLayout, create_backend
from engine_core.attention.flex_paged import FlexPagedBackend
from engine_core.attention.torch_ref import ReferenceBackend
from engine_core.kv_cache import KVPool
from engine_core.model_runner import ModelRunner

PROMPTS = [[5, 17, 29, 3, 11], [40, 41, 42] * 7, [9], [60 + i for i in range(33)], [2, 4, 6, 8, 10, 12]]
GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")


@pytest.fixture(scope="module")
def tiny_engine() -> Engine:
    return Engine(EngineConfig(model="random:tiny", kv_cache_bytes=1 << 20))


def test_padded_decode_matches_reference(tiny_engine: Engine) -> None:
    engine = tiny_engine
    expected = engine.generate(PROMPTS, GREEDY)
    reference_runner = engine.runner
    engine.kv.storage.zero_()
    engine.runner = ModelRunner(engine.model, engine.kv, FlexPagedBackend(ReferenceBackend(), compile=False),
                                engine.allocator)
    assert engine.runner.decode is not None
    try:
        got = engine.generate(PROMPTS, GREEDY)
        decode_sizes = sorted(engine.runner.decode._graphs)
    finally:
        engine.runner = reference_runner
        engine.model.set_attn_implementation("engine_paged")
    assert got == expected
    assert decode_sizes == [8]  # 5 sequences, padded to 8 for every decode step
    # Blocks the allocator never handed out hold nothing: padding rows wrote only the scratch block.
    used = sum(-(-(len(p) + GREEDY.max_tokens) // engine.block_size) for p in PROMPTS)
    assert used < engine.kv.num_blocks
    per_block = engine.kv.storage.view(2, engine.kv.num_layers, engine.kv.num_blocks + 1, engine.block_size, -1)
    written = per_block.abs().sum(dim=(0, 1, 3, 4)) > 0
    assert written[engine.kv.scratch_block]
    assert int(written[:-1].sum()) <= used


def test_allocator_fast_check_agrees_with_ref_counts(tiny_engine: Engine) -> None:
    allocator = tiny_engine.allocator
    blocks = allocator.allocate(3)
    try:
        assert allocator.all_allocated(blocks) and allocator.all_allocated(blocks[:1]) and allocator.all_allocated([])
        free_block = next(b for b in range(allocator.num_blocks) if allocator.ref_count(b) == 0)
        assert not allocator.all_allocated(blocks + [free_block])
        assert not allocator.all_allocated([-1]) and not allocator.all_allocated([allocator.num_blocks])
        assert not allocator.all_allocated([1.5])  # type: ignore[list-item]
    finally:
        allocator.free(blocks)


@needs_cuda
def test_triton_decode_matches_reference_on_cuda() -> None:
    device = torch.device("cuda")
    torch.manual_seed(0)
    pool = KVPool(1, 8, 128, 256, 16, torch.bfloat16, device)
    pool.storage.normal_()
    lens = [1, 16, 17, 700, 2000]
    tables, next_block = [], 0
    for n in lens:
        tables.append(list(range(next_block, next_block + -(-n // 16))))
        next_block += len(tables[-1])
    slots = [t[(n - 1) // 16] * 16 + (n - 1) % 16 for t, n in zip(tables, lens)]
    layout = BatchLayout([1] * len(lens), lens, tables, torch.tensor(slots, device=device), 16)
    q = torch.randn(len(lens), 32, 128, device=device, dtype=torch.bfloat16)
    k = torch.randn(len(lens), 8, 128, device=device, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    outs = []
    for name in ("torch_ref", "triton"):
        copy = KVPool(1, 8, 128, 256, 16, torch.bfloat16, device)
        copy.storage.copy_(pool.storage)
        backend = create_backend(name, device)
        outs.append(backend.forward(q, k, v, copy, 0, backend.prepare(layout, copy), 128**-0.5).float())
    assert ((outs[1] - outs[0]).norm() / outs[0].norm()).item() < 1e-2


@needs_cuda
def test_cuda_graphs_give_the_eager_tokens() -> None:
    results = []
    for graphs in (0, 8):
        engine = Engine(EngineConfig(model="random:qwen3-0.6b", kv_cache_bytes=1 << 30, cuda_graph_max_batch_size=graphs,
                                     compile=False))
        results.append(engine.generate(PROMPTS, GREEDY))
    assert results[0] == results[1]
