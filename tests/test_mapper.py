"""The data mapper: every transform, its errors, paths, modes, children and preview.

Source dicts use BuchhaltungsButler's debtor field names and the e-invoice line shape of
``bbvisma.records``; targets use Visma.net field names from the OpenAPI contract
(CustomerUpdateDto, AddressUpdateDto, SalesOrderLineUpdateDto).
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from bbvisma.errors import ConfigError, DataError
from bbvisma.mapper import TRANSFORMS, Mapping, MappingError, Rule, transform_selection

DEBTOR = {
    "name": "  Huber Bau GmbH  ",
    "postingaccount_number": "10004",
    "customer_number": "K-4711",
    "contact_person_name": "Josef Huber",
    "street": "Mariahilfer Straße 4",
    "zip": "1070",
    "city": "wien",
    "country": "AT",
    "sales_tax_id": "ATU12345678",
    "email": "office@huber-bau.example.at",
    "active": "1",
    "amount": "1234.565",
    "date": "2024-03-05",
    "lines": [
        {"sku": "A-1", "name": "Bolt", "quantity": "2", "net_price": "1.005", "vat": "S 19"},
        {"sku": None, "name": "Freight", "quantity": "1", "net_price": "7.50", "vat": "S 7"},
    ],
}


def one(rule: Rule, source=DEBTOR, mode="create", value_maps=None, children=None):
    """Apply a single-rule mapping and return the value at its target."""
    mapping = Mapping("test", [rule], children or {})
    payload = mapping.apply(source, mode=mode, value_maps=value_maps)
    node = payload
    for key in rule.target.split("."):
        if key not in node:
            return "<absent>"
        node = node[key]
    return node


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------
def test_nested_target_builds_intermediate_dicts_in_rule_order():
    mapping = Mapping(
        "customer",
        [
            Rule(30, "mainAddress.city", "city", "title"),
            Rule(10, "name", "name", "strip"),
            Rule(20, "mainAddress.countryId", "country"),
            Rule(40, "number", "customer_number"),
        ],
    )
    payload = mapping.apply(DEBTOR)
    assert payload == {
        "name": "Huber Bau GmbH",
        "mainAddress": {"countryId": "AT", "city": "Wien"},
        "number": "K-4711",
    }
    assert list(payload) == ["name", "mainAddress", "number"]
    assert list(payload["mainAddress"]) == ["countryId", "city"]


def test_list_index_source_paths_including_negative_and_out_of_range():
    assert one(Rule(1, "inventoryNumber", "lines[0].sku")) == "A-1"
    assert one(Rule(1, "lineDescription", "lines[-1].name")) == "Freight"
    assert one(Rule(1, "x", "lines[5].sku")) == "<absent>"


def test_missing_intermediate_source_keys_give_nothing_not_keyerror():
    assert one(Rule(1, "x", "customer.address.city")) == "<absent>"
    assert one(Rule(1, "x", "name.first")) == "<absent>"  # walking into a string
    assert one(Rule(1, "x", "customer.address.city", "default", "n/a")) == "n/a"


def test_bad_paths_and_targets_are_config_errors_at_construction():
    with pytest.raises(ConfigError, match="bad path"):
        Mapping("m", [Rule(1, "x", "lines[a].sku")])
    with pytest.raises(ConfigError, match="bad target"):
        Mapping("m", [Rule(1, "lines[0].x", "name")])
    with pytest.raises(ConfigError, match="also the parent"):
        Mapping("m", [Rule(1, "mainAddress", "city"), Rule(2, "mainAddress.city", "city")])


def test_same_target_allowed_for_create_and_update_but_not_twice_in_one_mode():
    Mapping(
        "m",
        [
            Rule(1, "status", None, "constant", "Active", when="create"),
            Rule(2, "status", None, "constant", "Hold", when="update"),
        ],
    )
    with pytest.raises(ConfigError, match="written twice in create mode"):
        Mapping("m", [Rule(1, "name", "name"), Rule(2, "name", "name", when="create")])


# --------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------
def test_copy_constant_and_default():
    assert one(Rule(1, "vatRegistrationId", "sales_tax_id")) == "ATU12345678"
    assert one(Rule(1, "status", None, "constant", "Active")) == "Active"
    assert one(Rule(1, "note", "missing", "default", "none given")) == "none given"
    assert one(Rule(1, "note", "email", "default", "none given")) == DEBTOR["email"]
    assert one(Rule(1, "note", None, "default", "x"), source={"blank": "  "}) == "x"


def test_value_map_maps_and_falls_back_to_star():
    maps = {"countries": {"AT": "AT-VISMA", "*": "OTHER"}}
    assert one(Rule(1, "countryId", "country", "value_map", "countries"), value_maps=maps) == (
        "AT-VISMA"
    )
    src = {"country": "FR"}
    rule = Rule(1, "countryId", "country", "value_map", "countries")
    assert one(rule, source=src, value_maps=maps) == "OTHER"


def test_value_map_unmapped_value_names_map_and_value():
    rule = Rule(1, "vatCodeId", "lines[1].vat", "value_map", "vat_codes")
    with pytest.raises(DataError) as info:
        one(rule, value_maps={"vat_codes": {"S 19": "01"}})
    error = info.value
    assert isinstance(error, MappingError)
    assert error.cause == "unmapped:vat_codes:S 7"
    assert error.cause_key == "data:unmapped:vat_codes:S 7"
    assert "'vat_codes'" in error.message and "'S 7'" in error.message
    assert "'vatCodeId'" in error.message and "'lines[1].vat'" in error.message


def test_value_map_number_keys_in_plain_form_and_empty_passes_through():
    maps = {"rates": {"19": "high", "7.5": "odd"}}
    rule = Rule(1, "r", "rate", "value_map", "rates")
    assert one(rule, source={"rate": Decimal("19.00")}, value_maps=maps) == "high"
    assert one(rule, source={"rate": 7.50}, value_maps=maps) == "odd"
    assert one(rule, source={"rate": None}, value_maps=maps) == "<absent>"


def test_undefined_value_map_is_a_config_error_not_a_parked_record():
    with pytest.raises(ConfigError, match="value map 'nope' is not defined"):
        one(Rule(1, "x", "country", "value_map", "nope"), value_maps={})


def test_format_template_over_the_source_with_nested_fields():
    rule = Rule(1, "note", None, "format", "{customer_number} / {date} / {lines[0].sku}")
    assert one(rule) == "K-4711 / 2024-03-05 / A-1"
    missing = Rule(1, "note", None, "format", "{customer_number}-{nothing.here}")
    assert one(missing) == "K-4711-"
    spec = Rule(1, "note", None, "format", "{amount:.2f} EUR")  # BB amounts come as strings
    assert one(spec) == "1234.57 EUR"
    current = Rule(1, "name", "name", "strip", then="format:<{_}>")
    assert one(current) == "<Huber Bau GmbH>"


def test_format_bad_template_is_a_config_error():
    with pytest.raises(ConfigError, match="format"):
        Mapping("m", [Rule(1, "x", None, "format", "{unclosed")])


def test_date_from_iso_string_datetime_and_date_object():
    assert one(Rule(1, "d", "date", "date", "%d.%m.%Y")) == "05.03.2024"
    src = {"ts": "2024-03-05 13:45:00", "z": "2024-03-05T13:45:00Z", "obj": dt.date(2024, 1, 2)}
    assert one(Rule(1, "d", "ts", "date", "%Y-%m-%dT%H:%M:%S"), source=src) == (
        "2024-03-05T13:45:00"
    )
    assert one(Rule(1, "d", "z", "date", "%H:%M %z"), source=src) == "13:45 +0000"
    assert one(Rule(1, "d", "obj", "date"), source=src) == "2024-01-02"


def test_date_not_iso_parks_the_record():
    with pytest.raises(MappingError) as info:
        one(Rule(1, "documentDate", "d", "date"), source={"d": "05.03.2024"})
    assert info.value.cause == "invalid_date"
    assert "'05.03.2024'" in info.value.message


def test_number_rounds_half_up_and_ends_as_json_number():
    assert one(Rule(1, "amount", "amount", "number", "2")) == 1234.57  # half-up, not banker's
    assert one(Rule(1, "p", "lines[0].net_price", "number", "2")) == 1.01
    assert one(Rule(1, "q", "lines[0].quantity", "number", "0")) == 2
    assert isinstance(one(Rule(1, "q", "lines[0].quantity", "number", "0")), int)
    payload = Mapping("m", [Rule(1, "amount", "amount", "number", "2")]).apply(DEBTOR)
    assert json.dumps(payload) == '{"amount": 1234.57}'
    assert one(Rule(1, "n", "x", "number"), source={"x": Decimal("2.345")}) == 2.35


def test_number_rejects_text_and_bad_decimals_argument():
    with pytest.raises(MappingError, match="not a number") as info:
        one(Rule(1, "creditLimit", "name", "number"))
    assert info.value.cause == "invalid_number"
    with pytest.raises(ConfigError, match="integer"):
        Mapping("m", [Rule(1, "x", "amount", "number", "two")])


def test_truncate_to_max_length():
    assert one(Rule(1, "name", "contact_person_name", "truncate", "5")) == "Josef"
    assert len(one(Rule(1, "name", "street", "truncate", "30"))) == len(DEBTOR["street"])
    with pytest.raises(ConfigError, match="integer >= 1"):
        Mapping("m", [Rule(1, "x", "name", "truncate", "0")])


def test_case_and_strip_transforms():
    assert one(Rule(1, "c", "city", "upper")) == "WIEN"
    assert one(Rule(1, "c", "country", "lower")) == "at"
    assert one(Rule(1, "c", "city", "title")) == "Wien"
    assert one(Rule(1, "c", "name", "strip")) == "Huber Bau GmbH"
    assert one(Rule(1, "c", "missing", "upper")) == "<absent>"


def test_concat_joins_non_empty_paths_with_separator():
    assert one(Rule(1, "addressLine1", None, "concat", "zip,missing,city|-")) == "1070-wien"
    assert one(Rule(1, "addressLine1", None, "concat", "zip,city")) == "1070 wien"
    assert one(Rule(1, "a", "country", "concat", "zip|")) == "AT1070"  # own source first


def test_first_takes_the_first_non_empty_value():
    src = {"debtor_email": "", "buyer": {"email": "buyer@example.org"}}
    rule = Rule(1, "mainContact.email", "debtor_email", "first", "buyer.email")
    assert one(rule, source=src) == "buyer@example.org"


def test_split_by_separator_and_index():
    assert one(Rule(1, "vatCategory", "lines[0].vat", "split", " |0")) == "S"
    assert one(Rule(1, "vatRate", "lines[0].vat", "split", "|-1")) == "19"
    assert one(Rule(1, "x", "lines[0].vat", "split", " |5")) == "<absent>"


def test_bool_truthy_strings():
    for text, expected in [("1", True), ("true", True), ("YES", True), ("0", False), ("no", False)]:
        assert one(Rule(1, "b", "v", "bool"), source={"v": text}) is expected
    assert one(Rule(1, "b", "active", "bool")) is True  # BB sends booleans as "0"/"1"
    assert one(Rule(1, "b", "v", "bool"), source={"v": ""}) == "<absent>"
    assert one(Rule(1, "b", None, "constant", "true", then="bool")) is True


def test_chained_steps_with_then():
    rule = Rule(1, "name", "name", "strip", then="upper; truncate:5")
    assert one(rule) == "HUBER"
    assert Rule(1, "x", "y", "strip", then="upper; truncate:5").steps() == [
        ("strip", ""),
        ("upper", ""),
        ("truncate", "5"),
    ]
    with pytest.raises(ConfigError, match="unknown transform 'uppr'"):
        Mapping("m", [Rule(1, "x", "name", then="uppr")])


def test_each_maps_lines_with_the_child_mapping():
    line = Mapping(
        "order_line",
        [
            Rule(10, "inventoryNumber", "sku", "default", "SERVICE"),
            Rule(20, "lineDescription", "name"),
            Rule(30, "quantity", "quantity", "number", "2"),
            Rule(40, "unitPrice", "net_price", "number", "4"),
        ],
    )
    order = Mapping("order", [Rule(10, "lines", "lines", "each", "line")], {"line": line})
    payload = order.apply(DEBTOR)
    assert payload["lines"] == [
        {"inventoryNumber": "A-1", "lineDescription": "Bolt", "quantity": 2.0, "unitPrice": 1.005},
        {
            "inventoryNumber": "SERVICE",
            "lineDescription": "Freight",
            "quantity": 1.0,
            "unitPrice": 7.5,
        },
    ]


def test_each_error_names_the_line_target_and_source():
    line = Mapping("order_line", [Rule(10, "inventoryNumber", "sku", required=True)])
    order = Mapping("order", [Rule(10, "lines", "lines", "each", "line")], {"line": line})
    with pytest.raises(MappingError) as info:
        order.apply(DEBTOR)
    assert info.value.target == "lines[1].inventoryNumber"
    assert info.value.source_path == "lines[1].sku"
    assert info.value.cause == "required:inventoryNumber"


def test_each_with_unknown_child_or_in_then_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown child mapping 'line'"):
        Mapping("order", [Rule(10, "lines", "lines", "each", "line")])
    child = Mapping("line", [Rule(1, "x", "sku")])
    with pytest.raises(ConfigError, match="main transform"):
        Mapping("o", [Rule(1, "lines", "lines", then="each:line")], {"line": child})


def test_required_empty_result_names_target_and_source():
    rule = Rule(5, "mainAddress.countryId", "customer.address.country_code", required=True)
    with pytest.raises(MappingError) as info:
        one(rule)
    assert info.value.cause == "required:mainAddress.countryId"
    assert "'mainAddress.countryId'" in info.value.message
    assert "'customer.address.country_code'" in info.value.message
    blank = Rule(5, "name", "blank", "strip", required=True)
    with pytest.raises(MappingError):
        one(blank, source={"blank": "   "})
    zero = Rule(5, "creditLimit", "n", required=True)
    assert one(zero, source={"n": 0}) == 0  # 0 is a value, not empty


# --------------------------------------------------------------------------------------------
# Modes, rows, preview
# --------------------------------------------------------------------------------------------
def customer_mapping() -> Mapping:
    return Mapping(
        "customer",
        [
            Rule(10, "number", "customer_number", when="create"),
            Rule(20, "name", "name", "strip"),
            Rule(30, "status", None, "constant", "Active", when="create"),
            Rule(40, "note", None, "constant", "updated from BB", when="update"),
        ],
    )


def test_create_rules_only_in_create_mode_and_update_rules_only_in_update_mode():
    mapping = customer_mapping()
    assert mapping.apply(DEBTOR, mode="create") == {
        "number": "K-4711",
        "name": "Huber Bau GmbH",
        "status": "Active",
    }
    assert mapping.apply(DEBTOR, mode="update") == {
        "name": "Huber Bau GmbH",
        "note": "updated from BB",
    }
    with pytest.raises(ConfigError):
        mapping.apply(DEBTOR, mode="upsert")


def test_comparable_makes_create_and_update_payloads_equal():
    mapping = customer_mapping()
    created = mapping.apply(DEBTOR, mode="create")
    updated = mapping.apply(DEBTOR, mode="update")
    assert created != updated
    assert mapping.comparable(created) == mapping.comparable(updated) == {"name": "Huber Bau GmbH"}
    assert "status" in created  # comparable works on a copy
    plain = Mapping("plain", [Rule(1, "name", "name")])
    payload = plain.apply(DEBTOR)
    assert plain.comparable(payload) is payload


def test_comparable_trims_mode_specific_fields_inside_lines():
    line = Mapping(
        "line", [Rule(1, "sku", "sku"), Rule(2, "op", None, "constant", "Issue", when="create")]
    )
    order = Mapping("order", [Rule(1, "lines", "lines", "each", "line")], {"line": line})
    created = order.comparable(order.apply(DEBTOR, mode="create"))
    updated = order.comparable(order.apply(DEBTOR, mode="update"))
    assert created == updated == {"lines": [{"sku": "A-1"}, {}]}


def test_from_rows_and_to_rows_round_trip_with_odoo_false_values():
    rows = [
        {
            "sequence": 20,
            "target": "name",
            "source": "name",
            "transform": "strip",
            "arg": False,
            "when": "always",
            "required": True,
            "note": False,
            "then": False,
        },
        {
            "sequence": 10,
            "target": "status",
            "source": False,
            "transform": "constant",
            "arg": "Active",
            "when": "create",
            "required": False,
            "note": "new only",
            "then": False,
        },
    ]
    mapping = Mapping.from_rows("customer", rows)
    assert mapping.apply(DEBTOR) == {"status": "Active", "name": "Huber Bau GmbH"}
    again = Mapping.from_rows("customer", mapping.to_rows())
    assert again.to_rows() == mapping.to_rows()
    assert mapping.to_rows()[0]["source"] is None
    with pytest.raises(ConfigError, match="unknown mapping rule keys: requried"):
        Mapping.from_rows("m", [{"target": "x", "requried": True}])


def test_from_rows_builds_children_from_rows():
    order = Mapping.from_rows(
        "order",
        [{"sequence": 1, "target": "lines", "source": "lines", "transform": "each", "arg": "line"}],
        children={"line": [{"sequence": 1, "target": "inventoryNumber", "source": "sku"}]},
    )
    assert order.apply(DEBTOR)["lines"] == [{"inventoryNumber": "A-1"}, {}]


def test_preview_never_raises_and_lists_every_problem():
    line = Mapping("line", [Rule(1, "inventoryNumber", "sku", required=True)])
    mapping = Mapping(
        "order",
        [
            Rule(10, "name", "name", "strip"),
            Rule(20, "vatCodeId", "lines[1].vat", "value_map", "vat_codes"),
            Rule(30, "date", "name", "date"),
            Rule(40, "countryId", "country", "value_map", "undefined_map"),
            Rule(50, "lines", "lines", "each", "line"),
        ],
        {"line": line},
    )
    payload, problems = mapping.preview(DEBTOR, "create", {"vat_codes": {"S 19": "01"}})
    assert payload["name"] == "Huber Bau GmbH"
    assert payload["lines"] == [{"inventoryNumber": "A-1"}, {}]
    assert len(problems) == 4
    assert any("'vat_codes'" in p and "'S 7'" in p for p in problems)
    assert any("not an ISO date" in p for p in problems)
    assert any("undefined_map" in p for p in problems)
    assert any("field 'lines[1].inventoryNumber' (from 'lines[1].sku')" in p for p in problems)
    assert mapping.preview(["not", "a", "dict"])[1] == ["the source is a list, not a dict"]
    assert mapping.preview(DEBTOR, "bogus", None)[1][0].startswith("mode must be")


def test_preview_reports_unexpected_exceptions_from_custom_transforms(monkeypatch):
    def broken(value, arg, ctx):
        raise RuntimeError("boom")

    monkeypatch.setitem(TRANSFORMS, "broken", TRANSFORMS["copy"].__class__("broken", "B", broken))
    mapping = Mapping("m", [Rule(1, "x", "name", "broken")])
    payload, problems = mapping.preview(DEBTOR)
    assert payload == {} and problems == ["RuntimeError: boom"]


def test_transform_selection_lists_every_registered_transform():
    names = [name for name, _label in transform_selection()]
    for expected in [
        "copy",
        "constant",
        "default",
        "value_map",
        "format",
        "date",
        "number",
        "truncate",
        "upper",
        "lower",
        "title",
        "strip",
        "concat",
        "split",
        "bool",
        "each",
    ]:
        assert expected in names
