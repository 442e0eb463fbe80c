# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""Build the engine's FlowContext from a flow record, and find the pure flow class."""

import contextlib
import logging

from bbvisma.engine import ExchangeRecorder, FlowContext
from bbvisma.linkstore import MemoryDocumentCache

from .linkstore import OdooLinkStore

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
    """Yield the engine's ``FlowContext`` for one run of ``flow``; close the clients after.

    Both clients report their HTTP exchanges to one ExchangeRecorder, which the engine
    brackets per record: each log line carries the calls made for its own record.
    """
    integration = flow.integration_id
    value_maps = flow.env["apicenter.value.map"].search(
        [("company_id", "in", [integration.company_id.id, False])]
    )
    recorder = ExchangeRecorder()
    with contextlib.ExitStack() as stack:
        bb = integration._get_client("bb", on_exchange=recorder)
        stack.callback(_close, bb)
        visma = integration._get_client("visma", on_exchange=recorder)
        stack.callback(_close, visma)
        yield FlowContext(
            settings=flow._flow_settings(),
            mapping=flow.mapping_id._to_core() if flow.mapping_id else None,
            value_maps=value_maps._to_core(),
            links=OdooLinkStore(sink.env, integration.id, commit=sink.commit),
            sink=sink,
            bb=bb,
            visma=visma,
            # per run for now: a document cache shared across flows needs its own table
            documents=MemoryDocumentCache(max_entries=1000),
            dry_run=dry_run,
            batch_size=flow.batch_size,
            logger=_logger,
            recorder=recorder,
            redactor=integration._redactor(),
        )


def _close(client):
    close = getattr(client, "close", None)
    if close:
        close()
