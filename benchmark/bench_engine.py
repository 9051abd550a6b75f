"""Decode throughput of the engine at several batch sizes, beside transformers' ``generate``.

    python -m benchmark.bench_engine                       # bundled model, batch 1, 4, 16
    python -m benchmark.bench_engine --model random:qwen3-0.6b --dtype bfloat16 --batch-sizes 1,8

Both sides run greedy, with EOS ignored so that every run produces exactly ``--new-tokens``
tokens, on the same machine in the same process. Decode tokens/s counts only decode steps:
for the engine, the steps after the prefill forward; for ``generate``, the difference between
a run of N+1 new tokens and a run of 1 (which is the prefill). Each figure is the median of
``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from engine_core import Engine, EngineConfig, ForwardItem, SampleRow, SamplingParams

QUESTIONS = [
    "Tell me a story about a dragon who learns to bake bread.",
    "Explain how a bicycle stays upright.",
    "Write a short poem about the sea.",
    "What are the main causes of inflation?",
    "Describe the water cycle to a ten-year-old.",
    "Give me three ideas for a birthday party.",
    "Summarise the plot of Romeo and Juliet.",
    "How do vaccines train the immune system?",
]


def engine_decode_rate(engine: Engine, prompts: list[list[int]], new_tokens: int) -> float:
    """Decode tokens/s of one static batch: prefill all prompts, then decode them together."""
    params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
    blocks = [engine.allocator.allocate(engine.blocks_for(len(p) + new_tokens)) for p in prompts]
    outputs: list[list[int]] = [[] for _ in prompts]
    try:
        items = [ForwardItem(p, 0, b) for p, b in zip(prompts, blocks)]
        decode_start = 0.0
        for step in range(new_tokens):
            rows = [SampleRow(params, 0, step, p, o) for p, o in zip(prompts, outputs)]
            for out, token in zip(outputs, engine.step(items, rows).token_ids):
                out.append(token)
            if step == 0:
                decode_start = time.perf_counter()
            items = [ForwardItem([o[-1]], len(p) + step, b) for p, o, b in zip(prompts, outputs, blocks)]
        elapsed = time.perf_counter() - decode_start
    finally:
        for b in blocks:
            engine.allocator.free(b)
    return len(prompts) * (new_tokens - 1) / elapsed


def hf_decode_rate(model, prompt: list[int], new_tokens: int) -> float:
    """Decode tokens/s of transformers' greedy ``generate`` at batch 1."""
    model.generation_config.eos_token_id = None  # run the full length, like ignore_eos

    def run(n: int) -> float:
        start = time.perf_counter()
        model.generate(torch.tensor([prompt], device=model.device), max_new_tokens=n, do_sample=False, pad_token_id=0)
        return time.perf_counter() - start

    return (new_tokens - 1) / (run(new_tokens) - run(1))


def hf_generate_batch_rate(model, prompts: list[list[int]], new_tokens: int) -> float:
    """Output tokens/s of transformers' own continuous batching (``generate_batch``), every prompt at once."""
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
    start = time.perf_counter()
    outputs = model.generate_batch(inputs=prompts, generation_config=config)
    elapsed = time.perf_counter() - start
    return sum(len(out.generated_tokens) for out in outputs.values()) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-sizes", default="1,4,16")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-hf", action="store_true", help="skip transformers' generate")
    args = parser.parse_args()

    engine = Engine(EngineConfig(model=args.model, dtype=args.dtype, device=args.device))
    prompts = [engine.tokenizer.apply_chat_template([{"role": "user", "content": q}]) for q in QUESTIONS]
    print(f"model {engine.model_name}, {engine.device}, {engine.dtype}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.new_tokens} new tokens, median of {args.repeats}")
    rows = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        batch_prompts = [prompts[i % len(prompts)] for i in range(batch)]
        engine_decode_rate(engine, batch_prompts, 4)  # warm-up
        rate = statistics.median(engine_decode_rate(engine, batch_prompts, args.new_tokens)
                                 for _ in range(args.repeats))
        rows.append((f"engine, batch {batch}", rate, batch))
    if not args.no_hf:
        hf = _plain_hf_model(engine)
        hf_decode_rate(hf, prompts[0], 4)  # warm-up
        rate = statistics.median(hf_decode_rate(hf, prompts[0], args.new_tokens) for _ in range(args.repeats))
        rows.append(("transformers generate, batch 1", rate, 1))
    base = rows[-1][1] if not args.no_hf else None
    # A step's cost against the first batch size's: what batching costs on this device.
    first_step = rows[0][2] / rows[0][1]
    print(f"{'':32} {'decode tok/s':>12} {'vs generate':>12} {'ms per step':>12} {'step vs first':>14}")
    for name, rate, batch in rows:
        ratio = f"{rate / base:.2f}x" if base else "-"
        step = batch / rate
        print(f"{name:32} {rate:12.1f} {ratio:>12} {1000 * step:12.1f} {step / first_step:13.2f}x")


def _plain_hf_model(engine: Engine):
    """The same weights as a stock transformers model (its own attention, its own linears)."""
    from transformers import AutoModelForCausalLM

    from engine_core.models import bundled

    if engine.model_name.startswith("random:"):
        model = AutoModelForCausalLM.from_config(engine.model.config, dtype=engine.dtype, attn_implementation="sdpa")
    else:
        source = bundled.converted_dir(engine.config.cache_dir) if engine.model_name == "bundled" else engine.model_name
        model = AutoModelForCausalLM.from_pretrained(source, dtype=engine.dtype, attn_implementation="sdpa")
    return model.to(engine.device).eval()


if __name__ == "__main__":
    main()
