"""The naive baseline: the same flows, with everything that saves calls taken away.

What an integration written "one request per record" does, modelled on the real flows so the
payloads and the lookups are the same and only the strategy differs:

* **no link store** -- :class:`NullLinkStore` forgets every link, so each run looks every
  record up in Visma.net (by e-mail, number, SKU or external reference, as the flows' own
  lookup-before-create does) and then creates it or re-sends it (an update), changed or not;
* **no caching** -- :class:`NullDocumentCache`: each flow downloads and parses every e-invoice
  file again, in every run;
* **small pages** -- debtors are listed with BuchhaltungsButler's default page size (25)
  instead of the largest allowed (500);
* **batch size 1** -- no batch prefetch.

The baseline is run on its own freshly seeded rig, flow by flow in the same order as the
engine, twice (the second run has no source change), and the report divides its calls and
time by the engine's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any

from bbvisma.buchhaltungsbutler.client import DEBTOR_DEFAULT_LIMIT
from bbvisma.linkstore import DocumentCache, Link, LinkStore

from .measure import CountingSink, RunMeasure, measure_run
from .rig import Rig


class NullLinkStore(LinkStore):
    """Remembers nothing: every record is new to every run."""

    def get(self, entity: str, source_key: str) -> Link | None:
        return None

    def get_many(self, entity: str, source_keys: Iterable[str]) -> dict[str, Link]:
        return {}

    def put(self, entity, source_key, target_key, content_hash, meta=None, *, durable=True) -> Link:
        return Link(
            entity,
            source_key,
            target_key,
            content_hash,
            dt.datetime.now(dt.timezone.utc),
            dict(meta or {}),
        )

    def find_by_target(self, entity: str, target_key: str) -> Link | None:
        return None


class NullDocumentCache(DocumentCache):
    """Caches nothing: every e-invoice is downloaded and parsed by every flow."""

    def get(self, receipt_key: str, modified: str) -> dict | None:
        return None

    def put(self, receipt_key: str, modified: str, document: dict) -> None:
        return None


class SmallPages:
    """Wraps a BBClient so debtor lists use the API's default page size (25)."""

    def __init__(self, bb: Any):
        self._bb = bb

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bb, name)

    def iter_debtors(self, *, page_size: int = DEBTOR_DEFAULT_LIMIT) -> Iterator[Any]:
        return self._bb.iter_debtors(page_size=page_size)


def run_naive(
    rig: Rig,
    flows: list[str],
    *,
    n: int,
    settings: dict[str, dict[str, Any]] | None = None,
) -> list[RunMeasure]:
    """Full run then no-change run of each flow, the naive way, on ``rig``."""
    rig.links = NullLinkStore()
    rig.documents = NullDocumentCache()
    rig.bb = SmallPages(rig.bb)  # type: ignore[assignment]
    measures = []
    for label in ("naive full", "naive no-change"):
        for flow_type in flows:
            # no watermark either: the naive loop reads everything, every time
            rig.watermarks.pop(flow_type, None)
            m, _report = measure_run(
                rig,
                flow_type,
                label,
                n=n,
                settings=(settings or {}).get(flow_type),
                batch_size=1,
                sink=CountingSink(),
            )
            rig.watermarks.pop(flow_type, None)
            measures.append(m)
    return measures
