# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
from psycopg2 import IntegrityError

from odoo.tests import tagged
from odoo.tools import mute_logger

from ..sync.linkstore import OdooLinkStore
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

    def test_link_store_finds_a_link_by_target_key(self):
        self._link(source_key="E-1", target_key="777")
        store = OdooLinkStore(self.env, self.integration.id)
        self.assertEqual(store.find_by_target("customer", "777").source_key, "E-1")
        self.assertIsNone(store.find_by_target("customer", "778"))
        self.assertIsNone(store.get("customer", "nope"))
