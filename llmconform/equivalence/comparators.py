"""Output equivalence: does one serving layout answer like another?

Comparators judge a candidate layout's generations against a reference layout's, prompt by prompt:
- `exact`: identical tokens, text, finish_reason and usage (achievable where the arithmetic is, e.g. fp32);
- `logprob-close`: identical up to the first divergence; there each side's token must be in the other side's top-k
  and neither side may prefer its own token by more than `max_gap` nats; later tokens are not compared (vLLM's
  `check_logprobs_close` rule, with a bound on the margin added);
- `logprob-delta`: while tokens agree, the chosen token's logprob may move by at most `max_delta` between layouts;
  at the first divergence both contested tokens must be in both top-k lists with logprobs within `max_delta`.
Sampled outputs are judged by `compare_distributions` (a chi-square test of first-token frequencies).

Every verdict says where outputs diverged: both tokens, their logprobs and ranks on both sides, and the margins.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

TEXT_SHOWN = 60  # characters of text shown in a message


@dataclass(frozen=True)
class Step:
    """One generated token with the engine's logprobs for it: `key` names the token the same way as the keys of
    `top` (so that membership can be checked), `top` lists the engine's top-k alternatives best first."""

    key: str
    logprob: float | None
    top: tuple[tuple[str, float], ...] = ()

    def logprob_of(self, key: str) -> float | None:
        if key == self.key and self.logprob is not None:
            return self.logprob
        return next((lp for k, lp in self.top if k == key), None)

    def rank_of(self, key: str) -> int | None:
        """1-based rank of `key` among this position's top-k (None: not listed)."""
        for rank, (k, _) in enumerate(self.top, 1):
            if k == key:
                return rank
        return None


@dataclass(frozen=True)
class Generation:
    """One answer of one layout to one prompt, as the comparators see it.

    `tokens` identifies the generated tokens (token ids as `id:N` when the engine returns them, else token texts);
    `identity` says which ("token ids", "token text", or "text only" when the engine returned neither)."""

    prompt: str
    text: str
    tokens: tuple[str, ...]
    steps: tuple[Step, ...]
    finish_reason: str | None
    usage: dict | None
    identity: str
    prompt_token_ids: tuple[int, ...] | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Generation:
        steps = tuple(Step(s["key"], s["logprob"], tuple((k, lp) for k, lp in s["top"])) for s in data["steps"])
        prompt_ids = data.get("prompt_token_ids")
        return cls(prompt=data["prompt"], text=data["text"], tokens=tuple(data["tokens"]), steps=steps,
                   finish_reason=data["finish_reason"], usage=data["usage"], identity=data["identity"],
                   prompt_token_ids=tuple(prompt_ids) if prompt_ids is not None else None)


@dataclass(frozen=True)
class Divergence:
    """The first position where two generations chose different tokens. A token of None means that side had
    already ended there. `*_in_reference` is the reference side's view of the candidate's token and vice versa
    (None: outside that side's top-k)."""

    position: int
    reference_token: str | None
    candidate_token: str | None
    reference_logprob: float | None
    candidate_logprob: float | None
    candidate_token_logprob_in_reference: float | None
    reference_token_logprob_in_candidate: float | None
    candidate_token_rank_in_reference: int | None
    reference_token_rank_in_candidate: int | None
    reference_top_k: int
    candidate_top_k: int

    @property
    def reference_margin(self) -> float | None:
        """How much the reference preferred its own token over the candidate's (nats)."""
        return _difference(self.reference_logprob, self.candidate_token_logprob_in_reference)

    @property
    def candidate_margin(self) -> float | None:
        return _difference(self.candidate_logprob, self.reference_token_logprob_in_candidate)

    def describe(self, reference: str, candidate: str) -> str:
        lines = [f"first divergence at generated token {self.position}:"]
        for side, token, own, other_view, rank, other, top_k, margin in (
                (reference, self.reference_token, self.reference_logprob, self.reference_token_logprob_in_candidate,
                 self.reference_token_rank_in_candidate, candidate, self.candidate_top_k, self.reference_margin),
                (candidate, self.candidate_token, self.candidate_logprob, self.candidate_token_logprob_in_reference,
                 self.candidate_token_rank_in_reference, reference, self.reference_top_k, self.candidate_margin)):
            if token is None:
                lines.append(f"  {side}: had already ended")
                continue
            seen = (f"rank {rank} in {other}'s top-{top_k} with logprob {_fmt(other_view)}" if rank is not None
                    else f"OUTSIDE {other}'s top-{top_k}")
            preference = f"; {side} prefers it by {_fmt(margin)}" if margin is not None else ""
            lines.append(f"  {side} chose {_show(token)} (logprob {_fmt(own)}), {seen}{preference}")
        return "\n".join(lines)


@dataclass(frozen=True)
class PromptVerdict:
    """The judgement of one prompt. `problems` are why it fails (none: it passes); `notes` are differences the
    comparator tolerated."""

    prompt: str
    outcome: str  # "identical", "close" (tolerated differences), or "diverged" (fails)
    matched_tokens: int
    reference_tokens: int
    candidate_tokens: int
    divergence: Divergence | None
    max_logprob_delta: float | None
    max_delta_position: int | None
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.divergence is not None:
            data["divergence"]["reference_margin"] = self.divergence.reference_margin
            data["divergence"]["candidate_margin"] = self.divergence.candidate_margin
        return data


@dataclass
class Verdict:
    """All prompts of one probe, candidate layout against reference layout."""

    comparator: str
    parameters: dict
    reference: str
    candidate: str
    identity: str
    prompts: list[PromptVerdict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.prompts)

    def count(self, outcome: str) -> int:
        return sum(1 for p in self.prompts if p.outcome == outcome)

    @property
    def outcome(self) -> str:
        if not self.ok:
            return "diverged"
        return "identical" if self.count("identical") == len(self.prompts) else "close"

    @property
    def max_logprob_delta(self) -> float | None:
        deltas = [p.max_logprob_delta for p in self.prompts if p.max_logprob_delta is not None]
        return max(deltas) if deltas else None

    def summary(self) -> str:
        n = len(self.prompts)
        head = {"identical": "identical", "close": "close (tolerated differences)", "diverged": "DIVERGED"}
        parts = [f"{head[self.outcome]}: {self.count('identical')}/{n} identical"]
        if self.comparator != "exact":
            parts.append(f"{self.count('identical') + self.count('close')}/{n} within {self.comparator}")
        if self.max_logprob_delta is not None:
            parts.append(f"max |delta logprob| over agreeing tokens {self.max_logprob_delta:.3g}")
        return f"{self.candidate} vs {self.reference} [{self.comparator}, compared by {self.identity}]: " + \
            ", ".join(parts)

    def explain(self) -> str:
        """The summary and, for each prompt that is not identical, what differed and whether it was tolerated."""
        lines = [self.summary()]
        for p in self.prompts:
            if p.outcome == "identical":
                continue
            verdict = "DIVERGED" if not p.ok else "tolerated"
            lines.append(f"- prompt {p.prompt!r}: {verdict} after {p.matched_tokens} identical tokens "
                         f"(tokens: {self.reference} {p.reference_tokens}, {self.candidate} {p.candidate_tokens})")
            if p.divergence is not None:
                lines += ["    " + line for line in p.divergence.describe(self.reference, self.candidate).split("\n")]
            lines += [f"    problem: {text}" for text in p.problems]
            lines += [f"    note: {text}" for text in p.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"comparator": self.comparator, "parameters": self.parameters, "reference": self.reference,
                "candidate": self.candidate, "identity": self.identity, "ok": self.ok, "outcome": self.outcome,
                "prompts": len(self.prompts), "identical": self.count("identical"), "close": self.count("close"),
                "diverged": self.count("diverged"), "max_logprob_delta": self.max_logprob_delta,
                "summary": self.summary(), "details": [p.to_dict() for p in self.prompts]}


# --- alignment: what every comparator needs to know about a pair ------------------------------------------------
@dataclass(frozen=True)
class _Alignment:
    matched: int
    divergence: Divergence | None
    deltas: tuple[float | None, ...]  # |delta logprob| of the chosen token at each agreeing position


def _align(reference: Generation, candidate: Generation) -> _Alignment:
    ref_tokens, cand_tokens = reference.tokens, candidate.tokens
    matched = 0
    while matched < min(len(ref_tokens), len(cand_tokens)) and ref_tokens[matched] == cand_tokens[matched]:
        matched += 1
    deltas = tuple(_difference_abs(_step(reference, i), _step(candidate, i)) for i in range(matched))
    if matched == len(ref_tokens) == len(cand_tokens):
        return _Alignment(matched, None, deltas)
    ref_step, cand_step = _step(reference, matched), _step(candidate, matched)
    ref_token = ref_tokens[matched] if matched < len(ref_tokens) else None
    cand_token = cand_tokens[matched] if matched < len(cand_tokens) else None
    # Top-k lists are keyed like the steps' own keys, which may differ from `tokens` (ids vs texts).
    ref_key = ref_step.key if ref_step else ref_token
    cand_key = cand_step.key if cand_step else cand_token
    divergence = Divergence(
        position=matched, reference_token=ref_token, candidate_token=cand_token,
        reference_logprob=ref_step.logprob if ref_step else None,
        candidate_logprob=cand_step.logprob if cand_step else None,
        candidate_token_logprob_in_reference=ref_step.logprob_of(cand_key) if ref_step and cand_key else None,
        reference_token_logprob_in_candidate=cand_step.logprob_of(ref_key) if cand_step and ref_key else None,
        candidate_token_rank_in_reference=ref_step.rank_of(cand_key) if ref_step and cand_key else None,
        reference_token_rank_in_candidate=cand_step.rank_of(ref_key) if cand_step and ref_key else None,
        reference_top_k=len(ref_step.top) if ref_step else 0,
        candidate_top_k=len(cand_step.top) if cand_step else 0,
    )
    return _Alignment(matched, divergence, deltas)


def _step(generation: Generation, position: int) -> Step | None:
    return generation.steps[position] if position < len(generation.steps) else None


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _difference_abs(a: Step | None, b: Step | None) -> float | None:
    if a is None or b is None or a.logprob is None or b.logprob is None:
        return None
    return abs(a.logprob - b.logprob)


def _verdict(comparator: str, reference: Generation, candidate: Generation, alignment: _Alignment,
             problems: list[str], notes: list[str]) -> PromptVerdict:
    known = [(d, i) for i, d in enumerate(alignment.deltas) if d is not None]
    worst = max(known) if known else (None, None)
    if problems:
        outcome = "diverged"
    elif alignment.divergence is None and not notes:
        outcome = "identical"
    else:
        outcome = "close"
    return PromptVerdict(prompt=reference.prompt, outcome=outcome, matched_tokens=alignment.matched,
                         reference_tokens=len(reference.tokens), candidate_tokens=len(candidate.tokens),
                         divergence=alignment.divergence, max_logprob_delta=worst[0], max_delta_position=worst[1],
                         problems=tuple(problems), notes=tuple(notes))


def _invariants(reference: Generation, candidate: Generation, alignment: _Alignment) -> list[str]:
    """What must agree whatever the numerics: how the prompt was tokenized, and (when every token agrees) the text
    and why generation stopped."""
    problems = []
    if reference.prompt_token_ids is not None and candidate.prompt_token_ids is not None \
            and reference.prompt_token_ids != candidate.prompt_token_ids:
        problems.append("the prompt was tokenized differently")
    ref_prompt_tokens = (reference.usage or {}).get("prompt_tokens")
    cand_prompt_tokens = (candidate.usage or {}).get("prompt_tokens")
    if ref_prompt_tokens is not None and cand_prompt_tokens is not None and ref_prompt_tokens != cand_prompt_tokens:
        problems.append(f"usage.prompt_tokens differs: {ref_prompt_tokens} vs {cand_prompt_tokens}")
    if alignment.divergence is None:
        if reference.text != candidate.text:
            problems.append(f"identical tokens but different text: {_show(reference.text)} vs {_show(candidate.text)}")
        if reference.finish_reason != candidate.finish_reason:
            problems.append(f"identical tokens but finish_reason {reference.finish_reason!r} vs "
                            f"{candidate.finish_reason!r}")
        if not reference.tokens and not candidate.tokens and not reference.text and not candidate.text:
            problems.append("both sides generated nothing: there is nothing to compare")
    return problems


# --- comparators -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Exact:
    """Identical tokens, text, finish_reason and usage; with `max_drift`, also the chosen tokens' logprobs within
    `max_drift` of the reference's (fp32 layouts differ by ~1e-5: a larger move with the same tokens is a numerical
    bug)."""

    max_drift: float | None = None
    name: str = "exact"

    def parameters(self) -> dict:
        return {} if self.max_drift is None else {"max_logprob_drift": self.max_drift}

    def judge(self, reference: Generation, candidate: Generation) -> PromptVerdict:
        alignment = _align(reference, candidate)
        problems = _invariants(reference, candidate, alignment)
        if alignment.divergence is not None:
            problems.append(f"tokens differ from generated token {alignment.divergence.position} on")
            if reference.text != candidate.text:
                problems.append(f"text differs: {_show(reference.text)} vs {_show(candidate.text)}")
            if reference.finish_reason != candidate.finish_reason:
                problems.append(f"finish_reason {reference.finish_reason!r} vs {candidate.finish_reason!r}")
        if reference.usage != candidate.usage and not any(p.startswith("usage") for p in problems):
            problems.append(f"usage differs: {reference.usage} vs {candidate.usage}")
        drifts = [(d, i) for i, d in enumerate(alignment.deltas) if d is not None]
        if self.max_drift is not None and drifts and max(drifts)[0] > self.max_drift:
            drift, position = max(drifts)
            problems.append(f"logprobs drifted: |delta logprob| {drift:.3g} > max_logprob_drift {self.max_drift:g} "
                            f"at token {position} although the tokens agree")
        return _verdict(self.name, reference, candidate, alignment, problems, [])


@dataclass(frozen=True)
class LogprobClose:
    """Identical until the first divergence, which must be a near-tie: each side's token in the other's top-k and
    neither side preferring its own token by more than `max_gap` nats. Later tokens are not compared."""

    top_k: int = 5
    max_gap: float = 1.0
    name: str = "logprob-close"

    def parameters(self) -> dict:
        return {"top_k": self.top_k, "max_logprob_gap": self.max_gap}

    def judge(self, reference: Generation, candidate: Generation) -> PromptVerdict:
        alignment = _align(reference, candidate)
        problems = _invariants(reference, candidate, alignment)
        notes = []
        d = alignment.divergence
        if d is not None:
            problems += _tie_problems(d, reference, candidate)
            for side, margin in (("reference", d.reference_margin), ("candidate", d.candidate_margin)):
                if margin is not None and margin > self.max_gap:
                    problems.append(f"the {side} prefers its own token by {margin:.4g} > max_logprob_gap "
                                    f"{self.max_gap}")
            if not problems:
                notes.append(f"near-tie flip at token {d.position} (margins {_fmt(d.reference_margin)} and "
                             f"{_fmt(d.candidate_margin)} <= {self.max_gap}); later tokens not compared")
        return _verdict(self.name, reference, candidate, alignment, problems, notes)


@dataclass(frozen=True)
class LogprobDelta:
    """While tokens agree, |delta logprob| of the chosen token <= `max_delta`; at the first divergence both contested
    tokens must be in both top-k lists with logprobs within `max_delta` of each other. Later tokens are not
    compared."""

    max_delta: float = 0.1
    top_k: int = 5
    name: str = "logprob-delta"

    def parameters(self) -> dict:
        return {"top_k": self.top_k, "max_logprob_delta": self.max_delta}

    def judge(self, reference: Generation, candidate: Generation) -> PromptVerdict:
        alignment = _align(reference, candidate)
        problems = _invariants(reference, candidate, alignment)
        notes = []
        missing = [i for i, delta in enumerate(alignment.deltas) if delta is None]
        if missing:
            problems.append(f"no logprobs to compare at {len(missing)} agreeing token(s), first at {missing[0]}")
        over = [(delta, i) for i, delta in enumerate(alignment.deltas) if delta is not None and delta > self.max_delta]
        if over:
            delta, position = max(over)
            problems.append(f"|delta logprob| {delta:.4g} > max_logprob_delta {self.max_delta} at token {position} "
                            f"({len(over)} agreeing token(s) over the bound)")
        d = alignment.divergence
        if d is not None:
            tie = _tie_problems(d, reference, candidate)
            problems += tie
            if not tie:
                ref_step, cand_step = _step(reference, d.position), _step(candidate, d.position)
                assert ref_step is not None and cand_step is not None  # else _tie_problems named it
                for token_key in (ref_step.key, cand_step.key):
                    in_ref, in_cand = ref_step.logprob_of(token_key), cand_step.logprob_of(token_key)
                    if in_ref is None or in_cand is None:
                        problems.append(f"at the divergence, token {_show(token_key)} has no logprob on one side")
                    elif abs(in_ref - in_cand) > self.max_delta:
                        problems.append(f"at the divergence, token {_show(token_key)} has logprobs {_fmt(in_ref)} "
                                        f"vs {_fmt(in_cand)} (|delta| {abs(in_ref - in_cand):.4g} > "
                                        f"{self.max_delta})")
            if not problems:
                notes.append(f"near-tie flip at token {d.position} with both contested logprobs within "
                             f"{self.max_delta}; later tokens not compared")
        return _verdict(self.name, reference, candidate, alignment, problems, notes)


def _tie_problems(d: Divergence, reference: Generation, candidate: Generation) -> list[str]:
    """Why a divergence is not a near-tie the logprobs can vouch for (empty: both tokens in both top-k lists)."""
    if d.reference_token is None or d.candidate_token is None:
        ended = "reference" if d.reference_token is None else "candidate"
        return [f"the {ended} ended at token {d.position} while the other side went on"]
    if _step(reference, d.position) is None or _step(candidate, d.position) is None:
        return [f"tokens differ at {d.position} and the engine returned no logprobs there to judge it"]
    problems = []
    if d.candidate_token_rank_in_reference is None:
        problems.append(f"the candidate's token {_show(d.candidate_token)} at {d.position} is outside the "
                        f"reference's top-{d.reference_top_k}")
    if d.reference_token_rank_in_candidate is None:
        problems.append(f"the reference's token {_show(d.reference_token)} at {d.position} is outside the "
                        f"candidate's top-{d.candidate_top_k}")
    return problems


Comparator = Exact | LogprobClose | LogprobDelta
COMPARATORS = ("exact", "logprob-close", "logprob-delta")


def make_comparator(name: str, top_k: int = 5, max_gap: float = 1.0, max_delta: float = 0.1,
                    max_drift: float | None = None) -> Comparator:
    if name == "exact":
        return Exact(max_drift=max_drift)
    if name == "logprob-close":
        return LogprobClose(top_k=top_k, max_gap=max_gap)
    if name == "logprob-delta":
        return LogprobDelta(max_delta=max_delta, top_k=top_k)
    raise ValueError(f"unknown comparator {name!r} (known: {', '.join(COMPARATORS)})")


def compare(comparator: Comparator, reference: list[Generation], candidate: list[Generation],
            reference_name: str = "reference", candidate_name: str = "candidate") -> Verdict:
    """Judge every prompt of the reference; a prompt the candidate did not answer is a divergence."""
    by_prompt = {g.prompt: g for g in candidate}
    identities = {g.identity for g in (*reference, *candidate)}
    identity = identities.pop() if len(identities) == 1 else " / ".join(sorted(identities))
    verdict = Verdict(comparator.name, comparator.parameters(), reference_name, candidate_name, identity)
    for ref in reference:
        cand = by_prompt.get(ref.prompt)
        if cand is None:
            verdict.prompts.append(PromptVerdict(ref.prompt, "diverged", 0, len(ref.tokens), 0, None, None, None,
                                                 problems=("the candidate has no answer for this prompt",)))
        else:
            verdict.prompts.append(comparator.judge(ref, cand))
    extra = sorted(set(by_prompt) - {g.prompt for g in reference})
    for prompt in extra:
        verdict.prompts.append(PromptVerdict(prompt, "diverged", 0, 0, len(by_prompt[prompt].tokens), None, None, None,
                                             problems=("the reference has no answer for this prompt",)))
    return verdict


# --- sampled outputs ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistributionPrompt:
    prompt: str
    statistic: float
    dof: int
    p_value: float
    alpha: float
    reference_samples: int
    candidate_samples: int
    categories: int  # after pooling rare tokens
    most_different: tuple[tuple[str, int, int], ...]  # (token, reference count, candidate count)

    @property
    def ok(self) -> bool:
        return self.p_value >= self.alpha


@dataclass
class DistributionVerdict:
    """Chi-square homogeneity tests of first-token frequencies, one per prompt. The probability that layouts which
    sample from the same distribution fail this verdict is at most `false_alarm_rate` (Bonferroni over prompts)."""

    reference: str
    candidate: str
    false_alarm_rate: float
    prompts: list[DistributionPrompt] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.prompts)

    @property
    def comparator(self) -> str:
        return "distribution"

    @property
    def outcome(self) -> str:
        return "consistent" if self.ok else "diverged"

    def summary(self) -> str:
        worst = min((p.p_value for p in self.prompts), default=1.0)
        head = "same distribution (not rejected)" if self.ok else "DIFFERENT DISTRIBUTION"
        return (f"{self.candidate} vs {self.reference} [distribution, chi-square, false-alarm rate "
                f"{self.false_alarm_rate:g}]: {head}: {sum(p.ok for p in self.prompts)}/{len(self.prompts)} prompts "
                f"consistent, smallest p-value {worst:.3g}")

    def explain(self) -> str:
        lines = [self.summary()]
        for p in self.prompts:
            status = "ok" if p.ok else "REJECTED"
            shown = ", ".join(f"{_show(t)}: {a} vs {b}" for t, a, b in p.most_different)
            lines.append(f"- prompt {p.prompt!r}: {status} chi2={p.statistic:.2f} dof={p.dof} p={p.p_value:.3g} "
                         f"(alpha per prompt {p.alpha:.2g}; samples {p.reference_samples} vs {p.candidate_samples}); "
                         f"largest count differences: {shown}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"comparator": "distribution", "reference": self.reference, "candidate": self.candidate,
                "false_alarm_rate": self.false_alarm_rate, "ok": self.ok, "outcome": self.outcome,
                "prompts": len(self.prompts), "summary": self.summary(),
                "details": [asdict(p) for p in self.prompts]}


def compare_distributions(reference: dict[str, dict[str, int]], candidate: dict[str, dict[str, int]],
                          false_alarm_rate: float = 0.001, reference_name: str = "reference",
                          candidate_name: str = "candidate") -> DistributionVerdict:
    """`reference`/`candidate`: prompt -> {token: count}. Each prompt is tested at false_alarm_rate / prompts."""
    verdict = DistributionVerdict(reference_name, candidate_name, false_alarm_rate)
    alpha = false_alarm_rate / max(len(reference), 1)
    for prompt, ref_counts in reference.items():
        cand_counts = candidate.get(prompt, {})
        statistic, dof, categories = chi_square_homogeneity(ref_counts, cand_counts)
        p_value = chi_square_sf(statistic, dof) if dof > 0 else 1.0
        if not cand_counts:
            p_value = 0.0  # no samples from the candidate is a failure, not an absence of evidence
        tokens = set(ref_counts) | set(cand_counts)
        n_ref, n_cand = sum(ref_counts.values()), sum(cand_counts.values())
        spread = sorted(tokens, key=lambda t: -abs(ref_counts.get(t, 0) / max(n_ref, 1)
                                                   - cand_counts.get(t, 0) / max(n_cand, 1)))
        verdict.prompts.append(DistributionPrompt(
            prompt=prompt, statistic=statistic, dof=dof, p_value=p_value, alpha=alpha, reference_samples=n_ref,
            candidate_samples=n_cand, categories=categories,
            most_different=tuple((t, ref_counts.get(t, 0), cand_counts.get(t, 0)) for t in spread[:3])))
    return verdict


def chi_square_homogeneity(a: dict[str, int], b: dict[str, int], min_expected: float = 5.0) -> tuple[float, int, int]:
    """Pearson's chi-square statistic of a 2 x k contingency table (two samples over the same categories).

    Categories whose expected count would be below `min_expected` in either sample are pooled into one bin (the
    chi-square approximation needs expected counts of about 5 or more); returns (statistic, dof, categories)."""
    n_a, n_b = sum(a.values()), sum(b.values())
    total = n_a + n_b
    if n_a == 0 or n_b == 0:
        return 0.0, 0, 0
    smaller = min(n_a, n_b)
    # expected count of column c in the smaller row = column_total * smaller / total
    needed = min_expected * total / smaller
    columns: list[tuple[int, int]] = []
    pooled = [0, 0]
    for token in sorted(set(a) | set(b), key=lambda t: -(a.get(t, 0) + b.get(t, 0))):
        pair = (a.get(token, 0), b.get(token, 0))
        if sum(pair) >= needed:
            columns.append(pair)
        else:
            pooled[0] += pair[0]
            pooled[1] += pair[1]
    pooled_total = pooled[0] + pooled[1]
    if pooled_total >= needed or (pooled_total and not columns):
        columns.append((pooled[0], pooled[1]))
    elif pooled_total:
        # too small to stand alone: merge the pooled bin into the smallest real column
        smallest = min(range(len(columns)), key=lambda i: sum(columns[i]))
        columns[smallest] = (columns[smallest][0] + pooled[0], columns[smallest][1] + pooled[1])
    statistic = 0.0
    for count_a, count_b in columns:
        column_total = count_a + count_b
        for count, row_total in ((count_a, n_a), (count_b, n_b)):
            expected = column_total * row_total / total
            statistic += (count - expected) ** 2 / expected
    return statistic, len(columns) - 1, len(columns)


def chi_square_sf(x: float, dof: int) -> float:
    """P(X >= x) for X ~ chi-square(dof): the regularized upper incomplete gamma function Q(dof/2, x/2)."""
    if x <= 0:
        return 1.0
    return _gamma_q(dof / 2.0, x / 2.0)


def _gamma_q(a: float, x: float) -> float:
    if x < a + 1.0:
        # series for the lower function P(a, x) converges fast here
        term = total = 1.0 / a
        n = a
        for _ in range(10000):
            n += 1.0
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-x + a * math.log(x) - math.lgamma(a)))
    # continued fraction for Q(a, x) (modified Lentz), accurate for x >= a + 1
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        step = d * c
        h *= step
        if abs(step - 1.0) < 1e-15:
            break
    return min(1.0, math.exp(-x + a * math.log(x) - math.lgamma(a)) * h)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _show(text: str | None) -> str:
    if text is None:
        return "(none)"
    shown = repr(text)
    return shown if len(shown) <= TEXT_SHOWN else shown[:TEXT_SHOWN - 3] + "..."
