"""The load-summary table, without a database: one formatter (core/load_summary.py) for the
CLI's table and the landing run's log."""

import io
from collections import Counter
from pathlib import Path

from sr_platform import cli
from sr_platform.core.load_summary import ingest_summary, load_summary_lines
from sr_platform.core.loader import LoadResult


def _results() -> list[LoadResult]:
    good = LoadResult(Path("/x/good.csv"), rows_read=1_500, loaded=1_000, duplicates=497,
                      rejected=3, seconds=2.0, ignored_columns=["colour"],
                      reasons=Counter({"instrument format": 2, "granularity required": 1}),
                      rule_reasons={"instrument format": "instrument: 'x' does not match",
                                    "granularity required": "granularity: required"},
                      rule_lines={"instrument format": [3, 5], "granularity required": [4]})
    bad = LoadResult(Path("/x/b\x1bad.csv"), error="b\x1bad.csv: not an event file")
    return [good, bad]


def test_the_table_is_the_one_the_cli_prints():
    out = io.StringIO()
    cli.print_load_summary(_results(), out)
    assert load_summary_lines(_results()) == out.getvalue().splitlines()


def test_the_table_lines():
    assert load_summary_lines(_results()) == [
        "file              read     loaded  duplicate  rejected     rows/s",
        "good.csv         1,500      1,000        497         3        750",
        "b\\x1bad.csv not loaded: b\\x1bad.csv: not an event file",
        "total            1,500      1,000        497         3        750   (2 files, 2.0 s)",
        "note: good.csv: ignored columns not in the contract: colour",
        "top reasons for rejected rows (all in table rejected_events):",
        "         2  instrument format",
        "            e.g. instrument: 'x' does not match",
        "            first lines: good.csv 3, 5",
        "         1  granularity required",
        "            e.g. granularity: required",
        "            first lines: good.csv 4",
        "list them: sr-platform rejected [--file FILE] [--rule RULE] "
        "(or sr-platform rejected --help)",
    ]


def test_the_landing_runs_log_heads_the_same_table():
    message = ingest_summary(_results(), partitions=4, seconds=3.0)
    head, *table = message.split("\n")
    assert head == "1 of 2 files loaded, 4 partitions materialized in 3.0 s (500 rows/s)"
    assert table == load_summary_lines(_results())
