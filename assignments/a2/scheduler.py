"""a2: paged memory, blocks on demand, preemption by recompute.

a1 reserved KV blocks for a request's prompt + ``max_tokens`` at admission. Most requests stop
long before ``max_tokens``, so most of that reservation was never written, and requests that
could have run waited for it. PagedAttention (vLLM) allocates instead as a sequence grows:

1. a request is admitted with blocks for its prompt only, and only while the free blocks left
   after it stay at or above a *watermark* (a small fraction of the pool kept back so that the
   running decodes have room to grow);
2. a running sequence gets a new block only when its next token crosses into one;
3. when a decode cannot get a block, the newest running sequence is *preempted*: its blocks are
   freed, ``num_computed_tokens`` goes back to 0 and it waits at the front of the queue, to be
   recomputed later from its prompt + the output it already has (no token is lost).

Everything else is a1: first come first served, ``max_num_seqs``, the token budget, a prompt
longer than the budget running alone a budget at a time.
"""

from __future__ import annotations

from collections import deque

from engine_core.scheduler import (
    RequestRejected, ScheduledSeq, Scheduler, SchedulerContext, Sequence, SequenceStatus,
)


class PagedScheduler(Scheduler):
    # Free blocks that admission leaves for running decodes to grow into, as a fraction of the pool.
    # Too low: new requests take the blocks that decodes need next, and they preempt each other;
    # too high: blocks sit idle while requests wait.
    WATERMARK = 0.05

    def __init__(self, ctx: SchedulerContext) -> None:
        super().__init__(ctx)
        self.waiting: deque[Sequence] = deque()
        # In order of arrival, so the newest is last: admission is first come first served and a
        # preempted sequence goes back to the front of the queue.
        self.running: list[Sequence] = []
        self.watermark_blocks = max(1, int(self.WATERMARK * ctx.allocator.num_blocks))

    def add(self, seq: Sequence) -> None:
        """Queue a new request behind the ones already waiting (if it can ever fit in the pool)."""
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
            # A prompt longer than the whole budget runs alone, a budget's worth per step.
            fits = seq.num_uncomputed_tokens <= budget or not plan
            n = min(seq.num_uncomputed_tokens, budget)
            if not fits or not self._can_admit(seq, n):
                break  # first come, first served: later requests do not overtake the oldest
            self.waiting.popleft()
            self._allocate(seq, n)
            self.running.append(seq)
            plan.append(ScheduledSeq(seq, n))
            budget -= n
        return plan

    def finish(self, seq: Sequence) -> None:
        """Forget a finished (or aborted) sequence and free its blocks."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.ctx.allocator.free(seq.block_table)
        seq.block_table = []

    def _check_fits(self, seq: Sequence) -> None:
        """Raise RequestRejected if ``seq``'s prompt + max_tokens needs more blocks than the whole pool."""
        # YOUR CODE HERE
        raise NotImplementedError("a2: PagedScheduler._check_fits: raise RequestRejected if ``seq``'s prompt + max_tokens needs more blocks than the whole pool (see the a2 handout)")

    def _blocks_missing(self, seq: Sequence, n: int) -> int:
        """How many more blocks ``seq`` needs to write its next ``n`` tokens."""
        # YOUR CODE HERE
        raise NotImplementedError("a2: PagedScheduler._blocks_missing: how many more blocks ``seq`` needs to write its next ``n`` tokens (see the a2 handout)")

    def _allocate(self, seq: Sequence, n: int) -> None:
        """Add to ``seq``'s block table the blocks its next ``n`` tokens need (they are free)."""
        # YOUR CODE HERE
        raise NotImplementedError("a2: PagedScheduler._allocate: add to ``seq``'s block table the blocks its next ``n`` tokens need (they are free) (see the a2 handout)")

    def _can_admit(self, seq: Sequence, n: int) -> bool:
        """Whether a waiting ``seq`` may start with ``n`` tokens: its blocks leave the watermark free."""
        # YOUR CODE HERE
        raise NotImplementedError("a2: PagedScheduler._can_admit: whether a waiting ``seq`` may start with ``n`` tokens: its blocks leave the watermark free (see the a2 handout)")

    def _make_room(self, seq: Sequence, n: int) -> bool:
        """Allocate ``seq``'s blocks for ``n`` tokens, preempting the newest running sequence until they fit.

        Returns False when ``seq`` itself was the newest and had to be preempted.
        """
        # YOUR CODE HERE
        raise NotImplementedError("a2: PagedScheduler._make_room: allocate ``seq``'s blocks for ``n`` tokens, preempting the newest running sequence until they fit (see the a2 handout)")

    def _preempt(self, seq: Sequence) -> None:
        """Free a running ``seq``'s blocks and queue it first, to be recomputed from prompt + output."""
        # YOUR CODE HERE
        raise NotImplementedError("a2: PagedScheduler._preempt: free a running ``seq``'s blocks and queue it first, to be recomputed from prompt + output (see the a2 handout)")
