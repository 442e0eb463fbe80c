"""Odoo-side adapters of the pure core: link store, run sink, flow context.

Plain Python over the ORM; the models import them lazily where they need the core.
"""
