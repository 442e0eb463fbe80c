"""The BuchhaltungsButler contract, read from the vendored swagger at runtime.

The simulator and the contract tests share this one reading of
``<reference>/buchhaltungsbutler-v1.swagger.json`` so they cannot drift from it:

* **request schemas** -- the swagger lists each body field as a separate ``in: body``
  parameter; :meth:`BBContract.request_schema` folds them into one JSON schema (required,
  type, enum, nested ``$ref`` schemas resolved);
* **error catalogue** -- responses are keyed ``"<status> (<error_code>)"`` (e.g. ``"401 (3)"``)
  with the exact message in the referenced definition; :meth:`BBContract.error_body` builds
  the real body and :meth:`BBContract.field_error_code` finds the code whose message names a
  field (``"invalid limit specified"`` -> 10 on /receipts/get);
* **response schemas** -- the swagger's response definitions abuse ``enum`` for example values
  (``"rows": {"enum": [1]}``). :meth:`BBContract.response_schema` keeps the enums that carry
  meaning (``success``, ``error_code``, ``message``, multi-valued enums such as
  ``e_invoice_type``), drops one-value example enums inside ``data``, makes data fields
  nullable (the live API sends ``null`` for unset strings), and -- in strict mode -- forbids
  fields the swagger does not list, so a simulator cannot invent one unnoticed.

Documented beyond the vendored copy (48 paths, info.version 1.9.1), named here and nowhere
else: BuchhaltungsButler's current published spec adds the filter ``date_since_last_modified``
(``YYYY-MM-DD HH:MM:SS`` or ``YYYY-MM-DD`` meaning 23:59:59) to ``/receipts/get`` (error 19)
and ``/transactions/get`` (error 14), and the live debtor list carries ``customer_number``
(reference README). The 429 answer beyond the quota is undocumented; its shape is the
simulator's choice (see :data:`QUOTA_ERROR_CODE`).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema

from bbvisma.reference import reference_dir

SPEC_FILE = "buchhaltungsbutler-v1.swagger.json"

#: body filters BuchhaltungsButler documents beyond the vendored swagger: path -> field ->
#: (schema, error_code, message)
EXTRA_BODY_PARAMS: dict[str, dict[str, tuple[dict[str, Any], int, str]]] = {
    "/receipts/get": {
        "date_since_last_modified": (
            {"type": "string"},
            19,
            "invalid date_since_last_modified specified",
        )
    },
    "/transactions/get": {
        "date_since_last_modified": (
            {"type": "string"},
            14,
            "invalid date_since_last_modified specified",
        )
    },
}
#: response fields returned by the live API but missing from the swagger's definitions
EXTRA_LIST_FIELDS: dict[str, dict[str, dict[str, Any]]] = {
    "/settings/get/debtors": {"customer_number": {"type": "string"}},
}
#: the quota answer (undocumented by BuchhaltungsButler; chosen by the simulator)
QUOTA_STATUS = 429
QUOTA_ERROR_CODE = 429
QUOTA_SCHEMA = {
    "type": "object",
    "properties": {
        "success": {"type": "boolean", "enum": [False]},
        "error_code": {"type": "integer", "enum": [QUOTA_ERROR_CODE]},
        "message": {"type": "string"},
    },
    "required": ["success", "error_code", "message"],
    "additionalProperties": False,
}

_RESPONSE_KEY = re.compile(r"^(\d{3})(?:\s*\((\d+)\))?$")
_TOP_LEVEL_ENUMS = ("success", "error_code", "message")


class ContractError(AssertionError):
    """A response that no documented response of the endpoint allows."""


def _norm(name: str) -> str:
    return re.sub(r"[\s_]", "", name.lower())


class BBContract:
    """One reading of the swagger; cheap to query, load once (:meth:`load`)."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.paths: dict[str, dict[str, Any]] = {p: v["post"] for p, v in spec["paths"].items()}
        self._id_paths = {p.rsplit("/", 1)[0] for p in self.paths if p.endswith("/id_by_customer")}

    @classmethod
    @functools.lru_cache(maxsize=4)
    def load(cls, path: str | Path | None = None) -> BBContract:
        spec_path = Path(path) if path else reference_dir() / SPEC_FILE
        return cls(json.loads(spec_path.read_text(encoding="utf-8")))

    # -- paths --------------------------------------------------------------------------------
    def spec_path(self, request_path: str) -> str | None:
        """The swagger path serving ``request_path`` (relative to the base URL), or ``None``.

        The swagger writes id paths literally (``/receipts/get/id_by_customer``); the id goes
        where ``id_by_customer`` stands, so ``/receipts/get/17`` maps to that entry.
        """
        path = "/" + request_path.strip("/")
        if path in self.paths:
            return path
        head, _, tail = path.rpartition("/")
        if head in self._id_paths and tail:
            return f"{head}/id_by_customer"
        return None

    # -- requests -----------------------------------------------------------------------------
    def resolve(self, schema: Any) -> Any:
        """``schema`` with every ``$ref`` replaced by its definition (recursively)."""
        if isinstance(schema, dict):
            if "$ref" in schema:
                name = schema["$ref"].rsplit("/", 1)[-1]
                return self.resolve(self.spec["definitions"][name])
            return {k: self.resolve(v) for k, v in schema.items()}
        if isinstance(schema, list):
            return [self.resolve(v) for v in schema]
        return schema

    @functools.lru_cache(maxsize=128)  # noqa: B019 - one instance per process, bounded
    def request_schema(self, spec_path: str) -> dict[str, Any]:
        """The JSON schema of the request body, built from the ``in: body`` parameters."""
        properties: dict[str, Any] = {}
        required: list[str] = []
        for param in self.paths[spec_path].get("parameters", []):
            if param.get("in") != "body":
                continue
            name = param["name"]
            if "schema" in param:
                schema = self.resolve(param["schema"])
                schema.pop("description", None)
                props = schema.get("properties") or {}
                if schema.get("type") == "object" and set(props) == {"field"}:
                    # "order": {"field": {"enum": [ASC, DESC]}} documents {"<field>": "ASC"}
                    schema = {"type": "object", "additionalProperties": props["field"]}
            else:
                schema = {"type": param["type"]} if "type" in param else {}
                if "enum" in param:
                    schema["enum"] = param["enum"]
            properties[name] = _strip_descriptions(schema)
            if param.get("required"):
                required.append(name)
        for name, (schema, _code, _msg) in EXTRA_BODY_PARAMS.get(spec_path, {}).items():
            properties[name] = dict(schema)
        return {"type": "object", "properties": properties, "required": required}

    def body_fields(self, spec_path: str) -> set[str]:
        return set(self.request_schema(spec_path)["properties"])

    def validate_request(
        self, spec_path: str, body: Any, *, shallow: bool = False
    ) -> list[tuple[str | None, str]]:
        """``[(field, problem), ...]`` for every schema violation of ``body`` (empty = valid).

        ``shallow`` checks array fields as arrays without looking into their items.
        """
        schema = self.request_schema(spec_path)
        if shallow:
            schema = copy.deepcopy(schema)
            for prop in schema["properties"].values():
                prop.pop("items", None)
        validator = jsonschema.Draft4Validator(schema)
        problems = []
        for error in sorted(validator.iter_errors(body), key=lambda e: list(e.path)):
            field = None
            if error.validator == "required":
                match = re.match(r"'([^']+)' is a required property", error.message)
                field = match.group(1) if match else None
            elif error.path:
                field = str(error.path[0])
            problems.append((field, error.message))
        return problems

    # -- errors -------------------------------------------------------------------------------
    @functools.lru_cache(maxsize=128)  # noqa: B019
    def errors(self, spec_path: str) -> dict[int, tuple[int, str]]:
        """``{error_code: (http_status, message)}`` as documented for ``spec_path``."""
        catalogue: dict[int, tuple[int, str]] = {}
        for key, response in self.paths[spec_path]["responses"].items():
            match = _RESPONSE_KEY.match(key.strip())
            if not match or match.group(2) is None:
                continue
            schema = self.resolve(response.get("schema", {}))
            messages = schema.get("properties", {}).get("message", {}).get("enum") or [
                response.get("description", "")
            ]
            catalogue[int(match.group(2))] = (int(match.group(1)), messages[0])
        for _name, (_schema, code, message) in EXTRA_BODY_PARAMS.get(spec_path, {}).items():
            catalogue[code] = (400, message)
        return catalogue

    def error_body(self, spec_path: str, code: int) -> tuple[int, dict[str, Any]]:
        """``(status, body)`` of the documented error ``code`` of ``spec_path``."""
        status, message = self.errors(spec_path)[code]
        return status, {"success": False, "error_code": code, "message": message}

    def field_error_code(self, spec_path: str, field: str) -> int | None:
        """The 400 code whose message is ``invalid <field> specified`` (spelling-tolerant)."""
        wanted = _norm(field)
        for code, (status, message) in sorted(self.errors(spec_path).items()):
            match = re.fullmatch(r"invalid (.+?) specified", message.strip())
            if status == 400 and match and _norm(match.group(1)) == wanted:
                return code
        return None

    def fallback_error_code(self, spec_path: str) -> int:
        """The lowest documented 400 code of ``spec_path`` (for violations no code names)."""
        codes = [c for c, (status, _m) in self.errors(spec_path).items() if status == 400]
        if not codes:
            raise KeyError(f"{spec_path} documents no 400 answer")
        return min(codes)

    # -- responses ----------------------------------------------------------------------------
    def response_schema(
        self, spec_path: str, status: int, code: int | None = None, *, strict: bool = True
    ) -> dict[str, Any]:
        """The schema a response of ``spec_path`` with ``status`` (and ``error_code``) obeys."""
        if status == QUOTA_STATUS:
            return copy.deepcopy(QUOTA_SCHEMA)
        responses = self.paths[spec_path]["responses"]
        key = f"{status} ({code})" if code is not None else str(status)
        extra = {c: m for _f, (_s, c, m) in EXTRA_BODY_PARAMS.get(spec_path, {}).items()}
        if key not in responses and status == 400 and code in extra:
            return {
                "type": "object",
                "properties": {
                    "success": {"type": "boolean", "enum": [False]},
                    "error_code": {"type": "integer", "enum": [code]},
                    "message": {"type": "string", "enum": [extra[code]]},
                },
                "required": ["success", "error_code", "message"],
                "additionalProperties": False,
            }
        if key not in responses:
            raise ContractError(
                f"{spec_path} documents no {key} response (documented: {', '.join(responses)})"
            )
        schema = _strip_descriptions(self.resolve(responses[key]["schema"]))
        top = schema.setdefault("properties", {})
        for name, prop in top.items():
            if name not in _TOP_LEVEL_ENUMS and isinstance(prop, dict):
                top[name] = _loosen(prop, strict=strict, nullable=False)
            elif name == "message" and status == 200:
                prop.pop("enum", None)  # success messages are "" in practice, but not a rule
        extra_fields = EXTRA_LIST_FIELDS.get(spec_path)
        data = top.get("data")
        if extra_fields and data and isinstance(data.get("items"), dict):
            for name, field_schema in extra_fields.items():
                data["items"].setdefault("properties", {})[name] = {
                    "type": [field_schema["type"], "null"]
                }
        if strict:
            schema["required"] = sorted(top)
            schema["additionalProperties"] = False
        return schema

    def validate_response(self, request_path: str, status: int, body: Any) -> None:
        """Raise :class:`ContractError` unless ``body`` is a documented answer of the path."""
        spec_path = self.spec_path(request_path)
        if spec_path is None:
            raise ContractError(f"{request_path} is not a documented endpoint")
        code = body.get("error_code") if isinstance(body, dict) and status != 200 else None
        schema = self.response_schema(spec_path, status, code)
        try:
            jsonschema.Draft4Validator(schema).validate(body)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            raise ContractError(f"{request_path} {status}: {where}: {exc.message}") from None


def _strip_descriptions(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            k: _strip_descriptions(v)
            for k, v in schema.items()
            if k not in ("description", "example", "default")
        }
    if isinstance(schema, list):
        return [_strip_descriptions(v) for v in schema]
    return schema


def _loosen(schema: dict[str, Any], *, strict: bool, nullable: bool = True) -> dict[str, Any]:
    """Data-level schema: example enums dropped, scalars nullable, unknown fields forbidden."""
    schema = dict(schema)
    enum = schema.get("enum")
    if enum is not None and len(enum) <= 1:
        schema.pop("enum")
    kind = schema.get("type")
    if kind == "object":
        props = {k: _loosen(v, strict=strict) for k, v in schema.get("properties", {}).items()}
        schema["properties"] = props
        if strict and props:
            schema["additionalProperties"] = False
    elif kind == "array":
        if isinstance(schema.get("items"), dict):
            schema["items"] = _loosen(schema["items"], strict=strict)
    elif isinstance(kind, str) and nullable:
        schema["type"] = [kind, "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    return schema
