"""The performance report section: from the `perf` and `floors` properties of the throughput suite's results it
writes perf-summary.json (every measured point with its metrics, hardware and flags; it is also the baseline format for
`METRIC:-X%` floors), perf.md (tables per case, what each point's numbers do not show by themselves, the floor
verdicts) and, with matplotlib (`pip install llmconform[plots]`), perf-curves.png (latency against throughput, one
curve per case: where a layout saturates) and, for sweeps of two or more points, perf-latency.png (TTFT, TPOT, ITL
and E2E latency: median, p90 and p99 against concurrency or rate).

Flags (`point_flags`): the load generator's own verdicts (a client-bound point is INVALID; bunched delivery makes
TPOT/ITL not measurable), an open-loop rate the server did not keep up with (achieved vs offered), throughput falling
as concurrency rises (past saturation), and a single stream whose TPOT spreads widely (a noisy machine)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from llmconform.reports.report_dir import ReportDir

# An open-loop point is flagged when it completed less than this share of the offered rate (the share is a little
# below 1 even when the server keeps up: the duration includes the last requests' latency).
ACHIEVED_RATE_SHARE = 0.8
SATURATION_DROP = 0.1  # throughput this much below a lower concurrency's: past saturation
NOISY_SPREAD = 3.0  # single-stream TPOT p99 / median beyond this: the machine (or engine) is not steady
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
            for i, point in enumerate(perf["points"]):
                runs.append({**where, "hardware": perf["hardware"], "gpu_name": perf.get("gpu_name"), **point,
                             "flags": point_flags(point, perf["points"][:i])})
        for verdict in properties.get("floors") or []:
            verdicts.append({**where, **verdict})
    return runs, verdicts


def write_report(report: ReportDir, results: list[dict]) -> list[str]:
    runs, verdicts = collect(results)
    if not runs and not verdicts:
        return []
    report.perf_summary.write_text(json.dumps({"version": 1, "runs": runs, "floors": verdicts}, indent=2)
                                   + "\n")
    report.perf_page.write_text(render_markdown(runs, verdicts))
    lines = [f"perf: {len({r['case'] for r in runs})} case(s), {len(runs)} measured point(s)"]
    lines += [f"  FLAG {r['case']} {r['workload']} {r['point']}: {flag}" for r in runs for flag in r["flags"]]
    if verdicts:
        counts = {s: sum(v["status"] == s for v in verdicts) for s in ("pass", "fail", "skip")}
        lines.append(f"floors: {counts['pass']} pass, {counts['fail']} fail, {counts['skip']} skip")
        lines += [f"  FAIL {v['case']}: {v['floor']} [{v['workload']} {v['point']}]: {v['detail']}"
                  for v in verdicts if v["status"] == "fail"]
    lines.append(f"perf report: {report.perf_page}")
    if runs:
        lines += write_plots(report, runs)
    return lines


def point_flags(point: dict, earlier: Sequence[dict] = ()) -> list[str]:
    """What a point's numbers do not say by themselves: the load generator's verdicts on the measurement (a
    client-bound point is INVALID, bunched delivery makes TPOT/ITL not measurable), then what the numbers imply
    (rate not kept up with, saturation, a noisy machine). `earlier` are the points measured before it (the sweep)."""
    m = point["metrics"]
    if not m.get("completed"):
        return ["no request completed"]
    flags = _flag_reasons(point)
    client = (point.get("client") or {}).get("warning")
    if client and not point.get("invalid"):
        flags.append(f"client: {client}")
    rate = point.get("rate")
    if rate not in (None, "inf") and m["requests_per_s"] < ACHIEVED_RATE_SHARE * rate:
        flags.append(f"achieved {m['requests_per_s']:.2f} req/s of {rate:g} offered "
                     f"({m['requests_per_s'] / rate:.0%}): the server did not keep up")
    if point.get("concurrency") and rate is None:
        lower = [p for p in earlier if p["workload"] == point["workload"] and p.get("rate") is None
                 and (p.get("concurrency") or 0) < point["concurrency"] and p["metrics"].get("output_tok_s")]
        best = max(lower, key=lambda p: p["metrics"]["output_tok_s"], default=None)
        if best and m["output_tok_s"] < (1 - SATURATION_DROP) * best["metrics"]["output_tok_s"]:
            flags.append(f"saturated: {m['output_tok_s']:.0f} out tok/s, below {best['metrics']['output_tok_s']:.0f} "
                         f"at {best['point']} (TTFT p99 {m['p99_ttft_ms']:.0f} ms)")
    if point.get("concurrency") == 1 and rate is None and m.get("median_tpot_ms") and \
            m["p99_tpot_ms"] > NOISY_SPREAD * m["median_tpot_ms"]:
        flags.append(f"noisy: single-stream TPOT p99 {m['p99_tpot_ms']:.2f} ms is "
                     f"{m['p99_tpot_ms'] / m['median_tpot_ms']:.1f}x its median (other load on the machine?)")
    return flags


def point_line(point: dict, flags: list[str]) -> str:
    """A finished point's key numbers, one line (for the terminal)."""
    m = point["metrics"]
    text = (f"{m['completed']}/{point['requests']} ok, {m['output_tok_s']:,.0f} out tok/s, "
            f"{m['requests_per_s']:.2f} req/s, TTFT p50/p99 {m['median_ttft_ms']:.0f}/{m['p99_ttft_ms']:.0f} ms, "
            f"TPOT p50 {m['median_tpot_ms']:.2f} ms")
    return text + "".join(f"; FLAG {flag}" for flag in flags)


def render_markdown(runs: list[dict], verdicts: list[dict]) -> str:
    intro = ("Metrics use the definitions of `vllm bench serve` (llmconform.perf.load_metrics). Latencies in ms; TPOT "
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
        out += [f"- {row['point']}: {flag}" for row in rows for flag in row["flags"]]
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


def write_plots(report: ReportDir, runs: list[dict]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["perf plots skipped: matplotlib is not installed (pip install llmconform[plots])"]
    written = [_plot_curves(plt, report.perf_curves, runs)]
    latency = _plot_latency_sweeps(plt, report.perf_latency, runs)
    if latency:
        written.append(latency)
    return [f"perf plots: {', '.join(str(p) for p in written)}"]


def _plot_curves(plt, path: Path, runs: list[dict]) -> Path:
    """Latency against throughput, one curve per case, workload and kind of sweep, each point named: the knee of a
    curve is where a layout saturates, and layouts compare at equal throughput."""
    curves: dict[str, list[dict]] = {}
    for (case, workload), rows in _group(runs).items():
        for row in rows:
            kind = "concurrency" if row["rate"] is None else "rate"
            curves.setdefault(f"{case} / {workload} ({kind})", []).append(row)
    panels = (("median_tpot_ms", "TPOT p50 (ms)"), ("p99_ttft_ms", "TTFT p99 (ms)"))
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, (metric, title) in zip(axes[0], panels):
        for label, rows in curves.items():
            rows = sorted(rows, key=_load_order)
            xs = [r["metrics"]["output_tok_s"] for r in rows]
            ys = [r["metrics"][metric] for r in rows]
            ax.plot(xs, ys, marker="o", label=label)
            for x, y, row in zip(xs, ys, rows):
                ax.annotate(row["point"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel("output tokens/s")
        ax.set_ylabel(title)
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(plt, figure, "Latency against throughput (each point labelled with its concurrency or rate)",
                 path)


def _load_order(row: dict) -> float:
    place = _x(row)
    return place[1] if place else float("inf")


def _plot_latency_sweeps(plt, path: Path, runs: list[dict]) -> Path | None:
    """Latency percentiles against concurrency or rate, for the sweeps that have two points or more."""
    series: dict[tuple[str, str, str], list[tuple[float, dict]]] = {}
    for (case, workload), rows in _group(runs).items():
        for row in rows:
            place = _x(row)
            if place:
                series.setdefault((place[0], case, workload), []).append((place[1], row["metrics"]))
    series = {key: points for key, points in series.items() if len(points) >= 2}
    if not series:
        return None
    axes_kinds = sorted({kind for kind, _, _ in series})
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
    return _save(plt, figure, "Latency percentiles (solid median, dashed p90, dotted p99)",
                 path)


def _save(plt, figure, title: str, path: Path) -> Path:
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _axis(ax, kind: str, ylabel: str) -> None:
    ax.set_xlabel("concurrency (streams in flight)" if kind == "concurrency" else "request rate (req/s)")
    if kind == "concurrency":
        ax.set_xscale("log", base=2)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)

