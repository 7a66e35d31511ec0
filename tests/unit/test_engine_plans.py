"""Golden argv for every seed-guide command, per engine and per node, and the engines' layout rules."""

import pytest
from planning_helpers import make_case

from llmconform import engines
from llmconform.engines.base import render_args
from llmconform.errors import LayoutError, UserError

VLLM = ["vllm", "serve", "M", "--served-model-name", "m"]
SGL = ["python3", "-m", "sglang.launch_server", "--model-path", "M", "--served-model-name", "m"]


def argv(plan, i=0):
    return list(plan.processes[i].argv)


# --- vLLM ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout, flags", [
    ("tp8", ["--tensor-parallel-size", "8"]),
    ("tp4pp2", ["--tensor-parallel-size", "4", "--pipeline-parallel-size", "2"]),
    ("tp8dp2", ["--tensor-parallel-size", "8", "--data-parallel-size", "2"]),
    ("tp8ep", ["--tensor-parallel-size", "8", "--enable-expert-parallel"]),
])
def test_vllm_seed_single_node(plan_of, layout, flags):
    plan = plan_of("vllm", layout, source="hf:M", per_node=16)
    assert argv(plan) == [*VLLM, *flags, "--host", "0.0.0.0", "--port", "8000"]
    assert len(plan.processes) == 1 and plan.processes[0].role == "api"


def test_vllm_one_replica_over_two_nodes_uses_nnodes_and_headless(plan_of):
    plan = plan_of("vllm", "tp8pp2@2nodes", source="hf:M")
    common = [*VLLM, "--tensor-parallel-size", "8", "--pipeline-parallel-size", "2"]
    assert argv(plan, 0) == [*common, "--host", "0.0.0.0", "--port", "8000", "--nnodes", "2", "--node-rank", "0",
                             "--master-addr", "n1", "--master-port", "29501"]
    assert argv(plan, 1) == [*common, "--nnodes", "2", "--node-rank", "1", "--master-addr", "n1",
                             "--master-port", "29501", "--headless"]
    assert [p.role for p in plan.processes] == ["api", "worker"]
    assert plan.processes[1].env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"


def test_vllm_moe_dp_across_nodes_uses_data_parallel_flags(plan_of):
    plan = plan_of("vllm", "tp8dp2ep@2nodes", source="hf:M")
    common = [*VLLM, "--tensor-parallel-size", "8", "--data-parallel-size", "2", "--enable-expert-parallel"]
    dp = ["--data-parallel-size-local", "1", "--data-parallel-address", "n1", "--data-parallel-rpc-port", "29550"]
    assert argv(plan, 0) == [*common, "--host", "0.0.0.0", "--port", "8000", *dp]
    assert argv(plan, 1) == [*common, *dp, "--data-parallel-start-rank", "1", "--headless"]


def test_vllm_dp_local_size_counts_whole_ranks_per_node(plan_of):
    plan = plan_of("vllm", "tp2dp8ep@2nodes", source="hf:M")
    assert "--data-parallel-size-local" in argv(plan, 1)
    assert argv(plan, 1)[argv(plan, 1).index("--data-parallel-size-local") + 1] == "4"
    assert argv(plan, 1)[argv(plan, 1).index("--data-parallel-start-rank") + 1] == "4"


@pytest.mark.parametrize("layout, rule", [
    ("tp8ep2", "vllm-ep-spans-tp-x-dp"),
    ("tp8adp2", "vllm-no-attention-dp-size"),
    ("tp16dp2@4nodes", "vllm-dp-rank-within-node"),
    ("tp2dp3@2nodes", "vllm-dp-ranks-whole-per-node"),
])
def test_vllm_layout_rules(layout, rule):
    with pytest.raises(LayoutError) as caught:
        engines.get("vllm").check_layout(make_case("vllm", layout).layout, None)
    assert caught.value.rule == rule


def test_vllm_cpu_device_binds_one_core_per_rank(plan_of):
    plan = plan_of("vllm", "tp2", source="factory:qwen2-tiny", device="cpu", per_node=2)
    env = plan.processes[0].env
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in env
    single = plan_of("vllm", "tp1", source="factory:qwen2-tiny", device="cpu", per_node=2)
    assert single.processes[0].env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"


def test_user_env_wins_and_dummy_weights_use_load_format(plan_of):
    plan = plan_of("vllm", "tp1", source="shape:qwen2.5-7b", env={"VLLM_LOGGING_LEVEL": "DEBUG"})
    assert plan.processes[0].env["VLLM_LOGGING_LEVEL"] == "DEBUG"
    assert argv(plan)[argv(plan).index("--load-format") + 1] == "dummy"


# --- SGLang --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout, version, flags", [
    ("tp8", "0.5.16", ["--tp-size", "8"]),
    ("tp4pp2", "0.5.16", ["--tp-size", "4", "--pp-size", "2"]),
    ("tp8adp2", "0.5.16", ["--tp-size", "8", "--dp-size", "2", "--enable-dp-attention"]),
    ("tp8adp2", "0.5.23", ["--tp-size", "8", "--attn-dp-size", "2"]),
    ("tp8ep2", "0.5.16", ["--tp-size", "8", "--ep-size", "2"]),
    ("tp4dp2", "0.5.16", ["--tp-size", "4", "--dp-size", "2"]),
])
def test_sglang_seed_single_node(plan_of, layout, version, flags):
    plan = plan_of("sglang", layout, source="hf:M", version=version)
    assert argv(plan) == [*SGL, *flags, "--host", "0.0.0.0", "--port", "8000"]
    assert plan.health_route == "/health_generate"


def test_sglang_multinode_every_node_gets_dist_init_addr(plan_of):
    plan = plan_of("sglang", "tp16ep2@2nodes", source="hf:M")
    for rank, process in enumerate(plan.processes):
        assert list(process.argv) == [*SGL, "--tp-size", "16", "--ep-size", "2", "--host", "0.0.0.0", "--port",
                                      "8000", "--nnodes", "2", "--node-rank", str(rank), "--dist-init-addr",
                                      "n1:25000"]


def test_sglang_never_emits_ambiguous_prefixes(plan_of):
    plan = plan_of("sglang", "tp4pp2ep2", source="hf:M")
    flags = [a for a in argv(plan) if a.startswith("--")]
    assert "--pp" not in flags and "--tp" not in flags and "--ep" not in flags and "--enable-ep" not in flags


@pytest.mark.parametrize("layout, rule", [
    ("tp8ep3", "sglang-ep-divides-tp"),
    ("tp8adp3", "sglang-adp-divides-tp"),
    ("tp8dp2@2nodes", "sglang-dp-single-node"),
    ("tp8dp2adp2", "sglang-dp-or-adp"),
])
def test_sglang_layout_rules(layout, rule):
    with pytest.raises(LayoutError) as caught:
        engines.get("sglang").check_layout(make_case("sglang", layout).layout, None)
    assert caught.value.rule == rule


def test_sglang_experts_must_divide_by_ep():
    case = make_case("sglang", "tp16ep16@2nodes", source="shape:qwen1.5-moe-a2.7b")  # 60 experts
    with pytest.raises(LayoutError) as caught:
        engines.get("sglang").check_layout(case.layout, case.model.config)
    assert caught.value.rule == "experts-divisible-by-ep"
    # vLLM spreads uneven experts over ranks, so the same model and EP size is fine there.
    engines.get("vllm").check_layout(make_case("vllm", "tp16ep@2nodes").layout, case.model.config)


# --- TensorRT-LLM --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout, flags", [
    ("tp8", ["--tp_size", "8"]),
    ("tp4pp2", ["--tp_size", "4", "--pp_size", "2"]),
    ("tp8ep2", ["--tp_size", "8", "--ep_size", "2"]),
])
def test_trtllm_seed_single_node(plan_of, layout, flags):
    plan = plan_of("trtllm", layout, source="hf:M")
    assert argv(plan) == ["trtllm-serve", "M", "--host", "0.0.0.0", "--port", "8000", *flags]
    assert plan.files == {}


def test_trtllm_multinode_is_one_mpi_launch_through_llmapi_launch(plan_of):
    plan = plan_of("trtllm", "tp16ep2@2nodes", source="hf:M")
    (process,) = plan.processes
    assert process.nodes == 2 and process.tasks_per_node == 8
    assert list(process.argv) == ["trtllm-llmapi-launch", "trtllm-serve", "M", "--host", "0.0.0.0", "--port", "8000",
                                  "--tp_size", "16", "--ep_size", "2", "--gpus_per_node", "8"]


def test_trtllm_yaml_options_for_what_the_cli_lacks(plan_of):
    plan = plan_of("trtllm", "tp8adp8ep8", source="shape:qwen3-30b-a3b",
                   args={"llm_api_options": {"kv_cache_config": {"enable_block_reuse": False}}, "max-batch-size": 64})
    assert argv(plan)[-4:] == ["--extra_llm_api_options", "/run/extra-llm-api-options.yaml", "--max_batch_size", "64"]
    assert plan.files["extra-llm-api-options.yaml"].splitlines() == [
        "enable_attention_dp: true", "kv_cache_config:", "  enable_block_reuse: false", "load_format: dummy"]
    assert plan.served_model == "qwen3-30b-a3b"  # trtllm-serve lists the directory's base name


@pytest.mark.parametrize("layout, rule", [
    ("tp8dp2", "trtllm-no-dp"),
    ("tp8ep3", "trtllm-ep-divides-tp"),
    ("tp8adp2", "trtllm-adp-equals-tp"),
])
def test_trtllm_layout_rules(layout, rule):
    with pytest.raises(LayoutError) as caught:
        engines.get("trtllm").check_layout(make_case("trtllm", layout).layout, None)
    assert caught.value.rule == rule


# --- rules and helpers common to all engines -----------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["vllm", "sglang", "trtllm"])
def test_heads_must_divide_by_tp(engine):
    case = make_case(engine, "tp8", source="shape:qwen2.5-7b")  # 28 heads
    with pytest.raises(LayoutError) as caught:
        engines.get(engine).check_layout(case.layout, case.model.config)
    assert caught.value.rule == "heads-divisible-by-tp"
    assert "28 attention heads are not divisible by tp=8" in str(caught.value)


@pytest.mark.parametrize("engine", ["vllm", "sglang", "trtllm"])
def test_expert_parallel_needs_an_moe_model(engine):
    case = make_case(engine, "tp2ep2", source="factory:qwen2-tiny")
    with pytest.raises(LayoutError) as caught:
        engines.get(engine).check_layout(case.layout, case.model.config)
    assert caught.value.rule == "ep-needs-moe"


def test_pp_cannot_exceed_layers():
    case = make_case("vllm", "pp4", source="factory:qwen2-tiny")  # 2 layers
    with pytest.raises(LayoutError, match="pp=4 exceeds the model's 2 layers"):
        engines.get("vllm").check_layout(case.layout, case.model.config)


@pytest.mark.parametrize("engine, key", [("vllm", "tensor-parallel-size"), ("sglang", "tp_size"),
                                         ("trtllm", "tp_size"), ("vllm", "--port")])
def test_layout_flags_cannot_be_passed_as_extra_args(plan_of, engine, key):
    with pytest.raises(UserError, match="through the layout or the launcher"):
        plan_of(engine, "tp1", source="hf:M", args={key: 2})


def test_render_args_styles():
    args = {"enforce-eager": True, "disable_log": False, "skip": None, "max_model_len": 512,
            "served": ["a", "b"], "compilation-config": {"mode": 0}}
    assert render_args(args, "kebab") == ["--enforce-eager", "--max-model-len", "512", "--served", "a", "b",
                                          "--compilation-config", '{"mode":0}']
    assert render_args({"max-batch-size": 8}, "snake") == ["--max_batch_size", "8"]


def test_diagnosis_prefers_engine_specific_signatures():
    vllm = engines.get("vllm")
    log = "Worker proc died unexpectedly (exit code: -11)\nSIGSEGV in csrc/cpu/cpu_fused_moe.cpp:242"
    assert "fused-MoE kernel crashed" in vllm.diagnose(log)
    assert "segmentation fault" in vllm.diagnose("Worker proc VllmWorker-0 died unexpectedly (exit code: -11)")
    sglang = engines.get("sglang")
    assert "ambiguous" in sglang.diagnose("error: ambiguous option: --pp could match --pp-size")
    # what SGLang 0.5.16 printed on an H200 for a --dtype float32 server and for the tiny MoE at head_dim 32
    fp32 = ("RuntimeError: rmsnorm(at::Tensor&, at::Tensor&, at::Tensor&, double, bool)::<lambda()> failed to "
            "dispatch data type Float")
    assert "fp16/bf16 only" in sglang.diagnose(fp32)
    rope = "AssertionError: save kv cache is not supported for fallback_rotary_embedding."
    assert "head_dim of 64, 128, 256 or 512" in sglang.diagnose(rope)
    assert vllm.diagnose("all good") is None


def test_stage_is_the_last_marker_seen():
    vllm = engines.get("vllm")
    log = "non-default args: {...}\nInitializing a V1 LLM engine (v0.32.0)\nStarting to load model /m..."
    assert vllm.stage_of(log) == "load-weights"
    assert vllm.stage_of("") == "starting"


# Lines SGLang 0.5.16 printed on the GPU machine (tp1, tiny Qwen2), in order, each with the stage it starts.
SGLANG_0_5_16_STARTUP = [
    ("[2026-12-02 04:44:28] server_args=ServerArgs(model_path='/m', tp_size=1)", "server-args"),
    ("[2026-12-02 04:44:52] Init torch distributed begin.", "distributed-init"),
    ("[2026-12-02 04:44:52] Init torch distributed ends. elapsed=0.26 s, mem usage=0.09 GB", "distributed-ready"),
    ("[2026-12-02 04:44:57] Load weight begin. avail mem=139.09 GB", "load-weights"),
    ("[2026-12-02 04:44:57] Load weight end. elapsed=0.20 s, type=Qwen2ForCausalLM", "weights-loaded"),
    ("[2026-12-02 04:44:57] KV Cache is allocated. dtype: torch.bfloat16, #tokens: 72869024", "kv-cache"),
    ("[2026-12-02 04:44:58] Capture target prefill CUDA graph begin. backend=breakable, num_tokens=[4, 8]",
     "cuda-graphs"),
    ("[2026-12-02 04:46:14] INFO:     Uvicorn running on http://127.0.0.1:20480 (Press CTRL+C to quit)", "http-up"),
    ("[2026-12-02 04:46:26] The server is fired up and ready to roll!", "ready"),
]


def test_sglang_stages_follow_what_0_5_16_printed():
    sglang = engines.get("sglang")
    log = ""
    for line, stage_name in SGLANG_0_5_16_STARTUP:
        log += line + "\n"
        assert sglang.stage_of(log) == stage_name, line
