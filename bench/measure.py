"""One measured run of one flow: calls, throughput, engine-side time, memory.

:func:`measure_run` runs a flow through the pure engine (``Flow.run``) on a :class:`~bench.rig.
Rig` and returns a :class:`RunMeasure`. The numbers and how they are obtained:

``visma_calls``      API requests that reached the Visma.net simulator (token requests apart)
``visma_writes``     POST/PUT requests among them
``bb_calls``         requests that reached the BuchhaltungsButler simulator
``bb_pages_repeated`` list pages (same path, filters and offset) read more than once in the run
``wall_s``           wall time of ``Flow.run``
``sim_s``            wall time spent inside the two simulators (:class:`~bench.rig.TimedApp`)
``engine_s``         ``wall_s - sim_s``: engine, flow, mapping, e-invoice reading, clients,
                     transport and the in-process HTTP round trip -- everything but the
                     simulated servers
``engine_cpu_ms_per_record`` the same in CPU time of the run's thread (``time.thread_time``),
                     which other processes on the machine do not inflate
``virtual_s``        time the FakeClock advanced: pacing waits (BuchhaltungsButler's 100/min,
                     Visma.net's hourly quota) and back-offs, which cost no wall time here
``peak_kib``/``retained_kib`` (with ``memory=True``) tracemalloc's peak during the run above
                     the level before it, and what was still allocated after it (the
                     simulators' new state, the link store -- data that lives in other
                     systems or the database in production); ``transient_kib`` = peak -
                     retained: the working set of the run itself, which must not grow with N
``sqlite_peak_kib``/``sqlite_retained_kib`` (with ``memory=True``) the same for SQLite's own
                     heap (page caches, statements), which tracemalloc cannot see: SQLite's
                     ``sqlite3_memory_highwater``/``sqlite3_memory_used`` counters, read
                     through the library the ``sqlite3`` module uses (:class:`SqliteHeap`;
                     ``None`` where they cannot be read). A flow that keeps state in a
                     temporary database (the products catalog beyond its memory bound) is
                     judged on ``transient_kib + sqlite_transient_kib``
``rss_growth_kib``   (with ``memory=True``, Linux) the process's resident set high-water mark
                     during the run (``VmHWM``, reset through ``/proc/self/clear_refs``) minus
                     its resident set before it. Coarse: it includes the retained data,
                     tracemalloc's own bookkeeping, and Python reuses memory freed by earlier
                     runs without the resident set growing; a cross-check that nothing outside
                     both heaps grows, not a target
"""

from __future__ import annotations

import ctypes
import gc
import math
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bbvisma.engine import Action, Flow, RecordResult, RunReport
from bbvisma.vismanet.client import DEFAULT_PAGE_SIZE

from .rig import Rig

#: the Visma.net list a flow's own records live in (its "master data" for the call budget)
ENTITY_TABLES = {
    "customers": ("customers", "/v1/customer"),
    "products": ("inventory", "/v1/inventory"),
    "orders": ("invoices", "/v1/customerinvoice"),
    "stock": ("adjustments", "/v1/inventoryadjustment"),
}


#: flows whose records the records of a flow need: a bench of that flow without them syncs
#: them first, unmeasured (an orders run on a company without its items would park every
#: receipt on its first missing SKU)
PREREQUISITES = {"orders": ("customers", "products")}


def flow_class(flow_type: str) -> type[Flow]:
    """The flow class from ``bbvisma.flows.FLOW_CLASSES`` (the registry the Odoo addon uses);
    flows not registered there yet are taken from their module."""
    from bbvisma import flows

    registered = getattr(flows, "FLOW_CLASSES", {})
    if flow_type in registered:
        return registered[flow_type]
    import importlib

    module = importlib.import_module(f"bbvisma.flows.{flow_type}")
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, Flow)
            and value.__module__ == module.__name__
        ):
            return value
    raise LookupError(f"no flow class for {flow_type!r}")


class SqliteHeap:
    """SQLite's heap counters (``sqlite3_memory_used``, ``sqlite3_memory_highwater``) from the
    SQLite library the ``sqlite3`` module is linked with; :attr:`available` is false where they
    cannot be read (then the figures are ``None``)."""

    def __init__(self) -> None:
        try:
            import _sqlite3

            lib = ctypes.CDLL(_sqlite3.__file__)  # the loaded module; its SQLite's symbols
            self._used = lib.sqlite3_memory_used
            self._highwater = lib.sqlite3_memory_highwater
        except (ImportError, OSError, AttributeError):
            self._used = self._highwater = None
            return
        self._used.restype = self._highwater.restype = ctypes.c_int64
        self._used.argtypes = []
        self._highwater.argtypes = [ctypes.c_int]

    @property
    def available(self) -> bool:
        return self._used is not None

    def start(self) -> int | None:
        """The bytes in use now; the high-water mark starts again from here."""
        if self._highwater is None:
            return None
        self._highwater(1)
        return self._used()

    def stop(self) -> tuple[int, int] | None:
        """``(bytes in use, high-water mark since start())``."""
        if self._used is None:
            return None
        return self._used(), self._highwater(0)


def _rss_kib(field_name: str) -> int | None:
    """``VmRSS``/``VmHWM`` of this process in KiB (Linux), ``None`` elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for text in status:
                if text.startswith(field_name + ":"):
                    return int(text.split()[1])
    except OSError:
        return None
    return None


def _rss_start() -> int | None:
    """Reset the resident set's high-water mark (Linux >= 4.0); the resident set now."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return None
    return _rss_kib("VmRSS")


class CountingSink:
    """A RunSink that keeps counts, causes and a few examples -- nothing that grows with N
    (but ``keep`` results when a test needs them)."""

    def __init__(self, *, keep: bool = False, examples: int = 3):
        self.counts: Counter[str] = Counter()
        self.causes: Counter[str] = Counter()
        self.examples: list[str] = []
        self.max_examples = examples
        self.results: list[RecordResult] | None = [] if keep else None
        self.watermarks: list[str | None] = []

    def record(self, result: RecordResult) -> None:
        action = result.action.value
        self.counts[action] += 1
        if result.action in (Action.PARK, Action.ERROR):
            self.causes[f"{action}:{_cause_family(result.cause_key)}"] += 1
            if len(self.examples) < self.max_examples:
                self.examples.append(f"{result.source_key}: {action} {result.message[:160]}")
        if self.results is not None:
            self.results.append(result)

    def batch_done(self, watermark: str | None, results: list[RecordResult]) -> None:
        self.watermarks.append(watermark)


def _cause_family(cause: str | None) -> str:
    """``missing_sku:BN000001`` -> ``missing_sku``: causes grouped for the report."""
    return (cause or "none").split(":", 1)[0]


@dataclass
class RunMeasure:
    flow: str
    n: int
    label: str
    items: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    causes: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    aborted: str | None = None
    visma_calls: int = 0
    visma_writes: int = 0
    visma_kinds: dict[str, int] = field(default_factory=dict)
    visma_page_lists: dict[str, int] = field(default_factory=dict)
    visma_429: int = 0
    bb_calls: int = 0
    bb_pages: int = 0
    bb_pages_repeated: int = 0
    bb_gets: int = 0
    wall_s: float = 0.0
    sim_s: float = 0.0
    cpu_s: float = 0.0
    sim_cpu_s: float = 0.0
    virtual_s: float = 0.0
    master_records: int = 0
    peak_kib: float | None = None
    retained_kib: float | None = None
    sqlite_peak_kib: float | None = None
    sqlite_retained_kib: float | None = None
    rss_growth_kib: float | None = None
    watermark: str | None = None

    # -- derived ------------------------------------------------------------------------------
    @property
    def written(self) -> int:
        return self.counts.get("create", 0) + self.counts.get("update", 0)

    @property
    def engine_s(self) -> float:
        return max(0.0, self.wall_s - self.sim_s)

    @property
    def engine_ms_per_record(self) -> float:
        return 1000.0 * self.engine_s / self.items if self.items else 0.0

    @property
    def engine_cpu_ms_per_record(self) -> float:
        """CPU time of the run's thread outside the simulators, per record: unlike the wall
        time, it does not grow when other processes compete for the CPU."""
        if not self.items:
            return 0.0
        return 1000.0 * max(0.0, self.cpu_s - self.sim_cpu_s) / self.items

    @property
    def records_per_s(self) -> float:
        return self.items / self.wall_s if self.wall_s else 0.0

    @property
    def visma_per_written(self) -> float | None:
        return self.visma_calls / self.written if self.written else None

    @property
    def bb_per_read(self) -> float | None:
        return self.bb_calls / self.items if self.items else None

    @property
    def transient_kib(self) -> float | None:
        if self.peak_kib is None or self.retained_kib is None:
            return None
        return max(0.0, self.peak_kib - max(0.0, self.retained_kib))

    @property
    def sqlite_transient_kib(self) -> float | None:
        if self.sqlite_peak_kib is None or self.sqlite_retained_kib is None:
            return None
        return max(0.0, self.sqlite_peak_kib - max(0.0, self.sqlite_retained_kib))

    @property
    def run_transient_kib(self) -> float | None:
        """The run's working set in both heaps: tracemalloc's transient plus SQLite's (their
        peaks may fall at different moments, so the sum is an upper bound)."""
        if self.transient_kib is None:
            return None
        return self.transient_kib + (self.sqlite_transient_kib or 0.0)

    @property
    def call_budget(self) -> float:
        """1.05 x records written + one page per pageSize of the flow's master data + one page
        for each other master-data list the run paged through unfiltered."""
        own = ENTITY_TABLES.get(self.flow, (None, None))[1]
        others = sum(1 for path in self.visma_page_lists if path != own)
        pages = math.ceil(self.master_records / DEFAULT_PAGE_SIZE) if self.master_records else 0
        return 1.05 * self.written + pages + others

    def as_dict(self) -> dict[str, Any]:
        data = dict(vars(self))
        for name in (
            "written",
            "engine_s",
            "engine_ms_per_record",
            "engine_cpu_ms_per_record",
            "records_per_s",
            "visma_per_written",
            "bb_per_read",
            "transient_kib",
            "sqlite_transient_kib",
            "run_transient_kib",
            "call_budget",
        ):
            data[name] = getattr(self, name)
        return data


def measure_run(
    rig: Rig,
    flow_type: str,
    label: str,
    *,
    n: int,
    settings: dict[str, Any] | None = None,
    memory: bool = False,
    batch_size: int = 100,
    sink: CountingSink | None = None,
) -> tuple[RunMeasure, RunReport]:
    """Run ``flow_type`` once on ``rig`` (since its stored watermark) and measure it."""
    sink = sink or CountingSink()
    ctx = rig.context(flow_type, settings=settings, sink=sink, batch_size=batch_size)
    rig.clear_logs()
    virtual_before = rig.clock.now()
    cls = flow_class(flow_type)
    since = rig.watermarks.get(flow_type)
    gc.collect()
    if memory:
        sqlite_heap = SqliteHeap()
        rss_base = _rss_start()
        sqlite_base = sqlite_heap.start()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
    started = time.perf_counter()
    cpu_started = time.thread_time()
    try:
        report = cls(ctx).run(since=since)
    finally:
        wall = time.perf_counter() - started
        cpu = time.thread_time() - cpu_started
        if memory:
            # the flow object is gone now: what is still allocated is retained state
            ctx = None
            gc.collect()
            current, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            sqlite_end = sqlite_heap.stop()
            rss_peak = _rss_kib("VmHWM") if rss_base is not None else None
    if report.watermark is not None:
        rig.watermarks[flow_type] = report.watermark
    m = RunMeasure(flow_type, n, label)
    m.items = report.items
    m.counts = {k: v for k, v in report.counts.items() if v}
    m.causes = dict(sink.causes)
    m.examples = list(sink.examples)
    m.aborted = report.aborted
    m.watermark = report.watermark
    vk = rig.visma_app.kinds
    m.visma_kinds = {k: v for k, v in vk.items() if k != "token"}
    m.visma_calls = sum(m.visma_kinds.values())
    m.visma_writes = vk.get("write", 0)
    m.visma_page_lists = dict(rig.visma_app.page_lists)
    m.visma_429 = rig.visma_app.statuses.get(429, 0)
    bk = rig.bb_app.kinds
    m.bb_pages = bk.get("bb_page", 0)
    m.bb_gets = bk.get("bb_get", 0)
    m.bb_calls = m.bb_pages + m.bb_gets
    m.bb_pages_repeated = sum(count - 1 for count in rig.bb_app.pages.values() if count > 1)
    m.wall_s = wall
    m.sim_s = rig.bb_app.seconds + rig.visma_app.seconds
    m.cpu_s = cpu
    m.sim_cpu_s = rig.bb_app.cpu_seconds + rig.visma_app.cpu_seconds
    m.virtual_s = rig.clock.now() - virtual_before
    table = ENTITY_TABLES.get(flow_type, (None, None))[0]
    m.master_records = len(getattr(rig.visma_sim, table, ()) or ()) if table else 0
    if memory:
        m.peak_kib = (peak - base) / 1024.0
        m.retained_kib = (current - base) / 1024.0
        if sqlite_base is not None and sqlite_end is not None:
            m.sqlite_retained_kib = (sqlite_end[0] - sqlite_base) / 1024.0
            m.sqlite_peak_kib = (sqlite_end[1] - sqlite_base) / 1024.0
        if rss_base is not None and rss_peak is not None:
            m.rss_growth_kib = float(rss_peak - rss_base)
    return m, report


def set_up_prerequisites(rig: Rig, flows: list[str], *, n: int) -> None:
    """Sync, unmeasured, the :data:`PREREQUISITES` of ``flows`` that they do not run
    themselves."""
    needed = [p for flow in flows for p in PREREQUISITES.get(flow, ()) if p not in flows]
    for flow_type in dict.fromkeys(needed):
        measure_run(rig, flow_type, "setup", n=n)
