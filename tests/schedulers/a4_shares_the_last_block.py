"""The a4 reference scheduler, except that it shares every cached block of a prompt.

When all of a block-aligned prompt is cached, it shares all of its blocks and starts the
sequence one token short of its end, so that the last token still runs. That token's KV is
then written into the prompt's last block, which the cache (and any other sequence with the
same prompt) holds too: the loop's copy-on-write check fails the request. Only a block-aligned
prompt seen before shows it; the public tests' prompts end inside a block, so it passes them
all; the hidden test on an identical block-aligned prompt catches it.
"""

from __future__ import annotations

from engine_core.scheduler import Sequence
from solutions.a4.scheduler import PrefixCachingScheduler


class SharesTheLastBlockScheduler(PrefixCachingScheduler):
    def _use_cached_prefix(self, seq: Sequence) -> None:
        # The mistake: every full prompt block may be shared, the one the last token writes into too.
        usable = seq.num_prompt_tokens // self.ctx.block_size
        hits = []
        for key in self._block_keys(seq.prompt_ids, usable):
            if key not in self.cache:
                break
            hits.append(key)
        self._touch(hits)
        seq.block_table = [self.cache[key] for key in hits]
        self.ctx.allocator.share(seq.block_table)
        seq.num_computed_tokens = min(len(hits) * self.ctx.block_size, seq.num_tokens - 1)
