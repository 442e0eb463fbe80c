# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""Build the engine's FlowContext from a flow record, and find the pure flow class."""

import contextlib
import logging

from .linkstore import OdooDocumentCache, OdooLinkStore

_logger = logging.getLogger(__name__)


def load_flow_class(flow_type):
    """The pure flow class for ``flow_type`` from ``bbvisma.flows.FLOW_CLASSES``, or None.

    None means this version of the core does not implement the flow type yet; the caller ends
    the run as failed and says so.
    """
    from bbvisma import flows

    return getattr(flows, "FLOW_CLASSES", {}).get(flow_type)


@contextlib.contextmanager
def build_flow_context(flow, sink, dry_run=False):
    """Yield the engine's ``FlowContext`` for one run of ``flow``; close the clients after."""
    from bbvisma.engine import FlowContext

    integration = flow.integration_id
    value_maps = flow.env["apicenter.value.map"].search(
        [("company_id", "in", [integration.company_id.id, False])]
    )
    with contextlib.ExitStack() as stack:
        bb = integration._get_client("bb")
        stack.callback(_close, bb)
        visma = integration._get_client("visma")
        stack.callback(_close, visma)
        yield FlowContext(
            settings=flow._flow_settings(),
            mapping=flow.mapping_id._to_core() if flow.mapping_id else None,
            value_maps=value_maps._to_core(),
            links=OdooLinkStore(flow.env, integration.id, dry_run=dry_run),
            sink=sink,
            bb=bb,
            visma=visma,
            documents=OdooDocumentCache(),
            dry_run=dry_run,
            batch_size=flow.batch_size,
            logger=_logger,
        )


def _close(client):
    close = getattr(client, "close", None)
    if close:
        close()
