"""a5: speculative decoding by prompt lookup.

A decode step runs one token per sequence, and on a GPU that step is memory-bound: reading the
weights costs the same for one token as for a few. Speculative decoding (Leviathan et al., 2023)
guesses the next ``k`` tokens cheaply (*drafts*), runs the newest token and the drafts in one
forward, and keeps the longest prefix of drafts that match what the model samples at each
position, plus the model's own next token. Under greedy decoding the output is exactly what
decoding one token at a time gives; a step just produces more than one token when the guesses
are right.

Here the guesses need no second model (prompt lookup decoding): when the sequence's last few
tokens (an *n-gram*) appeared earlier in its prompt or output, the tokens that followed them then
are the drafts. Outputs that copy from their context (code edits, quoting, summaries) accept many.

This scheduler is a2's (blocks on demand, admission above a watermark, the newest sequence
preempted and recomputed when a decode cannot get a block) plus, in each step and after a2 has
planned every decode and admitted what fits:

1. each decode gets up to ``k`` drafts, looked up in its own tokens, within what is left of the
   step's token budget and of the free blocks (drafts never preempt anyone);
2. after the step, the blocks that only rejected drafts used are freed (``on_step_done``);
3. each sequence's ``k`` follows its recent acceptance: two more after a step that accepted every
   draft, one fewer after a step that rejected one, between 1 and ``MAX_DRAFT_TOKENS``.
"""

from __future__ import annotations

from collections import deque

from engine_core.scheduler import (
    RequestRejected, ScheduledSeq, Scheduler, SchedulerContext, Sequence, SequenceStatus, StepResult,
)


class SpeculativeScheduler(Scheduler):
    """a2's paging plus prompt-lookup drafts, verified in the decode step that follows them.

    Extra credit (the handout's "SLO-aware policy"): set ``slo_aware = True`` once this class
    admits requests by their deadlines, from ``seq.arrival_time`` and the engine's targets
    ``ctx.ttft_slo_ms`` and ``ctx.tpot_slo_ms``. The grader's ``slo`` part grades only a
    scheduler that sets it; left False, that part is "not attempted" and your total is
    unaffected.
    """

    # The opt-in to the graded SLO extension (see above).
    slo_aware = False
    # Free blocks that admission leaves for running decodes to grow into, as a fraction of the pool.
    WATERMARK = 0.05
    # Most drafts after one decode token, and the draft length a sequence starts with. On a GPU a
    # verify step of a few tokens costs about one decode step; on a CPU it costs more per token,
    # so drafts that are rejected are not free there.
    MAX_DRAFT_TOKENS = 4
    # The n-grams looked up, longest first: a longer match predicts better, a shorter one more often.
    MAX_NGRAM = 3
    MIN_NGRAM = 2

    def __init__(self, ctx: SchedulerContext) -> None:
        super().__init__(ctx)
        self.waiting: deque[Sequence] = deque()
        # In order of arrival, so the newest is last: admission is first come first served and a
        # preempted sequence goes back to the front of the queue.
        self.running: list[Sequence] = []
        self.watermark_blocks = max(1, int(self.WATERMARK * ctx.allocator.num_blocks))
        # By request id: how many drafts each sequence may propose next (its k), and how many it
        # proposed in the step that is running (on_step_done compares them with the accepted).
        self.draft_lens: dict[str, int] = {}
        self.proposed: dict[str, int] = {}

    def add(self, seq: Sequence) -> None:
        """Queue a new request behind the ones already waiting (if it can ever fit in the pool)."""
        self._check_fits(seq)
        self.waiting.append(seq)

    def schedule(self) -> list[ScheduledSeq]:
        """Run every running sequence (preempting when blocks run out), admit waiting ones, then draft."""
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
        # Drafts come last: they only use what the real work of the step left over.
        self._add_drafts(plan, budget)
        return plan

    def finish(self, seq: Sequence) -> None:
        """Forget a finished (or aborted) sequence and free its blocks."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.ctx.allocator.free(seq.block_table)
        seq.block_table = []
        self.draft_lens.pop(seq.request_id, None)
        self.proposed.pop(seq.request_id, None)

    def on_step_done(self, results: list[StepResult]) -> None:
        """Free the blocks that held only rejected drafts, and adapt each drafting sequence's k."""
        ### BEGIN SOLUTION
        for result in results:
            proposed = self.proposed.pop(result.seq.request_id, 0)
            if result.finished or not proposed:
                continue  # finish() has released a finished sequence already
            self._release_rejected(result.seq)
            self._adapt(result.seq, proposed, result.num_accepted)
        ### END SOLUTION

    # ---- a2: paging and preemption -----------------------------------------------------------

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
        """Add to ``seq``'s block table the blocks its next ``n`` tokens need (they are free)."""
        seq.block_table += self.ctx.allocator.allocate(self._blocks_missing(seq, n))

    def _can_admit(self, seq: Sequence, n: int) -> bool:
        """Whether a waiting ``seq`` may start with ``n`` tokens: its blocks leave the watermark free."""
        needed, free = self._blocks_missing(seq, n), self.ctx.allocator.num_free
        # The watermark keeps room for running decodes; with none running, the whole pool is its.
        return free - needed >= self.watermark_blocks or (not self.running and needed <= free)

    def _make_room(self, seq: Sequence, n: int) -> bool:
        """Allocate ``seq``'s blocks for ``n`` tokens, preempting the newest running sequence until they fit.

        Returns False when ``seq`` itself was the newest and had to be preempted.
        """
        while self._blocks_missing(seq, n) > self.ctx.allocator.num_free:
            victim = self.running[-1]
            self._preempt(victim)
            if victim is seq:
                return False
        self._allocate(seq, n)
        return True

    def _preempt(self, seq: Sequence) -> None:
        """Free a running ``seq``'s blocks and queue it first, to be recomputed from prompt + output."""
        self.running.remove(seq)
        self.ctx.allocator.free(seq.block_table)
        seq.block_table = []
        seq.num_computed_tokens = 0  # its KV is gone: prompt + output so far run again
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)  # before every request that arrived after it

    # ---- a5: drafts --------------------------------------------------------------------------

    def _add_drafts(self, plan: list[ScheduledSeq], budget: int) -> None:
        """Give each decode in ``plan`` its drafts, oldest first, within ``budget`` tokens and the free blocks."""
        ### BEGIN SOLUTION
        for entry in plan:
            seq = entry.seq
            # Drafts follow a decode token only: a prompt or a recompute samples one token.
            if budget <= 0 or seq.num_uncomputed_tokens != 1:
                continue
            drafts = self._propose(seq, self._draft_room(seq, budget))
            drafts = drafts[:self._grow_for_drafts(seq, len(drafts))]
            if drafts:
                entry.draft_tokens = drafts
                self.proposed[seq.request_id] = len(drafts)
                budget -= len(drafts)
        ### END SOLUTION

    def _draft_room(self, seq: Sequence, budget: int) -> int:
        """How many drafts ``seq`` may propose now: its k, capped by the budget and by what it may still generate."""
        ### BEGIN SOLUTION
        k = self.draft_lens.get(seq.request_id, self.MAX_DRAFT_TOKENS)
        # A step appends at most drafts + 1 tokens; drafts past max_tokens or the context would be wasted.
        left = min(seq.params.max_tokens - len(seq.output_ids), self.ctx.max_model_len - seq.num_tokens + 1)
        return max(min(k, budget, left - 1), 0)
        ### END SOLUTION

    def _propose(self, seq: Sequence, max_drafts: int) -> list[int]:
        """Up to ``max_drafts`` tokens that followed the latest earlier occurrence of ``seq``'s last n-gram."""
        ### BEGIN SOLUTION
        if max_drafts <= 0:
            return []
        tokens = seq.prompt_ids + seq.output_ids
        for n in range(self.MAX_NGRAM, self.MIN_NGRAM - 1, -1):
            if n >= len(tokens):
                continue
            suffix = tokens[-n:]
            # Latest first: the most recent context predicts best. At least one token must follow.
            for start in range(len(tokens) - n - 1, -1, -1):
                if tokens[start:start + n] == suffix:
                    return tokens[start + n:start + n + max_drafts]
        return []
        ### END SOLUTION

    def _grow_for_drafts(self, seq: Sequence, num_drafts: int) -> int:
        """Allocate blocks for up to ``num_drafts`` drafts from the free blocks alone; how many are covered."""
        ### BEGIN SOLUTION
        # The decode token's block is there already (a2's part of the step); drafts never preempt.
        covered = (len(seq.block_table) + self.ctx.allocator.num_free) * self.ctx.block_size - seq.num_tokens
        num_drafts = max(min(num_drafts, covered), 0)
        if num_drafts:
            self._allocate(seq, 1 + num_drafts)
        return num_drafts
        ### END SOLUTION

    def _release_rejected(self, seq: Sequence) -> None:
        """Free the blocks past the one that will hold ``seq``'s newest token: only rejected drafts used them."""
        ### BEGIN SOLUTION
        # Its next step writes its newest token, at position num_tokens - 1, and nothing after it.
        keep = self.ctx.blocks_needed(seq.num_tokens)
        if len(seq.block_table) > keep:
            self.ctx.allocator.free(seq.block_table[keep:])
            del seq.block_table[keep:]
        ### END SOLUTION

    def _adapt(self, seq: Sequence, proposed: int, accepted: int) -> None:
        """``seq``'s next k: two more when all ``proposed`` drafts were accepted, one fewer otherwise."""
        ### BEGIN SOLUTION
        k = self.draft_lens.get(seq.request_id, self.MAX_DRAFT_TOKENS)
        # Grow fast while the guesses are right, back off one at a time when they are not.
        k = k + 2 if accepted == proposed else k - 1
        self.draft_lens[seq.request_id] = min(max(k, 1), self.MAX_DRAFT_TOKENS)
        ### END SOLUTION
