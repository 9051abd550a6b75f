"""Everything the GPU path is judged on, in one run (one call to a GPU host).

    python -m benchmark.gpu_report                      # all checks and timings
    python -m benchmark.gpu_report --only backends,parity

1. backends: each CUDA attention backend against the reference backend on random packed
   batches (prefills, chunks, decodes mixed): relative error and that no output is left unset.
2. parity: greedy tokens of ``random:qwen3-0.6b`` (bf16) with each CUDA backend against the
   reference backend: share of identical tokens and where the first divergence is.
3. decode: decode tokens/s of ``random:qwen3-4b`` (bf16) at several batch sizes, beside
   transformers' ``generate`` at batch 1, and the memory-bandwidth floor of a decode step
   (weights + KV bytes read per step / measured device-to-device copy bandwidth).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from engine_core import Engine, EngineConfig, SamplingParams
from engine_core.attention import BACKENDS, BatchLayout, create_backend
from engine_core.kv_cache import KVPool

from .bench_engine import engine_decode_rate, hf_decode_rate


def check_backends(device: torch.device) -> None:
    torch.manual_seed(0)
    heads, kv_heads, dim, bs = 32, 8, 128, 16
    pool = KVPool(1, kv_heads, dim, 512, bs, torch.bfloat16, device)
    pool.storage.normal_()
    # (cached tokens, new tokens) per sequence: a prefill, a chunk continuation, decodes, a verify step
    shapes = [(0, 300), (100, 37), (511, 1), (64, 1), (2000, 1), (40, 5)]
    tables, next_block = [], 0
    for cached, new in shapes:
        n = -(-(cached + new) // bs)
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
    ref_pool = KVPool(1, kv_heads, dim, 512, bs, torch.bfloat16, device)
    ref_pool.storage.copy_(pool.storage)
    ref = reference.forward(q.float(), k.float(), v.float(), _float(ref_pool), 0, reference.prepare(layout), dim**-0.5)
    for name in BACKENDS:
        if name == "torch_ref":
            continue
        backend = create_backend(name, device)
        out = backend.forward(q, k, v, pool, 0, backend.prepare(layout), dim**-0.5).float()
        err = ((out - ref).norm() / ref.norm()).item()
        print(f"backend {name}: rel error vs reference {err:.2e}, all written: {bool(torch.isfinite(out).all())}")


def _float(pool: KVPool) -> KVPool:
    copy = KVPool(pool.num_layers, pool.storage.shape[3], pool.storage.shape[4], pool.num_blocks,
                  pool.block_size, torch.float32, pool.storage.device)
    copy.storage.copy_(pool.storage)
    return copy


def check_parity(new_tokens: int) -> None:
    prompts = None
    outputs = {}
    for name in ["torch_ref", *[b for b in BACKENDS if b != "torch_ref"]]:
        engine = Engine(EngineConfig(model="random:qwen3-0.6b", dtype="bfloat16", attention_backend=name,
                                     kv_cache_bytes=4 << 30))
        if prompts is None:
            prompts = [engine.tokenizer.encode(t) for t in ("Hello there, how are you today?",
                                                             "Write a long story about a lighthouse keeper. " * 8)]
        params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
        outputs[name] = engine.generate(prompts, params)
        del engine
        torch.cuda.empty_cache()
    for name, outs in outputs.items():
        if name == "torch_ref":
            continue
        for i, (got, ref) in enumerate(zip(outs, outputs["torch_ref"])):
            same = sum(a == b for a, b in zip(got, ref))
            first = next((j for j, (a, b) in enumerate(zip(got, ref)) if a != b), None)
            print(f"parity {name} prompt {i}: {same}/{len(ref)} identical, first divergence at {first}")


def copy_bandwidth(device: torch.device) -> float:
    a = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    torch.cuda.synchronize()
    return 2 * a.numel() * 10 / (time.perf_counter() - start)  # bytes moved (read + written) per second


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
    args = parser.parse_args()
    parts = args.only.split(",")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    if "backends" in parts:
        check_backends(torch.device("cuda"))
    if "parity" in parts:
        check_parity(args.new_tokens)
    if "decode" in parts:
        decode_rates([int(b) for b in args.batch_sizes.split(",")], args.new_tokens, args.prompt_len)


if __name__ == "__main__":
    main()
