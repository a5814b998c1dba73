"""The load-summary table: one text for every face of a load (`sr-platform load` prints it,
the landing run logs it), so a load reads the same wherever it ran.

File names, and the errors and values quoting them, are escaped (text.printable): a name
holding control characters must not repaint a terminal or a log viewer."""

from collections import Counter

from .loader import LoadResult
from .text import printable

TOP_REASONS = 8  # rules listed under the table, the most frequent first


def load_summary_lines(results: list[LoadResult]) -> list[str]:
    """Per file: rows read, loaded, duplicate, rejected and rows/s (or why it was not loaded),
    the total, the ignored columns, and the most frequent reasons rows were rejected."""
    names = [printable(r.path.name) for r in results]
    w = max([len(n) for n in names] + [5])
    lines = [f"{'file':<{w}} {'read':>10} {'loaded':>10} {'duplicate':>10} {'rejected':>9} "
             f"{'rows/s':>10}"]
    for name, r in zip(names, results, strict=True):
        lines.append(f"{name:<{w}} {'not loaded: ' + printable(r.error)}" if r.error else
                     f"{name:<{w}} {r.rows_read:>10,} {r.loaded:>10,} {r.duplicates:>10,} "
                     f"{r.rejected:>9,} {r.rows_per_second:>10,.0f}")
    ok = [r for r in results if not r.error]
    lines.append(_total_line(ok, len(results), w))
    lines += [f"note: {printable(r.path.name)}: ignored columns not in the contract: "
              f"{printable(', '.join(r.ignored_columns))}" for r in ok if r.ignored_columns]
    lines += _reason_lines(ok)
    return lines


def _total_line(ok: list[LoadResult], files: int, w: int) -> str:
    secs = sum(r.seconds for r in ok)
    read = sum(r.rows_read for r in ok)
    return (f"{'total':<{w}} {read:>10,} {sum(r.loaded for r in ok):>10,} "
            f"{sum(r.duplicates for r in ok):>10,} {sum(r.rejected for r in ok):>9,} "
            f"{(read / secs if secs else 0):>10,.0f}   ({files} files, {secs:.1f} s)")


def _reason_lines(ok: list[LoadResult]) -> list[str]:
    """The most frequent rules broken, each with its first reason and its first lines."""
    reasons = sum((r.reasons for r in ok), Counter())
    if not reasons:
        return []
    lines = ["top reasons for rejected rows (all in table rejected_events):"]
    for rule, count in reasons.most_common(TOP_REASONS):
        example = next(r.rule_reasons[rule] for r in ok if rule in r.rule_reasons)
        where = "; ".join(f"{printable(r.path.name)} " + ", ".join(map(str, r.rule_lines[rule]))
                          for r in ok if r.rule_lines.get(rule))
        lines += [f"  {count:>8,}  {rule}", f"            e.g. {printable(example)}",
                  f"            first lines: {where}"]
    lines.append("list them: sr-platform rejected [--file FILE] [--rule RULE] "
                 "(or sr-platform rejected --help)")
    return lines


def ingest_summary(results: list[LoadResult], partitions: int, seconds: float) -> str:
    """The landing run's log message: how many files loaded and partitions it materialized in
    how long, then the load-summary table."""
    ok = [r for r in results if not r.error]
    read = sum(r.rows_read for r in ok)
    head = (f"{len(ok)} of {len(results)} files loaded, {partitions} partitions materialized "
            f"in {seconds:.1f} s ({read / seconds if seconds else 0:,.0f} rows/s)")
    return "\n".join([head, *load_summary_lines(results)])
