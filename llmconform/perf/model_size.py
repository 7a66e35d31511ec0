"""How many bytes of a model a decode step reads, from its config.json, and the bandwidth bound they put on a single
stream (the roofline floor of llmconform.perf.floors).

Roofline: single-stream decode cannot beat reading every weight used per token from memory once per token:
bound (s/token) = decode bytes / (HBM bandwidth x TP). Decode bytes = parameters read per token x bytes per parameter:
all weights except the input-embedding table (one row is read; unless it is tied to the LM head), and for MoE only
the routed (top-k) and shared experts. KV-cache reads are not counted (small next to the weights at short contexts).
Measured = median TPOT (excl. first token) at concurrency 1; the floor is bound / measured >= X%.
Note: the "72% of roofline" first computed for Qwen2.5-7B (docs/engines.md#real-vllm-on-gpus) counted the whole 15.2 GB
including the embedding table; the bytes actually read per token are 14.1 GB, which makes the same measurement 67%.
"""

from __future__ import annotations

from dataclasses import dataclass


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
