#!/usr/bin/env python3
"""Draw docs/benchmarks.md's plots from the JSON that ``bench_bootstorm.py --out`` writes.

The tables in docs/benchmarks.md give medians; the plots show how the figures move with
size (throughput and listing time against servers, scheduling time against hosts) and the
whole create→ACTIVE distribution, which a p50/p95 pair hides. The JSON files are committed
beside the PNGs, so a plot can be redrawn (or restyled) without re-running a benchmark.

    python scripts/plot_benchmarks.py                      # docs/benchmarks/data/*.json -> docs/benchmarks/*.png
    python scripts/plot_benchmarks.py --data DIR --out DIR

Needs matplotlib (``pip install -e '.[bench]'``). Writes only the plots it has data for
and prints the path of each PNG written.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: CI and headless machines

import matplotlib.pyplot as plt  # after use("Agg"): the backend must be chosen first

ROOT = Path(__file__).resolve().parent.parent
DPI = 100
SIZE = (6.4, 4.0)  # inches: 640x400 px at DPI, small enough to commit


def load(data_dir: Path) -> list[dict[str, Any]]:
    """Every benchmark record in ``data_dir`` (``*.json``, sorted by name); other JSON is skipped."""
    records = []
    for path in sorted(data_dir.glob("*.json")):
        record = json.loads(path.read_text())
        if isinstance(record, dict) and "benchmark" in record and "results" in record:
            record["_file"] = path.name
            records.append(record)
    return records


def _by(records: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r["benchmark"] == kind]


def _series(records: list[dict[str, Any]], x_key: str, y: Any) -> tuple[list[float], list[float], list[list[float]]]:
    """Points ``(x, mean y)`` sorted by x, and every run's y at each x (repeated runs are averaged)."""
    groups: dict[float, list[float]] = defaultdict(list)
    for r in records:
        value = y(r)
        if value is not None:
            groups[r["results"][x_key]].append(float(value))
    xs = sorted(groups)
    return xs, [statistics.fmean(groups[x]) for x in xs], [groups[x] for x in xs]


def _label(r: dict[str, Any]) -> str:
    return f"{r['options'].get('concurrency', '?')} in flight, {r['results'].get('hosts', '?')} hosts, {r['database']}"


def _save(fig: Any, out_dir: Path, name: str, title: str) -> Path:
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = out_dir / name
    fig.savefig(path, dpi=DPI, format="png")
    plt.close(fig)
    return path


def _grouped(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Boot-storm runs by setting (requests in flight, hosts, database): one line per setting."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[_label(r)].append(r)
    return dict(sorted(groups.items()))


def plot_throughput(storms: list[dict[str, Any]], out_dir: Path) -> Path | None:
    if not storms:
        return None
    fig, ax = plt.subplots(figsize=SIZE)
    for label, runs in _grouped(storms).items():
        xs, ys, every = _series(runs, "servers", lambda r: r["results"].get("servers_per_s_to_all_active"))
        ax.plot(xs, ys, marker="o", label=label)
        for x, values in zip(xs, every, strict=True):
            if len(values) > 1:
                ax.scatter([x] * len(values), values, s=8, color="grey", zorder=3)
    ax.set_xlabel("servers created at once")
    ax.set_ylabel("servers/s to all ACTIVE")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "throughput-vs-servers.png", "Boot storm: throughput")


def plot_latency(storms: list[dict[str, Any]], out_dir: Path) -> Path | None:
    """One CDF per run: the share of servers ACTIVE within t ms of their POST."""
    runs = [r for r in storms if r.get("samples", {}).get("create_to_active_ms")]
    if not runs:
        return None
    # One colour per server count, one line style per setting, so both can be read off.
    sizes = sorted({r["results"]["servers"] for r in runs})
    settings = sorted({_label(r) for r in runs})
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=SIZE)
    for r in sorted(runs, key=lambda r: (_label(r), r["results"]["servers"])):
        values = sorted(r["samples"]["create_to_active_ms"])
        share = [(i + 1) / len(values) for i in range(len(values))]
        ax.step(
            values,
            share,
            where="post",
            color=f"C{sizes.index(r['results']['servers']) % 10}",
            linestyle=styles[settings.index(_label(r)) % len(styles)],
            label=f"{r['results']['servers']} servers, {_label(r)}",
        )
    ax.set_xlabel("create→ACTIVE (ms)")
    ax.set_ylabel("share of servers")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(0.26, 0.5))  # in the gap between the groups
    return _save(fig, out_dir, "create-to-active-cdf.png", "Boot storm: create→ACTIVE distribution")


def plot_listing(storms: list[dict[str, Any]], out_dir: Path) -> Path | None:
    """p50 of the listings against servers present; the bar spans the fastest to the slowest listing."""
    if not storms:
        return None
    fig, ax = plt.subplots(figsize=SIZE)
    for label, runs in _grouped(storms).items():
        xs, ys, _ = _series(runs, "servers", lambda r: r["results"].get("servers_detail_p50_ms"))
        lo, hi = [], []
        for x, y in zip(xs, ys, strict=True):
            samples = [
                v
                for r in runs
                if r["results"]["servers"] == x
                for v in r.get("samples", {}).get("servers_detail_ms", [])
            ]
            lo.append(y - min(samples) if samples else 0.0)
            hi.append(max(samples) - y if samples else 0.0)
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=label)
    ax.set_xlabel("servers in the listing")
    ax.set_ylabel("GET /servers/detail (ms, p50; bar: min to max)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "listing-vs-servers.png", "Listing time over HTTP")


def plot_scheduling(decisions: list[dict[str, Any]], out_dir: Path) -> Path | None:
    if not decisions:
        return None
    fig, ax = plt.subplots(figsize=SIZE)
    for key, label in (
        ("filter_weigh_p50_ms", "filter + weigh"),
        ("select_and_claim_p50_ms", "filter + weigh + claim in the DB"),
    ):
        xs, ys, _ = _series(decisions, "hosts", lambda r, key=key: r["results"].get(key))
        ax.plot(xs, ys, marker="o", label=f"{label} (p50)")
    ax.set_xlabel("hosts")
    ax.set_ylabel("one scheduling decision (ms)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "scheduling-vs-hosts.png", "Scheduler: one decision, in-process")


def plot_all(data_dir: Path, out_dir: Path) -> list[Path]:
    """Every plot the records in ``data_dir`` have data for, written into ``out_dir``."""
    records = load(data_dir)
    storms = _by(records, "bootstorm")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        plot_throughput(storms, out_dir),
        plot_latency(storms, out_dir),
        plot_listing(storms, out_dir),
        plot_scheduling(_by(records, "scheduler_decision"), out_dir),
    ]
    return [p for p in written if p is not None]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "docs" / "benchmarks" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = parser.parse_args(argv)
    written = plot_all(args.data, args.out)
    if not written:
        raise SystemExit(f"no benchmark JSON in {args.data} (write some with bench_bootstorm.py --out)")
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
