"""The frozen engine loop: a background thread that drives a scheduler and the engine.

Everything here is mechanism, not policy: taking requests in, asking the scheduler for a plan,
running it, appending tokens, stop conditions, streaming text out, aborts, and recovering from
a scheduler that raises. See ``scheduler.py`` for the hooks it calls.

Threads: the server's event loop calls :meth:`EngineLoop.submit` and :meth:`EngineLoop.abort`,
which only put a command in a queue. The loop thread calls each request's ``on_output``
callback, which must return at once (the server's callback hands the output to its event
loop), so no client, fast or slow, ever makes the loop wait.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import cast

from .engine import Engine
from .invariants import check_finish_freed, check_no_leaks, check_plan, check_released, describe_error
from .loop_records import TOTALS, LoopStats, OutputCallback, RequestOutput
from .model_runner import ForwardItem
from .sampler import SampleRow, TokenLogprobs
from .sampling_params import SamplingParams
from .scheduler import RequestRejected, ScheduledSeq, Scheduler, SchedulerContext, StepResult
from .sequence import Sequence, SequenceStatus
from .tokenizer import IncrementalDetokenizer, StopStringMatcher
from .watchdog import HookWatchdog

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 0.5
STALL_WARNING_SECONDS = 10.0


def _discard(output: RequestOutput) -> None:
    pass


@dataclass
class _Stream:
    """The loop's private per-request state: where output goes and how text is cut."""

    seq: Sequence
    on_output: OutputCallback
    detokenizer: IncrementalDetokenizer
    stops: StopStringMatcher
    pending_ids: list[int] = field(default_factory=list)
    pending_text: str = ""
    pending_logprobs: list[TokenLogprobs] = field(default_factory=list)
    # num_computed_tokens as the loop left it after the sequence's last step: a scheduler that
    # lowers it has preempted the sequence, one that raises it has found its prefix cached.
    computed_left: int = 0


class EngineLoop:
    """Runs ``scheduler_cls`` over ``engine`` in a background thread."""

    def __init__(
        self, engine: Engine, scheduler_cls: type[Scheduler], max_num_seqs: int = 64,
        max_num_batched_tokens: int = 2048, check_invariants: bool = True, chunked_prefill_size: int = 512,
        hook_timeout_s: float | None = None,
    ) -> None:
        """hook_timeout_s: when set, a scheduler hook running longer fails the requests in flight with
        a message naming where it is stuck (``watchdog.py``), and :attr:`stuck` says so until it returns."""
        self.engine = engine
        self.scheduler_cls = scheduler_cls
        self.ctx = SchedulerContext(
            allocator=engine.allocator, block_size=engine.block_size, max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max(max_num_batched_tokens, 1), max_model_len=engine.max_model_len,
            chunked_prefill_size=max(chunked_prefill_size, 1),
            ttft_slo_ms=engine.config.ttft_slo_ms, tpot_slo_ms=engine.config.tpot_slo_ms,
        )
        self.check_invariants = check_invariants
        self.scheduler = scheduler_cls(self.ctx)
        self._inbox: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
        self._streams: dict[str, _Stream] = {}
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._num_steps = 0
        # Totals the loop counts itself, so that no scheduler can forget or fake them; keys are
        # LoopStats field names.
        # Every key present from the start: stats() reads this from other threads, and a key added
        # while it iterates would break that read.
        self._totals: Counter[str] = Counter({name: 0 for name in TOTALS})
        self._idle_since: float | None = None
        self._watchdog = HookWatchdog(hook_timeout_s, self._fail_while_stuck) if hook_timeout_s else None

    # ---- called from other threads -------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)
        self._thread.start()
        if self._watchdog is not None:
            self._watchdog.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._watchdog is not None:
            self._watchdog.stop()
        self._inbox.put(("wake", None))
        if self._thread is not None:
            self._thread.join(timeout=30)

    def submit(self, request_id: str, prompt_ids: list[int], params: SamplingParams, on_output: OutputCallback) -> None:
        """Queue a request. Raises ValueError if it can never run (too long for the model)."""
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        total = len(prompt_ids) + params.max_tokens
        if total > self.engine.max_model_len:
            raise ValueError(
                f"this model's maximum context length is {self.engine.max_model_len} tokens, but the request "
                f"asks for {total} ({len(prompt_ids)} in the prompt, {params.max_tokens} to generate)"
            )
        if request_id in self._streams:
            raise ValueError(f"request id {request_id!r} is already in use")
        seed = params.seed if params.seed is not None else self.engine.new_seed()
        seq = Sequence(request_id, list(prompt_ids), params, seed)
        self._inbox.put(("add", (seq, on_output)))

    def abort(self, request_id: str) -> None:
        """Stop a request (its client went away); its blocks are released by the scheduler."""
        self._inbox.put(("abort", request_id))

    @property
    def stuck(self) -> str | None:
        """Why the loop is stuck in a scheduler hook past the watchdog's limit; None when it is not."""
        return self._watchdog.stuck_message if self._watchdog is not None else None

    def stats(self) -> LoopStats:
        seqs = [s.seq for s in list(self._streams.values())]
        running = sum(1 for s in seqs if s.status is SequenceStatus.RUNNING)
        allocator = self.ctx.allocator
        return LoopStats(running, len(seqs) - running, allocator.num_used, allocator.num_blocks, self._num_steps,
                         **self._totals)

    # ---- the loop thread -----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._drain_inbox(block=not self._streams)
            if not self._streams:
                continue
            try:
                did_work = self._step()
            except Exception as exc:  # a scheduler bug must not take the server down
                self._recover(exc)
                continue
            if not did_work:
                self._note_stall()
                self._drain_inbox(block=True, timeout=0.01)
        for stream in list(self._streams.values()):  # shutting down: nobody is left waiting
            self._finish(stream, "error", error="the server is shutting down")

    def _drain_inbox(self, block: bool, timeout: float = IDLE_POLL_SECONDS) -> None:
        try:
            command, arg = self._inbox.get(timeout=timeout) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            self._handle(command, arg)
            try:
                command, arg = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _handle(self, command: str, arg: object) -> None:
        try:
            if command == "add":
                seq, on_output = cast("tuple[Sequence, OutputCallback]", arg)
                if seq.request_id in self._streams:
                    on_output(RequestOutput(seq.request_id, [], "", None, seq.num_prompt_tokens, 0, True,
                                            "error", f"request id {seq.request_id!r} is already in use",
                                            rejected=True))
                    return
                self._streams[seq.request_id] = _Stream(
                    seq, on_output,
                    IncrementalDetokenizer(self.engine.tokenizer, seq.prompt_ids),
                    StopStringMatcher(seq.params.stop),
                )
                self._totals["num_prompt_tokens"] += seq.num_prompt_tokens
                try:
                    with self._hook("add"):
                        self.scheduler.add(seq)
                except RequestRejected as exc:  # this request alone: the scheduler is still sound
                    self._finish(self._streams[seq.request_id], "error", error=str(exc), rejected=True)
            elif command == "abort" and arg in self._streams:
                self._finish(self._streams[arg], "abort")
        except Exception as exc:
            self._recover(exc)

    def _step(self) -> bool:
        with self._hook("schedule"):
            plan = self.scheduler.schedule()
        if not plan:
            return False
        self._idle_since = None
        if self.check_invariants:
            live, held = self._live(), self.scheduler.held_blocks()
            check_plan(plan, self.ctx, live=live, held=held)
            check_no_leaks(self.ctx.allocator, live, held)
        self._count_plan(plan)
        items, rows, row_owner = self._build(plan)
        result = self.engine.step(items, rows)
        self._num_steps += 1
        results = self._apply(plan, result.token_ids, result.logprobs, row_owner)
        if self.check_invariants:
            check_no_leaks(self.ctx.allocator, self._live(), self.scheduler.held_blocks())
        with self._hook("on_step_done"):
            self.scheduler.on_step_done(results)
        return True

    def _count_plan(self, plan: list[ScheduledSeq]) -> None:
        """Preemptions, prefix-cache hits and drafts, read from how the plan left each sequence."""
        totals = self._totals
        for entry in plan:
            seq = entry.seq
            left = self._streams[seq.request_id].computed_left
            if seq.num_computed_tokens < left:
                totals["num_preemptions"] += 1
                totals["num_cached_tokens"] += seq.num_computed_tokens  # recomputed from a cached prefix, if any
            elif seq.num_computed_tokens > left:
                totals["num_cached_tokens"] += seq.num_computed_tokens - left
            if entry.draft_tokens:
                totals["num_drafts"] += 1
                totals["num_draft_tokens"] += len(entry.draft_tokens)

    def _build(self, plan: list[ScheduledSeq]) -> tuple[list[ForwardItem], list[SampleRow], list[int]]:
        items, rows, row_owner = [], [], []
        for index, entry in enumerate(plan):
            seq = entry.seq
            seq.status = SequenceStatus.RUNNING
            start = seq.num_computed_tokens
            tokens = seq.token_slice(start, start + entry.num_tokens) + list(entry.draft_tokens)
            reaches_end = start + entry.num_tokens == seq.num_tokens
            num_logits = 1 + len(entry.draft_tokens) if reaches_end else 0
            items.append(ForwardItem(tokens, start, list(seq.block_table), num_logits))
            for j in range(num_logits):
                # Row j samples the token after draft j; penalties see drafts as if accepted.
                output = seq.output_ids + list(entry.draft_tokens[:j]) if j else seq.output_ids
                rows.append(SampleRow(seq.params, seq.seed, len(output), seq.prompt_ids, output, seq.request_id))
                row_owner.append(index)
        return items, rows, row_owner

    def _apply(
        self, plan: list[ScheduledSeq], tokens: list[int], logprobs: list[TokenLogprobs | None], row_owner: list[int]
    ) -> list[StepResult]:
        sampled: dict[int, list[int]] = {}
        for row, index in enumerate(row_owner):
            sampled.setdefault(index, []).append(row)
        results = []
        for index, entry in enumerate(plan):
            seq = entry.seq
            seq.num_computed_tokens += entry.num_tokens
            rows = sampled.get(index, [])
            drafts = entry.draft_tokens
            accepted = 0
            while accepted < len(drafts) and tokens[rows[accepted]] == drafts[accepted]:
                accepted += 1
            seq.num_computed_tokens += accepted  # accepted drafts' KV is valid
            self._totals["num_accepted_tokens"] += accepted
            stream = self._streams[seq.request_id]
            stream.computed_left = seq.num_computed_tokens
            new_ids: list[int] = []
            reason = None
            for row in rows[:accepted + 1]:
                new_ids.append(tokens[row])
                reason = self._append(stream, tokens[row], logprobs[row])
                if reason:
                    break
            self._flush(stream)
            if reason:
                self._finish(stream, reason)
            results.append(StepResult(seq, new_ids, accepted, reason is not None))
        return results

    def _append(self, stream: _Stream, token: int, logprob: TokenLogprobs | None) -> str | None:
        """Append one token; returns a finish reason if it ends the sequence."""
        seq, params = stream.seq, stream.seq.params
        seq.output_ids.append(token)
        stream.pending_ids.append(token)
        if logprob is not None:
            stream.pending_logprobs.append(logprob)
        if token in params.stop_token_ids or (not params.ignore_eos and token in self.engine.tokenizer.eos_token_ids):
            return "stop"
        text, stopped = stream.stops.feed(stream.detokenizer.add(token))
        stream.pending_text += text
        if stopped:
            return "stop"
        if len(seq.output_ids) >= params.max_tokens or seq.num_tokens >= self.ctx.max_model_len:
            return "length"
        return None

    def _flush(self, stream: _Stream, **final: object) -> None:
        """Send what a request produced since its last output (if anything, or if final)."""
        if not (stream.pending_ids or stream.pending_text or final):
            return
        seq = stream.seq
        out = RequestOutput(
            seq.request_id, stream.pending_ids, stream.pending_text,
            stream.pending_logprobs if seq.params.logprobs is not None else None,
            seq.num_prompt_tokens, len(seq.output_ids), **final,  # type: ignore[arg-type]
        )
        stream.pending_ids, stream.pending_text, stream.pending_logprobs = [], "", []
        try:
            stream.on_output(out)
        except Exception:
            log.exception("output callback of request %s failed", seq.request_id)

    def _finish(self, stream: _Stream, reason: str, error: str | None = None, rejected: bool = False) -> None:
        seq = stream.seq
        if reason in ("stop", "length"):
            # The text held back (a partial UTF-8 character, a possible stop string) is final now.
            text, _ = stream.stops.feed(stream.detokenizer.flush())
            stream.pending_text += text + stream.stops.flush()
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        self.engine.sampler.forget(seq.request_id)
        if error is None:
            # Before the final output: if the scheduler breaks here, this request reports it.
            blocks = list(seq.block_table)
            with self._hook("finish"):
                self.scheduler.finish(seq)
            if self.check_invariants:
                check_released(seq)
                check_finish_freed(seq, blocks, self.ctx.allocator, self._live(), self.scheduler.held_blocks())
        del self._streams[seq.request_id]
        self._flush(stream, finished=True, finish_reason=reason, error=error, rejected=rejected)

    def _hook(self, name: str) -> AbstractContextManager[None]:
        return self._watchdog.watch(name) if self._watchdog is not None else nullcontext()

    def _fail_while_stuck(self, message: str) -> None:
        """From the watchdog's thread: tell every waiting client now, not when (if) the hook returns."""
        log.error("the scheduler is stuck: %s", message)
        for stream in list(self._streams.values()):
            seq, on_output = stream.seq, stream.on_output
            stream.on_output = _discard  # the loop's own final output, if it ever comes, goes nowhere
            on_output(RequestOutput(seq.request_id, [], "", None, seq.num_prompt_tokens, len(seq.output_ids),
                                    True, "error", f"scheduler stuck: {message}"))

    def _live(self) -> list[Sequence]:
        return [s.seq for s in self._streams.values()]

    def _recover(self, exc: Exception) -> None:
        """A scheduler hook raised: fail the requests in flight and start over with a fresh scheduler."""
        message = describe_error(exc)
        self._totals["num_scheduler_failures"] += 1
        log.error("scheduler failed, failing %d request(s): %s", len(self._streams), message,
                  exc_info=not isinstance(exc, NotImplementedError))
        for stream in list(self._streams.values()):
            stream.seq.block_table = []
            self._finish(stream, "error", error=message)
        # Its bookkeeping can no longer be trusted: every block goes back to the pool.
        self.ctx.allocator.reset()
        try:
            self.scheduler = self.scheduler_cls(self.ctx)
        except Exception as init_exc:
            log.error("cannot restart the scheduler: %s", describe_error(init_exc))

    def _note_stall(self) -> None:
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        elif now - self._idle_since > STALL_WARNING_SECONDS:
            log.warning("schedule() has returned no work for %.0f s while %d request(s) wait",
                        now - self._idle_since, len(self._streams))
            self._idle_since = now
