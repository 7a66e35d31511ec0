"""The `compare:` section, comparator policies, reference choice, the outputs store and the equivalence report."""

import json

import pytest
from planning_helpers import make_case

from llmconform.config.compare import CompareSection, Policy, parse_compare_section
from llmconform.equivalence import policy as equivalence
from llmconform.equivalence.comparators import Generation, LogprobClose, Step
from llmconform.equivalence.policy import LayoutOutputs, OutputStore, choose_reference, policy_for
from llmconform.errors import MatrixError, UserError
from llmconform.reports import equivalence_section
from llmconform.reports.report_dir import ReportDir


def fail(path, problem, allowed):
    raise MatrixError("m.yaml", path, problem, allowed)


def test_full_section_is_accepted_and_resolved_per_model_and_dtype():
    section = parse_compare_section({
        "reference": "tp2", "comparator": "auto", "top_k": 8, "max_logprob_gap": 0.5, "max_tokens": 32,
        "samples": 400, "false_alarm_rate": 0.01, "repeats": 5, "batch": 8, "deterministic": True,
        "dtypes": {"bf16": {"comparator": "logprob-delta", "max_logprob_delta": 0.2}},
        "models": {"moe": {"comparator": "logprob-close", "top_k": 10}},
    }, fail, model_ids=("dense", "moe"))
    dense_bf16 = section.policy("dense", "bfloat16")
    assert dense_bf16.comparator == "logprob-delta" and dense_bf16.max_logprob_delta == 0.2
    assert dense_bf16.why == "compare.dtypes.bfloat16.comparator"
    assert dense_bf16.reference == "tp2" and dense_bf16.top_k == 8 and dense_bf16.samples == 400
    moe = section.policy("moe", "bf16")
    assert moe.comparator == "logprob-close" and moe.top_k == 10 and moe.why == "compare.models.moe.comparator"
    assert equivalence.comparator_for(moe) == LogprobClose(top_k=10, max_gap=0.5)


@pytest.mark.parametrize("dtype, comparator", [("float32", "exact"), ("fp32", "exact"), ("bfloat16", "logprob-close"),
                                               ("float16", "logprob-close"), ("auto", "logprob-close")])
def test_auto_is_exact_only_where_the_dtype_allows(dtype, comparator):
    policy = CompareSection().policy("m", dtype)
    assert policy.comparator == comparator and policy.why.startswith("auto: dtype")


@pytest.mark.parametrize("section, path, allowed", [
    ({"comparator": "roughly"}, "compare.comparator", "auto, exact, logprob-close, logprob-delta"),
    ({"top_k": 0}, "compare.top_k", None),
    ({"top_k": True}, "compare.top_k", None),
    ({"max_logprob_gap": -1}, "compare.max_logprob_gap", None),
    ({"false_alarm_rate": 0.7}, "compare.false_alarm_rate", None),
    ({"samples": 5}, "compare.samples", None),
    ({"deterministic": "yes"}, "compare.deterministic", None),
    ({"reference": "tp2xx"}, "compare.reference", "a layout such as tp1, tp2, tp4pp2"),
    ({"treshold": 1}, "compare.treshold", None),
    ({"models": {"nope": {}}}, "compare.models.nope", "dense"),
    ({"models": {"dense": {"samples": 10}}}, "compare.models.dense.samples", None),
    ({"dtypes": {"int3": {}}}, "compare.dtypes.int3", None),
    ([], "compare", None),
])
def test_bad_sections_name_the_key_and_what_is_allowed(section, path, allowed):
    with pytest.raises(MatrixError) as error:
        parse_compare_section(section, fail, model_ids=("dense",))
    assert error.value.path == path
    if allowed:
        assert allowed in error.value.allowed


def test_policy_of_a_case_comes_from_its_dtype_and_section():
    assert policy_for(make_case(args={"dtype": "float32"})).comparator == "exact"
    assert policy_for(make_case(args={"dtype": "bfloat16"})).comparator == "logprob-close"
    case = make_case(args={"dtype": "float32"})
    bad = type(case)(**{**case.__dict__, "compare": {"comparator": "maybe"}})
    with pytest.raises(UserError, match=r"compare\.comparator"):
        policy_for(bad)


def cases(*layouts, model="m", engine="vllm"):
    return [make_case(engine, layout, served_name=model) for layout in layouts]


def test_reference_defaults_to_tp1_of_the_same_engine_and_model():
    group = cases("tp2", "tp1", "pp2") + cases("tp1", model="other") + cases("tp1", engine="sglang")
    choice = choose_reference(group[0], group, Policy(), unfit={})
    assert choice.case is group[1] and choice.why == "tp1"


def test_reference_is_the_smallest_runnable_layout_without_tp1():
    group = cases("tp4", "tp2", "pp2")
    assert choose_reference(group[0], group, Policy(), unfit={}).case is group[1]  # tp2 comes before pp2
    assert choose_reference(group[0], group, Policy(), unfit={group[1].id: "no GPUs"}).case is group[2]


def test_named_reference_must_be_in_the_session():
    group = cases("tp1", "tp2")
    assert choose_reference(group[0], group, Policy(reference="tp2"), unfit={}).case is group[1]
    missing = choose_reference(group[0], group, Policy(reference="tp4"), unfit={})
    assert missing.case is None and "tp4" in missing.why and "tp1, tp2" in missing.why


def outputs(run="r1", case_id="vllm-m-tp1"):
    step = Step("id:5", -0.5, (("id:5", -0.5), ("id:6", -1.0)))
    answer = Generation("p", "x", ("id:5",), (step,), "length", {"prompt_tokens": 2}, "token ids", (1, 2))
    return LayoutOutputs(case_id=case_id, engine="vllm", engine_version="0.32.0", model="m", layout="tp1",
                         dtype="float32", run=run, generations={"completions-text": [answer]},
                         first_tokens={"p": {"id:5": 3}})


def test_store_round_trips_and_ignores_other_runs(tmp_path):
    OutputStore(ReportDir(tmp_path), "r1").save(outputs())
    assert OutputStore(ReportDir(tmp_path), "r1").load("vllm-m-tp1") == outputs()
    assert OutputStore(ReportDir(tmp_path), "r2").load("vllm-m-tp1") is None  # left by an earlier run in a reused dir
    assert OutputStore(ReportDir(tmp_path), "r1").load("vllm-m-tp2") is None


def test_determinism_switch_detection():
    vllm = equivalence.determinism_switch("vllm")
    assert vllm.is_on(make_case(env={"VLLM_BATCH_INVARIANT": "1"}))
    assert not vllm.is_on(make_case())
    sglang = equivalence.determinism_switch("sglang")
    assert sglang.is_on(make_case("sglang", args={"enable-deterministic-inference": True}))
    assert equivalence.determinism_switch("unknown") is None


def result(layout, probe, outcome, verdict=None, role=None, **extra):
    prop = {"engine": "vllm", "model": "m", "served_model": "m", "layout": layout, "reference": "tp1", "probe": probe,
            "comparator": "exact", "why": "auto: dtype float32", "verdict": verdict}
    if role:
        prop["role"] = role
    return {"nodeid": f"suites/test_equivalence.py::t[{layout}-{probe}]", "outcome": outcome,
            "properties": {"equivalence": prop, "llm": {"id": f"vllm-m-{layout}"}}, **extra}


def test_report_table_makes_divergence_and_known_failures_unmistakable(tmp_path):
    diverged = {"outcome": "diverged", "cell": "DIVERGED on 1/6", "explain": "tp2 vs tp1 ...\n- prompt 'p': DIVERGED"}
    results = [
        result("tp1", "completions-text", "skipped", role="reference", skip_reason="tp1 is the reference layout"),
        result("tp2", "completions-text", "failed", diverged, error="AssertionError"),
        result("pp2", "completions-text", "passed", {"outcome": "identical", "cell": "identical 6/6"}),
        result("tp2ep2", "completions-text", "skipped",
               xfail_reason="known engine failure of vllm >=0.32 on cpu with expert parallelism: segfault"),
        {"nodeid": "suites/test_other.py::x", "outcome": "passed", "properties": {}},
    ]
    lines = equivalence_section.write_report(ReportDir(tmp_path), results)
    markdown = (tmp_path / "equivalence.md").read_text()
    assert "| tp1 (reference) | reference |" in markdown
    assert "| tp2 | **DIVERGED on 1/6** |" in markdown
    assert "| pp2 | identical 6/6 |" in markdown
    assert "| tp2ep2 | KNOWN ENGINE FAILURE (below) |" in markdown
    assert "- **tp2ep2**: known engine failure of vllm >=0.32 on cpu with expert parallelism: segfault" in markdown
    assert "- prompt 'p': DIVERGED" in markdown  # the details, not just the cell
    assert lines[0] == ("equivalence vllm/m vs tp1 (exact): tp2 FAILED, pp2 identical, "
                        "tp2ep2 known engine failure")
    document = json.loads((tmp_path / "equivalence.json").read_text())
    assert document["groups"][0]["layouts"]["tp2"]["completions-text"]["status"] == "FAILED"


def test_no_equivalence_results_no_report(tmp_path):
    unrelated = [{"nodeid": "x", "outcome": "passed", "properties": {}}]
    assert equivalence_section.write_report(ReportDir(tmp_path), unrelated) == []
    assert not (tmp_path / "equivalence.md").exists()


def test_a_layout_whose_server_never_started_still_gets_a_row(tmp_path):
    record = ReportDir(tmp_path).server("vllm-m-pp4").record
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"engine": "vllm", "served_model": "m", "layout": "pp4", "stage": "load-weights",
                                  "error": "vllm-m-pp4: engine failed\n  diagnosis: GPU out of memory: lower ..."}))
    answered = result("tp1", "probe set", "passed", {"outcome": "answered", "cell": "ok"})
    equivalence_section.write_report(ReportDir(tmp_path), [answered])
    markdown = (tmp_path / "equivalence.md").read_text()
    assert "| pp4 | **SERVER FAILED TO START** (stage load-weights): GPU out of memory: lower ... |" in markdown


def test_the_batch_invariance_control_is_noted_once_not_per_row(tmp_path):
    reason = "VLLM_BATCH_INVARIANT=1 is off: batch variance is allowed, measured and reported, not asserted"
    rows = []
    for layout, shown in (("tp1", "invariant"), ("tp2", "variant (control)"), ("pp2", "invariant")):
        row = result(layout, "batch invariance", "passed", {"outcome": shown.split()[0], "cell": f"{shown} (batch 16)"})
        row["properties"]["equivalence"]["control"] = reason
        rows.append(row)
    equivalence_section.write_report(ReportDir(tmp_path), rows)
    markdown = (tmp_path / "equivalence.md").read_text()
    assert markdown.count(reason) == 1 and "Control, not asserted: **batch invariance**" in markdown
    assert "| tp2 | variant (control) (batch 16) |" in markdown and "XPASS" not in markdown
