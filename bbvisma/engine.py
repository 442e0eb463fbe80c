"""The run engine: one run of one flow, the same in tests, in the bench and in Odoo.

A flow (customers, orders, products, ...) only says *how* to read its source, build a payload
and write it (:class:`Flow`'s abstract steps); the engine owns everything every flow must get
right the same way:

* **streaming** -- source items are read lazily and handled in batches of
  ``ctx.batch_size``; results go to the :class:`RunSink` as they happen (for a flow with a
  batch check, :meth:`Flow.check_batch`, once that check is done at the end of the batch) and
  are not kept (a run over 50 000 records holds one batch in memory);
* **idempotency** -- the link store decides create / update / skip by content hash; an
  unchanged record costs no call; a created record's link is stored the moment the create
  returns;
* **concurrency** -- a write (create or update) happens under the link store's per-record
  :meth:`~bbvisma.linkstore.LinkStore.guard`: the link is read again under it (the batch's
  prefetch may be stale), so of two runs on the same record the second sees the first one's
  link and skips or updates instead of creating the record twice. A create the target refuses
  because the record *already exists* (created by someone else between lookup and POST) is
  looked up again and adopted (:meth:`Flow.create_or_adopt`), not parked;
* **error policy** -- every record ends as exactly one :class:`RecordResult`:

  ============================================  =========================================
  raised while handling the record              outcome
  ============================================  =========================================
  :class:`~bbvisma.errors.DataError`            PARK (cause kept for a human; run goes on)
  :class:`~bbvisma.errors.ApiError` (4xx)       PARK (the target refused this record's
                                                data; retrying the same payload cannot help)
  :class:`~bbvisma.errors.PreconditionFailed`   ERROR (a stale ETag: next run reads afresh)
  :class:`~bbvisma.errors.TransientError`       ERROR (includes OutcomeUnknown and
                                                ProtocolError): tried again next run
  :class:`~bbvisma.errors.AuthError`,           ERROR, then the run is aborted: a wrong
  :class:`~bbvisma.errors.ConfigError`          credential or setting fails every record
  any other exception                           ERROR with type and message, logged with
                                                traceback; the run goes on
  ============================================  =========================================

* **watermark** -- the ``modified`` value up to which every record was synced, skipped or
  parked, so the next run reads from there (flows read with ``>=``; records that did not
  change cost nothing thanks to the hash). See :class:`_WatermarkTracker`.
* **mapping changes** -- a changed mapping or value map changes payloads and hashes, so
  records are updated as they are read again; use :meth:`Flow.replay` (or a run from an
  older watermark) to re-send records that did not change in the source.
* **dry run** -- build and decide only: payloads are recorded with the action they would get,
  nothing is written, no link and no watermark moves.

Why ApiError parks instead of erroring: an ERROR holds the watermark, so one record the target
refuses for good would make every later run read everything since that record again. Parked,
it waits visibly with its cause; :meth:`Flow.replay` sends it again once data or mapping is
fixed.
"""

from __future__ import annotations

import abc
import datetime as dt
import logging
import re
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import (
    ApiError,
    AuthError,
    BBVismaError,
    ConfigError,
    DataError,
    OutcomeUnknown,
    PreconditionFailed,
    ProtocolError,
)
from .linkstore import Action, DocumentCache, Link, LinkStore, content_hash, decide
from .mapper import Mapping

__all__ = [
    "Action",
    "ExchangeRecorder",
    "Flow",
    "FlowContext",
    "RecordResult",
    "RunReport",
    "RunSink",
    "SourceItem",
    "refused_as_existing",
]

_logger = logging.getLogger(__name__)

#: how a target says "this record exists already" when a create collides with one: Visma.net
#: answers 400 "number: A customer with the ID '10001' already exists." (likewise for items,
#: documents and orders); its ERP core words a race as "Another process has added the
#: 'Customer' record"; databases say "duplicate key"
_ALREADY_EXISTS = re.compile(r"already exists|duplicate|another process has added", re.IGNORECASE)


def refused_as_existing(exc: BaseException) -> bool:
    """True if ``exc`` is a create refused because the record exists already (400 or 409
    with an "already exists" / duplicate message). Such a refusal says nothing about the
    record's data: the record is to be looked up and adopted, not parked."""
    return (
        isinstance(exc, ApiError)
        and not isinstance(exc, PreconditionFailed)
        and exc.status in (None, 400, 409)
        and bool(_ALREADY_EXISTS.search(exc.message or ""))
    )


# --------------------------------------------------------------------------------------------
# Data passed around
# --------------------------------------------------------------------------------------------
@dataclass
class SourceItem:
    """One source record as a flow reads it. ``modified`` must sort as text in time order
    (ISO 8601 or BB's ``YYYY-MM-DD HH:MM:SS``, one time zone); ``None`` if the source has none.
    """

    key: str
    modified: str | None
    data: Any
    label: str = ""


@dataclass
class RecordResult:
    """What happened to one source record; the Odoo layer turns it into one log line."""

    entity: str
    source_key: str
    action: Action
    target_key: str | None = None
    message: str = ""
    cause_key: str | None = None
    #: what came from the source: the flow's canonical dict, or the item's raw data when
    #: ``build`` failed before returning it
    source: dict | None = None
    #: what was sent, or in a dry run would be sent
    payload: dict | None = None
    #: what came back from the target
    response: Any = None
    #: redacted ``transport.Exchange.as_dict()`` of the calls made for this record
    exchanges: list[dict] = field(default_factory=list)
    duration_ms: float = 0.0
    content_hash: str | None = None
    dry_run: bool = False
    label: str = ""
    modified: str | None = None
    #: True for the AuthError/ConfigError that stopped the run
    aborted_run: bool = False


class RunSink(Protocol):
    """Receives results as they happen. The Odoo layer implements it with a separate cursor
    (logs survive a rolled-back transaction) and commits per batch."""

    def record(self, result: RecordResult) -> None:
        """One record is done."""

    def batch_done(self, watermark: str | None, results: list[RecordResult]) -> None:
        """A batch is done; store ``watermark`` unless it is ``None`` (None: keep the old)."""


@dataclass
class RunReport:
    """The summary of a run. ``results`` is filled only with ``ctx.keep_results`` (tests,
    small replays); otherwise results live only in the sink."""

    entity: str
    dry_run: bool = False
    since: str | None = None
    started: dt.datetime | None = None
    ended: dt.datetime | None = None
    counts: dict[str, int] = field(default_factory=lambda: {a.value: 0 for a in Action})
    #: the new watermark to store; ``None``: keep the previous one
    watermark: str | None = None
    aborted: str | None = None
    items: int = 0
    batches: int = 0
    results: list[RecordResult] | None = None

    @property
    def duration_ms(self) -> float:
        if self.started is None or self.ended is None:
            return 0.0
        return (self.ended - self.started).total_seconds() * 1000.0

    @property
    def ok(self) -> bool:
        """No error and not aborted (parked records are a data matter, not a failed run)."""
        return self.aborted is None and not self.counts[Action.ERROR.value]

    def summary(self) -> str:
        parts = [f"{name} {count}" for name, count in self.counts.items() if count]
        text = f"{self.entity}: {self.items} records" + (f" ({', '.join(parts)})" if parts else "")
        if self.dry_run:
            text += ", dry run"
        if self.aborted:
            text += f"; ABORTED: {self.aborted}"
        return text


# --------------------------------------------------------------------------------------------
# Exchange recorder
# --------------------------------------------------------------------------------------------
class ExchangeRecorder:
    """Collects the HTTP exchanges made while one record is handled.

    Pass the recorder as ``on_exchange=`` to both API clients and as ``recorder`` in the
    :class:`FlowContext`; the engine brackets each record with :meth:`begin`/:meth:`end`, so
    every record's log line shows its own calls. State is per thread, so parallel workers
    sharing clients do not mix their exchanges. Exchanges outside any record (page reads of the
    source, batch prefetches) go to ``forward`` if given (a run-level log), else are counted in
    ``unattributed``. ``calls`` counts every exchange by system (``"bb"``, ``"visma"``).
    """

    def __init__(
        self,
        *,
        forward: Callable[[dict], None] | None = None,
        max_per_record: int = 50,
    ):
        self.forward = forward
        self.max_per_record = max_per_record
        self.calls: Counter[str] = Counter()
        self.unattributed = 0
        self._local = threading.local()
        self._lock = threading.Lock()

    def __call__(self, exchange: Any) -> None:
        entry = exchange.as_dict() if hasattr(exchange, "as_dict") else dict(exchange)
        with self._lock:
            self.calls[str(entry.get("system"))] += 1
        buffer = getattr(self._local, "buffer", None)
        if buffer is None:
            if self.forward is not None:
                self.forward(entry)
            else:
                with self._lock:
                    self.unattributed += 1
            return
        if len(buffer) < self.max_per_record:
            buffer.append(entry)
        else:
            # keep the log line bounded; say how many were left out instead of hiding it
            self._local.dropped += 1

    def begin(self) -> None:
        self._local.buffer = []
        self._local.dropped = 0

    def end(self) -> list[dict]:
        buffer = getattr(self._local, "buffer", None) or []
        dropped = getattr(self._local, "dropped", 0)
        self._local.buffer = None
        if dropped:
            buffer.append({"note": f"{dropped} more exchanges not kept"})
        return buffer


# --------------------------------------------------------------------------------------------
# Context
# --------------------------------------------------------------------------------------------
def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class FlowContext:
    """Everything a flow run needs, loaded by the caller (Odoo layer, test, bench)."""

    settings: dict[str, Any]
    mapping: Mapping | None
    value_maps: dict[str, dict[str, str]]
    links: LinkStore
    sink: RunSink | None = None
    bb: Any = None
    visma: Any = None
    documents: DocumentCache | None = None
    dry_run: bool = False
    batch_size: int = 50
    logger: logging.Logger = field(default_factory=lambda: _logger)
    recorder: ExchangeRecorder | None = None
    #: keep every RecordResult in RunReport.results (tests, small replays only)
    keep_results: bool = False
    #: redacts messages of unexpected exceptions (typed errors are redacted at the source)
    redactor: Any = None
    now: Callable[[], dt.datetime] = _utcnow


# --------------------------------------------------------------------------------------------
# Watermark
# --------------------------------------------------------------------------------------------
class _WatermarkTracker:
    """Computes the watermark safely whatever order the source yields its items in.

    * No ERROR: the highest ``modified`` seen.
    * With ERRORs: the lowest ``modified`` among the ERROR items -- with ``>=`` reads the next
      run starts at the first failed record and reads it again (records after it are read too
      and skipped by hash).
    * An ERROR item without ``modified`` cannot be placed: the watermark is not moved.

    Before the end of a run, the value is only safe if the source is known to yield items in
    ascending ``modified`` order (``Flow.ordered_source``) and really did so far; otherwise an
    unseen item could be older than anything seen, so intermediate batches report ``None``
    and the final value comes with the last batch. A run that stops early (abort, source
    failure) has no last batch: with an unordered source it does not move the watermark.
    """

    def __init__(self, ordered: bool):
        self.in_order = ordered
        self.highest: str | None = None
        self.lowest_error: str | None = None
        self.unplaceable_error = False

    def note(self, result: RecordResult) -> None:
        modified = result.modified
        if result.action is Action.ERROR:
            if modified is None:
                self.unplaceable_error = True
            elif self.lowest_error is None or modified < self.lowest_error:
                self.lowest_error = modified
        if modified is not None:
            if self.highest is not None and modified < self.highest:
                self.in_order = False
            if self.highest is None or modified > self.highest:
                self.highest = modified

    def value(self, final: bool) -> str | None:
        if self.unplaceable_error or not (final or self.in_order):
            return None
        return self.lowest_error if self.lowest_error is not None else self.highest


def _same_link(a: Link | None, b: Link | None) -> bool:
    """Whether two reads of a link agree on what :func:`decide` and ``build`` look at."""
    if a is None or b is None:
        return a is b
    return (a.target_key, a.content_hash, a.meta) == (b.target_key, b.content_hash, b.meta)


# --------------------------------------------------------------------------------------------
# Flow
# --------------------------------------------------------------------------------------------
class Flow(abc.ABC):
    """One kind of record synced from the source to the target. Subclass, set :attr:`entity`,
    implement the abstract steps; override the hooks only where a flow needs to.

    The steps, in the order :meth:`process` calls them for each record::

        prepare_batch(items)      once per batch: prefetch links (ONE get_many), master data
        link_for(item)            the record's link, from the batch prefetch
        build(item, link)         -> (canonical source dict, payload); raise DataError to park
        hash_payload(payload)     -> content hash; decide(link, hash) -> create/update/skip
        create(item, payload)     -> (target_key, response); the link is stored right after
        update(item, payload, link) -> response; the link's hash is stored right after
        after_write(...)          checks on what the target answered; DataError flags it

    and once per batch, after its writes and before its results go to the sink::

        check_batch(written)      the same checks for the batch's written records at once

    Contract for :meth:`create` (lookup before create): a create whose answer was lost
    (:class:`~bbvisma.errors.OutcomeUnknown`), or whose link could not be stored, ends as ERROR
    and the record comes again next run with no link. The target may nonetheless hold the record
    already. So ``create`` must first look the record up in the target by a deterministic key
    derived from the source (customer number, external reference, SKU, ...) and, if found,
    return that key (updating the record if needed) instead of creating a duplicate. Never
    resend a write blindly.

    ``create``/``update`` must raise on failure (never return a partial success); a create
    that returns no target key is treated as a protocol error. :meth:`create_or_adopt` does
    the part after the lookup: a lost answer and an "already exists" refusal are both resolved
    by looking the record up again.

    Two runs on the same record (two workers, or an orders run creating a customer while the
    customers run does): the write steps run under the link store's per-record guard, and the
    link is read again under it; see :meth:`_process`.

    A flow instance handles one run at a time (it holds the batch's prefetched links); parallel
    workers (queue_job) each build their own instance with their own batch of keys.
    """

    #: the link store's entity name, e.g. ``"customer"``, ``"order"``, ``"product"``
    entity: str = ""
    #: True if :meth:`source_items` yields items in ascending ``modified`` order; lets every
    #: batch move the watermark (otherwise only a completed run does)
    ordered_source: bool = False
    #: a batch with at least this many records to create reads the target's list into a
    #: per-run index instead of looking each record up (see :meth:`index_pays_off`)
    INDEX_THRESHOLD = 20

    def __init__(self, ctx: FlowContext):
        if not self.entity:
            raise ConfigError(f"{type(self).__name__} does not set 'entity'")
        self.ctx = ctx
        self._batch_links: dict[str, Link] = {}
        self._batch_keys: set[str] = set()

    # -- abstract steps -------------------------------------------------------------------------
    @abc.abstractmethod
    def source_items(self, since: str | None) -> Iterator[SourceItem]:
        """Yield source records modified at or after ``since`` (all when ``None``), page by
        page, lazily: the engine never lists the whole source."""

    @abc.abstractmethod
    def fetch_item(self, source_key: str) -> SourceItem:
        """One source record by key (replay of a parked or failed record)."""

    @abc.abstractmethod
    def build(self, item: SourceItem, link: Link | None) -> tuple[dict, dict]:
        """``(source, payload)``: the canonical source dict (shown in the log) and the payload
        to send. Build in :meth:`mode_for` mode (:meth:`map` does). Raise DataError to park."""

    @abc.abstractmethod
    def create(self, item: SourceItem, payload: dict) -> tuple[str, Any]:
        """Create the target record; return ``(target_key, response)``. See the class
        docstring for the lookup-before-create contract."""

    @abc.abstractmethod
    def update(self, item: SourceItem, payload: dict, link: Link) -> Any:
        """Update ``link.target_key`` with ``payload``; return the response."""

    # -- hooks ----------------------------------------------------------------------------------
    def prepare_batch(self, items: list[SourceItem]) -> None:
        """Prefetch what the batch needs. The default loads the batch's links in one query;
        an override that prefetches more must call ``super().prepare_batch(items)``."""
        keys = [item.key for item in items]
        self._batch_links = self.ctx.links.get_many(self.entity, keys)
        self._batch_keys = set(keys)

    def index_pays_off(self, items: list[SourceItem]) -> bool:
        """Whether this batch has so many records to create (no link, or a link without a
        target key) that one paged read of the target's list -- one call per page, kept as a
        slim per-run index -- is cheaper than the lookup before each create (one call or
        more per record). Small batches look up per record: cheaper than reading a large
        list for a handful of new records. Never in a dry run, which creates nothing.

        For :meth:`prepare_batch` overrides, after ``super().prepare_batch(items)``. The
        index answers only the lookup *before* a create: a lost answer or an "already exists"
        refusal is resolved by a live lookup (the ``find`` given to :meth:`create_or_adopt`),
        because the record may have been created after the index was read.
        """
        return not self.ctx.dry_run and self.records_to_create(items) >= self.INDEX_THRESHOLD

    def records_to_create(self, items: list[SourceItem]) -> int:
        """How many of the batch's records have no link, or a link without a target key."""
        count = 0
        for item in items:
            link = self.link_for(item)
            if link is None or not link.target_key:
                count += 1
        return count

    def link_for(self, item: SourceItem) -> Link | None:
        """The record's link: from the batch prefetch, else (outside a batch) one query."""
        if item.key in self._batch_keys:
            return self._batch_links.get(item.key)
        return self.ctx.links.get(self.entity, item.key)

    def mode_for(self, link: Link | None) -> str:
        """``"update"`` when the record exists in the target, else ``"create"``."""
        return "update" if link is not None and link.target_key else "create"

    def map(self, source: dict, link: Link | None) -> dict:
        """The context's mapping applied to ``source`` in the right mode (for :meth:`build`)."""
        if self.ctx.mapping is None:
            raise ConfigError(f"flow {self.entity!r} has no mapping")
        return self.ctx.mapping.apply(
            source, mode=self.mode_for(link), value_maps=self.ctx.value_maps
        )

    def hash_payload(self, payload: dict) -> str:
        """The content hash compared with the link's. Mode-specific mapping fields are left
        out (:meth:`Mapping.comparable`) so create- and update-mode payloads hash alike."""
        if self.ctx.mapping is not None and isinstance(payload, dict):
            payload = self.ctx.mapping.comparable(payload)
        return content_hash(payload)

    def run_watermark(self, started: dt.datetime) -> str | None:
        """The watermark a *completed* run stores, for sources whose records carry no
        modification time (BuchhaltungsButler receipts and debtors): typically ``started``
        in the source's own format. ``None`` (the default) uses the items' ``modified``.

        When a flow returns a value, the engine stores it only with the last batch of a run
        that read the whole source and left no record in ERROR; any ERROR, abort or source
        failure keeps the previous watermark, so the next run reads the failed records again
        (the rest are skipped by hash). Intermediate batches report ``None``.
        """
        return None

    def link_meta(self, item: SourceItem, payload: dict, response: Any) -> dict | None:
        """Extra data to keep on the link after a write (e.g. a document number); ``None``
        keeps what the link had."""
        return None

    def lookup_finds(self, item: SourceItem, payload: dict) -> bool:
        """Whether the lookup before create (see the class docstring) would find this record
        in the target once it is created: it has a deterministic key to be found by. True
        by the create contract; a flow whose records may lack such a key (a customer with
        neither number, corporate id nor e-mail) says so here.

        It decides how a created record's link is stored: the link of a record the lookup
        finds needs no disk flush of its own (lost in a crash of the link store, the next run
        finds the record and adopts it); the link of one it cannot find is stored ``durable``
        (see :class:`~bbvisma.linkstore.LinkStore`)."""
        return True

    def after_write(
        self, item: SourceItem, action: Action, payload: dict, link: Link, response: Any
    ) -> None:
        """Checks on the written record (e.g. totals the target computed against the source).
        Raise DataError to flag it: the record is PARKED with its target key, and its link
        loses its hash, so the next read or a replay sends it again."""
        return None

    def check_batch(self, written: list[tuple[SourceItem, RecordResult]]) -> dict[str, Exception]:
        """Checks on the records a batch wrote, all at once: :meth:`after_write`'s batched
        twin, for checks that one read of the target can do for many records (a paged list
        instead of a GET per record).

        Called once per batch with the ``(item, result)`` of every record created or updated
        in it (never in a dry run), after the last write and before any result of the batch
        goes to the sink -- so a flow that overrides it has its results recorded at the end
        of each batch, not as they happen. Returns the failures by source key, handled as if
        :meth:`after_write` had raised them: a DataError parks the record with its target
        key and clears its link's hash (the next read or a replay sends it again); any other
        exception makes the record an ERROR (or aborts the run, for AuthError/ConfigError).
        An exception raised by the check itself fails every written record of the batch
        alike. The default checks nothing."""
        return {}

    # -- helpers for create -----------------------------------------------------------------
    @staticmethod
    def create_or_adopt(
        find: Callable[[], str | None],
        create: Callable[[], str],
        *,
        recognizable: bool = True,
    ) -> tuple[str, str]:
        """Send a create whose record was just looked up and not found; resolve by a second
        lookup what the create alone cannot tell. Returns ``(target_key, how)``:

        * ``"created"`` -- the create answered with the new key;
        * ``"recovered"`` -- the answer was lost (:class:`~bbvisma.errors.OutcomeUnknown`) but
          the lookup finds the record: the create was committed;
        * ``"adopted"`` -- the target refused the create because the record exists already
          (:func:`refused_as_existing`: someone created it between the lookup and the POST);
          the lookup finds it and it is taken over instead of parked.

        A lost answer whose record the lookup does not find is sent once more (it was not
        committed) -- unless ``recognizable`` is False (nothing to look the record up by):
        then nothing is resent blindly and the OutcomeUnknown propagates. A refusal whose
        record the lookup does not find propagates as it is (the target meant something
        else). ``find`` may raise a DataError (found, but not ours): it propagates.
        """

        def attempt() -> tuple[str, str]:
            try:
                return create(), "created"
            except ApiError as exc:
                if not (recognizable and refused_as_existing(exc)):
                    raise
                found = find()
                if found is None:
                    raise
                return found, "adopted"

        try:
            return attempt()
        except OutcomeUnknown:
            if not recognizable:
                raise
            found = find()
            if found is not None:
                return found, "recovered"
            return attempt()

    # -- the template ---------------------------------------------------------------------------
    def process(self, item: SourceItem) -> RecordResult:
        """Handle one record and return its result; never raises for the record's own errors
        (see the module docstring for the policy). ``result.aborted_run`` tells the caller to
        stop."""
        ctx = self.ctx
        result = self._new_result(item)
        recorder = ctx.recorder
        if recorder is not None:
            recorder.begin()
        started = time.perf_counter()
        try:
            self._process(item, result)
        except Exception as exc:
            self._fail(result, exc)
            if result.source is None and isinstance(item.data, dict):
                result.source = item.data  # build failed: log what the source gave
        finally:
            result.duration_ms = (time.perf_counter() - started) * 1000.0
            if recorder is not None:
                result.exchanges = recorder.end()
        return result

    def sync_nested(self, item: SourceItem) -> RecordResult:
        """Sync one record *inside another flow's record* -- e.g. the orders flow creating the
        customer of an order through the customers flow, so the rules live in one place.

        The same steps as :meth:`process` (link, build, decide, create/update with lookup
        before create under the record's own guard, link stored at once, after_write) -- so
        the calling record holds its guard and then this one's, the one nesting order guards
        may take (see :meth:`LinkStore.guard`) -- but exceptions propagate to the
        calling record (which parks or fails as a whole) and the HTTP exchanges stay in the
        calling record's log line. Returns the result with the action taken and the target
        key (``None`` in a dry run of a create).
        """
        result = self._new_result(item)
        self._process(item, result)
        return result

    def _new_result(self, item: SourceItem) -> RecordResult:
        """A record's result before anything is done: an error until a step says otherwise."""
        return RecordResult(
            self.entity,
            item.key,
            Action.ERROR,
            dry_run=self.ctx.dry_run,
            label=item.label,
            modified=item.modified,
        )

    def _process(self, item: SourceItem, result: RecordResult) -> None:
        """Decide on the batch's prefetched link; write under the record's guard.

        A skip needs neither the guard nor another query (an unchanged record costs nothing).
        A write takes :meth:`LinkStore.guard` and reads the link again first: another run may
        have written the record since this batch's links were read. If the link changed, the
        record is built and decided again on the fresh link -- typically a skip (the other run
        created it with the same data) or an update, never a second create. The guard is held
        until the new link is stored, so the lookup-before-create and the create of two runs
        cannot interleave. Dry runs write nothing and take no guard.
        """
        ctx = self.ctx
        link = self.link_for(item)
        action, payload, new_hash = self._decide_record(item, link, result)
        if ctx.dry_run or action is Action.SKIP:
            result.action = action
            return
        with ctx.links.guard(self.entity, item.key):
            fresh = ctx.links.get(self.entity, item.key)
            if not _same_link(fresh, link):
                if fresh is None:
                    self._batch_links.pop(item.key, None)
                else:
                    self._batch_links[item.key] = fresh
                link = fresh
                action, payload, new_hash = self._decide_record(item, link, result)
                result.message = "written by another run meanwhile; decided again on its link"
                if action is Action.SKIP:
                    result.action = action
                    return
            self._write_record(item, result, action, link, payload, new_hash)

    def _decide_record(
        self, item: SourceItem, link: Link | None, result: RecordResult
    ) -> tuple[Action, dict, str]:
        result.target_key = link.target_key if link is not None else None
        source, payload = self.build(item, link)
        result.source, result.payload = source, payload
        result.content_hash = new_hash = self.hash_payload(payload)
        return decide(link, new_hash), payload, new_hash

    def _write_record(
        self,
        item: SourceItem,
        result: RecordResult,
        action: Action,
        link: Link | None,
        payload: dict,
        new_hash: str,
    ) -> None:
        ctx = self.ctx
        # result.action stays ERROR until the write and its link are stored
        if action is Action.CREATE:
            target_key, response = self.create(item, payload)
            result.response = response
            if not target_key:
                raise ProtocolError(f"create of {self.entity} {item.key!r} returned no target key")
            result.target_key = target_key
        else:
            assert link is not None
            result.response = response = self.update(item, payload, link)
            target_key = link.target_key
        stored = ctx.links.put(
            self.entity,
            item.key,
            target_key,
            new_hash,
            self.link_meta(item, payload, response),
            # the link of a create that no lookup could find again is its only memory
            durable=action is Action.CREATE and not self.lookup_finds(item, payload),
        )
        self._batch_links[item.key] = stored
        result.action = action
        try:
            self.after_write(item, action, payload, stored, response)
        except DataError:
            self._batch_links[item.key] = ctx.links.put(
                self.entity, item.key, target_key, None, None, durable=False
            )
            raise

    def _fail(self, result: RecordResult, exc: Exception) -> None:
        """Turn an exception into the record's outcome (the policy table above)."""
        ctx = self.ctx
        if isinstance(exc, DataError) or (
            isinstance(exc, ApiError) and not isinstance(exc, PreconditionFailed)
        ):
            result.action = Action.PARK
            result.message = exc.message
            result.cause_key = exc.cause_key
            return
        result.action = Action.ERROR
        if isinstance(exc, BBVismaError):
            result.message = f"{type(exc).__name__}: {exc.message}"
            result.cause_key = exc.cause_key
            if isinstance(exc, (AuthError, ConfigError)):
                result.aborted_run = True
            return
        text = str(exc)
        if ctx.redactor is not None:
            text = ctx.redactor.redact_text(text)
        result.message = f"{type(exc).__name__}: {text}"
        result.cause_key = f"unexpected:{type(exc).__name__}"
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if ctx.redactor is not None:  # a traceback may quote a secret, like the message
            trace = ctx.redactor.redact_text(trace)
        ctx.logger.error(
            "%s %s: unexpected %s\n%s", self.entity, result.source_key, type(exc).__name__, trace
        )

    # -- runs -----------------------------------------------------------------------------------
    def run(self, since: str | None = None) -> RunReport:
        """Sync everything the source yields since ``since``; see the module docstring."""
        ctx = self.ctx
        report = self._new_report(since)
        tracker = _WatermarkTracker(self.ordered_source)
        own_watermark = self.run_watermark(report.started) if report.started else None
        items = iter(self.source_items(since))
        source_failure: str | None = None
        try:
            pending = self._pull(items)
        except Exception as exc:
            pending, source_failure = None, self._source_failure(exc)
        while pending is not None and report.aborted is None:
            batch = [pending]
            pending = None
            try:
                while len(batch) < max(1, ctx.batch_size):
                    item = self._pull(items)
                    if item is None:
                        break
                    batch.append(item)
                else:
                    pending = self._pull(items)  # look ahead: is this the last batch?
            except Exception as exc:
                source_failure = self._source_failure(exc)
            results = self._run_batch(batch, report, tracker)
            last = pending is None and source_failure is None and report.aborted is None
            if ctx.dry_run:
                watermark = None
            elif own_watermark is not None:
                clean = last and not report.counts[Action.ERROR.value]
                watermark = own_watermark if clean else None
            else:
                watermark = tracker.value(final=last)
            if watermark is not None:
                report.watermark = watermark
            if ctx.sink is not None:
                ctx.sink.batch_done(watermark, results)
            if source_failure is not None:
                break
        if source_failure is not None and report.aborted is None:
            report.aborted = source_failure
        return self._finish(report)

    def replay(self, source_keys: Iterable[str]) -> RunReport:
        """Process the given records again with the current mapping and settings (a parked
        record after its cause was fixed, a failed one after an outage). The watermark does
        not move: batches report ``None``."""
        ctx = self.ctx
        report = self._new_report(None)
        keys = list(dict.fromkeys(source_keys))
        size = max(1, ctx.batch_size)
        for start in range(0, len(keys), size):
            batch: list[SourceItem] = []
            results: list[RecordResult] = []
            for key in keys[start : start + size]:
                try:
                    batch.append(self.fetch_item(key))
                except Exception as exc:
                    result = RecordResult(self.entity, key, Action.ERROR, dry_run=ctx.dry_run)
                    self._fail(result, exc)
                    self._emit(result, report, None, results)
                    if result.aborted_run:
                        break
            if report.aborted is None and batch:
                results.extend(self._run_batch(batch, report, None))
            if ctx.sink is not None and results:
                ctx.sink.batch_done(None, results)
            if report.aborted is not None:
                break
        return self._finish(report)

    def run_items(self, items: Iterable[SourceItem]) -> RunReport:
        """Process source items that another process read: one batch of a run fanned out
        to parallel workers (the Odoo layer's queue_job batches) -- the reader streams
        :meth:`source_items` and hands each worker its share, so the source is read once and
        no record costs a :meth:`fetch_item`. Handled like a run's batches (``ctx.batch_size``
        at a time, one result per record, the sink told per batch), but the watermark does
        not move: batches report ``None``, and the reader decides the run's watermark once
        every batch is done."""
        ctx = self.ctx
        report = self._new_report(None)
        size = max(1, ctx.batch_size)
        batch: list[SourceItem] = []
        pending = iter(items)
        while report.aborted is None:
            item = next(pending, None)
            if item is not None:
                batch.append(item)
                if len(batch) < size:
                    continue
            if batch:
                results = self._run_batch(batch, report, None)
                if ctx.sink is not None:
                    ctx.sink.batch_done(None, results)
                batch = []
            if item is None:
                break
        return self._finish(report)

    # -- run internals ------------------------------------------------------------------------
    def _new_report(self, since: str | None) -> RunReport:
        ctx = self.ctx
        return RunReport(
            self.entity,
            dry_run=ctx.dry_run,
            since=since,
            started=ctx.now(),
            results=[] if ctx.keep_results else None,
        )

    def _finish(self, report: RunReport) -> RunReport:
        report.ended = self.ctx.now()
        log = self.ctx.logger.warning if not report.ok else self.ctx.logger.info
        log("%s", report.summary())
        return report

    @staticmethod
    def _pull(items: Iterator[SourceItem]) -> SourceItem | None:
        return next(items, None)

    def _source_failure(self, exc: Exception) -> str:
        """Reading the source failed: the generator cannot go on, so the run stops."""
        if isinstance(exc, BBVismaError):
            text = f"reading the source failed: {type(exc).__name__}: {exc.message}"
            self.ctx.logger.error("%s: %s", self.entity, text)
            return text
        self.ctx.logger.exception("%s: reading the source failed", self.entity)
        return f"reading the source failed: {type(exc).__name__}"

    def _run_batch(
        self,
        batch: list[SourceItem],
        report: RunReport,
        tracker: _WatermarkTracker | None,
    ) -> list[RecordResult]:
        results: list[RecordResult] = []
        report.batches += 1
        try:
            self.prepare_batch(batch)
        except Exception as exc:
            # the batch cannot be handled: every record in it fails alike (and is read again)
            for item in batch:
                result = self._new_result(item)
                self._fail(result, exc)
                self._emit(result, report, tracker, results)
                if result.aborted_run:
                    break
            return results
        checked = type(self).check_batch is not Flow.check_batch
        done: list[tuple[SourceItem, RecordResult]] = []
        for item in batch:
            result = self.process(item)
            if checked:
                done.append((item, result))  # recorded once the batch check is done
            else:
                self._emit(result, report, tracker, results)
            if result.aborted_run:
                break
        if done:
            self._check_written(done)
            for _item, result in done:
                self._emit(result, report, tracker, results)
        self._batch_links, self._batch_keys = {}, set()
        return results

    def _check_written(self, done: list[tuple[SourceItem, RecordResult]]) -> None:
        """:meth:`check_batch` on the batch's written records; its failures applied like
        those of :meth:`after_write` (see :meth:`_write_record`)."""
        ctx = self.ctx
        written = [
            (item, result)
            for item, result in done
            if result.action in (Action.CREATE, Action.UPDATE) and not ctx.dry_run
        ]
        if not written:
            return
        try:
            failures = self.check_batch(written)
        except Exception as exc:
            failures = {item.key: exc for item, _result in written}
        for item, result in written:
            failure = failures.get(item.key)
            if failure is None:
                continue
            if isinstance(failure, DataError):
                try:
                    with ctx.links.guard(self.entity, item.key):
                        ctx.links.put(
                            self.entity, item.key, result.target_key, None, None, durable=False
                        )
                except Exception as exc:  # the flag could not be stored: say so instead
                    failure = exc
            self._fail(result, failure)

    def _emit(
        self,
        result: RecordResult,
        report: RunReport,
        tracker: _WatermarkTracker | None,
        results: list[RecordResult],
    ) -> None:
        report.items += 1
        report.counts[result.action.value] += 1
        if report.results is not None:
            report.results.append(result)
        if tracker is not None:
            tracker.note(result)
        results.append(result)
        if self.ctx.sink is not None:
            self.ctx.sink.record(result)
        if result.aborted_run:
            report.aborted = result.message
            self.ctx.logger.error(
                "%s: run aborted at %s: %s", self.entity, result.source_key, result.message
            )
