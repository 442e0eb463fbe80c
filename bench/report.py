"""The benchmark report: targets as PASS/FAIL lines, then the measured tables (Markdown)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, fields, is_dataclass
from typing import Any

from .measure import RunMeasure
from .runner import BenchResult

#: memory is "flat" when the transient peak grows by at most this factor while N grows 10x
FLAT_FACTOR = 2.0
#: Odoo-side overhead target per record
ODOO_MS_TARGET = 2.0


def _f(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:,.{digits}f}"


def _counts(counts: dict[str, int]) -> str:
    order = ("create", "update", "skip", "park", "error")
    return " ".join(f"{k[0].upper()}{counts[k]}" for k in order if counts.get(k)) or "-"


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------
def targets(result: BenchResult) -> list[tuple[bool, str]]:
    lines: list[tuple[bool, str]] = []
    full = [m for m in result.runs if m.label == "full"]
    again = [m for m in result.runs if m.label == "no-change"]
    for m in again:
        ok = m.visma_writes == 0 and m.bb_pages_repeated == 0 and m.bb_gets == 0
        lines.append(
            (
                ok,
                f"no-change re-run, {m.flow} N={m.n}: {m.visma_writes} Visma.net writes, "
                f"{m.bb_pages} source page(s) read, {m.bb_pages_repeated} re-read, "
                f"{m.bb_gets} file/record read(s) (target: 0 writes, each page once, no file "
                "read again)",
            )
        )
    for m in full:
        budget = m.call_budget
        lines.append(
            (
                m.visma_calls <= budget,
                f"full run Visma.net calls, {m.flow} N={m.n}: {m.visma_calls} for "
                f"{m.written} written = {_f(m.visma_per_written, 2)}/record; budget "
                f"{_f(budget, 0)} (1.05 x written + pages of master data)" + _call_mix(m),
            )
        )
    lines += _memory_targets(result.memory)
    for row in result.odoo:
        if row.get("label") not in ("full", "no-change") or not row.get("records"):
            continue
        ms = row.get("odoo_ms_per_record")
        marginal = row.get("per_record_ms")
        lines.append(
            (
                ms is not None and ms < ODOO_MS_TARGET,
                f"Odoo-side overhead, {row['flow']} N={row['n']} {row['label']}: "
                f"{_f(ms, 2)} ms/record "
                f"(target < {ODOO_MS_TARGET} ms); of it {_f(marginal, 2)} ms per record in the "
                f"sink and link store ({_f(row.get('link_commit_ms_per_record'), 2)} ms waiting "
                f"for the link commits), {_f(row.get('fixed_s'), 2)} s once per run; CPU "
                f"{_f(row.get('odoo_cpu_ms_per_record'), 2)} ms/record",
            )
        )
    if result.odoo_note and not result.odoo:
        lines.append((False, f"Odoo-side overhead: not measured ({result.odoo_note})"))
    for q in result.quota:
        lines.append(
            (
                q.ok,
                f"quota pacing, {q.flow} ({q.system}, {q.quota}): finished after "
                f"{_f(q.virtual_s / 3600, 2)} h virtual, theoretical minimum "
                f"{_f(q.minimum_s / 3600, 2)} h, {q.too_many} x 429",
            )
        )
    for p in result.parallel:
        if not p.identity_keys:
            continue
        lines.append(
            (
                p.ok,
                f"parallel batches, {p.flow}: {p.workers} workers, {p.batches} batches each "
                f"enqueued twice: {p.records_written_twice} record(s) written twice, "
                f"{p.duplicates_in_visma} duplicate(s) (identity keys on)",
            )
        )
    for row in result.odoo_parallel:
        ok = (
            row["records_written_twice"] == 0
            and row["duplicates_in_visma"] == 0
            and row["writes_on_replay"] == 0
            and row["state"] == "done"
        )
        lines.append(
            (
                ok,
                f"parallel batches through queue_job (Odoo), {row['flow']}: {row['workers']} "
                f"worker threads, {row['batches']} batch jobs: {row['records_written_twice']} "
                f"record(s) written twice, {row['duplicates_in_visma']} duplicate(s); every done "
                f"batch job performed again: {row['writes_on_replay']} write(s)",
            )
        )
    if result.faults:
        clean = [o for o in result.faults if o.ok]
        known = [o for o in result.faults if not o.ok and o.known_defect]
        note = f" ({len(known)} known defect(s))" if known else ""
        lines.append(
            (
                len(clean) == len(result.faults),
                f"fault suite: {len(clean)}/{len(result.faults)} cases without duplicate, "
                f"lost record or untruthful log{note}",
            )
        )
    return lines


def _call_mix(m: RunMeasure) -> str:
    per_record = {k: v for k, v in m.visma_kinds.items() if k in ("lookup", "item")}
    if not per_record or not m.written:
        return ""
    parts = ", ".join(f"{v / m.written:.2f} {k}" for k, v in sorted(per_record.items()))
    return f" -- per record written: {parts} besides the write"


def _memory_targets(memory: list[RunMeasure]) -> list[tuple[bool, str]]:
    """Per flow and run (full, no-change): the run's transient peak (Python heap + SQLite's,
    :attr:`RunMeasure.run_transient_kib`) at the smallest and the largest N."""
    lines = []
    measured = [m for m in memory if m.run_transient_kib is not None]
    for flow, label in dict.fromkeys((m.flow, m.label) for m in measured):
        series = sorted(
            (m.n, m.run_transient_kib) for m in measured if (m.flow, m.label) == (flow, label)
        )
        if len(series) < 2:
            continue
        (n0, t0), (n1, t1) = series[0], series[-1]
        growth = t1 / t0 if t0 else math.inf
        allowed = FLAT_FACTOR * max(1.0, math.log10(n1 / n0))
        run = "" if label == "full" else f" ({label} run)"
        lines.append(
            (
                growth <= allowed,
                f"memory, {flow}{run}: transient peak {_f(t0 / 1024, 1)} MiB at N={n0} -> "
                f"{_f(t1 / 1024, 1)} MiB at N={n1} (x{_f(growth, 2)}; flat means <= "
                f"x{_f(allowed, 1)} for N x{n1 // n0})",
            )
        )
    return lines


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------
RUN_HEADER = (
    "| flow | N | run | records | outcome | Visma calls (writes) | Visma/written | "
    "BB calls | BB/read | pages re-read | rec/s | engine ms/rec wall | engine ms/rec CPU | "
    "simulators s | virtual pacing |"
)


def run_table(measures: Iterable[RunMeasure]) -> list[str]:
    lines = [RUN_HEADER, "|" + "---|" * 15]
    for m in measures:
        lines.append(
            f"| {m.flow} | {m.n:,} | {m.label} | {m.items:,} | {_counts(m.counts)} | "
            f"{m.visma_calls:,} ({m.visma_writes:,}) | {_f(m.visma_per_written, 2)} | "
            f"{m.bb_calls:,} | {_f(m.bb_per_read, 3)} | {m.bb_pages_repeated} | "
            f"{_f(m.records_per_s, 0)} | {_f(m.engine_ms_per_record, 2)} | "
            f"{_f(m.engine_cpu_ms_per_record, 2)} | {_f(m.sim_s, 1)} | "
            f"{_virtual(m.virtual_s)} |"
        )
    return lines


def _virtual(seconds: float) -> str:
    if seconds < 1:
        return "-"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def memory_table(memory: list[RunMeasure]) -> list[str]:
    lines = [
        "| flow | N | run | peak MiB | retained MiB | transient MiB | SQLite peak MiB | "
        "SQLite retained MiB | SQLite transient MiB | run transient MiB | RSS growth MiB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def mib(kib: float | None) -> str:
        return _f(kib / 1024, 2) if kib is not None else "-"

    for m in memory:
        lines.append(
            f"| {m.flow} | {m.n:,} | {m.label} | {mib(m.peak_kib)} | {mib(m.retained_kib)} | "
            f"{mib(m.transient_kib)} | {mib(m.sqlite_peak_kib)} | "
            f"{mib(m.sqlite_retained_kib)} | {mib(m.sqlite_transient_kib)} | "
            f"{mib(m.run_transient_kib)} | {mib(m.rss_growth_kib)} |"
        )
    return lines


def naive_table(runs: list[RunMeasure], naive: list[RunMeasure]) -> list[str]:
    lines = [
        "| flow | N | run | Visma calls engine / naive | BB calls engine / naive | "
        "calls ratio | CPU s engine / naive | CPU ratio | wall s engine / naive |",
        "|---|---:|---|---|---|---:|---|---:|---|",
    ]
    engine = {(m.flow, m.n, m.label): m for m in runs}
    for m in naive:
        label = m.label.replace("naive ", "")
        e = engine.get((m.flow, m.n, label))
        if e is None:
            continue
        e_calls, n_calls = e.visma_calls + e.bb_calls, m.visma_calls + m.bb_calls
        lines.append(
            f"| {m.flow} | {m.n:,} | {label} | {e.visma_calls:,} / {m.visma_calls:,} | "
            f"{e.bb_calls:,} / {m.bb_calls:,} | {_ratio(n_calls, e_calls)} | "
            f"{_f(e.cpu_s, 1)} / {_f(m.cpu_s, 1)} | {_ratio(m.cpu_s, e.cpu_s)} | "
            f"{_f(e.wall_s, 1)} / {_f(m.wall_s, 1)} |"
        )
    return lines


def _ratio(naive: float, engine: float) -> str:
    if engine == 0:
        return "naive only" if naive else "-"
    return f"{naive / engine:,.1f}x"


def quota_table(quota: list[Any]) -> list[str]:
    lines = [
        "| flow | quota | records | calls | virtual duration | theoretical minimum | 429s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for q in quota:
        lines.append(
            f"| {q.flow} | {q.system} {q.quota} | {q.records:,} | {q.calls:,} | "
            f"{_f(q.virtual_s / 3600, 2)} h | {_f(q.minimum_s / 3600, 2)} h | {q.too_many} |"
        )
    return lines


def parallel_table(parallel: list[Any]) -> list[str]:
    lines = [
        "| flow | records | workers | batches | identity keys | jobs run (dropped) | "
        "outcome | writes | records written twice | duplicates in Visma.net |",
        "|---|---:|---:|---:|---|---|---|---:|---:|---:|",
    ]
    for p in parallel:
        lines.append(
            f"| {p.flow} | {p.records:,} | {p.workers} | {p.batches} | "
            f"{'on' if p.identity_keys else 'off'} | {p.enqueued} ({p.dropped_by_identity}) | "
            f"{_counts(p.outcome)} | {p.writes:,} | {p.records_written_twice} | "
            f"{p.duplicates_in_visma} |"
        )
    return lines


def odoo_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| flow | N | run | records | outcome | wall s | engine s (simulators s) | "
        "Odoo side s | of it per run s | Odoo-side ms/record | of it per record ms | "
        "of it link commits ms/record | Odoo-side CPU ms/record | SQL queries/record |",
        "|---|---:|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['flow']} | {r['n']:,} | {r['label']} | {r['records']:,} | "
            f"{_counts(r['counts'])} | {_f(r['wall_s'], 2)} | {_f(r['engine_s'], 2)} "
            f"({_f(r['sim_s'], 2)}) | {_f(r['odoo_s'], 2)} | {_f(r.get('fixed_s'), 2)} | "
            f"{_f(r['odoo_ms_per_record'], 3)} | {_f(r.get('per_record_ms'), 3)} | "
            f"{_f(r.get('link_commit_ms_per_record'), 3)} | "
            f"{_f(r.get('odoo_cpu_ms_per_record'), 3)} | "
            f"{_f(r.get('queries_per_record'), 1)} |"
        )
    return lines


# --------------------------------------------------------------------------------------------
# The whole report
# --------------------------------------------------------------------------------------------
def render(result: BenchResult, command: str) -> str:
    out: list[str] = [
        f"# Benchmark results, {result.started}",
        "",
        f"Reproduce: `{command}` (from the repository root). Commit {result.commit}; "
        f"{result.machine}. Simulators in-process (no sockets); one FakeClock drives quotas "
        "and back-offs, so pacing costs virtual time, reported apart. What each number means: "
        "`bench/measure.py`; the passes: `bench/runner.py`.",
        "",
        "## Targets",
        "",
    ]
    for ok, text in targets(result):
        out.append(f"- **{'PASS' if ok else 'FAIL'}** {text}")
    if result.runs:
        out += [
            "",
            "## Runs through the pure engine",
            "",
            "Outcome letters: C create, U update, S skip, P park, E error. `engine ms/rec wall` "
            "is the run's wall time minus the time spent inside the simulators, per record "
            "read; `CPU` the same in CPU time of the run's thread (not inflated by other "
            "processes on the machine). "
            "`virtual pacing` is what the FakeClock advanced (BuchhaltungsButler's 100 "
            "requests/minute; no wall time here).",
            "",
            *run_table(result.runs),
        ]
    if result.memory:
        out += [
            "",
            "## Memory (tracemalloc)",
            "",
            "`peak`: the highest traced allocation during the run above the level before it; "
            "`retained`: still allocated after it (new simulator state, links -- what lives "
            "in the other systems or the database in production); `transient` = peak - "
            "retained, the run's own working set. `SQLite ...`: the same for SQLite's own heap "
            "(page caches of the document cache and of temporary databases), which "
            "tracemalloc does not see; `run transient` = transient + SQLite transient, what "
            "the targets judge. `RSS growth`: the process's resident set high-water mark "
            "during the run minus its resident set before (coarse: includes retained data "
            "and tracemalloc's bookkeeping; see `bench/measure.py`).",
            "",
            *memory_table(result.memory),
        ]
    if result.naive:
        out += [
            "",
            "## Naive baseline",
            "",
            "The same flows with no link store, no document cache, BuchhaltungsButler's "
            "default page size and batch size 1 (`bench/naive.py`): every record is looked "
            "up and written or re-sent, every file downloaded by each flow in every run. "
            "Ratio = naive / engine. Time is compared in CPU seconds of the run's thread "
            "(client and simulators together): the passes ran at different moments of a "
            "shared machine, so their wall times are not comparable.",
            "",
            *naive_table(result.runs, result.naive),
        ]
    if result.quota:
        out += [
            "",
            "## Quota pacing",
            "",
            "Scaled down: Visma.net 500 requests/hour (the historic test-client quota; "
            "production 15 000/h is 30x) in a fixed clock-hour window, the run starting in "
            "the middle of a window; BuchhaltungsButler 100/minute sliding. The client paces "
            "on `X-RateLimit-Remaining/-Reset` (HeaderPacer) and its own limiter.",
            "",
            *quota_table(result.quota),
        ]
    if result.parallel:
        out += [
            "",
            "## Batches over parallel workers (queue_job, simulated)",
            "",
            "Measured: the pure simulation -- threads as workers, each with its own flow "
            "instance, one shared MemoryLinkStore, shared clients; every batch enqueued twice. "
            "With identity keys the queue drops the copy (queue_job's `identity_key`); "
            "without, the copy runs concurrently with the original.",
            "",
            *parallel_table(result.parallel),
        ]
    if result.odoo or result.odoo_note:
        out += ["", "## Through the Odoo module", ""]
        if result.odoo_note:
            out += [result.odoo_note, ""]
        if result.odoo:
            out += odoo_table(result.odoo)
    if result.odoo_parallel:
        out += [
            "",
            "## Batches over queue_job workers, through the Odoo module",
            "",
            "Measured: the Odoo wiring itself -- a flow with *Parallel batches* on, `_run()` "
            "queues the run's stream job; worker threads perform the jobs the way queue_job's "
            "runner does (each in its own transaction: started, performed, done; postponed on "
            "RetryableJobError), `FOR UPDATE SKIP LOCKED` to take one. Then every batch job is "
            "performed once more with its batch reopened -- as if each worker had died after "
            "writing its records but before marking the job done.",
            "",
            "| flow | records | workers | batch jobs | jobs performed | run | outcome | writes | "
            "records written twice | duplicates | writes when replayed | wall s |",
            "|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in result.odoo_parallel:
            out.append(
                f"| {r['flow']} | {r['records']:,} | {r['workers']} | {r['batches']} | "
                f"{r['jobs_performed']} | {r['state']} | {_counts(r['counts'])} | "
                f"{r['writes']:,} | {r['records_written_twice']} | {r['duplicates_in_visma']} | "
                f"{r['writes_on_replay']} | {_f(r['wall_s'], 1)} |"
            )
    if result.faults:
        from .faults import table

        out += [
            "",
            "## Fault suite",
            "",
            "`python -m bench faults`; asserted by `tests/test_fault_suite.py`. After each "
            "fault the schedule runs the flow twice more (recovery, then a quiet run).",
            "",
            table(result.faults),
        ]
    if result.durations:
        out += ["", "## Bench duration", ""]
        out += [f"- {name}: {_f(seconds, 0)} s" for name, seconds in result.durations.items()]
    return "\n".join(out) + "\n"


def to_json(result: BenchResult) -> str:
    def plain(value: Any) -> Any:
        if isinstance(value, RunMeasure):
            return value.as_dict()
        if is_dataclass(value):
            data = asdict(value)
            for name in ("ok",):
                if hasattr(value, name):
                    data[name] = getattr(value, name)
            return data
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    data = {name: plain(getattr(result, name)) for name in result.__dataclass_fields__}
    return json.dumps(data, indent=1, default=str)


# --------------------------------------------------------------------------------------------
# Reading a report back (re-render, merge)
# --------------------------------------------------------------------------------------------
def from_json(data: dict[str, Any]) -> BenchResult:
    """A :class:`BenchResult` from :func:`to_json`'s output (derived values recomputed)."""
    from .faults import FaultOutcome
    from .scenarios import ParallelResult, QuotaResult

    def rebuild(cls: type, item: dict[str, Any]) -> Any:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in item.items() if k in names})

    result = BenchResult(
        ns=data["ns"],
        flows=data["flows"],
        started=data["started"],
        commit=data["commit"],
        machine=data["machine"],
    )
    result.runs = [rebuild(RunMeasure, m) for m in data.get("runs", [])]
    result.memory = [rebuild(RunMeasure, m) for m in data.get("memory", [])]
    result.naive = [rebuild(RunMeasure, m) for m in data.get("naive", [])]
    result.quota = [rebuild(QuotaResult, q) for q in data.get("quota", [])]
    result.parallel = [rebuild(ParallelResult, p) for p in data.get("parallel", [])]
    result.faults = [rebuild(FaultOutcome, o) for o in data.get("faults", [])]
    result.odoo = list(data.get("odoo", []))
    result.odoo_note = data.get("odoo_note")
    result.odoo_parallel = list(data.get("odoo_parallel", []))
    result.durations = dict(data.get("durations", {}))
    return result


def merge(results: list[BenchResult]) -> BenchResult:
    """One report from several runs (e.g. the pure passes and the Odoo passes run apart):
    list-valued sections are concatenated, the first run's header is kept, and its commit
    line names every run's commit."""
    first = results[0]
    merged = BenchResult(
        ns=sorted({n for r in results for n in r.ns}),
        flows=list(dict.fromkeys(f for r in results for f in r.flows)),
        started=", ".join(dict.fromkeys(r.started for r in results)),
        commit=", ".join(dict.fromkeys(r.commit for r in results)),
        machine=first.machine,
    )
    for name in ("runs", "memory", "naive", "quota", "parallel", "odoo", "odoo_parallel", "faults"):
        for r in results:
            getattr(merged, name).extend(getattr(r, name))
    merged.odoo_note = next((r.odoo_note for r in results if r.odoo_note), None)
    for r in results:
        merged.durations.update(r.durations)
    return merged
