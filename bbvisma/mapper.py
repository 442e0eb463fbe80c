"""The data mapper: a list of small rules turns a canonical source dict into a target payload.

Why rules as data and not code: the mapping of a customer or an order differs from one company
to the next (customer classes, VAT codes, which text goes into which field). Rules are plain
rows -- the Odoo layer stores them as records, edits them in a form and hands them here with
:meth:`Mapping.from_rows` -- while every behaviour stays a pure function tested in milliseconds.

A :class:`Rule` reads one value from the source (``source``, a dotted path, ``None`` for
constants), passes it through its transform (``transform`` + ``arg``) and then through optional
further steps (``then``), and writes the result at ``target`` (a dotted path in the payload).

Paths
    Source paths address nested dicts and lists: ``"customer.address.city"``,
    ``"lines[0].sku"``, ``"lines[-1].sku"``. A missing key, a ``None`` on the way or an index
    out of range gives ``None`` -- never ``KeyError`` -- so a rule on optional data just yields
    nothing. Target paths are dotted names (``"mainAddress.countryId"``); intermediate dicts
    are created as needed.

Chaining (one design: a main step plus ``then``)
    ``transform``/``arg`` is the main step; its name is one of :data:`TRANSFORMS` (the addon
    shows them in a selection). ``then`` holds further steps applied in order to the result,
    separated by ``;``, each ``name`` or ``name:arg`` (split at the first ``:``), e.g.
    ``then="strip; truncate:30"`` or ``then="default:DE; upper"``. A ``then`` argument cannot
    contain ``;``; put such an argument in the main step. ``each`` is only allowed as the main
    step (it needs the child mapping named in ``arg``).

Empty values
    ``None``, ``""`` (or whitespace only), ``[]`` and ``{}`` are *empty*; ``0`` and ``False``
    are not. Most transforms pass an empty input through unchanged, so ``default`` (as the
    main step or in ``then``) decides what an absent value becomes. A rule marked ``required``
    whose result is empty raises :class:`MappingError` naming the target and the source path.
    A result of ``None`` writes nothing into the payload (on an update, an absent field is left
    as it is in the target); any other value, ``""`` included, is written.

Numbers
    ``number`` quantizes with ``ROUND_HALF_UP`` to ``arg`` decimals (default 2) and keeps a
    :class:`~decimal.Decimal` while the steps run, so chained steps see an exact value
    (``number:0`` gives an ``int``). At the very end of :meth:`Mapping.apply` every Decimal in
    the payload becomes a ``float`` -- the nearest double of the already quantized value, which
    ``json.dumps`` writes as the same short decimal (``Decimal("19.99")`` -> ``19.99``) -- so
    the payload is JSON-ready for the client and for :func:`bbvisma.linkstore.content_hash`.

Modes
    ``when="create"`` rules apply only when the target record is created, ``when="update"``
    rules only on updates, ``"always"`` on both. :meth:`Mapping.comparable` strips the
    mode-specific fields from a payload so that the content hash of a record is the same in
    both modes: a created record is not updated again on the next run just because the
    update-mode payload lacks its create-only fields. Consequently a change in a create-only or
    update-only field alone does not trigger an update; it rides along with the next real one.

Errors
    A record that cannot be mapped raises :class:`MappingError` (a
    :class:`~bbvisma.errors.DataError`: the engine parks the record). A mapping that is wrong in
    itself (unknown transform, bad argument, bad path, unknown child mapping or value map)
    raises :class:`~bbvisma.errors.ConfigError` -- at construction where possible -- because
    it would fail every record alike. :meth:`Mapping.preview` never raises: it returns the
    payload it could build plus the list of problems (the addon's "Test mapping" button).

Visma.net's ``{"value": ...}`` wrapping of write bodies is not the mapper's job; the Visma.net
client does it, so payloads stay readable in logs and hashes.
"""

from __future__ import annotations

import datetime as dt
import re
import string
from collections.abc import Callable, Iterable
from collections.abc import Mapping as AbcMapping
from dataclasses import asdict, dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import Any

from .errors import BBVismaError, ConfigError, DataError

__all__ = [
    "MODES",
    "TRANSFORMS",
    "WHEN",
    "Mapping",
    "MappingError",
    "Rule",
    "Transform",
    "is_empty",
    "parse_path",
    "register_transform",
    "resolve",
    "transform_selection",
]

WHEN = ("always", "create", "update")
MODES = ("create", "update")
TRUTHY = frozenset({"1", "true", "yes"})


class MappingError(DataError):
    """A record that cannot be mapped; names the mapping, the target field and the source path.

    ``cause`` is stable across records with the same problem (``"unmapped:<map>:<value>"``,
    ``"required:<target>"``, ...), so the log groups them. ``detail`` is the bare reason;
    the message adds where it happened. For lines mapped by ``each`` the target and source are
    qualified with the line index: ``lines[2].inventoryNumber`` (from ``lines[2].sku``).
    """

    def __init__(
        self,
        detail: str,
        *,
        cause: str,
        mapping: str | None = None,
        target: str | None = None,
        source_path: str | None = None,
    ):
        self.detail = detail
        self.mapping = mapping
        self.target = target
        self.source_path = source_path
        message = detail
        if target is not None:
            where = f"mapping {mapping!r}, field {target!r}"
            if source_path:
                where += f" (from {source_path!r})"
            message = f"{where}: {detail}"
        super().__init__(message, cause=cause)


# --------------------------------------------------------------------------------------------
# Empties and paths
# --------------------------------------------------------------------------------------------
def is_empty(value: Any) -> bool:
    """``None``, blank strings and empty containers are empty; ``0`` and ``False`` are not."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple, dict)):
        return not value
    return False


_SEGMENT = re.compile(r"([^.\[\]\s]*)((?:\[-?\d+\])*)")
_INDEX = re.compile(r"\[(-?\d+)\]")
_TARGET = re.compile(r"[^.\[\]\s]+(\.[^.\[\]\s]+)*")


def parse_path(path: str) -> tuple[str | int, ...]:
    """``"lines[0].sku"`` -> ``("lines", 0, "sku")``; raises ``ValueError`` on bad syntax."""
    if not path or not isinstance(path, str):
        raise ValueError("empty path")
    tokens: list[str | int] = []
    for part in path.split("."):
        match = _SEGMENT.fullmatch(part)
        if match is None or not part:
            raise ValueError(f"bad path {path!r}")
        name, indexes = match.groups()
        if name:
            tokens.append(name)
        elif not indexes:
            raise ValueError(f"bad path {path!r}")
        tokens.extend(int(i) for i in _INDEX.findall(indexes))
    return tuple(tokens)


def resolve(data: Any, tokens: Iterable[str | int]) -> Any:
    """Walk ``tokens`` into dicts and lists; anything missing on the way gives ``None``."""
    value = data
    for token in tokens:
        if value is None:
            return None
        if isinstance(token, int):
            if isinstance(value, (list, tuple)) and -len(value) <= token < len(value):
                value = value[token]
            else:
                return None
        elif isinstance(value, AbcMapping):
            value = value.get(token)
        else:
            return None
    return value


# --------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------
@dataclass
class StepContext:
    """What a transform may look at besides its input value."""

    source: Any
    value_maps: AbcMapping[str, AbcMapping[str, str]]
    mode: str
    rule: Rule
    mapping: Mapping
    collect: list[BBVismaError] | None = None  # preview: problems are collected, not raised


@dataclass(frozen=True)
class Transform:
    """A named step: ``func(value, arg, ctx) -> value``; ``check(arg)`` validates the argument
    once, when the mapping is built (raise ``ValueError`` with a readable message)."""

    name: str
    label: str
    func: Callable[[Any, str, StepContext], Any]
    help: str = ""
    check: Callable[[str], None] | None = None


#: name -> Transform; the addon lists them with :func:`transform_selection`
TRANSFORMS: dict[str, Transform] = {}


def register_transform(
    name: str, label: str, *, check: Callable[[str], None] | None = None
) -> Callable[[Callable[[Any, str, StepContext], Any]], Callable[[Any, str, StepContext], Any]]:
    """Decorator adding a transform to :data:`TRANSFORMS` (flows may add their own)."""

    def decorate(func):
        TRANSFORMS[name] = Transform(name, label, func, (func.__doc__ or "").strip(), check)
        return func

    return decorate


def transform_selection() -> list[tuple[str, str]]:
    """``[(name, label), ...]`` for an Odoo selection field."""
    return [(t.name, t.label) for t in TRANSFORMS.values()]


def _check_int(minimum: int) -> Callable[[str], None]:
    def check(arg: str) -> None:
        try:
            number = int(arg)
        except (TypeError, ValueError):
            raise ValueError(f"expects an integer, got {arg!r}")
        if number < minimum:
            raise ValueError(f"expects an integer >= {minimum}, got {number}")

    return check


def _check_optional_int(minimum: int) -> Callable[[str], None]:
    inner = _check_int(minimum)

    def check(arg: str) -> None:
        if arg:
            inner(arg)

    return check


def _check_required(what: str) -> Callable[[str], None]:
    def check(arg: str) -> None:
        if not arg:
            raise ValueError(f"needs {what}")

    return check


def _check_paths(arg: str) -> None:
    paths = arg.partition("|")[0]
    if not paths.strip():
        raise ValueError("needs source paths: 'path1,path2|separator'")
    for path in paths.split(","):
        parse_path(path.strip())


def _check_split(arg: str) -> None:
    _sep, bar, index = arg.rpartition("|")
    if not bar:
        raise ValueError("expects 'separator|index'")
    _check_int(-(10**6))(index)


def _check_format(arg: str) -> None:
    if not arg:
        raise ValueError("needs a template such as '{number} / {date}'")
    list(string.Formatter().parse(arg))  # raises ValueError on unbalanced braces


def _text(value: Any) -> str:
    if isinstance(value, Decimal):
        return _plain_decimal(value)
    return str(value)


def _plain_decimal(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


@register_transform("copy", "Copy")
def _copy(value, arg, ctx):
    """The source value as it is."""
    return value


@register_transform("constant", "Constant", check=None)
def _constant(value, arg, ctx):
    """``arg`` as a string (chain ``number:0`` or ``bool`` for other types)."""
    return arg


@register_transform("default", "Default if empty")
def _default(value, arg, ctx):
    """The value, or ``arg`` when the value is empty."""
    return arg if is_empty(value) else value


@register_transform("value_map", "Value map", check=_check_required("a value map name"))
def _value_map(value, arg, ctx):
    """Looks the value up in the value map named ``arg``; a ``"*"`` entry catches the rest.

    The key is the value's text; numbers in plain form (``19.00`` -> ``"19"``), booleans as
    ``"true"``/``"false"``. An empty value stays empty. An unmapped value raises a data error
    with cause ``unmapped:<map>:<value>``.
    """
    if is_empty(value):
        return None
    table = ctx.value_maps.get(arg)
    if table is None:
        raise ConfigError(f"value map {arg!r} is not defined")
    if isinstance(value, bool):
        key = "true" if value else "false"
    elif isinstance(value, (Decimal, float, int)):
        key = _plain_decimal(Decimal(str(value)))
    else:
        key = str(value)
    if key in table:
        return table[key]
    if "*" in table:
        return table["*"]
    raise MappingError(f"value map {arg!r} has no entry for {key!r}", cause=f"unmapped:{arg}:{key}")


class _FormatView:
    """Lets ``str.format`` walk the source: ``{customer.name}``, ``{lines[0][sku]}``; anything
    missing formats as an empty string instead of raising."""

    __slots__ = ("_value",)

    def __init__(self, value: Any):
        self._value = value

    def __getitem__(self, key):
        return _FormatView(resolve(self._value, (key,)))

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _FormatView(resolve(self._value, (name,)))

    def __str__(self) -> str:
        return "" if self._value is None else _text(self._value)

    def __format__(self, spec: str) -> str:
        value = self._value
        if value is None:
            return ""
        if not spec:
            return _text(value)
        try:
            with localcontext(rounding=ROUND_HALF_UP):  # money rounds half-up, as `number`
                return format(value, spec)
        except (TypeError, ValueError):
            try:
                with localcontext(rounding=ROUND_HALF_UP):
                    return format(Decimal(str(value)), spec)
            except (InvalidOperation, TypeError, ValueError):
                raise MappingError(
                    f"cannot format {value!r} with {spec!r}", cause="format"
                ) from None


class _FormatRoot:
    def __init__(self, source: Any, current: Any):
        self._source = source
        self._current = current

    def __getitem__(self, key):
        if key == "_":
            return _FormatView(self._current)
        return _FormatView(resolve(self._source, (key,)))


@register_transform("format", "Format template", check=_check_format)
def _format(value, arg, ctx):
    """``str.format`` template over the source dict, e.g. ``"{number} / {date}"``; nested
    fields as ``{customer.name}`` or ``{lines[0].sku}``; ``{_}`` is the rule's current value.
    Missing fields format as empty text."""
    return arg.format_map(_FormatRoot(ctx.source, value))


def _as_date(value: Any) -> dt.date | dt.datetime:
    if isinstance(value, (dt.date, dt.datetime)):
        return value
    text = str(value).strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    if len(text) == 10:
        return dt.date.fromisoformat(text)
    return dt.datetime.fromisoformat(text)


@register_transform("date", "Date")
def _date(value, arg, ctx):
    """Formats an ISO date/datetime string or a date object with the strftime ``arg``
    (default ``%Y-%m-%d``)."""
    if is_empty(value):
        return None
    try:
        parsed = _as_date(value)
    except (TypeError, ValueError):
        raise MappingError(f"{value!r} is not an ISO date", cause="invalid_date")
    return parsed.strftime(arg or "%Y-%m-%d")


@register_transform("number", "Number", check=_check_optional_int(0))
def _number(value, arg, ctx):
    """Decimal rounded half-up to ``arg`` decimals (default 2); ``0`` decimals give an int."""
    if is_empty(value):
        return None
    if isinstance(value, bool):
        raise MappingError(f"{value!r} is not a number", cause="invalid_number")
    try:
        number = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
        if not number.is_finite():
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        raise MappingError(f"{value!r} is not a number", cause="invalid_number")
    decimals = int(arg) if arg else 2
    quantized = number.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    return int(quantized) if decimals == 0 else quantized


@register_transform("truncate", "Truncate", check=_check_int(1))
def _truncate(value, arg, ctx):
    """The text cut to at most ``arg`` characters."""
    if value is None:
        return None
    return _text(value)[: int(arg)]


def _string_step(func: Callable[[str], str]):
    def step(value, arg, ctx):
        return None if value is None else func(_text(value))

    return step


register_transform("upper", "Upper case")(_string_step(str.upper))
register_transform("lower", "Lower case")(_string_step(str.lower))
register_transform("title", "Title case")(_string_step(str.title))
register_transform("strip", "Strip spaces")(_string_step(str.strip))


def _values_at(arg_paths: str, value: Any, ctx: StepContext) -> list[Any]:
    values = [value] if ctx.rule.source else []
    for path in arg_paths.split(","):
        values.append(resolve(ctx.source, parse_path(path.strip())))
    return values


@register_transform("concat", "Concatenate", check=_check_paths)
def _concat(value, arg, ctx):
    """Joins the non-empty values at ``arg`` = ``"path1,path2|separator"`` (default separator
    a space); the rule's own source value, if it has one, comes first."""
    paths, bar, separator = arg.partition("|")
    parts = [_text(v) for v in _values_at(paths, value, ctx) if not is_empty(v)]
    return (separator if bar else " ").join(parts) if parts else None


@register_transform("first", "First non-empty", check=_check_paths)
def _first(value, arg, ctx):
    """The first non-empty value among the rule's source and ``arg`` = ``"path1,path2"``."""
    for candidate in _values_at(arg.partition("|")[0], value, ctx):
        if not is_empty(candidate):
            return candidate
    return None


@register_transform("split", "Split", check=_check_split)
def _split(value, arg, ctx):
    """Part ``index`` of the text split at ``separator``; ``arg`` = ``"separator|index"``
    (an empty separator splits at whitespace). A missing part gives ``None``."""
    if value is None:
        return None
    separator, _bar, index = arg.rpartition("|")
    parts = _text(value).split(separator) if separator else _text(value).split()
    position = int(index)
    return parts[position] if -len(parts) <= position < len(parts) else None


@register_transform("bool", "Boolean")
def _bool(value, arg, ctx):
    """``True`` for ``"1"``, ``"true"``, ``"yes"`` (any case), non-zero numbers and ``True``;
    ``False`` for other values; an empty value stays ``None``."""
    if is_empty(value):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float, Decimal)):
        return value != 0
    return str(value).strip().lower() in TRUTHY


@register_transform("each", "Each (child mapping)", check=_check_required("a child mapping name"))
def _each(value, arg, ctx):
    """Maps a list of dicts (e.g. document lines) with the child mapping named ``arg``."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise MappingError(f"expects a list, got {type(value).__name__}", cause="not_a_list")
    child = ctx.mapping.children[arg]
    rule = ctx.rule
    out = []
    for index, element in enumerate(value):
        if not isinstance(element, AbcMapping):
            raise MappingError(
                f"item {index} is a {type(element).__name__}, not a dict", cause="not_a_dict"
            )
        if ctx.collect is not None:
            nested: list[BBVismaError] = []
            out.append(child._run(element, ctx.mode, ctx.value_maps, nested))
            ctx.collect.extend(
                _in_line(exc, ctx.mapping.name, rule, index)
                if isinstance(exc, MappingError)
                else exc
                for exc in nested
            )
            continue
        try:
            out.append(child._run(element, ctx.mode, ctx.value_maps, None))
        except MappingError as exc:
            raise _in_line(exc, exc.mapping, rule, index) from None
    return out


def _in_line(exc: MappingError, mapping: str | None, rule: Rule, index: int) -> MappingError:
    """Qualify a child mapping's error with the line: ``lines[2].inventoryNumber``."""
    source = f"{rule.source}[{index}].{exc.source_path}" if exc.source_path else None
    return MappingError(
        exc.detail,
        cause=exc.cause,
        mapping=mapping,
        target=f"{rule.target}[{index}].{exc.target}",
        source_path=source,
    )


# --------------------------------------------------------------------------------------------
# Rules and mappings
# --------------------------------------------------------------------------------------------
_ROW_KEYS = ("sequence", "target", "source", "transform", "arg", "when", "required", "note", "then")


@dataclass(frozen=True)
class Rule:
    """One field of the payload. See the module docstring for paths, chaining and modes."""

    sequence: int = 10
    target: str = ""
    source: str | None = None
    transform: str = "copy"
    arg: str = ""
    when: str = "always"
    required: bool = False
    note: str = ""
    then: str = ""

    @classmethod
    def from_row(cls, row: AbcMapping[str, Any]) -> Rule:
        """Build from a plain dict; Odoo's ``False`` for an empty char field counts as empty."""
        unknown = set(row) - set(_ROW_KEYS)
        if unknown:
            raise ConfigError(f"unknown mapping rule keys: {', '.join(sorted(unknown))}")

        def text(key: str, default: str = "") -> str:
            value = row.get(key)
            return default if value in (None, False) else str(value)

        return cls(
            sequence=int(row.get("sequence") or 0),
            target=text("target"),
            source=text("source") or None,
            transform=text("transform", "copy") or "copy",
            arg=text("arg"),
            when=text("when", "always") or "always",
            required=bool(row.get("required")),
            note=text("note"),
            then=text("then"),
        )

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    def steps(self) -> list[tuple[str, str]]:
        """``[(transform, arg), ...]``: the main step then the ``then`` steps."""
        steps = [(self.transform, self.arg)]
        for chunk in self.then.split(";"):
            chunk = chunk.strip()
            if chunk:
                name, _colon, arg = chunk.partition(":")
                steps.append((name.strip(), arg))
        return steps


@dataclass
class _Compiled:
    rule: Rule
    source: tuple[str | int, ...] | None
    target: tuple[str, ...]
    steps: list[tuple[Transform, str]]
    child: Mapping | None = None  # the child mapping of an ``each`` rule


@dataclass
class Mapping:
    """A named, ordered set of rules, with child mappings for ``each`` (document lines).

    Built once (rules are validated here; a wrong rule raises :class:`ConfigError` listing every
    problem) and then applied to any number of records; thread-safe, no state per record.
    """

    name: str
    rules: list[Rule]
    children: dict[str, Mapping] = field(default_factory=dict)

    def __post_init__(self):
        self.rules = list(self.rules)
        self.children = dict(self.children or {})
        ordered = sorted(enumerate(self.rules), key=lambda pair: (pair[1].sequence, pair[0]))
        problems: list[str] = []
        compiled: list[_Compiled] = []
        for _index, rule in ordered:
            try:
                compiled.append(self._compile(rule))
            except ValueError as exc:
                problems.append(f"rule {rule.sequence} ({rule.target or '?'}): {exc}")
        problems.extend(self._check_targets(compiled))
        if problems:
            raise ConfigError(f"mapping {self.name!r} is invalid: " + "; ".join(problems))
        self._compiled = compiled
        self._mode_specific = [c for c in compiled if c.rule.when != "always"]
        self._each_rules = [c for c in compiled if c.child is not None and c.rule.when == "always"]
        self._mode_dependent = bool(self._mode_specific) or any(
            c.child._mode_dependent for c in self._each_rules
        )

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_rows(
        cls,
        name: str,
        rows: Iterable[AbcMapping[str, Any]],
        children: AbcMapping[str, Mapping | Iterable[AbcMapping[str, Any]]] | None = None,
    ) -> Mapping:
        """Build from plain dicts (how the Odoo layer loads mapping lines). ``children`` values
        may be :class:`Mapping` objects or lists of rows (then named after their key)."""
        built = {
            key: child if isinstance(child, Mapping) else cls.from_rows(key, child)
            for key, child in (children or {}).items()
        }
        return cls(name, [Rule.from_row(row) for row in rows], built)

    def to_rows(self) -> list[dict[str, Any]]:
        """The rules as plain dicts, in application order."""
        return [c.rule.to_row() for c in self._compiled]

    def _compile(self, rule: Rule) -> _Compiled:
        if not rule.target or not _TARGET.fullmatch(rule.target):
            raise ValueError(f"bad target {rule.target!r} (dotted names, e.g. 'address.city')")
        if rule.when not in WHEN:
            raise ValueError(f"'when' must be one of {', '.join(WHEN)}, got {rule.when!r}")
        source = parse_path(rule.source) if rule.source else None
        steps: list[tuple[Transform, str]] = []
        child = None
        for position, (name, arg) in enumerate(rule.steps()):
            transform = TRANSFORMS.get(name)
            if transform is None:
                raise ValueError(f"unknown transform {name!r}")
            if name == "each":
                if position:
                    raise ValueError("'each' must be the main transform, not in 'then'")
                if arg not in self.children:
                    raise ValueError(f"'each' names unknown child mapping {arg!r}")
                child = self.children[arg]
            if transform.check is not None:
                try:
                    transform.check(arg)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}")
            steps.append((transform, arg))
        return _Compiled(rule, source, tuple(rule.target.split(".")), steps, child)

    @staticmethod
    def _check_targets(compiled: list[_Compiled]) -> list[str]:
        """Two rules may share a target only if they never apply in the same mode, and a
        target may not be both a value and the parent of another target."""
        problems: list[str] = []
        for mode in MODES:
            seen: dict[tuple[str, ...], Rule] = {}
            for c in compiled:
                if c.rule.when not in ("always", mode):
                    continue
                if c.target in seen:
                    problems.append(
                        f"target {c.rule.target!r} is written twice in {mode} mode "
                        f"(rules {seen[c.target].sequence} and {c.rule.sequence})"
                    )
                seen[c.target] = c.rule
            for target in seen:
                for other in seen:
                    if len(other) > len(target) and other[: len(target)] == target:
                        problems.append(
                            f"target {'.'.join(target)!r} is also the parent of {'.'.join(other)!r}"
                        )
        return list(dict.fromkeys(problems))

    # -- use ----------------------------------------------------------------------------------
    def apply(
        self,
        source: AbcMapping[str, Any],
        *,
        mode: str = "create",
        value_maps: AbcMapping[str, AbcMapping[str, str]] | None = None,
    ) -> dict[str, Any]:
        """The payload for ``source`` (nested plain dict, keys in rule order).

        Raises :class:`MappingError` (a DataError: park the record) or :class:`ConfigError`
        (e.g. an undefined value map: the mapping itself is wrong).
        """
        if mode not in MODES:
            raise ConfigError(f"mode must be 'create' or 'update', got {mode!r}")
        return _jsonable(self._run(source, mode, value_maps or {}, None))

    def preview(
        self,
        source: Any,
        mode: str = "create",
        value_maps: AbcMapping[str, AbcMapping[str, str]] | None = None,
    ) -> tuple[dict[str, Any], list[str]]:
        """``(payload, problems)``: every rule is tried, each failure becomes one readable
        problem line and the payload holds what could be built. Never raises."""
        problems: list[str] = []
        if mode not in MODES:
            problems.append(f"mode must be 'create' or 'update', got {mode!r}")
            mode = "create"
        if not isinstance(source, AbcMapping):
            problems.append(f"the source is a {type(source).__name__}, not a dict")
            source = {}
        collected: list[BBVismaError] = []
        try:
            payload = _jsonable(self._run(source, mode, value_maps or {}, collected))
        except Exception as exc:  # preview reports problems, it must never raise
            payload = {}
            problems.extend(error.message for error in collected)
            problems.append(f"{type(exc).__name__}: {exc}")
            return payload, problems
        problems.extend(error.message for error in collected)
        return payload, problems

    def comparable(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``payload`` without the fields of create-only and update-only rules (also inside
        ``each`` lists), so that its content hash does not depend on the mode it was built in.
        Keys a flow added outside the rules are kept. Returns ``payload`` itself when the
        mapping has no mode-specific rule, else a trimmed copy."""
        if not self._mode_dependent:
            return payload
        result = _copy_tree(payload)
        self._trim(result)
        return result

    def _trim(self, payload: dict[str, Any]) -> None:
        for c in self._mode_specific:
            _remove(payload, c.target)
        for c in self._each_rules:
            items = resolve(payload, c.target)
            if c.child._mode_dependent and isinstance(items, list):
                for item in items:
                    if isinstance(item, dict):
                        c.child._trim(item)

    def _run(self, source, mode, value_maps, collect: list[BBVismaError] | None) -> dict:
        """Apply the rules of ``mode``; with ``collect`` (preview) problems are appended to it
        and the rule is left out, else the first problem raises."""
        out: dict[str, Any] = {}
        for c in self._compiled:
            if c.rule.when not in ("always", mode):
                continue
            try:
                value = self._evaluate(c, source, mode, value_maps, collect)
            except (MappingError, ConfigError) as exc:
                located = self._locate(c, exc)
                if collect is None:
                    raise located from None
                collect.append(located)
                continue
            if value is not None:
                _put(out, c.target, value)
        return out

    def _evaluate(self, c: _Compiled, source, mode, value_maps, collect) -> Any:
        value = resolve(source, c.source) if c.source is not None else None
        ctx = StepContext(source, value_maps, mode, c.rule, self, collect)
        for transform, arg in c.steps:
            value = transform.func(value, arg, ctx)
        if c.rule.required and is_empty(value):
            raise MappingError("required value is empty", cause=f"required:{c.rule.target}")
        return value

    def _locate(self, c: _Compiled, exc: MappingError | ConfigError) -> BBVismaError:
        """Name the mapping, the field and the source path in the error (once)."""
        if isinstance(exc, ConfigError):
            if getattr(exc, "located", False):
                return exc
            where = f"mapping {self.name!r}, field {c.rule.target!r}"
            error = ConfigError(f"{where}: {exc.message}")
            error.located = True
            return error
        if exc.target is not None:  # from a child mapping: already qualified, rename only
            target, source_path = exc.target, exc.source_path
        else:
            target, source_path = c.rule.target, c.rule.source
        return MappingError(
            exc.detail, cause=exc.cause, mapping=self.name, target=target, source_path=source_path
        )


# --------------------------------------------------------------------------------------------
# Payload helpers
# --------------------------------------------------------------------------------------------
def _put(out: dict[str, Any], target: tuple[str, ...], value: Any) -> None:
    node = out
    for key in target[:-1]:
        node = node.setdefault(key, {})
    node[target[-1]] = value


def _remove(out: dict[str, Any], target: tuple[str, ...]) -> None:
    """Remove ``target`` and the parents it leaves empty."""
    trail = []
    node: Any = out
    for key in target[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            return
        trail.append((node, key))
        node = node[key]
    if isinstance(node, dict):
        node.pop(target[-1], None)
    for parent, key in reversed(trail):
        if parent[key]:
            break
        del parent[key]


def _copy_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_tree(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    """Every Decimal becomes a float, recursively; see "Numbers" in the module docstring."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value
