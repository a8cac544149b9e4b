"""Dependency order of integration table mappings (NAV's "Dependency Filter")."""

from __future__ import annotations

from collections.abc import Mapping, Set

from worker.errors import ConfigurationError


def topological_order(depends_on: Mapping[str, Set[str]]) -> list[str]:
    """Mappings ordered so that every mapping comes after those it depends on; ties keep
    the order of the input (so the seed's order is kept when it is consistent).
    Raises ConfigurationError naming a cycle."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise ConfigurationError(f"mapping dependency cycle: {' -> '.join(cycle)}")
        state[name] = 1
        for parent in sorted(depends_on.get(name, ())):
            if parent in depends_on:
                visit(parent, path + [name])
        state[name] = 2
        order.append(name)

    for name in depends_on:
        visit(name, [])
    return order
