"""``crmsync check``: every mapping validated against the database (tables, columns, keys)
and the remote service (``$metadata``). Each problem names the mapping and the field. A run
of a broken mapping fails with the same messages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from worker.db.engine import describe_db_error
from worker.errors import ConfigurationError, CrmsyncError
from worker.remote.errors import RemoteAuthError, RemoteUnavailable
from worker.sync import capture
from worker.sync import couplings as coupling_store
from worker.sync import mappings as mapping_store
from worker.sync.clients import Clients
from worker.sync.compat import (
    column_kind,
    lookup_problem,
    to_local_problem,
    to_remote_problem,
)
from worker.sync.local import LocalTable, Reflections
from worker.sync.metadata import EntitySetInfo, PropertyInfo
from worker.sync.model import Direction, FieldMapping, TableMapping
from worker.sync.order import topological_order
from worker.sync.transfer import constant, rule_problems
from worker.sync.values import ValueRefused
from worker.sync.values import to_remote as to_remote_value

TO, FROM = Direction.TO_INTEGRATION, Direction.FROM_INTEGRATION


@dataclass(frozen=True)
class Problem:
    """What is wrong (``message``) with a mapping, and where (a field of it). ``others``:
    further mappings with the very same problem (their connection's)."""

    mapping: str
    where: str
    message: str
    others: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.others:
            return (f"mappings {', '.join((self.mapping, *self.others))}: {self.where}: "
                    f"{self.message}")
        return f"mapping {self.mapping}: {self.where}: {self.message}"


def check_all(engine: Engine, clients: Clients, *, probe_filters: bool = True) -> list[Problem]:
    tables = Reflections()  # a check looks at the tables as they are now
    problems: list[Problem] = []
    try:
        topological_order(mapping_store.dependencies(engine))
    except ConfigurationError as exc:
        problems.append(Problem("*", "dependencies", str(exc)))
    with engine.connect() as conn:
        names = mapping_store.enabled_names(conn)
    for name in names:
        problems.extend(check_mapping(engine, clients, name, probe_filters=probe_filters,
                                      tables=tables))
    return _once_per_connection(problems)


def _once_per_connection(problems: list[Problem]) -> list[Problem]:
    """A connection whose settings are broken (an expired certificate, a missing secret
    file) breaks every mapping on it the same way: one line naming them all, where the
    first of them stood, instead of one line per mapping."""
    same: dict[str, list[str]] = {}
    for p in problems:
        if p.where == "connection_name":
            same.setdefault(p.message, []).append(p.mapping)
    merged: list[Problem] = []
    for p in problems:
        if p.where != "connection_name":
            merged.append(p)
        elif p.message in same:
            first, *others = same.pop(p.message)
            merged.append(Problem(first, p.where, p.message, tuple(others)))
    return merged


def check_mapping(engine: Engine, clients: Clients, name: str, *,
                  probe_filters: bool = False, others: bool = True,
                  tables: Reflections | None = None) -> list[Problem]:
    """The mapping's problems. ``others``: also the findings that involve another mapping
    (overlaps), which ``crmsync check`` reports and a run of this mapping never fails on.
    ``tables``: the reflections to use (a run's, so that the run sees what was checked)."""
    tables = tables or Reflections()
    try:
        mapping = mapping_store.load(engine, name)
    except CrmsyncError as exc:
        return [Problem(name, "mapping", str(exc).removeprefix(f"mapping {name}: "))]
    problems: list[Problem] = []

    def add(where: str, message: str) -> None:
        problems.append(Problem(name, where, message))

    table = _local(engine, mapping, add, tables)
    remote = _remote(clients, mapping, add)
    if table is not None:
        _check_local_table(engine, mapping, table, add)
        _check_key(engine, mapping, table, add)
    for f in mapping.fields:
        _check_field(engine, mapping, f, table, remote, add, tables)
    if others:
        _check_overlaps(engine, mapping, add)
    if probe_filters and mapping.remote_filter and remote is not None:
        try:
            client = clients.get(mapping.connection_name)
            next(iter(client.entity_set(mapping.entity_set, mapping.remote_key).read_pages(
                filter=mapping.remote_filter, top=1)), None)
        except CrmsyncError as exc:
            add("remote_filter", f"{mapping.remote_filter!r} is refused: {exc}")
    return problems


def require_valid(engine: Engine, clients: Clients, name: str,
                  tables: Reflections | None = None) -> None:
    """Raise when the mapping's own configuration is broken: a run depends on its own
    definition only, never on another mapping's."""
    problems = check_mapping(engine, clients, name, others=False, tables=tables)
    if problems:
        raise ConfigurationError("; ".join(str(p) for p in problems))


def _local(engine: Engine, mapping: TableMapping, add,  # type: ignore[no-untyped-def]
           tables: Reflections) -> LocalTable | None:
    try:
        table = LocalTable(engine, mapping.local_table, mapping.local_key, mapping.name,
                           tables)
    except ConfigurationError as exc:
        text = str(exc).removeprefix(f"mapping {mapping.name}: ")
        add("local_table" if "does not exist" in text else "local_key", text)
        return None
    if (table.table.schema or "").lower() == "crmsync":  # crmsync's own state, not ERP data
        add("local_table", f"{mapping.local_table} is in schema crmsync, which holds "
                           "crmsync's own state; map a table of the ERP's schema")
        return None
    return table


def _remote(clients: Clients, mapping: TableMapping, add) -> EntitySetInfo | None:  # type: ignore[no-untyped-def]
    try:
        sets = clients.metadata(mapping.connection_name)
    except (RemoteUnavailable, RemoteAuthError):
        raise  # the service cannot be reached: one error (exit status 4), not one per mapping
    except CrmsyncError as exc:
        add("connection_name", f"connection {mapping.connection_name!r}: {exc}")
        return None
    info = sets.get(mapping.entity_set)
    if info is None:
        add("entity_set", f"{mapping.entity_set!r} is not an entity set of connection "
                          f"{mapping.connection_name!r}")
        return None
    for what, prop in (("remote_key", mapping.remote_key),
                       ("remote_modified_on", mapping.remote_modified_on)):
        if prop not in info.properties:
            add(what, f"{prop!r} is not a property of {mapping.entity_set}")
    return info


def _check_local_table(engine: Engine, mapping: TableMapping, table: LocalTable, add) -> None:  # type: ignore[no-untyped-def]
    key = table.key
    unique = key.primary_key or any(
        list(ix.columns.keys()) == [key.name] and ix.unique for ix in table.table.indexes) or any(
        isinstance(c, sa.UniqueConstraint) and list(c.columns.keys()) == [key.name]
        for c in table.table.constraints)
    if not unique:
        add("local_key", f"{key.name!r} of {mapping.local_table} is not unique "
                         "(needs a primary key or unique index)")
    if mapping.change_capture == "modified_at":
        assert mapping.local_modified_column is not None
        if mapping.local_modified_column not in table.table.c:
            add("local_modified_column",
                f"{mapping.local_modified_column!r} is not a column of {mapping.local_table}")
    try:
        where = table.filter_clause(mapping.local_filter)
    except ConfigurationError as exc:
        add("local_filter", str(exc).removeprefix(f"mapping {mapping.name}: "))
        return
    try:  # values of the wrong type ('abc' for a number column) fail only when run
        with engine.connect() as conn:
            conn.execute(sa.select(table.key).where(where).limit(0)).all()
    except sa_exc.DBAPIError as exc:
        add("local_filter", f"{list(mapping.local_filter)!r} is refused by the database: "
                            f"{describe_db_error(exc)}")


def _check_field(engine: Engine, mapping: TableMapping, f: FieldMapping,
                 table: LocalTable | None, remote: EntitySetInfo | None, add,  # type: ignore[no-untyped-def]
                 tables: Reflections) -> None:
    where = f"field {f.label}"
    if f.local_column and table is not None and f.local_column not in table.table.c:
        add(where, f"local_column {f.local_column!r} is not a column of {mapping.local_table}")
    if remote is not None and f.remote_property:
        is_lookup = (f.remote_property in remote.navigation
                     or f"_{f.remote_property}_value" in remote.properties)
        if f.lookup_mapping is None and is_lookup:
            add(where, f"remote property {f.remote_property!r} is a lookup: set lookup_mapping "
                       "to the mapping of the table it points at")
        elif f.lookup_mapping is None and f.remote_property not in remote.properties:
            add(where, f"remote property {f.remote_property!r} is not a property of "
                       f"{mapping.entity_set}")
        elif f.lookup_mapping and not is_lookup:
            add(where, f"remote property {f.remote_property!r} is not a lookup of "
                       f"{mapping.entity_set}")
        bind = f.remote_bind_property
        if f.lookup_mapping and bind and bind not in remote.navigation:
            add(where, f"remote_bind_property {bind!r} is not a navigation property of "
                       f"{mapping.entity_set}")
    for problem in rule_problems(f.transformation):
        add(where, problem)
    column = table.table.c.get(f.local_column or "") if table is not None else None
    prop = remote.properties.get(f.remote_property or "") if remote is not None else None
    value_mapped = not isinstance(f.transformation, Mapping) or "value_map" in f.transformation
    if column is not None and prop is not None and not f.lookup_mapping and not value_mapped:
        _check_types(mapping, f, column, prop, add)
    if f.local_column is None and f.constant_value is not None and prop is not None:
        try:
            to_remote_value(constant(f), prop)
        except ValueRefused as exc:
            add(where, f"constant_value {f.constant_value!r}: {exc}")
    if f.lookup_mapping:
        _check_lookup(engine, mapping, f, where, add, tables)


def _check_lookup(engine: Engine, mapping: TableMapping, f: FieldMapping, where: str,
                  add, tables: Reflections) -> None:  # type: ignore[no-untyped-def]
    try:
        target = mapping_store.load(engine, f.lookup_mapping or "")
        table = LocalTable(engine, target.local_table, target.local_key, target.name,
                           tables)
    except CrmsyncError as exc:
        add(where, f"lookup_mapping {f.lookup_mapping}: {exc}")
        return
    column = f.lookup_local_column or target.local_key
    if column not in table.table.c:
        add(where, f"lookup_local_column {column!r} is not a column of {target.local_table}")
    elif f.local_column:
        try:
            own = LocalTable(engine, mapping.local_table, mapping.local_key, mapping.name,
                             tables)
        except ConfigurationError:
            own = None  # reported as the mapping's own local_table / local_key problem
        if own is not None and f.local_column in own.table.c:
            problem = lookup_problem(own.table.c[f.local_column], table.table.c[column],
                                     target.local_table, _runs(mapping, f, FROM))
            if problem:
                add(where, problem)
    if target.name not in _ancestors(engine, mapping.name):
        add(where, f"looks up {target.name} but does not depend on it: add the dependency "
                   f"so that {target.name} is synchronized first")


def _ancestors(engine: Engine, name: str) -> set[str]:
    deps: dict[str, set[str]] = {}
    with engine.connect() as conn:
        for child, parent in conn.execute(sa.text(
                "SELECT mapping_name, depends_on "
                "FROM crmsync.integration_table_mapping_dependencies")):
            deps.setdefault(child, set()).add(parent)
    seen: set[str] = set()
    todo = list(deps.get(name, ()))
    while todo:
        parent = todo.pop()
        if parent not in seen:
            seen.add(parent)
            todo.extend(deps.get(parent, ()))
    return seen


def _runs(mapping: TableMapping, f: FieldMapping, direction: Direction) -> bool:
    return mapping.direction.runs(direction) and f.direction.runs(direction)


def _check_types(mapping: TableMapping, f: FieldMapping, column: sa.Column,
                 prop: PropertyInfo, add) -> None:  # type: ignore[no-untyped-def]
    """The local column's type against the remote property's EDM type, in each direction
    the field runs."""
    problems = []
    if _runs(mapping, f, TO):
        problems.append(to_remote_problem(column, prop))
    if _runs(mapping, f, FROM):
        problems.append(to_local_problem(prop, column))
    for problem in dict.fromkeys(p for p in problems if p):
        add(f"field {f.label}", problem)


_OWN_ID_LENGTH = 36  # the text of a UUID, the id crmsync chooses for a new local record


def _check_key(engine: Engine, mapping: TableMapping, table: LocalTable, add) -> None:  # type: ignore[no-untyped-def]
    """The local key against what creates and couplings need."""
    key = table.key
    if column_kind(key) not in ("uuid", "text", "integer"):
        add("local_key", f"{key.name!r} is {str(key.type).lower()}: a local key must be a "
                         "uuid, text or integer column (couplings store it as text)")
        return
    creates_locally = mapping.direction.runs(FROM) and not mapping.sync_only_coupled
    if creates_locally and not table.chooses_own_keys() and not _has_default(key):
        length = getattr(key.type, "length", None)
        why = (f"{str(key.type).lower()} is shorter than the {_OWN_ID_LENGTH}-character ids "
               "crmsync chooses" if isinstance(length, int) else
               f"crmsync cannot choose {str(key.type).lower()} values")
        add("local_key", f"{key.name!r} has no default and {why} for records created from "
                         "the CRM: give it a default (e.g. a number series), use a uuid or "
                         "text key, or set sync_only_coupled")
    _check_coupled_ids(engine, mapping, table, add)


def _has_default(column: sa.Column) -> bool:
    return column.server_default is not None or column.identity is not None \
        or (column.autoincrement is True)


def _check_coupled_ids(engine: Engine, mapping: TableMapping, table: LocalTable,
                       add) -> None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        problem = _coupled_ids_problem(conn, mapping, table)
    if problem is not None:
        add(*problem)


_ADVICE = ("after records were coupled? set it back, or uncouple the mapping's records and "
           "couple them again")


def _coupled_ids_problem(conn: Connection, mapping: TableMapping,
                         table: LocalTable) -> tuple[str, str] | None:
    """Couplings made under another local_key or local_table: their local ids are not
    values of the key, name rows only by another column, or name no row of a table whose
    change capture was never installed although the mapping's was."""
    ids = coupling_store.recent_local_ids(conn, mapping.name)
    if not ids:
        return None
    try:
        values = [table.key_value(i) for i in ids]
    except ConfigurationError:
        return ("local_key", f"coupled local ids such as {ids[0]!r} are not "
                             f"{str(table.key.type).lower()} values of {table.key.name!r}: "
                             f"was local_key changed {_ADVICE}")
    if conn.scalar(sa.select(sa.func.count()).where(table.key.in_(values))):
        return None
    for column in table.table.c:
        if column is not table.key and conn.scalar(
                sa.select(sa.func.count()).where(sa.cast(column, sa.Text).in_(ids))):
            return ("local_key", f"the coupled local ids (such as {ids[0]!r}) are values of "
                                 f"column {column.name!r}, not of local_key "
                                 f"{table.key.name!r}: was local_key changed {_ADVICE}")
    if mapping.change_capture == "trigger" and mapping_store.triggers_installed(
            conn, mapping.name) and not capture.triggers_present(conn, mapping.local_table):
        return ("local_table", f"none of the coupled records (such as {ids[0]!r}) is in "
                               f"{mapping.local_table}, a table this mapping never captured "
                               f"changes of: was local_table changed {_ADVICE}")
    return None


def _check_overlaps(engine: Engine, mapping: TableMapping, add) -> None:  # type: ignore[no-untyped-def]
    """Another enabled mapping that would take this one's records for its own: both send
    the same local table to the same entity set (each would create its records in the CRM),
    or both import the same entity set (each would import the other's records), with
    filters that may overlap. A mapping that syncs only coupled records creates nothing, so
    it overlaps nothing; one table sent to two entity sets, or two tables to one set, is a
    normal set-up."""
    if mapping.sync_only_coupled:
        return
    with engine.connect() as conn:
        others = mapping_store.same_entity_set(conn, mapping)
    for other in others:
        reads = Direction(other["direction"])
        if (mapping.direction.runs(FROM) and reads.runs(FROM)):
            why = _overlap(mapping.remote_filter, other["remote_filter"], other["name"])
            if why:
                add("remote_filter", f"mapping {other['name']} reads {mapping.entity_set} "
                                     f"too and {why}: each would import the other's records; "
                                     "give both filters that exclude each other")
        if (mapping.direction.runs(TO) and reads.runs(TO)
                and other["local_table"] == mapping.local_table):
            why = _overlap(list(mapping.local_filter) or None, other["local_filter"] or None,
                           other["name"])
            if why:
                add("local_filter", f"mapping {other['name']} sends {mapping.local_table} to "
                                    f"{mapping.entity_set} too and {why}: each would send the "
                                    "other's records; give both filters that exclude each "
                                    "other")


def _overlap(mine: object, theirs: object, other: str) -> str | None:
    """Why two filters overlap, when it is certain: one absent, or both the same."""
    if not mine and not theirs:
        return "neither has a filter"
    if not mine:
        return "this mapping has no filter"
    if not theirs:
        return f"{other} has no filter"
    if mine == theirs:
        return "their filters are identical"
    return None
