# Sourced by the device scripts: the staged vLLM on the path, the repo importable, results collected in $OUT.
export PYTHONPATH=/tmp/site:$PWD VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONUNBUFFERED=1
export LLMCONFORM_CACHE=/tmp/llmconform-cache
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader
python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
