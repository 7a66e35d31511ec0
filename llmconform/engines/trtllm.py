"""TensorRT-LLM: `trtllm-serve MODEL ...` (PyTorch backend).

Flags checked against `tensorrt_llm/commands/serve.py` @ 00209af149e7 (NVIDIA/TensorRT-LLM), `mapping.py` @ 05ebebb2c1d3
and `llmapi/trtllm-llmapi-launch` @ 020c89e64e49 (docs/engines.md#where-each-engines-flags-come-from). The wheel cannot
be installed here, so these plans are checked by reading that source only.
click options: `--tp_size`, `--pp_size`, `--ep_size`, `--gpus_per_node`; what the CLI lacks (attention DP, MoE TP)
goes into the YAML of `--extra_llm_api_options` (aliased `--config` in newer releases). EP subdivides TP
(moe_tp x ep = tp). There is no DP-replica flag. Multi-node: one MPI world of tp x pp ranks,
`srun --mpi=pmix --ntasks-per-node G ... trtllm-llmapi-launch trtllm-serve ...` (rendered by the slurm launcher).
/v1/models lists the model directory's base name (OpenAIServer: `Path(model).name` for a local directory).
"""

from __future__ import annotations

import posixpath

import yaml

from llmconform.config.layout import Layout
from llmconform.engines.base import DeterminismSwitch, Engine, Process, is_python, signature, stage
from llmconform.errors import LayoutError

LLM_API_OPTIONS_KEY = "llm_api_options"  # matrix args key whose mapping becomes the extra YAML
EXTRA_OPTIONS_FILE = "extra-llm-api-options.yaml"


class TRTLLM(Engine):
    name = "trtllm"
    default_port = 8000
    health_route = "/health"
    ready_routes = ("/health", "/v1/models")
    checked_versions = "serve.py @ 00209af149e7 (source reading; no wheel installable here)"
    default_version = "1.1.0"
    default_command = ("trtllm-serve",)
    arg_style = "snake"
    accepts_ignore_eos = True  # tensorrt_llm/serve/openai_protocol.py CompletionRequest
    accepts_token_id_prompts = True  # openai_protocol.py CompletionRequest.prompt
    determinism = DeterminismSwitch(env={"FORCE_DETERMINISTIC": "1"})
    owned_args = (
        "host", "port", "tp_size", "tensor_parallel_size", "pp_size", "pipeline_parallel_size", "ep_size",
        "moe_expert_parallel_size", "gpus_per_node", "extra_llm_api_options", "config",
    )
    stages = (
        stage("mpi-world", r"mpi_rank:|tllm_mpi_size:|run mgmn (leader|worker) node", 900),
        stage("load-weights", r"Loading model|Use \d+(\.\d+)? GB for model weights|load weights", 3600),
        stage("kv-cache", r"KV cache|kv_cache|Allocated .* for max tokens", 1800),
        stage("http-up", r"Uvicorn running on|Application startup complete", 600),
    )
    signatures = (
        signature(r"No GPU devices found on the node", "trtllm-serve found no GPU (CUDA_VISIBLE_DEVICES empty?)"),
        signature(r"run mgmn worker node with mpi_world_size",
                  "multi-node MPI world did not form: the MPI world must span the nodes (srun --mpi=pmix) and "
                  "OMPI_MCA_btl_tcp_if_include must name a routable NIC"),
        signature(r"No such option|Error: Invalid value|Got unexpected extra argument",
                  "trtllm-serve rejected a command-line argument (is the version the one the matrix names?)"),
    )

    def check_layout(self, layout: Layout, model_config: dict | None, device: str = "cuda") -> None:
        if layout.dp > 1:
            raise LayoutError("trtllm-no-dp",
                              f"TensorRT-LLM has no data-parallel flag (dp{layout.dp}): DP means several servers "
                              f"(plan dp1 cases) or attention DP inside TP (adp{layout.tp})")
        if layout.tp % layout.ep:
            raise LayoutError("trtllm-ep-divides-tp",
                              f"TensorRT-LLM's EP subdivides TP (moe_tp x ep = tp): ep{layout.ep} does not divide "
                              f"tp{layout.tp}")
        if layout.adp not in (1, layout.tp):
            raise LayoutError("trtllm-adp-equals-tp",
                              f"TensorRT-LLM's attention DP (enable_attention_dp) spans all of TP: adp must be 1 "
                              f"or {layout.tp}, got {layout.adp}")
        super().check_layout(layout, model_config, device)

    def served_model_name(self, model) -> str:
        if model.kind == "hf":
            return model.path
        return posixpath.basename(model.path.rstrip("/"))

    def _processes(self, case, placement, ports, run_dir):
        layout, model = case.layout, case.model
        args = dict(case.args)
        llm_api_options = dict(args.pop(LLM_API_OPTIONS_KEY, None) or {})
        if layout.adp > 1:
            llm_api_options["enable_attention_dp"] = True
        if model.dummy_weights:
            llm_api_options["load_format"] = "dummy"
        serve = [*case.engine.command, model.path, "--host", placement.bind_host, "--port", str(ports.http),
                 "--tp_size", str(layout.tp)]
        if layout.pp > 1:
            serve += ["--pp_size", str(layout.pp)]
        if layout.ep > 1:
            serve += ["--ep_size", str(layout.ep)]
        files = {}
        if llm_api_options:
            files[EXTRA_OPTIONS_FILE] = yaml.safe_dump(llm_api_options, sort_keys=True)
            serve += ["--extra_llm_api_options", posixpath.join(run_dir, EXTRA_OPTIONS_FILE)]
        serve += self.extra_args(args)
        devices = ",".join(str(d) for d in placement.devices[0])
        env = {"CUDA_VISIBLE_DEVICES": devices, **case.env}
        if layout.nodes == 1:
            return [Process(node=0, role="api", argv=tuple(serve), env=env)], files, []
        # One MPI world across the nodes: rank 0 serves HTTP, the others run mgmn workers.
        serve += ["--gpus_per_node", str(layout.gpus_per_node)]
        argv = ("trtllm-llmapi-launch", *serve)
        process = Process(node=0, role="api", argv=argv, env=env, nodes=layout.nodes,
                          tasks_per_node=layout.gpus_per_node)
        notes = [f"one MPI launch of {layout.gpus} ranks ({layout.gpus_per_node} per node) through srun --mpi=pmix; "
                 f"the model must be on a path every node sees (no hub download in Slurm mode)"]
        return [process], files, notes

    def expected_parse(self, case, plan, process) -> dict:
        layout = case.layout
        expected = {"model": case.model.path, "tensor_parallel_size": layout.tp,
                    "pipeline_parallel_size": layout.pp,
                    "moe_expert_parallel_size": layout.ep if layout.ep > 1 else None,
                    "port": plan.port,
                    "gpus_per_node": layout.gpus_per_node if layout.nodes > 1 else None}
        return expected

    def version_argv(self, command):
        python = command[0] if is_python(command[0]) else "python3"
        return [python, "-c", "import tensorrt_llm; print(tensorrt_llm.__version__)"]
