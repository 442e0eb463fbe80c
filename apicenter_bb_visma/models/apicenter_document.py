# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""The parsed documents of an integration: each BuchhaltungsButler receipt read once per change.

Reading a receipt's e-invoice costs one BuchhaltungsButler call, and its API allows 100 calls a
minute: the file fetch is the bottleneck of the orders, products, stock, prices and shipments
flows. So the first flow that needs a receipt fetches and parses it, and every flow of the
integration finds the result here (``sync/documents.py`` implements the core's
``DocumentCache`` on this table) until the receipt's list row changes (its fingerprint).

Only what was read is kept -- the receipt's detail fields, the e-invoice as a JSON document or
the reason it was refused -- never the file. It names buyers and their contacts, so it is
personal data: the daily retention purge deletes what was fetched longer ago than the
integration's log retention (a receipt still in use is then fetched once more).
"""

from odoo import api, fields, models


class ApicenterDocument(models.Model):
    _name = "apicenter.document"
    _description = "APIcenter Parsed Document"
    _order = "integration_id, receipt_key"
    _rec_name = "receipt_key"

    integration_id = fields.Many2one(
        "apicenter.integration", required=True, ondelete="cascade", index=True, readonly=True
    )
    company_id = fields.Many2one(related="integration_id.company_id", store=True, index=True)
    receipt_key = fields.Char(
        string="Receipt", required=True, readonly=True, help="BuchhaltungsButler receipt id."
    )
    fingerprint = fields.Char(
        required=True,
        readonly=True,
        help="Hash of the receipt's list row: when it changes, the receipt is read again.",
    )
    document = fields.Json(
        readonly=True,
        help="What was read: the receipt's detail fields, its e-invoice as a document or the "
        "reason it could not be read. Never the file itself.",
    )
    fetched_at = fields.Datetime(required=True, readonly=True, index=True)

    _integration_receipt_uniq = models.Constraint(
        "UNIQUE(integration_id, receipt_key)",
        "A receipt is kept once per integration.",
    )


class ApicenterIntegration(models.Model):
    _inherit = "apicenter.integration"

    @api.model
    def _purge_domains(self, integration, cutoff):
        """The runs and logs (see the base method), then the parsed documents fetched before
        the integration's retention."""
        domains = super()._purge_domains(integration, cutoff)
        domains["apicenter.document"] = [
            ("integration_id", "=", integration.id),
            ("fetched_at", "<", cutoff),
        ]
        return domains
