# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl.html)
"""Value maps: source value -> target value tables (payment terms, VAT codes, carriers...)."""

from odoo import fields, models


class ApicenterValueMap(models.Model):
    _name = "apicenter.value.map"
    _description = "APIcenter Value Map"
    _order = "name, id"

    name = fields.Char(required=True, translate=True)
    code = fields.Char(
        required=True,
        help="How mappings and flows refer to this table, e.g. payment_terms, vat_codes.",
    )
    active = fields.Boolean(default=True)
    company_id = fields.Many2one("res.company", help="Empty: shared by all companies.")
    line_ids = fields.One2many(
        "apicenter.value.map.line", "value_map_id", string="Values", copy=True
    )
    note = fields.Text()

    _code_company_uniq = models.UniqueIndex(
        "(code, COALESCE(company_id, 0))",
        "A value map code must be unique per company.",
    )

    def _to_core(self):
        """``{code: {source_value: target_value}}`` for the pure mapper."""
        return {
            value_map.code: {line.source_value: line.target_value for line in value_map.line_ids}
            for value_map in self
        }


class ApicenterValueMapLine(models.Model):
    _name = "apicenter.value.map.line"
    _description = "APIcenter Value Map Line"
    _order = "value_map_id, sequence, id"

    value_map_id = fields.Many2one(
        "apicenter.value.map", required=True, ondelete="cascade", index=True
    )
    company_id = fields.Many2one(related="value_map_id.company_id", store=True)
    sequence = fields.Integer(default=10)
    source_value = fields.Char(required=True)
    target_value = fields.Char()

    _map_source_uniq = models.Constraint(
        "UNIQUE(value_map_id, source_value)", "Each source value may appear once per value map."
    )
