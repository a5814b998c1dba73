"""COPY of validated frames: their rows as CSV text (Arrow's C++ writer), sent in buffers of
COPY_CHUNK rows."""

import io
from collections.abc import Callable

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

COPY_CHUNK = 50_000  # rows per COPY buffer (its CSV text is built whole, ~150 bytes a row)
_CSV = pacsv.WriteOptions(include_header=False, quoting_style="none")


def copy_csv(frame: pd.DataFrame, columns: tuple[str, ...]) -> bytes:
    """COPY ... (FORMAT csv) text, written by Arrow's C++ writer. Values are validated text
    without commas, quotes or newlines (quoting_style none refuses any that would need
    quoting rather than write them wrong); an empty unquoted field (a null, NaN or NaT) is
    NULL: of the events only the nullable volume can be."""
    table = pa.Table.from_pandas(frame[list(columns)], preserve_index=False)
    out = io.BytesIO()
    pacsv.write_csv(table, out, _CSV)
    return out.getvalue()


def copy_frame(conn: psycopg.Connection, table: str, frame: pd.DataFrame,
               columns: tuple[str, ...], progress: Callable[[int], None] | None = None,
               freeze: bool = False) -> None:
    """COPY `frame` into `table`; `freeze` for a table this transaction created (a staged
    leaf): its rows are written frozen, so no later vacuum has to visit them to freeze or
    set hint bits."""
    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv{})").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", FREEZE" if freeze else ""))) as cp:
        for start in range(0, len(frame), COPY_CHUNK):
            chunk = frame.iloc[start:start + COPY_CHUNK]
            cp.write(copy_csv(chunk, columns))
            if progress:
                progress(len(chunk))
