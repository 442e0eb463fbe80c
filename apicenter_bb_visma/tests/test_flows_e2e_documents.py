# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""The parsed-document store (apicenter.document): the core's DocumentCache in Odoo."""

from datetime import datetime, timedelta

from psycopg2 import IntegrityError

from odoo.tests import tagged
from odoo.tools import mute_logger

from ..sync.documents import OdooDocumentCache
from .common import ApicenterCase

NOW = datetime(2026, 6, 30, 12, 0, 0)
ENTRY = {
    "detail": {"id_by_customer": "14", "currency": "HUF"},
    "document": {"number": "21/001003559/996", "lines": [{"sku": "DIZEL"}]},
    "refusal": None,
}


@tagged("post_install", "-at_install")
class TestDocumentStore(ApicenterCase):
    def store(self, integration=None):
        return OdooDocumentCache(self.env, (integration or self.integration).id)

    def documents(self):
        return self.env["apicenter.document"].search([("integration_id", "=", self.integration.id)])

    def test_a_document_is_found_only_under_the_fingerprint_it_was_stored_with(self):
        store = self.store()
        self.assertIsNone(store.get("14", "fp-1"))
        store.put("14", "fp-1", ENTRY)
        self.assertEqual(store.get("14", "fp-1"), ENTRY)
        self.assertIsNone(store.get("14", "fp-2"), "a changed receipt is read again")
        self.assertEqual((store.hits, store.misses, store.puts), (1, 2, 1))

    def test_a_changed_receipt_replaces_its_document_in_one_row(self):
        store = self.store()
        store.put("14", "fp-1", ENTRY)
        changed = dict(ENTRY, refusal={"cause": "zugferd1", "message": "old syntax"})
        store.put("14", "fp-2", changed)
        self.assertEqual(len(self.documents()), 1)
        self.assertEqual(self.documents().fingerprint, "fp-2")
        self.assertEqual(store.get("14", "fp-2"), changed)
        self.assertIsNone(store.get("14", "fp-1"))

    def test_documents_are_shared_per_integration_and_kept_once_per_receipt(self):
        other = self.integration.copy({"name": "Other"})
        self.store().put("14", "fp-1", ENTRY)
        self.assertIsNone(self.store(other).get("14", "fp-1"), "another account, another store")
        self.store(other).put("14", "fp-1", ENTRY)
        self.assertEqual(self.store(other).get("14", "fp-1"), ENTRY)
        # Odoo's assertRaises rolls back to a savepoint around the block
        with mute_logger("odoo.sql_db"), self.assertRaises(IntegrityError):
            self.env["apicenter.document"].create(
                {
                    "integration_id": self.integration.id,
                    "receipt_key": "14",
                    "fingerprint": "fp-x",
                    "fetched_at": NOW,
                }
            ).flush_recordset()

    def test_a_put_is_committed_at_once_without_waiting_for_a_wal_flush(self):
        commits = []

        def commit():
            # what the commit will apply to the transaction it ends
            self.env.cr.execute("SHOW synchronous_commit")
            commits.append(self.env.cr.fetchone()[0])

        store = OdooDocumentCache(self.env, self.integration.id, commit=commit)
        store.put("14", "fp-1", ENTRY)
        self.assertEqual(commits, ["off"], "a cached document is committed at once, async")

    def test_the_company_is_read_once_per_store_not_per_put(self):
        store = self.store()
        store.put("1", "fp", ENTRY)
        self.env.invalidate_all()  # what a commit does to the cache between two puts
        with self.assertQueryCount(1):
            store.put("2", "fp", ENTRY)

    def test_no_file_is_kept_only_what_was_read(self):
        self.store().put("14", "fp-1", ENTRY)
        document = self.documents()
        self.assertEqual(set(document.document), {"detail", "document", "refusal"})
        self.assertNotIn("file", document.document["detail"])

    def test_the_retention_purge_deletes_documents_fetched_before_it(self):
        self.integration.log_retention_days = 30
        store = self.store()
        store.put("old", "fp", ENTRY)
        store.put("new", "fp", ENTRY)
        self.env["apicenter.document"].flush_model()
        self.env.cr.execute(
            "UPDATE apicenter_document SET fetched_at = %s WHERE receipt_key = %s",
            [NOW - timedelta(days=31), "old"],
        )
        self.env.cr.execute(
            "UPDATE apicenter_document SET fetched_at = %s WHERE receipt_key = %s",
            [NOW - timedelta(days=29), "new"],
        )
        self.env["apicenter.document"].invalidate_model()
        deleted = self.env["apicenter.integration"]._purge_expired(now=NOW)
        self.assertEqual(deleted, (0, 0), "the purge still reports logs and runs")
        self.assertEqual(self.documents().mapped("receipt_key"), ["new"])
