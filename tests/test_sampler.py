"""Sampler, penalties, reproducible noise and SamplingParams on small synthetic logits (CPU)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from engine_core.penalty_counts import PenaltyCounts
from engine_core.sampler import Sampler, SampleRow, apply_penalties, exponential_noise, uniform_from_bits
from engine_core.sampling_params import SamplingParams

CPU = torch.device("cpu")


def make_logits(rows: int, vocab: int, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, vocab, generator=gen) * scale).float()


def draw_many(logits_row: torch.Tensor, params: SamplingParams, n: int, seed: int = 0, first_step: int = 0) -> list[int]:
    """``n`` draws of one request at steps ``first_step ..``, done as one batch of ``n`` rows."""
    logits = logits_row[None, :].expand(n, -1).contiguous()
    rows = [SampleRow(params, seed=seed, step=first_step + i) for i in range(n)]
    return Sampler().sample(logits, rows).token_ids


def top_p_set(probs: torch.Tensor, top_p: float) -> set[int]:
    """The smallest set of most likely tokens whose mass reaches ``top_p`` (float64, independent)."""
    order = torch.argsort(probs.double(), descending=True)
    kept: set[int] = set()
    mass = 0.0
    for token in order.tolist():
        kept.add(token)
        mass += float(probs[token])
        if mass >= top_p:
            break
    return kept


def entropy(counts: Counter[int], n: int) -> float:
    return -sum(c / n * math.log(c / n) for c in counts.values())


# --- greedy -------------------------------------------------------------------------------------


def test_temperature_zero_is_argmax_for_every_row() -> None:
    logits = make_logits(7, 300, scale=2.0, seed=1)
    rows = [SampleRow(SamplingParams(temperature=0), seed=i, step=i) for i in range(7)]
    result = Sampler().sample(logits, rows)
    assert result.token_ids == logits.argmax(dim=-1).tolist()
    assert result.logprobs == [None] * 7


@pytest.mark.parametrize("temperature", [1e-38, 1e-30, 1e-6])
def test_a_temperature_near_zero_is_greedy(temperature: float) -> None:
    # Logits divided by 1e-38 overflow to inf: without the greedy cut-off the draw is arbitrary
    # (it returned the end-of-text token every step, an empty answer).
    logits = make_logits(6, 300, scale=4.0, seed=5)
    rows = [SampleRow(SamplingParams(temperature=temperature, seed=i), seed=i, step=0) for i in range(6)]
    assert Sampler().sample(logits, rows).token_ids == logits.argmax(dim=-1).tolist()


def test_greedy_ignores_top_k_top_p_min_p() -> None:
    logits = make_logits(3, 100, scale=2.0, seed=2)
    params = SamplingParams(temperature=0, top_k=5, top_p=0.3, min_p=0.5)
    rows = [SampleRow(params, seed=0, step=s) for s in range(3)]
    assert Sampler().sample(logits, rows).token_ids == logits.argmax(dim=-1).tolist()


def test_greedy_rows_mixed_with_sampled_rows() -> None:
    # Flat logits: a sampled row almost never lands on the argmax, so rows cannot be swapped unnoticed.
    n = 40
    logits = make_logits(n, 200, scale=0.5, seed=3)
    greedy = SamplingParams(temperature=0)
    sampled = SamplingParams(temperature=1.0)
    rows = [SampleRow(greedy if i % 2 == 0 else sampled, seed=i, step=0) for i in range(n)]
    tokens = Sampler().sample(logits, rows).token_ids
    argmax = logits.argmax(dim=-1).tolist()
    for i in range(0, n, 2):
        assert tokens[i] == argmax[i], f"greedy row {i}"
    off_argmax = sum(tokens[i] != argmax[i] for i in range(1, n, 2))
    assert off_argmax >= n // 2 - 5, "sampled rows look greedy"


def test_sampled_rows_produce_valid_token_ids() -> None:
    logits = make_logits(20, 64, seed=4)
    rows = [SampleRow(SamplingParams(), seed=i, step=i) for i in range(20)]
    tokens = Sampler().sample(logits, rows).token_ids
    assert all(isinstance(t, int) and 0 <= t < 64 for t in tokens)


# --- top-k --------------------------------------------------------------------------------------


def test_top_k_only_draws_the_k_largest() -> None:
    logits = make_logits(1, 500, seed=5)[0]
    k = 5
    allowed = set(logits.topk(k).indices.tolist())
    draws = draw_many(logits, SamplingParams(top_k=k), 400, seed=11)
    outside = [t for t in draws if t not in allowed]
    assert not outside, f"tokens outside the top-{k}: {sorted(set(outside))}"
    assert len(set(draws)) >= 3, "top_k=5 on flat logits should still draw several tokens"


def test_top_k_one_is_argmax_even_when_sampling() -> None:
    logits = make_logits(1, 300, scale=0.3, seed=6)[0]
    draws = draw_many(logits, SamplingParams(top_k=1, temperature=1.5), 200, seed=3)
    assert set(draws) == {int(logits.argmax())}


def test_top_k_at_least_vocab_is_no_restriction() -> None:
    logits = make_logits(1, 50, scale=0.3, seed=7)[0]
    draws = draw_many(logits, SamplingParams(top_k=50), 300, seed=2)
    assert len(set(draws)) > 20


def test_rows_with_different_k_in_one_batch_each_respect_their_own_k() -> None:
    vocab, steps = 200, 100
    ks = [1, 3, 10, 0, -1, 25]
    base = make_logits(len(ks), vocab, seed=8)
    logits = base.repeat(steps, 1)  # row r*len(ks)+j is request j at step r
    rows = [
        SampleRow(SamplingParams(top_k=k), seed=100 + j, step=r)
        for r in range(steps)
        for j, k in enumerate(ks)
    ]
    tokens = Sampler().sample(logits, rows).token_ids
    for j, k in enumerate(ks):
        drawn = tokens[j::len(ks)]
        if k > 0:
            allowed = set(base[j].topk(k).indices.tolist())
            outside = sorted(set(drawn) - allowed)
            assert not outside, f"request {j} (top_k={k}) drew {outside}"
            assert len(set(drawn)) >= min(k, 3)
        else:
            top10 = set(base[j].topk(10).indices.tolist())
            assert sum(t not in top10 for t in drawn) > steps // 4, f"top_k={k} should not restrict"


# --- top-p --------------------------------------------------------------------------------------


def test_top_p_draws_stay_inside_the_nucleus() -> None:
    vocab, temperature, top_p = 120, 0.8, 0.65
    logits = make_logits(1, vocab, scale=2.0, seed=9)[0]
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    nucleus = top_p_set(probs, top_p)
    # Keep clear of float32-vs-float64 ties at the boundary, which would make the check flaky.
    sorted_probs = probs.sort(descending=True).values
    mass_before = sorted_probs.cumsum(0) - sorted_probs
    assert (mass_before - top_p).abs().min() > 1e-4
    assert 3 <= len(nucleus) < vocab // 2

    draws = draw_many(logits, SamplingParams(temperature=temperature, top_p=top_p), 500, seed=21)
    outside = sorted(set(draws) - nucleus)
    assert not outside, f"drew {outside}, outside the top_p={top_p} nucleus {sorted(nucleus)}"
    assert len(set(draws)) >= 3


def test_top_p_keeps_the_token_that_crosses_the_threshold() -> None:
    # probs 0.4, 0.3, 0.2, 0.1 with top_p=0.6: the nucleus is {0, 1} (0.4 < 0.6 <= 0.7).
    logits = torch.tensor([0.4, 0.3, 0.2, 0.1]).log()
    draws = draw_many(logits, SamplingParams(top_p=0.6), 600, seed=5)
    counts = Counter(draws)
    assert set(counts) == {0, 1}, counts
    # Renormalised inside the nucleus: 0.3 / 0.7.
    assert abs(counts[1] / len(draws) - 3 / 7) < 0.07, counts


def test_top_p_below_the_top_token_mass_draws_only_that_token() -> None:
    logits = torch.tensor([0.6, 0.15, 0.1, 0.1, 0.05]).log()
    draws = draw_many(logits, SamplingParams(top_p=0.5), 400, seed=8)
    assert set(draws) == {0}, Counter(draws)


def test_top_p_applies_to_the_top_k_renormalised_distribution() -> None:
    # top_k=2 leaves 0.3/0.55 and 0.25/0.55; with top_p=0.5 only the first survives. Applied to the
    # original probabilities instead (0.3 < 0.5), token 1 would survive as well.
    logits = torch.tensor([0.3, 0.25, 0.2, 0.15, 0.1]).log()
    draws = draw_many(logits, SamplingParams(top_k=2, top_p=0.5), 400, seed=9)
    assert set(draws) == {0}, Counter(draws)


# --- min-p --------------------------------------------------------------------------------------


def test_min_p_never_draws_tokens_below_the_floor() -> None:
    vocab, temperature, min_p = 150, 1.3, 0.1
    logits = make_logits(1, vocab, scale=2.0, seed=10)[0]
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    floor = min_p * float(probs.max())
    below = probs < floor
    assert float(probs[below].sum()) > 0.2, "the floor must cut off real mass for this test to mean anything"

    draws = draw_many(logits, SamplingParams(temperature=temperature, min_p=min_p), 500, seed=31)
    bad = sorted({t for t in draws if float(probs[t]) < floor})
    assert not bad, f"drew tokens below min_p*max: {bad}"
    assert len(set(draws)) >= 3


def test_min_p_one_keeps_only_the_most_likely_token() -> None:
    logits = make_logits(1, 80, scale=0.5, seed=11)[0]
    draws = draw_many(logits, SamplingParams(min_p=1.0), 200, seed=4)
    assert set(draws) == {int(logits.argmax())}


# --- empirical distribution ---------------------------------------------------------------------

FREQ_LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])
FREQ_DRAWS = 4000


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_frequencies_match_softmax(temperature: float) -> None:
    draws = draw_many(FREQ_LOGITS, SamplingParams(temperature=temperature), FREQ_DRAWS, seed=77)
    counts = Counter(draws)
    expected = torch.softmax(FREQ_LOGITS.double() / temperature, dim=-1).tolist()
    for token, p in enumerate(expected):
        freq = counts[token] / FREQ_DRAWS
        assert abs(freq - p) < 0.03, f"T={temperature} token {token}: frequency {freq:.3f}, softmax {p:.3f}"


def test_temperature_orders_entropy() -> None:
    entropies = []
    for temperature in (0.5, 1.0, 2.0):
        draws = draw_many(FREQ_LOGITS, SamplingParams(temperature=temperature), FREQ_DRAWS, seed=78)
        entropies.append(entropy(Counter(draws), FREQ_DRAWS))
    low, mid, high = entropies
    assert low < mid - 0.1 and mid < high - 0.1, entropies


# --- reproducibility ----------------------------------------------------------------------------


def test_same_seed_and_step_gives_same_token_regardless_of_batch_mates() -> None:
    vocab = 100
    target_logits = make_logits(1, vocab, scale=0.5, seed=12)[0]
    others = make_logits(6, vocab, scale=3.0, seed=13)
    target_params = SamplingParams(temperature=0.9, top_p=0.95)
    mate_params = [
        SamplingParams(temperature=0),
        SamplingParams(top_k=3),
        SamplingParams(temperature=1.7, min_p=0.2),
        SamplingParams(repetition_penalty=1.3, logprobs=2),
        SamplingParams(top_p=0.5, top_k=10),
        SamplingParams(),
    ]
    sampler = Sampler()
    alone: list[int] = []
    layouts: dict[str, list[int]] = {"front": [], "middle": [], "back": [], "big": []}
    for step in range(60):
        target = SampleRow(target_params, seed=4242, step=step)
        mates = [SampleRow(p, seed=1000 + i + step, step=step * 3 + i, output_ids=[1, 2]) for i, p in enumerate(mate_params)]

        alone.append(sampler.sample(target_logits[None], [target]).token_ids[0])
        batch = torch.stack([target_logits, others[0], others[1]])
        layouts["front"].append(sampler.sample(batch, [target, mates[0], mates[1]]).token_ids[0])
        batch = torch.stack([others[2], target_logits, others[3]])
        layouts["middle"].append(sampler.sample(batch, [mates[2], target, mates[3]]).token_ids[1])
        batch = torch.stack([others[4], target_logits])
        layouts["back"].append(sampler.sample(batch, [mates[4], target]).token_ids[1])
        batch = torch.cat([others, target_logits[None], others])
        rows = mates + [target] + mates
        layouts["big"].append(sampler.sample(batch, rows).token_ids[6])

    assert len(set(alone)) > 5, "the target request should actually be sampling"
    for name, tokens in layouts.items():
        assert tokens == alone, f"batch layout {name!r} changed the target's draws"


def test_same_seed_and_step_is_deterministic_across_calls() -> None:
    logits = make_logits(1, 300, scale=0.5, seed=14)[0]
    params = SamplingParams(temperature=1.1, top_k=50)
    first = draw_many(logits, params, 100, seed=9)
    second = draw_many(logits, params, 100, seed=9)
    assert first == second
    # Drawing step by step (one row per call) matches drawing all steps in one batch.
    one_by_one = [Sampler().sample(logits[None], [SampleRow(params, seed=9, step=s)]).token_ids[0] for s in range(20)]
    assert one_by_one == first[:20]


def test_different_seeds_give_different_sequences() -> None:
    logits = torch.zeros(50)  # uniform: two independent streams agree on ~2% of steps
    params = SamplingParams()
    a = draw_many(logits, params, 300, seed=1)
    b = draw_many(logits, params, 300, seed=2)
    c = draw_many(logits, params, 300, seed=1 + 2**32)  # differs from seed 1 only in the high word
    assert a != b and a != c
    for other in (b, c):
        agree = sum(x == y for x, y in zip(a, other)) / len(a)
        assert agree < 0.1, f"streams of different seeds agree on {agree:.0%} of steps"


def test_steps_advance_the_random_stream() -> None:
    logits = torch.zeros(50)
    draws = draw_many(logits, SamplingParams(), 300, seed=123)
    assert len(set(draws)) > 30


# --- exponential noise --------------------------------------------------------------------------


def test_exponential_noise_shape_dtype_and_positivity() -> None:
    seeds = list(range(64))
    steps = [s * 7 for s in range(64)]
    noise = exponential_noise(seeds, steps, 1000, CPU)
    assert noise.shape == (64, 1000)
    assert noise.dtype == torch.float32
    assert torch.isfinite(noise).all()
    assert (noise > 0).all()


def test_exponential_noise_row_depends_only_on_seed_and_step() -> None:
    vocab = 257
    a = exponential_noise([1, 2, 3], [0, 5, 7], vocab, CPU)
    b = exponential_noise([3, 9, 1, 1, 2], [7, 9, 0, 1, 5], vocab, CPU)
    c = exponential_noise([2], [5], vocab, CPU)
    torch.testing.assert_close(a[0], b[2], rtol=0, atol=0)
    torch.testing.assert_close(a[1], b[4], rtol=0, atol=0)
    torch.testing.assert_close(a[1], c[0], rtol=0, atol=0)
    torch.testing.assert_close(a[2], b[0], rtol=0, atol=0)
    # A different step or seed gives a different row.
    assert not torch.equal(b[2], b[3])
    assert not torch.equal(a[0], a[1])


def test_exponential_noise_prefix_is_independent_of_vocab_size() -> None:
    small = exponential_noise([5, 6], [3, 4], 100, CPU)
    large = exponential_noise([5, 6], [3, 4], 1000, CPU)
    torch.testing.assert_close(small, large[:, :100], rtol=0, atol=0)


def test_exponential_noise_looks_like_exp1() -> None:
    noise = exponential_noise(list(range(200)), list(range(200)), 1000, CPU).double()
    assert abs(noise.mean().item() - 1.0) < 0.01
    assert abs(noise.var().item() - 1.0) < 0.03
    assert abs((noise > 1.0).double().mean().item() - math.exp(-1)) < 0.005


def test_uniform_from_bits_stays_strictly_inside_zero_one() -> None:
    # At the top of the hash range a 24-bit mapping rounded to exactly 1.0, which made the noise
    # 0 and let argmax pick a filtered-out token through 0 / 0 = NaN.
    extremes = torch.tensor([0, 1, 2**31, 2**32 - 2, 2**32 - 1], dtype=torch.int64)
    uniform = uniform_from_bits(extremes)
    assert bool((uniform > 0).all()) and bool((uniform < 1).all()), uniform.tolist()
    assert bool((-torch.log(uniform) > 0).all())


def _allowed(logits: torch.Tensor, params: SamplingParams) -> set[int]:
    probs = logits.softmax(-1)
    order = probs.argsort(descending=True).tolist()
    if params.top_k > 0:
        return set(order[:params.top_k])
    if params.top_p < 1:
        kept, mass = [], 0.0
        for token in order:
            kept.append(token)
            mass += probs[token].item()
            if mass >= params.top_p:
                return set(kept)
    return {t for t in order if probs[t] >= params.min_p * probs.max()}


@pytest.mark.parametrize(
    "params",
    [SamplingParams(top_k=5), SamplingParams(top_p=0.5), SamplingParams(min_p=0.5)],
    ids=["top_k", "top_p", "min_p"],
)
def test_filtered_tokens_are_never_drawn_over_many_steps(params: SamplingParams) -> None:
    logits = torch.linspace(5.0, -5.0, 1000)
    allowed = _allowed(logits, params)
    assert 0 < len(allowed) < 200
    rows = [SampleRow(params, seed=0, step=step) for step in range(2000)]
    drawn = set(Sampler().sample(logits.expand(len(rows), -1), rows).token_ids)
    assert drawn <= allowed, f"drew filtered tokens {sorted(drawn - allowed)[:10]}"


# --- penalties ----------------------------------------------------------------------------------

PEN_LOGITS = torch.tensor([2.0, -1.0, 0.5, -0.5, 3.0, 1.0, 0.0])


def penalised(params: SamplingParams, prompt: Sequence[int] = (), output: Sequence[int] = ()) -> torch.Tensor:
    row = SampleRow(params, seed=0, step=0, prompt_ids=prompt, output_ids=output)
    return apply_penalties(PEN_LOGITS[None].clone(), [row])[0]


def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_logits() -> None:
    out = penalised(SamplingParams(repetition_penalty=2.0), prompt=[0, 1], output=[2, 3, 3, 6])
    expected = torch.tensor([1.0, -2.0, 0.25, -1.0, 3.0, 1.0, 0.0])
    torch.testing.assert_close(out, expected)


def test_repetition_penalty_below_one_rewards_seen_tokens() -> None:
    out = penalised(SamplingParams(repetition_penalty=0.5), output=[0, 1])
    torch.testing.assert_close(out, torch.tensor([4.0, -0.5, 0.5, -0.5, 3.0, 1.0, 0.0]))


def test_repetition_penalty_counts_a_token_once() -> None:
    once = penalised(SamplingParams(repetition_penalty=1.5), prompt=[4], output=[4])
    many = penalised(SamplingParams(repetition_penalty=1.5), prompt=[4, 4, 4], output=[4, 4])
    torch.testing.assert_close(once, many)
    assert once[4].item() == pytest.approx(2.0)


def test_frequency_penalty_subtracts_per_output_occurrence_only() -> None:
    out = penalised(SamplingParams(frequency_penalty=0.5), prompt=[4, 5, 5], output=[2, 2, 3, 0, 2])
    expected = PEN_LOGITS.clone()
    expected[2] -= 0.5 * 3
    expected[3] -= 0.5
    expected[0] -= 0.5
    torch.testing.assert_close(out, expected)  # tokens 4 and 5 (prompt only) untouched


def test_negative_frequency_penalty_adds() -> None:
    out = penalised(SamplingParams(frequency_penalty=-1.0), output=[6, 6])
    assert out[6].item() == pytest.approx(2.0)


def test_presence_penalty_subtracts_once_per_output_token() -> None:
    out = penalised(SamplingParams(presence_penalty=0.75), prompt=[4, 1], output=[2, 2, 2, 3])
    expected = PEN_LOGITS.clone()
    expected[2] -= 0.75
    expected[3] -= 0.75
    torch.testing.assert_close(out, expected)


def test_penalties_combine_repetition_first() -> None:
    params = SamplingParams(repetition_penalty=2.0, frequency_penalty=0.5, presence_penalty=0.3)
    out = penalised(params, prompt=[0], output=[2, 2, 1])
    expected = torch.tensor([
        1.0,                   # prompt only: repetition
        -1.0 * 2 - 0.5 - 0.3,  # output once
        0.5 / 2 - 1.0 - 0.3,   # output twice
        -0.5, 3.0, 1.0, 0.0,
    ])
    torch.testing.assert_close(out, expected)


def test_penalties_per_row_in_a_batch() -> None:
    logits = PEN_LOGITS[None].repeat(4, 1)
    original = logits.clone()
    rows = [
        SampleRow(SamplingParams(), seed=0, step=0, prompt_ids=[0, 1, 2], output_ids=[3, 4]),
        SampleRow(SamplingParams(repetition_penalty=2.0), seed=0, step=0, prompt_ids=[4], output_ids=[]),
        SampleRow(SamplingParams(frequency_penalty=1.0), seed=0, step=0, prompt_ids=[], output_ids=[5, 5, 5, 0]),
        SampleRow(SamplingParams(presence_penalty=2.0), seed=0, step=0, prompt_ids=[], output_ids=[]),
    ]
    out = apply_penalties(logits, rows)
    torch.testing.assert_close(logits, original)  # the input is not modified in place
    expected = original.clone()
    expected[1, 4] = 1.5
    expected[2, 5] = 1.0 - 3.0
    expected[2, 0] = 2.0 - 1.0
    torch.testing.assert_close(out, expected)


def test_greedy_repetition_penalty_flips_the_argmax() -> None:
    logits = torch.tensor([[3.0, 2.5, 1.0, -1.0], [3.0, 2.5, 1.0, -1.0]])
    rows = [
        SampleRow(SamplingParams(temperature=0, repetition_penalty=1.5), seed=0, step=1, output_ids=[0]),
        SampleRow(SamplingParams(temperature=0), seed=0, step=1, output_ids=[0]),
    ]
    assert Sampler().sample(logits, rows).token_ids == [1, 0]


def test_greedy_penalty_from_prompt_token_flips_the_argmax() -> None:
    logits = torch.tensor([[3.0, 2.5, 1.0]])
    row = SampleRow(SamplingParams(temperature=0, repetition_penalty=1.5), seed=0, step=0, prompt_ids=[0])
    assert Sampler().sample(logits, [row]).token_ids == [1]
    # Frequency/presence penalties ignore the prompt, so they do not flip it.
    row = SampleRow(SamplingParams(temperature=0, frequency_penalty=2.0, presence_penalty=2.0), seed=0, step=0, prompt_ids=[0])
    assert Sampler().sample(logits, [row]).token_ids == [0]


def test_sampled_rows_are_penalised_too() -> None:
    logits = torch.tensor([8.0, 1.0, 1.0, 1.0])
    n = 400
    rows = [SampleRow(SamplingParams(repetition_penalty=8.0), seed=3, step=s, output_ids=[0]) for s in range(n)]
    tokens = Sampler().sample(logits[None].expand(n, -1), rows).token_ids
    share = tokens.count(0) / n  # all four logits are 1.0 after the penalty
    assert 0.15 < share < 0.35, share


# --- logprobs -----------------------------------------------------------------------------------


def test_logprobs_of_sampled_token_and_top_alternatives() -> None:
    logits = make_logits(4, 200, scale=2.0, seed=15)
    rows = [
        SampleRow(SamplingParams(logprobs=3), seed=1, step=0),
        SampleRow(SamplingParams(), seed=2, step=0),
        SampleRow(SamplingParams(temperature=0, logprobs=3, repetition_penalty=3.0), seed=3, step=0,
                  output_ids=logits[2].topk(2).indices.tolist()),
        SampleRow(SamplingParams(logprobs=5, top_k=20), seed=4, step=9),
    ]
    result = Sampler().sample(logits, rows)
    logp = torch.log_softmax(logits.double(), dim=-1)

    assert result.logprobs[1] is None
    for i, n in ((0, 3), (2, 3), (3, 5)):
        entry = result.logprobs[i]
        assert entry is not None
        assert entry.token_id == result.token_ids[i]
        # Logprobs are of the raw distribution, before penalties/temperature/filters.
        assert entry.logprob == pytest.approx(logp[i, entry.token_id].item(), abs=1e-4)
        assert len(entry.top) == n
        values = [v for _, v in entry.top]
        assert values == sorted(values, reverse=True)
        expected_top = logp[i].topk(n)
        assert [t for t, _ in entry.top] == expected_top.indices.tolist()
        assert values == pytest.approx(expected_top.values.tolist(), abs=1e-4)
    # The penalised greedy row did not pick the raw argmax, yet its logprob is the raw one.
    assert result.token_ids[2] != int(logits[2].argmax())


def test_logprobs_zero_gives_entry_without_alternatives() -> None:
    logits = make_logits(1, 30, seed=16)
    result = Sampler().sample(logits, [SampleRow(SamplingParams(temperature=0, logprobs=0), seed=0, step=0)])
    entry = result.logprobs[0]
    assert entry is not None and entry.top == []
    assert entry.token_id == int(logits[0].argmax())
    assert entry.logprob == pytest.approx(torch.log_softmax(logits[0], -1).max().item(), abs=1e-5)


# --- SamplingParams -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": -0.1},
        {"top_p": 0.0},
        {"top_p": 1.01},
        {"min_p": 1.5},
        {"min_p": -0.1},
        {"max_tokens": 0},
        {"top_k": -2},
        {"repetition_penalty": 0.0},
        {"repetition_penalty": -1.0},
        {"frequency_penalty": 2.5},
        {"presence_penalty": -2.5},
        {"logprobs": 21},
        {"logprobs": -1},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_invalid_sampling_params_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SamplingParams(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": 0},
        {"top_p": 1.0},
        {"top_p": 1e-6},
        {"min_p": 0.0},
        {"min_p": 1.0},
        {"max_tokens": 1},
        {"top_k": -1},
        {"top_k": 0},
        {"frequency_penalty": -2.0, "presence_penalty": 2.0},
        {"logprobs": 0},
        {"logprobs": 20},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_boundary_sampling_params_are_accepted(kwargs: dict[str, Any]) -> None:
    SamplingParams(**kwargs)


def test_stop_lists_are_stored_as_tuples() -> None:
    params = SamplingParams(stop=["</s>", "END"], stop_token_ids=[7, 9])
    assert params.stop == ("</s>", "END") and isinstance(params.stop, tuple)
    assert params.stop_token_ids == (7, 9) and isinstance(params.stop_token_ids, tuple)
    hash(params)  # hashable because lists were turned into tuples
    assert params == SamplingParams(stop=("</s>", "END"), stop_token_ids=(7, 9))


def test_greedy_and_has_penalties_flags() -> None:
    assert SamplingParams(temperature=0).greedy
    assert not SamplingParams(temperature=0.01).greedy
    assert not SamplingParams().has_penalties
    assert SamplingParams(repetition_penalty=1.1).has_penalties
    assert SamplingParams(frequency_penalty=0.1).has_penalties
    assert SamplingParams(presence_penalty=-0.1).has_penalties


# --- penalty counts kept between steps ------------------------------------------------------------

def test_kept_penalty_counts_equal_counting_from_the_lists() -> None:
    """Steps of one request with a draft row each; drafts are rejected; the id is then reused."""
    gen = torch.Generator().manual_seed(5)
    vocab = 50
    params = SamplingParams(repetition_penalty=1.7, frequency_penalty=0.4, presence_penalty=0.9)
    counts = PenaltyCounts()
    prompt = torch.randint(vocab, (12,), generator=gen).tolist()
    output: list[int] = []
    for step in range(8):
        draft = int(torch.randint(vocab, (1,), generator=gen))
        rows = [SampleRow(params, 0, len(output), prompt, list(output), "r"),
                SampleRow(params, 0, len(output) + 1, prompt, output + [draft], "r"),
                SampleRow(params, 0, 0, [1, 2], [3, 3], "other")]
        logits = torch.randn(len(rows), vocab, generator=gen)
        kept = apply_penalties(logits, rows, counts.for_rows(rows, vocab, logits.device))
        torch.testing.assert_close(kept, apply_penalties(logits, rows))
        output.append(int(torch.randint(vocab, (1,), generator=gen)))  # the draft is not what came next
    restarted = [SampleRow(params, 0, 1, [7], [8], "r")]  # a new request under an old id
    logits = torch.randn(1, vocab, generator=gen)
    torch.testing.assert_close(apply_penalties(logits, restarted, counts.for_rows(restarted, vocab, logits.device)),
                               apply_penalties(logits, restarted))
    assert len(counts) == 2
    counts.forget("r")
    assert len(counts) == 1
    # A row without penalties keeps nothing and counts as zeros.
    plain = [SampleRow(SamplingParams(), 0, 1, [4], [5], "plain")]
    output, in_prompt = counts.for_rows(plain, vocab, torch.device("cpu"), wanted=[False])
    assert len(counts) == 1 and not output.any() and not in_prompt.any()


def test_the_loop_keeps_penalty_counts_and_forgets_them(engine) -> None:
    from engine_core.loop import EngineLoop
    from engine_core.scheduler_loader import load_scheduler

    from .loop_driver import run_requests

    prompts = [engine.tokenizer.encode(t) for t in ("Say something about cats", "Count to twenty: 1, 2, 3")]
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, repetition_penalty=1.3,
                            frequency_penalty=0.5, presence_penalty=0.5)
    loop = EngineLoop(engine, load_scheduler("a1", "solution"))
    loop.start()
    try:
        served = run_requests(loop, prompts, params)
    finally:
        loop.stop()
    assert [r.token_ids for r in served] == engine.generate(prompts, params)  # counted from lists there
    assert len(engine.sampler.penalty_counts) == 0
