"""``python -m bench run``: every pass of the benchmark, collected into one :class:`BenchResult`.

Passes, each on its own freshly seeded rig so they cannot influence each other:

``time``      per N: every flow once on new data (full run), then every flow again with no
              source change (no-change run); no tracemalloc (it slows Python down 2-4x)
``memory``    the same runs under tracemalloc (peak, retained, transient = peak - retained)
``naive``     the naive baseline (:mod:`bench.naive`) per N
``quota``     runs under scaled-down quotas on the FakeClock (:func:`bench.scenarios.quota_run`)
``parallel``  batches over worker threads, with and without identity keys
``odoo``      (with ``--odoo DB``) the same flows through the Odoo module's run path
``faults``    the fault table (:mod:`bench.faults`)

A warm-up run on a small rig comes first: it compiles the Visma.net spec validators and
imports everything, so no pass pays one-time costs that would look like per-record costs.
"""

from __future__ import annotations

import gc
import logging
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .measure import RunMeasure, measure_run, set_up_prerequisites
from .rig import make_rig

DEFAULT_FLOWS = ("customers", "products", "orders")


def _repo_root() -> Path:
    """The repository of the measured code (bbvisma's), even when the bench runs from a copy."""
    import bbvisma

    return Path(bbvisma.__file__).resolve().parent.parent


ROOT = _repo_root()


@dataclass
class BenchResult:
    ns: list[int]
    flows: list[str]
    started: str
    commit: str
    machine: str
    runs: list[RunMeasure] = field(default_factory=list)
    memory: list[RunMeasure] = field(default_factory=list)
    naive: list[RunMeasure] = field(default_factory=list)
    quota: list[Any] = field(default_factory=list)
    parallel: list[Any] = field(default_factory=list)
    odoo: list[dict[str, Any]] = field(default_factory=list)
    odoo_note: str | None = None
    odoo_parallel: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Any] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)


def machine() -> str:
    import os

    return (
        f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPU(s)"
    )


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "bench", "bbvisma"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip() + (" (+ uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def warm_up(flows: list[str]) -> None:
    rig = make_rig(debtor_count=20, receipt_count=20, indexed=True)
    try:
        for flow in flows:
            measure_run(rig, flow, "warm-up", n=20)
            measure_run(rig, flow, "warm-up", n=20)
    finally:
        rig.close()


def flow_runs(n: int, flows: list[str], *, memory: bool) -> list[RunMeasure]:
    """Full run then no-change run of every flow on a fresh rig of size ``n``."""
    rig = make_rig(debtor_count=n, receipt_count=n, indexed=True)
    out = []
    try:
        set_up_prerequisites(rig, flows, n=n)
        for label in ("full", "no-change"):
            for flow in flows:
                gc.collect()
                m, _report = measure_run(rig, flow, label, n=n, memory=memory)
                out.append(m)
                _say(m)
    finally:
        rig.close()
    return out


def naive_runs(n: int, flows: list[str]) -> list[RunMeasure]:
    from .naive import run_naive

    rig = make_rig(debtor_count=n, receipt_count=n, indexed=True)
    try:
        measures = run_naive(rig, flows, n=n)
    finally:
        rig.close()
    for m in measures:
        _say(m)
    return measures


def _say(m: RunMeasure) -> None:
    logging.getLogger("bench").info(
        "%s N=%s %s: %s records %s, Visma %s calls, BB %s calls, %.1f s wall (%.1f s sim)%s",
        m.flow,
        m.n,
        m.label,
        m.items,
        m.counts,
        m.visma_calls,
        m.bb_calls,
        m.wall_s,
        m.sim_s,
        f", transient {m.transient_kib:.0f} KiB" if m.transient_kib is not None else "",
    )


def run_bench(
    ns: list[int],
    flows: list[str],
    *,
    passes: set[str],
    odoo_db: str | None = None,
    quota_n: int = 1000,
    parallel_n: int = 1000,
) -> BenchResult:
    result = BenchResult(
        ns=ns,
        flows=flows,
        started=time.strftime("%Y-%m-%d %H:%M"),
        commit=git_commit(),
        machine=machine(),
    )
    log = logging.getLogger("bench")

    def timed(name: str, fn, *args, **kw):
        log.info("== %s", name)
        started = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            result.durations[name] = time.perf_counter() - started

    timed("warm-up", warm_up, flows)
    for n in ns:
        if "time" in passes:
            result.runs += timed(f"time N={n}", flow_runs, n, flows, memory=False)
        if "memory" in passes:
            result.memory += timed(f"memory N={n}", flow_runs, n, flows, memory=True)
        if "naive" in passes:
            result.naive += timed(f"naive N={n}", naive_runs, n, flows)
    if "quota" in passes:
        from .scenarios import quota_run

        result.quota = timed("quota", quota_run, quota_n)
    if "parallel" in passes:
        from .scenarios import parallel_run

        for flow in ("customers", "orders"):
            if flow not in flows:
                continue
            for identity_keys in (True, False):
                result.parallel.append(
                    timed(
                        f"parallel {flow} identity={identity_keys}",
                        parallel_run,
                        flow,
                        parallel_n,
                        identity_keys=identity_keys,
                    )
                )
    if odoo_db:
        from .odoo import odoo_parallel, odoo_runs

        result.odoo, result.odoo_note = timed("odoo", odoo_runs, odoo_db, ns, flows)
        if "parallel" in passes:
            for flow in ("customers", "orders"):
                if flow in flows:
                    result.odoo_parallel.append(
                        timed(
                            f"odoo parallel {flow}",
                            odoo_parallel,
                            odoo_db,
                            parallel_n,
                            flow_type=flow,
                        )
                    )
    if "faults" in passes:
        from .faults import run_all

        result.faults = timed("faults", run_all)
    return result
