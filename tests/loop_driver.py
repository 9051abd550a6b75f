"""Drive an EngineLoop from a test: submit requests, wait for them, collect what came out."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from engine_core import SamplingParams
from engine_core.loop import EngineLoop, RequestOutput


@dataclass
class Collected:
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    error: str | None = None
    num_outputs: int = 0


def run_requests(
    loop: EngineLoop, prompts: list[list[int]], params: SamplingParams | list[SamplingParams], timeout: float = 120
) -> list[Collected]:
    """Submit every prompt at once and wait until all have finished."""
    params_list = params if isinstance(params, list) else [params] * len(prompts)
    results = [Collected() for _ in prompts]
    done = threading.Semaphore(0)

    def collector(result: Collected):
        def on_output(out: RequestOutput) -> None:
            result.token_ids += out.new_token_ids
            result.text += out.new_text
            result.num_outputs += 1
            if out.finished:
                result.finish_reason, result.error = out.finish_reason, out.error
                done.release()
        return on_output

    for i, (prompt, p) in enumerate(zip(prompts, params_list)):
        loop.submit(f"req-{i}", prompt, p, collector(results[i]))
    for _ in prompts:
        assert done.acquire(timeout=timeout), "a request did not finish in time"
    return results
