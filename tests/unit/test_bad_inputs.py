"""The bad-input corpus (tests/data/bad-inputs/commands.yaml): every input a user can get wrong on the command line
(matrices, deviation lists, earlier runs' report dirs, options) exits 2 with a message naming the file or option
and what is allowed, and never with a traceback."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmconform.cli import main

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "tests" / "data" / "bad-inputs"
COMMANDS = yaml.safe_load((HERE / "commands.yaml").read_text())
USES_AN_ENGINE = "def test_uses_an_engine(llm):\n    pass\n"


def _free_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_the_corpus_is_large_and_every_entry_is_complete():
    matrices = list((HERE / "matrices").glob("*.yaml"))
    assert len(COMMANDS) + len(matrices) >= 40
    for entry in COMMANDS:
        assert set(entry) <= {"name", "run", "env", "expect"} and entry["run"][0] in ("llmconform", "pytest"), entry


@pytest.mark.parametrize("entry", COMMANDS, ids=[e["name"] for e in COMMANDS])
def test_bad_input_exits_2_with_its_message_and_no_traceback(entry, tmp_path, capsys, monkeypatch):
    values = {"here": str(HERE), "root": str(ROOT), "tmp": str(tmp_path), "free": _free_url()}
    argv = [arg.format(**values) for arg in entry["run"]]
    env = {k: v.format(**values) for k, v in entry.get("env", {}).items()}
    expect = entry["expect"].format(**values)
    if argv[0] == "llmconform":
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        try:
            code = main(argv[1:])
        except SystemExit as exit:  # argparse's own usage errors
            code = exit.code
        captured = capsys.readouterr()
        output = captured.out + captured.err
    else:
        suite = tmp_path / "suite"
        suite.mkdir()
        (suite / "test_uses_an_engine.py").write_text(USES_AN_ENGINE)
        run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *argv[1:]], cwd=suite,
                             env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
        code, output = run.returncode, run.stdout + run.stderr
    assert code == 2, output
    assert expect in output, output
    assert "Traceback" not in output and "INTERNALERROR" not in output, output
