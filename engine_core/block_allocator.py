"""A ref-counted allocator of KV blocks.

The KV pool is cut into ``num_blocks`` fixed-size blocks. A sequence owns a *block table*: the
list of block ids that hold its tokens, in order. The allocator only hands out ids and counts
references; it never touches the tensors.

Ref counts make sharing safe: two sequences with the same prompt prefix can list the same block
in their tables (``share`` adds a reference), and the block returns to the free list only when
the last holder frees it.

    allocate(n) -> [7, 2, 9]      ref 1 each        (all or nothing)
    share([7])                    ref(7) = 2        (a second holder)
    free([7, 2, 9])               ref(7) = 1; 2 and 9 are free again
    free([7])                     7 is free again
    free([7])                     BlockAllocatorError: double free

Every misuse raises :class:`BlockAllocatorError` with a message that names the block and what
went wrong, because in this course these calls come from a student's scheduler.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from operator import itemgetter


def blocks_for(num_tokens: int, block_size: int) -> int:
    """How many blocks of ``block_size`` hold ``num_tokens`` positions (the division, rounded up).

    The one place this is computed (a test checks): the engine, the scheduler context, the
    attention backends and the grader all ask here.
    """
    return -(-num_tokens // block_size)


class BlockAllocatorError(RuntimeError):
    """A block was freed twice, shared while free, or is not a block of this pool."""


class OutOfBlocksError(BlockAllocatorError):
    """More blocks were asked for than are free."""


class BlockAllocator:
    """Hands out block ids ``0 .. num_blocks-1`` and tracks how many holders each has."""

    def __init__(self, num_blocks: int) -> None:
        if num_blocks <= 0:
            raise ValueError(f"a KV pool needs at least one block, got {num_blocks}")
        self.num_blocks = num_blocks
        self.reset()

    def reset(self) -> None:
        """Forget every allocation: all blocks free (after a crashed scheduler, say)."""
        self._ref_counts = [0] * self.num_blocks
        self._free: deque[int] = deque(range(self.num_blocks))
        self._total_refs = 0

    @property
    def total_refs(self) -> int:
        """References held over all blocks (a block shared by two holders counts twice)."""
        return self._total_refs

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    def all_allocated(self, blocks: list[int]) -> bool:
        """True when every id in ``blocks`` is a block of this pool that someone holds.

        The fast path of the per-step invariant checks: a few tens of nanoseconds per block.
        """
        if not blocks:
            return True
        try:
            counts = itemgetter(*blocks)(self._ref_counts)
        except (IndexError, TypeError):
            return False
        if len(blocks) == 1:
            counts = (counts,)
        return min(blocks) >= 0 and 0 not in counts

    def ref_count(self, block: int) -> int:
        self._check_id(block)
        return self._ref_counts[block]

    def allocate(self, n: int) -> list[int]:
        """Take ``n`` free blocks (reference count 1 each), or raise and take none."""
        if n < 0:
            raise ValueError(f"cannot allocate a negative number of blocks ({n})")
        if n > len(self._free):
            raise OutOfBlocksError(
                f"asked for {n} KV blocks but only {len(self._free)} of {self.num_blocks} are free; "
                "check free blocks before allocating, and free the blocks of finished sequences"
            )
        blocks = [self._free.popleft() for _ in range(n)]
        for block in blocks:
            self._ref_counts[block] = 1
        self._total_refs += n
        return blocks

    def share(self, blocks: Iterable[int]) -> None:
        """Add one holder to each block; each must already be allocated."""
        blocks = list(blocks)
        for block in blocks:
            self._check_id(block)
            if self._ref_counts[block] == 0:
                raise BlockAllocatorError(f"cannot share KV block {block}: it is free (nobody holds it)")
        for block in blocks:
            self._ref_counts[block] += 1
        self._total_refs += len(blocks)

    def free(self, blocks: Iterable[int]) -> None:
        """Drop one holder from each block; a block with no holders left becomes free."""
        blocks = list(blocks)
        drops: dict[int, int] = {}
        for block in blocks:
            self._check_id(block)
            drops[block] = drops.get(block, 0) + 1
            if drops[block] > self._ref_counts[block]:
                raise BlockAllocatorError(
                    f"double free of KV block {block}: it has {self._ref_counts[block]} holder(s) "
                    f"but was freed {drops[block]} time(s) here"
                )
        for block in blocks:
            self._ref_counts[block] -= 1
            if self._ref_counts[block] == 0:
                self._free.append(block)
        self._total_refs -= len(blocks)

    def _check_id(self, block: int) -> None:
        if not isinstance(block, int) or isinstance(block, bool) or not 0 <= block < self.num_blocks:
            raise BlockAllocatorError(
                f"{block!r} is not a KV block id of this pool (valid ids are 0..{self.num_blocks - 1})"
            )
