# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
import threading

from psycopg2 import IntegrityError
from psycopg2.extensions import ISOLATION_LEVEL_READ_COMMITTED, ISOLATION_LEVEL_REPEATABLE_READ

from odoo import SUPERUSER_ID, api
from odoo.tests import tagged
from odoo.tests.common import TransactionCase
from odoo.tools import mute_logger

from ..sync.linkstore import OdooLinkStore
from ..sync.sink import close_run_cursor, open_run_cursor
from .common import ApicenterCase


@tagged("post_install", "-at_install")
class TestLink(ApicenterCase):
    def _link(self, source_key="C-1", **vals):
        return self.env["apicenter.link"].create(
            {
                "integration_id": self.integration.id,
                "entity": "customer",
                "source_key": source_key,
                **vals,
            }
        )

    def test_same_source_key_twice_is_refused_by_the_database(self):
        self._link(target_key="100")
        with (
            mute_logger("odoo.sql_db"),
            self.assertRaises(IntegrityError),
            self.env.cr.savepoint(),
        ):
            self._link(target_key="200")

    def test_same_source_key_in_another_entity_or_integration_is_allowed(self):
        self._link()
        self._link(entity="order")
        other = self.integration.copy()
        self.env["apicenter.link"].create(
            {"integration_id": other.id, "entity": "customer", "source_key": "C-1"}
        )
        links = self.env["apicenter.link"].search(
            [("source_key", "=", "C-1"), ("integration_id", "in", (self.integration | other).ids)]
        )
        self.assertEqual(len(links), 3)

    def test_link_store_reads_a_batch_in_one_query(self):
        for key in ("A", "B", "C"):
            self._link(source_key=key, target_key=f"T-{key}", content_hash=f"h{key}")
        store = OdooLinkStore(self.env, self.integration.id)
        with self.assertQueryCount(1):
            found = store.get_many("customer", ["A", "C", "missing"])
        self.assertEqual(sorted(found), ["A", "C"])
        self.assertEqual((found["C"].target_key, found["C"].content_hash), ("T-C", "hC"))
        self.assertEqual(store.queries, 1)

    def test_link_store_put_creates_then_updates_the_same_row(self):
        commits = []
        store = OdooLinkStore(self.env, self.integration.id, commit=lambda: commits.append(1))
        first = store.put("customer", "D-1", "500", "hash1", {"number": "10001"})
        second = store.put("customer", "D-1", "500", "hash2")
        links = self.env["apicenter.link"].search([("source_key", "=", "D-1")])
        self.assertEqual(len(links), 1)
        self.assertEqual((first.content_hash, second.content_hash), ("hash1", "hash2"))
        self.assertEqual(second.meta, {"number": "10001"}, "meta=None keeps the stored meta")
        self.assertEqual(links.content_hash, "hash2")
        self.assertEqual(links.company_id, self.integration.company_id)
        self.assertEqual(len(commits), 2, "each put is made durable at once")
        store.put("customer", "D-1", "500", "hash3", {})
        self.assertEqual(store.get("customer", "D-1").meta, {})

    def test_only_a_durable_put_waits_for_its_wal_flush(self):
        flushes = []

        def commit():  # what the commit will apply to the transaction it ends
            self.env.cr.execute("SHOW synchronous_commit")
            flushes.append(self.env.cr.fetchone()[0])

        store = OdooLinkStore(self.env, self.integration.id, commit=commit)
        store.put("customer", "D-1", "500", "hash1")
        store.put("customer", "D-2", "501", "hash2", durable=False)
        self.assertEqual(flushes, ["on", "off"], "durable is the default")
        self.assertEqual(store.get("customer", "D-2").target_key, "501")

    def test_link_store_finds_a_link_by_target_key(self):
        self._link(source_key="E-1", target_key="777")
        store = OdooLinkStore(self.env, self.integration.id)
        self.assertEqual(store.find_by_target("customer", "777").source_key, "E-1")
        self.assertIsNone(store.find_by_target("customer", "778"))
        self.assertIsNone(store.get("customer", "nope"))


@tagged("post_install", "-at_install")
class TestGuardAcrossConnections(TransactionCase):
    """Two runs on two real connections (the registry is not in test mode here): the guard's
    re-read must see the link the other run stored while this one waited for the lock -- the
    check that keeps two runs from creating the same record. The integration is committed
    first and deleted at the end (other connections cannot see the test's own transaction)."""

    def setUp(self):
        super().setUp()
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            self.integration_id = env["apicenter.integration"].create({"name": "Guard"}).id
        self.addCleanup(self._delete_integration)

    def _delete_integration(self):
        with self.registry.cursor() as cr:
            api.Environment(cr, SUPERUSER_ID, {})["apicenter.integration"].browse(
                self.integration_id
            ).unlink()

    def _store(self, commits):
        cr = open_run_cursor(self.registry.cursor)
        self.addCleanup(close_run_cursor, cr)
        env = api.Environment(cr, SUPERUSER_ID, {})

        def commit():
            commits.append(1)
            cr.commit()  # pylint: disable=invalid-commit

        return OdooLinkStore(env, self.integration_id, commit=commit)

    def test_the_reread_under_the_guard_sees_the_link_the_other_run_stored_meanwhile(self):
        first_commits, second_commits = [], []
        first, second = self._store(first_commits), self._store(second_commits)
        self.assertIsNone(second.get("customer", "D-1"), "the second run's read comes first")
        seen = {}

        def second_run():
            queries = second.queries
            with second.guard("customer", "D-1"):
                seen["link"] = second.get("customer", "D-1")
                seen["queries"] = second.queries - queries

        with first.guard("customer", "D-1"):
            waiting = threading.Thread(target=second_run)
            waiting.start()
            waiting.join(timeout=0.5)
            self.assertTrue(waiting.is_alive(), "the second run waits for the first one's guard")
            first.put("customer", "D-1", "V-1", "hash")
        waiting.join(timeout=30)
        self.assertFalse(waiting.is_alive())
        self.assertEqual(seen["link"].target_key, "V-1", "the second run sees the new link")
        self.assertEqual(seen["queries"], 1, "the lock and the re-read in one round trip")
        self.assertEqual(len(first_commits), 1, "the put is committed at once")
        self.assertEqual(second_commits, [], "READ COMMITTED: no commit to refresh a snapshot")

    def test_the_run_cursor_returns_to_the_pool_in_odoos_isolation_level(self):
        cr = open_run_cursor(self.registry.cursor)
        connection = cr.connection
        self.assertEqual(connection.isolation_level, ISOLATION_LEVEL_READ_COMMITTED)
        close_run_cursor(cr)
        self.assertEqual(connection.isolation_level, ISOLATION_LEVEL_REPEATABLE_READ)
