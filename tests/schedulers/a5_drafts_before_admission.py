"""The a5 reference scheduler, except that each decode drafts as soon as it is planned.

Drafting right after a sequence's decode token, in a2's loop over the running sequences, looks
natural, but then drafts come before the real work of the step: an older sequence's drafts take
the free blocks and the budget that a newer sequence's decode (which must then preempt) or a
waiting prompt (which must then wait) needed. The public tests run in pools and budgets large
enough for everyone; the hidden tests on what drafts may take catch it.
"""

from __future__ import annotations

from engine_core.scheduler import ScheduledSeq
from solutions.a5.scheduler import SpeculativeScheduler


class DraftsBeforeAdmissionScheduler(SpeculativeScheduler):
    def schedule(self) -> list[ScheduledSeq]:
        plan: list[ScheduledSeq] = []
        budget = self.ctx.max_num_batched_tokens
        for seq in list(self.running):
            if seq not in self.running:
                continue
            n = min(seq.num_uncomputed_tokens, budget)
            if n > 0 and self._make_room(seq, n):
                entry = ScheduledSeq(seq, n)
                # The mistake: its drafts now, before the newer decodes and the waiting prompts.
                self._add_drafts([entry], budget - n)
                plan.append(entry)
                budget -= n + len(entry.draft_tokens)
        while self.waiting and budget > 0 and len(self.running) < self.ctx.max_num_seqs:
            seq = self.waiting[0]
            fits = seq.num_uncomputed_tokens <= budget or not plan
            n = min(seq.num_uncomputed_tokens, budget)
            if not fits or not self._can_admit(seq, n):
                break
            self.waiting.popleft()
            self._allocate(seq, n)
            self.running.append(seq)
            plan.append(ScheduledSeq(seq, n))
            budget -= n
        return plan
