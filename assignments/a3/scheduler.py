"""a3: chunked prefill.

a1 runs a new prompt whole, in the step that admits it. A long prompt makes that step many
times slower than a decode step, and every running sequence waits for it: their next tokens
come late (a *prefill stall*). a3 caps the prompt tokens of every step at
``ctx.chunked_prefill_size`` and splits longer prompts into chunks, one chunk per step, mixed
with the decodes (Sarathi-Serve's stall-free batching). Each step

1. decodes every running sequence first (one token each), then
2. spends the prompt budget, ``min(chunked_prefill_size, max_num_batched_tokens - decodes)``
   tokens, on prompts, oldest first: those already started, then newly admitted ones.

Admission is a1's: oldest first, at most ``max_num_seqs`` running, and the KV blocks for the
prompt + ``max_tokens`` reserved at admission.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from engine_core.scheduler import ScheduledSeq, Scheduler, SchedulerContext, Sequence


def prompt_left(seq: Sequence) -> int:
    """Prompt tokens not computed yet: 0 once the sequence decodes.

    Not ``seq.is_prefill``, which is False for a prompt with one token left: that token is a
    prompt token, and it counts against the prompt budget.
    """
    return max(seq.num_prompt_tokens - seq.num_computed_tokens, 0)


class ChunkedPrefillScheduler(Scheduler):
    def __init__(self, ctx: SchedulerContext) -> None:
        super().__init__(ctx)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order: oldest first

    def add(self, seq: Sequence) -> None:
        """Queue a new request behind the ones already waiting."""
        self.waiting.append(seq)

    def finish(self, seq: Sequence) -> None:
        """Forget a finished (or aborted) sequence and free its blocks."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.ctx.allocator.free(seq.block_table)
        seq.block_table = []

    def admit(self) -> Sequence | None:
        """Start the oldest waiting request if it fits (a1's rules), reserving its KV; else None."""
        if not self.waiting or len(self.running) >= self.ctx.max_num_seqs:
            return None
        seq = self.waiting[0]
        blocks = self.ctx.blocks_needed(seq.max_num_tokens)
        if blocks > self.ctx.allocator.num_free:
            return None  # first come, first served: later requests do not overtake the oldest
        self.waiting.popleft()
        seq.block_table = self.ctx.allocator.allocate(blocks)
        self.running.append(seq)
        return seq

    def schedule(self) -> list[ScheduledSeq]:
        """Decodes first, then chunks within min(chunked_prefill_size, max_num_batched_tokens - decodes)."""
        # YOUR CODE HERE
        raise NotImplementedError("a3: ChunkedPrefillScheduler.schedule: decodes first, then chunks within min(chunked_prefill_size, max_num_batched_tokens - decodes) (see the a3 handout)")

    def decodes(self) -> list[ScheduledSeq]:
        """One token for each running sequence past its prompt (at most max_num_batched_tokens of them)."""
        # YOUR CODE HERE
        raise NotImplementedError("a3: ChunkedPrefillScheduler.decodes: one token for each running sequence past its prompt (at most max_num_batched_tokens of them) (see the a3 handout)")

    def chunks(self, budget: int) -> list[ScheduledSeq]:
        """Give the prompts in line their next tokens, in order, until ``budget`` tokens are spent."""
        # YOUR CODE HERE
        raise NotImplementedError("a3: ChunkedPrefillScheduler.chunks: give the prompts in line their next tokens, in order, until ``budget`` tokens are spent (see the a3 handout)")

    def prompts(self) -> Iterator[Sequence]:
        """Yield the prompts in line: the started ones, oldest first, then each request that admit() lets in."""
        # YOUR CODE HERE
        raise NotImplementedError("a3: ChunkedPrefillScheduler.prompts: yield the prompts in line: the started ones, oldest first, then each request that admit() lets in (see the a3 handout)")
