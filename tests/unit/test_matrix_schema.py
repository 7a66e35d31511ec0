"""The published JSON Schema of matrix files (llmconform/config/matrix.schema.json) and the validator's messages."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from llmconform import engines
from llmconform.cli import main
from llmconform.config import matrix, schema
from llmconform.config.compare import DTYPES
from llmconform.equivalence.comparators import COMPARATORS
from llmconform.errors import MatrixError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "matrices").glob("*.yaml"))
BASE = {"engines": {"vllm": {}}, "models": {"m": {"source": "factory:qwen2-tiny"}}, "layouts": ["tp1"]}


def test_the_schema_is_a_valid_draft_2020_12_schema_with_a_description_per_key():
    published = schema.schema()
    jsonschema.Draft202012Validator.check_schema(published)
    assert published["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    undocumented = [key for key, sub in published["properties"].items() if "description" not in sub
                    and "description" not in published["$defs"].get(sub.get("$ref", "#/$defs/").split("/")[-1], {})]
    assert undocumented == []


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_matrix_validates_against_the_published_schema(path):
    jsonschema.Draft202012Validator(schema.schema()).validate(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize("data, path, problem", [
    ({**BASE, "compare": {"comparatr": "exact"}}, "compare.comparatr", "unknown key; did you mean 'comparator'?"),
    ({**BASE, "cases": [{"engine": "vllm", "model": "m", "layuot": "tp2"}]}, "cases[0].layuot",
     "unknown key; did you mean 'layout'?"),
    ({**BASE, "workloads": [{"name": "w", "input_tokens": 8, "output_tokens": 8, "concurency": [1]}]},
     "workloads[0].concurency", "unknown key; did you mean 'concurrency'?"),
    ({**BASE, "engines": {"vlm": {}}}, "engines.vlm", "unknown key; did you mean 'vllm'?"),
    ({**BASE, "compare": {"dtypes": {"bfloat1": {}}}}, "compare.dtypes.bfloat1",
     "unknown key; did you mean 'bfloat16'?"),
])
def test_a_typoed_key_names_the_nearest_allowed_key(data, path, problem):
    with pytest.raises(MatrixError) as caught:
        matrix.parse(data, file="m.yaml")
    assert (caught.value.path, caught.value.problem) == (path, problem)


@pytest.mark.parametrize("data, path, problem", [
    ({**BASE, "engines": {"vllm": {"args": ["--dtype", "float32"]}}}, "engines.vllm.args",
     "expected a mapping, got a list ['--dtype', 'float32']"),
    ({**BASE, "layouts": "tp1"}, "layouts", "expected a list of layouts, got 'tp1'"),
    ({**BASE, "compare": {"top_k": 50}}, "compare.top_k", "expected an integer from 1 to 20, got 50"),
    ({**BASE, "compare": {"deterministic": "yes"}}, "compare.deterministic",
     "expected a boolean (true or false), got 'yes'"),
    ({**BASE, "accuracy": {"models": {"m": {"alpha": 1}}}}, "accuracy.models.m.alpha",
     "expected a number > 0 and < 1, got 1"),
    ({**BASE, "workloads": [{"name": "w", "input_tokens": "8", "output_tokens": 8, "concurrency": 1}]},
     "workloads[0].input_tokens", "expected an integer >= 1, got '8'"),
    ({**BASE, "floors": "output_tok_s >= 1"}, "floors",
     "expected a list of floors, got 'output_tok_s >= 1'"),
])
def test_a_wrong_type_or_range_names_what_is_expected_and_what_was_given(data, path, problem):
    with pytest.raises(MatrixError) as caught:
        matrix.parse(data, file="m.yaml")
    assert (caught.value.path, caught.value.problem) == (path, problem)
    assert str(caught.value).startswith(f"m.yaml: {path}: ")


def test_a_section_checked_on_its_own_names_its_path():
    def fail(path, problem, allowed):
        raise MatrixError("command line", path, problem, allowed)

    with pytest.raises(MatrixError) as caught:
        schema.check({"slo": {}}, fail, "workload", "workloads[3]")
    assert (caught.value.path, caught.value.problem) == ("workloads[3].name", "missing required key")


def test_the_names_the_schema_offers_are_the_ones_the_code_knows():
    published = schema.schema()
    compare = published["$defs"]["compare"]["properties"]
    assert compare["comparator"]["enum"] == ["auto", *COMPARATORS]
    assert compare["dtypes"]["propertyNames"]["enum"] == list(DTYPES)
    assert set(published["properties"]["engines"]["properties"]) == set(engines.ENGINES)


def test_llmconform_schema_prints_the_packaged_schema(capsys):
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == schema.schema()
