"""The default mappings and value maps the flows ship with, as data.

Each flow's default mapping is ``<flow_type>.json`` in this folder::

    {"name": "orders", "rows": [...rule rows...], "children": {"lines": [...rows...]}}

(rows as :meth:`bbvisma.mapper.Mapping.from_rows` takes them) and every default value map is
in ``value_maps.json`` (``{map name: {source value: target value}}``; keys starting with ``_``
are comments). The Odoo addon ships the same rows as XML data generated from these files, so a
user starts from them and edits them on the mapping form.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bbvisma.errors import ConfigError
from bbvisma.mapper import Mapping

__all__ = ["DEFAULTS_DIR", "default_mapping", "default_mapping_data", "default_value_maps"]

DEFAULTS_DIR = Path(__file__).resolve().parent


def _read(name: str) -> str:
    path = DEFAULTS_DIR / name
    if not path.is_file():
        raise ConfigError(f"no default file {name!r} in {DEFAULTS_DIR}")
    return path.read_text(encoding="utf-8")


def default_mapping_data(flow_type: str) -> dict[str, Any]:
    """``{"name", "rows", "children"}`` of a flow's default mapping (a fresh copy)."""
    data = json.loads(_read(f"{flow_type}.json"))
    return {
        "name": data.get("name") or flow_type,
        "rows": data.get("rows") or [],
        "children": data.get("children") or {},
    }


def default_mapping(flow_type: str) -> Mapping:
    """The flow's default mapping, built (and so validated)."""
    data = default_mapping_data(flow_type)
    return Mapping.from_rows(data["name"], data["rows"], data["children"])


def default_value_maps() -> dict[str, dict[str, str]]:
    """Every default value map (a fresh copy the caller may change)."""
    data = json.loads(_read("value_maps.json"))
    return {
        name: {str(k): str(v) for k, v in table.items()}
        for name, table in data.items()
        if not name.startswith("_") and isinstance(table, dict)
    }
