"""Customers flow: BuchhaltungsButler debtors -> Visma.net customers.

BuchhaltungsButler debtors carry no modification time and the debtor list has no delta filter,
so every run reads all debtor pages; the link hashes make unchanged debtors cost nothing (no
call to Visma.net). What a run decides per debtor:

1. **Link** (engine): linked and unchanged -> skip; linked and changed -> one update.
2. **No link** -- before anything is created, the debtor is looked up in Visma.net:

   a. by **e-mail** (setting ``match_by_email``): an existing customer with that main-contact
      e-mail is adopted (and updated with the debtor's data when ``update_on_match``) -- the
      rule of the seed: customers that already exist in Visma.net are not duplicated. A
      customer already linked to *another* debtor is never adopted (several BB debtors may
      share an e-mail such as ``buchhaltung@...``; they stay separate customers); two or more
      unlinked candidates park the debtor (``ambiguous_email:<e-mail>``) for a human.
   b. by the **deterministic key** the mapping writes -- the customer ``number`` (default: the
      BB posting account number, which is what German bookkeeping calls the customer number)
      or else ``corporateId``. A customer found there with the same name is ours (e.g. a create
      whose answer was lost) and is adopted; one with another name or linked to another debtor
      parks the debtor (``number_taken:<number>``) instead of overwriting a stranger.
   c. otherwise it is **created**; a lost create answer is resolved by looking up the key
      again (never resent blindly), and so is a create refused because the customer exists
      already (another run or a person created it between the lookup and the POST): found
      by its key, it is adopted like in b., not parked. The engine writes each debtor under
      its link store guard, so two runs at once do not even get that far: the second waits,
      sees the first one's link and skips.

API calls: a run whose batch holds many debtors without a link (a first run, a bulk import)
reads the Visma.net customer list once, page by page, into a slim index (number, name,
corporate id, e-mail), and answers the lookups of a. and b. from it: such a debtor then costs
one POST instead of two GETs and a POST. Small batches look up per debtor (cheaper than reading
a large customer list for a handful of new debtors). A lost answer or an "already exists"
refusal is always resolved by a live lookup, never from the index.

Company or person: BuchhaltungsButler has no flag, so :func:`classify` decides from the data
(setting ``company_rule``: ``auto`` | ``company`` | ``person``). A contact person besides the
name, a legal form in the name (GmbH, AG, Ltd, SARL, AS, ...) or a VAT id make a company,
whose contact person becomes the main contact (``attention``); anyone else is a person, who is
their own main contact. The canonical dict says which rule decided (``company_reason``), so the
log explains it.

Countries come from BB as ISO alpha-2 codes or as German names ("Dänemark"); the mapper
transform ``country`` (registered here) passes codes and looks names up in the value map
``countries``; an unknown name parks the debtor naming it (``unmapped:countries:<name>``).

The orders flow creates the customers of its orders through this flow
(:meth:`CustomersFlow.ensure_customer`), so the rules above exist once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterable, Iterator
from typing import Any

from bbvisma.buchhaltungsbutler.models import Debtor
from bbvisma.engine import Action, Flow, FlowContext, SourceItem
from bbvisma.errors import ApiError, ConfigError, DataError, PreconditionFailed
from bbvisma.hashindex import HashIndex, text_hash
from bbvisma.linkstore import Link
from bbvisma.mapper import Mapping, MappingError, is_empty, register_transform
from bbvisma.records import Address, Customer

__all__ = [
    "COMPANY_RULES",
    "CustomersFlow",
    "canonical_customer",
    "classify",
]

COMPANY_RULES = ("auto", "company", "person")

# --------------------------------------------------------------------------------------------
# Company or person
# --------------------------------------------------------------------------------------------
#: legal forms matched case-insensitively (long enough not to be ordinary words)
_LEGAL_FORMS_CI = (
    r"GmbH\s*&\s*Co\.?\s*KG(?:aA)?",
    r"g?GmbH",
    r"GesmbH",
    r"mbH",
    r"KGaA",
    r"OHG",
    r"GbR",
    r"e\.\s?K(?:fm)?\.",
    r"e\.\s?V\.",
    r"Ltd\.?",
    r"Limited",
    r"LLC",
    r"LLP",
    r"PLC",
    r"Inc\.?",
    r"Corp\.?",
    r"S\.?A\.?R\.?L\.?",
    r"S\.A\.S\.?",
    r"S\.A\.",
    r"S\.p\.A\.",
    r"S\.r\.l\.",
    r"B\.V\.",
    r"N\.V\.",
    r"ApS",
    r"Oyj?",
    r"d\.o\.o\.",
    r"s\.r\.o\.",
    r"sp\.\s?z\s?o\.\s?o\.",
    r"Kft\.?",
    r"Zrt\.?",
)
#: short legal forms matched only as written (upper case): "AS", "AB", "SA" are words too
_LEGAL_FORMS_CS = (r"AG", r"KG", r"UG", r"SE", r"SA", r"SAS", r"AS", r"ASA", r"AB", r"BV", r"NV")
_BOUNDARY_BEFORE = r"(?<![\w])"
_BOUNDARY_AFTER = r"(?![\w])"
_LEGAL_FORM_CI = re.compile(
    _BOUNDARY_BEFORE + "(" + "|".join(_LEGAL_FORMS_CI) + ")" + _BOUNDARY_AFTER, re.IGNORECASE
)
_LEGAL_FORM_CS = re.compile(
    _BOUNDARY_BEFORE + r"(" + "|".join(_LEGAL_FORMS_CS) + r")(?:\s*&\s*Co\.?)?" + _BOUNDARY_AFTER
)


def legal_form(name: str | None) -> str | None:
    """The legal form a name carries (``"GmbH"``, ``"AS"``, ``"S.A."``), or ``None``."""
    if not name:
        return None
    match = _LEGAL_FORM_CI.search(name) or _LEGAL_FORM_CS.search(name)
    return match.group(1).strip() if match else None


def classify(
    name: str | None,
    contact_person: str | None,
    vat_id: str | None,
    rule: str = "auto",
) -> tuple[bool, str]:
    """``(is_company, reason)`` for a debtor or buyer; see the module docstring."""
    if rule not in COMPANY_RULES:
        raise ConfigError(f"company_rule must be one of {', '.join(COMPANY_RULES)}, not {rule!r}")
    if rule == "company":
        return True, "setting company_rule=company"
    if rule == "person":
        return False, "setting company_rule=person"
    form = legal_form(name)
    if form:
        return True, f"legal form {form!r} in the name"
    if contact_person and _norm(contact_person) != _norm(name):
        return True, "a contact person besides the name"
    if vat_id:
        return True, "a VAT id"
    return False, "no legal form, contact person or VAT id"


def _norm(text: str | None) -> str:
    return " ".join((text or "").split()).casefold()


# --------------------------------------------------------------------------------------------
# Country transform
# --------------------------------------------------------------------------------------------
_ISO2 = re.compile(r"^[A-Za-z]{2}$")


@register_transform("country", "Country code (ISO 3166 alpha-2)")
def _country(value, arg, ctx):
    """A two-letter code passes (upper-cased); any other text -- a country name as people type
    it in BuchhaltungsButler ("Dänemark") -- is looked up, ignoring case, in the value map
    named ``arg`` (default ``countries``). An unknown name raises a data error with cause
    ``unmapped:<map>:<name>``. Empty stays empty."""
    if is_empty(value):
        return None
    text = " ".join(str(value).split())
    if _ISO2.match(text):
        return text.upper()
    name = arg or "countries"
    table = ctx.value_maps.get(name)
    if table is None:
        raise ConfigError(f"value map {name!r} is not defined")
    wanted = text.casefold()
    for key, code in table.items():
        if key.casefold() == wanted:
            return code
    raise MappingError(
        f"value map {name!r} has no entry for the country {text!r}",
        cause=f"unmapped:{name}:{text}",
    )


# --------------------------------------------------------------------------------------------
# Canonical customer
# --------------------------------------------------------------------------------------------
def _vat_id(value: str | None) -> str | None:
    text = re.sub(r"[\s.\-]", "", value or "").upper()
    return text or None


def canonical_customer(data: dict[str, Any], source_key: str, rule: str = "auto") -> dict:
    """The canonical dict (what the mapper reads, what the log shows) of a debtor-shaped dict.

    ``data`` has the fields of a BB debtor (``name``, ``contact_person_name``, ``street``,
    ``additional_address_line``, ``zip``, ``city``, ``country``, ``customer_number``,
    ``sales_tax_id``, ``email``, ``iban``, ``bic``, ``postingaccount_number`` -- the latter
    empty for a buyer known only from a document).
    """
    name = " ".join(str(data.get("name") or "").split())
    if not name:
        raise DataError(f"customer {source_key} has no name", cause="customer_without_name")
    contact = " ".join(str(data.get("contact_person_name") or "").split()) or None
    vat_id = _vat_id(data.get("sales_tax_id") or data.get("sales_tax_id_eu"))
    is_company, reason = classify(name, contact, vat_id, rule)
    raw_country = " ".join(str(data.get("country") or "").split()) or None
    email = (data.get("email") or "").strip() or None
    record = Customer(
        source_key=source_key,
        number=data.get("customer_number") or None,
        name=name,
        is_company=is_company,
        contact_name=contact if is_company else None,
        email=email,
        phone=data.get("phone") or None,
        vat_id=vat_id,
        address=Address(
            line1=data.get("street") or None,
            line2=data.get("additional_address_line") or data.get("additional_addressline"),
            postal_code=data.get("zip") or None,
            city=data.get("city") or None,
            country_code=raw_country.upper() if raw_country and _ISO2.match(raw_country) else None,
        ),
        currency=data.get("currency") or None,
        iban=data.get("iban") or None,
        bic=data.get("bic") or None,
    )
    out = record.to_mapping_dict()
    out.update(
        {
            "account_number": data.get("postingaccount_number") or None,
            "kind": "company" if is_company else "person",
            "company_reason": reason,
            #: the main contact: a company's contact person (or its name), a person themself
            "main_contact_name": (contact or name) if is_company else name,
            "attention": contact if is_company else None,
            #: the country as BB has it (ISO code or a name); the mapper's ``country`` makes it
            #: a code
            "country": raw_country,
            "payment_profile": "iban" if data.get("iban") else "none",
        }
    )
    return out


# --------------------------------------------------------------------------------------------
# Refusals are not resent unchanged
# --------------------------------------------------------------------------------------------
class RefusalMemory:
    """Mixin for flows whose source has no delta filter (debtors are read in full each run).

    When Visma.net refuses a create (4xx: an unknown country, a missing class...), the engine
    parks the record -- and the next run would read it again and send the same payload to be
    refused again. So the refusal is remembered on the record's link (no target key, the
    payload's hash, ``meta["refused"]``); as long as the payload is unchanged, later runs park
    it again *without a call*. A changed source record or mapping changes the hash and it is
    sent; :meth:`replay` always sends (the user fixed something in Visma.net)."""

    _replaying = False

    def replay(self, source_keys):
        self._replaying = True
        try:
            return super().replay(source_keys)
        finally:
            self._replaying = False

    def refused_before(self, link: Link | None, payload: dict) -> None:
        if (
            self._replaying
            or link is None
            or link.target_key
            or not link.meta.get("refused")
            or link.content_hash != self.hash_payload(payload)
        ):
            return
        raise DataError(
            f"{link.meta['refused']} (refused before with the same data; not sent again -- "
            "change the data or the mapping, or replay the record)",
            cause=link.meta.get("refused_cause") or "refused",
        )

    @contextlib.contextmanager
    def remember_refusal(self, item: SourceItem, payload: dict):
        """Remember an ApiError of the create on the record's link -- unless the link has a
        target key by now: a refusal never overwrites the link of a record that exists in
        the target (another run linked it; clearing its target would leave it unlinked and
        parked for good). The engine calls ``create`` under the record's guard, so the link
        read here is the current one."""
        try:
            yield
        except ApiError as exc:
            if not isinstance(exc, PreconditionFailed) and not self.ctx.dry_run:
                current = self.ctx.links.get(self.entity, item.key)
                if current is None or not current.target_key:
                    self.ctx.links.put(
                        self.entity,
                        item.key,
                        None,
                        self.hash_payload(payload),
                        {"refused": exc.message, "refused_cause": f"refused:{exc.cause_key}"},
                        durable=False,  # no record behind it: lost, the create is tried again
                    )
            raise


# --------------------------------------------------------------------------------------------
# The customer index of a run
# --------------------------------------------------------------------------------------------
class CustomerIndex:
    """The Visma.net customers as read once by a run, reduced to what the lookups before a
    create ask: which numbers exist (with the hash of each one's normalised name), which
    corporate ids, which e-mails (:class:`~bbvisma.hashindex.HashIndex`, 16 bytes a key, so
    a run's memory does not grow with the customer list). A miss answers the lookup without
    a call; a hit on a number whose name matches is taken as it is (the number is the key we
    looked for); any other hit is confirmed by the live lookup. The run adds what it creates,
    so later debtors of the same run see those customers too.
    """

    def __init__(self, customers: Iterable[dict[str, Any]] = ()):
        self.numbers = HashIndex()
        self.emails = HashIndex()
        self.corporate_ids = HashIndex()
        self._add(customers, building=True)
        for index in (self.numbers, self.emails, self.corporate_ids):
            index.seal()

    def add(self, customer: dict[str, Any]) -> None:
        self._add([customer], building=False)

    def _add(self, customers: Iterable[dict[str, Any]], building: bool) -> None:
        put = "append" if building else "add"
        numbers, emails, corporate_ids = (
            getattr(index, put) for index in (self.numbers, self.emails, self.corporate_ids)
        )
        for customer in customers:
            number = customer.get("number")
            if number is None:
                continue
            numbers(str(number), _norm(customer.get("name")))
            email = customer.get("email")
            if email is None:
                email = (customer.get("mainContact") or {}).get("email")
            if email:
                emails(email.lower())
            if customer.get("corporateId"):
                corporate_ids(str(customer["corporateId"]))


# --------------------------------------------------------------------------------------------
# The flow
# --------------------------------------------------------------------------------------------
class CustomersFlow(RefusalMemory, Flow):
    """BB debtors -> Visma.net customers (see the module docstring)."""

    entity = "customer"
    SETTINGS_DEFAULTS: dict[str, Any] = {
        "company_rule": "auto",
        "match_by_email": True,
        #: an existing Visma.net customer adopted by e-mail (or found by its number) gets the
        #: debtor's data; False adopts it as it is
        "update_on_match": True,
    }

    def __init__(self, ctx: FlowContext):
        super().__init__(ctx)
        self.settings = {**self.SETTINGS_DEFAULTS, **(ctx.settings or {})}
        if self.settings["company_rule"] not in COMPANY_RULES:
            raise ConfigError(
                f"customers: company_rule must be one of {', '.join(COMPANY_RULES)}, "
                f"not {self.settings['company_rule']!r}"
            )
        if ctx.visma is None:
            raise ConfigError("the customers flow needs a Visma.net client (ctx.visma)")
        self._sources: dict[str, dict] = {}
        self._index: CustomerIndex | None = None

    def prepare_batch(self, items: list[SourceItem]) -> None:
        # a record's canonical source is needed from build() to its write: one batch at most
        # (memory stays flat however many debtors a run reads)
        self._sources.clear()
        super().prepare_batch(items)
        if self._index is None and self.index_pays_off(items):
            self._index = CustomerIndex(self.ctx.visma.list_customers())

    # -- reading ------------------------------------------------------------------------------
    def source_items(self, since: str | None) -> Iterator[SourceItem]:
        """Every debtor (BB has no delta filter for debtors; the hashes skip unchanged ones)."""
        for debtor in self.ctx.bb.iter_debtors():
            yield self.item_for(debtor)

    def item_for(self, debtor: Debtor | dict[str, Any], key: str | None = None) -> SourceItem:
        """The source item of a debtor (or of a debtor-shaped dict with ``key``)."""
        data = debtor.model_dump(mode="json") if isinstance(debtor, Debtor) else dict(debtor)
        source_key = key or str(data.get("postingaccount_number") or "")
        if not source_key:
            raise ValueError("a customer source item needs a key")
        return SourceItem(source_key, None, data, label=str(data.get("name") or ""))

    def fetch_item(self, source_key: str) -> SourceItem:
        debtor = self.ctx.bb.find_debtor(source_key)
        if debtor is None:
            raise DataError(
                f"debtor {source_key} no longer exists in BuchhaltungsButler",
                cause=f"debtor_gone:{source_key}",
            )
        return self.item_for(debtor)

    # -- building -----------------------------------------------------------------------------
    def build(self, item: SourceItem, link: Link | None) -> tuple[dict, dict]:
        source = canonical_customer(item.data, item.key, self.settings["company_rule"])
        self._sources[item.key] = source
        payload = self.map(source, link)
        self.refused_before(link, payload)
        return source, payload

    # -- writing ------------------------------------------------------------------------------
    def create(self, item: SourceItem, payload: dict) -> tuple[str, Any]:
        with self.remember_refusal(item, payload):
            return self._create(item, payload)

    def _create(self, item: SourceItem, payload: dict) -> tuple[str, Any]:
        visma = self.ctx.visma
        source = self._source(item)
        email = source.get("email")
        number = payload.get("number")
        corporate_id = payload.get("corporateId")
        if self.settings["match_by_email"] and email:
            matched = self._match_by_email(item.key, email, prefer=number, index=self._index)
            if matched is not None:
                return matched, self._adopt(item, matched, "email")

        def find(index: CustomerIndex | None = None) -> str | None:
            if number:
                if index is not None:
                    name_hash = index.numbers.value_hash(str(number))
                    if name_hash is None:
                        return None  # certain: no customer has this number
                    if name_hash == text_hash(_norm(payload.get("name"))):
                        # our number with our name: taken without a call
                        return self._owned(item, {"number": number, "name": None}, {})
                return self._owned(item, visma.find_customer(str(number)), payload)
            if corporate_id:
                if index is not None and str(corporate_id) not in index.corporate_ids:
                    return None
                found = visma.find_customer_by_corporate_id(str(corporate_id))
                return self._owned(item, found, payload)
            if email:
                return self._match_by_email(item.key, email, prefer=None, index=index)
            return None

        existing = find(self._index)
        if existing is not None:
            return existing, self._adopt(item, existing, "number" if number else "key")
        # a lost answer is resolved by looking again (never resent blindly, and not at all
        # without a key to look by); a refusal "already exists" means someone created it
        # between our lookup and the POST: looked up again and adopted, not parked
        new_number, how = self.create_or_adopt(
            find,
            lambda: visma.create_customer(payload),
            recognizable=self.lookup_finds(item, payload),
        )
        if self._index is not None:
            self._index.add({**payload, "number": new_number, "email": email})
        if how == "adopted":
            return new_number, self._adopt(item, new_number, "refused_as_existing")
        if how == "recovered":
            return new_number, {"number": new_number, "created": True, "recovered": True}
        return new_number, {"number": new_number, "created": True}

    def lookup_finds(self, item: SourceItem, payload: dict) -> bool:
        """A customer is found again by its number, corporate id or e-mail; one with none of
        them (Visma.net numbers it) only by its link."""
        return bool(
            payload.get("number") or payload.get("corporateId") or self._source(item).get("email")
        )

    def update(self, item: SourceItem, payload: dict, link: Link) -> Any:
        self.ctx.visma.update_customer(link.target_key, payload)
        return {"number": link.target_key, "updated": True}

    # -- used by the orders flow --------------------------------------------------------------
    def ensure_customer(self, item: SourceItem) -> tuple[str | None, Action]:
        """The Visma.net customer number for a debtor(-shaped) item, creating or adopting it
        with this flow's rules; the link is stored as in a customers run. Errors propagate
        (a DataError parks the calling order). In a dry run a new customer has no number
        yet: ``(None, Action.CREATE)``."""
        result = self.sync_nested(item)
        return result.target_key, result.action

    # -- internals ----------------------------------------------------------------------------
    def _source(self, item: SourceItem) -> dict:
        source = self._sources.get(item.key)
        if source is None:
            source = canonical_customer(item.data, item.key, self.settings["company_rule"])
            self._sources[item.key] = source
        return source

    def _adopt(self, item: SourceItem, number: str, matched_by: str) -> dict:
        """Take over an existing customer; bring it up to date when the settings say so."""
        updated = False
        if self.settings["update_on_match"]:
            payload = self.ctx.mapping.apply(
                self._source(item), mode="update", value_maps=self.ctx.value_maps
            )
            self.ctx.visma.update_customer(number, payload)
            updated = True
        return {"number": number, "adopted": True, "matched_by": matched_by, "updated": updated}

    def _linked_elsewhere(self, source_key: str, number: str) -> Link | None:
        link = self.ctx.links.find_by_target(self.entity, number)
        return link if link is not None and link.source_key != source_key else None

    def _match_by_email(
        self, source_key: str, email: str, prefer: str | None, index: CustomerIndex | None = None
    ) -> str | None:
        """The one unlinked Visma.net customer with this e-mail, ``None`` if there is none.
        Among several, the one carrying the record's own number (``prefer``) wins. The run's
        ``index``, when given, answers a miss; Visma.net is asked otherwise."""
        if index is not None and email.lower() not in index.emails:
            return None  # certain: no customer has this e-mail
        found = self.ctx.visma.find_customers_by_email(email)
        candidates = [str(c.get("number")) for c in found if c.get("number") is not None]
        free = [n for n in candidates if self._linked_elsewhere(source_key, n) is None]
        if prefer is not None and str(prefer) in free:
            return str(prefer)
        if len(free) > 1:
            raise DataError(
                f"customer {source_key}: {len(free)} Visma.net customers have the e-mail "
                f"{email} ({', '.join(free)}); link the right one by hand or make the e-mail "
                "unique",
                cause=f"ambiguous_email:{email}",
            )
        return free[0] if free else None

    def _owned(self, item: SourceItem, found: dict | None, payload: dict) -> str | None:
        """A customer found by the deterministic key, if it is this debtor's."""
        if not found:
            return None
        number = str(found.get("number"))
        other = self._linked_elsewhere(item.key, number)
        if other is not None:
            raise DataError(
                f"customer {item.key}: Visma.net customer {number} belongs to "
                f"{self.entity} {other.source_key}; change the number rule of the mapping",
                cause=f"number_taken:{number}",
            )
        wanted = payload.get("name")
        if wanted and _norm(found.get("name")) != _norm(wanted):
            raise DataError(
                f"customer {item.key}: Visma.net customer {number} exists with another name "
                f"({found.get('name')!r}, not {wanted!r}); it is not taken over",
                cause=f"number_taken:{number}",
            )
        return number


def nested_context(ctx: FlowContext, settings: dict[str, Any], mapping: Mapping) -> FlowContext:
    """A context for running this flow inside another flow's record (same clients, links,
    caches and dry-run mode; its own settings and mapping; no sink, no recorder bracketing)."""
    return dataclasses.replace(
        ctx, settings=settings, mapping=mapping, sink=None, keep_results=False
    )
