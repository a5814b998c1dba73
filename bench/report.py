"""The report of `make bench`: Markdown tables, the JSON twin and one PNG chart per comparison,
from the dict bench/run.py collects."""

from __future__ import annotations

import json
from pathlib import Path

import read_section


def _f(v: float, digits: int = 2) -> str:
    return f"{v:,.{digits}f}"


def _verdict(met: bool | None) -> str:
    return "" if met is None else ("**met**" if met else "**missed**")


def goals(res: dict) -> list[dict]:
    """Every goal row of the run: name, measured, target, met."""
    out = []
    load = res.get("load") or {}
    for g in load.get("goals", []):
        unit = g.get("unit", "")
        out.append({"goal": g["name"], "measured": f"{_f(g['value'])}{unit}",
                    "target": g.get("target", ""), "met": g.get("met")})
    for q in res.get("queries", []):
        for r in q["queries"]:
            if r["goal"]:
                out.append({"goal": f"5. {r['query']} ({q['size']}, {r['method']})",
                            "measured": f"{r['stat']} {_f(r['value'])} ms "
                                        f"[{_f(r['spread'][0])}-{_f(r['spread'][1])}]",
                            "target": f"< {r['target_ms']} ms", "met": r["met"]})
    if len(res.get("queries", [])) > 1:
        f = flatness(res)
        worst = max(f, key=lambda r: r["ratio"])
        out.append({"goal": "5. flat from 1 y to 5x (worst goal query, 5x / 1 y p95 per row "
                            "returned)",
                    "measured": f"{_f(worst['ratio'])}x ({worst['query']}"
                                + (f"; {_f(worst['raw'])}x for {worst['big_rows']:,} rows "
                                   f"against {worst['small_rows']:,}"
                                   if worst["big_rows"] != worst["small_rows"] else "") + ")",
                    "target": "<= 1.5x (flat within noise)", "met": worst["ratio"] <= 1.5})
    out += read_section.goals(res)
    w = res.get("writers")
    if w:
        best = max(w["results"], key=lambda r: r["value"])
        out.append({"goal": "6. concurrent writers: zero lost, zero duplicated rows "
                            f"({', '.join(str(r['procs']) for r in w['results'])} processes)",
                    "measured": "0 lost, 0 duplicated" if w["ok"] else "FAILED",
                    "target": "0 / 0", "met": w["ok"]})
        out.append({"goal": "6. concurrent writers: total rows/s (best)",
                    "measured": f"{_f(best['value'], 0)} rows/s with {best['procs']}",
                    "target": "reported", "met": None})
    return out


def flatness(res: dict) -> list[dict]:
    """Each goal query at 1 y against 5x. `ratio` is per row returned: a query without a time
    bound (the price band over a pair's whole history) returns ~5x the rows at 5x, and its
    time grows with its result, not with the table; `raw` is the plain ratio."""
    a, b = res["queries"][0], res["queries"][-1]
    by = {(r["query"], r["method"]): r for r in a["queries"]}
    out = []
    for r in b["queries"]:
        if r["goal"] and (r["query"], r["method"]) in by:
            base = by[(r["query"], r["method"])]
            raw = r["value"] / base["value"]
            out.append({"query": r["query"], "method": r["method"], "small": base["value"],
                        "big": r["value"], "small_rows": base["rows"], "big_rows": r["rows"],
                        "raw": raw, "ratio": raw * base["rows"] / max(r["rows"], 1)})
    return out


def markdown(res: dict) -> str:
    env = res["environment"]
    lines = [f"# `make bench` report ({env['started']} UTC)", "",
             f"Command: `{env['command']}`; {env['cpus']} CPUs, PostgreSQL "
             f"{env['postgres']}" + (f" ({env['server']}; archive_mode="
                                     f"{env.get('archive_mode', '?')}, wal_level="
                                     f"{env.get('wal_level', '?')})" if "server" in env else "")
             + f", Python {env['python']}; load average at start "
             f"{env['loadavg']}, at the end {env.get('loadavg_end', '?')} (other work on the "
             f"machine inflates every figure; compare within a table); total "
             f"{env['seconds']:.0f} s. Every comparison ran in this one "
             "process against the same server; figures are medians over repeats with the "
             "spread [min-max] of the repeats.", "",
             "## Goals", "", "| goal | measured | target | verdict |", "| --- | --- | --- | --- |"]
    for g in goals(res):
        lines.append(f"| {g['goal']} | {g['measured']} | {g['target']} | {_verdict(g['met'])} |")
    load = res.get("load")
    if load:
        lines += ["", "## Load", "", f"Source: {load.get('source', '')}; "
                  f"{load.get('rows', 0):,} rows in {load.get('files', '?')} files.", "",
                  "| method | rows | rows/s (median) | spread | p50 / p95 / p99 ms per file | "
                  "vs `\\copy` |",
                  "| --- | --- | --- | --- | --- | --- |"]
        base = next((m["rows_per_s"] for m in load["methods"] if "copy" in m["name"]), None)
        for m in load["methods"]:
            sp = m.get("spread")
            lines.append(f"| {m['name']} | {m.get('rows', 0):,} | {_f(m['rows_per_s'], 0)} | "
                         + (f"{_f(sp[0], 0)}-{_f(sp[1], 0)}" if sp else "") + " | "
                         + (" / ".join(_f(m[p], 0) for p in ("p50_ms", "p95_ms", "p99_ms"))
                            if "p50_ms" in m else "") + " | "
                         # per repeat against the same repeat's \copy, then the median
                         + (f"{m['vs_copy']:.2f}x" if "vs_copy" in m
                            else f"{m['rows_per_s'] / base:.2f}x" if base else "") + " |")
        for scenario, phases in (load.get("phases") or {}).items():
            lines.append("")
            lines.append(f"Loader phases, {scenario} (s): " + ", ".join(
                f"{k} {v:.2f}" for k, v in phases.items()))
        if load.get("small_files"):
            s = load["small_files"]
            lines += ["", f"Small files: {s['rows']:,} rows in {s['files']} files into an empty "
                      f"database in {s['value']:.2f} s [{s['spread'][0]:.2f}-"
                      f"{s['spread'][1]:.2f}] through `sr-platform load` (process start "
                      "included)" + (f", {s['in_process_s']:.2f} s inside one process"
                                     if "in_process_s" in s else "") + "."]
    for q in res.get("queries", []):
        lines += ["", f"## Queries at {q['size']} ({q['events']:,} events)", "",
                  f"Data: {q.get('fill', {}).get('rows', 0):,} rows generated in "
                  f"{sum(q.get('fill', {}).get('seconds', {}).values()):.0f} s; parameters "
                  f"{json.dumps(q['params'])}.", "",
                  "| query | method | rows | figure ms | spread | p50 / p99 ms | target | "
                  "verdict |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in q["queries"]:
            lines.append(
                f"| {r['query']} | {r['method']} | {r['rows']:,} | {r['stat']} "
                f"{_f(r['value'])} | {_f(r['spread'][0])}-{_f(r['spread'][1])} | "
                f"{_f(r['p50'])} / {_f(r['p99'])} | "
                + (f"< {r['target_ms']} ms" if r["target_ms"] else "") + f" | "
                f"{_verdict(r['met'])} |")
        lines += ["", "Partition pruning (planning time from EXPLAIN ANALYZE, median of 21):", "",
                  "| query | pairs | p95 ms | planning ms | execution ms | leaves scanned |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in q["pruning"]:
            lines.append(f"| {r['query']} | {r['pairs']} | {_f(r['value'])} | "
                         f"{_f(r['planning_ms'])} | {_f(r['execution_ms'])} | "
                         f"{r['leaves_scanned']} |")
    if len(res.get("queries", [])) > 1:
        lines += ["", "## Flatness: 1 y against 5x", "",
                  "Per row returned: the price band has no time bound, so at 5x it returns "
                  "about 5x the rows (its time follows its result, not the table's size).", "",
                  "| query | method | 1 y ms (rows) | 5x ms (rows) | 5x / 1 y | per row |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in flatness(res):
            lines.append(f"| {r['query']} | {r['method']} | {_f(r['small'])} "
                         f"({r['small_rows']:,}) | {_f(r['big'])} ({r['big_rows']:,}) "
                         f"| {r['raw']:.2f}x | {r['ratio']:.2f}x |")
    w = res.get("writers")
    if w:
        lines += ["", "## Concurrent writers", "",
                  f"{w['rows']:,} distinct good rows in {w['files']} files; with 2 or more "
                  "processes every file is loaded by two of them; partitions created "
                  "beforehand; each repeat in a fresh database.", "",
                  "| processes | file loads | rows/s (median) | spread | rows stored | "
                  "distinct ids | level rows | expected | lost | duplicated | load errors |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in w["results"]:
            c = r["runs"][-1]["check"]
            lost = max(x["check"]["lost"] for x in r["runs"])
            dup = max(x["check"]["duplicated"] + x["check"]["extra"] for x in r["runs"])
            errs = sum(len(x["load_errors"]) for x in r["runs"])
            lines.append(f"| {r['procs']} | {r['runs'][0]['file_loads']} | {_f(r['value'], 0)} | "
                         f"{_f(r['spread'][0], 0)}-{_f(r['spread'][1], 0)} | {c['rows']:,} | "
                         f"{c['distinct_ids']:,} | {c['levels']:,} | {c['expected']:,} | {lost} | "
                         f"{dup} | {errs} |")
        lines += ["", "Zero lost and zero duplicated rows: "
                  + ("asserted, holds for every run." if w["ok"] else "**FAILED**.")]
    lines += read_section.markdown(res)
    if res.get("notify"):
        lines += ["", "## Real time (issue 16, bench/notify_bench.py)", ""] + res["notify"]["table"]
    if res.get("landing"):
        lines += ["", "## Landing to queryable (issue 16, bench/sensor_bench.py)", ""] \
            + res["landing"]["table"]
    if res.get("charts"):
        lines += ["", "## Charts", ""] + [f"![{c}]({c})" for c in res["charts"]]
    return "\n".join(lines) + "\n"


def charts(res: dict, out: Path, prefix: str = "") -> list[str]:
    """One PNG per comparison, named `prefix` + its name (a report other than latest keeps
    its own charts); [] when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []

    def save(fig, name):
        name = prefix + name
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        made.append(name)

    load = res.get("load")
    if load and load.get("methods"):
        ms = load["methods"]
        fig, ax = plt.subplots(figsize=(9, 0.5 * len(ms) + 1.5))
        vals = [m["rows_per_s"] for m in ms]
        err = [[v - m.get("spread", [v, v])[0] for v, m in zip(vals, ms, strict=True)],
               [m.get("spread", [v, v])[1] - v for v, m in zip(vals, ms, strict=True)]]
        ax.barh([m["name"][:60] for m in ms], vals, xerr=err,
                color=["#888" if m.get("kind") == "baseline" else "#2a7" for m in ms])
        ax.invert_yaxis()
        ax.set_xlabel("rows/s (median, spread of repeats)")
        ax.set_title("Load: baselines (grey) and the loader (green)")
        save(fig, "load.png")
    for q in res.get("queries", []):
        rows = q["queries"]
        fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.5))
        labels = [f"{r['query'][:34]} | {r['method'][:34]}" for r in rows]
        vals = [r["value"] for r in rows]
        err = [[r["value"] - r["spread"][0] for r in rows],
               [r["spread"][1] - r["value"] for r in rows]]
        ax.barh(labels, vals, xerr=err, color=["#2a7" if r["goal"] else "#888" for r in rows])
        for i, r in enumerate(rows):
            if r["target_ms"]:
                ax.plot([r["target_ms"]] * 2, [i - 0.4, i + 0.4], color="red")
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_xlabel("ms (p95, p99 for the insert; log scale); red: target")
        ax.set_title(f"Queries at {q['size']} ({q['events']:,} events)")
        save(fig, f"queries_{q['size']}.png")
        pr = q["pruning"]
        fig, ax = plt.subplots(figsize=(8, 3))
        ax.barh([f"{r['query'][:50]}" for r in pr], [r["planning_ms"] for r in pr])
        ax.invert_yaxis()
        ax.set_xlabel("planning ms (median)")
        ax.set_title(f"Partition pruning at {q['size']}: 112 against 500 pairs")
        save(fig, f"pruning_{q['size']}.png")
    if len(res.get("queries", [])) > 1:
        f = flatness(res)
        fig, ax = plt.subplots(figsize=(8, 3))
        x = range(len(f))
        ax.bar([i - 0.2 for i in x], [r["small"] for r in f], 0.4, label="1 y")
        ax.bar([i + 0.2 for i in x], [r["big"] for r in f], 0.4, label="5x")
        ax.set_xticks(list(x), [r["query"][:22] for r in f], rotation=20, fontsize=7)
        ax.set_ylabel("ms")
        ax.legend()
        ax.set_title("Flatness: 1 y against 5x")
        save(fig, "flatness.png")
    w = res.get("writers")
    if w:
        fig, ax = plt.subplots(figsize=(6, 3))
        rs = w["results"]
        ax.bar([str(r["procs"]) for r in rs], [r["value"] for r in rs],
               yerr=[[r["value"] - r["spread"][0] for r in rs],
                     [r["spread"][1] - r["value"] for r in rs]])
        ax.set_xlabel("loader processes (overlapping files)")
        ax.set_ylabel("rows/s stored")
        ax.set_title("Concurrent writers" + ("" if w["ok"] else " (CHECK FAILED)"))
        save(fig, "writers.png")
    return made


def write(res: dict, out: Path, name: str = "latest") -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    res["charts"] = charts(res, out, "" if name == "latest" else f"{name}_")
    res["goals"] = goals(res)
    md, js = out / f"{name}.md", out / f"{name}.json"
    md.write_text(markdown(res))
    js.write_text(json.dumps(res, indent=1, default=str) + "\n")
    return md, js
