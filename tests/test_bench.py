"""The benchmark's quick mode, run once so that the benchmark keeps working, with
--markdown, so that its charts are drawn too."""

import json
import os
import subprocess
import sys

import pytest
from harness import REPO

PNG = b"\x89PNG\r\n\x1a\n"
# Each chart's link comes right after its table: before the next table's heading.
CHARTS = [
    ("Throughput:", "throughput.png", "Slow work"),
    ("Worker processes", "processes.png", "Majordomo brokers"),
    ("Majordomo brokers", "peers.png", "Services, zero work"),
    ("Overload sweep", "overload.png", "Targets"),
]


@pytest.mark.timeout(170)
def test_quick_benchmark_runs_every_phase_and_loses_nothing(tmp_path):
    figures_file = tmp_path / "bench.json"
    markdown = tmp_path / "performance.md"
    markdown.write_text("# Performance\n\n<!-- begin benchmark -->\n<!-- end benchmark -->\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench.py"), "--quick"]
        + ["--json", str(figures_file), "--markdown", str(markdown)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=160,
    )
    assert result.returncode == 0, result.stderr
    for heading in (
        "Throughput",
        "Slow work",
        "Burst",
        "Worker processes",
        "Majordomo brokers",
        "Services, zero work",
        "Kill run",
        "Kill loop",
        "client.py per",
        "Server RSS",
        "Client library",
        "Deadlines",
        "Metrics: zero work",
        "Overload:",
        "Overload sweep",
        "Targets",
    ):
        assert heading in result.stdout
    figures = json.loads(figures_file.read_text())
    assert_charts_linked(markdown, figures)
    assert figures["lost"] == 0
    modes = {row["mode"] for row in figures["throughput"].values()}
    assert modes == {"baseline", "inline", "workers", "async"}
    assert all(row["rps"] > 0 for row in figures["throughput"].values())
    assert all(row["lost"] == 0 for row in figures["slow_work"].values())
    assert figures["burst"]["async_s"] > 0 and figures["burst"]["lost"] == 0
    assert figures["processes"]["zero"]["processes"]["rps"] > 0
    assert figures["kill"]["lost"] == 0 and figures["kill"]["answered"] > 0
    assert all(
        row["mdp"]["rps"] > 0 for row in figures["majordomo"]["rows"].values() if "mdp" in row
    )
    assert figures["failover"]["rows"]["zero work"]["answered"] > 0
    assert figures["client"]["client_ms"] > 0 and figures["memory"]["server_added_kib"] > 0
    clients = figures["clients"]
    for kinds in (clients["loop"], clients["inflight"]):
        assert all(row["rps"] > 0 and row["cpu_us_per_request"] > 0 for row in kinds.values())
    assert set(clients["loop"]) == {"bare", "client", "legacy"}
    assert clients["threads"]["seconds"] >= clients["threads"]["ideal"]
    assert clients["burst"]["slow"]["seconds"] >= clients["burst"]["work"]
    metrics = figures["metrics"]["rows"]
    assert set(metrics) == {"inline", "--processes 2"}
    for row in metrics.values():
        assert row["on"]["rps"] > 0 and row["off"]["rps"] > 0 and row["ratio"] > 0
        assert row["scrapes"]["count"] > 0 and row["scrapes"]["lost"] == 0
    sweep = figures["overload"]["sweep"]["points"]["this"]
    assert [point["offered"] for point in sweep] == figures["settings"]["sweep_loads"]
    assert all(point["answered"] > 0 for point in sweep)


def assert_charts_linked(markdown, figures):
    """Every chart is a PNG file beside the markdown, linked right after its table."""
    text = markdown.read_text()
    for heading, name, next_heading in CHARTS:
        chart = markdown.parent / "performance-charts" / name
        assert chart.read_bytes().startswith(PNG) and chart.stat().st_size > 1000
        link = f"(performance-charts/{name})"
        assert text.index(heading) < text.index(link) < text.index(next_heading), name
    assert sorted(figures["charts"]) == ["majordomo", "overload", "processes", "throughput"]


def test_matplotlib_is_the_benchmark_charts_own():
    """matplotlib (requirements-dev.txt) is imported by bench/charts.py when it draws, never
    by importing charts.py, nor by any module of the package."""
    code = """
import importlib, pkgutil, sys
import charts, zmq_hello
for module in pkgutil.walk_packages(zmq_hello.__path__, "zmq_hello."):
    importlib.import_module(module.name)
print("matplotlib" in sys.modules)
"""
    path = f"{REPO}:{REPO / 'bench'}"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert result.stdout.strip() == "False", result.stderr
