"""The events checks are pure functions of the loads' results: database-free tests of what
each one says (the Dagster tests check the same figures end to end)."""

from pathlib import Path

from sr_platform.core.ingest import (
    CHECK_CATCH_ALL,
    CHECK_COUNTS,
    CHECK_REBOUND,
    CHECK_REJECTED,
    events_checks,
)
from sr_platform.core.loader import LoadResult


def _by_name(outcomes) -> dict:
    return {o.name: o for o in outcomes}


def test_counts_balance_per_file_or_the_check_fails():
    good = LoadResult(Path("a.csv"), rows_read=10, loaded=7, duplicates=2, rejected=1)
    lost = LoadResult(Path("b.csv"), rows_read=10, loaded=5, duplicates=0, rejected=1)
    failed = LoadResult(Path("c.csv"), rows_read=3, error="not an event file")  # not counted
    ok = _by_name(events_checks([], [good, failed], (0, 0)))
    assert ok[CHECK_COUNTS].passed
    assert ok[CHECK_COUNTS].metadata["files_failing"] == {}
    assert (ok[CHECK_COUNTS].metadata["source_rows"], ok[CHECK_COUNTS].metadata["loaded"]) \
        == (10, 7)
    bad = _by_name(events_checks([], [good, lost], (0, 0)))
    assert not bad[CHECK_COUNTS].passed
    assert bad[CHECK_COUNTS].metadata["files_failing"] == {
        "b.csv": {"source_rows": 10, "loaded": 5, "duplicate": 0, "rejected": 1}}
    # the rejected rows are a warning, named by file
    assert bad[CHECK_REJECTED].warn_only and not bad[CHECK_REJECTED].passed
    assert bad[CHECK_REJECTED].metadata["rejected_rows_by_file"] == {"a.csv": 1, "b.csv": 1}


def test_catch_all_rows_fail_their_check():
    assert _by_name(events_checks([], [], (0, 0)))[CHECK_CATCH_ALL].passed
    outcome = _by_name(events_checks([], [], (1, 3)))[CHECK_CATCH_ALL]
    assert (outcome.passed, outcome.metadata) == (
        False, {"default_partitions": 1, "rows_in_null_guards": 3})
    assert _by_name(events_checks([], [], (0, 0)))[CHECK_REBOUND].passed
