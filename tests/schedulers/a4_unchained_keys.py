"""The a4 reference scheduler, except that a block's key hashes its own tokens only.

Keys are not chained: a block's key stands for its 4 (or 16) tokens wherever they stand in a
prompt, not for everything before them. A prompt whose first block holds the same tokens as the
second block of a cached prompt then shares that block, whose KV was computed at other
positions after other tokens: its output silently changes. The public tests only share
prefixes that start at a prompt's first token, where the lookup stops at the first miss and
both keys agree, so it passes them all; the hidden test on the same tokens after another prefix
catches it.
"""

from __future__ import annotations

from solutions.a4.scheduler import PrefixCachingScheduler


class UnchainedKeysScheduler(PrefixCachingScheduler):
    def _block_keys(self, tokens: list[int], num_blocks: int) -> list[int]:
        size = self.ctx.block_size
        # The mistake: no previous key in the hash.
        return [hash(tuple(tokens[index * size:(index + 1) * size])) for index in range(num_blocks)]
