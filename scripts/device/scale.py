"""Load-generator scaling on a real server (issue 17): at each concurrency, our client in one process, our client
with worker processes (the default count), and `vllm bench serve`, one after the other against the same server,
with the same workload. Writes a markdown table and the raw results to OUT.

    python3 scripts/device/scale.py --base-url http://127.0.0.1:8000 --model qwen2.5-7b --tokenizer DIR \
        --vllm-bench "python3 -m vllm.entrypoints.cli.main bench serve" --concurrency 1 64 256 512 --out DIR
"""

import argparse
import json
import shlex
import time
from pathlib import Path

from llmconform.config.workloads import Workload
from llmconform.perf import bench, loadgen
from llmconform.perf.prompts import PromptTokenizer

COLUMNS = ("output_tok_s", "median_ttft_ms", "median_tpot_ms", "median_itl_ms", "p99_itl_ms")


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
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = loadgen.Target(args.base_url, args.model, "vllm")
    workload = Workload("scale", args.input_tokens, args.output_tokens, concurrency=tuple(args.concurrency),
                             requests_per_stream=args.requests_per_stream)
    tokenizer = PromptTokenizer.from_dir(args.tokenizer).with_server(target)
    rows = []
    for p, point in enumerate(workload.points()):
        stream = 100 * (p + 1)  # fresh prompts for every run (no prefix-cache hits)
        for tool, workers in (("ours, 1 process", 1), ("ours, workers", None), ("vllm bench serve", None)):
            started = time.monotonic()
            stream += 10
            if tool.startswith("ours"):
                summary, _ = bench.run_ours(target, workload, point, tokenizer,
                                            out / f"{point.label}-{'single' if workers else 'workers'}.records.jsonl",
                                            stream=stream, workers=workers)
                row = {"point": point.label, "tool": tool, **summary.metrics.flat(), "client": summary.client.as_dict(),
                       "delivery": summary.delivery.as_dict()}
            else:
                name = f"vllm-{point.label}.json"
                argv = bench.vllm_bench_argv(shlex.split(args.vllm_bench), target, workload, point, args.tokenizer,
                                             out, name, seed=stream)
                row = {"point": point.label, "tool": tool,
                       **bench.vllm_metrics(bench.run_vllm_bench(argv, out / name, out / f"vllm-{point.label}.log",
                                                                 900))}
            rows.append(row)
            print(f"{point.label} {tool}: output {row['output_tok_s']:.1f} tok/s, median TTFT "
                  f"{row['median_ttft_ms']:.1f} ms, median TPOT {row['median_tpot_ms']:.2f} ms "
                  f"({time.monotonic() - started:.0f} s)", flush=True)
        (out / "scale.json").write_text(json.dumps(rows, indent=1))
        (out / "scale.md").write_text(table(rows))
    print(table(rows))


def table(rows: list[dict]) -> str:
    head = ["point", "tool", "workers", "out tok/s", "vs vllm", "TTFT p50", "TPOT p50", "ITL p50", "ITL p99",
            "client share of ITL", "busiest worker busy", "loop lag p50/p99 ms", "flags"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        reference = next((r for r in rows if r["point"] == row["point"] and r["tool"] == "vllm bench serve"), None)
        client = row.get("client") or {}
        versus = (f"{row['output_tok_s'] / reference['output_tok_s'] - 1:+.1%}"
                  if reference and reference["output_tok_s"] and row is not reference else "-")
        flags = (["INVALID: " + client["bound"]] if client.get("bound") else []) + [
            f"{k.upper()} not measurable" for k in (row.get("delivery") or {}).get("not_measurable", {})]
        cells = [row["point"], row["tool"], str(client.get("workers", "-")), f"{row['output_tok_s']:.1f}", versus,
                 *(f"{row[c]:.2f}" for c in COLUMNS[1:]),
                 f"{client['share_of_itl']:.1%}" if client.get("share_of_itl") is not None else "-",
                 f"{client['busy_fraction']:.0%}" if client else "-",
                 f"{client['loop_lag_p50_ms']:.2f}/{client['loop_lag_p99_ms']:.2f}" if client else "-",
                 "; ".join(flags) or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
