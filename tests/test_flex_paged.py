"""The flex-attention paged decode backend against the reference backend (uncompiled, on CPU)."""

from __future__ import annotations

import torch

from engine_core.attention import AttentionBackend, BatchLayout, create_backend
from engine_core.attention.paged_decode import padded_batch_size
from engine_core.attention.flex_paged import FlexDecodeMetadata, FlexPagedBackend
from engine_core.attention.torch_ref import ReferenceBackend
from engine_core.kv_cache import KVPool

HEADS, KV_HEADS, DIM, BS = 4, 2, 16, 4


def _layout(shapes: list[tuple[int, int]], generator: torch.Generator, num_blocks: int) -> BatchLayout:
    """(cached, new) per sequence, each on its own randomly chosen blocks."""
    order = torch.randperm(num_blocks, generator=generator).tolist()
    tables, slots = [], []
    for cached, new in shapes:
        count = -(-(cached + new) // BS)
        table, order = order[:count], order[count:]
        tables.append(table)
        slots += [table[p // BS] * BS + p % BS for p in range(cached, cached + new)]
    return BatchLayout([n for _, n in shapes], [c + n for c, n in shapes], tables, torch.tensor(slots), BS)


def _backend(name: str) -> AttentionBackend:
    # Uncompiled, flex attention computes scores over the whole (small) pool: exact, and CPU-only.
    if name == "flex":
        return FlexPagedBackend(prefill=ReferenceBackend(), compile=False)
    return create_backend(name, torch.device("cpu"))


def _run(name: str, pool: KVPool, layout: BatchLayout, q, k, v) -> torch.Tensor:
    backend = _backend(name)
    return backend.forward(q, k, v, pool, 0, backend.prepare(layout, pool), DIM**-0.5)


def _pools(num_blocks: int, generator: torch.Generator) -> tuple[KVPool, KVPool]:
    a = KVPool(1, KV_HEADS, DIM, num_blocks, BS, torch.float32, torch.device("cpu"))
    a.storage.copy_(torch.randn(a.storage.shape, generator=generator))
    b = KVPool(1, KV_HEADS, DIM, num_blocks, BS, torch.float32, torch.device("cpu"))
    b.storage.copy_(a.storage)
    return a, b


def test_decode_matches_reference_and_writes_only_its_slots() -> None:
    g = torch.Generator().manual_seed(0)
    # Context lengths that end mid-block, exactly on a block boundary, and at 1; 5 rows pad to 8.
    shapes = [(10, 1), (7, 1), (0, 1), (30, 1), (3, 1)]
    ref_pool, flex_pool = _pools(40, g)
    layout = _layout(shapes, g, 40)
    q = torch.randn(len(shapes), HEADS, DIM, generator=g)
    k = torch.randn(len(shapes), KV_HEADS, DIM, generator=g)
    v = torch.randn(len(shapes), KV_HEADS, DIM, generator=g)
    ref = _run("torch_ref", ref_pool, layout, q, k, v)
    out = _run("flex", flex_pool, layout, q, k, v)
    assert out.shape == ref.shape
    assert ((out - ref).norm() / ref.norm()).item() < 1e-5
    assert torch.equal(flex_pool.storage, ref_pool.storage)


def test_other_steps_go_to_the_prefill_backend() -> None:
    g = torch.Generator().manual_seed(1)
    shapes = [(0, 9), (5, 1), (6, 3)]
    ref_pool, flex_pool = _pools(20, g)
    layout = _layout(shapes, g, 20)
    total = sum(n for _, n in shapes)
    q, k, v = (torch.randn(total, h, DIM, generator=g) for h in (HEADS, KV_HEADS, KV_HEADS))
    assert torch.equal(_run("flex", flex_pool, layout, q, k, v), _run("torch_ref", ref_pool, layout, q, k, v))


def test_padding_rows_point_at_the_scratch_block() -> None:
    g = torch.Generator().manual_seed(2)
    pool, _ = _pools(12, g)
    backend = _backend("flex")
    layout = _layout([(5, 1), (8, 1), (2, 1)], g, 12)
    metadata = backend.prepare(layout, pool)
    assert isinstance(metadata, FlexDecodeMetadata) and metadata.rows == padded_batch_size(3) == 4
    assert metadata.slot_mapping.tolist()[:3] == layout.slot_mapping.tolist()
    assert metadata.slot_mapping[3].item() == pool.scratch_slot
    assert metadata.full_blocks.tolist() == [1, 2, 0, 0]
    assert metadata.context_lens.tolist() == [6, 9, 3, 1]
    assert metadata.last_block[:, 0].tolist() == [t[-1] for t in layout.block_tables] + [pool.scratch_block]


def test_steps_reusing_one_backend_see_only_their_own_tables() -> None:
    # The host copy of the block tables is kept between steps and only rewritten where it
    # changed: tables that grow, rows that shift up when a sequence leaves, a row that a short
    # new sequence takes over, and a row that becomes padding. Every step pads to 4 rows.
    g = torch.Generator().manual_seed(3)
    ref_pool, flex_pool = _pools(60, g)
    flex, ref = _backend("flex"), _backend("torch_ref")
    long = list(range(6, 14))
    steps = [  # (context length, block table) per sequence
        [(10, [1, 2, 3]), (7, [4, 5]), (30, long), (2, [14])],
        [(11, [1, 2, 3]), (8, [4, 5]), (33, long + [15]), (3, [14])],
        [(9, [4, 5, 16]), (34, long + [15]), (4, [14])],
        [(1, [17]), (35, long + [15]), (5, [14, 18])],
    ]
    for step in steps:
        lens, tables = [n for n, _ in step], [t for _, t in step]
        slots = torch.tensor([t[(n - 1) // BS] * BS + (n - 1) % BS for n, t in step])
        layout = BatchLayout([1] * len(step), lens, tables, slots, BS)
        q, k, v = (torch.randn(len(step), h, DIM, generator=g) for h in (HEADS, KV_HEADS, KV_HEADS))
        metadata = flex.prepare(layout, flex_pool)
        width = -(-max(lens) // BS)
        scratch = flex_pool.scratch_block
        expected = [t + [scratch] * (width - len(t)) for t in tables] + [[scratch] * width] * (4 - len(step))
        assert metadata.block_tables[:, :width].tolist() == expected
        out = flex.forward(q, k, v, flex_pool, 0, metadata, DIM**-0.5)
        want = ref.forward(q, k, v, ref_pool, 0, ref.prepare(layout, ref_pool), DIM**-0.5)
        assert ((out - want).norm() / want.norm()).item() < 1e-5


def test_flex_needs_cuda() -> None:
    import pytest

    with pytest.raises(ValueError, match="needs a CUDA device"):
        create_backend("flex", torch.device("cpu"))
