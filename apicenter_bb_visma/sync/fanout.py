# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""Parallel runs: one run, its source read once, its records processed by queue_job workers.

The why is in ``models/apicenter_run_batch.py``; here is the how, in the order it happens:

1. :func:`enqueue_run` (the scheduled action or "Run now" of a flow with parallel batches):
   the run is created ``running`` together with its *stream job*, in one transaction -- both
   exist or neither does.
2. :func:`stream` (the stream job): takes the flow type's run lock, reads the source through
   the flow's ``source_items`` and enqueues one *batch job* per ``batch_size`` items, each with
   its serialized items and a row in ``apicenter.run.batch``. The batch jobs, their rows and
   the run's batch count are written in the job's own transaction: if the stream job fails
   half-way, none of them exists, and its retry starts afresh.
3. :func:`process_batch` (a batch job, many in parallel): the engine's ``Flow.run_items`` on a
   fresh flow instance; log lines and links through the run cursor as in any run, the counts
   to the batch row (merged over attempts). Records that failed on a transient error (timeout,
   5xx, 429, lost answer) make the job raise ``RetryableJobError``: queue_job runs it again
   after the back-off of its job function, and the records already written are skipped by
   their links. The last attempt keeps its errors instead (they show in the log; the run keeps
   its watermark so the next run reads them again).
4. :func:`finish_if_last`: under an advisory lock of the run, the batch job that finds no batch
   left open closes the run -- the sum of the batches' counts, state, chatter summary -- and,
   when no record failed and no batch was left unprocessed, stores the watermark the stream
   job computed.

Jobs are told apart by identity keys (``apicenter_bb_visma:run:<id>:stream`` /
``...:batch:<n>``): enqueueing the same work twice (a stream job that is run again) leaves one
pending job. A queued run whose jobs have all ended without finishing it (cancelled or failed
in the job queue) is closed as failed the next time the flow is started.
"""

import json
import logging
import time
from collections import Counter

from odoo import fields

from odoo.addons.queue_job.exception import RetryableJobError

from bbvisma.engine import SourceItem
from bbvisma.errors import BBVismaError, PreconditionFailed, TransientError

from .context import build_flow_context, load_flow_class
from .sink import (
    ACTION_COUNTERS,
    FlowBusy,
    OdooRunSink,
    close_run_cursor,
    open_run_cursor,
    run_lock_key,
)

_logger = logging.getLogger(__name__)

#: queue.job states of a job that still runs or will run
LIVE_JOB_STATES = ("wait_dependencies", "pending", "enqueued", "started")
#: batch states that are still to be processed
OPEN_BATCH_STATES = ("queued", "retrying")


def _kinds(error_class):
    return {error_class.kind}.union(*(_kinds(sub) for sub in error_class.__subclasses__()))


#: error kinds (the first part of a cause key) worth another attempt of the batch: the
#: transient ones, and a stale ETag (the next attempt reads the record afresh)
RETRYABLE_KINDS = frozenset(_kinds(TransientError) | {PreconditionFailed.kind})


def retryable(cause_key):
    return bool(cause_key) and str(cause_key).split(":", 1)[0] in RETRYABLE_KINDS


def job_key(run_id, part):
    """The identity key of a job of run ``run_id`` (``stream`` or ``batch:<n>``)."""
    return f"apicenter_bb_visma:run:{run_id}:{part}"


def job_attempt(env):
    """``(attempt, final)`` of the job being performed: ``final`` when queue_job will not run
    it again after a RetryableJobError. Outside a stored job (performed directly) the one
    attempt is final."""
    uuid = env.context.get("job_uuid")
    job = env["queue.job"].sudo().search([("uuid", "=", uuid)], limit=1) if uuid else None
    if not job:
        return 1, True
    attempt = job.retry + 1
    return attempt, bool(job.max_retries) and attempt >= job.max_retries


# --------------------------------------------------------------------------------------------
# Serialized source items: what a batch job carries
# --------------------------------------------------------------------------------------------
def dump_item(item):
    row = [item.key, item.modified, item.data, item.label]
    try:
        json.dumps(row)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"source item {item.key!r} ({type(item.data).__name__}) cannot be handed to a "
            "queue_job worker: its data is not JSON"
        ) from exc
    return row


def load_item(row):
    key, modified, data, label = row
    return SourceItem(str(key), modified, data, label or "")


# --------------------------------------------------------------------------------------------
# Sinks on an existing run
# --------------------------------------------------------------------------------------------
class AttachedRunSink(OdooRunSink):
    """An OdooRunSink on a run that exists already (queued by the flow), optionally holding
    the flow type's run lock. :meth:`detach` lets go of the run without ending it."""

    @classmethod
    def attach(cls, run, lock=False):
        flow = run.flow_id
        log_cr = open_run_cursor(flow.env.registry.cursor)
        key = None
        if lock:
            key = run_lock_key(flow.integration_id.id, flow.flow_type)
            log_cr.execute("SELECT pg_try_advisory_lock(%s)", [key])
            if not log_cr.fetchone()[0]:
                close_run_cursor(log_cr)
                raise FlowBusy(
                    flow.env._(
                        "A %(type)s flow of %(integration)s is running already.",
                        type=flow.flow_type,
                        integration=flow.integration_id.name,
                    )
                )
        sink = cls(flow, run.id, log_cr, lock_key=key)
        # the run's duration counts from its start, not from this job's
        elapsed = (fields.Datetime.now() - run.date_start).total_seconds()
        sink._started = time.monotonic() - max(0.0, elapsed)
        return sink

    def detach(self):
        """Commit what went through the run cursor, release the lock, close the cursor; the
        run stays ``running`` (its batches end it)."""
        if self.closed:
            return
        self.closed = True
        try:
            self._flush()
            self._cr.commit()  # pylint: disable=invalid-commit
        finally:
            close_run_cursor(self._cr, self._lock_key)


class BatchSink(AttachedRunSink):
    """The sink of one batch job: log lines as in any run; counts to the batch row; no
    watermark (the run's end decides it) and no commit of the job's transaction (queue_job
    commits it when the job ends)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.actions = {}
        self.error_causes = []

    def record(self, result):
        recorded = super().record(result)
        action = getattr(result.action, "value", result.action)
        self.actions[str(result.source_key)] = action
        if action == "error":
            self.error_causes.append(result.cause_key)
        return recorded

    def batch_done(self, watermark, results=()):
        self._flush()

    def save_batch(self, batch_id, attempt, state, message=None):
        """Write the batch row: what each record became over all attempts (a record an
        earlier attempt created or updated and this one skipped was created or updated).
        Its commit waits for the WAL flush, which takes the batch's links along (see
        ``linkstore``)."""
        batch = self.env["apicenter.run.batch"].browse(batch_id)
        actions = dict(batch.actions or {})
        for key, action in self.actions.items():
            if action == "skip" and actions.get(key) in ("create", "update"):
                continue
            actions[key] = action
        counts = Counter(actions.values())
        batch.write(
            {
                "state": state,
                "attempts": attempt,
                "actions": actions,
                "message": message or False,
                **{field: counts.get(action, 0) for action, field in ACTION_COUNTERS.items()},
            }
        )
        self._cr.commit()  # pylint: disable=invalid-commit


# --------------------------------------------------------------------------------------------
# 1. enqueue
# --------------------------------------------------------------------------------------------
def enqueue_run(flow):
    """Create the run of ``flow`` and its stream job; return the run (``running``)."""
    flow.ensure_one()
    busy = running_parallel_run(flow)
    if busy:
        raise FlowBusy(
            flow.env._(
                "The previous run of %(flow)s (%(run)s) is still being processed by the job queue.",
                flow=flow.name,
                run=busy.name,
            )
        )
    run = (
        flow.env["apicenter.run"]
        .sudo()
        .with_context(mail_create_nolog=True)
        .create(
            {
                "flow_id": flow.id,
                "integration_id": flow.integration_id.id,
                "date_start": fields.Datetime.now(),
                "state": "running",
                "parallel": True,
                "message": flow.env._(
                    "Queued: a queue_job worker reads the source and splits it into batches."
                ),
            }
        )
    )
    run.with_delay(
        identity_key=job_key(run.id, "stream"),
        description=flow.env._("APIcenter: read %(flow)s and queue its batches", flow=flow.name),
    )._job_stream()
    return run


def running_parallel_run(flow):
    """The flow's parallel run still in progress, if any. A running one none of whose jobs
    is alive any more (cancelled or failed in the job queue, or lost with a worker before
    they were committed) is closed as failed here, so it does not block the flow for ever."""
    runs = (
        flow.env["apicenter.run"]
        .sudo()
        .search([("flow_id", "=", flow.id), ("state", "=", "running"), ("parallel", "=", True)])
    )
    Job = flow.env["queue.job"].sudo()
    closed = False
    for run in runs:
        alive = Job.search_count(
            [("identity_key", "=like", job_key(run.id, "%")), ("state", "in", LIVE_JOB_STATES)]
        )
        if alive:
            return run
        _logger.warning("apicenter run %s: no job left to finish it, closed as failed", run.id)
        sink = AttachedRunSink.attach(run)
        sink.counts = _batch_sums(sink)
        sink.close(
            "failed",
            flow.env._(
                "This run's queue jobs ended without finishing it (cancelled or failed in the "
                "job queue): see Job Queue. Records already written are linked; the next run "
                "goes on from the previous watermark."
            ),
            cause_key="run:jobs_ended",
        )
        closed = True
    if closed:
        flow.env.invalidate_all()  # the runs were closed through their own cursors
    return flow.env["apicenter.run"]


# --------------------------------------------------------------------------------------------
# 2. the stream job
# --------------------------------------------------------------------------------------------
def stream(run):
    """Read the run's source once and enqueue its batch jobs (see the module docstring)."""
    env = run.env
    run = run.sudo()
    flow = run.flow_id
    if run.state != "running" or run.batch_count:
        return f"run {run.id} is not waiting for its stream job"
    attempt, final = job_attempt(env)
    try:
        sink = AttachedRunSink.attach(run, lock=True)
    except FlowBusy as exc:
        if not final:
            raise RetryableJobError(str(exc), seconds=60) from exc
        return _close(run, "failed", str(exc), "run:busy")
    sequence = items = 0
    try:
        flow_class = load_flow_class(flow.flow_type)
        with build_flow_context(flow, sink) as ctx:
            instance = flow_class(ctx)
            started = ctx.now()
            size = max(1, flow.batch_size)
            chunk, stamps = [], []
            for item in instance.source_items(flow.watermark or None):
                chunk.append(dump_item(item))
                stamps.append(item.modified)
                if len(chunk) >= size:
                    sequence += 1
                    _enqueue_batch(run, sequence, chunk)
                    items += len(chunk)
                    chunk = []
            if chunk:
                sequence += 1
                _enqueue_batch(run, sequence, chunk)
                items += len(chunk)
            watermark = instance.run_watermark(started)
            if watermark is None and stamps and None not in stamps:
                watermark = max(stamps)
    except BBVismaError as exc:
        if isinstance(exc, TransientError) and not final:
            # queue_job rolls this transaction back (the batches queued so far) and retries
            sink.detach()
            raise RetryableJobError(f"reading the source failed: {exc.message}") from exc
        _drop_batches(run)  # a partial read is not a run: the next run reads it all again
        flow._note_setup_error(exc.cause_key, False)
        sink.close("failed", f"reading the source failed: {exc.message}", cause_key=exc.cause_key)
        return f"run {run.id}: reading the source failed"
    except Exception as exc:
        if not sink.closed:
            sink.close("failed", f"Unexpected error: {type(exc).__name__}: {exc}")
        raise
    if not sequence:
        sink.close()
        if watermark:
            flow.watermark = watermark
        return f"run {run.id}: nothing to sync"
    sink.detach()
    run.write(
        {
            "batch_count": sequence,
            "fanout_watermark": watermark or False,
            "message": env._(
                "%(records)s records in %(batches)s batches, processed by queue_job workers.",
                records=items,
                batches=sequence,
            ),
        }
    )
    return f"run {run.id}: {items} records in {sequence} batches (attempt {attempt})"


def _enqueue_batch(run, sequence, chunk):
    run.env["apicenter.run.batch"].sudo().create(
        {"run_id": run.id, "sequence": sequence, "record_count": len(chunk)}
    )
    run.with_delay(
        identity_key=job_key(run.id, f"batch:{sequence}"),
        description=run.env._(
            "APIcenter: %(flow)s, batch %(n)s", flow=run.flow_id.name, n=sequence
        ),
    )._job_batch(sequence, chunk)


def _drop_batches(run):
    """Forget the batches this (uncommitted) stream job queued before it failed."""
    run.env["queue.job"].sudo().search(
        [("identity_key", "=like", job_key(run.id, "batch:%"))]
    ).unlink()
    run.env["apicenter.run.batch"].sudo().search([("run_id", "=", run.id)]).unlink()


def _close(run, state, message, cause_key=None):
    sink = AttachedRunSink.attach(run)
    sink.counts = _batch_sums(sink)
    return sink.close(state, message, cause_key=cause_key)


# --------------------------------------------------------------------------------------------
# 3. a batch job
# --------------------------------------------------------------------------------------------
def process_batch(run, sequence, items):
    """Process one batch of a parallel run (see the module docstring)."""
    env = run.env
    run = run.sudo()
    flow = run.flow_id
    batch = run.batch_ids.filtered(lambda b: b.sequence == sequence)
    if run.state != "running" or not batch or batch.state not in OPEN_BATCH_STATES:
        return f"batch {sequence} of run {run.id}: nothing to do"
    attempt, final = job_attempt(env)
    sink = BatchSink.attach(run)
    why_not = _why_not_runnable(flow)
    if why_not:
        sink.save_batch(batch.id, attempt, "skipped", why_not)
        return finish_if_last(sink, run)
    try:
        flow_class = load_flow_class(flow.flow_type)
        with build_flow_context(flow, sink) as ctx:
            report = flow_class(ctx).run_items([load_item(row) for row in items])
    except BBVismaError as exc:  # the context or the flow could not be built: nothing ran
        flow._note_setup_error(exc.cause_key, False)
        sink.save_batch(batch.id, attempt, "skipped", exc.message)
        return finish_if_last(sink, run)
    except Exception:
        sink.detach()
        raise
    sink._flush()
    if report.aborted:
        flow._note_setup_error(sink.abort_cause, False)
    transient = [cause for cause in sink.error_causes if retryable(cause)]
    if transient and not report.aborted and not final:
        message = env._(
            "Attempt %(attempt)s: %(count)s records hit a transient error (%(causes)s); "
            "queue_job runs the batch again.",
            attempt=attempt,
            count=len(transient),
            causes=", ".join(sorted(set(transient))),
        )
        sink.save_batch(batch.id, attempt, "retrying", message)
        sink.detach()
        raise RetryableJobError(message)
    sink.save_batch(batch.id, attempt, "done", report.aborted)
    return finish_if_last(sink, run)


def _why_not_runnable(flow):
    if not flow.active:
        return flow.env._("Not processed: the flow was archived.")
    if flow.integration_id.state == "error":
        return flow.env._(
            "Not processed: the integration is paused after an authentication or settings error."
        )
    return None


# --------------------------------------------------------------------------------------------
# 4. the run's end
# --------------------------------------------------------------------------------------------
def finish_if_last(sink, run):
    """Close the run if no batch is left open (under the run's own advisory lock, so that two
    batches ending at once close it once)."""
    cr = sink._cr
    key = run_lock_key(run.id, "parallel-run-end")
    cr.execute("SELECT pg_advisory_lock(%s)", [key])
    sink._lock_key = key  # released by close()/detach()
    # a fresh snapshot, which sees every batch that ended before the lock was ours
    cr.commit()  # pylint: disable=invalid-commit
    cr.execute(
        "SELECT state, count(*) FROM apicenter_run_batch WHERE run_id = %s GROUP BY state",
        [run.id],
    )
    states = dict(cr.fetchall())
    cr.execute("SELECT state FROM apicenter_run WHERE id = %s", [run.id])
    still_running = cr.fetchone()[0] == "running"
    if not still_running or any(states.get(state) for state in OPEN_BATCH_STATES):
        sink.detach()
        return f"run {run.id}: batch done, {sum(states.values())} batches"
    sink.counts = _batch_sums(sink)
    skipped = states.get("skipped", 0)
    env = run.env
    message = env._("%(count)s batches processed by queue_job workers.", count=sum(states.values()))
    state = None
    cause_key = None
    if skipped:
        message = env._(
            "%(message)s %(skipped)s batches were not processed: see the run's batches.",
            message=message,
            skipped=skipped,
        )
        cause_key = "run:batches_not_processed"
        if not any(sink.counts.values()):
            state = "failed"
        elif sink._state_from_counts() == "done":
            state = "partial"
    sink.close(state, message, cause_key=cause_key)
    clean = not skipped and not sink.counts["failed_count"]
    run.invalidate_recordset()
    if clean and run.fanout_watermark:
        run.flow_id.watermark = run.fanout_watermark
    return f"run {run.id}: finished"


def _batch_sums(sink):
    """The run's counts: the sum of its batch rows."""
    fields_ = list(ACTION_COUNTERS.values())
    sink._cr.execute(
        f"SELECT {', '.join(f'COALESCE(SUM({name}), 0)' for name in fields_)} "  # noqa: S608 - fixed names
        "FROM apicenter_run_batch WHERE run_id = %s",
        [sink.run_id],
    )
    return dict(zip(fields_, (int(value) for value in sink._cr.fetchone()), strict=True))
