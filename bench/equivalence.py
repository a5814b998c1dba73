"""Equivalence check (not a test, not a benchmark): main's reader + validator against this
checkout's on the same files, diffing every chunk's raw frame, the good rows' text and the
rejected rows exactly.

    python bench/equivalence.py [--big /tmp/big1m.csv] [--out /tmp/equiv]
"""

import argparse
import csv
import gzip
import io
import random
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _baseline  # noqa: E402

from sr_platform.core import event_files as new_ef  # noqa: E402
from sr_platform.core import validate as new_va  # noqa: E402

COLUMNS = ["original_event_id", "event_type", "event_creation_date", "granularity", "instrument",
           "event_price_level", "atr_at_event", "volume_at_event",
           "new_resistance_negative_rebound", "new_resistance_negative_rebound_in_atr",
           "day_of_week", "hour_of_day"]

BAD = {
    "original_event_id": ["", "", "not-a-uuid", "{id_upper}", "{id_nodash}", " {id} ", "{dup}",
                          "12345678-1234-1234-1234-1234567890ab", "{id}x", "g" * 32],
    "event_type": ["", "", "bad type", "x" * 21, "  new_resistance ", "ÄÖ", "other_type"],
    "event_creation_date": [
        "", "2025-02-30T00:00:00Z", "2025-13-01T00:00:00Z", "not a date", "2025-03-30T02:30:00",
        "2025-10-26T02:30:00", "2025-06-01T12:00:00", "2025-06-01 12:00:00+02:00",
        "2025-06-01T12:00:00.1234567Z", "2025-06-01T12:00:00.5z", "2025-06-01T23:59:59-05:00",
        "2025-06-01T12:00:00+0530", "2025-06-01", "2025-06-01T24:00:00Z", "2025-06-01T12:00:60Z",
        "1969-12-31T23:59:59.999999Z", "2262-04-12T00:00:00Z", "2025-06-01T12:00:00+14:00",
        "2025-06-01T12:00:00+23:59", " 2025-06-01T12:00:00Z ", "2024-02-29T00:00:00Z",
        "2023-02-29T00:00:00Z", "2025-06-01T12:00Z", "2025-06-01T12:00:00.000001+00:00"],
    "granularity": ["", "M5", "h1", " D ", "W", "D", "H4"],
    "instrument": ["", "eur_usd", "EUR/USD", "A" * 11, " EUR_USD ", "_EUR", "X1", "ÆØ"],
    "event_price_level": ["", "0", "-1", "abc", "nan", "inf", "-inf", "1e5", "1.0000005",
                          "0.0000004", "0.0000005", "999999999999.9999994", "1e12", "1000000000",
                          "1.1234567", " 1.5 ", "1,5", "+1.5", ".5", "5.", "0x10", "1_000",
                          "123456789012.123456", "NaN", "Infinity"],
    "atr_at_event": ["", "0", "-0.0001", "0.0000001", "x", "1e-7", "2.5"],
    "volume_at_event": ["", "", "-5", "1e20", "9999999999999999.995", "abc", "12.345", "inf"],
    "new_resistance_negative_rebound": ["", "0.1", "0", "-0", "0.0000004", "0.0000005", "nan",
                                        "-1e3", "-0.0000001"],
    "new_resistance_negative_rebound_in_atr": ["", "x", "-1.5", "1e400", "-1e13"],
    "day_of_week": ["", "7", "-1", "x", "3.0", "3.5", " 2 ", "02", "6"],
    "hour_of_day": ["", "24", "-1", "x", "12.0", "12.5", "07", "23"],
}


def good_row(rng: random.Random, i: int) -> dict:
    ts = pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(minutes=rng.randrange(2_000_000))
    offset = rng.choice(["Z", "Z", "+00:00", "+02:00", "-05:00", "+05:30"])
    local = ts.tz_convert(None) + (pd.Timedelta(0) if offset in ("Z", "+00:00") else
                                   pd.Timedelta(hours=int(offset[:3]), minutes=int(
                                       offset[0] + offset[4:])))
    frac = rng.choice(["", "", ".5", ".123456", ".000001"])
    price = rng.uniform(0.5, 2000)
    row = {
        "original_event_id": rng.choice(["", "", str(uuid.UUID(int=rng.getrandbits(128)))]),
        "event_type": rng.choice(["", "new_resistance", "breakout"]),
        "event_creation_date": local.strftime("%Y-%m-%dT%H:%M:%S") + frac + offset,
        "granularity": rng.choice(["W", "D", "H4", "H1"]),
        "instrument": rng.choice(["EUR_USD", "GBP_USD", "XAU_USD", "SPX500", "A"]),
        "event_price_level": f"{price:.{rng.choice([0, 2, 5, 6])}f}",
        "atr_at_event": f"{rng.uniform(0.0001, 5):.6f}",
        "volume_at_event": rng.choice(["", f"{rng.uniform(0, 1e6):.2f}"]),
        "new_resistance_negative_rebound": f"{-rng.uniform(0, 1):.6f}",
        "new_resistance_negative_rebound_in_atr": f"{-rng.uniform(0, 3):.6f}",
        "day_of_week": "", "hour_of_day": "",
    }
    if rng.random() < 0.3:
        row["day_of_week"], row["hour_of_day"] = str(ts.day_of_week), str(ts.hour)
    return row


def bad_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows, ids = [], []
    for i in range(n):
        row = good_row(rng, i)
        if row["original_event_id"]:
            ids.append(row["original_event_id"])
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            col = rng.choice(COLUMNS)
            v = rng.choice(BAD[col])
            some = row["original_event_id"] or str(uuid.UUID(int=rng.getrandbits(128)))
            v = v.format(id=some, id_upper=some.upper(), id_nodash=some.replace("-", ""),
                         dup=rng.choice(ids) if ids else "")
            row[col] = v
        if rng.random() < 0.05:  # an exact duplicate of an earlier row
            row = dict(rng.choice(rows)) if rows else row
        rows.append(row)
    return rows


def write(path: Path, rows: list[dict], columns=COLUMNS, newline="\n", bom=False,
          quote_all=False, extra_lines=None, rng=None) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator=newline,
                   quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
    w.writerow(columns)
    for r in rows:
        w.writerow([r.get(c, "") for c in columns])
    text = buf.getvalue()
    if extra_lines:
        lines = text.split(newline)
        for k, line in extra_lines:
            lines.insert(min(k, len(lines) - 1), line)
        text = newline.join(lines)
    data = (("\ufeff" if bom else "") + text).encode("utf-8")
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def cases(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    rows = bad_rows(3000, 1)
    ragged = [(k, ",".join(["x"] * rng.choice([1, 3, 11, 13]))) for k in range(5, 3000, 97)]
    blank = [(k, rng.choice(["", "   ", ","])) for k in range(11, 3000, 131)]
    files = [
        write(out / "bad.csv", rows),
        write(out / "bad_ragged.csv", rows, extra_lines=ragged + blank),
        write(out / "bad_crlf.csv", rows, newline="\r\n", extra_lines=ragged),
        write(out / "bad_bom.csv", rows, bom=True),
        write(out / "bad_quoted.csv", rows, quote_all=True),
        write(out / "bad.csv.gz", rows, extra_lines=ragged),
        write(out / "some_columns.csv", rows, columns=[c for c in COLUMNS if c not in (
            "original_event_id", "event_type", "volume_at_event", "day_of_week")]),
        write(out / "reordered_extra.csv", [dict(r, note="n") for r in rows],
              columns=["note", *reversed(COLUMNS), "created_at"]),
    ]
    good = bad_rows(2000, 2)
    good = [dict(r) for r in good]
    # quoted newlines and commas in the middle of the file (from line ~1000 on)
    quoted = [dict(r) for r in good]
    for k in range(1000, 2000, 37):
        quoted[k]["instrument"] = rng.choice(["EUR\nUSD", "EUR,USD", 'EU"R'])
    files.append(write(out / "quoted_late.csv", quoted))
    files.append(write(out / "clean.csv", [dict(r, original_event_id="") for r in good]))
    data = (out / "clean.csv").read_bytes()
    (out / "latin1.csv").write_bytes(data[:20000] + b"\xe9\xff" + data[20000:])
    (out / "lone_cr.csv").write_bytes(data[:20000] + b"\r" + data[20000:])
    (out / "nul.csv").write_bytes(data[:80000] + b"\x00" + data[80000:])
    (out / "bom_line.csv").write_bytes(data[:200] + data[200:].replace(b"\n", b"\n\xef\xbb\xbf",
                                                                         1))
    files += [out / "latin1.csv", out / "lone_cr.csv", out / "nul.csv", out / "bom_line.csv"]
    pd.DataFrame(rows).to_parquet(out / "bad_text.parquet", index=False)
    files.append(out / "bad_text.parquet")
    from sr_platform.core.generate import write_event_files
    files += write_event_files(out / "pq", years=0.05, instruments=2, fmt="parquet")
    return files


def outcome(ef, va, path: Path, rows: int, assume_tz):
    try:
        f, s = ef.scan(path)
    except Exception as exc:  # noqa: BLE001
        return [("scan error", type(exc).__name__, str(exc))]
    out = [("scan", s.sha256, sorted(s.pairs), s.ignored_columns)]
    try:
        for raw in f.chunks(rows):
            frame = raw.frame
            out.append(("chunk", list(frame.columns), [str(d) for d in frame.dtypes],
                        frame.astype(object).where(frame.notna(), None).values.tolist(),
                        raw.malformed, raw.ignored_columns))
            v = va.validate(raw, assume_tz=assume_tz)
            g = v.good
            cols = [*va.COPY_COLUMNS, "_line"]
            out.append(("good", list(g.columns), [str(g[c].dtype) for c in cols],
                        g[cols].astype(object).values.tolist(),
                        [None if pd.isna(t) else t.isoformat() for t in g["ts"]]
                        if "ts" in g else None))
            out.append(("rejected", [(r.line, r.raw, r.reasons, r.rules) for r in v.rejected]))
    except Exception as exc:  # noqa: BLE001
        out.append(("read error", type(exc).__name__, str(exc)))
    return out


def compare(old, new, path, rows, tz) -> bool:
    a, b = outcome(*old, path, rows, tz), outcome(*new, path, rows, tz)
    if a == b:
        good = sum(len(x[3]) for x in a if x[0] == "good")
        bad = sum(len(x[1]) for x in a if x[0] == "rejected")
        print(f"same  {path.name:<28} rows={rows:<6} tz={tz}: {len(a)} parts, "
              f"{good} good, {bad} rejected")
        return True
    print(f"DIFF  {path.name} rows={rows} tz={tz}")
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            print("  part", i, x[0], y[0])
            if x[0] == y[0] and x[0] in ("good", "chunk", "rejected"):
                for k, (p, q) in enumerate(zip(x, y, strict=False)):
                    if p != q:
                        if isinstance(p, list):
                            for j, (u, w) in enumerate(zip(p, q, strict=False)):
                                if u != w:
                                    print("   field", k, "item", j, "\n    old", u, "\n    new", w)
                                    break
                            if len(p) != len(q):
                                print("   field", k, "lengths", len(p), len(q))
                        else:
                            print("   field", k, "\n    old", p, "\n    new", q)
            else:
                print("    old", str(x)[:500], "\n    new", str(y)[:500])
            break
    if len(a) != len(b):
        print("  parts", len(a), len(b))
    return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big", type=Path)
    ap.add_argument("--out", type=Path, default=Path("/tmp/sr-equivalence"))
    ap.add_argument("--rev", default="main")
    ap.add_argument("--read-bytes", type=int, help="cut files into pieces this small")
    args = ap.parse_args()
    if args.read_bytes:
        new_ef.READ_BYTES = args.read_bytes
    old = _baseline.load(args.rev)
    new = (new_ef, new_va)
    ok = True
    for path in cases(args.out):
        sys.stdout.flush()
        for rows in (3, 250, 50_000) if path.stat().st_size < 20_000 else (97, 50_000):
            for tz in (None, "Europe/Berlin"):
                ok &= compare(old, new, path, rows, tz)
    if args.big:
        ok &= compare(old, new, args.big, 50_000, None)
    small = args.out / "small.csv"
    small.write_bytes(b"".join((args.out / "bad_ragged.csv").open("rb").readlines()[:60]))
    for tz in (None, "Europe/Berlin"):
        ok &= compare(old, new, small, 3, tz)
    print("ALL SAME" if ok else "DIFFERENCES")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
