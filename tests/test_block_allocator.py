"""BlockAllocator: ids, counts, all-or-nothing allocation, ref-counted sharing and misuse errors."""

from __future__ import annotations

from typing import Any

import pytest

from engine_core.block_allocator import BlockAllocator, BlockAllocatorError, OutOfBlocksError


def test_allocate_returns_distinct_valid_ids_and_updates_counts() -> None:
    alloc = BlockAllocator(10)
    assert (alloc.num_free, alloc.num_used) == (10, 0)

    first = alloc.allocate(3)
    second = alloc.allocate(4)
    assert len(first) == 3 and len(second) == 4
    ids = first + second
    assert len(set(ids)) == 7
    assert all(0 <= b < 10 for b in ids)
    assert all(alloc.ref_count(b) == 1 for b in ids)
    assert (alloc.num_free, alloc.num_used) == (3, 7)


def test_allocate_zero_returns_nothing() -> None:
    alloc = BlockAllocator(4)
    assert alloc.allocate(0) == []
    assert alloc.num_free == 4


def test_allocate_whole_pool_then_exhaustion() -> None:
    alloc = BlockAllocator(5)
    assert sorted(alloc.allocate(5)) == [0, 1, 2, 3, 4]
    assert alloc.num_free == 0
    with pytest.raises(OutOfBlocksError):
        alloc.allocate(1)


def test_exhaustion_raises_and_takes_nothing() -> None:
    alloc = BlockAllocator(8)
    held = alloc.allocate(5)
    with pytest.raises(OutOfBlocksError):
        alloc.allocate(4)
    assert (alloc.num_free, alloc.num_used) == (3, 5)
    # The three remaining blocks are still all there and are exactly the ones not held.
    rest = alloc.allocate(3)
    assert set(rest) | set(held) == set(range(8))
    assert set(rest).isdisjoint(held)


def test_out_of_blocks_is_a_block_allocator_error() -> None:
    assert issubclass(OutOfBlocksError, BlockAllocatorError)


def test_negative_allocation_raises_value_error() -> None:
    alloc = BlockAllocator(4)
    with pytest.raises(ValueError):
        alloc.allocate(-1)
    assert alloc.num_free == 4


def test_free_returns_blocks_to_the_pool() -> None:
    alloc = BlockAllocator(6)
    blocks = alloc.allocate(4)
    alloc.free(blocks[:2])
    assert (alloc.num_free, alloc.num_used) == (4, 2)
    assert all(alloc.ref_count(b) == 0 for b in blocks[:2])
    assert all(alloc.ref_count(b) == 1 for b in blocks[2:])
    alloc.free(blocks[2:])
    assert (alloc.num_free, alloc.num_used) == (6, 0)
    # Freed blocks can be handed out again.
    assert sorted(alloc.allocate(6)) == list(range(6))


def test_double_free_raises_with_block_id_in_message() -> None:
    alloc = BlockAllocator(16)
    alloc.allocate(13)
    block = 12
    alloc.free([block])
    with pytest.raises(BlockAllocatorError, match=r"\b12\b") as info:
        alloc.free([block])
    assert not isinstance(info.value, OutOfBlocksError)
    assert alloc.ref_count(block) == 0
    assert alloc.num_free == 4


def test_freeing_never_allocated_block_raises() -> None:
    alloc = BlockAllocator(4)
    with pytest.raises(BlockAllocatorError, match=r"\b3\b"):
        alloc.free([3])
    assert alloc.num_free == 4


def test_same_block_twice_in_one_free_with_one_holder_raises_and_changes_nothing() -> None:
    alloc = BlockAllocator(6)
    a, b, c = alloc.allocate(3)
    with pytest.raises(BlockAllocatorError, match=rf"\b{b}\b"):
        alloc.free([a, b, c, b])
    # All-or-nothing: a and c were not dropped either.
    assert [alloc.ref_count(x) for x in (a, b, c)] == [1, 1, 1]
    assert (alloc.num_free, alloc.num_used) == (3, 3)


def test_same_block_twice_in_one_free_with_two_holders_frees_it() -> None:
    alloc = BlockAllocator(4)
    (block,) = alloc.allocate(1)
    alloc.share([block])
    alloc.free([block, block])
    assert alloc.ref_count(block) == 0
    assert alloc.num_free == 4


def test_share_increments_ref_count_and_last_holder_frees() -> None:
    alloc = BlockAllocator(5)
    x, y = alloc.allocate(2)
    alloc.share([x])
    alloc.share([x])
    assert alloc.ref_count(x) == 3
    assert alloc.ref_count(y) == 1
    assert alloc.num_used == 2  # sharing takes no new blocks

    alloc.free([x, y])
    assert alloc.ref_count(x) == 2
    assert alloc.ref_count(y) == 0
    assert alloc.num_free == 4
    alloc.free([x])
    assert alloc.ref_count(x) == 1
    assert alloc.num_free == 4  # still held once
    alloc.free([x])
    assert alloc.ref_count(x) == 0
    assert alloc.num_free == 5
    with pytest.raises(BlockAllocatorError):
        alloc.free([x])


def test_share_same_block_twice_in_one_call_adds_two_holders() -> None:
    alloc = BlockAllocator(3)
    (block,) = alloc.allocate(1)
    alloc.share([block, block])
    assert alloc.ref_count(block) == 3


def test_sharing_a_free_block_raises_and_changes_nothing() -> None:
    alloc = BlockAllocator(4)
    held = alloc.allocate(2)
    free_block = next(b for b in range(4) if b not in held)
    with pytest.raises(BlockAllocatorError, match=rf"\b{free_block}\b"):
        alloc.share([held[0], free_block])
    # The valid block in the same call did not gain a holder.
    assert alloc.ref_count(held[0]) == 1
    assert alloc.ref_count(free_block) == 0
    assert alloc.num_free == 2


def test_sharing_a_block_after_it_was_freed_raises() -> None:
    alloc = BlockAllocator(2)
    (block,) = alloc.allocate(1)
    alloc.free([block])
    with pytest.raises(BlockAllocatorError):
        alloc.share([block])


FOREIGN_IDS: list[Any] = [-1, 8, 9, 1000, True, False, "1", 1.0, None]


@pytest.mark.parametrize("bad", FOREIGN_IDS, ids=repr)
def test_foreign_ids_raise_on_free(bad: Any) -> None:
    alloc = BlockAllocator(8)
    held = alloc.allocate(8)
    with pytest.raises(BlockAllocatorError):
        alloc.free([bad])
    assert alloc.num_used == 8
    assert all(alloc.ref_count(b) == 1 for b in held)


@pytest.mark.parametrize("bad", FOREIGN_IDS, ids=repr)
def test_foreign_ids_raise_on_share(bad: Any) -> None:
    alloc = BlockAllocator(8)
    held = alloc.allocate(8)
    with pytest.raises(BlockAllocatorError):
        alloc.share([held[0], bad])
    assert alloc.ref_count(held[0]) == 1


@pytest.mark.parametrize("bad", FOREIGN_IDS, ids=repr)
def test_foreign_ids_raise_on_ref_count(bad: Any) -> None:
    alloc = BlockAllocator(8)
    alloc.allocate(8)
    with pytest.raises(BlockAllocatorError):
        alloc.ref_count(bad)


def test_foreign_id_in_free_does_not_drop_valid_blocks_of_the_same_call() -> None:
    alloc = BlockAllocator(4)
    a, b = alloc.allocate(2)
    with pytest.raises(BlockAllocatorError):
        alloc.free([a, b, 4])
    assert alloc.ref_count(a) == 1 and alloc.ref_count(b) == 1
    assert alloc.num_free == 2


@pytest.mark.parametrize("num_blocks", [0, -1, -100])
def test_non_positive_pool_size_raises_value_error(num_blocks: int) -> None:
    with pytest.raises(ValueError):
        BlockAllocator(num_blocks)


def test_single_block_pool() -> None:
    alloc = BlockAllocator(1)
    assert alloc.allocate(1) == [0]
    with pytest.raises(OutOfBlocksError):
        alloc.allocate(1)
    alloc.free([0])
    assert alloc.allocate(1) == [0]


@pytest.mark.parametrize(("tokens", "blocks"), [(0, 0), (1, 1), (16, 1), (17, 2), (32, 2), (33, 3)])
def test_blocks_for_rounds_up(tokens: int, blocks: int) -> None:
    from engine_core.block_allocator import blocks_for

    assert blocks_for(tokens, 16) == blocks


def test_the_block_count_is_computed_in_one_place() -> None:
    # One source for the fact: a second ceiling division drifts from it (a table one block short
    # writes KV outside its blocks). The engine, the backends, the grader and the tools call blocks_for.
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    files = sorted(p for package in ("engine_core", "autograder", "benchmark") for p in (root / package).rglob("*.py"))
    copies = [f"{path.relative_to(root)}:{number}" for path in files
              for number, line in enumerate(path.read_text().splitlines(), 1) if re.search(r"-\(-", line)]
    assert copies == ["engine_core/block_allocator.py:34"], copies
