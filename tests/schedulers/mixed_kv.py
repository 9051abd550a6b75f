"""The a1 reference scheduler, except that it mixes up two requests' KV once they are running.

After the first step in which two running sequences have both finished their prompts, it
swaps one block between their block tables: the block that holds the last prompt token of the
shorter prompt (the first blocks would not do: every chat prompt starts with the same system
prompt, so their KV is identical). Each table keeps its length and every block stays allocated
exactly once, so no invariant fires: the two sequences read (and write) each other's KV from
the next decode on, and their outputs go wrong. The grader's
correctness part must catch it, name the two requests and point at block tables.
"""

from __future__ import annotations

from engine_core.scheduler import StepResult
from solutions.a1.scheduler import ContinuousBatchingScheduler


class MixedKVScheduler(ContinuousBatchingScheduler):
    swapped = False

    def on_step_done(self, results: list[StepResult]) -> None:
        super().on_step_done(results)
        if self.swapped:
            return
        decoding = [seq for seq in self.running if not seq.is_prefill and seq.block_table]
        if len(decoding) >= 2:
            a, b = decoding[0], decoding[1]
            index = (min(a.num_prompt_tokens, b.num_prompt_tokens) - 1) // self.ctx.block_size
            a.block_table[index], b.block_table[index] = b.block_table[index], a.block_table[index]
            self.swapped = True
