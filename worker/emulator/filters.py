"""``$filter``: a tokenizer and a recursive-descent parser compiling to a predicate.

Grammar (lowest precedence first), the subset of OData v4 that Dataverse clients use::

    expr       := and_expr ("or" and_expr)*
    and_expr   := unary ("and" unary)*
    unary      := "not" unary | comparison
    comparison := operand (("eq"|"ne"|"gt"|"ge"|"lt"|"le") operand)?
    operand    := "(" expr ")" | function "(" expr ("," expr)* ")" | literal | property
    function   := "contains" | "startswith" | "endswith"
    literal    := 'string' (with '' for a quote) | number | true | false | null
                | 2026-11-25T10:00:00Z | 2026-11-25 | GUID

Operand types are checked while parsing, so ``accountid eq 'x'`` is a 400 as on Dataverse.
String comparisons ignore case, as Dataverse's database collation does. Numbers are exact
(``Decimal``), as the stored values are.

Nothing a client sends can exhaust the stack: ``and``/``or`` chains of any length are parsed
and evaluated as flat lists, a run of ``not`` is counted rather than recursed into, and
parentheses and function calls nest at most ``MAX_DEPTH`` deep (a 400 beyond).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from worker.emulator import errors
from worker.emulator.literals import parse_datetime
from worker.emulator.schema import EdmType, EntitySet

Record = Mapping[str, Any]
Predicate = Callable[[Record], bool]

MAX_DEPTH = 100  # parentheses and function calls; each level costs a few stack frames
_MAX_DIGITS = 40  # an integer literal longer than this cannot match any stored number
_MAX_EXPONENT = 1000

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?![\w-])
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))(?![\w:])
  | (?P<date>\d{4}-\d{2}-\d{2})(?![\w:-])
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)[mMdDlL]?(?![\w.])
  | (?P<string>'(?:[^']|'')*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[(),=])
""", re.VERBOSE)

_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt,
    "ge": operator.ge, "lt": operator.lt, "le": operator.le,
}
_FUNCTIONS: dict[str, Callable[[str, str], bool]] = {
    "contains": lambda text, part: part in text,
    "startswith": str.startswith,
    "endswith": str.endswith,
}
_LITERAL_WORDS: dict[str, tuple[str, Any]] = {
    "true": ("bool", True), "false": ("bool", False), "null": ("null", None),
}
_EDM_KIND = {
    EdmType.STRING: "string", EdmType.GUID: "guid", EdmType.BOOLEAN: "bool",
    EdmType.DATETIME: "datetime", EdmType.INT32: "number", EdmType.INT64: "number",
    EdmType.DECIMAL: "number", EdmType.DOUBLE: "number", EdmType.DATE: "datetime",
}


class FilterError(ValueError):
    """A filter that does not parse or does not type-check; ``position`` is 0-based."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


@dataclass(frozen=True)
class Token:
    """A lexical token; ``value`` is the literal's Python value (None for names/punct)."""

    kind: str  # guid, datetime, date, number, string, name, punct, end
    text: str
    value: Any
    position: int


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, ending with an ``end`` token."""
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            if text[position] == "'":
                raise FilterError("Unterminated string literal", position)
            raise FilterError(f"character '{text[position]}' is not valid", position)
        kind = match.lastgroup or ""
        raw = match.group(kind)
        position = match.end()
        if kind == "ws":
            continue
        value: Any = None
        if kind == "string":
            value = raw[1:-1].replace("''", "'")
        elif kind == "number":
            value = _number(raw, match.start())
        elif kind == "guid":
            value = raw.lower()
        elif kind in ("datetime", "date"):
            try:
                value = parse_datetime(raw)
            except ValueError as exc:
                raise FilterError(f"'{raw}' is not a valid date-time", match.start()) from exc
            kind = "datetime"
        tokens.append(Token(kind, raw, value, match.start()))
    tokens.append(Token("end", "", None, len(text)))
    return tokens


@dataclass(frozen=True)
class Comparison:
    """``name op value``: a property compared with a literal (the property written on
    either side; ``op`` is turned around when it stood on the right). Strings are
    case-folded, GUIDs lower case, as the predicate compares them."""

    name: str
    op: str
    value: Any


@dataclass(frozen=True)
class AllOf:
    """Every term holds (``and``); a term of None is one the planner cannot use."""

    terms: tuple[Shape | None, ...]


@dataclass(frozen=True)
class AnyOf:
    """Some term holds (``or``)."""

    terms: tuple[Shape | None, ...]


Shape = Comparison | AllOf | AnyOf
_FLIPPED = {"eq": "eq", "ne": "ne", "gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}


@dataclass(frozen=True)
class _Expr:
    """A typed sub-expression: ``kind`` is string/guid/number/bool/datetime/null.

    String expressions evaluate to case-folded text (done once, at the leaves: properties
    and literals), which is how comparisons and functions come to ignore case. ``shape``
    is what an index planner can read of it (``worker.emulator.access``); ``prop`` names
    the property a bare property reference reads, ``literal`` marks a literal."""

    kind: str
    evaluate: Callable[[Record], Any]
    shape: Shape | None = None
    prop: str | None = None
    literal: bool = False
    value: Any = None


class _Parser:
    def __init__(self, text: str, entity_set: EntitySet) -> None:
        self.tokens = tokenize(text)
        self.index = 0
        self.depth = 0
        self.entity_set = entity_set

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def at_word(self, *words: str) -> bool:
        return self.current.kind == "name" and self.current.text in words

    def expect(self, text: str) -> None:
        if self.current.text != text or self.current.kind not in ("punct", "name"):
            raise FilterError(f"'{text}' expected", self.current.position)
        self.advance()

    def parse(self) -> tuple[Predicate, Shape | None]:
        expr = self.parse_or()
        if self.current.kind != "end":
            raise FilterError(f"unexpected '{self.current.text}'", self.current.position)
        self.require_bool(expr, 0)
        evaluate = expr.evaluate
        return (lambda record: bool(evaluate(record))), expr.shape

    def parse_or(self) -> _Expr:
        return self.chain("or", self.parse_and, any)

    def parse_and(self) -> _Expr:
        return self.chain("and", self.parse_unary, all)

    def chain(self, word: str, parse_term: Callable[[], _Expr],
              combine: Callable[[Iterable[Any]], bool]) -> _Expr:
        """``term (word term)*`` as one flat list (no nesting, whatever its length)."""
        first = parse_term()
        terms = [first]
        while self.at_word(word):
            position = self.advance().position
            self.require_bool(terms[-1], position)
            terms.append(parse_term())
            self.require_bool(terms[-1], position)
        if len(terms) == 1:
            return first
        evaluators = tuple(t.evaluate for t in terms)
        shapes = tuple(t.shape for t in terms)
        return _Expr("bool", lambda r: combine(e(r) for e in evaluators),
                     AllOf(shapes) if word == "and" else AnyOf(shapes))

    def parse_unary(self) -> _Expr:
        """``not* comparison``: the run of ``not`` is counted, not recursed into."""
        negations, position = 0, self.current.position
        while self.at_word("not"):
            position = self.advance().position
            negations += 1
        operand = self.parse_comparison()
        if not negations:
            return operand
        self.require_bool(operand, position)
        if negations % 2 == 0:
            return _Expr("bool", operand.evaluate, operand.shape)
        inner = operand.evaluate
        return _Expr("bool", lambda r: not inner(r))

    def parse_comparison(self) -> _Expr:
        left = self.parse_operand()
        if not self.at_word(*_COMPARISONS):
            return left
        token = self.advance()
        right = self.parse_operand()
        return self.comparison(token, left, right)

    def comparison(self, token: Token, left: _Expr, right: _Expr) -> _Expr:
        kinds = {left.kind, right.kind} - {"null"}
        if len(kinds) > 1:
            a, b = sorted(kinds)
            raise FilterError(f"A binary operator with incompatible types was detected. "
                              f"Found operand types '{a}' and '{b}' for operator '{token.text}'",
                              token.position)
        compare = _COMPARISONS[token.text]
        lf, rf = left.evaluate, right.evaluate
        null_result = {"eq": True, "ne": False}.get(token.text)

        def evaluate(record: Record) -> bool:
            a, b = lf(record), rf(record)
            if a is None or b is None:
                # SQL-like: ordering against null is false; eq/ne compare null-ness.
                if null_result is None:
                    return False
                return (a is None and b is None) == null_result
            return compare(a, b)

        return _Expr("bool", evaluate, _comparison_shape(token.text, left, right))

    def parse_operand(self) -> _Expr:
        token = self.current
        if token.kind == "punct" and token.text == "(":
            self.advance()
            with self.nested(token):
                expr = self.parse_or()
            self.expect(")")
            return expr
        if token.kind == "name":
            self.advance()
            if token.text in _FUNCTIONS:
                return self.function(token)
            if token.text in _LITERAL_WORDS:
                kind, value = _LITERAL_WORDS[token.text]
                return _Expr(kind, lambda r: value, literal=True, value=value)
            return self.property(token)
        if token.kind in ("string", "number", "guid", "datetime"):
            self.advance()
            value = token.value.casefold() if token.kind == "string" else token.value
            return _Expr(token.kind, lambda r: value, literal=True, value=value)
        if token.kind == "end":
            raise FilterError("unexpected end of expression", token.position)
        raise FilterError(f"unexpected '{token.text}'", token.position)

    def property(self, token: Token) -> _Expr:
        prop = self.entity_set.properties.get(token.text)
        if prop is None:
            raise FilterError(f"Could not find a property named '{token.text}' on type "
                              f"'Microsoft.Dynamics.CRM.{self.entity_set.entity_type}'",
                              token.position)
        name, kind = prop.name, _EDM_KIND[prop.type]
        if kind == "string":
            return _Expr(kind, lambda r: None if (v := r.get(name)) is None else v.casefold(),
                         prop=name)
        if prop.type is EdmType.DATE:  # compared as midnight UTC, like a date literal
            return _Expr(kind, lambda r: None if (v := r.get(name)) is None
                         else datetime(v.year, v.month, v.day, tzinfo=UTC))
        return _Expr(kind, lambda r: r.get(name), prop=name)

    def function(self, token: Token) -> _Expr:
        self.expect("(")
        with self.nested(token):
            args = [self.parse_or()]
            while self.current.text == "," and self.current.kind == "punct":
                self.advance()
                args.append(self.parse_or())
        self.expect(")")
        if len(args) != 2 or any(a.kind not in ("string", "null") for a in args):
            raise FilterError(f"{token.text} takes two string arguments", token.position)
        test = _FUNCTIONS[token.text]
        hay, needle = args[0].evaluate, args[1].evaluate

        def evaluate(record: Record) -> bool:
            text, part = hay(record), needle(record)
            if text is None or part is None:
                return False
            return test(text, part)

        return _Expr("bool", evaluate)

    @contextmanager
    def nested(self, token: Token) -> Iterator[None]:
        """One level of parentheses; refused beyond ``MAX_DEPTH``."""
        if self.depth >= MAX_DEPTH:
            raise FilterError(f"the expression nests more than {MAX_DEPTH} levels deep",
                              token.position)
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def require_bool(self, expr: _Expr, position: int) -> None:
        if expr.kind != "bool":
            raise FilterError(f"a boolean expression is required, found {expr.kind}", position)


def _comparison_shape(op: str, left: _Expr, right: _Expr) -> Comparison | None:
    """``property op literal`` (either way round) as a Comparison; None otherwise (two
    properties, a null, a function)."""
    if left.prop is not None and right.literal and right.value is not None:
        return Comparison(left.prop, op, right.value)
    if right.prop is not None and left.literal and left.value is not None:
        return Comparison(right.prop, _FLIPPED[op], left.value)
    return None


def _number(raw: str, position: int) -> int | Decimal:
    """A numeric literal, exactly (``Decimal`` with a fraction or exponent)."""
    if any(c in raw for c in ".eE"):
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise FilterError(f"'{raw[:40]}' is not a number", position) from None
        if not value.is_finite() or abs(value.adjusted()) > _MAX_EXPONENT:
            raise FilterError(f"'{raw[:40]}' is out of range", position)
        return value
    if len(raw.lstrip("-")) > _MAX_DIGITS:
        raise FilterError(f"'{raw[:40]}...' has more than {_MAX_DIGITS} digits", position)
    return int(raw)


def compile_filter(text: str, entity_set: EntitySet) -> Predicate:
    """The predicate of a ``$filter`` over ``entity_set``; raises ``FilterError``."""
    return _Parser(text, entity_set).parse()[0]


def parse_filter(text: str, entity_set: EntitySet) -> tuple[Predicate, Shape | None]:
    """The predicate and the shape of a ``$filter``, with errors in Dataverse's shape (400,
    syntax error code)."""
    try:
        return _Parser(text, entity_set).parse()
    except FilterError as exc:
        where = f" at position {exc.position}" if exc.position is not None else ""
        shown = text if len(text) <= 200 else text[:200] + "..."
        raise errors.bad_query(f"Syntax error: {exc}{where} in '{shown}'.") from exc
