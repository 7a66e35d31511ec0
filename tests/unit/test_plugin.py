"""The pytest plugin's own surface: the ids it records for tests, and what a user's conftest can add to it (hooks of
llmconform.pytest.hookspecs), run against the suites shipped inside the package."""

import sys
from pathlib import Path
from types import SimpleNamespace

from llmconform.pytest.plugin import SHIPPED_SUITES, result_id

pytest_plugins = ["pytester"]


def test_shipped_suites_keep_one_result_id_wherever_they_are_collected_from(tmp_path):
    # pytest's node id of the same test differs with the rootdir: from the source tree, from an installed package.
    for nodeid in ("llmconform/suites/test_openai_models.py::test_models_list[vllm-m-tp1]",
                   "test_openai_models.py::test_models_list[vllm-m-tp1]"):
        item = SimpleNamespace(path=SHIPPED_SUITES / "test_openai_models.py", nodeid=nodeid)
        assert result_id(item) == "suites/test_openai_models.py::test_models_list[vllm-m-tp1]"
    own = SimpleNamespace(path=tmp_path / "test_mine.py", nodeid="test_mine.py::test_x")
    assert result_id(own) == "test_mine.py::test_x"


# --- extending llmconform from a user's conftest -------------------------------------------------------------------
FAKE_VLLM = Path(__file__).resolve().parents[1] / "fakes" / "vllm_serve.py"
TOY_ENGINE = """
from llmconform.engines.vllm import VLLM


class Toy(VLLM):
    '''A user's engine: vLLM's command line, its own name (a fork, say).'''

    name = "toy"


def pytest_llmconform_engines():
    return [Toy()]
"""


def toy_matrix(pytester) -> Path:
    return pytester.makefile(".yaml", m=f"""
engines:
  toy: {{command: [{sys.executable}, {FAKE_VLLM}], device: cpu, startup_timeout: 120}}
models:
  m: {{source: factory:qwen2-tiny}}
layouts: [tp1]
""")


def test_a_conftest_adds_an_engine_that_the_shipped_suites_run_against(pytester):
    pytester.makeconftest(TOY_ENGINE)
    matrix = toy_matrix(pytester)
    result = pytester.runpytest_subprocess("--pyargs", "llmconform.suites.test_openai_models", "--matrix",
                                           str(matrix), "-m", "toy", "-p", "no:cacheprovider",
                                           "--report-dir", str(pytester.path / "report"))
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*toy-m-tp1*conformance 2/2*"])


def test_without_the_conftest_the_engine_is_unknown(pytester):
    matrix = toy_matrix(pytester)
    result = pytester.runpytest_subprocess("--pyargs", "llmconform.suites.test_openai_models", "--matrix",
                                           str(matrix), "-p", "no:cacheprovider")
    assert result.ret == 2
    result.stderr.fnmatch_lines(["*engines.toy*vllm, sglang, trtllm*"])


def test_a_run_that_uses_none_of_llmconform_imports_little_of_it(pytester):
    # The plugin is loaded into every pytest run of an environment where llmconform is installed (pytest11).
    pytester.makeconftest("""
import sys

HEAVY = ("numpy", "httpx", "llmconform.config.matrix", "llmconform.serving", "llmconform.perf", "llmconform.reports",
         "llmconform.api", "llmconform.equivalence")


def pytest_sessionfinish(session):
    print("imported:", sorted(m for m in sys.modules if m.startswith(HEAVY)))
""")
    pytester.makepyfile("def test_nothing_of_llmconform():\n    pass\n")
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*imported: []"])


def test_a_conftest_adds_a_deviation_file_that_is_in_force(pytester):
    # The fake serves GET /v1/models/{model} correctly, so the conftest's declared deviation for it XPASSes (strict).
    pytester.makefile(".yaml", mine="""
- engine: toy
  check: test_model_retrieve
  match: 'answered HTTP 404'
  reason: "the toy engine has no GET /v1/models/{model} route"
""")
    pytester.makeconftest(TOY_ENGINE + """
from pathlib import Path


def pytest_llmconform_deviations():
    return [Path(__file__).with_name("mine.yaml")]
""")
    matrix = toy_matrix(pytester)
    result = pytester.runpytest_subprocess("--pyargs", "llmconform.suites.test_openai_models", "--matrix",
                                           str(matrix), "-p", "no:cacheprovider", "-rf",
                                           "--report-dir", str(pytester.path / "report"))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*[[]XPASS(strict)[]] the toy engine has no GET*", "*failing: test_model_retrieve"])


def test_llmconform_run_sees_the_engine_a_conftest_here_adds(pytester):
    pytester.makeconftest(TOY_ENGINE)
    matrix = toy_matrix(pytester)
    # The shipped suites (--pyargs): pytest anchors the conftest.py files it loads at the directory it runs in.
    result = pytester.run(sys.executable, "-m", "llmconform.cli", "run", str(matrix), "-k", "test_models_list",
                          "--report-dir", str(pytester.path / "report"))
    assert result.ret == 0, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["*toy-m-tp1*conformance 1/1*"])
