"""event_features: one self-contained row per event, rebuilt per (instrument, granularity)
from the event and its level. Upserts only rows whose values changed."""

import psycopg
from psycopg import sql

from .keys import Pair, leaf_name
from .levels import writer_session

FEATURE_VERSION = 1


def refresh_features(url: str, pair: Pair, conn: psycopg.Connection | None = None
                     ) -> dict[str, int]:
    events = sql.Identifier(leaf_name("new_resistance_events", pair))
    levels = sql.Identifier(leaf_name("support_and_resistance_master", pair))
    with writer_session(url, conn) as conn:
        written = conn.execute(sql.SQL("""
            INSERT INTO event_features AS f (
                original_event_id, instrument, granularity, event_creation_date, event_type,
                event_price_level, atr_at_event, atr_pct_of_price, volume_at_event,
                negative_rebound, negative_rebound_in_atr, day_of_week, hour_of_day,
                level_status, level_test_count, level_last_test_date, level_breach_date,
                hours_to_breach, feature_version)
            SELECT e.original_event_id, e.instrument, e.granularity, e.event_creation_date,
                   e.event_type, e.event_price_level, e.atr_at_event,
                   round(e.atr_at_event / e.event_price_level, 8), e.volume_at_event,
                   e.new_resistance_negative_rebound, e.new_resistance_negative_rebound_in_atr,
                   e.day_of_week, e.hour_of_day, l.status, coalesce(l.test_count, 0),
                   l.last_test_date, l.breach_date,
                   round(extract(epoch FROM l.breach_date - e.event_creation_date) / 3600, 2),
                   {version}
            FROM {events} e
            JOIN {levels} l USING (instrument, granularity, event_creation_date,
                                   original_event_id)
            ON CONFLICT (instrument, granularity, event_creation_date, original_event_id)
            DO UPDATE SET level_status = EXCLUDED.level_status,
                          level_test_count = EXCLUDED.level_test_count,
                          level_last_test_date = EXCLUDED.level_last_test_date,
                          level_breach_date = EXCLUDED.level_breach_date,
                          hours_to_breach = EXCLUDED.hours_to_breach,
                          feature_version = EXCLUDED.feature_version,
                          computed_at = now()
            WHERE (f.level_status, f.level_test_count, f.level_last_test_date,
                   f.level_breach_date, f.feature_version)
                  IS DISTINCT FROM (EXCLUDED.level_status, EXCLUDED.level_test_count,
                                    EXCLUDED.level_last_test_date, EXCLUDED.level_breach_date,
                                    EXCLUDED.feature_version)
            """).format(events=events, levels=levels,
                        version=sql.Literal(FEATURE_VERSION))).rowcount
        total = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(leaf_name("event_features", pair)))).fetchone()[0]
    return {"rows": total, "written": written}
