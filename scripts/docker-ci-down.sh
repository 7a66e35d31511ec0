#!/usr/bin/env bash
# Stop what docker-ci-up.sh started: the containers of that daemon, the daemon (by its pid, if it is still dockerd),
# its network-namespace mount, its files; ip_forward goes back to its value before (dockerd sets it to 1 even with
# --bridge=none).
BASE=${BASE:-/tmp/llmconform-docker}
export DOCKER_HOST="unix://$BASE/docker.sock"
[ -d "$BASE" ] || exit 0
if docker version >/dev/null 2>&1; then docker ps -aq | xargs -r docker rm -f >/dev/null; fi
p=$(cat "$BASE/dockerd.launched-pid" 2>/dev/null || true)
if [ -n "$p" ] && [ "$(cat /proc/$p/comm 2>/dev/null)" = dockerd ]; then
  kill -TERM "$p"
  for ((t=0; t<150; t++)); do [ -d /proc/$p ] || break; sleep 0.1; done
  [ -d /proc/$p ] && kill -KILL "$p"
fi
umount "$BASE/exec/netns/default" 2>/dev/null || true
cat "$BASE/ip_forward.before" 2>/dev/null > /proc/sys/net/ipv4/ip_forward || echo 0 > /proc/sys/net/ipv4/ip_forward
rm -rf "$BASE"
