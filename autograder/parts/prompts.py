"""The correctness part's prompts, one set per workload, as token ids (deterministic).

Each workload is built to make a scheduler do what an assignment teaches, so that a wrong
implementation of it shows in the outputs (and the part's ``min_*`` counts can require it):

``chat``
    Chat prompts of quite different lengths (a1 and up).
``shared-prefix``
    Plain-text prompts that share block-aligned prefixes, three levels deep: a root of
    :data:`ROOT_BLOCKS` blocks that every prompt starts with, then one of two branches of
    :data:`BRANCH_BLOCKS` blocks, then a short suffix of its own. In each cycle of six, one
    prompt has the root and a suffix only, and the second and the sixth are the root and a
    branch with no suffix: identical and block-aligned, so a cache may hold every block of the
    sixth, yet its last token must still run and write into a block no other sequence holds.
    Four requests apart, the first of the two has usually finished (and been cached) when the
    second arrives, at a concurrency up to 4. For prefix caching (a4).
``repetitive``
    A passage repeated two and a half times, so that greedy decoding goes on copying it and
    drafts looked up from the prompt's n-grams get accepted. For prompt-lookup decoding (a5).
``long-prompt-mix``
    One prompt in four is longer than the step's token budget (``long_len`` tokens); the others
    are short chats. For chunked prefill (a3).

Text comes from ``benchmark.serving_data``'s synthetic English, so nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from benchmark.serving_data import synthetic_texts

if TYPE_CHECKING:
    from engine_core.tokenizer import ChatTokenizer

QUESTIONS = (
    "Hi",
    "Write a short poem about the sea.",
    "Tell me a story about a dragon who learns to bake bread.",
    "What is the capital of France, and why is it famous?",
    "List three fruits that are red.",
    ("Explain, step by step and in plain words, how a bicycle stays upright while moving, what role the rider "
     "plays, why it is harder to balance when going slowly, and what the trail of the front fork has to do with "
     "it. Then give three tips for beginners."),
    "How do I boil an egg?",
    "Describe the water cycle to a ten-year-old, mentioning evaporation, condensation and precipitation.",
    "Why is the sky blue?",
    ("You are planning a weekend trip to the mountains with two friends who have never hiked before. Suggest a "
     "packing list, a simple two-day route with rest stops, and a few safety rules everyone should follow, "
     "including what to do if the weather turns bad."),
    "Translate 'good morning' into Spanish.",
    "Give me one tip to sleep better.",
)
ROOT_BLOCKS = 3
BRANCH_BLOCKS = 2
REPEATED_PASSAGE_TOKENS = 24
LONG_PROMPT_EVERY = 4
TEXT_SEED = 7


@dataclass(frozen=True)
class PromptSet:
    """A workload's prompts, and what in them should make a scheduler cache, draft or chunk."""

    prompts: list[list[int]]
    feature: str = ""  # e.g. "the prompts share block-aligned prefixes of 48 and 80 tokens"


def build_prompts(workload: str, tokenizer: ChatTokenizer, count: int, block_size: int,
                  long_len: int) -> PromptSet:
    """``count`` prompts of ``workload`` (one of ``autograder.spec.CORRECTNESS_WORKLOADS``)."""
    builders: dict[str, Callable[[], PromptSet]] = {
        "chat": lambda: PromptSet(chat_prompts(tokenizer, count)),
        "shared-prefix": lambda: shared_prefix_prompts(tokenizer, count, block_size),
        "repetitive": lambda: repetitive_prompts(tokenizer, count),
        "long-prompt-mix": lambda: long_prompt_mix(tokenizer, count, long_len),
    }
    return builders[workload]()


def chat_prompts(tokenizer: ChatTokenizer, count: int) -> list[list[int]]:
    """``count`` chat prompts of different lengths (token ids); questions repeat with a variant number."""
    prompts = []
    for i in range(count):
        question = QUESTIONS[i % len(QUESTIONS)]
        if i >= len(QUESTIONS):
            question += f" (variant {i // len(QUESTIONS)})"
        prompts.append(tokenizer.apply_chat_template([{"role": "user", "content": question}]))
    return prompts


class _TokenSource:
    """Consecutive, never reused stretches of synthetic text, as token ids."""

    def __init__(self, tokenizer: ChatTokenizer) -> None:
        self._tokens = [t for text in synthetic_texts(200, TEXT_SEED) for t in tokenizer.encode(" " + text)]
        self._next = 0

    def take(self, n: int) -> list[int]:
        if self._next + n > len(self._tokens):
            self._next = 0  # a very large spec: text repeats, prompts still differ by their place
        piece = self._tokens[self._next:self._next + n]
        self._next += n
        return piece


def shared_prefix_prompts(tokenizer: ChatTokenizer, count: int, block_size: int) -> PromptSet:
    source = _TokenSource(tokenizer)
    root = source.take(ROOT_BLOCKS * block_size)
    branches = [source.take(BRANCH_BLOCKS * block_size) for _ in range(2)]
    prompts = []
    for i in range(count):
        suffix = source.take(3 + i % 7)
        shape = i % 6
        if shape in (0, 2):
            prompts.append(root + branches[0] + suffix)
        elif shape in (1, 5):  # the identical, block-aligned pair
            prompts.append(root + branches[1])
        elif shape == 3:
            prompts.append(root + suffix)
        else:
            prompts.append(root + branches[1] + suffix)
    shared = (ROOT_BLOCKS * block_size, (ROOT_BLOCKS + BRANCH_BLOCKS) * block_size)
    feature = (f"the prompts share block-aligned prefixes ({shared[0]} tokens shared by all, {shared[1]} by each "
               "branch, and some prompts are identical)")
    return PromptSet(prompts, feature)


def repetitive_prompts(tokenizer: ChatTokenizer, count: int) -> PromptSet:
    source = _TokenSource(tokenizer)
    prompts = []
    for _ in range(count):
        passage = source.take(REPEATED_PASSAGE_TOKENS)
        prompts.append(passage + passage + passage[:REPEATED_PASSAGE_TOKENS // 2])
    feature = (f"each prompt repeats a {REPEATED_PASSAGE_TOKENS}-token passage, so greedy decoding goes on "
               "copying it")
    return PromptSet(prompts, feature)


def long_prompt_mix(tokenizer: ChatTokenizer, count: int, long_len: int) -> PromptSet:
    source = _TokenSource(tokenizer)
    short = chat_prompts(tokenizer, count)
    # The first long prompt comes second, so that short requests are running when it arrives.
    prompts = [source.take(long_len) if i % LONG_PROMPT_EVERY == 1 else short[i] for i in range(count)]
    if count == 1:
        prompts = [source.take(long_len)]
    feature = f"one prompt in {LONG_PROMPT_EVERY} has {long_len} tokens"
    return PromptSet(prompts, feature)
