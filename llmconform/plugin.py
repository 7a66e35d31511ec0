"""pytest plugin: options, markers, and the fixtures that hand suites a ready server."""

from __future__ import annotations

MARKERS = {
    "engine": "needs a running engine server (the `llm` fixture)",
    "gpu": "needs at least one GPU",
    "multinode": "needs several nodes (run inside a SLURM allocation)",
    "perf": "measures performance (throughput, latency) against floors",
    "slow": "takes minutes",
    "vllm": "runs against vLLM",
    "sglang": "runs against SGLang",
    "trtllm": "runs against TensorRT-LLM",
}


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
