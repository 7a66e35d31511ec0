"""Server lifecycle: start a plan's processes, wait until the API is ready (failing fast when a process exits or a
startup stage stalls), capture logs, and tear everything down (SIGTERM -> grace -> SIGKILL of every process the
server started, found by an environment marker), then wait for the GPUs' memory to be released."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from llmconform.config.case import Case
from llmconform.engines.base import Engine, Placement, Plan, Process
from llmconform.progress import Progress
from llmconform.redaction import redact_argv, redact_env
from llmconform.reports import run_identity
from llmconform.reports.report_dir import ServerDir
from llmconform.serving import launchers

MARKER_ENV = "LLMCONFORM_SERVER"  # set on every engine process; teardown finds stragglers by it
TAIL_LINES = 40


class EngineStartError(Exception):
    """An engine server did not become ready: where it got to, why (one line), and where its log is."""

    def __init__(self, case_id: str, stage: str, reason: str, diagnosis: str | None, log_path: str, tail: str,
                 exited: bool):
        self.case_id, self.stage, self.reason, self.diagnosis = case_id, stage, reason, diagnosis
        self.log_path, self.tail, self.exited = log_path, tail, exited
        super().__init__(self._text())

    def _text(self) -> str:
        diagnosis = self.diagnosis or "no known failure signature matched; read the log"
        return (f"{self.case_id}: engine failed during startup stage '{self.stage}': {self.reason}\n"
                f"  diagnosis: {diagnosis}\n  log: {self.log_path}\n  --- last {TAIL_LINES} log lines ---\n"
                f"{self.tail}")


@dataclass
class Running:
    process: Process
    popen: subprocess.Popen
    log_path: Path
    offset: int = 0


@dataclass
class Server:
    """One engine server of one case. `launch` starts a Process and returns its Popen (local, docker or srun)."""

    case: Case
    plan: Plan
    engine: Engine
    placement: Placement
    run_dir: ServerDir
    # launch(process, extra_env, log_path); it may carry .cleanup(marker) for what outlives the processes
    launch: Callable[[Process, dict[str, str], str], subprocess.Popen]
    marker: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    running: list[Running] = field(default_factory=list)
    log_text: str = ""
    stage: str = "starting"
    started_at: float = 0.0
    ready_s: float | None = None
    peak_rss_bytes: int = 0
    version: str | None = None
    runtime: dict | None = None  # torch/CUDA/engine package versions of a local engine's interpreter
    error: str | None = None
    progress: Progress = field(default_factory=Progress)  # where each stage change is shown (quiet by default)
    hung: str | None = None  # set by the watchdog: why the server was declared hung (and killed)
    _sampler: threading.Thread | None = None
    _stop_sampling: threading.Event = field(default_factory=threading.Event)

    @property
    def base_url(self) -> str:
        return self.plan.base_url

    @property
    def model(self) -> str:
        return self.plan.served_model

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.case.api_key}"} if self.case.api_key else {}

    @property
    def log_paths(self) -> list[Path]:
        return [r.log_path for r in self.running]

    # --- start ---------------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.run_dir.create()
        for name, text in self.plan.files.items():
            self.run_dir.plan_file(name).write_text(text)
        self.started_at = time.monotonic()
        # Workers first, the API process last: it is the one that waits for the others.
        for process in sorted(self.plan.processes, key=lambda p: p.role == "api"):
            log_path = self.run_dir.log(process.node, process.role)
            log_path.write_text("")
            popen = self.launch(process, {MARKER_ENV: self.marker}, str(log_path))
            self.running.append(Running(process, popen, log_path))
        self._write_record()
        self.progress.stage(self.case.id, f"starting {self.case.engine.name} ({len(self.running)} process(es))", 0.0)
        self._sampler = threading.Thread(target=self._sample_memory, daemon=True)
        self._sampler.start()

    def wait_ready(self, timeout_s: float, poll_s: float = 1.0) -> None:
        deadline = self.started_at + timeout_s
        stage_entered = self.started_at
        stage_budgets = {s.name: s.budget_s for s in self.engine.stages}
        first_budget = self.engine.stages[0].budget_s if self.engine.stages else timeout_s
        with httpx.Client(timeout=30.0, headers=self.headers) as client:
            while True:
                self._read_logs()
                stage = self.engine.stage_of(self.log_text)
                now = time.monotonic()
                if stage != self.stage:
                    self.stage, stage_entered = stage, now
                    self.progress.stage(self.case.id, stage, now - self.started_at)
                for r in self.running:
                    code = r.popen.poll()
                    if code is not None:
                        self._fail(f"the {r.process.role} process on node {r.process.node} exited with code {code}",
                                   exited=True)
                if self._is_ready(client):
                    self.ready_s = time.monotonic() - self.started_at
                    self.stage = "ready"
                    self.progress.stage(self.case.id, "ready", self.ready_s)
                    self.version = self._probe_version(client)
                    if launchers.get(self.case.launcher).runs_command_here:
                        self.runtime = run_identity.engine_runtime(self.plan.processes[0].argv[0])
                    self._write_record()
                    return
                budget = stage_budgets.get(self.stage, first_budget)
                if now - stage_entered > budget:
                    self._fail(f"no progress past this stage for {now - stage_entered:.0f} s (budget {budget:.0f} s)",
                               exited=False)
                if now > deadline:
                    self._fail(f"not ready after {timeout_s:.0f} s (startup_timeout)", exited=False)
                time.sleep(poll_s)

    def _is_ready(self, client: httpx.Client) -> bool:
        for route in self.plan.ready_routes:
            try:
                response = client.get(self.base_url + route)
            except httpx.HTTPError:
                return False
            if response.status_code != 200:
                return False
            if route == "/v1/models":
                try:
                    ids = [m.get("id") for m in response.json().get("data", [])]
                except (ValueError, AttributeError):
                    return False
                if self.model not in ids:
                    return False
        return True

    def _probe_version(self, client: httpx.Client) -> str | None:
        for route in ("/version", "/server_info", "/get_server_info"):
            try:
                response = client.get(self.base_url + route)
                if response.status_code == 200:
                    version = response.json().get("version")
                    if version:
                        return str(version)
            except (httpx.HTTPError, ValueError, AttributeError):
                continue
        return None

    def _read_logs(self) -> None:
        for r in self.running:
            try:
                with open(r.log_path, "rb") as f:
                    f.seek(r.offset)
                    chunk = f.read()
            except OSError:
                continue
            r.offset += len(chunk)
            self.log_text += chunk.decode("utf-8", "replace")

    def _fail(self, reason: str, exited: bool):
        time.sleep(0.5)  # let the last lines of a dying process reach the log
        self._read_logs()
        self.stage = self.engine.stage_of(self.log_text)
        api = next((r for r in self.running if r.process.role == "api"), self.running[0])
        tail = "\n".join(self.log_text.splitlines()[-TAIL_LINES:])
        error = EngineStartError(self.case.id, self.stage, reason, self.engine.diagnose(self.log_text),
                                 str(api.log_path), tail, exited)
        self.error = str(error)
        self._write_record()
        raise error

    def watch(self, hang_timeout_s: float) -> None:
        """Declare the server hung when GET /health has not answered for `hang_timeout_s` while its processes live
        (e.g. SIGSTOP, a deadlock), and kill it: the test waiting on it then fails at once instead of after the
        request timeout, and the case's other tests are not run."""
        threading.Thread(target=self._watchdog, args=(hang_timeout_s,), daemon=True).start()

    def _watchdog(self, hang_timeout_s: float) -> None:
        probe_s = min(10.0, hang_timeout_s / 3)
        last_answer = time.monotonic()
        with httpx.Client(timeout=probe_s, headers=self.headers) as client:
            while not self._stop_sampling.wait(probe_s):
                if self._alive_popens() != self.running:
                    return  # a process died: death() reports that
                try:
                    client.get(self.base_url + self.plan.health_route)
                    last_answer = time.monotonic()
                except httpx.HTTPError:
                    pass
                silent = time.monotonic() - last_answer
                if silent >= hang_timeout_s and not self._stop_sampling.is_set():
                    self.hung = (f"no answer to GET {self.plan.health_route} for {silent:.0f} s "
                                 f"(--hang-timeout {hang_timeout_s:.0f}); llmconform killed it")
                    for r in self.running:
                        _signal_group(r.popen, signal.SIGKILL)
                    return

    def death(self) -> str | None:
        """None while every process runs; else what died, the diagnosis from the log, and the log path."""
        dead = [r for r in self.running if r.popen.poll() is not None]
        if self.hung:
            r = next(r for r in self.running if r.process.role == "api")
            what = self.hung
        elif dead:
            r = dead[0]
            what = f"the {r.process.role} process on node {r.process.node} exited with code {r.popen.poll()}"
        else:
            route = self.engine.live_route
            status: int | str
            try:
                status = httpx.get(self.base_url + route, timeout=10, headers=self.headers).status_code
            except httpx.HTTPError as error:
                status = f"no answer ({type(error).__name__})"
            if status == 200:
                return None
            r = next(r for r in self.running if r.process.role == "api")
            what = f"GET {route} answered {status}"
        self._read_logs()
        diagnosis = self.engine.diagnose(self.log_text) or "no known failure signature matched; read the log"
        tail = "\n".join(self.log_text.splitlines()[-TAIL_LINES:])
        return (f"{self.case.id}: engine {'hung' if self.hung else 'died'} while serving: {what}\n"
                f"  diagnosis: {diagnosis}\n"
                f"  log: {r.log_path}\n  --- last {TAIL_LINES} log lines ---\n{tail}")

    # --- stop ----------------------------------------------------------------------------------------------------
    def stop(self, grace_s: float = 30.0) -> None:
        self._stop_sampling.set()
        # Rank 0 first: SGLang's other ranks exit when rank 0 broadcasts its shutdown.
        for r in sorted(self.running, key=lambda r: r.process.role != "api"):
            # The api process owns the engine's shutdown handler (SGLang's tokenizer manager); other ranks' processes
            # get the group signal as before.
            if self.engine.stop_leader_first and r.process.role == "api":
                _signal_leader(r.popen, signal.SIGTERM)
            else:
                _signal_group(r.popen, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (self._alive_popens() or marked_pids(self.marker)):
            time.sleep(0.2)
        for r in self.running:
            _signal_group(r.popen, signal.SIGKILL)
        for pid in marked_pids(self.marker):
            _kill(pid)
        for r in self.running:
            try:
                r.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        cleanup = getattr(self.launch, "cleanup", None)
        if cleanup:  # what outlives its processes, e.g. a container whose `docker run` client was killed
            cleanup(self.marker)
        leftovers = marked_pids(self.marker)
        deadline = time.monotonic() + 10
        while leftovers and time.monotonic() < deadline:
            time.sleep(0.2)
            leftovers = marked_pids(self.marker)
        if self.case.engine.device == "cuda":
            wait_gpu_memory_released(self._gpu_ids())
        self._write_record()
        if leftovers:
            raise RuntimeError(f"{self.case.id}: processes {leftovers} survived SIGKILL")

    def _alive_popens(self) -> list[Running]:
        return [r for r in self.running if r.popen.poll() is None]

    def _gpu_ids(self) -> tuple[int, ...]:
        return self.placement.devices[0] if self.placement.devices else ()

    # --- records -------------------------------------------------------------------------------------------------
    def _sample_memory(self) -> None:
        import psutil

        while not self._stop_sampling.wait(1.0):
            total = 0
            for pid in marked_pids(self.marker):
                try:
                    total += psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    pass
            self.peak_rss_bytes = max(self.peak_rss_bytes, total)

    def _write_record(self) -> None:
        record = {
            "case": self.case.id, "marker": self.marker, "engine": self.case.engine.name,
            "planned_version": self.case.engine.version,
            "version": self.version, "layout": str(self.case.layout), "model": self.case.model.source,
            "served_model": self.model, "base_url": self.base_url, "stage": self.stage,
            "ready_s": self.ready_s, "peak_rss_bytes": self.peak_rss_bytes or None,
            "hosts": list(self.placement.hosts), "devices": [list(d) for d in self.placement.devices],
            "processes": [{"node": r.process.node, "role": r.process.role, "argv": redact_argv(r.process.argv),
                           "env": redact_env(r.process.env), "log": str(r.log_path), "pid": r.popen.pid,
                           "exit_code": r.popen.poll()} for r in self.running],
            "relevant_env": redact_env({k: v for k, v in os.environ.items()
                                        if k.startswith(("NCCL_", "GLOO_", "VLLM_", "SGLANG_", "CUDA_", "SLURM_JOB"))
                                        or k.endswith("_SOCKET_IFNAME")}),
            "gpu": gpu_description(),
            "case_args": self.case.args, "case_env": self.case.env,
            "runtime": self.runtime,
            "error": self.error,
        }
        self.run_dir.record.write_text(json.dumps(record, indent=2))


def ignore_signals(doing: str) -> dict:
    """Ignore SIGINT and SIGTERM from now on, saying so (`doing`: what is being finished); returns the handlers they
    replaced. Signal handlers belong to the main thread; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    notes = {sig: f"\nllmconform: {sig.name} ignored while {doing}; it finishes in seconds\n".encode()
             for sig in (signal.SIGINT, signal.SIGTERM)}
    said: set[int] = set()

    def ignore(signum, frame):
        # Once per signal, and next to nothing in the handler: a signal landing while a handler runs runs the
        # handler again inside it, and a burst of them (a held-down Ctrl-C, a script's kill loop) nested the former
        # handler, which formatted its message, until RecursionError.
        if signum not in said:
            said.add(signum)
            os.write(2, notes[signum])

    return {sig: signal.signal(sig, ignore) for sig in notes}


def ignore_signals_through_exit() -> None:
    """Keep SIGINT and SIGTERM ignored while the interpreter exits: it resets Python-level handlers (as
    ignore_signals installs) to the default, terminate, and a Ctrl-C landing then would kill a run that has finished
    (exit -2 instead of 2). atexit callbacks run before that reset, and SIG_IGN is left as it is."""
    def ignore_outright() -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)

    atexit.register(ignore_outright)


@contextmanager
def signals_ignored(doing: str):
    """Ignore SIGINT and SIGTERM while `doing` runs: a second Ctrl-C must not abort a teardown halfway and leave
    engine processes behind."""
    previous = ignore_signals(doing)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _signal_leader(popen: subprocess.Popen, sig: int) -> None:
    try:
        popen.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_group(popen: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(popen.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def marked_pids(marker: str | None = None) -> list[int]:
    """Pids of live processes carrying the server marker (any marker if None), read from /proc/PID/environ."""
    needle = f"{MARKER_ENV}={marker}".encode() if marker else f"{MARKER_ENV}=".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[-1].split()[0]
        except OSError:
            continue
        if state == b"Z":
            continue
        if any(item.startswith(needle) for item in environ.split(b"\0")):
            pids.append(int(entry))
    return pids


def gpu_description() -> dict | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.strip().splitlines()
    except (subprocess.SubprocessError, OSError):
        return None
    if not out:
        return None
    name, driver, memory = (x.strip() for x in out[0].split(","))
    return {"name": name, "driver": driver, "memory": memory, "count": len(out)}


def wait_gpu_memory_released(gpu_ids: tuple[int, ...], timeout_s: float = 120.0, threshold_mib: int = 1024) -> bool:
    """Wait until the given GPUs use less than `threshold_mib` (a dead engine's memory is freed asynchronously)."""
    if not shutil.which("nvidia-smi") or not gpu_ids:
        return True
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=30, check=True).stdout
        except (subprocess.SubprocessError, OSError):
            return False
        used = {int(i): int(m) for i, m in (line.split(",") for line in out.strip().splitlines())}
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        physical = [int(x) for x in visible.split(",")] if visible else list(used)
        if all(used.get(physical[g] if g < len(physical) else g, 0) < threshold_mib for g in gpu_ids):
            return True
        time.sleep(1.0)
    return False
