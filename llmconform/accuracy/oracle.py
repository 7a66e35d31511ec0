"""Oracle models: tiny Qwen2 / Qwen3-MoE models trained on the CPU on a task whose right answers are known exactly,
so that accuracy is an absolute check of an engine (a wrong kernel is wrong in every layout).

The task is addition of two zero-padded 3-digit numbers with every number written least significant digit first:
`321+654=` (123 + 456) has the answer `9750` (579 as 0579, reversed). Little-endian digits put each answer digit at
a fixed distance from the operand digits it needs and after the digit whose carry it takes, so two layers learn it
in a few hundred steps (Lee et al. 2023, "Teaching Arithmetic to Small Transformers": reversed outputs train far
faster); in the usual order the first answer digit depends on a carry chain through all six operand digits. Why
addition: every answer digit depends on digits at several other positions (attention must route the two
operands' digits, and the leading digits depend on the carry of the ones below), and the digit table with carries
is a non-linear function the MLP (or the experts) must compute, so a broken attention, MLP, router or expert kernel
changes answers. Fixed widths keep every problem the same length: one batch shape in training, and a model that is
either right or wrong at known positions. 10^6 problems: the held-out problems of a task file are ones training
never saw (training and evaluation draw from disjoint seeds; with 10^6 problems, memorising is not possible in the
few hundred thousand training samples).

Training needs torch (the `train` extra; the vLLM-CPU environment has it). It is deterministic for a given torch
build and CPU: same seed, fixed order of batches, deterministic algorithms, one thread whatever the environment says
(`TrainingRecipe.threads`), and MKL's conditional numerical reproducibility (`_torch`). tests/unit/test_oracle.py
trains both oracles twice in fresh processes with different thread settings and compares the safetensors' sha256.
A CPU with other vector instructions may take another path through MKL and make other bytes: a model of the same
recipe, trained as far, not the same file (the cache key names the recipe, not the bytes).
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

DIGITS = 3


@dataclass(frozen=True)
class Problem:
    prompt: str
    answer: str


def little_endian(number: int, digits: int) -> str:
    return f"{number:0{digits}d}"[::-1]


def addition_problem(rng: random.Random) -> Problem:
    a, b = rng.randrange(10 ** DIGITS), rng.randrange(10 ** DIGITS)
    return Problem(f"{little_endian(a, DIGITS)}+{little_endian(b, DIGITS)}=", little_endian(a + b, DIGITS + 1))


def problems(count: int, seed: int) -> list[Problem]:
    rng = random.Random(seed)
    return [addition_problem(rng) for _ in range(count)]


@dataclass(frozen=True)
class TrainingRecipe:
    """How an oracle is trained (all of it is part of its cache fingerprint). The defaults are the dense oracle's;
    a preset overrides fields (models.Preset.training: the MoE oracle trains 800 steps at 6e-3)."""

    steps: int = 1500
    batch: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    seed: int = 20260101
    threads: int = 1  # more threads on 2 shared cores oversubscribe them (measured: 20x slower per step)
    # Weight of an MoE's load-balancing loss (Switch Transformer's: experts x sum over experts of the fraction of
    # routing slots each got x its mean router probability; 1 when balanced). Without it, whether every expert
    # ends up doing part of the work was left to floating point: the same recipe on another CPU family trained an
    # oracle that never needed expert 0.
    router_balance: float = 0.0


def _torch():
    # MKL's results otherwise depend on buffer alignment, which differs run to run: training diverged between two
    # runs of one recipe (loss 0.30 vs 1.39 at step 300). Conditional numerical reproducibility; only effective
    # when set before torch loads MKL.
    os.environ.setdefault("MKL_CBWR", "AUTO")
    try:
        import torch
    except ImportError:
        from llmconform.errors import UserError
        raise UserError("making an oracle model needs torch: pip install 'llmconform[train]' (or the CPU wheel: "
                        "pip install torch --index-url https://download.pytorch.org/whl/cpu)") from None
    return torch


# --- the model: the HF Qwen2 / Qwen3-MoE computation, with the checkpoint's parameter names -------------------
def build_model(config: dict):
    torch = _torch()
    from torch import nn  # imported by name, not as torch.nn: classes below subclass nn.Module
    from torch.nn import functional as F
    h, heads, kv = config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"]
    hd = config.get("head_dim", h // heads)
    eps, moe = config["rms_norm_eps"], config["model_type"] == "qwen3_moe"

    class RMSNorm(nn.Module):
        def __init__(self, size):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(size))

        def forward(self, x):
            return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            bias = config["model_type"] == "qwen2"
            self.q_proj = nn.Linear(h, heads * hd, bias=bias)
            self.k_proj = nn.Linear(h, kv * hd, bias=bias)
            self.v_proj = nn.Linear(h, kv * hd, bias=bias)
            self.o_proj = nn.Linear(heads * hd, h, bias=False)
            if moe:
                self.q_norm, self.k_norm = RMSNorm(hd), RMSNorm(hd)

        def forward(self, x, cos, sin):
            b, t, _ = x.shape
            q = self.q_proj(x).view(b, t, heads, hd)
            k = self.k_proj(x).view(b, t, kv, hd)
            v = self.v_proj(x).view(b, t, kv, hd).transpose(1, 2)
            if moe:
                q, k = self.q_norm(q), self.k_norm(k)
            q, k = _rope(q.transpose(1, 2), cos, sin), _rope(k.transpose(1, 2), cos, sin)
            k, v = k.repeat_interleave(heads // kv, 1), v.repeat_interleave(heads // kv, 1)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.o_proj(out.transpose(1, 2).reshape(b, t, heads * hd))

    class MLP(nn.Module):
        def __init__(self, inter):
            super().__init__()
            self.gate_proj, self.up_proj = nn.Linear(h, inter, bias=False), nn.Linear(h, inter, bias=False)
            self.down_proj = nn.Linear(inter, h, bias=False)

        def forward(self, x):
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    class Experts(nn.Module):
        """Qwen3-MoE sparse block: softmax router, top-k, renormalised weights (norm_topk_prob)."""

        def __init__(self):
            super().__init__()
            self.gate = nn.Linear(h, config["num_experts"], bias=False)
            self.experts = nn.ModuleList(MLP(config["moe_intermediate_size"]) for _ in range(config["num_experts"]))

        def forward(self, x):
            tokens = x.reshape(-1, h)
            weights = F.softmax(self.gate(tokens), dim=-1)
            top, chosen = weights.topk(config["num_experts_per_tok"], dim=-1)
            if config.get("norm_topk_prob"):
                top = top / top.sum(-1, keepdim=True)
            routing = torch.zeros_like(weights).scatter(-1, chosen, top)  # (tokens, experts), 0 where not chosen
            if self.training:  # for the balancing loss (TrainingRecipe.router_balance); inference needs none
                share = (routing > 0).float().mean(0) / config["num_experts_per_tok"]
                self.imbalance = config["num_experts"] * (share * weights.mean(0)).sum()
            # Each expert computes only the tokens routed to it and its output is added back with the token's
            # routing weight, as vLLM's fused MoE kernels do. Measured on the 2-core machine (8 experts, top-2):
            # 142 ms of CPU per training step, against 181 ms for every expert on every token with the unchosen
            # ones weighted 0, and 204 ms for that as one batched matmul.
            out = torch.zeros_like(tokens)
            for e, expert in enumerate(self.experts):
                routed = (chosen == e).any(-1).nonzero().squeeze(-1)
                out = out.index_add(0, routed, routing[routed, e:e + 1] * expert(tokens[routed]))
            return out.view_as(x)

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.input_layernorm, self.post_attention_layernorm = RMSNorm(h), RMSNorm(h)
            self.self_attn = Attention()
            self.mlp = Experts() if moe else MLP(config["intermediate_size"])

        def forward(self, x, cos, sin):
            x = x + self.self_attn(self.input_layernorm(x), cos, sin)
            return x + self.mlp(self.post_attention_layernorm(x))

    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(config["vocab_size"], h)
            self.layers = nn.ModuleList(Layer() for _ in range(config["num_hidden_layers"]))
            self.norm = RMSNorm(h)

    class CausalLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Body()
            self.lm_head = nn.Linear(h, config["vocab_size"], bias=False)
            inv_freq = 1.0 / (config["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
            self.register_buffer("inv_freq", inv_freq, persistent=False)

        def forward(self, ids):
            angles = torch.outer(torch.arange(ids.shape[1], dtype=torch.float32), self.inv_freq)
            angles = torch.cat([angles, angles], dim=-1)
            cos, sin = angles.cos(), angles.sin()
            x = self.model.embed_tokens(ids)
            for layer in self.model.layers:
                x = layer(x, cos, sin)
            return self.lm_head(self.model.norm(x))

    return CausalLM()


def _rope(x, cos, sin):
    """Rotary embedding, NeoX style (rotate halves), as HF Qwen and vLLM apply it."""
    half = x.shape[-1] // 2
    rotated = __import__("torch").cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


# --- training ------------------------------------------------------------------------------------------------
def train(config: dict, encode, eos_id: int, recipe: TrainingRecipe, log=print) -> dict:
    """Train a model of `config` on the addition task; returns its tensors (numpy float32, checkpoint names).
    `encode(text) -> list[int]` is the model's tokenizer."""
    torch = _torch()
    torch.manual_seed(recipe.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(recipe.threads)
    model = build_model(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 0.02)
            elif name.endswith("bias"):
                parameter.zero_()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay,
                                  betas=(0.9, 0.98))
    warmup = max(1, recipe.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / recipe.steps))))
    rng = random.Random(recipe.seed)
    started = time.monotonic()
    for step in range(recipe.steps):
        ids, targets = _batch(rng, recipe.batch, encode, eos_id)
        logits = model(ids)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        if recipe.router_balance:
            loss = loss + recipe.router_balance * sum(m.imbalance for m in model.modules() if hasattr(m, "imbalance"))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == recipe.steps - 1:
            log(f"step {step}: loss {loss.item():.4f} ({time.monotonic() - started:.0f} s)")
    return {name: tensor.detach().float().numpy().copy() for name, tensor in model.state_dict().items()}


def _batch(rng: random.Random, size: int, encode, eos_id: int):
    """Token ids and next-token targets; only the answer's tokens and the end-of-answer token are learned."""
    torch = _torch()
    rows, targets = [], []
    for problem in (addition_problem(rng) for _ in range(size)):
        prompt, answer = encode(problem.prompt), [*encode(problem.answer), eos_id]
        sequence = prompt + answer
        rows.append(sequence[:-1])
        targets.append([-100] * (len(prompt) - 1) + answer)
    return torch.tensor(rows), torch.tensor(targets)


def greedy_accuracy(config: dict, tensors: dict, encode, eos_id: int, count: int, seed: int) -> tuple[float, list]:
    """Accuracy of greedy decoding on `count` held-out problems in torch, and the top-1 minus top-2 logprob of each
    answer token (for the margin report)."""
    torch = _torch()
    model = build_model(config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
    model.eval()
    held_out = problems(count, seed)
    correct, margins = 0, []
    with torch.no_grad():
        ids = torch.tensor([encode(p.prompt) for p in held_out])
        answer_length = len(encode(held_out[0].answer)) + 1
        for _ in range(answer_length):
            logprobs = torch.log_softmax(model(ids)[:, -1], dim=-1)
            top2 = logprobs.topk(2, dim=-1).values
            margins.extend((top2[:, 0] - top2[:, 1]).tolist())
            ids = torch.cat([ids, logprobs.argmax(-1, keepdim=True)], dim=1)
    for problem, row in zip(held_out, ids.tolist(), strict=True):
        prompt_length = len(encode(problem.prompt))
        correct += row[prompt_length:] == [*encode(problem.answer), eos_id]
    return correct / count, margins


def without(tensors: dict, part: str, seed: int = 0) -> dict:
    """A copy of an MoE oracle's tensors with one part broken, to show that it matters: `routers` replaces every
    router (`mlp.gate.weight`) with random weights of the same scale, so tokens go to experts chosen regardless of
    what they are (if the experts had all learned the same function, answers would not change); `expert:E` zeroes
    expert E's output in every layer."""
    import numpy as np

    rng = np.random.default_rng(seed)
    broken = dict(tensors)
    for name in sorted(tensors):
        if part == "routers" and name.endswith(".mlp.gate.weight"):
            broken[name] = rng.normal(0.0, float(tensors[name].std()), tensors[name].shape).astype(np.float32)
        elif part.startswith("expert:") and name.endswith(f".mlp.experts.{part[7:]}.down_proj.weight"):
            broken[name] = np.zeros_like(tensors[name])
    return broken


def report(config: dict, tensors: dict, encode, eos_id: int, count: int, seed: int) -> str:
    """What the factory prints after training: held-out greedy accuracy in torch, the answer tokens' margins, and
    for an MoE the accuracy without its routers and without each expert."""
    accuracy, margins = greedy_accuracy(config, tensors, encode, eos_id, count, seed)
    ordered = sorted(margins)
    line = (f"held-out greedy accuracy {accuracy:.1%} of {count}; answer-token margin (top-1 minus top-2 logprob) "
            f"min {ordered[0]:.2f} / p1 {ordered[len(ordered) // 100]:.2f} / median {ordered[len(ordered) // 2]:.2f}")
    if config["model_type"] == "qwen3_moe":
        def broken(part):
            return greedy_accuracy(config, without(tensors, part, seed), encode, eos_id, count, seed)[0]

        experts = " / ".join(f"{broken(f'expert:{e}'):.1%}" for e in range(config["num_experts"]))
        line += f"; with random routers {broken('routers'):.1%}; without one expert (0, 1, ...): {experts}"
    return line


def save(tensors: dict, path: Path) -> None:
    from safetensors.numpy import save_file

    save_file(dict(sorted(tensors.items())), str(path), metadata={"format": "pt"})
