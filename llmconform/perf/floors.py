"""Throughput floors evaluated: which declared floor (the grammar: llmconform.config.floor_rules) applies to a case's
measured points and on which hardware, and its verdict. The hardware and its memory bandwidth are
llmconform.perf.hardware; the roofline's model bytes are llmconform.perf.model_size.

CaseHardware profiles: `cpu`, or a GPU as the bandwidth table names it (`H100`, `H100-SXM`, `A100-80GB`, `H200`, ...;
every dash-separated word of the profile must be a word of the detected GPU's key). A floor whose profile does not
match is skipped with that reason, and the numbers are still reported.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from llmconform.config import userfiles
from llmconform.config.floor_rules import Floor, higher_is_better
from llmconform.errors import UserError
from llmconform.perf.hardware import CaseHardware
from llmconform.perf.load_metrics import not_measurable
from llmconform.perf.model_size import ModelBytes, roofline_ms_per_token


@dataclass(frozen=True)
class FloorVerdict:
    floor: str
    status: str  # "pass", "fail" or "skip"
    detail: str
    workload: str | None = None
    point: str | None = None
    measured: float | None = None
    threshold: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Baseline:
    """A saved perf summary (perf-summary.json of an earlier run's report dir) to compare against."""

    path: str
    runs: tuple[dict, ...]

    def find(self, case: str, workload: str, point: str) -> dict | None:
        return next((r for r in self.runs if (r["case"], r["workload"], r["point"]) == (case, workload, point)),
                    None)


def load_baseline(path: str | Path) -> Baseline:
    what = "a perf-summary.json of an llmconform run"
    data = userfiles.read_json(Path(path), what)
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise UserError(f"{path}: has no 'runs' list; expected {what}")
    return Baseline(path=str(path), runs=tuple(data["runs"]))


@dataclass(frozen=True)
class CaseContext:
    """What evaluating a case's floors needs besides its measured points."""

    case_id: str
    hardware: CaseHardware
    tp: int = 1
    model: ModelBytes | None = None
    model_problem: str | None = None  # why `model` is None
    baseline: Baseline | None = None


UNMEASURABLE_ZERO = "the streamed chunks arrived together, so no time passed between tokens"


def evaluate(floors: tuple[Floor, ...], points: list[dict], context: CaseContext) -> list[FloorVerdict]:
    """Verdicts of every floor that applies to the case, one per measured point it covers (or one skip saying why it
    could not be checked). `points` are load_metrics.PointSummary.as_dict() entries."""
    verdicts: list[FloorVerdict] = []
    for floor in floors:
        if not floor.applies_to(context.case_id):
            continue
        if floor.hardware is not None and not context.hardware.matches(floor.hardware):
            verdicts.append(FloorVerdict(floor.text, "skip",
                                    f"applies on {floor.hardware}; this case ran on "
                                    f"{context.hardware.describe()} (numbers reported, not checked)"))
            continue
        chosen = [p for p in points if _covers(floor, p)]
        if not chosen:
            verdicts.append(FloorVerdict(floor.text, "skip", f"no measured point matches ({_scope(floor)})"))
            continue
        for point in chosen:
            verdicts.append(_check(floor, point, context))
    return verdicts


def _covers(floor: Floor, point: dict) -> bool:
    if floor.workload is not None and point["workload"] != floor.workload:
        return False
    if floor.concurrency is not None and (point["concurrency"] != floor.concurrency or point["rate"] is not None):
        return False
    if floor.rate is not None:
        rate = math.inf if point["rate"] == "inf" else point["rate"]
        return rate == floor.rate
    return True


def _scope(floor: Floor) -> str:
    parts = [f"workload {floor.workload}" if floor.workload else "any workload"]
    if floor.concurrency is not None:
        parts.append(f"concurrency {floor.concurrency}")
    if floor.rate is not None:
        parts.append(f"rate {floor.rate:g}")
    return ", ".join(parts)


def _check(floor: Floor, point: dict, context: CaseContext) -> FloorVerdict:
    """A floor that can be checked here fails on a point that does not measure the server (client-bound), or on a
    value that could not be measured (bunched delivery): either would otherwise pass on numbers that say nothing
    about the server."""
    unmeasurable = not_measurable(floor.metric, point)
    if unmeasurable and not point["metrics"].get(floor.metric):  # a TPOT of 0: the chunks all came at once
        return FloorVerdict(floor.text, "fail", f"{floor.metric} is not measurable: {unmeasurable}",
                       workload=point["workload"], point=point["point"], measured=point["metrics"].get(floor.metric))
    verdict = _check_value(floor, point, context)
    if verdict.status == "skip":
        return verdict
    if point.get("invalid"):
        return replace(verdict, status="fail", detail=f"invalid point: {point['invalid']}")
    if unmeasurable:
        return replace(verdict, status="fail", detail=f"{floor.metric} is not measurable: {unmeasurable}")
    return verdict


def _check_value(floor: Floor, point: dict, context: CaseContext) -> FloorVerdict:
    where = {"workload": point["workload"], "point": point["point"]}
    measured = point["metrics"].get(floor.metric)
    if measured is None:
        return FloorVerdict(floor.text, "skip", f"{floor.metric} was not measured (no SLOs for goodput?)", **where)
    if floor.kind == "bound":
        ok = measured >= floor.value if floor.op == ">=" else measured <= floor.value
        return FloorVerdict(floor.text, "pass" if ok else "fail", f"{floor.metric} = {measured:.4g} (floor {floor.op} "
                       f"{floor.value:g})", measured=measured, threshold=floor.value, **where)
    if floor.kind == "roofline":
        return _check_roofline(floor, measured, context, where)
    return _check_baseline(floor, measured, context, where)


def _check_roofline(floor: Floor, tpot_ms: float, context: CaseContext, where: dict) -> FloorVerdict:
    bandwidth = context.hardware.bandwidth
    if bandwidth is None:
        return FloorVerdict(floor.text, "skip", f"no memory bandwidth known for {context.hardware.describe()}", **where)
    if context.model is None:
        return FloorVerdict(floor.text, "skip", f"model bytes unknown: {context.model_problem}", **where)
    if tpot_ms <= 0:
        return FloorVerdict(floor.text, "skip", "no TPOT measured (outputs of one token?)", **where)
    bound = roofline_ms_per_token(context.model, bandwidth, context.tp)
    fraction = bound / tpot_ms
    detail = (f"median TPOT {tpot_ms:.3f} ms vs bound {bound:.3f} ms/token ({context.model.decode_bytes / 1e9:.2f} "
              f"GB read per token / {bandwidth / 1e12:.2f} TB/s x TP{context.tp}) = {fraction:.0%} of roofline "
              f"(floor {floor.value:.0%})")
    return FloorVerdict(floor.text, "pass" if fraction >= floor.value else "fail", detail, measured=fraction,
                   threshold=floor.value, **where)


def _check_baseline(floor: Floor, measured: float, context: CaseContext, where: dict) -> FloorVerdict:
    if context.baseline is None:
        return FloorVerdict(floor.text, "skip", "no baseline given (--perf-baseline or LLMCONFORM_PERF_BASELINE)",
                       **where)
    saved = context.baseline.find(context.case_id, where["workload"], where["point"])
    if saved is None:
        return FloorVerdict(floor.text, "skip", f"{context.baseline.path} has no {context.case_id} "
                                           f"{where['workload']} {where['point']}", **where)
    if saved.get("hardware") != context.hardware.key:
        return FloorVerdict(floor.text, "skip", f"baseline measured on {saved.get('hardware')}, this run on "
                                           f"{context.hardware.key}", **where)
    reference = saved["metrics"].get(floor.metric)
    if reference is None:
        return FloorVerdict(floor.text, "skip", f"the baseline has no {floor.metric}", **where)
    if reference == 0:  # a relative change from 0 is undefined; a 0 latency was not measurable in the baseline
        return FloorVerdict(floor.text, "skip", f"the baseline's {floor.metric} is 0 (not measurable there: "
                                           f"{UNMEASURABLE_ZERO})", **where)
    change = measured / reference - 1
    if higher_is_better(floor.metric):
        ok, limit = change >= -floor.value, reference * (1 - floor.value)
    else:
        ok, limit = change <= floor.value, reference * (1 + floor.value)
    detail = (f"{floor.metric} = {measured:.4g} vs baseline {reference:.4g} ({change:+.1%}; allowed "
              f"{'-' if higher_is_better(floor.metric) else '+'}{floor.value:.0%})")
    return FloorVerdict(floor.text, "pass" if ok else "fail", detail, measured=measured, threshold=limit, **where)
