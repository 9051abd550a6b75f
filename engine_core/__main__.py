"""``python -m engine_core``: serve a model over the OpenAI API with a chosen scheduler.

    python -m engine_core                                   # bundled model, your a1 scheduler
    python -m engine_core --scheduler a1 --impl solution    # the reference scheduler
    python -m engine_core --model Qwen/Qwen3-4B-Instruct-2507 --served-model-name qwen

Students run this many times a day with half-finished code and mistyped flags, so every
foreseeable mistake (an unknown model, a scheduler module that does not import, a bad value)
ends with one line on stderr and exit status 2, never a traceback. A scheduler that raises
*while serving* is a different matter: the loop fails the requests in flight, logs it, and
carries on with a fresh scheduler.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

# Only light modules here: --help and usage errors answer before torch is imported.
from .config import ATTENTION_BACKENDS, BUNDLED_MODEL, MAX_REQUEST_BYTES, EngineConfig

log = logging.getLogger("engine_core")

USAGE_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m engine_core",
        description="Serve a model over the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models, "
                    "/health, /metrics) with a scheduler of your choice.",
    )
    p.add_argument("--model", default=BUNDLED_MODEL,
                   help="'bundled' (SmolLM2-135M-Instruct), 'random:<preset>', a local directory or a hub id")
    p.add_argument("--scheduler", default="a1", help="an assignment (a0, a1, ...) or a dotted module path")
    p.add_argument("--impl", choices=["student", "solution"], default="student",
                   help="for an assignment: your code (assignments/) or the reference (solutions/)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: this machine only; 0.0.0.0 for every interface, e.g. "
                        "on a GPU node that clients reach over the network, best with --api-key)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="weights and KV dtype; auto: float32 on CPU, bfloat16 on CUDA")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--block-size", type=int, default=16, help="tokens per KV block")
    p.add_argument("--kv-cache-memory-gb", type=float, default=None,
                   help="GiB of memory for the KV pool (default: 1 on CPU, 90%% of free GPU memory on CUDA)")
    p.add_argument("--num-kv-blocks", type=int, default=None,
                   help="KV pool size in blocks, instead of sizing it from --kv-cache-memory-gb "
                        "(a small pool forces preemption)")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="longest sequence (prompt + output) accepted (default: the model's limit)")
    p.add_argument("--max-num-seqs", type=int, default=64, help="most sequences in one step")
    p.add_argument("--max-num-batched-tokens", type=int, default=None,
                   help="most tokens in one step (default: 2048 on CPU, 8192 on CUDA, where a large prefill "
                        "step costs little more than a small one)")
    p.add_argument("--chunked-prefill-size", type=int, default=512,
                   help="most prompt tokens one step prefills, for schedulers that chunk prompts (a3 on)")
    p.add_argument("--ttft-slo-ms", type=float, default=0.0,
                   help="target time to first token in ms, from a request's arrival, for SLO-aware schedulers "
                        "(ctx.ttft_slo_ms; 0: none)")
    p.add_argument("--tpot-slo-ms", type=float, default=0.0,
                   help="target time per output token in ms after the first, for SLO-aware schedulers "
                        "(ctx.tpot_slo_ms; 0: none)")
    p.add_argument("--max-pending-requests", type=int, default=256,
                   help="most requests in flight; more get 503 with Retry-After")
    p.add_argument("--api-key", default=os.environ.get("ENGINE_CORE_API_KEY"),
                   help="require 'Authorization: Bearer <key>' on /v1/ routes (default: $ENGINE_CORE_API_KEY, "
                        "else no key); /health and /metrics stay open")
    p.add_argument("--max-request-bytes", type=int, default=MAX_REQUEST_BYTES,
                   help="largest request body accepted; larger ones get 413")
    p.add_argument("--trust-request-chat-template", action="store_true",
                   help="run chat templates that requests send in chat_template_kwargs (refused by default: "
                        "a template is code the server runs)")
    p.add_argument("--shutdown-timeout", type=float, default=10.0,
                   help="on Ctrl+C or SIGTERM, seconds to let running requests finish before they are cut off")
    p.add_argument("--hook-timeout", type=float, default=10.0,
                   help="seconds a scheduler hook may run before the waiting requests fail with where it is stuck "
                        "(0: never)")
    p.add_argument("--seed", type=int, default=0, help="seed for random: weights and for requests without a seed")
    p.add_argument("--served-model-name", default=None,
                   help="the model name /v1/models lists and requests must send (default: the --model value); "
                        "requests that omit \"model\" are accepted too")
    p.add_argument("--attention-backend", choices=["auto", *ATTENTION_BACKENDS], default="auto",
                   help="auto: triton (paged decode) with varlen prefill on CUDA, torch_ref on CPU")
    p.add_argument("--enforce-eager", action="store_true",
                   help="on CUDA, run every step eagerly instead of replaying captured CUDA graphs for decode")
    p.add_argument("--cuda-graph-max-batch-size", type=int, default=64,
                   help="on CUDA, the largest decode batch captured as a CUDA graph (rounded up to a power of two)")
    p.add_argument("--no-compile", action="store_true",
                   help="on CUDA, do not torch.compile decode steps (faster start-up, slower decode)")
    p.add_argument("--no-check-invariants", action="store_true",
                   help="skip the per-step checks of the scheduler's plans (faster, hides scheduler bugs)")
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"], default="info",
                   help="logging level of the engine and the HTTP server")
    return p


def build_config(args: argparse.Namespace) -> EngineConfig:
    """The engine config of the command line; ValueError says which value is wrong."""
    positive = {"--block-size": args.block_size, "--max-num-seqs": args.max_num_seqs,
                "--max-pending-requests": args.max_pending_requests,
                "--chunked-prefill-size": args.chunked_prefill_size, "--max-request-bytes": args.max_request_bytes}
    if args.max_num_batched_tokens is not None:
        positive["--max-num-batched-tokens"] = args.max_num_batched_tokens
    if args.max_model_len is not None:
        positive["--max-model-len"] = args.max_model_len
    if args.num_kv_blocks is not None:
        positive["--num-kv-blocks"] = args.num_kv_blocks
    if not args.enforce_eager:
        positive["--cuda-graph-max-batch-size"] = args.cuda_graph_max_batch_size
    for flag, value in positive.items():
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, not {value}")
    kv_bytes = None
    if args.kv_cache_memory_gb is not None:
        if not args.kv_cache_memory_gb > 0:
            raise ValueError(f"--kv-cache-memory-gb must be positive, not {args.kv_cache_memory_gb}")
        kv_bytes = int(args.kv_cache_memory_gb * 2**30)
    if not args.hook_timeout >= 0:
        raise ValueError(f"--hook-timeout must be at least 0 seconds (0: never), not {args.hook_timeout}")
    if not args.shutdown_timeout >= 0:
        raise ValueError(f"--shutdown-timeout must be at least 0 seconds, not {args.shutdown_timeout}")
    for flag, value in (("--ttft-slo-ms", args.ttft_slo_ms), ("--tpot-slo-ms", args.tpot_slo_ms)):
        if not value >= 0:  # also catches nan
            raise ValueError(f"{flag} must be at least 0 (0: no target), not {value}")
    config = EngineConfig(
        model=args.model, dtype=args.dtype, device=args.device, block_size=args.block_size,
        kv_cache_bytes=kv_bytes, num_kv_blocks=args.num_kv_blocks, max_model_len=args.max_model_len,
        attention_backend=args.attention_backend,
        check_invariants=not args.no_check_invariants, seed=args.seed,
        cuda_graph_max_batch_size=0 if args.enforce_eager else args.cuda_graph_max_batch_size,
        compile=not args.no_compile, ttft_slo_ms=args.ttft_slo_ms, tpot_slo_ms=args.tpot_slo_ms,
    )
    import torch

    try:
        device = config.resolved_device()
    except RuntimeError as err:  # torch's message for a malformed device string
        raise ValueError(f"--device {args.device!r}: {str(err).splitlines()[0]}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available on this machine")
    if device.type != "cuda" and args.attention_backend not in ("auto", "torch_ref"):
        raise ValueError(f"--attention-backend {args.attention_backend} needs a CUDA device; use torch_ref or auto")
    config.resolved_dtype()
    return config


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = getattr(logging, args.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from .engine import Engine
    from .loop import EngineLoop
    from .models import ModelLoadError
    from .scheduler_loader import SchedulerLoadError, load_scheduler
    from .server import create_app

    try:
        config = build_config(args)
        # The scheduler first: it fails in a second, the model may take a minute to load.
        scheduler_cls = load_scheduler(args.scheduler, args.impl)
        engine = Engine(config)
    except (ValueError, ModelLoadError, SchedulerLoadError) as err:
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return USAGE_ERROR

    served_name = args.served_model_name or args.model
    batched_tokens = args.max_num_batched_tokens or (8192 if engine.device.type == "cuda" else 2048)
    loop = EngineLoop(engine, scheduler_cls, max_num_seqs=args.max_num_seqs,
                      max_num_batched_tokens=batched_tokens, chunked_prefill_size=args.chunked_prefill_size,
                      check_invariants=not args.no_check_invariants, hook_timeout_s=args.hook_timeout or None)
    app = create_app(loop, served_name, max_pending_requests=args.max_pending_requests, api_key=args.api_key or None,
                     max_body_bytes=args.max_request_bytes,
                     trust_request_chat_template=args.trust_request_chat_template)
    log.info(
        "serving %s as %r on %s (%s): %d KV blocks of %d tokens, max model len %d, scheduler %s.%s, "
        "http://%s:%d/v1",
        engine.model_name, served_name, engine.device, str(engine.dtype).removeprefix("torch."),
        engine.kv.num_blocks, engine.block_size, engine.max_model_len,
        scheduler_cls.__module__, scheduler_cls.__qualname__, args.host, args.port,
    )
    loop.start()
    try:
        # In the main thread, so that Ctrl+C and SIGTERM shut the server down gracefully.
        uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                      lifespan="off", timeout_graceful_shutdown=args.shutdown_timeout)).run()
    finally:
        loop.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
