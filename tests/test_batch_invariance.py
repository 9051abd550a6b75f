"""A ragged batch gives every sequence exactly the tokens it gets alone.

The schedule below is written by hand so that one run covers: prompts of uneven lengths in one
forward, prefill and decode mixed in a step, a prompt prefilled in three chunks, and a sequence
whose first two KV blocks are shared with another sequence (a prefix-cache hit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from engine_core import Engine, ForwardItem, SampleRow, SamplingParams
from engine_core.model_runner import InvariantError

NEW_TOKENS = 12
GREEDY = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)


@dataclass
class Seq:
    prompt: list[int]
    blocks: list[int] = field(default_factory=list)
    output: list[int] = field(default_factory=list)
    computed: int = 0  # positions whose KV is in the pool

    def tokens(self) -> list[int]:
        return self.prompt + self.output


def run_step(engine: Engine, work: list[tuple[Seq, int]]) -> None:
    """Run ``n`` new tokens of each sequence; sample for those that reach their end."""
    items, rows, sampled = [], [], []
    for seq, n in work:
        tokens = seq.tokens()[seq.computed:seq.computed + n]
        reaches_end = seq.computed + n == len(seq.tokens())
        items.append(ForwardItem(tokens, seq.computed, seq.blocks, num_logits=int(reaches_end)))
        seq.computed += n
        if reaches_end:
            rows.append(SampleRow(GREEDY, seed=0, step=len(seq.output), prompt_ids=seq.prompt, output_ids=seq.output))
            sampled.append(seq)
    for seq, token in zip(sampled, engine.step(items, rows).token_ids):
        seq.output.append(token)


def decode_all(engine: Engine, seqs: list[Seq]) -> None:
    run_step(engine, [(s, 1) for s in seqs if len(s.output) < NEW_TOKENS])


def test_ragged_batch_equals_each_alone(engine, chat_prompts):
    bs = engine.block_size
    story, short, long_, poem = chat_prompts[1], chat_prompts[0], chat_prompts[2], chat_prompts[3]
    # A prompt that shares story's first two full blocks, then goes its own way.
    shared = story[:2 * bs] + engine.tokenizer.encode(" Actually, tell me about cats instead.")
    assert len(story) > 2 * bs and len(long_) > 3 * bs
    prompts = [story, short, long_, poem, shared]
    alone = [engine.generate([p], GREEDY)[0] for p in prompts]

    a, b, c, d, e = seqs = [Seq(p) for p in prompts]
    for seq in (a, b, c, d):
        seq.blocks = engine.allocator.allocate(engine.blocks_for(len(seq.prompt) + NEW_TOKENS))
    engine.allocator.share(a.blocks[:2])
    e.blocks = a.blocks[:2] + engine.allocator.allocate(engine.blocks_for(len(e.prompt) + NEW_TOKENS) - 2)
    try:
        third = len(c.prompt) // 3
        run_step(engine, [(a, len(a.prompt)), (c, third)])  # a whole prompt + a first chunk
        run_step(engine, [(a, 1), (b, len(b.prompt)), (c, third)])  # decode + prefill + chunk
        run_step(engine, [(c, len(c.prompt) - 2 * third), (a, 1), (b, 1), (d, len(d.prompt))])
        e.computed = 2 * bs  # its first two blocks hold the shared prefix already
        run_step(engine, [(b, 1), (e, len(e.prompt) - e.computed), (a, 1), (c, 1), (d, 1)])
        while any(len(s.output) < NEW_TOKENS for s in seqs):
            decode_all(engine, seqs)
    finally:
        for seq in seqs:
            engine.allocator.free(seq.blocks)
    assert engine.allocator.num_used == 0
    for name, seq, expected in zip("abcde", seqs, alone):
        assert seq.output == expected, f"sequence {name}: batched {seq.output} != alone {expected}"


def test_verify_several_tokens_in_one_forward(engine, chat_prompts):
    """Feeding k known tokens at once gives, at each position, the token greedy decoding picks next."""
    prompt = chat_prompts[1]
    expected = engine.generate([prompt], GREEDY)[0]
    blocks = engine.allocator.allocate(engine.blocks_for(len(prompt) + NEW_TOKENS))
    try:
        row = SampleRow(GREEDY, seed=0, step=0)
        first = engine.step([ForwardItem(prompt, 0, blocks)], [row]).token_ids
        drafts = expected[:5]
        checked = engine.step([ForwardItem(drafts, len(prompt), blocks, num_logits=5)], [row] * 5).token_ids
    finally:
        engine.allocator.free(blocks)
    assert first == expected[:1]
    assert checked == expected[1:6]


def test_block_table_too_short_is_refused(engine):
    blocks = engine.allocator.allocate(1)
    try:
        tokens = list(range(100, 100 + engine.block_size + 1))
        with pytest.raises(InvariantError, match="outside its blocks"):
            engine.runner.forward([ForwardItem(tokens, 0, blocks)])
    finally:
        engine.allocator.free(blocks)


def test_unallocated_block_is_refused(engine):
    free_block = engine.allocator.allocate(1)
    engine.allocator.free(free_block)
    with pytest.raises(InvariantError, match="not allocated"):
        engine.runner.forward([ForwardItem([1, 2, 3], 0, free_block)])
