"""Outputs from the engine loop thread to the server's event loop, one wake-up per step.

Each step, the loop thread produces one output per running request. Handing each to the event
loop with its own ``call_soon_threadsafe`` costs a wake-up of the event loop (a write to its
self-pipe, a context switch, the GIL changing hands) per request per step: at 32 requests, 32
of them for every few milliseconds of GPU work. The relay collects what arrives while a hand-off
is pending and delivers it all in one callback:

    loop thread    send(q1, o1)  send(q2, o2)  send(q3, o3)            send(q1, o4) ...
                      |  schedules _deliver once  |                       |
    event loop     ---+--------------------------+-- _deliver: q1<-o1, q2<-o2, q3<-o3 --+-- ...

Order is kept per request (and overall): outputs are delivered in the order they were sent.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class OutputRelay(Generic[T]):
    """Puts items into asyncio queues from another thread, batching the hand-offs."""

    def __init__(self, event_loop: asyncio.AbstractEventLoop) -> None:
        self.event_loop = event_loop
        self._lock = threading.Lock()
        self._pending: list[tuple[asyncio.Queue[T], T]] = []

    def send(self, queue: asyncio.Queue[T], item: T) -> None:
        """Queue ``item`` for ``queue``; safe to call from any thread, never blocks on the event loop."""
        with self._lock:
            self._pending.append((queue, item))
            if len(self._pending) > 1:
                return  # a delivery is already scheduled and will take this item too
        try:
            self.event_loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:
            pass  # the event loop is closed: the server shut down and nobody is listening

    def _deliver(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for queue, item in pending:
            queue.put_nowait(item)
