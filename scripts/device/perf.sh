#!/usr/bin/env bash
# FIDELITY=1 (default): the Qwen2.5-7B shape at TP1 on one GPU, our load generator against `vllm bench serve` on the
# same server. Then the throughput suite on the cases of matrices/gpu-perf.yaml named in CASES (default: the 7B
# anchor; empty: none), LIMIT seconds at most. Results: $OUT/perf.tar.gz.
set -uo pipefail
source scripts/device/env.sh
R=/tmp/perf; mkdir -p $R
CASES=${CASES-vllm-qwen2.5-7b-tp1} LIMIT=${LIMIT:-280}
if [ "${FIDELITY:-1}" = 1 ]; then
  M=$(python3 -m llmconform.cli models make qwen2.5-7b)
  CUDA_VISIBLE_DEVICES=0 python3 -m vllm.entrypoints.cli.main serve $M --served-model-name qwen2.5-7b \
    --load-format dummy --port 8000 > $R/server.log 2>&1 & S=$!
  until curl -sf localhost:8000/v1/models >/dev/null; do kill -0 $S || { tail -50 $R/server.log; exit 1; }; sleep 5; done
  timeout 300 python3 -m llmconform.cli bench compare-vllm --base-url http://127.0.0.1:8000 --model qwen2.5-7b \
    --tokenizer $M --input-tokens 512 --output-tokens 128 --concurrency 1 64 --rounds 2 \
    --vllm-bench "python3 -m vllm.entrypoints.cli.main bench serve" --out $R/fidelity 2>&1 | tee $R/fidelity.txt
  kill $S; wait $S
fi
if [ -n "$CASES" ]; then
  timeout -k 30 $LIMIT python3 -m pytest llmconform/suites/test_throughput.py --matrix matrices/gpu-perf.yaml \
    $(for c in $CASES; do printf -- '--case %s ' "$c"; done) -p no:cacheprovider -q -rfEs --report-dir $R/suite \
    > $R/suite.log 2>&1
  tail -n 8 $R/suite.log
fi
tar czf $OUT/perf.tar.gz -C $R .
