"""Hand-written lexer and parser: template text → a flat tuple of AST nodes.

The grammar (spec/shortcodes.md)::

    template  := ( text | shortcode )*
    shortcode := "[#" ws* ( function ws+ )* field ws* "#]"
    function  := NAME ( ":" arg )*
    field     := NAME ( "/" ["-"] DIGITS )?
    NAME      := letter ( letter | digit | "_" | "-" )*       case-insensitive
    arg       := '"' ( any char, \\" and \\\\ escaped )* '"'  |  bare run of chars other than ws, ':' and '#'

Names are ASCII (``letter`` is ``A-Z``/``a-z``) and upper-cased here, so everything downstream
compares upper-case keys. ``ws`` is space, tab, CR or LF. The parser knows nothing about which
names exist: resolving functions and fields is :mod:`.template`'s job, so this module stays a pure
syntax check whose every error points at a character.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from contactsync.errors import TemplateError

OPEN = "[#"
CLOSE = "#]"
_WS = frozenset(" \t\r\n")
_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_NAME_CHARS = _LETTERS | frozenset("0123456789_-")
_DIGITS = frozenset("0123456789")


@dataclass(frozen=True, slots=True)
class Text:
    """Literal template text, copied verbatim."""

    value: str
    start: int


@dataclass(frozen=True, slots=True)
class Arg:
    """One function argument; ``content_start`` is exact only when ``escaped`` is false."""

    value: str
    start: int
    end: int
    quoted: bool
    escaped: bool

    @property
    def content_start(self) -> int:
        """Offset of the argument's first character of content (after an opening quote)."""
        return self.start + 1 if self.quoted else self.start


@dataclass(frozen=True, slots=True)
class Call:
    """A function applied to the field (``LEFT:3``); ``name`` is upper-cased."""

    name: str
    args: tuple[Arg, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class FieldRef:
    """The field of a shortcode, with the optional ``/N`` word selector."""

    name: str
    word: int | None
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Shortcode:
    """``[#F G FIELD#]``: ``calls`` in source order (applied right to left)."""

    calls: tuple[Call, ...]
    field: FieldRef
    start: int
    end: int


Node = Text | Shortcode


def position(template: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset; columns count characters, not bytes."""
    offset = max(0, min(offset, len(template)))
    line = template.count("\n", 0, offset) + 1
    line_start = template.rfind("\n", 0, offset) + 1
    return line, offset - line_start + 1


class LineIndex:
    """(line, column) of many offsets of one template in O(log n) each (long templates, many slots)."""

    def __init__(self, template: str) -> None:
        self._starts = [0] + [i + 1 for i, char in enumerate(template) if char == "\n"]

    def position(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self._starts, offset)
        return line, offset - self._starts[line - 1] + 1


def error_at(
    template: str,
    offset: int,
    message: str,
    *,
    hint: str = "",
    text: str = "",
    suggestions: tuple[str, ...] = (),
) -> TemplateError:
    """A TemplateError reading ``<message> at <line>:<column><hint>``, as editors expect."""
    line, column = position(template, offset)
    return TemplateError(
        f"{message} at {line}:{column}{hint}",
        template=template,
        line=line,
        column=column,
        text=text,
        suggestions=suggestions,
    )


def parse(template: str) -> tuple[Node, ...]:
    """Split ``template`` into text and shortcode nodes; raise TemplateError on bad syntax."""
    nodes: list[Node] = []
    i = 0
    while i < len(template):
        j = template.find(OPEN, i)
        if j < 0:
            nodes.append(Text(template[i:], i))
            break
        if j > i:
            nodes.append(Text(template[i:j], i))
        node, i = _Parser(template, j).shortcode()
        nodes.append(node)
    return tuple(nodes)


@dataclass
class _Term:
    name: str
    start: int
    end: int
    args: list[Arg]
    word: int | None
    has_colon: bool


class _Parser:
    """Parses one shortcode starting at ``start`` (which holds ``[#``)."""

    def __init__(self, template: str, start: int) -> None:
        self.t = template
        self.start = start
        self.pos = start + len(OPEN)

    def fail(self, offset: int, message: str, text: str = "") -> TemplateError:
        return error_at(self.t, offset, message, text=text)

    def peek(self) -> str:
        return self.t[self.pos] if self.pos < len(self.t) else ""

    def at_close(self) -> bool:
        return self.t.startswith(CLOSE, self.pos)

    def skip_ws(self) -> bool:
        begin = self.pos
        while self.pos < len(self.t) and self.t[self.pos] in _WS:
            self.pos += 1
        return self.pos > begin

    def unclosed(self) -> TemplateError:
        return self.fail(self.start, "unclosed shortcode: `[#` without a matching `#]`", OPEN)

    def shortcode(self) -> tuple[Shortcode, int]:
        terms: list[_Term] = []
        self.skip_ws()
        if self.at_close():
            raise self.fail(self.start, "empty shortcode: `[#` needs a field name before `#]`", OPEN + CLOSE)
        while True:
            terms.append(self.term())
            separated = self.skip_ws()
            if self.at_close():
                break
            if not self.peek():
                raise self.unclosed()
            if not separated:
                char = self.peek()
                raise self.fail(
                    self.pos, f"unexpected `{char}` in shortcode (expected a space or `#]`)", char
                )
        end = self.pos + len(CLOSE)
        field_term = terms[-1]
        if field_term.has_colon:
            raise self.fail(
                field_term.start,
                f"`{field_term.name}` has arguments, so it is a function; a field must follow it",
                field_term.name,
            )
        calls: list[Call] = []
        for term in terms[:-1]:
            if term.word is not None:
                raise self.fail(
                    term.start, f"`/N` word selection belongs to the field, not `{term.name}`", term.name
                )
            calls.append(Call(term.name, tuple(term.args), term.start, term.end))
        field = FieldRef(field_term.name, field_term.word, field_term.start, field_term.end)
        return Shortcode(tuple(calls), field, self.start, end), end

    def term(self) -> _Term:
        begin = self.pos
        char = self.peek()
        if not char:
            raise self.unclosed()
        if char not in _LETTERS:
            raise self.fail(
                begin, f"expected a field or function name (starting with A-Z), found `{char}`", char
            )
        while self.pos < len(self.t) and self.t[self.pos] in _NAME_CHARS:
            self.pos += 1
        name = self.t[begin : self.pos].upper()
        name_end = self.pos
        args: list[Arg] = []
        has_colon = False
        while self.peek() == ":":
            has_colon = True
            self.pos += 1
            args.append(self.arg())
        word: int | None = None
        if self.peek() == "/":
            if has_colon:
                raise self.fail(self.pos, f"`/N` word selection cannot follow the arguments of `{name}`", "/")
            word = self.word()
        return _Term(name, begin, name_end, args, word, has_colon)

    def word(self) -> int:
        slash = self.pos
        self.pos += 1
        sign = 1
        if self.peek() == "-":
            sign = -1
            self.pos += 1
        digits_start = self.pos
        while self.pos < len(self.t) and self.t[self.pos] in _DIGITS:
            self.pos += 1
        digits = self.t[digits_start : self.pos]
        if not digits:
            raise self.fail(self.pos, "`/` must be followed by a word number such as `/2` or `/-1`", "/")
        if int(digits) == 0:
            raise self.fail(slash, "word numbers start at 1 (`/1` is the first word, `/-1` the last)", "/0")
        return sign * int(digits)

    def arg(self) -> Arg:
        begin = self.pos
        if self.peek() == '"':
            return self.quoted(begin)
        while self.pos < len(self.t) and self.t[self.pos] not in _WS and self.t[self.pos] not in ":#":
            self.pos += 1
        if self.pos == begin:
            if not self.peek():
                raise self.unclosed()
            raise self.fail(begin, 'empty argument after `:` (write `""` for an empty text)', ":")
        return Arg(self.t[begin : self.pos], begin, self.pos, quoted=False, escaped=False)

    def quoted(self, begin: int) -> Arg:
        self.pos += 1
        chars: list[str] = []
        escaped = False
        while True:
            char = self.peek()
            if not char:
                raise self.fail(begin, 'unterminated quoted argument: `"` without a closing `"`', '"')
            if char == '"':
                self.pos += 1
                break
            if char == "\\":
                nxt = self.t[self.pos + 1 : self.pos + 2]
                if nxt not in ('"', "\\"):
                    raise self.fail(
                        self.pos, 'unknown escape in a quoted argument (only \\" and \\\\)', "\\" + nxt
                    )
                chars.append(nxt)
                escaped = True
                self.pos += 2
                continue
            chars.append(char)
            self.pos += 1
        return Arg("".join(chars), begin, self.pos, quoted=True, escaped=escaped)
