"""The quarantine (table rejected_events) read back: which file, which line, which rule, why.

A stored row keeps its human reasons (validate's messages, quoting the bad value), not the
short rule names the load summary counts. The rule of a reason is recovered from the message's
shape: RULE_PATTERNS has one anchored regular expression per rule (the same text works in
Python and in PostgreSQL's `~`), so `--rule` filters in the database.
"""

import re
from dataclasses import dataclass
from datetime import datetime

from psycopg import sql

from . import db
from .validate import DUPLICATE_IN_FILE, NUMERIC

_REQUIRED_NUMBERS = [name for name, (required, _) in NUMERIC.items() if required]


def _rule_patterns() -> dict[str, str]:
    """{rule name as the load summary prints it: regex of its reasons}."""
    p: dict[str, str] = {"csv field count": r"^csv: "}
    for name in ("instrument", "granularity", "event_creation_date", *_REQUIRED_NUMBERS):
        p[f"{name} required"] = rf"^{name}: required$"
    p["instrument format"] = r"^instrument: .* does not match "
    p["granularity in W/D/H4/H1"] = r"^granularity: .* is not one of W, D, H4, H1$"
    p["event_type format"] = r"^event_type: .* does not match "
    p["event_creation_date parses"] = \
        r"^event_creation_date: .* is not a valid ISO 8601 timestamp$"
    p["event_creation_date has an offset"] = r"^event_creation_date: .* has no UTC offset"
    p["event_creation_date exists in --assume-tz"] = \
        r"^event_creation_date: .* does not exist or is ambiguous in "
    for name in NUMERIC:
        p[f"{name} finite number"] = rf"^{name}: .* is not a finite number$"
        p[f"{name} fits DECIMAL"] = rf"^{name}: .* is out of range for its DECIMAL$"
    for name in ("event_price_level", "atr_at_event"):
        p[f"{name} > 0"] = rf"^{name}: .* must be > 0$"
    p["new_resistance_negative_rebound <= 0"] = \
        r"^new_resistance_negative_rebound: .* must be <= 0$"
    for name, lo, hi in (("day_of_week", 0, 6), ("hour_of_day", 0, 23)):
        p[f"{name} integer"] = rf"^{name}: .* is not an integer$"
        p[f"{name} in {lo}..{hi}"] = rf"^{name}: .* is not in {lo}\.\.{hi}$"
        p[f"{name} matches timestamp"] = rf"^{name}: .* does not match event_creation_date "
    p["original_event_id is a UUID"] = r"^original_event_id: .* is not a UUID$"
    p[DUPLICATE_IN_FILE] = r"^original_event_id: duplicate of line "
    p["original_event_id unique"] = r"^original_event_id: already used by "  # loader.ID_USED
    return p


RULE_PATTERNS = _rule_patterns()
_COMPILED = [(rule, re.compile(pattern)) for rule, pattern in RULE_PATTERNS.items()]


def rule_of(reason: str) -> str:
    """The rule a stored reason breaks ('other' for a message of no known shape)."""
    for rule, pattern in _COMPILED:
        if pattern.search(reason):
            return rule
    return "other"


@dataclass(frozen=True)
class RejectedRow:
    file: str
    line: int
    rule: str
    reason: str
    raw: dict
    rejected_at: datetime


def rejected_rows(url: str | None = None, file: str | None = None, rule: str | None = None,
                  since: datetime | None = None, limit: int | None = 100) -> list[RejectedRow]:
    """Quarantined rows, newest load first then by line: one RejectedRow per reason (a row
    that broke two rules gives two, with the same line and raw row). `file` matches the
    stored source exactly or by its last path component; `rule` is a key of RULE_PATTERNS;
    `limit` counts quarantined rows (lines), not reasons. Read as the reader role."""
    if rule is not None and rule not in RULE_PATTERNS:
        raise ValueError(f"unknown rule {rule!r}; one of: {', '.join(RULE_PATTERNS)}")
    where = [sql.SQL("TRUE")]
    params: list = []
    if file is not None:
        where.append(sql.SQL("(source = %s OR source LIKE %s)"))
        params += [file, "%/" + file.replace("\\", "\\\\").replace("%", "\\%")
                   .replace("_", "\\_")]
    if rule is not None:
        where.append(sql.SQL("EXISTS (SELECT 1 FROM unnest(reasons) r WHERE r ~ %s)"))
        params.append(RULE_PATTERNS[rule])
    if since is not None:
        where.append(sql.SQL("rejected_at >= %s"))
        params.append(since)
    stmt = sql.SQL("SELECT source, line_number, reasons, raw_record, rejected_at "
                   "FROM rejected_events WHERE {} ORDER BY rejected_at DESC, source, "
                   "line_number").format(sql.SQL(" AND ").join(where))
    if limit is not None:
        stmt += sql.SQL(" LIMIT %s")
        params.append(limit)
    with db.connect(url or db.database_url(role=db.READER_ROLE), role=db.READER_ROLE,
                    autocommit=True) as conn:
        rows = conn.execute(stmt, params).fetchall()
    out: list[RejectedRow] = []
    for source, line, reasons, raw, at in rows:
        for reason in reasons:
            r = rule_of(reason)
            if rule is None or r == rule:
                out.append(RejectedRow(source, line, r, reason, raw, at))
    return out
