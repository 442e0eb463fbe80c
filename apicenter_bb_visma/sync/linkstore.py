# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""OdooLinkStore: the core's LinkStore over the apicenter.link table.

The core requires a link to be stored *at once*: a created record's link must survive a
failure later in the run, or the next run would create the record a second time. So the store
reads and writes through the run's own cursor (the sink's), and commits after every put.

That cursor is READ COMMITTED (see ``sink.open_run_cursor``): every statement sees what other
runs committed before it, so the re-read under the guard sees the link another run stored
while this one waited for the lock -- Odoo's REPEATABLE READ would keep the snapshot of the
transaction's first statement, and would need a commit to see it. A store on a cursor of
another isolation level (tests hand it theirs) ends its transaction after taking the lock
instead, as it has to refresh the snapshot.

Reads and writes are plain SQL on the run cursor: a link is a handful of columns read and
written once per record, where the ORM's search_read and cache handling cost more than the
query. Pending ORM writes to apicenter.link of the same environment are flushed first, and the
model's cache is invalidated after a write, so ORM code beside the store stays consistent.

``put`` is one ``INSERT ... ON CONFLICT DO UPDATE`` on the (integration, entity, source key)
unique constraint: two workers storing the same link can never make two rows, nor fail.

``guard`` is the core's per-record lock (``LinkStore.guard``) as a PostgreSQL session advisory
lock of the run cursor's connection: parallel queue_job batches, or an orders run creating a
customer while the customers run handles the same debtor, run in different processes, so a
lock in Python memory would not do. A session lock (not a transaction lock) because the link
put inside the guard commits; it is reentrant within one connection, as the core requires, and
a crashed worker's connection takes it along.

Round trips are what a written record costs here (each one a wait for PostgreSQL, longer on a
busy machine): the guard takes its lock and reads the link in one (the engine's re-read), the
put is one more, its commit one, and the unlock two (psycopg2 sends a BEGIN before it: the
commit ended the transaction).

A put's commit makes the link visible to every other run at once, and it survives the death of
the worker that stored it. Whether the commit also waits for its WAL flush (the link survives
a crash of PostgreSQL itself) is the put's ``durable``: the engine asks for it only for the link
of a created record that no lookup could find again (``Flow.lookup_finds``). Every other put is
committed with ``synchronous_commit`` off for its transaction alone -- the WAL flush, not the
round trips, is the larger part of a written record's cost, and it grows with the machine's
load (0.3 ms idle, 2.5 ms under load on our machines). Such a link reaches the disk with the next
synchronous commit: at the latest the sink's commit at the end of its batch, which comes before
the batch's watermark is committed. A crash of PostgreSQL can thus lose links of the batch in
flight only; the next run reads that batch again, and the lookup before create finds and adopts
its records (or an update is sent once more): never a duplicate.
"""

import contextlib
import hashlib

import psycopg2
from psycopg2.extras import Json

from bbvisma.linkstore import Link, LinkStore

_COLUMNS = "entity, source_key, target_key, content_hash, last_sync, meta"
#: "the guard read nothing for this record" (None is a read: no link)
_UNREAD = object()


class RunCursorStore:
    """What the link store and the document cache share: the run cursor's environment, the
    integration, and the commit that makes a put last (the sink's; a no-op is fine in
    tests)."""

    def __init__(self, env, integration_id, commit=None):
        self.env = env
        self.integration_id = integration_id
        self._commit = commit or (lambda: None)
        self._company_id = None

    def _company(self):
        """The integration's company (stored on every row), read once per store: every commit
        empties the ORM cache, which would read it again per put."""
        if self._company_id is None:
            integration = self.env["apicenter.integration"].browse(self.integration_id)
            self._company_id = integration.company_id.id
        return self._company_id


class OdooLinkStore(RunCursorStore, LinkStore):
    """Links of one integration. ``env`` is the environment of the run's own cursor;
    ``commit`` makes a put durable (the sink's commit; a no-op is fine in tests)."""

    def __init__(self, env, integration_id, commit=None):
        super().__init__(env, integration_id, commit)
        self.queries = 0
        self._read_committed = None
        #: ``{(entity, source key): link or None}``: read by :meth:`guard` with its lock, for
        #: the first :meth:`get` of that record under it (the engine's re-read)
        self._read_under_guard = {}

    # -- reads --------------------------------------------------------------------------------
    def get(self, entity, source_key):
        read = self._read_under_guard.pop((entity, str(source_key)), _UNREAD)
        if read is not _UNREAD:  # read by the guard with its lock (see guard)
            return read
        rows = self._select("source_key = %s", [entity, str(source_key)])
        return _link(rows[0]) if rows else None

    def get_many(self, entity, source_keys):
        """All links of the batch in ONE query."""
        keys = list(dict.fromkeys(str(key) for key in source_keys))
        if not keys:
            return {}
        return {row[1]: _link(row) for row in self._select("source_key = ANY(%s)", [entity, keys])}

    def find_by_target(self, entity, target_key):
        rows = self._select("target_key = %s ORDER BY id LIMIT 1", [entity, str(target_key)])
        return _link(rows[0]) if rows else None

    def _select(self, condition, params, lock=None):
        """Rows of this integration's links of one entity that match ``condition``, after
        taking the advisory lock ``lock`` (if given) in the same round trip."""
        self.queries += 1
        self._links().flush_model()
        cr = self.env.cr
        take_lock = "SELECT pg_advisory_lock(%s); " if lock is not None else ""
        cr.execute(
            f"{take_lock}SELECT {_COLUMNS} FROM apicenter_link "  # noqa: S608 - fixed strings
            f"WHERE integration_id = %s AND entity = %s AND {condition}",
            [*([lock] if take_lock else []), self.integration_id, *params],
        )
        return cr.fetchall()

    # -- writes -------------------------------------------------------------------------------
    def put(self, entity, source_key, target_key, content_hash, meta=None, *, durable=True):
        """Create or update the link (one upsert) and commit it -- without waiting for the
        WAL flush unless ``durable`` (see the module docstring)."""
        self.queries += 1
        self._read_under_guard.pop((entity, str(source_key)), None)
        links = self._links()
        links.flush_model()
        cr = self.env.cr
        cr.execute(
            ("" if durable else "SET LOCAL synchronous_commit TO OFF; ")
            + f"""
            INSERT INTO apicenter_link AS link
                (integration_id, company_id, entity, source_key, target_key, content_hash,
                 meta, last_sync, create_uid, create_date, write_uid, write_date)
            VALUES (%(integration)s, %(company)s, %(entity)s, %(source)s, %(target)s, %(hash)s,
                    %(meta)s, now() at time zone 'UTC', %(uid)s, now() at time zone 'UTC',
                    %(uid)s, now() at time zone 'UTC')
            ON CONFLICT (integration_id, entity, source_key) DO UPDATE SET
                target_key = EXCLUDED.target_key,
                content_hash = EXCLUDED.content_hash,
                meta = CASE WHEN %(keep_meta)s THEN link.meta ELSE EXCLUDED.meta END,
                last_sync = EXCLUDED.last_sync,
                write_uid = EXCLUDED.write_uid,
                write_date = EXCLUDED.write_date
            RETURNING {_COLUMNS}
            """,
            {
                "integration": self.integration_id,
                "company": self._company(),
                "entity": entity,
                "source": str(source_key),
                "target": None if target_key is None else str(target_key),
                "hash": content_hash,
                "meta": Json(meta or {}),
                "keep_meta": meta is None,
                "uid": self.env.uid,
            },
        )
        row = cr.fetchone()
        links.invalidate_model(flush=False)
        self._commit()
        return _link(row)

    # -- the per-record guard -----------------------------------------------------------------
    @contextlib.contextmanager
    def guard(self, entity, source_key):
        """Hold the advisory lock of (integration, entity, source key) while the engine
        re-reads the link, looks the record up, writes it and stores the new link.

        The engine's first step under the guard is always that re-read, so on a READ
        COMMITTED cursor the guard takes the lock and reads the link in one round trip (two
        statements: the read's snapshot is taken once the lock is ours), and the next
        :meth:`get` of the record returns what it read."""
        key = guard_lock_key(self.integration_id, entity, source_key)
        record = (entity, str(source_key))
        try:
            if self._sees_new_commits():
                rows = self._select("source_key = %s", list(record), lock=key)
                self._read_under_guard[record] = _link(rows[0]) if rows else None
            else:
                self.env.cr.execute("SELECT pg_advisory_lock(%s)", [key])
                # end the transaction that waited for the lock: its snapshot (REPEATABLE
                # READ) dates from before the other run stored its link; the re-read must
                # see that link
                self._commit()
            yield
        finally:
            self._read_under_guard.pop(record, None)
            self._unlock(key)

    def _unlock(self, key):
        """Release a guard's lock (unlocking one not taken -- its statement failed -- only
        makes PostgreSQL warn)."""
        cr = self.env.cr
        try:
            cr.execute("SELECT pg_advisory_unlock(%s)", [key])
        except psycopg2.Error:
            # an aborted transaction refuses every statement: end it, then unlock (a session
            # lock survives the rollback)
            cr.rollback()
            cr.execute("SELECT pg_advisory_unlock(%s)", [key])

    def _sees_new_commits(self):
        """Whether each statement of the cursor sees what others committed before it (READ
        COMMITTED), asked once: the run cursor's level does not change during a run."""
        if self._read_committed is None:
            self.env.cr.execute("SHOW transaction_isolation")
            self._read_committed = self.env.cr.fetchone()[0] == "read committed"
        return self._read_committed

    def _links(self):
        return self.env["apicenter.link"].sudo()


def guard_lock_key(integration_id, entity, source_key):
    """The advisory lock key of one record's guard (a signed 64-bit int)."""
    text = f"apicenter_bb_visma:guard:{integration_id}:{entity}:{source_key}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


def _link(row):
    """A Link from a row of ``_COLUMNS``."""
    entity, source_key, target_key, content_hash, last_sync, meta = row
    return Link(
        entity=entity,
        source_key=source_key,
        target_key=target_key or None,
        content_hash=content_hash or None,
        synced_at=last_sync or None,
        meta=dict(meta or {}),
    )
