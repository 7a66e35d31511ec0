"""`llmconform` command line: plan | run | report | compare | models | bench | check-args | schema."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from llmconform import models
from llmconform.config import matrix as matrices
from llmconform.config import schema as matrix_schema
from llmconform.errors import UserError
from llmconform.redaction import redact_argv, redact_env
from llmconform.reports import regression, regression_page
from llmconform.reports.report_dir import ReportDir
from llmconform.serving import launchers, resources
from llmconform.serving.planner import bind_host_of, placement_on, plan_case


def _target(text: str | None, loaded) -> resources.Hardware | None:
    if text:
        match = re.fullmatch(r"(\d+)x(\d+)", text)
        if not match:
            raise UserError(f"--target must look like NODESxGPUS (e.g. 2x8), got {text!r}")
        return resources.from_target(int(match.group(1)), int(match.group(2)))
    if loaded.target:
        return resources.from_target(loaded.target.nodes, loaded.target.gpus_per_node)
    return None


SHIPPED_SUITES = ["--pyargs", "llmconform.suites"]


class _StopBeforeCollecting:
    """A pytest run that ends once configured: what its conftest.py files and plugins added is registered."""

    @staticmethod
    def pytest_collection(session) -> bool:
        return True  # collection done: nothing collected


def load_extensions(suites: list[str]) -> None:
    """Register the engines, launchers and deviation files that conftest.py files and installed pytest plugins add,
    exactly as `llmconform run` (pytest) from this directory would see them: pytest loads the conftest.py files of
    this directory and its parents up to the rootdir, and the llmconform plugin's pytest_configure calls the
    pytest_llmconform_* hooks (llmconform.pytest.hookspecs); the run stops before collecting anything."""
    import pytest

    # What a conftest prints goes to stderr: stdout is the plan (`plan --json` is read by scripts).
    with contextlib.redirect_stdout(sys.stderr):
        code = pytest.main([*suites, "--collect-only", "--capture=no", "-p", "no:terminal", "-p", "no:cacheprovider"],
                           plugins=[_StopBeforeCollecting()])
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        raise UserError("the conftest.py files and plugins that pytest loads here did not configure (pytest's "
                        "message above)")


def cmd_plan(args) -> int:
    load_extensions(SHIPPED_SUITES)
    loaded = matrices.load(args.matrix)
    hardware = resources.detect()
    target = _target(args.target, loaded)
    results = [plan_case(case, hardware, target=target) for case in loaded.cases]
    if args.json:
        out = []
        for r in results:
            out.append({
                "id": r.case.id, "engine": r.case.engine.name, "engine_version": r.case.engine.version,
                "model": r.case.model.source, "layout": str(r.case.layout), "gpus": r.case.layout.gpus,
                "nodes": r.case.layout.nodes, "runnable_here": r.ok and r.unfit is None, "why_not_here": r.unfit,
                "error": str(r.error) if r.error else None, "advice": r.advice,
                "note": loaded.notes.get(r.case.id), "plan": r.plan.to_dict() if r.plan else None,
                "launch": _launch_lines(r, hardware, target) if r.plan else None,
            })
        json.dump({"matrix": loaded.name, "file": loaded.file, "hardware": _hardware_summary(hardware),
                   "cases": out}, sys.stdout, indent=2)
        print()
    else:
        print(f"matrix {loaded.name} ({loaded.file}): {len(results)} case(s); hardware here: "
              f"{_hardware_summary(hardware)}")
        print()
        print_table([("case", "GPUs", "nodes", "runs here?")] + [
            (r.case.id, str(r.case.layout.gpus), str(r.case.layout.nodes), _runs_here(r)) for r in results])
        for r in results:
            _print_case(r, loaded, hardware, target)
    return 2 if any(not r.ok for r in results) else 0


def _hardware_summary(hw: resources.Hardware) -> str:
    node = hw.nodes[0]
    gpu = f"{len(node.gpus)} GPU(s)" + (f" ({node.gpu_model})" if node.gpu_model else "")
    return f"{len(hw.nodes)} node(s) from {hw.source}, {gpu} and {len(node.cpus)} CPU core(s) per node"


def _launch_lines(r, hardware, target) -> list[str] | None:
    """The commands the case's launcher runs in place of each process's env and argv (e.g. srun lines), or None
    where it runs them as they are."""
    launcher = launchers.get(r.case.launcher)
    placement = placement_on(target if r.unfit and target else hardware, r.case, bind_host_of(r.case))
    lines = [launcher.command_line(p, placement, r.case) for p in r.plan.processes]
    return None if all(line is None for line in lines) else [shlex.join(redact_argv(line)) for line in lines]


def _runs_here(r) -> str:
    if r.error:
        return "INVALID (see below)"
    return "yes" if r.unfit is None else f"no: {r.unfit}"


def _print_case(r, loaded, hardware, target) -> None:
    layout = r.case.layout
    print()
    print(f"{r.case.id}: {layout.gpus} {'CPU rank' if r.case.engine.device == 'cpu' else 'GPU'}(s) on "
          f"{layout.nodes} node(s), {r.case.engine.name} {r.case.engine.version}")
    if r.case.id in loaded.notes:
        print(f"  note: {loaded.notes[r.case.id]}")
    print(f"  INVALID: {r.error}" if r.error else f"  runs here: {_runs_here(r)}")
    for line in r.advice:
        print(f"  advice: {line}")
    if not r.plan:
        return
    for note in r.plan.notes:
        print(f"  engine note: {note}")
    for name, text in r.plan.files.items():
        print(f"  file RUN_DIR/{name}:")
        for line in text.splitlines():
            print(f"    {line}")
    launch = _launch_lines(r, hardware, target)
    for i, process in enumerate(r.plan.processes):
        span = f"nodes {process.node}..{process.node + process.nodes - 1}" if process.nodes > 1 else \
            f"node {process.node}"
        tasks = f", {process.tasks_per_node} MPI ranks per node" if process.tasks_per_node > 1 else ""
        print(f"  {span} [{process.role}{tasks}]")
        if launch:  # the launcher's line carries the env and the engine's argv: print it alone, not them twice
            print(f"    $ {launch[i]}")
            continue
        print(f"    env: {' '.join(f'{k}={v}' for k, v in sorted(redact_env(process.env).items()))}")
        print(f"    $ {shlex.join(redact_argv(process.argv))}")
    print(f"  ready when: GET {' and '.join(r.plan.ready_routes)} on {r.plan.base_url} "
          f"(model id {r.plan.served_model!r})")


def cmd_models(args) -> int:
    if args.action == "list":
        rows = [("model", "architecture", "where")]
        for preset in models.PRESETS.values():
            where = models.location(preset.name)
            made = (str(where) if (where / "config.json").is_file()
                    else f"not made (llmconform models make {preset.name})")
            rows.append((f"{'factory' if preset.weights else 'shape'}:{preset.name}", preset.config["architectures"][0],
                         made))
        print_table(rows)
        return 0
    names = list(models.PRESETS) if args.all else args.names
    if not names:
        raise UserError("name the presets to make, or pass --all (see `llmconform models list`)")
    for name in names:
        if name not in models.PRESETS:
            raise UserError(f"unknown model preset {name!r} (known: {', '.join(models.PRESETS)})")
        print(models.ensure(name))
    return 0


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Rows as left-aligned columns, the first row the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def cmd_run(args) -> int:
    """The suites against a matrix: `pytest --pyargs llmconform.suites --matrix MATRIX [pytest options]`."""
    import pytest

    suites = [args.suites] if args.suites else SHIPPED_SUITES
    return int(pytest.main([*suites, "--matrix", args.matrix, *args.pytest_args]))


def cmd_report(args) -> int:
    for line in ReportDir.existing(Path(args.report_dir)).build():
        print(line)
    return 0


def cmd_compare(args) -> int:
    comparison = regression.compare_runs(Path(args.baseline), Path(args.candidate),
                                         tuple(args.perf) or regression.DEFAULT_PERF_TOLERANCES, args.comparator)
    out = ReportDir(Path(args.out)) if args.out else comparison.candidate
    try:
        out.path.mkdir(parents=True, exist_ok=True)
        out.regression_page.write_text(comparison.to_markdown())
        out.regression_json.write_text(json.dumps(comparison.to_dict(), indent=1))
        page = regression_page.write(comparison, out)
    except OSError as error:
        raise UserError(f"--out {out}: cannot write the reports there ({error.strerror})") from None
    print(comparison.to_markdown())
    print(f"written: {out.regression_page}, {out.regression_json}, {page}")
    return 1 if comparison.regressions else 0


def cmd_check_args(args) -> int:
    from llmconform.serving import argcheck

    files = args.matrix or sorted(str(p) for p in (Path(__file__).resolve().parent.parent / "matrices").glob("*.yaml"))
    findings = argcheck.check(files, args.vllm_python, args.sglang_args, args.trtllm_args)
    for finding in findings:
        print(finding)
    engines_checked = "vllm, sglang, trtllm" if args.vllm_python else "sglang, trtllm (no --vllm-python)"
    print(f"{len(findings)} finding(s) over {len(files)} matrices ({engines_checked})")
    return 1 if findings else 0


def cmd_schema(args) -> int:
    print(matrix_schema.text(), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmconform", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="print each case's launch plan; start nothing")
    plan.add_argument("matrix")
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.add_argument("--target", help="plan for NODESxGPUS (e.g. 2x8) instead of the matrix's target")
    plan.set_defaults(func=cmd_plan)
    model = sub.add_parser("models", help="make or list the local model presets")
    model.add_argument("action", choices=("make", "list"))
    model.add_argument("names", nargs="*")
    model.add_argument("--all", action="store_true")
    model.set_defaults(func=cmd_models)
    run = sub.add_parser("run", help="run the suites against a matrix (pytest underneath)")
    run.add_argument("matrix")
    run.add_argument("--suites", help="where the suites are (default: the package's own, llmconform.suites)")
    # any further arguments go to pytest (e.g. -k tp1 -n 2)
    run.set_defaults(func=cmd_run)
    rep = sub.add_parser("report", help="rebuild a run's tables and plots from its results.jsonl")
    rep.add_argument("report_dir")
    rep.set_defaults(func=cmd_report)
    cmp = sub.add_parser("compare", help="regression verdict of a run against a baseline run (exit 1 on regression)")
    cmp.add_argument("baseline", help="report dir of the baseline run (e.g. engine version N)")
    cmp.add_argument("candidate", help="report dir of the candidate run (e.g. engine version N+1)")
    cmp.add_argument("--perf", action="append", default=[], metavar="METRIC:+-X%",
                     help="the smallest change of a serving metric that matters (repeatable; default "
                          + ", ".join(t.replace("%", "%%") for t in regression.DEFAULT_PERF_TOLERANCES)
                          + "); judged against the runs' own variation (bootstrap interval)")
    cmp.add_argument("--comparator", choices=("exact", "logprob-close", "logprob-delta"),
                     help="how greedy outputs are compared (default: the matrix's compare: comparator, else exact "
                          "tokens with |delta logprob| <= compare.max_logprob_delta)")
    cmp.add_argument("--out", help="where regression.md/json/html go (default: the candidate's report dir)")
    cmp.set_defaults(func=cmd_compare)
    chk = sub.add_parser("check-args", help="feed every plan's argv to the engines' own argument parsers "
                                            "(exit 1 when a parsed value differs from the plan)")
    chk.add_argument("--matrix", action="append", help="matrix file (repeatable; default: every matrices/*.yaml)")
    chk.add_argument("--vllm-python", help="Python of a vLLM install whose `vllm serve` parser is used")
    chk.add_argument("--sglang-args", help="SGLang option fixture (scripts/engine-args/sglang_args.py makes one "
                                           "from a wheel; default: the one in llmconform/engines/engine_args)")
    chk.add_argument("--trtllm-args", help="trtllm-serve option fixture (scripts/engine-args/trtllm_args.py)")
    chk.set_defaults(func=cmd_check_args)
    schema = sub.add_parser("schema", help="print the matrix files' JSON Schema (for editors: yaml-language-server's "
                                           "$schema)")
    schema.set_defaults(func=cmd_schema)
    # `bench` has its own parser (llmconform.perf.bench); listed here for --help only.
    sub.add_parser("bench", help="load a running server with a matrix's workloads and floors (run), find its "
                                 "goodput capacity (capacity), or compare with `vllm bench serve` (compare-vllm)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["bench"]:
            from llmconform.perf import bench

            return bench.main(argv[1:])
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if args.command == "run":
            args.pytest_args = extra
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return args.func(args)
    except UserError as error:
        print(f"llmconform: error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:  # a path the user gave that cannot be read or written
        where = f"{error.filename}: " if error.filename else ""
        print(f"llmconform: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
