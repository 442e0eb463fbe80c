"""The run engine, proved with a toy flow over an in-memory source and target.

The toy target behaves like Visma.net where it matters to the engine: a create returns the new
key, a lost answer (OutcomeUnknown) may still have created the record, and every call emits a
transport Exchange to ``on_exchange``. The toy flow follows the Flow contract: its create looks
the record up by the source key first.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from store_fixtures import NullLinkStore

from bbvisma.engine import (
    Action,
    ExchangeRecorder,
    Flow,
    FlowContext,
    RecordResult,
    RunReport,
    SourceItem,
    refused_as_existing,
)
from bbvisma.errors import (
    ApiError,
    AuthError,
    ConfigError,
    DataError,
    NotFound,
    OutcomeUnknown,
    PreconditionFailed,
    ServerError,
)
from bbvisma.linkstore import MemoryLinkStore
from bbvisma.mapper import Mapping, Rule
from bbvisma.transport import Exchange

LOGGER = "bbvisma.test_engine"


def stamp(n: int) -> str:
    """BB's last-modified format, sortable as text."""
    return f"2024-03-05 10:{n // 60:02d}:{n % 60:02d}"


# --------------------------------------------------------------------------------------------
# Toy source, target, sink and flow
# --------------------------------------------------------------------------------------------
class ToySource:
    """Debtors keyed by posting account number; reads in pages and reports them as exchanges."""

    def __init__(self, count: int = 0, *, on_exchange=None, page_size: int = 3):
        self.rows: dict[str, dict] = {}
        self.order: str = "asc"
        self.on_exchange = on_exchange
        self.page_size = page_size
        self.fail_after: int | None = None
        self.extra_stream: list[str] = []  # keys yielded a second time (duplicates)
        for n in range(1, count + 1):
            self.add(str(10000 + n), f"Debtor {n}", "AT", stamp(n))

    def add(self, key, name, country, modified):
        self.rows[key] = {"name": name, "country": country, "modified": modified}

    def change(self, key, modified, **values):
        self.rows[key].update(values, modified=modified)

    def items(self, since: str | None) -> Iterator[SourceItem]:
        keys = [k for k, r in self.rows.items() if since is None or r["modified"] >= since]
        keys.sort(key=lambda k: self.rows[k]["modified"])
        if self.order == "desc":
            keys.reverse()
        elif self.order == "shuffled":
            random.Random(7).shuffle(keys)
        keys += self.extra_stream
        for n, key in enumerate(keys):
            if self.fail_after is not None and n == self.fail_after:
                raise ServerError("BB answered 500 three times", system="bb", status=500)
            if n % self.page_size == 0 and self.on_exchange:
                self.on_exchange(Exchange("bb", "POST", "/settings/get/debtors", 200))
            yield self.get(key)

    def get(self, key: str) -> SourceItem:
        if key not in self.rows:
            raise NotFound(f"debtor {key} not found", system="bb", status=404)
        row = self.rows[key]
        return SourceItem(key, row["modified"], dict(row), label=row["name"])


class ToyTarget:
    """Customers in "Visma.net". ``fail[key]`` holds exceptions raised by the next writes."""

    def __init__(self, *, on_exchange=None):
        self.records: dict[str, dict] = {}
        self.by_ref: dict[str, str] = {}
        self.calls: Counter[str] = Counter()
        self.fail: dict[str, list[BaseException]] = {}
        self.lost_answer: set[str] = set()  # create commits, then the answer is lost
        self.on_exchange = on_exchange
        self._ids = itertools.count(1)

    def _say(self, method, path, status, body=None):
        if self.on_exchange:
            self.on_exchange(Exchange("visma", method, path, status, request_body=body))

    def _maybe_fail(self, ref):
        queue = self.fail.get(ref)
        if queue:
            raise queue.pop(0)

    def lookup(self, ref: str) -> str | None:
        self.calls["lookup"] += 1
        self._say("GET", f"/v1/customer?accountReference={ref}", 200)
        return self.by_ref.get(ref)

    def create(self, ref: str, payload: dict) -> tuple[str, dict]:
        self.calls["create"] += 1
        self._maybe_fail(ref)
        key = f"C{next(self._ids):05d}"
        self.records[key] = dict(payload)
        self.by_ref[ref] = key
        self._say("POST", "/v1/customer", 201, payload)
        if ref in self.lost_answer:
            self.lost_answer.discard(ref)
            raise OutcomeUnknown("timeout after POST /v1/customer", system="visma")
        return key, {"location": f"/v1/customer/{key}"}

    def update(self, key: str, ref: str, payload: dict) -> dict:
        self.calls["update"] += 1
        self._maybe_fail(ref)
        self.records[key].update(payload)
        self._say("PUT", f"/v1/customer/{key}", 204, payload)
        return {"status": 204}

    def writes(self) -> int:
        return self.calls["create"] + self.calls["update"]


class ListSink:
    def __init__(self):
        self.records: list[RecordResult] = []
        self.batches: list[tuple[str | None, list[str]]] = []

    def record(self, result: RecordResult) -> None:
        self.records.append(result)

    def batch_done(self, watermark, results) -> None:
        self.batches.append((watermark, [r.source_key for r in results]))

    def actions(self) -> dict[str, str]:
        return {r.source_key: r.action.value for r in self.records}


class ToyFlow(Flow):
    entity = "customer"

    def source_items(self, since):
        return self.ctx.bb.items(since)

    def fetch_item(self, source_key):
        return self.ctx.bb.get(source_key)

    def build(self, item, link):
        source = {"number": item.key, **item.data}
        return source, self.map(source, link)

    def create(self, item, payload):
        found = self.ctx.visma.lookup(item.key)  # lookup before create (the Flow contract)
        if found:
            return found, {"found": True}
        return self.ctx.visma.create(item.key, payload)

    def update(self, item, payload, link):
        return self.ctx.visma.update(link.target_key, item.key, payload)


class OrderedToyFlow(ToyFlow):
    ordered_source = True


def customer_mapping() -> Mapping:
    return Mapping(
        "customer",
        [
            Rule(10, "number", "number", when="create"),
            Rule(20, "name", "name", "strip", required=True),
            Rule(30, "mainAddress.countryId", "country", "value_map", "countries"),
            Rule(40, "status", None, "constant", "Active", when="create"),
        ],
    )


def make(count=5, *, flow=ToyFlow, batch_size=2, recorder=None, **ctx_kw):
    source = ToySource(count, on_exchange=recorder)
    target = ToyTarget(on_exchange=recorder)
    sink = ListSink()
    ctx = FlowContext(
        settings={},
        mapping=customer_mapping(),
        value_maps={"countries": {"AT": "AT", "DE": "DE"}},
        links=MemoryLinkStore(),
        sink=sink,
        bb=source,
        visma=target,
        batch_size=batch_size,
        logger=logging.getLogger(LOGGER),
        recorder=recorder,
        **ctx_kw,
    )
    return flow(ctx), source, target, sink


# --------------------------------------------------------------------------------------------
# Idempotency and delta
# --------------------------------------------------------------------------------------------
def test_second_run_makes_zero_create_or_update_calls():
    flow, source, target, sink = make(5)
    first = flow.run()
    assert first.counts["create"] == 5 and first.ok
    assert target.calls["create"] == 5
    writes, links_before = target.writes(), flow.ctx.links.calls.copy()

    second = flow.run(since=None)
    assert second.counts == {"create": 0, "update": 0, "skip": 5, "park": 0, "error": 0}
    assert target.writes() == writes  # create-only fields (number, status) did not force updates
    assert target.calls["lookup"] == 5  # no lookup either: skip costs no call at all
    # one link query per batch (3 batches of 2), no single gets, no puts
    used = flow.ctx.links.calls - links_before
    assert used == Counter({"get_many": 3})


def test_changed_record_gives_exactly_one_update():
    flow, source, target, sink = make(5)
    watermark = flow.run().watermark
    assert watermark == stamp(5)
    source.change("10003", stamp(9), name="Debtor 3 GmbH")

    report = flow.run(since=watermark)
    assert report.counts["update"] == 1 and report.counts["create"] == 0
    assert target.calls["update"] == 1
    key = flow.ctx.links.get("customer", "10003").target_key
    assert target.records[key]["name"] == "Debtor 3 GmbH"
    assert report.watermark == stamp(9)
    # the update payload was built in update mode: no create-only fields sent
    update = next(r for r in sink.records if r.action is Action.UPDATE)
    assert "status" not in update.payload and "number" not in update.payload


# --------------------------------------------------------------------------------------------
# Error policy
# --------------------------------------------------------------------------------------------
def test_data_error_parks_the_record_and_the_run_goes_on():
    flow, source, target, sink = make(5)
    source.change("10002", stamp(2), country="XX")
    report = flow.run()
    parked = next(r for r in sink.records if r.source_key == "10002")
    assert parked.action is Action.PARK
    assert parked.cause_key == "data:unmapped:countries:XX"
    assert "countries" in parked.message and "'XX'" in parked.message
    assert parked.source["country"] == "XX" and parked.payload is None
    assert report.counts["create"] == 4 and report.counts["park"] == 1
    assert flow.ctx.links.get("customer", "10002") is None
    assert report.watermark == stamp(5)  # a parked record does not hold the watermark


def test_api_refusal_parks_the_record_with_its_cause():
    flow, source, target, sink = make(3)
    target.fail["10002"] = [
        ApiError("Customer class is invalid", system="visma", status=400, code="VALIDATION")
    ]
    report = flow.run()
    assert sink.actions()["10002"] == "park"
    refused = next(r for r in sink.records if r.source_key == "10002")
    assert refused.cause_key == "api:visma:VALIDATION"
    assert report.watermark == stamp(3)


def test_transient_error_holds_the_watermark_and_next_run_picks_the_record_up():
    flow, source, target, sink = make(5)
    target.fail["10003"] = [ServerError("503 after retries", system="visma", status=503)]
    first = flow.run()
    assert sink.actions()["10003"] == "error"
    assert first.counts["create"] == 4 and first.counts["error"] == 1
    assert first.watermark == stamp(3)  # held at the failed record, not at stamp(5)
    assert not first.ok

    second = flow.run(since=first.watermark)
    assert second.counts == {"create": 1, "update": 0, "skip": 2, "park": 0, "error": 0}
    assert second.watermark == stamp(5)
    assert len(target.records) == 5  # no duplicate
    assert sorted(target.by_ref) == [str(10000 + n) for n in range(1, 6)]


def test_lost_create_answer_is_recovered_by_lookup_without_duplicate():
    flow, source, target, sink = make(3)
    target.lost_answer.add("10002")
    first = flow.run()
    lost = next(r for r in sink.records if r.source_key == "10002")
    assert lost.action is Action.ERROR and lost.cause_key == "outcome_unknown:visma:-"
    assert first.watermark == stamp(2)

    second = flow.run(since=first.watermark)
    assert second.counts["create"] == 1  # found by lookup, linked
    assert target.calls["create"] == 3  # no second POST for 10002
    assert len(target.records) == 3
    assert flow.ctx.links.get("customer", "10002").target_key == target.by_ref["10002"]


def test_auth_error_aborts_the_run_after_recording_it():
    flow, source, target, sink = make(6, flow=OrderedToyFlow)
    target.fail["10003"] = [AuthError("401 invalid_client", system="visma", status=401)]
    report = flow.run()
    assert [r.source_key for r in sink.records] == ["10001", "10002", "10003"]
    failed = sink.records[-1]
    assert failed.action is Action.ERROR and failed.aborted_run
    assert report.aborted == "AuthError: 401 invalid_client"
    assert target.calls["create"] == 3  # nothing after the failed record was tried
    assert sink.batches == [(stamp(2), ["10001", "10002"]), (stamp(3), ["10003"])]
    assert report.watermark == stamp(3)


def test_config_error_from_the_mapping_aborts_the_run():
    flow, source, target, sink = make(4)
    flow.ctx.value_maps = {}  # the value map "countries" is missing: every record would fail
    report = flow.run()
    assert len(sink.records) == 1
    assert report.aborted.startswith("ConfigError: mapping 'customer'")
    assert sink.batches == [(None, ["10001"])]  # unordered source, aborted: keep the old mark
    assert target.calls == Counter()


def test_unexpected_exception_is_an_error_with_traceback_and_the_run_goes_on(caplog):
    flow, source, target, sink = make(4)
    target.fail["10002"] = [KeyError("inventoryId")]
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        report = flow.run()
    broken = next(r for r in sink.records if r.source_key == "10002")
    assert broken.action is Action.ERROR
    assert broken.message == "KeyError: 'inventoryId'"
    assert broken.cause_key == "unexpected:KeyError"
    assert report.counts["create"] == 3 and report.aborted is None
    assert "Traceback" in caplog.text and "_maybe_fail" in caplog.text


def test_unexpected_exception_message_is_redacted():
    from bbvisma.transport import Redactor

    flow, source, target, sink = make(1, redactor=Redactor(["s3cr3t-token"]))
    target.fail["10001"] = [RuntimeError("header Bearer s3cr3t-token rejected")]
    flow.run()
    assert sink.records[0].message == "RuntimeError: header Bearer *** rejected"


def test_source_failure_aborts_after_the_records_already_read():
    flow, source, target, sink = make(6, flow=OrderedToyFlow)
    source.fail_after = 3
    report = flow.run()
    assert [r.source_key for r in sink.records] == ["10001", "10002", "10003"]
    assert report.aborted.startswith("reading the source failed: ServerError")
    assert report.watermark == stamp(3)  # ascending source: records up to 3 are safe
    assert sink.batches[-1] == (stamp(3), ["10003"])


def test_prepare_batch_failure_fails_that_batch_only():
    class FlakyPrepare(ToyFlow):
        def prepare_batch(self, items):
            if items[0].key == "10003":
                raise ServerError("link table locked", status=503)
            super().prepare_batch(items)

    flow, source, target, sink = make(5, flow=FlakyPrepare)
    report = flow.run()
    assert sink.actions() == {
        "10001": "create",
        "10002": "create",
        "10003": "error",
        "10004": "error",
        "10005": "create",
    }
    assert report.watermark == stamp(3)


def test_after_write_data_error_parks_with_target_key_and_resends_next_time():
    class TotalsCheck(ToyFlow):
        bad = {"10002"}

        def after_write(self, item, action, payload, link, response):
            if item.key in self.bad:
                raise DataError("Visma total 119.00 differs from BB 118.99", cause="totals")

    flow, source, target, sink = make(3, flow=TotalsCheck)
    first = flow.run()
    flagged = next(r for r in sink.records if r.source_key == "10002")
    assert flagged.action is Action.PARK and flagged.cause_key == "data:totals"
    assert flagged.target_key == target.by_ref["10002"]
    assert flow.ctx.links.get("customer", "10002").content_hash is None
    assert first.watermark == stamp(3)

    TotalsCheck.bad = set()
    replayed = flow.replay(["10002"])
    assert replayed.counts["update"] == 1  # re-sent, not created again
    assert len(target.records) == 3


class BatchTotalsCheck(ToyFlow):
    """Checks a batch's written records at once; notes what the sink had seen by then."""

    bad: set[str] = set()
    broken: Exception | None = None

    def check_batch(self, written):
        self.checked.append([item.key for item, _result in written])
        self.seen_by_sink.append(len(self.ctx.sink.records))
        if self.broken is not None:
            raise self.broken
        return {
            item.key: DataError("Visma total 119.00 differs from BB 118.99", cause="totals")
            for item, _result in written
            if item.key in self.bad
        }

    def __init__(self, ctx):
        super().__init__(ctx)
        self.checked: list[list[str]] = []
        self.seen_by_sink: list[int] = []


def test_check_batch_flags_records_of_the_batch_before_the_sink_sees_them():
    flow, source, target, sink = make(5, flow=BatchTotalsCheck, batch_size=3)
    flow.bad = {"10002"}
    flow.run()
    source.change("10004", stamp(9), name="Changed")
    second = flow.run(since=None)
    # once per batch, with the written records only (the skipped ones of the 2nd run left out)
    assert flow.checked == [["10001", "10002", "10003"], ["10004", "10005"], ["10002"], ["10004"]]
    assert flow.seen_by_sink == [0, 3, 5, 8]  # a batch's results come after its check
    flagged = [r for r in sink.records if r.source_key == "10002"]
    assert [r.action for r in flagged] == [Action.PARK, Action.PARK]  # sent again, flagged again
    assert flagged[0].cause_key == "data:totals" and flagged[0].target_key == target.by_ref["10002"]
    assert flow.ctx.links.get("customer", "10002").content_hash is None
    assert flow.ctx.links.get("customer", "10001").content_hash is not None
    assert second.counts == {"create": 0, "update": 1, "skip": 3, "park": 1, "error": 0}
    assert len(target.records) == 5  # a flagged record is updated next time, never re-created


def test_check_batch_failing_as_a_whole_fails_every_written_record_alike():
    flow, source, target, sink = make(3, flow=BatchTotalsCheck, batch_size=5)
    flow.broken = ServerError("Visma.net answered 503 three times", system="visma", status=503)
    report = flow.run()
    assert report.counts["error"] == 3 and report.watermark == stamp(1)  # read again
    assert {r.message for r in sink.records} == {"ServerError: Visma.net answered 503 three times"}
    assert all(r.target_key for r in sink.records)  # created all the same: the log says which
    flow.broken = None
    again = flow.run()
    assert again.counts["skip"] == 3 and len(target.records) == 3


def test_flows_without_a_batch_check_record_each_result_as_it_happens():
    class Watching(ListSink):
        def record(self, result):
            super().record(result)
            self.creates_then.append(target.calls["create"])

    flow, source, target, _sink = make(3, batch_size=3)
    sink = flow.ctx.sink = Watching()
    sink.creates_then = []
    flow.run()
    assert sink.creates_then == [1, 2, 3]


def test_index_pays_off_for_a_batch_with_many_records_to_create_never_in_a_dry_run():
    flow, source, target, sink = make(4)
    flow.INDEX_THRESHOLD = 3
    items = [source.get(k) for k in sorted(source.rows)]
    flow.prepare_batch(items)
    assert flow.index_pays_off(items)
    flow.ctx.links.put("customer", "10001", "C1", "h")
    flow.ctx.links.put("customer", "10002", None, "h", {"refused": "no"})  # still to create
    flow.prepare_batch(items)
    assert flow.index_pays_off(items)
    flow.ctx.links.put("customer", "10003", "C3", "h")
    flow.prepare_batch(items)
    assert not flow.index_pays_off(items)
    dry, dry_source, _target, _sink = make(4, dry_run=True)
    dry.INDEX_THRESHOLD = 1
    dry_items = [dry_source.get(k) for k in sorted(dry_source.rows)]
    dry.prepare_batch(dry_items)
    assert not dry.index_pays_off(dry_items)


# --------------------------------------------------------------------------------------------
# Dry run
# --------------------------------------------------------------------------------------------
def test_dry_run_calls_nothing_and_changes_no_link():
    flow, source, target, sink = make(4)
    flow.run()
    source.change("10002", stamp(7), name="Renamed")
    source.add("20000", "New one", "DE", stamp(8))
    links: MemoryLinkStore = flow.ctx.links
    snapshot = {k: links.get("customer", k) for k in source.rows}
    calls_before, puts_before = target.calls.copy(), links.calls["put"]
    flow.ctx.dry_run = True
    sink.records.clear(), sink.batches.clear()

    report = flow.run(since=stamp(1))
    assert sink.actions() == {
        "10001": "skip",
        "10002": "update",
        "10003": "skip",
        "10004": "skip",
        "20000": "create",
    }
    assert all(r.dry_run for r in sink.records)
    would_create = next(r for r in sink.records if r.source_key == "20000")
    assert would_create.payload == {
        "number": "20000",
        "name": "New one",
        "mainAddress": {"countryId": "DE"},
        "status": "Active",
    }
    assert target.calls == calls_before
    assert links.calls["put"] == puts_before
    assert {k: links.get("customer", k) for k in source.rows} == snapshot
    assert report.watermark is None and {w for w, _keys in sink.batches} == {None}
    assert report.dry_run and "dry run" in report.summary()


# --------------------------------------------------------------------------------------------
# Batches and watermark
# --------------------------------------------------------------------------------------------
def test_batch_done_once_per_batch_with_the_watermark_so_far_for_an_ascending_source():
    flow, source, target, sink = make(5, flow=OrderedToyFlow)
    flow.run()
    assert sink.batches == [
        (stamp(2), ["10001", "10002"]),
        (stamp(4), ["10003", "10004"]),
        (stamp(5), ["10005"]),
    ]


def test_unordered_source_moves_the_watermark_only_with_the_last_batch():
    flow, source, target, sink = make(5)
    source.order = "desc"
    report = flow.run()
    assert sink.batches == [
        (None, ["10005", "10004"]),
        (None, ["10003", "10002"]),
        (stamp(5), ["10001"]),
    ]
    assert report.watermark == stamp(5)


def test_unordered_source_with_an_error_ends_at_the_lowest_failed_record():
    flow, source, target, sink = make(6)
    source.order = "shuffled"
    target.fail["10004"] = [ServerError("503", status=503)]
    target.fail["10002"] = [ServerError("503", status=503)]
    report = flow.run()
    assert report.watermark == stamp(2)
    assert [w for w, _keys in sink.batches] == [None, None, stamp(2)]


def test_ascending_source_that_goes_out_of_order_stops_moving_the_watermark_early():
    flow, source, target, sink = make(5, flow=OrderedToyFlow)
    # the flow claims ascending order; the source breaks it in the second batch
    order = ("10001", "10002", "10004", "10003", "10005")
    source.items = lambda since: iter([source.get(k) for k in order])
    flow.run()
    assert sink.batches == [
        (stamp(2), ["10001", "10002"]),
        (None, ["10004", "10003"]),
        (stamp(5), ["10005"]),  # the completed run still ends at its highest record
    ]


def test_error_without_modified_keeps_the_previous_watermark():
    flow, source, target, sink = make(3)
    source.rows["10002"]["modified"] = None  # a record the source cannot place in time
    target.fail["10002"] = [ServerError("503", status=503)]
    source.items = lambda since: iter([source.get(k) for k in ("10001", "10002", "10003")])
    report = flow.run()
    assert report.counts["error"] == 1
    assert report.watermark is None


def test_a_record_twice_in_one_batch_is_created_once():
    flow, source, target, sink = make(2, batch_size=10)
    source.extra_stream = ["10001"]
    report = flow.run()
    assert [r.action.value for r in sink.records] == ["create", "create", "skip"]
    assert target.calls["create"] == 2 and report.batches == 1


# --------------------------------------------------------------------------------------------
# Exchanges
# --------------------------------------------------------------------------------------------
def test_exchanges_are_recorded_per_record():
    page_reads: list[dict] = []
    recorder = ExchangeRecorder(forward=page_reads.append)
    flow, source, target, sink = make(4, recorder=recorder)
    flow.run()
    for result in sink.records:
        assert [(e["system"], e["method"]) for e in result.exchanges] == [
            ("visma", "GET"),
            ("visma", "POST"),
        ]
        assert result.source_key in result.exchanges[0]["path"]
        assert result.exchanges[1]["request"]["name"] == result.label
    assert [e["path"] for e in page_reads] == ["/settings/get/debtors"] * 2  # pages of 3
    assert recorder.calls == Counter({"visma": 8, "bb": 2})

    sink.records.clear()
    flow.run()
    assert all(r.exchanges == [] for r in sink.records)  # a skip makes no call


def test_exchange_recorder_bounds_a_record_and_says_how_many_it_left_out():
    recorder = ExchangeRecorder(max_per_record=2)
    recorder.begin()
    for n in range(5):
        recorder(Exchange("visma", "GET", f"/v1/x/{n}", 200))
    kept = recorder.end()
    assert [e.get("path") for e in kept] == ["/v1/x/0", "/v1/x/1", None]
    assert kept[-1] == {"note": "3 more exchanges not kept"}
    recorder(Exchange("bb", "POST", "/receipts/get", 200))  # outside a record
    assert recorder.unattributed == 1


# --------------------------------------------------------------------------------------------
# Replay
# --------------------------------------------------------------------------------------------
def test_replay_reprocesses_a_parked_record_after_the_mapping_is_fixed():
    flow, source, target, sink = make(4)
    source.change("10003", stamp(3), name="   ")  # required name is empty
    first = flow.run()
    assert sink.actions()["10003"] == "park"
    watermark = first.watermark

    fixed = Mapping.from_rows(
        "customer",
        [
            *[row for row in flow.ctx.mapping.to_rows() if row["target"] != "name"],
            {
                "sequence": 20,
                "target": "name",
                "source": "name",
                "transform": "strip",
                "then": "default:(no name)",
                "required": True,
            },
        ],
    )
    flow.ctx.mapping = fixed
    sink.records.clear(), sink.batches.clear()
    report = flow.replay(["10003", "10001", "99999"])
    assert sink.actions() == {"10003": "create", "10001": "skip", "99999": "park"}
    assert target.records[target.by_ref["10003"]]["name"] == "(no name)"
    missing = next(r for r in sink.records if r.source_key == "99999")
    assert missing.cause_key == "not_found:bb:-"
    assert report.watermark is None and sink.batches[0][0] is None
    assert first.watermark == watermark  # replay reported no watermark to move


def test_replay_stops_on_an_auth_error():
    flow, source, target, sink = make(3, batch_size=10)

    def refuse(key):
        raise AuthError("401", system="bb", status=401)

    source.get = refuse
    report = flow.replay(["10001", "10002"])
    assert report.aborted == "AuthError: 401"
    assert len(sink.records) == 1


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------
class GeneratedFlow(Flow):
    """Generates its source lazily and writes nowhere."""

    entity = "customer"
    ordered_source = True

    def __init__(self, ctx, count):
        super().__init__(ctx)
        self.count = count
        self.created = 0

    def source_items(self, since):
        for n in range(self.count):
            data = {"number": f"{n:06d}", "name": f"Debtor {n} " + "x" * 200, "country": "AT"}
            yield SourceItem(data["number"], f"2024-03-05 {n:09d}", data)

    def fetch_item(self, source_key):
        raise NotImplementedError

    def build(self, item, link):
        return item.data, self.map(item.data, link)

    def create(self, item, payload):
        self.created += 1
        return f"C{item.key}", {"location": f"/v1/customer/C{item.key}"}

    def update(self, item, payload, link):
        raise AssertionError("no update expected")


class CountingSink:
    def __init__(self):
        self.records = 0
        self.batches = 0

    def record(self, result):
        self.records += 1

    def batch_done(self, watermark, results):
        self.batches += 1


def peak_of_run(count: int) -> tuple[int, RunReport, CountingSink]:
    sink = CountingSink()
    ctx = FlowContext(
        settings={},
        mapping=customer_mapping(),
        value_maps={"countries": {"AT": "AT"}},
        links=NullLinkStore(),
        sink=sink,
        batch_size=50,
    )
    flow = GeneratedFlow(ctx, count)
    tracemalloc.start()
    try:
        report = flow.run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert flow.created == count
    return peak, report, sink


def test_a_run_over_20000_items_keeps_no_results_and_memory_stays_flat():
    small_peak, small, _ = peak_of_run(2_000)
    big_peak, big, sink = peak_of_run(20_000)
    assert big.results is None and sink.records == 20_000 and sink.batches == 400
    assert big.counts["create"] == 20_000 and big.watermark == "2024-03-05 000019999"
    # ten times the records: if results (or items) were kept, the peak would grow ~10x
    assert big_peak < 2.5 * small_peak, (small_peak, big_peak)


def test_keep_results_keeps_them_when_asked():
    flow, source, target, sink = make(3, keep_results=True)
    report = flow.run()
    assert [r.source_key for r in report.results] == ["10001", "10002", "10003"]


def test_flow_without_entity_is_a_config_error():
    class Nameless(ToyFlow):
        entity = ""

    with pytest.raises(ConfigError):
        Nameless(FlowContext({}, None, {}, MemoryLinkStore()))


# --------------------------------------------------------------------------------------------
# Concurrency: the per-record guard and the second look under it
# --------------------------------------------------------------------------------------------
class GuardLog(MemoryLinkStore):
    """Records each guard taken and the link reads made while one is held. ``meanwhile``:
    key -> a function run just before that record's guard is taken (another run's write)."""

    def __init__(self):
        super().__init__()
        self.guarded: list[tuple[str, str]] = []
        self.reads_under_guard = 0
        self.meanwhile: dict[str, Callable[[], None]] = {}
        self._held = 0

    def get(self, entity, source_key):
        if self._held:
            self.reads_under_guard += 1
        return super().get(entity, source_key)

    @contextlib.contextmanager
    def guard(self, entity, source_key):
        other_run = self.meanwhile.pop(source_key, None)
        if other_run is not None:
            other_run()
        with super().guard(entity, source_key):
            self.guarded.append((entity, source_key))
            self._held += 1
            try:
                yield
            finally:
                self._held -= 1


def make_guarded(count=3, **kw):
    flow, source, target, sink = make(count, **kw)
    flow.ctx.links = GuardLog()
    return flow, source, target, sink


def test_each_write_takes_the_record_guard_and_rereads_the_link_under_it():
    flow, source, target, sink = make_guarded(3)
    flow.run()
    assert flow.ctx.links.guarded == [("customer", k) for k in ("10001", "10002", "10003")]
    assert flow.ctx.links.reads_under_guard == 3  # the second look, one per write


def test_a_skip_takes_no_guard_and_no_extra_read():
    flow, source, target, sink = make_guarded(3)
    flow.run()
    links = flow.ctx.links
    links.guarded.clear()
    before = links.calls.copy()
    report = flow.run()
    assert report.counts["skip"] == 3
    assert links.guarded == []
    assert links.calls - before == Counter({"get_many": 2})  # still one query per batch


def test_a_dry_run_takes_no_guard():
    flow, source, target, sink = make_guarded(3, dry_run=True)
    report = flow.run()
    assert report.counts["create"] == 3 and target.calls["create"] == 0
    assert flow.ctx.links.guarded == []


def other_run(flow: ToyFlow, key: str):
    """Another run of the same flow (its own instance, same link store and target) that
    handles ``key`` now -- between this run's batch prefetch and its write."""

    def run() -> None:
        twin = ToyFlow(flow.ctx)
        twin.prepare_batch([flow.ctx.bb.get(key)])
        twin.process(flow.ctx.bb.get(key))

    return run


def test_a_record_created_by_another_run_after_the_prefetch_is_skipped_not_created_again():
    flow, source, target, sink = make_guarded(3, batch_size=3)
    flow.ctx.links.meanwhile["10002"] = other_run(flow, "10002")
    report = flow.run()
    assert target.calls["create"] == 3  # 10002 once, by the other run
    assert sink.actions()["10002"] == "skip"
    skipped = next(r for r in sink.records if r.source_key == "10002")
    assert skipped.target_key == target.by_ref["10002"]
    assert "another run" in skipped.message
    assert report.ok


def test_a_record_another_run_sent_with_older_data_is_updated_on_its_target():
    flow, source, target, sink = make_guarded(2, batch_size=2)

    def older_version_sent() -> None:
        source.change("10002", stamp(2), name="Debtor 2 (old)")
        other_run(flow, "10002")()
        source.change("10002", stamp(2), name="Debtor 2")

    flow.ctx.links.meanwhile["10002"] = older_version_sent
    flow.run()
    assert target.calls["create"] == 2 and target.calls["update"] == 1
    key = target.by_ref["10002"]
    assert sink.actions()["10002"] == "update"
    assert target.records[key]["name"] == "Debtor 2"


def test_the_second_look_alone_prevents_a_duplicate_even_without_lookup_before_create():
    """The same interleaving with a flow that has no lookup before create: only the engine's
    second look at the link under the guard stands between the stale prefetch and a second
    record in the target (without it, ``create`` would be called 3 times)."""

    class NoLookupFlow(ToyFlow):
        def create(self, item, payload):
            return self.ctx.visma.create(item.key, payload)

    flow, source, target, sink = make(2, flow=NoLookupFlow, batch_size=2)
    links = GuardLog()
    flow.ctx.links = links
    links.meanwhile["10002"] = lambda: NoLookupFlow(flow.ctx).process(source.get("10002"))
    flow.run()
    assert target.calls["create"] == 2  # the guard's second look saw the other run's link
    assert sink.actions()["10002"] == "skip"


# --------------------------------------------------------------------------------------------
# create_or_adopt: a lost answer or a refusal "already exists" resolved by a second lookup
# --------------------------------------------------------------------------------------------
def visma_refusal(message: str, status: int = 400) -> ApiError:
    return ApiError(
        f"Visma.net {status} on POST /v1/customer: {message}", system="visma", status=status
    )


class Calls:
    def __init__(self, found=None, create_raises=()):
        self.found = found
        self.raises = list(create_raises)
        self.log: list[str] = []

    def find(self):
        self.log.append("find")
        return self.found

    def create(self):
        self.log.append("create")
        if self.raises:
            raise self.raises.pop(0)
        return "NEW"


def test_create_or_adopt_creates_when_nothing_goes_wrong():
    calls = Calls()
    assert Flow.create_or_adopt(calls.find, calls.create) == ("NEW", "created")
    assert calls.log == ["create"]


def test_create_refused_as_already_existing_is_looked_up_again_and_adopted():
    refusal = visma_refusal("number: A customer with the ID '10001' already exists.")
    calls = Calls(found="10001", create_raises=[refusal])
    assert Flow.create_or_adopt(calls.find, calls.create) == ("10001", "adopted")
    assert calls.log == ["create", "find"]  # never sent a second time


def test_create_refused_for_its_data_propagates_without_a_lookup():
    refusal = visma_refusal("mainAddress.countryId: Country 'XX' not found.")
    calls = Calls(found="10001", create_raises=[refusal])
    with pytest.raises(ApiError) as raised:
        Flow.create_or_adopt(calls.find, calls.create)
    assert raised.value is refusal and calls.log == ["create"]


def test_refused_as_existing_but_not_found_propagates_the_refusal():
    refusal = visma_refusal("number: A customer with the ID '10001' already exists.")
    calls = Calls(found=None, create_raises=[refusal])
    with pytest.raises(ApiError) as raised:
        Flow.create_or_adopt(calls.find, calls.create)
    assert raised.value is refusal and calls.log == ["create", "find"]


def test_lost_create_answer_found_is_recovered_and_not_found_is_sent_once_more():
    lost = OutcomeUnknown("timeout after POST", system="visma")
    committed = Calls(found="C1", create_raises=[lost])
    assert Flow.create_or_adopt(committed.find, committed.create) == ("C1", "recovered")
    assert committed.log == ["create", "find"]
    not_committed = Calls(found=None, create_raises=[lost])
    assert Flow.create_or_adopt(not_committed.find, not_committed.create) == ("NEW", "created")
    assert not_committed.log == ["create", "find", "create"]


def test_lost_answer_then_refused_as_existing_on_the_resend_is_adopted():
    lost = OutcomeUnknown("timeout after POST", system="visma")
    refusal = visma_refusal("number: A customer with the ID '10001' already exists.")
    calls = Calls(create_raises=[lost, refusal])
    answers = iter([None, "10001"])  # not there yet at the first look, there at the second
    calls.find = lambda: calls.log.append("find") or next(answers)
    assert Flow.create_or_adopt(calls.find, calls.create) == ("10001", "adopted")
    assert calls.log == ["create", "find", "create", "find"]


def test_unrecognizable_record_is_never_resent_after_a_lost_answer():
    lost = OutcomeUnknown("timeout after POST", system="visma")
    calls = Calls(create_raises=[lost])
    with pytest.raises(OutcomeUnknown):
        Flow.create_or_adopt(calls.find, calls.create, recognizable=False)
    assert calls.log == ["create"]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (visma_refusal("number: A customer with the ID '10001' already exists."), True),
        (visma_refusal("inventoryNumber: An item with the ID 'JB007' already exists."), True),
        (visma_refusal("Another process has added the 'Customer' record.", 409), True),
        (visma_refusal("duplicate key value violates unique constraint", 409), True),
        (visma_refusal("Order cannot be shipped in full (Ship Complete).", 409), False),
        (visma_refusal("mainAddress.countryId: Country 'XX' not found."), False),
        (
            PreconditionFailed("412: the record already exists in another version", status=412),
            False,
        ),
        (ServerError("500: duplicate", status=500), False),
        (DataError("customer already exists elsewhere", cause="number_taken:1"), False),
    ],
)
def test_refused_as_existing_recognizes_only_already_exists_refusals(error, expected):
    assert refused_as_existing(error) is expected


# --------------------------------------------------------------------------------------------
# Link durability: only the link that no lookup could replace must reach the disk on its own
# --------------------------------------------------------------------------------------------
class DurabilityLog(MemoryLinkStore):
    """Records ``(source_key, durable)`` for every put."""

    def __init__(self):
        super().__init__()
        self.puts: list[tuple[str, bool]] = []

    def put(self, entity, source_key, target_key, content_hash, meta=None, *, durable=True):
        self.puts.append((source_key, durable))
        return super().put(entity, source_key, target_key, content_hash, meta)


class KeylessToyFlow(ToyFlow):
    """A flow whose created records its lookup could not find again."""

    def lookup_finds(self, item, payload):
        return False


def test_links_of_records_the_lookup_finds_are_not_asked_to_be_durable():
    flow, source, _target, _sink = make(2)
    flow.ctx.links = store = DurabilityLog()
    flow.run()
    assert store.puts == [("10001", False), ("10002", False)]
    source.change("10001", "2099-01-01T00:00:00", name="Renamed")
    store.puts.clear()
    flow.run(since=None)
    assert store.puts == [("10001", False)], "an update's new hash is never durable"


def test_the_link_of_a_create_no_lookup_could_find_again_is_durable():
    flow, _source, _target, _sink = make(2, flow=KeylessToyFlow)
    flow.ctx.links = store = DurabilityLog()
    flow.run()
    assert store.puts == [("10001", True), ("10002", True)]
