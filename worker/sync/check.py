"""``crmsync check``: every mapping validated against the database (tables, columns, keys)
and the remote service (``$metadata``). Each problem names the mapping and the field. A run
of a broken mapping fails with the same messages."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.errors import ConfigurationError, CrmsyncError
from worker.sync import mappings as mapping_store
from worker.sync.clients import Clients
from worker.sync.local import LocalTable, forget_reflections
from worker.sync.metadata import EntitySetInfo
from worker.sync.model import FieldMapping, TableMapping
from worker.sync.order import topological_order


@dataclass(frozen=True)
class Problem:
    mapping: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"mapping {self.mapping}: {self.where}: {self.message}"


def check_all(engine: Engine, clients: Clients, *, probe_filters: bool = True) -> list[Problem]:
    forget_reflections()  # a check always looks at the tables as they are now
    problems: list[Problem] = []
    try:
        topological_order(mapping_store.dependencies(engine))
    except ConfigurationError as exc:
        problems.append(Problem("*", "dependencies", str(exc)))
    with engine.connect() as conn:
        names = conn.scalars(sa.text(
            "SELECT name FROM crmsync.integration_table_mappings WHERE enabled "
            "ORDER BY created_at, name")).all()
    for name in names:
        problems.extend(check_mapping(engine, clients, name, probe_filters=probe_filters))
    return problems


def check_mapping(engine: Engine, clients: Clients, name: str, *,
                  probe_filters: bool = False) -> list[Problem]:
    try:
        mapping = mapping_store.load(engine, name)
    except CrmsyncError as exc:
        return [Problem(name, "mapping", str(exc).removeprefix(f"mapping {name}: "))]
    problems: list[Problem] = []

    def add(where: str, message: str) -> None:
        problems.append(Problem(name, where, message))

    table = _local(engine, mapping, add)
    remote = _remote(clients, mapping, add)
    if table is not None:
        _check_local_table(engine, mapping, table, add)
    for f in mapping.fields:
        _check_field(engine, mapping, f, table, remote, add)
    if probe_filters and mapping.remote_filter and remote is not None:
        try:
            client = clients.get(mapping.connection_name)
            next(iter(client.entity_set(mapping.entity_set, mapping.remote_key).read_pages(
                filter=mapping.remote_filter, top=1)), None)
        except CrmsyncError as exc:
            add("remote_filter", f"{mapping.remote_filter!r} is refused: {exc}")
    return problems


def require_valid(engine: Engine, clients: Clients, name: str) -> None:
    problems = check_mapping(engine, clients, name)
    if problems:
        raise ConfigurationError("; ".join(str(p) for p in problems))


def _local(engine: Engine, mapping: TableMapping, add) -> LocalTable | None:  # type: ignore[no-untyped-def]
    try:
        return LocalTable(engine, mapping.local_table, mapping.local_key, mapping.name)
    except ConfigurationError as exc:
        text = str(exc).removeprefix(f"mapping {mapping.name}: ")
        add("local_table" if "does not exist" in text else "local_key", text)
        return None


def _remote(clients: Clients, mapping: TableMapping, add) -> EntitySetInfo | None:  # type: ignore[no-untyped-def]
    try:
        sets = clients.metadata(mapping.connection_name)
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
        table.filter_clause(mapping.local_filter)
    except ConfigurationError as exc:
        add("local_filter", str(exc).removeprefix(f"mapping {mapping.name}: "))


def _check_field(engine: Engine, mapping: TableMapping, f: FieldMapping,
                 table: LocalTable | None, remote: EntitySetInfo | None, add) -> None:  # type: ignore[no-untyped-def]
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
    if f.lookup_mapping:
        _check_lookup(engine, mapping, f, where, add)


def _check_lookup(engine: Engine, mapping: TableMapping, f: FieldMapping, where: str,
                  add) -> None:  # type: ignore[no-untyped-def]
    try:
        target = mapping_store.load(engine, f.lookup_mapping or "")
        table = LocalTable(engine, target.local_table, target.local_key, target.name)
    except CrmsyncError as exc:
        add(where, f"lookup_mapping {f.lookup_mapping}: {exc}")
        return
    column = f.lookup_local_column or target.local_key
    if column not in table.table.c:
        add(where, f"lookup_local_column {column!r} is not a column of {target.local_table}")
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
