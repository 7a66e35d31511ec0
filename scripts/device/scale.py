"""Load-generator scaling on a real server (issue 17). At each concurrency: our client with worker processes (the
default count) against `vllm bench serve`, ROUNDS rounds alternating which goes first (the paired comparison of
`llmconform bench compare-vllm`: the mean of each round's ours / vllm - 1, its standard error, a verdict at
TOLERANCE), then our client in one process once, to show where a single event loop becomes the bottleneck. One run
of each tool per point cannot tell a 2% difference: two runs of one tool, minutes apart, have differed by 4%. Writes
scale.md (the table) and scale.json to OUT after every point.

    python3 scripts/device/scale.py --base-url http://127.0.0.1:8000 --model qwen2.5-7b --tokenizer DIR \
        --vllm-bench "python3 -m vllm.entrypoints.cli.main bench serve" --concurrency 1 64 256 512 --out DIR
"""

import argparse
import json
import shlex
from pathlib import Path

from llmconform.config.workloads import Workload
from llmconform.perf import bench, loadgen
from llmconform.perf.bench import PointComparison
from llmconform.perf.prompts import PromptTokenizer

METRICS = ("output_tok_s", "median_ttft_ms", "median_tpot_ms", "median_itl_ms", "p99_itl_ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--vllm-bench", required=True)
    parser.add_argument("--concurrency", type=int, nargs="+", required=True)
    parser.add_argument("--input-tokens", type=int, default=512)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--requests-per-stream", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = loadgen.Target(args.base_url, args.model, "vllm")
    workload = Workload("scale", args.input_tokens, args.output_tokens, concurrency=tuple(args.concurrency),
                        requests_per_stream=args.requests_per_stream)
    points = workload.points()
    tokenizer = PromptTokenizer.from_dir(args.tokenizer).with_server(target)
    done: list[tuple[PointComparison, dict]] = []

    def one_process(p: int, comparison: PointComparison) -> None:
        point = points[p]
        summary, _ = bench.run_ours(target, workload, point, tokenizer, out / f"{point.label}-single.records.jsonl",
                                    stream=1000 * (p + 1) + 500, workers=1)  # prompts no round of this point used
        single = {**summary.metrics.flat(), "client": summary.client.as_dict(),
                  "delivery": summary.delivery.as_dict()}
        print(f"{point.label} ours, 1 process: output {single['output_tok_s']:.1f} tok/s, median TPOT "
              f"{single['median_tpot_ms']:.2f} ms", flush=True)
        done.append((comparison, single))
        (out / "scale.json").write_text(json.dumps(
            [{"point": c.point, "rounds": c.rounds, "one_process": s} for c, s in done], indent=1))
        (out / "scale.md").write_text(table(done, args.tolerance))

    bench.compare_with_vllm_bench(target, workload, args.tokenizer, shlex.split(args.vllm_bench), out,
                                  rounds=args.rounds, on_point=one_process)
    print(table(done, args.tolerance))


def table(done: list[tuple[PointComparison, dict]], tolerance: float) -> str:
    head = ["point", "tool", "runs", "workers", "out tok/s", "vs vllm (paired mean +- s.e.)",
            f"verdict ({tolerance:.0%})", "TTFT p50", "TPOT p50", "ITL p50", "ITL p99", "client share of ITL",
            "busiest worker busy", "loop lag p99 ms", "flags"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for comparison, single in done:
        vllm_tok_s = comparison.median("vllm", "output_tok_s")
        clients = [r["ours_client"] for r in comparison.rounds]
        diff, noise = comparison.difference("output_tok_s"), comparison.noise("output_tok_s")
        versus = "-" if diff is None else f"{diff:+.1%}" + ("" if noise is None else f" +- {noise:.1%}")
        rows = [("ours, workers", len(comparison.rounds), clients, versus,
                 comparison.verdict("output_tok_s", tolerance), {m: comparison.median("ours", m) for m in METRICS}),
                ("vllm bench serve", len(comparison.rounds), [], "-", "-",
                 {m: comparison.median("vllm", m) for m in METRICS}),
                ("ours, 1 process", 1, [single["client"]],
                 f"{single['output_tok_s'] / vllm_tok_s - 1:+.1%} (unpaired)" if vllm_tok_s else "-", "-", single)]
        for tool, runs, client_runs, versus_cell, verdict, metrics in rows:
            worst = max(client_runs, key=lambda c: c.get("share_of_itl") or 0.0, default={})
            flags = [f"INVALID: {c['bound']}" for c in client_runs if c.get("bound")]
            if tool == "ours, 1 process":
                flags += [f"{k.upper()} not measurable" for k in single["delivery"].get("not_measurable", {})]
            cells = [comparison.point, tool, str(runs), str(worst.get("workers", "-")),
                     f"{metrics['output_tok_s']:.1f}", versus_cell, verdict,
                     *(f"{metrics[m]:.2f}" for m in METRICS[1:]),
                     f"{worst['share_of_itl']:.1%}" if worst.get("share_of_itl") is not None else "-",
                     f"{worst['busy_fraction']:.0%}" if worst else "-",
                     f"{worst['loop_lag_p99_ms']:.2f}" if worst else "-", "; ".join(flags) or "-"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
