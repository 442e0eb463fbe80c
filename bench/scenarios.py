"""Two scenarios beside the plain runs: a quota-bound run, and batches spread over workers.

**Quota** (:func:`quota_run`). Visma.net grants a fixed window of N requests per clock hour
(historic: 15 000/h); BuchhaltungsButler 100 requests per sliding minute. Both are scaled down
(here: Visma.net 500/h, the historic test-client quota) and run on the FakeClock: the client's
:class:`~bbvisma.transport.HeaderPacer` reads ``X-RateLimit-Remaining/-Reset`` and waits for
the next window, the BB client's limiter waits for the minute to roll. The run must finish as
early as the quota allows -- its virtual duration equals the theoretical minimum -- with zero
429 answers.

**Parallel batches** (:func:`parallel_run`). What queue_job does with a run split into batch
jobs, simulated with threads: one dispatcher reads the source and enqueues batches; W workers
each build their own flow instance (as each queue_job job does) over shared clients and ONE
shared link store, take batches and handle them (``Flow.run_items``, as each batch job does in
Odoo: the batch's records, then the flow's check of the batch, then its results). Every batch
is enqueued twice on purpose (a double-clicked "Run now", a requeued job). With identity keys
(queue_job's ``identity_key``: the same job is not enqueued twice) the copy is dropped; without
them, the copy runs concurrently with the original -- the case the Odoo layer must prevent.
What is checked: every Visma.net write addressed a distinct record (writes per record), no
duplicate record in Visma.net, every source record ends synced.

Which one is measured here: the pure simulation with threads (shared MemoryLinkStore,
identity keys in the simulated queue); the Odoo wiring is measured by ``--odoo``.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bbvisma.engine import SourceItem
from bbvisma.linkstore import MemoryLinkStore

from .measure import CountingSink, flow_class, measure_run, set_up_prerequisites
from .rig import make_rig

HOUR = 3600.0


# --------------------------------------------------------------------------------------------
# Quota
# --------------------------------------------------------------------------------------------
def fixed_window_minimum(
    calls: int, quota: int, start: float, *, used: int = 0, window: float = HOUR
) -> float:
    """Seconds from ``start`` until the last of ``calls`` requests can be sent under a fixed,
    clock-aligned window of ``quota`` requests per ``window`` of which ``used`` are spent."""
    free = max(0, quota - used)
    if calls <= free:
        return 0.0
    first = math.floor(start / window)
    last = first + math.ceil((calls - free) / quota)
    return last * window - start


def sliding_window_minimum(calls: int, quota: int, window: float = 60.0) -> float:
    """Seconds until the last of ``calls`` requests under ``quota`` per sliding ``window``."""
    return math.floor((calls - 1) / quota) * window if calls > 0 else 0.0


@dataclass
class QuotaResult:
    flow: str
    system: str
    records: int
    quota: str
    calls: int
    virtual_s: float
    minimum_s: float
    too_many: int
    outcome: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.too_many == 0 and abs(self.virtual_s - self.minimum_s) <= max(
            60.0, 0.01 * self.minimum_s
        )


def quota_run(
    n: int = 1000, visma_quota: int = 500, start_offset: float = 1800.0
) -> list[QuotaResult]:
    """Customers against a Visma.net hourly quota; products against BB's minute quota."""
    results = []
    rig = make_rig(debtor_count=n, receipt_count=n, visma_quota=visma_quota, indexed=True)
    try:
        rig.clock.advance(start_offset)  # start in the middle of a quota window
        start = rig.clock.now()
        m, _ = measure_run(rig, "customers", "quota", n=n)
        results.append(
            QuotaResult(
                "customers",
                "Visma.net",
                n,
                f"{visma_quota}/h (fixed window)",
                m.visma_calls,
                m.virtual_s,
                fixed_window_minimum(m.visma_calls, visma_quota, start),
                rig.visma_app.statuses.get(429, 0),
                m.counts,
            )
        )
        # products: one file download per receipt under BB's 100/min; its Visma.net calls
        # still count against the hourly window, so the minimum is the larger of the two
        start = rig.clock.now()
        used = _used_in_window(rig, start)
        m, _ = measure_run(rig, "products", "quota", n=n)
        results.append(
            QuotaResult(
                "products",
                "BuchhaltungsButler + Visma.net",
                n,
                f"100/min (sliding) + {visma_quota}/h",
                m.bb_calls,
                m.virtual_s,
                max(
                    sliding_window_minimum(m.bb_calls, 100),
                    fixed_window_minimum(m.visma_calls, visma_quota, start, used=used),
                ),
                rig.bb_app.statuses.get(429, 0) + rig.visma_app.statuses.get(429, 0),
                m.counts,
            )
        )
    finally:
        rig.close()
    return results


def _used_in_window(rig: Any, now: float) -> int:
    """Requests the Visma.net simulator counted in the quota window containing ``now``."""
    window = int(now // HOUR)
    with rig.visma_sim.lock:
        return sum(used for w, used in rig.visma_sim.quota.values() if w == window)


# --------------------------------------------------------------------------------------------
# Parallel batches
# --------------------------------------------------------------------------------------------
@dataclass
class ParallelResult:
    flow: str
    records: int
    workers: int
    batches: int
    identity_keys: bool
    enqueued: int
    dropped_by_identity: int
    handled: int
    outcome: dict[str, int]
    writes: int
    records_written_twice: int
    duplicates_in_visma: int
    wall_s: float
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.records_written_twice == 0 and self.duplicates_in_visma == 0


class BatchQueue:
    """A job queue with queue_job's identity-key rule: a job whose identity key is already
    queued (or done) in this run is not enqueued again."""

    def __init__(self, identity_keys: bool):
        self.identity_keys = identity_keys
        self._queue: queue.Queue[tuple[str, list[SourceItem]] | None] = queue.Queue()
        self._seen: set[str] = set()
        self.enqueued = 0
        self.dropped = 0

    def enqueue(self, identity: str, batch: list[SourceItem]) -> None:
        if self.identity_keys and identity in self._seen:
            self.dropped += 1
            return
        self._seen.add(identity)
        self.enqueued += 1
        self._queue.put((identity, batch))

    def close(self, workers: int) -> None:
        for _ in range(workers):
            self._queue.put(None)

    def get(self) -> tuple[str, list[SourceItem]] | None:
        return self._queue.get()


def parallel_run(
    flow_type: str = "customers",
    n: int = 1000,
    *,
    workers: int = 4,
    batch_size: int = 50,
    identity_keys: bool = True,
    settings: dict[str, Any] | None = None,
) -> ParallelResult:
    """One run of ``flow_type`` split into batches over ``workers`` threads (see above)."""
    rig = make_rig(debtor_count=n, receipt_count=n if flow_type != "customers" else 0, indexed=True)
    rig.links = MemoryLinkStore()
    try:
        # the orders flow needs its SKUs and customers: synced first, single-threaded
        set_up_prerequisites(rig, [flow_type], n=n)
        rig.clear_logs()
        cls = flow_class(flow_type)
        dispatcher = cls(rig.context(flow_type, settings=settings))
        jobs = BatchQueue(identity_keys)
        items = list(dispatcher.source_items(None))
        batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
        for batch in batches:
            identity = f"{flow_type}:{batch[0].key}..{batch[-1].key}:{len(batch)}"
            jobs.enqueue(identity, batch)
            jobs.enqueue(identity, batch)  # the same job a second time (see the docstring)
        jobs.close(workers)
        sink = _LockedSink(CountingSink())
        errors: list[str] = []

        def work() -> None:
            flow = cls(rig.context(flow_type, settings=settings, sink=sink, batch_size=batch_size))
            while True:
                job = jobs.get()
                if job is None:
                    return
                _identity, batch = job
                try:
                    flow.run_items(batch)
                except Exception as exc:  # a worker must not die silently: count it
                    with sink.lock:
                        errors.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=work, name=f"worker-{i}") for i in range(workers)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        writes = rig.visma_app.write_keys
        own = _own_writes(flow_type, writes)
        twice = sum(1 for count in own.values() if count > 1)
        return ParallelResult(
            flow_type,
            len(items),
            workers,
            len(batches),
            identity_keys,
            jobs.enqueued,
            jobs.dropped,
            sum(sink.sink.counts.values()),
            dict(sink.sink.counts),
            sum(own.values()),
            twice,
            duplicates_in_visma(rig, flow_type),
            wall,
            (errors + sink.sink.examples)[:3],
        )
    finally:
        rig.close()


class _LockedSink:
    """A sink shared by worker threads: one record or batch at a time."""

    def __init__(self, sink: CountingSink):
        self.sink = sink
        self.lock = threading.Lock()

    def record(self, result: Any) -> None:
        with self.lock:
            self.sink.record(result)

    def batch_done(self, watermark: str | None, results: list[Any]) -> None:
        with self.lock:
            self.sink.batch_done(watermark, results)


def _own_writes(flow_type: str, writes: Counter[str]) -> Counter[str]:
    """Writes to the flow's own records (creates by key, updates by path)."""
    prefix = {
        "customers": "/v1/customer",
        "products": "/v1/inventory",
        "orders": "/v2/customerinvoice",
    }[flow_type]
    out: Counter[str] = Counter()
    for key, count in writes.items():
        method, _, rest = key.partition(" ")
        if rest.startswith(prefix):
            out[rest if method == "POST" else rest.split(" ", 1)[0]] += count
    return out


def duplicates_in_visma(rig: Any, flow_type: str) -> int:
    """Records in Visma.net beyond one per source key: customers by name and e-mail (both are
    unique among generated debtors), invoices by external reference. Items are keyed by SKU in
    Visma.net itself, so they cannot be doubled."""
    sim = rig.visma_sim
    with sim.lock:
        if flow_type == "customers":
            names = Counter(c.get("name") for c in sim.customers.values())
            return sum(count - 1 for count in names.values() if count > 1)
        if flow_type == "orders":
            refs = Counter(
                (kind, d.get("externalReference"))
                for kind, table in (("inv", sim.invoices), ("cn", sim.credit_notes))
                for d in table.values()
                if d.get("externalReference")
            )
            return sum(count - 1 for count in refs.values() if count > 1)
        return 0
