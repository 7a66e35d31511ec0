"""Output equivalence across layouts: which comparator applies to a case (the matrix's `compare:` section and the
`Policy` it gives are llmconform.config.compare), which layout is the reference, where each layout's outputs are
kept, and the property each test records."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from llmconform import engines
from llmconform.config import layout as layouts
from llmconform.config.case import Case
from llmconform.config.compare import Policy, case_dtype, parse_compare_section
from llmconform.engines.base import DeterminismSwitch
from llmconform.equivalence.comparators import Comparator, Generation, make_comparator
from llmconform.errors import UserError

if TYPE_CHECKING:  # equivalence sits below reports: it is handed the report dir, never imports its module
    from llmconform.reports.report_dir import ReportDir

GREEDY_PROBES = ("completions-text", "completions-token-ids", "completions-stream", "chat")  # judged by the comparator


def comparator_for(policy: Policy) -> Comparator:
    return make_comparator(policy.comparator, top_k=policy.top_k, max_gap=policy.max_logprob_gap,
                           max_delta=policy.max_logprob_delta, max_drift=policy.max_logprob_drift)


def raise_user_error(path: str, problem: str, allowed: str | None) -> NoReturn:
    raise UserError(f"{path}: {problem}" + (f" (allowed: {allowed})" if allowed else ""))


def policy_for(case: Case) -> Policy:
    """The policy of a case from its matrix's `compare:` section (validated again: a Case may be built by hand)."""
    return parse_compare_section(case.compare or None, raise_user_error).policy(case.model.id, case_dtype(case))


# --- determinism switches ---------------------------------------------------------------------------------------
def determinism_switch(engine: str) -> DeterminismSwitch | None:
    """The engine's determinism switch (Engine.determinism), None for an engine without one or unknown."""
    known = engines.ENGINES.get(engine)
    return known.determinism if known else None


# --- reference -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReferenceChoice:
    case: Case | None
    why: str


def choose_reference(case: Case, cases: list[Case], policy: Policy, unfit: dict[str, str]) -> ReferenceChoice:
    """The case this one is compared with: same engine and model, the layout `compare.reference` names, else tp1,
    else the smallest layout that can run here."""
    group = [c for c in cases if c.engine.name == case.engine.name and c.model.id == case.model.id]
    names = ", ".join(str(c.layout) for c in group)
    if policy.reference:
        wanted = layouts.parse(policy.reference)
        chosen = next((c for c in group if c.layout == wanted), None)
        if chosen is None:
            return ReferenceChoice(None, f"the reference layout {wanted} (compare.reference) is not among the "
                                         f"layouts of {case.engine.name}/{case.model.id} in this session ({names}): "
                                         f"add it to the matrix or set compare.reference to one of them")
        return ReferenceChoice(chosen, f"compare.reference = {wanted}")
    runnable = [c for c in group if c.id not in unfit] or group
    chosen = min(runnable, key=lambda c: (c.layout != layouts.Layout(), c.layout.gpus, group.index(c)))
    why = "tp1" if chosen.layout == layouts.Layout() else f"the smallest layout that runs here ({chosen.layout})"
    return ReferenceChoice(chosen, why)


# --- outputs of each layout ------------------------------------------------------------------------------------
@dataclass
class LayoutOutputs:
    """What one layout answered to the probe set (or why it could not answer). `run` ties it to one test run so
    that outputs left in a reused report dir are never mistaken for this run's."""

    case_id: str
    engine: str
    engine_version: str | None
    model: str
    layout: str
    dtype: str
    run: str
    generations: dict[str, list[Generation]] = field(default_factory=dict)  # probe -> answers
    first_tokens: dict[str, dict[str, int]] = field(default_factory=dict)  # prompt -> {token: count}
    failure: str | None = None
    known_failure: str | None = None
    compare: dict = field(default_factory=dict)  # the case's `compare:` section (`llmconform compare` applies it)

    @property
    def collected(self) -> bool:
        return self.failure is None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["generations"] = {probe: [g.to_dict() for g in answers] for probe, answers in self.generations.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> LayoutOutputs:
        generations = {probe: [Generation.from_dict(g) for g in answers]
                       for probe, answers in data.pop("generations").items()}
        return cls(generations=generations, **data)


@dataclass(frozen=True)
class OutputStore:
    """Each layout's outputs as JSON files in the report dir, shared by every pytest(-xdist) process of a run."""

    report: ReportDir
    run: str

    def path(self, case_id: str) -> Path:
        return self.report.equivalence_outputs(case_id)

    def save(self, outputs: LayoutOutputs) -> Path:
        path = self.path(outputs.case_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(".tmp")
        staging.write_text(json.dumps(outputs.to_dict(), indent=1))
        staging.replace(path)  # readers in other processes never see half a file
        return path

    def load(self, case_id: str) -> LayoutOutputs | None:
        path = self.path(case_id)
        if not path.exists():
            return None
        outputs = LayoutOutputs.from_dict(json.loads(path.read_text()))
        return outputs if outputs.run == self.run else None


# --- what each test records -------------------------------------------------------------------------------------------
PROPERTY = "equivalence"  # the user property each equivalence test records (see llmconform/suites/test_equivalence.py)
