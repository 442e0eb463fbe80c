"""``--odoo DB``: the flows through the Odoo module's run path, and what the Odoo layer costs.

The module must be installed in ``DB``. A fresh integration (loopback URLs, the bench
simulators' credentials) and one flow per flow type are created and committed; each flow is
run by ``apicenter.flow._run()`` -- the method "Run now" and the scheduled action call: the
OdooRunSink on its own cursor, the OdooLinkStore, the chatter summary -- twice (new data, then
no change), against the same in-process simulators as the pure bench. At the end the
integration is deleted again (flows, runs, log lines and links with it).

What is measured, per run:

``wall_s``     ``_run()`` from call to return
``engine_s``   inside ``Flow.run`` minus the time spent in the sink and the link store during
               it: the pure engine with its clients and the simulators
``sim_s``      inside the simulators (part of ``engine_s``)
``odoo_s``     ``wall_s - engine_s``: building the context, the run record, every log line,
               every link read and write (each put is committed at once, by design), the
               per-batch commits, the chatter summary -- the Odoo layer's whole cost
``queries``    SQL statements sent by Odoo during the run (``odoo.sql_db.sql_counter``)

Connection: ``ODOO_DB_HOST`` (127.0.0.1), ``ODOO_DB_PORT`` (5432), ``ODOO_DB_USER`` (the
current user), ``ODOO_DB_PASSWORD``, ``ODOO_ADDONS_PATH`` (default: Odoo's ``addons`` folder and
this repository), as ``tools/run-tests`` reads them.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .rig import BB_BASE, VISMA_BASE, Rig, make_rig
from .runner import ROOT

_logger = logging.getLogger("bench")


def _start_odoo(db: str) -> Any:
    import odoo.release
    from odoo.tools import config

    default_addons = Path(odoo.release.__file__).resolve().parent.parent / "addons"
    addons = os.environ.get("ODOO_ADDONS_PATH") or f"{default_addons},{ROOT}"
    args = [
        "-d",
        db,
        "--db_host",
        os.environ.get("ODOO_DB_HOST", "127.0.0.1"),
        "--db_port",
        os.environ.get("ODOO_DB_PORT", "5432"),
        "--db_user",
        os.environ.get("ODOO_DB_USER", getpass.getuser()),
        "--addons-path",
        addons,
        "--log-level",
        "warn",
    ]
    if os.environ.get("ODOO_DB_PASSWORD"):
        args += ["--db_password", os.environ["ODOO_DB_PASSWORD"]]
    config.parse_config(args, setup_logging=False)
    from odoo.modules.registry import Registry

    return Registry(db)


class _Timers:
    """Wall time spent in wrapped callables, keyed by name. Keys ``group.method`` share a
    group: a call made from inside another call of the same group (``get`` calls
    ``get_many``) is not counted twice."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._depth = threading.local()

    def wrap(self, owner: Any, name: str, key: str) -> contextlib.AbstractContextManager:
        original = getattr(owner, name)
        timers = self
        group = key.split(".", 1)[0]

        def timed(*args, **kw):
            depth = getattr(timers._depth, group, 0)
            setattr(timers._depth, group, depth + 1)
            started = time.perf_counter()
            try:
                return original(*args, **kw)
            finally:
                setattr(timers._depth, group, depth)
                if depth == 0:
                    spent = time.perf_counter() - started
                    timers.seconds[key] = timers.seconds.get(key, 0.0) + spent

        @contextlib.contextmanager
        def patched() -> Iterator[None]:
            setattr(owner, name, timed)
            try:
                yield
            finally:
                setattr(owner, name, original)

        return patched()

    def wrap_context(self, owner: Any, name: str, key: str) -> contextlib.AbstractContextManager:
        """Like :meth:`wrap` for a method returning a context manager (the link store's
        ``guard``): the time of its enter and exit is counted, not the block it guards."""
        original = getattr(owner, name)
        timers = self

        @contextlib.contextmanager
        def timed(*args, **kw):
            manager = original(*args, **kw)
            started = time.perf_counter()
            manager.__enter__()
            timers.add(key, time.perf_counter() - started)
            try:
                yield
            except BaseException as exc:
                started = time.perf_counter()
                suppress = manager.__exit__(type(exc), exc, exc.__traceback__)
                timers.add(key, time.perf_counter() - started)
                if not suppress:
                    raise
            else:
                started = time.perf_counter()
                manager.__exit__(None, None, None)
                timers.add(key, time.perf_counter() - started)

        @contextlib.contextmanager
        def patched() -> Iterator[None]:
            setattr(owner, name, timed)
            try:
                yield
            finally:
                setattr(owner, name, original)

        return patched()

    def add(self, key: str, seconds: float) -> None:
        self.seconds[key] = self.seconds.get(key, 0.0) + seconds

    def reset(self) -> None:
        self.seconds.clear()


def odoo_runs(db: str, ns: list[int], flows: list[str]) -> tuple[list[dict[str, Any]], str | None]:
    try:
        registry = _start_odoo(db)
    except Exception as exc:  # the report says why, the rest of the bench stands
        _logger.exception("cannot open Odoo database %s", db)
        return [], f"Odoo database {db!r} could not be opened: {type(exc).__name__}: {exc}"
    rows = []
    for n in ns:
        rig = make_rig(debtor_count=n, receipt_count=n, indexed=True)
        try:
            rows += _measure(registry, rig, n, flows)
        finally:
            rig.close()
    note = (
        f"Database {db}; Odoo {_odoo_version()}; PostgreSQL on "
        f"{os.environ.get('ODOO_DB_HOST', '127.0.0.1')}. Each link put is committed at once "
        "(the engine's contract); log lines are inserted 200 at a time."
    )
    return rows, note


def _odoo_version() -> str:
    import odoo.release

    return odoo.release.version


def _measure(registry: Any, rig: Rig, n: int, flows: list[str]) -> list[dict[str, Any]]:
    from odoo import SUPERUSER_ID, api

    from odoo.addons.apicenter_bb_visma.sync.linkstore import OdooLinkStore
    from odoo.addons.apicenter_bb_visma.sync.sink import OdooRunSink

    from bbvisma.engine import Flow
    from bbvisma.simulators.common import sim_http_client

    rows = []
    with registry.cursor() as cr:
        env = api.Environment(cr, SUPERUSER_ID, {})
        integration = env["apicenter.integration"].create(
            {
                "name": f"bench {n} {time.strftime('%H:%M:%S')}",
                "bb_base_url": BB_BASE,
                "bb_api_client": rig.bb_credentials["api_client"],
                "bb_api_secret": rig.bb_credentials["api_secret"],
                "bb_api_key": rig.bb_credentials["api_key"],
                "visma_base_url": VISMA_BASE,
                "visma_token_url": VISMA_BASE + "/connect/token",
                "visma_client_id": rig.visma_credentials["client_id"],
                "visma_client_secret": rig.visma_credentials["client_secret"],
                "visma_tenant_id": rig.visma_credentials["tenant_id"],
                "visma_company_id": rig.visma_credentials["company_id"],
            }
        )
        records = {
            flow_type: env["apicenter.flow"].create(
                {
                    "name": f"bench {flow_type}",
                    "integration_id": integration.id,
                    "flow_type": flow_type,
                    "batch_size": 100,
                    "active": False,  # no scheduled action may start while the bench runs
                }
            )
            for flow_type in flows
        }
        cr.commit()
        integration_id = integration.id
    Integration = registry["apicenter.integration"]
    original_get_client = Integration._get_client
    apps = {"bb": (rig.bb_app, BB_BASE), "visma": (rig.visma_app, VISMA_BASE)}

    def wired(integration, system, **options):
        app, base = apps[system]
        options.setdefault("http_client", sim_http_client(app, base))
        options.setdefault("sleep", rig.clock.sleep)
        options.setdefault("clock", rig.clock.monotonic)
        return original_get_client(integration, system, **options)

    timers = _Timers()
    patches = [
        timers.wrap(Flow, "run", "engine"),
        timers.wrap(OdooRunSink, "record", "sink.record"),
        timers.wrap(OdooRunSink, "batch_done", "sink.batch_done"),
        timers.wrap(OdooRunSink, "commit", "commit.link"),
        timers.wrap(OdooLinkStore, "get_many", "links.get_many"),
        timers.wrap(OdooLinkStore, "get", "links.get"),
        timers.wrap(OdooLinkStore, "put", "links.put"),
        timers.wrap(OdooLinkStore, "find_by_target", "links.find_by_target"),
    ]
    if "guard" in vars(OdooLinkStore):
        patches.append(timers.wrap_context(OdooLinkStore, "guard", "links.guard"))
    try:
        Integration._get_client = wired
        with contextlib.ExitStack() as stack:
            for patch in patches:
                stack.enter_context(patch)
            for label in ("full", "no-change"):
                for flow_type in flows:
                    rows.append(
                        _one_run(registry, records[flow_type].id, flow_type, label, n, rig, timers)
                    )
    finally:
        Integration._get_client = original_get_client
        with registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            env["apicenter.integration"].browse(integration_id).unlink()
            cr.commit()
    return rows


def _one_run(
    registry: Any, flow_id: int, flow_type: str, label: str, n: int, rig: Rig, timers: _Timers
) -> dict[str, Any]:
    import odoo.sql_db
    from odoo import SUPERUSER_ID, api

    rig.clear_logs()
    timers.reset()
    with registry.cursor() as cr:
        env = api.Environment(cr, SUPERUSER_ID, {})
        flow = env["apicenter.flow"].browse(flow_id)
        queries = odoo.sql_db.sql_counter
        started = time.perf_counter()
        run = flow._run()
        wall = time.perf_counter() - started
        queries = odoo.sql_db.sql_counter - queries
        cr.commit()
        run = run.with_env(env)
        counts = {
            "create": run.created_count,
            "update": run.updated_count,
            "skip": run.skipped_count,
            "park": run.parked_count,
            "error": run.failed_count,
        }
        state, message = run.state, run.message
    records = sum(counts.values())
    links = sum(v for k, v in timers.seconds.items() if k.startswith("links."))
    sink = sum(v for k, v in timers.seconds.items() if k.startswith("sink."))
    inside = sink + links
    engine = max(0.0, timers.seconds.get("engine", 0.0) - inside)
    odoo_s = wall - engine
    row = {
        "flow": flow_type,
        "n": n,
        "label": label,
        "records": records,
        "counts": {k: v for k, v in counts.items() if v},
        "state": state,
        "message": message,
        "wall_s": wall,
        "engine_s": engine,
        "sim_s": rig.bb_app.seconds + rig.visma_app.seconds,
        "odoo_s": odoo_s,
        "sink_s": sink,
        "links_s": links,
        "links_by_method_s": {
            k.split(".", 1)[1]: v for k, v in timers.seconds.items() if k.startswith("links.")
        },
        "link_commit_s": timers.seconds.get("commit.link", 0.0),
        "odoo_ms_per_record": 1000.0 * odoo_s / records if records else None,
        # what grows with the records (log lines, links) vs what a run costs once (context,
        # run record, chatter summary, per-batch bookkeeping outside the sink)
        "per_record_ms": 1000.0 * inside / records if records else None,
        "fixed_s": max(0.0, odoo_s - inside),
        "queries": queries,
        "queries_per_record": queries / records if records else None,
        "visma_calls": sum(v for k, v in rig.visma_app.kinds.items() if k != "token"),
    }
    _logger.info(
        "odoo %s N=%s %s: %s records %s, %.1f s wall, Odoo side %.2f ms/record, %s queries",
        flow_type,
        n,
        label,
        records,
        row["counts"],
        wall,
        row["odoo_ms_per_record"] or 0.0,
        queries,
    )
    return row
