"""Throughput floors evaluated: which declared floor (the grammar: llmconform.config.floor_rules) applies to a case's
measured points and on which hardware, and its verdict.

CaseHardware profiles: `cpu`, or a GPU as the bandwidth table names it (`H100`, `H100-SXM`, `A100-80GB`, `H200`, ...;
every dash-separated word of the profile must be a word of the detected GPU's key). A floor whose profile does not
match is skipped with that reason, and the numbers are still reported.

Roofline: single-stream decode cannot beat reading every weight used per token from memory once per token:
bound (s/token) = decode bytes / (HBM bandwidth x TP). Decode bytes = parameters read per token x bytes per parameter:
all weights except the input-embedding table (one row is read; unless it is tied to the LM head), and for MoE only
the routed (top-k) and shared experts. KV-cache reads are not counted (small next to the weights at short contexts).
Measured = median TPOT (excl. first token) at concurrency 1; the floor is bound / measured >= X%.
Note: the "72% of roofline" first computed for Qwen2.5-7B (docs/engines.md#real-vllm-on-gpus) counted the whole 15.2 GB
including the embedding table; the bytes actually read per token are 14.1 GB, which makes the same measurement 67%.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from llmconform.config import userfiles
from llmconform.config.floor_rules import Floor, higher_is_better
from llmconform.errors import UserError
from llmconform.perf.load_metrics import not_measurable

# --- GPU memory bandwidth --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GpuSpec:
    key: str  # dash-separated words that hardware profiles match against
    pattern: str  # regex on the name nvidia-smi reports
    bandwidth: float  # bytes per second, the vendor's peak HBM/GDDR figure


# Vendor datasheet figures (peak memory bandwidth per GPU). First match wins, so variants come before families.
GPUS: tuple[GpuSpec, ...] = (
    # https://www.nvidia.com/en-us/data-center/h100/ (specifications: H100 SXM 3.35 TB/s, H100 NVL 3.9 TB/s);
    # H100 PCIe: product brief PB-11133-001 ("greater than 2,000 GB/s"), 2.0 TB/s.
    GpuSpec("H100-NVL", r"\bH100\b.*\bNVL\b", 3.9e12),
    GpuSpec("H100-PCIe", r"\bH100\b.*\bPCIe\b", 2.0e12),
    GpuSpec("H100-SXM", r"\bH100\b", 3.35e12),  # nvidia-smi: "NVIDIA H100 80GB HBM3"
    # https://www.nvidia.com/en-us/data-center/h200/ (H200 SXM and H200 NVL: 4.8 TB/s)
    GpuSpec("H200-NVL", r"(?<!G)\bH200\b.*\bNVL\b", 4.8e12),
    GpuSpec("H200-SXM", r"(?<!G)\bH200\b", 4.8e12),
    # https://www.nvidia.com/en-us/data-center/grace-hopper-superchip/ (96 GB HBM3: 4 TB/s; 144 GB HBM3e: 4.9 TB/s)
    GpuSpec("GH200-144GB", r"\bGH200\b.*144", 4.9e12),
    GpuSpec("GH200-96GB", r"\bGH200\b", 4.0e12),
    # https://www.nvidia.com/en-us/data-center/dgx-b200/ (8x B200: 64 TB/s HBM3e in total, 8 TB/s each)
    GpuSpec("B200", r"\bB200\b", 8.0e12),
    # https://www.nvidia.com/en-us/data-center/a100/ (80GB PCIe 1,935 GB/s; 80GB SXM 2,039 GB/s; 40GB 1,555 GB/s)
    GpuSpec("A100-SXM-80GB", r"\bA100\b.*SXM.*80GB", 2.039e12),
    GpuSpec("A100-PCIe-80GB", r"\bA100\b.*80GB", 1.935e12),
    GpuSpec("A100-SXM-40GB", r"\bA100\b.*SXM", 1.555e12),
    GpuSpec("A100-PCIe-40GB", r"\bA100\b", 1.555e12),
    # https://www.nvidia.com/en-us/data-center/products/a30-gpu/ (933 GB/s)
    GpuSpec("A30", r"\bA30\b", 933e9),
    # https://www.nvidia.com/en-us/data-center/products/a10-gpu/ (600 GB/s; AWS's A10G has the same GDDR6 bus)
    GpuSpec("A10G", r"\bA10G\b", 600e9),
    GpuSpec("A10", r"\bA10\b", 600e9),
    # https://www.nvidia.com/en-us/data-center/l40s/ and /l40/ (864 GB/s); /l4/ (300 GB/s)
    GpuSpec("L40S", r"\bL40S\b", 864e9),
    GpuSpec("L40", r"\bL40\b", 864e9),
    GpuSpec("L4", r"\bL4\b", 300e9),
    # https://www.nvidia.com/en-us/data-center/v100/ (900 GB/s); /tesla-t4/ (320 GB/s)
    GpuSpec("V100", r"\bV100\b", 900e9),
    GpuSpec("T4", r"\bT4\b", 320e9),
)


def gpu_spec(name: str) -> GpuSpec | None:
    return next((g for g in GPUS if re.search(g.pattern, name, re.IGNORECASE)), None)


@dataclass(frozen=True)
class CaseHardware:
    """What a case ran on: `cpu`, or a GPU model (from server.json or nvidia-smi) and its memory bandwidth."""

    device: str  # "cuda" or "cpu"
    gpu_name: str | None = None
    gpu_count: int = 0

    @property
    def spec(self) -> GpuSpec | None:
        return gpu_spec(self.gpu_name) if self.gpu_name else None

    @property
    def key(self) -> str:
        if self.device == "cpu":
            return "cpu"
        if self.spec:
            return self.spec.key
        if self.gpu_name:  # a GPU outside the table: its own words ("NVIDIA GeForce RTX 4090" -> GEFORCE-RTX-4090)
            return "-".join(w for w in re.split(r"[^A-Za-z0-9]+", self.gpu_name) if w and w.upper() != "NVIDIA")
        return "unknown-gpu"

    @property
    def bandwidth(self) -> float | None:
        return self.spec.bandwidth if self.spec else None

    def matches(self, profile: str) -> bool:
        words = {w.upper() for w in self.key.split("-")}
        return all(w.upper() in words for w in profile.split("-"))

    def describe(self) -> str:
        if self.device == "cpu":
            return "cpu"
        return f"{self.key} ({self.gpu_name})" if self.gpu_name else self.key


def detect_hardware(device: str, server_json: Path | None = None) -> CaseHardware:
    """The hardware of a case: CPU for `device: cpu`; else the GPU that server.json recorded at start (nvidia-smi on
    the node that started it), else nvidia-smi here."""
    if device == "cpu":
        return CaseHardware("cpu")
    gpu = None
    if server_json is not None and server_json.is_file():
        gpu = json.loads(server_json.read_text()).get("gpu")
    if gpu is None:
        from llmconform.serving.server import gpu_description

        gpu = gpu_description()
    if not gpu:
        return CaseHardware(device)
    return CaseHardware(device, gpu_name=gpu.get("name"), gpu_count=int(gpu.get("count") or 1))


# --- model bytes -----------------------------------------------------------------------------------------------------

class ModelSizeError(ValueError):
    """The parameter count or bytes per parameter cannot be derived from this config."""


DTYPE_BYTES = {"float32": 4, "float": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "half": 2, "fp16": 2}
DENSE_TYPES = ("llama", "mistral", "qwen2", "qwen3")
MOE_TYPES = ("qwen2_moe", "qwen3_moe", "mixtral")


@dataclass(frozen=True)
class ModelBytes:
    total_params: int
    decode_params: int  # parameters read per decoded token (see the module docstring)
    bytes_per_param: int
    dtype: str

    @property
    def total_bytes(self) -> int:
        return self.total_params * self.bytes_per_param

    @property
    def decode_bytes(self) -> int:
        return self.decode_params * self.bytes_per_param


def parameter_counts(config: dict) -> tuple[int, int]:
    """(total parameters, parameters read per decoded token) of a dense or MoE decoder from its config.json."""
    model_type = config.get("model_type")
    if model_type not in DENSE_TYPES + MOE_TYPES:
        raise ModelSizeError(f"no parameter count for model_type {model_type!r} "
                             f"(known: {', '.join(DENSE_TYPES + MOE_TYPES)})")
    h, vocab, layers = config["hidden_size"], config["vocab_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or h // heads
    q, kv = heads * head_dim, kv_heads * head_dim
    attention = h * q + 2 * h * kv + q * h
    if model_type in ("qwen2", "qwen2_moe"):  # q/k/v biases, always
        attention += q + 2 * kv
    elif config.get("attention_bias"):
        attention += q + 2 * kv + h
    if model_type in ("qwen3", "qwen3_moe"):  # per-head RMSNorm of q and k
        attention += 2 * head_dim
    mlp_bias = 3 if config.get("mlp_bias") else 0
    dense_mlp = 3 * h * config.get("intermediate_size", 0) + mlp_bias * config.get("intermediate_size", 0)
    total = decode = 0
    for layer in range(layers):
        mlp_total = mlp_read = dense_mlp
        if _is_moe_layer(config, layer):
            mlp_total, mlp_read = _moe_mlp(config, h)
        total += attention + mlp_total + 2 * h
        decode += attention + mlp_read + 2 * h
    embedding = vocab * h
    total += embedding + h + (0 if config.get("tie_word_embeddings") else embedding)
    decode += embedding + h  # the LM head (or the tied table, used as one); not the input lookup
    return total, decode


def _is_moe_layer(config: dict, layer: int) -> bool:
    model_type = config["model_type"]
    if model_type == "mixtral":
        return True
    if model_type not in ("qwen2_moe", "qwen3_moe") or not config.get("num_experts"):
        return False
    step = config.get("decoder_sparse_step", 1) or 1
    return layer not in (config.get("mlp_only_layers") or []) and (layer + 1) % step == 0


def _moe_mlp(config: dict, h: int) -> tuple[int, int]:
    """(all expert parameters, those one token reads) of one MoE layer: router, experts, shared expert."""
    if config["model_type"] == "mixtral":
        experts, inter = config["num_local_experts"], config["intermediate_size"]
    else:
        experts, inter = config["num_experts"], config["moe_intermediate_size"]
    top_k = config["num_experts_per_tok"]
    router = experts * h
    expert = 3 * h * inter
    shared = 0
    if config.get("shared_expert_intermediate_size"):
        shared = 3 * h * config["shared_expert_intermediate_size"] + h  # + its sigmoid gate
    return router + experts * expert + shared, router + top_k * expert + shared


def model_bytes(config: dict, dtype: str | None = None) -> ModelBytes:
    """Parameter counts and bytes per parameter; `dtype` is the engine's `--dtype` (None or auto: the config's)."""
    if config.get("quantization_config"):
        method = config["quantization_config"].get("quant_method", "quantized")
        raise ModelSizeError(f"{method} weights have per-tensor byte widths; roofline floors need unquantized "
                             f"weights")
    chosen = dtype if dtype and dtype != "auto" else config.get("torch_dtype") or config.get("dtype")
    if chosen not in DTYPE_BYTES:
        raise ModelSizeError(f"unknown weight dtype {chosen!r} (known: {', '.join(DTYPE_BYTES)})")
    total, decode = parameter_counts(config)
    return ModelBytes(total, decode, DTYPE_BYTES[chosen], chosen)


def roofline_ms_per_token(size: ModelBytes, bandwidth: float, tp: int = 1) -> float:
    """Fastest possible single-stream decode step: the weights read per token over the HBM bandwidth of the TP
    group (pipeline stages run one after another, so PP adds no bandwidth)."""
    return size.decode_bytes / (bandwidth * tp) * 1e3


# --- evaluation ----------------------------------------------------------------------------------------------------

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
