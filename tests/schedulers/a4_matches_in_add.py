"""The a4 reference scheduler, except that it looks a request's prefix up in ``add``.

It shares the cached blocks of a new request's prefix when the request arrives and keeps them
while it waits. What is cached changes while it waits: a request that arrived together with
another of the same prefix, or while that one was still being computed, finds nothing and
computes the whole prompt again; and the blocks a waiting request holds can no longer be
evicted. The public tests add each request that should hit after its prefix is cached, so it
passes them all; the hidden tests on requests that wait catch it.
"""

from __future__ import annotations

from engine_core.scheduler import Sequence
from solutions.a4.scheduler import PrefixCachingScheduler


class MatchesInAddScheduler(PrefixCachingScheduler):
    def add(self, seq: Sequence) -> None:
        self._check_fits(seq)
        super()._use_cached_prefix(seq)  # the mistake: looked up once, on arrival
        self.waiting.append(seq)

    def _use_cached_prefix(self, seq: Sequence) -> None:
        pass  # found in add

    def _release(self, seq: Sequence) -> None:
        pass  # what add found is kept while the request waits
