"""The a5 reference scheduler, except that drafts get their blocks as a decode does: by preemption.

When a sequence's drafts need a block and none is free, it preempts the newest running sequence
until they fit, as a2 does for a decode token. Drafts are a guess, worth less than the tokens
that another sequence must compute: a sequence preempted for them is recomputed from its prompt,
and one already planned in the step is left with no blocks (the loop's invariant check reports
it). The public tests run in pools large enough for every draft, so it passes them all; the
hidden test on drafts in a full pool catches it.
"""

from __future__ import annotations

from engine_core.scheduler import Sequence
from solutions.a5.scheduler import SpeculativeScheduler


class DraftsPreemptScheduler(SpeculativeScheduler):
    def _grow_for_drafts(self, seq: Sequence, num_drafts: int) -> int:
        # The mistake: a2's _make_room, which preempts the newest until the blocks are free.
        if num_drafts and not self._make_room(seq, 1 + num_drafts):
            return 0
        return num_drafts
