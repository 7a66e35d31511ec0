#!/usr/bin/env bash
# Build the parts that put real SGLang on the lent GPU machine (python 3.12, torch 2.11 + CUDA 13, no network).
# Run from the project root on your own machine; makes .stage/sg0 .. .stage/sgN (each < 60 MB, git-ignored).
# SGLANG/KERNEL/FLASHINFER pick another release that matches the machine's torch (docs/engines.md#sglang-releases-and-torch).
# Dependencies: resolve_deps.py walks the wheels' requirements for python 3.12, minus what the machine's image has
# (gpu-image-packages.txt, from /work/.library/device/KINDS.md, with the versions its pip list row gives) unless the
# image's version does not satisfy a requirement, or, where its version is unknown, SGLang pins one (==): those travel.
# Then, one `run` per part (carry .stage/sgK), back to back on one machine: `bash scripts/device/sglang-on-device.sh
# stage`; after the last part also `bash scripts/device/sglang-on-device.sh install` (scripts/device/README.md).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SGLANG=${SGLANG:-0.5.16} KERNEL=${KERNEL:-0.4.5} FLASHINFER=${FLASHINFER:-0.6.14}
# Left behind to save three parts: kernels of DeepSeek's sparse attention (tilelang: imported only by
# kernels/ops/attention/{dsa,dsv4}) and tokenspeed's MLA (no module-level import). SKIP= carries everything.
export SKIP=${SKIP-"tilelang tokenspeed-mla tokenspeed-triton"}
W=$(mktemp -d); start=$SECONDS
PLAT="--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --platform manylinux_2_34_x86_64
 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
 --platform manylinux_2_27_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux1_x86_64"
export PIP_CONFIG_FILE=/dev/null
pip download -q --no-deps $PLAT "sglang==$SGLANG" "sglang-kernel==$KERNEL" "flashinfer-python==$FLASHINFER" -d "$W/main"
python3 "$HERE/resolve_deps.py" "$W/main" "$HERE/gpu-image-packages.txt" "$W/deps" $PLAT > "$W/deps.txt"
cp "$W/deps.txt" "$W/main/"
(cd "$W" && tar cf all.tar main deps && split -b 58M -d all.tar part.)
rm -rf .stage/sg* && i=0
for p in "$W"/part.*; do mkdir -p .stage/sg$i && mv "$p" .stage/sg$i/; i=$((i+1)); done

echo "$(wc -l < "$W/deps.txt") dependencies carried: $(tr '\n' ' ' < "$W/deps.txt")"
rm -rf "$W"; du -sh .stage/sg*; echo "staged in $((SECONDS - start)) s: $i parts"
