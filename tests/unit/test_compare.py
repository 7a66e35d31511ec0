"""Comparators on constructed generations: what each must accept, and what each must reject."""

import math

import numpy as np
import pytest

from llmconform.equivalence.comparators import (
    Exact,
    Generation,
    LogprobClose,
    LogprobDelta,
    Step,
    chi_square_homogeneity,
    chi_square_sf,
    compare,
    compare_distributions,
    make_comparator,
)

ALL = (Exact(), LogprobClose(top_k=5, max_gap=1.0), LogprobDelta(max_delta=0.1))


def generation(steps, prompt="p", text=None, finish="length", usage=None, prompt_ids=(1, 2, 3, 4)):
    """steps: one {token: logprob} mapping per generated token; its first key is the chosen token."""
    built = []
    for top in steps:
        chosen = next(iter(top))
        built.append(Step(chosen, top[chosen], tuple(sorted(top.items(), key=lambda kv: -kv[1]))))
    tokens = tuple(s.key for s in built)
    usage = usage or {"prompt_tokens": len(prompt_ids), "completion_tokens": len(tokens),
                      "total_tokens": len(prompt_ids) + len(tokens)}
    return Generation(prompt=prompt, text="".join(tokens) if text is None else text, tokens=tokens,
                      steps=tuple(built), finish_reason=finish, usage=usage, identity="token ids",
                      prompt_token_ids=prompt_ids)


AGREE = [{"a": -0.1, "b": -2.5, "c": -3.0}, {"b": -0.3, "a": -1.5, "d": -4.0}]


def with_flip(first_choice, second_choice, first_lp, second_lp):
    """Two agreeing tokens, then a position where `first_choice` is chosen and `second_choice` is the runner-up."""
    return generation([*AGREE, {first_choice: first_lp, second_choice: second_lp, "z": -5.0}, {"q": -0.2}])


@pytest.mark.parametrize("comparator", ALL, ids=lambda c: c.name)
def test_identical_generations_pass_every_comparator(comparator):
    verdict = compare(comparator, [generation(AGREE)], [generation(AGREE)], "tp1", "tp2")
    assert verdict.ok and verdict.outcome == "identical"
    assert verdict.prompts[0].matched_tokens == 2


def test_floating_point_noise_on_agreeing_tokens_is_measured_but_tolerated():
    noisy = generation([{"a": -0.1 + 6e-6, "b": -2.5}, {"b": -0.3 - 2e-6, "a": -1.5}])
    for comparator in ALL:
        verdict = compare(comparator, [generation(AGREE)], [noisy])
        assert verdict.ok, verdict.explain()
    assert compare(Exact(), [generation(AGREE)], [noisy]).max_logprob_delta == pytest.approx(6e-6, rel=1e-3)


def test_near_tie_flip_fails_exact_but_is_close():
    reference = with_flip("x", "y", -0.60, -0.62)
    candidate = with_flip("y", "x", -0.59, -0.61)
    exact = compare(Exact(), [reference], [candidate], "tp1", "tp2")
    assert not exact.ok
    message = exact.explain()
    assert "DIVERGED" in message and "generated token 2" in message
    assert "tp1 chose 'x' (logprob -0.6), rank 2 in tp2's top-3 with logprob -0.61" in message
    assert "tp2 chose 'y' (logprob -0.59), rank 2 in tp1's top-3 with logprob -0.62" in message
    for comparator in (LogprobClose(max_gap=1.0), LogprobDelta(max_delta=0.1)):
        verdict = compare(comparator, [reference], [candidate], "tp1", "tp2")
        assert verdict.ok and verdict.outcome == "close", verdict.explain()
        assert "near-tie flip at token 2" in verdict.explain()
    d = exact.prompts[0].divergence
    assert d.reference_margin == pytest.approx(0.02) and d.candidate_margin == pytest.approx(0.02)


@pytest.mark.parametrize("comparator", ALL, ids=lambda c: c.name)
def test_swapped_token_outside_top_k_fails_every_comparator(comparator):
    reference = generation([*AGREE, {"x": -0.5, "y": -1.0, "w": -2.0}])
    candidate = generation([*AGREE, {"m": -0.4, "n": -1.2, "o": -2.2}])
    verdict = compare(comparator, [reference], [candidate], "tp1", "tp2")
    assert not verdict.ok and verdict.outcome == "diverged"
    assert "OUTSIDE tp1's top-3" in verdict.explain()
    assert "OUTSIDE tp2's top-3" in verdict.explain()


def test_flip_with_a_confident_side_exceeds_the_gap_bound():
    reference = with_flip("x", "y", -0.05, -3.5)  # the reference is sure of x
    candidate = with_flip("y", "x", -0.40, -0.45)
    strict = compare(LogprobClose(max_gap=1.0), [reference], [candidate])
    assert not strict.ok
    assert "the reference prefers its own token by 3.45 > max_logprob_gap 1.0" in strict.explain()
    assert "near-tie" not in strict.explain()  # a flip beyond the bound is not called a near tie
    assert compare(LogprobClose(max_gap=5.0), [reference], [candidate]).ok


def test_logprob_drift_on_agreeing_tokens_fails_only_logprob_delta():
    drifted = generation([{"a": -0.6, "b": -2.5, "c": -3.0}, {"b": -0.3, "a": -1.5, "d": -4.0}])
    assert compare(Exact(), [generation(AGREE)], [drifted]).ok
    assert compare(LogprobClose(), [generation(AGREE)], [drifted]).ok
    delta = compare(LogprobDelta(max_delta=0.1), [generation(AGREE)], [drifted])
    assert not delta.ok
    assert "|delta logprob| 0.5 > max_logprob_delta 0.1 at token 0" in delta.explain()


def test_logprob_delta_checks_the_contested_tokens_at_a_divergence():
    reference = with_flip("x", "y", -0.60, -0.62)
    candidate = with_flip("y", "x", -0.20, -0.90)  # both in top-k, but y moved by 0.42
    verdict = compare(LogprobDelta(max_delta=0.1), [reference], [candidate])
    assert not verdict.ok
    assert "token 'y' has logprobs -0.62 vs -0.2" in verdict.explain()
    assert compare(LogprobClose(max_gap=1.0), [reference], [candidate]).ok


@pytest.mark.parametrize("comparator", ALL, ids=lambda c: c.name)
def test_same_tokens_with_different_text_fail(comparator):
    verdict = compare(comparator, [generation(AGREE)], [generation(AGREE, text="ab!")])
    assert not verdict.ok
    assert "identical tokens but different text" in verdict.explain()


@pytest.mark.parametrize("comparator", ALL, ids=lambda c: c.name)
def test_prompt_tokenized_differently_fails(comparator):
    verdict = compare(comparator, [generation(AGREE)], [generation(AGREE, prompt_ids=(1, 2, 3, 5))])
    assert not verdict.ok and "the prompt was tokenized differently" in verdict.explain()


@pytest.mark.parametrize("comparator", ALL, ids=lambda c: c.name)
def test_candidate_that_stops_early_fails(comparator):
    verdict = compare(comparator, [generation(AGREE)], [generation(AGREE[:1], finish="stop")])
    assert not verdict.ok
    assert "the candidate ended at token 1 while the other side went on" in verdict.explain() or \
        comparator.name == "exact"


def test_divergence_without_logprobs_cannot_be_vouched_for():
    reference = Generation("p", "ab", ("a", "b"), (), "length", None, "token text")
    candidate = Generation("p", "ac", ("a", "c"), (), "length", None, "token text")
    verdict = compare(LogprobClose(), [reference], [candidate])
    assert not verdict.ok
    assert "returned no logprobs there to judge it" in verdict.explain()


def test_exact_compares_usage():
    other_usage = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 7}
    verdict = compare(Exact(), [generation(AGREE)], [generation(AGREE, usage=other_usage)])
    assert not verdict.ok and "usage differs" in verdict.explain()


@pytest.mark.parametrize("comparator", ALL, ids=lambda c: c.name)
def test_a_prompt_missing_on_either_side_fails(comparator):
    one = generation(AGREE, prompt="one")
    two = generation(AGREE, prompt="two")
    verdict = compare(comparator, [one, two], [one])
    assert not verdict.ok and "the candidate has no answer for this prompt" in verdict.explain()
    assert not compare(comparator, [one], [one, two]).ok


def test_nothing_generated_on_both_sides_is_not_a_pass():
    empty = Generation("p", "", (), (), "stop", None, "text only")
    assert not compare(Exact(), [empty], [empty]).ok


def test_generation_round_trips_through_json_shape():
    original = generation(AGREE)
    assert Generation.from_dict(original.to_dict()) == original


def test_make_comparator_rejects_unknown_names():
    assert make_comparator("logprob-close", top_k=3, max_gap=0.5) == LogprobClose(top_k=3, max_gap=0.5)
    with pytest.raises(ValueError, match="unknown comparator"):
        make_comparator("roughly")


# --- distributions -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("x, dof, expected", [
    (3.841458820694124, 1, 0.05), (18.307038053275146, 10, 0.05), (0.1, 2, math.exp(-0.05)),
    (6.634896601021214, 1, 0.01), (100.0, 3, 1.7e-21), (0.0, 4, 1.0)])
def test_chi_square_survival_function_matches_tables(x, dof, expected):
    assert chi_square_sf(x, dof) == pytest.approx(expected, rel=2e-2)


def test_identical_samples_are_consistent():
    counts = {"p": {"a": 120, "b": 50, "c": 30}}
    verdict = compare_distributions(counts, counts, false_alarm_rate=0.01)
    assert verdict.ok and verdict.prompts[0].statistic == 0.0 and verdict.prompts[0].p_value == 1.0


def test_shifted_distribution_is_rejected():
    rng = np.random.default_rng(3)
    tokens = np.array(["a", "b", "c", "d"])
    reference = _counts(rng.choice(tokens, size=400, p=[0.4, 0.3, 0.2, 0.1]))
    shifted = _counts(rng.choice(tokens, size=400, p=[0.25, 0.25, 0.25, 0.25]))
    verdict = compare_distributions({"p": reference}, {"p": shifted}, false_alarm_rate=0.001)
    assert not verdict.ok
    assert "DIFFERENT DISTRIBUTION" in verdict.explain() and "REJECTED" in verdict.explain()


def test_false_alarm_rate_is_what_it_says():
    """Layouts that sample from one distribution are rejected at about the stated rate (2000 simulated pairs)."""
    rng = np.random.default_rng(11)
    p = np.array([0.35, 0.2, 0.15, 0.1, 0.08, 0.05, 0.04, 0.02, 0.005, 0.005])
    tokens = np.array([f"t{i}" for i in range(len(p))])
    rejected = 0
    trials = 2000
    for _ in range(trials):
        a = _counts(rng.choice(tokens, size=200, p=p))
        b = _counts(rng.choice(tokens, size=200, p=p))
        rejected += not compare_distributions({"x": a}, {"x": b}, false_alarm_rate=0.05).ok
    # binomial(2000, 0.05): mean 100, sd 9.7; the chi-square approximation may be slightly conservative
    assert 55 <= rejected <= 140


def test_candidate_without_samples_fails():
    verdict = compare_distributions({"p": {"a": 10, "b": 10}}, {}, false_alarm_rate=0.01)
    assert not verdict.ok


def test_rare_tokens_are_pooled_so_expected_counts_stay_large():
    a = {"a": 60, "b": 30, "r1": 3, "r2": 2, "r3": 2}
    b = {"a": 55, "b": 35, "r4": 2, "r5": 2, "r1": 1}
    statistic, dof, categories = chi_square_homogeneity(a, b)
    assert categories == 3 and dof == 2  # a, b, and the 12 rare samples pooled (10.1 needed for expected >= 5)
    assert statistic < 5
    fewer = {"a": 60, "b": 30, "r1": 1}
    _, dof, categories = chi_square_homogeneity(fewer, {"a": 55, "b": 35, "r4": 2})
    assert categories == 2 and dof == 1  # 3 rare samples are too few for a bin: merged into the smallest one


def test_bonferroni_splits_the_false_alarm_rate_over_prompts():
    counts = {f"p{i}": {"a": 5, "b": 5} for i in range(4)}
    verdict = compare_distributions(counts, counts, false_alarm_rate=0.002)
    assert all(p.alpha == pytest.approx(0.0005) for p in verdict.prompts)


def _counts(samples) -> dict[str, int]:
    values, counts = np.unique(samples, return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts, strict=True)}
