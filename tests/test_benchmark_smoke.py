"""The benchmark runs end to end in its tiniest configuration.

Only the shape of the results is checked: every expected pair is present and
every time is positive. The figures themselves are never asserted, because
they depend on the machine and its load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from execstore._server import MongodProcess

pytestmark = pytest.mark.mongod_only

REPOSITORY = Path(__file__).resolve().parent.parent
BENCH_TIMEOUT_SECONDS = 120

EXPECTED_PAIRS = {
    "get_key motor c=1",
    "set_key motor c=1",
    "get_key motor c=64",
    "set_key motor c=64",
    "get_key pymongo c=1",
    "set_key pymongo c=1",
    "get_key pymongo c=64",
    "set_key pymongo c=64",
    "sync get_key motor vs loop thread",
    "sync set_key motor vs loop thread",
    "sync get_key pymongo vs loop thread",
    "sync set_key pymongo vs loop thread",
    "sync get_key motor vs blocking",
    "sync set_key motor vs blocking",
    "sync get_key pymongo vs blocking",
    "sync set_key pymongo vs blocking",
    "bulk 20 existing keys motor",
    "bulk 20 new keys motor",
    "bulk 20 existing keys pymongo",
    "bulk 20 new keys pymongo",
}
EXPECTED_SCALE_PAIRS = {
    "scale get_key",
    "scale set_key",
    "scale count_keys of a 10-key store",
    "scale get_store of a 10-key store",
    "scale list_stores",
    "scale count_stores",
    "scale list_stores, global context",
    "scale count_stores, global context",
}


@pytest.fixture(scope="module")
def bench_report(
    mongod: MongodProcess, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Run ``python -m bench.run --quick`` with a tiny scale run and return its JSON."""
    output = tmp_path_factory.mktemp("bench") / "results.json"
    command = [
        sys.executable,
        "-m",
        "bench.run",
        "--quick",
        "--scale",
        "--scale-keys=3000",
        "--scale-big-store=2000",
        f"--uri={mongod.uri}",
        f"--json={output}",
    ]
    path = os.pathsep.join(
        filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")])
    )
    completed = subprocess.run(
        command,
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report: dict[str, Any] = json.loads(output.read_text())
    return report


def _assert_positive_times(pair: dict[str, Any]) -> None:
    name = pair["name"]
    assert pair["a_samples_us"], f"{name}: no samples for side A"
    assert pair["b_samples_us"], f"{name}: no samples for side B"
    assert all(sample > 0 for sample in pair["a_samples_us"]), name
    assert all(sample > 0 for sample in pair["b_samples_us"]), name
    assert pair["a_median_us"] > 0, name
    assert pair["b_median_us"] > 0, name
    assert pair["ratio"] > 0, name


def test_bench_reports_every_pair(bench_report: dict[str, Any]) -> None:
    names = [pair["name"] for pair in bench_report["pairs"]]
    assert set(names) == EXPECTED_PAIRS
    assert len(names) == len(EXPECTED_PAIRS), "a pair is reported twice"


def test_bench_times_are_positive(bench_report: dict[str, Any]) -> None:
    for pair in bench_report["pairs"]:
        _assert_positive_times(pair)


def test_bench_records_run(bench_report: dict[str, Any]) -> None:
    assert bench_report["command"].startswith("python -m bench.run")
    assert bench_report["machine"]["mongod"]
    assert bench_report["machine"]["cpu_count"] > 0
    assert bench_report["seconds"] > 0


def test_bench_scale_reports_every_pair(bench_report: dict[str, Any]) -> None:
    scale = bench_report["scale"]
    assert scale["keys"] == 3000
    for run in scale["drivers"]:
        names = {pair["name"] for pair in run["pairs"]}
        assert names == EXPECTED_SCALE_PAIRS, run["driver"]
        for pair in run["pairs"]:
            _assert_positive_times(pair)


def test_bench_scale_iterates_every_key(bench_report: dict[str, Any]) -> None:
    for run in bench_report["scale"]["drivers"]:
        iterations = run["iter_keys"]
        assert iterations["1000 keys"]["keys"] == 1000, run["driver"]
        assert iterations["2000 keys"]["keys"] == 2000, run["driver"]
        assert iterations["2000 keys"]["peak_growth_bytes"] > 0, run["driver"]
