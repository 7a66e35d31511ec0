"""The servers of a test session: start each case's server once (on leased devices and ports), remember a failed
start so that its other tests fail at once with the same error, and stop everything at the end."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmconform import engines, models
from llmconform.config.case import Case
from llmconform.engines.base import Placement, Ports
from llmconform.progress import Progress
from llmconform.serving import launchers
from llmconform.serving.resources import Hardware, Lease, lease_devices, lease_ports
from llmconform.serving.server import EngineStartError, Server, signals_ignored

if TYPE_CHECKING:  # serving sits below reports: it is handed the report dir, never imports its module
    from llmconform.reports.report_dir import ReportDir

STARTUP_INTERRUPT_GRACE_S = 3.0


class ServerPool:
    def __init__(self, report_dir: ReportDir, hardware: Hardware, worker: int = 0, lease_timeout_s: float = 3600.0,
                 hang_timeout_s: float | None = None, notify=None, progress: Progress | None = None):
        self.report_dir = report_dir
        self.notify = notify  # notify(text): tells the user what a start waits for (another run's devices)
        self.hang_timeout_s = hang_timeout_s
        self.progress = progress or Progress()
        self.hardware = hardware
        self.worker = worker
        self.lease_timeout_s = lease_timeout_s
        self._running: dict[str, tuple[Server, list[Lease]]] = {}
        self._failed: dict[str, EngineStartError] = {}

    def start(self, case: Case) -> Server:
        if case.id in self._running:
            return self._running[case.id][0]
        if case.id in self._failed:
            raise self._failed[case.id]
        if case.model.kind in ("factory", "shape"):
            models.ensure(case.model.ref)
        placed = launchers.get(case.launcher).place(case, self.hardware, self.worker, self._lease_here)
        placement, ports, leases = placed.placement, placed.ports, placed.leases
        run_dir = self.report_dir.server(case.id)
        engine = engines.get(case.engine.name)
        try:
            plan = engine.plan(case, placement, ports, str(run_dir.path))
            server = Server(case=case, plan=plan, engine=engine, placement=placement, run_dir=run_dir,
                            launch=placed.start, progress=self.progress)
            try:
                server.start()
                server.wait_ready(case.engine.startup_timeout_s)
            except KeyboardInterrupt:
                # Nothing to drain in a server that never served: stop it at once, not after the grace period.
                with signals_ignored(f"stopping the server of {case.id}, interrupted at stage '{server.stage}'"):
                    server.stop(grace_s=STARTUP_INTERRUPT_GRACE_S)
                raise
            except BaseException:
                server.stop()
                raise
        except EngineStartError as error:
            self._failed[case.id] = error
            _release(leases)
            raise
        except BaseException:
            _release(leases)
            raise
        self._running[case.id] = (server, leases)
        if self.hang_timeout_s:
            server.watch(self.hang_timeout_s)
        return server

    def server(self, case_id: str) -> Server | None:
        """The running server of a case, if the pool holds one."""
        entry = self._running.get(case_id)
        return entry[0] if entry else None

    def start_error(self, case_id: str) -> EngineStartError | None:
        """Why a case's server failed to start, if it did."""
        return self._failed.get(case_id)

    def stop(self, case_id: str) -> None:
        """Stop a case's server (a no-op if it is not running: an interrupt may have stopped it already). A second
        Ctrl-C or SIGTERM during the stop is ignored, so that teardown always completes and leaves no process."""
        entry = self._running.pop(case_id, None)
        if entry is None:
            return
        server, leases = entry
        with signals_ignored(f"stopping the server of {case_id}"):
            try:
                server.stop()
            finally:
                _release(leases)

    def stop_all(self) -> None:
        errors = []
        for case_id in list(self._running):
            try:
                self.stop(case_id)
            except Exception as error:  # keep stopping the others
                errors.append(error)
        if errors:
            raise errors[0]

    def _lease_here(self, case: Case) -> tuple[Placement, Ports, list[Lease]]:
        """Devices and ports on this machine for `case` (for the launchers that run here: local, docker)."""
        node = self.hardware.nodes[0]
        kind = "cpu" if case.engine.device == "cpu" else "gpu"
        devices = lease_devices(f"{node.name}-{kind}", node.cpus if kind == "cpu" else node.gpus,
                                case.layout.gpus_per_node, self.lease_timeout_s,
                                notify=self.notify and (lambda text: self.notify(f"{case.id}: {text}")))
        base, port_lease = lease_ports()
        placement = Placement(hosts=(node.name,), devices=(devices.ids,), bind_host="127.0.0.1")
        return placement, Ports.from_base(base), [devices, port_lease]


def _release(leases: list[Lease]) -> None:
    for lease in leases:
        lease.release()
