"""What a run ran on, and where two runs differ in anything but the engine being gated.

The plugin writes `run.json` into the report dir when a session starts: the llmconform version, the exact argv, the
host and Python, the GPUs (model, count, driver; nvidia-smi), and the declared deviations in force (the packaged
list and any LLMCONFORM_DEVIATIONS files, with their entries, so that `llmconform compare` judges both runs by what
they declared). Each server adds its own record (`ReportDir.server(case).record`): the engine version the server reports
next to the one the matrix names, the engine's argv, and the torch/CUDA versions of the engine's interpreter.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from llmconform import __version__
from llmconform.engines import deviations as known
from llmconform.errors import UserError
from llmconform.reports.report_dir import ReportDir

# Package versions of an engine's interpreter, read without importing torch (which takes seconds); CUDA from
# torch/version.py.
_RUNTIME_PROBE = """
import importlib.metadata as m, importlib.util as u, json, os, re
out = {}
for name in ("torch", "vllm", "sglang", "tensorrt_llm"):
    try:
        out[name] = m.version(name)
    except m.PackageNotFoundError:
        pass
spec = u.find_spec("torch")
if spec and spec.origin:
    text = open(os.path.join(os.path.dirname(spec.origin), "version.py")).read()
    found = re.search(r"^cuda\\s*(?::[^=]*)?=\\s*['\\"]([^'\\"]+)", text, re.M)
    out["cuda"] = found.group(1) if found else None
print(json.dumps(out))
"""


def describe_here(argv: list[str], deviation_files: list[Path]) -> dict:
    from llmconform.serving.server import gpu_description

    return {"llmconform": __version__, "argv": list(argv), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": platform.node(), "python": platform.python_version(), "gpu": gpu_description(),
            "deviation_files": [str(p) for p in deviation_files],
            "deviations": [asdict(d) for path in deviation_files for d in known.load(path)]}


def write(report: ReportDir, identity: dict) -> None:
    report.run_identity.write_text(json.dumps(identity, indent=1) + "\n")


def engine_runtime(executable: str) -> dict | None:
    """torch/CUDA/engine package versions of the interpreter behind an engine executable (a Python console script or
    a python), or None when it cannot be told (not a Python program, not on this machine)."""
    interpreter = _interpreter(executable)
    if interpreter is None:
        return None
    try:
        out = subprocess.run([interpreter, "-c", _RUNTIME_PROBE], capture_output=True, text=True, timeout=60,
                             check=False)
        return json.loads(out.stdout) if out.returncode == 0 else None
    except (subprocess.SubprocessError, OSError, ValueError):
        return None


def _interpreter(executable: str) -> str | None:
    path = shutil.which(executable) or executable
    if Path(path).name.startswith("python"):
        return path
    try:
        with open(path, "rb") as script:
            first = script.readline(300).decode(errors="replace")
    except OSError:
        return None
    if first.startswith("#!") and "python" in first:
        return first[2:].split()[0]
    return None


def same_release(reported: str, planned: str) -> bool:
    """'0.32.0+cpu' is release 0.32.0; a matrix's '0.32' names every 0.32.x."""
    reported_parts = reported.split("+")[0].lstrip("v").split(".")
    planned_parts = planned.split("+")[0].lstrip("v").split(".")
    return reported_parts[:len(planned_parts)] == planned_parts


# --- reading a run back ------------------------------------------------------------------------------------------
def load(report: ReportDir) -> dict:
    """run.json (empty for runs made before it existed) and the servers' records, by case id."""
    identity = _read_json(report.run_identity) if report.run_identity.is_file() else {}
    servers = {}
    for case_id, record_path in report.server_records().items():
        record = _read_json(record_path)
        servers[record.get("case") or case_id] = record
    return {**identity, "servers": servers}


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except ValueError as error:
        raise UserError(f"{path}: not valid JSON ({error}); was the run interrupted while writing it?") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def declared_deviations(identity: dict) -> list[known.Deviation] | None:
    """The deviations the run declared, or None when it did not record them (runs made before run.json)."""
    if "deviations" not in identity:
        return None
    return [known.Deviation(**entry) for entry in identity["deviations"]]


def version_warnings(identity: dict, name: str) -> list[str]:
    """A server that reported another engine version than the matrix names."""
    out = []
    for case_id, record in identity["servers"].items():
        reported, planned = record.get("version"), record.get("planned_version")
        if reported and planned and not same_release(reported, planned):
            out.append(f"{name} {case_id}: the server reports {record.get('engine')} {reported}, the matrix says "
                       f"{planned} (versions below are the server's)")
    return out


def differences(baseline: dict, candidate: dict) -> list[str]:
    """Where two runs differ in anything but the engine being gated (its version, install and torch/CUDA)."""
    out = []
    for key, what in (("gpu", "GPUs"), ("llmconform", "llmconform version"), ("python", "Python of llmconform")):
        if baseline.get(key) != candidate.get(key):
            out.append(f"{what}: {_show(baseline.get(key))} vs {_show(candidate.get(key))}")
    if baseline.get("deviations") != candidate.get("deviations") and "deviations" in baseline \
            and "deviations" in candidate:
        out.append(f"declared deviations: files {baseline.get('deviation_files')} vs "
                   f"{candidate.get('deviation_files')} (their entries differ)")
    for case_id in sorted(baseline["servers"].keys() & candidate["servers"].keys()):
        old, new = baseline["servers"][case_id], candidate["servers"][case_id]
        if old.get("gpu") != new.get("gpu"):
            out.append(f"{case_id}: GPUs {_show(old.get('gpu'))} vs {_show(new.get('gpu'))}")
        if old.get("hosts") != new.get("hosts"):
            out.append(f"{case_id}: hosts {old.get('hosts')} vs {new.get('hosts')}")
        for key, what in (("case_args", "engine arguments"), ("case_env", "engine environment")):
            if old.get(key) != new.get(key) and key in old and key in new:
                out.append(f"{case_id}: {what} the matrix sets differ: {_changed(old[key], new[key])}")
    return out


def _changed(old: dict, new: dict) -> str:
    keys = sorted(old.keys() | new.keys())
    return ", ".join(f"{k}: {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}"
                     for k in keys if old.get(k) != new.get(k))


def runtime_line(identity: dict) -> str:
    """Engine versions, torch/CUDA and GPUs of a run, one line."""
    parts = []
    for record in identity["servers"].values():
        runtime = record.get("runtime") or {}
        text = f"{record.get('engine')} {record.get('version') or record.get('planned_version') or '?'}"
        if runtime.get("torch"):
            text += f", torch {runtime['torch']}" + (f" (CUDA {runtime['cuda']})" if runtime.get("cuda") else "")
        if text not in parts:
            parts.append(text)
    gpu = identity.get("gpu")
    parts.append(f"{gpu['count']}x {gpu['name']}, driver {gpu['driver']}" if gpu else "no GPU")
    return "; ".join(parts)


def _show(value) -> str:
    if isinstance(value, dict) and {"name", "count"} <= value.keys():
        return f"{value['count']}x {value['name']} (driver {value.get('driver')})"
    return "none" if value is None else str(value)


def argv_here() -> list[str]:
    return [sys.executable, *sys.argv]
