"""Query helpers bind DECIMAL columns as Decimal, so the price index is usable."""

from decimal import Decimal

import psycopg

from sr_platform.core import db, queries

from .conftest import insert_event


def test_price_queries_bind_decimal_and_use_the_index(clean_db):
    with psycopg.connect(db.libpq_url(clean_db), autocommit=True) as conn:
        conn.execute("SELECT ensure_partition('EUR_USD', 'H1')")
        for i, price in enumerate(("1.084210", "1.084500", "1.090000")):
            insert_event(conn, event_price_level=Decimal(price),
                         event_creation_date=f"2026-03-0{i + 2}T13:00:00Z")
        assert queries.as_decimal(1.0845) == Decimal("1.0845")
        by_float = queries.events_near_price(conn, "EUR_USD", "H1", 1.0843, 0.0003)
        by_decimal = queries.events_near_price(conn, "EUR_USD", "H1", Decimal("1.0843"),
                                               Decimal("0.0003"))
        assert [r[5] for r in by_float] == [Decimal("1.084210"), Decimal("1.084500")]
        assert by_float == by_decimal
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT * FROM new_resistance_events WHERE instrument = %s AND "
            "granularity = %s AND event_price_level BETWEEN %s AND %s",
            ("EUR_USD", "H1", Decimal("1.0840"), Decimal("1.0846"))))
        assert "event_price_level_idx" in plan
        latest = queries.latest_events(conn, "EUR_USD", "H1", limit=2)
        assert [r[5] for r in latest] == [Decimal("1.090000"), Decimal("1.084500")]
