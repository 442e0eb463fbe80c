"""Flow.run_items: the batches of a run fanned out to parallel workers (queue_job in Odoo).

The reader streams ``source_items`` once and hands each worker its share; a worker processes
its items like a run's batches -- one result per record, links stored, unchanged records
skipped -- without reading the source again and without moving the watermark.
"""

from __future__ import annotations

from collections.abc import Iterator

from bbvisma.engine import Action, Flow, FlowContext, SourceItem
from bbvisma.errors import AuthError, DataError
from bbvisma.linkstore import MemoryLinkStore


class Sink:
    def __init__(self):
        self.results = []
        self.batches = []

    def record(self, result):
        self.results.append(result)

    def batch_done(self, watermark, results):
        self.batches.append((watermark, [r.source_key for r in results]))


class Toy(Flow):
    """Source: ``ROWS`` (key -> name); target: ``created`` (key -> name)."""

    entity = "toy"
    ROWS: dict[str, str] = {}

    def __init__(self, ctx):
        super().__init__(ctx)
        self.created: dict[str, str] = {}
        self.reads = 0
        self.fetches = 0

    def source_items(self, since) -> Iterator[SourceItem]:
        self.reads += 1
        for key, name in self.ROWS.items():
            yield SourceItem(key, f"2026-01-0{key}", {"name": name})

    def fetch_item(self, source_key):
        self.fetches += 1
        return SourceItem(source_key, None, {"name": self.ROWS[source_key]})

    def build(self, item, link):
        if item.data["name"] == "park me":
            raise DataError("no name", cause="no_name")
        return dict(item.data), {"name": item.data["name"]}

    def create(self, item, payload):
        if payload["name"] == "wrong key":
            raise AuthError("the target refused the key", system="visma", status=401)
        self.created[item.key] = payload["name"]
        return f"T{item.key}", {"ok": True}

    def update(self, item, payload, link):
        self.created[item.key] = payload["name"]
        return {"ok": True}


def context(links, sink, batch_size=2):
    return FlowContext(
        settings={}, mapping=None, value_maps={}, links=links, sink=sink, batch_size=batch_size
    )


def test_items_read_elsewhere_are_processed_in_batches_without_reading_the_source():
    Toy.ROWS = {"1": "a", "2": "b", "3": "park me", "4": "d", "5": "e"}
    reader = Toy(context(MemoryLinkStore(), None))
    items = list(reader.source_items(None))
    links, sink = MemoryLinkStore(), Sink()
    worker = Toy(context(links, sink))
    report = worker.run_items(items[:3])
    assert (worker.reads, worker.fetches) == (0, 0)
    assert report.counts["create"] == 2 and report.counts["park"] == 1
    assert sink.batches == [(None, ["1", "2"]), (None, ["3"])], "batches move no watermark"
    assert report.watermark is None
    assert links.get("toy", "1").target_key == "T1"
    # another worker, the rest; then a retried batch only skips what is linked already
    other = Toy(context(links, Sink()))
    assert other.run_items(items[3:]).counts["create"] == 2
    again = Toy(context(links, Sink())).run_items(items[:3])
    assert again.counts["skip"] == 2 and again.counts["park"] == 1
    assert again.counts["create"] == 0


def test_an_aborting_record_stops_the_batch():
    Toy.ROWS = {"1": "a", "2": "wrong key", "3": "c"}
    items = list(Toy(context(MemoryLinkStore(), None)).source_items(None))
    sink = Sink()
    report = Toy(context(MemoryLinkStore(), sink, batch_size=5)).run_items(items)
    assert report.aborted and "refused the key" in report.aborted
    assert [r.action for r in sink.results] == [Action.CREATE, Action.ERROR]


def test_no_items_make_an_empty_report():
    report = Toy(context(MemoryLinkStore(), Sink())).run_items([])
    assert report.items == 0 and report.batches == 0
