"""The local (ERP) side of a mapping: a reflected table, its structured filter, and the
bulk reads and writes a pass does. Values are always bound parameters; column names come
from the reflected table, never from text pasted into SQL."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

from worker.db.engine import text_array
from worker.errors import ConfigurationError


@dataclass(frozen=True)
class Unreadable:
    """A column value the driver cannot load into Python (a date after year 9999,
    ``'infinity'``): it stands in the row in place of the value, so the record that holds
    it fails alone, naming the column, when it is used."""

    column: str
    text: str

    def __str__(self) -> str:
        return f"column {self.column} holds {self.text!r}, which cannot be read"


FILTER_OPERATORS = ("eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "like", "is_null",
                    "not_null")


class LocalTable:
    """A mapped ERP table, reflected from the database."""

    def __init__(self, engine: Engine | Connection, qualified_name: str, key: str,
                 mapping: str = "?", tables: Reflections | None = None) -> None:
        self.mapping = mapping
        try:
            self.table = (tables or Reflections()).table(engine, qualified_name, key)
        except sa_exc.NoSuchTableError as exc:
            raise ConfigurationError(
                f"mapping {mapping}: local_table {qualified_name} does not exist") from exc
        self.name = qualified_name
        self.key = self.column(key, "local_key")
        self._fetch_cache: tuple[sa.ColumnElement[bool] | None, sa.Select[Any]] | None = None

    def column(self, name: str, what: str = "local_column") -> sa.Column:
        if name not in self.table.c:
            raise ConfigurationError(
                f"mapping {self.mapping}: {what} {name!r} is not a column of {self.name}")
        return self.table.c[name]

    def max_length(self, name: str) -> int | None:
        length = getattr(self.table.c[name].type, "length", None)
        return length if isinstance(length, int) else None

    def key_value(self, text: str) -> Any:
        """A coupling's local id (text) as a value of the key column's type; a text that
        is no such value (ids coupled under another local_key) is a configuration error."""
        try:
            if isinstance(self.key.type, sa.Uuid):
                return uuid.UUID(text)
            python_type = _python_type(self.key)
            return python_type(text) if python_type in (int,) else text
        except ValueError:
            raise ConfigurationError(
                f"mapping {self.mapping}: local_key {self.key.name}: the local id {text!r} is "
                f"not a {self.key.type} value (was local_key changed after records were "
                "coupled? see crmsync check)") from None

    def filter_clause(self, conditions: Sequence[Mapping[str, Any]]) -> sa.ColumnElement[bool]:
        """The mapping's local_filter as a WHERE clause: a list of {column, op, value},
        all of which must hold."""
        clauses: list[sa.ColumnElement[bool]] = [sa.true()]
        for n, cond in enumerate(conditions):
            where = f"mapping {self.mapping}: local_filter[{n}]"
            if not isinstance(cond, Mapping) or "column" not in cond:
                raise ConfigurationError(f"{where}: expected {{column, op, value}}, got {cond!r}")
            column = self.column(str(cond["column"]), f"{where}.column")
            op = cond.get("op", "eq")
            value = cond.get("value")
            if op not in FILTER_OPERATORS:
                raise ConfigurationError(
                    f"{where}.op: {op!r} is not one of {', '.join(FILTER_OPERATORS)}")
            if op in ("in", "not_in") and not isinstance(value, list):
                raise ConfigurationError(f"{where}.value: {op} needs a list")
            clauses.append(_condition(column, op, value))
        return sa.and_(*clauses)

    # -- reads -------------------------------------------------------------------------
    def fetch(self, conn: Connection, keys: Iterable[str],
              where: sa.ColumnElement[bool] | None = None) -> dict[str, Any]:
        """Rows by key text (those that exist and match ``where``)."""
        texts = list(keys)
        if not texts:
            return {}
        literal = _key_literal(self, texts)
        if literal is None:
            query = sa.select(self.table).where(
                self.key == any_of(self.key, [self.key_value(k) for k in texts]))
            if where is not None:
                query = query.where(where)
            params = {}
        else:
            query, params = self._fetch_statement(where), {_FETCH_KEYS: literal}
        name = self.key.name
        try:
            # One fetchall: iterating the result would fetch (and convert) row by row.
            rows = conn.execute(query, params).mappings().all()
            return {str(row[name]): row for row in rows}
        except sa_exc.DataError as exc:
            if _server_error(exc):
                raise  # the query itself is wrong (and the transaction is aborted)
            # A value the driver cannot load fails the whole result; read row by row so
            # only the rows holding such a value carry Unreadable markers.
            return _fetch_one_by_one(self, conn, [self.key_value(k) for k in texts], where)

    def _fetch_statement(self, where: sa.ColumnElement[bool] | None) -> sa.Select[Any]:
        """The rows whose key is in the array literal bound as ``_FETCH_KEYS``, built once
        for the pass's ``where`` (a pass asks with the same one every chunk): a statement
        built anew each chunk costs its construction and its cache key (a walk over every
        column) before SQLAlchemy finds it compiled."""
        cached = self._fetch_cache
        if cached is not None and cached[0] is where:
            return cached[1]
        element = self.key.type if isinstance(self.key.type, sa.Uuid | sa.Integer) \
            else sa.Text()
        keys = sa.cast(sa.bindparam(_FETCH_KEYS, type_=sa.Text), postgresql.ARRAY(element))
        query = sa.select(self.table).where(self.key == sa.any_(keys))
        if where is not None:
            query = query.where(where)
        self._fetch_cache = (where, query)
        return query

    def stream_keys(self, engine: Engine, where: sa.ColumnElement[bool],
                    after: str | None = None) -> Iterator[str]:
        """Every key matching ``where`` (and greater than ``after``) in key order, read
        through a server-side cursor on a connection of its own while the caller works:
        a pass over a large table never holds all its keys."""
        query = sa.select(self.key).where(where).order_by(self.key)
        if after is not None:
            query = query.where(self.key > self.key_value(after))
        with engine.connect() as conn:
            result = conn.execute(query, execution_options={"stream_results": True,
                                                            "yield_per": 2000})
            for (key,) in result:
                yield str(key)

    def count_keys(self, conn: Connection, where: sa.ColumnElement[bool],
                   after: str | None = None) -> int:
        """How many keys :meth:`stream_keys` would give (a pass's total)."""
        query = sa.select(sa.func.count()).select_from(self.table).where(where)
        if after is not None:
            query = query.where(self.key > self.key_value(after))
        return int(conn.scalar(query) or 0)

    def keys_modified_since(self, conn: Connection, column: str, since: Any,
                            where: sa.ColumnElement[bool]) -> list[tuple[str, Any]]:
        col = self.column(column, "local_modified_column")
        query = sa.select(self.key, col).where(where).order_by(col, self.key)
        if since is not None:
            query = query.where(col >= since)
        try:
            return [(str(k), m) for k, m in conn.execute(query)]
        except sa_exc.DataError as exc:
            if _server_error(exc):
                raise
        # A stamp Python cannot hold ('infinity', year 10000): its row is read every pass
        # (its stamp is None, so it never moves the mark); the others as usual.
        loadable = sa.extract("year", col).between(2, 9998)
        shown = sa.case((loadable, col), else_=sa.null())
        query = sa.select(self.key, shown).where(where).order_by(col, self.key)
        if since is not None:
            query = query.where(col >= since)
        return [(str(k), m) for k, m in conn.execute(query)]

    def find_by(self, conn: Connection, column: str, values: Sequence[Any],
                case_sensitive: bool) -> dict[Any, list[str]]:
        """Keys of rows whose ``column`` equals one of ``values``, grouped by that value
        (lower-cased when not case-sensitive)."""
        col = self.column(column)
        wanted = list(values) if case_sensitive else [str(v).lower() for v in values]
        expr = col if case_sensitive else sa.func.lower(sa.cast(col, sa.Text))
        found: dict[Any, list[str]] = {}
        for key, value in conn.execute(sa.select(self.key, expr).where(expr.in_(wanted))):
            found.setdefault(value, []).append(str(key))
        return found

    # -- writes (in a transaction marked as crmsync's own) -----------------------------
    def insert(self, conn: Connection, key: str | None, values: Mapping[str, Any]) -> str:
        """Insert a row; ``key`` None lets the table's default choose it. Returns the key."""
        row = dict(values)
        if key is not None:
            row[self.key.name] = self.key_value(key)
        return str(conn.scalar(sa.insert(self.table).values(row).returning(self.key)))

    def insert_many(self, conn: Connection, rows: Sequence[tuple[str, Mapping[str, Any]]],
                    returning: Sequence[str] = ()) -> dict[str, Any]:
        """Insert rows whose keys the caller chose, one statement per set of columns; the
        ``returning`` columns of each new row by key text. All or nothing: a refused row
        fails the statement (the caller then inserts row by row to find it)."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for key, values in rows:
            row = {**values, self.key.name: self.key_value(key)}
            groups.setdefault(tuple(sorted(row)), []).append(row)
        out: dict[str, Any] = {}
        columns = [self.key, *(self.column(c) for c in returning)]
        for group in groups.values():
            # executemany with RETURNING: SQLAlchemy's "insertmanyvalues" sends pages of
            # multi-row INSERTs from one cached statement.
            statement = sa.insert(self.table).returning(*columns)
            for found in conn.execute(statement, group):
                out[str(found[0])] = found
        return out

    def chooses_own_keys(self) -> bool:
        """Whether crmsync can pick a new row's key itself: a UUID key, or a text key long
        enough for a UUID's text; other keys are left to the table's default."""
        if isinstance(self.key.type, sa.Uuid):
            return True
        length = getattr(self.key.type, "length", None)
        return isinstance(self.key.type, sa.String) and (length is None or length >= 36)

    def update(self, conn: Connection, key: str, values: Mapping[str, Any]) -> None:
        if values:
            conn.execute(sa.update(self.table).where(self.key == self.key_value(key))
                         .values(dict(values)))

    def delete(self, conn: Connection, key: str) -> int:
        return conn.execute(sa.delete(self.table).where(self.key == self.key_value(key))).rowcount


REFLECTION_TTL = 60.0


class Reflections:
    """Reflected tables of one database. Reflection costs a dozen catalog queries per
    table; a mapping run needs the same tables several times (its own, lookup targets, the
    check), so a table is reused for ``ttl`` seconds: a column added to an ERP table is seen
    within that time. Keyed by table and key column, so a mapping whose local_table or
    local_key was changed reflects again at once. The sync engine holds one; what is not
    given one reflects afresh."""

    def __init__(self, ttl: float = REFLECTION_TTL) -> None:
        self.ttl = ttl
        self._tables: dict[tuple[str, str], tuple[float, sa.Table]] = {}
        self._lock = threading.Lock()

    def table(self, engine: Engine | Connection, qualified_name: str,
              key_column: str) -> sa.Table:
        key = (qualified_name, key_column)
        now = time.monotonic()
        with self._lock:
            cached = self._tables.get(key)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        schema, _, name = qualified_name.partition(".")
        table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=engine)
        with self._lock:
            self._tables[key] = (now, table)
        return table

    def forget(self) -> None:
        """Reflect every table again at its next use (a check looks at them as they are)."""
        with self._lock:
            self._tables.clear()


def _fetch_one_by_one(t: LocalTable, conn: Connection, values: list[Any],
                      where: sa.ColumnElement[bool] | None) -> dict[str, Any]:
    """``LocalTable.fetch`` when a value the driver cannot load failed the whole result:
    row by row, so only the rows holding such a value carry Unreadable markers."""
    rows: dict[str, Any] = {}
    for value in values:
        query = sa.select(t.table).where(t.key == value)
        if where is not None:
            query = query.where(where)
        try:
            row: Any = conn.execute(query).mappings().first()
        except sa_exc.DataError as exc:
            if _server_error(exc):
                raise
            row = _read_column_by_column(t, conn, value)
        if row is not None:
            rows[str(row[t.key.name])] = row
    return rows


def _read_column_by_column(t: LocalTable, conn: Connection, value: Any) -> dict[str, Any] | None:
    """One row whose values do not all load: each column read alone, the ones that fail
    replaced by an Unreadable holding the database's text of the value."""
    texts = conn.execute(sa.select(*[sa.cast(c, sa.Text).label(c.name) for c in t.table.c])
                         .where(t.key == value)).mappings().first()
    if texts is None:
        return None
    row: dict[str, Any] = {}
    for column in t.table.c:
        try:
            row[column.name] = conn.scalar(sa.select(column).where(t.key == value))
        except sa_exc.DataError as exc:
            if _server_error(exc):
                raise
            row[column.name] = Unreadable(column.name, str(texts[column.name]))
    return row



def _key_literal(table: LocalTable, texts: list[str]) -> str | None:
    """These key texts as one array literal (:func:`~worker.db.engine.text_array`) for
    ``LocalTable._fetch_statement``, when the key is a UUID, an integer or text: UUIDs in
    their usual form checked by one regular expression over the whole (not a UUID object
    made and dumped per key), others converted and checked one by one by
    ``LocalTable.key_value``. None for other keys (sent as an array the driver dumps)."""
    if isinstance(table.key.type, sa.Uuid):
        literal = text_array(texts)
        if not _UUID_ARRAY.fullmatch(literal):
            literal = text_array([str(table.key_value(k)) for k in texts])
        return literal
    if isinstance(table.key.type, sa.Integer):
        return text_array([str(table.key_value(k)) for k in texts])
    if isinstance(table.key.type, sa.String) and _python_type(table.key) is str:
        return text_array(texts)
    return None


def any_of(column: sa.ColumnElement[Any], values: Sequence[Any]) -> Any:
    """``= ANY(:array)``: one array parameter of the column's type for a chunk's keys, in
    place of ``IN (…)`` with a parameter per key, which SQLAlchemy and the driver would
    render and convert anew for every chunk (the same plan: PostgreSQL turns an IN list
    into ``= ANY`` of an array). Texts for a text column go as one joined text
    (:func:`~worker.db.engine.text_array`), compared as ``text[]``."""
    if isinstance(column.type, sa.String) and all(type(v) is str for v in values):
        return sa.any_(sa.cast(sa.bindparam(None, text_array(values), type_=sa.Text),
                               postgresql.ARRAY(sa.Text)))
    return sa.any_(sa.bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))


_FETCH_KEYS = "crmsync_fetch_keys"
_HEX = "[0-9a-fA-F]"
_UUID = f'"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"'
# A text_array of UUIDs in their hyphenated form (what PostgreSQL gives and uuid.UUID
# reads alike): what _any_key sends as it is.
_UUID_ARRAY = re.compile(f"{{{_UUID}(?:,{_UUID})*}}")


def mark_own_writes(conn: Connection) -> None:
    """Tell the change-capture triggers that this transaction's writes are crmsync's own
    (echo suppression): they must not be sent back to the remote side."""
    conn.execute(sa.text("SELECT set_config('crmsync.origin', 'sync', true)"))


def _condition(column: sa.Column, op: str, value: Any) -> sa.ColumnElement[bool]:
    if op == "eq":
        return column == value
    if op == "ne":
        return column != value
    if op == "gt":
        return column > value
    if op == "ge":
        return column >= value
    if op == "lt":
        return column < value
    if op == "le":
        return column <= value
    if op == "in":
        return column.in_(value)
    if op == "not_in":
        return column.not_in(value)
    if op == "like":
        return column.like(value)
    if op == "is_null":
        return column.is_(None)
    return column.is_not(None)


def _server_error(exc: sa_exc.DBAPIError) -> bool:
    """Whether PostgreSQL raised the error (it has a SQLSTATE; the transaction is aborted),
    rather than the driver failing to load a value it received."""
    return getattr(getattr(exc.orig, "diag", None), "sqlstate", None) is not None


def _python_type(column: sa.Column) -> type:
    try:
        return column.type.python_type
    except NotImplementedError:
        return str
