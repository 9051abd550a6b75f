"""The a4 reference scheduler, except that it evicts cached blocks whether or not a sequence holds them.

It counts every cached block as one it can evict, and evicts the least recently used ones
without looking at their holders. Evicting a block that a running sequence shares drops only
the cache's reference: no block comes free, the prefix is lost to later requests, and a
scheduler that counted on the room fails to allocate (OutOfBlocksError). The public test on
eviction only needs blocks that nobody holds, so it passes them all; the hidden test where the
pool runs short while the cached blocks are in use catches it.
"""

from __future__ import annotations

from solutions.a4.scheduler import PrefixCachingScheduler


class EvictsHeldBlocksScheduler(PrefixCachingScheduler):
    def _num_evictable(self) -> int:
        return len(self.cache)  # the mistake: blocks that sequences hold count too

    def _evict(self, num_blocks: int) -> None:
        while self.ctx.allocator.num_free < num_blocks and self.cache:
            _, block = self.cache.popitem(last=False)  # the mistake: its holders are not checked
            self.ctx.allocator.free([block])
