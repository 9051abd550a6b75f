"""Public tests for a5 (speculative decoding by prompt lookup). Run: ``pytest assignments/a5/tests``.

They call your scheduler's hooks directly, with no model. ``FakeLoop`` below plays the frozen
loop's part, and a *script* plays the model's: each request comes with the tokens the model
will generate, in order. After your plan passes the loop's checks (block tables cover the
drafts too, the step's budget, no block leaked), the loop accepts the longest prefix of the
drafts that matches the script, appends those tokens plus the script's next one, calls
``finish`` for a sequence that has its ``max_tokens`` (the script's length), then
``on_step_done`` with each sequence's ``StepResult``.
"""

from __future__ import annotations

from collections.abc import Callable

from engine_core.block_allocator import BlockAllocator
from engine_core.invariants import check_no_leaks, check_plan, check_released
from engine_core.sampling_params import SamplingParams
from engine_core.scheduler import ScheduledSeq, Scheduler, SchedulerContext, Sequence, SequenceStatus, StepResult

# A prompt that repeats itself, and a script that goes on copying it: its last tokens (1, 2, and
# then the first token generated, 3) appeared at its start, followed by 4 5 6 7 8.
REPEATING_PROMPT = [1, 2, 3, 4, 5, 6, 7, 8, 1, 2]
COPYING_SCRIPT = [3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6]


def context(num_blocks: int, max_num_seqs: int = 4, max_num_batched_tokens: int = 64,
            max_model_len: int = 128) -> SchedulerContext:
    """Blocks of 4 tokens, like the ``ctx`` fixture, with other limits."""
    return SchedulerContext(BlockAllocator(num_blocks), block_size=4, max_num_seqs=max_num_seqs,
                            max_num_batched_tokens=max_num_batched_tokens, max_model_len=max_model_len)


class FakeLoop:
    """The loop's part around a scheduler; each sequence's script stands in for the model."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.ctx = scheduler.ctx
        self.seqs: dict[str, Sequence] = {}
        self.scripts: dict[str, list[int]] = {}
        self.preempted: list[str] = []  # every preemption, in order
        self.drafted: dict[str, list[list[int]]] = {}  # each sequence's drafts, one list per step that had some
        self.accepted: dict[str, list[int]] = {}  # how many of those were accepted

    def add(self, name: str, prompt: list[int], script: list[int]) -> Sequence:
        """A request whose model will generate ``script`` (so ``max_tokens`` is its length)."""
        seq = Sequence(name, list(prompt), SamplingParams(max_tokens=len(script)), seed=0)
        self.scheduler.add(seq)
        self.seqs[name], self.scripts[name] = seq, list(script)
        self.drafted[name], self.accepted[name] = [], []
        return seq

    def live(self) -> list[Sequence]:
        return [seq for seq in self.seqs.values() if not seq.is_finished]

    def plan(self) -> list[ScheduledSeq]:
        """Ask for the next step's plan and check it as the loop does (it is not run yet)."""
        computed = {seq.request_id: seq.num_computed_tokens for seq in self.live()}
        plan = self.scheduler.schedule()
        victims = [s.request_id for s in self.live() if s.num_computed_tokens < computed[s.request_id]]
        self.preempted += victims
        planned = [entry.seq.request_id for entry in plan]
        assert not set(victims) & set(planned), f"{victims} preempted in this step but still in its plan {planned}"
        check_plan(plan, self.ctx, live=self.live())
        check_no_leaks(self.ctx.allocator, self.live(), [])
        return plan

    def run(self, plan: list[ScheduledSeq]) -> None:
        """Run a checked plan: verify drafts against the scripts, append, finish, then on_step_done."""
        results = [self._apply(entry) for entry in plan]
        for result in results:
            if result.finished:
                self.end(result.seq)
        self.scheduler.on_step_done(results)
        check_no_leaks(self.ctx.allocator, self.live(), [])

    def step(self) -> dict[str, ScheduledSeq]:
        """One step; returns its plan by request id."""
        plan = self.plan()
        self.run(plan)
        return {entry.seq.request_id: entry for entry in plan}

    def _apply(self, entry: ScheduledSeq) -> StepResult:
        seq, drafts = entry.seq, list(entry.draft_tokens)
        seq.status = SequenceStatus.RUNNING
        seq.num_computed_tokens += entry.num_tokens
        if seq.num_computed_tokens < seq.num_tokens:
            return StepResult(seq, [], 0, False)  # part of a prompt: nothing sampled
        truth = self.scripts[seq.request_id][len(seq.output_ids):]
        accepted = 0
        while accepted < min(len(drafts), len(truth)) and drafts[accepted] == truth[accepted]:
            accepted += 1
        seq.num_computed_tokens += accepted  # the accepted drafts' KV is valid
        if drafts:
            self.drafted[seq.request_id].append(drafts)
            self.accepted[seq.request_id].append(accepted)
        new = []
        for token in truth[:accepted + 1]:
            seq.output_ids.append(token)
            new.append(token)
            if len(seq.output_ids) >= seq.params.max_tokens or seq.num_tokens >= self.ctx.max_model_len:
                break
        finished = len(seq.output_ids) >= seq.params.max_tokens or seq.num_tokens >= self.ctx.max_model_len
        return StepResult(seq, new, accepted, finished)

    def end(self, seq: Sequence, reason: str = "length") -> None:
        """A sequence ended, or its client went away: mark it and call finish."""
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        self.scheduler.finish(seq)
        check_released(seq)
        check_no_leaks(self.ctx.allocator, self.live(), [])

    def run_until(self, done: Callable[[dict[str, ScheduledSeq]], bool], max_steps: int = 200) -> dict[str, ScheduledSeq]:
        """Step until ``done(plan)`` is true; returns that step's plan."""
        for _ in range(max_steps):
            plan = self.step()
            if done(plan):
                return plan
        left = [seq.request_id for seq in self.live()]
        raise AssertionError(f"not done after {max_steps} steps; still waiting or running: {left}")

    def run_to_end(self, max_steps: int = 200) -> None:
        self.run_until(lambda plan: not self.live(), max_steps)


def test_a_decode_drafts_the_tokens_that_followed_its_last_tokens_earlier(scheduler_cls: type[Scheduler],
                                                                          ctx: SchedulerContext):
    loop = FakeLoop(scheduler_cls(ctx))
    seq = loop.add("a", REPEATING_PROMPT, COPYING_SCRIPT)
    assert loop.step()["a"].draft_tokens == []  # the prompt: the loop samples one token, 3
    plan = loop.step()
    # Its last tokens 1 2 3 appeared at the start, followed by 4 5 6 7 8: up to MAX_DRAFT_TOKENS of them.
    assert plan["a"].num_tokens == 1 and plan["a"].draft_tokens == [4, 5, 6, 7]
    assert seq.output_ids == [3, 4, 5, 6, 7, 8]  # four accepted drafts and the model's own next token


def test_the_latest_earlier_occurrence_is_the_one_copied(scheduler_cls, ctx):
    loop = FakeLoop(scheduler_cls(ctx))
    loop.add("a", [1, 2, 3, 9, 9, 9, 1, 2, 3, 5, 5, 6, 1, 2], [3, 5, 5, 6, 1, 2])
    loop.step()
    assert loop.step()["a"].draft_tokens == [5, 5, 6, 1]  # after the second 1 2 3, not the first


def test_no_earlier_occurrence_means_no_drafts(scheduler_cls, ctx):
    loop = FakeLoop(scheduler_cls(ctx))
    seq = loop.add("a", [1, 2, 3, 4, 5, 6], [10, 11, 12, 13, 14, 15, 16, 17, 18])
    tables = []
    while not seq.is_finished:
        assert loop.step()["a"].draft_tokens == []
        tables.append(len(seq.block_table))
    # Without drafts a5 pages as a2 does: a new block only when the next token crosses into one.
    assert tables == [2, 2, 2, 3, 3, 3, 3, 4, 0]


def test_accepted_drafts_and_one_more_token_are_appended_the_rest_are_dropped(scheduler_cls, ctx):
    loop = FakeLoop(scheduler_cls(ctx))
    seq = loop.add("a", REPEATING_PROMPT, [3, 4, 5, 99, 98, 97, 96, 95])
    loop.step()
    assert loop.step()["a"].draft_tokens == [4, 5, 6, 7]
    assert seq.output_ids == [3, 4, 5, 99]  # 4 5 accepted, 6 rejected: the model's 99 instead
    assert seq.num_computed_tokens == seq.num_tokens - 1  # the KV of 6 and 7 is not kept
    loop.run_to_end()
    assert seq.output_ids == [3, 4, 5, 99, 98, 97, 96, 95]


def test_the_block_table_covers_the_drafts_before_the_step(scheduler_cls, ctx):
    loop = FakeLoop(scheduler_cls(ctx))
    seq = loop.add("a", REPEATING_PROMPT, COPYING_SCRIPT)  # 10 prompt tokens: 3 blocks of 4
    loop.step()
    plan = loop.plan()
    # The decode writes position 10, the four drafts 11-14: the last crosses into a 4th block.
    assert plan[0].draft_tokens == [4, 5, 6, 7] and len(seq.block_table) == 4
    loop.run(plan)


def test_no_draft_goes_past_max_tokens(scheduler_cls, ctx):
    loop = FakeLoop(scheduler_cls(ctx))
    seq = loop.add("a", REPEATING_PROMPT, [3, 4, 5])  # after the first token, two more to generate
    loop.step()
    assert loop.step()["a"].draft_tokens == [4]  # the step appends it and one more: 3 tokens in all
    assert seq.is_finished and seq.output_ids == [3, 4, 5]


def test_every_output_is_its_script_and_every_block_comes_back(scheduler_cls, ctx):
    loop = FakeLoop(scheduler_cls(ctx))
    loop.add("copies", REPEATING_PROMPT, COPYING_SCRIPT)
    loop.add("strays", REPEATING_PROMPT, [3, 4, 50, 6, 7, 51, 52, 1, 2, 3, 4, 5])
    loop.add("no-match", [20, 21, 22, 23, 24], [25, 26, 27, 28])
    loop.run_to_end()
    assert {name: seq.output_ids for name, seq in loop.seqs.items()} == loop.scripts
    assert sum(loop.accepted["copies"]) > 0 and loop.drafted["no-match"] == []
    assert loop.scheduler.schedule() == []
    assert ctx.allocator.num_free == ctx.allocator.num_blocks and ctx.allocator.total_refs == 0
