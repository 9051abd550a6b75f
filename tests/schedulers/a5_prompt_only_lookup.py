"""The a5 reference scheduler, except that drafts are looked up in the prompt only.

The sequence's last n-gram (which may end in its output) is searched for in its prompt, not in
what it generated. Outputs that copy the prompt still get drafts, which is all the public tests
try; an output that repeats itself (a list, a loop, code written twice) gets none. The hidden
test on drafts from the output catches it.
"""

from __future__ import annotations

from engine_core.scheduler import Sequence
from solutions.a5.scheduler import SpeculativeScheduler


class PromptOnlyLookupScheduler(SpeculativeScheduler):
    def _propose(self, seq: Sequence, max_drafts: int) -> list[int]:
        if max_drafts <= 0:
            return []
        tokens = seq.prompt_ids + seq.output_ids
        for n in range(self.MAX_NGRAM, self.MIN_NGRAM - 1, -1):
            if n >= len(tokens):
                continue
            suffix = tokens[-n:]
            # The mistake: only the prompt is searched.
            for start in range(min(len(tokens) - n, seq.num_prompt_tokens) - n, -1, -1):
                if tokens[start:start + n] == suffix:
                    return tokens[start + n:start + n + max_drafts]
        return []
