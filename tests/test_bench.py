"""The benchmark's quick mode, run once so that the benchmark keeps working."""

import json
import subprocess
import sys

import pytest
from harness import REPO


@pytest.mark.timeout(170)
def test_quick_benchmark_runs_every_phase_and_loses_nothing(tmp_path):
    figures_file = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench.py"), "--quick", "--json", str(figures_file)],
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
        "Targets",
    ):
        assert heading in result.stdout
    figures = json.loads(figures_file.read_text())
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
