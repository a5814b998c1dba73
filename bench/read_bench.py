"""Two read benchmarks.

1. Reading and validating one big event CSV: main's event_files + validate (loaded from git)
against this checkout's, side by side in one process, interleaved chunk by chunk so machine
noise hits both alike.

    python bench/read_bench.py [--file /tmp/big1m.csv] [--rows 1000000] [--rev main]

Without --file, a file of --rows rows is generated (the generator's 28 instruments, as
bench/big_csv.py makes them). Prints rows/s and ms per 50k-row chunk (p50/p95/p99) for
`scan` and for `chunks()` + `validate()`, old and new, and new/old ratios.

2. --api: the read API (sr_platform.read_events, issue 15) beside the other PostgreSQL clients
on the same queries, in one process against one server and one throwaway database filled by
bench/query_data.py (--rows-per-year events over 28 instruments x 4 granularities):

    python bench/read_bench.py --api [--rows-per-year 1000000] [--repeat 30] [--rounds 3]

Clients: pandas.read_sql over SQLAlchemy (psycopg), ADBC (adbc-driver-postgresql),
connectorx and polars.read_database_uri, each where installed (a missing one is named).
Prints p50/p95/p99 ms per query and client and each client's p95 over read_events'.
"""

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _baseline  # noqa: E402

from sr_platform.core import event_files as new_ef  # noqa: E402
from sr_platform.core import reading as new_reading  # noqa: E402
from sr_platform.core import validate as new_va  # noqa: E402

CHUNK = 50_000  # the loader's CHUNK_ROWS


def make_file(rows: int) -> Path:
    from sr_platform.core.generate import write_event_files
    where = Path(tempfile.mkdtemp(prefix="read-bench-"))
    write_event_files(where / "gen", years=1, instruments=28, seed=0)
    out = where / f"big{rows}.csv"
    import subprocess
    subprocess.run([sys.executable, str(Path(__file__).with_name("big_csv.py")), "--src",
                    str(where / "gen"), "--rows", str(rows), "--out", str(out)], check=True)
    return out


def timed_scan(ef, path: Path) -> tuple[float, int]:
    t = time.perf_counter()
    _, s = ef.scan(path)
    return time.perf_counter() - t, len(s.pairs)


def chunk_times(ef, va, path: Path) -> tuple[list[float], int]:
    f, _ = ef.scan(path)
    times, rows = [], 0
    it = f.chunks(CHUNK)
    while True:
        t = time.perf_counter()
        raw = next(it, None)
        if raw is None:
            break
        checked = va.validate(raw)
        times.append(time.perf_counter() - t)
        rows += len(checked.good) + len(checked.rejected)
    return times, rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", type=Path)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rev", default="main")
    ap.add_argument("--repeat", type=int, default=None,
                    help="runs of each, medians reported (default 1; --api: 30 calls a round)")
    ap.add_argument("--api", action="store_true", help="the read API against other clients")
    ap.add_argument("--rows-per-year", type=int, default=1_000_000, help="--api: data size")
    ap.add_argument("--rounds", type=int, default=3, help="--api: rounds of --repeat calls")
    args = ap.parse_args()
    if args.api:
        api_main(args.rows_per_year, args.repeat or 30, args.rounds)
        return
    args.repeat = args.repeat or 1
    path = args.file or make_file(args.rows)
    old_ef, old_va = _baseline.load(args.rev)
    scans = {"old": [], "new": []}
    chunks = {"old": [], "new": []}
    rows = {}
    for _ in range(args.repeat):
        for name, ef, va in (("old", old_ef, old_va), ("new", new_ef, new_va)):
            seconds, _ = timed_scan(ef, path)
            scans[name].append(seconds)
            times, rows[name] = chunk_times(ef, va, path)
            chunks[name].append(times)
    assert rows["old"] == rows["new"], rows
    n = rows["new"]
    print(f"{path} ({path.stat().st_size / 1e6:.0f} MB, {n:,} rows), chunks of {CHUNK:,}, "
          f"{args.repeat} run(s) each, old = {args.rev}")
    head = f"{'step':<22}{'':>6}{'rows/s':>12}{'total s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
    print(head)
    print("-" * len(head))
    out = {}
    for name in ("old", "new"):
        s = float(np.median(scans[name]))
        out[("scan", name)] = n / s
        print(f"{'scan':<22}{name:>6}{n / s:>12,.0f}{s:>9.2f}{'':>9}{'':>9}{'':>9}")
    for name in ("old", "new"):
        per = np.array(chunks[name]).ravel() * 1000
        total = float(np.median([sum(t) for t in chunks[name]]))
        out[("read+validate", name)] = n / total
        p50, p95, p99 = np.percentile(per, [50, 95, 99])
        print(f"{'read+validate':<22}{name:>6}{n / total:>12,.0f}{total:>9.2f}{p50:>9.0f}"
              f"{p95:>9.0f}{p99:>9.0f}")
    for name in ("old", "new"):
        both = float(np.median(scans[name])) + float(np.median(
            [sum(t) for t in chunks[name]]))
        out[("scan+read+validate", name)] = n / both
        print(f"{'scan+read+validate':<22}{name:>6}{n / both:>12,.0f}{both:>9.2f}")
    print()
    for step in ("scan", "read+validate", "scan+read+validate"):
        print(f"{step:<22} new/old {out[(step, 'new')] / out[(step, 'old')]:.1f}x")


# ------------------------------------------------------------------ 2. the read API (--api)

API_COLUMNS = ", ".join(c.name for c in new_reading.EVENT_COLS)
API_ORDER = " ORDER BY event_creation_date, instrument, granularity, original_event_id"


def _password(url: str) -> str | None:
    """The password libpq would take from the URL's passfile (connectorx and polars cannot
    read a passfile); used in this process only, never printed."""
    from psycopg.conninfo import conninfo_to_dict

    from sr_platform.core import db
    p = conninfo_to_dict(db.libpq_url(url))
    if "password" in p or "passfile" not in p:
        return p.get("password")
    want = (p.get("host", "localhost"), str(p.get("port", "5432")), p.get("dbname", ""),
            p.get("user", ""))
    for line in Path(p["passfile"]).read_text().splitlines():
        fields = line.split(":", 4)
        if len(fields) == 5 and all(f in ("*", w) for f, w in zip(fields, want, strict=False)):
            return fields[4]
    return None


def _plain_url(url: str) -> str:
    """postgresql://user:password@host:port/db for the clients that take only that."""
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict

    from sr_platform.core import db
    p = conninfo_to_dict(db.libpq_url(url))
    pw = _password(url)
    auth = p.get("user", "") + (f":{quote(pw, safe='')}" if pw else "")
    return f"postgresql://{auth}@{p.get('host', 'localhost')}:{p.get('port', 5432)}/{p['dbname']}"


def _sql_of(where: str, latest: int | None = None) -> str:
    if latest is None:
        return f"SELECT {API_COLUMNS} FROM new_resistance_events WHERE {where}{API_ORDER}"
    return (f"SELECT * FROM (SELECT {API_COLUMNS} FROM new_resistance_events WHERE {where} "
            f"ORDER BY event_creation_date DESC LIMIT {latest}) x{API_ORDER}")


def _clients(url: str) -> tuple[dict, list[str]]:
    """name -> fn(sql) returning a frame, for each installed client; and the missing ones."""
    import pandas as pd

    from sr_platform.core import db
    clients, missing = {}, []
    engine = db.engine(url)
    sa = engine.connect()
    clients["pandas.read_sql (SQLAlchemy)"] = lambda q: pd.read_sql(q, sa)
    try:
        import adbc_driver_postgresql.dbapi as adbc
        aconn = adbc.connect(_plain_url(url))

        def adbc_frame(q: str):
            with aconn.cursor() as cur:
                cur.execute(q)
                return cur.fetch_arrow_table().to_pandas()
        clients["ADBC"] = adbc_frame
    except ImportError:
        missing.append("ADBC (pip install adbc-driver-postgresql)")
    plain = _plain_url(url)
    try:
        import connectorx as cx
        clients["connectorx"] = lambda q: cx.read_sql(plain, q, return_type="pandas")
    except ImportError:
        missing.append("connectorx (pip install connectorx)")
    try:
        import connectorx  # noqa: F401  polars.read_database_uri's default engine
        import polars as pl
        clients["polars.read_database_uri"] = lambda q: pl.read_database_uri(q, plain)
    except ImportError:  # polars is in the test extra, connectorx only in the bench one
        missing.append("polars with connectorx (pip install polars connectorx)")
    return clients, missing


def api_queries(url: str) -> list[tuple[str, dict, str, str | None]]:
    """(name, read_events kwargs, SQL for the other clients) at the newest year of the data."""
    import psycopg

    from sr_platform.core import db
    with psycopg.connect(db.libpq_url(url)) as c:
        hi = c.execute("SELECT max(event_creation_date) FROM new_resistance_events_h1_eur_usd"
                       ).fetchone()[0]
        mid = c.execute("SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY event_price_level) "
                        "FROM new_resistance_events_h1_eur_usd").fetchone()[0]
    month_end = datetime(hi.year, hi.month, 1, tzinfo=UTC)
    month = (month_end - timedelta(days=1)).replace(day=1)
    year = month_end - timedelta(days=365)
    lo_s, m_s, me_s = (t.isoformat() for t in (year, month, month_end))
    w = Decimal("0.0002")
    return [
        ("latest 1,000 of a pair", {"instrument": "EUR_USD", "granularity": "H1",
                                    "latest": 1000},
         _sql_of("instrument = 'EUR_USD' AND granularity = 'H1'", 1000)),
        ("one instrument, one month", {"instrument": "EUR_USD", "start": month,
                                       "end": month_end},
         _sql_of(f"instrument = 'EUR_USD' AND event_creation_date >= '{m_s}' AND "
                 f"event_creation_date < '{me_s}'")),
        ("one instrument, a year", {"instrument": "EUR_USD", "start": year, "end": month_end},
         _sql_of(f"instrument = 'EUR_USD' AND event_creation_date >= '{lo_s}' AND "
                 f"event_creation_date < '{me_s}'")),
        (f"price band +-{w} of a pair", {"instrument": "EUR_USD", "granularity": "H1",
                                         "price": mid, "width": w},
         _sql_of(f"instrument = 'EUR_USD' AND granularity = 'H1' AND event_price_level "
                 f"BETWEEN {mid - w} AND {mid + w}")),
        ("every pair, a year", {"start": year, "end": month_end},
         _sql_of(f"event_creation_date >= '{lo_s}' AND event_creation_date < '{me_s}'")),
    ]


def api_main(rows_per_year: int, repeat: int, rounds: int) -> None:
    import query_data
    from common import latency, new_database

    from sr_platform import read_events
    from sr_platform.core import db
    server, name, url = new_database("srbench_read")
    try:
        query_data.fill(url, years=1, rows_per_year=rows_per_year)
        reader = db.role_url(url, db.READER_ROLE)
        clients, missing = _clients(reader)
        if missing:
            print("not installed, not compared: " + "; ".join(missing))
        with db.connect(reader, autocommit=True) as conn:
            head = (f"{'query':<30}{'rows':>9}  {'client':<28}{'p50':>8}{'p95':>8}{'p99':>8}"
                    f"{'x api':>7}")
            print(head + "\n" + "-" * len(head))
            for qname, kwargs, query in api_queries(url):
                rows = len(read_events(**kwargs, url=conn))
                big = rows > 200_000
                n = max(3, repeat // 10) if big else repeat
                r = 1 if big else rounds
                base = latency(lambda kw=kwargs: read_events(**kw, url=conn), n, r)
                _line(qname, rows, "read_events", base, None)
                for cname, fn in clients.items():
                    got = len(fn(query))
                    assert got == rows, (qname, cname, got, rows)
                    _line(qname, rows, cname, latency(lambda f=fn, q=query: f(q), n, r), base)
    finally:
        db.drop_database(server, name)


def _line(query: str, rows: int, client: str, lat: dict, base: dict | None) -> None:
    ratio = f"{lat['p95'] / base['p95']:>6.1f}x" if base else f"{'':>7}"
    print(f"{query:<30}{rows:>9,}  {client:<28}{lat['p50']:>8.1f}{lat['p95']:>8.1f}"
          f"{lat['p99']:>8.1f}{ratio}", flush=True)


if __name__ == "__main__":
    main()
