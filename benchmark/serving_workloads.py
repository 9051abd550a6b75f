"""The serving benchmark's requests: lengths, prompts and the four workloads.

Everything here is a pure function of its arguments (the seed included), so the same seed
gives the same request list on every run, and tests need no server.

Lengths follow ``--randomness`` r: each request's length is a uniform integer in
``[max(1, round(r * target)), target]`` (r=1: exactly the target; r=0: anything from 1).
With ``--output-slack`` s above 1, a request asks for ``ceil(s * length)`` output tokens
(its ``output_len``, sent as ``max_tokens``) and may stop at EOS before that.

Arrival order is list order: the closed-loop clients take requests one after another.
Each concurrency level gets its own requests (``level`` shifts where in the text pool the
prompts start), so a server with prefix caching cannot reuse one level's prompts in the next.

The workloads (their one-paragraph descriptions in :data:`WORKLOADS` are ``--help``'s):

``default``
    One dataset text per request, padded with the texts after it and cut to the length.
``shared-prefix``
    G groups (8, fewer for under 32 requests). A group's prefix is ``round(0.75 * input_len)``
    tokens of reference text; each request appends ``" Question: " + text`` cut to the rest
    (drawn with the randomness rule). Everything is in the one user message, which works with
    any chat template (some refuse a system message); the question starts with a space and a
    word, where byte-level BPE always starts a new token, so the prefix's tokens are identical
    in every request of its group. Request i belongs to group i mod G.
``long-prompt-mix``
    ``round(0.05 * n)`` requests (at least one), at evenly spread positions, get
    ``min(4 * input_len, 32768, server context - output_len - 64)`` tokens; the others get
    ``input_len // 8``. Both are drawn with the randomness rule.
``repetitive``
    Synthetic Python functions that all use one identifier X, then "Repeat it exactly,
    changing X to Y." The code is cut so the whole message has the target length (within a
    token: trailing whitespace is stripped so that the join is stable, and code is never
    padded with filler words); prompts are at least ~30 tokens, whatever the target.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from .serving_data import WORDS, TextFitter

LONG_PROMPT_SHARE = 0.05
LONG_PROMPT_FACTOR = 4
LONG_PROMPT_CAP = 32768  # tokens; the server's own limit lowers it further when known
SHORT_PROMPT_DIVISOR = 8
SHARED_PREFIX_FRACTION = 0.75
SHARED_PREFIX_MAX_GROUPS = 8
SHARED_PREFIX_MIN_GROUP_SIZE = 4
REPETITIVE_MIN_BODY = 8  # tokens of code at the least, whatever the target

WORKLOADS: dict[str, str] = {
    "default": "each request is one chat prompt from the dataset, cut or padded to its input length.",
    "shared-prefix": (
        f"{SHARED_PREFIX_MAX_GROUPS} groups (fewer when a group would get under "
        f"{SHARED_PREFIX_MIN_GROUP_SIZE} requests); "
        f"all requests of a group start with the same {SHARED_PREFIX_FRACTION:.0%} of --input-len tokens "
        "(reference material, like a long system prompt or few-shot block) followed by a distinct "
        "question of the remaining tokens; groups are interleaved in arrival order (request i belongs "
        "to group i mod G). Stresses prefix caching."
    ),
    "long-prompt-mix": (
        f"{LONG_PROMPT_SHARE:.0%} of requests (at least one, spread evenly) have "
        f"{LONG_PROMPT_FACTOR}x --input-len tokens (capped at {LONG_PROMPT_CAP} and by the server's "
        f"context), the rest are short chats of --input-len/{SHORT_PROMPT_DIVISOR}. Exposes prefill "
        "stalls in the short requests' inter-token latency."
    ),
    "repetitive": (
        "each prompt is synthetic Python code followed by 'Repeat it exactly, changing X to Y.', so "
        "the answer copies most of the prompt. For speculative decoding by prompt lookup; set "
        "--output-len near --input-len. Prompts are never shorter than about 30 tokens."
    ),
}


@dataclass(frozen=True)
class WorkloadSpec:
    """What to generate: one level's worth of requests."""

    workload: str = "default"
    num_requests: int = 100
    input_len: int = 1024
    output_len: int = 1024
    randomness: float = 1.0
    seed: int = 0
    max_input_len: int | None = None  # longest prompt the server takes, when it says
    output_slack: float = 1.0  # each request asks for ceil(slack x its sampled output length)


@dataclass(frozen=True)
class ServingRequest:
    """One request: the user message, its token count, and how many tokens to ask for.

    ``input_len`` is the measured token count of ``prompt`` (the message content alone, without
    the chat template): the sampled target, except where a workload says otherwise.
    ``output_len`` is the request's ``max_tokens``: the sampled length times the output slack.
    ``group`` is the shared-prefix group; ``kind`` is ``chat``, ``long``, ``short`` or ``repeat``;
    ``copy_text`` is the text a repetitive prompt asks to copy.
    """

    prompt: str
    input_len: int
    output_len: int
    kind: str = "chat"
    group: int | None = None
    copy_text: str | None = None

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.prompt}]


def length_range(target: int, randomness: float) -> tuple[int, int]:
    """The inclusive range that lengths are drawn from."""
    if target < 1:
        raise ValueError(f"a target length must be at least 1, not {target}")
    if not 0.0 <= randomness <= 1.0:
        raise ValueError(f"randomness must be between 0 and 1, not {randomness}")
    return max(1, min(target, round(randomness * target))), target


def sample_lengths(target: int, randomness: float, count: int, rng: random.Random) -> list[int]:
    """``count`` lengths, each uniform in :func:`length_range`."""
    low, high = length_range(target, randomness)
    return [rng.randint(low, high) for _ in range(count)]


def max_output_len(output_len: int, slack: float) -> int:
    """The ``max_tokens`` of a request whose sampled output length is ``output_len``."""
    if slack < 1.0:
        raise ValueError(f"the output slack must be at least 1, not {slack}")
    # 10 x 1.1 is 11.000000000000002 in floating point, and must ask for 11.
    return math.ceil(output_len * slack - 1e-9)


def _rng(spec: WorkloadSpec, level: int, purpose: str) -> random.Random:
    # One generator per purpose, so that e.g. the output lengths do not change when the
    # prompt construction draws a different number of random numbers.
    return random.Random(f"{spec.seed}:{level}:{purpose}")


def _cycle(texts: list[str], start: int) -> Iterator[str]:
    i = start
    while True:
        yield texts[i % len(texts)]
        i += 1


def build_requests(spec: WorkloadSpec, texts: list[str], fitter: TextFitter, level: int = 0) -> list[ServingRequest]:
    """The requests of one concurrency level, in arrival order."""
    if spec.workload not in WORKLOADS:
        raise ValueError(f"unknown workload {spec.workload!r}; choose one of {', '.join(WORKLOADS)}")
    if spec.num_requests < 1:
        raise ValueError("num_requests must be at least 1")
    if not texts and spec.workload != "repetitive":
        raise ValueError("no prompt texts to build requests from")
    sampled = sample_lengths(spec.output_len, spec.randomness, spec.num_requests, _rng(spec, level, "output"))
    outputs = [max_output_len(n, spec.output_slack) for n in sampled]
    start = level * spec.num_requests
    if spec.workload == "shared-prefix":
        return _shared_prefix(spec, texts, fitter, level, start, outputs)
    if spec.workload == "long-prompt-mix":
        return _long_prompt_mix(spec, texts, fitter, level, start, outputs)
    if spec.workload == "repetitive":
        return _repetitive(spec, fitter, level, outputs)
    inputs = sample_lengths(spec.input_len, spec.randomness, spec.num_requests, _rng(spec, level, "input"))
    requests = []
    for i, (n_in, n_out) in enumerate(zip(inputs, outputs)):
        # Padding comes from the texts that follow: other requests' openings, but never at
        # the start of a prompt, so no two prompts share a prefix by accident.
        prompt = fitter.fit(texts[(start + i) % len(texts)], n_in, _cycle(texts, start + i + 1))
        requests.append(ServingRequest(prompt, fitter.count(prompt), n_out))
    return requests


def shared_prefix_groups(num_requests: int) -> int:
    return max(1, min(SHARED_PREFIX_MAX_GROUPS, num_requests // SHARED_PREFIX_MIN_GROUP_SIZE))


def shared_prefix_len(input_len: int) -> int:
    return max(1, round(SHARED_PREFIX_FRACTION * input_len))


def _shared_prefix(
    spec: WorkloadSpec, texts: list[str], fitter: TextFitter, level: int, start: int, outputs: list[int]
) -> list[ServingRequest]:
    groups = shared_prefix_groups(spec.num_requests)
    prefix_len = shared_prefix_len(spec.input_len)
    question_len = max(1, spec.input_len - prefix_len)
    # Prefixes come from the far end of this level's slice of the pool, questions from its start.
    prefixes = [
        fitter.fit(
            "Use the reference material below to answer the question that follows it.\n\n"
            + texts[(start + spec.num_requests + g) % len(texts)],
            prefix_len, _cycle(texts, start + spec.num_requests + groups + g * 7),
        )
        for g in range(groups)
    ]
    questions = sample_lengths(question_len, spec.randomness, spec.num_requests, _rng(spec, level, "input"))
    requests = []
    for i, (n_q, n_out) in enumerate(zip(questions, outputs)):
        # The question starts with a space and a word: byte-level BPE then starts a new token
        # there, so the prefix's tokens are the same in every request of the group.
        question = fitter.fit(" Question: " + texts[(start + i) % len(texts)], n_q, _cycle(texts, start + i + 1))
        prompt = prefixes[i % groups] + question
        requests.append(ServingRequest(prompt, fitter.count(prompt), n_out, group=i % groups))
    return requests


def long_prompt_positions(num_requests: int) -> list[int]:
    """Where the long prompts go: ``LONG_PROMPT_SHARE`` of the requests (at least one), evenly spread."""
    count = max(1, round(LONG_PROMPT_SHARE * num_requests))
    return [int((k + 0.5) * num_requests / count) for k in range(count)]


def long_prompt_len(input_len: int, max_input_len: int | None) -> int:
    cap = min(LONG_PROMPT_CAP, max_input_len or LONG_PROMPT_CAP)
    return max(1, min(LONG_PROMPT_FACTOR * input_len, cap))


def _long_prompt_mix(
    spec: WorkloadSpec, texts: list[str], fitter: TextFitter, level: int, start: int, outputs: list[int]
) -> list[ServingRequest]:
    long_positions = set(long_prompt_positions(spec.num_requests))
    long_len = long_prompt_len(spec.input_len, spec.max_input_len)
    short_len = max(1, spec.input_len // SHORT_PROMPT_DIVISOR)
    long_inputs = sample_lengths(long_len, spec.randomness, spec.num_requests, _rng(spec, level, "long"))
    short_inputs = sample_lengths(short_len, spec.randomness, spec.num_requests, _rng(spec, level, "input"))
    requests = []
    for i, n_out in enumerate(outputs):
        kind = "long" if i in long_positions else "short"
        n_in = long_inputs[i] if kind == "long" else short_inputs[i]
        prompt = fitter.fit(texts[(start + i) % len(texts)], n_in, _cycle(texts, start + i + 1))
        requests.append(ServingRequest(prompt, fitter.count(prompt), n_out, kind=kind))
    return requests


def _identifier(rng: random.Random) -> str:
    return f"{rng.choice(WORDS)}_{rng.choice(WORDS)}"


def synthetic_code(rng: random.Random, name: str) -> Iterator[str]:
    """Endless Python-like functions that all use the identifier ``name``."""
    while True:
        fn, arg, tmp = _identifier(rng), rng.choice(WORDS) + "_id", rng.choice(WORDS) + "_value"
        attr, other, limit = rng.choice(WORDS), rng.choice(WORDS), rng.randint(2, 999)
        yield (
            f"def {fn}({name}, {arg}):\n"
            f"    {tmp} = {name}.{attr}({arg})\n"
            f"    if {tmp} > {limit}:\n"
            f"        return {name}.{other} + {tmp}\n"
            f"    return {tmp} * {rng.randint(2, 9)}\n\n"
        )


def _repetitive(spec: WorkloadSpec, fitter: TextFitter, level: int, outputs: list[int]) -> list[ServingRequest]:
    inputs = sample_lengths(spec.input_len, spec.randomness, spec.num_requests, _rng(spec, level, "input"))
    rng = _rng(spec, level, "code")
    requests = []
    for n_in, n_out in zip(inputs, outputs):
        old = _identifier(rng)
        new = _identifier(rng)
        while new == old:
            new = _identifier(rng)
        # Enough functions for the target (each is 40-60 tokens), drawn once so that the
        # correction loop below refits the same text.
        code = synthetic_code(rng, old)
        pieces = [next(code) for _ in range(n_in // 30 + 2)]
        head = "Here is some code:\n\n"
        # Two wordings one token apart: cutting code does not reach every token count (trailing
        # whitespace is stripped so that the join is stable), and the longer one fills the gap.
        tails = [f"\n\n{start} it exactly, changing {old} to {new}." for start in ("Repeat", "Now repeat")]
        body_len = max(REPETITIVE_MIN_BODY, n_in - fitter.count(head) - fitter.count(tails[0]))
        tried: dict[int, tuple[int, str, str]] = {}
        # The joins can merge tokens, so measure the whole prompt and correct the body's share;
        # when a correction lands on a length already tried, step one further.
        for _ in range(8):
            body = fitter.fit(pieces[0], body_len, pieces[1:], separator="", nudge=False).rstrip()
            error = fitter.count(head + body + tails[0]) - n_in
            tail = tails[1] if error == -1 and fitter.count(head + body + tails[1]) == n_in else tails[0]
            prompt = head + body + tail
            error = fitter.count(prompt) - n_in
            tried[body_len] = (abs(error), prompt, body)
            if error == 0:
                break
            body_len -= error
            while body_len in tried:
                body_len += -1 if error > 0 else 1
            if body_len < REPETITIVE_MIN_BODY:
                break
        _, prompt, body = min(tried.values(), key=lambda t: t[0])
        requests.append(ServingRequest(prompt, fitter.count(prompt), n_out, kind="repeat", copy_text=body))
    return requests
