"""Output equivalence across layouts: does tp2 (pp2, ep, dp ...) answer like the reference layout (tp1)?

Each layout's server answers a fixed probe set while it runs (greedy completions with top-k logprobs for text and
token-id prompts, chat, streamed completions, seeded samples, first-token samples); the answers are kept in the report
dir, and every later layout of the same engine and model is compared with the reference layout's answers by the
comparator the matrix's `compare:` section picks (llmconform.equivalence.policy). Within each server the suite also
checks stream == non-stream, token-id prompt == text prompt, and two determinism probes (repeated request, batch
invariance). Cases run in matrix order, so the reference (listed first) is collected before the layouts compared
with it.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from llmconform.config.compare import CompareSection, Policy, case_dtype
from llmconform.engines import known_failures
from llmconform.equivalence import policy as equivalence
from llmconform.equivalence import probes
from llmconform.equivalence.comparators import Exact, Verdict, compare, compare_distributions
from llmconform.equivalence.policy import LayoutOutputs, OutputStore
from llmconform.pytest.plugin import configured_session

PROBES = {  # the report's column of each test that is not parametrized by probe
    "test_layout_answers_the_probe_set": "probe set",
    "test_seeded_samples_match_reference": "sampled-seeded",
    "test_sampled_distribution_matches_reference": "first-token-distribution",
    "test_stream_matches_non_stream": "stream = non-stream",
    "test_token_id_prompt_matches_text_prompt": "ids = text prompt",
    "test_repeated_request_gives_one_answer": "repeat",
    "test_batch_invariance": "batch invariance",
}
DISTRIBUTION_PROMPTS = ("greeting", "capital", "story")
NEEDLE = probes.TEXT_PROMPTS["story"]
_RUN_ID = pytest.StashKey[str]()
_COLLECTED = pytest.StashKey[dict]()


# --- fixtures ----------------------------------------------------------------------------------------------------
@pytest.fixture
def policy(llm) -> Policy:
    if llm.case is None:  # an attached server: its dtype is unknown, so not exact
        return CompareSection().policy(llm.model, "auto")
    return equivalence.policy_for(llm.case)


@pytest.fixture
def row(request, record_property, llm, policy) -> dict:
    """This test's cell of the equivalence report (the test adds its verdict; serialized after it ends). Set up
    before anything can skip or xfail, so that such outcomes land in the right column too."""
    callspec = getattr(request.node, "callspec", None)
    probe = callspec.params["probe"] if callspec and "probe" in callspec.params else PROBES[request.node.originalname]
    data = {"engine": llm.engine, "model": _model_id(llm), "served_model": llm.model, "layout": llm.layout,
            "probe": probe, "comparator": policy.comparator, "why": policy.why}
    record_property(equivalence.PROPERTY, data)
    return data


@pytest.fixture
def store(request, llm) -> OutputStore:
    return OutputStore(llm.report_dir, _run_id(request.config))


@pytest.fixture
def client(llm, policy) -> probes.ProbeClient:
    return probes.ProbeClient(llm.http, llm.model, llm.engine, max_tokens=policy.max_tokens, top_k=policy.top_k)


@pytest.fixture
def outputs(request, llm, store, client, policy, row) -> LayoutOutputs:
    """This layout's answers to the probe set, collected once per case; a layout that could not answer is an
    expected failure when a declared engine bug explains it, and a failure otherwise. (Needs `row` first, so that
    the report knows which cell such an outcome belongs to.)"""
    collected = _collect_once(request.config, llm, store, client, policy)
    if collected.known_failure:
        pytest.xfail(collected.known_failure)
    if collected.failure:
        pytest.fail(f"{llm.id} could not answer the probe set:\n{collected.failure}", pytrace=False)
    return collected


# --- the probe set -----------------------------------------------------------------------------------------------
def test_layout_answers_the_probe_set(request, llm, store, client, policy, row):
    """Every probe is answered. A case with a declared engine bug must fail exactly as declared (an expected
    failure with the diagnosis); if it answers after all, the declaration is stale and this test fails."""
    declared = known_failures.declared(llm.case, llm.engine_version) if llm.case else ()
    collected = _collect_once(request.config, llm, store, client, policy)
    if collected.known_failure:
        pytest.xfail(collected.known_failure)
    if collected.failure:
        pytest.fail(f"{llm.id} could not answer the probe set:\n{collected.failure}", pytrace=False)
    if declared:
        pytest.fail(f"{llm.id} answered every probe although {'; '.join(d.describe() for d in declared)} is "
                    f"declared: the engine no longer fails this way; narrow or drop the declaration in "
                    f"llmconform/engines/deviations.yaml or the file of yours that declares it", pytrace=False)
    empty = [f"{probe}/{g.prompt}" for probe, answers in collected.generations.items() for g in answers
             if not g.tokens and not g.text]
    assert not empty, f"answers with neither tokens nor text: {empty}"
    identities = sorted({g.identity for answers in collected.generations.values() for g in answers})
    answered = sum(len(a) for a in collected.generations.values()) + len(collected.first_tokens)
    row["verdict"] = {"outcome": "answered", "cell": f"answered {answered} requests, compared by "
                                                     f"{' / '.join(identities)}"}


# --- layout against reference ------------------------------------------------------------------------------------
@pytest.mark.parametrize("probe", equivalence.GREEDY_PROBES)
def test_greedy_outputs_match_reference(request, llm, store, outputs, policy, row, probe):
    reference = _reference_outputs(request, llm, store, policy, row)
    verdict = compare(equivalence.comparator_for(policy), reference.generations[probe], outputs.generations[probe],
                      reference.layout, llm.layout)
    _record(row, verdict)
    explanation = verdict.explain()
    if policy.comparator == "exact":
        # The noise floor: how far the reference's own logprobs move between two requests for the same prompts
        # (streamed and not); drift beyond max_logprob_drift is judged by the comparator.
        floor = compare(Exact(), reference.generations["completions-text"],
                        reference.generations["completions-stream"]).max_logprob_delta
        row["verdict"]["noise_floor"], row["verdict"]["drift"] = floor, verdict.max_logprob_delta
        explanation += (f"; logprob drift {_number(verdict.max_logprob_delta)} (bound {policy.max_logprob_drift:g}), "
                        f"noise floor {_number(floor)} (the reference answering the same prompts twice)")
    assert verdict.ok, explanation


def test_seeded_samples_match_reference(request, llm, store, outputs, policy, row):
    """Sampling with the same seed draws the same tokens, where the arithmetic is exact; elsewhere sampling is
    judged by the distribution test."""
    reference = _reference_outputs(request, llm, store, policy, row)
    if policy.comparator != "exact":
        pytest.skip(f"seeded samples are compared token for token only under the exact comparator (here "
                    f"{policy.comparator}: {policy.why}); test_sampled_distribution_matches_reference judges sampling")
    verdict = compare(Exact(), reference.generations["sampled-seeded"], outputs.generations["sampled-seeded"],
                      reference.layout, llm.layout)
    _record(row, verdict)
    assert verdict.ok, verdict.explain()


def test_sampled_distribution_matches_reference(request, llm, store, outputs, policy, row):
    """First tokens sampled at temperature 1 (no request seed) come from the same distribution (chi-square; a layout
    that samples from the same distribution fails with probability compare.false_alarm_rate). Engines that seed
    their sampler at start (vLLM: --seed, default 0) draw the same samples on layouts that compute identically;
    the test is then conservative, and a shifted distribution still changes the counts."""
    reference = _reference_outputs(request, llm, store, policy, row)
    verdict = compare_distributions(reference.first_tokens, outputs.first_tokens, policy.false_alarm_rate,
                                    reference.layout, llm.layout)
    worst = min((p.p_value for p in verdict.prompts), default=1.0)
    same = "identical samples" if reference.first_tokens == outputs.first_tokens else "same distribution"
    row["verdict"] = {**verdict.to_dict(), "explain": verdict.explain(),
                      "cell": f"{same if verdict.ok else 'DIFFERENT DISTRIBUTION'} "
                              f"(smallest p {worst:.2g}, alpha {policy.false_alarm_rate:g})"}
    assert verdict.ok, verdict.explain()


# --- within one server -------------------------------------------------------------------------------------------
def test_stream_matches_non_stream(llm, outputs, policy, row):
    verdict = compare(equivalence.comparator_for(policy), outputs.generations["completions-text"],
                      outputs.generations["completions-stream"], "non-stream", "stream")
    _record(row, verdict)
    assert verdict.ok, verdict.explain()


def test_token_id_prompt_matches_text_prompt(llm, outputs, policy, row):
    """A text prompt and the token ids the engine says it made of it give the same answer."""
    resent = outputs.generations.get("text-as-token-ids")
    if not resent:
        pytest.skip(f"{llm.engine} returned no prompt token ids, so there are none to send back")
    texts = [g for g in outputs.generations["completions-text"] if g.prompt in {r.prompt for r in resent}]
    verdict = compare(equivalence.comparator_for(policy), texts, resent, "text prompt", "token-id prompt")
    _record(row, verdict)
    assert verdict.ok, verdict.explain()


def test_repeated_request_gives_one_answer(llm, outputs, client, policy, row):
    """The same greedy request, repeated, gets one answer (tokens, text, finish_reason); with the engine's
    determinism switch on, bitwise-identical logprobs too. With DP the repeats also reach different replicas."""
    switch_on = _switch_on(llm)
    answers = [client.complete("repeat", NEEDLE) for _ in range(policy.repeats)]
    distinct = {(a.tokens, a.text, a.finish_reason) for a in answers}
    steps = {a.steps for a in answers}
    spread = _logprob_spread(answers)
    row["verdict"] = {"outcome": "deterministic" if len(distinct) == 1 else "nondeterministic",
                      "cell": f"{len(distinct)} distinct answer(s) / {policy.repeats}, logprob spread {spread:.2g}"}
    assert len(distinct) == 1, (f"{policy.repeats} identical requests gave {len(distinct)} different answers:\n"
                                + "\n".join(compare(Exact(), answers[:1], [a], "first", f"repeat {i}").explain()
                                            for i, a in enumerate(answers[1:], 1) if a.tokens != answers[0].tokens))
    if switch_on:
        assert len(steps) == 1, f"determinism switch on, but logprobs differ between repeats by up to {spread:.3g}"


def test_batch_invariance(llm, outputs, client, policy, row):
    """A prompt answered alone and inside a concurrent batch gets bitwise-identical tokens and logprobs. Asserted
    where the engine's determinism switch is on; without it the test is a control: it measures and reports
    (invariant or variant, noted once in the equivalence report) and fails only if the probe cannot run."""
    switch = equivalence.determinism_switch(llm.engine)
    control = not _switch_on(llm)
    if control:
        row["control"] = (f"{switch.describe() if switch else 'no determinism switch known'} is off: batch variance "
                          f"is allowed, measured and reported, not asserted")
    alone = client.complete("needle", NEEDLE)
    batch = [client.greedy(_filler(i)) for i in range(policy.batch - 1)]
    middle = len(batch) // 2
    batch.insert(middle, client.greedy(NEEDLE))
    in_batch = replace(client.concurrent(batch, llm.headers)[middle], prompt="needle")
    verdict = compare(Exact(), [alone], [in_batch], "alone", f"in a batch of {policy.batch}")
    bitwise = alone.steps == in_batch.steps
    spread = _logprob_spread([alone, in_batch])
    invariant = verdict.ok and bitwise
    shown = "invariant" if invariant else "variant (control)" if control else "VARIANT"
    row["verdict"] = {"outcome": "invariant" if invariant else "variant",
                      "cell": f"{shown} (batch {policy.batch}, logprob spread {spread:.2g})",
                      "explain": verdict.explain()}
    if control:
        return
    assert verdict.ok, verdict.explain()
    assert bitwise, f"same tokens alone and in a batch, but logprobs differ by up to {spread:.3g}"


# --- helpers -----------------------------------------------------------------------------------------------------
def _collect_once(config, llm, store: OutputStore, client: probes.ProbeClient, policy: Policy) -> LayoutOutputs:
    cache = config.stash.setdefault(_COLLECTED, {})
    if llm.id not in cache:
        cache[llm.id] = _collect(llm, client, policy, store.run)
        store.save(cache[llm.id])
    return cache[llm.id]


def _collect(llm, client: probes.ProbeClient, policy: Policy, run: str) -> LayoutOutputs:
    collected = LayoutOutputs(case_id=llm.id, engine=llm.engine, engine_version=llm.engine_version,
                              model=_model_id(llm), layout=llm.layout,
                              dtype=case_dtype(llm.case) if llm.case else "auto", run=run,
                              compare=dict(llm.case.compare) if llm.case else {})
    vocab = (llm.case.model.config or {}).get("vocab_size") if llm.case else None
    answers = collected.generations
    try:
        answers["completions-text"] = [client.complete(n, p) for n, p in probes.TEXT_PROMPTS.items()]
        answers["completions-token-ids"] = [client.complete(n, ids)
                                            for n, ids in probes.token_id_prompts(vocab).items()]
        answers["completions-stream"] = [client.complete_streaming(n, p) for n, p in probes.TEXT_PROMPTS.items()]
        answers["chat"] = [client.chat(n, messages) for n, messages in probes.CHAT_PROMPTS.items()]
        answers["sampled-seeded"] = [client.seeded_sample(n, p) for n, p in probes.TEXT_PROMPTS.items()]
        answers["text-as-token-ids"] = [client.complete(g.prompt, list(g.prompt_token_ids))
                                        for g in answers["completions-text"] if g.prompt_token_ids]
        collected.first_tokens = {n: client.first_token_counts(probes.TEXT_PROMPTS[n], policy.samples)
                                  for n in DISTRIBUTION_PROMPTS}
    except probes.ProbeError as error:
        death = llm.server.death() if llm.server is not None else None
        collected.failure = f"{error}\n{death}" if death else str(error)
        failure = known_failures.recognise(llm.case, llm.engine_version, collected.failure) if llm.case else None
        if failure is not None:
            collected.known_failure = f"{failure.describe()}; diagnosis: {_diagnosis(collected.failure)}"
    return collected


def _reference_outputs(request, llm, store: OutputStore, policy: Policy, row: dict) -> LayoutOutputs:
    """The reference layout's stored answers; skips (with the reason) when this is the reference or the reference
    could not run, fails when its answers are missing for another reason."""
    if llm.case is None:
        pytest.skip("attached to one external server: there is no other layout to compare with")
    session = configured_session(request.config)
    choice = equivalence.choose_reference(llm.case, session.cases, policy, session.unfit)
    if choice.case is None:
        pytest.fail(choice.why, pytrace=False)
    reference = choice.case
    row["reference"] = str(reference.layout)
    if reference.id == llm.case.id:
        row["role"] = "reference"
        pytest.skip(f"{llm.layout} is the reference layout ({choice.why})")
    if reference.id in session.unfit:
        pytest.skip(f"the reference {reference.id} cannot run here: {session.unfit[reference.id]}")
    start_error = session.pool.start_error(reference.id) if session.pool else None
    if start_error is not None:
        pytest.skip(f"the reference {reference.id} failed to start: {str(start_error).splitlines()[0]}")
    stored = request.config.stash.get(_COLLECTED, {}).get(reference.id) or store.load(reference.id)
    if stored is None:
        pytest.fail(f"no answers of the reference {reference.id} in {store.path(reference.id)}: it must run before "
                    f"{llm.id} in the same session. Cases run in matrix order, so keep the reference in the matrix "
                    f"before the others, do not deselect it (-k), and give one pytest-xdist worker all layouts of a "
                    f"model (or run without xdist)", pytrace=False)
    if stored.failure is not None:
        pytest.skip(f"the reference {reference.id} could not answer the probe set: "
                    f"{stored.failure.splitlines()[0]}")
    return stored


def _record(row: dict, verdict: Verdict) -> None:
    n = len(verdict.prompts)
    cells = {"identical": f"identical {n}/{n}",
             "close": f"close {verdict.count('identical') + verdict.count('close')}/{n} "
                      f"({verdict.count('identical')} identical)",
             "diverged": f"DIVERGED on {verdict.count('diverged')}/{n}"}
    data = verdict.to_dict()
    data["details"] = [d for d in data["details"] if d["outcome"] != "identical"]
    row["verdict"] = {**data, "cell": cells[verdict.outcome], "explain": verdict.explain()}


def _switch_on(llm) -> bool:
    switch = equivalence.determinism_switch(llm.engine)
    return bool(switch and llm.case and switch.is_on(llm.case))


def _logprob_spread(answers) -> float:
    """Largest difference between answers of the logprob at the same position (where all chose the same token)."""
    spread = 0.0
    for steps in zip(*(a.steps for a in answers), strict=False):
        if len({s.key for s in steps}) == 1 and all(s.logprob is not None for s in steps):
            values = [s.logprob for s in steps]
            spread = max(spread, max(values) - min(values))
    return spread


def _filler(index: int) -> str:
    """Batch companions of different lengths (short enough for small context windows), so that the batch's shapes
    differ from the prompt's alone."""
    short = [text for text in probes.TEXT_PROMPTS.values() if len(text) < 100]
    return " ".join([short[index % len(short)]] * (1 + index % 3)) + f" ({index})"


def _number(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.3g}"


def _model_id(llm) -> str:
    return llm.case.model.id if llm.case else llm.model


def _run_id(config) -> str:
    """One id per test run, the same in every xdist worker (xdist's testrunuid), so that answers left in a reused
    report dir by an earlier run are never taken for this run's."""
    worker_run = getattr(config, "workerinput", {}).get("testrunuid")
    if worker_run:
        return worker_run
    if _RUN_ID not in config.stash:
        config.stash[_RUN_ID] = uuid.uuid4().hex
    return config.stash[_RUN_ID]


def _diagnosis(text: str) -> str:
    for line in text.splitlines():
        if line.strip().startswith("diagnosis:"):
            return line.split(":", 1)[1].strip()
    return "see the server log"
