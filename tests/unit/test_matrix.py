from pathlib import Path

import pytest

from llmconform import models
from llmconform.cli import main
from llmconform.config import matrix
from llmconform.errors import MatrixError, UserError

ROOT = Path(__file__).resolve().parents[2]
BAD = sorted((ROOT / "tests" / "data" / "bad-inputs" / "matrices").glob("*.yaml"))
SHIPPED = sorted((ROOT / "matrices").glob("*.yaml"))


def expected_message(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <message part>'"
    return first[len("# expect: "):]


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_matrix_names_file_path_value_and_allowed(path):
    with pytest.raises(UserError) as caught:
        matrix.load(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert expected_message(path) in message, message


def test_bad_matrix_exits_2_from_the_cli(capsys):
    assert main(["plan", str(ROOT / "tests/data/bad-inputs/matrices/bad-device.yaml")]) == 2
    err = capsys.readouterr().err
    assert "bad-device.yaml: engines.vllm.device: 'gpu' is not allowed (allowed: cuda, cpu)" in err


def test_missing_file_is_a_user_error():
    with pytest.raises(UserError, match=r"/nonexistent\.yaml: no such file"):
        matrix.load("/nonexistent.yaml")


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_matrices_load(path):
    loaded = matrix.load(path)
    assert loaded.cases
    assert len({c.id for c in loaded.cases}) == len(loaded.cases)


def test_expansion_merges_args_env_and_applies_excludes_and_model_overrides(tmp_path):
    data = {
        "engines": {"vllm": {"args": {"dtype": "float32", "max-model-len": 256}, "env": {"A": 1, "B": True}},
                    "sglang": {}},
        "models": {
            "tiny": {"source": "factory:qwen2-tiny", "args": {"max-model-len": 512}, "env": {"A": "2"}},
            "moe": {"source": "factory:qwen3moe-tiny", "layouts": ["tp2ep"], "engines": ["vllm"]},
        },
        "layouts": ["tp1", "tp2"],
        "exclude": [{"engine": "sglang", "layout": "tp2"}],
        "cases": [{"engine": "vllm", "model": "tiny", "layout": "pp2", "args": {"enforce-eager": False},
                   "note": "pp without eager"}],
    }
    loaded = matrix.parse(data, file="m.yaml")
    ids = [c.id for c in loaded.cases]
    assert ids == ["vllm-tiny-tp1", "vllm-tiny-tp2", "sglang-tiny-tp1", "vllm-moe-tp2ep2", "vllm-tiny-pp2"]
    first = loaded.cases[0]
    assert first.args == {"dtype": "float32", "max-model-len": 512}
    assert first.env == {"A": "2", "B": "true"}
    assert first.model.path == str(models.location("qwen2-tiny"))
    assert first.model.config["num_attention_heads"] == 8
    assert loaded.cases[-1].args["enforce-eager"] is False
    assert loaded.notes == {"vllm-tiny-pp2": "pp without eager"}


def test_local_model_directory_reads_its_config(tmp_path):
    (tmp_path / "config.json").write_text('{"num_attention_heads": 12, "num_hidden_layers": 4}')
    loaded = matrix.parse({"engines": {"vllm": {}}, "models": {"mine": {"source": f"path:{tmp_path}"}},
                           "layouts": ["tp4"]})
    assert loaded.cases[0].model.config["num_attention_heads"] == 12
    assert loaded.cases[0].model.path == str(tmp_path.resolve())


def test_hub_id_of_a_known_shape_knows_its_config():
    loaded = matrix.parse({"engines": {"vllm": {}}, "models": {"q": {"source": "hf:Qwen/Qwen3-30B-A3B-FP8"}},
                           "layouts": ["tp8ep"]})
    case = loaded.cases[0]
    assert case.model.path == "Qwen/Qwen3-30B-A3B-FP8" and case.model.config["num_experts"] == 128
    assert not case.model.dummy_weights


def test_deterministic_compare_turns_on_the_engine_switch_and_explicit_values_win():
    data = {"engines": {"vllm": {}, "sglang": {}}, "models": {"m": {"source": "factory:qwen2-tiny"}},
            "layouts": ["tp1"], "compare": {"deterministic": True}}
    cases = {c.engine.name: c for c in matrix.parse(data).cases}
    assert cases["vllm"].env["VLLM_BATCH_INVARIANT"] == "1"
    assert cases["sglang"].args["enable-deterministic-inference"] is True
    data["engines"]["vllm"] = {"env": {"VLLM_BATCH_INVARIANT": "0"}}
    assert matrix.parse(data).cases[0].env["VLLM_BATCH_INVARIANT"] == "0"


def test_bad_compare_and_floor_sections_name_their_path():
    base = {"engines": {"vllm": {}}, "models": {"m": {"source": "factory:qwen2-tiny"}}, "layouts": ["tp1"]}
    with pytest.raises(MatrixError, match=r"compare.models.other: not a model of this matrix \(allowed: m\)"):
        matrix.parse({**base, "compare": {"models": {"other": {"comparator": "exact"}}}})
    with pytest.raises(MatrixError, match=r"floors"):
        matrix.parse({**base, "floors": ["output_tok_s >>> 5"]})


def test_case_globs_keep_only_the_matching_cases():
    loaded = matrix.parse({"engines": {"vllm": {}}, "models": {"m": {"source": "shape:qwen2.5-7b"}},
                           "layouts": ["tp1", "tp2", "tp2pp2", "tp4"]}, default_name="x")
    kept = matrix.select([loaded], ["*-tp1", "vllm-m-tp2"])
    assert [c.id for c in kept[0].cases] == ["vllm-m-tp1", "vllm-m-tp2"]  # a glob is whole-id, not a substring
    assert matrix.select([loaded], []) == [loaded]


def test_a_case_glob_that_matches_nothing_lists_the_cases():
    loaded = matrix.parse({"engines": {"vllm": {}}, "models": {"m": {"source": "shape:qwen2.5-7b"}},
                           "layouts": ["tp1", "tp2"]}, default_name="x")
    with pytest.raises(UserError, match=r"--case 'vllm-m-tp8' matches none of the cases: vllm-m-tp1, vllm-m-tp2"):
        matrix.select([loaded], ["vllm-m-tp1", "vllm-m-tp8"])
