import shutil

import pytest
from paths import CPU_SMOKE, VLLM_CPU

from llmconform.config import matrix


def pytest_collection_modifyitems(items):
    if not VLLM_CPU.exists():
        for item in items:
            if "engine" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=f"vLLM-CPU not installed at {VLLM_CPU} "
                                                        f"(scripts/install-vllm-cpu.sh)"))


@pytest.fixture(scope="session")
def cpu_cases():
    """cpu-smoke's cases by layout: the real vLLM-CPU configurations CI runs."""
    return {str(c.layout): c for c in matrix.load(CPU_SMOKE).cases}


@pytest.fixture(scope="session")
def has_slurm():
    return shutil.which("salloc") is not None
