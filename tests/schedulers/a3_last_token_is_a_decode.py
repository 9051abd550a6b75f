"""The a3 reference scheduler, except that a prompt with one token left is taken for a decode.

It tells decodes from prompts with ``seq.is_prefill``, which is False when a single token is
left to compute, the last prompt token included: that token is then scheduled as a decode,
outside the prompt budget, and the step's prompt tokens go one over ``chunked_prefill_size``.
No public prompt ends one token past a chunk, so it passes them all; the hidden test on the
last prompt token catches it.
"""

from __future__ import annotations

from collections.abc import Iterator

from engine_core.scheduler import ScheduledSeq, Sequence
from solutions.a3.scheduler import ChunkedPrefillScheduler


class LastTokenIsADecodeScheduler(ChunkedPrefillScheduler):
    def decodes(self) -> list[ScheduledSeq]:
        # The mistake: not is_prefill also holds for the last prompt token.
        decoding = [seq for seq in self.running if not seq.is_prefill]
        return [ScheduledSeq(seq, 1) for seq in decoding[:self.ctx.max_num_batched_tokens]]

    def prompts(self) -> Iterator[Sequence]:
        yield from [seq for seq in self.running if seq.is_prefill]
        while (seq := self.admit()) is not None:
            yield seq
