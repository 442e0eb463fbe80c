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
``link_commit_s``  of ``odoo_s``: waiting for the commits of the link puts (and of the stored
               documents). Only the link of a create that no lookup could find again waits
               for its WAL flush; the others are committed with ``synchronous_commit`` off and
               reach the disk with their batch's commit (``sync/linkstore.py``)
``odoo_cpu_ms_per_record``  the Odoo side in CPU time of the run's thread (``thread_time``),
               which other processes on a shared machine do not inflate

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
from collections import Counter
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


@contextlib.contextmanager
def _patched(owner: Any, name: str, replacement: Any) -> Iterator[None]:
    """``owner.name`` is ``replacement`` inside the block."""
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _now() -> tuple[float, float]:
    """Wall and CPU clock (of this thread: the run's) at once."""
    return time.perf_counter(), time.thread_time()


class _Timers:
    """Wall and CPU time spent in wrapped callables, keyed by name. Keys ``group.method``
    share a group: a call made from inside another call of the same group (``get`` calls
    ``get_many``) is not counted twice. CPU time is the run thread's own: on a shared machine
    it is not inflated by other processes, nor does it include PostgreSQL's work."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._depth = threading.local()

    def wrap(self, owner: Any, name: str, key: str) -> contextlib.AbstractContextManager:
        original = getattr(owner, name)
        timers = self
        group = key.split(".", 1)[0]

        def timed(*args, **kw):
            depth = getattr(timers._depth, group, 0)
            setattr(timers._depth, group, depth + 1)
            started = _now()
            try:
                return original(*args, **kw)
            finally:
                setattr(timers._depth, group, depth)
                if depth == 0:
                    timers.add(key, started)

        return _patched(owner, name, timed)

    def wrap_within(
        self, owner: Any, name: str, key: str, caller_group: str
    ) -> contextlib.AbstractContextManager:
        """Like :meth:`wrap`, but only calls made from inside a wrapped call of
        ``caller_group`` are counted (the run cursor's commits of link puts, not those of the
        document cache)."""
        original = getattr(owner, name)
        timers = self

        def timed(*args, **kw):
            if not getattr(timers._depth, caller_group, 0):
                return original(*args, **kw)
            started = _now()
            try:
                return original(*args, **kw)
            finally:
                timers.add(key, started)

        return _patched(owner, name, timed)

    def wrap_context(self, owner: Any, name: str, key: str) -> contextlib.AbstractContextManager:
        """Like :meth:`wrap` for a method returning a context manager (the link store's
        ``guard``): the time of its enter and exit is counted, not the block it guards."""
        original = getattr(owner, name)
        timers = self

        @contextlib.contextmanager
        def timed(*args, **kw):
            manager = original(*args, **kw)
            started = _now()
            manager.__enter__()
            timers.add(key, started)
            try:
                yield
            except BaseException as exc:
                started = _now()
                suppress = manager.__exit__(type(exc), exc, exc.__traceback__)
                timers.add(key, started)
                if not suppress:
                    raise
            else:
                started = _now()
                manager.__exit__(None, None, None)
                timers.add(key, started)

        return _patched(owner, name, timed)

    def add(self, key: str, started: tuple[float, float]) -> None:
        """Count the time since ``started`` (a :func:`_now`) under ``key``."""
        wall, cpu = _now()
        self.seconds[key] = self.seconds.get(key, 0.0) + wall - started[0]
        self.cpu[key] = self.cpu.get(key, 0.0) + cpu - started[1]

    def reset(self) -> None:
        self.seconds.clear()
        self.cpu.clear()


def odoo_runs(db: str, ns: list[int], flows: list[str]) -> tuple[list[dict[str, Any]], str | None]:
    try:
        registry = _start_odoo(db)
    except Exception as exc:  # the report says why, the rest of the bench stands
        _logger.exception("cannot open Odoo database %s", db)
        return [], f"Odoo database {db!r} could not be opened: {type(exc).__name__}: {exc}"
    rows = []
    for n in ns:
        # the simulators' clock at wall time: the orders' documents_since is the integration's
        # creation (real time), and Visma.net's creation times must not lie before it
        rig = make_rig(debtor_count=n, receipt_count=n, indexed=True, clock_start=time.time())
        try:
            rows += _measure(registry, rig, n, flows)
        finally:
            rig.close()
    note = (
        f"Database {db}; Odoo {_odoo_version()}; PostgreSQL on "
        f"{os.environ.get('ODOO_DB_HOST', '127.0.0.1')}. Each link put is committed at once "
        "(the engine's contract), shown apart as 'link commits'; only the link of a create "
        "that no lookup could find again waits for its WAL flush, the others reach the disk "
        "with their batch's commit; log lines are inserted 200 at a time. 'Odoo-side CPU' is "
        "the run thread's CPU time on the Odoo side: not inflated by other processes on a shared "
        "machine, but without PostgreSQL's own work."
    )
    return rows, note


def _odoo_version() -> str:
    import odoo.release

    return odoo.release.version


def _bench_integration(env: Any, rig: Rig, n: int, flows: list[str]) -> tuple[Any, dict]:
    """An integration on the rig's simulators and one inactive flow per flow type."""
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
                # active (batch jobs skip archived flows); the integration stays in draft, so
                # no scheduled action starts while the bench runs
                "active": True,
            }
        )
        for flow_type in flows
    }
    return integration, records


@contextlib.contextmanager
def _wired_clients(registry: Any, rig: Rig) -> Iterator[None]:
    """The integration's ``_get_client`` builds the real clients on the rig's simulators."""
    from bbvisma.simulators.common import sim_http_client

    Integration = registry["apicenter.integration"]
    original = Integration._get_client
    apps = {"bb": (rig.bb_app, BB_BASE), "visma": (rig.visma_app, VISMA_BASE)}

    def wired(integration, system, **options):
        app, base = apps[system]
        options.setdefault("http_client", sim_http_client(app, base))
        options.setdefault("sleep", rig.clock.sleep)
        options.setdefault("clock", rig.clock.monotonic)
        return original(integration, system, **options)

    Integration._get_client = wired
    try:
        yield
    finally:
        Integration._get_client = original


def _measure(registry: Any, rig: Rig, n: int, flows: list[str]) -> list[dict[str, Any]]:
    from odoo import SUPERUSER_ID, api

    from odoo.addons.apicenter_bb_visma.sync.linkstore import OdooLinkStore
    from odoo.addons.apicenter_bb_visma.sync.sink import OdooRunSink

    from bbvisma.engine import Flow

    rows = []
    with registry.cursor() as cr:
        env = api.Environment(cr, SUPERUSER_ID, {})
        integration, records = _bench_integration(env, rig, n, flows)
        cr.commit()
        integration_id = integration.id
    timers = _Timers()
    patches = [
        timers.wrap(Flow, "run", "engine"),
        timers.wrap(OdooRunSink, "record", "sink.record"),
        timers.wrap(OdooRunSink, "batch_done", "sink.batch_done"),
        # the commit of each link put (a WAL flush only for a link no lookup could replace)
        timers.wrap_within(OdooRunSink, "commit", "commit.link", "links"),
        timers.wrap(OdooLinkStore, "get_many", "links.get_many"),
        timers.wrap(OdooLinkStore, "get", "links.get"),
        timers.wrap(OdooLinkStore, "put", "links.put"),
        timers.wrap(OdooLinkStore, "find_by_target", "links.find_by_target"),
    ]
    if "guard" in vars(OdooLinkStore):
        patches.append(timers.wrap_context(OdooLinkStore, "guard", "links.guard"))
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_wired_clients(registry, rig))
            for patch in patches:
                stack.enter_context(patch)
            for label in ("full", "no-change"):
                for flow_type in flows:
                    rows.append(
                        _one_run(registry, records[flow_type].id, flow_type, label, n, rig, timers)
                    )
    finally:
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
        started = _now()
        run = flow._run()
        wall, cpu = (now - then for now, then in zip(_now(), started, strict=True))
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
    inside_cpu = sum(v for k, v in timers.cpu.items() if k.startswith(("links.", "sink.")))
    odoo_cpu = cpu - max(0.0, timers.cpu.get("engine", 0.0) - inside_cpu)
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
        "link_commit_ms_per_record": (
            1000.0 * timers.seconds.get("commit.link", 0.0) / records if records else None
        ),
        "odoo_ms_per_record": 1000.0 * odoo_s / records if records else None,
        # the same in CPU time of the run's thread: the Odoo layer's own work, not inflated by
        # other processes on a shared machine (PostgreSQL's work and the waits are left out)
        "odoo_cpu_ms_per_record": 1000.0 * odoo_cpu / records if records else None,
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


# --------------------------------------------------------------------------------------------
# Parallel batches through queue_job
# --------------------------------------------------------------------------------------------
def odoo_parallel(
    db: str, n: int, *, workers: int = 4, batch_size: int = 50, flow_type: str = "customers"
) -> dict[str, Any]:
    """One run with "Parallel batches" on, its jobs performed by ``workers`` threads the way
    queue_job's runner performs them (each job in its own transaction: started, performed,
    done, or postponed on RetryableJobError). Then every batch job is performed once more --
    as if each worker had died after writing its records but before marking its job done:
    the records must be skipped by their links, nothing written twice."""
    from odoo import SUPERUSER_ID, api

    registry = _start_odoo(db)
    rig = make_rig(debtor_count=n, receipt_count=n if flow_type != "customers" else 0, indexed=True)
    try:
        with registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            needed = ["products", flow_type] if flow_type == "orders" else [flow_type]
            integration, flows = _bench_integration(env, rig, n, needed)
            flow = flows[flow_type]
            products_id = flows["products"].id if "products" in flows else None
            flow.write({"parallel_batches": True, "batch_size": batch_size})
            cr.commit()
            integration_id, flow_id = integration.id, flow.id
        with _wired_clients(registry, rig):
            if products_id:  # the orders' SKUs first (not in parallel)
                _one_run(registry, products_id, "products", "setup", n, rig, _Timers())
            rig.clear_logs()
            started = time.perf_counter()
            with registry.cursor() as cr:
                env = api.Environment(cr, SUPERUSER_ID, {})
                run = env["apicenter.flow"].browse(flow_id)._run()
                run_id = run.id
                cr.commit()
            performed = _work(registry, run_id, workers)
            wall = time.perf_counter() - started
            first_writes = dict(rig.visma_app.write_keys)
            rig.clear_logs()
            replayed = _work(registry, run_id, 1, replay_done=True)
            second_writes = sum(rig.visma_app.write_keys.values())
        with registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            run = env["apicenter.run"].browse(run_id)
            counts = {
                "create": run.created_count,
                "update": run.updated_count,
                "skip": run.skipped_count,
                "park": run.parked_count,
                "error": run.failed_count,
            }
            state, batches, message = run.state, len(run.batch_ids), run.message
            causes = Counter(run.log_ids.mapped("cause_key"))
            env["apicenter.integration"].browse(integration_id).unlink()
            cr.commit()
        from .faults import SUBJECTS
        from .scenarios import _own_writes

        own = _own_writes(flow_type, Counter(first_writes))
        return {
            "flow": flow_type,
            "records": n,
            "workers": workers,
            "batches": batches,
            "jobs_performed": performed,
            "jobs_replayed": replayed,
            "state": state,
            "message": message,
            "causes": {str(k): v for k, v in causes.items() if k},
            "counts": {k: v for k, v in counts.items() if v},
            "writes": sum(own.values()),
            "records_written_twice": sum(1 for c in own.values() if c > 1),
            "writes_on_replay": second_writes,
            "duplicates_in_visma": SUBJECTS[flow_type].duplicates(rig),
            "wall_s": wall,
        }
    finally:
        rig.close()


def _work(registry: Any, run_id: int, workers: int, *, replay_done: bool = False) -> int:
    """Perform the run's jobs with ``workers`` threads until none is left; returns how many
    were performed. ``replay_done``: set the run's done batch jobs pending again first."""
    from odoo import SUPERUSER_ID, api

    from odoo.addons.queue_job.exception import RetryableJobError
    from odoo.addons.queue_job.job import Job

    pattern = f"apicenter_bb_visma:run:{run_id}:%"
    if replay_done:
        # as if every worker had died after writing its records but before its job and
        # batch were marked done: queue_job requeues the jobs, the batches are open again
        with registry.cursor() as cr:
            cr.execute(
                "UPDATE queue_job SET state = 'pending', date_done = NULL "
                "WHERE identity_key LIKE %s AND identity_key NOT LIKE %s AND state = 'done'",
                [pattern, f"apicenter_bb_visma:run:{run_id}:stream"],
            )
            cr.execute(
                "UPDATE apicenter_run_batch SET state = 'queued' WHERE run_id = %s", [run_id]
            )
            cr.execute("UPDATE apicenter_run SET state = 'running' WHERE id = %s", [run_id])
    performed = []
    lock = threading.Lock()

    def worker() -> None:
        idle = 0
        while idle < 50:
            with registry.cursor() as cr:
                cr.execute(
                    "SELECT uuid FROM queue_job WHERE identity_key LIKE %s AND state = 'pending' "
                    "AND (eta IS NULL OR eta <= now() at time zone 'utc') "
                    "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                    [pattern],
                )
                row = cr.fetchone()
                if row is None:
                    cr.execute(
                        "SELECT count(*) FROM queue_job WHERE identity_key LIKE %s "
                        "AND state IN ('pending', 'enqueued', 'started')",
                        [pattern],
                    )
                    if not cr.fetchone()[0]:
                        return
                    idle += 1
                    cr.rollback()
                    time.sleep(0.05)
                    continue
                idle = 0
                env = api.Environment(cr, SUPERUSER_ID, {})
                job = Job.load(env, row[0])
                job.set_started()
                job.store()
                cr.commit()
                try:
                    job.perform()
                except RetryableJobError as err:
                    cr.rollback()
                    job.postpone(result=str(err), seconds=0)
                    job.set_pending(reset_retry=False)
                    job.store()
                else:
                    job.set_done()
                    job.store()
                cr.commit()
                with lock:
                    performed.append(row[0])

    threads = [threading.Thread(target=worker, name=f"job-worker-{i}") for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(performed)
