#!/usr/bin/env bash
# Runs ON the GPU machine. `stage`: keep the carried part(s) of .stage/sg*; `install`: once every part arrived,
# assemble SGLang into /tmp/site (PYTHONPATH, beside the image's torch 2.11). Parts come from stage-sglang.sh.
set -euo pipefail
S=/tmp/stg-sglang SITE=/tmp/site
case "${1:-}" in
stage)   mkdir -p $S && cp .stage/sg*/part.* $S/ && ls -la $S ;;
install) cd $S && cat part.* > all.tar && tar xf all.tar && rm -f part.* all.tar
         mkdir -p $SITE && python3 -m pip install -q --no-index --no-deps --no-compile --target $SITE main/*.whl deps/*.whl
         PYTHONPATH=$SITE python3 -c "import sglang, torch, sgl_kernel, flashinfer; print('sglang', sglang.__version__, 'torch', torch.__version__, 'gpus', torch.cuda.device_count())" ;;
*) echo "usage: sglang-on-device.sh stage|install" >&2; exit 2 ;;
esac
