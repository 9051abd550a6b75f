"""a5's extension, the SLO-aware reference (``solutions/a5/slo_scheduler.py``): admission by slack.

Unit tests on its hooks with no model, like a5's own tests. They live here, not in
``solutions/a5/tests``: every test there is a graded test case of a student's a5 (the tests
part splits its points across them), and these test the reference's extension, which a
student need not write.
"""

from __future__ import annotations

import time

from engine_core.block_allocator import BlockAllocator
from engine_core.sampling_params import SamplingParams
from engine_core.scheduler import SchedulerContext, Sequence
from solutions.a5.scheduler import SpeculativeScheduler
from solutions.a5.slo_scheduler import SloScheduler

TOKEN_SECONDS = 0.01  # what a prompt token costs, fixed here (the scheduler measures it on real steps)


def context(ttft_slo_ms: float) -> SchedulerContext:
    """Blocks of 4 tokens, 64 tokens per step, prompts in chunks of 16."""
    return SchedulerContext(BlockAllocator(64), block_size=4, max_num_seqs=8, max_num_batched_tokens=64,
                            max_model_len=256, chunked_prefill_size=16, ttft_slo_ms=ttft_slo_ms)


def request(name: str, prompt_len: int, arrived_ago: float, now: float) -> Sequence:
    return Sequence(name, [1] * prompt_len, SamplingParams(max_tokens=4), seed=0, arrival_time=now - arrived_ago)


def queue(scheduler: SpeculativeScheduler) -> dict[str, Sequence]:
    """A long prompt that came first, then two short ones; a 1 s TTFT target and 10 ms per prompt token."""
    now = time.monotonic()
    seqs = {"long": request("long", 120, 0.10, now),     # needs 1.2 s, 0.9 s left: it misses whatever happens
            "early": request("early", 8, 0.05, now),     # 0.08 s needed, 0.95 s left: slack 0.87 s
            "late": request("late", 8, 0.0, now)}        # slack 0.92 s
    for seq in seqs.values():
        scheduler.add(seq)
    return seqs


def test_requests_that_can_make_their_deadline_go_first_least_slack_first():
    scheduler = SloScheduler(context(ttft_slo_ms=1000))
    scheduler.token_seconds = TOKEN_SECONDS
    seqs = queue(scheduler)
    now = time.monotonic()
    assert scheduler.slack(seqs["early"], now) < scheduler.slack(seqs["late"], now)
    assert scheduler.slack(seqs["long"], now) < 0
    plan = scheduler.schedule()
    # The long prompt goes last, and still starts: a chunk of what the step has left.
    assert [(e.seq.request_id, e.num_tokens) for e in plan] == [("early", 8), ("late", 8), ("long", 16)]
    assert not scheduler.waiting


def test_first_come_first_served_without_a_target_and_in_the_a5_reference():
    for scheduler in (SloScheduler(context(ttft_slo_ms=0)), SpeculativeScheduler(context(ttft_slo_ms=1000))):
        queue(scheduler)
        # a2's rule: the long prompt came first, takes the whole step, and the short ones wait behind it.
        assert [(e.seq.request_id, e.num_tokens) for e in scheduler.schedule()] == [("long", 64)]
        assert [seq.request_id for seq in scheduler.waiting] == ["early", "late"]


def test_a_preempted_sequence_goes_before_new_requests_and_a_late_one_waits_its_turn():
    scheduler = SloScheduler(context(ttft_slo_ms=1000))
    scheduler.token_seconds = TOKEN_SECONDS
    seqs = queue(scheduler)
    now = time.monotonic()
    preempted = request("preempted", 8, 5.0, now)
    preempted.output_ids = [2, 3]  # its first token is out: recomputing it is a TPOT matter
    scheduler.waiting.append(preempted)
    order = sorted(scheduler.waiting, key=lambda seq: scheduler.urgency(seq, now))
    assert [seq.request_id for seq in order] == ["preempted", "early", "late", "long"]
    # Requests that miss anyway keep their order of arrival among themselves.
    missed = request("missed", 8, 2.0, now)
    assert scheduler.urgency(missed, now) < scheduler.urgency(seqs["long"], now)


def test_the_opt_in_is_on_the_extension_only():
    assert SloScheduler.slo_aware is True and SpeculativeScheduler.slo_aware is False
