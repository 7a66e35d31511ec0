"""regression.html in a real headless browser (Debian's chromium): the page renders on its own (no network, no other
file), shows the verdict, every area and the embedded plots; its screenshot is kept with the tests' output
(LLMCONFORM_ARTIFACTS, default reports/test-artifacts)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from paths import ROOT

from llmconform import cli
from llmconform.reports.report_dir import ReportDir

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("LLMCONFORM_ARTIFACTS", ROOT / "reports" / "test-artifacts"))
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (scripts/setup.sh installs it as root)")
NODE = "suites/test_openai_generation.py::test_logprobs_schema[chat-vllm-m-tp1]"


def write_run(directory: Path, outcome: str, plot_colour: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir()
    llm = {"id": "vllm-m-tp1", "engine": "vllm", "engine_version": "0.32.0", "layout": "tp1", "model": "m"}
    (directory / "results.jsonl").write_text(json.dumps({
        "nodeid": NODE, "when": "call", "outcome": outcome, "properties": {"llm": llm},
        **({"error": "E   HTTP 400 <for a valid request>"} if outcome == "failed" else {})}) + "\n")
    figure, ax = plt.subplots(figsize=(4, 3))
    ax.plot([1, 2, 4], [10, 18, 30], color=plot_colour)
    figure.savefig(ReportDir(directory).perf_curves, dpi=60)
    plt.close(figure)
    return directory


def chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--user-data-dir=/tmp/llmconform-chromium-profile", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_page_renders_the_verdict_in_a_real_browser(tmp_path):
    baseline = write_run(tmp_path / "a", "passed", "green")
    candidate = write_run(tmp_path / "b", "failed", "blue")
    assert cli.main(["compare", str(baseline), str(candidate), "--out", str(tmp_path)]) == 1
    page = tmp_path / "regression.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text  # self-contained, static
    dom = chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "1 regression(s)" in dom.stdout and "&lt;for a valid request&gt;" in dom.stdout  # escaped, not markup
    assert dom.stdout.count("data:image/png;base64,") == 2  # both runs' plots travel inside the page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "regression-page.png"
    shot = chromium(f"--screenshot={screenshot}", "--window-size=1200,900", page.as_uri())
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    from PIL import Image

    image = Image.open(screenshot).convert("RGB")
    colours = {colour for _, colour in image.getcolors(maxcolors=1 << 20)}
    assert (0xC6, 0x28, 0x28) in colours  # the red verdict box was painted
    assert any(b > 150 and r < 100 and g < 100 for r, g, b in colours)  # the candidate's blue plot line too
    print(f"screenshot: {screenshot}")
