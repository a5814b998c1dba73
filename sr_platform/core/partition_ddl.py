"""The partitions a load writes into: existing leaves and their row estimates, missing ones
made (ensure_partition, in its own commit, for a database before 0006), new ones staged as
standalone tables and attached at the end of the load (sql/0006), and the ANALYZE policy for
existing leaves a load grows."""

from collections.abc import Iterable

import psycopg

from . import db
from .keys import EVENTS, PARTITIONED_TABLES, Pair, leaf_name

ANALYZE_MIN_ROWS = 1_000


def leaf_estimates(conn: psycopg.Connection, pairs: Iterable[Pair],
                   table: str = EVENTS) -> dict[Pair, float]:
    """The planner's row estimate of each existing leaf of `table` for `pairs` (a catalog
    lookup; list_partitions() would also size every leaf)."""
    names = {leaf_name(table, p): p for p in pairs}
    found = conn.execute("SELECT relname::text, reltuples FROM pg_class WHERE relname = ANY(%s) "
                         "AND relnamespace = 'public'::regnamespace AND relispartition",
                         (list(names),))
    return {names[name]: tuples for name, tuples in found}


def ensure_partitions(url: str, pairs: Iterable[Pair]) -> int:
    """Create missing partitions (each ensure_partition call commits on its own)."""
    created = 0
    with db.connect(url, role=db.WRITER_ROLE, autocommit=True) as conn:
        pairs = set(pairs)
        missing = pairs - leaf_estimates(conn, pairs).keys()
        for instrument, granularity in sorted(missing):
            created += conn.execute("SELECT ensure_partition(%s, %s)",
                                    (instrument, granularity)).fetchone()[0]
    return created


def stage_partitions(conn: psycopg.Connection, pairs: list[Pair]) -> set[Pair]:
    """Stage the leaves of the pairs that have none (stage_partitions(), sql/0006) and return
    those pairs. Called under the pairs' load locks: no other load or ensure_partition() can
    make these leaves until this transaction ends. A pair with some leaves only (made outside
    these functions) gets the missing ones from ensure_partition()."""
    made = conn.execute("SELECT stage_partitions(%s, %s)",
                        ([p[0] for p in pairs], [p[1] for p in pairs])).fetchone()[0]
    staged = {tuple(x.split("/")) for x in made}
    for p in pairs:
        if p not in staged and not all(leaf_estimates(conn, [p], t)
                                       for t in PARTITIONED_TABLES):
            conn.execute("SELECT ensure_partition(%s, %s)", p)
    return staged


def attach_staged_partitions(conn: psycopg.Connection, pairs: list[Pair]) -> None:
    """Index, constrain, register and attach the staged leaves (attach_staged_partitions(),
    sql/0006). Raises UniqueViolation when an id of theirs is repeated or stored already."""
    conn.execute("SELECT attach_staged_partitions(%s, %s)",
                 ([p[0] for p in pairs], [p[1] for p in pairs]))


def analyze_leaves(conn: psycopg.Connection, pairs: list[Pair]) -> None:
    for p in pairs:
        conn.execute("SELECT analyze_partition(%s, %s)", p)


def stale_leaves(tuples: dict[Pair, float], adding: dict[Pair, int]) -> list[Pair]:
    """Existing pairs whose events leaf the planner believes (nearly) empty and that this
    load has added more than ANALYZE_MIN_ROWS rows to (`tuples`: the estimates, kept up to
    date by the caller).

    Measured here: 100k level rows took 525 s when the events leaf they reference had only
    the statistics of an empty table (the FK check, planned once per session, scanned the
    leaf for every row) and 1.4 s after ANALYZE. A leaf believed to hold ANALYZE_MIN_ROWS rows
    or more already gets the index probe (the key is unique), however much it grows, so only
    near-empty leaves are analyzed (before 0006 every 20% of growth was: 5.4 s of a 200k-row
    steady load). Staged leaves need none: their foreign key is validated by one query, and
    building their indexes sets their row estimate."""
    return [p for p, n in adding.items() if p in tuples
            and tuples[p] < ANALYZE_MIN_ROWS < n]

