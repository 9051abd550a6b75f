"""The prefix-cache scheduler of ``prefix_cache.py`` with a plausible bug: it writes into a shared block.

When a prompt's blocks are all cached (a block-aligned prompt seen before), it shares every one
of them, although the prompt's last token must still run (its logits give the first output
token): that token is recomputed into the last shared block, which the cache, and any other
request with the same prompt, reads as its own. The copy-on-write check must fail the request
and name the block, the positions written and the cache as the other holder.
"""

from __future__ import annotations

from engine_core.scheduler import Sequence

from .prefix_cache import PrefixCacheScheduler


class PrefixCacheWritesSharedScheduler(PrefixCacheScheduler):
    def _num_reusable(self, seq: Sequence, num_hits: int) -> int:
        return num_hits  # the bug: the last token's block is shared too
