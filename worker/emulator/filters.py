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
String comparisons ignore case, as Dataverse's database collation does.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.emulator import errors
from worker.emulator.literals import parse_datetime
from worker.emulator.schema import EdmType, EntitySet

Record = Mapping[str, Any]
Predicate = Callable[[Record], bool]

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
    EdmType.DECIMAL: "number", EdmType.DOUBLE: "number",
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
            value = float(raw) if any(c in raw for c in ".eE") else int(raw)
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
class _Expr:
    """A typed sub-expression: ``kind`` is string/guid/number/bool/datetime/null.

    String expressions evaluate to case-folded text (done once, at the leaves: properties
    and literals), which is how comparisons and functions come to ignore case."""

    kind: str
    evaluate: Callable[[Record], Any]


class _Parser:
    def __init__(self, text: str, entity_set: EntitySet) -> None:
        self.tokens = tokenize(text)
        self.index = 0
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

    def parse(self) -> Predicate:
        expr = self.parse_or()
        if self.current.kind != "end":
            raise FilterError(f"unexpected '{self.current.text}'", self.current.position)
        self.require_bool(expr, 0)
        evaluate = expr.evaluate
        return lambda record: bool(evaluate(record))

    def parse_or(self) -> _Expr:
        left = self.parse_and()
        while self.at_word("or"):
            position = self.advance().position
            right = self.parse_and()
            left = self.logical(left, right, position, is_or=True)
        return left

    def parse_and(self) -> _Expr:
        left = self.parse_unary()
        while self.at_word("and"):
            position = self.advance().position
            right = self.parse_unary()
            left = self.logical(left, right, position, is_or=False)
        return left

    def logical(self, left: _Expr, right: _Expr, position: int, *, is_or: bool) -> _Expr:
        self.require_bool(left, position)
        self.require_bool(right, position)
        lf, rf = left.evaluate, right.evaluate
        if is_or:
            return _Expr("bool", lambda r: lf(r) or rf(r))
        return _Expr("bool", lambda r: lf(r) and rf(r))

    def parse_unary(self) -> _Expr:
        if self.at_word("not"):
            position = self.advance().position
            operand = self.parse_unary()
            self.require_bool(operand, position)
            inner = operand.evaluate
            return _Expr("bool", lambda r: not inner(r))
        return self.parse_comparison()

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

        return _Expr("bool", evaluate)

    def parse_operand(self) -> _Expr:
        token = self.current
        if token.kind == "punct" and token.text == "(":
            self.advance()
            expr = self.parse_or()
            self.expect(")")
            return expr
        if token.kind == "name":
            self.advance()
            if token.text in _FUNCTIONS:
                return self.function(token)
            if token.text in _LITERAL_WORDS:
                kind, value = _LITERAL_WORDS[token.text]
                return _Expr(kind, lambda r: value)
            return self.property(token)
        if token.kind in ("string", "number", "guid", "datetime"):
            self.advance()
            value = token.value.casefold() if token.kind == "string" else token.value
            return _Expr(token.kind, lambda r: value)
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
            return _Expr(kind, lambda r: None if (v := r.get(name)) is None else v.casefold())
        return _Expr(kind, lambda r: r.get(name))

    def function(self, token: Token) -> _Expr:
        self.expect("(")
        args = [self.parse_or()]
        while self.current.text == ",":
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

    def require_bool(self, expr: _Expr, position: int) -> None:
        if expr.kind != "bool":
            raise FilterError(f"a boolean expression is required, found {expr.kind}", position)


def compile_filter(text: str, entity_set: EntitySet) -> Predicate:
    """The predicate of a ``$filter`` over ``entity_set``; raises ``FilterError``."""
    return _Parser(text, entity_set).parse()


def parse_filter(text: str, entity_set: EntitySet) -> Predicate:
    """``compile_filter``, with errors in Dataverse's shape (400, syntax error code)."""
    try:
        return compile_filter(text, entity_set)
    except FilterError as exc:
        where = f" at position {exc.position}" if exc.position is not None else ""
        raise errors.bad_query(f"Syntax error: {exc}{where} in '{text}'.") from exc
