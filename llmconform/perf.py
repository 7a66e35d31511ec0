"""The performance report section: from the `perf` and `floors` properties of the throughput suite's results it
writes perf-summary.json (every measured point with its metrics and hardware; it is also the baseline format for
`METRIC:-X%` floors), perf.md (tables per case, the floor verdicts) and, with matplotlib (`pip install
llmconform[plots]`), perf-throughput.png (output tokens/s against concurrency or rate) and perf-latency.png (TTFT,
TPOT, ITL and E2E latency: median, p90 and p99 against concurrency or rate)."""

from __future__ import annotations

import json
from pathlib import Path

SUMMARY_FILE = "perf-summary.json"
LATENCY_PANELS = (("ttft", "TTFT"), ("tpot", "TPOT (excl. 1st token)"), ("itl", "ITL"), ("e2el", "E2E latency"))
TABLE_COLUMNS = (("requests_per_s", "req/s", ".2f"), ("output_tok_s", "out tok/s", ".1f"),
                 ("median_ttft_ms", "TTFT p50", ".1f"), ("p99_ttft_ms", "TTFT p99", ".1f"),
                 ("median_tpot_ms", "TPOT p50", ".2f"), ("p99_tpot_ms", "TPOT p99", ".2f"),
                 ("p99_itl_ms", "ITL p99", ".2f"), ("p99_e2el_ms", "E2EL p99", ".0f"),
                 ("goodput_requests_per_s", "goodput req/s", ".2f"))


def collect(results: list[dict]) -> tuple[list[dict], list[dict]]:
    """(one row per measured point, one row per floor verdict), each carrying its case and server."""
    runs, verdicts = [], []
    for result in results:
        properties = result.get("properties") or {}
        server = properties.get("llm") or {}
        where = {"case": server.get("id"), "engine": server.get("engine"),
                 "engine_version": server.get("engine_version"), "layout": server.get("layout"),
                 "model": server.get("model")}
        perf = properties.get("perf")
        if perf:
            for point in perf["points"]:
                runs.append({**where, "hardware": perf["hardware"], "gpu_name": perf.get("gpu_name"), **point})
        for verdict in properties.get("floors") or []:
            verdicts.append({**where, **verdict})
    return runs, verdicts


def write_report(report_dir: Path, results: list[dict]) -> list[str]:
    runs, verdicts = collect(results)
    if not runs and not verdicts:
        return []
    report_dir = Path(report_dir)
    (report_dir / SUMMARY_FILE).write_text(json.dumps({"version": 1, "runs": runs, "floors": verdicts}, indent=2)
                                           + "\n")
    (report_dir / "perf.md").write_text(render_markdown(runs, verdicts))
    lines = [f"perf: {len({r['case'] for r in runs})} case(s), {len(runs)} measured point(s)"]
    if verdicts:
        counts = {s: sum(v["status"] == s for v in verdicts) for s in ("pass", "fail", "skip")}
        lines.append(f"floors: {counts['pass']} pass, {counts['fail']} fail, {counts['skip']} skip")
        lines += [f"  FAIL {v['case']}: {v['floor']} [{v['workload']} {v['point']}]: {v['detail']}"
                  for v in verdicts if v["status"] == "fail"]
    lines.append(f"perf report: {report_dir / 'perf.md'}")
    lines += write_plots(report_dir, runs)
    return lines


def render_markdown(runs: list[dict], verdicts: list[dict]) -> str:
    intro = ("Metrics use the definitions of `vllm bench serve` (llmconform.load_metrics). Latencies in ms; TPOT "
             "excludes the first token; `client` is the load generator's own share of each ITL window (busiest "
             "worker) and its worker processes; `offered` and `sent` are the requests/s asked for and sent; "
             "`flags`: `INVALID` when the client was the bottleneck, `bunched` when ITL/TPOT were not measurable.")
    out = ["# Performance", "", intro, ""]
    for key, rows in _group(runs).items():
        case, workload = key
        first = rows[0]
        gpu = f" ({first['gpu_name']})" if first.get("gpu_name") else ""
        setting = (f"{first['engine']} {first.get('engine_version') or ''}, layout {first['layout']}, on "
                   f"{first['hardware']}{gpu}; {first['input_tokens']} tokens in, {first['output_tokens']} out")
        out += [f"## {case} / {workload}", "", setting, ""]
        header = ["point", "requests", *[title for _, title, _ in TABLE_COLUMNS], "client", "offered", "sent",
                  "roofline", "flags"]
        out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            m = row["metrics"]
            cells = [row["point"], f"{m['completed']}/{row['requests']}"]
            cells += [format(m[k], f) if m.get(k) is not None else "-" for k, _, f in TABLE_COLUMNS]
            share = row["client"].get("share_of_itl")
            cells.append((f"{share:.0%}" if share is not None else "-") + f" ({row['client'].get('workers', 1)}w)")
            cells += [_rate(row.get("traffic", {}).get(k)) for k in ("offered_requests_per_s", "sent_requests_per_s")]
            cells.append(f"{row['roofline']['fraction']:.0%}" if row.get("roofline") else "-")
            cells.append(" ".join(_flags(row)) or "-")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        out += [f"- {row['point']}: {why}" for row in rows for why in _flag_reasons(row)]
        out.append("")
    if verdicts:
        out += ["## Floors", "", "| case | floor | point | verdict | detail |", "|---|---|---|---|---|"]
        for v in verdicts:
            point = f"{v['workload']} {v['point']}" if v.get("workload") else "-"
            out.append(f"| {v['case']} | `{v['floor']}` | {point} | {v['status']} | {v['detail']} |")
        out.append("")
    return "\n".join(out)


def _rate(value) -> str:
    return "-" if value is None else value if isinstance(value, str) else f"{value:.2f}"


def _flags(row: dict) -> list[str]:
    unmeasurable = (row.get("delivery") or {}).get("not_measurable")
    return (["INVALID"] if row.get("invalid") else []) + (
        [f"bunched ({'/'.join(sorted(unmeasurable)).upper()} not measurable)"] if unmeasurable else [])


def _flag_reasons(row: dict) -> list[str]:
    reasons = [f"INVALID: {row['invalid']}"] if row.get("invalid") else []
    return reasons + [f"{name.upper()} not measurable: {why}"
                      for name, why in sorted(((row.get("delivery") or {}).get("not_measurable") or {}).items())]


def _group(runs: list[dict]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in runs:
        groups.setdefault((row["case"], row["workload"]), []).append(row)
    return groups


def _x(row: dict) -> tuple[str, float] | None:
    """Where a point sits on a sweep's x axis: ('concurrency', C) or ('rate', R); an infinite rate has no place."""
    if row["rate"] is None:
        return "concurrency", row["concurrency"]
    if row["rate"] == "inf":
        return None
    return "rate", float(row["rate"])


def write_plots(report_dir: Path, runs: list[dict]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["perf plots skipped: matplotlib is not installed (pip install llmconform[plots])"]
    series: dict[tuple[str, str, str], list[tuple[float, dict]]] = {}
    for (case, workload), rows in _group(runs).items():
        for row in rows:
            place = _x(row)
            if place:
                series.setdefault((place[0], case, workload), []).append((place[1], row["metrics"]))
    if not series:
        return []
    axes_kinds = sorted({kind for kind, _, _ in series})
    figure, axes = plt.subplots(1, len(axes_kinds), figsize=(6.5 * len(axes_kinds), 4.5), squeeze=False)
    for ax, kind in zip(axes[0], axes_kinds):
        for (k, case, workload), points in series.items():
            if k == kind:
                points.sort(key=lambda p: p[0])
                ax.plot([x for x, _ in points], [m["output_tok_s"] for _, m in points], marker="o",
                        label=f"{case} / {workload}")
        _axis(ax, kind, "output tokens/s")
    figure.suptitle("Throughput")
    figure.tight_layout()
    throughput = report_dir / "perf-throughput.png"
    figure.savefig(throughput, dpi=110)
    plt.close(figure)
    figure, axes = plt.subplots(len(axes_kinds), len(LATENCY_PANELS), figsize=(5 * len(LATENCY_PANELS),
                                                                               4 * len(axes_kinds)), squeeze=False)
    for r, kind in enumerate(axes_kinds):
        for c, (name, title) in enumerate(LATENCY_PANELS):
            ax = axes[r][c]
            for i, ((k, case, workload), points) in enumerate(series.items()):
                if k != kind:
                    continue
                points.sort(key=lambda p: p[0])
                xs = [x for x, _ in points]
                color = f"C{i % 10}"
                for stat, style in (("median", "-"), ("p90", "--"), ("p99", ":")):
                    ax.plot(xs, [m[f"{stat}_{name}_ms"] for _, m in points], style, color=color, marker=".",
                            label=f"{case} / {workload} {stat}")
            _axis(ax, kind, f"{title} (ms)")
    for row in axes:
        row[0].legend(fontsize=7)
    figure.suptitle("Latency percentiles (solid median, dashed p90, dotted p99)")
    figure.tight_layout()
    latency = report_dir / "perf-latency.png"
    figure.savefig(latency, dpi=110)
    plt.close(figure)
    return [f"perf plots: {throughput}, {latency}"]


def _axis(ax, kind: str, ylabel: str) -> None:
    ax.set_xlabel("concurrency (streams in flight)" if kind == "concurrency" else "request rate (req/s)")
    if kind == "concurrency":
        ax.set_xscale("log", base=2)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0] and ylabel.startswith("output"):
        ax.legend(fontsize=7)
