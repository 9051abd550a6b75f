"""A request as the scheduler sees it: its tokens, its KV blocks, and how far it has run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum

from .sampling_params import SamplingParams


class SequenceStatus(Enum):
    WAITING = "waiting"  # not started, or preempted: its KV is not (all) in the pool
    RUNNING = "running"  # being prefilled or decoded
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One request's state.

    The frozen core owns ``output_ids``, ``num_computed_tokens`` (advanced after each forward),
    ``status`` FINISHED and ``finish_reason``. The scheduler owns ``block_table`` (which blocks
    hold this sequence's KV) and may *lower* ``num_computed_tokens`` (to recompute after a
    preemption) or *raise* it before a sequence first runs (when its prefix is already cached).

        tokens:   p0 p1 p2 p3 p4 p5 | o0 o1        (prompt, then output so far)
        computed: |<-- KV in pool -->|             num_computed_tokens = 6
        next run: the uncomputed tokens o0 o1 (a decode runs exactly one: the newest token)
    """

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    seed: int
    arrival_time: float = field(default_factory=time.monotonic)
    output_ids: list[int] = field(default_factory=list)
    block_table: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: str | None = None

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_tokens(self) -> int:
        """Prompt plus output tokens."""
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def num_uncomputed_tokens(self) -> int:
        """Tokens whose KV is not in the pool yet: the whole prompt at first, then 1 per decode."""
        return self.num_tokens - self.num_computed_tokens

    @property
    def max_num_tokens(self) -> int:
        """The most tokens this sequence can ever hold: prompt plus ``max_tokens``."""
        return len(self.prompt_ids) + self.params.max_tokens

    @property
    def is_prefill(self) -> bool:
        """True while part of the prompt (or, after a preemption, of the output) is not computed."""
        return self.num_uncomputed_tokens > 1

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def token_slice(self, start: int, end: int) -> list[int]:
        """Tokens ``start .. end-1`` of prompt + output."""
        prompt = len(self.prompt_ids)
        if end <= prompt:
            return self.prompt_ids[start:end]
        return self.prompt_ids[start:] + self.output_ids[max(0, start - prompt):end - prompt]
