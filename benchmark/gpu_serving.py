"""Serving throughput on a GPU, with its baseline and its floor, in one command.

    python -m benchmark.gpu_serving                       # random:qwen3-4b, a0 and a1, 1024 in / 1024 out
    python -m benchmark.gpu_serving --schedulers a1 --levels 1:4,32:32 --output-len 256

1. The floor: a decode step must read every weight and every cached key and value once, so
   at concurrency c with contexts of L tokens a step takes at least
   ``(weight bytes + c * L * KV bytes per token) / bandwidth``, with the bandwidth of a large
   device-to-device copy measured here. L is the mean context over a request's decode
   (input + output / 2).
2. The baselines: transformers' own ``generate`` at batch 1 (same model, SDPA attention), and
   its continuous batching (``generate_batch``) over --cb-requests prompts at once.
3. For each scheduler, ``python -m engine_core`` is started and ``benchmark.bench_serving``
   (random prompts of exactly --input-len tokens, exactly --output-len new tokens) runs each
   level ``concurrency:num_requests`` against it.

It prints one table (markdown) and writes every figure as JSON to --output-dir.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import torch

from engine_core import EngineConfig
from engine_core.kv_cache import KVPool
from engine_core.models import load_model

from .bench_engine import hf_decode_rate, hf_generate_batch_rate
from .gpu_report import copy_bandwidth


def measure_baseline(model: str, prompt_len: int, new_tokens: int, cb_requests: int) -> dict[str, float]:
    """Weights and KV bytes per token, copy bandwidth, transformers' generate at batch 1 and generate_batch."""
    loaded = load_model(EngineConfig(model=model, dtype="bfloat16", device="cuda"))
    hf = loaded.model
    hf.set_attn_implementation("sdpa")
    weights = sum(p.numel() * p.element_size() for p in hf.parameters())
    kv_per_token = KVPool.bytes_per_block(hf.config, 1, torch.bfloat16)
    bandwidth = copy_bandwidth(torch.device("cuda"))
    prompt = list(range(1000, 1000 + prompt_len))
    hf_decode_rate(hf, prompt, 4)
    rate = hf_decode_rate(hf, prompt, new_tokens)
    prompts = [[1000 + (7 * i + t) % 50000 for t in range(prompt_len)] for i in range(cb_requests)]
    cb_rate = hf_generate_batch_rate(hf, prompts, new_tokens) if cb_requests else 0.0
    del hf, loaded
    torch.cuda.empty_cache()
    return {"weight_bytes": weights, "kv_bytes_per_token": kv_per_token, "copy_bandwidth_bytes_s": bandwidth,
            "hf_generate_batch1_tok_s": rate, "hf_generate_batch_tok_s": cb_rate,
            "hf_generate_batch_requests": cb_requests}


def floor_tok_s(base: dict[str, float], concurrency: int, mean_context: float) -> float:
    step = ((base["weight_bytes"] + concurrency * mean_context * base["kv_bytes_per_token"])
            / base["copy_bandwidth_bytes_s"])
    return concurrency / step


def wait_healthy(port: int, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with status {server.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"the server was not ready after {timeout:.0f} s")


def run_scheduler(args: argparse.Namespace, scheduler: str, levels: list[tuple[int, int]]) -> list[dict]:
    out_dir: Path = args.output_dir
    log = (out_dir / f"server-{scheduler}.log").open("w")
    command = [sys.executable, "-m", "engine_core", "--model", args.model, "--scheduler", scheduler,
               "--impl", "solution", "--port", str(args.port), "--log-level", "warning", *args.server_args.split()]
    started = time.monotonic()
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    results = []
    try:
        wait_healthy(args.port, server, args.startup_timeout)
        print(f"{scheduler}: server ready in {time.monotonic() - started:.0f} s", flush=True)
        for concurrency, num_requests in levels:
            path = out_dir / f"{scheduler}-c{concurrency}.json"
            subprocess.run(
                [sys.executable, "-m", "benchmark.bench_serving", "--port", str(args.port), "--dataset", "random",
                 "--tokenizer", args.model, "--input-len", str(args.input_len), "--output-len", str(args.output_len),
                 "--concurrencies", str(concurrency), "--num-requests", str(num_requests), "--output-json", str(path)],
                check=True, stdout=subprocess.DEVNULL,
            )
            level = json.loads(path.read_text())["levels"][0]
            results.append({"scheduler": scheduler, **level})
            print(f"{scheduler} c={concurrency}: {level['output_throughput_tok_s']:.1f} tok/s, "
                  f"TPOT p50 {level['tpot_p50_ms']:.2f} ms, TTFT p50 {level['ttft_p50_ms']:.0f} ms", flush=True)
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    return results


def parse_levels(text: str) -> list[tuple[int, int]]:
    try:
        levels = [tuple(int(x) for x in part.split(":")) for part in text.split(",")]
    except ValueError:
        raise SystemExit(f"error: --levels {text!r}: expected concurrency:num_requests pairs, e.g. 1:8,32:64")
    if any(len(level) != 2 or min(level) < 1 for level in levels):
        raise SystemExit(f"error: --levels {text!r}: expected positive concurrency:num_requests pairs")
    return levels  # type: ignore[return-value]


def markdown(base: dict[str, float], rows: list[dict], mean_context: float) -> str:
    lines = ["| scheduler | concurrency | requests | output tok/s | decode tok/s per request (1/TPOT p50) | "
             "TTFT p50 (ms) | floor tok/s |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        c = row["concurrency"]
        lines.append(
            f"| {row['scheduler']} | {c} | {row['successes']}/{row['num_requests']} | "
            f"{row['output_throughput_tok_s']:.0f} | {1000 / row['tpot_p50_ms']:.0f} | {row['ttft_p50_ms']:.0f} | "
            f"{floor_tok_s(base, c, mean_context):.0f} |")
    lines.append(f"| transformers generate | 1 | - | {base['hf_generate_batch1_tok_s']:.1f} | - | - | "
                 f"{floor_tok_s(base, 1, mean_context):.0f} |")
    if base.get("hf_generate_batch_requests"):
        c = int(base["hf_generate_batch_requests"])
        lines.append(f"| transformers generate_batch | {c} (all at once) | - | "
                     f"{base['hf_generate_batch_tok_s']:.1f} | - | - | {floor_tok_s(base, c, mean_context):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model", default="random:qwen3-4b")
    parser.add_argument("--schedulers", default="a0,a1")
    parser.add_argument("--levels", default="1:8,32:64", help="concurrency:num_requests pairs")
    parser.add_argument("--scheduler-levels", action="append", default=[], metavar="SCHEDULER=LEVELS",
                        help="other levels for one scheduler, e.g. a0=1:8,32:16 (a0 serves one request at a time, "
                             "so its throughput does not depend on the number of requests)")
    parser.add_argument("--input-len", type=int, default=1024)
    parser.add_argument("--output-len", type=int, default=1024)
    parser.add_argument("--baseline-tokens", type=int, default=128, help="new tokens of the generate baseline")
    parser.add_argument("--cb-requests", type=int, default=32,
                        help="prompts of the generate_batch baseline (0: skip it)")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--server-args", default="", help="extra arguments for python -m engine_core")
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    parser.add_argument("--output-dir", type=Path, default=Path("gpu-serving"))
    args = parser.parse_args()
    levels = parse_levels(args.levels)
    overrides = {}
    for item in args.scheduler_levels:
        name, _, text = item.partition("=")
        overrides[name] = parse_levels(text)
    if not torch.cuda.is_available():
        raise SystemExit("error: this benchmark needs a CUDA GPU")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
    base = measure_baseline(args.model, args.input_len, args.baseline_tokens, args.cb_requests)
    print(f"copy bandwidth {base['copy_bandwidth_bytes_s'] / 1e12:.2f} TB/s, "
          f"weights {base['weight_bytes'] / 1e9:.2f} GB, "
          f"transformers generate batch 1: {base['hf_generate_batch1_tok_s']:.1f} tok/s, generate_batch of "
          f"{args.cb_requests}: {base['hf_generate_batch_tok_s']:.1f} tok/s", flush=True)
    rows = [row for scheduler in args.schedulers.split(",")
            for row in run_scheduler(args, scheduler, overrides.get(scheduler, levels))]
    mean_context = args.input_len + args.output_len / 2
    (args.output_dir / "summary.json").write_text(json.dumps({"baseline": base, "levels": rows}, indent=2) + "\n")
    print(markdown(base, rows, mean_context))


if __name__ == "__main__":
    main()
