"""Shared wiring for the flow tests: both simulators in-process, both clients, a context.

Import the helpers (``from tests.flow_fixtures import ...`` is not needed: pytest puts the tests
folder on ``sys.path``, so ``from flow_fixtures import Rig, make_rig``). A :class:`Rig` holds
one BuchhaltungsButler simulator, one Visma.net simulator, clients wired to them in-process
(no sockets), a link store and a document cache that survive between runs -- what a scheduled
integration keeps between two runs -- and builds a fresh :class:`FlowContext` per run.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from conftest import BBContractGuard

from bbvisma.buchhaltungsbutler.client import BBClient
from bbvisma.engine import ExchangeRecorder, FlowContext, RecordResult
from bbvisma.linkstore import MemoryDocumentCache, MemoryLinkStore
from bbvisma.simulators.buchhaltungsbutler import BBSimulator
from bbvisma.simulators.buchhaltungsbutler import default_seed as bb_default_seed
from bbvisma.simulators.common import FakeClock, serve, sim_http_client
from bbvisma.simulators.vismanet import ContractGuard, VismaSimulator
from bbvisma.simulators.vismanet import default_seed as visma_default_seed
from bbvisma.vismanet.client import VismaClient

BB_BASE = "http://127.0.0.1/api/v1"
VISMA_BASE = "http://127.0.0.1"


def bb_credentials(seed: dict[str, Any]) -> dict[str, str]:
    client = seed["api_clients"][0]
    return {
        "api_client": client["api_client"],
        "api_secret": client["api_secret"],
        "api_key": seed["companies"][0]["api_key"],
    }


def visma_credentials(seed: dict[str, Any]) -> dict[str, str]:
    section = seed.get("vismanet", seed)
    client = section["credentials"]["clients"][0]
    tenant = section["credentials"]["tenants"][0]
    return {
        "client_id": client["client_id"],
        "client_secret": client["client_secret"],
        "tenant_id": tenant["tenant_id"],
        "company_id": tenant["companies"][0],
    }


class ListSink:
    """A RunSink that keeps everything (tests only). ``fail_after``: raise after that many
    records, like a worker killed in the middle of a batch."""

    def __init__(self, fail_after: int | None = None):
        self.results: list[RecordResult] = []
        self.batches: list[tuple[str | None, int]] = []
        self.fail_after = fail_after

    def record(self, result: RecordResult) -> None:
        self.results.append(result)
        if self.fail_after is not None and len(self.results) >= self.fail_after:
            raise KeyboardInterrupt("worker killed (test)")

    def batch_done(self, watermark: str | None, results: list[RecordResult]) -> None:
        self.batches.append((watermark, len(results)))


@dataclass
class Rig:
    """Two simulators, two clients and what persists between runs."""

    clock: FakeClock
    bb_sim: BBSimulator
    visma_sim: VismaSimulator
    bb: BBClient
    visma: VismaClient
    recorder: ExchangeRecorder
    #: contract guards around both simulators: every answer is checked against the specs
    bb_guard: Any = None
    visma_guard: Any = None
    links: MemoryLinkStore = field(default_factory=MemoryLinkStore)
    documents: MemoryDocumentCache = field(default_factory=MemoryDocumentCache)
    api_key: str = ""
    #: watermark per flow entity, as the Odoo flow record keeps it
    watermarks: dict[str, str | None] = field(default_factory=dict)

    def context(
        self,
        *,
        mapping=None,
        value_maps: dict[str, dict[str, str]] | None = None,
        settings: dict[str, Any] | None = None,
        sink=None,
        batch_size: int = 50,
        dry_run: bool = False,
    ) -> FlowContext:
        return FlowContext(
            settings=dict(settings or {}),
            mapping=mapping,
            value_maps=value_maps if value_maps is not None else {},
            links=self.links,
            sink=sink,
            bb=self.bb,
            visma=self.visma,
            documents=self.documents,
            dry_run=dry_run,
            batch_size=batch_size,
            recorder=self.recorder,
            keep_results=True,
            now=lambda: dt.datetime.fromtimestamp(self.clock.now(), dt.timezone.utc),
        )

    # -- counting -----------------------------------------------------------------------------
    def visma_requests(self) -> list[dict[str, Any]]:
        return [e for e in self.visma_sim.requests.entries if not e["path"].startswith("/_sim")]

    def visma_writes(self) -> list[dict[str, Any]]:
        """API writes (POST/PUT) sent to Visma.net, token requests left out."""
        return [
            e
            for e in self.visma_requests()
            if e["method"] in ("POST", "PUT") and not e["path"].startswith("/connect")
        ]

    def contract_violations(self) -> list[str]:
        return [*self.bb_guard.violations, *self.visma_guard.violations]

    def clear_logs(self) -> None:
        self.visma_sim.requests.clear()
        self.bb_sim.requests.clear()


def make_rig(
    *,
    bb_seed: dict[str, Any] | None = None,
    visma_seed: dict[str, Any] | None = None,
    bb_quota: int | None = None,
) -> Rig:
    """Both simulators with their default seeds (or the given ones) on one fake clock."""
    clock = FakeClock()
    bb_section = copy.deepcopy(bb_seed) if bb_seed is not None else bb_default_seed()
    visma_section = copy.deepcopy(visma_seed) if visma_seed is not None else visma_default_seed()
    bb_sim = BBSimulator(clock=clock, quota_per_minute=bb_quota)
    bb_sim.load_seed(bb_section)
    visma_sim = VismaSimulator(clock=clock)
    visma_sim.load_seed(visma_section)
    recorder = ExchangeRecorder()
    bb_guard = BBContractGuard(bb_sim)
    visma_guard = ContractGuard(visma_sim)
    bb = BBClient(
        base_url=BB_BASE,
        **bb_credentials(bb_section),
        http_client=sim_http_client(bb_guard, BB_BASE),
        on_exchange=recorder,
        sleep=clock.sleep,
        clock=clock.monotonic,
        backoff_initial=0.0,
    )
    visma = VismaClient(
        base_url=VISMA_BASE,
        token_url=VISMA_BASE + "/connect/token",
        **visma_credentials(visma_section),
        http_client=sim_http_client(visma_guard, VISMA_BASE),
        on_exchange=recorder,
        sleep=clock.sleep,
        clock=clock.monotonic,
    )
    return Rig(
        clock=clock,
        bb_sim=bb_sim,
        visma_sim=visma_sim,
        bb=bb,
        visma=visma,
        recorder=recorder,
        bb_guard=bb_guard,
        visma_guard=visma_guard,
        api_key=bb_credentials(bb_section)["api_key"],
    )


@contextmanager
def over_loopback_http(
    rig: Rig,
    *,
    bb_seed: dict[str, Any] | None = None,
    visma_seed: dict[str, Any] | None = None,
) -> Iterator[Rig]:
    """The rig's guarded simulators served on loopback ports, the rig's clients talking to them
    over real sockets for the block (``bb_seed``/``visma_seed``: what the rig was made with,
    for the credentials; default seeds when not given)."""
    bb_seed = bb_seed if bb_seed is not None else bb_default_seed()
    visma_seed = visma_seed if visma_seed is not None else visma_default_seed()
    with serve([(0, rig.bb_guard), (0, rig.visma_guard)]) as served:
        bb_url, visma_url = served.urls
        with (
            BBClient(
                base_url=bb_url + BB_BASE.removeprefix("http://127.0.0.1"),
                **bb_credentials(bb_seed),
                sleep=rig.clock.sleep,
                clock=rig.clock.monotonic,
            ) as bb,
            VismaClient(
                base_url=visma_url,
                token_url=visma_url + "/connect/token",
                **visma_credentials(visma_seed),
                timeout=5.0,
                sleep=rig.clock.sleep,
                clock=rig.clock.monotonic,
            ) as visma,
        ):
            rig.bb, rig.visma = bb, visma
            yield rig


# --------------------------------------------------------------------------------------------
# A Visma.net tenant that can book every reference e-invoice
# --------------------------------------------------------------------------------------------
#: the foreign VAT rates of the reference samples (NL, NO, DK, SE, FR, HU, HR ...): a German
#: seller books them as OSS / foreign VAT; each gets its own VAT and VAT category
FOREIGN_RATES = ("5.5", "6", "10", "12", "15", "20", "21", "25", "27")


def _category_id(rate: str) -> str:
    return "OSS" + rate.replace(".", "")


def foreign_vat_seed() -> dict[str, Any]:
    """The default Visma.net seed plus foreign-rate VAT categories and the two countries of
    seed debtors the demo tenant lacks (AF, HR)."""
    seed = visma_default_seed()
    section = seed.get("vismanet", seed)
    for rate in FOREIGN_RATES:
        vat_id = "VAT" + rate.replace(".", "")
        section["vats"].append(
            {
                "vatId": vat_id,
                "description": f"Foreign VAT {rate} %",
                "type": "Sales",
                "calculateOn": "ItemAmount",
                "schedules": [
                    {
                        "startDate": "2007-01-01T00:00:00",
                        "vatRate": float(rate),
                        "groupType": "Output",
                    }
                ],
            }
        )
        section["vatCategories"].append(
            {
                "vatCategoryId": _category_id(rate),
                "description": f"Foreign VAT {rate} %",
                "active": True,
                "vatCategoryLines": [{"vatId": vat_id, "type": "Sales"}],
            }
        )
    section["countries"].update({"AF": "Afghanistan", "HR": "Kroatien"})
    return seed


def foreign_vat_maps(value_maps: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """``value_maps`` plus ``vat_codes`` (and the categories' ``vat_ids``) for the foreign
    rates of :func:`foreign_vat_seed`."""
    maps = copy.deepcopy(value_maps)
    for rate in FOREIGN_RATES:
        maps["vat_codes"][f"S:{rate}"] = _category_id(rate)
        maps.setdefault("vat_ids", {})[_category_id(rate)] = "VAT" + rate.replace(".", "")
    return maps
