"""Links between source and target records: idempotency and delta sync.

A *link* says "source record ``source_key`` of entity ``entity`` is target record
``target_key``, last sent with payload hash ``content_hash``". With it the engine decides,
without a single call to the target:

* no link (or a link without target key) -> **create**;
* a link whose hash differs from the new payload's -> **update**;
* a link with the same hash -> **skip** (the record costs nothing).

The link of a created record is stored the moment the create returns, so a crash later in the
run cannot make the next run create it twice. The Odoo layer implements :class:`LinkStore` on
its link table; :class:`MemoryLinkStore` serves tests and benchmarks.

Two runs writing the same record at the same time (a customers run, and an orders run creating
that customer for an order) would both look the record up before either creates it and both
create it: lookup-before-create is check-then-act. :meth:`LinkStore.guard` is the per-record
lock that makes "re-read the link, look up, create, store the link" one step; the engine takes
it around every write (see ``Flow._process``).

The same module holds the :class:`DocumentCache` interface: a receipt's e-invoice is fetched
and parsed once per change of the receipt (``modified``) and shared by every flow.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import hashlib
import json
import math
import threading
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import Enum
from typing import Any

__all__ = [
    "Action",
    "DocumentCache",
    "Link",
    "LinkStore",
    "MemoryDocumentCache",
    "MemoryLinkStore",
    "content_hash",
    "decide",
]


class Action(str, Enum):
    """What happened to (or, in a dry run, would happen to) one source record.

    Defined here because :func:`decide` returns it; :mod:`bbvisma.engine` re-exports it.
    """

    CREATE = "create"
    UPDATE = "update"
    SKIP = "skip"
    #: a data problem: the record waits, with its cause, for a human (then a replay)
    PARK = "park"
    #: a transient or unexpected failure: the record is read and tried again next run
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


@dataclass
class Link:
    entity: str
    source_key: str
    target_key: str | None
    content_hash: str | None
    synced_at: dt.datetime | None = None
    meta: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Hash and decision
# --------------------------------------------------------------------------------------------
def _number(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"cannot hash the non-finite number {value}")
    text = format(value.normalize(), "f")
    return "0" if text in ("0", "-0") else text


def _canonical(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot hash the non-finite number {value}")
        out.append(_number(Decimal(repr(value))))
    elif isinstance(value, Decimal):
        out.append(_number(value))
    elif isinstance(value, (dt.date, dt.datetime, dt.time)):
        out.append(json.dumps(value.isoformat()))
    elif isinstance(value, dict):
        out.append("{")
        items = sorted((str(k), v) for k, v in value.items())
        for index, (key, item) in enumerate(items):
            if index:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _canonical(item, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _canonical(item, out)
        out.append("]")
    elif hasattr(value, "model_dump"):  # pydantic records
        _canonical(value.model_dump(mode="json"), out)
    else:
        raise TypeError(f"cannot hash a {type(value).__name__}")


def canonical_json(payload: Any) -> str:
    """Compact JSON with sorted keys where equal payloads give equal text.

    Numbers are written in plain normalized decimal form whatever their Python type, so
    ``19.9``, ``Decimal("19.90")`` and ``Decimal("1.99E+1")`` are the same number (and ``5``,
    ``5.0``, ``Decimal("5.00")`` too); a number and a string stay different (``19.9`` is not
    ``"19.9"``), because the target sees a different payload. Dates and datetimes are their ISO
    strings, as they travel on the wire. Tuples are lists. Other types raise ``TypeError``
    rather than being hashed by an unstable ``repr``.
    """
    out: list[str] = []
    _canonical(payload, out)
    return "".join(out)


def content_hash(payload: Any) -> str:
    """SHA-256 (hex) of :func:`canonical_json`: stable across key order and number forms."""
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def decide(link: Link | None, new_hash: str) -> Action:
    """Create when there is no link (or it has no target key yet), update when the hash
    changed, skip when it did not. A link stored with ``content_hash=None`` (a record flagged
    after its write) is therefore updated the next time it is read."""
    if link is None or not link.target_key:
        return Action.CREATE
    if link.content_hash != new_hash:
        return Action.UPDATE
    return Action.SKIP


# --------------------------------------------------------------------------------------------
# Link store
# --------------------------------------------------------------------------------------------
class LinkStore(abc.ABC):
    """Where links live. Implementations must store :meth:`put` at once (the Odoo layer: its
    own cursor, committed), because the engine relies on a created record's link surviving a
    failure later in the same run.

    *At once* means visible to every other run as soon as :meth:`put` returns, and surviving
    the death of the process that stored it. Surviving a crash of the store itself (of
    PostgreSQL) is asked for with ``durable=True``: the engine asks it for the link of a
    created record that its lookup before create could not find again (see
    :meth:`bbvisma.engine.Flow.lookup_finds`) -- that link is the only memory of the create.
    Any other link (an update's new hash, a record the lookup finds) may have its durability
    deferred to the store's next durable commit: losing it in a crash of the store costs a
    lookup and an adoption, or an update sent again, never a duplicate."""

    @abc.abstractmethod
    def get(self, entity: str, source_key: str) -> Link | None:
        """The link of one source record, or ``None``."""

    @abc.abstractmethod
    def get_many(self, entity: str, source_keys: Iterable[str]) -> dict[str, Link]:
        """The links of a batch, ``{source_key: link}`` for those that exist, in ONE query."""

    @abc.abstractmethod
    def put(
        self,
        entity: str,
        source_key: str,
        target_key: str | None,
        content_hash: str | None,
        meta: dict[str, Any] | None = None,
        *,
        durable: bool = True,
    ) -> Link:
        """Create or update the link and stamp ``synced_at``. ``meta=None`` keeps the meta of
        an existing link (``{}`` for a new one); a dict replaces it. ``durable=False``: the
        link may wait for the store's next durable commit to reach the disk (see the class
        docstring); it is visible at once either way."""

    @abc.abstractmethod
    def find_by_target(self, entity: str, target_key: str) -> Link | None:
        """The link pointing at ``target_key`` (reverse lookup, e.g. for webhooks)."""

    def guard(self, entity: str, source_key: str) -> contextlib.AbstractContextManager:
        """A per-record lock: while one run holds the guard of ``(entity, source_key)``,
        another run asking for the same guard waits. The engine holds it from re-reading the
        link to storing the new one, so a second run sees the first one's link (and skips or
        updates) instead of creating the record a second time.

        Rules for implementations: waiting is unbounded (a record's write takes as long as it
        takes); the same thread may take a guard it already holds; guards of *different*
        records never block each other. Callers nest guards in one order only -- a record's
        guard, then the guard of a record of another entity it creates (an order, then its
        customer) -- so two runs cannot wait for each other.

        The default is no lock at all (a store used by one run at a time, or whose writers are
        serialized otherwise); stores shared by concurrent runs override it.
        """
        return contextlib.nullcontext()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class MemoryLinkStore(LinkStore):
    """Dict-backed, thread-safe. ``calls`` counts calls per method, so tests and the bench can
    prove "one query per batch". Links handed out are copies: changing one does not change the
    store, as with a database.

    :meth:`guard` is a reentrant lock per ``(entity, source_key)``, created on demand and kept
    only while some thread holds or waits for it (a weak-value map), so memory stays bounded by
    the number of records being written at the moment, not by the number ever written. One
    lock per key (not a fixed array of striped locks) matters: two unrelated records sharing a
    stripe could make two runs that nest guards (order, then customer) wait for each other.
    """

    def __init__(self, *, clock: Callable[[], dt.datetime] = _utcnow):
        self._links: dict[tuple[str, str], Link] = {}
        self._by_target: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._guards: weakref.WeakValueDictionary[tuple[str, str], Any] = (
            weakref.WeakValueDictionary()
        )
        self._clock = clock
        self.calls: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._links)

    def get(self, entity: str, source_key: str) -> Link | None:
        with self._lock:
            self.calls["get"] += 1
            link = self._links.get((entity, source_key))
            return replace(link, meta=dict(link.meta)) if link else None

    def get_many(self, entity: str, source_keys: Iterable[str]) -> dict[str, Link]:
        with self._lock:
            self.calls["get_many"] += 1
            found = {}
            for key in source_keys:
                link = self._links.get((entity, key))
                if link is not None:
                    found[key] = replace(link, meta=dict(link.meta))
            return found

    def put(
        self,
        entity: str,
        source_key: str,
        target_key: str | None,
        content_hash: str | None,
        meta: dict[str, Any] | None = None,
        *,
        durable: bool = True,
    ) -> Link:
        with self._lock:
            self.calls["put"] += 1
            old = self._links.get((entity, source_key))
            if old is not None and old.target_key:
                self._by_target.pop((entity, old.target_key), None)
            if meta is None:
                meta = dict(old.meta) if old else {}
            link = Link(entity, source_key, target_key, content_hash, self._clock(), dict(meta))
            self._links[(entity, source_key)] = link
            if target_key:
                self._by_target[(entity, target_key)] = source_key
            return replace(link, meta=dict(link.meta))

    def delete(self, entity: str, source_key: str) -> None:
        """Forget a record's link (as deleting its row in the link table does)."""
        with self._lock:
            old = self._links.pop((entity, source_key), None)
            if old is not None and old.target_key:
                self._by_target.pop((entity, old.target_key), None)

    def find_by_target(self, entity: str, target_key: str) -> Link | None:
        with self._lock:
            self.calls["find_by_target"] += 1
            source_key = self._by_target.get((entity, target_key))
            link = self._links.get((entity, source_key)) if source_key is not None else None
            return replace(link, meta=dict(link.meta)) if link else None

    @contextlib.contextmanager
    def guard(self, entity: str, source_key: str) -> Iterator[None]:
        key = (entity, str(source_key))
        with self._lock:
            self.calls["guard"] += 1
            lock = self._guards.get(key)
            if lock is None:
                lock = threading.RLock()
                self._guards[key] = lock
        # ``lock`` is a strong reference: the entry lives while this thread holds or waits
        with lock:
            yield

    def guards_alive(self) -> int:
        """How many per-record locks exist right now (tests: memory stays bounded)."""
        with self._lock:
            return len(self._guards)


# --------------------------------------------------------------------------------------------
# Document cache
# --------------------------------------------------------------------------------------------
class DocumentCache(abc.ABC):
    """Parsed e-invoices by receipt. ``modified`` is the receipt's last-modified stamp: an
    entry is valid only for the exact stamp it was stored with, so a changed receipt is
    fetched and parsed again, and an unchanged one never is -- whichever flow asks first."""

    @abc.abstractmethod
    def get(self, receipt_key: str, modified: str) -> dict | None:
        """The document stored for this receipt at this ``modified`` stamp, or ``None``."""

    @abc.abstractmethod
    def put(self, receipt_key: str, modified: str, document: dict) -> None:
        """Store (replace) the document of a receipt."""


class MemoryDocumentCache(DocumentCache):
    """Thread-safe dict, one entry per receipt (the newest stamp wins). ``max_entries`` bounds
    memory (least recently used entries go first); ``hits``/``misses`` let tests count."""

    def __init__(self, max_entries: int | None = None):
        self._entries: OrderedDict[str, tuple[str, dict]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, receipt_key: str, modified: str) -> dict | None:
        with self._lock:
            entry = self._entries.get(receipt_key)
            if entry is None or entry[0] != modified:
                self.misses += 1
                return None
            self._entries.move_to_end(receipt_key)
            self.hits += 1
            return entry[1]

    def put(self, receipt_key: str, modified: str, document: dict) -> None:
        with self._lock:
            self._entries[receipt_key] = (modified, document)
            self._entries.move_to_end(receipt_key)
            if self.max_entries is not None:
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
