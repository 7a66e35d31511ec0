"""What hardware exists (nodes, GPUs, CPU cores) and whether a case fits on it.

Sources, in order: a SLURM allocation (SLURM_JOB_NODELIST, SLURM_GPUS_PER_NODE / SLURM_GPUS_ON_NODE), then this
machine (CUDA_VISIBLE_DEVICES, else `nvidia-smi`). Detection reads the environment and runs nvidia-smi once; the
parsing and fit rules are pure and unit-tested.
"""

from __future__ import annotations

import fcntl
import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from llmconform.config.case import Case


@dataclass(frozen=True)
class Node:
    name: str
    gpus: tuple[int, ...]
    cpus: tuple[int, ...]
    gpu_model: str | None = None
    gpu_memory_mib: int | None = None


@dataclass(frozen=True)
class Hardware:
    nodes: tuple[Node, ...]
    source: str  # "local", "slurm" or "target"

    def why_not(self, case: Case) -> str | None:
        """None if `case` can run here, else the reason it cannot (its launcher's problem, e.g. a docker daemon that
        does not answer, included)."""
        from llmconform.serving import launchers  # imported here: launchers.slurm imports this module

        layout = case.layout
        launcher = launchers.get(case.launcher)
        if layout.nodes > 1 and not launcher.spans_nodes:
            return (f"layout {layout} spans {layout.nodes} nodes; the {case.launcher} launcher runs on one machine "
                    f"(use launcher: slurm inside an allocation)")
        problem = launcher.problem()
        if problem:
            return problem
        if layout.nodes > len(self.nodes):
            hint = f" (run inside `salloc -N {layout.nodes}`)" if self.source != "slurm" else ""
            return f"needs {layout.nodes} nodes, {len(self.nodes)} available{hint}"
        nodes = self.nodes[: layout.nodes]
        if case.engine.device == "cpu":
            cores = min(len(n.cpus) for n in nodes)
            if layout.gpus_per_node > cores:
                return (f"needs {layout.gpus_per_node} CPU cores per node (one per rank), "
                        f"{nodes[0].name} has {cores}")
            return None
        short = [n for n in nodes if len(n.gpus) < layout.gpus_per_node]
        if short:
            node = short[0]
            return f"needs {layout.gpus_per_node} GPUs per node, {node.name} has {len(node.gpus)}"
        return None


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand a SLURM hostlist such as `n[1-2]`, `gpu[01-03,07],login1` (zero padding kept)."""
    names: list[str] = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", nodelist):
        match = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", part)
        if not match:
            names.append(part)
            continue
        prefix, ranges, suffix = match.groups()
        for item in ranges.split(","):
            low, _, high = item.partition("-")
            if not high:
                names.append(f"{prefix}{low}{suffix}")
                continue
            width = len(low)
            names.extend(f"{prefix}{i:0{width}d}{suffix}" for i in range(int(low), int(high) + 1))
    return names


def parse_gpu_count(value: str | None) -> int | None:
    """SLURM GPU counts come as `8`, `h100:8` or `gpu:h100:8` (a comma list per type is summed)."""
    if not value:
        return None
    total = 0
    for item in value.split(","):
        last = item.rsplit(":", 1)[-1]
        last = re.sub(r"\(.*\)$", "", last)
        if not last.isdigit():
            return None
        total += int(last)
    return total


def parse_visible_devices(value: str | None) -> tuple[int, ...] | None:
    """CUDA_VISIBLE_DEVICES as the engine sees it: positions 0..n-1 (the ids are remapped by CUDA)."""
    if value is None:
        return None
    items = [v for v in value.split(",") if v.strip()]
    if items and items[0].strip() in ("-1", "NoDevFiles"):
        return ()
    return tuple(range(len(items)))


def detect(env: dict | None = None) -> Hardware:
    env = dict(os.environ if env is None else env)
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    gpu_model, gpu_memory, smi_count = _nvidia_smi()
    visible = parse_visible_devices(env.get("CUDA_VISIBLE_DEVICES"))
    local_gpus = visible if visible is not None else tuple(range(smi_count))
    if env.get("SLURM_JOB_ID") and env.get("SLURM_JOB_NODELIST"):
        names = expand_nodelist(env["SLURM_JOB_NODELIST"])
        per_node = (parse_gpu_count(env.get("SLURM_GPUS_PER_NODE"))
                    or parse_gpu_count(env.get("SLURM_GPUS_ON_NODE")) or len(local_gpus))
        nodes = tuple(Node(name, tuple(range(per_node)), cpus, gpu_model, gpu_memory) for name in names)
        return Hardware(nodes, "slurm")
    return Hardware((Node(socket.gethostname(), local_gpus, cpus, gpu_model, gpu_memory),), "local")


def node_address(name: str) -> str | None:
    """A node's IP: DNS/hosts first, then SLURM's NodeAddr (on clusters whose names resolve only inside nodes)."""
    try:
        return socket.gethostbyname(name)
    except OSError:
        pass
    if not shutil.which("scontrol"):
        return None
    try:
        out = subprocess.run(["scontrol", "show", "node", name], capture_output=True, text=True, timeout=30).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    match = re.search(r"\bNodeAddr=(\S+)", out)
    return match.group(1) if match else None


def from_target(nodes: int, gpus_per_node: int) -> Hardware:
    """The hardware a matrix is written for, as if it were present (for planning advice)."""
    return Hardware(tuple(Node(f"node{i}", tuple(range(gpus_per_node)), tuple(range(gpus_per_node * 8)))
                          for i in range(nodes)), "target")


def _nvidia_smi() -> tuple[str | None, int | None, int]:
    if not shutil.which("nvidia-smi"):
        return None, None, 0
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None, None, 0
    rows = [r.split(",") for r in out.strip().splitlines() if r.strip()]
    if not rows:
        return None, None, 0
    return rows[0][0].strip(), int(float(rows[0][1])), len(rows)


# --- leases: disjoint GPUs/cores and ports for servers started by parallel pytest-xdist workers --------------------

def lock_dir() -> Path:
    path = Path(os.environ.get("LLMCONFORM_LOCK_DIR", Path(tempfile.gettempdir()) / "llmconform-locks"))
    path.mkdir(parents=True, exist_ok=True)
    return path


class OwnedLock:
    """An exclusive flock on a file in the lock dir. The file names its holder (pid, command line, since when) so
    that a waiting run can say who holds what it waits for; it is removed on release, so lock files do not pile up.
    A holder that dies releases the flock with its file descriptor; its stale file is reused by the next holder."""

    def __init__(self, name: str):
        self.path = lock_dir() / f"{name}.lock"
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:  # another user's lock file: held by someone else as far as we can tell
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The previous holder may have removed the file between our open and our flock: that inode is orphaned.
            if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}: {_own_command_line()}\n".encode())
        self.fd = fd
        return True

    def holder(self) -> str | None:
        try:
            return self.path.read_text().strip() or None
        except OSError:
            return None

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None


def _own_command_line() -> str:
    try:
        return Path("/proc/self/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:300]
    except OSError:
        return "?"


@dataclass
class Lease:
    """Held locks; released when the server using them stops (or the holding process dies)."""

    ids: tuple[int, ...]
    locks: list[OwnedLock] = field(default_factory=list)

    def release(self) -> None:
        for lock in self.locks:
            lock.release()
        self.locks.clear()


def lease_devices(pool: str, ids: tuple[int, ...], count: int, timeout_s: float, poll_s: float = 2.0,
                  notify=None, notify_every_s: float = 30.0) -> Lease:
    """Take `count` of `ids` (GPUs or CPU cores of one host) that no other llmconform process holds; wait for them
    up to `timeout_s` (another run's server may be using them), telling `notify(text)` every `notify_every_s` how
    long it has waited and who holds them."""
    if count > len(ids):
        raise ValueError(f"{count} devices of {pool} wanted, only {len(ids)} exist")
    started = time.monotonic()
    next_notice = started + notify_every_s
    while True:
        held: list[tuple[int, OwnedLock]] = []
        busy: list[OwnedLock] = []
        for device in ids:
            lock = OwnedLock(f"{pool}-{device}")
            if not lock.try_acquire():
                busy.append(lock)
                continue
            held.append((device, lock))
            if len(held) == count:
                return Lease(tuple(d for d, _ in held), [lock for _, lock in held])
        for _, lock in held:
            lock.release()
        waited = time.monotonic() - started
        if waited > timeout_s or (notify and time.monotonic() >= next_notice):
            text = (f"waited {waited:.0f} s for {count} free of {len(ids)} {pool} device(s); held by "
                    f"{_holders(busy)}")
            if waited > timeout_s:
                raise TimeoutError(text)
            notify(text)
            next_notice += notify_every_s
        time.sleep(poll_s)


def _holders(locks: list[OwnedLock]) -> str:
    """The distinct holders of `locks`, e.g. 'pid 4242 since 12:00:01: python -m pytest suites ... (devices 0-1)'."""
    by_holder: dict[str, list[str]] = {}
    for lock in locks:
        by_holder.setdefault(lock.holder() or "a process that just released it", []).append(
            lock.path.stem.rsplit("-", 1)[-1])
    return "; ".join(f"{holder} (ids {','.join(devices)})" for holder, devices in by_holder.items()) or "nobody"


PORT_BLOCK = 10  # http, master, dp-rpc, dist-init (+ the few SGLang derives from dist-init)


def lease_ports(low: int = 20000, high: int = 45000) -> tuple[int, Lease]:
    """A block of PORT_BLOCK ports that bind now and that no other llmconform process holds."""
    bases = list(range(low, high, PORT_BLOCK))
    random.SystemRandom().shuffle(bases)
    for base in bases:
        lock = OwnedLock(f"ports-{base}")
        if not lock.try_acquire():
            continue
        if all(_bindable(p) for p in range(base, base + PORT_BLOCK)):
            return base, Lease((base,), [lock])
        lock.release()
    raise RuntimeError(f"no free block of {PORT_BLOCK} ports in {low}..{high}")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True
