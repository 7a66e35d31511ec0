"""Oracle models (llmconform/oracle.py): the cache key covers the whole training recipe, and training is
reproducible: the same recipe trained twice, in fresh processes, gives byte-identical safetensors."""

import dataclasses
import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from llmconform import models
from llmconform.accuracy import oracle

ROOT = Path(__file__).resolve().parents[2]
# setup.sh trains the oracles with the engine's python (it has torch; the framework's environment does not).
ENGINE_PYTHON = ROOT / ".engines" / "vllm-cpu" / "bin" / "python"
ORACLES = ("qwen2-oracle", "qwen3moe-oracle")
REDUCED_STEPS = 10

# Makes each oracle with a reduced recipe (fewer steps; everything else as the preset trains) through the factory's
# own path (models.make: tokenizer, training, saving; not the accuracy report it prints after saving, which takes
# longer than the training itself), and the MoE oracle once more with another seed.
MAKE_REDUCED = f"""
import dataclasses, sys
from pathlib import Path
from llmconform import models
out = Path(sys.argv[1])
for name in {ORACLES!r}:
    p = models.preset(name)
    models.make(dataclasses.replace(p, training={{**p.training, "steps": {REDUCED_STEPS}}}), out / name, evaluate=False)
p = models.preset("qwen3moe-oracle")
other = {{**p.training, "steps": {REDUCED_STEPS}, "seed": models.training_recipe(p).seed + 1}}
models.make(dataclasses.replace(p, training=other), out / "other-seed", evaluate=False)
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ORACLES)
def test_every_training_recipe_field_is_part_of_the_cache_key(name):
    p = models.preset(name)
    recipe = models.training_recipe(p)
    for field in dataclasses.fields(recipe):
        value = getattr(recipe, field.name)
        changed = dataclasses.replace(p, training={**p.training, field.name: value * 2 if value else 1})
        assert models.fingerprint(changed) != models.fingerprint(p), field.name
    assert models.fingerprint(dataclasses.replace(p, training=dict(p.training))) == models.fingerprint(p)


def test_the_moe_oracle_trains_with_its_own_recipe():
    """The MoE oracle's recipe is not the dense one's (made to train in minutes on 2 cores), and the factory
    trains it with that recipe, not the defaults."""
    dense, moe = (models.training_recipe(models.preset(n)) for n in ORACLES)
    assert moe != dense
    assert moe == oracle.TrainingRecipe(**models.preset("qwen3moe-oracle").training)


def test_without_breaks_only_the_named_part():
    rng = np.random.default_rng(0)
    tensors = {name: rng.normal(0, 0.1, (4, 8)).astype(np.float32) for name in (
        "model.layers.0.mlp.gate.weight", "model.layers.1.mlp.gate.weight",
        "model.layers.0.mlp.experts.1.down_proj.weight", "model.layers.0.mlp.experts.1.up_proj.weight",
        "model.layers.0.mlp.experts.2.down_proj.weight", "model.layers.0.self_attn.q_proj.weight")}
    routers = oracle.without(tensors, "routers", seed=1)
    changed = {n for n in tensors if not np.array_equal(tensors[n], routers[n])}
    assert changed == {"model.layers.0.mlp.gate.weight", "model.layers.1.mlp.gate.weight"}
    assert 0.05 < float(routers["model.layers.0.mlp.gate.weight"].std()) < 0.2  # the same scale, other values
    expert = oracle.without(tensors, "expert:1")
    changed = {n for n in tensors if not np.array_equal(tensors[n], expert[n])}
    assert changed == {"model.layers.0.mlp.experts.1.down_proj.weight"}
    assert not expert["model.layers.0.mlp.experts.1.down_proj.weight"].any()


def _train_reduced(out: Path, threads: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MKL_", "OMP_"))}
    # Different thread settings in the two runs: the recipe pins one thread and oracle._torch pins MKL's code path
    # itself, so the result must not depend on the caller's environment.
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    run = subprocess.run([str(ENGINE_PYTHON), "-c", MAKE_REDUCED, str(out)], cwd=out.parent, env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]


def test_training_twice_gives_byte_identical_weights(tmp_path):
    if not ENGINE_PYTHON.exists():
        pytest.skip(f"{ENGINE_PYTHON} is absent: training needs the torch of the vLLM-CPU environment "
                    f"(scripts/setup.sh installs it)")
    first, second = tmp_path / "first", tmp_path / "second"
    _train_reduced(first, "1")
    _train_reduced(second, "2")
    for name in ORACLES:
        assert sha256(first / name / "model.safetensors") == sha256(second / name / "model.safetensors"), name
        assert (first / name / "tokenizer.json").read_bytes() == (second / name / "tokenizer.json").read_bytes()
    # The hash sees training: another seed makes other weights.
    assert sha256(first / "other-seed" / "model.safetensors") != sha256(first / "qwen3moe-oracle" / "model.safetensors")
