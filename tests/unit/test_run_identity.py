"""What a run records about itself: the engine interpreter's torch/CUDA, release matching, deviations in force."""

import sys

from llmconform.engines import deviations
from llmconform.reports import run_identity
from llmconform.reports.report_dir import ReportDir


def test_engine_runtime_reads_torch_and_cuda_of_the_engines_interpreter_without_importing_torch(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text("raise ImportError('importing torch is not needed')\n")
    (site / "torch" / "version.py").write_text("__version__ = '2.8.0+cu128'\ncuda: Optional[str] = '12.8'\n")
    (site / "torch-2.8.0+cu128.dist-info").mkdir()
    (site / "torch-2.8.0+cu128.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\n"
                                                                   "Version: 2.8.0+cu128\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    script = tmp_path / "vllm"
    script.write_text(f"#!{sys.executable}\nprint('a console script')\n")
    script.chmod(0o755)
    assert run_identity.engine_runtime(str(script)) == {"torch": "2.8.0+cu128", "cuda": "12.8"}
    assert run_identity.engine_runtime(sys.executable)["torch"] == "2.8.0+cu128"
    shell = tmp_path / "serve.sh"
    shell.write_text("#!/bin/sh\nexit 0\n")
    assert run_identity.engine_runtime(str(shell)) is None  # not a Python program: nothing to tell
    assert run_identity.engine_runtime(str(tmp_path / "missing")) is None


def test_a_matrix_version_names_a_release_or_a_series():
    assert run_identity.same_release("0.32.0+cpu", "0.32.0")
    assert run_identity.same_release("0.32.1", "0.32")
    assert not run_identity.same_release("0.25.1", "0.26.0")


def test_the_run_records_the_deviations_in_force_and_compare_reads_them_back(tmp_path):
    extra = tmp_path / "mine.yaml"
    extra.write_text("- {engine: vllm, versions: '<0.32', check: test_x, match: boom, reason: mine}\n")
    identity = run_identity.describe_here(["pytest", "suites"], [deviations.DEFAULT_FILE, extra])
    run_identity.write(ReportDir(tmp_path), identity)
    loaded = run_identity.load(ReportDir(tmp_path))
    assert loaded["argv"] == ["pytest", "suites"] and loaded["servers"] == {}
    declared = run_identity.declared_deviations(loaded)
    assert declared[-1] == deviations.Deviation("vllm", "<0.32", "test_x", "boom", "mine")
    assert declared[:-1] == deviations.load(deviations.DEFAULT_FILE)
    assert run_identity.declared_deviations({"servers": {}}) is None  # a run from before run.json
