"""The writer connection a load runs on, reused across the files of one load, and what the
connected database's schema offers (a database at 0004 or 0005 still loads)."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from . import db


@dataclass
class SchemaFeatures:
    """What the connected database offers (a database at 0004 or 0005 still loads)."""

    registry: bool
    staging: bool
    level_ids: bool  # 0007: level rows get level_id() of their event's id
    origin: bool  # 0008: load_log.origin

    @classmethod
    def of(cls, conn: psycopg.Connection) -> "SchemaFeatures":
        return cls(*conn.execute(
            "SELECT to_regclass('public.event_id_registry') IS NOT NULL, "
            "to_regprocedure('public.stage_partitions(text[], text[])') IS NOT NULL, "
            "to_regprocedure('public.level_id(uuid)') IS NOT NULL, "
            "EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'public.load_log'::regclass "
            "AND attname = 'origin' AND NOT attisdropped)").fetchone())


class LoadConnection:
    """A load connection as sr_writer, reused across the files of one load_paths() call
    (a connection per file cost more than the load of a small file); reopened when lost."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: psycopg.Connection | None = None
        self._cm = None
        self.schema: SchemaFeatures | None = None

    def get(self) -> psycopg.Connection:
        if self.conn is not None and (self.conn.closed or self.conn.broken):
            self.close()
        if self.conn is None:
            self._cm = db.connect(self.url, role=db.WRITER_ROLE)
            self.conn = self._cm.__enter__()
            # load_seen's index (16 bytes an id plus overhead) in memory, not spilled to disk
            # (settable only before the session's first temp table; released when it ends)
            self.conn.execute("SET temp_buffers = '256MB'")
            self.schema = SchemaFeatures.of(self.conn)
            self.conn.commit()
        return self.conn

    def close(self) -> None:
        if self._cm is not None:
            cm, self._cm, self.conn = self._cm, None, None
            try:
                cm.__exit__(None, None, None)
            except psycopg.Error:
                pass


@contextmanager
def one_connection(url: str) -> Iterator[LoadConnection]:
    """A writer connection for the loads of several files (load_file's `connection`)."""
    c = LoadConnection(url)
    try:
        yield c
    finally:
        c.close()
