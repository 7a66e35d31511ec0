"""The hardware a case ran on, as floors name it: the GPU memory-bandwidth table (vendor datasheet figures) and the
detection of a case's GPU (its server.json, else nvidia-smi) or CPU."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GpuSpec:
    key: str  # dash-separated words that hardware profiles match against
    pattern: str  # regex on the name nvidia-smi reports
    bandwidth: float  # bytes per second, the vendor's peak HBM/GDDR figure


# Vendor datasheet figures (peak memory bandwidth per GPU). First match wins, so variants come before families.
GPUS: tuple[GpuSpec, ...] = (
    # https://www.nvidia.com/en-us/data-center/h100/ (specifications: H100 SXM 3.35 TB/s, H100 NVL 3.9 TB/s);
    # H100 PCIe: product brief PB-11133-001 ("greater than 2,000 GB/s"), 2.0 TB/s.
    GpuSpec("H100-NVL", r"\bH100\b.*\bNVL\b", 3.9e12),
    GpuSpec("H100-PCIe", r"\bH100\b.*\bPCIe\b", 2.0e12),
    GpuSpec("H100-SXM", r"\bH100\b", 3.35e12),  # nvidia-smi: "NVIDIA H100 80GB HBM3"
    # https://www.nvidia.com/en-us/data-center/h200/ (H200 SXM and H200 NVL: 4.8 TB/s)
    GpuSpec("H200-NVL", r"(?<!G)\bH200\b.*\bNVL\b", 4.8e12),
    GpuSpec("H200-SXM", r"(?<!G)\bH200\b", 4.8e12),
    # https://www.nvidia.com/en-us/data-center/grace-hopper-superchip/ (96 GB HBM3: 4 TB/s; 144 GB HBM3e: 4.9 TB/s)
    GpuSpec("GH200-144GB", r"\bGH200\b.*144", 4.9e12),
    GpuSpec("GH200-96GB", r"\bGH200\b", 4.0e12),
    # https://www.nvidia.com/en-us/data-center/dgx-b200/ (8x B200: 64 TB/s HBM3e in total, 8 TB/s each)
    GpuSpec("B200", r"\bB200\b", 8.0e12),
    # https://www.nvidia.com/en-us/data-center/a100/ (80GB PCIe 1,935 GB/s; 80GB SXM 2,039 GB/s; 40GB 1,555 GB/s)
    GpuSpec("A100-SXM-80GB", r"\bA100\b.*SXM.*80GB", 2.039e12),
    GpuSpec("A100-PCIe-80GB", r"\bA100\b.*80GB", 1.935e12),
    GpuSpec("A100-SXM-40GB", r"\bA100\b.*SXM", 1.555e12),
    GpuSpec("A100-PCIe-40GB", r"\bA100\b", 1.555e12),
    # https://www.nvidia.com/en-us/data-center/products/a30-gpu/ (933 GB/s)
    GpuSpec("A30", r"\bA30\b", 933e9),
    # https://www.nvidia.com/en-us/data-center/products/a10-gpu/ (600 GB/s; AWS's A10G has the same GDDR6 bus)
    GpuSpec("A10G", r"\bA10G\b", 600e9),
    GpuSpec("A10", r"\bA10\b", 600e9),
    # https://www.nvidia.com/en-us/data-center/l40s/ and /l40/ (864 GB/s); /l4/ (300 GB/s)
    GpuSpec("L40S", r"\bL40S\b", 864e9),
    GpuSpec("L40", r"\bL40\b", 864e9),
    GpuSpec("L4", r"\bL4\b", 300e9),
    # https://www.nvidia.com/en-us/data-center/v100/ (900 GB/s); /tesla-t4/ (320 GB/s)
    GpuSpec("V100", r"\bV100\b", 900e9),
    GpuSpec("T4", r"\bT4\b", 320e9),
)


def gpu_spec(name: str) -> GpuSpec | None:
    return next((g for g in GPUS if re.search(g.pattern, name, re.IGNORECASE)), None)


@dataclass(frozen=True)
class CaseHardware:
    """What a case ran on: `cpu`, or a GPU model (from server.json or nvidia-smi) and its memory bandwidth."""

    device: str  # "cuda" or "cpu"
    gpu_name: str | None = None
    gpu_count: int = 0

    @property
    def spec(self) -> GpuSpec | None:
        return gpu_spec(self.gpu_name) if self.gpu_name else None

    @property
    def key(self) -> str:
        if self.device == "cpu":
            return "cpu"
        if self.spec:
            return self.spec.key
        if self.gpu_name:  # a GPU outside the table: its own words ("NVIDIA GeForce RTX 4090" -> GEFORCE-RTX-4090)
            return "-".join(w for w in re.split(r"[^A-Za-z0-9]+", self.gpu_name) if w and w.upper() != "NVIDIA")
        return "unknown-gpu"

    @property
    def bandwidth(self) -> float | None:
        return self.spec.bandwidth if self.spec else None

    def matches(self, profile: str) -> bool:
        words = {w.upper() for w in self.key.split("-")}
        return all(w.upper() in words for w in profile.split("-"))

    def describe(self) -> str:
        if self.device == "cpu":
            return "cpu"
        return f"{self.key} ({self.gpu_name})" if self.gpu_name else self.key


def detect_hardware(device: str, server_json: Path | None = None) -> CaseHardware:
    """The hardware of a case: CPU for `device: cpu`; else the GPU that server.json recorded at start (nvidia-smi on
    the node that started it), else nvidia-smi here."""
    if device == "cpu":
        return CaseHardware("cpu")
    gpu = None
    if server_json is not None and server_json.is_file():
        gpu = json.loads(server_json.read_text()).get("gpu")
    if gpu is None:
        from llmconform.serving.server import gpu_description

        gpu = gpu_description()
    if not gpu:
        return CaseHardware(device)
    return CaseHardware(device, gpu_name=gpu.get("name"), gpu_count=int(gpu.get("count") or 1))
