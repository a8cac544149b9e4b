"""Resource paths: ``accounts``, ``accounts(<guid>)``, ``accounts(accountnumber='X')``.

Key predicates are read with the ``$filter`` tokenizer, so quoting rules ('' for a quote)
and literal spellings are the same in keys, binds and filters."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from worker.emulator.filters import FilterError, Token, tokenize

SERVICE_PATH = "/api/data/v9.2"

_RESOURCE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\((.*)\))?$", re.DOTALL)


@dataclass(frozen=True)
class EntityRef:
    """A reference to one record: by primary key, or by alternate key values."""

    set_name: str
    key: str | None = None
    alternate: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Resource:
    """A parsed resource path below the service root: a set, maybe one record in it."""

    set_name: str
    ref: EntityRef | None


class BadKey(ValueError):
    """A key predicate that does not parse."""


def parse_resource(path: str) -> Resource | None:
    """``accounts`` or ``accounts(<key>)`` (already relative to the service root)."""
    match = _RESOURCE.match(path)
    if match is None:
        return None
    set_name, inner = match.group(1), match.group(2)
    if inner is None:
        return Resource(set_name, None)
    return Resource(set_name, parse_key(set_name, inner))


def parse_key(set_name: str, inner: str) -> EntityRef:
    """The key between the parentheses: a GUID, or ``name=literal`` pairs."""
    try:
        tokens = tokenize(inner)
    except FilterError as exc:
        raise BadKey(str(exc)) from exc
    if len(tokens) == 2 and tokens[0].kind == "guid":
        return EntityRef(set_name, key=tokens[0].value)
    rest = tokens[:-1]  # without the end token
    if len(rest) % 4 != 3:
        raise BadKey(f"bad key predicate '{inner}'")
    pairs: list[tuple[str, Any]] = []
    for index in range(0, len(rest), 4):
        name, equals, value = rest[index: index + 3]
        separator = rest[index + 3] if index + 3 < len(rest) else None
        if (name.kind != "name" or equals.text != "=" or not _is_literal(value)
                or (separator is not None and separator.text != ",")):
            raise BadKey(f"bad key predicate '{inner}'")
        pairs.append((name.text, _literal_value(value)))
    return EntityRef(set_name, alternate=tuple(pairs))


def _is_literal(token: Token) -> bool:
    return token.kind in ("string", "number", "guid", "datetime") or (
        token.kind == "name" and token.text in ("true", "false"))


def _literal_value(token: Token) -> Any:
    return token.text == "true" if token.kind == "name" else token.value


def parse_entity_ref(text: str) -> EntityRef | None:
    """The record an ``@odata.bind`` value names: ``/accounts(<guid>)``, ``accounts(...)``
    or an absolute URL ending in the same; None when it is not such a reference."""
    text = unquote(text)
    marker = text.find(SERVICE_PATH + "/")
    if marker >= 0:
        text = text[marker + len(SERVICE_PATH) + 1:]
    text = text.lstrip("/")
    try:
        resource = parse_resource(text)
    except BadKey:
        return None
    return resource.ref if resource is not None else None
