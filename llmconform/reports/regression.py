"""Run-to-run regression verdicts: `llmconform compare BASELINE CANDIDATE`.

Two report dirs of the same matrix, e.g. before and after an engine upgrade (pip version or container image). The gate
judges behaviour, not labels; what got worse in the candidate is a regression, and the command exits 1:
- tests: each test's behaviour in each run is one of: conforms (passed, or a declared deviation that no longer
  happens), a declared deviation (every problem of a conformance check is explained by a deviation's matcher, whatever
  version range the deviation declares: one outside its range is reported as such, not as a change), a known engine
  failure, fails (problems nothing explains), skipped. A test is improved or regressed only when its behaviour changed:
  conforms -> anything else is a regression, a failure -> a deviation or conforming is an improvement;
- outputs: a case's greedy answers to the probe set, per probe: bit-identical, identical tokens with a logprob delta
  (how much), or only close; judged by the exact comparator with a logprob bound (compare.max_logprob_delta) unless
  the matrix's `compare:` section or --comparator names another; first-token distributions by a chi-square test;
- perf: noise-aware verdicts per point and metric (llmconform.perf.compare_runs): regressed, improved, unchanged or
  inconclusive, with the bootstrap interval of the change;
- identity: what each run ran on (run.json and the servers' records) and where the runs differ in anything but the
  engine being gated (GPUs, driver, llmconform, the matrix's engine args ...), and servers that reported another
  engine version than the matrix named.
Findings that are neither regressions nor improvements are listed too, so the verdict shows its coverage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from llmconform.api import PROPERTY as CONFORMANCE
from llmconform.config import userfiles
from llmconform.config.compare import parse_compare_section
from llmconform.engines import deviations as known
from llmconform.equivalence import policy as equivalence
from llmconform.equivalence.comparators import Verdict, compare, compare_distributions, make_comparator
from llmconform.equivalence.policy import LayoutOutputs
from llmconform.errors import UserError
from llmconform.perf import compare_runs as perf_compare
from llmconform.reports import run_identity
from llmconform.reports.report_dir import ReportDir

DEFAULT_PERF_TOLERANCES = perf_compare.DEFAULT_TOLERANCES
NOT_COMPARED_SHOWN = 10  # per area in the markdown (a case missing from one run is many tests)
OUTSIDE_RANGE = "declared deviation (outside its declared range)"
STATUSES = ("regressed", "improved", "inconclusive", "still failing", OUTSIDE_RANGE, "unchanged", "not compared",
            "skipped in both")
LISTED = ("regressed", "improved", "inconclusive", "still failing", OUTSIDE_RANGE)  # always listed in the markdown


@dataclass(frozen=True)
class Finding:
    area: str  # "tests", "outputs" or "perf"
    status: str  # one of STATUSES
    subject: str  # a test node id, a case id (and probe), or case/workload/point/metric
    detail: str
    evidence: dict = field(default_factory=dict)  # numbers behind the detail (json, html)


@dataclass
class Comparison:
    baseline: ReportDir
    candidate: ReportDir
    versions: dict[str, list[str]]  # "baseline"/"candidate" -> engine versions seen
    findings: list[Finding]
    identity: dict = field(default_factory=dict)  # "baseline"/"candidate" lines, "differences", "warnings"

    @property
    def regressions(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "regressed"]

    def counts(self, area: str) -> dict[str, int]:
        found = [f.status for f in self.findings if f.area == area]
        return {status: found.count(status) for status in STATUSES if status in found}

    def to_dict(self) -> dict:
        return {"baseline": str(self.baseline), "candidate": str(self.candidate), "versions": self.versions,
                "identity": self.identity, "regressions": len(self.regressions),
                "counts": {area: self.counts(area) for area in ("tests", "outputs", "perf")},
                "findings": [asdict(f) for f in self.findings]}

    def _versions(self, side: str) -> str:
        return ", ".join(self.versions[side]) or "engine version unknown"

    def to_markdown(self) -> str:
        lines = ["# Regression check", "",
                 f"baseline `{self.baseline}` ({self._versions('baseline')}) "
                 f"vs candidate `{self.candidate}` ({self._versions('candidate')})",
                 "", f"**{len(self.regressions)} regression(s)**", ""]
        if self.identity:
            lines += [f"- baseline ran on: {self.identity['baseline']}",
                      f"- candidate ran on: {self.identity['candidate']}"]
            lines += [f"- **the runs differ in more than the engine**: {d}" for d in self.identity["differences"]]
            lines += [f"- **warning**: {w}" for w in self.identity["warnings"]]
            lines.append("")
        for area in ("tests", "outputs", "perf"):
            found = [f for f in self.findings if f.area == area]
            counts = self.counts(area)
            lines.append(f"## {area}: " + (", ".join(f"{n} {s}" for s, n in counts.items()) or "nothing to compare"))
            lines.append("")
            # Every output probe is listed (its evidence is the point); tests and perf points list what moved.
            shown = [f for f in found if f.status in LISTED or (area == "outputs" and f.status == "unchanged")]
            shown += [f for f in found if f.status == "not compared"][:NOT_COMPARED_SHOWN]
            for finding in shown:
                detail = finding.detail.replace("\n", "\n  ")
                lines.append(f"- **{finding.status}** `{finding.subject}`: {detail}")
            hidden = counts.get("not compared", 0) - NOT_COMPARED_SHOWN
            if hidden > 0:
                lines.append(f"- ... and {hidden} more not compared (regression.json lists every finding)")
            lines.append("")
        return "\n".join(lines)


def compare_runs(baseline_dir: Path, candidate_dir: Path,
                 perf_tolerances: tuple[str, ...] = DEFAULT_PERF_TOLERANCES,
                 comparator: str | None = None) -> Comparison:
    """The regression verdict of `candidate_dir` against `baseline_dir` (two report dirs)."""
    tolerances = perf_compare.parse_tolerances(perf_tolerances)
    baseline, candidate = ReportDir.existing(baseline_dir), ReportDir.existing(candidate_dir)
    runs = {"baseline": baseline.load_results(), "candidate": candidate.load_results()}
    identities = {"baseline": run_identity.load(baseline), "candidate": run_identity.load(candidate)}
    declared = {name: _declared(identity) for name, identity in identities.items()}
    findings = (_compare_tests(runs["baseline"], runs["candidate"], declared)
                + _compare_outputs(baseline, candidate, comparator)
                + [Finding("perf", v.status, v.subject, v.detail,
                           {k: getattr(v, k) for k in ("baseline", "candidate", "change", "low", "high")})
                   for v in perf_compare.compare(baseline, candidate, tolerances)])
    if all(f.status in ("not compared", "skipped in both") for f in findings):
        raise UserError(f"{baseline} and {candidate} have no test, case output or perf point in common that ran: "
                        f"were they runs of the same matrix?")
    versions = {name: sorted({f"{llm['engine']} {llm['engine_version']}" for llm in _llms(records)
                              if llm.get("engine_version")}) for name, records in runs.items()}
    identity = {"baseline": run_identity.runtime_line(identities["baseline"]),
                "candidate": run_identity.runtime_line(identities["candidate"]),
                "differences": run_identity.differences(identities["baseline"], identities["candidate"]),
                "warnings": [w for name, found in identities.items()
                             for w in run_identity.version_warnings(found, name)]}
    return Comparison(baseline, candidate, versions, findings, identity)


def _declared(identity: dict) -> list[known.Deviation]:
    """The deviations a run declared (a run made before run.json: the ones in force here)."""
    recorded = run_identity.declared_deviations(identity)
    if recorded is None:
        try:
            recorded = [d for path in known.files_in_force() for d in known.load(path)]
        except known.DeviationFileError as error:
            raise UserError(str(error)) from None
    return recorded


# --- tests -------------------------------------------------------------------------------------------------------
def _llms(records: list[dict]) -> list[dict]:
    return [r["properties"]["llm"] for r in records if "llm" in r.get("properties", {})]


@dataclass(frozen=True)
class TestResult:
    """One test's outcome in one run, with what the behaviour classification needs."""

    outcome: str  # passed, failed, xfailed, xpassed, skipped
    reason: str  # the failure's line, the xfail or skip reason
    error: str = ""
    properties: dict = field(default_factory=dict)


def outcomes(records: list[dict]) -> dict[str, TestResult]:
    """node id -> outcome: failed if any phase failed; else the call's passed/xpassed/xfailed/skipped."""
    result: dict[str, TestResult] = {}
    for record in records:
        node, phase, outcome = record["nodeid"], record["when"], record["outcome"]
        properties = {**(result[node].properties if node in result else {}), **(record.get("properties") or {})}
        if node in result and result[node].outcome == "failed":
            continue
        if outcome == "failed":
            error = record.get("error") or ""
            result[node] = TestResult("failed", _error_line(error), error, properties)
        elif record.get("xfail_reason"):
            result[node] = TestResult("xpassed" if outcome == "passed" else "xfailed", record["xfail_reason"], "",
                                      properties)
        elif phase == "call" or node not in result:
            result[node] = TestResult(outcome, record.get("skip_reason") or "", "", properties)
    return result


def _error_line(error: str) -> str:
    """The assertion line of a failure's traceback (pytest marks it `E   `), else its last line."""
    lines = [line.strip() for line in error.strip().splitlines()]
    marked = [line[1:].strip() for line in lines if line.startswith("E ")]
    return (marked or lines or [""])[0 if marked else -1]


@dataclass(frozen=True)
class Behaviour:
    kind: str  # "conforms", "deviation", "known failure", "fails", "skipped"
    what: str  # the deviations' reasons, the failure's line, the skip reason
    outside_range: tuple[str, ...] = ()  # declared ranges of explaining deviations that exclude the run's version
    version: str = ""


def behaviour(test: TestResult, declared: list[known.Deviation], own: list[known.Deviation]) -> Behaviour:
    """`declared`: every deviation either run declared (they explain problems); `own`: the ones this run declared
    (their version ranges say whether the run was inside them)."""
    llm = test.properties.get("llm") or {}
    version = f"{llm.get('engine', '')} {llm.get('engine_version') or 'version unknown'}".strip()
    if test.outcome in ("passed", "xpassed") or (test.outcome == "failed" and "[XPASS(strict)]" in test.error):
        return Behaviour("conforms", "", version=version)  # a strict XPASS: the declared deviation no longer happens
    if test.outcome == "skipped":
        return Behaviour("skipped", test.reason, version=version)
    explaining = _explaining(test, declared)
    if explaining:
        ranged = [d for d in explaining if d in own] or explaining
        inside = any(d.applies_to(d.engine, llm.get("engine_version"), d.check) for d in ranged)
        outside = () if inside else tuple(sorted({d.versions for d in ranged}))
        return Behaviour("deviation", " | ".join(dict.fromkeys(d.reason for d in explaining)), outside, version)
    if test.outcome == "xfailed":
        return Behaviour("known failure", test.reason.split("; diagnosis:")[0], version=version)
    return Behaviour("fails", test.reason, version=version)


def _explaining(test: TestResult, declared: list[known.Deviation]) -> list[known.Deviation]:
    """The declared deviations (any version) whose matchers explain every problem of a conformance check."""
    check = test.properties.get(CONFORMANCE) or {}
    engine = (test.properties.get("llm") or {}).get("engine")
    if not check.get("check") or not engine:
        return []
    problems = check.get("problems")
    if problems is None and test.outcome == "failed":  # a run from before problems were recorded: the failure text
        problems = [line.strip() for line in test.error.strip().splitlines()[1:] if line.strip()]
    candidates = [d for d in declared if d.engine == engine and known.matches_check(d.check, check["check"])]
    if not problems:
        # An xfailed check of an older run: the deviation its reason names.
        return [d for d in candidates if test.outcome == "xfailed" and d.reason in test.reason]
    explaining = []
    for problem in problems:
        found = [d for d in candidates if d.explains(problem)]
        if not found:
            return []
        explaining += [d for d in found if d not in explaining]
    return explaining


def _compare_tests(baseline: list[dict], candidate: list[dict], declared: dict[str, list[known.Deviation]]) \
        -> list[Finding]:
    before, after = outcomes(baseline), outcomes(candidate)
    union = declared["baseline"] + [d for d in declared["candidate"] if d not in declared["baseline"]]
    findings = []
    for node in sorted(before.keys() | after.keys()):
        if node not in after:
            findings.append(Finding("tests", "not compared", node, "not run in the candidate"))
            continue
        now = behaviour(after[node], union, declared["candidate"])
        was = behaviour(before[node], union, declared["baseline"]) if node in before else None
        status, detail = _judge_test(was, now)
        findings.append(Finding("tests", status, node, detail, {"baseline": asdict(was) if was else None,
                                                                "candidate": asdict(now)}))
    return findings


WORSE = {"conforms": 0, "deviation": 1, "known failure": 1, "fails": 2}


def _judge_test(was: Behaviour | None, now: Behaviour) -> tuple[str, str]:
    if was is None:
        return ("regressed", f"new test, fails: {now.what}") if now.kind == "fails" else \
            ("not compared", f"new in the candidate ({_describe(now)})")
    if was.kind == now.kind == "skipped":
        return "skipped in both", now.what
    if "skipped" in (was.kind, now.kind):
        return "not compared", f"{_describe(was)} -> {_describe(now)}"
    if was.kind == now.kind and (was.what == now.what or was.kind == "fails"):
        if was.kind == "fails":
            return "still failing", now.what
        outside = [(name, b) for name, b in (("baseline", was), ("candidate", now)) if b.outside_range]
        if outside:
            seen = "; ".join(f"seen in the {name} ({b.version}), declared for {', '.join(b.outside_range)}"
                             for name, b in outside)
            return OUTSIDE_RANGE, f"same behaviour in both runs: {now.what} ({seen})"
        return "unchanged", _describe(now)
    change = f"{_describe(was)}, now {_describe(now)}"
    if WORSE[now.kind] != WORSE[was.kind]:
        return ("regressed" if WORSE[now.kind] > WORSE[was.kind] else "improved"), change
    # Another deviation or known failure: better only when some of the declared ones went away and none came.
    fewer = was.kind == now.kind == "deviation" and set(now.what.split(" | ")) < set(was.what.split(" | "))
    return ("improved" if fewer else "regressed"), change


def _describe(b: Behaviour) -> str:
    text = {"conforms": "conforms", "deviation": "a declared deviation", "known failure": "a known engine failure",
            "fails": "fails", "skipped": "skipped"}[b.kind]
    return f"{text}: {b.what}" if b.what else text


# --- outputs -----------------------------------------------------------------------------------------------------
def _load_outputs(report: ReportDir) -> dict[str, LayoutOutputs]:
    loaded = {}
    for case_id, path in report.equivalence_output_files().items():
        try:
            loaded[case_id] = LayoutOutputs.from_dict(userfiles.read_json(path, "an equivalence outputs file"))
        except (KeyError, TypeError, AttributeError) as error:
            raise UserError(f"{path}: not the saved answers of a case ({error}); was the run interrupted?") from None
    return loaded


def _compare_outputs(baseline: ReportDir, candidate: ReportDir, comparator: str | None) -> list[Finding]:
    before, after = _load_outputs(baseline), _load_outputs(candidate)
    findings = []
    for case_id in sorted(before.keys() | after.keys()):
        old, new = before.get(case_id), after.get(case_id)
        if old is None or new is None:
            findings.append(Finding("outputs", "not compared", case_id,
                                    f"answers only in the {'candidate' if old is None else 'baseline'}"))
            continue
        if not new.collected:
            status = "still failing" if not old.collected else "regressed"
            findings.append(Finding("outputs", status, case_id, f"could not answer the probe set: {new.failure}"))
            continue
        if not old.collected:
            findings.append(Finding("outputs", "improved", case_id, "answers the probe set now"))
            continue
        findings += _compare_answers(case_id, old, new, comparator)
    return findings


def _policy(old: LayoutOutputs, new: LayoutOutputs, comparator: str | None):
    """(comparator, logprob bound or None, why, the policy): --comparator; else the matrix's `compare:` section where
    it names a comparator; else exact tokens with |delta logprob| <= compare.max_logprob_delta (both runs serve one
    layout, so the layout comparator's near-tie tolerance would let a real token flip through)."""
    dtype = old.dtype if old.dtype == new.dtype else f"{old.dtype} vs {new.dtype}"
    section = parse_compare_section(new.compare or old.compare or None, equivalence.raise_user_error)
    policy = section.policy(new.model, dtype)
    if comparator:
        policy = replace(policy, comparator=comparator, why="--comparator")
        return equivalence.comparator_for(policy), None, policy.why, policy
    if not policy.why.startswith("auto"):
        return equivalence.comparator_for(policy), None, f"{policy.comparator} ({policy.why})", policy
    bound = policy.max_logprob_delta
    why = f"exact tokens, |delta logprob| <= {bound:g} (compare.max_logprob_delta)"
    return make_comparator("exact"), bound, why, policy


def _compare_answers(case_id: str, old: LayoutOutputs, new: LayoutOutputs, comparator: str | None) -> list[Finding]:
    judge, bound, why, policy = _policy(old, new, comparator)
    findings = []
    for probe in equivalence.GREEDY_PROBES:
        if probe not in old.generations or probe not in new.generations:
            continue
        verdict = compare(judge, old.generations[probe], new.generations[probe], "baseline", "candidate")
        status, detail, evidence = _evidence(verdict, bound)
        findings.append(Finding("outputs", status, f"{case_id} {probe}", f"{detail} [{why}]", evidence))
    if old.first_tokens and new.first_tokens:
        distribution = compare_distributions(old.first_tokens, new.first_tokens, policy.false_alarm_rate,
                                             "baseline", "candidate")
        findings.append(Finding("outputs", "unchanged" if distribution.ok else "regressed",
                                f"{case_id} first-token-distribution",
                                distribution.summary() if distribution.ok else distribution.explain()))
    return findings


def _evidence(verdict: Verdict, bound: float | None) -> tuple[str, str, dict]:
    """(status, what the answers show, numbers): bit-identical, identical tokens with a logprob delta, only close, or
    diverged."""
    n = len(verdict.prompts)
    delta = verdict.max_logprob_delta
    worst = max((p for p in verdict.prompts if p.max_logprob_delta is not None),
                key=lambda p: p.max_logprob_delta or 0.0, default=None)
    where = f" (prompt {worst.prompt!r}, token {worst.max_delta_position})" if worst and delta else ""
    evidence = {"prompts": n, "identical": verdict.count("identical"), "close": verdict.count("close"),
                "max_logprob_delta": delta, "bound": bound}
    if not verdict.ok:
        return "regressed", verdict.explain(), {**evidence, "evidence": "diverged"}
    if verdict.outcome == "close":
        return "unchanged", ("only close: " + verdict.explain()), {**evidence, "evidence": "close"}
    if bound is not None and delta is not None and delta > bound:
        return "regressed", (f"identical tokens on {n}/{n} prompts, but |delta logprob| up to {delta:.4g}{where} > "
                             f"{bound:g}"), {**evidence, "evidence": "logprobs moved"}
    if delta is None:
        return "unchanged", f"identical tokens and text on {n}/{n} prompts (no logprobs to compare)", \
            {**evidence, "evidence": "identical tokens"}
    if delta == 0:
        return "unchanged", f"bit-identical on {n}/{n} prompts (tokens, text and every logprob)", \
            {**evidence, "evidence": "bit-identical"}
    return "unchanged", f"identical tokens on {n}/{n} prompts, max |delta logprob| {delta:.3g}{where}", \
        {**evidence, "evidence": "identical tokens, logprob delta"}
