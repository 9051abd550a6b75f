"""The a1 reference scheduler, except that ``add()`` rejects a request asking for more than 20 tokens.

The contract and server tests use it: a ``RequestRejected`` fails that request alone (a 400
from the server, an ``invalid_request_error`` event in a stream) while the others run on.
"""

from __future__ import annotations

from engine_core.scheduler import RequestRejected, Sequence
from solutions.a1.scheduler import ContinuousBatchingScheduler

MAX_TOKENS = 20


class RejectsLongRequestsScheduler(ContinuousBatchingScheduler):
    def add(self, seq: Sequence) -> None:
        if seq.params.max_tokens > MAX_TOKENS:
            raise RequestRejected(f"request {seq.request_id} asks for too much")
        super().add(seq)
