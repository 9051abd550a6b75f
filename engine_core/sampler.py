"""Batched sampling with per-request settings.

One call samples every row of a step, each with its own temperature, top-k, top-p, min-p,
penalties and seed. The order is vLLM's and transformers':

    penalties -> temperature -> top-k -> top-p -> min-p -> draw

Greedy rows take the argmax; if every row is greedy and none has penalties, that is all the
sampler does (the fast path).

**Reproducible draws.** A row's draw uses the exponential race: ``argmax(p / E)`` with
``E ~ Exp(1)`` per vocabulary entry picks token i with probability proportional to ``p_i``
(equivalent to Gumbel-max). The noise ``E`` comes from a counter-based hash of
``(seed, step, token id)``, not from a stateful generator, so a request's samples depend on its
seed and how many tokens it has drawn, never on which other requests share its batch. It is
computed with plain tensor ops on the logits' device.

**No waiting on the GPU.** Per-row settings travel as small tensors copied from pinned memory
without blocking, so the host queues the whole sampler behind the forward; the one point where
it waits is reading the sampled ids back (``tolist``), once per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .penalty_counts import PenaltyCounts, counts_from_lists
from .sampling_params import SamplingParams
from .transfer import to_device

_MASK32 = 0xFFFFFFFF


@dataclass(frozen=True)
class SampleRow:
    """What the sampler needs to know about one row of logits.

    step: how many tokens this request has drawn before (the position in its random stream).
    prompt_ids, output_ids: the request's tokens so far, for the penalties.
    request_id: lets the sampler keep the request's penalty counts between steps
        (``penalty_counts.py``); without it they are counted from the lists each time.
    """

    params: SamplingParams
    seed: int
    step: int
    prompt_ids: Sequence[int] = ()
    output_ids: Sequence[int] = ()
    request_id: str | None = None


@dataclass(frozen=True)
class TokenLogprobs:
    """Log-probabilities (of the model's unmodified distribution) for one sampled token."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass(frozen=True)
class SampleResult:
    token_ids: list[int]
    logprobs: list[TokenLogprobs | None]


def mix32(x):  # works on Python ints and int64 tensors alike
    """A 32-bit integer hash ("lowbias32"); the multipliers keep products inside int64."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _MASK32
    return x ^ (x >> 15)


def exponential_noise(seeds: list[int], steps: list[int], vocab_size: int, device: torch.device) -> torch.Tensor:
    """``[rows, vocab]`` Exp(1) noise; row r is a function of ``(seeds[r], steps[r])`` only."""
    keys = [mix32((seed & _MASK32) ^ mix32(((seed >> 32) & _MASK32) ^ mix32(step & _MASK32)))
            for seed, step in zip(seeds, steps)]
    key = to_device(keys, torch.int64, device)[:, None]
    index = torch.arange(vocab_size, dtype=torch.int64, device=device)[None, :]
    return -torch.log(uniform_from_bits(mix32((key + index * 0x9E3779B9) & _MASK32)))


def uniform_from_bits(bits: torch.Tensor) -> torch.Tensor:
    """Map 32-bit hashes to float32 strictly inside (0, 1).

    Only the top 23 bits are used so that ``(b + 0.5) / 2**23`` is exact in float32 and never
    rounds to 1.0: a uniform of 1.0 gives noise 0, and a filtered-out token's ``0 / 0`` would be
    NaN, which argmax picks.
    """
    return ((bits >> 9).to(torch.float32) + 0.5) * 2.0**-23


class Sampler:
    """Turns a step's logits into one token per row."""

    def __init__(self) -> None:
        self.penalty_counts = PenaltyCounts()

    def forget(self, request_id: str) -> None:
        """A request has finished: drop what the sampler kept for it."""
        self.penalty_counts.forget(request_id)

    def sample(self, logits: torch.Tensor, rows: list[SampleRow]) -> SampleResult:
        assert logits.shape[0] == len(rows), "one SampleRow per row of logits"
        if all(r.params.greedy and not r.params.has_penalties and r.params.logprobs is None for r in rows):
            return SampleResult(logits.argmax(dim=-1).tolist(), [None] * len(rows))  # the fast path
        raw = logits.float()
        scores = raw
        if any(r.params.has_penalties for r in rows):
            wanted = [r.params.has_penalties for r in rows]
            counts = self.penalty_counts.for_rows(rows, raw.shape[-1], raw.device, wanted)
            scores = apply_penalties(raw, rows, counts)
        tokens = scores.argmax(dim=-1)
        random_rows = [i for i, r in enumerate(rows) if not r.params.greedy]
        if random_rows:
            index = to_device(random_rows, torch.long, logits.device)
            drawn = _draw(scores[index], [rows[i] for i in random_rows])
            tokens = tokens.index_copy(0, index, drawn)
        token_ids = tokens.tolist()
        return SampleResult(token_ids, _logprobs(raw, rows, token_ids))


def apply_penalties(
    logits: torch.Tensor, rows: list[SampleRow], counts: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Repetition (prompt and output), then frequency and presence (output only) penalties.

    counts: ``(output counts, in-prompt mask)``, each ``[rows, vocab]``; counted from the rows'
    token lists when not given.
    """
    num_rows, vocab = logits.shape
    device = logits.device
    output_counts, in_prompt = counts if counts is not None else counts_from_lists(rows, vocab, device)
    repetition = to_device([r.params.repetition_penalty for r in rows], torch.float32, device)[:, None]
    seen = (output_counts > 0) | in_prompt
    penalised = torch.where(logits > 0, logits / repetition, logits * repetition)
    logits = torch.where(seen, penalised, logits)
    frequency = to_device([r.params.frequency_penalty for r in rows], torch.float32, device)[:, None]
    presence = to_device([r.params.presence_penalty for r in rows], torch.float32, device)[:, None]
    return logits - frequency * output_counts - presence * (output_counts > 0).float()


def _draw(scores: torch.Tensor, rows: list[SampleRow]) -> torch.Tensor:
    device = scores.device
    vocab = scores.shape[-1]
    temperature = to_device([r.params.temperature for r in rows], torch.float32, device)[:, None]
    scores = scores / temperature
    top_k = [r.params.top_k if 0 < r.params.top_k < vocab else vocab for r in rows]
    if min(top_k) < vocab:
        # One topk for the largest k in play; each row's threshold is its own k-th value.
        kth = scores.topk(max(k for k in top_k if k < vocab), dim=-1).values
        limited = to_device([k < vocab for k in top_k], torch.bool, device)
        column = to_device([min(k, kth.shape[-1]) - 1 for k in top_k], torch.long, device)[:, None]
        threshold = torch.where(limited[:, None], kth.gather(1, column), float("-inf"))
        scores = scores.masked_fill(scores < threshold, float("-inf"))
    probs = scores.softmax(dim=-1)
    top_p = [r.params.top_p for r in rows]
    if min(top_p) < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        # Keep a token while the more likely ones hold less than top_p: the smallest set reaching it.
        drop = mass_before >= to_device(top_p, torch.float32, device)[:, None]
        probs = torch.zeros_like(probs).scatter(1, order, sorted_probs.masked_fill(drop, 0.0))
    min_p = [r.params.min_p for r in rows]
    if max(min_p) > 0.0:
        floor = to_device(min_p, torch.float32, device)[:, None] * probs.max(dim=-1, keepdim=True).values
        probs = probs.masked_fill(probs < floor, 0.0)
    noise = exponential_noise([r.seed for r in rows], [r.step for r in rows], vocab, device)
    return (probs / noise).argmax(dim=-1)


def _logprobs(raw: torch.Tensor, rows: list[SampleRow], token_ids: list[int]) -> list[TokenLogprobs | None]:
    wanted = [i for i, r in enumerate(rows) if r.params.logprobs is not None]
    result: list[TokenLogprobs | None] = [None] * len(rows)
    if not wanted:
        return result
    logp = raw[wanted].log_softmax(dim=-1)
    widest = max(rows[i].params.logprobs or 0 for i in wanted)
    top_values, top_ids = logp.topk(max(widest, 1), dim=-1)
    chosen = logp.gather(1, to_device([[token_ids[i]] for i in wanted], torch.long, raw.device))
    for j, i in enumerate(wanted):
        n = rows[i].params.logprobs or 0
        top = list(zip(top_ids[j, :n].tolist(), top_values[j, :n].tolist()))
        result[i] = TokenLogprobs(token_ids[i], chosen[j, 0].item(), top)
    return result
