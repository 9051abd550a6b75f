"""Where a decode step's time goes: GPU work, host work in the engine, and the serving loop.

    python -m benchmark.profile_decode --model random:qwen3-4b --batch-sizes 1,32

For each batch size, with every sequence at --context tokens:

- ``graph``: GPU time of one captured decode step (CUDA events around graph replays);
- ``forward``: ``ModelRunner.forward`` (inputs, metadata, replay), host clock, synchronised;
- ``step``: ``Engine.step``, i.e. forward plus sampling and reading the tokens back;
- ``loop``: tokens/s of the frozen serving loop (``EngineLoop`` with the a1 solution, no HTTP)
  generating --loop-tokens per sequence, with the invariant checks on and off;
- the functions with most host time over the ``step`` runs (cProfile);
- with --kernels, GPU time per kernel of five eager decode steps (torch.profiler).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import threading
import time

import torch

from engine_core import Engine, EngineConfig, SamplingParams
from engine_core.attention.paged_decode import padded_batch_size
from engine_core.loop import EngineLoop
from engine_core.model_runner import ForwardItem
from engine_core.sampler import SampleRow
from engine_core.scheduler_loader import load_scheduler


def _timed(fn, repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1000


def _kernel_table(engine: Engine, items: list[ForwardItem]) -> None:
    """GPU time per kernel of eager decode steps (graphs bypassed), largest first."""
    decode = engine.runner.decode
    assert decode is not None
    graph = decode._graphs[padded_batch_size(len(items))]
    captured, graph.graph = graph.graph, None
    try:
        engine.runner.forward(items)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                engine.runner.forward(items)
            torch.cuda.synchronize()
    finally:
        graph.graph = captured
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=70), flush=True)


def step_times(engine: Engine, batch: int, context: int, repeats: int, kernels: bool = False) -> None:
    blocks = [engine.allocator.allocate(engine.blocks_for(context + 1)) for _ in range(batch)]
    try:
        for table in blocks:  # fill the KV of each sequence with a prefill
            engine.runner.forward([ForwardItem([(7 * t) % 5000 + 100 for t in range(context)], 0, table)])
        items = [ForwardItem([42], context, table) for table in blocks]
        rows = [SampleRow(SamplingParams(temperature=0), 0, 0) for _ in blocks]
        line = f"batch {batch:3d} context {context}:"
        graphs = engine.runner.decode
        if graphs is not None and graphs.is_captured(batch):
            graph = graphs._graphs[padded_batch_size(batch)]
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            engine.runner.forward(items)
            assert graph.graph is not None  # is_captured
            replay = graph.graph.replay
            start.record()
            for _ in range(repeats):
                replay()
            end.record()
            end.synchronize()
            line += f" graph {start.elapsed_time(end) / repeats:6.2f} ms (GPU)"
        line += f" forward {_timed(lambda: engine.runner.forward(items), repeats):6.2f} ms"
        line += f" step {_timed(lambda: engine.step(items, rows), repeats):6.2f} ms"
        print(line, flush=True)
        if kernels:
            _kernel_table(engine, items)
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(repeats):
            engine.step(items, rows)
        profile.disable()
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(12)
        print("\n".join(text.getvalue().splitlines()[6:22]), flush=True)
    finally:
        for table in blocks:
            engine.allocator.free(table)


def loop_rate(engine: Engine, batch: int, context: int, new_tokens: int, check: bool) -> None:
    loop = EngineLoop(engine, load_scheduler("a1", "solution"), check_invariants=check)
    done = threading.Semaphore(0)
    counts = [0] * batch

    def on_output(index: int):
        def callback(out) -> None:
            counts[index] += len(out.new_token_ids)
            if out.finished:
                done.release()
        return callback

    loop.start()
    params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
    start = time.perf_counter()
    for i in range(batch):
        loop.submit(f"r{i}", [(11 * t + i) % 5000 + 100 for t in range(context)], params, on_output(i))
    for _ in range(batch):
        done.acquire()
    elapsed = time.perf_counter() - start
    loop.stop()
    print(f"loop batch {batch:3d} invariants {'on ' if check else 'off'}: {sum(counts) / elapsed:8.1f} tok/s "
          f"({1000 * elapsed / new_tokens:6.2f} ms per step, prefill included)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="random:qwen3-4b")
    parser.add_argument("--attention-backend", default="auto")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--loop-tokens", type=int, default=256)
    parser.add_argument("--kernels", action="store_true", help="also print GPU time per kernel (torch.profiler)")
    args = parser.parse_args()
    started = time.perf_counter()
    engine = Engine(EngineConfig(model=args.model, attention_backend=args.attention_backend,
                                 compile=not args.no_compile))
    print(f"engine ready in {time.perf_counter() - started:.0f} s", flush=True)
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        step_times(engine, batch, args.context, args.repeats, args.kernels)
        if args.loop_tokens:
            for check in (True, False):
                loop_rate(engine, batch, args.context, args.loop_tokens, check)


if __name__ == "__main__":
    main()
