"""`make bench`'s orchestrator runs end to end at a tiny size and writes its report (timings are
never asserted: only that every section ran and what the report holds)."""

import json
import os
import subprocess
import sys

import pytest

from sr_platform.core import settings
from sr_platform.core.localpg import LocalCluster

RUN = settings.PROJECT_ROOT / "bench" / "run.py"


@pytest.mark.slow
@pytest.mark.timeout(1500)  # every section, a dagster dev among them
def test_bench_run_writes_the_report(tmp_path):
    # a cluster of its own: stopping it at the end never stops one a `make bench` is using
    home = tmp_path / ".sr_platform-bench"
    try:
        _bench_run_writes_the_report(tmp_path, home)
    finally:
        LocalCluster(home, settings.pg_bin_dir()).remove()


def _bench_run_writes_the_report(tmp_path, home):
    proc = subprocess.run([sys.executable, str(RUN), "--rows", "2000", "--quick",
                           "--out", str(tmp_path), "--name", "smoke"],
                          capture_output=True, text=True, timeout=1200,
                          env=dict(os.environ, SR_PLATFORM_BENCH_HOME=str(home)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    md = (tmp_path / "smoke.md").read_text()
    for section in ("## Goals", "## Load", "## Queries at 1y", "Partition pruning",
                    "## Concurrent writers", "## Real time (issue 16",
                    "## Landing to queryable (issue 16"):
        assert section in md, section
    assert "Zero lost and zero duplicated rows: asserted, holds for every run." in md
    res = json.loads((tmp_path / "smoke.json").read_text())
    assert set(res) >= {"environment", "load", "queries", "read", "writers", "notify",
                        "landing", "goals", "charts"}
    assert res["notify"]["ok"] is True
    assert any(line.startswith("| landing: QUERYABLE: every row visible to a reader |")
               for line in res["landing"]["table"])
    env = res["environment"]
    assert env["wal_level"] == "replica"
    if settings.external_database_url() is None:
        # its own throwaway cluster, not archiving, stopped at the end
        assert env["archive_mode"] == "off"
        assert env["server"].startswith("the benchmarks' own local cluster .sr_platform-bench/")
        assert f"({env['server']}; archive_mode=off, wal_level=replica)" in md
        bench = LocalCluster(home, settings.pg_bin_dir())
        assert not bench.is_running()
        assert list(bench.wal_archive.iterdir()) == []
        assert proc.stdout.splitlines()[-1].startswith(
            f"stopped the benchmark cluster ({bench.data_dir})")

    names = [m["name"] for m in res["load"]["methods"]]
    for baseline in ("psql \\copy events into a flat table", "psql \\copy events, then",
                     "pandas to_sql", "psycopg executemany"):
        assert any(n.startswith(baseline) for n in names), (baseline, names)
    assert all(m["rows_per_s"] > 0 for m in res["load"]["methods"])

    (q,) = res["queries"]
    assert q["size"] == "1y" and q["events"] > 0
    goal_queries = {r["query"].split(" (")[0] for r in q["queries"] if r["goal"]}
    assert {"latest 1,000 of a pair", "one instrument, one month",
            "single-row insert", "price band +-0.0002 of a pair"} <= goal_queries
    assert any("row range into a DataFrame" in g for g in goal_queries)
    assert all(r["met"] in (True, False) for r in q["queries"] if r["goal"])
    assert [r["pairs"] for r in q["pruning"]] == [112, 112, 120, 120]

    w = res["writers"]
    assert w["ok"] is True and [r["procs"] for r in w["results"]] == [1, 2]
    for r in w["results"]:
        for one in r["runs"]:
            c = one["check"]
            assert c["rows"] == c["distinct_ids"] == c["levels"] == c["expected"] == w["rows"]
            assert c["lost"] == c["extra"] == c["duplicated"] == 0
    # each file loaded by two processes when there are two
    assert w["results"][1]["runs"][0]["file_loads"] == 2 * w["files"]

    verdicts = {g["goal"]: g["met"] for g in res["goals"]}
    assert any(k.startswith("6. concurrent writers: zero lost") and v is True
               for k, v in verdicts.items())
    charts = res["charts"]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert charts == []
    else:
        assert {"load.png", "queries_1y.png", "pruning_1y.png", "writers.png"} <= set(charts)
        for c in charts:
            assert (tmp_path / c).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
