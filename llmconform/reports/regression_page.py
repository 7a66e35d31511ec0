"""regression.html: the gate's verdict as one self-contained page (inline CSS, the runs' perf plots as data URIs, the
perf changes with their intervals as inline SVG), for CI to publish as an artifact next to regression.md/json."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from llmconform.reports.regression import LISTED, Comparison, Finding
from llmconform.reports.report_dir import ReportDir

COLOURS = {"regressed": "#c62828", "improved": "#2e7d32", "inconclusive": "#ef6c00", "still failing": "#6d4c41",
           "unchanged": "#546e7a", "not compared": "#9e9e9e", "skipped in both": "#9e9e9e"}
STYLE = """
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 24px; color: #212121; max-width: 1400px; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 2px solid #eee; padding-bottom: 4px; margin-top: 28px; }
.verdict { font-size: 22px; font-weight: bold; padding: 10px 14px; border-radius: 6px; color: white;
           display: inline-block; }
.fail { background: #c62828; } .pass { background: #2e7d32; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } td.subject { font-family: monospace; word-break: break-all; width: 38%; }
.status { font-weight: bold; white-space: nowrap; } pre { white-space: pre-wrap; margin: 0; font-size: 12px; }
.counts span { margin-right: 14px; } .note { color: #b71c1c; }
.plots { display: flex; flex-wrap: wrap; } .plots figure { max-width: 48%; margin: 4px; }
.plots img { max-width: 100%; border: 1px solid #ddd; }
"""


def write(comparison: Comparison, out: ReportDir) -> Path:
    out.regression_html.write_text(render(comparison))
    return out.regression_html


def render(comparison: Comparison) -> str:
    regressions = len(comparison.regressions)
    versions = {name: ", ".join(found) or "engine version unknown" for name, found in comparison.versions.items()}
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Regression check</title>"
             f"<style>{STYLE}</style></head><body>",
             "<h1>Regression check</h1>",
             f"<p>baseline <code>{_e(comparison.baseline)}</code> ({_e(versions['baseline'])}) vs candidate "
             f"<code>{_e(comparison.candidate)}</code> ({_e(versions['candidate'])})</p>",
             f"<div class='verdict {'fail' if regressions else 'pass'}' id='verdict'>{regressions} regression(s)</div>"]
    parts += _identity(comparison.identity)
    for area, title in (("tests", "Conformance and other tests"), ("outputs", "Outputs (equivalence across runs)"),
                        ("perf", "Performance")):
        found = [f for f in comparison.findings if f.area == area]
        parts.append(f"<h2 id='{area}'>{title}</h2>")
        parts.append("<p class='counts'>" + "".join(
            f"<span style='color:{COLOURS.get(s, '#37474f')}'>{n} {_e(s)}</span>"
            for s, n in comparison.counts(area).items()) + "</p>" if found else "<p>nothing to compare</p>")
        if area == "perf":
            parts += _perf_chart([f for f in found if f.evidence.get("change") is not None])
            parts += _plots(comparison)
        shown = [f for f in found if f.status in LISTED or (area == "outputs" and f.status == "unchanged")
                 or f.status == "not compared"]
        if shown:
            parts.append("<table><tr><th>status</th><th>subject</th><th>evidence</th></tr>")
            parts += [_row(f) for f in shown]
            parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _identity(identity: dict) -> list[str]:
    if not identity:
        return []
    out = ["<h2 id='identity'>What each run ran on</h2><table>",
           f"<tr><th>baseline</th><td>{_e(identity['baseline'])}</td></tr>",
           f"<tr><th>candidate</th><td>{_e(identity['candidate'])}</td></tr></table>"]
    notes = [f"the runs differ in more than the engine: {d}" for d in identity["differences"]]
    notes += [f"warning: {w}" for w in identity["warnings"]]
    if notes:
        out.append("<ul>" + "".join(f"<li class='note'>{_e(n)}</li>" for n in notes) + "</ul>")
    return out


def _row(finding: Finding) -> str:
    colour = COLOURS.get(finding.status, "#37474f")
    return (f"<tr><td class='status' style='color:{colour}'>{_e(finding.status)}</td>"
            f"<td class='subject'>{_e(finding.subject)}</td><td><pre>{_e(finding.detail)}</pre></td></tr>")


def _perf_chart(findings: list[Finding]) -> list[str]:
    """Each metric's relative change with its interval, on one axis (0 = no change)."""
    if not findings:
        return []
    span = max(max(abs(f.evidence.get(k) or 0) for k in ("change", "low", "high")) for f in findings) or 0.1
    width, label, row = 900, 420, 22
    height = row * len(findings) + 30
    def x(value):
        return label + (width - label - 20) * (value + span) / (2 * span)
    svg = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' id='perf-chart'>",
           f"<line x1='{x(0)}' y1='0' x2='{x(0)}' y2='{height - 20}' stroke='#999'/>",
           f"<text x='{x(-span)}' y='{height - 5}' font-size='11'>{-span:+.0%}</text>",
           f"<text x='{x(span) - 30}' y='{height - 5}' font-size='11'>{span:+.0%}</text>"]
    for i, f in enumerate(findings):
        y = row * i + 14
        colour = COLOURS.get(f.status, "#37474f")
        low, high = f.evidence.get("low"), f.evidence.get("high")
        svg.append(f"<text x='0' y='{y + 4}' font-size='11'>{_e(f.subject[-60:])}</text>")
        if low is not None and high is not None:
            svg.append(f"<line x1='{x(low)}' y1='{y}' x2='{x(high)}' y2='{y}' stroke='{colour}' stroke-width='3'/>")
        svg.append(f"<circle cx='{x(f.evidence['change'])}' cy='{y}' r='4' fill='{colour}'>"
                   f"<title>{_e(f.detail)}</title></circle>")
    svg.append("</svg>")
    return ["<p>Relative change of each metric (candidate / baseline - 1) with its 95% bootstrap interval:</p>",
            "\n".join(svg)]


def _plots(comparison: Comparison) -> list[str]:
    images = []
    for name, report in (("baseline", comparison.baseline), ("candidate", comparison.candidate)):
        for path in report.perf_plots():
            data = base64.b64encode(path.read_bytes()).decode()
            images.append(f"<figure><img alt='{name} {path.name}' src='data:image/png;base64,{data}'>"
                          f"<figcaption>{name}: {path.name}</figcaption></figure>")
    return ["<div class='plots'>" + "".join(images) + "</div>"] if images else []


def _e(value) -> str:
    return html.escape(str(value))
