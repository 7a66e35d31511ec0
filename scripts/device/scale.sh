#!/usr/bin/env bash
# Load-generator scaling (issue 17) on one GPU: the Qwen2.5-7B shape (dummy weights, our config-only model) served
# by the staged vLLM, then at concurrency $CONC (default 1 64 256 512) with 512 tokens in and 128 out: our client with
# worker processes against `vllm bench serve` in $ROUNDS (default 2) alternating rounds, then our client in one
# process (scale.py). Two rounds of the four points take ~11 minutes: split CONC over two calls ("1 64", "256 512").
# Results: $OUT/scale.md (the table), $OUT/scale.tar.gz (raw records, vllm bench results and logs, the server log).
# DIAGNOSE=256 instead: at that concurrency only, the tools in turns with the server's own mean ITL and its threads'
# CPU per run, then again with the server pinned to CPUs 0-7 and the clients to the rest (scale_diagnose.py).
set -uo pipefail
source scripts/device/env.sh
R=/tmp/scale; mkdir -p $R
CONC=${CONC:-1 64 256 512}
nproc
M=$(python3 -m llmconform.cli models make qwen2.5-7b)
CUDA_VISIBLE_DEVICES=0 python3 -m vllm.entrypoints.cli.main serve $M --served-model-name qwen2.5-7b \
  --load-format dummy --host 127.0.0.1 --port 8000 > $R/server.log 2>&1 & S=$!
until curl -sf localhost:8000/v1/models >/dev/null; do kill -0 $S || { tail -50 $R/server.log; exit 1; }; sleep 5; done
BENCH="python3 -m vllm.entrypoints.cli.main bench serve"
if [ -n "${DIAGNOSE:-}" ]; then  # one point, the server's own ITL and threads under each tool (scale_diagnose.py)
  timeout -k 10 ${LIMIT:-420} python3 scripts/device/scale_diagnose.py --base-url http://127.0.0.1:8000 \
    --model qwen2.5-7b --tokenizer $M --vllm-bench "$BENCH" --server-pid $S --concurrency $DIAGNOSE \
    --rounds ${ROUNDS:-2} --out $R/diagnose 2>&1 | tee $R/diagnose.log
else
  timeout -k 10 ${LIMIT:-420} python3 scripts/device/scale.py --base-url http://127.0.0.1:8000 --model qwen2.5-7b \
    --tokenizer $M --vllm-bench "$BENCH" --concurrency $CONC --rounds ${ROUNDS:-2} --out $R/results 2>&1 \
    | tee $R/scale.log
fi
kill $S; wait $S
cp $R/results/scale.md $OUT/scale.md 2>/dev/null
tar czf $OUT/scale.tar.gz -C $R .
