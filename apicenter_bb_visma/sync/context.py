# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""Build the engine's FlowContext from a flow record, and find the pure flow class."""

import contextlib
import logging

from bbvisma.engine import ExchangeRecorder, FlowContext

from .documents import OdooDocumentCache
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
    recorder = ExchangeRecorder()
    with contextlib.ExitStack() as stack:
        bb = integration._get_client("bb", on_exchange=recorder)
        stack.callback(_close, bb)
        visma = integration._get_client("visma", on_exchange=recorder)
        stack.callback(_close, visma)
        yield FlowContext(
            settings=flow._flow_settings(),
            mapping=flow_mapping(flow),
            value_maps=flow_value_maps(flow),
            links=OdooLinkStore(sink.env, integration.id, commit=sink.commit),
            sink=sink,
            bb=bb,
            visma=visma,
            # the integration's parsed documents, shared by all its flows (apicenter.document)
            documents=OdooDocumentCache(sink.env, integration.id, commit=sink.commit),
            dry_run=dry_run,
            batch_size=flow.batch_size,
            logger=_logger,
            recorder=recorder,
            redactor=integration._redactor(),
        )


def flow_mapping(flow):
    """The mapping a run uses: the flow's own, else the mapping whose code is the flow type
    (the editable copy of the core's default), else the core's default itself, else None
    (a flow type that needs no mapping)."""
    if flow.mapping_id:
        return flow.mapping_id._to_core()
    return type_mapping(flow.env, flow.flow_type, flow.integration_id.company_id)


def type_mapping(env, flow_type, company):
    """The mapping of a flow type: the record whose code is the type (the company's before a
    shared one), else the core's default, else None."""
    from bbvisma.flows.defaults import DEFAULTS_DIR, default_mapping

    mapping = env["apicenter.mapping"]._find_by_code([flow_type], company)
    if mapping:
        return mapping._to_core()
    if (DEFAULTS_DIR / f"{flow_type}.json").is_file():
        return default_mapping(flow_type)
    return None


def flow_value_maps(flow):
    """The value maps a run of ``flow`` uses (see :func:`company_value_maps`)."""
    return company_value_maps(flow.env, flow.integration_id.company_id)


def company_value_maps(env, company):
    """``{code: {source: target}}``: the core's default tables, each replaced as a whole by
    the value map record of the same code (the company's before a shared one)."""
    from bbvisma.flows.defaults import default_value_maps

    tables = default_value_maps()
    records = env["apicenter.value.map"].search([("company_id", "in", [company.id, False])])
    for record in records.sorted(lambda r: bool(r.company_id)):  # company-specific last: wins
        tables.update(record._to_core())
    return tables


def _close(client):
    close = getattr(client, "close", None)
    if close:
        close()
