"""Plans of every matrix read back by SGLang's and TensorRT-LLM's argument definitions (extracted from their
source by AST: engine_args/*.json), and plans they must reject."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from llmconform.serving import argcheck

ROOT = Path(__file__).resolve().parents[2]
MATRICES = sorted(str(p) for p in (ROOT / "matrices").glob("*.yaml"))
SGLANG = argcheck.load_fixture(argcheck.default_fixture("sglang"))
TRTLLM = argcheck.load_fixture(argcheck.default_fixture("trtllm"))


@pytest.fixture(scope="module")
def all_jobs():
    return argcheck.jobs(MATRICES)


def findings_of(job):
    if job.engine == "sglang":
        return argcheck.compare(job, argcheck.parse_argparse(argcheck.sglang_parser(SGLANG), job))
    return argcheck.compare(job, argcheck.parse_trtllm(argcheck.trtllm_command(TRTLLM), TRTLLM, job))


def job_of(all_jobs, case_id, node=0):
    return next(j for j in all_jobs if j.case_id == case_id and j.node == node)


def test_every_sglang_and_trtllm_plan_parses_to_its_layout(all_jobs):
    checked = [j for j in all_jobs if j.engine in ("sglang", "trtllm")]
    assert {j.engine for j in checked} == {"sglang", "trtllm"}
    assert any(j.node > 0 for j in checked)  # multi-node ranks are checked too
    assert [f for j in checked for f in findings_of(j)] == []


def test_fixtures_name_the_release_they_came_from():
    assert SGLANG["version"] == "0.5.16" and "server_args.py" in SGLANG["source"]
    assert len(TRTLLM["version"]) == 40 and "serve.py" in TRTLLM["source"]


def test_sglang_parsed_values_are_the_layout(all_jobs):
    job = job_of(all_jobs, "sglang-qwen1.5-moe-a2.7b-tp16ep2@2nodes", node=1)
    parsed = argcheck.parse_argparse(argcheck.sglang_parser(SGLANG), job)["values"]
    assert (parsed["tp_size"], parsed["ep_size"], parsed["nnodes"], parsed["node_rank"]) == (16, 2, 2, 1)


@pytest.mark.parametrize("bad, error", [
    (("--tensor-parallel-sise", "8"), "unrecognized arguments"),  # misspelled
    (("--tp-size",), "expected one argument"),  # wrong arity: no value
    (("--tp-size", "8", "4"), "unrecognized arguments"),  # wrong arity: one too many
    (("--tp-size", "eight"), "invalid int value"),
])
def test_sglang_parser_rejects_a_broken_argv(all_jobs, bad, error):
    job = job_of(all_jobs, "sglang-dense-tp8")
    broken = replace(job, args=(*job.args, *bad))
    (finding,) = findings_of(broken)
    assert error in finding.problem


def test_sglang_prefix_that_means_another_flag_is_a_mismatch(all_jobs):
    # argparse accepts unambiguous prefixes: `--ep 2` is an alias of --ep-size, but `--pp 2` is ambiguous.
    job = job_of(all_jobs, "sglang-dense-tp4pp2")
    args = list(job.args)
    args[args.index("--pp-size")] = "--pp"
    (finding,) = findings_of(replace(job, args=tuple(args)))
    assert "ambiguous option" in finding.problem


def test_a_plan_that_means_another_layout_is_a_mismatch(all_jobs):
    job = job_of(all_jobs, "sglang-dense-tp8")
    (finding,) = findings_of(replace(job, expected={**job.expected, "tp_size": 4}))
    assert "tp_size: parsed 8, the plan means 4" in finding.problem


@pytest.mark.parametrize("bad, error", [
    (("--tp-size", "8"), "No such option"),  # trtllm-serve spells it --tp_size
    (("--ep_size",), "requires an argument"),
])
def test_trtllm_parser_rejects_a_broken_argv(all_jobs, bad, error):
    job = job_of(all_jobs, "trtllm-dense-tp8")
    (finding,) = findings_of(replace(job, args=(*job.args, *bad)))
    assert error in finding.problem


def test_trtllm_extra_options_keys_are_checked(all_jobs):
    job = job_of(all_jobs, "trtllm-dense-72b-tp16@2nodes")
    assert "--extra_llm_api_options" in job.args  # dummy weights go through the YAML
    bad = {name: text.replace("load_format", "load_fromat") for name, text in job.files.items()}
    (finding,) = findings_of(replace(job, files=bad))
    assert "load_fromat" in finding.problem


def test_trtllm_generator_reads_click_options(tmp_path):
    source = tmp_path / "serve.py"
    source.write_text('import click\n@click.command("serve")\n@click.argument("model", type=str)\n'
                      '@click.option("--tensor_parallel_size", "--tp_size", type=int, default=1)\n'
                      '@click.option("--trust_remote_code", is_flag=True, default=False)\n'
                      '@click.option("--config", "--extra_llm_api_options", "extra_llm_api_options", type=str)\n'
                      'def serve(model, **kw):\n    pass\n')
    done = subprocess.run([sys.executable, str(ROOT / "scripts/engine-args/trtllm_args.py"), str(source), "v0"],
                          capture_output=True, text=True, check=True)
    options = json.loads(done.stdout)["options"]
    assert options == [
        {"argument": "model", "dest": "model"},
        {"flags": ["--tensor_parallel_size", "--tp_size"], "dest": "tensor_parallel_size", "default": 1,
         "kind": "value", "type": "int", "multiple": False},
        {"flags": ["--trust_remote_code"], "dest": "trust_remote_code", "default": False, "kind": "flag"},
        {"flags": ["--config", "--extra_llm_api_options"], "dest": "extra_llm_api_options", "default": None,
         "kind": "value", "type": "str", "multiple": False},
    ]
