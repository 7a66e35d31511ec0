"""Floors: parsing (with the errors a matrix author sees), GPU detection, parameter counts, the roofline, and verdicts,
including floors that must fail."""

import json

import pytest
from safetensors import safe_open

from llmconform import models
from llmconform.config.floor_rules import parse_floor, parse_floors
from llmconform.config.workloads import Workload
from llmconform.perf import floors
from llmconform.perf.floors import CaseContext, evaluate
from llmconform.perf.hardware import CaseHardware, detect_hardware
from llmconform.perf.model_size import ModelSizeError, model_bytes, parameter_counts, roofline_ms_per_token

H100 = CaseHardware("cuda", "NVIDIA H100 80GB HBM3", 1)
CPU = CaseHardware("cpu")


class Failed(Exception):
    pass


def fail(path, problem, allowed):
    raise Failed(path, problem, allowed)


# --- parsing -------------------------------------------------------------------------------------------------------

def test_the_four_kinds_parse():
    absolute = parse_floor("output_tok_s >= 4000 at concurrency 64 on H100")
    assert (absolute.kind, absolute.metric, absolute.op, absolute.value) == ("bound", "output_tok_s", ">=", 4000)
    assert (absolute.concurrency, absolute.hardware) == (64, "H100")
    slo = parse_floor("p99_ttft_ms <= 2000")
    assert (slo.kind, slo.op, slo.concurrency, slo.hardware) == ("bound", "<=", None, None)
    roofline = parse_floor("decode >= 60% of roofline on H100-SXM")
    assert (roofline.kind, roofline.metric, roofline.value, roofline.concurrency) == ("roofline", "median_tpot_ms",
                                                                                      0.6, 1)
    relative = parse_floor("p99_ttft_ms:+10% in chat at rate 2.5 for vllm-*-tp1")
    assert (relative.kind, relative.value, relative.workload, relative.rate, relative.cases) == (
        "baseline", 0.1, "chat", 2.5, "vllm-*-tp1")


@pytest.mark.parametrize("text, message", [
    ("tokens_per_second >= 5", "unknown metric 'tokens_per_second'"),
    ("output_tok_s:+5%", "higher is better: a regression allowance is written output_tok_s:-5%"),
    ("p99_ttft_ms:-10%", "lower is better: a regression allowance is written p99_ttft_ms:+10%"),
    ("output_tok_s >= 10 at concurrency 8 at rate 2", "at most one 'at concurrency / at rate' clause"),
    ("output_tok_s >= 10 on H100 on A100", "at most one 'hardware' clause"),
    ("output_tok_s >= 10 when hot", "cannot read 'when hot'"),
    ("decode >= 70% of roofline at concurrency 64", "measured at concurrency 1"),
    ("fast please", "is not a floor expression"),
])
def test_bad_expressions_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("+", r"\+").replace("*", r"\*")):
        parse_floor(text)


def test_parse_floors_names_the_entry_and_the_grammar():
    with pytest.raises(Failed) as caught:
        parse_floors(["p99_ttft_ms <= 2000", 42], fail)
    path, problem, allowed = caught.value.args
    assert (path, problem) == ("floors[1]", "expected a string, got 42")
    with pytest.raises(Failed) as caught:
        parse_floors(["p99_ttft_ms <= fast"], fail)
    path, problem, allowed = caught.value.args
    assert path == "floors[0]" and "is not a floor expression" in problem and "METRIC >= N" in allowed
    with pytest.raises(Failed) as caught:
        parse_floors({"a": 1}, fail)
    assert caught.value.args[0] == "floors"


def test_parse_floors_checks_workloads_and_points():
    workloads = (Workload("chat", 512, 128, concurrency=(1, 64)), Workload("burst", 64, 64, rates=(4.0,),
                                                                          requests=10))
    assert len(parse_floors(["output_tok_s >= 1 at concurrency 64 in chat", "decode >= 50% of roofline"], fail,
                            workloads)) == 2
    with pytest.raises(Failed) as caught:
        parse_floors(["output_tok_s >= 1 in nope"], fail, workloads)
    assert "names workload 'nope'" in caught.value.args[1] and caught.value.args[2] == "chat, burst"
    with pytest.raises(Failed) as caught:
        parse_floors(["output_tok_s >= 1 at concurrency 32"], fail, workloads)
    assert "concurrency 32" in caught.value.args[1] and caught.value.args[2] == "1, 64"
    with pytest.raises(Failed) as caught:
        parse_floors(["decode >= 50% of roofline in burst"], fail, workloads)
    assert "concurrency 1" in caught.value.args[1]
    with pytest.raises(Failed) as caught:
        parse_floors(["requests_per_s >= 1 at rate 8"], fail, workloads)
    assert caught.value.args[2] == "4"


# --- hardware ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, key, bandwidth", [
    ("NVIDIA H100 80GB HBM3", "H100-SXM", 3.35e12),
    ("NVIDIA H100 PCIe", "H100-PCIe", 2.0e12),
    ("NVIDIA H100 NVL", "H100-NVL", 3.9e12),
    ("NVIDIA H200", "H200-SXM", 4.8e12),
    ("NVIDIA H200 NVL", "H200-NVL", 4.8e12),
    ("NVIDIA GH200 480GB", "GH200-96GB", 4.0e12),
    ("NVIDIA A100-SXM4-80GB", "A100-SXM-80GB", 2.039e12),
    ("NVIDIA A100-SXM4-40GB", "A100-SXM-40GB", 1.555e12),
    ("NVIDIA A100 80GB PCIe", "A100-PCIe-80GB", 1.935e12),
    ("NVIDIA A100-PCIE-40GB", "A100-PCIe-40GB", 1.555e12),
    ("NVIDIA L40S", "L40S", 864e9),
    ("NVIDIA L4", "L4", 300e9),
    ("NVIDIA A10G", "A10G", 600e9),
    ("NVIDIA B200", "B200", 8e12),
])
def test_gpu_names_as_nvidia_smi_reports_them(name, key, bandwidth):
    hardware = CaseHardware("cuda", name)
    assert hardware.key == key
    assert hardware.bandwidth == bandwidth


def test_profiles_match_by_words():
    assert H100.matches("H100") and H100.matches("h100-sxm") and not H100.matches("H100-PCIe")
    assert not CaseHardware("cuda", "NVIDIA GH200 480GB").matches("H200")
    assert CaseHardware("cuda", "NVIDIA A100-SXM4-80GB").matches("A100-80GB")
    assert not CaseHardware("cuda", "NVIDIA A10G").matches("A10")
    assert CPU.matches("cpu") and not CPU.matches("H100")
    unknown = CaseHardware("cuda", "NVIDIA GeForce RTX 4090")
    assert unknown.key == "GeForce-RTX-4090" and unknown.matches("RTX-4090") and unknown.bandwidth is None


def test_hardware_comes_from_server_json(tmp_path):
    record = tmp_path / "server.json"
    record.write_text(json.dumps({"gpu": {"name": "NVIDIA H100 80GB HBM3", "driver": "580", "count": 2}}))
    hardware = detect_hardware("cuda", record)
    assert (hardware.key, hardware.gpu_count) == ("H100-SXM", 2)
    assert detect_hardware("cpu", record).key == "cpu"


# --- model bytes ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset, total, active_with_embedding", [
    ("qwen2.5-7b", 7.61e9, 7.61e9),  # Qwen2.5 model card: 7.61B
    ("llama-3.1-8b", 8.03e9, 8.03e9),  # Llama 3.1 8B: 8.03B
    ("qwen3-30b-a3b", 30.5e9, 3.3e9),  # Qwen3-30B-A3B: 30.5B total, 3.3B activated
    ("qwen1.5-moe-a2.7b", 14.3e9, 2.7e9),  # Qwen1.5-MoE-A2.7B: 14.3B total, 2.7B activated
])
def test_parameter_counts_match_published_sizes(preset, total, active_with_embedding):
    config = models.preset(preset).config
    counted, decode = parameter_counts(config)
    assert counted == pytest.approx(total, rel=0.01)
    # published "activated" counts include the input embedding, which a decode step reads one row of
    assert decode + config["vocab_size"] * config["hidden_size"] == pytest.approx(active_with_embedding, rel=0.02)


@pytest.mark.parametrize("preset", ["qwen2-tiny", "llama-tiny", "qwen3moe-tiny"])
def test_parameter_count_equals_the_saved_weights(preset, tmp_path):
    directory = models.ensure(preset, root=tmp_path)
    with safe_open(str(directory / "model.safetensors"), "np") as weights:
        saved = sum(weights.get_tensor(name).size for name in weights.keys())  # noqa: SIM118 (not a dict)
    assert parameter_counts(json.loads((directory / "config.json").read_text()))[0] == saved


def test_model_bytes_follow_the_engine_dtype():
    config = models.preset("qwen2.5-7b").config
    assert model_bytes(config).bytes_per_param == 2
    assert model_bytes(config, "auto").dtype == "bfloat16"
    assert model_bytes(config, "float32").decode_bytes == 4 * parameter_counts(config)[1]
    with pytest.raises(ModelSizeError, match="fp8 weights"):
        model_bytes({**config, "quantization_config": {"quant_method": "fp8"}})
    with pytest.raises(ModelSizeError, match="unknown weight dtype"):
        model_bytes(config, "int4")
    with pytest.raises(ModelSizeError, match="no parameter count for model_type 'deepseek_v3'"):
        parameter_counts({"model_type": "deepseek_v3"})


def test_roofline_of_the_h100_anchor():
    size = model_bytes(models.preset("qwen2.5-7b").config)
    bound = roofline_ms_per_token(size, 3.35e12)
    assert size.decode_bytes / 1e9 == pytest.approx(14.14, abs=0.01)
    assert bound == pytest.approx(4.22, abs=0.01)
    # docs/engines.md#real-vllm-on-gpus: median TPOT 6.26 ms at c1
    assert bound / 6.26 == pytest.approx(0.674, abs=0.002)
    assert roofline_ms_per_token(size, 3.35e12, tp=2) == pytest.approx(bound / 2)


# --- verdicts ------------------------------------------------------------------------------------------------------

def point(workload="w", concurrency=64, rate=None, **metrics):
    label = f"c{concurrency}" if rate is None else f"r{rate}"
    return {"workload": workload, "point": label, "concurrency": concurrency if rate is None else None,
            "rate": rate, "metrics": metrics}


def context(hardware=H100, **kwargs):
    return CaseContext(case_id="vllm-qwen2.5-7b-tp1", hardware=hardware, **kwargs)


def only(verdicts):
    assert len(verdicts) == 1, verdicts
    return verdicts[0]


def test_absolute_and_slo_floors_pass_and_fail():
    floors_ = parse_floors(["output_tok_s >= 4000 at concurrency 64 on H100", "p99_ttft_ms <= 2000"], fail)
    good = evaluate(floors_, [point(output_tok_s=4952.0, p99_ttft_ms=900.0)], context())
    assert [v.status for v in good] == ["pass", "pass"]
    bad = evaluate(floors_, [point(output_tok_s=3000.0, p99_ttft_ms=2500.0)], context())
    assert [v.status for v in bad] == ["fail", "fail"]
    assert bad[0].detail == "output_tok_s = 3000 (floor >= 4000)" and bad[1].measured == 2500.0


def test_a_client_bound_point_fails_every_floor_with_the_reason():
    invalid = {**point(output_tok_s=9000.0, p99_ttft_ms=10.0),
               "invalid": "the busiest client worker was busy 98% of the run (1 worker process(es))"}
    verdicts = evaluate(parse_floors(["output_tok_s >= 4000", "p99_ttft_ms <= 2000"], fail), [invalid], context())
    assert [v.status for v in verdicts] == ["fail", "fail"]
    assert verdicts[0].detail == ("invalid point: the busiest client worker was busy 98% of the run "
                                  "(1 worker process(es))")
    unchecked = evaluate(parse_floors(["output_tok_s:-5%"], fail), [invalid], context())
    assert only(unchecked).status == "skip"  # no baseline given: nothing to check, so nothing fails


def test_a_floor_on_an_unmeasurable_value_fails():
    bunched = {**point(median_tpot_ms=0.0, p99_itl_ms=0.0, output_tok_s=100.0),
               "delivery": {"not_measurable": {"tpot": "bunched delivery: 100% of the streams arrived whole"}}}
    declared = parse_floors(["median_tpot_ms <= 500", "decode >= 50% of roofline", "output_tok_s >= 50"], fail)
    verdicts = evaluate(declared, [{**bunched, "point": "c1", "concurrency": 1}], context())
    tpot, roofline, throughput = verdicts
    assert tpot.status == "fail" and tpot.detail == ("median_tpot_ms is not measurable: bunched delivery: 100% of "
                                                     "the streams arrived whole")
    assert roofline.status == "fail" and "not measurable" in roofline.detail
    assert throughput.status == "pass"  # throughput does not depend on when the chunks arrived


def test_a_floor_without_a_point_holds_at_every_point():
    verdicts = evaluate((parse_floor("median_tpot_ms <= 10"),),
                        [point(concurrency=1, median_tpot_ms=6.3), point(concurrency=64, median_tpot_ms=12.0)],
                        context())
    assert [(v.point, v.status) for v in verdicts] == [("c1", "pass"), ("c64", "fail")]


def test_floors_for_other_hardware_are_skipped_with_the_reason():
    verdict = only(evaluate((parse_floor("output_tok_s >= 4000 on H100"),), [point(output_tok_s=10.0)],
                            context(CPU)))
    assert verdict.status == "skip"
    assert verdict.detail == "applies on H100; this case ran on cpu (numbers reported, not checked)"


def test_floors_for_other_cases_do_not_apply():
    assert evaluate((parse_floor("output_tok_s >= 1 for sglang-*"),), [point(output_tok_s=10.0)], context()) == []


def test_a_floor_whose_point_was_not_measured_is_skipped():
    verdict = only(evaluate((parse_floor("output_tok_s >= 1 at concurrency 8"),), [point(output_tok_s=1.0)],
                            context()))
    assert verdict.status == "skip" and "concurrency 8" in verdict.detail


def test_roofline_floor():
    size = model_bytes(models.preset("qwen2.5-7b").config)
    c1 = [point(concurrency=1, median_tpot_ms=6.26)]
    passed = only(evaluate((parse_floor("decode >= 60% of roofline"),), c1, context(model=size)))
    assert passed.status == "pass" and passed.measured == pytest.approx(0.674, abs=0.002)
    failed = only(evaluate((parse_floor("decode >= 72% of roofline"),), c1, context(model=size)))
    assert failed.status == "fail" and "67% of roofline (floor 72%)" in failed.detail
    on_cpu = only(evaluate((parse_floor("decode >= 60% of roofline"),), c1, context(CPU, model=size)))
    assert on_cpu.status == "skip" and "no memory bandwidth known for cpu" in on_cpu.detail
    unknown = only(evaluate((parse_floor("decode >= 60% of roofline"),), c1,
                            context(model_problem="fp8 weights have per-tensor byte widths")))
    assert unknown.status == "skip" and "fp8" in unknown.detail


def baseline(**metrics):
    return floors.Baseline("base.json", ({"case": "vllm-qwen2.5-7b-tp1", "workload": "w", "point": "c64",
                                          "hardware": "H100-SXM", "metrics": metrics},))


def test_baseline_floors_allow_the_declared_regression_only():
    throughput = parse_floor("output_tok_s:-5%")
    latency = parse_floor("p99_ttft_ms:+10%")
    saved = baseline(output_tok_s=5000.0, p99_ttft_ms=1000.0)
    within = evaluate((throughput, latency), [point(output_tok_s=4800.0, p99_ttft_ms=1090.0)],
                      context(baseline=saved))
    assert [v.status for v in within] == ["pass", "pass"]
    beyond = evaluate((throughput, latency), [point(output_tok_s=4500.0, p99_ttft_ms=1200.0)],
                      context(baseline=saved))
    assert [v.status for v in beyond] == ["fail", "fail"]
    assert beyond[0].threshold == pytest.approx(4750.0) and "-10.0%" in beyond[0].detail
    assert beyond[1].threshold == pytest.approx(1100.0) and "+20.0%" in beyond[1].detail


def test_baseline_floors_skip_without_a_comparable_baseline():
    floor = (parse_floor("output_tok_s:-5%"),)
    assert "no baseline given" in only(evaluate(floor, [point(output_tok_s=1.0)], context())).detail
    other_point = only(evaluate(floor, [point(concurrency=8, output_tok_s=1.0)], context(baseline=baseline(
        output_tok_s=2.0))))
    assert other_point.status == "skip" and "has no vllm-qwen2.5-7b-tp1 w c8" in other_point.detail
    other_gpu = only(evaluate(floor, [point(output_tok_s=1.0)], context(CaseHardware("cuda", "NVIDIA A100-SXM4-80GB"),
                                                                        baseline=baseline(output_tok_s=2.0))))
    assert other_gpu.detail == "baseline measured on H100-SXM, this run on A100-SXM-80GB"


def test_baseline_file_round_trip(tmp_path):
    path = tmp_path / "perf-summary.json"
    path.write_text(json.dumps({"version": 1, "runs": list(baseline(output_tok_s=100.0).runs), "floors": []}))
    loaded = floors.load_baseline(path)
    assert loaded.find("vllm-qwen2.5-7b-tp1", "w", "c64")["metrics"]["output_tok_s"] == 100.0
    assert loaded.find("vllm-qwen2.5-7b-tp1", "w", "c1") is None


def test_a_zero_baseline_is_named_unmeasurable_not_missing():
    relative = only(evaluate((parse_floor("median_tpot_ms:+10%"),), [point(median_tpot_ms=5.0)],
                             context(baseline=baseline(median_tpot_ms=0.0))))
    assert relative.status == "skip"
    assert relative.detail.startswith("the baseline's median_tpot_ms is 0 (not measurable")
    assert "has no" not in relative.detail
    throughput = only(evaluate((parse_floor("output_tok_s >= 1"),), [point(output_tok_s=0.0)], context()))
    assert throughput.status == "fail"
