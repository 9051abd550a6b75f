"""Hidden tests for a5 (speculative decoding by prompt lookup): the handout's rules where the
public tests only teach.

Not published (a ``test_*hidden*.py`` file): the grader runs them beside the public tests and
shows them to students once grades are published. Each one catches a mistake that passes every
public test. They drive the hooks with the public tests' ``FakeLoop``, whose scripts play the
model: a draft is accepted when it is the script's next token.
"""

from __future__ import annotations

import random

import pytest

from engine_core.scheduler import Scheduler

from .test_a5_public import COPYING_SCRIPT, REPEATING_PROMPT, FakeLoop, context


def rejecting_then_copying(rejected_cycles: int, copied_cycles: int) -> tuple[list[int], list[int]]:
    """A prompt and a script whose drafts are all rejected for a while, then all accepted.

    Every cycle of the script is 1 2 X Y Z. Each time the output ends in 1 2, the latest earlier
    1 2 was followed by the previous cycle's X Y Z 1, which the scheduler drafts; for
    ``rejected_cycles`` cycles the script has fresh X Y Z instead (no other suffix matches
    anything), then it repeats its last cycle, and every draft is right.
    """
    prompt = [1, 2, 10, 11, 12, 1]
    script = [2]
    for i in range(rejected_cycles):
        script += [100 + 3 * i, 101 + 3 * i, 102 + 3 * i, 1, 2]
    script += script[-5:] * copied_cycles
    return prompt, script


def test_drafts_never_preempt_another_sequence(scheduler_cls: type[Scheduler]):
    """A decode may preempt to get its block; drafts only take free blocks, and are cut to what they cover."""
    # 7 blocks: "old" (10 tokens) and "new" (12) take 3 each; "new"'s first decode takes the 7th.
    loop = FakeLoop(scheduler_cls(context(num_blocks=7)))
    loop.add("old", REPEATING_PROMPT, COPYING_SCRIPT)
    loop.add("new", [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31], [32, 33, 34, 35])
    loop.step()
    plan = loop.step()
    assert loop.preempted == [], "drafts took blocks that a running sequence needed"
    # "old" writes position 10 (its 3rd block); its drafts may only fill that block: position 11.
    assert plan["old"].draft_tokens == [4] and plan["new"].num_tokens == 1


def test_blocks_that_only_rejected_drafts_used_are_freed_after_the_step(scheduler_cls, ctx):
    """After the step a sequence keeps the blocks up to the one its newest token will be written to."""
    loop = FakeLoop(scheduler_cls(ctx))
    seq = loop.add("a", REPEATING_PROMPT, [3, 50, 51, 52, 53, 54])
    loop.step()
    plan = loop.plan()
    assert plan[0].draft_tokens == [4, 5, 6, 7] and len(seq.block_table) == 4  # drafts reach position 14
    loop.run(plan)
    # Every draft rejected: 12 tokens, the newest (position 11) goes into the 3rd block next step.
    assert seq.output_ids == [3, 50] and len(seq.block_table) == 3
    assert ctx.allocator.num_used == 3


def test_accepted_drafts_keep_their_blocks(scheduler_cls, ctx):
    """Blocks that hold accepted drafts hold real tokens now: they stay."""
    loop = FakeLoop(scheduler_cls(ctx))
    seq = loop.add("a", REPEATING_PROMPT, COPYING_SCRIPT)
    loop.step()
    loop.step()
    assert seq.output_ids == [3, 4, 5, 6, 7, 8] and len(seq.block_table) == 4  # 16 tokens: 4 blocks


def test_the_draft_length_shrinks_while_drafts_are_rejected_and_grows_back_when_they_are_accepted(scheduler_cls,
                                                                                                  ctx):
    """k: two more after a step that accepted every draft, one fewer after one that did not, within 1..4."""
    loop = FakeLoop(scheduler_cls(ctx))
    prompt, script = rejecting_then_copying(rejected_cycles=6, copied_cycles=4)
    seq = loop.add("a", prompt, script)
    loop.run_to_end()
    assert seq.output_ids == script
    lengths, accepted = [len(d) for d in loop.drafted["a"]], loop.accepted["a"]
    assert accepted[:6] == [0] * 6
    assert lengths[:6] == [4, 3, 2, 1, 1, 1], "the draft length does not shrink while every draft is rejected"
    assert lengths[6:9] == [1, 3, 4], "the draft length does not grow back while every draft is accepted"


def test_each_sequence_adapts_its_own_draft_length(scheduler_cls, ctx):
    """One sequence's rejected drafts do not shorten another's."""
    loop = FakeLoop(scheduler_cls(ctx))
    prompt, script = rejecting_then_copying(rejected_cycles=4, copied_cycles=0)
    loop.add("rejected", prompt, script)
    loop.add("copies", [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 40, 41],
             [42, 43, 44, 45, 46, 47, 48, 49, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 40, 41])
    loop.run_to_end()
    assert [len(d) for d in loop.drafted["rejected"]][:4] == [4, 3, 2, 1]
    assert all(len(d) == 4 for d in loop.drafted["copies"][:-1])  # the last is cut by max_tokens


def test_drafts_are_looked_up_in_the_output_too(scheduler_cls, ctx):
    """The n-gram may have occurred anywhere before: in the prompt or in what the sequence generated."""
    loop = FakeLoop(scheduler_cls(ctx))
    seq = loop.add("a", [1, 2, 3, 4, 5, 6], [7, 8, 9, 10] * 4)
    loop.run_to_end()
    assert seq.output_ids == [7, 8, 9, 10] * 4
    # The output's second 7 8 follows its first, which was followed by 9 10 7 8.
    assert loop.drafted["a"] and loop.drafted["a"][0] == [9, 10, 7, 8]
    assert sum(loop.accepted["a"]) >= 8


def test_drafts_use_only_the_budget_that_decodes_and_new_prompts_leave(scheduler_cls):
    """Drafts come last in a step: a waiting prompt is admitted before drafts spend the token budget."""
    loop = FakeLoop(scheduler_cls(context(num_blocks=32, max_num_batched_tokens=12)))
    for name, base in (("a", 10), ("b", 20), ("c", 30)):
        prompt = [base, base + 1, base + 2, base + 3, base, base + 1]  # 6 tokens
        loop.add(name, prompt, [base + 2, base + 3, base, base + 1] * 3)
    assert {name: entry.num_tokens for name, entry in loop.step().items()} == {"a": 6, "b": 6}
    plan = loop.step()  # 2 decodes and c's prompt: 8 tokens, 4 left for drafts, oldest first
    assert plan["c"].num_tokens == 6
    assert [len(plan[name].draft_tokens) for name in "ab"] == [4, 0]
    plan = loop.step()  # 3 decodes: 9 tokens left
    assert [len(plan[name].draft_tokens) for name in "abc"] == [4, 4, 1]


def test_drafts_never_keep_a_waiting_request_out(scheduler_cls):
    """Admission takes its blocks before drafts do: a request that fits starts, drafts get what is left."""
    # 7 blocks: "old" holds 3 and decodes into them; "next" (12 tokens) takes 3 and leaves the
    # watermark (1 block) free, which "old"'s drafts may then use. Drafts first would leave 3 free.
    loop = FakeLoop(scheduler_cls(context(num_blocks=7)))
    loop.add("old", REPEATING_PROMPT, COPYING_SCRIPT)
    loop.step()
    loop.add("next", [60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71], [72, 73])
    plan = loop.step()
    assert "next" in plan and plan["next"].num_tokens == 12
    assert plan["old"].draft_tokens == [4, 5, 6, 7]


def test_no_draft_goes_past_the_context_limit(scheduler_cls):
    """A sequence's drafts stop at max_model_len, as its output does."""
    loop = FakeLoop(scheduler_cls(context(num_blocks=32, max_model_len=14)))
    seq = loop.add("a", REPEATING_PROMPT, COPYING_SCRIPT)  # max_tokens 12, but the context ends at 14 tokens
    loop.run_to_end()
    assert seq.output_ids == COPYING_SCRIPT[:4]
    assert loop.drafted["a"] == [[4, 5, 6]]


def test_a_preempted_sequence_is_recomputed_without_drafts(scheduler_cls):
    """Drafts follow a decode token only: a recompute is a prefill, and its output stays its script."""
    loop = FakeLoop(scheduler_cls(context(num_blocks=8)))
    loop.add("older", [20, 21, 22, 23, 24], list(range(25, 45)))  # grows a block every 4 tokens
    script = COPYING_SCRIPT + COPYING_SCRIPT[:4]
    victim = loop.add("victim", REPEATING_PROMPT, script)  # grows faster: it copies
    plan = loop.run_until(lambda plan: bool(loop.preempted))
    assert loop.preempted == ["victim"] and "victim" not in plan
    plan = loop.run_until(lambda plan: "victim" in plan)
    assert plan["victim"].num_tokens > 1 and plan["victim"].draft_tokens == []
    loop.run_to_end()
    assert victim.output_ids == script


@pytest.mark.parametrize("seed", range(3))
def test_under_load_every_output_is_its_script_and_every_block_comes_back(scheduler_cls, seed):
    """Requests that copy, stray and abort, in a pool that runs out: outputs, blocks and drafts stay right."""
    rng = random.Random(seed)
    ctx = context(num_blocks=10)
    loop = FakeLoop(scheduler_cls(ctx))
    for t in range(400):
        if t < 30 and t % 2 == 0:
            passage = [rng.randint(100, 999) for _ in range(rng.randint(3, 6))]
            script = [rng.choice(passage) if rng.random() < 0.2 else tok for tok in passage * 8][:rng.randint(8, 24)]
            loop.add(f"r{t}", passage * 2, script)  # at most 36 tokens: 9 blocks
        holding = [seq for seq in loop.live() if seq.block_table]
        if t == 12 and holding:
            loop.end(holding[-1], "abort")  # its client went away while it ran
        loop.step()
        if t >= 30 and not loop.live():
            break
    assert not loop.live() and loop.preempted
    finished = {name: seq.output_ids for name, seq in loop.seqs.items() if seq.finish_reason == "length"}
    assert finished == {name: loop.scripts[name] for name in finished}
    assert sum(sum(a) for a in loop.accepted.values()) > 0
    assert ctx.allocator.num_free == ctx.allocator.num_blocks and ctx.allocator.total_refs == 0
