"""The serving loop's own host work per step, with the model taken out.

    python -m benchmark.profile_host --batch-sizes 1,32,64

On a GPU the host prepares step N+1 only after step N's tokens are back, so every microsecond
the loop spends per step adds to the step time the GPU cannot hide. This benchmark runs the
frozen loop (``EngineLoop`` with the a1 solution) over ``--batch-sizes`` requests at once, but
``Engine.step`` returns a ready token per row instead of running the model: what remains is the
scheduler, the invariant checks, building the step's items and sample rows, detokenizing, stop
checks and the output callbacks. It also times, for the same batch, the host side of a padded
decode step's inputs (``DecodeRows.update`` and the runner's block-table checks). It prints
microseconds per step and per sequence, and the functions with most host time (cProfile).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import torch

from engine_core import Engine, EngineConfig, SamplingParams
from engine_core.attention import BatchLayout
from engine_core.attention.paged_decode import DecodeRows, padded_batch_size
from engine_core.block_allocator import blocks_for
from engine_core.loop import EngineLoop
from engine_core.model_runner import ForwardItem
from engine_core.sampler import SampleResult, SampleRow
from engine_core.scheduler_loader import load_scheduler


def _stub_step(engine: Engine, vocab: list[int]):
    """``Engine.step`` without the model: cycles through ordinary text tokens."""
    counter = iter(range(1 << 62))

    def step(items: list[ForwardItem], rows: list[SampleRow]) -> SampleResult:
        return SampleResult([vocab[next(counter) % len(vocab)] for _ in rows], [None] * len(rows))
    return step


def loop_host_time(engine: Engine, batch: int, context: int, new_tokens: int, check: bool,
                   profile: cProfile.Profile | None = None) -> float:
    """Mean wall time of one loop step (microseconds) over ``new_tokens`` decode steps.

    The loop's steps run in this thread (what its own thread does between inbox reads), so that
    cProfile sees them.
    """
    loop = EngineLoop(engine, load_scheduler("a1", "solution"), check_invariants=check,
                      max_num_seqs=max(batch, 1), max_num_batched_tokens=batch * context)
    params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
    for i in range(batch):
        loop.submit(f"r{i}", [(11 * t + i) % 5000 + 100 for t in range(context)], params, lambda out: None)
    loop._drain_inbox(block=False)
    loop._step()  # the prefill step
    if profile is not None:
        profile.enable()
    start = time.perf_counter()
    steps = 0
    while loop._streams:
        loop._step()
        steps += 1
    elapsed = time.perf_counter() - start
    if profile is not None:
        profile.disable()
    return elapsed / steps * 1e6


def decode_inputs_time(engine: Engine, batch: int, context: int, repeats: int) -> float:
    """Microseconds to check one padded decode step's block tables and build its metadata."""
    tables = [engine.allocator.allocate(engine.blocks_for(context + 1)) for _ in range(batch)]
    try:
        items = [ForwardItem([42], context, table) for table in tables]
        no_slots = torch.empty(0, dtype=torch.long)  # a padded decode step computes its own
        layout = BatchLayout([1] * batch, [context + 1] * batch, tables, no_slots, engine.block_size)
        host = DecodeRows(padded_batch_size(batch), engine.kv)
        start = time.perf_counter()
        for _ in range(repeats):  # the tables are the same every step: the steady state between new blocks
            for index, item in enumerate(items):
                engine.runner._check(index, item)
            host.update(layout)
        return (time.perf_counter() - start) / repeats * 1e6
    finally:
        for table in tables:
            engine.allocator.free(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="random:tiny")
    parser.add_argument("--batch-sizes", default="1,32,64")
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--profile-batch", type=int, default=32, help="batch size to profile with cProfile")
    args = parser.parse_args()
    batches = [int(b) for b in args.batch_sizes.split(",")]
    per_seq = blocks_for(args.context + args.new_tokens, 16)
    engine = Engine(EngineConfig(model=args.model, device="cpu",
                                 num_kv_blocks=max(batches + [args.profile_batch]) * per_seq))
    text_ids = engine.tokenizer.encode("The quick brown fox jumps over the lazy dog, and then it rests. " * 4)
    engine.step = _stub_step(engine, text_ids)  # type: ignore[method-assign]
    for batch in batches:
        for check in (True, False):
            us = loop_host_time(engine, batch, args.context, args.new_tokens, check)
            print(f"batch {batch:3d} invariants {'on ' if check else 'off'}: loop {us:8.0f} us per step "
                  f"({us / batch:6.1f} us per sequence)", flush=True)
        us = decode_inputs_time(engine, batch, args.context, 50)
        print(f"batch {batch:3d} decode inputs: {us:8.0f} us per step ({us / batch:6.1f} us per sequence)", flush=True)
    profile = cProfile.Profile()
    loop_host_time(engine, args.profile_batch, args.context, args.new_tokens, True, profile)
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(20)
    print("\n".join(text.getvalue().splitlines()[6:30]), flush=True)


if __name__ == "__main__":
    main()
