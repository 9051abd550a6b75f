"""What the engine loop hands out: each request's outputs, and its own state and totals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from .sampler import TokenLogprobs


@dataclass(frozen=True)
class RequestOutput:
    """New output of one request since its previous ``RequestOutput``.

    finish_reason: ``stop`` (EOS, stop string or stop token), ``length`` (max_tokens or the
    context limit), ``abort`` (the client went away) or ``error`` (``error`` says what).
    rejected: the error is the request's own (a request id in use, or the scheduler raised
        ``RequestRejected``), not the engine's: a server answers it as a bad request.
    """

    request_id: str
    new_token_ids: list[int]
    new_text: str
    logprobs: list[TokenLogprobs] | None
    num_prompt_tokens: int
    num_output_tokens: int
    finished: bool = False
    finish_reason: str | None = None
    error: str | None = None
    rejected: bool = False


OutputCallback = Callable[[RequestOutput], None]


@dataclass(frozen=True)
class LoopStats:
    """The loop's state now (first five fields) and totals since it started (the rest).

    num_preemptions: times a scheduled sequence had fewer computed tokens than its last step left.
    num_cached_tokens: prompt tokens a scheduler skipped because their KV was cached (prefix hits).
    num_prompt_tokens: prompt tokens of every request added (the hit rate's denominator).
    num_drafts, num_draft_tokens, num_accepted_tokens: scheduled entries with draft tokens,
        draft tokens scheduled, draft tokens accepted.
    num_scheduler_failures: times a scheduler hook raised or broke an invariant, so that the loop
        failed the requests in flight and restarted it with every block back in the pool.
    """

    num_running: int
    num_waiting: int
    kv_blocks_used: int
    kv_blocks_total: int
    num_steps: int
    num_preemptions: int = 0
    num_cached_tokens: int = 0
    num_prompt_tokens: int = 0
    num_drafts: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    num_scheduler_failures: int = 0


TOTALS = tuple(f.name for f in fields(LoopStats))[5:]
