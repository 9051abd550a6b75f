### INSTRUCTOR ONLY: publishing skips this file; students write their own policy.
"""a5's graded extension, the reference: an SLO-aware policy on top of the a5 reference.

Instructor-only (it lives in ``solutions/`` and is never published). The grader runs its
``slo`` part only for a scheduler class that sets ``slo_aware = True``; this one does, so
``python -m autograder.grade a5 --impl solution --scheduler-module solutions.a5.slo_scheduler
--parts slo`` grades it.

The engine gives every request the same targets (``ctx.ttft_slo_ms``, ``ctx.tpot_slo_ms``);
a request's first-token deadline is its ``seq.arrival_time`` plus the TTFT target. a2's
first-come-first-served admission lets a long prompt at the head of the queue hold every
request behind it: it waits there until a step has room for all of it (a prompt longer than
the whole budget: until every running sequence has finished), and short requests that could
have made their deadline miss it. This policy admits by **slack** instead:

* slack = deadline - now - the time the prompt needs (its tokens times the seconds a prompt
  token has cost lately, measured on the steps that ran); the request with the least slack
  goes first (earliest deadline, corrected for size);
* a request that can no longer make its deadline (negative slack: a prompt that needs longer
  than the target, or one that waited too long) goes last, in order of arrival, so that it
  does not make others miss theirs as well; preempted sequences go first (they had their
  first token, and their TPOT suffers while they wait);
* a request that does not fit now is skipped, not waited for; a long prompt runs in chunks
  (``PREFILL_CHUNK`` tokens at most), so that it needs no empty step to start (it would starve
  behind the requests that go first) and no step lasts long: every request that arrives
  during a step waits for it;
* drafts only when no request waits: a verify costs compute on a CPU, and a waiting request's
  deadline is worth more than a running sequence's guesses.

With no TTFT target (``ctx.ttft_slo_ms == 0``) it is the a5 reference, unchanged.
"""

from __future__ import annotations

import time
from collections import deque

from engine_core.scheduler import ScheduledSeq, SchedulerContext, Sequence, StepResult

from .scheduler import SpeculativeScheduler


class SloScheduler(SpeculativeScheduler):
    slo_aware = True  # the opt-in: the grader's slo part grades only schedulers that set it
    # Seconds a prompt token costs before any step has been measured: an optimistic guess (the
    # bundled model's cost 2-5 ms on a shared 2-core CPU). Steps of at least MIN_MEASURED_TOKENS
    # tokens soon replace it (smaller ones cost mostly the step's fixed overhead, and would
    # overestimate a long prompt).
    INITIAL_TOKEN_SECONDS = 1e-3
    MIN_MEASURED_TOKENS = 128
    SMOOTHING = 0.3  # weight of the latest measured step in the running estimate
    # Most prompt tokens of one sequence per step (and at most ctx.chunked_prefill_size): every
    # request that arrives during a step waits for it, so a long prompt's chunks stay small.
    PREFILL_CHUNK = 256

    def __init__(self, ctx: SchedulerContext) -> None:
        super().__init__(ctx)
        self.token_seconds = self.INITIAL_TOKEN_SECONDS
        self._step_started = 0.0
        self._step_tokens = 0

    def schedule(self) -> list[ScheduledSeq]:
        """Run every running sequence, admit waiting ones by slack, then draft if nobody waits."""
        if not self.ctx.ttft_slo_ms:
            return super().schedule()
        now = time.monotonic()
        self.waiting = deque(sorted(self.waiting, key=lambda seq: self.urgency(seq, now)))
        plan: list[ScheduledSeq] = []
        budget = self.ctx.max_num_batched_tokens
        for seq in list(self.running):
            if seq in self.running and budget > 0:  # else preempted this step for an older sequence
                n = self._chunk(seq, budget)
                if self._make_room(seq, n):
                    plan.append(ScheduledSeq(seq, n))
                    budget -= n
        for seq in list(self.waiting):
            if budget <= 0 or len(self.running) >= self.ctx.max_num_seqs:
                break
            n = self._chunk(seq, budget)
            if not self._can_admit(seq, n):
                continue  # skipped, not waited for: a later, smaller request may fit
            self.waiting.remove(seq)
            self._allocate(seq, n)
            self.running.append(seq)
            plan.append(ScheduledSeq(seq, n))
            budget -= n
        if not self.waiting:
            self._add_drafts(plan, budget)
        self._step_started, self._step_tokens = now, sum(e.num_tokens + len(e.draft_tokens) for e in plan)
        return plan

    def on_step_done(self, results: list[StepResult]) -> None:
        """a5's bookkeeping, and the cost of a prompt token measured on this step."""
        super().on_step_done(results)
        if self.ctx.ttft_slo_ms and self._step_tokens >= self.MIN_MEASURED_TOKENS:
            measured = (time.monotonic() - self._step_started) / self._step_tokens
            self.token_seconds += self.SMOOTHING * (measured - self.token_seconds)

    def slack(self, seq: Sequence, now: float) -> float:
        """Seconds to spare before ``seq``'s first-token deadline once its prompt has run (negative: it misses)."""
        deadline = seq.arrival_time + self.ctx.ttft_slo_ms / 1000
        return deadline - now - seq.num_uncomputed_tokens * self.token_seconds

    def urgency(self, seq: Sequence, now: float) -> tuple[int, float]:
        """The admission order: preempted sequences, then the least slack, then those that miss anyway."""
        if seq.output_ids:
            return 0, seq.arrival_time  # preempted: its first token is out, its TPOT is at stake
        slack = self.slack(seq, now)
        return (1, slack) if slack >= 0 else (2, seq.arrival_time)

    def _chunk(self, seq: Sequence, budget: int) -> int:
        """How many of ``seq``'s tokens run this step: a long prompt runs in chunks, so others run beside it."""
        return min(seq.num_uncomputed_tokens, budget, self.ctx.chunked_prefill_size, self.PREFILL_CHUNK)
