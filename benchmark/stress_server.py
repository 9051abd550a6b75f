"""Abuse the server the way impatient clients do, and check that it frees every KV block.

    python -m benchmark.stress_server
    python -m benchmark.stress_server --disconnects 240 --burst 600 --max-num-seqs 8

Serves ``--model`` with the a1 reference scheduler in this process, then:

1. **disconnect storm**: ``--disconnects`` streaming requests, ``--max-pending-requests`` at a
   time; each client reads a few chunks (0 to 4) and drops its connection;
2. **overload burst**: ``--burst`` requests at once against ``--max-pending-requests``: each must
   get a 200 or a 503 with ``Retry-After``, never another error.

It prints the KV blocks in use before, after each phase, and how long the pool took to drain,
and exits non-zero if a request got an unexpected status or blocks stayed allocated.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter

import aiohttp

from engine_core import Engine, EngineConfig
from engine_core.loop import EngineLoop
from engine_core.scheduler_loader import load_scheduler
from engine_core.server import BackgroundServer, create_app

CHAT = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


async def _drop_after(session: aiohttp.ClientSession, url: str, chunks: int) -> int:
    body = {"messages": CHAT, "max_tokens": 64, "stream": True, "ignore_eos": True}
    async with session.post(f"{url}/v1/chat/completions", json=body) as reply:
        read = 0
        async for _ in reply.content:
            read += 1
            if read > chunks:
                break  # leaving the block closes the connection mid-stream
        return reply.status


async def disconnect_storm(url: str, n: int, wave: int, rng: random.Random) -> Counter[int]:
    """``n`` dropped streams, ``wave`` at a time (no more than the server admits at once)."""
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        for first in range(0, n, wave):
            size = min(wave, n - first)
            statuses.update(await asyncio.gather(*(_drop_after(session, url, rng.randrange(5)) for _ in range(size))))
    return statuses


async def overload_burst(url: str, n: int) -> Counter[str]:
    body = {"messages": CHAT, "max_tokens": 8}
    statuses: Counter[str] = Counter()

    async def one(session: aiohttp.ClientSession) -> None:
        async with session.post(f"{url}/v1/chat/completions", json=body) as reply:
            await reply.read()
            ok = reply.status == 200 or (reply.status == 503 and "Retry-After" in reply.headers)
            statuses[str(reply.status) if ok else f"unexpected {reply.status}"] += 1

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        await asyncio.gather(*(one(session) for _ in range(n)))
    return statuses


def _drain(engine: Engine, loop: EngineLoop, timeout: float = 30.0) -> float:
    """Seconds until no request is left and no block is allocated (or ``timeout``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        stats = loop.stats()
        if stats.num_running + stats.num_waiting == 0 and engine.allocator.num_used == 0:
            break
        time.sleep(0.02)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="random:tiny")
    parser.add_argument("--disconnects", type=int, default=240)
    parser.add_argument("--burst", type=int, default=600)
    parser.add_argument("--max-num-seqs", type=int, default=8)
    parser.add_argument("--max-pending-requests", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    engine = Engine(EngineConfig(model=args.model, device="cpu"))
    loop = EngineLoop(engine, load_scheduler("a1", "solution"), max_num_seqs=args.max_num_seqs)
    loop.start()
    failed = False
    try:
        app = create_app(loop, args.model, max_pending_requests=args.max_pending_requests)
        with BackgroundServer(app) as server:
            print(f"KV blocks in use before: {engine.allocator.num_used} of {engine.allocator.num_blocks}")
            started = time.monotonic()
            storm = asyncio.run(disconnect_storm(server.base_url, args.disconnects, args.max_pending_requests,
                                                 random.Random(args.seed)))
            drained = _drain(engine, loop)
            print(f"disconnect storm: {args.disconnects} streams dropped in {time.monotonic() - started:.1f} s "
                  f"(statuses {dict(storm)}); KV blocks in use {drained:.2f} s later: {engine.allocator.num_used}")
            failed |= engine.allocator.num_used != 0 or set(storm) != {200}
            started = time.monotonic()
            statuses = asyncio.run(overload_burst(server.base_url, args.burst))
            drained = _drain(engine, loop)
            print(f"overload burst: {args.burst} requests in {time.monotonic() - started:.1f} s: "
                  f"{dict(sorted(statuses.items()))}; "
                  f"KV blocks in use {drained:.2f} s later: {engine.allocator.num_used}")
            failed |= engine.allocator.num_used != 0 or any(s.startswith("unexpected") for s in statuses)
    finally:
        loop.stop()
    print("FAILED" if failed else "ok: every request was answered as expected and every block was freed")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
