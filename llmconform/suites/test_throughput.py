"""Throughput and latency under the workloads a matrix declares, checked against its floors (marker `perf`).

Per case: every point of every `workloads:` entry is run with llmconform.perf.loadgen (streamed completions, exact
prompt and output lengths, warm-ups excluded); the raw per-request records go to <report dir>/perf/<case>/, the
per-point metrics (vLLM `bench serve` definitions, llmconform.perf.load_metrics) and the client's own overhead to the
test's `perf` property, from which the perf report section (llmconform.reports.perf_section) writes perf.md,
perf-summary.json and plots.

- test_serving_metrics fails when the measurement itself is not what the workload declared: failed requests, prompts
  the server counted differently, or outputs of the wrong length where the engine was asked to ignore EOS.
- test_floors checks the matrix's `floors:` for the case: one failure message lists every breached floor with the
  measured value; floors whose hardware profile does not match, or that cannot be checked here, are skipped with the
  reason (the numbers are still reported).

A saved baseline for `METRIC:-X%` floors: a perf-summary.json from an earlier report dir, given with
--perf-baseline FILE (when the plugin offers it) or LLMCONFORM_PERF_BASELINE.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmconform.config.floor_rules import Floor, parse_floors
from llmconform.config.workloads import Workload, parse_workloads
from llmconform.errors import MatrixError
from llmconform.perf import floors, load_metrics, loadgen
from llmconform.perf.hardware import CaseHardware, detect_hardware
from llmconform.perf.model_size import ModelBytes, ModelSizeError, model_bytes, roofline_ms_per_token
from llmconform.perf.prompts import PromptTokenizer
from llmconform.perf.records import PointRun, write_records
from llmconform.reports import perf_section

pytestmark = [pytest.mark.perf, pytest.mark.slow]
_MEASURED = pytest.StashKey[dict]()


@dataclass
class Measurement:
    """One case's measured points and what went wrong with the measurement itself."""

    hardware: CaseHardware
    points: list[dict] = field(default_factory=list)  # load_metrics.PointSummary.as_dict()
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    model: ModelBytes | None = None
    model_problem: str | None = None
    skip: str | None = None
    error: BaseException | None = None

    def as_property(self) -> dict:
        return {"hardware": self.hardware.key, "gpu_name": self.hardware.gpu_name, "points": self.points,
                "problems": self.problems, "warnings": self.warnings}


def _case_sections(case) -> tuple[tuple[Workload, ...], tuple[Floor, ...]]:
    def fail(path: str, problem: str, allowed: str | None):
        raise MatrixError(case.matrix or "<matrix>", path, problem, allowed)

    workloads = parse_workloads(list(case.workloads), fail)
    return workloads, parse_floors(list(case.floors), fail, workloads)


def _measure(llm, workers: int | None) -> Measurement:
    case = llm.case
    hardware = detect_hardware(case.engine.device,
                                      llm.server.run_dir.record if llm.server is not None else None)
    result = Measurement(hardware)
    workloads, _ = _case_sections(case)
    if not workloads:
        result.skip = f"matrix {case.matrix!r} declares no workloads"
        return result
    tokenizer_dir = Path(case.model.path)
    if not (tokenizer_dir / "tokenizer.json").is_file():
        result.skip = f"no tokenizer.json in {tokenizer_dir} to make exact-length prompts with"
        return result
    try:
        result.model = model_bytes(case.model.config or {}, case.args.get("dtype"))
    except (ModelSizeError, KeyError) as error:
        result.model_problem = str(error)
    target = loadgen.Target(llm.base_url, llm.model, llm.engine, llm.api_key)
    tokenizer = PromptTokenizer.from_dir(tokenizer_dir).with_server(target)
    client_cpus = None
    if case.engine.device == "cpu" and llm.server is not None and case.launcher == "local":
        client_cpus = loadgen.other_cpus(llm.server.placement.devices[0])  # keep off the engine's leased cores
    for workload in workloads:
        progress = llm.progress.load(f"{case.id} {workload.name}")

        def measured(run: PointRun, workload=workload, progress=progress) -> None:
            records = llm.report_dir.perf_records(case.id, workload.name, run.point.label)
            write_records(records, run)
            summary = load_metrics.summarize(run, workload.input_tokens, workload.output_tokens, workload.slo)
            point = summary.as_dict()
            point["records"] = str(records)
            point["prompts_counted_by"] = tokenizer.counted_by
            point["prompts"] = tokenizer.made
            _add_roofline(point, result, case.layout.tp)
            flags = perf_section.point_flags(point, result.points)
            progress.finished(run.point.label, perf_section.point_line(point, flags))
            result.points.append(point)
            problems, notes = load_metrics.check_measurement(summary, run)
            result.problems += problems
            result.warnings += notes

        def running(p: loadgen.LoadPoint, done: int, chunks: int, seconds: float, progress=progress) -> None:
            progress.update(p.label, p.requests, done, chunks, seconds)

        with loadgen.pinned(client_cpus):
            loadgen.run_workload(target, workload, tokenizer, on_point=measured, workers=workers, on_progress=running)
    return result


def _add_roofline(point: dict, result: Measurement, tp: int) -> None:
    """Where the bound is known, say how close single-stream decode came to it (reported with or without a floor)."""
    tpot = point["metrics"]["median_tpot_ms"]
    if point["concurrency"] != 1 or point["rate"] is not None or not tpot:
        return
    if result.model is None or result.hardware.bandwidth is None:
        return
    bound = roofline_ms_per_token(result.model, result.hardware.bandwidth, tp)
    point["roofline"] = {"bound_ms_per_token": bound, "fraction": bound / tpot,
                         "decode_bytes": result.model.decode_bytes, "bandwidth": result.hardware.bandwidth}


def _measurement(request, llm) -> Measurement:
    if llm.case is None:
        pytest.skip("an attached server (--llm-url) has no matrix workloads: use `llmconform bench run --llm-url URL "
                    "--matrix M`")
    cache = request.config.stash.setdefault(_MEASURED, {})
    if llm.id not in cache:
        try:
            cache[llm.id] = _measure(llm, request.config.getoption("load_workers", default=None))
        except Exception as error:
            cache[llm.id] = Measurement(CaseHardware(llm.case.engine.device), error=error)
    measurement = cache[llm.id]
    if measurement.error is not None:
        raise measurement.error
    if measurement.skip:
        pytest.skip(measurement.skip)
    return measurement


def test_serving_metrics(request, llm, record_property):
    measurement = _measurement(request, llm)
    record_property("perf", measurement.as_property())
    for text in measurement.warnings:
        warnings.warn(text, UserWarning, stacklevel=1)
    assert not measurement.problems, "the measurement is not the declared workload:\n" + "\n".join(
        measurement.problems)


def test_floors(request, llm, record_property):
    measurement = _measurement(request, llm)
    _, declared = _case_sections(llm.case)
    baseline_file = request.config.getoption("perf_baseline", default=None) or os.environ.get(
        "LLMCONFORM_PERF_BASELINE")
    context = floors.CaseContext(case_id=llm.case.id, hardware=measurement.hardware, tp=llm.case.layout.tp,
                                 model=measurement.model, model_problem=measurement.model_problem,
                                 baseline=floors.load_baseline(baseline_file) if baseline_file else None)
    verdicts = floors.evaluate(declared, measurement.points, context)
    record_property("floors", [v.as_dict() for v in verdicts])
    failed = [v for v in verdicts if v.status == "fail"]
    if failed:
        pytest.fail("floors breached:\n" + "\n".join(f"  {v.floor} [{v.workload} {v.point}]: {v.detail}"
                                                     for v in failed), pytrace=False)
    if not any(v.status == "pass" for v in verdicts):
        reasons = sorted({f"{v.floor}: {v.detail}" for v in verdicts}) or ["no floor applies to this case"]
        pytest.skip("; ".join(reasons))
