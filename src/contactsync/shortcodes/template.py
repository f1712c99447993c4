"""Compile a template once into a flat list of closures; render is a tight loop over them.

``compile`` parses, resolves every name against :data:`~.functions.FUNCTIONS` and the known
fields, checks arguments and the URL layout, and builds one closure per shortcode (field lookup →
``/N`` word → functions right to left → encoder for its URL component). ``Template.render`` then
only calls closures and fills a ``%``-format string: no parsing, no registry lookups.

Context: a mapping of upper-case shortcode key (``EMAIL``, ``FIRST_NAME``, ``FIELD_3``) → value.
Missing keys render as ``""``; non-string values are tolerated (``None`` → ``""``, others ``str()``).
``NOW`` is never read from the context: it is the ``now`` passed to render (UTC, naive = UTC).
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from contactsync.errors import ConfigError, TemplateError
from contactsync.shortcodes import datetimes, encoding, normalizers
from contactsync.shortcodes.fields import BUILTIN_FIELDS
from contactsync.shortcodes.functions import FUNCTIONS, Function, Options, Param, Step
from contactsync.shortcodes.parser import Arg, Call, LineIndex, Node, Shortcode, Text, error_at, parse

_INT = re.compile(r"[+-]?[0-9]{1,9}")
_WORD_SPLIT = re.compile(r"[\s@]+")
Getter = Callable[[str, str], object]
Segment = Callable[[Getter], str]


@dataclass(frozen=True, slots=True)
class Slot:
    """What the UI needs to know about one compiled shortcode."""

    source: str
    field: str
    functions: tuple[str, ...]
    component: encoding.Component
    line: int
    column: int


class Template:
    """A compiled template; build with :func:`compile`, then :meth:`render` many times."""

    __slots__ = ("_format", "_segments", "_uses_now", "slots", "source", "url")

    def __init__(
        self, source: str, *, url: bool, parts: Sequence[str | Segment], slots: tuple[Slot, ...]
    ) -> None:
        self.source = source
        self.url = url
        self.slots = slots
        self._format = "".join(p.replace("%", "%%") if isinstance(p, str) else "%s" for p in parts)
        self._segments: tuple[Segment, ...] = tuple(p for p in parts if not isinstance(p, str))
        self._uses_now = any(s.field == "NOW" for s in slots)

    @property
    def fields(self) -> tuple[str, ...]:
        """Field keys used, in order of first use."""
        return tuple(dict.fromkeys(s.field for s in self.slots))

    def render(self, context: Mapping[str, object], *, now: datetime | None = None) -> str:
        """Fill the template; never raises for any value. ``now`` defaults to the current UTC time."""
        if self._uses_now:
            context = {**context, "NOW": datetimes.now_text(now or datetime.now(UTC))}
        get = context.get
        return self._format % tuple([seg(get) for seg in self._segments])

    def warnings(self, rendered: str) -> tuple[str, ...]:
        """Save/preview-time warnings about a rendered URL (over 8,192 bytes)."""
        return encoding.url_warnings(rendered) if self.url else ()

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


def _text_of(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def select_word(value: str, word: int) -> str:
    """``/N``: the N-th word (1-based, negative from the end), words split on whitespace and ``@``."""
    words = [w for w in _WORD_SPLIT.split(value) if w]
    index = word - 1 if word > 0 else len(words) + word
    return words[index] if 0 <= index < len(words) else ""


def _segment(key: str, word: int | None, steps: tuple[Step, ...], encode: Step) -> Segment:
    """One closure per shortcode; the common shapes get a loop-free body."""
    if word is None and not steps:

        def plain(get: Getter) -> str:
            value = get(key, "")
            return encode(value if value.__class__ is str else _text_of(value))

        return plain
    if word is None and len(steps) == 1:
        (only,) = steps

        def single(get: Getter) -> str:
            value = get(key, "")
            return encode(only(value if value.__class__ is str else _text_of(value)))

        return single

    def general(get: Getter) -> str:
        value = get(key, "")
        if value.__class__ is not str:
            value = _text_of(value)
        if word is not None:
            value = select_word(value, word)
        for step in steps:
            value = step(value)
        return encode(value)

    return general


def compile(
    template: str,
    fields: Collection[str] | None = None,
    *,
    url: bool = True,
    default_country_code: str = "1",
) -> Template:
    """Compile ``template``; raise TemplateError (line, column, nearest names) on any mistake.

    ``fields``: the list's shortcode keys (built-ins are added); when given, an unknown field is an
    error, otherwise any field name is accepted. ``url=False`` compiles plain text (no URL rules,
    no encoding) for previews and tests of the function library.
    """
    if not normalizers.is_country_code(default_country_code):
        raise ConfigError(f"default country code must be 1-3 digits, got {default_country_code!r}")
    known = None if fields is None else {f.upper() for f in fields} | set(BUILTIN_FIELDS)
    options = Options(default_country_code=default_country_code)
    nodes = parse(template)
    component: encoding.Component = "text"
    try:
        if url:
            component = _check_start(template, nodes)
        parts: list[str | Segment] = []
        slots: list[Slot] = []
        lines = LineIndex(template)
        for index, node in enumerate(nodes):
            if isinstance(node, Text):
                text, start = node.value, node.start
                if url:
                    if index == 0:
                        skip = encoding.check_authority(text, len(nodes) > 1)
                        text, start = text[skip:], start + skip
                        encoding.check_literal(node.value[:skip], node.start)
                    encoding.check_literal(text, start)
                    component = encoding.advance(component, text, start)
                parts.append(node.value)
                continue
            steps, raw = _resolve_calls(template, node.calls, known, options)
            field = _resolve_field(template, node, known)
            parts.append(_segment(field, node.field.word, steps, encoding.encoder(component, raw=raw)))
            line, column = lines.position(node.start)
            names = tuple(c.name for c in node.calls)
            slots.append(Slot(template[node.start : node.end], field, names, component, line, column))
    except encoding.LayoutError as exc:
        raise error_at(template, exc.offset, str(exc), text=exc.text) from None
    return Template(template, url=url, parts=parts, slots=tuple(slots))


def _check_start(template: str, nodes: tuple[Node, ...]) -> encoding.Component:
    if not nodes or isinstance(nodes[0], Shortcode):
        raise encoding.LayoutError("a URL template must start with literal http:// or https://", 0, "")
    return "path"


def _suggest(name: str, candidates: Collection[str]) -> tuple[str, ...]:
    return tuple(difflib.get_close_matches(name, sorted(candidates), n=3, cutoff=0.6))


def _did_you_mean(suggestions: tuple[str, ...]) -> str:
    return " — did you mean " + " or ".join(f"`{s}`" for s in suggestions) + "?" if suggestions else ""


def _resolve_field(template: str, node: Shortcode, known: set[str] | None) -> str:
    name = node.field.name
    if known is None or name in known:
        return name
    suggestions = _suggest(name, known)
    hint = _did_you_mean(suggestions)
    if name in FUNCTIONS:
        hint = f" — `{name}` is a function: write a field after it, e.g. `[#{name} EMAIL#]`"
    raise error_at(
        template, node.field.start, f"unknown field `{name}`", hint=hint, text=name, suggestions=suggestions
    )


def _resolve_calls(
    template: str, calls: tuple[Call, ...], known: set[str] | None, options: Options
) -> tuple[tuple[Step, ...], bool]:
    steps: list[Step] = []
    raw = False
    for call in reversed(calls):  # right to left: the function next to the field runs first
        fn = FUNCTIONS.get(call.name)
        if fn is None:
            suggestions = _suggest(call.name, FUNCTIONS)
            hint = _did_you_mean(suggestions)
            if call.name in (known if known is not None else BUILTIN_FIELDS):
                hint = f" — `{call.name}` is a field: the field must be the last name in `[# … #]`"
            raise error_at(
                template,
                call.start,
                f"unknown function `{call.name}`",
                hint=hint,
                text=call.name,
                suggestions=suggestions,
            )
        if fn.raw:
            raw = True
            continue
        steps.append(fn.make(_check_args(template, call, fn), options))
    return tuple(steps), raw


def _check_args(template: str, call: Call, fn: Function) -> list[object]:
    if not fn.required <= len(call.args) <= len(fn.params):
        count = f"{fn.required}" if fn.required == len(fn.params) else f"{fn.required} to {len(fn.params)}"
        plural = "" if count == "1" else "s"
        offset = call.args[len(fn.params)].start if len(call.args) > len(fn.params) else call.start
        raise error_at(
            template,
            offset,
            f"`{fn.name}` takes {count} argument{plural} (`{fn.signature}`), got {len(call.args)}",
            text=fn.name,
        )
    values: list[object] = [
        _check_arg(template, fn, p, a) for p, a in zip(fn.params, call.args, strict=False)
    ]
    return values + [p.default for p in fn.params[len(call.args) :]]


def _check_arg(template: str, fn: Function, param: Param, arg: Arg) -> object:
    def bad(message: str, offset: int | None = None) -> TemplateError:
        where = arg.start if offset is None else offset
        return error_at(template, where, f"`{fn.name}` {param.name}: {message}", text=arg.value)

    if param.kind == "int":
        if not _INT.fullmatch(arg.value):
            raise bad(f"expected a whole number, got `{arg.value}`")
        number = int(arg.value)
        if param.minimum is not None and number < param.minimum:
            raise bad(f"must be at least {param.minimum}, got {number}")
        if param.maximum is not None and number > param.maximum:
            raise bad(f"must be at most {param.maximum}, got {number}")
        return number
    if param.kind == "country_code":
        if not normalizers.is_country_code(arg.value):
            raise bad(f"a country calling code is 1-3 digits (44, 1, 353), got `{arg.value}`")
        return arg.value
    if param.minimum is not None and len(arg.value) < param.minimum:
        raise bad("must not be empty")
    if param.kind == "date_format":
        try:
            datetimes.compile_format(arg.value)
        except datetimes.FormatSyntaxError as exc:
            raise bad(str(exc), None if arg.escaped else arg.content_start + exc.index) from None
    return arg.value


@functools.lru_cache(maxsize=1024)
def _cached(template: str, fields: frozenset[str] | None, url: bool, default_country_code: str) -> Template:
    return compile(template, fields, url=url, default_country_code=default_country_code)


def render(
    template: str,
    context: Mapping[str, object],
    *,
    fields: Collection[str] | None = None,
    now: datetime | None = None,
    url: bool = True,
    default_country_code: str = "1",
) -> str:
    """Compile (through a bounded cache of 1,024 templates) and render in one call."""
    frozen = None if fields is None else frozenset(fields)
    return _cached(template, frozen, url, default_country_code).render(context, now=now)
