# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""OdooDocumentCache: the core's DocumentCache over the apicenter.document table.

One table per database, one row per (integration, receipt): every flow of an integration
shares what any of them read (``bbvisma.flows.documents.ReceiptDocuments`` asks here before it
fetches a file). Like the link store, it works through the run's own cursor and commits each
stored document at once: a document costs a BuchhaltungsButler call, and keeping it must not
depend on the main transaction (rolled back when a run fails), nor wait for the end of the run,
nor hold its row lock while the run waits for a record's guard. Reading through the same cursor
sees what other runs committed meanwhile.

Unlike a link, a stored document is a cache: losing the last ones in a crash of PostgreSQL
itself costs reading their files again, never a duplicate. So its commit does not wait for the
WAL flush (``synchronous_commit`` off for that transaction alone, sent with the INSERT): the
commit is still atomic and visible to every other run at once, and the next synchronous commit
-- at the latest the sink's at the end of the batch -- takes it to disk (the WAL is written in
order).

``put`` is one ``INSERT ... ON CONFLICT DO UPDATE`` on the (integration, receipt) constraint, so
two flows that read the same receipt at the same moment store one row, and neither fails.
"""

from psycopg2.extras import Json

from bbvisma.linkstore import DocumentCache

from .linkstore import RunCursorStore


class OdooDocumentCache(RunCursorStore, DocumentCache):
    """Parsed documents of one integration. ``env`` is the environment of the run's own
    cursor; ``commit`` makes a put durable (the sink's commit). ``hits``/``misses``/``puts``
    count what a run did (the run's log and the tests read them)."""

    def __init__(self, env, integration_id, commit=None):
        super().__init__(env, integration_id, commit)
        self.hits = self.misses = self.puts = 0

    def get(self, receipt_key, modified):
        self.env.cr.execute(
            """
            SELECT document FROM apicenter_document
             WHERE integration_id = %s AND receipt_key = %s AND fingerprint = %s
            """,
            [self.integration_id, str(receipt_key), str(modified)],
        )
        row = self.env.cr.fetchone()
        if row is None or row[0] is None:
            self.misses += 1
            return None
        self.hits += 1
        return row[0]

    def put(self, receipt_key, modified, document):
        self.puts += 1
        cr = self.env.cr
        cr.execute(
            """
            SET LOCAL synchronous_commit TO OFF;
            INSERT INTO apicenter_document AS doc
                (integration_id, company_id, receipt_key, fingerprint, document, fetched_at,
                 create_uid, create_date, write_uid, write_date)
            VALUES (%(integration)s, %(company)s, %(receipt)s, %(fingerprint)s, %(document)s,
                    now() at time zone 'UTC', %(uid)s, now() at time zone 'UTC', %(uid)s,
                    now() at time zone 'UTC')
            ON CONFLICT (integration_id, receipt_key) DO UPDATE SET
                fingerprint = EXCLUDED.fingerprint,
                document = EXCLUDED.document,
                fetched_at = EXCLUDED.fetched_at,
                write_uid = EXCLUDED.write_uid,
                write_date = EXCLUDED.write_date
            """,
            {
                "integration": self.integration_id,
                "company": self._company(),
                "receipt": str(receipt_key),
                "fingerprint": str(modified),
                "document": Json(document),
                "uid": self.env.uid,
            },
        )
        self.env["apicenter.document"].invalidate_model()
        self._commit()
