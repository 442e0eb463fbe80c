# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
from unittest.mock import patch

from odoo.tests import new_test_user
from odoo.tests.common import TransactionCase

from ..sync.sink import OdooRunSink

MANAGER = "apicenter_bb_visma.group_apicenter_manager"
USER = "apicenter_bb_visma.group_apicenter_user"

SECRETS = {
    "bb_api_secret": "bb-secret-0123456789",
    "bb_api_key": "bb-key-abcdefghijkl",
    "visma_client_secret": "visma-secret-9876543210",
}


class ApicenterCase(TransactionCase):
    """An integration with credentials, an Integration User and an Integration Manager.

    The registry is put in test mode: the run cursor of the sink (registry.cursor()) is then a
    test cursor on the test's transaction, so runs and logs of records created by the test are
    visible and rolled back with it.
    """

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.registry_enter_test_mode_cls()
        cls.user = new_test_user(cls.env, login="apicenter_user", groups=f"base.group_user,{USER}")
        cls.manager = new_test_user(
            cls.env, login="apicenter_manager", groups=f"base.group_user,{MANAGER}"
        )
        cls.integration = cls.env["apicenter.integration"].create(
            {
                "name": "Test integration",
                "bb_base_url": "http://127.0.0.1:8071/api/v1",
                "bb_api_client": "client-id",
                "visma_base_url": "http://127.0.0.1:8072",
                "visma_token_url": "http://127.0.0.1:8072/connect/token",
                "visma_client_id": "visma-client",
                "visma_tenant_id": "tenant",
                "visma_company_id": "1",
                **SECRETS,
            }
        )

    @classmethod
    def make_flow(cls, **vals):
        return cls.env["apicenter.flow"].create(
            {
                "name": vals.pop("name", "Customers"),
                "integration_id": cls.integration.id,
                "flow_type": vals.pop("flow_type", "customers"),
                **vals,
            }
        )


class WorkerKilled(BaseException):
    """What ends a worker process: not an Exception, so neither the engine nor the flow model
    may catch it."""


def kill_run_after(records, start):
    """Call ``start()`` (a run) and kill its worker after its ``records``-th record: the sink
    raises :class:`WorkerKilled` once that record is logged, then every run cursor is closed
    (the process is gone, and what it had not committed with it). Returns the exception.

    Not ``assertRaises`` around the run: Odoo's wraps the block in a savepoint of the test's
    connection and rolls it back -- taking the run cursor's commits along.
    """
    state = {"records": 0, "sinks": []}
    original = OdooRunSink.record

    def record(sink, result):
        original(sink, result)
        state["records"] += 1
        if sink not in state["sinks"]:
            state["sinks"].append(sink)
        if state["records"] == records:
            raise WorkerKilled(f"worker killed after {records} records")

    killed = None
    with patch.object(OdooRunSink, "record", record):
        try:
            start()
        except WorkerKilled as exc:
            killed = exc
    for sink in state["sinks"]:
        sink._cr.close()
    return killed
