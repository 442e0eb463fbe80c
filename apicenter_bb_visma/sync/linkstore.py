# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""OdooLinkStore: the core's LinkStore over the apicenter.link table.

The core requires a link to be stored *at once*: a created record's link must survive a
failure later in the run, or the next run would create the record a second time. So the store
reads and writes through the run's own cursor (the sink's), and commits after every put.
Reading through that same cursor matters too: Odoo transactions are REPEATABLE READ, so the
main transaction would not see links committed by another cursor after it started.

``put`` is one ``INSERT ... ON CONFLICT DO UPDATE`` on the (integration, entity, source key)
unique constraint: two workers storing the same link can never make two rows, nor fail.

``guard`` is the core's per-record lock (``LinkStore.guard``) as a PostgreSQL session advisory
lock of the run cursor's connection: parallel queue_job batches, or an orders run creating a
customer while the customers run handles the same debtor, run in different processes, so a
lock in Python memory would not do. A session lock (not a transaction lock) because the link
put inside the guard commits; it is reentrant within one connection, as the core requires, and
a crashed worker's connection takes it along.
"""

import contextlib
import hashlib

import psycopg2
from psycopg2.extras import Json

from bbvisma.linkstore import Link, LinkStore


class OdooLinkStore(LinkStore):
    """Links of one integration. ``env`` is the environment of the run's own cursor;
    ``commit`` makes a put durable (the sink's commit; a no-op is fine in tests)."""

    def __init__(self, env, integration_id, commit=None):
        self.env = env
        self.integration_id = integration_id
        self._commit = commit or (lambda: None)
        self.queries = 0

    # -- reads --------------------------------------------------------------------------------
    _FIELDS = ["entity", "source_key", "target_key", "content_hash", "last_sync", "meta"]

    def get(self, entity, source_key):
        return self.get_many(entity, [source_key]).get(source_key)

    def get_many(self, entity, source_keys):
        """All links of the batch in ONE search_read."""
        keys = list(dict.fromkeys(str(key) for key in source_keys))
        if not keys:
            return {}
        self.queries += 1
        rows = self._links().search_read(
            [
                ("integration_id", "=", self.integration_id),
                ("entity", "=", entity),
                ("source_key", "in", keys),
            ],
            self._FIELDS,
        )
        return {row["source_key"]: _link(row) for row in rows}

    def find_by_target(self, entity, target_key):
        self.queries += 1
        rows = self._links().search_read(
            [
                ("integration_id", "=", self.integration_id),
                ("entity", "=", entity),
                ("target_key", "=", str(target_key)),
            ],
            self._FIELDS,
            limit=1,
            order="id",
        )
        return _link(rows[0]) if rows else None

    # -- writes -------------------------------------------------------------------------------
    def put(self, entity, source_key, target_key, content_hash, meta=None):
        """Create or update the link (one upsert) and commit it."""
        self.queries += 1
        links = self._links()
        links.flush_model()
        cr = self.env.cr
        uid = self.env.uid
        company_id = self.env["apicenter.integration"].browse(self.integration_id).company_id.id
        cr.execute(
            """
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
            RETURNING entity, source_key, target_key, content_hash, last_sync, meta
            """,
            {
                "integration": self.integration_id,
                "company": company_id,
                "entity": entity,
                "source": str(source_key),
                "target": None if target_key is None else str(target_key),
                "hash": content_hash,
                "meta": Json(meta or {}),
                "keep_meta": meta is None,
                "uid": uid,
            },
        )
        row = cr.dictfetchone()
        links.invalidate_model()
        self._commit()
        return _link(row)

    # -- the per-record guard -----------------------------------------------------------------
    @contextlib.contextmanager
    def guard(self, entity, source_key):
        """Hold the advisory lock of (integration, entity, source key) while the engine
        re-reads the link, looks the record up, writes it and stores the new link."""
        key = guard_lock_key(self.integration_id, entity, source_key)
        cr = self.env.cr
        cr.execute("SELECT pg_advisory_lock(%s)", [key])
        # end the transaction that waited for the lock: its snapshot (REPEATABLE READ) dates
        # from before the other run stored its link; the re-read must see that link
        self._commit()
        try:
            yield
        finally:
            try:
                cr.execute("SELECT pg_advisory_unlock(%s)", [key])
            except psycopg2.Error:
                # an aborted transaction refuses every statement: end it, then unlock (a
                # session lock survives the rollback)
                cr.rollback()
                cr.execute("SELECT pg_advisory_unlock(%s)", [key])

    def _links(self):
        return self.env["apicenter.link"].sudo()


def guard_lock_key(integration_id, entity, source_key):
    """The advisory lock key of one record's guard (a signed 64-bit int)."""
    text = f"apicenter_bb_visma:guard:{integration_id}:{entity}:{source_key}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


def _link(row):
    return Link(
        entity=row["entity"],
        source_key=row["source_key"],
        target_key=row["target_key"] or None,
        content_hash=row["content_hash"] or None,
        synced_at=row["last_sync"] or None,
        meta=dict(row["meta"] or {}),
    )
