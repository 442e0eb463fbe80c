"""The bench rig: both simulators in-process, both clients, and what persists between runs.

Differences from the test rig (``tests/flow_fixtures.py``), each for a measurement:

* every simulator sits behind a :class:`TimedApp`, which sums the wall time spent *inside* the
  simulator (request parsing, contract validation, state changes, file generation), so the
  engine-side time is the run's wall time minus that;
* BuchhaltungsButler reads are recorded with their paging (``limit``/``offset`` and the
  filters), so "each source page is read once" can be checked;
* the BuchhaltungsButler company is seeded from generators (:mod:`bench.datagen`) through
  :meth:`BBSimulator.add_records`; receipt files are generated on demand through the
  simulator's ``file_loader`` hook;
* the document cache lives in SQLite (:class:`SqliteDocumentCache`): like the table a
  production deployment keeps, it is outside the Python heap, so peak memory measures the
  engine and not a cache of 50 000 parsed documents.

One :class:`~bbvisma.simulators.common.FakeClock` drives both simulators, both clients' pacing
and back-off: quota waits cost virtual time, not wall time.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from bbvisma.buchhaltungsbutler.client import BBClient
from bbvisma.engine import ExchangeRecorder, FlowContext
from bbvisma.flows.defaults import default_mapping, default_value_maps
from bbvisma.linkstore import DocumentCache, LinkStore, MemoryLinkStore
from bbvisma.simulators.buchhaltungsbutler import BBSimulator
from bbvisma.simulators.buchhaltungsbutler import default_seed as bb_default_seed
from bbvisma.simulators.common import FakeClock, sim_http_client
from bbvisma.simulators.vismanet import VismaSimulator
from bbvisma.simulators.vismanet import default_seed as visma_default_seed
from bbvisma.vismanet.client import VismaClient

from .datagen import FILE_PREFIX, ReceiptFactory, debtors, receipts

BB_BASE = "http://127.0.0.1/api/v1"
VISMA_BASE = "http://127.0.0.1"


# --------------------------------------------------------------------------------------------
# Timing and counting middleware
# --------------------------------------------------------------------------------------------
class TimedApp:
    """WSGI middleware: time spent inside ``app`` and a classification of every API request.

    ``seconds`` sums the time over all threads; it is "the simulator's time" for a
    single-threaded run (parallel runs overlap, their wall time is reported as is).

    ``kinds`` counts requests by kind: ``write`` (POST/PUT/PATCH/DELETE), ``token``,
    ``item`` (GET of one record by key), ``lookup`` (GET of a list with a filter: a per-record
    search), ``page`` (GET of a list without filter: master data paged through), ``bb_page``
    (a BuchhaltungsButler list read), ``bb_get`` (a BuchhaltungsButler single get / write).
    ``pages`` counts each BuchhaltungsButler list page by (path, filters, offset), so a page read
    twice is visible; ``page_lists`` the Visma.net list endpoints read unfiltered.
    """

    #: query parameters that do not make a list read a per-record lookup
    PAGING = frozenset({"pagenumber", "pagesize", "expand"})

    def __init__(self, app: Any, *, source: bool = False):
        self.app = app
        self.source = source
        self.seconds = 0.0
        #: CPU time of the calling thread spent inside ``app`` (in-process: the same thread)
        self.cpu_seconds = 0.0
        self.kinds: Counter[str] = Counter()
        self.pages: Counter[tuple[str, str, int]] = Counter()
        self.page_lists: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        #: writes per target record ("POST /v1/customer number=10001", "PUT /v1/customer/10001")
        self.write_keys: Counter[str] = Counter()
        #: optional ``gate`` with ``enter()``/``leave()`` around each request (the fault suite's
        #: lock-step of two concurrent runs)
        self.gate: Any = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # requests, faults, clock ... of the simulator
        return getattr(self.app, name)

    def __call__(self, environ: dict, start_response: Any) -> list[bytes]:
        started = time.perf_counter()
        cpu_started = time.thread_time()
        seen: dict[str, int] = {}

        def capture(status: str, headers: Any, exc_info: Any = None) -> Any:
            seen["status"] = int(status.split()[0])
            return start_response(status, headers, exc_info)

        gate = self.gate
        if gate is not None and environ.get("PATH_INFO", "").startswith("/connect"):
            gate = None  # tokens are fetched under the client's lock: never make them wait
        if gate is not None:
            gate.enter()
        try:
            kind = self._classify(environ)
            return list(self.app(environ, capture))
        finally:
            if gate is not None:
                gate.leave()
            spent = time.perf_counter() - started
            cpu = time.thread_time() - cpu_started
            with self._lock:
                self.seconds += spent
                self.cpu_seconds += cpu
                if kind:
                    self.kinds[kind] += 1
                if "status" in seen:
                    self.statuses[seen["status"]] += 1

    def _classify(self, environ: dict) -> str | None:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if path.startswith("/_sim"):
            return None
        if self.source:
            if not path.endswith(("/get/debtors", "/receipts/get", "/transactions/get")):
                return "bb_get"
            body = environ["wsgi.input"].read()
            environ["wsgi.input"] = io.BytesIO(body)  # hand the body on to the simulator
            environ["CONTENT_LENGTH"] = str(len(body))
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                data = {}
            offset = int(data.pop("offset", 0) or 0)
            data.pop("api_key", None)
            with self._lock:
                self.pages[(path, json.dumps(data, sort_keys=True), offset)] += 1
            return "bb_page"
        if path.startswith("/connect"):
            return "token"
        if method != "GET":
            self._note_write(environ, method, path)
            return "write"
        segments = [s for s in path.split("/") if s]
        # /v1/<collection> or /v2/<collection> (+ /v1/inventory/itemClass style sub-lists)
        if len(segments) <= 2 or segments[-1] in LIST_LEAVES:
            params = {k.lower() for k in parse_qs(environ.get("QUERY_STRING", ""))}
            if params - self.PAGING:
                return "lookup"
            with self._lock:
                self.page_lists[path] += 1
            return "page"
        return "item"

    def _note_write(self, environ: dict, method: str, path: str) -> None:
        key = f"{method} {path}"
        if method == "POST" and "/action/" not in path:
            body = environ["wsgi.input"].read()
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                data = {}
            for name in WRITE_KEYS:
                value = data.get(name) if isinstance(data, dict) else None
                if isinstance(value, dict):
                    value = value.get("value")
                if value:
                    key += f" {name}={value}"
                    break
        with self._lock:
            self.write_keys[key] += 1

    def reset(self) -> None:
        with self._lock:
            self.write_keys.clear()
            self.seconds = 0.0
            self.cpu_seconds = 0.0
            self.kinds.clear()
            self.pages.clear()
            self.page_lists.clear()
            self.statuses.clear()


#: body fields that identify the record a POST creates (wrapped or plain)
WRITE_KEYS = ("number", "inventoryNumber", "externalReference", "customerRefNo", "attributeID")
#: last path segments of Visma.net list endpoints deeper than /v1/<collection>
LIST_LEAVES = frozenset({"itemClass", "crossReferences", "customerSalesPrice"})


# --------------------------------------------------------------------------------------------
# A document cache outside the heap
# --------------------------------------------------------------------------------------------
class SqliteDocumentCache(DocumentCache):
    """The shared e-invoice cache as a table (SQLite in a temporary file), like a production
    deployment keeps it in its database. Thread-safe (one connection, serialized)."""

    def __init__(self, path: Path | str | None = None):
        if path is None:
            fd, path = tempfile.mkstemp(prefix="bench-docs-", suffix=".db")
            os.close(fd)
        self.path = Path(path)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS doc (key TEXT PRIMARY KEY, modified TEXT, body TEXT)"
        )
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, receipt_key: str, modified: str) -> dict | None:
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM doc WHERE key = ? AND modified = ?", (receipt_key, modified)
            ).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        return json.loads(row[0])

    def put(self, receipt_key: str, modified: str, document: dict) -> None:
        body = json.dumps(document, default=str)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO doc (key, modified, body) VALUES (?, ?, ?)",
                (receipt_key, modified, body),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self.path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# The rig
# --------------------------------------------------------------------------------------------
def _bb_section(secrets: dict[str, str] | None = None) -> dict[str, Any]:
    """The default seed's credentials (or ``secrets``' api_client/api_secret/api_key) and one
    empty company (generated data goes in later)."""
    seed = bb_default_seed()
    company = seed["companies"][0]
    secrets = secrets or {}
    clients = [dict(c) for c in seed["api_clients"]]
    if "api_client" in secrets or "api_secret" in secrets:
        clients = [
            {
                "api_client": secrets.get("api_client", clients[0]["api_client"]),
                "api_secret": secrets.get("api_secret", clients[0]["api_secret"]),
            }
        ]
    return {
        "api_clients": clients,
        "companies": [
            {
                "api_key": secrets.get("api_key") or company["api_key"],
                "name": "Bench GmbH",
                "active": True,
                "debtors": [],
                "receipts": [],
                "transactions": [],
            }
        ],
    }


@dataclass
class Rig:
    clock: FakeClock
    bb_sim: BBSimulator
    visma_sim: VismaSimulator
    bb_app: TimedApp
    visma_app: TimedApp
    bb: BBClient
    visma: VismaClient
    recorder: ExchangeRecorder
    api_key: str
    bb_credentials: dict[str, str]
    visma_credentials: dict[str, str]
    links: LinkStore = field(default_factory=MemoryLinkStore)
    documents: DocumentCache | None = None
    factory: ReceiptFactory | None = None
    watermarks: dict[str, str | None] = field(default_factory=dict)
    #: when the bench integration was set up (the rig's clock at its start): no document in
    #: Visma.net is older, which the orders flow's setting ``documents_since`` says
    started: dt.datetime | None = None

    # -- contexts -----------------------------------------------------------------------------
    def context(
        self,
        flow_type: str,
        *,
        settings: dict[str, Any] | None = None,
        sink: Any = None,
        batch_size: int = 100,
        keep_results: bool = False,
        links: LinkStore | None = None,
        documents: DocumentCache | None = None,
        bb: Any = None,
        visma: Any = None,
        recorder: ExchangeRecorder | None = None,
    ) -> FlowContext:
        settings = dict(settings or {})
        if flow_type == "orders" and self.started is not None:
            settings.setdefault("documents_since", self.started.isoformat())
        return FlowContext(
            settings=settings,
            mapping=default_mapping(flow_type),
            value_maps=default_value_maps(),
            links=links if links is not None else self.links,
            sink=sink,
            bb=bb or self.bb,
            visma=visma or self.visma,
            documents=documents if documents is not None else self.documents,
            batch_size=batch_size,
            recorder=recorder if recorder is not None else self.recorder,
            keep_results=keep_results,
            redactor=self.visma.redactor,
            now=lambda: dt.datetime.fromtimestamp(self.clock.now(), dt.timezone.utc),
        )

    # -- counting -------------------------------------------------------------------------------
    def visma_api_requests(self) -> list[dict[str, Any]]:
        return [
            e
            for e in self.visma_sim.requests.entries
            if not e["path"].startswith(("/_sim", "/connect"))
        ]

    def clear_logs(self) -> None:
        self.visma_sim.requests.clear()
        self.bb_sim.requests.clear()
        self.bb_app.reset()
        self.visma_app.reset()

    def close(self) -> None:
        self.bb.close()
        self.visma.close()
        if isinstance(self.documents, SqliteDocumentCache):
            self.documents.close()


def make_rig(
    *,
    debtor_count: int = 0,
    receipt_count: int = 0,
    pool_size: int | None = None,
    visma_quota: int | None = None,
    bb_quota: int | None = 100,
    documents: DocumentCache | None = None,
    visma_seed: dict[str, Any] | None = None,
    bb_requests_per_minute: int = 100,
    visma_max_attempts: int = 4,
    secrets: dict[str, str] | None = None,
    indexed: bool = False,
    clock_start: float | None = None,
) -> Rig:
    """Simulators seeded with ``debtor_count`` generated debtors and ``receipt_count`` outgoing
    receipts (e-invoices over a pool of ``pool_size`` products, default: as many as receipts,
    at least 1), clients wired in-process, all on one FakeClock.

    ``secrets`` replaces the seeds' credentials: ``api_client``, ``api_secret``, ``api_key``
    (BuchhaltungsButler), ``client_secret`` (Visma.net) -- e.g. distinctive values to grep for.
    ``indexed`` uses :class:`~bench.fastsim.IndexedVismaSimulator` (benchmark sizes).
    ``clock_start`` (epoch seconds) starts the FakeClock there instead of its fixed default:
    the Odoo bench starts it at wall time, so the creation times Visma.net reports agree with
    the integration's creation (the orders' ``documents_since``), as they would on a tenant.
    """
    clock = FakeClock() if clock_start is None else FakeClock(clock_start)
    section = _bb_section(secrets)
    api_key = section["companies"][0]["api_key"]
    bb_sim = BBSimulator(clock=clock, quota_per_minute=bb_quota)
    bb_sim.load_seed(section)
    factory = None
    if receipt_count:
        factory = ReceiptFactory(max(1, debtor_count), pool_size or max(1, receipt_count))
        bb_sim.file_loader = _file_loader(factory)
    bb_sim.add_records(
        api_key,
        debtors=debtors(debtor_count),
        receipts=receipts(factory, receipt_count) if factory else (),
    )
    visma_section = visma_seed if visma_seed is not None else visma_default_seed()
    if secrets and "client_secret" in secrets:
        visma_section = json.loads(json.dumps(visma_section))
        creds = visma_section.get("vismanet", visma_section)["credentials"]
        creds["clients"][0]["client_secret"] = secrets["client_secret"]
    if indexed:
        from .fastsim import IndexedVismaSimulator as simulator_class
    else:
        simulator_class = VismaSimulator
    visma_sim = simulator_class(clock=clock, quota_per_hour=visma_quota)
    visma_sim.load_seed(visma_section)
    bb_app = TimedApp(bb_sim, source=True)
    visma_app = TimedApp(visma_sim)
    recorder = ExchangeRecorder()
    client = section["api_clients"][0]
    bb_credentials = {
        "api_client": client["api_client"],
        "api_secret": client["api_secret"],
        "api_key": api_key,
    }
    bb = BBClient(
        base_url=BB_BASE,
        **bb_credentials,
        http_client=sim_http_client(bb_app, BB_BASE),
        on_exchange=recorder,
        sleep=clock.sleep,
        clock=clock.monotonic,
        requests_per_minute=bb_requests_per_minute,
    )
    vs = visma_section.get("vismanet", visma_section)
    visma_credentials = {
        "client_id": vs["credentials"]["clients"][0]["client_id"],
        "client_secret": vs["credentials"]["clients"][0]["client_secret"],
        "tenant_id": vs["credentials"]["tenants"][0]["tenant_id"],
        "company_id": vs["credentials"]["tenants"][0]["companies"][0],
    }
    visma = VismaClient(
        base_url=VISMA_BASE,
        token_url=VISMA_BASE + "/connect/token",
        **visma_credentials,
        http_client=sim_http_client(visma_app, VISMA_BASE),
        on_exchange=recorder,
        sleep=clock.sleep,
        clock=clock.monotonic,
        max_attempts=visma_max_attempts,
    )
    return Rig(
        clock=clock,
        bb_sim=bb_sim,
        visma_sim=visma_sim,
        bb_app=bb_app,
        visma_app=visma_app,
        bb=bb,
        visma=visma,
        recorder=recorder,
        api_key=api_key,
        bb_credentials=bb_credentials,
        visma_credentials=visma_credentials,
        documents=documents if documents is not None else SqliteDocumentCache(),
        factory=factory,
        started=dt.datetime.fromtimestamp(clock.now(), dt.timezone.utc),
    )


def _file_loader(factory: ReceiptFactory):
    def load(record: dict[str, Any]) -> tuple[bytes, str] | None:
        name = str(record.get("file") or "")
        if not name.startswith(FILE_PREFIX):
            return None
        return factory.file_bytes(int(name[len(FILE_PREFIX) :])), "xml"

    return load
