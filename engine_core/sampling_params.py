"""Per-request generation settings, with the OpenAI / vLLM meanings."""

from __future__ import annotations

from dataclasses import dataclass, field

# Temperatures below this sample greedily, as in vLLM: dividing float32 logits by a temperature
# near 1e-38 overflows to inf, and softmax of infs picks a token no greedy decode would.
GREEDY_TEMPERATURE = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    """How one request picks its tokens and when it stops.

    temperature: 0 (or below ``GREEDY_TEMPERATURE``) means greedy; otherwise logits are divided by it.
    top_k: keep the k most likely tokens (0 or -1: all).
    top_p: keep the smallest set of most likely tokens whose probability reaches top_p.
    min_p: drop tokens less likely than min_p times the most likely one.
    repetition_penalty: for every token already in the prompt or output, a positive logit is
        divided by it and a negative one multiplied (1.0: off).
    frequency_penalty: subtracted from a logit once per earlier occurrence in the output.
    presence_penalty: subtracted from a logit once if the token occurs in the output.
    seed: makes sampling reproducible; a request's samples depend on its seed only.
    max_tokens: most tokens to generate.
    stop: strings that end generation (not included in the output).
    stop_token_ids: token ids that end generation, besides EOS.
    ignore_eos: keep generating past EOS (benchmarks use this for fixed output lengths).
    logprobs: return the sampled token's log-probability and this many top alternatives.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    max_tokens: int = 16
    stop: tuple[str, ...] = field(default_factory=tuple)
    stop_token_ids: tuple[int, ...] = field(default_factory=tuple)
    ignore_eos: bool = False
    logprobs: int | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.temperature >= 0, "temperature must be >= 0"),
            (self.top_k >= -1, "top_k must be -1, 0 (off) or a positive number of tokens"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (0 <= self.min_p <= 1, "min_p must be in [0, 1]"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty must be in [-2, 2]"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty must be in [-2, 2]"),
            (self.max_tokens >= 1, "max_tokens must be at least 1"),
            (self.logprobs is None or 0 <= self.logprobs <= 20, "logprobs must be in [0, 20]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        # Accept lists from callers but store tuples, so the params stay hashable and immutable.
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_TEMPERATURE

    @property
    def has_penalties(self) -> bool:
        return self.repetition_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0
