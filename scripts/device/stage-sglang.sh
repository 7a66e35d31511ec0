#!/usr/bin/env bash
# Build the parts that put real SGLang on the lent GPU machine (python 3.12, torch 2.11 + CUDA 13, no network).
# Run from the project root on your own machine; makes .stage/sg0 .. .stage/sgN (each < 60 MB, git-ignored).
# SGLANG/KERNEL/FLASHINFER pick another release that matches the machine's torch (research/sglang-device.md).
# Dependencies: resolved by pip for python 3.12, minus what the machine's image has (gpu-image-packages.txt, from
# /work/.library/device/KINDS.md), except where SGLang pins a version (==) other than torch's family: those travel.
# Then, one `run` per part (carry .stage/sgK), back to back on one machine: `bash scripts/device/sglang-on-device.sh
# stage`; after the last part also `bash scripts/device/sglang-on-device.sh install` (scripts/device/README.md).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SGLANG=${SGLANG:-0.5.16} KERNEL=${KERNEL:-0.4.5} FLASHINFER=${FLASHINFER:-0.6.14}
W=$(mktemp -d); start=$SECONDS
PLAT="--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --platform manylinux_2_34_x86_64
 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
 --platform manylinux_2_27_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux1_x86_64"
export PIP_CONFIG_FILE=/dev/null
pip download -q --no-deps $PLAT "sglang==$SGLANG" "sglang-kernel==$KERNEL" "flashinfer-python==$FLASHINFER" -d "$W/main"
# What pip would install for python 3.12 (no install: --dry-run --report), then what the machine lacks.
pip install -q --dry-run --ignore-installed --report "$W/report.json" $PLAT --target "$W/none" \
  "sglang==$SGLANG" "sglang-kernel==$KERNEL" "flashinfer-python[cu13]==$FLASHINFER" \
  "torch==2.11.0" "torchaudio==2.11.0" >/dev/null
python3 - "$W/report.json" "$HERE/gpu-image-packages.txt" "$W"/main/sglang-*.whl > "$W/deps.txt" <<'PY'
import json, re, sys, zipfile
report, have_file, wheel = sys.argv[1:]
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
have = {norm(l.strip()) for l in open(have_file) if l.strip()}
meta = zipfile.ZipFile(wheel).read(next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("METADATA"))).decode()
pinned = {norm(m.group(1)) for m in re.finditer(r"^Requires-Dist: ([A-Za-z0-9_.-]+)(\[[^]]*\])?==", meta, re.M)
          if "extra ==" not in m.group(0)}
machine_stack = re.compile(r"^(torch|torchaudio|torchvision|triton|nvidia-.*|cuda-.*)$")
for item in json.load(open(report))["install"]:
    name, version = norm(item["metadata"]["name"]), item["metadata"]["version"]
    if name in ("sglang", "sglang-kernel", "flashinfer-python") or machine_stack.match(name):
        continue
    if name in have and name not in pinned:
        continue
    print(f"{name}=={version}")
PY
pip download -q --no-deps $PLAT -r "$W/deps.txt" -d "$W/deps"
cp "$W/deps.txt" "$W/main/"
(cd "$W" && tar cf all.tar main deps && split -b 58M -d all.tar part.)
rm -rf .stage/sg* && i=0
for p in "$W"/part.*; do mkdir -p .stage/sg$i && mv "$p" .stage/sg$i/; i=$((i+1)); done

echo "$(wc -l < "$W/deps.txt") dependencies carried: $(tr '\n' ' ' < "$W/deps.txt")"
rm -rf "$W"; du -sh .stage/sg*; echo "staged in $((SECONDS - start)) s: $i parts"
