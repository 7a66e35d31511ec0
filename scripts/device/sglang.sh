#!/usr/bin/env bash
# SGLang on the GPU machine, after scripts/device/sglang-on-device.sh install. Through llmconform's launcher and
# fixtures (matrices/gpu-sglang.yaml). One STEP per `run` call (each under the 10-minute limit; a server start is
# ~60-150 s):
#   STEP=suites PART=conformance  the OpenAI conformance suites and the equivalence probes on qwen2-tiny-tp1;
#   STEP=suites PART=probes       the equivalence probes on the determinism switch and the fp32 control;
#   STEP=suites PART=moe          the equivalence probes on the tiny MoE at tp1;
#   STEP=suites PART=multi        the multi-GPU layouts in MULTI (needs 2+ GPUs: tp2, tp2ep2, tp2adp2);
#   STEP=throughput               the throughput suite on the Qwen2.5-7B shape;
#   STEP=fidelity                 one server started from the plan's argv (`llmconform plan --json`), our load
#      generator and `python -m sglang.bench_serving` at concurrency 1, 64 and 256 (512 tokens in / 128 out, ignore
#      EOS, same request counts; at 256 ours also in one process).
# The first suites run (one session over four cases, 450 s) ended after the first case: its server start took 145 s,
# per-test probes of SGLang's generating /health ~100 s (llmconform now asks /v1/models), and the first request with
# top_p < 1 106 s (FlashInfer JIT-compiled its sampling kernel, the scheduler blocked).
# LIMIT: seconds per pytest session. Results: $OUT/sglang-$STEP[-$PART].tar.gz (one file per call).
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LLMCONFORM_CACHE=/tmp/llmconform-cache
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader
python3 -c "import sglang, torch; print('sglang', sglang.__version__, 'torch', torch.__version__)"
STEP=${STEP:-suites} PART=${PART:-conformance}
NAME=sglang-$STEP$([ $STEP = suites ] && echo "-$PART")
R=/tmp/$NAME; mkdir -p $R
LIMIT=${LIMIT:-480} GPUS=$(nvidia-smi -L | wc -l)
MULTI=${MULTI-"qwen2-tiny-tp2 qwen3moe-tiny-tp2 qwen3moe-tiny-tp2ep2 qwen3moe-tiny-tp2adp2"}
cases() { for c in "$@"; do printf -- '--case sglang-%s ' "$c"; done; }
run_pytest() { local name=$1; shift
  timeout -k 30 $LIMIT python3 -m pytest "$@" --matrix matrices/gpu-sglang.yaml -p no:cacheprovider -q -rfEsx \
    --report-dir $R/$name > $R/$name.log 2>&1; echo "== $name: exit $?"; tail -n 6 $R/$name.log; }
case $STEP in
suites)
  case $PART in
  conformance)
    # FlashInfer builds its top-k/top-p sampling kernel with nvcc on first use (flashinfer/sampling.py
    # get_sampling_module -> build_and_load; ~100 s on the H200 machine, cached under ~/.cache/flashinfer): build it
    # beside the server start instead of inside the first request with top_p < 1 (a file lock keeps one build).
    timeout 400 python3 -c "from flashinfer.sampling import get_sampling_module as m; m(); print('built')" \
      > $R/flashinfer-jit.log 2>&1 &
    run_pytest tp1 llmconform/suites $(cases qwen2-tiny-tp1) -k "not test_throughput"
    wait ;;
  probes) run_pytest probes llmconform/suites/test_equivalence.py $(cases qwen2-tiny-deterministic-tp1 qwen2-tiny-fp32-tp1) ;;
  moe)    run_pytest moe llmconform/suites/test_equivalence.py $(cases qwen3moe-tiny-tp1) ;;
  multi)
    if [ "$GPUS" -ge 2 ] && [ -n "$MULTI" ]; then
      run_pytest multi llmconform/suites/test_equivalence.py $(cases $MULTI)
    else
      echo "not run: $MULTI ($GPUS GPU(s); the multi-GPU layouts need 2)"
    fi ;;
  *) echo "PART is conformance, probes, moe or multi" >&2; exit 2 ;;
  esac ;;
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
      timeout 240 python3 -m llmconform.cli bench run --engine sglang --base-url http://127.0.0.1:30000 --model qwen2.5-7b \
        --tokenizer $M --input-tokens 512 --output-tokens 128 --concurrency $c --requests $n --out $R/$name \
        $([ $w = 1 ] && echo --workers 1) > $R/$name.txt 2>&1; tail -n 4 $R/$name.txt
    done
    # random-ids draws 512 token ids per prompt; without --tokenize-prompt they are decoded to text and the server
    # tokenizes that text again, which made 5120-token prompts (sglang/benchmark/datasets/random.py
    # sample_random_requests, return_text). --tokenize-prompt sends the ids as input_ids, which only `--backend
    # sglang` (native /generate) takes (benchmark/serving.py): exactly 512 in; --random-range-ratio 1 fixes the
    # lengths (datasets/common.py compute_random_lens), ignore_eos is its default: exactly 128 out.
    timeout 240 python3 -m sglang.bench_serving --backend sglang --tokenize-prompt --base-url http://127.0.0.1:30000 \
      --model qwen2.5-7b --tokenizer $M --dataset-name random-ids --random-input-len 512 --random-output-len 128 \
      --random-range-ratio 1 --num-prompts $n --max-concurrency $c --warmup-requests 2 \
      --output-file $R/sglang-bench-c$c.jsonl > $R/sglang-bench-c$c.txt 2>&1; tail -n 25 $R/sglang-bench-c$c.txt
  done
  # SIGTERM to the leader only: SGLang's handler drains, stops its schedulers and kills its own tree; a SIGTERM to
  # the group killed scheduler_0 first and took the crash path (SIGQUIT) in the first run (as in llmconform's stop)
  kill -TERM $S 2>/dev/null
  for _ in $(seq 30); do kill -0 $S 2>/dev/null || break; sleep 1; done
  kill -KILL -- -$S 2>/dev/null
  pgrep -af sglang || echo "teardown: no sglang process left" ;;
esac
tar czf $OUT/$NAME.tar.gz -C $R .
