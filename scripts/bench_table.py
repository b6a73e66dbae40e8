#!/usr/bin/env python3
"""Issue 14's table in one command: every benchmark behind it, then the table in Markdown.

Runs, one after the other on this machine (each as its own process, so none disturbs
another):

* ``bench_bootstorm.py`` 200 servers / 10 in flight (throughput, CPU and SQL statements per
  boot), 50 servers / 10 in flight and 50 servers / 1 in flight (create→ACTIVE p50),
  1,000 servers with ``--cold-listing`` (the first ``GET /servers/detail`` after a start,
  and the server's RSS with 1,000 servers);
* ``bench_bootstorm.py --scheduler-hosts 10000`` (one decision: filter, weigh and claim);
* ``bench_distributed.py`` 200 servers, a controller and 3 agents on RabbitMQ and PostgreSQL,
  with ``--compare`` (the all-in-one on the same PostgreSQL, for the 1.5x latency target).

    python scripts/bench_table.py                 # everything (about 5 minutes on 2 cores)
    python scripts/bench_table.py --skip-split    # without RabbitMQ/PostgreSQL
    python scripts/bench_table.py --out docs/benchmarks/data/table.json

Nothing is asserted: the table goes into docs/benchmarks.md and the issue's note.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def bootstorm(*args: str) -> dict[str, Any]:
    """One run of bench_bootstorm.py; its JSON record (figures and samples)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            [sys.executable, str(HERE / "bench_bootstorm.py"), *args, "--out", out.name],
            check=True,
            stdout=subprocess.DEVNULL,
            env=_env(),
        )
        record: dict[str, Any] = json.loads(Path(out.name).read_text())
    return record["results"]


def distributed(servers: int) -> list[dict[str, Any]]:
    """bench_distributed.py with --compare: the split run, then the all-in-one on PostgreSQL."""
    proc = subprocess.run(
        [sys.executable, str(HERE / "bench_distributed.py"), "--servers", str(servers), "--compare"],
        check=True,
        capture_output=True,
        text=True,
        env=_env(),
    )
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _env() -> dict[str, str]:
    import os

    # The statement counter costs a microsecond per statement; on for these runs only.
    return dict(os.environ, NOVALITE_COUNT_SQL_STATEMENTS="true")


def measure(skip_split: bool) -> dict[str, Any]:
    m: dict[str, Any] = {}
    print("200 servers, 10 in flight ...", file=sys.stderr)
    m["storm200"] = bootstorm("--hosts", "10", "--servers", "200", "--concurrency", "10")
    print("50 servers, 10 in flight ...", file=sys.stderr)
    m["storm50"] = bootstorm("--hosts", "10", "--servers", "50", "--concurrency", "10")
    print("50 servers, 1 in flight ...", file=sys.stderr)
    m["single"] = bootstorm("--hosts", "10", "--servers", "50", "--concurrency", "1")
    print("1,000 servers, cold listing ...", file=sys.stderr)
    m["storm1000"] = bootstorm(
        "--hosts", "10", "--servers", "1000", "--concurrency", "10", "--cold-listing", "3", "--detail-samples", "5"
    )
    print("one decision over 10,000 hosts ...", file=sys.stderr)
    m["scheduler"] = bootstorm("--scheduler-hosts", "10000")
    if not skip_split:
        print("split: controller + 3 agents, 200 servers (and the all-in-one on PostgreSQL) ...", file=sys.stderr)
        m["split"] = distributed(200)
    return m


def _ms(value: Any) -> str:
    return f"{value:g} ms" if isinstance(value, (int, float)) else "n/a"


def table(m: dict[str, Any]) -> str:
    s200, s50, one, s1000, sched = m["storm200"], m["storm50"], m["single"], m["storm1000"], m["scheduler"]
    sql = s200.get("sql_statements_per_boot")
    rows = [
        (
            "all-in-one, 10 fake hosts, 200 servers, 10 in flight: servers/s to all ACTIVE",
            f"{s200['servers_per_s_to_all_active']:g}",
            "≥ 400",
        ),
        ("server CPU per boot (all services)", f"{s200['server_cpu_s_per_boot'] * 1000:.2f} ms", "≤ 2.5 ms"),
        ("SQL statements per boot (all services)", f"{sql:g}" if sql is not None else "n/a", "≤ 8"),
        ("create→ACTIVE p50, one request in flight", _ms(one["create_to_active_p50_ms"]), "< 10 ms"),
        ("create→ACTIVE p50, 50 servers, 10 in flight", _ms(s50["create_to_active_p50_ms"]), "< 50 ms"),
        (
            "`GET /servers/detail`, 1,000 servers, first listing after start",
            _ms(s1000.get("servers_detail_cold_p50_ms")),
            "< 30 ms",
        ),
        (
            "one scheduling decision over 10,000 hosts (filter + weigh + claim)",
            _ms(sched["select_and_claim_p50_ms"]),
            "< 50 ms",
        ),
    ]
    split = m.get("split")
    if split:
        dist = next(r for r in split if r.get("mode") == "distributed")
        aio = next((r for r in split if r.get("mode") == "all-in-one"), None)
        ratio = f", {dist['create_to_active_p50_ms'] / aio['create_to_active_p50_ms']:.1f}x all-in-one" if aio else ""
        rows.append(
            (
                "split: controller + 3 agents, RabbitMQ + PostgreSQL, 200 servers",
                f"{dist['servers_per_s_to_all_active']:g} servers/s, p50 {dist['create_to_active_p50_ms']:g} ms{ratio}",
                "≥ 150 servers/s, p50 ≤ 1.5x all-in-one on PostgreSQL",
            )
        )
    rows.append(("server RSS with 1,000 servers", f"{s1000['server_rss_mb']:g} MB", "≤ 120 MB"))
    lines = ["| measure | measured | target |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-split", action="store_true", help="leave out the RabbitMQ + PostgreSQL run")
    parser.add_argument("--out", type=Path, help="also write every run's figures here (JSON)")
    args = parser.parse_args()
    measured = measure(args.skip_split)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"benchmark": "table", "date": datetime.now(UTC).isoformat(timespec="seconds"), "runs": measured}
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(table(measured))


if __name__ == "__main__":
    main()
