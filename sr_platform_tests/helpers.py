"""Helpers shared by the test modules: event rows and files, queries of the loaded tables, the
snapshots and assertions of a load, and the CLI as a subprocess."""

import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pandas as pd
import psycopg

from sr_platform.core import db, loader
from sr_platform.core.event_files import OPTIONAL, REQUIRED

INSTRUMENT_RE = "^[A-Z0-9][A-Z0-9_]{0,9}$"
NO_OFFSET = "has no UTC offset (write Z or +hh:mm, or load with --assume-tz)"
TABLES = ("new_resistance_events", "support_and_resistance_master", "event_features")
HOSTILE = "X'); DROP TABLE new_resistance_events; --"

# a valid row as the file's raw strings; 2026-03-04 is a Wednesday (day_of_week 2)
BASE = {
    "event_creation_date": "2026-03-04T13:00:00Z",
    "granularity": "H1",
    "instrument": "EUR_USD",
    "event_price_level": "1.084210",
    "atr_at_event": "0.001500",
    "new_resistance_negative_rebound": "-0.000750",
    "new_resistance_negative_rebound_in_atr": "-0.500000",
}


# ---------------------------------------------------------------------------------------------
# helpers


def row(hour: int = 13, **overrides: str) -> dict[str, str]:
    """A valid row at 2026-03-04 <hour>:00 UTC; override any column with a raw string."""
    r = dict(BASE, event_creation_date=f"2026-03-04T{hour:02d}:00:00Z")
    r.update(overrides)
    return r


def columns_of(rows: list[dict[str, str]]) -> list[str]:
    present = {k for r in rows for k in r}
    return list(REQUIRED) + [c for c in OPTIONAL if c in present]


def csv_text(rows: list[dict[str, str]], columns: list[str] | None = None) -> str:
    columns = columns or columns_of(rows)
    lines = [",".join(columns)] + [",".join(r.get(c, "") for c in columns) for r in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[dict[str, str]], columns: list[str] | None = None) -> Path:
    path.write_text(csv_text(rows, columns), encoding="utf-8")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(url: str, query: str, params=()) -> list[tuple]:
    with psycopg.connect(db.libpq_url(url)) as conn:
        return [tuple(r) for r in conn.execute(query, params).fetchall()]


def scalar(url: str, query: str, params=()):
    return fetch(url, query, params)[0][0]


def counts(url: str) -> dict[str, int]:
    return {t: scalar(url, f"SELECT count(*) FROM {t}") for t in (
        "new_resistance_events", "support_and_resistance_master", "rejected_events")}


def load_log_rows(url: str, path: Path) -> list[tuple]:
    """load_log rows of one file (clean_db does not truncate load_log; tmp paths are unique)."""
    return fetch(url, "SELECT instrument, granularity, rows_read, rows_loaded, rows_duplicate, "
                      "rows_rejected FROM load_log WHERE source = %s ORDER BY id",
                 (str(path.resolve()),))


def rejections(url: str) -> list[tuple[int, list[str]]]:
    return fetch(url, "SELECT line_number, reasons FROM rejected_events ORDER BY line_number")


def assert_loaded_once(url: str, n: int) -> None:
    """Exactly n events, each with exactly one level (status active, test_count 0)."""
    assert scalar(url, "SELECT count(*) FROM new_resistance_events") == n
    assert scalar(url, "SELECT count(DISTINCT original_event_id) FROM new_resistance_events") == n
    assert scalar(url, "SELECT count(*) FROM support_and_resistance_master") == n
    # levels are unique on the event key, so n joined rows = one level per event
    assert scalar(url, """
        SELECT count(*) FROM new_resistance_events e
        JOIN support_and_resistance_master l
          USING (instrument, granularity, event_creation_date, original_event_id)
        WHERE l.event_type = e.event_type AND l.status = 'active' AND l.test_count = 0
          AND l.last_test_date IS NULL AND l.breach_date IS NULL""") == n


def assert_loaded_once_and_derived(url: str, n: int) -> None:
    """Exactly n events, one level and one feature row each, and every level's outcome what
    levels.level_outcomes computes from its pair's events: what `sr-platform load` leaves."""

    from sr_platform.core.levels import level_outcomes

    assert scalar(url, "SELECT count(*) FROM new_resistance_events") == n
    assert scalar(url, "SELECT count(*) FROM support_and_resistance_master") == n
    assert scalar(url, "SELECT count(*) FROM event_features") == n
    events = pd.DataFrame(fetch(url, "SELECT instrument, granularity, original_event_id::text, "
                                     "event_creation_date, event_price_level::float8, "
                                     "atr_at_event::float8 FROM new_resistance_events "
                                     "ORDER BY event_creation_date, original_event_id"),
                          columns=["instrument", "granularity", "original_event_id", "ts",
                                   "price", "atr"])
    expected = sorted(
        (r.original_event_id, r.status, int(r.test_count))
        for _, g in events.groupby(["instrument", "granularity"])
        for r in level_outcomes(g.reset_index(drop=True)).itertuples())
    assert sorted(fetch(url, "SELECT original_event_id::text, status, test_count FROM "
                             "support_and_resistance_master")) == expected
    assert sorted(fetch(url, "SELECT original_event_id::text, level_status, level_test_count "
                             "FROM event_features")) == expected


def events_snapshot(url: str) -> list[tuple]:
    return fetch(url, """
        SELECT original_event_id::text, event_type, event_creation_date, granularity,
               instrument, event_price_level, atr_at_event, volume_at_event,
               new_resistance_negative_rebound, new_resistance_negative_rebound_in_atr,
               day_of_week, hour_of_day, tableoid::regclass::text
        FROM new_resistance_events ORDER BY instrument, granularity, event_creation_date,
                                            original_event_id""")


def levels_snapshot(url: str) -> list[tuple]:
    return fetch(url, """
        SELECT original_event_id::text, event_type, instrument, granularity, event_creation_date,
               status, test_count, last_test_date, breach_date
        FROM support_and_resistance_master ORDER BY original_event_id""")


def full_snapshot(url: str) -> tuple:
    """Everything a reload must not change (ids and timestamps of the rows included)."""
    return (
        fetch(url, "SELECT *, tableoid::regclass::text FROM new_resistance_events "
                   "ORDER BY original_event_id"),
        fetch(url, "SELECT * FROM support_and_resistance_master ORDER BY original_event_id"),
        fetch(url, "SELECT * FROM rejected_events ORDER BY id"),
    )


def truncate(url: str) -> None:
    with psycopg.connect(db.libpq_url(url), autocommit=True) as conn:
        conn.execute("TRUNCATE new_resistance_events, support_and_resistance_master, "
                     "event_features, rejected_events")


def leaves(url: str) -> set[str]:
    return {r[0] for r in fetch(url, "SELECT relname::text FROM pg_class WHERE relispartition")}


def cli() -> list[str]:
    script = Path(sys.executable).with_name("sr-platform")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sr_platform.cli"]


def run_cli(url: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cli() + list(args), env=dict(os.environ, SR_PLATFORM_DATABASE_URL=url),
                          capture_output=True, text=True, timeout=timeout)


def concat_csv(paths: list[Path], out: Path) -> int:
    """Concatenate CSV files with the same header into `out`; returns the data row count."""
    n = 0
    with out.open("w", encoding="utf-8") as fh:
        for i, p in enumerate(paths):
            lines = p.read_text(encoding="utf-8").splitlines(keepends=True)
            fh.writelines(lines if i == 0 else lines[1:])
            n += len(lines) - 1
    return n


def load_with_one_bad_row(url: str, tmp_path: Path, bad: dict[str, str]):
    """Lines 2 and 4 valid, line 3 `bad`; returns (result, path)."""
    path = write_csv(tmp_path / "events.csv", [row(10), bad, row(11)])
    return loader.load_file(path, url), path


def count_rows(url: str, table: str, where: str = "") -> int:
    """Rows of `table` (a trusted name from the test itself), optionally filtered."""
    with psycopg.connect(db.libpq_url(url)) as conn:
        return conn.execute(f"SELECT count(*) FROM {table} {where}").fetchone()[0]


@contextmanager
def loaded_database(server_url: str, out_dir: Path, prefix: str, seed: int,
                    end: datetime) -> Iterator[str]:
    """A migrated database of its own with three instruments over ~2 months (all
    granularities), loaded and refreshed (levels, features) by the ingest service; dropped
    after."""
    from sr_platform.core import migrate
    from sr_platform.core.generate import write_event_files
    from sr_platform.core.ingest import Ingest

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    db.ensure_database(server_url, name, owner=db.OWNER_ROLE)
    url = db.with_database(server_url, name)
    try:
        migrate.upgrade(url)
        files = write_event_files(out_dir, years=0.17, instruments=3, seed=seed, end=end,
                                  event_rate=0.3)
        Ingest(url, files).run()
        yield url
    finally:
        db.drop_database(server_url, name)
