import json
import subprocess
import sys
from pathlib import Path

from llmconform.cli import main

ROOT = Path(__file__).resolve().parents[2]
SUITES = ROOT / "llmconform" / "suites"


def test_report_rebuilds_tables_from_results(tmp_path, capsys):
    record = {"nodeid": "suites/test_openai_models.py::test_models_list[vllm-m-tp1]", "when": "call",
              "outcome": "passed", "duration_s": 0.1,
              "properties": {"llm": {"id": "vllm-m-tp1", "engine": "vllm", "engine_version": "0.32.0",
                                     "layout": "tp1", "model": "m"}}}
    (tmp_path / "results.jsonl").write_text(json.dumps(record) + "\n")
    assert main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "conformance.md").is_file()
    assert "conformance" in capsys.readouterr().out


def test_report_of_a_dir_without_results_is_a_user_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "has no results.jsonl" in capsys.readouterr().err


def test_run_skips_cases_that_do_not_fit_with_the_reason(tmp_path, capsys):
    matrix = tmp_path / "gpu.yaml"
    matrix.write_text("engines: {vllm: {command: [python3, -m, vllm.entrypoints.cli.main, serve]}}\n"
                      "models: {q: {source: shape:qwen2.5-7b}}\nlayouts: [tp4]\n")
    code = main(["run", str(matrix), "--suites", str(SUITES / "test_openai_models.py"), "-p",
                 "no:cacheprovider", "-rs", "--report-dir", str(tmp_path / "report"),
                 "-o", "addopts=--strict-markers"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "needs 4 GPUs per node" in out and "skipped" in out
    reasons = [json.loads(line).get("skip_reason") for line in (tmp_path / "report" / "results.jsonl").open()]
    assert reasons and all(r.startswith("vllm-q-tp4: needs 4 GPUs per node") for r in reasons), reasons


def test_run_selects_cases_by_glob_and_rejects_a_glob_without_cases(tmp_path, capsys):
    matrix = tmp_path / "gpu.yaml"
    matrix.write_text("engines: {vllm: {command: [python3, -m, vllm.entrypoints.cli.main, serve]}}\n"
                      "models: {q: {source: shape:qwen2.5-14b}}\nlayouts: [tp4, tp2pp2, tp8]\n")
    common = ["--suites", str(SUITES / "test_openai_models.py"), "-p", "no:cacheprovider", "-rs",
              "--report-dir", str(tmp_path / "report"), "-o", "addopts=--strict-markers"]
    assert main(["run", str(matrix), "--case", "*-tp4", "--case", "*-tp8", *common]) == 0
    out = capsys.readouterr().out
    assert "vllm-q-tp4" in out and "vllm-q-tp8" in out and "vllm-q-tp2pp2" not in out, out
    assert main(["run", str(matrix), "--case", "*-tp16", *common]) == 2
    assert "--case '*-tp16' matches none of the cases: vllm-q-tp4, vllm-q-tp2pp2, vllm-q-tp8" in capsys.readouterr().err


def test_the_cli_imports_without_pytest():
    """setup.sh trains the oracle models with `python -m llmconform.cli` in the engine's environment, which has torch
    but no pytest: nothing the CLI imports at start may need pytest."""
    code = "import sys; sys.modules['pytest'] = None; import llmconform.cli"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def _subcommands(parser) -> dict:
    return next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices


def test_every_command_prints_its_help(capsys):
    """argparse formats help strings with %: an unescaped % in one option's help turns `--help` into a traceback."""
    from llmconform.cli import build_parser
    from llmconform.perf import bench

    commands = [[name] for name in _subcommands(build_parser()) if name != "bench"]
    commands += [["bench", name] for name in _subcommands(bench._parser())]
    for command in commands:
        try:
            main([*command, "--help"])
        except SystemExit as done:
            assert done.code == 0, command
        out = capsys.readouterr().out
        assert out.startswith("usage: "), command
