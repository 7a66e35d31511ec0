#!/usr/bin/env bash
# The upgrade gate on real vLLM (after stage p2 installed it; scripts/device/README.md): the tiny dense model at tp1
# run twice (conformance and the equivalence suite), the second run being the noise control of an engine that changed
# nothing; then `llmconform compare` of the two. Expect exit 0 (no regression), the probes bit-identical or identical
# tokens with a small logprob delta (bf16), and identity lines naming the GPU, driver and the engine's torch/CUDA. LIMIT: seconds per run. Results:
# $OUT/gate.tar.gz (both report dirs and regression.md/json/html).
set -uo pipefail
source scripts/device/env.sh
R=/tmp/gate; mkdir -p $R
LIMIT=${LIMIT:-240}
for run in baseline rerun; do
  timeout -k 30 $LIMIT python3 -m pytest llmconform/suites --matrix matrices/gpu-equivalence.yaml --case vllm-qwen2-tiny-tp1 \
    -p no:cacheprovider -q -rfEx --report-dir $R/$run > $R/$run.log 2>&1
  echo "== $run: exit $?"; tail -n 3 $R/$run.log
done
python3 -m llmconform.cli compare $R/baseline $R/rerun --out $R/gate > $R/gate.log 2>&1
echo "== compare: exit $?"; head -n 40 $R/gate.log
tar czf $OUT/gate.tar.gz -C $R .
