# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""OdooRunSink: the engine's RunSink over apicenter.run and apicenter.log.

Why a separate cursor: a run can fail half-way and its transaction (the watermark, anything
the flow wrote in Odoo) is then rolled back -- but the log of what happened, and the run's
summary, must stay, or the failure leaves no trace. So the run row, its log lines, its chatter
summary and the links (see linkstore.py) are written through a cursor of their own, the "run
cursor", committed after every batch (log lines: also every ``FLUSH_EVERY`` lines; links and
parsed documents: after every put), the way ``delivery.carrier.log_xml`` does it. The main
transaction carries the watermark and is committed once per batch -- except in tests, where
only the test may end it.

The run cursor is READ COMMITTED (:func:`open_run_cursor`), not Odoo's REPEATABLE READ: the
link store's guard must see the link another run committed while it waited for the lock, and
under REPEATABLE READ only a commit would refresh the snapshot -- one more commit per record.
The run cursor needs no snapshot isolation: it inserts log lines, upserts links and documents
(an upsert cannot conflict under either level) and writes rows of its own run (the run, its
batch), which no one else writes meanwhile. The level is set back before the connection
returns to Odoo's pool.

Lock discipline (two cursors, one thread, so a lock wait would never end): the main
transaction never writes run, log or link rows; the run cursor never writes flow or
integration rows (it only references them, which takes a KEY SHARE lock that an ordinary
update does not conflict with).
"""

import hashlib
import time

from psycopg2.extensions import ISOLATION_LEVEL_READ_COMMITTED, ISOLATION_LEVEL_REPEATABLE_READ

from odoo import fields, modules, sql_db
from odoo.exceptions import UserError

ACTION_COUNTERS = {
    "create": "created_count",
    "update": "updated_count",
    "skip": "skipped_count",
    "park": "parked_count",
    "error": "failed_count",
}


#: a log line's own columns, in the order of ``OdooRunSink._log_values``
LOG_COLUMNS = (
    "date",
    "entity",
    "source_key",
    "target_key",
    "action",
    "cause_key",
    "message",
    "source_payload",
    "request_payload",
    "response_payload",
    "exchanges",
    "duration_ms",
    "dry_run",
)
#: the columns every log line of a run shares (``OdooRunSink._run_values``)
RUN_COLUMNS = ("run_id", "flow_id", "integration_id", "company_id", "create_uid", "write_uid")


class FlowBusy(UserError):
    """Another run of the same flow type of the same integration holds the run lock."""


def run_lock_key(integration_id, flow_type):
    """The PostgreSQL advisory lock key of (integration, flow type), a signed 64-bit int.

    One run per flow type and integration at a time: two runs of the same records would both
    look a record up before either creates it, and both create it.
    """
    digest = hashlib.sha256(f"apicenter_bb_visma:{integration_id}:{flow_type}".encode())
    return int.from_bytes(digest.digest()[:8], "big", signed=True)


def open_run_cursor(cursor_factory):
    """A new run cursor from ``cursor_factory``, READ COMMITTED when it is a connection of its
    own (a test cursor shares the test's transaction and keeps its level)."""
    cr = cursor_factory()
    if isinstance(cr, sql_db.Cursor):
        # before the cursor's first statement: psycopg2 sends the level with each BEGIN
        cr.connection.set_isolation_level(ISOLATION_LEVEL_READ_COMMITTED)
    return cr


def close_run_cursor(cr, lock_key=None):
    """Release the run's session lock ``lock_key`` (if any) and close the run cursor, its
    connection set back to Odoo's REPEATABLE READ (what it had when it left the pool)."""
    try:
        if lock_key is not None:
            cr.execute("SELECT pg_advisory_unlock(%s)", [lock_key])
    finally:
        try:
            if isinstance(cr, sql_db.Cursor):
                cr.rollback()  # a level can only be set outside a transaction
                cr.connection.set_isolation_level(ISOLATION_LEVEL_REPEATABLE_READ)
        finally:
            cr.close()


def _value(action):
    """An engine ``Action`` (an Enum) or its plain string value."""
    return getattr(action, "value", action)


class OdooRunSink:
    """Collects the engine's record results of one run into Odoo.

    Use :meth:`open` to start a run, hand the sink to the engine, then :meth:`close` exactly
    once (it returns the run record in the caller's environment).
    """

    #: log lines are inserted in groups of this size (one INSERT per group)
    FLUSH_EVERY = 200

    def __init__(self, flow, run_id, log_cr, dry_run=False, lock_key=None):
        self.flow = flow
        self._lock_key = lock_key
        self.run_id = run_id
        self.dry_run = dry_run
        self._cr = log_cr
        #: the environment of the run cursor (the link store works through it too)
        self.env = flow.env(cr=log_cr, su=True)
        #: cause key of the record that aborted the run (AuthError/ConfigError), if any
        self.abort_cause = None
        self._redactor = flow.integration_id._redactor()
        #: queued log lines, each the values of ``LOG_COLUMNS``
        self._pending = []
        integration = flow.integration_id
        self._run_values = (
            run_id,
            flow.id,
            integration.id,
            integration.company_id.id,
            self.env.uid,
            self.env.uid,
        )
        self._started = time.monotonic()
        self.counts = dict.fromkeys(ACTION_COUNTERS.values(), 0)
        self.closed = False

    @classmethod
    def open(cls, flow, dry_run=False, cursor_factory=None):
        """Create the run (state ``running``) through a new cursor and commit it at once.

        ``cursor_factory`` returns the separate cursor; by default the registry's (a real
        new connection in production, a test cursor when a test put the registry in test mode).
        """
        flow.ensure_one()
        log_cr = open_run_cursor(cursor_factory or flow.env.registry.cursor)
        key = run_lock_key(flow.integration_id.id, flow.flow_type)
        try:
            # a session lock of the run cursor: it outlives the per-batch commits, and a
            # crashed worker's connection takes it along
            log_cr.execute("SELECT pg_try_advisory_lock(%s)", [key])
            if not log_cr.fetchone()[0]:
                raise FlowBusy(
                    flow.env._(
                        "A %(type)s flow of %(integration)s is running already.",
                        type=flow.flow_type,
                        integration=flow.integration_id.name,
                    )
                )
            env = flow.env(cr=log_cr, su=True)
            # the lock is ours: a run of this flow type still "running" lost its process
            env["apicenter.run"]._close_interrupted(flow)
            run = (
                env["apicenter.run"]
                .with_context(mail_create_nolog=True)
                .create(
                    {
                        "flow_id": flow.id,
                        "integration_id": flow.integration_id.id,
                        "date_start": fields.Datetime.now(),
                        "state": "running",
                        "dry_run": dry_run,
                    }
                )
            )
            log_cr.commit()  # pylint: disable=invalid-commit
        except Exception:
            try:
                log_cr.rollback()  # an aborted transaction would refuse the unlock
            finally:
                close_run_cursor(log_cr, key)  # unlocks it if we hold it
            raise
        return cls(flow, run.id, log_cr, dry_run=dry_run, lock_key=key)

    # -- the engine's RunSink protocol ----------------------------------------------------------
    def record(self, result):
        """One record's outcome: count it and queue its log line."""
        action = _value(result.action)
        self.counts[ACTION_COUNTERS[action]] += 1
        if getattr(result, "aborted_run", False):
            self.abort_cause = result.cause_key
        self._pending.append(self._log_values(result, action))
        if len(self._pending) >= self.FLUSH_EVERY:
            self._flush()

    def batch_done(self, watermark, results=()):
        """A batch is complete: persist its logs and counts, then its watermark.

        The counts' commit writes the run row, so it waits for its WAL flush -- which puts on
        disk every link the batch committed without one (see ``linkstore``) before the
        watermark moves past the batch."""
        self._flush()
        self._save_run({})
        if self.dry_run:
            return
        if watermark is not None:
            self.flow.watermark = str(watermark)
        if self._may_commit():
            self.flow.env.cr.commit()  # pylint: disable=invalid-commit

    def commit(self):
        """Make what went through the run cursor durable (the link store calls it per put)."""
        self._cr.commit()  # pylint: disable=invalid-commit

    # -- closing ------------------------------------------------------------------------------
    def close(self, state=None, message=None, cause_key=None):
        """End the run: final state and counts, summary in the chatter; returns the run.

        ``state`` forces the outcome (``"failed"`` when the run was aborted); otherwise it
        follows from the counts: ``done``, ``partial`` (some records parked or failed) or
        ``failed`` (every record failed).
        """
        if self.closed:
            raise RuntimeError("run sink closed twice")
        self.closed = True
        try:
            self._flush()
            state = state or self._state_from_counts()
            vals = {
                "state": state,
                "date_end": fields.Datetime.now(),
                "duration": time.monotonic() - self._started,
                "message": self._redactor.redact_text(str(message)) if message else False,
                "cause_key": cause_key or False,
            }
            run = self._save_run(vals)
            self._post_summary(run)
            self._cr.commit()  # pylint: disable=invalid-commit
        finally:
            close_run_cursor(self._cr, self._lock_key)
        return self.flow.env["apicenter.run"].browse(self.run_id)

    # -- internals ----------------------------------------------------------------------------
    def _state_from_counts(self):
        counts = self.counts
        if counts["failed_count"] and not any(
            counts[key]
            for key in ("created_count", "updated_count", "skipped_count", "parked_count")
        ):
            return "failed"
        if counts["failed_count"] or counts["parked_count"]:
            return "partial"
        return "done"

    def _save_run(self, vals):
        run = self.env["apicenter.run"].browse(self.run_id)
        run.write(dict(self.counts, **vals))
        self._cr.commit()  # pylint: disable=invalid-commit
        return run

    def _post_summary(self, run):
        # the run model decides what to post and whom to notify (hook: apicenter.run._on_closed)
        run._on_closed()

    def _flush(self):
        """Insert the pending log lines in ONE plain INSERT and commit them.

        Plain SQL rather than ``create``: a log line is final when it is written (no computed
        field to recompute, no constraint beyond its columns), and the ORM's per-record work
        cost more than everything else a line needs. The commit empties the cursor's cache,
        so no ORM reader of this cursor can see a stale list of lines.
        """
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        row = "({}, now() at time zone 'UTC', now() at time zone 'UTC')".format(
            ", ".join(["%s"] * (len(LOG_COLUMNS) + len(RUN_COLUMNS)))
        )
        self._cr.execute(
            f"INSERT INTO apicenter_log ({', '.join(LOG_COLUMNS + RUN_COLUMNS)}, "  # noqa: S608 - fixed names
            f"create_date, write_date) VALUES {', '.join([row] * len(pending))}",
            [value for values in pending for value in (*values, *self._run_values)],
        )
        self._cr.commit()  # pylint: disable=invalid-commit

    def _log_values(self, result, action):
        """The record's own columns of its log line, in the order of ``LOG_COLUMNS``."""
        payload = self._payload
        message = _text(getattr(result, "message", None))
        return (
            fields.Datetime.now(),
            getattr(result, "entity", None) or "record",
            _text(getattr(result, "source_key", None)),
            _text(getattr(result, "target_key", None)),
            action,
            _text(getattr(result, "cause_key", None)),
            self._redactor.redact_text(message) if message else None,
            payload(getattr(result, "source", None)),
            payload(getattr(result, "payload", None)),
            payload(getattr(result, "response", None)),
            payload([_as_dict(exchange) for exchange in getattr(result, "exchanges", None) or ()]),
            int(getattr(result, "duration_ms", None) or 0),
            bool(getattr(result, "dry_run", self.dry_run)),
        )

    def _payload(self, value):
        """Redacted compact JSON text, or None; the core redacts already, this is defence in
        depth (see ``Redactor.json_text``: a payload without secrets is not copied for it)."""
        return payload_text(value, self._redactor) or None

    def _may_commit(self):
        """Commit the main transaction per batch, but never inside a test."""
        return not modules.module.current_test and not self.flow.env.context.get(
            "apicenter_no_commit"
        )


def payload_text(value, redactor):
    """A payload (dict, list, model, text) as the redacted text a log line keeps: compact
    JSON (see ``Redactor.json_text``; the log form indents it when a line is opened), or
    False when there is nothing to keep."""
    if value is None or value == "" or value == []:
        return False
    if isinstance(value, str):
        return redactor.redact_text(value)
    return redactor.json_text(_as_dict(value))


def _text(value):
    """A column's text, or None (SQL NULL) for no value."""
    return None if value is None or value == "" else str(value)


def _as_dict(value):
    """Pydantic models, dataclasses with ``as_dict`` and plain values, as JSON-able data."""
    for method in ("as_dict", "model_dump"):
        if hasattr(value, method):
            return getattr(value, method)()
    return value
