#!/usr/bin/env bash
# The oracle models (llmconform/accuracy/oracle.py) on vLLM 0.26 in bf16, after staging (scripts/device/README.md): accuracy
# on held-out problems and the top-1/top-2 logprob margins (llmconform/suites/test_accuracy.py), and token-exact equivalence of
# every layout of matrices/gpu-accuracy.yaml named in DENSE and MOE against tp1. The oracles are the ones made on the
# CPU machine when carried in .oracle-cache (cp -r ~/.cache/llmconform/models .oracle-cache/), else trained here.
# LIMIT: seconds per session. Results: $OUT/accuracy.tar.gz (reports, accuracy/*.json with margins, logs).
set -uo pipefail
source scripts/device/env.sh
R=/tmp/reports-accuracy; mkdir -p $R $LLMCONFORM_CACHE/models
[ -d .oracle-cache ] && cp -r .oracle-cache/. $LLMCONFORM_CACHE/models/
python3 -m llmconform.cli models make qwen2-oracle qwen3moe-oracle > $R/make.log 2>&1 || tail -n 20 $R/make.log
DENSE=${DENSE-"tp1 tp2 pp2"} MOE=${MOE-"tp1 tp2ep2 dp2ep2"} LIMIT=${LIMIT:-420}
cases() { for layout in $2; do printf -- '--case vllm-%s-%s ' "$1" "$layout"; done; }
[ -z "$DENSE" ] || timeout -k 30 $LIMIT python3 -m pytest llmconform/suites/test_accuracy.py llmconform/suites/test_equivalence.py \
  --matrix matrices/gpu-accuracy.yaml $(cases qwen2-oracle "$DENSE") -k "accuracy or probe_set or greedy_outputs" \
  -p no:cacheprovider -q -rfEx --report-dir $R/dense > $R/dense.log 2>&1 &
[ -z "$MOE" ] || timeout -k 30 $LIMIT python3 -m pytest llmconform/suites/test_accuracy.py llmconform/suites/test_equivalence.py \
  --matrix matrices/gpu-accuracy.yaml $(cases qwen3moe-oracle "$MOE") -k "accuracy or probe_set or greedy_outputs" \
  -p no:cacheprovider -q -rfEx --report-dir $R/moe > $R/moe.log 2>&1 &
wait
for log in $R/*.log; do echo "== $log"; tail -n 5 $log; done
for f in $R/*/accuracy/*.json; do python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['layout'], d['model'], d['accuracy'], d['margins'])" $f; done
tar czf $OUT/accuracy.tar.gz -C $R .
