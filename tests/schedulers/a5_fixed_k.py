"""The a5 reference scheduler, except that every sequence always drafts MAX_DRAFT_TOKENS tokens.

The draft length never follows the acceptance: a sequence whose drafts are always rejected keeps
verifying four wrong tokens per step, which costs compute on every step (little on a GPU at
concurrency 1, a lot in a large batch or on a CPU). Outputs stay right, and where drafts are
accepted it even drafts more, so the public tests, which look at accepted drafts, pass; the
hidden tests on the draft length catch it.
"""

from __future__ import annotations

from engine_core.scheduler import Sequence
from solutions.a5.scheduler import SpeculativeScheduler


class FixedDraftLengthScheduler(SpeculativeScheduler):
    def _adapt(self, seq: Sequence, proposed: int, accepted: int) -> None:
        pass  # the mistake: k stays MAX_DRAFT_TOKENS
