"""When our client and `vllm bench serve` disagree at one point (issue 17: -11% at c256 on one server), tell whether
the client or the server made the difference. The tools take turns (ROUNDS runs each) on the same server; per run:
output tok/s, the server's own mean inter-token latency (vLLM's /metrics histogram, timed by the engine core, so
no client can move it) and the CPU time and involuntary context switches of the server's busiest threads. Then the
same with the server pinned to SERVER_CPUS and both clients to the other CPUs: a client that slows the server by
sharing its cores shows as a difference that pinning removes.

    python3 scripts/device/scale_diagnose.py --base-url http://127.0.0.1:8000 --model qwen2.5-7b --tokenizer DIR \
        --vllm-bench "python3 -m vllm.entrypoints.cli.main bench serve" --server-pid PID --concurrency 256 --out DIR
"""

import argparse
import os
import re
import shlex
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil

from llmconform.api import metrics
from llmconform.config.workloads import Workload
from llmconform.perf import bench, loadgen
from llmconform.perf.prompts import PromptTokenizer

ITL_HISTOGRAM = "vllm:inter_token_latency_seconds"  # vllm/v1/metrics/loggers.py: from engine-core timestamps


def server_pids(server_pid: int) -> list[int]:
    """The server and every process under it (vLLM's API server, engine core, workers)."""
    return [server_pid] + [child.pid for child in psutil.Process(server_pid).children(recursive=True)]


def thread_stats(server_pid: int) -> dict[str, tuple[float, int]]:
    """Per thread of the server's processes: (CPU seconds, involuntary context switches)."""
    stats = {}
    for pid in server_pids(server_pid):
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
                status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
                switches = int(re.search(r"nonvoluntary_ctxt_switches:\s+(\d+)", status).group(1))
                name = Path(f"/proc/{pid}/comm").read_text().strip()
                stats[f"{name}[{tid}]"] = (cpu_s, switches)
        except FileNotFoundError:  # a thread or process that ended meanwhile
            continue
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag in ("--base-url", "--model", "--tokenizer", "--vllm-bench", "--out"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--input-tokens", type=int, default=512)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--server-cpus", default="0-7", help="a CPU list as taskset takes it")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = loadgen.Target(args.base_url, args.model, "vllm")
    workload = Workload("scale", args.input_tokens, args.output_tokens, concurrency=(args.concurrency,),
                        requests_per_stream=3)
    point = workload.points()[0]
    tokenizer = PromptTokenizer.from_dir(args.tokenizer).with_server(target)
    runs = iter(range(1, 1000))

    def scrape() -> dict[str, float]:
        return metrics.parse(urllib.request.urlopen(args.base_url + "/metrics").read().decode())

    def ours(cpus: frozenset[int] | None) -> float:
        n = next(runs)
        with loadgen.pinned(cpus):
            summary, _ = bench.run_ours(target, workload, point, tokenizer, out / f"ours{n}.records.jsonl",
                                        stream=7000 + 10 * n)
        return summary.metrics.output_tok_s

    def vllm(cpus: frozenset[int] | None) -> float:
        n = next(runs)
        argv = bench.vllm_bench_argv(shlex.split(args.vllm_bench), target, workload, point, args.tokenizer, out,
                                     f"vllm{n}.json", seed=9000 + n)
        return bench.run_vllm_bench(argv, out / f"vllm{n}.json", out / f"vllm{n}.log", 600, cpus=cpus)[
            "output_throughput"]

    def measure(label: str, run, cpus: frozenset[int] | None) -> None:
        before, threads_before, started = scrape(), thread_stats(args.server_pid), time.monotonic()
        tok_s = run(cpus)
        after, threads_after = scrape(), thread_stats(args.server_pid)
        steps = after[ITL_HISTOGRAM + "_count"] - before[ITL_HISTOGRAM + "_count"]
        itl_ms = 1e3 * (after[ITL_HISTOGRAM + "_sum"] - before[ITL_HISTOGRAM + "_sum"]) / max(steps, 1)
        busiest = sorted(((threads_after[k][0] - v[0], threads_after[k][1] - v[1], k)
                          for k, v in threads_before.items() if k in threads_after), reverse=True)[:3]
        threads = "; ".join(f"{name} CPU {cpu:.1f} s, {switches} involuntary switches"
                            for cpu, switches, name in busiest)
        print(f"{label:14s} output {tok_s:7.1f} tok/s | server mean ITL {itl_ms:6.2f} ms | {threads} | "
              f"{time.monotonic() - started:.0f} s", flush=True)

    print(subprocess.run(["lscpu", "-e"], capture_output=True, text=True).stdout, flush=True)
    def rounds(placement: str, cpus: frozenset[int] | None, first: str) -> None:
        tools = (("vllm", vllm), ("ours", ours)) if first == "vllm" else (("ours", ours), ("vllm", vllm))
        for r in range(args.rounds):  # alternating which tool goes first
            for tool, run in tools[::1 if r % 2 == 0 else -1]:
                measure(f"{tool} {placement}", run, cpus)

    rounds("default", None, first="vllm")
    server_cpus = bench.cpu_list(args.server_cpus)
    for pid in server_pids(args.server_pid):
        subprocess.run(["taskset", "-a", "-p", "-c", args.server_cpus, str(pid)], capture_output=True, check=True)
    clients = frozenset(os.sched_getaffinity(0)) - server_cpus
    if not clients:
        raise SystemExit(f"--server-cpus {args.server_cpus} leaves the clients none of the CPUs "
                         f"{sorted(os.sched_getaffinity(0))}")
    print(f"server pinned to CPUs {args.server_cpus}, both clients to {sorted(clients)}", flush=True)
    rounds("pinned", clients, first="ours")


if __name__ == "__main__":
    main()
