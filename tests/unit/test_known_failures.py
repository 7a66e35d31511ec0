"""Known engine failures: which cases a declaration covers, what evidence identifies it, and the report hook that
turns exactly that failure (and nothing else) into an expected failure."""

import pytest
from planning_helpers import make_case

from llmconform.engines.known_failures import declared, recognise
from llmconform.engines.versions import in_range

pytest_plugins = ["pytester"]

SEGFAULT = ("vllm-qwen3moe-tiny-tp2ep2: engine died while serving: the api process on node 0 exited with code 1\n"
            "  diagnosis: vLLM-CPU's fused-MoE kernel crashed under expert parallelism (vllm-project/vllm#57837)")


def cpu_case(layout, version="0.32.0", **kwargs):
    return make_case("vllm", layout, source="factory:qwen3moe-tiny", version=version, device="cpu", **kwargs)


@pytest.mark.parametrize("version, versions, inside", [
    ("0.32.0", ">=0.32", True), ("0.32.0+cpu", ">=0.32,<0.33", True), ("0.33.1", ">=0.32,<0.33", False),
    ("0.31.9", ">=0.32", False), ("v1.2", ">=1.2", True), ("0.32.0rc1", ">=0.32", True),
    ("0.5.16", ">=0.5.22", False), (None, ">=0.32", True), ("0.32.0", "", True)])
def test_version_ranges(version, versions, inside):
    assert in_range(version, versions) is inside


def test_expert_parallel_segfault_is_declared_only_for_vllm_cpu_ep():
    assert [f.source for f in declared(cpu_case("tp2ep"), "0.32.0")] == ["vllm-project/vllm#57837"]
    assert declared(cpu_case("tp2"), "0.32.0") == []
    assert declared(cpu_case("tp2ep"), "0.31.0") == []
    gpu = make_case("vllm", "tp2ep", source="factory:qwen3moe-tiny", version="0.32.0", device="cuda")
    assert declared(gpu, "0.32.0") == []


def test_the_probed_server_version_wins_over_the_planned_one():
    assert declared(cpu_case("tp2ep", version="0.31.0"), "0.32.0+cpu")


def test_only_the_declared_evidence_is_recognised():
    case = cpu_case("tp2ep")
    assert recognise(case, None, SEGFAULT).source == "vllm-project/vllm#57837"
    assert recognise(case, None, "POST /v1/completions answered 400: max_tokens too large") is None


def test_pipeline_parallel_eager_failure_needs_the_eager_flag():
    eager = cpu_case("pp2", args={"enforce-eager": True})
    evidence = "AssertionError: assert self.intermediate_tensors is not None"
    assert recognise(eager, None, evidence).condition() == "pipeline parallelism and --enforce-eager"
    assert recognise(cpu_case("pp2"), None, evidence) is None


def test_description_names_versions_device_symptom_and_issue():
    text = declared(cpu_case("tp2ep"), None)[0].describe()
    assert text.startswith("known engine failure of vllm >=0.32 on cpu with expert parallelism")
    assert "segfaults" in text and "vllm-project/vllm#57837" in text


# The hook alone, without the llmconform plugin (which would parametrize `llm` itself when installed); the test
# module already imported the hook's module, so pytest cannot (and need not) rewrite its asserts.
PLUGIN = ("-p", "no:llmconform", "-p", "llmconform.engines.known_failures",
          "-W", "ignore::pytest.PytestAssertRewriteWarning")
CONFTEST = """
import pytest
from llmconform.config.case import Case, EngineSettings, ModelSpec
from llmconform.config.layout import parse


def case(layout):
    return Case(engine=EngineSettings("vllm", ("vllm", "serve"), "0.32.0", device="cpu"),
                model=ModelSpec("moe", "factory:qwen3moe-tiny", "/m", "moe"), layout=parse(layout))


def pytest_generate_tests(metafunc):
    if "llm" in metafunc.fixturenames:
        metafunc.parametrize("llm", [case("tp2ep"), case("tp2")], ids=["ep", "tp"])


@pytest.fixture
def dies_afterwards(llm):
    yield
    pytest.fail(SEGFAULT, pytrace=False)
""".replace("SEGFAULT", repr(SEGFAULT))


def test_hook_turns_only_the_declared_failure_into_xfail(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(f"""
        def test_engine_crash(llm):
            raise RuntimeError({SEGFAULT!r})

        def test_wrong_answer(llm):
            assert 1 + 1 == 3

        def test_fine(llm):
            pass
    """)
    result = pytester.runpytest(*PLUGIN, "-rxf")
    # ep: crash -> xfail, wrong answer stays a failure, fine passes; tp (no declaration): crash and wrong fail
    result.assert_outcomes(xfailed=1, failed=3, passed=2)
    result.stdout.fnmatch_lines(["XFAIL*test_engine_crash[[]ep[]]*known engine failure of vllm*#57837*"])


def test_dead_server_reported_again_at_teardown_counts_once(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(f"""
        def test_engine_crash(llm, dies_afterwards):
            raise RuntimeError({SEGFAULT!r})

        def test_first_request_ok_then_dies(llm, dies_afterwards):
            pass
    """)
    result = pytester.runpytest(*PLUGIN)
    # ep: the crash is one xfail (its teardown re-report is absorbed); a test that passed before the server died is
    # a pass plus an xfailed teardown. tp (nothing declared): a failure, a pass, and two teardown errors.
    result.assert_outcomes(xfailed=2, passed=2, failed=1, errors=2)


def test_sglang_float32_start_failure_is_declared_for_cuda_only():
    evidence = ("sglang-qwen2-tiny-fp32-tp1: engine failed during startup stage 'cuda-graphs': the api process on "
                "node 0 exited with code -9\n  RuntimeError: rmsnorm(at::Tensor&, at::Tensor&, at::Tensor&, double, "
                "bool)::<lambda()> failed to dispatch data type Float")
    gpu = make_case("sglang", "tp1", source="factory:qwen2-tiny", version="0.5.16", device="cuda",
                    args={"dtype": "float32"})
    assert "rmsnorm dispatches fp16/bf16 only" in recognise(gpu, None, evidence).describe()
    assert recognise(gpu, None, "RuntimeError: CUDA out of memory") is None
    assert recognise(gpu, "0.5.17", evidence) is None  # seen on 0.5.16 only: a later release is judged afresh
