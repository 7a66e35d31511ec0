#!/usr/bin/env bash
# Conformance (dense) and equivalence (dense and MoE, every layout vs tp1) of the tiny models of
# matrices/gpu-equivalence.yaml on the layouts named in DENSE and MOE (case-id suffixes; an empty list skips that
# model; the defaults fit a 2-GPU machine). Dense and MoE run as two sessions at once: the GPU leases keep their
# servers on disjoint GPUs. LIMIT: seconds per session. Results: $OUT/suites.tar.gz.
set -uo pipefail
source scripts/device/env.sh
R=/tmp/reports; mkdir -p $R
DENSE=${DENSE-"tp1 tp2 pp2"} MOE=${MOE-"tp1 tp2ep2 dp2ep2"} LIMIT=${LIMIT:-420}
cases() { for layout in $2; do printf -- '--case vllm-%s-%s ' "$1" "$layout"; done; }
[ -z "$DENSE" ] || timeout -k 30 $LIMIT python3 -m pytest llmconform/suites --matrix matrices/gpu-equivalence.yaml \
  $(cases qwen2-tiny "$DENSE") -p no:cacheprovider -q -rfEx --report-dir $R/dense > $R/dense.log 2>&1 &
[ -z "$MOE" ] || timeout -k 30 $LIMIT python3 -m pytest llmconform/suites/test_equivalence.py --matrix matrices/gpu-equivalence.yaml \
  $(cases qwen3moe-tiny "$MOE") -p no:cacheprovider -q -rfEx --report-dir $R/moe > $R/moe.log 2>&1 &
wait
for log in $R/*.log; do echo "== $log"; tail -n 5 $log; done
tar czf $OUT/suites.tar.gz -C $R .
