"""Run-to-run regression verdicts: `llmconform compare BASELINE CANDIDATE`.

Two report dirs of the same matrix, e.g. before and after an engine upgrade (pip version or container image). What got
worse in the candidate is a regression, and the command exits non-zero:
- tests: a test that passed (or xpassed) and now fails, or now hits a declared deviation or known engine failure;
  a test that was an expected failure and now fails for another reason; a new test that fails;
- outputs: a case whose greedy answers to the probe set differ beyond the comparator its dtype calls for (exact for
  float32, logprob-close otherwise, as in the equivalence suite), or whose first-token distributions differ (chi-square
  at the suite's false-alarm rate), or that answered before and no longer can;
- perf: a serving metric of a case that moved past its tolerance (`output_tok_s:-10%`-style expressions, checked by
  llmconform.floors against the baseline's perf-summary.json; different hardware is not compared).
Improvements, unchanged results and what could not be compared are listed too, so the verdict shows its coverage.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from . import equivalence, floors, report, userfiles
from .compare import compare, compare_distributions
from .equivalence import LayoutOutputs
from .errors import UserError

DEFAULT_PERF_TOLERANCES = ("output_tok_s:-10%", "median_tpot_ms:+10%", "median_ttft_ms:+20%")
PERF_SUMMARY = "perf-summary.json"
NOT_COMPARED_SHOWN = 10  # per area in the markdown (a case missing from one run is many tests)
WORSE = {  # (baseline outcome, candidate outcome) -> why it is a regression
    ("passed", "failed"): "passed, now fails",
    ("xpassed", "failed"): "passed, now fails",
    ("passed", "xfailed"): "passed, now a declared deviation or known engine failure",
    ("xpassed", "xfailed"): "passed, now a declared deviation or known engine failure",
    ("xfailed", "failed"): "was a declared deviation, now fails otherwise",
    ("skipped", "failed"): "did not run before, now fails",
    (None, "failed"): "new test, fails",
}
BETTER = {("failed", "passed"), ("failed", "xpassed"), ("xfailed", "passed"), ("xfailed", "xpassed"),
          ("failed", "xfailed")}


@dataclass(frozen=True)
class Finding:
    area: str  # "tests", "outputs" or "perf"
    status: str  # "regressed", "improved", "unchanged", "still failing" or "not compared"
    subject: str  # a test node id, a case id (and probe), or case/workload/point/metric
    detail: str


@dataclass
class Comparison:
    baseline: Path
    candidate: Path
    versions: dict[str, list[str]]  # "baseline"/"candidate" -> engine versions seen
    findings: list[Finding]

    @property
    def regressions(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "regressed"]

    def to_dict(self) -> dict:
        return {"baseline": str(self.baseline), "candidate": str(self.candidate), "versions": self.versions,
                "regressions": len(self.regressions), "findings": [asdict(f) for f in self.findings]}

    def to_markdown(self) -> str:
        lines = ["# Regression check", "",
                 f"baseline `{self.baseline}` ({', '.join(self.versions['baseline']) or 'engine version unknown'}) "
                 f"vs candidate `{self.candidate}` ({', '.join(self.versions['candidate']) or 'engine version unknown'})",
                 "", f"**{len(self.regressions)} regression(s)**", ""]
        for area in ("tests", "outputs", "perf"):
            found = [f for f in self.findings if f.area == area]
            counts = {s: sum(1 for f in found if f.status == s) for s in dict.fromkeys(f.status for f in found)}
            lines.append(f"## {area}: " + (", ".join(f"{n} {s}" for s, n in counts.items()) or "nothing to compare"))
            lines.append("")
            shown = [f for f in found if f.status not in ("unchanged", "not compared")]
            shown += [f for f in found if f.status == "not compared"][:NOT_COMPARED_SHOWN]
            for finding in shown:
                lines.append(f"- **{finding.status}** `{finding.subject}`: {finding.detail}")
            hidden = counts.get("not compared", 0) - NOT_COMPARED_SHOWN
            if hidden > 0:
                lines.append(f"- ... and {hidden} more not compared (regression.json lists every finding)")
            lines.append("")
        return "\n".join(lines)


def compare_runs(baseline: Path, candidate: Path, perf_tolerances: tuple[str, ...] = DEFAULT_PERF_TOLERANCES,
                 comparator: str | None = None) -> Comparison:
    """The regression verdict of `candidate` against `baseline` (two report dirs)."""
    tolerances = _parse_tolerances(perf_tolerances)
    runs = {name: _read_results(path) for name, path in (("baseline", baseline), ("candidate", candidate))}
    findings = (_compare_tests(runs["baseline"], runs["candidate"])
                + _compare_outputs(baseline, candidate, comparator)
                + _compare_perf(baseline, candidate, tolerances))
    if all(f.status == "not compared" for f in findings):
        raise UserError(f"{baseline} and {candidate} have no test, case output or perf point in common: "
                        f"were they runs of the same matrix?")
    versions = {name: sorted({f"{llm['engine']} {llm['engine_version']}" for llm in _llms(records)
                              if llm.get("engine_version")}) for name, records in runs.items()}
    return Comparison(baseline, candidate, versions, findings)


# --- tests -------------------------------------------------------------------------------------------------------
def _read_results(report_dir: Path) -> list[dict]:
    report.check_report_dir(report_dir)
    return report.load_results(report_dir)


def _llms(records: list[dict]) -> list[dict]:
    return [r["properties"]["llm"] for r in records if "llm" in r.get("properties", {})]


def outcomes(records: list[dict]) -> dict[str, tuple[str, str]]:
    """node id -> (outcome, reason): failed if any phase failed; else the call's passed/xpassed/xfailed/skipped."""
    result: dict[str, tuple[str, str]] = {}
    for record in records:
        node, phase, outcome = record["nodeid"], record["when"], record["outcome"]
        if result.get(node, ("",))[0] == "failed":
            continue
        if outcome == "failed":
            result[node] = ("failed", _error_line(record.get("error") or ""))
        elif record.get("xfail_reason"):
            result[node] = ("xpassed" if outcome == "passed" else "xfailed", record["xfail_reason"])
        elif phase == "call" or node not in result:
            result[node] = (outcome, record.get("skip_reason") or "")
    return result


def _error_line(error: str) -> str:
    """The assertion line of a failure's traceback (pytest marks it `E   `), else its last line."""
    lines = [line.strip() for line in error.strip().splitlines()]
    marked = [line[1:].strip() for line in lines if line.startswith("E ")]
    return (marked or lines or [""])[0 if marked else -1]


def _compare_tests(baseline: list[dict], candidate: list[dict]) -> list[Finding]:
    before, after = outcomes(baseline), outcomes(candidate)
    findings = []
    for node in sorted(before.keys() | after.keys()):
        was, now = before.get(node, (None, ""))[0], after.get(node, (None, ""))[0]
        reason = after.get(node, (None, ""))[1] or ""
        if now is None:
            findings.append(Finding("tests", "not compared", node, "not run in the candidate"))
        elif (was, now) in WORSE:
            findings.append(Finding("tests", "regressed", node, WORSE[(was, now)] + (f": {reason}" if reason else "")))
        elif (was, now) in BETTER:
            findings.append(Finding("tests", "improved", node, f"{was} -> {now}" + (f": {reason}" if reason else "")))
        elif was == now == "failed":
            findings.append(Finding("tests", "still failing", node, reason))
        elif was is None:
            findings.append(Finding("tests", "not compared", node, f"new in the candidate ({now})"))
        elif "skipped" in (was, now):
            findings.append(Finding("tests", "not compared", node, f"{was} -> {now}"))
        else:
            findings.append(Finding("tests", "unchanged", node, now))
    return findings


# --- outputs -----------------------------------------------------------------------------------------------------
def _load_outputs(report_dir: Path) -> dict[str, LayoutOutputs]:
    directory = report_dir / equivalence.OUTPUTS_DIR
    return {p.stem: LayoutOutputs.from_dict(userfiles.read_json(p, "an equivalence outputs file"))
            for p in sorted(directory.glob("*.json"))}


def _compare_outputs(baseline: Path, candidate: Path, comparator: str | None) -> list[Finding]:
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


def _compare_answers(case_id: str, old: LayoutOutputs, new: LayoutOutputs, comparator: str | None) -> list[Finding]:
    dtype = old.dtype if old.dtype == new.dtype else f"{old.dtype} vs {new.dtype}"
    policy = equivalence.CompareSection().policy(new.model, dtype)
    if comparator:
        policy = replace(policy, comparator=comparator, why="--comparator")
    findings = []
    for probe in equivalence.GREEDY_PROBES:
        if probe not in old.generations or probe not in new.generations:
            continue
        verdict = compare(policy.make_comparator(), old.generations[probe], new.generations[probe], "baseline",
                          "candidate")
        findings.append(Finding("outputs", "unchanged" if verdict.ok else "regressed", f"{case_id} {probe}",
                                verdict.explain() if not verdict.ok else f"{verdict.summary()} ({policy.why})"))
    if old.first_tokens and new.first_tokens:
        verdict = compare_distributions(old.first_tokens, new.first_tokens, policy.false_alarm_rate, "baseline",
                                        "candidate")
        findings.append(Finding("outputs", "unchanged" if verdict.ok else "regressed",
                                f"{case_id} first-token-distribution",
                                verdict.summary() if verdict.ok else verdict.explain()))
    return findings


# --- perf --------------------------------------------------------------------------------------------------------
def _parse_tolerances(texts: tuple[str, ...]) -> tuple[floors.Floor, ...]:
    parsed = []
    for text in texts:
        try:
            floor = floors.parse_floor(text)
        except (TypeError, ValueError) as error:
            raise UserError(f"--perf {text!r}: {error}") from None
        if floor.kind != "baseline":
            raise UserError(f"--perf {text!r}: a tolerance is METRIC:-X% or METRIC:+X% (how far the metric may "
                            f"move against the baseline), e.g. output_tok_s:-5%")
        parsed.append(floor)
    return tuple(parsed)


def _compare_perf(baseline: Path, candidate: Path, tolerances: tuple[floors.Floor, ...]) -> list[Finding]:
    paths = [baseline / PERF_SUMMARY, candidate / PERF_SUMMARY]
    if not all(p.is_file() for p in paths):
        missing = " and ".join(str(p.parent) for p in paths if not p.is_file())
        return [Finding("perf", "not compared", "perf-summary.json", f"none in {missing}")] if any(
            p.is_file() for p in paths) else []
    saved = floors.load_baseline(paths[0])
    runs = floors.load_baseline(paths[1]).runs
    findings = []
    for case_id in dict.fromkeys(r["case"] for r in runs):
        points = [r for r in runs if r["case"] == case_id]
        hardware = floors.Hardware(device="cpu" if points[0].get("hardware") == "cpu" else "cuda",
                                   gpu_name=points[0].get("gpu_name"))
        context = floors.CaseContext(case_id=case_id, hardware=hardware, baseline=saved)
        for verdict in floors.evaluate(tolerances, points, context):
            status = {"pass": "unchanged", "fail": "regressed", "skip": "not compared"}[verdict.status]
            subject = " ".join(x for x in (case_id, verdict.workload, verdict.point, verdict.floor) if x)
            findings.append(Finding("perf", status, subject, verdict.detail))
    return findings
