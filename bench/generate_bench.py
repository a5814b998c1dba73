"""Generator throughput: rows/s of sr_platform.core.generate.generate_events (no database).

    .venv/bin/python bench/generate_bench.py [--repeat 3]

Times the default sample (1 year, 28 instruments, event_rate 0.2) and the benchmark data set
(5 years, 28 instruments, every bar an event). Wall-clock figures depend on the machine, so they
live here and not in the tests (test_generate checks what is generated, not how fast).
"""

import argparse
import time

from sr_platform.core.generate import generate_events

CASES = {
    "1 year, 28 instruments (default sample)": dict(years=1, instruments=28),
    "5 years, 28 instruments, every bar (load benchmark size)":
        dict(years=5, instruments=28, event_rate=1.0),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the best is reported")
    args = ap.parse_args()
    print(f"{'case':<58} {'rows':>10} {'best s':>8} {'rows/s':>12}")
    for name, kwargs in CASES.items():
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            rows = len(generate_events(**kwargs))
            times.append(time.perf_counter() - t0)
        best = min(times)
        print(f"{name:<58} {rows:>10,} {best:>8.2f} {rows / best:>12,.0f}")


if __name__ == "__main__":
    main()
