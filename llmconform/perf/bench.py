"""Standalone benchmarking against any running OpenAI-compatible server (no matrix, no pytest):

    python -m llmconform.perf.bench run --base-url URL --model ID --tokenizer DIR --input-tokens 512 \
        --output-tokens 128 --concurrency 1 64
    python -m llmconform.perf.bench compare-vllm --base-url URL --model ID --tokenizer DIR --input-tokens 512 \
        --output-tokens 128 --concurrency 1 64 --vllm-bench "vllm bench serve" --rounds 2 --out DIR

`compare-vllm` is the fidelity check. For each point it runs our load generator and `vllm bench serve --backend openai
--dataset-name random --ignore-eos --save-result --save-detailed` against the same server with the same workload
(request count, warm-ups, lengths, concurrency or rate), one after the other, alternating which goes first from round
to round (ours, vllm, vllm, ours, ...), so that drifting background load weighs on both alike. Per gated metric
(output tok/s, median TTFT, median TPOT) the difference is the mean over rounds of ours / vllm - 1 (the two runs of
a round are adjacent in time), and the noise is its standard error. Verdicts (PointComparison.verdict): `ok`,
`DIFFERENT`, or `inconclusive` when the machine's noise is too large to tell (run more rounds, or on a quieter
machine). Exit code 0 when all are ok, 1 when any is DIFFERENT, 3 when some are inconclusive.

Every round also recomputes vllm bench's aggregates from its own per-request timings with our metric code
(`metric_math_differences`): 0 up to float rounding means the definitions are the same.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmconform.config import matrix as matrices
from llmconform.config.floor_rules import GRAMMAR, Floor, parse_floors
from llmconform.config.workloads import PROMPT_KINDS, LoadPoint, Workload, parse_workloads
from llmconform.errors import MatrixError, UserError
from llmconform.perf import capacity, floors, load_metrics, loadgen
from llmconform.perf.hardware import detect_hardware
from llmconform.perf.model_size import ModelSizeError, model_bytes, roofline_ms_per_token
from llmconform.perf.prompts import PromptError, PromptTokenizer, make_prompts
from llmconform.perf.records import PointRun, RequestRecord, write_records
from llmconform.reports.report_dir import ReportDir

GATED = ("output_tok_s", "median_ttft_ms", "median_tpot_ms")
SHOWN = ("requests_per_s", "total_tok_s", "mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "median_itl_ms",
         "p99_itl_ms", "median_e2el_ms")


@dataclass
class PointComparison:
    point: str
    rounds: list[dict] = field(default_factory=list)  # {"first": tool, "ours": metrics, "vllm": metrics, ...}

    def paired(self, metric: str) -> list[float]:
        """ours / vllm - 1 per round (each round's two runs were adjacent in time)."""
        return [r["ours"][metric] / r["vllm"][metric] - 1 for r in self.rounds
                if r["vllm"].get(metric) and r["ours"].get(metric) is not None]

    def difference(self, metric: str) -> float | None:
        """Mean of the paired differences; with the order alternating, a steady drift of the machine's speed pushes
        them in opposite directions and cancels out."""
        diffs = self.paired(metric)
        return statistics.fmean(diffs) if diffs else None

    def noise(self, metric: str) -> float | None:
        """Standard error of that mean (None with one round); with two rounds, half their distance."""
        diffs = self.paired(metric)
        return statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) >= 2 else None

    def spread(self, metric: str) -> float | None:
        """How much one tool's own runs differ (the larger of the two tools' max / min - 1): the machine's noise."""
        spreads = []
        for tool in ("ours", "vllm"):
            values = [r[tool][metric] for r in self.rounds if r[tool].get(metric)]
            if len(values) >= 2:
                spreads.append(max(values) / min(values) - 1)
        return max(spreads) if spreads else None

    def median(self, tool: str, metric: str) -> float | None:
        values = [r[tool][metric] for r in self.rounds if r[tool].get(metric) is not None]
        return statistics.median(values) if values else None

    def verdict(self, metric: str, tolerance: float) -> str:
        """With one round the noise is unknown (a quiet machine is assumed): the difference alone decides. With more:
        inconclusive when one tool's own runs differ by more than the tolerance (background load changes faster
        than the runs alternate, and can bias every pair alike); ok when the difference is within the tolerance and
        known to better than half of it; DIFFERENT when it exceeds the tolerance by more than its one-sided 95%
        confidence margin (Student's t over the rounds); otherwise inconclusive."""
        diff = self.difference(metric)
        if diff is None:
            return "inconclusive"
        noise = self.noise(metric)
        if noise is None:
            return "ok" if abs(diff) <= tolerance else "DIFFERENT"
        spread = self.spread(metric)
        if spread is not None and spread > tolerance:
            return "inconclusive"
        if abs(diff) <= tolerance and noise <= tolerance / 2:
            return "ok"
        if abs(diff) > tolerance + _t95(len(self.rounds) - 1) * noise:
            return "DIFFERENT"
        return "inconclusive"


# One-sided 95% quantiles of Student's t by degrees of freedom (beyond 10: about 1.7 up to 30, 1.645 in the limit).
_T95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833, 10: 1.812}


def _t95(degrees: int) -> float:
    return _T95.get(degrees, 1.7)


def vllm_bench_argv(command: list[str], target: loadgen.Target, workload: Workload, point: LoadPoint,
                    tokenizer_dir: str, result_dir: Path, filename: str, seed: int) -> list[str]:
    """`vllm bench serve` for the same traffic as our point: random dataset of exact lengths, ignore_eos, the same
    number of requests and warm-ups, and either `--max-concurrency C` (rate inf) or `--request-rate R`. The result
    keeps per-request timings (`--save-detailed`) for `metric_math_differences`. Each run needs a `seed` of its own:
    replaying a dataset lets the engine's prefix cache answer it (measured on H200: 5800 -> 9344 tok/s at c64)."""
    argv = [*command, "--backend", "openai", "--base-url", target.base_url, "--endpoint", "/v1/completions",
            "--model", target.model, "--tokenizer", tokenizer_dir, "--dataset-name", "random",
            "--random-input-len", str(workload.input_tokens), "--random-output-len", str(workload.output_tokens),
            "--num-prompts", str(point.requests), "--num-warmups", str(point.warmup), "--seed", str(seed),
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "90,99", "--disable-tqdm",
            "--save-result", "--save-detailed", "--result-dir", str(result_dir), "--result-filename", filename]
    if workload.ignore_eos:
        argv.append("--ignore-eos")
    if workload.temperature is not None:
        argv += ["--temperature", str(workload.temperature)]
    if point.rate is None:
        argv += ["--max-concurrency", str(point.concurrency)]
    else:
        argv += ["--request-rate", "inf" if math.isinf(point.rate) else str(point.rate),
                 "--burstiness", str(workload.burstiness)]
        if point.max_concurrency:
            argv += ["--max-concurrency", str(point.max_concurrency)]
    if workload.slo:
        pairs = [f"{k}:{v:g}" for k, v in (("ttft", workload.slo.ttft_ms), ("tpot", workload.slo.tpot_ms),
                                           ("e2el", workload.slo.e2el_ms)) if v is not None]
        argv += ["--goodput", *pairs]
    return argv


def vllm_metrics(result: dict) -> dict:
    """vLLM's saved result JSON under our metric names."""
    return {ours: result.get(theirs) for ours, theirs in load_metrics.VLLM_RESULT_KEYS.items()} | {
        "completed": result.get("completed"), "failed": result.get("failed"), "duration_s": result.get("duration"),
        "total_output_tokens": result.get("total_output_tokens"),
        "total_input_tokens": result.get("total_input_tokens")}


def records_from_vllm_result(result: dict) -> list[RequestRecord]:
    """vLLM's per-request timings (`--save-detailed`) as our raw records: first chunk at start + TTFT, each further
    chunk one ITL later."""
    records = []
    for i, (start, ttft, itls, error) in enumerate(zip(result["start_times"], result["ttfts"], result["itls"],
                                                      result["errors"])):
        chunks = [start + ttft] if not error else []
        for gap in itls if not error else []:
            chunks.append(chunks[-1] + gap)
        records.append(RequestRecord(
            index=i, expected_input_tokens=result["input_lens"][i], expected_output_tokens=result["output_lens"][i],
            sent_s=start, chunk_s=chunks, prompt_tokens=result["input_lens"][i],
            completion_tokens=result["output_lens"][i] if not error else None, error=error or None))
    return records


DETAILED_KEYS = ("start_times", "ttfts", "itls", "errors", "input_lens", "output_lens", "duration")


def metric_math_differences(result: dict) -> dict[str, float]:
    """Our metric code on vLLM's own per-request timings, against the aggregates vLLM computed from them: the
    relative difference per metric (0 up to float rounding when the definitions are the same). Empty when this
    vllm bench version saved no per-request timings."""
    if not all(key in result for key in DETAILED_KEYS):
        return {}
    ours = load_metrics.compute(records_from_vllm_result(result), result["duration"]).flat()
    theirs = vllm_metrics(result) | {"max_concurrent_requests": result.get("max_concurrent_requests")}
    out = {}
    for metric, value in theirs.items():
        if value is None or ours.get(metric) is None:
            continue
        out[metric] = abs(ours[metric] - value) / abs(value) if value else abs(ours[metric])
    return out


def run_vllm_bench(argv: list[str], result_file: Path, log_file: Path, timeout_s: float,
                   api_key: str | None = None, cpus: frozenset[int] | None = None) -> dict:
    env = {**os.environ, "OPENAI_API_KEY": api_key} if api_key else None  # vllm bench's source of the bearer token
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    with open(log_file, "w") as log:
        done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s, check=False, env=env,
                              preexec_fn=pin)
    if done.returncode != 0 or not result_file.is_file():
        tail = "\n".join(log_file.read_text().splitlines()[-30:])
        raise RuntimeError(f"vllm bench serve failed (exit {done.returncode}); log {log_file}:\n{tail}")
    return json.loads(result_file.read_text())


def run_ours(target: loadgen.Target, workload: Workload, point: LoadPoint,
             tokenizer: PromptTokenizer, records_file: Path, stream: int, workers: int | None = None
             ) -> tuple[load_metrics.PointSummary, PointRun]:
    prompts = make_prompts(tokenizer, workload, point.requests, stream=stream)
    warmup = make_prompts(tokenizer, workload, point.warmup, stream=stream + 1) if point.warmup else []
    run = loadgen.run_point(target, workload, point, prompts, warmup, tokenizer, workers=workers)
    write_records(records_file, run)
    return load_metrics.summarize(run, workload.input_tokens, workload.output_tokens, workload.slo), run


def compare_with_vllm_bench(target: loadgen.Target, workload: Workload, tokenizer_dir: str,
                            vllm_command: list[str], out_dir: Path, rounds: int = 2, timeout_s: float = 3600.0,
                            client_cpus: frozenset[int] | None = None, log=print,
                            on_point: Callable[[int, PointComparison], None] | None = None) -> list[PointComparison]:
    """Run both tools on every point of `workload`, `rounds` times each, alternating which goes first; both on
    `client_cpus` when given (for an engine on CPU: the cores it was not given, loadgen.pinned). `on_point` sees
    each point's comparison (with the point's index) as soon as it is complete."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = PromptTokenizer.from_dir(tokenizer_dir).with_server(target)
    log(f"prompt lengths counted by {tokenizer.counted_by}")
    comparisons = []
    for p, point in enumerate(workload.points()):
        comparison = PointComparison(point.label)
        for r in range(rounds):
            stem = f"{point.label}-round{r + 1}"
            stream = 1000 * (p + 1) + 10 * r  # fresh prompts for every run of either tool (no prefix-cache hits)
            row: dict = {"first": "ours" if r % 2 == 0 else "vllm"}
            for tool in ("ours", "vllm") if row["first"] == "ours" else ("vllm", "ours"):
                started = time.monotonic()
                if tool == "ours":
                    with loadgen.pinned(client_cpus):
                        summary, _ = run_ours(target, workload, point, tokenizer,
                                           out_dir / f"ours-{stem}.records.jsonl", stream=stream)
                    row.update(ours=summary.metrics.flat(), ours_client=summary.client.as_dict())
                    if summary.client.warning:
                        log(f"  warning (ours): {summary.client.warning}")
                else:
                    row["vllm_argv"] = vllm_bench_argv(vllm_command, target, workload, point, tokenizer_dir,
                                                       out_dir, f"vllm-{stem}.json", seed=workload.seed + stream + 5)
                    result = run_vllm_bench(row["vllm_argv"], out_dir / f"vllm-{stem}.json",
                                            out_dir / f"vllm-{stem}.log", timeout_s, target.api_key, client_cpus)
                    row.update(vllm=vllm_metrics(result), metric_math=metric_math_differences(result))
                log(f"  {point.label} round {r + 1} {tool:<4}: output {row[tool]['output_tok_s']:.1f} tok/s, median "
                    f"TTFT {row[tool]['median_ttft_ms']:.1f} ms, median TPOT {row[tool]['median_tpot_ms']:.2f} ms "
                    f"({time.monotonic() - started:.0f} s)")
            if row["metric_math"]:
                worst = max(row["metric_math"], key=row["metric_math"].get)
                log(f"  our metric code on vllm bench's per-request timings: largest difference "
                    f"{row['metric_math'][worst]:.1e} ({worst})")
            else:
                log("  (this vllm bench saved no per-request timings: metric code not cross-checked)")
            comparison.rounds.append(row)
        comparisons.append(comparison)
        if on_point:
            on_point(p, comparison)
    return comparisons


def comparison_table(comparisons: list[PointComparison], tolerance: float) -> list[str]:
    header = (f"{'point':<10} {'metric':<16} {'ours':>11} {'vllm bench':>11} {'diff':>8} {'+-':>7} {'spread':>7}"
              "  verdict")
    lines = [header]
    for c in comparisons:
        for metric in GATED + SHOWN:
            ours, theirs = c.median("ours", metric), c.median("vllm", metric)
            if ours is None or theirs is None:
                continue
            diff, noise, spread = c.difference(metric), c.noise(metric), c.spread(metric)
            lines.append(f"{c.point:<10} {metric:<16} {ours:>11.2f} {theirs:>11.2f} "
                         f"{'-' if diff is None else f'{diff:+.1%}':>8} {'-' if noise is None else f'{noise:.1%}':>7} "
                         f"{'-' if spread is None else f'{spread:.1%}':>7}"
                         f"  {c.verdict(metric, tolerance) if metric in GATED else ''}")
    return lines


def exit_code(comparisons: list[PointComparison], tolerance: float) -> int:
    verdicts = {c.verdict(m, tolerance) for c in comparisons for m in GATED}
    return 1 if "DIFFERENT" in verdicts else 3 if "inconclusive" in verdicts else 0


def roofline_line(comparisons: list[PointComparison], model_dir: str, dtype: str | None, tp: int) -> str | None:
    """The c1 point against the memory-bandwidth bound, when the model's config and this machine's GPU are known."""
    config_file = Path(model_dir) / "config.json"
    single = next((c for c in comparisons if c.point == "c1"), None)
    hardware = detect_hardware("cuda")
    if single is None or not config_file.is_file() or hardware.bandwidth is None:
        return None
    try:
        size = model_bytes(json.loads(config_file.read_text()), dtype)
    except ModelSizeError as error:
        return f"roofline: {error}"
    bound = roofline_ms_per_token(size, hardware.bandwidth, tp)
    parts = [f"{tool} {tpot:.2f} ms = {bound / tpot:.0%}" for tool in ("ours", "vllm")
             if (tpot := single.median(tool, "median_tpot_ms"))]
    return (f"roofline on {hardware.describe()}: {size.decode_bytes / 1e9:.2f} GB read per token / "
            f"{hardware.bandwidth / 1e12:.2f} TB/s x TP{tp} = {bound:.2f} ms/token; median TPOT at c1: "
            + ", ".join(parts))


# --- command line --------------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmconform bench", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "load a running server with a matrix's workloads (or one given here), check floors, "
                               "write a report dir that `llmconform compare` reads"),
                       ("capacity", "the highest open-loop request rate that meets the workload's SLO (bisection)"),
                       ("compare-vllm", "run our load generator and `vllm bench serve` against the same server")):
        p = commands.add_parser(name, help=text)
        p.add_argument("--llm-url", "--base-url", dest="llm_url", required=True,
                       help="server root, e.g. http://127.0.0.1:8000")
        p.add_argument("--model", required=True, help="the model id the server serves")
        p.add_argument("--tokenizer", required=True, help="directory with the model's tokenizer.json")
        p.add_argument("--engine", default="vllm", help="vllm, sglang, trtllm (decides ignore_eos) or other")
        p.add_argument("--api-key")
        if name != "compare-vllm":
            p.add_argument("--matrix", help="take the workloads (and floors) from this matrix")
            p.add_argument("--workload", action="append", default=[],
                           help="run only this workload of the matrix (repeatable)")
            p.add_argument("--workers", type=int, help="client worker processes per point (default: from the "
                                                       "cores and the expected chunk rate)")
            p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                           help="what the server runs on, for hardware-profile floors (cuda: nvidia-smi here)")
        p.add_argument("--input-tokens", type=int)
        p.add_argument("--output-tokens", type=int)
        traffic = p.add_mutually_exclusive_group()
        traffic.add_argument("--concurrency", type=int, nargs="+", help="closed loop: streams in flight, per point")
        traffic.add_argument("--rate", nargs="+", help="open loop: requests/s per point (inf: all at once)")
        p.add_argument("--requests", type=int, help="requests per point (default: 5 per stream, at least 16)")
        p.add_argument("--warmup", type=int, help="unmeasured requests before each point (default: one wave)")
        p.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of arrivals (1: Poisson)")
        p.add_argument("--max-concurrency", type=int, help="open loop: cap on requests in flight")
        p.add_argument("--prompts", choices=PROMPT_KINDS, default="random")
        p.add_argument("--temperature", type=float)
        p.add_argument("--no-ignore-eos", action="store_true", help="do not ask for exact output lengths")
        p.add_argument("--slo", nargs="+", default=[], metavar="NAME:MS",
                       help="goodput SLOs, e.g. ttft:2000 tpot:100 e2el:20000 (as vllm bench --goodput)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", default=None, help="directory for the results (run: a report dir)")
        p.add_argument("--client-cpus", type=cpu_list, help="run the client(s) on these CPUs only, e.g. 0,2-3 (for "
                                                             "an engine on CPU: the cores it does not use)")
        if name == "run":
            p.add_argument("--floor", action="append", default=[], metavar="EXPR",
                           help=f"a throughput floor (repeatable; with the matrix's): {GRAMMAR.replace('%', '%%')}")
            p.add_argument("--case-id", help="the id results are filed under, to match runs in `llmconform compare` "
                                             "(default ENGINE-MODEL)")
            p.add_argument("--perf-baseline", help="perf-summary.json of an earlier run, for METRIC:-X%% floors")
        if name == "capacity":
            p.add_argument("--rate-low", type=float, default=1.0, help="lowest rate to try (requests/s)")
            p.add_argument("--rate-high", type=float, default=256.0, help="highest rate to try (requests/s)")
            p.add_argument("--max-points", type=int, default=8, help="most points measured")
            p.add_argument("--precision", type=float, default=0.05, help="stop when the bracket is this narrow")
            p.add_argument("--percentile", choices=capacity.PERCENTILES, default="p99",
                           help="which percentile of TTFT/TPOT/E2EL must meet the SLO")
        if name == "compare-vllm":
            p.add_argument("--vllm-bench", default="vllm bench serve",
                           help="how to run vllm bench serve, e.g. 'python3 -m vllm.entrypoints.cli.main bench serve'")
            p.add_argument("--rounds", type=int, default=2,
                           help="runs of each tool per point, alternating which goes first (>= 2 to measure noise)")
            p.add_argument("--tolerance", type=float, default=0.05, help="allowed relative difference (0.05 = 5%%)")
            p.add_argument("--dtype", help="weight dtype the server uses, for the roofline line (default: config)")
            p.add_argument("--tp", type=int, default=1, help="tensor-parallel size, for the roofline line")
    return parser


def cpu_list(text: str) -> frozenset[int]:
    """A CPU list as taskset and /sys write it: "0,2-3"."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return frozenset(cpus)


def _fail(source: str):
    def fail(path: str, problem: str, allowed: str | None):
        raise MatrixError(source, path, problem, allowed)

    return fail


def _workload(args) -> Workload:
    """The workload the command-line options describe (a `workloads:` entry, validated the same way)."""
    missing = [flag for flag, value in (("--input-tokens", args.input_tokens), ("--output-tokens",
                                                                               args.output_tokens)) if value is None]
    if missing or not (args.concurrency or args.rate):
        raise UserError(f"give --matrix, or describe the workload: {' '.join(missing) or ''} and --concurrency "
                        f"or --rate".replace("  ", " "))
    item = {"name": "cli", "input_tokens": args.input_tokens, "output_tokens": args.output_tokens,
            "burstiness": args.burstiness, "prompts": args.prompts, "ignore_eos": not args.no_ignore_eos,
            "seed": args.seed}
    item.update({k: v for k, v in (("concurrency", args.concurrency), ("requests", args.requests),
                                   ("warmup", args.warmup), ("max_concurrency", args.max_concurrency),
                                   ("temperature", args.temperature)) if v is not None})
    if args.rate:
        item["rate"] = [r if r == "inf" else _number(r, "--rate") for r in args.rate]
    if args.slo:
        item["slo"] = {}
        for pair in args.slo:
            key, _, value = pair.partition(":")
            item["slo"][f"{key}_ms"] = _number(value, f"--slo {pair}")
    (workload,) = parse_workloads([item], _fail("command line"))
    return workload


def _number(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{where}: {text!r} is not a number") from None


def _matrix_sections(args) -> tuple[tuple[Workload, ...], tuple[Floor, ...]]:
    """The workloads to run and the floors to check: the matrix's (only the --workload ones), or the command
    line's; --floor adds to them."""
    if args.matrix:
        loaded = matrices.load(args.matrix)
        if not loaded.cases:
            raise UserError(f"{args.matrix} has no cases to take workloads from")
        workloads, declared = loaded.cases[0].workloads, loaded.cases[0].floors
        unknown = [w for w in args.workload if w not in {x.name for x in workloads}]
        if unknown or not workloads:
            raise UserError(f"{args.matrix} declares no workload {', '.join(unknown) or '(none at all)'} "
                            f"(it has: {', '.join(w.name for w in workloads) or 'none'})")
        workloads = tuple(w for w in workloads if not args.workload or w.name in args.workload)
    else:
        if args.workload:
            raise UserError("--workload names a workload of --matrix")
        workloads, declared = (_workload(args),), ()
    extra = parse_floors(getattr(args, "floor", []), _fail("--floor"), workloads)
    return workloads, tuple(f for f in declared if any(f.workload in (None, w.name) for w in workloads)) + extra


def _tokenizer(args, target: loadgen.Target) -> PromptTokenizer:
    try:
        return PromptTokenizer.from_dir(args.tokenizer).with_server(target)
    except (FileNotFoundError, ValueError, OSError) as error:
        raise UserError(f"--tokenizer {args.tokenizer}: {error}") from None


def _print_point(summary: load_metrics.PointSummary) -> None:
    m = summary.metrics
    print(f"{summary.workload} {summary.point}: {m.completed} ok / {m.failed} failed, output {m.output_tok_s:.1f} "
          f"tok/s, TTFT median {m.ttft.median:.1f} ms p99 {m.ttft.p99:.1f} ms, TPOT median {m.tpot.median:.2f} ms, "
          f"ITL p99 {m.itl.p99:.2f} ms, client {summary.client.share_of_itl or 0:.0%} of ITL "
          f"({summary.client.workers} worker(s))" + (" INVALID" if summary.invalid else ""))
    if summary.client.warning:
        print(f"  warning: {summary.client.warning}")
    for name, why in summary.delivery.not_measurable.items():
        print(f"  {name.upper()} not measurable: {why}")


def cmd_run(args, target: loadgen.Target) -> int:
    """Our load generator on every point, the floors checked, and a report dir like a suite run's: results.jsonl
    (a serving-metrics and a floors result for the case), perf-summary.json and perf.md."""
    workloads, declared = _matrix_sections(args)
    tokenizer = _tokenizer(args, target)
    hardware = detect_hardware(args.device)
    case_id = args.case_id or re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{target.engine}-{target.model}")
    report = ReportDir(Path(args.out or f"reports/bench-{time.strftime('%Y%m%d-%H%M%S')}"))
    points, problems, warnings = [], [], []
    for workload in workloads:
        for i, point in enumerate(workload.points()):
            records = report.perf_records(case_id, workload.name, point.label)
            with loadgen.pinned(args.client_cpus):
                summary, run = run_ours(target, workload, point, tokenizer, records, stream=2 * i + 1,
                                        workers=args.workers)
            _print_point(summary)
            points.append({**summary.as_dict(), "records": str(records), "prompts_counted_by": tokenizer.counted_by,
                           "prompts": tokenizer.made})
            found, notes = load_metrics.check_measurement(summary, run)
            problems += found
            warnings += notes
    baseline = floors.load_baseline(args.perf_baseline) if args.perf_baseline else None
    verdicts = floors.evaluate(declared, points, floors.CaseContext(case_id=case_id, hardware=hardware,
                                                                    baseline=baseline))
    llm = {"id": case_id, "engine": target.engine, "engine_version": None, "layout": None, "model": target.model,
           "base_url": target.base_url}
    perf = {"hardware": hardware.key, "gpu_name": hardware.gpu_name, "points": points, "problems": problems,
            "warnings": warnings}
    failed_floors = [v for v in verdicts if v.status == "fail"]
    results = [
        {"nodeid": f"bench::serving_metrics[{case_id}]", "when": "call",
         "outcome": "failed" if problems else "passed", "properties": {"llm": llm, "perf": perf},
         **({"error": "\n".join(problems)} if problems else {})},
        {"nodeid": f"bench::floors[{case_id}]", "when": "call", "outcome": "failed" if failed_floors else "passed",
         "properties": {"llm": llm, "floors": [v.as_dict() for v in verdicts]},
         **({"error": "\n".join(f"{v.floor} [{v.workload} {v.point}]: {v.detail}" for v in failed_floors)}
            if failed_floors else {})}]
    report.path.mkdir(parents=True, exist_ok=True)
    report.results.write_text("".join(json.dumps(_jsonable(r)) + "\n" for r in results))
    for line in report.build():
        print(line)
    for problem in problems:
        print(f"problem: {problem}")
    print(f"report dir: {report}")
    return 1 if problems or failed_floors else 0


def cmd_capacity(args, target: loadgen.Target) -> int:
    workloads, _ = _matrix_sections(args)
    if len(workloads) != 1:
        raise UserError(f"a capacity search takes one workload; choose with --workload "
                        f"({', '.join(w.name for w in workloads)})")
    workload = workloads[0]
    if workload.slo is None:
        raise UserError(f"workload {workload.name} has no slo: (or give --slo ttft:MS tpot:MS)")
    requests = args.requests or workload.requests
    if requests is None:
        raise UserError(f"workload {workload.name} has no `requests:` per point: give --requests")
    tokenizer = _tokenizer(args, target)
    out_dir = Path(args.out or f"reports/capacity-{time.strftime('%Y%m%d-%H%M%S')}")
    streams = iter(range(1, 2 * args.max_points + 1, 2))

    def measure(rate: float) -> load_metrics.PointSummary:
        point = LoadPoint(requests=requests, warmup=workload.warmup or 0, rate=rate,
                               max_concurrency=workload.max_concurrency)
        records = out_dir / f"{workload.name}-{point.label}.records.jsonl"
        with loadgen.pinned(args.client_cpus):
            summary, _ = run_ours(target, workload, point, tokenizer, records, stream=next(streams),
                                  workers=args.workers)
        return summary

    try:
        found = capacity.search(measure, workload.slo, args.rate_low, args.rate_high, args.max_points,
                                args.precision, args.percentile)
    except ValueError as error:
        raise UserError(str(error)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "capacity.json").write_text(json.dumps(_jsonable(found.as_dict()), indent=2))
    if found.rate is None:
        print(f"capacity: below {args.rate_low:g} req/s (the lowest rate tried missed the SLO)")
    else:
        above = f", {found.lowest_miss:.3g} req/s missed it" if found.lowest_miss else ""
        print(f"capacity: {found.rate:.3g} req/s meets the {args.percentile} SLO{above} "
              f"({len(found.probes)} points)")
    print(f"results: {out_dir / 'capacity.json'}")
    return 1 if found.stopped else 0


def _jsonable(value):
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    target = loadgen.Target(args.llm_url.rstrip("/"), args.model, args.engine, args.api_key)
    try:
        if args.command == "run":
            return cmd_run(args, target)
        if args.command == "capacity":
            return cmd_capacity(args, target)
    except PromptError as error:
        raise UserError(f"--input-tokens: {error}") from None
    workload = _workload(args)
    out_dir = Path(args.out or f"bench-{time.strftime('%Y%m%d-%H%M%S')}")
    comparisons = compare_with_vllm_bench(target, workload, args.tokenizer, shlex.split(args.vllm_bench), out_dir,
                                          rounds=args.rounds, client_cpus=args.client_cpus)
    roofline = roofline_line(comparisons, args.tokenizer, args.dtype, args.tp)
    for line in comparison_table(comparisons, args.tolerance) + ([roofline] if roofline else []):
        print(line)
    code = exit_code(comparisons, args.tolerance)
    (out_dir / "comparison.json").write_text(json.dumps(_jsonable({
        "base_url": target.base_url, "model": target.model, "workload": asdict(workload),
        "tolerance": args.tolerance, "gated": GATED, "exit_code": code, "roofline": roofline,
        "points": [{"point": c.point, "rounds": c.rounds,
                    "difference": {m: c.difference(m) for m in GATED + SHOWN},
                    "noise": {m: c.noise(m) for m in GATED + SHOWN},
                    "spread": {m: c.spread(m) for m in GATED + SHOWN},
                    "verdict": {m: c.verdict(m, args.tolerance) for m in GATED}} for c in comparisons]}), indent=2))
    print(f"results: {out_dir / 'comparison.json'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
