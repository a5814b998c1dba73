"""What the load of one file did (LoadResult): counts, reasons, timings and the ids of its
load_log row and transaction, for every face of a load."""

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .keys import Pair


@dataclass
class LoadResult:
    path: Path
    rows_read: int = 0
    loaded: int = 0
    duplicates: int = 0
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    error: str | None = None  # set when the file was not loaded at all (nothing of it stored)
    database_failed: bool = False  # ... because the database failed, not the file
    pairs: dict[Pair, int] = field(default_factory=dict)  # rows loaded per pair
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    ids: set[str] = field(default_factory=set)  # the slice's good ids (pair loads only)
    ignored_columns: list[str] = field(default_factory=list)  # in the file, not in the contract
    new_pairs: list[Pair] = field(default_factory=list)  # partitions this load created
    held: list[Pair] = field(default_factory=list)  # the well-formed pairs the file holds
    log_id: int | None = None  # its load_log row
    xid: str | None = None  # its transaction (the xmin of every row it wrote)
    # per rule broken: its first human reason and its first lines (for the load summary)
    rule_reasons: dict[str, str] = field(default_factory=dict)
    rule_lines: dict[str, list[int]] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds else 0.0
