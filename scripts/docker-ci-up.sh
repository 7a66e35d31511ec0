#!/usr/bin/env bash
# Start an isolated Docker daemon for the docker launcher's tests (needs root; docs/engines.md#where-engines-run-slurm-and-docker): its own
# data-root, exec-root and socket under BASE, no iptables rules and no bridge (the launcher uses the host network),
# and a fake nvidia-container-runtime-hook on its PATH so that `--gpus` requests are accepted without a GPU.
# Prints the DOCKER_HOST to use. Stop it with docker-ci-down.sh (same BASE).
set -euo pipefail
BASE=${BASE:-/tmp/llmconform-docker}
if ! command -v dockerd >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi
mkdir -p "$BASE/fakegpu"
[ -f "$BASE/ip_forward.before" ] || cat /proc/sys/net/ipv4/ip_forward > "$BASE/ip_forward.before"
printf '#!/bin/sh\ncat >/dev/null; exit 0\n' > "$BASE/fakegpu/nvidia-container-runtime-hook"
chmod +x "$BASE/fakegpu/nvidia-container-runtime-hook"
export DOCKER_HOST="unix://$BASE/docker.sock"
if docker version >/dev/null 2>&1; then echo "export DOCKER_HOST=$DOCKER_HOST"; exit 0; fi   # already up
# setsid: the daemon must not get the terminal's signals, nor die with the shell that started it.
PATH="$BASE/fakegpu:$PATH" setsid dockerd --iptables=false --bridge=none \
  --data-root "$BASE/data" --exec-root "$BASE/exec" --pidfile "$BASE/dockerd.pid" -H "$DOCKER_HOST" \
  >"$BASE/dockerd.log" 2>&1 </dev/null &
echo $! > "$BASE/dockerd.launched-pid"   # dockerd deletes its own pidfile on exit; this one stays for the down script
for ((t=0; t<300; t++)); do
  docker version >/dev/null 2>&1 && { echo "export DOCKER_HOST=$DOCKER_HOST"; exit 0; }
  kill -0 "$(cat "$BASE/dockerd.launched-pid")" 2>/dev/null || break
  sleep 0.1
done
echo "dockerd did not come up; last lines of $BASE/dockerd.log:" >&2; tail -n 20 "$BASE/dockerd.log" >&2
exit 1
