"""Reading and validating one big event CSV: main's event_files + validate (loaded from git)
against this checkout's, side by side in one process, interleaved chunk by chunk so machine
noise hits both alike.

    python bench/read_bench.py [--file /tmp/big1m.csv] [--rows 1000000] [--rev main]

Without --file, a file of --rows rows is generated (the generator's 28 instruments, as
bench/big_csv.py makes them). Prints rows/s and ms per 50k-row chunk (p50/p95/p99) for
`scan` and for `chunks()` + `validate()`, old and new, and new/old ratios.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _baseline  # noqa: E402

from sr_platform.core import event_files as new_ef  # noqa: E402
from sr_platform.core import validate as new_va  # noqa: E402

CHUNK = 50_000  # the loader's CHUNK_ROWS


def make_file(rows: int) -> Path:
    from sr_platform.core.generate import write_event_files
    where = Path(tempfile.mkdtemp(prefix="read-bench-"))
    write_event_files(where / "gen", years=1, instruments=28, seed=0)
    out = where / f"big{rows}.csv"
    import subprocess
    subprocess.run([sys.executable, str(Path(__file__).with_name("big_csv.py")), "--src",
                    str(where / "gen"), "--rows", str(rows), "--out", str(out)], check=True)
    return out


def timed_scan(ef, path: Path) -> tuple[float, int]:
    t = time.perf_counter()
    _, s = ef.scan(path)
    return time.perf_counter() - t, len(s.pairs)


def chunk_times(ef, va, path: Path) -> tuple[list[float], int]:
    f, _ = ef.scan(path)
    times, rows = [], 0
    it = f.chunks(CHUNK)
    while True:
        t = time.perf_counter()
        raw = next(it, None)
        if raw is None:
            break
        checked = va.validate(raw)
        times.append(time.perf_counter() - t)
        rows += len(checked.good) + len(checked.rejected)
    return times, rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", type=Path)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rev", default="main")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each, medians reported")
    args = ap.parse_args()
    path = args.file or make_file(args.rows)
    old_ef, old_va = _baseline.load(args.rev)
    scans = {"old": [], "new": []}
    chunks = {"old": [], "new": []}
    rows = {}
    for _ in range(args.repeat):
        for name, ef, va in (("old", old_ef, old_va), ("new", new_ef, new_va)):
            seconds, _ = timed_scan(ef, path)
            scans[name].append(seconds)
            times, rows[name] = chunk_times(ef, va, path)
            chunks[name].append(times)
    assert rows["old"] == rows["new"], rows
    n = rows["new"]
    print(f"{path} ({path.stat().st_size / 1e6:.0f} MB, {n:,} rows), chunks of {CHUNK:,}, "
          f"{args.repeat} run(s) each, old = {args.rev}")
    head = f"{'step':<22}{'':>6}{'rows/s':>12}{'total s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
    print(head)
    print("-" * len(head))
    out = {}
    for name in ("old", "new"):
        s = float(np.median(scans[name]))
        out[("scan", name)] = n / s
        print(f"{'scan':<22}{name:>6}{n / s:>12,.0f}{s:>9.2f}{'':>9}{'':>9}{'':>9}")
    for name in ("old", "new"):
        per = np.array(chunks[name]).ravel() * 1000
        total = float(np.median([sum(t) for t in chunks[name]]))
        out[("read+validate", name)] = n / total
        p50, p95, p99 = np.percentile(per, [50, 95, 99])
        print(f"{'read+validate':<22}{name:>6}{n / total:>12,.0f}{total:>9.2f}{p50:>9.0f}"
              f"{p95:>9.0f}{p99:>9.0f}")
    for name in ("old", "new"):
        both = float(np.median(scans[name])) + float(np.median(
            [sum(t) for t in chunks[name]]))
        out[("scan+read+validate", name)] = n / both
        print(f"{'scan+read+validate':<22}{name:>6}{n / both:>12,.0f}{both:>9.2f}")
    print()
    for step in ("scan", "read+validate", "scan+read+validate"):
        print(f"{step:<22} new/old {out[(step, 'new')] / out[(step, 'old')]:.1f}x")


if __name__ == "__main__":
    main()
