"""Noise-aware perf verdicts for `llmconform compare`: a difference is weighed against the runs' own variation.

For each measured point that both runs share (same case, workload and point, on the same hardware), each gated metric
gets its relative change (candidate / baseline - 1) and a bootstrap confidence interval of that change, from the raw
per-request records each run keeps in its report dir (`ReportDir.perf_records`; points measured more than once are
pooled):
- latencies (`{mean,median,p90,p99}_{ttft,tpot,itl,e2el}_ms`): requests are resampled with replacement (ITL: the
  pooled inter-chunk gaps), as pytest-benchmark and MLPerf judge repeated measurements by their spread;
- `output_tok_s`: the point's duration is cut into equal time windows and the windows' output tokens are resampled
  (a block bootstrap: throughput is a property of the whole run, not of one request).
A tolerance (`METRIC:-X%` / `METRIC:+X%`) is the smallest change that matters. The verdict:
- regressed: the interval lies wholly on the worse side of no change and the change is beyond the tolerance;
- improved: the same on the better side;
- unchanged: the whole interval lies within the tolerance;
- inconclusive: the runs vary too much to tell (the interval crosses no change and reaches past the tolerance); more
  requests per point, or repeated points, narrow it.
Without per-request records the change is judged against the tolerance alone, and the verdict says so.
The interval covers the variation inside each run, not a change of the machine's load between runs (seen on a shared
CPU: TTFT +150% between two runs of one engine); gate on dedicated hardware, or repeat the points.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from llmconform.config import userfiles
from llmconform.config.floor_rules import higher_is_better, parse_floor
from llmconform.errors import UserError
from llmconform.perf.records import PointRun, RequestRecord, read_records

if TYPE_CHECKING:  # perf sits below reports: it is handed report dirs, never imports their module
    from llmconform.reports.report_dir import ReportDir

DEFAULT_TOLERANCES = ("output_tok_s:-5%", "median_tpot_ms:+5%", "median_ttft_ms:+10%")
CONFIDENCE = 0.95
RESAMPLES = 2000
WINDOWS = 20  # time windows of a point's duration for the throughput bootstrap
_LATENCY = re.compile(r"(mean|median|p90|p99)_(ttft|tpot|itl|e2el)_ms")
GATED = ("output_tok_s", "{mean,median,p90,p99}_{ttft,tpot,itl,e2el}_ms")


@dataclass(frozen=True)
class Tolerance:
    metric: str
    fraction: float  # the smallest relative change that matters
    text: str

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric)


@dataclass(frozen=True)
class PointVerdict:
    status: str  # "regressed", "improved", "unchanged", "inconclusive" or "not compared"
    subject: str  # case workload point metric
    detail: str
    baseline: float | None = None
    candidate: float | None = None
    change: float | None = None  # relative, candidate / baseline - 1
    low: float | None = None  # confidence interval of the change
    high: float | None = None


def parse_tolerances(texts: tuple[str, ...]) -> tuple[Tolerance, ...]:
    parsed = []
    for text in texts:
        try:
            floor = parse_floor(text)
        except (TypeError, ValueError) as error:
            raise UserError(f"--perf {text!r}: {error}") from None
        if floor.kind != "baseline":
            raise UserError(f"--perf {text!r}: a tolerance is METRIC:-X% or METRIC:+X% (the smallest change of the "
                            f"metric against the baseline that matters), e.g. output_tok_s:-5%")
        if floor.metric != "output_tok_s" and not _LATENCY.fullmatch(floor.metric):
            raise UserError(f"--perf {text!r}: {floor.metric} cannot be judged from per-request records (gated "
                            f"metrics: {', '.join(GATED)})")
        parsed.append(Tolerance(floor.metric, floor.value, text))
    return tuple(parsed)


# --- statistics ----------------------------------------------------------------------------------------------------
def _statistic(name: str, values: np.ndarray, axis: int = -1) -> np.ndarray:
    if name == "mean":
        return np.mean(values, axis=axis)
    if name == "median":
        return np.median(values, axis=axis)
    return np.percentile(values, float(name[1:]), axis=axis)


def latency_samples(records: list[RequestRecord], quantity: str) -> np.ndarray:
    """Seconds per successful request (ITL: every gap between consecutive chunks), as load_metrics defines them."""
    out: list[float] = []
    for record in records:
        if not record.ok:
            continue
        ttft = record.chunk_s[0] - record.sent_s
        e2el = record.chunk_s[-1] - record.sent_s
        tokens = record.completion_tokens or record.text_tokens or 0
        if quantity == "ttft":
            out.append(ttft)
        elif quantity == "e2el":
            out.append(e2el)
        elif quantity == "tpot" and tokens > 1:
            out.append((e2el - ttft) / (tokens - 1))
        elif quantity == "itl":
            out += list(np.diff(record.chunk_s))
    return np.asarray(out, dtype=float)


def window_tokens(run: PointRun) -> tuple[np.ndarray, float]:
    """Output tokens that arrived in each of WINDOWS equal slices of the point's duration, and the slice length:
    their mean over the slice length is the point's output tokens/s."""
    ok = [r for r in run.records if r.ok]
    if not ok:
        return np.zeros(WINDOWS), 1.0
    start = min(r.sent_s for r in run.records)
    end = max(r.chunk_s[-1] for r in ok)
    width = max(end - start, 1e-9) / WINDOWS
    counts = np.zeros(WINDOWS)
    for record in ok:
        tokens = record.completion_tokens or record.text_tokens or len(record.chunk_s)
        per_chunk = tokens / len(record.chunk_s)  # a chunk may carry several tokens
        slots = np.minimum(((np.asarray(record.chunk_s) - start) / width).astype(int), WINDOWS - 1)
        np.add.at(counts, slots, per_chunk)
    return counts, width


def _distribution(metric: str, runs: list[PointRun], rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """(the metric measured on all data, its bootstrap distribution) over the pooled runs of one point."""
    if metric == "output_tok_s":
        pooled = [window_tokens(run) for run in runs]
        rates = np.concatenate([counts / width for counts, width in pooled])
        picks = rng.integers(0, len(rates), size=(RESAMPLES, len(rates)))
        return float(np.mean(rates)), np.mean(rates[picks], axis=1)
    latency = _LATENCY.fullmatch(metric)
    assert latency is not None, f"{metric}: parse_tolerances admits output_tok_s and latencies only"
    statistic, quantity = latency.groups()
    values = np.concatenate([latency_samples(run.records, quantity) for run in runs]) * 1e3
    if len(values) == 0:
        return math.nan, np.full(RESAMPLES, math.nan)
    picks = rng.integers(0, len(values), size=(RESAMPLES, len(values)))
    return float(_statistic(statistic, values)), _statistic(statistic, values[picks], axis=1)


def judge(tolerance: Tolerance, baseline_runs: list[PointRun], candidate_runs: list[PointRun],
          subject: str, seed: int = 0) -> PointVerdict:
    """The verdict of one metric at one point from both runs' request records."""
    rng = np.random.default_rng(seed)
    before, before_boot = _distribution(tolerance.metric, baseline_runs, rng)
    after, after_boot = _distribution(tolerance.metric, candidate_runs, rng)
    if math.isnan(before) or math.isnan(after):
        return PointVerdict("not compared", subject, f"{tolerance.metric}: no successful requests to measure")
    if not before or not after:
        # e.g. TPOT when every answer arrived in one chunk: there is nothing to time, so no change to judge
        side = "baseline" if not before else "candidate"
        return PointVerdict("not compared", subject, f"{tolerance.metric} is 0 in the {side} ({after:.4g} vs "
                                                     f"{before:.4g}): nothing measurable to compare")
    change = after / before - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        changes = after_boot / before_boot - 1
    changes = changes[np.isfinite(changes)]  # a resample whose baseline statistic is 0 (e.g. TPOT of one-chunk answers)
    if len(changes) < RESAMPLES / 2:
        return PointVerdict("not compared", subject, f"{tolerance.metric}: the baseline's value is 0 in most resamples")
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = (float(x) for x in np.percentile(changes, [tail, 100 - tail]))
    worse = -1 if tolerance.higher_is_better else 1  # sign of a change for the worse
    worse_low, worse_high = sorted((low * worse, high * worse))
    t = tolerance.fraction
    if worse_low > 0 and change * worse > t:
        status = "regressed"
    elif worse_high < 0 and change * worse < -t:
        status = "improved"
    elif -t <= worse_low and worse_high <= t:
        status = "unchanged"
    else:
        status = "inconclusive"
    samples = sum(len(r.records) for r in candidate_runs), sum(len(r.records) for r in baseline_runs)
    unit = "time windows" if tolerance.metric == "output_tok_s" else "requests"
    detail = (f"{tolerance.metric} {after:.4g} vs baseline {before:.4g}: {change:+.1%}, {CONFIDENCE:.0%} interval "
              f"[{low:+.1%}, {high:+.1%}] (bootstrap over {unit}"
              f", {samples[1]} and {samples[0]} requests); smallest change that matters {tolerance.text}")
    return PointVerdict(status, subject, detail, before, after, change, low, high)


def judge_without_records(tolerance: Tolerance, before: float, after: float, subject: str) -> PointVerdict:
    change = after / before - 1
    worse = change * (-1 if tolerance.higher_is_better else 1)
    status = "regressed" if worse > tolerance.fraction else "improved" if worse < -tolerance.fraction else "unchanged"
    return PointVerdict(status, subject, f"{tolerance.metric} {after:.4g} vs baseline {before:.4g}: {change:+.1%} "
                                         f"(no per-request records: no interval, judged by {tolerance.text} alone)",
                        before, after, change)


# --- runs ------------------------------------------------------------------------------------------------------------
def _points(report: ReportDir) -> dict[tuple[str, str, str], list[dict]]:
    path = report.perf_summary
    try:
        runs = userfiles.read_json(path, "a perf summary")["runs"]
    except (KeyError, TypeError) as error:
        raise UserError(f"{path}: not a perf summary ({error})") from None
    points: dict[tuple[str, str, str], list[dict]] = {}
    for row in runs:
        points.setdefault((row["case"], row["workload"], row["point"]), []).append(row)
    return points


def _records(report: ReportDir, row: dict) -> PointRun | None:
    """The point's request records: where the summary says, else at the same place inside this report dir (a
    report dir that was moved)."""
    saved = Path(row.get("records") or "")
    for path in (saved, report.perf_records_file(row["case"], saved.name)):
        if saved.name and path.is_file():
            try:
                return read_records(path)
            except (ValueError, KeyError, TypeError, IndexError) as error:
                raise UserError(f"{path}: not a records file of a measured point ({error})") from None
    return None


def compare(baseline: ReportDir, candidate: ReportDir, tolerances: tuple[Tolerance, ...]) -> list[PointVerdict]:
    has_summary = [r for r in (baseline, candidate) if r.perf_summary.is_file()]
    if not has_summary:
        return []
    if len(has_summary) == 1:
        missing = candidate if has_summary[0] is baseline else baseline
        return [PointVerdict("not compared", missing.perf_summary.name, f"none in {missing}")]
    before, after = _points(baseline), _points(candidate)
    verdicts = []
    for key in sorted(before.keys() | after.keys()):
        subject = " ".join(key)
        if key not in before or key not in after:
            verdicts.append(PointVerdict("not compared", subject,
                                         f"measured only in the {'baseline' if key in before else 'candidate'}"))
            continue
        old, new = before[key], after[key]
        where_old = {(r.get("hardware"), r.get("gpu_name")) for r in old}
        where_new = {(r.get("hardware"), r.get("gpu_name")) for r in new}
        if where_old != where_new:
            verdicts.append(PointVerdict("not compared", subject, f"baseline measured on {_where(where_old)}, the "
                                                                  f"candidate on {_where(where_new)}"))
            continue
        old_records = [run for run in (_records(baseline, r) for r in old) if run is not None]
        new_records = [run for run in (_records(candidate, r) for r in new) if run is not None]
        for tolerance in tolerances:
            name = f"{subject} {tolerance.metric}"
            if len(old_records) < len(old) or len(new_records) < len(new):
                values = [r["metrics"].get(tolerance.metric) for r in (old[0], new[0])]
                if not values[0] or values[1] is None:
                    verdicts.append(PointVerdict("not compared", name, f"no {tolerance.metric} in both summaries"))
                else:
                    verdicts.append(judge_without_records(tolerance, values[0], values[1], name))
            else:
                verdicts.append(judge(tolerance, old_records, new_records, name))
    return verdicts


def _where(places: set) -> str:
    return ", ".join(sorted(f"{hw}" + (f" ({gpu})" if gpu else "") for hw, gpu in places))
