#!/usr/bin/env bash
# The Qwen2.5-7B shape at TP1 on one H100: our load generator against `vllm bench serve` on the same server
# (fidelity), then (unless SUITE=0) the throughput suite with the research anchors as floors.
set -uo pipefail
source scripts/device/env.sh
R=/tmp/perf; mkdir -p $R
M=$(python3 -m llmconform.cli models make qwen2.5-7b)
CUDA_VISIBLE_DEVICES=0 python3 -m vllm.entrypoints.cli.main serve $M --served-model-name qwen2.5-7b \
  --load-format dummy --port 8000 > $R/server.log 2>&1 & S=$!
until curl -sf localhost:8000/v1/models >/dev/null; do kill -0 $S || { tail -50 $R/server.log; exit 1; }; sleep 5; done
timeout 300 python3 -m llmconform.cli bench compare-vllm --base-url http://127.0.0.1:8000 --model qwen2.5-7b --tokenizer $M \
  --input-tokens 512 --output-tokens 128 --concurrency 1 64 --rounds 2 \
  --vllm-bench "python3 -m vllm.entrypoints.cli.main bench serve" --out $R/fidelity 2>&1 | tee $R/fidelity.txt
kill $S; wait $S
[ "${SUITE:-1}" = 0 ] || timeout 280 python3 -m pytest suites/test_throughput.py --matrix matrices/h100-perf.yaml -p no:cacheprovider -q -rfEs \
  --report-dir $R/suite > $R/suite.log 2>&1
[ "${SUITE:-1}" = 0 ] || tail -5 $R/suite.log
tar czf $OUT/perf.tar.gz -C $R .
