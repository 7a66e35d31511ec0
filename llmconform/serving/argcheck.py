"""Feed every launch plan's argv to the engine's own argument parser and compare what it parsed (tp, pp, dp, ep,
nodes, node rank, model path, port) with what the plan means (`Engine.expected_parse`).

- vLLM: the real `vllm serve` parser of an installed vLLM, run in that install's Python (engine_args/vllm_parse.py).
- SGLang: argparse rebuilt from the option definitions extracted by AST from a wheel (engine_args/sglang-*.json,
  scripts/engine-args/sglang_args.py: server_args.py cannot be imported without a CUDA stack).
- TensorRT-LLM: click rebuilt from the `@click.option`s of serve.py extracted by AST (engine_args/trtllm-*.json,
  scripts/engine-args/trtllm_args.py), and the keys of the extra-options YAML checked against the LLM API fields.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import click
import yaml

from llmconform import engines
from llmconform.config import matrix
from llmconform.engines.trtllm import EXTRA_OPTIONS_FILE
from llmconform.serving import planner, resources

FIXTURES = Path(engines.__file__).parent / "engine_args"
VLLM_PARSE_SCRIPT = FIXTURES / "vllm_parse.py"
TYPES = {"int": int, "float": float, "str": str, "any": str}


@dataclass(frozen=True)
class Finding:
    case_id: str
    node: int
    problem: str

    def __str__(self) -> str:
        return f"{self.case_id} (node {self.node}): {self.problem}"


@dataclass(frozen=True)
class ParseJob:
    """One process of one plan: the arguments after the engine command and what its parser must read from them."""

    case_id: str
    engine: str
    node: int
    args: tuple[str, ...]
    expected: dict
    files: dict


def load_fixture(path: Path | str) -> dict:
    return json.loads(Path(path).read_text())


def default_fixture(engine: str) -> Path:
    found = sorted(FIXTURES.glob(f"{engine}-*.json"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one {engine}-*.json in {FIXTURES}, found {[p.name for p in found]}")
    return found[0]


def jobs(matrix_files) -> list[ParseJob]:
    """A parse job for every process of every case of the matrices, planned on each matrix's target (or 8 GPUs)."""
    out = []
    for file in matrix_files:
        loaded = matrix.load(file)
        target = loaded.target
        hardware = resources.from_target(target.nodes if target else 1, target.gpus_per_node if target else 8)
        for case in loaded.cases:
            nodes = max(case.layout.nodes, len(hardware.nodes))
            on = resources.from_target(nodes, max(case.layout.gpus_per_node, len(hardware.nodes[0].gpus)))
            result = planner.plan_case(case, on)
            if result.plan is None:
                continue  # a layout the engine rejects: `llmconform plan` reports it, there is no argv to parse
            engine = engines.get(case.engine.name)
            for process in result.plan.processes:
                out.append(ParseJob(case.id, case.engine.name, process.node, engine_args(process.argv,
                                    case.engine.command), engine.expected_parse(case, result.plan, process),
                                    result.plan.files))
    return out


def engine_args(argv, command) -> tuple[str, ...]:
    """The arguments after the engine command (a launcher prefix such as trtllm-llmapi-launch may precede it)."""
    command, argv = tuple(command), tuple(argv)
    for start in range(len(argv) - len(command) + 1):
        if argv[start:start + len(command)] == command:
            return argv[start + len(command):]
    raise ValueError(f"the engine command {command} is not in {argv}")


def compare(job: ParseJob, parsed: dict) -> list[Finding]:
    if "error" in parsed:
        return [Finding(job.case_id, job.node, f"the parser rejected the argv: {parsed['error']}")]
    values = parsed["values"]
    return [Finding(job.case_id, job.node, f"{dest}: parsed {values.get(dest)!r}, the plan means {want!r}")
            for dest, want in job.expected.items() if values.get(dest) != want]


# --- vLLM: the installed parser, in the engine's own Python -------------------------------------------------------
def parse_vllm(python: str, batch: list[ParseJob]) -> list[dict]:
    request = {"argvs": [list(j.args) for j in batch], "dests": [list(j.expected) for j in batch]}
    done = subprocess.run([python, str(VLLM_PARSE_SCRIPT)], input=json.dumps(request), capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{python} {VLLM_PARSE_SCRIPT} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


# --- SGLang: argparse from the extracted definitions --------------------------------------------------------------
def sglang_parser(fixture: dict) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sglang serve", add_help=False)  # abbreviations allowed, as in SGLang
    for option in fixture["options"]:
        if option["kind"] == "flag":
            parser.add_argument(*option["flags"], dest=option["dest"], action="store_true",
                                default=option.get("default") or False)
        elif option["kind"] == "bool-optional":
            parser.add_argument(*option["flags"], dest=option["dest"], action=argparse.BooleanOptionalAction,
                                default=option.get("default"))
        else:
            kwargs = {"dest": option["dest"], "type": TYPES[option["type"]], "default": option.get("default")}
            if option.get("nargs") is not None:
                kwargs["nargs"] = option["nargs"]
            if option.get("choices") and option["type"] != "any":
                kwargs["choices"] = option["choices"]
            parser.add_argument(*option["flags"], **kwargs)
    return parser


def parse_argparse(parser: argparse.ArgumentParser, job: ParseJob) -> dict:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            namespace = parser.parse_args(list(job.args))
    except SystemExit:
        return {"error": stderr.getvalue().strip().splitlines()[-1]}
    return {"values": {d: getattr(namespace, d, "<no such option>") for d in job.expected}}


# --- TensorRT-LLM: click from the extracted options ---------------------------------------------------------------
def trtllm_command(fixture: dict) -> click.Command:
    params: list[click.Parameter] = []
    for option in fixture["options"]:
        if "argument" in option:
            params.append(click.Argument([option["argument"]], type=str))
        elif option["kind"] == "flag":
            params.append(click.Option([*option["flags"], option["dest"]], is_flag=True,
                                       default=option.get("default") or False))
        else:
            params.append(click.Option([*option["flags"], option["dest"]], type=TYPES[option["type"]],
                                       multiple=option.get("multiple", False), default=option.get("default")))
    return click.Command("serve", params=params)


def parse_trtllm(command: click.Command, fixture: dict, job: ParseJob) -> dict:
    try:
        context = command.make_context("trtllm-serve", list(job.args))
    except click.ClickException as error:
        return {"error": error.format_message()}
    values = context.params
    options_file = values.get("extra_llm_api_options")
    if options_file:
        text = job.files.get(Path(options_file).name) if Path(options_file).name == EXTRA_OPTIONS_FILE else None
        if text is None:
            return {"error": f"--extra_llm_api_options {options_file} is not a file the plan writes"}
        unknown = sorted(set(yaml.safe_load(text)) - set(fixture["llm_api_keys"]))
        if unknown:
            return {"error": f"extra LLM API options not in the LLM API ({fixture['llm_api_source']}): {unknown}"}
    return {"values": {d: values.get(d, "<no such option>") for d in job.expected}}


def check(matrix_files, vllm_python: str | None, sglang_fixture=None, trtllm_fixture=None) -> list[Finding]:
    """Findings over every case of the matrices; vLLM plans are skipped (not checked) when `vllm_python` is None."""
    all_jobs = jobs(matrix_files)
    sglang = load_fixture(sglang_fixture or default_fixture("sglang"))
    trtllm = load_fixture(trtllm_fixture or default_fixture("trtllm"))
    sglang_argparse, trtllm_click = sglang_parser(sglang), trtllm_command(trtllm)
    vllm_jobs = [j for j in all_jobs if j.engine == "vllm"]
    parsed = dict(zip(map(id, vllm_jobs), parse_vllm(vllm_python, vllm_jobs))) if vllm_python and vllm_jobs else {}
    findings = []
    for job in all_jobs:
        if job.engine == "vllm":
            if not vllm_python:
                continue
            result = parsed[id(job)]
        elif job.engine == "sglang":
            result = parse_argparse(sglang_argparse, job)
        else:
            result = parse_trtllm(trtllm_click, trtllm, job)
        findings.extend(compare(job, result))
    return findings
