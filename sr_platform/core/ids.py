"""The identifiers the platform derives: an event's id (UUIDv5 of its natural key, when a
file gives none) and a level's id (level_id() of sql/0007, from its event's id). Computed in
bulk with numpy/pyarrow; only the hash itself runs per row in Python."""

import hashlib
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .arrow_text import fixed_width_text

EVENT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_OID, "sr-platform.new_resistance_events")
# level_id() of sql/0007: a level's id is the MD5 of this namespace and its event's id
LEVEL_ID_NAMESPACE = uuid.UUID("c331958d-e54e-5ac6-a655-153dfb3b3bb6")
_HEX_PAIRS = np.array([ord(f"{i:02x}"[0]) | ord(f"{i:02x}"[1]) << 8 for i in range(256)],
                      dtype="<u2")
_SHA1_DIGEST = type(hashlib.sha1()).digest


def event_ids(names: pa.Array) -> pa.Array:
    """uuid.uuid5(EVENT_ID_NAMESPACE, name) of each name, as canonical text, without building
    UUID objects (only the SHA-1 runs per row in Python)."""
    prefixed = pc.binary_join_element_wise(pa.scalar(EVENT_ID_NAMESPACE.bytes, pa.binary()),
                                           names.cast(pa.binary()), b"")
    digests = b"".join(map(_SHA1_DIGEST, map(hashlib.sha1, prefixed.to_pylist())))
    h = np.frombuffer(digests, np.uint8).reshape(-1, 20)[:, :16].copy()
    h[:, 6] = (h[:, 6] & 0x0F) | 0x50
    h[:, 8] = (h[:, 8] & 0x3F) | 0x80
    hexed = _HEX_PAIRS[h].view(np.uint8).reshape(-1, 32)
    out = np.empty((len(h), 36), np.uint8)
    out[:] = ord("-")
    for a, b, w in ((0, 0, 8), (9, 8, 4), (14, 12, 4), (19, 16, 4), (24, 20, 12)):
        out[:, a:a + w] = hexed[:, b:b + w]
    return fixed_width_text(out)


def event_id_key(instrument: str, granularity: str, ts_utc_iso: str, price_6dp: str) -> str:
    """The natural key an event's derived id hashes."""
    return f"{instrument}|{granularity}|{ts_utc_iso}|{price_6dp}"


def derive_event_id(instrument: str, granularity: str, ts_utc_iso: str, price_6dp: str) -> str:
    """UUIDv5 of the event's natural key; equal to uuid.uuid5(EVENT_ID_NAMESPACE, name)."""
    key = event_id_key(instrument, granularity, ts_utc_iso, price_6dp)
    return event_ids(pa.array([key], pa.string()))[0].as_py()


def level_ids(event_ids: pd.Series) -> list[str]:
    """level_id() (sql/0007) of each canonical event id, as 32 hex digits (uuid input)."""
    ns, md5 = LEVEL_ID_NAMESPACE.bytes, hashlib.md5
    raw = bytes.fromhex(event_ids.str.replace("-", "", regex=False).str.cat())
    return [md5(ns + raw[i:i + 16]).hexdigest() for i in range(0, len(raw), 16)]
