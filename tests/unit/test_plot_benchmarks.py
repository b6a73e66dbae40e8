"""scripts/plot_benchmarks.py: the benchmark JSON becomes the PNGs docs/benchmarks.md shows.

The plots are redrawn by hand after a benchmark run, so a broken plot script or a change
to what ``bench_bootstorm.py --out`` writes would otherwise go unnoticed until then.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

# Imported, not skipped when missing: the test extra installs matplotlib, so CI cannot pass without it.
from matplotlib.image import imread

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALL_PLOTS = {
    "throughput-vs-servers.png",
    "create-to-active-cdf.png",
    "listing-vs-servers.png",
    "scheduling-vs-hosts.png",
}


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("plot_benchmarks", SCRIPTS / "plot_benchmarks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def storm(servers: int, concurrency: int, per_s: float, detail_p50: float) -> dict[str, Any]:
    """A boot-storm record shaped as ``bench_bootstorm.py --out`` writes it."""
    return {
        "benchmark": "bootstorm",
        "date": "2026-12-03T19:00:00+00:00",
        "database": "sqlite",
        "options": {"hosts": 10, "servers": servers, "concurrency": concurrency},
        "results": {
            "hosts": 10,
            "servers": servers,
            "servers_per_s_to_all_active": per_s,
            "create_to_active_p50_ms": 200.0,
            "servers_detail_p50_ms": detail_p50,
        },
        "samples": {
            "create_to_active_ms": [150.0 + i for i in range(servers)],
            "servers_detail_ms": [detail_p50 * 0.9, detail_p50, detail_p50 * 1.5],
        },
    }


def decision(hosts: int, rank: float, claim: float) -> dict[str, Any]:
    return {
        "benchmark": "scheduler_decision",
        "date": "2026-12-03T19:00:00+00:00",
        "database": "sqlite",
        "options": {"scheduler_hosts": hosts},
        "results": {"hosts": hosts, "filter_weigh_p50_ms": rank, "select_and_claim_p50_ms": claim},
        "samples": {"filter_weigh_ms": [rank], "select_and_claim_ms": [claim]},
    }


def write(directory: Path, records: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, record in records.items():
        (directory / name).write_text(json.dumps(record))
    return directory


def assert_png(path: Path) -> None:
    """A PNG that decodes, at the size the docs expect, and small enough to commit."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert imread(path).shape[:2] == (400, 640)
    assert path.stat().st_size < 100_000


def test_every_plot_is_written_as_a_valid_small_png(tmp_path: Path) -> None:
    data = write(
        tmp_path / "data",
        {
            "s10-c5.json": storm(10, 5, 100.0, 3.0),
            "s40-c5.json": storm(40, 5, 90.0, 8.0),
            "s40-c5-again.json": storm(40, 5, 80.0, 9.0),  # a repeated run is averaged, not a second line
            "s40-c20.json": storm(40, 20, 120.0, 7.5),
            "h10.json": decision(10, 0.1, 0.5),
            "h100.json": decision(100, 0.3, 0.9),
            "notes.json": {"not": "a benchmark record"},  # skipped, not an error
        },
    )
    out = tmp_path / "png"
    written = load_script().plot_all(data, out)
    assert {p.name for p in written} == ALL_PLOTS
    assert {p.name for p in out.iterdir()} == ALL_PLOTS
    for path in written:
        assert_png(path)


def test_only_plots_with_data_are_written_and_no_data_is_an_error(tmp_path: Path) -> None:
    script = SCRIPTS / "plot_benchmarks.py"
    data = write(tmp_path / "data", {"h10.json": decision(10, 0.1, 0.5)})
    out = tmp_path / "png"
    done = subprocess.run(
        [sys.executable, str(script), "--data", str(data), "--out", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(out / "scheduling-vs-hosts.png")]
    assert [p.name for p in out.iterdir()] == ["scheduling-vs-hosts.png"]

    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run(
        [sys.executable, str(script), "--data", str(empty), "--out", str(out)], capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "no benchmark JSON" in done.stderr


def test_what_the_benchmark_writes_is_what_the_plot_script_reads(tmp_path: Path) -> None:
    """A real ``bench_bootstorm.py --scheduler-hosts 3 --out`` run (in-process, SQLite, about a second)."""
    data = tmp_path / "data"
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_bootstorm.py"), "--scheduler-hosts", "3", "--out", str(data / "h3.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert "samples" not in printed  # stdout keeps its old shape; the samples go to the file only
    record = json.loads((data / "h3.json").read_text())
    assert record["benchmark"] == "scheduler_decision"
    assert record["results"] == printed
    assert len(record["samples"]["select_and_claim_ms"]) == 50

    written = load_script().plot_all(data, tmp_path / "png")
    assert [p.name for p in written] == ["scheduling-vs-hosts.png"]
    assert_png(written[0])
