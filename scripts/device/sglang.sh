#!/usr/bin/env bash
# SGLang on the GPU machine, after scripts/device/sglang-on-device.sh install. Through llmconform's launcher and
# fixtures (matrices/gpu-sglang.yaml):
#   1. STEP=suites: conformance + equivalence probes on tp1 (dense bf16, the determinism switch and its control,
#      fp32, MoE), and the multi-GPU layouts in MULTI when the machine has 2+ GPUs (the two sessions run at once on
#      disjoint GPUs);
#   2. STEP=throughput: the throughput suite on the Qwen2.5-7B shape; 3. STEP=fidelity: one server started from the plan's
#      argv (`llmconform plan --json`), our load generator and `python -m sglang.bench_serving` at concurrency 1, 64
#      and 256 (random 512 in / 128 out, ignore EOS, same request counts; at 256 ours also in one process).
# LIMIT: seconds per pytest session. Results: $OUT/sglang-$STEP.tar.gz (one file per step).
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LLMCONFORM_CACHE=/tmp/llmconform-cache
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader
python3 -c "import sglang, torch; print('sglang', sglang.__version__, 'torch', torch.__version__)"
R=/tmp/sglang-${STEP:-suites}; mkdir -p $R
LIMIT=${LIMIT:-420} GPUS=$(nvidia-smi -L | wc -l)
MULTI=${MULTI-"qwen2-tiny-tp2 qwen3moe-tiny-tp2 qwen3moe-tiny-tp2ep2 qwen3moe-tiny-tp2adp2"}
cases() { for c in "$@"; do printf -- '--case sglang-%s ' "$c"; done; }
run_pytest() { local name=$1; shift
  timeout -k 30 $LIMIT python3 -m pytest "$@" --matrix matrices/gpu-sglang.yaml -p no:cacheprovider -q -rfEsx \
    --report-dir $R/$name > $R/$name.log 2>&1; echo "== $name: exit $?"; tail -n 6 $R/$name.log; }
case ${STEP:-suites} in
suites)
  run_pytest tp1 llmconform/suites $(cases qwen2-tiny-tp1 qwen2-tiny-deterministic-tp1 qwen2-tiny-fp32-tp1 qwen3moe-tiny-tp1) \
    -k "not test_throughput" &
  if [ "$GPUS" -ge 3 ] && [ -n "$MULTI" ]; then
    run_pytest multi llmconform/suites/test_equivalence.py $(cases $MULTI) &
  else
    echo "not run: $MULTI ($GPUS GPU(s): the tp1 session holds one, the multi-GPU layouts need 2 more)"
  fi
  wait ;;
throughput)
  run_pytest throughput llmconform/suites/test_throughput.py $(cases qwen2.5-7b-tp1) ;;
fidelity)
  M=$(python3 -m llmconform.cli models make qwen2.5-7b)
  ARGV=$(python3 -m llmconform.cli plan matrices/gpu-sglang.yaml --json | python3 -c "
import json, shlex, sys
case = next(c for c in json.load(sys.stdin)['cases'] if c['id'] == 'sglang-qwen2.5-7b-tp1')
print(shlex.join(case['plan']['processes'][0]['argv']))")
  echo "fidelity server: $ARGV"
  CUDA_VISIBLE_DEVICES=0 setsid $ARGV > $R/server.log 2>&1 & S=$!
  until curl -sf localhost:30000/health_generate >/dev/null; do
    kill -0 $S 2>/dev/null || { tail -50 $R/server.log; break; }; sleep 5; done
  for c in 1 64 256; do
    n=$((c == 1 ? 16 : 5 * c))
    # at c256 also one process (--workers 1): the client's share of ITL with and without worker processes (issue 17)
    for w in auto $([ $c = 256 ] && echo 1); do
      name=ours-c$c$([ $w = 1 ] && echo -w1)
      timeout 240 python3 -m llmconform.cli bench run --base-url http://127.0.0.1:30000 --model qwen2.5-7b \
        --tokenizer $M --input-tokens 512 --output-tokens 128 --concurrency $c --requests $n --out $R/$name \
        $([ $w = 1 ] && echo --workers 1) > $R/$name.txt 2>&1; tail -n 4 $R/$name.txt
    done
    timeout 240 python3 -m sglang.bench_serving --backend sglang-oai --base-url http://127.0.0.1:30000 \
      --model qwen2.5-7b --tokenizer $M --dataset-name random-ids --random-input-len 512 --random-output-len 128 \
      --random-range-ratio 1 --num-prompts $n --max-concurrency $c --warmup-requests 2 \
      --output-file $R/sglang-bench-c$c.jsonl > $R/sglang-bench-c$c.txt 2>&1; tail -n 25 $R/sglang-bench-c$c.txt
  done
  kill -TERM -- -$S 2>/dev/null; sleep 10; kill -KILL -- -$S 2>/dev/null
  pgrep -af sglang || echo "teardown: no sglang process left" ;;
esac
tar czf $OUT/sglang-${STEP:-suites}.tar.gz -C $R .
