"""The scheduler contract: what you write in every assignment. Read this file first.

A scheduler decides, step after step, which sequences run and how many of their tokens, and
which KV blocks they use. The frozen loop (``loop.py``) does everything else: it turns your
plan into one forward pass, samples, appends the new tokens, checks stop conditions, streams
text to clients, and tells you when a sequence is done.

    client -> server -> loop.submit()          loop thread, once per step:
                          |                     1. add(seq) for each new request
                          v                     2. plan = schedule()        <- your policy
                     [ your Scheduler ]         3. check the plan (invariants below)
                                                4. one forward over the plan, sample
                                                5. append tokens, check stops, stream
                                                6. finish(seq) for each finished sequence
                                                7. on_step_done(results)

Your four hooks:

* ``add(seq)``: a new request arrived. Queue it (or raise ``RequestRejected`` if it can never run).
* ``schedule() -> list[ScheduledSeq]``: pick this step's work. Each entry runs the next
  ``num_tokens`` uncomputed tokens of one sequence (a whole prompt, a chunk of it, or the one
  newest token of a decode), optionally followed by draft tokens to verify. Before returning,
  make sure every scheduled sequence's ``block_table`` covers the positions it will write
  (allocate from ``self.ctx.allocator``). Return ``[]`` when there is nothing to do.
* ``finish(seq)``: the sequence ended (stop, length, abort or error). Forget it and release its
  blocks: free them, or hand them to your prefix cache; either way leave ``seq.block_table``
  empty.
* ``on_step_done(results)``: optional; what each scheduled sequence got this step.

How each assignment maps onto these hooks:

* **a0** FCFS: ``schedule`` returns the current request alone: its whole prompt first, then one
  decode token per step; the next request starts when ``finish`` clears the current one.
* **a1** continuous batching: ``schedule`` returns every running sequence's decode token plus
  the prompts of newly admitted requests (up to ``max_num_seqs`` sequences and a prefill token
  budget), all in one step; blocks for prompt + ``max_tokens`` are allocated at admission.
* **a2** paged memory: allocate a block only when a sequence's next token crosses into a new
  block; admit by free blocks above a watermark; when a decode cannot get a block, preempt a
  sequence: free its blocks, set its ``num_computed_tokens = 0`` and status WAITING, and queue it
  again (it is recomputed later from prompt + output so far).
* **a3** chunked prefill: decodes first, then ``ScheduledSeq(seq, n)`` with ``n`` smaller than
  what is left of a prompt, so that each step stays within ``ctx.max_num_batched_tokens``.
* **a4** prefix caching: in ``add`` or at admission, find cached blocks for the prompt's
  block-aligned prefix, ``allocator.share`` them, put them first in ``seq.block_table`` and set
  ``seq.num_computed_tokens`` to the tokens they hold (at least one prompt token must still
  run); in ``finish`` keep full blocks in the cache; ``held_blocks`` reports the blocks the
  cache holds so that the leak check counts them.
* **a5** speculative decoding: ``ScheduledSeq(seq, 1, draft_tokens=[...])`` runs the newest
  token and k drafts in one forward; the loop accepts the longest prefix of drafts that match
  what the model samples, appends them plus one new token, and reports ``num_accepted`` in
  ``on_step_done``, where you may free blocks that were allocated for rejected drafts. An
  SLO-aware policy orders ``schedule``'s choices by ``seq.arrival_time`` and deadlines.

Invariants the loop checks (when ``check_invariants`` is on, as in tests and grading):
a sequence scheduled twice in one step, a finished sequence scheduled, ``num_tokens`` outside
1..uncomputed tokens, the step over the token budget, more than ``max_num_seqs`` sequences, a
block table that does not cover the positions written or lists a block that is not allocated,
a step writing KV into a block that has another holder (a block must be held by its sequence
alone before a step writes into it: copy-on-write), blocks leaked (allocated but in no live
sequence's table and not in ``held_blocks``), and a finished sequence still holding blocks.
Each failure names the sequence and what went wrong.

What the loop counts (you cannot forget or fake these; ``loop.stats()`` and ``/metrics`` show
them): a preemption whenever a sequence comes back with fewer computed tokens than its last step
left it; prefix-cache hits, in tokens, whenever it comes back with more (a new request's
cached prefix; after a preemption, the computed tokens it restarts from); every added request's
prompt tokens; entries with drafts, draft tokens and accepted draft tokens. On ``/metrics``:
``engine_num_preemptions_total``, ``engine_prefix_cache_hits_total`` /
``engine_prefix_cache_queries_total`` (the hit rate) and
``engine_spec_decode_num_{drafts,draft_tokens,accepted_tokens}_total``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from .block_allocator import BlockAllocator, blocks_for
from .sequence import Sequence, SequenceStatus

__all__ = [
    "RequestRejected", "Scheduler", "SchedulerContext", "ScheduledSeq", "StepResult", "Sequence", "SequenceStatus",
]


class RequestRejected(ValueError):
    """Raised by ``add`` for a request that this scheduler can never run (say why in the message).

    The loop fails that request alone, with the message as its error (the server answers it
    with a 400, the client's request being the problem); any other exception from a hook fails
    every request in flight and restarts the scheduler.
    """


@dataclass(frozen=True)
class SchedulerContext:
    """What a scheduler may use: the block allocator and the engine's limits.

    max_num_seqs: most sequences in one step (and, for a1, running at once).
    max_num_batched_tokens: most tokens in one step (prompt chunks + decode tokens + drafts).
    max_model_len: most tokens (prompt + output) one sequence may reach.
    chunked_prefill_size: most prompt tokens one step may prefill, for a scheduler that chunks
        prompts (a3 on); a smaller budget than ``max_num_batched_tokens``, so that a long prompt
        cannot stall every running decode. Schedulers that do not chunk ignore it.
    ttft_slo_ms, tpot_slo_ms: the engine's service-level targets in milliseconds (0 = none):
        a request should get its first token within ``ttft_slo_ms`` of ``seq.arrival_time``
        (seconds, ``time.monotonic()``), then one token every ``tpot_slo_ms``. Only an
        SLO-aware policy reads them (a5's extension); nothing enforces them.
    """

    allocator: BlockAllocator
    block_size: int
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    chunked_prefill_size: int = 512
    ttft_slo_ms: float = 0.0
    tpot_slo_ms: float = 0.0

    def blocks_needed(self, num_tokens: int) -> int:
        """How many blocks hold ``num_tokens`` positions."""
        return blocks_for(num_tokens, self.block_size)


@dataclass
class ScheduledSeq:
    """One sequence's share of a step: its next ``num_tokens`` uncomputed tokens, then drafts."""

    seq: Sequence
    num_tokens: int
    draft_tokens: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class StepResult:
    """What one scheduled sequence got from a step.

    new_token_ids: tokens appended to its output (empty for a prefill chunk that does not
        reach the end of its prompt).
    num_accepted: how many of its draft tokens were accepted.
    finished: whether it finished this step (``finish`` has already been called).
    """

    seq: Sequence
    new_token_ids: list[int]
    num_accepted: int
    finished: bool


class Scheduler(ABC):
    """Base class of every scheduler. Subclass it in ``assignments/aN/scheduler.py``."""

    def __init__(self, ctx: SchedulerContext) -> None:
        self.ctx = ctx

    @abstractmethod
    def add(self, seq: Sequence) -> None:
        """A new request arrived (status WAITING, no blocks, nothing computed). Queue it.

        Raise :class:`RequestRejected` if it can never run (it needs more blocks than the pool
        has, say): the loop then fails it alone instead of letting it wait forever.
        """

    @abstractmethod
    def schedule(self) -> list[ScheduledSeq]:
        """This step's work, with block tables that cover it; ``[]`` when there is none.

        The loop marks every scheduled sequence RUNNING. Entries may come in any order.
        """

    @abstractmethod
    def finish(self, seq: Sequence) -> None:
        """``seq`` ended (``seq.finish_reason`` says why). Drop it and leave ``seq.block_table`` empty."""

    def on_step_done(self, results: list[StepResult]) -> None:
        """Called after every step with what each scheduled sequence got. Optional."""

    def held_blocks(self) -> list[int]:
        """Blocks this scheduler keeps references to outside any live sequence (a prefix cache).

        One entry per reference held. The leak check counts them as accounted for.
        """
        return []
