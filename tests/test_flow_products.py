"""Products flow against both simulators: outgoing e-invoice lines -> Visma.net items."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from derived_fixtures import (
    add_document,
    document,
    line,
    reference,
    results_by_key,
    run_products,
    value_maps,
    warm_documents,
)
from flow_fixtures import make_rig

from bbvisma.engine import Action
from bbvisma.flows.derived import ProductCatalog
from bbvisma.flows.products import IMAGES_NOTE, ProductsFlow


@pytest.fixture
def rig():
    rig = make_rig()
    warm_documents(rig)  # parsed documents of earlier runs, as an integration keeps them
    return rig


def writes(rig, path_part: str = "", method: str | None = None):
    return [
        e
        for e in rig.visma_writes()
        if path_part in e["path"] and (method is None or e["method"] == method)
    ]


def shirt_documents(material_blue: str = "Baumwolle"):
    """Two T-shirt variants (colour differs) on one invoice, built from a reference line."""
    ubl = reference("einvoices/ubl/ubl-21-en16931.xml")
    template = ubl.lines[0]
    lines = [
        line(
            template,
            sku="TSHIRT-ROT",
            name="T-Shirt rot",
            price="12.50",
            quantity="3",
            characteristics={"Farbe": "Rot", "Material": "Baumwolle"},
            vat_category="S",
            vat_rate=Decimal("19"),
            unit_code="C62",
            classifications=[],
        ),
        line(
            template,
            sku="TSHIRT-BLAU",
            name="T-Shirt blau",
            price="12.50",
            quantity="2",
            characteristics={"Farbe": "Blau", "Material": material_blue},
            vat_category="S",
            vat_rate=Decimal("19"),
            unit_code="C62",
            classifications=[],
        ),
    ]
    return document(ubl, lines, number="V-1", issue_date=dt.date(2025, 5, 1))


# --------------------------------------------------------------------------------------------
def test_full_run_from_default_seed_creates_an_item_per_sku_with_the_newest_invoice_data(rig):
    flow, report = run_products(rig)
    results = results_by_key(report)
    items = rig.visma_sim.inventory

    # TB100A4 is on receipts 32 (H87) and 37 (C62), both of 2018-03-05: receipt 37 is newest
    assert results["TB100A4"].action is Action.CREATE
    tb = items["TB100A4"]
    assert tb["description"] == "Trennblätter A4"
    assert tb["defaultPrice"] == pytest.approx(9.9)
    assert tb["salesUnit"] == "STK" and tb["vatCode"]["id"] == "01"
    assert tb["itemClass"]["id"] == "WAREN" and tb["type"] == "FinishedGoodItem"
    assert [r["alternateID"] for r in tb["crossReferences"]] == ["4012345001235"]
    # an EAN written with global id scheme 0088 becomes a barcode as well
    assert items["ZS997"]["crossReferences"][0] == {
        "alternateType": "Barcode",
        "alternateID": "4123456000014",
        "timestamp": items["ZS997"]["crossReferences"][0]["timestamp"],
    }
    # hours are a service (unit HUR -> kind service -> class DIENST)
    assert items["1"]["type"] == "ServiceItem" and items["1"]["itemClass"]["id"] == "DIENST"
    # unmapped data parks the product and names the value, nothing is guessed
    assert results["KR3M"].action is Action.PARK
    assert results["KR3M"].cause_key == "data:unmapped:units:MTK"
    assert results["JB011"].cause_key == "data:unmapped:vat_codes:S:25"
    assert results["CO-123/V2A"].cause_key == "data:unaddressable_sku:CO-123/V2A"
    # a SKU sold only in NOK gets no EUR price, and says so
    assert "sold only in NOK" in results["JB010"].message
    assert items["JB010"]["defaultPrice"] == 0.0
    # every created product is an item; nothing else was created
    created = {k for k, r in results.items() if r.action is Action.CREATE}
    assert created == set(items) - {"SERVICE", "FRACHT", "RABATT"}
    # unreadable e-invoices are counted, not hidden
    assert flow.stats.refused == {"33": "zugferd1", "40": "no_lines"}


def test_second_run_makes_no_write_call(rig):
    _flow, first = run_products(rig)
    assert first.counts["create"] > 10
    rig.clear_logs()
    _flow, second = run_products(rig)
    assert second.counts["create"] == second.counts["update"] == 0
    assert second.counts["skip"] == first.counts["create"]
    assert rig.visma_writes() == []


def _calls(result):
    return [
        (e["method"], e["path"].split("/")[-1] if "crossReferences" not in e["path"] else "xref")
        for e in result.exchanges
    ]


def test_api_calls_per_created_item_in_a_small_batch_are_lookup_create_and_barcode(rig):
    _flow, report = run_products(rig, batch_size=ProductsFlow.INDEX_THRESHOLD - 1)
    calls = _calls(results_by_key(report)["TB100A4"])
    assert calls == [("GET", "TB100A4"), ("POST", "inventory"), ("POST", "xref")]


def test_a_bulk_batch_reads_the_item_list_once_and_creates_without_a_lookup(rig):
    _flow, report = run_products(rig)
    assert sum(report.counts.values()) >= ProductsFlow.INDEX_THRESHOLD  # all new: one batch
    calls = _calls(results_by_key(report)["TB100A4"])
    # the batch's item list read is charged to the record that triggered it, not to this one
    assert calls == [("POST", "inventory"), ("POST", "xref")]
    lookups = [
        e
        for e in rig.visma_requests()
        if e["method"] == "GET" and e["path"].startswith("/v1/inventory/")
    ]
    assert lookups == []


def test_variants_are_grouped_with_their_dimension_and_a_reference_to_the_base(rig):
    add_document(rig, shirt_documents())
    _flow, report = run_products(rig)
    results = results_by_key(report)
    for sku, colour in (("TSHIRT-ROT", "ROT"), ("TSHIRT-BLAU", "BLAU")):
        assert results[sku].action is Action.CREATE
        attributes = {a["id"]: a["value"] for a in rig.visma_sim.inventory[sku]["attributes"]}
        # the Combo value is matched by its description (Rot -> ROT), the base is an attribute
        assert attributes == {"FARBE": colour, "MATERIAL": "Baumwolle", "BASESKU": "TSHIRT"}
    assert "TSHIRT" not in rig.visma_sim.inventory  # no document sells the base itself
    # the missing attribute definition was created once, as a Text attribute
    assert rig.visma_sim.attributes["BASESKU"]["controlType"] == "Text"
    new_definitions = set(rig.visma_sim.attributes) - {"FARBE", "MATERIAL"}
    assert "BASESKU" in new_definitions
    # each missing definition was created exactly once in the run, however many items use it
    assert len(writes(rig, "/v1/attribute", "POST")) == len(new_definitions)


def test_skus_differing_in_other_characteristics_are_not_grouped_and_say_why(rig):
    add_document(rig, shirt_documents(material_blue="Leinen"))
    _flow, report = run_products(rig)
    result = results_by_key(report)["TSHIRT-BLAU"]
    assert result.action is Action.CREATE
    assert "differ in characteristics other than the variant dimensions" in result.message
    attributes = {a["id"] for a in rig.visma_sim.inventory["TSHIRT-BLAU"]["attributes"]}
    assert "BASESKU" not in attributes


def test_attribute_definitions_are_read_once_per_run_and_created_when_missing(rig):
    ubl = reference("einvoices/ubl/ubl-21-en16931.xml")
    lines = [
        line(
            ubl.lines[0],
            sku=f"SOCKE-{n}",
            name=f"Socke {n}",
            price="3",
            characteristics={"Ärmellänge": "kurz", "Größe": size},
            vat_category="S",
            vat_rate=Decimal("19"),
            unit_code="C62",
            classifications=[],
        )
        for n, size in ((1, "39"), (2, "42"))
    ]
    add_document(rig, document(ubl, lines, number="S-1", issue_date=dt.date(2025, 5, 2)))
    _flow, report = run_products(rig)
    reads = [e for e in rig.visma_requests() if e["path"] == "/v1/attribute"]
    assert len([e for e in reads if e["method"] == "GET"]) == 1  # one read for the whole run
    # names become ids: umlauts spelt out, cut to 10 characters
    assert {"AERMELLAEN", "GROESSE", "BASESKU"} <= set(rig.visma_sim.attributes)
    assert rig.visma_sim.attributes["AERMELLAEN"]["description"] == "Ärmellänge"
    attributes = {a["id"]: a["value"] for a in rig.visma_sim.inventory["SOCKE-2"]["attributes"]}
    assert attributes == {"AERMELLAEN": "kurz", "GROESSE": "42", "BASESKU": "SOCKE"}
    assert results_by_key(report)["SOCKE-1"].action is Action.CREATE


def test_unknown_combo_value_is_left_out_with_a_note_never_sent(rig):
    ubl = reference("einvoices/ubl/ubl-21-en16931.xml")
    doc = document(
        ubl,
        [
            line(
                ubl.lines[0],
                sku="TASSE",
                name="Tasse",
                price="5",
                characteristics={"Farbe": "Lila"},
                vat_category="S",
                vat_rate=Decimal("19"),
                unit_code="C62",
                classifications=[],
            )
        ],
        number="T-1",
        issue_date=dt.date(2025, 5, 3),
    )
    add_document(rig, doc)
    _flow, report = run_products(rig)
    result = results_by_key(report)["TASSE"]
    assert result.action is Action.CREATE
    assert "'Lila' is not a value of the Combo attribute FARBE" in result.message
    assert rig.visma_sim.inventory["TASSE"]["attributes"] == []


def test_update_product_info_off_sends_only_price_unit_and_attributes(rig):
    run_products(rig)
    rig.visma_sim.inventory["TB100A4"]["description"] = "Trennblätter A4, 100 Stück (Lager 3)"
    rig.visma_sim.inventory["TB100A4"]["body"] = "Von Hand ergänzt"
    newer = _newer_tb100a4()
    add_document(rig, newer)
    rig.clear_logs()
    _flow, report = run_products(rig, settings={"update_product_info": False})
    result = results_by_key(report)["TB100A4"]
    assert result.action is Action.UPDATE
    sent = {"inventoryNumber", "salesUnit", "defaultPrice", "attributeLines", "_barcode"}
    assert set(result.payload) == sent  # _barcode: a cross-reference, only added if new
    item = rig.visma_sim.inventory["TB100A4"]
    assert item["defaultPrice"] == pytest.approx(11.9)
    assert item["description"] == "Trennblätter A4, 100 Stück (Lager 3)"
    assert item["body"] == "Von Hand ergänzt"


def test_update_product_info_on_sends_everything_mapped(rig):
    run_products(rig)
    rig.visma_sim.inventory["TB100A4"]["description"] = "Trennblätter A4, 100 Stück (Lager 3)"
    add_document(rig, _newer_tb100a4())
    rig.clear_logs()
    _flow, report = run_products(rig, settings={"update_product_info": True})
    result = results_by_key(report)["TB100A4"]
    assert result.action is Action.UPDATE
    assert result.payload["description"] == "Trennblätter A4 farbig"
    item = rig.visma_sim.inventory["TB100A4"]
    assert item["description"] == "Trennblätter A4 farbig"
    assert item["defaultPrice"] == pytest.approx(11.9)


@pytest.mark.parametrize("update_info, expected", [(False, Action.SKIP), (True, Action.UPDATE)])
def test_a_changed_description_alone_updates_only_with_update_product_info(update_info, expected):
    rig = make_rig()
    warm_documents(rig)
    settings = {"update_product_info": update_info}
    run_products(rig, settings=settings)
    add_document(rig, _newer_tb100a4(price="9.90"))  # same price, new name
    rig.clear_logs()
    _flow, report = run_products(rig, settings=settings)
    assert results_by_key(report)["TB100A4"].action is expected
    description = rig.visma_sim.inventory["TB100A4"]["description"]
    assert description == ("Trennblätter A4 farbig" if update_info else "Trennblätter A4")


def test_existing_item_without_link_is_updated_not_duplicated(rig):
    rig.visma.create_inventory(
        {"inventoryNumber": "TB100A4", "description": "Von Hand angelegt", "itemClass": "WAREN"}
    )
    rig.clear_logs()
    _flow, report = run_products(rig)
    result = results_by_key(report)["TB100A4"]
    assert result.action is Action.CREATE and result.response["existed"] is True
    assert writes(rig, "/v1/inventory/TB100A4", "PUT")
    assert not [
        e
        for e in writes(rig, "/v1/inventory", "POST")
        if e["path"] == "/v1/inventory" and "TB100A4" in str(e.get("body", ""))
    ]
    # the user's description stays: the update sent the update-mode fields only
    assert rig.visma_sim.inventory["TB100A4"]["description"] == "Von Hand angelegt"


def test_unknown_sales_category_is_reported_not_invented(rig):
    maps = value_maps(sales_categories={"STI:65434565": "99", "ZZZ:12344322": "4"})
    _flow, report = run_products(rig, maps=maps)
    message = results_by_key(report)["JB010"].message
    assert "99 (from STI:65434565) do not exist in Visma.net" in message
    assert "4 (Elektronik)" in message and "assign in Visma.net" in message
    assert not [e for e in rig.visma_writes() if "salescategory" in e["path"].lower()]


def test_images_are_explained_not_offered():
    assert "no product images" in IMAGES_NOTE
    assert ProductsFlow.IMAGES_NOTE == IMAGES_NOTE


# --------------------------------------------------------------------------------------------
# the catalog on its own (no API)
# --------------------------------------------------------------------------------------------
def test_catalog_takes_the_price_of_the_newest_invoice_not_of_a_credit_note():
    ubl = reference("einvoices/ubl/ubl-21-en16931.xml")
    template = ubl.lines[0]
    catalog = ProductCatalog(base_currency="EUR")
    catalog.add(
        "1",
        document(
            ubl, [line(template, sku="A", price="10")], number="1", issue_date=dt.date(2025, 1, 1)
        ),
    )
    catalog.add(
        "2",
        document(
            ubl,
            [line(template, sku="A", price="12", price_base_quantity=None)],
            number="2",
            issue_date=dt.date(2025, 2, 1),
        ),
    )
    catalog.add(
        "3",
        document(
            ubl,
            [line(template, sku="A", price="1")],
            number="3",
            issue_date=dt.date(2025, 3, 1),
            type_code="381",
        ),
    )
    catalog.add(
        "4",
        document(
            ubl,
            [line(template, sku="A", price="99")],
            number="4",
            issue_date=dt.date(2025, 4, 1),
            currency="NOK",
        ),
    )
    [product] = catalog.products()
    assert product.price == Decimal("12") and product.price_date == dt.date(2025, 2, 1)
    assert product.source_documents == ["4", "2"]  # texts from the newest, price from receipt 2


def test_catalog_divides_the_price_by_its_base_quantity():
    hu = reference("einvoices/cii/huf_example_cii.xml")
    catalog = ProductCatalog(base_currency="HUF")
    catalog.add("14", hu)
    [product] = catalog.products()
    # the first DIZEL line: 36109.00 HUF per 100 litres
    assert product.price == Decimal("361.09")


def test_catalog_classifications_and_gtin_come_along():
    doc = reference("einvoices/ubl/ubl-21-en16931.xml")
    catalog = ProductCatalog()
    catalog.add("24", doc)
    joio = {p.sku: p for p in catalog.products()}["JOIO50CL"]
    assert joio.gtin == "3518370900150"
    assert ("HS", "15092000") in {(c.list_id, c.code) for c in joio.classifications}


def test_catalog_groups_variants_anew_when_documents_come_after_the_products_were_read():
    """Products are built on demand from the catalog's entries: a document added after a first
    pass must still group its variants, and notes must not pile up over passes."""
    both = shirt_documents(material_blue="Polyester")  # not groupable: material differs
    red, blue = both.lines
    catalog = ProductCatalog(variant_dimensions="Farbe", base_pattern=r"^(?P<base>[^-]+)-.+$")
    catalog.add("1", document(both, [red], number="V-1", issue_date=dt.date(2025, 5, 1)))
    assert [p.base_sku for p in catalog.products()] == [None]
    catalog.add("2", document(both, [blue], number="V-2", issue_date=dt.date(2025, 5, 2)))
    assert {p.sku: p.base_sku for p in catalog.products()} == {
        "TSHIRT-BLAU": None,
        "TSHIRT-ROT": None,
    }
    list(catalog.products())
    [note] = catalog.notes_of("TSHIRT-ROT")
    assert "differ in characteristics other than the variant dimensions" in note
    # a newer blue shirt of the same material: now they are variants of TSHIRT
    same = line(blue, sku="TSHIRT-BLAU", characteristics={"Farbe": "Blau", "Material": "Baumwolle"})
    catalog.add("3", document(both, [same], number="V-3", issue_date=dt.date(2025, 5, 3)))
    products = {p.sku: p for p in catalog.products()}
    assert products["TSHIRT-BLAU"].base_sku == products["TSHIRT-ROT"].base_sku == "TSHIRT"
    assert products["TSHIRT-BLAU"].variant_attributes == {"Farbe": "Blau"}
    assert catalog.product("TSHIRT-ROT").variant_attributes == {"Farbe": "Rot"}
    assert catalog.notes_of("TSHIRT-ROT") == []


def test_catalog_keeps_each_vat_rate_and_unit_as_its_document_writes_it():
    """SKUs share one object per unit and VAT value; 19 and 19.00 are equal numbers but
    different values to send, so they must not be shared."""
    ubl = reference("einvoices/ubl/ubl-21-en16931.xml")
    template = ubl.lines[0]
    catalog = ProductCatalog()
    catalog.add(
        "1",
        document(
            ubl,
            [
                line(template, sku="A", vat_rate=Decimal("19"), unit_code="C62"),
                line(template, sku="B", vat_rate=Decimal("19.00"), unit_code="C62"),
                line(template, sku="C", vat_rate=Decimal("19"), unit_code="H87"),
            ],
            number="1",
            issue_date=dt.date(2025, 1, 1),
        ),
    )
    dumped = {p.sku: p.to_mapping_dict() for p in catalog.products()}
    assert {sku: (d["vat_rate"], d["unit_code"]) for sku, d in dumped.items()} == {
        "A": ("19", "C62"),
        "B": ("19.00", "C62"),
        "C": ("19", "H87"),
    }


def _newer_tb100a4(price: str = "11.90"):
    base = reference("einvoices/zugferd-pdf/zugferd_2p0_EN16931_SEPA_Prenotification.pdf")
    tb = base.lines[0]
    assert tb.sku == "TB100A4"
    return document(
        base,
        [line(tb, sku="TB100A4", price=price, quantity="5", name="Trennblätter A4 farbig")],
        number="N-1",
        issue_date=dt.date(2025, 4, 1),
    )


@pytest.mark.parametrize(
    "batch_size",
    [ProductsFlow.INDEX_THRESHOLD - 1, 50],
    ids=["looked-up-one-by-one", "from-the-batch-item-list"],
)
def test_an_existing_item_that_has_the_barcode_gets_no_second_one(rig, batch_size):
    """The item list read for a bulk batch keeps only each item's barcodes: they must still
    keep a barcode the item has from being added twice (and the item from being created)."""
    barcode = "4012345001235"  # TB100A4's GTIN in the seed's ZUGFeRD invoice
    rig.visma.create_inventory(
        {"inventoryNumber": "TB100A4", "description": "Von Hand angelegt", "itemClass": "WAREN"}
    )
    rig.visma.create_cross_reference(
        "TB100A4", {"alternateType": "Barcode", "alternateID": barcode}
    )
    rig.clear_logs()
    _flow, report = run_products(rig, batch_size=batch_size)
    result = results_by_key(report)["TB100A4"]
    assert result.action is Action.CREATE
    assert result.response == {"created": False, "existed": True, "barcode_added": None}
    assert not writes(rig, "/v1/inventory/TB100A4/crossReferences")


# --------------------------------------------------------------------------------------------
# a catalog larger than its memory bound (entries spilled to a temporary database)
# --------------------------------------------------------------------------------------------
def _mixed_documents(count: int, seed: int = 5) -> list[tuple[str, object]]:
    """``count`` documents over ~40 SKUs that exercise every rule of the catalog: newest wins
    (with same-day ties broken by receipt id), credit notes, foreign currencies, free lines,
    GTINs, classifications, lines without a SKU, variants grouped and refused, non-ASCII SKUs
    (sorted by code point: ``Z...`` before ``b...`` before ``Ä...``), a SKU sold only in NOK."""
    import random

    from bbvisma.records import Classification

    rng = random.Random(seed)
    ubl = reference("einvoices/ubl/ubl-21-en16931.xml")
    template = ubl.lines[0]
    colours = ["Rot", "Blau", "Grün"]
    plain = [f"P{index:03d}" for index in range(20)] + ["ÄPFEL", "ZANGE", "bolt", "öl", "Öl"]
    shirts = [f"SHIRT{group}-{colour}" for group in range(4) for colour in colours]
    documents = []
    for number in range(1, count + 1):
        currency = rng.choice(["EUR", "EUR", "EUR", "NOK"])
        lines = []
        for _ in range(rng.randint(1, 8)):
            sku = rng.choice(plain + shirts + [None] + (["FJORD"] if currency == "NOK" else []))
            if sku is None:
                lines.append(line(template, sku=None, name="Versand"))
                continue
            characteristics = {}
            if sku.startswith("SHIRT"):
                group, colour = sku[5], sku.split("-")[1]
                # group 3 sometimes says another material: refused as variants
                material = "Wolle" if group == "3" and rng.random() < 0.3 else "Baumwolle"
                characteristics = {"Farbe": colour, "Material": material}
                if group == "2":  # no variant dimension differs: not grouped
                    characteristics = {"Material": "Baumwolle"}
            lines.append(
                line(
                    template,
                    sku=sku,
                    name=f"{sku} v{number}",
                    price=rng.choice(["0", "9.90", "12.5", "100"]),
                    quantity=str(rng.randint(1, 5)),
                    characteristics=characteristics,
                    gtin=rng.choice([None, f"40{number:011d}"]),
                    vat_rate=rng.choice([Decimal("19"), Decimal("19.00"), Decimal("7")]),
                    classifications=rng.choice(
                        [[], [Classification(code=str(number), list_id="STI")]]
                    ),
                )
            )
        documents.append(
            (
                str(number),
                document(
                    ubl,
                    lines,
                    number=f"R-{number}",
                    issue_date=dt.date(2025, 1, 1) + dt.timedelta(days=rng.randint(0, 20)),
                    type_code=rng.choice(["380", "380", "380", "381", "384"]),
                    currency=currency,
                ),
            )
        )
    return documents


def _everything(catalog: ProductCatalog, skus: list[str]) -> dict:
    """What a flow can ask a catalog, as JSON (so 19 and 19.00 stay apart)."""
    return {
        "products": [p.model_dump(mode="json") for p in catalog.products()],
        "one_by_one": {
            sku: (catalog.product(sku).model_dump(mode="json"), catalog.notes_of(sku))
            for sku in skus
        },
        "len": len(catalog),
    }


def test_a_catalog_spilled_to_disk_yields_exactly_the_products_of_one_kept_in_memory():
    """The memory bound changes where the entries are, never a product, a note or the order:
    the same documents folded into a catalog that keeps everything in memory and one that
    keeps 3 SKUs (the rest in its temporary database) give equal answers -- also after more
    documents come in once the products were read (entries read back, grouped anew)."""
    documents = _mixed_documents(120)
    settings = {"variant_dimensions": "Farbe,Größe", "base_pattern": r"^(?P<base>[^-]+)-.+$"}
    memory = ProductCatalog(**settings, memory_skus=10_000)
    spilled = ProductCatalog(**settings, memory_skus=3)
    for receipt_id, doc in documents[:80]:
        memory.add(receipt_id, doc)
        spilled.add(receipt_id, doc)
    assert spilled.spilled and not memory.spilled and len(memory) > 30
    skus = [p.sku for p in memory.products()]
    first = _everything(memory, skus)
    assert _everything(spilled, skus) == first
    for receipt_id, doc in documents[80:]:
        memory.add(receipt_id, doc)
        spilled.add(receipt_id, doc)
    skus = [p.sku for p in memory.products()]
    second = _everything(memory, skus)
    assert _everything(spilled, skus) == second
    assert second != first
    # the documents did exercise the rules compared above
    assert skus.index("ZANGE") < skus.index("bolt") < skus.index("ÄPFEL") < skus.index("Öl")
    assert skus.index("Öl") < skus.index("öl")
    products = second["products"]
    assert {p["base_sku"] for p in products} >= {"SHIRT0", "SHIRT1", None}
    notes = [note for _product, sku_notes in second["one_by_one"].values() for note in sku_notes]
    assert any("do not differ in a variant dimension" in note for note in notes)
    assert any("sold only in NOK" in note for note in notes)
    assert {p["vat_rate"] for p in products} >= {"19", "19.00"}
    assert any(p["gtin"] for p in products) and any(p["classifications"] for p in products)


def test_a_catalog_of_many_skus_holds_no_more_than_its_bound_in_memory():
    """5 000 SKUs, 200 kept in memory: what the catalog holds in Python's heap after the fold
    stays a fraction of what the same catalog holds with every entry in memory (the
    documents stream by and are not kept in either case)."""
    import gc
    import tracemalloc

    ubl = reference("einvoices/ubl/ubl-21-en16931.xml")
    template = ubl.lines[0]

    def fold(memory_skus: int) -> tuple[int, ProductCatalog]:
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            catalog = ProductCatalog(memory_skus=memory_skus)
            for number in range(50):
                lines = [
                    line(template, sku=f"SKU{number:02d}{index:03d}", name=f"Artikel {index}")
                    for index in range(100)
                ]
                doc = document(ubl, lines, number=str(number), issue_date=dt.date(2025, 1, 1))
                catalog.add(str(number), doc)
            del doc, lines
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        return held, catalog

    in_memory, kept = fold(10_000)
    bounded, spilled = fold(200)
    assert len(kept) == len(spilled) == 5000
    assert spilled.spilled and not kept.spilled
    assert in_memory > 1024 * 1024  # ~0.5 KiB per SKU: the measurement sees the entries
    assert bounded < in_memory / 5
    assert [p.sku for p in spilled.products()] == [p.sku for p in kept.products()]
