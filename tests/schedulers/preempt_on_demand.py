"""A small a2-like scheduler: blocks on demand, and preemption when a decode cannot get one.

It exists so that the loop's preemption counter, recompute after preemption and the grader's
preemption gates can be tested without a2's reference solution. Each step it

1. decodes the running sequences, oldest first, allocating a block only when a sequence's next
   token crosses into a new one; when none is free it preempts the newest running sequence (frees
   its blocks, sets ``num_computed_tokens = 0`` and status WAITING, and puts it at the front of
   the waiting queue, to be recomputed from prompt + output so far), and
2. admits waiting sequences, oldest first, while their uncomputed tokens fit in free blocks.

Decodes are planned oldest first and the victim is the newest, so a victim is never already in
this step's plan: it is either the sequence being planned or one not reached yet.
"""

from __future__ import annotations

from engine_core.scheduler import ScheduledSeq, Sequence, SequenceStatus
from solutions.a1.scheduler import ContinuousBatchingScheduler


class PreemptOnDemandScheduler(ContinuousBatchingScheduler):
    """a1's queues, ``add`` and ``finish``; its own ``schedule``. ``running`` is in order of admission."""

    def schedule(self) -> list[ScheduledSeq]:
        plan: list[ScheduledSeq] = []
        budget = self.ctx.max_num_batched_tokens
        for seq in list(self.running):
            if seq not in self.running:
                continue  # preempted this step to make room for an older sequence
            n = min(seq.num_uncomputed_tokens, budget)
            if n > 0 and self._make_room(seq, seq.num_computed_tokens + n):
                plan.append(self._entry(seq, n, budget))
                budget -= n + len(plan[-1].draft_tokens)
        while self.waiting and budget > 0 and len(self.running) < self.ctx.max_num_seqs:
            seq = self.waiting[0]
            n = min(seq.num_uncomputed_tokens, budget)
            if (n < seq.num_uncomputed_tokens and plan) or not self._grow(seq, n):
                break  # first come, first served: later requests do not overtake the oldest
            self.waiting.popleft()
            self.running.append(seq)
            plan.append(ScheduledSeq(seq, n))
            budget -= n
        return plan

    def _entry(self, seq: Sequence, n: int, budget: int) -> ScheduledSeq:
        """This step's entry for a running sequence whose blocks cover its ``n`` tokens."""
        return ScheduledSeq(seq, n)

    def _make_room(self, seq: Sequence, num_positions: int) -> bool:
        """Blocks for ``seq``'s first ``num_positions`` positions, preempting the newest until they fit.

        False when ``seq`` itself had to be preempted.
        """
        while not self._grow(seq, num_positions):
            victim = self.running[-1]
            self._preempt(victim)
            if victim is seq:
                return False
        return True

    def _grow(self, seq: Sequence, num_positions: int) -> bool:
        """Extend ``seq``'s block table to cover ``num_positions`` positions, if the blocks are free."""
        missing = self.ctx.blocks_needed(num_positions) - len(seq.block_table)
        if missing > self.ctx.allocator.num_free:
            return False
        if missing > 0:
            seq.block_table += self.ctx.allocator.allocate(missing)
        return True

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.ctx.allocator.free(seq.block_table)
        seq.block_table = []
        seq.num_computed_tokens = 0  # recomputed later from prompt + output so far
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
