#!/usr/bin/env bash
# Conformance (dense tp1 and tp2) and equivalence (every layout vs tp1) of the tiny models on a 2x H100 machine.
# Dense and MoE run as two sessions at once: the GPU leases keep their servers on disjoint GPUs.
set -uo pipefail
source scripts/device/env.sh
R=/tmp/reports; mkdir -p $R
timeout 420 python3 -m pytest suites --matrix matrices/gpu-equivalence.yaml \
  -k "qwen2-tiny and (test_equivalence or qwen2-tiny-tp1 or qwen2-tiny-tp2)" \
  -p no:cacheprovider -q -rfEx --report-dir $R/dense > $R/dense.log 2>&1 &
timeout 420 python3 -m pytest suites/test_equivalence.py --matrix matrices/gpu-equivalence.yaml -k qwen3moe-tiny \
  -p no:cacheprovider -q -rfEx --report-dir $R/moe > $R/moe.log 2>&1 &
wait
tail -5 $R/dense.log $R/moe.log
tar czf $OUT/suites.tar.gz -C $R .
