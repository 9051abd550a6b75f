"""Continuous batching (like the a1 reference) with a simple, correct prefix cache.

It exists so that the loop's prefix-cache counters, the copy-on-write check and the grader's
prefix-caching gates can be tested without a4's reference solution.

The cache maps a key per full, block-aligned block of a prompt to the block that holds its KV.
Keys are chained: a block's key hashes its tokens together with the previous block's key, so
it stands for every token before it, and equal keys mean equal KV (short of a 64-bit hash
collision, which a production cache rules out by also comparing the tokens). At admission a request
shares the cached blocks of its longest cached prefix (``allocator.share``), puts them first
in its block table and starts with ``num_computed_tokens`` past them; at least one prompt
token always runs, since the step must sample from the prompt's last position. When a request
finishes its full prompt blocks stay in the cache (the cache keeps one reference per block)
and the rest are freed. When the pool runs short, the least recently used cached blocks that
no live sequence shares are evicted. Blocks enter and leave the cache only as a whole request's
prefix, never written again: every later write lands past the shared blocks.
"""

from __future__ import annotations

from collections import OrderedDict

from engine_core.scheduler import ScheduledSeq, SchedulerContext, Sequence
from solutions.a1.scheduler import ContinuousBatchingScheduler


def block_keys(tokens: list[int], num_blocks: int, block_size: int) -> list[int]:
    """Chained keys of the first ``num_blocks`` full blocks of ``tokens``."""
    keys, parent = [], 0
    for index in range(num_blocks):
        parent = hash((parent, tuple(tokens[index * block_size:(index + 1) * block_size])))
        keys.append(parent)
    return keys


class PrefixCacheScheduler(ContinuousBatchingScheduler):
    """a1's queues and ``add``; admission through the cache; ``finish`` keeps prompt blocks."""

    def __init__(self, ctx: SchedulerContext) -> None:
        super().__init__(ctx)
        # key -> block, least recently used first; the cache holds one reference to each block.
        self.cache: OrderedDict[int, int] = OrderedDict()

    def schedule(self) -> list[ScheduledSeq]:
        plan: list[ScheduledSeq] = []
        budget = self.ctx.max_num_batched_tokens
        for seq in self.running:
            n = min(seq.num_uncomputed_tokens, budget)
            if n > 0:
                plan.append(ScheduledSeq(seq, n))
                budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.ctx.max_num_seqs:
            seq = self.waiting[0]
            if not self._admit(seq, budget, first_in_plan=not plan):
                break  # first come, first served: later requests do not overtake the oldest
            self.waiting.popleft()
            self.running.append(seq)
            n = min(seq.num_uncomputed_tokens, budget)
            plan.append(ScheduledSeq(seq, n))
            budget -= n
        return plan

    def finish(self, seq: Sequence) -> None:
        """Keep the full prompt blocks whose KV was computed in the cache; free the rest."""
        num_full = min(seq.num_prompt_tokens, seq.num_computed_tokens) // self.ctx.block_size
        keys = block_keys(seq.prompt_ids, num_full, self.ctx.block_size)
        to_free = seq.block_table[num_full:]
        # Deepest block first, so that it is evicted before the blocks its key depends on.
        for key, block in reversed(list(zip(keys, seq.block_table))):
            if key in self.cache:
                self.cache.move_to_end(key)
                to_free.append(block)  # the cache has its own reference (to this block or an equal one)
            else:
                self.cache[key] = block  # the sequence's reference becomes the cache's
        seq.block_table = to_free
        super().finish(seq)  # forgets the sequence and frees what is left in its table

    def held_blocks(self) -> list[int]:
        return list(self.cache.values())

    def _admit(self, seq: Sequence, budget: int, first_in_plan: bool) -> bool:
        """Give ``seq`` its cached prefix and fresh blocks for the rest, if they fit in this step."""
        hits = self._cached_prefix(seq)
        hits = hits[:self._num_reusable(seq, len(hits))]
        num_computed = min(len(hits) * self.ctx.block_size, seq.num_prompt_tokens - 1)
        # A prompt longer than the whole budget runs alone, a budget's worth per step.
        if seq.num_tokens - num_computed > budget and not first_in_plan:
            return False
        self.ctx.allocator.share(hits)  # before evicting, so that eviction cannot take them
        missing = self.ctx.blocks_needed(seq.max_num_tokens) - len(hits)
        if not self._evict_until_free(missing):
            self.ctx.allocator.free(hits)
            return False
        seq.block_table = hits + self.ctx.allocator.allocate(missing)
        seq.num_computed_tokens = num_computed
        return True

    def _cached_prefix(self, seq: Sequence) -> list[int]:
        """The cached blocks of ``seq``'s longest cached prefix of full prompt blocks, marked as just used."""
        keys = block_keys(seq.prompt_ids, seq.num_prompt_tokens // self.ctx.block_size, self.ctx.block_size)
        hit_keys = []
        for key in keys:
            if key not in self.cache:
                break
            hit_keys.append(key)
        for key in reversed(hit_keys):  # deepest first, as in finish
            self.cache.move_to_end(key)
        return [self.cache[key] for key in hit_keys]

    def _num_reusable(self, seq: Sequence, num_hits: int) -> int:
        """How many cached blocks ``seq`` may use: never all of its prompt, whose last token must run."""
        return min(num_hits, (seq.num_prompt_tokens - 1) // self.ctx.block_size)

    def _evict_until_free(self, num_blocks: int) -> bool:
        """Evict least recently used cached blocks that no sequence shares until ``num_blocks`` are free."""
        allocator = self.ctx.allocator
        for key, block in list(self.cache.items()):
            if allocator.num_free >= num_blocks:
                break
            if allocator.ref_count(block) == 1:
                del self.cache[key]
                allocator.free([block])
        return allocator.num_free >= num_blocks
