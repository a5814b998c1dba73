"""Point-in-time recovery on the local cluster: a base backup plus archived WAL bring back rows
deleted after a chosen second, in a new cluster, with the live one untouched."""

import time
from datetime import UTC, datetime

import psycopg
import pytest

from sr_platform.cli import main
from sr_platform.core import db, pitr, settings

from .conftest import insert_event
from .helpers import count_rows

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(settings.external_database_url() is not None,
                       reason="PITR needs the local cluster"),
]


def test_recover_brings_back_rows_deleted_after_a_chosen_second(server_url, make_db, tmp_path):
    url = make_db(server_url)
    with db.connect(url, role=db.WRITER_ROLE) as conn:
        conn.execute("SELECT ensure_partition('PITR', 'H1')")
    with db.connect(url, role=db.WRITER_ROLE) as conn:
        for hour in range(3):
            insert_event(conn, instrument="PITR", hour_of_day=hour, day_of_week=2,
                         event_creation_date=datetime(2026, 3, 4, hour, tzinfo=UTC))
    base = pitr.take_base_backup(root=tmp_path / "backups")
    assert base.start_wal and (base.path / "base.tar.gz").exists()
    with db.connect(url, role=db.WRITER_ROLE) as conn:  # after the base backup: from the WAL
        for hour in range(3, 5):
            insert_event(conn, instrument="PITR", hour_of_day=hour, day_of_week=2,
                         event_creation_date=datetime(2026, 3, 4, hour, tzinfo=UTC))
    with psycopg.connect(db.libpq_url(url)) as conn:
        keep = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    time.sleep(1.1)
    with db.connect(url, role=db.WRITER_ROLE) as conn:
        assert conn.execute("DELETE FROM new_resistance_events").rowcount == 5
    assert count_rows(url, "new_resistance_events") == 0

    recovered_url, cluster = pitr.recover(keep, tmp_path / "recovered",
                                          root=tmp_path / "backups")
    try:
        dbname = url.split("/")[-1].split("?")[0]
        assert count_rows(db.with_database(recovered_url, dbname), "new_resistance_events") == 5
        assert cluster.port != db.local_cluster().port
        assert count_rows(url, "new_resistance_events") == 0  # the live cluster is untouched
        with pytest.raises(pitr.RecoveryError, match="not empty"):
            pitr.recover(keep, tmp_path / "recovered", root=tmp_path / "backups")
    finally:
        cluster.remove()


def test_recover_refuses_a_time_before_any_base_backup(tmp_path, server_url, capsys):
    rc = main(["recover", "--to", "2001-01-01T00:00:00Z", "--into", str(tmp_path / "r")])
    assert rc == 1
    assert "no base backup finished before 2001-01-01T00:00:00+00:00" in capsys.readouterr().err
