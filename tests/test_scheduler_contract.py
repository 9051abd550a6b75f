"""The frozen loop with the a0 and a1 schedulers, and what it tells a scheduler that breaks the contract."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine_core import Engine, EngineConfig, SamplingParams
from engine_core.loop import EngineLoop
from engine_core.scheduler import ScheduledSeq
from engine_core.scheduler_loader import SchedulerLoadError, load_scheduler
from solutions.a1.scheduler import ContinuousBatchingScheduler

from .loop_driver import run_requests
from .schedulers.rejects_long_requests import RejectsLongRequestsScheduler

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)


@pytest.fixture
def make_loop(engine: Engine) -> Iterator:
    loops: list[EngineLoop] = []

    def make(scheduler_cls, **kwargs) -> EngineLoop:
        loop = EngineLoop(engine, scheduler_cls, **kwargs)
        loop.start()
        loops.append(loop)
        return loop

    yield make
    for loop in loops:
        loop.stop()
    engine.allocator.reset()


@pytest.mark.parametrize("assignment", ["a0", "a1"])
def test_solution_outputs_equal_each_request_alone(engine, make_loop, chat_prompts, assignment):
    alone = [engine.generate([p], GREEDY)[0] for p in chat_prompts]
    loop = make_loop(load_scheduler(assignment, "solution"))
    results = run_requests(loop, chat_prompts * 2, GREEDY)
    for result, expected in zip(results, alone * 2):
        assert result.finish_reason == "length" and result.error is None
        assert result.token_ids == expected
        assert result.text == engine.tokenizer.decode(expected)
    assert engine.allocator.num_used == 0


def test_a1_batches_where_a0_does_not(engine, make_loop, chat_prompts):
    steps = {}
    for assignment in ("a0", "a1"):
        loop = make_loop(load_scheduler(assignment, "solution"))
        run_requests(loop, chat_prompts, GREEDY)
        steps[assignment] = loop.stats().num_steps
        loop.stop()
    # a0 runs the requests one after another; a1 prefills them together and decodes them together.
    assert steps["a0"] == len(chat_prompts) * GREEDY.max_tokens
    assert steps["a1"] == GREEDY.max_tokens


def test_stop_strings_eos_and_max_tokens(engine, make_loop, chat_prompts):
    loop = make_loop(ContinuousBatchingScheduler)
    free_run = run_requests(loop, [chat_prompts[1]], SamplingParams(temperature=0, max_tokens=40, ignore_eos=True))[0]
    words = free_run.text.split()
    stop = words[3]
    cut = free_run.text.index(stop)
    stopped, natural = run_requests(
        loop, [chat_prompts[1], chat_prompts[0]],
        [SamplingParams(temperature=0, max_tokens=40, stop=[stop]), SamplingParams(temperature=0, max_tokens=64)],
    )
    assert stopped.finish_reason == "stop" and stopped.text == free_run.text[:cut]
    assert natural.finish_reason == "stop" and natural.token_ids[-1] in engine.tokenizer.eos_token_ids
    assert engine.allocator.num_used == 0


class _Broken(ContinuousBatchingScheduler):
    """Turns one correct a1 plan into a broken one, in the way named by ``mistake``."""

    mistake = ""

    def schedule(self) -> list[ScheduledSeq]:
        plan = super().schedule()
        if not plan:
            return plan
        if self.mistake == "twice":
            plan.append(plan[0])
        elif self.mistake == "too_many_tokens":
            plan[0].num_tokens += 1
        elif self.mistake == "short_table" and len(plan[0].seq.block_table) > 1:
            self.ctx.allocator.free(plan[0].seq.block_table[-1:])
            plan[0].seq.block_table = plan[0].seq.block_table[:-1]
            plan[0].num_tokens = plan[0].seq.num_uncomputed_tokens
        elif self.mistake == "leak":
            self.ctx.allocator.allocate(1)
        return plan

    def finish(self, seq) -> None:
        if self.mistake == "keeps_blocks":
            self.running.remove(seq)
            return
        if self.mistake == "leaks_in_finish":  # forgets the blocks instead of freeing them
            self.running.remove(seq)
            seq.block_table = []
            return
        super().finish(seq)


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        ("twice", "scheduled twice in one step"),
        ("too_many_tokens", "uncomputed"),
        ("short_table", "needs .* blocks"),
        ("leak", "leaked"),
        ("keeps_blocks", "finish\\(\\) left .* blocks"),
    ],
)
def test_invariant_violations_fail_requests_with_a_clear_message(make_loop, engine, chat_prompts, mistake, message):
    broken = type(f"Broken_{mistake}", (_Broken,), {"mistake": mistake})
    loop = make_loop(broken)
    long_prompt = chat_prompts[2]  # more than one block, for the short-table case
    results = run_requests(loop, [long_prompt], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    assert results[0].finish_reason == "error"
    assert results[0].error and pytest.importorskip("re").search(message, results[0].error), results[0].error
    # The loop recovered: a fresh scheduler, every block back in the pool.
    assert engine.allocator.num_used == 0


def test_a_leak_in_finish_is_reported_on_the_request_that_leaked_naming_its_blocks(make_loop, engine, chat_prompts):
    broken = type("Broken_leaks_in_finish", (_Broken,), {"mistake": "leaks_in_finish"})
    loop = make_loop(broken)
    blocks: dict[str, list[int]] = {}
    original = broken.schedule

    def schedule(self):  # remember each sequence's blocks, to check the message names them
        plan = original(self)
        for entry in plan:
            blocks[entry.seq.request_id] = list(entry.seq.block_table)
        return plan

    broken.schedule = schedule
    short, long = run_requests(loop, chat_prompts[:2], [SamplingParams(temperature=0, max_tokens=2, ignore_eos=True),
                                                        SamplingParams(temperature=0, max_tokens=50, ignore_eos=True)])
    assert short.finish_reason == "error"
    assert "finish() of sequence 'req-0' leaked" in short.error
    assert ", ".join(map(str, blocks["req-0"][:3])) in short.error
    assert loop.stats().num_scheduler_failures == 1
    assert engine.allocator.num_used == 0


def test_a_rejected_request_fails_alone(engine, make_loop, chat_prompts):
    alone = [engine.generate([p], GREEDY)[0] for p in chat_prompts[:2]]
    loop = make_loop(RejectsLongRequestsScheduler)
    big = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
    first, rejected, second = run_requests(loop, [chat_prompts[0], chat_prompts[2], chat_prompts[1]], [GREEDY, big, GREEDY])
    assert rejected.finish_reason == "error" and rejected.error == "request req-1 asks for too much"
    assert rejected.token_ids == []
    # The others were neither failed nor restarted: they run to the end with their usual outputs.
    assert (first.finish_reason, first.token_ids) == ("length", alone[0])
    assert (second.finish_reason, second.token_ids) == ("length", alone[1])
    assert engine.allocator.num_used == 0


def test_unimplemented_hook_names_file_and_hook(make_loop, chat_prompts):
    loop = make_loop(load_scheduler("a1"))  # the untouched skeleton
    [result] = run_requests(loop, [chat_prompts[0]], GREEDY)
    assert result.finish_reason == "error"
    assert "assignments/a1/scheduler.py" in result.error and "add() is not implemented" in result.error
    assert "\n" not in result.error


def test_loader_finds_modules_by_assignment_and_dotted_path():
    assert load_scheduler("a1", "solution") is ContinuousBatchingScheduler
    assert load_scheduler("solutions.a0.scheduler").__name__ == "FCFSScheduler"
    assert load_scheduler("a1").__module__ == "assignments.a1.scheduler"


@pytest.mark.parametrize(
    ("name", "message"),
    [("a9", "no scheduler module assignments.a9.scheduler"), ("engine_core.sampler", "exactly one concrete subclass")],
)
def test_loader_errors_are_one_line(name, message):
    with pytest.raises(SchedulerLoadError, match=message) as err:
        load_scheduler(name)
    assert "\n" not in str(err.value)


def test_the_servers_slo_targets_reach_the_scheduler_context(engine):
    from engine_core.__main__ import build_config, build_parser

    config = build_config(build_parser().parse_args(
        ["--device", "cpu", "--dtype", "float32", "--ttft-slo-ms", "1500", "--tpot-slo-ms", "120"]))
    assert (config.ttft_slo_ms, config.tpot_slo_ms) == (1500, 120)
    with_targets = EngineLoop(Engine(config), ContinuousBatchingScheduler)  # not started: only its context is read
    assert (with_targets.ctx.ttft_slo_ms, with_targets.ctx.tpot_slo_ms) == (1500, 120)
    # No flag, no target: 0, which existing schedulers never read.
    assert (EngineLoop(engine, ContinuousBatchingScheduler).ctx.ttft_slo_ms, engine.config.tpot_slo_ms) == (0, 0)
    with pytest.raises(ValueError, match="^tpot_slo_ms must be at least 0"):
        EngineConfig(tpot_slo_ms=-5)
    with pytest.raises(ValueError, match="^ttft_slo_ms must be at least 0"):
        EngineConfig(ttft_slo_ms=float("nan"))
