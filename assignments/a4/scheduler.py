"""a4: prefix caching.

Many requests start with the same tokens: a system prompt, few-shot examples, a shared
document, the earlier turns of a chat. a2 computes that prefix's KV again for every request.
a4 keeps the KV blocks of full, block-aligned prompt prefixes in a cache and lets later requests
share them (SGLang's RadixAttention, vLLM's automatic prefix caching):

1. each full block of a prompt has a *key* that stands for its tokens and every token before
   it (chained hashes: a block's key hashes its tokens with the previous block's key);
2. at admission, a request looks up its blocks' keys in order, shares the cached blocks of its
   longest cached prefix (``allocator.share``), puts them first in its block table and starts
   with ``num_computed_tokens`` past them; at least one token always runs, since the step must
   sample from the last position;
3. as soon as a prompt is computed, and again when a request finishes, its full prompt blocks
   enter the cache, which keeps one reference of its own to each;
4. when the pool runs short, the least recently used cached blocks that no sequence holds are
   evicted (freed) before anyone is preempted.

Everything else is a2: blocks on demand, admission above a watermark, first come first served,
preemption of the newest by recompute (a preempted sequence finds its prompt in the cache when
it comes back).
"""

from __future__ import annotations

from collections import OrderedDict, deque

from engine_core.scheduler import (
    RequestRejected, ScheduledSeq, Scheduler, SchedulerContext, Sequence, SequenceStatus, StepResult,
)


class PrefixCachingScheduler(Scheduler):
    # Free blocks that admission leaves for running decodes to grow into, as a fraction of the pool.
    WATERMARK = 0.05

    def __init__(self, ctx: SchedulerContext) -> None:
        super().__init__(ctx)
        self.waiting: deque[Sequence] = deque()
        # In order of arrival, so the newest is last: admission is first come first served and a
        # preempted sequence goes back to the front of the queue.
        self.running: list[Sequence] = []
        self.watermark_blocks = max(1, int(self.WATERMARK * ctx.allocator.num_blocks))
        # The prefix cache: block key -> the block holding that prefix's KV, least recently used
        # first. The cache holds one reference of its own to each block (held_blocks reports them).
        self.cache: OrderedDict[int, int] = OrderedDict()

    def add(self, seq: Sequence) -> None:
        """Queue a new request behind the ones already waiting (if it can ever fit in the pool).

        Its cached prefix is looked up at admission, not here: the cache changes while it waits.
        """
        self._check_fits(seq)
        self.waiting.append(seq)

    def schedule(self) -> list[ScheduledSeq]:
        """Run every running sequence (preempting when blocks run out), then admit waiting ones."""
        plan: list[ScheduledSeq] = []
        budget = self.ctx.max_num_batched_tokens
        # Oldest first, and victims are taken from the newest end: a victim is never already in
        # the plan, it is the sequence being planned or one not reached yet.
        for seq in list(self.running):
            if seq not in self.running:
                continue  # preempted this step to make room for an older sequence
            n = min(seq.num_uncomputed_tokens, budget)
            if n > 0 and self._make_room(seq, n):
                plan.append(ScheduledSeq(seq, n))
                budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.ctx.max_num_seqs:
            seq = self.waiting[0]
            self._use_cached_prefix(seq)  # what is cached now; a cached prefix costs no budget
            # A prompt longer than the whole budget runs alone, a budget's worth per step.
            fits = seq.num_uncomputed_tokens <= budget or not plan
            n = min(seq.num_uncomputed_tokens, budget)
            if not fits or not self._can_admit(seq, n):
                self._release(seq)  # a waiting request holds no blocks, so that they can be evicted
                break  # first come, first served: later requests do not overtake the oldest
            self.waiting.popleft()
            self._allocate(seq, n)
            self.running.append(seq)
            plan.append(ScheduledSeq(seq, n))
            budget -= n
        return plan

    def on_step_done(self, results: list[StepResult]) -> None:
        """Cache the prompt blocks of each sequence whose prompt was computed in this step."""
        # YOUR CODE HERE
        raise NotImplementedError("a4: PrefixCachingScheduler.on_step_done: cache the prompt blocks of each sequence whose prompt was computed in this step (see the a4 handout)")

    def finish(self, seq: Sequence) -> None:
        """Forget a finished (or aborted) sequence: cache its full prompt blocks, free its own references."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self._cache_prompt(seq)
        self.ctx.allocator.free(seq.block_table)
        seq.block_table = []

    def held_blocks(self) -> list[int]:
        """The blocks the prefix cache holds a reference to, one entry per reference."""
        # YOUR CODE HERE
        raise NotImplementedError("a4: PrefixCachingScheduler.held_blocks: the blocks the prefix cache holds a reference to, one entry per reference (see the a4 handout)")

    # ---- the prefix cache (a4) -----------------------------------------------------------------

    def _block_keys(self, tokens: list[int], num_blocks: int) -> list[int]:
        """Chained keys of the first ``num_blocks`` full blocks of ``tokens``: each covers every token before it."""
        # YOUR CODE HERE
        raise NotImplementedError("a4: PrefixCachingScheduler._block_keys: chained keys of the first ``num_blocks`` full blocks of ``tokens``: each covers every token before it (see the a4 handout)")

    def _use_cached_prefix(self, seq: Sequence) -> None:
        """Share the cached blocks of ``seq``'s longest cached prompt prefix and start it past them.

        Called for a waiting sequence, which holds no blocks. At least one token must still run.
        """
        # YOUR CODE HERE
        raise NotImplementedError("a4: PrefixCachingScheduler._use_cached_prefix: share the cached blocks of ``seq``'s longest cached prompt prefix and start it past them (see the a4 handout)")

    def _release(self, seq: Sequence) -> None:
        """Give back the cached blocks a waiting ``seq`` shared, and its place past them: it waits with none."""
        # YOUR CODE HERE
        raise NotImplementedError("a4: PrefixCachingScheduler._release: give back the cached blocks a waiting ``seq`` shared, and its place past them: it waits with none (see the a4 handout)")

    def _cache_prompt(self, seq: Sequence) -> None:
        """Put ``seq``'s full prompt blocks whose KV is computed in the cache, each with a reference of its own."""
        # YOUR CODE HERE
        raise NotImplementedError("a4: PrefixCachingScheduler._cache_prompt: put ``seq``'s full prompt blocks whose KV is computed in the cache, each with a reference of its own (see the a4 handout)")

    def _touch(self, keys: list[int]) -> None:
        """Mark the cached ``keys`` (a prefix's, in order) as just used."""
        # YOUR CODE HERE
        raise NotImplementedError("a4: PrefixCachingScheduler._touch: mark the cached ``keys`` (a prefix's, in order) as just used (see the a4 handout)")

    def _num_evictable(self) -> int:
        """Cached blocks that no sequence holds: the cache's reference is their only one."""
        # YOUR CODE HERE
        raise NotImplementedError("a4: PrefixCachingScheduler._num_evictable: cached blocks that no sequence holds: the cache's reference is their only one (see the a4 handout)")

    def _evict(self, num_blocks: int) -> None:
        """Evict least recently used cached blocks that no sequence holds until ``num_blocks`` are free."""
        # YOUR CODE HERE
        raise NotImplementedError("a4: PrefixCachingScheduler._evict: evict least recently used cached blocks that no sequence holds until ``num_blocks`` are free (see the a4 handout)")

    # ---- paged memory (a2's reference) ---------------------------------------------------------

    def _can_free(self, num_blocks: int) -> bool:
        """Whether ``num_blocks`` blocks are free, or can be by evicting cached blocks that nobody holds."""
        free = self.ctx.allocator.num_free
        return num_blocks <= free or num_blocks <= free + self._num_evictable()

    def _check_fits(self, seq: Sequence) -> None:
        """Raise RequestRejected if ``seq``'s prompt + max_tokens needs more blocks than the whole pool."""
        needed = self.ctx.blocks_needed(seq.max_num_tokens)
        if needed > self.ctx.allocator.num_blocks:
            raise RequestRejected(
                f"request {seq.request_id!r} can never run: its {seq.num_prompt_tokens} prompt tokens + "
                f"{seq.params.max_tokens} max_tokens need {needed} KV blocks, but the pool has "
                f"{self.ctx.allocator.num_blocks}"
            )

    def _blocks_missing(self, seq: Sequence, n: int) -> int:
        """How many more blocks ``seq`` needs to write its next ``n`` tokens."""
        return self.ctx.blocks_needed(seq.num_computed_tokens + n) - len(seq.block_table)

    def _allocate(self, seq: Sequence, n: int) -> None:
        """Add to ``seq``'s block table the blocks its next ``n`` tokens need, evicting cached ones if short."""
        missing = self._blocks_missing(seq, n)
        self._evict(missing)
        seq.block_table += self.ctx.allocator.allocate(missing)

    def _can_admit(self, seq: Sequence, n: int) -> bool:
        """Whether a waiting ``seq`` may start with ``n`` tokens: its blocks leave the watermark free."""
        needed = self._blocks_missing(seq, n)
        # The watermark keeps room for running decodes; with none running, the whole pool is its.
        return self._can_free(needed + self.watermark_blocks) or (not self.running and self._can_free(needed))

    def _make_room(self, seq: Sequence, n: int) -> bool:
        """Allocate ``seq``'s blocks for ``n`` tokens, preempting the newest running sequence until they fit.

        Returns False when ``seq`` itself was the newest and had to be preempted.
        """
        while not self._can_free(self._blocks_missing(seq, n)):
            victim = self.running[-1]
            self._preempt(victim)
            if victim is seq:
                return False
        self._allocate(seq, n)
        return True

    def _preempt(self, seq: Sequence) -> None:
        """Free a running ``seq``'s blocks and queue it first, to be recomputed from prompt + output."""
        self.running.remove(seq)
        self.ctx.allocator.free(seq.block_table)  # its cached prompt blocks stay in the cache
        seq.block_table = []
        seq.num_computed_tokens = 0  # its KV is gone: prompt + output so far run again
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)  # before every request that arrived after it
