"""Write one big event CSV for the memory benchmark: the generator's files concatenated to
exactly --rows rows; past one copy, further copies rename the instruments (X -> X_2, ...) so
every row is a new event.

    python bench/big_csv.py --src /tmp/gen --rows 5000000 --out /tmp/big5m.csv
"""

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", type=Path, required=True, help="sr-platform generate --out folder")
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    files = sorted(args.src.glob("*.csv"))
    written, copy = 0, 1
    with args.out.open("w", encoding="utf-8") as out:
        header = files[0].open(encoding="utf-8").readline()
        out.write(header)
        while written < args.rows:
            for f in files:
                with f.open(encoding="utf-8") as fh:
                    fh.readline()
                    for line in fh:
                        if written >= args.rows:
                            break
                        if copy > 1:  # instrument is the 4th field
                            parts = line.split(",", 4)
                            parts[3] = f"{parts[3]}_{copy}"
                            line = ",".join(parts)
                        out.write(line)
                        written += 1
            copy += 1
    print(f"{written} rows -> {args.out} ({args.out.stat().st_size / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
