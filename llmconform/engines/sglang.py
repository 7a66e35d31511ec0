"""SGLang: `python3 -m sglang.launch_server --model-path MODEL ...`.

Flags checked against the SGLang wheels 0.5.16 (`srt/server_args.py`: the version that matches the GPU machine's
torch), 0.5.20, 0.5.22 and 0.5.23 (`srt/arg_groups/fields/parallel.py`). Full canonical flag names only: SGLang's
argparse accepts unambiguous prefixes, so `--pp` is ambiguous and `--enable-ep` silently means `--enable-eplb`.
EP subdivides TP (`--ep-size e`: moe_tp = tp / e). Attention DP lives inside TP: `--attn-dp-size a` from 0.5.22,
`--dp-size a --enable-dp-attention` before. Replica DP (`--dp-size`) is single-node only. Multi-node:
`--nnodes/--node-rank/--dist-init-addr HOST:PORT` on every node; each node runs tp x pp / nnodes ranks.
"""

from __future__ import annotations

from typing import ClassVar

from llmconform.config.layout import Layout
from llmconform.engines.base import (
    DeterminismSwitch,
    Engine,
    Process,
    is_python,
    num_experts,
    signature,
    stage,
)
from llmconform.engines.versions import in_range
from llmconform.errors import LayoutError

ATTN_DP_SIZE_SINCE = ">=0.5.22"  # the releases whose CLI has --attn-dp-size


class SGLang(Engine):
    name = "sglang"
    default_port = 30000
    # Readiness, seen on 0.5.16: /health_generate answers 503 until the warm-up request has run ("The server is
    # fired up and ready to roll"), then 200.
    health_route = "/health_generate"
    ready_routes = ("/health_generate", "/v1/models")
    # /health is /health_generate (entrypoints/http_server.py: both routes run health_generate, a 1-token generation
    # polled after asyncio.sleep(1)), so it takes >= 1 s: 0.5.16's first suites run spent ~100 s in per-test probes.
    # /v1/models answers from the HTTP process without generating.
    live_route = "/v1/models"
    # SGLang's SIGTERM handler drains, sends ShutdownReq to its schedulers and kills its own tree
    # (managers/tokenizer_manager.py sigterm_handler, sigterm_watchdog); a SIGTERM to the whole group also hits
    # scheduler_0, whose death its subprocess watchdog reports as a crash and answers with SIGQUIT ("Subprocess
    # scheduler_0 crashed with exit code -15. Triggering SIGQUIT for cleanup...", 0.5.16 on the GPU). Both paths end
    # in kill_process_tree(include_parent=True), which SIGKILLs the leader itself: its exit code is -9.
    stop_leader_first = True
    checked_versions = "0.5.16, 0.5.20, 0.5.22, 0.5.23"
    default_version = "0.5.16"
    default_command = ("python3", "-m", "sglang.launch_server")
    metrics_route = "/metrics"  # docs/references/production_metrics.md
    metrics_counters: ClassVar[dict[str, str]] = {"prompt_tokens": "sglang:prompt_tokens_total",
                        "generation_tokens": "sglang:generation_tokens_total"}
    metrics_flag = "--enable-metrics"
    arg_style = "kebab"
    accepts_ignore_eos = True  # sampling params
    accepts_token_id_prompts = True  # CompletionRequest.prompt
    determinism = DeterminismSwitch(args={"enable-deterministic-inference": True})
    owned_args = (
        "model-path", "host", "port", "served-model-name", "tp-size", "tensor-parallel-size", "pp-size",
        "pipeline-parallel-size", "dp-size", "data-parallel-size", "ep-size", "expert-parallel-size", "ep",
        "attn-dp-size", "enable-dp-attention", "nnodes", "node-rank", "dist-init-addr", "nccl-init-addr",
        "load-format",
    )
    stages = (
        stage("server-args", r"server_args=ServerArgs|Launch server|server_args", 300),
        stage("distributed-init", r"Init torch distributed begin", 900),
        stage("distributed-ready", r"Init torch distributed ends", 600),
        stage("load-weights", r"Load weight begin", 3600),
        stage("weights-loaded", r"Load weight end", 1800),
        stage("kv-cache", r"KV Cache is allocated|Memory pool end", 900),
        # 0.5.16 on the GPU: "Capture target prefill CUDA graph begin" (73 s on the tiny model, the first shape
        # taking 71 s), then "Capture target decode CUDA graph begin"
        stage("cuda-graphs", r"Capture (\w+ )*(cuda|CUDA) graph begin", 1800),
        stage("http-up", r"Uvicorn running on|Application startup complete", 600),
        stage("ready", r"The server is fired up and ready to roll", 300),
    )
    signatures = (
        # 0.5.16 on the GPU, while FlashInfer JIT-compiled its top-k/top-p sampling kernel for the first request
        # with top_p < 1 (106 s, the scheduler blocked): http_server.py health_generate logs it every 20 s
        signature(r"Health check failed\. Server couldn't get a response from detokenizer",
                  "SGLang's scheduler answered nothing for 20 s or more: a long synchronous step (e.g. FlashInfer "
                  "JIT-compiling a kernel on its first use) or a hung scheduler"),
        signature(r"ambiguous option", "SGLang's argparse got an ambiguous abbreviated flag (it matches several "
                                       "options): use the full flag name"),
        signature(r"multi-node data.parallel",
                  "SGLang rejects DP replicas across nodes: use attention DP (adp) inside a cross-node TP group"),
        signature(r"tp_size must be divisible by number of nodes",
                  "SGLang needs tp x pp divisible by the number of nodes"),
        signature(r"num_experts.*ep_size|% self\.ep_size|divisible by ep",
                  "the number of routed experts is not divisible by the EP size"),
        # 0.5.16 on the GPU: sgl_kernel's RMSNorm is built for fp16/bf16 only, and layers/layernorm.py calls it on
        # CUDA whatever --dtype is (the first CUDA-graph capture of a --dtype float32 server)
        signature(r"rmsnorm\(.*failed to dispatch data type Float",
                  "SGLang's CUDA RMSNorm kernel (sgl_kernel) takes fp16/bf16 only: --dtype float32 cannot be "
                  "served on CUDA"),
        # 0.5.16 on the GPU: rotary embedding on CUDA has a fused kernel for head sizes 64/128/256/512 only, and the
        # fallback refuses the fused KV-cache write Qwen3(-MoE) attention asks for with a bf16 KV cache
        signature(r"save kv cache is not supported for fallback_rotary_embedding",
                  "SGLang's fused rotary + KV-cache write needs a head_dim of 64, 128, 256 or 512 on CUDA (the "
                  "model's is another); a model with such a head_dim, or another KV-cache dtype, avoids it"),
        signature(r"unrecognized arguments|error: argument|invalid choice",
                  "SGLang rejected a command-line argument (is the engine version the one the matrix names?)"),
    )

    def check_layout(self, layout: Layout, model_config: dict | None, device: str = "cuda") -> None:
        if layout.tp % layout.ep:
            raise LayoutError("sglang-ep-divides-tp",
                              f"SGLang's EP subdivides TP (moe_tp = tp / ep): ep{layout.ep} does not divide "
                              f"tp{layout.tp}")
        if layout.tp % layout.adp:
            raise LayoutError("sglang-adp-divides-tp",
                              f"SGLang's attention DP lives inside TP: adp{layout.adp} does not divide tp{layout.tp}")
        if layout.dp > 1 and layout.nodes > 1:
            raise LayoutError("sglang-dp-single-node",
                              f"SGLang rejects DP replicas across nodes (dp{layout.dp} on {layout.nodes} nodes); use "
                              f"attention DP inside a cross-node TP group, e.g. tp{layout.gpus}adp{layout.dp}")
        if layout.dp > 1 and layout.adp > 1:
            raise LayoutError("sglang-dp-or-adp", "SGLang takes DP replicas or attention DP, not both")
        experts = num_experts(model_config) if model_config else 0
        if layout.ep > 1 and experts and experts % layout.ep:
            raise LayoutError("experts-divisible-by-ep",
                              f"SGLang needs the {experts} routed experts divisible by ep{layout.ep}")
        super().check_layout(layout, model_config, device)

    def _processes(self, case, placement, ports, run_dir):
        layout, model = case.layout, case.model
        common = [*case.engine.command, "--model-path", model.path, "--served-model-name", model.served_name,
                  "--tp-size", str(layout.tp)]
        if layout.pp > 1:
            common += ["--pp-size", str(layout.pp)]
        if layout.dp > 1:
            common += ["--dp-size", str(layout.dp)]
        if layout.adp > 1:
            if in_range(case.engine.version, ATTN_DP_SIZE_SINCE):
                common += ["--attn-dp-size", str(layout.adp)]
            else:
                common += ["--dp-size", str(layout.adp), "--enable-dp-attention"]
        if layout.ep > 1:
            common += ["--ep-size", str(layout.ep)]
        if model.dummy_weights:
            common += ["--load-format", "dummy"]
        common += self.extra_args(case.args)
        processes = []
        for node in range(layout.nodes):
            # Every node binds --host/--port: ranks > 0 serve a dummy health endpoint there.
            argv = [*common, "--host", placement.bind_host, "--port", str(ports.http)]
            if layout.nodes > 1:
                argv += ["--nnodes", str(layout.nodes), "--node-rank", str(node),
                         "--dist-init-addr", f"{placement.head}:{ports.dist_init}"]
            env = {"CUDA_VISIBLE_DEVICES": ",".join(str(d) for d in placement.devices[node]), **case.env}
            processes.append(Process(node=node, role="api" if node == 0 else "worker", argv=tuple(argv), env=env))
        notes = []
        if layout.nodes > 1:
            notes.append(f"each node runs {layout.gpus_per_node} ranks; ranks > 0 answer /health with a dummy 200, "
                         f"so only node 0 is probed")
        return processes, {}, notes

    def expected_parse(self, case, plan, process) -> dict:
        layout = case.layout
        attn_dp_flag = in_range(case.engine.version, ATTN_DP_SIZE_SINCE)
        expected = {"model_path": case.model.path, "tp_size": layout.tp, "pp_size": layout.pp,
                    "dp_size": layout.dp if layout.dp > 1 or attn_dp_flag else layout.adp,
                    "enable_dp_attention": layout.adp > 1 and not attn_dp_flag, "ep_size": layout.ep,
                    "port": plan.port, "nnodes": layout.nodes,
                    "node_rank": process.node}
        if attn_dp_flag:
            expected["attn_dp_size"] = layout.adp
        return expected

    def version_argv(self, command):
        python = command[0] if is_python(command[0]) else "python3"
        return [python, "-c", "import sglang; print(sglang.__version__)"]
