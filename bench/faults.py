"""The fault suite: each fault injected into a real run, then the damage counted.

Every case builds a fresh rig (both simulators, generated data), injects one fault through the
simulators' fault rules (:class:`~bbvisma.simulators.common.Faults`) or through the run itself,
runs the flow, clears the faults ("the outage is over") and runs it again, as the schedule
would. Then it checks, against the simulators' state and not against what the flow believes:

``duplicates``  records in Visma.net beyond one per source record (customers by name and
                e-mail, invoices by external reference; the orders cases count the customers
                they create too). Must be 0.
``lost``        source records neither in Visma.net nor parked with a cause. Must be 0.
``parked``      source records whose last result is PARK (with its cause).
``watermark``   every record the faulty run did not finish is read again by the next run (the
                watermark never skips one).
``log``         the RecordResults tell the truth: a create/update/skip names a target record
                that exists in Visma.net; a park/error has a message and a cause; every
                record this flow wrote to Visma.net appears in some result; a record parked as
                refused is not in Visma.net unlinked ("stuck").

:func:`run_case` returns a :class:`FaultOutcome` (one row of the table printed by
``python -m bench faults``); ``tests/test_fault_suite.py`` asserts every row.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bbvisma.engine import Action, RecordResult
from bbvisma.linkstore import Link, LinkStore, MemoryLinkStore

from .measure import CountingSink, flow_class
from .rig import Rig, SqliteDocumentCache, make_rig

#: records per case: small enough for the test suite, large enough for several batches
RECORDS = 10
BATCH = 4
#: records and batch of the orders cases with the per-run document index: one batch with
#: enough receipts to create for the index (Flow.INDEX_THRESHOLD)
INDEXED = 24


# --------------------------------------------------------------------------------------------
# What a flow's records are, in the source and in Visma.net
# --------------------------------------------------------------------------------------------
class Subject:
    """How to find a flow's source records in the simulators' state."""

    flow = ""

    def source_keys(self, rig: Rig) -> set[str]:
        raise NotImplementedError

    def in_visma(self, rig: Rig) -> set[str]:
        """Source keys found in Visma.net by their deterministic key."""
        raise NotImplementedError

    def duplicates(self, rig: Rig) -> int:
        raise NotImplementedError

    def target_exists(self, rig: Rig, target_key: str) -> bool:
        raise NotImplementedError

    def describe_duplicates(self, rig: Rig) -> str:
        return str(self.duplicates(rig))

    def written_targets(self, rig: Rig) -> set[str]:
        """Target keys of the records this flow's runs created in Visma.net."""
        raise NotImplementedError


class CustomerSubject(Subject):
    flow = "customers"

    def source_keys(self, rig: Rig) -> set[str]:
        with rig.bb_sim.lock:
            return set(rig.bb_sim.company(rig.api_key).debtors)

    def _names(self, rig: Rig) -> dict[str, str]:
        with rig.bb_sim.lock:
            return {k: d["name"] for k, d in rig.bb_sim.company(rig.api_key).debtors.items()}

    def in_visma(self, rig: Rig) -> set[str]:
        names = self._names(rig)
        with rig.visma_sim.lock:
            present = {c.get("name") for c in rig.visma_sim.customers.values()}
        return {key for key, name in names.items() if name in present}

    def duplicates(self, rig: Rig) -> int:
        names = set(self._names(rig).values())
        with rig.visma_sim.lock:
            counted = Counter(
                c.get("name") for c in rig.visma_sim.customers.values() if c.get("name") in names
            )
            emails = Counter(
                ((c.get("mainContact") or {}).get("email") or "").lower()
                for c in rig.visma_sim.customers.values()
            )
        by_name = sum(n - 1 for n in counted.values() if n > 1)
        by_email = sum(n - 1 for e, n in emails.items() if e and n > 1)
        return max(by_name, by_email)

    def target_exists(self, rig: Rig, target_key: str) -> bool:
        with rig.visma_sim.lock:
            return target_key in rig.visma_sim.customers

    def written_targets(self, rig: Rig) -> set[str]:
        names = set(self._names(rig).values())
        with rig.visma_sim.lock:
            return {n for n, c in rig.visma_sim.customers.items() if c.get("name") in names}


class ProductSubject(Subject):
    flow = "products"

    def source_keys(self, rig: Rig) -> set[str]:
        factory = rig.factory
        with rig.bb_sim.lock:
            ids = list(rig.bb_sim.company(rig.api_key).receipts)
        return {product.sku for i in ids for product, _qty in factory.plan(i).lines}

    def in_visma(self, rig: Rig) -> set[str]:
        with rig.visma_sim.lock:
            return set(rig.visma_sim.inventory) & self.source_keys(rig)

    def duplicates(self, rig: Rig) -> int:
        return 0  # Visma.net keys items by inventoryNumber: a second create is refused

    def target_exists(self, rig: Rig, target_key: str) -> bool:
        with rig.visma_sim.lock:
            return target_key in rig.visma_sim.inventory

    def written_targets(self, rig: Rig) -> set[str]:
        return self.in_visma(rig)


class OrderSubject(Subject):
    """Receipts -> invoices; the customers the orders flow creates are checked too."""

    flow = "orders"
    prefix = "BB-"

    def source_keys(self, rig: Rig) -> set[str]:
        with rig.bb_sim.lock:
            return {str(k) for k in rig.bb_sim.company(rig.api_key).receipts}

    def _refs(self, rig: Rig) -> Counter[str]:
        with rig.visma_sim.lock:
            docs = [*rig.visma_sim.invoices.values(), *rig.visma_sim.credit_notes.values()]
        return Counter(d.get("externalReference") for d in docs if d.get("externalReference"))

    def in_visma(self, rig: Rig) -> set[str]:
        refs = self._refs(rig)
        return {key for key in self.source_keys(rig) if refs.get(self.prefix + key)}

    def duplicates(self, rig: Rig) -> int:
        documents = sum(n - 1 for n in self._refs(rig).values() if n > 1)
        return documents + CustomerSubject().duplicates(rig)

    def describe_duplicates(self, rig: Rig) -> str:
        documents = sum(n - 1 for n in self._refs(rig).values() if n > 1)
        customers = CustomerSubject().duplicates(rig)
        return f"{documents} document(s), {customers} customer(s)"

    def target_exists(self, rig: Rig, target_key: str) -> bool:
        with rig.visma_sim.lock:
            return target_key in rig.visma_sim.invoices or target_key in rig.visma_sim.credit_notes

    def written_targets(self, rig: Rig) -> set[str]:
        with rig.visma_sim.lock:
            return set(rig.visma_sim.invoices) | set(rig.visma_sim.credit_notes)


SUBJECTS: dict[str, Subject] = {
    "customers": CustomerSubject(),
    "products": ProductSubject(),
    "orders": OrderSubject(),
}


# --------------------------------------------------------------------------------------------
# Sinks that misbehave on purpose
# --------------------------------------------------------------------------------------------
class WorkerKilled(BaseException):
    """Like the SIGTERM/KeyboardInterrupt that ends a worker: not an Exception, so no flow
    code may catch it."""


class FaultSink(CountingSink):
    """Keeps every result and the watermarks the engine hands over; optionally calls
    ``hook`` after ``after`` records (credentials rotated, worker killed ...)."""

    def __init__(self, *, after: int | None = None, hook: Callable[[], None] | None = None):
        super().__init__(keep=True)
        self.after = after
        self.hook = hook
        self.watermark: str | None = None
        self._fired = False
        self._lock = threading.Lock()

    def record(self, result: RecordResult) -> None:
        with self._lock:
            super().record(result)
            fire = (
                self.hook is not None
                and not self._fired
                and self.after is not None
                and len(self.results) >= self.after
            )
            if fire:
                self._fired = True
        if fire:
            self.hook()

    def batch_done(self, watermark: str | None, results: list[RecordResult]) -> None:
        super().batch_done(watermark, results)
        if watermark is not None:
            self.watermark = watermark  # what the Odoo flow record would store


class LockStep:
    """Makes two concurrent runs take turns at Visma.net, one request each: A, B, A, B ...

    Two runs started at once race; which one wins a race depends on the thread scheduler, so a
    test of "two runs at once" would be flaky. In lock-step the worst interleaving for
    lookup-before-create happens every time (both look a record up before either creates it),
    and the outcome is reproducible. A thread that finishes calls :meth:`done`; the other then
    goes on alone. ``timeout`` only guards against a hang (a turn not taken within it passes).

    A thread that waits for a record's guard (:class:`GatedLinks`) is :meth:`aside` meanwhile:
    its turns pass to the other thread, which holds the guard and must go on to release it.
    """

    def __init__(self, timeout: float = 2.0):
        self.timeout = timeout
        self._cond = threading.Condition()
        self._order: list[int] = []
        self._turn = 0
        self._done: set[int] = set()
        self._aside: set[int] = set()

    def join(self) -> None:
        with self._cond:
            self._order.append(threading.get_ident())

    def enter(self) -> None:
        me = threading.get_ident()
        with self._cond:
            if me not in self._order:
                return  # not a participant (e.g. the dispatcher)
            self._cond.wait_for(lambda: self._may_go(me), timeout=self.timeout)

    def leave(self) -> None:
        me = threading.get_ident()
        with self._cond:
            if me not in self._order:
                return
            self._turn = (self._order.index(me) + 1) % len(self._order)
            self._cond.notify_all()

    def done(self) -> None:
        with self._cond:
            self._done.add(threading.get_ident())
            self._cond.notify_all()

    @contextlib.contextmanager
    def aside(self) -> Iterator[None]:
        """While the calling thread waits for something outside Visma.net, it takes no turns."""
        me = threading.get_ident()
        with self._cond:
            self._aside.add(me)
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._aside.discard(me)
                self._cond.notify_all()

    def _may_go(self, me: int) -> bool:
        current = self._order[self._turn]
        return current == me or current in self._done or current in self._aside


class WrappedLinks(LinkStore):
    """A link store that hands every call to the store it wraps; subclasses change one."""

    def __init__(self, links: LinkStore):
        self.links = links

    def get(self, entity: str, source_key: str) -> Link | None:
        return self.links.get(entity, source_key)

    def get_many(self, entity: str, source_keys: Iterable[str]) -> dict[str, Link]:
        return self.links.get_many(entity, source_keys)

    def put(self, entity, source_key, target_key, content_hash, meta=None, *, durable=True) -> Link:
        return self.links.put(entity, source_key, target_key, content_hash, meta, durable=durable)

    def find_by_target(self, entity: str, target_key: str) -> Link | None:
        return self.links.find_by_target(entity, target_key)

    def guard(self, entity: str, source_key: str) -> contextlib.AbstractContextManager:
        return self.links.guard(entity, source_key)


class GatedLinks(WrappedLinks):
    """The rig's link store, whose :meth:`guard` steps aside from the :class:`LockStep` while
    it waits (the guard's holder needs the turns to finish and release it)."""

    def __init__(self, links: LinkStore, gate: LockStep):
        super().__init__(links)
        self.gate = gate

    @contextlib.contextmanager
    def guard(self, entity: str, source_key: str) -> Iterator[None]:
        with contextlib.ExitStack() as held:
            with self.gate.aside():
                held.enter_context(self.links.guard(entity, source_key))
            yield


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------
class CrashableLinks(WrappedLinks):
    """The rig's link store as PostgreSQL keeps it for the Odoo layer: a put with
    ``durable=False`` is visible at once but reaches the disk only with the next synchronous
    commit -- a durable put, or the commit that ends a batch (:meth:`flush`, called by the
    sink); :meth:`crash` loses every put that had not reached it, as a crash of PostgreSQL
    would."""

    def __init__(self, links: MemoryLinkStore):
        super().__init__(links)
        #: ``(entity, source key, link before the put)`` of the puts not on disk yet
        self._unflushed: list[tuple[str, str, Link | None]] = []

    def put(self, entity, source_key, target_key, content_hash, meta=None, *, durable=True) -> Link:
        before = self.links.get(entity, source_key)
        link = self.links.put(entity, source_key, target_key, content_hash, meta)
        if durable:
            self.flush()  # the WAL is flushed in order: everything before it is on disk too
        else:
            self._unflushed.append((entity, str(source_key), before))
        return link

    def flush(self) -> None:
        self._unflushed.clear()

    def crash(self) -> int:
        """Lose the puts not on disk yet; returns how many were lost."""
        lost = len(self._unflushed)
        for entity, source_key, before in reversed(self._unflushed):
            if before is None:
                self.links.delete(entity, source_key)
            else:
                self.links.put(
                    entity, source_key, before.target_key, before.content_hash, before.meta
                )
        self._unflushed.clear()
        return lost


class CrashSink(FaultSink):
    """Ends each batch with the commit that flushes its links (the Odoo sink's counts)."""

    def __init__(self, links: CrashableLinks, **kwargs: Any):
        super().__init__(**kwargs)
        self.links = links

    def batch_done(self, watermark: str | None, results: list[RecordResult]) -> None:
        self.links.flush()
        super().batch_done(watermark, results)


@dataclass
class FaultCase:
    """One fault. ``arrange(rig)`` injects it before the first run and may return a sink
    (for faults that happen through the run itself); ``concurrent`` starts two runs at once."""

    name: str
    flow: str
    arrange: Callable[[Rig], FaultSink | None]
    concurrent: bool = False
    #: a known defect this case exposes (shown in the table; the test marks it xfail)
    known_defect: str | None = None
    records: int = RECORDS
    batch: int = BATCH

    @property
    def id(self) -> str:
        return f"{self.flow}:{self.name}"


@dataclass
class FaultOutcome:
    case: str
    flow: str
    records: int
    duplicates: int
    lost: int
    parked: int
    first_run: dict[str, int]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.duplicates and not self.lost and not self.problems

    known_defect: str | None = None

    @property
    def outcome(self) -> str:
        if self.ok:
            return "ok"
        text = "FAIL: " + "; ".join(self.problems or ["duplicates or lost records"])
        return text + (" (known defect)" if self.known_defect else "")


def _visma_path(flow: str) -> str:
    return {
        "customers": r"^/v1/customer$",
        "products": r"^/v1/inventory$",
        "orders": r"^/v2/customerinvoice$",
    }[flow]


def _add(kind: str, path: str, **params: Any) -> Callable[[Rig], None]:
    def arrange(rig: Rig) -> None:
        sim = rig.bb_sim if path.startswith("/api/") else rig.visma_sim
        sim.faults.add(kind, path=path, **params)

    return arrange


def _rotate_visma_secret(rig: Rig) -> FaultSink:
    """After 4 records the Visma.net client secret is changed (by an admin, in Visma) and the
    tokens are revoked: every further call fails authentication."""

    def rotate() -> None:
        with rig.visma_sim.lock:
            client = rig.visma_sim.clients[rig.visma_credentials["client_id"]]
            client["client_secret"] = "rotated-" + client["client_secret"]
            for token in rig.visma_sim.tokens.values():
                token["expires_at"] = 0.0

    return FaultSink(after=4, hook=rotate)


def _restore_visma_secret(rig: Rig) -> None:
    with rig.visma_sim.lock:
        client = rig.visma_sim.clients[rig.visma_credentials["client_id"]]
        client["client_secret"] = rig.visma_credentials["client_secret"]


def _bb_credentials_refused(after: int) -> Callable[[Rig], None]:
    """From the ``after``-th BuchhaltungsButler request on, the server refuses the API
    credentials (HTTP 401, error 3 -- its documented answer to a changed API secret)."""

    def arrange(rig: Rig) -> None:
        status, body = rig.bb_sim.contract.error_body("/receipts/get", 3)
        rig.bb_sim.faults.add(
            "status", path=r"^/api/v1/", after=after, times=None, status=status, body=body
        )

    return arrange


def _kill_after(k: int) -> Callable[[Rig], FaultSink]:
    def arrange(rig: Rig) -> FaultSink:
        def kill() -> None:
            raise WorkerKilled(f"worker killed after {k} records")

        return FaultSink(after=k, hook=kill)

    return arrange


def _database_crash_after(k: int) -> Callable[[Rig], FaultSink]:
    """PostgreSQL crashes (and the worker with it) after ``k`` records: the links the batch
    in flight committed without a WAL flush of their own are lost."""

    def arrange(rig: Rig) -> FaultSink:
        rig.links = links = CrashableLinks(rig.links)

        def crash() -> None:
            lost = links.crash()
            raise WorkerKilled(f"PostgreSQL crashed after {k} records, {lost} link(s) lost")

        return CrashSink(links, after=k, hook=crash)

    return arrange


def _compose(*steps: Callable[[Rig], Any]) -> Callable[[Rig], FaultSink | None]:
    def arrange(rig: Rig) -> FaultSink | None:
        sink = None
        for step in steps:
            sink = step(rig) or sink
        return sink

    return arrange


#: defects the suite exposes, by flow (see the README's Benchmarks section); a fix makes the
#: strict xfail of tests/test_fault_suite.py fail, and the entry must then be removed here.
#: Fixed: "two runs at once" for customers (a create refused as 'already exists' was parked and
#: its refusal overwrote the other run's link) and orders (both runs created the invoice) --
#: the engine writes each record under the link store's guard and adopts a record refused as
#: existing (bbvisma/engine.py, bbvisma/flows/customers.py).
KNOWN_DEFECTS: dict[str, str] = {}


def build_cases() -> list[FaultCase]:
    """Every fault, for each flow where it means something."""
    cases: list[FaultCase] = []
    for flow in ("customers", "products", "orders"):
        create = _visma_path(flow)
        cases += [
            FaultCase(
                "timeout on create (committed, answer lost)",
                flow,
                _add("timeout", create, method="POST", after=2, times=2, seconds=120),
            ),
            FaultCase("5xx burst", flow, _add("status", r"^/v\d/", after=6, times=6, status=503)),
            FaultCase(
                "429 storm", flow, _add("rate_limit", r"^/v\d/", after=4, times=12, retry_after=30)
            ),
            FaultCase(
                "malformed JSON",
                flow,
                _compose(
                    _add("malformed", r"^/v\d/", method="GET", after=3, times=3),
                    _add("malformed", create, method="POST", after=1, times=1),
                ),
            ),
            FaultCase("wrong Visma.net credentials mid-run", flow, _rotate_visma_secret),
            FaultCase(
                "connection dropped after commit",
                flow,
                _add("drop_after_commit", create, method="POST", after=3, times=2),
            ),
            FaultCase("worker killed mid-batch", flow, _kill_after(BATCH + 2)),
            FaultCase("PostgreSQL crashed mid-batch", flow, _database_crash_after(BATCH + 2)),
            FaultCase(
                "two runs at once",
                flow,
                lambda rig: None,
                concurrent=True,
                known_defect=KNOWN_DEFECTS.get(flow),
            ),
        ]
    # orders with the per-run document index (documents_since, set by the rig, and a batch
    # with enough receipts to create): lookups before creates come from one list read, so a
    # lost answer must be resolved by a real lookup, never by that index
    create = _visma_path("orders")
    indexed = {"records": INDEXED, "batch": INDEXED}
    cases += [
        FaultCase(
            "timeout on create (committed, answer lost), per-run index",
            "orders",
            _add("timeout", create, method="POST", after=2, times=2, seconds=120),
            **indexed,
        ),
        FaultCase(
            "connection dropped after commit, per-run index",
            "orders",
            _add("drop_after_commit", create, method="POST", after=3, times=2),
            **indexed,
        ),
        FaultCase("worker killed mid-batch, per-run index", "orders", _kill_after(5), **indexed),
        FaultCase(
            "PostgreSQL crashed mid-batch, per-run index",
            "orders",
            _database_crash_after(5),
            **indexed,
        ),
        FaultCase("two runs at once, per-run index", "orders", lambda rig: None, True, **indexed),
    ]
    # the source side: debtor pages; receipt pages and files (read per record by products
    # and orders)
    for flow in ("customers", "products", "orders"):
        reads = (
            _add("status", r"/get/debtors$", times=3, status=504)
            if flow == "customers"
            else _compose(
                _add("timeout", r"/receipts/get/\d+$", after=2, times=2, seconds=120),
                _add("status", r"/receipts/get", after=4, times=3, status=500),
            )
        )
        cases += [
            FaultCase("BB timeouts and 5xx on reads", flow, reads),
            FaultCase("BB malformed JSON", flow, _add("malformed", r"^/api/v1/", times=3)),
            FaultCase(
                "wrong BB credentials mid-run",
                flow,
                _bb_credentials_refused(0 if flow == "customers" else 4),
            ),
        ]
    return cases


# --------------------------------------------------------------------------------------------
# Running a case
# --------------------------------------------------------------------------------------------
@dataclass
class _Run:
    sink: FaultSink
    since: str | None
    killed: str | None = None
    aborted: str | None = None
    crashed: str | None = None


def _prepare(flow: str, records: int) -> tuple[Rig, Subject]:
    rig = make_rig(
        debtor_count=records,
        receipt_count=records if flow != "customers" else 0,
        pool_size=records,
        bb_quota=None,
    )
    if flow == "orders":  # the orders' SKUs exist (their own flow is tested apart)
        _run_once(rig, "products", FaultSink())
        rig.documents.close()
        rig.documents = SqliteDocumentCache()  # orders download their files themselves
    return rig, SUBJECTS[flow]


def _run_once(rig: Rig, flow: str, sink: FaultSink, batch: int = BATCH) -> _Run:
    since = rig.watermarks.get(flow)
    run = _Run(sink, since)
    ctx = rig.context(flow, sink=sink, batch_size=batch)
    try:
        report = flow_class(flow)(ctx).run(since=since)
        run.aborted = report.aborted
    except WorkerKilled as exc:
        run.killed = str(exc)
    except Exception as exc:  # the engine must not raise: record it as a finding
        run.crashed = f"{type(exc).__name__}: {exc}"
    if sink.watermark is not None:
        rig.watermarks[flow] = sink.watermark
    return run


def run_case(case: FaultCase, records: int | None = None) -> FaultOutcome:
    rig, subject = _prepare(case.flow, records or case.records)
    try:
        return _run_case(case, rig, subject)
    finally:
        rig.close()


def _run_case(case: FaultCase, rig: Rig, subject: Subject) -> FaultOutcome:
    flow = case.flow
    keys = subject.source_keys(rig)
    sink = case.arrange(rig) or FaultSink()
    runs: list[_Run] = []
    if case.concurrent:
        other = FaultSink()
        pair: list[_Run] = []
        gate = LockStep()
        rig.visma_app.gate = gate
        links, rig.links = rig.links, GatedLinks(rig.links, gate)
        barrier = threading.Barrier(2)

        def start(s: FaultSink) -> None:
            gate.join()
            barrier.wait()
            try:
                pair.append(_run_once(rig, flow, s, case.batch))
            finally:
                gate.done()

        threads = [threading.Thread(target=start, args=(s,)) for s in (sink, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rig.visma_app.gate = None
        rig.links = links
        runs += pair
    else:
        runs.append(_run_once(rig, flow, sink, case.batch))
    first = Counter()
    for run in runs:
        first.update(run.sink.counts)
    # the outage is over (credentials fixed, network back): the schedule runs again
    rig.visma_sim.faults.clear()
    rig.bb_sim.faults.clear()
    _restore_visma_secret(rig)
    unfinished = keys - {
        r.source_key
        for run in runs
        for r in run.sink.results
        if r.action in (Action.CREATE, Action.UPDATE, Action.SKIP, Action.PARK)
    }
    second = _run_once(rig, flow, FaultSink(), case.batch)
    runs.append(second)
    # a quiet run: nothing left to do, nothing stuck
    third = _run_once(rig, flow, FaultSink(), case.batch)
    runs.append(third)
    return _judge(case, rig, subject, keys, runs, unfinished, dict(first))


def _judge(
    case: FaultCase,
    rig: Rig,
    subject: Subject,
    keys: set[str],
    runs: list[_Run],
    unfinished: set[str],
    first: dict[str, int],
) -> FaultOutcome:
    problems: list[str] = []
    notes: list[str] = []
    last: dict[str, RecordResult] = {}
    for run in runs:
        if run.crashed:
            problems.append(f"the engine raised: {run.crashed}")
        if run.killed:
            notes.append(run.killed)
        if run.aborted:
            notes.append(f"aborted: {run.aborted[:90]}")
        for result in run.sink.results:
            last[result.source_key] = result
            problems += _untruthful(result, rig, subject)
    in_visma = subject.in_visma(rig)
    parked = {k for k in keys if k in last and last[k].action is Action.PARK}
    lost = keys - in_visma - parked
    stuck = {k for k in parked & in_visma if not last[k].target_key}
    if stuck:
        problems.append(
            f"{len(stuck)} parked as refused although in Visma.net, unlinked "
            f"(e.g. {sorted(stuck)[0]}: {last[sorted(stuck)[0]].message[:80]})"
        )
    linked = {r.target_key for run in runs for r in run.sink.results if r.target_key}
    unlogged = subject.written_targets(rig) - linked
    if unlogged:
        problems.append(f"{len(unlogged)} written to Visma.net but in no result")
    # the watermark never skips a record: what the faulty run did not finish, the next reads
    second_read = {r.source_key for r in runs[-2].sink.results}
    skipped = unfinished - second_read
    if skipped:
        problems.append(f"watermark skipped {len(skipped)} unfinished record(s)")
    quiet = runs[-1].sink.counts
    if quiet.get("create") or quiet.get("update") or quiet.get("error"):
        problems.append(f"the run after recovery still works: {dict(quiet)}")
    if lost:
        problems.append(f"{len(lost)} lost (e.g. {sorted(lost)[0]})")
    duplicates = subject.duplicates(rig)
    if duplicates:
        problems.append(f"duplicates in Visma.net: {subject.describe_duplicates(rig)}")
    return FaultOutcome(
        case.id,
        case.flow,
        len(keys),
        duplicates,
        len(lost),
        len(parked),
        first,
        list(dict.fromkeys(problems)),
        list(dict.fromkeys(notes)),
        case.known_defect,
    )


def _untruthful(result: RecordResult, rig: Rig, subject: Subject) -> list[str]:
    if result.action in (Action.CREATE, Action.UPDATE, Action.SKIP):
        if not result.target_key:
            return [f"{result.source_key}: {result.action.value} without a target key"]
        if not subject.target_exists(rig, str(result.target_key)):
            return [
                f"{result.source_key}: logged {result.action.value} of {result.target_key}, "
                "which is not in Visma.net"
            ]
        return []
    if not result.message or not result.cause_key:
        return [f"{result.source_key}: {result.action.value} without message or cause"]
    return []


def run_all(cases: list[FaultCase] | None = None) -> list[FaultOutcome]:
    return [run_case(case) for case in cases or build_cases()]


def table(outcomes: list[FaultOutcome]) -> str:
    """Markdown table: fault, records, duplicates, lost, parked, outcome."""
    lines = [
        "| fault | flow | records | duplicates | lost | parked | faulty run | outcome |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for o in outcomes:
        first = ", ".join(f"{k} {v}" for k, v in sorted(o.first_run.items())) or "nothing"
        if o.notes:
            first += " -- " + "; ".join(o.notes)
        name = o.case.split(":", 1)[1]
        outcome = o.outcome.replace("|", "/")
        lines.append(
            f"| {name} | {o.flow} | {o.records} | {o.duplicates} | {o.lost} | {o.parked} | "
            f"{first.replace('|', '/')} | {outcome} |"
        )
    return "\n".join(lines)
