"""Everything the GPU path is judged on, in one run (one call to a GPU host).

    python -m benchmark.gpu_report                      # all checks and timings
    python -m benchmark.gpu_report --only backends,parity

1. backends: each CUDA attention backend against the reference backend on random packed
   batches (prefills, chunks, decodes mixed): relative error and that no output is left unset.
2. parity: greedy tokens of ``random:qwen3-0.6b`` (bf16) with each CUDA backend against the
   reference backend: share of identical tokens and where the first divergence is; then the
   same engine with and without CUDA graphs (graph replays against eager steps).
3. decode: decode tokens/s of ``random:qwen3-4b`` (bf16) at several batch sizes, beside
   transformers' ``generate`` at batch 1, and the memory-bandwidth floor of a decode step
   (weights + KV bytes read per step / measured device-to-device copy bandwidth).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import Any

import torch

from engine_core import Engine, EngineConfig, SamplingParams
from engine_core.attention import BACKENDS, BatchLayout, create_backend
from engine_core.block_allocator import blocks_for
from engine_core.kv_cache import KVPool
from engine_core.model_runner import ForwardItem

from .bench_engine import engine_decode_rate, hf_decode_rate


def check_backends(device: torch.device) -> None:
    torch.manual_seed(0)
    # (cached tokens, new tokens) per sequence: a prefill, a chunk continuation, decodes, a verify
    # step; then a decode-only step (5 rows, padded to 8 by the flex backend)
    for shapes in ([(0, 300), (100, 37), (511, 1), (64, 1), (2000, 1), (40, 5)],
                   [(511, 1), (64, 1), (2000, 1), (15, 1), (0, 1)]):
        _check_step(shapes, device)


def _check_step(shapes: list[tuple[int, int]], device: torch.device) -> None:
    heads, kv_heads, dim, bs = 32, 8, 128, 16
    pool = KVPool(1, kv_heads, dim, 512, bs, torch.bfloat16, device)
    pool.storage.normal_()
    tables, next_block = [], 0
    for cached, new in shapes:
        n = blocks_for(cached + new, bs)
        tables.append(list(range(next_block, next_block + n)))
        next_block += n
    slots = [t[p // bs] * bs + p % bs for (c, n), t in zip(shapes, tables) for p in range(c, c + n)]
    layout = BatchLayout([n for _, n in shapes], [c + n for c, n in shapes], tables,
                         torch.tensor(slots, device=device), bs)
    total = sum(n for _, n in shapes)
    q = torch.randn(total, heads, dim, device=device, dtype=torch.bfloat16)
    k = torch.randn(total, kv_heads, dim, device=device, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    reference = create_backend("torch_ref", device)
    float_pool = _float(pool)
    ref = reference.forward(q.float(), k.float(), v.float(), float_pool, 0, reference.prepare(layout, float_pool),
                            dim**-0.5)
    for name in BACKENDS:
        if name == "torch_ref":
            continue
        backend = create_backend(name, device)
        test_pool = KVPool(1, kv_heads, dim, 512, bs, torch.bfloat16, device)
        test_pool.storage.copy_(pool.storage)
        out = backend.forward(q, k, v, test_pool, 0, backend.prepare(layout, test_pool), dim**-0.5).float()
        err = ((out - ref).norm() / ref.norm()).item()
        # Every slot but the scratch block's must hold what the reference wrote.
        kv_err = ((test_pool.storage[:, :, :-bs].float() - float_pool.storage[:, :, :-bs]).abs().max()).item()
        print(f"backend {name:6s} {len(shapes)} seqs {total:4d} new tokens: rel error vs reference {err:.2e}, "
              f"shape {tuple(out.shape)}, all finite {bool(torch.isfinite(out).all())}, KV pool max diff {kv_err:.1e}")


def _float(pool: KVPool) -> KVPool:
    copy = KVPool(pool.num_layers, pool.storage.shape[3], pool.storage.shape[4], pool.num_blocks,
                  pool.block_size, torch.float32, pool.storage.device)
    copy.storage.copy_(pool.storage)
    return copy


def check_parity(new_tokens: int) -> None:
    """Greedy tokens and one decode step's logits of each CUDA backend against the reference.

    Decode steps are compiled (torch.compile) unless the name says otherwise; CUDA graphs are
    off here (``check_graphs`` compares them with eager steps).
    """
    variants: dict[str, dict[str, Any]] = {name: {"attention_backend": name} for name in BACKENDS}
    variants["triton, not compiled"] = {"attention_backend": "triton", "compile": False}
    prompts = None
    outputs, logits = {}, {}
    for name, options in variants.items():
        engine = Engine(EngineConfig(model="random:qwen3-0.6b", dtype="bfloat16", kv_cache_bytes=4 << 30,
                                     cuda_graph_max_batch_size=0, **options))
        if prompts is None:
            prompts = [engine.tokenizer.encode(t) for t in ("Hello there, how are you today?",
                                                             "Write a long story about a lighthouse keeper. " * 8)]
        params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
        outputs[name] = engine.generate(prompts, params)
        logits[name] = _decode_logits(engine, prompts[1])
        del engine
        torch.cuda.empty_cache()
    for name, outs in outputs.items():
        if name != "torch_ref":
            err = ((logits[name] - logits["torch_ref"]).norm() / logits["torch_ref"].norm()).item()
            print(f"parity {name} vs torch_ref: decode-step logits rel error {err:.2e}")
            _compare(f"parity {name} vs torch_ref", outs, outputs["torch_ref"])


def _decode_logits(engine: Engine, prompt: list[int]) -> torch.Tensor:
    """Float logits of one decode step: the prompt but its last token cached, then that token."""
    blocks = engine.allocator.allocate(engine.blocks_for(len(prompt)))
    try:
        engine.runner.forward([ForwardItem(prompt[:-1], 0, blocks, num_logits=0)])
        return engine.runner.forward([ForwardItem(prompt[-1:], len(prompt) - 1, blocks)]).float()
    finally:
        engine.allocator.free(blocks)


def _compare(what: str, got: list[list[int]], expected: list[list[int]]) -> None:
    for i, (a, b) in enumerate(zip(got, expected)):
        same = sum(x == y for x, y in zip(a, b))
        first = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), None)
        print(f"{what} prompt {i}: {same}/{len(b)} identical, first divergence at {first}")


def check_graphs(new_tokens: int) -> None:
    """The same engine replaying CUDA graphs and running eagerly: 5 prompts (padded to 8)."""
    outputs = []
    for graphs in (0, 64):
        engine = Engine(EngineConfig(model="random:qwen3-0.6b", dtype="bfloat16", kv_cache_bytes=4 << 30,
                                     cuda_graph_max_batch_size=graphs))
        prompts = [engine.tokenizer.encode(f"Prompt number {i}: " + "tell me more. " * (3 * i)) for i in range(5)]
        params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
        start = time.perf_counter()
        outputs.append(engine.generate(prompts, params))
        print(f"graphs {'on' if graphs else 'off'}: {5 * new_tokens / (time.perf_counter() - start):.1f} tok/s")
        del engine
        torch.cuda.empty_cache()
    _compare("graphs vs eager", outputs[1], outputs[0])


def copy_bandwidth(device: torch.device, size: int = 1 << 30, repeats: int = 20) -> float:
    """Bytes moved (read + written) per second by a large device-to-device copy."""
    a = torch.empty(size, dtype=torch.uint8, device=device).random_()
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        b.copy_(a)
    end.record()
    end.synchronize()
    return 2 * size * repeats / (start.elapsed_time(end) / 1000)


def decode_rates(batch_sizes: list[int], new_tokens: int, prompt_len: int) -> None:
    engine = Engine(EngineConfig(model="random:qwen3-4b", dtype="bfloat16"))
    print(f"decode: random:qwen3-4b bf16, backend {type(engine.backend).__name__}, prompt {prompt_len}, "
          f"{new_tokens} new tokens, {engine.kv.num_blocks} KV blocks")
    prompt = list(range(1000, 1000 + prompt_len))
    bandwidth = copy_bandwidth(engine.device)
    weights = sum(p.numel() * p.element_size() for p in engine.model.parameters())
    per_token_kv = KVPool.bytes_per_block(engine.model.config, 1, engine.dtype)
    for batch in batch_sizes:
        engine_decode_rate(engine, [prompt] * batch, 4)
        rate = statistics.median(engine_decode_rate(engine, [prompt] * batch, new_tokens) for _ in range(3))
        kv_bytes = batch * per_token_kv * (prompt_len + new_tokens // 2)
        floor = (weights + kv_bytes) / bandwidth  # a step reads weights and KV once
        print(f"decode batch {batch:3d}: {rate:9.1f} tok/s  ({1000 * batch / rate:6.2f} ms/step; "
              f"bandwidth floor {1000 * floor:5.2f} ms/step = {batch / floor:8.1f} tok/s)")
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_config(engine.model.config, dtype=engine.dtype, attn_implementation="sdpa")
    del engine
    torch.cuda.empty_cache()
    hf = hf.to("cuda").eval()
    hf_decode_rate(hf, prompt, 4)
    print(f"transformers generate batch 1: {hf_decode_rate(hf, prompt, min(new_tokens, 128)):.1f} tok/s; "
          f"copy bandwidth {bandwidth / 1e12:.2f} TB/s (read+write)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="backends,parity,decode")
    parser.add_argument("--batch-sizes", default="1,8,32,64")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-len", type=int, default=1024)
    parser.add_argument("--parity-tokens", type=int, default=256)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parts = args.only.split(",")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    if "backends" in parts:
        check_backends(torch.device("cuda"))
    if "parity" in parts:
        check_parity(args.parity_tokens)
        check_graphs(args.parity_tokens)
    if "decode" in parts:
        decode_rates([int(b) for b in args.batch_sizes.split(",")], args.new_tokens, args.prompt_len)


if __name__ == "__main__":
    main()
